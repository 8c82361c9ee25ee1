//! Keys and the handshake's keyed computations (docs/protocol.md section 3).
//!
//! Everything here is a pure function of its inputs: no state, no time, no randomness.
//! * [`derive_device_key`]: a device key from the fleet [`MasterKey`] and the device id.
//! * [`compute_cookie`]: the broker's stateless HELLO cookie, bound to the peer's [`PeerAddr`].
//! * [`compute_proof`]: the device's LOGIN proof of key possession.
//! * [`derive_session_keys`]: the per-direction DATA keys ([`SessionKeys`]) used by
//!   [`crate::session::SecureSession`].
//!
//! Secret types never print their bytes in `Debug`, compare in constant time and overwrite their
//! bytes with zeros when dropped (`zeroize`); only those the handshake types must copy are `Clone`.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation label of the cookie HMAC (19 ASCII bytes, no terminator).
pub const COOKIE_LABEL: &[u8] = b"plugcloud-cookie-v1";
/// Domain-separation label of the login proof HMAC (18 ASCII bytes, no terminator).
pub const LOGIN_LABEL: &[u8] = b"plugcloud-login-v1";
/// Prefix of the HKDF `info` of the session key schedule (20 ASCII bytes), followed by the id.
pub const SESSION_LABEL: &[u8] = b"plugcloud-session-v2";

/// Length of every key, cookie and proof in this module.
pub const KEY_LEN: usize = 32;
/// Length of the device's HELLO nonce.
pub const NONCE_LEN: usize = 16;

/// Defines a 32-byte secret type: zeroised when dropped, redacted in `Debug` and `defmt`,
/// compared in constant time. Extra derives (only `Clone`, where a copy is needed) follow the name.
macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident $(, $extra:ident)*) => {
        $(#[$doc])*
        ///
        /// The bytes are overwritten with zeros when the value is dropped.
        #[derive(Zeroize, ZeroizeOnDrop $(, $extra)*)]
        pub struct $name(pub [u8; KEY_LEN]);

        impl $name {
            /// The raw key bytes (handle with care).
            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}

        #[cfg(feature = "defmt")]
        impl defmt::Format for $name {
            fn format(&self, f: defmt::Formatter<'_>) {
                defmt::write!(f, "<redacted key>")
            }
        }
    };
}

secret_type!(
    /// A device's 32-byte key: provisioned per device or derived with [`derive_device_key`].
    // Clone: the handshake's `ClientHandshake` and `TerminalRecord` own a copy and are `Clone`.
    DeviceKey,
    Clone
);
secret_type!(
    /// The fleet master key from which device keys are derived (broker side and factory only).
    MasterKey
);
secret_type!(
    /// The broker's secret for stateless HELLO cookies; every broker node of a deployment that
    /// may receive a LOGIN for another node's CHALLENGE must share it.
    // Clone: the handshake's `Acceptor` owns a copy and is `Clone`.
    CookieSecret,
    Clone
);
secret_type!(
    /// One direction's ChaCha20-Poly1305 key of a session.
    DirectionKey
);

/// A 32-byte HMAC-SHA256 output: a cookie or a login proof. Compares in constant time.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mac32(pub [u8; KEY_LEN]);

impl PartialEq for Mac32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Mac32 {}

/// The address a packet came from: IPv4 or IPv6 address and UDP/TCP port, as the cookie binds it.
///
/// Its cookie encoding ([`PeerAddr::encode`]) is the 4 or 16 address bytes then the port as 2 bytes
/// little-endian. An IPv4-mapped IPv6 address is kept as IPv6 (16 bytes): the broker must hand the
/// same form for HELLO and LOGIN, which one socket does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PeerAddr {
    /// IPv4 address and port.
    V4([u8; 4], u16),
    /// IPv6 address and port.
    V6([u8; 16], u16),
}

/// Longest [`PeerAddr::encode`] output.
pub const PEER_ADDR_MAX_LEN: usize = 18;

