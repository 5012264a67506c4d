//! Pseudonym tags: keyed hashes that stand for personal values in records.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A pseudonym tag: the first 16 bytes of an HMAC-SHA256.
pub type Tag = [u8; 16];

/// Computes tags under the log's pseudonym key. Holds a pre-keyed HMAC state
/// (the key itself is not kept); cloning is cheap and the value is pure.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
}

impl Pseudonymizer {
    /// A pseudonymizer under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        let key = zeroize::Zeroizing::new(key);
        let mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key[..]) {
            Ok(mac) => mac,
            Err(_) => unreachable!("hmac takes keys of any length"),
        };
        Pseudonymizer { mac }
    }

    /// `HMAC-SHA256(key, domain || 0x00 || value)[..16]`. `domain` names what
    /// the value is ("phone", "bsuid", "wamid", "key", ...) and must not
    /// contain a NUL byte.
    pub fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        let full = self.mac_of(domain, value);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// The full 32-byte HMAC of `domain || 0x00 || value`.
    pub(crate) fn mac_of(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        debug_assert!(!domain.as_bytes().contains(&0), "tag domain contains NUL");
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { .. }")
    }
}
