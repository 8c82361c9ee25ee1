//! Writing device provisioning records (`broker device-key --record FILE`).
//!
//! A record ([`shared_protocol::provision`], byte table in docs/flashing.md) carries a device's
//! id, key, brokers and entropy seed; it is flashed into the board's record region next to one
//! firmware image shared by every plug of that board type. The bytes come from the same codec
//! the firmware parses them with. The key is the device's key as the broker accepts it
//! ([`device_key`]: explicit from the configuration, else derived from the fleet master key).

use std::net::{SocketAddr, SocketAddrV4};

use rand::RngCore;
use shared_protocol::provision::{
    LookupEndpoint, MAX_RECORD_LEN, Record, RecordError, TransportPreference, WsEndpoint,
};

use crate::secrets::Secrets;

/// Request path of the device WebSocket when none is given.
pub const DEFAULT_WS_PATH: &str = "/device";

/// What a record is written from, besides the device id and key.
#[derive(Debug, Clone, Default)]
pub struct RecordSpec {
    /// UDP broker as the device reaches it.
    pub udp: Option<SocketAddr>,
    /// WebSocket broker as the device reaches it.
    pub ws: Option<SocketAddr>,
    /// `Host` header of the WebSocket upgrade (default: the address text).
    pub ws_host: Option<String>,
    /// WebSocket request path (default [`DEFAULT_WS_PATH`]).
    pub ws_path: Option<String>,
    /// The broker's HTTP API for the node lookup.
    pub lookup: Option<SocketAddr>,
    /// Which brokers the device dials (default: both, UDP first).
    pub transport: Option<TransportPreference>,
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteRecordError {
    /// Records carry IPv4 endpoints only (the boards' stacks are IPv4).
    #[error("{what} {addr} is not an IPv4 address (records carry IPv4 endpoints)")]
    NotIpv4 {
        /// Which endpoint.
        what: &'static str,
        /// The address given.
        addr: SocketAddr,
    },
    /// The record's own checks refused a value.
    #[error("{0}")]
    Record(#[from] RecordError),
}

/// The key the broker accepts for device `id`: explicit from the configuration, else derived
/// from the fleet master key.
pub fn device_key(secrets: &Secrets, id: u32) -> [u8; 32] {
    match secrets.device_keys.get(&id) {
        Some(key) => *key,
        None => {
            let master = shared_protocol::keys::MasterKey(secrets.fleet_master_key);
            shared_protocol::keys::derive_device_key(&master, id).0
        }
    }
}

fn ipv4(what: &'static str, addr: SocketAddr) -> Result<SocketAddrV4, WriteRecordError> {
    match addr {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(WriteRecordError::NotIpv4 { what, addr }),
    }
}

/// A fresh random entropy seed for a record (every record written gets its own).
pub fn fresh_seed(rng: &mut impl RngCore) -> [u8; 16] {
    let mut seed = [0u8; 16];
    rng.fill_bytes(&mut seed);
    seed
}

/// The record bytes for device `id` with `key` and entropy `seed` (see [`fresh_seed`]).
pub fn record_bytes(
    id: u32,
    key: [u8; 32],
    spec: &RecordSpec,
    seed: [u8; 16],
) -> Result<Vec<u8>, WriteRecordError> {
    let ws_host;
    let ws = match spec.ws {
        Some(addr) => {
            ws_host = spec.ws_host.clone().unwrap_or_else(|| addr.to_string());
            Some(WsEndpoint {
                addr: ipv4("WebSocket broker", addr)?,
                host: &ws_host,
                path: spec.ws_path.as_deref().unwrap_or(DEFAULT_WS_PATH),
            })
        }
        None => None,
    };
    let lookup_host = spec.lookup.map(|a| a.to_string());
    let lookup = match (spec.lookup, &lookup_host) {
        (Some(addr), Some(host)) => Some(LookupEndpoint {
            addr: ipv4("lookup", addr)?,
            host,
        }),
        _ => None,
    };
    let record = Record {
        device_id: id,
        key,
        transport: spec.transport.unwrap_or(TransportPreference::Both),
        udp: spec.udp.map(|a| ipv4("UDP broker", a)).transpose()?,
        ws,
        lookup,
        seed,
    };
    let mut buf = [0u8; MAX_RECORD_LEN];
    let len = record.encode(&mut buf)?;
    Ok(buf[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn writes_a_record_that_parses_back_with_defaults_filled_in() {
        let spec = RecordSpec {
            udp: Some("10.0.2.2:7000".parse().unwrap()),
            ws: Some("10.0.2.2:8080".parse().unwrap()),
            lookup: Some("10.0.2.2:8081".parse().unwrap()),
            ..RecordSpec::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let bytes = record_bytes(7, [3; 32], &spec, fresh_seed(&mut rng)).unwrap();
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.device_id, 7);
        assert_eq!(record.key, [3; 32]);
        assert_eq!(record.transport, TransportPreference::Both);
        let ws = record.ws.unwrap();
        assert_eq!((ws.host, ws.path), ("10.0.2.2:8080", DEFAULT_WS_PATH));
        assert_eq!(record.lookup.unwrap().host, "10.0.2.2:8081");
        // A second record of the same device gets another seed.
        let again = record_bytes(7, [3; 32], &spec, fresh_seed(&mut rng)).unwrap();
        assert_ne!(Record::parse(&again).unwrap().seed, record.seed);
    }

    #[test]
    fn refuses_ipv6_and_missing_brokers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let v6 = RecordSpec {
            udp: Some("[::1]:7000".parse().unwrap()),
            ..RecordSpec::default()
        };
        assert!(matches!(
            record_bytes(7, [0; 32], &v6, fresh_seed(&mut rng)),
            Err(WriteRecordError::NotIpv4 { .. })
        ));
        assert!(matches!(
            record_bytes(7, [0; 32], &RecordSpec::default(), fresh_seed(&mut rng)),
            Err(WriteRecordError::Record(RecordError::NoBroker))
        ));
    }
}
