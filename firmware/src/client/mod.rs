//! The sans-IO device client: login, heartbeats, reliability, reconnects, uploads.
//!
//! [`DeviceClient`] owns no socket and reads no clock. The driver (the async
//! [`crate::net::Runner`] on boards, a test harness on the host) feeds it
//! ([`handle_datagram`](DeviceClient::handle_datagram),
//! [`handle_timeout`](DeviceClient::handle_timeout),
//! [`transport_failed`](DeviceClient::transport_failed)), drains it
//! ([`poll_transmit`](DeviceClient::poll_transmit), [`poll_event`](DeviceClient::poll_event))
//! and sleeps until [`poll_timeout`](DeviceClient::poll_timeout), in the style of quinn-proto.
//!
//! ```text
//!             +-----------+  start / backoff over  +-------------+  WELCOME  +--------+
//!   new() --> |  Backoff  | ---------------------> | Handshaking | --------> | Online |
//!             +-----------+                        +-------------+           +--------+
//!                  ^   REJECT, handshake timeout,        |                        |
//!                  |   transport failure                 |                        |
//!                  +-------------------------------------+------------------------+
//!                      session timeout, retransmit limit, Kick, Goodbye, transport failure
//!   close(): any state -> Idle (Goodbye sent when online); connect(): Idle -> Handshaking
//! ```
//!
//! * Every failure draws a full-jitter delay ([`crate::backoff`]) and rotates to the next
//!   endpoint of [`DeviceConfig::endpoints`] (failover). A REJECT's `retry_after_ms` is honoured
//!   as a minimum, up to `REJECT_RETRY_AFTER_CAP_MS` (5 minutes): a REJECT is unauthenticated, so
//!   a forged one cannot keep the device offline longer. A login resets the backoff.
//! * Each attempt increments [`DeviceClient::connection_id`]; the driver (re)opens its
//!   transport to [`DeviceClient::endpoint`] whenever that number changes, and closes it while
//!   [`DeviceClient::wants_transport`] is false.
//! * Online, the client sends reliable frames through a `SendWindow` of [`SEND_WINDOW`] frames
//!   whose stored bytes are only a 5-byte reference to the upload queue or the outbox (the
//!   payload is stored once), acknowledges received frames within `ACK_DELAY`, sends Ping after
//!   `heartbeat_secs` without sending, and declares the session dead after
//!   `session_timeout_secs` without an authenticated packet or after `MAX_TRANSMISSIONS`.
//! * Uploads ([`crate::queue`]) and outbox entries survive disconnects and are sent again in the
//!   next session. Received reliable frames are taken in `seq` order only (an early UploadAck
//!   is held, [`HELD_UPLOAD_ACKS`]; any other early frame is left unacknowledged for the
//!   broker to resend), so the since-id reported in every LOGIN is simply the highest `msg_id`
//!   taken.
//! * NAT rebinding needs nothing here: the broker finds the session by its id, whatever the
//!   source address; the client keeps its session and keeps sending.
//! * Malformed, unauthenticated or unexpected input is an [`RxError`], counted in
//!   [`Stats::rx_dropped`], and changes nothing.

mod event;
mod login;
mod outbox;
mod since;

pub use event::{DisconnectReason, Event};
pub use login::HANDSHAKE_BUF;
pub use outbox::OUTBOX;

use heapless::{Deque, String, Vec};
use shared_protocol::codes::{Class, Code};
use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::{Carrier, ClientHandshake, WelcomeInfo, retry_after_capped};
use shared_protocol::ids::Address;
use shared_protocol::limits::{MAX_PATH, RECEIVE_WINDOW};
use shared_protocol::reliability::{RecvOutcome, RecvWindow, SendEvent, SendWindow};
use shared_protocol::session::{SecureSession, SessionError};

use crate::api::{DeviceApi, OutboxError};
use crate::backoff::Backoff;
use crate::config::{ClientConfig, DeviceConfig, Endpoint, TransportKind};
use crate::fmt::{log_debug, log_info, log_warn};
use crate::lookup::{LOOKUP_ENDPOINTS, LookedUp, LookupError, LookupRequest};
use crate::queue::{FullPolicy, UploadError, UploadId, UploadQueue};
use crate::rng::Rng;
use crate::stats::{Stats, add, bump};
use crate::time::{Instant, earliest};
use login::{LoginAttempt, LoginStep};
use outbox::{OutKind, Outbox};
use since::SinceTracker;

/// Reliable frames the device keeps unacknowledged at once (at most the protocol's 16).
pub const SEND_WINDOW: usize = 4;
/// Events the client holds for the application unless the application chooses (the `E`
/// parameter of [`DeviceClient`]); frames that would produce an event while half of them
/// ([`EVENT_FRAME_LIMIT`] by default) are waiting are left unacknowledged (the broker
/// retransmits them).
pub const EVENT_QUEUE: usize = 4;
/// Events from received frames allowed to wait at once with the default [`EVENT_QUEUE`]: half
/// the queue (`E / 2`); the rest is kept for `Connected` / `Disconnected`.
pub const EVENT_FRAME_LIMIT: usize = EVENT_QUEUE / 2;

