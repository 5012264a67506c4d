//! A running ingestor over loopback: real HTTP (reqwest), real sled on disk
//! in a tempdir, the real `EmbeddedBus` (behind a test wrapper that can
//! hold or refuse publishes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use prometheus_client::registry::Registry;
use sha2::Sha256;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use twinlog_bus::{
    Bus, BusError, BusRecord, EmbeddedBus, EmbeddedConfig, OutRecord, Position, Topic,
};
use twinlog_ingest::{IngestConfig, Ingestor, Normalizer};
use twinlog_proto::v1::IngestEvent;

pub const SECRET: &str = "test-app-secret-1";
pub const SECRET_2: &str = "test-app-secret-2-rotated";
pub const VERIFY_TOKEN: &str = "verify-me-please";

/// The real embedded bus, plus two faults: a gate that holds every publish
/// until the test opens it, and an "overloaded" switch.
pub struct TestBus {
    pub inner: EmbeddedBus,
    pub gate: Option<Arc<Semaphore>>,
    pub entered: Notify,
    pub overloaded: AtomicBool,
    pub publishes: AtomicU64,
}

impl TestBus {
    pub fn open(dir: &Path) -> TestBus {
        TestBus {
            inner: EmbeddedBus::open(dir, EmbeddedConfig::default()).expect("open bus"),
            gate: None,
            entered: Notify::new(),
            overloaded: AtomicBool::new(false),
            publishes: AtomicU64::new(0),
        }
    }

    pub fn gated(dir: &Path) -> (TestBus, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let mut bus = TestBus::open(dir);
        bus.gate = Some(gate.clone());
        (bus, gate)
    }

    /// Every record on every input topic and partition, decoded.
    pub async fn all(&self) -> Vec<(BusRecord, IngestEvent)> {
        let mut out = Vec::new();
        for topic in Topic::INPUTS {
            for partition in 0..self.partitions() {
                let records = self
                    .read(topic, partition, 0, 1024, Duration::ZERO)
                    .await
                    .expect("read bus");
                for record in records {
                    let event: IngestEvent =
                        prost::Message::decode(&record.payload[..]).expect("decode event");
                    out.push((record, event));
                }
            }
        }
        out
    }
}

impl Bus for TestBus {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<Position>, BusError> {
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        if self.overloaded.load(Ordering::SeqCst) {
            return Err(BusError::Overloaded {
                what: "the test switch",
            });
        }
        self.publishes.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(records).await
    }

    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<BusRecord>, BusError> {
        self.inner.read(topic, partition, offset, max, wait).await
    }

    async fn end_offset(&self, topic: Topic, partition: u32) -> Result<u64, BusError> {
        self.inner.end_offset(topic, partition).await
    }
}

pub fn config() -> IngestConfig {
    IngestConfig {
        app_secrets: vec![SECRET.to_owned(), SECRET_2.to_owned()],
        verify_token: VERIFY_TOKEN.to_owned(),
        ..IngestConfig::default()
    }
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/webhooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// An ingestor served on 127.0.0.1, with its directories.
pub struct Harness {
    pub root: tempfile::TempDir,
    pub ingestor: Arc<Ingestor<TestBus>>,
    pub bus: Arc<TestBus>,
    pub registry: Registry,
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Harness {
    pub async fn start(config: IngestConfig) -> Harness {
        let root = tempfile::tempdir().expect("tempdir");
        let bus = Arc::new(TestBus::open(&root.path().join("bus")));
        Harness::start_with(root, bus, config, twinlog_normalize::normalize).await
    }

    pub async fn start_with(
        root: tempfile::TempDir,
        bus: Arc<TestBus>,
        config: IngestConfig,
        normalizer: Normalizer,
    ) -> Harness {
        let mut registry = Registry::default();
        let ingestor = Arc::new(
            Ingestor::open_with_normalizer(
                &root.path().join("ingest"),
                config,
                bus.clone(),
                &mut registry,
                normalizer,
            )
            .expect("open ingestor"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = ingestor.clone().router();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Harness {
            root,
            ingestor,
            bus,
            registry,
            url: format!("http://{addr}/webhook"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn ingest_dir(&self) -> PathBuf {
        self.root.path().join("ingest")
    }

    pub fn bus_dir(&self) -> PathBuf {
        self.root.path().join("bus")
    }

    pub async fn post(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(&self.url).body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().await.expect("post")
    }

    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        self.post(body, Some(&sign(SECRET, body))).await
    }

    /// The Prometheus text exposition of the ingestor's metrics.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    /// The value of one sample line of the metrics, e.g.
    /// `twinlog_ingest_rejected_total{reason="signature_missing"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(sample)?;
                rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
            })
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }

    /// Stops the server and hands back the directories and the bus, the
    /// ingestor closed (its sled database released).
    pub async fn stop(mut self) -> (tempfile::TempDir, Arc<TestBus>) {
        drop(self.client);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server stops")
                .expect("server task");
        }
        // Connections hold clones of the router until they close.
        for _ in 0..100 {
            if Arc::strong_count(&self.ingestor) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            Arc::strong_count(&self.ingestor),
            1,
            "ingestor still shared"
        );
        drop(self.ingestor);
        (self.root, self.bus)
    }
}

/// True if any file under `dir` contains `needle`.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).expect("read file");
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
