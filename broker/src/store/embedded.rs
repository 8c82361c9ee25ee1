//! The embedded store: every trait of [`crate::store`] on one redb database file
//! (`<data_dir>/store.redb`).
//!
//! Crash safety: each mutating call runs in a write transaction committed with redb's default
//! `Durability::Immediate` (fsync) before `Ok` is returned, so a `kill -9` loses nothing that was
//! acknowledged. Writes that arrive together share one transaction and one fsync
//! ([`GroupCommit`]'s writer thread); reads run on tokio's blocking pool (redb calls block).
//! The one exception is the offline store's acknowledgement cursors and first-login records:
//! their loss only causes a redelivery the terminal drops, so they commit lazily, without an
//! fsync, and an acknowledgement does not even wait for its commit: it moves the cursor in memory
//! and the writer's next transaction writes it (`offline` module docs say exactly what a crash
//! loses).
//!
//! The offline store (module `offline`) keeps an in-memory [`delivery_index`] of every
//! terminal's pending deliveries, loaded at open, so logins and acks that cover nothing touch no
//! table; the bindings keep a count of each device's phones in memory ([`bound_devices`]), so
//! the presence lookup of a login or logout of an unbound device touches none either.
//!
//! Layout (keys are packed addresses, see [`Address::to_key`]):
//! * `meta`: counters (`next_msg_id`: one above the last id issued, see [`super::msg_id`];
//!   `upload_head`) and `cursor:<consumer>` positions.
//! * `messages`: msg id -> record (expiry, inbox reference count, sender, payload): a message is
//!   stored once.
//! * `expiry`: (expires_at, msg id) for purging.
//! * `inbox`: (terminal, msg id) references of messages addressed by name, all above the
//!   terminal's cursor.
//! * `broadcasts`: msg id -> class (0: every kind, else the kind's number plus one) of each
//!   kind-wide push: one record per broadcast; its body lives until it expires.
//! * `broadcast_skips`: (msg id, terminal) for a broadcast a full inbox refused (`reject-new`).
//! * `known_since`: terminal -> the last id issued when it was first remembered at login; the
//!   broadcasts of its class above it are for it.
//! * `cursors`: terminal -> the id it acknowledged through (everything at or below is done).
//! * `uploads`: cursor -> record; `upload_epochs`: cursor -> the record's upload epoch (absent,
//!   read as 0, for records written before epochs were kept); `upload_dedupe_epoch`: (device,
//!   epoch, upload id) -> cursor. The epoch-less `upload_dedupe` of older files is dropped at open:
//!   no device of an older protocol version can log in to resend into it.
//!   The spool is trimmed and capped by [`spool_retention`] (its counters live in `meta`).
//! * `bind_pd`/`bind_dp`: bindings both ways; `groups`: (name, member); `group_count`: name -> count.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

mod bound_devices;
pub mod delivery_index;
mod offline;
pub mod spool_retention;

pub use spool_retention::SpoolRetention;

use super::group_commit::{self, GroupCommit};
use super::{
    Bindings, Groups, NewUpload, SpoolAppended, SpoolStats, StoreError, Stores, UploadRecord,
    UploadSpool, valid_group_name,
};
use crate::terminal::EvictionPolicy;
use crate::terminal::{Address, AddressKey, from_key};
use bound_devices::BoundDevices;
use offline::SharedIndex;

/// File name of the database inside the data directory.
pub const STORE_FILE: &str = "store.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("expiry");
const INBOX: TableDefinition<(u64, u64), ()> = TableDefinition::new("inbox");
/// Per-terminal reference counts of files written before the delivery index (dropped at open).
const OLD_INBOX_COUNT: &str = "inbox_count";
/// Remembered terminals of files written before broadcast records (moved to `known_since`).
const OLD_KNOWN: TableDefinition<u64, ()> = TableDefinition::new("known");
const KNOWN_SINCE: TableDefinition<u64, u64> = TableDefinition::new("known_since");
const CURSORS: TableDefinition<u64, u64> = TableDefinition::new("cursors");
const BROADCASTS: TableDefinition<u64, u8> = TableDefinition::new("broadcasts");
const SKIPPED: TableDefinition<(u64, u64), ()> = TableDefinition::new("broadcast_skips");
const UPLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("uploads");
const UPLOAD_EPOCHS: TableDefinition<u64, u64> = TableDefinition::new("upload_epochs");
const UPLOAD_DEDUPE: TableDefinition<(u64, u64, u32), u64> =
    TableDefinition::new("upload_dedupe_epoch");
/// The de-duplication table of files written before upload epochs (key: device, upload id).
const OLD_UPLOAD_DEDUPE: &str = "upload_dedupe";
const BIND_PD: TableDefinition<(u64, u64), ()> = TableDefinition::new("bind_pd");
const BIND_DP: TableDefinition<(u64, u64), ()> = TableDefinition::new("bind_dp");
const GROUPS: TableDefinition<(&str, u64), ()> = TableDefinition::new("groups");
const GROUP_COUNT: TableDefinition<&str, u64> = TableDefinition::new("group_count");

macro_rules! backend_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Per-terminal cap of the offline store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineLimits {
    /// References kept per terminal.
    pub max_per_terminal: u64,
    /// What to do when a terminal is at the cap.
    pub eviction: EvictionPolicy,
}

