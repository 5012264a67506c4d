//! The embedded bus: an in-process durable log on sled 0.34, for the
//! single-machine mode.
//!
//! # On-disk layout (format 1)
//!
//! A bus is a directory `DIR`; the sled database is `DIR/db/`. Numbers are
//! big-endian, so key order is numeric order.
//!
//! In sled's default tree:
//!
//! | key | value |
//! |---|---|
//! | `twinlog/bus/format` | the format, `u32` `1` |
//! | `twinlog/bus/partitions` | partitions per topic, `u32`, fixed at creation |
//!
//! In the tree `twinlog/bus/records`, the only tree that holds records:
//!
//! | key | value |
//! |---|---|
//! | rank `u8` ‖ partition `u32` ‖ offset `u64` (13 bytes) | the record head (below) |
//! | the same 13 bytes ‖ chunk index `u32` (17 bytes) | chunk `i` of a chunked payload: payload bytes `i * 4096 ..`, at most [`CHUNK_BYTES_MAX`] |
//!
//! The rank is [`Topic::rank`]. A record head, version 1:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | head version, `1` |
//! | 8 | `timestamp_ms`, `i64` |
//! | 4 | key length `k`, `u32` (at most [`crate::KEY_BYTES_MAX`]) |
//! | `k` | key |
//! | 4 | payload length `n`, `u32` |
//! | 1 | layout: `0` inline, `1` chunked |
//! | `n` or 0 | the payload if inline |
//!
//! A payload of at most [`INLINE_PAYLOAD_BYTES_MAX`] bytes is inline; a
//! larger one is in `ceil(n / CHUNK_BYTES_MAX)` chunks right after its head
//! in key order, so one range scan reads a partition's records with their
//! chunks. Every sled value is thus under 4.5 KiB, and a sled leaf node
//! (at most 17 entries in sled 0.34) stays far below the ~128 KiB at which
//! sled moves a node to its `blobs/` directory, which it never fsyncs.
//!
//! # Writes and group commit
//!
//! [`Bus::publish`] checks the limits, then queues the publish to one writer
//! thread through a bounded channel ([`PUBLISH_QUEUE_DEPTH_MAX`] publishes,
//! [`PUBLISH_QUEUE_BYTES_MAX`] bytes); a full queue is
//! [`BusError::Overloaded`]. The writer takes every publish waiting (up to
//! [`GROUP_COMMIT_PUBLISHES_MAX`]), applies each as one sled `Batch` (atomic
//! across topics and partitions), then flushes once for all of them, and
//! only then makes the new records visible to readers and answers the
//! publishers. One fsync serves every publish that queued while the last one
//! ran. The writer is a dedicated OS thread, so sled's blocking calls never
//! run on the async runtime; readers scan sled in `spawn_blocking`.
//!
//! **Invariant:** a reader sees only records that are flushed: the durable
//! end of each topic-partition (a `tokio::sync::watch`, which also wakes
//! waiting readers) moves only after the flush.
//!
//! After a storage error the in-memory next offsets may disagree with the
//! disk, so the bus refuses every later publish ([`BusError::Failed`])
//! until it is reopened; opening recovers the next offsets from the last
//! key of each topic-partition.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::{
    check_partition, check_publish, partition_for, Bus, BusError, BusRecord, OutRecord, Position,
    Topic, DEFAULT_TOPIC_PREFIX, PARTITIONS_MAX, READ_BYTES_MAX, READ_RECORDS_MAX,
};

/// Most publishes waiting for the writer; one more is refused with
/// [`BusError::Overloaded`].
pub const PUBLISH_QUEUE_DEPTH_MAX: usize = 1024;

/// Most key and payload bytes of the publishes waiting for the writer.
pub const PUBLISH_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most publishes one flush serves.
pub const GROUP_COMMIT_PUBLISHES_MAX: usize = 256;

/// Payloads up to this size are stored inline in the record head.
pub const INLINE_PAYLOAD_BYTES_MAX: usize = 4096;

/// Size of a payload chunk (the last one may be shorter).
pub const CHUNK_BYTES_MAX: usize = 4096;

