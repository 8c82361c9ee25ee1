//! `hil-tests run --rig R --dry-run`: what a real-board (probe-rs) rig's run would execute,
//! without a probe, a broker or a build. For each boot of the `basic` scenario (one per
//! transport, and one per transport through the lookup when the rig asks for it) it lists the
//! commands [`crate::device`] runs, in order, from the same [`ProbeRsPlan`]: the image's build,
//! `probe-rs download` of that boot's provisioning record into the record region, and
//! `probe-rs run` (flash, reset, defmt over RTT). The record files are named as a run names
//! them under `logs` (a run writes them there, with the broker's ports of that run).

use std::path::Path;

use crate::device::ProbeRsPlan;
use crate::rig::{Kind, Rig, target_dir};

/// The lines `--dry-run` prints for `rig`: a `# boot ...` heading per boot, then its commands.
/// Refused for rigs that are not real boards.
pub fn plan(rig: &Rig, root: &Path, logs: &Path) -> Result<Vec<String>, String> {
    let p = match (rig.kind, &rig.probe_rs) {
        (Kind::ProbeRs, Some(p)) => p,
        _ => {
            return Err(format!(
                "--dry-run lists the probe-rs commands of real-board rigs; rig {} is {:?} (virtual)",
                rig.name, rig.kind
            ));
        }
    };
    let target = target_dir(root);
    let suffixes: &[&str] = if rig.lookup { &["", "-lookup"] } else { &[""] };
    let mut lines = Vec::new();
    for suffix in suffixes {
        for transport in &rig.transports {
            let name = format!("{}-{}{suffix}", rig.name, transport.as_str());
            let record = logs.join(format!("{name}.record.bin"));
            let plan = ProbeRsPlan::new(p, root, &target, &record).map_err(|e| e.to_string())?;
            lines.push(format!(
                "# boot {name}: build, write its provisioning record, flash and run (defmt over RTT)"
            ));
            lines.extend(plan.steps().iter().map(|step| step.to_string()));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_nucleo_rig_flashes_writes_its_record_and_runs_with_probe_rs() {
        let root = root();
        let rig = Rig::load(&root.join("hil-tests/rigs"), "nucleo-f429zi").unwrap();
        let logs = Path::new("/runs/1-nucleo-f429zi/logs");
        let lines = plan(&rig, Path::new("/src"), logs).unwrap();
        let target = target_dir(Path::new("/src")).display().to_string();
        let udp = [
            "# boot nucleo-f429zi-udp: build, write its provisioning record, flash and run (defmt over RTT)".to_string(),
            format!(
                "(cd /src/boards/nucleo-f429zi && cargo build --release --bin plug --target-dir {target}/cross)"
            ),
            "probe-rs download --chip STM32F429ZITx --binary-format bin --base-address 0x81e0000 /runs/1-nucleo-f429zi/logs/nucleo-f429zi-udp.record.bin".to_string(),
            format!("probe-rs run --chip STM32F429ZITx {target}/cross/thumbv7em-none-eabihf/release/plug"),
        ];
        assert_eq!(lines[..4], udp);
        // The WebSocket boot: the same commands with its own record file.
        assert_eq!(lines.len(), 8);
        assert!(
            lines[6].ends_with("logs/nucleo-f429zi-ws.record.bin"),
            "{}",
            lines[6]
        );
        assert_eq!(lines[7], udp[3]);
    }

    #[test]
    fn virtual_rigs_are_refused() {
        let rig = Rig::load(&root().join("hil-tests/rigs"), "qemu").unwrap();
        let e = plan(&rig, &root(), Path::new("/logs")).unwrap_err();
        assert!(e.contains("rig qemu is Qemu (virtual)"), "{e}");
    }
}
