//! Durable state behind small traits: the offline message store, the upload spool, phone<->device
//! bindings and named groups.
//!
//! The router talks only to these traits (`Arc<dyn ...>` in [`Stores`]); [`embedded`] implements
//! them on redb in one file under the data directory (every mutating call commits durably before
//! it returns `Ok`, except acknowledgements, whose loss only causes a redelivery; concurrent
//! writes share a commit through [`group_commit`]), and [`redis`]
//! implements them for cluster mode. `conformance` holds
//! one generic test suite per trait, run here against the embedded store and reusable against any
//! other implementation (feature `store-conformance`).
//!
//! Time is injected: methods that care about expiry take `now_ms` (Unix milliseconds), and
//! `append` uses it for the id scheme of [`msg_id`] (ids never go back, also when Redis lost data).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::terminal::{Address, Kind};

#[cfg(any(test, feature = "store-conformance"))]
pub mod conformance;
pub mod embedded;
pub mod group_commit;
pub mod msg_id;
pub mod redis;

/// Largest message id ever issued (2^53 - 1, exact in JSON numbers).
pub const MAX_MSG_ID: u64 = (1 << 53) - 1;

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, database error); the operation did not take effect.
    #[error("store backend: {0}")]
    Backend(String),
    /// Stored data could not be decoded.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The message id space (2^53 - 1) is exhausted.
    #[error("message ids exhausted")]
    IdsExhausted,
    /// The store noticed that it lost data it had acknowledged (Redis restarted without
    /// persistence, or failed over to a replica that missed writes): messages stored before may
    /// be gone. The call that reports it changed nothing; a retry is stored as usual.
    #[error(
        "the store lost acknowledged data ({0}): messages stored before may be gone; nothing was \
         stored, retry"
    )]
    DataLost(&'static str),
    /// A group name is empty or too long.
    #[error("invalid group name (1..=128 bytes of [A-Za-z0-9._-])")]
    InvalidGroupName,
}

/// Who a stored message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipients {
    /// These terminals (duplicates are ignored).
    List(Vec<Address>),
    /// Every terminal the store knows of this kind (`None`: every kind); see [`OfflineStore::remember`].
    Known(Option<Kind>),
}

/// A message to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Sender terminal, `None` when pushed by the backend.
    pub from: Option<Address>,
    /// Opaque payload.
    pub payload: Bytes,
    /// Unix time in ms after which the message is gone.
    pub expires_at_ms: u64,
}

/// A stored message as replayed to a terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server-issued id, strictly increasing, at most [`MAX_MSG_ID`].
    pub msg_id: u64,
    /// Sender terminal, `None` when pushed by the backend.
    pub from: Option<Address>,
    /// Opaque payload.
    pub payload: Bytes,
    /// Unix time in ms after which the message is gone.
    pub expires_at_ms: u64,
}

/// Result of [`OfflineStore::append`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// The id given to the message.
    pub msg_id: u64,
    /// Terminals the message is now stored for.
    pub stored_for: u64,
    /// Older messages evicted to make room (policy `drop-oldest`).
    pub evicted: u64,
    /// Terminals whose full inbox refused the message (policy `reject-new`).
    pub rejected: u64,
}

/// Sizes of the offline store (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineStats {
    /// Stored message bodies (a broadcast counts once).
    pub messages: u64,
    /// Pending deliveries: one per terminal a stored message is pending for.
    pub references: u64,
    /// Write requests waiting for the embedded store's writer now (0 for stores without one).
    pub writer_queued: u64,
    /// Writes so far that found the writer's queue full and waited (`storage.writer_queue`).
    pub writer_waits: u64,
}

