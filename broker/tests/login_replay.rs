//! A captured LOGIN replayed against real brokers (docs/protocol.md section 3.2 step 4): every
//! node draws its own cookie secret at start, so the copy is refused by another broker
//! (`BAD_COOKIE`), by the same broker after a restart (`BAD_COOKIE`) and by the same live broker
//! (silence for an exact copy, `REPLAY` for the same challenge with another `since_id`). Two
//! standalone in-process brokers on free 127.0.0.1 ports stand for two comets. Also the
//! anti-amplification rules of section 2 on the UDP endpoint.

use crate::comet_support;

use std::net::SocketAddr;
use std::time::Duration;

use broker::terminal::IdProfile;
use comet_support::*;
use shared_protocol::codes::Code;
use shared_protocol::handshake::{ClientEvent, ClientHandshake};
use shared_protocol::ids::Address;
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{PacketType, Reject};
use tokio::net::UdpSocket;

/// How long "no answer" is waited for.
const SILENCE: Duration = Duration::from_millis(400);
const ANSWER: Duration = Duration::from_secs(5);

/// One device UDP socket: every packet, original or replayed, comes from the same address and
/// port, so only the broker node's own secret can tell them apart.
struct Udp(UdpSocket);

impl Udp {
    async fn new() -> Udp {
        Udp(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    /// Sends `packet` to `to` and returns the first handshake packet that comes back from `to`
    /// within `wait` (DATA of the session already established is skipped).
    async fn ask(&self, to: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.0.send_to(packet, to).await.unwrap();
        let until = tokio::time::Instant::now() + wait;
        loop {
            let mut buf = vec![0u8; 2048];
            let (n, from) = tokio::time::timeout_at(until, self.0.recv_from(&mut buf))
                .await
                .ok()?
                .unwrap();
            buf.truncate(n);
            if from == to && buf.get(1) != Some(&(PacketType::Data as u8)) {
                return Some(buf);
            }
        }
    }
}

/// What a fresh handshake of one device sent and got up to its LOGIN.
struct Captured {
    /// The handshake, waiting for the WELCOME.
    hs: ClientHandshake,
    /// The HELLO's nonce.
    nonce: [u8; 16],
    /// The CHALLENGE the broker answered with.
    challenge: Vec<u8>,
    /// The LOGIN the device sent for it.
    login: Vec<u8>,
}

/// Runs HELLO -> CHALLENGE for device `id` against `broker` and builds the LOGIN (not sent).
async fn capture_login(dev: &Udp, broker: SocketAddr, id: u32, since_id: u64) -> Captured {
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id), since_id, 1);
    let mut out = [0u8; MAX_PACKET];
    let nonce: [u8; 16] = rand::random();
    let hello = hs
        .start(broker::router::now_ms(), nonce, &mut out)
        .unwrap()
        .to_vec();
    let challenge = dev.ask(broker, &hello, ANSWER).await.expect("CHALLENGE");
    let mut ch = challenge.clone();
    let ClientEvent::Send(login) = hs.on_packet(&mut ch, &mut out).unwrap() else {
        panic!("LOGIN expected")
    };
    let login = login.to_vec();
    Captured {
        hs,
        nonce,
        challenge,
        login,
    }
}

fn reject_code(packet: &[u8]) -> Code {
    Reject::decode(packet)
        .unwrap_or_else(|e| panic!("REJECT expected, got {packet:02x?}: {e}"))
        .code
}

