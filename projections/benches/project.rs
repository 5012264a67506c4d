//! Records per second folded into every view (issue 4's projection
//! throughput): a realistic mix of inbound, echoes, API sends with their
//! statuses (priced), edits and contact syncs over many customers.

#[path = "support/workload.rs"]
mod workload;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use twinlog_projections::{Config, RateCard};
use workload::{project_once, records};

fn project(c: &mut Criterion) {
    let card = RateCard::parse(include_str!("../ratecards/example.csv")).unwrap_or_default();
    let config = Config::new(card);
    let recs = records();
    let mut group = c.benchmark_group("project");
    group.sample_size(10);
    group.throughput(Throughput::Elements(
        u64::try_from(recs.len()).unwrap_or(u64::MAX),
    ));
    group.bench_function("all_views", |b| {
        b.iter_batched(
            || (),
            |()| project_once(&config, &recs),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, project);
criterion_main!(benches);
