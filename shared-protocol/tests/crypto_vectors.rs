//! Checks docs/vectors/handshake.json and docs/vectors/session.json (docs/protocol.md section 3).
//!
//! Every expected value is recomputed from the vector's inputs; any change in the wire bytes or
//! the key schedule fails. `UPDATE_VECTORS=1 cargo test --test crypto_vectors` rewrites the files
//! (only for a deliberate, documented protocol change).

use serde_json::{Value, json};
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::handshake::{
    Acceptor, ClientEvent, ClientHandshake, HelloReply, SessionGrant, TerminalRecord, WelcomeParams,
};
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::keys::{
    CookieSecret, HelloBinding, MasterKey, PeerAddr, compute_cookie, derive_device_key,
    derive_session_keys,
};
use shared_protocol::session::{Role, SecureSession};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/");

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    let b = hex::decode(v.as_str().expect("hex string")).expect("hex");
    b.try_into().expect("length")
}

fn u64v(v: &Value) -> u64 {
    v.as_u64().expect("integer")
}

fn handshake_inputs() -> Value {
    json!({
        "master_key": hex::encode((0u8..32).collect::<Vec<_>>()),
        "cookie_secret": hex::encode((0x80u8..0xa0).collect::<Vec<_>>()),
        "device_id": 1234567,
        "client_nonce": "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "broker_nonce": "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
        "since_id": 42,
        "upload_epoch": 0x8f3c_5a2e_d1b4_0967u64,
        "peer": { "ip": "192.0.2.10", "port": 40000 },
        "hello_time_ms": 1_700_000_000_000u64,
        "login_time_ms": 1_700_000_001_500u64,
        "session_id": 305419896,
        "welcome": {
            "heartbeat_secs": 30,
            "session_timeout_secs": 90,
            "max_payload": 1024,
            "server_time_ms": 1_700_000_001_501u64
        }
    })
}

