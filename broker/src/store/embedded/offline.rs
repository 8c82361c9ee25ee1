//! The embedded store's [`OfflineStore`]: message bodies, inboxes, broadcast records and
//! acknowledgement cursors in redb, mirrored by the in-memory [`DeliveryIndex`] that answers the
//! hot paths (see [`delivery_index`](super::delivery_index) for the model).
//!
//! What each call costs:
//! * a unicast or list push: one durable commit (body, one inbox reference per recipient);
//! * a broadcast (`Recipients::Known`): one durable commit holding one body and one broadcast
//!   record, plus per-terminal records only for terminals whose inbox is full (an eviction moves
//!   a cursor, a refusal writes a skip mark);
//! * an acknowledgement, or the since-id at login: nothing when it covers nothing pending
//!   (answered from the index), else one in-memory cursor move ([`DeliveryIndex::acknowledge`]);
//!   the writer's next transaction, lazy or durable, writes every cursor moved since its last
//!   one and drops the inbox references they cover ([`write_unsaved`], the writer's batch
//!   hook, see [`GroupCommit`](super::GroupCommit)). An ack waits for no commit, and ten thousand
//!   acks of a broadcast share a handful of commits;
//! * a login: `remember` is answered from the index for a known terminal; a first login is
//!   remembered in the index at once and its record written by a transaction the writer is
//!   asked for [`FIRST_LOGIN_GATHER`] later, or by any transaction before that ([`write_unsaved`]
//!   again), so a login waits for no commit and the first logins of a storm share one; the
//!   replay reads the database only when the index has something pending above the since-id.
//!
//! What a crash loses: acknowledgements not yet taken by a commit, and lazy commits of the last
//! lazy window (at most about one second). A lost
//! cursor move means the covered messages are replayed at the next login, and the terminal drops
//! them as duplicates (they are at or below its high-water mark); a lost first `remember` means no
//! broadcast counted the terminal yet (any durable broadcast commit after it persists it too).
//! Nothing acknowledged to a pusher is lost: appends are durable before they return. A rolled-back
//! transaction reloads the index from the database and carries the first logins not in it
//! over as unsaved ([`DeliveryIndex::carry_known_into`]), so a login the broker answered stays
//! counted by later broadcasts.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::delivery_index::{DeliveryIndex, UnsavedAck, class_of};
use super::{
    BROADCASTS, CURSORS, EXPIRY, EmbeddedStore, INBOX, KNOWN_SINCE, MESSAGES, META, OfflineLimits,
    SKIPPED,
};
use crate::store::{
    Appended, NewMessage, OfflineStats, OfflineStore, Recipients, StoreError, StoredMessage, msg_id,
};
use crate::terminal::EvictionPolicy;
use crate::terminal::{Address, AddressKey, from_key};

/// The index behind its lock (never held across `.await`).
pub(super) type SharedIndex = Arc<Mutex<DeliveryIndex>>;

/// Locks the index, recovering it from a panicked holder (it is reloaded on the next rollback).
pub(super) fn lock(index: &SharedIndex) -> MutexGuard<'_, DeliveryIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

const NO_SENDER: u64 = u64::MAX;

/// How long a first login's record waits for others before it asks for a transaction of its
/// own: in a login storm the writer then commits first logins a few times a second instead of
/// back to back. A crash loses nothing more by it (see the module docs: a lost first `remember`
/// costs nothing, and any durable commit meanwhile carries it).
pub(super) const FIRST_LOGIN_GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// A stored body. `refs` counts inbox references; a broadcast body has none and lives until it
/// expires.
struct MessageRecord {
    expires_at_ms: u64,
    refs: u32,
    from: Option<Address>,
    payload: Vec<u8>,
}

impl MessageRecord {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20 + self.payload.len());
        v.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        v.extend_from_slice(&self.refs.to_le_bytes());
        v.extend_from_slice(&self.from.map_or(NO_SENDER, Address::to_key).to_le_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(b: &[u8]) -> Result<MessageRecord, StoreError> {
        let bad = || StoreError::Corrupt("message record".into());
        if b.len() < 20 {
            return Err(bad());
        }
        let expires_at_ms = u64::from_le_bytes(b[0..8].try_into().map_err(|_| bad())?);
        let refs = u32::from_le_bytes(b[8..12].try_into().map_err(|_| bad())?);
        let sender = u64::from_le_bytes(b[12..20].try_into().map_err(|_| bad())?);
        let from = if sender == NO_SENDER {
            None
        } else {
            Some(from_key(sender).ok_or_else(bad)?)
        };
        Ok(MessageRecord {
            expires_at_ms,
            refs,
            from,
            payload: b[20..].to_vec(),
        })
    }
}