/// UploadAcks the client holds when they arrive ahead of a gap (4 bytes each, an upload id in
/// the slot of its `seq`): the whole receive window (`RECEIVE_WINDOW`). The broker retires a
/// held frame when the device's `ack.mask` covers it and sends the next, so behind one missing
/// frame up to `RECEIVE_WINDOW - 1` may arrive; none is dropped for want of room and left to its
/// sender's backed-off resend timer. Other early frames are left for the broker to resend
/// (docs/protocol.md section 5).
pub const HELD_UPLOAD_ACKS: usize = RECEIVE_WINDOW as usize;

/// The slot of held frame `seq` in `Online::held_acks`.
fn held_slot(seq: u32) -> usize {
    (seq % RECEIVE_WINDOW) as usize
}

/// How long the client sends no new reliable frame after the broker refused an upload for load
/// (a code of the load class, 32 to 47: `RATE_LIMITED`, `QUEUE_FULL`, `UNAVAILABLE`...): the broker's per-terminal frame budget
/// refills within a second (`limits.frames_per_sec_per_terminal`). The refused upload goes first
/// after the pause.
pub const REFUSED_UPLOAD_PAUSE_MS: u64 = 1_000;

/// Bytes stored per in-flight frame: a tag and a 32-bit id.
const REF_LEN: usize = 5;
const REF_UPLOAD: u8 = 1;
const REF_OUTBOX: u8 = 2;

/// An owned copy of an endpoint ([`DeviceClient::target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'c> {
    /// One of [`DeviceConfig::endpoints`].
    Static(Endpoint<'c>),
    /// From the node lookup's answer.
    LookedUp(LookedUp),
}

impl Target<'_> {
    /// The endpoint to connect to.
    pub fn endpoint(&self) -> Endpoint<'_> {
        match self {
            Target::Static(e) => *e,
            Target::LookedUp(e) => e.as_endpoint(),
        }
    }
}

/// Why a received packet was dropped, or taken in part. None of these changes the client's
/// state, but [`RxError::Unexpected`] for an acknowledgement of frames never sent: that
/// acknowledgement is ignored and the rest of the frame is still taken, so a Kick or Goodbye
/// carrying one still ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RxError {
    /// No login in progress and no session: nothing expects a packet.
    NotExpected,
    /// The handshake ignored it (not for its state, undecodable, or not authentic).
    HandshakeIgnored,
    /// The session refused it (malformed, wrong session, replayed, forged).
    Session(SessionError),
    /// A frame direction the device never receives (e.g. an Upload) or a frame that breaks the
    /// reliability rules (an acknowledgement of frames never sent).
    Unexpected,
    /// The frame's payload exceeds the client's `P` bytes; it was acknowledged and dropped
    /// (a Command gets a `TOO_LARGE` result).
    Oversized,
    /// The event queue is full: the frame is not acknowledged, the broker will resend it.
    Busy,
    /// A reliable frame arrived before an earlier one and is not held (the client holds only
    /// up to [`HELD_UPLOAD_ACKS`] early UploadAcks): it is not acknowledged and the broker
    /// resends it after the gap has filled.
    AheadOfGap,
}

/// The connection state, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectionState {
    /// Not connecting ([`DeviceClient::close`] was called).
    Idle,
    /// Waiting before the next attempt.
    Backoff,
    /// Asking the node lookup where to connect.
    LookingUp,
    /// A login is in progress.
    Handshaking,
    /// A session is up.
    Online,
}

struct Online {
    session: SecureSession,
    welcome: WelcomeInfo,
    send: SendWindow<SEND_WINDOW, REF_LEN>,
    recv: RecvWindow,
    /// UploadAcks that arrived ahead of a gap: `(seq, upload_id)`.
    /// the upload id of held frame `seq` at `seq % RECEIVE_WINDOW` (held frames lie within
    /// one window above `recv`'s `next`, so their slots differ; `recv`'s mask says which are
    /// held).
    held_acks: [u32; HELD_UPLOAD_ACKS],
    last_rx: Instant,
    last_tx: Instant,
    /// No new reliable frame goes out before this: the broker refused one for load.
    paused_until: Instant,
}

// One phase lives in the client's static memory at a time and nothing may allocate, so the
// login attempt's buffers stay inline rather than boxed.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Idle,
    Backoff {
        until: Instant,
    },
    LookingUp {
        deadline: Instant,
    },
    Handshaking {
        attempt: LoginAttempt,
        deadline: Instant,
    },
    Online(Online),
}

/// The device client core. `Q`: upload queue capacity; `P`: largest payload (uploads, events,
/// outbox entries), at most the protocol's `MAX_PAYLOAD`; `E`: events held for the application
/// (at least 2; half of them for events from received frames); `O`: outbox entries (command
/// results, requests, sends; at least 1). Each is the application's choice: memory grows with
/// `Q * P`, `E * P` and `O * P` (docs/firmware.md, "Memory").
pub struct DeviceClient<
    'c,
    R: Rng,
    const Q: usize,
    const P: usize,
    const E: usize = EVENT_QUEUE,
    const O: usize = OUTBOX,
