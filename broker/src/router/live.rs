//! The router's live feed: what happens to sessions as it happens, for watchers such as the
//! web console's event stream (`crate::console`).
//!
//! The router publishes a [`LiveEvent`] when a session logs in ([`LiveEvent::Online`]) or
//! ends ([`LiveEvent::Offline`]), and when it queues a message to a live session
//! ([`LiveEvent::Delivered`]); the comet publishes refused logins ([`LiveEvent::Refused`])
//! through [`LiveFeed::refused`]. Publishing costs one atomic load while nobody watches: an
//! event is built only when a watcher is subscribed. A watcher that falls more than
//! [`CAPACITY`] events behind loses the oldest ones; it learns how many from its receiver
//! (`RecvError::Lagged`) and counts them.

use std::net::SocketAddr;

use serde::Serialize;
use tokio::sync::broadcast;

use super::session::Transport;
use crate::terminal::Address;

/// Events a watcher may fall behind by before it loses the oldest.
pub const CAPACITY: usize = 1024;

/// One live session as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SessionView {
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

impl SessionView {
    /// The session of `address` over `transport` from `peer` since `since_ms`.
    pub fn new(address: Address, transport: Transport, peer: SocketAddr, since_ms: u64) -> Self {
        SessionView {
            terminal: address.to_string(),
            kind: address.kind.as_str(),
            id: address.id.to_string(),
            transport: transport.as_str(),
            peer: peer.to_string(),
            since_ms,
        }
    }
}

/// Something that happened to a session.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LiveEvent {
    /// A session logged in.
    Online(SessionView),
    /// A session ended.
    Offline(SessionView),
    /// A login was refused.
    Refused {
        /// `udp`, `device_ws` or `app_ws`.
        transport: &'static str,
        /// The refusal reason (the `broker_login_failures_total` label, e.g. `auth_failed`).
        reason: &'static str,
        /// The peer's address.
        peer: String,
        /// The terminal the login named, when it got that far.
        terminal: Option<String>,
    },
    /// A message was queued to a live session.
    Delivered {
        /// The receiving terminal.
        terminal: String,
        /// The receiving session's transport.
        transport: &'static str,
        /// The message id.
        msg_id: u64,
        /// The sending terminal; `None` for a push from the backend.
        from: Option<String>,
    },
}

impl LiveEvent {
    /// A short name for the event (the console's SSE event name).
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Online(_) => "online",
            LiveEvent::Offline(_) => "offline",
            LiveEvent::Refused { .. } => "refused",
            LiveEvent::Delivered { .. } => "delivered",
        }
    }
}

/// The sending side of the feed (cheap to clone; every clone feeds the same watchers).
#[derive(Clone, Debug)]
pub struct LiveFeed {
    tx: broadcast::Sender<LiveEvent>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl LiveFeed {
    /// A new watcher: it receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }

    /// Publishes the event `make` builds, if anyone watches.
    pub fn publish(&self, make: impl FnOnce() -> LiveEvent) {
        if self.tx.receiver_count() > 0 {
            // An error only means the last watcher left meanwhile.
            let _ = self.tx.send(make());
        }
    }

    /// A login on `transport` from `peer` (naming `terminal`, if it got that far) was refused
    /// for `reason`.
    pub fn refused(
        &self,
        transport: Transport,
        peer: SocketAddr,
        terminal: Option<Address>,
        reason: &'static str,
    ) {
        self.publish(|| LiveEvent::Refused {
            transport: transport.as_str(),
            reason,
            peer: peer.to_string(),
            terminal: terminal.map(|a| a.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u32) -> SessionView {
        SessionView::new(
            Address::device(id),
            Transport::Udp,
            "127.0.0.1:9".parse().unwrap(),
            1,
        )
    }

    #[test]
    fn watchers_get_events_published_after_they_subscribe_and_nothing_is_built_unwatched() {
        let feed = LiveFeed::default();
        feed.publish(|| panic!("built with nobody watching"));
        let mut rx = feed.subscribe();
        feed.publish(|| LiveEvent::Online(view(1)));
        feed.refused(
            Transport::Udp,
            "127.0.0.1:9".parse().unwrap(),
            Some(Address::device(2)),
            "auth_failed",
        );
        assert_eq!(rx.try_recv().unwrap(), LiveEvent::Online(view(1)));
        let refused = rx.try_recv().unwrap();
        assert_eq!(refused.name(), "refused");
        assert_eq!(
            serde_json::to_value(&refused).unwrap(),
            serde_json::json!({
                "transport": "udp", "reason": "auth_failed",
                "peer": "127.0.0.1:9", "terminal": "device:2"
            })
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_watcher_that_falls_behind_learns_how_many_it_lost() {
        let feed = LiveFeed::default();
        let mut rx = feed.subscribe();
        for i in 0..CAPACITY as u32 + 5 {
            feed.publish(|| LiveEvent::Online(view(i)));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.try_recv().unwrap(), LiveEvent::Online(view(5)));
    }
}
