//! The keys topic, `PREFIX` + `keys`: a compacted Kafka topic of opaque
//! entries (a key, and a value or a null tombstone), one partition per audit
//! shard (partition `p` holds shard `p`'s entries), where the engines keep
//! each shard's key material, wrapped (the format is the vault's, see
//! `twinlog_vault::escrow`: this crate never sees a secret in the clear).
//!
//! It is not one of the [`Topic`](crate::Topic)s: it is not read through
//! the [`Bus`](crate::Bus) trait (which has no tombstones), and the embedded
//! bus has no counterpart (one process keeps its shards on its own disk).
//!
//! # Compaction bounds how long a replaced or tombstoned value survives
//!
//! [`KafkaBus::create_topics`](crate::KafkaBus::create_topics) creates it
//! with `cleanup.policy=compact`, `min.cleanable.dirty.ratio=`
//! [`KEYS_DIRTY_RATIO`], `max.compaction.lag.ms` and `segment.ms` =
//! [`KEYS_COMPACTION_LAG_MS`], `delete.retention.ms` =
//! [`KEYS_DELETE_RETENTION_MS`], `retention.ms=-1`. Kafka rolls a segment
//! whose first record is older than `max.compaction.lag.ms` and compacts
//! it: an older value of a key (a superseded ratchet state, a forgotten
//! customer's key) is gone from the partition's files within about
//! [`KEYS_COMPACTION_LAG_MS`] plus the log cleaner's backoff (15 s by
//! default), unless the broker's cleaner is off or behind.
//! [`KeysTopic::connect`] refuses a keys topic that is not compacted.
//!
//! # Writes and reads
//!
//! [`KeysTopic::publish`] sends entries to one partition, in order, with an
//! idempotent `acks=all` producer, and returns once every one is
//! acknowledged. On Kafka the engine publishes its shard's entries through
//! the shard's transactional producer instead ([`crate::txn`]), in the
//! same transaction as the audit records; [`KeysTopic::read`] reads
//! `read_committed`, so it never sees a fenced zombie's entries. [`KeysTopic::read`] reads a partition from its start to its
//! end offset and returns the last value of each key, tombstoned keys
//! removed: what compaction will leave, whether or not it ran yet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{
    dispose, is_transient, metadata_client, producer_config, reader_config, topic_counts, Client,
    ReaderConsumer, ReaderContext, REQUEST_TIMEOUT,
};
use crate::{BusError, PUBLISH_RECORDS_MAX};

/// The keys topic's name without prefix.
pub const KEYS_TOPIC_SUFFIX: &str = "keys";
/// `max.compaction.lag.ms` and `segment.ms` of the keys topic: the bound on
/// how long a superseded or tombstoned value stays in the partition.
pub const KEYS_COMPACTION_LAG_MS: u64 = 3_600_000;
/// `min.cleanable.dirty.ratio` of the keys topic: compact as soon as there
/// is anything to remove.
pub const KEYS_DIRTY_RATIO: &str = "0.01";
/// `delete.retention.ms` of the keys topic: how long a tombstone itself is
/// kept (it holds no secret), so a reader in the middle of a read sees it.
pub const KEYS_DELETE_RETENTION_MS: u64 = 86_400_000;
/// Most live entries [`KeysTopic::read`] returns for one partition.
pub const KEYS_ENTRIES_MAX: usize = 4_000_000;
/// Longest a [`KeysTopic::read`] may take.
pub const KEYS_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// A topic record: key and value, or key and tombstone (`None`).
pub type KeyEntry = (Vec<u8>, Option<Vec<u8>>);

/// The keys topic's full name under `prefix`.
pub fn keys_topic_name(prefix: &str) -> String {
    format!("{prefix}{KEYS_TOPIC_SUFFIX}")
}

