//! Test support, not an API: changes a **closed** log's sled tree behind its
//! back, as an attacker with write access to the disk would, so that tests
//! of [`AuditLog::verify`](crate::AuditLog::verify) do not depend on the
//! layout. `dir` is the log directory (as given to
//! [`AuditLog::create`](crate::AuditLog::create)); each function opens
//! `dir/db`, makes its change and flushes. None of them touches the tree
//! size, the signed checkpoints or the stored hashes unless its name says so.

use std::ops::Range;
use std::path::Path;

use crate::error::LogError;
use crate::frontier::Frontier;
use crate::log::{
    checkpoint_key, hash_key, key_number, open_db, open_tree, record_key, record_segment_at,
    PREFIX_HASH, PREFIX_RECORD,
};
use crate::segment::{self, HASH_BYTES, HASH_SEGMENT_HASHES_MAX};
use crate::HashBytes;

/// Why a tamper function could not make its change.
#[derive(Debug, thiserror::Error)]
pub enum TamperError {
    #[error("failed to read the log to tamper with it")]
    Log(#[from] LogError),

    #[error("failed to write {what} while tampering with the log")]
    Write {
        what: String,
        #[source]
        source: sled::Error,
    },

    #[error("record {seq} has {len} bytes: there is no byte {byte_index} to flip")]
    ByteOutOfRange {
        seq: u64,
        byte_index: usize,
        len: usize,
    },

    #[error("failed to recompute the stored hashes at record {seq}: {reason}")]
    Rehash { seq: u64, reason: String },
}

fn write_error(what: impl Into<String>) -> impl FnOnce(sled::Error) -> TamperError {
    let what = what.into();
    move |source| TamperError::Write { what, source }
}

/// Opens the log tree of the closed log in `dir`, runs `change`, flushes.
fn with_tree<T>(
    dir: &Path,
    change: impl FnOnce(&sled::Tree) -> Result<T, TamperError>,
) -> Result<T, TamperError> {
    let db_path = dir.join("db");
    let db = open_db_when_unlocked(&db_path)?;
    let tree = open_tree(&db, &db_path)?;
    let out = change(&tree)?;
    db.flush().map_err(write_error("the database"))?;
    Ok(out)
}

/// How long [`with_tree`] waits for a just-closed log to release sled's
/// file lock: sled's IO threads can hold it for a moment after a drop.
const UNLOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_db_when_unlocked(path: &Path) -> Result<sled::Db, LogError> {
    let start = std::time::Instant::now();
    loop {
        match open_db(path) {
            Err(error) if is_locked(&error) && start.elapsed() < UNLOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether `error` is sled failing to take the database's file lock.
pub fn is_locked(error: &LogError) -> bool {
    crate::log::is_lock_error(error)
}

/// Opens the log in `dir` like [`AuditLog::open`](crate::AuditLog::open),
/// waiting for a just-closed handle to release sled's file lock.
pub fn open_when_unlocked(dir: &Path) -> Result<crate::AuditLog, LogError> {
    let start = std::time::Instant::now();
    loop {
        match crate::AuditLog::open(dir) {
            Err(error) if is_locked(&error) && start.elapsed() < UNLOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The records of the segment holding `seq`: its first seq and the records.
fn segment_records(tree: &sled::Tree, seq: u64) -> Result<(u64, Vec<Vec<u8>>), TamperError> {
    let segment = record_segment_at(tree, seq)?;
    Ok((
        segment.first(),
        segment.records().map(<[u8]>::to_vec).collect(),
    ))
}

fn put_segment(tree: &sled::Tree, first: u64, records: &[Vec<u8>]) -> Result<(), TamperError> {
    tree.insert(record_key(first), segment::encode(records))
        .map_err(write_error(format!("the record segment at seq {first}")))?;
    Ok(())
}

/// Changes record `seq` in place with `change`, keeping its segment.
fn change_record(
    tree: &sled::Tree,
    seq: u64,
    change: impl FnOnce(&mut Vec<u8>) -> Result<(), TamperError>,
) -> Result<(), TamperError> {
    let (first, mut records) = segment_records(tree, seq)?;
    change(&mut records[usize::try_from(seq - first).expect("seq in its segment")])?;
    put_segment(tree, first, &records)
}

/// The seqs of the segment that holds record `seq`.
pub fn segment_of(dir: &Path, seq: u64) -> Result<Range<u64>, TamperError> {
    with_tree(dir, |tree| {
        let segment = record_segment_at(tree, seq)?;
        Ok(segment.first()..segment.end())
    })
}

/// Flips the low bit of byte `byte_index` of record `seq`.
pub fn flip_record_byte(dir: &Path, seq: u64, byte_index: usize) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        change_record(tree, seq, |record| {
            let len = record.len();
            let byte = record
                .get_mut(byte_index)
                .ok_or(TamperError::ByteOutOfRange {
                    seq,
                    byte_index,
                    len,
                })?;
            *byte ^= 0x01;
            Ok(())
        })
    })
}

/// Removes record `seq` alone and leaves a gap: its segment is rewritten as
/// the records before `seq` (under the same key) and the records after it
/// (under `r` + `seq + 1`).
pub fn remove_record(dir: &Path, seq: u64) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        let (first, records) = segment_records(tree, seq)?;
        let at = usize::try_from(seq - first).expect("seq in its segment");
        if at == 0 {
            tree.remove(record_key(first))
                .map_err(write_error(format!("the record segment at seq {first}")))?;
        } else {
            put_segment(tree, first, &records[..at])?;
        }
        if at + 1 < records.len() {
            put_segment(tree, seq + 1, &records[at + 1..])?;
        }
        Ok(())
    })
}

/// Removes the whole segment holding record `seq`; returns its seqs.
pub fn remove_segment(dir: &Path, seq: u64) -> Result<Range<u64>, TamperError> {
    with_tree(dir, |tree| {
        let segment = record_segment_at(tree, seq)?;
        tree.remove(record_key(segment.first()))
            .map_err(write_error(format!(
                "the record segment at seq {}",
                segment.first()
            )))?;
        Ok(segment.first()..segment.end())
    })
}

/// Swaps the bytes of records `a` and `b`, in one segment or two.
pub fn swap_records(dir: &Path, a: u64, b: u64) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        let (first_a, records_a) = segment_records(tree, a)?;
        let bytes_a = records_a[usize::try_from(a - first_a).expect("a in its segment")].clone();
        let (first_b, records_b) = segment_records(tree, b)?;
        let bytes_b = records_b[usize::try_from(b - first_b).expect("b in its segment")].clone();
        change_record(tree, a, |r| {
            *r = bytes_b;
            Ok(())
        })?;
        change_record(tree, b, |r| {
            *r = bytes_a;
            Ok(())
        })
    })
}

