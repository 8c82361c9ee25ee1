//! Authentication and sealing of node links, sans-IO: the handshake state machines
//! ([`Initiator`], [`Responder`]) and the per-direction frame [`Sealer`] / [`Opener`].
//! [`super::link`] drives them over TCP with a deadline; nothing here reads a clock, does I/O
//! or draws randomness (nonces come from the caller).
//!
//! Every node of a cluster holds the same 32-byte [`LinkKey`] (`cluster.link_key`).
//!
//! Handshake (each message is a 4-byte big-endian length and a postcard body of at most
//! [`MAX_HANDSHAKE`] bytes; the initiator is the dialing msgbus, the responder the comet):
//! 1. initiator -> responder `Hello { magic, node, role, nonce_i }`;
//! 2. responder -> initiator `Reply { magic, node, role, nonce_r, proof_r }`;
//! 3. initiator -> responder `Finish { proof_i }`.
//!
//! `proof_x = HMAC-SHA256(K, label_x || transcript)` where the transcript is the protocol tag,
//! both nonces, both node ids and both roles (length-prefixed), and `label_x` names the
//! direction, so a proof can never be reflected back. Each side checks the other's proof in
//! constant time and that the peer has the expected role (and, for the initiator, the node id
//! discovery named). Link keys: `HKDF-SHA256(salt = nonce_i || nonce_r, ikm = K, info = label
//! || transcript)`, 64 bytes: the first 32 seal initiator-to-responder frames, the last 32
//! responder-to-initiator ones. Fresh nonces on both sides make every link's keys new.
//!
//! Sealed frame: `len (4, BE) || counter (8, BE) || ChaCha20-Poly1305(plaintext) || tag (16)`,
//! where `len` counts everything after itself, the AEAD nonce is `0u32 || counter` and the
//! associated data is `len || counter`. Counters start at 0 per direction; [`Opener`] accepts
//! only exactly the next one, so a replayed, dropped or reordered frame is an error. Any error
//! is final: the link must be closed ([`Opener`] refuses everything after one).
//!
//! What this does not give: forward secrecy. Whoever learns the cluster key and recorded a
//! link's traffic can derive its keys (docs/deployment.md, "Node links").

use std::fmt;

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::frame::MAX_FRAME;
use crate::discovery::Role;

type HmacSha256 = Hmac<Sha256>;

/// Length of the cluster key and of each derived link key, bytes.
pub const KEY_LEN: usize = 32;
/// Length of each side's handshake nonce, bytes.
pub const NONCE_LEN: usize = 32;
/// Largest handshake message body, bytes (two 64-byte node ids, a nonce and a proof fit).
pub const MAX_HANDSHAKE: usize = 256;
/// Bytes a sealed frame adds to its plaintext: length prefix, counter and tag.
pub const SEAL_OVERHEAD: usize = 4 + 8 + 16;
/// Largest sealed frame body after the length prefix (a [`MAX_FRAME`] plaintext).
pub const MAX_SEALED: usize = 8 + MAX_FRAME + 16;

/// First bytes of both hello messages: protocol name and version.
const MAGIC: [u8; 4] = *b"PCL1";
const TRANSCRIPT_TAG: &[u8] = b"plugcloud node link v1";
const LABEL_INITIATOR: &[u8] = b"initiator proof";
const LABEL_RESPONDER: &[u8] = b"responder proof";
const LABEL_KEYS: &[u8] = b"link keys";

/// The pre-shared cluster key (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKey([u8; KEY_LEN]);

impl LinkKey {
    /// A key from its bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> LinkKey {
        LinkKey(bytes)
    }

    /// Parses 64 hex digits; `None` otherwise.
    pub fn from_hex(s: &str) -> Option<LinkKey> {
        let mut k = [0u8; KEY_LEN];
        hex::decode_to_slice(s, &mut k).ok()?;
        Some(LinkKey(k))
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// Who is speaking on a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Node id.
    pub node: String,
    /// Its role.
    pub role: Role,
}

