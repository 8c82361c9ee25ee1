//! Rig descriptions: which board, how to start it, and what the run provisions, from a TOML
//! file under `hil-tests/rigs/`.
//!
//! A rig names its `kind` (how a board is started: [`Kind::Qemu`], [`Kind::HostTap`] or
//! [`Kind::ProbeRs`]) and the matching table (`[qemu]`, `[host_tap]` or `[probe_rs]`); the
//! rest (device id, transports, timers) is common and feeds the shared scenario.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a rig file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The file could not be read.
    #[error("cannot read rig file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid rig description.
    #[error("rig file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How the board of a rig is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `qemu-system-arm` with the firmware ELF, user-mode network.
    Qemu,
    /// The host TAP board process inside a network namespace the test creates.
    HostTap,
    /// A real board flashed and run with `probe-rs run`.
    ProbeRs,
}

/// A device transport the scenario runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Protocol packets in UDP datagrams.
    Udp,
    /// Protocol packets in WebSocket binary messages.
    Ws,
}

impl Transport {
    /// The `PLUG_TRANSPORT` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Ws => "ws",
        }
    }

    /// How the broker's API names a session on this transport.
    pub fn api_name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Ws => "device_ws",
        }
    }
}

/// `[qemu]`: the virtual Cortex-M board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuRig {
    /// The firmware ELF (relative to the project root; `{target}` allowed).
    pub elf: String,
    /// `-M` machine.
    pub machine: String,
    /// `-cpu`.
    pub cpu: String,
    /// The broker's address as the guest sees it (the host's loopback on QEMU's user network).
    pub broker_host: Ipv4Addr,
}

/// `[host_tap]`: the std board on a TAP device in a network namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTapRig {
    /// The board binary (relative to the project root; `{target}` allowed).
    pub binary: String,
    /// TAP device created in the namespace.
    pub tap: String,
    /// Kernel side of the TAP (`a.b.c.d/prefix`), where the broker listens.
    pub host_ip: String,
    /// The board's static address (`a.b.c.d/prefix`).
    pub board_ip: String,
}

/// `[probe_rs]`: a real board behind a debug probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRsRig {
    /// probe-rs chip name (`probe-rs chip list`).
    pub chip: String,
    /// Board crate folder the build runs in (relative to the project root).
    pub board_dir: PathBuf,
    /// Build command of the one image of this board type (`{target}` allowed in its arguments).
    pub build: Vec<String>,
    /// Flash address of the board's provisioning record region (docs/flashing.md); each boot's
    /// record is written there with `probe-rs download` before the image is started.
    pub record_addr: u32,
    /// The ELF the build produces (relative to the project root; `{target}` allowed).
    pub elf: String,
    /// Address the broker binds (the board reaches it over the LAN).
    pub broker_bind: IpAddr,
    /// This host's address as the board sees it.
    pub broker_addr: Ipv4Addr,
}

/// A rig file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rig {
    /// Name used in reports (JUnit suite names, log files).
    pub name: String,
    /// How the board is started.
    pub kind: Kind,
    /// Device id the board logs in as.
    pub device_id: u32,
    /// Transports to run the scenario over, one boot each.
    pub transports: Vec<Transport>,
    /// Interval of `power` uploads the board is told to use, ms.
    pub meter_ms: u64,
    /// Boot to login, seconds.
    pub login_timeout_s: u64,
    /// Also run each transport with a wrong static broker and the node lookup
    /// (`PLUG_LOOKUP`): the board must log in through the lookup's answer.
    #[serde(default)]
    pub lookup: bool,
    /// Present for `kind = "qemu"`.
    pub qemu: Option<QemuRig>,
    /// Present for `kind = "host-tap"`.
    pub host_tap: Option<HostTapRig>,
    /// Present for `kind = "probe-rs"`.
    pub probe_rs: Option<ProbeRsRig>,
}

