//! Starting and stopping the board of a rig, and collecting its log.
//!
//! Every kind boots one image and gets its provisioning as a record ([`Boot::record`], written by
//! `broker::provisioning::record_bytes`, the code behind `broker device-key --record`):
//! QEMU loads it into its record region with `-device loader` (and the boot number into the
//! companion word: QEMU keeps nothing across boots), the host TAP board reads the file named by
//! `PLUG_RECORD`, a real board (probe-rs rigs) gets it written into its record flash region with
//! `probe-rs download` before its image is started. Run options that are not provisioning
//! (upload interval, lifetime) go on QEMU's command line or the host board's environment
//! ([`Boot::run_options`]). Boards are stopped by their PID: SIGTERM, then SIGKILL after a
//! grace period.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::rig::{Kind, Rig, Transport, resolve, target_dir};
use crate::teardown::Teardown;

/// Why a board could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A file the rig names does not exist.
    #[error("{what} {path} does not exist ({hint})")]
    Missing {
        /// What it is.
        what: &'static str,
        /// Where it should be.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// A program could not be started or failed.
    #[error("{program}: {reason}")]
    Program {
        /// The program.
        program: String,
        /// What happened.
        reason: String,
    },
    /// No debug probe is attached (real-board rigs).
    #[error(
        "no debug probe attached: `probe-rs list` found none. Connect the board's probe (docs/hil.md) or run a virtual rig (qemu, host-tap)"
    )]
    NoProbe,
    /// A log file could not be created.
    #[error("log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What one boot of a board is provisioned with.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Device id.
    pub device_id: u32,
    /// Device key.
    pub key: [u8; 32],
    /// The one transport this boot uses.
    pub transport: Transport,
    /// Broker UDP endpoint as the board reaches it.
    pub udp: SocketAddr,
    /// Broker WebSocket endpoint as the board reaches it.
    pub ws: SocketAddr,
    /// Interval of `power` uploads, ms.
    pub meter_ms: u64,
    /// Boot number for boards that keep nothing across boots (QEMU): grows per boot.
    pub boot_number: u32,
    /// The record's secret entropy seed (fresh per device; boots of one device share it).
    pub record_seed: [u8; 16],
    /// The board ends itself after this long (a safety net if the test itself is killed).
    pub exit_after_s: u64,
    /// The node lookup (`PLUG_LOOKUP`), when the boot asks it first.
    pub lookup: Option<SocketAddr>,
    /// Which host TAP board of the rig (its TAP and address); 0 for other kinds.
    pub board: u32,
    /// The QEMU board's emulated flash file (`PLUG_FLASH`): it counts its own boots there and
    /// keeps its since_id (stored at most [`SINCE_PERIOD_MS`] after it grew); `None`: nothing
    /// kept.
    pub flash: Option<PathBuf>,
}

/// Since-id period and gap asked of a board with a flash file (`PLUG_SINCE_PERIOD_MS`,
/// `PLUG_SINCE_GAP_MS`): short, so a test need not wait minutes.
pub const SINCE_PERIOD_MS: u64 = 1_000;

/// Address of the QEMU board's record region (`board_qemu_mps2_an386::record_region`).
pub const QEMU_RECORD_ADDR: u32 = 0x0100_0000;
/// Address of its companion word: `"PBOT"` then the boot number, little-endian.
pub const QEMU_BOOT_WORD_ADDR: u32 = QEMU_RECORD_ADDR + 0x400;
const QEMU_BOOT_MAGIC: u32 = u32::from_le_bytes(*b"PBOT");

impl Boot {
    /// The provisioning record of this boot.
    pub fn record(&self) -> Result<Vec<u8>, ::broker::provisioning::WriteRecordError> {
        let spec = ::broker::provisioning::RecordSpec {
            udp: Some(self.udp),
            ws: Some(self.ws),
            lookup: self.lookup,
            transport: Some(match self.transport {
                Transport::Udp => shared_protocol::provision::TransportPreference::Udp,
                Transport::Ws => shared_protocol::provision::TransportPreference::Ws,
            }),
            ..Default::default()
        };
        ::broker::provisioning::record_bytes(self.device_id, self.key, &spec, self.record_seed)
    }

