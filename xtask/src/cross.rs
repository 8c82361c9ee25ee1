//! `cargo xtask cross`: the pinned cross toolchain, no_std builds for MCU targets, board
//! crates, and the QEMU smoke test.
//!
//! How the pieces fit:
//! * `scripts/cross-toolchain.sh` extracts Debian's rustc 1.96 and its library source into
//!   `.cache/cross-toolchain/<version>/` (idempotent) and prints the environment cargo needs.
//!   rustup's toolchains here lack MCU standard libraries, so every MCU build uses
//!   `-Zbuild-std` with that compiler.
//! * [`CrossEnv`] holds that environment; [`CrossEnv::cargo`] gives a `cargo` command with it
//!   applied in any directory (board crates use it).
//! * `build` builds the no_std workspace crates (`shared-protocol`, `firmware`) for the MCU
//!   targets in [`TARGETS`] no board crate builds them for, with the feature sets of
//!   [`NO_STD_BUILDS`].
//! * `boards` builds every crate under `boards/` (each has its own `.cargo/config.toml`) into
//!   the one shared cross target folder, with placeholder build settings ([`placeholder_env`]);
//!   `clippy` lints each of them (warnings denied) for the target its config names: a board
//!   crate only builds for its own chip.
//! * `qemu-smoke` boots `boards/qemu-mps2-an386`'s `udp-probe` under QEMU against a UDP echo
//!   on 127.0.0.1 and checks the round trip and exit status 0; `all` then runs the board's
//!   other QEMU tests, [`crate::qemu_watchdog`] and [`crate::qemu_clock`].

use crate::shell::{cargo, has_program, project_root, run_command, timed};
use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo xtask cross [command]

commands (default: all):
  all          setup, build, boards, clippy, size, then qemu-smoke, qemu-watchdog and
               qemu-clock when qemu-system-arm is installed
  setup        set up the pinned cross toolchain (.cache/cross-toolchain/)
  env          print the cross environment as shell `export` lines (eval it to use cargo by hand)
  build        check the no_std crates (shared-protocol, firmware) for the MCU targets no board builds for
  boards       build every board crate under boards/ (release)
  clippy       clippy, warnings denied, on every MCU board crate (for its own target)
  qemu-smoke   boot the QEMU board against a UDP echo on 127.0.0.1 (exit status 0 = pass)
";

/// MCU targets the no_std crates must build for: Cortex-M4F/M7 (the QEMU board and most
/// plugs), Cortex-M0/M0+ (no atomic compare-and-swap), and RISC-V without atomics (ESP32-C3
/// class; `imc` has no `a` extension).
pub const TARGETS: &[&str] = &[
    "thumbv7em-none-eabihf",
    "thumbv6m-none-eabi",
    "riscv32imc-unknown-none-elf",
];

/// The QEMU virtual board's folder under `boards/`.
pub const QEMU_BOARD: &str = "qemu-mps2-an386";
/// The QEMU board's smoke-test binary.
const QEMU_PROBE_BIN: &str = "udp-probe";
/// The board's target (from its `.cargo/config.toml`), for the ELF path.
const QEMU_BOARD_TARGET: &str = "thumbv7em-none-eabihf";
/// Longest a smoke boot may take before it counts as hung.
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cargo xtask cross [command]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let command = match args {
        [] => "all",
        [one] => one.as_str(),
        _ => return Err(format!("too many arguments\n{USAGE}")),
    };
    match command {
        "all" => {
            let env = timed("cross: toolchain", CrossEnv::setup)?;
            timed("cross: no_std crates for MCU targets", || {
                check_no_std_crates(&env)
            })?;
            timed("cross: board crates", || build_boards(&env))?;
            timed("cross: clippy on board crates", || clippy_boards(&env))?;
            // Same builds (already fresh): the size table and the budget check.
            timed("cross: size report", || crate::size::run(&[]))?;
            if has_program("qemu-system-arm", &["--version"]) {
                timed("cross: qemu smoke", || smoke(&env))?;
                timed("cross: qemu watchdog", || crate::qemu_watchdog::run(&[]))?;
                timed("cross: qemu clock", || crate::qemu_clock::run(&[]))
            } else {
                eprintln!(
                    "cross: qemu-system-arm missing (scripts/install-qemu.sh); smoke skipped"
                );
                Ok(())
            }
        }
        "setup" => CrossEnv::setup().map(|_| ()),
        "env" => {
            let env = CrossEnv::setup()?;
            for (key, value) in &env.vars {
                println!("export {key}='{value}'");
            }
            Ok(())
        }
        "build" => check_no_std_crates(&CrossEnv::setup()?),
        "boards" => build_boards(&CrossEnv::setup()?),
        "clippy" => clippy_boards(&CrossEnv::setup()?),
        "qemu-smoke" => qemu_smoke(&[]),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown cross command `{other}`\n{USAGE}")),
    }
}

