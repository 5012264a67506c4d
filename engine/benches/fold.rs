//! The fold's throughput on one core: `decide` + `evolve` + encoding and
//! leaf-hashing each record, with tags computed by HMAC-SHA256 as the vault
//! does. No sealing and no IO: those are measured by the pipeline bench.

#[path = "support/workload.rs"]
mod workload;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use twinlog_engine::{Config, State};
use workload::{events, fold_once, Pseudo, EVENTS};

fn fold(c: &mut Criterion) {
    let inputs = events();
    let tagger = Pseudo::new();
    let config = Config::default();
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("decide_evolve_leaf_hash", |b| {
        b.iter_batched(
            State::default,
            |state| fold_once(state, &config, &tagger, &inputs),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
