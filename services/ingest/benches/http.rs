//! Signed webhook POSTs per second and latency over loopback HTTP: the real
//! ingestor (raw-body store + embedded bus, both fsynced before the 200)
//! against a bare axum handler that only checks the HMAC and parses the JSON,
//! in the same process and the same run, alternating.
//!
//! `cargo bench -p twinlog-ingest --bench http`
//!
//! Environment (all optional):
//! - `BENCH_SECS` seconds per measurement (default 5), `BENCH_RUNS` (3)
//! - `BENCH_CONNS` concurrent keep-alive connections, comma-separated
//!   (default `16,64`)
//! - `BENCH_MSGS` inbound texts per body (default 1)
//! - `BENCH_ONLY` `ingestor` or `bare` (for profiling one side)
//! - `BENCH_PARTITIONS` partitions of the embedded bus (default 1, as `up`)
//!
//! Every request carries a unique body (unique wamid), signed with
//! HMAC-SHA256 by the client as it sends it. Latency is measured by the
//! client from the start of the request to the end of the response.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use twinlog_bus::{EmbeddedBus, EmbeddedConfig};
use twinlog_ingest::{IngestConfig, Ingestor};

const SECRET: &str = "bench-app-secret";

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

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook body of `per_body` inbound texts with unique wamids from
/// `first`, for one of 50 business numbers. About 430 bytes for one text.
fn body(first: u64, per_body: u64, now_s: u64) -> Vec<u8> {
    let number = 106_540_352_240_000 + (first / per_body) % 50;
    let messages: Vec<String> = (first..first + per_body)
        .map(|n| {
            format!(
                r#"{{"from":"1650555{:04}","id":"wamid.BENCH{n:012}","timestamp":"{now_s}","type":"text","text":{{"body":"Does it come in another color? message {n}"}}}}"#,
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

/// The baseline: check the signature, parse the JSON, answer 200.
async fn bare(headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(sig) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut expected = [0u8; 32];
    if hex::decode_to_slice(sig, &mut expected).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&body);
    if mac.verify_slice(&expected).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

struct Outcome {
    requests: u64,
    errors: u64,
    secs: f64,
    latency: Histogram<u64>,
}

/// Drives `conns` keep-alive connections at `addr` for `secs` seconds.
async fn load(
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    per_body: u64,
    next: Arc<AtomicU64>,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("http://{addr}/webhook");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Warm the connections up.
    let warm = std::time::Duration::from_millis(500);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url, next, stop, measuring) = (
            client.clone(),
            url.clone(),
            next.clone(),
            stop.clone(),
            measuring.clone(),
        );
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(per_body, Ordering::Relaxed);
                let b = body(n, per_body, now_s);
                let signature = sign(&b);
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .header("X-Hub-Signature-256", signature)
                    .header("Content-Type", "application/json")
                    .body(b)
                    .send()
                    .await;
                let good = match r {
                    Ok(r) => {
                        let s = r.status();
                        let _ = r.bytes().await;
                        s == StatusCode::OK
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if good {
                        ok += 1;
                        let us = started.elapsed().as_micros() as u64;
                        hist.record(us.max(1)).expect("record");
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, hist)
        });
    }
    tokio::time::sleep(warm).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        secs: elapsed,
        latency: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, errors, hist) = r.expect("load task");
        out.requests += ok;
        out.errors += errors;
        out.latency.add(hist).expect("merge");
    }
    out
}

fn report(label: &str, conns: usize, per_body: u64, load: &str, o: &Outcome) -> f64 {
    let rps = o.requests as f64 / o.secs;
    let q = |p: f64| o.latency.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{label:<9} conns={conns:<3} msgs/body={per_body} {rps:>9.0} req/s {:>9.0} events/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  errors {}  load[{load}]",
        rps * per_body as f64,
        q(0.5),
        q(0.99),
        q(0.999),
        o.latency.max() as f64 / 1000.0,
        o.errors,
    );
    rps
}

async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    (addr, task)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // that matters here. Only run the load when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("http bench: skipped (run with cargo bench)");
        return;
    }
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let per_body: u64 = env_or("BENCH_MSGS", 1);
    let partitions: u32 = env_or("BENCH_PARTITIONS", 1);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let conns: Vec<usize> = std::env::var("BENCH_CONNS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    // The server as in production: a two-worker runtime (the machine's
    // cores). The load client runs on its own runtime in the same process.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    let dir = tempfile::tempdir().expect("temp dir");
    let bus = Arc::new(
        EmbeddedBus::open(
            dir.path().join("bus"),
            EmbeddedConfig {
                partitions,
                ..EmbeddedConfig::default()
            },
        )
        .expect("open the embedded bus"),
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let config = IngestConfig {
        app_secrets: vec![SECRET.into()],
        verify_token: "bench-verify".into(),
        requests_in_flight_max: 4096,
        ..IngestConfig::default()
    };
    let ingestor = Arc::new(
        Ingestor::open(&dir.path().join("ingest"), config, bus, &mut registry)
            .expect("open the ingestor"),
    );
    let (ingest_addr, ingest_task) = server_rt.block_on(serve(ingestor.clone().router()));
    let (bare_addr, bare_task) =
        server_rt.block_on(serve(Router::new().route("/webhook", post(bare))));

    println!(
        "http bench: {secs} s per measurement, {runs} runs, conns {conns:?}, {per_body} message(s) per body, {partitions} bus partition(s), {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let next = Arc::new(AtomicU64::new(0));
    for &c in &conns {
        let mut ratios = Vec::new();
        let (mut ing, mut bar) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let mut pair = (None, None);
            if only.is_empty() || only == "ingestor" {
                let l = loadavg();
                let o = client_rt.block_on(load(ingest_addr, c, secs, per_body, next.clone()));
                pair.0 = Some(report("ingestor", c, per_body, &l, &o));
                ing.push(pair.0.unwrap_or(0.0));
            }
            if only.is_empty() || only == "bare" {
                let l = loadavg();
                let o = client_rt.block_on(load(bare_addr, c, secs, per_body, next.clone()));
                pair.1 = Some(report("bare", c, per_body, &l, &o));
                bar.push(pair.1.unwrap_or(0.0));
            }
            if let (Some(a), Some(b)) = pair {
                ratios.push(a / b);
            }
        }
        let range = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.0}–{hi:.0}")
        };
        let ratio_s: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "summary conns={c}: ingestor {} req/s, bare {} req/s, ratio per run [{}]",
            if ing.is_empty() {
                "-".into()
            } else {
                range(&ing)
            },
            if bar.is_empty() {
                "-".into()
            } else {
                range(&bar)
            },
            ratio_s.join(", ")
        );
    }
    let stats = ingestor.stats();
    println!(
        "ingestor stats: published {} bodies, {} events, {} store flushes, rejected {}, busy {}",
        stats.published, stats.events_published, stats.store_flushes, stats.rejected, stats.busy
    );
    ingest_task.abort();
    bare_task.abort();
}
