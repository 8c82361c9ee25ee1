//! The embassy time driver for this board: the clock is the FPGA's free-running 25 MHz
//! counter; a 1 kHz SysTick interrupt only wakes timers.
//!
//! How the pieces fit:
//! - [`now`](Driver::now) reads `COUNTER` of the MPS2 FPGA I/O block (`0x4002_8018`), a 32-bit
//!   counter that counts at [`SYSCLK_HZ`](crate::SYSCLK_HZ) from reset (its prescaler resets to
//!   0, so it advances once per clock cycle). [`CounterClock`] turns it into 64-bit ticks: each
//!   read adds the cycles since the previous read, a wrapping 32-bit difference that stays
//!   right across the counter's wrap (2^32 cycles, about 172 s) as long as two reads are never
//!   a whole wrap apart, which the SysTick
//!   interrupt guarantees: it reads the counter every millisecond, and even a host that starves
//!   QEMU for seconds stays far from 172 s.
//! - SysTick fires every millisecond ([`embassy_time_driver::TICK_HZ`] is 1000, set by this
//!   crate's `tick-hz-1_000` feature); each interrupt reads the clock and, when the earliest
//!   deadline has passed, wakes the expired timers kept in an
//!   [`embassy_time_queue_utils::Queue`].
//!
//! Why not count the interrupts, as this driver did before: under QEMU the interrupts are
//! timer callbacks of the emulator, and on a loaded host they come late or several periods
//! are folded into one. A clock that counts them runs slow (5 s meter intervals arrived 7.8 to
//! 10 s apart), which stretched every timeout of the hardware-in-the-loop tests. QEMU computes
//! `COUNTER` from its virtual clock at the moment of the read, and without `-icount` that
//! clock follows the host's monotonic clock, so the board's clock keeps the host's pace
//! however late the interrupts are (`cargo xtask qemu-clock` measures it under load;
//! docs/boards.md has the figures). On real MPS2 hardware the counter is the FPGA's, so the
//! driver is right there too. The `systick-clock` feature brings back the interrupt-counting
//! clock, only to show that test failing.
//!
//! embassy locates its time driver through link-time symbols
//! ([`embassy_time_driver::time_driver_impl`]), so the driver instance is the one
//! static this design requires; it is private to this module.
// With `systick-clock` the counter is not the clock; its code stays compiled but unused.
#![cfg_attr(feature = "systick-clock", allow(dead_code))]
use core::cell::RefCell;
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// The FPGA I/O block's free-running counter (`COUNTER`, offset 0x18 of the block at
/// `0x4002_8000`): counts at [`crate::SYSCLK_HZ`] while its prescaler (`PRESCALE`) is 0, its
/// reset value, which nothing on this board changes. Only this module reads or writes it.
const FPGAIO_COUNTER: usize = 0x4002_8018;

/// Counter cycles per embassy tick (25,000).
const CYCLES_PER_TICK: u32 = crate::SYSCLK_HZ / embassy_time_driver::TICK_HZ as u32;

/// Sets the counter `cycles` before its wrap, so a test sees the wrap within seconds rather
/// than after 172 s (the `clock-probe` binary does, to cover the wrap tracking). The clock then
/// starts near 172 s instead of 0. Call before [`start`] and before anything reads the clock:
/// a later jump of the counter would read as that many cycles elapsed.
#[allow(unsafe_code)]
pub fn wind_counter_to_wrap_in(cycles: u32) {
    // SAFETY: FPGAIO_COUNTER is a writable register of the machine's FPGA I/O block, always
    // mapped; writing it sets the counter and touches nothing else.
    unsafe { (FPGAIO_COUNTER as *mut u32).write_volatile(0u32.wrapping_sub(cycles)) }
}

/// Reads the raw 32-bit counter.
#[allow(unsafe_code)]
fn read_counter() -> u32 {
    // SAFETY: FPGAIO_COUNTER is a read-only, side-effect-free register of the machine's FPGA
    // I/O block, always mapped; a volatile 32-bit read of it is all this does.
    unsafe { (FPGAIO_COUNTER as *const u32).read_volatile() }
}

