//! Events per second through `KafkaBus::publish` against a real broker, and
//! `kcat -P` producing the same bytes (same keys, same payloads, same
//! partition, `acks=all`, idempotent) for the ratio.
//!
//! ```sh
//! out=$(deploy/kafka/kafka.sh start) && eval "$out"
//! KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP cargo bench -p twinlog-ingest --bench kafka_publish
//! deploy/kafka/kafka.sh stop --clean "$KAFKA_DIR"
//! ```
//!
//! Environment (optional): `BENCH_RECORDS` per measurement (default
//! 200000), `BENCH_BATCHES` records per publish (`100,1000`),
//! `BENCH_PUBLISHERS` concurrent publishers (`1,4`), `BENCH_RUNS` (3),
//! `BENCH_PARTITIONS` (1), `KCAT` (the kcat binary, default `kcat`; set it
//! empty to skip kcat).
//!
//! The payloads are real normalised events: inbound texts, unique wamids,
//! normalised by `twinlog_normalize` and encoded by `out_record`, as the
//! ingestor publishes them.

use std::collections::VecDeque;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twinlog_bus::{Bus, KafkaBus, OutRecord, Topic};
use twinlog_normalize::IngestContext;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Text that makes message bodies of different lengths.
const PAD: &str = "Please also send the price list. ";

/// `count` normalised inbound-text events as bus records, from bodies of 20
/// messages over 50 business numbers.
fn records(count: usize) -> Vec<OutRecord> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut out = Vec::with_capacity(count);
    let per_body = 20u64;
    let mut first = 0u64;
    while out.len() < count {
        let number = 106_540_352_240_000 + (first / per_body) % 50;
        let messages: Vec<String> = (first..first + per_body)
            .map(|n| {
                format!(
                    r#"{{"from":"1650555{:04}","id":"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdCRjY{n:012}","timestamp":"{}","type":"text","text":{{"body":"Does it come in another color? I would like the blue one, size M, message {n}. {}"}}}}"#,
                    n % 997,
                    now_ms / 1000,
                    PAD.repeat((n % 6) as usize)
                )
            })
            .collect();
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555{number}","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"16505551234"}}],"messages":[{}]}}}}]}}]}}"#,
            messages.join(",")
        );
        let events = twinlog_normalize::normalize(
            body.as_bytes(),
            &IngestContext {
                ingest_time_ms: now_ms,
            },
        )
        .expect("normalise");
        out.extend(events.iter().map(twinlog_ingest::out_record));
        first += per_body;
    }
    out.truncate(count);
    out
}

/// A 4-byte sequence that occurs in no key and no payload and differs from
/// `except`: kcat's delimiters (the payloads are binary and use every byte).
fn absent_delimiter(records: &[OutRecord], except: Option<[u8; 4]>) -> [u8; 4] {
    let mut seed: u32 = 0x9e37_79b9;
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let d = seed.to_be_bytes();
        if Some(d) == except || d.contains(&0) {
            continue;
        }
        let found = records
            .iter()
            .any(|r| r.key.windows(4).any(|w| w == d) || r.payload.windows(4).any(|w| w == d));
        if !found {
            return d;
        }
    }
    panic!("no 4-byte sequence absent from every record, for kcat's delimiters")
}

fn kcat_delimiter(d: [u8; 4]) -> String {
    d.iter().map(|b| format!("\\x{b:02x}")).collect()
}

