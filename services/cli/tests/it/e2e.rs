//! End to end: `twinlog up`, `ingest` and `engine` as real processes, signed
//! webhooks over loopback HTTP, the embedded bus or a real Kafka broker, and
//! kill -9 at random moments. Every body that got a 200 must be in the audit
//! log exactly once, and the log must verify.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use twinlog_bus::conformance::broker;

const SECRET: &str = "e2e-app-secret";
const SECRET_2: &str = "e2e-second-app";
const VERIFY_TOKEN: &str = "e2e-verify";
/// The tests of this file start processes, brokers and 100k-event loads:
/// on a 2-core machine they run one at a time, so none starves another.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a service may take to print its listening line.
const START_WAIT: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_twinlog")
}

/// A running `twinlog` service process.
struct Service {
    child: Child,
    addr: String,
    args: Vec<String>,
}

impl Service {
    /// Starts `twinlog ARGS --listen 127.0.0.1:0` and waits for its
    /// listening line.
    fn start(args: &[&str]) -> Service {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(bin())
            .args(&args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("TWINLOG_DIR")
            .env("TWINLOG_LOG_LEVEL", "warn")
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
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(START_WAIT)
            .unwrap_or_else(|_| panic!("twinlog {args:?} printed no listening line"));
        let addr = line
            .strip_prefix("twinlog listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Service { child, addr, args }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status must be success.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "twinlog {:?} exited {status}", self.args);
                return;
            }
            assert!(Instant::now() < deadline, "twinlog did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self = Service::start(&args);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn run(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env_remove("TWINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run twinlog");
    assert!(
        out.status.success(),
        "twinlog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `role --data DATA` with our app secret and verify token, no clock
/// ticks, then `extra`.
fn service_args(role: &str, data: &Path, extra: &[&str]) -> Vec<String> {
    let data = data.to_string_lossy();
    let mut args: Vec<String> = [
        role,
        "--data",
        &data,
        "--app-secret",
        SECRET,
        "--verify-token",
        VERIFY_TOKEN,
        "--tick-interval-ms",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// [`service_args`] on Kafka topics under `prefix`.
fn kafka_args(role: &str, data: &Path, bootstrap: &str, prefix: &str) -> Vec<String> {
    service_args(
        role,
        data,
        &["--kafka", bootstrap, "--topic-prefix", prefix],
    )
}

fn create_topics(bootstrap: &str, prefix: &str, partitions: u32) {
    run(&[
        "topics",
        "create",
        "--kafka",
        bootstrap,
        "--partitions",
        &partitions.to_string(),
        "--topic-prefix",
        prefix,
    ]);
}

/// Folds what the bus holds: `engine --drain` with the data directory and
/// bus of `args` (a service's arguments).
fn drain(args: &[String]) {
    let mut drain = args.to_vec();
    drain[0] = "engine".into();
    drain.extend(["--drain".into(), "--listen".into(), "127.0.0.1:0".into()]);
    run(&as_strs(&drain));
}

/// [`drain`], then verifies every shard under `data`: the records of all
/// of them.
fn drain_and_count(engine_args: &[String], data: &Path, partitions: u32) -> u64 {
    drain(engine_args);
    (0..partitions)
        .map(|p| verified_size(&data.join(format!("shards/{p}"))))
        .sum()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/webhooks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The records of a log by fact kind (and rejection reason), to explain a
/// count that differs.
fn census(log: &Path) -> std::collections::BTreeMap<String, u64> {
    use twinlog_proto::v1::audit_record::Fact;
    let t = twinlog::Twinlog::open(log, &mut |_, _| {}).expect("open the log");
    let mut out = std::collections::BTreeMap::new();
    let size = t.log().size();
    for item in t.log().records(0, size) {
        let (seq, bytes) = item.expect("record");
        let record = twinlog::pipeline::decode(seq, &bytes).expect("decode");
        let kind = match &record.fact {
            Some(Fact::Rejected(r)) => format!("rejected: {}", r.reason),
            Some(f) => format!("{f:?}").split('(').next().unwrap_or("?").to_owned(),
            None => "none".to_owned(),
        };
        *out.entry(kind).or_default() += 1;
    }
    out
}

/// Asserts a log holds exactly `expected` records and verifies.
fn assert_exactly(log: &Path, expected: u64) {
    let size = verified_size(log);
    assert_eq!(size, expected, "records by kind: {:?}", census(log));
}

/// `ok: N records, ...` from `twinlog verify`: N.
fn verified_size(log: &Path) -> u64 {
    let out = run(&["verify", "--log", &log.to_string_lossy()]);
    out.strip_prefix("ok: ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("verify printed {out}"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A webhook body of `per_body` inbound texts, numbered from `first`, for
/// business number `first / per_body % numbers`.
fn load_body(first: u64, per_body: u64, numbers: u64, now_s: i64) -> Vec<u8> {
    let number = 106_540_352_240_000 + (first / per_body) % numbers;
    let messages: Vec<String> = (first..first + per_body)
        .map(|n| {
            format!(
                r#"{{"from":"1650555{:04}","id":"wamid.E2E{n:010}","timestamp":"{}","type":"text","text":{{"body":"load message {n}"}}}}"#,
                n % 997,
                now_s
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555{number}","phone_number_id":"{number}"}},"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_folds_signed_fixtures_posted_over_http_and_refuses_bad_input() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args = service_args("up", &data, &["--app-secret", SECRET_2]);
    let service = Service::start(&as_strs(&args));
    let http = reqwest::Client::new();

    // Meta's handshake.
    let r = http
        .get(service.url(&format!(
            "/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .send()
        .await
        .expect("handshake");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "1158201444");
    let r = http
        .get(service.url("/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"))
        .send()
        .await
        .expect("handshake");
    assert_eq!(r.status(), 403);

    // Every fixture, signed by one app secret or the other.
    let files = fixtures();
    for (i, path) in files.iter().enumerate() {
        let body = std::fs::read(path).expect("read fixture");
        let secret = if i % 2 == 0 { SECRET } else { SECRET_2 };
        let r = http
            .post(service.url("/webhook"))
            .header("X-Hub-Signature-256", sign(secret, &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200, "{}", path.display());
    }

    // Bad input: each gets its status code, is counted, and breaks nothing.
    let body = std::fs::read(&files[0]).expect("read");
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut req = http.post(service.url("/webhook")).body(body);
        if let Some(s) = signature {
            req = req.header("X-Hub-Signature-256", s);
        }
        req.send()
    };
    assert_eq!(post(body.clone(), None).await.expect("post").status(), 401);
    assert_eq!(
        post(body.clone(), Some(sign("not-our-secret", &body)))
            .await
            .expect("post")
            .status(),
        401
    );
    let oversize = vec![b' '; 3 * 1024 * 1024 + 1];
    let status = post(oversize.clone(), Some(sign(SECRET, &oversize)))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(413); // the server may close the connection mid-upload
    assert_eq!(status, 413);
    let malformed = b"{\"object\":\"whatsapp_business_account\",\"entry\":[".to_vec();
    let r = post(malformed.clone(), Some(sign(SECRET, &malformed)))
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        200,
        "an authentic body is kept as a dead letter"
    );
    let hostile = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let r = post(hostile.clone(), Some(sign(SECRET, &hostile)))
        .await
        .expect("post");
    assert_eq!(r.status(), 200);

    let metrics = http
        .get(service.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metric(&metrics, "twinlog_ingest_rejected_total") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "twinlog_ingest_dead_letters_total"),
        2.0,
        "{metrics}"
    );
    for path in ["/healthz", "/readyz"] {
        let r = http.get(service.url(path)).send().await.expect("health");
        assert_eq!(r.status(), 200, "{path}");
    }
    service.stop();

    // Fold what is left, then the log verifies and holds what a direct fold
    // of the same fixtures holds.
    let size = drain_and_count(&args, &data, 1);
    let direct = dir.path().join("direct");
    let mut args = vec![
        "append".to_owned(),
        "--log".to_owned(),
        direct.to_string_lossy().into_owned(),
    ];
    args.extend(files.iter().map(|p| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report: serde_json::Value = serde_json::from_str(run(&args).trim()).expect("append report");
    // The two dead letters are not in the log: they wait for `reprocess`.
    assert_eq!(Some(size), report["records"].as_u64(), "{report}");
    assert!(size > 50);
}

/// Posts bodies `0..bodies` to whichever address `addr` holds, `concurrency`
/// at a time, retrying each until it gets a 200 (as Meta does). Returns
/// when every body has been acknowledged.
async fn deliver_all(
    addr: Arc<Mutex<String>>,
    bodies: u64,
    per_body: u64,
    numbers: u64,
    concurrency: u64,
    acked: Arc<AtomicU64>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let now_s = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("seconds");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, next, addr, acked) = (http.clone(), next.clone(), addr.clone(), acked.clone());
        tasks.spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= bodies {
                    return;
                }
                let body = load_body(b * per_body, per_body, numbers, now_s);
                let signature = sign(SECRET, &body);
                let deadline = Instant::now() + Duration::from_secs(300);
                loop {
                    let url = format!("http://{}/webhook", addr.lock().expect("addr"));
                    let r = http
                        .post(url)
                        .header("X-Hub-Signature-256", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    if matches!(&r, Ok(r) if r.status() == 200) {
                        acked.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    assert!(Instant::now() < deadline, "body {b} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("delivery task");
    }
}

/// A small seeded PRNG for kill moments; the seed is printed.
fn kill_delays(count: usize) -> Vec<Duration> {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("kill moments from SIM_SEED={seed}");
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(1_500 + x % 3_000)
        })
        .collect()
}

const LOAD_BODIES: u64 = 5_000;
const LOAD_PER_BODY: u64 = 20;
const LOAD_EVENTS: u64 = LOAD_BODIES * LOAD_PER_BODY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_up_during_100k_events_loses_nothing_and_duplicates_nothing() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args = service_args("up", &data, &[]);
    let mut service = Service::start(&as_strs(&args));
    let addr = Arc::new(Mutex::new(service.addr.clone()));
    let acked = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(deliver_all(
        addr.clone(),
        LOAD_BODIES,
        LOAD_PER_BODY,
        8,
        16,
        acked.clone(),
    ));
    let mut kills = 0;
    for delay in kill_delays(4) {
        tokio::time::sleep(delay).await;
        if load.is_finished() {
            break;
        }
        service.kill9();
        kills += 1;
        service.restart();
        *addr.lock().expect("addr") = service.addr.clone();
    }
    load.await.expect("load");
    assert!(kills >= 2, "the load ended before the second kill");
    assert_eq!(acked.load(Ordering::Relaxed), LOAD_BODIES);
    service.stop();
    drain(&args);
    // Every message exactly once: the bodies hold distinct wamids, so the
    // log has one record per message, no more (duplicates) and no fewer
    // (losses).
    assert_exactly(&data.join("shards/0"), LOAD_EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_kill_9_of_engine_and_ingestor_during_100k_events_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let bootstrap = broker::bootstrap().to_owned();
    let prefix = broker::prefix();
    create_topics(&bootstrap, &prefix, 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let ingest_args = kafka_args("ingest", &dir.path().join("ingest"), &bootstrap, &prefix);
    let engine_args = kafka_args("engine", &data, &bootstrap, &prefix);
    let mut ingest = Service::start(&as_strs(&ingest_args));
    let mut engine = Service::start(&as_strs(&engine_args));
    let addr = Arc::new(Mutex::new(ingest.addr.clone()));
    let acked = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(deliver_all(
        addr.clone(),
        LOAD_BODIES,
        LOAD_PER_BODY,
        8,
        16,
        acked.clone(),
    ));
    let mut kills = 0;
    for (i, delay) in kill_delays(5).into_iter().enumerate() {
        tokio::time::sleep(delay).await;
        if load.is_finished() {
            break;
        }
        if i == 2 {
            ingest.kill9();
            ingest.restart();
            *addr.lock().expect("addr") = ingest.addr.clone();
        } else {
            engine.kill9();
            engine.restart();
        }
        kills += 1;
    }
    load.await.expect("load");
    assert!(kills >= 2, "the load ended before the second kill");
    assert_eq!(acked.load(Ordering::Relaxed), LOAD_BODIES);
    ingest.stop();
    engine.stop();
    assert_eq!(drain_and_count(&engine_args, &data, 2), LOAD_EVENTS);
}

/// A broker of this test's own, so that restarting it disturbs no other
/// test. Stopped (and its directory removed) on drop.
struct OwnBroker {
    script: PathBuf,
    dir: String,
    bootstrap: String,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        if std::env::var_os("CI").is_some() && std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
            panic!("KAFKA_BOOTSTRAP is not set under CI: the test command must start Kafka");
        }
        let script = broker::repo_root().join("deploy/kafka/kafka.sh");
        let out = Command::new(&script)
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("run kafka.sh start");
        assert!(out.status.success(), "kafka.sh start failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("kafka.sh printed no {name}: {text}"))
                .to_owned()
        };
        OwnBroker {
            bootstrap: var("KAFKA_BOOTSTRAP"),
            dir: var("KAFKA_DIR"),
            script,
        }
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new(&self.script)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run kafka.sh");
        assert!(status.success(), "kafka.sh {args:?} failed");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["stop", "--clean", &self.dir])
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_restart_during_load_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let kafka = OwnBroker::start();
    let prefix = broker::prefix();
    create_topics(&kafka.bootstrap, &prefix, 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args = kafka_args("up", &data, &kafka.bootstrap, &prefix);
    let service = Service::start(&as_strs(&args));
    let addr = Arc::new(Mutex::new(service.addr.clone()));
    let acked = Arc::new(AtomicU64::new(0));
    const BODIES: u64 = 1_500;
    let load = tokio::spawn(deliver_all(
        addr.clone(),
        BODIES,
        LOAD_PER_BODY,
        8,
        16,
        acked.clone(),
    ));
    // Let the load get going, then restart the broker under it.
    let started = Instant::now();
    while acked.load(Ordering::Relaxed) < BODIES / 5 && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = acked.load(Ordering::Relaxed);
    assert!(before < BODIES, "the load ended before the restart");
    tokio::task::block_in_place(|| {
        kafka.run(&["stop", &kafka.dir]);
        std::thread::sleep(Duration::from_secs(2));
        kafka.run(&["start", &kafka.dir]);
    });
    load.await.expect("load");
    assert_eq!(acked.load(Ordering::Relaxed), BODIES);
    service.stop();
    assert_eq!(drain_and_count(&args, &data, 2), BODIES * LOAD_PER_BODY);
}

/// The records of a log, decoded.
fn records(log: &Path) -> Vec<twinlog_proto::v1::AuditRecord> {
    let t = twinlog::Twinlog::open(log, &mut |_, _| {}).expect("open the log");
    let size = t.log().size();
    t.log()
        .records(0, size)
        .map(|item| {
            let (seq, bytes) = item.expect("record");
            twinlog::pipeline::decode(seq, &bytes).expect("decode")
        })
        .collect()
}

#[test]
fn simulate_through_up_gives_the_audit_log_it_predicts() {
    let _heavy = HEAVY.blocking_lock();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args = service_args("up", &data, &[]);
    let service = Service::start(&as_strs(&args));
    let out = run(&[
        "simulate",
        "--url",
        &service.url("/webhook"),
        "--app-secret",
        SECRET,
        "--seed",
        "7",
        "--numbers",
        "3",
        "--events",
        "3000",
        "--rate",
        "1000",
    ]);
    service.stop();
    drain(&args);
    let report: serde_json::Value = serde_json::from_str(&out).expect("simulate prints JSON");
    let expected = &report["expected"];
    assert_eq!(report["run"]["failed"], 0, "{report}");
    assert_eq!(
        report["run"]["acknowledged"], expected["webhook_deliveries"],
        "{report}"
    );
    assert!(expected["duplicate_deliveries"].as_u64() > Some(0));
    let log = data.join("shards/0");
    verified_size(&log);
    let tally = twinlog_simulate::tally(records(&log).iter());
    let tally = serde_json::to_value(&tally).expect("tally as JSON");
    assert_eq!(
        &tally, &expected["records"],
        "the audit log differs from what simulate predicts"
    );
}

/// `twinlog up` with its send gateway pointed at a Graph API simulator, which
/// sends its status webhooks back to `up`. The simulator listens first, so
/// `up` can be pointed at it; it learns `up`'s webhook URL once `up` listens.
struct UpWithGraph {
    dir: tempfile::TempDir,
    args: Vec<String>,
    service: Service,
    simulator: twinlog_gateway::simulator::Simulator,
    graph_addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl UpWithGraph {
    async fn start(number_rate_per_s: u32) -> UpWithGraph {
        use twinlog_gateway::simulator::{SimConfig, SimWebhook, Simulator};
        let graph = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the simulator");
        let graph_addr = graph.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let graph_url = format!("http://{graph_addr}/v24.0");
        let rate = number_rate_per_s.to_string();
        let args = service_args(
            "up",
            &dir.path().join("data"),
            &[
                "--graph-url",
                &graph_url,
                "--access-token",
                "sim-token",
                "--number-rate-per-s",
                &rate,
            ],
        );
        let service = Service::start(&as_strs(&args));
        let simulator = Simulator::start(SimConfig {
            number_rate_per_s,
            webhook: Some(SimWebhook {
                url: service.url("/webhook"),
                app_secret: SECRET.into(),
            }),
            ..SimConfig::default()
        })
        .expect("simulator");
        let app = simulator.router();
        let server = tokio::spawn(async move { axum::serve(graph, app).await });
        UpWithGraph {
            dir,
            args,
            service,
            simulator,
            graph_addr,
            server,
        }
    }

    /// Stops everything, folds what is left, and returns the records of the
    /// log, which must verify.
    async fn finish(self) -> Vec<twinlog_proto::v1::AuditRecord> {
        self.simulator.shutdown().await;
        self.server.abort();
        self.service.stop();
        drain(&self.args);
        let log = self.dir.path().join("data/shards/0");
        verified_size(&log);
        records(&log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_through_the_gateway_of_up_are_recorded_with_their_statuses() {
    let _heavy = HEAVY.lock().await;
    let up = UpWithGraph::start(5).await;
    let (service, simulator) = (&up.service, &up.simulator);

    let http = reqwest::Client::new();
    const SENDS: u64 = 24;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let (http, url) = (http.clone(), service.url("/v1/messages/106540352242922"));
        tasks.spawn(async move {
            let body = serde_json::json!({
                "messaging_product": "whatsapp",
                "to": format!("1650555{:04}", i % 4),
                "type": "template",
                "template": {"name": "order_update", "language": {"code": "en_US"}}
            });
            let r = http.post(url).json(&body).send().await.expect("send");
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("send task");
    }
    let stats = simulator.stats();
    assert_eq!(stats.accepted, SENDS);
    assert_eq!(
        stats.errors_with(130429),
        0,
        "the gateway paced the number at 5/s"
    );
    // Wait for the status webhooks (sent, delivered, read per send).
    let deadline = Instant::now() + Duration::from_secs(60);
    while simulator.stats().webhooks_delivered < 3 * SENDS {
        assert!(Instant::now() < deadline, "{:?}", simulator.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = twinlog_simulate::tally(up.finish().await.iter());
    assert_eq!(tally.api_sends, SENDS, "{tally:?}");
    assert_eq!(tally.statuses, 3 * SENDS, "{tally:?}");
}

/// A gauge or counter read from a service's `/metrics`.
async fn read_metric(http: &reqwest::Client, service: &Service, name: &str) -> f64 {
    match http.get(service.url("/metrics")).send().await {
        Ok(r) => metric(&r.text().await.unwrap_or_default(), name),
        Err(_) => -1.0,
    }
}

async fn wait_for_metric(
    http: &reqwest::Client,
    service: &Service,
    name: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = read_metric(http, service, name).await;
        if ok(v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {name} is {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new master key file in `dir`, by `twinlog master-key new`.
fn master_key(dir: &Path) -> PathBuf {
    let file = dir.join("master.key");
    let out = run(&["master-key", "new", &file.to_string_lossy()]);
    assert!(out.starts_with("master key "), "{out}");
    file
}

/// [`kafka_args`] with a master key: shards are restored from the topics.
fn escrow_args(role: &str, data: &Path, bootstrap: &str, prefix: &str, key: &Path) -> Vec<String> {
    let mut args = kafka_args(role, data, bootstrap, prefix);
    args.extend([
        "--master-key-file".into(),
        key.to_string_lossy().into_owned(),
    ]);
    args
}

/// Kafka topics of their own (prefix and bootstrap), a master key, and two
/// engines' data directories, in a temporary directory.
fn two_disks(partitions: u32) -> (tempfile::TempDir, String, String, PathBuf, [PathBuf; 2]) {
    let bootstrap = broker::bootstrap().to_owned();
    let prefix = broker::prefix();
    create_topics(&bootstrap, &prefix, partitions);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = master_key(dir.path());
    let data = [dir.path().join("a"), dir.path().join("b")];
    (dir, bootstrap, prefix, key, data)
}

/// Size, root and verifier key of the log in `dir`, if there is one.
fn log_facts(dir: &Path) -> Option<(u64, [u8; 32], String)> {
    let log = twinlog_auditlog::AuditLog::open(dir).ok()?;
    Some((
        log.size(),
        log.root(log.size()).expect("root"),
        log.verifier_key().to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_with_their_own_disks_restore_each_others_shards_from_the_topics() {
    let _heavy = HEAVY.lock().await;
    const PARTITIONS: u32 = 4;
    let (dir, bootstrap, prefix, key, [data_a, data_b]) = two_disks(PARTITIONS);
    let args_a = escrow_args("engine", &data_a, &bootstrap, &prefix, &key);
    let args_b = escrow_args("engine", &data_b, &bootstrap, &prefix, &key);
    let ingest_args = kafka_args("ingest", &dir.path().join("ingest"), &bootstrap, &prefix);
    let ingest = Service::start(&as_strs(&ingest_args));
    let mut a = Service::start(&as_strs(&args_a));
    let b = Service::start(&as_strs(&args_b));
    let http = reqwest::Client::new();
    let owned = "twinlog_engine_shards_owned";
    // The group splits the shards between the two engines.
    wait_for_metric(&http, &a, owned, "engine A owns shards", |v| v >= 1.0).await;
    wait_for_metric(&http, &b, owned, "engine B owns shards", |v| v >= 1.0).await;

    let addr = Arc::new(Mutex::new(ingest.addr.clone()));
    let acked = Arc::new(AtomicU64::new(0));
    const BODIES: u64 = 1_000;
    let load = tokio::spawn(deliver_all(
        addr,
        BODIES,
        LOAD_PER_BODY,
        8,
        16,
        acked.clone(),
    ));
    // Let A fold part of the load into its shards.
    wait_for_metric(&http, &a, "twinlog_engine_records_total", "A folds", |v| {
        v >= 2_000.0
    })
    .await;
    let a_shards: Vec<u32> = (0..PARTITIONS)
        .filter(|p| data_a.join(format!("shards/{p}/log.json")).exists())
        .collect();
    assert!(!a_shards.is_empty());
    // A dies: B restores A's shards from the topics into its own disk.
    a.kill9();
    wait_for_metric(&http, &b, owned, "B takes over A's shards", |v| {
        v == PARTITIONS as f64
    })
    .await;
    let restored = read_metric(&http, &b, "twinlog_engine_restores_total").await;
    assert!(restored >= 1.0, "B restored A's shards: {restored}");
    assert!(read_metric(&http, &b, "twinlog_engine_restored_records_total").await > 0.0);
    // A comes back: B hands shards back, and A brings its stale copies up
    // to date from the topics.
    a.restart();
    wait_for_metric(&http, &a, owned, "A rejoins", |v| v >= 1.0).await;
    wait_for_metric(&http, &b, owned, "B lets go", |v| {
        v >= 1.0 && v < PARTITIONS as f64
    })
    .await;
    load.await.expect("load");
    assert_eq!(acked.load(Ordering::Relaxed), BODIES);
    ingest.stop();
    a.stop();
    b.stop();

    // B's copies of the shards A owned first were restored: same origin and
    // verifier key, and A's copies (as A left them when it died, or later)
    // are prefixes of the same trees.
    let verifier_keys: Vec<Option<String>> = (0..PARTITIONS)
        .map(|p| log_facts(&data_a.join(format!("shards/{p}"))).map(|f| f.2))
        .collect();
    for p in &a_shards {
        let b_copy = data_b.join(format!("shards/{p}"));
        let facts = log_facts(&b_copy).expect("B holds a restored copy of A's shard");
        assert_eq!(Some(facts.2), verifier_keys[*p as usize], "shard {p}");
        verified_size(&b_copy);
    }
    // Fold what is left into A's disk (restoring any shard A lacks or has
    // stale), then every event is there exactly once.
    assert_eq!(
        drain_and_count(&args_a, &data_a, PARTITIONS),
        BODIES * LOAD_PER_BODY
    );
    for p in 0..PARTITIONS {
        let (size, _, vkey) = log_facts(&data_a.join(format!("shards/{p}"))).expect("A's copy");
        if let Some((b_size, b_root, b_vkey)) = log_facts(&data_b.join(format!("shards/{p}"))) {
            assert_eq!(b_vkey, vkey, "one signing key per shard, wherever it runs");
            assert!(b_size <= size);
            let a_log = twinlog_auditlog::AuditLog::open(&data_a.join(format!("shards/{p}")))
                .expect("open");
            assert_eq!(
                a_log.root(b_size).expect("root"),
                b_root,
                "shard {p}: no fork"
            );
        }
    }
}

/// A customer forgotten on one engine's disk cannot be read on a shard
/// restored from the topics elsewhere: the key's tombstone is on the keys
/// topic, and the erasure record on the audit topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_forgotten_before_a_restore_stays_erased_on_the_restored_shard() {
    let _heavy = HEAVY.lock().await;
    const PARTITIONS: u32 = 2;
    let (dir, bootstrap, prefix, key, [data_a, data_b]) = two_disks(PARTITIONS);
    let ingest_args = kafka_args("ingest", &dir.path().join("ingest"), &bootstrap, &prefix);
    let ingest = Service::start(&as_strs(&ingest_args));
    let addr = Arc::new(Mutex::new(ingest.addr.clone()));
    const BODIES: u64 = 40;
    deliver_all(
        addr,
        BODIES,
        LOAD_PER_BODY,
        2,
        8,
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    ingest.stop();
    let args_a = escrow_args("engine", &data_a, &bootstrap, &prefix, &key);
    drain(&args_a);

    // Message 0 is from 16505550000, on the shard of body 0's number.
    let shard = twinlog_bus::partition_for(b"106540352240000", PARTITIONS);
    let a_shard = data_a.join(format!("shards/{shard}"));
    let out = run(&[
        "forget",
        "--log",
        &a_shard.to_string_lossy(),
        "16505550000",
        "--kafka",
        &bootstrap,
        "--topic-prefix",
        &prefix,
        "--master-key-file",
        &key.to_string_lossy(),
    ]);
    assert!(
        out.starts_with("forgotten; erasure recorded at seq"),
        "{out}"
    );

    // Another engine, with an empty disk, restores every shard.
    let args_b = escrow_args("engine", &data_b, &bootstrap, &prefix, &key);
    assert_eq!(
        drain_and_count(&args_b, &data_b, PARTITIONS),
        BODIES * LOAD_PER_BODY + 1,
        "every message and the erasure record"
    );
    let b_shard = data_b.join(format!("shards/{shard}"));
    assert_eq!(log_facts(&b_shard), log_facts(&a_shard), "the same tree");
    let (restored, original) = (
        twinlog::Twinlog::open(&b_shard, &mut |_, _| {}).expect("open B's copy"),
        twinlog::Twinlog::open(&a_shard, &mut |_, _| {}).expect("open A's copy"),
    );
    let (mut erased, mut readable) = (0, 0);
    for seq in 0..restored.log().size() {
        let view = restored.show(seq).expect("show");
        assert_eq!(
            view.personal,
            original.show(seq).expect("show").personal,
            "record {seq} reads the same on both copies"
        );
        if view.personal == serde_json::json!({ "erased": true }) {
            erased += 1;
            assert!(
                !view.personal.to_string().contains("load message"),
                "record {seq}"
            );
        } else if view.personal.to_string().contains("load message") {
            readable += 1;
        }
    }
    assert!(
        erased >= 1,
        "the forgotten customer's messages show as erased"
    );
    assert!(readable > 0, "the other customers' messages still read");
    let customer = restored
        .customer_by_identity("16505550000")
        .expect("the customer is known on the restored shard");
    assert!(restored.state().erased.contains_key(&customer));

    // On the keys topic, the customer's key is tombstoned.
    let master = twinlog_vault::MasterKey::load(&key).expect("master key");
    let topic = twinlog_bus::KeysTopic::connect(&bootstrap, &prefix)
        .await
        .expect("keys topic");
    let live = topic.read(shard).await.expect("read the keys topic");
    let material = twinlog_vault::KeyMaterial::from_entries(
        &master,
        shard,
        live.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("unwrap");
    assert_eq!(material.forgotten.get(&customer), Some(&1));
    assert!(!material.keys.contains_key(&customer));
    assert!(!material.keys.is_empty());
    topic.close(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_with_bot_and_campaigns_through_the_gateway_of_up() {
    let _heavy = HEAVY.lock().await;
    let up = UpWithGraph::start(20).await;
    let (service, simulator, graph_addr) = (&up.service, &up.simulator, up.graph_addr);
    let base = service.url("");
    let out = tokio::task::block_in_place(|| {
        run(&[
            "simulate",
            "--url",
            &service.url("/webhook"),
            "--gateway",
            &base,
            "--meta-url",
            &format!("http://{graph_addr}"),
            "--app-secret",
            SECRET,
            "--seed",
            "11",
            "--numbers",
            "2",
            "--events",
            "1500",
        ])
    });
    let report: serde_json::Value = serde_json::from_str(&out).expect("simulate prints JSON");
    let expected = &report["expected"];
    assert!(expected["sends"].as_u64() > Some(10), "{report}");
    assert_eq!(report["run"]["sends_failed"], 0, "{report}");
    assert_eq!(report["run"]["sends_ok"], expected["sends"], "{report}");
    assert_eq!(simulator.stats().errors_with(130429), 0, "paced at 20/s");
    // The simulator's status webhooks (sent, delivered, read per send).
    let deadline = Instant::now() + Duration::from_secs(120);
    while simulator.stats().webhooks_delivered < 3 * simulator.stats().accepted {
        assert!(Instant::now() < deadline, "{:?}", simulator.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = simulator.stats().webhooks_delivered;
    let tally = twinlog_simulate::tally(up.finish().await.iter());
    let mut tally = serde_json::to_value(&tally).expect("tally as JSON");
    let mut want = expected["records"].clone();
    // The simulator's statuses are not in simulate's prediction.
    assert_eq!(
        tally["statuses"].as_u64(),
        want["statuses"].as_u64().map(|s| s + statuses)
    );
    assert_eq!(
        tally["total"].as_u64(),
        want["total"].as_u64().map(|s| s + statuses)
    );
    for key in [
        "statuses",
        "total",
        "statuses_by_status",
        "statuses_orphaned",
        "statuses_priced",
    ] {
        tally[key] = serde_json::Value::Null;
        want[key] = serde_json::Value::Null;
    }
    assert_eq!(
        tally, want,
        "the audit log differs from what simulate predicts"
    );
    assert!(want["api_sends"].as_u64() > Some(10));
}

/// Reads partition `p` of the audit topic, committed records only, by seq:
/// the bus refuses a gap or a repeated seq (`Corrupt`); each record must
/// also carry its seq. Returns the payloads in seq order.
async fn committed_audit(bus: &twinlog_bus::KafkaBus, p: u32) -> Vec<Vec<u8>> {
    use twinlog_bus::{Bus, Topic};
    let end = bus.end_offset(Topic::Audit, p).await.expect("audit end");
    let mut out = Vec::new();
    while (out.len() as u64) < end {
        let records = bus
            .read(
                Topic::Audit,
                p,
                out.len() as u64,
                1024,
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("read shard {p}'s audit topic: {e}"));
        assert!(
            !records.is_empty(),
            "shard {p}: the audit topic ends at {} of {end}",
            out.len()
        );
        for r in records {
            assert_eq!(r.offset, out.len() as u64);
            let decoded: twinlog_proto::v1::AuditRecord =
                prost::Message::decode(r.payload.as_slice()).expect("an audit record");
            assert_eq!(
                decoded.seq, r.offset,
                "shard {p}: record at seq {} says {}",
                r.offset, decoded.seq
            );
            out.push(r.payload);
        }
    }
    out
}

/// A zombie engine: A owns every shard and is paused (SIGSTOP) while B
/// takes them over after the session timeout and folds more load; A then
/// resumes (SIGCONT). A's producers are fenced: A counts it and lets the
/// shards go, and nothing it appended since becomes visible. The audit
/// topic holds each shard's records once per seq, with no conflict, equal
/// to the logs the engines verify, and every acknowledged event is in the
/// log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_engine_that_resumes_after_a_takeover_is_fenced() {
    let _heavy = HEAVY.lock().await;
    const PARTITIONS: u32 = 4;
    const BODIES: u64 = 1_500;
    let (dir, bootstrap, prefix, key, [data_a, data_b]) = two_disks(PARTITIONS);
    let args_a = escrow_args("engine", &data_a, &bootstrap, &prefix, &key);
    let args_b = escrow_args("engine", &data_b, &bootstrap, &prefix, &key);
    let ingest_args = kafka_args("ingest", &dir.path().join("ingest"), &bootstrap, &prefix);
    let ingest = Service::start(&as_strs(&ingest_args));
    let a = Service::start(&as_strs(&args_a));
    let http = reqwest::Client::new();
    let owned = "twinlog_engine_shards_owned";
    wait_for_metric(&http, &a, owned, "A owns every shard", |v| {
        v == PARTITIONS as f64
    })
    .await;
    let acked = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(deliver_all(
        Arc::new(Mutex::new(ingest.addr.clone())),
        BODIES,
        LOAD_PER_BODY,
        8,
        4,
        acked.clone(),
    ));
    wait_for_metric(&http, &a, "twinlog_engine_records_total", "A folds", |v| {
        v >= 2_000.0
    })
    .await;
    let pid = a.child.id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let b = Service::start(&as_strs(&args_b));
    wait_for_metric(&http, &b, owned, "B takes every shard over", |v| {
        v == PARTITIONS as f64
    })
    .await;
    wait_for_metric(&http, &b, "twinlog_engine_records_total", "B folds", |v| {
        v >= 2_000.0
    })
    .await;
    signal("-CONT");
    wait_for_metric(
        &http,
        &a,
        "twinlog_engine_fenced_total",
        "A is fenced",
        |v| v >= 1.0,
    )
    .await;
    load.await.expect("load");
    assert_eq!(acked.load(Ordering::Relaxed), BODIES);
    // Let B fold the rest, then stop everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ingest.stop();
    a.stop();
    b.stop();

    // The committed audit topic, shard by shard: one record per seq.
    let bus = twinlog_bus::KafkaBus::connect(&bootstrap, &prefix)
        .await
        .expect("connect");
    let mut topic = Vec::new();
    for p in 0..PARTITIONS {
        topic.push(committed_audit(&bus, p).await);
    }
    // Every acknowledged event exactly once: fold the rest into a third
    // disk, restored from the topics alone, and into A's (whose copies
    // may hold records its fenced producers never committed).
    let data_c = dir.path().join("c");
    let args_c = escrow_args("engine", &data_c, &bootstrap, &prefix, &key);
    assert_eq!(
        drain_and_count(&args_c, &data_c, PARTITIONS),
        BODIES * LOAD_PER_BODY
    );
    assert_eq!(
        drain_and_count(&args_a, &data_a, PARTITIONS),
        BODIES * LOAD_PER_BODY
    );
    for p in 0..PARTITIONS {
        let shard = format!("shards/{p}");
        let (c_size, c_root, _) = log_facts(&data_c.join(&shard)).expect("C's copy");
        let (a_size, a_root, _) = log_facts(&data_a.join(&shard)).expect("A's copy");
        assert_eq!(
            (a_size, a_root),
            (c_size, c_root),
            "shard {p}: A and C agree"
        );
        // What the topic held after the engines stopped is a prefix of the
        // final log, record for record.
        let log = twinlog_auditlog::AuditLog::open(&data_c.join(&shard)).expect("open");
        for (seq, payload) in topic[p as usize].iter().enumerate() {
            let (_, leaf) = log
                .records(seq as u64, seq as u64 + 1)
                .next()
                .expect("a record")
                .expect("readable");
            assert_eq!(
                &leaf, payload,
                "shard {p} seq {seq}: the topic and the log differ"
            );
        }
        let final_topic = committed_audit(&bus, p).await;
        assert_eq!(
            final_topic.len() as u64,
            c_size,
            "shard {p}: topic and log sizes"
        );
        // B's copy is a prefix of the same tree.
        if let Some((b_size, b_root, _)) = log_facts(&data_b.join(&shard)) {
            assert!(b_size <= c_size);
            assert_eq!(
                log.root(b_size).expect("root"),
                b_root,
                "shard {p}: B forked"
            );
        }
    }
    bus.close(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_views_of_what_it_folded_to_token_holders_only() {
    let _heavy = HEAVY.lock().await;
    const ADMIN: &str = "e2e-admin-token-0123456789";
    const OTHER: &str = "e2e-other-number-token-0123";
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let card =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../projections/ratecards/example.csv");
    let other = format!("{OTHER}@999999999999999");
    let args = service_args(
        "up",
        &data,
        &[
            "--api-token",
            ADMIN,
            "--api-token",
            &other,
            "--rate-card",
            &card.to_string_lossy(),
        ],
    );
    let service = Service::start(&as_strs(&args));
    let http = reqwest::Client::new();
    for path in fixtures() {
        let body = std::fs::read(&path).expect("read fixture");
        let r = http
            .post(service.url("/webhook"))
            .header("X-Hub-Signature-256", sign(SECRET, &body))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200, "{}", path.display());
    }
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(service.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // No token, no data.
    let r = get("/v1/numbers", None).await.expect("get");
    assert_eq!(r.status(), 401);
    // The worker folds the audit records into the views: the fixtures' number appears.
    const NUMBER: &str = "106540352242922";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let numbers = json(get("/v1/numbers", Some(ADMIN))).await;
        let found = numbers["items"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["phone_number_id"] == NUMBER));
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "{numbers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the worker catch up with the last records.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let conversations = json(get(
        &format!("/v1/conversations?number={NUMBER}&limit=1000"),
        Some(ADMIN),
    ))
    .await;
    let items = conversations["items"].as_array().expect("items");
    assert!(!items.is_empty(), "{conversations}");
    // Billing by channel: customer and app traffic free, the API's priced.
    let summary = json(get("/v1/billing/summary?group_by=channel", Some(ADMIN))).await;
    let groups = summary["groups"].as_array().expect("groups");
    let channel = |key: &str| groups.iter().find(|g| g["key"] == key).cloned();
    let customer = channel("customer").expect("customer messages in the fixtures");
    assert_eq!(customer["cost_micros"], 0, "{summary}");
    let app = channel("app").expect("app echoes in the fixtures");
    assert_eq!(app["cost_micros"], 0, "{summary}");
    // A token limited to another number sees none of these rows.
    let scoped = json(get("/v1/conversations?limit=1000", Some(OTHER))).await;
    assert_eq!(scoped["items"], serde_json::json!([]), "{scoped}");
    let r = get("/openapi.json", None).await.expect("get");
    assert_eq!(r.status(), 200);
    service.stop();
}

/// The JSON body of a response.
async fn json(
    response: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> serde_json::Value {
    response
        .await
        .expect("request")
        .json()
        .await
        .expect("a JSON body")
}
