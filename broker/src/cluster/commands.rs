//! Device commands and online status across nodes: the HTTP API's [`ClusterApi`] in cluster mode.
//!
//! The API handler runs a command on the local router when the device has a session here;
//! otherwise it calls [`ClusterCommands::command`], which reads the Redis online registry for
//! the node holding the device (newest session epoch, never this node) and forwards a
//! [`CommandRequest`] over the links ([`Forward`]):
//! * on msgbus, straight to that comet ([`super::link::LinkManager`]);
//! * on a comet, to one connected msgbus ([`super::link::CometLinks`]), which forwards it to
//!   the target comet and relays the [`CommandOutcome`] back.
//!
//! The comet holding the device runs it on its router and answers on the link the request came
//! in on. Requests are correlated by an id from a [`Pending`] table per requester; the
//! requester waits at most the caller's timeout (then `Timeout`, HTTP 504), and a link that goes
//! down fails its pending requests at once (`Unreachable`, HTTP 503). A comet never forwards a
//! request it received: it runs it or answers `NotOnline` (HTTP 404), so requests cannot loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::frame::{CommandOutcome, CommandRequest};
use crate::api::{ClusterApi, RemoteCommandError};
use crate::metrics::Metrics;
use crate::router::{CommandError, CommandResult, Router};
use crate::store::StoreError;
use crate::store::redis::OnlineRegistry;
use crate::terminal::Address;

/// Longest timeout a node runs a forwarded command with, whatever the request says.
pub const MAX_FORWARDED_TIMEOUT: Duration = Duration::from_secs(600);

/// Pending requests of one node, by id; `K` names the link each went out on.
pub struct Pending<K> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, (K, oneshot::Sender<CommandOutcome>)>>,
}

impl<K: PartialEq> Default for Pending<K> {
    fn default() -> Self {
        Pending {
            next: AtomicU64::new(1),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: PartialEq> Pending<K> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (K, oneshot::Sender<CommandOutcome>)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new request going out on link `via`: its id and where its outcome arrives.
    pub fn register(&self, via: K) -> (u64, oneshot::Receiver<CommandOutcome>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.map().insert(id, (via, tx));
        (id, rx)
    }

    /// The outcome of request `id` arrived; false when it is unknown (late or forged).
    pub fn complete(&self, id: u64, outcome: CommandOutcome) -> bool {
        match self.map().remove(&id) {
            Some((_, tx)) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Forgets request `id` (timed out or never sent).
    pub fn forget(&self, id: u64) {
        self.map().remove(&id);
    }

    /// Link `via` went down: every request that went out on it fails with `outcome`.
    pub fn fail_via(&self, via: &K, outcome: &CommandOutcome) -> usize {
        let mut map = self.map();
        let ids: Vec<u64> = map
            .iter()
            .filter(|(_, (k, _))| k == via)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some((_, tx)) = map.remove(id) {
                let _ = tx.send(outcome.clone());
            }
        }
        ids.len()
    }

    /// Requests waiting for an outcome.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for request `id` up to `timeout` (`Timeout` then) and forgets it, also when the
    /// caller gives up first (drops this future).
    pub async fn wait(
        &self,
        id: u64,
        rx: oneshot::Receiver<CommandOutcome>,
        timeout: Duration,
    ) -> CommandOutcome {
        let _forget = ForgetOnDrop { pending: self, id };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => CommandOutcome::Unreachable("request abandoned".into()),
            Err(_) => CommandOutcome::Timeout,
        }
    }
}

/// Forgets a request when dropped: [`Pending::wait`] leaves nothing behind however it ends.
struct ForgetOnDrop<'a, K: PartialEq> {
    pending: &'a Pending<K>,
    id: u64,
}

impl<K: PartialEq> Drop for ForgetOnDrop<'_, K> {
    fn drop(&mut self) {
        self.pending.forget(self.id);
    }
}

