//! Errors: what this layer was doing, with the cause.

use twinlog_bus::BusError;

/// A failure of the view store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the view store in {dir}")]
    Open {
        dir: String,
        #[source]
        source: sled::Error,
    },
    #[error("failed to {what}")]
    Sled {
        what: String,
        #[source]
        source: sled::Error,
    },
    #[error("the view store is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("the view store's commit lock is poisoned")]
    Poisoned,
}

/// A failure of the projection worker: it stops the partition's worker, and
/// [`crate::Projector::run`] returns it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("failed to {what} of audit partition {partition} after {attempts} attempts")]
    Bus {
        partition: u32,
        what: String,
        attempts: u32,
        #[source]
        source: BusError,
    },
    #[error("audit partition {partition} offset {offset} is not an audit record")]
    Undecodable {
        partition: u32,
        offset: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("audit partition {partition} offset {offset} holds the record of seq {seq}")]
    SeqMismatch {
        partition: u32,
        offset: u64,
        seq: u64,
    },
    #[error(
        "the views of partition {partition} are applied through seq {applied_through}, but the audit topic ends at {end}"
    )]
    ViewsAhead {
        partition: u32,
        applied_through: u64,
        end: u64,
    },
    #[error("failed to store the views of partition {partition}")]
    Store {
        partition: u32,
        #[source]
        source: StoreError,
    },
    #[error("the applier of partition {partition} stopped unexpectedly")]
    Stopped { partition: u32 },
}
