//! The crates that sit outside the host workspace, found on disk, so every step that must cover
//! them (fmt, clippy, tests, cross builds) works from one list and a new board is picked up
//! without editing xtask.
//!
//! * MCU boards: `boards/<board>/` whose `.cargo/config.toml` names a build target. They are
//!   cross-built and cross-linted (`cargo xtask cross`).
//! * Host-built crates: `boards/<board>/` and `boards/lib/<crate>/` without such a target
//!   (`boards/host-tap`, `boards/lib/plug-app`). Host toolchain: clippy and tests
//!   (`cargo xtask test`, steps `clippy` and `boards`).
//! * The fuzz crates `shared-protocol/fuzz`, `broker/fuzz` and `firmware/fuzz` (nightly,
//!   libFuzzer): fmt here, run in the `fuzz` step and by `cargo xtask fuzz` ([`fuzz_crates`]).
//! * Tool crates kept out of the workspace for their dependencies' features (`hil-tests/defmt-log`:
//!   `defmt-decoder` turns on serde_json's `arbitrary_precision`, which would change JSON number
//!   parsing for the broker): fmt here, clippy and tests in `cargo xtask test` (steps `clippy`
//!   and `boards`, [`tool_crates`]), built by the steps that run them (`cargo xtask hil`, the
//!   QEMU tests).
//!
//! Why they are not workspace members is written in the root `Cargo.toml` and docs/boards.md.

use crate::shell::project_root;
use std::path::{Path, PathBuf};

/// The fuzz crates, relative to the project root.
const FUZZ_CRATES: [&str; 3] = ["shared-protocol/fuzz", "broker/fuzz", "firmware/fuzz"];

/// Tool crates outside the workspace, relative to the project root (see module docs).
const TOOL_CRATES: [&str; 1] = ["hil-tests/defmt-log"];

/// Every crate outside the host workspace: MCU boards, host-built crates, the fuzz crates, the
/// tool crates.
pub fn outside_workspace() -> Result<Vec<PathBuf>, String> {
    let mut crates = board_folders()?;
    crates.extend(fuzz_crates());
    crates.extend(
        TOOL_CRATES
            .iter()
            .map(|c| project_root().join(c))
            .filter(|dir| dir.join("Cargo.toml").is_file()),
    );
    Ok(crates)
}

/// The tool crates present on disk (see module docs), each with the target folder its builds
/// use: `<target>/<crate folder name>` (`target/defmt-log`, where `cargo xtask hil` and the QEMU
/// board's runner build the decoder), so its lint and test runs reuse those builds.
pub fn tool_crates() -> Vec<(PathBuf, PathBuf)> {
    let target = crate::shell::target_dir();
    TOOL_CRATES
        .iter()
        .map(|c| project_root().join(c))
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .filter_map(|dir| {
            let name = dir.file_name()?.to_owned();
            Some((dir.clone(), target.join(name)))
        })
        .collect()
}

/// The fuzz crates present on disk (each a cargo-fuzz project `<crate>/fuzz`).
pub fn fuzz_crates() -> Vec<PathBuf> {
    FUZZ_CRATES
        .iter()
        .map(|c| project_root().join(c))
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .collect()
}

/// MCU board crates: a folder under `boards/` whose `.cargo/config.toml` names a target.
pub fn mcu_boards() -> Result<Vec<PathBuf>, String> {
    Ok(board_folders()?
        .into_iter()
        .filter(|dir| has_cross_target(dir))
        .collect())
}

/// Host-built crates under `boards/` (boards and shared board libraries without a target of
/// their own): built, linted and tested with the host toolchain.
pub fn host_built() -> Result<Vec<PathBuf>, String> {
    Ok(board_folders()?
        .into_iter()
        .filter(|dir| !has_cross_target(dir))
        .collect())
}

/// `boards/*/` and `boards/lib/*/` folders holding a `Cargo.toml`, sorted.
fn board_folders() -> Result<Vec<PathBuf>, String> {
    let boards = project_root().join("boards");
    let mut dirs = crate_folders(&boards)?;
    let lib = boards.join("lib");
    if lib.is_dir() {
        dirs.extend(crate_folders(&lib)?);
    }
    dirs.sort();
    Ok(dirs)
}

/// Direct subfolders of `parent` that hold a `Cargo.toml`.
fn crate_folders(parent: &Path) -> Result<Vec<PathBuf>, String> {
    Ok(std::fs::read_dir(parent)
        .map_err(|e| format!("cannot list {}: {e}", parent.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect())
}

/// True when the crate's `.cargo/config.toml` sets a build target (an MCU board).
fn has_cross_target(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(".cargo/config.toml"))
        .is_ok_and(|config| config.lines().any(|l| l.trim_start().starts_with("target")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dirs: &[PathBuf]) -> Vec<String> {
        dirs.iter()
            .map(|d| {
                d.strip_prefix(project_root())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_qemu_board_is_an_mcu_board_and_host_tap_is_host_built() {
        let mcu = names(&mcu_boards().unwrap());
        let host = names(&host_built().unwrap());
        assert!(
            mcu.contains(&"boards/qemu-mps2-an386".to_owned()),
            "{mcu:?}"
        );
        assert!(!mcu.contains(&"boards/host-tap".to_owned()), "{mcu:?}");
        assert!(host.contains(&"boards/host-tap".to_owned()), "{host:?}");
        assert!(host.contains(&"boards/lib/plug-app".to_owned()), "{host:?}");
    }

    #[test]
    fn every_crate_outside_the_workspace_is_listed_once() {
        let all = names(&outside_workspace().unwrap());
        for listed in FUZZ_CRATES.iter().chain(&TOOL_CRATES) {
            assert!(all.contains(&(*listed).to_owned()), "{all:?}");
        }
        let mcu = mcu_boards().unwrap().len();
        let host = host_built().unwrap().len();
        let expected = mcu + host + FUZZ_CRATES.len() + TOOL_CRATES.len();
        assert_eq!(all.len(), expected, "{all:?}");
    }
}
