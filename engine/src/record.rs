//! The clear part of an audit record as `decide` produces it: borrowed from
//! the input where it can be, encoded straight to the leaf bytes without
//! building an owned `AuditRecord`.

use std::borrow::Cow;

use prost::encoding::{message, WireType};
use twinlog_proto::v1::{
    audit_record::Fact as F, AuditRecord, IdentityLink, MessageRecorded, Sealed, Source,
};

use crate::{Country, Tag};

/// The clear part of an [`AuditRecord`], borrowing the input's strings.
/// [`Record::encode`] gives exactly the bytes of
/// `prost::Message::encode_to_vec(&record.to_audit_record(sealed))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub format: u32,
    pub seq: u64,
    pub source: &'a Source,
    pub body_sha256: &'a [u8],
    pub phone_number_id: Cow<'a, str>,
    pub customer: Option<Tag>,
    pub meta_timestamp: i64,
    pub ingest_time_ms: i64,
    pub input_kind: i32,
    pub fact_index: u32,
    pub fact_count: u32,
    pub links: Vec<IdentityLink>,
    pub natural_key: Option<Tag>,
    pub waba_id: Cow<'a, str>,
    pub display_phone_number: Cow<'a, str>,
    pub entry_index: u32,
    pub change_index: u32,
    pub item_index: u32,
    pub fact: F,
    /// The customer's country, when known.
    pub customer_country: Option<Country>,
}

/// Field numbers of `AuditRecord` (see `audit.proto`).
mod tag {
    pub const FORMAT: u32 = 1;
    pub const SEQ: u32 = 2;
    pub const SOURCE: u32 = 3;
    pub const BODY_SHA256: u32 = 5;
    pub const PHONE_NUMBER_ID: u32 = 6;
    pub const CUSTOMER: u32 = 7;
    pub const META_TIMESTAMP: u32 = 8;
    pub const INGEST_TIME_MS: u32 = 9;
    pub const INPUT_KIND: u32 = 10;
    pub const FACT_INDEX: u32 = 11;
    pub const FACT_COUNT: u32 = 12;
    pub const LINKS: u32 = 13;
    pub const NATURAL_KEY: u32 = 14;
    pub const WABA_ID: u32 = 15;
    pub const DISPLAY_PHONE_NUMBER: u32 = 16;
    pub const ENTRY_INDEX: u32 = 17;
    pub const CHANGE_INDEX: u32 = 18;
    pub const ITEM_INDEX: u32 = 19;
    pub const SEALED: u32 = 40;
    pub const CUSTOMER_COUNTRY: u32 = 41;
}

/// A protobuf varint.
#[inline]
fn put_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// The length of a protobuf varint.
#[inline]
fn varint_len(value: u64) -> usize {
    // ceil(bits / 7), with 0 taking one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A field key: the field number and the wire type.
#[inline]
fn put_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

/// A varint field, skipped when zero (proto3 implicit presence).
#[inline]
fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        put_key(tag, WireType::Varint, buf);
        put_varint(value, buf);
    }
}

/// A bytes or string field, skipped when empty.
#[inline]
fn bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_key(tag, WireType::LengthDelimited, buf);
        put_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

/// A tag as a bytes field: a fixed-size copy.
#[inline]
fn tag_field(tag: u32, value: &Tag, buf: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, buf);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value);
}

/// `Source` as a message field, as prost writes it.
fn source_field(tag: u32, source: &Source, buf: &mut Vec<u8>) {
    let topic = source.topic.as_bytes();
    let partition = source.partition as u64;
    let offset = source.offset as u64;
    let mut len = 0;
    if !topic.is_empty() {
        len += 1 + varint_len(topic.len() as u64) + topic.len();
    }
    if partition != 0 {
        len += 1 + varint_len(partition);
    }
    if offset != 0 {
        len += 1 + varint_len(offset);
    }
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
    bytes(SOURCE_TOPIC, topic, buf);
    varint(SOURCE_PARTITION, partition, buf);
    varint(SOURCE_OFFSET, offset, buf);
}

