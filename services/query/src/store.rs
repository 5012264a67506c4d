//! The view store: one sled tree of view rows (protobuf, as `views.proto`
//! encodes them), numbered change events and each partition's
//! `applied_through`. See [`crate::keys`] for the layout.
//!
//! Writes come only from the projector, one [`Commit`] (one sled batch, one
//! flush) per batch of audit records. Reads come from the API.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use twinlog_proto::v1::ChangeEvent;

use crate::error::StoreError;
use crate::keys;

/// Most rows one page scan examines (matching or not); past it the page
/// ends early with a cursor, so a filter that matches little never scans
/// the whole store in one request.
pub const SCAN_ROWS_MAX: usize = 10_000;

/// A change event as stored: the change, the partition whose record caused
/// it, and the business number it concerns (for tokens limited to numbers;
/// for contact changes, the number of the record that caused them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredChange {
    #[prost(uint32, tag = "1")]
    pub partition: u32,
    #[prost(string, tag = "2")]
    pub phone_number_id: String,
    #[prost(message, optional, tag = "3")]
    pub event: Option<ChangeEvent>,
}

/// What one batch of audit records of one partition writes, atomically.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    pub(crate) partition: u32,
    pub(crate) applied_through: u64,
    /// Row key → encoded row, or `None` to remove a row the views dropped.
    pub(crate) rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Numbered in order by the store.
    pub(crate) events: Vec<StoredChange>,
}

/// One page of a scan: rows with their keys, and where the next page starts
/// (after that key) if there may be more.
#[derive(Debug)]
pub struct Page<M> {
    pub items: Vec<(Vec<u8>, M)>,
    pub next: Option<Vec<u8>>,
}

/// A handle on the view store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Tree,
    _db: sled::Db,
    /// The next event id; held while a batch is numbered and applied.
    next_event: Mutex<u64>,
    /// The highest event id known durable (0: none).
    durable: watch::Sender<u64>,
}

const TREE: &str = "twinlog/query/v1";