impl PeerAddr {
    /// Writes the cookie encoding into `out` and returns its length (6 or 18).
    pub fn encode(&self, out: &mut [u8; PEER_ADDR_MAX_LEN]) -> usize {
        match self {
            PeerAddr::V4(ip, port) => {
                out[..4].copy_from_slice(ip);
                out[4..6].copy_from_slice(&port.to_le_bytes());
                6
            }
            PeerAddr::V6(ip, port) => {
                out[..16].copy_from_slice(ip);
                out[16..18].copy_from_slice(&port.to_le_bytes());
                18
            }
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => PeerAddr::V4(ip.octets(), addr.port()),
            IpAddr::V6(ip) => PeerAddr::V6(ip.octets(), addr.port()),
        }
    }
}

impl From<PeerAddr> for SocketAddr {
    fn from(addr: PeerAddr) -> Self {
        match addr {
            PeerAddr::V4(ip, port) => SocketAddr::new(IpAddr::from(ip), port),
            PeerAddr::V6(ip, port) => SocketAddr::new(IpAddr::from(ip), port),
        }
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn finish(mac: HmacSha256) -> Mac32 {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    Mac32(out)
}

/// `device_key = HMAC-SHA256(master_key, id as 4 bytes LE)`.
pub fn derive_device_key(master: &MasterKey, id: u32) -> DeviceKey {
    let mut mac = hmac(&master.0);
    mac.update(&id.to_le_bytes());
    DeviceKey(finish(mac).0)
}

/// The fields of a HELLO that a cookie binds (besides time and address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HelloBinding {
    /// The terminal kind byte as sent (0 = device).
    pub kind: u8,
    /// The terminal id as sent.
    pub id: u32,
    /// The device's fresh nonce.
    pub client_nonce: [u8; NONCE_LEN],
}

/// `cookie = HMAC-SHA256(cookie_secret, "plugcloud-cookie-v1" || timestamp_ms (8 LE) ||
/// peer_address || kind (1) || id (4 LE) || client_nonce (16))`.
pub fn compute_cookie(
    secret: &CookieSecret,
    timestamp_ms: u64,
    peer: &PeerAddr,
    hello: &HelloBinding,
) -> Mac32 {
    let mut addr = [0u8; PEER_ADDR_MAX_LEN];
    let addr_len = peer.encode(&mut addr);
    let mut mac = hmac(&secret.0);
    mac.update(COOKIE_LABEL);
    mac.update(&timestamp_ms.to_le_bytes());
    mac.update(&addr[..addr_len]);
    mac.update(&[hello.kind]);
    mac.update(&hello.id.to_le_bytes());
    mac.update(&hello.client_nonce);
    finish(mac)
}

/// What a login proof covers besides the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProofInput {
    /// Protocol version byte of the LOGIN packet.
    pub version: u8,
    /// The HELLO fields (kind, id, nonce) repeated in the LOGIN.
    pub hello: HelloBinding,
    /// The CHALLENGE timestamp.
    pub timestamp_ms: u64,
    /// The CHALLENGE cookie.
    pub cookie: [u8; KEY_LEN],
    /// The device's since-id (highest delivered message id it has).
    pub since_id: u64,
    /// The device's upload epoch (per boot; see [`crate::packet::Login::upload_epoch`]).
    pub upload_epoch: u64,
}

/// `proof = HMAC-SHA256(device_key, "plugcloud-login-v1" || version (1) || kind (1) || id (4 LE) ||
/// client_nonce (16) || timestamp_ms (8 LE) || cookie (32) || since_id (8 LE) ||
/// upload_epoch (8 LE))`.
pub fn compute_proof(key: &DeviceKey, input: &ProofInput) -> Mac32 {
    let mut mac = hmac(&key.0);
    mac.update(LOGIN_LABEL);
    mac.update(&[input.version, input.hello.kind]);
    mac.update(&input.hello.id.to_le_bytes());
    mac.update(&input.hello.client_nonce);
    mac.update(&input.timestamp_ms.to_le_bytes());
    mac.update(&input.cookie);
    mac.update(&input.since_id.to_le_bytes());
    mac.update(&input.upload_epoch.to_le_bytes());
    finish(mac)
}

/// Verifies a received proof in constant time.
pub fn verify_proof(key: &DeviceKey, input: &ProofInput, proof: &[u8; KEY_LEN]) -> bool {
    compute_proof(key, input) == Mac32(*proof)
}

