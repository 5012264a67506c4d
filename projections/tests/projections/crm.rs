//! Given/when/then: contacts, conversations, the window, handoff, revisions,
//! statuses, forget.

use twinlog_projections::{Change, Handoff, Views};
use twinlog_proto::v1::{message, Channel, Direction, Handler, RevisionKind};

use crate::build::{at, customer, key, test_config, Log, Scenario, NUMBER};

fn body(m: &twinlog_proto::v1::TimelineMessage) -> Option<String> {
    match m.content.as_ref()?.content.as_ref()? {
        message::Content::Text(t) => Some(t.body.clone()),
        _ => None,
    }
}

#[test]
fn the_window_is_opened_only_by_customer_messages() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    // Given an app echo, an API send and a customer message from history,
    let given = [
        log.echo(1, 1, t),
        log.api(1, 2, t + 60),
        log.history_inbound(1, 3, t - 3600),
    ];
    let mut s = Scenario::new(test_config()).given(&given);
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    // then no window is open.
    assert_eq!(c.row.window_until, 0);
    assert!(!c.window_open(t + 120));
    // When the customer writes,
    let changes = s.when(&log.inbound(1, 4, t + 600));
    // then the window is open for 24 hours from that message.
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert_eq!(c.row.window_until, t + 600 + 86_400);
    assert!(c.window_open(t + 600 + 86_399));
    assert!(!c.window_open(t + 600 + 86_400));
    assert!(changes.contains(&Change::Conversation {
        number: NUMBER.to_string(),
        customer: customer(1)
    }));
    // And a later echo does not move it.
    s.when(&log.echo(1, 5, t + 7200));
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert_eq!(c.row.window_until, t + 600 + 86_400);
}

#[test]
fn an_echo_hands_the_chat_to_a_human_and_quiet_hands_it_back() {
    let mut log = Log::new();
    let config = test_config();
    let quiet = config.handoff_quiet_s;
    let t = at("2025-08-01", 10, 0);
    let mut s = Scenario::new(config).given(&[log.inbound(1, 1, t)]);
    let row = |v: &Views| {
        v.conversation(NUMBER, &customer(1))
            .map(|c| c.row.clone())
            .unwrap_or_default()
    };
    assert_eq!(row(&s.views).handler, Handler::Bot as i32);
    // When staff answer from the phone,
    let changes = s.when(&log.echo(1, 2, t + 60));
    // then the conversation is the human's until the quiet period ends,
    let expected = Change::Handoff(Handoff {
        number: NUMBER.to_string(),
        customer: customer(1),
        handler: Handler::Human,
        previous: Handler::Bot,
        at: t + 60,
        human_until: t + 60 + quiet,
    });
    assert!(changes.contains(&expected), "{changes:?}");
    assert_eq!(row(&s.views).handler, Handler::Human as i32);
    // a second echo extends it without a new handoff event,
    let changes = s.when(&log.echo(1, 3, t + 120));
    assert!(!changes.iter().any(|c| matches!(c, Change::Handoff(_))));
    assert_eq!(row(&s.views).human_until, t + 120 + quiet);
    // a record one second before the end changes nothing,
    let changes = s.when(&log.nudge(t + 120 + quiet - 1));
    assert!(!changes.iter().any(|c| matches!(c, Change::Handoff(_))));
    assert_eq!(row(&s.views).handler, Handler::Human as i32);
    // and the first record at the end hands it back to the bot.
    let changes = s.when(&log.nudge(t + 120 + quiet));
    let back = Change::Handoff(Handoff {
        number: NUMBER.to_string(),
        customer: customer(1),
        handler: Handler::Bot,
        previous: Handler::Human,
        at: t + 120 + quiet,
        human_until: 0,
    });
    assert!(changes.contains(&back), "{changes:?}");
    assert_eq!(row(&s.views).handler, Handler::Bot as i32);
    assert_eq!(row(&s.views).handler_since, t + 120 + quiet);
}

#[test]
fn history_echoes_do_not_hand_off() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let mut rec = log.echo(1, 1, t);
    rec.record.fact = match rec.record.fact.take() {
        Some(twinlog_proto::v1::audit_record::Fact::MessageRecorded(mut m)) => {
            m.provenance = twinlog_proto::v1::Provenance::History as i32;
            Some(twinlog_proto::v1::audit_record::Fact::MessageRecorded(m))
        }
        other => other,
    };
    let s = Scenario::new(test_config()).given(&[rec]);
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert_eq!(c.row.handler, Handler::Bot as i32);
    assert_eq!(c.row.from_history, 1);
}

