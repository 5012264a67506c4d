//! The Kafka bus: [`Bus`] on a real Apache Kafka cluster, through rdkafka
//! (librdkafka).
//!
//! # Topics
//!
//! The six topics (five inputs and the audit topic) are `PREFIX` + [`Topic::suffix`], all with the same
//! partition count. [`KafkaBus::create_topics`] creates them
//! (`retention.ms=-1`, `cleanup.policy=delete`,
//! `message.timestamp.type=CreateTime`, `max.message.bytes` =
//! [`MESSAGE_BYTES_MAX`], the broker's default replication factor), and
//! the compacted keys topic `PREFIX` + `keys` ([`crate::keys`]) with the
//! same partition count; [`KafkaBus::connect`] refuses to start unless all
//! seven exist with one partition count.
//!
//! # Writes
//!
//! One idempotent `FutureProducer` (`enable.idempotence=true`, `acks=all`,
//! no transactions) for the input topics. The engine publishes the audit
//! and keys topics through a transactional producer per shard instead
//! ([`crate::txn`]), whose markers take Kafka offsets: the audit topic is
//! therefore read by *logical* offset, the seq each record carries in a
//! header (see below). The bus computes each record's partition
//! with [`partition_for`] and sets it on the record, so Kafka and the
//! embedded bus can never disagree. `publish` enqueues every record, then
//! awaits every acknowledgement, and returns the (partition, offset) the
//! broker gave. Before enqueueing, a publish takes its share of an
//! in-flight budget ([`IN_FLIGHT_RECORDS_MAX`], [`IN_FLIGHT_BYTES_MAX`]),
//! kept below librdkafka's own queue limits, so a publish is refused whole
//! ([`BusError::Overloaded`]) rather than half-enqueued.
//!
//! # Reads
//!
//! A read takes a consumer assigned to exactly its topic-partition (no
//! consumer group, no offset commits: consumers keep their positions
//! elsewhere) from a small pool, polls it in `spawn_blocking`, and puts it
//! back with its position, so a reader that goes on from where it stopped
//! needs no new fetch. Readers are `read_committed`: they see only
//! committed transactions, up to the last stable offset. On the audit
//! topic a record's offset is its seq header ([`crate::txn::SEQ_HEADER`]);
//! a read at seq `n` is positioned at Kafka offset `n` (at or below the
//! record, markers only add offsets) and skips what comes before `n`; a
//! repeated or missing seq afterwards is [`BusError::Corrupt`];
//! `end_offset` is the seq after the last committed record. Kafka consumers see only records below the high
//! watermark, that is, acknowledged by every in-sync replica.
//!
//! # Dropping clients
//!
//! Destroying an rdkafka client can block for a long time (and, for a
//! `StreamConsumer` on a tokio worker thread, was seen to hang for more
//! than 100 s). Every client the bus drops is dropped on a separate OS
//! thread; [`KafkaBus::close`] waits for that with a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;

use crate::txn::SEQ_HEADER;
use crate::{
    check_partition, check_publish, partition_for, Bus, BusError, BusRecord, OutRecord, Position,
    Topic, KEY_BYTES_MAX, PARTITIONS_MAX, PAYLOAD_BYTES_MAX, READ_BYTES_MAX, READ_RECORDS_MAX,
};

/// The largest Kafka message (record batch) the bus produces, and the
/// topics' `max.message.bytes`: [`PAYLOAD_BYTES_MAX`] plus room for the key,
/// headers and batch overhead.
pub const MESSAGE_BYTES_MAX: usize = PAYLOAD_BYTES_MAX + 1024 * 1024;

/// Most records enqueued in the producer and not yet acknowledged.
pub const IN_FLIGHT_RECORDS_MAX: usize = 65_536;

/// Most key and payload bytes enqueued in the producer and not yet
/// acknowledged.
pub const IN_FLIGHT_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Most idle consumers kept in the read pool, over all topic-partitions.
pub const POOLED_CONSUMERS_MAX: usize = 64;

/// Most idle consumers kept for one topic-partition.
pub const POOLED_CONSUMERS_PER_PARTITION_MAX: usize = 4;

