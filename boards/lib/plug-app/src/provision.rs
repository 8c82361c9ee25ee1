//! Provisioning from build-time environment variables, checked at compile time.
//!
//! A board binary calls [`provisioning!`](crate::provisioning) once; it expands to a `const`
//! [`Provisioning`] read with `option_env!` from:
//!
//! | variable | required | format |
//! |---|---|---|
//! | `PLUG_DEVICE_ID` | yes | decimal, `1..=4294967295` |
//! | `PLUG_DEVICE_KEY` | yes | 64 hex digits (the 32-byte device key) |
//! | `PLUG_BROKER_UDP` | one of the two | `a.b.c.d:port` |
//! | `PLUG_BROKER_WS` | one of the two | `a.b.c.d:port` (tried after the UDP one) |
//! | `PLUG_BROKER_WS_HOST` | no | `Host` header of the WebSocket upgrade (default: the address) |
//! | `PLUG_BROKER_WS_PATH` | no | request path (default [`DEFAULT_WS_PATH`]) |
//! | `PLUG_LOOKUP` | no | `a.b.c.d:port` of the broker's HTTP API: ask its node lookup first (the brokers above are then the fallback) |
//!
//! A missing or malformed value stops the build with the variable's name (the parsers are
//! `const fn`s evaluated in a `const` item); nothing is ever hard-coded in a board or the SDK.
//! cargo rebuilds the board when one of them changes (`option_env!` is tracked).

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use firmware::Endpoint;

/// Request path of the WebSocket upgrade when `PLUG_BROKER_WS_PATH` is not set.
pub const DEFAULT_WS_PATH: &str = "/device";

/// Why a provisioning value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProvisionError {
    /// `PLUG_DEVICE_ID` is not set.
    MissingDeviceId,
    /// `PLUG_DEVICE_ID` is not a decimal number in `1..=u32::MAX`.
    BadDeviceId,
    /// `PLUG_DEVICE_KEY` is not set.
    MissingKey,
    /// `PLUG_DEVICE_KEY` is not exactly 64 hex digits.
    BadKey,
    /// Neither `PLUG_BROKER_UDP` nor `PLUG_BROKER_WS` is set.
    NoBroker,
    /// `PLUG_BROKER_UDP` is not `a.b.c.d:port`.
    BadUdpBroker,
    /// `PLUG_BROKER_WS` is not `a.b.c.d:port`.
    BadWsBroker,
    /// `PLUG_BROKER_WS_PATH` does not start with `/`.
    BadWsPath,
    /// `PLUG_LOOKUP` is not `a.b.c.d:port`.
    BadLookup,
}

impl ProvisionError {
    /// A message naming the variable and the expected format (shown by the compiler).
    pub const fn message(self) -> &'static str {
        match self {
            Self::MissingDeviceId => {
                "PLUG_DEVICE_ID is not set: build with PLUG_DEVICE_ID=<decimal id> (docs/flashing.md)"
            }
            Self::BadDeviceId => "PLUG_DEVICE_ID must be a decimal number in 1..=4294967295",
            Self::MissingKey => {
                "PLUG_DEVICE_KEY is not set: build with PLUG_DEVICE_KEY=<64 hex digits> (docs/flashing.md)"
            }
            Self::BadKey => "PLUG_DEVICE_KEY must be exactly 64 hex digits (32 bytes)",
            Self::NoBroker => "set PLUG_BROKER_UDP and/or PLUG_BROKER_WS (a.b.c.d:port)",
            Self::BadUdpBroker => "PLUG_BROKER_UDP must be a.b.c.d:port (IPv4, port 1..=65535)",
            Self::BadWsBroker => "PLUG_BROKER_WS must be a.b.c.d:port (IPv4, port 1..=65535)",
            Self::BadWsPath => "PLUG_BROKER_WS_PATH must start with '/'",
            Self::BadLookup => "PLUG_LOOKUP must be a.b.c.d:port (the broker's HTTP API)",
        }
    }
}

/// The WebSocket broker: address, `Host` header and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsBroker {
    /// Address of the broker's WebSocket listener.
    pub addr: SocketAddrV4,
    /// `Host` header value (the address text when not provisioned).
    pub host: &'static str,
    /// Request path.
    pub path: &'static str,
}

