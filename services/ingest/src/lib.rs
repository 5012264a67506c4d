//! twinlog's webhook ingestor. This crate owns the HTTP edge that Meta
//! delivers to (`GET`/`POST /webhook`): the signature check, the encrypted
//! raw-body store with its retention, the dead letters and their
//! reprocessing, and the mapping of normalised events onto the bus
//! ([`out_record`]). It acknowledges a body only once every event of it is
//! durably on the bus.
//!
//! # A delivery
//!
//! `POST /webhook` takes a permit of the in-flight semaphore (none free:
//! 503 with `Retry-After` at once), refuses a `Content-Length` above
//! [`IngestConfig::body_bytes_max`] (413), requires an
//! `X-Hub-Signature-256: sha256=<hex>` header (401), reads the body with
//! the same limit while it streams (413) and at most [`BODY_READ_MS_MAX`]
//! (408), and checks the HMAC-SHA256 of the exact bytes under each
//! configured app secret in constant time (401). An authentic body is then:
//!
//! 1. stored raw, encrypted, with its receive time (wall clock, unix ms),
//!    its SHA-256 and a sequence id, and flushed (group commit: one fsync
//!    serves every body stored while the previous one ran);
//! 2. normalised with `ingest_time_ms` = the receive time;
//! 3. published to the bus with [`out_record`], in chunks within
//!    [`twinlog_bus::PUBLISH_RECORDS_MAX`] and
//!    [`twinlog_bus::PUBLISH_BYTES_MAX`]; 200 only once every publish
//!    returned. A bus error or overload is a 503 with `Retry-After`: Meta
//!    retries, and the engine deduplicates by natural key, so a republish is
//!    harmless.
//!
//! A body the normaliser refuses, or whose events a bus limit refuses,
//! becomes a **dead letter**: kept (encrypted) with its error text, counted,
//! logged, and answered 200, so that Meta does not retry a parser bug for 7
//! days. [`Ingestor::reprocess`] normalises the pending dead letters again,
//! with their original receive time, and publishes what now passes.
//!
//! # Retention
//!
//! Each body is encrypted (AES-256-GCM-SIV) under the key of its UTC day of
//! receipt. The day keys live in a small key file outside sled
//! (`DIR/raw-keys`, see `keys.rs`), because sled keeps old values in its
//! files. [`Ingestor::purge_expired`] destroys every day key whose day
//! *began* at least [`IngestConfig::raw_retention_ms`] ago, durably, and
//! then removes that day's bodies and dead letters from sled. A body is thus
//! kept at least the retention minus one day and never longer than the
//! retention (plus the time to the next purge; [`Ingestor::open`] purges
//! too). A body whose key is gone is unreadable forever, wherever its
//! ciphertext survives. Dead letters follow the same rule: a dead letter not
//! reprocessed within the retention is gone with its body.
//!
//! **Invariant:** no webhook body, and no dead letter's error text, is
//! written to disk in the clear.
//!
//! **Invariant:** a 200 to a `POST` means the body is durably stored and
//! either every event of it is durably on the bus or it is a durable dead
//! letter.
//!
//! **Invariant:** work is bounded: at most
//! [`IngestConfig::requests_in_flight_max`] deliveries run at once, each
//! holding at most [`IngestConfig::body_bytes_max`] body bytes; nothing
//! queues.

mod error;
mod http;
mod keys;
mod metrics;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use twinlog_bus::{
    check_publish, Bus, BusError, OutRecord, Topic, PUBLISH_BYTES_MAX, PUBLISH_RECORDS_MAX,
};
use twinlog_normalize::{IngestContext, NormalizeError, WEBHOOK_BODY_BYTES_MAX};
use twinlog_proto::v1::{ingest_event::Kind, IngestEvent};

