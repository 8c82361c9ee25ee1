//! Terminal addresses as the broker handles them. The types are the protocol's own
//! (`shared_protocol::ids`: [`Address`], [`Kind`], [`IdProfile`], [`IdError`]; JSON form
//! `{"kind":"device","id":7}`); this module adds the broker-side conveniences: a packed `u64`
//! store key ([`AddressKey`], [`from_key`]) and id parsing for URL paths and command lines
//! ([`parse_id`], by the profile's rules).
//!
//! It also holds the words several layers share, so that lower layers (metrics, stores) need not
//! import them from the layers above: the [`Transport`] a session arrived on and the
//! [`QueueFullPolicy`] of an outbound queue (re-exported by `router` and `config`, which own
//! their use), and the [`EvictionPolicy`] of a full offline inbox (the stores apply it; `config`
//! re-exports it for the `[offline]` section).

pub use shared_protocol::ids::{Address, IdError, IdProfile, Kind};

/// Packs an address into the `u64` used as a store key: kind in bit 32, id in the low 32 bits.
pub trait AddressKey {
    /// The packed key.
    fn to_key(self) -> u64;
}

impl AddressKey for Address {
    fn to_key(self) -> u64 {
        (u64::from(self.kind.as_u8()) << 32) | u64::from(self.id)
    }
}

/// Inverse of [`AddressKey::to_key`]; `None` for a key no address packs to.
pub fn from_key(key: u64) -> Option<Address> {
    let kind = Kind::from_u8(u8::try_from(key >> 32).ok()?).ok()?;
    Some(Address {
        kind,
        id: key as u32,
    })
}

/// Parses an id written unsigned (`4294967289`) or signed (`-7`, two's-complement bits),
/// whatever the profile: for keys of configuration tables, where the profile does not change
/// which terminal is meant. Ids from users (API paths, queries, command lines) go through
/// [`parse_id`].
pub fn parse_id_bits(s: &str) -> Option<u32> {
    s.parse::<u32>()
        .ok()
        .or_else(|| s.parse::<i32>().ok().map(|v| v as u32))
}

/// Parses an id as `profile` writes ids: `plug` ids are unsigned decimal (`-1` is refused
/// rather than read as 4294967295); `signed` ids are two's-complement, written signed (`-7`)
/// or as the same bits unsigned.
pub fn parse_id(profile: IdProfile, s: &str) -> Option<u32> {
    match profile {
        IdProfile::Plug => s.parse::<u32>().ok(),
        IdProfile::Signed => parse_id_bits(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip() {
        for a in [
            Address::device(1),
            Address::phone(u32::MAX),
            Address::device(u32::MAX),
        ] {
            assert_eq!(from_key(a.to_key()), Some(a));
        }
        assert_eq!(from_key(5 << 32), None);
        assert!(Address::device(u32::MAX).to_key() < Address::phone(0).to_key());
    }

    #[test]
    fn ids_parse_signed_or_unsigned() {
        assert_eq!(parse_id_bits("7"), Some(7));
        assert_eq!(parse_id_bits("-7"), Some(-7i32 as u32));
        assert_eq!(parse_id_bits("4294967289"), Some(-7i32 as u32));
        // The plug profile writes ids unsigned only: `-1` is not 4294967295 there.
        assert_eq!(parse_id(IdProfile::Plug, "-1"), None);
        assert_eq!(parse_id(IdProfile::Plug, "4294967295"), Some(u32::MAX));
        assert_eq!(parse_id(IdProfile::Plug, "+7"), Some(7));
        assert_eq!(parse_id(IdProfile::Signed, "-1"), Some(u32::MAX));
        assert_eq!(parse_id(IdProfile::Signed, "7"), Some(7));
        assert_eq!(parse_id(IdProfile::Plug, "x"), None);
        assert_eq!(parse_id_bits("x"), None);
        assert_eq!(parse_id_bits("4294967296"), None);
    }
}

/// The transport a session arrived on (also the `transport` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Device over WebSocket (binary packets).
    DeviceWs,
    /// Device over UDP (binary packets).
    Udp,
    /// App over WebSocket (JSON).
    AppWs,
}

impl Transport {
    /// Label used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::DeviceWs => "device_ws",
            Transport::Udp => "udp",
            Transport::AppWs => "app_ws",
        }
    }

    /// All transports (for reporting).
    pub const ALL: [Transport; 3] = [Transport::DeviceWs, Transport::Udp, Transport::AppWs];
}

/// What to do when a connection's outbound queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullPolicy {
    /// Drop the event being queued.
    DropNewest,
    /// Drop the oldest queued event to make room.
    DropOldest,
    /// Kick the session (it reconnects and replays from the store).
    #[default]
    Disconnect,
}

impl QueueFullPolicy {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueFullPolicy::DropNewest => "drop-newest",
            QueueFullPolicy::DropOldest => "drop-oldest",
            QueueFullPolicy::Disconnect => "disconnect",
        }
    }
}

/// Which message leaves a full offline inbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// The terminal's oldest stored message is evicted.
    #[default]
    DropOldest,
    /// The new message is not stored for that terminal.
    RejectNew,
}
