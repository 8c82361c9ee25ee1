//! Key material hygiene (docs/protocol.md section 3): every secret key type overwrites its bytes
//! when dropped, never prints them, and the AEAD ciphers a session holds (either backend) wipe
//! their keys too.
//!
//! The drop tests look at a value's memory after its destructor ran, which takes `unsafe`: the
//! value lives in a `MaybeUninit` so the bytes stay allocated and readable after the drop.
#![allow(unsafe_code)]

use core::mem::{MaybeUninit, size_of};

use chacha20poly1305::ChaCha20Poly1305;
use shared_protocol::keys::{
    CookieSecret, DeviceKey, DirectionKey, MasterKey, SessionKeys, derive_session_keys,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Runs `T`'s destructor in place and returns the bytes left behind.
fn bytes_after_drop<T, const N: usize>(value: T) -> [u8; N] {
    assert_eq!(size_of::<T>(), N);
    let mut slot = MaybeUninit::new(value);
    // SAFETY: `slot` holds an initialised `T`, dropped exactly once here and never used as a `T`
    // again; its storage stays alive, and a destructor that wiped it left plain bytes there.
    unsafe {
        core::ptr::drop_in_place(slot.as_mut_ptr());
        core::ptr::read(slot.as_ptr().cast::<[u8; N]>())
    }
}

#[test]
fn every_key_type_is_wiped_on_drop() {
    assert_eq!(bytes_after_drop::<_, 32>(DeviceKey([0xA5; 32])), [0; 32]);
    assert_eq!(bytes_after_drop::<_, 32>(MasterKey([0xA5; 32])), [0; 32]);
    assert_eq!(bytes_after_drop::<_, 32>(CookieSecret([0xA5; 32])), [0; 32]);
    assert_eq!(bytes_after_drop::<_, 32>(DirectionKey([0xA5; 32])), [0; 32]);
    let keys = derive_session_keys(&DeviceKey([7; 32]), 1, &[1; 16], &[3; 16], &[2; 32]);
    assert_ne!(keys.d2b.0, [0; 32]);
    assert_eq!(bytes_after_drop::<_, 64>(keys), [0; 64]);
}

/// Each AEAD backend's state (what a session holds per direction) is its key, wiped on drop.
#[test]
fn aead_backends_wipe_their_key_on_drop() {
    use shared_protocol::aead::{Compact, PacketAead, Portable, SessionAead};
    assert_eq!(
        bytes_after_drop::<_, 32>(Portable::new(&DirectionKey([0xA5; 32]))),
        [0; 32]
    );
    assert_eq!(
        bytes_after_drop::<_, 32>(Compact::new(&DirectionKey([0xA5; 32]))),
        [0; 32]
    );
    assert_eq!(
        bytes_after_drop::<_, 32>(SessionAead::new(&DirectionKey([0xA5; 32]))),
        [0; 32]
    );
}

#[test]
fn zeroize_clears_in_place() {
    let mut key = MasterKey([0x5A; 32]);
    key.zeroize();
    assert_eq!(key.0, [0; 32]);
}

#[test]
fn key_types_and_session_ciphers_promise_zeroize_on_drop() {
    fn zeroizes_on_drop<T: ZeroizeOnDrop>() {}
    zeroizes_on_drop::<DeviceKey>();
    zeroizes_on_drop::<MasterKey>();
    zeroizes_on_drop::<CookieSecret>();
    zeroizes_on_drop::<DirectionKey>();
    zeroizes_on_drop::<SessionKeys>();
    // What `SecureSession` holds: needs chacha20poly1305's `zeroize` feature (`Portable`),
    // or the wiped `DirectionKey` inside (`Compact`).
    zeroizes_on_drop::<ChaCha20Poly1305>();
    zeroizes_on_drop::<shared_protocol::aead::Compact>();
}

#[test]
fn debug_never_shows_key_bytes() {
    let shown = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        DeviceKey([0xA5; 32]),
        MasterKey([0xA5; 32]),
        CookieSecret([0xA5; 32]),
        DirectionKey([0xA5; 32]),
        derive_session_keys(&DeviceKey([0xA5; 32]), 1, &[1; 16], &[3; 16], &[2; 32]),
    );
    assert!(!shown.contains("165"), "{shown}");
    assert!(!shown.to_lowercase().contains("a5"), "{shown}");
    assert!(shown.contains("MasterKey(<redacted>)"), "{shown}");
}
