//! The login handshake end to end (docs/protocol.md section 3): the happy path, every rejection
//! of the check order, timeouts, tampered and replayed DATA, and NAT rebinding.

use shared_protocol::codes::Code;
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::handshake::client::attempt_wait_ms;
use shared_protocol::handshake::{
    Acceptor, Carrier, ClientError, ClientEvent, ClientHandshake, Established, HelloError,
    HelloReply, LoginError, SessionGrant, TerminalRecord, WelcomeParams, reject_answer,
    reject_packet, retry_after_capped,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, MasterKey, PeerAddr, derive_device_key};
use shared_protocol::limits::{CHALLENGE_LIFETIME_MS, REJECT_RETRY_AFTER_CAP_MS};
use shared_protocol::packet::Reject;
use shared_protocol::session::{SecureSession, SessionError};

const MASTER: MasterKey = MasterKey([0x11; 32]);
const PEER: PeerAddr = PeerAddr::V4([192, 0, 2, 10], 40000);
const PARAMS: WelcomeParams = WelcomeParams {
    heartbeat_secs: 30,
    session_timeout_secs: 90,
    max_payload: 1024,
    server_time_ms: 5_000,
};

/// A session grant with a broker nonce derived from the session id (tests need distinct nonces,
/// not random ones).
fn grant(session_id: u32) -> SessionGrant {
    let mut broker_nonce = [0xb0; 16];
    broker_nonce[..4].copy_from_slice(&session_id.to_le_bytes());
    SessionGrant {
        session_id,
        broker_nonce,
    }
}

fn acceptor() -> Acceptor {
    Acceptor::new(IdProfile::Plug, CookieSecret([0x22; 32]))
}

fn record(id: u32, last: Option<u64>) -> Option<TerminalRecord> {
    Some(TerminalRecord {
        key: derive_device_key(&MASTER, id),
        last_login_ms: last,
    })
}

/// Runs HELLO -> CHALLENGE -> LOGIN for device `id`; returns the client and the LOGIN bytes.
fn until_login(id: u32, now: u64) -> (ClientHandshake, Vec<u8>) {
    let mut client = ClientHandshake::new(
        Address::device(id),
        derive_device_key(&MASTER, id),
        7,
        0xe90c,
    );
    let mut hello = [0u8; 256];
    let hello = client.start(now, [0x33; 16], &mut hello).unwrap().to_vec();
    assert_eq!(hello.len(), 128);
    let mut ch = [0u8; 128];
    let HelloReply::Challenge(ch) = acceptor().on_hello(&PEER, &hello, now, &mut ch).unwrap()
    else {
        panic!("expected a challenge")
    };
    assert!(ch.len() < hello.len(), "no amplification");
    let mut ch = ch.to_vec();
    let mut out = [0u8; 256];
    let ClientEvent::Send(login) = client.on_packet(&mut ch, &mut out).unwrap() else {
        panic!("expected a LOGIN")
    };
    (client, login.to_vec())
}

fn login_at(login: &[u8], peer: &PeerAddr, now: u64, last: Option<u64>) -> Result<(), LoginError> {
    let mut out = [0u8; 256];
    acceptor()
        .on_login(
            peer,
            login,
            now,
            |a| record(a.id, last),
            grant(9),
            &PARAMS,
            &mut out,
        )
        .map(|_| ())
}

fn establish(id: u32) -> (Established, SecureSession) {
    let (mut client, login) = until_login(id, 1000);
    let mut out = [0u8; 256];
    let acc = acceptor()
        .on_login(
            &PEER,
            &login,
            1200,
            |a| record(a.id, None),
            grant(77),
            &PARAMS,
            &mut out,
        )
        .unwrap();
    assert_eq!(acc.address, Address::device(id));
    assert_eq!(acc.since_id, 7);
    assert_eq!(acc.login_timestamp_ms, 1000);
    let mut welcome = acc.welcome.to_vec();
    let mut buf = [0u8; 64];
    let ClientEvent::Established(est) = client.on_packet(&mut welcome, &mut buf).unwrap() else {
        panic!("expected established")
    };
    assert!(client.is_established());
    assert_eq!(client.poll_timeout(), None);
    (est, acc.session)
}

