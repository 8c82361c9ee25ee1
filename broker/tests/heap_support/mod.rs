//! A counting wrapper around the system allocator for the tests that measure heap per idle
//! session (`udp_session_memory`, `ws_session_memory`). A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: Counting = Counting;`, reads [`held`] or waits for
//! [`settled_heap`], and marks the threads whose allocations are not the broker's (clients
//! running in the same process) with [`not_counted_here`].
//!
//! Counting takes `unsafe`: a global allocator implements the unsafe `GlobalAlloc` trait. Each
//! method forwards its arguments to the system allocator unchanged.
#![allow(unsafe_code, dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

/// The system allocator, counting the bytes held by every thread not marked with
/// [`not_counted_here`].
pub struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

/// Allocations up to this size are counted per exact size ([`by_size`]); larger ones share
/// the last slot.
const SIZES: usize = 8192;

/// Live allocations of the counted threads, per size in bytes (the last slot: larger ones).
static BY_SIZE: [AtomicIsize; SIZES + 1] = [const { AtomicIsize::new(0) }; SIZES + 1];

thread_local! {
    /// Set on threads whose allocations are not counted (a test's clients).
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Stops counting the calling thread's allocations (call it first on a client's thread).
pub fn not_counted_here() {
    NOT_COUNTED.set(true);
}

/// Whether the calling thread's allocations count.
fn counted() -> bool {
    !NOT_COUNTED.try_with(Cell::get).unwrap_or(false)
}

/// Heap bytes held now by the counted threads.
pub fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// The heap held once the broker has finished what the logins started (login tasks, the
/// WELCOMEs): two readings 200 ms apart that differ by at most `tolerance` bytes (a byte per
/// measured session), or the last of 20 readings.
pub async fn settled_heap(tolerance: isize) -> isize {
    let mut last = held();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = held();
        if (now - last).abs() <= tolerance {
            return now;
        }
        last = now;
    }
    last
}

/// Live allocations of the counted threads now, per size: slot `n` holds the number of
/// blocks of `n` bytes (the last slot, of any larger size). Two readings' difference shows
/// which allocations a set of sessions holds ([`held_by_size`]).
pub fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

/// The blocks held at `after` and not at `before` ([`by_size`] readings), as
/// `(size, blocks, bytes)`, largest share of bytes first; sizes whose count changed by less
/// than `min_blocks` are left out (the noise of tables and pools).
pub fn held_by_size(
    before: &[isize],
    after: &[isize],
    min_blocks: isize,
) -> Vec<(usize, isize, isize)> {
    let mut held: Vec<(usize, isize, isize)> = before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(size, (b, a))| (size, a - b, (a - b) * size as isize))
        .filter(|&(_, blocks, _)| blocks.abs() >= min_blocks)
        .collect();
    held.sort_by_key(|&(_, _, bytes)| -bytes.abs());
    held
}

fn add(bytes: isize) {
    if counted() {
        HELD.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Counts one block of `size` bytes taken (`blocks` 1) or given back (-1).
fn count_block(size: usize, blocks: isize) {
    if counted() {
        BY_SIZE[size.min(SIZES)].fetch_add(blocks, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged; the counter is
// only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
            count_block(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
            count_block(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
        count_block(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
            count_block(layout.size(), -1);
            count_block(new_size, 1);
        }
        p
    }
}
