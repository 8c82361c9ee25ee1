//! What a board keeps across reboots: its boot counter and the client's `since_id`, in a small
//! wear-levelled flash area.
//!
//! ```text
//!  board main ── BoardFlash (embassy-stm32 / embassy-rp flash, a semihosting file on QEMU)
//!      │
//!      ├─ Store::new(flash, range)        a sequential-storage map over that range (2+ sectors)
//!      ├─ Store::begin_boot()  ──────────  boot = stored + 1, written back BEFORE the network
//!      │                                  starts; gives the stored since_id to AppConfig::since_id
//!      ├─ app::start(.., AppConfig { since_id, since_feed: Some(&feed) })
//!      │     plug task ──> SinceFeed::note(since_id, sessions_ended)   (no flash access)
//!      └─ keep_since(store, feed, SincePolicy)   a task of the board's own: writes since_id
//!                                                when SincePolicy::due says so
//! ```
//!
//! A board that draws its nonces elsewhere (a hardware RNG) hands what the first two steps gave
//! to [`Resume::from_boot`], which goes on with since_id 0 and no store when the area does not
//! work.
//!
//! Storage: [`sequential_storage::map`] with two `u8` keys ([`KEY_BOOT`], [`KEY_SINCE`]). The map
//! appends a new record for every write and erases a sector only when the area is full, so
//! wear spreads over every sector of the area; an interrupted write or erase (power cut) is
//! repaired on the next access and leaves either the old or the new value.
//!
//! A boot number must never repeat (the QEMU board derives its nonces from it): [`Store::begin_boot`]
//! writes the new number before it is returned, so a power cut anywhere before the write ends
//! means the number was never used, and one after it means the next boot reads it and goes
//! higher (`tests::boot_numbers_never_repeat_across_power_cuts` cuts at every flash operation).
//!
//! `since_id` writes are limited by [`SincePolicy`] (pure logic, host-tested): only when it
//! grew, and then either [`SincePolicy::period_ms`] after the last write, or at the end of a
//! session (the client's `Disconnected`) but not sooner than [`SincePolicy::gap_ms`] after the
//! last write. After a power cut the plug may receive again at most the messages of the last
//! period; it never misses one (a stored since_id is always one the application has taken).

use core::cell::Cell;
use core::ops::Range;

use embassy_futures::select::select;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embedded_storage_async::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

mod resume;
pub use resume::Resume;

/// Map key of the boot counter (a `u32`: the number of the latest boot).
pub const KEY_BOOT: u8 = 1;
/// Map key of the client's `since_id` (a `u64`).
pub const KEY_SINCE: u8 = 2;

/// Bytes of the map's work buffer: key (1) + largest value (8), rounded up to the largest
/// flash word sequential-storage supports (32 bytes, STM32H7).
const BUFFER: usize = 32;

/// What the previous boots left, as this boot uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Persisted {
    /// This boot's number (1 on the first boot of an erased area); never repeats.
    pub boot: u32,
    /// The highest message id the application had taken when it was last stored (0: none).
    pub since_id: u64,
}

/// Why the persistent area could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PersistError {
    /// The range is not whole sectors, or fewer than two (sequential-storage needs two).
    BadRange,
    /// The flash driver refused an operation.
    Flash(FlashFault),
    /// The area holds something that is not a valid map, even after repair; only erasing it
    /// ([`Store::wipe`]) helps, and that forgets the boot counter.
    Corrupted,
    /// No room for a record even after compaction (cannot happen with two keys and 2+ sectors).
    Full,
    /// The boot counter reached `u32::MAX`: no new boot number can be given.
    BootsExhausted,
    /// Any other sequential-storage error (buffer, serialization: a bug here).
    Storage,
}

/// The flash driver's error, by kind (drivers' own error types differ per board).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashFault {
    /// Address or length not aligned to the flash's word or sector.
    NotAligned,
    /// Outside the flash.
    OutOfBounds,
    /// Anything else (program/erase failure, a write that would set bits, host I/O).
    Other,
}

impl core::fmt::Display for PersistError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            PersistError::BadRange => "area is not two or more whole sectors",
            PersistError::Flash(FlashFault::NotAligned) => "flash: unaligned access",
            PersistError::Flash(FlashFault::OutOfBounds) => "flash: out of bounds",
            PersistError::Flash(FlashFault::Other) => "flash: operation failed",
            PersistError::Corrupted => "area corrupted (wipe it)",
            PersistError::Full => "area full",
            PersistError::BootsExhausted => "boot counter exhausted",
            PersistError::Storage => "storage error",
        };
        f.write_str(text)
    }
}

