#![no_main]
//! Run with `-- -detect_leaks=0`: the import's reader and parser threads end inside each
//! run, and LeakSanitizer reports the thread-local state of `std::sync::mpsc` in threads
//! that have just ended (a known false positive of LSan with Rust threads).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| twinhub::fuzzing::ndjson_import(data));
