//! The ingestor's integration tests: real HTTP over loopback, real sled on
//! disk, the real embedded bus.

mod harness;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::{
    any_file_contains, config, copy_dir, fixture, sign, Harness, TestBus, SECRET, SECRET_2,
    VERIFY_TOKEN,
};
use prometheus_client::registry::Registry;
use twinlog_bus::Topic;
use twinlog_ingest::{
    day_of, key_of, topic_of, IngestConfig, Ingestor, DAY_KEY_BYTES, DAY_MS, KEY_FILE_NAME,
    STORE_DIR_NAME,
};
use twinlog_normalize::{normalize, IngestContext, NormalizeError};
use twinlog_proto::v1::IngestEvent;

const PHONE_NUMBER_ID: &[u8] = b"106540352242922";

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// The events a body normalises to, with the ingest time cleared.
fn expected_events(body: &[u8]) -> Vec<IngestEvent> {
    let mut events = normalize(body, &IngestContext { ingest_time_ms: 0 }).expect("normalize");
    events.sort_by_key(prost::Message::encode_to_vec);
    events
}

fn without_ingest_time(mut event: IngestEvent) -> IngestEvent {
    if let Some(envelope) = event.envelope.as_mut() {
        envelope.ingest_time_ms = 0;
    }
    event
}

/// A webhook body of one inbound text message whose text is `text`.
fn inbound_text_with(text: &str) -> Vec<u8> {
    let body = String::from_utf8(fixture("inbound_text.json")).expect("utf8");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let old = value["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"]
        .as_str()
        .expect("text body")
        .to_owned();
    body.replacen(&old, text, 1).into_bytes()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut body = String::from("{\"object\":\"whatsapp_business_account\",\"entry\":");
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push('}');
    body.into_bytes()
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    let h = Harness::start(config()).await;
    let ok = h
        .client
        .get(format!(
            "{}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444",
            h.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("text"), "1158201444");

    let wrong = h
        .client
        .get(format!(
            "{}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1158201444",
            h.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 403);
    assert_ne!(wrong.text().await.expect("text"), "1158201444");

    for query in [
        "",
        "?hub.mode=unsubscribe&hub.verify_token=verify-me-please&hub.challenge=1",
        "?hub.mode=subscribe&hub.challenge=1",
    ] {
        let r = h
            .client
            .get(format!("{}{query}", h.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403, "{query}");
    }
    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"verify_token_mismatch\"}"),
        1.0
    );
    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"handshake_malformed\"}"),
        3.0
    );
    assert_eq!(h.ingestor.stats().verified, 1);
}

#[tokio::test]
async fn signed_fixtures_are_published_with_their_topics_keys_and_receive_time() {
    let h = Harness::start(config()).await;
    let names = [
        ("inbound_text.json", Topic::Inbound),
        ("echo_text.json", Topic::AppEcho),
        ("status_delivered_read.json", Topic::Status),
        ("history_chunk.json", Topic::Sync),
    ];
    let mut expected: Vec<IngestEvent> = Vec::new();
    let before = now_ms();
    for (name, _) in names {
        let body = fixture(name);
        let r = h.post_signed(&body).await;
        assert_eq!(r.status(), 200, "{name}");
        expected.extend(expected_events(&body));
    }
    let after = now_ms();

    let records = h.bus.all().await;
    assert_eq!(records.len(), expected.len());
    let mut topics_seen = BTreeSet::new();
    let mut got: Vec<IngestEvent> = Vec::new();
    for (record, event) in records {
        assert_eq!(record.topic, topic_of(&event));
        assert_eq!(record.key, key_of(&event));
        assert_eq!(record.key, PHONE_NUMBER_ID);
        let ingest_time_ms = event.envelope.as_ref().expect("envelope").ingest_time_ms;
        assert!(
            (before..=after).contains(&ingest_time_ms),
            "ingest time {ingest_time_ms} not in {before}..={after}"
        );
        assert_eq!(record.timestamp_ms, ingest_time_ms);
        topics_seen.insert(record.topic);
        got.push(without_ingest_time(event));
    }
    got.sort_by_key(prost::Message::encode_to_vec);
    expected.sort_by_key(prost::Message::encode_to_vec);
    assert_eq!(got, expected);
    let want: BTreeSet<Topic> = names.iter().map(|(_, t)| *t).collect();
    assert_eq!(topics_seen, want);

    // The receive time stored with each body is the events' ingest time.
    let bodies = h.ingestor.bodies(100).expect("bodies");
    assert_eq!(bodies.len(), names.len());
    for (stored, (name, _)) in bodies.iter().zip(names) {
        assert_eq!(stored.body.as_deref(), Some(&fixture(name)[..]));
        assert!((before..=after).contains(&stored.receive_time_ms));
    }

    let stats = h.ingestor.stats();
    assert_eq!(stats.published, 4);
    assert_eq!(
        stats.events_published,
        u64::try_from(expected.len()).expect("n")
    );
    assert_eq!(
        h.metric("twinlog_ingest_requests_total{outcome=\"published\"}"),
        4.0
    );
    assert_eq!(
        h.metric("twinlog_ingest_events_published_total"),
        expected.len() as f64
    );
    assert!(h.metric("twinlog_ingest_publish_duration_seconds_count") >= 4.0);
}

