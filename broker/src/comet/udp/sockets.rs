//! The UDP endpoint's sockets: one per shard, all bound to the one `[listen] udp` address as a
//! `SO_REUSEPORT` group, so each shard reads, answers and sends on its own socket with no task
//! in between.
//!
//! The kernel picks a group member for each datagram by a hash of its source and destination
//! address and port, so all of one peer's datagrams reach the same shard, and the shard that
//! reads a LOGIN gives the session a slot in its own table: the session's DATA packets then
//! reach their owner directly. Only a peer whose address changed (a NAT rebinding) lands
//! elsewhere; that shard forwards the packet to the owner (`dispatch`).
//!
//! [`bind`] makes the first socket (with the option set, so the group can grow);
//! [`shard_sockets`] adds the rest. When a member cannot be added (the first socket was made
//! elsewhere without the option, say), the endpoint runs on the one socket: shard 0 reads it
//! and forwards every other shard's packets, and a warning says so.
//!
//! A group joins any socket of the same user that sets the option on the same address, as
//! `SO_REUSEPORT` does; the broker's TCP listeners do not set it, so a second broker started
//! with the same `[listen]` section fails on them before it reaches the UDP port.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, setsockopt, socket, sockopt,
};
use tokio::net::UdpSocket;

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT` set, so more sockets can join
/// it ([`shard_sockets`]). Needs a tokio runtime (it registers with the reactor).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// One socket per shard: `first` and `count - 1` more bound to its address. When one cannot be
/// bound, every shard gets `first` and the second value is the error (see the module docs:
/// shard 0 then reads for all).
pub fn shard_sockets(first: UdpSocket, count: usize) -> (Vec<Arc<UdpSocket>>, Option<io::Error>) {
    let first = Arc::new(first);
    let mut sockets = vec![first.clone()];
    let addr = match first.local_addr() {
        Ok(a) => a,
        Err(e) => return (vec![first; count.max(1)], Some(e)),
    };
    while sockets.len() < count {
        match bind(addr) {
            Ok(s) => sockets.push(Arc::new(s)),
            Err(e) => return (vec![first; count.max(1)], Some(e)),
        }
    }
    (sockets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_shard_gets_its_own_socket_on_the_same_address() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let (sockets, err) = shard_sockets(first, 3);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(sockets.len(), 3);
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
        assert!(!Arc::ptr_eq(&sockets[0], &sockets[1]));
    }

    #[tokio::test]
    async fn one_peers_datagrams_all_reach_the_same_member() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let (sockets, _) = shard_sockets(first, 2);
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..20u8 {
            peer.send_to(&[i], addr).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut per_socket = Vec::new();
        for s in &sockets {
            let mut n = 0;
            let mut buf = [0u8; 4];
            while s.try_recv_from(&mut buf).is_ok() {
                n += 1;
            }
            per_socket.push(n);
        }
        per_socket.sort_unstable();
        assert_eq!(
            per_socket,
            vec![0, 20],
            "one member takes all of one peer's datagrams"
        );
    }

    #[tokio::test]
    async fn a_socket_bound_without_the_option_leaves_every_shard_on_it() {
        let plain = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (sockets, err) = shard_sockets(plain, 2);
        assert!(err.is_some());
        assert_eq!(sockets.len(), 2);
        assert!(Arc::ptr_eq(&sockets[0], &sockets[1]));
    }
}