/// The router's answer as carried over a link.
pub fn outcome_of(r: Result<CommandResult, CommandError>) -> CommandOutcome {
    match r {
        Ok(r) => CommandOutcome::Done {
            status: r.status,
            payload: r.payload.to_vec(),
        },
        Err(CommandError::NotOnline) => CommandOutcome::NotOnline,
        Err(CommandError::Timeout) => CommandOutcome::Timeout,
        Err(CommandError::Overloaded) => CommandOutcome::Overloaded,
        Err(CommandError::Disconnected) => CommandOutcome::Disconnected,
        Err(CommandError::Invalid(m)) => CommandOutcome::Invalid(m),
    }
}

/// A link outcome as the API's result.
pub fn result_of(o: CommandOutcome) -> Result<CommandResult, RemoteCommandError> {
    let e = match o {
        CommandOutcome::Done { status, payload } => {
            return Ok(CommandResult {
                status,
                payload: Bytes::from(payload),
            });
        }
        CommandOutcome::NotOnline => CommandError::NotOnline,
        CommandOutcome::Timeout => CommandError::Timeout,
        CommandOutcome::Overloaded => CommandError::Overloaded,
        CommandOutcome::Disconnected => CommandError::Disconnected,
        CommandOutcome::Invalid(m) => CommandError::Invalid(m),
        CommandOutcome::Unreachable(m) => return Err(RemoteCommandError::Unreachable(m)),
    };
    Err(RemoteCommandError::Command(e))
}

/// The metrics label of an outcome.
pub fn outcome_label(o: &CommandOutcome) -> &'static str {
    match o {
        CommandOutcome::Done { .. } => "ok",
        CommandOutcome::NotOnline => "not_online",
        CommandOutcome::Timeout => "timeout",
        CommandOutcome::Overloaded => "overloaded",
        CommandOutcome::Disconnected => "disconnected",
        CommandOutcome::Invalid(_) => "invalid",
        CommandOutcome::Unreachable(_) => "unreachable",
    }
}

/// Runs a forwarded request on the local router (the comet holding the device).
pub async fn run_locally(router: &Router, req: CommandRequest) -> CommandOutcome {
    let timeout = Duration::from_millis(req.timeout_ms).min(MAX_FORWARDED_TIMEOUT);
    if timeout.is_zero() {
        return CommandOutcome::Invalid("zero timeout".into());
    }
    outcome_of(
        router
            .command(req.device, req.name, Bytes::from(req.payload), timeout)
            .await,
    )
}

/// The node that should run a command for a terminal registered as `entries` (node, epoch):
/// the newest session's node other than `me`.
pub fn pick_node(entries: &[(String, u64)], me: &str) -> Option<String> {
    entries
        .iter()
        .filter(|(n, _)| n != me)
        .max_by_key(|(_, epoch)| *epoch)
        .map(|(n, _)| n.clone())
}

/// How a node sends a request towards comet `req.to` and waits for its outcome.
#[async_trait]
pub trait Forward: Send + Sync + 'static {
    /// Sends `req` (its `id` is set by the implementation) and waits up to `timeout`.
    async fn forward(&self, req: CommandRequest, timeout: Duration) -> CommandOutcome;
}

/// [`ClusterApi`] over the online registry and a [`Forward`] (see module docs).
pub struct ClusterCommands {
    me: String,
    registry: Arc<OnlineRegistry>,
    forward: Arc<dyn Forward>,
    metrics: Metrics,
}

impl ClusterCommands {
    /// Commands of node `me`.
    pub fn new(
        me: String,
        registry: Arc<OnlineRegistry>,
        forward: Arc<dyn Forward>,
        metrics: Metrics,
    ) -> Arc<ClusterCommands> {
        Arc::new(ClusterCommands {
            me,
            registry,
            forward,
            metrics,
        })
    }
}

