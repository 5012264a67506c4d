//! The key-encryption key (KEK) file: `KEYS_DIR/kek`.
//!
//! A fixed-size file that is only ever rewritten in place (`write_all_at` at
//! a fixed offset, then `sync_all`), never replaced by a rename, so that an
//! overwritten KEK is gone from the file system's view of the file instead of
//! lingering in an unlinked inode. Layout (160 bytes):
//!
//! ```text
//! offset  size  field
//!      0    12  magic "TWINLOG-KEK\0"
//!     12     4  format, u32 big-endian = 1
//!     16    16  zero
//!     32    64  slot 0
//!     96    64  slot 1
//! slot:  id u32 BE (>= 1) | key 32 | check 16 | zero 12
//!        check = SHA-256("twinlog-kek-slot" || 0x00 || id || key)[..16]
//! ```
//!
//! A slot is *empty* (64 zero bytes), *valid* (check matches, id >= 1) or
//! *torn* (anything else: an interrupted write). One valid slot: that is the
//! current KEK. Two valid slots with ids `n` and `n + 1`: a rotation was
//! interrupted; `n` is current and `n + 1` pending. A rotation writes the new
//! KEK into the other slot (step 1), rewraps the tree (step 2), then zeroes the
//! old slot (step 3). Each step writes one slot only, so a torn write never
//! damages the KEK the tree is wrapped under.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{io, VaultError};

/// File name of the KEK file inside the keys dir.
pub const KEK_FILE_NAME: &str = "kek";
/// Mode of the KEK file.
pub const KEK_FILE_MODE: u32 = 0o600;
/// Mode of the keys dir.
pub const KEYS_DIR_MODE: u32 = 0o700;

const MAGIC: &[u8; 12] = b"TWINLOG-KEK\0";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 32;
const SLOT_LEN: usize = 64;
const FILE_LEN: usize = HEADER_LEN + 2 * SLOT_LEN;

/// One KEK: its id, its bytes and the physical slot it lives in.
pub(crate) struct Kek {
    pub(crate) id: u32,
    pub(crate) key: Zeroizing<[u8; 32]>,
    pub(crate) slot: usize,
}

/// What a slot of the file holds.
pub(crate) enum Slot {
    Empty,
    Valid(Kek),
    Torn,
}

/// The open KEK file.
pub(crate) struct KekFile {
    path: PathBuf,
    file: File,
}

fn slot_offset(slot: usize) -> u64 {
    (HEADER_LEN + slot * SLOT_LEN) as u64
}

fn check(id: u32, key: &[u8; 32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"twinlog-kek-slot\0");
    h.update(id.to_be_bytes());
    h.update(key);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

fn encode_slot(kek: Option<&Kek>) -> Zeroizing<[u8; SLOT_LEN]> {
    let mut buf = Zeroizing::new([0u8; SLOT_LEN]);
    if let Some(kek) = kek {
        buf[..4].copy_from_slice(&kek.id.to_be_bytes());
        buf[4..36].copy_from_slice(&kek.key[..]);
        buf[36..52].copy_from_slice(&check(kek.id, &kek.key));
    }
    buf
}

fn decode_slot(slot: usize, buf: &[u8]) -> Slot {
    if buf.iter().all(|b| *b == 0) {
        return Slot::Empty;
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&buf[..4]);
    let id = u32::from_be_bytes(id);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&buf[4..36]);
    if id == 0 || buf[36..52] != check(id, &key) || buf[52..].iter().any(|b| *b != 0) {
        return Slot::Torn;
    }
    Slot::Valid(Kek { id, key, slot })
}

fn check_mode(path: &Path, want: u32) -> Result<(), VaultError> {
    let meta = std::fs::metadata(path).map_err(io("stat", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Permissions {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

impl KekFile {
    /// Creates the keys dir (0700) if needed and a new KEK file (0600) holding
    /// `first` in its slot. Fails if the file exists.
    pub(crate) fn create(keys_dir: &Path, first: &Kek) -> Result<KekFile, VaultError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(KEYS_DIR_MODE)
            .create(keys_dir)
            .map_err(io("create dir", keys_dir))?;
        std::fs::set_permissions(keys_dir, std::fs::Permissions::from_mode(KEYS_DIR_MODE))
            .map_err(io("chmod", keys_dir))?;
        let path = keys_dir.join(KEK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(KEK_FILE_MODE)
            .open(&path)
            .map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    VaultError::AlreadyExists(path.clone())
                } else {
                    io("create", &path)(e)
                }
            })?;
        // The umask may have cleared bits we want, never added any; be explicit.
        file.set_permissions(std::fs::Permissions::from_mode(KEK_FILE_MODE))
            .map_err(io("chmod", &path))?;
        let mut buf = Zeroizing::new([0u8; FILE_LEN]);
        buf[..12].copy_from_slice(MAGIC);
        buf[12..16].copy_from_slice(&FORMAT.to_be_bytes());
        let off = slot_offset(first.slot) as usize;
        buf[off..off + SLOT_LEN].copy_from_slice(&encode_slot(Some(first))[..]);
        file.write_all_at(&buf[..], 0).map_err(io("write", &path))?;
        file.sync_all().map_err(io("fsync", &path))?;
        File::open(keys_dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", keys_dir))?;
        Ok(KekFile { path, file })
    }

    /// Opens the KEK file, checks modes and header, and returns both slots.
    pub(crate) fn open(keys_dir: &Path) -> Result<(KekFile, [Slot; 2]), VaultError> {
        let path = keys_dir.join(KEK_FILE_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(VaultError::KekMissing(path)),
            Err(e) => return Err(io("open", &path)(e)),
        };
        check_mode(keys_dir, KEYS_DIR_MODE)?;
        check_mode(&path, KEK_FILE_MODE)?;
        let corrupt = |reason| VaultError::KekCorrupt {
            path: path.clone(),
            reason,
        };
        let len = file.metadata().map_err(io("stat", &path))?.len();
        if len != FILE_LEN as u64 {
            return Err(corrupt("wrong size"));
        }
        let mut buf = Zeroizing::new([0u8; FILE_LEN]);
        file.read_exact_at(&mut buf[..], 0)
            .map_err(io("read", &path))?;
        if &buf[..12] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if buf[12..16] != FORMAT.to_be_bytes() {
            return Err(corrupt("unknown format"));
        }
        let s0 = decode_slot(0, &buf[HEADER_LEN..HEADER_LEN + SLOT_LEN]);
        let s1 = decode_slot(1, &buf[HEADER_LEN + SLOT_LEN..]);
        Ok((KekFile { path, file }, [s0, s1]))
    }

    /// Writes one slot in place (`None` zeroes it) and fsyncs.
    pub(crate) fn write_slot(&mut self, slot: usize, kek: Option<&Kek>) -> Result<(), VaultError> {
        let buf = encode_slot(kek);
        self.file
            .write_all_at(&buf[..], slot_offset(slot))
            .map_err(io("write", &self.path))?;
        self.file.sync_all().map_err(io("fsync", &self.path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
