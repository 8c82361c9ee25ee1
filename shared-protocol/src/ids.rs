//! Terminal identities (docs/protocol.md section 1).
//!
//! An [`Address`] is a [`Kind`] plus 32 id bits. How the bits are read is the deployment's
//! [`IdProfile`]: `plug` reads them as an unsigned id with an explicit kind, `signed` reads them as
//! an `i32` whose sign is the kind. Decoders only check that the kind byte is known; whether an
//! address is acceptable is decided by [`IdProfile::validate`], which returns an [`IdError`] that
//! maps onto the code table ([`IdError::code`]).
//!
//! Text form ([`fmt::Display`] / [`FromStr`]): `device:42`, `phone:7`. Parsing also accepts a
//! negative id in `i32` range (`phone:-7`), taken as its two's-complement bits.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codes::Code;

/// What a terminal is. On the binary wire: one byte, `0` = device, `1` = phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// A device (smart plug).
    Device = 0,
    /// A phone or web app.
    Phone = 1,
}

impl Kind {
    /// The kind for a wire byte; any other byte is [`IdError::UnknownKind`] (code `MALFORMED`).
    pub const fn from_u8(byte: u8) -> Result<Kind, IdError> {
        match byte {
            0 => Ok(Kind::Device),
            1 => Ok(Kind::Phone),
            other => Err(IdError::UnknownKind(other)),
        }
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The lowercase name used in text and JSON: `"device"` or `"phone"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Phone => "phone",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ParseAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "device" => Ok(Kind::Device),
            "phone" => Ok(Kind::Phone),
            _ => Err(ParseAddressError::BadKind),
        }
    }
}

/// A terminal address. On the binary wire (postcard): the kind byte, then `id` as a u32 varint.
/// In JSON: `{"kind":"device","id":42}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Address {
    /// Device or phone.
    pub kind: Kind,
    /// The 32 id bits; their reading depends on the [`IdProfile`].
    #[serde(deserialize_with = "deserialize_id")]
    pub id: u32,
}

/// Postcard: a u32 varint. Human-readable formats (JSON): any integer in `-2^31..=2^32-1`, negative
/// values taken as two's-complement bits, so `signed`-profile apps may write `-7`.
fn deserialize_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    if deserializer.is_human_readable() {
        let value = i64::deserialize(deserializer)?;
        id_bits_from_i64(value)
            .ok_or_else(|| serde::de::Error::custom("id out of range -2147483648..=4294967295"))
    } else {
        u32::deserialize(deserializer)
    }
}

impl Address {
    /// A device address.
    pub const fn device(id: u32) -> Address {
        Address {
            kind: Kind::Device,
            id,
        }
    }

    /// A phone address.
    pub const fn phone(id: u32) -> Address {
        Address {
            kind: Kind::Phone,
            id,
        }
    }

    /// The id bits read as a two's-complement `i32` (the `signed` profile's view).
    pub const fn signed_id(self) -> i32 {
        self.id as i32
    }

    /// The `signed` profile's address for an `i32` id: negative is a phone, positive a device.
    /// Zero is [`IdError::InvalidId`].
    pub const fn from_signed(id: i32) -> Result<Address, IdError> {
        if id == 0 {
            Err(IdError::InvalidId)
        } else if id < 0 {
            Ok(Address::phone(id as u32))
        } else {
            Ok(Address::device(id as u32))
        }
    }
}

/// `device:42` / `phone:7` (the id bits as unsigned decimal).
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// Why a text address did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseAddressError {
    /// No `:` between kind and id.
    MissingColon,
    /// The kind is neither `device` nor `phone`.
    BadKind,
    /// The id is not a decimal number in `-2^31..=2^32-1`.
    BadId,
}

impl fmt::Display for ParseAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseAddressError::MissingColon => "address must look like kind:id",
            ParseAddressError::BadKind => "kind must be device or phone",
            ParseAddressError::BadId => "id must be a number in -2147483648..=4294967295",
        })
    }
}