/// Runs `cargo xtask qemu-smoke`: toolchain, QEMU (installed if missing and allowed), then the
/// smoke boot. No arguments.
pub fn qemu_smoke(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("qemu-smoke takes no arguments".into());
    }
    let env = CrossEnv::setup()?;
    if !has_program("qemu-system-arm", &["--version"]) {
        run_command(&mut Command::new(
            project_root().join("scripts/install-qemu.sh"),
        ))?;
    }
    smoke(&env)
}

/// The environment that makes cargo use the pinned cross compiler.
#[derive(Debug, Clone)]
pub struct CrossEnv {
    /// Variables to set (`RUSTC`, `LD_LIBRARY_PATH`, `RUSTC_BOOTSTRAP`, ...).
    vars: Vec<(String, String)>,
}

impl CrossEnv {
    /// Sets up the toolchain if needed (instant when already done) and reads its environment.
    pub fn setup() -> Result<Self, String> {
        let script = project_root().join("scripts/cross-toolchain.sh");
        let output = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}); see its message above",
                script.display(),
                output.status
            ));
        }
        let stdout = String::from_utf8(output.stdout)
            .map_err(|_| format!("{} printed non-UTF-8 output", script.display()))?;
        let env = Self::parse(&stdout)?;
        for key in ["RUSTC", "LD_LIBRARY_PATH", "RUSTC_BOOTSTRAP"] {
            if env.get(key).is_none() {
                return Err(format!("{} did not print {key}", script.display()));
            }
        }
        Ok(env)
    }

    /// Parses the script's `KEY=VALUE` lines.
    fn parse(text: &str) -> Result<Self, String> {
        let vars = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                line.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("unexpected toolchain script output line `{line}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { vars })
    }

    /// The value of one variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A `cargo` command that runs in `dir` with the cross compiler and `target_dir` as its
    /// target folder. Callers add the subcommand and arguments (`-Zbuild-std` where the crate's
    /// own `.cargo/config.toml` does not set it).
    pub fn cargo(&self, dir: &Path, target_dir: &Path) -> Command {
        let mut command = cargo();
        self.apply(&mut command, dir, target_dir);
        command
    }

    /// Like [`CrossEnv::cargo`] with `clippy` as the subcommand, run through Debian's
    /// `cargo-clippy` of the same release (rustup's clippy cannot read the 1.96 library source).
    /// It finds `clippy-driver` next to itself and runs cargo from `$CARGO`.
    pub fn cargo_clippy(&self, dir: &Path, target_dir: &Path) -> Result<Command, String> {
        let prefix = self
            .get("CROSS_TOOLCHAIN_PREFIX")
            .ok_or("the toolchain script did not print CROSS_TOOLCHAIN_PREFIX")?;
        let mut command = Command::new(Path::new(prefix).join("usr/bin/cargo-clippy"));
        command.arg("clippy");
        self.apply(&mut command, dir, target_dir);
        if let Some(cargo) = std::env::var_os("CARGO") {
            command.env("CARGO", cargo);
        }
        Ok(command)
    }

    fn apply(&self, command: &mut Command, dir: &Path, target_dir: &Path) {
        command.current_dir(dir).env("CARGO_TARGET_DIR", target_dir);
        // Flags meant for host builds must not leak into cross builds (they would replace the
        // board's own rustflags, e.g. its linker scripts).
        for key in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            command.env_remove(key);
        }
        for (key, value) in &self.vars {
            command.env(key, value);
        }
    }
}

