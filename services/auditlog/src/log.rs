//! The log itself: creation, opening, group-committed appends, reads, roots,
//! checkpoints and proofs.

use std::cell::RefCell;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardSigner};
use tlog_tiles::{Checkpoint, Hash, HashReader};

use crate::error::LogError;
use crate::frontier::{self, Frontier};
use crate::proof::{ConsistencyProof, HashBytes, InclusionProof};
use crate::segment::{self, RecordSegment, HASH_BYTES, HASH_SEGMENT_HASHES_MAX};

/// Version of the on-disk layout, stored in `log.json`. Format 1 stored one
/// sled key per record and per stored hash; format 2 stores segments.
pub const FORMAT_VERSION: u32 = 2;
/// Most records in one [`AuditLog::append`].
pub const APPEND_BATCH_COUNT_MAX: usize = 100_000;
/// Most record bytes in one [`AuditLog::append`].
pub const APPEND_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest single record.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// Most side writes in one [`AuditLog::append`].
pub const SIDE_WRITES_COUNT_MAX: usize = 100_000;
/// Longest side key (without the log's own prefix).
pub const SIDE_KEY_BYTES_MAX: usize = 1024;

pub(crate) const TREE_NAME: &[u8] = b"twinlog/auditlog";
pub(crate) const PREFIX_RECORD: u8 = b'r';
pub(crate) const PREFIX_HASH: u8 = b'h';
pub(crate) const PREFIX_CHECKPOINT: u8 = b'c';
const PREFIX_META: u8 = b'm';
const PREFIX_SIDE: u8 = b's';
const META_SIZE: &[u8] = b"size";

const LOG_JSON: &str = "log.json";
const DB_DIR: &str = "db";
const KEYS_DIR: &str = "keys";
const SIGNING_KEY_FILE: &str = "signing.key";
const ORIGIN_PREFIX: &str = "twinlog/";

/// Records to append, and side values to write in the same atomic batch.
#[derive(Clone, Debug, Default)]
pub struct AppendBatch {
    /// Records, appended in order from the current tree size.
    pub leaves: Vec<Vec<u8>>,
    /// Side key to `Some(value)` (insert) or `None` (remove), stored under the
    /// `s` prefix. For other crates' state that must commit with the records
    /// (input offsets, dedup index). Side values are not in the Merkle tree.
    pub side_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Seq of the first appended record (the tree size before the append).
    pub first_seq: u64,
    /// Tree size after the append.
    pub tree_size: u64,
    /// Root of the tree of `tree_size` records.
    pub root: HashBytes,
}

/// `DIR/log.json`: public facts about the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LogMeta {
    format_version: u32,
    origin: String,
    verifier_key: String,
}

/// An open audit log. See the crate documentation for the layout.
pub struct AuditLog {
    dir: PathBuf,
    db: sled::Db,
    pub(crate) tree: sled::Tree,
    origin: String,
    verifier_key: String,
    signer: StandardSigner,
    size: u64,
    /// The right edge of the tree of `size` records, so that an append reads
    /// no hash from sled. Rebuilt from the hash segments at open; `None` if
    /// they could not give it (a damaged log must still open, to be
    /// verified): the next append reads it again, or fails.
    frontier: Option<Frontier>,
    /// Set when a flush failed: sled may hold a batch that is not durable, so
    /// the in-memory view can no longer be trusted.
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("origin", &self.origin)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    prefixed(PREFIX_RECORD, seq)
}

pub(crate) fn hash_key(index: u64) -> [u8; 9] {
    prefixed(PREFIX_HASH, index)
}

pub(crate) fn checkpoint_key(size: u64) -> [u8; 9] {
    prefixed(PREFIX_CHECKPOINT, size)
}

fn prefixed(prefix: u8, n: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&n.to_be_bytes());
    key
}

/// The number after a one-byte prefix, or `None` if the key is not 9 bytes.
pub(crate) fn key_number(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(PREFIX_META);
    key.extend_from_slice(name);
    key
}

