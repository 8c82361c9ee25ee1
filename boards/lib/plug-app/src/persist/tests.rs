//! Host tests of the persistent area over a RAM NOR flash that can lose power at any operation.

use std::vec;
use std::vec::Vec;

use embassy_futures::block_on;
use embedded_storage_async::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

use super::*;

/// Word (program unit) of the mock: 4 bytes, like the STM32F4 with 32-bit programming.
const WORD: usize = 4;
/// Sector (erase unit) of the mock: small, so tests fill sectors and erase often.
const SECTOR: usize = 128;
/// Sectors of the area.
const SECTORS: usize = 3;

/// RAM NOR flash: erase sets 0xFF, a write may only clear bits. With `power_left` set, the
/// operation that uses the last unit of power is torn (half of it happens) and every later one
/// fails, as after a power cut.
struct RamFlash {
    bytes: Vec<u8>,
    power_left: Option<usize>,
    ops: usize,
    erases: Vec<u32>,
}

impl RamFlash {
    fn new() -> Self {
        RamFlash {
            bytes: vec![0xFF; SECTOR * SECTORS],
            power_left: None,
            ops: 0,
            erases: vec![0; SECTORS],
        }
    }

    /// Whether the current operation runs whole (true), torn (Some(false)) or not at all (Err).
    fn spend(&mut self) -> Result<bool, NorFlashErrorKind> {
        self.ops += 1;
        match self.power_left {
            None => Ok(true),
            Some(0) => Err(NorFlashErrorKind::Other),
            Some(n) => {
                self.power_left = Some(n - 1);
                Ok(n > 1)
            }
        }
    }

    /// Power back on after a cut (the reboot); a budget not yet used up stays.
    fn restore_power(&mut self) {
        if self.power_left == Some(0) {
            self.power_left = None;
        }
    }
}

impl ErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(SECTOR) || !to.is_multiple_of(SECTOR) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        if to > self.bytes.len() || from > to {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        let whole = self.spend()?;
        let end = if whole { to } else { from + (to - from) / 2 };
        self.bytes[from..end].fill(0xFF);
        for s in from / SECTOR..to / SECTOR {
            self.erases[s] += 1;
        }
        if whole {
            Ok(())
        } else {
            Err(NorFlashErrorKind::Other)
        }
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        if !start.is_multiple_of(WORD) || !bytes.len().is_multiple_of(WORD) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let target = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        // NOR: programming only clears bits.
        if target.iter().zip(bytes).any(|(old, new)| new & !old != 0) {
            panic!("write at {start:#x} would set bits: not NOR semantics");
        }
        let whole = self.spend()?;
        let len = if whole {
            bytes.len()
        } else {
            (bytes.len() / 2) / WORD * WORD
        };
        self.bytes[start..start + len].copy_from_slice(&bytes[..len]);
        if whole {
            Ok(())
        } else {
            Err(NorFlashErrorKind::Other)
        }
    }
}

fn store(flash: RamFlash) -> Store<RamFlash> {
    Store::new(flash, 0..(SECTOR * SECTORS) as u32).expect("whole sectors")
}

/// A simulated reboot: the flash keeps its bytes, power comes back, a new Store reads it.
fn reboot(s: Store<RamFlash>) -> Store<RamFlash> {
    let mut flash = s.into_flash();
    flash.restore_power();
    store(flash)
}

#[test]
fn an_erased_area_starts_at_boot_1_and_since_id_0() {
    let mut s = store(RamFlash::new());
    let p = block_on(s.begin_boot(0)).unwrap();
    assert_eq!(
        p,
        Persisted {
            boot: 1,
            since_id: 0
        }
    );
}

#[test]
fn the_boot_counter_grows_and_since_id_survives_reboots() {
    let mut s = store(RamFlash::new());
    let mut last = 0;
    for round in 1..=100u64 {
        let p = block_on(s.begin_boot(0)).unwrap();
        assert!(p.boot > last, "boot {} after {last}", p.boot);
        last = p.boot;
        assert_eq!(p.since_id, (round - 1) * 7);
        block_on(s.store_since(round * 7)).unwrap();
        s = reboot(s);
    }
    let flash = s.into_flash();
    assert!(
        flash.erases.iter().all(|&e| e > 0),
        "every sector takes its share of erases: {:?}",
        flash.erases
    );
}

