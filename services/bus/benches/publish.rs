//! Durable publish throughput of the embedded bus: batches of 1 and 100
//! records of 300 bytes, from 1 and 8 concurrent publishers. Throughput is
//! in records per second; every publish waits for its flush (group commit
//! shares flushes between concurrent publishers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twinlog_bus::{Bus, EmbeddedBus, EmbeddedConfig, OutRecord, Topic};

const PAYLOAD_BYTES: usize = 300;

fn batch(publisher: usize, records: usize) -> Vec<OutRecord> {
    let key = format!("10654035224{publisher:04}").into_bytes();
    (0..records)
        .map(|i| OutRecord {
            topic: Topic::ALL[i % Topic::ALL.len()],
            key: key.clone(),
            payload: vec![b'x'; PAYLOAD_BYTES],
            timestamp_ms: 1_764_000_000_000,
        })
        .collect()
}

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("embedded_publish");
    for publishers in [1usize, 8] {
        for records in [1usize, 100] {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = EmbeddedConfig {
                partitions: 8,
                ..EmbeddedConfig::default()
            };
            let bus = Arc::new(EmbeddedBus::open(dir.path(), config).expect("open bus"));
            group.throughput(Throughput::Elements((publishers * records) as u64));
            let id = BenchmarkId::new(
                format!("{publishers}_publishers"),
                format!("batch_{records}"),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let bus = Arc::clone(&bus);
                    runtime.block_on(async move {
                        let started = Instant::now();
                        let mut tasks = Vec::new();
                        for publisher in 0..publishers {
                            let bus = Arc::clone(&bus);
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..iters {
                                    bus.publish(batch(publisher, records))
                                        .await
                                        .expect("publish");
                                }
                            }));
                        }
                        for task in tasks {
                            task.await.expect("publisher");
                        }
                        started.elapsed()
                    })
                })
            });
            let stats = bus.stats();
            eprintln!(
                "{publishers} publishers, batch {records}: {} publishes, {} flushes ({:.1} publishes per flush)",
                stats.publishes,
                stats.flushes,
                stats.publishes as f64 / stats.flushes.max(1) as f64
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = publish
}
criterion_main!(benches);
