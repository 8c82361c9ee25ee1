//! NOR flash as the boards without one emulate it in a host file (host-tap in a plain file,
//! QEMU through semihosting), so the persistent area ([`crate::persist`]) meets there the rules
//! it meets on silicon:
//! - an erase sets whole [`ERASE_SIZE`] sectors to `0xFF`;
//! - a write of whole [`WRITE_SIZE`] words may only clear bits: one that would set a bit is
//!   refused with [`NorError::NotNor`] and changes nothing (real NOR would silently store the
//!   AND);
//! - reads are byte-granular, and no access reaches beyond [`SIZE`] bytes.
//!
//! How the pieces fit: a board implements [`Backing`] over its file, nothing but byte I/O (its
//! length, read at an offset, write at an offset, make it durable) and its own error type.
//! [`EmulatedNor`] over that backing holds the rules above and the `embedded-storage-async`
//! traits ([`NorFlash`], [`ReadNorFlash`]) that sequential-storage works over; its errors are
//! [`NorError`], the broken rule or the backing's own error. [`EmulatedNor::new`] fills a
//! missing or short file with `0xFF` (an erased chip), so deleting the file wipes the area.

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Sector (erase unit): 4 KiB like the RP2040's QSPI flash.
pub const ERASE_SIZE: usize = 4096;
/// Program unit: 32-bit words like the STM32F4's internal flash at 2.7-3.6 V.
pub const WRITE_SIZE: usize = 4;
/// Sectors in the emulated area.
pub const SECTORS: usize = 4;
/// Bytes of the emulated area.
pub const SIZE: usize = ERASE_SIZE * SECTORS;

/// Bytes written at once when a range is erased (a buffer on the stack).
const FILL: usize = 256;
/// Bytes read back at once when a write is checked against what the file holds.
const COMPARE: usize = 64;

/// A board's file behind an [`EmulatedNor`]: byte I/O only, the NOR rules are not its concern.
pub trait Backing {
    /// Why the file could not be read or written (the board's own, typed).
    type Error: core::fmt::Debug;

    /// Bytes the file holds now (0 for a file just created).
    fn file_len(&mut self) -> Result<usize, Self::Error>;

    /// Fills `bytes` from the file, starting at byte `at` (always within what it holds).
    fn read_at(&mut self, at: usize, bytes: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes `bytes` into the file at byte `at`; the file grows when `at` is its end.
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Makes what was written so far durable; called once at the end of every erase or write
    /// (a flash operation is on the medium when it returns). Does nothing unless the board
    /// says otherwise.
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why an emulated flash operation failed: a broken rule, or the board's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NorError<E> {
    /// The file could not be read or written ([`Backing::Error`]).
    Backing(E),
    /// Offset or length not a multiple of the access's unit ([`WRITE_SIZE`] to write,
    /// [`ERASE_SIZE`] to erase).
    NotAligned,
    /// Beyond [`SIZE`], or an erase whose end is before its start.
    OutOfBounds,
    /// A write would turn a 0 bit into 1 (only an erase can).
    NotNor,
}

impl<E: core::fmt::Display> core::fmt::Display for NorError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NorError::Backing(e) => write!(f, "{e}"),
            NorError::NotAligned => f.write_str("unaligned access"),
            NorError::OutOfBounds => f.write_str("out of bounds"),
            NorError::NotNor => f.write_str("a write would set bits"),
        }
    }
}

impl<E: core::fmt::Debug> NorFlashError for NorError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            NorError::NotAligned => NorFlashErrorKind::NotAligned,
            NorError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            NorError::Backing(_) | NorError::NotNor => NorFlashErrorKind::Other,
        }
    }
}

/// NOR flash of [`SIZE`] bytes kept in a board's file (see the module docs).
#[derive(Debug)]
pub struct EmulatedNor<B> {
    backing: B,
}

impl<B: Backing> EmulatedNor<B> {
    /// NOR flash in `backing`: what the file holds is kept, and a file shorter than [`SIZE`]
    /// (a new one) is filled up with erased bytes.
    pub fn new(mut backing: B) -> Result<Self, B::Error> {
        let len = backing.file_len()?;
        if len < SIZE {
            fill_erased(&mut backing, len, SIZE)?;
            backing.sync()?;
        }
        Ok(EmulatedNor { backing })
    }
}

/// The byte offset of an access of `len` bytes at `offset` in units of `align` (1 to read,
/// [`WRITE_SIZE`] to write, [`ERASE_SIZE`] to erase), or the rule it breaks.
fn check_access<E>(offset: u32, len: usize, align: usize) -> Result<usize, NorError<E>> {
    let start = offset as usize;
    if start.checked_add(len).is_none_or(|end| end > SIZE) {
        return Err(NorError::OutOfBounds);
    }
    if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
        return Err(NorError::NotAligned);
    }
    Ok(start)
}

/// Refuses writing `new` over `old` when it would set a bit ([`NorError::NotNor`]).
fn check_write<E>(old: &[u8], new: &[u8]) -> Result<(), NorError<E>> {
    if old.iter().zip(new).any(|(o, n)| n & !o != 0) {
        return Err(NorError::NotNor);
    }
    Ok(())
}

/// Writes `0xFF` over bytes `from..to` of `backing`.
fn fill_erased<B: Backing>(backing: &mut B, from: usize, to: usize) -> Result<(), B::Error> {
    let erased = [0xFF_u8; FILL];
    let mut at = from;
    while at < to {
        let n = (to - at).min(FILL);
        backing.write_at(at, &erased[..n])?;
        at += n;
    }
    Ok(())
}

impl<B: Backing> ErrorType for EmulatedNor<B> {
    type Error = NorError<B::Error>;
}

impl<B: Backing> ReadNorFlash for EmulatedNor<B> {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = check_access(offset, bytes.len(), 1)?;
        self.backing.read_at(at, bytes).map_err(NorError::Backing)
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<B: Backing> NorFlash for EmulatedNor<B> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = to.checked_sub(from).ok_or(NorError::OutOfBounds)? as usize;
        let at = check_access(from, len, ERASE_SIZE)?;
        fill_erased(&mut self.backing, at, at + len).map_err(NorError::Backing)?;
        self.backing.sync().map_err(NorError::Backing)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = check_access(offset, bytes.len(), WRITE_SIZE)?;
        // Every word is checked against what is there before any is written, a chunk at a
        // time: a refused write changes nothing.
        let mut old = [0u8; COMPARE];
        for (i, chunk) in bytes.chunks(COMPARE).enumerate() {
            let old = &mut old[..chunk.len()];
            self.backing
                .read_at(start + i * COMPARE, old)
                .map_err(NorError::Backing)?;
            check_write(old, chunk)?;
        }
        self.backing
            .write_at(start, bytes)
            .map_err(NorError::Backing)?;
        self.backing.sync().map_err(NorError::Backing)
    }
}

#[cfg(test)]
mod tests;
