//! The console's live charts: per-second samples of the gateway's own RPC counters (RPCs and searches
//! per second, p50/p99 latency, errors) over the last minutes.
//!
//! On the request path, [`LiveCounters`] is one more `RpcObserver`: a few relaxed atomic adds into
//! cumulative counters and a log-scale latency histogram, no lock and no allocation. Once a second the
//! admin listener's sampler ([`LiveSeries::tick`]) reads them, takes the difference from the previous
//! reading and keeps it in a ring of [`KEEP_SECONDS`] samples; `/live` answers the ring as JSON.
//! Percentiles come from the histogram's buckets (each 20% wider than the last), interpolated within
//! the bucket: within 20% of the exact value, which is what a chart needs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use mishards_telemetry::RpcObserver;

/// Samples kept: ten minutes at one a second.
pub const KEEP_SECONDS: usize = 600;

/// Lower bound of the first latency bucket; anything faster counts there.
const FIRST_BOUND_MS: f64 = 0.05;
/// Each bucket's upper bound is this factor times its lower one.
const GROWTH: f64 = 1.2;
/// 0.05 ms × 1.2^77 ≈ 62 s: the last bucket holds everything slower (the deadline is 10 s by default).
const BUCKETS: usize = 78;

/// Upper bound (ms) of bucket `i`.
fn upper_bound_ms(i: usize) -> f64 {
    FIRST_BOUND_MS * GROWTH.powi(i as i32 + 1)
}

fn lower_bound_ms(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        FIRST_BOUND_MS * GROWTH.powi(i as i32)
    }
}

/// The bucket a latency falls in.
fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = ((ms / FIRST_BOUND_MS).ln() / GROWTH.ln()).floor();
    (i as usize).min(BUCKETS - 1)
}