/// Offline and unacknowledged deliveries, per terminal, with TTL and a per-terminal cap.
///
/// A message addressed to many terminals is stored once. A terminal's stored messages are
/// handed out in id order, and a terminal keeps the highest id it has seen (docs/protocol.md
/// section 4), so an acknowledgement of id `n` means it has every id up to `n`: a store may
/// forget all of them then (the embedded store keeps one cursor per terminal), and must forget
/// `n`.
#[async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Records that `terminal` exists (done at login), so kind-wide pushes issued after this
    /// reach it.
    async fn remember(&self, terminal: Address) -> Result<(), StoreError>;
    /// Stores `msg` for `recipients` durably and returns its new id: above every id this store
    /// issued before and at least [`msg_id::clock_floor`] of `now_ms` (see [`msg_id`]).
    async fn append(
        &self,
        recipients: Recipients,
        msg: NewMessage,
        now_ms: u64,
    ) -> Result<Appended, StoreError>;
    /// The terminal's unexpired messages with id greater than `since_id`, in id order, at most `limit`.
    async fn since(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// A login's store work: [`OfflineStore::remember`], then [`OfflineStore::ack_through`] of
    /// `since_id` (when above 0: the terminal has everything up to it), then
    /// [`OfflineStore::since`]. A store may do the three in one round trip (Redis does).
    async fn login(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.remember(terminal).await?;
        if since_id > 0 {
            self.ack_through(terminal, since_id).await?;
        }
        self.since(terminal, since_id, limit, now_ms).await
    }
    /// The terminal acknowledged `msg_id`: forgets it for `terminal`, and may forget every
    /// message stored for it below (see the trait docs); `Ok(false)` when nothing was forgotten
    /// (already acknowledged, expired, evicted or never stored for it). May commit without an
    /// fsync: a crash may undo it, which only causes a redelivery.
    async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError>;
    /// Forgets every message stored for `terminal` with id at most `through_id` (the terminal
    /// reported it has them: its since-id); returns how many pending deliveries were removed.
    /// May commit without an fsync, like [`OfflineStore::ack`].
    async fn ack_through(&self, terminal: Address, through_id: u64) -> Result<u64, StoreError>;
    /// Deletes messages expired at `now_ms`; returns how many.
    async fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError>;
    /// Current sizes.
    async fn stats(&self) -> Result<OfflineStats, StoreError>;
}

/// One device upload as kept in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    /// Position in the spool (1, 2, 3...).
    pub cursor: u64,
    /// The uploading device.
    pub device: Address,
    /// The upload epoch of the device's boot that sent it (docs/protocol.md section 4, "Upload
    /// semantics"); 0 for records stored before the spool kept epochs.
    pub upload_epoch: u64,
    /// The device's upload id.
    pub upload_id: u32,
    /// Topic string.
    pub topic: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// Unix ms when it became durable.
    pub received_at_ms: u64,
}

impl UploadRecord {
    /// The consumer-side duplicate key of this upload (see [`upload_dedup_key`]).
    pub fn dedup_key(&self) -> String {
        upload_dedup_key(self.device, self.upload_epoch, self.upload_id)
    }
}

/// The key a consumer drops duplicate uploads by: `<device id>:<upload epoch, 16 lower-case hex
/// digits>:<upload id>`. Unique per genuine upload: a device draws a new epoch every boot, and
/// within a boot its upload ids do not repeat (docs/storage.md).
pub fn upload_dedup_key(device: Address, upload_epoch: u64, upload_id: u32) -> String {
    format!("{}:{upload_epoch:016x}:{upload_id}", device.id)
}

/// Result of [`UploadSpool::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolAppended {
    /// The record's cursor.
    pub cursor: u64,
    /// True when an identical upload (same device, upload epoch, upload id, topic and payload)
    /// was already stored: nothing new was written and `cursor` is the earlier record's.
    pub duplicate: bool,
}

/// Size and retention counters of an upload spool ([`UploadSpool::spool_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records kept.
    pub records: u64,
    /// Bytes of the kept records (as stored).
    pub bytes: u64,
    /// Cursor of the oldest kept record (0 when empty): a reader positioned before
    /// `first_cursor - 1` lost records to retention.
    pub first_cursor: u64,
    /// Records every named consumer had passed, deleted (ever).
    pub trimmed: u64,
    /// Records dropped unconsumed because they were older than the age cap (ever).
    pub dropped_age: u64,
    /// Records dropped unconsumed because of the record or byte cap (ever).
    pub dropped_size: u64,
}

/// How many records a reader positioned at `after` lost to spool retention, given the first
/// record [`UploadSpool::read`] returned it: records are numbered without gaps, so a first
/// cursor above `after + 1` means the ones in between were dropped before it read them.
pub fn retention_gap(after: u64, first: Option<&UploadRecord>) -> u64 {
    first.map_or(0, |r| r.cursor.saturating_sub(after.saturating_add(1)))
}

/// One upload for [`UploadSpool::append_many`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUpload {
    /// The device's upload id.
    pub upload_id: u32,
    /// Topic string.
    pub topic: String,
    /// Opaque payload.
    pub payload: Bytes,
}

