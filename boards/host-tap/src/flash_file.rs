//! The host board's persistent area: NOR flash emulated in a plain file (`PLUG_FLASH`), so
//! `plug_app::persist` runs here as on a microcontroller. The NOR rules (erase sets `0xFF`, a
//! write may only clear bits) are `plug_app::emulated_nor`'s; this module is only the file
//! behind them ([`HostFile`]). A missing or short file is created erased; deleting it wipes
//! the area.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use plug_app::emulated_nor::SIZE;
use plug_app::emulated_nor::{Backing, EmulatedNor};

/// NOR flash in a host file; its errors are `plug_app::emulated_nor::NorError<io::Error>`.
pub type FileFlash = EmulatedNor<HostFile>;

/// The file behind [`FileFlash`].
#[derive(Debug)]
pub struct HostFile(File);

/// Opens (or creates, erased) `path` as [`FileFlash`].
pub fn open(path: &Path) -> Result<FileFlash, io::Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    EmulatedNor::new(HostFile(file))
}

impl Backing for HostFile {
    type Error = io::Error;

    fn file_len(&mut self) -> Result<usize, io::Error> {
        Ok(self.0.metadata()?.len() as usize)
    }

    fn read_at(&mut self, at: usize, bytes: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(bytes, at as u64)
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(bytes, at as u64)
    }

    /// What a flash write means: on the medium when it returns (a killed process keeps it).
    fn sync(&mut self) -> Result<(), io::Error> {
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_futures::block_on;
    use embedded_storage_async::nor_flash::{NorFlash, ReadNorFlash};
    use plug_app::emulated_nor::{ERASE_SIZE, NorError};

    #[test]
    fn nor_rules_hold_and_the_file_keeps_what_was_written() {
        let path = std::env::temp_dir().join(format!("host-tap-flash-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);
        let mut buf = [0u8; 4];
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0xFF; 4], "a new file is erased flash");
        block_on(f.write(0, &[0x0F, 0xFF, 0x00, 0xFF])).unwrap();
        assert!(matches!(
            block_on(f.write(0, &[0xFF, 0xFF, 0x00, 0xFF])),
            Err(NorError::NotNor)
        ));
        assert!(matches!(
            block_on(f.write(2, &[0; 4])),
            Err(NorError::NotAligned)
        ));
        drop(f);
        let mut f = open(&path).unwrap();
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0x0F, 0xFF, 0x00, 0xFF]);
        block_on(f.erase(0, ERASE_SIZE as u32)).unwrap();
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0xFF; 4]);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_cut_short_keeps_its_bytes_and_is_filled_up_erased() {
        let path = std::env::temp_dir().join(format!("host-tap-short-{}", std::process::id()));
        std::fs::write(&path, [0x12, 0x34]).unwrap();
        let mut f = open(&path).unwrap();
        let mut buf = [0u8; 4];
        block_on(f.read(0, &mut buf)).unwrap();
        assert_eq!(buf, [0x12, 0x34, 0xFF, 0xFF]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_the_hosts_error() {
        let path = std::env::temp_dir().join("no-such-folder-host-tap/flash");
        assert_eq!(open(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
