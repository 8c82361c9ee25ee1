//! The host board's persistent area: NOR flash emulated in a plain file (`PLUG_FLASH`), so
//! `plug_app::persist` runs here as on a microcontroller (erase sets `0xFF`, a write may only
//! clear bits, else [`FlashError::NotNor`]). A missing or short file is created erased;
//! deleting it wipes the area.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

pub use plug_app::emulated_nor::{ERASE_SIZE, SIZE, WRITE_SIZE};
use plug_app::emulated_nor::{RuleBroken, check_access, check_write};

/// Why an emulated flash operation failed.
#[derive(Debug)]
pub enum FlashError {
    /// The file could not be opened, read or written.
    Io(std::io::Error),
    /// Offset or length not a multiple of the write or erase size.
    NotAligned,
    /// Beyond [`SIZE`].
    OutOfBounds,
    /// A write would turn a 0 bit into 1 (only an erase can).
    NotNor,
}

impl std::fmt::Display for FlashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlashError::Io(e) => write!(f, "{e}"),
            FlashError::NotAligned => f.write_str("unaligned access"),
            FlashError::OutOfBounds => f.write_str("out of bounds"),
            FlashError::NotNor => f.write_str("a write would set bits"),
        }
    }
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

/// NOR flash in a host file (see the module docs).
pub struct FileFlash {
    file: File,
}

impl FileFlash {
    /// Opens (or creates, erased) `path`.
    pub fn open(path: &Path) -> Result<Self, FlashError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(FlashError::Io)?;
        let len = file.metadata().map_err(FlashError::Io)?.len() as usize;
        if len < SIZE {
            file.seek(SeekFrom::Start(len as u64))
                .map_err(FlashError::Io)?;
            file.write_all(&vec![0xFF; SIZE - len])
                .map_err(FlashError::Io)?;
        }
        Ok(FileFlash { file })
    }

    /// The file offset of a rule-abiding access ([`check_access`]).
    fn check(offset: u32, len: usize, align: usize) -> Result<u64, FlashError> {
        Ok(check_access(offset, len, align)? as u64)
    }

    fn read_at(&mut self, at: u64, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(FlashError::Io)?;
        self.file.read_exact(bytes).map_err(FlashError::Io)
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> Result<(), FlashError> {
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(FlashError::Io)?;
        self.file.write_all(bytes).map_err(FlashError::Io)?;
        // What a flash write means: on the medium when it returns (a killed process keeps it).
        self.file.sync_data().map_err(FlashError::Io)
    }
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = Self::check(offset, bytes.len(), 1)?;
        self.read_at(at, bytes)
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
        let at = Self::check(from, (to - from) as usize, ERASE_SIZE)?;
        self.write_at(at, &vec![0xFF; (to - from) as usize])
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = Self::check(offset, bytes.len(), WRITE_SIZE)?;
        let mut old = vec![0; bytes.len()];
        self.read_at(at, &mut old)?;
        check_write(&old, bytes)?;
        self.write_at(at, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_futures::block_on;

    #[test]
    fn nor_rules_hold_and_the_file_keeps_what_was_written() {
        let path = std::env::temp_dir().join(format!("host-tap-flash-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = FileFlash::open(&path).unwrap();
        let mut buf = [0u8; 4];
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0xFF; 4], "a new file is erased flash");
        block_on(f.write(0, &[0x0F, 0xFF, 0x00, 0xFF])).unwrap();
        assert!(matches!(
            block_on(f.write(0, &[0xFF, 0xFF, 0x00, 0xFF])),
            Err(FlashError::NotNor)
        ));
        assert!(matches!(
            block_on(f.write(2, &[0; 4])),
            Err(FlashError::NotAligned)
        ));
        drop(f);
        let mut f = FileFlash::open(&path).unwrap();
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0x0F, 0xFF, 0x00, 0xFF]);
        block_on(f.erase(0, ERASE_SIZE as u32)).unwrap();
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0xFF; 4]);
        let _ = std::fs::remove_file(&path);
    }
}