/// How long metadata and watermark requests may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`KafkaBus::create_topics`] waits for new topics to have
/// leaders.
const TOPICS_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a delivery may take before the producer gives up on it.
const MESSAGE_TIMEOUT_MS: &str = "60000";

/// The bus on Kafka. See the module documentation.
pub struct KafkaBus {
    bootstrap: String,
    prefix: String,
    partitions: u32,
    /// Topic names, at [`Topic::rank`].
    names: [String; 6],
    producer: Option<FutureProducer>,
    /// For metadata and watermarks.
    meta: Option<Arc<BaseConsumer>>,
    pool: Arc<Pool>,
    in_flight_records: Arc<Semaphore>,
    in_flight_bytes: Arc<Semaphore>,
}

/// Idle consumers, each assigned to one topic-partition.
struct Pool {
    bootstrap: String,
    idle: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    by_partition: HashMap<(Topic, u32), Vec<Reader>>,
    total: usize,
}

/// A consumer assigned to one topic-partition, and the offset its next
/// poll returns, if known.
struct Reader {
    consumer: ReaderConsumer,
    next: Option<u64>,
}

impl KafkaBus {
    /// Connects to the cluster at `bootstrap` (`host:port,...`) and checks
    /// that the six topics under `prefix` exist with one partition count.
    /// Fails with [`BusError::TopicsMissing`] or
    /// [`BusError::TopicPartitionsDiffer`] otherwise.
    pub async fn connect(bootstrap: &str, prefix: &str) -> Result<KafkaBus, BusError> {
        let names: [String; 6] = Topic::ALL.map(|t| t.name(prefix));
        let meta = metadata_client(bootstrap)?;
        let partitions = match topic_partitions(&meta, bootstrap, &checked_names(prefix)).await {
            Ok(p) => p,
            Err(e) => {
                dispose(vec![Client::Consumer(meta)], "metadata client");
                return Err(e);
            }
        };
        let producer = match producer_config(bootstrap).create::<FutureProducer>() {
            Ok(p) => p,
            Err(e) => {
                dispose(vec![Client::Consumer(meta)], "metadata client");
                return Err(BusError::kafka(
                    format!("create a producer for {bootstrap}"),
                    e,
                ));
            }
        };
        tracing::info!(
            message = "kafka bus connected",
            bootstrap,
            prefix,
            partitions
        );
        Ok(KafkaBus {
            bootstrap: bootstrap.to_owned(),
            prefix: prefix.to_owned(),
            partitions,
            names,
            producer: Some(producer),
            meta: Some(meta),
            pool: Arc::new(Pool {
                bootstrap: bootstrap.to_owned(),
                idle: Mutex::new(PoolInner::default()),
            }),
            in_flight_records: Arc::new(Semaphore::new(IN_FLIGHT_RECORDS_MAX)),
            in_flight_bytes: Arc::new(Semaphore::new(IN_FLIGHT_BYTES_MAX)),
        })
    }

