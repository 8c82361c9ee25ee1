//! The board's network device: a Linux TAP (`embassy_net_tuntap::TunTap`, the file descriptor
//! and its reads and writes) driven as an `embassy_net_driver::Driver` that survives its link
//! going down.
//!
//! `embassy-net-tuntap`'s own driver panics when a write fails, and a TAP whose link is down
//! (`ip link set tapN down`) answers every write with EIO. Here a frame whose write fails is
//! held and written again after a pause ([`Backoff`]: doubling from [`FIRST_RETRY`] up to
//! [`MAX_RETRY`]); while a frame is held the driver takes no new one (smoltcp keeps them in
//! its sockets' buffers) and reports the link down. A failed read is counted and retried after
//! the same kind of pause. Every failed write and read is counted ([`TapStats`]) and logged:
//! the first failure of an outage as a warning, the recovery with the outage's failures and
//! length and the totals. The pauses are `async_io` timers, polled with the stack's waker
//! from `transmit`, `receive` and `link_state`.
// The only module with unsafe code: `Async::get_mut` (see the SAFETY comments).
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_net_tuntap::TunTap;

/// The first pause after a failed write or read.
pub const FIRST_RETRY: Duration = Duration::from_millis(10);
/// The longest pause: a link that comes back is used within this long.
pub const MAX_RETRY: Duration = Duration::from_millis(250);

/// The largest frame: the TAP's default 1500-byte IP MTU plus the Ethernet header (the rig's
/// TAPs keep the default; `TunTap` does not expose the one it reads).
pub const FRAME_MTU: usize = 1500 + 14;

/// What failed on the TAP since the board started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Writes that failed (each retried until it went through).
    pub write_failures: u64,
    /// Reads that failed with something other than "nothing to read".
    pub read_failures: u64,
    /// Outages: runs of failures ended by a write or read that worked.
    pub outages: u64,
}

/// The pauses between attempts during an outage, and its bookkeeping (sans-IO: the caller
/// passes the time).
#[derive(Debug, Default)]
pub struct Backoff {
    /// The outage in progress: when its first failure happened, and its failures so far.
    outage: Option<(Instant, u64)>,
    next: Duration,
}

/// An outage that just ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Failed attempts during it.
    pub failures: u64,
    /// From its first failure to the attempt that worked.
    pub lasted: Duration,
}

impl Backoff {
    /// A failure at `now`: how long to wait before the next attempt, and whether it is the
    /// first failure of an outage.
    pub fn failed(&mut self, now: Instant) -> (Duration, bool) {
        match &mut self.outage {
            Some((_, failures)) => {
                *failures += 1;
                self.next = (self.next * 2).min(MAX_RETRY);
                (self.next, false)
            }
            None => {
                self.outage = Some((now, 1));
                self.next = FIRST_RETRY;
                (self.next, true)
            }
        }
    }

    /// An attempt that worked at `now`: the outage it ended, if one was in progress.
    pub fn worked(&mut self, now: Instant) -> Option<Recovered> {
        self.outage.take().map(|(since, failures)| Recovered {
            failures,
            lasted: now.saturating_duration_since(since),
        })
    }

    /// Whether an outage is in progress.
    pub fn in_outage(&self) -> bool {
        self.outage.is_some()
    }
}

/// The TAP as the network stack's device.
pub struct TapDevice {
    name: String,
    device: Async<TunTap>,
    mac: [u8; 6],
    /// A frame whose write failed, written again when `pause` has passed.
    held: Option<Vec<u8>>,
    /// No write or read is tried before this fires.
    pause: Option<Timer>,
    backoff: Backoff,
    stats: TapStats,
}

impl TapDevice {
    /// Opens TAP `name` (it must exist) with hardware address `mac`.
    pub fn open(name: &str, mac: [u8; 6]) -> io::Result<TapDevice> {
        Ok(TapDevice {
            name: name.to_string(),
            device: Async::new(TunTap::new(name)?)?,
            mac,
            held: None,
            pause: None,
            backoff: Backoff::default(),
            stats: TapStats::default(),
        })
    }

    fn tap(&mut self) -> &mut TunTap {
        // SAFETY: the reference is only used for one read or write; the TAP is neither
        // replaced nor dropped through it, which is what `Async::get_mut` asks.
        unsafe { self.device.get_mut() }
    }