/// The two keys of a session: one per direction, so a (key, nonce) pair is never reused.
///
/// Not `Clone`: [`crate::session::SecureSession::new`] borrows it. Each [`DirectionKey`] is
/// zeroised when the `SessionKeys` is dropped.
#[derive(PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionKeys {
    /// Device-to-broker key (`okm[0..32]`).
    pub d2b: DirectionKey,
    /// Broker-to-device key (`okm[32..64]`).
    pub b2d: DirectionKey,
}

// Both fields zeroise themselves on drop.
impl ZeroizeOnDrop for SessionKeys {}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// `okm = HKDF-SHA256(salt = client_nonce || broker_nonce || cookie, ikm = device_key,
/// info = "plugcloud-session-v2" || id (4 LE), L = 64)`; `d2b = okm[0..32]`, `b2d = okm[32..64]`.
///
/// Computed as RFC 5869 defines it, unrolled for these lengths: `prk = HMAC(salt, ikm)`,
/// `d2b = T(1) = HMAC(prk, info || 0x01)`, `b2d = T(2) = HMAC(prk, T(1) || info || 0x02)`. Three
/// HMACs over the one HMAC-SHA256 the module already uses, instead of the general `hkdf` expand
/// loop (about 0.3 KiB less flash on a device); a test holds it to the `hkdf` crate's output.
///
/// The broker nonce is fresh per accepted login, so two accepted logins never share keys, even
/// when the same LOGIN is accepted twice.
pub fn derive_session_keys(
    key: &DeviceKey,
    id: u32,
    client_nonce: &[u8; NONCE_LEN],
    broker_nonce: &[u8; NONCE_LEN],
    cookie: &[u8; KEY_LEN],
) -> SessionKeys {
    let mut salt = [0u8; 2 * NONCE_LEN + KEY_LEN];
    salt[..NONCE_LEN].copy_from_slice(client_nonce);
    salt[NONCE_LEN..2 * NONCE_LEN].copy_from_slice(broker_nonce);
    salt[2 * NONCE_LEN..].copy_from_slice(cookie);
    let mut extract = hmac(&salt);
    extract.update(&key.0);
    let mut prk = finish(extract).0;
    let expand = |previous: &[u8], counter: u8| {
        let mut mac = hmac(&prk);
        mac.update(previous);
        mac.update(SESSION_LABEL);
        mac.update(&id.to_le_bytes());
        mac.update(&[counter]);
        finish(mac)
    };
    let d2b = expand(&[], 1);
    let b2d = expand(&d2b.0, 2);
    prk.zeroize();
    SessionKeys {
        d2b: DirectionKey(d2b.0),
        b2d: DirectionKey(b2d.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        extern crate std;
        use std::format;
        let key = DeviceKey([0xAB; 32]);
        let s = format!("{key:?}");
        assert_eq!(s, "DeviceKey(<redacted>)");
        let keys = derive_session_keys(&key, 7, &[1; 16], &[4; 16], &[2; 32]);
        assert!(!format!("{keys:?}").contains("171"));
    }

    #[test]
    fn device_key_matches_plain_hmac_definition() {
        // RFC 4231 style check: HMAC over the 4 LE id bytes, different ids differ.
        let master = MasterKey([0x0B; 32]);
        let a = derive_device_key(&master, 1);
        let b = derive_device_key(&master, 2);
        assert_ne!(a, b);
        let mut mac = hmac(&master.0);
        mac.update(&[1, 0, 0, 0]);
        assert_eq!(a.0, finish(mac).0);
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        // Guards the HMAC plumbing itself: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let out = mac.finalize().into_bytes();
        assert_eq!(
            hex::encode(out),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn cookie_binds_address_port_and_time() {
        let secret = CookieSecret([9; 32]);
        let hello = HelloBinding {
            kind: 0,
            id: 42,
            client_nonce: [3; 16],
        };
        let a = PeerAddr::V4([192, 0, 2, 1], 5000);
        let base = compute_cookie(&secret, 1000, &a, &hello);
        assert_eq!(base, compute_cookie(&secret, 1000, &a, &hello));
        assert_ne!(
            base,
            compute_cookie(&secret, 1000, &PeerAddr::V4([192, 0, 2, 1], 5001), &hello)
        );
        assert_ne!(
            base,
            compute_cookie(&secret, 1000, &PeerAddr::V4([192, 0, 2, 2], 5000), &hello)
        );
        assert_ne!(base, compute_cookie(&secret, 1001, &a, &hello));
        let v6 = PeerAddr::from(SocketAddr::from((
            [0u16, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201],
            5000,
        )));
        assert_ne!(base, compute_cookie(&secret, 1000, &v6, &hello));
    }

    #[test]
    fn peer_addr_encoding_and_conversion() {
        let mut buf = [0u8; PEER_ADDR_MAX_LEN];
        let a = PeerAddr::from(SocketAddr::from(([10, 1, 2, 3], 0x1234)));
        assert_eq!(a.encode(&mut buf), 6);
        assert_eq!(&buf[..6], &[10, 1, 2, 3, 0x34, 0x12]);
        assert_eq!(
            SocketAddr::from(a),
            SocketAddr::from(([10, 1, 2, 3], 0x1234))
        );
        let b = PeerAddr::V6([1; 16], 80);
        assert_eq!(b.encode(&mut buf), 18);
        assert_eq!(&buf[16..18], &[80, 0]);
    }

    #[test]
    fn proof_verifies_only_with_same_inputs() {
        let key = DeviceKey([5; 32]);
        let input = ProofInput {
            version: 1,
            hello: HelloBinding {
                kind: 0,
                id: 7,
                client_nonce: [1; 16],
            },
            timestamp_ms: 99,
            cookie: [2; 32],
            since_id: 3,
            upload_epoch: 9,
        };
        let p = compute_proof(&key, &input);
        assert!(verify_proof(&key, &input, &p.0));
        assert!(!verify_proof(&DeviceKey([6; 32]), &input, &p.0));
        let other = ProofInput {
            since_id: 4,
            ..input
        };
        assert!(!verify_proof(&key, &other, &p.0));
        let other_epoch = ProofInput {
            upload_epoch: 10,
            ..input
        };
        assert!(!verify_proof(&key, &other_epoch, &p.0));
    }

    #[test]
    fn session_keys_differ_per_direction_and_input() {
        let key = DeviceKey([5; 32]);
        let k = derive_session_keys(&key, 7, &[1; 16], &[4; 16], &[2; 32]);
        assert_ne!(k.d2b, k.b2d);
        assert_ne!(
            k,
            derive_session_keys(&key, 8, &[1; 16], &[4; 16], &[2; 32])
        );
        assert_ne!(
            k,
            derive_session_keys(&key, 7, &[0; 16], &[4; 16], &[2; 32])
        );
        assert_ne!(
            k,
            derive_session_keys(&key, 7, &[1; 16], &[5; 16], &[2; 32])
        );
    }

    /// The unrolled key schedule equals RFC 5869 HKDF-SHA256 (the `hkdf` crate) for varied inputs.
    #[test]
    fn session_keys_equal_general_hkdf() {
        for seed in 0u8..8 {
            let key = DeviceKey([seed.wrapping_mul(37); 32]);
            let id = u32::from(seed) * 0x0101_0101 + 3;
            let client_nonce = [seed ^ 0x5A; NONCE_LEN];
            let broker_nonce = [seed.wrapping_add(9); NONCE_LEN];
            let cookie = [seed.wrapping_mul(11) ^ 0xC3; KEY_LEN];
            let mut salt = [0u8; 2 * NONCE_LEN + KEY_LEN];
            salt[..NONCE_LEN].copy_from_slice(&client_nonce);
            salt[NONCE_LEN..2 * NONCE_LEN].copy_from_slice(&broker_nonce);
            salt[2 * NONCE_LEN..].copy_from_slice(&cookie);
            let mut info = [0u8; 24];
            info[..SESSION_LABEL.len()].copy_from_slice(SESSION_LABEL);
            info[SESSION_LABEL.len()..].copy_from_slice(&id.to_le_bytes());
            let mut okm = [0u8; 2 * KEY_LEN];
            hkdf::Hkdf::<Sha256>::new(Some(&salt), &key.0)
                .expand(&info, &mut okm)
                .unwrap();
            let keys = derive_session_keys(&key, id, &client_nonce, &broker_nonce, &cookie);
            assert_eq!(keys.d2b.0[..], okm[..KEY_LEN], "seed {seed}");
            assert_eq!(keys.b2d.0[..], okm[KEY_LEN..], "seed {seed}");
        }
    }
}
