//! The server's rules the LwM2M server's model tests predict with, shared by both (each
//! includes this file with `#[path]`: `identity_model.rs`, a unit test, and
//! `tests/lwm2m_server_model.rs`): a model's view of a registration, where it moves and
//! which addresses it remembers having left (`Lwm2mServer::follow_address`), and RFC 7641
//! freshness as the CoAP endpoint applies it. The includer brings `LEFT_ADDRESS_MEMORY`,
//! `MAX_LEFT_ADDRESSES` and `OBSERVE_FRESHNESS` into scope. The addresses are the
//! includer's own (`A`: an address, or a model's number for one).

use super::{LEFT_ADDRESS_MEMORY, MAX_LEFT_ADDRESSES, OBSERVE_FRESHNESS};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// The addresses a registration left, and when, oldest first (at most
/// `MAX_LEFT_ADDRESSES`, each for `LEFT_ADDRESS_MEMORY`).
pub type Left<A> = VecDeque<(A, Instant)>;

/// A model's view of a device's live registration.
#[derive(Debug)]
pub struct Reg<A> {
    /// The model's number of the Register that made it (a new Register replaces it).
    pub generation: u64,
    /// The address it was made at or last moved to (an Update, or a notification from a
    /// new address, taken): where its observations are. A registration displaced from it
    /// keeps it (the server takes it back should its device notify from there again).
    pub addr: A,
    /// The addresses it left, and when (see [`Left`]). A notification from one of them is
    /// late: dropped.
    pub left: Left<A>,
    /// When it expires (its lifetime and the grace after its Register or last Update).
    pub expires: Instant,
    /// A Register of its device from another address (over DTLS, through another of its
    /// identities) was refused: a takeover probe may be out, and end it unanswered, so an
    /// `Expired` is then no surprise, until an Update or a notification from a new
    /// address settles it or a Register replaces it.
    pub contested: bool,
}

impl<A: Copy + PartialEq> Reg<A> {
    /// Made by Register number `generation` at `addr`, to expire at `expires`.
    pub fn new(generation: u64, addr: A, expires: Instant) -> Self {
        Reg {
            generation,
            addr,
            left: VecDeque::new(),
            expires,
            contested: false,
        }
    }

    /// Whether a notification from `addr` now comes from an address this registration
    /// left lately (sent before the move, arrived late): the server drops it.
    pub fn left_lately(&self, addr: A, now: Instant) -> bool {
        addr != self.addr
            && self.left.iter().any(|&(a, when)| {
                a == addr && now.saturating_duration_since(when) < LEFT_ADDRESS_MEMORY
            })
    }

    /// Its device spoke from `addr` in a message the server took as a move (an Update, a
    /// notification from a new address): the address left is remembered (not the one
    /// come back to), within the bounds, and a takeover probe is settled.
    pub fn follow(&mut self, addr: A, now: Instant) {
        self.contested = false;
        if addr == self.addr {
            return;
        }
        let old = self.addr;
        self.left.retain(|&(a, when)| {
            a != addr && a != old && now.saturating_duration_since(when) < LEFT_ADDRESS_MEMORY
        });
        if self.left.len() >= MAX_LEFT_ADDRESSES {
            self.left.pop_front();
        }
        self.left.push_back((old, now));
        self.addr = addr;
    }
}

/// The Observe number a device notifies with, of its observation whose highest number
/// sent is `highest`: the next one (`back` 0, which becomes the highest), or again the
/// last one (1) or the one before (2): duplicated or reordered.
pub fn observe_number(highest: &mut u32, back: u8) -> u32 {
    if back == 0 {
        *highest += 1;
        return *highest;
    }
    highest.saturating_sub(u32::from(back) - 1)
}

/// Device `dev`'s operations (by `device_of`, each operation's device) that wait (neither
/// reported `Sent` nor ended) and those in flight (reported `Sent`, not ended).
pub fn queue_counts(
    device_of: &HashMap<u64, u8>,
    sent: &HashSet<u64>,
    ended: &HashSet<u64>,
    dev: u8,
) -> (usize, usize) {
    let mine = || device_of.iter().filter(move |&(_, &d)| d == dev);
    let waiting = mine()
        .filter(|(op, _)| !sent.contains(op) && !ended.contains(op))
        .count();
    let in_flight = mine()
        .filter(|(op, _)| sent.contains(op) && !ended.contains(op))
        .count();
    (waiting, in_flight)
}

/// RFC 7641 §3.4 as the server applies it: newer than the last taken, or that one is
/// older than `OBSERVE_FRESHNESS` (the models' numbers stay far below the 2^23 wrap).
pub fn fresh(last: (u32, Instant), seq: u32, now: Instant) -> bool {
    seq > last.0 || now.saturating_duration_since(last.1) > OBSERVE_FRESHNESS
}
