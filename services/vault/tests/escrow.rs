//! Key escrow: a vault's material, wrapped under a master key as keys-topic
//! entries, restores a vault that seals and opens exactly as the original;
//! a forget removes the key from what is restored; a wrong master key or an
//! altered entry is refused with an error that says what to do.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use common::{create, customer, keys_dir, open_db};
use twinlog_vault::escrow::{escrow_records, unwrap_entry, wrap_entry};
use twinlog_vault::{EscrowEntry, KeyMaterial, MasterKey, Vault, VaultError};

const SHARD: u32 = 3;

/// A compacted topic's view: the last value of each key, tombstones removed.
type Topic = BTreeMap<Vec<u8>, Vec<u8>>;

fn publish(topic: &mut Topic, master: &MasterKey, entries: &[EscrowEntry]) {
    for (key, value) in escrow_records(master, SHARD, entries).unwrap() {
        match value {
            Some(v) => topic.insert(key, v),
            None => topic.remove(&key),
        };
    }
}

fn material(topic: &Topic, master: &MasterKey) -> Result<KeyMaterial, VaultError> {
    KeyMaterial::from_entries(
        master,
        SHARD,
        topic.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
}

fn restore(root: &std::path::Path, m: &KeyMaterial) -> (Vault, sled::Db) {
    let db = open_db(root);
    let tree = db.open_tree("vault").unwrap();
    (Vault::restore(&keys_dir(root), tree, m).unwrap(), db)
}

#[test]
fn a_restored_vault_seals_and_opens_as_the_original_and_forgets_what_it_forgot() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([7; 32]);
    let (mut original, _db) = create(&dir.path().join("a"));
    original.track_changes();
    let mut topic = Topic::new();
    // The first take is a full snapshot: ratchet first.
    let first = original.take_changes().unwrap();
    assert!(first.snapshot);
    let first = first.entries;
    assert!(
        matches!(first[0], EscrowEntry::Ratchet { index: 0, .. }),
        "{first:?}"
    );
    publish(&mut topic, &master, &first);

    let kept = original.seal(&customer(1), b"n1", b"1", b"kept").unwrap();
    let gone = original.seal(&customer(2), b"n2", b"2", b"gone").unwrap();
    let changes = original.take_changes().unwrap();
    assert!(!changes.snapshot);
    let changes = changes.entries;
    assert!(
        matches!(changes[0], EscrowEntry::Ratchet { index: 2, .. }),
        "the ratchet state comes before the keys it produced: {changes:?}"
    );
    assert_eq!(changes.len(), 3, "{changes:?}");
    publish(&mut topic, &master, &changes);
    assert!(original.take_changes().unwrap().entries.is_empty());

    original.forget(&customer(2)).unwrap();
    let forget = original.take_changes().unwrap().entries;
    let records = escrow_records(&master, SHARD, &forget).unwrap();
    assert_eq!(records.len(), 2, "the forgotten entry, then the tombstone");
    assert!(records[0].1.is_some() && records[1].1.is_none());
    publish(&mut topic, &master, &forget);
    let key_of_2 = format!("{SHARD}/key/{}", hex(&customer(2))).into_bytes();
    assert!(!topic.contains_key(&key_of_2), "the key is tombstoned");

    let m = material(&topic, &master).unwrap();
    assert_eq!(m.keys.len(), 1);
    assert_eq!(m.forgotten.get(&customer(2)), Some(&1));
    let (mut restored, _db2) = restore(&dir.path().join("b"), &m);
    assert_eq!(
        restored.open_sealed(&kept, b"1").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(restored.open_sealed(&gone, b"2").unwrap(), None, "erased");
    assert!(restored.is_forgotten(&customer(2)).unwrap());
    assert_eq!(
        restored.ratchet_state_for_tests(),
        original.ratchet_state_for_tests()
    );
    // The same inputs seal into the same bytes, new customers included.
    for c in [1, 2, 9] {
        let a = original.seal(&customer(c), b"nk", b"7", b"x").unwrap();
        let b = restored.seal(&customer(c), b"nk", b"7", b"x").unwrap();
        assert_eq!(a, b, "customer {c}");
    }
    assert_eq!(
        restored.pseudonymizer().tag("phone", b"1"),
        original.pseudonymizer().tag("phone", b"1")
    );
    // A restored vault reopens from its own, new KEK.
    drop(restored);
    drop(_db2);
    let (reopened, _db3) = common::open(&dir.path().join("b"));
    assert_eq!(reopened.open_sealed(&gone, b"2").unwrap(), None);
}

#[test]
fn a_half_published_forget_still_forgets() {
    let master = MasterKey::from_bytes([1; 32]);
    let mut topic = Topic::new();
    let key = EscrowEntry::Key {
        customer: customer(4),
        generation: 1,
        key: zeroize::Zeroizing::new([9; 32]),
    };
    publish(&mut topic, &master, &[key]);
    // The forgotten entry landed, the tombstone did not.
    let (k, v) = wrap_entry(
        &master,
        SHARD,
        &EscrowEntry::Forgotten {
            customer: customer(4),
            generation: 1,
        },
    )
    .unwrap();
    topic.insert(k, v);
    let m = material(&topic, &master).unwrap();
    assert!(m.keys.is_empty(), "the forget wins over the stale key");
}

#[test]
fn a_wrong_master_key_is_named_and_an_altered_entry_is_refused() {
    let master = MasterKey::from_bytes([1; 32]);
    let other = MasterKey::from_bytes([2; 32]);
    let entry = EscrowEntry::Pseudonym(zeroize::Zeroizing::new([5; 32]));
    let (key, value) = wrap_entry(&master, SHARD, &entry).unwrap();
    assert!(matches!(
        unwrap_entry(&master, SHARD, &key, &value).unwrap(),
        EscrowEntry::Pseudonym(k) if *k == [5; 32]
    ));

    let e = unwrap_entry(&other, SHARD, &key, &value).unwrap_err();
    assert!(matches!(e, VaultError::WrongMasterKey { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&master.id()) && text.contains(&other.id()),
        "{text}"
    );
    assert!(text.contains("--master-key-file"), "{text}");

    let mut tampered = value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = unwrap_entry(&master, SHARD, &key, &tampered).unwrap_err();
    assert!(matches!(e, VaultError::EscrowTampered(_)), "{e}");
    assert!(e.to_string().contains("3/pseudonym"), "{e}");

    // A value moved to another entry's key does not authenticate either.
    let e = unwrap_entry(&master, SHARD, b"3/ratchet", &value).unwrap_err();
    assert!(matches!(e, VaultError::EscrowTampered(_)), "{e}");
    // Nor to another shard.
    let e = unwrap_entry(&master, 4, b"4/pseudonym", &value).unwrap_err();
    assert!(matches!(e, VaultError::EscrowTampered(_)), "{e}");
    let e = unwrap_entry(&master, 4, &key, &value).unwrap_err();
    assert!(matches!(e, VaultError::EscrowCorrupt { .. }), "{e}");
    let e = unwrap_entry(&master, SHARD, &key, b"short").unwrap_err();
    assert!(matches!(e, VaultError::EscrowCorrupt { .. }), "{e}");
}

#[test]
fn restore_refuses_material_without_a_ratchet_or_pseudonym_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let tree = db.open_tree("vault").unwrap();
    let e = Vault::restore(&keys_dir(dir.path()), tree, &KeyMaterial::default()).unwrap_err();
    assert!(matches!(e, VaultError::EscrowIncomplete(_)), "{e}");
}

#[test]
fn the_master_key_file_is_private_and_64_hex_digits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let written = MasterKey::generate(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = MasterKey::load(&path).unwrap();
    assert_eq!(loaded.id(), written.id());
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert!(
        !format!("{loaded:?}").contains(secret.trim()),
        "Debug never prints the key"
    );
    assert!(MasterKey::generate(&path).is_err(), "never overwrites");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = MasterKey::load(&path).unwrap_err();
    assert!(matches!(e, VaultError::Permissions { .. }), "{e}");

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not hex\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = MasterKey::load(&bad).unwrap_err();
    assert!(e.to_string().contains("64 hex digits"), "{e}");
    let e = MasterKey::load(&dir.path().join("missing.key")).unwrap_err();
    assert!(e.to_string().contains("master-key new"), "{e}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