/// Why a handshake failed (the link is closed; [`AuthError::reason`] is the metric label).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The announced message length exceeds [`MAX_HANDSHAKE`].
    #[error("handshake message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a handshake message of this protocol (garbage, an old unsealed frame, a frame
    /// before the handshake, a wrong magic or version).
    #[error("not a link handshake message")]
    Malformed,
    /// The peer's proof does not verify: it does not hold the cluster key (or the messages
    /// were tampered with).
    #[error("the peer's proof does not verify (wrong cluster key?)")]
    BadProof,
    /// The peer has the wrong role or node id.
    #[error("unexpected peer {got:?}, expected {expected}")]
    WrongPeer {
        /// Who the peer says it is.
        got: Identity,
        /// What was expected.
        expected: String,
    },
}

impl AuthError {
    /// The `reason` label of `broker_link_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TooLarge(_) | AuthError::Malformed => "malformed",
            AuthError::BadProof => "bad_proof",
            AuthError::WrongPeer { .. } => "wrong_peer",
        }
    }
}

/// Why a sealed frame could not be opened or sealed; the link must be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The announced length exceeds [`MAX_SEALED`] (or the plaintext [`MAX_FRAME`]).
    #[error("sealed frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The announced length is below the counter and tag.
    #[error("sealed frame of {0} bytes is too short")]
    Truncated(usize),
    /// The counter is not exactly the next one (replayed, dropped or reordered frame).
    #[error("frame counter {got}, expected {expected}")]
    Counter {
        /// The next counter this side accepts.
        expected: u64,
        /// The frame's counter.
        got: u64,
    },
    /// The tag does not verify: tampered, or sealed under another key.
    #[error("frame does not authenticate")]
    AuthFailed,
    /// The counter is exhausted (after 2^64 - 1 frames) or an earlier error closed this side.
    #[error("link sealing is closed")]
    Closed,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 4],
    who: Identity,
    nonce: [u8; NONCE_LEN],
}

#[derive(Serialize, Deserialize)]
struct Reply {
    magic: [u8; 4],
    who: Identity,
    nonce: [u8; NONCE_LEN],
    proof: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Finish {
    proof: [u8; 32],
}

/// Splits the first length-prefixed message off `buf`: `Ok(Some((body, used)))`, `Ok(None)`
/// when more bytes are needed, an error when the announced length exceeds `max`.
fn split(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, usize> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > max {
        return Err(len);
    }
    Ok(buf.get(4..4 + len).map(|body| (body, 4 + len)))
}

/// Splits the first handshake message body off `buf` (see `split`).
pub fn split_handshake(buf: &[u8]) -> Result<Option<(&[u8], usize)>, AuthError> {
    split(buf, MAX_HANDSHAKE).map_err(AuthError::TooLarge)
}

fn encode_msg<T: Serialize>(m: &T) -> Vec<u8> {
    // Every field is bounded (node ids are checked before a handshake starts), so this fits.
    let body = postcard::to_stdvec(m).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_msg<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AuthError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((m, [])) => Ok(m),
        _ => Err(AuthError::Malformed),
    }
}

fn put(t: &mut Vec<u8>, bytes: &[u8]) {
    t.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    t.extend_from_slice(bytes);
}

fn transcript(
    init: &Identity,
    nonce_i: &[u8; NONCE_LEN],
    resp: &Identity,
    nonce_r: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(256);
    put(&mut t, TRANSCRIPT_TAG);
    put(&mut t, nonce_i);
    put(&mut t, nonce_r);
    put(&mut t, init.node.as_bytes());
    put(&mut t, init.role.as_str().as_bytes());
    put(&mut t, resp.node.as_bytes());
    put(&mut t, resp.role.as_str().as_bytes());
    t
}