/// The keys topic as [`crate::KafkaBus::create_topics`] creates it.
pub(crate) fn new_keys_topic(name: &str, partitions: i32) -> NewTopic<'_> {
    // The strings must outlive the NewTopic: leak-free constants only.
    const LAG: &str = "3600000";
    const DELETE_RETENTION: &str = "86400000";
    const _: () = assert!(KEYS_COMPACTION_LAG_MS == 3_600_000);
    const _: () = assert!(KEYS_DELETE_RETENTION_MS == 86_400_000);
    NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", KEYS_DIRTY_RATIO)
        .set("max.compaction.lag.ms", LAG)
        .set("segment.ms", LAG)
        .set("delete.retention.ms", DELETE_RETENTION)
        .set("retention.ms", "-1")
        .set("message.timestamp.type", "CreateTime")
}

/// The keys topic of one cluster. See the module documentation.
pub struct KeysTopic {
    bootstrap: String,
    name: String,
    partitions: u32,
    producer: Option<FutureProducer>,
}

impl std::fmt::Debug for KeysTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysTopic")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KeysTopic {
    /// Connects to the keys topic under `prefix`, which must exist and be
    /// compacted ([`BusError::TopicsMissing`], [`BusError::InvalidConfig`]).
    pub async fn connect(bootstrap: &str, prefix: &str) -> Result<KeysTopic, BusError> {
        let name = keys_topic_name(prefix);
        let meta = metadata_client(bootstrap)?;
        let counts = topic_counts(&meta, bootstrap).await;
        dispose(vec![Client::Consumer(meta)], "metadata client");
        let partitions = match counts?.get(&name) {
            Some(&(n, _)) if n > 0 => n,
            _ => {
                return Err(BusError::TopicsMissing {
                    bootstrap: bootstrap.to_owned(),
                    missing: vec![name],
                })
            }
        };
        let policy = cleanup_policy(bootstrap, &name).await?;
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return Err(BusError::InvalidConfig {
                detail: format!(
                    "the keys topic {name} has cleanup.policy={policy}, not compact: old key \
                     material would stay on it and a forget would never be final; delete it and \
                     run `twinlog topics create`, or set cleanup.policy=compact"
                ),
            });
        }
        let producer = producer_config(bootstrap)
            .create::<FutureProducer>()
            .map_err(|e| BusError::kafka(format!("create a producer for {bootstrap}"), e))?;
        Ok(KeysTopic {
            bootstrap: bootstrap.to_owned(),
            name,
            partitions,
            producer: Some(producer),
        })
    }

    /// The topic's full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    fn kafka_partition(&self, partition: u32) -> Result<i32, BusError> {
        if partition >= self.partitions {
            return Err(BusError::InvalidConfig {
                detail: format!(
                    "the keys topic {} has {} partitions, no partition {partition}",
                    self.name, self.partitions
                ),
            });
        }
        i32::try_from(partition).map_err(|_| BusError::InvalidConfig {
            detail: format!("partition {partition} does not fit kafka's partition numbers"),
        })
    }

    /// Writes `entries` to `partition`, in order, and returns once every one
    /// is acknowledged by all in-sync replicas. On an error some may be
    /// written: entries are idempotent (a later value of a key wins), so the
    /// caller publishes them again.
    pub async fn publish(&self, partition: u32, entries: Vec<KeyEntry>) -> Result<(), BusError> {
        let kafka_partition = self.kafka_partition(partition)?;
        let producer = self.producer.as_ref().ok_or(BusError::Closed)?;
        let what = |key: &[u8]| {
            format!(
                "publish {} to {} partition {partition}",
                String::from_utf8_lossy(key),
                self.name
            )
        };
        for chunk in entries.chunks(PUBLISH_RECORDS_MAX) {
            let mut deliveries = Vec::with_capacity(chunk.len());
            for (key, value) in chunk {
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.name)
                    .key(&key[..])
                    .partition(kafka_partition);
                if let Some(value) = value {
                    record = record.payload(&value[..]);
                }
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| BusError::kafka(what(key), e))?;
                deliveries.push((key, delivery));
            }
            for (key, delivery) in deliveries {
                delivery
                    .await
                    .map_err(|_| BusError::Closed)?
                    .map_err(|(e, _)| BusError::kafka(what(key), e))?;
            }
        }
        Ok(())
    }

    /// The live entries of `partition`: the last value of each key, keys
    /// whose last record is a tombstone left out.
    pub async fn read(&self, partition: u32) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, BusError> {
        let kafka_partition = self.kafka_partition(partition)?;
        let bootstrap = self.bootstrap.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = reader_config(&bootstrap)
                .create_with_context::<_, ReaderConsumer>(ReaderContext)
                .map_err(|e| BusError::kafka(format!("create a reader of {name}"), e))?;
            let outcome = read_partition(&consumer, &name, kafka_partition);
            dispose(vec![Client::Reader(consumer)], "keys topic reader");
            outcome
        })
        .await
        .map_err(|_| BusError::Closed)?
    }

    /// Flushes and destroys the producer (off this thread), waiting at most
    /// `timeout`.
    pub async fn close(mut self, timeout: Duration) -> bool {
        let Some(producer) = self.producer.take() else {
            return true;
        };
        let done = dispose(vec![Client::Producer(producer)], "keys topic");
        tokio::task::spawn_blocking(move || done.recv_timeout(timeout).is_ok())
            .await
            .unwrap_or(false)
    }
}

