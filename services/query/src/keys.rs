//! The store's key layout: one sled tree, so that one `sled::Batch` is
//! atomic over every kind of row. The first byte names the kind; variable
//! parts are length-prefixed (u16 big-endian), so a prefix scan of one
//! number or one conversation never reaches another; integers are
//! big-endian, signed ones with the sign bit flipped, so keys sort as values.

use twinlog_projections::Day;
use twinlog_proto::v1::Channel;

pub(crate) const META: u8 = b'M';
pub(crate) const CONTACT: u8 = b'C';
pub(crate) const CONTACT_NUMBER: u8 = b'I';
pub(crate) const CONVERSATION: u8 = b'V';
pub(crate) const TIMELINE: u8 = b'T';
pub(crate) const NUMBER: u8 = b'N';
pub(crate) const LEDGER: u8 = b'L';
pub(crate) const AGGREGATE: u8 = b'A';
pub(crate) const SAVINGS: u8 = b'S';
pub(crate) const EVENT: u8 = b'E';

const PART_BYTES_MAX: usize = u16::MAX as usize;

/// Appends `part` with its length. A part longer than 64 KiB (no number,
/// tag or category is) is cut there.
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    let part = &part[..part.len().min(PART_BYTES_MAX)];
    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part);
}

fn key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![kind];
    for p in parts {
        push_part(&mut out, p);
    }
    out
}

pub(crate) fn sortable_i64(v: i64) -> [u8; 8] {
    (u64::from_ne_bytes(v.to_ne_bytes()) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn applied(partition: u32) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"applied/");
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub(crate) fn next_event() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"next_event");
    k
}

pub(crate) fn contact(customer: &[u8]) -> Vec<u8> {
    key(CONTACT, &[customer])
}

pub(crate) fn contact_numbers(customer: &[u8]) -> Vec<u8> {
    key(CONTACT_NUMBER, &[customer])
}

pub(crate) fn contact_number(customer: &[u8], number: &str) -> Vec<u8> {
    key(CONTACT_NUMBER, &[customer, number.as_bytes()])
}

pub(crate) fn conversations_of(number: &str) -> Vec<u8> {
    key(CONVERSATION, &[number.as_bytes()])
}

pub(crate) fn conversation(number: &str, customer: &[u8]) -> Vec<u8> {
    key(CONVERSATION, &[number.as_bytes(), customer])
}

pub(crate) fn timeline(number: &str, customer: &[u8]) -> Vec<u8> {
    key(TIMELINE, &[number.as_bytes(), customer])
}

pub(crate) fn timeline_message(number: &str, customer: &[u8], timestamp: i64, seq: u64) -> Vec<u8> {
    let mut k = timeline(number, customer);
    k.extend_from_slice(&sortable_i64(timestamp));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn number(number: &str) -> Vec<u8> {
    key(NUMBER, &[number.as_bytes()])
}

pub(crate) fn ledger(partition: u32, id: u64) -> Vec<u8> {
    let mut k = vec![LEDGER];
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn aggregates_of(number: &str) -> Vec<u8> {
    key(AGGREGATE, &[number.as_bytes()])
}

pub(crate) fn aggregate(number: &str, day: Day, channel: Channel, category: &str) -> Vec<u8> {
    let mut k = aggregates_of(number);
    k.extend_from_slice(&sortable_i64(day.0));
    k.extend_from_slice(&sortable_i64(i64::from(channel as i32)));
    push_part(&mut k, category.as_bytes());
    k
}

pub(crate) fn savings(number: &str, day: Day) -> Vec<u8> {
    let mut k = key(SAVINGS, &[number.as_bytes()]);
    k.extend_from_slice(&sortable_i64(day.0));
    k
}

pub(crate) fn event(id: u64) -> Vec<u8> {
    let mut k = vec![EVENT];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The id of an event key.
pub(crate) fn event_id(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The parts of a length-prefixed key after its kind byte.
pub(crate) fn parts(key: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = key.get(1..).unwrap_or_default();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(part) = rest.get(2..2 + len) else {
            break;
        };
        out.push(part);
        rest = &rest[2 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_do_not_reach_other_numbers_and_sort_as_values() {
        assert!(!conversation("12", b"x").starts_with(&conversations_of("1")));
        assert!(conversation("1", b"x").starts_with(&conversations_of("1")));
        assert!(sortable_i64(-1) < sortable_i64(0));
        assert!(sortable_i64(0) < sortable_i64(1));
        assert!(timeline_message("1", b"c", -5, 9) < timeline_message("1", b"c", 3, 0));
        assert_eq!(
            parts(&contact_number(b"cust", "15")),
            vec![&b"cust"[..], b"15"]
        );
        assert_eq!(event_id(&event(42)), Some(42));
    }
}
