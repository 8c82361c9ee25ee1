//! The link handshake and sealed-frame opener on arbitrary bytes, against fixed keys and nonces.
//! The first byte picks what the rest is fed to:
//! * 0: the comet's opener of an established link (never panics; at most one frame per call);
//! * 1: the comet's `Hello` handling, then the rest of the input as `Finish`;
//! * 2: the msgbus's `Reply` handling;
//! * 3: seal then open (must round-trip exactly, and a second open of the same frame fails).
#![no_main]

use broker::cluster::link_auth::{
    Established, Expect, Identity, Initiator, LinkKey, Responder, split_handshake,
};
use broker::discovery::Role;
use libfuzzer_sys::fuzz_target;

fn key() -> LinkKey {
    LinkKey::new([0x5c; 32])
}

fn who(node: &str, role: Role) -> Identity {
    Identity {
        node: node.into(),
        role,
    }
}

fn initiator() -> (Initiator, Vec<u8>) {
    Initiator::start(
        key(),
        who("msgbus-1", Role::Msgbus),
        Expect {
            role: Role::Comet,
            node: Some("comet-a".into()),
        },
        [1; 32],
    )
}

fn responder() -> Responder {
    Responder::new(
        key(),
        who("comet-a", Role::Comet),
        Expect {
            role: Role::Msgbus,
            node: None,
        },
        [2; 32],
    )
}

fn body(msg: &[u8]) -> &[u8] {
    split_handshake(msg).unwrap().unwrap().0
}

/// An established pair (msgbus side, comet side).
fn pair() -> (Established, Established) {
    let (init, hello) = initiator();
    let (reply, wait) = responder().on_hello(body(&hello)).unwrap();
    let (finish, i) = init.on_reply(body(&reply)).unwrap();
    (i, wait.on_finish(body(&finish)).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let (_, mut comet) = pair();
            if let Ok(Some((_, used))) = comet.opener.open(rest) {
                assert!(used <= rest.len());
            }
        }
        1 => {
            if let Ok((_, wait)) = responder().on_hello(rest) {
                let _ = wait.on_finish(rest);
            }
            let _ = split_handshake(rest);
        }
        2 => {
            let _ = initiator().0.on_reply(rest);
        }
        _ => {
            let (mut msgbus, mut comet) = pair();
            if let Ok(sealed) = msgbus.sealer.seal(rest) {
                let (plain, used) = comet.opener.open(&sealed).unwrap().unwrap();
                assert_eq!((plain.as_slice(), used), (rest, sealed.len()));
                assert!(comet.opener.open(&sealed).is_err(), "a replay is refused");
            }
        }
    }
});
