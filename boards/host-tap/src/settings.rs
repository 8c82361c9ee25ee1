//! Boot settings of the host TAP board, read from the process environment at start-up.
//!
//! The provisioning (identity, brokers, transport preference) is the same binary record every
//! board reads (`plug_app::record`, docs/flashing.md); this board reads it from the file named
//! by `PLUG_RECORD` instead of a flash region. Everything else is a run option of this board
//! (which TAP device, which static address). Everything is validated here, before the network
//! comes up, so a bad record or value ends the process with a message naming it; the board
//! never logs in with it.
//!
//! | variable | meaning |
//! |---|---|
//! | `PLUG_RECORD` | path of the provisioning record (`broker device-key --record FILE`; required) |
//! | `PLUG_METER_MS` | interval of `power` uploads, ms (default 60000, 0 = off) |
//! | `PLUG_EXIT_AFTER_S` | exit with status 0 after this many seconds (default: run forever) |
//! | `PLUG_TAP` | TAP device to open (default `tap0`; it must exist and be up) |
//! | `PLUG_IP` | the board's address, `a.b.c.d/prefix` (required: the test LAN has no DHCP) |
//! | `PLUG_GATEWAY` | default gateway, `a.b.c.d` (optional) |
//! | `PLUG_MAC` | MAC address `aa:bb:cc:dd:ee:ff` (default: locally administered, from the id) |
//! | `PLUG_FLASH` | file of the emulated flash keeping the boot counter and since_id (optional; created erased) |

use std::collections::HashMap;
use std::net::Ipv4Addr;

use plug_app::Provisioning;
use plug_app::record::TransportPreference;

/// Interval of `power` uploads when `PLUG_METER_MS` is not set.
pub const DEFAULT_METER_MS: u64 = 60_000;
/// TAP device when `PLUG_TAP` is not set.
pub const DEFAULT_TAP: &str = "tap0";

/// Everything the board needs to boot.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Identity and brokers (already narrowed to `PLUG_TRANSPORT`).
    pub provisioning: Provisioning,
    /// `udp`, `ws` or `both`.
    pub transport: &'static str,
    /// Interval of `power` uploads, ms.
    pub meter_ms: u64,
    /// Exit after this many seconds.
    pub exit_after_s: Option<u64>,
    /// TAP device name.
    pub tap: String,
    /// Static address and prefix length.
    pub ip: (Ipv4Addr, u8),
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Ethernet address.
    pub mac: [u8; 6],
    /// The persistent area's file (`crate::flash_file`), if any.
    pub flash: Option<std::path::PathBuf>,
}

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong, and the expected format.
    pub reason: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for SettingsError {}

fn error(variable: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        reason: reason.into(),
    }
}

impl Settings {
    /// Reads the settings from `vars` (the process environment in `main`) and the record file.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("PLUG_"))
            .collect();
        let get = |key: &str| vars.get(key).map(String::as_str);
        let number = |key: &'static str| -> Result<Option<u64>, SettingsError> {
            get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| error(key, format!("`{v}` is not a number")))
                })
                .transpose()
        };

        let Some(path) = get("PLUG_RECORD") else {
            return Err(error(
                "PLUG_RECORD",
                "not set: give the path of the provisioning record (broker device-key --record FILE)",
            ));
        };
        let bytes = std::fs::read(path)
            .map_err(|e| error("PLUG_RECORD", format!("cannot read {path}: {e}")))?;
        // The client keeps the record's strings (WebSocket host and path): they live as long
        // as the process.
        let provisioned = plug_app::provisioning_from_record(Box::leak(bytes.into_boxed_slice()))
            .map_err(|e| error("PLUG_RECORD", format!("{path}: {e}")))?;
        let provisioning = provisioned.provisioning;
        let transport = match provisioned.transport {
            TransportPreference::Udp => "udp",
            TransportPreference::Ws => "ws",
            TransportPreference::Both => "both",
        };

        let ip = match get("PLUG_IP") {
            None => {
                return Err(error(
                    "PLUG_IP",
                    "not set: give the board's address as a.b.c.d/prefix",
                ));
            }
            Some(v) => parse_cidr(v)
                .ok_or_else(|| error("PLUG_IP", format!("`{v}` is not a.b.c.d/prefix")))?,
        };
        let gateway = get("PLUG_GATEWAY")
            .map(|v| {
                v.parse()
                    .map_err(|_| error("PLUG_GATEWAY", format!("`{v}` is not a.b.c.d")))
            })
            .transpose()?;
        let mac = match get("PLUG_MAC") {
            Some(v) => parse_mac(v)
                .ok_or_else(|| error("PLUG_MAC", format!("`{v}` is not aa:bb:cc:dd:ee:ff")))?,
            None => {
                let id = provisioning.device_id.to_be_bytes();
                // Locally administered, unicast (0x02), unique per device id on the test LAN.
                [0x02, 0x50, id[0], id[1], id[2], id[3]]
            }
        };
        Ok(Settings {
            provisioning,
            transport,
            meter_ms: number("PLUG_METER_MS")?.unwrap_or(DEFAULT_METER_MS),
            exit_after_s: number("PLUG_EXIT_AFTER_S")?,
            tap: get("PLUG_TAP").unwrap_or(DEFAULT_TAP).to_owned(),
            ip,
            gateway,
            mac,
            flash: get("PLUG_FLASH").map(std::path::PathBuf::from),
        })
    }
}

