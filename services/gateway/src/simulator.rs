//! A Graph API simulator for tests: `POST /{version}/{phone_number_id}/messages`
//! answered as Meta documents it, and the `messages`-field status webhooks
//! that follow an accepted send.
//!
//! What it enforces, in Meta's order, with Meta's error bodies
//! (`{"error":{"message","type":"OAuthException","code","error_data":{"messaging_product","details"},"fbtrace_id"}}`):
//!
//! | check | error | HTTP |
//! |---|---|---|
//! | `Authorization: Bearer <token>` | 190 | 401 |
//! | a known `phone_number_id` (when [`SimConfig::numbers`] is not empty) | 100 (subcode 33) | 400 |
//! | a valid body ([`Strictness::Meta`]) | 100 | 400 |
//! | the number's throughput, GCRA at [`SimConfig::number_rate_per_s`] with a burst of one second | 130429 | 400 |
//! | a non-template send only inside the 24 h customer-service window | 131047 | 400 |
//! | the pair rate, GCRA of one message per [`SimConfig::pair_interval_ms`] with a burst of [`SimConfig::pair_burst`] | 131056 | 400 |
//!
//! A refused send consumes no pair allowance; every send that passes the
//! body check consumes throughput, as API calls do.
//!
//! Time is the simulator's clock ([`Simulator::advance`] moves it forward
//! without waiting): rate limits, windows and webhook timestamps read it.
//! Webhook delays ([`StatusDelays`]) are real time.
//!
//! **Invariant:** every queue is bounded: scheduled webhooks at
//! [`SimConfig::webhook_queue_depth_max`] (one more is dropped and counted),
//! rate and window tables at [`RATE_STATES_MAX`], the log of accepted sends
//! at [`ACCEPTED_LOG_MAX`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::send::{parse_send, SendRequest, Strictness, SEND_BODY_BYTES_MAX};

/// Meta's throughput for a coexistence number, messages per second.
pub const DEFAULT_NUMBER_RATE_PER_S: u32 = 20;
/// Meta's pair rate: one message to the same user every 6 s…
pub const DEFAULT_PAIR_INTERVAL_MS: u64 = 6_000;
/// …with bursts of up to 45 borrowed messages.
pub const DEFAULT_PAIR_BURST: u32 = 45;
/// The customer-service window a customer's message opens.
pub const CUSTOMER_SERVICE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Default bound of scheduled status webhooks.
pub const WEBHOOK_QUEUE_DEPTH_MAX: usize = 1024;
/// Attempts to deliver one status webhook.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 3;
/// Wait between webhook delivery attempts.
pub const WEBHOOK_RETRY_BACKOFF_MS: u64 = 100;
/// Timeout of one webhook POST.
pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;
/// Most entries of each rate or window table; past it, expired entries
/// are pruned, and if none expired the send is refused with HTTP 503.
pub const RATE_STATES_MAX: usize = 100_000;
/// Most accepted sends kept for [`Simulator::accepted`]; the oldest go.
pub const ACCEPTED_LOG_MAX: usize = 10_000;

/// A business number the simulator knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNumber {
    pub display_phone_number: String,
    pub waba_id: String,
}

/// Where status webhooks go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimWebhook {
    pub url: String,
    /// Key of `X-Hub-Signature-256`.
    pub app_secret: String,
}

/// When each status webhook of an accepted send fires, after the send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusDelays {
    pub sent_ms: u64,
    pub delivered_ms: u64,
    /// `None`: the customer never reads it.
    pub read_ms: Option<u64>,
}

