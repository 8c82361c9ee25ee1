//! `clock-probe`: prints the board's clock so the host can compare it with its own.
//!
//! Starts the time driver, then every [`PERIOD`] of board time writes one line
//! `clock-probe <ms>` (the milliseconds of [`Instant::now`]) to QEMU's standard error over
//! semihosting, [`SAMPLES`] times, and exits 0. Between two lines it computes for half the
//! period and sleeps on a timer for the other half: a busy CPU is when QEMU's timer
//! interrupts fall behind, and the timer shows the interrupts still wake the executor. The host stamps each line with its own clock
//! as it arrives (`cargo xtask qemu-clock`, which loads the host's cores meanwhile) and
//! compares the two elapsed times. Standard error keeps the lines apart from the defmt frames
//! on standard output, and plain text needs no decoder; the digits are written by hand so
//! the probe links no `core::fmt`.
//!
//! Before starting the clock it sets the clock's 32-bit counter 3 s before its wrap, so the run
//! also covers the driver's 64-bit extension (without it the clock would jump back by 172 s).
//!
//! Exit codes: 0 done; 2 the core peripherals were taken; 3 semihosting's standard error
//! cannot be opened.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use board_qemu_mps2_an386::{exit, time_driver};
use embassy_executor::Spawner;
use embassy_time::{Duration, Instant, Timer};
use semihosting::io::Write as _;

/// The clock's counter wraps this many cycles after boot (3 s at 25 MHz): the run crosses a
/// wrap, which a 64-bit clock must not notice.
const WRAP_AFTER_CYCLES: u32 = 3 * board_qemu_mps2_an386::SYSCLK_HZ;
/// Board time between two lines.
/// Short, so that even a clock running at a fifth of the host's pace writes lines often enough
/// for the host to stop at any time and still compare over all but the last second.
const PERIOD: Duration = Duration::from_millis(100);
/// Lines written (the first at once): 12 s of board time.
const SAMPLES: u32 = 121;

/// The line for `ms`: `clock-probe <ms>\n`, built right to left in `buf`.
fn line(mut ms: u64, buf: &mut [u8; 40]) -> &[u8] {
    const PREFIX: &[u8] = b"clock-probe ";
    let mut start = buf.len() - 1;
    buf[start] = b'\n';
    loop {
        start -= 1;
        buf[start] = b'0' + (ms % 10) as u8;
        ms /= 10;
        if ms == 0 {
            break;
        }
    }
    start -= PREFIX.len();
    buf[start..start + PREFIX.len()].copy_from_slice(PREFIX);
    &buf[start..]
}

/// Keeps the CPU busy until `deadline`, the way a firmware computing (a handshake's
/// cryptography, say) does: a busy vCPU competes with the host's load for a core, and that is
/// when QEMU's timer interrupts fall behind.
fn compute_until(deadline: Instant) {
    let mut x = 1u32;
    while Instant::now() < deadline {
        for _ in 0..2_000 {
            x = core::hint::black_box(x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223));
        }
    }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let Some(core) = cortex_m::Peripherals::take() else {
        exit(2);
    };
    time_driver::wind_counter_to_wrap_in(WRAP_AFTER_CYCLES);
    time_driver::start(core.SYST, board_qemu_mps2_an386::SYSCLK_HZ);
    let Ok(mut stderr) = semihosting::io::stderr() else {
        exit(3);
    };
    defmt::info!(
        "clock-probe: {=u32} lines, one per {=u64} ms of board time",
        SAMPLES,
        PERIOD.as_millis()
    );
    let mut next = Instant::now();
    for _ in 0..SAMPLES {
        let mut buf = [0; 40];
        // A failed write loses one sample; the host compares the first and the last it got.
        let _ = stderr.write_all(line(Instant::now().as_millis(), &mut buf));
        next += PERIOD;
        compute_until(next - PERIOD / 2);
        Timer::at(next).await;
    }
    exit(0);
}
