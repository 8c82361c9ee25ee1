//! Starting and stopping the board of a rig, and collecting its log.
//!
//! Every kind gets the same provisioning ([`Boot::vars`], the `PLUG_*` names of the boards):
//! QEMU on its semihosting command line (read at boot, no rebuild per run), the host TAP board
//! in its environment, a real board at build time (baked in, then flashed). Boards are stopped
//! by their PID: SIGTERM, then SIGKILL after a grace period.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::rig::{Kind, Rig, Transport, resolve, target_dir};

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
    /// Seed for boards without an entropy source.
    pub seed: u64,
    /// The board ends itself after this long (a safety net if the test itself is killed).
    pub exit_after_s: u64,
    /// The node lookup (`PLUG_LOOKUP`), when the boot asks it first.
    pub lookup: Option<SocketAddr>,
}

impl Boot {
    /// The provisioning as `PLUG_*` pairs (names and formats shared by every board).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("PLUG_DEVICE_ID", self.device_id.to_string()),
            ("PLUG_DEVICE_KEY", hex::encode(self.key)),
            ("PLUG_BROKER_UDP", self.udp.to_string()),
            ("PLUG_BROKER_WS", self.ws.to_string()),
            ("PLUG_TRANSPORT", self.transport.as_str().to_string()),
            ("PLUG_METER_MS", self.meter_ms.to_string()),
            ("PLUG_SEED", self.seed.to_string()),
            ("PLUG_EXIT_AFTER_S", self.exit_after_s.to_string()),
        ];
        if let Some(lookup) = self.lookup {
            vars.push(("PLUG_LOOKUP", lookup.to_string()));
        }
        vars
    }

    /// The QEMU boot command line: `KEY=VALUE` words.
    pub fn cmdline(&self) -> String {
        self.vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A started board.
pub struct Device {
    child: Option<Child>,
    /// Raw output (defmt frames for QEMU, text otherwise).
    out_path: PathBuf,
    err_path: PathBuf,
    /// ELF to decode defmt frames with (QEMU).
    defmt_elf: Option<PathBuf>,
    log_path: PathBuf,
    started: Instant,
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
    let out_path = logs.join(format!("{name}.out"));
    let err_path = logs.join(format!("{name}.stderr"));
    let log_path = logs.join(format!("{name}.log"));
    let (stdout, stderr) = (create(&out_path)?, create(&err_path)?);
    let mut defmt_elf = None;
    let target = target_dir(root);
    let child = match rig.kind {
        Kind::Qemu => {
            let q = rig.qemu.as_ref().expect("checked by Rig::parse");
            let elf = resolve(root, &target, &q.elf);
            if !elf.is_file() {
                return Err(DeviceError::Missing {
                    what: "firmware ELF",
                    path: elf,
                    hint: "build it with `cargo xtask hil --rig qemu`",
                });
            }
            defmt_elf = Some(elf.clone());
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
                    .args(["-nic", "user,model=lan9118", "-kernel"])
                    .arg(&elf)
                    .args(["-append", &boot.cmdline()])
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr),
            )?
        }
        Kind::HostTap => {
            let h = rig.host_tap.as_ref().expect("checked by Rig::parse");
            let binary = resolve(root, &target, &h.binary);
            if !binary.is_file() {
                return Err(DeviceError::Missing {
                    what: "board binary",
                    path: binary,
                    hint: "build it with `cargo xtask hil --rig host-tap`",
                });
            }
            spawn(
                Command::new(&binary)
                    .envs(boot.vars())
                    .env("PLUG_TAP", &h.tap)
                    .env("PLUG_IP", &h.board_ip)
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
            let p = rig.probe_rs.as_ref().expect("checked by Rig::parse");
            if !probe_attached()? {
                return Err(DeviceError::NoProbe);
            }
            let (program, args) = p.build.split_first().ok_or(DeviceError::Program {
                program: "build".into(),
                reason: "probe_rs.build is empty".into(),
            })?;
            let args: Vec<String> = args
                .iter()
                .map(|a| a.replace("{target}", &target.display().to_string()))
                .collect();
            let status = Command::new(program)
                .args(&args)
                .current_dir(root.join(&p.board_dir))
                .envs(boot.vars())
                .status()
                .map_err(|e| DeviceError::Program {
                    program: program.clone(),
                    reason: e.to_string(),
                })?;
            if !status.success() {
                return Err(DeviceError::Program {
                    program: p.build.join(" "),
                    reason: format!("build failed ({status})"),
                });
            }
            spawn(
                Command::new("probe-rs")
                    .args(["run", "--chip", &p.chip])
                    .arg(resolve(root, &target, &p.elf))
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
    })
}

impl Device {
    /// The exit status if the board has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the board (by PID) and returns its log as text (defmt decoded with `defmt-print`
    /// when it is installed), also written to `<name>.log`.
    pub fn stop(mut self) -> String {
        let status = self.terminate();
        let uptime = self.started.elapsed();
        let mut text = match &self.defmt_elf {
            Some(elf) => decode_defmt(elf, &self.out_path),
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

/// Decodes raw defmt frames with `defmt-print` (if installed), else says how many bytes.
fn decode_defmt(elf: &Path, raw: &Path) -> String {
    let bytes = std::fs::metadata(raw).map(|m| m.len()).unwrap_or(0);
    let decoded = File::open(raw).ok().and_then(|input| {
        Command::new("defmt-print")
            .arg("-e")
            .arg(elf)
            .stdin(input)
            .stderr(Stdio::null())
            .output()
            .ok()
    });
    match decoded {
        Some(out) if !out.stdout.is_empty() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => format!(
            "[hil] {bytes} bytes of raw defmt in {} (install defmt-print to decode: cargo install defmt-print --locked)\n",
            raw.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_vars_and_cmdline_carry_the_provisioning() {
        let boot = Boot {
            device_id: 4001,
            key: [0xab; 32],
            transport: Transport::Ws,
            udp: "10.0.2.2:5000".parse().unwrap(),
            ws: "10.0.2.2:5001".parse().unwrap(),
            meter_ms: 1000,
            seed: 9,
            exit_after_s: 300,
            lookup: None,
        };
        let line = boot.cmdline();
        assert!(!line.contains("PLUG_LOOKUP"), "{line}");
        let with_lookup = Boot {
            lookup: Some("10.0.2.2:8080".parse().unwrap()),
            ..boot.clone()
        };
        assert!(
            with_lookup
                .cmdline()
                .ends_with(" PLUG_LOOKUP=10.0.2.2:8080"),
            "{}",
            with_lookup.cmdline()
        );
        assert!(
            line.starts_with("PLUG_DEVICE_ID=4001 PLUG_DEVICE_KEY=abab"),
            "{line}"
        );
        assert!(
            line.contains(" PLUG_BROKER_WS=10.0.2.2:5001 PLUG_TRANSPORT=ws "),
            "{line}"
        );
        assert!(
            !line.contains('\n') && !line.contains(','),
            "one QEMU argument: {line}"
        );
        assert_eq!(boot.vars().len(), line.split(' ').count());
    }

    #[test]
    fn reads_probe_rs_list_output() {
        assert!(!probes_listed("No debug probes were found.\n"));
        assert!(probes_listed(
            "The following debug probes were found:\n[0]: STLink V2-1 -- 0483:374b:0671FF (ST-LINK)\n"
        ));
    }
}
