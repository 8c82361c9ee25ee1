//! JSON app messages and tokens on arbitrary bytes: no panic, and every accepted message
//! re-encodes to a text that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared_protocol::json::{ClientMessage, ServerMessage, verify};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ClientMessage::decode(data) {
        let text = m.encode().expect("accepted message re-encodes");
        assert_eq!(ClientMessage::decode(text.as_bytes()), Ok(m));
    }
    if let Ok(m) = ServerMessage::decode(data) {
        let text = m.encode().expect("accepted message re-encodes");
        assert_eq!(ServerMessage::decode(text.as_bytes()), Ok(m));
    }
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verify(b"fuzz-secret", token, 0);
    }
});