#[tokio::test]
async fn the_second_secret_is_accepted_and_an_unknown_one_is_not() {
    let h = Harness::start(config()).await;
    let body = fixture("inbound_text.json");
    let r = h.post(&body, Some(&sign(SECRET_2, &body))).await;
    assert_eq!(r.status(), 200);
    let r = h.post(&body, Some(&sign("some-other-app", &body))).await;
    assert_eq!(r.status(), 401);
    assert_eq!(h.bus.all().await.len(), expected_events(&body).len());
    assert_eq!(h.ingestor.stats().published, 1);
}

#[tokio::test]
async fn bad_and_missing_signatures_are_refused_counted_and_not_stored() {
    let h = Harness::start(config()).await;
    let body = fixture("inbound_text.json");
    let good = sign(SECRET, &body);
    // A signature of other bytes (one byte of the body changed).
    let mut tampered = body.clone();
    tampered[10] ^= 0x20;

    assert_eq!(h.post(&body, None).await.status(), 401);
    assert_eq!(h.post(&body, Some("sha256=xyz")).await.status(), 401);
    assert_eq!(
        h.post(&body, Some(&good.replacen("sha256=", "sha1=", 1)))
            .await
            .status(),
        401
    );
    assert_eq!(h.post(&tampered, Some(&good)).await.status(), 401);
    assert_eq!(
        h.post(&body, Some(&sign("wrong", &body))).await.status(),
        401
    );

    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"signature_missing\"}"),
        1.0
    );
    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"signature_malformed\"}"),
        2.0
    );
    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"signature_mismatch\"}"),
        2.0
    );
    assert_eq!(
        h.metric("twinlog_ingest_requests_total{outcome=\"rejected\"}"),
        5.0
    );
    assert_eq!(h.ingestor.stats().rejected, 5);
    assert!(h.bus.all().await.is_empty());
    assert!(h.ingestor.bodies(10).expect("bodies").is_empty());
}

#[tokio::test]
async fn bodies_above_the_limit_are_refused_by_length_and_while_streaming() {
    let h = Harness::start(IngestConfig {
        body_bytes_max: 1024,
        ..config()
    })
    .await;
    // Declared by Content-Length.
    let big = vec![b' '; 2048];
    let r = h.post(&big, Some(&sign(SECRET, &big))).await;
    assert_eq!(r.status(), 413);

    // Streamed in chunks with no Content-Length: only the streamed length
    // can catch it.
    let addr = h
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook")
        .to_owned();
    let signature = sign(SECRET, &big);
    let status_line = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nX-Hub-Signature-256: {signature}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("write head");
        for _ in 0..4 {
            // Errors once the server has answered and closed: fine.
            let _ = stream.write_all(b"200\r\n");
            let _ = stream.write_all(&[b' '; 512]);
            let _ = stream.write_all(b"\r\n");
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
    .await
    .expect("raw client");
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"body_too_large\"}"),
        2.0
    );
    assert!(h.ingestor.bodies(10).expect("bodies").is_empty());

    // At the limit it passes (and is a dead letter: spaces are not JSON).
    let at_limit = vec![b' '; 1024];
    assert_eq!(h.post_signed(&at_limit).await.status(), 200);
    assert_eq!(h.ingestor.stats().dead_letters, 1);
}

