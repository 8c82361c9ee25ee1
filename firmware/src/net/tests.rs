//! The runner and the handle on the host: a fake embassy clock, an in-memory transport wired to
//! the test broker of the client tests, and `block_on` instead of an executor.

use core::cell::RefCell;
use core::future::poll_fn;
use core::task::Poll;
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embassy_futures::block_on;
use embassy_futures::select::{Either, select};
use embassy_futures::yield_now;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, MockDriver};
use shared_protocol::frame::Body;

use super::*;
use crate::api::DeviceApi;
use crate::client::tests::{Broker, DEVICE_ID, ENDPOINTS, Got, KEY, WS_ENDPOINTS};
use crate::client::{DeviceClient, Event};
use crate::config::{ClientConfig, DeviceConfig, Endpoint};
use crate::rng::SplitMix64;

/// Packets go straight to the broker; its answers wait in `inbox`.
struct MemTransport {
    broker: Rc<RefCell<Broker>>,
    inbox: Rc<RefCell<VecDeque<Vec<u8>>>>,
    connects: Rc<RefCell<u32>>,
    open: bool,
}

impl Transport for MemTransport {
    async fn connect(&mut self, _: &Endpoint<'_>) -> Result<(), TransportError> {
        *self.connects.borrow_mut() += 1;
        self.open = true;
        Ok(())
    }
    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        let now = embassy_time::Instant::now().as_millis();
        let mut replies = VecDeque::new();
        self.broker
            .borrow_mut()
            .on_packet(packet, now, &mut replies);
        self.inbox.borrow_mut().extend(replies);
        Ok(())
    }
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        poll_fn(|_| match self.inbox.borrow_mut().pop_front() {
            Some(p) => {
                buf[..p.len()].copy_from_slice(&p);
                Poll::Ready(Ok(p.len()))
            }
            // block_on polls again without a waker.
            None => Poll::Pending,
        })
        .await
    }
    async fn close(&mut self) {
        self.open = false;
    }
}

/// The mock clock is one global for the whole test process: tests that move it hold this lock,
/// so they do not move each other's time.
pub(crate) fn mock_clock() -> std::sync::MutexGuard<'static, ()> {
    static MOCK_CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MOCK_CLOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `cond` (yielding to the runner in between) up to `tries` times.
async fn until(tries: usize, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        yield_now().await;
    }
    cond()
}

/// The tests' device client (test key, no lookup, 4 uploads of 512 bytes) on `endpoints`.
fn test_client(
    endpoints: &'static [Endpoint<'static>],
) -> DeviceClient<'static, SplitMix64, 4, 512> {
    let device = DeviceConfig {
        device_id: DEVICE_ID,
        key: KEY,
        endpoints,
        lookup: None,
        since_id: 0,
    };
    DeviceClient::new(device, ClientConfig::default(), SplitMix64::new(5), now())
}

#[test]
fn runner_logs_in_moves_uploads_and_commands_and_keeps_the_session_alive() {
    let _clock = mock_clock();
    MockDriver::get().reset();
    let broker = Rc::new(RefCell::new(Broker::new(KEY)));
    let inbox = Rc::new(RefCell::new(VecDeque::new()));
    let connects = Rc::new(RefCell::new(0));
    let transport = MemTransport {
        broker: broker.clone(),
        inbox: inbox.clone(),
        connects: connects.clone(),
        open: false,
    };
    let client = test_client(&ENDPOINTS);
    let resources: ClientResources<'_, NoopRawMutex, _, 4, 512> = ClientResources::new(client);
    let mut buffers = RunnerBuffers::new();
    let (mut handle, mut runner) = new(&resources, transport, &mut buffers);

    let script = async {
        // Login happens without the clock moving.
        let event = handle.next_event().await;
        assert!(matches!(event, Event::Connected { .. }), "{event:?}");
        assert_eq!(*connects.borrow(), 1);

        // An upload from the application goes out and comes back acknowledged.
        let id = handle.upload("power", b"{}").unwrap();
        let event = handle.next_event().await;
        assert_eq!(event, Event::UploadAcked { id });
        assert_eq!(broker.borrow().uploads().len(), 1);

        // A command from the broker reaches the application; the result reaches the broker.
        let mut q = VecDeque::new();
        broker.borrow_mut().send_reliable(
            Body::Command {
                cmd_id: 9,
                name: "status",
                payload: b"",
            },
            &mut q,
        );
        inbox.borrow_mut().extend(q);
        let Event::Command { cmd_id, name, .. } = handle.next_event().await else {
            panic!("expected a command");
        };
        assert_eq!((cmd_id, name.as_str()), (9, "status"));
        handle.command_result(9, 0, b"ok").unwrap();
        assert!(
            until(1000, || broker
                .borrow()
                .got
                .iter()
                .any(|g| matches!(g, Got::CommandResult { cmd_id: 9, .. })))
            .await
        );

        // Idle for a heartbeat: the runner's timer fires and a Ping goes out.
        MockDriver::get().advance(Duration::from_secs(31));
        assert!(until(1000, || broker.borrow().got.contains(&Got::Ping)).await);
        assert!(handle.is_online());
        assert_eq!(*connects.borrow(), 1, "no reconnect");
    };
    match block_on(select(runner.run(), script)) {
        Either::First(never) => match never {},
        Either::Second(()) => {}
    }
}

