//! twinlog-query's integration tests: real sled on disk, the embedded bus,
//! real HTTP over loopback.

mod api;
mod crash;
mod support;
