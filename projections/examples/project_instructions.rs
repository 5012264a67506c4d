//! The projection bench's workload run once, for instruction counts:
//!
//! ```sh
//! cargo build --profile bench -p twinlog-projections --example project_instructions
//! valgrind --tool=callgrind --toggle-collect='*project_once*' target/release/examples/project_instructions
//! ```
//!
//! Instructions per record = the collected total / 100,000.

#[path = "../benches/support/workload.rs"]
mod workload;

use twinlog_projections::{Config, RateCard};
use workload::{project_once, records};

fn main() {
    let card = RateCard::parse(include_str!("../ratecards/example.csv")).unwrap_or_default();
    let views = project_once(&Config::new(card), &records());
    println!(
        "{} records applied",
        views.applied_through().map_or(0, |s| s + 1)
    );
}