impl Default for StatusDelays {
    fn default() -> Self {
        StatusDelays {
            sent_ms: 10,
            delivered_ms: 20,
            read_ms: Some(30),
        }
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The only bearer token accepted.
    pub access_token: String,
    pub number_rate_per_s: u32,
    /// Throughput per `phone_number_id`, overriding `number_rate_per_s`.
    pub number_rate_overrides: BTreeMap<String, u32>,
    pub pair_interval_ms: u64,
    pub pair_burst: u32,
    pub window_ms: u64,
    /// Known numbers; empty: every `phone_number_id` exists (its display
    /// number is itself, its WABA `"sim-waba"`).
    pub numbers: BTreeMap<String, SimNumber>,
    /// Template name → category (`marketing`, `utility`, `authentication`);
    /// unlisted templates are `marketing`.
    pub template_categories: BTreeMap<String, String>,
    /// Customers whose messages fail (a `failed` status, error 131026).
    pub failing_recipients: BTreeSet<String>,
    /// Latency added before answering an accepted send.
    pub response_delay_ms: u64,
    pub webhook: Option<SimWebhook>,
    pub status_delays: StatusDelays,
    pub webhook_queue_depth_max: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            access_token: "sim-token".to_owned(),
            number_rate_per_s: DEFAULT_NUMBER_RATE_PER_S,
            number_rate_overrides: BTreeMap::new(),
            pair_interval_ms: DEFAULT_PAIR_INTERVAL_MS,
            pair_burst: DEFAULT_PAIR_BURST,
            window_ms: CUSTOMER_SERVICE_WINDOW_MS,
            numbers: BTreeMap::new(),
            template_categories: BTreeMap::new(),
            failing_recipients: BTreeSet::new(),
            response_delay_ms: 0,
            webhook: None,
            status_delays: StatusDelays::default(),
            webhook_queue_depth_max: WEBHOOK_QUEUE_DEPTH_MAX,
        }
    }
}

/// A simulator that could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {detail}")]
    InvalidConfig { detail: String },
    #[error("failed to build the simulator's webhook client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
}

/// A send the simulator accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSent {
    pub wamid: String,
    pub phone_number_id: String,
    pub customer: String,
    pub message_type: String,
    pub body: Value,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub accepted: u64,
    /// Refused sends by Graph error code.
    pub errors: BTreeMap<i64, u64>,
    pub webhooks_delivered: u64,
    /// Webhooks not acknowledged after [`WEBHOOK_ATTEMPTS_MAX`] attempts.
    pub webhooks_failed: u64,
    /// Webhooks not scheduled (queue full) or not sent (shutdown).
    pub webhooks_dropped: u64,
}

impl SimStats {
    pub fn errors_with(&self, code: i64) -> u64 {
        self.errors.get(&code).copied().unwrap_or(0)
    }
}

/// The simulator's clock: real time plus what tests [`Simulator::advance`]d.
struct SimClock {
    origin: Instant,
    origin_unix_ms: i64,
    offset_ms: AtomicI64,
}

impl SimClock {
    fn new() -> SimClock {
        let origin_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        SimClock {
            origin: Instant::now(),
            origin_unix_ms,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Microseconds since the simulator started, advances included.
    fn now_us(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX);
        elapsed.saturating_add(self.offset_ms.load(Ordering::SeqCst).saturating_mul(1000))
    }

    fn now_unix_ms(&self) -> i64 {
        self.origin_unix_ms.saturating_add(self.now_us() / 1000)
    }
}

/// GCRA on the simulator's clock: conforming while the theoretical arrival
/// time is at most `(burst - 1)` intervals ahead.
fn gcra_allow(tat_us: &mut i64, now_us: i64, interval_us: i64, burst: u32) -> bool {
    let tat = (*tat_us).max(now_us);
    let tolerance_us = interval_us.saturating_mul(i64::from(burst.saturating_sub(1)));
    if tat - now_us > tolerance_us {
        return false;
    }
    *tat_us = tat.saturating_add(interval_us);
    true
}

/// Keeps a table under [`RATE_STATES_MAX`] by dropping entries for which
/// `expired` holds; false if it is still full.
fn make_room<K: Ord, V>(table: &mut BTreeMap<K, V>, expired: impl Fn(&V) -> bool) -> bool {
    if table.len() < RATE_STATES_MAX {
        return true;
    }
    table.retain(|_, v| !expired(v));
    table.len() < RATE_STATES_MAX
}

#[derive(Default)]
struct SimState {
    /// Theoretical arrival time per number, µs on the sim clock.
    number_tat_us: BTreeMap<String, i64>,
    /// Theoretical arrival time per (number, customer).
    pair_tat_us: BTreeMap<(String, String), i64>,
    /// Last inbound message per (number, customer), unix ms on the sim clock.
    last_inbound_ms: BTreeMap<(String, String), i64>,
    accepted: VecDeque<SimSent>,
    stats: SimStats,
}

struct SimShared {
    config: SimConfig,
    clock: SimClock,
    state: Mutex<SimState>,
    webhooks: Mutex<Option<mpsc::Sender<Delivery>>>,
    wamid_seq: AtomicU64,
}

impl SimShared {
    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves counters, not invariants.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The simulator. Serve [`Simulator::router`]; call [`Simulator::shutdown`]
/// to join its webhook task.
pub struct Simulator {
    shared: Arc<SimShared>,
    shutdown: watch::Sender<bool>,
    webhook_task: Mutex<Option<JoinHandle<()>>>,
}

/// A simulator and its router. Must be called inside a tokio runtime when
/// webhooks are configured (it spawns the delivery task).
pub fn router(config: SimConfig) -> Result<(Router, Simulator), SimError> {
    let sim = Simulator::start(config)?;
    Ok((sim.router(), sim))
}

impl Simulator {
    /// Starts a simulator; with [`SimConfig::webhook`], spawns the task
    /// that delivers status webhooks.
    pub fn start(config: SimConfig) -> Result<Simulator, SimError> {
        let invalid = |detail: &str| {
            Err(SimError::InvalidConfig {
                detail: detail.to_owned(),
            })
        };
        if config.number_rate_per_s == 0 || config.number_rate_overrides.values().any(|r| *r == 0) {
            return invalid("number rates must be at least 1 per second");
        }
        if config.pair_interval_ms == 0 || config.pair_burst == 0 {
            return invalid("the pair interval and burst must be at least 1");
        }
        if config.webhook_queue_depth_max == 0 {
            return invalid("webhook_queue_depth_max must be at least 1");
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, task) = match &config.webhook {
            None => (None, None),
            Some(hook) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_millis(WEBHOOK_TIMEOUT_MS))
                    .build()
                    .map_err(|source| SimError::HttpClient { source })?;
                let (tx, rx) = mpsc::channel(config.webhook_queue_depth_max);
                (Some(tx), Some((client, hook.clone(), rx)))
            }
        };
        let shared = Arc::new(SimShared {
            config,
            clock: SimClock::new(),
            state: Mutex::new(SimState::default()),
            webhooks: Mutex::new(tx),
            wamid_seq: AtomicU64::new(0),
        });
        let task = task.map(|(client, hook, rx)| {
            tokio::spawn(deliver_webhooks(
                Arc::clone(&shared),
                client,
                hook,
                rx,
                shutdown_rx,
            ))
        });
        Ok(Simulator {
            shared,
            shutdown,
            webhook_task: Mutex::new(task),
        })
    }