/// Runs the whole handshake from `inputs` and returns the outputs object.
fn handshake_outputs(i: &Value) -> Value {
    let master = MasterKey(arr(&i["master_key"]));
    let secret = CookieSecret(arr(&i["cookie_secret"]));
    let id = u64v(&i["device_id"]) as u32;
    let nonce: [u8; 16] = arr(&i["client_nonce"]);
    let broker_nonce: [u8; 16] = arr(&i["broker_nonce"]);
    let ip: std::net::Ipv4Addr = i["peer"]["ip"].as_str().unwrap().parse().unwrap();
    let peer = PeerAddr::V4(ip.octets(), u64v(&i["peer"]["port"]) as u16);
    let t_hello = u64v(&i["hello_time_ms"]);
    let t_login = u64v(&i["login_time_ms"]);
    let sid = u64v(&i["session_id"]) as u32;
    let w = &i["welcome"];
    let params = WelcomeParams {
        heartbeat_secs: u64v(&w["heartbeat_secs"]) as u16,
        session_timeout_secs: u64v(&w["session_timeout_secs"]) as u16,
        max_payload: u64v(&w["max_payload"]) as u16,
        server_time_ms: u64v(&w["server_time_ms"]),
    };

    let key = derive_device_key(&master, id);
    let acceptor = Acceptor::new(IdProfile::Plug, secret.clone());
    let mut client = ClientHandshake::new(
        Address::device(id),
        key.clone(),
        u64v(&i["since_id"]),
        u64v(&i["upload_epoch"]),
    );
    let mut b1 = [0u8; 256];
    let hello = client.start(t_hello, nonce, &mut b1).unwrap().to_vec();
    let mut b2 = [0u8; 256];
    let HelloReply::Challenge(ch) = acceptor.on_hello(&peer, &hello, t_hello, &mut b2).unwrap()
    else {
        panic!("challenge expected")
    };
    let challenge = ch.to_vec();
    let cookie = compute_cookie(
        &secret,
        t_hello,
        &peer,
        &HelloBinding {
            kind: 0,
            id,
            client_nonce: nonce,
        },
    );
    let mut b3 = [0u8; 256];
    let mut ch_in = challenge.clone();
    let ClientEvent::Send(login) = client.on_packet(&mut ch_in, &mut b3).unwrap() else {
        panic!("login expected")
    };
    let login = login.to_vec();
    let mut b4 = [0u8; 256];
    let acc = acceptor
        .on_login(
            &peer,
            &login,
            t_login,
            |_| {
                Some(TerminalRecord {
                    key: key.clone(),
                    last_login_ms: None,
                })
            },
            SessionGrant {
                session_id: sid,
                broker_nonce,
            },
            &params,
            &mut b4,
        )
        .unwrap();
    let welcome = acc.welcome.to_vec();
    let mut w_in = welcome.clone();
    let mut b5 = [0u8; 64];
    let ClientEvent::Established(est) = client.on_packet(&mut w_in, &mut b5).unwrap() else {
        panic!("established expected")
    };
    assert_eq!(est.welcome.session_id, sid);
    let keys = derive_session_keys(&key, id, &nonce, &broker_nonce, &cookie.0);
    // The WELCOME's plaintext frame: the bytes between the 22-byte header and the tag, once
    // opened as the device does.
    let mut device = SecureSession::new(Role::Device, sid, &keys);
    let mut w_copy = welcome.clone();
    device.open_welcome(&mut w_copy).unwrap();
    let welcome_frame = w_copy[22..w_copy.len() - 16].to_vec();
    // The MAC and KDF inputs of section 3.1, spelled out byte by byte.
    let mut cookie_input = b"plugcloud-cookie-v1".to_vec();
    cookie_input.extend_from_slice(&t_hello.to_le_bytes());
    cookie_input.extend_from_slice(&ip.octets());
    cookie_input.extend_from_slice(&(u64v(&i["peer"]["port"]) as u16).to_le_bytes());
    cookie_input.push(0);
    cookie_input.extend_from_slice(&id.to_le_bytes());
    cookie_input.extend_from_slice(&nonce);
    let mut proof_input = b"plugcloud-login-v1".to_vec();
    proof_input.push(3);
    proof_input.push(0);
    proof_input.extend_from_slice(&id.to_le_bytes());
    proof_input.extend_from_slice(&nonce);
    proof_input.extend_from_slice(&t_hello.to_le_bytes());
    proof_input.extend_from_slice(&cookie.0);
    proof_input.extend_from_slice(&u64v(&i["since_id"]).to_le_bytes());
    proof_input.extend_from_slice(&u64v(&i["upload_epoch"]).to_le_bytes());
    let mut hkdf_salt = nonce.to_vec();
    hkdf_salt.extend_from_slice(&broker_nonce);
    hkdf_salt.extend_from_slice(&cookie.0);
    let mut hkdf_info = b"plugcloud-session-v2".to_vec();
    hkdf_info.extend_from_slice(&id.to_le_bytes());
    json!({
        "cookie_input": hex::encode(&cookie_input),
        "proof_input": hex::encode(&proof_input),
        "proof": hex::encode(&login[login.len() - 32..]),
        "hkdf_salt": hex::encode(&hkdf_salt),
        "hkdf_info": hex::encode(&hkdf_info),
        "welcome_frame": hex::encode(&welcome_frame),
        "device_key": hex::encode(key.as_bytes()),
        "hello": hex::encode(&hello),
        "cookie": hex::encode(cookie.0),
        "challenge": hex::encode(&challenge),
        "login": hex::encode(&login),
        "session_key_d2b": hex::encode(keys.d2b.as_bytes()),
        "session_key_b2d": hex::encode(keys.b2d.as_bytes()),
        "welcome": hex::encode(&welcome),
    })
}

struct SessionCase {
    direction: &'static str,
    counter: u64,
    frame: Frame<'static>,
}

fn session_cases() -> Vec<SessionCase> {
    vec![
        SessionCase {
            direction: "d2b",
            counter: 0,
            frame: Frame::unreliable(Ack { next: 1, mask: 0 }, Body::Ping),
        },
        SessionCase {
            direction: "d2b",
            counter: 1,
            frame: Frame {
                seq: 1,
                ack: Ack { next: 3, mask: 5 },
                body: Body::Upload {
                    upload_id: 7,
                    topic: "power",
                    payload: b"{\"w\":12.5}",
                },
            },
        },
        SessionCase {
            direction: "b2d",
            counter: 1,
            frame: Frame::unreliable(
                Ack { next: 2, mask: 0 },
                Body::Pong {
                    server_time_ms: 1_700_000_002_000,
                },
            ),
        },
        SessionCase {
            direction: "b2d",
            counter: (1 << 48) - 1,
            frame: Frame {
                seq: 9,
                ack: Ack { next: 2, mask: 0 },
                body: Body::Command {
                    cmd_id: 3,
                    name: "relay",
                    payload: b"on",
                },
            },
        },
    ]
}

