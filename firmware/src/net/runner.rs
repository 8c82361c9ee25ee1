//! [`Runner`]: the async loop that moves packets between a [`Transport`] and the client core.

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, with_timeout};

use super::handle::{ClientResources, DeviceHandle, timer_at};
use super::liveness::Liveness;
use super::lookup::HttpLookup;
use super::now;
use super::transport::{SocketKind, Sockets, Transport};
use crate::client::{EVENT_QUEUE, OUTBOX};
use crate::config::PACKET_BUF;
use crate::fmt::{log_debug, log_warn};
use crate::lookup::LookupError;
use crate::rng::Rng;

/// Longest wait for a transport to connect (TCP + WebSocket upgrade), in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// What the runner promises ([`Liveness`]) for one send: the WebSocket send timeout (a UDP
/// send only waits for room in the socket's buffer).
const SEND_PROMISE_MS: u64 = super::ws::WS_SEND_TIMEOUT_MS;
/// What the runner promises for closing a transport: the WebSocket close timeout.
const CLOSE_PROMISE_MS: u64 = super::ws::WS_CLOSE_TIMEOUT_MS;

/// The runner's packet buffers (2 x `PACKET_BUF` bytes), in memory the caller provides.
pub struct RunnerBuffers {
    tx: [u8; PACKET_BUF],
    rx: [u8; PACKET_BUF],
}

impl RunnerBuffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        RunnerBuffers {
            tx: [0; PACKET_BUF],
            rx: [0; PACKET_BUF],
        }
    }
}

impl Default for RunnerBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Drives the client: run [`Runner::run`] in its own task.
///
/// `S` gives the runner its transport: one [`Transport`] for every endpoint, or
/// [`SharedSockets`](super::SharedSockets), which opens the socket an endpoint's kind needs
/// in memory the UDP and WebSocket transports take turns with.
pub struct Runner<
    'd,
    'c,
    M: RawMutex,
    R: Rng,
    S: Sockets,
    const Q: usize,
    const P: usize,
    const E: usize = EVENT_QUEUE,
    const O: usize = OUTBOX,
> {
    core: Core<'d, 'c, M, R, Q, P, E, O>,
    sockets: S,
}

/// Everything the runner keeps but the sockets: the loop's state, borrowed apart from the
/// transport it runs on.
struct Core<
    'd,
    'c,
    M: RawMutex,
    R: Rng,
    const Q: usize,
    const P: usize,
    const E: usize,
    const O: usize,
> {
    res: &'d ClientResources<'c, M, R, Q, P, E, O>,
    bufs: &'d mut RunnerBuffers,
    /// The client's connection id the transport is open for.
    connected: Option<u32>,
    /// Node lookups (`None`: every lookup the client asks for fails at once).
    lookup: Option<HttpLookup<'d>>,
    /// Where the runner records how long each wait may last (for a watchdog).
    liveness: Option<&'d Liveness>,
}

/// Splits the caller's memory into the application's handle and the runner.
pub fn new<
    'd,
    'c,
    M: RawMutex,
    R: Rng,
    S: Sockets,
    const Q: usize,
    const P: usize,
    const E: usize,
    const O: usize,
>(
    resources: &'d ClientResources<'c, M, R, Q, P, E, O>,
    sockets: S,
    buffers: &'d mut RunnerBuffers,
) -> (
    DeviceHandle<'d, 'c, M, R, Q, P, E, O>,
    Runner<'d, 'c, M, R, S, Q, P, E, O>,
) {
    (
        DeviceHandle { res: resources },
        Runner {
            core: Core {
                res: resources,
                bufs: buffers,
                connected: None,
                lookup: None,
                liveness: None,
            },
            sockets,
        },
    )
}

impl<
    'd,
    M: RawMutex,
    R: Rng,
    S: Sockets,
    const Q: usize,
    const P: usize,
    const E: usize,
    const O: usize,
> Runner<'d, '_, M, R, S, Q, P, E, O>
{
    /// Lets the client ask the broker's node lookup (when its `DeviceConfig::lookup` is set)
    /// through `lookup`.
    pub fn with_lookup(mut self, lookup: HttpLookup<'d>) -> Self {
        self.core.lookup = Some(lookup);
        self
    }

    /// Records, before every wait, how long it may last in `liveness` (see
    /// [`Liveness`]), so a watchdog fed while it is alive catches a runner that hangs.
    pub fn with_liveness(mut self, liveness: &'d Liveness) -> Self {
        self.core.liveness = Some(liveness);
        self
    }

    /// Runs the client forever: on the transport for the kind of endpoint the client aims at,
    /// opened again from the sockets each time that kind changes.
    pub async fn run(&mut self) -> ! {
        let mut kind = self.core.wanted_kind().unwrap_or(SocketKind::Udp);
        loop {
            let mut transport = self.sockets.open(kind);
            kind = self.core.run_on(&mut transport, kind).await;
        }
    }
}

