//! Key escrow: a shard's key material, wrapped under a master key, as
//! entries of a compacted topic (the engine's keys topic), so that another
//! engine can restore the shard. This module owns the entry format and the
//! master key file; it does no IO besides reading and creating that file.
//!
//! # Entries
//!
//! One entry per topic key, `<shard>/<name>` (ASCII; `<c>` is a customer
//! tag in lowercase hex). The topic is compacted, so only the last value of
//! each key survives compaction; a null value (a Kafka tombstone) removes a
//! key.
//!
//! | name | plaintext |
//! | --- | --- |
//! | `signer` | the log's C2SP signer key (`PRIVATE+KEY+<origin>+...`) |
//! | `pseudonym` | the pseudonym key, 32 bytes |
//! | `ratchet` | index u64 BE \|\| `S_index`, 40 bytes |
//! | `key/<c>` | generation u32 BE \|\| customer key, 36 bytes; a tombstone once forgotten |
//! | `forgotten/<c>` | last erased generation u32 BE |
//! | `checkpoint` | the latest signed checkpoint known to be on the audit topic |
//!
//! A value is `"TWLK" || version (1) || master key id (8) || nonce (12,
//! random) || AES-256-GCM-SIV(master key, nonce, plaintext, aad)` with
//! `aad = "twinlog-keys-topic\0" || version || topic key`, which binds the
//! value to its key (and so to its shard and customer). The master key id is
//! `SHA-256("twinlog-master-key-id\0" || master key)[..8]`: it names the
//! master key without revealing it, so a wrong master key is told apart from
//! a tampered entry.
//!
//! # Order
//!
//! [`escrow_records`] puts a ratchet state before the customer keys it
//! produced, and a `forgotten/<c>` entry before the tombstone of `key/<c>`,
//! so any prefix of one publish restores safely: a restored ratchet is never
//! behind a restored key (no key is issued twice), and a key whose
//! forgetting was half published is still forgotten
//! ([`KeyMaterial::apply`] drops a key of a forgotten generation).
//!
//! # The master key file
//!
//! 64 lowercase hex digits (32 bytes) and an optional newline, mode 0600
//! (refused if group or others may read it). [`MasterKey::generate`] writes
//! a new one.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm_siv::aead::{Aead, Payload};
use aes_gcm_siv::Nonce;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{cipher_of, hex, Tag, VaultError, NONCE_LEN};

/// Mode of the master key file.
pub const MASTER_KEY_FILE_MODE: u32 = 0o600;
/// Most entries [`crate::Vault`] queues for escrow between two
/// [`crate::Vault::take_changes`]; beyond it the queue is dropped and the
/// next take returns a full snapshot instead.
pub const CHANGES_MAX: usize = 65_536;

const MAGIC: &[u8; 4] = b"TWLK";
const VERSION: u8 = 1;
const ID_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + 1 + ID_LEN + NONCE_LEN;
const AAD_PREFIX: &[u8] = b"twinlog-keys-topic\0";
const ID_DOMAIN: &[u8] = b"twinlog-master-key-id\0";

/// The key-encryption key of the keys topic, from the configuration.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: [u8; ID_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ id: {} }}", self.id())
    }
}

fn master_error(path: &Path, reason: impl Into<String>) -> VaultError {
    VaultError::MasterKey {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn unhex32(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let key = Zeroizing::new(key);
        let mut h = Sha256::new();
        h.update(ID_DOMAIN);
        h.update(&key[..]);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&h.finalize()[..ID_LEN]);
        MasterKey { key, id }
    }

    /// Reads the master key file (see the module docs).
    pub fn load(path: &Path) -> Result<MasterKey, VaultError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            master_error(
                path,
                if e.kind() == ErrorKind::NotFound {
                    "the file does not exist (create one with `twinlog master-key new FILE`)"
                        .to_owned()
                } else {
                    format!("cannot read it: {e}")
                },
            )
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::Permissions {
                path: path.to_path_buf(),
                mode,
                want: MASTER_KEY_FILE_MODE,
            });
        }
        if meta.len() > 128 {
            return Err(master_error(path, "it is not 64 hex digits"));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| master_error(path, format!("cannot read it: {e}")))?,
        );
        let key =
            unhex32(text.trim()).ok_or_else(|| master_error(path, "it is not 64 hex digits"))?;
        Ok(MasterKey::from_bytes(*key))
    }

    /// Writes a new random master key to `path` (mode 0600; fails if the
    /// file exists) and returns it.
    pub fn generate(path: &Path) -> Result<MasterKey, VaultError> {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut key[..]);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MASTER_KEY_FILE_MODE)
            .open(path)
            .map_err(|e| master_error(path, format!("cannot create it: {e}")))?;
        let text = Zeroizing::new(format!("{}\n", hex(&key[..])));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| master_error(path, format!("cannot write it: {e}")))?;
        Ok(MasterKey::from_bytes(*key))
    }

    /// The master key id, hex: safe to log and to print.
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