/// `MessageRecorded`, the commonest fact, as the `message_recorded` field
/// of the record, as prost writes it. The body is written first, its length
/// patched in after (one byte below 128, else the body moves).
fn message_recorded_field(m: &MessageRecorded, buf: &mut Vec<u8>) {
    put_key(FACT_MESSAGE_RECORDED, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    bytes(1, &m.message_key, buf);
    varint(2, m.channel as u64, buf);
    varint(3, m.provenance as u64, buf);
    bytes(4, m.r#type.as_bytes(), buf);
    varint(5, m.timestamp as u64, buf);
    bytes(6, &m.reply_to, buf);
    varint(7, u64::from(m.media_pending), buf);
    bytes(8, m.history_status.as_bytes(), buf);
    varint(9, m.history_phase as u64, buf);
    varint(10, u64::from(m.statuses_joined), buf);
    bytes(11, m.joined_status.as_bytes(), buf);
    varint(12, u64::from(m.ephemeral), buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        put_varint(len as u64, &mut prefix);
        buf.splice(at..at + 1, prefix);
    }
}

/// The field number of `message_recorded` in `AuditRecord`.
const FACT_MESSAGE_RECORDED: u32 = 20;

/// Field numbers of `Source`.
const SOURCE_TOPIC: u32 = 1;
const SOURCE_PARTITION: u32 = 2;
const SOURCE_OFFSET: u32 = 3;

impl Record<'_> {
    /// The leaf bytes: the protobuf encoding of the equivalent
    /// `AuditRecord` with `sealed`, fields in number order as prost writes
    /// them, each skipped when prost skips it.
    pub fn encode(&self, sealed: Option<&Sealed>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        self.encode_to(sealed, &mut buf);
        buf
    }

    /// [`Record::encode`], appending to `buf`.
    pub fn encode_to(&self, sealed: Option<&Sealed>, buf: &mut Vec<u8>) {
        varint(tag::FORMAT, u64::from(self.format), buf);
        varint(tag::SEQ, self.seq, buf);
        source_field(tag::SOURCE, self.source, buf);
        bytes(tag::BODY_SHA256, self.body_sha256, buf);
        bytes(tag::PHONE_NUMBER_ID, self.phone_number_id.as_bytes(), buf);
        if let Some(c) = &self.customer {
            tag_field(tag::CUSTOMER, c, buf);
        }
        // int64 and enums are written as the two's complement u64.
        varint(tag::META_TIMESTAMP, self.meta_timestamp as u64, buf);
        varint(tag::INGEST_TIME_MS, self.ingest_time_ms as u64, buf);
        varint(tag::INPUT_KIND, self.input_kind as u64, buf);
        varint(tag::FACT_INDEX, u64::from(self.fact_index), buf);
        varint(tag::FACT_COUNT, u64::from(self.fact_count), buf);
        for link in &self.links {
            message::encode(tag::LINKS, link, buf);
        }
        if let Some(k) = &self.natural_key {
            tag_field(tag::NATURAL_KEY, k, buf);
        }
        bytes(tag::WABA_ID, self.waba_id.as_bytes(), buf);
        bytes(
            tag::DISPLAY_PHONE_NUMBER,
            self.display_phone_number.as_bytes(),
            buf,
        );
        varint(tag::ENTRY_INDEX, u64::from(self.entry_index), buf);
        varint(tag::CHANGE_INDEX, u64::from(self.change_index), buf);
        varint(tag::ITEM_INDEX, u64::from(self.item_index), buf);
        match &self.fact {
            F::MessageRecorded(m) => message_recorded_field(m, buf),
            other => other.encode(buf),
        }
        if let Some(s) = sealed {
            message::encode(tag::SEALED, s, buf);
        }
        if let Some(c) = &self.customer_country {
            bytes(tag::CUSTOMER_COUNTRY, c, buf);
        }
    }

    /// The equivalent owned `AuditRecord`, built in full.
    pub fn to_audit_record(&self, sealed: Option<Sealed>) -> AuditRecord {
        AuditRecord {
            format: self.format,
            seq: self.seq,
            source: Some(self.source.clone()),
            body_sha256: self.body_sha256.to_vec(),
            phone_number_id: self.phone_number_id.clone().into_owned(),
            customer: self.customer.map(|c| c.to_vec()).unwrap_or_default(),
            meta_timestamp: self.meta_timestamp,
            ingest_time_ms: self.ingest_time_ms,
            input_kind: self.input_kind,
            fact_index: self.fact_index,
            fact_count: self.fact_count,
            links: self.links.clone(),
            natural_key: self.natural_key.map(|k| k.to_vec()).unwrap_or_default(),
            waba_id: self.waba_id.clone().into_owned(),
            display_phone_number: self.display_phone_number.clone().into_owned(),
            entry_index: self.entry_index,
            change_index: self.change_index,
            item_index: self.item_index,
            fact: Some(self.fact.clone()),
            sealed,
            customer_country: self
                .customer_country
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// What `evolve` reads of a record: its clear part. Implemented by the
/// stored `AuditRecord` (replay) and by [`Record`] (the live fold), so both
/// go through the same `evolve`.
pub trait ClearPart {
    fn natural_key(&self) -> &[u8];
    fn links(&self) -> &[IdentityLink];
    fn phone_number_id(&self) -> &str;
    fn waba_id(&self) -> &str;
    fn display_phone_number(&self) -> &str;
    fn fact(&self) -> Option<&F>;
}

impl ClearPart for AuditRecord {
    fn natural_key(&self) -> &[u8] {
        &self.natural_key
    }
    fn links(&self) -> &[IdentityLink] {
        &self.links
    }
    fn phone_number_id(&self) -> &str {
        &self.phone_number_id
    }
    fn waba_id(&self) -> &str {
        &self.waba_id
    }
    fn display_phone_number(&self) -> &str {
        &self.display_phone_number
    }
    fn fact(&self) -> Option<&F> {
        self.fact.as_ref()
    }
}

impl ClearPart for Record<'_> {
    fn natural_key(&self) -> &[u8] {
        self.natural_key.as_ref().map_or(&[], |k| k)
    }
    fn links(&self) -> &[IdentityLink] {
        &self.links
    }
    fn phone_number_id(&self) -> &str {
        &self.phone_number_id
    }
    fn waba_id(&self) -> &str {
        &self.waba_id
    }
    fn display_phone_number(&self) -> &str {
        &self.display_phone_number
    }
    fn fact(&self) -> Option<&F> {
        Some(&self.fact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinlog_proto::v1::{CustomerErased, IdentityLink};

    /// Edge values of every hand-encoded field against prost.
    #[test]
    fn edge_values_encode_as_prost_does() {
        let sources = [
            Source::default(),
            Source {
                topic: "t".repeat(200),
                partition: -1,
                offset: i64::MIN,
            },
            Source {
                topic: "inbound".into(),
                partition: i32::MAX,
                offset: i64::MAX,
            },
        ];
        for source in &sources {
            for n in [
                0i64,
                1,
                -1,
                2,
                127,
                128,
                255,
                16_383,
                16_384,
                i64::MAX,
                i64::MIN,
            ] {
                let record = Record {
                    format: n as u32,
                    seq: n as u64,
                    source,
                    body_sha256: &[7; 32],
                    phone_number_id: Cow::Owned("9".repeat((n as u8 / 2) as usize)),
                    customer: (n != 0).then_some([n as u8; 16]),
                    meta_timestamp: n,
                    ingest_time_ms: n.wrapping_mul(3),
                    input_kind: n as i32,
                    fact_index: n as u32,
                    fact_count: (n >> 3) as u32,
                    links: vec![IdentityLink::default(); (n as u8 % 3) as usize],
                    natural_key: (n != 1).then_some([1; 16]),
                    waba_id: Cow::Borrowed(if n > 0 { "102290129340398" } else { "" }),
                    display_phone_number: Cow::Borrowed("15550783881"),
                    entry_index: n as u32,
                    change_index: (n >> 7) as u32,
                    item_index: (n >> 14) as u32,
                    fact: if n % 2 == 0 {
                        F::CustomerErased(CustomerErased::default())
                    } else {
                        F::MessageRecorded(MessageRecorded {
                            message_key: vec![3; 16],
                            channel: n as i32,
                            provenance: -(n as i32),
                            r#type: "x".repeat((n as u8) as usize),
                            timestamp: n,
                            reply_to: vec![4; (n as u8 % 17) as usize],
                            media_pending: n > 0,
                            history_status: "SENT".into(),
                            history_phase: -n,
                            statuses_joined: n as u32,
                            joined_status: if n > 1 { "read".into() } else { String::new() },
                            ephemeral: n < 0,
                        })
                    },
                    customer_country: (n % 3 != 0).then_some(*b"GB"),
                };
                assert_eq!(
                    record.encode(None),
                    prost::Message::encode_to_vec(&record.to_audit_record(None)),
                    "{source:?} {n}"
                );
            }
        }
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }
}
