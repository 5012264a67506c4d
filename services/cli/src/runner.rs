//! The engine runner: one audit shard per bus partition. A shard reads its
//! partition of the five input topics, merges them by (record timestamp,
//! topic rank, offset), folds each batch into its audit log with the input
//! offsets in the same sled batch as the records, and then publishes the new
//! records to the audit topic, whose partition `p` is shard `p`'s changelog
//! (offset `n` = record `seq` `n`).
//!
//! **Invariant:** the offsets a shard resumes from are the ones stored with
//! its last append, so a kill -9 at any point neither loses nor repeats an
//! input: inputs after the stored offsets produced no record yet.
//!
//! **Invariant:** the audit topic's partition `p` never runs ahead of shard
//! `p`'s log, and holds its records at offset = seq: before publishing, the
//! shard asks the bus where the partition ends and publishes from there.
//!
//! # Fencing (Kafka)
//!
//! On Kafka a shard publishes through its own transactional producer
//! ([`ShardProducer`], `transactional.id = PREFIX + "shard-" + p`), which
//! the Supervisor initialises *before* it opens (or restores) the shard:
//! that fences every earlier owner and aborts a transaction one left open,
//! so the committed topics are final when the new owner reads their ends.
//! A publish is one transaction: the key material changed since the last
//! one (keys topic), then the audit records the topic lacks (audit topic,
//! up to [`AUDIT_TXN_RECORDS_MAX`] per transaction; the key material in
//! the first), so keys and the records that need them become visible
//! together. Every reader reads `read_committed`, and the audit topic's
//! offsets are logical (the seq, carried in a header, see
//! `twinlog_bus::txn`). A fenced producer's next call fails with
//! [`RunnerError::Fenced`]: the shard stops at once (no further append),
//! counts `twinlog_engine_fenced_total`, and the Supervisor releases it;
//! its local copy may now hold records no transaction committed.
//!
//! Before its first publish after an open, a shard compares its record at
//! the topic's last committed seq with the topic's: a local copy that
//! forked from the topic (a zombie's records beyond what it committed,
//! while another owner committed others) is never published
//! ([`RunnerError::Forked`]); with key escrow the open already set such a
//! copy aside and restored the topic's history (`crate::restore`).
//!
//! ## Crash windows
//!
//! - *kill -9 after the local append, before or during the commit:* the
//!   open transaction is aborted by the next owner's `init_transactions`
//!   (or by the broker after `transaction.timeout.ms`); readers never saw
//!   it. The local log is ahead of the committed topic with the input
//!   offsets stored with its records. Restarted on the same disk, the shard
//!   finds the topic's logical end (last committed seq + 1) and republishes
//!   the local records from there, in a new transaction: exactly once.
//!   Taken over by an engine without that disk, the shard is restored from
//!   the committed topics; its input offsets come from the committed
//!   records, so the inputs of the lost records are folded again, once.
//! - *kill -9 after the commit, before the next batch:* local log and topic
//!   agree; the next owner resumes from the local offsets or the restored
//!   ones; nothing is published twice, since publishing starts at the
//!   topic's end.
//! - *commit outcome unknown (a timeout):* the shard forgets where the
//!   topic ends and asks again before its next publish.
//! - *a zombie:* it appends at most the batch it was folding when it was
//!   paused; its next transactional call is fenced and it stops. If the
//!   shard comes back to it, the open sees the fork (or, if the topic is
//!   behind but agrees, publishes the records, which are a valid
//!   continuation of the committed history).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sha2::Digest;
use tokio::sync::watch;
use twinlog_bus::{
    key_for_partition, Bus, BusError, BusRecord, OutRecord, SeqRecord, ShardProducer, Topic,
};
use twinlog_proto::v1::{ingest_event::Kind, ClockTick, Envelope, IngestEvent, Source, Unknown};
use twinlog_vault::EscrowEntry;

use crate::escrow::{Escrow, EscrowError};
use crate::pipeline::{PipelineError, Twinlog};
use crate::AppendReport;

