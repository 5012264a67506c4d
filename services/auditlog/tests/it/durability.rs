//! Creation, opening, durability across reopen, side values, limits and the
//! owner-only key files.

use std::os::unix::fs::PermissionsExt as _;

use twinlog_auditlog::{AppendBatch, AuditLog, LogError, APPEND_BATCH_COUNT_MAX, RECORD_BYTES_MAX};

use crate::common::{new_log, record};

#[test]
fn an_append_is_visible_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let (origin, root, checkpoint) = {
        let mut log = new_log(dir.path(), 25, 10);
        let appended = log
            .append(AppendBatch {
                leaves: vec![b"last".to_vec()],
                side_writes: vec![(b"offset/p0".to_vec(), Some(b"41".to_vec()))],
            })
            .unwrap();
        assert_eq!((appended.first_seq, appended.tree_size), (25, 26));
        assert_eq!(appended.root, log.root(26).unwrap());
        (
            log.origin().to_owned(),
            appended.root,
            log.checkpoint().unwrap(),
        )
    };
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.origin(), origin);
    assert_eq!(log.size(), 26);
    assert_eq!(log.root(26).unwrap(), root);
    assert_eq!(log.checkpoint().unwrap(), checkpoint);
    assert_eq!(log.record(25).unwrap(), Some(b"last".to_vec()));
    assert_eq!(log.record(7).unwrap(), Some(record(7)));
    assert_eq!(log.record(26).unwrap(), None);
    assert_eq!(log.side_get(b"offset/p0").unwrap(), Some(b"41".to_vec()));
    log.verify(&mut |_, _| {}).unwrap();
}

#[test]
fn records_iterates_a_range_capped_at_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 12, 5);
    let got: Vec<(u64, Vec<u8>)> = log.records(3, 7).map(Result::unwrap).collect();
    assert_eq!(got, (3..7).map(|i| (i, record(i))).collect::<Vec<_>>());
    assert_eq!(log.records(10, 100).count(), 2);
    assert_eq!(log.records(12, 20).count(), 0);
    assert_eq!(log.records(5, 2).count(), 0);
}

#[test]
fn side_writes_commit_with_the_batch_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let mut log = AuditLog::create(&path, None).unwrap();
        let before = log.checkpoint().unwrap();
        let appended = log
            .append(AppendBatch {
                leaves: Vec::new(),
                side_writes: vec![
                    (b"dedup/a".to_vec(), Some(b"1".to_vec())),
                    (b"dedup/b".to_vec(), Some(b"2".to_vec())),
                    (b"other".to_vec(), Some(b"3".to_vec())),
                ],
            })
            .unwrap();
        assert_eq!((appended.first_seq, appended.tree_size), (0, 0));
        assert_eq!(log.checkpoint().unwrap(), before);
        log.append(AppendBatch {
            leaves: vec![b"r0".to_vec()],
            side_writes: vec![(b"dedup/a".to_vec(), None)],
        })
        .unwrap();
    }
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.size(), 1);
    let scanned: Vec<_> = log.side_scan(b"dedup/").map(Result::unwrap).collect();
    assert_eq!(scanned, vec![(b"dedup/b".to_vec(), b"2".to_vec())]);
    assert_eq!(log.side_get(b"dedup/a").unwrap(), None);
    assert_eq!(log.side_get(b"other").unwrap(), Some(b"3".to_vec()));
    // Side values are not records.
    log.verify(&mut |_, _| {}).unwrap();
}

#[test]
fn create_refuses_an_existing_log_or_a_non_empty_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    drop(AuditLog::create(&path, None).unwrap());
    let err = AuditLog::create(&path, None).unwrap_err();
    assert!(matches!(err, LogError::AlreadyExists { .. }), "{err}");

    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), b"x").unwrap();
    let err = AuditLog::create(&other, None).unwrap_err();
    assert!(matches!(err, LogError::DirNotEmpty { .. }), "{err}");

    // An existing empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    AuditLog::create(&empty, None).unwrap();
}

#[test]
fn open_of_a_missing_log_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    let err = AuditLog::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no log at {}; run `twinlog init --log {}`",
            path.display(),
            path.display()
        )
    );
}

#[test]
fn open_or_create_creates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let origin = {
        let mut log = AuditLog::open_or_create(&path).unwrap();
        log.append(AppendBatch {
            leaves: vec![b"a".to_vec()],
            side_writes: Vec::new(),
        })
        .unwrap();
        log.origin().to_owned()
    };
    let log = AuditLog::open_or_create(&path).unwrap();
    assert_eq!(log.origin(), origin);
    assert_eq!(log.size(), 1);
}

#[test]
fn the_origin_is_a_fresh_uuid_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("a"), None).unwrap();
    let id = log
        .origin()
        .strip_prefix("twinlog/")
        .expect("twinlog/ prefix");
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert!(log
        .verifier_key()
        .starts_with(&format!("{}+", log.origin())));

    let named = AuditLog::create(&dir.path().join("b"), Some("example.com/log")).unwrap();
    assert_eq!(named.origin(), "example.com/log");
    let err = AuditLog::create(&dir.path().join("c"), Some("bad name")).unwrap_err();
    assert!(matches!(err, LogError::InvalidOrigin { .. }));
}

#[test]
fn key_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    drop(AuditLog::create(&path, None).unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path.join("keys")), 0o700);
    let key = path.join("keys").join("signing.key");
    assert_eq!(mode(&key), 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("PRIVATE+KEY+twinlog/"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("log.json")).unwrap()).unwrap();
    assert_eq!(json["format_version"], 2);
    assert!(!json.to_string().contains("PRIVATE"));

    // A key others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert!(
        matches!(err, LogError::KeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn batches_over_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::create(&dir.path().join("log"), None).unwrap();
    let err = log
        .append(AppendBatch {
            leaves: vec![Vec::new(); APPEND_BATCH_COUNT_MAX + 1],
            side_writes: Vec::new(),
        })
        .unwrap_err();
    assert!(
        matches!(err, LogError::BatchCountOverLimit { seq: 0, .. }),
        "{err}"
    );
    let err = log
        .append(AppendBatch {
            leaves: vec![b"ok".to_vec(), vec![0; RECORD_BYTES_MAX + 1]],
            side_writes: Vec::new(),
        })
        .unwrap_err();
    assert!(
        matches!(err, LogError::RecordBytesOverLimit { seq: 1, .. }),
        "{err}"
    );
    assert_eq!(log.size(), 0);
}
