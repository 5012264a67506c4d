//! The engine's key escrow on Kafka: each shard's key material, wrapped
//! under the master key from the configuration, on the compacted keys topic
//! (`twinlog_bus::keys`; the entry format is `twinlog_vault::escrow`).
//!
//! **Invariant:** a shard publishes the key material that its new records
//! need (customer keys, the ratchet state after them, forgets) to the keys
//! topic, and waits for the acknowledgement, before it publishes those
//! records to the audit topic; so a restore never finds a record whose key
//! it lacks.

use std::path::Path;
use std::time::Duration;

use twinlog_bus::{BusError, KeysTopic};
use twinlog_vault::escrow::{escrow_records, TopicRecord};
use twinlog_vault::{EscrowEntry, KeyMaterial, MasterKey, VaultError};

/// How long the escrow retries a failing publish or read.
pub const ESCROW_RETRY_MS_MAX: u64 = 300_000;

#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error("audit shard {partition}: the keys topic failed: {what}")]
    Bus {
        partition: u32,
        what: &'static str,
        #[source]
        source: BusError,
    },
    #[error("audit shard {partition}: its key material on the keys topic cannot be used")]
    Vault {
        partition: u32,
        #[source]
        source: VaultError,
    },
    #[error("cannot connect the key escrow")]
    Connect(#[source] BusError),
    #[error("cannot load the master key")]
    MasterKey(#[source] VaultError),
}

/// The keys topic and the master key.
pub struct Escrow {
    topic: KeysTopic,
    master: MasterKey,
}

impl std::fmt::Debug for Escrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escrow")
            .field("topic", &self.topic.name())
            .field("master_key_id", &self.master.id())
            .finish()
    }
}

impl Escrow {
    /// Loads the master key file and connects to the keys topic.
    pub async fn connect(
        bootstrap: &str,
        prefix: &str,
        master_key_file: &Path,
    ) -> Result<Escrow, EscrowError> {
        let master = MasterKey::load(master_key_file).map_err(EscrowError::MasterKey)?;
        let topic = KeysTopic::connect(bootstrap, prefix)
            .await
            .map_err(EscrowError::Connect)?;
        tracing::info!(
            message = "key escrow on",
            topic = topic.name(),
            master_key_id = master.id()
        );
        Ok(Escrow { topic, master })
    }

    /// Wraps `entries` of shard `partition` and publishes them, in order,
    /// retrying for up to [`ESCROW_RETRY_MS_MAX`]. Returns once all are
    /// acknowledged.
    pub async fn publish(
        &self,
        partition: u32,
        entries: &[EscrowEntry],
    ) -> Result<(), EscrowError> {
        if entries.is_empty() {
            return Ok(());
        }
        let records: Vec<TopicRecord> = escrow_records(&self.master, partition, entries)
            .map_err(|source| EscrowError::Vault { partition, source })?;
        retry(partition, "publish key material", || {
            self.topic.publish(partition, records.clone())
        })
        .await
    }

    /// The key material of shard `partition` on the topic.
    /// `entries` as wrapped keys-topic records, for a transactional
    /// publish (`twinlog_bus::ShardProducer::commit`).
    pub fn records(
        &self,
        partition: u32,
        entries: &[EscrowEntry],
    ) -> Result<Vec<TopicRecord>, EscrowError> {
        escrow_records(&self.master, partition, entries)
            .map_err(|source| EscrowError::Vault { partition, source })
    }

    pub async fn material(&self, partition: u32) -> Result<KeyMaterial, EscrowError> {
        let live = retry(partition, "read key material", || {
            self.topic.read(partition)
        })
        .await?;
        KeyMaterial::from_entries(
            &self.master,
            partition,
            live.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .map_err(|source| EscrowError::Vault { partition, source })
    }

    /// Flushes the producer.
    pub async fn close(self, timeout: Duration) -> bool {
        self.topic.close(timeout).await
    }
}

async fn retry<T, F, Fut>(partition: u32, what: &'static str, mut call: F) -> Result<T, EscrowError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_millis(ESCROW_RETRY_MS_MAX);
    let mut delay = Duration::from_millis(10);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(error) if std::time::Instant::now() < deadline && !error.is_limit() => {
                tracing::warn!(message = "keys topic call failed; retrying", partition, what, %error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(EscrowError::Bus {
                    partition,
                    what,
                    source,
                })
            }
        }
    }
}
