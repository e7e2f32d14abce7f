//! Two tunables of glibc's allocator, set once at start, and giving freed memory back to the
//! system after a burst (`trim`): the only `unsafe` code in the crate (calls into C), kept here
//! so that the rest can deny `unsafe` outright.
//!
//! - glibc gives each thread that allocates its own arena, up to eight per core, and an arena
//!   keeps what it once held, so resident memory grows with the number of threads that ever
//!   served a request (measured: 12 MiB after 10 000 register+commit cycles at concurrency 8,
//!   against 8 MiB with two arenas). Four are kept: with two, the connection threads of 2 cores
//!   met on their arena's lock in most allocations that missed the per-thread cache (over half
//!   of the gateway's `futex` calls under register + commit cycles); four took those calls from
//!   51 000 to 31 000 and the CPU a request down by about 15 %, for 0.3–1 MiB more resident
//!   under load (docs/performance-history.md). Eight took more memory after bursts for no more speed.
//! - Blocks from 128 KiB up (job-table snapshots, heartbeat batches, large bodies) are mapped
//!   and given back to the system when freed. glibc raises that threshold each time such a
//!   block is freed, after which the same blocks come from the arenas and stay resident; a
//!   fixed threshold keeps them going back.
//! - What a large request frees in small blocks (a commit of a million members parses into as
//!   many strings) stays in the arenas: 32 such commits at once left 930 MiB resident after
//!   the load. `trim` hands the free pages of every arena back (`malloc_trim`), and the body
//!   budget calls it once the requests in flight have given back what a burst held.
#![allow(unsafe_code)]

/// The bytes of heartbeat lines (a tick of about 5 000 running runs) past which the tick, once
/// recorded, calls [`trim`]: each run's line and unit, and the lists growing to hold them, are
/// small blocks the arenas would keep (10 000 runs: about 2 MiB between ticks).
pub const TRIM_AFTER_HEARTBEAT_BYTES: usize = 1 << 20;

/// Sets both tunables; call it first thing in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    // From glibc's <malloc.h>.
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt only sets tunables of the C allocator; it is called first thing in
    // main, before any other thread exists. A value it refuses leaves the default in place.
    unsafe {
        mallopt(M_ARENA_MAX, 4);
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Other allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Gives the free pages of every arena back to the system. It walks the arenas' free blocks
/// (a few milliseconds after a burst of large requests), so it is called after bursts, not
/// after every request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim only releases free memory of the C allocator; it takes each arena's
    // lock itself, so it is safe to call from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators give memory back by their own rules.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// In the unit tests only: the system allocator, counting the bytes each thread holds and the
/// most it held, so that a test can hold code to the memory it takes ([`counted::peak_during`]).
/// Counted per thread, so tests running at once on other threads do not disturb the figure.
#[cfg(test)]
pub mod counted {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(bytes: isize) {
        // try_with: a thread being torn down has no counters left, and is not measured.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + bytes;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    pub struct Counting;

    // SAFETY: every call is passed on to the system allocator unchanged; the counting touches
    // only const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Runs `f` and returns what it gives with the most bytes this thread held above what it
    /// held before, at any moment while it ran (blocks are counted at their requested size).
    pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(start));
        let out = f();
        let peak = PEAK.with(Cell::get);
        (out, (peak - start).max(0) as usize)
    }
}