    /// Whether the pause after a failure is still running (its timer then wakes `cx`).
    fn pausing(&mut self, cx: &mut Context) -> bool {
        match &mut self.pause {
            Some(timer) => match Pin::new(timer).poll(cx) {
                Poll::Pending => true,
                Poll::Ready(_) => {
                    self.pause = None;
                    false
                }
            },
            None => false,
        }
    }

    fn failed(&mut self, what: &str, e: &io::Error) {
        let (wait, first) = self.backoff.failed(Instant::now());
        if first {
            self.stats.outages += 1;
            log::warn!(
                "{}: {what} failed: {e}; link down? retrying every {} ms at most (outage {})",
                self.name,
                MAX_RETRY.as_millis(),
                self.stats.outages
            );
        }
        self.pause = Some(Timer::after(wait));
    }

    fn worked(&mut self) {
        if let Some(r) = self.backoff.worked(Instant::now()) {
            log::info!(
                "{}: link back after {} failed attempts over {} ms (totals: {} failed writes, {} failed reads, {} outages)",
                self.name,
                r.failures,
                r.lasted.as_millis(),
                self.stats.write_failures,
                self.stats.read_failures,
                self.stats.outages
            );
        }
    }

    /// Writes `frame`; on failure holds it for a later attempt.
    fn write(&mut self, frame: Vec<u8>) {
        // A TAP takes a frame whole or not at all; a short write is a failed one.
        let result = match self.tap().write(&frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", frame.len()),
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.worked(),
            Err(e) => {
                self.stats.write_failures += 1;
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.failed("write", &e);
                } else {
                    self.pause = Some(Timer::after(FIRST_RETRY));
                }
                self.held = Some(frame);
            }
        }
    }

    /// Whether a new frame may be sent: no pause running and no frame held (a held frame is
    /// written again first).
    fn ready(&mut self, cx: &mut Context) -> bool {
        if self.pausing(cx) {
            return false;
        }
        if let Some(frame) = self.held.take() {
            self.write(frame);
            if self.held.is_some() {
                // Register the new pause's timer with this waker.
                self.pausing(cx);
                return false;
            }
        }
        true
    }
}

impl Driver for TapDevice {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.ready(cx) {
            return None;
        }
        let mut buffer = vec![0; FRAME_MTU];
        loop {
            match self.tap().read(&mut buffer) {
                Ok(n) => {
                    buffer.truncate(n);
                    self.worked();
                    return Some((RxToken { buffer }, TxToken { tap: self }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.device.poll_readable(cx).is_pending() {
                        return None;
                    }
                }
                Err(e) => {
                    self.stats.read_failures += 1;
                    self.failed("read", &e);
                    self.pausing(cx);
                    return None;
                }
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        self.ready(cx).then_some(TxToken { tap: self })
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        // Called after every poll of the stack: a pause started by a write in a TxToken gets
        // this waker here.
        self.pausing(cx);
        if self.held.is_some() || self.backoff.in_outage() {
            LinkState::Down
        } else {
            LinkState::Up
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = FRAME_MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// A received frame.
pub struct RxToken {
    buffer: Vec<u8>,
}

impl embassy_net_driver::RxToken for RxToken {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        f(&mut self.buffer)
    }
}

/// Room for one frame to send.
pub struct TxToken<'a> {
    tap: &'a mut TapDevice,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.tap.write(frame);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_a_success_ends_the_outage() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.in_outage());
        assert_eq!(b.worked(t0), None, "no outage, nothing recovered");
        assert_eq!(b.failed(t0), (FIRST_RETRY, true));
        let waits: Vec<u128> = (0..6).map(|_| b.failed(t0).0.as_millis()).collect();
        assert_eq!(waits, [20, 40, 80, 160, 250, 250]);
        assert!(b.in_outage());
        let back = t0 + Duration::from_millis(900);
        assert_eq!(
            b.worked(back),
            Some(Recovered {
                failures: 7,
                lasted: Duration::from_millis(900)
            })
        );
        assert!(!b.in_outage());
        // The next outage starts from the first pause again.
        assert_eq!(b.failed(back), (FIRST_RETRY, true));
    }
}