impl core::error::Error for ParseAddressError {}

/// Parses `kind:id`; a negative id (within `i32`) is taken as its two's-complement bits.
/// No profile validation is done here (`device:0` parses; [`IdProfile::validate`] rejects it).
impl FromStr for Address {
    type Err = ParseAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(ParseAddressError::MissingColon)?;
        let kind = kind.parse()?;
        let id = parse_id_bits(id).ok_or(ParseAddressError::BadId)?;
        Ok(Address { kind, id })
    }
}

/// Parses an id in the accepted text/JSON range `-2^31..=2^32-1` to its 32 bits.
fn parse_id_bits(s: &str) -> Option<u32> {
    if s.starts_with('-') {
        s.parse::<i32>().ok().map(|v| v as u32)
    } else if s.starts_with('+') {
        None
    } else {
        s.parse::<u32>().ok()
    }
}

/// Maps an integer from JSON or text (`-2^31..=2^32-1`) to id bits; `None` outside that range.
pub const fn id_bits_from_i64(value: i64) -> Option<u32> {
    if value >= i32::MIN as i64 && value < 0 {
        Some(value as i32 as u32)
    } else if value >= 0 && value <= u32::MAX as i64 {
        Some(value as u32)
    } else {
        None
    }
}

/// How a deployment reads the 32 id bits (section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IdProfile {
    /// Unsigned ids `1..=u32::MAX`, kind carried explicitly; one session per (kind, id).
    #[default]
    Plug,
    /// Two's-complement `i32`: negative = phone, positive = device; several sessions per id.
    Signed,
}

impl IdProfile {
    /// Checks an address against the profile.
    pub const fn validate(self, address: Address) -> Result<Address, IdError> {
        if address.id == 0 {
            return Err(IdError::InvalidId);
        }
        match self {
            IdProfile::Plug => Ok(address),
            IdProfile::Signed => {
                let negative = address.signed_id() < 0;
                match (address.kind, negative) {
                    (Kind::Phone, true) | (Kind::Device, false) => Ok(address),
                    _ => Err(IdError::KindMismatch),
                }
            }
        }
    }

    /// Whether a terminal may hold several sessions at once (`signed`) or a new login replaces
    /// the old session (`plug`, the old one gets `Kick { reason: REPLACED }`).
    pub const fn allows_concurrent_sessions(self) -> bool {
        matches!(self, IdProfile::Signed)
    }

    /// The profile's name in configuration: `"plug"` or `"signed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            IdProfile::Plug => "plug",
            IdProfile::Signed => "signed",
        }
    }
}

impl fmt::Display for IdProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown profile name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownProfile;

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("id profile must be plug or signed")
    }
}

impl core::error::Error for UnknownProfile {}

impl FromStr for IdProfile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plug" => Ok(IdProfile::Plug),
            "signed" => Ok(IdProfile::Signed),
            _ => Err(UnknownProfile),
        }
    }
}

/// Why an identity is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IdError {
    /// Id 0 (code `INVALID_ID`).
    InvalidId,
    /// `signed` profile: kind and sign disagree (code `KIND_MISMATCH`).
    KindMismatch,
    /// A kind byte other than 0 or 1 (code `MALFORMED`).
    UnknownKind(u8),
}

impl IdError {
    /// The code a peer reports for this error.
    pub const fn code(self) -> Code {
        match self {
            IdError::InvalidId => Code::INVALID_ID,
            IdError::KindMismatch => Code::KIND_MISMATCH,
            IdError::UnknownKind(_) => Code::MALFORMED,
        }
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::InvalidId => f.write_str("terminal id 0 is invalid"),
            IdError::KindMismatch => f.write_str("kind does not match the sign of the id"),
            IdError::UnknownKind(b) => write!(f, "unknown kind byte {b}"),
        }
    }
}

