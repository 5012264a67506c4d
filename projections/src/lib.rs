//! Pure folds from audit records to the views that CRMs, finance and
//! operations read. This crate owns the read-side rules: contacts,
//! conversations and their timelines, the customer-service window, the
//! bot/human handoff, number health (sync, heartbeat, disconnection,
//! throughput, eligibility) and the billing ledger (rate card, regimes,
//! double-entry entries, aggregates, savings, reconciliation with Meta).
//! Like the engine, it does no IO, reads no clock and no randomness, and
//! keeps every collection ordered: the same records give the same views and
//! the same bytes. The services (workers, sled storage, query API, Kafka
//! outputs) call it; it knows nothing about them.
//!
//! # Use
//!
//! One [`Views`] per audit shard. Feed it every record in seq order, with
//! the record's decrypted [`Personal`] when the vault can open it:
//!
//! ```
//! use twinlog_projections::{Config, ProjectionInput, RateCard, Views};
//! # use twinlog_proto::v1::AuditRecord;
//! # let records: Vec<AuditRecord> = Vec::new();
//! let card = RateCard::parse(include_str!("../ratecards/example.csv")).expect("card");
//! let config = Config::new(card);
//! let mut views = Views::default();
//! for record in &records {
//!     let changes = views.apply(&config, ProjectionInput { record, personal: None });
//!     // store the views with views.applied_through() in one batch, publish `changes`
//!     # let _ = changes;
//! }
//! let digest = views.digest(); // equal for an incremental and a rebuilt view
//! # let _ = digest;
//! ```
//!
//! A worker stores [`Views::snapshot_bytes`] (a `ViewsSnapshot`: the rows
//! and the working state behind them) in the same batch as
//! `applied_through`, and resumes with [`Views::from_snapshot_bytes`].
//! [`Views::apply`] is idempotent: a record whose seq is not above
//! [`Views::applied_through`] changes nothing and returns no change.
//! It never fails: every record, however odd, is folded (unknown facts are
//! ignored).
//!
//! # Rules
//!
//! - **Window.** A live customer message opens (or extends) the 24-hour
//!   customer-service window; app-side and API sends never do, nor does
//!   history.
//! - **Handoff.** A live app-side echo (message or revision) puts the
//!   conversation in `human` hands until `echo time + handoff_quiet_s`,
//!   with a [`Change::Handoff`]; every later echo extends it. When a record
//!   arrives whose time (the largest of its Meta timestamp, ingest time and
//!   fact time) reaches that end, the conversation goes back to the `bot`,
//!   with another [`Change::Handoff`]. No clock: only record times.
//! - **Forget.** A `CustomerErased` record empties the customer's personal
//!   fields (names, phones, BSUIDs, username, content of messages and
//!   revisions), and personal content given later for that customer is
//!   ignored. Counts, statuses, types, handoff and billing stay. A rebuild
//!   without the destroyed key gives the same views. To keep that true,
//!   content sealed under another customer than the conversation's (a
//!   revision or media follow-up naming someone else) is not shown.
//! - **Changes.** [`Views::apply`] returns what it changed, sorted and
//!   without repeats: the rows to re-read and publish (contact,
//!   conversation, number health, billing aggregate, savings, ledger entry)
//!   and the events a bot or CRM acts on ([`Change::Handoff`],
//!   [`Change::CustomerErased`]). [`Change::to_event`] gives the
//!   `ChangeEvent` of `views.proto`.
//!
//! # Billing
//!
//! Channels: `app` (free), `api` (priced), `customer` (free). API messages
//! are priced from their status webhooks' `pricing`, by the message's date:
//!
//! | regime | dates | charged |
//! |---|---|---|
//! | `cbp` | until 2025-06-30 (and any `pricing_model: CBP`) | once per conversation (its `conversation.id`, else 24 h per customer × category) at the card's rate; service free from 2024-11-01; free entry point and Meta's free types free |
//! | `pmp` | 2025-07-01 – 2026-09-30 | per delivered message, when `pricing.type` is `regular` (or `billable` without a type); service, free entry point and `free_*` types free |
//! | `pmp_2026` | from 2026-10-01 | as `pmp`, and service messages beyond the number's monthly free tier ([`BillingConfig::service_free_tier_per_month`], counted by the ledger per UTC month, delivered messages only) at the card's `service` rate |
//!
//! Entries are immutable and balanced ([`LedgerEntry`]): `PENDING` at `sent`
//! (Dr pending charges / Cr pending payable), `POSTED` at the first of
//! `delivered`/`read`/`played` once some status carried `pricing` (the
//! pending amount reversed, Dr charges / Cr payable for the final amount),
//! `VOIDED` at `failed` (the pending amount reversed), `CORRECTED` when a
//! later `pricing` changes a posted verdict (the difference).
//!
//! # Rate card format
//!
//! CSV text (`RateCard::parse(&str)`; see `ratecards/example.csv`). Blank
//! lines and lines starting with `#` are ignored; fields may be quoted
//! (RFC 4180, no line breaks inside). The first other line is the header:
//!
//! ```text
//! market,countries,category,effective_from,currency,rate_micros
//! North America,US CA,marketing,2025-07-01,USD,25000
//! North America,,marketing,2026-01-01,USD,26000
//! Other,*,marketing,2025-07-01,USD,60400
//! ```
//!
//! - `market`: a name, as Meta's rate card groups countries ("North
//!   America", "Rest of Western Europe", …).
//! - `countries`: the market's ISO 3166-1 alpha-2 codes, separated by
//!   spaces, on the market's first line (later lines may leave it empty or
//!   repeat it exactly). `*` makes the market the catch-all for countries no
//!   market lists, and for messages whose country is unknown. A country
//!   belongs to one market.
//! - `category`: Meta's pricing category (`marketing`, `utility`,
//!   `authentication`, `authentication_international`, `service`, …);
//!   case and `-`/`_` do not matter.
//! - `effective_from`: `YYYY-MM-DD`; a message uses the latest row of its
//!   market × category not after its day (UTC). Under CBP the rate prices a
//!   conversation, under PMP a message.
//! - `currency`: ISO 4217, the same on every line.
//! - `rate_micros`: a non-negative integer, millionths of the currency.
//!
//! A bad line is a [`RateCardError`] that names it.

