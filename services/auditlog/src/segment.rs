//! The two value formats of format 2: record segments and hash segments.
//!
//! A **record segment** is the value of `r` + first seq. Numbers are
//! big-endian:
//!
//! | bytes | what |
//! |---|---|
//! | `0` | segment version, `1` |
//! | `1..5` | `n`, the number of records, `u32`, `1..=SEGMENT_RECORDS_MAX` |
//! | `5..5 + 4n` | offsets table: the end of each record in the record area, `u32`, non-decreasing, the last equal to the area's length |
//! | `5 + 4n..` | record area: the records, back to back |
//!
//! Record `first + i` is `area[end[i - 1]..end[i]]`, with `end[-1] = 0`.
//!
//! A **hash segment** is the value of `h` + first stored hash index: one to
//! [`HASH_SEGMENT_HASHES_MAX`] 32-byte hashes back to back, at consecutive
//! stored hash indexes.

use crate::proof::HashBytes;

/// Most records in one record segment.
pub const SEGMENT_RECORDS_MAX: usize = 256;
/// Largest record segment (header, offsets and records) that holds more than
/// one record; a record larger than this gets a segment of its own. Sled
/// 0.34 writes a tree node larger than a quarter of its 512 KiB log segment
/// to a separate blob file that it never fsyncs, and a leaf holds up to ~17
/// values: 6 KiB values keep every node of the log inline in sled's
/// fsynced log.
pub const SEGMENT_BYTES_MAX: usize = 6 * 1024;
/// Most hashes in one hash segment (6 KiB, for the same reason).
pub const HASH_SEGMENT_HASHES_MAX: usize = SEGMENT_BYTES_MAX / HASH_BYTES;

pub(crate) const SEGMENT_VERSION: u8 = 1;
pub(crate) const HEADER_BYTES: usize = 5;
pub(crate) const OFFSET_BYTES: usize = 4;
pub(crate) const HASH_BYTES: usize = 32;

/// Splits `records` greedily into segments: each takes records while it
/// stays within [`SEGMENT_RECORDS_MAX`] and [`SEGMENT_BYTES_MAX`], and at
/// least one. Returns the number of records of each segment, in order.
pub(crate) fn split<R: AsRef<[u8]>>(records: &[R]) -> Vec<usize> {
    let mut counts = Vec::new();
    let (mut count, mut bytes) = (0usize, HEADER_BYTES);
    for record in records {
        let more = OFFSET_BYTES + record.as_ref().len();
        if count > 0 && (count == SEGMENT_RECORDS_MAX || bytes + more > SEGMENT_BYTES_MAX) {
            counts.push(count);
            (count, bytes) = (0, HEADER_BYTES);
        }
        count += 1;
        bytes += more;
    }
    if count > 0 {
        counts.push(count);
    }
    counts
}

/// Encodes one record segment. `records` must be non-empty, at most
/// [`SEGMENT_RECORDS_MAX`] long, and their bytes must fit in a `u32`.
pub(crate) fn encode<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let area: usize = records.iter().map(|r| r.as_ref().len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + OFFSET_BYTES * records.len() + area);
    out.push(SEGMENT_VERSION);
    out.extend_from_slice(&to_u32(records.len()).to_be_bytes());
    let mut end = 0usize;
    for record in records {
        end += record.as_ref().len();
        out.extend_from_slice(&to_u32(end).to_be_bytes());
    }
    for record in records {
        out.extend_from_slice(record.as_ref());
    }
    out
}

fn to_u32(n: usize) -> u32 {
    // The append limits (RECORD_BYTES_MAX, SEGMENT_RECORDS_MAX and
    // SEGMENT_BYTES_MAX) keep every segment far below 4 GiB.
    u32::try_from(n).expect("a segment is below 4 GiB")
}

/// A parsed record segment over its stored value.
pub(crate) struct RecordSegment<V> {
    first: u64,
    count: usize,
    value: V,
}

/// Why a stored record segment cannot be read, with its record count when
/// the header gave one.
pub(crate) struct SegmentFault {
    pub count: Option<u64>,
    pub reason: String,
}

