//! Shared helpers: a vault in a temp dir laid out like a log's
//! (`ROOT/db` for sled, `ROOT/keys` for the KEK), reopening, and byte scans.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use twinlog_vault::{Tag, Vault};

pub fn db_dir(root: &Path) -> PathBuf {
    root.join("db")
}

pub fn keys_dir(root: &Path) -> PathBuf {
    root.join("keys")
}

/// Opens the sled db, waiting up to 5 s for the lock: a dropped `Db`
/// releases its file lock only when sled's background flusher thread has
/// let go of it, which may be a moment after the drop.
pub fn open_db(root: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(db_dir(root)).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open sled db: {e:?}"),
        }
    }
}

/// Creates a vault under `root`; returns it with its db.
pub fn create(root: &Path) -> (Vault, sled::Db) {
    let db = open_db(root);
    let tree = db.open_tree("vault").expect("open vault tree");
    let vault = Vault::create(&keys_dir(root), tree).expect("create vault");
    (vault, db)
}

/// Opens the vault under `root`; returns it with its db.
pub fn open(root: &Path) -> (Vault, sled::Db) {
    let db = open_db(root);
    let tree = db.open_tree("vault").expect("open vault tree");
    let vault = Vault::open(&keys_dir(root), tree).expect("open vault");
    (vault, db)
}

pub fn customer(n: u8) -> Tag {
    let mut t = [0u8; 16];
    t[0] = 0xC0;
    t[15] = n;
    t
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("dir entry");
            let ty = entry.file_type().expect("file type");
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// The files under `dir` that contain `needle` anywhere in their bytes.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    assert!(!needle.is_empty());
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).expect("read file");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// Copies a directory tree byte for byte, keeping file modes.
pub fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("create copy dir");
    let mode = std::fs::metadata(from).expect("stat").permissions().mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("chmod");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // fs::copy keeps the permission bits.
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
