//! `cargo xtask cross`: placeholder until the cross toolchain set-up lands (owned by the boards work).

/// Sets up the cross toolchain and builds the no_std crates for the MCU targets.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("cross builds are not set up yet".into())
}
