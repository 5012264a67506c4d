//! The whole durable pipeline: normalised events in, decided, sealed,
//! encoded, hashed and group-committed to disk (one fsync per batch).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sha2::{Digest, Sha256};
use twinlog::Twinlog;
use twinlog_proto::v1::{
    ingest_event::Kind, message::Content, Envelope, Identity, IngestEvent, Message, Source, Text,
};

const EVENTS: usize = 10_000;

/// Inbound texts from 500 customers, each a new message.
fn events() -> Vec<(IngestEvent, Source)> {
    (0..EVENTS)
        .map(|i| {
            let phone = format!("1650555{:04}", i % 500);
            let event = IngestEvent {
                envelope: Some(Envelope {
                    phone_number_id: "106540352242922".into(),
                    display_phone_number: "15550783881".into(),
                    waba_id: "102290129340398".into(),
                    customer: Some(Identity {
                        phone: phone.clone(),
                        profile_name: "Sheena Nelson".into(),
                        ..Identity::default()
                    }),
                    meta_timestamp: 1_763_380_800 + i as i64,
                    ingest_time_ms: 1_763_380_800_000 + i as i64,
                    body_sha256: Sha256::digest(i.to_be_bytes()).to_vec(),
                    field: "messages".into(),
                    ..Envelope::default()
                }),
                kind: Some(Kind::Inbound(Message {
                    wamid: format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTBCMkM{i:08}"),
                    r#type: "text".into(),
                    timestamp: 1_763_380_800 + i as i64,
                    from: phone,
                    content: Some(Content::Text(Text {
                        body: "Does it come in another color? I would like blue.".into(),
                        preview_url: false,
                    })),
                    ..Message::default()
                })),
            };
            let source = Source {
                topic: "inbound".into(),
                partition: 0,
                offset: i as i64,
            };
            (event, source)
        })
        .collect()
}

fn fold(c: &mut Criterion) {
    let inputs = events();
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

criterion_group!(benches, fold);
criterion_main!(benches);