/// sled's page cache.
pub const CACHE_BYTES_MAX: u64 = 64 * 1024 * 1024;

const FORMAT: u32 = 1;
const HEAD_VERSION: u8 = 1;
const LAYOUT_INLINE: u8 = 0;
const LAYOUT_CHUNKED: u8 = 1;
const META_FORMAT_KEY: &[u8] = b"twinlog/bus/format";
const META_PARTITIONS_KEY: &[u8] = b"twinlog/bus/partitions";
const RECORDS_TREE: &str = "twinlog/bus/records";
const RECORD_KEY_BYTES: usize = 13;
const CHUNK_KEY_BYTES: usize = 17;

/// How to open an embedded bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Partitions per topic, 1 to [`PARTITIONS_MAX`]. Fixed when the bus is
    /// created; reopening with another count fails.
    pub partitions: u32,
    /// Prefix of topic names ([`Topic::name`]); used only in logs here.
    pub prefix: String,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            partitions: 8,
            prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
        }
    }
}

/// Counters of an embedded bus since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Publishes that wrote records and were acknowledged.
    pub publishes: u64,
    /// Records acknowledged.
    pub records: u64,
    /// sled flushes (fsyncs) the writer made.
    pub flushes: u64,
}

/// The in-process durable bus. See the module documentation for the
/// layout and the write path.
pub struct EmbeddedBus {
    dir: PathBuf,
    prefix: String,
    shared: Arc<Shared>,
    tree: sled::Tree,
    queue: Option<mpsc::Sender<Job>>,
    queue_bytes: Arc<Semaphore>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer shares with readers.
struct Shared {
    partitions: u32,
    /// The durable end (next offset) of each topic-partition, at
    /// [`Shared::slot`]; moved only after a flush.
    ends: Vec<watch::Sender<u64>>,
    failed: AtomicBool,
    publishes: AtomicU64,
    records: AtomicU64,
    flushes: AtomicU64,
}

impl Shared {
    fn slot(&self, topic: Topic, partition: u32) -> usize {
        // Both factors are small (rank < 5, partitions <= PARTITIONS_MAX).
        usize::from(topic.rank()) * self.partitions as usize + partition as usize
    }
}

/// One publish waiting for the writer.
struct Job {
    records: Vec<OutRecord>,
    reply: oneshot::Sender<Result<Vec<Position>, BusError>>,
    /// Released when the writer is done with the job.
    _bytes: OwnedSemaphorePermit,
}

impl EmbeddedBus {
    /// Opens the bus in `dir`, creating it with `config.partitions` if it
    /// does not exist. Blocking: call it at startup or in `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>, config: EmbeddedConfig) -> Result<EmbeddedBus, BusError> {
        let dir = dir.as_ref().to_path_buf();
        if config.partitions == 0 || config.partitions > PARTITIONS_MAX {
            return Err(BusError::InvalidConfig {
                detail: format!(
                    "partitions must be 1 to {PARTITIONS_MAX}, not {}",
                    config.partitions
                ),
            });
        }
        let path = dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES_MAX)
            .open()
            .map_err(|source| BusError::Open {
                path: path.clone(),
                source: Arc::new(source),
            })?;
        let partitions = Self::check_meta(&db, &dir, config.partitions)?;
        let tree = db
            .open_tree(RECORDS_TREE)
            .map_err(|e| BusError::storage(format!("open tree {RECORDS_TREE}"), e))?;

        let mut next = Vec::with_capacity(Topic::ALL.len() * partitions as usize);
        for topic in Topic::ALL {
            for partition in 0..partitions {
                next.push(recover_end(&tree, topic, partition)?);
            }
        }
        let shared = Arc::new(Shared {
            partitions,
            ends: next.iter().map(|&end| watch::Sender::new(end)).collect(),
            failed: AtomicBool::new(false),
            publishes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        let records_total: u64 = next.iter().sum();
        tracing::info!(
            message = "opened embedded bus",
            dir = %dir.display(),
            partitions,
            records = records_total
        );

        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE_DEPTH_MAX);
        let writer = Writer {
            db,
            tree: tree.clone(),
            shared: Arc::clone(&shared),
            next,
        };
        let writer = std::thread::Builder::new()
            .name("twinlog-bus-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| BusError::Io {
                action: "start the bus writer thread",
                source: Arc::new(e),
            })?;