#[test]
fn full_handshake_then_data_both_ways() {
    let (est, mut broker) = establish(4242);
    assert_eq!(est.welcome.session_id, 77);
    assert_eq!(est.welcome.heartbeat_secs, 30);
    assert_eq!(est.welcome.max_payload, 1024);
    let mut device = est.session;
    let mut pkt = [0u8; 128];
    let ping = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Ping);
    let n = device.seal_frame(&ping, &mut pkt).unwrap();
    assert_eq!(broker.open_frame(&mut pkt[..n]).unwrap(), ping);
    let pong = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Pong { server_time_ms: 9 });
    let n = broker.seal_frame(&pong, &mut pkt).unwrap();
    // Counter 0 went to the WELCOME; this is 1.
    assert_eq!(&pkt[6..14], &1u64.to_le_bytes());
    assert_eq!(device.open_frame(&mut pkt[..n]).unwrap(), pong);
}

#[test]
fn replayed_login_is_rejected_with_replay() {
    let (_, login) = until_login(5, 1000);
    assert_eq!(login_at(&login, &PEER, 1500, None), Ok(()));
    // The broker recorded 1000 as the last login time: the same LOGIN again is a replay.
    assert_eq!(
        login_at(&login, &PEER, 1600, Some(1000)),
        Err(LoginError::Replay)
    );
    assert_eq!(LoginError::Replay.code(), Some(Code::REPLAY));
    // A newer login (later challenge) is fine.
    let (_, newer) = until_login(5, 2000);
    assert_eq!(login_at(&newer, &PEER, 2100, Some(1000)), Ok(()));
}

#[test]
fn login_from_another_address_or_port_is_bad_cookie() {
    let (_, login) = until_login(5, 1000);
    let other_ip = PeerAddr::V4([192, 0, 2, 11], 40000);
    let other_port = PeerAddr::V4([192, 0, 2, 10], 40001);
    assert_eq!(
        login_at(&login, &other_ip, 1100, None),
        Err(LoginError::BadCookie)
    );
    assert_eq!(
        login_at(&login, &other_port, 1100, None),
        Err(LoginError::BadCookie)
    );
}

#[test]
fn expired_challenge() {
    let (_, login) = until_login(5, 1000);
    let limit = 1000 + CHALLENGE_LIFETIME_MS;
    assert_eq!(login_at(&login, &PEER, limit, None), Ok(()));
    assert_eq!(
        login_at(&login, &PEER, limit + 1, None),
        Err(LoginError::CookieExpired)
    );
}

#[test]
fn wrong_key_is_auth_failed_and_unknown_terminal() {
    let (_, login) = until_login(5, 1000);
    let mut out = [0u8; 256];
    let wrong = |_: Address| {
        Some(TerminalRecord {
            key: DeviceKey([0x99; 32]),
            last_login_ms: None,
        })
    };
    let r = acceptor().on_login(&PEER, &login, 1100, wrong, grant(1), &PARAMS, &mut out);
    assert_eq!(r.unwrap_err(), LoginError::AuthFailed);
    let r = acceptor().on_login(&PEER, &login, 1100, |_| None, grant(1), &PARAMS, &mut out);
    assert_eq!(r.unwrap_err(), LoginError::UnknownTerminal);
}

#[test]
fn check_order_cookie_before_key_lookup() {
    // A bad cookie must be reported before the terminal store is consulted.
    let (_, login) = until_login(5, 1000);
    let mut out = [0u8; 256];
    let other = PeerAddr::V6([0xfe; 16], 1);
    let r = acceptor().on_login(
        &other,
        &login,
        1100,
        |_| panic!("lookup before cookie check"),
        grant(1),
        &PARAMS,
        &mut out,
    );
    assert_eq!(r.unwrap_err(), LoginError::BadCookie);
    let r = acceptor().on_login(
        &PEER,
        &login,
        1000 + CHALLENGE_LIFETIME_MS + 1,
        |_| panic!("lookup before expiry check"),
        grant(1),
        &PARAMS,
        &mut out,
    );
    assert_eq!(r.unwrap_err(), LoginError::CookieExpired);
}

