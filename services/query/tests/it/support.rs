//! Realistic audit records of two numbers on two partitions, a worker over
//! an embedded bus, and an API server on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use twinlog_bus::{key_for_partition, Bus, EmbeddedBus, EmbeddedConfig, OutRecord, Topic};
use twinlog_projections::{Config, ProjectionInput, RateCard, Views};
use twinlog_proto::v1::{
    audit_record::Fact, message, personal, AuditRecord, Channel, ContactSynced, InputKind, Message,
    MessageRecorded, Personal, Pricing, Provenance, RevisionKind, RevisionRecorded, StatusEffect,
    StatusRecorded, Text,
};
use twinlog_query::{api, Auth, Opener, Projector, Store, Token};

pub const PARTITIONS: u32 = 2;
pub const START: i64 = 1_754_000_000; // 2025-07-31, PMP
pub const ADMIN: &str = "admin-token";
pub const PN1_ONLY: &str = "pn1-token";

/// The number of partition `p`.
pub fn number(p: u32) -> String {
    format!("PN{}", p + 1)
}

pub fn tag(kind: u8, a: u32, b: u32) -> Vec<u8> {
    let mut t = vec![kind; 8];
    t.extend_from_slice(&a.to_be_bytes());
    t.extend_from_slice(&b.to_be_bytes());
    t
}

pub fn customer(p: u32, c: u32) -> Vec<u8> {
    tag(0xC0, p, c)
}

/// One audit record of a partition, with the personal part the vault
/// would open.
#[derive(Clone)]
pub struct Item {
    pub partition: u32,
    pub record: AuditRecord,
    pub personal: Option<Personal>,
}

fn text(body: &str) -> Option<Personal> {
    Some(Personal {
        customer: None,
        content: Some(personal::Content::Message(Message {
            r#type: "text".into(),
            content: Some(message::Content::Text(Text {
                body: body.into(),
                preview_url: false,
            })),
            ..Message::default()
        })),
    })
}

struct Shard {
    partition: u32,
    seq: u64,
    items: Vec<Item>,
}

impl Shard {
    fn push(&mut self, c: u32, at: i64, kind: InputKind, fact: Fact, personal: Option<Personal>) {
        self.items.push(Item {
            partition: self.partition,
            record: AuditRecord {
                format: 1,
                seq: self.seq,
                phone_number_id: number(self.partition),
                display_phone_number: "15550001234".into(),
                waba_id: "WABA1".into(),
                customer: customer(self.partition, c),
                meta_timestamp: at,
                ingest_time_ms: at * 1000,
                input_kind: kind as i32,
                customer_country: "US".into(),
                fact: Some(fact),
                ..AuditRecord::default()
            },
            personal,
        });
        self.seq += 1;
    }
}

fn message_fact(key: Vec<u8>, channel: Channel, at: i64) -> Fact {
    Fact::MessageRecorded(MessageRecorded {
        message_key: key,
        channel: channel as i32,
        provenance: Provenance::Live as i32,
        r#type: "text".into(),
        timestamp: at,
        ..MessageRecorded::default()
    })
}

fn status_fact(key: Vec<u8>, status: &str, at: i64, pricing: bool) -> Fact {
    Fact::StatusRecorded(StatusRecorded {
        message_key: key,
        status: status.into(),
        timestamp: at,
        effect: StatusEffect::Advanced as i32,
        pricing: pricing.then(|| Pricing {
            billable: Some(true),
            pricing_model: "PMP".into(),
            r#type: "regular".into(),
            category: "marketing".into(),
        }),
        ..StatusRecorded::default()
    })
}