        Ok(EmbeddedBus {
            dir,
            prefix: config.prefix,
            shared,
            tree,
            queue: Some(queue),
            queue_bytes: Arc::new(Semaphore::new(PUBLISH_QUEUE_BYTES_MAX)),
            writer: Some(writer),
        })
    }

    /// Writes the format and partition count of a new bus, or checks those
    /// of an existing one. Returns the partition count.
    fn check_meta(db: &sled::Db, dir: &Path, requested: u32) -> Result<u32, BusError> {
        let format = db
            .get(META_FORMAT_KEY)
            .map_err(|e| BusError::storage("read the bus format", e))?;
        let Some(format) = format else {
            let mut batch = sled::Batch::default();
            batch.insert(META_FORMAT_KEY, &FORMAT.to_be_bytes());
            batch.insert(META_PARTITIONS_KEY, &requested.to_be_bytes());
            db.apply_batch(batch)
                .map_err(|e| BusError::storage("write the bus format", e))?;
            db.flush()
                .map_err(|e| BusError::storage("flush the bus format", e))?;
            return Ok(requested);
        };
        if format.as_ref() != FORMAT.to_be_bytes() {
            return Err(BusError::UnknownFormat {
                dir: dir.to_path_buf(),
                found: format!("{:02x?}", format.as_ref()),
                expected: FORMAT,
            });
        }
        let stored = db
            .get(META_PARTITIONS_KEY)
            .map_err(|e| BusError::storage("read the bus partition count", e))?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| BusError::UnknownFormat {
                dir: dir.to_path_buf(),
                found: "1 without a partition count".to_owned(),
                expected: FORMAT,
            })?;
        if stored != requested {
            return Err(BusError::PartitionCountMismatch {
                dir: dir.to_path_buf(),
                stored,
                requested,
            });
        }
        Ok(stored)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prefix of topic names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            publishes: self.shared.publishes.load(Ordering::Relaxed),
            records: self.shared.records.load(Ordering::Relaxed),
            flushes: self.shared.flushes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EmbeddedBus {
    /// Closes the queue and joins the writer, which first finishes every
    /// publish already queued.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(message = "the bus writer thread panicked", dir = %self.dir.display());
            }
        }
    }
}

impl Bus for EmbeddedBus {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<Position>, BusError> {
        check_publish(&records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(BusError::Failed);
        }
        let bytes: usize = records.iter().map(|r| r.key.len() + r.payload.len()).sum();
        // check_publish bounds bytes by PUBLISH_BYTES_MAX, which fits a u32.
        let permits = u32::try_from(bytes.max(1)).map_err(|_| BusError::PublishTooLarge {
            bytes,
            limit: crate::PUBLISH_BYTES_MAX,
        })?;
        let permit = Arc::clone(&self.queue_bytes)
            .try_acquire_many_owned(permits)
            .map_err(|_| BusError::Overloaded {
                what: "the publish queue's byte budget",
            })?;
        let queue = self.queue.as_ref().ok_or(BusError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .try_send(Job {
                records,
                reply,
                _bytes: permit,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::Overloaded {
                    what: "the publish queue",
                },
                mpsc::error::TrySendError::Closed(_) => BusError::Closed,
            })?;
        answer.await.map_err(|_| BusError::Closed)?
    }

    fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    async fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<BusRecord>, BusError> {
        check_partition(topic, partition, self.shared.partitions)?;
        let max = max.min(READ_RECORDS_MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let ends = &self.shared.ends[self.shared.slot(topic, partition)];
        let mut end = *ends.borrow();
        if end <= offset {
            if wait.is_zero() {
                return Ok(Vec::new());
            }
            let mut rx = ends.subscribe();
            let waited = tokio::time::timeout(wait, async move {
                rx.wait_for(|&end| end > offset).await.map(|end| *end)
            })
            .await;
            end = match waited {
                Ok(Ok(end)) => end,
                Ok(Err(_)) => return Err(BusError::Closed),
                Err(_) => return Ok(Vec::new()),
            };
        }
        // max <= READ_RECORDS_MAX, which fits a u64.
        let to = end.min(offset.saturating_add(max as u64));
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || scan(&tree, topic, partition, offset, to))
            .await
            .map_err(|_| BusError::Closed)?
    }

    async fn end_offset(&self, topic: Topic, partition: u32) -> Result<u64, BusError> {
        check_partition(topic, partition, self.shared.partitions)?;
        Ok(*self.shared.ends[self.shared.slot(topic, partition)].borrow())
    }
}

/// The single writer: owns the next offsets and all writes to the records
/// tree.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    shared: Arc<Shared>,
    /// Next offset of each topic-partition, at [`Shared::slot`]; ahead of
    /// the durable ends between apply and flush.
    next: Vec<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(GROUP_COMMIT_PUBLISHES_MAX);
        while let Some(job) = rx.blocking_recv() {
            group.push(job);
            while group.len() < GROUP_COMMIT_PUBLISHES_MAX {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
        }
        tracing::debug!(message = "bus writer stopped");
    }

