//! Every fixture normalises and folds into a log that verifies.

use twinlog::Twinlog;
use twinlog_tests::{fixtures, inputs, json_files, shared_fixtures_dir};

const INGEST_MS: i64 = 1_763_400_000_000;

#[test]
fn every_repository_fixture_normalises_and_folds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut t = Twinlog::init(dir.path()).expect("init");
    let all = fixtures();
    assert!(
        all.len() >= 40,
        "expected the full fixture set, found {}",
        all.len()
    );
    for (name, body) in &all {
        let ins = inputs(&[body], INGEST_MS);
        assert!(!ins.is_empty(), "{name} produced no event");
        let report = t
            .append(&ins)
            .unwrap_or_else(|e| panic!("{name} does not fold: {e}"));
        assert_eq!(
            report.inputs,
            report.appended + report.duplicates + report.rejected + report.idle,
            "{name}: every input ends in exactly one outcome"
        );
        assert!(
            report.appended + report.rejected + report.duplicates > 0,
            "{name}: {report:?}"
        );
    }
    let size = t.log().size();
    assert!(
        size > all.len() as u64,
        "one record or more per fixture, got {size}"
    );
    let report = t
        .log()
        .verify(&mut |_, _| {})
        .expect("the folded log verifies");
    assert_eq!(report.tree_size, size);
    // Every record reads back, decrypted.
    for seq in 0..size {
        let view = t.show(seq).unwrap_or_else(|e| panic!("record {seq}: {e}"));
        assert_eq!(view.seq, seq);
    }
}

#[test]
fn every_shared_fixture_normalises_and_folds() {
    let Some(dir) = shared_fixtures_dir() else {
        // The shared fixtures are copied into the repository too, so the test
        // above covers them when shared/ is absent; in CI shared/ is present.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have shared/ beside the clone"
        );
        return;
    };
    let files = json_files(&dir);
    assert!(
        files.len() >= 15,
        "expected the shared fixtures in {}",
        dir.display()
    );
    let log = tempfile::tempdir().expect("temp dir");
    let mut t = Twinlog::init(log.path()).expect("init");
    for path in files {
        let body = std::fs::read(&path).expect("read fixture");
        let report = t
            .append(&inputs(&[&body], INGEST_MS))
            .unwrap_or_else(|e| panic!("{} does not fold: {e}", path.display()));
        assert!(
            report.records > 0 || report.duplicates > 0,
            "{}: {report:?}",
            path.display()
        );
    }
    t.log().verify(&mut |_, _| {}).expect("verifies");
}

#[test]
fn the_fixture_story_reads_back_as_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut t = Twinlog::init(dir.path()).expect("init");
    let all = fixtures();
    let story = [
        "account_partner_app_installed.json",
        "state_sync_contacts.json",
        "history_chunk.json",
        "inbound_text.json",
        "echo_text.json",
        "echo_edit.json",
        "echo_revoke.json",
        "status_sent_pmp.json",
        "status_delivered_read.json",
        "account_partner_removed.json",
    ];
    let bodies: Vec<&[u8]> = story
        .iter()
        .map(|name| {
            all.iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.as_slice())
                .unwrap_or_else(|| panic!("missing fixture {name}"))
        })
        .collect();
    let report = t.append(&inputs(&bodies, INGEST_MS)).expect("append");
    assert_eq!(report.rejected, 0, "{report:?}");
    let state = t.state();
    let number = &state.numbers["106540352242922"];
    assert!(!number.connected);
    assert_eq!(number.disconnection_reason, "PRIMARY_INACTIVITY");
    let waba = &state.wabas["102290129340398"];
    assert!(waba.contacts_synced && waba.history_synced);
    // The edited and revoked echo keeps its original record and two revisions.
    let echo = twinlog_engine::Tagger::tag(t.tagger(), "wamid", b"wamid.ECHO1");
    assert_eq!(state.revisions.get(&echo), Some(&2));
    let first_echo = (0..t.log().size())
        .map(|s| t.show(s).expect("show"))
        .find(|v| v.personal.to_string().contains("Yes, in blue and green."))
        .expect("the original echo text is still readable");
    assert_eq!(first_echo.outcome, "appended");
}
