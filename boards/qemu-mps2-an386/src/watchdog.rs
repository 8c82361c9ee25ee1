//! The board's CMSDK APB watchdog (`0x4000_8000`, clocked at [`SYSCLK_HZ`](crate::SYSCLK_HZ))
//! and the reset reason it leaves behind.
//!
//! How it works: the counter counts down from its load value; the first time it reaches zero
//! it raises its interrupt (wired to the NMI on this machine) and reloads; if the interrupt is
//! still pending the second time, the watchdog resets the system. [`Watchdog::feed`] clears
//! the interrupt and reloads the counter, so a program that stops feeding is reset between one
//! and two timeouts later. Once started it cannot be stopped (its registers are locked again).
//!
//! The reset reason: the NMI handler ([`on_timeout`], bound in `vectors`) writes a marker to
//! block RAM at [`REASON_ADDR`] before the reset comes. QEMU's system reset reloads the image
//! and the loader's data but leaves RAM that nothing loads untouched, so the next boot finds
//! the marker: [`take_reset_reason`] reads and clears it. A marker left by an earlier QEMU
//! process cannot exist (block RAM starts zeroed), so a boot without one is a power-on.

use core::sync::atomic::{AtomicBool, Ordering};

use firmware::net::Liveness;

use crate::SYSCLK_HZ;
use crate::record_region::{RECORD_ADDR, RECORD_REGION_LEN};

/// Base address of the watchdog's registers.
const BASE: usize = 0x4000_8000;
/// Counter reload value.
const WDOGLOAD: usize = BASE;
/// Control: interrupt enable, reset enable.
const WDOGCONTROL: usize = BASE + 0x08;
/// Writing any value clears the interrupt and reloads the counter.
const WDOGINTCLR: usize = BASE + 0x0C;
/// Register write lock.
const WDOGLOCK: usize = BASE + 0xC00;
/// The key that unlocks the registers (any other value locks them).
const UNLOCK_KEY: u32 = 0x1ACC_E551;
const INTEN: u32 = 1 << 0;
const RESEN: u32 = 1 << 1;

/// Where the reset reason marker lives: block RAM after the record region and its boot word
/// (see [`crate::record_region`]), which nothing loads.
pub const REASON_ADDR: usize = RECORD_ADDR + RECORD_REGION_LEN + 0x10;
/// Marks a reason written by this module (`"RSTW"`: reset by the watchdog).
const WATCHDOG_MARKER: u32 = u32::from_le_bytes(*b"RSTW");

/// Why the board last started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum ResetReason {
    /// QEMU started (or the system was reset by anything but the watchdog).
    PowerOn,
    /// The watchdog was not fed in time.
    Watchdog,
}

impl ResetReason {
    /// A short name for logs and reports (`power-on`, `watchdog`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::PowerOn => "power-on",
            ResetReason::Watchdog => "watchdog",
        }
    }
}

/// The reason of this boot; clears the marker, so the next reset that is not the watchdog's
/// reads as [`ResetReason::PowerOn`]. Call once, early in `main`.
#[allow(unsafe_code)]
pub fn take_reset_reason() -> ResetReason {
    let marker = REASON_ADDR as *mut u32;
    // SAFETY: block RAM is mapped at REASON_ADDR (4-byte aligned, outside every memory.x
    // region, so no Rust object lives there); volatile access, and only this module and the
    // NMI handler touch the word.
    let value = unsafe { marker.read_volatile() };
    // SAFETY: as above.
    unsafe { marker.write_volatile(0) };
    if value == WATCHDOG_MARKER {
        ResetReason::Watchdog
    } else {
        ResetReason::PowerOn
    }
}

/// The watchdog's first timeout (its NMI): records the reason, leaves the interrupt pending
/// so the second timeout resets the system.
#[allow(unsafe_code)]
pub(crate) fn on_timeout() {
    // SAFETY: as in `take_reset_reason`.
    unsafe { (REASON_ADDR as *mut u32).write_volatile(WATCHDOG_MARKER) };
}

/// A word the program leaves for its next boot (what it was doing, for example), kept like the
/// reason marker; [`take_note`] reads and clears it.
const NOTE_ADDR: usize = REASON_ADDR + 4;

/// Leaves `value` for the next boot (see [`take_note`]).
#[allow(unsafe_code)]
pub fn leave_note(value: u32) {
    // SAFETY: as in `take_reset_reason` (the word after the marker, also block RAM).
    unsafe { (NOTE_ADDR as *mut u32).write_volatile(value) };
}

/// The word an earlier boot left with [`leave_note`] (0: none); clears it.
#[allow(unsafe_code)]
pub fn take_note() -> u32 {
    let note = NOTE_ADDR as *mut u32;
    // SAFETY: as in `leave_note`.
    let value = unsafe { note.read_volatile() };
    // SAFETY: as in `leave_note`.
    unsafe { note.write_volatile(0) };
    value
}

/// Feeds `watchdog` every `period_ms` while `liveness` says the task it watches (the SDK's
/// runner, see `firmware::net::Liveness`) is within its promise, and stops feeding (so the board
/// resets) once it is not. Run it in a task of its own; it never returns. A hang of the whole
/// executor stops this task too, and so is caught the same way.
pub async fn feed_while_alive(mut watchdog: Watchdog, liveness: &Liveness, period_ms: u64) -> ! {
    loop {
        if liveness.is_alive(embassy_time::Instant::now().as_millis()) {
            watchdog.feed();
        }
        embassy_time::Timer::after_millis(period_ms).await;
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The running watchdog; feed it more often than its timeout.
pub struct Watchdog {
    _private: (),
}

/// Why the watchdog did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum WatchdogError {
    /// It was started before.
    AlreadyStarted,
    /// The timeout is 0 or longer than the counter can hold (about 171 s).
    BadTimeout,
}

impl Watchdog {
    /// Starts the watchdog: the system resets between `timeout_ms` and twice that after the
    /// last [`feed`](Self::feed).
    #[allow(unsafe_code)]
    pub fn start(timeout_ms: u32) -> Result<Self, WatchdogError> {
        let ticks = u64::from(timeout_ms) * u64::from(SYSCLK_HZ) / 1_000;
        let load = u32::try_from(ticks)
            .ok()
            .filter(|t| *t > 0)
            .ok_or(WatchdogError::BadTimeout)?;
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(WatchdogError::AlreadyStarted);
        }
        // SAFETY: the watchdog's registers are mapped at BASE on this machine; TAKEN makes
        // this the only writer besides `feed` on the one instance; volatile accesses.
        unsafe {
            (WDOGLOCK as *mut u32).write_volatile(UNLOCK_KEY);
            (WDOGLOAD as *mut u32).write_volatile(load);
            (WDOGINTCLR as *mut u32).write_volatile(1);
            (WDOGCONTROL as *mut u32).write_volatile(INTEN | RESEN);
            (WDOGLOCK as *mut u32).write_volatile(0);
        }
        Ok(Watchdog { _private: () })
    }

    /// Clears the pending timeout and reloads the counter.
    #[allow(unsafe_code)]
    pub fn feed(&mut self) {
        // SAFETY: as in `start`; `&mut self` serialises the writers.
        unsafe {
            (WDOGLOCK as *mut u32).write_volatile(UNLOCK_KEY);
            (WDOGINTCLR as *mut u32).write_volatile(1);
            (WDOGLOCK as *mut u32).write_volatile(0);
        }
    }
}