/// Loads the index from what the database holds.
pub(super) fn load_index(db: &Database) -> Result<DeliveryIndex, StoreError> {
    let read = db.begin_read()?;
    let mut ix = DeliveryIndex::default();
    let next = read
        .open_table(META)?
        .get("next_msg_id")?
        .map_or(1, |g| g.value());
    ix.issued(next.saturating_sub(1));
    for e in read.open_table(KNOWN_SINCE)?.iter()? {
        let (k, v) = e?;
        ix.remember(k.value(), v.value());
    }
    for e in read.open_table(CURSORS)?.iter()? {
        let (k, v) = e?;
        ix.set_cursor(k.value(), v.value());
    }
    for e in read.open_table(INBOX)?.iter()? {
        let (t, id) = e?.0.value();
        ix.add_inbox(t, id);
    }
    for e in read.open_table(BROADCASTS)?.iter()? {
        let (k, v) = e?;
        ix.add_broadcast(v.value(), k.value());
    }
    for e in read.open_table(SKIPPED)?.iter()? {
        let (id, t) = e?.0.value();
        ix.skip(t, id);
    }
    Ok(ix)
}

/// Drops one inbox reference to message `id`; deletes the body when none remain.
fn release(txn: &WriteTransaction, id: u64) -> Result<(), StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let rec = match messages.get(id)? {
        Some(g) => MessageRecord::decode(g.value())?,
        None => return Ok(()),
    };
    if rec.refs <= 1 {
        messages.remove(id)?;
        txn.open_table(EXPIRY)?.remove((rec.expires_at_ms, id))?;
    } else {
        let rec = MessageRecord {
            refs: rec.refs - 1,
            ..rec
        };
        messages.insert(id, rec.encode().as_slice())?;
    }
    Ok(())
}

/// Moves the terminal's cursor to `through` inside `txn` (and the index); returns how many
/// pending deliveries that covered (0: nothing written).
fn ack_through_in(
    txn: &WriteTransaction,
    ix: &mut DeliveryIndex,
    terminal: u64,
    through: u64,
) -> Result<u64, StoreError> {
    let covered = ix.advance_cursor(terminal, through);
    if covered.pending == 0 {
        return Ok(0);
    }
    {
        let mut inbox = txn.open_table(INBOX)?;
        for id in &covered.inbox {
            inbox.remove((terminal, *id))?;
        }
    }
    for id in &covered.inbox {
        release(txn, *id)?;
    }
    let mut skipped = txn.open_table(SKIPPED)?;
    for id in &covered.skipped {
        skipped.remove((*id, terminal))?;
    }
    let cursor = ix.terminal(terminal).map_or(0, |t| t.cursor());
    txn.open_table(CURSORS)?.insert(terminal, cursor)?;
    Ok(covered.pending)
}

/// Writes what the index keeps unsaved inside `txn`: first logins' `known_since` records
/// ([`DeliveryIndex::take_unsaved_known`]) and acknowledgements
/// ([`DeliveryIndex::take_unsaved`]: each terminal's cursor, and the inbox references and skip
/// marks they covered). The store's writer runs it at the start of every transaction; the index
/// is locked only to take them. When the transaction rolls back, the index is reloaded from the
/// database (first logins carried over, see the module docs), so a lost acknowledgement only
/// means a redelivery.
pub(super) fn write_unsaved(txn: &WriteTransaction, index: &SharedIndex) -> Result<(), StoreError> {
    let (unsaved, known) = {
        let mut ix = lock(index);
        (ix.take_unsaved(), ix.take_unsaved_known())
    };
    if !known.is_empty() {
        let mut table = txn.open_table(KNOWN_SINCE)?;
        for (key, since) in known {
            table.insert(key, since)?;
        }
    }
    if unsaved.is_empty() {
        return Ok(());
    }
    {
        let mut inbox = txn.open_table(INBOX)?;
        for u in &unsaved {
            for id in &u.covered.inbox {
                inbox.remove((u.key, *id))?;
            }
        }
    }
    for UnsavedAck { covered, .. } in &unsaved {
        for id in &covered.inbox {
            release(txn, *id)?;
        }
    }
    let mut skipped = txn.open_table(SKIPPED)?;
    let mut cursors = txn.open_table(CURSORS)?;
    for u in &unsaved {
        for id in &u.covered.skipped {
            skipped.remove((*id, u.key))?;
        }
        cursors.insert(u.key, u.cursor)?;
    }
    Ok(())
}

