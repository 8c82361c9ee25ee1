//! Backend push messages from RabbitMQ (`decode_push`) on arbitrary bytes: no panic; an accepted
//! message has exactly the documented shape (a list target is never empty), and a message that
//! is refused is refused with a typed error (the consumer dead-letters it).
#![no_main]

use broker::router::Target;
use broker::uploads::{PushDecodeError, decode_push};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_push(data) {
        Ok(push) => {
            if let Target::List(list) = &push.target {
                assert!(!list.is_empty(), "an empty list target was accepted");
            }
            // `ttl_secs` is carried as given; the router checks its range.
            if let Some(ttl) = push.ttl {
                assert_eq!(ttl.subsec_nanos(), 0);
            }
        }
        Err(PushDecodeError::Json(_) | PushDecodeError::Base64 | PushDecodeError::Invalid(_)) => {}
    }
});
