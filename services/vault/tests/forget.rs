//! Forget: erasure semantics, re-keying, persistence, and that the destroyed
//! key (and what could rebuild it) is really gone from the disk.

mod common;

use common::customer;
use twinlog_vault::{ForgetOutcome, Vault};

#[test]
fn forget_erases_old_and_rekeys_new() {
    let dir = tempfile::tempdir().unwrap();
    let (mut vault, db) = common::create(dir.path());
    let (a, b) = (customer(1), customer(2));
    let a1 = vault.seal(&a, b"a1", b"1", b"alice one").unwrap();
    let a2 = vault.seal(&a, b"a2", b"2", b"alice two").unwrap();
    let b1 = vault.seal(&b, b"b1", b"3", b"bob one").unwrap();
    assert!(!vault.is_forgotten(&a).unwrap());

    assert_eq!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::Forgotten { generation: 1 }
    );
    assert_eq!(vault.open_sealed(&a1, b"1").unwrap(), None);
    assert_eq!(vault.open_sealed(&a2, b"2").unwrap(), None);
    // Erased values are erased whatever the aad: nothing is left to check.
    assert_eq!(vault.open_sealed(&a1, b"other").unwrap(), None);
    assert_eq!(vault.open_sealed(&b1, b"3").unwrap().unwrap(), b"bob one");
    assert!(vault.is_forgotten(&a).unwrap());
    assert!(!vault.is_forgotten(&b).unwrap());
    assert_eq!(vault.forgotten().unwrap(), vec![a]);
    assert_eq!(vault.customer_key_for_tests(&a).unwrap(), None);

    // Idempotent.
    assert_eq!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::AlreadyForgotten { generation: 1 }
    );

    // New content for `a`: generation 2, a new key; the old stays erased.
    let a3 = vault.seal(&a, b"a1", b"1", b"alice again").unwrap();
    assert_eq!(&a3.key_id[16..], &2u32.to_be_bytes());
    assert_eq!(a3.nonce, a1.nonce);
    assert_ne!(a3.ciphertext, a1.ciphertext);
    assert_eq!(
        vault.open_sealed(&a3, b"1").unwrap().unwrap(),
        b"alice again"
    );
    assert_eq!(vault.open_sealed(&a1, b"1").unwrap(), None);
    db.flush().unwrap();
    drop(vault);
    drop(db);

    // Survives reopen (cold cache).
    let (mut vault, _db) = common::open(dir.path());
    assert!(vault.is_forgotten(&a).unwrap());
    assert_eq!(vault.forgotten().unwrap(), vec![a]);
    assert_eq!(vault.open_sealed(&a1, b"1").unwrap(), None);
    assert_eq!(
        vault.open_sealed(&a3, b"1").unwrap().unwrap(),
        b"alice again"
    );
    assert_eq!(vault.open_sealed(&b1, b"3").unwrap().unwrap(), b"bob one");

    // Forget generation 2 as well.
    assert_eq!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::Forgotten { generation: 2 }
    );
    assert_eq!(vault.open_sealed(&a3, b"1").unwrap(), None);
    assert_eq!(vault.open_sealed(&a1, b"1").unwrap(), None);
    assert_eq!(vault.open_sealed(&b1, b"3").unwrap().unwrap(), b"bob one");
    let a4 = vault.seal(&a, b"a4", b"4", b"third").unwrap();
    assert_eq!(&a4.key_id[16..], &3u32.to_be_bytes());
}

#[test]
fn forget_of_a_customer_without_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut vault, _db) = common::create(dir.path());
    let c = customer(5);
    assert_eq!(vault.forget(&c).unwrap(), ForgetOutcome::NeverKeyed);
    assert!(vault.is_forgotten(&c).unwrap());
    assert_eq!(
        vault.forget(&c).unwrap(),
        ForgetOutcome::AlreadyForgotten { generation: 0 }
    );
    let s = vault.seal(&c, b"n", b"", b"x").unwrap();
    assert_eq!(&s.key_id[16..], &1u32.to_be_bytes());
    assert_eq!(vault.open_sealed(&s, b"").unwrap().unwrap(), b"x");
}

