//! The fold bench's workload run once, for instruction counts:
//!
//! ```sh
//! cargo build --release -p twinlog-engine --example fold_instructions
//! valgrind --tool=callgrind --toggle-collect='*fold_once*' target/release/examples/fold_instructions
//! ```
//!
//! Instructions per event = the collected total / 10,000. (Under valgrind
//! SHA-256 runs in software: SHA-NI is not emulated.)

#[path = "../benches/support/workload.rs"]
mod workload;

use twinlog_engine::{Config, State};
use workload::{events, fold_once, Pseudo};

fn main() {
    let inputs = events();
    let tagger = Pseudo::new();
    let config = Config::default();
    let state = fold_once(State::default(), &config, &tagger, &inputs);
    println!("{} records", state.records);
}
