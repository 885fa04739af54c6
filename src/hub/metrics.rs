//! [`HubMetrics`]: a serialisable snapshot of what the hub holds and how fast devices
//! answer, for a metrics endpoint or a log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in milliseconds; the last bucket counts
/// everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 13] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

/// Counts of durations per bucket, lock-free.
#[derive(Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let ms = d.as_millis();
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms < b as u128)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        LatencyHistogram {
            bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Which histogram an operation's latency goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpClass {
    /// Sent by the job engine.
    Job,
    /// The hub's property sync (observations and their attributes).
    Sync,
}

/// Most operations timed at once; past it an operation goes untimed (and is counted).
pub const MAX_TIMED_OPS: usize = 65_536;

/// An operation not answered within this long is forgotten when the table is full (a
/// transport that never reports an outcome must not fill it for good).
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Submit times of job and sync operations until their answer (or the transport's
/// time-out), for their latency histograms. [`Hub::request`](super::Hub::request)s
/// are timed by their waiting entries instead.
#[derive(Default)]
pub(crate) struct OpTimes {
    sent: std::sync::Mutex<SentTable>,
    pub(crate) jobs: Histogram,
    pub(crate) sync: Histogram,
    pub(crate) untimed: AtomicU64,
}

#[derive(Default)]
struct SentTable {
    by_op: std::collections::HashMap<u64, (Instant, OpClass)>,
    /// When a full table was last swept for stale entries (at most once a second, so an
    /// overloaded hub does not sweep per operation).
    swept: Option<Instant>,
}

impl OpTimes {
    fn table(&self) -> std::sync::MutexGuard<'_, SentTable> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `ops` were submitted now.
    pub(crate) fn sent(&self, ops: impl IntoIterator<Item = u64>, class: OpClass) {
        let now = Instant::now();
        let mut table = self.table();
        for op in ops {
            if table.by_op.len() >= MAX_TIMED_OPS
                && table
                    .swept
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                table.swept = Some(now);
                table
                    .by_op
                    .retain(|_, (at, _)| now.duration_since(*at) < STALE_AFTER);
            }
            if table.by_op.len() >= MAX_TIMED_OPS {
                self.untimed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            table.by_op.insert(op, (now, class));
        }
    }

    /// Records the latency of `op` if it was timed: it was answered (or gave up on).
    pub(crate) fn finished(&self, op: u64) {
        let Some((at, class)) = self.table().by_op.remove(&op) else {
            return;
        };
        let h = match class {
            OpClass::Job => &self.jobs,
            OpClass::Sync => &self.sync,
        };
        h.record(at.elapsed());
    }
}

/// Durations by bucket: `counts[i]` are those under `bounds_ms[i]` ms (and at least the
/// bound before); the last count is those of `bounds_ms`'s last value or more.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyHistogram {
    /// Bucket upper bounds in milliseconds ([`LATENCY_BOUNDS_MS`]).
    pub bounds_ms: Vec<u64>,
    /// Durations per bucket; one more entry than `bounds_ms`.
    pub counts: Vec<u64>,
    /// All durations recorded.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// The upper bound (ms) of the bucket holding the `q`-quantile (`0.0..=1.0`), `None`
    /// with nothing recorded or when it lies in the open last bucket.
    pub fn quantile_bound_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return self.bounds_ms.get(i).copied();
            }
        }
        None
    }
}

