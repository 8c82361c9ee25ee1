//! An [`embassy_net_driver::Driver`] for the SMSC LAN9118 Ethernet controller as
//! QEMU models it on mps2 boards (32-bit PIO FIFOs, no DMA).
//!
//! Frames move through the controller's FIFOs by programmed I/O:
//! - receive: the RX status FIFO holds one word per frame (length in bits 29:16,
//!   including the 4-byte FCS); the frame then follows in the RX data FIFO as
//!   little-endian words. An `RSFL` interrupt (status FIFO not empty) wakes the
//!   embassy-net runner.
//! - transmit: command A (segment flags, size), command B (tag, frame length),
//!   then the frame words, written to the TX data FIFO. TX status is discarded
//!   (`TXSAO`).
//!
//! Scope: enough for QEMU's model. A real chip also needs PHY set-up and
//! auto-negotiation, RX/TX error accounting, FIFO overrun recovery, timeouts on the
//! soft reset, and an interrupt for TX FIFO space (here a full FIFO is retried on
//! the next poll).
//!
//! All `unsafe` (MMIO, NVIC) lives in [`regs`].
mod regs;

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use regs::Reg;
pub use regs::{IRQ, Regs};

/// Largest Ethernet frame without FCS (1500 payload + 14 header).
pub const MTU: usize = 1514;
/// Frame buffer size, with room for the FCS the RX FIFO appends.
const FRAME_BUF: usize = 1536;

/// How many register polls a busy bit gets before we give up.
const BUSY_POLLS: u32 = 100_000;

// HW_CFG
const HW_CFG_SRST: u32 = 1 << 0;
// PMT_CTRL
const PMT_CTRL_READY: u32 = 1 << 0;
// TX_CFG
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_TXSAO: u32 = 1 << 2;
// IRQ_CFG: enable, active-high push-pull (QEMU drives the line low otherwise).
const IRQ_CFG_EN_HIGH_PUSHPULL: u32 = (1 << 8) | (1 << 4) | (1 << 0);
// INT_STS / INT_EN
const INT_RSFL: u32 = 1 << 3;
// FIFO_INT: RX status level 0 (interrupt when at least one frame waits), TX
// data available level left at its reset value.
const FIFO_INT_RX_STATUS_LEVEL_MASK: u32 = 0xFF;
// RX status word
const RX_STS_ERROR: u32 = 1 << 15;
const RX_STS_LEN_SHIFT: u32 = 16;
const RX_STS_LEN_MASK: u32 = 0x3FFF;
// TX command A
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
// MAC CSR command
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
// MAC registers (indirect)
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
// MAC_CR: full duplex, TX and RX on; promiscuous mode (reset default) off.
const MAC_CR_FDPX: u32 = 1 << 20;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
// MII (PHY) access
const PHY_ADDR: u32 = 1;
const MII_BUSY: u32 = 1 << 0;
const PHY_BSR: u32 = 1;
const PHY_BSR_LINK_UP: u32 = 1 << 2;

/// The byte-order test register's fixed value.
const BYTE_TEST_VALUE: u32 = 0x8765_4321;

/// Wakes the driver's user when a frame arrives. Interrupt handlers cannot take
/// arguments, so the waker they share with the driver is a static.
static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// Controller bring-up failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum Error {
    /// `BYTE_TEST` did not read back its fixed value: no controller, or wrong bus width.
    NotPresent {
        /// What `BYTE_TEST` returned.
        byte_test: u32,
    },
    /// The controller stayed busy (soft reset, MAC CSR or MII access).
    Timeout,
}

/// The LAN9118 driver; owns the registers and one frame buffer each way.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx_buf: [u8; FRAME_BUF],
    tx_buf: [u8; FRAME_BUF],
}

impl Lan9118 {
    /// Resets and starts the controller.
    ///
    /// `mac` sets the station address; `None` keeps the address the controller
    /// loaded (QEMU's `-nic ...,mac=` or its default `52:54:00:12:34:56`).
    pub fn new(regs: Regs, mac: Option<[u8; 6]>) -> Result<Self, Error> {
        let byte_test = regs.read(Reg::BYTE_TEST);
        if byte_test != BYTE_TEST_VALUE {
            return Err(Error::NotPresent { byte_test });
        }
        let mut dev = Self {
            regs,
            mac: [0; 6],
            rx_buf: [0; FRAME_BUF],
            tx_buf: [0; FRAME_BUF],
        };
        dev.reset()?;
        match mac {
            Some(mac) => dev.set_mac_address(mac)?,
            None => dev.mac = dev.read_mac_address()?,
        }
        dev.regs.write(Reg::TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        dev.mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN)?;
        let fifo_int = dev.regs.read(Reg::FIFO_INT) & !FIFO_INT_RX_STATUS_LEVEL_MASK;
        dev.regs.write(Reg::FIFO_INT, fifo_int);
        dev.regs.write(Reg::INT_STS, u32::MAX);
        dev.regs.write(Reg::INT_EN, INT_RSFL);
        dev.regs.write(Reg::IRQ_CFG, IRQ_CFG_EN_HIGH_PUSHPULL);
        dev.regs.unmask_interrupt();
        defmt::debug!(
            "lan9118: id {=u32:#x}, mac {=[u8]:02x}",
            dev.regs.read(Reg::ID_REV),
            dev.mac
        );
        Ok(dev)
    }

