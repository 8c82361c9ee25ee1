//! Batched datagram I/O on the UDP endpoint's socket: up to [`BATCH`] datagrams per system call
//! each way (`recvmmsg` and `sendmmsg`, through `nix`'s safe wrappers), the kernel's own drop
//! counter (`SO_RXQ_OVFL`) read from the received datagrams, and the socket buffer sizes.
//!
//! * [`RecvBatch`] owns the receive buffers and headers, allocated once: [`RecvBatch::recv`]
//!   fills them without waiting (the caller waits for readability on its tokio socket) and
//!   reports how many datagrams the kernel dropped for this socket since the previous call
//!   (receive buffer full), so that every drop, in the kernel too, is counted.
//! * [`SendBatch`] collects outgoing datagrams (bytes in one buffer, one destination each) and
//!   [`SendBatch::flush`] hands them to the kernel in as few calls as it can, never waiting: a
//!   datagram the kernel cannot take now is dropped and reported, like any lost datagram (the
//!   reliability layer resends what mattered).
//! * [`apply_buffers`] sets the socket's receive and send buffer sizes and returns what the
//!   kernel really gave.
//!
//! Nothing here knows about the protocol: the shards decide what a datagram
//! means.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, getsockopt, recvmmsg, sendmmsg,
    setsockopt, sockopt,
};
use std::io::{IoSlice, IoSliceMut};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams one system call reads or writes.
pub const BATCH: usize = 32;

/// What one [`RecvBatch::recv`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Datagrams now in the batch ([`RecvBatch::datagrams`]).
    pub count: usize,
    /// Datagrams the kernel dropped for this socket since the previous report (its receive
    /// buffer was full), as `SO_RXQ_OVFL` tells; 0 where the kernel does not report it.
    pub kernel_drops: u64,
}

/// Receive buffers and headers for up to [`BATCH`] datagrams, reused for every call.
pub struct RecvBatch {
    /// `BATCH` slots of `slot` bytes.
    bufs: Vec<u8>,
    slot: usize,
    /// Length and source of each datagram of the last read.
    got: Vec<(usize, SocketAddr)>,
    /// The kernel's drop counter as last seen (it counts from the socket's creation).
    drops_seen: u32,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slot", &self.slot)
            .field("got", &self.got.len())
            .field("drops_seen", &self.drops_seen)
            .finish()
    }
}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams of up to `slot` bytes each (a longer datagram is cut to
    /// `slot` bytes: make `slot` one more than the largest accepted, so it shows as too large).
    pub fn new(slot: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![0; slot * BATCH],
            slot,
            got: Vec::with_capacity(BATCH),
            drops_seen: 0,
        }
    }

    /// Reads the datagrams waiting on `socket` (up to [`BATCH`]) without waiting; fails with
    /// `WouldBlock` when there are none (tokio then waits for readability again).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<Received> {
        let fd = socket.as_raw_fd();
        let RecvBatch {
            bufs,
            slot,
            got,
            drops_seen,
        } = self;
        got.clear();
        // Fresh headers for every call: the kernel shrinks each header's control and address
        // lengths to what the last datagram in that slot carried, so reused headers would
        // lose the drop counter of later datagrams.
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(nix::cmsg_space!(u32)));
        let mut newest_drops = None;
        socket.try_io(Interest::READABLE, || {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
                .chunks_mut(*slot)
                .map(|b| [IoSliceMut::new(b)])
                .collect();
            let results = recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::empty(), None)
                .map_err(io::Error::from)?;
            for msg in results {
                // An address the kernel did not give or of another family (neither happens on
                // a UDP socket) becomes the unspecified address, which is answered nowhere.
                let from = msg.address.as_ref().and_then(to_std);
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::RxqOvfl(n) = c {
                            newest_drops = Some(n);
                        }
                    }
                }
                got.push((msg.bytes, from.unwrap_or(UNSPECIFIED)));
            }
            Ok(())
        })?;
        let mut kernel_drops = 0;
        if let Some(n) = newest_drops {
            kernel_drops = u64::from(n.wrapping_sub(*drops_seen));
            *drops_seen = n;
        }
        Ok(Received {
            count: got.len(),
            kernel_drops,
        })
    }

    /// The datagrams of the last [`RecvBatch::recv`], in arrival order, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.bufs
            .chunks(self.slot)
            .zip(&self.got)
            .map(|(buf, &(len, from))| (&buf[..len.min(buf.len())], from))
    }

    /// The datagrams of the last [`RecvBatch::recv`] as [`RecvBatch::datagrams`], writable (a
    /// DATA packet is opened in place).
    pub fn datagrams_mut(&mut self) -> impl Iterator<Item = (&mut [u8], SocketAddr)> {
        self.bufs
            .chunks_mut(self.slot)
            .zip(&self.got)
            .map(|(buf, &(len, from))| {
                let len = len.min(buf.len());
                (&mut buf[..len], from)
            })
    }
}