pub use error::IngestError;
pub use keys::{DAY_KEYS_MAX, DAY_KEY_BYTES, KEY_FILE_MODE, KEY_FILE_NAME};
pub use store::{
    day_of, PurgeReport, StoredBody, CHUNK_BYTES_MAX, DAY_MS, DEAD_LETTER_ERROR_BYTES_MAX,
    STORE_DIR_NAME,
};

use metrics::{Metrics, Outcome, Reject};
use store::{BodyId, BodyRead, RawStore};

/// Default of [`IngestConfig::body_bytes_max`], and its largest allowed
/// value: the normaliser refuses anything larger.
pub const RAW_BODY_BYTES_MAX: usize = WEBHOOK_BODY_BYTES_MAX;
/// Default of [`IngestConfig::requests_in_flight_max`].
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Default of [`IngestConfig::retry_after_s`].
pub const RETRY_AFTER_S: u32 = 1;
/// Largest allowed [`IngestConfig::retry_after_s`].
pub const RETRY_AFTER_S_MAX: u32 = 3600;
/// Default of [`IngestConfig::raw_retention_ms`]: 14 days.
pub const RAW_RETENTION_MS: i64 = 14 * DAY_MS;
/// Shortest allowed [`IngestConfig::raw_retention_ms`]: one day, so that
/// the key of the current day is never destroyed.
pub const RAW_RETENTION_MS_MIN: i64 = DAY_MS;
/// Longest a `POST` body may take to arrive; then 408.
pub const BODY_READ_MS_MAX: u64 = 30_000;
/// Bodies up to this size are checked, sealed and normalised on the async
/// thread (microseconds of work); larger ones go to the blocking pool.
pub const INLINE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest `hub.challenge` echoed by the handshake.
pub const CHALLENGE_BYTES_MAX: usize = 1024;
/// Dead letters read per step of [`Ingestor::reprocess`].
pub const REPROCESS_BATCH_BODIES_MAX: usize = 64;
/// Most entries one call of [`Ingestor::bodies`] or
/// [`Ingestor::dead_letters`] returns; a larger `max` is clamped.
pub const LIST_ENTRIES_MAX: usize = 1024;

/// The normalising function. [`twinlog_normalize::normalize`] in
/// production; [`Ingestor::open_with_normalizer`] takes another one, to
/// replay dead letters across a parser fix in tests.
pub type Normalizer = fn(&[u8], &IngestContext) -> Result<Vec<IngestEvent>, NormalizeError>;

/// How to run an ingestor. [`Default`] gives everything but the secrets.
#[derive(Clone)]
pub struct IngestConfig {
    /// Meta app secrets, at least one. A body is authentic if its signature
    /// matches under any of them (two during a secret rotation).
    pub app_secrets: Vec<String>,
    /// The verify token of Meta's `GET` handshake.
    pub verify_token: String,
    /// Largest body accepted, 1 to [`RAW_BODY_BYTES_MAX`]; above it: 413.
    pub body_bytes_max: usize,
    /// Most deliveries in progress at once, at least 1; beyond it: 503.
    pub requests_in_flight_max: usize,
    /// The `Retry-After` of a 503, in seconds, 0 to [`RETRY_AFTER_S_MAX`].
    pub retry_after_s: u32,
    /// How long raw bodies (and dead letters) are kept, at least
    /// [`RAW_RETENTION_MS_MIN`]; see the crate docs for the exact rule.
    pub raw_retention_ms: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            app_secrets: Vec::new(),
            verify_token: String::new(),
            body_bytes_max: RAW_BODY_BYTES_MAX,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
            retry_after_s: RETRY_AFTER_S,
            raw_retention_ms: RAW_RETENTION_MS,
        }
    }
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field(
                "app_secrets",
                &format_args!("[{} redacted]", self.app_secrets.len()),
            )
            .field("verify_token", &"<redacted>")
            .field("body_bytes_max", &self.body_bytes_max)
            .field("requests_in_flight_max", &self.requests_in_flight_max)
            .field("retry_after_s", &self.retry_after_s)
            .field("raw_retention_ms", &self.raw_retention_ms)
            .finish()
    }
}