#[test]
fn a_number_from_outside_raises_the_counter() {
    let mut s = store(RamFlash::new());
    assert_eq!(block_on(s.begin_boot(0)).unwrap().boot, 1);
    assert_eq!(block_on(s.begin_boot(41)).unwrap().boot, 41);
    s = reboot(s);
    assert_eq!(block_on(s.begin_boot(0)).unwrap().boot, 42);
    assert_eq!(block_on(s.begin_boot(5)).unwrap().boot, 43, "never lower");
}

#[test]
fn wipe_starts_over() {
    let mut s = store(RamFlash::new());
    block_on(s.begin_boot(0)).unwrap();
    block_on(s.store_since(9)).unwrap();
    block_on(s.wipe()).unwrap();
    let p = block_on(s.begin_boot(0)).unwrap();
    assert_eq!(
        p,
        Persisted {
            boot: 1,
            since_id: 0
        }
    );
}

#[test]
fn bad_ranges_are_refused() {
    assert!(matches!(
        Store::new(RamFlash::new(), 0..SECTOR as u32),
        Err(PersistError::BadRange)
    ));
    assert!(matches!(
        Store::new(RamFlash::new(), 4..(2 * SECTOR) as u32),
        Err(PersistError::BadRange)
    ));
}

/// One boot of the scenario: begin, then two since_id writes. Records every boot number
/// handed out and every since_id whose write returned Ok (or was attempted).
struct Log {
    boots: Vec<u32>,
    since_ok: u64,
    since_tried: u64,
}

fn one_boot(s: &mut Store<RamFlash>, log: &mut Log, round: u64) -> Result<(), PersistError> {
    let p = block_on(s.begin_boot(0))?;
    // Cut or not, a since_id read at boot is one that was stored or being stored.
    assert!(
        p.since_id == log.since_ok || p.since_id == log.since_tried,
        "since_id {} read, stored {} (tried {})",
        p.since_id,
        log.since_ok,
        log.since_tried
    );
    log.since_ok = p.since_id;
    if let Some(&last) = log.boots.last() {
        assert!(
            p.boot > last,
            "boot {} repeats or goes back after {last}",
            p.boot
        );
    }
    log.boots.push(p.boot);
    for k in 0..2 {
        let since = round * 10 + k;
        log.since_tried = since;
        block_on(s.store_since(since))?;
        log.since_ok = since;
    }
    Ok(())
}

/// A power cut at every single flash operation (erases and writes included, each torn half
/// way) of a run of boots that fills and erases every sector several times: no boot number is
/// ever handed out twice, and the since_id read after the cut is the last one stored (or the
/// one being stored when power went).
#[test]
fn boot_numbers_never_repeat_across_power_cuts() {
    const ROUNDS: u64 = 30;
    // Operations of an uncut run: every cut point below.
    let total = {
        let mut s = store(RamFlash::new());
        let mut log = Log {
            boots: vec![],
            since_ok: 0,
            since_tried: 0,
        };
        for round in 1..=ROUNDS {
            one_boot(&mut s, &mut log, round).unwrap();
            s = reboot(s);
        }
        s.into_flash().ops
    };
    assert!(
        total > 100,
        "the run exercises the flash: {total} operations"
    );
    let mut cut_errors = 0;
    for cut in 1..=total {
        let mut flash = RamFlash::new();
        flash.power_left = Some(cut);
        let mut s = store(flash);
        let mut log = Log {
            boots: vec![],
            since_ok: 0,
            since_tried: 0,
        };
        let mut cut_seen = false;
        for round in 1..=ROUNDS {
            match one_boot(&mut s, &mut log, round) {
                Ok(()) => {}
                Err(PersistError::Flash(_)) if !cut_seen => {
                    cut_seen = true;
                    cut_errors += 1;
                }
                Err(e) => panic!("cut at operation {cut}, round {round}: {e:?}"),
            }
            s = reboot(s);
        }
        // After the cut, the run goes on normally.
        assert!(
            log.boots.len() as u64 >= ROUNDS - 1,
            "cut {cut}: {:?}",
            log.boots
        );
    }
    assert_eq!(cut_errors, total, "every cut point was hit");
}