fn side_key(key: &[u8]) -> Result<Vec<u8>, LogError> {
    if key.len() > SIDE_KEY_BYTES_MAX {
        return Err(LogError::SideKeyBytesOverLimit {
            bytes: key.len(),
            max: SIDE_KEY_BYTES_MAX,
        });
    }
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(PREFIX_SIDE);
    k.extend_from_slice(key);
    Ok(k)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io {
        action,
        path,
        source,
    }
}

/// Signs the checkpoint for `(origin, size, root)` as a C2SP signed note.
fn sign_checkpoint(
    signer: &StandardSigner,
    origin: &str,
    size: u64,
    root: HashBytes,
) -> Result<Vec<u8>, LogError> {
    let sign_error = |reason: String| LogError::Sign { size, reason };
    let checkpoint =
        Checkpoint::new(origin, size, Hash(root), "").map_err(|e| sign_error(e.to_string()))?;
    let mut note = Note::new(&checkpoint.to_bytes(), &[]).map_err(|e| sign_error(e.to_string()))?;
    note.add_sigs(&[signer])
        .map_err(|e| sign_error(e.to_string()))?;
    Ok(note.to_bytes())
}

/// Derives the verifier key from a C2SP Ed25519 signer key, to check it
/// against `log.json` on open.
fn verifier_key_of(skey: &str) -> Option<String> {
    let mut parts = skey.splitn(5, '+');
    let (Some("PRIVATE"), Some("KEY"), Some(name), Some(_id), Some(key64)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key64)
        .ok()?;
    let (alg, secret) = key.split_first()?;
    if *alg != 1 {
        return None;
    }
    let secret: [u8; 32] = secret.try_into().ok()?;
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&secret);
    Some(signed_note::new_ed25519_verifier_key(
        name,
        &signing_key.verifying_key(),
    ))
}

/// Reads stored hashes below `limit` from the frontier or from the hash
/// segments in sled, keeping the last segment read. IO failures are kept in
/// `failure`, because `HashReader` can only return a `tlog_tiles::Error`.
pub(crate) struct StoreReader<'a> {
    tree: &'a sled::Tree,
    frontier: &'a Frontier,
    limit: u64,
    segment: RefCell<Option<(u64, sled::IVec)>>,
    failure: RefCell<Option<LogError>>,
}

impl<'a> StoreReader<'a> {
    fn new(tree: &'a sled::Tree, frontier: &'a Frontier, limit: u64) -> Self {
        StoreReader {
            tree,
            frontier,
            limit,
            segment: RefCell::new(None),
            failure: RefCell::new(None),
        }
    }

    fn fail(&self, error: LogError) -> tlog_tiles::Error {
        *self.failure.borrow_mut() = Some(error);
        tlog_tiles::Error::IndexesNotInTree
    }

    /// Turns a `tlog_tiles` error from a call with this reader into ours.
    fn error(&self, error: tlog_tiles::Error, doing: &str) -> LogError {
        match self.failure.borrow_mut().take() {
            Some(failure) => failure,
            None => LogError::Corrupt {
                reason: format!("{doing}: {error}"),
            },
        }
    }

    fn read_one(&self, index: u64) -> Result<Hash, LogError> {
        if index >= self.limit {
            return Err(LogError::Corrupt {
                reason: format!("stored hash {index} is beyond the tree"),
            });
        }
        if let Some(hash) = self.frontier.get(index) {
            return Ok(hash);
        }
        if let Some((first, value)) = self.segment.borrow().as_ref() {
            if let Some(hash) = segment::hash_in(*first, value, index) {
                return Ok(Hash(hash));
            }
        }
        let (first, value) = hash_segment_at(self.tree, index)?;
        let hash = segment::hash_in(first, &value, index).ok_or_else(|| LogError::Corrupt {
            reason: format!("stored hash {index} is missing"),
        })?;
        *self.segment.borrow_mut() = Some((first, value));
        Ok(Hash(hash))
    }
}

impl HashReader for StoreReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(indexes.len());
        for &index in indexes {
            match self.read_one(index) {
                Ok(hash) => out.push(hash),
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(out)
    }
}

