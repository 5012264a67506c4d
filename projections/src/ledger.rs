//! The billing ledger: every API message's charge as immutable, balanced
//! entries (pending at `sent`, posted at delivery, voided at `failed`,
//! corrected by new entries), the aggregates by number × day × channel ×
//! category, and the savings of app-side traffic.

use std::collections::BTreeMap;

use twinlog_proto::v1::{
    audit_record::Fact, AuditRecord, BilledMessage, BillingAggregate, BillingAggregateKey,
    BillingVerdict, CbpConversation, Channel, CountryTotalRow, LedgerAccount, LedgerEntry,
    LedgerEntryKind, LedgerLine, MessageRecorded, Pricing, Provenance, Savings, ServiceCount,
    StatusRecorded, ViewsSnapshot,
};

use crate::change::Change;
use crate::crm::Crm;
use crate::day::{Day, DAY_S};
use crate::ratecard::normalize_category;
use crate::snapshot::SnapshotError;
use crate::{Changes, Config};

/// From this day, service conversations are free under CBP.
pub const CBP_FREE_SERVICE_FROM: (i64, u32, u32) = (2024, 11, 1);
/// The first day of per-message pricing.
pub const PMP_FROM: (i64, u32, u32) = (2025, 7, 1);
/// From this day, service messages beyond the monthly free tier are charged.
pub const SERVICE_TIER_FROM: (i64, u32, u32) = (2026, 10, 1);

fn day_of((y, m, d): (i64, u32, u32)) -> Day {
    Day::from_ymd(y, m, d).unwrap_or_default()
}

/// The pricing regime a message falls under, by its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Regime {
    /// Conversation-based pricing: one charge per 24-hour conversation and category.
    Cbp,
    /// Per-message pricing: delivered templates are charged.
    Pmp,
    /// Per-message pricing with service charged beyond a monthly free tier.
    Pmp2026,
}

impl Regime {
    /// The regime of a message sent on `day`. A `CBP` pricing model keeps
    /// CBP after the switch (utility conversations opened before 2025-07-01).
    pub fn of(day: Day, pricing_model: &str) -> Regime {
        if pricing_model.eq_ignore_ascii_case("CBP") || day < day_of(PMP_FROM) {
            Regime::Cbp
        } else if day < day_of(SERVICE_TIER_FROM) {
            Regime::Pmp
        } else {
            Regime::Pmp2026
        }
    }

    /// The regime named `name` (as [`Regime::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Regime> {
        [Regime::Cbp, Regime::Pmp, Regime::Pmp2026]
            .into_iter()
            .find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Cbp => "cbp",
            Regime::Pmp => "pmp",
            Regime::Pmp2026 => "pmp_2026",
        }
    }
}

/// Why a message costs what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Priced from the rate card.
    Charged,
    /// Billable, but the rate card has no rate for its market × category × day.
    NoRate,
    /// A service message or conversation, free under the regime.
    FreeService,
    /// Inside a free entry point window.
    FreeEntryPoint,
    /// A 2026 service message within the number's monthly free tier.
    FreeTier,
    /// CBP: the conversation was already charged.
    SameConversation,
    /// Meta's pricing says it is free (e.g. a utility template inside the window).
    MetaFree,
}

impl Reason {
    const ALL: [Reason; 7] = [
        Reason::Charged,
        Reason::NoRate,
        Reason::FreeService,
        Reason::FreeEntryPoint,
        Reason::FreeTier,
        Reason::SameConversation,
        Reason::MetaFree,
    ];

    /// The reason named `name` (as [`Reason::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Charged => "charged",
            Reason::NoRate => "no_rate",
            Reason::FreeService => "free_service",
            Reason::FreeEntryPoint => "free_entry_point",
            Reason::FreeTier => "free_tier",
            Reason::SameConversation => "same_conversation",
            Reason::MetaFree => "meta_free",
        }
    }

    fn billable(self) -> bool {
        matches!(self, Reason::Charged | Reason::NoRate)
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    regime: Regime,
    category: String,
    market: String,
    reason: Reason,
    micros: i64,
}

/// Where a message is counted in the aggregates, and with what.
#[derive(Debug, Clone, PartialEq, Default)]
struct Contribution {
    aggregate: (String, Day, Channel, String),
    country: Option<(Day, String, String)>,
    billable: u64,
    micros: i64,
}