/// Over WebSocket the broker never resends within a session, so while the application has not
/// taken its events the runner leaves the broker's packets unread (in the connection) instead of
/// refusing them, and reads on as soon as an event is taken: every Deliver arrives, none refused.
#[test]
fn over_websocket_the_runner_stops_reading_while_the_application_is_behind() {
    let _clock = mock_clock();
    MockDriver::get().reset();
    let broker = Rc::new(RefCell::new(Broker::new(KEY)));
    let inbox = Rc::new(RefCell::new(VecDeque::new()));
    let transport = MemTransport {
        broker: broker.clone(),
        inbox: inbox.clone(),
        connects: Rc::new(RefCell::new(0)),
        open: false,
    };
    let client = test_client(&WS_ENDPOINTS);
    let resources: ClientResources<'_, NoopRawMutex, _, 4, 512> = ClientResources::new(client);
    let mut buffers = RunnerBuffers::new();
    let (handle, mut runner) = new(&resources, transport, &mut buffers);

    let script = async {
        let event = handle.next_event().await;
        assert!(matches!(event, Event::Connected { .. }), "{event:?}");
        let mut q = VecDeque::new();
        for msg_id in 1..=4 {
            broker.borrow_mut().send_reliable(
                Body::Deliver {
                    msg_id,
                    from: None,
                    payload: b"",
                },
                &mut q,
            );
        }
        inbox.borrow_mut().extend(q);
        // The default event queue (4) takes two frame events; the other two packets stay unread.
        assert!(until(1000, || inbox.borrow().len() == 2).await);
        for _ in 0..100 {
            yield_now().await;
        }
        assert_eq!(
            inbox.borrow().len(),
            2,
            "paused while the application is behind"
        );
        for expected in 1..=4 {
            let Event::Deliver { msg_id, .. } = handle.next_event().await else {
                panic!("expected Deliver {expected}");
            };
            assert_eq!(msg_id, expected);
        }
        assert!(inbox.borrow().is_empty());
        assert_eq!(
            resources.with(|c| c.stats().rx_dropped),
            0,
            "nothing refused"
        );
    };
    match block_on(select(runner.run(), script)) {
        Either::First(never) => match never {},
        Either::Second(()) => {}
    }
}

/// The transports' socket memory is the application's: each UDP datagram fewer and each TCP
/// byte fewer come off the buffers' size (the defaults are what `plug-app` takes).
#[test]
fn socket_memory_is_the_applications_choice() {
    use crate::config::PACKET_BUF;
    use core::mem::size_of;
    let per_datagram = size_of::<UdpBuffers<2>>() - size_of::<UdpBuffers<1>>();
    assert!(per_datagram >= 2 * PACKET_BUF, "a datagram each way");
    assert_eq!(
        size_of::<UdpBuffers>(),
        size_of::<UdpBuffers<1>>() + (UDP_QUEUE - 1) * per_datagram
    );
    const SMALL_TCP: usize = PACKET_BUF + WS_FRAME_OVERHEAD;
    assert_eq!(
        size_of::<WsBuffers>() - size_of::<WsBuffers<SMALL_TCP>>(),
        2 * (WS_TCP_BUF - SMALL_TCP)
    );
    // Shared sockets: the UDP transport's memory alone, which also holds a WebSocket whose TCP
    // buffers are at least the separate transport's default.
    assert_eq!(size_of::<SocketMemory>(), size_of::<UdpBuffers>());
    const { assert!(SocketMemory::<UDP_QUEUE>::WS_TCP_BUF >= WS_TCP_BUF) };
    assert_eq!(
        SocketMemory::<3>::WS_TCP_BUF,
        3 * PACKET_BUF - (PACKET_BUF + 512)
    );
    const {
        assert!(
            SocketMemory::<3>::WS_TCP_BUF >= SMALL_TCP,
            "the smallest still holds a packet"
        )
    };
}

