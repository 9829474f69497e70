//! Hedged requests: when a read node's attempt runs past its expected latency, a search also sends the
//! node's files to their next nodes and takes whichever complete answer comes first (scatter.rs). This
//! file holds the gateway-wide budget that keeps hedges to a share of searches, and its counters.
//!
//! The budget is a token bucket of atomics shared by every scatter-gather actor: each search adds
//! `max_share` of a token, each hedge request takes a whole one, and the bucket holds at most `BURST`.
//! It is not routing state (nothing routes by it), so it needs no actor; a compare-and-swap is cheaper
//! than a message per search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Tokens are counted in millionths.
const UNIT: u64 = 1_000_000;
/// Most hedge requests the bucket allows in a burst (it starts full).
pub const BURST: u64 = 10;
/// Hedge no earlier than this after an attempt started, however fast the nodes usually are: below it a
/// hedge would mostly duplicate work that was about to answer.
pub const MIN_DELAY: Duration = Duration::from_millis(5);

/// How a gateway hedges (`None` in its place: it does not).
#[derive(Debug)]
pub struct Hedging {
    /// A fixed delay (`hedge_delay_ms`); `None`: each node's recent p95, see `LatencyView::hedge_after`.
    pub fixed_delay: Option<Duration>,
    pub budget: HedgeBudget,
}

impl Hedging {
    pub fn new(fixed_delay: Option<Duration>, max_share: f64) -> Self {
        Hedging {
            fixed_delay,
            budget: HedgeBudget::new(max_share),
        }
    }
}

/// The token bucket and what it let through.
#[derive(Debug)]
pub struct HedgeBudget {
    per_search: u64,
    tokens: AtomicU64,
    searches: AtomicU64,
    sent: AtomicU64,
    won: AtomicU64,
    denied: AtomicU64,
}

/// What hedging did since the gateway started (`conn_stats` → `hedging`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HedgeStats {
    pub max_share: f64,
    /// Searches that reached a plan (each adds `max_share` of a token).
    pub searches: u64,
    /// Hedge requests sent (one per node a hedge went to).
    pub sent: u64,
    /// Hedges that answered before the attempt they hedged.
    pub won: u64,
    /// Hedges not sent because the budget was spent.
    pub denied: u64,
    pub tokens: f64,
}

impl HedgeBudget {
    /// `max_share`: hedge requests per search, on average (clamped to 0..=1).
    pub fn new(max_share: f64) -> Self {
        let share = if max_share.is_finite() {
            max_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        HedgeBudget {
            per_search: (share * UNIT as f64).round() as u64,
            tokens: AtomicU64::new(BURST * UNIT),
            searches: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    /// A search started: it earns its share of a hedge.
    pub fn deposit(&self) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + self.per_search).min(BURST * UNIT))
            });
    }

    /// Takes `requests` tokens if there are that many (all or nothing).
    pub fn try_take(&self, requests: u64) -> bool {
        let cost = requests.saturating_mul(UNIT);
        let taken = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(cost)
            })
            .is_ok();
        if taken {
            self.sent.fetch_add(requests, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// A hedge answered first.
    pub fn won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> HedgeStats {
        HedgeStats {
            max_share: self.per_search as f64 / UNIT as f64,
            searches: self.searches.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            won: self.won.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed) as f64 / UNIT as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedges_are_held_to_their_share_of_searches_after_a_burst() {
        let budget = HedgeBudget::new(0.05);
        // Every search wants a hedge: the burst, then one per twenty searches.
        let mut sent = 0;
        for _ in 0..1000 {
            budget.deposit();
            sent += u64::from(budget.try_take(1));
        }
        // (The first search's share is lost: the bucket starts full.)
        assert_eq!(sent, BURST + 49);
        let stats = budget.stats();
        assert_eq!((stats.searches, stats.sent), (1000, BURST + 49));
        assert_eq!(stats.denied, 1000 - sent);
        // All or nothing: two tokens are not there for a hedge to two nodes.
        let budget = HedgeBudget::new(0.05);
        assert!(budget.try_take(BURST - 1));
        assert!(!budget.try_take(2));
        assert!(budget.try_take(1));
        // Unused share does not pile up beyond the burst.
        for _ in 0..10_000 {
            budget.deposit();
        }
        assert!(budget.try_take(BURST));
        assert!(!budget.try_take(1));
    }

    #[test]
    fn the_bucket_holds_across_threads() {
        let budget = std::sync::Arc::new(HedgeBudget::new(0.1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .map(|_| {
                            budget.deposit();
                            u64::from(budget.try_take(1))
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // 2,000 searches at 10%: 200, plus the burst, less shares lost while the bucket was full.
        assert!((BURST + 198..=BURST + 200).contains(&sent), "{sent}");
        assert_eq!(budget.stats().sent, sent);
    }
}