/// The stored value with the greatest key `prefix` + n with n <= `number`.
fn segment_at(
    tree: &sled::Tree,
    prefix: u8,
    number: u64,
    what: impl FnOnce() -> String,
) -> Result<Option<(u64, sled::IVec)>, LogError> {
    match tree
        .range(prefixed(prefix, 0)..=prefixed(prefix, number))
        .next_back()
    {
        None => Ok(None),
        Some(Ok((key, value))) => match key_number(&key) {
            Some(first) => Ok(Some((first, value))),
            None => Err(LogError::Corrupt {
                reason: format!("{} has a malformed key", what()),
            }),
        },
        Some(Err(source)) => Err(LogError::Read {
            what: what(),
            source,
        }),
    }
}

/// The right edge of the tree of `size` records, from the hash segments.
fn read_frontier(tree: &sled::Tree, size: u64) -> Result<Frontier, LogError> {
    let reader = StoreReader::new(tree, &frontier::EMPTY, tlog_tiles::stored_hash_count(size));
    Frontier::read(size, &reader).map_err(|e| {
        reader.error(
            e,
            &format!("reading the right edge of the tree of size {size}"),
        )
    })
}

/// The hash segment holding stored hash `index`, checked.
pub(crate) fn hash_segment_at(
    tree: &sled::Tree,
    index: u64,
) -> Result<(u64, sled::IVec), LogError> {
    let what = || format!("the hash segment of stored hash {index}");
    let (first, value) =
        segment_at(tree, PREFIX_HASH, index, what)?.ok_or_else(|| LogError::Corrupt {
            reason: format!("stored hash {index} is missing"),
        })?;
    if let Some(reason) = segment::hash_segment_fault(&value) {
        return Err(LogError::Corrupt {
            reason: format!("the stored hash segment at index {first} is corrupt: {reason}"),
        });
    }
    Ok((first, value))
}

/// The record segment holding record `seq`, parsed.
pub(crate) fn record_segment_at(
    tree: &sled::Tree,
    seq: u64,
) -> Result<RecordSegment<sled::IVec>, LogError> {
    let what = || format!("the segment of record {seq}");
    let (first, value) =
        segment_at(tree, PREFIX_RECORD, seq, what)?.ok_or(LogError::RecordMissing { seq })?;
    let segment = parse_record_segment(first, value)?;
    if seq >= segment.end() {
        return Err(LogError::RecordMissing { seq });
    }
    Ok(segment)
}

pub(crate) fn parse_record_segment(
    first: u64,
    value: sled::IVec,
) -> Result<RecordSegment<sled::IVec>, LogError> {
    RecordSegment::parse(first, value).map_err(|fault| LogError::Corrupt {
        reason: match fault.count {
            Some(count) => format!(
                "record segment {first}..{} is unreadable: {}",
                first + count,
                fault.reason
            ),
            None => format!(
                "the record segment at seq {first} is unreadable: {}",
                fault.reason
            ),
        },
    })
}

/// Streams the records `[next_seq, end)` segment by segment, and reports a
/// gap as a missing record.
struct RecordIter {
    tree: sled::Tree,
    /// The later segments, once the one holding the first record is found.
    segments: Option<sled::Iter>,
    current: Option<RecordSegment<sled::IVec>>,
    next_seq: u64,
    end: u64,
    failed: bool,
}