impl<V: AsRef<[u8]>> RecordSegment<V> {
    /// Parses and checks the header and the whole offsets table.
    pub(crate) fn parse(first: u64, value: V) -> Result<Self, SegmentFault> {
        let bytes = value.as_ref();
        let fault = |count: Option<usize>, reason: String| SegmentFault {
            count: count.map(|c| c as u64),
            reason,
        };
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(fault(None, "it is empty".into()));
        };
        if version != SEGMENT_VERSION {
            return Err(fault(
                None,
                format!("its version is {version}, not {SEGMENT_VERSION}"),
            ));
        }
        let Some(count) = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return Err(fault(None, "its header is truncated".into()));
        };
        let count = count as usize;
        if count == 0 || count > SEGMENT_RECORDS_MAX {
            return Err(fault(
                None,
                format!("its header claims {count} records, not 1 to {SEGMENT_RECORDS_MAX}"),
            ));
        }
        let area_start = HEADER_BYTES + OFFSET_BYTES * count;
        let Some(area) = bytes.get(area_start..) else {
            return Err(fault(Some(count), "its offsets table is truncated".into()));
        };
        let mut previous = 0usize;
        for i in 0..count {
            let end = offset(bytes, i);
            if end < previous || end > area.len() {
                return Err(fault(
                    Some(count),
                    format!(
                        "its offsets table is corrupt: record {} ends at {end}, outside {previous}..={}",
                        first + i as u64,
                        area.len()
                    ),
                ));
            }
            previous = end;
        }
        if previous != area.len() {
            return Err(fault(
                Some(count),
                format!(
                    "its offsets table is corrupt: the records end at {previous} but the record area holds {} bytes",
                    area.len()
                ),
            ));
        }
        Ok(RecordSegment {
            first,
            count,
            value,
        })
    }

    /// The first seq of the segment (the tamper module's view of it).
    #[cfg_attr(not(feature = "tamper"), allow(dead_code))]
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// One past the last seq of the segment.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.count as u64
    }

    /// Record `seq`, which must be in `first()..end()`.
    pub(crate) fn record(&self, seq: u64) -> &[u8] {
        let i = usize::try_from(seq - self.first).expect("seq in the segment");
        let bytes = self.value.as_ref();
        let start = if i == 0 { 0 } else { offset(bytes, i - 1) };
        let area = HEADER_BYTES + OFFSET_BYTES * self.count;
        &bytes[area + start..area + offset(bytes, i)]
    }

    /// The records in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (self.first..self.end()).map(|seq| self.record(seq))
    }
}

fn offset(bytes: &[u8], i: usize) -> usize {
    let at = HEADER_BYTES + OFFSET_BYTES * i;
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Hash `index` of the hash segment starting at `first`, if it holds it.
pub(crate) fn hash_in(first: u64, value: &[u8], index: u64) -> Option<HashBytes> {
    let i = usize::try_from(index.checked_sub(first)?).ok()?;
    let at = i.checked_mul(HASH_BYTES)?;
    value.get(at..at + HASH_BYTES)?.try_into().ok()
}

/// Why a stored hash segment cannot be read.
pub(crate) fn hash_segment_fault(value: &[u8]) -> Option<String> {
    if value.is_empty() {
        Some("it is empty".into())
    } else if value.len() % HASH_BYTES != 0 {
        Some(format!(
            "its {} bytes are not a multiple of 32",
            value.len()
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_split_within_the_caps() {
        let records: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| vec![i as u8; (i % 70) as usize])
            .collect();
        let counts = split(&records);
        assert_eq!(counts.iter().sum::<usize>(), records.len());
        let mut at = 0;
        for count in counts {
            let chunk = &records[at..at + count];
            let value = encode(chunk);
            assert!(count <= SEGMENT_RECORDS_MAX);
            assert!(value.len() <= SEGMENT_BYTES_MAX || count == 1);
            let segment = RecordSegment::parse(at as u64, &value[..]).ok().unwrap();
            assert_eq!(segment.end(), (at + count) as u64);
            assert!(segment.records().eq(chunk.iter().map(|r| &r[..])));
            at += count;
        }
        // Tiny records hit the record cap, a huge one gets its own segment.
        assert_eq!(split(&vec![b"a"; 600]), vec![256, 256, 88]);
        assert_eq!(
            split(&[vec![0; 10], vec![0; 9000], vec![0; 10]]),
            vec![1, 1, 1]
        );
        assert_eq!(split::<Vec<u8>>(&[]), Vec::<usize>::new());
    }

    #[test]
    fn a_corrupt_offsets_table_is_refused() {
        let mut value = encode(&[b"ab".to_vec(), b"cde".to_vec()]);
        assert!(RecordSegment::parse(0, &value[..]).is_ok());
        value[HEADER_BYTES + 3] = 9;
        let fault = RecordSegment::parse(7, &value[..]).err().unwrap();
        assert_eq!(fault.count, Some(2));
        assert!(
            fault.reason.contains("offsets table is corrupt"),
            "{}",
            fault.reason
        );
        assert!(RecordSegment::parse(0, &value[..3]).is_err());
        assert!(RecordSegment::parse(0, &[][..]).is_err());
    }
}