#[tokio::test]
async fn refused_bodies_become_dead_letters_answered_200_with_nothing_on_the_bus() {
    let h = Harness::start(config()).await;
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed",
            b"{\"object\": \"whatsapp_business_account\", \"entry\": [".to_vec(),
        ),
        ("deep", nested(100)),
        ("empty", Vec::new()),
        ("not utf-8", vec![0xff, 0xfe, b'{', b'}']),
        (
            "wrong shape",
            b"{\"object\":\"page\",\"entry\":[]}".to_vec(),
        ),
        ("very deep", nested(100_000)),
    ];
    for (name, body) in &hostile {
        let r = h.post_signed(body).await;
        assert_eq!(r.status(), 200, "{name}");
    }
    let n = u64::try_from(hostile.len()).expect("n");
    assert_eq!(h.ingestor.stats().dead_letters, n);
    assert_eq!(h.ingestor.stats().dead_lettered, n);
    assert_eq!(h.metric("twinlog_ingest_dead_letters_total"), n as f64);
    assert!(h.bus.all().await.is_empty());
    assert_eq!(h.bus.publishes.load(Ordering::SeqCst), 0);

    let letters = h.ingestor.dead_letters(100).expect("dead letters");
    assert_eq!(letters.len(), hostile.len());
    assert!(letters.iter().all(|l| l.pending));
    assert!(
        letters[0].error.contains("invalid JSON"),
        "{}",
        letters[0].error
    );
    assert!(
        letters[1].error.contains("nesting deeper"),
        "{}",
        letters[1].error
    );
    // The raw bodies are kept, byte for byte.
    let bodies = h.ingestor.bodies(100).expect("bodies");
    assert_eq!(bodies[1].body.as_deref(), Some(&hostile[1].1[..]));

    // Still alive: a good body goes through afterwards.
    assert_eq!(
        h.post_signed(&fixture("inbound_text.json")).await.status(),
        200
    );
    assert!(!h.bus.all().await.is_empty());
}

/// A normaliser with a "bug": it refuses every `history` webhook.
fn normalize_without_history(
    body: &[u8],
    ctx: &IngestContext,
) -> Result<Vec<IngestEvent>, NormalizeError> {
    if body.windows(9).any(|w| w == b"\"history\"") {
        return Err(NormalizeError::Missing {
            path: "$.entry[0].changes[0].value.history (simulated bug)".to_owned(),
        });
    }
    normalize(body, ctx)
}

