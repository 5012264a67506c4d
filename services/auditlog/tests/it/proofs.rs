//! Every proof the log produces verifies with the independent verifier and
//! with tlog; a changed byte, index or size makes it fail.

use rand::{Rng as _, SeedableRng as _};
use twinlog_auditlog::verify_proof::{verify_consistency, verify_inclusion};
use twinlog_auditlog::{AuditLog, ConsistencyProof, InclusionProof};

use crate::common::{flip, new_log, record};

fn check_inclusion(log: &AuditLog, seq: u64, size: u64) {
    let proof = log.prove_inclusion(seq, size).unwrap();
    assert_eq!(
        proof.leaf_hash,
        twinlog_auditlog::verify_proof::leaf_hash(&record(seq))
    );
    assert_eq!(proof.root_hash, log.root(size).unwrap());
    verify_inclusion(&proof).unwrap_or_else(|e| panic!("inclusion ({seq}, {size}): {e}"));
    let tlog_path: Vec<_> = proof
        .inclusion_path
        .iter()
        .map(|h| tlog_tiles::Hash(*h))
        .collect();
    tlog_tiles::check_record(
        &tlog_path,
        size,
        tlog_tiles::Hash(proof.root_hash),
        seq,
        tlog_tiles::Hash(proof.leaf_hash),
    )
    .unwrap();
    for (i, byte) in (0..proof.inclusion_path.len()).zip([0usize, 13, 31].into_iter().cycle()) {
        let mut bad = proof.clone();
        flip(&mut bad.inclusion_path[i], byte);
        assert!(
            verify_inclusion(&bad).is_err(),
            "flipped path[{i}] of ({seq}, {size})"
        );
    }
    let mut wrongs: Vec<InclusionProof> = Vec::new();
    for index in [seq.wrapping_sub(1), seq + 1, seq ^ 2] {
        if index != seq {
            wrongs.push(InclusionProof {
                leaf_index: index,
                ..proof.clone()
            });
        }
    }
    // An inclusion proof does not bind the tree size by itself (the proof for
    // leaf 0 of 3 leaves has the shape of the one for leaf 0 of 4 leaves):
    // the root does. So a wrong size is checked with the root the log
    // signed for that size, as an auditor would.
    for tree_size in [size - 1, size + 1] {
        if tree_size > seq && tree_size <= log.size() {
            wrongs.push(InclusionProof {
                tree_size,
                root_hash: log.root(tree_size).unwrap(),
                ..proof.clone()
            });
        }
    }
    wrongs.push(InclusionProof {
        tree_size: size * 2,
        ..proof.clone()
    });
    let mut bad = proof.clone();
    flip(&mut bad.leaf_hash, 7);
    wrongs.push(bad);
    let mut bad = proof.clone();
    flip(&mut bad.root_hash, 7);
    wrongs.push(bad);
    let mut bad = proof.clone();
    bad.inclusion_path.push(proof.root_hash);
    wrongs.push(bad);
    if !proof.inclusion_path.is_empty() {
        let mut bad = proof.clone();
        bad.inclusion_path.pop();
        wrongs.push(bad);
    }
    for bad in wrongs {
        assert!(
            verify_inclusion(&bad).is_err(),
            "proof for ({seq}, {size}) verified as ({}, {})",
            bad.leaf_index,
            bad.tree_size
        );
    }
}

