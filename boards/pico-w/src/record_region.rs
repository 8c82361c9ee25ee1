//! Where this board's provisioning record lives: the last 4 KiB page of the Pico W's 2 MiB QSPI flash (`0x101F_F000`, through the RP2040's execute-in-place window); `memory.x` ends the program's flash before it.
//!
//! `probe-rs download --binary-format bin --base-address` writes a record there
//! (docs/flashing.md); the firmware reads it at boot with `plug_app::provisioning_from_record`.

/// Address of the provisioning record.
pub const RECORD_ADDR: usize = 0x101F_F000;
/// Bytes read from the region (a record is at most
/// `shared_protocol::provision::MAX_RECORD_LEN` long; the rest is erased flash).
pub const RECORD_REGION_LEN: usize = 0x400;

/// The record region's bytes (0xFF when nothing was ever written).
#[allow(unsafe_code)]
pub fn record_region() -> &'static [u8] {
    // SAFETY: the RP2040 maps the QSPI flash read-only at 0x1000_0000 (XIP) once the second-stage bootloader has run, before main; the region is outside every memory.x region, so the program never
    // writes it and no mutable borrow of these bytes exists while this shared one lives.
    unsafe { core::slice::from_raw_parts(RECORD_ADDR as *const u8, RECORD_REGION_LEN) }
}
