//! End to end, webhook to audit record, with the release `twinlog` binary as
//! a real process: `twinlog up` on the embedded bus, and `twinlog up --kafka`
//! on a real broker.
//!
//! ```sh
//! cargo bench -p twinlog --bench e2e                      # embedded bus only
//! out=$(deploy/kafka/kafka.sh start) && eval "$out"
//! KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP cargo bench -p twinlog --bench e2e   # both
//! deploy/kafka/kafka.sh stop --clean "$KAFKA_DIR"
//! ```
//!
//! Two phases per run, each on a fresh service (fresh data directory, fresh
//! topics):
//!
//! - **throughput**: `BENCH_BODIES` signed bodies of `BENCH_MSGS` inbound
//!   texts (unique wamids) posted over `BENCH_CONNS` keep-alive connections
//!   as fast as the ingestor takes them; the clock stops when
//!   `twinlog_engine_records_total` (polled every 10 ms) reaches its final
//!   value.
//! - **latency**: an open-loop, paced offered load of `BENCH_RATE` events/s
//!   for `BENCH_LAT_SECS` seconds, bodies of `BENCH_LAT_MSGS` texts. Each
//!   audit record's publish timestamp (the engine stamps it when it
//!   publishes the record to the audit topic, after the durable append) is
//!   matched to the POST that carried its event: per partition, records in
//!   log order against bodies in send order (each text gives one
//!   `MessageRecorded`). Latency = audit timestamp − POST start. As a
//!   cross-check, audit timestamp − the record's `ingest_time_ms` (when the
//!   ingestor had read the body) is also reported.
//!
//! Environment (optional): `BENCH_MODES` (`embedded,kafka`; kafka only with
//! `KAFKA_BOOTSTRAP`), `BENCH_RUNS` (3), `BENCH_BODIES` (5000),
//! `BENCH_MSGS` (20), `BENCH_CONNS` (32), `BENCH_PARTITIONS` (2),
//! `BENCH_RATE` (5000), `BENCH_LAT_SECS` (10), `BENCH_LAT_MSGS` (20),
//! `BENCH_PHASES` (`throughput,latency`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use twinlog_bus::{Bus, BusRecord, EmbeddedBus, EmbeddedConfig, KafkaBus, Topic};
use twinlog_proto::v1::audit_record::Fact;
use twinlog_proto::v1::AuditRecord;

const SECRET: &str = "bench-app-secret";
const VERIFY_TOKEN: &str = "bench-verify";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const NUMBERS: u64 = 50;

fn number_of(body_index: u64) -> u64 {
    106_540_352_240_000 + body_index % NUMBERS
}

/// Body `index`: `per_body` inbound texts with unique wamids (`tag`
/// separates phases), for business number `number_of(index)`.
fn body(tag: &str, index: u64, per_body: u64, now_s: u64) -> Vec<u8> {
    let number = number_of(index);
    let messages: Vec<String> = (0..per_body)
        .map(|i| {
            let n = index * per_body + i;
            format!(
                r#"{{"from":"1650555{:04}","id":"wamid.{tag}{n:012}","timestamp":"{now_s}","type":"text","text":{{"body":"Does it come in another color? message {n}"}}}}"#,
                n % 997,
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555{number}","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"16505551234"}}],"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    )
    .into_bytes()
}

struct Service {
    child: Child,
    addr: String,
}