/// What the ledger knows of one API message.
#[derive(Debug, Clone, PartialEq, Default)]
struct Billed {
    number: String,
    customer: Vec<u8>,
    /// The message's time (its own timestamp; until it is known, its first status's).
    time: i64,
    time_known: bool,
    country: String,
    pricing: Option<Pricing>,
    conversation_id: String,
    conversation_origin: String,
    delivered: bool,
    failed: bool,
    pending_micros: i64,
    posted: Option<Decision>,
    counted: Option<Contribution>,
}

impl Billed {
    fn day(&self) -> Day {
        Day::of_unix(self.time)
    }

    fn category(&self) -> String {
        let from_pricing = self
            .pricing
            .as_ref()
            .map(|p| normalize_category(&p.category))
            .unwrap_or_default();
        if from_pricing.is_empty() {
            normalize_category(&self.conversation_origin)
        } else {
            from_pricing
        }
    }
}

/// Per-day, per-country, per-category volume and cost of delivered API
/// messages: what Meta's `pricing_analytics` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountryTotal {
    pub volume: u64,
    pub billable: u64,
    pub micros: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Ledger {
    pub(crate) entries: Vec<LedgerEntry>,
    pub(crate) aggregates: BTreeMap<(String, Day, Channel, String), BillingAggregate>,
    pub(crate) by_country: BTreeMap<(Day, String, String), CountryTotal>,
    pub(crate) savings: BTreeMap<(String, Day), Savings>,
    messages: BTreeMap<Vec<u8>, Billed>,
    /// CBP: charged conversations → when they end.
    conversations: BTreeMap<String, i64>,
    /// 2026: delivered service messages per number × month.
    service_counts: BTreeMap<(String, (i64, u32)), u64>,
}

impl Ledger {
    pub(crate) fn apply(
        &mut self,
        config: &Config,
        crm: &Crm,
        record: &AuditRecord,
        out: &mut Changes,
    ) {
        match &record.fact {
            Some(Fact::MessageRecorded(m)) => self.message(config, crm, record, m, out),
            Some(Fact::StatusRecorded(s)) => self.status(config, record, s, out),
            _ => {}
        }
    }

    fn message(
        &mut self,
        config: &Config,
        crm: &Crm,
        record: &AuditRecord,
        m: &MessageRecorded,
        out: &mut Changes,
    ) {
        let channel = Channel::try_from(m.channel).unwrap_or(Channel::Unspecified);
        let day = Day::of_unix(m.timestamp);
        if channel != Channel::Api {
            let key = (record.phone_number_id.clone(), day, channel, String::new());
            self.add(config, &key, 1, 0, 0, out);
            if channel == Channel::App && m.provenance == Provenance::Live as i32 {
                self.saving(config, crm, record, m, out);
            }
            return;
        }
        let b = self.messages.entry(m.message_key.clone()).or_default();
        if b.time_known {
            return;
        }
        b.number.clone_from(&record.phone_number_id);
        b.customer.clone_from(&record.customer);
        b.time = m.timestamp;
        b.time_known = true;
        if !record.customer_country.is_empty() {
            b.country.clone_from(&record.customer_country);
        }
        self.recount(config, &m.message_key, out);
    }

    fn saving(
        &mut self,
        config: &Config,
        crm: &Crm,
        record: &AuditRecord,
        m: &MessageRecorded,
        out: &mut Changes,
    ) {
        let day = Day::of_unix(m.timestamp);
        let number = record.phone_number_id.clone();
        let in_window = m.timestamp < crm.window_until(&number, &record.customer);
        let card = &config.billing.rate_card;
        let category = &config.billing.savings_template_category;
        let rate = card
            .rate(&record.customer_country, category, day)
            .map(|r| r.micros)
            .unwrap_or(0);
        let row = self
            .savings
            .entry((number.clone(), day))
            .or_insert_with(|| Savings {
                phone_number_id: number.clone(),
                day: day.to_string(),
                currency: card.currency().to_string(),
                template_category: category.clone(),
                ..Savings::default()
            });
        row.app_messages += 1;
        if in_window {
            row.in_window += 1;
        } else {
            row.outside_window += 1;
            row.would_cost_micros += rate;
        }
        out.push(Change::Savings { number, day });
    }