#[test]
fn since_id_waits_for_the_period_or_a_session_end_after_the_gap() {
    let mut p = SincePolicy::new(5, 0, 600_000, 60_000);
    assert_eq!(p.due_at(5), None, "unchanged: never written");
    assert!(!p.due(6, 599_999));
    assert!(p.due(6, 600_000), "grown: written after a period");
    p.written(6, 600_000);
    assert!(!p.due(6, 10_000_000), "unchanged again");
    // A session end shortens the wait to the gap, not below it.
    p.observe(SinceNote {
        since_id: 7,
        sessions_ended: 1,
    });
    assert!(!p.due(7, 659_999));
    assert!(p.due(7, 660_000));
    p.written(7, 660_000);
    // The end was used up: back to the period.
    p.observe(SinceNote {
        since_id: 8,
        sessions_ended: 1,
    });
    assert!(!p.due(8, 720_000));
    assert!(p.due(8, 1_260_000));
}

/// A link that drops every second while messages keep arriving, for a day: no more writes
/// than one per gap.
#[test]
fn a_flapping_link_writes_at_most_once_per_gap() {
    let (period, gap) = (PERIOD_MS, GAP_MS);
    let mut p = SincePolicy::new(0, 0, period, gap);
    let mut writes = 0u64;
    let mut note = SinceNote::default();
    for second in 1..=86_400u64 {
        note.since_id += 1;
        note.sessions_ended += 1;
        p.observe(note);
        let now = second * 1000;
        if p.due(note.since_id, now) {
            p.written(note.since_id, now);
            writes += 1;
        }
    }
    assert_eq!(writes, 86_400_000 / gap);
}

#[test]
fn a_failed_write_is_retried_after_a_period() {
    let mut p = SincePolicy::new(0, 0, 1000, 100);
    p.observe(SinceNote {
        since_id: 3,
        sessions_ended: 1,
    });
    assert!(p.due(3, 100));
    p.failed(100);
    assert!(!p.due(3, 1099));
    assert!(p.due(3, 1100));
    assert_eq!(p.stored(), 0);
}

#[test]
fn the_feed_keeps_the_highest_id_and_counts_session_ends() {
    let feed = SinceFeed::new();
    feed.start_at(10);
    feed.delivered(12);
    feed.delivered(11);
    feed.session_ended();
    assert_eq!(
        feed.latest(),
        SinceNote {
            since_id: 12,
            sessions_ended: 1
        }
    );
}

#[test]
fn resume_counts_the_boot_and_hands_the_area_to_the_keeper() {
    static FEED: SinceFeed = SinceFeed::new();
    let mut s = store(RamFlash::new());
    block_on(s.begin_boot(0)).unwrap();
    block_on(s.store_since(42)).unwrap();
    let boot = Store::open_and_begin_boot(s.into_flash(), 0..(SECTOR * SECTORS) as u32, 0);
    let resume = Resume::from_boot(block_on(boot));
    assert_eq!(resume.since_id, 42);
    assert!(resume.since_feed(&FEED).is_some());
    let (mut s, policy) = resume.keeper().expect("a working area is kept");
    assert_eq!(policy.stored(), 42);
    assert_eq!(block_on(s.load()).unwrap().boot, 2, "the boot was counted");
}

#[test]
fn resume_without_a_working_area_starts_from_0_and_keeps_nothing() {
    static FEED: SinceFeed = SinceFeed::new();
    let boot = Store::open_and_begin_boot(RamFlash::new(), 0..SECTOR as u32, 0);
    let resume = Resume::from_boot(block_on(boot));
    assert_eq!(resume.since_id, 0);
    assert!(resume.since_feed(&FEED).is_none());
    assert!(resume.keeper().is_none());
    let mut dead = RamFlash::new();
    dead.power_left = Some(0);
    let boot = Store::open_and_begin_boot(dead, 0..(SECTOR * SECTORS) as u32, 0);
    let resume = Resume::from_boot(block_on(boot));
    assert_eq!(resume.since_id, 0);
    assert!(resume.store.is_none());
}
