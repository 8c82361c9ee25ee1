//! Panics end the emulation with exit status 101 after logging where they happened, so a
//! test that boots the board sees a failure instead of a hung QEMU.
//!
//! The board's `.cargo/config.toml` builds with `-Cpanic=immediate-abort`: a panic then never
//! reaches this handler but executes an undefined instruction, and the HardFault handler
//! (`vectors`) logs the address and exits 101. This handler runs in builds without that flag
//! (a debug session that wants messages).
//!
//! The panic's message is logged only with the `panic-messages` feature (debug builds):
//! formatting it links `core::fmt` and every `Display` impl a panic site can name, several
//! KiB of flash a field image does not need. Without it the log names the file and line,
//! which the release image keeps anyway.
use core::panic::PanicInfo;

/// Exit status reported for a panic (the same as a panicking Rust host program).
pub const PANIC_EXIT_CODE: i32 = 101;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    #[cfg(feature = "panic-messages")]
    defmt::error!("panic: {}", defmt::Display2Format(info));
    #[cfg(not(feature = "panic-messages"))]
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
    crate::exit(PANIC_EXIT_CODE)
}
