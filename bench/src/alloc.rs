//! A counting global allocator: [`System`] plus two counters, switched on only while the
//! construction benchmark measures (so that it costs one relaxed load everywhere else).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The global allocator of the bench binary.
pub struct CountingAlloc;

static ENABLED: AtomicBool = AtomicBool::new(false);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[inline]
fn record_alloc(size: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[inline]
fn record_free(size: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        FREED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract (layout handling, returned pointers) is exactly `System`'s. The
// extra work is two relaxed atomic additions, which neither allocate nor unwind.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record_free(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record_free(layout.size());
        record_alloc(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap activity between [`start`] and [`stop`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapCount {
    /// Bytes requested by allocations (a `realloc` counts its new size).
    pub allocated: u64,
    /// Bytes given back.
    pub freed: u64,
    /// Number of allocations (a `realloc` counts as one).
    pub allocations: u64,
}

impl HeapCount {
    /// Bytes still held: allocated minus freed.
    pub fn retained(&self) -> i64 {
        self.allocated as i64 - self.freed as i64
    }
}

/// Reset the counters and start counting (on every thread).
pub fn start() {
    ALLOCATED_BYTES.store(0, Ordering::SeqCst);
    FREED_BYTES.store(0, Ordering::SeqCst);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    ENABLED.store(true, Ordering::SeqCst);
}

/// Stop counting and return what was counted since [`start`].
pub fn stop() -> HeapCount {
    ENABLED.store(false, Ordering::SeqCst);
    HeapCount {
        allocated: ALLOCATED_BYTES.load(Ordering::SeqCst),
        freed: FREED_BYTES.load(Ordering::SeqCst),
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
    }
}
