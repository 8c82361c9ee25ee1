//! [`ClusterOffline`]: the shared (Redis) offline store wrapped so the cluster sees what the
//! router stores.
//!
//! The router stays unaware of the cluster: it stores every push and send through
//! [`OfflineStore::append`] and calls [`OfflineStore::remember`] at every login. This wrapper
//! forwards both to the real store, then
//! * after `remember`: claims the login in the online registry ([`Presence::login`], comet
//!   only; in the `plug` profile this replaces the terminal's sessions on other comets);
//! * after `append`: hands the stored message to a [`StoredSink`] — on a comet the msgbus link
//!   (so other comets deliver it), on msgbus the router to the comets holding the recipients.
//!
//! A failed hand-over loses nothing: the message is stored and replayed at the next login.

use std::sync::Arc;

use async_trait::async_trait;

use super::frame::{Dest, LinkMessage};
use super::presence::Presence;
use crate::store::{
    Appended, NewMessage, OfflineStats, OfflineStore, Recipients, StoreError, StoredMessage,
};
use crate::terminal::Address;

/// Where stored messages go for cross-node delivery.
pub trait StoredSink: Send + Sync + 'static {
    /// A message was stored; deliver it to sessions on other nodes. Must not block.
    fn stored(&self, msg: LinkMessage);
}

/// The offline store with cluster hooks (see module docs).
pub struct ClusterOffline {
    inner: Arc<dyn OfflineStore>,
    presence: Option<Arc<Presence>>,
    sink: Arc<dyn StoredSink>,
}

impl ClusterOffline {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn OfflineStore>,
        presence: Option<Arc<Presence>>,
        sink: Arc<dyn StoredSink>,
    ) -> ClusterOffline {
        ClusterOffline {
            inner,
            presence,
            sink,
        }
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
        let dest = match &recipients {
            Recipients::List(l) => Dest::List(l.clone()),
            Recipients::Known(k) => Dest::Kind(*k),
        };
        let from = msg.from;
        let payload = msg.payload.to_vec();
        let appended = self.inner.append(recipients, msg, now_ms).await?;
        self.sink.stored(LinkMessage {
            msg_id: appended.msg_id,
            from,
            payload,
            dest,
        });
        Ok(appended)
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