/// Stand-in source for a datagram whose address could not be read (it is answered nowhere).
const UNSPECIFIED: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// What one [`SendBatch::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams dropped: the socket's buffer was full, or the kernel refused the destination.
    pub failed: u64,
    /// System calls made.
    pub calls: u64,
}

/// Outgoing datagrams waiting for the next [`SendBatch::flush`].
#[derive(Default)]
pub struct SendBatch {
    /// The datagrams' bytes, back to back.
    bytes: Vec<u8>,
    /// End offset in `bytes` and destination of each datagram.
    items: Vec<(usize, SockaddrStorage)>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("waiting", &self.items.len())
            .finish()
    }
}

impl SendBatch {
    /// Queues `packet` for `to`.
    pub fn push(&mut self, packet: &[u8], to: SocketAddr) {
        self.bytes.extend_from_slice(packet);
        self.items
            .push((self.bytes.len(), SockaddrStorage::from(to)));
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hands every waiting datagram to the kernel, [`BATCH`] per call, without waiting; the
    /// queue is empty afterwards. When the socket's send buffer is full the rest is dropped;
    /// a destination the kernel refuses drops that one datagram and the others still go.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut out = Flushed::default();
        let fd = socket.as_raw_fd();
        // Made per flush, not kept: the headers hold raw pointers, so a value keeping them
        // could not move between the runtime's threads.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut next = 0;
        while next < self.items.len() {
            let end = (next + BATCH).min(self.items.len());
            let chunk = &self.items[next..end];
            let mut start = if next == 0 { 0 } else { self.items[next - 1].0 };
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(stop, _)| {
                    let s = [IoSlice::new(&self.bytes[start..*stop])];
                    start = *stop;
                    s
                })
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk.iter().map(|(_, a)| Some(*a)).collect();
            out.calls += 1;
            let r = socket.try_io(Interest::WRITABLE, || {
                sendmmsg(
                    fd,
                    &mut headers,
                    slices.iter(),
                    &addrs,
                    [],
                    MsgFlags::empty(),
                )
                .map(|results| results.count())
                .map_err(io::Error::from)
            });
            match r {
                Ok(n) if n > 0 => {
                    out.sent += n as u64;
                    next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.failed += (self.items.len() - next) as u64;
                    break;
                }
                // The first datagram of the chunk was refused (or nothing was taken): drop it,
                // go on with the rest.
                _ => {
                    out.failed += 1;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.items.clear();
        out
    }
}

/// Socket buffer sizes: what was asked and what the kernel gave (Linux reports twice the
/// usable size, its bookkeeping included, and caps an unprivileged request at
/// `net.core.rmem_max` / `net.core.wmem_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    /// The kernel's receive buffer size (`SO_RCVBUF` as read back).
    pub receive: usize,
    /// The kernel's send buffer size (`SO_SNDBUF` as read back).
    pub send: usize,
}

/// Sets `socket`'s receive and send buffers to `receive` and `send` bytes (0 leaves the
/// kernel's default) and turns on the kernel's drop counter (`SO_RXQ_OVFL`). A privileged
/// process may exceed the system maximum (`SO_RCVBUFFORCE`); otherwise the kernel caps the size
/// silently, so the effective sizes are read back and returned.
pub fn apply_buffers(socket: &UdpSocket, receive: usize, send: usize) -> io::Result<Buffers> {
    if receive > 0 && setsockopt(socket, sockopt::RcvBufForce, &receive).is_err() {
        setsockopt(socket, sockopt::RcvBuf, &receive)?;
    }
    if send > 0 && setsockopt(socket, sockopt::SndBufForce, &send).is_err() {
        setsockopt(socket, sockopt::SndBuf, &send)?;
    }
    setsockopt(socket, sockopt::RxqOvfl, &1)?;
    Ok(Buffers {
        receive: getsockopt(socket, sockopt::RcvBuf)?,
        send: getsockopt(socket, sockopt::SndBuf)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_few_calls_and_comes_back_in_order_with_its_sources() {
        let (a, b) = pair().await;
        let (c, _) = pair().await;
        let mut out = SendBatch::default();
        for i in 0..(BATCH * 2 + 3) as u32 {
            out.push(&i.to_le_bytes(), b.local_addr().unwrap());
        }
        a.writable().await.unwrap();
        let f = out.flush(&a);
        assert_eq!(f.sent, (BATCH * 2 + 3) as u64);
        assert_eq!(f.failed, 0);
        assert_eq!(f.calls, 3, "one call per {BATCH} datagrams");
        assert!(out.is_empty());
        // A second sender, so sources are told apart.
        out.push(b"from c", b.local_addr().unwrap());
        c.writable().await.unwrap();
        assert_eq!(out.flush(&c).sent, 1);

        let mut rx = RecvBatch::new(16);
        let mut seen = Vec::new();
        let mut sources = Vec::new();
        while seen.len() < BATCH * 2 + 4 {
            b.readable().await.unwrap();
            let Ok(r) = rx.recv(&b) else { continue };
            assert!(r.count <= BATCH);
            assert_eq!(r.kernel_drops, 0);
            for (d, from) in rx.datagrams() {
                seen.push(d.to_vec());
                sources.push(from);
            }
        }
        let expected: Vec<Vec<u8>> = (0..(BATCH * 2 + 3) as u32)
            .map(|i| i.to_le_bytes().to_vec())
            .chain([b"from c".to_vec()])
            .collect();
        assert_eq!(seen, expected);
        assert!(
            sources[..BATCH * 2 + 3]
                .iter()
                .all(|s| *s == a.local_addr().unwrap())
        );
        assert_eq!(sources[BATCH * 2 + 3], c.local_addr().unwrap());
    }

    #[tokio::test]
    async fn every_datagram_the_kernel_drops_on_a_full_receive_buffer_is_counted() {
        let (a, b) = pair().await;
        // The smallest buffer the kernel allows: a few datagrams fill it.
        let given = apply_buffers(&b, 1, 0).unwrap();
        assert!(given.receive < 16 * 1024, "{given:?}");
        let sent = 2000u64;
        let mut out = SendBatch::default();
        for i in 0..sent {
            out.push(&[i as u8; 200], b.local_addr().unwrap());
            if out.len() == BATCH {
                a.writable().await.unwrap();
                assert_eq!(out.flush(&a).failed, 0);
            }
        }
        a.writable().await.unwrap();
        out.flush(&a);
        // Nothing read meanwhile: most were dropped by the kernel. Read what was kept; the
        // drop counter rides on the datagrams queued after a drop, so send one more after the
        // buffer was drained to learn the final count.
        let mut rx = RecvBatch::new(256);
        let (mut received, mut dropped) = (0u64, 0u64);
        loop {
            match rx.recv(&b) {
                Ok(r) => {
                    received += r.count as u64;
                    dropped += r.kernel_drops;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        a.send_to(b"last", b.local_addr().unwrap()).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), b.readable())
            .await
            .unwrap()
            .unwrap();
        let r = rx.recv(&b).unwrap();
        received += r.count as u64;
        dropped += r.kernel_drops;
        assert!(
            dropped > 0,
            "a 2,000-datagram burst overflowed a tiny buffer"
        );
        assert_eq!(
            received + dropped,
            sent + 1,
            "received {received}, dropped {dropped}"
        );
    }

    #[tokio::test]
    async fn a_refused_destination_drops_one_datagram_and_the_rest_still_go() {
        let (a, b) = pair().await;
        let mut out = SendBatch::default();
        out.push(b"one", b.local_addr().unwrap());
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        out.push(b"bad", "[::1]:9".parse().unwrap());
        out.push(b"three", b.local_addr().unwrap());
        a.writable().await.unwrap();
        let f = out.flush(&a);
        assert_eq!((f.sent, f.failed), (2, 1));
        let mut rx = RecvBatch::new(16);
        let mut got = Vec::new();
        while got.len() < 2 {
            b.readable().await.unwrap();
            if rx.recv(&b).is_ok() {
                got.extend(rx.datagrams().map(|(d, _)| d.to_vec()));
            }
        }
        assert_eq!(got, [b"one".to_vec(), b"three".to_vec()]);
    }

    #[tokio::test]
    async fn buffer_sizes_are_applied_and_read_back() {
        let (a, _) = pair().await;
        let given = apply_buffers(&a, 1 << 20, 1 << 19).unwrap();
        // A privileged process gets the whole request, others at most the system maximum;
        // the kernel reports twice the size it was given.
        let max =
            |f: &str| -> usize { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
        assert!(given.receive >= 2 * (1usize << 20).min(max("/proc/sys/net/core/rmem_max")));
        assert!(given.send >= 2 * (1usize << 19).min(max("/proc/sys/net/core/wmem_max")));
        assert_eq!(given.receive, getsockopt(&a, sockopt::RcvBuf).unwrap());
        assert_eq!(given.send, getsockopt(&a, sockopt::SndBuf).unwrap());
        assert_eq!(getsockopt(&a, sockopt::RxqOvfl).unwrap(), 1);
    }
}
