//! `hil-tests run --rig nucleo-f429zi --dry-run` prints the real board's probe-rs commands
//! (build, record, flash and run) for each boot and needs no probe, root or broker; a virtual
//! rig is refused with exit status 2.

use std::process::Command;

fn hil_tests(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hil-tests"))
        .args(args)
        .env_remove("HIL_TARGET_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("hil-tests runs")
}

#[test]
fn the_nucleo_dry_run_prints_each_boots_probe_rs_commands() {
    let out = hil_tests(&["run", "--rig", "nucleo-f429zi", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    for (boot, transport) in [(&lines[..4], "udp"), (&lines[4..], "ws")] {
        assert!(
            boot[0].starts_with(&format!("# boot nucleo-f429zi-{transport}:")),
            "{text}"
        );
        assert!(
            boot[1].starts_with("(cd /")
                && boot[1].contains(
                    "/boards/nucleo-f429zi && cargo build --release --bin plug --target-dir /"
                )
                && boot[1].ends_with("/target/cross)"),
            "{}",
            boot[1]
        );
        let download =
            "probe-rs download --chip STM32F429ZITx --binary-format bin --base-address 0x81e0000 /";
        assert!(boot[2].starts_with(download), "{}", boot[2]);
        assert!(
            boot[2].ends_with(&format!("/logs/nucleo-f429zi-{transport}.record.bin")),
            "{}",
            boot[2]
        );
        assert!(
            boot[3].starts_with("probe-rs run --chip STM32F429ZITx /")
                && boot[3].ends_with("/target/cross/thumbv7em-none-eabihf/release/plug"),
            "{}",
            boot[3]
        );
    }
    // Nothing was run: no run directory is reported on stderr.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("run directory"));
}

#[test]
fn a_dry_run_of_a_virtual_rig_is_refused() {
    let out = hil_tests(&["run", "--rig", "qemu", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("real-board rigs"));
}