    /// Creates the six topics under `prefix` with `partitions` partitions
    /// each and the broker's default replication factor, then waits until
    /// every partition has a leader. Topics that already exist are left as
    /// they are; the call then fails as [`KafkaBus::connect`] would if their
    /// partition counts differ.
    pub async fn create_topics(
        bootstrap: &str,
        prefix: &str,
        partitions: u32,
    ) -> Result<(), BusError> {
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(BusError::InvalidConfig {
                detail: format!("partitions must be 1 to {PARTITIONS_MAX}, not {partitions}"),
            });
        }
        let count = i32::try_from(partitions).map_err(|_| BusError::InvalidConfig {
            detail: format!("{partitions} partitions do not fit kafka's partition count"),
        })?;
        let names: [String; 6] = Topic::ALL.map(|t| t.name(prefix));
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| BusError::kafka(format!("create an admin client for {bootstrap}"), e))?;
        let max_message_bytes = MESSAGE_BYTES_MAX.to_string();
        let keys_name = crate::keys::keys_topic_name(prefix);
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                // -1: the broker's default.replication.factor.
                NewTopic::new(name, count, TopicReplication::Fixed(-1))
                    .set("retention.ms", "-1")
                    .set("cleanup.policy", "delete")
                    .set("message.timestamp.type", "CreateTime")
                    .set("max.message.bytes", &max_message_bytes)
            })
            .chain([crate::keys::new_keys_topic(&keys_name, count)])
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(TOPICS_READY_TIMEOUT));
        let results = admin.create_topics(&topics, &options).await;
        dispose(vec![Client::Admin(admin)], "admin client");
        let results =
            results.map_err(|e| BusError::kafka(format!("create the topics {prefix}*"), e))?;
        for result in results {
            match result {
                Ok(name) => {
                    tracing::info!(message = "kafka topic created", topic = %name, partitions)
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::info!(message = "kafka topic already exists", topic = %name)
                }
                Err((name, code)) => {
                    return Err(BusError::kafka(
                        format!("create the topic {name}"),
                        KafkaError::AdminOp(code),
                    ))
                }
            }
        }
        // Wait until the new topics have leaders everywhere.
        let meta = metadata_client(bootstrap)?;
        let deadline = Instant::now() + TOPICS_READY_TIMEOUT;
        let outcome = loop {
            match topics_ready(&meta, bootstrap, &checked_names(prefix)).await {
                Ok(true) => break all_watermarks(&meta, bootstrap, &names, prefix).await,
                Ok(false) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(false) => {
                    break Err(BusError::InvalidConfig {
                        detail: format!(
                            "the topics {prefix}* have no leader for every partition after {TOPICS_READY_TIMEOUT:?}"
                        ),
                    })
                }
                Err(e) => break Err(e),
            }
        };
        dispose(vec![Client::Consumer(meta)], "metadata client");
        outcome
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The full Kafka topic name of `topic`.
    pub fn topic_name(&self, topic: Topic) -> &str {
        &self.names[usize::from(topic.rank())]
    }

    /// Flushes the producer and destroys every client on a separate thread,
    /// waiting at most `timeout` for it. Returns false if the clients were
    /// not destroyed in time (they are then left to finish on their own).
    pub async fn close(mut self, timeout: Duration) -> bool {
        let clients = self.take_clients();
        let done = dispose(clients, "kafka bus");
        tokio::task::spawn_blocking(move || done.recv_timeout(timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    fn take_clients(&mut self) -> Vec<Client> {
        let mut clients = Vec::new();
        if let Some(producer) = self.producer.take() {
            clients.push(Client::Producer(producer));
        }
        if let Some(meta) = self.meta.take() {
            clients.push(Client::Consumer(meta));
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        for (_, readers) in idle.by_partition.drain() {
            clients.extend(readers.into_iter().map(|r| Client::Reader(r.consumer)));
        }
        idle.total = 0;
        clients
    }

    fn kafka_partition(&self, topic: Topic, partition: u32) -> Result<i32, BusError> {
        check_partition(topic, partition, self.partitions)?;
        i32::try_from(partition).map_err(|_| BusError::UnknownPartition {
            topic,
            partition,
            partitions: self.partitions,
        })
    }
}

impl Drop for KafkaBus {
    fn drop(&mut self) {
        let clients = self.take_clients();
        if !clients.is_empty() {
            dispose(clients, "kafka bus");
        }
    }
}

impl Bus for KafkaBus {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<Position>, BusError> {
        check_publish(&records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let producer = self.producer.as_ref().ok_or(BusError::Closed)?;
        // check_publish bounds both by far less than u32::MAX.
        let bytes: usize = records.iter().map(|r| r.key.len() + r.payload.len()).sum();
        let record_permits = u32::try_from(records.len()).map_err(|_| BusError::Overloaded {
            what: "the producer queue",
        })?;
        let byte_permits = u32::try_from(bytes).map_err(|_| BusError::Overloaded {
            what: "the producer queue's byte budget",
        })?;
        let _records_permit = Arc::clone(&self.in_flight_records)
            .try_acquire_many_owned(record_permits)
            .map_err(|_| BusError::Overloaded {
                what: "the producer queue",
            })?;
        let _bytes_permit = Arc::clone(&self.in_flight_bytes)
            .try_acquire_many_owned(byte_permits)
            .map_err(|_| BusError::Overloaded {
                what: "the producer queue's byte budget",
            })?;

        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let partition = partition_for(&record.key, self.partitions);
            let kafka_partition = self.kafka_partition(record.topic, partition)?;
            let name = self.topic_name(record.topic);
            let out = FutureRecord::to(name)
                .key(&record.key[..])
                .payload(&record.payload[..])
                .partition(kafka_partition)
                .timestamp(record.timestamp_ms);
            match producer.send_result(out) {
                Ok(delivery) => deliveries.push((record.topic, partition, delivery)),
                Err((e, _)) => {
                    // Earlier records of this publish may still be written:
                    // the outcome is unknown, as the trait allows.
                    tracing::warn!(message = "kafka producer refused a record", topic = name, partition, error = %e);
                    return Err(BusError::kafka(
                        format!("enqueue a record for topic {name} partition {partition}"),
                        e,
                    ));
                }
            }
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for (topic, partition, delivery) in deliveries {
            let name = self.topic_name(topic);
            let delivered = delivery.await.map_err(|_| BusError::Closed)?;
            let delivery = delivered.map_err(|(e, _)| {
                tracing::warn!(message = "kafka publish failed", topic = name, partition, error = %e);
                BusError::kafka(
                    format!("publish a record to topic {name} partition {partition}"),
                    e,
                )
            })?;
            let (got_partition, offset) = (delivery.partition, delivery.offset);
            let offset = u64::try_from(offset).map_err(|_| BusError::Corrupt {
                topic,
                partition,
                offset: 0,
                detail: format!("the broker acknowledged a negative offset {offset}"),
            })?;
            if u32::try_from(got_partition).ok() != Some(partition) {
                return Err(BusError::Corrupt {
                    topic,
                    partition,
                    offset,
                    detail: format!("the broker wrote the record to partition {got_partition}"),
                });
            }
            positions.push(Position {
                topic,
                partition,
                offset,
            });
        }
        Ok(positions)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<BusRecord>, BusError> {
        let kafka_partition = self.kafka_partition(topic, partition)?;
        let max = max.min(READ_RECORDS_MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let kafka_offset = i64::try_from(offset).map_err(|_| BusError::InvalidConfig {
            detail: format!(
                "offset {offset} of {topic} partition {partition} is beyond kafka's offsets"
            ),
        })?;
        let name = self.topic_name(topic).to_owned();
        let pool = Arc::clone(&self.pool);
        let meta = self.meta.as_ref().map(Arc::clone).ok_or(BusError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + wait;
            let mut reader = pool.take(topic, partition, &name)?;
            let outcome = read_blocking(
                &mut reader,
                &meta,
                &name,
                ReadAt {
                    topic,
                    partition,
                    kafka_partition,
                    offset,
                    kafka_offset,
                    max,
                    deadline,
                },
            );
            pool.put(topic, partition, reader);
            outcome
        })
        .await
        .map_err(|_| BusError::Closed)?
    }

    async fn end_offset(&self, topic: Topic, partition: u32) -> Result<u64, BusError> {
        let kafka_partition = self.kafka_partition(topic, partition)?;
        let meta = self.meta.as_ref().map(Arc::clone).ok_or(BusError::Closed)?;
        let name = self.topic_name(topic).to_owned();
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            if topic != Topic::Audit {
                return high_watermark(&meta, &name, topic, partition, kafka_partition);
            }
            let mut reader = pool.take(topic, partition, &name)?;
            let outcome = audit_end(&mut reader, &meta, &name, partition, kafka_partition);
            pool.put(topic, partition, reader);
            outcome
        })
        .await
        .map_err(|_| BusError::Closed)?
    }
}

/// Where and how much one read reads.
struct ReadAt {
    topic: Topic,
    partition: u32,
    kafka_partition: i32,
    offset: u64,
    kafka_offset: i64,
    max: usize,
    deadline: Instant,
}

/// One read on a pooled reader, on a blocking thread.
fn read_blocking(
    reader: &mut Reader,
    meta: &BaseConsumer,
    name: &str,
    at: ReadAt,
) -> Result<Vec<BusRecord>, BusError> {
    let ReadAt {
        topic,
        partition,
        kafka_partition,
        offset,
        kafka_offset,
        max,
        deadline,
    } = at;
    // Just positioned at Kafka offset `offset`, at or below the record of
    // seq `offset` on the audit topic: records before it may come first.
    let mut seeking = reader.next != Some(offset);
    if reader.next != Some(offset) {
        // A past-the-end offset would make the fetch fail with
        // OFFSET_OUT_OF_RANGE; wait for the end to reach it instead.
        loop {
            let end = high_watermark(meta, name, topic, partition, kafka_partition)?;
            if end >= offset {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(name, kafka_partition, Offset::Offset(kafka_offset))
            .map_err(|e| {
                BusError::kafka(format!("assign topic {name} partition {partition}"), e)
            })?;
        reader.next = None;
        reader.consumer.assign(&assignment).map_err(|e| {
            BusError::kafka(format!("assign topic {name} partition {partition}"), e)
        })?;
        reader.next = Some(offset);
    }
    let mut records: Vec<BusRecord> = Vec::new();
    let mut payload_bytes: usize = 0;
    let mut expected = offset;
    while records.len() < max {
        let timeout = if records.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let Some(polled) = reader.consumer.poll(timeout) else {
            break;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => {
                if records.is_empty() {
                    continue;
                }
                break;
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)) => {
                // Only a position past the end, which read avoids; retry
                // from a fresh assignment next time.
                reader.next = None;
                break;
            }
            Err(e) => {
                reader.next = None;
                return Err(BusError::kafka(
                    format!("read topic {name} partition {partition} at offset {expected}"),
                    e,
                ));
            }
        };
        let got = logical_offset(topic, &message);
        if seeking
            && topic == Topic::Audit
            && message.partition() == kafka_partition
            && got.is_some_and(|g| g < expected)
        {
            // Positioned at a Kafka offset below the seq (markers took
            // offsets before it): skip up to it.
            continue;
        }
        if message.partition() != kafka_partition || got != Some(expected) {
            reader.next = None;
            return Err(BusError::Corrupt {
                topic,
                partition,
                offset: expected,
                detail: format!(
                    "kafka returned partition {} offset {} instead",
                    message.partition(),
                    message.offset()
                ),
            });
        }
        let payload = message.payload().unwrap_or_default();
        if !records.is_empty() && payload_bytes + payload.len() > READ_BYTES_MAX {
            // This record was consumed but not returned: the next read must
            // seek back to it.
            reader.next = None;
            return Ok(records);
        }
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) => ms,
            other => {
                reader.next = None;
                return Err(BusError::Corrupt {
                    topic,
                    partition,
                    offset: expected,
                    detail: format!("the record has {other:?}, not a CreateTime timestamp: is the topic's message.timestamp.type CreateTime?"),
                });
            }
        };
        seeking = false;
        payload_bytes += payload.len();
        records.push(BusRecord {
            topic,
            partition,
            offset: expected,
            key: message.key().unwrap_or_default().to_vec(),
            payload: payload.to_vec(),
            timestamp_ms,
        });
        expected += 1;
        reader.next = Some(expected);
    }
    Ok(records)
}

/// A record's logical offset: on the audit topic, the seq in its
/// [`SEQ_HEADER`] (Kafka offset if it has none: written without a
/// transaction); elsewhere its Kafka offset.
fn logical_offset<M: Message>(topic: Topic, message: &M) -> Option<u64> {
    if topic == Topic::Audit {
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                if header.key == SEQ_HEADER {
                    let raw: [u8; 8] = header.value?.try_into().ok()?;
                    return Some(u64::from_be_bytes(raw));
                }
            }
        }
    }
    u64::try_from(message.offset()).ok()
}