impl Service {
    fn start(args: &[String]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinlog"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("TWINLOG_DIR")
            .env("TWINLOG_LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn twinlog");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("twinlog printed no listening line");
        let addr = line
            .strip_prefix("twinlog listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Service { child, addr }
    }

    /// SIGTERM and wait.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(http: &reqwest::Client, addr: &str) -> String {
    match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[derive(Clone)]
struct Mode {
    name: &'static str,
    kafka: Option<String>,
}

/// A fresh service of `mode`, with `partitions` partitions.
fn start(mode: &Mode, partitions: u32, data: &Path, run_tag: &str) -> (Service, Option<String>) {
    let mut args: Vec<String> = vec![
        "up".into(),
        "--data".into(),
        data.to_string_lossy().into_owned(),
        "--app-secret".into(),
        SECRET.into(),
        "--verify-token".into(),
        VERIFY_TOKEN.into(),
        "--tick-interval-ms".into(),
        "0".into(),
    ];
    let prefix = match &mode.kafka {
        Some(bootstrap) => {
            let prefix = format!("e2e{}{run_tag}.", std::process::id());
            let out = Command::new(env!("CARGO_BIN_EXE_twinlog"))
                .args(["topics", "create", "--kafka", bootstrap])
                .args(["--partitions", &partitions.to_string()])
                .args(["--topic-prefix", &prefix])
                .stdin(Stdio::null())
                .output()
                .expect("run twinlog topics create");
            assert!(
                out.status.success(),
                "topics create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            args.extend([
                "--kafka".into(),
                bootstrap.clone(),
                "--topic-prefix".into(),
                prefix.clone(),
            ]);
            Some(prefix)
        }
        None => {
            args.extend(["--partitions".into(), partitions.to_string()]);
            None
        }
    };
    (Service::start(&args), prefix)
}

/// Posts until a 200; returns the number of non-200 answers on the way.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> u64 {
    let signature = sign(&body);
    let mut retries = 0;
    loop {
        let r = http
            .post(url)
            .header("X-Hub-Signature-256", &signature)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                let _ = r.bytes().await;
                return retries;
            }
            _ => {
                retries += 1;
                assert!(retries < 10_000, "a body was never acknowledged");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn throughput(mode: &Mode, run: usize, partitions: u32) -> (f64, f64) {
    let bodies: u64 = env_or("BENCH_BODIES", 5000);
    let per_body: u64 = env_or("BENCH_MSGS", 20);
    let conns: u64 = env_or("BENCH_CONNS", 32);
    let dir = tempfile::tempdir().expect("temp dir");
    let (service, _) = start(
        mode,
        partitions,
        &dir.path().join("data"),
        &format!("t{run}"),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conns as usize)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = format!("http://{}/webhook", service.addr);
    let now_s = (unix_us() / 1_000_000) as u64;
    let load = loadavg();
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (http, url, next, retries) = (http.clone(), url.clone(), next.clone(), retries.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies {
                    return;
                }
                let r = post(&http, &url, body("T", i, per_body, now_s)).await;
                retries.fetch_add(r, Ordering::Relaxed);
            }
        });
    }
    // Poll the engine while the load runs and after.
    let events = bodies * per_body;
    let mut last = (0.0, started.elapsed());
    let mut posted_at = None;
    loop {
        if posted_at.is_none() && tasks.is_empty() {
            posted_at = Some(started.elapsed());
        }
        while let Some(r) = tasks.try_join_next() {
            r.expect("poster");
        }
        let text = metrics(&http, &service.addr).await;
        let n = metric(&text, "twinlog_engine_records_total");
        if n > last.0 {
            last = (n, started.elapsed());
        }
        if posted_at.is_some()
            && n >= events as f64
            && started.elapsed() - last.1 > Duration::from_millis(1500)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the engine never reached {events} records (at {n})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics(&http, &service.addr).await;
    let posted = posted_at.expect("posted").as_secs_f64();
    let e2e = last.1.as_secs_f64();
    let batch_n = metric(&text, "twinlog_engine_batch_seconds_count");
    let batch_s = metric(&text, "twinlog_engine_batch_seconds_sum");
    println!(
        "{:<8} run {run} throughput: {events} events ({bodies} bodies × {per_body}, {conns} conns, {partitions} partitions): ingest acked all in {posted:.2} s = {:.0} events/s; records_total {} reached at {e2e:.2} s = {:.0} events/s end to end; engine {} batches, mean {:.1} ms, {:.0} records/batch, busy {:.0} % of the wall time; {} retried POSTs; load[{load}]",
        mode.name,
        events as f64 / posted,
        last.0,
        events as f64 / e2e,
        batch_n,
        1000.0 * batch_s / batch_n.max(1.0),
        last.0 / batch_n.max(1.0),
        100.0 * batch_s / e2e / f64::from(partitions),
        retries.load(Ordering::Relaxed),
    );
    service.stop();
    (events as f64 / posted, events as f64 / e2e)
}

