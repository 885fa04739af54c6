//! An NDJSON import's threads have exited when it returns. In a test binary of its own:
//! it counts the process's threads by name, and other tests' imports would run beside it.

use twinhub::registry::Registry;
use twinhub::registry::ndjson::ImportOptions;

/// The import's threads (named `twinhub-import-*`) that still exist.
#[cfg(target_os = "linux")]
fn import_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("twinhub-import"))
        .count()
}

/// When an import returns, its threads are gone, not only done with their work: nothing
/// of it (a thread's stack, its thread-local storage) outlives the call. The fuzz
/// target's leak check found a parser thread's thread-local storage still allocated
/// after the import had returned (leaving a thread scope waits for the threads' closures,
/// not for the threads to exit).
#[cfg(target_os = "linux")]
#[test]
fn an_import_s_threads_have_exited_when_it_returns() {
    let text: String = (0..50)
        .map(|i| {
            format!("{{\"deviceId\": \"d{i}\", \"serviceProperties\": {{\"tags\": [\"t\"]}}}}\n")
        })
        .collect();
    let options = ImportOptions {
        parsers: 2,
        chunk_bytes: 512,
    };
    for round in 0..200 {
        let mut reg = Registry::new();
        if round % 2 == 0 {
            assert_eq!(
                reg.import_ndjson_with(text.as_bytes(), options).unwrap(),
                50
            );
        } else {
            // An import that stops at a bad line returns early: its threads go too.
            let bad = format!("{text}{{\"deviceId\": 7}}\n{text}");
            let err = reg.import_ndjson_with(bad.as_bytes(), options).unwrap_err();
            assert_eq!(err.line, 51);
        }
        assert_eq!(import_threads(), 0, "round {round}");
    }
}