/// Most Kafka offsets below the last stable offset that [`audit_end`]
/// looks at first (then 8 times more, and so on).
const AUDIT_END_WINDOW: i64 = 64;

/// The audit topic's logical end: the seq after the last committed record,
/// found by reading up to the last stable offset from a window below it,
/// widened until a committed record is in it. Leaves `reader` positioned
/// after that record. Blocking.
fn audit_end(
    reader: &mut Reader,
    meta: &BaseConsumer,
    name: &str,
    partition: u32,
    kafka_partition: i32,
) -> Result<u64, BusError> {
    let topic = Topic::Audit;
    let context = || format!("find the end of topic {name} partition {partition}");
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let (low, lso) = loop {
        match meta.fetch_watermarks(name, kafka_partition, REQUEST_TIMEOUT) {
            Ok(marks) => break marks,
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(BusError::kafka(context(), e)),
        }
    };
    let mut window = AUDIT_END_WINDOW;
    loop {
        if lso <= low {
            return Ok(0);
        }
        let start = lso.saturating_sub(window).max(low);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(name, kafka_partition, Offset::Offset(start))
            .map_err(|e| BusError::kafka(context(), e))?;
        reader.next = None;
        reader
            .consumer
            .assign(&assignment)
            .map_err(|e| BusError::kafka(context(), e))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut last: Option<u64> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(BusError::kafka(
                    format!(
                        "{} (no end of partition within {REQUEST_TIMEOUT:?})",
                        context()
                    ),
                    KafkaError::NoMessageReceived,
                ));
            }
            match reader.consumer.poll(deadline - now) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(BusError::kafka(context(), e)),
                Some(Ok(message)) => {
                    let offset = message.offset();
                    last =
                        Some(
                            logical_offset(topic, &message).ok_or_else(|| BusError::Corrupt {
                                topic,
                                partition,
                                offset: u64::try_from(offset).unwrap_or(0),
                                detail: "the audit record's seq header is not 8 bytes".to_owned(),
                            })?,
                        );
                    if offset.saturating_add(1) >= lso {
                        break;
                    }
                }
            }
        }
        if let Some(last) = last {
            let end = last.saturating_add(1);
            reader.next = None;
            return Ok(end);
        }
        if start == low {
            return Ok(0);
        }
        window = window.saturating_mul(8);
    }
}

