//! A board's impaired UDP path: a relay between the board and the broker that drops, delays
//! (with jitter), reorders and duplicates datagrams by a [`Profile`] that a scenario can change
//! while it runs, and counts every datagram it drops or adds. It also imitates a NAT rebinding
//! ([`Relay::rebind`]: the broker sees the board's packets come from a new source port).
//!
//! Why in user space: the kernel of the machines this suite runs on may lack `sch_netem` (this
//! project's CI kernel has no `tc` qdiscs at all), so `tc netem` cannot be relied on. The
//! profile's fields and meaning follow netem's: `loss_pct`, `delay_ms` ± `jitter_ms` (uniform),
//! `reorder_pct` (that share of datagrams skips the delay, so it overtakes delayed ones; needs a
//! delay, as in netem) and `duplicate_pct`. Each direction is impaired on its own.
//!
//! The board's provisioning record names the relay's board-facing address as its UDP broker;
//! the relay forwards to the broker's real UDP endpoint from an upstream socket of its own.
//! WebSocket (TCP) traffic is not relayed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How a path is impaired (all zero: a clean path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Share of datagrams dropped, percent.
    pub loss_pct: f64,
    /// Delay of every datagram, ms.
    pub delay_ms: u64,
    /// Uniform jitter around the delay, ± ms.
    pub jitter_ms: u64,
    /// Share of datagrams sent without the delay (they overtake delayed ones), percent.
    pub reorder_pct: f64,
    /// Share of datagrams sent twice, percent.
    pub duplicate_pct: f64,
}

impl Profile {
    /// Loss only.
    pub fn loss(pct: f64) -> Profile {
        Profile {
            loss_pct: pct,
            ..Profile::default()
        }
    }

    /// When to send copies of one datagram (empty: dropped; two entries: duplicated).
    pub fn plan(&self, rng: &mut impl Rng) -> Vec<Duration> {
        if rng.random_bool((self.loss_pct / 100.0).clamp(0.0, 1.0)) {
            return Vec::new();
        }
        let copies = if rng.random_bool((self.duplicate_pct / 100.0).clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if self.delay_ms == 0 || rng.random_bool((self.reorder_pct / 100.0).clamp(0.0, 1.0))
                {
                    return Duration::ZERO;
                }
                let low = self.delay_ms.saturating_sub(self.jitter_ms);
                let high = self.delay_ms + self.jitter_ms;
                Duration::from_millis(rng.random_range(low..=high))
            })
            .collect()
    }
}

/// What happened to the datagrams of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received on this direction.
    pub received: AtomicU64,
    /// Dropped by the profile's loss.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Sent without the delay while a delay was set.
    pub undelayed: AtomicU64,
    /// Copies sent (received − dropped + duplicated, once the delayed ones are out).
    pub sent: AtomicU64,
}

impl Counters {
    /// `received/dropped/duplicated/sent` as text.
    pub fn summary(&self) -> String {
        format!(
            "received {}, dropped {}, duplicated {}, undelayed {}, sent {}",
            self.received.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed),
            self.undelayed.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed)
        )
    }
}

/// How many datagrams the relay's trace keeps (the latest, both directions together).
pub const TRACE_LEN: usize = 64;

/// One datagram the relay handled, for the trace a failing scenario prints.
#[derive(Debug, Clone, Copy)]
struct Traced {
    /// Since the relay started.
    at: Duration,
    to_broker: bool,
    len: usize,
    /// How many copies were sent (0: dropped, 2: duplicated).
    copies: usize,
    /// How long the first copy was held back.
    first_delay: Duration,
}

/// The latest [`TRACE_LEN`] datagrams, oldest first.
struct Trace {
    started: Instant,
    entries: Mutex<VecDeque<Traced>>,
}

impl Trace {
    fn new() -> Trace {
        Trace {
            started: Instant::now(),
            entries: Mutex::new(VecDeque::with_capacity(TRACE_LEN)),
        }
    }

