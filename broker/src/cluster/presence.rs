//! [`Presence`]: keeps this comet's sessions in the shared Redis [`OnlineRegistry`].
//!
//! * A login registers the terminal at once (the offline-store hook calls [`Presence::login`]
//!   from `remember`, which the router runs at every login) with a fresh epoch.
//! * [`Presence::reconcile`] runs every `cluster.reconcile_ms`: terminals no longer online in the
//!   local router are unregistered with the epoch they were registered with, so a newer login
//!   (new epoch) is never removed by a late reconcile.
//! * [`Presence::heartbeat`] refreshes the node's heartbeat key; when Redis says it had expired
//!   (this node was presumed dead and swept) every tracked terminal is registered again.
//! * Every node also runs [`OnlineRegistry::sweep_dead_nodes`] (see [`spawn_loops`]).
//!
//! Every registry write is counted in `broker_presence_writes_total{op}` and, when it fails,
//! `broker_presence_errors_total{op}` ([`crate::metrics::Metrics::presence_write`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::StoreError;
use crate::store::redis::OnlineRegistry;
use crate::terminal::Address;

/// This node's registrations in the online registry (see module docs).
pub struct Presence {
    registry: Arc<OnlineRegistry>,
    node: String,
    next_epoch: AtomicU64,
    tracked: Mutex<BTreeMap<Address, u64>>,
    metrics: Metrics,
}

/// Counts a registry write `op` with its result.
fn counted<T>(
    metrics: &Metrics,
    op: &'static str,
    r: Result<T, StoreError>,
) -> Result<T, StoreError> {
    metrics.presence_write(op, r.is_ok());
    r
}

impl Presence {
    /// Presence of `node`; epochs start at `epoch_base` (e.g. start time in µs, so a restarted
    /// node never reuses an epoch of its previous run). Registry writes are counted in `metrics`.
    pub fn new(
        registry: Arc<OnlineRegistry>,
        node: String,
        epoch_base: u64,
        metrics: Metrics,
    ) -> Presence {
        Presence {
            registry,
            node,
            next_epoch: AtomicU64::new(epoch_base),
            tracked: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, u64>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Registers a login of `terminal` with a new epoch.
    pub async fn login(&self, terminal: Address) -> Result<(), StoreError> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let r = self.registry.register(terminal, &self.node, epoch).await;
        counted(&self.metrics, "register", r)?;
        self.tracked().insert(terminal, epoch);
        Ok(())
    }

    /// Unregisters tracked terminals the router no longer holds; registers online ones that are
    /// not tracked (a failed registration at login). Returns how many were unregistered.
    pub async fn reconcile(&self, router: &Router) -> Result<usize, StoreError> {
        // Snapshot tracked before online: anything tracked was already in the router's registry.
        let tracked = self.tracked().clone();
        let online = router.online_terminals();
        let mut removed = 0;
        for (t, epoch) in &tracked {
            if online.binary_search(t).is_err() {
                let r = self.registry.unregister(*t, &self.node, *epoch).await;
                counted(&self.metrics, "unregister", r)?;
                let mut tr = self.tracked();
                if tr.get(t) == Some(epoch) {
                    tr.remove(t);
                }
                removed += 1;
            }
        }
        for t in online {
            if !tracked.contains_key(&t) && !self.tracked().contains_key(&t) {
                self.login(t).await?;
            }
        }
        Ok(removed)
    }

    /// Refreshes the heartbeat; re-registers everything when it had expired.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<(), StoreError> {
        let r = self.registry.heartbeat(&self.node, ttl).await;
        if !counted(&self.metrics, "heartbeat", r)? {
            let all = self.tracked().clone();
            if !all.is_empty() {
                tracing::warn!(
                    node = %self.node,
                    terminals = all.len(),
                    "heartbeat key had expired: registering sessions again"
                );
            }
            for (t, epoch) in all {
                let r = self.registry.register(t, &self.node, epoch).await;
                counted(&self.metrics, "register", r)?;
            }
        }
        Ok(())
    }

    /// Terminals currently registered by this node.
    pub fn count(&self) -> usize {
        self.tracked().len()
    }
}

/// Intervals of the presence loops.
#[derive(Clone, Copy, Debug)]
pub struct Intervals {
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Heartbeat key TTL.
    pub ttl: Duration,
    /// Dead-node sweep period.
    pub sweep: Duration,
    /// Reconcile period (comet only).
    pub reconcile: Duration,
}

/// Starts the heartbeat and sweep loops, and the reconcile loop when `router` is given (comet).
/// `on_reconcile` gets the number of registered terminals (used as the node's load).
pub fn spawn_loops(
    presence: Arc<Presence>,
    registry: Arc<OnlineRegistry>,
    router: Option<Router>,
    every: Intervals,
    on_reconcile: impl Fn(usize) + Send + 'static,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (p, c) = (presence.clone(), cancel.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.heartbeat);
        loop {
            tokio::select! { _ = c.cancelled() => break, _ = tick.tick() => {} }
            if let Err(e) = p.heartbeat(every.ttl).await {
                tracing::warn!(error = %e, "online registry heartbeat failed");
            }
        }
    }));
    let c = cancel.clone();
    let metrics = presence.metrics.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.sweep);
        loop {
            tokio::select! { _ = c.cancelled() => break, _ = tick.tick() => {} }
            let r = registry.sweep_dead_nodes().await;
            match counted(&metrics, "sweep", r) {
                Ok(r) if !r.nodes.is_empty() => {
                    tracing::info!(nodes = ?r.nodes, entries = r.entries, "swept dead nodes from the online registry");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "online registry sweep failed"),
            }
        }
    }));
    if let Some(router) = router {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.reconcile);
            loop {
                tokio::select! { _ = cancel.cancelled() => break, _ = tick.tick() => {} }
                if let Err(e) = presence.reconcile(&router).await {
                    tracing::warn!(error = %e, "online registry reconcile failed");
                }
                on_reconcile(presence.count());
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_writes_and_errors_are_counted_per_op() {
        let m = Metrics::new();
        assert!(counted(&m, "register", Ok(())).is_ok());
        assert!(counted(&m, "register", Ok(())).is_ok());
        let e: Result<(), StoreError> = Err(StoreError::Backend("down".into()));
        assert!(counted(&m, "heartbeat", e).is_err());
        let text = m.render();
        for line in [
            r#"broker_presence_writes_total{op="register"} 2"#,
            r#"broker_presence_writes_total{op="heartbeat"} 1"#,
            r#"broker_presence_errors_total{op="heartbeat"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains(r#"broker_presence_errors_total{op="register"}"#));
    }
}
