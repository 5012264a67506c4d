//! The send gateway: `POST /v1/messages/{phone_number_id}` with a Cloud API
//! send body, paced per number and per customer, forwarded to the Graph
//! API, and recorded on the bus as an `api_send` event before the client
//! hears Meta's answer.
//!
//! # Path of one send
//!
//! The handler validates the body ([`Strictness::Envelope`]: 400 with a
//! JSON error otherwise), admits it to its number's queue (at most
//! [`GatewayConfig::queue_depth_max`] sends per number between admission
//! and outcome; one more is 429 with `Retry-After`), and waits for the
//! outcome. One worker task per number owns that number's sends: it keeps
//! a FIFO per customer, paces dispatches with two governor limiters (the
//! number's rate, evenly spaced, and the pair rate per customer), and runs
//! up to [`IN_FLIGHT_PER_NUMBER_MAX`] Graph calls at once, at most one per
//! customer, so a customer's messages go out in order and a customer
//! waiting for the pair rate never holds up the others.
//!
//! A Graph answer of 130429 (throughput) pauses the whole number, 131056
//! (pair rate) delays that customer; both are retried up to
//! [`SEND_ATTEMPTS_MAX`] attempts. Other Graph errors go back to the client
//! unchanged, with Meta's status code. A transport failure is 502 and is
//! not retried: Meta may have sent the message.
//!
//! **Invariant:** an admitted send is never dropped: its worker completes
//! it even when the client has gone, and [`Gateway::shutdown`] drains every
//! admitted send before it returns.
//!
//! **Invariant:** a send Meta accepted is on the bus before the client is
//! answered, or the failure to publish it (after [`PUBLISH_ATTEMPTS_MAX`]
//! attempts) is logged at error level and the answer carries
//! `twinlog-recorded: false`: the send cannot be undone.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use twinlog_bus::Bus;
use twinlog_proto::v1::{ingest_event::Kind, ApiSend, Envelope, Identity, IngestEvent};

use crate::send::{parse_send, to_message, SendRequest, Strictness, SEND_BODY_BYTES_MAX};

/// The Graph API the gateway talks to by default.
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.facebook.com/v24.0";
/// Meta's throughput for a coexistence number, messages per second.
pub const DEFAULT_NUMBER_RATE_PER_S: u32 = 20;
/// Meta's pair rate: one message to the same customer every 6 s…
pub const DEFAULT_PAIR_INTERVAL_MS: u64 = 6_000;
/// …with bursts of up to 45.
pub const DEFAULT_PAIR_BURST: u32 = 45;
/// Default bound of admitted, unfinished sends per number.
pub const DEFAULT_QUEUE_DEPTH_MAX: usize = 1_000;
/// Default `Retry-After` of a 429.
pub const DEFAULT_RETRY_AFTER_S: u32 = 1;

/// Sends the number limiter lets out at once. One: the gateway spaces a
/// number's sends evenly at its rate, so network jitter can never make
/// Meta count more than the rate in any second.
pub const NUMBER_BURST_COUNT: u32 = 1;
/// Most numbers (worker tasks) one gateway serves.
pub const NUMBERS_MAX: usize = 1_024;
/// Most concurrent Graph calls per number.
pub const IN_FLIGHT_PER_NUMBER_MAX: usize = 64;
/// Most Graph calls for one send (the first and the rate-limit retries).
pub const SEND_ATTEMPTS_MAX: u32 = 5;
/// First pause of a number after a 130429; doubles per attempt.
pub const THROUGHPUT_BACKOFF_MS_BASE: u64 = 1_000;
/// Longest rate-limit backoff.
pub const RATE_BACKOFF_MS_MAX: u64 = 60_000;
/// Timeout of one Graph call.
pub const GRAPH_TIMEOUT_MS: u64 = 30_000;
/// Largest Graph response read.
pub const GRAPH_RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Most attempts to publish the event of an accepted send.
pub const PUBLISH_ATTEMPTS_MAX: u32 = 6;
/// First wait between publish attempts; doubles per attempt.
pub const PUBLISH_BACKOFF_MS_BASE: u64 = 50;
/// Longest `phone_number_id` (digits only) in the path.
pub const PHONE_NUMBER_ID_BYTES_MAX: usize = 32;
/// Dispatches between prunings of the pair limiter's idle customers.
pub const PAIR_PRUNE_DISPATCHES: u64 = 1_024;