impl IngestConfig {
    fn validate(&self) -> Result<(), IngestError> {
        if self.app_secrets.is_empty() {
            return Err(IngestError::NoAppSecret);
        }
        if let Some(index) = self.app_secrets.iter().position(|s| s.is_empty()) {
            return Err(IngestError::EmptyAppSecret { index });
        }
        if self.verify_token.is_empty() {
            return Err(IngestError::EmptyVerifyToken);
        }
        let invalid = |detail: String| Err(IngestError::InvalidConfig { detail });
        if self.body_bytes_max == 0 || self.body_bytes_max > RAW_BODY_BYTES_MAX {
            return invalid(format!(
                "body_bytes_max is {}: set it between 1 and {RAW_BODY_BYTES_MAX}",
                self.body_bytes_max
            ));
        }
        if self.requests_in_flight_max == 0 || self.requests_in_flight_max > Semaphore::MAX_PERMITS
        {
            return invalid(format!(
                "requests_in_flight_max is {}: set it to at least 1 (default {REQUESTS_IN_FLIGHT_MAX})",
                self.requests_in_flight_max
            ));
        }
        if self.retry_after_s > RETRY_AFTER_S_MAX {
            return invalid(format!(
                "retry_after_s is {}: set it to at most {RETRY_AFTER_S_MAX}",
                self.retry_after_s
            ));
        }
        if self.raw_retention_ms < RAW_RETENTION_MS_MIN {
            return invalid(format!(
                "raw_retention_ms is {}: set it to at least {RAW_RETENTION_MS_MIN} (one day)",
                self.raw_retention_ms
            ));
        }
        Ok(())
    }
}

/// What [`Ingestor::reprocess`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReprocessReport {
    /// Pending dead letters looked at.
    pub examined: u64,
    /// Dead letters that now normalised and whose events were all
    /// published; marked done.
    pub republished: u64,
    /// Events those published.
    pub events_published: u64,
    /// Dead letters refused again; still pending, with the new error.
    pub still_failing: u64,
    /// Dead letters whose body is past its retention (its day key
    /// destroyed); the next purge removes them.
    pub expired: u64,
}

/// A dead letter, as [`Ingestor::dead_letters`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The sequence id of its body ([`StoredBody::seq`]).
    pub seq: u64,
    /// Why it was refused, the last time it was tried.
    pub error: String,
    /// True until a reprocessing publishes it.
    pub pending: bool,
}

/// Counters since the ingestor was opened (the same numbers as its
/// Prometheus metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Handshakes answered with the challenge.
    pub verified: u64,
    /// Deliveries stored and fully published (200).
    pub published: u64,
    /// Deliveries stored as dead letters (200).
    pub dead_lettered: u64,
    /// Requests refused, any reason (4xx, or 503 when no permit was free).
    pub rejected: u64,
    /// Of those, refused because every in-flight permit was taken (503).
    pub busy: u64,
    /// Deliveries answered 503 because the bus was overloaded.
    pub bus_overloaded: u64,
    /// Deliveries answered 503 because the bus failed.
    pub bus_failed: u64,
    /// Deliveries answered 500 because the raw-body store failed.
    pub store_failed: u64,
    /// Dead letters created (deliveries and bus limits).
    pub dead_letters: u64,
    /// Dead letters republished by [`Ingestor::reprocess`].
    pub dead_letters_republished: u64,
    /// Events published to the bus.
    pub events_published: u64,
    /// Bytes of authentic bodies stored.
    pub body_bytes: u64,
    /// sled flushes of the raw-body store (group commit: at most one per
    /// stored body, fewer under concurrency).
    pub store_flushes: u64,
}