impl core::error::Error for IdError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn plug_profile() {
        let p = IdProfile::Plug;
        assert_eq!(p.validate(Address::device(0)), Err(IdError::InvalidId));
        assert_eq!(p.validate(Address::phone(0)), Err(IdError::InvalidId));
        assert!(p.validate(Address::device(u32::MAX)).is_ok());
        assert!(p.validate(Address::phone(u32::MAX)).is_ok());
        assert!(!p.allows_concurrent_sessions());
    }

    #[test]
    fn signed_profile() {
        let p = IdProfile::Signed;
        assert_eq!(p.validate(Address::device(0)), Err(IdError::InvalidId));
        assert!(p.validate(Address::device(1)).is_ok());
        assert!(p.validate(Address::device(i32::MAX as u32)).is_ok());
        assert_eq!(
            p.validate(Address::device(-1i32 as u32)),
            Err(IdError::KindMismatch)
        );
        assert!(p.validate(Address::phone(-1i32 as u32)).is_ok());
        assert!(p.validate(Address::phone(i32::MIN as u32)).is_ok());
        assert_eq!(p.validate(Address::phone(5)), Err(IdError::KindMismatch));
        assert!(p.allows_concurrent_sessions());
        assert_eq!(IdError::KindMismatch.code(), Code::KIND_MISMATCH);
        assert_eq!(IdError::InvalidId.code(), Code::INVALID_ID);
        assert_eq!(IdError::UnknownKind(7).code(), Code::MALFORMED);
    }

    #[test]
    fn signed_view() {
        assert_eq!(Address::from_signed(-7), Ok(Address::phone(0xFFFF_FFF9)));
        assert_eq!(Address::from_signed(7), Ok(Address::device(7)));
        assert_eq!(Address::from_signed(0), Err(IdError::InvalidId));
        assert_eq!(Address::phone(0xFFFF_FFF9).signed_id(), -7);
    }

    #[test]
    fn text_form() {
        assert_eq!(Address::device(42).to_string(), "device:42");
        assert_eq!(Address::phone(7).to_string(), "phone:7");
        assert_eq!("device:42".parse(), Ok(Address::device(42)));
        assert_eq!("phone:-7".parse(), Ok(Address::phone(0xFFFF_FFF9)));
        assert_eq!("phone:4294967295".parse(), Ok(Address::phone(u32::MAX)));
        assert_eq!(
            "phone:4294967296".parse::<Address>(),
            Err(ParseAddressError::BadId)
        );
        assert_eq!(
            "phone:-2147483649".parse::<Address>(),
            Err(ParseAddressError::BadId)
        );
        assert_eq!("phone:+7".parse::<Address>(), Err(ParseAddressError::BadId));
        assert_eq!("plug:7".parse::<Address>(), Err(ParseAddressError::BadKind));
        assert_eq!(
            "device42".parse::<Address>(),
            Err(ParseAddressError::MissingColon)
        );
        assert_eq!("signed".parse(), Ok(IdProfile::Signed));
        assert_eq!("x".parse::<IdProfile>(), Err(UnknownProfile));
    }

    #[test]
    fn id_bits_range() {
        assert_eq!(id_bits_from_i64(-1), Some(u32::MAX));
        assert_eq!(id_bits_from_i64(i32::MIN as i64), Some(0x8000_0000));
        assert_eq!(id_bits_from_i64(i32::MIN as i64 - 1), None);
        assert_eq!(id_bits_from_i64(u32::MAX as i64), Some(u32::MAX));
        assert_eq!(id_bits_from_i64(u32::MAX as i64 + 1), None);
    }

    #[test]
    fn wire_form_is_kind_byte_then_varint() {
        let mut buf = [0u8; 8];
        let bytes = postcard::to_slice(&Address::phone(300), &mut buf).unwrap();
        assert_eq!(bytes, &[0x01, 0xAC, 0x02]);
        assert_eq!(Kind::from_u8(2), Err(IdError::UnknownKind(2)));
        assert!(postcard::from_bytes::<Address>(&[0x02, 0x01]).is_err());
    }
}
