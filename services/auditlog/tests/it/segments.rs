//! Record and hash segments: reads, proofs and verification across segment
//! boundaries, batches split into several segments, reopen, and segments
//! that stay inline in sled's fsynced log.

use twinlog_auditlog::tamper;
use twinlog_auditlog::verify_proof::{verify_consistency, verify_inclusion};
use twinlog_auditlog::{AppendBatch, AuditLog, LogError, SEGMENT_BYTES_MAX, SEGMENT_RECORDS_MAX};

use crate::common::record;

/// Record `i` of these logs: mostly small, some tiny (so a segment hits
/// SEGMENT_RECORDS_MAX), some larger than a segment.
fn mixed(i: u64) -> Vec<u8> {
    match i {
        1_000..=1_599 => vec![b'a' + (i % 26) as u8],
        1_700 | 2_345 => vec![b'L'; SEGMENT_BYTES_MAX + 100 + i as usize],
        2_346 => vec![b'H'; 200_000],
        _ => record(i),
    }
}

fn append(log: &mut AuditLog, from: u64, to: u64) {
    let appended = log
        .append(AppendBatch {
            leaves: (from..to).map(mixed).collect(),
            side_writes: Vec::new(),
        })
        .unwrap();
    assert_eq!((appended.first_seq, appended.tree_size), (from, to));
}

/// Batch ends: one batch far larger than SEGMENT_RECORDS_MAX, one of tiny
/// records, single records, large records.
const BATCH_ENDS: [u64; 9] = [1, 1_000, 1_600, 1_601, 1_700, 1_701, 2_346, 2_347, 3_000];

fn build(dir: &std::path::Path) -> AuditLog {
    let mut log = AuditLog::create(dir, None).unwrap();
    let mut from = 0;
    for to in BATCH_ENDS {
        append(&mut log, from, to);
        from = to;
    }
    log
}

/// Every segment boundary of a closed log, from tamper::segment_of.
fn boundaries(dir: &std::path::Path, size: u64) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut seq = 0;
    while seq < size {
        let segment = tamper::segment_of(dir, seq).unwrap();
        assert_eq!(segment.start, seq);
        assert!(segment.end - segment.start <= SEGMENT_RECORDS_MAX as u64);
        starts.push(seq);
        seq = segment.end;
    }
    starts
}

#[test]
fn reads_and_proofs_cross_segment_boundaries_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let (root, checkpoint) = {
        let log = build(&path);
        (log.root(3_000).unwrap(), log.checkpoint().unwrap())
    };
    let starts = boundaries(&path, 3_000);
    // The 999-record batch is split by bytes, the tiny one by record count.
    assert!(
        starts.contains(&1_256) && starts.contains(&1_512),
        "{starts:?}"
    );
    assert!(starts.len() > 20, "{starts:?}");
    for end in BATCH_ENDS {
        assert!(
            end == 3_000 || starts.contains(&end),
            "a segment spans batch end {end}"
        );
    }

    let log = tamper::open_when_unlocked(&path).unwrap();
    assert_eq!(log.size(), 3_000);
    assert_eq!(log.root(3_000).unwrap(), root);
    assert_eq!(log.checkpoint().unwrap(), checkpoint);

    // Every record, one by one and streamed, and ranges starting and ending
    // inside and at the edges of segments.
    for seq in 0..3_000 {
        assert_eq!(log.record(seq).unwrap(), Some(mixed(seq)), "record {seq}");
    }
    let all: Vec<_> = log.records(0, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(all.len(), 3_000);
    assert!(all.iter().all(|(seq, bytes)| *bytes == mixed(*seq)));
    for &start in &starts[1..] {
        for (from, to) in [
            (start - 1, start + 1),
            (start, start + 300),
            (start.saturating_sub(5), start),
        ] {
            let got: Vec<_> = log.records(from, to).map(Result::unwrap).collect();
            let want: Vec<_> = (from..to.min(3_000)).map(|s| (s, mixed(s))).collect();
            assert_eq!(got, want, "records({from}, {to})");
        }
    }

    // Proofs of records on both sides of each boundary, at sizes on and off
    // boundaries; consistency between boundary sizes.
    for (i, &start) in starts.iter().enumerate().skip(1) {
        for seq in [start - 1, start] {
            for size in [start + 1, 3_000, (start + 37).min(3_000)] {
                let proof = log.prove_inclusion(seq, size).unwrap();
                assert_eq!(proof.root_hash, log.root(size).unwrap());
                verify_inclusion(&proof).unwrap();
            }
        }
        let first = starts[i - 1];
        for (a, b) in [(first, start), (start, 3_000), (start - 1, start + 1)] {
            verify_consistency(&log.prove_consistency(a, b).unwrap()).unwrap();
        }
    }
    let report = log.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.root, root);
    assert_eq!(report.checkpoints_checked, BATCH_ENDS.len() as u64 + 1);

    // Appends continue after reopen from the rebuilt right edge.
    let mut log = log;
    append(&mut log, 3_000, 3_333);
    drop(log);
    let log = tamper::open_when_unlocked(&path).unwrap();
    log.verify(&mut |_, _| {}).unwrap();
    assert_eq!(log.record(3_100).unwrap(), Some(mixed(3_100)));
}

