//! twinlog's read side as a service: this crate owns the projection worker
//! ([`Projector`]), which folds the audit topic (through the [`Bus`] trait,
//! one in-memory [`Views`] per partition) into a sled [`Store`] of view rows
//! and numbered change events, and the query API ([`api::router`]): REST
//! reads with cursor pagination, bearer tokens limited to numbers, the change
//! feed as server-sent events, audit records with inclusion proofs (through
//! [`AuditReader`]), an OpenAPI 3.1 document, `/metrics`, `/healthz` and
//! `/readyz`. The rules live in `twinlog_projections`; this crate only
//! moves records in and rows out.
//!
//! **Invariant:** the rows a record changed, the change events it caused and
//! the partition's `applied_through` are written in one sled batch, so a
//! kill -9 neither applies a record twice nor skips one. A restarted worker
//! rebuilds its in-memory views from the audit records `0..=applied_through`
//! (read back from the bus, writing nothing) and goes on from there.
//!
//! **Invariant:** the API reads the store, never the in-memory views, and
//! serves only change events that are durable: an event id, once seen by a
//! client, names the same change forever.
//!
//! **Invariant:** every queue is bounded: the bus reader feeds the applier
//! through a channel of [`projector::QUEUE_BATCHES_MAX`] batches, a page holds
//! at most [`api::PAGE_ROWS_MAX`] rows and scans at most
//! [`store::SCAN_ROWS_MAX`], and at most [`api::SSE_STREAMS_MAX`] change
//! feeds stream at once.
//!
//! # Wiring
//!
//! ```no_run
//! # async fn wire(bus: std::sync::Arc<twinlog_bus::EmbeddedBus>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use twinlog_query::{api, Auth, NoOpener, Projector, Store};
//! let mut registry = prometheus_client::registry::Registry::default();
//! let store = Store::open(std::path::Path::new("data/views"))?;
//! let projector = Projector::new(
//!     store.clone(),
//!     twinlog_projections::Config::default(),
//!     bus,
//!     Arc::new(NoOpener),
//!     vec![0, 1],
//!     &mut registry,
//! );
//! let state = api::ApiState::new(store, Auth::new(vec![]), projector.readiness())
//!     .with_registry(Arc::new(registry));
//! let app = api::router(state);
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(projector.run(shutdown));
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`Bus`]: twinlog_bus::Bus
//! [`Views`]: twinlog_projections::Views

pub mod api;
mod audit;
mod auth;
mod error;
mod keys;
mod openapi;
pub mod projector;
pub mod store;

pub use audit::{AuditLogs, AuditReadError, AuditReader};
pub use auth::{Auth, Scope, Token};
pub use error::{ProjectorError, StoreError};
pub use openapi::openapi;
pub use projector::{NoOpener, Opener, Projector, ProjectorMetrics, Readiness};
pub use store::{Store, StoredChange};
