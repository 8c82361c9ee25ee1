//! `plug`: the real smart-plug firmware on the QEMU board.
//!
//! The same application every board runs (`plug-app`: the firmware SDK's device client over a
//! UDP + WebSocket transport and the plug application with a simulated meter), on QEMU's LAN9118
//! with an address from DHCP. Hardware-in-the-loop tests (`cargo xtask hil`) boot this binary
//! against a real broker.
//!
//! One image serves every plug: the device's identity, brokers and entropy seed come from the
//! provisioning record QEMU's loader puts in block RAM, and a boot number from its companion
//! word (`board_qemu_mps2_an386::record_region`; docs/flashing.md). A missing or bad record
//! logs one line naming the error and the board stays offline: no network, no login.
//!
//! QEMU has no entropy source: nonces and the upload epoch come from
//! `plug_app::entropy::BootRng`, seeded from the record's secret seed, the boot number and the
//! count of resets since power-on (`watchdog::count_boot`: the loader writes the same boot
//! number again on a watchdog reset), so they differ on every boot.
//!
//! Run options (not provisioning) come from the semihosting command line (QEMU's `-append`),
//! whitespace-separated `KEY=VALUE` words (others, like the kernel file name QEMU puts first,
//! are ignored):
//!
//! | key | meaning |
//! |---|---|
//! | `PLUG_METER_MS` | interval of `power` uploads in ms (default 60000, 0 = off) |
//! | `PLUG_EXIT_AFTER_S` | end QEMU after this many seconds (default: run forever) |
//! | `PLUG_FLASH` | host file of the emulated flash that keeps the boot counter and since_id (`board_qemu_mps2_an386::flash_file`; created erased when missing) |
//! | `PLUG_SINCE_PERIOD_MS` | longest wait before a grown since_id is stored (default 600000) |
//! | `PLUG_SINCE_GAP_MS` | shortest time between two since_id writes (default 60000) |
//!
//! Boot number: with `PLUG_FLASH`, the stored counter plus one (at least the loader's number
//! when one is given), written back before the network starts (`plug_app::persist`); without
//! it, the loader's number alone. The since_id stored there is reported at the first login.
//!
//! The board's watchdog starts once the record is accepted ([`WATCHDOG_MS`]) and is fed while
//! the client runner keeps its `Liveness` promise (`board_qemu_mps2_an386::watchdog`): a hung
//! network task resets the board. The reset reason of each boot is logged first thing.
//!
//! Exit codes: 0 after `PLUG_EXIT_AFTER_S`, 2 board bring-up failed, 4 bad record or options
//! (after `PLUG_EXIT_AFTER_S` when set, idle until then), 101 panic.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::mem::MaybeUninit;

use board_qemu_mps2_an386::flash_file::{self, FileFlash};
use board_qemu_mps2_an386::watchdog::{self, Watchdog};
use board_qemu_mps2_an386::{Board, Lan9118, exit, record_region};
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{Duration, Instant, Timer};
use firmware::net::Liveness;
use firmware::plug::{MemoryRelay, Relay};
use firmware::rng::Rng;
use plug_app::AppMemory;
use plug_app::app::AppConfig;
use plug_app::entropy::BootRng;
use plug_app::persist::{self, SinceFeed, SincePolicy, Store};
use plug_app::record;
use static_cell::StaticCell;

const EXIT_BOARD: i32 = 2;
const EXIT_CONFIG: i32 = 4;

/// Longest semihosting command line kept.
const CMDLINE_MAX: usize = 1024;
/// Default interval of `power` uploads.
const DEFAULT_METER_MS: u64 = 60_000;
/// Watchdog timeout: the board resets 4-8 s after the feeding stops.
const WATCHDOG_MS: u32 = 4_000;
/// How often the watchdog task looks at the runner's promise.
const FEED_PERIOD_MS: u64 = 500;

/// The client runner's promise, read by the watchdog task.
static LIVENESS: Liveness = Liveness::new();
/// The plug task's since_id and session ends, read by the persistence task.
static SINCE: SinceFeed = SinceFeed::new();

/// Words of the boot command line.
struct Settings {
    cmdline: &'static str,
}

impl Settings {
    /// The value of `key` on the command line.
    fn get(&self, key: &str) -> Option<&'static str> {
        self.cmdline
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
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

/// Run options from the command line.
struct Options {
    meter_ms: u64,
    exit_after_s: Option<u64>,
    flash: Option<&'static str>,
    since_period_ms: u64,
    since_gap_ms: u64,
}

fn options(s: &Settings) -> Result<Options, &'static str> {
    let number = |key| -> Result<Option<u64>, &'static str> {
        match s.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| key),
        }
    };
    Ok(Options {
        meter_ms: number("PLUG_METER_MS")?.unwrap_or(DEFAULT_METER_MS),
        exit_after_s: number("PLUG_EXIT_AFTER_S")?,
        flash: s.get("PLUG_FLASH"),
        since_period_ms: number("PLUG_SINCE_PERIOD_MS")?.unwrap_or(persist::PERIOD_MS),
        since_gap_ms: number("PLUG_SINCE_GAP_MS")?.unwrap_or(persist::GAP_MS),
    })
}

