//! The broker library (see `run`).
pub mod config;
pub mod secrets;
pub mod store;
pub mod terminal;