/// A durable, append-only log of device uploads, read by cursor.
#[async_trait]
pub trait UploadSpool: Send + Sync + 'static {
    /// Appends uploads of one device session (`device`, sent in its boot `upload_epoch`)
    /// durably, in this order: an upload is stored only if every one before it was. One result
    /// per upload, in order. The default appends one at a time and fails the rest after the
    /// first failure; a store may commit them together.
    async fn append_many(
        &self,
        device: Address,
        upload_epoch: u64,
        uploads: Vec<NewUpload>,
        now_ms: u64,
    ) -> Vec<Result<SpoolAppended, StoreError>> {
        let mut out = Vec::with_capacity(uploads.len());
        for u in uploads {
            let r = match out.last() {
                Some(Err(e)) => Err(StoreError::clone(e)),
                _ => {
                    self.append(
                        device,
                        upload_epoch,
                        u.upload_id,
                        &u.topic,
                        u.payload,
                        now_ms,
                    )
                    .await
                }
            };
            out.push(r);
        }
        out
    }
    /// Appends durably (returns only after commit). An upload with the same device, epoch and
    /// upload id as a stored one, and the same topic and payload, is a resend: not stored again
    /// ([`SpoolAppended::duplicate`]). The same device and upload id under another epoch is a
    /// new upload.
    async fn append(
        &self,
        device: Address,
        upload_epoch: u64,
        upload_id: u32,
        topic: &str,
        payload: Bytes,
        now_ms: u64,
    ) -> Result<SpoolAppended, StoreError>;
    /// Records with cursor greater than `after`, in order, at most `limit`.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<UploadRecord>, StoreError>;
    /// The last cursor issued (0 when empty).
    async fn head(&self) -> Result<u64, StoreError>;
    /// A named consumer's persisted position (0 when never saved).
    async fn consumer_cursor(&self, consumer: &str) -> Result<u64, StoreError>;
    /// Persists a named consumer's position.
    async fn set_consumer_cursor(&self, consumer: &str, cursor: u64) -> Result<(), StoreError>;
    /// Size and retention counters.
    async fn spool_stats(&self) -> Result<SpoolStats, StoreError>;
}

/// Phone <-> device bindings (a phone may talk only to devices bound to it, and vice versa).
#[async_trait]
pub trait Bindings: Send + Sync + 'static {
    /// Binds; `Ok(false)` when already bound.
    async fn bind(&self, phone: Address, device: Address) -> Result<bool, StoreError>;
    /// Unbinds; `Ok(false)` when not bound.
    async fn unbind(&self, phone: Address, device: Address) -> Result<bool, StoreError>;
    /// Whether bound.
    async fn is_bound(&self, phone: Address, device: Address) -> Result<bool, StoreError>;
    /// Devices bound to `phone`, ordered.
    async fn devices_of(&self, phone: Address) -> Result<Vec<Address>, StoreError>;
    /// Phones bound to `device`, ordered.
    async fn phones_of(&self, device: Address) -> Result<Vec<Address>, StoreError>;
}

/// Named groups of addresses (push targets).
#[async_trait]
pub trait Groups: Send + Sync + 'static {
    /// Replaces the group's members (creates it); an empty list keeps an empty group.
    async fn set(&self, name: &str, members: &[Address]) -> Result<(), StoreError>;
    /// Adds and removes members (creates the group); returns the member count after.
    async fn update(
        &self,
        name: &str,
        add: &[Address],
        remove: &[Address],
    ) -> Result<u64, StoreError>;
    /// The group's members, ordered; `None` when no such group.
    async fn members(&self, name: &str) -> Result<Option<Vec<Address>>, StoreError>;
    /// Deletes the group; `Ok(false)` when it did not exist.
    async fn delete(&self, name: &str) -> Result<bool, StoreError>;
    /// All groups with their member counts, ordered by name.
    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Checks a group name: 1..=128 bytes of `[A-Za-z0-9._-]`.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The set of stores the router uses.
#[derive(Clone)]
pub struct Stores {
    /// Offline messages.
    pub offline: Arc<dyn OfflineStore>,
    /// Upload spool.
    pub uploads: Arc<dyn UploadSpool>,
    /// Bindings.
    pub bindings: Arc<dyn Bindings>,
    /// Groups.
    pub groups: Arc<dyn Groups>,
}
