//! Session 56, dogfooding as the operator of a service that embeds the hub and cares
//! about restarts: regressions for what that found.

use twinhub::DeviceId;
use twinhub::store::{Store, StoreConfig};
use twinhub::twin::Twin;

fn open(dir: &std::path::Path) -> (Store, twinhub::registry::Registry) {
    Store::open(dir, StoreConfig::default()).unwrap()
}

fn create(store: &mut Store, registry: &mut twinhub::registry::Registry, id: &str) -> u64 {
    registry
        .create(Twin::new(DeviceId::new(id).unwrap()))
        .unwrap();
    store.commit(registry).unwrap();
    registry.last_seq()
}

/// README, Durability: "`Store::changes_after(n)` resumes the change feed within its
/// retention ... the newest number of an opening that made no change resumes without a
/// gap". A reopened store's registry starts past the reserve (`last_seq()` before any
/// change, where a fresh `Hub::subscribe` starts: `Subscription::starts_after`), and
/// `Registry::changes_after` resumes from it; `Store::changes_after` answered the same
/// number with a `FeedGap` (it refused everything past `committed_seq`), in that opening
/// and after every later restart that made no change, so a consumer resuming from the
/// disk re-read every twin for nothing.
#[test]
fn the_store_resumes_after_the_newest_number_of_an_opening_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut registry) = open(dir.path());
    let first = create(&mut store, &mut registry, "a");
    drop((store, registry));

    let (store, registry) = open(dir.path());
    let start = registry.last_seq();
    assert!(
        start > first,
        "the reopened registry starts past the reserve"
    );
    assert_eq!(registry.changes_after(start).map(|c| c.count()), Ok(0));
    assert_eq!(
        store.changes_after(start, 10).unwrap().map(|c| c.len()),
        Ok(0),
        "the opening's own start, no change made yet"
    );
    drop((store, registry));

    // A later opening (that made no change either): still no gap, from either feed.
    let (mut store, mut registry) = open(dir.path());
    assert_eq!(registry.changes_after(start).map(|c| c.count()), Ok(0));
    assert_eq!(
        store.changes_after(start, 10).unwrap().map(|c| c.len()),
        Ok(0)
    );
    // And once that opening changed something, the change comes after it.
    let later = create(&mut store, &mut registry, "b");
    let seqs = |r: Vec<twinhub::registry::Change>| r.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(
        store.changes_after(start, 10).unwrap().map(seqs),
        Ok(vec![later])
    );
    // Still a gap: a number of the reserve no change used, and one past the newest.
    assert!(store.changes_after(start + 1, 10).unwrap().is_err());
    assert!(store.changes_after(later + 1, 10).unwrap().is_err());
}
