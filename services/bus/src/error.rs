//! Errors of the bus. Each `Display` says what this layer was doing and
//! names the object; the cause is in `source()`, printed once at the top.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Topic;

/// A publish or read the bus refused, or a failure of its storage.
///
/// [`BusError::is_overload`] tells the errors a caller should answer with a
/// 503 (try again later) from the others.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    #[error("publish of {records} records exceeds the limit of {limit} records")]
    TooManyRecords { records: usize, limit: usize },

    #[error("publish of {bytes} bytes exceeds the limit of {limit} bytes")]
    PublishTooLarge { bytes: usize, limit: usize },

    #[error("payload of record {index} is {bytes} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },

    #[error("key of record {index} is {bytes} bytes, over the limit of {limit} bytes")]
    KeyTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },

    #[error("timestamp of record {index} is negative ({timestamp_ms} ms)")]
    NegativeTimestamp { index: usize, timestamp_ms: i64 },

    #[error("partition {partition} of topic {topic} does not exist: the bus has {partitions} partitions")]
    UnknownPartition {
        topic: Topic,
        partition: u32,
        partitions: u32,
    },

    #[error("bus is overloaded: {what} is full")]
    Overloaded { what: &'static str },

    #[error("bus is closed")]
    Closed,

    #[error("bus has failed after an earlier storage error and must be reopened")]
    Failed,

    #[error("invalid bus configuration: {detail}")]
    InvalidConfig { detail: String },

    #[error("bus at {} was created with {stored} partitions, not {requested}; the partition count of a bus never changes", dir.display())]
    PartitionCountMismatch {
        dir: PathBuf,
        stored: u32,
        requested: u32,
    },

    #[error("bus at {} has storage format {found}, this build reads format {expected}", dir.display())]
    UnknownFormat {
        dir: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("failed to {action}")]
    Io {
        action: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("failed to open the bus database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<sled::Error>,
    },

    #[error("failed to {action} in the bus database")]
    Storage {
        action: String,
        #[source]
        source: Arc<sled::Error>,
    },

    #[error("failed to {action} on kafka")]
    Kafka {
        action: String,
        #[source]
        source: Arc<rdkafka::error::KafkaError>,
    },

    #[error("kafka at {bootstrap} lacks the bus topics {}: run `twinlog topics create --partitions N` first", missing.join(", "))]
    TopicsMissing {
        bootstrap: String,
        missing: Vec<String>,
    },

    #[error("kafka topics at {bootstrap} have different partition counts ({}); every bus topic needs the same count: run `twinlog topics create --partitions N` on a fresh prefix", counts.iter().map(|(t, n)| format!("{t}: {n}")).collect::<Vec<_>>().join(", "))]
    TopicPartitionsDiffer {
        bootstrap: String,
        counts: Vec<(String, u32)>,
    },

    /// Another producer with this shard's `transactional.id` initialised
    /// after this one: another engine took the shard over. Fatal for the
    /// producer; the shard must stop.
    #[error("shard {partition} was taken over by another engine: fenced")]
    Fenced { partition: u32 },

    /// The transactional producer of a shard failed for good (a fatal
    /// error other than fencing); the shard must stop and be opened again.
    #[error("the transactional producer of shard {partition} failed for good: {detail}")]
    ProducerFatal { partition: u32, detail: String },

    #[error("corrupt bus record at {topic} partition {partition} offset {offset}: {detail}")]
    Corrupt {
        topic: Topic,
        partition: u32,
        offset: u64,
        detail: String,
    },
}

impl BusError {
    /// True for a refusal because the bus is busy: the caller should answer
    /// 503 and the sender retry later. Nothing was written.
    pub fn is_overload(&self) -> bool {
        matches!(self, BusError::Overloaded { .. })
    }

    /// True for a publish refused by a limit: retrying it cannot succeed.
    /// Nothing was written.
    /// True when the shard's producer was fenced by a newer owner.
    pub fn is_fenced(&self) -> bool {
        matches!(self, BusError::Fenced { .. })
    }

    /// True when retrying the call cannot help: the shard must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BusError::Fenced { .. } | BusError::ProducerFatal { .. }
        )
    }

    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            BusError::TooManyRecords { .. }
                | BusError::PublishTooLarge { .. }
                | BusError::PayloadTooLarge { .. }
                | BusError::KeyTooLarge { .. }
                | BusError::NegativeTimestamp { .. }
        )
    }

    pub(crate) fn kafka(action: impl Into<String>, source: rdkafka::error::KafkaError) -> BusError {
        BusError::Kafka {
            action: action.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn storage(action: impl Into<String>, source: sled::Error) -> BusError {
        BusError::Storage {
            action: action.into(),
            source: Arc::new(source),
        }
    }
}
