//! The AEAD under DATA and WELCOME packets (ChaCha20-Poly1305, RFC 8439; docs/protocol.md
//! section 3), behind one trait with two interchangeable backends.
//!
//! * [`PacketAead`] is what [`crate::session::SecureSession`] calls: made once from a
//!   [`DirectionKey`] when the session is established, then used for every packet of that
//!   direction, in place on the caller's buffer, with a detached 16-byte tag and no allocation.
//!   Either backend's state is the 32-byte key and nothing else (a test holds this), wiped when
//!   the session is dropped.
//! * [`Compact`] (always built, no_std): ChaCha20 written out as RFC 8439 defines it, with
//!   RustCrypto's `poly1305` for the tag. The smallest in flash, and the firmware's backend.
//! * [`Portable`] (always built, no_std): the RustCrypto `chacha20poly1305` crate, which
//!   [`Compact`] is tested against.
//! * [`Ring`] (feature `fast-aead`, std hosts): `ring`'s assembly ChaCha20-Poly1305, several
//!   times faster on x86-64 than the portable crate in a default build (whose Poly1305 AVX2
//!   helpers are not inlined there). The broker turns this feature on.
//!
//! [`SessionAead`] names the backend sessions use: [`Ring`] when `fast-aead` is on, else
//! [`Compact`]. All produce byte-identical packets; `tests/rfc_kats.rs` checks each backend
//! against the RFC 8439 vectors and against each other, and `tests/crypto_vectors.rs` checks
//! sessions against docs/vectors.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use poly1305::Poly1305;
use poly1305::universal_hash::UniversalHash;
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

/// The portable backend: RustCrypto's `chacha20poly1305` (no_std, no alloc), the reference the
/// [`Compact`] backend is tested against. Its copy of the key is wiped on drop.
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

/// The compact backend: ChaCha20 written out as RFC 8439 section 2.3 defines it (one block
/// function, a table of quarter rounds, no buffering or seeking), the construction of section
/// 2.8 around it, and RustCrypto's `poly1305` for the tag (its constant-time `verify` for the
/// check). Byte-identical to [`Portable`] (tests: the RFC vectors, and both backends on random
/// keys, nonces, associated data and lengths); the sessions' backend without `fast-aead`, so
/// the firmware links it instead of the generic stream cipher wrapper (about 0.9 KiB less
/// flash). Slower than [`Portable`] on hosts with SIMD (no vector code), which the broker avoids
/// with [`Ring`]. Its state is the key, wiped on drop.
pub struct Compact(DirectionKey);

/// The ChaCha20 block's quarter rounds (RFC 8439 section 2.3), four on the columns and four on
/// the diagonals, each as the state word indexes `a`, `b`, `c`, `d`, one hexadecimal digit each.
const QUARTER_ROUNDS: [u16; 8] = [
    0x048C, 0x159D, 0x26AE, 0x37BF, 0x05AF, 0x16BC, 0x278D, 0x349E,
];

