//! `udp-probe`: the board's network smoke test.
//!
//! Boots, gets an address by DHCP, sends a protocol HELLO packet (encoded with
//! `shared-protocol`, which proves it builds and links for this target) to the
//! host at 10.0.2.2:`PLUG_BROKER_PORT` (set at build time) over UDP, expects the
//! same bytes back (the host side runs an echo), and exits QEMU with a status:
//! 0 success, 1 no reply / wrong reply, 2 board bring-up failed, 3 no DHCP lease,
//! 4 bad build configuration. `cargo xtask qemu-smoke` drives it.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use board_qemu_mps2_an386::{Board, Lan9118, exit};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Runner, StackResources};
use embassy_time::{Duration, Instant, with_timeout};
use shared_protocol::ids::Address;
use shared_protocol::packet::Hello;
use static_cell::StaticCell;

/// The host's loopback as seen from QEMU's user-mode network.
const HOST: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Local UDP port of the probe.
const LOCAL_PORT: u16 = 40_000;
/// Attempts before giving up (the first may be spent on ARP).
const ATTEMPTS: u32 = 10;
/// Wait per attempt for the echo.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Wait for the DHCP lease.
const DHCP_TIMEOUT: Duration = Duration::from_secs(20);

const EXIT_NO_REPLY: i32 = 1;
const EXIT_BOARD: i32 = 2;
const EXIT_DHCP: i32 = 3;
const EXIT_CONFIG: i32 = 4;

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// The broker port baked in at build time.
fn broker_port() -> Option<u16> {
    option_env!("PLUG_BROKER_PORT").and_then(|p| p.parse().ok())
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let Some(port) = broker_port() else {
        defmt::error!("build with PLUG_BROKER_PORT=<udp port on the host>");
        exit(EXIT_CONFIG);
    };
    let board = match Board::init(None) {
        Ok(board) => board,
        Err(e) => {
            defmt::error!("board init failed: {}", e);
            exit(EXIT_BOARD);
        }
    };
    let mac = board.ethernet.mac_address();
    defmt::info!("lan9118 up, mac {=[u8]:02x}", mac);

    // QEMU offers no entropy source; the MAC is unique per board, which is what
    // smoltcp's seed (ports, sequence numbers) needs in a test rig.
    let seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5e, 0xed]);
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        board.ethernet,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).expect("net task spawned once"));

    let started = Instant::now();
    if with_timeout(DHCP_TIMEOUT, stack.wait_config_up())
        .await
        .is_err()
    {
        defmt::error!("no DHCP lease after {} s", DHCP_TIMEOUT.as_secs());
        exit(EXIT_DHCP);
    }
    if let Some(config) = stack.config_v4() {
        defmt::info!(
            "address {} (gateway {}) after {} ms",
            config.address,
            config.gateway,
            started.elapsed().as_millis()
        );
    }

    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 512];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_buf = [0u8; 512];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    if let Err(e) = socket.bind(LOCAL_PORT) {
        defmt::error!("bind: {}", e);
        exit(EXIT_BOARD);
    }

    let hello = Hello {
        address: Address::device(42),
        client_nonce: *b"qemu-mps2-an386!",
    };
    let mut packet_buf = [0u8; 128];
    let packet = match hello.encode(&mut packet_buf) {
        Ok(packet) => &*packet,
        Err(e) => {
            defmt::error!("encode HELLO: {}", defmt::Debug2Format(&e));
            exit(EXIT_CONFIG);
        }
    };

    for attempt in 1..=ATTEMPTS {
        let sent_at = Instant::now();
        if let Err(e) = socket.send_to(packet, (HOST, port)).await {
            defmt::warn!("send attempt {}: {}", attempt, e);
            continue;
        }
        let mut reply = [0u8; 512];
        match with_timeout(REPLY_TIMEOUT, socket.recv_from(&mut reply)).await {
            Ok(Ok((len, meta))) => {
                let rtt = sent_at.elapsed().as_millis();
                match Hello::decode(&reply[..len]) {
                    Ok(echo) if echo == hello => {
                        defmt::info!(
                            "reply from {}: {} bytes, HELLO round trip ok in {} ms",
                            meta.endpoint,
                            len,
                            rtt
                        );
                        exit(0);
                    }
                    Ok(_) | Err(_) => {
                        defmt::error!("reply from {}: {} bytes, not our HELLO", meta.endpoint, len);
                        exit(EXIT_NO_REPLY);
                    }
                }
            }
            Ok(Err(e)) => defmt::warn!("receive attempt {}: {}", attempt, e),
            Err(_) => defmt::warn!(
                "no reply to attempt {} within {} ms",
                attempt,
                REPLY_TIMEOUT.as_millis()
            ),
        }
    }
    defmt::error!("no reply after {} attempts", ATTEMPTS);
    exit(EXIT_NO_REPLY);
}
