//! Board support for QEMU's `mps2-an386` machine (Cortex-M4F, 25 MHz, LAN9118 Ethernet).
//!
//! This is a *virtual* board: it lets the device firmware run unmodified under
//! `qemu-system-arm` with QEMU's user-mode network (guest 10.0.2.15, host loopback
//! reachable as 10.0.2.2), so tests need neither hardware nor root.
//!
//! How the pieces fit:
//! - [`lan9118`] is an [`embassy_net_driver::Driver`] for the LAN9118 Ethernet
//!   controller at `0x4020_0000` (IRQ 13). Hand it to `embassy_net::new`.
//! - [`time_driver`] is the embassy time driver: its clock is the FPGA's free-running
//!   counter, SysTick wakes the timers; start it once with [`time_driver::start`] before
//!   awaiting any timer.
//! - [`vectors`] binds the hardware exceptions (SysTick, the Ethernet IRQ) to the
//!   two drivers above. It is the only place that knows the interrupt numbers.
//! - [`record_region`] is where QEMU's loader puts the provisioning record and the boot
//!   number (block RAM at `0x0100_0000`).
//! - [`flash_file`] is an emulated NOR flash in a host file (semihosting), where the `plug`
//!   binary keeps its boot counter and since_id across QEMU restarts (`plug_app::persist`).
//! - [`Board::init`] does all of the above and returns the parts the firmware needs.
//! - [`watchdog`] is the CMSDK watchdog (fed while a task makes progress; started by the
//!   binary that wants it) and the reason of the last reset, kept in block RAM across the
//!   watchdog's reset.
//!
//! A board binary (see `src/bin/`) creates the embassy-net stack on top of
//! [`Board::ethernet`] and runs the firmware's device client; logs go out through
//! defmt over semihosting (QEMU's stdout) and [`exit`] ends QEMU with a status code;
//! a panic ends it with [`panic::PANIC_EXIT_CODE`].
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod flash_file;
pub mod lan9118;
pub mod panic;
pub mod record_region;
pub mod time_driver;
mod vectors;
pub mod watchdog;

// defmt frames go to QEMU's stdout over semihosting.
use defmt_semihosting as _;

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

pub use lan9118::Lan9118;

/// Core clock of the mps2-an386 FPGA image (SYSCLK), which SysTick and the FPGA's counter count.
pub const SYSCLK_HZ: u32 = 25_000_000;

/// What can go wrong while bringing the board up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum BoardError {
    /// The core peripherals were already taken (init called twice).
    CorePeripheralsTaken,
    /// The Ethernet controller registers were already taken.
    EthernetTaken,
    /// The Ethernet controller did not come up.
    Ethernet(lan9118::Error),
}

/// The board's parts, ready for the firmware.
pub struct Board {
    /// Ethernet driver for embassy-net.
    pub ethernet: Lan9118,
}

impl Board {
    /// Starts the time driver and brings up the Ethernet controller.
    ///
    /// `mac` overrides the controller's address; `None` keeps the one QEMU (or the
    /// EEPROM on a real board) loaded. Call once, early in `main`.
    pub fn init(mac: Option<[u8; 6]>) -> Result<Self, BoardError> {
        let core = cortex_m::Peripherals::take().ok_or(BoardError::CorePeripheralsTaken)?;
        time_driver::start(core.SYST, SYSCLK_HZ);
        let regs = lan9118::Regs::take().ok_or(BoardError::EthernetTaken)?;
        let ethernet = Lan9118::new(regs, mac).map_err(BoardError::Ethernet)?;
        Ok(Self { ethernet })
    }
}

/// Ends the emulation: QEMU exits with `code` as its process status
/// (semihosting `SYS_EXIT_EXTENDED`). 0 means success.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}
