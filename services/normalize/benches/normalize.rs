//! Bodies per second for a typical inbound text webhook and for a history chunk
//! of 200 messages in one thread.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use twinlog_normalize::{normalize, IngestContext};

fn inbound_text() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/webhooks/inbound_text.json"
    ))
    .expect("fixture inbound_text.json")
}

fn history_chunk_200() -> Vec<u8> {
    let messages: Vec<String> = (0..200)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                ("15550783881", r#","to":"16505551234""#)
            } else {
                ("16505551234", "")
            };
            format!(
                r#"{{"from":"{from}"{to},"id":"wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI{i:05}","timestamp":"{}","type":"text","text":{{"body":"Message number {i} of the thread, with a little text."}},"history_context":{{"status":"READ"}}}}"#,
                1_760_000_000 + i * 60
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"history","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"history":[{{"metadata":{{"phase":1,"chunk_order":4,"progress":60}},"threads":[{{"id":"16505551234","messages":[{}]}}]}}]}}}}]}}]}}"#,
        messages.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let ctx = IngestContext {
        ingest_time_ms: 1_764_000_000_000,
    };
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    let text = inbound_text();
    assert_eq!(normalize(&text, &ctx).map(|e| e.len()).ok(), Some(1));
    group.bench_function("inbound_text", |b| {
        b.iter(|| normalize(black_box(&text), &ctx))
    });
    let history = history_chunk_200();
    let events = normalize(&history, &ctx).expect("history body normalises");
    assert_eq!(events.len(), 1);
    group.bench_function("history_chunk_200_messages", |b| {
        b.iter(|| normalize(black_box(&history), &ctx))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