/// `rounds` rounds of traffic with `customers` customers on each of the
/// two numbers: inbound messages (open the window), app echoes for even
/// customers (a human takes over), API marketing sends with sent and
/// delivered statuses (charged), edits for every third customer, contact
/// syncs for every fourth.
pub fn scenario(customers: u32, rounds: u32) -> Vec<Item> {
    let mut all = Vec::new();
    for p in 0..PARTITIONS {
        let mut s = Shard {
            partition: p,
            seq: 0,
            items: Vec::new(),
        };
        let mut m = 0u32;
        for round in 0..rounds {
            for c in 0..customers {
                let at = START + i64::from(round) * 7_200 + i64::from(c) * 10;
                let inbound = tag(0x3A, p, m);
                m += 1;
                s.push(
                    c,
                    at,
                    InputKind::Inbound,
                    message_fact(inbound.clone(), Channel::Customer, at),
                    text(&format!("hello {c}")),
                );
                if c % 2 == 0 {
                    let key = tag(0x3A, p, m);
                    m += 1;
                    s.push(
                        c,
                        at + 1,
                        InputKind::Echo,
                        message_fact(key, Channel::App, at + 1),
                        text("staff here"),
                    );
                }
                let api = tag(0x3A, p, m);
                m += 1;
                s.push(
                    c,
                    at + 2,
                    InputKind::ApiSend,
                    message_fact(api.clone(), Channel::Api, at + 2),
                    text("offer"),
                );
                for (i, status) in ["sent", "delivered"].into_iter().enumerate() {
                    let t = at + 3 + i64::try_from(i).unwrap_or(0);
                    s.push(
                        c,
                        t,
                        InputKind::Status,
                        status_fact(api.clone(), status, t, true),
                        None,
                    );
                }
                if c % 3 == 0 {
                    s.push(
                        c,
                        at + 5,
                        InputKind::Inbound,
                        Fact::RevisionRecorded(RevisionRecorded {
                            revision_key: tag(0x3B, p, m),
                            original_key: inbound,
                            kind: RevisionKind::Edit as i32,
                            by: Channel::Customer as i32,
                            timestamp: at + 5,
                            original_known: true,
                            new_type: "text".into(),
                            revision_number: 1,
                        }),
                        None,
                    );
                }
                if c % 4 == 0 && round == 0 {
                    s.push(
                        c,
                        at + 6,
                        InputKind::ContactSync,
                        Fact::ContactSynced(ContactSynced {
                            action: "add".into(),
                            timestamp: at + 6,
                            named: true,
                        }),
                        None,
                    );
                }
            }
        }
        all.extend(s.items);
    }
    all
}

/// Opens what the test vault would: the scenario's personal parts.
#[derive(Default)]
pub struct MapOpener(pub BTreeMap<(u32, u64), Personal>);

impl MapOpener {
    pub fn of(items: &[Item]) -> MapOpener {
        MapOpener(
            items
                .iter()
                .filter_map(|i| Some(((i.partition, i.record.seq), i.personal.clone()?)))
                .collect(),
        )
    }
}

impl Opener for MapOpener {
    fn open(&self, partition: u32, record: &AuditRecord) -> Option<Personal> {
        self.0.get(&(partition, record.seq)).cloned()
    }
}

pub fn config() -> Config {
    let card = RateCard::parse(include_str!(
        "../../../../projections/ratecards/example.csv"
    ))
    .expect("the example rate card parses");
    Config::new(card)
}

/// The views of each partition, folded from scratch.
pub fn rebuilt(items: &[Item]) -> BTreeMap<u32, Views> {
    let config = config();
    let mut out: BTreeMap<u32, Views> = BTreeMap::new();
    for i in items {
        out.entry(i.partition).or_default().apply(
            &config,
            ProjectionInput {
                record: &i.record,
                personal: i.personal.as_ref(),
            },
        );
    }
    out
}

/// Every row the views hold, as the store keys them.
pub fn expected_rows(items: &[Item]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut rows = BTreeMap::new();
    for (p, views) in rebuilt(items) {
        rows.extend(twinlog_query::projector::rows_of(&views, p));
    }
    rows
}