impl RecordIter {
    fn next_segment(&mut self) -> Result<RecordSegment<sled::IVec>, LogError> {
        let expected = self.next_seq;
        let Some(segments) = self.segments.as_mut() else {
            let segment = record_segment_at(&self.tree, expected)?;
            self.segments = Some(
                self.tree
                    .range(record_key(segment.end())..record_key(self.end)),
            );
            return Ok(segment);
        };
        match segments.next() {
            Some(Ok((key, value))) if key_number(&key) == Some(expected) => {
                parse_record_segment(expected, value)
            }
            Some(Err(source)) => Err(LogError::Read {
                what: format!("the segment of record {expected}"),
                source,
            }),
            Some(Ok(_)) | None => Err(LogError::RecordMissing { seq: expected }),
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<(u64, Vec<u8>), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next_seq >= self.end {
            return None;
        }
        let seq = self.next_seq;
        let in_current = self
            .current
            .as_ref()
            .is_some_and(|segment| seq < segment.end());
        if !in_current {
            match self.next_segment() {
                Ok(segment) => self.current = Some(segment),
                Err(error) => {
                    // Stop after the first error.
                    self.failed = true;
                    self.current = None;
                    return Some(Err(error));
                }
            }
        }
        let segment = self.current.as_ref()?;
        self.next_seq += 1;
        Some(Ok((seq, segment.record(seq).to_vec())))
    }
}

impl AuditLog {
    /// Creates a new log in `dir`, which must not exist or be empty. The
    /// origin (key name) is `origin`, or `twinlog/<uuid v4>`.
    pub fn create(dir: &Path, origin: Option<&str>) -> Result<AuditLog, LogError> {
        let origin = match origin {
            Some(origin) => origin.to_owned(),
            None => format!("{ORIGIN_PREFIX}{}", uuid::Uuid::new_v4()),
        };
        if !signed_note::is_key_name_valid(&origin) {
            return Err(LogError::InvalidOrigin { origin });
        }
        let (skey, vkey) = signed_note::generate_key(&mut rand_core::OsRng, &origin);
        Self::create_with(dir, origin, &skey, vkey)
    }

    /// Creates a new, empty log in `dir` (as [`AuditLog::create`]) that signs
    /// with an existing C2SP Ed25519 signer key (`PRIVATE+KEY+<origin>+...`,
    /// as [`AuditLog::signer_key`] returns it): the origin is the key's name.
    /// This is how a log is restored elsewhere: same origin, same verifier key.
    pub fn create_with_signer_key(dir: &Path, signer_key: &str) -> Result<AuditLog, LogError> {
        let key_error = |reason: &str| LogError::SigningKey {
            path: dir.join(KEYS_DIR).join(SIGNING_KEY_FILE),
            reason: reason.to_owned(),
        };
        let vkey = verifier_key_of(signer_key)
            .ok_or_else(|| key_error("it is not a C2SP Ed25519 signer key"))?;
        let origin = signer_key
            .split('+')
            .nth(2)
            .ok_or_else(|| key_error("it has no key name"))?
            .to_owned();
        if !signed_note::is_key_name_valid(&origin) {
            return Err(LogError::InvalidOrigin { origin });
        }
        Self::create_with(dir, origin, signer_key, vkey)
    }

