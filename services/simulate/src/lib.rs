//! twinlog-simulate owns `twinlog simulate`'s engine: a seeded, reproducible
//! generator of realistic WhatsApp Business coexistence traffic ([`generate`]:
//! onboarding, history, contact syncs, customers, staff answering from the
//! app, a bot and campaigns through the Cloud API, statuses with PMP pricing,
//! edits and revokes, BSUID-only customers, groups, Meta's re-deliveries and
//! reordering), the exact audit-log outcome that traffic must have
//! ([`Expected`], checked against records with [`tally`]), and the shell that
//! delivers it ([`run`]: signed webhook POSTs, Cloud API sends to the gateway,
//! bounded concurrency, a per-number pacer, retries that honour
//! `Retry-After`). It knows nothing about the engine or the audit log beyond
//! the record shapes in `twinlog-proto`: the prediction is written from the
//! coexistence rules and checked against the real engine by this crate's
//! tests.
//!
//! # Determinism
//! [`generate`] is a pure function of the [`Scenario`]: no clock, no OS
//! randomness (a SplitMix64 stream seeded from `Scenario::seed`), only ordered
//! maps; the same scenario gives the same bytes on every machine.
//!
//! # What the prediction relies on
//! Every body [`generate`] emits has one outcome that does not depend on the
//! order the engine sees it in, with three exceptions that the traffic orders
//! itself: a number's `PARTNER_APP_INSTALLED` comes before its history (day 0
//! of history), live messages that a history chunk repeats come before that
//! chunk (the chunk counts them as duplicates), and a history media follow-up
//! comes after the chunk with its placeholder (an enrichment, not a new
//! message). Reordering keeps these pairs in order, and [`run`] waits for every
//! earlier delivery before it starts a delivery marked `barrier` (and then
//! [`BARRIER_GAP_MS`] more, so its ingest time is strictly later).
//!
//! Day 0 of history is the install's time when the engine shard that folds
//! the history has seen the install, else the history's ingest time. An
//! `account_update` carries no `phone_number_id` and is keyed by its WABA, so
//! with several partitions it may land on another shard. The margins hold for
//! either: history reaches 175 days back (Meta and the engine: 180), media
//! follow-ups only 12 days (14), so the prediction holds as long as the
//! traffic is delivered within 2 days of `start_unix_s`.

mod generate;
mod rng;
mod run;

use std::collections::BTreeMap;

use serde::Serialize;
use twinlog_proto::v1::{audit_record::Fact as F, AuditRecord, InputKind, RevisionKind};

pub use generate::generate;
pub use run::{run, signature};

/// Most business numbers in one scenario.
pub const NUMBERS_MAX: u32 = 1_000;
/// Most customers per business number.
pub const CUSTOMERS_PER_NUMBER_MAX: u32 = 100_000;
/// Most events in one scenario (the traffic is held in memory).
pub const EVENTS_MAX: u64 = 2_000_000;
/// Largest reorder window.
pub const REORDER_WINDOW_MAX: u32 = 1_000;
/// Most requests in flight in [`run`].
pub const CONCURRENCY_MAX: usize = 1_024;
/// Attempts per delivery in [`run`]: the first and the retries after 503/429.
pub const ATTEMPTS_MAX: u32 = 5;
/// Longest `Retry-After` honoured; a longer one is cut to this.
pub const RETRY_AFTER_S_MAX: u64 = 60;
/// Wait before a retry when a 503/429 carries no usable `Retry-After`;
/// doubles per attempt.
pub const RETRY_BACKOFF_MS_BASE: u64 = 200;
/// Timeout of one HTTP request in [`run`].
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest gateway response read.
pub const GATEWAY_RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Pause after the deliveries before a barrier have finished, so the
/// barrier delivery is received in a later millisecond.
pub const BARRIER_GAP_MS: u64 = 2;
/// Meta's throughput for a coexistence number, messages per second.
pub const DEFAULT_NUMBER_RATE_PER_S: u32 = 20;