    /// Run options that are not provisioning, as `PLUG_*` pairs.
    pub fn run_options(&self) -> Vec<(&'static str, String)> {
        let mut options = vec![
            ("PLUG_METER_MS", self.meter_ms.to_string()),
            ("PLUG_EXIT_AFTER_S", self.exit_after_s.to_string()),
        ];
        if let Some(flash) = &self.flash {
            options.push(("PLUG_FLASH", flash.display().to_string()));
            options.push(("PLUG_SINCE_PERIOD_MS", SINCE_PERIOD_MS.to_string()));
            options.push(("PLUG_SINCE_GAP_MS", (SINCE_PERIOD_MS / 2).to_string()));
        }
        options
    }

    /// The QEMU boot command line: `KEY=VALUE` words of the run options.
    pub fn cmdline(&self) -> String {
        self.run_options()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// QEMU arguments loading `record` and this boot's number into the board's record region.
    pub fn qemu_loader_args(&self, record: &Path) -> Vec<String> {
        let word = (u64::from(self.boot_number) << 32) | u64::from(QEMU_BOOT_MAGIC);
        vec![
            "-device".into(),
            format!(
                "loader,file={},addr={QEMU_RECORD_ADDR:#x},force-raw=on",
                record.display()
            ),
            "-device".into(),
            format!("loader,addr={QEMU_BOOT_WORD_ADDR:#x},data={word:#x},data-len=8"),
        ]
    }
}

/// Writes `record` (the boot's own, or bytes a test chose) to `path`.
fn write_record(record: &[u8], path: &Path) -> Result<(), DeviceError> {
    std::fs::write(path, record).map_err(|source| DeviceError::Log {
        path: path.to_path_buf(),
        source,
    })
}

/// One command of a real-board boot, as it is run and as `--dry-run` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The folder it runs in (else the current one).
    pub dir: Option<PathBuf>,
}

impl Planned {
    fn new(program: &str, args: &[&str]) -> Planned {
        Planned {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: None,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    /// Runs it to the end; `failed` names the step when it exits non-zero.
    fn status(&self, failed: &str) -> Result<(), DeviceError> {
        let status = self.command().status().map_err(|e| DeviceError::Program {
            program: self.program.clone(),
            reason: e.to_string(),
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(DeviceError::Program {
                program: self.to_string(),
                reason: format!("{failed} ({status})"),
            })
        }
    }
}

/// A shell line: `(cd DIR && PROGRAM ARGS...)`, arguments quoted when they need it.
impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quote = |a: &str| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+{}@".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        };
        let line = std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        match &self.dir {
            Some(dir) => write!(f, "(cd {} && {line})", quote(&dir.display().to_string())),
            None => f.write_str(&line),
        }
    }
}

/// What a real board's boot runs, in order: build the one image, write the boot's record into
/// the record region, then flash the image, reset and stream its RTT (defmt) logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRsPlan {
    /// The rig's build command, in its board folder (`{target}` replaced).
    pub build: Planned,
    /// `probe-rs download` of the record file at the rig's `record_addr`.
    pub write_record: Planned,
    /// `probe-rs run`: flashes the ELF, resets, and prints the defmt logs it decodes from the
    /// ELF's defmt table over RTT until it is stopped.
    pub run: Planned,
}

impl ProbeRsPlan {
    /// The plan for rig table `p` with the project at `root`, cargo's target folder `target`,
    /// and this boot's record file `record`.
    pub fn new(
        p: &crate::rig::ProbeRsRig,
        root: &Path,
        target: &Path,
        record: &Path,
    ) -> Result<ProbeRsPlan, DeviceError> {
        let (program, args) = p.build.split_first().ok_or(DeviceError::Program {
            program: "build".into(),
            reason: "probe_rs.build is empty".into(),
        })?;
        let target_text = target.display().to_string();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{target}", &target_text))
            .collect();
        let build = Planned {
            program: program.clone(),
            args,
            dir: Some(root.join(&p.board_dir)),
        };
        let address = format!("{:#x}", p.record_addr);
        let record = record.display().to_string();
        let write_record = Planned::new(
            "probe-rs",
            &[
                "download",
                "--chip",
                &p.chip,
                "--binary-format",
                "bin",
                "--base-address",
                &address,
                &record,
            ],
        );
        let elf = resolve(root, target, &p.elf).display().to_string();
        let run = Planned::new("probe-rs", &["run", "--chip", &p.chip, &elf]);
        Ok(ProbeRsPlan {
            build,
            write_record,
            run,
        })
    }

