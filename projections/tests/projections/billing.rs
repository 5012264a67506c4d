//! Golden billing cases, one per regime rule. Rates come from `TEST_CARD`
//! (build.rs), in micro-dollars: North America (US, CA) marketing 25,000
//! ($0.025), utility 4,000 then 3,400 from 2025-07-01, service 8,800 (CBP)
//! and 3,400 from 2026-10-01.

use twinlog_projections::{parse_pricing_analytics, reconcile, Config, Day, Views};
use twinlog_proto::v1::{Channel, LedgerAccount, LedgerEntry, LedgerEntryKind};

use crate::build::{at, pricing, test_config, Log, Rec, Scenario, NUMBER};

fn run(config: Config, records: &[Rec]) -> Views {
    Scenario::new(config).given(records).views
}

/// (kind, reason, amount) of every entry, in order.
fn entries(v: &Views) -> Vec<(LedgerEntryKind, String, i64)> {
    v.ledger_entries()
        .iter()
        .map(|e| {
            (
                LedgerEntryKind::try_from(e.kind).unwrap_or(LedgerEntryKind::Unspecified),
                e.reason.clone(),
                e.amount_micros,
            )
        })
        .collect()
}

fn balance(v: &Views, account: LedgerAccount) -> i64 {
    v.ledger_entries()
        .iter()
        .flat_map(|e| &e.lines)
        .filter(|l| l.account == account as i32)
        .map(|l| l.debit_micros - l.credit_micros)
        .sum()
}

/// Every entry balances (debits = credits), and pending accounts net out
/// once nothing is in flight.
fn assert_balanced(v: &Views) {
    for e in v.ledger_entries() {
        let debits: i64 = e.lines.iter().map(|l| l.debit_micros).sum();
        let credits: i64 = e.lines.iter().map(|l| l.credit_micros).sum();
        assert_eq!(debits, credits, "entry {} balances", e.id);
    }
}

fn api_cost(v: &Views, day: &str, category: &str) -> (u64, u64, i64) {
    let day: Day = day.parse().unwrap_or_default();
    v.billing_aggregate(NUMBER, day, Channel::Api, category)
        .map(|a| (a.messages, a.billable, a.cost_micros))
        .unwrap_or_default()
}

use LedgerEntryKind::{Pending, Posted, Voided};

#[test]
fn cbp_charges_a_conversation_once() {
    // 2025-03-10 (CBP): three marketing messages in conversation c1, a fourth
    // in c2. Charge = 1 conversation × 25,000 for c1 + 1 × 25,000 for c2 = 50,000.
    let mut log = Log::new();
    let t = at("2025-03-10", 9, 0);
    let p = || pricing("CBP", "regular", "marketing");
    let mut recs = Vec::new();
    for (m, conv) in [(1, "c1"), (2, "c1"), (3, "c1"), (4, "c2")] {
        let sent = t + i64::from(m) * 60;
        recs.push(log.api(1, m, sent));
        recs.push(log.status_in(1, m, "sent", sent + 1, p(), conv));
        recs.push(log.status_in(1, m, "delivered", sent + 2, p(), conv));
    }
    let v = run(test_config(), &recs);
    let posted: Vec<_> = entries(&v).into_iter().filter(|e| e.0 == Posted).collect();
    assert_eq!(
        posted,
        [
            (Posted, "charged".to_string(), 25_000),
            (Posted, "same_conversation".to_string(), 0),
            (Posted, "same_conversation".to_string(), 0),
            (Posted, "charged".to_string(), 25_000),
        ]
    );
    assert!(v.ledger_entries().iter().all(|e| e.regime == "cbp"));
    // 4 messages, 2 billable, 50,000.
    assert_eq!(api_cost(&v, "2025-03-10", "marketing"), (4, 2, 50_000));
    assert_eq!(balance(&v, LedgerAccount::Charges), 50_000);
    assert_eq!(balance(&v, LedgerAccount::PendingCharges), 0);
    assert_balanced(&v);
}

