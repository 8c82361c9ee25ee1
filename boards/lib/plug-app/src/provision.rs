//! What the application starts from: a device's identity and the brokers it dials.
//!
//! A board never builds a [`Provisioning`] by hand: it reads the provisioning record from its
//! record region ([`crate::record::provisioning_from_record`]; format in
//! `shared_protocol::provision`, layout and regions in docs/flashing.md), so nothing about a
//! device is compiled into the image and one image serves every plug of a board type.

use core::net::{SocketAddr, SocketAddrV4};

use firmware::Endpoint;

/// The WebSocket broker: address, `Host` header and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsBroker {
    /// Address of the broker's WebSocket listener.
    pub addr: SocketAddrV4,
    /// `Host` header value.
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
    /// The broker's HTTP API for the node lookup, and its `Host` header.
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

impl Provisioning {
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

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::TransportKind;

    fn full() -> Provisioning {
        Provisioning {
            device_id: 42,
            key: [0x1a; 32],
            udp: Some("192.0.2.10:7000".parse().unwrap()),
            ws: Some(WsBroker {
                addr: "192.0.2.11:8080".parse().unwrap(),
                host: "broker.test",
                path: "/dev",
            }),
            lookup: None,
        }
    }

    #[test]
    fn endpoints_are_udp_first_then_websocket() {
        let endpoints = full().endpoints();
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
    fn debug_output_redacts_the_key() {
        let text = std::format!("{:?}", full());
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("26, 26"));
    }

    #[test]
    fn lookup_dials_only_the_provisioned_transports() {
        assert_eq!(full().lookup_config(), None);
        let p = Provisioning {
            ws: None,
            lookup: Some(("192.0.2.1:8080".parse().unwrap(), "192.0.2.1:8080")),
            ..full()
        };
        let c = p.lookup_config().unwrap();
        assert_eq!(c.addr, "192.0.2.1:8080".parse().unwrap());
        assert_eq!(c.host, "192.0.2.1:8080");
        assert!(c.udp && !c.ws);
    }
}