> {
    device: DeviceConfig<'c>,
    config: ClientConfig,
    rng: R,
    phase: Phase,
    /// Position in the failover round: looked-up endpoints first, then the static ones.
    endpoint: usize,
    /// Endpoints of this round's lookup answer.
    looked_up: Vec<LookedUp, LOOKUP_ENDPOINTS>,
    /// Whether the next attempt asks the lookup first (a new round).
    lookup_due: bool,
    lookup_id: u32,
    connection_id: u32,
    attempts: u32,
    backoff: Backoff,
    uploads: UploadQueue<Q, P>,
    outbox: Outbox<P, O>,
    events: Deque<Event<P>, E>,
    since: SinceTracker,
    /// This boot's upload epoch: drawn once in [`DeviceClient::new`], sent on every login.
    upload_epoch: u64,
    next_req_id: u32,
    goodbye_pending: Option<Online>,
    stats: Stats,
}

/// 64 bits from `rng`, drawn again while they are 0 (the protocol forbids epoch 0).
fn draw_upload_epoch<R: Rng>(rng: &mut R) -> u64 {
    loop {
        let epoch = (u64::from(rng.next_u32()) << 32) | u64::from(rng.next_u32());
        if epoch != 0 {
            return epoch;
        }
    }
}

fn payload_copy<const P: usize>(bytes: &[u8]) -> Option<Vec<u8, P>> {
    Vec::from_slice(bytes).ok()
}

