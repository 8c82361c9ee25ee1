//! WebSocket connections still in their handshake (the WebSocket upgrade and the login),
//! capped at `limits.max_pending_handshakes`, with one the broker is waiting on closed to make
//! room.
//!
//! Without this cap, clients that open connections and never finish their login (from as many
//! source addresses as it takes to pass `limits.max_connections_per_ip`) hold connection slots
//! for the whole `timeouts.handshake_secs` and can fill `limits.max_connections`: a legitimate
//! login is then refused `SERVER_BUSY` for as long as the flood lasts. With it, a new connection
//! arriving when the cap is reached closes another (counted as
//! `broker_limit_rejections_total{limit="max_pending_handshakes"}`):
//!
//! * the oldest of those still **silent**, whose client has sent nothing for [`SILENT_GRACE`]
//!   or more (a client sends its upgrade request as soon as it is connected), preferring, among
//!   the [`LOOK_AT`] oldest silent ones, the oldest whose address has another silent connection
//!   (so a flood of several connections per address takes its own places before a lone
//!   client's);
//! * only when none of those can go, the oldest of those that have **spoken**
//!   ([`PendingGuard::spoke`]) and have then kept the broker waiting for their next message
//!   (the rest of the upgrade request, the HELLO, the LOGIN) for [`ANSWER_GRACE`] or more.
//!
//! So connections that never speak, however fast they are reopened and from however many
//! addresses, only ever take each other's places: a client that sends its upgrade request at
//! once gets through such a flood, unless `max_pending_handshakes` newer connections arrive
//! between its accept and the arrival of its request. Clients that speak and then stall compete
//! among themselves, oldest out first, once their grace is over.
//!
//! Only a connection the broker is **waiting on** is closed for room. One whose bytes are
//! already in its socket (the client sent its upgrade request or its next message, and the
//! broker has not read it yet) is passed over: the broker is behind, not the client, as in a
//! login storm after a broker restart, when thousands of plugs connect at once and each waits
//! its turn to be read. Closing those would throw away prompt clients' logins and make them all
//! retry. When none of the [`LOOK_AT`] oldest silent connections and the [`LOOK_AT`] oldest
//! that spoke can be closed, the newcomer is admitted over the cap, and the cap holds again as
//! the broker catches up. Since the table may then reach `limits.max_connections`, a newcomer
//! that limit refuses while the table is at or over its cap also closes one that can go
//! ([`Pending::make_room`]), so that connections that never speak cannot keep the others out
//! once their grace is over.
//!
//! `ws::accept` admits each connection the connection limits admitted ([`Pending::admit`]),
//! marks it [`PendingGuard::spoke`] when its first bytes arrive, and ends it if
//! [`PendingGuard::evicted`] completes during the upgrade; the endpoints' login waits for each
//! message with `ws::next_before`, which marks the start of each wait
//! ([`PendingGuard::waiting`]) and also ends on eviction (between messages only, so a login is
//! never cut off half-way), and drop the guard once the login is done. Every critical section
//! is a few ordered-map operations and a bounded number of socket peeks; no lock is held
//! across `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The connections in their handshake, oldest first (`limits.max_pending_handshakes`).
pub struct Pending {
    cap: usize,
    open: Arc<Mutex<Open>>,
    /// Whether a connection's socket holds bytes the broker has not read ([`has_unread`] but
    /// in the unit tests).
    unread: Probe,
}

/// Tells whether the socket behind a descriptor holds unread bytes.
type Probe = Box<dyn Fn(RawFd) -> bool + Send + Sync>;

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("cap", &self.cap)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// How many of the oldest silent connections, and of the oldest that spoke, are looked at for
/// one to close (bounded work per admission).
pub const LOOK_AT: usize = 8;

/// How many times [`LOOK_AT`] silent connections are looked at for one to close, while those
/// looked at turn out to have spoken.
const SILENT_ROUNDS: usize = 4;

/// How long a connection may stay silent after it was admitted before it may be closed for
/// room: a client sends its upgrade request as soon as it is connected, so this covers a busy
/// client between its connect and its write.
pub const SILENT_GRACE: Duration = Duration::from_millis(250);

/// How long a connection that spoke may wait for its client's next message before it may be
/// closed for room: the time a prompt client takes to compute and send its answer, with room
/// for a loaded machine.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// One pending connection: its eviction signal and its socket's descriptor (to see whether its
/// client is waiting on the broker). The descriptor is only peeked at, never read or written:
/// a connection that ends closes its socket a moment before its guard leaves the table, and if
/// the number is reused by then, an ending connection is judged by another socket's bytes.
#[derive(Debug)]
struct Entry {
    token: CancellationToken,
    fd: RawFd,
    /// Since when the broker has been waiting for this client's next message (for one that
    /// spoke).
    waiting_since: Instant,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// Pending connections whose clients have sent nothing yet, by admission order, with their
    /// addresses.
    silent: BTreeMap<u64, (IpAddr, Entry)>,
    /// Silent connections per address.
    silent_from: HashMap<IpAddr, usize>,
    /// The same for those that spoke, still upgrading or logging in.
    spoke: BTreeMap<u64, Entry>,
}

