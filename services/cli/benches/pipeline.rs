//! The whole durable pipeline: webhook bodies normalised, decided, sealed,
//! encoded, hashed and group-committed to disk (one fsync per batch).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use twinlog::Twinlog;
use twinlog_normalize::{normalize, IngestContext};
use twinlog_proto::v1::{IngestEvent, Source};

const EVENTS: usize = 10_000;

/// Inbound texts from 500 customers, one webhook body each, normalised.
fn inputs() -> Vec<(IngestEvent, Source)> {
    (0..EVENTS)
        .flat_map(|i| {
            let body = format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"1650555{c:04}"}}],"messages":[{{"from":"1650555{c:04}","id":"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTBCMkM{i:08}","timestamp":"{t}","type":"text","text":{{"body":"Does it come in another color? I would like blue."}}}}]}}}}]}}]}}"#,
                c = i % 500,
                t = 1_763_380_800 + i
            );
            normalize(body.as_bytes(), &IngestContext { ingest_time_ms: 1_763_380_800_000 })
                .expect("a valid body")
        })
        .enumerate()
        .map(|(i, event)| {
            let source = Source {
                topic: "inbound".into(),
                partition: 0,
                offset: i64::try_from(i).unwrap_or(i64::MAX),
            };
            (event, source)
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("durable_pipeline", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let t = Twinlog::init(dir.path()).expect("init");
                (dir, t)
            },
            |(dir, mut t)| {
                let report = t.append(&inputs).expect("append");
                assert_eq!(report.appended, EVENTS as u64);
                (dir, t)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