/// What to generate. Every field is part of the seed: the same scenario gives
/// the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub seed: u64,
    /// Business numbers, each with its own `phone_number_id`, display number
    /// and WhatsApp Business Account (at most [`NUMBERS_MAX`]).
    pub numbers: u32,
    /// Customers of each number (at least 1, at most [`CUSTOMERS_PER_NUMBER_MAX`]).
    pub customers_per_number: u32,
    /// Events to generate: normalised events of unique webhook bodies plus
    /// Cloud API sends. Approximate (a number's onboarding and its last
    /// conversation are never cut); [`Expected::events`] says exactly.
    pub events: u64,
    /// Meta timestamps start here (unix seconds).
    pub start_unix_s: i64,
    /// Meta re-deliveries of an already-delivered body, per thousand bodies.
    pub duplicate_per_mille: u32,
    /// Bodies are shuffled within consecutive windows of this many
    /// deliveries (0 or 1: no reordering).
    pub reorder_window: u32,
    /// Conversations that are group traffic (out of scope for coexistence),
    /// per thousand.
    pub group_per_mille: u32,
    /// Bot and campaign messages become [`Delivery::Send`]s for the gateway,
    /// instead of only their status webhooks.
    pub sends_via_gateway: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            numbers: 2,
            customers_per_number: 50,
            events: 1_000,
            // 2026-01-01T00:00:00Z: PMP pricing, BSUIDs in use.
            start_unix_s: 1_767_225_600,
            duplicate_per_mille: 20,
            reorder_window: 8,
            group_per_mille: 5,
            sends_via_gateway: false,
        }
    }
}

impl Scenario {
    /// Checks the limits. [`generate`] clamps a scenario that breaks them to
    /// the nearest value within them; the CLI calls this first.
    pub fn validate(&self) -> Result<(), SimulateError> {
        let bad = |detail: String| Err(SimulateError::InvalidScenario { detail });
        if self.numbers == 0 || self.numbers > NUMBERS_MAX {
            return bad(format!("numbers must be 1 to {NUMBERS_MAX}"));
        }
        if self.customers_per_number == 0 || self.customers_per_number > CUSTOMERS_PER_NUMBER_MAX {
            return bad(format!(
                "customers_per_number must be 1 to {CUSTOMERS_PER_NUMBER_MAX}"
            ));
        }
        if self.events > EVENTS_MAX {
            return bad(format!("events must be at most {EVENTS_MAX}"));
        }
        if self.duplicate_per_mille > 1000 || self.group_per_mille > 1000 {
            return bad("per-mille rates must be at most 1000".to_owned());
        }
        if self.reorder_window > REORDER_WINDOW_MAX {
            return bad(format!(
                "reorder_window must be at most {REORDER_WINDOW_MAX}"
            ));
        }
        // History reaches 180 days back; Meta timestamps must stay positive.
        if self.start_unix_s < 200 * 86_400 {
            return bad("start_unix_s must be at least 200 days after the epoch".to_owned());
        }
        Ok(())
    }
}

/// Where [`run`] delivers the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The webhook endpoint (`POST`), e.g. `http://127.0.0.1:8080/webhook`.
    pub webhook_url: String,
    /// The send gateway's base URL; sends go to `{gateway_url}/v1/messages/{phone_number_id}`.
    /// Required when the traffic holds [`Delivery::Send`]s.
    pub gateway_url: Option<String>,
    /// Key of `X-Hub-Signature-256`.
    pub app_secret: String,
    /// Requests in flight at once (1 to [`CONCURRENCY_MAX`]).
    pub concurrency: usize,
    /// Messages per second each number sends (app echoes and API sends).
    pub number_rate_per_s: u32,
    /// A Graph API simulator's base URL (`http://host:port`, no version).
    /// Meta knows that a customer wrote before it delivers the webhook, and
    /// only then accepts free-form replies (else 131047); a simulator does
    /// not see the webhooks simulate posts to twinlog, so before it starts,
    /// [`run`] tells it every customer who writes during the run
    /// (`POST /sim/inbound`).
    pub meta_url: Option<String>,
}

/// Generated traffic and what it must produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// In delivery order.
    pub deliveries: Vec<Delivery>,
    pub expected: Expected,
}

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A Meta webhook body, POSTed signed to the webhook URL.
    Webhook {
        body: Vec<u8>,
        /// The `phone_number_id` it concerns (the pacer's key).
        number: String,
        /// The same bytes were delivered earlier: every event in it must come
        /// out as a duplicate.
        duplicate: bool,
        /// Messages the number sent that this body reports (app echoes,
        /// edits and revokes): [`run`] paces them with the number's sends.
        sends: u32,
        /// [`run`] starts it only after every earlier delivery has finished
        /// (history after onboarding and after the live messages it repeats,
        /// media follow-ups after their placeholder).
        barrier: bool,
    },
    /// A Cloud API send body, POSTed to `{gateway_url}/v1/messages/{phone_number_id}`.
    Send {
        phone_number_id: String,
        body: Vec<u8>,
    },
}

