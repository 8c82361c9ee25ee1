//! Where this board's provisioning record lives: flash sector 23 (128 KiB at `0x081E_0000`), the last sector of the STM32F429ZI's 2 MiB; `memory.x` ends the program's flash before it, so the image never overlaps it and reflashing the image leaves it alone.
//!
//! `probe-rs download --binary-format bin --base-address` writes a record there
//! (docs/flashing.md); the firmware reads it at boot with `plug_app::provisioning_from_record`.

/// Address of the provisioning record.
pub const RECORD_ADDR: usize = 0x081E_0000;
/// Bytes read from the region (a record is at most
/// `shared_protocol::provision::MAX_RECORD_LEN` long; the rest is erased flash).
pub const RECORD_REGION_LEN: usize = 0x400;

/// The record region's bytes (0xFF when nothing was ever written).
#[allow(unsafe_code)]
pub fn record_region() -> &'static [u8] {
    // SAFETY: the STM32's flash is memory-mapped and readable at this address; the region is outside every memory.x region, so the program never
    // writes it and no mutable borrow of these bytes exists while this shared one lives.
    unsafe { core::slice::from_raw_parts(RECORD_ADDR as *const u8, RECORD_REGION_LEN) }
}