#[async_trait]
impl ClusterApi for ClusterCommands {
    async fn command(
        &self,
        device: Address,
        name: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<CommandResult, RemoteCommandError> {
        let entries = match self.registry.lookup(device).await {
            Ok(e) => e,
            Err(e) => {
                self.metrics.cluster_command("store_error");
                return Err(e.into());
            }
        };
        let Some(to) = pick_node(&entries, &self.me) else {
            self.metrics.cluster_command("not_online");
            return Err(CommandError::NotOnline.into());
        };
        let req = CommandRequest {
            id: 0,
            to,
            device,
            name,
            payload: payload.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let outcome = self.forward.forward(req, timeout).await;
        self.metrics.cluster_command(outcome_label(&outcome));
        result_of(outcome)
    }

    async fn nodes_of(&self, terminal: Address) -> Result<Vec<String>, StoreError> {
        Ok(self
            .registry
            .lookup(terminal)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    async fn terminals_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.registry.terminals_by_node().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_completes_times_out_and_fails_by_link() {
        let p: Pending<&str> = Pending::default();
        let (a, rx_a) = p.register("link-1");
        let (b, rx_b) = p.register("link-2");
        let (c, rx_c) = p.register("link-1");
        assert_ne!(a, b);
        assert!(p.complete(
            a,
            CommandOutcome::Done {
                status: 0,
                payload: b"x".to_vec()
            }
        ));
        assert!(!p.complete(a, CommandOutcome::Timeout), "only once");
        assert!(!p.complete(999, CommandOutcome::Timeout), "unknown id");
        assert_eq!(
            p.wait(a, rx_a, Duration::from_secs(1)).await,
            CommandOutcome::Done {
                status: 0,
                payload: b"x".to_vec()
            }
        );
        let down = CommandOutcome::Unreachable("link-1 down".into());
        assert_eq!(p.fail_via(&"link-1", &down), 1);
        assert_eq!(p.wait(c, rx_c, Duration::from_secs(1)).await, down);
        assert_eq!(
            p.wait(b, rx_b, Duration::from_millis(20)).await,
            CommandOutcome::Timeout
        );
        assert!(p.is_empty(), "waiting forgets");

        // A caller that gives up (drops the wait) leaves nothing behind either.
        let (d, rx_d) = p.register("link-1");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(20),
            p.wait(d, rx_d, Duration::from_secs(60)),
        )
        .await;
        assert!(abandoned.is_err(), "the outer deadline ended the wait");
        assert!(p.is_empty(), "an abandoned wait forgets its request");
        assert!(
            !p.complete(d, CommandOutcome::Timeout),
            "a late outcome matches nothing"
        );
    }

    #[test]
    fn outcomes_map_to_results_and_back() {
        let ok = CommandResult {
            status: 7,
            payload: Bytes::from_static(b"p"),
        };
        assert!(matches!(
            result_of(outcome_of(Ok(ok.clone()))),
            Ok(r) if r == ok
        ));
        for e in [
            CommandError::NotOnline,
            CommandError::Timeout,
            CommandError::Overloaded,
            CommandError::Disconnected,
            CommandError::Invalid("n".into()),
        ] {
            match result_of(outcome_of(Err(e.clone()))) {
                Err(RemoteCommandError::Command(back)) => assert_eq!(back, e),
                other => panic!("{e:?} -> {other:?}"),
            }
        }
        assert!(matches!(
            result_of(CommandOutcome::Unreachable("x".into())),
            Err(RemoteCommandError::Unreachable(m)) if m == "x"
        ));
    }

    #[test]
    fn picks_the_newest_session_on_another_node() {
        let e = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
        };
        assert_eq!(pick_node(&[], "a"), None);
        assert_eq!(pick_node(&e(&[("a", 9)]), "a"), None);
        assert_eq!(
            pick_node(&e(&[("a", 9), ("b", 3), ("c", 5)]), "a"),
            Some("c".into())
        );
    }
}
