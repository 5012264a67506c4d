//! twinlog's key vault. This crate owns every secret of an audit log: the
//! pseudonym key behind the tags that records carry instead of personal values,
//! the per-customer keys that seal personal content before a record is hashed
//! into the Merkle tree, the forward-secure ratchet those keys come from, and
//! the key-encryption key (KEK) that wraps all of them at rest, and the
//! format in which they are escrowed under a master key. It also owns
//! crypto-shredding: [`Vault::forget`] destroys a customer's key so that the
//! customer's sealed content can never be read again, while the records that
//! carry it still verify.
//!
//! # Determinism
//!
//! Copies of one vault (keys dir and sled tree copied byte for byte) seal the
//! same inputs, in the same order, into the same bytes. Nothing random reaches
//! a [`Sealed`]: the cipher is AES-256-GCM-SIV (misuse resistant), the nonce is
//! `HMAC-SHA256(pseudonym key, "nonce" || 0x00 || natural key)[..12]` (keyed,
//! so a low-entropy natural key such as a wamid or phone cannot be brute-forced
//! back out of the nonce), and customer keys come from a ratchet whose state
//! `S0` is fixed at creation:
//!
//! ```text
//! key_i   = HKDF-SHA256(ikm = S_i, salt = none, info = "customer-key")
//! S_{i+1} = HKDF-SHA256(ikm = S_i, salt = none, info = "ratchet-next")
//! ```
//!
//! A customer takes the next ratchet step the first time it needs a key (and
//! again, for a new generation, after it was forgotten). `S_i` is overwritten by
//! `S_{i+1}`, so a destroyed key cannot be derived again from what remains.
//! The creation seed is not kept: `S0 = HKDF(seed, "ratchet-0")`, pseudonym key
//! `= HKDF(seed, "pseudonym-key")`, both with salt `"twinlog-vault-seed"`.
//!
//! A [`Sealed`] has `key_id = customer tag (16) || generation (u32 BE)`,
//! `nonce` (12 bytes) and `ciphertext = AES-256-GCM-SIV(customer key, nonce,
//! plaintext, aad)`, where `aad` is what the caller passes (the record's seq).
//!
//! # On-disk format
//!
//! Two places. The KEK file `KEYS_DIR/kek` (dir 0700, file 0600) is 160
//! bytes, rewritten in place only (`write_all_at` + `sync_all`, never a
//! rename), and holds two slots: the current KEK and, during a rotation, the
//! pending one.
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
//! A slot is empty (all zero), valid (check matches) or torn (anything else:
//! an interrupted write, zeroed by `open`). One valid slot is the current KEK;
//! two valid slots `n` and `n + 1` mean a rotation was interrupted, `n + 1`
//! pending. The slots are physical: a rotation writes the free slot, then
//! zeroes the old one, so each step writes one slot and a torn write never
//! damages the KEK the tree is wrapped under.
//!
//! The sled tree handed to the vault (the log opens it as `"vault"` in its own
//! db, so one `flush` makes vault and record writes durable together) holds:
//!
//! | key | value |
//! | --- | --- |
//! | `meta/format` | `[1]` |
//! | `meta/pseudonym` | wrap(pseudonym key, 32 bytes) |
//! | `meta/ratchet` | wrap(index u64 BE \|\| S_index, 40 bytes) |
//! | `meta/shred-pending` | empty; present while a forget still owes a KEK rotation |
//! | `key/` + customer (16) | generation u32 BE \|\| wrap(customer key, 32 bytes) |
//! | `forgotten/` + customer (16) | last erased generation u32 BE (0: forgotten before it ever had a key) |
//!
//! `wrap(x) = kek id u32 BE || nonce (12, random) || AES-256-GCM-SIV(KEK, nonce,
//! x, aad)` with `aad = "twinlog-wrap\0" || len(tree key) u32 BE || tree key ||
//! clear prefix || kek id u32 BE`, which binds a wrapped value to its entry.
//! Wrapping uses random nonces; that is fine, wrapped values never reach records.
//!
//! # Forget and KEK rotation
//!
//! sled keeps old versions of values in its files until it compacts them, so
//! removing a key from the tree does not remove it from the disk. Every forget
//! therefore rotates the KEK, which makes every old wrapped copy (of the
//! customer key, and of the ratchet states it came from) useless:
//!
//! 1. remove `key/<c>`, write `forgotten/<c>` and `meta/shred-pending`, flush;
//! 2. write a new KEK into the free slot of the KEK file, fsync;
//! 3. rewrap every wrapped entry under the new KEK (each names its KEK id),
//!    remove `meta/shred-pending`, flush;
//! 4. zero the old KEK's slot, fsync.
//!
//! [`Vault::open`] completes a rotation that a crash interrupted (two valid
//! slots: resume at 3), and starts one if `meta/shred-pending` is present.
//!
//! # Escrow
//!
//! So that another machine can restore a log, the key material also leaves
//! the vault, wrapped under a master key ([`escrow`]): with change tracking
//! on ([`Vault::track_changes`]), [`Vault::take_changes`] returns the new
//! customer keys, ratchet states and forgets since the last call (the first
//! call, everything: [`Vault::export`]), and [`Vault::restore`] creates a
//! vault, under a new KEK, that seals and opens exactly as the original.
//! Only the ratchet's latest state is ever handed out; a forgotten key
//! leaves as a tombstone.
//!
//! [`Sealed`]: twinlog_proto::v1::Sealed

