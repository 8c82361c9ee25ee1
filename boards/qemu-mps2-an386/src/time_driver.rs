//! The embassy time driver for this board: a 1 kHz SysTick interrupt.
//!
//! SysTick fires every millisecond ([`embassy_time_driver::TICK_HZ`] is 1000, set by
//! this crate's `tick-hz-1_000` feature); each interrupt advances a 64-bit tick
//! count and, when the earliest deadline has passed, wakes the expired timers kept
//! in an [`embassy_time_queue_utils::Queue`]. 1 ms resolution is plenty for
//! networking timeouts and keeps the driver free of counter-wrap arithmetic.
//!
//! embassy locates its time driver through link-time symbols
//! ([`embassy_time_driver::time_driver_impl`]), so the driver instance is the one
//! static this design requires; it is private to this module.
use core::cell::RefCell;
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// The time state shared between SysTick and the executor.
struct State {
    /// Ticks (ms) since [`start`].
    ticks: u64,
    /// Tick at which the earliest timer expires (`u64::MAX`: none).
    next_alarm: u64,
    /// Pending timers.
    queue: Queue,
}

/// SysTick-based [`Driver`].
pub struct SysTickDriver {
    state: Mutex<RefCell<State>>,
}

impl SysTickDriver {
    const fn new() -> Self {
        Self {
            state: Mutex::new(RefCell::new(State {
                ticks: 0,
                next_alarm: u64::MAX,
                queue: Queue::new(),
            })),
        }
    }

    /// One SysTick period elapsed: advance time, wake expired timers.
    fn on_tick(&self) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            state.ticks += 1;
            if state.ticks >= state.next_alarm {
                let now = state.ticks;
                state.next_alarm = state.queue.next_expiration(now);
            }
        });
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.state.borrow_ref(cs).ticks)
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            if state.queue.schedule_wake(at, waker) {
                // Also wakes at once anything already due (including `at <= now`).
                let now = state.ticks;
                state.next_alarm = state.queue.next_expiration(now);
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver::new());

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