/// Makes room for one more delivery to `terminal` under `limits`: `Ok(false)` when its full
/// inbox refuses it (`reject-new`, counted in `out.rejected`); under `drop-oldest` its oldest
/// pending deliveries are evicted (counted in `out.evicted`).
fn make_room(
    txn: &WriteTransaction,
    ix: &mut DeliveryIndex,
    terminal: u64,
    limits: OfflineLimits,
    out: &mut Appended,
) -> Result<bool, StoreError> {
    let mut count = ix.pending_count(terminal);
    if count < limits.max_per_terminal {
        return Ok(true);
    }
    if limits.eviction == EvictionPolicy::RejectNew {
        out.rejected += 1;
        return Ok(false);
    }
    while count >= limits.max_per_terminal {
        let Some(oldest) = ix.pending(terminal, 0, 1).first().copied() else {
            break;
        };
        let evicted = ack_through_in(txn, ix, terminal, oldest)?;
        if evicted == 0 {
            break;
        }
        out.evicted += evicted;
        count = count.saturating_sub(evicted);
    }
    Ok(true)
}

/// Issues the next message id inside `txn` (see [`msg_id`]).
fn issue_id(txn: &WriteTransaction, now_ms: u64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    // `next_msg_id` is one above the last id issued (1 when none was).
    let next = meta.get("next_msg_id")?.map_or(1, |g| g.value());
    let id = msg_id::next_id(next.saturating_sub(1), msg_id::clock_floor(now_ms))?;
    meta.insert("next_msg_id", id + 1)?;
    Ok(id)
}

fn store_body(
    txn: &WriteTransaction,
    id: u64,
    refs: u64,
    msg: &NewMessage,
) -> Result<(), StoreError> {
    let rec = MessageRecord {
        expires_at_ms: msg.expires_at_ms,
        refs: u32::try_from(refs).unwrap_or(u32::MAX),
        from: msg.from,
        payload: msg.payload.to_vec(),
    };
    txn.open_table(MESSAGES)?
        .insert(id, rec.encode().as_slice())?;
    txn.open_table(EXPIRY)?
        .insert((msg.expires_at_ms, id), ())?;
    Ok(())
}

/// [`OfflineStore::append`] inside `txn`.
fn append_in(
    txn: &WriteTransaction,
    ix: &mut DeliveryIndex,
    limits: OfflineLimits,
    recipients: &Recipients,
    msg: &NewMessage,
    now_ms: u64,
) -> Result<Appended, StoreError> {
    let id = issue_id(txn, now_ms)?;
    ix.issued(id);
    let mut out = Appended {
        msg_id: id,
        ..Appended::default()
    };
    match recipients {
        Recipients::List(list) => {
            let mut targets: Vec<u64> = list.iter().map(|a| a.to_key()).collect();
            targets.sort_unstable();
            targets.dedup();
            for t in targets {
                if !make_room(txn, ix, t, limits, &mut out)? {
                    continue;
                }
                txn.open_table(INBOX)?.insert((t, id), ())?;
                ix.add_inbox(t, id);
                out.stored_for += 1;
            }
            if out.stored_for > 0 {
                store_body(txn, id, out.stored_for, msg)?;
            }
        }
        Recipients::Known(kind) => {
            let class = class_of(*kind);
            let mut refused = Vec::new();
            for t in ix.known_in(class) {
                if make_room(txn, ix, t, limits, &mut out)? {
                    out.stored_for += 1;
                } else {
                    refused.push(t);
                }
            }
            if out.stored_for > 0 {
                store_body(txn, id, 0, msg)?;
                txn.open_table(BROADCASTS)?.insert(id, class)?;
                ix.add_broadcast(class, id);
                let mut skipped = txn.open_table(SKIPPED)?;
                for t in refused {
                    skipped.insert((id, t), ())?;
                    ix.skip(t, id);
                }
            }
        }
    }
    Ok(out)
}

