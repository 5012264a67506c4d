//! Number health: onboarding sync, heartbeat, disconnection, throughput and
//! eligibility, per business number.

use std::collections::{BTreeMap, BTreeSet};

use twinlog_proto::v1::{
    audit_record::Fact, AccountUpdated, AuditRecord, Channel, HistoryChunkRecorded, HistoryPhase,
    NumberHealth, Provenance, SendRate, ViewsSnapshot, WabaSyncSnapshot,
};

use crate::change::Change;
use crate::day::Day;
use crate::eligibility::eligibility;
use crate::{Changes, Config};

/// Seconds of per-second send counts kept to absorb slightly unordered records.
const THROUGHPUT_WINDOW_S: i64 = 60;

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Health {
    pub(crate) numbers: BTreeMap<String, NumberHealth>,
    /// The sync facts of each WhatsApp Business Account and its numbers,
    /// copied onto the numbers.
    wabas: BTreeMap<String, WabaSyncSnapshot>,
    /// Per number: business sends per second, over the last minute.
    per_second: BTreeMap<String, BTreeMap<i64, u32>>,
}

impl Health {
    pub(crate) fn apply(&mut self, config: &Config, record: &AuditRecord, out: &mut Changes) {
        let time = crate::record_time(record);
        if !record.phone_number_id.is_empty() {
            self.number(config, record, &record.phone_number_id, time, out);
        }
        match &record.fact {
            Some(Fact::AccountUpdated(a)) => self.account(config, record, a, out),
            Some(Fact::SyncWindowOpened(w)) => self.waba_sync(&w.waba_id, record.seq, out, |s| {
                s.opened_at = w.opened_at;
                s.deadline = w.deadline;
            }),
            Some(Fact::SyncWindowClosed(w)) => self.waba_sync(&w.waba_id, record.seq, out, |s| {
                s.closed_at = w.closed_at;
                s.missed = w.missed;
                s.contacts_synced |= w.contacts_synced;
                s.history_synced |= w.history_synced;
            }),
            Some(Fact::HistoryChunkRecorded(h)) => {
                if let Some(n) = touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                {
                    n.history_synced = true;
                    history_phase(n, h);
                }
            }
            Some(Fact::HistoryDeclined(d)) => {
                if let Some(n) = touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                {
                    n.history_declined = true;
                    n.history_declined_code = d.error_code;
                }
            }
            Some(Fact::ContactSynced(c)) => {
                if let Some(n) = touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                {
                    n.contacts_synced = true;
                    n.last_app_activity = n.last_app_activity.max(c.timestamp);
                }
            }
            Some(Fact::HeartbeatChanged(h)) => {
                if let Some(n) = touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                {
                    n.heartbeat_level = h.level;
                    n.heartbeat_checked_at = h.checked_at;
                    n.heartbeat_seconds_left = h.seconds_left;
                    n.last_app_activity = n.last_app_activity.max(h.last_activity);
                }
            }
            Some(Fact::MessageRecorded(m)) if m.provenance == Provenance::Live as i32 => {
                let outbound = m.channel == Channel::App as i32 || m.channel == Channel::Api as i32;
                if outbound {
                    let second = if m.timestamp != 0 {
                        m.timestamp
                    } else {
                        record.ingest_time_ms.div_euclid(1000)
                    };
                    self.sent(config, record, second, out);
                }
                if m.channel == Channel::App as i32 {
                    let later = self
                        .numbers
                        .get(&record.phone_number_id)
                        .is_some_and(|n| m.timestamp > n.last_app_activity);
                    if later {
                        if let Some(n) =
                            touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                        {
                            n.last_app_activity = m.timestamp;
                        }
                    }
                }
            }
            Some(Fact::RevisionRecorded(r)) if r.by == Channel::App as i32 => {
                if let Some(n) = touch(&mut self.numbers, &record.phone_number_id, record.seq, out)
                {
                    n.last_app_activity = n.last_app_activity.max(r.timestamp);
                }
            }
            _ => {}
        }
    }