#[tokio::test]
async fn reprocess_publishes_dead_letters_that_a_fixed_normaliser_accepts() {
    let root = tempfile::tempdir().expect("tempdir");
    let bus = Arc::new(TestBus::open(&root.path().join("bus")));
    let h = Harness::start_with(root, bus, config(), normalize_without_history).await;
    let history = fixture("history_chunk.json");
    let malformed = b"{\"object\":".to_vec();
    assert_eq!(h.post_signed(&history).await.status(), 200);
    assert_eq!(h.post_signed(&malformed).await.status(), 200);
    assert_eq!(
        h.post_signed(&fixture("inbound_text.json")).await.status(),
        200
    );
    assert_eq!(h.ingestor.stats().dead_letters, 2);
    let on_bus_before = h.bus.all().await.len();
    assert!(h
        .bus
        .all()
        .await
        .iter()
        .all(|(r, _)| r.topic != Topic::Sync));
    let history_received_ms = h.ingestor.bodies(10).expect("bodies")[0].receive_time_ms;

    // "Deploy the fix": reopen on the same directory with the real normaliser.
    let (root, bus) = h.stop().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut registry = Registry::default();
    let ingestor = Ingestor::open(
        &root.path().join("ingest"),
        config(),
        bus.clone(),
        &mut registry,
    )
    .expect("reopen");
    let report = ingestor.reprocess().await.expect("reprocess");
    let history_events = expected_events(&history);
    assert_eq!(report.examined, 2);
    assert_eq!(report.republished, 1);
    assert_eq!(report.still_failing, 1);
    assert_eq!(report.expired, 0);
    assert_eq!(
        report.events_published,
        u64::try_from(history_events.len()).expect("n")
    );

    let all = bus.all().await;
    assert_eq!(all.len(), on_bus_before + history_events.len());
    let sync: Vec<_> = all.iter().filter(|(r, _)| r.topic == Topic::Sync).collect();
    assert_eq!(sync.len(), history_events.len());
    for (record, event) in sync {
        // The ORIGINAL receive time, not the time of the reprocessing.
        assert_eq!(
            event.envelope.as_ref().expect("envelope").ingest_time_ms,
            history_received_ms
        );
        assert_eq!(record.timestamp_ms, history_received_ms);
        assert_eq!(record.key, PHONE_NUMBER_ID);
    }

    let letters = ingestor.dead_letters(10).expect("dead letters");
    assert_eq!(letters.len(), 2);
    assert!(!letters[0].pending, "the history one is done");
    assert!(letters[1].pending, "the malformed one still fails");
    assert!(
        letters[1].error.contains("invalid JSON"),
        "{}",
        letters[1].error
    );

    // A second run finds only the one that still fails, and publishes nothing.
    let again = ingestor.reprocess().await.expect("reprocess again");
    assert_eq!(again.examined, 1);
    assert_eq!(again.republished, 0);
    assert_eq!(bus.all().await.len(), on_bus_before + history_events.len());
    assert_eq!(ingestor.stats().dead_letters_republished, 1);
}

#[tokio::test]
async fn purge_destroys_the_day_key_and_old_bodies_are_unreadable_forever() {
    let h = Harness::start(config()).await;
    let body = fixture("inbound_text.json");
    assert_eq!(h.post_signed(&body).await.status(), 200);
    assert_eq!(h.post_signed(b"not json").await.status(), 200);
    let stored = h.ingestor.bodies(10).expect("bodies");
    assert_eq!(stored.len(), 2);
    let received_ms = stored[0].receive_time_ms;
    let day = day_of(received_ms);

    // The day key, read from the key file (format in the crate docs:
    // 8 magic, 4 count, then day u32 BE | key 32).
    let key_file = h.ingest_dir().join(KEY_FILE_NAME);
    let bytes = std::fs::read(&key_file).expect("key file");
    let entries = &bytes[12..bytes.len() - 32];
    let day_key: Vec<u8> = entries
        .chunks_exact(4 + DAY_KEY_BYTES)
        .find(|e| e[..4] == day.to_be_bytes())
        .map(|e| e[4..].to_vec())
        .expect("today's key");
    assert!(any_file_contains(&h.ingest_dir(), &day_key));

    // A snapshot of sled's files from before the purge, as an attacker
    // with an old disk image would have it.
    let snapshot = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &h.ingest_dir().join(STORE_DIR_NAME),
        &snapshot.path().join("ingest").join(STORE_DIR_NAME),
    );

    // Nothing is due yet.
    let none = h.ingestor.purge_expired(now_ms()).expect("purge now");
    assert!(none.days_destroyed.is_empty());
    assert_eq!(h.ingestor.bodies(10).expect("bodies").len(), 2);

    // Fourteen days after the start of the day of receipt, it is due.
    let due_ms = i64::from(day) * DAY_MS + 14 * DAY_MS;
    let early = h.ingestor.purge_expired(due_ms - 1).expect("purge early");
    assert!(early.days_destroyed.is_empty());
    let report = h.ingestor.purge_expired(due_ms).expect("purge");
    assert_eq!(report.days_destroyed, vec![day]);
    assert_eq!(report.bodies_removed, 2);
    assert_eq!(report.dead_letters_removed, 1);
    assert!(h.ingestor.bodies(10).expect("bodies").is_empty());
    assert!(h
        .ingestor
        .dead_letters(10)
        .expect("dead letters")
        .is_empty());

    // The key's bytes are gone from the key file and from every file.
    let after = std::fs::read(&key_file).expect("key file");
    assert!(!after.windows(DAY_KEY_BYTES).any(|w| w == &day_key[..]));
    assert!(!any_file_contains(&h.ingest_dir(), &day_key));

    // The old sled files with the new key file: the body is still listed
    // there (sled kept it) but cannot be read.
    std::fs::copy(
        &key_file,
        snapshot.path().join("ingest").join(KEY_FILE_NAME),
    )
    .expect("copy");
    let old_bus = Arc::new(TestBus::open(&snapshot.path().join("bus")));
    let mut registry = Registry::default();
    let old = Ingestor::open(
        &snapshot.path().join("ingest"),
        config(),
        old_bus,
        &mut registry,
    )
    .expect("open the snapshot");
    let listed = old.bodies(10).expect("bodies");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|b| b.body.is_none()));
    assert_eq!(listed[0].receive_time_ms, received_ms);
    let report = old.reprocess().await.expect("reprocess");
    assert_eq!(report.expired, 1);
    assert_eq!(report.republished, 0);
}

