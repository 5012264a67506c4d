//! The engine's state and `evolve`, which holds no rule and cannot fail: it
//! applies what a record says. Every collection is a `BTreeMap`/`BTreeSet`,
//! so iteration order, and therefore every fact derived from it, is fixed.

use std::collections::{BTreeMap, BTreeSet};

use twinlog_proto::v1::{
    audit_record::Fact as F, Channel, HeartbeatLevel, Provenance, StatusEffect,
};

use crate::{status_rank, ClearPart, Tag, STATUS_RANK_FAILED};

/// Everything the rules need to remember. Rebuilt exactly by `evolve` over
/// the log's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Natural keys of every input ever appended: the permanent dedup index.
    pub seen: BTreeSet<Tag>,
    /// Messages by the tag of their wamid.
    pub messages: BTreeMap<Tag, MessageState>,
    /// Statuses that arrived before their message, by message tag: their ranks.
    pub orphan_statuses: BTreeMap<Tag, Vec<u8>>,
    /// Revisions recorded per original message.
    pub revisions: BTreeMap<Tag, u32>,
    /// Identity tag (phone or BSUID) to customer id.
    pub identities: BTreeMap<Tag, Tag>,
    /// Customers erased by `forget`, with how many times.
    pub erased: BTreeMap<Tag, u32>,
    /// Business numbers by `phone_number_id`.
    pub numbers: BTreeMap<String, NumberState>,
    /// Display number to `phone_number_id`, for account updates that name only the display number.
    pub display_numbers: BTreeMap<String, String>,
    /// WhatsApp Business Accounts by id.
    pub wabas: BTreeMap<String, WabaState>,
    /// The latest clock reading that fired a timer, unix seconds; older ticks are ignored.
    pub clock: i64,
    /// Records applied.
    pub records: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageState {
    pub channel: i32,
    pub provenance: i32,
    /// The best status rank so far (see [`status_rank`]); 0 = none.
    pub status_rank: u8,
    pub media_pending: bool,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberState {
    pub waba_id: String,
    /// Last app-side activity (echo, app edit or revoke, contact change), unix seconds.
    pub last_app_activity: Option<i64>,
    pub heartbeat: i32,
    pub connected: bool,
    pub disconnection_reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WabaState {
    pub numbers: BTreeSet<String>,
    /// `PARTNER_APP_INSTALLED` time, unix seconds: day 0 of history.
    pub onboarded_at: Option<i64>,
    /// The open sync window's deadline, unix seconds.
    pub sync_deadline: Option<i64>,
    pub contacts_synced: bool,
    pub history_synced: bool,
    pub history_progress: i64,
}

impl State {
    /// The customer an identity tag belongs to.
    pub fn customer_of(&self, identity: &Tag) -> Option<&Tag> {
        self.identities.get(identity)
    }

    /// The time from which a number's heartbeat counts: its last app-side
    /// activity, or its account's onboarding, whichever is later.
    pub fn heartbeat_baseline(&self, number: &str) -> Option<i64> {
        let n = self.numbers.get(number)?;
        let onboarded = self.wabas.get(&n.waba_id).and_then(|w| w.onboarded_at);
        match (n.last_app_activity, onboarded) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Applies one audit record to the state. Holds no rule: whatever a record
/// says happened, happened. Reads only the clear part: a stored
/// `AuditRecord` (replay) or a [`crate::Record`] (the live fold).
pub fn evolve<R: ClearPart + ?Sized>(state: &mut State, record: &R) {
    state.records += 1;
    if let Ok(key) = Tag::try_from(record.natural_key()) {
        state.seen.insert(key);
    }
    for link in record.links() {
        if let (Ok(identity), Ok(customer)) = (
            Tag::try_from(link.identity.as_slice()),
            Tag::try_from(link.customer.as_slice()),
        ) {
            state.identities.insert(identity, customer);
        }
    }
    let number = record.phone_number_id();
    if !number.is_empty() {
        note_number(
            state,
            number,
            record.waba_id(),
            record.display_phone_number(),
        );
    }
    let Some(fact) = record.fact() else { return };
    match fact {
        F::MessageRecorded(m) => {
            let Ok(key) = Tag::try_from(m.message_key.as_slice()) else {
                return;
            };
            let mut rank = 0;
            if let Some(orphans) = state.orphan_statuses.remove(&key) {
                rank = best_rank(&orphans);
            }
            state.messages.insert(
                key,
                MessageState {
                    channel: m.channel,
                    provenance: m.provenance,
                    status_rank: rank,
                    media_pending: m.media_pending,
                    timestamp: m.timestamp,
                },
            );
            if m.channel == Channel::App as i32 && m.provenance == Provenance::Live as i32 {
                app_activity(state, number, m.timestamp);
            }
        }
        F::RevisionRecorded(r) => {
            if let Ok(original) = Tag::try_from(r.original_key.as_slice()) {
                *state.revisions.entry(original).or_default() += 1;
            }
            if r.by == Channel::App as i32 {
                app_activity(state, number, r.timestamp);
            }
        }
        F::MediaEnriched(e) => {
            if let Ok(key) = Tag::try_from(e.message_key.as_slice()) {
                if let Some(m) = state.messages.get_mut(&key) {
                    m.media_pending = false;
                }
            }
        }
        F::StatusRecorded(s) => {
            let Ok(key) = Tag::try_from(s.message_key.as_slice()) else {
                return;
            };
            let Some(rank) = status_rank(&s.status) else {
                return;
            };
            if s.effect == StatusEffect::Advanced as i32 {
                if let Some(m) = state.messages.get_mut(&key) {
                    m.status_rank = rank;
                }
            } else if s.effect == StatusEffect::Orphaned as i32 {
                state.orphan_statuses.entry(key).or_default().push(rank);
            }
        }
        F::HistoryChunkRecorded(h) => {
            if let Some(waba) = waba_of(state, record) {
                waba.history_synced = true;
                waba.history_progress = waba.history_progress.max(h.progress);
            }
        }
        F::HistoryDeclined(_) => {
            if let Some(waba) = waba_of(state, record) {
                waba.history_synced = true;
            }
        }
        F::ContactSynced(c) => {
            if let Some(waba) = waba_of(state, record) {
                waba.contacts_synced = true;
            }
            app_activity(state, number, c.timestamp);
        }
        F::AccountUpdated(a) => {
            let waba = state.wabas.entry(a.waba_id.clone()).or_default();
            match a.event.as_str() {
                "PARTNER_APP_INSTALLED" => {
                    waba.onboarded_at.get_or_insert(a.entry_time);
                }
                "PARTNER_REMOVED" | "ACCOUNT_OFFBOARDED" | "PARTNER_APP_UNINSTALLED" => {
                    for id in &a.phone_number_ids {
                        if let Some(n) = state.numbers.get_mut(id) {
                            n.connected = false;
                            n.disconnection_reason = if a.disconnection_reason.is_empty() {
                                a.event.clone()
                            } else {
                                a.disconnection_reason.clone()
                            };
                        }
                    }
                }
                "ACCOUNT_RECONNECTED" => {
                    for id in &a.phone_number_ids {
                        if let Some(n) = state.numbers.get_mut(id) {
                            n.connected = true;
                            n.disconnection_reason.clear();
                        }
                    }
                }
                _ => {}
            }
        }
        F::SyncWindowOpened(w) => {
            let waba = state.wabas.entry(w.waba_id.clone()).or_default();
            waba.sync_deadline = Some(w.deadline);
        }
        F::SyncWindowClosed(w) => {
            let waba = state.wabas.entry(w.waba_id.clone()).or_default();
            waba.sync_deadline = None;
            state.clock = state.clock.max(w.closed_at);
        }
        F::HeartbeatChanged(h) => {
            state.clock = state.clock.max(h.checked_at);
            if let Some(n) = state.numbers.get_mut(number) {
                n.heartbeat = h.level;
            }
        }
        F::CustomerErased(e) => {
            if let Ok(customer) = Tag::try_from(e.customer.as_slice()) {
                *state.erased.entry(customer).or_default() += 1;
            }
        }
        F::OutOfScope(_) | F::Rejected(_) | F::UnknownRecorded(_) | F::WebhookErrors(_) => {}
    }
}

/// Learns a number, its account and its display number. Looks up before it
/// inserts, so the common case (all known) allocates nothing.
fn note_number(state: &mut State, id: &str, waba_id: &str, display: &str) {
    if !state.numbers.contains_key(id) {
        state.numbers.insert(
            id.to_string(),
            NumberState {
                connected: true,
                heartbeat: HeartbeatLevel::Ok as i32,
                ..NumberState::default()
            },
        );
    }
    let Some(number) = state.numbers.get_mut(id) else {
        return;
    };
    if number.waba_id.is_empty() && !waba_id.is_empty() {
        number.waba_id = waba_id.to_string();
    }
    if !number.waba_id.is_empty() {
        let known = state
            .wabas
            .get(&number.waba_id)
            .is_some_and(|w| w.numbers.contains(id));
        if !known {
            state
                .wabas
                .entry(number.waba_id.clone())
                .or_default()
                .numbers
                .insert(id.to_string());
        }
    }
    if !display.is_empty() && !state.display_numbers.contains_key(display) {
        state
            .display_numbers
            .insert(display.to_string(), id.to_string());
    }
}

/// The best rank among statuses: `failed` wins, then the highest.
pub(crate) fn best_rank(ranks: &[u8]) -> u8 {
    if ranks.contains(&STATUS_RANK_FAILED) {
        STATUS_RANK_FAILED
    } else {
        ranks.iter().copied().max().unwrap_or(0)
    }
}

fn app_activity(state: &mut State, number: &str, at: i64) {
    if let Some(n) = state.numbers.get_mut(number) {
        if n.last_app_activity.is_none_or(|last| at > last) {
            n.last_app_activity = Some(at);
        }
        n.heartbeat = HeartbeatLevel::Ok as i32;
    }
}

fn waba_of<'a, R: ClearPart + ?Sized>(
    state: &'a mut State,
    record: &R,
) -> Option<&'a mut WabaState> {
    let waba_id = state
        .numbers
        .get(record.phone_number_id())
        .map(|n| n.waba_id.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| record.waba_id().to_string());
    if waba_id.is_empty() {
        return None;
    }
    Some(state.wabas.entry(waba_id).or_default())
}