/// A device's identity and brokers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Provisioning {
    /// Device id (`plug` profile).
    pub device_id: u32,
    /// The 32-byte device key.
    pub key: [u8; 32],
    /// UDP broker, tried first.
    pub udp: Option<SocketAddrV4>,
    /// WebSocket broker, tried after the UDP one (failover).
    pub ws: Option<WsBroker>,
    /// The broker's HTTP API for the node lookup, and its text (the `Host` header).
    pub lookup: Option<(SocketAddrV4, &'static str)>,
}

impl core::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provisioning")
            .field("device_id", &self.device_id)
            .field("key", &"<redacted>")
            .field("udp", &self.udp)
            .field("ws", &self.ws)
            .field("lookup", &self.lookup)
            .finish()
    }
}

/// Evaluates `result` at compile time (inside a `const`), stopping the build with its message.
macro_rules! tri {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => return Err(e),
        }
    };
}

impl Provisioning {
    /// Parses the raw variable values (`None` = not set).
    pub const fn parse(
        device_id: Option<&str>,
        key: Option<&str>,
        udp: Option<&str>,
        ws: Option<&'static str>,
        ws_host: Option<&'static str>,
        ws_path: Option<&'static str>,
    ) -> Result<Self, ProvisionError> {
        let device_id = match device_id {
            Some(text) => tri!(parse_device_id(text)),
            None => return Err(ProvisionError::MissingDeviceId),
        };
        let key = match key {
            Some(text) => tri!(parse_key(text)),
            None => return Err(ProvisionError::MissingKey),
        };
        let udp = match udp {
            Some(text) => match parse_socket_addr(text.as_bytes()) {
                Some(addr) => Some(addr),
                None => return Err(ProvisionError::BadUdpBroker),
            },
            None => None,
        };
        let ws = match ws {
            Some(text) => {
                let Some(addr) = parse_socket_addr(text.as_bytes()) else {
                    return Err(ProvisionError::BadWsBroker);
                };
                let path = match ws_path {
                    Some(path) => path,
                    None => DEFAULT_WS_PATH,
                };
                if path.is_empty() || path.as_bytes()[0] != b'/' {
                    return Err(ProvisionError::BadWsPath);
                }
                let host = match ws_host {
                    Some(host) => host,
                    None => text,
                };
                Some(WsBroker { addr, host, path })
            }
            None => None,
        };
        if udp.is_none() && ws.is_none() {
            return Err(ProvisionError::NoBroker);
        }
        Ok(Provisioning {
            device_id,
            key,
            udp,
            ws,
            lookup: None,
        })
    }

    /// Adds the node lookup from `PLUG_LOOKUP` (`None`: no lookup).
    pub const fn with_lookup(
        mut self,
        lookup: Option<&'static str>,
    ) -> Result<Self, ProvisionError> {
        self.lookup = match lookup {
            Some(text) => match parse_socket_addr(text.as_bytes()) {
                Some(addr) => Some((addr, text)),
                None => return Err(ProvisionError::BadLookup),
            },
            None => None,
        };
        Ok(self)
    }

