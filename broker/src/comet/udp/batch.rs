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
//!   reliability layer resends what mattered). Datagrams of one length to one peer go as one
//!   segmented message (`UDP_SEGMENT`), which the kernel takes through its stack once.
//! * [`apply_buffers`] sets the socket's receive and send buffer sizes and returns what the
//!   kernel really gave.
//!
//! Nothing here knows about the protocol: the shards decide what a datagram
//! means.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, getsockopt,
    recvmmsg, sendmmsg, setsockopt, sockopt,
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
    /// Segmented messages among those sent (each several datagrams to one destination).
    pub segmented: u64,
}

/// Most datagrams one segmented message carries (the kernel's `UDP_MAX_SEGMENTS` since Linux
/// 4.18).
const MAX_SEGMENTS: usize = 64;
/// Most bytes one segmented message carries (an IP packet's limit, headers left room).
const MAX_SEGMENTED_BYTES: usize = 65_000;
/// No next datagram in a message.
const NONE: u32 = u32::MAX;

/// Outgoing datagrams waiting for the next [`SendBatch::flush`].
///
/// Datagrams of one length to one destination leave as one segmented message (`UDP_SEGMENT`,
/// generic segmentation offload) when nothing else to that destination lies between them: the
/// kernel takes them through its stack once and cuts them into the same datagrams at the end,
/// so the peer receives exactly what separate sends would have given it, in the same order.
/// Datagrams to different destinations may leave in another order than they were queued (a
/// message goes where its first datagram was). A kernel or device that refuses segmentation
/// (`EIO` where the device cannot checksum for it) turns it off for this batch's later
/// flushes, and the datagrams of the refused message are sent one by one instead.
pub struct SendBatch {
    /// The datagrams' bytes, back to back.
    bytes: Vec<u8>,
    /// End offset in `bytes` and destination of each datagram.
    items: Vec<(usize, SocketAddr)>,
    /// Whether datagrams to one destination are gathered into segmented messages.
    segment: bool,
    /// The messages of the flush being made (kept to reuse their memory).
    messages: Vec<Message>,
    /// Per datagram, the next datagram of its message ([`NONE`] for the last).
    next_in_message: Vec<u32>,
    /// Per destination, its latest message in `messages`.
    latest: HashMap<SocketAddr, u32, foldhash::fast::FixedState>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bytes: Vec::new(),
            items: Vec::new(),
            segment: true,
            messages: Vec::new(),
            next_in_message: Vec::new(),
            latest: HashMap::default(),
        }
    }
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("waiting", &self.items.len())
            .field("segment", &self.segment)
            .finish()
    }
}

/// One message of a `sendmmsg` call: `count` datagrams of `len` bytes each (the last may be
/// shorter only when `count` is 1), chained from datagram `first` through `next_in_message`,
/// all to the destination of `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Message {
    first: u32,
    last: u32,
    count: u32,
    len: u32,
}

impl SendBatch {
    /// A batch that never segments (every datagram its own message, in queue order), as a
    /// kernel without `UDP_SEGMENT` needs.
    pub fn unsegmented() -> SendBatch {
        SendBatch {
            segment: false,
            ..SendBatch::default()
        }
    }

    /// Queues `packet` for `to`.
    pub fn push(&mut self, packet: &[u8], to: SocketAddr) {
        self.bytes.extend_from_slice(packet);
        self.items.push((self.bytes.len(), to));
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Byte range of datagram `i` in `bytes`.
    fn span(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.items[i - 1].0 };
        start..self.items[i].0
    }

    /// Builds the messages of datagrams `items` (in this order) from message `from` on: with
    /// `segment`, a datagram joins its destination's latest message when it has that message's
    /// length and there is room; otherwise it starts a message of its own.
    fn gather(&mut self, from: usize, items: impl IntoIterator<Item = usize>, segment: bool) {
        self.messages.truncate(from);
        self.latest.clear();
        self.next_in_message.resize(self.items.len(), NONE);
        for i in items {
            let len = self.span(i).len() as u32;
            let to = self.items[i].1;
            self.next_in_message[i] = NONE;
            if segment
                && let Some(&m) = self.latest.get(&to)
                && let msg = &mut self.messages[m as usize]
                && msg.len == len
                && (msg.count as usize) < MAX_SEGMENTS
                && (msg.count as usize + 1) * len as usize <= MAX_SEGMENTED_BYTES
            {
                self.next_in_message[msg.last as usize] = i as u32;
                msg.last = i as u32;
                msg.count += 1;
                continue;
            }
            self.messages.push(Message {
                first: i as u32,
                last: i as u32,
                count: 1,
                len,
            });
            if segment {
                self.latest.insert(to, (self.messages.len() - 1) as u32);
            }
        }
    }