    fn status(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        s: &StatusRecorded,
        out: &mut Changes,
    ) {
        let key = s.message_key.clone();
        let seq = record.seq;
        let b = self.messages.entry(key.clone()).or_default();
        if b.number.is_empty() {
            b.number.clone_from(&record.phone_number_id);
            b.customer.clone_from(&record.customer);
        }
        if !b.time_known && (b.time == 0 || (s.timestamp != 0 && s.timestamp < b.time)) {
            b.time = s.timestamp;
        }
        if !record.customer_country.is_empty() {
            b.country.clone_from(&record.customer_country);
        }
        if !s.conversation_id.is_empty() && b.conversation_id.is_empty() {
            b.conversation_id.clone_from(&s.conversation_id);
        }
        if !s.conversation_origin.is_empty() && b.conversation_origin.is_empty() {
            b.conversation_origin.clone_from(&s.conversation_origin);
        }
        let repriced = match (&s.pricing, &b.pricing) {
            (Some(new), old) if old.as_ref() != Some(new) => {
                b.pricing = Some(new.clone());
                true
            }
            _ => false,
        };
        match s.status.as_str() {
            "sent" => {
                let first =
                    b.posted.is_none() && b.pending_micros == 0 && !b.failed && !b.delivered;
                if first && b.pricing.is_some() {
                    if let Some(d) = self.decide(config, &key, false).filter(|d| d.micros > 0) {
                        let lines = pending_lines(d.micros);
                        self.entry(
                            config,
                            seq,
                            &key,
                            LedgerEntryKind::Pending,
                            &d,
                            d.micros,
                            lines,
                            out,
                        );
                        if let Some(b) = self.messages.get_mut(&key) {
                            b.pending_micros = d.micros;
                        }
                    }
                }
            }
            "delivered" | "read" | "played" => b.delivered = true,
            "failed" if b.posted.is_none() && !b.failed => {
                b.failed = true;
                let pending = std::mem::take(&mut b.pending_micros);
                if pending > 0 {
                    if let Some(d) = self.decide(config, &key, false) {
                        let lines = void_lines(pending);
                        self.entry(
                            config,
                            seq,
                            &key,
                            LedgerEntryKind::Voided,
                            &d,
                            pending,
                            lines,
                            out,
                        );
                    }
                }
            }
            _ => {}
        }
        self.settle(config, seq, &key, repriced, out);
        self.recount(config, &key, out);
    }