    /// The three commands in the order they run.
    pub fn steps(&self) -> [&Planned; 3] {
        [&self.build, &self.write_record, &self.run]
    }
}

/// A started board.
pub struct Device {
    child: Option<Child>,
    /// Raw output (defmt frames for QEMU, text otherwise).
    out_path: PathBuf,
    err_path: PathBuf,
    /// ELF to decode defmt frames with (QEMU), and the decoder built for the harness.
    defmt_elf: Option<(PathBuf, PathBuf)>,
    log_path: PathBuf,
    started: Instant,
    /// Unregistered from when the board is stopped.
    teardown: Option<Teardown>,
}

fn create(path: &Path) -> Result<File, DeviceError> {
    File::create(path).map_err(|source| DeviceError::Log {
        path: path.to_path_buf(),
        source,
    })
}

fn spawn(command: &mut Command) -> Result<Child, DeviceError> {
    command.spawn().map_err(|e| DeviceError::Program {
        program: command.get_program().to_string_lossy().into_owned(),
        reason: e.to_string(),
    })
}

/// Whether a probe-rs probe is attached (`probe-rs list`).
pub fn probe_attached() -> Result<bool, DeviceError> {
    let output =
        Command::new("probe-rs")
            .arg("list")
            .output()
            .map_err(|e| DeviceError::Program {
                program: "probe-rs".into(),
                reason: format!(
                    "{e} (install: cargo install probe-rs-tools --locked; docs/hil.md)"
                ),
            })?;
    Ok(probes_listed(&String::from_utf8_lossy(&output.stdout)))
}

/// `probe-rs list` prints `The following debug probes were found:` and `[0]: ...` lines, or
/// `No debug probes were found.`
fn probes_listed(text: &str) -> bool {
    text.lines()
        .any(|line| line.trim_start().starts_with("[0]"))
}

/// Starts the board of `rig` with `boot`; its output goes under `logs` as `<name>.*`.
pub fn start(
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    logs: &Path,
    name: &str,
) -> Result<Device, DeviceError> {
    start_as(rig.kind, rig, root, boot, logs, name)
}

/// [`start`] for a board of `kind` (a host TAP rig's fleet also has a QEMU board).
pub fn start_as(
    kind: Kind,
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    logs: &Path,
    name: &str,
) -> Result<Device, DeviceError> {
    start_image(kind, rig, root, boot, logs, name, None)
}

/// [`start_as`]; a host TAP board runs `binary` (relative to the project root, `{target}`
/// allowed) instead of the rig's `[host_tap] binary` when given (another firmware image).
pub fn start_image(
    kind: Kind,
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    logs: &Path,
    name: &str,
    binary: Option<&str>,
) -> Result<Device, DeviceError> {
    let record = boot.record().map_err(|e| DeviceError::Program {
        program: "provisioning record".into(),
        reason: e.to_string(),
    })?;
    start_with_record_as(kind, rig, root, boot, &record, logs, name, binary)
}

/// [`start`] with the given record bytes instead of `boot`'s (a test of bad records).
pub fn start_with_record(
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    record_bytes: &[u8],
    logs: &Path,
    name: &str,
) -> Result<Device, DeviceError> {
    start_with_record_as(rig.kind, rig, root, boot, record_bytes, logs, name, None)
}

