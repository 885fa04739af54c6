//! Fuzz target bodies, shared by `fuzz/fuzz_targets/*` (cargo-fuzz, nightly) and by
//! `tests/fuzz_replay.rs`, which replays every file under `fuzz/corpus/<target>/` on
//! stable so CI covers the corpus.
//!
//! Each body panics only on a real bug (a broken invariant, an internal error kind, a
//! round trip that does not hold); bad input must come back as a typed error.

pub mod coap;
#[cfg(feature = "dtls")]
pub mod dtls;
pub mod job;
pub mod lwm2m_client;
pub mod lwm2m_server;
pub mod query;
pub mod registry;
pub mod server_traffic;
pub mod store;

pub use coap::{coap_decode, link_format};
#[cfg(feature = "dtls")]
pub use dtls::dtls_records;
pub use job::job_events;
pub use lwm2m_client::client_requests;
pub use lwm2m_server::{
    composite_paths, lwm2m_cbor_decode, registration, senml_cbor_decode, senml_json_decode,
    tlv_decode,
};
pub use query::{query_parse, query_roundtrip};
pub use registry::{ndjson_import, registry_ops};
pub use server_traffic::server_traffic;
pub use store::{job_rows, store_records};

/// A fuzz target body: takes the fuzzer's bytes, panics only on a real bug.
pub type FuzzBody = fn(&[u8]);

/// The fuzz targets by name: the corpus directory name and the body to run.
/// One line per target, kept sorted.
pub const TARGETS: &[(&str, FuzzBody)] = &[
    ("client_requests", client_requests),
    ("coap_decode", coap_decode),
    ("composite_paths", composite_paths),
    #[cfg(feature = "dtls")]
    ("dtls_records", dtls_records),
    ("job_events", job_events),
    ("link_format", link_format),
    ("lwm2m_cbor_decode", lwm2m_cbor_decode),
    ("ndjson_import", ndjson_import),
    ("query_parse", query_parse),
    ("query_roundtrip", query_roundtrip),
    ("registration", registration),
    ("registry_ops", registry_ops),
    ("senml_cbor_decode", senml_cbor_decode),
    ("senml_json_decode", senml_json_decode),
    ("server_traffic", server_traffic),
    ("store_records", store_records),
    ("job_rows", job_rows),
    ("timestamp_parse", timestamp_parse),
    ("tlv_decode", tlv_decode),
];

/// Every fuzz target body, by name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(name, _)| *name == target) {
        Some((_, body)) => {
            body(data);
            true
        }
        None => false,
    }
}

/// Timestamps and LWM2M paths: parse arbitrary text; what parses prints back to itself.
pub fn timestamp_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = s.parse::<crate::Timestamp>() {
        assert_eq!(t.to_string().parse::<crate::Timestamp>(), Ok(t));
    }
    if let Ok(p) = s.parse::<crate::Lwm2mPath>() {
        assert_eq!(p.to_string().parse::<crate::Lwm2mPath>(), Ok(p));
    }
}