/// [`OfflineStore::purge_expired`] inside `txn` for the `(expires_at, id)` entries found.
fn purge_in(
    txn: &WriteTransaction,
    ix: &mut DeliveryIndex,
    expired: &[(u64, u64)],
) -> Result<u64, StoreError> {
    let mut purged = 0;
    let mut inbox_ids = BTreeSet::new();
    for (at, id) in expired {
        if txn.open_table(EXPIRY)?.remove((*at, *id))?.is_none() {
            continue;
        }
        txn.open_table(MESSAGES)?.remove(*id)?;
        purged += 1;
        let class = txn.open_table(BROADCASTS)?.remove(*id)?.map(|g| g.value());
        match class {
            Some(class) => {
                ix.remove_broadcast(class, *id);
                let mut skipped = txn.open_table(SKIPPED)?;
                let marks: Vec<(u64, u64)> = skipped
                    .range((*id, 0)..=(*id, u64::MAX))?
                    .map(|e| e.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for m in marks {
                    skipped.remove(m)?;
                }
            }
            None => {
                inbox_ids.insert(*id);
            }
        }
    }
    let mut inbox = txn.open_table(INBOX)?;
    for (t, id) in ix.remove_inbox_ids(&inbox_ids) {
        inbox.remove((t, id))?;
    }
    Ok(purged)
}

impl EmbeddedStore {
    fn index(&self) -> MutexGuard<'_, DeliveryIndex> {
        lock(&self.index)
    }

    /// Moves a terminal's cursor in memory when that covers anything pending; the writer's next
    /// transaction writes it (see the module docs). Returns what it covered.
    fn ack_through_lazily(&self, terminal: Address, through: u64) -> u64 {
        let (covered, first) = self.index().acknowledge(terminal.to_key(), through);
        if first {
            self.ops.lazy_writes.fetch_add(1, Ordering::Relaxed);
            self.writer.nudge();
        }
        covered
    }
}

#[async_trait]
impl OfflineStore for EmbeddedStore {
    async fn remember(&self, terminal: Address) -> Result<(), StoreError> {
        // Most logins are of known terminals: the index answers them. A first login is
        // remembered in the index at once and written by the writer's next transaction, lazy or
        // durable (the batch hook): nobody waits for it, and any durable write after it (a
        // broadcast that counts it) carries it. That transaction is asked for
        // `FIRST_LOGIN_GATHER` later, so the first logins of a storm share it.
        let first = self.index().remember_unsaved(terminal.to_key());
        if first {
            self.ops.lazy_writes.fetch_add(1, Ordering::Relaxed);
            self.writer.nudge_after(FIRST_LOGIN_GATHER);
        }
        Ok(())
    }

    async fn append(
        &self,
        recipients: Recipients,
        msg: NewMessage,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let index = self.index.clone();
        self.write(move |txn, limits| {
            append_in(txn, &mut lock(&index), limits, &recipients, &msg, now_ms)
        })
        .await
    }

    async fn since(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Candidates from the index; nothing pending means no read at all.
        let ids = self
            .index()
            .pending(terminal.to_key(), since_id, usize::MAX);
        if ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.run(move |db, _| {
            let read = db.begin_read()?;
            let messages = read.open_table(MESSAGES)?;
            let mut out = Vec::new();
            for id in ids {
                if out.len() >= limit {
                    break;
                }
                // No body: not committed yet (offered live once it is) or just purged.
                let Some(g) = messages.get(id)? else { continue };
                let rec = MessageRecord::decode(g.value())?;
                if rec.expires_at_ms > now_ms {
                    out.push(StoredMessage {
                        msg_id: id,
                        from: rec.from,
                        payload: Bytes::from(rec.payload),
                        expires_at_ms: rec.expires_at_ms,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError> {
        Ok(self.ack_through_lazily(terminal, msg_id) > 0)
    }

    async fn ack_through(&self, terminal: Address, through_id: u64) -> Result<u64, StoreError> {
        Ok(self.ack_through_lazily(terminal, through_id))
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        let expired = self
            .run(move |db, _| {
                let read = db.begin_read()?;
                let mut expired = Vec::new();
                for e in read
                    .open_table(EXPIRY)?
                    .range((0, 0)..=(now_ms, u64::MAX))?
                {
                    expired.push(e?.0.value());
                }
                Ok(expired)
            })
            .await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let index = self.index.clone();
        self.write(move |txn, _| purge_in(txn, &mut lock(&index), &expired))
            .await
    }

    async fn stats(&self) -> Result<OfflineStats, StoreError> {
        // Acknowledged bodies go when the acks are written: count after that.
        self.sync_acks().await?;
        let references = self.index().total_pending();
        let messages = self
            .run(|db, _| Ok(db.begin_read()?.open_table(MESSAGES)?.len()?))
            .await?;
        Ok(OfflineStats {
            messages,
            references,
            writer_queued: self.writer.queued() as u64,
            writer_waits: self.writer.waits(),
        })
    }
}
