//! The audit: rebuild the tree from the stored records and compare it with
//! the stored hashes and every signed checkpoint, streaming, in bounded memory.

use std::iter::Peekable;

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::error::{LogError, Tamper, VerifyError};
use crate::frontier::Frontier;
use crate::log::{key_number, AuditLog, PREFIX_CHECKPOINT, PREFIX_HASH, PREFIX_RECORD};
use crate::proof::HashBytes;
use crate::segment::{self, RecordSegment};

/// How often [`AuditLog::verify`] reports progress.
pub const VERIFY_PROGRESS_INTERVAL_RECORDS: u64 = 4096;

/// What a successful [`AuditLog::verify`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub origin: String,
    pub tree_size: u64,
    /// The recomputed root, equal to the latest checkpoint's.
    pub root: HashBytes,
    pub records_checked: u64,
    pub stored_hashes_checked: u64,
    pub checkpoints_checked: u64,
}

type SledItem = Result<(sled::IVec, sled::IVec), sled::Error>;

fn read_error(what: &str) -> impl FnOnce(sled::Error) -> VerifyError + '_ {
    move |source| {
        VerifyError::Log(LogError::Read {
            what: what.to_owned(),
            source,
        })
    }
}

fn rebuild_error(reason: String) -> VerifyError {
    VerifyError::Log(LogError::Corrupt { reason })
}

/// The stored hashes in index order, one hash segment at a time.
struct HashStream {
    segments: sled::Iter,
    /// The segment being read: its first index and value.
    current: Option<(u64, sled::IVec)>,
}

impl HashStream {
    /// The stored hash at `index`, the one after the last taken, or `None`
    /// if no segment holds it where it should be.
    fn take(&mut self, index: u64) -> Result<Option<HashBytes>, VerifyError> {
        if let Some((first, value)) = &self.current {
            if let Some(hash) = segment::hash_in(*first, value, index) {
                return Ok(Some(hash));
            }
        }
        self.current = None;
        let Some(item) = self.segments.next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(read_error("a stored hash segment"))?;
        if key_number(&key) != Some(index) {
            return Ok(None);
        }
        if let Some(reason) = segment::hash_segment_fault(&value) {
            return Err(Tamper::HashSegmentCorrupt {
                first: index,
                reason,
            }
            .into());
        }
        let hash = segment::hash_in(index, &value, index);
        self.current = Some((index, value));
        Ok(hash)
    }

    /// The index of the first stored hash left after `next`, if any.
    fn leftover(&mut self, next: u64) -> Result<Option<u64>, VerifyError> {
        if let Some((first, value)) = &self.current {
            if segment::hash_in(*first, value, next).is_some() {
                return Ok(Some(next));
            }
        }
        match self.segments.next() {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item.map_err(read_error("a stored hash segment"))?;
                Ok(Some(key_number(&key).unwrap_or(u64::MAX)))
            }
        }
    }
}

impl AuditLog {
    /// Rebuilds the whole tree from the stored records and checks it:
    /// record segments are well formed and hold the seqs from 0 contiguously,
    /// every stored hash equals the one recomputed from the record bytes, and
    /// every stored checkpoint is signed by the log key and carries the
    /// recomputed root at its size. Names the first bad record, segment, hash
    /// or checkpoint. Reads one segment at a time. Calls
    /// `progress(done, total)` every [`VERIFY_PROGRESS_INTERVAL_RECORDS`]
    /// records and at the end.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, VerifyError> {
        let tree_size = self.size();
        let verifier = StandardVerifier::new(self.verifier_key()).map_err(|e| {
            VerifyError::Log(LogError::Corrupt {
                reason: format!("the verifier key is invalid: {e}"),
            })
        })?;
        let verifiers = VerifierList::new(vec![Box::new(verifier)]);

        let mut segments = self.tree.scan_prefix([PREFIX_RECORD]).peekable();
        let mut hashes = HashStream {
            segments: self.tree.scan_prefix([PREFIX_HASH]),
            current: None,
        };
        let mut checkpoints = self.tree.scan_prefix([PREFIX_CHECKPOINT]).peekable();
        let mut frontier = Frontier::default();
        let mut audit = CheckpointAudit {
            origin: self.origin(),
            verifiers: &verifiers,
            tree_size,
            last_good: 0,
            checked: 0,
            latest_seen: false,
        };