    /// The client's lookup configuration: dial the looked-up nodes over the transports this
    /// device was provisioned with.
    pub fn lookup_config(&self) -> Option<firmware::lookup::LookupConfig<'static>> {
        self.lookup
            .map(|(addr, host)| firmware::lookup::LookupConfig {
                addr: SocketAddr::V4(addr),
                host,
                udp: self.udp.is_some(),
                ws: self.ws.is_some(),
            })
    }

    /// Like [`Provisioning::parse`], panicking with the error's message: in a `const` item this
    /// is a compile error that names the variable.
    pub const fn parse_or_panic(
        device_id: Option<&str>,
        key: Option<&str>,
        udp: Option<&str>,
        ws: Option<&'static str>,
        ws_host: Option<&'static str>,
        ws_path: Option<&'static str>,
    ) -> Self {
        match Self::parse(device_id, key, udp, ws, ws_host, ws_path) {
            Ok(provisioning) => provisioning,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// [`Provisioning::with_lookup`], panicking with the error's message (compile time).
    pub const fn with_lookup_or_panic(self, lookup: Option<&'static str>) -> Self {
        match self.with_lookup(lookup) {
            Ok(provisioning) => provisioning,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// The brokers in the order the client tries them: UDP first, then WebSocket.
    pub fn endpoints(&self) -> heapless::Vec<Endpoint<'static>, 2> {
        let mut endpoints = heapless::Vec::new();
        if let Some(addr) = self.udp {
            // Capacity 2 holds both kinds; the pushes cannot fail.
            let _ = endpoints.push(Endpoint::udp(SocketAddr::V4(addr)));
        }
        if let Some(ws) = self.ws {
            let _ = endpoints.push(Endpoint::websocket(
                SocketAddr::V4(ws.addr),
                ws.host,
                ws.path,
            ));
        }
        endpoints
    }
}

/// The board's provisioning from the build environment, as a `const` (a missing or bad value
/// is a compile error). Use once in the board binary.
#[macro_export]
macro_rules! provisioning {
    () => {{
        const PROVISIONING: $crate::provision::Provisioning =
            $crate::provision::Provisioning::parse_or_panic(
                option_env!("PLUG_DEVICE_ID"),
                option_env!("PLUG_DEVICE_KEY"),
                option_env!("PLUG_BROKER_UDP"),
                option_env!("PLUG_BROKER_WS"),
                option_env!("PLUG_BROKER_WS_HOST"),
                option_env!("PLUG_BROKER_WS_PATH"),
            )
            .with_lookup_or_panic(option_env!("PLUG_LOOKUP"));
        PROVISIONING
    }};
}

/// A decimal device id in `1..=u32::MAX`.
pub const fn parse_device_id(text: &str) -> Result<u32, ProvisionError> {
    match parse_decimal(text.as_bytes(), u32::MAX as u64) {
        Some(0) | None => Err(ProvisionError::BadDeviceId),
        Some(id) => Ok(id as u32),
    }
}

/// A 32-byte key from exactly 64 hex digits (either case).
pub const fn parse_key(text: &str) -> Result<[u8; 32], ProvisionError> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(ProvisionError::BadKey);
    }
    let mut key = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        let (Some(high), Some(low)) = (hex_digit(bytes[2 * i]), hex_digit(bytes[2 * i + 1])) else {
            return Err(ProvisionError::BadKey);
        };
        key[i] = (high << 4) | low;
        i += 1;
    }
    Ok(key)
}

/// `a.b.c.d:port` with each octet `0..=255` and the port `1..=65535`.
pub const fn parse_socket_addr(text: &[u8]) -> Option<SocketAddrV4> {
    let mut octets = [0u8; 4];
    let mut rest = text;
    let mut index = 0;
    while index < 4 {
        let separator = if index < 3 { b'.' } else { b':' };
        let Some(end) = find(rest, separator) else {
            return None;
        };
        let (field, tail) = rest.split_at(end);
        let Some(value) = parse_decimal(field, 255) else {
            return None;
        };
        octets[index] = value as u8;
        let (_, after) = tail.split_at(1);
        rest = after;
        index += 1;
    }
    match parse_decimal(rest, u16::MAX as u64) {
        Some(0) | None => None,
        Some(port) => Some(SocketAddrV4::new(
            Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            port as u16,
        )),
    }
}

/// A non-empty decimal number of at most 10 digits, no larger than `max`.
const fn parse_decimal(digits: &[u8], max: u64) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut value: u64 = 0;
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (d - b'0') as u64;
        i += 1;
    }
    if value > max { None } else { Some(value) }
}

/// Position of the first `byte` in `haystack`.
const fn find(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i] == byte {
            return Some(i);
        }
        i += 1;
    }
    None
}

const fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::TransportKind;

    /// Device id, key, UDP broker, WebSocket broker, and the error they must give.
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        ProvisionError,
    );

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

    #[test]
    fn parses_a_full_provisioning() {
        let p = Provisioning::parse(
            Some("42"),
            Some(KEY),
            Some("192.0.2.10:7000"),
            Some("192.0.2.11:8080"),
            Some("broker.test"),
            Some("/dev"),
        )
        .unwrap();
        assert_eq!(p.device_id, 42);
        assert_eq!(p.key[0], 0x00);
        assert_eq!(p.key[26], 0x1a);
        assert_eq!(p.key[31], 0x1f);
        let endpoints = p.endpoints();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].addr, "192.0.2.10:7000".parse().unwrap());
        assert_eq!(endpoints[0].transport, TransportKind::Udp);
        assert_eq!(endpoints[1].addr, "192.0.2.11:8080".parse().unwrap());
        assert_eq!(
            endpoints[1].transport,
            TransportKind::WebSocket {
                host: "broker.test",
                path: "/dev"
            }
        );
    }

    #[test]
    fn websocket_defaults_host_to_the_address_and_path_to_device() {
        let p = Provisioning::parse(Some("1"), Some(KEY), None, Some("10.0.0.1:80"), None, None)
            .unwrap();
        let endpoints = p.endpoints();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints[0].transport,
            TransportKind::WebSocket {
                host: "10.0.0.1:80",
                path: DEFAULT_WS_PATH
            }
        );
    }

    #[test]
    fn names_what_is_missing_or_malformed() {
        let udp = Some("10.0.0.1:7000");
        let cases: [Case; 9] = [
            (None, Some(KEY), udp, None, ProvisionError::MissingDeviceId),
            (Some("0"), Some(KEY), udp, None, ProvisionError::BadDeviceId),
            (
                Some("4294967296"),
                Some(KEY),
                udp,
                None,
                ProvisionError::BadDeviceId,
            ),
            (
                Some("-1"),
                Some(KEY),
                udp,
                None,
                ProvisionError::BadDeviceId,
            ),
            (Some("7"), None, udp, None, ProvisionError::MissingKey),
            (
                Some("7"),
                Some(&KEY[1..]),
                udp,
                None,
                ProvisionError::BadKey,
            ),
            (Some("7"), Some(KEY), None, None, ProvisionError::NoBroker),
            (
                Some("7"),
                Some(KEY),
                Some("10.0.0.1"),
                None,
                ProvisionError::BadUdpBroker,
            ),
            (
                Some("7"),
                Some(KEY),
                None,
                Some("10.0.0:80"),
                ProvisionError::BadWsBroker,
            ),
        ];
        for (id, key, udp, ws, expected) in cases {
            assert_eq!(
                Provisioning::parse(id, key, udp, ws, None, None),
                Err(expected),
                "{id:?} {udp:?} {ws:?}"
            );
        }
        assert_eq!(
            Provisioning::parse(
                Some("7"),
                Some(KEY),
                None,
                Some("1.2.3.4:5"),
                None,
                Some("x")
            ),
            Err(ProvisionError::BadWsPath)
        );
        let mut bad_hex = std::string::String::from(KEY);
        bad_hex.replace_range(10..11, "g");
        assert_eq!(parse_key(&bad_hex), Err(ProvisionError::BadKey));
    }

    #[test]
    fn socket_addresses_check_every_field() {
        assert_eq!(
            parse_socket_addr(b"255.255.255.255:65535"),
            Some(SocketAddrV4::new(Ipv4Addr::BROADCAST, 65535))
        );
        for bad in [
            &b"256.0.0.1:1"[..],
            b"1.2.3.4:0",
            b"1.2.3.4:65536",
            b"1.2.3:4",
            b"1.2.3.4.5:6",
            b"1..3.4:5",
            b"1.2.3.4:",
            b"",
            b"a.b.c.d:1",
        ] {
            assert_eq!(
                parse_socket_addr(bad),
                None,
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn parse_or_panic_evaluates_in_a_const() {
        const P: Provisioning = Provisioning::parse_or_panic(
            Some("9"),
            Some(KEY),
            Some("127.0.0.1:9"),
            None,
            None,
            None,
        );
        assert_eq!(P.device_id, 9);
        assert_eq!(P.udp, Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9)));
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let p =
            Provisioning::parse(Some("1"), Some(KEY), Some("1.2.3.4:5"), None, None, None).unwrap();
        let text = std::format!("{p:?}");
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("1a1b"));
    }

    #[test]
    fn lookup_is_optional_and_checked() {
        let key = "00".repeat(32);
        let base = Provisioning::parse(
            Some("7"),
            Some(&key),
            Some("192.0.2.10:7000"),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(base.with_lookup(None).unwrap().lookup_config(), None);
        let p = base.with_lookup(Some("192.0.2.1:8080")).unwrap();
        let c = p.lookup_config().unwrap();
        assert_eq!(c.addr, "192.0.2.1:8080".parse().unwrap());
        assert_eq!(c.host, "192.0.2.1:8080");
        // Looked-up nodes are dialled over the provisioned transports only.
        assert!(c.udp && !c.ws);
        assert_eq!(
            base.with_lookup(Some("api.example:80")),
            Err(ProvisionError::BadLookup)
        );
    }
}
