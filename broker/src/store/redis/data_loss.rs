//! Noticing that Redis lost data, and keeping ids above everything issued before it.
//!
//! Redis keeps a run marker, `P epoch`: a random value the first broker writes. Every broker
//! learns it at start (`RedisStore::check_marker`, or else its first offline-store call) and
//! sends the value it knows with each later `append`, `since` and `remember`; the script ([`CHECK_EPOCH`], run first, in the same atomic
//! script as the operation) reports:
//! * `new` / `learned`: this broker did not know a marker yet (it wrote one, or learned the one
//!   there);
//! * `ok`: the marker is the one this broker knows;
//! * `lost`: the marker is gone (Redis restarted without persistence, `FLUSHALL`) or differs (a
//!   failover to a replica that never saw it, or another broker already re-created it after a
//!   loss). A gone marker is re-created by the same script.
//!
//! `append` also reports `behind` when Redis's id counter is below the highest id this broker
//! issued or read: a failover to a replica that missed the last writes, with the marker intact.
//!
//! [`DataLossWatch`] turns those reports into one warning and one count per loss (per broker), and
//! holds this broker's high-water mark of ids, which `append` uses as a floor next to the clock's
//! (see [`crate::store::msg_id`]): an id is never handed out twice by a broker, whatever Redis
//! forgot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::store::msg_id::clock_floor;
use crate::store::{MAX_MSG_ID, StoreError};

/// Lua helper shared by the checked scripts: `check_epoch(p, known, fresh)` returns
/// `{status, marker}` (statuses in the module docs), re-creating a missing marker with `fresh`.
pub(super) const CHECK_EPOCH: &str = r#"
local function check_epoch(p, known, fresh)
  local cur = redis.call('GET', p .. 'epoch')
  if not cur then
    redis.call('SET', p .. 'epoch', fresh)
    if known == '' then return {'new', fresh} end
    return {'lost', fresh}
  end
  if known == '' then return {'learned', cur} end
  if cur ~= known then return {'lost', cur} end
  return {'ok', cur}
end
"#;

/// Why this broker decided Redis lost data (logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LossCause {
    /// The run marker vanished or changed.
    MarkerLost,
    /// The id counter was below an id this broker had issued or read.
    IdsBehind,
}

/// Per-broker state of the data-loss check (see module docs).
pub(super) struct DataLossWatch {
    /// The marker this broker knows (empty: none learned yet).
    known: Mutex<String>,
    /// Highest id this broker issued or read.
    high_water: AtomicU64,
    /// Losses noticed.
    losses: AtomicU64,
    /// A loss was noticed and no append has reported it to its caller yet.
    unreported: AtomicBool,
    /// The metric handle counting them (`broker_store_data_loss_total`).
    counter: metrics::Counter,
    /// Key prefix, for the log line.
    prefix: String,
}

impl DataLossWatch {
    /// A watch that counts into `counter`.
    pub(super) fn new(counter: metrics::Counter, prefix: &str) -> DataLossWatch {
        DataLossWatch {
            known: Mutex::new(String::new()),
            high_water: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            unreported: AtomicBool::new(false),
            counter,
            prefix: prefix.to_string(),
        }
    }

    /// The marker to send with a call (empty when none learned yet).
    pub(super) fn known(&self) -> String {
        self.lock().clone()
    }

    /// A fresh random marker for the script to write if the marker is missing.
    pub(super) fn fresh() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    /// The floor for the next id: the clock's at `now_ms`, and above every id this broker
    /// issued or read.
    pub(super) fn floor(&self, now_ms: u64) -> u64 {
        clock_floor(now_ms)
            .max(self.high_water().saturating_add(1))
            .min(MAX_MSG_ID)
    }

    /// Highest id this broker issued or read (0: none).
    pub(super) fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Records an id issued or read.
    pub(super) fn saw_id(&self, id: u64) {
        self.high_water.fetch_max(id, Ordering::Relaxed);
    }

    /// Losses noticed so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// Takes a script's `(status, marker)` report; a status it does not know is corrupt data.
    pub(super) fn observe(&self, status: &str, marker: &str) -> Result<(), StoreError> {
        match status {
            "ok" => Ok(()),
            "new" | "learned" => {
                let mut known = self.lock();
                if known.is_empty() {
                    *known = marker.to_string();
                }
                Ok(())
            }
            "lost" => {
                let mut known = self.lock();
                // Calls in flight when the marker changed all report it: count it once.
                if *known != marker {
                    *known = marker.to_string();
                    drop(known);
                    self.lost(LossCause::MarkerLost);
                }
                Ok(())
            }
            "behind" => {
                self.lost(LossCause::IdsBehind);
                Ok(())
            }
            _ => Err(StoreError::Corrupt(format!(
                "redis epoch status {status:?}"
            ))),
        }
    }

    /// `Err(DataLost)` once per noticed loss: the append that gets it stores nothing and tells
    /// its caller (the push API answers an error instead of 200), later ones go through.
    pub(super) fn take_unreported(&self) -> Result<(), StoreError> {
        if self.unreported.swap(false, Ordering::Relaxed) {
            Err(StoreError::DataLost(
                "redis restarted without persistence, was flushed or failed over",
            ))
        } else {
            Ok(())
        }
    }

    fn lost(&self, cause: LossCause) {
        self.losses.fetch_add(1, Ordering::Relaxed);
        self.unreported.store(true, Ordering::Relaxed);
        self.counter.increment(1);
        tracing::warn!(
            prefix = %self.prefix,
            ?cause,
            high_water = self.high_water(),
            "redis lost data (restart without persistence, flush or failover): offline messages, \
             bindings, groups and known terminals written before may be gone; new message ids \
             stay above every id this broker issued"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_loss_once_and_learns_the_marker() {
        let w = DataLossWatch::new(metrics::Counter::noop(), "t:");
        w.observe("new", "aa").unwrap();
        assert_eq!(w.known(), "aa");
        w.observe("learned", "bb").unwrap();
        assert_eq!(
            w.known(),
            "aa",
            "a learned marker never replaces a known one"
        );
        w.observe("ok", "aa").unwrap();
        assert_eq!(w.losses(), 0);
        // Two calls in flight both see the re-created marker: one loss.
        assert!(w.take_unreported().is_ok(), "nothing to report yet");
        w.observe("lost", "cc").unwrap();
        w.observe("lost", "cc").unwrap();
        assert_eq!((w.losses(), w.known()), (1, "cc".to_string()));
        // Reported to one caller, once.
        assert!(matches!(w.take_unreported(), Err(StoreError::DataLost(_))));
        assert!(w.take_unreported().is_ok());
        w.observe("behind", "cc").unwrap();
        assert_eq!(w.losses(), 2);
        assert!(matches!(
            w.observe("weird", "cc"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn floor_is_above_every_id_seen_and_the_clock() {
        let w = DataLossWatch::new(metrics::Counter::noop(), "t:");
        assert_eq!(w.floor(0), 1);
        assert_eq!(w.floor(5), 5 << 10);
        w.saw_id(1 << 40);
        w.saw_id(7);
        assert_eq!(w.floor(5), (1 << 40) + 1);
        w.saw_id(MAX_MSG_ID);
        assert_eq!(w.floor(0), MAX_MSG_ID);
    }
}