/// The webhook ingestor: open it on a directory, then serve
/// [`Ingestor::router`].
pub struct Ingestor<B: Bus> {
    secrets: Vec<Zeroizing<Vec<u8>>>,
    verify_token: Zeroizing<Vec<u8>>,
    body_bytes_max: usize,
    retry_after_s: u32,
    raw_retention_ms: i64,
    bus: Arc<B>,
    store: Arc<RawStore>,
    metrics: Metrics,
    in_flight: Arc<Semaphore>,
    reprocess_lock: tokio::sync::Mutex<()>,
    normalizer: Normalizer,
}

/// Why a publish of one body's events did not complete.
enum PublishFailure {
    /// A bus limit refused the events: retrying cannot succeed. Nothing of
    /// this body was published.
    Limit(BusError),
    /// The bus is overloaded or failed: try later.
    Bus(BusError),
}

/// How a delivery of an authentic body ended.
pub(crate) enum Delivered {
    Published,
    DeadLettered,
    BusOverloaded,
    BusFailed,
    StoreFailed,
}

impl<B: Bus> Ingestor<B> {
    /// Opens (or creates) the ingestor's store in `dir`, registers its
    /// metrics in `registry`, and purges what is past its retention.
    /// Blocking: call it at startup or in `spawn_blocking`.
    pub fn open(
        dir: &Path,
        config: IngestConfig,
        bus: Arc<B>,
        registry: &mut Registry,
    ) -> Result<Self, IngestError> {
        Self::open_with_normalizer(dir, config, bus, registry, twinlog_normalize::normalize)
    }

