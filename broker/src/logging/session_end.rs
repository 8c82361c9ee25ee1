//! The one session-end log line every transport writes (device WebSocket, device UDP, app
//! WebSocket), so that a log search for a terminal's disconnections works the same on all of
//! them:
//!
//! `INFO session ended terminal=<address> transport=<udp|device_ws|app_ws> reason=<NAME> closed_by=<broker|terminal>`
//!
//! `reason` is the protocol's name of the code (docs/protocol.md: `SHUTDOWN`,
//! `HEARTBEAT_TIMEOUT`, `REPLACED`, `NORMAL` for a device's Goodbye, ...), or
//! `CONNECTION_CLOSED` when the terminal's connection closed without any code. It is never a
//! Rust `Debug` text or a WebSocket close number.

use std::fmt::Display;

use shared_protocol::codes::Code;

/// The message text of the line (the `message` field in JSON logs).
pub const MESSAGE: &str = "session ended";

/// The `reason` of a connection that closed without a code.
pub const CONNECTION_CLOSED: &str = "CONNECTION_CLOSED";

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The broker ended it with this code (sent as a Kick or close code).
    Broker(Code),
    /// The terminal ended it with this code (a Goodbye: `NORMAL`).
    Terminal(Code),
    /// The connection closed (or failed) without a code.
    ConnectionClosed,
}

impl SessionEnd {
    /// The `reason` field: the code's protocol name, or [`CONNECTION_CLOSED`].
    pub fn reason(self) -> String {
        match self {
            SessionEnd::Broker(c) | SessionEnd::Terminal(c) => c.to_string(),
            SessionEnd::ConnectionClosed => CONNECTION_CLOSED.to_string(),
        }
    }

    /// The `closed_by` field: `broker` or `terminal`.
    pub fn closed_by(self) -> &'static str {
        match self {
            SessionEnd::Broker(_) => "broker",
            SessionEnd::Terminal(_) | SessionEnd::ConnectionClosed => "terminal",
        }
    }
}

/// Writes the session-end line (see module docs) at INFO.
pub fn session_ended(terminal: &dyn Display, transport: &'static str, end: SessionEnd) {
    tracing::info!(
        terminal = %terminal,
        transport,
        reason = %end.reason(),
        closed_by = end.closed_by(),
        "{MESSAGE}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_protocol_names() {
        assert_eq!(SessionEnd::Broker(Code::SHUTDOWN).reason(), "SHUTDOWN");
        assert_eq!(
            SessionEnd::Broker(Code::HEARTBEAT_TIMEOUT).reason(),
            "HEARTBEAT_TIMEOUT"
        );
        assert_eq!(SessionEnd::Terminal(Code::NORMAL).reason(), "NORMAL");
        assert_eq!(SessionEnd::ConnectionClosed.reason(), "CONNECTION_CLOSED");
        assert_eq!(SessionEnd::Broker(Code::SHUTDOWN).closed_by(), "broker");
        assert_eq!(SessionEnd::ConnectionClosed.closed_by(), "terminal");
    }
}