/// The folder for cross build output: `$CARGO_TARGET_DIR/cross`, else `target/cross`, kept
/// apart from host builds (different compiler, different standard library).
pub fn cross_target_dir() -> PathBuf {
    crate::shell::target_dir().join("cross")
}

/// A no_std workspace crate and how `cross build` checks it for the MCU targets.
struct NoStdBuild {
    /// The package name.
    package: &'static str,
    /// Feature sets (comma-separated; "" for none), each built with default features off.
    feature_sets: &'static [&'static str],
    /// Skip the targets an MCU board crate is built for: every board links this crate (with
    /// `defmt` and its own release profile), so `cross boards` already builds it there and a
    /// second build here would only cost CI time.
    skip_board_targets: bool,
}

/// The no_std workspace crates, on the targets no board covers (today `riscv32imc`):
/// `shared-protocol` bare and with `defmt`; `firmware` with its embassy-net transports, bare
/// and with `defmt` (what the boards enable). On a board's target the board build compiles
/// both crates with `defmt`; the bare builds on `riscv32imc` show they need neither defmt nor
/// atomic compare-and-swap, and the host builds cover the rest. They are checked (`cargo
/// check`: type and borrow checking, every lint, no code generation) rather than built: a
/// missing atomic or a defmt call left outside its feature is a type error, and a library
/// links nothing, so code generation would only add CPU time (the boards' builds generate
/// code for the other two targets). Each target's first check checks `core` too.
/// A library needs no critical-section implementation or time driver: the board that links
/// it brings those.
const NO_STD_BUILDS: &[NoStdBuild] = &[
    NoStdBuild {
        package: "shared-protocol",
        feature_sets: &["", "defmt"],
        skip_board_targets: true,
    },
    NoStdBuild {
        package: "firmware",
        feature_sets: &["embassy", "embassy,defmt"],
        skip_board_targets: true,
    },
];

/// Checks every crate of [`NO_STD_BUILDS`] with each of its feature sets for its targets
/// (release, default features off).
fn check_no_std_crates(env: &CrossEnv) -> Result<(), String> {
    let root = project_root();
    let target_dir = cross_target_dir();
    let mut board_targets = Vec::new();
    for board in board_dirs()? {
        board_targets.extend(crate::size::board_target(&board)?);
    }
    for target in TARGETS {
        for build in NO_STD_BUILDS {
            if build.skip_board_targets && board_targets.iter().any(|t| t == target) {
                eprintln!(
                    "cross: {} for {target}: built by the board crates",
                    build.package
                );
                continue;
            }
            for features in build.feature_sets {
                let mut command = env.cargo(&root, &target_dir);
                command.args([
                    "check",
                    "--release",
                    "--locked",
                    "-p",
                    build.package,
                    "--no-default-features",
                    "--target",
                    target,
                    "-Zbuild-std=core",
                ]);
                if !features.is_empty() {
                    command.args(["--features", features]);
                }
                run_command(&mut command)?;
            }
        }
    }
    Ok(())
}

/// Every MCU board crate: a folder under `boards/` with a `Cargo.toml` and a cross target in
/// its `.cargo/config.toml`. Host boards (the host TAP board) build with the host toolchain
/// (`cargo xtask test`, `cargo xtask hil`).
pub fn board_dirs() -> Result<Vec<PathBuf>, String> {
    crate::crates::mcu_boards()
}

/// The target folder of board builds: the one shared cross folder for every board, so `core`
/// is built once per target and profile rather than once per board (boards with the same
/// target and flags share it).
fn board_target_dir(_board: &Path) -> PathBuf {
    cross_target_dir()
}

