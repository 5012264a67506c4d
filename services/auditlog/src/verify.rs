//! The audit: rebuild the tree from the stored records and compare it with
//! the stored hashes and every signed checkpoint, streaming, in bounded memory.

use std::iter::Peekable;

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash, HashReader};

use crate::error::{LogError, Tamper, VerifyError};
use crate::log::{key_number, AuditLog, PREFIX_CHECKPOINT, PREFIX_HASH, PREFIX_RECORD};
use crate::proof::HashBytes;

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

/// The roots of the complete subtrees on the right edge of the tree built so
/// far: the only hashes `tlog_tiles` needs to add a record or compute the
/// root. At most 64 entries, so verification runs in bounded memory.
#[derive(Default)]
struct Frontier {
    /// `(stored hash index, hash)`, left to right.
    nodes: Vec<(u64, Hash)>,
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|index| {
                self.nodes
                    .iter()
                    .find(|(i, _)| i == index)
                    .map(|(_, h)| *h)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Frontier {
    /// Records the hashes `stored_hashes(n, ..)` returned for record `n`: the
    /// leaf, then one per subtree it completes, each merging one frontier node.
    fn push(&mut self, n: u64, hashes: &[Hash]) {
        let merged = hashes.len() - 1;
        self.nodes.truncate(self.nodes.len() - merged);
        let level = u8::try_from(merged).expect("a record completes at most 64 subtrees");
        let top = hashes[merged];
        self.nodes
            .push((tlog_tiles::stored_hash_index(level, n >> level), top));
    }
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

impl AuditLog {
    /// Rebuilds the whole tree from the stored records and checks it:
    /// records are contiguous from seq 0, every stored hash equals the
    /// recomputed one, and every stored checkpoint is signed by the log key
    /// and carries the recomputed root at its size. Names the first bad
    /// record, hash or checkpoint. Calls `progress(done, total)` every
    /// [`VERIFY_PROGRESS_INTERVAL_RECORDS`] records and at the end.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, VerifyError> {
        let tree_size = self.size();
        let verifier = StandardVerifier::new(self.verifier_key()).map_err(|e| {
            VerifyError::Log(LogError::Corrupt {
                reason: format!("the verifier key is invalid: {e}"),
            })
        })?;
        let verifiers = VerifierList::new(vec![Box::new(verifier)]);

        let mut records = self.tree.scan_prefix([PREFIX_RECORD]);
        let mut hashes = self.tree.scan_prefix([PREFIX_HASH]);
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
        for n in 0..tree_size {
            let record = match records.next() {
                None => return Err(Tamper::RecordMissing { seq: n }.into()),
                Some(item) => {
                    let (key, value) = item.map_err(read_error("a record"))?;
                    match key_number(&key) {
                        Some(seq) if seq == n => value,
                        _ => return Err(Tamper::RecordMissing { seq: n }.into()),
                    }
                }
            };
            let recomputed = tlog_tiles::stored_hashes(n, &record, &frontier).map_err(|e| {
                VerifyError::Log(LogError::Corrupt {
                    reason: format!("rebuilding the tree at record {n}: {e}"),
                })
            })?;
            let first_index = tlog_tiles::stored_hash_index(0, n);
            for (index, want) in (first_index..).zip(&recomputed) {
                let (level, node) = tlog_tiles::split_stored_hash_index(index);
                let stored = match hashes.next() {
                    None => None,
                    Some(item) => {
                        let (key, value) = item.map_err(read_error("a stored hash"))?;
                        if key_number(&key) != Some(index) {
                            None
                        } else {
                            Some(value)
                        }
                    }
                };
                let Some(stored) = stored else {
                    return Err(Tamper::StoredHashMissing { index, level, node }.into());
                };
                if stored.as_ref() != want.0.as_slice() {
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
            if checkpoints
                .peek()
                .is_some_and(|item| matches!(item, Ok((key, _)) if key_number(key) == Some(size)))
            {
                let root = tlog_tiles::tree_hash(size, &frontier).map_err(|e| {
                    VerifyError::Log(LogError::Corrupt {
                        reason: format!("computing the root at size {size}: {e}"),
                    })
                })?;
                audit.check_at(&mut checkpoints, size, root)?;
            }
            if size % VERIFY_PROGRESS_INTERVAL_RECORDS == 0 {
                progress(size, tree_size);
            }
        }

        if let Some(item) = records.next() {
            let (key, _) = item.map_err(read_error("a record"))?;
            let seq = key_number(&key).unwrap_or(u64::MAX);
            return Err(Tamper::RecordBeyondSize { seq, tree_size }.into());
        }
        if let Some(item) = hashes.next() {
            let (key, _) = item.map_err(read_error("a stored hash"))?;
            let index = key_number(&key).unwrap_or(u64::MAX);
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
        let root = tlog_tiles::tree_hash(tree_size, &frontier)
            .map_err(|e| {
                VerifyError::Log(LogError::Corrupt {
                    reason: format!("computing the root at size {tree_size}: {e}"),
                })
            })?
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