#[tokio::test]
async fn a_full_in_flight_cap_answers_503_with_retry_after_at_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let (bus, gate) = TestBus::gated(&root.path().join("bus"));
    let bus = Arc::new(bus);
    let h = Harness::start_with(
        root,
        bus.clone(),
        IngestConfig {
            requests_in_flight_max: 1,
            retry_after_s: 7,
            ..config()
        },
        normalize,
    )
    .await;
    let body = fixture("inbound_text.json");
    let signature = sign(SECRET, &body);

    // The first delivery holds the only permit, stuck in the bus.
    let entered = bus.entered.notified();
    let first = {
        let client = h.client.clone();
        let url = h.url.clone();
        let body = body.clone();
        let signature = signature.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .header("X-Hub-Signature-256", signature)
                .body(body)
                .send()
                .await
                .expect("first")
                .status()
        })
    };
    tokio::time::timeout(Duration::from_secs(10), entered)
        .await
        .expect("the first delivery reaches the bus");

    let second = tokio::time::timeout(Duration::from_secs(2), h.post(&body, Some(&signature)))
        .await
        .expect("answered at once, not queued");
    assert_eq!(second.status(), 503);
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_eq!(h.ingestor.stats().busy, 1);
    assert_eq!(
        h.metric("twinlog_ingest_rejected_total{reason=\"busy\"}"),
        1.0
    );

    gate.add_permits(1);
    assert_eq!(first.await.expect("first task"), 200);
    // The permit is back.
    gate.add_permits(1);
    assert_eq!(h.post(&body, Some(&signature)).await.status(), 200);
    assert_eq!(h.ingestor.stats().published, 2);
}

#[tokio::test]
async fn an_overloaded_bus_is_503_with_retry_after_and_the_body_is_kept() {
    let h = Harness::start(config()).await;
    h.bus.overloaded.store(true, Ordering::SeqCst);
    let body = fixture("inbound_text.json");
    let r = h.post_signed(&body).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(h.ingestor.stats().bus_overloaded, 1);
    assert_eq!(h.ingestor.stats().dead_letters, 0);
    assert!(h.bus.all().await.is_empty());
    assert_eq!(h.ingestor.bodies(10).expect("bodies").len(), 1);

    // Meta's retry, once the bus recovers, goes through.
    h.bus.overloaded.store(false, Ordering::SeqCst);
    assert_eq!(h.post_signed(&body).await.status(), 200);
    assert_eq!(h.bus.all().await.len(), expected_events(&body).len());
}