/// The ChaCha20 block function (RFC 8439 section 2.3) with block `counter` and `nonce`: writes
/// the 64 keystream bytes into `out`.
fn chacha20_block(key: &[u8; 32], counter: u32, nonce: &[u8; NONCE_LEN], out: &mut [u8; 64]) {
    // "expand 32-byte k", then the key, the counter and the nonce as little-endian words.
    let mut input = [0u32; 16];
    input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    input[12] = counter;
    for i in 0..8 {
        input[4 + i] = le_word(&key[4 * i..]);
    }
    for i in 0..3 {
        input[13 + i] = le_word(&nonce[4 * i..]);
    }
    let mut x = input;
    for round in 0..80 {
        let q = QUARTER_ROUNDS[round % 8];
        // `& 15`: every index is in range without a bounds check.
        let (a, b, c, d) = (
            usize::from(q >> 12) & 15,
            usize::from(q >> 8) & 15,
            usize::from(q >> 4) & 15,
            usize::from(q) & 15,
        );
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    for i in 0..16 {
        out[4 * i..4 * i + 4].copy_from_slice(&x[i].wrapping_add(input[i]).to_le_bytes());
    }
    x.zeroize();
    input.zeroize();
}

/// The little-endian word at the start of `bytes` (at least 4 bytes long).
fn le_word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl Compact {
    /// XORs `buf` with the keystream from block 1 on (block 0 keys Poly1305).
    fn apply_keystream(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
        let mut block = [0u8; 64];
        for (counter, chunk) in (1u32..).zip(buf.chunks_mut(64)) {
            chacha20_block(&self.0.0, counter, nonce, &mut block);
            for (byte, key) in chunk.iter_mut().zip(block.iter()) {
                *byte ^= key;
            }
        }
        block.zeroize();
    }

    /// Poly1305 keyed from block 0, over `aad` and the ciphertext, each padded to 16 bytes,
    /// then both lengths (RFC 8439 section 2.8).
    fn mac(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ciphertext: &[u8]) -> Poly1305 {
        let mut block = [0u8; 64];
        chacha20_block(&self.0.0, 0, nonce, &mut block);
        let Some(one_time_key) = block.first_chunk::<32>() else {
            unreachable!("a ChaCha20 block has 64 bytes")
        };
        let mut mac = Poly1305::new(poly1305::Key::cast_from_core(one_time_key));
        block.zeroize();
        mac.update_padded(aad);
        mac.update_padded(ciphertext);
        let mut lengths = poly1305::Block::default();
        lengths[..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
        lengths[8..].copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
        mac.update(&[lengths]);
        mac
    }

    /// Whether `len` bytes fit under one nonce (the 32-bit block counter starts at 1).
    fn fits(len: usize) -> bool {
        (len as u64).div_ceil(64) < u64::from(u32::MAX)
    }
}

impl zeroize::ZeroizeOnDrop for Compact {}

impl PacketAead for Compact {
    // The tag is checked before the keystream touches the buffer.
    const FAILED_OPEN_KEEPS_INPUT: bool = true;

    fn new(key: &DirectionKey) -> Self {
        Self(DirectionKey(key.0))
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        if !Self::fits(buf.len()) {
            return Err(AeadError::TooLong);
        }
        self.apply_keystream(nonce, buf);
        Ok(self.mac(nonce, aad, buf).finalize().into())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        if !Self::fits(buf.len()) {
            return Err(AeadError::AuthFailed);
        }
        // Constant-time tag check, before any byte of `buf` changes.
        self.mac(nonce, aad, buf)
            .verify(&(*tag).into())
            .map_err(|_| AeadError::AuthFailed)?;
        self.apply_keystream(nonce, buf);
        Ok(())
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

/// The backend sessions use: [`Ring`] with feature `fast-aead`, else [`Compact`].
#[cfg(feature = "fast-aead")]
pub type SessionAead = Ring;
/// The backend sessions use: [`Ring`] with feature `fast-aead`, else [`Compact`].
#[cfg(not(feature = "fast-aead"))]
pub type SessionAead = Compact;

#[cfg(test)]
mod tests {
    use super::*;

    /// A session holds two of these: each must stay the bare 32-byte key.
    #[test]
    fn backend_state_is_the_bare_key() {
        assert_eq!(core::mem::size_of::<Portable>(), 32);
        assert_eq!(core::mem::size_of::<Compact>(), 32);
        assert_eq!(core::mem::size_of::<SessionAead>(), 32);
    }

    /// `Portable` and `Compact` promise `FAILED_OPEN_KEEPS_INPUT`: a wrong tag, key, nonce or
    /// AAD leaves the sealed bytes exactly as they were.
    #[test]
    fn portable_failed_open_keeps_the_input() {
        const { assert!(Portable::FAILED_OPEN_KEEPS_INPUT) };
        failed_open_keeps_the_input::<Portable>();
    }

    #[test]
    fn compact_failed_open_keeps_the_input() {
        const { assert!(Compact::FAILED_OPEN_KEEPS_INPUT) };
        failed_open_keeps_the_input::<Compact>();
    }

    fn failed_open_keeps_the_input<A: PacketAead>() {
        let key = DirectionKey([9; 32]);
        let aead = A::new(&key);
        let nonce = [3; NONCE_LEN];
        let mut sealed = [0x5Au8; 48];
        let tag = aead.seal_in_place(&nonce, b"aad", &mut sealed).unwrap();
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        let other = A::new(&DirectionKey([8; 32]));
        /// A cipher, nonce, associated data and tag to open the sealed bytes with.
        type Attempt<'a, A> = (&'a A, [u8; NONCE_LEN], &'a [u8], [u8; TAG_LEN]);
        let attempts: [Attempt<A>; 4] = [
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
