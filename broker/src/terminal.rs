//! Terminal addresses as the broker handles them: `kind:id` strings in JSON and config, a packed
//! `u64` key in the store, and the ID-profile rules of docs/protocol.md section 1.
//!
//! The wire-level `Address`/`Kind`/`IdProfile` types live in `shared-protocol::ids`; this module is
//! the broker-side representation (serde as `"device:7"` / `"phone:-3"`) with lossless conversion,
//! so storage and API formats do not change when the wire types evolve.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a terminal is: a device (smart plug) or a phone/app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A smart plug (binary transport).
    Device,
    /// A phone or web app (JSON transport).
    Phone,
}

impl Kind {
    /// The wire byte (`0` device, `1` phone).
    pub fn as_u8(self) -> u8 {
        match self {
            Kind::Device => 0,
            Kind::Phone => 1,
        }
    }

    /// Parses the wire byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Device),
            1 => Some(Kind::Phone),
            _ => None,
        }
    }

    /// The lowercase name used in JSON, config and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Phone => "phone",
        }
    }
}

impl FromStr for Kind {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "device" => Ok(Kind::Device),
            "phone" => Ok(Kind::Phone),
            _ => Err(AddressError::UnknownKind),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The deployment's ID profile (protocol section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdProfile {
    /// Unsigned ids, kind carried separately, one session per terminal (newest wins).
    #[default]
    Plug,
    /// Two's-complement ids, negative = phone, several sessions per terminal.
    Signed,
}

impl IdProfile {
    /// Validates an address under this profile (id 0 invalid; `signed`: kind matches the sign).
    pub fn validate(self, addr: Address) -> Result<(), AddressError> {
        if addr.id == 0 {
            return Err(AddressError::InvalidId);
        }
        if self == IdProfile::Signed {
            let negative = (addr.id as i32) < 0;
            if negative != (addr.kind == Kind::Phone) {
                return Err(AddressError::KindMismatch);
            }
        }
        Ok(())
    }

    /// Whether several sessions may be online for one terminal at once.
    pub fn multi_session(self) -> bool {
        self == IdProfile::Signed
    }
}

/// Why an address string or value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not of the form `kind:id`.
    #[error("expected `device:ID` or `phone:ID`")]
    Malformed,
    /// The kind is neither `device` nor `phone`.
    #[error("unknown kind (expected `device` or `phone`)")]
    UnknownKind,
    /// Id 0, or a number out of the 32-bit range.
    #[error("invalid id (must be a non-zero 32-bit number)")]
    InvalidId,
    /// `signed` profile: the kind does not match the id's sign.
    #[error(
        "kind does not match the id's sign (signed profile: phones negative, devices positive)"
    )]
    KindMismatch,
}

/// A terminal's address: kind plus 32-bit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// Device or phone.
    pub kind: Kind,
    /// The 32 id bits (interpreted per [`IdProfile`]).
    pub id: u32,
}

impl Address {
    /// A device address.
    pub fn device(id: u32) -> Address {
        Address {
            kind: Kind::Device,
            id,
        }
    }

    /// A phone address.
    pub fn phone(id: u32) -> Address {
        Address {
            kind: Kind::Phone,
            id,
        }
    }

    /// Packs the address into a `u64` store key: kind in bit 32, id in the low 32 bits.
    pub fn to_key(self) -> u64 {
        (u64::from(self.kind.as_u8()) << 32) | u64::from(self.id)
    }

    /// Inverse of [`Address::to_key`].
    pub fn from_key(key: u64) -> Option<Address> {
        let kind = Kind::from_u8(u8::try_from(key >> 32).ok()?)?;
        Some(Address {
            kind,
            id: key as u32,
        })
    }

    /// Parses an id written either unsigned (`4294967293`) or signed (`-3`).
    pub fn parse_id(s: &str) -> Result<u32, AddressError> {
        if let Ok(v) = s.parse::<u32>() {
            return Ok(v);
        }
        s.parse::<i32>()
            .map(|v| v as u32)
            .map_err(|_| AddressError::InvalidId)
    }
}

impl fmt::Display for Address {
    /// Phones with the top bit set print as negative numbers (the `signed` profile's reading).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == Kind::Phone && (self.id as i32) < 0 {
            write!(f, "{}:{}", self.kind, self.id as i32)
        } else {
            write!(f, "{}:{}", self.kind, self.id)
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(AddressError::Malformed)?;
        let kind: Kind = kind.parse()?;
        let id = Address::parse_id(id)?;
        if id == 0 {
            return Err(AddressError::InvalidId);
        }
        Ok(Address { kind, id })
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        let a: Address = "device:7".parse().unwrap();
        assert_eq!(a, Address::device(7));
        let p: Address = "phone:-3".parse().unwrap();
        assert_eq!(p, Address::phone(u32::MAX - 2));
        assert_eq!(p.to_string(), "phone:-3");
        assert_eq!("phone:4294967293".parse::<Address>().unwrap(), p);
        assert_eq!("device:0".parse::<Address>(), Err(AddressError::InvalidId));
        assert_eq!("plug:1".parse::<Address>(), Err(AddressError::UnknownKind));
        assert_eq!("device".parse::<Address>(), Err(AddressError::Malformed));
    }

    #[test]
    fn key_round_trip() {
        for a in [
            Address::device(1),
            Address::phone(u32::MAX),
            Address::device(u32::MAX),
        ] {
            assert_eq!(Address::from_key(a.to_key()), Some(a));
        }
        assert_eq!(Address::from_key(5 << 32), None);
    }

    #[test]
    fn profile_rules() {
        assert_eq!(IdProfile::Plug.validate(Address::phone(7)), Ok(()));
        assert_eq!(
            IdProfile::Plug.validate(Address::device(0)),
            Err(AddressError::InvalidId)
        );
        assert_eq!(
            IdProfile::Signed.validate(Address::phone(7)),
            Err(AddressError::KindMismatch)
        );
        assert_eq!(
            IdProfile::Signed.validate(Address::phone(-7i32 as u32)),
            Ok(())
        );
        assert_eq!(
            IdProfile::Signed.validate(Address::device(-7i32 as u32)),
            Err(AddressError::KindMismatch)
        );
    }
}