    /// The datagrams of message `m`, in order.
    fn datagrams_of(&self, m: &Message) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(m.first), |&i| {
            Some(self.next_in_message[i as usize]).filter(|&n| n != NONE)
        })
        .map(|i| i as usize)
    }

    /// How many messages from `next` on go in one call (at least one), and the segment size
    /// they share. The kernel applies a call's segment size to each of its messages, so a
    /// call holds segmented messages of one length only, and single datagrams no longer than
    /// it (those go out whole).
    fn plan(&self, next: usize) -> (usize, Option<u16>) {
        let mut segment: Option<u32> = None;
        let mut longest_single = 0;
        let mut taken = 0;
        for msg in self.messages[next..].iter().take(BATCH) {
            if msg.count > 1 {
                match segment {
                    None if longest_single <= msg.len => segment = Some(msg.len),
                    Some(s) if s == msg.len => {}
                    _ => break,
                }
            } else {
                if segment.is_some_and(|s| msg.len > s) {
                    break;
                }
                longest_single = longest_single.max(msg.len);
            }
            taken += 1;
        }
        (taken.max(1), segment.map(|s| s as u16))
    }

    /// Offers the messages of `call` to the kernel in one `sendmmsg` call, `segment_size` (when
    /// set) on each of them; how many messages it took, or why it took none.
    fn send_call(
        &self,
        socket: &UdpSocket,
        headers: &mut MultiHeaders<SockaddrStorage>,
        call: &[Message],
        segment_size: Option<u16>,
    ) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = call
            .iter()
            .flat_map(|m| self.datagrams_of(m))
            .map(|i| IoSlice::new(&self.bytes[self.span(i)]))
            .collect();
        let mut rest = slices.as_slice();
        let per_message: Vec<&[IoSlice<'_>]> = call
            .iter()
            .map(|m| {
                let (this, after) = rest.split_at(m.count as usize);
                rest = after;
                this
            })
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = call
            .iter()
            .map(|m| Some(SockaddrStorage::from(self.items[m.first as usize].1)))
            .collect();
        let fd = socket.as_raw_fd();
        socket.try_io(Interest::WRITABLE, || {
            let size = segment_size.unwrap_or(0);
            let gso = [ControlMessage::UdpGsoSegments(&size)];
            let cmsgs: &[ControlMessage<'_>] = if segment_size.is_some() { &gso } else { &[] };
            sendmmsg(
                fd,
                headers,
                per_message.iter(),
                &addrs,
                cmsgs,
                MsgFlags::empty(),
            )
            .map(|results| results.count())
            .map_err(io::Error::from)
        })
    }

    /// Hands every waiting datagram to the kernel, [`BATCH`] messages per call, without
    /// waiting; the queue is empty afterwards. When the socket's send buffer is full the rest
    /// is dropped; a destination the kernel refuses drops that one datagram and the others
    /// still go.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut out = Flushed::default();
        self.gather(0, 0..self.items.len(), self.segment);
        // Made per flush, not kept: the headers hold raw pointers, so a value keeping them
        // could not move between the runtime's threads. A call with a segment size needs room
        // for it in every header; one without must have no control buffer at all.
        let mut whole = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut segmented = None;
        let mut next = 0;
        while next < self.messages.len() {
            let (count, segment_size) = self.plan(next);
            let headers = match segment_size {
                None => &mut whole,
                Some(_) => segmented.get_or_insert_with(|| {
                    MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(nix::cmsg_space!(u16)))
                }),
            };
            out.calls += 1;
            let call = &self.messages[next..next + count];
            let r = self.send_call(socket, headers, call, segment_size);
            let first = call[0];
            match r {
                Ok(n) if n > 0 => {
                    let taken = &call[..n];
                    out.sent += taken.iter().map(|m| u64::from(m.count)).sum::<u64>();
                    out.segmented += taken.iter().filter(|m| m.count > 1).count() as u64;
                    next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.failed += self.messages[next..]
                        .iter()
                        .map(|m| u64::from(m.count))
                        .sum::<u64>();
                    break;
                }
                // A segmented message was refused: send the datagrams still waiting one by
                // one, in the order the messages would have taken them (and, where the device
                // cannot segment at all, never segment again on this batch).
                Err(e) if first.count > 1 => {
                    if e.raw_os_error() == Some(nix::libc::EIO) {
                        self.segment = false;
                    }
                    let waiting: Vec<usize> = self.messages[next..]
                        .iter()
                        .flat_map(|m| self.datagrams_of(m))
                        .collect();
                    self.gather(next, waiting, false);
                }
                // The first datagram of the call was refused (or nothing was taken): drop it,
                // go on with the rest.
                _ => {
                    out.failed += u64::from(first.count);
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.items.clear();
        self.messages.clear();
        self.next_in_message.clear();
        self.latest.clear();
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

    /// Reads `n` datagrams from `socket` with [`RecvBatch`] (slots of `slot` bytes; none
    /// dropped by the kernel on the way), with their sources, in arrival order.
    async fn read_datagrams(
        socket: &UdpSocket,
        slot: usize,
        n: usize,
    ) -> (Vec<Vec<u8>>, Vec<SocketAddr>) {
        let mut rx = RecvBatch::new(slot);
        let (mut data, mut sources) = (Vec::new(), Vec::new());
        while data.len() < n {
            tokio::time::timeout(std::time::Duration::from_secs(5), socket.readable())
                .await
                .unwrap_or_else(|_| panic!("{} of {n} datagrams within 5 s", data.len()))
                .unwrap();
            let Ok(r) = rx.recv(socket) else { continue };
            assert!(r.count <= BATCH);
            assert_eq!(r.kernel_drops, 0);
            for (d, from) in rx.datagrams() {
                data.push(d.to_vec());
                sources.push(from);
            }
        }
        (data, sources)
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
        // One destination, one length: two segmented messages (64 datagrams, then 3).
        assert_eq!((f.calls, f.segmented), (1, 2));
        assert!(out.is_empty());
        // A second sender, so sources are told apart.
        out.push(b"from c", b.local_addr().unwrap());
        c.writable().await.unwrap();
        assert_eq!(out.flush(&c).sent, 1);

        let (seen, sources) = read_datagrams(&b, 16, BATCH * 2 + 4).await;
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
    async fn unsegmented_a_batch_takes_one_call_per_batch_of_datagrams() {
        let (a, b) = pair().await;
        let mut out = SendBatch::unsegmented();
        for i in 0..(BATCH * 2 + 3) as u32 {
            out.push(&i.to_le_bytes(), b.local_addr().unwrap());
        }
        a.writable().await.unwrap();
        let f = out.flush(&a);
        assert_eq!(
            (f.sent, f.failed, f.segmented),
            ((BATCH * 2 + 3) as u64, 0, 0)
        );
        assert_eq!(f.calls, 3, "one call per {BATCH} datagrams");
        let (seen, _) = read_datagrams(&b, 16, BATCH * 2 + 3).await;
        let expected: Vec<Vec<u8>> = (0..(BATCH * 2 + 3) as u32)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        assert_eq!(seen, expected);
    }

    /// The plan of the first call of a batch of `(length, destination)` datagrams: each
    /// message's datagrams and the call's segment size.
    fn first_call(datagrams: &[(usize, SocketAddr)]) -> (Vec<Vec<usize>>, Option<u16>) {
        let mut out = SendBatch::default();
        for &(len, to) in datagrams {
            out.push(&vec![7; len], to);
        }
        out.gather(0, 0..out.items.len(), true);
        let (count, segment) = out.plan(0);
        let messages = out.messages[..count]
            .iter()
            .map(|m| out.datagrams_of(m).collect())
            .collect();
        (messages, segment)
    }

    #[test]
    fn datagrams_of_one_length_to_one_destination_become_segmented_messages() {
        let (x, y): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        );
        // Three of 40 B to x, a single to y, two of 40 B to y: one call, segment 40.
        assert_eq!(
            first_call(&[(40, x), (40, x), (40, x), (30, y), (40, y), (40, y)]),
            (vec![vec![0, 1, 2], vec![3], vec![4, 5]], Some(40))
        );
        // Interleaved destinations are gathered, each in its own order.
        assert_eq!(
            first_call(&[(40, x), (40, y), (40, x), (40, y)]),
            (vec![vec![0, 2], vec![1, 3]], Some(40))
        );
        // A datagram of another length to the same destination keeps its place: nothing
        // after it joins a message before it.
        assert_eq!(
            first_call(&[(40, x), (20, x), (40, x)]),
            (vec![vec![0], vec![1], vec![2]], None)
        );
        assert_eq!(
            first_call(&[(40, x), (40, x), (20, x), (40, x)]),
            (vec![vec![0, 1], vec![2], vec![3]], Some(40))
        );
        // Segmented messages of another length end the call (one segment size a call).
        assert_eq!(
            first_call(&[(40, x), (40, x), (50, y), (50, y)]),
            (vec![vec![0, 1]], Some(40))
        );
        // So does a single longer than the call's segments, which would be cut into them.
        assert_eq!(
            first_call(&[(40, x), (40, x), (41, y)]),
            (vec![vec![0, 1]], Some(40))
        );
        // A single before the first segmented message must not be longer than its segments.
        assert_eq!(
            first_call(&[(60, y), (40, x), (40, x)]),
            (vec![vec![0]], None)
        );
        // No two alike: no segment size.
        assert_eq!(
            first_call(&[(40, x), (40, y)]),
            (vec![vec![0], vec![1]], None)
        );
        // A message stops at the kernel's segment limit.
        let many = vec![(10, x); MAX_SEGMENTS + 5];
        assert_eq!(
            first_call(&many),
            (
                vec![
                    (0..MAX_SEGMENTS).collect(),
                    (MAX_SEGMENTS..MAX_SEGMENTS + 5).collect()
                ],
                Some(10)
            )
        );
    }

    #[tokio::test]
    async fn interleaved_runs_arrive_as_the_same_datagrams_in_the_same_order() {
        let (a, b) = pair().await;
        let (c, _) = pair().await;
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut out = SendBatch::default();
        let mut expected_b = Vec::new();
        let mut expected_c = Vec::new();
        for i in 0..200u32 {
            // Runs of 5 to b, then 3 to c, with a shorter datagram now and then.
            let len = if i % 17 == 0 { 6 } else { 12 };
            let mut d = vec![0u8; len];
            d[..4].copy_from_slice(&i.to_le_bytes());
            if i % 8 < 5 {
                out.push(&d, to_b);
                expected_b.push(d);
            } else {
                out.push(&d, to_c);
                expected_c.push(d);
            }
        }
        a.writable().await.unwrap();
        let f = out.flush(&a);
        assert_eq!((f.sent, f.failed), (200, 0));
        assert!(f.segmented > 0, "{f:?}");
        for (socket, expected) in [(&b, expected_b), (&c, expected_c)] {
            let (seen, _) = read_datagrams(socket, 64, expected.len()).await;
            assert_eq!(seen, expected);
        }
    }

    #[tokio::test]
    async fn every_datagram_the_kernel_drops_on_a_full_receive_buffer_is_counted() {
        let (a, b) = pair().await;
        // The smallest buffer the kernel allows: a few datagrams fill it.
        let given = apply_buffers(&b, 1, 0).unwrap();
        assert!(given.receive < 16 * 1024, "{given:?}");
        let sent = 2000u64;
        // Unsegmented: the drop counter of a receiver that drops the datagrams of a segmented
        // message (Linux 6.18 here) does not count them, though the system's UDP counters do.
        let mut out = SendBatch::unsegmented();
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
    async fn a_refused_segmented_message_is_sent_again_one_datagram_at_a_time() {
        let (a, b) = pair().await;
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let mut out = SendBatch::default();
        // Two alike to b, two alike to a destination the kernel refuses, one more to b: the
        // refused message is split, each of its datagrams refused and counted on its own.
        out.push(b"one", b.local_addr().unwrap());
        out.push(b"bad", bad);
        out.push(b"two", b.local_addr().unwrap());
        out.push(b"bad", bad);
        out.push(b"three", b.local_addr().unwrap());
        a.writable().await.unwrap();
        let f = out.flush(&a);
        assert_eq!((f.sent, f.failed, f.segmented), (3, 2, 1), "{f:?}");
        let (got, _) = read_datagrams(&b, 16, 3).await;
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
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
        let (got, _) = read_datagrams(&b, 16, 2).await;
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
