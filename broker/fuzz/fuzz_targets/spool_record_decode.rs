//! Upload spool records read back from the embedded store (`decode_upload`) on arbitrary bytes:
//! no panic; a record that decodes re-encodes to exactly the same bytes (nothing is lost or
//! invented on the way back).
#![no_main]

use broker::store::embedded::{decode_upload, encode_upload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cursor = 42;
    // The epoch is stored apart from the record bytes (its own table).
    let epoch = 0x8f3c_5a2e_d1b4_0967;
    if let Ok(rec) = decode_upload(cursor, epoch, data) {
        assert_eq!(rec.cursor, cursor);
        assert_eq!(rec.upload_epoch, epoch);
        let again = encode_upload(
            rec.device,
            rec.upload_id,
            rec.received_at_ms,
            &rec.topic,
            &rec.payload,
        );
        assert_eq!(again, data, "a decoded record re-encodes to the same bytes");
    }
});
