//! Raw register access to the LAN9118 on QEMU's mps2-an386 (`0x4020_0000`, IRQ 13).
//!
//! This is the only code in the driver that uses `unsafe`, for three reasons:
//! - memory-mapped I/O needs volatile reads and writes through raw pointers;
//! - unmasking the interrupt in the NVIC is `unsafe` in cortex-m (it may break
//!   critical sections that rely on masking) — ours only wakes a waker;
//! - `InterruptNumber` is an `unsafe` trait (the number must be a valid IRQ).
//!
//! Soundness rests on: the register block exists at [`BASE`] on this machine (its
//! memory map); every access goes through a [`Reg`] constant, i.e. an aligned
//! 32-bit offset inside the 256-byte block; and [`Regs::take`] hands out the
//! block once, so a single driver owns it. The interrupt handler only touches
//! `INT_STS`, a write-1-to-clear register the driver never writes after start-up.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;

/// Base address of the register block.
pub const BASE: usize = 0x4020_0000;
/// The controller's external interrupt number (NVIC IRQ 13).
pub const IRQ: u16 = 13;

/// A register: byte offset into the block. Only the constants below exist.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reg(usize);

impl Reg {
    /// RX data FIFO port (read).
    pub const RX_DATA_FIFO: Reg = Reg(0x00);
    /// TX data FIFO port (write): command A, command B, then data words.
    pub const TX_DATA_FIFO: Reg = Reg(0x20);
    /// RX status FIFO port (read pops one status word).
    pub const RX_STATUS_FIFO: Reg = Reg(0x40);
    /// Chip ID and revision.
    pub const ID_REV: Reg = Reg(0x50);
    /// Interrupt pin configuration.
    pub const IRQ_CFG: Reg = Reg(0x54);
    /// Interrupt status (write 1 to clear).
    pub const INT_STS: Reg = Reg(0x58);
    /// Interrupt enable.
    pub const INT_EN: Reg = Reg(0x5C);
    /// Byte-order test register, reads `0x8765_4321`.
    pub const BYTE_TEST: Reg = Reg(0x64);
    /// FIFO level interrupt thresholds.
    pub const FIFO_INT: Reg = Reg(0x68);
    /// Transmit configuration.
    pub const TX_CFG: Reg = Reg(0x70);
    /// Hardware configuration (soft reset).
    pub const HW_CFG: Reg = Reg(0x74);
    /// RX FIFO usage: status words pending in bits 23:16.
    pub const RX_FIFO_INF: Reg = Reg(0x7C);
    /// TX FIFO usage: free data bytes in bits 15:0.
    pub const TX_FIFO_INF: Reg = Reg(0x80);
    /// Power management control (device ready bit).
    pub const PMT_CTRL: Reg = Reg(0x84);
    /// Indirect MAC register access: command.
    pub const MAC_CSR_CMD: Reg = Reg(0xA4);
    /// Indirect MAC register access: data.
    pub const MAC_CSR_DATA: Reg = Reg(0xA8);
}

/// Ownership of the LAN9118 register block.
pub struct Regs {
    _private: (),
}

/// Set once the block has been handed out.
static TAKEN: AtomicBool = AtomicBool::new(false);

impl Regs {
    /// Takes the register block; `None` if it was already taken.
    pub fn take() -> Option<Self> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            None
        } else {
            Some(Self { _private: () })
        }
    }

    /// Reads a register.
    pub(crate) fn read(&self, reg: Reg) -> u32 {
        read(reg)
    }

    /// Writes a register.
    pub(crate) fn write(&self, reg: Reg, value: u32) {
        // SAFETY: see the module docs: `reg` is an aligned offset inside the block at
        // BASE, which is device memory on this machine, and `self` proves ownership.
        unsafe { core::ptr::write_volatile((BASE + reg.0) as *mut u32, value) }
    }

    /// Unmasks the controller's interrupt in the NVIC.
    pub(crate) fn unmask_interrupt(&self) {
        // SAFETY: the handler (vectors -> lan9118::on_interrupt) only clears INT_STS
        // and wakes a waker; it does not rely on being masked inside critical sections.
        unsafe { NVIC::unmask(EthIrq) }
    }
}

/// Volatile read of a register.
fn read(reg: Reg) -> u32 {
    // SAFETY: see the module docs: aligned offset inside the block at BASE. Reads of
    // FIFO ports pop data, which only the owner of `Regs` does.
    unsafe { core::ptr::read_volatile((BASE + reg.0) as *const u32) }
}

/// Interrupt-context acknowledge: reads `INT_STS` and clears the bits that are set.
pub(crate) fn acknowledge_interrupts() -> u32 {
    let pending = read(Reg::INT_STS);
    // SAFETY: INT_STS is write-1-to-clear; see the module docs.
    unsafe { core::ptr::write_volatile((BASE + Reg::INT_STS.0) as *mut u32, pending) }
    pending
}

/// The controller's IRQ for the NVIC.
#[derive(Clone, Copy)]
struct EthIrq;

// SAFETY: IRQ 13 is a valid external interrupt on the mps2-an386 (the LAN9118 line).
unsafe impl InterruptNumber for EthIrq {
    fn number(self) -> u16 {
        IRQ
    }
}