    /// The row of a number, created on first sight; marks it changed.
    fn number(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        id: &str,
        time: i64,
        out: &mut Changes,
    ) {
        let changed = !self.numbers.contains_key(id);
        if changed {
            let row = NumberHealth {
                phone_number_id: id.to_string(),
                connected: true,
                limit_per_s: config.throughput_limit_per_s,
                ..NumberHealth::default()
            };
            self.numbers.insert(id.to_string(), row);
        }
        let Some(n) = self.numbers.get_mut(id) else {
            return;
        };
        let mut changed = changed;
        if !record.display_phone_number.is_empty()
            && n.display_phone_number != record.display_phone_number
        {
            n.display_phone_number
                .clone_from(&record.display_phone_number);
            let on = if n.onboarded_at != 0 {
                n.onboarded_at
            } else {
                time
            };
            n.eligibility = eligibility_row(&n.display_phone_number, Day::of_unix(on));
            changed = true;
        }
        if !record.waba_id.is_empty() && n.waba_id != record.waba_id {
            n.waba_id.clone_from(&record.waba_id);
            let sync =
                self.wabas
                    .entry(record.waba_id.clone())
                    .or_insert_with(|| WabaSyncSnapshot {
                        waba_id: record.waba_id.clone(),
                        ..WabaSyncSnapshot::default()
                    });
            if let Err(i) = sync
                .phone_number_ids
                .binary_search_by(|n| n.as_str().cmp(id))
            {
                sync.phone_number_ids.insert(i, id.to_string());
            }
            copy_sync(n, sync);
            changed = true;
        }
        if changed {
            n.updated_seq = record.seq;
            out.push(Change::NumberHealth {
                number: id.to_string(),
            });
        }
    }

    fn account(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        a: &AccountUpdated,
        out: &mut Changes,
    ) {
        let mut ids: BTreeSet<&str> = a.phone_number_ids.iter().map(String::as_str).collect();
        if !record.phone_number_id.is_empty() {
            ids.insert(&record.phone_number_id);
        }
        for id in ids {
            let mut r = record.clone();
            r.phone_number_id = id.to_string();
            r.waba_id.clone_from(&a.waba_id);
            self.number(config, &r, id, a.entry_time, out);
            let Some(n) = touch(&mut self.numbers, id, record.seq, out) else {
                continue;
            };
            match a.event.as_str() {
                "PARTNER_APP_INSTALLED" => {
                    n.onboarded_at = a.entry_time;
                    n.connected = true;
                    n.disconnection_reason.clear();
                    n.disconnection_initiated_by.clear();
                    n.disconnected_at = 0;
                    if !n.display_phone_number.is_empty() {
                        n.eligibility =
                            eligibility_row(&n.display_phone_number, Day::of_unix(a.entry_time));
                    }
                }
                "PARTNER_REMOVED" | "PARTNER_APP_UNINSTALLED" => {
                    n.connected = false;
                    n.disconnection_reason.clone_from(&a.disconnection_reason);
                    n.disconnection_initiated_by
                        .clone_from(&a.disconnection_initiated_by);
                    n.disconnected_at = a.entry_time;
                }
                _ if !a.disconnection_reason.is_empty() => {
                    n.disconnection_reason.clone_from(&a.disconnection_reason);
                    n.disconnection_initiated_by
                        .clone_from(&a.disconnection_initiated_by);
                }
                _ => {}
            }
        }
    }

    fn waba_sync(
        &mut self,
        waba: &str,
        seq: u64,
        out: &mut Changes,
        change: impl FnOnce(&mut WabaSyncSnapshot),
    ) {
        let sync = self
            .wabas
            .entry(waba.to_string())
            .or_insert_with(|| WabaSyncSnapshot {
                waba_id: waba.to_string(),
                ..WabaSyncSnapshot::default()
            });
        change(sync);
        for id in &sync.phone_number_ids {
            if let Some(n) = self.numbers.get_mut(id) {
                copy_sync(n, sync);
                n.updated_seq = seq;
                out.push(Change::NumberHealth { number: id.clone() });
            }
        }
    }

    pub(crate) fn save(&self, s: &mut ViewsSnapshot) {
        s.numbers = self.numbers.values().cloned().collect();
        s.wabas = self.wabas.values().cloned().collect();
        s.send_rates = self
            .per_second
            .iter()
            .map(|(id, seconds)| SendRate {
                phone_number_id: id.clone(),
                seconds: seconds.keys().copied().collect(),
                counts: seconds.values().copied().collect(),
            })
            .collect();
    }