/// Inputs folded per append (one fsync). At most
/// [`APPEND_BATCH_INPUTS_MAX`](crate::APPEND_BATCH_INPUTS_MAX), so the
/// offsets commit with every record they produced.
pub const RUN_BATCH_INPUTS_MAX: usize = 4_096;
/// Records fetched per topic per read.
pub const READ_RECORDS_PER_TOPIC_MAX: usize = 1_024;
/// How long an idle shard waits on the bus before it looks again.
pub const IDLE_WAIT_MS: u64 = 20;
/// Audit records published per bus publish.
pub const AUDIT_PUBLISH_RECORDS_MAX: usize = 1_024;
/// Most audit records in one transaction of a shard's producer (Kafka):
/// a commit costs round trips to the transaction coordinator, so one
/// transaction carries a whole batch's records.
pub const AUDIT_TXN_RECORDS_MAX: usize = 16_384;
/// How long a failing bus call is retried (a broker restart, a leader
/// election) before the shard gives up and the process exits, to be
/// restarted from its stored offsets.
pub const BUS_RETRY_MS_MAX: u64 = 300_000;
/// Default interval between the clock ticks a shard publishes.
pub const TICK_INTERVAL_MS_DEFAULT: u64 = 60_000;

const _: () = assert!(RUN_BATCH_INPUTS_MAX <= crate::APPEND_BATCH_INPUTS_MAX);