    /// `POST /{version}/{phone_number_id}/messages` and `POST /sim/inbound`
    /// (body `{"phone_number_id","from"}`: the customer wrote, opening the
    /// window).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{phone_number_id}/messages", post(send_handler))
            .route("/sim/inbound", post(inbound_handler))
            .layer(DefaultBodyLimit::max(SEND_BODY_BYTES_MAX))
            .with_state(Arc::clone(&self.shared))
    }

    /// The customer wrote to the number now (sim clock): opens or refreshes
    /// the customer-service window.
    pub fn inbound(&self, phone_number_id: &str, customer: &str) {
        let now_ms = self.shared.clock.now_unix_ms();
        let window_ms = i64::try_from(self.shared.config.window_ms).unwrap_or(i64::MAX);
        let mut state = self.shared.state();
        let _ = make_room(&mut state.last_inbound_ms, |at| {
            now_ms.saturating_sub(*at) > window_ms
        });
        state
            .last_inbound_ms
            .insert((phone_number_id.to_owned(), customer.to_owned()), now_ms);
    }

    /// Moves the simulator's clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.shared.clock.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The simulator's clock, unix milliseconds.
    pub fn now_unix_ms(&self) -> i64 {
        self.shared.clock.now_unix_ms()
    }

    pub fn stats(&self) -> SimStats {
        self.shared.state().stats.clone()
    }

    /// Accepted sends, oldest first (the last [`ACCEPTED_LOG_MAX`]).
    pub fn accepted(&self) -> Vec<SimSent> {
        self.shared.state().accepted.iter().cloned().collect()
    }

    /// Stops scheduling webhooks, drops those not yet sent (counted), and
    /// joins the delivery task.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let sender = self
            .shared
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(sender);
        let task = self
            .webhook_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(message = "simulator webhook task failed", %error);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Errors in Meta's shape.

struct GraphError {
    http: StatusCode,
    code: i64,
    subcode: Option<i64>,
    message: String,
    details: String,
}

