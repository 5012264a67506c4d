//! Sealing: round trips, tamper detection, key separation, the ratchet, and
//! the exact formulas (pinned against an independent computation).

mod common;

use std::collections::HashSet;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Key, Nonce};
use common::customer;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use twinlog_vault::{Pseudonymizer, Vault, VaultError, CUSTOMER_KEY_CACHE_LIMIT};

fn temp_vault() -> (tempfile::TempDir, Vault, sled::Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, db) = common::create(dir.path());
    (dir, vault, db)
}

#[test]
fn round_trip_warm_and_cold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut vault, db) = common::create(dir.path());
    let a = customer(1);
    let s1 = vault
        .seal(&a, b"wamid.1", &1u64.to_be_bytes(), b"hello")
        .unwrap();
    let s2 = vault
        .seal(&a, b"wamid.2", &2u64.to_be_bytes(), b"")
        .unwrap();
    assert_eq!(s1.key_id.len(), 20);
    assert_eq!(&s1.key_id[..16], &a);
    assert_eq!(&s1.key_id[16..], &1u32.to_be_bytes());
    assert_eq!(s1.nonce.len(), 12);
    assert_eq!(
        vault
            .open_sealed(&s1, &1u64.to_be_bytes())
            .unwrap()
            .unwrap(),
        b"hello"
    );
    assert_eq!(
        vault
            .open_sealed(&s2, &2u64.to_be_bytes())
            .unwrap()
            .unwrap(),
        b""
    );
    db.flush().unwrap();
    drop(vault);
    drop(db);
    // Cold: reopened, nothing cached.
    let (vault, _db) = common::open(dir.path());
    assert_eq!(
        vault
            .open_sealed(&s1, &1u64.to_be_bytes())
            .unwrap()
            .unwrap(),
        b"hello"
    );
}

#[test]
fn tampering_fails() {
    let (_dir, mut vault, _db) = temp_vault();
    let a = customer(1);
    let b = customer(2);
    let aad = 7u64.to_be_bytes();
    let sealed = vault.seal(&a, b"nk", &aad, b"personal content").unwrap();
    vault.seal(&b, b"nk", &aad, b"other").unwrap();

    let mut ct = sealed.clone();
    ct.ciphertext[3] ^= 1;
    assert!(matches!(
        vault.open_sealed(&ct, &aad),
        Err(VaultError::Tampered)
    ));
    let mut ct = sealed.clone();
    let last = ct.ciphertext.len() - 1;
    ct.ciphertext[last] ^= 0x80;
    assert!(matches!(
        vault.open_sealed(&ct, &aad),
        Err(VaultError::Tampered)
    ));
    let mut ct = sealed.clone();
    ct.ciphertext.pop();
    assert!(matches!(
        vault.open_sealed(&ct, &aad),
        Err(VaultError::Tampered)
    ));

    assert!(matches!(
        vault.open_sealed(&sealed, &8u64.to_be_bytes()),
        Err(VaultError::Tampered)
    ));
    assert!(matches!(
        vault.open_sealed(&sealed, b""),
        Err(VaultError::Tampered)
    ));

    let mut n = sealed.clone();
    n.nonce[0] ^= 1;
    assert!(matches!(
        vault.open_sealed(&n, &aad),
        Err(VaultError::Tampered)
    ));
    let mut n = sealed.clone();
    n.nonce.push(0);
    assert!(matches!(
        vault.open_sealed(&n, &aad),
        Err(VaultError::MalformedSealed(_))
    ));

    // Another customer's key id: a different key, so authentication fails.
    let mut k = sealed.clone();
    k.key_id[..16].copy_from_slice(&b);
    assert!(matches!(
        vault.open_sealed(&k, &aad),
        Err(VaultError::Tampered)
    ));
    // A generation never issued.
    let mut k = sealed.clone();
    k.key_id[16..].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        vault.open_sealed(&k, &aad),
        Err(VaultError::UnknownKey { .. })
    ));
    let mut k = sealed.clone();
    k.key_id[16..].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        vault.open_sealed(&k, &aad),
        Err(VaultError::MalformedSealed(_))
    ));
    let mut k = sealed.clone();
    k.key_id.truncate(16);
    assert!(matches!(
        vault.open_sealed(&k, &aad),
        Err(VaultError::MalformedSealed(_))
    ));
    // A customer this vault never saw.
    let mut k = sealed.clone();
    k.key_id[..16].copy_from_slice(&customer(99));
    assert!(matches!(
        vault.open_sealed(&k, &aad),
        Err(VaultError::UnknownKey { .. })
    ));

    assert_eq!(
        vault.open_sealed(&sealed, &aad).unwrap().unwrap(),
        b"personal content"
    );
}

#[test]
fn customers_get_different_keys() {
    let (_dir, mut vault, _db) = temp_vault();
    let (a, b) = (customer(1), customer(2));
    let sa = vault.seal(&a, b"same", b"", b"same plaintext").unwrap();
    let sb = vault.seal(&b, b"same", b"", b"same plaintext").unwrap();
    assert_eq!(sa.nonce, sb.nonce, "nonce depends on the natural key only");
    assert_ne!(sa.ciphertext, sb.ciphertext);
    let (ga, ka) = vault.customer_key_for_tests(&a).unwrap().unwrap();
    let (gb, kb) = vault.customer_key_for_tests(&b).unwrap().unwrap();
    assert_eq!((ga, gb), (1, 1));
    assert_ne!(ka, kb);
    // A second seal for `a` re-uses its key.
    let sa2 = vault.seal(&a, b"same", b"", b"same plaintext").unwrap();
    assert_eq!(sa, sa2);
    assert_eq!(vault.customer_key_for_tests(&a).unwrap().unwrap().1, ka);
}

