//! The vault's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the vault. Messages are lowercase and name
/// the object concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A filesystem operation on the keys dir or the kek file failed.
    #[error("vault keys: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The sled tree that holds the wrapped keys failed.
    #[error("vault tree: {0}")]
    Sled(#[from] sled::Error),
    /// `create` found an existing kek file.
    #[error("vault kek file {0} already exists; open the vault instead of creating it")]
    AlreadyExists(PathBuf),
    /// `create` was handed a tree that already has entries.
    #[error("vault tree is not empty; open the vault instead of creating it")]
    TreeNotEmpty,
    /// `open` found no kek file.
    #[error("vault kek file {0} does not exist")]
    KekMissing(PathBuf),
    /// The kek file or keys dir can be read by group or others.
    #[error("vault {path} has mode {mode:04o}; it must be {want:04o}")]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    /// The kek file is not what this crate writes.
    #[error("vault kek file {path} is corrupt: {reason}")]
    KekCorrupt { path: PathBuf, reason: &'static str },
    /// An entry of the vault tree is malformed, or wrapped under an unknown kek.
    #[error("vault tree entry {key} is corrupt: {reason}")]
    EntryCorrupt { key: String, reason: &'static str },
    /// A wrapped value failed authentication under its kek.
    #[error("vault tree entry {0} failed authentication under its kek")]
    UnwrapFailed(String),
    /// The tree has no vault in it, or a vault of another format.
    #[error("vault tree has no vault of format {want} (found {found})")]
    Format { want: u8, found: String },
    /// A `Sealed` value is malformed (wrong key id or nonce length).
    #[error("sealed value is malformed: {0}")]
    MalformedSealed(&'static str),
    /// A `Sealed` value failed authentication: ciphertext, nonce or aad tampered.
    #[error("sealed value failed authentication (ciphertext, nonce or aad was altered)")]
    Tampered,
    /// A `Sealed` value names a key generation this vault never issued.
    #[error("sealed value names key generation {generation} of customer {customer}, which this vault never issued")]
    UnknownKey { customer: String, generation: u32 },
    /// The plaintext is larger than AES-GCM-SIV allows (2^36 bytes).
    #[error("sealed value plaintext is too long for aes-gcm-siv")]
    TooLong,
    /// A counter (kek id, key generation, ratchet index) would overflow.
    #[error("vault {0} counter overflowed")]
    Overflow(&'static str),
    /// The master key file of the keys topic is missing or malformed.
    #[error("master key file {path}: {reason}")]
    MasterKey { path: PathBuf, reason: String },
    /// A keys-topic entry was wrapped under another master key.
    #[error(
        "keys topic entry {entry} is wrapped under master key {found}, but the configured master \
         key is {configured}: configure the master key file the engines that wrote it used \
         (--master-key-file / TWINLOG_MASTER_KEY_FILE)"
    )]
    WrongMasterKey {
        entry: String,
        found: String,
        configured: String,
    },
    /// A keys-topic entry failed authentication under the master key.
    #[error(
        "keys topic entry {0} failed authentication under the master key: it was altered or moved"
    )]
    EscrowTampered(String),
    /// A keys-topic entry is not what this crate writes.
    #[error("keys topic entry {entry} is corrupt: {reason}")]
    EscrowCorrupt { entry: String, reason: &'static str },
    /// The key material read back lacks a part a vault needs.
    #[error("the key material of the keys topic has no {0}")]
    EscrowIncomplete(&'static str),
    /// A test hook stopped an operation half-way, as a crash would.
    #[doc(hidden)]
    #[error("vault simulated a crash at {0:?}")]
    SimulatedCrash(crate::CrashPoint),
}

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> VaultError {
    let path = path.to_path_buf();
    move |source| VaultError::Io { what, path, source }
}
