//! Errors of the ingestor. Each `Display` says what this layer was doing,
//! names the object and, where there is one, the next step; the cause is in
//! `source()`.

use std::path::PathBuf;

use twinlog_bus::BusError;

use crate::ReprocessReport;

/// A failure of the ingestor's configuration, storage or bus. Expected
/// outcomes of a delivery (rejected, dead-lettered) are not errors: they are
/// answered over HTTP and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("no app secret configured: set at least one (Meta App Dashboard > App settings > Basic > App secret)")]
    NoAppSecret,

    #[error(
        "app secret {index} is empty: remove it or set the app secret from Meta's App Dashboard"
    )]
    EmptyAppSecret { index: usize },

    #[error("verify token is empty: set the token you entered in Meta's webhook configuration")]
    EmptyVerifyToken,

    #[error("invalid ingest configuration: {detail}")]
    InvalidConfig { detail: String },

    #[error("failed to create the ingest directory {}: check that its parent exists and is writable", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to open the raw-body store {}: is another ingestor using this directory?", path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("raw-body store {} has format {found}, this build reads format {expected}: use a matching twinlog build", path.display())]
    UnknownFormat {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("failed to {action} in the raw-body store: check the disk, then retry")]
    Store {
        action: &'static str,
        #[source]
        source: sled::Error,
    },

    #[error("failed to {action} the day-key file {}: check the disk and its permissions", path.display())]
    KeyFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("day-key file {} is corrupt ({detail}): restore it from a backup; without it the stored bodies are unreadable", path.display())]
    KeyFileCorrupt { path: PathBuf, detail: String },

    #[error("day-key file holds {limit} keys, its limit: run purge_expired (is the retention set far too long?)")]
    TooManyDayKeys { limit: usize },

    #[error("raw body {seq} is corrupt: {detail}")]
    CorruptBody { seq: u64, detail: String },

    #[error("failed to encrypt raw body {seq}")]
    Encrypt { seq: u64 },

    #[error("failed to decrypt raw body {seq} with its day key: was the day-key file replaced?")]
    Decrypt { seq: u64 },

    #[error("a blocking store task failed: {detail}")]
    Task { detail: String },

    #[error("reprocessing stopped after {} dead letters were republished: the bus failed; run reprocess again when it is available", done.republished)]
    ReprocessInterrupted {
        done: ReprocessReport,
        #[source]
        source: BusError,
    },
}