/// The safe state after a bad record or options: no network, no login; ends QEMU with
/// [`EXIT_CONFIG`] after `exit_after_s` when given.
async fn stay_offline(exit_after_s: Option<u64>) -> ! {
    if let Some(secs) = exit_after_s {
        Timer::after(Duration::from_secs(secs)).await;
        exit(EXIT_CONFIG);
    }
    loop {
        Timer::after(Duration::from_secs(3600)).await;
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn persist_task(store: &'static mut Store<FileFlash>, policy: SincePolicy) -> ! {
    persist::keep_since(store, &SINCE, policy).await
}

/// Opens the emulated flash at `path` and starts a boot there: the boot number (at least
/// `at_least`) is stored before it is returned.
async fn begin_boot(
    path: &str,
    at_least: u32,
) -> Result<(Store<FileFlash>, persist::Persisted), &'static str> {
    let flash = flash_file::open(path).map_err(|e| {
        defmt::error!("flash file {=str}: {}", path, e);
        "flash file"
    })?;
    Store::open_and_begin_boot(flash, 0..flash_file::SIZE as u32, at_least)
        .await
        .map_err(|e| {
            defmt::error!("persistent area: {}", e);
            "persistent area"
        })
}

#[embassy_executor::task]
async fn watchdog_task(watchdog: Watchdog) -> ! {
    watchdog::feed_while_alive(watchdog, &LIVENESS, FEED_PERIOD_MS).await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let reset = watchdog::take_reset_reason();
    let resets = watchdog::count_boot();
    defmt::info!(
        "reset reason {=str}, {=u32} resets since power-on",
        reset.as_str(),
        resets
    );
    let settings = Settings {
        cmdline: read_cmdline(),
    };
    let opts = match options(&settings) {
        Ok(o) => o,
        Err(what) => {
            defmt::error!("bad option {=str}: expected a decimal number", what);
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
    let Some(provisioned) =
        record::accept_at_boot(record_region::record_region(), record_region::RECORD_ADDR)
    else {
        stay_offline(opts.exit_after_s).await
    };
    let loader_boot = record_region::boot_number();
    let (boot, since_id, store) = match (opts.flash, loader_boot) {
        (Some(path), at_least) => match begin_boot(path, at_least.unwrap_or(0)).await {
            Ok((store, p)) => {
                defmt::info!(
                    "persist: boot {=u32}, since_id {=u64} (flash file {=str})",
                    p.boot,
                    p.since_id,
                    path
                );
                (p.boot, p.since_id, Some(store))
            }
            Err(what) => {
                defmt::error!(
                    "no boot number: {=str} failed (nonces could repeat); staying offline",
                    what
                );
                stay_offline(opts.exit_after_s).await
            }
        },
        (None, Some(boot)) => (boot, 0, None),
        (None, None) => {
            defmt::error!(
                "no boot number at {=usize:#x} and no PLUG_FLASH (QEMU keeps nothing across boots; nonces could repeat); staying offline",
                record_region::BOOT_WORD_ADDR
            );
            stay_offline(opts.exit_after_s).await
        }
    };
    let prov = provisioned.provisioning;
    match Watchdog::start(WATCHDOG_MS) {
        Ok(w) => spawner.spawn(watchdog_task(w).expect("watchdog task spawned once")),
        Err(e) => {
            defmt::error!("watchdog did not start: {}", e);
            exit(EXIT_BOARD);
        }
    }
    // QEMU has no entropy source: everything random derives from the record's secret seed,
    // this boot's number and the resets since its power-on.
    let mut boot_rng = BootRng::new(&provisioned.seed, boot, resets);
    let seed = u64::from(boot_rng.next_u32()) << 32 | u64::from(boot_rng.next_u32());
    defmt::info!(
        "plug {=u32} boot {=u32}: transport {}, udp {}, ws {}, lookup {}",
        prov.device_id,
        boot,
        provisioned.transport,
        prov.udp.is_some(),
        prov.ws.is_some(),
        prov.lookup.is_some()
    );

    // The application's sockets (UDP, WebSocket, node lookup) and DHCP's.
    const SOCKETS: usize = plug_app::app::stack_sockets(true);
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
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
    static RNG: StaticCell<BootRng> = StaticCell::new();
    static RELAY: StaticCell<MemoryRelay> = StaticCell::new();
    let rng: &'static mut dyn Rng = RNG.init(boot_rng);
    let relay: &'static mut dyn Relay = RELAY.init(MemoryRelay::default());
    let config = AppConfig {
        firmware_version: env!("CARGO_PKG_VERSION"),
        meter_interval_ms: opts.meter_ms,
        liveness: Some(&LIVENESS),
        reset_reason: Some(reset.as_str()),
        since_id,
        since_feed: store.is_some().then_some(&SINCE),
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
    if let Some(store) = store {
        static STORE: StaticCell<Store<FileFlash>> = StaticCell::new();
        let policy = SincePolicy::new(
            since_id,
            Instant::now().as_millis(),
            opts.since_period_ms,
            opts.since_gap_ms,
        );
        spawner.spawn(persist_task(STORE.init(store), policy).expect("persist task spawned once"));
    }
    if let Some(secs) = opts.exit_after_s {
        Timer::after(Duration::from_secs(secs)).await;
        defmt::info!("PLUG_EXIT_AFTER_S={=u64} reached", secs);
        exit(0);
    }
}
