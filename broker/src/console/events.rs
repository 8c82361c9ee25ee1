//! The console's live events, computed by comparing two readings of the broker's own state
//! (sans-IO: [`Tracker::step`] takes the readings and returns the events; the SSE loop in
//! `super` takes the readings on a timer).
//!
//! * `online` / `offline`: a session appeared or went away (per terminal and transport);
//! * `refused`: logins refused since the last reading, per transport and reason (from
//!   `broker_login_failures_total`);
//! * `stats`: the counters the charts draw (sessions now, connections, logins, refusals,
//!   deliveries and commands so far); the page turns successive readings into rates.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::Serialize;

use crate::router::Transport;
use crate::terminal::Address;

/// One live session as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OnlineSession {
    /// `device:42`, `phone:5`.
    pub terminal: String,
    /// `device` or `phone`.
    pub kind: &'static str,
    /// The terminal's id.
    pub id: String,
    /// `udp`, `device_ws` or `app_ws`.
    pub transport: &'static str,
    /// The peer's address.
    pub peer: String,
    /// Login time, Unix ms.
    pub since_ms: u64,
}

impl OnlineSession {
    /// The session of `address` over `transport` from `peer` since `since_ms`.
    pub fn new(address: Address, transport: Transport, peer: SocketAddr, since_ms: u64) -> Self {
        OnlineSession {
            terminal: address.to_string(),
            kind: address.kind.as_str(),
            id: address.id.to_string(),
            transport: transport.as_str(),
            peer: peer.to_string(),
            since_ms,
        }
    }
}

/// One reading of the broker's state.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Every live session.
    pub sessions: BTreeSet<OnlineSession>,
    /// Per-family sums of the counters the charts use (`Metrics::family_sums`).
    pub sums: BTreeMap<String, f64>,
    /// `broker_login_failures_total` per (transport, reason).
    pub refusals: BTreeMap<(String, String), f64>,
}

/// A console event (the SSE `event` name is [`Event::name`], the data its JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A session appeared.
    Online(OnlineSession),
    /// A session went away.
    Offline(OnlineSession),
    /// Logins refused since the last reading.
    Refused {
        /// The transport.
        transport: String,
        /// The refusal reason (metric label).
        reason: String,
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
            Event::Online(_) => "online",
            Event::Offline(_) => "offline",
            Event::Refused { .. } => "refused",
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

/// Remembers the previous reading (the first reading is compared with an empty one, so every
/// session then online is announced).
#[derive(Debug, Default)]
pub struct Tracker {
    last: Option<Reading>,
}

impl Tracker {
    /// The events from the last reading to `now`, given the time `t_ms` (Unix ms).
    pub fn step(&mut self, now: Reading, t_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let empty = Reading::default();
        let last = self.last.as_ref().unwrap_or(&empty);
        for s in now.sessions.difference(&last.sessions) {
            events.push(Event::Online(s.clone()));
        }
        for s in last.sessions.difference(&now.sessions) {
            events.push(Event::Offline(s.clone()));
        }
        if self.last.is_some() {
            for ((transport, reason), n) in &now.refusals {
                let before = last
                    .refusals
                    .get(&(transport.clone(), reason.clone()))
                    .copied()
                    .unwrap_or(0.0);
                if *n > before {
                    events.push(Event::Refused {
                        transport: transport.clone(),
                        reason: reason.clone(),
                        count: (*n - before) as u64,
                    });
                }
            }
        }
        let mut stats: BTreeMap<String, f64> = STATS
            .iter()
            .map(|(family, short)| {
                (
                    short.to_string(),
                    now.sums.get(*family).copied().unwrap_or(0.0),
                )
            })
            .collect();
        stats.insert("sessions".into(), now.sessions.len() as f64);
        stats.insert("t_ms".into(), t_ms as f64);
        events.push(Event::Stats(stats));
        self.last = Some(now);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u32) -> OnlineSession {
        OnlineSession::new(
            Address::device(id),
            Transport::Udp,
            "127.0.0.1:9".parse().unwrap(),
            1,
        )
    }

    #[test]
    fn announces_changes_refusals_and_stats() {
        let mut t = Tracker::default();
        let first = Reading {
            sessions: [session(1)].into(),
            refusals: [(("udp".into(), "auth_failed".into()), 2.0)].into(),
            ..Reading::default()
        };
        let ev = t.step(first, 10);
        assert_eq!(ev[0], Event::Online(session(1)));
        assert_eq!(ev.len(), 2, "online and stats only: {ev:?}");
        let second = Reading {
            sessions: [session(2)].into(),
            refusals: [(("udp".into(), "auth_failed".into()), 5.0)].into(),
            sums: [("broker_logins_total".to_string(), 7.0)].into(),
        };
        let ev = t.step(second, 20);
        assert_eq!(ev[0], Event::Online(session(2)));
        assert_eq!(ev[1], Event::Offline(session(1)));
        assert_eq!(
            ev[2],
            Event::Refused {
                transport: "udp".into(),
                reason: "auth_failed".into(),
                count: 3
            }
        );
        let Event::Stats(stats) = &ev[3] else {
            panic!("{ev:?}")
        };
        assert_eq!(stats["logins_total"], 7.0);
        assert_eq!(stats["sessions"], 1.0);
        assert_eq!(ev[3].name(), "stats");
    }
}
