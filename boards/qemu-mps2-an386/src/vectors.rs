//! Exception and interrupt bindings: the one place that maps the board's
//! interrupt numbers to driver code.
//!
//! Without a device (PAC) crate, every external interrupt goes to `DefaultHandler`, which
//! receives the IRQ number; we dispatch from there. The vector holds the machine's 32 external
//! interrupts ([`__INTERRUPTS`]; cortex-m-rt's generic one, without its `device` feature, has
//! 240 entries, 832 B of flash more).
//! cortex-m-rt requires `DefaultHandler`, `NonMaskableInt` and `HardFault` to be declared
//! `unsafe fn` (defining them replaces the runtime's defaults), which is why this module allows
//! `unsafe_code`.
//! No handler here dereferences pointers or touches hardware directly.
#![allow(unsafe_code)]

use cortex_m_rt::{ExceptionFrame, exception};

use crate::{lan9118, panic, time_driver, watchdog};

/// A fault, or a panic: release builds abort on panic (`-Cpanic=immediate-abort` in
/// `.cargo/config.toml`), which executes an undefined instruction that ends here. Logs the
/// faulting address (`addr2line -e <elf> <pc>` names the file and line) and ends QEMU with
/// [`panic::PANIC_EXIT_CODE`], as a panic did before.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault or panic at pc {=u32:#x}", frame.pc());
    crate::exit(panic::PANIC_EXIT_CODE)
}

/// External interrupts of QEMU's mps2-an386 (its NVIC has 32; the LAN9118 is number 13).
const EXTERNAL_INTERRUPTS: usize = 32;

/// The external part of the vector table (cortex-m-rt's `device` feature expects the board
/// to provide it): every entry is cortex-m-rt's `DefaultHandler` trampoline, which passes the
/// IRQ number to [`DefaultHandler`] below.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [unsafe extern "C" fn(); EXTERNAL_INTERRUPTS] = {
    unsafe extern "C" {
        fn DefaultHandler();
    }
    [DefaultHandler; EXTERNAL_INTERRUPTS]
};

#[exception]
fn SysTick() {
    time_driver::on_systick();
}

/// The watchdog's interrupt is wired to the NMI on this machine. (cortex-m-rt requires the
/// NMI handler to be an `unsafe fn`, like `DefaultHandler`: it can preempt critical sections.
/// It only writes one word no critical section guards.)
#[exception]
unsafe fn NonMaskableInt() {
    watchdog::on_timeout();
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == i16::try_from(lan9118::IRQ).unwrap_or(i16::MAX) {
        lan9118::on_interrupt();
    } else {
        // Only the interrupts enabled by this crate's drivers can fire.
        defmt::warn!("unexpected interrupt {}", irqn);
    }
}
