//! One given/when/then test per coexistence rule. Snapshots print each
//! outcome with tags by name; `UPDATE_EXPECT=1 cargo test` rewrites them.

mod support;

use expect_test::expect;
use support::*;
use twinlog_proto::v1::{
    audit_record::Fact as F, HeartbeatLevel, Identity, RevisionKind, StatusEffect,
};

fn check(
    world: &mut World,
    event: twinlog_proto::v1::IngestEvent,
    expected: expect_test::Expect,
) -> Outcome {
    let outcome = world.when(event);
    expected.assert_eq(&world.describe(&outcome));
    outcome
}

// ---- deduplication ---------------------------------------------------------

#[test]
fn a_redelivered_message_is_a_duplicate_forever() {
    let mut w = given(vec![inbound(text(
        "wamid.IN1",
        T0,
        "Does it come in another color?",
    ))]);
    // Many unrelated events later, and long after any time window.
    for i in 0..50 {
        w.when(inbound(text(&format!("wamid.X{i}"), T0 + i, "filler")));
    }
    w.when(tick(T0 + 400 * DAY_S));
    check(
        &mut w,
        inbound(text("wamid.IN1", T0, "Does it come in another color?")),
        expect![[r#"
        duplicate
    "#]],
    );
    // The index is rebuilt from the records, not kept on the side.
    let mut rebuilt = twinlog_engine::State::default();
    for r in &w.records {
        twinlog_engine::evolve(&mut rebuilt, r);
    }
    assert!(rebuilt.seen.contains(&w.tagger_tag("wamid", "wamid.IN1")));
}

#[test]
fn a_message_is_recorded_once_with_its_channel() {
    let mut w = given(vec![]);
    check(
        &mut w,
        inbound(text("wamid.IN1", T0, "hi")),
        expect![[r#"
        appended 1
          {"message_recorded":{"channel":"CHANNEL_CUSTOMER","message_key":"wamid:wamid.IN1","provenance":"PROVENANCE_LIVE","timestamp":"1763370000","type":"text"}} customer=phone:16505551234 links=[phone:16505551234->phone:16505551234]
    "#]],
    );
    check(
        &mut w,
        echo(reply(
            text("wamid.ECHO1", T0 + 60, "Yes, in blue"),
            "wamid.IN1",
        )),
        expect![[r#"
        appended 1
          {"message_recorded":{"channel":"CHANNEL_APP","message_key":"wamid:wamid.ECHO1","provenance":"PROVENANCE_LIVE","reply_to":"wamid:wamid.IN1","timestamp":"1763370060","type":"text"}} customer=phone:16505551234
    "#]],
    );
    check(
        &mut w,
        api_send("wamid.API1", T0 + 120, "Your code is 1234"),
        expect![[r#"
        appended 1
          {"message_recorded":{"channel":"CHANNEL_API","message_key":"wamid:wamid.API1","provenance":"PROVENANCE_LIVE","timestamp":"1763370120","type":"text"}} customer=phone:16505551234
    "#]],
    );
}

// ---- edits and revokes -------------------------------------------------------

#[test]
fn app_edits_and_revokes_are_revisions_beside_the_original() {
    let mut w = given(vec![echo(text(
        "wamid.ECHO1",
        T0,
        "Yes, in blue and green.",
    ))]);
    check(
        &mut w,
        echo(edit(
            "wamid.ECHO1-EDIT",
            "wamid.ECHO1",
            T0 + 50,
            "Yes, in blue, green and red.",
        )),
        expect![[r#"
        appended 1
          {"revision_recorded":{"by":"CHANNEL_APP","kind":"REVISION_KIND_EDIT","new_type":"text","original_key":"wamid:wamid.ECHO1","original_known":true,"revision_key":"wamid:wamid.ECHO1-EDIT","revision_number":1,"timestamp":"1763370050"}} customer=phone:16505551234
    "#]],
    );
    check(
        &mut w,
        echo(revoke("wamid.ECHO1-REVOKE", "wamid.ECHO1", T0 + 100)),
        expect![[r#"
        appended 1
          {"revision_recorded":{"by":"CHANNEL_APP","kind":"REVISION_KIND_REVOKE","original_key":"wamid:wamid.ECHO1","original_known":true,"revision_key":"wamid:wamid.ECHO1-REVOKE","revision_number":2,"timestamp":"1763370100"}} customer=phone:16505551234
    "#]],
    );
    // The original is still there, untouched, as the first record.
    assert!(matches!(fact_of(&w.records[0]), F::MessageRecorded(m) if m.r#type == "text"));
    assert_eq!(w.records.len(), 3);
}

#[test]
fn customer_edits_and_revokes_are_revisions_by_the_customer() {
    let mut w = given(vec![inbound(text("wamid.IN1", T0, "blue?"))]);
    let out = w.when(inbound(edit(
        "wamid.IN1-EDIT",
        "wamid.IN1",
        T0 + 30,
        "green?",
    )));
    let F::RevisionRecorded(r) = fact_of(&out.records()[0]) else {
        panic!("not a revision: {out:?}")
    };
    assert_eq!(r.by, twinlog_proto::v1::Channel::Customer as i32);
    assert_eq!(r.kind, RevisionKind::Edit as i32);
    let out = w.when(inbound(revoke("wamid.IN1-REVOKE", "wamid.IN1", T0 + 60)));
    let F::RevisionRecorded(r) = fact_of(&out.records()[0]) else {
        panic!("not a revision")
    };
    assert_eq!(
        (r.kind, r.revision_number),
        (RevisionKind::Revoke as i32, 2)
    );
}

#[test]
fn a_revision_before_its_original_is_kept_and_marked() {
    let mut w = given(vec![]);
    let out = w.when(echo(revoke("wamid.R", "wamid.UNSEEN", T0)));
    let F::RevisionRecorded(r) = fact_of(&out.records()[0]) else {
        panic!("not a revision")
    };
    assert!(!r.original_known);
}

// ---- group traffic -------------------------------------------------------------

#[test]
fn group_traffic_is_recorded_as_out_of_scope() {
    let mut w = given(vec![]);
    let mut m = text("wamid.G1", T0, "group hello");
    m.group_id = "120363000000000000".into();
    check(
        &mut w,
        inbound(m),
        expect![[r#"
        appended 1
          {"out_of_scope":{"kind":"INPUT_KIND_INBOUND","reason":"group"}} customer=phone:16505551234
    "#]],
    );
    let mut s = status("wamid.G2", "delivered", T0);
    if let Some(twinlog_proto::v1::ingest_event::Kind::Status(st)) = &mut s.kind {
        st.recipient_type = "group".into();
    }
    let out = w.when(s);
    assert!(matches!(fact_of(&out.records()[0]), F::OutOfScope(o) if o.reason == "group"));
    // Out of scope is still deduplicated.
    let mut m = text("wamid.G1", T0, "group hello");
    m.group_id = "120363000000000000".into();
    assert_eq!(w.when(inbound(m)), Outcome::Duplicate);
}

// ---- history -----------------------------------------------------------------------

#[test]
fn a_history_chunk_imports_its_messages_and_placeholders() {
    let mut w = given(vec![account("PARTNER_APP_INSTALLED", T0)]);
    check(
        &mut w,
        history_chunk(
            1,
            2,
            40,
            vec![
                history_text("wamid.H1", T0 - 30 * DAY_S, true, "Your order shipped."),
                history_text("wamid.H2", T0 - 30 * DAY_S + 600, false, "Thank you!"),
                placeholder("wamid.H3", T0 - 2 * DAY_S),
            ],
        ),
        expect![[r#"
        appended 4
          {"history_chunk_recorded":{"chunk_order":"2","messages_imported":3,"messages_total":3,"phase":"1","progress":"40","thread_count":1}} customer=phone:16505551234 links=[phone:16505551234->phone:16505551234]
          {"message_recorded":{"channel":"CHANNEL_APP","history_phase":"1","history_status":"READ","message_key":"wamid:wamid.H1","provenance":"PROVENANCE_HISTORY","timestamp":"1760778000","type":"text"}} customer=phone:16505551234
          {"message_recorded":{"channel":"CHANNEL_CUSTOMER","history_phase":"1","history_status":"READ","message_key":"wamid:wamid.H2","provenance":"PROVENANCE_HISTORY","timestamp":"1760778600","type":"text"}} customer=phone:16505551234
          {"message_recorded":{"channel":"CHANNEL_APP","history_phase":"1","history_status":"DELIVERED","media_pending":true,"message_key":"wamid:wamid.H3","provenance":"PROVENANCE_HISTORY","timestamp":"1763197200","type":"media_placeholder"}} customer=phone:16505551234
    "#]],
    );
    // The media follow-up enriches the placeholder; it is not an edit.
    check(
        &mut w,
        history_media("wamid.H3", T0 - 2 * DAY_S),
        expect![[r#"
        appended 1
          {"media_enriched":{"media_age_s":"172800","message_key":"wamid:wamid.H3","type":"image"}} customer=phone:16505551234
    "#]],
    );
    assert!(!w.state.messages[&w.tagger_tag("wamid", "wamid.H3")].media_pending);
    assert_eq!(
        w.when(history_media("wamid.H3", T0 - 2 * DAY_S)),
        Outcome::Duplicate
    );
    // The same chunk delivered again adds nothing.
    assert_eq!(
        w.when(history_chunk(
            1,
            2,
            40,
            vec![history_text(
                "wamid.H1",
                T0 - 30 * DAY_S,
                true,
                "Your order shipped."
            )]
        )),
        Outcome::Duplicate
    );
}

#[test]
fn history_chunks_out_of_order_and_progress_to_complete() {
    let mut w = given(vec![account("PARTNER_APP_INSTALLED", T0)]);
    let late = w.when(history_chunk(
        2,
        1,
        100,
        vec![history_text("wamid.OLD", T0 - 120 * DAY_S, false, "old")],
    ));
    let early = w.when(history_chunk(
        0,
        1,
        10,
        vec![history_text("wamid.NEW", T0 - 3600, false, "new")],
    ));
    let F::HistoryChunkRecorded(l) = fact_of(&late.records()[0]) else {
        panic!()
    };
    let F::HistoryChunkRecorded(e) = fact_of(&early.records()[0]) else {
        panic!()
    };
    assert!(l.complete && !e.complete);
    assert_eq!((l.messages_imported, e.messages_imported), (1, 1));
    assert_eq!(w.state.wabas[WABA].history_progress, 100);
}

#[test]
fn history_older_than_180_days_is_not_imported() {
    let mut w = given(vec![account("PARTNER_APP_INSTALLED", T0)]);
    let out = w.when(history_chunk(
        2,
        3,
        90,
        vec![
            history_text("wamid.ANCIENT", T0 - 181 * DAY_S, false, "too old"),
            history_text("wamid.OK", T0 - 179 * DAY_S, false, "fine"),
        ],
    ));
    let F::HistoryChunkRecorded(h) = fact_of(&out.records()[0]) else {
        panic!()
    };
    assert_eq!((h.too_old, h.messages_imported), (1, 1));
    assert_eq!(out.records().len(), 2);
}

#[test]
fn history_media_older_than_14_days_is_rejected_with_evidence() {
    let mut w = given(vec![
        account("PARTNER_APP_INSTALLED", T0),
        history_chunk(1, 1, 50, vec![placeholder("wamid.P", T0 - 20 * DAY_S)]),
    ]);
    check(
        &mut w,
        history_media("wamid.P", T0 - 20 * DAY_S),
        expect![[r#"
        rejected history_media_too_old 1
          {"rejected":{"detail":"media sent 1728000 s before onboarding, beyond the 1209600 s Meta serves","reason":"history_media_too_old"}} customer=phone:16505551234
    "#]],
    );
    assert!(w.state.messages[&w.tagger_tag("wamid", "wamid.P")].media_pending);
}

#[test]
fn history_that_overlaps_live_traffic_is_deduplicated() {
    let mut w = given(vec![
        account("PARTNER_APP_INSTALLED", T0),
        inbound(text("wamid.LIVE", T0 + 10, "live")),
    ]);
    let out = w.when(history_chunk(
        0,
        1,
        100,
        vec![
            history_text("wamid.LIVE", T0 + 10, false, "live"),
            history_text("wamid.ONLYHIST", T0 - 10, false, "hist"),
        ],
    ));
    let F::HistoryChunkRecorded(h) = fact_of(&out.records()[0]) else {
        panic!()
    };
    assert_eq!((h.duplicates, h.messages_imported), (1, 1));
}

#[test]
fn declined_history_is_recorded() {
    let mut w = given(vec![
        account("PARTNER_APP_INSTALLED", T0),
        inbound(text("wamid.A", T0, "a")),
    ]);
    check(
        &mut w,
        history_declined(),
        expect![[r#"
        appended 1
          {"history_declined":{"error_code":"2593109"}}
    "#]],
    );
    assert!(w.state.wabas[WABA].history_synced);
    assert_eq!(w.when(history_declined()), Outcome::Duplicate);
}

// ---- statuses ---------------------------------------------------------------------

fn effect(out: &Outcome) -> i32 {
    match fact_of(&out.records()[0]) {
        F::StatusRecorded(s) => s.effect,
        other => panic!("not a status: {other:?}"),
    }
}

#[test]
fn statuses_only_move_forward_and_failed_is_terminal() {
    let mut w = given(vec![api_send("wamid.API1", T0, "offer")]);
    assert_eq!(
        effect(&w.when(status("wamid.API1", "sent", T0 + 1))),
        StatusEffect::Advanced as i32
    );
    assert_eq!(
        effect(&w.when(status("wamid.API1", "read", T0 + 3))),
        StatusEffect::Advanced as i32
    );
    // delivered arrives after read: kept, changes nothing.
    assert_eq!(
        effect(&w.when(status("wamid.API1", "delivered", T0 + 2))),
        StatusEffect::Stale as i32
    );
    assert_eq!(
        w.state.messages[&w.tagger_tag("wamid", "wamid.API1")].status_rank,
        3
    );
    assert_eq!(
        w.when(status("wamid.API1", "read", T0 + 3)),
        Outcome::Duplicate
    );

    let mut w = given(vec![
        api_send("wamid.API2", T0, "offer"),
        status("wamid.API2", "sent", T0 + 1),
    ]);
    assert_eq!(
        effect(&w.when(status("wamid.API2", "failed", T0 + 2))),
        StatusEffect::Advanced as i32
    );
    assert_eq!(
        effect(&w.when(status("wamid.API2", "delivered", T0 + 3))),
        StatusEffect::AfterTerminal as i32
    );
    assert_eq!(
        effect(&w.when(status("wamid.API2", "deleted", T0 + 4))),
        StatusEffect::Unrecognised as i32
    );
}

#[test]
fn a_status_before_its_message_is_kept_and_joined_later() {
    let mut w = given(vec![]);
    check(
        &mut w,
        status("wamid.API9", "delivered", T0 + 5),
        expect![[r#"
        appended 1
          {"status_recorded":{"effect":"STATUS_EFFECT_ORPHANED","message_key":"wamid:wamid.API9","pricing":{"billable":true,"category":"marketing","pricing_model":"PMP","type":"regular"},"status":"delivered","timestamp":"1763370005"}} customer=phone:16505551234 links=[phone:16505551234->phone:16505551234]
    "#]],
    );
    w.when(status("wamid.API9", "sent", T0 + 4));
    check(
        &mut w,
        api_send("wamid.API9", T0, "hello"),
        expect![[r#"
        appended 1
          {"message_recorded":{"channel":"CHANNEL_API","joined_status":"delivered","message_key":"wamid:wamid.API9","provenance":"PROVENANCE_LIVE","statuses_joined":2,"timestamp":"1763370000","type":"text"}} customer=phone:16505551234
    "#]],
    );
    assert!(w.state.orphan_statuses.is_empty());
    assert_eq!(
        effect(&w.when(status("wamid.API9", "read", T0 + 9))),
        StatusEffect::Advanced as i32
    );
}

// ---- onboarding sync window ------------------------------------------------------

#[test]
fn the_sync_window_closes_24_hours_after_install() {
    let mut w = given(vec![]);
    check(
        &mut w,
        account("PARTNER_APP_INSTALLED", T0),
        expect![[r#"
        appended 2
          {"account_updated":{"entry_time":"1763370000","event":"PARTNER_APP_INSTALLED","waba_id":"102290129340398"}}
          {"sync_window_opened":{"deadline":"1763456400","opened_at":"1763370000","waba_id":"102290129340398"}}
    "#]],
    );
    w.when(contact("add", CUSTOMER, "Pablo Morales", T0 + 600));
    w.when(history_chunk(
        0,
        1,
        100,
        vec![history_text("wamid.H", T0 - 60, false, "hi")],
    ));
    assert_eq!(w.when(tick(T0 + DAY_S - 1)), Outcome::Idle);
    check(
        &mut w,
        tick(T0 + DAY_S),
        expect![[r#"
        appended 1
          {"sync_window_closed":{"closed_at":"1763456400","contacts_synced":true,"history_synced":true,"waba_id":"102290129340398"}}
    "#]],
    );
    assert_eq!(w.when(tick(T0 + DAY_S + 60)), Outcome::Idle);
}

#[test]
fn a_missed_sync_window_is_an_alert() {
    let mut w = given(vec![
        account("PARTNER_APP_INSTALLED", T0),
        contact("add", CUSTOMER, "Pablo", T0 + 60),
    ]);
    let out = w.when(tick(T0 + DAY_S + 1));
    let F::SyncWindowClosed(c) = fact_of(&out.records()[0]) else {
        panic!("{out:?}")
    };
    assert!(c.missed && c.contacts_synced && !c.history_synced);
}

// ---- heartbeat ----------------------------------------------------------------------

fn level(out: &Outcome) -> i32 {
    out.records()
        .iter()
        .find_map(|r| match fact_of(r) {
            F::HeartbeatChanged(h) => Some(h.level),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no heartbeat change in {out:?}"))
}

#[test]
fn the_heartbeat_warns_before_the_14_day_disconnect() {
    let mut w = given(vec![echo(text("wamid.E", T0, "from the phone"))]);
    assert_eq!(w.when(tick(T0 + 9 * DAY_S)), Outcome::Idle);
    check(
        &mut w,
        tick(T0 + 10 * DAY_S),
        expect![[r#"
        appended 1
          {"heartbeat_changed":{"checked_at":"1764234000","last_activity":"1763370000","level":"HEARTBEAT_LEVEL_WARNING","previous":"HEARTBEAT_LEVEL_OK","seconds_left":"345600"}}
    "#]],
    );
    assert_eq!(w.when(tick(T0 + 11 * DAY_S)), Outcome::Idle);
    assert_eq!(
        level(&w.when(tick(T0 + 13 * DAY_S))),
        HeartbeatLevel::Critical as i32
    );
    assert_eq!(
        level(&w.when(tick(T0 + 14 * DAY_S))),
        HeartbeatLevel::Expired as i32
    );
    // A tick from the past changes nothing.
    assert_eq!(w.when(tick(T0 + 10 * DAY_S)), Outcome::Idle);
    // App-side activity (a contact change) keeps the number alive again.
    w.when(contact("add", "16505550000", "New", T0 + 14 * DAY_S + 10));
    assert_eq!(w.when(tick(T0 + 14 * DAY_S + 20)), Outcome::Idle);
    assert_eq!(
        level(&w.when(tick(T0 + 24 * DAY_S + 10))),
        HeartbeatLevel::Warning as i32
    );
}

#[test]
fn customer_and_api_traffic_do_not_keep_the_number_alive() {
    let mut w = given(vec![
        echo(text("wamid.E", T0, "app")),
        inbound(text("wamid.I", T0 + 9 * DAY_S, "customer")),
        api_send("wamid.A", T0 + 9 * DAY_S, "api"),
    ]);
    assert_eq!(
        level(&w.when(tick(T0 + 10 * DAY_S))),
        HeartbeatLevel::Warning as i32
    );
}

// ---- disconnection ------------------------------------------------------------------

#[test]
fn a_disconnection_is_recorded_with_its_reason() {
    let mut w = given(vec![echo(text("wamid.E", T0, "app"))]);
    check(
        &mut w,
        account("PARTNER_REMOVED", T0 + 14 * DAY_S),
        expect![[r#"
        appended 1
          {"account_updated":{"disconnection_initiated_by":"SYSTEM","disconnection_reason":"PRIMARY_INACTIVITY","entry_time":"1764579600","event":"PARTNER_REMOVED","phone_number_ids":["106540352242922"],"waba_id":"102290129340398"}}
    "#]],
    );
    let n = &w.state.numbers[NUMBER];
    assert!(!n.connected);
    assert_eq!(n.disconnection_reason, "PRIMARY_INACTIVITY");
    // A disconnected number raises no more heartbeat alerts.
    assert_eq!(w.when(tick(T0 + 20 * DAY_S)), Outcome::Idle);
    assert_eq!(
        w.when(account("PARTNER_REMOVED", T0 + 14 * DAY_S)),
        Outcome::Duplicate
    );
}

// ---- rejections -----------------------------------------------------------------------

#[test]
fn refused_input_leaves_evidence_once() {
    let mut w = given(vec![]);
    check(
        &mut w,
        inbound(text("", T0, "no id")),
        expect![[r#"
        rejected missing_wamid 1
          {"rejected":{"detail":"a message without an id","reason":"missing_wamid"}} customer=phone:16505551234
    "#]],
    );
    assert_eq!(w.when(inbound(text("", T0, "no id"))), Outcome::Duplicate);
    let mut no_number = inbound(text("wamid.N", T0 + 1, "x"));
    if let Some(e) = no_number.envelope.as_mut() {
        e.phone_number_id.clear();
    }
    assert!(matches!(w.when(no_number), Outcome::Rejected(r, _) if r == "missing_phone_number_id"));
}

// ---- identity ---------------------------------------------------------------------------

#[test]
fn customers_are_keyed_by_bsuid_and_phone_links_follow() {
    let mut w = given(vec![inbound(text("wamid.1", T0, "by phone"))]);
    let both = Identity {
        phone: CUSTOMER.into(),
        bsuid: "US.13491208655302741918".into(),
        ..Identity::default()
    };
    check(
        &mut w,
        inbound_as(both, text("wamid.2", T0 + 1, "with bsuid")),
        expect![[r#"
        appended 1
          {"message_recorded":{"channel":"CHANNEL_CUSTOMER","message_key":"wamid:wamid.2","provenance":"PROVENANCE_LIVE","timestamp":"1763370001","type":"text"}} customer=phone:16505551234 links=[bsuid:US.13491208655302741918->phone:16505551234]
    "#]],
    );
    // A BSUID-only message (empty phone) is the same customer.
    let bsuid_only = Identity {
        bsuid: "US.13491208655302741918".into(),
        ..Identity::default()
    };
    let out = w.when(inbound_as(
        bsuid_only,
        text("wamid.3", T0 + 2, "username era"),
    ));
    assert_eq!(
        out.records()[0].customer,
        w.tagger_tag("phone", CUSTOMER).to_vec()
    );
    // user_changed_user_id links the new BSUID to the same customer.
    let out = w.when(system_user_id_change("US.99999999999999999999", T0 + 3));
    assert_eq!(out.records()[0].links.len(), 1);
    let new = w.tagger_tag("bsuid", "US.99999999999999999999");
    assert_eq!(w.state.identities[&new], w.tagger_tag("phone", CUSTOMER));
}

// ---- sealing input ---------------------------------------------------------------------

#[test]
fn borrowed_personal_content_encodes_exactly_like_the_personal_message() {
    let mut w = given(vec![account("PARTNER_APP_INSTALLED", T0)]);
    let events = vec![
        inbound(text("wamid.P1", T0, "hello")),
        echo(edit("wamid.P2", "wamid.P1", T0 + 1, "edited")),
        status("wamid.P3", "delivered", T0 + 2),
        api_send("wamid.P4", T0 + 3, "api"),
        history_chunk(
            0,
            1,
            10,
            vec![history_text("wamid.P5", T0 - 60, false, "old")],
        ),
        contact("add", CUSTOMER, "Pablo", T0 + 4),
        history_declined(),
        inbound(text("", T0 + 5, "rejected")),
    ];
    let mut checked = 0;
    for event in events {
        let source = twinlog_proto::v1::Source::default();
        let input = twinlog_engine::Input {
            event: &event,
            source: &source,
        };
        let step = twinlog_engine::decide(&w.state, &w.config, &w.tagger, input)
            .unwrap_or_else(|r| twinlog_engine::reject(&w.state, &w.config, &w.tagger, input, &r));
        if let twinlog_engine::Step::Append(facts) = step {
            for f in facts.iter().filter_map(|f| f.personal.as_ref()) {
                let owned = prost::Message::encode_to_vec(&f.content.to_personal());
                assert_eq!(f.content.encode(), owned);
                checked += 1;
            }
        }
        w.when(event);
    }
    assert!(checked >= 8, "checked {checked}");
}

// ---- billing market --------------------------------------------------------

#[test]
fn the_customers_country_is_kept_in_clear_for_billing() {
    let mut w = given(vec![]);
    let country = |out: &Outcome| -> Vec<String> {
        match out {
            Outcome::Appended(records) => {
                records.iter().map(|r| r.customer_country.clone()).collect()
            }
            other => panic!("expected records, got {other:?}"),
        }
    };
    // The ingestor derived it from the phone: copied into the record.
    let canadian = Identity {
        country: "CA".into(),
        ..phone("14165550100")
    };
    let out = w.when(inbound_as(canadian, text("wamid.CA1", T0, "hi")));
    assert_eq!(country(&out), ["CA"]);
    // A customer without a phone: the BSUID's prefix.
    let bsuid = Identity {
        bsuid: "BR.13491208655302741918".into(),
        ..Identity::default()
    };
    let out = w.when(inbound_as(bsuid, text("wamid.BR1", T0 + 3, "oi")));
    assert_eq!(country(&out), ["BR"]);
    // Neither, or not a country code: unknown, never guessed.
    for (i, (bsuid, given)) in [("user.5f2a", ""), ("", "usa"), ("", "U1")]
        .into_iter()
        .enumerate()
    {
        let nobody = Identity {
            bsuid: bsuid.into(),
            country: given.into(),
            ..phone(if bsuid.is_empty() { "15550001111" } else { "" })
        };
        let out = w.when(inbound_as(
            nobody,
            text(&format!("wamid.X{i}"), T0 + 4, "?"),
        ));
        assert_eq!(country(&out), [""], "{bsuid:?} {given:?}");
    }
}