impl GraphError {
    fn new(code: i64, message: impl Into<String>, details: impl Into<String>) -> GraphError {
        GraphError {
            http: StatusCode::BAD_REQUEST,
            code,
            subcode: None,
            message: message.into(),
            details: details.into(),
        }
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": fbtrace_id(),
        });
        if let (Some(sub), Some(obj)) = (self.subcode, error.as_object_mut()) {
            obj.insert("error_subcode".to_owned(), json!(sub));
        }
        json!({ "error": error })
    }
}

fn fbtrace_id() -> String {
    let id = uuid::Uuid::new_v4();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id.as_bytes()[..12])
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(sim: &SimShared, error: GraphError) -> Response {
    *sim.state().stats.errors.entry(error.code).or_insert(0) += 1;
    json_response(error.http, &error.body())
}

fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !token.is_empty() && t.trim() == token)
}

/// A wamid in Meta's style: `wamid.` and base64 of a small binary frame
/// holding the recipient and a unique hex id.
fn new_wamid(sim: &SimShared, customer: &str) -> String {
    let seq = sim.wamid_seq.fetch_add(1, Ordering::SeqCst);
    let unique = uuid::Uuid::new_v4();
    let id = format!(
        "{:06X}{}",
        seq & 0xFF_FFFF,
        hex::encode_upper(&unique.as_bytes()[..6])
    );
    let customer = &customer.as_bytes()[..customer.len().min(64)];
    let mut frame = vec![0x1C, 0x18];
    frame.push(u8::try_from(customer.len()).unwrap_or(64));
    frame.extend_from_slice(customer);
    frame.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18]);
    frame.push(u8::try_from(id.len()).unwrap_or(18));
    frame.extend_from_slice(id.as_bytes());
    frame.push(0x00);
    format!(
        "wamid.{}",
        base64::engine::general_purpose::STANDARD.encode(frame)
    )
}

enum Verdict {
    Accepted { wamid: String, pricing: Value },
    Refused(GraphError),
}

async fn send_handler(
    State(sim): State<Arc<SimShared>>,
    Path((_version, number)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&headers, &sim.config.access_token) {
        let mut e = GraphError::new(
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "the access token is missing, malformed or not valid",
        );
        e.http = StatusCode::UNAUTHORIZED;
        return refuse(&sim, e);
    }
    let known = sim.config.numbers.get(&number).cloned();
    if known.is_none() && !sim.config.numbers.is_empty() {
        let mut e = GraphError::new(
            100,
            format!("Unsupported post request. Object with ID '{number}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."),
            "unknown phone_number_id",
        );
        e.subcode = Some(33);
        return refuse(&sim, e);
    }
    let (parsed, send) = match parse_send(&body, Strictness::Meta) {
        Ok(ok) => ok,
        Err(invalid) => {
            return refuse(
                &sim,
                GraphError::new(100, "(#100) Invalid parameter", invalid.to_string()),
            )
        }
    };
    let verdict = decide(&sim, &number, &send, parsed);
    let (wamid, pricing) = match verdict {
        Verdict::Refused(e) => return refuse(&sim, e),
        Verdict::Accepted { wamid, pricing } => (wamid, pricing),
    };
    schedule_statuses(&sim, &number, known, &send, &wamid, pricing);
    if sim.config.response_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sim.config.response_delay_ms)).await;
    }
    let contact = if send.to.is_empty() {
        json!({"input": send.recipient, "user_id": send.recipient})
    } else {
        json!({"input": send.to, "wa_id": send.to})
    };
    let mut message = json!({ "id": wamid });
    if send.is_template() {
        if let Some(obj) = message.as_object_mut() {
            obj.insert("message_status".to_owned(), json!("accepted"));
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "messaging_product": "whatsapp",
            "contacts": [contact],
            "messages": [message],
        }),
    )
}

