//! The mapping of session ends to protocol codes and WebSocket close codes.
//!
//! WebSocket close codes: a session ended for protocol code `c` closes with `4000 + c` (private
//! range 4000..=4999), e.g. 4064 for `REPLACED`, 4033 for `SERVER_BUSY`; a normal end closes with
//! 1000 and an oversized message (`TOO_LARGE`) with 1009 (RFC 6455 "message too big").

use shared_protocol::codes::Code;

use crate::router::KickReason;

/// The protocol code a router kick is reported with (Kick frame / JSON `kick`).
pub fn kick_code(reason: KickReason) -> Code {
    match reason {
        KickReason::Replaced => Code::REPLACED,
        KickReason::QueueFull => Code::QUEUE_FULL,
        KickReason::Shutdown => Code::SHUTDOWN,
        KickReason::Admin => Code::ADMIN_KICK,
    }
}

/// WebSocket close code for a session that ends with protocol `code` (see module docs).
pub fn close_code(code: Code) -> u16 {
    if code == Code::NORMAL {
        1000
    } else if code == Code::TOO_LARGE {
        1009
    } else {
        4000u16.saturating_add(code.0.min(999))
    }
}

/// The protocol code a WebSocket close code stands for: the inverse of [`close_code`] (any
/// close code outside its range reads as `INTERNAL`).
pub fn code_of_close(close: u16) -> Code {
    match close {
        1000 => Code::NORMAL,
        1009 => Code::TOO_LARGE,
        4000..=4999 => Code(close - 4000),
        _ => Code::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_read_back() {
        for code in [
            Code::NORMAL,
            Code::TOO_LARGE,
            Code::SHUTDOWN,
            Code::HEARTBEAT_TIMEOUT,
        ] {
            assert_eq!(code_of_close(close_code(code)), code);
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(Code::NORMAL), 1000);
        assert_eq!(close_code(Code::REPLACED), 4064);
        assert_eq!(close_code(Code::TOO_LARGE), 1009);
        assert_eq!(close_code(kick_code(KickReason::Shutdown)), 4067);
        assert_eq!(close_code(Code(60000)), 4999);
    }
}
