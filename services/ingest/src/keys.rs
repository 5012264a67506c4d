//! The day keys: one AES-256 key per UTC day of receipt, in the key file
//! `DIR/raw-keys`, outside sled, so that destroying a key is final.
//!
//! # File format (version 1)
//!
//! ```text
//! offset      size  field
//!      0         8  magic "TWLGIK01"
//!      8         4  count n, u32 big-endian
//!     12    36 * n  n entries, days ascending: day u32 BE | key 32
//! 12+36n        32  SHA-256 of every byte before it
//! ```
//!
//! `day` is the UTC day of receipt: `receive_time_ms / 86_400_000`.
//!
//! # Writes
//!
//! Every change rewrites the whole file: write `raw-keys.tmp` (mode 0600),
//! fsync it, hard-link the current file to `raw-keys.old`, rename the
//! temporary file over `raw-keys`, fsync the directory, then overwrite
//! `raw-keys.old` with zeros, fsync and unlink it. A crash leaves either the
//! old or the new file in place, never a torn one; opening shreds a
//! leftover `raw-keys.old`. The zeroing makes a destroyed key gone from the
//! file's old blocks too on file systems that overwrite in place; on
//! copy-on-write file systems and flash, only the file system's view is
//! guaranteed, as for any file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::IngestError;

/// File name of the key file inside the ingestor's directory.
pub const KEY_FILE_NAME: &str = "raw-keys";
/// Mode of the key file.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Most day keys the file holds: far more than any retention needs (a key
/// lives for its day plus the retention).
pub const DAY_KEYS_MAX: usize = 4096;
/// Bytes of one day key (AES-256).
pub const DAY_KEY_BYTES: usize = 32;

const TMP_FILE_NAME: &str = "raw-keys.tmp";
const OLD_FILE_NAME: &str = "raw-keys.old";
const MAGIC: &[u8; 8] = b"TWLGIK01";
const HEADER_BYTES: usize = 12;
const ENTRY_BYTES: usize = 4 + DAY_KEY_BYTES;
const CHECKSUM_BYTES: usize = 32;

pub(crate) type DayKey = Zeroizing<[u8; DAY_KEY_BYTES]>;

/// The day keys in memory, mirrored by the key file.
pub(crate) struct DayKeys {
    dir: PathBuf,
    keys: BTreeMap<u32, DayKey>,
}

