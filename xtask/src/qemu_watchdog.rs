//! `cargo xtask qemu-watchdog`: the QEMU board's watchdog catches a hung task and the next
//! boot knows why it started.
//!
//! Builds `boards/qemu-mps2-an386`'s `watchdog-probe` and boots it under QEMU with no network.
//! The probe (see its module docs) feeds the board's CMSDK watchdog while a worker task makes
//! progress, then hangs the worker; the watchdog resets the board (QEMU reboots it in the same
//! process), and the second boot checks that its reset reason is `watchdog`, that the first
//! boot had reached the hang, and that it draws another upload epoch than the first boot did
//! (the loader writes the same boot number again on the reset; the board's reset count must
//! make the difference). Exit status 0 passes; anything else, or no exit within [`TIMEOUT`],
//! fails.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cross::{CrossEnv, QEMU_BOARD, cross_target_dir, placeholder_env, print_log, run_qemu};
use crate::shell::{project_root, run_command};

/// The probe binary.
const PROBE_BIN: &str = "watchdog-probe";
/// The board's target, for the ELF path.
const TARGET: &str = "thumbv7em-none-eabihf";
/// Longest the two boots may take together.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cargo xtask qemu-watchdog` (no arguments).
pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("qemu-watchdog takes no arguments".into());
    }
    let env = CrossEnv::setup()?;
    let board = project_root().join("boards").join(QEMU_BOARD);
    let target_dir = cross_target_dir();
    let mut build = env.cargo(&board, &target_dir);
    build.args(["build", "--release", "--locked", "--bin", PROBE_BIN]);
    placeholder_env(&mut build);
    run_command(&mut build)?;
    let elf = target_dir.join(TARGET).join("release").join(PROBE_BIN);
    // The runner decodes the board's log with it; built now, not inside the boot's timeout.
    crate::cross::build_defmt_log()?;

    let runner = board.join("run-qemu.sh");
    eprintln!("$ QEMU_NIC=none {} {}", runner.display(), elf.display());
    let started = Instant::now();
    let (status, log) = run_qemu(
        Command::new(&runner)
            .arg(&elf)
            .env("QEMU_NIC", "none")
            .current_dir(&board),
        started,
        TIMEOUT,
    );
    print_log(&log);
    let status = status?;
    eprintln!(
        "qemu-watchdog: both boots in {:.2} s",
        started.elapsed().as_secs_f32()
    );
    match status.code() {
        Some(0) => {
            eprintln!(
                "qemu-watchdog: pass (hang caught, reset reason `watchdog`, new upload epoch after the reset)"
            );
            Ok(())
        }
        Some(1) => Err("the watchdog reset the board while it was fed".into()),
        Some(2) => Err("the watchdog did not start".into()),
        Some(3) => Err("the worker hung but the watchdog did not reset the board".into()),
        Some(4) => Err(
            "the boot after the watchdog reset drew the same upload epoch as the boot before it"
                .into(),
        ),
        other => Err(format!("watchdog-probe ended with {other:?}")),
    }
}
