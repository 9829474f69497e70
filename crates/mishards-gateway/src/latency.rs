//! How long read nodes take to answer: each link keeps its recent latencies ([`RecentLatency`]) and
//! reports their p95 to Routing, which turns them into a [`LatencyView`] for every plan. A search hedges
//! a node's attempt once it runs past that node's p95 (at most the typical p95 of all read nodes), and
//! Routing ranks a node far slower than its peers after them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use mishards_config::NodeAddr;

/// Latencies kept per node.
pub const KEEP: usize = 256;
/// Fewer samples than this give no p95: a node is judged on enough calls or not at all.
pub const MIN_SAMPLES: usize = 20;
/// Samples older than this no longer count, so a node that got no searches for a while (one ranked
/// after its peers for being slow, say) is judged afresh.
pub const WINDOW: Duration = Duration::from_secs(30);
/// The p95 is recomputed every this many samples: a sort of 256 values per call would be waste.
const RECOMPUTE_EVERY: u32 = 8;

/// A node is slow when its p95 is more than `SLOW_FACTOR` times the typical p95 and more than
/// `SLOW_MARGIN` above it: a node with a little more work than its peers is not slow. It stays slow
/// until its own p95 falls below that bar as it stood when it became slow, or ages out: a burst of
/// latency on its peers, which raises the typical p95 for a moment, does not make it fast.
pub const SLOW_FACTOR: u32 = 3;
pub const SLOW_MARGIN: Duration = Duration::from_millis(20);

/// The latencies of a node's last `KEEP` answered calls within `WINDOW`, and their p95.
#[derive(Debug, Default)]
pub struct RecentLatency {
    samples: VecDeque<(Instant, Duration)>,
    since_recompute: u32,
    p95: Option<Duration>,
}

impl RecentLatency {
    /// Adds an answered call's latency; true when the p95 changed enough to tell Routing.
    pub fn record(&mut self, now: Instant, latency: Duration) -> bool {
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back((now, latency));
        self.since_recompute += 1;
        if self.since_recompute >= RECOMPUTE_EVERY || self.p95.is_none() {
            self.recompute(now)
        } else {
            false
        }
    }

    /// Drops samples older than `WINDOW`; true when the p95 changed enough to tell Routing.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.samples.len();
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.len() != before && self.recompute(now)
    }

    pub fn p95(&self) -> Option<Duration> {
        self.p95
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn recompute(&mut self, now: Instant) -> bool {
        self.since_recompute = 0;
        let mut recent: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= WINDOW)
            .map(|(_, d)| *d)
            .collect();
        let p95 = (recent.len() >= MIN_SAMPLES).then(|| {
            // The smallest latency at least 95% of the samples do not exceed.
            let rank = (recent.len() * 95).div_ceil(100) - 1;
            *recent.select_nth_unstable(rank).1
        });
        let changed = match (self.p95, p95) {
            (None, None) => false,
            (Some(old), Some(new)) => old.abs_diff(new) * 10 > old,
            _ => true,
        };
        self.p95 = p95;
        changed
    }
}

/// The read nodes' latencies as Routing last heard them, shared with every plan.
#[derive(Debug, Clone, Default)]
pub struct LatencyView {
    /// Each read node's recent p95, for those with enough samples.
    pub p95: HashMap<NodeAddr, Duration>,
    /// The lower median of the healthy read nodes' p95: what an attempt usually takes. One slow node
    /// among several does not move it; `None` without samples.
    pub typical: Option<Duration>,
    /// Nodes whose p95 is far above `typical` (see `SLOW_FACTOR`).
    pub slow: HashSet<NodeAddr>,
    /// For each slow node, the p95 it must fall below to be fast again.
    bars: HashMap<NodeAddr, Duration>,
}

fn slow_bar(typical: Duration) -> Duration {
    (typical * SLOW_FACTOR).max(typical + SLOW_MARGIN)
}

impl LatencyView {
    /// `healthy`: the nodes whose p95 may count towards `typical`; `before`: the view this one
    /// replaces (its slow nodes stay slow until they are fast by their own bar).
    pub fn new(
        p95: HashMap<NodeAddr, Duration>,
        healthy: impl Fn(&NodeAddr) -> bool,
        before: &LatencyView,
    ) -> Self {
        let mut peers: Vec<Duration> = p95
            .iter()
            .filter(|(n, _)| healthy(n))
            .map(|(_, d)| *d)
            .collect();
        peers.sort_unstable();
        let typical = peers.get(peers.len().saturating_sub(1) / 2).copied();
        let mut bars: HashMap<NodeAddr, Duration> = before
            .bars
            .iter()
            .filter(|(n, bar)| p95.get(*n).is_some_and(|d| d > *bar))
            .map(|(n, bar)| (n.clone(), *bar))
            .collect();
        // Slowness needs peers to compare with.
        if let Some(typical) = typical.filter(|_| peers.len() >= 2) {
            let bar = slow_bar(typical);
            for (n, d) in &p95 {
                if *d > bar {
                    bars.entry(n.clone()).or_insert(bar);
                }
            }
        }
        let slow = bars.keys().cloned().collect();
        LatencyView {
            p95,
            typical,
            slow,
            bars,
        }
    }