impl DayKeys {
    /// Reads the key file in `dir`, or starts with none if there is no file.
    pub(crate) fn open(dir: &Path) -> Result<DayKeys, IngestError> {
        let path = dir.join(KEY_FILE_NAME);
        let old = dir.join(OLD_FILE_NAME);
        if old.exists() {
            shred(&old)?;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(DayKeys {
                    dir: dir.to_path_buf(),
                    keys: BTreeMap::new(),
                })
            }
            Err(source) => {
                return Err(IngestError::KeyFile {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let keys = parse(&bytes).map_err(|detail| IngestError::KeyFileCorrupt {
            path: path.clone(),
            detail,
        })?;
        Ok(DayKeys {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// The key of `day`, if it exists.
    pub(crate) fn get(&self, day: u32) -> Option<&DayKey> {
        self.keys.get(&day)
    }

    /// The key of `day`, creating it (durably, before it returns) if needed.
    pub(crate) fn get_or_create(&mut self, day: u32) -> Result<DayKey, IngestError> {
        if let Some(key) = self.keys.get(&day) {
            return Ok(key.clone());
        }
        if self.keys.len() >= DAY_KEYS_MAX {
            return Err(IngestError::TooManyDayKeys {
                limit: DAY_KEYS_MAX,
            });
        }
        let mut key: DayKey = Zeroizing::new([0u8; DAY_KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let mut next = self.keys.clone();
        next.insert(day, key.clone());
        self.write(&next)?;
        self.keys = next;
        Ok(key)
    }

    /// Destroys, durably, every key of a day up to and including
    /// `day_last`. Returns the days destroyed.
    pub(crate) fn destroy_through(&mut self, day_last: u32) -> Result<Vec<u32>, IngestError> {
        let doomed: Vec<u32> = self.keys.range(..=day_last).map(|(d, _)| *d).collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let mut next = self.keys.clone();
        for day in &doomed {
            next.remove(day);
        }
        self.write(&next)?;
        self.keys = next;
        Ok(doomed)
    }

    fn write(&self, keys: &BTreeMap<u32, DayKey>) -> Result<(), IngestError> {
        let path = self.dir.join(KEY_FILE_NAME);
        let tmp = self.dir.join(TMP_FILE_NAME);
        let old = self.dir.join(OLD_FILE_NAME);
        let bytes = encode(keys)?;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| IngestError::KeyFile {
                action,
                path,
                source,
            }
        };
        // A stale temporary file from a crash holds keys too: shred it.
        if tmp.exists() {
            shred(&tmp)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(&bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        let had_old = match std::fs::hard_link(&path, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(io("link the previous copy of", &path)(e)),
        };
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync the directory of", &path))?;
        if had_old {
            shred(&old)?;
        }
        Ok(())
    }
}

/// Overwrites a file with zeros, fsyncs it and removes it.
fn shred(path: &Path) -> Result<(), IngestError> {
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| IngestError::KeyFile {
            action,
            path,
            source,
        }
    };
    let len = std::fs::metadata(path)
        .map_err(io("stat"))
        .map(|m| m.len())?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open to shred"))?;
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
        if n == 0 {
            break;
        }
        file.write_all(&zeros[..n]).map_err(io("shred"))?;
        left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
    }
    file.sync_all().map_err(io("fsync the shredded"))?;
    drop(file);
    std::fs::remove_file(path).map_err(io("remove the shredded"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync the directory of"))?;
    }
    Ok(())
}

fn encode(keys: &BTreeMap<u32, DayKey>) -> Result<Zeroizing<Vec<u8>>, IngestError> {
    let count = u32::try_from(keys.len()).map_err(|_| IngestError::TooManyDayKeys {
        limit: DAY_KEYS_MAX,
    })?;
    let mut out = Zeroizing::new(Vec::with_capacity(
        HEADER_BYTES + ENTRY_BYTES * keys.len() + CHECKSUM_BYTES,
    ));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&count.to_be_bytes());
    for (day, key) in keys {
        out.extend_from_slice(&day.to_be_bytes());
        out.extend_from_slice(key.as_ref());
    }
    let sum = Sha256::digest(&out[..]);
    out.extend_from_slice(&sum);
    Ok(out)
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<u32, DayKey>, String> {
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".to_owned());
    }
    if &body[..8] != MAGIC {
        return Err("not a twinlog ingest key file (bad magic)".to_owned());
    }
    let count = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
    let count = usize::try_from(count).map_err(|_| "count overflows".to_owned())?;
    if count > DAY_KEYS_MAX {
        return Err(format!("{count} keys, above the limit of {DAY_KEYS_MAX}"));
    }
    let entries = &body[HEADER_BYTES..];
    if entries.len() != count * ENTRY_BYTES {
        return Err(format!(
            "{} entry bytes for {count} keys of {ENTRY_BYTES} bytes",
            entries.len()
        ));
    }
    let mut keys = BTreeMap::new();
    for entry in entries.chunks_exact(ENTRY_BYTES) {
        let day = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let mut key: DayKey = Zeroizing::new([0u8; DAY_KEY_BYTES]);
        key.copy_from_slice(&entry[4..]);
        if keys.insert(day, key).is_some() {
            return Err(format!("day {day} appears twice"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reopen_and_destroyed_keys_are_gone_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = DayKeys::open(dir.path()).expect("open");
        let k1 = keys.get_or_create(100).expect("create 100");
        let k2 = keys.get_or_create(101).expect("create 101");
        assert_eq!(*keys.get_or_create(100).expect("again"), *k1);
        let reopened = DayKeys::open(dir.path()).expect("reopen");
        assert_eq!(reopened.get(100).map(|k| **k), Some(*k1));
        assert_eq!(reopened.get(101).map(|k| **k), Some(*k2));

        let mut keys = reopened;
        assert_eq!(keys.destroy_through(100).expect("destroy"), vec![100]);
        let file = std::fs::read(dir.path().join(KEY_FILE_NAME)).expect("read");
        assert!(!file.windows(DAY_KEY_BYTES).any(|w| w == &k1[..]));
        assert!(file.windows(DAY_KEY_BYTES).any(|w| w == &k2[..]));
        assert!(!dir.path().join(OLD_FILE_NAME).exists());
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
        let reopened = DayKeys::open(dir.path()).expect("reopen");
        assert!(reopened.get(100).is_none());
        assert!(reopened.get(101).is_some());
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = DayKeys::open(dir.path()).expect("open");
        keys.get_or_create(7).expect("create");
        let path = dir.path().join(KEY_FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            DayKeys::open(dir.path()),
            Err(IngestError::KeyFileCorrupt { .. })
        ));
    }

    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = DayKeys::open(dir.path()).expect("open");
        keys.get_or_create(1).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE_NAME))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, KEY_FILE_MODE);
    }
}