#![cfg(unix)]

mod error;
pub mod escrow;
mod kek;
mod pseudonym;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Key, Nonce};
use hkdf::Hkdf;
use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};
use sha2::Sha256;
use twinlog_proto::v1::Sealed;
use zeroize::Zeroizing;

pub use error::VaultError;
pub use escrow::{EscrowEntry, KeyMaterial, MasterKey};
pub use kek::{KEK_FILE_MODE, KEK_FILE_NAME, KEYS_DIR_MODE};
pub use pseudonym::{Pseudonymizer, Tag};

use kek::{Kek, KekFile, Slot};

/// Format of the vault tree, stored under `meta/format`.
pub const FORMAT: u8 = 1;
/// At most this many unwrapped customer keys are kept in memory.
pub const CUSTOMER_KEY_CACHE_LIMIT: usize = 4096;
/// Length of `Sealed.key_id`: customer tag (16) and generation (u32 BE).
pub const KEY_ID_LEN: usize = 20;
/// Length of `Sealed.nonce`.
pub const NONCE_LEN: usize = 12;

const K_FORMAT: &[u8] = b"meta/format";
const K_PSEUDONYM: &[u8] = b"meta/pseudonym";
const K_RATCHET: &[u8] = b"meta/ratchet";
const K_SHRED_PENDING: &[u8] = b"meta/shred-pending";
const P_KEY: &[u8] = b"key/";
const P_FORGOTTEN: &[u8] = b"forgotten/";

const SEED_SALT: &[u8] = b"twinlog-vault-seed";
const INFO_RATCHET_0: &[u8] = b"ratchet-0";
const INFO_PSEUDONYM: &[u8] = b"pseudonym-key";
const INFO_CUSTOMER_KEY: &[u8] = b"customer-key";
const INFO_RATCHET_NEXT: &[u8] = b"ratchet-next";
const NONCE_DOMAIN: &str = "nonce";
const WRAP_AAD_PREFIX: &[u8] = b"twinlog-wrap\0";
const WRAP_HEADER_LEN: usize = 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Vault>();
    send_sync::<Pseudonymizer>();
};

/// What [`Vault::forget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// The customer's key of this generation was destroyed now.
    Forgotten { generation: u32 },
    /// The customer had no live key and was already forgotten (up to this
    /// generation); nothing changed.
    AlreadyForgotten { generation: u32 },
    /// The customer never had a key; a tombstone (generation 0) was recorded
    /// so that the customer reads as forgotten.
    NeverKeyed,
}

/// Test hooks: where a simulated crash stops an operation.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Forget: tombstone flushed, KEK rotation not started.
    AfterTombstone,
    /// Rotation step 1 done: the new KEK is in the pending slot.
    AfterPendingKek,
    /// Rotation step 2 half done: one entry rewrapped, not flushed.
    MidRewrap,
    /// Rotation step 2 done and flushed; the old KEK is not zeroed yet.
    AfterRewrap,
}

/// The vault of one audit log. See the crate docs.
pub struct Vault {
    tree: sled::Tree,
    kek_file: KekFile,
    kek: Kek,
    kek_cipher: Aes256GcmSiv,
    /// A KEK written to the file by a rotation that has not finished.
    pending_kek: Option<Kek>,
    pseudonymizer: Pseudonymizer,
    ratchet: Ratchet,
    cache: Mutex<KeyCache>,
    crash_at: Option<CrashPoint>,
    /// Key material changed since the last [`Vault::take_changes`], when
    /// tracking is on.
    changes: Option<Changes>,
}

/// What changed since the last [`Vault::take_changes`]: the latest ratchet
/// state, then the keys and forgets in order. Bounded by
/// [`escrow::CHANGES_MAX`]; past it, `snapshot` asks for everything.
#[derive(Default)]
struct Changes {
    ratchet: Option<(u64, Zeroizing<[u8; 32]>)>,
    entries: Vec<EscrowEntry>,
    snapshot: bool,
}

impl Changes {
    fn push(&mut self, entry: EscrowEntry) {
        if self.snapshot {
            return;
        }
        if self.entries.len() >= escrow::CHANGES_MAX {
            self.entries.clear();
            self.ratchet = None;
            self.snapshot = true;
            return;
        }
        self.entries.push(entry);
    }
}