impl<E: NorFlashError> From<sequential_storage::Error<E>> for PersistError {
    fn from(e: sequential_storage::Error<E>) -> Self {
        match e {
            sequential_storage::Error::Storage { value, .. } => {
                PersistError::Flash(match value.kind() {
                    NorFlashErrorKind::NotAligned => FlashFault::NotAligned,
                    NorFlashErrorKind::OutOfBounds => FlashFault::OutOfBounds,
                    _ => FlashFault::Other,
                })
            }
            sequential_storage::Error::Corrupted { .. } => PersistError::Corrupted,
            sequential_storage::Error::FullStorage => PersistError::Full,
            _ => PersistError::Storage,
        }
    }
}

/// The persistent area: a sequential-storage map over `range` of `flash`.
pub struct Store<F: NorFlash> {
    map: MapStorage<u8, F, Cache<Uncached, Uncached, Uncached, u8>>,
    buf: Buffer,
}

/// The map's work buffer, word-aligned for flash drivers that program from aligned RAM.
#[repr(align(4))]
struct Buffer([u8; BUFFER]);

impl<F: NorFlash> Store<F> {
    /// The area `range` (byte offsets in `flash`: whole sectors, at least two) of `flash`.
    pub fn new(flash: F, range: Range<u32>) -> Result<Self, PersistError> {
        let config = MapConfig::<F>::try_new(range).map_err(|_| PersistError::BadRange)?;
        Ok(Store {
            map: MapStorage::new(flash, config, Cache::new_uncached()),
            buf: Buffer([0; BUFFER]),
        })
    }

    /// What the area holds now: the latest boot number (0: none yet) and since_id (0: none).
    pub async fn load(&mut self) -> Result<Persisted, PersistError> {
        let boot = self
            .map
            .fetch_item::<u32>(&mut self.buf.0, &KEY_BOOT)
            .await?
            .unwrap_or(0);
        let since_id = self
            .map
            .fetch_item::<u64>(&mut self.buf.0, &KEY_SINCE)
            .await?
            .unwrap_or(0);
        Ok(Persisted { boot, since_id })
    }

    /// Starts a boot: reads the area, stores the next boot number (at least `at_least`, for a
    /// board told a number from outside) and returns it with the stored since_id. Call before
    /// the first login; on an error, do not use any boot number.
    pub async fn begin_boot(&mut self, at_least: u32) -> Result<Persisted, PersistError> {
        let stored = self.load().await?;
        let boot = stored
            .boot
            .checked_add(1)
            .ok_or(PersistError::BootsExhausted)?
            .max(at_least);
        self.map
            .store_item(&mut self.buf.0, &KEY_BOOT, &boot)
            .await?;
        Ok(Persisted {
            boot,
            since_id: stored.since_id,
        })
    }

    /// Opens the area `range` of `flash` ([`Store::new`]) and starts a boot there
    /// ([`Store::begin_boot`]): what a board's `main` does before its network starts.
    pub async fn open_and_begin_boot(
        flash: F,
        range: Range<u32>,
        at_least: u32,
    ) -> Result<(Self, Persisted), PersistError> {
        let mut store = Self::new(flash, range)?;
        let persisted = store.begin_boot(at_least).await?;
        Ok((store, persisted))
    }

    /// Stores `since_id` (one record of 20 bytes with a 4-byte flash word).
    pub async fn store_since(&mut self, since_id: u64) -> Result<(), PersistError> {
        self.map
            .store_item(&mut self.buf.0, &KEY_SINCE, &since_id)
            .await?;
        Ok(())
    }

    /// Erases the whole area: the next boot is boot 1 with since_id 0.
    pub async fn wipe(&mut self) -> Result<(), PersistError> {
        self.map.erase_all().await?;
        Ok(())
    }

    /// The flash back (tests: a simulated reboot).
    pub fn into_flash(self) -> F {
        self.map.destroy().0
    }
}

/// The plug task's latest news for the persistence task: the since_id the application has taken
/// and how many sessions have ended. One per board, shared by `'static` reference.
pub struct SinceFeed {
    latest: Mutex<CriticalSectionRawMutex, Cell<SinceNote>>,
    changed: Signal<CriticalSectionRawMutex, ()>,
}

/// One note of the [`SinceFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinceNote {
    /// The highest message id the application has taken.
    pub since_id: u64,
    /// Sessions ended (`Disconnected` events) since boot; wraps.
    pub sessions_ended: u32,
}

impl SinceFeed {
    /// An empty feed (const, so a board can keep it in a `static` next to its `Liveness`).
    pub const fn new() -> Self {
        SinceFeed {
            latest: Mutex::new(Cell::new(SinceNote {
                since_id: 0,
                sessions_ended: 0,
            })),
            changed: Signal::new(),
        }
    }

    /// The application took message `msg_id`.
    pub fn delivered(&self, msg_id: u64) {
        self.update(|n| n.since_id = n.since_id.max(msg_id));
    }

    /// A session ended.
    pub fn session_ended(&self) {
        self.update(|n| n.sessions_ended = n.sessions_ended.wrapping_add(1));
    }

