//! An emulated NOR flash over a host file, through ARM semihosting, so what the `plug` binary
//! persists (`plug_app::persist`: boot counter, since_id) survives a QEMU restart.
//!
//! QEMU's mps2-an386 has no flash that outlives the process, but it runs semihosting calls
//! (`-semihosting-config enable=on,target=native`, as `run-qemu.sh` and the HIL harness
//! start it) against the host's file system: [`FileFlash`] keeps [`SIZE`] bytes in a host
//! file (`SYS_OPEN`, `SYS_SEEK`, `SYS_READ`, `SYS_WRITE`) and behaves like NOR flash, so
//! sequential-storage runs on it exactly as on silicon:
//! - an erase sets whole [`ERASE_SIZE`] sectors to `0xFF`;
//! - a write of whole [`WRITE_SIZE`] words may only clear bits: one that would set a bit is
//!   refused with [`FlashError::NotNor`] (real NOR would silently store the AND);
//! - reads are byte-granular.
//!
//! A missing or short file is created and filled with `0xFF` (an erased chip). Deleting the
//! file wipes the area.

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};

// Sectors of 4 KiB like the RP2040's QSPI flash, 32-bit program words like the STM32F4's
// internal flash at 2.7-3.6 V.
pub use plug_app::emulated_nor::{ERASE_SIZE, SECTORS, SIZE, WRITE_SIZE};
use plug_app::emulated_nor::{RuleBroken, check_access, check_write};
/// Longest path accepted (bytes, without the terminating NUL).
pub const PATH_MAX: usize = 255;

/// Why an emulated flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum FlashError {
    /// The path is longer than [`PATH_MAX`] or holds a NUL byte.
    BadPath,
    /// The host refused to open, read, write or seek the file.
    Io,
    /// Offset or length not a multiple of the write or erase size.
    NotAligned,
    /// Beyond [`SIZE`].
    OutOfBounds,
    /// A write would turn a 0 bit into 1 (only an erase can).
    NotNor,
}

impl From<RuleBroken> for FlashError {
    fn from(broken: RuleBroken) -> Self {
        match broken {
            RuleBroken::NotAligned => FlashError::NotAligned,
            RuleBroken::OutOfBounds => FlashError::OutOfBounds,
            RuleBroken::SetsBits => FlashError::NotNor,
        }
    }
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// NOR flash emulated in a host file (see the module docs).
pub struct FileFlash {
    file: File,
}

impl FileFlash {
    /// Opens (or creates, erased) the host file `path`.
    pub fn open(path: &str) -> Result<Self, FlashError> {
        let mut c_path = [0u8; PATH_MAX + 1];
        if path.len() > PATH_MAX || path.as_bytes().contains(&0) {
            return Err(FlashError::BadPath);
        }
        c_path[..path.len()].copy_from_slice(path.as_bytes());
        let c_path = core::ffi::CStr::from_bytes_until_nul(&c_path[..=path.len()])
            .map_err(|_| FlashError::BadPath)?;
        let existing = File::options().read(true).write(true).open(c_path);
        let mut flash = match existing {
            Ok(file) => FileFlash { file },
            Err(_) => FileFlash {
                file: File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(c_path)
                    .map_err(|_| FlashError::Io)?,
            },
        };
        let len = flash.file.metadata().map_err(|_| FlashError::Io)?.len() as usize;
        if len < SIZE {
            // A new (or cut short) file: the missing sectors are erased flash.
            let erased = [0xFFu8; 256];
            flash.seek(len)?;
            let mut at = len;
            while at < SIZE {
                let n = (SIZE - at).min(erased.len());
                flash
                    .file
                    .write_all(&erased[..n])
                    .map_err(|_| FlashError::Io)?;
                at += n;
            }
        }
        Ok(flash)
    }

    fn seek(&mut self, offset: usize) -> Result<(), FlashError> {
        self.file
            .seek(SeekFrom::Start(offset as u64))
            .map(|_| ())
            .map_err(|_| FlashError::Io)
    }

    /// The file offset of a rule-abiding access ([`check_access`]).
    fn check(offset: u32, len: usize, align: usize) -> Result<usize, FlashError> {
        Ok(check_access(offset, len, align)?)
    }
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let offset = Self::check(offset, bytes.len(), 1)?;
        self.seek(offset)?;
        self.file.read_exact(bytes).map_err(|_| FlashError::Io)
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if to < from {
            return Err(FlashError::OutOfBounds);
        }
        let from = Self::check(from, (to - from) as usize, ERASE_SIZE)?;
        self.seek(from)?;
        let erased = [0xFFu8; 256];
        for _ in 0..(to as usize - from) / erased.len() {
            self.file.write_all(&erased).map_err(|_| FlashError::Io)?;
        }
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = Self::check(offset, bytes.len(), WRITE_SIZE)?;
        // NOR semantics: compare with what is there, a chunk at a time.
        let mut old = [0u8; 64];
        for (i, chunk) in bytes.chunks(old.len()).enumerate() {
            let at = start + i * old.len();
            let old = &mut old[..chunk.len()];
            self.seek(at)?;
            self.file.read_exact(old).map_err(|_| FlashError::Io)?;
            check_write(old, chunk)?;
        }
        self.seek(start)?;
        self.file.write_all(bytes).map_err(|_| FlashError::Io)
    }
}