#[allow(clippy::too_many_arguments)]
fn start_with_record_as(
    kind: Kind,
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    record_bytes: &[u8],
    logs: &Path,
    name: &str,
    binary: Option<&str>,
) -> Result<Device, DeviceError> {
    let out_path = logs.join(format!("{name}.out"));
    let err_path = logs.join(format!("{name}.stderr"));
    let log_path = logs.join(format!("{name}.log"));
    let (stdout, stderr) = (create(&out_path)?, create(&err_path)?);
    let mut defmt_elf = None;
    let target = target_dir(root);
    let child = match kind {
        Kind::Qemu => {
            let q = rig.qemu.as_ref().ok_or(DeviceError::Program {
                program: "qemu-system-arm".into(),
                reason: format!("rig {} has no [qemu] table", rig.name),
            })?;
            let elf = resolve(root, &target, &q.elf);
            if !elf.is_file() {
                return Err(DeviceError::Missing {
                    what: "firmware ELF",
                    path: elf,
                    hint: "build it with `cargo xtask hil --rig qemu`",
                });
            }
            defmt_elf = Some((elf.clone(), defmt_log_binary(&target)));
            let record = logs.join(format!("{name}.record.bin"));
            write_record(record_bytes, &record)?;
            spawn(
                Command::new("qemu-system-arm")
                    .args([
                        "-M", &q.machine, "-cpu", &q.cpu, "-display", "none", "-monitor", "none",
                    ])
                    .args([
                        "-serial",
                        "none",
                        "-semihosting-config",
                        "enable=on,target=native",
                    ])
                    .args(["-nic", "user,model=lan9118"])
                    .args(boot.qemu_loader_args(&record))
                    .arg("-kernel")
                    .arg(&elf)
                    .args(["-append", &boot.cmdline()])
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr),
            )?
        }
        Kind::HostTap => {
            let h = rig.host_tap.as_ref().ok_or(DeviceError::Program {
                program: "host-tap-plug".into(),
                reason: format!("rig {} has no [host_tap] table", rig.name),
            })?;
            let ip = h.board_cidr(boot.board).ok_or(DeviceError::Program {
                program: "host-tap-plug".into(),
                reason: format!("board {} is past the rig's subnet", boot.board),
            })?;
            let binary = resolve(root, &target, binary.unwrap_or(&h.binary));
            if !binary.is_file() {
                return Err(DeviceError::Missing {
                    what: "board binary",
                    path: binary,
                    hint: "build it with `cargo xtask hil --rig host-tap`",
                });
            }
            let record = logs.join(format!("{name}.record.bin"));
            write_record(record_bytes, &record)?;
            spawn(
                Command::new(&binary)
                    .envs(boot.run_options())
                    .env("PLUG_RECORD", &record)
                    .env("PLUG_TAP", h.tap(boot.board))
                    .env("PLUG_IP", ip)
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                    )
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr),
            )?
        }
        Kind::ProbeRs => {
            let p = rig.probe_rs.as_ref().ok_or(DeviceError::Program {
                program: "probe-rs".into(),
                reason: format!("rig {} has no [probe_rs] table", rig.name),
            })?;
            if !probe_attached()? {
                return Err(DeviceError::NoProbe);
            }
            let record = logs.join(format!("{name}.record.bin"));
            let plan = ProbeRsPlan::new(p, root, &target, &record)?;
            plan.build.status("build failed")?;
            write_record(record_bytes, &record)?;
            plan.write_record
                .status("writing the provisioning record failed")?;
            spawn(
                plan.run
                    .command()
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr),
            )?
        }
    };
    Ok(Device {
        child: Some(child),
        out_path,
        err_path,
        defmt_elf,
        log_path,
        started: Instant::now(),
        teardown: None,
    })
}

impl Device {
    /// Registers the board's process with `teardown` (killed on Ctrl-C) until it is stopped.
    pub fn watched(mut self, teardown: &Teardown) -> Device {
        if let Some(child) = &self.child {
            teardown.add_pid(child.id());
            self.teardown = Some(teardown.clone());
        }
        self
    }

    /// When the board was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The exit status if the board has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the board (by PID) and returns its log as text (defmt decoded, see
    /// [`decode_defmt`]), also written to `<name>.log`.
    pub fn stop(mut self) -> String {
        self.stop_in_place()
    }

    /// The board's log so far, as [`Device::stop`] returns it, without stopping the board.
    pub fn log_so_far(&self) -> String {
        let mut text = match &self.defmt_elf {
            Some((elf, decoder)) => decode_defmt(decoder, elf, &self.out_path),
            None => std::fs::read_to_string(&self.out_path).unwrap_or_default(),
        };
        text.push_str(&std::fs::read_to_string(&self.err_path).unwrap_or_default());
        text
    }

    /// [`Device::stop`] for a board kept in place (its slot is given a new [`Device`] next);
    /// once stopped, dropping it does nothing.
    pub fn stop_in_place(&mut self) -> String {
        let status = self.terminate();
        let uptime = self.started.elapsed();
        let mut text = match &self.defmt_elf {
            Some((elf, decoder)) => decode_defmt(decoder, elf, &self.out_path),
            None => std::fs::read_to_string(&self.out_path).unwrap_or_default(),
        };
        text.push_str(&std::fs::read_to_string(&self.err_path).unwrap_or_default());
        text.push_str(&format!(
            "[hil] board ran {:.1} s, ended: {status}\n",
            uptime.as_secs_f32()
        ));
        if let Ok(mut f) = File::create(&self.log_path) {
            let _ = f.write_all(text.as_bytes());
        }
        text
    }

