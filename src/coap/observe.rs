//! Observe (RFC 7641) rules shared by both roles.

use std::time::{Duration, Instant};

/// How long a notification's sequence number stays comparable (RFC 7641 §3.4).
pub const OBSERVE_FRESHNESS: Duration = Duration::from_secs(128);

/// Whether a notification `(v2, t2)` is newer than the last one seen `(v1, t1)`
/// (RFC 7641 §3.4): the 24-bit sequence number moved forward (with wrap-around), or more
/// than 128 s passed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use twinhub::coap::notification_is_fresh;
/// let t = Instant::now();
/// assert!(notification_is_fresh(5, t, 6, t));
/// assert!(!notification_is_fresh(6, t, 5, t));
/// assert!(notification_is_fresh(0xff_fff0, t, 3, t)); // wrapped
/// assert!(notification_is_fresh(6, t, 5, t + Duration::from_secs(129)));
/// ```
pub fn notification_is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    let (v1, v2) = (v1 & 0xff_ffff, v2 & 0xff_ffff);
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > OBSERVE_FRESHNESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_rule() {
        let t = Instant::now();
        assert!(!notification_is_fresh(7, t, 7, t));
        assert!(notification_is_fresh(0, t, (1 << 23) - 1, t));
        assert!(!notification_is_fresh(0, t, 1 << 23, t));
        assert!(notification_is_fresh((1 << 23) + 1, t, 0, t));
        assert!(!notification_is_fresh(1 << 23, t, 0, t));
        assert!(!notification_is_fresh(9, t, 3, t + OBSERVE_FRESHNESS));
        assert!(notification_is_fresh(
            9,
            t,
            3,
            t + OBSERVE_FRESHNESS + Duration::from_millis(1)
        ));
    }
}
