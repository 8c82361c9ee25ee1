//! Host tests of the NOR rules over an in-memory file: each rule of the module docs, and what
//! [`EmulatedNor`] does with the board's file.

use std::vec;
use std::vec::Vec;

use embassy_futures::block_on;

use super::*;

/// An in-memory file: bytes, how often it was made durable, and whether it refuses I/O.
#[derive(Debug, Default)]
struct RamFile {
    bytes: Vec<u8>,
    syncs: usize,
    broken: bool,
}

/// The only error of a [`RamFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Broken;

impl Backing for RamFile {
    type Error = Broken;

    fn file_len(&mut self) -> Result<usize, Broken> {
        Ok(self.bytes.len())
    }

    fn read_at(&mut self, at: usize, bytes: &mut [u8]) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken);
        }
        bytes.copy_from_slice(&self.bytes[at..at + bytes.len()]);
        Ok(())
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken);
        }
        if self.bytes.len() < at + bytes.len() {
            self.bytes.resize(at + bytes.len(), 0);
        }
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Broken> {
        self.syncs += 1;
        Ok(())
    }
}

/// Flash over a new (empty) file.
fn erased() -> EmulatedNor<RamFile> {
    EmulatedNor::new(RamFile::default()).unwrap()
}

fn read(flash: &mut EmulatedNor<RamFile>, offset: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    block_on(flash.read(offset, &mut bytes)).unwrap();
    bytes
}

#[test]
fn a_new_file_is_erased_flash_of_the_whole_size() {
    let flash = erased();
    assert_eq!(flash.backing.bytes, vec![0xFF; SIZE]);
    assert_eq!(flash.backing.syncs, 1, "the filled file is made durable");
    assert_eq!(flash.capacity(), SIZE);
}

#[test]
fn a_short_file_keeps_its_bytes_and_is_filled_up_erased() {
    let file = RamFile {
        bytes: vec![1, 2, 3],
        ..RamFile::default()
    };
    let mut flash = EmulatedNor::new(file).unwrap();
    assert_eq!(read(&mut flash, 0, 4), [1, 2, 3, 0xFF]);
    assert_eq!(read(&mut flash, (SIZE - 1) as u32, 1), [0xFF]);
    assert_eq!(flash.backing.bytes.len(), SIZE);
}

#[test]
fn a_full_file_is_taken_as_it_is() {
    let file = RamFile {
        bytes: vec![0; SIZE],
        ..RamFile::default()
    };
    let flash = EmulatedNor::new(file).unwrap();
    assert_eq!(flash.backing.bytes, vec![0; SIZE]);
    assert_eq!(flash.backing.syncs, 0, "nothing written");
}

#[test]
fn reads_are_byte_granular_within_the_area() {
    let mut flash = erased();
    block_on(flash.write(4, &[0x01, 0x02, 0x03, 0x04])).unwrap();
    assert_eq!(read(&mut flash, 5, 3), [0x02, 0x03, 0x04]);
    let mut past = [0u8; 2];
    assert_eq!(
        block_on(flash.read((SIZE - 1) as u32, &mut past)),
        Err(NorError::OutOfBounds)
    );
    assert_eq!(
        block_on(flash.read(u32::MAX, &mut past)),
        Err(NorError::OutOfBounds)
    );
}

#[test]
fn a_write_may_clear_bits_only_and_a_refused_one_changes_nothing() {
    let mut flash = erased();
    block_on(flash.write(0, &[0x0F, 0xFF, 0x00, 0xF0])).unwrap();
    block_on(flash.write(0, &[0x0E, 0x7F, 0x00, 0x10])).unwrap();
    assert_eq!(read(&mut flash, 0, 4), [0x0E, 0x7F, 0x00, 0x10]);
    assert_eq!(
        block_on(flash.write(0, &[0x0E, 0x7F, 0x00, 0x11])),
        Err(NorError::NotNor)
    );
    assert_eq!(read(&mut flash, 0, 4), [0x0E, 0x7F, 0x00, 0x10]);

    // A write longer than one compare chunk whose only offending bit is in its last word:
    // refused before any word of it is written.
    let len = COMPARE * 2 + WRITE_SIZE;
    let at = ERASE_SIZE;
    block_on(flash.write((at + len - WRITE_SIZE) as u32, &[0; WRITE_SIZE])).unwrap();
    let mut bytes = vec![0x00; len];
    bytes[len - 1] = 0x01;
    assert_eq!(
        block_on(flash.write(at as u32, &bytes)),
        Err(NorError::NotNor)
    );
    assert_eq!(
        read(&mut flash, at as u32, len - WRITE_SIZE),
        vec![0xFF; len - WRITE_SIZE]
    );
}

