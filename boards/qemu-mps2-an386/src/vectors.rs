//! Exception and interrupt bindings: the one place that maps the board's
//! interrupt numbers to driver code.
//!
//! Without a device (PAC) crate, cortex-m-rt routes every external interrupt to
//! `DefaultHandler`, which receives the IRQ number; we dispatch from there.
//! cortex-m-rt requires `DefaultHandler` and `NonMaskableInt` to be declared `unsafe fn`
//! (defining them replaces the runtime's defaults), which is why this module allows
//! `unsafe_code`.
//! No handler here dereferences pointers or touches hardware directly.
#![allow(unsafe_code)]

use cortex_m_rt::exception;

use crate::{lan9118, time_driver, watchdog};

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