fn hmac(key: &LinkKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn proof(key: &LinkKey, label: &[u8], transcript: &[u8]) -> [u8; 32] {
    let mut l = Vec::with_capacity(4 + label.len());
    put(&mut l, label);
    hmac(key, &[&l, transcript])
}

fn check_proof(expected: &[u8; 32], got: &[u8; 32]) -> Result<(), AuthError> {
    if bool::from(expected.ct_eq(got)) {
        Ok(())
    } else {
        Err(AuthError::BadProof)
    }
}

/// The two direction keys: (initiator-to-responder, responder-to-initiator).
fn link_keys(
    key: &LinkKey,
    nonce_i: &[u8; NONCE_LEN],
    nonce_r: &[u8; NONCE_LEN],
    transcript: &[u8],
) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nonce_i);
    salt[NONCE_LEN..].copy_from_slice(nonce_r);
    let hk = Hkdf::<Sha256>::new(Some(&salt), &key.0);
    let mut info = Vec::with_capacity(LABEL_KEYS.len() + 4 + transcript.len());
    put(&mut info, LABEL_KEYS);
    info.extend_from_slice(transcript);
    let mut okm = [0u8; 2 * KEY_LEN];
    hk.expand(&info, &mut okm)
        .unwrap_or_else(|_| unreachable!("64 bytes is within HKDF-SHA256's output limit"));
    let (mut a, mut b) = ([0u8; KEY_LEN], [0u8; KEY_LEN]);
    a.copy_from_slice(&okm[..KEY_LEN]);
    b.copy_from_slice(&okm[KEY_LEN..]);
    (a, b)
}

/// What the other side must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Its role.
    pub role: Role,
    /// Its node id, when known in advance (the initiator dials a comet named by discovery).
    pub node: Option<String>,
}

impl Expect {
    fn check(&self, got: &Identity) -> Result<(), AuthError> {
        let node_ok = self.node.as_ref().is_none_or(|n| *n == got.node);
        if got.role == self.role && node_ok && crate::discovery::valid_node_id(&got.node) {
            return Ok(());
        }
        Err(AuthError::WrongPeer {
            got: got.clone(),
            expected: match &self.node {
                Some(n) => format!("{} {n}", self.role.as_str()),
                None => self.role.as_str().to_string(),
            },
        })
    }
}

/// An authenticated link: who the peer is and the two sealing directions.
#[derive(Debug)]
pub struct Established {
    /// The authenticated peer.
    pub peer: Identity,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the peer sends.
    pub opener: Opener,
}

/// The dialing side's handshake: sends `Hello`, checks `Reply`, sends `Finish`.
pub struct Initiator {
    key: LinkKey,
    me: Identity,
    expect: Expect,
    nonce: [u8; NONCE_LEN],
}

impl Initiator {
    /// Starts a handshake as `me` with a fresh random `nonce`; returns the machine and the
    /// `Hello` message to send.
    pub fn start(
        key: LinkKey,
        me: Identity,
        expect: Expect,
        nonce: [u8; NONCE_LEN],
    ) -> (Initiator, Vec<u8>) {
        let hello = encode_msg(&Hello {
            magic: MAGIC,
            who: me.clone(),
            nonce,
        });
        (
            Initiator {
                key,
                me,
                expect,
                nonce,
            },
            hello,
        )
    }

    /// Checks the responder's `Reply` body; on success returns the `Finish` message to send
    /// and the established link.
    pub fn on_reply(self, body: &[u8]) -> Result<(Vec<u8>, Established), AuthError> {
        let reply: Reply = decode_msg(body)?;
        if reply.magic != MAGIC {
            return Err(AuthError::Malformed);
        }
        self.expect.check(&reply.who)?;
        let t = transcript(&self.me, &self.nonce, &reply.who, &reply.nonce);
        check_proof(&proof(&self.key, LABEL_RESPONDER, &t), &reply.proof)?;
        let finish = encode_msg(&Finish {
            proof: proof(&self.key, LABEL_INITIATOR, &t),
        });
        let (i2r, r2i) = link_keys(&self.key, &self.nonce, &reply.nonce, &t);
        Ok((
            finish,
            Established {
                peer: reply.who,
                sealer: Sealer::new(&i2r),
                opener: Opener::new(&r2i),
            },
        ))
    }
}

/// The listening side's handshake: waits for `Hello`, answers `Reply`, checks `Finish`.
pub struct Responder {
    key: LinkKey,
    me: Identity,
    expect: Expect,
    nonce: [u8; NONCE_LEN],
}

/// A responder that sent its `Reply` and waits for `Finish`.
pub struct AwaitFinish {
    key: LinkKey,
    peer: Identity,
    nonce_i: [u8; NONCE_LEN],
    nonce_r: [u8; NONCE_LEN],
    transcript: Vec<u8>,
}

