//! Starts the device client and the plug application on a board's embassy-net stack.
//!
//! The same wiring as the virtual boards: a [`DeviceClient`] provisioned from
//! [`Provisioning`], [`SharedSockets`] (UDP and WebSocket endpoints, one client, one socket
//! memory the two transports take turns with), the SDK's
//! [`Runner`] in one task and [`firmware::net::run_plug`] over a [`Plug`] in another. All memory is in one
//! caller-provided [`AppMemory`] (a board keeps it in a `StaticCell`).
//!
//! The client's sizes are chosen here, once for every board ([`UPLOADS`], [`PAYLOAD`],
//! [`EVENTS`], [`OUTBOX`]; a board with memory to spare turns on `deep-upload-queue`), and so is the number of sockets the application holds on the
//! stack ([`stack_sockets`]), which a board passes to embassy-net's `StackResources`.

use embassy_executor::{SpawnError, Spawner};
use embassy_futures::select::{Either, select};
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::Timer;
use firmware::DeviceApi;
use firmware::Event;
use firmware::net::{
    self, ClientResources, DeviceHandle, HttpLookup, Liveness, LookupBuffers, Runner,
    RunnerBuffers, SharedSockets, SocketMemory,
};
use firmware::plug::{Plug, PlugConfig, Relay, SimulatedMeter};
use firmware::rng::Rng;
use firmware::{ClientConfig, DeviceClient, DeviceConfig, Endpoint};
use shared_protocol::keys::DeviceKey;

use crate::deliveries::Deliveries;
use crate::persist::SinceFeed;
use crate::provision::Provisioning;
use crate::relay::DynRelay;

/// Uploads held until acknowledged (the SDK's `Q`): four meter readings, one every interval,
/// ride out a reconnect; the plug skips (and counts) readings while the queue is full. About
/// 470 bytes each, the largest part of the SDK's static RAM on a microcontroller.
#[cfg(not(feature = "deep-upload-queue"))]
pub const UPLOADS: usize = 4;
/// Uploads held until acknowledged (the SDK's `Q`) on a board with memory to spare (feature
/// `deep-upload-queue`, the host TAP board: about 120 KiB): 25.6 s of readings at 10 a second,
/// enough to ride out a broker restart with a login that needs up to twelve HELLOs (two login
/// attempts) at 20% loss (docs/hil.md, `uploads-under-trouble`). Not more than the broker's per-session outbound
/// queue (`limits.outbound_queue`: 64 by default, 256 on the HIL brokers): every queued upload
/// may be answered at once, and answers beyond the send window wait in that queue (a full one
/// ends the session).
#[cfg(feature = "deep-upload-queue")]
pub const UPLOADS: usize = 256;
/// Largest payload (the SDK's `P`): the plug's largest report. Commands and deliveries the plug
/// receives are far smaller.
pub const PAYLOAD: usize = firmware::plug::REPORT_MAX;
/// Events held for the plug application (the SDK's `E`); the plug task drains them at once.
pub const EVENTS: usize = 4;
/// Command results held until acknowledged (the SDK's `O`); the plug answers one command at a
/// time.
pub const OUTBOX: usize = 2;
/// Sockets the application holds on the stack at once: the transport's (UDP or the
/// WebSocket's TCP socket, one at a time: [`SharedSockets`]) and the node lookup's TCP socket
/// while a lookup runs.
pub const APP_SOCKETS: usize = 2;

/// The socket count a board gives embassy-net's `StackResources`: the application's
/// [`APP_SOCKETS`] plus the DHCP client's socket when the board's network config uses DHCP.
/// Too few and embassy-net panics when the last socket is added.
pub const fn stack_sockets(dhcp: bool) -> usize {
    APP_SOCKETS + if dhcp { 1 } else { 0 }
}
/// Load the simulated meter reports while the relay is on, in milliwatts (these boards have no
/// metering chip; a plug board implements `firmware::plug::Meter` over its HLW8012/BL0937).
pub const SIMULATED_LOAD_MW: u32 = 60_000;

/// The client's randomness: the board's hardware RNG behind a `'static` reference.
pub type AppRng = &'static mut dyn Rng;
/// The client's transports: UDP and WebSocket endpoints, one client, one socket memory.
pub type Transport = SharedSockets<'static>;
type Handle =
    DeviceHandle<'static, 'static, NoopRawMutex, AppRng, UPLOADS, PAYLOAD, EVENTS, OUTBOX>;
