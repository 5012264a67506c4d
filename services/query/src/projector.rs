//! The projection worker: audit topic → [`Views`] (in memory, one per
//! partition) → view rows in the [`Store`].
//!
//! Per partition, a reader task reads the audit topic from offset 0 and
//! feeds a bounded channel ([`QUEUE_BATCHES_MAX`] batches of at most
//! [`twinlog_bus::READ_RECORDS_MAX`] records) to an applier on a blocking
//! thread. The applier decodes each record, asks the [`Opener`] for its
//! personal part and applies it. Records up to the stored `applied_through`
//! only rebuild the in-memory views (a restart); every later batch is one
//! [`Store`] commit: the rows its records changed, their change events and
//! the new `applied_through`, in one sled batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};
use twinlog_bus::{Bus, BusError, BusRecord, Topic, READ_RECORDS_MAX};
use twinlog_projections::{Change, Config, Day, ProjectionInput, Views};
use twinlog_proto::v1::{audit_record::Fact, AuditRecord, Channel, Personal};

use crate::error::ProjectorError;
use crate::keys;
use crate::store::{Commit, Store, StoredChange};

/// Batches queued between a partition's bus reader and its applier.
pub const QUEUE_BATCHES_MAX: usize = 4;

/// How long one bus read waits for new records.
const READ_WAIT: Duration = Duration::from_millis(200);

/// How long a failing bus call is retried (a broker restart, a leader
/// election) before the worker gives up, as the engine's shards do.
pub const BUS_RETRY_MAX: Duration = Duration::from_secs(300);

/// How often the lag gauge is refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Opens the sealed part of an audit record. The service wiring passes one
/// backed by the shard's vault; [`NoOpener`] opens nothing.
///
/// It must answer the same for the same record on every call, or a rebuild
/// would differ from the stored rows (a forgotten customer's records give
/// `None`, which the views already treat as erased).
pub trait Opener: Send + Sync + 'static {
    fn open(&self, partition: u32, record: &AuditRecord) -> Option<Personal>;
}

/// Opens nothing: the views hold no personal content.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOpener;

impl Opener for NoOpener {
    fn open(&self, _partition: u32, _record: &AuditRecord) -> Option<Personal> {
        None
    }
}

/// Whether every partition caught up with the end its audit topic had when
/// the worker started. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

type Labels = Vec<(String, String)>;

/// The worker's metrics, under `twinlog_projector_`.
#[derive(Clone)]
pub struct ProjectorMetrics {
    records: Counter,
    rebuilt: Counter,
    changes: Counter,
    batch_records: Histogram,
    commit_seconds: Histogram,
    latency_seconds: Histogram,
    lag: Family<Labels, Gauge>,
    applied_through: Family<Labels, Gauge>,
}