    /// [`Ingestor::open`] with another normalising function: the seam that
    /// lets a test ingest with a "buggy" normaliser, then reopen with the
    /// real one and reprocess, as a deployment does across a parser fix.
    pub fn open_with_normalizer(
        dir: &Path,
        config: IngestConfig,
        bus: Arc<B>,
        registry: &mut Registry,
        normalizer: Normalizer,
    ) -> Result<Self, IngestError> {
        config.validate()?;
        twinlog_normalize::load_country_metadata();
        std::fs::create_dir_all(dir).map_err(|source| IngestError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = RawStore::open(dir)?;
        let ingestor = Ingestor {
            secrets: config
                .app_secrets
                .iter()
                .map(|s| Zeroizing::new(s.as_bytes().to_vec()))
                .collect(),
            verify_token: Zeroizing::new(config.verify_token.as_bytes().to_vec()),
            body_bytes_max: config.body_bytes_max,
            retry_after_s: config.retry_after_s,
            raw_retention_ms: config.raw_retention_ms,
            bus,
            store: Arc::new(store),
            metrics: Metrics::new(registry),
            in_flight: Arc::new(Semaphore::new(config.requests_in_flight_max)),
            reprocess_lock: tokio::sync::Mutex::new(()),
            normalizer,
        };
        ingestor.purge_expired(now_ms())?;
        Ok(ingestor)
    }

    /// The HTTP routes: `GET /webhook` (Meta's handshake) and
    /// `POST /webhook` (deliveries), nothing else.
    pub fn router(self: Arc<Self>) -> axum::Router {
        http::router(self)
    }

    /// Normalises every pending dead letter again, with its original
    /// receive time, publishes the events of those that now pass and marks
    /// them done; those still refused stay pending with the new error. One
    /// reprocessing runs at a time. A bus failure stops it
    /// ([`IngestError::ReprocessInterrupted`], with what was done); run it
    /// again later (a republish is harmless).
    pub async fn reprocess(&self) -> Result<ReprocessReport, IngestError> {
        let _one_at_a_time = self.reprocess_lock.lock().await;
        let mut report = ReprocessReport::default();
        let mut after: Option<BodyId> = None;
        let mut ticket: u64 = 0;
        loop {
            let store = self.store.clone();
            let ids =
                blocking(move || store.pending_dead_letters(after, REPROCESS_BATCH_BODIES_MAX))
                    .await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            for id in ids {
                report.examined += 1;
                let store = self.store.clone();
                let stored = match blocking(move || store.read_body(id)).await? {
                    BodyRead::Found(stored) => stored,
                    BodyRead::Missing | BodyRead::KeyDestroyed(_) => {
                        report.expired += 1;
                        continue;
                    }
                };
                let Some(body) = stored.body else {
                    report.expired += 1;
                    continue;
                };
                let events = match self.normalize(body, stored.receive_time_ms).await {
                    Ok(events) => events,
                    Err(refusal) => {
                        report.still_failing += 1;
                        ticket = ticket.max(self.rewrite_dead_letter(id, refusal.text).await?);
                        continue;
                    }
                };
                let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
                match self.publish(events).await {
                    Ok(()) => {
                        report.republished += 1;
                        report.events_published += count;
                        self.metrics.reprocessed.inc();
                        let store = self.store.clone();
                        let t = blocking(move || store.mark_dead_letter_done(id)).await?;
                        ticket = ticket.max(t.unwrap_or(0));
                        tracing::info!(
                            message = "dead letter republished",
                            seq = id.seq,
                            events = count
                        );
                    }
                    Err(PublishFailure::Limit(error)) => {
                        report.still_failing += 1;
                        ticket = ticket.max(self.rewrite_dead_letter(id, error.to_string()).await?);
                    }
                    Err(PublishFailure::Bus(source)) => {
                        self.store.commit(ticket).await?;
                        return Err(IngestError::ReprocessInterrupted {
                            done: report,
                            source,
                        });
                    }
                }
            }
        }
        self.store.commit(ticket).await?;
        Ok(report)
    }

    /// Destroys the day keys of every day that began at least
    /// `raw_retention_ms` before `now_ms` (durably, first), then removes
    /// those days' bodies and dead letters from sled. Blocking.
    pub fn purge_expired(&self, now_ms: i64) -> Result<PurgeReport, IngestError> {
        let Some(horizon_ms) = now_ms.checked_sub(self.raw_retention_ms) else {
            return Ok(PurgeReport::default());
        };
        if horizon_ms < 0 {
            return Ok(PurgeReport::default());
        }
        // Day d expires when d * DAY_MS + retention <= now.
        let report = self.store.purge_through(day_of(horizon_ms))?;
        if !report.days_destroyed.is_empty() {
            tracing::info!(
                message = "raw bodies past their retention destroyed",
                days = report.days_destroyed.len(),
                bodies = report.bodies_removed,
                dead_letters = report.dead_letters_removed
            );
        }
        Ok(report)
    }

    /// Counters since the ingestor was opened.
    pub fn stats(&self) -> IngestStats {
        let m = &self.metrics;
        IngestStats {
            verified: m.outcome_count(Outcome::Verified),
            published: m.outcome_count(Outcome::Published),
            dead_lettered: m.outcome_count(Outcome::DeadLettered),
            rejected: m.outcome_count(Outcome::Rejected),
            busy: m.rejected_count(Reject::Busy),
            bus_overloaded: m.outcome_count(Outcome::BusOverloaded),
            bus_failed: m.outcome_count(Outcome::BusFailed),
            store_failed: m.outcome_count(Outcome::StoreFailed),
            dead_letters: m.dead_letters.get(),
            dead_letters_republished: m.reprocessed.get(),
            events_published: m.events_published.get(),
            body_bytes: m.body_bytes.get(),
            store_flushes: self.store.flushes(),
        }
    }

    /// The oldest stored bodies, up to `max` (at most
    /// [`LIST_ENTRIES_MAX`]), decrypted where their day key still exists.
    /// Blocking.
    pub fn bodies(&self, max: usize) -> Result<Vec<StoredBody>, IngestError> {
        self.store.bodies(max.min(LIST_ENTRIES_MAX))
    }

    /// The oldest dead letters (pending and done), up to `max` (at most
    /// [`LIST_ENTRIES_MAX`]), except those past their retention. Blocking.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, IngestError> {
        self.store.dead_letters(max.min(LIST_ENTRIES_MAX))
    }

