//! Changes made to the sled database behind the log's back are found by
//! `verify`, which names the record, hash or range.

use twinlog_auditlog::{AuditLog, Tamper, VerifyError};

use crate::common::new_log;

const TREE: &str = "twinlog/auditlog";

fn key(prefix: u8, n: u64) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Builds a 40-record log (checkpoints at 0, 10, 20, 30, 40), closes it,
/// changes the sled tree with `tamper`, reopens it and verifies.
fn verify_after(tamper: impl FnOnce(&sled::Tree)) -> Result<(), VerifyError> {
    let dir = tempfile::tempdir().unwrap();
    drop(new_log(dir.path(), 40, 10));
    let db_path = dir.path().join("log").join("db");
    {
        let db = sled::open(&db_path).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        tamper(&tree);
        db.flush().unwrap();
    }
    let log = AuditLog::open(&dir.path().join("log")).unwrap();
    log.verify(&mut |_, _| {}).map(|_| ())
}

fn tamper_of(result: Result<(), VerifyError>) -> Tamper {
    match result {
        Err(VerifyError::Tampered(t)) => t,
        other => panic!("want a tamper finding, got {other:?}"),
    }
}

#[test]
fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 40, 10);
    let mut calls = Vec::new();
    let report = log.verify(&mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(report.tree_size, 40);
    assert_eq!(report.checkpoints_checked, 5);
    assert_eq!(
        report.stored_hashes_checked,
        tlog_tiles::stored_hash_count(40)
    );
    assert_eq!(calls, vec![(40, 40)]);
    drop(log);
    verify_after(|_| {}).unwrap();
    let empty = AuditLog::create(&dir.path().join("empty"), None).unwrap();
    assert_eq!(empty.verify(&mut |_, _| {}).unwrap().tree_size, 0);
}

#[test]
fn a_flipped_byte_in_a_record_is_named() {
    let found = tamper_of(verify_after(|tree| {
        let mut value = tree.get(key(b'r', 17)).unwrap().unwrap().to_vec();
        value[3] ^= 0x20;
        tree.insert(key(b'r', 17), value).unwrap();
    }));
    assert_eq!(found, Tamper::RecordMismatch { seq: 17 });
    assert_eq!(found.to_string(), "record 17 does not match its leaf hash");
}

#[test]
fn a_removed_record_is_named() {
    let found = tamper_of(verify_after(|tree| {
        tree.remove(key(b'r', 5)).unwrap();
    }));
    assert_eq!(found.to_string(), "record 5 is missing");
    let found = tamper_of(verify_after(|tree| {
        tree.remove(key(b'r', 39)).unwrap();
    }));
    assert_eq!(found, Tamper::RecordMissing { seq: 39 });
}

#[test]
fn swapped_records_are_named() {
    let found = tamper_of(verify_after(|tree| {
        let a = tree.get(key(b'r', 3)).unwrap().unwrap();
        let b = tree.get(key(b'r', 7)).unwrap().unwrap();
        tree.insert(key(b'r', 3), b).unwrap();
        tree.insert(key(b'r', 7), a).unwrap();
    }));
    assert_eq!(found, Tamper::RecordMismatch { seq: 3 });
}

/// The attacker rewrites record 35 and every stored hash so that they agree:
/// only the signed checkpoints give it away, and they bound the range.
#[test]
fn a_rewrite_through_sled_with_consistent_hashes_is_caught_by_the_checkpoints() {
    let found = tamper_of(verify_after(|tree| {
        tree.insert(key(b'r', 35), b"a forged record".to_vec())
            .unwrap();
        rewrite_all_hashes(tree, 40);
    }));
    assert_eq!(found, Tamper::CheckpointMismatch { size: 40, from: 30 });
    assert_eq!(
        found.to_string(),
        "checkpoint at size 40 does not match the records: the first bad record is in 30..40"
    );

    let found = tamper_of(verify_after(|tree| {
        tree.insert(key(b'r', 12), b"a forged record".to_vec())
            .unwrap();
        rewrite_all_hashes(tree, 40);
    }));
    assert_eq!(found, Tamper::CheckpointMismatch { size: 20, from: 10 });
}

fn rewrite_all_hashes(tree: &sled::Tree, size: u64) {
    let mut storage: Vec<tlog_tiles::Hash> = Vec::new();
    struct Reader<'a>(&'a [tlog_tiles::Hash]);
    impl tlog_tiles::HashReader for Reader<'_> {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
            Ok(indexes
                .iter()
                .map(|&i| self.0[usize::try_from(i).unwrap()])
                .collect())
        }
    }
    for n in 0..size {
        let data = tree.get(key(b'r', n)).unwrap().unwrap();
        let hashes = tlog_tiles::stored_hashes(n, &data, &Reader(&storage)).unwrap();
        storage.extend(hashes);
    }
    for (i, h) in (0u64..).zip(&storage) {
        tree.insert(key(b'h', i), &h.0).unwrap();
    }
}

#[test]
fn a_changed_interior_hash_is_named() {
    // Stored hash 2 is the node over records 0 and 1 (level 1, node 0).
    let found = tamper_of(verify_after(|tree| {
        tree.insert(key(b'h', 2), &[7u8; 32]).unwrap();
    }));
    assert_eq!(
        found,
        Tamper::StoredHashMismatch {
            index: 2,
            level: 1,
            node: 0
        }
    );
}

#[test]
fn a_forged_or_removed_checkpoint_is_found() {
    let found = tamper_of(verify_after(|tree| {
        // Re-sign the checkpoint at 20 with another key of the same name.
        let note = tree.get(key(b'c', 20)).unwrap().unwrap();
        let origin = std::str::from_utf8(&note)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned();
        let text = std::str::from_utf8(&note)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .to_owned()
            + "\n";
        let (skey, _) = signed_note::generate_key(&mut rand_core::OsRng, &origin);
        let signer = signed_note::StandardSigner::new(&skey).unwrap();
        let mut forged = signed_note::Note::new(text.as_bytes(), &[]).unwrap();
        forged.add_sigs(&[&signer]).unwrap();
        tree.insert(key(b'c', 20), forged.to_bytes()).unwrap();
    }));
    assert!(
        matches!(found, Tamper::CheckpointSignature { size: 20, .. }),
        "{found:?}"
    );

    let found = tamper_of(verify_after(|tree| {
        tree.remove(key(b'c', 40)).unwrap();
    }));
    assert_eq!(found, Tamper::CheckpointMissing { size: 40 });
}

#[test]
fn records_beyond_the_tree_size_are_found() {
    let found = tamper_of(verify_after(|tree| {
        tree.insert(key(b'r', 40), b"smuggled".to_vec()).unwrap();
    }));
    assert_eq!(
        found,
        Tamper::RecordBeyondSize {
            seq: 40,
            tree_size: 40
        }
    );
}