    fn terminate(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        let status = Self::end(&mut child);
        if let Some(t) = self.teardown.take() {
            t.remove_pid(child.id());
        }
        status
    }

    fn end(child: &mut Child) -> String {
        if let Ok(Some(status)) = child.try_wait() {
            return format!("by itself ({status})");
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return format!("on SIGTERM ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        "on SIGKILL".into()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // A test that failed or panicked before `stop` still ends its board.
        self.terminate();
    }
}

/// The harness's defmt decoder (`hil-tests/defmt-log`, built by `cargo xtask hil` into
/// `<target>/defmt-log`; a debug build, which decodes a board's few lines a second with ease).
pub fn defmt_log_binary(target: &Path) -> PathBuf {
    target.join("defmt-log/debug/defmt-log")
}

/// Decodes the raw defmt frames in `raw` with the defmt table of `elf`: with the harness's own
/// decoder `decoder` (the defmt-decoder crate), else with `defmt-print` if it is installed;
/// else says how many raw bytes there are and how to get a decoder.
pub fn decode_defmt(decoder: &Path, elf: &Path, raw: &Path) -> String {
    let bytes = std::fs::metadata(raw).map(|m| m.len()).unwrap_or(0);
    let run = |program: &Path, args: &[&std::ffi::OsStr]| {
        let input = File::open(raw).ok()?;
        let out = Command::new(program)
            .args(args)
            .stdin(input)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        (out.status.success() && !out.stdout.is_empty())
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let decoded = decoder
        .is_file()
        .then(|| run(decoder, &[elf.as_os_str()]))
        .flatten()
        .or_else(|| run(Path::new("defmt-print"), &["-e".as_ref(), elf.as_os_str()]));
    decoded.unwrap_or_else(|| {
        format!(
            "[hil] {bytes} bytes of raw defmt in {} (no decoder: build {} with `cargo xtask hil --rig qemu`)\n",
            raw.display(),
            decoder.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        Boot {
            device_id: 4001,
            key: [0xab; 32],
            transport: Transport::Ws,
            udp: "10.0.2.2:5000".parse().unwrap(),
            ws: "10.0.2.2:5001".parse().unwrap(),
            meter_ms: 1000,
            boot_number: 9,
            record_seed: [4; 16],
            exit_after_s: 300,
            lookup: None,
            board: 0,
            flash: None,
        }
    }

    #[test]
    fn the_record_carries_the_provisioning_and_the_cmdline_only_run_options() {
        use shared_protocol::provision::{Record, TransportPreference};
        let boot = Boot {
            lookup: Some("10.0.2.2:8080".parse().unwrap()),
            ..boot()
        };
        let bytes = boot.record().unwrap();
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.device_id, 4001);
        assert_eq!(record.key, [0xab; 32]);
        assert_eq!(record.transport, TransportPreference::Ws);
        assert_eq!(record.ws.unwrap().addr, "10.0.2.2:5001".parse().unwrap());
        assert_eq!(
            record.lookup.unwrap().addr,
            "10.0.2.2:8080".parse().unwrap()
        );
        assert_eq!(record.seed, [4; 16]);
        let line = boot.cmdline();
        assert_eq!(line, "PLUG_METER_MS=1000 PLUG_EXIT_AFTER_S=300");
        assert!(!line.contains("abab") && !line.contains("DEVICE"), "{line}");
    }

    #[test]
    fn qemu_loads_the_record_and_the_boot_number() {
        let args = boot().qemu_loader_args(Path::new("/tmp/r.bin"));
        assert_eq!(
            args,
            [
                "-device",
                "loader,file=/tmp/r.bin,addr=0x1000000,force-raw=on",
                "-device",
                "loader,addr=0x1000400,data=0x9544f4250,data-len=8",
            ]
        );
    }

    #[test]
    fn reads_probe_rs_list_output() {
        assert!(!probes_listed("No debug probes were found.\n"));
        assert!(probes_listed(
            "The following debug probes were found:\n[0]: STLink V2-1 -- 0483:374b:0671FF (ST-LINK)\n"
        ));
    }
}