    /// Handles an authentic body: store, normalise, publish.
    pub(crate) async fn deliver(&self, body: Vec<u8>, receive_time_ms: i64) -> Delivered {
        let body: Arc<[u8]> = body.into();
        let put = if body.len() <= INLINE_BODY_BYTES_MAX {
            self.store.put_body(&body, receive_time_ms)
        } else {
            let store = self.store.clone();
            let stored_body = body.clone();
            blocking(move || store.put_body(&stored_body, receive_time_ms)).await
        };
        let (id, ticket) = match put {
            Ok(written) => written,
            Err(error) => return self.store_failed(&error),
        };
        self.metrics
            .body_bytes
            .inc_by(u64::try_from(body.len()).unwrap_or(u64::MAX));
        let events = match self.normalize(body, receive_time_ms).await {
            Ok(events) => events,
            Err(refusal) => {
                if let Err(error) = self.store.commit(ticket).await {
                    return self.store_failed(&error);
                }
                return self
                    .dead_letter(id, refusal.text, &refusal.log_text, "normalize_refused")
                    .await;
            }
        };
        // The raw body's flush and the events' publish overlap: the 200
        // waits for both. A crash between them answers nothing, so Meta
        // delivers again (and the engine deduplicates the events).
        let (committed, published) = tokio::join!(self.store.commit(ticket), self.publish(events));
        if let Err(error) = committed {
            return self.store_failed(&error);
        }
        match published {
            Ok(()) => Delivered::Published,
            Err(PublishFailure::Limit(error)) => {
                let text = error.to_string();
                self.dead_letter(id, text.clone(), &text, "bus_limit").await
            }
            Err(PublishFailure::Bus(error)) => {
                if error.is_overload() {
                    tracing::warn!(
                        message = "bus overloaded; delivery answered 503",
                        seq = id.seq,
                        %error
                    );
                    Delivered::BusOverloaded
                } else {
                    tracing::error!(
                        message = "bus failed; delivery answered 503",
                        seq = id.seq,
                        %error
                    );
                    Delivered::BusFailed
                }
            }
        }
    }

    fn store_failed(&self, error: &IngestError) -> Delivered {
        tracing::error!(
            message = "failed to store a webhook body; answered 500",
            error = %DisplayChain(error)
        );
        Delivered::StoreFailed
    }

    async fn dead_letter(
        &self,
        id: BodyId,
        text: String,
        log_text: &str,
        reason: &'static str,
    ) -> Delivered {
        let store = self.store.clone();
        let put = blocking(move || store.put_dead_letter(id, &text, false)).await;
        let ticket = match put {
            Ok(ticket) => ticket.unwrap_or(0),
            Err(error) => return self.store_failed(&error),
        };
        if let Err(error) = self.store.commit(ticket).await {
            return self.store_failed(&error);
        }
        self.metrics.dead_letters.inc();
        tracing::warn!(
            message = "webhook body kept as a dead letter",
            reason,
            seq = id.seq,
            error = log_text
        );
        Delivered::DeadLettered
    }

    async fn rewrite_dead_letter(&self, id: BodyId, text: String) -> Result<u64, IngestError> {
        let store = self.store.clone();
        let ticket = blocking(move || store.put_dead_letter(id, &text, false)).await?;
        Ok(ticket.unwrap_or(0))
    }

