//! The API's handlers: parse and check the request, call the router or a store, shape the JSON.
//! Payloads travel as standard base64 (`payload`), or as UTF-8 text (`text`) for convenience.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, OPENAPI, RemoteCommandError};
use crate::router::{CommandError, PushError, Target};
use crate::terminal::{Address, Kind, parse_id};

type ApiResult<T> = Result<T, ApiError>;

fn address(kind: Kind, id: &str, state: &ApiState) -> ApiResult<Address> {
    let id = parse_id(state.router.settings().profile, id)
        .ok_or_else(|| ApiError::BadRequest(format!("`{id}` is not a 32-bit id")))?;
    let a = Address { kind, id };
    state
        .router
        .settings()
        .profile
        .validate(a)
        .map_err(|e| ApiError::BadRequest(format!("{a}: {e}")))
}

fn payload(b64: Option<String>, text: Option<String>) -> ApiResult<Bytes> {
    match (b64, text) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give `payload` or `text`, not both".into(),
        )),
        (Some(b), None) => B64
            .decode(b.as_bytes())
            .map(Bytes::from)
            .map_err(|_| ApiError::BadRequest("`payload` is not standard base64".into())),
        (None, Some(t)) => Ok(Bytes::from(t)),
        (None, None) => Ok(Bytes::new()),
    }
}

pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("not_found", "no such route".into())
}

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(s): State<ApiState>) -> Response {
    match s.router.stores().offline.stats().await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(e) => ApiError::Unavailable("store_unavailable", e.to_string()).into_response(),
    }
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Response {
    s.router.refresh_store_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.router.metrics().render(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /v1/online`: this node's counts, labelled with their scope, and in cluster mode the
/// terminals every node holds (from the cluster-wide online registry).
#[derive(Serialize)]
pub(super) struct Online {
    #[serde(flatten)]
    this_node: crate::router::OnlineCounts,
    /// `standalone` (the counts are the whole broker's) or `node` (this cluster node's only).
    scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterOnline>,
}

#[derive(Serialize)]
pub(super) struct ClusterOnline {
    /// Terminals registered per node id.
    terminals_by_node: std::collections::BTreeMap<String, u64>,
    /// Their sum (a terminal online on two nodes at once counts twice).
    terminals: u64,
}

pub(super) async fn online(State(s): State<ApiState>) -> ApiResult<Json<Online>> {
    let this_node = s.router.online_counts();
    let Some(cluster) = &s.cluster else {
        return Ok(Json(Online {
            this_node,
            scope: "standalone",
            cluster: None,
        }));
    };
    let terminals_by_node = cluster.terminals_by_node().await?;
    Ok(Json(Online {
        this_node,
        scope: "node",
        cluster: Some(ClusterOnline {
            terminals: terminals_by_node.values().sum(),
            terminals_by_node,
        }),
    }))
}

#[derive(Serialize)]
pub(super) struct TerminalStatus {
    address: Address,
    online: bool,
    /// This node's sessions of the terminal.
    sessions: Vec<crate::router::SessionInfo>,
    /// Cluster mode only: every node the online registry names for the terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<String>>,
}

pub(super) async fn terminal_status(
    State(s): State<ApiState>,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<Json<TerminalStatus>> {
    let kind: Kind = kind
        .parse()
        .map_err(|_| ApiError::BadRequest("kind must be device or phone".into()))?;
    let a = address(kind, &id, &s)?;
    let sessions = s.router.status(a);
    let nodes = match &s.cluster {
        Some(c) => Some(c.nodes_of(a).await?),
        None => None,
    };
    Ok(Json(TerminalStatus {
        address: a,
        online: !sessions.is_empty() || nodes.as_ref().is_some_and(|n| !n.is_empty()),
        sessions,
        nodes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesQuery {
    since_id: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct MessageOut {
    msg_id: u64,
    from: Option<Address>,
    payload: String,
    expires_at_ms: u64,
}

#[derive(Serialize)]
pub(super) struct Messages {
    messages: Vec<MessageOut>,
}

/// Peeks at a terminal's stored (unacknowledged) messages without consuming them.
pub(super) async fn stored_messages(
    State(s): State<ApiState>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Messages>> {
    let kind: Kind = kind
        .parse()
        .map_err(|_| ApiError::BadRequest("kind must be device or phone".into()))?;
    let a = address(kind, &id, &s)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest(
            "`limit` must be within 1..=1000".into(),
        ));
    }
    let stored = s
        .router
        .stores()
        .offline
        .since(a, q.since_id.unwrap_or(0), limit, crate::router::now_ms())
        .await?;
    let messages = stored
        .into_iter()
        .map(|m| MessageOut {
            msg_id: m.msg_id,
            from: m.from,
            payload: B64.encode(&m.payload),
            expires_at_ms: m.expires_at_ms,
        })
        .collect();
    Ok(Json(Messages { messages }))
}

/// Push addressing in JSON: `{"terminal": Address}`, `{"list": [Address]}`, `{"group": "name"}`,
/// `"all_devices"`, `"all_phones"` or `"everyone"`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum PushTarget {
    Terminal(Address),
    List(Vec<Address>),
    Group(String),
    AllDevices,
    AllPhones,
    Everyone,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushBody {
    target: PushTarget,
    payload: Option<String>,
    text: Option<String>,
    ttl_secs: Option<u64>,
}

pub(super) async fn push(
    State(s): State<ApiState>,
    Json(b): Json<PushBody>,
) -> ApiResult<Json<crate::router::PushOutcome>> {
    let target = match b.target {
        PushTarget::Terminal(a) => Target::Terminal(a),
        PushTarget::List(l) if l.is_empty() => {
            return Err(ApiError::BadRequest("empty list".into()));
        }
        PushTarget::List(l) if l.len() > 10_000 => {
            return Err(ApiError::BadRequest("list longer than 10000".into()));
        }
        PushTarget::List(l) => Target::List(l),
        PushTarget::Group(g) => Target::Group(g),
        PushTarget::AllDevices => Target::AllDevices,
        PushTarget::AllPhones => Target::AllPhones,
        PushTarget::Everyone => Target::Everyone,
    };
    let data = payload(b.payload, b.text)?;
    let ttl = b.ttl_secs.map(Duration::from_secs);
    match s.router.push(target, None, data, ttl).await {
        Ok(o) => Ok(Json(o)),
        Err(PushError::TooLarge(n)) => Err(ApiError::TooLarge(format!(
            "payload of {n} bytes exceeds the limit"
        ))),
        Err(PushError::UnknownGroup(g)) => Err(ApiError::NotFound(
            "unknown_group",
            format!("no group named `{g}`"),
        )),
        Err(PushError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandBody {
    name: String,
    payload: Option<String>,
    text: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct CommandReply {
    status: u16,
    payload: String,
}

pub(super) async fn command(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Json(b): Json<CommandBody>,
) -> ApiResult<Json<CommandReply>> {
    let device = address(Kind::Device, &id, &s)?;
    let data = payload(b.payload, b.text)?;
    if data.len() > s.router.settings().max_payload {
        return Err(ApiError::TooLarge(format!(
            "payload of {} bytes exceeds the limit",
            data.len()
        )));
    }
    if b.name.is_empty() || b.name.len() > 255 {
        return Err(ApiError::BadRequest("`name` must be 1..=255 bytes".into()));
    }
    let timeout = b
        .timeout_ms
        .map_or(s.command_default, Duration::from_millis);
    if timeout.is_zero() || timeout > s.command_max {
        return Err(ApiError::BadRequest(format!(
            "`timeout_ms` must be within 1..={}",
            s.command_max.as_millis()
        )));
    }
    // A device with a session here is commanded here; otherwise, in cluster mode, wherever the
    // online registry says it is.
    let name = b.name.clone();
    let result = match &s.cluster {
        Some(c) if s.router.status(device).is_empty() => {
            c.command(device, b.name, data, timeout).await
        }
        _ => s
            .router
            .command(device, b.name, data, timeout)
            .await
            .map_err(RemoteCommandError::from),
    };
    let e = match result {
        Ok(r) => {
            return Ok(Json(CommandReply {
                status: r.status,
                payload: B64.encode(&r.payload),
            }));
        }
        Err(RemoteCommandError::Command(e)) => e,
        Err(RemoteCommandError::Unreachable(m)) => {
            return Err(ApiError::Unavailable("node_unreachable", m));
        }
        Err(RemoteCommandError::Store(e)) => return Err(e.into()),
    };
    match e {
        CommandError::NotOnline => Err(ApiError::NotFound(
            "not_online",
            format!("{device} is not online"),
        )),
        CommandError::Timeout => {
            // The one line for this 504 (the generic API error line skips timeouts).
            tracing::warn!(
                device = %device,
                command = %name,
                timeout_ms = timeout.as_millis() as u64,
                "command timed out: the device did not answer in time"
            );
            Err(ApiError::Timeout)
        }
        CommandError::Overloaded => Err(ApiError::Unavailable(
            "overloaded",
            "the device's queue is full".into(),
        )),
        CommandError::Disconnected => Err(ApiError::Unavailable(
            "disconnected",
            "the device disconnected before answering".into(),
        )),
        CommandError::Invalid(m) => Err(ApiError::BadRequest(m)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct UploadOut {
    cursor: u64,
    device: Address,
    /// 16 lower-case hex digits (as in `dedup_key`).
    upload_epoch: String,
    upload_id: u32,
    dedup_key: String,
    topic: String,
    payload: String,
    received_at_ms: u64,
}

#[derive(Serialize)]
pub(super) struct UploadsPage {
    uploads: Vec<UploadOut>,
    next: u64,
    head: u64,
}

pub(super) async fn uploads(
    State(s): State<ApiState>,
    Query(q): Query<UploadsQuery>,
) -> ApiResult<Json<UploadsPage>> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest(
            "`limit` must be within 1..=1000".into(),
        ));
    }
    let spool = &s.router.stores().uploads;
    let records = spool.read(after, limit).await?;
    let head = spool.head().await?;
    let next = records.last().map_or(after, |r| r.cursor);
    let uploads = records
        .into_iter()
        .map(|r| UploadOut {
            cursor: r.cursor,
            device: r.device,
            upload_epoch: format!("{:016x}", r.upload_epoch),
            upload_id: r.upload_id,
            dedup_key: r.dedup_key(),
            topic: r.topic,
            payload: B64.encode(&r.payload),
            received_at_ms: r.received_at_ms,
        })
        .collect();
    Ok(Json(UploadsPage {
        uploads,
        next,
        head,
    }))
}

#[derive(Serialize)]
pub(super) struct Terminals {
    terminals: Vec<Address>,
}

pub(super) async fn devices_of(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Terminals>> {
    let phone = address(Kind::Phone, &id, &s)?;
    Ok(Json(Terminals {
        terminals: s.router.stores().bindings.devices_of(phone).await?,
    }))
}

pub(super) async fn phones_of(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Terminals>> {
    let device = address(Kind::Device, &id, &s)?;
    Ok(Json(Terminals {
        terminals: s.router.stores().bindings.phones_of(device).await?,
    }))
}

#[derive(Serialize)]
pub(super) struct Changed {
    changed: bool,
}

pub(super) async fn bind(
    State(s): State<ApiState>,
    Path((phone, device)): Path<(String, String)>,
) -> ApiResult<Json<Changed>> {
    let (p, d) = (
        address(Kind::Phone, &phone, &s)?,
        address(Kind::Device, &device, &s)?,
    );
    Ok(Json(Changed {
        changed: s.router.stores().bindings.bind(p, d).await?,
    }))
}

pub(super) async fn unbind(
    State(s): State<ApiState>,
    Path((phone, device)): Path<(String, String)>,
) -> ApiResult<Json<Changed>> {
    let (p, d) = (
        address(Kind::Phone, &phone, &s)?,
        address(Kind::Device, &device, &s)?,
    );
    Ok(Json(Changed {
        changed: s.router.stores().bindings.unbind(p, d).await?,
    }))
}

#[derive(Serialize)]
pub(super) struct GroupSummary {
    name: String,
    members: u64,
}

#[derive(Serialize)]
pub(super) struct GroupList {
    groups: Vec<GroupSummary>,
}

pub(super) async fn list_groups(State(s): State<ApiState>) -> ApiResult<Json<GroupList>> {
    let groups = s.router.stores().groups.list().await?;
    Ok(Json(GroupList {
        groups: groups
            .into_iter()
            .map(|(name, members)| GroupSummary { name, members })
            .collect(),
    }))
}

#[derive(Serialize)]
pub(super) struct Group {
    name: String,
    members: Vec<Address>,
}

fn check_members(s: &ApiState, members: &[Address]) -> ApiResult<()> {
    if members.len() > 100_000 {
        return Err(ApiError::BadRequest("more than 100000 members".into()));
    }
    for a in members {
        s.router
            .settings()
            .profile
            .validate(*a)
            .map_err(|e| ApiError::BadRequest(format!("{a}: {e}")))?;
    }
    Ok(())
}

pub(super) async fn get_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Group>> {
    match s.router.stores().groups.members(&name).await? {
        Some(members) => Ok(Json(Group { name, members })),
        None => Err(ApiError::NotFound(
            "unknown_group",
            format!("no group named `{name}`"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetGroup {
    members: Vec<Address>,
}

pub(super) async fn set_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(b): Json<SetGroup>,
) -> ApiResult<Json<Group>> {
    check_members(&s, &b.members)?;
    let groups = &s.router.stores().groups;
    groups.set(&name, &b.members).await?;
    let members = groups.members(&name).await?.unwrap_or_default();
    Ok(Json(Group { name, members }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateGroup {
    #[serde(default)]
    add: Vec<Address>,
    #[serde(default)]
    remove: Vec<Address>,
}

pub(super) async fn update_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(b): Json<UpdateGroup>,
) -> ApiResult<Json<GroupSummary>> {
    check_members(&s, &b.add)?;
    let members = s
        .router
        .stores()
        .groups
        .update(&name, &b.add, &b.remove)
        .await?;
    Ok(Json(GroupSummary { name, members }))
}

pub(super) async fn delete_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Changed>> {
    Ok(Json(Changed {
        changed: s.router.stores().groups.delete(&name).await?,
    }))
}