impl<'c, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize>
    DeviceClient<'c, R, Q, P, E, O>
{
    /// A client that connects at the first [`handle_timeout`](Self::handle_timeout) (its
    /// [`poll_timeout`](Self::poll_timeout) is `now`).
    pub fn new(device: DeviceConfig<'c>, config: ClientConfig, mut rng: R, now: Instant) -> Self {
        const { assert!(P <= shared_protocol::limits::MAX_PAYLOAD) };
        const {
            assert!(
                E >= 2,
                "the event queue needs room for a frame event and a state event"
            )
        };
        const { assert!(O >= 1, "the outbox needs at least one entry") };
        let first_upload_id = rng.next_u32();
        let upload_epoch = draw_upload_epoch(&mut rng);
        let since = SinceTracker::new(device.since_id);
        let lookup_due = device.lookup.is_some();
        DeviceClient {
            device,
            config,
            rng,
            phase: Phase::Backoff { until: now },
            endpoint: 0,
            looked_up: Vec::new(),
            lookup_due,
            lookup_id: 0,
            connection_id: 0,
            attempts: 0,
            backoff: Backoff::new(config.backoff),
            uploads: UploadQueue::new(first_upload_id),
            outbox: Outbox::new(),
            events: Deque::new(),
            since,
            upload_epoch,
            next_req_id: 1,
            goodbye_pending: None,
            stats: Stats::default(),
        }
    }

    // ----- state queries -------------------------------------------------------------------

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        match self.phase {
            Phase::Idle => ConnectionState::Idle,
            Phase::Backoff { .. } => ConnectionState::Backoff,
            Phase::LookingUp { .. } => ConnectionState::LookingUp,
            Phase::Handshaking { .. } => ConnectionState::Handshaking,
            Phase::Online(_) => ConnectionState::Online,
        }
    }

    /// The broker's session id while online.
    pub fn session_id(&self) -> Option<u32> {
        match &self.phase {
            Phase::Online(o) => Some(o.welcome.session_id),
            _ => None,
        }
    }

    /// The endpoint of the current (or next) attempt and its position in the failover round
    /// (looked-up endpoints first, then [`DeviceConfig::endpoints`]; without a lookup answer the
    /// position is the index in the configuration).
    pub fn endpoint(&self) -> Option<(usize, Endpoint<'_>)> {
        let i = self.endpoint;
        match self.looked_up.get(i) {
            Some(e) => Some((i, e.as_endpoint())),
            None => self
                .device
                .endpoints
                .get(i - self.looked_up.len())
                .map(|e| (i, *e)),
        }
    }

    /// An owned copy of the current endpoint, for a driver that connects outside its lock.
    pub fn target(&self) -> Option<Target<'c>> {
        let i = self.endpoint;
        match self.looked_up.get(i) {
            Some(e) => Some(Target::LookedUp(e.clone())),
            None => self
                .device
                .endpoints
                .get(i - self.looked_up.len())
                .map(|e| Target::Static(*e)),
        }
    }

    fn round_len(&self) -> usize {
        self.looked_up.len() + self.device.endpoints.len()
    }

    /// The node lookup the driver should perform now (while [`ConnectionState::LookingUp`]);
    /// answer with [`lookup_done`](Self::lookup_done).
    pub fn lookup_request(&self) -> Option<LookupRequest<'c>> {
        match (&self.phase, self.device.lookup) {
            (Phase::LookingUp { .. }, Some(config)) => Some(LookupRequest {
                id: self.lookup_id,
                config,
                device_id: self.device.device_id,
            }),
            _ => None,
        }
    }

    /// The result of the lookup `id`: the complete HTTP response, or why there is none. The
    /// client then dials the answer's endpoints followed by the static ones, or only the static
    /// ones when the lookup failed, starting at once.
    pub fn lookup_done(&mut self, id: u32, result: Result<&[u8], LookupError>, now: Instant) {
        let (Phase::LookingUp { .. }, Some(config)) = (&self.phase, self.device.lookup) else {
            return;
        };
        if id != self.lookup_id {
            return;
        }
        self.lookup_due = false;
        self.endpoint = 0;
        match result.and_then(|r| crate::lookup::parse_response(r, &config)) {
            Ok(nodes) => {
                bump(&mut self.stats.lookups);
                log_info!(
                    "lookup: {} endpoints (stale view: {})",
                    nodes.endpoints.len(),
                    nodes.stale
                );
                self.looked_up = nodes.endpoints;
            }
            Err(e) => {
                bump(&mut self.stats.lookup_failures);
                log_warn!("lookup failed: {}; using the static endpoints", e);
                self.looked_up.clear();
            }
        }
        self.start_attempt(now);
    }

    /// Incremented at every connection attempt: the driver reconnects its transport when it
    /// changes.
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    /// Whether the driver should keep a transport open (logging in or online, or a Goodbye
    /// still to send).
    pub fn wants_transport(&self) -> bool {
        matches!(self.phase, Phase::Handshaking { .. } | Phase::Online(_))
            || self.goodbye_pending.is_some()
    }

    /// The highest message id the client will report at its next login.
    pub fn since_id(&self) -> u64 {
        self.since.since_id()
    }

    /// This boot's upload epoch (docs/protocol.md section 4, "Upload semantics"): 64 random
    /// bits, never 0, drawn when the client was created and sent on every login, so an upload
    /// resent after a reconnect keeps its de-duplication key and a new boot never reuses one.
    pub fn upload_epoch(&self) -> u64 {
        self.upload_epoch
    }

    /// Uploads waiting for acknowledgement.
    pub fn uploads_pending(&self) -> usize {
        self.uploads.len()
    }

    /// Outbox entries waiting for acknowledgement.
    pub fn outbox_pending(&self) -> usize {
        self.outbox.len()
    }

    // ----- driver entry points ------------------------------------------------------------

    /// When [`handle_timeout`](Self::handle_timeout) (and then
    /// [`poll_transmit`](Self::poll_transmit)) must run next; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.goodbye_pending.is_some() {
            return Some(Instant::ZERO);
        }
        match &self.phase {
            Phase::Idle => None,
            Phase::Backoff { until } => Some(*until),
            Phase::LookingUp { deadline } => Some(*deadline),
            Phase::Handshaking { attempt, deadline } => {
                if attempt.has_pending() {
                    return Some(Instant::ZERO);
                }
                earliest(
                    Some(*deadline),
                    attempt.poll_timeout().map(Instant::from_millis),
                )
            }
            Phase::Online(o) => {
                let heartbeat = ping_due(o);
                let dead = o.last_rx.plus_millis(session_timeout_ms(&o.welcome));
                let mut t = earliest(Some(heartbeat), Some(dead));
                t = earliest(t, o.send.poll_timeout().map(Instant::from_millis));
                t = earliest(t, o.recv.poll_timeout().map(Instant::from_millis));
                if o.send.can_send()
                    && (self.outbox.next_unsent().is_some() || self.uploads.next_unsent().is_some())
                {
                    t = earliest(t, Some(o.paused_until));
                }
                t
            }
        }
    }

    /// Advances timers: starts an attempt after the backoff, restarts or abandons a login,
    /// detects a silent session. Then call [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Idle => {}
            Phase::Backoff { until } => {
                if *until <= now {
                    self.start_attempt(now);
                }
            }
            Phase::LookingUp { deadline } => {
                if *deadline <= now {
                    let id = self.lookup_id;
                    self.lookup_done(id, Err(LookupError::Timeout), now);
                }
            }
            Phase::Handshaking { attempt, deadline } => {
                if *deadline <= now {
                    self.fail(DisconnectReason::HandshakeTimeout, now);
                    return;
                }
                let mut nonce = [0u8; 16];
                self.rng.fill_bytes(&mut nonce);
                if attempt.handle_timeout(now.as_millis(), nonce) {
                    log_debug!("login: HELLO resent");
                }
            }
            Phase::Online(o) => {
                if now.millis_since(o.last_rx) >= session_timeout_ms(&o.welcome) {
                    self.fail(DisconnectReason::SessionTimeout, now);
                }
            }
        }
    }

    /// Feeds one received packet (decrypted in place, hence `&mut`).
    pub fn handle_datagram(&mut self, packet: &mut [u8], now: Instant) -> Result<(), RxError> {
        bump(&mut self.stats.rx_packets);
        let result = match &mut self.phase {
            Phase::Idle | Phase::Backoff { .. } | Phase::LookingUp { .. } => {
                Err(RxError::NotExpected)
            }
            Phase::Handshaking { .. } => self.handshake_packet(packet, now),
            Phase::Online(_) => self.online_packet(packet, now),
        };
        if result.is_err() {
            bump(&mut self.stats.rx_dropped);
        }
        result
    }

    /// The transport failed (connect refused, connection closed): backs off and rotates.
    pub fn transport_failed(&mut self, now: Instant) {
        self.goodbye_pending = None;
        if matches!(self.phase, Phase::Handshaking { .. } | Phase::Online(_)) {
            self.fail(DisconnectReason::TransportFailed, now);
        }
    }

    /// Writes the next packet to send into `buf` (at least `MAX_PACKET` bytes) and returns its
    /// length; call until `None` after every `handle_*` call.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(mut o) = self.goodbye_pending.take() {
            let frame = Frame::unreliable(
                o.recv.ack(),
                Body::Goodbye {
                    reason: Code::NORMAL,
                },
            );
            if let Ok(n) = o.session.seal_frame_from_device(&frame, buf) {
                bump(&mut self.stats.tx_packets);
                return Some(n);
            }
        }
        match &mut self.phase {
            Phase::Handshaking { attempt, .. } => {
                let len = attempt.pop_pending(buf)?;
                bump(&mut self.stats.tx_packets);
                Some(len)
            }
            Phase::Online(_) => self.online_transmit(now, buf),
            Phase::Idle | Phase::Backoff { .. } | Phase::LookingUp { .. } => None,
        }
    }

    /// Whether the driver should leave received packets in the transport for now: online over
    /// WebSocket while the events from received frames fill their half of the queue. The broker
    /// never resends over WebSocket, so a frame refused for want of room would be lost to the
    /// session; left unread, it waits in the connection (TCP flow control) until the
    /// application takes an event. Over UDP such a frame is refused and resent.
    pub fn input_paused(&self) -> bool {
        matches!(self.phase, Phase::Online(_))
            && self.carrier() == Carrier::Reliable
            && !self.can_take_frame_event()
    }

    /// Whether an event waits for [`poll_event`](Self::poll_event).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// Ends the session (a Goodbye is sent when online) and stops connecting until
    /// [`connect`](Self::connect).
    pub fn close(&mut self) {
        match core::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Online(o) => {
                self.goodbye_pending = Some(o);
                self.push_state_event(Event::Disconnected {
                    reason: DisconnectReason::Closed,
                });
            }
            Phase::Handshaking { .. } => self.push_state_event(Event::Disconnected {
                reason: DisconnectReason::Closed,
            }),
            Phase::Idle | Phase::Backoff { .. } | Phase::LookingUp { .. } => {}
        }
    }

    /// Starts connecting again after [`close`](Self::close) (no effect otherwise).
    pub fn connect(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle) {
            self.backoff.reset();
            self.start_attempt(now);
        }
    }

    /// The client's timers and limits.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Connection statistics.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ----- connection lifecycle -----------------------------------------------------------

    fn start_attempt(&mut self, now: Instant) {
        if self.lookup_due {
            self.lookup_id = self.lookup_id.wrapping_add(1);
            self.phase = Phase::LookingUp {
                deadline: now.plus_millis(self.config.lookup_timeout_ms),
            };
            return;
        }
        if self.round_len() == 0 {
            if self.device.lookup.is_none() {
                log_warn!("no broker endpoint configured");
                self.phase = Phase::Idle;
            } else {
                // The lookup failed and there is no static list: back off, then ask again.
                self.fail(DisconnectReason::NoEndpoint, now);
            }
            return;
        }
        self.connection_id = self.connection_id.wrapping_add(1);
        if self.attempts > 0 {
            bump(&mut self.stats.reconnects);
        }
        self.attempts = self.attempts.saturating_add(1);
        // WebSocket loses nothing: one HELLO per connection, never resent with a new nonce
        // (docs/protocol.md section 3.2, step 6); `handshake_timeout_ms` bounds the wait.
        let carrier = self.carrier();
        let handshake = ClientHandshake::new(
            Address::device(self.device.device_id),
            self.device.key.clone(),
            self.since.since_id(),
            self.upload_epoch,
        )
        .with_carrier(carrier);
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let attempt = LoginAttempt::start(handshake, now.as_millis(), nonce);
        log_info!(
            "login: attempt {} to endpoint {}",
            self.attempts,
            self.endpoint
        );
        self.phase = Phase::Handshaking {
            attempt,
            deadline: now.plus_millis(self.config.handshake_timeout_ms),
        };
    }

    /// How the current endpoint carries packets: WebSocket loses nothing.
    fn carrier(&self) -> Carrier {
        match self.endpoint() {
            Some((_, e)) if matches!(e.transport, TransportKind::WebSocket { .. }) => {
                Carrier::Reliable
            }
            _ => Carrier::Datagram,
        }
    }

    fn fail(&mut self, reason: DisconnectReason, now: Instant) {
        if matches!(self.phase, Phase::Handshaking { .. }) {
            bump(&mut self.stats.login_failures);
        }
        log_warn!("disconnected, endpoint {}", self.endpoint);
        self.push_state_event(Event::Disconnected { reason });
        // Failover: the next endpoint of the round; after the last one a new round, which
        // starts with a new lookup when one is configured.
        self.endpoint += 1;
        if self.endpoint >= self.round_len() {
            self.endpoint = 0;
            if self.device.lookup.is_some() {
                self.lookup_due = true;
                self.looked_up.clear();
            }
        }
        let delay = match reason {
            // The session's counter space is used up: log in again at once.
            DisconnectReason::Rekey => 0,
            DisconnectReason::Rejected { retry_after_ms, .. } => self
                .backoff
                .next_delay_ms(&mut self.rng)
                .max(retry_after_capped(retry_after_ms)),
            _ => self.backoff.next_delay_ms(&mut self.rng),
        };
        self.phase = Phase::Backoff {
            until: now.plus_millis(u64::from(delay)),
        };
    }

    fn push_state_event(&mut self, event: Event<P>) {
        if self.events.push_back(event).is_err() {
            bump(&mut self.stats.events_dropped);
            log_warn!("event queue full: state event dropped");
        }
    }

    fn can_take_frame_event(&self) -> bool {
        self.events.len() < E / 2
    }

    fn handshake_packet(&mut self, packet: &mut [u8], now: Instant) -> Result<(), RxError> {
        let Phase::Handshaking { attempt, .. } = &mut self.phase else {
            return Err(RxError::NotExpected);
        };
        match attempt.on_packet(packet) {
            LoginStep::Progress => Ok(()),
            LoginStep::Established(established) => {
                let welcome = established.welcome;
                log_info!("online: session {}", welcome.session_id);
                self.phase = Phase::Online(Online {
                    session: established.session,
                    welcome,
                    // Over WebSocket nothing is resent within the session (docs/protocol.md
                    // section 5, "Reliable transport").
                    send: SendWindow::new().with_carrier(self.carrier()),
                    recv: RecvWindow::new(),
                    held_acks: [0; HELD_UPLOAD_ACKS],
                    last_rx: now,
                    last_tx: now,
                    paused_until: now,
                });
                bump(&mut self.stats.logins);
                self.backoff.reset();
                let resent = self.uploads.mark_all_unsent();
                add(&mut self.stats.uploads_resent, resent);
                self.outbox.mark_all_unsent();
                self.push_state_event(Event::Connected {
                    session_id: welcome.session_id,
                });
                Ok(())
            }
            LoginStep::Rejected(reject) => {
                log_warn!("login rejected: code {}", reject.code.0);
                self.fail(
                    DisconnectReason::Rejected {
                        code: reject.code,
                        retry_after_ms: reject.retry_after_ms,
                    },
                    now,
                );
                Ok(())
            }
            LoginStep::Ignored => Err(RxError::HandshakeIgnored),
        }
    }

    // ----- online ------------------------------------------------------------------------

    fn online_packet(&mut self, packet: &mut [u8], now: Instant) -> Result<(), RxError> {
        let room_for_event = self.can_take_frame_event();
        let Phase::Online(o) = &mut self.phase else {
            return Err(RxError::NotExpected);
        };
        let frame = o
            .session
            .open_frame_from_broker(packet)
            .map_err(RxError::Session)?;
        o.last_rx = now;
        let mut result = Ok(());
        match o.send.on_ack(frame.ack, now.as_millis()) {
            Ok(acked) => {
                for seq in acked {
                    self.outbox.acked(seq);
                }
            }
            Err(_) => result = Err(RxError::Unexpected),
        }
        if frame.seq != 0 {
            // Every reliable body but an UploadAck needs room for its event: without room it
            // stays unacknowledged and the broker resends it later. An UploadAck is always
            // taken: what it changes is the upload queue (its `UploadAcked` event is only a
            // notice, dropped and counted in `events_dropped` when there is no room), and a
            // busy uploader gets one every reading, so refusing them while the application is
            // behind would stall the queue on the broker's backed-off resends.
            if !room_for_event && !matches!(frame.body, Body::UploadAck { .. }) {
                return Err(RxError::Busy);
            }
            // Frames are taken in `seq` order (docs/protocol.md section 5). Of the frames that
            // arrive ahead of a gap only UploadAcks are held (a few bytes each, and the one
            // frame a busy uploader gets many of); any other stays unacknowledged and the
            // broker resends it once the gap has filled.
            let released = match o.recv.on_receive(frame.seq, now.as_millis()) {
                RecvOutcome::InOrder { released } => released,
                RecvOutcome::Early => {
                    return match frame.body {
                        Body::UploadAck { upload_id } if o.recv.hold(frame.seq) => {
                            // Its slot is free: held frames lie within one window.
                            o.held_acks[held_slot(frame.seq)] = upload_id;
                            result
                        }
                        _ => Err(RxError::AheadOfGap),
                    };
                }
                RecvOutcome::Duplicate => {
                    if matches!(frame.body, Body::Deliver { .. }) {
                        bump(&mut self.stats.deliveries_suppressed);
                    }
                    return result;
                }
                RecvOutcome::OutOfWindow | RecvOutcome::Unreliable => return result,
            };
            let mut acks: Vec<u32, HELD_UPLOAD_ACKS> = Vec::new();
            for seq in frame.seq + 1..=frame.seq + released {
                // Only UploadAcks are held, so every released frame is one of them.
                let _ = acks.push(o.held_acks[held_slot(seq)]);
            }
            let result = self.on_body(frame.body, now).and(result);
            for upload_id in acks {
                self.upload_acked(upload_id);
            }
            return result;
        }
        self.on_body(frame.body, now).and(result)
    }

    /// The broker stored upload `upload_id`: it leaves the queue, and the application hears of
    /// it (an event dropped for lack of room is counted; the queue is what matters).
    fn upload_acked(&mut self, upload_id: u32) {
        if self.uploads.ack(UploadId(upload_id)) {
            bump(&mut self.stats.uploads_acked);
            // Only within the frame events' half of the queue, so the notice never takes the
            // room kept for `Connected` / `Disconnected`.
            if !self.can_take_frame_event()
                || self
                    .events
                    .push_back(Event::UploadAcked {
                        id: UploadId(upload_id),
                    })
                    .is_err()
            {
                bump(&mut self.stats.events_dropped);
            }
        }
    }

    fn on_body(&mut self, body: Body<'_>, now: Instant) -> Result<(), RxError> {
        match body {
            Body::Deliver {
                msg_id,
                from,
                payload,
            } => {
                let duplicate = self.since.is_duplicate(msg_id);
                self.since.on_deliver(msg_id);
                if duplicate {
                    bump(&mut self.stats.deliveries_suppressed);
                    log_debug!("deliver {} already seen", msg_id);
                    return Ok(());
                }
                let payload = payload_copy(payload).ok_or(RxError::Oversized)?;
                self.push_frame_event(Event::Deliver {
                    msg_id,
                    from,
                    payload,
                });
            }
            Body::Command {
                cmd_id,
                name,
                payload,
            } => {
                let Some(payload) = payload_copy(payload) else {
                    let _ = self.outbox.push(
                        OutKind::CommandResult {
                            cmd_id,
                            status: Code::TOO_LARGE.0,
                        },
                        &[],
                    );
                    return Err(RxError::Oversized);
                };
                // Names are at most MAX_NAME bytes (checked by the frame decoder).
                let name = String::try_from(name).map_err(|_| RxError::Oversized)?;
                self.push_frame_event(Event::Command {
                    cmd_id,
                    name,
                    payload,
                });
            }
            Body::Response {
                req_id,
                status,
                payload,
            } => {
                let payload = payload_copy(payload).ok_or(RxError::Oversized)?;
                self.push_frame_event(Event::Response {
                    req_id,
                    status,
                    payload,
                });
            }
            Body::UploadAck { upload_id } => self.upload_acked(upload_id),
            Body::Presence { who, online } => {
                self.push_frame_event(Event::Presence { who, online });
            }
            Body::Error { code, about_seq } => {
                log_warn!("broker error {} about frame {}", code.0, about_seq);
                // An upload the broker refused for load was not stored and gets no UploadAck:
                // it goes again, first, after a pause, with the uploads sent behind it, which
                // the broker refuses too (docs/protocol.md, "Upload semantics").
                if code.class() == Class::Load
                    && let marked = self.uploads.mark_unsent_from(about_seq)
                    && marked > 0
                    && let Phase::Online(o) = &mut self.phase
                {
                    add(&mut self.stats.uploads_resent, marked);
                    o.paused_until = now.plus_millis(REFUSED_UPLOAD_PAUSE_MS);
                }
                self.push_frame_event(Event::BrokerError { code, about_seq });
            }
            Body::Pong { .. } | Body::AckOnly | Body::Welcome { .. } => {}
            Body::Kick { reason } => self.fail(DisconnectReason::Kicked { reason }, now),
            Body::Goodbye { reason } => self.fail(DisconnectReason::Goodbye { reason }, now),
            Body::Ping
            | Body::Send { .. }
            | Body::Upload { .. }
            | Body::CommandResult { .. }
            | Body::Request { .. } => return Err(RxError::Unexpected),
        }
        Ok(())
    }

    fn push_frame_event(&mut self, event: Event<P>) {
        // Room was checked before the frame was accepted.
        let _ = self.events.push_back(event);
    }

    fn online_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let jitter = (self.rng.next_u32() >> 16) as u16;
        let Phase::Online(o) = &mut self.phase else {
            return None;
        };
        let now_ms = now.as_millis();
        // 1. Retransmissions that are due.
        let mut retransmit = None;
        match o.send.poll(now_ms, jitter) {
            Some(SendEvent::Retransmit { seq, bytes, .. }) => {
                retransmit = Some((seq, to_ref(bytes)))
            }
            Some(SendEvent::PeerDead) => {
                self.fail(DisconnectReason::RetransmitLimit, now);
                return None;
            }
            None => {}
        }
        if let Some((seq, reference)) = retransmit {
            let body = match reference {
                Some((REF_UPLOAD, id)) => self.uploads.get(UploadId(id)).map(upload_body),
                Some((REF_OUTBOX, token)) => self.outbox.get(token).map(|m| m.body()),
                _ => None,
            };
            // An upload whose UploadAck already came needs no resend (its transport ack is on
            // the way); anything else still queued is sent again with the same seq.
            if let Some(body) = body {
                bump(&mut self.stats.retransmits);
                let frame = Frame {
                    seq,
                    ack: o.recv.ack(),
                    body,
                };
                return seal(o, frame, now, buf, &mut self.stats);
            }
        }
        // 2. New reliable frames while the window has room and no refusal pauses them: outbox
        // first, then uploads.
        if o.send.can_send() && o.paused_until <= now {
            if let Some(m) = self.outbox.next_unsent() {
                let token = m.token;
                if let Ok(seq) = o.send.push(&make_ref(REF_OUTBOX, token), now_ms, jitter) {
                    self.outbox.mark_sent(token, seq);
                    let body = self.outbox.get(token).map(|m| m.body())?;
                    let frame = Frame {
                        seq,
                        ack: o.recv.ack(),
                        body,
                    };
                    return seal(o, frame, now, buf, &mut self.stats);
                }
            } else if let Some(u) = self.uploads.next_unsent() {
                let id = u.id;
                if let Ok(seq) = o.send.push(&make_ref(REF_UPLOAD, id.0), now_ms, jitter) {
                    let body = self.uploads.mark_sent(id, seq).map(upload_body)?;
                    let frame = Frame {
                        seq,
                        ack: o.recv.ack(),
                        body,
                    };
                    return seal(o, frame, now, buf, &mut self.stats);
                }
            }
        }
        // 3. A due acknowledgement with nothing to carry it.
        if o.recv.poll_ack(now_ms).is_some() {
            let frame = Frame::unreliable(o.recv.ack(), Body::AckOnly);
            return seal(o, frame, now, buf, &mut self.stats);
        }
        // 4. Heartbeat after heartbeat_secs without sending, sooner after an unanswered packet.
        if now >= ping_due(o) {
            bump(&mut self.stats.pings);
            let frame = Frame::unreliable(o.recv.ack(), Body::Ping);
            return seal(o, frame, now, buf, &mut self.stats);
        }
        None
    }
}

