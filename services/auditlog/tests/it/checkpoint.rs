//! Checkpoints are C2SP signed notes of C2SP tlog-checkpoints that verify
//! with the log's verifier key.

use twinlog_auditlog::verify_proof::{verify_checkpoint, EMPTY_ROOT};
use twinlog_auditlog::{AuditLog, CheckpointError};

use crate::common::{append_records, new_log};

#[test]
fn a_new_log_has_a_signed_checkpoint_of_the_empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("log"), None).unwrap();
    let info = verify_checkpoint(&log.checkpoint().unwrap(), log.verifier_key()).unwrap();
    assert_eq!(info.origin, log.origin());
    assert_eq!(info.tree_size, 0);
    assert_eq!(info.root_hash, EMPTY_ROOT);
}

#[test]
fn each_batch_leaves_a_checkpoint_that_parses_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = new_log(dir.path(), 30, 10);
    append_records(&mut log, 5, 5);
    for size in [0, 10, 20, 30, 35] {
        let note = log.checkpoint_at(size).unwrap().expect("checkpoint");
        let info = verify_checkpoint(&note, log.verifier_key()).unwrap();
        assert_eq!(info.tree_size, size);
        assert_eq!(info.root_hash, log.root(size).unwrap());
        assert_eq!(info.extension, "");

        // The text is a tlog-checkpoint for tlog_tiles too.
        let text = std::str::from_utf8(&note)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .to_owned()
            + "\n";
        let parsed = tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).unwrap();
        assert_eq!(parsed.origin(), log.origin());
        assert_eq!(parsed.size(), size);
        assert_eq!(parsed.hash().0, info.root_hash);
    }
    assert_eq!(
        log.checkpoint().unwrap(),
        log.checkpoint_at(35).unwrap().unwrap()
    );
    assert_eq!(log.checkpoint_at(15).unwrap(), None);

    let text = String::from_utf8(log.checkpoint().unwrap()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(log.origin()));
    assert_eq!(lines.next(), Some("35"));
    assert_eq!(lines.next().map(str::len), Some(44)); // base64 of 32 bytes
    assert_eq!(lines.next(), Some(""));
    assert!(lines
        .next()
        .unwrap()
        .starts_with(&format!("— {} ", log.origin())));
}

#[test]
fn a_checkpoint_fails_with_another_key_or_a_changed_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 3, 3);
    let other = AuditLog::create(&dir.path().join("other"), None).unwrap();
    let note = log.checkpoint().unwrap();
    assert!(verify_checkpoint(&note, other.verifier_key()).is_err());

    let changed = String::from_utf8(note.clone())
        .unwrap()
        .replacen("\n3\n", "\n4\n", 1);
    let err = verify_checkpoint(changed.as_bytes(), log.verifier_key()).unwrap_err();
    assert!(matches!(err, CheckpointError::Signature { .. }), "{err}");
    assert!(verify_checkpoint(&note, "not a key").is_err());
}

#[test]
fn a_log_created_with_another_logs_signer_key_has_its_origin_and_signs_alike() {
    let dir = tempfile::tempdir().unwrap();
    let original = new_log(dir.path(), 12, 5);
    let skey = original.signer_key().unwrap();
    assert!(skey.starts_with(&format!("PRIVATE+KEY+{}+", original.origin())));

    let mut copy = AuditLog::create_with_signer_key(&dir.path().join("copy"), &skey).unwrap();
    assert_eq!(copy.origin(), original.origin());
    assert_eq!(copy.verifier_key(), original.verifier_key());
    append_records(&mut copy, 12, 12);
    assert_eq!(copy.root(12).unwrap(), original.root(12).unwrap());
    // The copy's checkpoints verify under the original's verifier key.
    let info = verify_checkpoint(&copy.checkpoint().unwrap(), original.verifier_key()).unwrap();
    assert_eq!(info.tree_size, 12);
    assert_eq!(info.root_hash, original.root(12).unwrap());
    drop(copy);
    let reopened = AuditLog::open(&dir.path().join("copy")).unwrap();
    assert_eq!(reopened.verifier_key(), original.verifier_key());

    let e = AuditLog::create_with_signer_key(&dir.path().join("bad"), "PRIVATE+KEY+x+1+AAAA")
        .unwrap_err();
    assert!(e.to_string().contains("signer key"), "{e}");
}