#[test]
fn ratchet_never_repeats() {
    let (_dir, mut vault, _db) = temp_vault();
    let mut seen = HashSet::new();
    let (i0, s0) = vault.ratchet_state_for_tests();
    assert_eq!(i0, 0);
    assert!(seen.insert(s0));
    for n in 0..600u32 {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&n.to_be_bytes());
        vault.seal(&c, b"nk", b"", b"x").unwrap();
        let (_, key) = vault.customer_key_for_tests(&c).unwrap().unwrap();
        let (idx, state) = vault.ratchet_state_for_tests();
        assert_eq!(idx, u64::from(n) + 1);
        assert!(seen.insert(key), "customer key repeated");
        assert!(seen.insert(state), "ratchet state repeated");
    }
    // Forgetting and re-keying also takes a fresh step.
    let c = [0u8; 16];
    vault.forget(&c).unwrap();
    vault.seal(&c, b"nk", b"", b"x").unwrap();
    let (g, key) = vault.customer_key_for_tests(&c).unwrap().unwrap();
    assert_eq!(g, 2);
    assert!(seen.insert(key));
}

#[test]
fn key_cache_is_bounded_and_evicts_correctly() {
    let (_dir, mut vault, _db) = temp_vault();
    let n = CUSTOMER_KEY_CACHE_LIMIT as u32 + 50;
    let mut sealed = Vec::new();
    for i in 0..n {
        let mut c = [1u8; 16];
        c[12..].copy_from_slice(&i.to_be_bytes());
        sealed.push(
            vault
                .seal(&c, &i.to_be_bytes(), b"", &i.to_le_bytes())
                .unwrap(),
        );
    }
    // The earliest were evicted: they come back from the tree.
    for (i, s) in sealed.iter().enumerate().step_by(97) {
        let plain = vault.open_sealed(s, b"").unwrap().unwrap();
        assert_eq!(plain, (i as u32).to_le_bytes());
    }
    // Sealing again for an evicted customer gives the same bytes.
    let mut c = [1u8; 16];
    c[12..].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        vault
            .seal(&c, &0u32.to_be_bytes(), b"", &0u32.to_le_bytes())
            .unwrap(),
        sealed[0]
    );
}

#[test]
fn tags_are_keyed_hmacs_with_domain_separation() {
    let key = [7u8; 32];
    let p = Pseudonymizer::new(key);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(b"phone\x00+15551234567");
    let want = mac.finalize().into_bytes();
    assert_eq!(p.tag("phone", b"+15551234567"), want[..16]);
    assert_ne!(p.tag("phone", b"1"), p.tag("bsuid", b"1"));
    assert_ne!(p.tag("ab", b"c"), p.tag("a", b"bc"));
    assert_ne!(
        p.tag("phone", b"1"),
        Pseudonymizer::new([8u8; 32]).tag("phone", b"1")
    );
    assert_eq!(p.clone().tag("wamid", b"w"), p.tag("wamid", b"w"));
}

/// Pins the derivations documented in the crate docs against an independent
/// computation from the seed: pseudonym key, S0, customer key, S1, nonce and
/// ciphertext. A change here breaks determinism across versions.
#[test]
fn formulas_are_as_documented() {
    let seed = [42u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let db = common::open_db(dir.path());
    let mut vault = Vault::create_from_seed(
        &common::keys_dir(dir.path()),
        db.open_tree("vault").unwrap(),
        &seed,
    )
    .unwrap();

    let hkdf = |salt: Option<&[u8]>, ikm: &[u8], info: &[u8]| {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(salt, ikm)
            .expand(info, &mut out)
            .unwrap();
        out
    };
    let pk = hkdf(Some(b"twinlog-vault-seed"), &seed, b"pseudonym-key");
    let s0 = hkdf(Some(b"twinlog-vault-seed"), &seed, b"ratchet-0");
    let k0 = hkdf(None, &s0, b"customer-key");
    let s1 = hkdf(None, &s0, b"ratchet-next");

    assert_eq!(vault.ratchet_state_for_tests(), (0, s0));
    assert_eq!(
        vault.pseudonymizer().tag("phone", b"1"),
        Pseudonymizer::new(pk).tag("phone", b"1")
    );

    let a = customer(1);
    let sealed = vault
        .seal(&a, b"wamid.X", &5u64.to_be_bytes(), b"body")
        .unwrap();
    assert_eq!(vault.customer_key_for_tests(&a).unwrap().unwrap(), (1, k0));
    assert_eq!(vault.ratchet_state_for_tests(), (1, s1));

    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&pk).unwrap();
    mac.update(b"nonce\x00wamid.X");
    let nonce = mac.finalize().into_bytes();
    assert_eq!(sealed.nonce, nonce[..12]);
    let ct = Aes256GcmSiv::new(Key::<Aes256GcmSiv>::from_slice(&k0))
        .encrypt(
            Nonce::from_slice(&nonce[..12]),
            Payload {
                msg: b"body",
                aad: &5u64.to_be_bytes(),
            },
        )
        .unwrap();
    assert_eq!(sealed.ciphertext, ct);
}
