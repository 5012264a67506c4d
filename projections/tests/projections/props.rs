//! Properties: replay equivalence, idempotency, determinism, forget.

use proptest::prelude::*;
use twinlog_projections::{Config, Views};
use twinlog_proto::v1::{Channel, RevisionKind};

use crate::build::{at, pricing, test_config, Log, Rec};

#[derive(Debug, Clone)]
enum Op {
    Inbound(u32),
    Echo(u32),
    Api(u32),
    Status(u32, u8, u8),
    Edit(u32, bool),
    Contact(u32, bool),
    Erase(u32),
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u32).prop_map(Op::Inbound),
        2 => (0..4u32).prop_map(Op::Echo),
        3 => (0..4u32).prop_map(Op::Api),
        4 => (0..12u32, 0..5u8, 0..5u8).prop_map(|(m, s, p)| Op::Status(m, s, p)),
        1 => (0..12u32, any::<bool>()).prop_map(|(m, e)| Op::Edit(m, e)),
        1 => (0..4u32, any::<bool>()).prop_map(|(c, a)| Op::Contact(c, a)),
        1 => (0..4u32).prop_map(Op::Erase),
        2 => (1..100_000u32).prop_map(Op::Wait),
    ]
}

/// Builds records from ops: messages get keys 0, 1, 2, … and belong to
/// customer key % 4; time moves forward by a few minutes per record, across
/// the regime boundaries.
fn records(start: i64, ops: &[Op]) -> Vec<Rec> {
    let mut log = Log::new();
    let mut now = start;
    let mut next_message = 0u32;
    let mut out = Vec::new();
    for op in ops {
        now += 97;
        let rec = match *op {
            Op::Inbound(c) | Op::Echo(c) | Op::Api(c) => {
                let m = next_message;
                next_message += 1;
                match op {
                    Op::Inbound(_) => log.inbound(c, m, now),
                    Op::Echo(_) => log.echo(c, m, now),
                    _ => log.api(c, m, now),
                }
            }
            Op::Status(m, s, p) => {
                let status = ["sent", "delivered", "read", "failed", "played"][usize::from(s)];
                let pricing = match p {
                    0 => None,
                    1 => pricing("PMP", "regular", "marketing"),
                    2 => pricing("PMP", "free_customer_service", "service"),
                    3 => pricing("CBP", "regular", "utility"),
                    _ => pricing("PMP", "regular", "utility"),
                };
                log.status(m % 4, m, status, now, pricing)
            }
            Op::Edit(m, edit) => {
                let kind = if edit {
                    RevisionKind::Edit
                } else {
                    RevisionKind::Revoke
                };
                log.revision(
                    m % 4,
                    m,
                    10_000 + m,
                    (kind, Channel::Customer),
                    now,
                    "edited",
                )
            }
            Op::Contact(c, add) => {
                log.contact_sync(c, if add { "add" } else { "remove" }, "Name", now)
            }
            Op::Erase(c) => log.erase(c),
            Op::Wait(s) => {
                now += i64::from(s) * 10;
                log.nudge(now)
            }
        };
        out.push(rec);
    }
    out
}

fn fold(config: &Config, recs: &[Rec]) -> Views {
    Views::rebuild(config, recs.iter().map(Rec::input))
}

fn start() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(at("2024-10-31", 20, 0)),
        Just(at("2025-06-30", 22, 0)),
        Just(at("2026-09-30", 23, 0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Views kept record by record, saved as a snapshot and restored at any point,
    /// with duplicates re-applied anywhere, equal the views rebuilt from scratch.
    #[test]
    fn incremental_equals_rebuilt(start in start(), ops in prop::collection::vec(op(), 0..60), cut in 0usize..60, dups in prop::collection::vec(0usize..60, 0..10)) {
        let mut config = test_config();
        config.billing.service_free_tier_per_month = 2;
        let recs = records(start, &ops);
        let rebuilt = fold(&config, &recs);
        let mut views = Views::default();
        for (i, r) in recs.iter().enumerate() {
            if i == cut {
                // A worker stores a snapshot and restarts from it.
                let bytes = views.snapshot_bytes();
                let restored = Views::from_snapshot_bytes(&bytes);
                prop_assert_eq!(restored.as_ref(), Ok(&views));
                views = restored.unwrap_or_default();
            }
            views.apply(&config, r.input());
            for &d in &dups {
                if d <= i {
                    let replay = views.apply(&config, recs[d].input());
                    prop_assert!(replay.is_empty(), "a duplicate reported changes");
                }
            }
        }
        prop_assert_eq!(&views, &rebuilt);
        prop_assert_eq!(views.digest(), rebuilt.digest());
        prop_assert_eq!(views.canonical_bytes(), fold(&config, &recs).canonical_bytes());
        prop_assert_eq!(views.snapshot_bytes(), rebuilt.snapshot_bytes());
    }

    /// A rebuild after a forget, when the vault can no longer open the
    /// forgotten customers' records, equals the views kept incrementally.
    #[test]
    fn rebuild_without_forgotten_keys_equals_incremental(start in start(), ops in prop::collection::vec(op(), 0..60)) {
        let config = test_config();
        let recs = records(start, &ops);
        let incremental = fold(&config, &recs);
        let erased: Vec<Vec<u8>> = recs.iter().filter_map(|r| match &r.record.fact {
            Some(twinlog_proto::v1::audit_record::Fact::CustomerErased(e)) => Some(e.customer.clone()),
            _ => None,
        }).collect();
        let sealed: Vec<Rec> = recs.iter().cloned().map(|mut r| {
            if erased.contains(&r.record.customer) {
                r.personal = None;
            }
            r
        }).collect();
        let rebuilt = fold(&config, &sealed);
        prop_assert_eq!(incremental.digest(), rebuilt.digest());
        prop_assert_eq!(&incremental, &rebuilt);
        for c in &erased {
            let contact = incremental.contact(c);
            prop_assert!(contact.is_some_and(|c| c.forgotten && c.profile_name.is_empty() && c.phone.is_empty()));
        }
    }

    /// Every ledger entry balances, and the aggregates' cost equals the
    /// posted and corrected charges.
    #[test]
    fn the_ledger_balances(start in start(), ops in prop::collection::vec(op(), 0..80)) {
        let config = test_config();
        let views = fold(&config, &records(start, &ops));
        let mut charges = 0i64;
        for e in views.ledger_entries() {
            let debit: i64 = e.lines.iter().map(|l| l.debit_micros).sum();
            let credit: i64 = e.lines.iter().map(|l| l.credit_micros).sum();
            prop_assert_eq!(debit, credit);
            charges += e.lines.iter()
                .filter(|l| l.account == twinlog_proto::v1::LedgerAccount::Charges as i32)
                .map(|l| l.debit_micros - l.credit_micros)
                .sum::<i64>();
        }
        let cost: i64 = views.billing_aggregates().map(|a| a.cost_micros).sum();
        prop_assert_eq!(cost, charges);
    }
}
