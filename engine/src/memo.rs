//! A memo of identity tags. A customer's phone or BSUID, and a business
//! number, are tagged again for every event that names them; the memo
//! computes each once. Tags are a pure function of their input, so the memo
//! changes no output; its map order never reaches one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::{domain, Tag, Tagger};

/// A fixed, unkeyed hash: no randomness in the engine. Keys are the
/// identities of a business's customers as Meta delivers them, and each map
/// is bounded, so a crafted flood of colliding phones could only slow it.
type Map = HashMap<Box<[u8]>, Tag, BuildHasherDefault<FxHasher>>;

/// The rustc hasher (multiply and rotate, eight bytes at a time): a few
/// instructions for a phone number, where SipHash takes a hundred.
#[derive(Default)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Entries per domain; a full map is emptied and refilled.
const ENTRIES_MAX: usize = 1 << 16;

/// Tags already computed, for the domains whose values recur (phones,
/// BSUIDs, business numbers; not wamids or natural keys, which do not).
#[derive(Debug, Clone, Default)]
pub struct TagCache {
    phone: Map,
    bsuid: Map,
    number: Map,
}

impl TagCache {
    fn map(&mut self, d: &str) -> Option<&mut Map> {
        match d {
            domain::PHONE => Some(&mut self.phone),
            domain::BSUID => Some(&mut self.bsuid),
            domain::NUMBER => Some(&mut self.number),
            _ => None,
        }
    }

    /// Tags held.
    pub fn len(&self) -> usize {
        self.phone.len() + self.bsuid.len() + self.number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`Tagger`] that remembers identity tags. Not `Sync`: one per fold.
pub struct MemoTagger<T> {
    inner: T,
    cache: RefCell<TagCache>,
}

impl<T: Tagger> MemoTagger<T> {
    pub fn new(inner: T) -> Self {
        Self::with_cache(inner, TagCache::default())
    }

    /// A memo that starts from (and can hand back) an earlier one's tags.
    pub fn with_cache(inner: T, cache: TagCache) -> Self {
        MemoTagger {
            inner,
            cache: RefCell::new(cache),
        }
    }

    pub fn into_cache(self) -> TagCache {
        self.cache.into_inner()
    }
}

impl<T: Tagger> Tagger for MemoTagger<T> {
    fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        if let Some(map) = self.cache.borrow_mut().map(domain) {
            if let Some(tag) = map.get(value) {
                return *tag;
            }
        } else {
            return self.inner.tag(domain, value);
        }
        let tag = self.inner.tag(domain, value);
        if let Some(map) = self.cache.borrow_mut().map(domain) {
            if map.len() >= ENTRIES_MAX {
                map.clear();
            }
            map.insert(value.into(), tag);
        }
        tag
    }
}
