//! The web console an operator opens in a browser: one page served by the broker itself at
//! `/console`, with its script at `/console/app.js`, no external assets (no CDN, no web
//! fonts: it works on a machine without internet) and no build step.
//!
//! The page is static and holds no data. It asks for the API token on a login form, keeps it
//! in the tab's `sessionStorage` (never in a URL or a cookie) and calls the HTTP API with it
//! as a bearer token, like any other API client: `GET /v1/console/events` (this module: a
//! server-sent event stream of the router's live events as they happen, sessions coming online
//! and going offline, refused logins with their reason and deliveries, fed by
//! [`crate::router::live`], plus the figures the charts draw; see [`events`]), `GET /v1/console/nodes` (the node table, see
//! [`nodes`]), and the documented `/v1` endpoints for a
//! terminal's page (status, stored messages, bindings) and the push, command and bind forms.
//!
//! Server-rendered pages would need the token in a cookie; one small hand-written script keeps
//! the token out of every request the browser makes on its own. The page and the event stream
//! are served only when `[console] enabled = true` (the default); `crate::api` mounts
//! [`page_routes`] without and [`data_routes`] behind the bearer token.

pub mod events;
pub mod nodes;

use std::convert::Infallible;
use std::time::Duration;

use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use std::collections::BTreeSet;

use tokio::sync::broadcast;

use crate::router::Router;
use crate::router::live::{LiveEvent, SessionView};
use crate::router::now_ms;
use events::Event;

/// The page.
const PAGE: &str = include_str!("page.html");
/// The page's script.
const SCRIPT: &str = include_str!("app.js");

/// Path of the page.
pub const PAGE_PATH: &str = "/console";
/// Path of the page's script.
pub const SCRIPT_PATH: &str = "/console/app.js";
/// Path of the event stream (bearer token).
pub const EVENTS_PATH: &str = "/v1/console/events";
/// Path of the node table (bearer token).
pub const NODES_PATH: &str = "/v1/console/nodes";

/// How often the event stream sends the chart figures (`stats`).
pub const STATS_EVERY: Duration = Duration::from_millis(500);

/// Only same-origin scripts, styles and connections: nothing is loaded from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `[console]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the web console (`/console` and `/v1/console/events`).
    pub enabled: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { enabled: true }
    }
}

/// What the console's handlers use.
#[derive(Clone)]
pub struct ConsoleState {
    /// The router (sessions and metrics).
    pub router: Router,
    /// Cancelled at shutdown: open event streams end, so the API listener can drain.
    pub shutdown: CancellationToken,
    /// What the page calls this node: [`STANDALONE`] or [`CLUSTER_NODE`].
    pub node: &'static str,
    /// Cluster mode: the discovery view the node table lists (`None`: standalone).
    pub cluster_nodes: Option<nodes::ClusterNodes>,
}

/// The node label of a standalone broker.
pub const STANDALONE: &str = "standalone";
/// The node label of a cluster node: the console shows this node's sessions only.
pub const CLUSTER_NODE: &str = "cluster node (this node's sessions only)";

/// The page and its script (no token: they hold no data).
pub fn page_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(PAGE_PATH, get(page))
        .route(SCRIPT_PATH, get(script))
}

/// The event stream (to be mounted behind the bearer token).
pub fn data_routes<S: Clone + Send + Sync + 'static>(state: ConsoleState) -> axum::Router<S> {
    axum::Router::new()
        .route(EVENTS_PATH, get(stream))
        .route(NODES_PATH, get(node_table))
        .with_state(state)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    static_asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn node_table(
    axum::extract::State(state): axum::extract::State<ConsoleState>,
) -> axum::Json<nodes::NodeTable> {
    let c = state.router.online_counts();
    let sessions = (c.device_ws_sessions + c.udp_sessions + c.app_ws_sessions) as usize;
    axum::Json(match &state.cluster_nodes {
        None => nodes::standalone(sessions),
        Some(cluster) => nodes::rows(&cluster.view.borrow(), &cluster.me, sessions),
    })
}

/// Every session live now, as the console lists them.
pub fn sessions(router: &Router) -> BTreeSet<SessionView> {
    let mut sessions = BTreeSet::new();
    for address in router.online_terminals() {
        for s in router.status(address) {
            sessions.insert(SessionView::new(address, s.transport, s.peer, s.since_ms));
        }
    }
    sessions
}

/// An SSE event carrying `event`.
fn sse(event: &Event) -> Result<SseEvent, Infallible> {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "null".into());
    Ok(SseEvent::default().event(event.name()).data(data))
}

/// What the stream loop carries from one step to the next.
struct StreamState {
    state: ConsoleState,
    live: broadcast::Receiver<LiveEvent>,
    stats: tokio::time::Interval,
}

impl StreamState {
    /// The next events to send: a live event as soon as the router publishes one, the lost
    /// count when this stream fell behind, the chart figures every [`STATS_EVERY`]; `None` at
    /// shutdown or when the router is gone.
    async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            _ = self.state.shutdown.cancelled() => None,
            received = self.live.recv() => match received {
                Ok(event) => Some(Event::Live(event)),
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    self.state.router.metrics().console_events_lost(count);
                    Some(Event::Lagged { count })
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = self.stats.tick() => {
                let router = &self.state.router;
                let c = router.online_counts();
                let live = (c.device_ws_sessions + c.udp_sessions + c.app_ws_sessions) as usize;
                Some(events::stats(live, &router.metrics().console_figures().sums, now_ms()))
            }
        }
    }
}

async fn stream(
    axum::extract::State(state): axum::extract::State<ConsoleState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let hello = SseEvent::default().event("hello").data(
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "node": state.node,
        })
        .to_string(),
    );
    // Subscribe before taking the snapshot: a session that logs in between is announced
    // twice (the page keys sessions, so it is listed once), never missed.
    let live = state.router.live().subscribe();
    let opening: Vec<Result<SseEvent, Infallible>> = std::iter::once(Ok(hello))
        .chain(events::snapshot(sessions(&state.router)).iter().map(sse))
        .collect();
    let looping = StreamState {
        state,
        live,
        stats: tokio::time::interval(STATS_EVERY),
    };
    let following = futures_util::stream::unfold(looping, |mut looping| async move {
        let event = looping.next().await?;
        Some((sse(&event), looping))
    });
    use futures_util::StreamExt;
    Sse::new(futures_util::stream::iter(opening).chain(following)).keep_alive(KeepAlive::default())
}
