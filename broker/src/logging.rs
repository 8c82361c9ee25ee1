//! The broker's logs: the `[log]` config section ([`LogConfig`]), the subscriber the `broker`
//! binary installs ([`subscriber`]: text or JSON lines on stdout), its filter, and the shared
//! log lines several parts write the same way ([`session_end`], [`refusals`]).
//!
//! The filter is `RUST_LOG` when set and not empty, else the configured `[log] filter`, else
//! `info` -- with caps that hold whatever the filter says.
//!
//! With `[log] format = "json"` every line is one JSON object with these stable fields:
//! `timestamp` (RFC 3339, UTC), `level` (`ERROR`..`TRACE`), `target` (the Rust module path),
//! `message`, and the event's own fields at the top level (`terminal`, `transport`, `peer`,
//! `reason`, ...). docs/operations.md lists the fields of the lines an operator looks for.
//!
//! The caps keep third-party crates from printing what the broker never logs itself: at trace
//! level `tungstenite` prints every WebSocket frame and message it reads or writes, which holds
//! app tokens (the app's `auth` message) and payloads. So it is capped at `debug` (handshake
//! results and close frames only). A cap only ever lowers a crate's level: under a filter that
//! shows nothing below `debug` (`info`, `warn`, ...) it is left out, since adding
//! `tungstenite=debug` there would print a debug line for every WebSocket handshake while the
//! rest of the broker is quiet. The broker's own logs carry lengths and ids, never payload
//! bytes, tokens or keys; `tests/log_redaction.rs` runs the binary at `RUST_LOG=trace` and
//! checks its output for them.

pub mod refusals;
pub mod session_end;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// `[log]`: the log filter and format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter (RUST_LOG syntax); the RUST_LOG variable wins when set and not empty.
    pub filter: String,
    /// `text` (human-readable lines) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (see module docs for the fields).
    Json,
}

/// The subscriber for `config` writing to stdout: `rust_log` is the `RUST_LOG` value, if set;
/// `ansi` whether stdout is a terminal (text format only).
pub fn subscriber(
    config: &LogConfig,
    rust_log: Option<&str>,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let filter = filter(rust_log, &config.filter);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Directives added after the user's filter; each replaces any directive for the same target.
pub const CAPS: &[&str] = &["tungstenite=debug"];

/// The filter from `rust_log` (the `RUST_LOG` value, if set, not empty and valid), else
/// `configured`, else `info`, with [`CAPS`] applied when it shows anything at `trace` level
/// (the caps are all `debug`, so under a quieter filter they could only raise a crate's level).
pub fn filter(rust_log: Option<&str>, configured: &str) -> EnvFilter {
    let base = rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(configured).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // `None`: the filter cannot tell (field filters), so the caps apply.
    if base
        .max_level_hint()
        .is_some_and(|most| most <= LevelFilter::DEBUG)
    {
        return base;
    }
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

    /// Whether `filter` lets a `tungstenite` event at `level` through (the level must be a
    /// constant in `enabled!`, hence the match).
    fn shows_tungstenite(filter: EnvFilter, level: tracing::Level) -> bool {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || match level {
            Level::TRACE => tracing::enabled!(target: "tungstenite", Level::TRACE),
            Level::DEBUG => tracing::enabled!(target: "tungstenite", Level::DEBUG),
            Level::INFO => tracing::enabled!(target: "tungstenite", Level::INFO),
            Level::WARN => tracing::enabled!(target: "tungstenite", Level::WARN),
            _ => tracing::enabled!(target: "tungstenite", Level::ERROR),
        })
    }

    #[test]
    fn a_cap_never_raises_a_crate_above_the_filter() {
        use tracing::Level;
        // A quiet filter keeps tungstenite quiet: no debug line per WebSocket handshake.
        for quiet in ["warn", "info", "error"] {
            assert!(
                !shows_tungstenite(filter(None, quiet), Level::DEBUG),
                "{quiet}"
            );
            assert!(
                !shows_tungstenite(filter(Some(quiet), "trace"), Level::DEBUG),
                "{quiet}"
            );
        }
        assert!(shows_tungstenite(filter(None, "info"), Level::INFO));
        // At debug it shows debug, and at trace it is held at debug.
        assert!(shows_tungstenite(filter(None, "debug"), Level::DEBUG));
        assert!(shows_tungstenite(
            filter(Some("trace"), "info"),
            Level::DEBUG
        ));
        assert!(!shows_tungstenite(
            filter(Some("trace"), "info"),
            Level::TRACE
        ));
        assert!(!shows_tungstenite(
            filter(Some("tungstenite=trace"), "info"),
            Level::TRACE
        ));
    }

    #[test]
    fn rust_log_wins_then_config_then_info() {
        let directives = |f: EnvFilter| -> Vec<String> {
            let mut d: Vec<String> = f.to_string().split(',').map(str::to_owned).collect();
            d.sort();
            d
        };
        assert_eq!(directives(filter(Some("warn"), "debug")), ["warn"]);
        assert_eq!(directives(filter(None, "debug")), ["debug"]);
        // Set but empty is not set.
        assert_eq!(directives(filter(Some(""), "warn")), ["warn"]);
        assert_eq!(directives(filter(Some("  "), "warn")), ["warn"]);
        assert_eq!(
            directives(filter(Some("=bad=="), "not a filter ==")),
            ["info"]
        );
        assert_eq!(
            directives(filter(Some("trace"), "info")),
            ["trace", "tungstenite=debug"]
        );
    }
}