#[test]
fn tampered_login_fields() {
    let (_, login) = until_login(5, 1000);
    // Flip a bit of since_id's encoding area (the last 40 bytes hold since_id and proof).
    let mut t = login.clone();
    let last = t.len() - 1;
    t[last] ^= 1; // proof
    assert_eq!(login_at(&t, &PEER, 1100, None), Err(LoginError::AuthFailed));
    let mut t = login.clone();
    t[8] ^= 1; // client nonce -> cookie no longer matches
    assert_eq!(login_at(&t, &PEER, 1100, None), Err(LoginError::BadCookie));
}

#[test]
fn hello_rejections() {
    let acc = acceptor();
    let mut out = [0u8; 64];
    // Phone kind on the binary transport.
    let mut c = ClientHandshake::new(Address::phone(3), DeviceKey([0; 32]), 0, 1);
    let mut buf = [0u8; 128];
    let hello = c.start(0, [1; 16], &mut buf).unwrap().to_vec();
    match acc.on_hello(&PEER, &hello, 0, &mut out).unwrap() {
        HelloReply::Reject { code, packet } => {
            assert_eq!(code, Code::KIND_NOT_ALLOWED);
            assert_eq!(Reject::decode(packet).unwrap().code, Code::KIND_NOT_ALLOWED);
        }
        other => panic!("{other:?}"),
    }
    // Id 0.
    let mut c = ClientHandshake::new(Address::device(0), DeviceKey([0; 32]), 0, 1);
    let hello = c.start(0, [1; 16], &mut buf).unwrap().to_vec();
    assert!(matches!(
        acc.on_hello(&PEER, &hello, 0, &mut out).unwrap(),
        HelloReply::Reject {
            code: Code::INVALID_ID,
            ..
        }
    ));
    // Unknown version: REJECT UNSUPPORTED_VERSION with our max version.
    let mut v1 = hello.clone();
    v1[0] = 1;
    let HelloReply::Reject { code, packet } = acc.on_hello(&PEER, &v1, 0, &mut out).unwrap() else {
        panic!()
    };
    assert_eq!(code, Code::UNSUPPORTED_VERSION);
    assert_eq!(Reject::decode(packet).unwrap().max_version, 3);
    // Short HELLO: silence.
    assert!(acc.on_hello(&PEER, &hello[..100], 0, &mut out).is_err());
}

/// On a reliable carrier (WebSocket) a silent attempt never resends HELLO with a new nonce, so a
/// CHALLENGE that arrives late, however late, is answered with the nonce it was made for and the
/// LOGIN is accepted (docs/protocol.md section 3.2, step 6). On a datagram carrier the same
/// timeline resends and the late CHALLENGE earns `BAD_COOKIE`.
#[test]
fn a_reliable_handshake_never_resends_hello_and_a_late_challenge_still_logs_in() {
    let key = derive_device_key(&MASTER, 5);
    let late_ms = 9_000; // the CHALLENGE arrives after what would have been five resends
    for carrier in [Carrier::Reliable, Carrier::Datagram] {
        let mut client =
            ClientHandshake::new(Address::device(5), key.clone(), 0, 1).with_carrier(carrier);
        let mut buf = [0u8; 256];
        let hello = client.start(0, [1; 16], &mut buf).unwrap().to_vec();
        let mut resent = 0;
        for now in (0..=late_ms).step_by(50) {
            let nonce = [(now / 50 % 250 + 2) as u8; 16];
            if client
                .handle_timeout(now, nonce, &mut buf)
                .unwrap()
                .is_some()
            {
                resent += 1;
            }
        }
        let mut ch = [0u8; 128];
        let HelloReply::Challenge(ch) = acceptor().on_hello(&PEER, &hello, 500, &mut ch).unwrap()
        else {
            panic!("expected a challenge")
        };
        let mut ch = ch.to_vec();
        let ClientEvent::Send(login) = client.on_packet(&mut ch, &mut buf).unwrap() else {
            panic!("expected a LOGIN")
        };
        let verdict = login_at(login, &PEER, late_ms, None);
        match carrier {
            Carrier::Reliable => {
                assert_eq!(resent, 0, "no HELLO resent on a reliable carrier");
                assert_eq!(client.poll_timeout(), None);
                assert_eq!(verdict, Ok(()), "the late CHALLENGE still logs in");
                assert_eq!(
                    client.start(late_ms, [9; 16], &mut [0u8; 256]),
                    Err(ClientError::HelloAlreadySent),
                    "a second HELLO on the same connection is refused"
                );
            }
            Carrier::Datagram => {
                assert_eq!(resent, 5, "HELLOs resent at about 1, 2, 3, 4 and 6 s");
                assert_eq!(verdict, Err(LoginError::BadCookie));
            }
        }
    }
}

