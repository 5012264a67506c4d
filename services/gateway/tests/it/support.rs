//! Servers on 127.0.0.1:0, a webhook receiver that checks signatures, and
//! reading `api_send` events back from the bus.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use prost::Message as _;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use twinlog_bus::{Bus, EmbeddedBus, EmbeddedConfig, Topic};
use twinlog_gateway::simulator::signature;
use twinlog_proto::v1::{ingest_event::Kind, ApiSend, IngestEvent};

/// Longest a test waits for something that should happen soon.
pub const WAIT_MS_MAX: u64 = 20_000;

/// An axum server on a loopback port, stopped and joined by [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Server { addr, stop, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join server");
    }
}

/// A webhook as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature_valid: bool,
    pub body: Value,
}

/// Meta's side of a webhook endpoint: checks `X-Hub-Signature-256` over
/// the raw body (401 when it does not match) and keeps what arrived.
#[derive(Clone)]
pub struct Receiver {
    secret: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn new(secret: &str) -> Receiver {
        Receiver {
            secret: secret.to_owned(),
            received: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/webhook", post(receive))
            .with_state(self.clone())
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `n` webhooks arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let got = eventually(|| {
            let all = self.all();
            (all.len() >= n).then_some(all)
        })
        .await;
        got.unwrap_or_else(|| panic!("expected {n} webhooks, got {}", self.all().len()))
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = signature(&r.secret, &body);
    // Constant-time enough for a test: both are fixed-length hex.
    let valid = !given.is_empty() && given == expected;
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.received.lock().expect("receiver lock").push(Received {
        signature_valid: valid,
        body: parsed,
    });
    if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most
/// [`WAIT_MS_MAX`].
pub async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const PARTITIONS: u32 = 4;

pub fn open_bus(dir: &Path) -> Arc<EmbeddedBus> {
    let config = EmbeddedConfig {
        partitions: PARTITIONS,
        ..EmbeddedConfig::default()
    };
    Arc::new(EmbeddedBus::open(dir, config).expect("open embedded bus"))
}

/// Every event on the api-send topic, all partitions.
pub async fn api_send_events(bus: &EmbeddedBus) -> Vec<IngestEvent> {
    let mut out = Vec::new();
    for partition in 0..bus.partitions() {
        let mut offset = 0;
        loop {
            let records = bus
                .read(Topic::ApiSend, partition, offset, 1024, Duration::ZERO)
                .await
                .expect("read the api-send topic");
            if records.is_empty() {
                break;
            }
            for r in &records {
                assert_eq!(r.topic, Topic::ApiSend);
                out.push(IngestEvent::decode(r.payload.as_slice()).expect("decode IngestEvent"));
            }
            offset += u64::try_from(records.len()).expect("count");
        }
    }
    out
}

/// Waits until the api-send topic holds `n` events.
pub async fn wait_for_events(bus: &EmbeddedBus, n: usize) -> Vec<IngestEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        let events = api_send_events(bus).await;
        if events.len() >= n || tokio::time::Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn api_send(event: &IngestEvent) -> &ApiSend {
    match &event.kind {
        Some(Kind::ApiSend(a)) => a,
        other => panic!("expected an api_send event, got {other:?}"),
    }
}

/// A text send body.
pub fn text(to: &str, body: &str) -> Value {
    serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
    })
}

/// A template send body.
pub fn template(to: &str, name: &str) -> Value {
    serde_json::json!({
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": "en_US"}},
    })
}

/// The Graph error code of an error body.
pub fn error_code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap_or(0)
}