/// What the audit log must contain after the traffic, and how the inputs end.
///
/// Inputs: every normalised event of a unique webhook body, and every
/// accepted API send, is appended exactly once (`events`); every event of a
/// duplicate delivery is a duplicate (`duplicate_events`); nothing is
/// rejected. In gateway mode, `events` and `records.api_sends` assume the
/// gateway accepted every send (compare with `RunReport::sends_ok`), and
/// the status webhooks of those sends are left to the Graph API simulator:
/// they are not in this prediction (its `SimStats::webhooks_delivered`
/// counts them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Webhook deliveries, duplicates included.
    pub webhook_deliveries: u64,
    /// Distinct webhook bodies.
    pub unique_bodies: u64,
    /// Webhook deliveries that repeat an earlier body's bytes.
    pub duplicate_deliveries: u64,
    /// [`Delivery::Send`]s.
    pub sends: u64,
    /// Inputs that must be appended: normalised events of the unique bodies,
    /// plus one `api_send` per send.
    pub events: u64,
    /// Inputs that must be duplicates: the events of duplicate deliveries.
    pub duplicate_events: u64,
    /// Inputs that must be rejected: always 0.
    pub rejected: u64,
    /// The records, by fact.
    pub records: RecordCounts,
}

/// Audit records counted by fact (see `audit.proto`). [`tally`] counts a log's
/// records the same way, so a test compares the two with `==`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordCounts {
    /// Every record.
    pub total: u64,
    /// `MessageRecorded` with input kind `INBOUND`: customers writing.
    pub inbound_messages: u64,
    /// `MessageRecorded`, `ECHO`: staff writing from the Business App.
    pub echoes: u64,
    /// `MessageRecorded`, `API_SEND`: sends recorded by the gateway.
    pub api_sends: u64,
    /// `MessageRecorded`, `HISTORY_CHUNK`: imported history messages.
    pub history_messages: u64,
    /// `MessageRecorded`, `HISTORY_MEDIA`: media that arrived before its
    /// placeholder (0: the traffic orders them).
    pub history_media_messages: u64,
    /// `RevisionRecorded`, `EDIT`, by the customer.
    pub customer_edits: u64,
    /// `RevisionRecorded`, `REVOKE`, by the customer.
    pub customer_revokes: u64,
    /// `RevisionRecorded`, `EDIT`, from the app.
    pub app_edits: u64,
    /// `RevisionRecorded`, `REVOKE`, from the app.
    pub app_revokes: u64,
    /// `MediaEnriched`: history media follow-ups.
    pub media_enriched: u64,
    /// `StatusRecorded`, all.
    pub statuses: u64,
    /// `StatusRecorded` by `status` (sent, delivered, read, failed).
    pub statuses_by_status: BTreeMap<String, u64>,
    /// `StatusRecorded` with effect `ORPHANED` (the message is unknown: API
    /// sends that did not go through the gateway).
    pub statuses_orphaned: u64,
    /// `StatusRecorded` carrying a `pricing` object.
    pub statuses_priced: u64,
    /// `HistoryChunkRecorded`: one per thread of a chunk, one for a chunk
    /// without threads.
    pub history_chunks: u64,
    /// Sum of `HistoryChunkRecorded.duplicates`: history messages already
    /// known from live traffic.
    pub history_duplicates: u64,
    /// Sum of `HistoryChunkRecorded.too_old`.
    pub history_too_old: u64,
    /// `HistoryChunkRecorded` with `complete` (progress 100).
    pub history_complete: u64,
    /// `HistoryDeclinedRecorded`.
    pub history_declined: u64,
    /// `ContactSynced`.
    pub contact_syncs: u64,
    /// `AccountUpdated`.
    pub account_updates: u64,
    /// `SyncWindowOpened`.
    pub sync_windows_opened: u64,
    /// `OutOfScope` with input kind `INBOUND` (group messages).
    pub out_of_scope_messages: u64,
    /// `OutOfScope` with input kind `STATUS` (group statuses).
    pub out_of_scope_statuses: u64,
    /// `Rejected`.
    pub rejected: u64,
    /// `UnknownRecorded`.
    pub unknown: u64,
    /// Any other fact (sync windows closed, heartbeats, erasures, webhook
    /// errors): 0 for generated traffic, which holds no clock tick.
    pub other: u64,
}

