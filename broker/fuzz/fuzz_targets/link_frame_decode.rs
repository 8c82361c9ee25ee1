//! Node-link frames on arbitrary bytes: no panic; every accepted frame re-encodes to bytes that
//! decode to the same frame, and splitting it for the wire keeps every part within the bound.
#![no_main]

use broker::cluster::frame::{self, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((f, used))) = frame::decode(data) {
        assert!(used <= data.len());
        let again = frame::encode(&f).expect("an accepted frame re-encodes");
        assert_eq!(
            frame::decode(&again).unwrap().map(|(g, _)| g),
            Some(f.clone())
        );
        for part in frame::split_for_wire(f) {
            let body = frame::encode_body(&part).expect("a part encodes");
            assert!(body.len() <= MAX_FRAME);
        }
    }
    if let Ok(f) = frame::decode_body(data) {
        assert_eq!(
            frame::decode_body(&frame::encode_body(&f).unwrap()).unwrap(),
            f
        );
    }
});