    pub(crate) fn load(s: &ViewsSnapshot) -> Health {
        Health {
            numbers: s
                .numbers
                .iter()
                .map(|n| (n.phone_number_id.clone(), n.clone()))
                .collect(),
            wabas: s
                .wabas
                .iter()
                .map(|w| (w.waba_id.clone(), w.clone()))
                .collect(),
            per_second: s
                .send_rates
                .iter()
                .map(|r| {
                    let seconds = r
                        .seconds
                        .iter()
                        .copied()
                        .zip(r.counts.iter().copied())
                        .collect();
                    (r.phone_number_id.clone(), seconds)
                })
                .collect(),
        }
    }

    fn sent(&mut self, config: &Config, record: &AuditRecord, second: i64, out: &mut Changes) {
        let number = record.phone_number_id.as_str();
        let seconds = self.per_second.entry(number.to_string()).or_default();
        let latest = seconds.last_key_value().map(|(s, _)| *s).unwrap_or(second);
        if second < latest - THROUGHPUT_WINDOW_S {
            return;
        }
        let count = seconds.entry(second).or_default();
        *count += 1;
        let count = *count;
        while let Some((&oldest, _)) = seconds.first_key_value() {
            if oldest >= second.max(latest) - THROUGHPUT_WINDOW_S {
                break;
            }
            seconds.pop_first();
        }
        let peak = self
            .numbers
            .get(number)
            .is_some_and(|n| count > n.peak_per_s);
        let over = count == config.throughput_limit_per_s.saturating_add(1);
        if !(peak || over) {
            return;
        }
        if let Some(n) = touch(&mut self.numbers, number, record.seq, out) {
            if count > n.peak_per_s {
                n.peak_per_s = count;
                n.peak_at = second;
            }
            if count == config.throughput_limit_per_s.saturating_add(1) {
                n.seconds_over_limit += 1;
            }
        }
    }
}

/// The row of a number that is about to change: marked changed.
fn touch<'a>(
    numbers: &'a mut BTreeMap<String, NumberHealth>,
    id: &str,
    seq: u64,
    out: &mut Changes,
) -> Option<&'a mut NumberHealth> {
    let n = numbers.get_mut(id)?;
    n.updated_seq = seq;
    out.push(Change::NumberHealth {
        number: id.to_string(),
    });
    Some(n)
}

fn copy_sync(n: &mut NumberHealth, sync: &WabaSyncSnapshot) {
    n.sync_window_opened_at = sync.opened_at;
    n.sync_deadline = sync.deadline;
    n.sync_closed_at = sync.closed_at;
    n.sync_missed = sync.missed;
    n.contacts_synced |= sync.contacts_synced;
    n.history_synced |= sync.history_synced;
}

fn history_phase(n: &mut NumberHealth, h: &HistoryChunkRecorded) {
    let index = match n.history_phases.binary_search_by_key(&h.phase, |p| p.phase) {
        Ok(i) => i,
        Err(i) => {
            n.history_phases.insert(
                i,
                HistoryPhase {
                    phase: h.phase,
                    ..HistoryPhase::default()
                },
            );
            i
        }
    };
    let p = &mut n.history_phases[index];
    p.progress = p.progress.max(h.progress);
    p.chunks += 1;
    p.imported += u64::from(h.messages_imported);
    p.duplicates += u64::from(h.duplicates);
    p.too_old += u64::from(h.too_old);
    p.complete |= h.complete;
}

fn eligibility_row(display: &str, on: Day) -> Option<twinlog_proto::v1::Eligibility> {
    let e = eligibility(display, on).ok()?;
    Some(twinlog_proto::v1::Eligibility {
        country: e.country,
        supported: e.supported,
        on_date: on.to_string(),
        rule_since: e.rule_since.map(|d| d.to_string()).unwrap_or_default(),
        note: e.note,
    })
}

/// Seconds left at `now` before the about-14-day inactivity disconnect,
/// counted from the last app-side activity (negative once past); `None`
/// before any app activity.
pub fn heartbeat_seconds_left(n: &NumberHealth, config: &Config, now: i64) -> Option<i64> {
    (n.last_app_activity != 0).then(|| n.last_app_activity + config.heartbeat_expiry_s - now)
}

/// Whole days left at `now` before the inactivity disconnect (rounded down).
pub fn heartbeat_days_left(n: &NumberHealth, config: &Config, now: i64) -> Option<i64> {
    heartbeat_seconds_left(n, config, now).map(|s| s.div_euclid(crate::day::DAY_S))
}
