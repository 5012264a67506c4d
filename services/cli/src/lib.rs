//! The glue between twinlog's parts, and the `twinlog` command line. This
//! crate owns the pipeline that turns normalised events into appended audit
//! records: it runs the pure engine (`decide`, `evolve`), seals each fact's
//! personal content with the vault before the record is hashed, and appends
//! whole batches to the audit log with one fsync. It also reads records back,
//! decrypted where the customer has not been forgotten.

pub mod config;
pub mod escrow;
pub mod pipeline;
pub mod restore;
pub mod runner;
pub mod serve;

pub use pipeline::{AppendReport, PipelineError, RecordView, Twinlog, APPEND_BATCH_INPUTS_MAX};