/// Sets the offsets table entry of record `seq` past the end of its
/// segment's record area; returns the segment's seqs.
pub fn corrupt_offsets_table(dir: &Path, seq: u64) -> Result<Range<u64>, TamperError> {
    with_tree(dir, |tree| {
        let segment = record_segment_at(tree, seq)?;
        let (first, end) = (segment.first(), segment.end());
        let mut value = segment::encode(&segment.records().collect::<Vec<_>>());
        let at = segment::HEADER_BYTES
            + segment::OFFSET_BYTES * usize::try_from(seq - first).expect("seq in its segment");
        let beyond = u32::try_from(value.len() + 1).unwrap_or(u32::MAX);
        value[at..at + segment::OFFSET_BYTES].copy_from_slice(&beyond.to_be_bytes());
        tree.insert(record_key(first), value)
            .map_err(write_error(format!("the record segment at seq {first}")))?;
        Ok(first..end)
    })
}

/// Adds a record segment holding `bytes` right after the last one, beyond
/// the tree size; returns its seq.
pub fn smuggle_record(dir: &Path, bytes: &[u8]) -> Result<u64, TamperError> {
    with_tree(dir, |tree| {
        let seq = match tree.scan_prefix([PREFIX_RECORD]).next_back() {
            None => 0,
            Some(item) => {
                let (key, _) = item.map_err(|source| LogError::Read {
                    what: "the last record segment".into(),
                    source,
                })?;
                let first = key_number(&key).unwrap_or(0);
                record_segment_at(tree, first)?.end()
            }
        };
        put_segment(tree, seq, &[bytes.to_vec()])?;
        Ok(seq)
    })
}