    fn create_with(
        dir: &Path,
        origin: String,
        skey: &str,
        vkey: String,
    ) -> Result<AuditLog, LogError> {
        if dir.join(LOG_JSON).exists() {
            return Err(LogError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_error("read directory", dir))?;
            if entries.next().is_some() {
                return Err(LogError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        fs::create_dir_all(dir).map_err(io_error("create log directory", dir))?;

        let keys_dir = dir.join(KEYS_DIR);
        create_private_dir(&keys_dir)?;
        let key_path = keys_dir.join(SIGNING_KEY_FILE);
        write_private_file(&key_path, format!("{skey}\n").as_bytes())?;
        let signer = StandardSigner::new(skey).map_err(|e| LogError::SigningKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;

        let db_path = dir.join(DB_DIR);
        let db = open_db(&db_path)?;
        let tree = open_tree(&db, &db_path)?;
        let empty = sign_checkpoint(&signer, &origin, 0, tlog_tiles::EMPTY_HASH.0)?;
        let mut batch = sled::Batch::default();
        batch.insert(meta_key(META_SIZE), &0u64.to_be_bytes());
        batch.insert(&checkpoint_key(0), empty);
        tree.apply_batch(batch)
            .map_err(|source| LogError::Append { seq: 0, source })?;
        db.flush()
            .map_err(|source| LogError::Flush { seq: 0, source })?;

        // log.json last: its presence means the log is complete.
        let meta = LogMeta {
            format_version: FORMAT_VERSION,
            origin: origin.clone(),
            verifier_key: vkey.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| LogError::Metadata {
            path: dir.join(LOG_JSON),
            reason: e.to_string(),
        })?;
        write_file_atomic(dir, LOG_JSON, &json)?;

        Ok(AuditLog {
            dir: dir.to_path_buf(),
            db,
            tree,
            origin,
            verifier_key: vkey,
            signer,
            size: 0,
            frontier: Some(Frontier::default()),
            poisoned: false,
        })
    }

    /// Opens the log in `dir`.
    pub fn open(dir: &Path) -> Result<AuditLog, LogError> {
        let meta_path = dir.join(LOG_JSON);
        if !meta_path.is_file() {
            return Err(LogError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let json = fs::read(&meta_path).map_err(io_error("read", &meta_path))?;
        let meta: LogMeta = serde_json::from_slice(&json).map_err(|e| LogError::Metadata {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        if meta.format_version != FORMAT_VERSION {
            let reason = if meta.format_version == 1 {
                "format version 1 (one sled key per record) is not read by this \
                 build, which writes format 2 (record segments); there is no \
                 migration: create a new log"
                    .to_owned()
            } else {
                format!(
                    "format version {} is not {FORMAT_VERSION}, the only one this build reads",
                    meta.format_version
                )
            };
            return Err(LogError::Metadata {
                path: meta_path,
                reason,
            });
        }

        let key_path = dir.join(KEYS_DIR).join(SIGNING_KEY_FILE);
        check_private(&key_path)?;
        let skey = fs::read_to_string(&key_path).map_err(io_error("read", &key_path))?;
        let skey = skey.trim_end();
        let key_error = |reason: String| LogError::SigningKey {
            path: key_path.clone(),
            reason,
        };
        let signer = StandardSigner::new(skey).map_err(|e| key_error(e.to_string()))?;
        match verifier_key_of(skey) {
            Some(vkey) if vkey == meta.verifier_key => {}
            Some(_) => {
                return Err(key_error(
                    "it does not match the verifier key in log.json".into(),
                ))
            }
            None => return Err(key_error("it is not an Ed25519 signer key".into())),
        }
        if !meta.verifier_key.starts_with(&format!("{}+", meta.origin)) {
            return Err(LogError::Metadata {
                path: meta_path,
                reason: "the origin is not the verifier key's name".into(),
            });
        }

        let db_path = dir.join(DB_DIR);
        let db = open_db(&db_path)?;
        let tree = open_tree(&db, &db_path)?;
        let size = match tree.get(meta_key(META_SIZE)) {
            Ok(Some(value)) => {
                key_number(&[&[PREFIX_META][..], &value].concat()).ok_or_else(|| {
                    LogError::Corrupt {
                        reason: "the stored tree size is not 8 bytes".into(),
                    }
                })?
            }
            Ok(None) => {
                return Err(LogError::Corrupt {
                    reason: "the tree size is missing".into(),
                })
            }
            Err(source) => {
                return Err(LogError::Read {
                    what: "the tree size".into(),
                    source,
                })
            }
        };

        let frontier = read_frontier(&tree, size).ok();

        Ok(AuditLog {
            dir: dir.to_path_buf(),
            db,
            tree,
            origin: meta.origin,
            verifier_key: meta.verifier_key,
            signer,
            size,
            frontier,
            poisoned: false,
        })
    }

    /// Opens the log in `dir`, creating it (with a generated origin) if there
    /// is none.
    pub fn open_or_create(dir: &Path) -> Result<AuditLog, LogError> {
        if dir.join(LOG_JSON).is_file() {
            Self::open(dir)
        } else {
            Self::create(dir, None)
        }
    }

    /// The sled database. Other crates open their own trees in it, so that
    /// the flush of an append covers them too. The log's own tree is private.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tree size: the number of records.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The origin, which is also the signing key's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The C2SP signer key (`PRIVATE+KEY+<origin>+<id>+<base64>`), read
    /// from `DIR/keys/signing.key`: a secret, for the caller that keeps a
    /// wrapped copy elsewhere (the engine's keys topic). Never log it.
    pub fn signer_key(&self) -> Result<String, LogError> {
        let path = self.dir.join(KEYS_DIR).join(SIGNING_KEY_FILE);
        let skey = fs::read_to_string(&path).map_err(io_error("read", &path))?;
        Ok(skey.trim_end().to_owned())
    }

    /// The C2SP verifier key of the checkpoints: `<name>+<hex key id>+<base64 key>`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Appends `batch.leaves` as records `size..size + n` and applies
    /// `batch.side_writes`, with the stored hashes, the new tree size and a
    /// new signed checkpoint, in one sled batch and one flush (group commit).
    /// The records go into record segments of at most
    /// [`SEGMENT_RECORDS_MAX`](crate::SEGMENT_RECORDS_MAX) records, the new
    /// stored hashes into hash segments: a few sled values per batch.
    pub fn append(&mut self, batch: AppendBatch) -> Result<Appended, LogError> {
        let first_seq = self.size;
        if self.poisoned {
            return Err(LogError::Poisoned { seq: first_seq });
        }
        let AppendBatch {
            leaves,
            side_writes,
        } = batch;
        if leaves.len() > APPEND_BATCH_COUNT_MAX {
            return Err(LogError::BatchCountOverLimit {
                seq: first_seq,
                count: leaves.len(),
                max: APPEND_BATCH_COUNT_MAX,
            });
        }
        if side_writes.len() > SIDE_WRITES_COUNT_MAX {
            return Err(LogError::SideWritesOverLimit {
                seq: first_seq,
                count: side_writes.len(),
                max: SIDE_WRITES_COUNT_MAX,
            });
        }
        let mut bytes_total: usize = 0;
        for (seq, leaf) in (first_seq..).zip(&leaves) {
            if leaf.len() > RECORD_BYTES_MAX {
                return Err(LogError::RecordBytesOverLimit {
                    seq,
                    bytes: leaf.len(),
                    max: RECORD_BYTES_MAX,
                });
            }
            bytes_total = bytes_total.saturating_add(leaf.len());
        }
        if bytes_total > APPEND_BATCH_BYTES_MAX {
            return Err(LogError::BatchBytesOverLimit {
                seq: first_seq,
                bytes: bytes_total,
                max: APPEND_BATCH_BYTES_MAX,
            });
        }
        if leaves.is_empty() && side_writes.is_empty() {
            return Ok(Appended {
                first_seq,
                tree_size: first_seq,
                root: self.root(first_seq)?,
            });
        }

        let count = u64::try_from(leaves.len()).map_err(|_| LogError::BatchCountOverLimit {
            seq: first_seq,
            count: leaves.len(),
            max: APPEND_BATCH_COUNT_MAX,
        })?;
        let tree_size = first_seq + count;

        // Stored hashes of the new records, from the in-memory right edge:
        // no sled read. `frontier` is committed only with the batch.
        let base = tlog_tiles::stored_hash_count(first_seq);
        let mut frontier = match &self.frontier {
            Some(frontier) => frontier.clone(),
            None => read_frontier(&self.tree, first_seq)?,
        };
        let mut new_hashes: Vec<u8> = Vec::with_capacity(leaves.len() * 2 * HASH_BYTES);
        for (seq, leaf) in (first_seq..).zip(&leaves) {
            let hashes =
                tlog_tiles::stored_hashes(seq, leaf, &frontier).map_err(|e| LogError::Corrupt {
                    reason: format!("computing the hashes of record {seq}: {e}"),
                })?;
            frontier.push(seq, &hashes);
            for hash in &hashes {
                new_hashes.extend_from_slice(&hash.0);
            }
        }
        let root = frontier
            .root(tree_size)
            .map_err(|e| LogError::Corrupt {
                reason: format!("computing the root at size {tree_size}: {e}"),
            })?
            .0;

        let mut sled_batch = sled::Batch::default();
        let mut seq = first_seq;
        let mut at = 0;
        for count in segment::split(&leaves) {
            let records = &leaves[at..at + count];
            sled_batch.insert(&record_key(seq), segment::encode(records));
            seq += count as u64;
            at += count;
        }
        drop(leaves);
        for (index, chunk) in (base..)
            .step_by(HASH_SEGMENT_HASHES_MAX)
            .zip(new_hashes.chunks(HASH_SEGMENT_HASHES_MAX * HASH_BYTES))
        {
            sled_batch.insert(&hash_key(index), chunk);
        }
        if tree_size != first_seq {
            let note = sign_checkpoint(&self.signer, &self.origin, tree_size, root)?;
            sled_batch.insert(&checkpoint_key(tree_size), note);
            sled_batch.insert(meta_key(META_SIZE), &tree_size.to_be_bytes());
        }
        for (key, value) in side_writes {
            let key = side_key(&key)?;
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }

        self.tree
            .apply_batch(sled_batch)
            .map_err(|source| LogError::Append {
                seq: first_seq,
                source,
            })?;
        // sled now shows the batch to readers; keep the size in step with it.
        self.size = tree_size;
        self.frontier = Some(frontier);
        if let Err(source) = self.db.flush() {
            self.poisoned = true;
            return Err(LogError::Flush {
                seq: first_seq,
                source,
            });
        }
        Ok(Appended {
            first_seq,
            tree_size,
            root,
        })
    }

    /// The record at `seq`, or `None` if `seq` is not below the tree size.
    pub fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        if seq >= self.size {
            return Ok(None);
        }
        let segment = record_segment_at(&self.tree, seq)?;
        Ok(Some(segment.record(seq).to_vec()))
    }

    /// The records with seqs in `[from, to)`, capped at the tree size, in
    /// order, read one segment at a time. A gap is reported as a missing
    /// record, and ends the iteration.
    pub fn records(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), LogError>> {
        RecordIter {
            tree: self.tree.clone(),
            segments: None,
            current: None,
            next_seq: from,
            end: to.min(self.size),
            failed: false,
        }
    }

    /// The side value at `key`.
    pub fn side_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let k = side_key(key)?;
        self.tree
            .get(k)
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|source| LogError::Read {
                what: format!("side key {}", String::from_utf8_lossy(key)),
                source,
            })
    }

    /// The side entries whose key starts with `prefix`, in key order.
    pub fn side_scan(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), LogError>> {
        let mut k = Vec::with_capacity(1 + prefix.len());
        k.push(PREFIX_SIDE);
        k.extend_from_slice(prefix);
        let what = format!("side keys under {}", String::from_utf8_lossy(prefix));
        self.tree.scan_prefix(k).map(move |item| match item {
            Ok((key, value)) => Ok((key[1..].to_vec(), value.to_vec())),
            Err(source) => Err(LogError::Read {
                what: what.clone(),
                source,
            }),
        })
    }

    /// The root of the tree of the first `size` records.
    pub fn root(&self, size: u64) -> Result<HashBytes, LogError> {
        self.check_size(size)?;
        if let Some(frontier) = self.frontier.as_ref().filter(|_| size == self.size) {
            if let Ok(root) = frontier.root(size) {
                return Ok(root.0);
            }
        }
        let reader = self.reader();
        tlog_tiles::tree_hash(size, &reader)
            .map(|h| h.0)
            .map_err(|e| reader.error(e, &format!("computing the root at size {size}")))
    }

    /// The latest signed checkpoint note.
    pub fn checkpoint(&self) -> Result<Vec<u8>, LogError> {
        self.checkpoint_at(self.size)?
            .ok_or_else(|| LogError::Corrupt {
                reason: format!("there is no checkpoint at the tree size {}", self.size),
            })
    }

    /// The signed checkpoint note at `size`, if an append ended there.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.tree
            .get(checkpoint_key(size))
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|source| LogError::Read {
                what: format!("the checkpoint at size {size}"),
                source,
            })
    }

    /// Proof that record `seq` is in the tree of `tree_size` records.
    pub fn prove_inclusion(&self, seq: u64, tree_size: u64) -> Result<InclusionProof, LogError> {
        self.check_size(tree_size)?;
        if seq >= tree_size {
            return Err(LogError::SeqOutOfRange { seq, tree_size });
        }
        let record = self.record(seq)?.ok_or(LogError::RecordMissing { seq })?;
        let leaf_hash = tlog_tiles::record_hash(&record);
        let reader = self.reader();
        let stored = reader
            .read_hashes(&[tlog_tiles::stored_hash_index(0, seq)])
            .map_err(|e| reader.error(e, &format!("reading the leaf hash of record {seq}")))?;
        if stored.first() != Some(&leaf_hash) {
            return Err(LogError::Corrupt {
                reason: format!("record {seq} does not match its leaf hash"),
            });
        }
        let path = tlog_tiles::prove_record(tree_size, seq, &reader)
            .map_err(|e| reader.error(e, &format!("proving record {seq} in size {tree_size}")))?;
        let root = self.root(tree_size)?;
        // tlog's record proof is already bottom-up, which is RFC 9162's
        // audit path order (the tests check it against the RFC and Go).
        Ok(InclusionProof {
            leaf_index: seq,
            tree_size,
            leaf_hash: leaf_hash.0,
            root_hash: root,
            inclusion_path: path.into_iter().map(|h| h.0).collect(),
        })
    }

    /// Proof that the tree of `first` records is a prefix of the tree of
    /// `second` records.
    pub fn prove_consistency(&self, first: u64, second: u64) -> Result<ConsistencyProof, LogError> {
        self.check_size(second)?;
        if first > second {
            return Err(LogError::SizesOutOfOrder { first, second });
        }
        let path = if first == 0 {
            Vec::new()
        } else {
            let reader = self.reader();
            tlog_tiles::prove_tree(second, first, &reader)
                .map_err(|e| reader.error(e, &format!("proving size {first} in size {second}")))?
        };
        Ok(ConsistencyProof {
            first_size: first,
            second_size: second,
            first_root: self.root(first)?,
            second_root: self.root(second)?,
            consistency_path: path.into_iter().map(|h| h.0).collect(),
        })
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size > self.size {
            return Err(LogError::SizeBeyondLog {
                size,
                log_size: self.size,
            });
        }
        Ok(())
    }

    fn reader(&self) -> StoreReader<'_> {
        StoreReader::new(
            &self.tree,
            self.frontier.as_ref().unwrap_or(&frontier::EMPTY),
            tlog_tiles::stored_hash_count(self.size),
        )
    }
}

/// Whether `error` is sled failing to take the database's file lock.
pub(crate) fn is_lock_error(error: &LogError) -> bool {
    matches!(error, LogError::OpenDb { source: sled::Error::Io(e), .. }
        if e.to_string().contains("could not acquire lock"))
}

/// How long opening waits for another handle to release sled's file lock:
/// a handle that was just dropped (a restart in the same process) releases it
/// a moment later, from sled's background thread.
pub const DB_LOCK_WAIT_MS_MAX: u64 = 5_000;

pub(crate) fn open_db(path: &Path) -> Result<sled::Db, LogError> {
    let start = std::time::Instant::now();
    loop {
        let result = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| LogError::OpenDb {
                path: path.to_path_buf(),
                source,
            });
        match result {
            Err(error)
                if is_lock_error(&error)
                    && start.elapsed() < std::time::Duration::from_millis(DB_LOCK_WAIT_MS_MAX) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub(crate) fn open_tree(db: &sled::Db, path: &Path) -> Result<sled::Tree, LogError> {
    db.open_tree(TREE_NAME).map_err(|source| LogError::OpenDb {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_error("create key directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io_error("set permissions of", path))
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<(), LogError> {
    fs::create_dir(path).map_err(io_error("create key directory", path))
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_error("set permissions of", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

/// Refuses a signing key that group or others may read.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path)
        .map_err(io_error("read metadata of", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(LogError::KeyPermissions {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), LogError> {
    Ok(())
}

/// Writes `dir/name` through a temporary file, a rename and a directory sync.
fn write_file_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut file = fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
        file.write_all(contents).map_err(io_error("write", &tmp))?;
        file.sync_all().map_err(io_error("sync", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
    let dir_file = fs::File::open(dir).map_err(io_error("open", dir))?;
    dir_file.sync_all().map_err(io_error("sync", dir))
}