/// What the hub holds and does, at one moment (JSON: camelCase fields).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubMetrics {
    /// Counters since the hub started.
    pub counters: super::HubStats,
    /// Twins in the registry.
    pub devices: u64,
    /// Twins whose connection state is connected.
    pub connected: u64,
    /// [`Hub::request`](super::Hub::request)s waiting for their answers (at most
    /// [`MAX_WAITING`](super::MAX_WAITING)).
    pub waiting_requests: usize,
    /// Parent jobs created and not finished.
    pub unfinished_jobs: usize,
    /// Job operations sent and not yet answered.
    pub job_operations_in_flight: usize,
    /// Jobs in the history (see [`EngineConfig::retain_jobs`](crate::job::EngineConfig::retain_jobs)).
    pub kept_jobs: usize,
    /// Jobs history retention dropped since the hub started.
    pub dropped_jobs: u64,
    /// Devices whose registration state the job engine keeps (offline, announced
    /// objects, LWM2M version): at most one a twin, as the engine forgets a removed twin's
    /// device ([`JobEngine::device_states`](crate::job::JobEngine::device_states)).
    pub job_device_states: usize,
    /// Live subscriptions.
    pub subscribers: usize,
    /// The change feed's newest sequence number.
    pub feed_seq: u64,
    /// Feed entries not yet published to subscribers (the event lag, in changes).
    pub publish_lag: u64,
    /// Submit-to-answer time of [`Hub::request`](super::Hub::request)s (the device's
    /// answer, its error, or the transport giving up; not a request failed with
    /// [`RequestError::HubStopped`](super::RequestError::HubStopped)).
    pub request_latency: LatencyHistogram,
    /// Submit-to-answer time of the job engine's operations (the same outcomes).
    pub job_operation_latency: LatencyHistogram,
    /// Submit-to-answer time of the property sync's operations (observations: until
    /// their first answer).
    pub sync_latency: LatencyHistogram,
    /// Job and sync operations sent without timing because [`MAX_TIMED_OPS`] were
    /// already in flight.
    pub untimed_operations: u64,
    /// Store commits that failed in a row (0 while the store works); from 2 the hub
    /// backs off ([`backoff`](super::backoff)).
    pub failed_commits: u32,
    /// Device events held unapplied: while the hub backs off from a failing store, and
    /// those of a batch whose commit failed, until their next try (at most
    /// [`MAX_HELD_NOTIFICATIONS`](super::backoff::MAX_HELD_NOTIFICATIONS) notifications and
    /// [`MAX_HELD_EVENTS`](super::backoff::MAX_HELD_EVENTS) other events, and past those
    /// the de-registrations of at most
    /// [`MAX_HELD_OFFLINE`](super::backoff::MAX_HELD_OFFLINE) devices).
    pub held_events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_operations_go_untimed_and_answers_free_room() {
        let t = OpTimes::default();
        t.sent(0..MAX_TIMED_OPS as u64 + 3, OpClass::Job);
        assert_eq!(t.untimed.load(Ordering::Relaxed), 3);
        t.finished(0);
        t.finished(1);
        t.finished(u64::MAX); // never sent: ignored
        assert_eq!(t.jobs.snapshot().count, 2);
        t.sent([MAX_TIMED_OPS as u64 + 10], OpClass::Sync);
        assert_eq!(t.untimed.load(Ordering::Relaxed), 3, "an answer made room");
        t.finished(MAX_TIMED_OPS as u64 + 10);
        assert_eq!(t.sync.snapshot().count, 1);
    }

    #[test]
    fn durations_land_in_their_buckets_and_quantiles_name_the_bound() {
        let h = Histogram::default();
        for ms in [0, 0, 3, 7, 45, 20_000] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.counts.len(), LATENCY_BOUNDS_MS.len() + 1);
        assert_eq!(s.counts[0], 2); // under 1 ms
        assert_eq!(s.counts[2], 1); // 3 ms: under 5
        assert_eq!(s.counts[3], 1); // 7 ms: under 10
        assert_eq!(s.counts[5], 1); // 45 ms: under 50
        assert_eq!(s.counts[LATENCY_BOUNDS_MS.len()], 1); // 20 s: the open bucket
        assert_eq!(s.sum_micros, 20_055_000);
        assert_eq!(s.quantile_bound_ms(0.5), Some(5));
        assert_eq!(s.quantile_bound_ms(0.8), Some(50));
        assert_eq!(s.quantile_bound_ms(1.0), None);
        assert_eq!(Histogram::default().snapshot().quantile_bound_ms(0.5), None);
    }
}