/// The limits and the window, atomically on the sim state.
fn decide(sim: &SimShared, number: &str, send: &SendRequest, parsed: Value) -> Verdict {
    let config = &sim.config;
    let customer = send.customer().to_owned();
    let now_us = sim.clock.now_us();
    let now_ms = sim.clock.now_unix_ms();
    let window_ms = i64::try_from(config.window_ms).unwrap_or(i64::MAX);
    let rate = config
        .number_rate_overrides
        .get(number)
        .copied()
        .unwrap_or(config.number_rate_per_s);
    let number_interval_us = 1_000_000 / i64::from(rate.max(1));
    let pair_interval_us =
        i64::try_from(config.pair_interval_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut state = sim.state();

    let full = || {
        let mut e = GraphError::new(1, "simulator rate table full", "retry later");
        e.http = StatusCode::SERVICE_UNAVAILABLE;
        Verdict::Refused(e)
    };
    if !make_room(&mut state.number_tat_us, |tat| *tat < now_us) {
        return full();
    }
    let tat = state.number_tat_us.entry(number.to_owned()).or_insert(0);
    if !gcra_allow(tat, now_us, number_interval_us, rate) {
        return Verdict::Refused(GraphError::new(
            130429,
            "(#130429) Rate limit hit",
            "Cloud API message throughput has been reached.",
        ));
    }

    let key = (number.to_owned(), customer.clone());
    let in_window = state
        .last_inbound_ms
        .get(&key)
        .is_some_and(|at| now_ms.saturating_sub(*at) <= window_ms);
    if !send.is_template() && !in_window {
        return Verdict::Refused(GraphError::new(
            131047,
            "(#131047) Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ));
    }

    if !make_room(&mut state.pair_tat_us, |tat| *tat < now_us) {
        return full();
    }
    let tat = state.pair_tat_us.entry(key).or_insert(0);
    if !gcra_allow(tat, now_us, pair_interval_us, config.pair_burst) {
        return Verdict::Refused(GraphError::new(
            131056,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        ));
    }

    let wamid = new_wamid(sim, &customer);
    let pricing = pricing(config, send, in_window);
    state.stats.accepted += 1;
    if state.accepted.len() >= ACCEPTED_LOG_MAX {
        state.accepted.pop_front();
    }
    state.accepted.push_back(SimSent {
        wamid: wamid.clone(),
        phone_number_id: number.to_owned(),
        customer,
        message_type: send.message_type.clone(),
        body: parsed,
    });
    Verdict::Accepted { wamid, pricing }
}

/// PMP pricing of a send: free-form messages (only possible inside the
/// window) and utility templates inside the window are free customer
/// service; other templates are `regular` in their category.
fn pricing(config: &SimConfig, send: &SendRequest, in_window: bool) -> Value {
    if !send.is_template() {
        return json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"});
    }
    let category = config
        .template_categories
        .get(&send.template_name)
        .map(String::as_str)
        .unwrap_or("marketing");
    if category == "utility" && in_window {
        json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "utility"})
    } else {
        json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": category})
    }
}

#[derive(serde::Deserialize)]
struct InboundBody {
    phone_number_id: String,
    from: String,
}

async fn inbound_handler(State(sim): State<Arc<SimShared>>, body: Bytes) -> Response {
    let parsed: InboundBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("expected {{\"phone_number_id\",\"from\"}}: {e}")}),
            )
        }
    };
    let now_ms = sim.clock.now_unix_ms();
    let window_ms = i64::try_from(sim.config.window_ms).unwrap_or(i64::MAX);
    let mut state = sim.state();
    if !make_room(&mut state.last_inbound_ms, |at| {
        now_ms.saturating_sub(*at) > window_ms
    }) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "window table full"}),
        );
    }
    state
        .last_inbound_ms
        .insert((parsed.phone_number_id, parsed.from), now_ms);
    json_response(StatusCode::OK, &json!({"ok": true}))
}

// ---------------------------------------------------------------------------
// Status webhooks.

/// The status webhooks of one accepted send still to deliver.
struct Delivery {
    phone_number_id: String,
    number: SimNumber,
    wamid: String,
    to: String,
    recipient: String,
    pricing: Value,
    accepted_at: tokio::time::Instant,
    /// (status, delay after the send), in order.
    steps: VecDeque<(&'static str, u64)>,
}

fn schedule_statuses(
    sim: &SimShared,
    number_id: &str,
    known: Option<SimNumber>,
    send: &SendRequest,
    wamid: &str,
    pricing: Value,
) {
    let guard = sim.webhooks.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tx) = guard.as_ref() else {
        if sim.config.webhook.is_some() {
            sim.state().stats.webhooks_dropped += 1;
        }
        return;
    };
    let delays = sim.config.status_delays;
    let mut steps = VecDeque::new();
    if sim.config.failing_recipients.contains(send.customer()) {
        steps.push_back(("failed", delays.sent_ms));
    } else {
        steps.push_back(("sent", delays.sent_ms));
        steps.push_back(("delivered", delays.delivered_ms.max(delays.sent_ms)));
        if let Some(read_ms) = delays.read_ms {
            steps.push_back(("read", read_ms.max(delays.delivered_ms)));
        }
    }
    let count = u64::try_from(steps.len()).unwrap_or(u64::MAX);
    let delivery = Delivery {
        phone_number_id: number_id.to_owned(),
        number: known.unwrap_or_else(|| SimNumber {
            display_phone_number: number_id.to_owned(),
            waba_id: "sim-waba".to_owned(),
        }),
        wamid: wamid.to_owned(),
        to: send.to.clone(),
        recipient: send.recipient.clone(),
        pricing,
        accepted_at: tokio::time::Instant::now(),
        steps,
    };
    if tx.try_send(delivery).is_err() {
        drop(guard);
        sim.state().stats.webhooks_dropped += count;
    }
}

