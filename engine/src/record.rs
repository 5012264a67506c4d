//! The clear part of an audit record as `decide` produces it: borrowed from
//! the input where it can be, encoded straight to the leaf bytes without
//! building an owned `AuditRecord`.

use std::borrow::Cow;

use prost::encoding::{encode_key, encode_varint, message, WireType};
use twinlog_proto::v1::{audit_record::Fact as F, AuditRecord, IdentityLink, Sealed, Source};

use crate::Tag;

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
}

/// A varint field, skipped when zero (proto3 implicit presence).
#[inline]
fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A bytes or string field, skipped when empty.
#[inline]
fn bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

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
        message::encode(tag::SOURCE, self.source, buf);
        bytes(tag::BODY_SHA256, self.body_sha256, buf);
        bytes(tag::PHONE_NUMBER_ID, self.phone_number_id.as_bytes(), buf);
        if let Some(c) = &self.customer {
            bytes(tag::CUSTOMER, c, buf);
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
            bytes(tag::NATURAL_KEY, k, buf);
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
        self.fact.encode(buf);
        if let Some(s) = sealed {
            message::encode(tag::SEALED, s, buf);
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