    async fn normalize(
        &self,
        body: impl AsRef<[u8]> + Send + 'static,
        receive_time_ms: i64,
    ) -> Result<Vec<IngestEvent>, Refusal> {
        let normalizer = self.normalizer;
        let ctx = IngestContext {
            ingest_time_ms: receive_time_ms,
        };
        let normalized = if body.as_ref().len() <= INLINE_BODY_BYTES_MAX {
            Ok(normalizer(body.as_ref(), &ctx))
        } else {
            tokio::task::spawn_blocking(move || normalizer(body.as_ref(), &ctx)).await
        };
        match normalized {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(error)) => Err(Refusal {
                text: error.to_string(),
                log_text: log_text(&error),
            }),
            Err(join) => {
                let text = format!("the normaliser failed: {join}");
                Err(Refusal {
                    log_text: text.clone(),
                    text,
                })
            }
        }
    }

    /// Publishes every event, in chunks within the bus limits. Every chunk
    /// is checked against the limits before the first is published, so a
    /// limit refusal publishes nothing.
    async fn publish(&self, events: Vec<IngestEvent>) -> Result<(), PublishFailure> {
        let chunks = chunk_records(events.iter().map(out_record).collect());
        for chunk in &chunks {
            check_publish(chunk).map_err(PublishFailure::Limit)?;
        }
        for chunk in chunks {
            let count = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            let start = Instant::now();
            match self.bus.publish(chunk).await {
                Ok(_) => {
                    self.metrics
                        .publish_seconds
                        .observe(start.elapsed().as_secs_f64());
                    self.metrics.events_published.inc_by(count);
                }
                Err(error) if error.is_limit() => return Err(PublishFailure::Limit(error)),
                Err(error) => return Err(PublishFailure::Bus(error)),
            }
        }
        Ok(())
    }
}

/// A body the normaliser refused: the full error text (stored encrypted)
/// and a text for the log that quotes no value of the body.
struct Refusal {
    text: String,
    log_text: String,
}

/// A normaliser error for the log: the variants that quote a value of the
/// body (`found`) lose it; paths name keys only.
fn log_text(error: &NormalizeError) -> String {
    match error {
        NormalizeError::NotAnInteger { path, .. } => {
            format!("expected an integer at {path}")
        }
        NormalizeError::NotWhatsApp { .. } => {
            "expected \"whatsapp_business_account\" at $.object".to_owned()
        }
        NormalizeError::TooLarge { .. }
        | NormalizeError::Empty
        | NormalizeError::NotUtf8 { .. }
        | NormalizeError::InvalidJson { .. }
        | NormalizeError::TooDeep { .. }
        | NormalizeError::Missing { .. }
        | NormalizeError::WrongType { .. } => error.to_string(),
        _ => "refused by the normaliser".to_owned(),
    }
}

/// Splits records into publishes within [`PUBLISH_RECORDS_MAX`] and
/// [`PUBLISH_BYTES_MAX`] (a record larger than that alone is a publish of
/// its own, which the bus then refuses as a limit).
fn chunk_records(records: Vec<OutRecord>) -> Vec<Vec<OutRecord>> {
    let mut chunks: Vec<Vec<OutRecord>> = Vec::new();
    let mut current: Vec<OutRecord> = Vec::new();
    let mut current_bytes: usize = 0;
    for record in records {
        let bytes = record.key.len().saturating_add(record.payload.len());
        if !current.is_empty()
            && (current.len() >= PUBLISH_RECORDS_MAX
                || current_bytes.saturating_add(bytes) > PUBLISH_BYTES_MAX)
        {
            chunks.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes = current_bytes.saturating_add(bytes);
        current.push(record);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IngestError> + Send + 'static,
) -> Result<T, IngestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IngestError::Task {
            detail: e.to_string(),
        })?
}

/// The wall clock in unix milliseconds (0 before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// An error with its cause chain, for a log line.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The input topic an event goes to.
pub fn topic_of(event: &IngestEvent) -> Topic {
    match &event.kind {
        Some(Kind::Inbound(_)) | Some(Kind::WebhookErrors(_)) => Topic::Inbound,
        Some(Kind::Status(_)) => Topic::Status,
        Some(Kind::Echo(_)) => Topic::AppEcho,
        Some(Kind::ApiSend(_)) => Topic::ApiSend,
        Some(Kind::HistoryChunk(_))
        | Some(Kind::HistoryMedia(_))
        | Some(Kind::HistoryDeclined(_))
        | Some(Kind::ContactSync(_))
        | Some(Kind::AccountUpdate(_))
        | Some(Kind::Tick(_))
        | Some(Kind::Unknown(_))
        | None => Topic::Sync,
    }
}

