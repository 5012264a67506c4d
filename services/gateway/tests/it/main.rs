//! The gateway's integration tests: real HTTP over loopback, the real
//! embedded bus in a temporary directory, and the Graph API simulator in
//! place of Meta. Assertions count errors the simulator saw, never
//! wall-clock durations.

mod gateway;
mod simulator;
mod support;
