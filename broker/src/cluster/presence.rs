//! [`Presence`]: keeps this comet's sessions in the shared Redis [`OnlineRegistry`] and holds
//! one session per terminal cluster-wide in the `plug` profile.
//!
//! * A login claims the terminal at once (the offline-store hook calls [`Presence::login`]
//!   from `remember`, which the router runs at every login, after registering the session
//!   locally and before reading its replay) with a new session generation from Redis
//!   ([`SessionClaims::claim`]). In the `plug` profile the claim takes the terminal away from
//!   every other comet; [`Presence::login`] then sends each of them a replacement notice over the
//!   node links ([`ReplaceSink`]), and the claim left the same notice in their Redis mailboxes.
//! * A notice received ([`Presence::on_notice`], from a link or from the mailbox drained at every
//!   heartbeat) kicks the local session with `REPLACED` only when it is older than the notice's
//!   generation ([`Generations`] decides, also for a local login still claiming).
//! * [`Presence::reconcile`] runs every `cluster.reconcile_ms`: terminals no longer online in the
//!   local router are unregistered with the generation they were claimed with, so a newer login
//!   is never removed by a late reconcile.
//! * [`Presence::heartbeat`] refreshes the node's heartbeat key and drains the mailbox; when Redis
//!   says the key had expired (this node was presumed dead and swept) every held terminal is
//!   registered again, and in the `plug` profile a session some login elsewhere replaced
//!   meanwhile is kicked instead ([`SessionClaims::restore`]).
//! * Every node also runs [`OnlineRegistry::sweep_dead_nodes`] (see [`spawn_loops`]).
//!
//! Every registry write is counted in `broker_presence_writes_total{op}` and, when it fails,
//! `broker_presence_errors_total{op}` ([`crate::metrics::Metrics::presence_write`]); every
//! replacement decision in `broker_cluster_replacements_total{via,result}`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::claims::{Notice, SessionClaims};
use super::generations::{Generations, Verdict};
use crate::metrics::Metrics;
use crate::router::{KickReason, Router};
use crate::store::StoreError;
use crate::store::redis::OnlineRegistry;
use crate::terminal::Address;

/// Where replacement notices go: to comet `to`, over the node links. Must not block; a notice
/// that cannot be sent is still in `to`'s Redis mailbox.
pub trait ReplaceSink: Send + Sync + 'static {
    /// Tells comet `to` that `notice.terminal` was claimed with `notice.generation`.
    fn replace(&self, to: &str, notice: Notice);
}

/// What a comet attaches once its router runs.
struct Attached {
    router: Router,
    sink: Arc<dyn ReplaceSink>,
}

/// This node's registrations in the online registry (see module docs).
pub struct Presence {
    registry: Arc<OnlineRegistry>,
    claims: SessionClaims,
    node: String,
    single: bool,
    gens: Mutex<Generations>,
    attached: OnceLock<Attached>,
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

fn label(v: Verdict) -> &'static str {
    match v {
        Verdict::Kick => "kicked",
        Verdict::Keep => "kept",
        Verdict::Deferred => "deferred",
    }
}

/// Finishes a local claim when dropped, also when the login is abandoned mid-claim (so the
/// terminal never stays "claiming" and every later notice is decided).
struct Claiming<'a> {
    presence: &'a Presence,
    terminal: Address,
    generation: Option<u64>,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        let p = self.presence;
        let mut gens = p.gens();
        let v = gens.finish(self.terminal, self.generation);
        if v == Verdict::Kick {
            p.kick_local(self.terminal);
            p.metrics.cluster_replacement("login", label(v));
        }
    }
}

impl Presence {
    /// Presence of `node`, claiming terminals through `claims`; `single` (the `plug` profile)
    /// makes a login replace the terminal's sessions on other comets. Registry writes are
    /// counted in `metrics`.
    pub fn new(
        registry: Arc<OnlineRegistry>,
        claims: SessionClaims,
        node: String,
        single: bool,
        metrics: Metrics,
    ) -> Presence {
        Presence {
            registry,
            claims,
            node,
            single,
            gens: Mutex::new(Generations::default()),
            attached: OnceLock::new(),
            metrics,
        }
    }

    /// A comet's router (whose sessions replacement notices kick) and where its own notices
    /// go. Before this, notices are kept in the Redis mailbox and none is sent.
    pub fn attach(&self, router: Router, sink: Arc<dyn ReplaceSink>) {
        let _ = self.attached.set(Attached { router, sink });
    }

