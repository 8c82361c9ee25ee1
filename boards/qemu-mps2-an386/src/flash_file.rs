//! An emulated NOR flash over a host file, through ARM semihosting, so what the `plug` binary
//! persists (`plug_app::persist`: boot counter, since_id) survives a QEMU restart.
//!
//! QEMU's mps2-an386 has no flash that outlives the process, but it runs semihosting calls
//! (`-semihosting-config enable=on,target=native`, as `run-qemu.sh` and the HIL harness
//! start it) against the host's file system: [`open`] gives a [`FileFlash`] that keeps
//! [`SIZE`] bytes in a host file (`SYS_OPEN`, `SYS_SEEK`, `SYS_READ`, `SYS_WRITE`, behind
//! [`HostFile`]) and behaves like NOR flash, so sequential-storage runs on it exactly as on
//! silicon. The rules (erase sets whole sectors to `0xFF`, a write of whole words may only
//! clear bits, reads are byte-granular) are `plug_app::emulated_nor`'s, shared with the host
//! board; this module is only the file.
//!
//! A missing or short file is created and filled with `0xFF` (an erased chip). Deleting the
//! file wipes the area.

use plug_app::emulated_nor::{Backing, EmulatedNor, NorError};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};

pub use plug_app::emulated_nor::{ERASE_SIZE, SECTORS, SIZE, WRITE_SIZE};
/// Longest path accepted (bytes, without the terminating NUL).
pub const PATH_MAX: usize = 255;

/// NOR flash emulated in a host file (see the module docs).
pub type FileFlash = EmulatedNor<HostFile>;

/// Why an emulated flash operation failed: a NOR rule, or the host file ([`FileError`]).
pub type FlashError = NorError<FileError>;

/// Why the host file could not be opened or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum FileError {
    /// The path is longer than [`PATH_MAX`] or holds a NUL byte.
    BadPath,
    /// The host refused to open, read, write or seek the file.
    Io,
}

/// The host file behind [`FileFlash`], reached through semihosting calls.
pub struct HostFile {
    file: File,
}

/// Opens (or creates, erased) the host file `path` as [`FileFlash`].
pub fn open(path: &str) -> Result<FileFlash, FileError> {
    let mut c_path = [0u8; PATH_MAX + 1];
    if path.len() > PATH_MAX || path.as_bytes().contains(&0) {
        return Err(FileError::BadPath);
    }
    c_path[..path.len()].copy_from_slice(path.as_bytes());
    let c_path = core::ffi::CStr::from_bytes_until_nul(&c_path[..=path.len()])
        .map_err(|_| FileError::BadPath)?;
    let file = match File::options().read(true).write(true).open(c_path) {
        Ok(file) => file,
        Err(_) => File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(c_path)
            .map_err(|_| FileError::Io)?,
    };
    EmulatedNor::new(HostFile { file })
}

impl HostFile {
    fn seek(&mut self, at: usize) -> Result<(), FileError> {
        self.file
            .seek(SeekFrom::Start(at as u64))
            .map(|_| ())
            .map_err(|_| FileError::Io)
    }
}

impl Backing for HostFile {
    type Error = FileError;

    fn file_len(&mut self) -> Result<usize, FileError> {
        Ok(self.file.metadata().map_err(|_| FileError::Io)?.len() as usize)
    }

    fn read_at(&mut self, at: usize, bytes: &mut [u8]) -> Result<(), FileError> {
        self.seek(at)?;
        self.file.read_exact(bytes).map_err(|_| FileError::Io)
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> Result<(), FileError> {
        self.seek(at)?;
        self.file.write_all(bytes).map_err(|_| FileError::Io)
    }
}
