//! Replays every fuzz corpus file (`fuzz/corpus/<target>/*`) through the same body the
//! cargo-fuzz target runs, so stable CI covers what the fuzzers found.

#![cfg(feature = "fuzzing")]

use std::path::Path;

#[test]
fn replay_fuzz_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut files = 0;
    for (name, body) in twinhub::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!("fuzz target {name} has no corpus at {}: {e}", dir.display())
        });
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| body(&data));
            assert!(
                result.is_ok(),
                "fuzz target {name} panicked on {}",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files > 0, "no corpus files replayed");
}

#[test]
fn every_corpus_directory_has_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            twinhub::fuzzing::TARGETS.iter().any(|(t, _)| *t == name),
            "corpus directory {name} has no fuzz target body in twinhub::fuzzing"
        );
    }
}
