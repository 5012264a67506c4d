//! The bus's integration tests: the conformance suite against the embedded
//! bus, and what only the embedded bus promises (durability across reopen
//! and kill -9, group commit, no sled blobs).

mod conformance;
mod embedded;
mod kafka;
mod kill9;

use std::path::Path;
use std::sync::Arc;

use twinlog_bus::{EmbeddedBus, EmbeddedConfig};

/// Opens (or creates) an embedded bus of `partitions` partitions in `dir`.
pub fn open(dir: &Path, partitions: u32) -> Arc<EmbeddedBus> {
    let config = EmbeddedConfig {
        partitions,
        ..EmbeddedConfig::default()
    };
    Arc::new(EmbeddedBus::open(dir, config).expect("open embedded bus"))
}
