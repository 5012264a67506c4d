//! twinlog's audit log: the ground state of the system. This crate owns the
//! durable, append-only log of audit records on sled, its RFC 6962 Merkle tree
//! (leaf hash `SHA-256(0x00 || record)`, node hash `SHA-256(0x01 || l || r)`),
//! the Ed25519-signed checkpoints (C2SP tlog-checkpoint in a C2SP signed
//! note), inclusion and consistency proofs in RFC 9162 form, an independent
//! proof verifier ([`verify_proof`]) and the full rebuild-and-compare audit
//! ([`AuditLog::verify`]). It knows nothing of what a record means.
//!
//! **Invariant:** there is no update and no delete of a record, in code or in
//! the API. The only write is [`AuditLog::append`], and the sled tree that
//! holds the records is never handed out.
//!
//! **Invariant:** one [`AuditLog::append`] is one sled batch (records, stored
//! hashes, side writes, tree size, signed checkpoint) and one `fsync`: a crash
//! leaves either all of a batch or none of it.
//!
//! # On-disk layout
//!
//! A log is a directory `DIR`:
//!
//! | path | what | mode |
//! |---|---|---|
//! | `DIR/log.json` | `{"format_version": 1, "origin": ..., "verifier_key": ...}`; public, written last at creation | default |
//! | `DIR/keys/` | key directory | `0700` |
//! | `DIR/keys/signing.key` | the C2SP signer key `PRIVATE+KEY+<origin>+<id>+<base64>` | `0600` |
//! | `DIR/db/` | the sled 0.34 database, shared with other crates' trees ([`AuditLog::db`]) | default |
//!
//! The origin (also the key name) is `twinlog/<uuid v4>` unless one is given
//! at creation. In the database the log owns one tree, `twinlog/auditlog`,
//! whose keys start with a one-byte prefix; numbers are `u64` big-endian so
//! that key order is numeric order:
//!
//! | key | value |
//! |---|---|
//! | `r` + seq | the record (leaf data) |
//! | `h` + stored hash index | 32-byte hash, in `tlog`'s stored-hash layout ([`tlog_tiles::stored_hash_index`]) |
//! | `c` + tree size | the signed checkpoint note at that size: one at creation (size 0) and one per append that adds records |
//! | `m` + `size` | the tree size |
//! | `s` + key | side values of other crates, written in the same batch as records ([`AppendBatch::side_writes`]) |

mod error;
mod log;
mod proof;
mod verify;
pub mod verify_proof;

pub use error::{CheckpointError, LogError, ProofError, Tamper, VerifyError};
pub use log::{
    AppendBatch, Appended, AuditLog, APPEND_BATCH_BYTES_MAX, APPEND_BATCH_COUNT_MAX,
    FORMAT_VERSION, RECORD_BYTES_MAX, SIDE_KEY_BYTES_MAX, SIDE_WRITES_COUNT_MAX,
};
pub use proof::{ConsistencyProof, HashBytes, InclusionProof};
pub use verify::{VerifyReport, VERIFY_PROGRESS_INTERVAL_RECORDS};