fn session_outputs(hs_inputs: &Value, hs: &Value) -> Value {
    let keys = shared_protocol::keys::SessionKeys {
        d2b: shared_protocol::keys::DirectionKey(arr(&hs["session_key_d2b"])),
        b2d: shared_protocol::keys::DirectionKey(arr(&hs["session_key_b2d"])),
    };
    let sid = u64v(&hs_inputs["session_id"]) as u32;
    let mut cases = vec![];
    for c in session_cases() {
        let role = if c.direction == "d2b" {
            Role::Device
        } else {
            Role::Broker
        };
        let mut sender = SecureSession::new(role, sid, &keys);
        sender.set_send_counter_for_tests(c.counter);
        let mut plain = [0u8; 1200];
        let plain = c.frame.encode(&mut plain).unwrap().to_vec();
        let mut pkt = [0u8; 1200];
        let n = sender.seal_frame(&c.frame, &mut pkt).unwrap();
        // The receiving side opens it back to the same frame.
        let peer_role = if role == Role::Device {
            Role::Broker
        } else {
            Role::Device
        };
        let mut receiver = SecureSession::new(peer_role, sid, &keys);
        let mut copy = pkt[..n].to_vec();
        assert_eq!(receiver.open_frame(&mut copy).unwrap(), c.frame);
        cases.push(json!({
            "direction": c.direction,
            "counter": c.counter,
            "plaintext": hex::encode(&plain),
            "packet": hex::encode(&pkt[..n]),
        }));
    }
    json!({
        "description": "DATA packets sealed with the session keys of handshake.json (session_id from its inputs). nonce = 4 zero bytes || counter (8 LE); aad = packet[0..14]; plaintext = postcard(Frame).",
        "session_id": sid,
        "session_key_d2b": hs["session_key_d2b"],
        "session_key_b2d": hs["session_key_b2d"],
        "cases": cases,
    })
}

fn check_or_update(name: &str, expected: Value) {
    let path = format!("{DIR}{name}");
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(DIR).unwrap();
        let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        stored, expected,
        "{name} differs from what the code produces"
    );
}

#[test]
fn handshake_vector() {
    let path = format!("{DIR}handshake.json");
    let inputs = if std::env::var_os("UPDATE_VECTORS").is_some() {
        handshake_inputs()
    } else {
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        stored["inputs"].clone()
    };
    let doc = json!({
        "description": "One complete version-3 login handshake (docs/protocol.md section 3). Packets are hex, complete (version and type bytes included). The device is kind 0 (device), profile plug.",
        "inputs": inputs,
        "outputs": handshake_outputs(&inputs),
    });
    check_or_update("handshake.json", doc);
}

#[test]
fn session_vector() {
    let inputs = handshake_inputs();
    let hs = handshake_outputs(&inputs);
    check_or_update("session.json", session_outputs(&inputs, &hs));
}