#[test]
fn client_handles_reject_and_timeouts() {
    let mut client = ClientHandshake::new(Address::device(5), derive_device_key(&MASTER, 5), 0, 1);
    let mut buf = [0u8; 128];
    client.start(100, [1; 16], &mut buf).unwrap();
    assert_eq!(client.poll_timeout(), Some(1100));
    assert!(
        client
            .handle_timeout(1099, [2; 16], &mut buf)
            .unwrap()
            .is_none()
    );
    let again = client
        .handle_timeout(1100, [2; 16], &mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(&again[4..20], &[2; 16], "fresh nonce in the new HELLO");
    // Nonce byte 15 is 2: jitter (2 * 250) >> 8 = 1 ms on top of the flat 1 s.
    assert_eq!(
        client.poll_timeout(),
        Some(2101),
        "the second attempt waits 1 s again (no doubling yet), plus its jitter"
    );
    let mut rej = reject_packet(Code::SERVER_BUSY, 2000, &mut [0u8; 16])
        .unwrap()
        .to_vec();
    match client.on_packet(&mut rej, &mut buf).unwrap() {
        ClientEvent::Rejected(r) => {
            assert_eq!(r.code, Code::SERVER_BUSY);
            assert_eq!(r.retry_after_ms, 2000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.poll_timeout(), None);
}

/// UDP attempts wait 1 s for the first four, then 2, 4, 8 s (capped), each plus a jitter below
/// 250 ms from the attempt's nonce (docs/protocol.md section 3.2, step 6); driven here through
/// the handshake with injected time, every HELLO going unanswered.
#[test]
fn udp_attempts_wait_one_second_four_times_then_double_to_eight() {
    let mut client = ClientHandshake::new(Address::device(5), derive_device_key(&MASTER, 5), 0, 1);
    let mut buf = [0u8; 128];
    let mut now = 0;
    let mut waits = Vec::new();
    // Nonce byte 15 is the jitter source: 0, 255, 128, ... gives jitter 0, 249, 125, ...
    let jitter_bytes = [0u8, 255, 128, 0, 0, 255, 0, 0, 0];
    client.start(now, [jitter_bytes[0]; 16], &mut buf).unwrap();
    for &b in &jitter_bytes[1..] {
        let due = client
            .poll_timeout()
            .expect("a UDP attempt always has a deadline");
        assert!(
            client
                .handle_timeout(due - 1, [b; 16], &mut buf)
                .unwrap()
                .is_none()
        );
        waits.push(due - now);
        now = due;
        let hello = client
            .handle_timeout(now, [b; 16], &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(hello[19], b, "the resent HELLO carries the fresh nonce");
    }
    waits.push(client.poll_timeout().unwrap() - now);
    assert_eq!(
        waits,
        [1000, 1249, 1125, 1000, 2000, 4249, 8000, 8000, 8000]
    );
    for k in 1..=4 {
        for j in [0u8, 255] {
            let w = attempt_wait_ms(k, j);
            assert!((1000..1250).contains(&w), "attempt {k}: {w}");
        }
    }
    assert_eq!(attempt_wait_ms(u32::MAX, 255), 8249, "capped, no overflow");
}

/// A REJECT of another protocol version is still a refusal: the client reads the fields it
/// knows (any later ones are ignored) and stops waiting; one too short for those fields is
/// ignored and the client keeps waiting.
#[test]
fn client_reads_a_reject_of_another_version() {
    let start = || {
        let mut client =
            ClientHandshake::new(Address::device(5), derive_device_key(&MASTER, 5), 0, 1);
        client.start(100, [1; 16], &mut [0u8; 128]).unwrap();
        client
    };
    let ours = reject_packet(Code::UNSUPPORTED_VERSION, 700, &mut [0u8; 16])
        .unwrap()
        .to_vec();
    let mut buf = [0u8; 128];

    let mut newer = ours.clone();
    newer[0] = 4;
    newer.push(0x2a);
    let mut client = start();
    match client.on_packet(&mut newer, &mut buf).unwrap() {
        ClientEvent::Rejected(r) => {
            assert_eq!(r.code, Code::UNSUPPORTED_VERSION);
            assert_eq!(r.max_version, 3);
            assert_eq!(r.retry_after_ms, 700);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.poll_timeout(), None, "no longer waiting");

    let mut cut = ours[..ours.len() - 1].to_vec();
    cut[0] = 4;
    let mut client = start();
    assert!(matches!(
        client.on_packet(&mut cut, &mut buf).unwrap(),
        ClientEvent::Ignored
    ));
    assert_eq!(client.poll_timeout(), Some(1100), "still waiting");
}

#[test]
fn client_ignores_forged_welcome_and_keeps_waiting() {
    let (mut client, login) = until_login(5, 1000);
    let mut out = [0u8; 256];
    let acc = acceptor()
        .on_login(
            &PEER,
            &login,
            1100,
            |a| record(a.id, None),
            grant(3),
            &PARAMS,
            &mut out,
        )
        .unwrap();
    let mut forged = acc.welcome.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    let mut buf = [0u8; 64];
    assert!(matches!(
        client.on_packet(&mut forged, &mut buf).unwrap(),
        ClientEvent::Ignored
    ));
    assert!(!client.is_established());
    let mut good = acc.welcome.to_vec();
    assert!(matches!(
        client.on_packet(&mut good, &mut buf).unwrap(),
        ClientEvent::Established(_)
    ));
}

#[test]
fn tampered_and_replayed_data_are_dropped() {
    let (est, mut broker) = establish(9);
    let mut device = est.session;
    let frame = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Ping);
    let mut pkt = [0u8; 64];
    let n = device.seal_frame(&frame, &mut pkt).unwrap();
    let original = pkt[..n].to_vec();
    let mut tampered = original.clone();
    tampered[n / 2] ^= 4;
    assert_eq!(
        broker.open_frame(&mut tampered),
        Err(SessionError::AuthFailed)
    );
    let mut first = original.clone();
    assert!(broker.open_frame(&mut first).is_ok());
    let mut replay = original.clone();
    assert_eq!(broker.open_frame(&mut replay), Err(SessionError::Replayed));
}

/// Sessions are keyed by session_id: a packet that authenticates is accepted whatever address it
/// came from, so the broker can move the session to the new address (NAT rebinding).
#[test]
fn nat_rebinding_packet_from_new_address_authenticates() {
    use std::collections::HashMap;
    let (est, broker_session) = establish(12);
    let mut device = est.session;
    // Broker's table: session id -> (session, current peer address).
    let mut table: HashMap<u32, (SecureSession, PeerAddr)> = HashMap::new();
    table.insert(broker_session.session_id(), (broker_session, PEER));
    let new_addr = PeerAddr::V4([198, 51, 100, 7], 61000);
    let mut pkt = [0u8; 64];
    let n = device
        .seal_frame(&Frame::unreliable(Ack::default(), Body::Ping), &mut pkt)
        .unwrap();
    let sid = shared_protocol::session::peek_session_id(&pkt[..n]).unwrap();
    let (session, addr) = table.get_mut(&sid).unwrap();
    assert!(session.open_frame(&mut pkt[..n]).is_ok());
    *addr = new_addr; // authenticated and new: move the session
    assert_eq!(table[&77].1, new_addr);
}

/// The broker's nonce makes every accepted login's keys new: two brokers sharing a cookie secret
/// (the worst case: one node, or nodes configured alike) that both accept the very same LOGIN
/// produce different WELCOMEs and different session keys, and the device completes with either.
#[test]
fn same_login_accepted_twice_gets_independent_keys() {
    let (client, login) = until_login(31, 1000);
    let accept = |session_id: u32, broker_nonce: [u8; 16]| {
        let mut out = [0u8; 256];
        let acc = acceptor()
            .on_login(
                &PEER,
                &login,
                1100,
                |a| record(a.id, None),
                SessionGrant {
                    session_id,
                    broker_nonce,
                },
                &PARAMS,
                &mut out,
            )
            .unwrap();
        (acc.welcome.to_vec(), acc.session)
    };
    // Same session id on both, so only the broker nonce differs.
    let (welcome_a, mut broker_a) = accept(5, [0xaa; 16]);
    let (welcome_b, mut broker_b) = accept(5, [0xbb; 16]);
    assert_eq!(&welcome_a[6..22], &[0xaa; 16], "broker nonce in clear");
    assert_eq!(&welcome_b[6..22], &[0xbb; 16]);
    assert_ne!(welcome_a[22..], welcome_b[22..], "different keystream");
    // The same counter-1 frame sealed by both brokers differs: the keys differ.
    let pong = Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Pong { server_time_ms: 1 });
    let (mut pa, mut pb) = ([0u8; 64], [0u8; 64]);
    let na = broker_a.seal_frame(&pong, &mut pa).unwrap();
    let nb = broker_b.seal_frame(&pong, &mut pb).unwrap();
    assert_eq!(pa[..14], pb[..14], "same header, same nonce");
    assert_ne!(pa[14..na], pb[14..nb], "different keys");
    // The device completes with either WELCOME, and then talks only to that broker.
    for (welcome, broker, other) in [
        (&welcome_a, &mut broker_a, &pb[..nb]),
        (&welcome_b, &mut broker_b, &pa[..na]),
    ] {
        let mut c = client.clone();
        let mut w = welcome.clone();
        let mut buf = [0u8; 64];
        let ClientEvent::Established(est) = c.on_packet(&mut w, &mut buf).unwrap() else {
            panic!("the device accepts either WELCOME")
        };
        let mut device = est.session;
        let mut foreign = other.to_vec();
        assert_eq!(
            device.open_frame(&mut foreign),
            Err(SessionError::AuthFailed),
            "the other broker's packet does not open"
        );
        let mut pkt = [0u8; 64];
        let n = device.seal_frame(&pong, &mut pkt).unwrap();
        assert_eq!(broker.open_frame(&mut pkt[..n]).unwrap(), pong);
    }
}

/// A WELCOME whose broker nonce was changed in transit neither opens nor moves the device on.
#[test]
fn welcome_with_another_broker_nonce_is_ignored() {
    let (mut client, login) = until_login(32, 1000);
    let mut out = [0u8; 256];
    let acc = acceptor()
        .on_login(
            &PEER,
            &login,
            1100,
            |a| record(a.id, None),
            grant(8),
            &PARAMS,
            &mut out,
        )
        .unwrap();
    let mut bad = acc.welcome.to_vec();
    bad[10] ^= 1;
    let mut buf = [0u8; 64];
    assert!(matches!(
        client.on_packet(&mut bad, &mut buf).unwrap(),
        ClientEvent::Ignored
    ));
    let mut good = acc.welcome.to_vec();
    assert!(matches!(
        client.on_packet(&mut good, &mut buf).unwrap(),
        ClientEvent::Established(_)
    ));
}

/// Anti-amplification: a HELLO of another version shorter than the REJECT it would get is
/// dropped; one at least as long gets the REJECT.
#[test]
fn unknown_version_hello_is_answered_only_when_not_shorter_than_the_reject() {
    let acc = acceptor();
    let mut out = [0u8; 64];
    let reject_len = reject_packet(Code::UNSUPPORTED_VERSION, 0, &mut [0u8; 16])
        .unwrap()
        .len();
    assert_eq!(reject_len, 5);
    for len in 2..=8 {
        let mut pkt = vec![0u8; len];
        pkt[0] = 1;
        pkt[1] = 0x01;
        let r = acc.on_hello(&PEER, &pkt, 0, &mut out);
        if len < reject_len {
            assert!(matches!(r, Err(HelloError::Dropped(_))), "{len}: {r:?}");
        } else {
            let Ok(HelloReply::Reject { code, packet }) = r else {
                panic!("{len}: {r:?}")
            };
            assert_eq!(code, Code::UNSUPPORTED_VERSION);
            assert!(packet.len() <= len);
        }
    }
}

/// A truncated LOGIN is MALFORMED when the REJECT is no longer than it, dropped otherwise.
#[test]
fn truncated_login_is_malformed_unless_shorter_than_the_reject() {
    let (_, login) = until_login(5, 1000);
    for len in 2..login.len() {
        let r = login_at(&login[..len], &PEER, 1100, None);
        if len < 5 {
            assert!(matches!(r, Err(LoginError::Dropped(_))), "{len}: {r:?}");
        } else {
            assert_eq!(r, Err(LoginError::Malformed), "{len}");
            assert_eq!(LoginError::Malformed.code(), Some(Code::MALFORMED));
        }
    }
    let mut out = [0u8; 16];
    assert!(reject_answer(4, Code::MALFORMED, 0, &mut out).is_none());
    assert_eq!(
        reject_answer(5, Code::MALFORMED, 0, &mut out)
            .unwrap()
            .len(),
        5
    );
}

/// A REJECT's wait is honoured up to REJECT_RETRY_AFTER_CAP_MS only.
#[test]
fn reject_wait_is_capped() {
    assert_eq!(REJECT_RETRY_AFTER_CAP_MS, 300_000);
    assert_eq!(retry_after_capped(0), 0);
    assert_eq!(retry_after_capped(5_000), 5_000);
    assert_eq!(retry_after_capped(300_000), 300_000);
    assert_eq!(retry_after_capped(300_001), 300_000);
    assert_eq!(retry_after_capped(u32::MAX), 300_000);
}

/// A version-2 peer meets a version-3 broker: its LOGIN (byte for byte a valid version-2 one) is
/// `UNSUPPORTED_VERSION` and dropped unanswered; its HELLO gets REJECT `UNSUPPORTED_VERSION`
/// naming version 3.
#[test]
fn version_2_login_and_hello_are_unsupported() {
    use shared_protocol::packet::{Packet, PacketError};
    let (_, login) = until_login(5, 1000);
    let mut v2 = login.clone();
    v2[0] = 2;
    let err = Packet::decode(&v2).unwrap_err();
    assert_eq!(
        err,
        PacketError::UnsupportedVersion {
            version: 2,
            packet_type: 3
        }
    );
    assert_eq!(err.code(), Code::UNSUPPORTED_VERSION);
    assert_eq!(
        login_at(&v2, &PEER, 1100, None),
        Err(LoginError::Dropped(err))
    );
    assert_eq!(LoginError::Dropped(err).code(), None, "no answer");
    // The same bytes as version 3 are accepted: only the version made the difference.
    assert_eq!(login_at(&login, &PEER, 1100, None), Ok(()));

    let mut c = ClientHandshake::new(Address::device(5), derive_device_key(&MASTER, 5), 0, 1);
    let mut buf = [0u8; 128];
    let mut hello = c.start(0, [1; 16], &mut buf).unwrap().to_vec();
    hello[0] = 2;
    let mut out = [0u8; 64];
    let HelloReply::Reject { code, packet } =
        acceptor().on_hello(&PEER, &hello, 0, &mut out).unwrap()
    else {
        panic!("a version-2 HELLO must get a REJECT")
    };
    assert_eq!(code, Code::UNSUPPORTED_VERSION);
    assert_eq!(packet[0], 3, "the REJECT is of the broker's version");
    assert_eq!(Reject::decode(packet).unwrap().max_version, 3);
}

/// The upload epoch is bound by the proof: the LOGIN re-encoded with another epoch fails
/// `AUTH_FAILED`; the accepted LOGIN reports the device's epoch; a client without an epoch
/// (0) refuses to start.
#[test]
fn upload_epoch_is_authenticated_and_reported() {
    use shared_protocol::handshake::ClientError;
    use shared_protocol::packet::Login;
    let (_, login) = until_login(5, 1000);
    let decoded = Login::decode(&login).unwrap();
    assert_eq!(decoded.upload_epoch, 0xe90c, "until_login's epoch");
    let mut forged = decoded;
    forged.upload_epoch += 1;
    let mut buf = [0u8; 256];
    let forged = forged.encode(&mut buf).unwrap().to_vec();
    assert_eq!(
        login_at(&forged, &PEER, 1100, None),
        Err(LoginError::AuthFailed)
    );
    let mut out = [0u8; 256];
    let acc = acceptor()
        .on_login(
            &PEER,
            &login,
            1100,
            |a| record(a.id, None),
            grant(3),
            &PARAMS,
            &mut out,
        )
        .unwrap();
    assert_eq!(acc.upload_epoch, 0xe90c);

    let mut c = ClientHandshake::new(Address::device(5), derive_device_key(&MASTER, 5), 0, 0);
    let mut hello = [0u8; 128];
    assert_eq!(
        c.start(0, [1; 16], &mut hello).unwrap_err(),
        ClientError::InvalidUploadEpoch
    );
    assert_eq!(c.poll_timeout(), None, "nothing was started");
}

#[test]
fn a_stamped_challenge_carries_the_callers_timestamp_and_a_reject_never_asks_for_one() {
    let acc = acceptor();
    let id = 5150;
    let mut client =
        ClientHandshake::new(Address::device(id), derive_device_key(&MASTER, id), 0, 0x77);
    let mut buf = [0u8; 128];
    let hello = client.start(1000, [0x44; 16], &mut buf).unwrap().to_vec();
    let mut out = [0u8; 128];
    let mut asked = None;
    let HelloReply::Challenge(ch) = acc
        .on_hello_stamped(
            &PEER,
            &hello,
            |a| {
                asked = Some(a);
                1_003
            },
            &mut out,
        )
        .unwrap()
    else {
        panic!("expected a challenge")
    };
    assert_eq!(asked, Some(Address::device(id)));
    let mut ch = ch.to_vec();
    let mut lbuf = [0u8; 256];
    let ClientEvent::Send(login) = client.on_packet(&mut ch, &mut lbuf).unwrap() else {
        panic!("expected a LOGIN")
    };
    // The cookie was computed over the stamped time: the LOGIN passes at a wall clock 3 ms
    // behind it, and its recorded timestamp is the stamp.
    let mut wbuf = [0u8; 256];
    let accepted = acc
        .on_login(
            &PEER,
            login,
            1000,
            |a| record(a.id, Some(1_002)),
            grant(3),
            &PARAMS,
            &mut wbuf,
        )
        .unwrap();
    assert_eq!(accepted.login_timestamp_ms, 1_003);

    // A phone's HELLO is refused before any timestamp is asked for.
    let mut phone = ClientHandshake::new(Address::phone(3), DeviceKey([0; 32]), 0, 1);
    let hello = phone.start(0, [1; 16], &mut buf).unwrap().to_vec();
    let reply = acc
        .on_hello_stamped(
            &PEER,
            &hello,
            |_| panic!("stamp asked for a REJECT"),
            &mut out,
        )
        .unwrap();
    assert!(matches!(reply, HelloReply::Reject { .. }));
}