mod change;
mod crm;
pub mod day;
pub mod eligibility;
pub mod encode;
mod health;
mod ledger;
pub mod ratecard;
pub mod reconcile;
mod snapshot;

use std::collections::BTreeSet;

use twinlog_proto::v1::{
    audit_record::Fact, AuditRecord, BillingAggregate, ContactRow, LedgerEntry, NumberHealth,
    Personal, Savings,
};

pub use change::{Change, Handoff};
pub use crm::{Conversation, ConversationId};
pub use day::Day;
pub use eligibility::{eligibility, Eligibility, EligibilityError};
pub use health::{heartbeat_days_left, heartbeat_seconds_left};
pub use ledger::{CountryTotal, Reason, Regime};
pub use ratecard::{Rate, RateCard, RateCardError};
pub use reconcile::{
    add_totals, parse_pricing_analytics, reconcile, reconcile_totals, Discrepancy, LedgerTotals,
    MetaTotals, ReconcileError,
};
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT};

/// The settings of the read-side rules. Durations are seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a conversation stays with a human after an app-side echo.
    pub handoff_quiet_s: i64,
    /// The customer-service window (Meta: 24 h).
    pub window_s: i64,
    /// The inactivity disconnect after the last app-side activity (Meta: about 14 days).
    pub heartbeat_expiry_s: i64,
    /// The per-number send limit of Coexistence numbers (Meta: 20 msg/s).
    pub throughput_limit_per_s: u32,
    pub billing: BillingConfig,
}

/// The billing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingConfig {
    pub rate_card: RateCard,
    /// From 2026-10-01: delivered service messages free per number and month.
    pub service_free_tier_per_month: u64,
    /// The template an app message sent outside the window would have needed.
    pub savings_template_category: String,
}

/// Default quiet period of a human handoff: 30 minutes.
pub const HANDOFF_QUIET_S_DEFAULT: i64 = 30 * 60;
/// Default monthly free tier of service messages (from 2026-10-01).
pub const SERVICE_FREE_TIER_PER_MONTH_DEFAULT: u64 = 1_000;

impl Config {
    /// The defaults, with a rate card.
    pub fn new(rate_card: RateCard) -> Config {
        Config {
            handoff_quiet_s: HANDOFF_QUIET_S_DEFAULT,
            window_s: day::DAY_S,
            heartbeat_expiry_s: 14 * day::DAY_S,
            throughput_limit_per_s: 20,
            billing: BillingConfig {
                rate_card,
                service_free_tier_per_month: SERVICE_FREE_TIER_PER_MONTH_DEFAULT,
                savings_template_category: "utility".to_string(),
            },
        }
    }
}

impl Default for Config {
    /// The defaults with an empty rate card: every billable message is `no_rate`.
    fn default() -> Config {
        Config::new(RateCard::default())
    }
}

/// One step of the fold: an audit record (its `seq` orders the fold) and
/// its sealed part, decrypted, when the caller could open it (`None` when
/// absent or the customer was forgotten).
#[derive(Debug, Clone, Copy)]
pub struct ProjectionInput<'a> {
    pub record: &'a AuditRecord,
    pub personal: Option<&'a Personal>,
}

/// Every view of one audit shard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Views {
    applied_through: Option<u64>,
    clock: i64,
    crm: crm::Crm,
    health: health::Health,
    ledger: ledger::Ledger,
}

/// The changes of one step, deduplicated and ordered.
#[derive(Debug, Default)]
pub(crate) struct Changes(BTreeSet<Change>);