    /// Starts from the since_id this boot began with (before [`Self::delivered`] is called).
    pub fn start_at(&self, since_id: u64) {
        self.latest.lock(|c| {
            let mut n = c.get();
            n.since_id = since_id;
            c.set(n);
        });
    }

    /// The latest note.
    pub fn latest(&self) -> SinceNote {
        self.latest.lock(Cell::get)
    }

    /// Waits until a note changes.
    pub async fn changed(&self) {
        self.changed.wait().await;
    }

    fn update(&self, f: impl FnOnce(&mut SinceNote)) {
        self.latest.lock(|c| {
            let mut n = c.get();
            f(&mut n);
            c.set(n);
        });
        self.changed.signal(());
    }
}

impl core::fmt::Debug for SinceFeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("SinceFeed").field(&self.latest()).finish()
    }
}

impl Default for SinceFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// When to write since_id (sans-IO: times are milliseconds on any monotonic clock).
#[derive(Debug, Clone)]
pub struct SincePolicy {
    /// Longest a grown since_id waits for its write while sessions go on.
    pub period_ms: u64,
    /// Shortest time between two writes, also at a session end (a flapping link cannot write
    /// more often than this).
    pub gap_ms: u64,
    stored: u64,
    last_write_ms: u64,
    sessions_seen: u32,
    end_pending: bool,
}

/// Default [`SincePolicy::period_ms`]: 10 minutes (at most 144 writes a day).
pub const PERIOD_MS: u64 = 10 * 60 * 1000;
/// Default [`SincePolicy::gap_ms`]: 1 minute (at most 1,440 writes a day).
pub const GAP_MS: u64 = 60 * 1000;

impl SincePolicy {
    /// A policy for an area holding `stored` (what [`Store::begin_boot`] returned), starting at
    /// `now_ms` (a boot write just happened: the gap applies from here).
    pub fn new(stored: u64, now_ms: u64, period_ms: u64, gap_ms: u64) -> Self {
        SincePolicy {
            period_ms,
            gap_ms,
            stored,
            last_write_ms: now_ms,
            sessions_seen: 0,
            end_pending: false,
        }
    }

    /// Takes in a note from the feed.
    pub fn observe(&mut self, note: SinceNote) {
        if note.sessions_ended != self.sessions_seen {
            self.sessions_seen = note.sessions_ended;
            self.end_pending = true;
        }
    }

    /// When the next write is due for `since_id` (a time to wake at); `None`: nothing to write
    /// until since_id grows.
    pub fn due_at(&self, since_id: u64) -> Option<u64> {
        if since_id <= self.stored {
            return None;
        }
        let wait = if self.end_pending {
            self.gap_ms
        } else {
            self.period_ms
        };
        Some(self.last_write_ms.saturating_add(wait))
    }

    /// Whether to write `since_id` at `now_ms`.
    pub fn due(&self, since_id: u64, now_ms: u64) -> bool {
        self.due_at(since_id).is_some_and(|at| now_ms >= at)
    }

    /// `since_id` was written at `now_ms`.
    pub fn written(&mut self, since_id: u64, now_ms: u64) {
        self.stored = since_id;
        self.last_write_ms = now_ms;
        self.end_pending = false;
    }

    /// A write failed at `now_ms`: try again a period later.
    pub fn failed(&mut self, now_ms: u64) {
        self.last_write_ms = now_ms;
        self.end_pending = false;
    }

    /// What the area holds.
    pub fn stored(&self) -> u64 {
        self.stored
    }
}

/// Writes since_id from `feed` into `store` as `policy` allows; never returns. Run it in a task
/// of the board's own, not the network's: a write may erase a sector (about 1-2 s on an
/// STM32F4 128 KiB sector, docs/firmware.md), and while a blocking flash driver erases,
/// nothing else on that executor runs.
pub async fn keep_since<F: NorFlash>(
    store: &mut Store<F>,
    feed: &SinceFeed,
    mut policy: SincePolicy,
) -> ! {
    loop {
        let note = feed.latest();
        policy.observe(note);
        let now = embassy_time::Instant::now().as_millis();
        if policy.due(note.since_id, now) {
            match store.store_since(note.since_id).await {
                Ok(()) => {
                    log_info!("since_id {} stored", note.since_id);
                    policy.written(note.since_id, now);
                }
                Err(e) => {
                    log_info!("since_id {} not stored: {}", note.since_id, e);
                    policy.failed(now);
                }
            }
            continue;
        }
        match policy.due_at(note.since_id) {
            Some(at) => {
                select(
                    feed.changed(),
                    embassy_time::Timer::at(embassy_time::Instant::from_millis(at)),
                )
                .await;
            }
            None => feed.changed().await,
        }
    }
}

#[cfg(test)]
mod tests;
