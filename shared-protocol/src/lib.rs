//! Wire protocol shared by devices, phones and the broker; `docs/protocol.md` is its normative spec.
//!
//! The crate is `no_std`, allocation-free and sans-IO: every state machine takes bytes and `now`
//! (milliseconds, injected by the caller) and returns bytes, events and the next deadline. Randomness
//! is passed in by the caller too.
//!
//! How the pieces fit:
//! * [`ids`]: terminal addresses and the two ID profiles (`plug`, `signed`).
//! * [`codes`]: the one table of error, rejection and kick codes.
//! * [`limits`]: sizes and timeouts peers can rely on.
//! * [`packet`]: the outer packet layouts (handshake packets, DATA header).
//! * [`frame`]: the frames carried inside DATA packets and their codec.
//! * `wire` (private): the postcard primitives (varints, tags, strings) the frame codec reads
//!   and writes by hand.
//! * [`keys`]: device keys (fleet derivation), cookies, proofs and session key schedule.
//! * [`replay`]: the anti-replay window for counter nonces.
//! * [`aead`]: the ChaCha20-Poly1305 trait sessions seal and open with, and its backends (a
//!   compact one for firmware, the RustCrypto crate it is tested against, and `ring` with feature
//!   `fast-aead` for std hosts such as the broker).
//! * [`session`]: the secure session (seal/open of DATA packets).
//! * [`handshake`]: the client and server login handshakes.
//! * [`reliability`]: sequence numbers, acknowledgements and retransmission.
//! * [`provision`]: the device provisioning record kept in flash (not a wire format).
//! * `json` (feature `json`): the app transport's JSON messages and tokens.
#![no_std]
#![cfg_attr(not(feature = "std"), forbid(unsafe_code))]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod aead;
pub mod codes;
pub mod frame;
pub mod handshake;
pub mod ids;
#[cfg(feature = "json")]
pub mod json;
pub mod keys;
pub mod limits;
pub mod packet;
pub mod provision;
pub mod reliability;
pub mod replay;
pub mod session;
mod wire;