/// Build-time settings for builds that only check that firmware compiles and measure it
/// (`cross boards`, `cross clippy`, `size`, the HIL's QEMU build): each variable the caller's
/// environment leaves unset gets a harmless placeholder. Device identities are not among them:
/// boards read a provisioning record at boot (docs/flashing.md), so these builds are the images
/// that get flashed. What remains is the QEMU probe's echo port and the Pico W's Wi-Fi network
/// (a site setting; such a build joins no real network).
pub fn placeholder_env(command: &mut Command) {
    const PLACEHOLDERS: &[(&str, &str)] = &[
        // The QEMU probe's UDP echo port; 9 is discard.
        ("PLUG_BROKER_PORT", "9"),
        ("PLUG_WIFI_SSID", "unprovisioned"),
    ];
    for (key, value) in PLACEHOLDERS {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
}

fn build_boards(env: &CrossEnv) -> Result<(), String> {
    for board in board_dirs()? {
        let mut command = env.cargo(&board, &board_target_dir(&board));
        command.args(["build", "--release", "--locked"]);
        placeholder_env(&mut command);
        let started = Instant::now();
        run_command(&mut command)?;
        eprintln!(
            "cross: built {} in {:.0} s",
            board.display(),
            started.elapsed().as_secs_f32()
        );
    }
    Ok(())
}

/// Clippy with warnings denied on every MCU board crate, for the one target its config names.
/// `--release` like the builds, so build scripts and proc macros built for them are reused.
fn clippy_boards(env: &CrossEnv) -> Result<(), String> {
    for board in board_dirs()? {
        let mut command = env.cargo_clippy(&board, &board_target_dir(&board))?;
        command.args(["--release", "--locked", "--", "-D", "warnings"]);
        placeholder_env(&mut command);
        let started = Instant::now();
        run_command(&mut command)?;
        eprintln!(
            "cross: clippy on {} in {:.0} s",
            board.display(),
            started.elapsed().as_secs_f32()
        );
    }
    Ok(())
}

/// What the echo side saw.
struct EchoReport {
    /// Bytes of the datagram echoed back.
    len: usize,
    /// Time from QEMU start to the datagram's arrival.
    after: Duration,
}

/// Boots the QEMU probe against a UDP echo on 127.0.0.1 and checks exit status 0.
fn smoke(env: &CrossEnv) -> Result<(), String> {
    let board = project_root().join("boards").join(QEMU_BOARD);
    let target_dir = board_target_dir(&board);

    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind UDP echo: {e}"))?;
    let port = socket
        .local_addr()
        .map_err(|e| format!("UDP echo address: {e}"))?
        .port();

    let build_start = Instant::now();
    let mut build = env.cargo(&board, &target_dir);
    build
        .args(["build", "--release", "--locked", "--bin", QEMU_PROBE_BIN])
        .env("PLUG_BROKER_PORT", port.to_string());
    run_command(&mut build)?;
    build_defmt_log()?;
    let build_time = build_start.elapsed();

    let elf = target_dir
        .join(QEMU_BOARD_TARGET)
        .join("release")
        .join(QEMU_PROBE_BIN);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| format!("UDP echo timeout: {e}"))?;

    let boot_start = Instant::now();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let echo = thread::spawn(move || echo_once(&socket, boot_start, &stop_rx));

    let runner = board.join("run-qemu.sh");
    eprintln!(
        "$ {} {} (UDP echo on 127.0.0.1:{port})",
        runner.display(),
        elf.display()
    );
    let (status, log) = run_qemu(
        Command::new(&runner).arg(&elf).current_dir(&board),
        boot_start,
        QEMU_TIMEOUT,
    );
    let boot_time = boot_start.elapsed();
    let _ = stop_tx.send(());
    let echoed = echo.join().map_err(|_| "UDP echo thread panicked")?;
    print_log(&log);

    let status = status?;
    let report = echoed?;
    eprintln!(
        "qemu-smoke: build {:.1} s, boot to exit {:.2} s, datagram ({} bytes) echoed {:.2} s after start",
        build_time.as_secs_f32(),
        boot_time.as_secs_f32(),
        report.len,
        report.after.as_secs_f32()
    );
    match status.code() {
        Some(0) => {
            eprintln!("qemu-smoke: pass (exit status 0)");
            Ok(())
        }
        Some(code) => Err(format!(
            "the firmware exited with status {code} (see its log above)"
        )),
        None => Err(format!("QEMU ended by a signal ({status})")),
    }
}

