//! Changes made to the sled database behind the log's back (through
//! `twinlog_auditlog::tamper`) are found by `verify`, which names the record,
//! segment, hash or range.

use std::path::Path;

use twinlog_auditlog::tamper;
use twinlog_auditlog::{AuditLog, Tamper, VerifyError};

use crate::common::new_log;

/// Builds a 40-record log (checkpoints at 0, 10, 20, 30, 40; one segment per
/// batch), closes it, changes it with `change`, reopens it and verifies.
fn verify_after(change: impl FnOnce(&Path)) -> Result<(), VerifyError> {
    let dir = tempfile::tempdir().unwrap();
    drop(new_log(dir.path(), 40, 10));
    let path = dir.path().join("log");
    change(&path);
    let log = tamper::open_when_unlocked(&path).unwrap();
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
fn the_test_log_has_one_segment_per_batch() {
    verify_after(|dir| {
        for seq in [0, 9, 10, 17, 39] {
            let first = seq / 10 * 10;
            assert_eq!(tamper::segment_of(dir, seq).unwrap(), first..first + 10);
        }
    })
    .unwrap();
}

#[test]
fn a_flipped_byte_in_a_record_is_named() {
    for seq in [0, 17, 19, 20, 39] {
        let found = tamper_of(verify_after(|dir| {
            tamper::flip_record_byte(dir, seq, 3).unwrap();
        }));
        assert_eq!(found, Tamper::RecordMismatch { seq });
        assert_eq!(
            found.to_string(),
            format!("record {seq} does not match its leaf hash")
        );
    }
    verify_after(|dir| {
        let err = tamper::flip_record_byte(dir, 17, 1000).unwrap_err();
        assert!(err.to_string().contains("no byte 1000"), "{err}");
    })
    .unwrap();
}

#[test]
fn a_removed_record_is_named() {
    for seq in [5, 10, 19, 39] {
        let found = tamper_of(verify_after(|dir| {
            tamper::remove_record(dir, seq).unwrap();
        }));
        assert_eq!(found, Tamper::RecordMissing { seq });
        assert_eq!(found.to_string(), format!("record {seq} is missing"));
    }
}

#[test]
fn a_removed_segment_is_named_by_its_first_record() {
    for (seq, first) in [(0, 0), (25, 20), (39, 30)] {
        let found = tamper_of(verify_after(|dir| {
            assert_eq!(tamper::remove_segment(dir, seq).unwrap(), first..first + 10);
        }));
        assert_eq!(found, Tamper::RecordMissing { seq: first });
        assert_eq!(found.to_string(), format!("record {first} is missing"));
    }
}

#[test]
fn swapped_records_are_named() {
    // In one segment.
    let found = tamper_of(verify_after(|dir| {
        tamper::swap_records(dir, 3, 7).unwrap();
    }));
    assert_eq!(found, Tamper::RecordMismatch { seq: 3 });
    // Across segments.
    let found = tamper_of(verify_after(|dir| {
        tamper::swap_records(dir, 27, 13).unwrap();
    }));
    assert_eq!(found, Tamper::RecordMismatch { seq: 13 });
}

/// The attacker rewrites a record and every stored hash so that they agree:
/// only the signed checkpoints give it away, and they bound the range.
#[test]
fn a_rewrite_with_consistent_hashes_is_caught_by_the_checkpoints() {
    let found = tamper_of(verify_after(|dir| {
        tamper::rewrite_record_and_hashes(dir, 35, b"a forged record").unwrap();
    }));
    assert_eq!(found, Tamper::CheckpointMismatch { size: 40, from: 30 });
    assert_eq!(
        found.to_string(),
        "checkpoint at size 40 does not match the records: the first bad record is in 30..40"
    );

    let found = tamper_of(verify_after(|dir| {
        tamper::rewrite_record_and_hashes(dir, 12, b"a forged record").unwrap();
    }));
    assert_eq!(found, Tamper::CheckpointMismatch { size: 20, from: 10 });
}

#[test]
fn a_corrupt_offsets_table_names_the_segment() {
    let found = tamper_of(verify_after(|dir| {
        assert_eq!(tamper::corrupt_offsets_table(dir, 14).unwrap(), 10..20);
    }));
    assert!(
        matches!(
            found,
            Tamper::SegmentCorrupt {
                first: 10,
                end: 20,
                ..
            }
        ),
        "{found:?}"
    );
    let text = found.to_string();
    assert!(
        text.starts_with("record segment 10..20 is corrupt: its offsets table is corrupt"),
        "{text}"
    );

    // Reads report it too, naming the segment.
    let dir = tempfile::tempdir().unwrap();
    drop(new_log(dir.path(), 40, 10));
    let path = dir.path().join("log");
    tamper::corrupt_offsets_table(&path, 14).unwrap();
    let log = tamper::open_when_unlocked(&path).unwrap();
    let err = log.record(12).unwrap_err().to_string();
    assert!(err.contains("record segment 10..20 is unreadable"), "{err}");
    assert_eq!(log.record(9).unwrap(), Some(crate::common::record(9)));
    let read: Vec<_> = log.records(0, 40).collect();
    assert_eq!(read.len(), 11);
    assert!(read[10].is_err());
}

#[test]
fn a_changed_interior_hash_is_named() {
    // Stored hash 2 is the node over records 0 and 1 (level 1, node 0).
    let found = tamper_of(verify_after(|dir| {
        tamper::set_stored_hash(dir, 2, [7u8; 32]).unwrap();
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
    let found = tamper_of(verify_after(|dir| {
        // Re-sign the checkpoint at 20 with another key of the same name.
        let note = tamper::open_when_unlocked(dir)
            .unwrap()
            .checkpoint_at(20)
            .unwrap()
            .unwrap();
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
        tamper::set_checkpoint(dir, 20, Some(&forged.to_bytes())).unwrap();
    }));
    assert!(
        matches!(found, Tamper::CheckpointSignature { size: 20, .. }),
        "{found:?}"
    );

    let found = tamper_of(verify_after(|dir| {
        tamper::set_checkpoint(dir, 40, None).unwrap();
    }));
    assert_eq!(found, Tamper::CheckpointMissing { size: 40 });
}

#[test]
fn records_beyond_the_tree_size_are_found() {
    let found = tamper_of(verify_after(|dir| {
        assert_eq!(tamper::smuggle_record(dir, b"smuggled").unwrap(), 40);
    }));
    assert_eq!(
        found,
        Tamper::RecordBeyondSize {
            seq: 40,
            tree_size: 40
        }
    );
}

/// A log whose right-edge hashes are gone still opens, so that `verify` can
/// name the damage; appending to it fails.
#[test]
fn a_removed_hash_segment_is_named_and_blocks_appends() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_log(dir.path(), 40, 10));
    let path = dir.path().join("log");
    let last = tlog_tiles::stored_hash_count(40) - 1;
    let removed = tamper::remove_hash_segment(&path, last).unwrap();
    assert!(removed.contains(&last), "{removed:?}");
    let mut log = tamper::open_when_unlocked(&path).unwrap();
    let found = tamper_of(log.verify(&mut |_, _| {}).map(|_| ()));
    assert!(
        matches!(found, Tamper::StoredHashMissing { index, .. } if index == removed.start),
        "{found:?}"
    );
    let err = log
        .append(twinlog_auditlog::AppendBatch {
            leaves: vec![b"more".to_vec()],
            side_writes: Vec::new(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");
    assert_eq!(log.size(), 40);
}
