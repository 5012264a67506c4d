//! The audit log as the API reads it: records by seq, inclusion proofs and
//! checkpoints. The API depends on [`AuditReader`]; [`AuditLogs`] implements
//! it over shared [`AuditLog`]s.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use twinlog_auditlog::{AuditLog, InclusionProof, LogError};

/// A failure to read the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditReadError {
    #[error("audit partition {partition} is not served here")]
    UnknownPartition { partition: u32 },
    #[error("audit partition {partition} has no record {seq} in a tree of {tree_size}")]
    OutOfRange {
        partition: u32,
        seq: u64,
        tree_size: u64,
    },
    #[error("failed to read audit partition {partition}")]
    Log {
        partition: u32,
        #[source]
        source: LogError,
    },
    #[error("the audit log of partition {partition} is locked by a failed writer")]
    Poisoned { partition: u32 },
}

/// Read access to the audit shards. Blocking: the API calls it on a
/// blocking thread.
pub trait AuditReader: Send + Sync + 'static {
    /// The partitions served, in order.
    fn partitions(&self) -> Vec<u32>;
    /// The tree size of a partition.
    fn size(&self, partition: u32) -> Result<u64, AuditReadError>;
    /// The encoded record at `seq`, with a proof that it is in the tree of
    /// `tree_size` records (the current size when `None`).
    fn record_with_proof(
        &self,
        partition: u32,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<(Vec<u8>, InclusionProof), AuditReadError>;
    /// The latest signed checkpoint note.
    fn checkpoint(&self, partition: u32) -> Result<Vec<u8>, AuditReadError>;
}

/// Audit logs shared with the shards that append to them.
#[derive(Clone, Default)]
pub struct AuditLogs {
    shards: BTreeMap<u32, Arc<RwLock<AuditLog>>>,
}

impl AuditLogs {
    pub fn new(shards: BTreeMap<u32, Arc<RwLock<AuditLog>>>) -> AuditLogs {
        AuditLogs { shards }
    }

    fn with<T>(
        &self,
        partition: u32,
        f: impl FnOnce(&AuditLog) -> Result<T, AuditReadError>,
    ) -> Result<T, AuditReadError> {
        let shard = self
            .shards
            .get(&partition)
            .ok_or(AuditReadError::UnknownPartition { partition })?;
        let log = shard
            .read()
            .map_err(|_| AuditReadError::Poisoned { partition })?;
        f(&log)
    }
}

impl AuditReader for AuditLogs {
    fn partitions(&self) -> Vec<u32> {
        self.shards.keys().copied().collect()
    }

    fn size(&self, partition: u32) -> Result<u64, AuditReadError> {
        self.with(partition, |log| Ok(log.size()))
    }

    fn record_with_proof(
        &self,
        partition: u32,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<(Vec<u8>, InclusionProof), AuditReadError> {
        self.with(partition, |log| {
            let tree_size = tree_size.unwrap_or(log.size());
            if seq >= tree_size || tree_size > log.size() {
                return Err(AuditReadError::OutOfRange {
                    partition,
                    seq,
                    tree_size,
                });
            }
            let log_err = |source| AuditReadError::Log { partition, source };
            let record = log
                .record(seq)
                .map_err(log_err)?
                .ok_or(AuditReadError::OutOfRange {
                    partition,
                    seq,
                    tree_size,
                })?;
            let proof = log.prove_inclusion(seq, tree_size).map_err(log_err)?;
            Ok((record, proof))
        })
    }

    fn checkpoint(&self, partition: u32) -> Result<Vec<u8>, AuditReadError> {
        self.with(partition, |log| {
            log.checkpoint()
                .map_err(|source| AuditReadError::Log { partition, source })
        })
    }
}