/// Whether `fd`'s socket holds bytes not read yet: a peek that neither waits nor takes them.
/// A closed, reset or unknown socket holds none.
fn has_unread(fd: RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    matches!(
        recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

impl Open {
    fn len(&self) -> usize {
        self.silent.len() + self.spoke.len()
    }

    /// Removes silent connection `id`, keeping the per-address count.
    fn remove_silent(&mut self, id: u64) -> Option<Entry> {
        let (ip, entry) = self.silent.remove(&id)?;
        if let Some(n) = self.silent_from.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.silent_from.remove(&ip);
            }
        }
        Some(entry)
    }

    /// The connection to close to make room at `now`, taken out of the table (see the module
    /// docs); `None` when none of those looked at is waiting on its client. Silent connections
    /// found with bytes waiting have spoken: they move to the spoken ones on the way (at most
    /// [`SILENT_ROUNDS`] x [`LOOK_AT`] of them per call), so the silent ones behind them are
    /// looked at.
    fn victim(&mut self, unread: &Probe, now: Instant) -> Option<CancellationToken> {
        for _ in 0..SILENT_ROUNDS {
            let mut waiting = Vec::new();
            let mut spoken = Vec::new();
            for (id, (ip, entry)) in self.silent.iter().take(LOOK_AT) {
                if now.duration_since(entry.waiting_since) < SILENT_GRACE {
                    // Just connected, its request may be on its way; the rest are younger.
                    break;
                }
                if unread(entry.fd) {
                    spoken.push(*id);
                } else {
                    waiting.push((*id, self.silent_from.get(ip).is_some_and(|n| *n > 1)));
                }
            }
            for id in &spoken {
                self.mark_spoke(*id, now);
            }
            let silent = waiting
                .iter()
                .find(|(_, shared)| *shared)
                .or(waiting.first())
                .map(|(id, _)| *id);
            if let Some(id) = silent {
                return self.remove_silent(id).map(|entry| entry.token);
            }
            if spoken.is_empty() {
                break;
            }
        }
        let spoke = self
            .spoke
            .iter()
            .take(LOOK_AT)
            .find(|(_, entry)| {
                now.duration_since(entry.waiting_since) >= ANSWER_GRACE && !unread(entry.fd)
            })
            .map(|(id, _)| *id)?;
        self.spoke.remove(&spoke).map(|entry| entry.token)
    }

    /// Moves silent connection `id` to those that spoke, waiting on it from `now`.
    fn mark_spoke(&mut self, id: u64, now: Instant) {
        if let Some(mut entry) = self.remove_silent(id) {
            entry.waiting_since = now;
            self.spoke.insert(id, entry);
        }
    }
}

impl Pending {
    /// At most `cap` connections waiting on their clients in their handshake at once (at
    /// least 1).
    pub fn new(cap: u32) -> Pending {
        Self::with_probe(cap, Box::new(has_unread))
    }

    /// [`Pending::new`], telling whether a connection's client is waiting on the broker with
    /// `unread` instead of looking at its socket.
    fn with_probe(cap: u32, unread: Probe) -> Pending {
        Pending {
            cap: cap.max(1) as usize,
            open: Arc::default(),
            unread,
        }
    }

    /// Admits one more connection from `ip`, on socket `fd`, into its handshake (as silent);
    /// when `cap` are already there, another that the broker is waiting on is signalled to
    /// close ([`PendingGuard::evicted`]; which one: see the module docs) and `true` is returned
    /// with the guard, for the caller to count. When the broker is behind on all of those it
    /// looks at, none is closed and the newcomer is admitted over the cap.
    pub fn admit(&self, ip: IpAddr, fd: RawFd, now: Instant) -> (PendingGuard, bool) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // One out for the one in, however far over the cap a storm took the table: the rest
        // drains as logins finish, without closing a crowd of them at once.
        let mut evicted = false;
        if open.len() >= self.cap
            && let Some(token) = open.victim(&self.unread, now)
        {
            token.cancel();
            evicted = true;
        }
        let id = open.next;
        open.next += 1;
        let token = CancellationToken::new();
        let entry = Entry {
            token: token.clone(),
            fd,
            waiting_since: now,
        };
        open.silent.insert(id, (ip, entry));
        *open.silent_from.entry(ip).or_default() += 1;
        let guard = PendingGuard {
            id,
            token,
            open: self.open.clone(),
        };
        (guard, evicted)
    }

    /// Closes one connection the broker is waiting on, if one can go (see the module docs), to
    /// make room for a newcomer the connection limits refused at `now`, when the table is at or
    /// over its cap (below it, the connections in their handshake are not what fills the
    /// limit); `true` when one was signalled, for the caller to count.
    pub fn make_room(&self, now: Instant) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() < self.cap {
            // The cap is not what let the table fill: the connection limit holds on its own.
            return false;
        }
        match open.victim(&self.unread, now) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connection is in its handshake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's place among the pending handshakes; dropping it (once the login is done
