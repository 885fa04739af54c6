//! `Hub::query_tags`: the devices carrying every tag, the first `top` in device id order,
//! the same whether the match is small (sorted) or large (read in id order), with
//! removed devices and ids out of insertion order.

#![cfg(feature = "memory-fleet")]

use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;

const N: usize = 20_000;

/// Device `i`'s tags: `all`, `half` (even i), `tenth` (i % 10 == 3), `few` (i % 2500 == 7).
fn tags_of(i: usize) -> Vec<&'static str> {
    let mut t = vec!["all"];
    if i.is_multiple_of(2) {
        t.push("half");
    }
    if i % 10 == 3 {
        t.push("tenth");
    }
    if i % 2500 == 7 {
        t.push("few");
    }
    t
}

/// Ids not in creation order: the id order is not the slot order.
fn id_of(i: usize) -> String {
    format!("d{:05}", (i * 7_919) % N)
}

#[test]
fn query_tags_returns_the_first_matches_in_id_order_for_small_and_large_matches() {
    let mut registry = Registry::new();
    for i in 0..N {
        registry
            .create(Twin::new(DeviceId::new(&id_of(i)).unwrap()))
            .unwrap();
        registry.add_tags(&id_of(i), &tags_of(i), None).unwrap();
    }
    // Removed devices stay in a large registry's id order until a merge: never listed.
    let removed: Vec<usize> = (0..N).step_by(97).collect();
    for &i in &removed {
        registry.remove(&id_of(i)).unwrap();
    }
    let hub = Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        registry,
        HubConfig::default(),
    );
    let naive = |tags: &[&str], top: usize| -> Vec<String> {
        if tags.is_empty() {
            return Vec::new();
        }
        let mut ids: Vec<String> = (0..N)
            .filter(|i| !removed.contains(i))
            .filter(|&i| tags.iter().all(|t| tags_of(i).contains(t)))
            .map(id_of)
            .collect();
        ids.sort();
        ids.truncate(top);
        ids
    };
    let cases: [(&[&str], usize); 11] = [
        (&["all"], 100),          // large: read in id order
        (&["half"], 7),           // large
        (&["all", "half"], 1),    // large, two bitmaps
        (&["tenth"], 100),        // small: sorted
        (&["tenth", "half"], 10), // empty intersection
        (&["few"], 100),          // fewer than top
        (&["all", "few"], 3),
        (&["all"], N), // everything: the sorted path
        (&["all"], 0),
        (&["nobody-has-this"], 10),
        (&[], 10), // no tags: none
    ];
    for (tags, top) in cases {
        let got: Vec<String> = hub
            .query_tags(tags, top)
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(got, naive(tags, top), "tags {tags:?}, top {top}");
    }
    // The cases above are not all empty: the large path was taken with matches.
    assert_eq!(hub.query_tags(&["all"], 100).len(), 100);
    hub.stop();
}
