//! The whole state of a [`Views`] as one protobuf message
//! (`ViewsSnapshot`), so that a worker can store it with `applied_through`
//! in one batch and resume after a restart without a rebuild.

use prost::Message as _;
use twinlog_proto::v1::ViewsSnapshot;

use crate::Views;

/// The snapshot format this crate writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("views snapshot is not protobuf: {0}")]
    Decode(String),
    #[error("views snapshot format {0} is not {SNAPSHOT_FORMAT}")]
    Format(u32),
    #[error("views snapshot: invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
}

impl SnapshotError {
    pub(crate) fn invalid(what: &'static str, value: impl ToString) -> SnapshotError {
        SnapshotError::Invalid {
            what,
            value: value.to_string(),
        }
    }
}

impl Views {
    /// The views and their working state, as a message.
    pub fn snapshot(&self) -> ViewsSnapshot {
        let mut s = ViewsSnapshot {
            format: SNAPSHOT_FORMAT,
            applied_through: self.applied_through,
            clock: self.clock,
            ..ViewsSnapshot::default()
        };
        self.crm.save(&mut s);
        self.health.save(&mut s);
        self.ledger.save(&mut s);
        s
    }

    /// The snapshot's protobuf bytes (deterministic).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.snapshot().encode_to_vec()
    }

    /// Views restored from a snapshot: equal to the views it was taken from.
    pub fn from_snapshot(s: &ViewsSnapshot) -> Result<Views, SnapshotError> {
        if s.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format(s.format));
        }
        Ok(Views {
            applied_through: s.applied_through,
            clock: s.clock,
            crm: crate::crm::Crm::load(s),
            health: crate::health::Health::load(s),
            ledger: crate::ledger::Ledger::load(s)?,
        })
    }

    /// Views restored from snapshot bytes.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Views, SnapshotError> {
        let s = ViewsSnapshot::decode(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        Views::from_snapshot(&s)
    }
}