impl ProjectorMetrics {
    pub fn new(registry: &mut Registry) -> ProjectorMetrics {
        let m = ProjectorMetrics {
            records: Counter::default(),
            rebuilt: Counter::default(),
            changes: Counter::default(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lag: Family::default(),
            applied_through: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("twinlog_projector");
        r.register(
            "records_applied",
            "Audit records applied and stored",
            m.records.clone(),
        );
        r.register(
            "records_rebuilt",
            "Audit records re-applied in memory at start (already stored)",
            m.rebuilt.clone(),
        );
        r.register("changes", "Change events stored", m.changes.clone());
        r.register(
            "batch_records",
            "Audit records per stored batch",
            m.batch_records.clone(),
        );
        r.register(
            "commit_seconds",
            "Time to write and flush one batch of view rows",
            m.commit_seconds.clone(),
        );
        r.register(
            "audit_to_view_seconds",
            "From a record's publication on the audit topic to its views being durable",
            m.latency_seconds.clone(),
        );
        r.register(
            "lag_records",
            "Audit records on the topic not yet applied, by partition",
            m.lag.clone(),
        );
        r.register(
            "applied_through",
            "Seq of the last applied record, by partition",
            m.applied_through.clone(),
        );
        m
    }

    fn partition(p: u32) -> Labels {
        vec![("partition".to_string(), p.to_string())]
    }
}

/// The projection worker of a set of audit partitions.
pub struct Projector<B: Bus, O: Opener> {
    store: Store,
    config: Arc<Config>,
    bus: Arc<B>,
    opener: Arc<O>,
    partitions: Vec<u32>,
    metrics: ProjectorMetrics,
    ready: Readiness,
    batch_records_max: usize,
}

impl<B: Bus, O: Opener> Projector<B, O> {
    /// A worker for `partitions` of the audit topic of `bus`, storing into
    /// `store`; registers its metrics in `registry`.
    pub fn new(
        store: Store,
        config: Config,
        bus: Arc<B>,
        opener: Arc<O>,
        partitions: Vec<u32>,
        registry: &mut Registry,
    ) -> Projector<B, O> {
        let mut partitions = partitions;
        partitions.sort_unstable();
        partitions.dedup();
        Projector {
            store,
            config: Arc::new(config),
            bus,
            opener,
            partitions,
            metrics: ProjectorMetrics::new(registry),
            ready: Readiness::default(),
            batch_records_max: READ_RECORDS_MAX,
        }
    }

    /// Stores at most `n` records per batch (1 to the bus's
    /// [`READ_RECORDS_MAX`], the default). Small batches reach batch
    /// boundaries in tests; large ones make fewer flushes.
    pub fn with_batch_records_max(mut self, n: usize) -> Projector<B, O> {
        self.batch_records_max = n.clamp(1, READ_RECORDS_MAX);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Turns ready once every partition caught up at start.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Runs until `shutdown` turns true, or a partition fails (then the
    /// others stop too and the first error is returned). Batches already
    /// queued are stored before it returns.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), ProjectorError> {
        let (fail_tx, fail_rx) = watch::channel(false);
        let fail_tx = Arc::new(fail_tx);
        let remaining = Arc::new(AtomicUsize::new(self.partitions.len()));
        if self.partitions.is_empty() {
            self.ready.set();
        }
        let worker = Arc::new(Worker {
            store: self.store,
            config: self.config,
            bus: self.bus,
            opener: self.opener,
            metrics: self.metrics,
            ready: self.ready,
            remaining,
            batch_records_max: self.batch_records_max,
        });
        let mut tasks = JoinSet::new();
        for &partition in &self.partitions {
            let worker = worker.clone();
            let stop = Stop {
                shutdown: shutdown.clone(),
                failed: fail_rx.clone(),
            };
            let fail_tx = fail_tx.clone();
            tasks.spawn(
                async move {
                    let result = worker.partition(partition, stop).await;
                    if let Err(error) = &result {
                        warn!(message = "projector partition failed", %error);
                        fail_tx.send_replace(true);
                    }
                    result
                }
                .instrument(info_span!("projector", partition)),
            );
        }
        let mut first = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or(Err(ProjectorError::Stopped { partition: 0 }));
            if let Err(error) = result {
                first.get_or_insert(error);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

struct Worker<B, O> {
    store: Store,
    config: Arc<Config>,
    bus: Arc<B>,
    opener: Arc<O>,
    metrics: ProjectorMetrics,
    ready: Readiness,
    /// Partitions not caught up yet.
    remaining: Arc<AtomicUsize>,
    batch_records_max: usize,
}

#[derive(Clone)]
struct Stop {
    shutdown: watch::Receiver<bool>,
    failed: watch::Receiver<bool>,
}

impl Stop {
    fn is_stopped(&self) -> bool {
        *self.shutdown.borrow() || *self.failed.borrow()
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.wait_for(|v| *v) => {}
            _ = self.failed.wait_for(|v| *v) => {}
        }
    }
}

impl<B: Bus, O: Opener> Worker<B, O> {
    async fn partition(
        self: Arc<Self>,
        partition: u32,
        mut stop: Stop,
    ) -> Result<(), ProjectorError> {
        let store = self.store.clone();
        let applied = tokio::task::spawn_blocking(move || store.applied_through(partition))
            .await
            .map_err(|_| ProjectorError::Stopped { partition })?
            .map_err(|source| ProjectorError::Store { partition, source })?;
        let end = self
            .retry(partition, "find the end", |bus| {
                bus.end_offset(Topic::Audit, partition)
            })
            .await?;
        if let Some(t) = applied {
            if end <= t {
                return Err(ProjectorError::ViewsAhead {
                    partition,
                    applied_through: t,
                    end,
                });
            }
        }
        info!(
            message = "projector starting",
            applied_through = ?applied,
            audit_end = end
        );
        let applied_next = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Vec<BusRecord>>(QUEUE_BATCHES_MAX);
        let span = tracing::Span::current();
        let applier = {
            let worker = self.clone();
            let applied_next = applied_next.clone();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                worker.apply_loop(partition, applied, end, rx, &applied_next)
            })
        };
        let read = self
            .read_loop(partition, tx, &mut stop, &applied_next)
            .await;
        let applied = applier
            .await
            .map_err(|_| ProjectorError::Stopped { partition })?;
        read.and(applied)
    }

    async fn read_loop(
        &self,
        partition: u32,
        tx: mpsc::Sender<Vec<BusRecord>>,
        stop: &mut Stop,
        applied_next: &AtomicU64,
    ) -> Result<(), ProjectorError> {
        let mut next = 0u64;
        let mut lag_at: Option<Instant> = None;
        while !stop.is_stopped() {
            if lag_at.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
                lag_at = Some(Instant::now());
                if let Ok(end) = self.bus.end_offset(Topic::Audit, partition).await {
                    let lag = end.saturating_sub(applied_next.load(Ordering::Acquire));
                    self.metrics
                        .lag
                        .get_or_create(&ProjectorMetrics::partition(partition))
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
            }
            let records = tokio::select! {
                r = self.retry(partition, "read", |bus| {
                    bus.read(Topic::Audit, partition, next, self.batch_records_max, READ_WAIT)
                }) => r?,
                _ = stop.wait() => break,
            };
            if records.is_empty() {
                continue;
            }
            next += u64::try_from(records.len()).unwrap_or(u64::MAX);
            tokio::select! {
                sent = tx.send(records) => if sent.is_err() {
                    // The applier stopped; its result says why.
                    break;
                },
                _ = stop.wait() => break,
            }
        }
        Ok(())
    }

    /// Calls the bus, retrying failures with a growing pause.
    async fn retry<'a, T, F, Fut>(
        &'a self,
        partition: u32,
        what: &str,
        call: F,
    ) -> Result<T, ProjectorError>
    where
        F: Fn(&'a B) -> Fut,
        Fut: std::future::Future<Output = Result<T, BusError>>,
    {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match call(self.bus.as_ref()).await {
                Ok(v) => return Ok(v),
                Err(source) if started.elapsed() >= BUS_RETRY_MAX => {
                    return Err(ProjectorError::Bus {
                        partition,
                        what: what.to_string(),
                        attempts,
                        source,
                    })
                }
                Err(error) => {
                    warn!(message = "audit topic call failed, retrying", what, attempts, %error);
                    tokio::time::sleep(Duration::from_millis(50u64 << attempts.min(6))).await;
                }
            }
        }
    }

    fn apply_loop(
        &self,
        partition: u32,
        applied: Option<u64>,
        end_at_start: u64,
        mut rx: mpsc::Receiver<Vec<BusRecord>>,
        applied_next: &AtomicU64,
    ) -> Result<(), ProjectorError> {
        let mut views = Views::default();
        let mut next = 0u64;
        let mut caught_up = false;
        let labels = ProjectorMetrics::partition(partition);
        let mut check_caught_up = |next: u64| {
            if !caught_up && next >= end_at_start {
                caught_up = true;
                info!(message = "projector caught up", next);
                if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.ready.set();
                }
            }
        };
        check_caught_up(next);
        while let Some(batch) = rx.blocking_recv() {
            let mut dirty = BTreeSet::new();
            let mut events = Vec::new();
            let mut published_ms = Vec::new();
            for bus_record in &batch {
                if bus_record.offset != next {
                    return Err(ProjectorError::SeqMismatch {
                        partition,
                        offset: next,
                        seq: bus_record.offset,
                    });
                }
                let record =
                    AuditRecord::decode(bus_record.payload.as_slice()).map_err(|source| {
                        ProjectorError::Undecodable {
                            partition,
                            offset: bus_record.offset,
                            source,
                        }
                    })?;
                if record.seq != bus_record.offset {
                    return Err(ProjectorError::SeqMismatch {
                        partition,
                        offset: bus_record.offset,
                        seq: record.seq,
                    });
                }
                let personal = self.opener.open(partition, &record);
                let changes = views.apply(
                    &self.config,
                    ProjectionInput {
                        record: &record,
                        personal: personal.as_ref(),
                    },
                );
                next += 1;
                if applied.is_some_and(|t| record.seq <= t) {
                    self.metrics.rebuilt.inc();
                    continue;
                }
                note_changes(
                    &views,
                    partition,
                    &record,
                    &changes,
                    &mut dirty,
                    &mut events,
                );
                published_ms.push(bus_record.timestamp_ms);
            }
            if !published_ms.is_empty() {
                let applied_through = next - 1;
                let started = Instant::now();
                let changes = events.len();
                let commit = Commit {
                    partition,
                    applied_through,
                    rows: materialize(&views, partition, &dirty),
                    events,
                };
                self.store
                    .commit(commit)
                    .map_err(|source| ProjectorError::Store { partition, source })?;
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                let records = published_ms.len();
                self.metrics
                    .records
                    .inc_by(u64::try_from(records).unwrap_or(u64::MAX));
                self.metrics
                    .changes
                    .inc_by(u64::try_from(changes).unwrap_or(u64::MAX));
                self.metrics.batch_records.observe(records as f64);
                let now = now_ms();
                for at in published_ms {
                    let ms = now.saturating_sub(at).max(0);
                    self.metrics.latency_seconds.observe(ms as f64 / 1000.0);
                }
                self.metrics
                    .applied_through
                    .get_or_create(&labels)
                    .set(i64::try_from(applied_through).unwrap_or(i64::MAX));
            }
            applied_next.store(next, Ordering::Release);
            check_caught_up(next);
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A row to write after a batch, read from the views' final state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Contact(Vec<u8>),
    /// The index of the numbers a contact talked to.
    ContactNumber(Vec<u8>, String),
    Conversation(String, Vec<u8>),
    /// One timeline message, by message key.
    Message(String, Vec<u8>, Vec<u8>),
    /// A conversation's whole timeline.
    Messages(String, Vec<u8>),
    Number(String),
    Ledger(u64),
    Aggregate(String, Day, Channel, String),
    Savings(String, Day),
}

/// Which timeline messages a record can change: the one its fact names,
/// all of the customer's (an erasure), or none (other facts change rows only).
fn touched_message(record: &AuditRecord) -> Option<Option<&[u8]>> {
    match &record.fact {
        Some(Fact::MessageRecorded(m)) => Some(Some(&m.message_key)),
        Some(Fact::RevisionRecorded(r)) => Some(Some(&r.original_key)),
        Some(Fact::StatusRecorded(s)) => Some(Some(&s.message_key)),
        Some(Fact::MediaEnriched(e)) => Some(Some(&e.message_key)),
        Some(Fact::CustomerErased(_)) => Some(None),
        _ => None,
    }
}

fn note_changes(
    views: &Views,
    partition: u32,
    record: &AuditRecord,
    changes: &[Change],
    dirty: &mut BTreeSet<Dirty>,
    events: &mut Vec<StoredChange>,
) {
    for change in changes {
        let number = match change {
            Change::Contact { customer } | Change::CustomerErased { customer } => {
                dirty.insert(Dirty::Contact(customer.clone()));
                if !record.phone_number_id.is_empty() {
                    dirty.insert(Dirty::ContactNumber(
                        customer.clone(),
                        record.phone_number_id.clone(),
                    ));
                }
                record.phone_number_id.clone()
            }
            Change::Conversation { number, customer } => {
                dirty.insert(Dirty::Conversation(number.clone(), customer.clone()));
                dirty.insert(Dirty::ContactNumber(customer.clone(), number.clone()));
                match touched_message(record) {
                    Some(Some(key)) => {
                        dirty.insert(Dirty::Message(
                            number.clone(),
                            customer.clone(),
                            key.to_vec(),
                        ));
                    }
                    Some(None) => {
                        dirty.insert(Dirty::Messages(number.clone(), customer.clone()));
                    }
                    None => {}
                }
                number.clone()
            }
            Change::Handoff(h) => h.number.clone(),
            Change::NumberHealth { number } => {
                dirty.insert(Dirty::Number(number.clone()));
                number.clone()
            }
            Change::LedgerEntry { id } => {
                dirty.insert(Dirty::Ledger(*id));
                usize::try_from(*id)
                    .ok()
                    .and_then(|i| views.ledger_entries().get(i))
                    .map_or_else(
                        || record.phone_number_id.clone(),
                        |e| e.phone_number_id.clone(),
                    )
            }
            Change::BillingAggregate {
                number,
                day,
                channel,
                category,
            } => {
                dirty.insert(Dirty::Aggregate(
                    number.clone(),
                    *day,
                    *channel,
                    category.clone(),
                ));
                number.clone()
            }
            Change::Savings { number, day } => {
                dirty.insert(Dirty::Savings(number.clone(), *day));
                number.clone()
            }
        };
        events.push(StoredChange {
            partition,
            phone_number_id: number,
            event: Some(change.to_event(record.seq)),
        });
    }
}

/// The rows of `dirty`, from the views' current state: `None` for a row
/// the views no longer hold (an aggregate moved to its priced category).
fn materialize(
    views: &Views,
    partition: u32,
    dirty: &BTreeSet<Dirty>,
) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut rows = BTreeMap::new();
    // Per conversation: the message keys to write, or `None` for all.
    type Wanted<'a> = BTreeMap<(&'a str, &'a [u8]), Option<BTreeSet<&'a [u8]>>>;
    let mut messages: Wanted<'_> = BTreeMap::new();
    let mut savings: BTreeMap<(&str, String), Day> = BTreeMap::new();
    for d in dirty {
        match d {
            Dirty::Contact(customer) => {
                let row = views.contact(customer).map(|r| r.encode_to_vec());
                rows.insert(keys::contact(customer), row);
            }
            Dirty::ContactNumber(customer, number) => {
                rows.insert(keys::contact_number(customer, number), Some(Vec::new()));
            }
            Dirty::Conversation(number, customer) => {
                let row = views
                    .conversation(number, customer)
                    .map(|c| c.row.encode_to_vec());
                rows.insert(keys::conversation(number, customer), row);
            }
            Dirty::Message(number, customer, key) => {
                if let Some(set) = messages
                    .entry((number.as_str(), customer.as_slice()))
                    .or_insert_with(|| Some(BTreeSet::new()))
                {
                    set.insert(key.as_slice());
                }
            }
            Dirty::Messages(number, customer) => {
                messages.insert((number.as_str(), customer.as_slice()), None);
            }
            Dirty::Number(number) => {
                let row = views.number(number).map(|r| r.encode_to_vec());
                rows.insert(keys::number(number), row);
            }
            Dirty::Ledger(id) => {
                let row = usize::try_from(*id)
                    .ok()
                    .and_then(|i| views.ledger_entries().get(i))
                    .map(|e| e.encode_to_vec());
                rows.insert(keys::ledger(partition, *id), row);
            }
            Dirty::Aggregate(number, day, channel, category) => {
                let row = views
                    .billing_aggregate(number, *day, *channel, category)
                    .map(|a| a.encode_to_vec());
                rows.insert(keys::aggregate(number, *day, *channel, category), row);
            }
            Dirty::Savings(number, day) => {
                // Absent unless the views still hold it (filled in below).
                rows.insert(keys::savings(number, *day), None);
                savings.insert((number.as_str(), day.to_string()), *day);
            }
        }
    }
    for ((number, customer), wanted) in messages {
        let Some(c) = views.conversation(number, customer) else {
            continue;
        };
        for m in c.timeline() {
            if wanted
                .as_ref()
                .is_none_or(|w| w.contains(m.message_key.as_slice()))
            {
                rows.insert(
                    keys::timeline_message(number, customer, m.timestamp, m.seq),
                    Some(m.encode_to_vec()),
                );
            }
        }
    }
    if !savings.is_empty() {
        for s in views.savings() {
            if let Some(day) = savings.get(&(s.phone_number_id.as_str(), s.day.clone())) {
                rows.insert(
                    keys::savings(&s.phone_number_id, *day),
                    Some(s.encode_to_vec()),
                );
            }
        }
    }
    rows
}

/// Every row of `views` (of audit partition `partition`), keyed as the
/// store keys them: what [`Store::rows`] holds after the worker applied the
/// same records. For checks and rebuilds.
pub fn rows_of(views: &Views, partition: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut dirty = BTreeSet::new();
    for c in views.contacts() {
        dirty.insert(Dirty::Contact(c.customer.clone()));
    }
    for c in views.conversations() {
        let (n, cu) = (c.row.phone_number_id.clone(), c.row.customer.clone());
        dirty.insert(Dirty::Conversation(n.clone(), cu.clone()));
        dirty.insert(Dirty::Messages(n, cu));
    }
    for n in views.numbers() {
        dirty.insert(Dirty::Number(n.phone_number_id.clone()));
    }
    for e in views.ledger_entries() {
        dirty.insert(Dirty::Ledger(e.id));
    }
    for a in views.billing_aggregates() {
        if let (Ok(day), Ok(channel)) = (a.day.parse::<Day>(), Channel::try_from(a.channel)) {
            dirty.insert(Dirty::Aggregate(
                a.phone_number_id.clone(),
                day,
                channel,
                a.category.clone(),
            ));
        }
    }
    for s in views.savings() {
        if let Ok(day) = s.day.parse::<Day>() {
            dirty.insert(Dirty::Savings(s.phone_number_id.clone(), day));
        }
    }
    materialize(views, partition, &dirty)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}