/// Recomputes every output of handshake.json from its inputs with the generic primitives
/// (HMAC-SHA256, HKDF-SHA256, ChaCha20-Poly1305) and the formulas of docs/protocol.md section 3,
/// without this crate's key schedule or session: the document alone is enough.
#[test]
fn handshake_vector_follows_the_spec_formulas() {
    use chacha20poly1305::aead::inout::InOutBuf;
    use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Nonce, Tag};
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    fn h(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("hex")).expect("hex")
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}handshake.json")).unwrap())
            .unwrap();
    let (i, o) = (&doc["inputs"], &doc["outputs"]);
    let id = u64v(&i["device_id"]) as u32;
    let nonce = h(&i["client_nonce"]);
    let t = u64v(&i["hello_time_ms"]);
    let since = u64v(&i["since_id"]);
    let epoch = u64v(&i["upload_epoch"]);

    // 3.1 device key.
    let device_key = hmac(&h(&i["master_key"]), &id.to_le_bytes());
    assert_eq!(device_key, h(&o["device_key"]));

    // 2.1 HELLO: 03 01, kind 0, id varint, nonce, zero padding to 128.
    let mut hello = vec![3, 1, 0];
    varint(u64::from(id), &mut hello);
    hello.extend_from_slice(&nonce);
    hello.resize(128, 0);
    assert_eq!(hello, h(&o["hello"]));

    // 3.1 cookie over the peer's IPv4 bytes and port (LE).
    let ip: std::net::Ipv4Addr = i["peer"]["ip"].as_str().unwrap().parse().unwrap();
    let mut ci = b"plugcloud-cookie-v1".to_vec();
    ci.extend_from_slice(&t.to_le_bytes());
    ci.extend_from_slice(&ip.octets());
    ci.extend_from_slice(&(u64v(&i["peer"]["port"]) as u16).to_le_bytes());
    ci.push(0);
    ci.extend_from_slice(&id.to_le_bytes());
    ci.extend_from_slice(&nonce);
    assert_eq!(ci, h(&o["cookie_input"]));
    let cookie = hmac(&h(&i["cookie_secret"]), &ci);
    assert_eq!(cookie, h(&o["cookie"]));

    // 2.1 CHALLENGE: 03 02, timestamp varint, cookie.
    let mut challenge = vec![3, 2];
    varint(t, &mut challenge);
    challenge.extend_from_slice(&cookie);
    assert_eq!(challenge, h(&o["challenge"]));

    // 3.1 proof, 2.1 LOGIN.
    let mut pi = b"plugcloud-login-v1".to_vec();
    pi.extend_from_slice(&[3, 0]);
    pi.extend_from_slice(&id.to_le_bytes());
    pi.extend_from_slice(&nonce);
    pi.extend_from_slice(&t.to_le_bytes());
    pi.extend_from_slice(&cookie);
    pi.extend_from_slice(&since.to_le_bytes());
    pi.extend_from_slice(&epoch.to_le_bytes());
    assert_eq!(pi, h(&o["proof_input"]));
    let proof = hmac(&device_key, &pi);
    assert_eq!(proof, h(&o["proof"]));
    let mut login = vec![3, 3, 0];
    varint(u64::from(id), &mut login);
    login.extend_from_slice(&nonce);
    varint(t, &mut login);
    login.extend_from_slice(&cookie);
    varint(since, &mut login);
    varint(epoch, &mut login);
    login.extend_from_slice(&proof);
    assert_eq!(login, h(&o["login"]));

    // 3.1 session keys: salt = client_nonce || broker_nonce || cookie.
    let broker_nonce = h(&i["broker_nonce"]);
    let salt = [nonce.as_slice(), broker_nonce.as_slice(), cookie.as_slice()].concat();
    assert_eq!(salt, h(&o["hkdf_salt"]));
    let info = [b"plugcloud-session-v2".as_slice(), &id.to_le_bytes()].concat();
    assert_eq!(info, h(&o["hkdf_info"]));
    let mut okm = [0u8; 64];
    hkdf::Hkdf::<Sha256>::new(Some(&salt), &device_key)
        .expand(&info, &mut okm)
        .unwrap();
    assert_eq!(okm[..32], h(&o["session_key_d2b"])[..]);
    assert_eq!(okm[32..], h(&o["session_key_b2d"])[..]);

    // 2.1 / 3.2 step 5: the WELCOME packet is 03 05, session_id (4 LE), broker_nonce (16), then
    // the frame sealed under key_b2d with counter 0 and aad = bytes 0..22.
    let welcome = h(&o["welcome"]);
    let sid = u64v(&i["session_id"]) as u32;
    assert_eq!(welcome[..2], [3, 0x05]);
    assert_eq!(welcome[2..6], sid.to_le_bytes());
    assert_eq!(welcome[6..22], broker_nonce[..]);
    let (aad, rest) = welcome.split_at(22);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let mut plain = ct.to_vec();
    let key: [u8; 32] = okm[32..].try_into().unwrap();
    let tag: [u8; 16] = tag.try_into().unwrap();
    ChaCha20Poly1305::new(&chacha20poly1305::Key::from(key))
        .decrypt_inout_detached(
            &Nonce::from([0u8; 12]),
            aad,
            InOutBuf::from(plain.as_mut_slice()),
            &Tag::from(tag),
        )
        .expect("WELCOME opens with key_b2d");
    assert_eq!(plain, h(&o["welcome_frame"]));
    // Frame { seq 0, ack { next 1, mask 0 }, Welcome (variant 0) { session_id, ... } }.
    let w = &i["welcome"];
    let mut frame = vec![0, 1, 0, 0];
    for v in [
        u64::from(sid),
        u64v(&w["heartbeat_secs"]),
        u64v(&w["session_timeout_secs"]),
        u64v(&w["max_payload"]),
        u64v(&w["server_time_ms"]),
    ] {
        varint(v, &mut frame);
    }
    assert_eq!(plain, frame);
}

#[test]
fn stored_session_packets_open_with_stored_keys() {
    // Independent of the generator: open every stored packet with the stored keys.
    let text = std::fs::read_to_string(format!("{DIR}session.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let keys = shared_protocol::keys::SessionKeys {
        d2b: shared_protocol::keys::DirectionKey(arr(&v["session_key_d2b"])),
        b2d: shared_protocol::keys::DirectionKey(arr(&v["session_key_b2d"])),
    };
    let sid = u64v(&v["session_id"]) as u32;
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for c in cases {
        let role = if c["direction"] == "d2b" {
            Role::Broker
        } else {
            Role::Device
        };
        let mut s = SecureSession::new(role, sid, &keys);
        let mut pkt = hex::decode(c["packet"].as_str().unwrap()).unwrap();
        assert_eq!(&pkt[6..14], &u64v(&c["counter"]).to_le_bytes());
        let plain = s.open_in_place(&mut pkt).unwrap();
        assert_eq!(hex::encode(plain), c["plaintext"].as_str().unwrap());
    }
}