/// The bus key of an event: its business `phone_number_id`, or, for
/// account-level events that name no number (some `account_update`s), its
/// WABA id, so that every event of one number lands on one partition.
pub fn key_of(event: &IngestEvent) -> Vec<u8> {
    let envelope = event.envelope.as_ref();
    let number = envelope.map(|e| e.phone_number_id.as_str()).unwrap_or("");
    if !number.is_empty() {
        return number.as_bytes().to_vec();
    }
    envelope
        .map(|e| e.waba_id.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The bus record of a normalised event: its topic, its key, its protobuf
/// encoding, and its ingest time as the record timestamp.
pub fn out_record(event: &IngestEvent) -> OutRecord {
    OutRecord {
        topic: topic_of(event),
        key: key_of(event),
        payload: prost::Message::encode_to_vec(event),
        timestamp_ms: event
            .envelope
            .as_ref()
            .map(|e| e.ingest_time_ms.max(0))
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload_bytes: usize) -> OutRecord {
        OutRecord {
            topic: Topic::Inbound,
            key: b"1".to_vec(),
            payload: vec![0; payload_bytes],
            timestamp_ms: 0,
        }
    }

    #[test]
    fn chunks_respect_the_record_limit() {
        let chunks = chunk_records((0..PUBLISH_RECORDS_MAX + 1).map(|_| record(1)).collect());
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![PUBLISH_RECORDS_MAX, 1]
        );
        for chunk in &chunks {
            assert!(check_publish(chunk).is_ok());
        }
    }

    #[test]
    fn chunks_respect_the_byte_limit() {
        // Three of the largest payloads (plus their keys) fit; a fourth not.
        let big = twinlog_bus::PAYLOAD_BYTES_MAX;
        let chunks = chunk_records((0..5).map(|_| record(big)).collect());
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 2]);
        for chunk in &chunks {
            assert!(check_publish(chunk).is_ok());
        }
    }

    #[test]
    fn an_empty_body_has_no_chunks() {
        assert!(chunk_records(Vec::new()).is_empty());
    }

    #[test]
    fn the_config_is_validated_with_advice() {
        let ok = IngestConfig {
            app_secrets: vec!["s".to_owned()],
            verify_token: "t".to_owned(),
            ..IngestConfig::default()
        };
        assert!(ok.validate().is_ok());
        let none = IngestConfig {
            app_secrets: Vec::new(),
            ..ok.clone()
        };
        let err = none.validate().expect_err("no secret");
        assert!(err.to_string().contains("set at least one"), "{err}");
        let zero = IngestConfig {
            requests_in_flight_max: 0,
            ..ok.clone()
        };
        assert!(zero.validate().is_err());
        let short = IngestConfig {
            raw_retention_ms: 1000,
            ..ok.clone()
        };
        assert!(short.validate().is_err());
        let big = IngestConfig {
            body_bytes_max: RAW_BODY_BYTES_MAX + 1,
            ..ok
        };
        assert!(big.validate().is_err());
    }

    #[test]
    fn the_log_text_quotes_no_value() {
        let e = NormalizeError::NotAnInteger {
            path: "$.entry[0].time".to_owned(),
            found: "\"secret-ish\"".to_owned(),
        };
        assert!(!log_text(&e).contains("secret-ish"));
        assert!(e.to_string().contains("secret-ish"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = IngestConfig {
            app_secrets: vec!["hunter2".to_owned()],
            verify_token: "tok3n".to_owned(),
            ..IngestConfig::default()
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("tok3n"), "{d}");
    }
}