    /// Applies each job of `group` as one sled batch, flushes once, then
    /// moves the durable ends and answers every job.
    fn commit(&mut self, group: &mut Vec<Job>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for job in group.drain(..) {
                let _ = job.reply.send(Err(BusError::Failed));
            }
            return;
        }
        let mut answers: Vec<Vec<Position>> = Vec::with_capacity(group.len());
        let mut outcome = Ok(());
        for job in group.iter() {
            match self.apply(&job.records) {
                Ok(positions) => answers.push(positions),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            outcome = self
                .db
                .flush()
                .map(|_| ())
                .map_err(|e| BusError::storage("flush published records", e));
            self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = outcome {
            // The next offsets may now disagree with the disk.
            self.shared.failed.store(true, Ordering::Release);
            tracing::error!(message = "bus write failed; refusing further publishes", %error);
            for job in group.drain(..) {
                let _ = job.reply.send(Err(error.clone()));
            }
            return;
        }
        for (slot, end) in self.shared.ends.iter().zip(&self.next) {
            slot.send_if_modified(|durable| {
                let moved = *durable != *end;
                *durable = *end;
                moved
            });
        }
        for (job, positions) in group.drain(..).zip(answers) {
            self.shared.publishes.fetch_add(1, Ordering::Relaxed);
            self.shared
                .records
                .fetch_add(positions.len() as u64, Ordering::Relaxed);
            // A publisher that went away still had its records written.
            let _ = job.reply.send(Ok(positions));
        }
    }

    /// Writes one publish as one sled batch, not yet flushed.
    fn apply(&mut self, records: &[OutRecord]) -> Result<Vec<Position>, BusError> {
        let partitions = self.shared.partitions;
        let mut batch = sled::Batch::default();
        let mut positions = Vec::with_capacity(records.len());
        for record in records {
            let partition = partition_for(&record.key, partitions);
            let slot = self.shared.slot(record.topic, partition);
            let offset = self.next[slot];
            self.next[slot] += 1;
            let key = record_key(record.topic, partition, offset);
            let inline = record.payload.len() <= INLINE_PAYLOAD_BYTES_MAX;
            batch.insert(&key[..], encode_head(record, inline));
            if !inline {
                for (index, chunk) in record.payload.chunks(CHUNK_BYTES_MAX).enumerate() {
                    // A payload has at most PAYLOAD_BYTES_MAX / CHUNK_BYTES_MAX chunks.
                    batch.insert(&chunk_key(&key, index as u32)[..], chunk);
                }
            }
            positions.push(Position {
                topic: record.topic,
                partition,
                offset,
            });
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| BusError::storage("write a publish batch", e))?;
        Ok(positions)
    }
}

fn record_key(topic: Topic, partition: u32, offset: u64) -> [u8; RECORD_KEY_BYTES] {
    let mut key = [0u8; RECORD_KEY_BYTES];
    key[0] = topic.rank();
    key[1..5].copy_from_slice(&partition.to_be_bytes());
    key[5..13].copy_from_slice(&offset.to_be_bytes());
    key
}

fn chunk_key(record_key: &[u8; RECORD_KEY_BYTES], index: u32) -> [u8; CHUNK_KEY_BYTES] {
    let mut key = [0u8; CHUNK_KEY_BYTES];
    key[..RECORD_KEY_BYTES].copy_from_slice(record_key);
    key[RECORD_KEY_BYTES..].copy_from_slice(&index.to_be_bytes());
    key
}

fn encode_head(record: &OutRecord, inline: bool) -> Vec<u8> {
    let inline_bytes = if inline { record.payload.len() } else { 0 };
    let mut head = Vec::with_capacity(1 + 8 + 4 + record.key.len() + 4 + 1 + inline_bytes);
    head.push(HEAD_VERSION);
    head.extend_from_slice(&record.timestamp_ms.to_be_bytes());
    // Keys and payloads are bounded by KEY_BYTES_MAX and PAYLOAD_BYTES_MAX.
    head.extend_from_slice(&(record.key.len() as u32).to_be_bytes());
    head.extend_from_slice(&record.key);
    head.extend_from_slice(&(record.payload.len() as u32).to_be_bytes());
    if inline {
        head.push(LAYOUT_INLINE);
        head.extend_from_slice(&record.payload);
    } else {
        head.push(LAYOUT_CHUNKED);
    }
    head
}

/// A decoded record head.
struct Head {
    timestamp_ms: i64,
    key: Vec<u8>,
    payload_bytes: usize,
    /// The payload if inline, else `None`.
    inline: Option<Vec<u8>>,
}

fn decode_head(value: &[u8]) -> Result<Head, String> {
    let mut rest = value;
    let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err(format!("head ends inside the {what}"));
        }
        let (field, tail) = rest.split_at(n);
        rest = tail;
        Ok(field)
    };
    let version = take(1, "version")?[0];
    if version != HEAD_VERSION {
        return Err(format!("unknown head version {version}"));
    }
    let timestamp_ms =
        i64::from_be_bytes(take(8, "timestamp")?.try_into().map_err(|_| "timestamp")?);
    let key_bytes = u32::from_be_bytes(
        take(4, "key length")?
            .try_into()
            .map_err(|_| "key length")?,
    );
    let key = take(key_bytes as usize, "key")?.to_vec();
    let payload_bytes = u32::from_be_bytes(
        take(4, "payload length")?
            .try_into()
            .map_err(|_| "payload length")?,
    ) as usize;
    let layout = take(1, "layout")?[0];
    let inline = match layout {
        LAYOUT_INLINE => Some(take(payload_bytes, "payload")?.to_vec()),
        LAYOUT_CHUNKED => None,
        other => return Err(format!("unknown payload layout {other}")),
    };
    if !rest.is_empty() {
        return Err(format!("{} bytes after the head", rest.len()));
    }
    Ok(Head {
        timestamp_ms,
        key,
        payload_bytes,
        inline,
    })
}

/// The next offset of a topic-partition on disk: one past the offset of its
/// last key (a record head or one of its chunks).
fn recover_end(tree: &sled::Tree, topic: Topic, partition: u32) -> Result<u64, BusError> {
    let prefix = &record_key(topic, partition, 0)[..5];
    let last = tree
        .scan_prefix(prefix)
        .next_back()
        .transpose()
        .map_err(|e| {
            BusError::storage(format!("find the end of {topic} partition {partition}"), e)
        })?;
    let Some((key, _)) = last else {
        return Ok(0);
    };
    let offset = key
        .get(5..RECORD_KEY_BYTES)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| BusError::Corrupt {
            topic,
            partition,
            offset: 0,
            detail: format!("short key {:02x?}", key.as_ref()),
        })?;
    Ok(offset + 1)
}