type ClientRunner =
    Runner<'static, 'static, NoopRawMutex, AppRng, Transport, UPLOADS, PAYLOAD, EVENTS, OUTBOX>;
type Client = DeviceClient<'static, AppRng, UPLOADS, PAYLOAD, EVENTS, OUTBOX>;

/// Everything the client and its transports keep, in one place the board provides.
pub struct AppMemory {
    endpoints: heapless::Vec<Endpoint<'static>, 2>,
    resources:
        Option<ClientResources<'static, NoopRawMutex, AppRng, UPLOADS, PAYLOAD, EVENTS, OUTBOX>>,
    runner: RunnerBuffers,
    sockets: SocketMemory,
    lookup: LookupBuffers,
}

impl AppMemory {
    /// Empty memory (const, so a `StaticCell` can hold it without a stack copy).
    pub const fn new() -> Self {
        AppMemory {
            endpoints: heapless::Vec::new(),
            resources: None,
            runner: RunnerBuffers::new(),
            sockets: SocketMemory::new(),
            lookup: LookupBuffers::new(),
        }
    }
}

impl Default for AppMemory {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the application did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// A task could not be spawned (its pool is already in use: `start` ran twice).
    Spawn,
}

impl From<SpawnError> for StartError {
    fn from(_: SpawnError) -> Self {
        StartError::Spawn
    }
}

/// What the plug application reports and how often it meters.
#[derive(Debug, Clone, Copy)]
pub struct AppConfig {
    /// `status` command's firmware version (the board's `CARGO_PKG_VERSION`).
    pub firmware_version: &'static str,
    /// Interval of `power` uploads, milliseconds (0 disables them).
    pub meter_interval_ms: u64,
    /// Where the client runner records how long each wait may last, for the board's watchdog
    /// task (`None`: a board without a watchdog).
    pub liveness: Option<&'static Liveness>,
    /// Why the board started (`power-on`, `watchdog`: a short name without quotes), uploaded
    /// once as topic [`BOOT_TOPIC`] (`{"reset":"<reason>"}`) when the client first logs in;
    /// `None`: the board cannot tell.
    pub reset_reason: Option<&'static str>,
    /// The highest message id taken before this boot (`persist::Store::begin_boot`; 0: none),
    /// reported at the first login so the broker resends only newer messages.
    pub since_id: u64,
    /// Where the plug task notes every message taken and every session end, for the board's
    /// persistence task (`persist::keep_since`); `None`: the board keeps nothing.
    pub since_feed: Option<&'static SinceFeed>,
}

/// Upload topic of the boot report.
pub const BOOT_TOPIC: &str = "boot";

/// The boot report's payload, `{"reset":"<reason>"}`; a reason that does not fit is cut.
fn boot_report(reason: &str) -> heapless::Vec<u8, 64> {
    let mut report = heapless::Vec::new();
    for part in [&b"{\"reset\":\""[..], reason.as_bytes(), &b"\"}"[..]] {
        for byte in part {
            if report.push(*byte).is_err() {
                break;
            }
        }
    }
    report
}

/// Provisions the client, creates its transports on `stack` and spawns the client runner and
/// the plug application. Call once the stack is up (`stack.wait_config_up().await`) or before:
/// the client retries with backoff until the network works.
pub fn start(
    spawner: Spawner,
    stack: Stack<'static>,
    memory: &'static mut AppMemory,
    provisioning: &Provisioning,
    relay: &'static mut dyn Relay,
    rng: AppRng,
    config: AppConfig,
) -> Result<(), StartError> {
    let AppMemory {
        endpoints,
        resources,
        runner,
        sockets,
        lookup,
    } = memory;
    *endpoints = provisioning.endpoints();
    let endpoints: &'static [Endpoint<'static>] = endpoints;
    let device = DeviceConfig {
        device_id: provisioning.device_id,
        key: DeviceKey(provisioning.key),
        endpoints,
        lookup: provisioning.lookup_config(),
        since_id: config.since_id,
    };
    let ws_seed = u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32());
    let client: Client = DeviceClient::new(device, ClientConfig::default(), rng, net::now());
    let resources = resources.insert(ClientResources::new(client));
    let transport = transports(stack, sockets, ws_seed);
    let (handle, runner) = net::new(resources, transport, runner);
    let mut runner = runner.with_lookup(HttpLookup::new(stack, lookup));
    if let Some(liveness) = config.liveness {
        runner = runner.with_liveness(liveness);
    }
    if let Some(reason) = config.reset_reason {
        let mut api = handle;
        // The queue is empty at boot: this cannot be refused.
        let _ = api.upload(BOOT_TOPIC, &boot_report(reason));
    }
    spawner.spawn(client_task(runner)?);
    let plug = Plug::new(
        DynRelay(relay),
        SimulatedMeter::new(SIMULATED_LOAD_MW),
        PlugConfig {
            firmware_version: config.firmware_version,
            meter_interval_ms: config.meter_interval_ms,
        },
        net::now(),
    );
    if let Some(feed) = config.since_feed {
        feed.start_at(config.since_id);
    }
    spawner.spawn(plug_task(handle, plug, config.since_feed)?);
    Ok(())
}

