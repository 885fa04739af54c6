//! An NDJSON import's threads have exited when it returns. In a test binary of its own:
//! it counts the process's live allocations and threads, and other tests would run
//! beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use twinhub::registry::Registry;
use twinhub::registry::ndjson::ImportOptions;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY is the system allocator's: each call is passed through unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The import's threads (named `twinhub-import-*`) that the kernel still lists.
#[cfg(target_os = "linux")]
fn import_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("twinhub-import"))
        .count()
}

/// When an import returns, nothing of its threads is left: no allocation (their
/// thread-local storage is freed as a thread exits, after its closure has returned), and
/// soon no thread. The fuzz target's leak check found a parser thread's thread-local
/// storage still allocated after the import had returned (leaving a thread scope waits
/// for the threads' closures, not for the threads to exit).
///
/// The kernel may list a joined thread for a moment after its exit (it is released after
/// it wakes the joiner), so the thread count is awaited, with a bound; the allocation
/// count is checked at once.
#[cfg(target_os = "linux")]
#[test]
fn an_import_s_threads_have_exited_when_it_returns() {
    let text: String = (0..50)
        .map(|i| {
            format!("{{\"deviceId\": \"d{i}\", \"serviceProperties\": {{\"tags\": [\"t\"]}}}}\n")
        })
        .collect();
    let bad = format!("{text}{{\"deviceId\": 7}}\n{text}");
    let options = ImportOptions {
        parsers: 2,
        chunk_bytes: 512,
    };
    let import = |round: usize| {
        let mut reg = Registry::new();
        if round.is_multiple_of(2) {
            assert_eq!(
                reg.import_ndjson_with(text.as_bytes(), options).unwrap(),
                50
            );
        } else {
            // An import that stops at a bad line returns early: its threads go too.
            let err = reg.import_ndjson_with(bad.as_bytes(), options).unwrap_err();
            assert_eq!(err.line, 51);
        }
    };
    // A first import for whatever the process sets up once.
    import(0);
    import(1);
    for round in 0..200 {
        let before = LIVE_BYTES.load(Ordering::SeqCst);
        import(round);
        let after = LIVE_BYTES.load(Ordering::SeqCst);
        assert_eq!(after, before, "round {round}: bytes still allocated");
        let deadline = Instant::now() + Duration::from_secs(10);
        while import_threads() > 0 {
            assert!(Instant::now() < deadline, "round {round}: a thread is left");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
