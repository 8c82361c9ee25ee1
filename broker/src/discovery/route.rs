//! `GET /v1/nodes/lookup?kind=device&id=42`: the comet endpoints a terminal should dial, primary
//! first, from the live view ([`super::lookup`]).
//!
//! No authentication: devices call it before they have any credentials, and it returns only the
//! public endpoints comets advertise to terminals anyway (never msgbus or link addresses, never
//! load). Responses:
//! - `200 {"nodes":[{"id":"c1","udp":"h:8083","ws":"ws://h:8081/","app_ws":"ws://h:8082/"}],"stale":false}`
//!   (`stale: true` when ZooKeeper is unreachable and the last known view answered);
//! - `400 {"error":"bad_request","message":"..."}` for a missing or bad `kind`/`id`;
//! - `503 {"error":"no_nodes","message":"..."}` when no live comet serves that kind.
//!
//! Wiring: `api_router.merge(discovery::route::lookup_router(discovery.view(), lookup_max,
//! profile))`.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{NodeView, lookup};
use crate::terminal::{Address, IdProfile, Kind, parse_id};

/// The route's path.
pub const LOOKUP_PATH: &str = "/v1/nodes/lookup";

/// One entry of the answer: a comet's public endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupNode {
    /// Node id.
    pub id: String,
    /// Device UDP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
    /// Device WebSocket URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    /// App WebSocket URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_ws: Option<String>,
}

/// The 200 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupResponse {
    /// Comets, primary first, then fallbacks.
    pub nodes: Vec<LookupNode>,
    /// Whether the view is a last known one (ZooKeeper unreachable).
    pub stale: bool,
}

/// The query string.
#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    /// `device` or `phone`.
    pub kind: Option<String>,
    /// The terminal id, unsigned or signed 32-bit.
    pub id: Option<String>,
}

#[derive(Clone)]
struct LookupState {
    view: watch::Receiver<NodeView>,
    max: usize,
    profile: IdProfile,
}

/// A router fragment serving [`LOOKUP_PATH`] from `view`, answering at most `max` nodes; ids
/// are read by `profile`'s rules.
pub fn lookup_router(view: watch::Receiver<NodeView>, max: usize, profile: IdProfile) -> Router {
    Router::new()
        .route(LOOKUP_PATH, get(lookup_handler))
        .with_state(LookupState {
            view,
            max: max.max(1),
            profile,
        })
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// The pure part of the handler: query + view -> status and body.
pub fn answer(
    view: &NodeView,
    q: &LookupQuery,
    max: usize,
    profile: IdProfile,
) -> Result<LookupResponse, (StatusCode, &'static str, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, "bad_request", m);
    let kind = match q.kind.as_deref() {
        Some("device") => Kind::Device,
        Some("phone") => Kind::Phone,
        Some(other) => return Err(bad(format!("kind `{other}`: expected device or phone"))),
        None => return Err(bad("missing query parameter `kind`".into())),
    };
    let id = match q.id.as_deref() {
        Some(s) => parse_id(profile, s)
            .ok_or_else(|| bad(format!("id `{s}`: not a 32-bit id of profile {profile}")))?,
        None => return Err(bad("missing query parameter `id`".into())),
    };
    let terminal = Address { kind, id };
    let nodes: Vec<LookupNode> = lookup::lookup(view, terminal, max)
        .into_iter()
        .map(|n| LookupNode {
            id: n.id.clone(),
            udp: n.addr.udp.clone(),
            ws: n.addr.ws.clone(),
            app_ws: n.addr.app_ws.clone(),
        })
        .collect();
    if nodes.is_empty() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "no_nodes",
            format!("no live comet serves {}", kind.as_str()),
        ));
    }
    Ok(LookupResponse {
        nodes,
        stale: view.is_stale(),
    })
}

async fn lookup_handler(State(s): State<LookupState>, Query(q): Query<LookupQuery>) -> Response {
    let view = s.view.borrow().clone();
    match answer(&view, &q, s.max, s.profile) {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err((status, code, message)) => error(status, code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{NodeAddr, NodeInfo, Role};

    fn view() -> NodeView {
        let comet = |id: &str| NodeInfo {
            id: id.into(),
            role: Role::Comet,
            addr: NodeAddr {
                udp: Some(format!("{id}:8083")),
                ws: Some(format!("ws://{id}:8081/")),
                app_ws: None,
                link: Some(format!("{id}:7000")),
            },
            load: 0,
        };
        NodeView {
            nodes: vec![comet("a"), comet("b"), comet("c")],
            healthy: true,
        }
    }

    const PLUG: IdProfile = IdProfile::Plug;

    fn q(kind: Option<&str>, id: Option<&str>) -> LookupQuery {
        LookupQuery {
            kind: kind.map(Into::into),
            id: id.map(Into::into),
        }
    }

    #[test]
    fn answers_primary_first_with_public_endpoints_only() {
        let v = view();
        let r = answer(&v, &q(Some("device"), Some("42")), 2, PLUG).unwrap();
        let want: Vec<&str> = lookup::lookup(&v, Address::device(42), 2)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        let got: Vec<&str> = r.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(got, want);
        assert!(!r.stale);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("7000"), "link address leaked: {json}");
        assert!(json.contains(r#""udp":""#), "{json}");
        // In the signed profile, signed and unsigned spellings of one id agree; the plug
        // profile writes ids unsigned only.
        assert_eq!(
            answer(&v, &q(Some("device"), Some("-7")), 3, IdProfile::Signed).unwrap(),
            answer(
                &v,
                &q(Some("device"), Some("4294967289")),
                3,
                IdProfile::Signed
            )
            .unwrap()
        );
        let e = answer(&v, &q(Some("device"), Some("-7")), 3, PLUG).unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bad_queries_and_empty_views_are_errors() {
        let v = view();
        for (kind, id) in [
            (None, Some("1")),
            (Some("device"), None),
            (Some("toaster"), Some("1")),
            (Some("device"), Some("x")),
        ] {
            let e = answer(&v, &q(kind, id), 3, PLUG).unwrap_err();
            assert_eq!(e.0, StatusCode::BAD_REQUEST, "{kind:?} {id:?}");
        }
        // No comet serves phones here.
        let e = answer(&v, &q(Some("phone"), Some("1")), 3, PLUG).unwrap_err();
        assert_eq!((e.0, e.1), (StatusCode::SERVICE_UNAVAILABLE, "no_nodes"));
        let mut stale = v.clone();
        stale.healthy = false;
        assert!(
            answer(&stale, &q(Some("device"), Some("1")), 3, PLUG)
                .unwrap()
                .stale
        );
    }
}