#[test]
fn revisions_mark_edited_and_deleted_by_sender() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let given = [log.inbound(1, 1, t), log.inbound(1, 2, t + 10)];
    let mut s = Scenario::new(test_config()).given(&given);
    // When the customer edits the first message and deletes the second,
    s.when(&log.revision(
        1,
        1,
        101,
        (RevisionKind::Edit, Channel::Customer),
        t + 20,
        "hello, edited",
    ));
    s.when(&log.revision(
        1,
        2,
        102,
        (RevisionKind::Revoke, Channel::Customer),
        t + 30,
        "",
    ));
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    let timeline: Vec<_> = c.timeline().collect();
    // then the first shows its latest content, marked edited, with the revision kept,
    assert!(timeline[0].edited);
    assert_eq!(body(timeline[0]).as_deref(), Some("hello, edited"));
    assert_eq!(timeline[0].revisions.len(), 1);
    assert_eq!(timeline[0].revisions[0].revision_key, key(101));
    // the second is marked deleted by sender, without content,
    assert!(timeline[1].deleted_by_sender);
    assert_eq!(body(timeline[1]), None);
    assert_eq!((c.row.edited, c.row.deleted), (1, 1));
    // and the messages still count.
    assert_eq!(c.row.messages, 2);
}

#[test]
fn a_revision_before_its_original_is_joined_when_it_arrives() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let edit = log.revision(
        1,
        7,
        107,
        (RevisionKind::Edit, Channel::Customer),
        t + 20,
        "fixed",
    );
    let mut s = Scenario::new(test_config()).given(&[edit]);
    s.when(&log.inbound(1, 7, t));
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    let m = c.timeline().next().expect("message");
    assert!(m.edited);
    assert_eq!(body(m).as_deref(), Some("fixed"));
}

#[test]
fn statuses_are_kept_in_order_and_the_furthest_wins() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    // Given a status that arrives before its message,
    let early = log.status(1, 1, "sent", t + 1, None);
    let mut s = Scenario::new(test_config()).given(&[early]);
    // when the message, then delivered, read and a late delivered arrive,
    s.when(&log.api(1, 1, t));
    s.when(&log.status(1, 1, "read", t + 3, None));
    s.when(&log.status(1, 1, "delivered", t + 2, None));
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    let m = c.timeline().next().expect("message");
    // then every status is in the history, in arrival order, and read wins.
    let history: Vec<_> = m
        .statuses
        .iter()
        .map(|s| (s.status.as_str(), s.timestamp))
        .collect();
    assert_eq!(
        history,
        [("sent", t + 1), ("read", t + 3), ("delivered", t + 2)]
    );
    assert_eq!(m.status, "read");
    assert_eq!(m.direction, Direction::Outbound as i32);
    assert_eq!(m.channel, Channel::Api as i32);
    // And failed is terminal.
    s.when(&log.status(1, 1, "failed", t + 4, None));
    s.when(&log.status(1, 1, "played", t + 5, None));
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert_eq!(
        c.timeline().next().map(|m| m.status.as_str()),
        Some("failed")
    );
}

#[test]
fn contacts_gather_names_address_book_and_identities() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let mut first = log.inbound(1, 1, t);
    log.link(&mut first, 1, 900);
    let given = [first, log.contact_sync(1, "add", "Ada Lovelace", t + 10)];
    let mut s = Scenario::new(test_config()).given(&given);
    let contact = s.views.contact(&customer(1)).expect("contact").clone();
    assert_eq!(contact.profile_name, "Customer 1");
    assert_eq!(contact.address_book_name, "Ada Lovelace");
    assert_eq!(contact.bsuid, "US.1");
    assert_eq!(contact.phone, "15550000001");
    assert!(contact.in_address_book);
    assert_eq!(contact.identity_links.len(), 1);
    assert_eq!(contact.identity_values.len(), 1);
    assert_eq!(contact.country, "US");
    // When the contact is removed from the address book,
    s.when(&log.contact_sync(1, "remove", "", t + 20));
    let contact = s.views.contact(&customer(1)).expect("contact");
    assert!(!contact.in_address_book);
    let actions: Vec<_> = contact
        .address_book
        .iter()
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(actions, ["add", "remove"]);
}