#[test]
fn cbp_service_is_free_from_2024_11_01() {
    // A service conversation on 2024-10-31 costs 8,800; one on 2024-11-01 costs 0.
    let mut log = Log::new();
    let p = || pricing("CBP", "regular", "service");
    let before = at("2024-10-31", 12, 0);
    let after = at("2024-11-01", 12, 0);
    let recs = [
        log.api(1, 1, before),
        log.status_in(1, 1, "delivered", before + 5, p(), "s1"),
        log.api(1, 2, after),
        log.status_in(1, 2, "delivered", after + 5, p(), "s2"),
    ];
    let v = run(test_config(), &recs);
    assert_eq!(
        entries(&v),
        [
            (Posted, "charged".to_string(), 8_800),
            (Posted, "free_service".to_string(), 0)
        ]
    );
    assert_eq!(api_cost(&v, "2024-10-31", "service"), (1, 1, 8_800));
    assert_eq!(api_cost(&v, "2024-11-01", "service"), (1, 0, 0));
}

#[test]
fn pmp_charges_a_delivered_marketing_template() {
    // 2025-08-01 (PMP): sent → pending 25,000; delivered → posted 25,000.
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let p = || pricing("PMP", "regular", "marketing");
    let recs = [log.api(1, 1, t), log.status(1, 1, "sent", t + 1, p())];
    let mut s = Scenario::new(test_config()).given(&recs);
    assert_eq!(
        entries(&s.views),
        [(Pending, "charged".to_string(), 25_000)]
    );
    assert_eq!(balance(&s.views, LedgerAccount::PendingCharges), 25_000);
    assert_eq!(api_cost(&s.views, "2025-08-01", "marketing"), (1, 0, 0));
    s.when(&log.status(1, 1, "delivered", t + 2, p()));
    assert_eq!(
        entries(&s.views),
        [
            (Pending, "charged".to_string(), 25_000),
            (Posted, "charged".to_string(), 25_000)
        ]
    );
    // The posting reverses the pending 25,000 and books 25,000.
    assert_eq!(balance(&s.views, LedgerAccount::PendingCharges), 0);
    assert_eq!(balance(&s.views, LedgerAccount::Charges), 25_000);
    assert_eq!(balance(&s.views, LedgerAccount::Payable), -25_000);
    assert_eq!(
        api_cost(&s.views, "2025-08-01", "marketing"),
        (1, 1, 25_000)
    );
    let e: &LedgerEntry = &s.views.ledger_entries()[1];
    assert_eq!(
        (e.regime.as_str(), e.market.as_str(), e.country.as_str()),
        ("pmp", "North America", "US")
    );
    assert_eq!(e.currency, "USD");
    assert_balanced(&s.views);
    // A read after posting books nothing more.
    s.when(&log.status(1, 1, "read", t + 3, None));
    assert_eq!(s.views.ledger_entries().len(), 2);
}

#[test]
fn pmp_service_and_in_window_utility_are_free() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let recs = [
        log.inbound(1, 1, t),
        log.api(1, 2, t + 60),
        log.status(
            1,
            2,
            "delivered",
            t + 61,
            pricing("PMP", "free_customer_service", "service"),
        ),
        log.api(1, 3, t + 120),
        log.status(
            1,
            3,
            "delivered",
            t + 121,
            pricing("PMP", "free_customer_service", "utility"),
        ),
        log.api(1, 4, t + 180),
        log.status(
            1,
            4,
            "delivered",
            t + 181,
            pricing("PMP", "free_entry_point", "marketing"),
        ),
    ];
    let v = run(test_config(), &recs);
    assert_eq!(
        entries(&v),
        [
            (Posted, "free_service".to_string(), 0),
            (Posted, "meta_free".to_string(), 0),
            (Posted, "free_entry_point".to_string(), 0),
        ]
    );
    assert_eq!(api_cost(&v, "2025-08-01", "service"), (1, 0, 0));
    assert_eq!(api_cost(&v, "2025-08-01", "utility"), (1, 0, 0));
    // The inbound message counts, free, under the customer channel.
    let day: Day = "2025-08-01".parse().unwrap_or_default();
    let inbound = v
        .billing_aggregate(NUMBER, day, Channel::Customer, "")
        .map(|a| (a.messages, a.cost_micros));
    assert_eq!(inbound, Some((1, 0)));
}

