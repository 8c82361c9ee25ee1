//! The smart-plug application: relay commands, state reports, power metering, status.
//!
//! [`Plug`] is sans-IO like the client: it reacts to client [`Event`]s
//! ([`Plug::on_event`]) and to its own timer ([`Plug::on_timer`], due at
//! [`Plug::poll_timeout`]), and talks to the broker only through [`DeviceApi`]. Boards provide
//! the hardware behind two traits: [`Relay`] and [`Meter`] ([`SimulatedMeter`] on virtual boards).
//! With the `embassy` feature, [`crate::net::run_plug`] drives it from a
//! [`crate::net::DeviceHandle`].
//!
//! Commands (name, payload -> result status and payload; see docs/firmware.md):
//! * `relay.set` with `on` / `off` (also `1` / `0`, `true` / `false`): switches the relay.
//! * `relay.toggle` (payload ignored): switches it over.
//! * `relay.get`: reports it.
//! * `meter.read`: the meter's current reading.
//! * `status`: firmware version, uptime, relay, connection statistics.
//!
//! A phone runs the same commands by sending the plug a message (through the broker; the phone
//! must be bound to the plug): the payload is the command name, optionally a space and its
//! argument (`relay.set on`, `relay.toggle`, `relay.get`). The plug answers the phone with a
//! message holding the result's JSON object (`{"relay":"on"}`, or `{"error":...}`); a relay
//! change is also uploaded as below. Messages from devices or the back end are not commands
//! and are ignored.
//!
//! Results carry a JSON object. Every relay change is also uploaded on topic `relay`, and so is
//! the state after each login; readings are uploaded on topic `power` every
//! `PlugConfig::meter_interval_ms`. The client's payload size `P` must be at least
//! [`REPORT_MAX`] (otherwise reports are refused as too large and counted as skipped).

mod meter;
mod report;

pub use meter::{Meter, Reading, SimulatedMeter};
pub use report::{REPORT_MAX, Report};

use shared_protocol::ids::{Address, Kind};

use crate::api::DeviceApi;
use crate::client::Event;
use crate::divide::{div_rem, nonzero};
use crate::fmt::{log_info, log_warn};
use crate::time::Instant;

/// Command result status: success.
pub const STATUS_OK: u16 = 0;
/// Command result status: the payload is not a valid argument for the command.
pub const STATUS_BAD_ARGUMENT: u16 = 400;
/// Command result status: the plug does not know the command.
pub const STATUS_UNKNOWN_COMMAND: u16 = 404;
/// Command result status: the hardware (relay, meter) failed.
pub const STATUS_HARDWARE_FAULT: u16 = 500;

/// Upload topic of relay state reports.
pub const TOPIC_RELAY: &str = "relay";
/// Upload topic of meter readings.
pub const TOPIC_POWER: &str = "power";

/// How long to wait before retrying a state report refused by a full upload queue.
pub const STATE_RETRY_MS: u64 = 1_000;

/// The plug's switch. Boards implement it over a GPIO (or a simulated relay).
pub trait Relay {
    /// Switches the relay on (`true`) or off; an error means the hardware did not respond.
    fn set(&mut self, on: bool) -> Result<(), RelayFault>;
    /// The relay's current state.
    fn is_on(&self) -> bool;
}

/// The relay hardware failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RelayFault;

/// A relay that only remembers its state (virtual boards, tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRelay {
    on: bool,
}

impl Relay for MemoryRelay {
    fn set(&mut self, on: bool) -> Result<(), RelayFault> {
        self.on = on;
        Ok(())
    }

    fn is_on(&self) -> bool {
        self.on
    }
}

/// Settings of the plug application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PlugConfig {
    /// Firmware version reported by `status` (boards pass `env!("CARGO_PKG_VERSION")`).
    pub firmware_version: &'static str,
    /// Interval of `power` uploads, in milliseconds (0 disables them).
    pub meter_interval_ms: u64,
}

/// Counters of the plug application itself (reported by `status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PlugStats {
    /// Commands handled (any outcome).
    pub commands: u32,
    /// Meter readings not uploaded because the upload queue was full. Energy is cumulative, so
    /// the next reading still carries the total.
    pub readings_skipped: u32,
    /// Command results that could not be queued (outbox full); the broker times the command out.
    /// Answers to a phone's command message that could not be queued count here too.
    pub results_dropped: u32,
    /// Periodic meter readings taken (uploaded or skipped); the number of the last one.
    pub readings: u32,
}

/// The plug application state.
#[derive(Debug)]
pub struct Plug<R: Relay, M: Meter> {
    relay: R,
    meter: M,
    config: PlugConfig,
    boot: Instant,
    next_reading: Option<Instant>,
    /// A relay state report is owed (after a change or a login) and not yet queued.
    state_report_due: Option<Instant>,
    stats: PlugStats,
}

impl<R: Relay, M: Meter> Plug<R, M> {
    /// A plug that booted at `now`.
    pub fn new(relay: R, meter: M, config: PlugConfig, now: Instant) -> Self {
        let next_reading =
            (config.meter_interval_ms > 0).then(|| now.plus_millis(config.meter_interval_ms));
        Plug {
            relay,
            meter,
            config,
            boot: now,
            next_reading,
            state_report_due: None,
            stats: PlugStats::default(),
        }
    }

    /// The relay.
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// The plug's own counters.
    pub fn stats(&self) -> PlugStats {
        self.stats
    }

