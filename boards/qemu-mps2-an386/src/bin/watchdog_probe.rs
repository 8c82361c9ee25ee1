//! `watchdog-probe`: the board's watchdog and reset-reason test.
//!
//! First boot (reset reason power-on): starts the watchdog with a 200 ms timeout, fed by
//! [`watchdog::feed_while_alive`] while a worker task keeps its [`Liveness`] promise (every
//! 20 ms it promises to be back within 100 ms, as the SDK's runner does before each wait).
//! After 1 s of that (the watchdog must not fire while fed) the worker hangs: it awaits
//! something that never comes, the way a network task stuck on a dead peer would, while the
//! executor and the feeder keep running. Once the promise (plus its grace) has passed, the
//! feeder stops feeding and the watchdog resets the board. Second boot: the reset reason must be `watchdog` and the note the first
//! boot left must say it had started the hang; then the probe exits 0.
//!
//! Exit codes: 0 pass; 1 the watchdog reset the board while it was fed; 2 the watchdog did
//! not start; 3 the worker hung but no reset came within 5 s (the grace is 2 s).
//! `cargo xtask qemu-watchdog`
//! runs it under QEMU.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use board_qemu_mps2_an386::watchdog::{self, ResetReason, Watchdog};
use board_qemu_mps2_an386::{exit, time_driver};
use embassy_executor::Spawner;
use embassy_time::{Duration, Instant, Timer};
use firmware::net::Liveness;

/// Watchdog timeout.
const TIMEOUT_MS: u32 = 200;
/// The feeder's period.
const FEED_PERIOD_MS: u64 = 50;
/// What the worker promises before each of its waits.
const PROMISE_MS: u64 = 100;
/// How long the worker makes progress before it hangs.
const FED_FOR: Duration = Duration::from_secs(1);
/// Note left before the hang: `"HANG"`.
const HANGING: u32 = u32::from_le_bytes(*b"HANG");

static LIVENESS: Liveness = Liveness::new();

#[embassy_executor::task]
async fn worker() {
    let start = Instant::now();
    while start.elapsed() < FED_FOR {
        LIVENESS.promise(Instant::now().as_millis(), PROMISE_MS);
        Timer::after_millis(20).await;
    }
    defmt::info!(
        "watchdog-probe: fed for {} ms without a reset; hanging the worker",
        FED_FOR.as_millis()
    );
    watchdog::leave_note(HANGING);
    core::future::pending::<()>().await;
}

#[embassy_executor::task]
async fn feeder(watchdog: Watchdog) {
    watchdog::feed_while_alive(watchdog, &LIVENESS, FEED_PERIOD_MS).await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let reason = watchdog::take_reset_reason();
    let note = watchdog::take_note();
    defmt::info!("watchdog-probe: reset reason {=str}", reason.as_str());
    match (reason, note) {
        (ResetReason::Watchdog, HANGING) => {
            defmt::info!("watchdog-probe: the hang was caught by a watchdog reset: pass");
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
    spawner.spawn(worker().expect("worker spawned once"));
    Timer::after(FED_FOR + Duration::from_secs(5)).await;
    defmt::error!("watchdog-probe: no reset within 5 s of the hang");
    exit(3);
}