/// Overwrites stored hash `index` in its hash segment.
pub fn set_stored_hash(dir: &Path, index: u64, hash: HashBytes) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        let what = || format!("the hash segment of stored hash {index}");
        let (key, value) = match tree
            .range(hash_key(0)..=hash_key(index))
            .next_back()
            .transpose()
        {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(LogError::Corrupt {
                    reason: format!("stored hash {index} is missing"),
                }
                .into())
            }
            Err(source) => {
                return Err(LogError::Read {
                    what: what(),
                    source,
                }
                .into())
            }
        };
        let first = key_number(&key).unwrap_or(0);
        let mut value = value.to_vec();
        let at = usize::try_from(index - first).expect("an index fits") * HASH_BYTES;
        let Some(slot) = value.get_mut(at..at + HASH_BYTES) else {
            return Err(LogError::Corrupt {
                reason: format!("stored hash {index} is missing"),
            }
            .into());
        };
        slot.copy_from_slice(&hash);
        tree.insert(key, value).map_err(write_error(what()))?;
        Ok(())
    })
}

/// Removes the whole hash segment holding stored hash `index`; returns its
/// indexes.
pub fn remove_hash_segment(dir: &Path, index: u64) -> Result<Range<u64>, TamperError> {
    with_tree(dir, |tree| {
        let (first, value) = crate::log::hash_segment_at(tree, index)?;
        tree.remove(hash_key(first))
            .map_err(write_error(format!("the hash segment at index {first}")))?;
        Ok(first..first + (value.len() / HASH_BYTES) as u64)
    })
}

/// Sets (`Some`) or removes (`None`) the stored checkpoint at `size`.
pub fn set_checkpoint(dir: &Path, size: u64, note: Option<&[u8]>) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        let key = checkpoint_key(size);
        let what = format!("the checkpoint at size {size}");
        match note {
            Some(note) => tree.insert(key, note).map(drop),
            None => tree.remove(key).map(drop),
        }
        .map_err(write_error(what))
    })
}

/// Replaces record `seq` with `new_bytes`, then rewrites every stored hash
/// from the records so that records and hashes agree again: only the signed
/// checkpoints can tell. Streams the records, in bounded memory.
pub fn rewrite_record_and_hashes(
    dir: &Path,
    seq: u64,
    new_bytes: &[u8],
) -> Result<(), TamperError> {
    with_tree(dir, |tree| {
        change_record(tree, seq, |r| {
            *r = new_bytes.to_vec();
            Ok(())
        })?;
        for item in tree.scan_prefix([PREFIX_HASH]).keys() {
            let key = item.map_err(|source| LogError::Read {
                what: "a stored hash segment".into(),
                source,
            })?;
            tree.remove(key)
                .map_err(write_error("a stored hash segment"))?;
        }
        let mut frontier = Frontier::default();
        let mut chunk: Vec<u8> = Vec::with_capacity(HASH_SEGMENT_HASHES_MAX * HASH_BYTES);
        let mut chunk_first = 0u64;
        let mut n = 0u64;
        for item in tree.scan_prefix([PREFIX_RECORD]) {
            let (key, value) = item.map_err(|source| LogError::Read {
                what: "a record segment".into(),
                source,
            })?;
            let first = key_number(&key).unwrap_or(u64::MAX);
            let segment = crate::log::parse_record_segment(first, value)?;
            for record in segment.records() {
                let hashes = tlog_tiles::stored_hashes(n, record, &frontier).map_err(|e| {
                    TamperError::Rehash {
                        seq: n,
                        reason: e.to_string(),
                    }
                })?;
                frontier.push(n, &hashes);
                for hash in hashes {
                    chunk.extend_from_slice(&hash.0);
                    if chunk.len() == HASH_SEGMENT_HASHES_MAX * HASH_BYTES {
                        tree.insert(hash_key(chunk_first), chunk.as_slice())
                            .map_err(write_error("a stored hash segment"))?;
                        chunk_first += HASH_SEGMENT_HASHES_MAX as u64;
                        chunk.clear();
                    }
                }
                n += 1;
            }
        }
        if !chunk.is_empty() {
            tree.insert(hash_key(chunk_first), chunk.as_slice())
                .map_err(write_error("a stored hash segment"))?;
        }
        Ok(())
    })
}
