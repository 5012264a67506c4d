//! The raw-body store: every authentic webhook body, encrypted under the
//! key of its UTC day of receipt, with its receive time, its SHA-256 and a
//! sequence id; and the dead letters. sled 0.34 in `DIR/raw.sled/`.
//!
//! # On-disk layout (format 1)
//!
//! Numbers are big-endian, so key order is (day, seq) order. A body id is
//! day `u32` ‖ seq `u64` (12 bytes); `seq` comes from sled's
//! `generate_id`, unique for the life of the store.
//!
//! | tree | key | value |
//! |---|---|---|
//! | default | `twinlog/ingest/format` | `u32` `1` |
//! | `twinlog/ingest/heads` | body id | the head (below) |
//! | `twinlog/ingest/chunks` | body id ‖ chunk index `u32` | ciphertext bytes `i * 4096 ..`, at most [`CHUNK_BYTES_MAX`] |
//! | `twinlog/ingest/dead` | body id | a dead letter (below) |
//!
//! Head, version 1: version `u8` = 1 ‖ receive time ms `i64` ‖ SHA-256 of
//! the plaintext body (32) ‖ nonce (12) ‖ ciphertext length `u32` ‖ chunk
//! count `u32`. The ciphertext is AES-256-GCM-SIV of the body under the day
//! key, with the associated data `"twinlog-ingest/raw/1"` ‖ body id ‖
//! receive time ‖ SHA-256, so a head cannot be moved onto another body.
//!
//! Dead letter, version 1: version `u8` = 1 ‖ state `u8` (0 pending, 1
//! done) ‖ nonce (12) ‖ AES-256-GCM-SIV of the error text (at most
//! [`DEAD_LETTER_ERROR_BYTES_MAX`] bytes) under the same day key, with the
//! associated data `"twinlog-ingest/dead/1"` ‖ body id. The error text can
//! quote a few bytes of the body, so it is encrypted like the body.
//!
//! Every sled value stays under 4.5 KiB, so sled never moves a node to its
//! `blobs/` directory, which it does not fsync. The chunks of a body are
//! written before its head; a crash in between leaves chunks without a head,
//! which nothing reads and the purge of their day removes.
//!
//! **Invariant:** no body and no error text is in sled in the clear.
//!
//! **Invariant:** a body whose day key is destroyed is unreadable, wherever
//! its ciphertext survives (sled keeps old values in its files until it
//! compacts them).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::IngestError;
use crate::keys::{DayKey, DayKeys};

/// Directory of the sled database inside the ingestor's directory.
pub const STORE_DIR_NAME: &str = "raw.sled";
/// Size of a ciphertext chunk (the last one may be shorter).
pub const CHUNK_BYTES_MAX: usize = 4096;
/// Most bytes of a dead letter's error text; longer texts are cut.
pub const DEAD_LETTER_ERROR_BYTES_MAX: usize = 1024;
/// Most keys one purge batch removes.
pub const PURGE_BATCH_KEYS_MAX: usize = 1024;
/// sled's page cache.
pub const CACHE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

const FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"twinlog/ingest/format";
const HEADS_TREE: &str = "twinlog/ingest/heads";
const CHUNKS_TREE: &str = "twinlog/ingest/chunks";
const DEAD_TREE: &str = "twinlog/ingest/dead";
const HEAD_VERSION: u8 = 1;
const HEAD_BYTES: usize = 1 + 8 + 32 + 12 + 4 + 4;
const DEAD_VERSION: u8 = 1;
const DEAD_PENDING: u8 = 0;
const DEAD_DONE: u8 = 1;
const ID_BYTES: usize = 12;
const NONCE_BYTES: usize = 12;
const RAW_AAD_DOMAIN: &[u8] = b"twinlog-ingest/raw/1";
const DEAD_AAD_DOMAIN: &[u8] = b"twinlog-ingest/dead/1";

