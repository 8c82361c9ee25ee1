//! The socket set a board gives embassy-net (`plug_app::stack_sockets`) holds every socket
//! the application opens at once, for each network configuration a board can have (DHCP or a
//! static address), and one socket fewer does not: the count is exact, not padded.
//!
//! The application holds one transport socket at a time: the runner opens the UDP socket or
//! the WebSocket transport's TCP socket from `plug_app::app::transports` (the code `start`
//! runs) for the current endpoint's kind, and drops it before it opens the other kind. The node
//! lookup's TCP socket is open for the length of a lookup (`firmware::net::HttpLookup::fetch`,
//! mirrored here with the lookup's buffer sizes). The test opens both kinds in turn, as the
//! runner does when the client moves between a UDP and a WebSocket endpoint. embassy-net panics ("adding a socket to a full
//! SocketSet") when the set is too small; that panic is what this test looks for.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Context;

use embassy_net::tcp::TcpSocket;
use embassy_net::{Config, StackResources, StaticConfigV4};
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use firmware::lookup::REQUEST_MAX;
use firmware::net::{LOOKUP_TCP_RX, SocketKind, SocketMemory, Sockets};
use plug_app::app::{APP_SOCKETS, stack_sockets, transports};

/// A network device that never has a frame to give or room to send: the sockets are only
/// created here, never used.
struct NoLink;

/// No token is ever handed out.
enum Never {}

impl RxToken for Never {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, _: F) -> R {
        match self {}
    }
}

impl TxToken for Never {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, _: usize, _: F) -> R {
        match self {}
    }
}

impl Driver for NoLink {
    type RxToken<'a> = Never;
    type TxToken<'a> = Never;
    fn receive(&mut self, _: &mut Context) -> Option<(Never, Never)> {
        None
    }
    fn transmit(&mut self, _: &mut Context) -> Option<Never> {
        None
    }
    fn link_state(&mut self, _: &mut Context) -> LinkState {
        LinkState::Down
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps
    }
    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet([2, 0, 0, 0, 0, 1])
    }
}

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// Creates a stack with `N` sockets and every socket the application holds at once; true
/// when all fit (false: embassy-net refused one).
fn app_fits<const N: usize>(dhcp: bool) -> bool {
    // embassy-net's panic is the expected answer here: keep it out of the test's output.
    std::panic::set_hook(Box::new(|_| {}));
    let fits = catch_unwind(AssertUnwindSafe(|| {
        let config = if dhcp {
            Config::dhcpv4(Default::default())
        } else {
            Config::ipv4_static(StaticConfigV4 {
                address: embassy_net::Ipv4Cidr::new(embassy_net::Ipv4Address::new(10, 0, 0, 2), 24),
                gateway: None,
                dns_servers: Default::default(),
            })
        };
        let resources = leak(StackResources::<N>::new());
        let (stack, _runner) = embassy_net::new(NoLink, config, resources, 1);
        let mut sockets = transports(stack, leak(SocketMemory::new()), 7);
        for kind in [SocketKind::Udp, SocketKind::WebSocket, SocketKind::Udp] {
            let _transport = sockets.open(kind);
            // The node lookup's socket, as HttpLookup::fetch opens it.
            let _lookup =
                TcpSocket::new(stack, leak([0u8; LOOKUP_TCP_RX]), leak([0u8; REQUEST_MAX]));
        }
    }))
    .is_ok();
    // Back to the default hook, so a failing assertion below says why.
    let _ = std::panic::take_hook();
    fits
}

#[test]
fn the_socket_set_fits_every_configuration_exactly() {
    for dhcp in [false, true] {
        let needed = stack_sockets(dhcp);
        assert_eq!(needed, APP_SOCKETS + usize::from(dhcp));
        let (fits, one_fewer) = match needed {
            2 => (app_fits::<2>(dhcp), app_fits::<1>(dhcp)),
            3 => (app_fits::<3>(dhcp), app_fits::<2>(dhcp)),
            other => panic!("no case for {other} sockets: extend this match"),
        };
        assert!(
            fits,
            "dhcp {dhcp}: {needed} sockets do not hold the application"
        );
        assert!(
            !one_fewer,
            "dhcp {dhcp}: {} sockets are enough; lower the count",
            needed - 1
        );
    }
}
