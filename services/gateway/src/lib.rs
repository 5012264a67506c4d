//! twinlog's send gateway and Graph API simulator. The gateway takes Cloud
//! API send bodies (`POST /v1/messages/{phone_number_id}`), holds each
//! number to its coexistence throughput and each customer to Meta's pair
//! rate, forwards to the Graph API, and records every accepted send as an
//! `api_send` event on the bus: the only way twinlog learns what the API
//! sent. The simulator answers as Meta documents, for tests.
//!
//! # Modules
//!
//! - [`send`]: send bodies: validation (shared by gateway and simulator)
//!   and the `Message` a send records.
//! - [`gateway`]: the gateway ([`Gateway`], [`GatewayConfig`]).
//! - [`simulator`]: the Graph API simulator ([`simulator::router`],
//!   [`simulator::Simulator`]).

pub mod gateway;
pub mod send;
pub mod simulator;

pub use gateway::{Gateway, GatewayConfig, GatewayError, GatewayStats};