/// What [`Vault::take_changes`] returns.
#[derive(Debug, Default)]
pub struct EscrowChanges {
    /// True when `entries` is all the key material ([`Vault::export`]), not
    /// only what changed.
    pub snapshot: bool,
    pub entries: Vec<EscrowEntry>,
}

/// A customer key and its generation.
type CustomerKey = (u32, Zeroizing<[u8; 32]>);

struct Ratchet {
    index: u64,
    state: Zeroizing<[u8; 32]>,
}

struct CachedKey {
    generation: u32,
    /// Zeroizes its AES round keys on drop (the `aes/zeroize` feature).
    cipher: Aes256GcmSiv,
}

/// Bounded map of unwrapped customer keys, evicting the oldest insert first.
#[derive(Default)]
struct KeyCache {
    map: HashMap<Tag, CachedKey>,
    order: VecDeque<Tag>,
}

impl KeyCache {
    fn get(&self, customer: &Tag) -> Option<&CachedKey> {
        self.map.get(customer)
    }

    fn insert(&mut self, customer: Tag, key: CachedKey) {
        if self.map.insert(customer, key).is_none() {
            self.order.push_back(customer);
            while self.map.len() > CUSTOMER_KEY_CACHE_LIMIT {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    fn remove(&mut self, customer: &Tag) {
        if self.map.remove(customer).is_some() {
            self.order.retain(|t| t != customer);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_name(tree_key: &[u8]) -> String {
    match tree_key.iter().position(|b| *b == b'/') {
        Some(i) => format!(
            "{}/{}",
            String::from_utf8_lossy(&tree_key[..i]),
            if tree_key.starts_with(P_KEY) || tree_key.starts_with(P_FORGOTTEN) {
                hex(&tree_key[i + 1..])
            } else {
                String::from_utf8_lossy(&tree_key[i + 1..]).into_owned()
            }
        ),
        None => hex(tree_key),
    }
}

fn corrupt(tree_key: &[u8], reason: &'static str) -> VaultError {
    VaultError::EntryCorrupt {
        key: entry_name(tree_key),
        reason,
    }
}

fn hkdf32(ikm: &[u8], salt: Option<&[u8]>, info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    if hk.expand(info, &mut out[..]).is_err() {
        unreachable!("32 bytes is a valid hkdf-sha256 output length");
    }
    out
}

fn cipher_of(key: &[u8; 32]) -> Aes256GcmSiv {
    Aes256GcmSiv::new(Key::<Aes256GcmSiv>::from_slice(key))
}

fn random_kek(id: u32, slot: usize) -> Kek {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut key[..]);
    Kek { id, key, slot }
}

fn prefixed(prefix: &[u8], customer: &Tag) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + customer.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(customer);
    k
}

/// Length of the clear prefix of a wrapped entry, or `None` if the entry is
/// not wrapped.
fn clear_len(tree_key: &[u8]) -> Option<usize> {
    if tree_key.starts_with(P_KEY) {
        Some(4)
    } else if tree_key == K_PSEUDONYM || tree_key == K_RATCHET {
        Some(0)
    } else {
        None
    }
}

fn wrap_aad(tree_key: &[u8], clear: &[u8], kek_id: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_PREFIX.len() + 8 + tree_key.len() + clear.len());
    aad.extend_from_slice(WRAP_AAD_PREFIX);
    aad.extend_from_slice(&(tree_key.len() as u32).to_be_bytes());
    aad.extend_from_slice(tree_key);
    aad.extend_from_slice(clear);
    aad.extend_from_slice(&kek_id.to_be_bytes());
    aad
}

fn wrap(
    rng: &mut impl RngCore,
    cipher: &Aes256GcmSiv,
    kek_id: u32,
    tree_key: &[u8],
    clear: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = wrap_aad(tree_key, clear, kek_id);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::TooLong)?;
    let mut out = Vec::with_capacity(clear.len() + WRAP_HEADER_LEN + ct.len());
    out.extend_from_slice(clear);
    out.extend_from_slice(&kek_id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

struct Wrapped<'a> {
    clear: &'a [u8],
    kek_id: u32,
    nonce: &'a [u8],
    ct: &'a [u8],
}

fn parse_wrapped<'a>(
    tree_key: &[u8],
    value: &'a [u8],
    clear_len: usize,
) -> Result<Wrapped<'a>, VaultError> {
    if value.len() < clear_len + WRAP_HEADER_LEN + TAG_LEN {
        return Err(corrupt(tree_key, "wrapped value too short"));
    }
    let (clear, rest) = value.split_at(clear_len);
    let mut id = [0u8; 4];
    id.copy_from_slice(&rest[..4]);
    Ok(Wrapped {
        clear,
        kek_id: u32::from_be_bytes(id),
        nonce: &rest[4..WRAP_HEADER_LEN],
        ct: &rest[WRAP_HEADER_LEN..],
    })
}

fn unwrap_with(
    cipher: &Aes256GcmSiv,
    tree_key: &[u8],
    w: &Wrapped<'_>,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let aad = wrap_aad(tree_key, w.clear, w.kek_id);
    cipher
        .decrypt(
            Nonce::from_slice(w.nonce),
            Payload {
                msg: w.ct,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::UnwrapFailed(entry_name(tree_key)))
}

fn u32_of(tree_key: &[u8], bytes: &[u8]) -> Result<u32, VaultError> {
    let arr: [u8; 4] = bytes
        .try_into()
        .map_err(|_| corrupt(tree_key, "expected a u32"))?;
    Ok(u32::from_be_bytes(arr))
}

fn crash(crash_at: Option<CrashPoint>, here: CrashPoint) -> Result<(), VaultError> {
    if crash_at == Some(here) {
        return Err(VaultError::SimulatedCrash(here));
    }
    Ok(())
}

/// Rotation steps 3 and 4 (the crate docs' numbering): rewrap every entry
/// still under `old` under `new`, clear `meta/shred-pending`, flush, zero
/// `old`'s slot.
fn finish_rotation(
    tree: &sled::Tree,
    kek_file: &mut KekFile,
    old: &Kek,
    new: &Kek,
    crash_at: Option<CrashPoint>,
) -> Result<(), VaultError> {
    let old_cipher = cipher_of(&old.key);
    let new_cipher = cipher_of(&new.key);
    let mut rng = StdRng::from_rng(OsRng).map_err(|e| VaultError::Io {
        what: "seed rng for",
        path: kek_file.path().to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut rewrapped = 0usize;
    for item in tree.iter() {
        let (k, v) = item?;
        let Some(clear_len) = clear_len(&k) else {
            continue;
        };
        let w = parse_wrapped(&k, &v, clear_len)?;
        if w.kek_id == new.id {
            continue;
        }
        if w.kek_id != old.id {
            return Err(corrupt(&k, "wrapped under an unknown kek"));
        }
        let plain = unwrap_with(&old_cipher, &k, &w)?;
        let value = wrap(&mut rng, &new_cipher, new.id, &k, w.clear, &plain)?;
        tree.insert(&k, value)?;
        rewrapped += 1;
        if rewrapped == 1 {
            crash(crash_at, CrashPoint::MidRewrap)?;
        }
    }
    tree.remove(K_SHRED_PENDING)?;
    tree.flush()?;
    crash(crash_at, CrashPoint::AfterRewrap)?;
    kek_file.write_slot(old.slot, None)
}

impl Vault {
    /// Creates a new vault: a random ratchet state and pseudonym key in
    /// `tree` (which must be empty), and a new KEK file in `keys_dir` (created
    /// 0700 if missing; the KEK file must not exist). Flushes `tree`.
    pub fn create(keys_dir: &Path, tree: sled::Tree) -> Result<Vault, VaultError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut seed[..]);
        Self::create_from_seed(keys_dir, tree, &seed)
    }

    /// [`Vault::create`] with the seed given instead of drawn: two vaults
    /// created from one seed seal alike. For tests only.
    #[doc(hidden)]
    pub fn create_from_seed(
        keys_dir: &Path,
        tree: sled::Tree,
        seed: &[u8; 32],
    ) -> Result<Vault, VaultError> {
        let material = KeyMaterial {
            pseudonym: Some(hkdf32(seed, Some(SEED_SALT), INFO_PSEUDONYM)),
            ratchet: Some((0, hkdf32(seed, Some(SEED_SALT), INFO_RATCHET_0))),
            ..KeyMaterial::default()
        };
        Self::restore(keys_dir, tree, &material)
    }

    /// Opens an existing vault. Completes a KEK rotation that a crash
    /// interrupted, and performs one that a forget still owes.
    pub fn open(keys_dir: &Path, tree: sled::Tree) -> Result<Vault, VaultError> {
        let (mut kek_file, [s0, s1]) = KekFile::open(keys_dir)?;
        let kek_corrupt = |reason| VaultError::KekCorrupt {
            path: keys_dir.join(KEK_FILE_NAME),
            reason,
        };
        let (current, pending) = match (s0, s1) {
            (Slot::Valid(a), Slot::Valid(b)) => {
                let (lo, hi) = if a.id < b.id { (a, b) } else { (b, a) };
                if lo.id.checked_add(1) != Some(hi.id) {
                    return Err(kek_corrupt("two kek slots whose ids are not consecutive"));
                }
                (lo, Some(hi))
            }
            (Slot::Valid(a), other) | (other, Slot::Valid(a)) => {
                if matches!(other, Slot::Torn) {
                    // An interrupted write of a new KEK (before the tree used
                    // it) or of the zeroing of an old one: zero it.
                    kek_file.write_slot(1 - a.slot, None)?;
                }
                (a, None)
            }
            _ => return Err(kek_corrupt("no valid kek slot")),
        };

        match tree.get(K_FORMAT)? {
            Some(v) if v.as_ref() == [FORMAT] => {}
            found => {
                return Err(VaultError::Format {
                    want: FORMAT,
                    found: found.map_or_else(|| "nothing".to_string(), |v| hex(&v)),
                })
            }
        }

        let mut vault = Vault {
            kek_cipher: cipher_of(&current.key),
            kek: current,
            pending_kek: pending,
            tree,
            kek_file,
            // Placeholders until the rotation (which may rewrap them) is done.
            pseudonymizer: Pseudonymizer::new([0; 32]),
            ratchet: Ratchet {
                index: 0,
                state: Zeroizing::new([0; 32]),
            },
            cache: Mutex::new(KeyCache::default()),
            crash_at: None,
            changes: None,
        };
        if vault.pending_kek.is_some() || vault.tree.contains_key(K_SHRED_PENDING)? {
            vault.rotate_kek()?;
        }

        vault.pseudonymizer = Pseudonymizer::new(*vault.pseudonym_key()?);
        let (_, rs) = vault.unwrap_entry(K_RATCHET, 0)?;
        if rs.len() != 40 {
            return Err(corrupt(K_RATCHET, "ratchet state is not 40 bytes"));
        }
        let mut index = [0u8; 8];
        index.copy_from_slice(&rs[..8]);
        vault.ratchet.index = u64::from_be_bytes(index);
        vault.ratchet.state.copy_from_slice(&rs[8..]);
        Ok(vault)
    }

    /// The ratchet index: how many customer keys this vault has issued.
    pub fn ratchet_index(&self) -> u64 {
        self.ratchet.index
    }

    /// The tagger under this log's pseudonym key.
    pub fn pseudonymizer(&self) -> Pseudonymizer {
        self.pseudonymizer.clone()
    }

    /// Seals `plaintext` for `customer`. The nonce comes from `natural_key`
    /// (the record's natural key), `aad` is bound in (the record's seq). The
    /// first seal for a customer (or the first after it was forgotten) takes
    /// a ratchet step and writes the new key and ratchet state to the tree in
    /// one batch, without flushing: the caller flushes the db with the records.
    pub fn seal(
        &mut self,
        customer: &Tag,
        natural_key: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, VaultError> {
        let nonce = self.nonce(natural_key);
        let cache = self.cache.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = cache.get(customer) {
            return seal_with(k, customer, &nonce, aad, plaintext);
        }
        let (generation, key) = match self.load_live_key(customer)? {
            Some(live) => live,
            None => self.new_customer_key(customer)?,
        };
        let entry = CachedKey {
            generation,
            cipher: cipher_of(&key),
        };
        let sealed = seal_with(&entry, customer, &nonce, aad, plaintext)?;
        self.cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*customer, entry);
        Ok(sealed)
    }

    /// Opens a sealed value. `Ok(None)`: its key was destroyed by a forget.
    /// `Err(Tampered)`: ciphertext, nonce or aad do not authenticate.
    pub fn open_sealed(&self, sealed: &Sealed, aad: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let (customer, generation) = parse_key_id(&sealed.key_id)?;
        let nonce: [u8; NONCE_LEN] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::MalformedSealed("nonce is not 12 bytes"))?;
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(k) = cache.get(&customer) {
                if k.generation == generation {
                    return open_with(k, &nonce, aad, &sealed.ciphertext).map(Some);
                }
            }
        }
        let unknown = || VaultError::UnknownKey {
            customer: hex(&customer),
            generation,
        };
        match self.load_live_key(&customer)? {
            Some((live, key)) if live == generation => {
                let entry = CachedKey {
                    generation,
                    cipher: cipher_of(&key),
                };
                let plain = open_with(&entry, &nonce, aad, &sealed.ciphertext)?;
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(customer, entry);
                Ok(Some(plain))
            }
            Some((live, _)) if live > generation => Ok(None),
            Some(_) => Err(unknown()),
            None => match self.tombstone(&customer)? {
                Some(erased) if generation <= erased => Ok(None),
                _ => Err(unknown()),
            },
        }
    }