/// The high watermark (next offset, acknowledged by every in-sync replica)
/// of a topic-partition. Blocking.
fn high_watermark(
    meta: &BaseConsumer,
    name: &str,
    topic: Topic,
    partition: u32,
    kafka_partition: i32,
) -> Result<u64, BusError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let (_low, high) = loop {
        match meta.fetch_watermarks(name, kafka_partition, REQUEST_TIMEOUT) {
            Ok(marks) => break marks,
            // A leader moving (or just elected): ask again, briefly.
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                tracing::debug!(message = "kafka end offset not available yet", topic = name, partition, error = %e);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(BusError::kafka(
                    format!("fetch the end offset of topic {name} partition {partition}"),
                    e,
                ))
            }
        }
    };
    u64::try_from(high).map_err(|_| BusError::Corrupt {
        topic,
        partition,
        offset: 0,
        detail: format!("kafka reported a negative end offset {high}"),
    })
}

/// True for errors a leader election or a new topic's start-up causes.
pub(crate) fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}

impl Pool {
    /// An idle reader of the topic-partition, or a new one.
    fn take(&self, topic: Topic, partition: u32, name: &str) -> Result<Reader, BusError> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reader) = idle
                .by_partition
                .get_mut(&(topic, partition))
                .and_then(Vec::pop)
            {
                idle.total -= 1;
                return Ok(reader);
            }
        }
        let consumer = reader_config(&self.bootstrap)
            .create_with_context::<_, ReaderConsumer>(ReaderContext)
            .map_err(|e| {
                BusError::kafka(
                    format!("create a consumer for topic {name} partition {partition}"),
                    e,
                )
            })?;
        tracing::debug!(message = "kafka reader created", topic = name, partition);
        Ok(Reader {
            consumer,
            next: None,
        })
    }

    /// Keeps `reader` for the next read of its topic-partition, or drops it
    /// (off this thread) if the pool is full.
    fn put(&self, topic: Topic, partition: u32, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let total = idle.total;
        let slot = idle.by_partition.entry((topic, partition)).or_default();
        if total < POOLED_CONSUMERS_MAX && slot.len() < POOLED_CONSUMERS_PER_PARTITION_MAX {
            slot.push(reader);
            idle.total += 1;
        } else {
            drop(idle);
            dispose(vec![Client::Reader(reader.consumer)], "kafka reader");
        }
    }
}

