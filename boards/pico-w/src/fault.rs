//! Faults and panics end in a reset, and the next boot says why.
//!
//! Release builds abort on panic (`-Cpanic=immediate-abort` in `.cargo/config.toml`): a panic
//! executes an undefined instruction and lands in [`HardFault`] like any other fault. The
//! handler logs the faulting address (`addr2line -e <elf> <pc>` names the line), leaves
//! [`RP2040_FAULT_MARKER`] in watchdog scratch register 0 (kept across a watchdog reset, zero
//! after a power-on) and forces a reset through the watchdog. [`take_reset_reason`] reads the
//! watchdog's `REASON` register and the marker on the next boot.
//!
//! cortex-m-rt requires the HardFault handler to be an `unsafe fn` (it replaces the runtime's
//! default), which is why this module allows `unsafe_code`; the handler itself does nothing
//! unsafe.
#![allow(unsafe_code)]

use cortex_m_rt::{ExceptionFrame, exception};
use embassy_rp::pac::{self, WATCHDOG};
use plug_app::reset::{RP2040_FAULT_MARKER, ResetReason, rp2040_reason};

/// Every block the power-on state machine resets on a watchdog reset, except the two
/// oscillators (what embassy-rp's `Watchdog` selects too).
const WDSEL_ALL_BUT_OSCILLATORS: u32 = 0x0001_ffff & !0b11;

/// A fault, or a panic: logs the address, marks the fault and resets the chip.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault or panic at pc {=u32:#x}; resetting", frame.pc());
    WATCHDOG.scratch0().write_value(RP2040_FAULT_MARKER);
    pac::PSM
        .wdsel()
        .write_value(pac::psm::regs::Wdsel(WDSEL_ALL_BUT_OSCILLATORS));
    WATCHDOG.ctrl().write(|w| w.set_trigger(true));
    loop {
        core::hint::spin_loop();
    }
}

/// Why the chip started; clears the fault marker so a later reset reads only its own reason.
/// Call once, early in `main`.
pub fn take_reset_reason() -> ResetReason {
    let reason = WATCHDOG.reason().read().0;
    let marker = WATCHDOG.scratch0().read();
    WATCHDOG.scratch0().write_value(0);
    rp2040_reason(reason, marker)
}
