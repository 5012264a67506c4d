//! twinlog's end-to-end tests: one binary, real sled on disk.

mod determinism;
mod fold;
mod privacy;
mod runner;
mod simulation;
