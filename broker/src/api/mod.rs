//! The HTTP API (axum) for the app backend and operators: JSON under `/v1`, bearer-token auth on
//! everything except the health probes `/healthz` and `/readyz` (and, on cluster nodes, the
//! terminals' `/v1/nodes/lookup`, served by `crate::discovery::route`).
//!
//! Every route is declared once in [`routes`] (method, path, auth, handler); the axum router is
//! built from that table, and a test checks that the table and `docs/openapi.json` (served at
//! `/v1/openapi.json`) list exactly the same operations. Handlers live in `handlers` and talk
//! to the [`Router`] and its stores only, plus, in cluster mode, a [`ClusterApi`] for what
//! the local router cannot see: device commands to sessions on other nodes and the cluster-wide
//! online registry (implemented by `crate::cluster::commands`). [`listener`] serves the app,
//! plain or TLS, under the `[api]` connection, header, body and size limits. With
//! `[console] enabled`, [`app`] also mounts the web console (`crate::console`): its page
//! without, its event stream with the bearer token.

mod handlers;
pub mod listener;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use subtle::ConstantTimeEq;

use crate::router::{CommandError, CommandResult, Router};
use crate::secret::Secret;
use crate::store::StoreError;
use crate::terminal::Address;

/// The OpenAPI 3 document (docs/openapi.json), served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Why a command to a device on another node got no result.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCommandError {
    /// The executing node's answer (or `NotOnline` when no node holds the device, `Timeout`
    /// when no answer came in time).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The node holding the device cannot be reached over the links now.
    #[error("{0}")]
    Unreachable(String),
    /// The online registry could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the API asks the cluster in cluster mode (see module docs). The handlers try the local
/// router first and ask the cluster only for what it does not hold.
#[async_trait]
pub trait ClusterApi: Send + Sync + 'static {
    /// Sends a command to `device`, held by another node according to the online registry,
    /// and waits up to `timeout` for its answer.
    async fn command(
        &self,
        device: Address,
        name: String,
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<CommandResult, RemoteCommandError>;

    /// The nodes the cluster-wide online registry names for `terminal`, sorted.
    async fn nodes_of(&self, terminal: Address) -> Result<Vec<String>, StoreError>;

    /// How many terminals each node holds, from the cluster-wide online registry.
    async fn terminals_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError>;
}

/// The API's settings; the broker builds them from its configuration (`Config::api_settings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// How long a device command waits for its result unless the caller asks otherwise
    /// (`timeouts.command_ms`).
    pub command_default: Duration,
    /// The longest wait a caller may ask for (`timeouts.command_max_ms`).
    pub command_max: Duration,
    /// Whether the web console is served (`console.enabled`).
    pub console: bool,
}

/// Shared state of the handlers: one `Arc`, so the clone axum makes for every extractor and
/// middleware that takes the state is one reference count, not one per field (the shutdown
/// token's clone takes a lock).
#[derive(Clone)]
pub struct ApiState {
    shared: Arc<ApiShared>,
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.shared
    }
}

/// What [`ApiState`] shares.
#[derive(Clone)]
pub struct ApiShared {
    router: Router,
    api_token: Arc<Secret>,
    command_default: Duration,
    command_max: Duration,
    cluster: Option<Arc<dyn ClusterApi>>,
    console: bool,
    cluster_nodes: Option<crate::console::nodes::ClusterNodes>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl ApiState {
    /// State for `router`, authenticating with `api_token`.
    pub fn new(router: Router, api_token: Secret, settings: ApiSettings) -> ApiState {
        ApiState {
            shared: Arc::new(ApiShared {
                router,
                api_token: Arc::new(api_token),
                command_default: settings.command_default,
                command_max: settings.command_max,
                cluster: None,
                console: settings.console,
                cluster_nodes: None,
                shutdown: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// Long-lived responses (the console's event stream) end when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: tokio_util::sync::CancellationToken) -> ApiState {
        Arc::make_mut(&mut self.shared).shutdown = shutdown;
        self
    }

    /// Cluster mode: the console's node table lists the nodes of this discovery view.
    pub fn with_cluster_nodes(
        mut self,
        nodes: Option<crate::console::nodes::ClusterNodes>,
    ) -> ApiState {
        Arc::make_mut(&mut self.shared).cluster_nodes = nodes;
        self
    }

    /// Cluster mode: commands and online status also cover the other nodes through `cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<dyn ClusterApi>>) -> ApiState {
        Arc::make_mut(&mut self.shared).cluster = cluster;
        self
    }
}

/// One API operation.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path in axum/OpenAPI template form (`/v1/groups/{name}`).
    pub path: &'static str,
    /// Whether the bearer token is required.
    pub auth: bool,
    handler: MethodRouter<ApiState>,
}

fn r(method: Method, path: &'static str, auth: bool, handler: MethodRouter<ApiState>) -> Route {
    Route {
        method,
        path,
        auth,
        handler,
    }
}

/// The route table (single source of truth for the router and the OpenAPI check).
pub fn routes() -> Vec<Route> {
    use handlers as h;
    vec![
        r(Method::GET, "/healthz", false, get(h::healthz)),
        r(Method::GET, "/readyz", false, get(h::readyz)),
        r(Method::GET, "/metrics", true, get(h::metrics)),
        r(Method::GET, "/v1/openapi.json", true, get(h::openapi)),
        r(Method::GET, "/v1/online", true, get(h::online)),
        r(
            Method::GET,
            "/v1/terminals/{kind}/{id}",
            true,
            get(h::terminal_status),
        ),
        r(
            Method::GET,
            "/v1/terminals/{kind}/{id}/messages",
            true,
            get(h::stored_messages),
        ),
        r(Method::POST, "/v1/push", true, post(h::push)),
        r(
            Method::POST,
            "/v1/devices/{id}/commands",
            true,
            post(h::command),
        ),
        r(Method::GET, "/v1/uploads", true, get(h::uploads)),
        r(
            Method::GET,
            "/v1/phones/{id}/devices",
            true,
            get(h::devices_of),
        ),
        r(
            Method::GET,
            "/v1/devices/{id}/phones",
            true,
            get(h::phones_of),
        ),
        r(
            Method::PUT,
            "/v1/bindings/{phone}/{device}",
            true,
            put(h::bind),
        ),
        r(
            Method::DELETE,
            "/v1/bindings/{phone}/{device}",
            true,
            delete(h::unbind),
        ),
        r(Method::GET, "/v1/groups", true, get(h::list_groups)),
        r(Method::GET, "/v1/groups/{name}", true, get(h::get_group)),
        r(Method::PUT, "/v1/groups/{name}", true, put(h::set_group)),
        r(
            Method::PATCH,
            "/v1/groups/{name}",
            true,
            patch(h::update_group),
        ),
        r(
            Method::DELETE,
            "/v1/groups/{name}",
            true,
            delete(h::delete_group),
        ),
    ]
}

/// The axum application.
pub fn app(state: ApiState) -> axum::Router {
    let mut open = axum::Router::new();
    let mut authed = axum::Router::new();
    for route in routes() {
        if route.auth {
            authed = authed.route(route.path, route.handler);
        } else {
            open = open.route(route.path, route.handler);
        }
    }
    if state.console {
        open = open.merge(crate::console::page_routes());
        authed = authed.merge(crate::console::data_routes(crate::console::ConsoleState {
            router: state.router.clone(),
            shutdown: state.shutdown.clone(),
            node: if state.cluster.is_some() {
                crate::console::CLUSTER_NODE
            } else {
                crate::console::STANDALONE
            },
            cluster_nodes: state.cluster_nodes.clone(),
        }));
    }
    let authed = authed.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_token,
    ));
    open.merge(authed)
        .fallback(handlers::not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(framework_rejection_as_json))
}

