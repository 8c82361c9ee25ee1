//! The device provisioning record: a device's identity, brokers and entropy seed, written
//! once per plug into a dedicated flash region (docs/flashing.md has the byte table and where
//! the region lives on each board).
//!
//! One firmware image serves every plug of a board type: the image holds no key; the board
//! reads this record at boot. `broker device-key --record` writes it with [`Record::encode`] and
//! the firmware reads it with [`Record::parse`], so both sides share this one codec. It is
//! independent of the wire protocol (no type here is sent on the network).
//!
//! Parsing is total: any byte string gives a [`Record`] or a [`RecordError`], never a panic.
//! Integers are little-endian; IPv4 addresses are in network order; the record ends with a
//! CRC-32 (ISO-HDLC, the zlib/Ethernet CRC) of every byte before it.

use core::net::{Ipv4Addr, SocketAddrV4};

/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"PLPR";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the variable-length strings.
pub const FIXED_LEN: usize = 82;
/// Bytes of the trailing checksum.
pub const CRC_LEN: usize = 4;
/// Longest WebSocket host, WebSocket path or lookup host, in bytes.
pub const MAX_TEXT_LEN: usize = 64;
/// Longest record: the fixed part, three strings of [`MAX_TEXT_LEN`] and the checksum.
pub const MAX_RECORD_LEN: usize = FIXED_LEN + 3 * MAX_TEXT_LEN + CRC_LEN;

const FLAG_UDP: u8 = 1 << 0;
const FLAG_WS: u8 = 1 << 1;
const FLAG_LOOKUP: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_UDP | FLAG_WS | FLAG_LOOKUP;

/// CRC-32/ISO-HDLC, the checksum the record ends with.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Which of the provisioned brokers the device dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransportPreference {
    /// UDP first, then WebSocket (each one that is provisioned).
    Both = 0,
    /// The UDP broker only.
    Udp = 1,
    /// The WebSocket broker only.
    Ws = 2,
}

impl TransportPreference {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Both),
            1 => Some(Self::Udp),
            2 => Some(Self::Ws),
            _ => None,
        }
    }
}

/// The WebSocket broker: address, `Host` header and request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsEndpoint<'a> {
    /// Address of the broker's WebSocket listener.
    pub addr: SocketAddrV4,
    /// `Host` header of the upgrade request (1 to [`MAX_TEXT_LEN`] bytes of UTF-8).
    pub host: &'a str,
    /// Request path, starting with `/` (at most [`MAX_TEXT_LEN`] bytes).
    pub path: &'a str,
}

/// The broker's HTTP API, asked for the node to dial before the brokers above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupEndpoint<'a> {
    /// Address of the HTTP API.
    pub addr: SocketAddrV4,
    /// `Host` header of the request (1 to [`MAX_TEXT_LEN`] bytes of UTF-8).
    pub host: &'a str,
}

/// One device's provisioning. Strings borrow from the record bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Device id, non-zero.
    pub device_id: u32,
    /// The 32-byte device key.
    pub key: [u8; 32],
    /// Which brokers to dial.
    pub transport: TransportPreference,
    /// The UDP broker.
    pub udp: Option<SocketAddrV4>,
    /// The WebSocket broker.
    pub ws: Option<WsEndpoint<'a>>,
    /// The node lookup (optional).
    pub lookup: Option<LookupEndpoint<'a>>,
    /// Per-device entropy seed (boards without a hardware generator mix it into theirs).
    pub seed: [u8; 16],
}

impl core::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Record")
            .field("device_id", &self.device_id)
            .field("key", &"<redacted>")
            .field("transport", &self.transport)
            .field("udp", &self.udp)
            .field("ws", &self.ws)
            .field("lookup", &self.lookup)
            .field("seed", &"<redacted>")
            .finish()
    }
}

