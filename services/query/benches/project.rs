//! The read side's throughput: audit records per second through the
//! projection worker into sled (bus read, decode, fold, row encoding, one
//! sled batch and flush per batch), and API requests per second for a
//! conversation page and a billing summary over loopback HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use support::{last_seqs, open_bus, publish, scenario, Harness, MapOpener, Worker, ADMIN};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn worker(c: &mut Criterion) {
    let rt = runtime();
    // About 19k records per partition, 38k in all.
    let items = scenario(40, 100);
    let dir = tempfile::tempdir().expect("a temp dir");
    let bus = rt.block_on(async {
        let bus = open_bus(&dir.path().join("bus"));
        publish(&bus, &items).await;
        bus
    });
    let last = last_seqs(&items);
    let mut group = c.benchmark_group("projector");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(
        u64::try_from(items.len()).unwrap_or(0),
    ));
    group.bench_function("records_into_sled", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let views = tempfile::tempdir().expect("a temp dir");
                let opener = MapOpener::of(&items);
                let bus = Arc::clone(&bus);
                total += rt.block_on(async {
                    let started = Instant::now();
                    let w = Worker::start(views.path(), bus, opener);
                    w.wait_applied(&last).await;
                    let elapsed = started.elapsed();
                    w.stop().await;
                    elapsed
                });
            }
            total
        });
    });
    group.finish();
}

fn api(c: &mut Criterion) {
    let rt = runtime();
    let h = rt.block_on(Harness::start(20, 20));
    let customer = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        support::customer(0, 2),
    );
    let mut group = c.benchmark_group("api");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    for (name, path) in [
        (
            "conversation_page",
            format!("/v1/conversations/PN1/{customer}/messages?limit=50"),
        ),
        (
            "billing_summary",
            "/v1/billing/summary?group_by=channel".to_string(),
        ),
        (
            "conversations_list",
            "/v1/conversations?limit=100".to_string(),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(h.json(&path, ADMIN)));
        });
    }
    group.finish();
}

criterion_group!(benches, worker, api);
criterion_main!(benches);