impl Responder {
    /// A responder `me` with a fresh random `nonce`.
    pub fn new(key: LinkKey, me: Identity, expect: Expect, nonce: [u8; NONCE_LEN]) -> Responder {
        Responder {
            key,
            me,
            expect,
            nonce,
        }
    }

    /// Checks the initiator's `Hello` body; returns the `Reply` message to send and the state
    /// waiting for `Finish`. Nothing is proven yet: the peer is not authenticated until
    /// [`AwaitFinish::on_finish`] succeeds.
    pub fn on_hello(self, body: &[u8]) -> Result<(Vec<u8>, AwaitFinish), AuthError> {
        let hello: Hello = decode_msg(body)?;
        if hello.magic != MAGIC {
            return Err(AuthError::Malformed);
        }
        self.expect.check(&hello.who)?;
        let t = transcript(&hello.who, &hello.nonce, &self.me, &self.nonce);
        let reply = encode_msg(&Reply {
            magic: MAGIC,
            who: self.me.clone(),
            nonce: self.nonce,
            proof: proof(&self.key, LABEL_RESPONDER, &t),
        });
        Ok((
            reply,
            AwaitFinish {
                key: self.key,
                peer: hello.who,
                nonce_i: hello.nonce,
                nonce_r: self.nonce,
                transcript: t,
            },
        ))
    }
}

impl AwaitFinish {
    /// Checks the initiator's `Finish` body: the link is established.
    pub fn on_finish(self, body: &[u8]) -> Result<Established, AuthError> {
        let finish: Finish = decode_msg(body)?;
        let expected = proof(&self.key, LABEL_INITIATOR, &self.transcript);
        check_proof(&expected, &finish.proof)?;
        let (i2r, r2i) = link_keys(&self.key, &self.nonce_i, &self.nonce_r, &self.transcript);
        Ok(Established {
            peer: self.peer,
            sealer: Sealer::new(&r2i),
            opener: Opener::new(&i2r),
        })
    }
}

fn aead_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Seals the frames of one direction (see module docs).
pub struct Sealer {
    aead: ChaCha20Poly1305,
    next: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("next", &self.next).finish()
    }
}

impl Sealer {
    fn new(key: &[u8; KEY_LEN]) -> Sealer {
        Sealer {
            aead: ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key)),
            next: 0,
        }
    }

    /// Seals `plaintext` (at most [`MAX_FRAME`] bytes) into one wire frame.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_FRAME {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        if self.next == u64::MAX {
            return Err(SealError::Closed);
        }
        let counter = self.next;
        let len = (8 + plaintext.len() + 16) as u32;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(plaintext);
        let (aad, body) = out.split_at_mut(12);
        let tag = self
            .aead
            .encrypt_inout_detached(&aead_nonce(counter), aad, InOutBuf::from(body))
            .map_err(|_| SealError::TooLarge(plaintext.len()))?;
        out.extend_from_slice(&tag);
        self.next += 1;
        Ok(out)
    }
}