    /// When a search should hedge an attempt on `node` that has not answered: after its own p95, but
    /// no later than the typical p95 (a node slower than its peers is hedged at their pace), and never
    /// before `floor`. `None` when nothing is known yet.
    pub fn hedge_after(&self, node: &NodeAddr, floor: Duration) -> Option<Duration> {
        let own = self.p95.get(node).copied();
        let expected = match (own, self.typical) {
            (Some(own), Some(typical)) => own.min(typical),
            (own, typical) => own.or(typical)?,
        };
        Some(expected.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::loopback(port)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_p95_needs_enough_samples_and_follows_the_tail() {
        let start = Instant::now();
        let mut recent = RecentLatency::default();
        for i in 0..(MIN_SAMPLES - 1) {
            recent.record(start, ms(1 + i as u64 % 3));
        }
        assert_eq!(recent.p95(), None);
        // The 20th sample gives a p95: of 1..=3 ms and one 100 ms sample, the 19th smallest.
        assert!(recent.record(start, ms(100)));
        assert_eq!(recent.p95(), Some(ms(3)));
        // 100 samples, 10 of them slow: the p95 is slow.
        for i in 0..80 {
            recent.record(start, if i % 8 == 0 { ms(100) } else { ms(2) });
        }
        assert_eq!(recent.len(), 100);
        assert_eq!(recent.p95(), Some(ms(100)));
        // Only the last KEEP count.
        for _ in 0..KEEP {
            recent.record(start, ms(4));
        }
        assert_eq!(recent.len(), KEEP);
        assert_eq!(recent.p95(), Some(ms(4)));
    }

    #[test]
    fn old_samples_expire_and_say_so_once() {
        let start = Instant::now();
        let mut recent = RecentLatency::default();
        for _ in 0..MIN_SAMPLES {
            recent.record(start, ms(60));
        }
        assert_eq!(recent.p95(), Some(ms(60)));
        assert!(!recent.expire(start + WINDOW));
        assert!(recent.expire(start + WINDOW + ms(1)));
        assert!(recent.is_empty());
        assert_eq!(recent.p95(), None);
        assert!(!recent.expire(start + WINDOW * 2));
    }

    #[test]
    fn small_changes_of_the_p95_are_not_news() {
        let start = Instant::now();
        let mut recent = RecentLatency::default();
        for _ in 0..MIN_SAMPLES {
            recent.record(start, ms(10));
        }
        let news: usize = (0..64)
            .map(|_| usize::from(recent.record(start, ms(10))))
            .sum();
        assert_eq!(news, 0);
        let news: usize = (0..KEEP)
            .map(|_| usize::from(recent.record(start, ms(30))))
            .sum();
        assert!(news >= 1, "a p95 that tripled was never reported");
    }

    #[test]
    fn one_slow_node_among_peers_is_slow_and_hedged_at_their_pace() {
        let none = LatencyView::default();
        let p95 = HashMap::from([(node(1), ms(3)), (node(2), ms(4)), (node(3), ms(55))]);
        let view = LatencyView::new(p95, |_| true, &none);
        assert_eq!(view.typical, Some(ms(4)));
        assert_eq!(view.slow, HashSet::from([node(3)]));
        let floor = ms(5);
        assert_eq!(view.hedge_after(&node(3), floor), Some(ms(5)));
        assert_eq!(view.hedge_after(&node(1), ms(1)), Some(ms(3)));
        // A node without samples yet is hedged at the typical pace.
        assert_eq!(view.hedge_after(&node(9), ms(1)), Some(ms(4)));
        // A node with somewhat more work is not slow.
        let p95 = HashMap::from([(node(1), ms(3)), (node(2), ms(9))]);
        assert!(LatencyView::new(p95, |_| true, &none).slow.is_empty());
        // Two of two slow: that is the cluster's pace, no node is singled out.
        let p95 = HashMap::from([(node(1), ms(50)), (node(2), ms(55)), (node(3), ms(3))]);
        assert!(LatencyView::new(p95, |_| true, &none).slow.is_empty());
        // A lone node has no peers to be slower than.
        let p95 = HashMap::from([(node(1), ms(500))]);
        let view = LatencyView::new(p95, |_| true, &none);
        assert!(view.slow.is_empty());
        assert_eq!(view.hedge_after(&node(1), ms(5)), Some(ms(500)));
        // Unhealthy nodes do not set the pace.
        let p95 = HashMap::from([(node(1), ms(3)), (node(2), ms(60)), (node(3), ms(60))]);
        let view = LatencyView::new(p95, |n| n.port != 3, &none);
        assert_eq!(view.typical, Some(ms(3)));
        assert_eq!(view.slow.len(), 2);
        assert_eq!(LatencyView::default().hedge_after(&node(1), ms(5)), None);
    }

    #[test]
    fn a_slow_node_stays_slow_through_its_peers_bursts_until_it_is_fast_or_unheard() {
        let slow = LatencyView::new(
            HashMap::from([(node(1), ms(4)), (node(2), ms(5)), (node(3), ms(55))]),
            |_| true,
            &LatencyView::default(),
        );
        assert_eq!(slow.slow, HashSet::from([node(3)]));
        // Its peers have a burst: by the new typical it would not be slow; it stays slow.
        let burst = LatencyView::new(
            HashMap::from([(node(1), ms(40)), (node(2), ms(45)), (node(3), ms(55))]),
            |_| true,
            &slow,
        );
        assert_eq!(burst.typical, Some(ms(45)));
        assert_eq!(burst.slow, HashSet::from([node(3)]));
        // Fast again by the bar it was judged by (max(3 × 5, 5 + 20) = 25 ms): no longer slow.
        let recovered = LatencyView::new(
            HashMap::from([(node(1), ms(40)), (node(2), ms(45)), (node(3), ms(24))]),
            |_| true,
            &burst,
        );
        assert!(recovered.slow.is_empty());
        // Its samples aged out: judged afresh.
        let unheard = LatencyView::new(
            HashMap::from([(node(1), ms(4)), (node(2), ms(5))]),
            |_| true,
            &burst,
        );
        assert!(unheard.slow.is_empty());
    }
}