/// The UTC day of a time in unix milliseconds (0 before 1970).
pub fn day_of(time_ms: i64) -> u32 {
    u32::try_from(time_ms.max(0).div_euclid(DAY_MS)).unwrap_or(u32::MAX)
}

/// Where a body is: its UTC day of receipt and its sequence id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BodyId {
    pub day: u32,
    pub seq: u64,
}

impl BodyId {
    fn to_key(self) -> [u8; ID_BYTES] {
        let mut key = [0u8; ID_BYTES];
        key[..4].copy_from_slice(&self.day.to_be_bytes());
        key[4..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }

    fn from_key(key: &[u8]) -> Option<BodyId> {
        let day = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
        let seq = u64::from_be_bytes(key.get(4..ID_BYTES)?.try_into().ok()?);
        (key.len() == ID_BYTES).then_some(BodyId { day, seq })
    }
}

/// A stored body, as [`crate::Ingestor::bodies`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBody {
    pub seq: u64,
    /// When it was received, unix ms (wall clock).
    pub receive_time_ms: i64,
    /// SHA-256 of the body as received.
    pub sha256: [u8; 32],
    /// The body, or `None` when its day key is destroyed: unreadable forever.
    pub body: Option<Vec<u8>>,
}

/// What a purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// The UTC days whose keys were destroyed.
    pub days_destroyed: Vec<u32>,
    /// Bodies removed from sled.
    pub bodies_removed: u64,
    /// Dead letters removed from sled (their bodies count in `bodies_removed`).
    pub dead_letters_removed: u64,
}

struct Head {
    receive_time_ms: i64,
    sha256: [u8; 32],
    nonce: [u8; NONCE_BYTES],
    ciphertext_bytes: usize,
    chunks: u32,
}

pub(crate) enum BodyRead {
    Missing,
    KeyDestroyed(StoredBody),
    Found(StoredBody),
}

pub(crate) struct RawStore {
    db: sled::Db,
    heads: sled::Tree,
    chunks: sled::Tree,
    dead: sled::Tree,
    keys: Mutex<DayKeys>,
    /// Writes that finished, numbered from 1: a write's ticket.
    written: AtomicU64,
    /// Every write whose ticket is at most this is flushed.
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    flushes: AtomicU64,
}