/// Why bytes are not a valid record, or a record cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecordError {
    /// Fewer bytes than the fixed part and checksum, or than the record's length field says.
    Truncated,
    /// The first four bytes are not [`MAGIC`] (an erased or never-written region reads so).
    BadMagic,
    /// A format version this code does not read.
    UnsupportedVersion(u8),
    /// The length field disagrees with the string lengths, or exceeds [`MAX_RECORD_LEN`].
    BadLength,
    /// The CRC-32 does not match the bytes.
    BadChecksum,
    /// Flag bits this version does not define, or a non-zero reserved byte.
    BadFlags,
    /// The device id is zero.
    InvalidDeviceId,
    /// The transport preference byte is not 0, 1 or 2.
    BadTransport,
    /// No broker is provisioned for the chosen transport preference.
    NoBroker,
    /// An endpoint has port 0.
    BadEndpoint,
    /// A WebSocket host or lookup host is empty, too long or not UTF-8.
    BadHost,
    /// The WebSocket path does not start with `/`, is too long or not UTF-8.
    BadPath,
    /// A string is present although its endpoint is not (or the reverse).
    UnexpectedText,
    /// The output buffer is smaller than the record (encoding only).
    BufferTooSmall,
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("provisioning record truncated"),
            Self::BadMagic => f.write_str("no provisioning record (bad magic)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "provisioning record format version {v} is not supported")
            }
            Self::BadLength => f.write_str("provisioning record has a bad length"),
            Self::BadChecksum => f.write_str("provisioning record checksum mismatch"),
            Self::BadFlags => f.write_str("provisioning record has unknown flags"),
            Self::InvalidDeviceId => f.write_str("provisioning record has device id 0"),
            Self::BadTransport => f.write_str("provisioning record has an unknown transport"),
            Self::NoBroker => f.write_str("provisioning record has no broker for its transport"),
            Self::BadEndpoint => f.write_str("provisioning record has an endpoint with port 0"),
            Self::BadHost => f.write_str("provisioning record has a bad host"),
            Self::BadPath => f.write_str("provisioning record has a bad WebSocket path"),
            Self::UnexpectedText => f.write_str("provisioning record has a stray string"),
            Self::BufferTooSmall => f.write_str("buffer too small for the provisioning record"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RecordError {}

fn read_endpoint(bytes: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
        u16::from_le_bytes([bytes[4], bytes[5]]),
    )
}

fn write_endpoint(out: &mut [u8], addr: Option<SocketAddrV4>) {
    let (ip, port) = addr.map_or(([0; 4], 0), |a| (a.ip().octets(), a.port()));
    out[..4].copy_from_slice(&ip);
    out[4..6].copy_from_slice(&port.to_le_bytes());
}

fn check_endpoint(addr: SocketAddrV4) -> Result<SocketAddrV4, RecordError> {
    if addr.port() == 0 {
        Err(RecordError::BadEndpoint)
    } else {
        Ok(addr)
    }
}

fn check_host(text: &[u8]) -> Result<&str, RecordError> {
    if text.is_empty() || text.len() > MAX_TEXT_LEN {
        return Err(RecordError::BadHost);
    }
    core::str::from_utf8(text).map_err(|_| RecordError::BadHost)
}

fn check_path(text: &[u8]) -> Result<&str, RecordError> {
    if text.first() != Some(&b'/') || text.len() > MAX_TEXT_LEN {
        return Err(RecordError::BadPath);
    }
    core::str::from_utf8(text).map_err(|_| RecordError::BadPath)
}