/// How many times the store went to the database since it was opened (see
/// [`EmbeddedStore::ops`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOps {
    /// Read transactions.
    pub reads: u64,
    /// Durable writes (each committed with an fsync, possibly shared with others).
    pub durable_writes: u64,
    /// Lazy writes (committed without waiting for an fsync), counting each batch of
    /// acknowledgements that asked the writer for a commit once.
    pub lazy_writes: u64,
}

#[derive(Default)]
struct OpCounters {
    reads: AtomicU64,
    durable_writes: AtomicU64,
    lazy_writes: AtomicU64,
}

/// How much memory the embedded store may hold: the writer's queue and the page cache
/// (`storage.writer_queue` and `storage.cache_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreTuning {
    /// Write requests that may wait for the writer (see [`GroupCommit`]).
    pub writer_queue: usize,
    /// Bytes of redb's page cache (a tenth of it for pages being written). The cache fills up
    /// to the store file's size and stays there.
    pub cache_bytes: usize,
}

impl Default for StoreTuning {
    /// 512 queued writes and redb's own 1 GiB cache (the `[storage]` section's defaults).
    fn default() -> Self {
        StoreTuning {
            writer_queue: 512,
            cache_bytes: 1 << 30,
        }
    }
}

/// The redb-backed store; implements every store trait.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: GroupCommit,
    index: SharedIndex,
    /// Which devices have a phone bound, so logins of unbound devices read nothing.
    bound: BoundDevices,
    ops: OpCounters,
    limits: OfflineLimits,
    retention: SpoolRetention,
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/store.redb` with mode 0600 (narrowing an existing wider file),
    /// creating `dir` if needed.
    pub fn open(dir: &Path, limits: OfflineLimits) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::open_with_retention(dir, limits, SpoolRetention::default())
    }

    /// [`EmbeddedStore::open`] with the upload spool's retention (see [`spool_retention`];
    /// `open` keeps every record).
    pub fn open_with_retention(
        dir: &Path,
        limits: OfflineLimits,
        retention: SpoolRetention,
    ) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::open_tuned(dir, limits, retention, StoreTuning::default())
    }

    /// [`EmbeddedStore::open_with_retention`] with the writer's queue and the page cache sized
    /// by `tuning` (the `[storage]` keys; see [`StoreTuning`]).
    pub fn open_tuned(
        dir: &Path,
        limits: OfflineLimits,
        retention: SpoolRetention,
        tuning: StoreTuning,
    ) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::open_inner(dir, limits, retention, tuning, group_commit::LAZY_WINDOW)
    }

    /// [`EmbeddedStore::open_tuned`] with lazy writes made durable within `lazy_window` (see
    /// [`GroupCommit::write_lazy`]).
    fn open_inner(
        dir: &Path,
        limits: OfflineLimits,
        retention: SpoolRetention,
        tuning: StoreTuning,
        lazy_window: std::time::Duration,
    ) -> Result<Arc<EmbeddedStore>, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let path = dir.join(STORE_FILE);
        // Payloads live here: the file is 0600 before redb writes to it, even if it existed wider.
        crate::private_files::open_private(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let db = Database::builder()
            .set_cache_size(tuning.cache_bytes)
            .create(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write()?;
        txn.open_table(META)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(INBOX)?;
        let old_counts: TableDefinition<u64, u64> = TableDefinition::new(OLD_INBOX_COUNT);
        txn.delete_table(old_counts)?;
        {
            let mut known = txn.open_table(KNOWN_SINCE)?;
            let old = txn.open_table(OLD_KNOWN)?;
            for e in old.iter()? {
                // Terminals known before broadcast records: every broadcast record is newer.
                known.insert(e?.0.value(), 0)?;
            }
        }
        txn.delete_table(OLD_KNOWN)?;
        txn.open_table(CURSORS)?;
        txn.open_table(BROADCASTS)?;
        txn.open_table(SKIPPED)?;
        txn.open_table(UPLOADS)?;
        txn.open_table(UPLOAD_EPOCHS)?;
        txn.open_table(UPLOAD_DEDUPE)?;
        let old: TableDefinition<(u64, u32), u64> = TableDefinition::new(OLD_UPLOAD_DEDUPE);
        txn.delete_table(old)?;
        txn.open_table(BIND_PD)?;
        txn.open_table(BIND_DP)?;
        txn.open_table(GROUPS)?;
        txn.open_table(GROUP_COUNT)?;
        spool_retention::init_bytes(&txn)?;
        txn.commit()?;
        let db = Arc::new(db);
        let index: SharedIndex = Arc::new(std::sync::Mutex::new(offline::load_index(&db)?));
        let bound = BoundDevices::load(&db)?;
        let reload = {
            let (db, index) = (db.clone(), index.clone());
            move || match offline::load_index(&db) {
                Ok(mut fresh) => {
                    let mut ix = offline::lock(&index);
                    ix.carry_known_into(&mut fresh);
                    *ix = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "delivery index not reloaded after a rollback")
                }
            }
        };
        Ok(Arc::new(EmbeddedStore {
            writer: GroupCommit::start_with(
                db.clone(),
                tuning.writer_queue,
                lazy_window,
                group_commit::Hooks {
                    on_rollback: Box::new(reload),
                    before_batch: {
                        let index = index.clone();
                        Box::new(move |txn: &WriteTransaction| offline::write_unsaved(txn, &index))
                    },
                },
            )?,
            index,
            bound,
            ops: OpCounters::default(),
            db,
            limits,
            retention,
        }))
    }

    /// This store as the router's [`Stores`].
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores {
            offline: self.clone(),
            uploads: self.clone(),
            bindings: self.clone(),
            groups: self.clone(),
        }
    }

    /// How many reads and writes the store made since it was opened (the login and ack paths
    /// are meant to make none when there is nothing to do).
    pub fn ops(&self) -> StoreOps {
        StoreOps {
            reads: self.ops.reads.load(Ordering::Relaxed),
            durable_writes: self.ops.durable_writes.load(Ordering::Relaxed),
            lazy_writes: self.ops.lazy_writes.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` in a write transaction, committed together with concurrent writes (see
    /// [`GroupCommit`]); returns once it is durable.
    async fn write<T, F>(&self, mut work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction, OfflineLimits) -> Result<T, StoreError> + Send + 'static,
    {
        self.ops.durable_writes.fetch_add(1, Ordering::Relaxed);
        let limits = self.limits;
        self.writer.write(move |txn| work(txn, limits)).await
    }

    /// [`EmbeddedStore::write`] for a write a crash may undo ([`GroupCommit::write_lazy`]).
    async fn write_lazy<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.ops.lazy_writes.fetch_add(1, Ordering::Relaxed);
        self.writer.write_lazy(work).await
    }

    /// Returns once every acknowledgement made before the call is committed (lazily: without an
    /// fsync). Acknowledgements never wait for that themselves; tests and shutdown paths may.
    pub async fn sync_acks(&self) -> Result<(), StoreError> {
        self.write_lazy(|_| Ok(())).await
    }

    /// Runs read-only `f` on tokio's blocking pool (redb calls block).
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, OfflineLimits) -> Result<T, StoreError> + Send + 'static,
    {
        self.ops.reads.fetch_add(1, Ordering::Relaxed);
        let db = self.db.clone();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || f(&db, limits))
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }
}