/// Every audit record of every partition, with the bus timestamp.
async fn audit_records<B: Bus>(bus: &B, partitions: u32) -> Vec<Vec<BusRecord>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let end = bus.end_offset(Topic::Audit, p).await.expect("end offset");
        let mut records = Vec::new();
        while (records.len() as u64) < end {
            let got = bus
                .read(
                    Topic::Audit,
                    p,
                    records.len() as u64,
                    1024,
                    Duration::from_secs(2),
                )
                .await
                .expect("read audit");
            records.extend(got);
        }
        out.push(records);
    }
    out
}

struct Latency {
    e2e_ms: Histogram<u64>,
    server_ms: Histogram<u64>,
    post_us: Histogram<u64>,
    unmatched: u64,
    late_bodies: u64,
}

async fn latency(mode: &Mode, run: usize, partitions: u32) -> Latency {
    let rate: f64 = env_or("BENCH_RATE", 5000.0);
    let secs: f64 = env_or("BENCH_LAT_SECS", 10.0);
    let per_body: u64 = env_or("BENCH_LAT_MSGS", 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (service, prefix) = start(mode, partitions, &data, &format!("l{run}"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = format!("http://{}/webhook", service.addr);
    let now_s = (unix_us() / 1_000_000) as u64;
    // Warm up: a few bodies, waited for.
    for i in 0..20 {
        post(&http, &url, body("W", i, 1, now_s)).await;
    }
    loop {
        let n = metric(
            &metrics(&http, &service.addr).await,
            "twinlog_engine_records_total",
        );
        if n >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies = (rate * secs / per_body as f64).round() as u64;
    let interval = Duration::from_secs_f64(per_body as f64 / rate);
    let load = loadavg();
    // Send start (unix µs) and POST duration per body.
    let starts = Arc::new(Mutex::new(vec![(0i64, 0u64); bodies as usize]));
    let late = Arc::new(AtomicU64::new(0));
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..bodies {
        let at = t0 + interval * (i as u32);
        tokio::time::sleep_until(at).await;
        if tokio::time::Instant::now() > at + Duration::from_millis(5) {
            late.fetch_add(1, Ordering::Relaxed);
        }
        let b = body("L", i, per_body, now_s);
        let (http, url, starts) = (http.clone(), url.clone(), starts.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let start_us = unix_us();
            let retries = post(&http, &url, b).await;
            let took = started.elapsed().as_micros() as u64;
            starts.lock().expect("starts")[i as usize] = (start_us, took);
            retries
        });
        while let Some(r) = tasks.try_join_next() {
            r.expect("poster");
        }
    }
    let mut retries = 0;
    while let Some(r) = tasks.join_next().await {
        retries += r.expect("poster");
    }
    // Wait for the engine to fold everything.
    let want = 20 + bodies * per_body;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = metric(
            &metrics(&http, &service.addr).await,
            "twinlog_engine_records_total",
        );
        if n >= want as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never folded {want} records (at {n})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let parts = match (&mode.kafka, prefix) {
        (Some(bootstrap), Some(prefix)) => {
            let bus = KafkaBus::connect(bootstrap, &prefix)
                .await
                .expect("connect");
            let parts = audit_records(&bus, partitions).await;
            bus.close(Duration::from_secs(10)).await;
            service.stop();
            parts
        }
        _ => {
            service.stop();
            let bus = EmbeddedBus::open(
                data.join("bus"),
                EmbeddedConfig {
                    partitions,
                    ..EmbeddedConfig::default()
                },
            )
            .expect("open the embedded bus");
            audit_records(&bus, partitions).await
        }
    };
    // Match: per partition, the MessageRecorded records of phase "L" in log
    // order against that partition's bodies in send order.
    let starts = starts.lock().expect("starts").clone();
    let mut out = Latency {
        e2e_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram"),
        server_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram"),
        post_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram"),
        unmatched: 0,
        late_bodies: late.load(Ordering::Relaxed),
    };
    for &(_, took) in &starts {
        out.post_us.record(took.max(1)).expect("record");
    }
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut order: Vec<u64> = (0..bodies).collect();
    order.sort_by_key(|&i| starts[i as usize].0);
    for i in order {
        let key = number_of(i).to_string();
        let p = twinlog_bus::partition_for(key.as_bytes(), partitions);
        by_partition.entry(p).or_default().push(i);
    }
    for (p, records) in parts.iter().enumerate() {
        let sends = by_partition.remove(&(p as u32)).unwrap_or_default();
        let mut events = sends
            .iter()
            .flat_map(|&i| std::iter::repeat_n(starts[i as usize].0, per_body as usize));
        for r in records {
            let record: AuditRecord = prost::Message::decode(&r.payload[..]).expect("audit record");
            if !matches!(record.fact, Some(Fact::MessageRecorded(_))) {
                continue;
            }
            // Skip the warm-up records (the first 20 across partitions).
            if record.ingest_time_ms * 1000 < starts.iter().map(|s| s.0).min().unwrap_or(0) - 1000 {
                continue;
            }
            let server = (r.timestamp_ms - record.ingest_time_ms).max(0) as u64;
            out.server_ms.record(server.max(1)).expect("record");
            match events.next() {
                Some(start_us) => {
                    let e2e_us = (r.timestamp_ms * 1000 - start_us).max(0) as u64;
                    out.e2e_ms.record((e2e_us / 1000).max(1)).expect("record");
                }
                None => out.unmatched += 1,
            }
        }
        out.unmatched += events.count() as u64;
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    println!(
        "{:<8} run {run} latency: offered {rate:.0} events/s for {secs} s ({bodies} bodies × {per_body}, {partitions} partitions): POST start → audit record: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} events); received → audit record: p50 {} ms, p99 {} ms; POST round trip p50 {:.1} ms, p99 {:.1} ms; {} unmatched, {} bodies sent > 5 ms late, {retries} retried POSTs; load[{load}]",
        mode.name,
        q(&out.e2e_ms, 0.5),
        q(&out.e2e_ms, 0.99),
        q(&out.e2e_ms, 0.999),
        out.e2e_ms.max(),
        out.e2e_ms.len(),
        q(&out.server_ms, 0.5),
        q(&out.server_ms, 0.99),
        q(&out.post_us, 0.5) as f64 / 1000.0,
        q(&out.post_us, 0.99) as f64 / 1000.0,
        out.unmatched,
        out.late_bodies,
    );
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e bench: skipped (run with cargo bench)");
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let partitions: u32 = env_or("BENCH_PARTITIONS", 2);
    let kafka = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|s| !s.is_empty());
    let wanted = std::env::var("BENCH_MODES").unwrap_or_else(|_| "embedded,kafka".into());
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "throughput,latency".into());
    let mut modes = Vec::new();
    if wanted.contains("embedded") {
        modes.push(Mode {
            name: "embedded",
            kafka: None,
        });
    }
    if wanted.contains("kafka") {
        match &kafka {
            Some(b) => modes.push(Mode {
                name: "kafka",
                kafka: Some(b.clone()),
            }),
            None => println!("e2e bench: kafka skipped, set KAFKA_BOOTSTRAP"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "e2e bench: {runs} runs, {partitions} partitions, {} cores, release twinlog {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        env!("CARGO_BIN_EXE_twinlog")
    );
    for mode in &modes {
        let (mut ing, mut e2e, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            if phases.contains("throughput") {
                let (a, b) = rt.block_on(throughput(mode, run, partitions));
                ing.push(a);
                e2e.push(b);
            }
            if phases.contains("latency") {
                let l = rt.block_on(latency(mode, run, partitions));
                p99.push(l.e2e_ms.value_at_quantile(0.99) as f64);
            }
        }
        let range = |v: &[f64]| {
            if v.is_empty() {
                return "-".to_owned();
            }
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.0}–{hi:.0}")
        };
        println!(
            "summary {}: ingest {} events/s, end to end {} events/s, p99 {} ms",
            mode.name,
            range(&ing),
            range(&e2e),
            range(&p99)
        );
    }
}