/// The client's transports on `stack`, in `memory`: the UDP socket or the WebSocket
/// transport's TCP socket, whichever the current endpoint needs (one of the [`APP_SOCKETS`]).
/// `ws_seed` seeds the WebSocket mask keys.
pub fn transports(
    stack: Stack<'static>,
    memory: &'static mut SocketMemory,
    ws_seed: u64,
) -> Transport {
    SharedSockets::new(stack, memory, ws_seed)
}

#[embassy_executor::task]
async fn client_task(mut runner: ClientRunner) -> ! {
    runner.run().await
}

/// The plug application's loop (`firmware::net::run_plug`'s, plus the delivery count): client
/// events and the plug's own timer, forever. Every Deliver is counted and logged
/// ([`Deliveries`]) and noted in the board's [`SinceFeed`] before the plug sees it; the command `deliveries` is answered here with
/// the counts and the SDK's suppressed repeats.
#[embassy_executor::task]
async fn plug_task(
    mut handle: Handle,
    mut plug: Plug<DynRelay, SimulatedMeter>,
    since_feed: Option<&'static SinceFeed>,
) -> ! {
    const { assert!(PAYLOAD >= firmware::plug::REPORT_MAX) };
    let mut deliveries = Deliveries::new();
    loop {
        let due = plug.poll_timeout().map_or(embassy_time::Instant::MAX, |t| {
            embassy_time::Instant::from_millis(t.as_millis())
        });
        match select(handle.next_event(), Timer::at(due)).await {
            Either::First(event) => {
                // The delivery counts (with the SDK's suppressed repeats) are the application's
                // own command, answered here; the plug never sees it.
                if let Event::Command { cmd_id, name, .. } = &event
                    && name.as_str() == crate::deliveries::COMMAND
                {
                    let suppressed = handle.stats().deliveries_suppressed;
                    let report = deliveries.counted().report(suppressed);
                    if handle
                        .command_result(*cmd_id, firmware::plug::STATUS_OK, &report)
                        .is_err()
                    {
                        // The broker times the command out; nothing else to undo.
                        log_info!("deliveries: result not queued (outbox full)");
                    }
                    continue;
                }
                if let Event::Deliver {
                    msg_id, payload, ..
                } = &event
                {
                    if let Some(feed) = since_feed {
                        feed.delivered(*msg_id);
                    }
                    let c = deliveries.on_deliver(*msg_id);
                    log_info!(
                        "delivery {}: msg_id {}, {} bytes (repeats let through: {})",
                        c.received,
                        msg_id,
                        payload.len(),
                        c.repeats
                    );
                }
                if let (Event::Disconnected { .. }, Some(feed)) = (&event, since_feed) {
                    feed.session_ended();
                }
                plug.on_event(&event, net::now(), &mut handle);
            }
            Either::Second(()) => plug.on_timer(net::now(), &mut handle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::boot_report;

    #[test]
    fn boot_reports_are_small_json_objects() {
        assert_eq!(
            boot_report("power-on").as_slice(),
            br#"{"reset":"power-on"}"#
        );
        assert_eq!(
            boot_report("watchdog").as_slice(),
            br#"{"reset":"watchdog"}"#
        );
        let long = "x".repeat(100);
        assert_eq!(boot_report(&long).len(), 64, "cut, never over the buffer");
    }
}
