//! The sans-IO device client.
mod event;
pub use event::{DisconnectReason, Event};