#[test]
fn a_failure_after_sent_voids_the_pending_charge() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let p = || pricing("PMP", "regular", "marketing");
    let recs = [
        log.api(1, 1, t),
        log.status(1, 1, "sent", t + 1, p()),
        log.status(1, 1, "failed", t + 2, None),
    ];
    let v = run(test_config(), &recs);
    // pending 25,000, then voided 25,000: nothing charged.
    assert_eq!(
        entries(&v),
        [
            (Pending, "charged".to_string(), 25_000),
            (Voided, "charged".to_string(), 25_000)
        ]
    );
    assert_eq!(balance(&v, LedgerAccount::PendingCharges), 0);
    assert_eq!(balance(&v, LedgerAccount::Charges), 0);
    assert_eq!(api_cost(&v, "2025-08-01", "marketing"), (1, 0, 0));
    assert_balanced(&v);
}

#[test]
fn pricing_first_seen_on_read_posts_then() {
    // sent and delivered carry no pricing; read does: posted 25,000 at read.
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let recs = [
        log.api(1, 1, t),
        log.status(1, 1, "sent", t + 1, None),
        log.status(1, 1, "delivered", t + 2, None),
    ];
    let mut s = Scenario::new(test_config()).given(&recs);
    assert!(s.views.ledger_entries().is_empty());
    assert_eq!(api_cost(&s.views, "2025-08-01", ""), (1, 0, 0));
    s.when(&log.status(1, 1, "read", t + 3, pricing("PMP", "regular", "marketing")));
    assert_eq!(entries(&s.views), [(Posted, "charged".to_string(), 25_000)]);
    // The message moved from the unpriced bucket to marketing.
    assert_eq!(api_cost(&s.views, "2025-08-01", ""), (0, 0, 0));
    assert_eq!(
        api_cost(&s.views, "2025-08-01", "marketing"),
        (1, 1, 25_000)
    );
    assert_eq!(s.views.ledger_entries()[0].seq, 3);
}

#[test]
fn the_2026_free_tier_is_exhausted_at_message_tier_plus_one() {
    // Tier = 3 per number and month. Five delivered service messages in
    // October 2026: 1-3 free (free_tier), 4 and 5 charged at 3,400 = 6,800.
    // One in November: the tier starts again, free.
    let mut config = test_config();
    config.billing.service_free_tier_per_month = 3;
    let mut log = Log::new();
    let t = at("2026-10-05", 8, 0);
    let mut recs = Vec::new();
    for m in 1..=5u32 {
        let sent = t + i64::from(m) * 60;
        recs.push(log.api(1, m, sent));
        recs.push(log.status(
            1,
            m,
            "delivered",
            sent + 1,
            pricing("PMP", "free_customer_service", "service"),
        ));
    }
    let nov = at("2026-11-01", 8, 0);
    recs.push(log.api(1, 6, nov));
    recs.push(log.status(
        1,
        6,
        "delivered",
        nov + 1,
        pricing("PMP", "free_customer_service", "service"),
    ));
    let v = run(config, &recs);
    let reasons: Vec<_> = entries(&v).into_iter().map(|e| (e.1, e.2)).collect();
    let free = || ("free_tier".to_string(), 0);
    let charged = || ("charged".to_string(), 3_400);
    assert_eq!(
        reasons,
        [free(), free(), free(), charged(), charged(), free()]
    );
    assert!(v.ledger_entries().iter().all(|e| e.regime == "pmp_2026"));
    assert_eq!(api_cost(&v, "2026-10-05", "service"), (5, 2, 6_800));
    assert_eq!(api_cost(&v, "2026-11-01", "service"), (1, 0, 0));
}

