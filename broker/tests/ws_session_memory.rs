//! Heap per idle WebSocket session (device and app), measured in-process: this test binary
//! counts every byte the broker holds on the heap (a counting wrapper around the system
//! allocator), logs clients in over the device WebSocket or the app WebSocket, keeps their
//! connections open and idle, and divides the growth by the number of sessions.
//!
//! The clients live in the same process, so they run on a thread of their own whose
//! allocations are not counted: the broker and its clients share no heap object (only
//! sockets), so what is counted is the broker's side alone.
//!
//! The guarantees it holds (docs/performance.md, "Memory per session"): an idle device
//! WebSocket session, with everything the broker keeps for it (the connection's task and its
//! WebSocket state, the link and the router session, the router's handle and registry entry,
//! the store's record of the terminal, the socket's registration with the I/O driver), holds at
//! most [`DEVICE_BOUND`] bytes of heap, and an idle app WebSocket session at most
//! [`APP_BOUND`]. Allocator overhead and the kernel's socket buffers come on top; the release
//! bench (`cargo xtask bench --only idle-memory`) measures resident memory.
//!
//! The counting allocator is `heap_support`'s.

mod comet_support;
mod heap_support;

use std::sync::Mutex;

use broker::terminal::{Address, IdProfile};
use comet_support::*;
use heap_support::{Counting, settled_heap};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes an idle device WebSocket session may hold, under the 2 KiB target
/// (docs/performance.md, "Memory per session"): 1,820-1,873 B measured when this bound was set
/// (debug build; 1,993-1,995 B before the WebSocket adapter of the broker's own replaced the
/// library's, whose two waker proxies took 2 x 64 B), with room for the noise of hash tables
/// growing.
const DEVICE_BOUND: isize = 1936;

/// Heap bytes an idle app WebSocket session may hold (under the 2.5 KiB target): 1,601-1,670 B
/// measured when this bound was set (debug build; 1,789-1,791 B before the same change), with
/// room for the noise of hash tables growing.
const APP_BOUND: isize = 1760;

/// Sessions logged in before the first reading, so one-time growth (the first use of each
/// table and pool) is not charged to the measured ones.
const WARM_UP: u32 = 200;

/// Sessions measured.
const MEASURED: u32 = 1000;

/// Logins in flight at once.
const CONCURRENCY: usize = 50;

/// One measurement at a time: the counter is the whole process's.
static SERIAL: Mutex<()> = Mutex::new(());

/// Which endpoint the clients log in through.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Device,
    App,
}

/// The clients: a thread with a runtime of its own (its allocations not counted) that logs
/// terminals in on request and keeps every connection open, idle, until it is dropped.
struct Clients {
    /// Where [`Clients::log_in`] asks; dropped to end the thread.
    requests: Option<tokio::sync::mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Terminals to log in, and where to say they are.
type Request = (
    std::ops::RangeInclusive<u32>,
    std::sync::mpsc::SyncSender<()>,
);

impl Clients {
    fn start(kind: Kind, url: String) -> Clients {
        let (requests, mut incoming) = tokio::sync::mpsc::channel::<Request>(1);
        let thread = std::thread::spawn(move || {
            heap_support::not_counted_here();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(heap_support::not_counted_here)
                .build()
                .expect("client runtime");
            rt.block_on(async move {
                let mut devices = Vec::new();
                let mut apps = Vec::new();
                while let Some((ids, done)) = incoming.recv().await {
                    let ids: Vec<u32> = ids.collect();
                    for chunk in ids.chunks(CONCURRENCY) {
                        let logins = chunk.iter().map(|&id| {
                            let url = url.clone();
                            async move {
                                match kind {
                                    Kind::Device => {
                                        let dev = login(Wire::ws(&url).await, id, 0).await;
                                        (
                                            Some(dev.unwrap_or_else(|r| {
                                                panic!("device {id} refused: {r:?}")
                                            })),
                                            None,
                                        )
                                    }
                                    Kind::App => {
                                        let (app, welcome) =
                                            App::login(&url, Address::phone(id), 0).await;
                                        assert_eq!(
                                            welcome["type"], "welcome",
                                            "app {id}: {welcome}"
                                        );
                                        (None, Some(app))
                                    }
                                }
                            }
                        });
                        for (dev, app) in futures_util::future::join_all(logins).await {
                            devices.extend(dev);
                            apps.extend(app);
                        }
                    }
                    let _ = done.send(());
                }
                drop((devices, apps));
            });
        });
        Clients {
            requests: Some(requests),
            thread: Some(thread),
        }
    }