/// Opens the frames of one direction (see module docs).
pub struct Opener {
    aead: ChaCha20Poly1305,
    next: u64,
    failed: bool,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("next", &self.next)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Opener {
    fn new(key: &[u8; KEY_LEN]) -> Opener {
        Opener {
            aead: ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key)),
            next: 0,
            failed: false,
        }
    }

    /// Opens the first sealed frame in `buf`: `Ok(Some((plaintext, used)))`, `Ok(None)` when
    /// more bytes are needed. After any error every later call fails with
    /// [`SealError::Closed`].
    pub fn open(&mut self, buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, SealError> {
        if self.failed {
            return Err(SealError::Closed);
        }
        let r = self.open_inner(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn open_inner(&mut self, buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, SealError> {
        let (body, used) = match split(buf, MAX_SEALED) {
            Ok(Some(x)) => x,
            Ok(None) => {
                // Refuse a too-short announced length before waiting for its bytes.
                if let Some(h) = buf.get(..4) {
                    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    if len < 8 + 16 {
                        return Err(SealError::Truncated(len));
                    }
                }
                return Ok(None);
            }
            Err(len) => return Err(SealError::TooLarge(len)),
        };
        if body.len() < 8 + 16 {
            return Err(SealError::Truncated(body.len()));
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&body[..8]);
        let counter = u64::from_be_bytes(c);
        if counter != self.next {
            return Err(SealError::Counter {
                expected: self.next,
                got: counter,
            });
        }
        if self.next == u64::MAX {
            return Err(SealError::Closed);
        }
        let (ct, tag) = body[8..].split_at(body.len() - 8 - 16);
        let tag = Tag::try_from(tag).map_err(|_| SealError::AuthFailed)?;
        let mut plain = ct.to_vec();
        self.aead
            .decrypt_inout_detached(
                &aead_nonce(counter),
                &buf[..12],
                InOutBuf::from(plain.as_mut_slice()),
                &tag,
            )
            .map_err(|_| SealError::AuthFailed)?;
        self.next += 1;
        Ok(Some((plain, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> LinkKey {
        LinkKey::new([b; KEY_LEN])
    }

    fn who(node: &str, role: Role) -> Identity {
        Identity {
            node: node.into(),
            role,
        }
    }

    fn body(msg: &[u8]) -> &[u8] {
        split_handshake(msg).unwrap().unwrap().0
    }

    fn expect(role: Role, node: Option<&str>) -> Expect {
        Expect {
            role,
            node: node.map(str::to_string),
        }
    }

    /// A full handshake between msgbus-1 (initiator, key `ki`) and comet-a (responder, `kr`).
    fn handshake(ki: u8, kr: u8) -> Result<(Established, Established), AuthError> {
        let (init, hello) = Initiator::start(
            key(ki),
            who("msgbus-1", Role::Msgbus),
            expect(Role::Comet, Some("comet-a")),
            [1; NONCE_LEN],
        );
        let resp = Responder::new(
            key(kr),
            who("comet-a", Role::Comet),
            expect(Role::Msgbus, None),
            [2; NONCE_LEN],
        );
        let (reply, wait) = resp.on_hello(body(&hello))?;
        let (finish, i) = init.on_reply(body(&reply))?;
        let r = wait.on_finish(body(&finish))?;
        Ok((i, r))
    }

    fn pair() -> (Established, Established) {
        handshake(7, 7).unwrap()
    }

    #[test]
    fn handshake_authenticates_both_ways_and_frames_flow_in_both_directions() {
        let (mut i, mut r) = pair();
        assert_eq!(i.peer, who("comet-a", Role::Comet));
        assert_eq!(r.peer, who("msgbus-1", Role::Msgbus));
        for n in 0..3u8 {
            let wire = i.sealer.seal(&[n; 10]).unwrap();
            assert_eq!(wire.len(), 10 + SEAL_OVERHEAD);
            assert!(
                !wire.windows(10).any(|w| w == [n; 10]),
                "plaintext on the wire"
            );
            let (p, used) = r.opener.open(&wire).unwrap().unwrap();
            assert_eq!((p, used), (vec![n; 10], wire.len()));
            let back = r.sealer.seal(b"back").unwrap();
            assert_eq!(i.opener.open(&back).unwrap().unwrap().0, b"back");
        }
        // The two directions use different keys: a frame cannot be reflected to its sender.
        let mut i2 = pair().0;
        let wire = i2.sealer.seal(b"x").unwrap();
        assert_eq!(i2.opener.open(&wire), Err(SealError::AuthFailed));
    }

    #[test]
    fn a_wrong_cluster_key_fails_on_both_sides() {
        // The initiator has the wrong key: it refuses the responder's proof.
        assert_eq!(handshake(1, 7).unwrap_err(), AuthError::BadProof);
        // The responder's proof is refused before the initiator proves anything; a forged
        // Finish (any proof without the key) is refused by the responder.
        let resp = Responder::new(
            key(7),
            who("comet-a", Role::Comet),
            expect(Role::Msgbus, None),
            [2; NONCE_LEN],
        );
        let (_, hello) = Initiator::start(
            key(1),
            who("msgbus-1", Role::Msgbus),
            expect(Role::Comet, None),
            [1; NONCE_LEN],
        );
        let (_, wait) = resp.on_hello(body(&hello)).unwrap();
        let forged = encode_msg(&Finish { proof: [0; 32] });
        assert_eq!(
            wait.on_finish(body(&forged)).unwrap_err(),
            AuthError::BadProof
        );
    }

    #[test]
    fn a_reflected_responder_proof_is_not_an_initiator_proof() {
        let resp = Responder::new(
            key(7),
            who("comet-a", Role::Comet),
            expect(Role::Msgbus, None),
            [2; NONCE_LEN],
        );
        let (_, hello) = Initiator::start(
            key(1),
            who("msgbus-1", Role::Msgbus),
            expect(Role::Comet, None),
            [1; NONCE_LEN],
        );
        let (reply, wait) = resp.on_hello(body(&hello)).unwrap();
        let reply: Reply = decode_msg(body(&reply)).unwrap();
        let reflected = encode_msg(&Finish { proof: reply.proof });
        assert_eq!(
            wait.on_finish(body(&reflected)).unwrap_err(),
            AuthError::BadProof
        );
    }

    #[test]
    fn wrong_role_or_node_is_refused() {
        // A comet dialing a comet.
        let (_, hello) = Initiator::start(
            key(7),
            who("comet-x", Role::Comet),
            expect(Role::Comet, None),
            [1; NONCE_LEN],
        );
        let resp = Responder::new(
            key(7),
            who("comet-a", Role::Comet),
            expect(Role::Msgbus, None),
            [2; NONCE_LEN],
        );
        let e = resp.on_hello(body(&hello)).err().unwrap();
        assert!(matches!(e, AuthError::WrongPeer { .. }), "{e:?}");
        assert_eq!(e.reason(), "wrong_peer");
        // The msgbus dialed comet-a's address but comet-b answered (same key).
        let (init, hello) = Initiator::start(
            key(7),
            who("msgbus-1", Role::Msgbus),
            expect(Role::Comet, Some("comet-a")),
            [1; NONCE_LEN],
        );
        let resp = Responder::new(
            key(7),
            who("comet-b", Role::Comet),
            expect(Role::Msgbus, None),
            [2; NONCE_LEN],
        );
        let (reply, _) = resp.on_hello(body(&hello)).unwrap();
        let e = init.on_reply(body(&reply)).err().unwrap();
        assert!(matches!(e, AuthError::WrongPeer { .. }), "{e:?}");
    }

    #[test]
    fn garbage_old_frames_and_truncated_handshakes_are_malformed() {
        let resp = || {
            Responder::new(
                key(7),
                who("comet-a", Role::Comet),
                expect(Role::Msgbus, None),
                [2; NONCE_LEN],
            )
        };
        // An unsealed link frame of the previous protocol (a Command) is not a Hello.
        let old = super::super::frame::encode(&super::super::frame::Frame::Command {
            req: super::super::frame::CommandRequest {
                id: 1,
                to: "comet-a".into(),
                device: crate::terminal::Address::device(1),
                name: "relay".into(),
                payload: b"on".to_vec(),
                timeout_ms: 1000,
            },
        })
        .unwrap();
        assert_eq!(
            resp().on_hello(body(&old)).err(),
            Some(AuthError::Malformed)
        );
        let (_, hello) = Initiator::start(
            key(7),
            who("msgbus-1", Role::Msgbus),
            expect(Role::Comet, None),
            [1; NONCE_LEN],
        );
        let good = body(&hello).to_vec();
        for n in 0..good.len() {
            assert_eq!(
                resp().on_hello(&good[..n]).err(),
                Some(AuthError::Malformed),
                "truncated to {n}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(resp().on_hello(&long).err(), Some(AuthError::Malformed));
        let mut wrong_magic = good.clone();
        wrong_magic[3] ^= 1;
        assert_eq!(
            resp().on_hello(&wrong_magic).err(),
            Some(AuthError::Malformed)
        );
        // Lengths: incomplete is not an error, too large is.
        assert_eq!(split_handshake(&hello[..hello.len() - 1]), Ok(None));
        assert_eq!(split_handshake(&[0, 0]), Ok(None));
        let big = ((MAX_HANDSHAKE + 1) as u32).to_be_bytes();
        assert_eq!(
            split_handshake(&big),
            Err(AuthError::TooLarge(MAX_HANDSHAKE + 1))
        );
    }

    #[test]
    fn tampered_frames_are_refused_and_close_the_opener() {
        let wire = pair().0.sealer.seal(b"deliver this").unwrap();
        for at in 4..wire.len() {
            let (_, mut r) = pair();
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            let e = r.opener.open(&bad).unwrap_err();
            if (4..12).contains(&at) {
                assert!(matches!(e, SealError::Counter { .. }), "byte {at}: {e:?}");
            } else {
                assert_eq!(e, SealError::AuthFailed, "byte {at}");
            }
            // Closed for good: even the genuine frame is refused now.
            assert_eq!(r.opener.open(&wire), Err(SealError::Closed));
        }
        // A frame sealed under another cluster key.
        let other = handshake(9, 9).unwrap().0.sealer.seal(b"x").unwrap();
        assert_eq!(pair().1.opener.open(&other), Err(SealError::AuthFailed));
    }

    #[test]
    fn replayed_and_reordered_frames_are_refused() {
        let (mut i, _) = pair();
        let f0 = i.sealer.seal(b"zero").unwrap();
        let f1 = i.sealer.seal(b"one").unwrap();
        // Replay of frame 0 after it was accepted.
        let (_, mut r) = pair();
        assert!(r.opener.open(&f0).unwrap().is_some());
        assert_eq!(
            r.opener.open(&f0),
            Err(SealError::Counter {
                expected: 1,
                got: 0
            })
        );
        // Frame 1 before frame 0 (reordered or frame 0 dropped).
        let (_, mut r) = pair();
        assert_eq!(
            r.opener.open(&f1),
            Err(SealError::Counter {
                expected: 0,
                got: 1
            })
        );
        // In order, both open.
        let (_, mut r) = pair();
        let mut stream = f0.clone();
        stream.extend_from_slice(&f1);
        let (p0, used) = r.opener.open(&stream).unwrap().unwrap();
        let (p1, _) = r.opener.open(&stream[used..]).unwrap().unwrap();
        assert_eq!((p0.as_slice(), p1.as_slice()), (&b"zero"[..], &b"one"[..]));
    }

    #[test]
    fn truncated_and_oversized_sealed_frames() {
        let (mut i, _) = pair();
        let wire = i.sealer.seal(b"payload").unwrap();
        // Every strict prefix is "more bytes needed", never an error or a frame.
        for n in 0..wire.len() {
            let (_, mut r) = pair();
            assert_eq!(r.opener.open(&wire[..n]), Ok(None), "prefix {n}");
        }
        // An announced length shorter than counter + tag.
        let (_, mut r) = pair();
        assert_eq!(r.opener.open(&[0, 0, 0, 23]), Err(SealError::Truncated(23)));
        // An announced length over the bound is refused before its bytes arrive.
        let (_, mut r) = pair();
        let big = ((MAX_SEALED + 1) as u32).to_be_bytes();
        assert_eq!(
            r.opener.open(&big),
            Err(SealError::TooLarge(MAX_SEALED + 1))
        );
        assert_eq!(
            i.sealer.seal(&vec![0; MAX_FRAME + 1]),
            Err(SealError::TooLarge(MAX_FRAME + 1))
        );
        let max = i.sealer.seal(&vec![0; MAX_FRAME]).unwrap();
        assert_eq!(max.len(), 4 + MAX_SEALED);
    }

    #[test]
    fn hmac_and_hkdf_known_answers() {
        // RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 5869 test case 1 (HKDF-SHA256).
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn link_keys_parse_from_hex_only() {
        assert_eq!(LinkKey::from_hex(&"ab".repeat(32)), Some(key(0xab)));
        assert_eq!(LinkKey::from_hex(&"ab".repeat(31)), None);
        assert_eq!(LinkKey::from_hex(&"zz".repeat(32)), None);
        assert_eq!(format!("{:?}", key(1)), "LinkKey(<redacted>)");
    }
}
