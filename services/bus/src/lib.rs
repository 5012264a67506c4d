//! twinlog's bus: the durable, partitioned log of input records between the
//! ingestor (and send gateway) and the engine. This crate owns the [`Bus`]
//! trait, the five input topics and the audit topic ([`Topic`]) with their fixed merge rank, the
//! partitioner ([`partition_for`], byte for byte Kafka's default
//! partitioner), the limits every implementation enforces, the embedded
//! implementation ([`EmbeddedBus`], an in-process durable log on sled) and,
//! behind the `conformance` feature, the test suite that every
//! implementation must pass (`conformance`), and on Kafka the compacted
//! keys topic ([`keys`]) where engines keep shards' wrapped key material.
//! It knows nothing of what a payload means: records are opaque bytes with
//! a key and a timestamp.
//!
//! **Invariant:** a position returned by [`Bus::publish`] is durable: the
//! record is fsynced (embedded) or acknowledged by every in-sync replica
//! (Kafka) before `publish` returns. A reader never sees a record that is
//! not yet durable.
//!
//! **Invariant:** the offsets of one topic-partition are contiguous from 0.
//! Nothing is ever updated or removed.
//!
//! **Invariant:** a record's partition is [`partition_for`] of its key, in
//! every topic and in every implementation, so all of one phone number's
//! records land on the same partition index in every topic.
//!
//! The bus keeps no consumer positions: consumers store their own (the
//! engine stores them in the same sled batch as the audit records they
//! produced), and read from there.

use std::future::Future;
use std::time::Duration;

pub mod embedded;
mod error;
pub mod group;
pub mod kafka;
pub mod keys;
mod partition;
mod topic;
pub mod txn;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use embedded::{EmbeddedBus, EmbeddedConfig, EmbeddedStats};
pub use error::BusError;
pub use group::{GroupEvent, Membership};
pub use kafka::KafkaBus;
pub use keys::KeysTopic;
pub use partition::{key_for_partition, murmur2, partition_for};
pub use topic::{Topic, DEFAULT_TOPIC_PREFIX};
pub use txn::{SeqRecord, ShardProducer};

/// Most records in one [`Bus::publish`]. A webhook body holds far fewer
/// events; a history chunk of a few hundred messages fits.
pub const PUBLISH_RECORDS_MAX: usize = 4096;

/// Most bytes of one record's payload. Meta's webhook bodies stay well
/// below this. (A Kafka deployment must raise the broker's and topics'
/// `message.max.bytes` and the producer's to match.)
pub const PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most bytes of one record's key. Keys are `phone_number_id`s: about 15
/// digits.
pub const KEY_BYTES_MAX: usize = 256;

/// Most payload and key bytes in one [`Bus::publish`], summed over its
/// records.
pub const PUBLISH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most records one [`Bus::read`] returns; a larger `max` is clamped.
pub const READ_RECORDS_MAX: usize = 1024;

/// Most payload bytes one [`Bus::read`] returns, except that a read that
/// finds records always returns at least one, whatever its size (as Kafka's
/// `fetch.max.bytes`).
pub const READ_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most partitions per topic.
pub const PARTITIONS_MAX: u32 = 1024;

/// A record to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: Topic,
    /// The business `phone_number_id`; it decides the partition.
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// The record's timestamp (Kafka's `CreateTime`): the ingest time, in
    /// milliseconds since the Unix epoch; never negative.
    pub timestamp_ms: i64,
}

/// Where a published record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub topic: Topic,
    pub partition: u32,
    pub offset: u64,
}

/// A record read back from the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusRecord {
    pub topic: Topic,
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub timestamp_ms: i64,
}

impl BusRecord {
    pub fn position(&self) -> Position {
        Position {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A durable, partitioned log of the five input topics and the audit topic. Implementations:
/// [`EmbeddedBus`] (in-process, sled) and [`KafkaBus`]. Both pass
/// the `conformance` suite.
///
/// Every implementation checks the same limits ([`PUBLISH_RECORDS_MAX`],
/// [`PUBLISH_BYTES_MAX`], [`PAYLOAD_BYTES_MAX`], [`KEY_BYTES_MAX`],
/// [`READ_RECORDS_MAX`], [`READ_BYTES_MAX`]) and refuses work it cannot
/// queue with [`BusError::Overloaded`] rather than growing memory.
pub trait Bus: Send + Sync + 'static {
    /// Appends records durably (fsynced / acked by all in-sync replicas)
    /// before it returns their positions, in order. Each record goes to
    /// partition [`partition_for`]`(key, self.partitions())` of its topic.
    ///
    /// An empty `records` returns an empty `Vec` at once. On an error other
    /// than a limit or [`BusError::Overloaded`], the outcome is unknown:
    /// some or all records may be durable; a retry may duplicate them (the
    /// engine deduplicates on natural keys).
    fn publish(
        &self,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<Vec<Position>, BusError>> + Send;

    /// Partitions per topic; the same for every topic.
    fn partitions(&self) -> u32;

    /// Up to `max` records of one topic-partition from `offset` on; if there
    /// are none yet, waits up to `wait` for some.
    ///
    /// Returns records with contiguous offsets starting at `offset`, at most
    /// `min(max, READ_RECORDS_MAX)` of them and, past the first,
    /// [`READ_BYTES_MAX`] payload bytes. An empty result means "nothing at
    /// `offset` yet".
    fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<BusRecord>, BusError>> + Send;

    /// The next offset to be written in a topic-partition.
    fn end_offset(
        &self,
        topic: Topic,
        partition: u32,
    ) -> impl Future<Output = Result<u64, BusError>> + Send;
}

/// Checks a publish against the limits shared by every implementation.
/// Implementations call it first, so a refused publish writes nothing.
pub fn check_publish(records: &[OutRecord]) -> Result<(), BusError> {
    if records.len() > PUBLISH_RECORDS_MAX {
        return Err(BusError::TooManyRecords {
            records: records.len(),
            limit: PUBLISH_RECORDS_MAX,
        });
    }
    let mut bytes_total: usize = 0;
    for (index, record) in records.iter().enumerate() {
        if record.key.len() > KEY_BYTES_MAX {
            return Err(BusError::KeyTooLarge {
                index,
                bytes: record.key.len(),
                limit: KEY_BYTES_MAX,
            });
        }
        if record.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(BusError::PayloadTooLarge {
                index,
                bytes: record.payload.len(),
                limit: PAYLOAD_BYTES_MAX,
            });
        }
        if record.timestamp_ms < 0 {
            return Err(BusError::NegativeTimestamp {
                index,
                timestamp_ms: record.timestamp_ms,
            });
        }
        bytes_total = bytes_total
            .saturating_add(record.key.len())
            .saturating_add(record.payload.len());
    }
    if bytes_total > PUBLISH_BYTES_MAX {
        return Err(BusError::PublishTooLarge {
            bytes: bytes_total,
            limit: PUBLISH_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks that `partition` exists in a bus of `partitions` partitions.
pub fn check_partition(topic: Topic, partition: u32, partitions: u32) -> Result<(), BusError> {
    if partition >= partitions {
        return Err(BusError::UnknownPartition {
            topic,
            partition,
            partitions,
        });
    }
    Ok(())
}
