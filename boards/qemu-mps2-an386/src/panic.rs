//! Panics end the emulation with exit status 101 after logging the message, so a
//! test that boots the board sees a failure instead of a hung QEMU.
use core::panic::PanicInfo;

/// Exit status reported for a panic (the same as a panicking Rust host program).
pub const PANIC_EXIT_CODE: i32 = 101;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    crate::exit(PANIC_EXIT_CODE)
}