#[tokio::test]
async fn raw_bodies_and_error_texts_are_not_stored_in_the_clear() {
    let h = Harness::start(config()).await;
    let marker = "PLAINTEXT-MARKER-3b9f1c7e";
    let body = inbound_text_with(marker);
    assert!(body.windows(marker.len()).any(|w| w == marker.as_bytes()));
    assert_eq!(h.post_signed(&body).await.status(), 200);
    // A dead letter whose error text quotes the marker.
    let refused = format!("{{\"object\":\"{marker}\",\"entry\":[]}}").into_bytes();
    assert_eq!(h.post_signed(&refused).await.status(), 200);
    assert_eq!(h.ingestor.stats().dead_letters, 1);
    let letters = h.ingestor.dead_letters(10).expect("dead letters");
    assert!(letters[0].error.contains(marker), "{}", letters[0].error);

    // The scan works: the bus stores the normalised text in the clear.
    assert!(any_file_contains(&h.bus_dir(), marker.as_bytes()));
    // The ingestor's directory holds it nowhere.
    assert!(!any_file_contains(&h.ingest_dir(), marker.as_bytes()));
    // Yet the body is there, readable with its key.
    let bodies = h.ingestor.bodies(10).expect("bodies");
    assert_eq!(bodies[0].body.as_deref(), Some(&body[..]));
}

#[tokio::test]
async fn concurrent_deliveries_are_all_published_with_shared_flushes() {
    let h = Harness::start(config()).await;
    let deliveries = 24;
    let mut tasks = Vec::new();
    for i in 0..deliveries {
        let body = inbound_text_with(&format!("hello number {i}"));
        let signature = sign(SECRET, &body);
        let client = h.client.clone();
        let url = h.url.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("X-Hub-Signature-256", signature)
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let per_body = expected_events(&fixture("inbound_text.json")).len();
    assert_eq!(h.bus.all().await.len(), deliveries * per_body);
    let stats = h.ingestor.stats();
    assert_eq!(stats.published, u64::try_from(deliveries).expect("n"));
    // At most one flush per body (plus none for anything else).
    assert!(stats.store_flushes <= u64::try_from(deliveries).expect("n"));
}

#[tokio::test]
async fn only_get_and_post_on_webhook_are_routed() {
    let h = Harness::start(config()).await;
    let other = h.url.replace("/webhook", "/other");
    assert_eq!(h.client.get(other).send().await.expect("get").status(), 404);
    assert_eq!(
        h.client.put(&h.url).send().await.expect("put").status(),
        405
    );
}

#[tokio::test]
async fn open_refuses_an_empty_secret_list_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Arc::new(TestBus::open(&dir.path().join("bus")));
    let mut registry = Registry::default();
    let result = Ingestor::open(
        &dir.path().join("ingest"),
        IngestConfig {
            verify_token: VERIFY_TOKEN.to_owned(),
            ..IngestConfig::default()
        },
        bus,
        &mut registry,
    );
    let error = result.err().expect("refused");
    assert!(error.to_string().contains("app secret"), "{error}");
    assert!(!dir.path().join("ingest").exists());
}

#[tokio::test]
async fn a_bus_failure_stops_reprocessing_and_leaves_the_dead_letter_pending() {
    let root = tempfile::tempdir().expect("tempdir");
    let bus = Arc::new(TestBus::open(&root.path().join("bus")));
    let h = Harness::start_with(root, bus, config(), normalize_without_history).await;
    assert_eq!(
        h.post_signed(&fixture("history_chunk.json")).await.status(),
        200
    );
    let (root, bus) = h.stop().await;
    let mut registry = Registry::default();
    let ingestor = Ingestor::open(
        &root.path().join("ingest"),
        config(),
        bus.clone(),
        &mut registry,
    )
    .expect("reopen");

    bus.overloaded.store(true, Ordering::SeqCst);
    match ingestor.reprocess().await {
        Err(twinlog_ingest::IngestError::ReprocessInterrupted { done, source }) => {
            assert_eq!(done.republished, 0);
            assert!(source.is_overload());
        }
        other => panic!("expected an interrupted reprocessing, got {other:?}"),
    }
    let letters = ingestor.dead_letters(10).expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert!(letters[0].pending);
    assert!(bus.all().await.is_empty());

    bus.overloaded.store(false, Ordering::SeqCst);
    let report = ingestor.reprocess().await.expect("reprocess");
    assert_eq!(report.republished, 1);
    assert!(!ingestor.dead_letters(10).expect("dead letters")[0].pending);
    assert_eq!(
        bus.all().await.len(),
        expected_events(&fixture("history_chunk.json")).len()
    );
}
