//! [`ClusterOffline`]: the shared (Redis) offline store wrapped so the cluster sees the logins
//! the router records.
//!
//! The router stays unaware of the cluster: it calls [`OfflineStore::remember`] at every login.
//! This wrapper forwards it to the real store, then claims the login in the online registry
//! ([`Presence::login`], comet only; in the `plug` profile this replaces the terminal's sessions
//! on other comets), before the router reads the replay: a message stored after the claim gets a
//! delivery notice for this comet, one stored before it is in the replay.
//!
//! Stored messages need no hand-over: the append script itself notifies the comets that hold a
//! recipient ([`super::delivery`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::presence::Presence;
use crate::store::{
    Appended, NewMessage, OfflineStats, OfflineStore, Recipients, StoreError, StoredMessage,
};
use crate::terminal::Address;

/// The offline store with cluster hooks (see module docs).
pub struct ClusterOffline {
    inner: Arc<dyn OfflineStore>,
    presence: Option<Arc<Presence>>,
}

impl ClusterOffline {
    /// Wraps `inner`; logins are claimed through `presence` (comet) or not at all (msgbus).
    pub fn new(inner: Arc<dyn OfflineStore>, presence: Option<Arc<Presence>>) -> ClusterOffline {
        ClusterOffline { inner, presence }
    }
}

#[async_trait]
impl OfflineStore for ClusterOffline {
    async fn remember(&self, terminal: Address) -> Result<(), StoreError> {
        self.inner.remember(terminal).await?;
        if let Some(p) = &self.presence {
            p.login(terminal).await?;
        }
        Ok(())
    }

    async fn append(
        &self,
        recipients: Recipients,
        msg: NewMessage,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        self.inner.append(recipients, msg, now_ms).await
    }

    async fn since(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.since(terminal, since_id, limit, now_ms).await
    }

    async fn login(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Claimed before the store's one login script reads the replay: a message stored after
        // the claim gets a delivery notice for this comet, one stored before is in the replay.
        if let Some(p) = &self.presence {
            p.login(terminal).await?;
        }
        self.inner.login(terminal, since_id, limit, now_ms).await
    }

    async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError> {
        self.inner.ack(terminal, msg_id).await
    }

    async fn ack_through(&self, terminal: Address, through_id: u64) -> Result<u64, StoreError> {
        self.inner.ack_through(terminal, through_id).await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.inner.purge_expired(now_ms).await
    }

    async fn stats(&self) -> Result<OfflineStats, StoreError> {
        self.inner.stats().await
    }
}
