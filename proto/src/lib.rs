//! twinlog's wire schemas. This crate owns the `.proto` files under `proto/proto/`
//! and the Rust types generated from them: the normalised ingest events that the
//! ingestors publish, the audit record that is each leaf of the Merkle tree, and
//! the checkpoint. It is the only crate where domain types meet bytes; it holds
//! no logic beyond encoding helpers.
//!
//! JSON follows the canonical protobuf JSON mapping (via `pbjson`), with the
//! original field names: bytes as base64, 64-bit integers as strings, enums by name.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/twinlog.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/twinlog.v1.serde.rs"));
}

pub use prost::Message as ProstMessage;

/// Encodes a message to its canonical protobuf bytes. prost writes fields in
/// field-number order and maps in key order (`BTreeMap`), so equal values give
/// equal bytes.
pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}