fn status_body(sim: &SimShared, d: &Delivery, status: &str) -> Vec<u8> {
    let timestamp = (sim.clock.now_unix_ms() / 1000).to_string();
    let mut st = json!({
        "id": d.wamid,
        "status": status,
        "timestamp": timestamp,
        "recipient_id": d.to,
    });
    if let Some(obj) = st.as_object_mut() {
        if !d.recipient.is_empty() {
            obj.insert("recipient_user_id".to_owned(), json!(d.recipient));
        }
        match status {
            "sent" | "delivered" => {
                obj.insert("pricing".to_owned(), d.pricing.clone());
            }
            "failed" => {
                obj.insert(
                    "errors".to_owned(),
                    json!([{
                        "code": 131026,
                        "title": "Message undeliverable",
                        "message": "Message undeliverable",
                        "error_data": {"details": "Message Undeliverable."},
                    }]),
                );
            }
            _ => {}
        }
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": d.number.waba_id,
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": d.number.display_phone_number,
                        "phone_number_id": d.phone_number_id,
                    },
                    "statuses": [st],
                },
            }],
        }],
    })
    .to_string()
    .into_bytes()
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_webhook(client: &reqwest::Client, hook: &SimWebhook, body: Vec<u8>) -> bool {
    let sig = signature(&hook.app_secret, &body);
    for attempt in 0..WEBHOOK_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(WEBHOOK_RETRY_BACKOFF_MS)).await;
        }
        let sent = client
            .post(&hook.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", &sig)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => {
                tracing::debug!(message = "webhook refused", status = %resp.status(), attempt);
            }
            Err(error) => {
                tracing::debug!(message = "webhook post failed", %error, attempt);
            }
        }
    }
    false
}

async fn deliver_webhooks(
    sim: Arc<SimShared>,
    client: reqwest::Client,
    hook: SimWebhook,
    mut rx: mpsc::Receiver<Delivery>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cap = sim.config.webhook_queue_depth_max;
    // Due time and arrival order → delivery; at most `cap` entries.
    let mut due: BTreeMap<(tokio::time::Instant, u64), Delivery> = BTreeMap::new();
    let mut seq: u64 = 0;
    let mut open = true;
    loop {
        let next = due.keys().next().map(|k| k.0);
        if !open && next.is_none() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            item = rx.recv(), if open && due.len() < cap => match item {
                Some(d) => {
                    if let Some((_, delay_ms)) = d.steps.front() {
                        let at = d.accepted_at + Duration::from_millis(*delay_ms);
                        seq += 1;
                        due.insert((at, seq), d);
                    }
                }
                None => open = false,
            },
            _ = sleep_until_opt(next), if next.is_some() => {
                let Some((_, mut d)) = due.pop_first() else { continue };
                let Some((status, _)) = d.steps.pop_front() else { continue };
                let body = status_body(&sim, &d, status);
                let delivered = post_webhook(&client, &hook, body).await;
                {
                    let mut state = sim.state();
                    if delivered {
                        state.stats.webhooks_delivered += 1;
                    } else {
                        state.stats.webhooks_failed += 1;
                    }
                }
                if let Some((_, delay_ms)) = d.steps.front() {
                    let at = d.accepted_at + Duration::from_millis(*delay_ms);
                    seq += 1;
                    due.insert((at, seq), d);
                }
            }
        }
    }
    let left: usize = due.values().map(|d| d.steps.len()).sum::<usize>();
    rx.close();
    let mut left = u64::try_from(left).unwrap_or(u64::MAX);
    while let Ok(d) = rx.try_recv() {
        left += u64::try_from(d.steps.len()).unwrap_or(u64::MAX);
    }
    sim.state().stats.webhooks_dropped += left;
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
