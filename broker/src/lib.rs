//! The broker library (see `run`).
pub mod config;
pub mod discovery;
pub mod keeper;
pub mod metrics;
pub mod router;
pub mod secrets;
pub mod store;
pub mod terminal;