#[tokio::test]
async fn a_captured_udp_login_is_refused_by_other_brokers_after_restart_and_when_live() {
    let a = TestBroker::start(IdProfile::Plug).await;
    let b = TestBroker::start(IdProfile::Plug).await;
    let dev = Udp::new().await;

    // The genuine login on broker A.
    let Captured {
        mut hs,
        nonce,
        challenge,
        login,
    } = capture_login(&dev, a.udp(), 61, 0).await;
    let mut welcome = dev.ask(a.udp(), &login, ANSWER).await.expect("WELCOME");
    let mut out = [0u8; MAX_PACKET];
    assert!(matches!(
        hs.on_packet(&mut welcome, &mut out).unwrap(),
        ClientEvent::Established(_)
    ));

    // Another broker (same fleet key, own cookie secret): BAD_COOKIE.
    let answer = dev.ask(b.udp(), &login, ANSWER).await.expect("REJECT");
    assert_eq!(reject_code(&answer), Code::BAD_COOKIE);
    assert!(b.counted("reason=\"bad_cookie\""));

    // The same live broker, exact copy: no answer (the WELCOME is on its way).
    assert_eq!(dev.ask(a.udp(), &login, SILENCE).await, None);
    assert!(a.counted("reason=\"duplicate\""), "counted");
    // The same challenge with another since_id (another proof): REPLAY.
    let mut other = ClientHandshake::new(Address::device(61), device_key(61), 5, 1);
    other.start(0, nonce, &mut out).unwrap();
    let mut ch = challenge.clone();
    let ClientEvent::Send(login5) = other.on_packet(&mut ch, &mut out).unwrap() else {
        panic!("LOGIN expected")
    };
    let login5 = login5.to_vec();
    assert_ne!(login5, login);
    let answer = dev.ask(a.udp(), &login5, ANSWER).await.expect("REJECT");
    assert_eq!(reject_code(&answer), Code::REPLAY);

    // Broker A restarts with the same configuration (fleet key, token secret, API token; the
    // test brokers store no generated secrets; a new data directory because the embedded
    // store's lock outlives the in-process stop): the copy fails the cookie, because the new
    // process drew a new cookie secret.
    a.stop().await;
    let a2 = TestBroker::start(IdProfile::Plug).await;
    let answer = dev.ask(a2.udp(), &login, ANSWER).await.expect("REJECT");
    assert_eq!(reject_code(&answer), Code::BAD_COOKIE);

    // A fresh handshake still logs in on the restarted broker.
    login_ok(&dev, a2.udp(), 61).await;
    a2.stop().await;
    b.stop().await;
}

async fn login_ok(dev: &Udp, broker: SocketAddr, id: u32) {
    let Captured { mut hs, login, .. } = capture_login(dev, broker, id, 0).await;
    let mut welcome = dev.ask(broker, &login, ANSWER).await.expect("WELCOME");
    let mut out = [0u8; MAX_PACKET];
    assert!(matches!(
        hs.on_packet(&mut welcome, &mut out).unwrap(),
        ClientEvent::Established(_)
    ));
}

#[tokio::test]
async fn a_login_captured_on_a_device_websocket_is_refused_by_another_broker() {
    let a = TestBroker::start(IdProfile::Plug).await;
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut wire = Wire::ws(&a.device_ws()).await;
    let mut hs = ClientHandshake::new(Address::device(62), device_key(62), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    wire.send(&hello).await;
    let mut ch = wire.recv(ANSWER).await.expect("CHALLENGE");
    let ClientEvent::Send(login) = hs.on_packet(&mut ch, &mut out).unwrap() else {
        panic!("LOGIN expected")
    };
    let login = login.to_vec();
    wire.send(&login).await;
    let mut welcome = wire.recv(ANSWER).await.expect("WELCOME");
    assert!(matches!(
        hs.on_packet(&mut welcome, &mut out).unwrap(),
        ClientEvent::Established(_)
    ));

    let mut replay = Wire::ws(&b.device_ws()).await;
    replay.send(&login).await;
    let answer = replay.recv(ANSWER).await.expect("REJECT");
    assert_eq!(reject_code(&answer), Code::BAD_COOKIE);
    assert_eq!(
        replay.close_code(ANSWER).await,
        Some(4000 + Code::BAD_COOKIE.0)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_udp_endpoint_never_answers_with_more_bytes_than_it_got() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let dev = Udp::new().await;
    // A HELLO of another version: 2 bytes get nothing, 5 bytes get the 5-byte REJECT.
    assert_eq!(dev.ask(b.udp(), &[1, 0x01], SILENCE).await, None);
    let answer = dev
        .ask(b.udp(), &[1, 0x01, 0, 0, 0], ANSWER)
        .await
        .expect("REJECT");
    assert_eq!(answer.len(), 5);
    assert_eq!(reject_code(&answer), Code::UNSUPPORTED_VERSION);
    assert_eq!(Reject::decode(&answer).unwrap().max_version, 3);
    // A truncated LOGIN: 4 bytes get nothing, 5 bytes get REJECT MALFORMED.
    assert_eq!(dev.ask(b.udp(), &[3, 0x03, 0, 0x2a], SILENCE).await, None);
    let answer = dev
        .ask(b.udp(), &[3, 0x03, 0, 0x2a, 0], ANSWER)
        .await
        .expect("REJECT");
    assert_eq!(answer.len(), 5);
    assert_eq!(reject_code(&answer), Code::MALFORMED);
    b.stop().await;
}