/// How the gateway is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The Graph API with its version, e.g. `https://graph.facebook.com/v24.0`.
    pub graph_base_url: String,
    pub access_token: String,
    /// Messages per second per number.
    pub number_rate_per_s: u32,
    /// Per `phone_number_id`, replacing `number_rate_per_s` (e.g. 5).
    pub number_rate_overrides: BTreeMap<String, u32>,
    pub pair_interval_ms: u64,
    pub pair_burst: u32,
    /// Admitted, unfinished sends per number; one more is 429.
    pub queue_depth_max: usize,
    /// `Retry-After` of a 429, seconds.
    pub retry_after_s: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            graph_base_url: DEFAULT_GRAPH_BASE_URL.to_owned(),
            access_token: String::new(),
            number_rate_per_s: DEFAULT_NUMBER_RATE_PER_S,
            number_rate_overrides: BTreeMap::new(),
            pair_interval_ms: DEFAULT_PAIR_INTERVAL_MS,
            pair_burst: DEFAULT_PAIR_BURST,
            queue_depth_max: DEFAULT_QUEUE_DEPTH_MAX,
            retry_after_s: DEFAULT_RETRY_AFTER_S,
        }
    }
}

impl GatewayConfig {
    fn rate_for(&self, number: &str) -> u32 {
        self.number_rate_overrides
            .get(number)
            .copied()
            .unwrap_or(self.number_rate_per_s)
    }
}

/// A gateway that could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: {detail}")]
    InvalidConfig { detail: String },
    #[error("failed to build the gateway's Graph API client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
}

/// Counters since start, and the current queue depth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Sends admitted to a queue.
    pub admitted: u64,
    /// Accepted by Meta and published.
    pub sent: u64,
    /// Accepted by Meta but not published (logged at error level).
    pub sent_unrecorded: u64,
    /// Graph errors returned to the client (after retries, for rate limits).
    pub graph_errors: u64,
    /// Graph calls that failed in transport (502).
    pub transport_errors: u64,
    /// Refused with 429: the number's queue was full.
    pub queue_full: u64,
    /// Refused with 400.
    pub invalid: u64,
    /// Refused with 503: shutting down or too many numbers.
    pub unavailable: u64,
    /// Graph calls retried after 130429 or 131056.
    pub graph_retries: u64,
    /// Publish attempts retried.
    pub publish_retries: u64,
    /// Sends that waited for the number's rate.
    pub number_rate_waits: u64,
    /// Sends that waited for the pair rate.
    pub pair_rate_waits: u64,
    /// Admitted, unfinished sends, all numbers.
    pub queue_depth: usize,
    /// Numbers with a worker.
    pub numbers: usize,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    sent: AtomicU64,
    sent_unrecorded: AtomicU64,
    graph_errors: AtomicU64,
    transport_errors: AtomicU64,
    queue_full: AtomicU64,
    invalid: AtomicU64,
    unavailable: AtomicU64,
    graph_retries: AtomicU64,
    publish_retries: AtomicU64,
    number_rate_waits: AtomicU64,
    pair_rate_waits: AtomicU64,
    queue_depth: AtomicUsize,
}

type Labels = Vec<(String, String)>;

struct Metrics {
    sends: Family<Labels, Counter>,
    queue_depth: Family<Labels, Gauge>,
    graph_latency: Histogram,
    rate_limit_waits: Family<Labels, Counter>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            sends: Family::default(),
            queue_depth: Family::default(),
            graph_latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            rate_limit_waits: Family::default(),
        };
        registry.register(
            "twinlog_gateway_sends",
            "Sends by outcome (sent, sent_unrecorded, graph_error, transport_error, queue_full, invalid, unavailable)",
            m.sends.clone(),
        );
        registry.register(
            "twinlog_gateway_queue_depth",
            "Admitted, unfinished sends per number",
            m.queue_depth.clone(),
        );
        registry.register(
            "twinlog_gateway_graph_latency_seconds",
            "Latency of Graph API send calls",
            m.graph_latency.clone(),
        );
        registry.register(
            "twinlog_gateway_rate_limit_waits",
            "Sends held back by a rate limit (number, pair) or retried after a Graph rate-limit error (graph_130429, graph_131056)",
            m.rate_limit_waits.clone(),
        );
        m
    }

    fn outcome(&self, outcome: &str) {
        self.sends
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    fn wait(&self, limit: &str) {
        self.rate_limit_waits
            .get_or_create(&vec![("limit".to_owned(), limit.to_owned())])
            .inc();
    }
}