    fn gens(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.gens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn kick_local(&self, terminal: Address) {
        if let Some(a) = self.attached.get() {
            let n = a.router.kick(terminal, KickReason::Replaced);
            tracing::info!(%terminal, sessions = n, "replaced by a login on another comet");
        }
    }

    /// Claims a login of `terminal` (see module docs) and notifies the comets it replaced.
    pub async fn login(&self, terminal: Address) -> Result<(), StoreError> {
        self.gens().begin(terminal);
        let mut claiming = Claiming {
            presence: self,
            terminal,
            generation: None,
        };
        let r = self.claims.claim(terminal, &self.node, self.single).await;
        let claim = counted(&self.metrics, "register", r)?;
        claiming.generation = Some(claim.generation);
        drop(claiming);
        if let Some(a) = self.attached.get() {
            for (node, old) in &claim.replaced {
                tracing::debug!(%terminal, comet = %node, old, new = claim.generation, "login replaces a session on another comet");
                a.sink.replace(
                    node,
                    Notice {
                        terminal,
                        generation: claim.generation,
                    },
                );
            }
        }
        Ok(())
    }

    /// Another comet claimed `notice.terminal`: kicks the local session when it is older.
    /// `via` labels the metric (`link`, `mailbox` or `restore`).
    pub fn on_notice(&self, notice: Notice, via: &'static str) -> Verdict {
        let mut gens = self.gens();
        let v = gens.notice(notice.terminal, notice.generation);
        if v == Verdict::Kick {
            self.kick_local(notice.terminal);
        }
        drop(gens);
        self.metrics.cluster_replacement(via, label(v));
        v
    }

    /// Unregisters held terminals the router no longer holds. Returns how many.
    pub async fn reconcile(&self, router: &Router) -> Result<usize, StoreError> {
        // Snapshot held before online: anything held was already in the router's registry.
        // A login in progress is not held yet (still claiming), so it is never unregistered.
        let held = self.gens().held();
        let online = router.online_terminals();
        let mut removed = 0;
        for (t, generation) in &held {
            if online.binary_search(t).is_err() {
                let r = self.registry.unregister(*t, &self.node, *generation).await;
                counted(&self.metrics, "unregister", r)?;
                self.gens().forget(*t, *generation);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Applies the notices waiting in this node's mailbox (comet only).
    pub async fn drain_mailbox(&self) -> Result<usize, StoreError> {
        if self.attached.get().is_none() {
            return Ok(0);
        }
        let r = self.claims.take_kicks(&self.node).await;
        let notices = counted(&self.metrics, "take_kicks", r)?;
        for n in &notices {
            self.on_notice(*n, "mailbox");
        }
        Ok(notices.len())
    }

    /// Refreshes the heartbeat and drains the mailbox; re-registers everything held when the
    /// heartbeat key had expired, then lets the local sessions re-read the store.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<(), StoreError> {
        let r = self.registry.heartbeat(&self.node, ttl).await;
        let alive = counted(&self.metrics, "heartbeat", r)?;
        self.drain_mailbox().await?;
        if !alive {
            let all = self.gens().held();
            if !all.is_empty() {
                tracing::warn!(
                    node = %self.node,
                    terminals = all.len(),
                    "heartbeat key had expired: registering sessions again"
                );
            }
            for (t, generation) in all {
                if !self.single {
                    let r = self.registry.register(t, &self.node, generation).await;
                    counted(&self.metrics, "register", r)?;
                    continue;
                }
                let r = self.claims.restore(t, &self.node, generation).await;
                if !counted(&self.metrics, "register", r)? {
                    // A login elsewhere took the terminal while this node was swept.
                    let newer = generation.saturating_add(1);
                    self.on_notice(
                        Notice {
                            terminal: t,
                            generation: newer,
                        },
                        "restore",
                    );
                }
            }
            // A sweep may have left this comet out of delivery notices until now: its sessions
            // re-read the store, so a message stored meanwhile is not missed live.
            if let Some(a) = self.attached.get() {
                a.router.resync_sessions();
            }
        }
        Ok(())
    }

    /// Terminals currently held by this node.
    pub fn count(&self) -> usize {
        self.gens().len()
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
