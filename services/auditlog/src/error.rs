//! Errors of the audit log. Each `Display` says what this layer was doing and
//! names the object; the cause is in `source()`, printed once at the top.

use std::path::PathBuf;

/// A failure to read or write the log, or a caller asking for something the
/// log cannot give (a tree size it does not have, a batch over a limit).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no log at {}; run `twinlog init --log {}`", dir.display(), dir.display())]
    NotFound { dir: PathBuf },

    #[error("a log already exists at {}", dir.display())]
    AlreadyExists { dir: PathBuf },

    #[error("{} is not empty and holds no log; refusing to create a log there", dir.display())]
    DirNotEmpty { dir: PathBuf },

    #[error("invalid log origin {origin:?}: it must be non-empty, without spaces or '+'")]
    InvalidOrigin { origin: String },

    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to open the audit log database {}", path.display())]
    OpenDb {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("failed to read {what} from the audit log")]
    Read {
        what: String,
        #[source]
        source: sled::Error,
    },

    #[error("failed to append audit batch at seq {seq}")]
    Append {
        seq: u64,
        #[source]
        source: sled::Error,
    },

    #[error("failed to flush audit batch at seq {seq}")]
    Flush {
        seq: u64,
        #[source]
        source: sled::Error,
    },

    #[error("the audit log is unusable after a failed flush at seq {seq}; reopen it")]
    Poisoned { seq: u64 },

    #[error("log metadata {} is invalid: {reason}", path.display())]
    Metadata { path: PathBuf, reason: String },

    #[error("signing key {} is invalid: {reason}", path.display())]
    SigningKey { path: PathBuf, reason: String },

    #[error("signing key {} is readable by group or others (mode {mode:o}); run `chmod 600` on it", path.display())]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error("failed to sign the checkpoint at size {size}: {reason}")]
    Sign { size: u64, reason: String },

    #[error("audit batch at seq {seq} has {count} records, over APPEND_BATCH_COUNT_MAX ({max})")]
    BatchCountOverLimit { seq: u64, count: usize, max: usize },

    #[error("audit batch at seq {seq} has {bytes} bytes of records, over APPEND_BATCH_BYTES_MAX ({max})")]
    BatchBytesOverLimit { seq: u64, bytes: usize, max: usize },

    #[error("record {seq} has {bytes} bytes, over RECORD_BYTES_MAX ({max})")]
    RecordBytesOverLimit { seq: u64, bytes: usize, max: usize },

    #[error(
        "audit batch at seq {seq} has {count} side writes, over SIDE_WRITES_COUNT_MAX ({max})"
    )]
    SideWritesOverLimit { seq: u64, count: usize, max: usize },

    #[error("side key of {bytes} bytes is over SIDE_KEY_BYTES_MAX ({max})")]
    SideKeyBytesOverLimit { bytes: usize, max: usize },

    #[error("tree size {size} is beyond the log size {log_size}")]
    SizeBeyondLog { size: u64, log_size: u64 },

    #[error("record {seq} is not in a tree of size {tree_size}")]
    SeqOutOfRange { seq: u64, tree_size: u64 },

    #[error("consistency proof from size {first} to size {second}: the first size is larger")]
    SizesOutOfOrder { first: u64, second: u64 },

    #[error("record {seq} is missing from the audit log")]
    RecordMissing { seq: u64 },

    #[error("audit log storage is corrupt: {reason}; run `twinlog verify`")]
    Corrupt { reason: String },
}

/// Why [`crate::AuditLog::verify`] rejected the log: the stored records,
/// hashes and signed checkpoints disagree. An expected outcome of an audit,
/// kept apart from failures to read the log ([`VerifyError::Log`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("record {seq} is missing")]
    RecordMissing { seq: u64 },

    #[error("record {seq} does not match its leaf hash")]
    RecordMismatch { seq: u64 },

    #[error("record {seq} is beyond the tree size {tree_size}")]
    RecordBeyondSize { seq: u64, tree_size: u64 },

    #[error("record segment {first}..{end} is corrupt: {reason}")]
    SegmentCorrupt {
        first: u64,
        end: u64,
        reason: String,
    },

    #[error("stored hash segment at index {first} is corrupt: {reason}")]
    HashSegmentCorrupt { first: u64, reason: String },

    #[error("stored hash {index} (level {level}, node {node}) is missing")]
    StoredHashMissing { index: u64, level: u8, node: u64 },

    #[error("stored hash {index} (level {level}, node {node}) does not match the records")]
    StoredHashMismatch { index: u64, level: u8, node: u64 },

    #[error("stored hash {index} is beyond the tree size {tree_size}")]
    StoredHashBeyondSize { index: u64, tree_size: u64 },

    #[error("checkpoint at size {size} does not match the records: the first bad record is in {from}..{size}")]
    CheckpointMismatch { size: u64, from: u64 },

    #[error("checkpoint at size {size} is not validly signed by the log key: {reason}")]
    CheckpointSignature { size: u64, reason: String },

    #[error("checkpoint at size {size} is malformed: {reason}")]
    CheckpointMalformed { size: u64, reason: String },

    #[error("checkpoint at size {size} is beyond the tree size {tree_size}")]
    CheckpointBeyondSize { size: u64, tree_size: u64 },

    #[error("there is no checkpoint at the tree size {size}")]
    CheckpointMissing { size: u64 },
}

/// The outcome of a failed [`crate::AuditLog::verify`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log does not verify: it was changed outside the append path.
    #[error(transparent)]
    Tampered(#[from] Tamper),
    /// The log could not be read.
    #[error("failed to read the audit log while verifying it")]
    Log(#[from] LogError),
}

/// Why an inclusion or consistency proof does not verify
/// (see [`crate::verify_proof`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {leaf_index} is not below the tree size {tree_size}")]
    LeafIndexOutOfRange { leaf_index: u64, tree_size: u64 },

    #[error("first size {first} is larger than second size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },

    #[error("the proof path is too long for its sizes")]
    PathTooLong,

    #[error("the proof path is too short for its sizes")]
    PathTooShort,

    #[error("the proof path must be empty for these sizes")]
    PathNotEmpty,

    #[error("the root computed from the path does not match the root hash")]
    RootMismatch,

    #[error("the first root computed from the path does not match the first root")]
    FirstRootMismatch,

    #[error("the second root computed from the path does not match the second root")]
    SecondRootMismatch,
}

/// Why a checkpoint note does not verify (see
/// [`crate::verify_proof::verify_checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("invalid verifier key: {reason}")]
    VerifierKey { reason: String },

    #[error("checkpoint note does not verify: {reason}")]
    Signature { reason: String },

    #[error("checkpoint text is malformed: {reason}")]
    Malformed { reason: String },

    #[error("checkpoint origin {origin:?} is not the key name {key_name:?}")]
    OriginMismatch { origin: String, key_name: String },
}