fn check_consistency(log: &AuditLog, first: u64, second: u64) {
    let proof = log.prove_consistency(first, second).unwrap();
    assert_eq!(proof.first_root, log.root(first).unwrap());
    assert_eq!(proof.second_root, log.root(second).unwrap());
    verify_consistency(&proof).unwrap_or_else(|e| panic!("consistency ({first}, {second}): {e}"));
    if first > 0 {
        let tlog_path: Vec<_> = proof
            .consistency_path
            .iter()
            .map(|h| tlog_tiles::Hash(*h))
            .collect();
        tlog_tiles::check_tree(
            &tlog_path,
            second,
            tlog_tiles::Hash(proof.second_root),
            first,
            tlog_tiles::Hash(proof.first_root),
        )
        .unwrap();
    }
    if proof.consistency_path.is_empty() {
        // Equal sizes or a first size of 0: nothing size-specific to break
        // but the roots.
        let mut bad = proof.clone();
        flip(&mut bad.first_root, 3);
        assert!(verify_consistency(&bad).is_err());
        return;
    }
    for (i, byte) in (0..proof.consistency_path.len()).zip([0usize, 17, 31].into_iter().cycle()) {
        let mut bad = proof.clone();
        flip(&mut bad.consistency_path[i], byte);
        assert!(
            verify_consistency(&bad).is_err(),
            "flipped path[{i}] of ({first}, {second})"
        );
    }
    let mut wrongs: Vec<ConsistencyProof> = Vec::new();
    // Wrong sizes, each with the root the log has for it (as for inclusion,
    // the second size is bound by its root), and a wrong first size alone.
    for (a, b) in [
        (first - 1, second),
        (first + 1, second),
        (first, second + 1),
        (first, second - 1),
        (first ^ 2, second),
    ] {
        if (a, b) != (first, second) && a <= b && b <= log.size() {
            wrongs.push(ConsistencyProof {
                first_size: a,
                second_size: b,
                first_root: log.root(a).unwrap(),
                second_root: log.root(b).unwrap(),
                ..proof.clone()
            });
        }
        if b == second {
            wrongs.push(ConsistencyProof {
                first_size: a,
                ..proof.clone()
            });
        }
    }
    wrongs.push(ConsistencyProof {
        second_size: second * 2,
        ..proof.clone()
    });
    let mut bad = proof.clone();
    flip(&mut bad.first_root, 5);
    wrongs.push(bad);
    let mut bad = proof.clone();
    flip(&mut bad.second_root, 5);
    wrongs.push(bad);
    let mut bad = proof.clone();
    std::mem::swap(&mut bad.first_root, &mut bad.second_root);
    wrongs.push(bad);
    let mut bad = proof.clone();
    bad.consistency_path.pop();
    wrongs.push(bad);
    let mut bad = proof.clone();
    bad.consistency_path.push(proof.second_root);
    wrongs.push(bad);
    let mut bad = proof.clone();
    bad.consistency_path.insert(0, proof.first_root);
    wrongs.push(bad);
    for bad in wrongs {
        assert!(
            verify_consistency(&bad).is_err(),
            "proof for ({first}, {second}) verified as ({}, {})",
            bad.first_size,
            bad.second_size
        );
    }
}

/// All (seq, size) and (first, second) pairs of every tree of 1 to 40 records.
#[test]
fn every_proof_of_small_trees_verifies_and_every_change_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 40, 1);
    for size in 1..=40 {
        for seq in 0..size {
            check_inclusion(&log, seq, size);
        }
        for first in 0..=size {
            check_consistency(&log, first, size);
        }
    }
}

/// Random pairs in a 10,000-record log appended in batches of 1,000.
#[test]
fn random_proofs_of_a_large_log_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 10_000, 1_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7717_1090);
    for _ in 0..300 {
        let size = rng.gen_range(1..=10_000);
        let seq = rng.gen_range(0..size);
        check_inclusion(&log, seq, size);
        let first = rng.gen_range(1..=size);
        check_consistency(&log, first, size);
    }
    for (seq, size) in [(0, 10_000), (9_999, 10_000), (4_095, 4_096), (4_096, 4_097)] {
        check_inclusion(&log, seq, size);
    }

    let mut calls = Vec::new();
    let report = log
        .verify(&mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(report.tree_size, 10_000);
    assert_eq!(report.root, log.root(10_000).unwrap());
    assert_eq!(report.checkpoints_checked, 11);
    assert!(calls.len() >= 3, "progress calls: {calls:?}");
    assert_eq!(calls.last(), Some(&(10_000, 10_000)));
}

#[test]
fn proofs_beyond_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 5, 5);
    assert!(log.prove_inclusion(5, 5).is_err());
    assert!(log.prove_inclusion(0, 6).is_err());
    assert!(log.prove_consistency(3, 6).is_err());
    assert!(log.prove_consistency(4, 3).is_err());
    assert!(log.root(6).is_err());
}