    fn record(&self, to_broker: bool, len: usize, plan: &[Duration]) {
        let entry = Traced {
            at: self.started.elapsed(),
            to_broker,
            len,
            copies: plan.len(),
            first_delay: plan.first().copied().unwrap_or_default(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == TRACE_LEN {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    fn render(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for e in entries.iter() {
            let way = if e.to_broker {
                "board->broker"
            } else {
                "broker->board"
            };
            let fate = match e.copies {
                0 => "dropped".to_string(),
                1 if e.first_delay.is_zero() => "sent".to_string(),
                1 => format!("sent after {} ms", e.first_delay.as_millis()),
                n => format!("sent {n} times"),
            };
            let _ = writeln!(
                out,
                "{:>9.3} s {way} {:>4} B {fate}",
                e.at.as_secs_f64(),
                e.len
            );
        }
        out
    }
}

struct Shared {
    trace: Trace,
    profile: Mutex<Profile>,
    board: Mutex<Option<SocketAddr>>,
    upstream: Mutex<Arc<UdpSocket>>,
    to_broker: Counters,
    to_board: Counters,
    broker: SocketAddr,
    rng: Mutex<StdRng>,
}

impl Shared {
    fn profile(&self) -> Profile {
        *self.profile.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copies of one `len`-byte datagram, recorded in the trace.
    fn plan(&self, to_broker: bool, len: usize) -> Vec<Duration> {
        let profile = self.profile();
        let plan = profile.plan(&mut *self.rng.lock().unwrap_or_else(PoisonError::into_inner));
        self.trace.record(to_broker, len, &plan);
        plan
    }
}

/// One board's relay; its tasks end when it drops.
pub struct Relay {
    shared: Arc<Shared>,
    listen: Arc<UdpSocket>,
    down: JoinHandle<()>,
    up: Mutex<JoinHandle<()>>,
}

/// Sends one datagram by `plan`, counting into `c`.
fn dispatch(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    data: &[u8],
    plan: Vec<Duration>,
    c: &Counters,
    delayed: bool,
) {
    c.received.fetch_add(1, Ordering::Relaxed);
    if plan.is_empty() {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if plan.len() > 1 {
        c.duplicated
            .fetch_add(plan.len() as u64 - 1, Ordering::Relaxed);
    }
    for wait in plan {
        if wait.is_zero() {
            if delayed {
                c.undelayed.fetch_add(1, Ordering::Relaxed);
            }
            if socket.try_send_to(data, to).is_ok() {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let socket = socket.clone();
            let data = data.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = socket.send_to(&data, to).await;
            });
            c.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Relay {
    /// A relay listening on `bind` (port 0: any) for the board, forwarding to `broker`.
    pub async fn start(bind: SocketAddr, broker: SocketAddr) -> std::io::Result<Relay> {
        let listen = Arc::new(UdpSocket::bind(bind).await?);
        let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).await?);
        let shared = Arc::new(Shared {
            trace: Trace::new(),
            profile: Mutex::new(Profile::default()),
            board: Mutex::new(None),
            upstream: Mutex::new(upstream.clone()),
            to_broker: Counters::default(),
            to_board: Counters::default(),
            broker,
            rng: Mutex::new(StdRng::from_os_rng()),
        });
        let down = tokio::spawn(board_to_broker(listen.clone(), shared.clone()));
        let up = tokio::spawn(broker_to_board(upstream, listen.clone(), shared.clone()));
        Ok(Relay {
            shared,
            listen,
            down,
            up: Mutex::new(up),
        })
    }

    /// Where the board sends (its record's UDP broker, as reached on the bind address).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listen.local_addr()
    }

    /// Changes the profile of both directions from now on.
    pub fn set_profile(&self, profile: Profile) {
        *self
            .shared
            .profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = profile;
    }

    /// A NAT rebinding: later packets to the broker leave from a new socket (new source port);
    /// answers to the old one are no longer delivered.
    pub async fn rebind(&self) -> std::io::Result<()> {
        let old = self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let fresh = Arc::new(UdpSocket::bind(SocketAddr::new(old.local_addr()?.ip(), 0)).await?);
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        let task = tokio::spawn(broker_to_board(
            fresh,
            self.listen.clone(),
            self.shared.clone(),
        ));
        let old_task = std::mem::replace(
            &mut *self.up.lock().unwrap_or_else(PoisonError::into_inner),
            task,
        );
        old_task.abort();
        Ok(())
    }

    /// The latest [`TRACE_LEN`] datagrams of both directions, one line each, oldest first:
    /// when (since the relay started), which way, how long, and whether it was dropped.
    pub fn trace(&self) -> String {
        self.shared.trace.render()
    }

    /// Board → broker counters.
    pub fn to_broker(&self) -> &Counters {
        &self.shared.to_broker
    }

    /// Broker → board counters.
    pub fn to_board(&self) -> &Counters {
        &self.shared.to_board
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down.abort();
        self.up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort();
    }
}

async fn board_to_broker(listen: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = listen.recv_from(&mut buf).await {
        *shared.board.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
        let upstream = shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let delayed = shared.profile().delay_ms > 0;
        dispatch(
            &upstream,
            shared.broker,
            &buf[..n],
            shared.plan(true, n),
            &shared.to_broker,
            delayed,
        );
    }
}

async fn broker_to_board(upstream: Arc<UdpSocket>, listen: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, _)) = upstream.recv_from(&mut buf).await {
        let board = *shared.board.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(board) = board else { continue };
        let delayed = shared.profile().delay_ms > 0;
        dispatch(
            &listen,
            board,
            &buf[..n],
            shared.plan(false, n),
            &shared.to_board,
            delayed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn a_clean_profile_sends_each_datagram_once_at_once() {
        let mut r = rng();
        for _ in 0..1000 {
            assert_eq!(Profile::default().plan(&mut r), [Duration::ZERO]);
        }
    }

    #[test]
    fn loss_duplicates_delay_and_reordering_follow_the_profile() {
        let mut r = rng();
        assert!(Profile::loss(100.0).plan(&mut r).is_empty());
        let lossy = Profile::loss(20.0);
        let lost = (0..10_000)
            .filter(|_| lossy.plan(&mut r).is_empty())
            .count();
        assert!(
            (1_800..=2_200).contains(&lost),
            "{lost} of 10000 lost at 20%"
        );
        let dup = Profile {
            duplicate_pct: 100.0,
            ..Profile::default()
        };
        assert_eq!(dup.plan(&mut r).len(), 2);
        let jittery = Profile {
            delay_ms: 50,
            jitter_ms: 20,
            reorder_pct: 25.0,
            ..Profile::default()
        };
        let plans: Vec<Duration> = (0..4_000).flat_map(|_| jittery.plan(&mut r)).collect();
        let undelayed = plans.iter().filter(|d| d.is_zero()).count();
        assert!(
            (800..=1_200).contains(&undelayed),
            "{undelayed} of 4000 undelayed at 25%"
        );
        assert!(
            plans
                .iter()
                .filter(|d| !d.is_zero())
                .all(|d| (30..=70).contains(&d.as_millis()))
        );
        assert!(
            plans.iter().any(|d| d.as_millis() < 40) && plans.iter().any(|d| d.as_millis() > 60)
        );
    }

    #[tokio::test]
    async fn relays_both_ways_counts_drops_and_rebinds_to_a_new_source_port() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let broker = UdpSocket::bind(lo).await.unwrap();
        let board = UdpSocket::bind(lo).await.unwrap();
        let relay = Relay::start(lo, broker.local_addr().unwrap())
            .await
            .unwrap();
        let to = relay.local_addr().unwrap();
        async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
            let mut buf = [0u8; 64];
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                    .await
                    .expect("a datagram within 5 s")
                    .unwrap();
            (buf[..n].to_vec(), from)
        }

        board.send_to(b"hello", to).await.unwrap();
        let (data, first_source) = recv(&broker).await;
        assert_eq!(data, b"hello");
        broker.send_to(b"answer", first_source).await.unwrap();
        assert_eq!(recv(&board).await.0, b"answer");

        relay.set_profile(Profile::loss(100.0));
        for _ in 0..5 {
            board.send_to(b"lost", to).await.unwrap();
        }
        // The relay must have seen them under the lossy profile before it changes back.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while relay.to_broker().received.load(Ordering::Relaxed) < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "the relay never read the datagrams"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.set_profile(Profile::default());
        relay.rebind().await.unwrap();
        board.send_to(b"after", to).await.unwrap();
        let (data, second_source) = recv(&broker).await;
        assert_eq!(data, b"after", "a dropped datagram was delivered");
        assert_ne!(
            first_source.port(),
            second_source.port(),
            "rebind kept the source port"
        );
        broker.send_to(b"again", second_source).await.unwrap();
        assert_eq!(recv(&board).await.0, b"again");
        assert_eq!(relay.to_broker().dropped.load(Ordering::Relaxed), 5);
        assert_eq!(relay.to_broker().received.load(Ordering::Relaxed), 7);
        assert_eq!(relay.to_broker().sent.load(Ordering::Relaxed), 2);
        assert_eq!(relay.to_board().sent.load(Ordering::Relaxed), 2);
        // The trace: hello, answer, five lost, after, again, in order, with their fates.
        let trace = relay.trace();
        let lines: Vec<&str> = trace.lines().collect();
        assert_eq!(lines.len(), 9, "{trace}");
        assert!(lines[0].ends_with("board->broker    5 B sent"), "{trace}");
        assert!(lines[1].ends_with("broker->board    6 B sent"), "{trace}");
        assert!(
            lines[2..7]
                .iter()
                .all(|l| l.ends_with("board->broker    4 B dropped")),
            "{trace}"
        );
        assert!(lines[8].ends_with("broker->board    5 B sent"), "{trace}");
    }

    #[test]
    fn the_trace_keeps_the_latest_datagrams() {
        let trace = Trace::new();
        for len in 0..TRACE_LEN + 10 {
            trace.record(true, len, &[Duration::from_millis(3)]);
        }
        let shown = trace.render();
        assert_eq!(shown.lines().count(), TRACE_LEN);
        assert!(
            shown
                .lines()
                .next()
                .unwrap()
                .contains("  10 B sent after 3 ms"),
            "{shown}"
        );
    }
}
