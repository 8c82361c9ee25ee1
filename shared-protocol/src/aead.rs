//! The AEAD under DATA and WELCOME packets (ChaCha20-Poly1305, RFC 8439; docs/protocol.md
//! section 3), behind one trait with two interchangeable backends.
//!
//! * [`PacketAead`] is what [`crate::session::SecureSession`] calls: made once from a
//!   [`DirectionKey`] when the session is established, then used for every packet of that
//!   direction, in place on the caller's buffer, with a detached 16-byte tag and no allocation.
//!   Either backend's state is the 32-byte key and nothing else (a test holds this), wiped when
//!   the session is dropped.
//! * [`Portable`] (always built, no_std): the RustCrypto `chacha20poly1305` crate. Small, and the
//!   firmware's backend.
//! * [`Ring`] (feature `fast-aead`, std hosts): `ring`'s assembly ChaCha20-Poly1305, several
//!   times faster on x86-64 than the portable crate in a default build (whose Poly1305 AVX2
//!   helpers are not inlined there). The broker turns this feature on.
//!
//! [`SessionAead`] names the backend sessions use: [`Ring`] when `fast-aead` is on, else
//! [`Portable`]. Both produce byte-identical packets; `tests/rfc_kats.rs` checks each backend
//! against the RFC 8439 vectors and `tests/crypto_vectors.rs` checks sessions against
//! docs/vectors.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use zeroize::Zeroize;

use crate::keys::DirectionKey;
use crate::limits::TAG_LEN;

/// ChaCha20-Poly1305 nonce length (RFC 8439).
pub const NONCE_LEN: usize = 12;

/// Why an AEAD operation failed. A failed operation changes no cipher state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AeadError {
    /// The message is longer than the cipher allows under one nonce.
    TooLong,
    /// The tag did not verify: forged, corrupted or under another key or nonce.
    AuthFailed,
}

impl core::fmt::Display for AeadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AeadError::TooLong => "message too long for the AEAD",
            AeadError::AuthFailed => "AEAD tag did not verify",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AeadError {}

/// ChaCha20-Poly1305 keyed once for one direction of a session.
///
/// Callers must never seal two messages under the same key and nonce; `SecureSession` derives
/// the nonce from its strictly increasing packet counter.
pub trait PacketAead: Sized {
    /// Keys the cipher (once per session direction).
    fn new(key: &DirectionKey) -> Self;

    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError>;

    /// Whether [`PacketAead::open_in_place`] leaves `buf` exactly as it was when the tag fails,
    /// so a caller may offer the same bytes to another key without keeping a copy.
    const FAILED_OPEN_KEEPS_INPUT: bool;

    /// Verifies `tag` and decrypts `buf` in place. On [`AeadError::AuthFailed`] `buf` holds no
    /// plaintext: it is left as it was or zeroed, depending on the backend
    /// ([`PacketAead::FAILED_OPEN_KEEPS_INPUT`]).
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError>;
}

/// The portable backend: RustCrypto's `chacha20poly1305` (no_std, no alloc). Its copy of the key
/// is wiped on drop.
pub struct Portable(ChaCha20Poly1305);

impl PacketAead for Portable {
    // The tag is checked before the keystream touches the buffer (a test holds this).
    const FAILED_OPEN_KEEPS_INPUT: bool = true;

    fn new(key: &DirectionKey) -> Self {
        let mut copy = chacha20poly1305::Key::from(key.0);
        let cipher = ChaCha20Poly1305::new(&copy);
        // The cipher keeps its own copy (wiped on drop); wipe this stack one too.
        copy.as_mut_slice().zeroize();
        Self(cipher)
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        self.0
            .encrypt_inout_detached(&(*nonce).into(), aad, InOutBuf::from(buf))
            .map(Into::into)
            .map_err(|_| AeadError::TooLong)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        // Verifies the tag before decrypting: on failure `buf` is unchanged.
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, InOutBuf::from(buf), &(*tag).into())
            .map_err(|_| AeadError::AuthFailed)
    }
}