/// Seals `frame` for the session, noting that its acknowledgement went out.
fn seal(
    o: &mut Online,
    frame: Frame<'_>,
    now: Instant,
    buf: &mut [u8],
    stats: &mut Stats,
) -> Option<usize> {
    match o.session.seal_frame_from_device(&frame, buf) {
        Ok(n) => {
            o.recv.on_ack_sent();
            o.last_tx = now;
            bump(&mut stats.tx_packets);
            Some(n)
        }
        Err(e) => {
            log_warn!("cannot seal frame: {}", e);
            None
        }
    }
}

fn upload_body<const P: usize>(u: &crate::queue::Upload<P>) -> Body<'_> {
    Body::Upload {
        upload_id: u.id.0,
        topic: u.topic.as_str(),
        payload: u.payload.as_slice(),
    }
}

fn make_ref(tag: u8, id: u32) -> [u8; REF_LEN] {
    let b = id.to_le_bytes();
    [tag, b[0], b[1], b[2], b[3]]
}

fn to_ref(bytes: &[u8]) -> Option<(u8, u32)> {
    match bytes {
        [tag, a, b, c, d] => Some((*tag, u32::from_le_bytes([*a, *b, *c, *d]))),
        _ => None,
    }
}

/// When the next Ping is due: `heartbeat_secs` after the last packet sent, or over UDP a
/// quarter of that when nothing authentic has come from the broker since that packet
/// (docs/protocol.md section 6, "Probing"): a lost Pong or ack then costs a quarter interval,
/// and the session timeout holds many round trips instead of two or three.
fn ping_due(o: &Online) -> Instant {
    let mut wait = heartbeat_ms(&o.welcome);
    if o.send.carrier_loses() && o.last_rx < o.last_tx {
        wait /= 4;
    }
    o.last_tx.plus_millis(wait)
}

