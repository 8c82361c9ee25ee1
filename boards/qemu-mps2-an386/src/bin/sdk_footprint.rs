//! The device SDK's own footprint, for `cargo xtask size`: the sans-IO client core
//! (`firmware::DeviceClient`: handshake, secure session, reliability, upload queue, backoff)
//! and the plug application (`firmware::plug::Plug`), with the sizes every board's plug
//! application chooses (`plug_app::app`: uploads `Q`, payload `P`, events `E`, outbox `O`), but
//! **no network stack** (no embassy-net, no transports, no
//! executor): the driver loop below feeds the core by hand.
//!
//! The binary also carries what any program on this board carries (cortex-m-rt's vector
//! table and start-up, the board library's panic handler, defmt-semihosting and its two
//! interrupt handlers), about 2-3 KiB of flash. Its statics are the client, the plug and one
//! packet buffer, so its RAM is the SDK's static RAM.
//!
//! It runs, too (`cargo run --release --bin sdk_footprint` under QEMU): it drives the client
//! through a few reconnect rounds on a made-up clock, feeds every packet it sends back to it
//! (which the client must reject: a HELLO is not a broker's answer), lets the plug application
//! meter, and exits 0 when the client behaved (1 otherwise). It never touches a network: the
//! broker address is from the documentation range (TEST-NET-1) and the key is all zeros.
#![no_std]
#![no_main]

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use board_qemu_mps2_an386::exit;
use cortex_m_rt::entry;
use firmware::plug::{MemoryRelay, Plug, PlugConfig, SimulatedMeter};
use firmware::rng::SplitMix64;
use firmware::time::Instant;
use firmware::{ClientConfig, ConnectionState, DeviceClient, DeviceConfig, Endpoint};
use plug_app::app::{EVENTS, OUTBOX, PAYLOAD, UPLOADS};
use shared_protocol::keys::DeviceKey;
use static_cell::StaticCell;

/// Simulated time the loop covers, milliseconds.
const RUN_MS: u64 = 120_000;

type Client = DeviceClient<'static, SplitMix64, UPLOADS, PAYLOAD, EVENTS, OUTBOX>;

static ENDPOINTS: StaticCell<[Endpoint<'static>; 1]> = StaticCell::new();
static CLIENT: StaticCell<Client> = StaticCell::new();
static PLUG: StaticCell<Plug<MemoryRelay, SimulatedMeter>> = StaticCell::new();
static PACKET: StaticCell<[u8; firmware::config::PACKET_BUF]> = StaticCell::new();

#[entry]
fn main() -> ! {
    let endpoints = ENDPOINTS.init([Endpoint::udp(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(192, 0, 2, 1),
        9,
    )))]);
    let device = DeviceConfig {
        device_id: 1,
        key: DeviceKey([0; 32]),
        endpoints,
        lookup: None,
        since_id: 0,
    };
    let start = Instant::from_millis(0);
    // The seed only has to differ between runs of a real device; this one never connects.
    let rng = SplitMix64::new(core::hint::black_box(0x5eed));
    let client = CLIENT.init(DeviceClient::new(
        device,
        ClientConfig::default(),
        rng,
        start,
    ));
    let plug = PLUG.init(Plug::new(
        MemoryRelay::default(),
        SimulatedMeter::new(60_000),
        PlugConfig {
            firmware_version: env!("CARGO_PKG_VERSION"),
            meter_interval_ms: 10_000,
        },
        start,
    ));
    let packet = PACKET.init([0; firmware::config::PACKET_BUF]);

    let mut now = start;
    let mut sent = 0u32;
    let mut rejected = 0u32;
    while now.as_millis() < RUN_MS {
        client.handle_timeout(now);
        plug.on_timer(now, client);
        while let Some(len) = client.poll_transmit(now, packet) {
            sent += 1;
            // Our own HELLO back: must be refused, never accepted as a broker's answer.
            if client.handle_datagram(&mut packet[..len], now).is_err() {
                rejected += 1;
            }
        }
        while let Some(event) = client.poll_event() {
            plug.on_event(&event, now, client);
        }
        let next = firmware::time::earliest(client.poll_timeout(), plug.poll_timeout());
        now = match next {
            Some(at) if at.as_millis() > now.as_millis() => at,
            _ => now.plus_millis(1),
        };
    }
    let ok = sent > 1 && rejected == sent && client.state() != ConnectionState::Online;
    defmt::info!(
        "sdk_footprint: {} packets sent, {} rejected, ok = {}",
        sent,
        rejected,
        ok
    );
    exit(if ok { 0 } else { 1 })
}