/// Cumulative counts of one kind of call.
struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Tally {
    fn new() -> Tally {
        Tally {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, failed: bool, latency: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = latency.as_secs_f64() * 1000.0;
        self.buckets[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> TallyReading {
        TallyReading {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

#[derive(Clone)]
struct TallyReading {
    calls: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

impl TallyReading {
    fn zero() -> TallyReading {
        TallyReading {
            calls: 0,
            errors: 0,
            buckets: [0; BUCKETS],
        }
    }

    /// What happened between `earlier` and this reading (counters only grow).
    fn since(&self, earlier: &TallyReading) -> TallyReading {
        TallyReading {
            calls: self.calls.saturating_sub(earlier.calls),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    /// The `q` quantile (0..=1) of the latencies counted, in ms; `None` when nothing was counted.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the wanted call, 1-based: the smallest r with r ≥ q × total.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && below + n >= rank {
                let within = (rank - below) as f64 / n as f64;
                let (lo, hi) = (lower_bound_ms(i), upper_bound_ms(i));
                return Some(round3(lo + (hi - lo) * within));
            }
            below += n;
        }
        None
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The gateway's RPCs as they finish, counted for the live charts (an `RpcObserver` beside the
/// Prometheus metrics).
pub struct LiveCounters {
    all: Tally,
    searches: Tally,
}

impl Default for LiveCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveCounters {
    pub fn new() -> LiveCounters {
        LiveCounters {
            all: Tally::new(),
            searches: Tally::new(),
        }
    }
}

/// The searches among Milvus 1.1's RPCs: `Search`, `SearchByID`, `SearchInFiles`.
fn is_search(rpc: &str) -> bool {
    rpc.starts_with("Search")
}

impl RpcObserver for LiveCounters {
    fn observe(&self, rpc: &str, code: Option<i32>, latency: Duration) {
        // A gRPC error (no Milvus status) or any Milvus code but SUCCESS is an error.
        let failed = code != Some(0);
        self.all.add(failed, latency);
        if is_search(rpc) {
            self.searches.add(failed, latency);
        }
    }
}

/// Tells several observers of every finished RPC (the Prometheus metrics and the live counters).
pub struct Observers(pub Vec<std::sync::Arc<dyn RpcObserver>>);

impl RpcObserver for Observers {
    fn observe(&self, rpc: &str, code: Option<i32>, latency: Duration) {
        for o in &self.0 {
            o.observe(rpc, code, latency);
        }
    }
}

/// One second (or so: `seconds` says how long exactly) of the gateway's RPCs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveSample {
    /// When the second ended, milliseconds since the Unix epoch.
    pub t: u64,
    /// The sample's length (a late tick makes it longer than 1 s; rates are per second of it).
    pub seconds: f64,
    /// Every RPC: finished calls, those that failed (a Milvus code other than SUCCESS or a gRPC error).
    pub rpcs: u64,
    pub errors: u64,
    pub qps: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The searches among them (`Search`, `SearchByID`, `SearchInFiles`).
    pub searches: u64,
    pub search_errors: u64,
    pub search_qps: f64,
    pub search_p50_ms: Option<f64>,
    pub search_p99_ms: Option<f64>,
}

struct Readings {
    all: TallyReading,
    searches: TallyReading,
    at: Instant,
}

/// The ring of per-second samples and the reading it was last taken from.
pub struct LiveSeries {
    keep: usize,
    state: Mutex<(VecDeque<LiveSample>, Readings)>,
}

impl LiveSeries {
    /// A ring of `keep` samples (at least 1).
    pub fn new(keep: usize) -> LiveSeries {
        LiveSeries {
            keep: keep.max(1),
            state: Mutex::new((
                VecDeque::with_capacity(keep.clamp(1, KEEP_SECONDS)),
                Readings {
                    all: TallyReading::zero(),
                    searches: TallyReading::zero(),
                    at: Instant::now(),
                },
            )),
        }
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Takes one sample: what `counters` counted since the previous tick, stamped `unix_ms`.
    pub fn tick(&self, counters: &LiveCounters, unix_ms: u64) {
        let now = Readings {
            all: counters.all.read(),
            searches: counters.searches.read(),
            at: Instant::now(),
        };
        // Only the sampler and the admin handlers take this lock, never a request.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (ring, previous) = &mut *state;
        let seconds = now.at.duration_since(previous.at).as_secs_f64().max(1e-3);
        let all = now.all.since(&previous.all);
        let searches = now.searches.since(&previous.searches);
        let rate = |n: u64| round3(n as f64 / seconds);
        let sample = LiveSample {
            t: unix_ms,
            seconds: round3(seconds),
            rpcs: all.calls,
            errors: all.errors,
            qps: rate(all.calls),
            error_rate: if all.calls == 0 {
                0.0
            } else {
                round3(all.errors as f64 / all.calls as f64)
            },
            p50_ms: all.quantile_ms(0.5),
            p99_ms: all.quantile_ms(0.99),
            searches: searches.calls,
            search_errors: searches.errors,
            search_qps: rate(searches.calls),
            search_p50_ms: searches.quantile_ms(0.5),
            search_p99_ms: searches.quantile_ms(0.99),
        };
        while ring.len() >= self.keep {
            ring.pop_front();
        }
        ring.push_back(sample);
        *previous = now;
    }

    /// The newest `limit` samples, oldest first.
    pub fn newest(&self, limit: usize) -> Vec<LiveSample> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ring = &state.0;
        ring.iter()
            .skip(ring.len().saturating_sub(limit))
            .cloned()
            .collect()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or_default()
}

/// Samples `counters` into `series` every second until `stop` turns true.
pub async fn run_sampler(
    counters: std::sync::Arc<LiveCounters>,
    series: std::sync::Arc<LiveSeries>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: it only sets the starting reading.
    every.tick().await;
    series.tick(&counters, unix_ms());
    loop {
        tokio::select! {
            _ = every.tick() => series.tick(&counters, unix_ms()),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    #[test]
    fn buckets_cover_every_latency_in_order() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e12), BUCKETS - 1);
        for i in 1..BUCKETS - 1 {
            let mid = (lower_bound_ms(i) * upper_bound_ms(i)).sqrt();
            assert_eq!(bucket_of(mid), i, "{mid} ms");
            assert_eq!(lower_bound_ms(i + 1), upper_bound_ms(i));
        }
        assert!(
            upper_bound_ms(BUCKETS - 2) > 10_000.0,
            "the 10 s deadline fits"
        );
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_exact_value() {
        let counters = LiveCounters::new();
        let series = LiveSeries::new(4);
        series.tick(&counters, 1);
        // 98 fast searches at 1 ms, 2 slow ones at 200 ms; 10 inserts at 5 ms, 3 failed.
        for _ in 0..98 {
            counters.observe("Search", Some(0), ms(1.0));
        }
        for _ in 0..2 {
            counters.observe("Search", Some(0), ms(200.0));
        }
        for i in 0..10 {
            let code = if i < 3 { Some(1) } else { Some(0) };
            counters.observe("Insert", code, ms(5.0));
        }
        counters.observe("Search", None, ms(1.0));
        series.tick(&counters, 2);
        let s = series.newest(10).pop().expect("a sample");
        assert_eq!(
            (s.rpcs, s.errors, s.searches, s.search_errors),
            (111, 4, 101, 1)
        );
        let p50 = s.search_p50_ms.expect("p50");
        let p99 = s.search_p99_ms.expect("p99");
        assert!((1.0 / GROWTH..=GROWTH).contains(&p50), "{p50}");
        assert!((200.0 / GROWTH..=200.0 * GROWTH).contains(&p99), "{p99}");
        assert!(
            (s.error_rate - 4.0 / 111.0).abs() < 1e-3,
            "{}",
            s.error_rate
        );
        // Nothing since: a sample of zeros, no percentiles.
        series.tick(&counters, 3);
        let s = series.newest(1).pop().expect("a sample");
        assert_eq!((s.rpcs, s.p50_ms, s.search_p99_ms), (0, None, None));
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_oldest_first() {
        let counters = LiveCounters::new();
        let series = LiveSeries::new(3);
        for t in 0..10 {
            series.tick(&counters, t);
        }
        let kept: Vec<u64> = series.newest(100).iter().map(|s| s.t).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        let last: Vec<u64> = series.newest(2).iter().map(|s| s.t).collect();
        assert_eq!(last, vec![8, 9]);
    }
}