fn heartbeat_ms(w: &WelcomeInfo) -> u64 {
    u64::from(w.heartbeat_secs.max(1)) * 1_000
}

fn session_timeout_ms(w: &WelcomeInfo) -> u64 {
    u64::from(w.session_timeout_secs.max(1)) * 1_000
}

impl<R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize> DeviceApi
    for DeviceClient<'_, R, Q, P, E, O>
{
    fn upload_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        when_full: FullPolicy,
    ) -> Result<UploadId, UploadError> {
        let result = self.uploads.push_with(topic, payload, when_full);
        match result {
            Err(UploadError::QueueFull) => bump(&mut self.stats.uploads_rejected),
            Ok((_, Some(_))) => bump(&mut self.stats.uploads_evicted),
            _ => {}
        }
        result.map(|(id, _)| id)
    }

    fn command_result(
        &mut self,
        cmd_id: u32,
        status: u16,
        payload: &[u8],
    ) -> Result<(), OutboxError> {
        self.outbox
            .push(OutKind::CommandResult { cmd_id, status }, payload)
    }

    fn request(&mut self, path: &str, payload: &[u8]) -> Result<u32, OutboxError> {
        let path: String<MAX_PATH> =
            String::try_from(path).map_err(|_| OutboxError::PathTooLong)?;
        let req_id = self.next_req_id;
        self.outbox
            .push(OutKind::Request { req_id, path }, payload)?;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        Ok(req_id)
    }

    fn send(&mut self, to: Address, payload: &[u8]) -> Result<(), OutboxError> {
        self.outbox.push(OutKind::Send { to }, payload)
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    fn is_online(&self) -> bool {
        matches!(self.phase, Phase::Online(_))
    }
}

#[cfg(test)]
pub(crate) mod tests;
