//! The persistent area at boot on a board whose nonces do not depend on the boot number (a
//! hardware RNG, the host kernel): [`Resume::from_boot`] takes what
//! [`Store::open_and_begin_boot`] gave (boot counted, since_id read) and logs it, and an area
//! that does not work costs only since_id (the plug starts from 0 and at worst receives stored
//! messages again). The board then gives the application [`Resume::since_id`] and
//! [`Resume::since_feed`] (`AppConfig`), and [`Resume::keeper`] to a persistence task of its own
//! (embassy tasks cannot be generic over the flash type, so the board keeps that task).

use embedded_storage_async::nor_flash::NorFlash;

use super::{GAP_MS, PERIOD_MS, PersistError, Persisted, SinceFeed, SincePolicy, Store};

/// Where this boot starts: the stored since_id and the area, when it works.
pub struct Resume<F: NorFlash> {
    /// The since_id stored before this boot (0: none, or no usable area).
    pub since_id: u64,
    /// The area, boot already counted; `None` when it is missing or unusable.
    pub store: Option<Store<F>>,
}

impl<F: NorFlash> Resume<F> {
    /// This boot from what [`Store::open_and_begin_boot`] gave (call that before the network
    /// starts), logging the boot number and since_id, or why the area is unusable (then since_id
    /// is 0 and nothing is kept). Not an `async fn` of its own: a board's `main` awaits the
    /// store directly, which keeps its future smaller (about 180 B of flash on the RP2040).
    pub fn from_boot(boot: Result<(Store<F>, Persisted), PersistError>) -> Self {
        match boot {
            Ok((store, p)) => {
                log_info!("persist: boot {}, since_id {}", p.boot, p.since_id);
                Resume {
                    since_id: p.since_id,
                    store: Some(store),
                }
            }
            Err(e) => {
                log_error!("persistent area unusable: {}; since_id starts at 0", e);
                Self::without_area()
            }
        }
    }

    /// A boot without a persistent area: since_id 0, nothing kept.
    pub fn without_area() -> Self {
        Resume {
            since_id: 0,
            store: None,
        }
    }

    /// The feed for `AppConfig::since_feed`: `feed` when the area works (its persistence task
    /// reads it), else none.
    pub fn since_feed(&self, feed: &'static SinceFeed) -> Option<&'static SinceFeed> {
        self.store.as_ref().map(|_| feed)
    }

    /// The area and its [`SincePolicy`] (the default [`PERIOD_MS`] and [`GAP_MS`], from now)
    /// for the board's persistence task (`persist::keep_since`); `None` without an area.
    pub fn keeper(self) -> Option<(Store<F>, SincePolicy)> {
        let store = self.store?;
        let now_ms = embassy_time::Instant::now().as_millis();
        Some((
            store,
            SincePolicy::new(self.since_id, now_ms, PERIOD_MS, GAP_MS),
        ))
    }
}
