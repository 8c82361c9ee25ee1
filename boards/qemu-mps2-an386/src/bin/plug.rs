//! `plug`: the real smart-plug firmware on the QEMU board.
//!
//! The same application every board runs (`plug-app`: the firmware SDK's device client over a
//! UDP + WebSocket transport and the plug application with a simulated meter), on QEMU's LAN9118
//! with an address from DHCP. Hardware-in-the-loop tests (`cargo xtask hil`) boot this binary
//! against a real broker.
//!
//! Provisioning is read **at boot** from the semihosting command line (QEMU's `-append`), so
//! one build serves every test run; a value missing there falls back to the same variable at
//! build time (`option_env!`), so `PLUG_... cargo run --release --bin plug` works too:
//!
//! | key | meaning |
//! |---|---|
//! | `PLUG_DEVICE_ID`, `PLUG_DEVICE_KEY` | identity (decimal id, 64 hex digits) |
//! | `PLUG_BROKER_UDP`, `PLUG_BROKER_WS` | brokers, `a.b.c.d:port` (from QEMU's user network the host is 10.0.2.2) |
//! | `PLUG_BROKER_WS_HOST`, `PLUG_BROKER_WS_PATH` | WebSocket `Host` header and path |
//! | `PLUG_LOOKUP` | the broker's HTTP API `a.b.c.d:port`: ask its node lookup first (optional) |
//! | `PLUG_TRANSPORT` | `udp`, `ws` or `both` (default): which of the brokers above to use |
//! | `PLUG_METER_MS` | interval of `power` uploads in ms (default 60000, 0 = off) |
//! | `PLUG_SEED` | seed of the client's generator (QEMU has no entropy source) |
//! | `PLUG_EXIT_AFTER_S` | end QEMU with status 0 after this many seconds (default: run forever) |
//!
//! The command line is whitespace-separated `KEY=VALUE` words (other words, like the kernel
//! file name QEMU puts first, are ignored). Exit codes: 0 after `PLUG_EXIT_AFTER_S`, 2 board
//! bring-up failed, 4 bad provisioning (the log names the variable), 101 panic.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::mem::MaybeUninit;

use board_qemu_mps2_an386::{Board, Lan9118, exit};
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{Duration, Instant, Timer};
use firmware::plug::{MemoryRelay, Relay};
use firmware::rng::{Rng, SplitMix64};
use plug_app::app::AppConfig;
use plug_app::{AppMemory, Provisioning};
use static_cell::StaticCell;

const EXIT_BOARD: i32 = 2;
const EXIT_CONFIG: i32 = 4;

/// Longest semihosting command line kept (the provisioning words are ~250 bytes).
const CMDLINE_MAX: usize = 1024;
/// Default interval of `power` uploads.
const DEFAULT_METER_MS: u64 = 60_000;

/// Words of the boot command line, with the build environment as fallback.
struct Settings {
    cmdline: &'static str,
}

impl Settings {
    /// The value of `key`: from the command line, else the build-time `fallback`.
    fn get(&self, key: &str, fallback: Option<&'static str>) -> Option<&'static str> {
        self.cmdline
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .or(fallback)
    }
}

/// Reads the semihosting command line into static memory (empty when there is none).
fn read_cmdline() -> &'static str {
    static BUF: StaticCell<[MaybeUninit<u8>; CMDLINE_MAX]> = StaticCell::new();
    let buf = BUF.init([MaybeUninit::uninit(); CMDLINE_MAX]);
    match semihosting::sys::arm_compat::sys_get_cmdline_uninit(buf) {
        Ok(bytes) => match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                defmt::warn!("command line is not UTF-8; ignored");
                ""
            }
        },
        Err(_) => "",
    }
}

/// What the boot settings say beyond the provisioning.
struct Options {
    transport: &'static str,
    meter_ms: u64,
    seed: Option<u64>,
    exit_after_s: Option<u64>,
}

