//! The bytes of every fact, pinned: a digest of the leaf bytes and sealed
//! plaintexts that the fold gives over every normalised fixture (in several
//! orders) and over a generated mix of every kind of input. A change that
//! alters one byte of one record changes the digest.

mod support;

use std::path::Path;

use sha2::{Digest, Sha256};
use support::*;
use twinlog_engine::{decide, evolve, reject, Config, Input, State, Step};
use twinlog_proto::v1::{IngestEvent, Sealed, Source};

/// Every normalised fixture, by file name, each file's events in order.
fn fixture_events() -> Vec<(String, Vec<IngestEvent>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/normalized");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable fixture");
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("an IngestEvent"))
                .collect();
            (p.display().to_string(), events)
        })
        .collect()
}

/// A generated mix of every kind of input, with duplicates, statuses before
/// their messages, edits of known and unknown originals, and clock ticks.
fn generated() -> Vec<IngestEvent> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut out = vec![account("PARTNER_APP_INSTALLED", T0)];
    for i in 0..600 {
        let w = format!("wamid.{}", next(40));
        let o = format!("wamid.{}", next(40));
        let t = T0 + (i as i64) * DAY_S / 40 + next(1000) as i64;
        let e = match next(14) {
            0 => inbound(text(&w, t, "hello")),
            1 => echo(text(&w, t, "from the app")),
            2 => api_send(&w, t, "from the api"),
            3 => echo(edit(&format!("{w}-e"), &o, t, "edited")),
            4 => inbound(revoke(&format!("{w}-r"), &o, t)),
            5 => {
                let s = ["sent", "delivered", "read", "played", "failed", "bogus"];
                status(&w, s[next(6) as usize], t)
            }
            6 => {
                let msgs = (0..next(4))
                    .map(|_| {
                        let w = format!("wamid.{}", next(40));
                        history_text(&w, T0 - next(200) as i64 * DAY_S, next(2) == 0, "past")
                    })
                    .collect();
                let order = 1 + next(3) as i64;
                history_chunk(next(3) as i64, order, order * 30, msgs)
            }
            7 => history_media(&w, T0 - next(20) as i64 * DAY_S),
            8 => contact("add", CUSTOMER, "Pablo", t),
            9 => {
                let a = [
                    "PARTNER_APP_INSTALLED",
                    "PARTNER_REMOVED",
                    "ACCOUNT_RECONNECTED",
                ];
                account(a[next(3) as usize], t)
            }
            10 => history_declined(),
            11 => tick(t + next(20) as i64 * DAY_S),
            12 => inbound(reply(text(&w, t, "re"), &o)),
            _ => inbound(text("", t, "missing id")),
        };
        out.push(e);
    }
    out.push(system_user_id_change(
        "US.13491208655302741918",
        T0 + 400 * DAY_S,
    ));
    out
}

/// Folds `events` from `state` as the log does, feeding every fact's bytes
/// to `digest`. Returns the facts it produced.
fn fold(state: &mut State, events: &[IngestEvent], digest: &mut Sha256) -> u64 {
    let config = Config::default();
    let tagger = ReadableTagger::default();
    let mut facts = 0;
    // The same fold through the stored form of each record.
    let mut shadow = state.clone();
    for (i, event) in events.iter().enumerate() {
        let source = Source {
            topic: "golden".into(),
            partition: (i % 3) as i32,
            offset: i as i64,
        };
        let input = Input {
            event,
            source: &source,
        };
        let step = match decide(state, &config, &tagger, input) {
            Ok(step) => step,
            Err(r) => reject(state, &config, &tagger, input, &r),
        };
        let Step::Append(list) = step else { continue };
        for f in list {
            let mut record = f.record;
            record.seq = state.records;
            let leaf = record.encode(None);
            assert_eq!(
                leaf,
                prost::Message::encode_to_vec(&record.to_audit_record(None)),
                "the hand-driven encoding is prost's"
            );
            let sealed = Sealed {
                key_id: vec![1; 16],
                nonce: vec![2; 12],
                ciphertext: b"ciphertext".to_vec(),
            };
            assert_eq!(
                record.encode(Some(&sealed)),
                prost::Message::encode_to_vec(&record.to_audit_record(Some(sealed))),
                "with a sealed part too"
            );
            digest.update((leaf.len() as u64).to_be_bytes());
            digest.update(&leaf);
            match &f.personal {
                Some(p) => {
                    let plain = p.content.encode();
                    digest.update(p.key_id);
                    digest.update((plain.len() as u64).to_be_bytes());
                    digest.update(&plain);
                }
                None => digest.update([0xff]),
            }
            evolve(state, &record);
            evolve(&mut shadow, &record.to_audit_record(None));
            facts += 1;
        }
    }
    assert_eq!(
        *state, shadow,
        "evolve reads a record and its stored form alike"
    );
    facts
}

#[test]
fn the_bytes_of_every_fact_are_pinned() {
    let fixtures = fixture_events();
    assert!(fixtures.len() >= 40, "found {} fixtures", fixtures.len());
    let all: Vec<IngestEvent> = fixtures.iter().flat_map(|(_, e)| e.clone()).collect();
    let mut digest = Sha256::new();
    let mut facts = 0;

    // All fixtures in order, then again (duplicates), then ticks.
    let mut state = State::default();
    facts += fold(&mut state, &all, &mut digest);
    facts += fold(&mut state, &all, &mut digest);
    let ticks: Vec<IngestEvent> = (0..30).map(|d| tick(T0 + d * DAY_S)).collect();
    facts += fold(&mut state, &ticks, &mut digest);

    // Reversed, from scratch: statuses and edits before their messages.
    let mut state = State::default();
    let reversed: Vec<IngestEvent> = all.iter().rev().cloned().collect();
    facts += fold(&mut state, &reversed, &mut digest);

    // Each fixture alone.
    for (_, events) in &fixtures {
        facts += fold(&mut State::default(), events, &mut digest);
    }

    // A generated mix of every kind.
    let mut state = State::default();
    facts += fold(&mut state, &generated(), &mut digest);

    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expect_test::expect![
        "500 facts 48fcd6d1d8f91528642f9afe2ddfe0f4d008b7e017def75d91eb070b95a44203"
    ]
    .assert_eq(&format!("{facts} facts {hex}"));
}