impl<'a> Record<'a> {
    /// Reads a record from the start of `bytes` (trailing bytes, e.g. the rest of a flash page,
    /// are ignored). Checks magic, version, length and checksum before any field.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        if bytes.len() < 4 {
            return Err(RecordError::Truncated);
        }
        if bytes[..4] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        if bytes.len() < 8 {
            return Err(RecordError::Truncated);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(RecordError::UnsupportedVersion(bytes[4]));
        }
        let len = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
        if !(FIXED_LEN + CRC_LEN..=MAX_RECORD_LEN).contains(&len) {
            return Err(RecordError::BadLength);
        }
        if bytes.len() < len {
            return Err(RecordError::Truncated);
        }
        let (body, crc) = bytes[..len].split_at(len - CRC_LEN);
        if CRC32.checksum(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(RecordError::BadChecksum);
        }
        let (host_len, path_len, lookup_len) = (
            usize::from(body[61]),
            usize::from(body[62]),
            usize::from(body[63]),
        );
        if FIXED_LEN + host_len + path_len + lookup_len != body.len() {
            return Err(RecordError::BadLength);
        }
        let flags = body[5];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(RecordError::BadFlags);
        }
        let device_id = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if device_id == 0 {
            return Err(RecordError::InvalidDeviceId);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&body[12..44]);
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&body[44..60]);
        let transport =
            TransportPreference::from_byte(body[60]).ok_or(RecordError::BadTransport)?;
        let (host, rest) = body[FIXED_LEN..].split_at(host_len);
        let (path, lookup_host) = rest.split_at(path_len);

        let udp = match flags & FLAG_UDP {
            0 => None,
            _ => Some(check_endpoint(read_endpoint(&body[64..70]))?),
        };
        let ws = match flags & FLAG_WS {
            0 if host_len + path_len != 0 => return Err(RecordError::UnexpectedText),
            0 => None,
            _ => Some(WsEndpoint {
                addr: check_endpoint(read_endpoint(&body[70..76]))?,
                host: check_host(host)?,
                path: check_path(path)?,
            }),
        };
        let lookup = match flags & FLAG_LOOKUP {
            0 if lookup_len != 0 => return Err(RecordError::UnexpectedText),
            0 => None,
            _ => Some(LookupEndpoint {
                addr: check_endpoint(read_endpoint(&body[76..82]))?,
                host: check_host(lookup_host)?,
            }),
        };
        let record = Record {
            device_id,
            key,
            transport,
            udp,
            ws,
            lookup,
            seed,
        };
        record.check_brokers()?;
        Ok(record)
    }

    /// At least one broker the transport preference allows.
    fn check_brokers(&self) -> Result<(), RecordError> {
        let usable = match self.transport {
            TransportPreference::Both => self.udp.is_some() || self.ws.is_some(),
            TransportPreference::Udp => self.udp.is_some(),
            TransportPreference::Ws => self.ws.is_some(),
        };
        if usable {
            Ok(())
        } else {
            Err(RecordError::NoBroker)
        }
    }

    /// Writes the record into `out`, returning its length. Refuses what [`Record::parse`] would
    /// refuse, so a written record always parses back to the same value.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        if self.device_id == 0 {
            return Err(RecordError::InvalidDeviceId);
        }
        self.check_brokers()?;
        let mut flags = 0;
        let (mut host, mut path, mut lookup_host): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
        if let Some(udp) = self.udp {
            check_endpoint(udp)?;
            flags |= FLAG_UDP;
        }
        if let Some(ws) = self.ws {
            check_endpoint(ws.addr)?;
            host = check_host(ws.host.as_bytes())?.as_bytes();
            path = check_path(ws.path.as_bytes())?.as_bytes();
            flags |= FLAG_WS;
        }
        if let Some(lookup) = self.lookup {
            check_endpoint(lookup.addr)?;
            lookup_host = check_host(lookup.host.as_bytes())?.as_bytes();
            flags |= FLAG_LOOKUP;
        }
        let len = FIXED_LEN + host.len() + path.len() + lookup_host.len() + CRC_LEN;
        if out.len() < len {
            return Err(RecordError::BufferTooSmall);
        }
        let out = &mut out[..len];
        out[..FIXED_LEN].fill(0);
        out[..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = flags;
        // `len` is at most MAX_RECORD_LEN (the strings were checked), which fits a u16.
        out[6..8].copy_from_slice(&(len as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.device_id.to_le_bytes());
        out[12..44].copy_from_slice(&self.key);
        out[44..60].copy_from_slice(&self.seed);
        out[60] = self.transport as u8;
        // Each string is at most MAX_TEXT_LEN (64) bytes: it fits a u8.
        out[61] = host.len() as u8;
        out[62] = path.len() as u8;
        out[63] = lookup_host.len() as u8;
        write_endpoint(&mut out[64..70], self.udp);
        write_endpoint(&mut out[70..76], self.ws.map(|w| w.addr));
        write_endpoint(&mut out[76..82], self.lookup.map(|l| l.addr));
        let mut at = FIXED_LEN;
        for text in [host, path, lookup_host] {
            out[at..at + text.len()].copy_from_slice(text);
            at += text.len();
        }
        let crc = CRC32.checksum(&out[..at]);
        out[at..].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn addr(text: &str) -> SocketAddrV4 {
        text.parse().unwrap()
    }

    fn full() -> Record<'static> {
        Record {
            device_id: 42,
            key: core::array::from_fn(|i| i as u8),
            transport: TransportPreference::Both,
            udp: Some(addr("10.0.2.2:7000")),
            ws: Some(WsEndpoint {
                addr: addr("10.0.2.2:8080"),
                host: "broker.test",
                path: "/device",
            }),
            lookup: Some(LookupEndpoint {
                addr: addr("10.0.2.2:8081"),
                host: "10.0.2.2:8081",
            }),
            seed: [0xA5; 16],
        }
    }

    fn encoded(record: &Record<'_>) -> ([u8; MAX_RECORD_LEN], usize) {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = record.encode(&mut buf).unwrap();
        (buf, len)
    }

    /// Rewrites the checksum after a test edits a field, so the field check is what fails.
    fn reseal(bytes: &mut [u8]) {
        let len = bytes.len();
        let crc = CRC32.checksum(&bytes[..len - CRC_LEN]);
        bytes[len - CRC_LEN..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn round_trips_every_field() {
        let record = full();
        let (buf, len) = encoded(&record);
        assert_eq!(len, FIXED_LEN + 11 + 7 + 13 + CRC_LEN);
        assert_eq!(Record::parse(&buf[..len]), Ok(record));
        // Trailing bytes (the rest of a flash page) are ignored.
        assert_eq!(Record::parse(&buf), Ok(record));
        let udp_only = Record {
            ws: None,
            lookup: None,
            transport: TransportPreference::Udp,
            ..record
        };
        let (buf, len) = encoded(&udp_only);
        assert_eq!(len, FIXED_LEN + CRC_LEN);
        assert_eq!(Record::parse(&buf[..len]), Ok(udp_only));
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let (buf, len) = encoded(&full());
        assert_eq!(&buf[..4], b"PLPR");
        assert_eq!(buf[4], 1);
        assert_eq!(buf[5], 0b111);
        assert_eq!(usize::from(u16::from_le_bytes([buf[6], buf[7]])), len);
        assert_eq!(&buf[8..12], &42u32.to_le_bytes());
        assert_eq!(buf[12], 0);
        assert_eq!(buf[43], 31);
        assert_eq!(&buf[44..60], &[0xA5; 16]);
        assert_eq!(&buf[64..70], &[10, 0, 2, 2, 0x58, 0x1B]);
        assert_eq!(&buf[82..93], b"broker.test");
        // The CRC-32/ISO-HDLC check value of "123456789" is 0xCBF43926.
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        let crc = CRC32.checksum(&buf[..len - 4]).to_le_bytes();
        assert_eq!(&buf[len - 4..len], &crc);
    }

    #[test]
    fn every_single_byte_corruption_is_refused() {
        let (buf, len) = encoded(&full());
        for at in 0..len {
            for bit in 0..8 {
                let mut bytes = buf;
                bytes[at] ^= 1 << bit;
                assert!(
                    Record::parse(&bytes[..len]).is_err(),
                    "flip of bit {bit} at byte {at} accepted"
                );
            }
        }
        let mut bytes = buf;
        bytes[20] ^= 0xFF;
        assert_eq!(Record::parse(&bytes[..len]), Err(RecordError::BadChecksum));
    }

    #[test]
    fn header_errors_are_typed() {
        let (buf, len) = encoded(&full());
        assert_eq!(Record::parse(&[]), Err(RecordError::Truncated));
        assert_eq!(Record::parse(&[0xFF; 512]), Err(RecordError::BadMagic));
        assert_eq!(Record::parse(&[0; 512]), Err(RecordError::BadMagic));
        let mut bytes = buf;
        bytes[4] = 2;
        assert_eq!(
            Record::parse(&bytes[..len]),
            Err(RecordError::UnsupportedVersion(2))
        );
        assert_eq!(Record::parse(&buf[..len - 1]), Err(RecordError::Truncated));
        for bad_len in [0u16, 85, MAX_RECORD_LEN as u16 + 1, u16::MAX] {
            let mut bytes = buf;
            bytes[6..8].copy_from_slice(&bad_len.to_le_bytes());
            assert_eq!(Record::parse(&bytes), Err(RecordError::BadLength));
        }
        // A length that disagrees with the strings, checksum intact.
        let mut bytes = buf;
        bytes[61] += 1;
        reseal(&mut bytes[..len]);
        assert_eq!(Record::parse(&bytes[..len]), Err(RecordError::BadLength));
    }

    #[test]
    fn field_errors_are_typed() {
        type Edit = fn(&mut [u8]);
        let cases: [(Edit, RecordError); 6] = [
            (|b| b[5] |= 0x80, RecordError::BadFlags),
            (|b| b[8..12].fill(0), RecordError::InvalidDeviceId),
            (|b| b[60] = 3, RecordError::BadTransport),
            (|b| b[68..70].fill(0), RecordError::BadEndpoint),
            (|b| b[82] = 0xFF, RecordError::BadHost),
            (|b| b[93] = b'x', RecordError::BadPath),
        ];
        let (buf, len) = encoded(&full());
        for (edit, expected) in cases {
            let mut bytes = buf;
            edit(&mut bytes[..len]);
            reseal(&mut bytes[..len]);
            assert_eq!(Record::parse(&bytes[..len]), Err(expected));
        }
    }

    #[test]
    fn no_broker_for_the_transport_is_refused_both_ways() {
        let udp_only = Record {
            ws: None,
            transport: TransportPreference::Ws,
            ..full()
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        assert_eq!(udp_only.encode(&mut buf), Err(RecordError::NoBroker));
        let (mut bytes, len) = encoded(&Record {
            transport: TransportPreference::Udp,
            ..udp_only
        });
        bytes[60] = TransportPreference::Ws as u8;
        reseal(&mut bytes[..len]);
        assert_eq!(Record::parse(&bytes[..len]), Err(RecordError::NoBroker));
    }

    #[test]
    fn encode_refuses_what_parse_would() {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let long: &'static str = "h".repeat(MAX_TEXT_LEN + 1).leak();
        let mut record = full();
        record.ws.as_mut().unwrap().host = long;
        assert_eq!(record.encode(&mut buf), Err(RecordError::BadHost));
        let mut record = full();
        record.ws.as_mut().unwrap().path = "device";
        assert_eq!(record.encode(&mut buf), Err(RecordError::BadPath));
        let record = Record {
            device_id: 0,
            ..full()
        };
        assert_eq!(record.encode(&mut buf), Err(RecordError::InvalidDeviceId));
        assert_eq!(
            full().encode(&mut buf[..100]),
            Err(RecordError::BufferTooSmall)
        );
    }

    #[test]
    fn debug_output_redacts_key_and_seed() {
        let text = std::format!("{:?}", full());
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("165"));
    }
}
