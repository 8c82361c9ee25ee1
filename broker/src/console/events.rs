//! The console's event stream, as data (sans-IO: the SSE handler in `super` feeds it the
//! router's live events, a snapshot of the sessions and the figures it reads on a timer, and
//! sends what comes out).
//!
//! * `online` / `offline` / `refused` / `delivered`: the router's live events
//!   ([`crate::router::live`]) as they happen, each the event's JSON; a stream starts with one
//!   `online` per session already live ([`snapshot`]);
//! * `lagged`: the stream fell behind and lost `count` events (also counted in
//!   `broker_console_events_lost_total`);
//! * `stats`: the counters the charts draw (sessions now, connections, logins, refusals,
//!   deliveries and commands so far), once per tick; the page turns successive readings into
//!   rates.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::router::live::{LiveEvent, SessionView};

/// One console event: the SSE `event` name is [`Event::name`], the data its JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A router event, as it happened.
    Live(LiveEvent),
    /// The stream lost `count` events (it fell more than the feed's capacity behind).
    Lagged {
        /// How many.
        count: u64,
    },
    /// The chart figures.
    Stats(BTreeMap<String, f64>),
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Live(e) => e.name(),
            Event::Lagged { .. } => "lagged",
            Event::Stats(_) => "stats",
        }
    }
}

/// The metric families whose sums go into `stats` (short names in the event).
pub const STATS: &[(&str, &str)] = &[
    ("broker_connections_total", "connections_total"),
    ("broker_logins_total", "logins_total"),
    ("broker_login_failures_total", "refused_total"),
    ("broker_deliveries_total", "deliveries_total"),
    ("broker_commands_total", "commands_total"),
];

/// The events that open a stream: one `online` per session live now.
pub fn snapshot(sessions: BTreeSet<SessionView>) -> Vec<Event> {
    sessions
        .into_iter()
        .map(|s| Event::Live(LiveEvent::Online(s)))
        .collect()
}

/// The `stats` event for `sessions` live sessions, the family sums `sums`
/// (`Metrics::console_figures`) and the time `t_ms` (Unix ms).
pub fn stats(sessions: usize, sums: &BTreeMap<String, f64>, t_ms: u64) -> Event {
    let mut stats: BTreeMap<String, f64> = STATS
        .iter()
        .map(|(family, short)| (short.to_string(), sums.get(*family).copied().unwrap_or(0.0)))
        .collect();
    stats.insert("sessions".into(), sessions as f64);
    stats.insert("t_ms".into(), t_ms as f64);
    Event::Stats(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Transport;
    use crate::terminal::Address;

    fn view(id: u32) -> SessionView {
        SessionView::new(
            Address::device(id),
            Transport::Udp,
            "127.0.0.1:9".parse().unwrap(),
            1,
        )
    }

    #[test]
    fn a_stream_opens_with_every_live_session_and_names_each_event() {
        let ev = snapshot([view(2), view(1)].into());
        assert_eq!(
            ev,
            [
                Event::Live(LiveEvent::Online(view(1))),
                Event::Live(LiveEvent::Online(view(2)))
            ]
        );
        assert_eq!(ev[0].name(), "online");
        assert_eq!(Event::Lagged { count: 3 }.name(), "lagged");
        assert_eq!(
            serde_json::to_value(Event::Lagged { count: 3 }).unwrap(),
            serde_json::json!({ "count": 3 })
        );
    }

    #[test]
    fn stats_carry_the_chart_families_under_short_names() {
        let sums = [("broker_logins_total".to_string(), 7.0)].into();
        let ev = stats(1, &sums, 20);
        let Event::Stats(s) = &ev else {
            panic!("{ev:?}")
        };
        assert_eq!(s["logins_total"], 7.0);
        assert_eq!(s["refused_total"], 0.0);
        assert_eq!(s["sessions"], 1.0);
        assert_eq!(s["t_ms"], 20.0);
        assert_eq!(ev.name(), "stats");
    }
}
