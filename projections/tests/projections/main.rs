//! The projections' integration tests: one binary, given/when/then.

mod billing;
mod build;
mod crm;
mod health;
mod props;