/// `a.b.c.d/prefix` with the prefix in `0..=32`.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr.parse().ok()?, prefix))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plug_app::record::RecordError;
    use shared_protocol::provision::{MAX_RECORD_LEN, Record, WsEndpoint};

    /// Writes a record with `transport` to a file of its own; its path.
    fn record_file(name: &str, transport: TransportPreference, corrupt: bool) -> String {
        let record = Record {
            device_id: 77,
            key: [0x11; 32],
            transport,
            udp: Some("198.51.100.1:7000".parse().unwrap()),
            ws: Some(WsEndpoint {
                addr: "198.51.100.1:7001".parse().unwrap(),
                host: "198.51.100.1:7001",
                path: "/device",
            }),
            lookup: None,
            seed: [3; 16],
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = record.encode(&mut buf).unwrap();
        if corrupt {
            buf[20] ^= 1;
        }
        let path = std::env::temp_dir().join(format!(
            "host-tap-settings-{}-{name}.bin",
            std::process::id()
        ));
        std::fs::write(&path, &buf[..len]).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn vars(record: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("PLUG_RECORD", record),
            ("PLUG_IP", "198.51.100.2/24"),
            ("HOME", "/ignored"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in extra {
            v.retain(|(key, _)| key != k);
            v.push((k.to_string(), val.to_string()));
        }
        v
    }

    #[test]
    fn defaults_use_both_brokers_and_derive_the_mac_from_the_id() {
        let record = record_file("both", TransportPreference::Both, false);
        let s = Settings::from_vars(vars(&record, &[])).unwrap();
        assert_eq!(s.provisioning.device_id, 77);
        assert_eq!(s.provisioning.key, [0x11; 32]);
        assert_eq!(s.transport, "both");
        assert!(s.provisioning.udp.is_some() && s.provisioning.ws.is_some());
        assert_eq!(s.ip, (Ipv4Addr::new(198, 51, 100, 2), 24));
        assert_eq!(s.mac, [0x02, 0x50, 0, 0, 0, 77]);
        assert_eq!(s.tap, DEFAULT_TAP);
        assert_eq!(s.meter_ms, DEFAULT_METER_MS);
        assert_eq!(s.exit_after_s, None);
    }

    #[test]
    fn the_record_transport_narrows_the_brokers() {
        let record = record_file("ws", TransportPreference::Ws, false);
        let s = Settings::from_vars(vars(&record, &[])).unwrap();
        assert_eq!(s.transport, "ws");
        assert!(s.provisioning.udp.is_none() && s.provisioning.ws.is_some());
    }

    #[test]
    fn a_missing_or_bad_record_is_refused_with_its_error() {
        let e = Settings::from_vars(vars("/nonexistent/record.bin", &[])).unwrap_err();
        assert_eq!(e.variable, "PLUG_RECORD");
        let mut no_record = vars("x", &[]);
        no_record.retain(|(k, _)| k != "PLUG_RECORD");
        assert_eq!(
            Settings::from_vars(no_record).unwrap_err().variable,
            "PLUG_RECORD"
        );
        let corrupt = record_file("corrupt", TransportPreference::Both, true);
        let e = Settings::from_vars(vars(&corrupt, &[])).unwrap_err();
        assert_eq!(e.variable, "PLUG_RECORD");
        assert!(
            e.reason.ends_with(&RecordError::BadChecksum.to_string()),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let record = record_file("bad-values", TransportPreference::Both, false);
        for (key, value) in [
            ("PLUG_IP", "198.51.100.2"),
            ("PLUG_IP", "198.51.100.2/33"),
            ("PLUG_GATEWAY", "nowhere"),
            ("PLUG_MAC", "02:00:00:00:00"),
            ("PLUG_METER_MS", "soon"),
        ] {
            let e = Settings::from_vars(vars(&record, &[(key, value)])).unwrap_err();
            assert_eq!(e.variable, key, "{key}={value}");
        }
    }

    #[test]
    fn parses_mac_and_cidr() {
        assert_eq!(
            parse_mac("02:ab:CD:00:01:ff"),
            Some([2, 0xab, 0xcd, 0, 1, 0xff])
        );
        assert_eq!(parse_mac("02:ab:cd:00:01:ff:00"), None);
        assert_eq!(parse_mac("2:ab:cd:00:01:ff"), None);
        assert_eq!(
            parse_cidr("10.0.0.1/8"),
            Some((Ipv4Addr::new(10, 0, 0, 1), 8))
        );
        assert_eq!(parse_cidr("10.0.0.1/x"), None);
    }
}