/// or the connection ends) frees the place.
#[derive(Debug)]
pub struct PendingGuard {
    id: u64,
    token: CancellationToken,
    open: Arc<Mutex<Open>>,
}

impl PendingGuard {
    /// Completes when a newer connection took this one's place: the handshake must end.
    pub async fn evicted(&self) {
        self.token.cancelled().await;
    }

    /// The connection's first bytes arrived at `now`: from now on it is closed to make room
    /// only when no silent connection can be, and only once it has kept the broker waiting
    /// [`ANSWER_GRACE`] (counted from `now`, then from each [`waiting`](Self::waiting)).
    pub fn spoke(&self, now: Instant) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.mark_spoke(self.id, now);
    }

    /// The broker starts waiting, at `now`, for the next message of this connection, which
    /// spoke (the broker has answered its last one).
    pub fn waiting(&self, now: Instant) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = open.spoke.get_mut(&self.id) {
            entry.waiting_since = now;
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.remove_silent(self.id).is_none() {
            open.spoke.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    /// No socket: the real probe finds nothing unread, so every connection waits on its client.
    const NO_SOCKET: RawFd = -1;

    /// The tests' start time (connections that spoke, spoke then).
    fn start() -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    /// A time after every earlier one of this test by [`SILENT_GRACE`], and after the grace of
    /// those that spoke at [`start`]: each connection admitted before may go.
    fn later() -> Instant {
        thread_local!(static STEP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        let step = STEP.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        start() + ANSWER_GRACE + SILENT_GRACE * step
    }

    #[test]
    fn a_just_connected_client_gets_its_grace_and_a_refused_newcomer_makes_room() {
        let p = Pending::new(1);
        let t = start();
        let (quiet, _) = p.admit(A, NO_SOCKET, t);
        let (_next, evicted) = p.admit(B, NO_SOCKET, t + SILENT_GRACE / 2);
        assert!(!evicted, "its request may still be on its way");
        assert!(!p.make_room(t + SILENT_GRACE / 2));
        assert!(p.make_room(t + SILENT_GRACE), "silent for its whole grace");
        let roomy = Pending::new(5);
        let (_alone, _) = roomy.admit(A, NO_SOCKET, t);
        assert!(
            !roomy.make_room(t + SILENT_GRACE),
            "below the cap the connection limit holds on its own"
        );
        assert!(quiet.token.is_cancelled());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_probe_sees_bytes_a_client_sent_and_not_before() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        assert!(!has_unread(server.as_raw_fd()), "nothing sent yet");
        client.write_all(b"GET").unwrap();
        let sent = Instant::now();
        while !has_unread(server.as_raw_fd()) {
            assert!(sent.elapsed() < Duration::from_secs(5), "the bytes arrive");
            std::thread::yield_now();
        }
        assert!(has_unread(server.as_raw_fd()), "a peek leaves them unread");
    }

    #[test]
    fn one_that_spoke_is_closed_for_room_only_after_keeping_the_broker_waiting_its_grace() {
        let p = Pending::new(1);
        let t = start();
        let (answered, _) = p.admit(A, NO_SOCKET, t);
        answered.spoke(t);
        let just_before = t + ANSWER_GRACE - Duration::from_millis(1);
        let (_next, evicted) = p.admit(B, NO_SOCKET, just_before);
        assert!(!evicted, "its client is still computing its answer");
        assert!(!answered.token.is_cancelled());
        // The broker answered again: the grace starts over.
        answered.waiting(just_before);
        let (later, evicted) = p.admit(B, NO_SOCKET, t + ANSWER_GRACE + SILENT_GRACE);
        assert!(evicted, "the silent newcomer goes first");
        assert!(!answered.token.is_cancelled());
        // One out per one in: the silent one first, then the one that kept the broker waiting.
        let (_last, evicted) = p.admit(B, NO_SOCKET, just_before + ANSWER_GRACE);
        assert!(evicted);
        assert!(later.token.is_cancelled() && !answered.token.is_cancelled());
        let (_final, evicted) = p.admit(B, NO_SOCKET, just_before + ANSWER_GRACE);
        assert!(evicted);
        assert!(
            answered.token.is_cancelled(),
            "it kept the broker waiting its grace"
        );
    }

    /// Pending handshakes whose sockets hold unread bytes when their descriptor is in the set.
    fn with_unread(cap: u32) -> (Pending, Arc<Mutex<std::collections::HashSet<RawFd>>>) {
        let unread = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let probe = unread.clone();
        let p = Pending::with_probe(cap, Box::new(move |fd| probe.lock().unwrap().contains(&fd)));
        (p, unread)
    }

    #[test]
    fn a_connection_whose_bytes_wait_unread_is_not_closed_for_room() {
        let t = start();
        let (p, unread) = with_unread(2);
        unread.lock().unwrap().extend([10, 11, 12]);
        let (first, _) = p.admit(A, 10, t);
        let (second, _) = p.admit(A, 11, t);
        // The clients sent their upgrade requests; the broker has not read them: nobody is
        // closed and the third is admitted over the cap.
        let (third, evicted) = p.admit(A, 12, t);
        assert!(!evicted, "the broker is behind, not the clients");
        assert_eq!(p.len(), 3);
        // The broker reads the first's request and answers it; a grace later its client has
        // sent nothing more, so it goes to make room. The others' bytes still wait unread: they
        // stay, and the newcomer comes in over the cap.
        first.spoke(t);
        unread.lock().unwrap().remove(&10);
        first.waiting(t);
        let (_fourth, evicted) = p.admit(B, 13, t + ANSWER_GRACE);
        assert!(evicted);
        assert!(first.token.is_cancelled(), "the one the broker waited on");
        assert!(!second.token.is_cancelled() && !third.token.is_cancelled());
        assert_eq!(
            p.len(),
            3,
            "over the cap while the broker is behind on the others"
        );
    }

    #[test]
    fn the_oldest_handshake_makes_room_and_finished_ones_free_theirs() {
        let p = Pending::new(2);
        let (first, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(!evicted);
        let (second, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(!evicted);
        let (third, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted, "the cap was reached");
        assert!(first.token.is_cancelled(), "the oldest is told to close");
        assert!(!second.token.is_cancelled() && !third.token.is_cancelled());
        assert_eq!(p.len(), 2);
        // A finished login frees its place: the next one evicts nobody.
        drop(third);
        let (_fourth, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(!evicted);
        assert!(!second.token.is_cancelled());
        // The evicted guard's drop removes nothing of the others.
        drop(first);
        assert_eq!(p.len(), 2);
        drop(second);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn silent_connections_make_room_before_those_that_spoke() {
        let p = Pending::new(3);
        let (oldest, _) = p.admit(A, NO_SOCKET, later());
        oldest.spoke(start());
        let (silent, _) = p.admit(A, NO_SOCKET, later());
        let (newer, _) = p.admit(A, NO_SOCKET, later());
        newer.spoke(start());
        let (next, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted);
        assert!(silent.token.is_cancelled(), "the silent one goes first");
        assert!(!oldest.token.is_cancelled() && !newer.token.is_cancelled());
        let (_last, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted);
        assert!(
            next.token.is_cancelled(),
            "the newer silent one before any that spoke"
        );
        assert!(!oldest.token.is_cancelled() && !newer.token.is_cancelled());
        // With no silent one left (the newest spoke), the oldest that spoke goes.
        _last.spoke(start());
        let (_again, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted);
        assert!(oldest.token.is_cancelled());
        assert!(!newer.token.is_cancelled());
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_lone_client_keeps_its_place_while_an_address_with_several_gives_one_up() {
        let p = Pending::new(3);
        let (lone, _) = p.admit(B, NO_SOCKET, later());
        let (flood1, _) = p.admit(A, NO_SOCKET, later());
        let (flood2, _) = p.admit(A, NO_SOCKET, later());
        let (flood3, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted);
        assert!(
            !lone.token.is_cancelled(),
            "older, but alone on its address"
        );
        assert!(
            flood1.token.is_cancelled(),
            "the oldest of the address with several"
        );
        // With one silent connection per address left, the oldest goes.
        drop(flood2);
        let (_c, _) = p.admit(
            std::net::Ipv4Addr::new(192, 0, 2, 3).into(),
            NO_SOCKET,
            later(),
        );
        assert_eq!(p.len(), 3);
        let (_d, evicted) = p.admit(
            std::net::Ipv4Addr::new(192, 0, 2, 4).into(),
            NO_SOCKET,
            later(),
        );
        assert!(evicted);
        assert!(lone.token.is_cancelled());
        assert!(!flood3.token.is_cancelled());
    }

    #[tokio::test]
    async fn an_evicted_guard_wakes_its_waiter() {
        let p = Pending::new(1);
        let (old, _) = p.admit(A, NO_SOCKET, later());
        let waiter = tokio::spawn(async move { old.evicted().await });
        let (_new, evicted) = p.admit(A, NO_SOCKET, later());
        assert!(evicted);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