#[test]
fn writes_are_whole_words_within_the_area() {
    let mut flash = erased();
    let word = [0u8; WRITE_SIZE];
    assert_eq!(block_on(flash.write(2, &word)), Err(NorError::NotAligned));
    assert_eq!(
        block_on(flash.write(0, &word[..3])),
        Err(NorError::NotAligned)
    );
    assert_eq!(
        block_on(flash.write((SIZE - WRITE_SIZE) as u32, &[0; 2 * WRITE_SIZE])),
        Err(NorError::OutOfBounds)
    );
    assert_eq!(flash.backing.bytes, vec![0xFF; SIZE], "nothing written");
    block_on(flash.write((SIZE - WRITE_SIZE) as u32, &word)).unwrap();
}

#[test]
fn an_erase_sets_whole_sectors_and_only_those() {
    let mut flash = erased();
    for sector in 0..SECTORS {
        block_on(flash.write((sector * ERASE_SIZE) as u32, &[0; WRITE_SIZE])).unwrap();
        let last = (sector + 1) * ERASE_SIZE - WRITE_SIZE;
        block_on(flash.write(last as u32, &[0; WRITE_SIZE])).unwrap();
    }
    block_on(flash.erase(ERASE_SIZE as u32, (3 * ERASE_SIZE) as u32)).unwrap();
    assert_eq!(
        read(&mut flash, ERASE_SIZE as u32, 2 * ERASE_SIZE),
        vec![0xFF; 2 * ERASE_SIZE]
    );
    assert_eq!(
        read(&mut flash, (ERASE_SIZE - 4) as u32, 4),
        [0; 4],
        "sector before kept"
    );
    assert_eq!(
        read(&mut flash, (3 * ERASE_SIZE) as u32, 4),
        [0; 4],
        "sector after kept"
    );
    block_on(flash.write(ERASE_SIZE as u32, &[0x5A; WRITE_SIZE])).unwrap();
}

#[test]
fn erases_are_whole_sectors_within_the_area() {
    let mut flash = erased();
    let sector = ERASE_SIZE as u32;
    assert_eq!(block_on(flash.erase(4, sector)), Err(NorError::NotAligned));
    assert_eq!(
        block_on(flash.erase(0, sector + 4)),
        Err(NorError::NotAligned)
    );
    assert_eq!(
        block_on(flash.erase(sector, SIZE as u32 + sector)),
        Err(NorError::OutOfBounds)
    );
    assert_eq!(block_on(flash.erase(sector, 0)), Err(NorError::OutOfBounds));
    block_on(flash.erase(0, SIZE as u32)).unwrap();
}

#[test]
fn every_erase_and_write_is_made_durable_once() {
    let mut flash = erased();
    let before = flash.backing.syncs;
    block_on(flash.erase(0, ERASE_SIZE as u32)).unwrap();
    block_on(flash.write(0, &[0; 2 * COMPARE])).unwrap();
    assert_eq!(flash.backing.syncs, before + 2);
}

#[test]
fn the_files_errors_come_through_as_its_own() {
    let mut flash = erased();
    flash.backing.broken = true;
    let mut byte = [0u8; 1];
    assert_eq!(
        block_on(flash.read(0, &mut byte)),
        Err(NorError::Backing(Broken))
    );
    assert_eq!(
        block_on(flash.write(0, &[0; WRITE_SIZE])),
        Err(NorError::Backing(Broken))
    );
    assert_eq!(
        block_on(flash.erase(0, ERASE_SIZE as u32)),
        Err(NorError::Backing(Broken))
    );
}

#[test]
fn errors_tell_sequential_storage_their_kind() {
    assert_eq!(
        NorError::<Broken>::NotAligned.kind(),
        NorFlashErrorKind::NotAligned
    );
    assert_eq!(
        NorError::<Broken>::OutOfBounds.kind(),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(NorError::<Broken>::NotNor.kind(), NorFlashErrorKind::Other);
    assert_eq!(NorError::Backing(Broken).kind(), NorFlashErrorKind::Other);
}

#[test]
fn accesses_must_be_aligned_and_inside_the_area() {
    let check = check_access::<Broken>;
    assert_eq!(check(8, 4, WRITE_SIZE), Ok(8));
    assert_eq!(check(6, 4, WRITE_SIZE), Err(NorError::NotAligned));
    assert_eq!(check(8, 6, WRITE_SIZE), Err(NorError::NotAligned));
    assert_eq!(
        check((SIZE - 4) as u32, 8, WRITE_SIZE),
        Err(NorError::OutOfBounds)
    );
    assert_eq!(check(u32::MAX, 1, 1), Err(NorError::OutOfBounds));
    assert_eq!(check(0, SIZE, ERASE_SIZE), Ok(0));
}

#[test]
fn a_write_may_clear_bits_only() {
    let check = check_write::<Broken>;
    assert_eq!(check(&[0xFF, 0xF0], &[0x0F, 0x10]), Ok(()));
    assert_eq!(check(&[0xF0], &[0xF1]), Err(NorError::NotNor));
}
