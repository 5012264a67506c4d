//! Number health: sync, heartbeat, disconnection, throughput, eligibility.

use twinlog_projections::{eligibility, heartbeat_days_left, Change, Day};
use twinlog_proto::v1::{
    audit_record::Fact, AccountUpdated, AuditRecord, HeartbeatChanged, HeartbeatLevel,
    HistoryChunkRecorded, InputKind, SyncWindowClosed, SyncWindowOpened,
};

use crate::build::{at, test_config, Log, Rec, Scenario, NUMBER};

fn number_record(log: &mut Log, at: i64, fact: Fact) -> Rec {
    let seq = log.seq;
    log.seq += 1;
    Rec {
        record: AuditRecord {
            seq,
            phone_number_id: NUMBER.to_string(),
            display_phone_number: "4930901820".to_string(),
            waba_id: "WABA1".to_string(),
            meta_timestamp: at,
            input_kind: InputKind::AccountUpdate as i32,
            fact: Some(fact),
            ..AuditRecord::default()
        },
        personal: None,
    }
}

#[test]
fn onboarding_sync_heartbeat_and_disconnection() {
    let mut log = Log::new();
    let t = at("2026-03-01", 9, 0);
    let installed = number_record(
        &mut log,
        t,
        Fact::AccountUpdated(AccountUpdated {
            event: "PARTNER_APP_INSTALLED".to_string(),
            waba_id: "WABA1".to_string(),
            entry_time: t,
            phone_number_ids: vec![NUMBER.to_string()],
            ..AccountUpdated::default()
        }),
    );
    let mut window = number_record(
        &mut log,
        t,
        Fact::SyncWindowOpened(SyncWindowOpened {
            waba_id: "WABA1".to_string(),
            opened_at: t,
            deadline: t + 86_400,
        }),
    );
    window.record.phone_number_id.clear();
    let chunk = |log: &mut Log, progress: i64| {
        number_record(
            log,
            t + 600,
            Fact::HistoryChunkRecorded(HistoryChunkRecorded {
                phase: 0,
                progress,
                messages_imported: 10,
                complete: progress >= 100,
                ..HistoryChunkRecorded::default()
            }),
        )
    };
    let given = [installed, window, chunk(&mut log, 40), chunk(&mut log, 100)];
    let mut s = Scenario::new(test_config()).given(&given);
    let n = s.views.number(NUMBER).expect("number").clone();
    assert_eq!(n.onboarded_at, t);
    assert_eq!(n.sync_deadline, t + 86_400);
    assert!(n.history_synced);
    assert_eq!(n.history_phases.len(), 1);
    assert_eq!(
        (
            n.history_phases[0].progress,
            n.history_phases[0].chunks,
            n.history_phases[0].imported
        ),
        (100, 2, 20)
    );
    assert!(n.history_phases[0].complete);
    // Germany (+49) was supported on 2026-03-01.
    let e = n.eligibility.clone().expect("eligibility");
    assert_eq!(
        (e.country.as_str(), e.supported, e.on_date.as_str()),
        ("DE", true, "2026-03-01")
    );
    // The window closes without a contact sync: missed.
    let mut closed = number_record(
        &mut log,
        t + 86_400,
        Fact::SyncWindowClosed(SyncWindowClosed {
            waba_id: "WABA1".to_string(),
            closed_at: t + 86_400,
            contacts_synced: false,
            history_synced: true,
            missed: true,
        }),
    );
    closed.record.phone_number_id.clear();
    let changes = s.when(&closed);
    assert!(changes.contains(&Change::NumberHealth {
        number: NUMBER.to_string()
    }));
    assert!(s.views.number(NUMBER).is_some_and(|n| n.sync_missed));
    // App activity, then the heartbeat goes critical.
    s.when(&log.echo(1, 1, t + 2 * 86_400));
    let n = s.views.number(NUMBER).expect("number");
    assert_eq!(n.last_app_activity, t + 2 * 86_400);
    assert_eq!(heartbeat_days_left(n, &s.config, t + 3 * 86_400), Some(13));
    let hb = number_record(
        &mut log,
        t + 15 * 86_400,
        Fact::HeartbeatChanged(HeartbeatChanged {
            level: HeartbeatLevel::Critical as i32,
            previous: HeartbeatLevel::Ok as i32,
            last_activity: t + 2 * 86_400,
            checked_at: t + 15 * 86_400,
            seconds_left: 86_400,
        }),
    );
    s.when(&hb);
    let n = s.views.number(NUMBER).expect("number");
    assert_eq!(n.heartbeat_level, HeartbeatLevel::Critical as i32);
    assert_eq!(n.heartbeat_seconds_left, 86_400);
    // The disconnect, with its reason.
    let removed = number_record(
        &mut log,
        t + 17 * 86_400,
        Fact::AccountUpdated(AccountUpdated {
            event: "PARTNER_REMOVED".to_string(),
            waba_id: "WABA1".to_string(),
            entry_time: t + 17 * 86_400,
            disconnection_reason: "PRIMARY_INACTIVITY".to_string(),
            phone_number_ids: vec![NUMBER.to_string()],
            ..AccountUpdated::default()
        }),
    );
    s.when(&removed);
    let n = s.views.number(NUMBER).expect("number");
    assert!(!n.connected);
    assert_eq!(n.disconnection_reason, "PRIMARY_INACTIVITY");
}

#[test]
fn throughput_peak_counts_sends_per_second_against_the_limit() {
    // 25 API sends in one second, 3 in the next: peak 25, one second over 20/s.
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let mut recs = Vec::new();
    for m in 0..25 {
        recs.push(log.api(1, m, t));
    }
    for m in 25..28 {
        recs.push(log.api(1, m, t + 1));
    }
    let s = Scenario::new(test_config()).given(&recs);
    let n = s.views.number(NUMBER).expect("number");
    assert_eq!(
        (n.peak_per_s, n.peak_at, n.seconds_over_limit, n.limit_per_s),
        (25, t, 1, 20)
    );
}

#[test]
fn eligibility_answers_for_a_number_and_a_day() {
    let day = |s: &str| s.parse::<Day>().unwrap_or_default();
    let uk = |d: &str| eligibility("+44 20 7946 0958", day(d)).map(|e| (e.country, e.supported));
    assert_eq!(uk("2025-09-13"), Ok(("GB".to_string(), false)));
    assert_eq!(uk("2026-02-01"), Ok(("GB".to_string(), true)));
    let za = eligibility("27215551234", day("2026-06-01")).map(|e| e.supported);
    assert_eq!(za, Ok(false));
}
