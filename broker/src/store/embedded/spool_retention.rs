//! Retention of the embedded upload spool: what keeps `uploads` and `upload_dedupe` from growing
//! forever while a consumer (the webhook, the RabbitMQ forwarder) is down for days.
//!
//! Two rules, both applied inside the write transaction that appends or moves a cursor:
//! * **Consumed records are trimmed** (`trim_consumed`): a record whose cursor every named
//!   consumer (`cursor:<name>` in `meta`) has passed is deleted with its dedupe entry, at most
//!   [`TRIM_BATCH`] per transaction (the rest goes with the next write). With no named consumer
//!   nothing is trimmed this way; a consumer counts from its first saved position on. Optional
//!   ([`SpoolRetention::trim_consumed`]) because readers of the HTTP `/uploads` page are not
//!   named consumers.
//! * **Caps** (`enforce_caps`): after an append, the oldest records are dropped while the spool
//!   holds more than `max_records`, more than `max_bytes` of records, or records older than
//!   `max_age_secs` (against the injected `now_ms`). The record just appended is never dropped.
//!   Each drop is counted in `meta` (`upload_dropped_age`, `upload_dropped_size`) and shows in
//!   [`SpoolStats`](crate::store::SpoolStats).
//!
//! A reader whose cursor fell behind retention sees the gap: `SpoolStats::first_cursor`
//! (crate::store::SpoolStats) is past its position and the next record's cursor is not
//! `after + 1`.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::{META, UPLOAD_DEDUPE, UPLOAD_EPOCHS, UPLOADS};
use crate::store::StoreError;

/// Records deleted by `trim_consumed` in one transaction at most (bounds the commit).
pub const TRIM_BATCH: usize = 1024;

/// `meta` key: total bytes of the records in `uploads`.
pub(super) const BYTES_KEY: &str = "upload_bytes";
/// `meta` key: records dropped unconsumed for age.
pub(super) const DROPPED_AGE_KEY: &str = "upload_dropped_age";
/// `meta` key: records dropped unconsumed for the record or byte cap.
pub(super) const DROPPED_SIZE_KEY: &str = "upload_dropped_size";
/// `meta` key: consumed records trimmed.
pub(super) const TRIMMED_KEY: &str = "upload_trimmed";

/// Limits of the upload spool (0 = no limit for each cap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolRetention {
    /// Records kept at most.
    pub max_records: u64,
    /// Bytes of records kept at most.
    pub max_bytes: u64,
    /// Age of the oldest record kept, seconds.
    pub max_age_secs: u64,
    /// Delete records every named consumer has passed.
    pub trim_consumed: bool,
}

/// Why an unconsumed record was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropReason {
    Age,
    Size,
}

fn meta_get(txn: &WriteTransaction, key: &str) -> Result<u64, StoreError> {
    Ok(txn.open_table(META)?.get(key)?.map_or(0, |g| g.value()))
}

fn meta_add(txn: &WriteTransaction, key: &str, delta: i128) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let now = meta.get(key)?.map_or(0, |g| g.value());
    let next = (i128::from(now) + delta).clamp(0, i128::from(u64::MAX)) as u64;
    meta.insert(key, next)?;
    Ok(())
}

/// The lowest position of every named consumer (`None` when there is none).
fn min_consumer_cursor(txn: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let meta = txn.open_table(META)?;
    let mut min: Option<u64> = None;
    // `;` is the byte after `:`, so this is every `cursor:<name>` key.
    for e in meta.range("cursor:".."cursor;")? {
        let (_, v) = e?;
        min = Some(min.map_or(v.value(), |m| m.min(v.value())));
    }
    Ok(min)
}

/// Deletes the record at `cursor` (with its epoch, and its dedupe entry if it still points there); returns its
/// encoded length, or `None` when there was no such record.
fn remove_record(txn: &WriteTransaction, cursor: u64) -> Result<Option<u64>, StoreError> {
    let removed = txn
        .open_table(UPLOADS)?
        .remove(cursor)?
        .map(|g| g.value().to_vec());
    let Some(rec) = removed else {
        return Ok(None);
    };
    // Records written before epochs were kept have none: epoch 0.
    let epoch = txn
        .open_table(UPLOAD_EPOCHS)?
        .remove(cursor)?
        .map_or(0, |g| g.value());
    if let (Some(dev), Some(id)) = (rec.get(0..8), rec.get(8..12)) {
        let key = (
            u64::from_le_bytes(dev.try_into().unwrap_or_default()),
            epoch,
            u32::from_le_bytes(id.try_into().unwrap_or_default()),
        );
        let mut dedupe = txn.open_table(UPLOAD_DEDUPE)?;
        if dedupe.get(key)?.map(|g| g.value()) == Some(cursor) {
            dedupe.remove(key)?;
        }
    }
    let len = rec.len() as u64;
    meta_add(txn, BYTES_KEY, -i128::from(len))?;
    Ok(Some(len))
}