// ---- record encodings -------------------------------------------------------------------------

/// Encodes an upload spool record as stored in `uploads` (the inverse of [`decode_upload`]).
pub fn encode_upload(
    device: Address,
    upload_id: u32,
    received_at_ms: u64,
    topic: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(22 + topic.len() + payload.len());
    v.extend_from_slice(&device.to_key().to_le_bytes());
    v.extend_from_slice(&upload_id.to_le_bytes());
    v.extend_from_slice(&received_at_ms.to_le_bytes());
    v.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(payload);
    v
}

/// Decodes a stored upload spool record (its epoch is kept apart, in `upload_epochs`); bytes
/// that are not one give [`StoreError::Corrupt`].
pub fn decode_upload(cursor: u64, upload_epoch: u64, b: &[u8]) -> Result<UploadRecord, StoreError> {
    let bad = || StoreError::Corrupt(format!("upload record {cursor}"));
    if b.len() < 22 {
        return Err(bad());
    }
    let device =
        from_key(u64::from_le_bytes(b[0..8].try_into().map_err(|_| bad())?)).ok_or_else(bad)?;
    let upload_id = u32::from_le_bytes(b[8..12].try_into().map_err(|_| bad())?);
    let received_at_ms = u64::from_le_bytes(b[12..20].try_into().map_err(|_| bad())?);
    let tlen = usize::from(u16::from_le_bytes(b[20..22].try_into().map_err(|_| bad())?));
    let topic = b.get(22..22 + tlen).ok_or_else(bad)?;
    let topic = std::str::from_utf8(topic).map_err(|_| bad())?.to_string();
    let payload = Bytes::copy_from_slice(&b[22 + tlen..]);
    Ok(UploadRecord {
        cursor,
        device,
        upload_epoch,
        upload_id,
        topic,
        payload,
        received_at_ms,
    })
}

// ---- upload spool -----------------------------------------------------------------------------

/// Appends one upload of `device`'s boot `upload_epoch` inside `txn` (deduplicating an identical
/// resend of the same epoch), then applies the spool's retention.
fn spool_one(
    txn: &WriteTransaction,
    retention: SpoolRetention,
    device: Address,
    upload_epoch: u64,
    upload: &NewUpload,
    now_ms: u64,
) -> Result<SpoolAppended, StoreError> {
    let NewUpload {
        upload_id,
        topic,
        payload,
    } = upload;
    let upload_id = *upload_id;
    let dev = device.to_key();
    if let Some(prev) = txn
        .open_table(UPLOAD_DEDUPE)?
        .get((dev, upload_epoch, upload_id))?
        .map(|g| g.value())
        && let Some(g) = txn.open_table(UPLOADS)?.get(prev)?
    {
        let rec = decode_upload(prev, upload_epoch, g.value())?;
        if rec.topic == *topic && rec.payload == payload {
            return Ok(SpoolAppended {
                cursor: prev,
                duplicate: true,
            });
        }
    }
    let cursor = {
        let mut meta = txn.open_table(META)?;
        let c = meta.get("upload_head")?.map_or(0, |g| g.value()) + 1;
        meta.insert("upload_head", c)?;
        c
    };
    let rec = encode_upload(device, upload_id, now_ms, topic, payload);
    txn.open_table(UPLOADS)?.insert(cursor, rec.as_slice())?;
    txn.open_table(UPLOAD_EPOCHS)?
        .insert(cursor, upload_epoch)?;
    txn.open_table(UPLOAD_DEDUPE)?
        .insert((dev, upload_epoch, upload_id), cursor)?;
    spool_retention::trim_consumed(txn, retention)?;
    spool_retention::enforce_caps(txn, retention, cursor, rec.len() as u64, now_ms)?;
    Ok(SpoolAppended {
        cursor,
        duplicate: false,
    })
}