impl Changes {
    pub(crate) fn push(&mut self, change: Change) {
        self.0.insert(change);
    }
}

impl Views {
    /// Folds one record into every view and says what changed. A record
    /// whose seq is not above [`Views::applied_through`] changes nothing.
    pub fn apply(&mut self, config: &Config, input: ProjectionInput<'_>) -> Vec<Change> {
        let record = input.record;
        if self.applied_through.is_some_and(|t| record.seq <= t) {
            return Vec::new();
        }
        self.applied_through = Some(record.seq);
        let mut out = Changes::default();
        let now = record
            .meta_timestamp
            .max(record.ingest_time_ms.div_euclid(1000))
            .max(record_time(record));
        if now > self.clock {
            self.clock = now;
            self.crm.expire_handoffs(now, record.seq, &mut out);
        }
        let personal = input
            .personal
            .filter(|_| !self.crm.forgotten.contains(&record.customer));
        self.ledger.apply(config, &self.crm, record, &mut out);
        self.crm.apply(config, record, personal, &mut out);
        self.health.apply(config, record, &mut out);
        out.0.into_iter().collect()
    }

    /// Folds records from scratch.
    pub fn rebuild<'a>(
        config: &Config,
        inputs: impl IntoIterator<Item = ProjectionInput<'a>>,
    ) -> Views {
        let mut views = Views::default();
        for input in inputs {
            views.apply(config, input);
        }
        views
    }

    /// The seq of the last record folded; `None` before the first.
    pub fn applied_through(&self) -> Option<u64> {
        self.applied_through
    }

    /// The latest record time seen (unix seconds): the views' "now".
    pub fn clock(&self) -> i64 {
        self.clock
    }

    /// Contacts by customer id.
    pub fn contacts(&self) -> impl Iterator<Item = &ContactRow> {
        self.crm.contacts.values()
    }

    pub fn contact(&self, customer: &[u8]) -> Option<&ContactRow> {
        self.crm.contacts.get(customer)
    }

    /// Conversations by (number, customer).
    pub fn conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.crm.conversations.values()
    }

    pub fn conversation(&self, number: &str, customer: &[u8]) -> Option<&Conversation> {
        self.crm
            .conversations
            .get(&(number.to_string(), customer.to_vec()))
    }

    /// Number health by phone_number_id.
    pub fn numbers(&self) -> impl Iterator<Item = &NumberHealth> {
        self.health.numbers.values()
    }

    pub fn number(&self, phone_number_id: &str) -> Option<&NumberHealth> {
        self.health.numbers.get(phone_number_id)
    }

    /// Ledger entries in order; an entry's id is its index.
    pub fn ledger_entries(&self) -> &[LedgerEntry] {
        &self.ledger.entries
    }

    /// Billing aggregates by (number, day, channel, category).
    pub fn billing_aggregates(&self) -> impl Iterator<Item = &BillingAggregate> {
        self.ledger.aggregates.values()
    }

    pub fn billing_aggregate(
        &self,
        number: &str,
        day: Day,
        channel: twinlog_proto::v1::Channel,
        category: &str,
    ) -> Option<&BillingAggregate> {
        self.ledger
            .aggregates
            .get(&(number.to_string(), day, channel, category.to_string()))
    }

    /// Savings of app-side traffic by (number, day).
    pub fn savings(&self) -> impl Iterator<Item = &Savings> {
        self.ledger.savings.values()
    }

    /// Delivered API messages by (day, customer country, category), as Meta's
    /// `pricing_analytics` counts them.
    pub fn country_totals(
        &self,
    ) -> &std::collections::BTreeMap<(Day, String, String), CountryTotal> {
        &self.ledger.by_country
    }
}

/// The time of a record's fact (unix seconds): the fact's own timestamp,
/// else Meta's, else the ingest time.
pub(crate) fn record_time(record: &AuditRecord) -> i64 {
    let fact = match &record.fact {
        Some(Fact::MessageRecorded(m)) => m.timestamp,
        Some(Fact::RevisionRecorded(r)) => r.timestamp,
        Some(Fact::StatusRecorded(s)) => s.timestamp,
        Some(Fact::ContactSynced(c)) => c.timestamp,
        Some(Fact::AccountUpdated(a)) => a.entry_time,
        Some(Fact::SyncWindowOpened(w)) => w.opened_at,
        Some(Fact::SyncWindowClosed(w)) => w.closed_at,
        Some(Fact::HeartbeatChanged(h)) => h.checked_at,
        _ => 0,
    };
    if fact != 0 {
        fact
    } else if record.meta_timestamp != 0 {
        record.meta_timestamp
    } else {
        record.ingest_time_ms.div_euclid(1000)
    }
}

/// The status order is the engine's: one definition for the log and the views.
pub(crate) use twinlog_engine::{status_rank, STATUS_RANK_FAILED};