/// Longest text of a framework rejection kept as the error message.
const REJECTION_TEXT_MAX: usize = 1024;

/// Gives the rejections axum answers by itself, before any handler runs, the documented error
/// shape `{"error", "message"}` every handler error has: a body that is not JSON or misses a
/// field (400 `bad_request`; axum's 422 is folded into it), a wrong content type (415
/// `unsupported_media_type`), a method the path does not serve (405 `method_not_allowed`, its
/// `Allow` header kept). Responses that are already JSON, and successes, pass unchanged.
async fn framework_rejection_as_json(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (status, code) = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported_media_type"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "too_large"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        s if s.is_server_error() => (s, "internal"),
        s => (s, "bad_request"),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    parts.status = status;
    let json = axum::Json(serde_json::json!({ "error": code, "message": message }));
    (parts, json).into_response()
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.api_token.expose().as_bytes();
    if !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected)) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// An API error: an HTTP status and a JSON body `{"error": code, "message": text}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 404: no such resource (or the device is not online, for commands).
    #[error("{1}")]
    NotFound(&'static str, String),
    /// 413: payload too large.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the request body did not arrive in time (`api.body_timeout_ms`).
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 503: temporarily unable (overloaded session, store down).
    #[error("{1}")]
    Unavailable(&'static str, String),
    /// 504: the device did not answer in time.
    #[error("the device did not answer in time")]
    Timeout,
    /// 500: an internal failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(code, _) => (StatusCode::NOT_FOUND, code),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable(code, _) => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // A command timeout is logged where the device is known (`handlers::command`).
        if status.is_server_error() && !matches!(self, ApiError::Timeout) {
            tracing::warn!(error = %self, "api error");
        }
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::InvalidGroupName => ApiError::BadRequest(e.to_string()),
            crate::store::StoreError::DataLost(_) => {
                ApiError::Unavailable("store_data_lost", e.to_string())
            }
            other => ApiError::Unavailable("store_unavailable", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = BTreeSet::new();
        let mut cluster_only = BTreeSet::new();
        let mut console = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().unwrap() {
                if ["parameters", "summary", "description"].contains(&method.as_str()) {
                    continue;
                }
                let open = op
                    .get("security")
                    .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
                let entry = (method.to_uppercase(), path.clone(), !open);
                if op["x-console"].as_bool() == Some(true) {
                    console.insert(entry);
                } else if op["x-cluster-only"].as_bool() == Some(true) {
                    cluster_only.insert(entry);
                } else {
                    documented.insert(entry);
                }
            }
        }
        // The cluster roles merge the node lookup into this API (crate::cluster), unauthenticated.
        let lookup = crate::discovery::route::LOOKUP_PATH.to_string();
        assert_eq!(
            cluster_only,
            BTreeSet::from([("GET".to_string(), lookup, false)])
        );
        // The console's event stream and node table, mounted with `[console] enabled`
        // (crate::console).
        assert_eq!(
            console,
            BTreeSet::from([
                (
                    "GET".to_string(),
                    crate::console::EVENTS_PATH.to_string(),
                    true
                ),
                (
                    "GET".to_string(),
                    crate::console::NODES_PATH.to_string(),
                    true
                ),
            ])
        );
        let served: BTreeSet<(String, String, bool)> = routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string(), r.auth))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "(method, path, auth) served but not documented: {missing:?}; documented but not served: {extra:?}"
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