/// A UDP endpoint first, a WebSocket endpoint second.
static MIXED_ENDPOINTS: [Endpoint<'static>; 2] = [ENDPOINTS[0], WS_ENDPOINTS[1]];

/// Sockets that record which kind the runner opens; the UDP transport never connects.
struct KindSockets {
    broker: Rc<RefCell<Broker>>,
    inbox: Rc<RefCell<VecDeque<Vec<u8>>>>,
    opened: Rc<RefCell<Vec<SocketKind>>>,
}

/// The transport a [`KindSockets`] opened: a [`MemTransport`] that refuses to connect over UDP
/// and to endpoints of the other kind.
struct KindTransport {
    kind: SocketKind,
    inner: MemTransport,
}

impl Sockets for KindSockets {
    type Transport<'a> = KindTransport;
    fn open(&mut self, kind: SocketKind) -> KindTransport {
        self.opened.borrow_mut().push(kind);
        KindTransport {
            kind,
            inner: MemTransport {
                broker: self.broker.clone(),
                inbox: self.inbox.clone(),
                connects: Rc::new(RefCell::new(0)),
                open: false,
            },
        }
    }
}

impl Transport for KindTransport {
    async fn connect(&mut self, endpoint: &Endpoint<'_>) -> Result<(), TransportError> {
        if SocketKind::of(&endpoint.transport) != self.kind {
            return Err(TransportError::Unsupported);
        }
        if self.kind == SocketKind::Udp {
            return Err(TransportError::NoRoute);
        }
        self.inner.connect(endpoint).await
    }
    async fn send(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        self.inner.send(packet).await
    }
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.inner.recv(buf).await
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
}

/// With one socket memory for both transports (`SharedSockets`), the runner opens the transport
/// the current endpoint's kind needs: UDP for the first endpoint, and, when that one fails and
/// the client moves on to the WebSocket endpoint, a WebSocket transport it logs in over.
#[test]
fn the_runner_opens_the_transport_each_endpoints_kind_needs() {
    let _clock = mock_clock();
    MockDriver::get().reset();
    let opened = Rc::new(RefCell::new(Vec::new()));
    let sockets = KindSockets {
        broker: Rc::new(RefCell::new(Broker::new(KEY))),
        inbox: Rc::new(RefCell::new(VecDeque::new())),
        opened: opened.clone(),
    };
    let client = test_client(&MIXED_ENDPOINTS);
    let resources: ClientResources<'_, NoopRawMutex, _, 4, 512> = ClientResources::new(client);
    let mut buffers = RunnerBuffers::new();
    let (handle, mut runner) = new(&resources, sockets, &mut buffers);

    let script = async {
        let login = async {
            loop {
                if let Event::Connected { .. } = handle.next_event().await {
                    return;
                }
            }
        };
        // The UDP endpoint fails at once; the client backs off before the next endpoint.
        let clock = async {
            for _ in 0..600 {
                for _ in 0..10 {
                    yield_now().await;
                }
                MockDriver::get().advance(Duration::from_millis(100));
            }
        };
        if let Either::Second(()) = select(login, clock).await {
            panic!("no login within a minute; opened {:?}", opened.borrow());
        }
        assert_eq!(
            *opened.borrow(),
            [SocketKind::Udp, SocketKind::WebSocket],
            "UDP for the first endpoint, then the WebSocket transport for the second"
        );
        let on_second = resources.with(|c| c.target().map(|t| t.endpoint() == MIXED_ENDPOINTS[1]));
        assert_eq!(
            on_second,
            Some(true),
            "logged in over the WebSocket endpoint"
        );
    };
    match block_on(select(runner.run(), script)) {
        Either::First(never) => match never {},
        Either::Second(()) => {}
    }
}