    /// Posts a delivered message once its pricing is known, or corrects a
    /// posted charge that a later pricing changed.
    fn settle(&mut self, config: &Config, seq: u64, key: &[u8], repriced: bool, out: &mut Changes) {
        let Some(b) = self.messages.get(key) else {
            return;
        };
        let ready = b.delivered && !b.failed && b.pricing.is_some();
        match &b.posted {
            None if ready => {
                let pending = b.pending_micros;
                if let Some(d) = self.decide(config, key, true) {
                    let lines = post_lines(pending, d.micros);
                    self.entry(
                        config,
                        seq,
                        key,
                        LedgerEntryKind::Posted,
                        &d,
                        d.micros,
                        lines,
                        out,
                    );
                    if let Some(b) = self.messages.get_mut(key) {
                        b.pending_micros = 0;
                        b.posted = Some(d);
                    }
                }
            }
            Some(old) if repriced => {
                let old = old.clone();
                if let Some(new) = self.decide(config, key, false) {
                    if new.micros != old.micros
                        || new.reason != old.reason
                        || new.category != old.category
                    {
                        let lines = correction_lines(old.micros, new.micros);
                        self.entry(
                            config,
                            seq,
                            key,
                            LedgerEntryKind::Corrected,
                            &new,
                            new.micros,
                            lines,
                            out,
                        );
                        if let Some(b) = self.messages.get_mut(key) {
                            b.posted = Some(new);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The verdict on a message under its regime. With `commit`, it claims
    /// what it uses up (a CBP conversation, a place in the free tier).
    fn decide(&mut self, config: &Config, key: &[u8], commit: bool) -> Option<Decision> {
        let b = self.messages.get(key)?;
        let pricing = b.pricing.clone().unwrap_or_default();
        let day = b.day();
        let regime = Regime::of(day, &pricing.pricing_model);
        let category = b.category();
        let ptype = pricing.r#type.to_ascii_lowercase();
        let meta_free =
            ptype.starts_with("free") || (ptype.is_empty() && pricing.billable == Some(false));
        let reason = match regime {
            Regime::Cbp => {
                if category == "service" && day >= day_of(CBP_FREE_SERVICE_FROM) {
                    Reason::FreeService
                } else if ptype == "free_entry_point" || category == "referral_conversion" {
                    Reason::FreeEntryPoint
                } else if meta_free {
                    Reason::MetaFree
                } else {
                    let conversation = if b.conversation_id.is_empty() {
                        format!("{}/{}/{}", b.number, hex(&b.customer), category)
                    } else {
                        b.conversation_id.clone()
                    };
                    let open = self
                        .conversations
                        .get(&conversation)
                        .is_some_and(|end| b.time < *end);
                    if open {
                        Reason::SameConversation
                    } else {
                        if commit {
                            self.conversations.insert(conversation, b.time + DAY_S);
                        }
                        Reason::Charged
                    }
                }
            }
            Regime::Pmp | Regime::Pmp2026 if ptype == "free_entry_point" => Reason::FreeEntryPoint,
            Regime::Pmp if category == "service" => Reason::FreeService,
            Regime::Pmp2026 if category == "service" => {
                let month = (b.number.clone(), day.month());
                let n = self.service_counts.get(&month).copied().unwrap_or(0) + 1;
                if commit {
                    self.service_counts.insert(month, n);
                }
                if n <= config.billing.service_free_tier_per_month {
                    Reason::FreeTier
                } else {
                    Reason::Charged
                }
            }
            Regime::Pmp | Regime::Pmp2026 if meta_free => Reason::MetaFree,
            Regime::Pmp | Regime::Pmp2026 => Reason::Charged,
        };
        let card = &config.billing.rate_card;
        let market = card.market_of(&b.country).unwrap_or_default().to_string();
        let (reason, micros) = if reason.billable() {
            match card.rate(&b.country, &category, day) {
                Some(rate) => (Reason::Charged, rate.micros),
                None => (Reason::NoRate, 0),
            }
        } else {
            (reason, 0)
        };
        Some(Decision {
            regime,
            category,
            market,
            reason,
            micros,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        config: &Config,
        seq: u64,
        key: &[u8],
        kind: LedgerEntryKind,
        d: &Decision,
        amount_micros: i64,
        lines: Vec<LedgerLine>,
        out: &mut Changes,
    ) {
        let Some(b) = self.messages.get(key) else {
            return;
        };
        let pricing = b.pricing.clone().unwrap_or_default();
        let id = u64::try_from(self.entries.len()).unwrap_or(u64::MAX);
        self.entries.push(LedgerEntry {
            id,
            seq,
            message_key: key.to_vec(),
            phone_number_id: b.number.clone(),
            customer: b.customer.clone(),
            day: b.day().to_string(),
            kind: kind as i32,
            regime: d.regime.as_str().to_string(),
            category: d.category.clone(),
            market: d.market.clone(),
            country: b.country.clone(),
            reason: d.reason.as_str().to_string(),
            amount_micros,
            currency: config.billing.rate_card.currency().to_string(),
            lines,
            pricing_model: pricing.pricing_model,
            pricing_type: pricing.r#type,
        });
        out.push(Change::LedgerEntry { id });
    }

    /// Moves a message's contribution to the aggregates where it now belongs.
    fn recount(&mut self, config: &Config, key: &[u8], out: &mut Changes) {
        let Some(b) = self.messages.get(key) else {
            return;
        };
        let day = b.day();
        let category = if b.pricing.is_some() {
            b.category()
        } else {
            String::new()
        };
        let (billable, micros) = match &b.posted {
            Some(d) => (u64::from(d.reason.billable()), d.micros),
            None => (0, 0),
        };
        let country = b
            .posted
            .as_ref()
            .map(|_| (day, b.country.clone(), category.clone()));
        let want = Contribution {
            aggregate: (b.number.clone(), day, Channel::Api, category),
            country,
            billable,
            micros,
        };
        if b.counted.as_ref() == Some(&want) {
            return;
        }
        let old = b.counted.clone();
        if let Some(old) = old {
            self.add(
                config,
                &old.aggregate,
                -1,
                -i64::try_from(old.billable).unwrap_or(0),
                -old.micros,
                out,
            );
            if let Some(c) = &old.country {
                let t = self.by_country.entry(c.clone()).or_default();
                t.volume = t.volume.saturating_sub(1);
                t.billable = t.billable.saturating_sub(old.billable);
                t.micros -= old.micros;
            }
        }
        self.add(
            config,
            &want.aggregate,
            1,
            i64::try_from(want.billable).unwrap_or(0),
            want.micros,
            out,
        );
        if let Some(c) = &want.country {
            let t = self.by_country.entry(c.clone()).or_default();
            t.volume += 1;
            t.billable += want.billable;
            t.micros += want.micros;
        }
        self.by_country.retain(|_, t| *t != CountryTotal::default());
        if let Some(b) = self.messages.get_mut(key) {
            b.counted = Some(want);
        }
    }

    fn add(
        &mut self,
        config: &Config,
        key: &(String, Day, Channel, String),
        messages: i64,
        billable: i64,
        micros: i64,
        out: &mut Changes,
    ) {
        let row = self
            .aggregates
            .entry(key.clone())
            .or_insert_with(|| BillingAggregate {
                phone_number_id: key.0.clone(),
                day: key.1.to_string(),
                channel: key.2 as i32,
                category: key.3.clone(),
                currency: config.billing.rate_card.currency().to_string(),
                ..BillingAggregate::default()
            });
        row.messages = row.messages.saturating_add_signed(messages);
        row.billable = row.billable.saturating_add_signed(billable);
        row.cost_micros += micros;
        if row.messages == 0 && row.billable == 0 && row.cost_micros == 0 {
            self.aggregates.remove(key);
        }
        out.push(Change::BillingAggregate {
            number: key.0.clone(),
            day: key.1,
            channel: key.2,
            category: key.3.clone(),
        });
    }
}

impl Ledger {
    pub(crate) fn save(&self, s: &mut ViewsSnapshot) {
        s.ledger_entries = self.entries.clone();
        s.billing_aggregates = self.aggregates.values().cloned().collect();
        s.country_totals = self
            .by_country
            .iter()
            .map(|((day, country, category), t)| CountryTotalRow {
                day: day.to_string(),
                country: country.clone(),
                category: category.clone(),
                volume: t.volume,
                billable: t.billable,
                cost_micros: t.micros,
            })
            .collect();
        s.savings = self.savings.values().cloned().collect();
        s.billed = self
            .messages
            .iter()
            .map(|(key, b)| {
                let counted = b.counted.as_ref();
                BilledMessage {
                    message_key: key.clone(),
                    phone_number_id: b.number.clone(),
                    customer: b.customer.clone(),
                    time: b.time,
                    time_known: b.time_known,
                    country: b.country.clone(),
                    pricing: b.pricing.clone(),
                    conversation_id: b.conversation_id.clone(),
                    conversation_origin: b.conversation_origin.clone(),
                    delivered: b.delivered,
                    failed: b.failed,
                    pending_micros: b.pending_micros,
                    posted: b.posted.as_ref().map(|d| BillingVerdict {
                        regime: d.regime.as_str().to_string(),
                        category: d.category.clone(),
                        market: d.market.clone(),
                        reason: d.reason.as_str().to_string(),
                        micros: d.micros,
                    }),
                    counted: counted.is_some(),
                    counted_in: counted.map(|c| BillingAggregateKey {
                        phone_number_id: c.aggregate.0.clone(),
                        day: c.aggregate.1.to_string(),
                        channel: c.aggregate.2 as i32,
                        category: c.aggregate.3.clone(),
                    }),
                    counted_country: counted.and_then(|c| c.country.as_ref()).map(|k| {
                        CountryTotalRow {
                            day: k.0.to_string(),
                            country: k.1.clone(),
                            category: k.2.clone(),
                            ..CountryTotalRow::default()
                        }
                    }),
                    counted_billable: counted.map(|c| c.billable).unwrap_or_default(),
                    counted_micros: counted.map(|c| c.micros).unwrap_or_default(),
                }
            })
            .collect();
        s.cbp_conversations = self
            .conversations
            .iter()
            .map(|(key, ends_at)| CbpConversation {
                key: key.clone(),
                ends_at: *ends_at,
            })
            .collect();
        s.service_counts = self
            .service_counts
            .iter()
            .map(|((number, (year, month)), count)| ServiceCount {
                phone_number_id: number.clone(),
                year: *year,
                month: *month,
                count: *count,
            })
            .collect();
    }

    pub(crate) fn load(s: &ViewsSnapshot) -> Result<Ledger, SnapshotError> {
        let day = |d: &str| {
            d.parse::<Day>()
                .map_err(|_| SnapshotError::invalid("day", d))
        };
        let channel =
            |c: i32| Channel::try_from(c).map_err(|_| SnapshotError::invalid("channel", c));
        let mut ledger = Ledger {
            entries: s.ledger_entries.clone(),
            ..Ledger::default()
        };
        for a in &s.billing_aggregates {
            let key = (
                a.phone_number_id.clone(),
                day(&a.day)?,
                channel(a.channel)?,
                a.category.clone(),
            );
            ledger.aggregates.insert(key, a.clone());
        }
        for t in &s.country_totals {
            let total = CountryTotal {
                volume: t.volume,
                billable: t.billable,
                micros: t.cost_micros,
            };
            ledger
                .by_country
                .insert((day(&t.day)?, t.country.clone(), t.category.clone()), total);
        }
        for row in &s.savings {
            ledger
                .savings
                .insert((row.phone_number_id.clone(), day(&row.day)?), row.clone());
        }
        for m in &s.billed {
            let posted = match &m.posted {
                None => None,
                Some(v) => Some(Decision {
                    regime: Regime::parse(&v.regime)
                        .ok_or_else(|| SnapshotError::invalid("regime", &v.regime))?,
                    category: v.category.clone(),
                    market: v.market.clone(),
                    reason: Reason::parse(&v.reason)
                        .ok_or_else(|| SnapshotError::invalid("reason", &v.reason))?,
                    micros: v.micros,
                }),
            };
            let counted = match (&m.counted_in, m.counted) {
                (Some(k), true) => Some(Contribution {
                    aggregate: (
                        k.phone_number_id.clone(),
                        day(&k.day)?,
                        channel(k.channel)?,
                        k.category.clone(),
                    ),
                    country: match &m.counted_country {
                        Some(c) => Some((day(&c.day)?, c.country.clone(), c.category.clone())),
                        None => None,
                    },
                    billable: m.counted_billable,
                    micros: m.counted_micros,
                }),
                _ => None,
            };
            let billed = Billed {
                number: m.phone_number_id.clone(),
                customer: m.customer.clone(),
                time: m.time,
                time_known: m.time_known,
                country: m.country.clone(),
                pricing: m.pricing.clone(),
                conversation_id: m.conversation_id.clone(),
                conversation_origin: m.conversation_origin.clone(),
                delivered: m.delivered,
                failed: m.failed,
                pending_micros: m.pending_micros,
                posted,
                counted,
            };
            ledger.messages.insert(m.message_key.clone(), billed);
        }
        ledger.conversations = s
            .cbp_conversations
            .iter()
            .map(|c| (c.key.clone(), c.ends_at))
            .collect();
        ledger.service_counts = s
            .service_counts
            .iter()
            .map(|c| ((c.phone_number_id.clone(), (c.year, c.month)), c.count))
            .collect();
        Ok(ledger)
    }
}

fn line(account: LedgerAccount, debit_micros: i64, credit_micros: i64) -> LedgerLine {
    LedgerLine {
        account: account as i32,
        debit_micros,
        credit_micros,
    }
}

fn pending_lines(micros: i64) -> Vec<LedgerLine> {
    vec![
        line(LedgerAccount::PendingCharges, micros, 0),
        line(LedgerAccount::PendingPayable, 0, micros),
    ]
}

fn void_lines(pending: i64) -> Vec<LedgerLine> {
    vec![
        line(LedgerAccount::PendingPayable, pending, 0),
        line(LedgerAccount::PendingCharges, 0, pending),
    ]
}

fn post_lines(pending: i64, micros: i64) -> Vec<LedgerLine> {
    let mut lines = Vec::new();
    if pending > 0 {
        lines.extend(void_lines(pending));
    }
    if micros > 0 {
        lines.push(line(LedgerAccount::Charges, micros, 0));
        lines.push(line(LedgerAccount::Payable, 0, micros));
    }
    lines
}

fn correction_lines(old: i64, new: i64) -> Vec<LedgerLine> {
    let diff = new - old;
    match diff.cmp(&0) {
        std::cmp::Ordering::Greater => vec![
            line(LedgerAccount::Charges, diff, 0),
            line(LedgerAccount::Payable, 0, diff),
        ],
        std::cmp::Ordering::Less => vec![
            line(LedgerAccount::Payable, -diff, 0),
            line(LedgerAccount::Charges, 0, -diff),
        ],
        std::cmp::Ordering::Equal => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
