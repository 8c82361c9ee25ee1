//! Heap per idle UDP session, measured in-process: this test binary counts every byte the
//! process holds on the heap (a counting wrapper around the system allocator), logs devices in
//! over UDP, lets their clients go (their sessions live on in the broker until the silence
//! timeout) and divides the growth by the number of sessions.
//!
//! The guarantee it holds (docs/performance.md, "Memory per session"): an idle UDP session,
//! with everything the broker keeps for it (the shard's session, the router's handle and
//! registry entry, the login table's row for its device, the store's record of the terminal),
//! holds at most [`BOUND`] bytes of heap. Allocator overhead and fragmentation come on top; the
//! release bench (`cargo xtask bench --only idle-memory`) measures those in resident memory.
//!
//! The counting allocator is `heap_support`'s.

mod comet_support;
mod heap_support;

use broker::terminal::IdProfile;
use comet_support::*;
use heap_support::{Counting, settled_heap};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes an idle UDP session may hold. Measured since the session's slot lost its
/// connection guard, its router session's drop count and the link's second box, and the
/// registry's slot its key (docs/performance.md, "Figures: a 200 B UDP slot and an 8 B registry
/// slot"): 438 B. Which tables grow inside the measured window, rather than before it, moves the
/// figure by tens of bytes (one whole CI run read 642 B where quiet runs read 596-607 B), hence
/// the margin. Before that: 472 B with a 232 B slot, 112 B handle and smaller rows; 596-607 B
/// with the sessions inline in their table's pages; 623-624 B with the sessions boxed in a hash
/// table; 655-701 B before the link, the router's session and its handle shrank and the shard's
/// table took a smaller hasher; 702-716 B before an idle session's timer left the shard's timer
/// set and the shard's session lost its second copy of the router handle; 733 B before the
/// router's handle lost its `Notify`; 941-971 B before the store's delivery index, the login
/// table's row, the router's handle and the registry entry shrank; 1,189 B before that. About
/// 55 B of it is the terminal's, not the session's: the store's delivery index and the login
/// table's row (docs/performance.md, "Memory per session").
const BOUND: isize = 520;

/// Sessions logged in before the first reading, so one-time growth (the first use of each
/// table and pool) is not charged to the measured ones.
const WARM_UP: u32 = 300;

/// Sessions measured.
const MEASURED: u32 = 1500;

/// Logins in flight at once.
const CONCURRENCY: u32 = 50;

/// Logs devices `ids` in over UDP, then drops their clients (closing their sockets); the
/// broker keeps each session until it has been silent for `timeouts.session_secs`.
async fn log_in(b: &TestBroker, ids: std::ops::RangeInclusive<u32>) {
    let udp = b.udp();
    let ids: Vec<u32> = ids.collect();
    for chunk in ids.chunks(CONCURRENCY as usize) {
        let mut tasks = tokio::task::JoinSet::new();
        for &id in chunk {
            tasks.spawn(async move {
                let dev = login(Wire::udp(udp).await, id, 0).await;
                assert!(dev.is_ok(), "device {id} refused: {:?}", dev.err());
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("login task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_udp_session_holds_at_most_520_bytes_of_heap() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = 10_000;
        c.limits.max_connections_per_ip = 10_000;
        c.limits.login_attempts_per_ip_per_sec = 100_000;
    })
    .await;
    log_in(&b, 1..=WARM_UP).await;
    let before = settled_heap(MEASURED as isize).await;
    log_in(&b, WARM_UP + 1..=WARM_UP + MEASURED).await;
    let after = settled_heap(MEASURED as isize).await;

    let online = b.running.router.online_counts();
    assert_eq!(
        online.udp_sessions,
        u64::from(WARM_UP + MEASURED),
        "every session is still up (none timed out or was refused)"
    );
    let per_session = (after - before) / MEASURED as isize;
    println!(
        "heap per idle UDP session: {per_session} B ({} B over {MEASURED} sessions)",
        after - before
    );
    assert!(
        per_session <= BOUND,
        "an idle UDP session holds {per_session} B of heap, more than {BOUND} B"
    );
    b.stop().await;
}
