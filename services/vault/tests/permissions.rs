//! The keys dir is 0700 and the kek file 0600; open refuses looser modes.
//! Also the create/open preconditions.

mod common;

use std::os::unix::fs::PermissionsExt;

use twinlog_vault::{Vault, VaultError};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn kek_and_dir_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _db) = common::create(dir.path());
    let keys = common::keys_dir(dir.path());
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("kek")), 0o600);
    assert_eq!(std::fs::metadata(keys.join("kek")).unwrap().len(), 160);
    drop(vault);
}

#[test]
fn an_existing_loose_dir_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::keys_dir(dir.path());
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_vault, _db) = common::create(dir.path());
    assert_eq!(mode(&keys), 0o700);
}

#[test]
fn open_refuses_loose_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, db) = common::create(dir.path());
    drop(vault);
    let keys = common::keys_dir(dir.path());
    let kek = keys.join("kek");
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open(&keys, db.open_tree("vault").unwrap()).unwrap_err();
    assert!(
        matches!(err, VaultError::Permissions { mode: 0o644, .. }),
        "{err}"
    );
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o750)).unwrap();
    let err = Vault::open(&keys, db.open_tree("vault").unwrap()).unwrap_err();
    assert!(
        matches!(err, VaultError::Permissions { mode: 0o750, .. }),
        "{err}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    Vault::open(&keys, db.open_tree("vault").unwrap()).unwrap();
}

#[test]
fn create_and_open_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::keys_dir(dir.path());
    let db = common::open_db(dir.path());
    assert!(matches!(
        Vault::open(&keys, db.open_tree("vault").unwrap()),
        Err(VaultError::KekMissing(_))
    ));
    let vault = Vault::create(&keys, db.open_tree("vault").unwrap()).unwrap();
    drop(vault);
    // Creating again, over the same tree or a fresh one, is refused.
    assert!(matches!(
        Vault::create(&keys, db.open_tree("vault").unwrap()),
        Err(VaultError::TreeNotEmpty)
    ));
    let err = Vault::create(&keys, db.open_tree("other").unwrap()).unwrap_err();
    assert!(matches!(err, VaultError::AlreadyExists(_)), "{err}");
    // Opening with a tree that holds no vault is refused.
    let err = Vault::open(&keys, db.open_tree("empty").unwrap()).unwrap_err();
    assert!(matches!(err, VaultError::Format { .. }), "{err}");
    assert!(err.to_string().starts_with("vault tree"), "{err}");
}