#[test]
fn forget_removes_personal_data_and_keeps_counts_and_billing() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let priced = crate::build::pricing("PMP", "regular", "marketing");
    let given = [
        log.inbound(1, 1, t),
        log.contact_sync(1, "add", "Ada Lovelace", t + 5),
        log.api(1, 2, t + 10),
        log.status(1, 2, "sent", t + 11, priced.clone()),
        log.status(1, 2, "delivered", t + 12, priced),
        log.revision(
            1,
            1,
            101,
            (RevisionKind::Edit, Channel::Customer),
            t + 20,
            "edited",
        ),
        log.inbound(2, 3, t + 30),
    ];
    let mut s = Scenario::new(test_config()).given(&given);
    let entries_before = s.views.ledger_entries().to_vec();
    let aggregates_before: Vec<_> = s.views.billing_aggregates().cloned().collect();
    // When customer 1 is forgotten,
    let erase = log.erase(1);
    let changes = s.when(&erase);
    assert!(changes.contains(&Change::CustomerErased {
        customer: customer(1)
    }));
    // then names, phones, BSUIDs and content are gone,
    let contact = s.views.contact(&customer(1)).expect("contact");
    assert!(contact.forgotten);
    assert_eq!(
        (
            contact.profile_name.as_str(),
            contact.address_book_name.as_str(),
            contact.phone.as_str(),
            contact.bsuid.as_str()
        ),
        ("", "", "", "")
    );
    assert!(contact.identity_values.is_empty());
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert!(c
        .timeline()
        .all(|m| m.content.is_none() && m.revisions.iter().all(|r| r.content.is_none())));
    // counts, marks and billing stay,
    assert_eq!(c.row.messages, 2);
    assert_eq!(c.row.edited, 1);
    assert_eq!(s.views.ledger_entries(), entries_before.as_slice());
    assert_eq!(
        s.views.billing_aggregates().cloned().collect::<Vec<_>>(),
        aggregates_before
    );
    // the other customer keeps their content,
    let other = s.views.conversation(NUMBER, &customer(2)).expect("other");
    assert_eq!(
        other.timeline().next().and_then(body).as_deref(),
        Some("hello 3")
    );
    // personal content given later for the forgotten customer is ignored,
    let later = log.inbound(1, 4, t + 40);
    s.when(&later);
    let c = s
        .views
        .conversation(NUMBER, &customer(1))
        .expect("conversation");
    assert!(c.timeline().all(|m| m.content.is_none()));
    assert_eq!(
        s.views
            .contact(&customer(1))
            .map(|c| c.profile_name.as_str()),
        Some("")
    );
    // and a rebuild without the destroyed key gives the same views, byte for byte.
    let mut all: Vec<_> = given.to_vec();
    all.extend([erase, later]);
    let mut rebuilt = Views::default();
    for mut r in all {
        if r.record.customer == customer(1) {
            r.personal = None;
        }
        rebuilt.apply(&s.config, r.input());
    }
    assert_eq!(rebuilt, s.views);
    assert_eq!(rebuilt.digest(), s.views.digest());
}

#[test]
fn duplicates_and_old_seqs_change_nothing() {
    let mut log = Log::new();
    let t = at("2025-08-01", 10, 0);
    let first = log.inbound(1, 1, t);
    let mut s = Scenario::new(test_config()).given(&[first.clone(), log.echo(1, 2, t + 5)]);
    let digest = s.views.digest();
    assert!(s.when(&first).is_empty());
    assert_eq!(s.views.digest(), digest);
    assert_eq!(s.views.applied_through(), Some(1));
}

#[test]
fn a_snapshot_of_another_format_is_refused() {
    let mut log = Log::new();
    let s = Scenario::new(test_config()).given(&[log.inbound(1, 1, at("2025-08-01", 10, 0))]);
    let mut snapshot = s.views.snapshot();
    assert_eq!(Views::from_snapshot(&snapshot).as_ref(), Ok(&s.views));
    snapshot.format = 2;
    assert_eq!(
        Views::from_snapshot(&snapshot),
        Err(twinlog_projections::SnapshotError::Format(2))
    );
    assert!(Views::from_snapshot_bytes(&[0xff, 0xff, 0xff]).is_err());
}
