//! Fencing on Kafka: one transactional producer per audit shard.
//!
//! A [`ShardProducer`] has `transactional.id = PREFIX + "shard-" + p`. Its
//! [`ShardProducer::init`] (`init_transactions`) bumps the id's epoch on the
//! broker: any older producer with the same id (a zombie engine: paused,
//! partitioned, past its session timeout) is *fenced*, and its next
//! transactional call fails with [`BusError::Fenced`]; a transaction it left
//! open is aborted. [`ShardProducer::commit`] writes a batch's key changes
//! (keys topic, partition p) and its audit records (audit topic, partition
//! p) in one transaction: a `read_committed` reader sees all of them or
//! none, and never anything a fenced producer sent.
//!
//! # The audit topic's offsets under transactions
//!
//! Every transaction leaves a commit (or abort) marker in each partition it
//! wrote, and the marker takes an offset; aborted records take offsets too.
//! So on Kafka the audit topic's *Kafka* offsets are no longer the records'
//! `seq`. Each audit record therefore carries its seq in the header
//! [`SEQ_HEADER`] (8 bytes, big-endian), and [`KafkaBus`](crate::KafkaBus)
//! reads the audit topic by that *logical* offset: `read(Audit, p, n)`
//! returns the committed records from seq `n` on, with `offset` = seq, and
//! `end_offset(Audit, p)` is the seq after the last committed record (found
//! below the last stable offset), so the [`Bus`](crate::Bus) contract
//! (offsets contiguous from 0) still holds for every reader. A record
//! without the header (written before fencing, or by a non-transactional
//! publish) has logical offset = Kafka offset, as before.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::kafka::{dispose, producer_config, Client};
use crate::keys::{keys_topic_name, KeyEntry};
use crate::{check_publish, BusError, OutRecord, Topic, PUBLISH_RECORDS_MAX};

/// The header that carries an audit record's seq on Kafka.
pub const SEQ_HEADER: &str = "twinlog-seq";

/// How long `init_transactions`, a commit or an abort may take.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// `transaction.timeout.ms`: how long the broker keeps a transaction open
/// before it aborts it (a producer that died mid-transaction blocks
/// `read_committed` readers of the partition at most this long, unless a
/// new owner's `init_transactions` aborts it first).
pub const TRANSACTION_TIMEOUT_MS: u64 = 60_000;

/// The `transactional.id` of shard `partition` under `prefix`.
pub fn transactional_id(prefix: &str, partition: u32) -> String {
    format!("{prefix}shard-{partition}")
}

/// An audit record to publish in a transaction, with its seq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqRecord {
    pub seq: u64,
    pub record: OutRecord,
}

/// The transactional producer of one audit shard. See the module
/// documentation.
pub struct ShardProducer {
    partition: u32,
    kafka_partition: i32,
    audit: String,
    keys: String,
    producer: Option<FutureProducer>,
}