impl Rig {
    /// Parses and checks a rig description (`name` is used in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Rig, RigError> {
        let invalid = |reason: String| RigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let rig: Rig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if rig.device_id == 0 {
            return Err(invalid("device_id must not be 0".into()));
        }
        if rig.transports.is_empty() {
            return Err(invalid("transports is empty".into()));
        }
        if rig.meter_ms == 0 {
            return Err(invalid(
                "meter_ms must be > 0 (the scenario waits for a power upload)".into(),
            ));
        }
        let table = match rig.kind {
            Kind::Qemu => rig.qemu.is_some(),
            Kind::HostTap => rig.host_tap.is_some(),
            Kind::ProbeRs => rig.probe_rs.is_some(),
        };
        if !table {
            return Err(invalid(format!(
                "kind {:?} needs its table ([qemu], [host_tap] or [probe_rs])",
                rig.kind
            )));
        }
        if let Some(h) = &rig.host_tap {
            for (key, value) in [("host_ip", &h.host_ip), ("board_ip", &h.board_ip)] {
                if parse_cidr(value).is_none() {
                    return Err(invalid(format!(
                        "host_tap.{key} `{value}` is not a.b.c.d/prefix"
                    )));
                }
            }
        }
        Ok(rig)
    }

    /// Reads a rig: `name` is a path to a TOML file, or the name of one in `rigs_dir`.
    pub fn load(rigs_dir: &Path, name: &str) -> Result<Rig, RigError> {
        let path = if name.ends_with(".toml") || name.contains('/') {
            PathBuf::from(name)
        } else {
            rigs_dir.join(format!("{name}.toml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|source| RigError::Read {
            path: path.clone(),
            source,
        })?;
        Rig::parse(&path, &text)
    }
}

/// The cargo target folder `{target}` stands for in rig paths: `HIL_TARGET_DIR`, else
/// `CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("HIL_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// A rig path or argument: `{target}` replaced by `target`, then relative to `root`.
pub fn resolve(root: &Path, target: &Path, text: &str) -> PathBuf {
    root.join(text.replace("{target}", &target.display().to_string()))
}

/// `a.b.c.d/prefix`.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr.parse().ok()?, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rigs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rigs")
    }

    #[test]
    fn the_shipped_rigs_parse() {
        let qemu = Rig::load(&rigs_dir(), "qemu").unwrap();
        assert_eq!(qemu.kind, Kind::Qemu);
        assert_eq!(qemu.transports, [Transport::Udp, Transport::Ws]);
        assert_eq!(qemu.qemu.unwrap().broker_host, Ipv4Addr::new(10, 0, 2, 2));
        let tap = Rig::load(&rigs_dir(), "host-tap").unwrap();
        assert_eq!(tap.kind, Kind::HostTap);
        assert_eq!(tap.host_tap.unwrap().tap, "tap0");
        let nucleo = Rig::load(&rigs_dir(), "nucleo-f429zi").unwrap();
        assert_eq!(nucleo.kind, Kind::ProbeRs);
        assert_eq!(nucleo.probe_rs.unwrap().chip, "STM32F429ZITx");
    }

    #[test]
    fn refuses_a_kind_without_its_table_and_unknown_keys() {
        let base = "name = \"x\"\ndevice_id = 1\ntransports = [\"udp\"]\nmeter_ms = 1000\nlogin_timeout_s = 5\n";
        let e = Rig::parse(Path::new("x.toml"), &format!("{base}kind = \"qemu\"\n")).unwrap_err();
        assert!(e.to_string().contains("needs its table"), "{e}");
        let e = Rig::parse(
            Path::new("x.toml"),
            &format!("{base}kind = \"qemu\"\ncolour = 1\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Rig::parse(
            Path::new("x.toml"),
            &format!("{base}kind = \"mainframe\"\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mainframe"), "{e}");
    }

    #[test]
    fn resolves_target_and_relative_paths() {
        let root = Path::new("/p");
        let target = Path::new("/t");
        assert_eq!(
            resolve(root, target, "{target}/cross/x"),
            Path::new("/t/cross/x")
        );
        assert_eq!(resolve(root, target, "boards/b"), Path::new("/p/boards/b"));
        assert_eq!(resolve(root, target, "/abs/elf"), Path::new("/abs/elf"));
    }

    #[test]
    fn checks_addresses_and_values() {
        let text = "name = \"t\"\nkind = \"host-tap\"\ndevice_id = 1\ntransports = [\"ws\"]\nmeter_ms = 1000\n\
                    login_timeout_s = 5\n[host_tap]\nbinary = \"b\"\ntap = \"tap0\"\nhost_ip = \"198.51.100.1\"\n\
                    board_ip = \"198.51.100.2/24\"\n";
        let e = Rig::parse(Path::new("t.toml"), text).unwrap_err();
        assert!(e.to_string().contains("host_tap.host_ip"), "{e}");
        let zero = text.replace("device_id = 1", "device_id = 0");
        assert!(
            Rig::parse(Path::new("t.toml"), &zero)
                .unwrap_err()
                .to_string()
                .contains("device_id")
        );
        assert_eq!(
            parse_cidr("198.51.100.1/24"),
            Some((Ipv4Addr::new(198, 51, 100, 1), 24))
        );
        assert_eq!(parse_cidr("198.51.100.1/40"), None);
    }
}