/// Deletes up to [`TRIM_BATCH`] records that every named consumer has passed; returns how many.
pub(super) fn trim_consumed(txn: &WriteTransaction, r: SpoolRetention) -> Result<u64, StoreError> {
    if !r.trim_consumed {
        return Ok(0);
    }
    let Some(upto) = min_consumer_cursor(txn)? else {
        return Ok(0);
    };
    let cursors: Vec<u64> = txn
        .open_table(UPLOADS)?
        .range(..=upto)?
        .take(TRIM_BATCH)
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for c in cursors {
        if remove_record(txn, c)?.is_some() {
            n += 1;
        }
    }
    if n > 0 {
        meta_add(txn, TRIMMED_KEY, i128::from(n))?;
    }
    Ok(n)
}

/// Counts a newly appended record of `len` bytes, then drops the oldest records while a cap is
/// exceeded (never `newest`, the record just appended). Returns the records dropped.
pub(super) fn enforce_caps(
    txn: &WriteTransaction,
    r: SpoolRetention,
    newest: u64,
    len: u64,
    now_ms: u64,
) -> Result<u64, StoreError> {
    meta_add(txn, BYTES_KEY, i128::from(len))?;
    let oldest_allowed = if r.max_age_secs == 0 {
        0
    } else {
        now_ms.saturating_sub(r.max_age_secs.saturating_mul(1000))
    };
    let mut dropped = 0;
    loop {
        let (first, received_at_ms, count) = {
            let uploads = txn.open_table(UPLOADS)?;
            let Some(e) = uploads.first()? else {
                break;
            };
            let (k, v) = e;
            let at = v
                .value()
                .get(12..20)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
            (k.value(), at, uploads.len()?)
        };
        if first >= newest {
            break;
        }
        let over_records = r.max_records > 0 && count > r.max_records;
        let reason = if over_records || (r.max_bytes > 0 && meta_get(txn, BYTES_KEY)? > r.max_bytes)
        {
            DropReason::Size
        } else if received_at_ms < oldest_allowed {
            DropReason::Age
        } else {
            break;
        };
        remove_record(txn, first)?;
        let key = match reason {
            DropReason::Age => DROPPED_AGE_KEY,
            DropReason::Size => DROPPED_SIZE_KEY,
        };
        meta_add(txn, key, 1)?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Computes `upload_bytes` from the records when a spool written before retention existed has
/// none.
pub(super) fn init_bytes(txn: &WriteTransaction) -> Result<(), StoreError> {
    if txn.open_table(META)?.get(BYTES_KEY)?.is_some() {
        return Ok(());
    }
    let mut total = 0u64;
    for e in txn.open_table(UPLOADS)?.iter()? {
        let (_, v) = e?;
        total = total.saturating_add(v.value().len() as u64);
    }
    txn.open_table(META)?.insert(BYTES_KEY, total)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::SpoolRetention;
    use crate::store::embedded::{EmbeddedStore, OfflineLimits};
    use crate::store::{SpoolStats, UploadSpool};
    use crate::terminal::Address;
    use crate::terminal::EvictionPolicy;

    fn open(dir: &std::path::Path, r: SpoolRetention) -> Arc<EmbeddedStore> {
        let limits = OfflineLimits {
            max_per_terminal: 10,
            eviction: EvictionPolicy::DropOldest,
        };
        EmbeddedStore::open_with_retention(dir, limits, r).unwrap()
    }

    /// The upload epoch of device 7's boot in these tests.
    const EPOCH: u64 = 0x8f3c_5a2e_d1b4_0967;

    /// Appends uploads 1..=n of device 7 (payload "p<i>", topic "t"), the i-th at `at(i)` ms.
    async fn fill(s: &EmbeddedStore, n: u32, at: impl Fn(u32) -> u64) {
        for i in 1..=n {
            let payload = Bytes::from(format!("p{i}"));
            s.append(Address::device(7), EPOCH, i, "t", payload, at(i))
                .await
                .unwrap();
        }
    }

    async fn cursors(s: &EmbeddedStore) -> Vec<u64> {
        let recs = s.read(0, 1000).await.unwrap();
        recs.iter().map(|r| r.cursor).collect()
    }

    #[tokio::test]
    async fn records_every_consumer_passed_are_trimmed_with_their_dedupe_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(
            dir.path(),
            SpoolRetention {
                trim_consumed: true,
                ..SpoolRetention::default()
            },
        );
        fill(&s, 10, |_| 1).await;
        s.set_consumer_cursor("rabbitmq", 3).await.unwrap();
        s.set_consumer_cursor("webhook", 7).await.unwrap();
        // Only what both passed is gone.
        assert_eq!(cursors(&s).await, (4..=10).collect::<Vec<_>>());
        s.set_consumer_cursor("rabbitmq", 9).await.unwrap();
        assert_eq!(cursors(&s).await, vec![8, 9, 10]);
        let st = s.spool_stats().await.unwrap();
        assert_eq!(
            (
                st.records,
                st.first_cursor,
                st.trimmed,
                st.dropped_age,
                st.dropped_size
            ),
            (3, 8, 7, 0, 0)
        );
        // The dedupe entry went with the record: a resend of upload 1 is stored again.
        let again = s
            .append(Address::device(7), EPOCH, 1, "t", Bytes::from("p1"), 2)
            .await
            .unwrap();
        assert!(!again.duplicate);
        // ... while upload 9, still kept, is still recognised.
        let kept = s
            .append(Address::device(7), EPOCH, 9, "t", Bytes::from("p9"), 2)
            .await
            .unwrap();
        assert_eq!((kept.cursor, kept.duplicate), (9, true));
    }

    #[tokio::test]
    async fn without_trim_consumed_passed_records_stay() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolRetention::default());
        fill(&s, 5, |_| 1).await;
        s.set_consumer_cursor("webhook", 5).await.unwrap();
        assert_eq!(cursors(&s).await, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn the_record_cap_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(
            dir.path(),
            SpoolRetention {
                max_records: 5,
                trim_consumed: true,
                ..SpoolRetention::default()
            },
        );
        // The sink is down: no consumer moves, the cap holds.
        fill(&s, 12, |_| 1).await;
        assert_eq!(cursors(&s).await, (8..=12).collect::<Vec<_>>());
        let st = s.spool_stats().await.unwrap();
        assert_eq!((st.records, st.first_cursor), (5, 8));
        assert_eq!((st.dropped_size, st.dropped_age, st.trimmed), (7, 0, 0));
        // A reader at cursor 2 sees the gap: the next record is 8, not 3; 5 were lost to it.
        let next = s.read(2, 1).await.unwrap();
        assert_eq!(next[0].cursor, 8);
        assert_eq!(crate::store::retention_gap(2, next.first()), 5);
        let next = s.read(8, 1).await.unwrap();
        assert_eq!(crate::store::retention_gap(8, next.first()), 0);
        assert_eq!(crate::store::retention_gap(12, None), 0);
    }

    #[tokio::test]
    async fn the_byte_cap_holds_and_bytes_are_accounted_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        // Each record: 22 header bytes + topic "t" + payload "p<i>" (2 bytes for i < 10) = 25.
        let s = open(
            dir.path(),
            SpoolRetention {
                max_bytes: 100,
                trim_consumed: true,
                ..SpoolRetention::default()
            },
        );
        fill(&s, 9, |_| 1).await;
        let st = s.spool_stats().await.unwrap();
        assert_eq!((st.records, st.bytes, st.dropped_size), (4, 100, 5));
        s.set_consumer_cursor("webhook", 9).await.unwrap();
        let st = s.spool_stats().await.unwrap();
        assert_eq!((st.records, st.bytes, st.trimmed), (0, 0, 4));
    }

    #[tokio::test]
    async fn records_older_than_the_age_cap_are_dropped_against_injected_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(
            dir.path(),
            SpoolRetention {
                max_age_secs: 10,
                ..SpoolRetention::default()
            },
        );
        // One upload a second for 20 s: at 20 s, the ones before 10 s are gone.
        fill(&s, 20, |i| u64::from(i) * 1000).await;
        let kept = cursors(&s).await;
        assert_eq!(kept, (10..=20).collect::<Vec<_>>());
        let st: SpoolStats = s.spool_stats().await.unwrap();
        assert_eq!((st.dropped_age, st.dropped_size), (9, 0));
    }

    #[tokio::test]
    async fn bytes_are_recomputed_for_a_spool_written_before_retention() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path(), SpoolRetention::default());
            fill(&s, 3, |_| 1).await;
        }
        // Remove the counter as an older version would have left the file.
        {
            let db = redb::Database::create(dir.path().join(super::super::STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(super::META)
                .unwrap()
                .remove(super::BYTES_KEY)
                .unwrap();
            txn.commit().unwrap();
        }
        let s = open(dir.path(), SpoolRetention::default());
        assert_eq!(s.spool_stats().await.unwrap().bytes, 75);
    }
}
