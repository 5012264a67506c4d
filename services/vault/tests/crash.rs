//! Crash safety of the KEK rotation that every forget performs: a crash at
//! each step leaves a vault that opens, completes the rotation, keeps every
//! live key readable and the forgotten one erased.

mod common;

use std::os::unix::fs::FileExt;

use common::customer;
use twinlog_vault::{CrashPoint, ForgetOutcome, Vault, VaultError};

fn crash_during_forget(point: CrashPoint) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = common::keys_dir(root);
    let (mut vault, db) = common::create(root);
    let (a, b, c) = (customer(1), customer(2), customer(3));
    let sa = vault.seal(&a, b"a", b"", b"alice").unwrap();
    let sb = vault.seal(&b, b"b", b"", b"bob").unwrap();
    let sc = vault.seal(&c, b"c", b"", b"carol").unwrap();
    db.flush().unwrap();
    let (old_id, old_kek) = vault.kek_for_tests();
    assert_eq!(
        Vault::kek_slots_for_tests(&keys).unwrap(),
        (vec![old_id], 0)
    );

    vault.set_crash_point_for_tests(Some(point));
    match vault.forget(&a) {
        Err(VaultError::SimulatedCrash(p)) => assert_eq!(p, point),
        other => panic!("expected a simulated crash, got {other:?}"),
    }
    let (slots, _) = Vault::kek_slots_for_tests(&keys).unwrap();
    match point {
        CrashPoint::AfterTombstone => assert_eq!(slots, vec![old_id]),
        _ => assert_eq!(slots, vec![old_id, old_id + 1], "pending kek written"),
    }
    if point == CrashPoint::MidRewrap {
        // Worst case: the half-done rewrap reached the disk.
        db.flush().unwrap();
    }
    drop(vault);
    drop(db);

    let (vault, db) = common::open(root);
    // The rotation was completed by open: one KEK, newer, the old one gone.
    let (new_id, new_kek) = vault.kek_for_tests();
    assert_eq!(new_id, old_id + 1);
    assert_ne!(new_kek, old_kek);
    assert_eq!(
        Vault::kek_slots_for_tests(&keys).unwrap(),
        (vec![new_id], 0)
    );
    assert!(common::files_containing(&keys, &old_kek).is_empty());
    assert!(vault.is_forgotten(&a).unwrap());
    assert_eq!(vault.open_sealed(&sa, b"").unwrap(), None);
    assert_eq!(vault.open_sealed(&sb, b"").unwrap().unwrap(), b"bob");
    assert_eq!(vault.open_sealed(&sc, b"").unwrap().unwrap(), b"carol");
    drop(vault);
    drop(db);

    // Everything is under the new KEK: a further reopen is quiet and works.
    let (mut vault, _db) = common::open(root);
    assert_eq!(vault.kek_for_tests().0, new_id);
    assert_eq!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::AlreadyForgotten { generation: 1 }
    );
    assert_eq!(vault.open_sealed(&sb, b"").unwrap().unwrap(), b"bob");
    let sa2 = vault.seal(&a, b"a", b"", b"alice 2").unwrap();
    assert_eq!(&sa2.key_id[16..], &2u32.to_be_bytes());
}

#[test]
fn crash_after_tombstone() {
    crash_during_forget(CrashPoint::AfterTombstone);
}

#[test]
fn crash_after_pending_kek_written() {
    crash_during_forget(CrashPoint::AfterPendingKek);
}

#[test]
fn crash_in_the_middle_of_rewrapping() {
    crash_during_forget(CrashPoint::MidRewrap);
}

#[test]
fn crash_after_rewrap_before_old_kek_zeroed() {
    crash_during_forget(CrashPoint::AfterRewrap);
}

#[test]
fn failed_rotation_is_resumed_in_process() {
    // The same Vault value, after an error half-way, finishes the rotation on
    // the next forget instead of starting another.
    let dir = tempfile::tempdir().unwrap();
    let (mut vault, _db) = common::create(dir.path());
    let (a, b) = (customer(1), customer(2));
    vault.seal(&a, b"a", b"", b"alice").unwrap();
    let sb = vault.seal(&b, b"b", b"", b"bob").unwrap();
    vault.set_crash_point_for_tests(Some(CrashPoint::MidRewrap));
    assert!(vault.forget(&a).is_err());
    vault.set_crash_point_for_tests(None);
    assert_eq!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::AlreadyForgotten { generation: 1 }
    );
    assert_eq!(vault.kek_for_tests().0, 2);
    let keys = common::keys_dir(dir.path());
    assert_eq!(Vault::kek_slots_for_tests(&keys).unwrap(), (vec![2], 0));
    assert_eq!(vault.open_sealed(&sb, b"").unwrap().unwrap(), b"bob");
}

#[test]
fn torn_write_of_a_new_kek_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = common::keys_dir(root);
    let (mut vault, db) = common::create(root);
    let s = vault.seal(&customer(1), b"n", b"", b"x").unwrap();
    db.flush().unwrap();
    drop(vault);
    drop(db);
    // Garbage in slot 1 (offset 96): a step-1 write torn by a crash.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(keys.join("kek"))
        .unwrap();
    f.write_all_at(&[0xAB; 40], 96).unwrap();
    drop(f);
    assert_eq!(Vault::kek_slots_for_tests(&keys).unwrap(), (vec![1], 1));
    let (vault, _db) = common::open(root);
    assert_eq!(Vault::kek_slots_for_tests(&keys).unwrap(), (vec![1], 0));
    assert_eq!(vault.open_sealed(&s, b"").unwrap().unwrap(), b"x");
}

#[test]
fn plain_rotation_keeps_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut vault, _db) = common::create(dir.path());
    let s = vault.seal(&customer(1), b"n", b"", b"x").unwrap();
    let tag = vault.pseudonymizer().tag("phone", b"1");
    for _ in 0..3 {
        vault.rotate_kek().unwrap();
    }
    assert_eq!(vault.kek_for_tests().0, 4);
    drop(vault);
    drop(_db);
    let (vault, _db) = common::open(dir.path());
    assert_eq!(vault.open_sealed(&s, b"").unwrap().unwrap(), b"x");
    assert_eq!(vault.pseudonymizer().tag("phone", b"1"), tag);
}