impl std::fmt::Debug for ShardProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardProducer")
            .field("partition", &self.partition)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl ShardProducer {
    /// Creates shard `partition`'s producer and initialises its
    /// transactions, which fences every earlier producer of the shard and
    /// aborts a transaction one left open. Blocks a worker thread.
    pub async fn init(
        bootstrap: &str,
        prefix: &str,
        partition: u32,
    ) -> Result<ShardProducer, BusError> {
        let kafka_partition = i32::try_from(partition).map_err(|_| BusError::InvalidConfig {
            detail: format!("partition {partition} does not fit kafka's partition numbers"),
        })?;
        let id = transactional_id(prefix, partition);
        let producer = producer_config(bootstrap)
            .set("transactional.id", &id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
            .create::<FutureProducer>()
            .map_err(|e| BusError::kafka(format!("create the producer {id}"), e))?;
        let p = producer.clone();
        let initialised = tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(|_| BusError::Closed)?;
        if let Err(e) = initialised {
            dispose(vec![Client::Producer(producer)], "shard producer");
            return Err(classify(partition, &format!("initialise {id}"), e, None));
        }
        tracing::info!(message = "shard producer initialised", partition, transactional_id = %id);
        Ok(ShardProducer {
            partition,
            kafka_partition,
            audit: Topic::Audit.name(prefix),
            keys: keys_topic_name(prefix),
            producer: Some(producer),
        })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Writes `keys` (keys topic, partition p, in order) then `audit`
    /// (audit topic, partition p, each with its seq header) in one
    /// transaction, and returns once it is committed. On an error nothing
    /// of it is visible to `read_committed` readers unless the commit's
    /// outcome is unknown (a timeout): the caller then finds the topic's
    /// end again before it publishes. [`BusError::Fenced`] and
    /// [`BusError::ProducerFatal`] are final.
    pub async fn commit(&self, keys: &[KeyEntry], audit: &[SeqRecord]) -> Result<(), BusError> {
        if keys.is_empty() && audit.is_empty() {
            return Ok(());
        }
        for chunk in audit.chunks(PUBLISH_RECORDS_MAX) {
            let records: Vec<OutRecord> = chunk.iter().map(|r| r.record.clone()).collect();
            check_publish(&records)?;
        }
        let producer = self.producer.as_ref().ok_or(BusError::Closed)?;
        let partition = self.partition;
        producer
            .begin_transaction()
            .map_err(|e| classify(partition, "begin a transaction", e, Some(producer)))?;
        match self.send_all(producer, keys, audit).await {
            Ok(()) => {}
            Err(error) => {
                self.abort().await;
                return Err(error);
            }
        }
        let p = producer.clone();
        let committed = tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT))
            .await
            .map_err(|_| BusError::Closed)?;
        if let Err(e) = committed {
            let error = classify(partition, "commit a transaction", e.clone(), Some(producer));
            if !error.is_fatal() {
                if let KafkaError::Transaction(t) = &e {
                    if t.txn_requires_abort() {
                        self.abort().await;
                    }
                }
            }
            return Err(error);
        }
        Ok(())
    }

    async fn send_all(
        &self,
        producer: &FutureProducer,
        keys: &[KeyEntry],
        audit: &[SeqRecord],
    ) -> Result<(), BusError> {
        let partition = self.partition;
        let mut deliveries = Vec::with_capacity(keys.len() + audit.len());
        for (key, value) in keys {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.keys)
                .key(&key[..])
                .partition(self.kafka_partition);
            if let Some(value) = value {
                record = record.payload(&value[..]);
            }
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| classify(partition, "send key material", e, Some(producer)))?;
            deliveries.push(delivery);
        }
        for r in audit {
            let seq = r.seq.to_be_bytes();
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: SEQ_HEADER,
                value: Some(&seq[..]),
            });
            let record = FutureRecord::to(&self.audit)
                .key(&r.record.key[..])
                .payload(&r.record.payload[..])
                .partition(self.kafka_partition)
                .timestamp(r.record.timestamp_ms)
                .headers(headers);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| classify(partition, "send an audit record", e, Some(producer)))?;
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            delivery
                .await
                .map_err(|_| BusError::Closed)?
                .map_err(|(e, _)| classify(partition, "deliver a record", e, Some(producer)))?;
        }
        Ok(())
    }

    async fn abort(&self) {
        let Some(producer) = self.producer.as_ref() else {
            return;
        };
        let p = producer.clone();
        let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await;
        if let Ok(Err(error)) = aborted {
            tracing::warn!(message = "aborting a transaction failed", partition = self.partition, %error);
        }
    }

    /// Destroys the producer (off this thread), waiting at most `timeout`.
    pub async fn close(mut self, timeout: Duration) -> bool {
        let Some(producer) = self.producer.take() else {
            return true;
        };
        let done = dispose(vec![Client::Producer(producer)], "shard producer");
        tokio::task::spawn_blocking(move || done.recv_timeout(timeout).is_ok())
            .await
            .unwrap_or(false)
    }
}

impl Drop for ShardProducer {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            dispose(vec![Client::Producer(producer)], "shard producer");
        }
    }
}

fn is_fence_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// Maps a producer error: fenced, fatal, or a retryable Kafka error.
fn classify(
    partition: u32,
    action: &str,
    error: KafkaError,
    producer: Option<&FutureProducer>,
) -> BusError {
    if error.rdkafka_error_code().is_some_and(is_fence_code) {
        return BusError::Fenced { partition };
    }
    let fatal = match &error {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    };
    if let Some((code, detail)) = producer.and_then(|p| p.client().fatal_error()) {
        if is_fence_code(code) {
            return BusError::Fenced { partition };
        }
        return BusError::ProducerFatal { partition, detail };
    }
    if fatal {
        return BusError::ProducerFatal {
            partition,
            detail: format!("{action}: {error}"),
        };
    }
    BusError::kafka(format!("{action} (shard {partition})"), error)
}
