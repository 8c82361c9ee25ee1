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
//!
//! The same untouched block RAM holds the count of resets since power-on ([`count_boot`],
//! folded into the boot generator's seed, since the loader's boot number does not change on a
//! reset) and a few words one boot can leave for the next ([`leave_notes`], [`take_notes`]).

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

/// Marks a valid reset count (`"RSTC"`), so zeroed block RAM reads as no reset yet.
const RESETS_MAGIC: u32 = u32::from_le_bytes(*b"RSTC");
/// The reset count: [`RESETS_MAGIC`], then the count (the two words after the reason marker).
const RESETS_ADDR: usize = REASON_ADDR + 4;

/// Counts this boot and returns how many resets came before it since QEMU started the machine:
/// 0 on a power-on, then 1, 2, ... after each reset (the watchdog's or any other) that keeps
/// block RAM. QEMU's loader writes the same boot number again on every reset, so a board without
/// a random source folds this count into its boot generator to get a fresh stream after a
/// reset. Call exactly once per boot, early in `main`. The count wraps after 2^32 resets.
#[allow(unsafe_code)]
pub fn count_boot() -> u32 {
    let words = RESETS_ADDR as *mut u32;
    // SAFETY: as in `take_reset_reason` (two words of block RAM after the reason marker, 4-byte
    // aligned, touched only here).
    let (magic, count) = unsafe { (words.read_volatile(), words.add(1).read_volatile()) };
    let resets = if magic == RESETS_MAGIC { count } else { 0 };
    // SAFETY: as above.
    unsafe {
        words.write_volatile(RESETS_MAGIC);
        words.add(1).write_volatile(resets.wrapping_add(1));
    }
    resets
}

/// Words a program can leave for its next boot (what it was doing, for example).
pub const NOTE_WORDS: usize = 4;
/// Where the notes live, kept like the reason marker (after the reset count).
const NOTES_ADDR: usize = RESETS_ADDR + 8;

/// Leaves `notes` for the next boot (see [`take_notes`]).
#[allow(unsafe_code)]
pub fn leave_notes(notes: [u32; NOTE_WORDS]) {
    let words = NOTES_ADDR as *mut u32;
    for (i, value) in notes.into_iter().enumerate() {
        // SAFETY: as in `take_reset_reason` (NOTE_WORDS words of block RAM after the reset
        // count, 4-byte aligned, touched only by this pair of functions).
        unsafe { words.add(i).write_volatile(value) };
    }
}

/// The words an earlier boot left with [`leave_notes`] (zeros: none); clears them.
#[allow(unsafe_code)]
pub fn take_notes() -> [u32; NOTE_WORDS] {
    let words = NOTES_ADDR as *mut u32;
    let mut notes = [0; NOTE_WORDS];
    for (i, note) in notes.iter_mut().enumerate() {
        // SAFETY: as in `leave_notes`.
        unsafe {
            *note = words.add(i).read_volatile();
            words.add(i).write_volatile(0);
        }
    }
    notes
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
