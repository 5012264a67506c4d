//! The audit log's one integration-test binary.

mod checkpoint;
mod common;
mod durability;
mod interop;
mod proofs;
mod segments;
mod tamper;
mod vectors;
