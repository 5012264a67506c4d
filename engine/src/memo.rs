//! A memo of identity tags. A customer's phone or BSUID, and a business
//! number, are tagged again for every event that names them; the memo
//! computes each once. Tags are a pure function of their input, so the memo
//! changes no output; its map order never reaches one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use crate::{domain, Tag, Tagger};

/// SipHash with fixed keys: no randomness in the engine. Keys are a
/// business's customers, delivered by Meta, and the map is bounded.
type Map = HashMap<Box<[u8]>, Tag, BuildHasherDefault<DefaultHasher>>;

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