#[test]
fn app_messages_are_free_and_savings_count_what_the_api_would_cost() {
    // Two app messages on 2025-08-01: one 1 h after the customer wrote (in
    // window: free through the API too), one without any window (needs a
    // utility template: 3,400). Savings = 3,400.
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let recs = [
        log.inbound(1, 1, t),
        log.echo(1, 2, t + 3600),
        log.echo(2, 3, t + 3600),
    ];
    let v = run(test_config(), &recs);
    let savings: Vec<_> = v
        .savings()
        .map(|s| {
            (
                s.app_messages,
                s.in_window,
                s.outside_window,
                s.would_cost_micros,
            )
        })
        .collect();
    assert_eq!(savings, [(2, 1, 1, 3_400)]);
    let day: Day = "2025-08-01".parse().unwrap_or_default();
    let app = v
        .billing_aggregate(NUMBER, day, Channel::App, "")
        .map(|a| (a.messages, a.billable, a.cost_micros));
    assert_eq!(app, Some((2, 0, 0)));
    assert!(v.ledger_entries().is_empty());
}

#[test]
fn reconciliation_reports_where_meta_disagrees() {
    // The ledger: two delivered US marketing messages on 2025-08-01 = 50,000.
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let p = || pricing("PMP", "regular", "marketing");
    let recs = [
        log.api(1, 1, t),
        log.status(1, 1, "delivered", t + 1, p()),
        log.api(1, 2, t + 10),
        log.status(1, 2, "delivered", t + 11, p()),
    ];
    let v = run(test_config(), &recs);
    let start = at("2025-08-01", 0, 0);
    let response = |volume: u64, cost: &str| {
        format!(
            r#"{{"pricing_analytics":{{"data":[{{"data_points":[
                {{"start":{start},"end":{end},"country":"US","pricing_type":"REGULAR","pricing_category":"MARKETING","volume":{volume},"cost":{cost}}},
                {{"start":{start},"end":{end},"country":"US","pricing_type":"FREE_CUSTOMER_SERVICE","pricing_category":"SERVICE","volume":0,"cost":0}}
            ]}}]}},"id":"WABA1"}}"#,
            end = start + 86_400
        )
    };
    // Meta agrees: 2 messages, $0.05.
    let meta = parse_pricing_analytics(&response(2, "0.05")).expect("meta json");
    assert_eq!(reconcile(&v, &meta, 0), []);
    // Meta counts 3 messages, $0.075: one line, 25,000 apart.
    let meta = parse_pricing_analytics(&response(3, "0.075")).expect("meta json");
    let lines = reconcile(&v, &meta, 0);
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].ledger_volume, lines[0].meta_volume), (2, 3));
    assert_eq!(lines[0].cost_difference_micros(), -25_000);
    assert_eq!(
        (lines[0].country.as_str(), lines[0].category.as_str()),
        ("US", "marketing")
    );
    // A cost within the tolerance and equal volumes is no line.
    let meta = parse_pricing_analytics(&response(2, "0.050001")).expect("meta json");
    assert_eq!(reconcile(&v, &meta, 1), []);
}

#[test]
fn a_message_with_no_rate_is_billable_at_zero_and_says_so() {
    let mut log = Log::new();
    log.country = "BR".to_string();
    let t = at("2025-08-01", 10, 0);
    // The test card has an Other market for marketing only: utility has no rate.
    let recs = [
        log.api(1, 1, t),
        log.status(
            1,
            1,
            "delivered",
            t + 1,
            pricing("PMP", "regular", "utility"),
        ),
    ];
    let v = run(test_config(), &recs);
    assert_eq!(entries(&v), [(Posted, "no_rate".to_string(), 0)]);
    assert_eq!(v.ledger_entries()[0].market, "Other");
    assert_eq!(api_cost(&v, "2025-08-01", "utility"), (1, 1, 0));
}
