//! Every webhook fixture normalises, and its output equals the reviewed snapshot
//! in `tests/fixtures/normalized/<name>.jsonl` (one serde_json line per event,
//! `ingest_time_ms` fixed). `UPDATE_EXPECT=1 cargo test -p twinlog-normalize`
//! rewrites the snapshots.

use std::path::{Path, PathBuf};

use twinlog_normalize::{normalize, IngestContext};

const INGEST_TIME_MS: i64 = 1_764_000_000_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_names() -> Vec<String> {
    let dir = repo_root().join("tests/fixtures/webhooks");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn render(name: &str) -> String {
    let path = repo_root().join(format!("tests/fixtures/webhooks/{name}.json"));
    let body = std::fs::read(&path).unwrap();
    let events = normalize(
        &body,
        &IngestContext {
            ingest_time_ms: INGEST_TIME_MS,
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!events.is_empty(), "{name}: no events");
    let mut out = String::new();
    for event in &events {
        out.push_str(&serde_json::to_string(event).unwrap());
        out.push('\n');
    }
    out
}

#[test]
fn fixtures_match_snapshots() {
    let names = fixture_names();
    assert!(
        names.len() >= 40,
        "expected the fixture set, found {names:?}"
    );
    for name in names {
        let actual = render(&name);
        let snapshot = repo_root().join(format!("tests/fixtures/normalized/{name}.jsonl"));
        expect_test::expect_file![snapshot].assert_eq(&actual);
    }
}

/// Every snapshot line is a valid IngestEvent that round-trips through pbjson.
#[test]
fn snapshot_lines_round_trip() {
    for name in fixture_names() {
        for line in render(&name).lines() {
            let event: twinlog_proto::v1::IngestEvent = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&event).unwrap(), line, "{name}");
        }
    }
}

/// The shared fixtures are copied byte for byte, names kept (checked when the
/// shared folder sits beside the repository, as on developer machines and CI).
#[test]
fn shared_fixtures_are_copied() {
    let shared = repo_root().join("../shared/fixtures/webhooks");
    let Ok(dir) = std::fs::read_dir(&shared) else {
        eprintln!("{} not present; skipped", shared.display());
        return;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let ours = repo_root().join("tests/fixtures/webhooks").join(&name);
        let theirs = std::fs::read(e.path()).unwrap();
        let copy = std::fs::read(&ours).unwrap_or_default();
        assert!(
            copy == theirs,
            "{} differs from the shared fixture",
            ours.display()
        );
    }
}