/// The fast std backend: `ring`'s ChaCha20-Poly1305 (feature `fast-aead`).
///
/// It holds only the 32-byte key (wiped on drop) and hands it to `ring` per call: `ring`'s
/// keyed type, `LessSafeKey`, is sized for its largest algorithm (AES-GCM, over 500 bytes), which
/// would more than double a session's memory, while turning a ChaCha20 key into that type is a
/// copy of the 32 bytes (the per-packet work, the Poly1305 key from the nonce, is the same
/// either way; `benches/aead.rs` measures both). `ring` keeps no copy beyond the call's stack.
#[cfg(feature = "fast-aead")]
pub struct Ring(zeroize::Zeroizing<[u8; 32]>);

#[cfg(feature = "fast-aead")]
impl Ring {
    fn key(&self) -> ring::aead::LessSafeKey {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.0[..])
            .expect("ChaCha20-Poly1305 takes exactly a 32-byte key, as DirectionKey is");
        ring::aead::LessSafeKey::new(unbound)
    }
}

#[cfg(feature = "fast-aead")]
impl PacketAead for Ring {
    // ring zeroes what it decrypted when the tag fails.
    const FAILED_OPEN_KEEPS_INPUT: bool = false;

    fn new(key: &DirectionKey) -> Self {
        Self(zeroize::Zeroizing::new(key.0))
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = self
            .key()
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf)
            .map_err(|_| AeadError::TooLong)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        // On a bad tag ring zeroes what it decrypted.
        self.key()
            .open_in_place_separate_tag(
                nonce,
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AeadError::AuthFailed)
    }
}

/// The backend sessions use: [`Ring`] with feature `fast-aead`, else [`Portable`].
#[cfg(feature = "fast-aead")]
pub type SessionAead = Ring;
/// The backend sessions use: [`Ring`] with feature `fast-aead`, else [`Portable`].
#[cfg(not(feature = "fast-aead"))]
pub type SessionAead = Portable;

#[cfg(test)]
mod tests {
    use super::*;

    /// A session holds two of these: each must stay the bare 32-byte key.
    #[test]
    fn backend_state_is_the_bare_key() {
        assert_eq!(core::mem::size_of::<Portable>(), 32);
        assert_eq!(core::mem::size_of::<SessionAead>(), 32);
    }

    /// `Portable` promises `FAILED_OPEN_KEEPS_INPUT`: a wrong tag, key, nonce or AAD leaves the
    /// sealed bytes exactly as they were.
    #[test]
    fn portable_failed_open_keeps_the_input() {
        const { assert!(Portable::FAILED_OPEN_KEEPS_INPUT) };
        let key = DirectionKey([9; 32]);
        let aead = Portable::new(&key);
        let nonce = [3; NONCE_LEN];
        let mut sealed = [0x5Au8; 48];
        let tag = aead.seal_in_place(&nonce, b"aad", &mut sealed).unwrap();
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        let other = Portable::new(&DirectionKey([8; 32]));
        /// A cipher, nonce, associated data and tag to open the sealed bytes with.
        type Attempt<'a> = (&'a Portable, [u8; NONCE_LEN], &'a [u8], [u8; TAG_LEN]);
        let attempts: [Attempt; 4] = [
            (&aead, nonce, b"aad", bad_tag),
            (&other, nonce, b"aad", tag),
            (&aead, [4; NONCE_LEN], b"aad", tag),
            (&aead, nonce, b"aaD", tag),
        ];
        for (cipher, n, aad, t) in attempts {
            let mut buf = sealed;
            assert_eq!(
                cipher.open_in_place(&n, aad, &mut buf, &t),
                Err(AeadError::AuthFailed)
            );
            assert_eq!(buf, sealed);
        }
        let mut buf = sealed;
        aead.open_in_place(&nonce, b"aad", &mut buf, &tag).unwrap();
        assert_eq!(buf, [0x5A; 48]);
    }
}