impl<'d, M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize>
    Core<'d, '_, M, R, Q, P, E, O>
{
    /// The next wait lasts at most `within_ms`.
    fn promise(&self, within_ms: u64) {
        if let Some(l) = self.liveness {
            l.promise(now().as_millis(), within_ms);
        }
    }

    /// The next wait lasts until the client's deadline, or for ever without one.
    fn promise_until(&self, deadline: Option<crate::time::Instant>) {
        let Some(l) = self.liveness else {
            return;
        };
        let now_ms = now().as_millis();
        match deadline {
            Some(at) => l.promise(now_ms, at.as_millis().saturating_sub(now_ms)),
            None => l.waiting_without_deadline(),
        }
    }

    /// The kind of socket the client's current endpoint needs (`None`: no endpoint chosen).
    fn wanted_kind(&self) -> Option<SocketKind> {
        self.res
            .with(|c| c.target().map(|t| SocketKind::of(&t.endpoint().transport)))
    }

    /// Runs the client on `transport`, opened for endpoints of `kind`, until the client aims at
    /// an endpoint of another kind: then closes the transport and returns that kind.
    async fn run_on<T: Transport>(&mut self, transport: &mut T, kind: SocketKind) -> SocketKind {
        loop {
            self.lookup_if_asked(transport).await;
            if let Some(wanted) = self.wanted_kind().filter(|wanted| *wanted != kind) {
                self.close_if_open(transport).await;
                return wanted;
            }
            self.sync_transport(transport).await;
            self.flush(transport).await;
            if self.res.with(|c| c.has_events()) {
                self.res.app_wake.signal(());
            }
            let deadline = self.res.with(|c| c.poll_timeout());
            self.promise_until(deadline);
            let timer = timer_at(deadline);
            let wake = self.res.runner_wake.wait();
            // Over WebSocket, unread packets wait in the connection while the application is
            // behind (`DeviceClient::input_paused`); taking an event wakes the runner.
            if self.connected.is_some() && !self.res.with(|c| c.input_paused()) {
                let recv = transport.recv(&mut self.bufs.rx);
                match select3(recv, timer, wake).await {
                    Either3::First(Ok(n)) => {
                        let packet = &mut self.bufs.rx[..n];
                        if let Err(_e) = self.res.with(|c| c.handle_datagram(packet, now())) {
                            log_debug!("packet dropped");
                        }
                    }
                    Either3::First(Err(e)) => {
                        log_warn!("transport: {}", e);
                        self.drop_transport(transport).await;
                    }
                    Either3::Second(()) => self.res.with(|c| c.handle_timeout(now())),
                    Either3::Third(()) => {}
                }
            } else {
                match select(timer, wake).await {
                    Either::First(()) => self.res.with(|c| c.handle_timeout(now())),
                    Either::Second(()) => {}
                }
            }
        }
    }

    /// Performs the node lookup the client asks for, within its lookup timeout.
    async fn lookup_if_asked<T: Transport>(&mut self, transport: &mut T) {
        let Some(req) = self.res.with(|c| c.lookup_request()) else {
            return;
        };
        self.close_if_open(transport).await;
        let timeout = self.res.with(|c| c.config().lookup_timeout_ms);
        self.promise(timeout);
        let Some(lookup) = self.lookup.as_mut() else {
            self.res
                .with(|c| c.lookup_done(req.id, Err(LookupError::NotSupported), now()));
            return;
        };
        let answer = with_timeout(Duration::from_millis(timeout), lookup.fetch(&req)).await;
        let result = match answer {
            Ok(r) => r,
            Err(_) => Err(LookupError::Timeout),
        };
        self.res.with(|c| c.lookup_done(req.id, result, now()));
    }

    async fn drop_transport<T: Transport>(&mut self, transport: &mut T) {
        self.res.with(|c| c.transport_failed(now()));
        self.close(transport).await;
    }

    /// Closes `transport` (within the close promise); nothing is open afterwards.
    async fn close<T: Transport>(&mut self, transport: &mut T) {
        self.promise(CLOSE_PROMISE_MS);
        transport.close().await;
        self.connected = None;
    }

    /// [`close`](Self::close) when a connection is open.
    async fn close_if_open<T: Transport>(&mut self, transport: &mut T) {
        if self.connected.is_some() {
            self.close(transport).await;
        }
    }

    /// Opens the transport for a new attempt, or closes it when the client wants none.
    async fn sync_transport<T: Transport>(&mut self, transport: &mut T) {
        let (wants, id, target) = self
            .res
            .with(|c| (c.wants_transport(), c.connection_id(), c.target()));
        match (wants, target) {
            (true, Some(target)) if self.connected != Some(id) => {
                self.connected = None;
                let endpoint = target.endpoint();
                self.promise(CONNECT_TIMEOUT_MS);
                let connect = transport.connect(&endpoint);
                match with_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
                    Ok(Ok(())) => self.connected = Some(id),
                    Ok(Err(e)) => {
                        log_warn!("connect failed: {}", e);
                        self.drop_transport(transport).await;
                    }
                    Err(_) => {
                        log_warn!("connect timed out");
                        self.drop_transport(transport).await;
                    }
                }
            }
            (false, _) => self.close_if_open(transport).await,
            _ => {}
        }
    }

    /// Sends everything the client has to send.
    async fn flush<T: Transport>(&mut self, transport: &mut T) {
        loop {
            let tx = &mut self.bufs.tx;
            let Some(n) = self.res.with(|c| c.poll_transmit(now(), tx)) else {
                return;
            };
            if self.connected.is_none() {
                continue;
            }
            self.promise(SEND_PROMISE_MS);
            if let Err(e) = transport.send(&self.bufs.tx[..n]).await {
                log_warn!("send failed: {}", e);
                self.drop_transport(transport).await;
                return;
            }
        }
    }
}