/// One admitted send.
struct Job {
    seq: u64,
    request_id: String,
    body: Bytes,
    parsed: Value,
    send: SendRequest,
    attempts: u32,
    not_before: Option<Instant>,
    waited_number: bool,
    waited_pair: bool,
    reply: Option<oneshot::Sender<Reply>>,
    _depth: DepthGuard,
}

/// Counts a send in its number's depth from admission to outcome.
struct DepthGuard {
    depth: Arc<AtomicUsize>,
    total: Arc<Counters>,
    gauge: Gauge,
}

impl DepthGuard {
    /// Counts one more send; returns the guard and the depth before it.
    fn acquire(
        depth: &Arc<AtomicUsize>,
        total: &Arc<Counters>,
        gauge: &Gauge,
    ) -> (DepthGuard, usize) {
        let before = depth.fetch_add(1, Ordering::SeqCst);
        total.queue_depth.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        (
            DepthGuard {
                depth: Arc::clone(depth),
                total: Arc::clone(total),
                gauge: gauge.clone(),
            },
            before,
        )
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.depth.fetch_sub(1, Ordering::SeqCst);
        self.total.queue_depth.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

/// What the client gets.
struct Reply {
    status: StatusCode,
    body: Bytes,
    recorded: Option<bool>,
}

struct NumberEntry {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    gauge: Gauge,
}

struct Shared<B> {
    config: GatewayConfig,
    graph_base_url: String,
    pair_quota: Quota,
    bus: Arc<B>,
    client: reqwest::Client,
    metrics: Metrics,
    counters: Arc<Counters>,
    closing: AtomicBool,
    numbers: Mutex<BTreeMap<String, NumberEntry>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The send gateway. Serve [`Gateway::router`]; call [`Gateway::shutdown`]
/// to drain and join.
pub struct Gateway<B: Bus> {
    shared: Arc<Shared<B>>,
}

impl<B: Bus> Gateway<B> {
    /// Checks the configuration and registers the metrics. Spawns nothing:
    /// a number's worker starts with its first send.
    pub fn new(
        config: GatewayConfig,
        bus: Arc<B>,
        registry: &mut Registry,
    ) -> Result<Self, GatewayError> {
        let invalid = |detail: &str| {
            Err(GatewayError::InvalidConfig {
                detail: detail.to_owned(),
            })
        };
        let base = config.graph_base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return invalid("graph_base_url must be an http(s) URL");
        }
        // Not on the first send's path.
        twinlog_normalize::load_country_metadata();
        if config.access_token.is_empty() {
            return invalid("access_token is empty");
        }
        if config.number_rate_per_s == 0 || config.number_rate_overrides.values().any(|r| *r == 0) {
            return invalid("number rates must be at least 1 per second");
        }
        if config.queue_depth_max == 0 {
            return invalid("queue_depth_max must be at least 1");
        }
        let Some(pair_burst) = NonZeroU32::new(config.pair_burst) else {
            return invalid("pair_burst must be at least 1");
        };
        let Some(pair_quota) = Quota::with_period(Duration::from_millis(config.pair_interval_ms))
        else {
            return invalid("pair_interval_ms must be at least 1");
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(GRAPH_TIMEOUT_MS))
            .build()
            .map_err(|source| GatewayError::HttpClient { source })?;
        Ok(Gateway {
            shared: Arc::new(Shared {
                graph_base_url: base,
                pair_quota: pair_quota.allow_burst(pair_burst),
                config,
                bus,
                client,
                metrics: Metrics::register(registry),
                counters: Arc::new(Counters::default()),
                closing: AtomicBool::new(false),
                numbers: Mutex::new(BTreeMap::new()),
                workers: Mutex::new(Vec::new()),
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// `POST /v1/messages/{phone_number_id}`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/messages/{phone_number_id}", post(send_handler::<B>))
            .layer(DefaultBodyLimit::max(SEND_BODY_BYTES_MAX))
            .with_state(self)
    }

    pub fn stats(&self) -> GatewayStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        GatewayStats {
            admitted: get(&c.admitted),
            sent: get(&c.sent),
            sent_unrecorded: get(&c.sent_unrecorded),
            graph_errors: get(&c.graph_errors),
            transport_errors: get(&c.transport_errors),
            queue_full: get(&c.queue_full),
            invalid: get(&c.invalid),
            unavailable: get(&c.unavailable),
            graph_retries: get(&c.graph_retries),
            publish_retries: get(&c.publish_retries),
            number_rate_waits: get(&c.number_rate_waits),
            pair_rate_waits: get(&c.pair_rate_waits),
            queue_depth: c.queue_depth.load(Ordering::SeqCst),
            numbers: lock(&self.shared.numbers).len(),
        }
    }

    /// Refuses new sends (503), lets every worker finish the sends it
    /// admitted, and joins the workers.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Dropping the senders ends each worker once its queue is drained.
        let entries = std::mem::take(&mut *lock(&self.shared.numbers));
        drop(entries);
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            if let Err(error) = worker.await {
                tracing::error!(message = "gateway worker failed", %error);
            }
        }
    }
}

enum Unavailable {
    Closing,
    TooManyNumbers,
}

impl<B: Bus> Shared<B> {
    /// The queue of `number`, starting its worker on first use.
    fn number_entry(
        self: &Arc<Self>,
        number: &str,
    ) -> Result<(mpsc::Sender<Job>, Arc<AtomicUsize>, Gauge), Unavailable> {
        let mut numbers = lock(&self.numbers);
        // Checked under the lock, so no worker starts after shutdown took the map.
        if self.closing.load(Ordering::SeqCst) {
            return Err(Unavailable::Closing);
        }
        if let Some(e) = numbers.get(number) {
            return Ok((e.tx.clone(), Arc::clone(&e.depth), e.gauge.clone()));
        }
        if numbers.len() >= NUMBERS_MAX {
            return Err(Unavailable::TooManyNumbers);
        }
        let (tx, rx) = mpsc::channel(self.config.queue_depth_max);
        let gauge = self
            .metrics
            .queue_depth
            .get_or_create_owned(&vec![("phone_number_id".to_owned(), number.to_owned())]);
        let entry = NumberEntry {
            tx: tx.clone(),
            depth: Arc::new(AtomicUsize::new(0)),
            gauge: gauge.clone(),
        };
        let depth = Arc::clone(&entry.depth);
        numbers.insert(number.to_owned(), entry);
        let worker = Worker::new(Arc::clone(self), number.to_owned());
        lock(&self.workers).push(tokio::spawn(worker.run(rx)));
        Ok((tx, depth, gauge))
    }
}

fn error_body(code: &str, message: &str) -> Bytes {
    Bytes::from(
        json!({"error": {"message": message, "type": "twinlog_gateway", "code": code}}).to_string(),
    )
}

fn respond(reply: Reply, request_id: &str, retry_after_s: Option<u32>) -> Response {
    let mut response = (
        reply.status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("twinlog-request-id", v);
    }
    if let Some(recorded) = reply.recorded {
        headers.insert(
            "twinlog-recorded",
            HeaderValue::from_static(if recorded { "true" } else { "false" }),
        );
    }
    if let Some(s) = retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

fn valid_number(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= PHONE_NUMBER_ID_BYTES_MAX
        && number.bytes().all(|b| b.is_ascii_digit())
}

async fn send_handler<B: Bus>(
    State(gateway): State<Arc<Gateway<B>>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let shared = &gateway.shared;
    let request_id = uuid::Uuid::new_v4().to_string();
    let refuse = |status: StatusCode, code: &str, message: &str, outcome: &str| {
        shared.metrics.outcome(outcome);
        Reply {
            status,
            body: error_body(code, message),
            recorded: None,
        }
    };
    if !valid_number(&number) {
        shared.counters.invalid.fetch_add(1, Ordering::SeqCst);
        let reply = refuse(
            StatusCode::BAD_REQUEST,
            "invalid_phone_number_id",
            &format!("phone_number_id must be 1 to {PHONE_NUMBER_ID_BYTES_MAX} digits"),
            "invalid",
        );
        return respond(reply, &request_id, None);
    }
    let (parsed, send) = match parse_send(&body, Strictness::Envelope) {
        Ok(ok) => ok,
        Err(invalid) => {
            shared.counters.invalid.fetch_add(1, Ordering::SeqCst);
            let reply = refuse(
                StatusCode::BAD_REQUEST,
                "invalid_send",
                &invalid.to_string(),
                "invalid",
            );
            return respond(reply, &request_id, None);
        }
    };
    let unavailable = |message: &str| {
        shared.counters.unavailable.fetch_add(1, Ordering::SeqCst);
        let reply = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
            "unavailable",
        );
        respond(reply, &request_id, Some(shared.config.retry_after_s))
    };
    let (tx, depth, gauge) = match shared.number_entry(&number) {
        Ok(entry) => entry,
        Err(Unavailable::Closing) => return unavailable("the gateway is shutting down"),
        Err(Unavailable::TooManyNumbers) => {
            return unavailable(&format!("the gateway serves at most {NUMBERS_MAX} numbers"))
        }
    };
    let queue_full = || {
        shared.counters.queue_full.fetch_add(1, Ordering::SeqCst);
        let reply = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            &format!(
                "the queue of number {number} is full ({} sends); retry later",
                shared.config.queue_depth_max
            ),
            "queue_full",
        );
        respond(reply, &request_id, Some(shared.config.retry_after_s))
    };
    let (guard, before) = DepthGuard::acquire(&depth, &shared.counters, &gauge);
    if before >= shared.config.queue_depth_max {
        drop(guard);
        return queue_full();
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    let job = Job {
        seq: shared.seq.fetch_add(1, Ordering::SeqCst),
        request_id: request_id.clone(),
        body,
        parsed,
        send,
        attempts: 0,
        not_before: None,
        waited_number: false,
        waited_pair: false,
        reply: Some(reply_tx),
        _depth: guard,
    };
    match tx.try_send(job) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => return queue_full(),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return unavailable("the gateway is shutting down")
        }
    }
    drop(tx);
    shared.counters.admitted.fetch_add(1, Ordering::SeqCst);
    match reply_rx.await {
        Ok(reply) => respond(reply, &request_id, None),
        // Only if a send task panicked; logged by its worker.
        Err(_) => respond(
            Reply {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: error_body("internal", "the send ended without an outcome"),
                recorded: None,
            },
            &request_id,
            None,
        ),
    }
}

// ---------------------------------------------------------------------------
// The per-number worker.

/// Which Graph rate limit a retry answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraphLimit {
    Throughput,
    Pair,
}