    /// Forgets a customer: destroys its live key, records a tombstone and
    /// rotates the KEK so that old copies of the wrapped key are useless.
    /// Durable when it returns. Idempotent: a second call returns
    /// [`ForgetOutcome::AlreadyForgotten`]. Content sealed for the customer
    /// later gets a new key (the next generation).
    pub fn forget(&mut self, customer: &Tag) -> Result<ForgetOutcome, VaultError> {
        let key_key = prefixed(P_KEY, customer);
        let Some(value) = self.tree.get(&key_key)? else {
            // A forget that failed half-way in this process may still owe a
            // rotation; pay it before reporting.
            if self.pending_kek.is_some() || self.tree.contains_key(K_SHRED_PENDING)? {
                self.rotate_kek()?;
            }
            if let Some(generation) = self.tombstone(customer)? {
                return Ok(ForgetOutcome::AlreadyForgotten { generation });
            }
            self.tree
                .insert(prefixed(P_FORGOTTEN, customer), &0u32.to_be_bytes())?;
            self.tree.flush()?;
            self.record_forget(customer, 0);
            return Ok(ForgetOutcome::NeverKeyed);
        };
        let generation = u32_of(&key_key, parse_wrapped(&key_key, &value, 4)?.clear)?;
        let mut batch = sled::Batch::default();
        batch.remove(key_key);
        batch.insert(prefixed(P_FORGOTTEN, customer), &generation.to_be_bytes());
        batch.insert(K_SHRED_PENDING, &[]);
        self.tree.apply_batch(batch)?;
        self.cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(customer);
        self.tree.flush()?;
        self.record_forget(customer, generation);
        crash(self.crash_at, CrashPoint::AfterTombstone)?;
        self.rotate_kek()?;
        Ok(ForgetOutcome::Forgotten { generation })
    }

