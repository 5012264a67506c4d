//! Copies of one log, given the same inputs, produce the same bytes; a
//! duplicate adds nothing; reopening rebuilds exactly the live state.

use proptest::prelude::*;
use twinlog::Twinlog;
use twinlog_tests::{copy_dir, fixtures, inputs};

fn records(t: &Twinlog) -> Vec<Vec<u8>> {
    (0..t.log().size())
        .map(|s| t.log().record(s).expect("read").expect("present"))
        .collect()
}

/// A fresh log and a byte-for-byte copy of it, made before any input.
fn twins() -> (tempfile::TempDir, Twinlog, Twinlog) {
    let root = tempfile::tempdir().expect("temp dir");
    let a = root.path().join("a");
    let b = root.path().join("b");
    drop(Twinlog::init(&a).expect("init"));
    copy_dir(&a, &b).expect("copy");
    let a = Twinlog::open(&a, &mut |_, _| {}).expect("open a");
    let b = Twinlog::open(&b, &mut |_, _| {}).expect("open b");
    (root, a, b)
}

#[test]
fn copies_of_a_log_fold_the_same_inputs_into_the_same_bytes() {
    let (_root, mut a, mut b) = twins();
    let all = fixtures();
    let bodies: Vec<&[u8]> = all.iter().map(|(_, b)| b.as_slice()).collect();
    let ins = inputs(&bodies, 1_763_400_000_000);
    let ra = a.append(&ins).expect("append a");
    let rb = b.append(&ins).expect("append b");
    assert_eq!(ra, rb);
    assert!(ra.records > 40);
    assert_eq!(records(&a), records(&b));
    assert_eq!(
        a.log().checkpoint().expect("a"),
        b.log().checkpoint().expect("b")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_same_inputs_give_the_same_checkpoint_root(
        picks in prop::collection::vec(0usize..1000, 1..25),
        ingest_ms in 1_763_000_000_000i64..1_765_000_000_000,
    ) {
        let all = fixtures();
        let bodies: Vec<&[u8]> = picks.iter().map(|i| all[i % all.len()].1.as_slice()).collect();
        let ins = inputs(&bodies, ingest_ms);
        let (_root, mut a, mut b) = twins();
        // Fed in two different batchings: group commit must not change bytes.
        let ra = a.append(&ins).expect("append a");
        let mid = ins.len() / 2;
        b.append(&ins[..mid]).expect("append b1");
        let rb = b.append(&ins[mid..]).expect("append b2");
        prop_assert_eq!(ra.root, rb.root);
        prop_assert_eq!(records(&a), records(&b));
    }

    #[test]
    fn re_appending_any_subset_adds_nothing_and_reopening_rebuilds_the_state(
        picks in prop::collection::vec(0usize..1000, 1..25),
        again in prop::collection::vec(0usize..1000, 1..25),
    ) {
        let all = fixtures();
        let bodies: Vec<&[u8]> = picks.iter().map(|i| all[i % all.len()].1.as_slice()).collect();
        let ins = inputs(&bodies, 1_763_400_000_000);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut t = Twinlog::init(dir.path()).expect("init");
        t.append(&ins).expect("append");
        let size = t.log().size();
        let subset: Vec<_> = again.iter().map(|i| ins[i % ins.len()].clone()).collect();
        let report = t.append(&subset).expect("re-append");
        prop_assert_eq!(report.records, 0, "re-appended inputs added records: {:?}", report);
        prop_assert_eq!(report.duplicates, subset.len() as u64);
        prop_assert_eq!(t.log().size(), size);
        let live = t.state().clone();
        drop(t);
        let reopened = Twinlog::open(dir.path(), &mut |_, _| {}).expect("reopen");
        prop_assert_eq!(reopened.state(), &live);
    }
}