/// What a send task hands back to its worker.
struct Done {
    customer: String,
    retry: Option<(Job, GraphLimit)>,
}

#[derive(Default)]
struct CustomerQueue {
    jobs: VecDeque<Job>,
    /// A Graph call for this customer is in flight.
    busy: bool,
    /// The pair limiter refused until then.
    pair_ready_at: Option<Instant>,
}

struct Worker<B: Bus> {
    shared: Arc<Shared<B>>,
    number: String,
    number_limiter: DefaultDirectRateLimiter,
    pair_limiter: DefaultKeyedRateLimiter<String>,
    customers: BTreeMap<String, CustomerQueue>,
    in_flight: JoinSet<Done>,
    in_flight_customers: BTreeMap<tokio::task::Id, String>,
    /// After a 130429: nothing is sent before then.
    paused_until: Option<Instant>,
    /// A number-rate cell taken and not yet used.
    cell_held: bool,
    dispatches: u64,
}

impl<B: Bus> Worker<B> {
    fn new(shared: Arc<Shared<B>>, number: String) -> Worker<B> {
        let rate = NonZeroU32::new(shared.config.rate_for(&number)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(NUMBER_BURST_COUNT).unwrap_or(NonZeroU32::MIN);
        let number_limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
        let pair_limiter = RateLimiter::keyed(shared.pair_quota);
        Worker {
            shared,
            number,
            number_limiter,
            pair_limiter,
            customers: BTreeMap::new(),
            in_flight: JoinSet::new(),
            in_flight_customers: BTreeMap::new(),
            paused_until: None,
            cell_held: false,
            dispatches: 0,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            let wake = self.dispatch();
            if !open && self.customers.is_empty() && self.in_flight.is_empty() {
                break;
            }
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => self.enqueue(job, false),
                    None => open = false,
                },
                joined = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    match joined {
                        Some(Ok((id, done))) => {
                            self.in_flight_customers.remove(&id);
                            self.finished(done);
                        }
                        Some(Err(error)) => {
                            let customer = self.in_flight_customers.remove(&error.id());
                            tracing::error!(message = "gateway send task failed", number = %self.number, %error);
                            if let Some(customer) = customer {
                                self.release(&customer);
                            }
                        }
                        None => {}
                    }
                },
                _ = sleep_until_opt(wake), if wake.is_some() => {},
            }
        }
        tracing::debug!(message = "gateway worker drained", number = %self.number);
    }

    fn enqueue(&mut self, job: Job, front: bool) {
        let queue = self
            .customers
            .entry(job.send.customer().to_owned())
            .or_default();
        if front {
            queue.jobs.push_front(job);
        } else {
            queue.jobs.push_back(job);
        }
    }

    /// The customer's call is over; forget an idle customer.
    fn release(&mut self, customer: &str) {
        if let Some(queue) = self.customers.get_mut(customer) {
            queue.busy = false;
            if queue.jobs.is_empty() {
                self.customers.remove(customer);
            }
        }
    }

    fn finished(&mut self, done: Done) {
        let Some((mut job, limit)) = done.retry else {
            self.release(&done.customer);
            return;
        };
        let counters = &self.shared.counters;
        counters.graph_retries.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        let attempt = job.attempts.saturating_sub(1);
        match limit {
            GraphLimit::Throughput => {
                self.shared.metrics.wait("graph_130429");
                let until = now + backoff(THROUGHPUT_BACKOFF_MS_BASE, attempt);
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
            }
            GraphLimit::Pair => {
                self.shared.metrics.wait("graph_131056");
                job.not_before = Some(now + backoff(self.shared.config.pair_interval_ms, attempt));
            }
        }
        tracing::debug!(message = "graph rate limit; retrying", number = %self.number, ?limit, attempts = job.attempts);
        self.enqueue(job, true);
        if let Some(queue) = self.customers.get_mut(&done.customer) {
            queue.busy = false;
        }
    }

    /// Starts every send the limits allow now. Returns when to try again
    /// (`None`: only a new job or a finished call can change anything).
    fn dispatch(&mut self) -> Option<Instant> {
        loop {
            if self.in_flight.len() >= IN_FLIGHT_PER_NUMBER_MAX {
                return None;
            }
            let now = Instant::now();
            if let Some(until) = self.paused_until {
                if until > now {
                    return Some(until);
                }
                self.paused_until = None;
            }
            // The oldest head among customers free to send, and the
            // earliest time a blocked one frees up.
            let mut best: Option<(u64, &String)> = None;
            let mut wake: Option<Instant> = None;
            for (customer, queue) in &self.customers {
                let Some(head) = queue.jobs.front() else {
                    continue;
                };
                if queue.busy {
                    continue;
                }
                let ready_at = [head.not_before, queue.pair_ready_at]
                    .into_iter()
                    .flatten()
                    .max();
                match ready_at {
                    Some(at) if at > now => wake = Some(wake.map_or(at, |w| w.min(at))),
                    _ => {
                        if best.is_none_or(|(seq, _)| head.seq < seq) {
                            best = Some((head.seq, customer));
                        }
                    }
                }
            }
            let Some((_, customer)) = best else {
                return wake;
            };
            let customer = customer.clone();
            if !self.cell_held {
                match self.number_limiter.check() {
                    Ok(()) => self.cell_held = true,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(self.number_limiter.clock().now());
                        self.mark_wait(&customer, GraphLimit::Throughput);
                        let at = now + wait;
                        return Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
            }
            if let Err(not_until) = self.pair_limiter.check_key(&customer) {
                let wait = not_until.wait_time_from(self.pair_limiter.clock().now());
                self.mark_wait(&customer, GraphLimit::Pair);
                if let Some(queue) = self.customers.get_mut(&customer) {
                    queue.pair_ready_at = Some(now + wait);
                }
                continue;
            }
            self.cell_held = false;
            let Some(queue) = self.customers.get_mut(&customer) else {
                continue;
            };
            let Some(mut job) = queue.jobs.pop_front() else {
                continue;
            };
            queue.busy = true;
            queue.pair_ready_at = None;
            job.not_before = None;
            self.dispatches += 1;
            if self.dispatches % PAIR_PRUNE_DISPATCHES == 0 {
                self.pair_limiter.retain_recent();
                self.pair_limiter.shrink_to_fit();
            }
            let handle = self.in_flight.spawn(perform(
                Arc::clone(&self.shared),
                self.number.clone(),
                customer.clone(),
                job,
            ));
            self.in_flight_customers.insert(handle.id(), customer);
        }
    }

    /// Counts a send held back by a limit, once per send and limit.
    fn mark_wait(&mut self, customer: &str, limit: GraphLimit) {
        let Some(job) = self
            .customers
            .get_mut(customer)
            .and_then(|q| q.jobs.front_mut())
        else {
            return;
        };
        let (flag, counter, label) = match limit {
            GraphLimit::Throughput => (
                &mut job.waited_number,
                &self.shared.counters.number_rate_waits,
                "number",
            ),
            GraphLimit::Pair => (
                &mut job.waited_pair,
                &self.shared.counters.pair_rate_waits,
                "pair",
            ),
        };
        if !*flag {
            *flag = true;
            counter.fetch_add(1, Ordering::SeqCst);
            self.shared.metrics.wait(label);
        }
    }
}

fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(16)).unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor).min(RATE_BACKOFF_MS_MAX))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------
// One Graph call and its outcome.

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Graph error code of an error body, if it has one.
fn graph_error_code(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("failed to call the Graph API")]
    Http(#[source] reqwest::Error),
    #[error("Graph API response is over {GRAPH_RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
}

async fn call_graph(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), CallError> {
    let mut response = client
        .post(url)
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(CallError::Http)?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CallError::Http)? {
        if out.len() + chunk.len() > GRAPH_RESPONSE_BYTES_MAX {
            return Err(CallError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(out)))
}

fn deliver(job: &mut Job, reply: Reply) {
    if let Some(tx) = job.reply.take() {
        if tx.send(reply).is_err() {
            tracing::debug!(message = "client gone; send completed", request_id = %job.request_id);
        }
    }
}

async fn perform<B: Bus>(
    shared: Arc<Shared<B>>,
    number: String,
    customer: String,
    mut job: Job,
) -> Done {
    job.attempts += 1;
    let url = format!("{}/{}/messages", shared.graph_base_url, number);
    let started = Instant::now();
    let result = call_graph(
        &shared.client,
        &url,
        &shared.config.access_token,
        job.body.clone(),
    )
    .await;
    shared
        .metrics
        .graph_latency
        .observe(started.elapsed().as_secs_f64());
    let counters = &shared.counters;
    let (status, body) = match result {
        Ok(ok) => ok,
        Err(error) => {
            counters.transport_errors.fetch_add(1, Ordering::SeqCst);
            shared.metrics.outcome("transport_error");
            tracing::warn!(message = "graph call failed; the message may or may not have been sent", request_id = %job.request_id, %number, error = %error_chain(&error));
            let reply = Reply {
                status: StatusCode::BAD_GATEWAY,
                body: error_body("graph_unreachable", &error_chain(&error)),
                recorded: None,
            };
            deliver(&mut job, reply);
            return Done {
                customer,
                retry: None,
            };
        }
    };
    if !status.is_success() {
        let code = graph_error_code(&body);
        let limit = match code {
            Some(130429) => Some(GraphLimit::Throughput),
            Some(131056) => Some(GraphLimit::Pair),
            _ => None,
        };
        if let Some(limit) = limit {
            if job.attempts < SEND_ATTEMPTS_MAX {
                return Done {
                    customer,
                    retry: Some((job, limit)),
                };
            }
        }
        counters.graph_errors.fetch_add(1, Ordering::SeqCst);
        shared.metrics.outcome("graph_error");
        tracing::debug!(message = "graph refused a send", request_id = %job.request_id, %number, %status, ?code);
        deliver(
            &mut job,
            Reply {
                status,
                body,
                recorded: None,
            },
        );
        return Done {
            customer,
            retry: None,
        };
    }
    let sent_at_ms = unix_ms_now();
    let recorded = record(&shared, &number, &job, &body, sent_at_ms).await;
    if recorded {
        counters.sent.fetch_add(1, Ordering::SeqCst);
        shared.metrics.outcome("sent");
    } else {
        counters.sent_unrecorded.fetch_add(1, Ordering::SeqCst);
        shared.metrics.outcome("sent_unrecorded");
    }
    deliver(
        &mut job,
        Reply {
            status,
            body,
            recorded: Some(recorded),
        },
    );
    Done {
        customer,
        retry: None,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Publishes the `api_send` event of a send Meta accepted; true once it is
/// durable. Retries with backoff; logs at error level when it gives up.
async fn record<B: Bus>(
    shared: &Shared<B>,
    number: &str,
    job: &Job,
    graph_body: &[u8],
    sent_at_ms: i64,
) -> bool {
    let wamid = serde_json::from_slice::<Value>(graph_body)
        .ok()
        .and_then(|v| {
            v.get("messages")?
                .get(0)?
                .get("id")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if wamid.is_empty() {
        tracing::error!(message = "graph accepted a send without a wamid; the send is not recorded", request_id = %job.request_id, %number);
        return false;
    }
    let event = api_send_event(number, job, &wamid, sent_at_ms);
    let record = twinlog_ingest::out_record(&event);
    for attempt in 0..PUBLISH_ATTEMPTS_MAX {
        if attempt > 0 {
            shared
                .counters
                .publish_retries
                .fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(backoff(PUBLISH_BACKOFF_MS_BASE, attempt - 1)).await;
        }
        match shared.bus.publish(vec![record.clone()]).await {
            Ok(_) => return true,
            Err(error) if error.is_limit() => {
                tracing::error!(message = "api_send event refused by the bus; the send is not recorded", request_id = %job.request_id, %number, %wamid, error = %error_chain(&error));
                return false;
            }
            Err(error) => {
                tracing::warn!(message = "failed to publish api_send event; retrying", request_id = %job.request_id, %number, attempt, error = %error_chain(&error));
            }
        }
    }
    tracing::error!(message = "failed to publish api_send event; the send is not recorded", request_id = %job.request_id, %number, %wamid, attempts = PUBLISH_ATTEMPTS_MAX);
    false
}

/// The `api_send` event of an accepted send.
fn api_send_event(number: &str, job: &Job, wamid: &str, sent_at_ms: i64) -> IngestEvent {
    let sent_at_s = sent_at_ms.div_euclid(1000);
    let message = to_message(&job.parsed, &job.send, wamid, sent_at_s);
    let request_json = String::from_utf8_lossy(&job.body).into_owned();
    IngestEvent {
        envelope: Some(Envelope {
            phone_number_id: number.to_owned(),
            customer: Some(Identity {
                phone: job.send.to.clone(),
                bsuid: job.send.recipient.clone(),
                country: twinlog_normalize::country_of(&job.send.to, &job.send.recipient),
                ..Identity::default()
            }),
            // The Graph answer has no timestamp: the send time stands in.
            meta_timestamp: sent_at_s,
            ingest_time_ms: sent_at_ms,
            body_sha256: Sha256::digest(&job.body).to_vec(),
            field: "api_send".to_owned(),
            ..Envelope::default()
        }),
        kind: Some(Kind::ApiSend(ApiSend {
            wamid: wamid.to_owned(),
            request_id: job.request_id.clone(),
            sent_at_ms,
            message: Some(message),
            request_json,
        })),
    }
}