/// The segment layout does not show in the tree: the same records appended
/// in other batches give the same roots and proofs.
#[test]
fn roots_do_not_depend_on_batches_or_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(&dir.path().join("a"));
    let mut other = AuditLog::create(&dir.path().join("b"), None).unwrap();
    let mut from = 0;
    for to in [7, 8, 700, 1_999, 2_000, 3_000] {
        append(&mut other, from, to);
        from = to;
    }
    for size in [
        1, 7, 8, 255, 256, 257, 1_000, 1_256, 1_600, 2_346, 2_347, 2_999, 3_000,
    ] {
        assert_eq!(
            log.root(size).unwrap(),
            other.root(size).unwrap(),
            "size {size}"
        );
    }
    assert_eq!(
        log.prove_inclusion(1_255, 2_000).unwrap(),
        other.prove_inclusion(1_255, 2_000).unwrap()
    );
}

#[test]
fn tampering_inside_a_split_batch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    drop(build(&path));
    // Records 1..1000 are one batch in several segments.
    let segment = tamper::segment_of(&path, 700).unwrap();
    assert!(segment.start > 1 && segment.end < 1_000, "{segment:?}");
    tamper::flip_record_byte(&path, segment.end - 1, 0).unwrap();
    let log = tamper::open_when_unlocked(&path).unwrap();
    let err = log.verify(&mut |_, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("record {} does not match its leaf hash", segment.end - 1)
    );
    drop(log);
    let removed = tamper::remove_segment(&path, 1_300).unwrap();
    let log = tamper::open_when_unlocked(&path).unwrap();
    let err = log.record(removed.start + 1).unwrap_err();
    assert!(matches!(err, LogError::RecordMissing { .. }), "{err}");
    let read: Vec<_> = log.records(removed.start - 2, removed.end + 2).collect();
    assert_eq!(read.len(), 3);
    assert_eq!(
        read[2].as_ref().unwrap_err().to_string(),
        format!("record {} is missing from the audit log", removed.start)
    );
}

/// sled 0.34 writes nodes over ~128 KiB to blob files it never fsyncs; the
/// segment caps keep an ordinary workload out of them.
#[test]
fn ordinary_appends_write_no_sled_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = AuditLog::create(&path, None).unwrap();
    for _ in 0..4 {
        let from = log.size();
        log.append(AppendBatch {
            leaves: (from..from + 10_000)
                .map(|i| {
                    let mut r = vec![b'x'; 300];
                    r[..8].copy_from_slice(&i.to_be_bytes());
                    r
                })
                .collect(),
            side_writes: Vec::new(),
        })
        .unwrap();
    }
    drop(log);
    let blobs = path.join("db").join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote blob files in {}", blobs.display());
}

#[test]
fn a_format_1_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    drop(AuditLog::create(&path, None).unwrap());
    let json_path = path.join("log.json");
    let json = std::fs::read_to_string(&json_path).unwrap();
    std::fs::write(
        &json_path,
        json.replace("\"format_version\": 2", "\"format_version\": 1"),
    )
    .unwrap();
    let err = AuditLog::open(&path).unwrap_err().to_string();
    assert!(err.contains("format version 1"), "{err}");
    assert!(err.contains("no migration"), "{err}");
}