/// One piece of a shard's key material.
pub enum EscrowEntry {
    /// The audit log's C2SP signer key.
    Signer(Zeroizing<String>),
    Pseudonym(Zeroizing<[u8; 32]>),
    Ratchet {
        index: u64,
        state: Zeroizing<[u8; 32]>,
    },
    Key {
        customer: Tag,
        generation: u32,
        key: Zeroizing<[u8; 32]>,
    },
    /// The customer was forgotten up to this generation: `key/<c>` is
    /// removed (a tombstone follows this entry).
    Forgotten {
        customer: Tag,
        generation: u32,
    },
    /// A signed checkpoint note of the log.
    Checkpoint(Vec<u8>),
}

impl std::fmt::Debug for EscrowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl EscrowEntry {
    /// The entry of a log's C2SP signer key.
    pub fn signer(key: String) -> EscrowEntry {
        EscrowEntry::Signer(Zeroizing::new(key))
    }

    /// The entry's name in its topic key (no secret in it).
    pub fn name(&self) -> String {
        match self {
            EscrowEntry::Signer(_) => "signer".into(),
            EscrowEntry::Pseudonym(_) => "pseudonym".into(),
            EscrowEntry::Ratchet { .. } => "ratchet".into(),
            EscrowEntry::Key { customer, .. } => format!("key/{}", hex(customer)),
            EscrowEntry::Forgotten { customer, .. } => format!("forgotten/{}", hex(customer)),
            EscrowEntry::Checkpoint(_) => "checkpoint".into(),
        }
    }

    fn plaintext(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        match self {
            EscrowEntry::Signer(s) => out.extend_from_slice(s.as_bytes()),
            EscrowEntry::Pseudonym(k) => out.extend_from_slice(&k[..]),
            EscrowEntry::Ratchet { index, state } => {
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&state[..]);
            }
            EscrowEntry::Key {
                generation, key, ..
            } => {
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&key[..]);
            }
            EscrowEntry::Forgotten { generation, .. } => {
                out.extend_from_slice(&generation.to_be_bytes())
            }
            EscrowEntry::Checkpoint(note) => out.extend_from_slice(note),
        }
        out
    }
}

/// A keys-topic record: topic key, and wrapped value or tombstone (`None`).
pub type TopicRecord = (Vec<u8>, Option<Vec<u8>>);

/// The topic key of `name` in `shard`.
pub fn topic_key(shard: u32, name: &str) -> Vec<u8> {
    format!("{shard}/{name}").into_bytes()
}

fn aad(topic_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 1 + topic_key.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.push(VERSION);
    aad.extend_from_slice(topic_key);
    aad
}

/// Wraps one entry of `shard`: its topic key and value.
pub fn wrap_entry(
    master: &MasterKey,
    shard: u32,
    entry: &EscrowEntry,
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let key = topic_key(shard, &entry.name());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let plaintext = entry.plaintext();
    let ct = cipher_of(&master.key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &aad(&key),
            },
        )
        .map_err(|_| VaultError::TooLong)?;
    let mut value = Vec::with_capacity(HEADER_LEN + ct.len());
    value.extend_from_slice(MAGIC);
    value.push(VERSION);
    value.extend_from_slice(&master.id);
    value.extend_from_slice(&nonce);
    value.extend_from_slice(&ct);
    Ok((key, value))
}

/// The topic records of `entries`, in order: each entry wrapped, and after
/// a [`EscrowEntry::Forgotten`] the tombstone (`None`) of the customer's key.
/// A ratchet state must come before the keys it produced (as
/// [`crate::Vault::take_changes`] returns them).
pub fn escrow_records(
    master: &MasterKey,
    shard: u32,
    entries: &[EscrowEntry],
) -> Result<Vec<TopicRecord>, VaultError> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let (key, value) = wrap_entry(master, shard, entry)?;
        out.push((key, Some(value)));
        if let EscrowEntry::Forgotten { customer, .. } = entry {
            out.push((topic_key(shard, &format!("key/{}", hex(customer))), None));
        }
    }
    Ok(out)
}