        audit.check_at(&mut checkpoints, 0, tlog_tiles::EMPTY_HASH)?;
        let mut stored_hashes_checked: u64 = 0;
        let mut n: u64 = 0;
        while n < tree_size {
            let (key, value) = match segments.next() {
                None => return Err(Tamper::RecordMissing { seq: n }.into()),
                Some(item) => item.map_err(read_error("a record segment"))?,
            };
            let first = match key_number(&key) {
                Some(first) if first == n => first,
                Some(first) if first < n => {
                    return Err(Tamper::SegmentCorrupt {
                        first,
                        end: n,
                        reason: format!("it overlaps the records before seq {n}"),
                    }
                    .into())
                }
                _ => return Err(Tamper::RecordMissing { seq: n }.into()),
            };
            let segment = match RecordSegment::parse(first, value) {
                Ok(segment) => segment,
                Err(fault) => {
                    // Without a readable count, the segment ends where the
                    // next one starts.
                    let end = match fault.count {
                        Some(count) => first + count,
                        None => match segments.peek() {
                            Some(Ok((key, _))) => key_number(key).unwrap_or(tree_size),
                            _ => tree_size,
                        },
                    };
                    return Err(Tamper::SegmentCorrupt {
                        first,
                        end,
                        reason: fault.reason,
                    }
                    .into());
                }
            };
            for record in segment.records() {
                if n >= tree_size {
                    return Err(Tamper::RecordBeyondSize { seq: n, tree_size }.into());
                }
                let recomputed = tlog_tiles::stored_hashes(n, record, &frontier).map_err(|e| {
                    rebuild_error(format!("rebuilding the tree at record {n}: {e}"))
                })?;
                let first_index = tlog_tiles::stored_hash_index(0, n);
                for (index, want) in (first_index..).zip(&recomputed) {
                    let (level, node) = tlog_tiles::split_stored_hash_index(index);
                    let Some(stored) = hashes.take(index)? else {
                        return Err(Tamper::StoredHashMissing { index, level, node }.into());
                    };
                    if stored != want.0 {
                        return Err(if level == 0 {
                            Tamper::RecordMismatch { seq: n }
                        } else {
                            Tamper::StoredHashMismatch { index, level, node }
                        }
                        .into());
                    }
                    stored_hashes_checked += 1;
                }
                frontier.push(n, &recomputed);

                let size = n + 1;
                if checkpoints.peek().is_some_and(
                    |item| matches!(item, Ok((key, _)) if key_number(key) == Some(size)),
                ) {
                    let root = frontier.root(size).map_err(|e| {
                        rebuild_error(format!("computing the root at size {size}: {e}"))
                    })?;
                    audit.check_at(&mut checkpoints, size, root)?;
                }
                if size % VERIFY_PROGRESS_INTERVAL_RECORDS == 0 {
                    progress(size, tree_size);
                }
                n = size;
            }
        }

        if let Some(item) = segments.next() {
            let (key, _) = item.map_err(read_error("a record segment"))?;
            let seq = key_number(&key).unwrap_or(u64::MAX);
            return Err(Tamper::RecordBeyondSize { seq, tree_size }.into());
        }
        if let Some(index) = hashes.leftover(tlog_tiles::stored_hash_count(tree_size))? {
            return Err(Tamper::StoredHashBeyondSize { index, tree_size }.into());
        }
        if let Some(item) = checkpoints.next() {
            let (key, _) = item.map_err(read_error("a checkpoint"))?;
            let size = key_number(&key).unwrap_or(u64::MAX);
            return Err(Tamper::CheckpointBeyondSize { size, tree_size }.into());
        }
        if !audit.latest_seen {
            return Err(Tamper::CheckpointMissing { size: tree_size }.into());
        }
        let root = frontier
            .root(tree_size)
            .map_err(|e| rebuild_error(format!("computing the root at size {tree_size}: {e}")))?
            .0;
        progress(tree_size, tree_size);
        Ok(VerifyReport {
            origin: self.origin().to_owned(),
            tree_size,
            root,
            records_checked: tree_size,
            stored_hashes_checked,
            checkpoints_checked: audit.checked,
        })
    }
}

/// Checks the stored checkpoints as the rebuild reaches their sizes.
struct CheckpointAudit<'a> {
    origin: &'a str,
    verifiers: &'a VerifierList,
    tree_size: u64,
    /// Size of the last checkpoint that matched: the records below it are
    /// attested by a signature.
    last_good: u64,
    checked: u64,
    latest_seen: bool,
}

impl CheckpointAudit<'_> {
    /// If the next stored checkpoint is at `size`, checks it against `root`.
    fn check_at<I: Iterator<Item = SledItem>>(
        &mut self,
        checkpoints: &mut Peekable<I>,
        size: u64,
        root: Hash,
    ) -> Result<(), VerifyError> {
        let note = match checkpoints.peek() {
            Some(Ok((key, _))) if key_number(key) == Some(size) => match checkpoints.next() {
                Some(Ok((_, note))) => note,
                _ => unreachable!("peeked an Ok item"),
            },
            Some(Ok(_)) | None => return Ok(()),
            Some(Err(_)) => {
                let Some(Err(source)) = checkpoints.next() else {
                    unreachable!("peeked an Err item")
                };
                return Err(read_error("a checkpoint")(source));
            }
        };
        let signature = |reason: String| Tamper::CheckpointSignature { size, reason };
        let parsed = Note::from_bytes(&note).map_err(|e| signature(e.to_string()))?;
        parsed
            .verify(self.verifiers)
            .map_err(|e| signature(e.to_string()))?;
        let checkpoint =
            Checkpoint::from_bytes(parsed.text()).map_err(|e| Tamper::CheckpointMalformed {
                size,
                reason: e.to_string(),
            })?;
        if checkpoint.origin() != self.origin {
            return Err(Tamper::CheckpointMalformed {
                size,
                reason: format!("its origin is {:?}", checkpoint.origin()),
            }
            .into());
        }
        if checkpoint.size() != size {
            return Err(Tamper::CheckpointMalformed {
                size,
                reason: format!("it is stored at size {size} but says {}", checkpoint.size()),
            }
            .into());
        }
        if *checkpoint.hash() != root {
            return Err(Tamper::CheckpointMismatch {
                size,
                from: self.last_good,
            }
            .into());
        }
        self.last_good = size;
        self.checked += 1;
        if size == self.tree_size {
            self.latest_seen = true;
        }
        Ok(())
    }
}
