//! Where this board's provisioning record and boot number live: QEMU's block RAM.
//!
//! `memory.x` gives the program the code SSRAM at `0x0000_0000` and SSRAM2/3 at `0x2000_0000`;
//! QEMU's mps2-an386 also maps 16 KiB of block RAM at `0x0100_0000` that nothing in the image
//! uses. Before reset, QEMU's generic loader writes there:
//!
//! - the record file at [`RECORD_ADDR`]: `-device loader,file=record.bin,addr=0x01000000,force-raw=on`;
//! - the boot number at [`BOOT_WORD_ADDR`], the record region's companion word:
//!   `-device loader,addr=0x01000400,data=<(boot << 32) | 0x544F4250>,data-len=8`.
//!
//! Nothing on this machine persists across boots (no flash, no pflash drive), so unless it is
//! given an emulated flash file (`PLUG_FLASH`, [`crate::flash_file`]: then the `plug` binary
//! counts its own boots there, at least this number when one is given), whoever starts QEMU
//! passes a boot number that grows by one per boot (the HIL harness does, `run-qemu.sh` takes
//! `PLUG_BOOT`). With neither the board does not log in, because its nonces could repeat
//! those of an earlier boot.

/// Address of the provisioning record (block RAM, outside every `memory.x` region).
pub const RECORD_ADDR: usize = 0x0100_0000;
/// Bytes of the record region (the record is at most
/// [`shared_protocol::provision::MAX_RECORD_LEN`] long).
pub const RECORD_REGION_LEN: usize = 0x400;
/// Address of the companion word: [`BOOT_MAGIC`] then the boot number (little-endian u32s).
pub const BOOT_WORD_ADDR: usize = RECORD_ADDR + RECORD_REGION_LEN;
/// Marks a boot number written by the loader (`"PBOT"`), so zeroed RAM is not taken as boot 0.
pub const BOOT_MAGIC: u32 = u32::from_le_bytes(*b"PBOT");

/// The record region's bytes as the loader left them (zeros when nothing was loaded).
#[allow(unsafe_code)]
pub fn record_region() -> &'static [u8] {
    // SAFETY: QEMU maps block RAM at RECORD_ADDR..+16 KiB (readable, aligned, never moved);
    // no section of memory.x lies there, so nothing in the program writes it: a shared
    // 'static borrow of these bytes is never aliased by a mutable one.
    unsafe { core::slice::from_raw_parts(RECORD_ADDR as *const u8, RECORD_REGION_LEN) }
}

/// The boot number from the companion word, if the loader wrote one.
#[allow(unsafe_code)]
pub fn boot_number() -> Option<u32> {
    // SAFETY: as in `record_region`: mapped, 4-byte aligned, never written by the program.
    let words = unsafe { core::slice::from_raw_parts(BOOT_WORD_ADDR as *const u32, 2) };
    (words[0] == BOOT_MAGIC).then_some(words[1])
}