impl RawStore {
    pub(crate) fn open(dir: &Path) -> Result<RawStore, IngestError> {
        let path = dir.join(STORE_DIR_NAME);
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES_MAX)
            .open()
            .map_err(|source| IngestError::OpenStore {
                path: path.clone(),
                source,
            })?;
        let store_err = |action| move |source| IngestError::Store { action, source };
        match db.get(FORMAT_KEY).map_err(store_err("read the format"))? {
            None => {
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())
                    .map_err(store_err("write the format"))?;
                db.flush().map_err(store_err("flush the format"))?;
            }
            Some(v) if v.as_ref() == FORMAT.to_be_bytes() => {}
            Some(v) => {
                return Err(IngestError::UnknownFormat {
                    path,
                    found: hex::encode(v),
                    expected: FORMAT,
                })
            }
        }
        let heads = db
            .open_tree(HEADS_TREE)
            .map_err(store_err("open the heads tree"))?;
        let chunks = db
            .open_tree(CHUNKS_TREE)
            .map_err(store_err("open the chunks tree"))?;
        let dead = db
            .open_tree(DEAD_TREE)
            .map_err(store_err("open the dead-letter tree"))?;
        let keys = DayKeys::open(dir)?;
        Ok(RawStore {
            db,
            heads,
            chunks,
            dead,
            keys: Mutex::new(keys),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flushes: AtomicU64::new(0),
        })
    }

    fn keys(&self) -> MutexGuard<'_, DayKeys> {
        // A panic while holding the lock leaves the map consistent: every
        // change is made on a copy and swapped in after the file is written.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn day_key(&self, day: u32) -> Option<DayKey> {
        self.keys().get(day).cloned()
    }

    /// sled flushes made so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Encrypts and writes a body (not yet flushed: see [`RawStore::commit`]).
    /// Returns its id and its write ticket.
    pub(crate) fn put_body(
        &self,
        body: &[u8],
        receive_time_ms: i64,
    ) -> Result<(BodyId, u64), IngestError> {
        let day = day_of(receive_time_ms);
        let key = self.keys().get_or_create(day)?;
        let seq = self.db.generate_id().map_err(|source| IngestError::Store {
            action: "generate a body id",
            source,
        })?;
        let id = BodyId { day, seq };
        let sha256: [u8; 32] = Sha256::digest(body).into();
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = raw_aad(id, receive_time_ms, &sha256);
        let ciphertext = cipher(&key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| IngestError::Encrypt { seq })?;
        let chunk_count =
            u32::try_from(ciphertext.len().div_ceil(CHUNK_BYTES_MAX)).map_err(|_| {
                IngestError::CorruptBody {
                    seq,
                    detail: "too many chunks".to_owned(),
                }
            })?;
        let ciphertext_bytes =
            u32::try_from(ciphertext.len()).map_err(|_| IngestError::CorruptBody {
                seq,
                detail: "ciphertext too large".to_owned(),
            })?;
        let mut batch = sled::Batch::default();
        for (index, chunk) in (0u32..).zip(ciphertext.chunks(CHUNK_BYTES_MAX)) {
            batch.insert(&chunk_key(id, index)[..], chunk);
        }
        self.chunks
            .apply_batch(batch)
            .map_err(|source| IngestError::Store {
                action: "write a body's chunks",
                source,
            })?;
        let mut head = Vec::with_capacity(HEAD_BYTES);
        head.push(HEAD_VERSION);
        head.extend_from_slice(&receive_time_ms.to_be_bytes());
        head.extend_from_slice(&sha256);
        head.extend_from_slice(&nonce);
        head.extend_from_slice(&ciphertext_bytes.to_be_bytes());
        head.extend_from_slice(&chunk_count.to_be_bytes());
        self.heads
            .insert(id.to_key(), head)
            .map_err(|source| IngestError::Store {
                action: "write a body's head",
                source,
            })?;
        Ok((id, self.ticket()))
    }

    /// Writes (or rewrites) the dead letter of a stored body. Returns its
    /// write ticket, or `None` if the body's day key is already destroyed
    /// (the body is past its retention: nothing to keep).
    pub(crate) fn put_dead_letter(
        &self,
        id: BodyId,
        error: &str,
        done: bool,
    ) -> Result<Option<u64>, IngestError> {
        let Some(key) = self.day_key(id.day) else {
            return Ok(None);
        };
        let text = cut(error, DEAD_LETTER_ERROR_BYTES_MAX);
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = dead_aad(id);
        let ciphertext = cipher(&key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: text.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| IngestError::Encrypt { seq: id.seq })?;
        let mut value = Vec::with_capacity(2 + NONCE_BYTES + ciphertext.len());
        value.push(DEAD_VERSION);
        value.push(if done { DEAD_DONE } else { DEAD_PENDING });
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&ciphertext);
        self.dead
            .insert(id.to_key(), value)
            .map_err(|source| IngestError::Store {
                action: "write a dead letter",
                source,
            })?;
        Ok(Some(self.ticket()))
    }

    /// Up to `max` pending dead letters after `after` (exclusive), in id order.
    pub(crate) fn pending_dead_letters(
        &self,
        after: Option<BodyId>,
        max: usize,
    ) -> Result<Vec<BodyId>, IngestError> {
        let mut out = Vec::new();
        let range = match after {
            Some(id) => {
                let mut start = id.to_key().to_vec();
                start.push(0);
                self.dead.range(start..)
            }
            None => self.dead.range::<&[u8], _>(..),
        };
        for item in range {
            let (key, value) = item.map_err(|source| IngestError::Store {
                action: "scan the dead letters",
                source,
            })?;
            let Some(id) = BodyId::from_key(&key) else {
                continue;
            };
            if value.get(1) == Some(&DEAD_PENDING) {
                out.push(id);
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The error text of a dead letter and whether it is pending, if it
    /// exists and its day key does.
    pub(crate) fn dead_letter(&self, id: BodyId) -> Result<Option<(String, bool)>, IngestError> {
        let Some(value) = self
            .dead
            .get(id.to_key())
            .map_err(|source| IngestError::Store {
                action: "read a dead letter",
                source,
            })?
        else {
            return Ok(None);
        };
        let Some(key) = self.day_key(id.day) else {
            return Ok(None);
        };
        let corrupt = |detail: &str| IngestError::CorruptBody {
            seq: id.seq,
            detail: format!("dead letter: {detail}"),
        };
        if value.len() < 2 + NONCE_BYTES || value[0] != DEAD_VERSION {
            return Err(corrupt("bad length or version"));
        }
        let pending = value[1] == DEAD_PENDING;
        let nonce = &value[2..2 + NONCE_BYTES];
        let aad = dead_aad(id);
        let text = cipher(&key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &value[2 + NONCE_BYTES..],
                    aad: &aad,
                },
            )
            .map_err(|_| IngestError::Decrypt { seq: id.seq })?;
        Ok(Some((String::from_utf8_lossy(&text).into_owned(), pending)))
    }

    /// Marks a pending dead letter done (its events are published).
    /// Returns its write ticket, or `None` if it no longer exists.
    pub(crate) fn mark_dead_letter_done(&self, id: BodyId) -> Result<Option<u64>, IngestError> {
        let store_err = |action| move |source| IngestError::Store { action, source };
        let Some(value) = self
            .dead
            .get(id.to_key())
            .map_err(store_err("read a dead letter"))?
        else {
            return Ok(None);
        };
        if value.len() < 2 || value[0] != DEAD_VERSION {
            return Err(IngestError::CorruptBody {
                seq: id.seq,
                detail: "dead letter: bad length or version".to_owned(),
            });
        }
        let mut value = value.to_vec();
        value[1] = DEAD_DONE;
        self.dead
            .insert(id.to_key(), value)
            .map_err(store_err("mark a dead letter done"))?;
        Ok(Some(self.ticket()))
    }

    /// The oldest dead letters, up to `max`, except those whose day key is
    /// destroyed.
    pub(crate) fn dead_letters(&self, max: usize) -> Result<Vec<crate::DeadLetter>, IngestError> {
        let mut out = Vec::new();
        for item in self.dead.iter().keys() {
            if out.len() >= max {
                break;
            }
            let key = item.map_err(|source| IngestError::Store {
                action: "scan the dead letters",
                source,
            })?;
            let Some(id) = BodyId::from_key(&key) else {
                continue;
            };
            if let Some((error, pending)) = self.dead_letter(id)? {
                out.push(crate::DeadLetter {
                    seq: id.seq,
                    error,
                    pending,
                });
            }
        }
        Ok(out)
    }

    /// Reads and decrypts a body.
    pub(crate) fn read_body(&self, id: BodyId) -> Result<BodyRead, IngestError> {
        let Some(value) = self
            .heads
            .get(id.to_key())
            .map_err(|source| IngestError::Store {
                action: "read a body's head",
                source,
            })?
        else {
            return Ok(BodyRead::Missing);
        };
        let head = parse_head(id.seq, &value)?;
        let mut stored = StoredBody {
            seq: id.seq,
            receive_time_ms: head.receive_time_ms,
            sha256: head.sha256,
            body: None,
        };
        let Some(key) = self.day_key(id.day) else {
            return Ok(BodyRead::KeyDestroyed(stored));
        };
        let mut ciphertext = Vec::with_capacity(head.ciphertext_bytes);
        for index in 0..head.chunks {
            let chunk = self
                .chunks
                .get(chunk_key(id, index))
                .map_err(|source| IngestError::Store {
                    action: "read a body's chunk",
                    source,
                })?
                .ok_or_else(|| IngestError::CorruptBody {
                    seq: id.seq,
                    detail: format!("chunk {index} of {} is missing", head.chunks),
                })?;
            ciphertext.extend_from_slice(&chunk);
        }
        if ciphertext.len() != head.ciphertext_bytes {
            return Err(IngestError::CorruptBody {
                seq: id.seq,
                detail: format!(
                    "{} ciphertext bytes, head says {}",
                    ciphertext.len(),
                    head.ciphertext_bytes
                ),
            });
        }
        let aad = raw_aad(id, head.receive_time_ms, &head.sha256);
        let body = cipher(&key)
            .decrypt(
                Nonce::from_slice(&head.nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| IngestError::Decrypt { seq: id.seq })?;
        stored.body = Some(body);
        Ok(BodyRead::Found(stored))
    }

    /// The oldest bodies, up to `max`, in id order.
    pub(crate) fn bodies(&self, max: usize) -> Result<Vec<StoredBody>, IngestError> {
        let mut ids = Vec::new();
        for item in self.heads.iter().keys() {
            let key = item.map_err(|source| IngestError::Store {
                action: "scan the bodies",
                source,
            })?;
            if let Some(id) = BodyId::from_key(&key) {
                ids.push(id);
                if ids.len() >= max {
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.read_body(id)? {
                BodyRead::Missing => {}
                BodyRead::KeyDestroyed(stored) | BodyRead::Found(stored) => out.push(stored),
            }
        }
        Ok(out)
    }

    /// Destroys the day keys of every day up to `day_last` (durably, first),
    /// then removes those days' bodies, chunks and dead letters from sled.
    pub(crate) fn purge_through(&self, day_last: u32) -> Result<PurgeReport, IngestError> {
        let days_destroyed = self.keys().destroy_through(day_last)?;
        let end = day_last
            .checked_add(1)
            .map(|d| d.to_be_bytes().to_vec())
            .unwrap_or_else(|| vec![0xff; 5]);
        let bodies_removed = remove_before(&self.heads, &end)?;
        remove_before(&self.chunks, &end)?;
        let dead_letters_removed = remove_before(&self.dead, &end)?;
        if bodies_removed > 0 || dead_letters_removed > 0 {
            self.db.flush().map_err(|source| IngestError::Store {
                action: "flush the purge",
                source,
            })?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(PurgeReport {
            days_destroyed,
            bodies_removed,
            dead_letters_removed,
        })
    }

    fn ticket(&self) -> u64 {
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Makes every write up to `ticket` durable. Group commit: one flush
    /// serves every write that finished before it started; writers that
    /// arrive during a flush wait for the lock, then find themselves
    /// already flushed or flush once for all of them.
    pub(crate) async fn commit(&self, ticket: u64) -> Result<(), IngestError> {
        if self.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let _flusher = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| IngestError::Task {
                detail: e.to_string(),
            })?
            .map_err(|source| IngestError::Store {
                action: "flush",
                source,
            })?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

fn remove_before(tree: &sled::Tree, end: &[u8]) -> Result<u64, IngestError> {
    let mut removed: u64 = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for item in tree.range(..end).keys().take(PURGE_BATCH_KEYS_MAX) {
            let key = item.map_err(|source| IngestError::Store {
                action: "scan expired keys",
                source,
            })?;
            if key.len() == ID_BYTES {
                removed = removed.saturating_add(1);
            }
            batch.remove(key);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        tree.apply_batch(batch)
            .map_err(|source| IngestError::Store {
                action: "remove expired keys",
                source,
            })?;
    }
}

fn cipher(key: &DayKey) -> Aes256GcmSiv {
    Aes256GcmSiv::new(key.as_ref().into())
}

fn chunk_key(id: BodyId, index: u32) -> [u8; ID_BYTES + 4] {
    let mut key = [0u8; ID_BYTES + 4];
    key[..ID_BYTES].copy_from_slice(&id.to_key());
    key[ID_BYTES..].copy_from_slice(&index.to_be_bytes());
    key
}

fn raw_aad(id: BodyId, receive_time_ms: i64, sha256: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RAW_AAD_DOMAIN.len() + ID_BYTES + 8 + 32);
    aad.extend_from_slice(RAW_AAD_DOMAIN);
    aad.extend_from_slice(&id.to_key());
    aad.extend_from_slice(&receive_time_ms.to_be_bytes());
    aad.extend_from_slice(sha256);
    aad
}

fn dead_aad(id: BodyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEAD_AAD_DOMAIN.len() + ID_BYTES);
    aad.extend_from_slice(DEAD_AAD_DOMAIN);
    aad.extend_from_slice(&id.to_key());
    aad
}

fn parse_head(seq: u64, value: &[u8]) -> Result<Head, IngestError> {
    let corrupt = |detail: &str| IngestError::CorruptBody {
        seq,
        detail: format!("head: {detail}"),
    };
    if value.len() != HEAD_BYTES {
        return Err(corrupt("bad length"));
    }
    if value[0] != HEAD_VERSION {
        return Err(corrupt("unknown version"));
    }
    let mut at = 1;
    let mut take = |n: usize| {
        let slice = &value[at..at + n];
        at += n;
        slice
    };
    let receive_time_ms = i64::from_be_bytes(take(8).try_into().map_err(|_| corrupt("time"))?);
    let sha256: [u8; 32] = take(32).try_into().map_err(|_| corrupt("sha"))?;
    let nonce: [u8; NONCE_BYTES] = take(NONCE_BYTES).try_into().map_err(|_| corrupt("nonce"))?;
    let ciphertext_bytes = u32::from_be_bytes(take(4).try_into().map_err(|_| corrupt("len"))?);
    let chunks = u32::from_be_bytes(take(4).try_into().map_err(|_| corrupt("chunks"))?);
    Ok(Head {
        receive_time_ms,
        sha256,
        nonce,
        ciphertext_bytes: usize::try_from(ciphertext_bytes).map_err(|_| corrupt("len"))?,
        chunks,
    })
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_is_the_utc_day() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-5), 0);
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("aäb", 2), "a");
        assert_eq!(cut("aäb", 3), "aä");
    }

    #[test]
    fn a_large_body_round_trips_through_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RawStore::open(dir.path()).expect("open");
        let body: Vec<u8> = (0..3 * CHUNK_BYTES_MAX + 17)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let (id, _) = store.put_body(&body, 5 * DAY_MS + 3).expect("put");
        assert_eq!(id.day, 5);
        match store.read_body(id).expect("read") {
            BodyRead::Found(stored) => {
                assert_eq!(stored.body.as_deref(), Some(&body[..]));
                assert_eq!(stored.receive_time_ms, 5 * DAY_MS + 3);
                assert_eq!(stored.sha256, <[u8; 32]>::from(Sha256::digest(&body)));
            }
            _ => panic!("body not found"),
        }
        // Every sled value stays small.
        for item in store.chunks.iter() {
            let (_, v) = item.expect("scan");
            assert!(v.len() <= CHUNK_BYTES_MAX);
        }
    }

    #[test]
    fn a_tampered_chunk_fails_to_decrypt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RawStore::open(dir.path()).expect("open");
        let (id, _) = store.put_body(b"{\"hello\":1}", DAY_MS).expect("put");
        let key = chunk_key(id, 0);
        let mut chunk = store.chunks.get(key).expect("get").expect("chunk").to_vec();
        chunk[0] ^= 1;
        store.chunks.insert(key, chunk).expect("insert");
        assert!(matches!(
            store.read_body(id),
            Err(IngestError::Decrypt { .. })
        ));
    }
}
