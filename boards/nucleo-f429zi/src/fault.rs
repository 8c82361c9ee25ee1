//! Faults and panics end in a reset, and the next boot says why.
//!
//! Release builds abort on panic (`-Cpanic=immediate-abort` in `.cargo/config.toml`): a panic
//! executes an undefined instruction and lands in [`HardFault`] like any other fault. The
//! handler logs the faulting address (`addr2line -e <elf> <pc>` names the line) and resets the
//! chip through `SYSRESETREQ`, which sets `RCC_CSR.SFTRSTF`; this firmware requests no other
//! software reset, so [`take_reset_reason`] reads that flag as a fault.
//!
//! cortex-m-rt requires the HardFault handler to be an `unsafe fn` (it replaces the runtime's
//! default), which is why this module allows `unsafe_code`; the handler itself does nothing
//! unsafe.
#![allow(unsafe_code)]

use cortex_m_rt::{ExceptionFrame, exception};
use embassy_stm32::pac::RCC;
use plug_app::reset::{ResetReason, stm32f4_reason};

/// A fault, or a panic: logs the address and resets the chip.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault or panic at pc {=u32:#x}; resetting", frame.pc());
    cortex_m::peripheral::SCB::sys_reset()
}

/// Why the chip started, from the reset flags of `RCC_CSR`; clears them (`RMVF`) so the next
/// boot reads only its own reset. Call once, early in `main`.
pub fn take_reset_reason() -> ResetReason {
    let csr = RCC.csr().read().0;
    RCC.csr().modify(|w| w.set_rmvf(true));
    stm32f4_reason(csr)
}