/// Echoes one datagram back to its sender, until `stop` says QEMU has ended.
fn echo_once(
    socket: &UdpSocket,
    start: Instant,
    stop: &mpsc::Receiver<()>,
) -> Result<EchoReport, String> {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                let after = start.elapsed();
                socket
                    .send_to(&buf[..len], peer)
                    .map_err(|e| format!("UDP echo send: {e}"))?;
                return Ok(EchoReport { len, after });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.try_recv().is_ok() {
                    return Err("no datagram reached the UDP echo on 127.0.0.1".into());
                }
            }
            Err(e) => return Err(format!("UDP echo receive: {e}")),
        }
    }
}

/// Builds the defmt decoder `hil-tests/defmt-log` (its own workspace: its Cargo.toml says why)
/// into `<target>/defmt-log` with the host toolchain. The QEMU board's runner
/// (`run-qemu.sh`) builds the same crate into the same folder before it pipes QEMU's output
/// through it; building it here first keeps that build out of the boot timeouts of the QEMU
/// tests. A debug build: it decodes a board's few lines a second with ease, and the host
/// tests have already compiled its dependencies in that profile (a release build took another
/// 1.5 minutes of the CI run).
pub fn build_defmt_log() -> Result<(), String> {
    let target = crate::shell::target_dir();
    let mut command = cargo();
    command
        .current_dir(project_root().join("hil-tests/defmt-log"))
        .args(["build", "--locked"])
        .env("CARGO_TARGET_DIR", target.join("defmt-log"));
    run_command(&mut command)
}

/// Runs a QEMU runner `command` in its own process group with its log captured (drained on a
/// thread so QEMU never blocks on a full pipe), killing the group once `timeout` has passed
/// since `started`. Returns how it ended and the log.
pub fn run_qemu(
    command: &mut Command,
    started: Instant,
    timeout: Duration,
) -> (Result<std::process::ExitStatus, String>, Vec<u8>) {
    let mut child = match command.process_group(0).stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return (Err(format!("cannot start QEMU: {e}")), Vec::new()),
    };
    let Some(mut stdout) = child.stdout.take() else {
        return (Err("QEMU stdout not captured".into()), Vec::new());
    };
    let log_reader = thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stdout.read_to_end(&mut log);
        log
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() > timeout => {
                kill_group(child.id());
                let _ = child.wait();
                break Err(format!("QEMU still running after {timeout:?}; killed"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(format!("waiting for QEMU: {e}")),
        }
    };
    (status, log_reader.join().unwrap_or_default())
}

/// Prints the board's log: decoded text (the runner pipes it through `defmt-log`), or a note
/// when it came raw (`DEFMT_RAW=1`, or the decoder did not build).
pub fn print_log(log: &[u8]) {
    match std::str::from_utf8(log) {
        Ok(text) => {
            for line in text.lines() {
                eprintln!("  board | {line}");
            }
        }
        Err(_) => eprintln!(
            "  board | ({} bytes of raw defmt; the runner's decoder did not run)",
            log.len()
        ),
    }
}

/// Ends the runner's process group (the runner and the QEMU it started), by PID.
pub fn kill_group(pid: u32) {
    crate::shell::signal_group(pid, "-TERM");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_toolchain_script_output() {
        let env = CrossEnv::parse("RUSTC=/p/usr/bin/rustc\nRUSTC_BOOTSTRAP=1\n\n").unwrap();
        assert_eq!(env.get("RUSTC"), Some("/p/usr/bin/rustc"));
        assert_eq!(env.get("RUSTC_BOOTSTRAP"), Some("1"));
        assert_eq!(env.get("LD_LIBRARY_PATH"), None);
    }

    #[test]
    fn rejects_lines_without_equals() {
        assert!(CrossEnv::parse("cross-toolchain: ready").is_err());
    }

    #[test]
    fn cross_command_carries_the_environment_and_folder() {
        let env = CrossEnv::parse("RUSTC=/x/rustc\nRUSTC_BOOTSTRAP=1").unwrap();
        let command = env.cargo(Path::new("/somewhere"), Path::new("/t"));
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&("RUSTC".as_ref(), Some("/x/rustc".as_ref()))));
        assert!(envs.contains(&("CARGO_TARGET_DIR".as_ref(), Some("/t".as_ref()))));
        assert!(envs.contains(&("RUSTFLAGS".as_ref(), None)));
        assert_eq!(command.get_current_dir(), Some(Path::new("/somewhere")));
    }
}