    /// The station (MAC) address in use.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn reset(&mut self) -> Result<(), Error> {
        self.regs.write(Reg::HW_CFG, HW_CFG_SRST);
        self.wait(|regs| {
            regs.read(Reg::HW_CFG) & HW_CFG_SRST == 0
                && regs.read(Reg::PMT_CTRL) & PMT_CTRL_READY != 0
        })
    }

    fn wait(&self, mut done: impl FnMut(&Regs) -> bool) -> Result<(), Error> {
        for _ in 0..BUSY_POLLS {
            if done(&self.regs) {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    fn mac_read(&mut self, index: u32) -> Result<u32, Error> {
        self.wait(|regs| regs.read(Reg::MAC_CSR_CMD) & MAC_CSR_BUSY == 0)?;
        self.regs
            .write(Reg::MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
        self.wait(|regs| regs.read(Reg::MAC_CSR_CMD) & MAC_CSR_BUSY == 0)?;
        Ok(self.regs.read(Reg::MAC_CSR_DATA))
    }

    fn mac_write(&mut self, index: u32, value: u32) -> Result<(), Error> {
        self.wait(|regs| regs.read(Reg::MAC_CSR_CMD) & MAC_CSR_BUSY == 0)?;
        self.regs.write(Reg::MAC_CSR_DATA, value);
        self.regs.write(Reg::MAC_CSR_CMD, MAC_CSR_BUSY | index);
        self.wait(|regs| regs.read(Reg::MAC_CSR_CMD) & MAC_CSR_BUSY == 0)
    }

    fn read_mac_address(&mut self) -> Result<[u8; 6], Error> {
        let low = self.mac_read(MAC_ADDRL)?.to_le_bytes();
        let high = self.mac_read(MAC_ADDRH)?.to_le_bytes();
        Ok([low[0], low[1], low[2], low[3], high[0], high[1]])
    }

    fn set_mac_address(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.mac_write(
            MAC_ADDRL,
            u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        )?;
        self.mac_write(MAC_ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]))?;
        self.mac = mac;
        Ok(())
    }

    fn phy_read(&mut self, reg: u32) -> Result<u32, Error> {
        self.wait_mii_idle()?;
        self.mac_write(MAC_MII_ACC, (PHY_ADDR << 11) | (reg << 6) | MII_BUSY)?;
        self.wait_mii_idle()?;
        Ok(self.mac_read(MAC_MII_DATA)? & 0xFFFF)
    }

    fn wait_mii_idle(&mut self) -> Result<(), Error> {
        for _ in 0..BUSY_POLLS {
            if self.mac_read(MAC_MII_ACC)? & MII_BUSY == 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    /// Frames waiting in the RX status FIFO.
    fn rx_pending(&self) -> u32 {
        (self.regs.read(Reg::RX_FIFO_INF) >> 16) & 0xFF
    }

    /// Pops one frame. `Ok(len)` with the frame (without FCS) in `rx_buf`, or
    /// `Err(())` if the frame was bad or too large and has been dropped.
    fn pop_frame(&mut self) -> Result<usize, ()> {
        let status = self.regs.read(Reg::RX_STATUS_FIFO);
        let len = ((status >> RX_STS_LEN_SHIFT) & RX_STS_LEN_MASK) as usize;
        let words = len.div_ceil(4);
        let fits = len <= self.rx_buf.len() && len >= 4;
        for i in 0..words {
            let word = self.regs.read(Reg::RX_DATA_FIFO).to_le_bytes();
            if fits {
                let start = i * 4;
                let end = (start + 4).min(len);
                self.rx_buf[start..end].copy_from_slice(&word[..end - start]);
            }
        }
        if status & RX_STS_ERROR != 0 || !fits {
            defmt::warn!("lan9118: dropped frame, status {=u32:#x}", status);
            return Err(());
        }
        Ok(len - 4)
    }
}

/// Interrupt body (bound to [`IRQ`] in `vectors`): acknowledge and wake the receiver.
pub(crate) fn on_interrupt() {
    regs::acknowledge_interrupts();
    RX_WAKER.wake();
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Register before looking, so a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        if self.rx_pending() == 0 || !tx_space(&self.regs) {
            if self.rx_pending() != 0 {
                // Frame waiting but TX FIFO full: retry on the next poll.
                cx.waker().wake_by_ref();
            }
            return None;
        }
        let Ok(len) = self.pop_frame() else {
            cx.waker().wake_by_ref();
            return None;
        };
        Some((
            RxToken {
                frame: &mut self.rx_buf[..len],
            },
            TxToken {
                regs: &self.regs,
                buf: &mut self.tx_buf,
            },
        ))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<TxToken<'_>> {
        if !tx_space(&self.regs) {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(TxToken {
            regs: &self.regs,
            buf: &mut self.tx_buf,
        })
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        match self.phy_read(PHY_BSR) {
            Ok(bsr) if bsr & PHY_BSR_LINK_UP != 0 => LinkState::Up,
            _ => {
                // No PHY interrupt wired up: poll again until the link comes up.
                cx.waker().wake_by_ref();
                LinkState::Down
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// Whether the TX data FIFO has room for a full frame plus its two commands.
fn tx_space(regs: &Regs) -> bool {
    (regs.read(Reg::TX_FIFO_INF) & 0xFFFF) as usize >= MTU + 8
}

/// A received frame, lent to the stack.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        f(self.frame)
    }
}

/// Permission to send one frame (the TX FIFO has room for it).
pub struct TxToken<'a> {
    regs: &'a Regs,
    buf: &'a mut [u8; FRAME_BUF],
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // The stack never asks for more than the MTU we advertise; clamp anyway.
        let len = len.min(MTU);
        let frame = &mut self.buf[..len];
        let result = f(frame);
        // `len` <= MTU (1514) fits the 11-bit size fields.
        let size = len as u32;
        self.regs
            .write(Reg::TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | size);
        self.regs.write(Reg::TX_DATA_FIFO, (size << 16) | size);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(Reg::TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        result
    }
}