/// A client for metadata and watermark requests.
pub(crate) fn metadata_client(bootstrap: &str) -> Result<Arc<BaseConsumer>, BusError> {
    reader_config(bootstrap)
        .create::<BaseConsumer>()
        .map(Arc::new)
        .map_err(|e| BusError::kafka(format!("create a metadata client for {bootstrap}"), e))
}

/// The topics a service checks at start: the six bus topics and the keys
/// topic.
fn checked_names(prefix: &str) -> Vec<String> {
    Topic::ALL
        .iter()
        .map(|t| t.name(prefix))
        .chain([crate::keys::keys_topic_name(prefix)])
        .collect()
}

/// The partition count of the topics `names`, which must all exist with the
/// same count. Asks the broker in `spawn_blocking`.
async fn topic_partitions(
    meta: &Arc<BaseConsumer>,
    bootstrap: &str,
    names: &[String],
) -> Result<u32, BusError> {
    let counts = topic_counts(meta, bootstrap).await?;
    let mut missing = Vec::new();
    let mut found: Vec<(String, u32)> = Vec::new();
    for name in names {
        match counts.get(name) {
            Some(&(n, _)) => found.push((name.clone(), n)),
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(BusError::TopicsMissing {
            bootstrap: bootstrap.to_owned(),
            missing,
        });
    }
    let first = found[0].1;
    if first == 0 || found.iter().any(|(_, n)| *n != first) {
        return Err(BusError::TopicPartitionsDiffer {
            bootstrap: bootstrap.to_owned(),
            counts: found,
        });
    }
    if first > PARTITIONS_MAX {
        return Err(BusError::InvalidConfig {
            detail: format!(
                "the bus topics have {first} partitions, more than the limit of {PARTITIONS_MAX}"
            ),
        });
    }
    Ok(first)
}

/// Checks the partition counts, then fetches the end offset of every
/// partition, which waits until each leader answers.
async fn all_watermarks(
    meta: &Arc<BaseConsumer>,
    bootstrap: &str,
    names: &[String; 6],
    prefix: &str,
) -> Result<(), BusError> {
    let partitions = topic_partitions(meta, bootstrap, &checked_names(prefix)).await?;
    let meta = Arc::clone(meta);
    let names = names.clone();
    tokio::task::spawn_blocking(move || {
        for (topic, name) in Topic::ALL.into_iter().zip(&names) {
            for partition in 0..partitions {
                let kafka_partition =
                    i32::try_from(partition).map_err(|_| BusError::UnknownPartition {
                        topic,
                        partition,
                        partitions,
                    })?;
                high_watermark(&meta, name, topic, partition, kafka_partition)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| BusError::Closed)?
}

/// True when all six topics exist and every partition has a leader.
async fn topics_ready(
    meta: &Arc<BaseConsumer>,
    bootstrap: &str,
    names: &[String],
) -> Result<bool, BusError> {
    let counts = topic_counts(meta, bootstrap).await?;
    Ok(names
        .iter()
        .all(|name| matches!(counts.get(name), Some(&(n, true)) if n > 0)))
}

/// Every topic's partition count, and whether all its partitions have a
/// leader.
pub(crate) async fn topic_counts(
    meta: &Arc<BaseConsumer>,
    bootstrap: &str,
) -> Result<HashMap<String, (u32, bool)>, BusError> {
    let meta = Arc::clone(meta);
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = meta
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| BusError::kafka(format!("fetch the topic list from {bootstrap}"), e))?;
        let mut counts = HashMap::new();
        for topic in metadata.topics() {
            if topic.error().is_some() {
                continue;
            }
            let count = u32::try_from(topic.partitions().len()).unwrap_or(u32::MAX);
            let led = topic
                .partitions()
                .iter()
                .all(|p| p.error().is_none() && p.leader() >= 0);
            counts.insert(topic.name().to_owned(), (count, led));
        }
        Ok(counts)
    })
    .await
    .map_err(|_| BusError::Closed)?
}

pub(crate) fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Unused (the bus sets every record's partition), but the same
        // function as partition_for should a record ever go without one.
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", MESSAGE_BYTES_MAX.to_string())
        .set("linger.ms", "2")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        // Above the bus's own in-flight budget, so librdkafka never refuses
        // a record of a publish that the budget let through.
        .set(
            "queue.buffering.max.messages",
            (2 * IN_FLIGHT_RECORDS_MAX).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (2 * IN_FLIGHT_BYTES_MAX / 1024 + PAYLOAD_BYTES_MAX / 1024 + KEY_BYTES_MAX).to_string(),
        );
    config
}

pub(crate) fn reader_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // Assigned partitions only: librdkafka wants a group id for
        // `assign`, but the bus never joins the group nor commits to it.
        .set("group.id", "twinlog-bus-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        // Transactional writes (the audit and keys topics, see
        // `crate::txn`): see only committed records, up to the last
        // stable offset; watermark requests then answer the LSO too.
        .set("isolation.level", "read_committed")
        // End-of-partition events: a read of a transactional topic knows
        // it has passed the last committed record even when only markers
        // or aborted records follow.
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .set(
            "max.partition.fetch.bytes",
            (2 * MESSAGE_BYTES_MAX).to_string(),
        )
        .set("fetch.max.bytes", (4 * MESSAGE_BYTES_MAX).to_string())
        .set(
            "receive.message.max.bytes",
            (8 * MESSAGE_BYTES_MAX).to_string(),
        )
        // Bounds the prefetch queue per partition.
        .set("queued.max.messages.kbytes", "16384");
    config
}

/// A consumer that reads topic-partitions ([`reader_config`]).
pub(crate) type ReaderConsumer = BaseConsumer<ReaderContext>;

/// The context of readers: end-of-partition events (which readers ask
/// for, see [`reader_config`]) are results of `poll`, not errors to log.
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports it as a global error too.
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::error!(message = "librdkafka error", %error, reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// An rdkafka client to destroy off the async runtime.
pub(crate) enum Client {
    Producer(FutureProducer),
    Consumer(Arc<BaseConsumer>),
    Reader(ReaderConsumer),
    Admin(AdminClient<DefaultClientContext>),
}

/// How long destroying clients may take before a warning.
const DISPOSE_WARN_AFTER: Duration = Duration::from_secs(10);

/// Destroys `clients` on a new OS thread (never on a tokio worker: see the
/// module documentation). The receiver gets `()` when they are gone.
pub(crate) fn dispose(clients: Vec<Client>, what: &'static str) -> std::sync::mpsc::Receiver<()> {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("twinlog-kafka-drop".to_owned())
        .spawn(move || {
            let started = Instant::now();
            for client in clients {
                match client {
                    Client::Producer(producer) => {
                        if let Err(error) = producer.flush(REQUEST_TIMEOUT) {
                            tracing::warn!(message = "kafka producer flush failed on close", %error);
                        }
                        drop(producer);
                    }
                    Client::Consumer(consumer) => drop(consumer),
                    Client::Reader(consumer) => drop(consumer),
                    Client::Admin(admin) => drop(admin),
                }
            }
            let took = started.elapsed();
            if took > DISPOSE_WARN_AFTER {
                tracing::warn!(message = "destroying kafka clients was slow", what, ?took);
            }
            let _ = done.send(());
        });
    if let Err(error) = spawned {
        // No thread: the clients are dropped with the closure, here.
        tracing::error!(message = "could not spawn a thread to destroy kafka clients", what, %error);
    }
    finished
}
