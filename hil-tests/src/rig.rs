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

/// `[host_tap]`: std boards, each on a TAP device, the TAPs on one bridge in a network namespace
/// of the rig's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTapRig {
    /// The board binary (relative to the project root; `{target}` allowed).
    pub binary: String,
    /// TAP name prefix: board `i` is on TAP `<prefix><i>` (`tap0`, `tap1`, ...).
    pub tap_prefix: String,
    /// How many host TAP boards the rig has (default 1).
    #[serde(default = "one")]
    pub boards: u32,
    /// The bridge the TAPs are enslaved to (default `br0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The bridge's address (`a.b.c.d/prefix`), where the broker listens.
    pub host_ip: String,
    /// Board 0's static address (`a.b.c.d/prefix`); board `i` gets the `i`-th next address.
    pub board_ip: String,
    /// The second firmware image the `fleet` scenario rolls out to half of the boards (the
    /// board built with feature `next-image`; `{target}` allowed). `None`: that scenario fails
    /// at set-up.
    #[serde(default)]
    pub next_binary: Option<String>,
}

fn one() -> u32 {
    1
}

fn default_bridge() -> String {
    "br0".into()
}

impl HostTapRig {
    /// Board `index`'s TAP device.
    pub fn tap(&self, index: u32) -> String {
        format!("{}{index}", self.tap_prefix)
    }

    /// Board `index`'s address (`a.b.c.d/prefix`), `None` past the subnet.
    pub fn board_cidr(&self, index: u32) -> Option<String> {
        let (first, prefix) = parse_cidr(&self.board_ip)?;
        let addr = u32::from(first).checked_add(index)?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        // Stay inside the subnet and below its broadcast address.
        (addr & mask == u32::from(first) & mask && addr | mask != u32::MAX)
            .then(|| format!("{}/{prefix}", Ipv4Addr::from(addr)))
    }
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
    /// Scenarios the rig runs (names from `hil-tests list`; default: `basic`, the per-transport
    /// scenario). Fleet scenarios need `kind = "host-tap"`.
    #[serde(default = "default_scenarios")]
    pub scenarios: Vec<String>,
    /// Length of the `uploads-under-trouble` run, seconds (default 60, the full form).
    #[serde(default = "default_upload_run_s")]
    pub upload_run_s: u64,
    /// How long `cut-off` keeps the board off the network, seconds (default 600, the full
    /// form: 10 minutes).
    #[serde(default = "default_cut_off_s")]
    pub cut_off_s: u64,
    /// Present for `kind = "qemu"`; with `kind = "host-tap"` it adds one QEMU board to the fleet
    /// (in the rig's namespace, on QEMU's user-mode network).
    pub qemu: Option<QemuRig>,
    /// Present for `kind = "host-tap"`.
    pub host_tap: Option<HostTapRig>,
    /// Present for `kind = "probe-rs"`.
    pub probe_rs: Option<ProbeRsRig>,
}

fn default_scenarios() -> Vec<String> {
    vec!["basic".into()]
}

fn default_upload_run_s() -> u64 {
    60
}

fn default_cut_off_s() -> u64 {
    600
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
            if h.boards == 0 {
                return Err(invalid("host_tap.boards must be at least 1".into()));
            }
            if h.board_cidr(h.boards - 1).is_none() {
                return Err(invalid(format!(
                    "host_tap.boards = {} does not fit the subnet of board_ip {}",
                    h.boards, h.board_ip
                )));
            }
            let host = parse_cidr(&h.host_ip).map(|(a, _)| a);
            if (0..h.boards)
                .any(|i| h.board_cidr(i).and_then(|c| parse_cidr(&c)).map(|(a, _)| a) == host)
            {
                return Err(invalid(
                    "host_tap.host_ip is one of the boards' addresses".into(),
                ));
            }
        }
        for name in &rig.scenarios {
            let Some(known) = crate::catalog::find(name) else {
                return Err(invalid(format!(
                    "unknown scenario `{name}` (see `hil-tests list`)"
                )));
            };
            if known.fleet && rig.kind != Kind::HostTap {
                return Err(invalid(format!(
                    "scenario `{name}` needs a host-tap rig (a namespace with a bridge)"
                )));
            }
        }
        if rig.upload_run_s == 0 {
            return Err(invalid("upload_run_s must be > 0".into()));
        }
        if rig.cut_off_s == 0 {
            return Err(invalid("cut_off_s must be > 0".into()));
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
        assert_eq!(tap.host_tap.as_ref().unwrap().tap(0), "tap0");
        assert_eq!(tap.scenarios, ["basic"]);
        let ci = Rig::load(&rigs_dir(), "ci").unwrap();
        let h = ci.host_tap.as_ref().unwrap();
        assert_eq!((h.boards, h.bridge.as_str()), (16, "br0"));
        assert_eq!(h.board_cidr(15).unwrap(), "198.51.100.17/24");
        assert!(ci.qemu.is_some());
        assert_eq!((ci.upload_run_s, ci.cut_off_s), (60, 90));
        assert!(
            ci.scenarios
                .iter()
                .all(|s| crate::catalog::find(s).is_some())
        );
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
                    login_timeout_s = 5\n[host_tap]\nbinary = \"b\"\ntap_prefix = \"tap\"\nhost_ip = \"198.51.100.1\"\n\
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

    #[test]
    fn fleets_fit_their_subnet_and_name_known_scenarios() {
        let base = "name = \"t\"\nkind = \"host-tap\"\ndevice_id = 1\ntransports = [\"udp\"]\nmeter_ms = 1000\n\
                    login_timeout_s = 5\n[host_tap]\nbinary = \"b\"\ntap_prefix = \"tap\"\nhost_ip = \"198.51.100.1/24\"\n";
        let parse = |extra: &str| Rig::parse(Path::new("t.toml"), &format!("{base}{extra}"));
        let rig = parse("board_ip = \"198.51.100.250/24\"\nboards = 5\n").unwrap();
        assert_eq!(
            rig.host_tap.unwrap().board_cidr(4).unwrap(),
            "198.51.100.254/24"
        );
        let e = parse("board_ip = \"198.51.100.250/24\"\nboards = 6\n").unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = parse("board_ip = \"198.51.100.1/24\"\n").unwrap_err();
        assert!(e.to_string().contains("host_ip is one of"), "{e}");
        let e = parse("board_ip = \"198.51.100.2/24\"\nboards = 0\n").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let text = format!("{base}board_ip = \"198.51.100.2/24\"\n").replace(
            "login_timeout_s = 5",
            "login_timeout_s = 5\nscenarios = [\"no-such\"]",
        );
        let e = Rig::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("unknown scenario `no-such`"), "{e}");
        let qemu = "name = \"q\"\nkind = \"qemu\"\ndevice_id = 1\ntransports = [\"udp\"]\nmeter_ms = 1000\n\
                    login_timeout_s = 5\nscenarios = [\"boot-online\"]\n[qemu]\nelf = \"e\"\nmachine = \"m\"\ncpu = \"c\"\nbroker_host = \"10.0.2.2\"\n";
        let e = Rig::parse(Path::new("q.toml"), qemu).unwrap_err();
        assert!(e.to_string().contains("needs a host-tap rig"), "{e}");
    }
}