/// Opens the embedded bus, waiting for a dropped one (or a killed
/// process's) to release sled's file lock.
pub fn open_bus(dir: &Path) -> Arc<EmbeddedBus> {
    let config = EmbeddedConfig {
        partitions: PARTITIONS,
        ..EmbeddedConfig::default()
    };
    for _ in 0..200 {
        if let Ok(bus) = EmbeddedBus::open(dir, config.clone()) {
            return Arc::new(bus);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Arc::new(EmbeddedBus::open(dir, config).expect("the embedded bus opens"))
}

/// Publishes items on the audit topic, each on its partition.
pub async fn publish(bus: &EmbeddedBus, items: &[Item]) {
    for chunk in items.chunks(1000) {
        let out = chunk
            .iter()
            .map(|i| OutRecord {
                topic: Topic::Audit,
                key: key_for_partition(i.partition, PARTITIONS),
                payload: i.record.encode_to_vec(),
                timestamp_ms: i.record.ingest_time_ms,
            })
            .collect();
        bus.publish(out).await.expect("audit records publish");
    }
}

/// A running worker.
pub struct Worker {
    pub store: Store,
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub ready: twinlog_query::Readiness,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), twinlog_query::ProjectorError>>,
}

impl Worker {
    /// Opens the store in `dir` and runs a worker over both partitions.
    pub fn start(dir: &Path, bus: Arc<EmbeddedBus>, opener: MapOpener) -> Worker {
        Worker::start_with(dir, bus, opener, twinlog_bus::READ_RECORDS_MAX)
    }

    /// As [`Worker::start`], storing at most `batch` records per batch.
    pub fn start_with(
        dir: &Path,
        bus: Arc<EmbeddedBus>,
        opener: MapOpener,
        batch: usize,
    ) -> Worker {
        let store = open_store(dir);
        let mut registry = prometheus_client::registry::Registry::default();
        let projector = Projector::new(
            store.clone(),
            config(),
            bus,
            Arc::new(opener),
            (0..PARTITIONS).collect(),
            &mut registry,
        )
        .with_batch_records_max(batch);
        let ready = projector.readiness();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(projector.run(shutdown));
        Worker {
            store,
            registry: Arc::new(registry),
            ready,
            stop,
            task,
        }
    }

    /// Waits until every partition applied through `through[p]`.
    pub async fn wait_applied(&self, through: &BTreeMap<u32, u64>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = through
                .iter()
                .all(|(p, t)| self.store.applied_through(*p).ok().flatten() >= Some(*t));
            if done {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the worker stopped before applying everything"
            );
            assert!(Instant::now() < deadline, "the worker did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the worker and waits for it; it must not have failed.
    pub async fn stop(self) -> Store {
        self.stop.send_replace(true);
        self.task
            .await
            .expect("the worker task joins")
            .expect("the worker stops cleanly");
        self.store
    }
}

/// Opens the store, waiting for a dropped one to release sled's file lock.
pub fn open_store(dir: &Path) -> Store {
    for _ in 0..200 {
        if let Ok(store) = Store::open(dir) {
            return store;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Store::open(dir).expect("the store opens")
}

/// The last seq of each partition.
pub fn last_seqs(items: &[Item]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for i in items {
        out.insert(i.partition, i.record.seq);
    }
    out
}

/// A worker over the scenario and an API on loopback.
pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub items: Vec<Item>,
    pub worker: Worker,
    pub base: String,
    pub client: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    pub async fn start(customers: u32, rounds: u32) -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir");
        let items = scenario(customers, rounds);
        let bus = open_bus(&dir.path().join("bus"));
        publish(&bus, &items).await;
        let worker = Worker::start(&dir.path().join("views"), bus, MapOpener::of(&items));
        worker.wait_applied(&last_seqs(&items)).await;
        let auth = Auth::new(vec![
            Token {
                secret: ADMIN.into(),
                numbers: None,
            },
            Token {
                secret: PN1_ONLY.into(),
                numbers: Some([number(0)].into()),
            },
        ]);
        let audit = audit_logs(&dir.path().join("audit"), &items);
        let state = api::ApiState::new(worker.store.clone(), auth, worker.ready.clone())
            .with_registry(worker.registry.clone())
            .with_audit(Arc::new(audit));
        let (base, server) = serve(api::router(state)).await;
        Harness {
            _dir: dir,
            items,
            worker,
            base,
            client: reqwest::Client::new(),
            server,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("the API answers")
    }

    /// GET with a token; asserts 200 and returns the JSON.
    pub async fn json(&self, path: &str, token: &str) -> Value {
        let resp = self.get(path, Some(token)).await;
        let status = resp.status();
        let body = resp.text().await.expect("a body");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Every item of a paged list, walking pages of `limit`.
    pub async fn walk(&self, path: &str, limit: usize, token: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
                None => format!("{path}{sep}limit={limit}"),
            };
            let page = self.json(&url, token).await;
            let items = page["items"].as_array().expect("items").clone();
            assert!(items.len() <= limit, "a page longer than its limit");
            out.extend(items);
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("more than 10000 pages");
    }
}

/// A real audit log of partition 0's records (the one shard served).
pub fn audit_logs(dir: &Path, items: &[Item]) -> twinlog_query::AuditLogs {
    let mut log = twinlog_auditlog::AuditLog::create(dir, None).expect("an audit log");
    let leaves: Vec<Vec<u8>> = items
        .iter()
        .filter(|i| i.partition == 0)
        .map(|i| i.record.encode_to_vec())
        .collect();
    log.append(twinlog_auditlog::AppendBatch {
        leaves,
        side_writes: Vec::new(),
    })
    .expect("the records append");
    twinlog_query::AuditLogs::new([(0, Arc::new(std::sync::RwLock::new(log)))].into())
}

/// Serves `router` on a loopback port.
pub async fn serve(router: axum::Router) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), server)
}

/// Reads server-sent events from a response until `n` events arrived or
/// `timeout` passed: (id, data) pairs.
pub async fn read_events(
    resp: &mut reqwest::Response,
    n: usize,
    timeout: Duration,
) -> Vec<(u64, Value)> {
    let deadline = Instant::now() + timeout;
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                out.push((id, serde_json::from_str(&data).expect("event data is JSON")));
                if out.len() == n {
                    break;
                }
            }
        }
    }
    out
}