/// Counts audit records by fact, as [`RecordCounts`] defines.
pub fn tally<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> RecordCounts {
    let mut c = RecordCounts::default();
    for r in records {
        c.total += 1;
        let kind = InputKind::try_from(r.input_kind).unwrap_or(InputKind::Unspecified);
        match &r.fact {
            Some(F::MessageRecorded(_)) => match kind {
                InputKind::Inbound => c.inbound_messages += 1,
                InputKind::Echo => c.echoes += 1,
                InputKind::ApiSend => c.api_sends += 1,
                InputKind::HistoryChunk => c.history_messages += 1,
                InputKind::HistoryMedia => c.history_media_messages += 1,
                _ => c.other += 1,
            },
            Some(F::RevisionRecorded(rev)) => {
                let edit = rev.kind == RevisionKind::Edit as i32;
                let app = rev.by == twinlog_proto::v1::Channel::App as i32;
                match (edit, app) {
                    (true, true) => c.app_edits += 1,
                    (true, false) => c.customer_edits += 1,
                    (false, true) => c.app_revokes += 1,
                    (false, false) => c.customer_revokes += 1,
                }
            }
            Some(F::MediaEnriched(_)) => c.media_enriched += 1,
            Some(F::StatusRecorded(s)) => {
                c.statuses += 1;
                *c.statuses_by_status.entry(s.status.clone()).or_default() += 1;
                if s.effect == twinlog_proto::v1::StatusEffect::Orphaned as i32 {
                    c.statuses_orphaned += 1;
                }
                if s.pricing.is_some() {
                    c.statuses_priced += 1;
                }
            }
            Some(F::HistoryChunkRecorded(h)) => {
                c.history_chunks += 1;
                c.history_duplicates += u64::from(h.duplicates);
                c.history_too_old += u64::from(h.too_old);
                if h.complete {
                    c.history_complete += 1;
                }
            }
            Some(F::HistoryDeclined(_)) => c.history_declined += 1,
            Some(F::ContactSynced(_)) => c.contact_syncs += 1,
            Some(F::AccountUpdated(_)) => c.account_updates += 1,
            Some(F::SyncWindowOpened(_)) => c.sync_windows_opened += 1,
            Some(F::OutOfScope(o)) => {
                if o.kind == InputKind::Status as i32 {
                    c.out_of_scope_statuses += 1;
                } else {
                    c.out_of_scope_messages += 1;
                }
            }
            Some(F::Rejected(_)) => c.rejected += 1,
            Some(F::UnknownRecorded(_)) => c.unknown += 1,
            _ => c.other += 1,
        }
    }
    c
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Webhook deliveries POSTed (each once, however many attempts).
    pub posted: u64,
    /// Webhook deliveries that got a 200. Nothing else counts.
    pub acknowledged: u64,
    /// Attempts repeated after a 503 or 429 (webhooks and sends).
    pub retried: u64,
    /// Webhook deliveries that never got a 200.
    pub failed: u64,
    /// Every HTTP status answered, all attempts, webhooks and sends.
    pub by_status: BTreeMap<u16, u64>,
    /// Attempts that got no HTTP answer (connection refused, timeout).
    pub transport_errors: u64,
    /// Sends the gateway answered with a 2xx.
    pub sends_ok: u64,
    /// Sends that never got a 2xx.
    pub sends_failed: u64,
    /// Sends whose answer named the wamid Meta gave (`messages[0].id`).
    pub wamids_from_gateway: u64,
    pub elapsed_ms: u64,
}

/// Why [`run`] could not deliver the traffic. An HTTP error answer is not an
/// error: it is counted in the [`RunReport`].
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid scenario: {detail}")]
    InvalidScenario { detail: String },
    #[error("invalid target: {detail}")]
    InvalidTarget { detail: String },
    #[error("the traffic holds {sends} sends but the target has no gateway_url")]
    NoGateway { sends: u64 },
    #[error("failed to build the HTTP client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("the Graph API simulator at meta_url refused: {detail}")]
    MetaSimulator { detail: String },
    #[error("a delivery task failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}
