//! Provisioning read at boot from the board's record region (one image for every plug).
//!
//! A board hands the bytes of its record region (flash page, QEMU memory, a file on the host) to
//! [`provisioning_from_record`]; the record format and its checks live in
//! [`shared_protocol::provision`], the same code `broker device-key --record` writes it with.
//! The result is the [`Provisioning`] the application starts from, narrowed to the record's
//! transport preference, plus the record's entropy seed for boards without a hardware generator.
//! A bad or missing record is a [`RecordError`]: the board logs it and stays offline
//! ([`accept_at_boot`] does the first half for it).

use shared_protocol::provision::Record;
pub use shared_protocol::provision::{RecordError, TransportPreference};

use crate::provision::{Provisioning, WsBroker};

/// What a board boots from: identity and brokers, and the per-device entropy seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// Identity and brokers (only those the transport preference allows).
    pub provisioning: Provisioning,
    /// Per-device entropy seed from the record (secret: never log it).
    pub seed: [u8; 16],
    /// The record's transport preference.
    pub transport: TransportPreference,
}

/// Parses the record at the start of `region` (the rest of the region is ignored).
pub fn provisioning_from_record(region: &'static [u8]) -> Result<Provisioned, RecordError> {
    let record = Record::parse(region)?;
    let udp = match record.transport {
        TransportPreference::Ws => None,
        _ => record.udp,
    };
    let ws = match record.transport {
        TransportPreference::Udp => None,
        _ => record.ws.map(|ws| WsBroker {
            addr: ws.addr,
            host: ws.host,
            path: ws.path,
        }),
    };
    Ok(Provisioned {
        provisioning: Provisioning {
            device_id: record.device_id,
            key: record.key,
            udp,
            ws,
            lookup: record.lookup.map(|l| (l.addr, l.host)),
        },
        seed: record.seed,
        transport: record.transport,
    })
}

/// The record at the start of `region` as [`provisioning_from_record`] reads it, or `None` once
/// the refusal is logged with `addr` (the region's address on the board): what a board's `main`
/// does first. On `None` the board stays offline in its own way (a blinking LED, the radio off).
pub fn accept_at_boot(region: &'static [u8], addr: usize) -> Option<Provisioned> {
    match provisioning_from_record(region) {
        Ok(provisioned) => Some(provisioned),
        Err(e) => {
            log_error!(
                "provisioning record at {:#x} refused: {}; staying offline",
                addr,
                e
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::provision::{LookupEndpoint, MAX_RECORD_LEN, WsEndpoint};
    use std::boxed::Box;

    fn region(transport: TransportPreference) -> &'static [u8] {
        let record = Record {
            device_id: 77,
            key: [9; 32],
            transport,
            udp: Some("10.0.2.2:7000".parse().unwrap()),
            ws: Some(WsEndpoint {
                addr: "10.0.2.2:8080".parse().unwrap(),
                host: "broker.test",
                path: "/device",
            }),
            lookup: Some(LookupEndpoint {
                addr: "10.0.2.2:8081".parse().unwrap(),
                host: "10.0.2.2:8081",
            }),
            seed: [5; 16],
        };
        // A flash page: the record, then erased bytes.
        let mut page = Box::new([0xFFu8; 1024]);
        let len = record.encode(&mut page[..MAX_RECORD_LEN]).unwrap();
        assert!(len < 1024);
        Box::leak(page)
    }

    #[test]
    fn a_record_gives_the_provisioning_the_app_starts_from() {
        let p = provisioning_from_record(region(TransportPreference::Both)).unwrap();
        assert_eq!(p.provisioning.device_id, 77);
        assert_eq!(p.provisioning.key, [9; 32]);
        assert_eq!(p.seed, [5; 16]);
        let endpoints = p.provisioning.endpoints();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].addr, "10.0.2.2:7000".parse().unwrap());
        let lookup = p.provisioning.lookup_config().unwrap();
        assert_eq!(lookup.host, "10.0.2.2:8081");
        assert!(lookup.udp && lookup.ws);
    }

    #[test]
    fn the_transport_preference_narrows_the_brokers() {
        let udp = provisioning_from_record(region(TransportPreference::Udp)).unwrap();
        assert!(udp.provisioning.udp.is_some() && udp.provisioning.ws.is_none());
        let ws = provisioning_from_record(region(TransportPreference::Ws)).unwrap();
        assert!(ws.provisioning.udp.is_none());
        assert_eq!(ws.provisioning.ws.unwrap().host, "broker.test");
    }

    #[test]
    fn a_board_boots_from_an_accepted_record_only() {
        let accepted = accept_at_boot(region(TransportPreference::Both), 0x1000).unwrap();
        assert_eq!(accepted.provisioning.device_id, 77);
        let erased: &'static [u8] = Box::leak(Box::new([0xFFu8; 1024]));
        assert_eq!(accept_at_boot(erased, 0x1000), None);
    }

    #[test]
    fn an_erased_or_corrupted_region_is_a_typed_error() {
        let erased: &'static [u8] = Box::leak(Box::new([0xFFu8; 1024]));
        assert_eq!(provisioning_from_record(erased), Err(RecordError::BadMagic));
        let good = region(TransportPreference::Both);
        let mut bad = Box::new([0u8; 1024]);
        bad.copy_from_slice(good);
        bad[40] ^= 0x10;
        assert_eq!(
            provisioning_from_record(Box::leak(bad)),
            Err(RecordError::BadChecksum)
        );
    }
}