/// Reads the records `from..to` of a topic-partition, all of which are
/// durable, stopping early at [`READ_BYTES_MAX`] payload bytes (after at
/// least one record).
fn scan(
    tree: &sled::Tree,
    topic: Topic,
    partition: u32,
    from: u64,
    to: u64,
) -> Result<Vec<BusRecord>, BusError> {
    let corrupt = |offset: u64, detail: String| BusError::Corrupt {
        topic,
        partition,
        offset,
        detail,
    };
    let storage =
        |e| BusError::storage(format!("read records of {topic} partition {partition}"), e);
    let start = record_key(topic, partition, from);
    let end = record_key(topic, partition, to);
    let mut entries = tree.range(start..end);
    let mut records = Vec::new();
    let mut payload_bytes_total: usize = 0;
    let mut offset = from;
    while offset < to {
        let Some(entry) = entries.next() else {
            return Err(corrupt(offset, "record missing".to_owned()));
        };
        let (key, value) = entry.map_err(storage)?;
        if key.as_ref() != record_key(topic, partition, offset) {
            return Err(corrupt(
                offset,
                format!("found key {:02x?} instead", key.as_ref()),
            ));
        }
        let head = decode_head(&value).map_err(|d| corrupt(offset, d))?;
        if !records.is_empty() && payload_bytes_total + head.payload_bytes > READ_BYTES_MAX {
            break;
        }
        let payload = match head.inline {
            Some(payload) => payload,
            None => {
                let mut payload = Vec::with_capacity(head.payload_bytes);
                let chunks = head.payload_bytes.div_ceil(CHUNK_BYTES_MAX);
                let head_key = record_key(topic, partition, offset);
                for index in 0..chunks {
                    let Some(entry) = entries.next() else {
                        return Err(corrupt(offset, format!("chunk {index} missing")));
                    };
                    let (key, chunk) = entry.map_err(storage)?;
                    if key.as_ref() != chunk_key(&head_key, index as u32) {
                        return Err(corrupt(offset, format!("chunk {index} missing")));
                    }
                    payload.extend_from_slice(&chunk);
                }
                if payload.len() != head.payload_bytes {
                    return Err(corrupt(
                        offset,
                        format!(
                            "chunks hold {} bytes, the head says {}",
                            payload.len(),
                            head.payload_bytes
                        ),
                    ));
                }
                payload
            }
        };
        payload_bytes_total += payload.len();
        records.push(BusRecord {
            topic,
            partition,
            offset,
            key: head.key,
            payload,
            timestamp_ms: head.timestamp_ms,
        });
        offset += 1;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips_and_rejects_garbage() {
        let record = OutRecord {
            topic: Topic::Inbound,
            key: b"106540352242922".to_vec(),
            payload: b"{\"x\":1}".to_vec(),
            timestamp_ms: 1_764_000_000_123,
        };
        let head = decode_head(&encode_head(&record, true)).expect("decodes");
        assert_eq!(head.timestamp_ms, record.timestamp_ms);
        assert_eq!(head.key, record.key);
        assert_eq!(head.inline.as_deref(), Some(&record.payload[..]));
        let chunked = decode_head(&encode_head(&record, false)).expect("decodes");
        assert_eq!(chunked.inline, None);
        assert_eq!(chunked.payload_bytes, record.payload.len());

        let bytes = encode_head(&record, true);
        for cut in 0..bytes.len() {
            assert!(decode_head(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert!(decode_head(&bad).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(decode_head(&long).is_err());
    }

    #[test]
    fn keys_sort_by_topic_partition_offset_with_chunks_after_their_head() {
        let a = record_key(Topic::Sync, 1, 255);
        let b = record_key(Topic::Sync, 1, 256);
        let c = record_key(Topic::Sync, 2, 0);
        let d = record_key(Topic::Inbound, 0, 0);
        let a_chunk = chunk_key(&a, 7);
        assert!(a[..] < a_chunk[..] && a_chunk[..] < b[..]);
        assert!(b < c && c < d);
    }
}
