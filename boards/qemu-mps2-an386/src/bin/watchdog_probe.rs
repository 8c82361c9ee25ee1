//! `watchdog-probe`: the board's watchdog and reset-reason test.
//!
//! First boot (reset reason power-on): starts the watchdog with a 1 s timeout, fed by
//! [`watchdog::feed_while_alive`] while a worker task keeps its [`Liveness`] promise (every
//! 20 ms it promises to be back within 100 ms, as the SDK's runner does before each wait).
//! After 1 s of that (the watchdog must not fire while fed) the worker hangs: it awaits
//! something that never comes, the way a network task stuck on a dead peer would, while the
//! executor and the feeder keep running. Once the promise (plus its grace) has passed, the
//! feeder stops feeding and the watchdog resets the board. Second boot: the reset reason must
//! be `watchdog` and the notes the first boot left must say it had started the hang; then the
//! probe exits 0.
//!
//! Each boot also draws its upload epoch the way the `plug` binary does: a
//! `firmware::DeviceClient` on a `plug_app::entropy::BootRng` seeded from a fixed test seed,
//! the boot number (the loader's, or 1: either way the same on both boots, as on a real watchdog
//! reset) and [`watchdog::count_boot`]. The first boot leaves its epoch in the notes; the second
//! must draw another one.
//!
//! Exit codes: 0 pass; 1 the watchdog reset the board while it was fed; 2 the watchdog did
//! not start; 3 the worker hung but no reset came within 8 s (the grace is 2 s, the reset comes
//! 1-2 s after it); 4 the boot
//! after the reset drew the same upload epoch as the boot before it.
//! `cargo xtask qemu-watchdog`
//! runs it under QEMU.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use board_qemu_mps2_an386::watchdog::{self, ResetReason, Watchdog};
use board_qemu_mps2_an386::{exit, record_region, time_driver};
use embassy_executor::Spawner;
use embassy_time::{Duration, Instant, Timer};
use firmware::net::Liveness;
use firmware::{ClientConfig, DeviceClient, DeviceConfig, Endpoint};
use plug_app::entropy::BootRng;
use shared_protocol::keys::DeviceKey;

/// Watchdog timeout: long enough that QEMU's vCPU thread, starved for a few hundred ms on a
/// loaded host while the watchdog's clock runs on, does not read as a missed feed.
const TIMEOUT_MS: u32 = 1_000;
/// The feeder's period.
const FEED_PERIOD_MS: u64 = 50;
/// What the worker promises before each of its waits.
const PROMISE_MS: u64 = 100;
/// How long the worker makes progress before it hangs.
const FED_FOR: Duration = Duration::from_secs(1);
/// Note left before the hang: `"HANG"`.
const HANGING: u32 = u32::from_le_bytes(*b"HANG");

static LIVENESS: Liveness = Liveness::new();

/// Stands in for the record's secret seed (this probe never connects).
const TEST_SEED: [u8; 16] = [0x5e; 16];

/// The upload epoch a client draws on this boot, from the same generator the `plug` binary
/// gives its client.
fn upload_epoch(boot: u32, resets: u32) -> u64 {
    let endpoints = [Endpoint::udp(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(192, 0, 2, 1),
        9,
    )))];
    let device = DeviceConfig {
        device_id: 1,
        key: DeviceKey([0; 32]),
        endpoints: &endpoints,
        lookup: None,
        since_id: 0,
    };
    let rng = BootRng::new(&TEST_SEED, boot, resets);
    let client: DeviceClient<'_, BootRng, 1, 64, 2, 1> = DeviceClient::new(
        device,
        ClientConfig::default(),
        rng,
        firmware::time::Instant::from_millis(0),
    );
    client.upload_epoch()
}

/// The epoch as two note words (high, low).
fn epoch_words(epoch: u64) -> [u32; 2] {
    [(epoch >> 32) as u32, epoch as u32]
}

#[embassy_executor::task]
async fn worker(epoch: u64) {
    let start = Instant::now();
    while start.elapsed() < FED_FOR {
        LIVENESS.promise(Instant::now().as_millis(), PROMISE_MS);
        Timer::after_millis(20).await;
    }
    defmt::info!(
        "watchdog-probe: fed for {} ms without a reset; hanging the worker",
        FED_FOR.as_millis()
    );
    let [high, low] = epoch_words(epoch);
    watchdog::leave_notes([HANGING, high, low, 0]);
    core::future::pending::<()>().await;
}

#[embassy_executor::task]
async fn feeder(watchdog: Watchdog) {
    watchdog::feed_while_alive(watchdog, &LIVENESS, FEED_PERIOD_MS).await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let reason = watchdog::take_reset_reason();
    let resets = watchdog::count_boot();
    let notes = watchdog::take_notes();
    let boot = record_region::boot_number().unwrap_or(1);
    let epoch = upload_epoch(boot, resets);
    defmt::info!(
        "watchdog-probe: reset reason {=str}, boot {=u32}, {=u32} resets since power-on, upload epoch {=u64:#x}",
        reason.as_str(),
        boot,
        resets,
        epoch
    );
    match (reason, notes) {
        (ResetReason::Watchdog, [HANGING, high, low, _]) => {
            defmt::info!("watchdog-probe: the hang was caught by a watchdog reset");
            if epoch_words(epoch) == [high, low] {
                defmt::error!(
                    "watchdog-probe: same upload epoch as the boot before the reset: {=u64:#x}",
                    epoch
                );
                exit(4);
            }
            defmt::info!("watchdog-probe: a new upload epoch after the reset: pass");
            exit(0);
        }
        (ResetReason::Watchdog, _) => {
            defmt::error!("watchdog-probe: reset by the watchdog while it was fed");
            exit(1);
        }
        (ResetReason::PowerOn, _) => {}
    }
    let Some(core) = cortex_m::Peripherals::take() else {
        exit(2);
    };
    time_driver::start(core.SYST, board_qemu_mps2_an386::SYSCLK_HZ);
    let watchdog = match Watchdog::start(TIMEOUT_MS) {
        Ok(w) => w,
        Err(e) => {
            defmt::error!("watchdog-probe: {}", e);
            exit(2);
        }
    };
    spawner.spawn(feeder(watchdog).expect("feeder spawned once"));
    spawner.spawn(worker(epoch).expect("worker spawned once"));
    Timer::after(FED_FOR + Duration::from_secs(8)).await;
    defmt::error!("watchdog-probe: no reset within 8 s of the hang");
    exit(3);
}
