//! `host-tap-plug`: the plug firmware as a Linux process, on embassy-net over a TAP device.
//!
//! The same application as every board (`plug-app`: the firmware SDK's device client over a
//! UDP + WebSocket transport, the plug application, a simulated meter and an in-memory relay);
//! only the bottom differs: embassy's std executor, embassy-time's std clock, and
//! `embassy-net-tuntap` instead of an Ethernet controller. A process costs a few MiB, so a test
//! can run many plugs at once (one TAP each, on a bridge in a network namespace). The TAP is
//! driven by [`tap`], which rides out a link that goes down (retries with back-off, counted)
//! instead of panicking.
//!
//! Settings come from the environment at start-up, the provisioning from the record file it
//! names (`PLUG_RECORD`; [`settings`]): one binary for every plug. Exit status: 0 after
//! `PLUG_EXIT_AFTER_S`, 2 the TAP device could not be opened or the application not started,
//! 4 bad settings (the message names the variable).

mod flash_file;
mod settings;
mod tap;

use std::process::ExitCode;

use embassy_executor::Spawner;
use embassy_net::{Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_time::{Duration, Timer};
use firmware::plug::{MemoryRelay, Relay};
use firmware::rng::Rng;
use plug_app::AppMemory;
use plug_app::app::AppConfig;
use plug_app::persist::{self, Resume, SinceFeed, SincePolicy, Store};
use static_cell::StaticCell;

use crate::flash_file::FileFlash;
use crate::settings::Settings;
use crate::tap::TapDevice;

/// The firmware version the `status` command reports and the start-up line logs: the package
/// version, or with feature `next-image` that version plus `+next` (a second image for
/// roll-out tests: `cargo xtask hil` builds both).
#[cfg(not(feature = "next-image"))]
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// See the other definition: the roll-out test's second image.
#[cfg(feature = "next-image")]
pub const FIRMWARE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+next");

const EXIT_BOARD: u8 = 2;
const EXIT_CONFIG: u8 = 4;

/// The operating system's generator (the HELLO nonce must be unpredictable).
struct OsRng;

impl Rng for OsRng {
    fn next_u32(&mut self) -> u32 {
        // The kernel's generator does not fail once the system has booted; if it ever does,
        // the process cannot log in safely, so it stops with a message.
        getrandom::u32().unwrap_or_else(|e| {
            log::error!("the OS random generator failed: {e}");
            std::process::exit(i32::from(EXIT_BOARD))
        })
    }
}

/// The plug task's since_id and session ends, read by the persistence task.
static SINCE: SinceFeed = SinceFeed::new();

#[embassy_executor::task]
async fn persist_task(store: &'static mut Store<FileFlash>, policy: SincePolicy) -> ! {
    persist::keep_since(store, &SINCE, policy).await
}

/// Counts this boot in the `PLUG_FLASH` file `path` and reads the stored since_id; a file that
/// cannot be opened is logged and nothing is kept.
async fn resume(path: &std::path::Path) -> Resume<FileFlash> {
    match flash_file::open(path) {
        Ok(flash) => {
            let area = 0..flash_file::SIZE as u32;
            Resume::from_boot(Store::open_and_begin_boot(flash, area, 0).await)
        }
        Err(e) => {
            log::error!(
                "persistent area unusable: {}: {e}; since_id starts at 0",
                path.display()
            );
            Resume::without_area()
        }
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, TapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn board_main(spawner: Spawner, settings: Settings) {
    if let Err(code) = start(spawner, &settings).await {
        std::process::exit(i32::from(code));
    }
    if let Some(secs) = settings.exit_after_s {
        Timer::after(Duration::from_secs(secs)).await;
        log::info!("PLUG_EXIT_AFTER_S={secs} reached");
        std::process::exit(0);
    }
}

async fn start(spawner: Spawner, s: &Settings) -> Result<(), u8> {
    // Nonces come from the kernel here: an unusable area only costs the since_id.
    let resume = match &s.flash {
        Some(path) => resume(path).await,
        None => Resume::without_area(),
    };
    let device = TapDevice::open(&s.tap, s.mac).map_err(|e| {
        log::error!(
            "cannot open TAP device {}: {e} (create it first: ip tuntap add {} mode tap)",
            s.tap,
            s.tap
        );
        EXIT_BOARD
    })?;
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(s.ip.0, s.ip.1),
        gateway: s.gateway,
        dns_servers: Default::default(),
    });
    let seed = u64::from(OsRng.next_u32()) << 32 | u64::from(OsRng.next_u32());
    // The application's sockets (UDP, WebSocket, node lookup); a static address, no DHCP.
    const SOCKETS: usize = plug_app::app::stack_sockets(false);
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) =
        embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(net_task(runner).map_err(|_| EXIT_BOARD)?);
    stack.wait_config_up().await;
    log::info!(
        "plug {} firmware {} on {} as {}/{}: transport {}, udp {:?}, ws {:?}",
        s.provisioning.device_id,
        FIRMWARE_VERSION,
        s.tap,
        s.ip.0,
        s.ip.1,
        s.transport,
        s.provisioning.udp,
        s.provisioning.ws.map(|w| w.addr)
    );

    static MEMORY: StaticCell<AppMemory> = StaticCell::new();
    static RNG: StaticCell<OsRng> = StaticCell::new();
    static RELAY: StaticCell<MemoryRelay> = StaticCell::new();
    let rng: &'static mut dyn Rng = RNG.init(OsRng);
    let relay: &'static mut dyn Relay = RELAY.init(MemoryRelay::default());
    let config = AppConfig {
        firmware_version: FIRMWARE_VERSION,
        meter_interval_ms: s.meter_ms,
        liveness: None,
        reset_reason: None,
        since_id: resume.since_id,
        since_feed: resume.since_feed(&SINCE),
    };
    plug_app::start(
        spawner,
        stack,
        MEMORY.init(AppMemory::new()),
        &s.provisioning,
        relay,
        rng,
        config,
    )
    .map_err(|e| {
        log::error!("application did not start: {e:?}");
        EXIT_BOARD
    })?;
    if let Some((store, policy)) = resume.keeper() {
        static STORE: StaticCell<Store<FileFlash>> = StaticCell::new();
        spawner.spawn(persist_task(STORE.init(store), policy).map_err(|_| EXIT_BOARD)?);
    }
    Ok(())
}

fn main() -> ExitCode {
    // Millisecond timestamps: the HIL suite measures reconnect delays from them (docs/hil.md).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let settings = match Settings::from_vars(std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("bad settings: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    static EXECUTOR: StaticCell<embassy_executor::Executor> = StaticCell::new();
    let executor = EXECUTOR.init(embassy_executor::Executor::new());
    executor.run(|spawner| {
        // The only task spawned here: its pool has room.
        spawner.spawn(board_main(spawner, settings).expect("board_main spawned once"));
    })
}