#[async_trait]
impl UploadSpool for EmbeddedStore {
    async fn append(
        &self,
        device: Address,
        upload_epoch: u64,
        upload_id: u32,
        topic: &str,
        payload: Bytes,
        now_ms: u64,
    ) -> Result<SpoolAppended, StoreError> {
        let upload = NewUpload {
            upload_id,
            topic: topic.to_string(),
            payload,
        };
        let r = self.retention;
        self.write(move |txn, _| spool_one(txn, r, device, upload_epoch, &upload, now_ms))
            .await
    }

    /// One transaction for all (so one commit, shared with concurrent writes): all are stored, in
    /// order, or none.
    async fn append_many(
        &self,
        device: Address,
        upload_epoch: u64,
        uploads: Vec<NewUpload>,
        now_ms: u64,
    ) -> Vec<Result<SpoolAppended, StoreError>> {
        let n = uploads.len();
        let retention = self.retention;
        let r = self
            .write(move |txn, _| {
                uploads
                    .iter()
                    .map(|u| spool_one(txn, retention, device, upload_epoch, u, now_ms))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        match r {
            Ok(v) => v.into_iter().map(Ok).collect(),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<UploadRecord>, StoreError> {
        self.run(move |db, _| {
            let read = db.begin_read()?;
            let uploads = read.open_table(UPLOADS)?;
            let epochs = read.open_table(UPLOAD_EPOCHS)?;
            let mut out = Vec::new();
            for e in uploads.range(after.saturating_add(1)..)?.take(limit) {
                let (k, v) = e?;
                let cursor = k.value();
                let epoch = epochs.get(cursor)?.map_or(0, |g| g.value());
                out.push(decode_upload(cursor, epoch, v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.run(|db, _| {
            Ok(db
                .begin_read()?
                .open_table(META)?
                .get("upload_head")?
                .map_or(0, |g| g.value()))
        })
        .await
    }

    async fn consumer_cursor(&self, consumer: &str) -> Result<u64, StoreError> {
        let key = format!("cursor:{consumer}");
        self.run(move |db, _| {
            Ok(db
                .begin_read()?
                .open_table(META)?
                .get(key.as_str())?
                .map_or(0, |g| g.value()))
        })
        .await
    }

    async fn set_consumer_cursor(&self, consumer: &str, cursor: u64) -> Result<(), StoreError> {
        let key = format!("cursor:{consumer}");
        let retention = self.retention;
        self.write(move |txn, _| {
            txn.open_table(META)?.insert(key.as_str(), cursor)?;
            spool_retention::trim_consumed(txn, retention)?;
            Ok(())
        })
        .await
    }

    async fn spool_stats(&self) -> Result<SpoolStats, StoreError> {
        self.run(|db, _| {
            let read = db.begin_read()?;
            let meta = read.open_table(META)?;
            let get =
                |k: &str| -> Result<u64, StoreError> { Ok(meta.get(k)?.map_or(0, |g| g.value())) };
            let uploads = read.open_table(UPLOADS)?;
            Ok(SpoolStats {
                records: uploads.len()?,
                bytes: get(spool_retention::BYTES_KEY)?,
                first_cursor: uploads.first()?.map_or(0, |(k, _)| k.value()),
                trimmed: get(spool_retention::TRIMMED_KEY)?,
                dropped_age: get(spool_retention::DROPPED_AGE_KEY)?,
                dropped_size: get(spool_retention::DROPPED_SIZE_KEY)?,
            })
        })
        .await
    }
}

// ---- bindings ---------------------------------------------------------------------------------

#[async_trait]
impl Bindings for EmbeddedStore {
    async fn bind(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        // Counted before the write, so a login meanwhile reads the table (see `bound_devices`).
        self.bound.count_up(device.to_key());
        let r = self
            .write(move |txn, _| {
                let (p, d) = (phone.to_key(), device.to_key());
                let new = txn.open_table(BIND_PD)?.insert((p, d), ())?.is_none();
                txn.open_table(BIND_DP)?.insert((d, p), ())?;
                Ok(new)
            })
            .await;
        if !matches!(r, Ok(true)) {
            self.bound.count_down(device.to_key());
        }
        r
    }

    async fn unbind(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        let r = self
            .write(move |txn, _| {
                let (p, d) = (phone.to_key(), device.to_key());
                let existed = txn.open_table(BIND_PD)?.remove((p, d))?.is_some();
                txn.open_table(BIND_DP)?.remove((d, p))?;
                Ok(existed)
            })
            .await;
        if matches!(r, Ok(true)) {
            self.bound.count_down(device.to_key());
        }
        r
    }

    async fn is_bound(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        self.run(move |db, _| {
            Ok(db
                .begin_read()?
                .open_table(BIND_PD)?
                .get((phone.to_key(), device.to_key()))?
                .is_some())
        })
        .await
    }

    async fn devices_of(&self, phone: Address) -> Result<Vec<Address>, StoreError> {
        self.run(move |db, _| pairs(db, BIND_PD, phone.to_key()))
            .await
    }

    async fn phones_of(&self, device: Address) -> Result<Vec<Address>, StoreError> {
        // Asked at every login and logout: a device with no binding reads nothing.
        if !self.bound.may_have(device.to_key()) {
            return Ok(Vec::new());
        }
        self.run(move |db, _| pairs(db, BIND_DP, device.to_key()))
            .await
    }
}

fn pairs(
    db: &Database,
    table: TableDefinition<(u64, u64), ()>,
    first: u64,
) -> Result<Vec<Address>, StoreError> {
    let read = db.begin_read()?;
    let t = read.open_table(table)?;
    let mut out = Vec::new();
    for e in t.range((first, 0)..=(first, u64::MAX))? {
        let key = e?.0.value().1;
        out.push(from_key(key).ok_or_else(|| StoreError::Corrupt("binding key".into()))?);
    }
    Ok(out)
}

// ---- groups -----------------------------------------------------------------------------------

fn group_members(
    txn_table: &impl ReadableTable<(&'static str, u64), ()>,
    name: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for e in txn_table.range((name, 0)..=(name, u64::MAX))? {
        out.push(e?.0.value().1);
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if valid_group_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidGroupName)
    }
}

#[async_trait]
impl Groups for EmbeddedStore {
    async fn set(&self, name: &str, members: &[Address]) -> Result<(), StoreError> {
        check_name(name)?;
        let name = name.to_string();
        let mut keys: Vec<u64> = members.iter().map(|a| a.to_key()).collect();
        keys.sort_unstable();
        keys.dedup();
        self.write(move |txn, _| {
            {
                let mut groups = txn.open_table(GROUPS)?;
                for old in group_members(&groups, &name)? {
                    groups.remove((name.as_str(), old))?;
                }
                for k in &keys {
                    groups.insert((name.as_str(), *k), ())?;
                }
                txn.open_table(GROUP_COUNT)?
                    .insert(name.as_str(), keys.len() as u64)?;
            }
            Ok(())
        })
        .await
    }

    async fn update(
        &self,
        name: &str,
        add: &[Address],
        remove: &[Address],
    ) -> Result<u64, StoreError> {
        check_name(name)?;
        let name = name.to_string();
        let add: Vec<u64> = add.iter().map(|a| a.to_key()).collect();
        let remove: Vec<u64> = remove.iter().map(|a| a.to_key()).collect();
        self.write(move |txn, _| {
            let count = {
                let mut groups = txn.open_table(GROUPS)?;
                let mut counts = txn.open_table(GROUP_COUNT)?;
                let mut n = counts.get(name.as_str())?.map_or(0, |g| g.value());
                for k in &add {
                    if groups.insert((name.as_str(), *k), ())?.is_none() {
                        n += 1;
                    }
                }
                for k in &remove {
                    if groups.remove((name.as_str(), *k))?.is_some() {
                        n -= 1;
                    }
                }
                counts.insert(name.as_str(), n)?;
                n
            };
            Ok(count)
        })
        .await
    }

    async fn members(&self, name: &str) -> Result<Option<Vec<Address>>, StoreError> {
        let name = name.to_string();
        self.run(move |db, _| {
            let read = db.begin_read()?;
            if read.open_table(GROUP_COUNT)?.get(name.as_str())?.is_none() {
                return Ok(None);
            }
            let keys = group_members(&read.open_table(GROUPS)?, &name)?;
            let out = keys
                .into_iter()
                .map(|k| from_key(k).ok_or_else(|| StoreError::Corrupt("group member".into())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(out))
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.write(move |txn, _| {
            let existed = {
                let mut groups = txn.open_table(GROUPS)?;
                for old in group_members(&groups, &name)? {
                    groups.remove((name.as_str(), old))?;
                }
                txn.open_table(GROUP_COUNT)?
                    .remove(name.as_str())?
                    .is_some()
            };
            Ok(existed)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.run(|db, _| {
            let read = db.begin_read()?;
            let mut out = Vec::new();
            for e in read.open_table(GROUP_COUNT)?.iter()? {
                let (k, v) = e?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::{NewMessage, OfflineStore, Recipients};

    /// Devices `1..=n`, each remembered (its first login) in `s`.
    async fn first_logins(s: &EmbeddedStore, n: u32) -> Vec<Address> {
        let devices: Vec<Address> = (1..=n).map(Address::device).collect();
        for d in &devices {
            s.remember(*d).await.unwrap();
        }
        devices
    }

    fn open(dir: &Path, cap: u64, eviction: EvictionPolicy) -> Arc<EmbeddedStore> {
        EmbeddedStore::open(
            dir,
            OfflineLimits {
                max_per_terminal: cap,
                eviction,
            },
        )
        .unwrap()
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn store_file_is_0600_even_if_it_existed_wider() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        // A fresh store is created 0600.
        drop(open(dir.path(), 3, EvictionPolicy::DropOldest));
        assert_eq!(mode(&path), 0o600);
        // An existing one left 0644 (copied in, or made by an older version) is narrowed, and
        // its data is kept.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = open(dir.path(), 3, EvictionPolicy::DropOldest);
        assert_eq!(mode(&path), 0o600);
        assert!(
            Bindings::bind(&*store, Address::phone(1), Address::device(2))
                .await
                .unwrap()
        );
        drop(store);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let store = open(dir.path(), 3, EvictionPolicy::DropOldest);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            Bindings::devices_of(&*store, Address::phone(1))
                .await
                .unwrap(),
            vec![Address::device(2)]
        );
    }

    #[tokio::test]
    async fn offline_store_conformance_drop_oldest() {
        let dir = tempfile::tempdir().unwrap();
        conformance::offline_store(
            open(dir.path(), 3, EvictionPolicy::DropOldest),
            3,
            EvictionPolicy::DropOldest,
        )
        .await;
    }

    #[tokio::test]
    async fn offline_store_conformance_reject_new() {
        let dir = tempfile::tempdir().unwrap();
        conformance::offline_store(
            open(dir.path(), 3, EvictionPolicy::RejectNew),
            3,
            EvictionPolicy::RejectNew,
        )
        .await;
    }

    #[tokio::test]
    async fn upload_spool_conformance() {
        let dir = tempfile::tempdir().unwrap();
        conformance::upload_spool(open(dir.path(), 10, EvictionPolicy::DropOldest)).await;
    }

    #[tokio::test]
    async fn bindings_conformance() {
        let dir = tempfile::tempdir().unwrap();
        conformance::bindings(open(dir.path(), 10, EvictionPolicy::DropOldest)).await;
    }

    #[tokio::test]
    async fn groups_conformance() {
        let dir = tempfile::tempdir().unwrap();
        conformance::groups(open(dir.path(), 10, EvictionPolicy::DropOldest)).await;
    }

    #[tokio::test]
    async fn ids_never_go_back_across_reopen_and_clock_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        conformance::ids_never_go_back(|| {
            let store: Arc<dyn OfflineStore> = open(&path, 100, EvictionPolicy::DropOldest);
            std::future::ready(store)
        })
        .await;
    }

    /// What happens between the ack and the crash in
    /// [`a_crash_loses_only_lazy_acks_and_their_messages_come_back`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum AfterAck {
        /// The crash comes at once.
        Nothing,
        /// A durable write comes first.
        DurableWrite,
        /// Nothing for longer than the lazy window.
        Idle,
    }

    impl AfterAck {
        const ALL: [AfterAck; 3] = [AfterAck::Nothing, AfterAck::DurableWrite, AfterAck::Idle];

        fn name(self) -> String {
            format!("{self:?}")
        }

        fn from_name(name: &str) -> AfterAck {
            Self::ALL
                .into_iter()
                .find(|a| a.name() == name)
                .expect("a known crash mode")
        }
    }

    /// The lazy window of the crash child that idles after its ack (long enough for the ack's
    /// commit, right after two durable appends, to be a lazy one).
    const IDLE_CHILD_WINDOW: std::time::Duration = std::time::Duration::from_millis(400);

    /// What the crash child of
    /// [`a_crash_loses_only_lazy_acks_and_their_messages_come_back`] does before it exits
    /// without closing the store, in the directory named by `CRASH_DIR`.
    async fn crash_child(dir: &Path, after_ack: AfterAck) {
        let limits = OfflineLimits {
            max_per_terminal: 10,
            eviction: EvictionPolicy::DropOldest,
        };
        let lazy_window = match after_ack {
            AfterAck::Idle => IDLE_CHILD_WINDOW,
            AfterAck::Nothing | AfterAck::DurableWrite => std::time::Duration::from_secs(3600),
        };
        let s = EmbeddedStore::open_inner(
            dir,
            limits,
            SpoolRetention::default(),
            StoreTuning::default(),
            lazy_window,
        )
        .unwrap();
        let a = Address::device(5);
        let msg = |p: &'static [u8]| NewMessage {
            from: None,
            payload: Bytes::from_static(p),
            expires_at_ms: u64::MAX,
        };
        let first = OfflineStore::append(&*s, Recipients::List(vec![a]), msg(b"1"), 0)
            .await
            .unwrap();
        OfflineStore::append(&*s, Recipients::List(vec![a]), msg(b"2"), 0)
            .await
            .unwrap();
        assert!(s.ack(a, first.msg_id).await.unwrap());
        assert_eq!(s.since(a, 0, 10, 0).await.unwrap().len(), 1);
        match after_ack {
            AfterAck::Nothing => {}
            AfterAck::DurableWrite => {
                s.bind(Address::phone(1), a).await.unwrap();
            }
            AfterAck::Idle => tokio::time::sleep(3 * IDLE_CHILD_WINDOW).await,
        }
        // A crash: the process ends with the store open (no clean close, no final commit).
        std::process::exit(0);
    }

    /// An acknowledgement commits without an fsync: a crash right after it loses it, and the
    /// acknowledged message is replayed after the restart (a redelivery the terminal drops as a
    /// duplicate); a durable write after the ack persists it, and so does the lazy window
    /// passing with nothing else to write (the writer then commits durably on its own). Runs
    /// the crash in a child process (this test binary, re-run on this test alone).
    #[test]
    fn a_crash_loses_only_lazy_acks_and_their_messages_come_back() {
        const NAME: &str =
            "store::embedded::tests::a_crash_loses_only_lazy_acks_and_their_messages_come_back";
        if let Ok(dir) = std::env::var("CRASH_DIR") {
            let after_ack = AfterAck::from_name(&std::env::var("CRASH_AFTER_ACK").unwrap());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(crash_child(Path::new(&dir), after_ack));
            unreachable!("the crash child exits");
        }
        for after_ack in AfterAck::ALL {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env("CRASH_DIR", dir.path())
                .env("CRASH_AFTER_ACK", after_ack.name())
                .status()
                .unwrap();
            assert!(status.success(), "crash child ({after_ack:?}): {status}");
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
                let left: Vec<Bytes> = s
                    .since(Address::device(5), 0, 10, 0)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.payload)
                    .collect();
                if after_ack == AfterAck::Nothing {
                    assert_eq!(
                        left,
                        vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")],
                        "the ack was lost: its message comes back"
                    );
                } else {
                    assert_eq!(
                        left,
                        vec![Bytes::from_static(b"2")],
                        "{after_ack:?}: the ack persisted"
                    );
                }
            });
        }
    }

    /// A file written before broadcast records (terminals in `known`, counts in `inbox_count`)
    /// opens: its terminals are remembered (a broadcast reaches them) and its inboxes kept.
    #[tokio::test]
    async fn a_file_from_before_broadcast_records_opens_with_its_terminals_known() {
        let dir = tempfile::tempdir().unwrap();
        let d = Address::device(5);
        {
            let db = Database::create(dir.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(OLD_KNOWN)
                .unwrap()
                .insert(d.to_key(), ())
                .unwrap();
            let counts: TableDefinition<u64, u64> = TableDefinition::new(OLD_INBOX_COUNT);
            txn.open_table(counts)
                .unwrap()
                .insert(d.to_key(), 0)
                .unwrap();
            txn.commit().unwrap();
        }
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        let msg = NewMessage {
            from: None,
            payload: Bytes::from_static(b"all"),
            expires_at_ms: u64::MAX,
        };
        let bc = OfflineStore::append(&*s, Recipients::Known(None), msg, 0)
            .await
            .unwrap();
        assert_eq!(bc.stored_for, 1);
        assert_eq!(s.since(d, 0, 10, 0).await.unwrap()[0].msg_id, bc.msg_id);
    }

    /// A broadcast to many terminals is one durable write; their acks wait for no commit (the
    /// writer writes every cursor lazily) and an ack that covers nothing touches nothing; a known terminal's login with nothing pending reads
    /// nothing and writes nothing.
    #[tokio::test]
    async fn a_broadcast_is_one_write_and_empty_logins_and_repeated_acks_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        let devices = first_logins(&s, 500).await;
        let before = s.ops();
        assert!(
            (1..=500).contains(&before.lazy_writes),
            "first logins wait for no commit and share the writer's: {before:?}"
        );
        assert_eq!((before.reads, before.durable_writes), (0, 0));
        let msg = NewMessage {
            from: None,
            payload: Bytes::from_static(b"all"),
            expires_at_ms: u64::MAX,
        };
        let bc = OfflineStore::append(
            &*s,
            Recipients::Known(Some(crate::terminal::Kind::Device)),
            msg,
            0,
        )
        .await
        .unwrap();
        assert_eq!(bc.stored_for, 500);
        let after = s.ops();
        assert_eq!(
            (after.durable_writes - before.durable_writes, after.reads),
            (1, 0)
        );
        let rows = |table: TableDefinition<(u64, u64), ()>| {
            s.db.begin_read()
                .unwrap()
                .open_table(table)
                .unwrap()
                .len()
                .unwrap()
        };
        assert_eq!(rows(INBOX), 0, "no per-terminal reference");
        let known = s.db.begin_read().unwrap().open_table(KNOWN_SINCE).unwrap();
        assert_eq!(
            known.len().unwrap(),
            500,
            "the broadcast's durable commit carries every first login before it"
        );
        drop(known);
        for d in &devices {
            assert!(s.ack(*d, bc.msg_id).await.unwrap());
        }
        s.sync_acks().await.unwrap();
        let acked = s.ops();
        assert_eq!(
            acked.durable_writes, after.durable_writes,
            "acks wait for no fsync"
        );
        let cursors = s.db.begin_read().unwrap().open_table(CURSORS).unwrap();
        for d in &devices {
            let at = cursors.get(d.to_key()).unwrap().map(|g| g.value());
            assert_eq!(at, Some(bc.msg_id), "every cursor move is written");
        }
        drop(cursors);
        // Nothing left to do: repeated acks, logins (remember, since-id, replay) cost nothing.
        for d in &devices {
            assert!(!s.ack(*d, bc.msg_id).await.unwrap());
            s.remember(*d).await.unwrap();
            assert_eq!(s.ack_through(*d, bc.msg_id).await.unwrap(), 0);
            assert!(s.since(*d, bc.msg_id, 10, 0).await.unwrap().is_empty());
        }
        assert_eq!(s.ops(), acked);
    }

    /// A first login is remembered at once and written by the writer's next transaction; when
    /// the transaction holding its record rolls back, the reloaded index still knows the
    /// terminal and the next transaction writes it, so it survives a reopen.
    #[tokio::test]
    async fn a_first_login_survives_a_rolled_back_transaction_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Address::device(7);
        {
            let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
            // Remembered without a nudge, so the failing write's transaction takes it.
            assert!(offline::lock(&s.index).remember_unsaved(d.to_key()));
            let failed = s
                .write(|_, _| Err::<(), _>(StoreError::Backend("refused".into())))
                .await;
            assert!(failed.is_err());
            assert!(
                offline::lock(&s.index).is_known(d.to_key()),
                "carried over the reload"
            );
            let known = |s: &EmbeddedStore| {
                s.db.begin_read()
                    .unwrap()
                    .open_table(KNOWN_SINCE)
                    .unwrap()
                    .get(d.to_key())
                    .unwrap()
                    .map(|g| g.value())
            };
            assert_eq!(known(&s), None, "its record went with the rollback");
            s.sync_acks().await.unwrap();
            assert_eq!(known(&s), Some(0), "the next transaction wrote it");
        }
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        assert!(offline::lock(&s.index).is_known(d.to_key()));
    }

    /// The first logins of a storm ask the writer for one transaction between them, not one
    /// each: the first asks for it `FIRST_LOGIN_GATHER` later, the others find it asked for,
    /// and that one transaction writes every record.
    #[tokio::test(start_paused = true)]
    async fn first_logins_in_a_burst_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        let devices = first_logins(&s, 200).await;
        let written = |s: &EmbeddedStore| {
            let txn = s.db.begin_read().unwrap();
            let table = txn.open_table(KNOWN_SINCE).unwrap();
            devices
                .iter()
                .filter(|d| table.get(d.to_key()).unwrap().is_some())
                .count()
        };
        assert_eq!(s.ops().lazy_writes, 1, "one transaction asked for");
        // Real time passes (the writer thread would commit a transaction asked for at once),
        // the paused clock does not: the gathering time is not over.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(written(&s), 0, "none written before the gathering time");
        // The paused clock jumps past the nudge (whose task runs then); the writer is a
        // thread of its own, waited for in real time below.
        tokio::time::sleep(2 * offline::FIRST_LOGIN_GATHER).await;
        for _ in 0..500 {
            if written(&s) == devices.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(written(&s), devices.len(), "the one transaction wrote all");
        assert_eq!(s.ops().lazy_writes, 1);
    }

    /// The router asks for a device's phones at every login and logout: an unbound device's
    /// answer reads nothing, a bound one's reads the table, before and after a reopen, and an
    /// unbind or a repeated bind leaves the count right.
    #[tokio::test]
    async fn phones_of_an_unbound_device_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2, d) = (Address::phone(1), Address::phone(2), Address::device(9));
        {
            let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
            assert!(s.phones_of(d).await.unwrap().is_empty());
            assert_eq!(s.ops().reads, 0, "no read for an unbound device");
            assert!(s.bind(p1, d).await.unwrap());
            assert!(
                !s.bind(p1, d).await.unwrap(),
                "a repeated bind adds nothing"
            );
            assert!(s.bind(p2, d).await.unwrap());
            assert_eq!(s.phones_of(d).await.unwrap(), vec![p1, p2]);
            assert_eq!(s.ops().reads, 1);
            assert!(s.unbind(p1, d).await.unwrap());
            assert_eq!(s.phones_of(d).await.unwrap(), vec![p2]);
            assert_eq!(s.ops().reads, 2);
        }
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        assert_eq!(
            s.phones_of(d).await.unwrap(),
            vec![p2],
            "counted again at open"
        );
        assert_eq!(s.ops().reads, 1);
        assert!(s.unbind(p2, d).await.unwrap());
        assert!(!s.unbind(p2, d).await.unwrap());
        assert!(s.phones_of(d).await.unwrap().is_empty());
        assert_eq!(s.ops().reads, 1, "no binding left: no read");
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = Address::device(5);
        {
            let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
            let msg = NewMessage {
                from: None,
                payload: Bytes::from_static(b"x"),
                expires_at_ms: 1000,
            };
            OfflineStore::append(&*s, Recipients::List(vec![a]), msg, 0)
                .await
                .unwrap();
            UploadSpool::append(&*s, a, 0xe7, 1, "t", Bytes::from_static(b"u"), 0)
                .await
                .unwrap();
            s.bind(Address::phone(1), a).await.unwrap();
        }
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        assert_eq!(s.since(a, 0, 10, 0).await.unwrap().len(), 1);
        let up = &s.read(0, 10).await.unwrap()[0];
        assert_eq!(up.payload, Bytes::from_static(b"u"));
        assert_eq!(up.upload_epoch, 0xe7, "the epoch is durable too");
        assert!(s.is_bound(Address::phone(1), a).await.unwrap());
        // Ids keep increasing across restarts.
        let msg = NewMessage {
            from: None,
            payload: Bytes::from_static(b"y"),
            expires_at_ms: 1000,
        };
        let second = OfflineStore::append(&*s, Recipients::List(vec![a]), msg, 0)
            .await
            .unwrap();
        assert_eq!(second.msg_id, 2);
    }

    /// A file whose spool predates upload epochs (records without one, the epoch-less
    /// de-duplication table) opens: its records read as epoch 0, the old table is gone, and new
    /// uploads are de-duplicated by epoch.
    #[tokio::test]
    async fn spool_written_without_epochs_opens_and_reads_epoch_0() {
        let dir = tempfile::tempdir().unwrap();
        let d = Address::device(5);
        {
            let db = Database::create(dir.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            let old: TableDefinition<(u64, u32), u64> = TableDefinition::new(OLD_UPLOAD_DEDUPE);
            txn.open_table(old)
                .unwrap()
                .insert((d.to_key(), 1), 1)
                .unwrap();
            let rec = encode_upload(d, 1, 10, "t", b"old");
            txn.open_table(UPLOADS)
                .unwrap()
                .insert(1, rec.as_slice())
                .unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("upload_head", 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let s = open(dir.path(), 10, EvictionPolicy::DropOldest);
        let recs = s.read(0, 10).await.unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].upload_epoch, recs[0].upload_id), (0, 1));
        assert_eq!(recs[0].payload, Bytes::from_static(b"old"));
        let fresh = UploadSpool::append(&*s, d, 0x42, 1, "t", Bytes::from_static(b"old"), 20)
            .await
            .unwrap();
        assert!(!fresh.duplicate, "another epoch: a new upload");
        assert_eq!(fresh.cursor, 2);
        let names: Vec<String> =
            s.db.begin_read()
                .unwrap()
                .list_tables()
                .unwrap()
                .map(|t| redb::TableHandle::name(&t).to_string())
                .collect();
        assert!(!names.iter().any(|n| n == OLD_UPLOAD_DEDUPE), "{names:?}");
    }
}