fn escrow_error(key: &[u8], reason: &'static str) -> VaultError {
    VaultError::EscrowCorrupt {
        entry: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

fn tag_of(key: &[u8], hex_tag: &str) -> Result<Tag, VaultError> {
    let mut tag = [0u8; 16];
    let bytes = hex_tag.as_bytes();
    if bytes.len() != 32 {
        return Err(escrow_error(key, "customer tag is not 32 hex digits"));
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        tag[i] = match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => u8::try_from(h * 16 + l).unwrap_or(0),
            _ => return Err(escrow_error(key, "customer tag is not hex")),
        };
    }
    Ok(tag)
}

fn array32(key: &[u8], bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(escrow_error(key, "wrong plaintext length"));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Unwraps one entry of `shard` (the topic key must be one of that shard's).
/// [`VaultError::WrongMasterKey`] when it was wrapped under another master
/// key, [`VaultError::EscrowTampered`] when it fails authentication.
pub fn unwrap_entry(
    master: &MasterKey,
    shard: u32,
    key: &[u8],
    value: &[u8],
) -> Result<EscrowEntry, VaultError> {
    let text = std::str::from_utf8(key).map_err(|_| escrow_error(key, "key is not UTF-8"))?;
    let name = text
        .strip_prefix(&format!("{shard}/"))
        .ok_or_else(|| escrow_error(key, "key belongs to another shard"))?;
    if value.len() < HEADER_LEN + 16 || &value[..4] != MAGIC {
        return Err(escrow_error(key, "not a wrapped entry"));
    }
    if value[4] != VERSION {
        return Err(escrow_error(key, "unknown entry version"));
    }
    let id = &value[5..5 + ID_LEN];
    if id != master.id {
        return Err(VaultError::WrongMasterKey {
            entry: text.to_owned(),
            found: hex(id),
            configured: master.id(),
        });
    }
    let nonce = &value[5 + ID_LEN..HEADER_LEN];
    let plain = Zeroizing::new(
        cipher_of(&master.key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &value[HEADER_LEN..],
                    aad: &aad(key),
                },
            )
            .map_err(|_| VaultError::EscrowTampered(text.to_owned()))?,
    );
    let u32_at = |b: &[u8]| -> Result<u32, VaultError> {
        let arr: [u8; 4] = b
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| escrow_error(key, "wrong plaintext length"))?;
        Ok(u32::from_be_bytes(arr))
    };
    let entry = match name {
        "signer" => EscrowEntry::Signer(Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| escrow_error(key, "signer key is not UTF-8"))?,
        )),
        "pseudonym" => EscrowEntry::Pseudonym(array32(key, &plain)?),
        "ratchet" => {
            if plain.len() != 40 {
                return Err(escrow_error(key, "wrong plaintext length"));
            }
            let mut index = [0u8; 8];
            index.copy_from_slice(&plain[..8]);
            EscrowEntry::Ratchet {
                index: u64::from_be_bytes(index),
                state: array32(key, &plain[8..])?,
            }
        }
        "checkpoint" => EscrowEntry::Checkpoint(plain.to_vec()),
        _ => {
            if let Some(c) = name.strip_prefix("key/") {
                if plain.len() != 36 {
                    return Err(escrow_error(key, "wrong plaintext length"));
                }
                EscrowEntry::Key {
                    customer: tag_of(key, c)?,
                    generation: u32_at(&plain)?,
                    key: array32(key, &plain[4..])?,
                }
            } else if let Some(c) = name.strip_prefix("forgotten/") {
                if plain.len() != 4 {
                    return Err(escrow_error(key, "wrong plaintext length"));
                }
                EscrowEntry::Forgotten {
                    customer: tag_of(key, c)?,
                    generation: u32_at(&plain)?,
                }
            } else {
                return Err(escrow_error(key, "unknown entry name"));
            }
        }
    };
    Ok(entry)
}

/// A shard's key material as read back from the keys topic.
#[derive(Default)]
pub struct KeyMaterial {
    pub signer: Option<Zeroizing<String>>,
    pub pseudonym: Option<Zeroizing<[u8; 32]>>,
    /// Ratchet index and state.
    pub ratchet: Option<(u64, Zeroizing<[u8; 32]>)>,
    /// Live customer keys: generation and key.
    pub keys: BTreeMap<Tag, (u32, Zeroizing<[u8; 32]>)>,
    /// Forgotten customers: last erased generation.
    pub forgotten: BTreeMap<Tag, u32>,
    pub checkpoint: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("signer", &self.signer.is_some())
            .field("pseudonym", &self.pseudonym.is_some())
            .field("ratchet_index", &self.ratchet.as_ref().map(|r| r.0))
            .field("keys", &self.keys.len())
            .field("forgotten", &self.forgotten.len())
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// Unwraps the live entries of `shard` (topic key to value, the last
    /// value of each key, tombstoned keys absent) into key material.
    pub fn from_entries<'a>(
        master: &MasterKey,
        shard: u32,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<KeyMaterial, VaultError> {
        let mut m = KeyMaterial::default();
        for (key, value) in entries {
            m.apply(unwrap_entry(master, shard, key, value)?);
        }
        m.forget_dead_keys();
        Ok(m)
    }

    /// Adds one entry (a later entry of the same name replaces an earlier).
    pub fn apply(&mut self, entry: EscrowEntry) {
        match entry {
            EscrowEntry::Signer(s) => self.signer = Some(s),
            EscrowEntry::Pseudonym(k) => self.pseudonym = Some(k),
            EscrowEntry::Ratchet { index, state } => self.ratchet = Some((index, state)),
            EscrowEntry::Key {
                customer,
                generation,
                key,
            } => {
                self.keys.insert(customer, (generation, key));
            }
            EscrowEntry::Forgotten {
                customer,
                generation,
            } => {
                self.forgotten.insert(customer, generation);
            }
            EscrowEntry::Checkpoint(note) => self.checkpoint = Some(note),
        }
        self.forget_dead_keys();
    }

    /// Drops every key of a generation that was forgotten: forget wins.
    fn forget_dead_keys(&mut self) {
        let forgotten = &self.forgotten;
        self.keys
            .retain(|c, (generation, _)| forgotten.get(c).is_none_or(|f| *generation > *f));
    }
}
