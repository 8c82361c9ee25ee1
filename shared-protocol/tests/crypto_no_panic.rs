//! Property tests: arbitrary bytes into the handshake and session entry points never panic, and
//! never produce an accepted login or an opened packet without the keys.

use proptest::prelude::*;
use shared_protocol::handshake::{
    Acceptor, ClientHandshake, SessionGrant, TerminalRecord, WelcomeParams,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{CookieSecret, DeviceKey, PeerAddr, derive_session_keys};
use shared_protocol::session::{Role, SecureSession};

const PARAMS: WelcomeParams = WelcomeParams {
    heartbeat_secs: 30,
    session_timeout_secs: 90,
    max_payload: 1024,
    server_time_ms: 0,
};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1400),
        // Mostly-valid headers reach deeper code.
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(t, mut v)| {
            v.splice(0..0, [1u8, [1, 2, 3, 0x10][t as usize]]);
            v
        }),
    ]
}

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn acceptor_never_panics(data in bytes(), now in any::<u64>()) {
        let acc = Acceptor::new(IdProfile::Signed, CookieSecret([1; 32]));
        let peer = PeerAddr::V6([2; 16], 9);
        let mut out = [0u8; 1200];
        let _ = acc.on_hello(&peer, &data, now, &mut out);
        let r = acc.on_login(
            &peer,
            &data,
            now,
            |_| Some(TerminalRecord { key: DeviceKey([3; 32]), last_login_ms: None }),
            grant(1),
            &PARAMS,
            &mut out,
        );
        prop_assert!(r.is_err(), "random bytes were accepted as a LOGIN");
    }

    #[test]
    fn session_open_never_panics(mut data in bytes()) {
        let keys = derive_session_keys(&DeviceKey([4; 32]), 1, &[0; 16], &[0; 16], &[0; 32]);
        let mut s = SecureSession::new(Role::Broker, 1, &keys);
        let mut out = [0u8; 1400];
        prop_assert!(s.open(&data, &mut out).is_err());
        prop_assert!(s.open_frame(&mut data).is_err());
        prop_assert_eq!(s.highest_received(), None);
    }

    #[test]
    fn client_never_panics(packets in proptest::collection::vec(bytes(), 0..6)) {
        let mut c = ClientHandshake::new(Address::device(5), DeviceKey([5; 32]), 0, 1);
        let mut out = [0u8; 256];
        c.start(0, [6; 16], &mut out).unwrap();
        for mut p in packets {
            let _ = c.on_packet(&mut p, &mut out);
        }
        prop_assert!(!c.is_established());
    }
}
