//! Device SDK for smart plugs: `no_std`, no allocation, board-agnostic.
//!
//! (Design notes are completed as the pieces land; see docs/firmware.md.)
#![no_std]

#[cfg(test)]
extern crate std;

pub(crate) mod fmt;

pub mod api;
pub mod backoff;
pub mod client;
pub mod config;
#[cfg(feature = "embassy")]
pub mod net;
pub mod plug;
pub mod queue;
pub mod rng;
pub mod stats;
pub mod time;