async fn publish_all(
    bus: Arc<KafkaBus>,
    batches: Vec<Vec<OutRecord>>,
    publishers: usize,
) -> Duration {
    let queue = Arc::new(Mutex::new(VecDeque::from(batches)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..publishers {
        let (bus, queue) = (bus.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let Some(batch) = queue.lock().expect("queue").pop_front() else {
                    return;
                };
                bus.publish(batch).await.expect("publish");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("publisher");
    }
    started.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kafka_publish bench: skipped (run with cargo bench)");
        return;
    }
    let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP") else {
        println!("kafka_publish bench: skipped, set KAFKA_BOOTSTRAP (deploy/kafka/kafka.sh start)");
        return;
    };
    let count: usize = env_or("BENCH_RECORDS", 200_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let partitions: u32 = env_or("BENCH_PARTITIONS", 1);
    let batch_sizes = env_list("BENCH_BATCHES", "100,1000");
    let publishers = env_list("BENCH_PUBLISHERS", "1,4");
    let kcat = std::env::var("KCAT").unwrap_or_else(|_| "kcat".into());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!(
        "bench{}{}.",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            % 100_000
    );
    rt.block_on(KafkaBus::create_topics(&bootstrap, &prefix, partitions))
        .expect("create topics");
    let bus = Arc::new(
        rt.block_on(KafkaBus::connect(&bootstrap, &prefix))
            .expect("connect"),
    );

    let all = records(count);
    let bytes: usize = all.iter().map(|r| r.payload.len() + r.key.len()).sum();
    let (min, max) = all.iter().fold((usize::MAX, 0), |(lo, hi), r| {
        (lo.min(r.payload.len()), hi.max(r.payload.len()))
    });
    println!(
        "kafka_publish bench: {count} records per measurement, payload {min}–{max} bytes (mean {:.0} with key), {partitions} partition(s), {runs} runs, broker {bootstrap}",
        bytes as f64 / count as f64
    );

    // The same bytes for kcat: KEY <kd> PAYLOAD <md>, per record.
    let md = absent_delimiter(&all, None);
    let kd = absent_delimiter(&all, Some(md));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    {
        let mut w = std::io::BufWriter::new(file.as_file());
        for r in &all {
            w.write_all(&r.key).expect("write");
            w.write_all(&kd).expect("write");
            w.write_all(&r.payload).expect("write");
            w.write_all(&md).expect("write");
        }
        w.flush().expect("flush");
    }
    let topic = bus.topic_name(Topic::Inbound).to_owned();

    let mut kcat_rates = Vec::new();
    for run in 0..runs {
        for &batch in &batch_sizes {
            for &p in &publishers {
                let batches: Vec<Vec<OutRecord>> = all.chunks(batch).map(|c| c.to_vec()).collect();
                let load = loadavg();
                let took = rt.block_on(publish_all(bus.clone(), batches, p));
                println!(
                    "run {run} KafkaBus::publish batch={batch:<5} publishers={p} {:>9.0} events/s ({:.2} s, {:.1} MB/s) load[{load}]",
                    count as f64 / took.as_secs_f64(),
                    took.as_secs_f64(),
                    bytes as f64 / took.as_secs_f64() / 1e6
                );
            }
        }
        if kcat.is_empty() {
            continue;
        }
        let load = loadavg();
        let started = Instant::now();
        let mut cmd = Command::new(&kcat);
        cmd.args(["-P", "-b", &bootstrap, "-t", &topic])
            .args(["-K", &kcat_delimiter(kd), "-D", &kcat_delimiter(md)])
            .args(["-X", "acks=all", "-X", "enable.idempotence=true"]);
        if partitions == 1 {
            cmd.args(["-p", "0"]);
        }
        let status = cmd
            .stdin(Stdio::from(file.reopen().expect("reopen the payload file")))
            .status();
        let took = started.elapsed();
        match status {
            Ok(s) if s.success() => {
                let rate = count as f64 / took.as_secs_f64();
                kcat_rates.push(rate);
                println!(
                    "run {run} kcat -P (acks=all, idempotent, linger default) {rate:>9.0} events/s ({:.2} s wall, process start included) load[{load}]",
                    took.as_secs_f64()
                );
            }
            other => println!("run {run} kcat failed: {other:?}"),
        }
    }
    // Check that kcat wrote what it was given: the topic grew by
    // runs × count × (measurements + 1).
    let end = rt
        .block_on(async {
            let mut total = 0;
            for p in 0..partitions {
                total += bus.end_offset(Topic::Inbound, p).await?;
            }
            Ok::<u64, twinlog_bus::BusError>(total)
        })
        .expect("end offsets");
    let expected =
        (runs * count * (batch_sizes.len() * publishers.len() + usize::from(!kcat.is_empty())))
            as u64;
    println!("records on the topic: {end} (expected {expected})");
    if let Ok(bus) = Arc::try_unwrap(bus) {
        rt.block_on(bus.close(Duration::from_secs(10)));
    }
}