    fn record_forget(&mut self, customer: &Tag, generation: u32) {
        if let Some(changes) = &mut self.changes {
            changes.push(EscrowEntry::Forgotten {
                customer: *customer,
                generation,
            });
        }
    }

    /// Turns change tracking on, for key escrow: from now on the vault
    /// remembers every new customer key, ratchet step and forget until
    /// [`Vault::take_changes`]. The first take returns a full snapshot.
    pub fn track_changes(&mut self) {
        self.changes = Some(Changes {
            snapshot: true,
            ..Changes::default()
        });
    }

    /// The key material changed since the last call (or everything, see
    /// [`Vault::track_changes`]): the ratchet state first, then customer
    /// keys and forgets in the order they happened. Empty when tracking is
    /// off. What it returns must reach the escrow before any record sealed
    /// under it is published.
    pub fn take_changes(&mut self) -> Result<EscrowChanges, VaultError> {
        let Some(changes) = self.changes.take() else {
            return Ok(EscrowChanges::default());
        };
        self.changes = Some(Changes::default());
        if changes.snapshot {
            return match self.export() {
                Ok(entries) => Ok(EscrowChanges {
                    snapshot: true,
                    entries,
                }),
                Err(error) => {
                    // Keep asking for the snapshot until one is taken.
                    self.track_changes();
                    Err(error)
                }
            };
        }
        let mut entries = Vec::with_capacity(changes.entries.len() + 1);
        if let Some((index, state)) = changes.ratchet {
            entries.push(EscrowEntry::Ratchet { index, state });
        }
        entries.extend(changes.entries);
        Ok(EscrowChanges {
            snapshot: false,
            entries,
        })
    }