fn options(s: &Settings) -> Result<Options, &'static str> {
    let number = |key, fallback| -> Result<Option<u64>, &'static str> {
        match s.get(key, fallback) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| key),
        }
    };
    let transport = s
        .get("PLUG_TRANSPORT", option_env!("PLUG_TRANSPORT"))
        .unwrap_or("both");
    if !matches!(transport, "udp" | "ws" | "both") {
        return Err("PLUG_TRANSPORT (udp, ws or both)");
    }
    Ok(Options {
        transport,
        meter_ms: number("PLUG_METER_MS", option_env!("PLUG_METER_MS"))?
            .unwrap_or(DEFAULT_METER_MS),
        seed: number("PLUG_SEED", option_env!("PLUG_SEED"))?,
        exit_after_s: number("PLUG_EXIT_AFTER_S", option_env!("PLUG_EXIT_AFTER_S"))?,
    })
}

fn provisioning(s: &Settings, transport: &str) -> Result<Provisioning, &'static str> {
    let mut udp = s.get("PLUG_BROKER_UDP", option_env!("PLUG_BROKER_UDP"));
    let mut ws = s.get("PLUG_BROKER_WS", option_env!("PLUG_BROKER_WS"));
    match transport {
        "udp" => ws = None,
        "ws" => udp = None,
        _ => {}
    }
    Provisioning::parse(
        s.get("PLUG_DEVICE_ID", option_env!("PLUG_DEVICE_ID")),
        s.get("PLUG_DEVICE_KEY", option_env!("PLUG_DEVICE_KEY")),
        udp,
        ws,
        s.get("PLUG_BROKER_WS_HOST", option_env!("PLUG_BROKER_WS_HOST")),
        s.get("PLUG_BROKER_WS_PATH", option_env!("PLUG_BROKER_WS_PATH")),
    )
    .and_then(|p| p.with_lookup(s.get("PLUG_LOOKUP", option_env!("PLUG_LOOKUP"))))
    .map_err(|e| e.message())
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let settings = Settings {
        cmdline: read_cmdline(),
    };
    let (opts, prov) = match options(&settings)
        .and_then(|o| provisioning(&settings, o.transport).map(|p| (o, p)))
    {
        Ok(v) => v,
        Err(what) => {
            defmt::error!("bad provisioning: {=str}", what);
            exit(EXIT_CONFIG);
        }
    };
    let board = match Board::init(None) {
        Ok(board) => board,
        Err(e) => {
            defmt::error!("board init failed: {}", e);
            exit(EXIT_BOARD);
        }
    };
    let mac = board.ethernet.mac_address();
    let mac_seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x91, 0x5e]);
    // QEMU has no entropy source: the test passes a fresh seed per boot (PLUG_SEED).
    let seed = opts.seed.unwrap_or(mac_seed) ^ u64::from(prov.device_id);
    defmt::info!(
        "plug {=u32}: transport {=str}, udp {}, ws {}",
        prov.device_id,
        opts.transport,
        prov.udp.is_some(),
        prov.ws.is_some()
    );

    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        board.ethernet,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).expect("net task spawned once"));
    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        defmt::info!(
            "address {} after {} ms",
            config.address,
            Instant::now().as_millis()
        );
    }

    static MEMORY: StaticCell<AppMemory> = StaticCell::new();
    static RNG: StaticCell<SplitMix64> = StaticCell::new();
    static RELAY: StaticCell<MemoryRelay> = StaticCell::new();
    let rng: &'static mut dyn Rng = RNG.init(SplitMix64::new(seed.rotate_left(17)));
    let relay: &'static mut dyn Relay = RELAY.init(MemoryRelay::default());
    let config = AppConfig {
        firmware_version: env!("CARGO_PKG_VERSION"),
        meter_interval_ms: opts.meter_ms,
    };
    if let Err(e) = plug_app::start(
        spawner,
        stack,
        MEMORY.init(AppMemory::new()),
        &prov,
        relay,
        rng,
        config,
    ) {
        defmt::error!("application did not start: {}", e);
        exit(EXIT_BOARD);
    }
    if let Some(secs) = opts.exit_after_s {
        Timer::after(Duration::from_secs(secs)).await;
        defmt::info!("PLUG_EXIT_AFTER_S={=u64} reached", secs);
        exit(0);
    }
}