/// The heart of crypto-shredding: after forget, nothing on disk can give the
/// key back. We scan every byte of every file of the keys dir and the sled db
/// for (1) the customer's raw key, (2) the ratchet state it was derived from,
/// (3) the KEK that wrapped it (old wrapped copies may survive in sled's files
/// until compaction; without that KEK they are noise), and (4) a distinctive
/// plaintext. Controls show the scan finds what is really there.
#[test]
fn destroyed_key_is_gone_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (mut vault, db) = common::create(root);
    let records = db.open_tree("records").unwrap();
    let (a, b) = (customer(1), customer(2));
    let secret = b"DISTINCTIVE-PLAINTEXT-7f3a9c-the-customer-said-this";

    vault.seal(&b, b"b0", b"0", b"bob").unwrap();
    let (_, state_before_a) = vault.ratchet_state_for_tests();
    let sealed = vault.seal(&a, b"a1", b"1", secret).unwrap();
    let (_, a_key) = vault.customer_key_for_tests(&a).unwrap().unwrap();
    let (_, state_after_a) = vault.ratchet_state_for_tests();
    // Like the log: the sealed record goes to another tree of the same db.
    records
        .insert(b"1", twinlog_proto::encode(&sealed))
        .unwrap();
    // Many more seals and flushes so that the old versions are spread around.
    for i in 0..200u32 {
        let c = customer((i % 7) as u8 + 10);
        let s = vault.seal(&c, &i.to_be_bytes(), b"", b"filler").unwrap();
        records
            .insert(i.to_be_bytes(), twinlog_proto::encode(&s))
            .unwrap();
        if i % 50 == 0 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    let (_, old_kek) = vault.kek_for_tests();
    // Controls: the scanner finds the live KEK in the kek file, and the sealed
    // ciphertext in the db.
    assert!(!common::files_containing(root, &old_kek).is_empty());
    assert!(!common::files_containing(&common::db_dir(root), &sealed.ciphertext).is_empty());

    vault.forget(&a).unwrap();
    let (_, new_kek) = vault.kek_for_tests();
    assert_ne!(new_kek, old_kek);
    db.flush().unwrap();
    drop(records);
    drop(vault);
    drop(db);

    for (what, needle) in [
        ("customer key", &a_key[..]),
        (
            "ratchet state before the customer's key",
            &state_before_a[..],
        ),
        ("kek that wrapped the customer's key", &old_kek[..]),
        ("plaintext", &secret[..]),
    ] {
        let found = common::files_containing(root, needle);
        assert!(found.is_empty(), "{what} found on disk in {found:?}");
    }
    // The state after the step is the live ratchet state (wrapped, never in
    // clear) and must not be in clear either.
    assert!(common::files_containing(root, &state_after_a).is_empty());
    assert!(
        !common::files_containing(root, &new_kek).is_empty(),
        "control: new kek in its file"
    );

    // And the vault still works, and still says erased.
    let (vault, _db) = common::open(root);
    assert_eq!(vault.open_sealed(&sealed, b"1").unwrap(), None);
}

#[test]
fn forget_survives_a_reopen_without_flush_by_caller() {
    // forget is durable on return: drop everything without flushing.
    let dir = tempfile::tempdir().unwrap();
    let (mut vault, db) = common::create(dir.path());
    let a = customer(1);
    let s = vault.seal(&a, b"n", b"", b"x").unwrap();
    assert!(matches!(
        vault.forget(&a).unwrap(),
        ForgetOutcome::Forgotten { .. }
    ));
    drop(vault);
    drop(db);
    let (vault, _db) = common::open(dir.path());
    assert!(vault.is_forgotten(&a).unwrap());
    assert_eq!(vault.open_sealed(&s, b"").unwrap(), None);
    let _ = Vault::kek_slots_for_tests(&common::keys_dir(dir.path())).unwrap();
}
