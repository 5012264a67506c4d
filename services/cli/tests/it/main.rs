//! The `twinlog` binary, driven as a user would: real processes, real sled
//! on disk, real HTTP over loopback and, for the Kafka tests, a real broker.

mod cli;
mod e2e;
