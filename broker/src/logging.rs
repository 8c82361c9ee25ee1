//! The log filter of the `broker` binary: `RUST_LOG` when set, else the configured `[log]`
//! filter, else `info` -- with caps that hold whatever the filter says.
//!
//! The caps keep third-party crates from printing what the broker never logs itself: at trace
//! level `tungstenite` prints every WebSocket frame and message it reads or writes, which holds
//! app tokens (the app's `auth` message) and payloads. So it is capped at `debug` (handshake
//! results and close frames only). The broker's own logs carry lengths and ids, never payload
//! bytes, tokens or keys; `tests/log_redaction.rs` runs the binary at `RUST_LOG=trace` and
//! checks its output for them.

use tracing_subscriber::EnvFilter;

/// Directives added after the user's filter; each replaces any directive for the same target.
pub const CAPS: &[&str] = &["tungstenite=debug"];

/// The filter from `rust_log` (the `RUST_LOG` value, if set and valid), else `configured`, else
/// `info`, with [`CAPS`] applied.
pub fn filter(rust_log: Option<&str>, configured: &str) -> EnvFilter {
    let base = rust_log
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(configured).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    CAPS.iter().fold(base, |f, cap| match cap.parse() {
        Ok(directive) => f.add_directive(directive),
        Err(_) => unreachable!("CAPS are valid directives"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_over_trace_and_explicit_targets() {
        for rust_log in ["trace", "tungstenite=trace", "trace,tungstenite=trace"] {
            let shown = filter(Some(rust_log), "info").to_string();
            assert!(shown.contains("tungstenite=debug"), "{rust_log}: {shown}");
            assert!(!shown.contains("tungstenite=trace"), "{rust_log}: {shown}");
        }
    }

    #[test]
    fn rust_log_wins_then_config_then_info() {
        let directives = |f: EnvFilter| -> Vec<String> {
            let mut d: Vec<String> = f.to_string().split(',').map(str::to_owned).collect();
            d.sort();
            d
        };
        assert_eq!(
            directives(filter(Some("warn"), "debug")),
            ["tungstenite=debug", "warn"]
        );
        assert_eq!(
            directives(filter(None, "debug")),
            ["debug", "tungstenite=debug"]
        );
        assert_eq!(
            directives(filter(Some("=bad=="), "not a filter ==")),
            ["info", "tungstenite=debug"]
        );
    }
}