    /// All the key material, unwrapped: the ratchet state, the pseudonym
    /// key, every live customer key and every tombstone. Secret: for the
    /// escrow only.
    pub fn export(&self) -> Result<Vec<EscrowEntry>, VaultError> {
        let mut out = vec![
            EscrowEntry::Ratchet {
                index: self.ratchet.index,
                state: self.ratchet.state.clone(),
            },
            EscrowEntry::Pseudonym(self.pseudonym_key()?),
        ];
        for item in self.tree.scan_prefix(P_KEY) {
            let (k, _) = item?;
            let customer: Tag = k[P_KEY.len()..]
                .try_into()
                .map_err(|_| corrupt(&k, "customer tag is not 16 bytes"))?;
            if let Some((generation, key)) = self.load_live_key(&customer)? {
                out.push(EscrowEntry::Key {
                    customer,
                    generation,
                    key,
                });
            }
        }
        for customer in self.forgotten()? {
            if let Some(generation) = self.tombstone(&customer)? {
                out.push(EscrowEntry::Forgotten {
                    customer,
                    generation,
                });
            }
        }
        Ok(out)
    }

    fn pseudonym_key(&self) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let (_, pk) = self.unwrap_entry(K_PSEUDONYM, 0)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if pk.len() != 32 {
            return Err(corrupt(K_PSEUDONYM, "pseudonym key is not 32 bytes"));
        }
        key.copy_from_slice(&pk);
        Ok(key)
    }

    /// Creates a vault (a new KEK file in `keys_dir`, the empty `tree`) that
    /// holds `material`: the same pseudonym key, ratchet state, live keys
    /// and tombstones, so it seals and opens exactly as the vault the
    /// material came from. Flushes `tree`.
    pub fn restore(
        keys_dir: &Path,
        tree: sled::Tree,
        material: &KeyMaterial,
    ) -> Result<Vault, VaultError> {
        if !tree.is_empty() {
            return Err(VaultError::TreeNotEmpty);
        }
        let pseudonym_key = material
            .pseudonym
            .as_ref()
            .ok_or(VaultError::EscrowIncomplete("pseudonym key"))?;
        let (index, state) = material
            .ratchet
            .as_ref()
            .ok_or(VaultError::EscrowIncomplete("ratchet state"))?;
        let kek = random_kek(1, 0);
        let kek_file = KekFile::create(keys_dir, &kek)?;
        let kek_cipher = cipher_of(&kek.key);
        let mut rng = OsRng;
        let mut ratchet_plain = Zeroizing::new([0u8; 40]);
        ratchet_plain[..8].copy_from_slice(&index.to_be_bytes());
        ratchet_plain[8..].copy_from_slice(&state[..]);
        let mut batch = sled::Batch::default();
        batch.insert(K_FORMAT, &[FORMAT]);
        let mut put = |tree_key: Vec<u8>, clear: &[u8], plain: &[u8]| -> Result<(), VaultError> {
            let value = wrap(&mut rng, &kek_cipher, kek.id, &tree_key, clear, plain)?;
            batch.insert(tree_key, value);
            Ok(())
        };
        put(K_PSEUDONYM.to_vec(), &[], &pseudonym_key[..])?;
        put(K_RATCHET.to_vec(), &[], &ratchet_plain[..])?;
        for (customer, (generation, key)) in &material.keys {
            put(
                prefixed(P_KEY, customer),
                &generation.to_be_bytes(),
                &key[..],
            )?;
        }
        for (customer, generation) in &material.forgotten {
            batch.insert(prefixed(P_FORGOTTEN, customer), &generation.to_be_bytes());
        }
        tree.apply_batch(batch)?;
        tree.flush()?;
        Ok(Vault {
            tree,
            kek_file,
            kek,
            kek_cipher,
            pending_kek: None,
            pseudonymizer: Pseudonymizer::new(**pseudonym_key),
            ratchet: Ratchet {
                index: *index,
                state: state.clone(),
            },
            cache: Mutex::new(KeyCache::default()),
            crash_at: None,
            changes: None,
        })
    }

    /// Whether `forget` was ever called for this customer (even if content
    /// sealed since then has a live key of a later generation).
    pub fn is_forgotten(&self, customer: &Tag) -> Result<bool, VaultError> {
        Ok(self.tree.contains_key(prefixed(P_FORGOTTEN, customer))?)
    }

    /// Every customer that was ever forgotten, in tag order.
    pub fn forgotten(&self) -> Result<Vec<Tag>, VaultError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(P_FORGOTTEN) {
            let (k, _) = item?;
            let tag: Tag = k[P_FORGOTTEN.len()..]
                .try_into()
                .map_err(|_| corrupt(&k, "customer tag is not 16 bytes"))?;
            out.push(tag);
        }
        Ok(out)
    }

    /// Rotates the KEK (forget does this itself): new KEK into the free slot,
    /// rewrap every entry, zero the old slot. Durable when it returns.
    pub fn rotate_kek(&mut self) -> Result<(), VaultError> {
        if self.pending_kek.is_none() {
            let id = self
                .kek
                .id
                .checked_add(1)
                .ok_or(VaultError::Overflow("kek id"))?;
            let new = random_kek(id, 1 - self.kek.slot);
            self.kek_file.write_slot(new.slot, Some(&new))?;
            self.pending_kek = Some(new);
            crash(self.crash_at, CrashPoint::AfterPendingKek)?;
        }
        if let Some(new) = &self.pending_kek {
            finish_rotation(
                &self.tree,
                &mut self.kek_file,
                &self.kek,
                new,
                self.crash_at,
            )?;
        }
        if let Some(new) = self.pending_kek.take() {
            self.kek_cipher = cipher_of(&new.key);
            self.kek = new;
        }
        Ok(())
    }

    fn nonce(&self, natural_key: &[u8]) -> [u8; NONCE_LEN] {
        let mac = self.pseudonymizer.mac_of(NONCE_DOMAIN, natural_key);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&mac[..NONCE_LEN]);
        nonce
    }

    fn tombstone(&self, customer: &Tag) -> Result<Option<u32>, VaultError> {
        let k = prefixed(P_FORGOTTEN, customer);
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(u32_of(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Unwraps a tree entry under the current or the pending KEK.
    fn unwrap_entry(
        &self,
        tree_key: &[u8],
        clear_len: usize,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), VaultError> {
        let value = self
            .tree
            .get(tree_key)?
            .ok_or_else(|| corrupt(tree_key, "missing"))?;
        let w = parse_wrapped(tree_key, &value, clear_len)?;
        let plain = if w.kek_id == self.kek.id {
            unwrap_with(&self.kek_cipher, tree_key, &w)?
        } else {
            match &self.pending_kek {
                Some(p) if p.id == w.kek_id => unwrap_with(&cipher_of(&p.key), tree_key, &w)?,
                _ => return Err(corrupt(tree_key, "wrapped under an unknown kek")),
            }
        };
        Ok((w.clear.to_vec(), plain))
    }

    fn load_live_key(&self, customer: &Tag) -> Result<Option<CustomerKey>, VaultError> {
        let k = prefixed(P_KEY, customer);
        if !self.tree.contains_key(&k)? {
            return Ok(None);
        }
        let (clear, plain) = self.unwrap_entry(&k, 4)?;
        let generation = u32_of(&k, &clear)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(corrupt(&k, "customer key is not 32 bytes"));
        }
        key.copy_from_slice(&plain);
        Ok(Some((generation, key)))
    }

    /// Takes a ratchet step for `customer` and writes its key and the next
    /// ratchet state in one batch (not flushed).
    fn new_customer_key(&mut self, customer: &Tag) -> Result<CustomerKey, VaultError> {
        let generation = match self.tombstone(customer)? {
            Some(g) => g
                .checked_add(1)
                .ok_or(VaultError::Overflow("key generation"))?,
            None => 1,
        };
        let index = self
            .ratchet
            .index
            .checked_add(1)
            .ok_or(VaultError::Overflow("ratchet index"))?;
        let key = hkdf32(&self.ratchet.state[..], None, INFO_CUSTOMER_KEY);
        let next = hkdf32(&self.ratchet.state[..], None, INFO_RATCHET_NEXT);

        let mut ratchet_plain = Zeroizing::new([0u8; 40]);
        ratchet_plain[..8].copy_from_slice(&index.to_be_bytes());
        ratchet_plain[8..].copy_from_slice(&next[..]);
        let key_key = prefixed(P_KEY, customer);
        let mut batch = sled::Batch::default();
        batch.insert(
            key_key.as_slice(),
            wrap(
                &mut OsRng,
                &self.kek_cipher,
                self.kek.id,
                &key_key,
                &generation.to_be_bytes(),
                &key[..],
            )?,
        );
        batch.insert(
            K_RATCHET,
            wrap(
                &mut OsRng,
                &self.kek_cipher,
                self.kek.id,
                K_RATCHET,
                &[],
                &ratchet_plain[..],
            )?,
        );
        self.tree.apply_batch(batch)?;
        if let Some(changes) = &mut self.changes {
            changes.ratchet = Some((index, next.clone()));
            changes.push(EscrowEntry::Key {
                customer: *customer,
                generation,
                key: key.clone(),
            });
        }
        // The old state is zeroized as it is dropped here.
        self.ratchet = Ratchet { index, state: next };
        Ok((generation, key))
    }

    /// Test hook: stop the next operation that reaches `point`.
    #[doc(hidden)]
    pub fn set_crash_point_for_tests(&mut self, point: Option<CrashPoint>) {
        self.crash_at = point;
    }

    /// Test hook: the customer's live key and its generation.
    #[doc(hidden)]
    pub fn customer_key_for_tests(
        &self,
        customer: &Tag,
    ) -> Result<Option<(u32, [u8; 32])>, VaultError> {
        Ok(self.load_live_key(customer)?.map(|(g, k)| (g, *k)))
    }

    /// Test hook: the ratchet index and state.
    #[doc(hidden)]
    pub fn ratchet_state_for_tests(&self) -> (u64, [u8; 32]) {
        (self.ratchet.index, *self.ratchet.state)
    }

    /// Test hook: the current KEK id and bytes.
    #[doc(hidden)]
    pub fn kek_for_tests(&self) -> (u32, [u8; 32]) {
        (self.kek.id, *self.kek.key)
    }

    /// Test hook: ids of the valid slots of the KEK file, and how many slots
    /// are neither valid nor zero.
    #[doc(hidden)]
    pub fn kek_slots_for_tests(keys_dir: &Path) -> Result<(Vec<u32>, usize), VaultError> {
        let (_, slots) = KekFile::open(keys_dir)?;
        let mut ids = Vec::new();
        let mut torn = 0;
        for s in slots {
            match s {
                Slot::Valid(k) => ids.push(k.id),
                Slot::Torn => torn += 1,
                Slot::Empty => {}
            }
        }
        ids.sort_unstable();
        Ok((ids, torn))
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("kek_id", &self.kek.id)
            .field("ratchet_index", &self.ratchet.index)
            .finish_non_exhaustive()
    }
}

fn parse_key_id(key_id: &[u8]) -> Result<(Tag, u32), VaultError> {
    if key_id.len() != KEY_ID_LEN {
        return Err(VaultError::MalformedSealed("key id is not 20 bytes"));
    }
    let mut customer = [0u8; 16];
    customer.copy_from_slice(&key_id[..16]);
    let mut generation = [0u8; 4];
    generation.copy_from_slice(&key_id[16..]);
    let generation = u32::from_be_bytes(generation);
    if generation == 0 {
        return Err(VaultError::MalformedSealed("key generation is 0"));
    }
    Ok((customer, generation))
}

fn seal_with(
    key: &CachedKey,
    customer: &Tag,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, VaultError> {
    let ciphertext = key
        .cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::TooLong)?;
    let mut key_id = Vec::with_capacity(KEY_ID_LEN);
    key_id.extend_from_slice(customer);
    key_id.extend_from_slice(&key.generation.to_be_bytes());
    Ok(Sealed {
        key_id,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

fn open_with(
    key: &CachedKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    key.cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| VaultError::Tampered)
}
