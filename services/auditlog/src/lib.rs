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
//! holds the records is never handed out. The one exception is the
//! `tamper` module, compiled only with the `tamper` cargo feature, which only
//! dev-dependencies turn on: test support that rewrites a *closed* log the
//! way an attacker with disk access would, so that tests can check that
//! [`AuditLog::verify`] catches it. No shipped binary contains it.
//!
//! **Invariant:** one [`AuditLog::append`] is one sled batch (record
//! segments, hash segments, side writes, tree size, signed checkpoint) and
//! one `fsync`: a crash leaves either all of a batch or none of it.
//!
//! # On-disk layout (format 2)
//!
//! A log is a directory `DIR`:
//!
//! | path | what | mode |
//! |---|---|---|
//! | `DIR/log.json` | `{"format_version": 2, "origin": ..., "verifier_key": ...}`; public, written last at creation | default |
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
//! | `r` + first seq | a record segment: records `first..first + n` of one append (format below) |
//! | `h` + first stored hash index | a hash segment: the 32-byte hashes at consecutive indexes of `tlog`'s stored-hash layout ([`tlog_tiles::stored_hash_index`]), back to back |
//! | `c` + tree size | the signed checkpoint note at that size: one at creation (size 0) and one per append that adds records |
//! | `m` + `size` | the tree size |
//! | `s` + key | side values of other crates, written in the same batch as records ([`AppendBatch::side_writes`]) |
//!
//! Segments tile their key space: the record segments hold seqs `0..size`
//! each exactly once, the hash segments hold stored hash indexes
//! `0..stored_hash_count(size)`; record `seq` (hash `i`) is in the segment
//! with the greatest key at or below it. No segment spans two appends. An
//! append of `n` records writes `n` records in record segments of at most
//! [`SEGMENT_RECORDS_MAX`] records and [`SEGMENT_BYTES_MAX`] bytes (one
//! larger record gets a segment alone), and its new stored hashes, which
//! have contiguous indexes, in hash segments of at most
//! [`HASH_SEGMENT_HASHES_MAX`] hashes. The byte cap keeps every sled node
//! inline in sled's fsynced log: sled 0.34 writes larger nodes to blob files
//! that it does not fsync.
//!
//! A record segment (numbers big-endian):
//!
//! | bytes | what |
//! |---|---|
//! | `0` | segment version, `1` |
//! | `1..5` | `n`, the number of records, `u32`, `1..=SEGMENT_RECORDS_MAX` |
//! | `5..5 + 4n` | offsets table: the end of each record in the record area, `u32`, non-decreasing, the last equal to the area's length |
//! | `5 + 4n..` | record area: the records back to back; record `first + i` is `area[end[i-1]..end[i]]`, with `end[-1] = 0` |
//!
//! The log keeps the right edge of the tree (the roots of its complete
//! subtrees, at most 64 hashes) in memory, rebuilt from the hash segments at
//! open, so that an append reads nothing from sled.

mod error;
mod frontier;
mod log;
mod proof;
mod segment;
#[cfg(feature = "tamper")]
#[doc(hidden)]
pub mod tamper;
mod verify;
pub mod verify_proof;

pub use error::{CheckpointError, LogError, ProofError, Tamper, VerifyError};
pub use log::{
    AppendBatch, Appended, AuditLog, APPEND_BATCH_BYTES_MAX, APPEND_BATCH_COUNT_MAX,
    FORMAT_VERSION, RECORD_BYTES_MAX, SIDE_KEY_BYTES_MAX, SIDE_WRITES_COUNT_MAX,
};
pub use proof::{ConsistencyProof, HashBytes, InclusionProof};
pub use segment::{HASH_SEGMENT_HASHES_MAX, SEGMENT_BYTES_MAX, SEGMENT_RECORDS_MAX};
pub use verify::{VerifyReport, VERIFY_PROGRESS_INTERVAL_RECORDS};