/// The 32-bit counter turned into a 64-bit tick count.
///
/// Each reading adds the cycles since the previous one (a wrapping 32-bit difference, right
/// across the counter's wrap as long as readings are less than 2^32 cycles, about 172 s,
/// apart) to whole ticks and a remainder below one tick. Only 32-bit divisions: a 64-bit
/// division would link several hundred bytes of runtime support.
struct CounterClock {
    /// The raw counter at the last reading.
    last: u32,
    /// Whole ticks counted.
    ticks: u64,
    /// Cycles counted beyond `ticks` (below [`CYCLES_PER_TICK`]).
    cycles: u32,
}

impl CounterClock {
    const fn new() -> Self {
        Self {
            last: 0,
            ticks: 0,
            cycles: 0,
        }
    }

    /// Folds a raw reading in and returns the ticks so far.
    fn update(&mut self, raw: u32) -> u64 {
        let delta = raw.wrapping_sub(self.last);
        self.last = raw;
        self.ticks += u64::from(delta / CYCLES_PER_TICK);
        self.cycles += delta % CYCLES_PER_TICK;
        if self.cycles >= CYCLES_PER_TICK {
            self.cycles -= CYCLES_PER_TICK;
            self.ticks += 1;
        }
        self.ticks
    }
}

/// The time state shared between SysTick and the executor.
struct State {
    /// The clock.
    #[cfg(not(feature = "systick-clock"))]
    clock: CounterClock,
    /// SysTick interrupts taken: the clock of the `systick-clock` feature.
    #[cfg(feature = "systick-clock")]
    interrupts: u64,
    /// Tick at which the earliest timer expires (`u64::MAX`: none).
    next_alarm: u64,
    /// Pending timers.
    queue: Queue,
}

impl State {
    /// The current time in embassy ticks. Reading inside the critical section keeps the
    /// readings and the clock's state consistent.
    fn now(&mut self) -> u64 {
        #[cfg(feature = "systick-clock")]
        return self.interrupts;
        #[cfg(not(feature = "systick-clock"))]
        return self.clock.update(read_counter());
    }
}

/// The board's [`Driver`]: counter-based clock, SysTick-driven timer wake-ups.
pub struct CounterDriver {
    state: Mutex<RefCell<State>>,
}

impl CounterDriver {
    const fn new() -> Self {
        Self {
            state: Mutex::new(RefCell::new(State {
                #[cfg(not(feature = "systick-clock"))]
                clock: CounterClock::new(),
                #[cfg(feature = "systick-clock")]
                interrupts: 0,
                // "Check at the next tick", which finds the queue empty and sets `u64::MAX`:
                // all-zero state goes to .bss, not .data (32 B of flash less).
                next_alarm: 0,
                queue: Queue::new(),
            })),
        }
    }

    /// One SysTick period: read the clock (which also keeps readings well within one wrap of
    /// each other: one every millisecond), wake expired timers.
    fn on_tick(&self) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            #[cfg(feature = "systick-clock")]
            {
                state.interrupts += 1;
            }
            let now = state.now();
            if now >= state.next_alarm {
                state.next_alarm = state.queue.next_expiration(now);
            }
        });
    }
}

impl Driver for CounterDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.state.borrow_ref_mut(cs).now())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            if state.queue.schedule_wake(at, waker) {
                // Also wakes at once anything already due (including `at <= now`).
                let now = state.now();
                state.next_alarm = state.queue.next_expiration(now);
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: CounterDriver = CounterDriver::new());

/// Starts SysTick at [`embassy_time_driver::TICK_HZ`] from the core clock.
///
/// Taking `SYST` by value guarantees nobody else reprograms it.
pub fn start(mut syst: SYST, core_clock_hz: u32) {
    let tick_hz = u32::try_from(embassy_time_driver::TICK_HZ).unwrap_or(u32::MAX);
    // SysTick's reload register is 24 bits wide.
    let reload = (core_clock_hz / tick_hz).saturating_sub(1).min(0x00FF_FFFF);
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(reload);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// SysTick exception body (bound in `vectors`).
pub(crate) fn on_systick() {
    DRIVER.on_tick();
}
