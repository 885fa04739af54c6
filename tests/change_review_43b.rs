//! Hostile review of the day's changes (review 43, second pass): the store's ranges of
//! unused sequence numbers (src/store), the LwM2M server's displaced registrations and
//! requests taken back (src/lwm2m/server), the hub's handling of them (src/hub). Each
//! test is a finding: it fails on the code it was written against, and is ignored with
//! the finding's summary until the code is fixed.

use twinhub::DeviceId;
use twinhub::store::{SEQ_RESERVE, Store, StoreConfig};
use twinhub::twin::Twin;

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// store/mod.rs (module docs): "At most 1,024 ranges are kept (openings with no change
/// between them, as in a crash loop, each add one): past it the two oldest merge, so the
/// few numbers between them (each the newest of an opening that made no change) answer
/// with a gap too", and `Store::changes_after`: changes the store keeps are handed out;
/// a gap is for numbers it no longer keeps or that no surviving change used.
///
/// Broken: *every* opening adds a range, not only one that made no change: `init`
/// inserts `(max(committed, opened_at), reserved)` whenever the reserve runs ahead of
/// the last commit, which it always does (`commit` keeps it `SEQ_RESERVE / 2` ahead),
/// clean shutdown or not. A hub restarted 1,025 times (a daily restart for three years,
/// a supervisor's restarts) with fewer changes than `feed_retention` in all reaches the
/// bound with ordinary restarts, and the merge then spans the changes the second
/// opening made and committed: a consumer that resumes after one of them (a change the
/// store still keeps and hands out) is told of a gap, from the store and from the
/// registry alike. Not a count of "openings that made no change" either. `Store::reload`
/// runs `init` too, so each recovery after a failed commit adds a range as well: a flaky
/// disk reaches the bound within one run of the hub.
///
/// Fix: a range is only needed where a number could have been handed out and lost, i.e.
/// past the last commit of an opening; merging must never cover committed changes the
/// feed keeps. Either merge only neighbours with no kept change between them (a crash
/// loop's ranges meet at an opening's start: `below == previous above`), and when no
/// such pair exists drop the oldest range together with the feed up to its end (move
/// `feed_dropped_through` to its `above`, so the gap is an honest "dropped" one and the
/// docs can say so); or record at each commit that the opening's numbers through the
/// commit are accounted for, so a clean opening leaves no range at all.
///
/// Fixed: past the bound only neighbours merge (`merge_neighbours` in store/mod.rs);
/// ranges with kept changes between them stay (the feed's retention bounds them), so
/// this run keeps every change. Dropping the oldest range with the feed would not pass
/// this test: the second opening's change is older than the newest 1,024 openings.
#[test]
fn ordinary_restarts_do_not_turn_committed_changes_into_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default;
    // 1,027 openings, each making one change and committing it before a clean stop:
    // 1,027 changes in all, far inside the default feed retention (65,536).
    let mut second = 0;
    for i in 0..1027u32 {
        let (mut store, mut registry) = Store::open(dir.path(), config()).unwrap();
        registry.create(Twin::new(id(&format!("d{i}")))).unwrap();
        store.commit(&registry).unwrap();
        if i == 1 {
            // The second opening's change, committed: a consumer may hold its number.
            second = registry.last_seq();
            assert!(second > SEQ_RESERVE, "{second}");
        }
    }
    let (store, registry) = Store::open(dir.path(), config()).unwrap();
    // The consumer resumes after the second opening's change: 1,025 committed changes
    // follow, all still kept.
    let from_store = store.changes_after(second, 2000).unwrap();
    assert!(
        from_store.as_ref().is_ok_and(|c| c.len() == 1025),
        "the store: {:?}",
        from_store.map(|c| c.len())
    );
    let from_registry = registry.changes_after(second).map(|c| c.count());
    assert_eq!(from_registry, Ok(1025), "the registry");
}

#[cfg(feature = "lwm2m")]
#[path = "server_sim/mod.rs"]
mod server_sim;