impl Drop for KeysTopic {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            dispose(vec![Client::Producer(producer)], "keys topic");
        }
    }
}

/// Reads one partition from its start to the end offset it had when the
/// read began. Blocking.
fn read_partition(
    consumer: &ReaderConsumer,
    name: &str,
    partition: i32,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, BusError> {
    let deadline = Instant::now() + KEYS_READ_TIMEOUT;
    let context = || format!("read {name} partition {partition}");
    let (low, high) = loop {
        match consumer.fetch_watermarks(name, partition, REQUEST_TIMEOUT) {
            Ok(marks) => break marks,
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(BusError::kafka(context(), e)),
        }
    };
    let mut live = BTreeMap::new();
    if high <= low {
        return Ok(live);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(name, partition, Offset::Offset(low))
        .map_err(|e| BusError::kafka(context(), e))?;
    consumer
        .assign(&assignment)
        .map_err(|e| BusError::kafka(context(), e))?;
    // Compaction leaves gaps in the offsets: read until the last offset
    // below the end is passed.
    let mut next = low;
    while next < high {
        let now = Instant::now();
        if now >= deadline {
            return Err(BusError::kafka(
                format!("{} (timed out at offset {next} of {high})", context()),
                KafkaError::NoMessageReceived,
            ));
        }
        let Some(polled) = consumer.poll((deadline - now).min(Duration::from_secs(1))) else {
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            // Past the last committed entry: only transaction markers or
            // aborted entries (see `crate::txn`) lie between it and `high`.
            Err(KafkaError::PartitionEOF(_)) => break,
            Err(e) => return Err(BusError::kafka(context(), e)),
        };
        next = message.offset().saturating_add(1);
        let Some(key) = message.key() else { continue };
        match message.payload() {
            Some(value) => {
                live.insert(key.to_vec(), value.to_vec());
                if live.len() > KEYS_ENTRIES_MAX {
                    return Err(BusError::InvalidConfig {
                        detail: format!(
                            "{name} partition {partition} holds more than {KEYS_ENTRIES_MAX} live entries"
                        ),
                    });
                }
            }
            None => {
                live.remove(key);
            }
        }
    }
    Ok(live)
}

/// The `cleanup.policy` of topic `name`.
async fn cleanup_policy(bootstrap: &str, name: &str) -> Result<String, BusError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| BusError::kafka(format!("create an admin client for {bootstrap}"), e))?;
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &options)
        .await;
    dispose(vec![Client::Admin(admin)], "admin client");
    let what = || format!("describe the configuration of {name}");
    let mut results = described.map_err(|e| BusError::kafka(what(), e))?;
    let resource = results
        .pop()
        .ok_or_else(|| BusError::kafka(what(), KafkaError::NoMessageReceived))?
        .map_err(|code| BusError::kafka(what(), KafkaError::AdminOp(code)))?;
    Ok(resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
        .unwrap_or_else(|| "delete".to_owned()))
}
