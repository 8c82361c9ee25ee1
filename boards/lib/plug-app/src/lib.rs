//! The part of a real board's firmware that sits above the radio or PHY, shared by every board.
//!
//! A board crate (`boards/<board>/`) brings up its clocks, its network interface (Ethernet PHY,
//! Wi-Fi radio) and an embassy-net [`Stack`](embassy_net::Stack); from there on every board runs
//! the same code, the code the virtual boards run too (the `firmware` SDK and its plug
//! application):
//!
//! ```text
//!  board main ── clocks, pins, PHY/radio, embassy-net stack, hardware RNG
//!      │
//!      ├─ record::provisioning_from_record   device id, key, brokers, seed: the flash record
//!      │                                     (shared_protocol::provision), read at boot
//!      │                                     (record::accept_at_boot: the same, refusal logged)
//!      ├─ persist::Store            boot counter + since_id in a wear-levelled flash area:
//!      │                            next boot number written before the first login;
//!      │                            persist::keep_since stores since_id now and then
//!      │                            (persist::Resume: a boot where the area is optional)
//!      ├─ entropy::BootRng          nonces where there is no hardware RNG (record seed + boot number + resets)
//!      ├─ relay::GpioRelay          the relay pin (+ a status LED mirroring it): firmware::plug::Relay
//!      ├─ app::start                DeviceClient + Dual(UDP, WebSocket) transport + Runner task
//!      │                            + Plug<Relay, SimulatedMeter> task (deliveries counted and
//!      │                            logged: deliveries::Deliveries)
//!      ├─ watchdog::feed_while_alive  the chip's watchdog, fed while the runner keeps its
//!      │                              Liveness promise
//!      └─ reset::ResetReason        why the chip started (decoded from its registers), uploaded
//!                                   once as the boot report
//! ```
//!
//! The boards without flash (host-tap, QEMU) keep the persistent area in a host file behind
//! `emulated_nor::EmulatedNor`, which holds the NOR rules; each of them brings only the file.
//!
//! Nothing here touches a register: it builds and its tests run on the host (`cargo test`).
#![no_std]

#[cfg(test)]
extern crate std;

#[macro_use]
mod fmt;

pub mod app;
pub mod deliveries;
pub mod emulated_nor;
pub mod entropy;
pub mod persist;
pub mod provision;
pub mod record;
pub mod relay;
pub mod reset;
pub mod watchdog;

pub use app::{AppMemory, StartError, start};
pub use provision::{Provisioning, WsBroker};
pub use record::{Provisioned, provisioning_from_record};
pub use relay::GpioRelay;
