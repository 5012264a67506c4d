//! Properties of the fold over generated traffic: determinism, idempotency
//! (re-appending any subset adds nothing), and replay equivalence (the state
//! rebuilt by `evolve` over the records equals the live state).

mod support;

use proptest::prelude::*;
use support::*;
use twinlog_proto::v1::IngestEvent;

/// A small alphabet of wamids and times, so duplicates, edits of known and
/// unknown originals, and statuses before their messages all happen often.
fn event() -> impl Strategy<Value = IngestEvent> {
    let wamid = (0u8..12).prop_map(|i| format!("wamid.{i}"));
    let ts = (0i64..30).prop_map(|d| T0 + d * DAY_S / 2);
    prop_oneof![
        (wamid.clone(), ts.clone()).prop_map(|(w, t)| inbound(text(&w, t, "hello"))),
        (wamid.clone(), ts.clone()).prop_map(|(w, t)| echo(text(&w, t, "from the app"))),
        (wamid.clone(), ts.clone()).prop_map(|(w, t)| api_send(&w, t, "from the api")),
        (wamid.clone(), wamid.clone(), ts.clone()).prop_map(|(w, o, t)| echo(edit(
            &format!("{w}-e"),
            &o,
            t,
            "edited"
        ))),
        (wamid.clone(), wamid.clone(), ts.clone()).prop_map(|(w, o, t)| inbound(revoke(
            &format!("{w}-r"),
            &o,
            t
        ))),
        (
            wamid.clone(),
            prop::sample::select(vec![
                "sent",
                "delivered",
                "read",
                "played",
                "failed",
                "bogus"
            ]),
            ts.clone()
        )
            .prop_map(|(w, s, t)| status(&w, s, t)),
        (
            0i64..3,
            1i64..4,
            prop::collection::vec((wamid.clone(), 0i64..200, any::<bool>()), 0..4)
        )
            .prop_map(|(phase, order, msgs)| {
                let messages = msgs
                    .into_iter()
                    .map(|(w, age, out)| history_text(&w, T0 - age * DAY_S, out, "past"))
                    .collect();
                history_chunk(phase, order, order * 30, messages)
            }),
        (wamid.clone(), 0i64..20).prop_map(|(w, age)| history_media(&w, T0 - age * DAY_S)),
        ts.clone()
            .prop_map(|t| contact("add", CUSTOMER, "Pablo", t)),
        prop::sample::select(vec![
            "PARTNER_APP_INSTALLED",
            "PARTNER_REMOVED",
            "ACCOUNT_RECONNECTED"
        ])
        .prop_map(|e| account(e, T0)),
        Just(history_declined()),
        (0i64..40).prop_map(|d| tick(T0 + d * DAY_S / 2)),
        ts.prop_map(|t| inbound(text("", t, "missing id"))),
    ]
}

fn run(events: &[IngestEvent]) -> World {
    let mut w = given(vec![]);
    for e in events {
        w.when(e.clone());
    }
    w
}

fn bytes(w: &World) -> Vec<Vec<u8>> {
    w.records
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect()
}

proptest! {
    // PROPTEST_CASES raises the case count for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_same_inputs_give_the_same_records(events in prop::collection::vec(event(), 0..60)) {
        let a = run(&events);
        let b = run(&events);
        prop_assert_eq!(bytes(&a), bytes(&b));
        prop_assert_eq!(&a.state, &b.state);
    }

    #[test]
    fn re_appending_any_subset_adds_nothing(
        events in prop::collection::vec(event(), 0..60),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let mut w = run(&events);
        let before = w.records.len();
        // Clock ticks are readings of time, not inputs with a natural key: a
        // tick re-sent after later events may rightly fire a timer those
        // events armed. Every other input must add nothing the second time.
        let inputs: Vec<&IngestEvent> = events
            .iter()
            .filter(|e| !matches!(e.kind, Some(twinlog_proto::v1::ingest_event::Kind::Tick(_))))
            .collect();
        for pick in picks {
            if inputs.is_empty() { break; }
            let e = (*pick.get(&inputs)).clone();
            let outcome = w.when(e);
            prop_assert!(
                matches!(outcome, Outcome::Duplicate | Outcome::Idle),
                "re-appended input added {:?}", outcome
            );
        }
        prop_assert_eq!(w.records.len(), before);
    }

    #[test]
    fn evolve_over_the_records_rebuilds_the_live_state(events in prop::collection::vec(event(), 0..60)) {
        let w = run(&events);
        let mut rebuilt = twinlog_engine::State::default();
        for r in &w.records {
            twinlog_engine::evolve(&mut rebuilt, r);
        }
        prop_assert_eq!(rebuilt, w.state);
    }
}