/// Side key under which a shard stores the next offset of an input topic.
pub(crate) fn offset_key(topic: Topic) -> Vec<u8> {
    format!("offset/{}", topic.suffix()).into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("failed to open audit shard {partition} at {dir}")]
    Open {
        partition: u32,
        dir: PathBuf,
        #[source]
        source: PipelineError,
    },
    #[error("audit shard {partition} failed to append")]
    Append {
        partition: u32,
        #[source]
        source: PipelineError,
    },
    #[error(
        "audit shard {partition}: stored offset of {topic} is corrupt ({len} bytes, expected 8)"
    )]
    CorruptOffset {
        partition: u32,
        topic: Topic,
        len: usize,
    },
    #[error("audit shard {partition}: bus call failed after {attempts} attempts: {what}")]
    Bus {
        partition: u32,
        what: String,
        attempts: u32,
        #[source]
        source: BusError,
    },
    #[error(
        "audit shard {partition}: the audit topic holds {published} records but the local log only {size}; \
         the local shard is behind its changelog (configure the master key (--master-key-file) so the \
         engine restores it from the topics, or point the engine at the directory that produced this topic)"
    )]
    AuditAhead {
        partition: u32,
        published: u64,
        size: u64,
    },
    #[error("shard {partition} was taken over by another engine: fenced")]
    Fenced { partition: u32 },
    #[error(
        "audit shard {partition}: the local record at seq {seq} differs from the audit topic's: \
         the local copy forked from the committed history (a fenced engine's records); it is not published"
    )]
    Forked { partition: u32, seq: u64 },
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    #[error("audit shard {partition}: cannot restore it from the topics: {reason}")]
    Restore { partition: u32, reason: String },
    #[error("audit shard {partition}: failed to restore it in {dir}")]
    RestoreIo {
        partition: u32,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one [`Shard::step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub report: AppendReport,
    /// Bus records that did not decode as an ingest event (recorded as
    /// `unknown` with their hash).
    pub undecodable: u64,
    pub audit_published: u64,
}

/// The runner's Prometheus metrics, shared by its shards.
#[derive(Clone)]
pub struct RunnerMetrics {
    inputs: Family<Vec<(String, String)>, Counter>,
    records: Counter,
    outcomes: Family<Vec<(String, String)>, Counter>,
    undecodable: Counter,
    audit_published: Counter,
    batch_seconds: Histogram,
    tree_size: Family<Vec<(String, String)>, Gauge>,
    lag: Family<Vec<(String, String)>, Gauge>,
    shards_owned: Gauge,
    pub(crate) restores: Counter,
    pub(crate) restored_records: Counter,
    pub(crate) fenced: Counter,
    pub(crate) forks_set_aside: Counter,
}

impl RunnerMetrics {
    pub fn new(registry: &mut Registry) -> RunnerMetrics {
        let m = RunnerMetrics {
            inputs: Family::default(),
            records: Counter::default(),
            outcomes: Family::default(),
            undecodable: Counter::default(),
            audit_published: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            tree_size: Family::default(),
            lag: Family::default(),
            shards_owned: Gauge::default(),
            restores: Counter::default(),
            restored_records: Counter::default(),
            fenced: Counter::default(),
            forks_set_aside: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("twinlog_engine");
        r.register(
            "restores",
            "Audit shards rebuilt from the audit and keys topics",
            m.restores.clone(),
        );
        r.register(
            "restored_records",
            "Audit records re-appended from the audit topic by restores",
            m.restored_records.clone(),
        );
        r.register(
            "fenced",
            "Audit shards stopped because another engine took them over (their producer was fenced)",
            m.fenced.clone(),
        );
        r.register(
            "forks_set_aside",
            "Local shard copies that forked from the audit topic's committed history, set aside at open",
            m.forks_set_aside.clone(),
        );
        r.register(
            "inputs",
            "Bus records folded, by input topic",
            m.inputs.clone(),
        );
        r.register("records", "Audit records appended", m.records.clone());
        r.register(
            "outcomes",
            "Inputs by outcome: appended, duplicate, rejected, idle",
            m.outcomes.clone(),
        );
        r.register(
            "undecodable",
            "Bus records that were not ingest events, recorded as unknown",
            m.undecodable.clone(),
        );
        r.register(
            "audit_published",
            "Audit records published to the audit topic",
            m.audit_published.clone(),
        );
        r.register(
            "batch_seconds",
            "Time to fold and durably append one batch",
            m.batch_seconds.clone(),
        );
        r.register(
            "tree_size",
            "Records in each audit shard",
            m.tree_size.clone(),
        );
        r.register(
            "shards_owned",
            "Audit shards this process folds now",
            m.shards_owned.clone(),
        );
        r.register(
            "lag_records",
            "Input records on the bus not yet folded, by shard",
            m.lag.clone(),
        );
        m
    }

    pub fn set_shards_owned(&self, n: usize) {
        self.shards_owned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn shard_label(partition: u32) -> Vec<(String, String)> {
        vec![("shard".to_owned(), partition.to_string())]
    }
}

/// One audit shard: the log of one bus partition and its read positions.
pub struct Shard {
    partition: u32,
    twinlog: Twinlog,
    /// Next offset to fold, per input topic (index = rank).
    next: [u64; 5],
    /// Fetched, not yet folded records, per input topic.
    buffered: [VecDeque<BusRecord>; 5],
    /// Whether the last fetch of a topic filled its limit: more may be
    /// waiting, so the merge must not run past that topic's buffer.
    more: [bool; 5],
    /// Records of this shard known to be on the audit topic.
    audit_published: Option<u64>,
    publish_audit: bool,
    /// Where the shard's key material goes before its records are
    /// published, with the tree size whose checkpoint the escrow holds.
    escrow: Option<(Arc<Escrow>, u64)>,
    /// A tree size whose records are all on the audit topic and whose
    /// checkpoint the next escrow publish carries.
    checkpoint_due: Option<u64>,
    /// On Kafka: the shard's transactional producer; every publish of key
    /// material and audit records is one transaction of it.
    producer: Option<Arc<ShardProducer>>,
    /// Whether the local copy was checked against the topic's last
    /// committed record since the open.
    checked: bool,
}

impl Shard {
    /// Opens (or creates) the shard of `partition` in `dir`, resuming from
    /// its stored offsets.
    pub fn open(dir: &Path, partition: u32, publish_audit: bool) -> Result<Shard, RunnerError> {
        let open_error = |source| RunnerError::Open {
            partition,
            dir: dir.to_path_buf(),
            source,
        };
        let twinlog = Twinlog::open_or_init(dir, &mut |_, _| {}).map_err(open_error)?;
        let mut next = [0u64; 5];
        for topic in Topic::INPUTS {
            if let Some(bytes) = twinlog.side_get(&offset_key(topic)).map_err(open_error)? {
                let raw: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| RunnerError::CorruptOffset {
                            partition,
                            topic,
                            len: bytes.len(),
                        })?;
                next[usize::from(topic.rank())] = u64::from_be_bytes(raw);
            }
        }
        tracing::info!(
            message = "audit shard opened",
            partition,
            tree_size = twinlog.log().size(),
            ?next
        );
        Ok(Shard {
            partition,
            twinlog,
            next,
            buffered: Default::default(),
            more: [false; 5],
            audit_published: None,
            publish_audit,
            escrow: None,
            checkpoint_due: None,
            producer: None,
            checked: false,
        })
    }

    /// Escrows the shard's key material from now on: everything at the next
    /// publish (the signing key and a full snapshot of the vault), then what
    /// changes, always before the records that need it.
    pub fn with_escrow(mut self, escrow: Arc<Escrow>) -> Shard {
        self.twinlog.vault_mut().track_changes();
        self.escrow = Some((escrow, 0));
        self
    }

    /// Publishes through `producer` (Kafka): key material and audit records
    /// in transactions that a newer owner fences.
    pub fn with_producer(mut self, producer: Arc<ShardProducer>) -> Shard {
        self.producer = Some(producer);
        self
    }

    /// Crypto-shreds a customer of this shard (see [`Twinlog::forget`]);
    /// the next publish tombstones the key on the keys topic before it
    /// publishes the erasure record.
    pub fn forget(&mut self, identity: &str) -> Result<Option<u64>, RunnerError> {
        let partition = self.partition;
        self.twinlog
            .forget(identity)
            .map_err(|source| RunnerError::Append { partition, source })
    }

    /// Publishes what the shard owes the keys and audit topics, now.
    pub async fn publish<B: Bus>(&mut self, bus: &B) -> Result<StepReport, RunnerError> {
        let mut step = StepReport::default();
        self.publish_audit(bus, None, &mut step).await?;
        Ok(step)
    }

    /// Publishes the key material changed since the last call (all of it
    /// the first time), and the checkpoint of records already on the audit
    /// topic.
    async fn publish_escrow(&mut self) -> Result<(), RunnerError> {
        let Some((escrow, _)) = &self.escrow else {
            return Ok(());
        };
        let escrow = Arc::clone(escrow);
        let partition = self.partition;
        let Some((entries, due)) = self.take_escrow_entries()? else {
            return Ok(());
        };
        if let Err(error) = escrow.publish(partition, &entries).await {
            // What was taken may not be on the topic: send everything again
            // next time.
            self.escrow_failed(due);
            return Err(error.into());
        }
        self.escrow_done(due);
        Ok(())
    }

    /// What was taken may not be on the topic: send everything again next
    /// time.
    fn escrow_failed(&mut self, due: Option<u64>) {
        if self.escrow.is_some() {
            self.twinlog.vault_mut().track_changes();
            self.checkpoint_due = due;
        }
    }

    fn escrow_done(&mut self, due: Option<u64>) {
        if let (Some(size), Some((_, escrowed))) = (due, &mut self.escrow) {
            *escrowed = size;
        }
    }

    /// The key material changed since the last call (all of it the first
    /// time) and the due checkpoint, or `None` if there is nothing to send.
    #[allow(clippy::type_complexity)]
    fn take_escrow_entries(
        &mut self,
    ) -> Result<Option<(Vec<EscrowEntry>, Option<u64>)>, RunnerError> {
        if self.escrow.is_none() {
            return Ok(None);
        }
        let partition = self.partition;
        let append_error = |source: PipelineError| RunnerError::Append { partition, source };
        let changes = self
            .twinlog
            .vault_mut()
            .take_changes()
            .map_err(|e| append_error(e.into()))?;
        let mut entries = changes.entries;
        if changes.snapshot {
            // A full snapshot: the signing key goes with it.
            let signer = self
                .twinlog
                .log()
                .signer_key()
                .map_err(|e| append_error(e.into()))?;
            entries.push(EscrowEntry::signer(signer));
        }
        let due = self.checkpoint_due.take();
        if let Some(size) = due {
            if let Some(note) = self
                .twinlog
                .log()
                .checkpoint_at(size)
                .map_err(|e| append_error(e.into()))?
            {
                entries.push(EscrowEntry::Checkpoint(note));
            }
        }
        if entries.is_empty() {
            // Nothing taken but the checkpoint, which had no note.
            return Ok(None);
        }
        Ok(Some((entries, due)))
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn twinlog(&self) -> &Twinlog {
        &self.twinlog
    }

    /// How many customer keys the shard's vault has issued.
    pub fn twinlog_ratchet_index(&self) -> u64 {
        self.twinlog.vault().ratchet_index()
    }

    /// The next offset to fold, per input topic in rank order.
    pub fn offsets(&self) -> [u64; 5] {
        self.next
    }

    /// Fetches what the bus has for the topics whose buffer ran dry.
    /// Returns the number of records fetched.
    async fn fetch<B: Bus>(&mut self, bus: &B, wait: Duration) -> Result<usize, RunnerError> {
        let mut fetched = 0;
        for topic in Topic::INPUTS {
            let i = usize::from(topic.rank());
            if !self.buffered[i].is_empty() {
                continue;
            }
            let offset = self.next[i] + self.buffered[i].len() as u64;
            let records = retry(self.partition, "read an input topic", || {
                bus.read(
                    topic,
                    self.partition,
                    offset,
                    READ_RECORDS_PER_TOPIC_MAX,
                    wait,
                )
            })
            .await?;
            self.more[i] = records.len() >= READ_RECORDS_PER_TOPIC_MAX;
            fetched += records.len();
            self.buffered[i].extend(records);
        }
        Ok(fetched)
    }

    /// Takes up to `max` buffered records in merge order: smallest
    /// (timestamp, rank, offset) first, each topic in offset order. Stops
    /// when a topic that may hold more records runs dry, so that a topic
    /// read in part is never overtaken by later records of another.
    fn merge(&mut self, max: usize) -> Vec<BusRecord> {
        let mut out = Vec::new();
        while out.len() < max {
            if (0..5).any(|i| self.buffered[i].is_empty() && self.more[i]) {
                break;
            }
            let head = (0..5)
                .filter_map(|i| {
                    self.buffered[i]
                        .front()
                        .map(|r| ((r.timestamp_ms, i, r.offset), i))
                })
                .min();
            let Some((_, i)) = head else { break };
            if let Some(record) = self.buffered[i].pop_front() {
                out.push(record);
            }
        }
        out
    }

    /// One cycle: fetch, merge, fold and append one batch, publish the new
    /// audit records. Waits up to `wait` when there is nothing to do.
    pub async fn step<B: Bus>(
        &mut self,
        bus: &B,
        wait: Duration,
        metrics: Option<&RunnerMetrics>,
    ) -> Result<StepReport, RunnerError> {
        let mut step = StepReport::default();
        self.publish_audit(bus, metrics, &mut step).await?;
        if self.buffered.iter().all(VecDeque::is_empty) {
            // Nothing buffered: look without waiting, then wait if idle.
            if self.fetch(bus, Duration::ZERO).await? == 0 {
                self.fetch(bus, wait / 5).await?;
            }
        } else {
            self.fetch(bus, Duration::ZERO).await?;
        }
        let batch = self.merge(RUN_BATCH_INPUTS_MAX);
        if batch.is_empty() {
            return Ok(step);
        }
        let started = std::time::Instant::now();
        let mut next = self.next;
        let mut inputs = Vec::with_capacity(batch.len());
        for record in &batch {
            next[usize::from(record.topic.rank())] = record.offset + 1;
            let event = match <IngestEvent as prost::Message>::decode(record.payload.as_slice()) {
                Ok(event) => event,
                Err(error) => {
                    step.undecodable += 1;
                    if let Some(m) = metrics {
                        m.undecodable.inc();
                    }
                    tracing::warn!(
                        message = "bus record is not an ingest event; recording it as unknown",
                        topic = %record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        %error
                    );
                    undecodable_event(record, &error)
                }
            };
            if let Some(m) = metrics {
                m.inputs
                    .get_or_create(&vec![("topic".to_owned(), record.topic.to_string())])
                    .inc();
            }
            inputs.push((
                event,
                Source {
                    topic: record.topic.suffix().to_owned(),
                    // Kafka's own types: partitions are i32, offsets i64.
                    partition: i32::try_from(record.partition).unwrap_or(i32::MAX),
                    offset: i64::try_from(record.offset).unwrap_or(i64::MAX),
                },
            ));
        }
        let side_writes = Topic::INPUTS
            .iter()
            .filter(|t| next[usize::from(t.rank())] != self.next[usize::from(t.rank())])
            .map(|t| {
                (
                    offset_key(*t),
                    Some(next[usize::from(t.rank())].to_be_bytes().to_vec()),
                )
            })
            .collect();
        let partition = self.partition;
        let twinlog = &mut self.twinlog;
        let report = tokio::task::block_in_place(|| twinlog.append_with(&inputs, side_writes))
            .map_err(|source| RunnerError::Append { partition, source })?;
        self.next = next;
        if let Some(m) = metrics {
            m.batch_seconds.observe(started.elapsed().as_secs_f64());
            m.records.inc_by(report.records);
            for (outcome, n) in [
                ("appended", report.appended),
                ("duplicate", report.duplicates),
                ("rejected", report.rejected),
                ("idle", report.idle),
            ] {
                if n > 0 {
                    m.outcomes
                        .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
                        .inc_by(n);
                }
            }
            let label = RunnerMetrics::shard_label(partition);
            m.tree_size
                .get_or_create(&label)
                .set(i64::try_from(report.tree_size).unwrap_or(i64::MAX));
        }
        step.report = report;
        self.publish_audit(bus, metrics, &mut step).await?;
        Ok(step)
    }

    /// Publishes the shard's records that the audit topic lacks.
    async fn publish_audit<B: Bus>(
        &mut self,
        bus: &B,
        metrics: Option<&RunnerMetrics>,
        step: &mut StepReport,
    ) -> Result<(), RunnerError> {
        if let Some(producer) = self.producer.clone() {
            return self
                .publish_transactional(bus, &producer, metrics, step)
                .await;
        }
        // Key material first, whether or not there are records to publish.
        self.publish_escrow().await?;
        if !self.publish_audit {
            return Ok(());
        }
        let partition = self.partition;
        let size = self.twinlog.log().size();
        // Unknown until this publish completes.
        let mut published = self.audit_end(bus).await?;
        if published > size {
            return Err(RunnerError::AuditAhead {
                partition,
                published,
                size,
            });
        }
        let key = key_for_partition(partition, bus.partitions());
        while published < size {
            let end = size.min(published + AUDIT_PUBLISH_RECORDS_MAX as u64);
            let mut out = Vec::new();
            for item in self.twinlog.log().records(published, end) {
                let (_, leaf) = item.map_err(|e| RunnerError::Append {
                    partition,
                    source: e.into(),
                })?;
                out.push(OutRecord {
                    topic: Topic::Audit,
                    key: key.clone(),
                    payload: leaf,
                    timestamp_ms: now_ms(),
                });
            }
            let n = out.len() as u64;
            match bus.publish(out).await {
                Ok(_) => {
                    published += n;
                    step.audit_published += n;
                    if let Some(m) = metrics {
                        m.audit_published.inc_by(n);
                    }
                }
                Err(error) => {
                    // The outcome is unknown: the next call asks the bus
                    // where the topic ends before it publishes again.
                    return Err(RunnerError::Bus {
                        partition,
                        what: "publish audit records".into(),
                        attempts: 1,
                        source: error,
                    });
                }
            }
        }
        if self.escrow.as_ref().is_some_and(|(_, at)| *at < published) {
            self.checkpoint_due = Some(published);
        }
        self.audit_published = Some(published);
        Ok(())
    }

    /// The audit topic's logical end (its records of this shard), known or
    /// asked; the first time after an open, the local record before it is
    /// checked against the topic's.
    async fn audit_end<B: Bus>(&mut self, bus: &B) -> Result<u64, RunnerError> {
        let partition = self.partition;
        if let Some(n) = self.audit_published.take() {
            return Ok(n);
        }
        let end = retry(partition, "find the end of the audit topic", || {
            bus.end_offset(Topic::Audit, partition)
        })
        .await?;
        if !self.checked && end > 0 && end <= self.twinlog.log().size() {
            check_against_topic(bus, &self.twinlog, partition, end - 1).await?;
        }
        self.checked = true;
        Ok(end)
    }

    /// [`Self::publish_audit`] through the shard's transactional producer:
    /// key material and audit records in transactions (see the module
    /// documentation).
    async fn publish_transactional<B: Bus>(
        &mut self,
        bus: &B,
        producer: &ShardProducer,
        metrics: Option<&RunnerMetrics>,
        step: &mut StepReport,
    ) -> Result<(), RunnerError> {
        let partition = self.partition;
        let size = self.twinlog.log().size();
        let mut published = if self.publish_audit {
            self.audit_end(bus).await?
        } else {
            size
        };
        if published > size {
            return Err(RunnerError::AuditAhead {
                partition,
                published,
                size,
            });
        }
        let taken = self.take_escrow_entries()?;
        let mut keys = match (&taken, &self.escrow) {
            (Some((entries, _)), Some((escrow, _))) => match escrow.records(partition, entries) {
                Ok(records) => records,
                Err(error) => {
                    self.escrow_failed(taken.and_then(|(_, due)| due));
                    return Err(error.into());
                }
            },
            _ => Vec::new(),
        };
        let due = taken.and_then(|(_, due)| due);
        let key = key_for_partition(partition, bus.partitions());
        let mut first = true;
        while first || published < size {
            first = false;
            let end = size.min(published + AUDIT_TXN_RECORDS_MAX as u64);
            let mut out = Vec::new();
            for item in self.twinlog.log().records(published, end) {
                let (seq, leaf) = item.map_err(|e| RunnerError::Append {
                    partition,
                    source: e.into(),
                })?;
                out.push(SeqRecord {
                    seq,
                    record: OutRecord {
                        topic: Topic::Audit,
                        key: key.clone(),
                        payload: leaf,
                        timestamp_ms: now_ms(),
                    },
                });
            }
            if keys.is_empty() && out.is_empty() {
                break;
            }
            let n = out.len() as u64;
            if let Err(error) = producer.commit(&keys, &out).await {
                // The outcome may be unknown: the next call asks the bus
                // where the topic ends, and sends the key material again.
                self.escrow_failed(due);
                return Err(match error {
                    BusError::Fenced { .. } => {
                        if let Some(m) = metrics {
                            m.fenced.inc();
                        }
                        tracing::error!(
                            message =
                                "audit shard was taken over by another engine: fenced; stopping it",
                            partition
                        );
                        RunnerError::Fenced { partition }
                    }
                    source => RunnerError::Bus {
                        partition,
                        what: "commit key material and audit records".into(),
                        attempts: 1,
                        source,
                    },
                });
            }
            keys.clear();
            published += n;
            step.audit_published += n;
            if let Some(m) = metrics {
                m.audit_published.inc_by(n);
            }
        }
        self.escrow_done(due);
        if self.escrow.as_ref().is_some_and(|(_, at)| *at < published) {
            self.checkpoint_due = Some(published);
        }
        if self.publish_audit {
            self.audit_published = Some(published);
        }
        Ok(())
    }

    /// Input records on the bus that this shard has not folded yet.
    pub async fn lag<B: Bus>(&self, bus: &B) -> Result<u64, RunnerError> {
        let mut lag = 0;
        for topic in Topic::INPUTS {
            let end = retry(self.partition, "read an end offset", || {
                bus.end_offset(topic, self.partition)
            })
            .await?;
            lag += end.saturating_sub(self.next[usize::from(topic.rank())]);
        }
        Ok(lag)
    }
}

/// Checks that the local record at `seq` is the audit topic's committed
/// record at `seq` ([`RunnerError::Forked`] otherwise).
pub(crate) async fn check_against_topic<B: Bus>(
    bus: &B,
    twinlog: &Twinlog,
    partition: u32,
    seq: u64,
) -> Result<(), RunnerError> {
    let local = match twinlog.log().records(seq, seq + 1).next() {
        Some(Ok((_, leaf))) => leaf,
        Some(Err(e)) => {
            return Err(RunnerError::Append {
                partition,
                source: e.into(),
            })
        }
        None => return Ok(()),
    };
    let topic = retry(partition, "read the audit topic", || {
        bus.read(Topic::Audit, partition, seq, 1, Duration::from_secs(5))
    })
    .await?;
    match topic.first() {
        Some(record) if record.offset == seq && record.payload == local => Ok(()),
        Some(_) => Err(RunnerError::Forked { partition, seq }),
        None => Err(RunnerError::Restore {
            partition,
            reason: format!("the audit topic did not return its record {seq}"),
        }),
    }
}

/// A bus record that is not an ingest event, as the `unknown` event that
/// records it: its hash and the decode error, never its bytes.
fn undecodable_event(record: &BusRecord, error: &prost::DecodeError) -> IngestEvent {
    IngestEvent {
        envelope: Some(Envelope {
            ingest_time_ms: record.timestamp_ms,
            body_sha256: sha2::Sha256::digest(&record.payload).to_vec(),
            ..Envelope::default()
        }),
        kind: Some(Kind::Unknown(Unknown {
            field: String::new(),
            reason: format!("undecodable bus record: {error}"),
            raw_json: String::new(),
        })),
    }
}

/// A clock tick for `partition`, published on the sync topic so that it is
/// an input like any other, and a replay folds the same ticks.
pub fn tick_record(partition: u32, partitions: u32, now_ms: i64) -> OutRecord {
    let event = IngestEvent {
        envelope: Some(Envelope {
            ingest_time_ms: now_ms,
            field: "tick".into(),
            ..Envelope::default()
        }),
        kind: Some(Kind::Tick(ClockTick { now_ms })),
    };
    OutRecord {
        topic: Topic::Sync,
        key: key_for_partition(partition, partitions),
        payload: prost::Message::encode_to_vec(&event),
        timestamp_ms: now_ms.max(0),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Retries a bus call with backoff for up to [`BUS_RETRY_MS_MAX`];
/// overload and transient errors are expected while a broker restarts.
pub(crate) async fn retry<T, F, Fut>(
    partition: u32,
    what: &str,
    mut call: F,
) -> Result<T, RunnerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_millis(BUS_RETRY_MS_MAX);
    let mut delay = Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(message = "bus call failed; retrying", partition, what, attempt, %error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(source) => {
                return Err(RunnerError::Bus {
                    partition,
                    what: what.to_owned(),
                    attempts: attempt,
                    source,
                })
            }
        }
    }
}

/// How a shard runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Wall-clock interval between published clock ticks; 0 turns ticks off.
    pub tick_interval_ms: u64,
    pub idle_wait: Duration,
    /// Return once the shard has folded everything on the bus (a batch
    /// replay, or a test's last word), instead of waiting for more.
    pub exit_when_idle: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            tick_interval_ms: TICK_INTERVAL_MS_DEFAULT,
            idle_wait: Duration::from_millis(IDLE_WAIT_MS),
            exit_when_idle: false,
        }
    }
}

/// Runs a shard until `shutdown` turns true: steps, and publishes a clock
/// tick every `tick_interval_ms`. Returns the shard when it stops cleanly.
pub async fn run_shard<B: Bus>(
    bus: Arc<B>,
    mut shard: Shard,
    config: RunConfig,
    metrics: RunnerMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<Shard, RunnerError> {
    let mut last_tick_ms = 0i64;
    let label = RunnerMetrics::shard_label(shard.partition);
    let mut steps = 0u64;
    loop {
        if *shutdown.borrow() {
            return Ok(shard);
        }
        if config.tick_interval_ms > 0 {
            let now = now_ms();
            let interval = i64::try_from(config.tick_interval_ms).unwrap_or(i64::MAX);
            if now.saturating_sub(last_tick_ms) >= interval {
                let record = tick_record(shard.partition, bus.partitions(), now);
                retry(shard.partition, "publish a clock tick", || {
                    bus.publish(vec![record.clone()])
                })
                .await?;
                last_tick_ms = now;
            }
        }
        // Not raced against shutdown: a step is never cut off half way.
        let step = shard
            .step(bus.as_ref(), config.idle_wait, Some(&metrics))
            .await?;
        steps += 1;
        if config.exit_when_idle
            && step.report.inputs == 0
            && shard.buffered.iter().all(VecDeque::is_empty)
            && shard.lag(bus.as_ref()).await? == 0
        {
            tracing::info!(
                message = "audit shard folded everything on the bus",
                partition = shard.partition,
                tree_size = shard.twinlog.log().size()
            );
            return Ok(shard);
        }
        if steps % 64 == 0 {
            if let Ok(lag) = shard.lag(bus.as_ref()).await {
                metrics
                    .lag
                    .get_or_create(&label)
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
    }
}