/// lwm2m/server (module docs, "When a registration ends"): "its requests in flight fail
/// at once ... and are no longer retransmitted: ... the device that gets a late
/// retransmission may be another one behind the old address"; `displace_holder` ends a
/// takeover probe with the registration's requests "together", since "forgetting the
/// probe alone would start the registration's request queued behind it, to the device
/// that took the address"; and `DeviceEvent::Sent` says the request left.
///
/// Broken: a registration that ends while its takeover probe is in flight (the hub
/// ends it, `DeviceRequest::EndRegistration`, here while a Register of its endpoint
/// from elsewhere waits on the probe; a De-register or its expiry do the same) leaves
/// the probe behind: `unlink` forgets the requests and observations but not
/// `reg.probe`, and the probe timer, finding no registration of that generation,
/// returns without forgetting it either. The probe (GET /1) keeps being retransmitted
/// to the old address for the whole CoAP exchange (about 45 s of retransmissions), and
/// holds the CoAP endpoint's NSTART slot for that address: another device registering
/// from there (a NAT gave it the port) gets the stale probe (a request of a registration
/// that ended, sent to another device), and its own first request is reported `Sent`
/// but waits behind the probe in the endpoint's queue until that device answers the
/// probe or the exchange gives up. `follow_address` (an Update or notification from a
/// new address while the probe is in flight) has the same gap: the probe is marked
/// answered but its exchange goes on to the address left.
///
/// Fix: wherever a registration ends or leaves its address (`unlink`, `follow_address`),
/// take `reg.probe` (`Probe::InFlight(id)`), remove it from `self.probes` and forget it
/// in the same `fail_in_flight_with` stroke as the requests, as `displace_holder` now
/// does.
#[cfg(feature = "lwm2m")]
#[test]
fn a_registration_ending_during_its_takeover_probe_forgets_the_probe() {
    use server_sim::{addr, con, events, out, register, run, send};
    use std::time::{Duration, Instant};
    use twinhub::coap::Code;
    use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
    use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, Transport};
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        5,
    );
    let t0 = Instant::now();
    register(&mut s, t0, addr(1), "a", 10);
    let a_reg = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            DeviceEvent::Registered { registration, .. } => Some(registration.registration_id),
            _ => None,
        })
        .unwrap();
    // A Register of `a` from elsewhere: the old address is probed, the newcomer waits.
    let mut again = con(Code::POST, "/rd", 11);
    again.add_uri_query("ep=a");
    again.add_uri_query("lt=3000");
    again.payload = b"</3/0>".to_vec();
    send(&mut s, t0, addr(2), &again);
    let sent = out(&mut s);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == addr(1) && m.code == Code::GET && m.uri_path_string() == "1"),
        "the probe: {sent:?}"
    );
    // The hub ends a's registration (its twin was removed) while the probe runs.
    s.submit(
        t0,
        DeviceOp {
            id: OpId(1),
            device: twinhub::DeviceId::new("a").unwrap(),
            request: DeviceRequest::EndRegistration {
                registration_id: a_reg,
            },
        },
    );
    events(&mut s);
    out(&mut s);
    // Another device gets a's old port from the NAT and registers there.
    let t1 = t0 + Duration::from_millis(100);
    register(&mut s, t1, addr(1), "c", 12);
    events(&mut s);
    s.submit(
        t1,
        DeviceOp {
            id: OpId(2),
            device: twinhub::DeviceId::new("c").unwrap(),
            request: DeviceRequest::Read {
                path: twinhub::Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let evs = events(&mut s);
    let sent = out(&mut s);
    let reported = evs
        .iter()
        .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(2), .. }));
    let left = sent
        .iter()
        .any(|(to, m)| *to == addr(1) && m.code == Code::GET && m.uri_path_string() == "3/0/9");
    assert!(
        !reported || left,
        "c's read reported Sent but held behind the ended registration's probe: {sent:?}"
    );
    // Nor does the ended registration's probe reach c's device later.
    let stray: Vec<_> = run(&mut s, t1, 60, addr(1))
        .into_iter()
        .filter(|m| m.uri_path_string() == "1")
        .collect();
    assert!(stray.is_empty(), "the old probe goes to c: {stray:?}");
}