    /// Logs terminals `ids` in and returns once all are.
    async fn log_in(&self, ids: std::ops::RangeInclusive<u32>) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let requests = self.requests.as_ref().expect("client thread running");
        requests.send((ids, done)).await.expect("client thread");
        tokio::task::spawn_blocking(move || finished.recv())
            .await
            .expect("waiting for the clients")
            .expect("the clients logged in");
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Heap bytes per idle session of `kind`, over [`MEASURED`] sessions after [`WARM_UP`].
async fn heap_per_session(kind: Kind) -> isize {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = 10_000;
        c.limits.max_connections_per_ip = 10_000;
        c.limits.login_attempts_per_ip_per_sec = 100_000;
    })
    .await;
    let url = match kind {
        Kind::Device => b.device_ws(),
        Kind::App => b.app_ws(),
    };
    let clients = Clients::start(kind, url);
    clients.log_in(1..=WARM_UP).await;
    let before = settled_heap(MEASURED as isize).await;
    let blocks_before = heap_support::by_size();
    clients.log_in(WARM_UP + 1..=WARM_UP + MEASURED).await;
    let after = settled_heap(MEASURED as isize).await;
    let blocks_after = heap_support::by_size();

    let online = b.running.router.online_counts();
    let up = match kind {
        Kind::Device => online.device_ws_sessions,
        Kind::App => online.app_ws_sessions,
    };
    assert_eq!(
        up,
        u64::from(WARM_UP + MEASURED),
        "every {kind:?} session is still up (none timed out or was refused)"
    );
    let per_session = (after - before) / MEASURED as isize;
    println!(
        "heap per idle {kind:?} WebSocket session: {per_session} B ({} B over {MEASURED} sessions)",
        after - before
    );
    // Where the bytes go: the block sizes held per session (most of a block per session).
    for (size, blocks, bytes) in
        heap_support::held_by_size(&blocks_before, &blocks_after, MEASURED as isize / 2)
    {
        println!(
            "  {size:>5} B x {:.2} per session = {:>5} B",
            blocks as f64 / f64::from(MEASURED),
            bytes / MEASURED as isize
        );
    }
    drop(clients);
    b.stop().await;
    per_session
}

/// Runs `measure` on a runtime of its own, alone in the process: the runtime is created and
/// dropped while [`SERIAL`] is held, so no other measurement's start or teardown is counted.
fn alone<F: std::future::Future<Output = isize>>(measure: F) -> isize {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("broker runtime");
    let per_session = rt.block_on(measure);
    drop(rt);
    per_session
}

#[test]
fn an_idle_device_websocket_holds_at_most_1936_bytes_of_heap() {
    let per_session = alone(heap_per_session(Kind::Device));
    assert!(
        per_session <= DEVICE_BOUND,
        "an idle device WebSocket holds {per_session} B of heap, more than {DEVICE_BOUND} B"
    );
}

#[test]
fn an_idle_app_websocket_holds_at_most_1760_bytes_of_heap() {
    let per_session = alone(heap_per_session(Kind::App));
    assert!(
        per_session <= APP_BOUND,
        "an idle app WebSocket holds {per_session} B of heap, more than {APP_BOUND} B"
    );
}