impl Store {
    /// Opens (or creates) the store in `dir`. Blocking.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|source| StoreError::Open {
                dir: dir.display().to_string(),
                source,
            })?;
        let tree = db.open_tree(TREE).map_err(|source| StoreError::Open {
            dir: dir.display().to_string(),
            source,
        })?;
        let next = match tree
            .get(keys::next_event())
            .map_err(|source| StoreError::Sled {
                what: "read the next event id".into(),
                source,
            })? {
            Some(v) => decode_u64(&v, "the next event id")?,
            None => 1,
        };
        let (durable, _) = watch::channel(next - 1);
        Ok(Store {
            inner: Arc::new(Inner {
                tree,
                _db: db,
                next_event: Mutex::new(next),
                durable,
            }),
        })
    }

    /// The seq of the last audit record of `partition` whose changes are
    /// stored; `None` before the first.
    pub fn applied_through(&self, partition: u32) -> Result<Option<u64>, StoreError> {
        self.inner
            .tree
            .get(keys::applied(partition))
            .map_err(|source| StoreError::Sled {
                what: format!("read applied_through of partition {partition}"),
                source,
            })?
            .map(|v| decode_u64(&v, "applied_through"))
            .transpose()
    }

    /// The highest durable change event id (0: none yet).
    pub fn last_event_id(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// Watches [`Store::last_event_id`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// Writes one batch atomically and flushes it. Blocking.
    pub(crate) fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let tree = &self.inner.tree;
        let assigned_end = {
            let mut next = self
                .inner
                .next_event
                .lock()
                .map_err(|_| StoreError::Poisoned)?;
            let mut batch = sled::Batch::default();
            let mut id = *next;
            for event in &commit.events {
                batch.insert(keys::event(id), prost::Message::encode_to_vec(event));
                id += 1;
            }
            for (k, v) in commit.rows {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            batch.insert(
                keys::applied(commit.partition),
                &commit.applied_through.to_be_bytes(),
            );
            batch.insert(keys::next_event(), &id.to_be_bytes());
            tree.apply_batch(batch).map_err(|source| StoreError::Sled {
                what: format!(
                    "apply the views of partition {} through seq {}",
                    commit.partition, commit.applied_through
                ),
                source,
            })?;
            *next = id;
            id - 1
        };
        // A flush makes every batch applied before it durable, other
        // partitions' included: every id up to `assigned_end` is durable.
        tree.flush().map_err(|source| StoreError::Sled {
            what: format!(
                "flush the views of partition {} through seq {}",
                commit.partition, commit.applied_through
            ),
            source,
        })?;
        self.inner.durable.send_if_modified(|d| {
            let moved = assigned_end > *d;
            *d = (*d).max(assigned_end);
            moved
        });
        Ok(())
    }

    /// The row at `key`.
    pub(crate) fn get<M: prost::Message + Default>(
        &self,
        key: &[u8],
    ) -> Result<Option<M>, StoreError> {
        let value = self
            .inner
            .tree
            .get(key)
            .map_err(|source| StoreError::Sled {
                what: "read a view row".into(),
                source,
            })?;
        value.map(|v| decode_row(&v)).transpose()
    }

    /// Whether a row exists at `key`.
    pub(crate) fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.inner
            .tree
            .contains_key(key)
            .map_err(|source| StoreError::Sled {
                what: "read a view key".into(),
                source,
            })
    }

    /// The keys under `prefix`, at most `max` of them.
    pub(crate) fn keys_under(&self, prefix: &[u8], max: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(prefix).take(max) {
            let (k, _) = item.map_err(|source| StoreError::Sled {
                what: "scan view keys".into(),
                source,
            })?;
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// Up to `limit` rows under `prefix` after the key `after` that `keep`
    /// accepts, in key order. Examines at most [`SCAN_ROWS_MAX`] rows.
    pub(crate) fn page<M: prost::Message + Default>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        mut keep: impl FnMut(&[u8], &M) -> Result<bool, StoreError>,
    ) -> Result<Page<M>, StoreError> {
        let start = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut items: Vec<(Vec<u8>, M)> = Vec::new();
        let mut last_examined: Option<Vec<u8>> = None;
        for (examined, item) in self
            .inner
            .tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .enumerate()
        {
            let (k, v) = item.map_err(|source| StoreError::Sled {
                what: "scan view rows".into(),
                source,
            })?;
            if !k.starts_with(prefix) {
                return Ok(Page { items, next: None });
            }
            if examined >= SCAN_ROWS_MAX {
                // Resume after the last row examined: every row before it
                // was returned or refused.
                let next = last_examined.or_else(|| after.map(<[u8]>::to_vec));
                return Ok(Page { items, next });
            }
            let row: M = decode_row(&v)?;
            if keep(&k, &row)? {
                if items.len() == limit {
                    let next = items.last().map(|(k, _)| k.clone());
                    return Ok(Page { items, next });
                }
                items.push((k.to_vec(), row));
            }
            last_examined = Some(k.to_vec());
        }
        Ok(Page { items, next: None })
    }

    /// Every row under `prefix`, at most `max`; `None` if there are more.
    pub(crate) fn all<M: prost::Message + Default>(
        &self,
        prefix: &[u8],
        max: usize,
    ) -> Result<Option<Vec<M>>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(prefix) {
            let (_, v) = item.map_err(|source| StoreError::Sled {
                what: "scan view rows".into(),
                source,
            })?;
            if out.len() == max {
                return Ok(None);
            }
            out.push(decode_row(&v)?);
        }
        Ok(Some(out))
    }

    /// Up to `limit` durable change events with ids above `after`, in order.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredChange)>, StoreError> {
        let durable = self.last_event_id();
        let mut out = Vec::new();
        if after >= durable {
            return Ok(out);
        }
        let start = keys::event(after.saturating_add(1));
        let end = keys::event(durable);
        for item in self.inner.tree.range(start..=end).take(limit) {
            let (k, v) = item.map_err(|source| StoreError::Sled {
                what: "scan change events".into(),
                source,
            })?;
            let id = keys::event_id(&k).ok_or_else(|| StoreError::Corrupt {
                reason: "a change event key holds no id".into(),
            })?;
            out.push((id, decode_row(&v)?));
        }
        Ok(out)
    }

    /// Every view row (contacts, conversations, timelines, numbers, ledger,
    /// aggregates, savings) by key, without events, indexes and meta: what
    /// [`crate::projector::rows_of`] of the same views gives. For tests and
    /// checks; reads the whole store.
    pub fn rows(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.inner.tree.iter() {
            let (k, v) = item.map_err(|source| StoreError::Sled {
                what: "scan the store".into(),
                source,
            })?;
            if matches!(
                k.first(),
                Some(&keys::META | &keys::EVENT | &keys::CONTACT_NUMBER)
            ) {
                continue;
            }
            out.insert(k.to_vec(), v.to_vec());
        }
        Ok(out)
    }
}

fn decode_u64(v: &[u8], what: &str) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
        reason: format!("{what} is not 8 bytes"),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_row<M: prost::Message + Default>(v: &[u8]) -> Result<M, StoreError> {
    M::decode(v).map_err(|e| StoreError::Corrupt {
        reason: format!("a view row does not decode: {e}"),
    })
}