    /// When [`on_timer`](Self::on_timer) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.next_reading, self.state_report_due)
    }

    /// Reacts to a client event: answers commands, reports state after a login.
    pub fn on_event<const P: usize>(
        &mut self,
        event: &Event<P>,
        now: Instant,
        api: &mut impl DeviceApi,
    ) {
        match event {
            Event::Connected { .. } => {
                self.state_report_due = Some(now);
                self.on_timer(now, api);
            }
            Event::Command {
                cmd_id,
                name,
                payload,
            } => self.on_command(*cmd_id, name, payload, now, api),
            Event::Deliver {
                from: Some(from),
                payload,
                ..
            } if from.kind == Kind::Phone => self.on_phone_message(*from, payload, now, api),
            _ => {}
        }
    }

    /// Runs what is due: meter uploads, pending state reports.
    pub fn on_timer(&mut self, now: Instant, api: &mut impl DeviceApi) {
        if self.state_report_due.is_some_and(|due| due <= now) {
            let report = Report::relay(self.relay.is_on());
            self.state_report_due = match api.upload(TOPIC_RELAY, report.as_bytes()) {
                Ok(_) => None,
                Err(e) => {
                    log_warn!("relay report not queued: {}", e);
                    Some(now.plus_millis(STATE_RETRY_MS))
                }
            };
        }
        if let Some(due) = self.next_reading
            && due <= now
        {
            // Catch up without bursts: the next reading is one interval from now.
            self.next_reading = Some(now.plus_millis(self.config.meter_interval_ms));
            let reading = self.meter.read(now, self.relay.is_on());
            crate::stats::bump(&mut self.stats.readings);
            let report = Report::reading(&reading, self.relay.is_on(), Some(self.stats.readings));
            if api.upload(TOPIC_POWER, report.as_bytes()).is_err() {
                crate::stats::bump(&mut self.stats.readings_skipped);
            }
        }
    }

    fn on_command(
        &mut self,
        cmd_id: u32,
        name: &str,
        payload: &[u8],
        now: Instant,
        api: &mut impl DeviceApi,
    ) {
        log_info!("command {} id {}", name, cmd_id);
        let (status, report) = self.execute(name, payload, now, api);
        if api
            .command_result(cmd_id, status, report.as_bytes())
            .is_err()
        {
            crate::stats::bump(&mut self.stats.results_dropped);
        }
        // A state change is reported right away (after the result, which the caller waits for).
        self.on_timer(now, api);
    }

    /// A phone's message: `<command> [argument]`, run like a command; the result's JSON goes
    /// back to the phone as a message.
    fn on_phone_message(
        &mut self,
        from: Address,
        message: &[u8],
        now: Instant,
        api: &mut impl DeviceApi,
    ) {
        let (name, argument) = split_command(message);
        let (_, report) = match core::str::from_utf8(name) {
            Ok(name) => {
                log_info!("command {} from phone {}", name, from.id);
                self.execute(name, argument, now, api)
            }
            Err(_) => {
                crate::stats::bump(&mut self.stats.commands);
                (STATUS_BAD_ARGUMENT, Report::error("command name not UTF-8"))
            }
        };
        if api.send(from, report.as_bytes()).is_err() {
            crate::stats::bump(&mut self.stats.results_dropped);
        }
        self.on_timer(now, api);
    }

    /// Runs command `name` with `payload`: the result status and report.
    fn execute(
        &mut self,
        name: &str,
        payload: &[u8],
        now: Instant,
        api: &mut impl DeviceApi,
    ) -> (u16, Report) {
        crate::stats::bump(&mut self.stats.commands);
        match name {
            "relay.set" => match parse_on_off(payload) {
                Some(on) => self.switch(on, now),
                None => (STATUS_BAD_ARGUMENT, Report::error("expected on or off")),
            },
            "relay.toggle" => self.switch(!self.relay.is_on(), now),
            "relay.get" => (STATUS_OK, Report::relay(self.relay.is_on())),
            "meter.read" => {
                let reading = self.meter.read(now, self.relay.is_on());
                (
                    STATUS_OK,
                    Report::reading(&reading, self.relay.is_on(), None),
                )
            }
            "status" => {
                let uptime_s = div_rem(now.millis_since(self.boot), const { nonzero(1_000) }).0;
                let report = Report::status(
                    self.config.firmware_version,
                    uptime_s,
                    self.relay.is_on(),
                    api.is_online(),
                    &api.stats(),
                    &self.stats,
                );
                (STATUS_OK, report)
            }
            _ => (STATUS_UNKNOWN_COMMAND, Report::error("unknown command")),
        }
    }

    fn switch(&mut self, on: bool, now: Instant) -> (u16, Report) {
        let before = self.relay.is_on();
        match self.relay.set(on) {
            Ok(()) => {
                if self.relay.is_on() != before {
                    self.state_report_due = Some(now);
                }
                (STATUS_OK, Report::relay(self.relay.is_on()))
            }
            Err(RelayFault) => (STATUS_HARDWARE_FAULT, Report::error("relay fault")),
        }
    }
}

/// A phone's command message split at its first space: the name and the argument (empty
/// when there is none), both without surrounding ASCII whitespace.
fn split_command(message: &[u8]) -> (&[u8], &[u8]) {
    let message = message.trim_ascii();
    match message.iter().position(|b| *b == b' ') {
        Some(i) => (&message[..i], message[i + 1..].trim_ascii()),
        None => (message, &[]),
    }
}

/// `on`/`off`, `1`/`0`, `true`/`false`, surrounded by ASCII whitespace or not.
fn parse_on_off(payload: &[u8]) -> Option<bool> {
    match payload.trim_ascii() {
        b"on" | b"1" | b"true" => Some(true),
        b"off" | b"0" | b"false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
