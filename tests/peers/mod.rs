//! The interop-peer rule, shared by the tests that drive third-party peers: a missing peer
//! skips the test with a loud message, or fails it when `TWINHUB_REQUIRE_PEERS=1` (CI sets
//! it after `tests/peers/install.sh`).
#![allow(dead_code)] // each test crate uses the part it needs

use std::path::{Path, PathBuf};

/// Where the peer scripts and `node_modules` live.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Whether peers are required: a missing peer then fails the test.
pub fn peers_required() -> bool {
    std::env::var("TWINHUB_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Reports a missing peer: panics when peers are required, else says loudly it skips.
pub fn missing_peer(what: &str) {
    if peers_required() {
        panic!(
            "interop peer {what} is missing and TWINHUB_REQUIRE_PEERS=1 (run bash tests/peers/install.sh)"
        );
    }
    eprintln!(
        "\n*** SKIPPING interop test: peer {what} is missing (run bash tests/peers/install.sh) ***\n"
    );
}

/// `true` when the peer is usable (`ok`); otherwise [`missing_peer`] and `false`.
pub fn peer_available(what: &str, ok: bool) -> bool {
    if !ok {
        missing_peer(what);
    }
    ok
}
