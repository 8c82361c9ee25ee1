//! The Redis offline store's `since` reply (`store::redis::replies::since_reply`) on arbitrary
//! fields: no panic; a reply that decodes gives one message per row of four fields with the
//! row's payload bytes untouched, and a row count that is not a multiple of four is refused.
//!
//! Input: fields as (length byte, bytes) until the data ends (a short last field is cut).
#![no_main]

use broker::store::redis::replies::since_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        fields.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    match since_reply(&fields) {
        Ok(msgs) => {
            assert_eq!(msgs.len() * 4, fields.len());
            for (m, row) in msgs.iter().zip(fields.chunks_exact(4)) {
                assert_eq!(&m.payload[..], &row[3][..]);
                assert_eq!(m.from.is_none(), row[2].is_empty());
                let id = std::str::from_utf8(&row[0])
                    .ok()
                    .and_then(|s| s.parse().ok());
                assert_eq!(Some(m.msg_id), id);
            }
        }
        Err(_) => assert!(!fields.is_empty(), "an empty reply is no messages"),
    }
});
