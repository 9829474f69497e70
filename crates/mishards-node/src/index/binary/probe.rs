//! Picking a query's lists for BIN_IVF_FLAT: its distance to every coarse centroid, then the
//! `nprobe` nearest, nearest first, ties by smaller list.
//!
//! This runs once per query over all `nlist` centroids, more rows than a query usually scans in
//! its lists at small `nprobe`, so it is kept cheap: one popcount pass, then a bounded insertion
//! over integer keys that rejects almost every list with one compare.

use super::kernel::{self, PopIsa};
use super::{BinaryMetric, jaccard};

/// Most lists kept by insertion into a sorted array while ranking; more are picked by selection.
const SMALL_NPROBE: usize = 32;

/// One query's lists, nearest first.
///
/// Each list is ranked by a single integer key, `score bits << 32 | list`: scores are Hamming
/// counts or Jaccard distances in [0, 1], non-negative floats whose bit patterns order as they
/// do, so comparing keys compares (score, list) — nearest first, ties by smaller list — with one
/// integer compare instead of a float compare and a tie-break.
#[derive(Default)]
pub(super) struct Probe {
    /// The nearest lists in order: the first `nprobe` after [`Probe::rank`], all after
    /// [`Probe::rank_rest`].
    pub(super) order: Vec<u32>,
    keys: Vec<u64>,
    a: Vec<u32>,
    b: Vec<u32>,
}

impl Probe {
    /// Scores `q` against every centroid (`code` bytes each) by `metric` and puts the `nprobe`
    /// nearest lists in `order`, nearest first (ties by smaller list).
    pub(super) fn rank(
        &mut self,
        isa: PopIsa,
        metric: BinaryMetric,
        centroids: &[u8],
        code: usize,
        q: &[u8],
        nprobe: usize,
    ) {
        let nlist = centroids.len() / code;
        let nprobe = nprobe.min(nlist);
        self.a.resize(nlist, 0);
        self.b.resize(nlist, 0);
        self.keys.clear();
        if metric == BinaryMetric::Hamming {
            kernel::xor_counts(isa, q, centroids, code, &mut self.a);
            // A count is below 2^24, so its f32 is exact and orders as the count itself.
            let keys = self.a.iter().enumerate();
            self.keys
                .extend(keys.map(|(l, &c)| key((c as f32).to_bits(), l)));
        } else {
            kernel::and_or_counts(isa, q, centroids, code, &mut self.a, &mut self.b);
            let keys = self.a.iter().zip(&self.b).enumerate();
            self.keys
                .extend(keys.map(|(l, (&a, &o))| key(jaccard(a, o).to_bits(), l)));
        }
        self.order.clear();
        if nprobe <= SMALL_NPROBE {
            // A bounded sorted array: once full, most keys are rejected by one compare.
            let mut best = [0u64; SMALL_NPROBE];
            let mut len = 0;
            for &k in &self.keys {
                if len == nprobe {
                    if k >= best[nprobe - 1] {
                        continue;
                    }
                    len -= 1;
                }
                let at = best[..len].partition_point(|&b| b < k);
                best.copy_within(at..len, at + 1);
                best[at] = k;
                len += 1;
            }
            self.order.extend(best[..len].iter().map(|&k| k as u32));
        } else {
            let keys = &mut self.keys;
            if nprobe < keys.len() {
                keys.select_nth_unstable(nprobe);
            }
            keys[..nprobe].sort_unstable();
            self.order.extend(keys[..nprobe].iter().map(|&k| k as u32));
        }
    }

    /// Orders every list (only needed when deletes leave a query short of `k` after its
    /// `nprobe` lists): `order` keeps its first lists and goes on with the rest, nearest first.
    pub(super) fn rank_rest(&mut self) {
        self.keys.sort_unstable();
        self.order.clear();
        self.order.extend(self.keys.iter().map(|&k| k as u32));
    }
}

/// A list's ranking key: its score's bits, then the list number.
#[inline]
fn key(score_bits: u32, list: usize) -> u64 {
    (u64::from(score_bits) << 32) | list as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testutil::Rng;

    /// Both selection paths (insertion up to [`SMALL_NPROBE`], selection above) give the
    /// reference order — (distance, list) ascending — for both kinds of metric, with many
    /// equal distances (few bits, so ties are common), and `rank_rest` extends it to all lists.
    #[test]
    fn rank_orders_lists_by_distance_then_list() {
        let mut rng = Rng::new(5);
        let (code, nlist) = (2, 300);
        let centroids: Vec<u8> = (0..nlist * code).map(|_| rng.below(256) as u8).collect();
        let q: Vec<u8> = (0..code).map(|_| rng.below(256) as u8).collect();
        let isa = PopIsa::detect();
        for metric in [BinaryMetric::Hamming, BinaryMetric::Jaccard] {
            let mut want: Vec<(f32, u32)> = centroids
                .chunks_exact(code)
                .enumerate()
                .map(|(l, c)| {
                    let (mut and, mut or, mut xor) = (0, 0, 0);
                    for (&a, &b) in q.iter().zip(c) {
                        and += (a & b).count_ones();
                        or += (a | b).count_ones();
                        xor += (a ^ b).count_ones();
                    }
                    let d = match metric {
                        BinaryMetric::Hamming => xor as f32,
                        _ => jaccard(and, or),
                    };
                    (d, l as u32)
                })
                .collect();
            want.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            let want: Vec<u32> = want.into_iter().map(|e| e.1).collect();
            let mut probe = Probe::default();
            for nprobe in [
                1,
                2,
                7,
                SMALL_NPROBE,
                SMALL_NPROBE + 1,
                100,
                nlist,
                nlist + 5,
            ] {
                probe.rank(isa, metric, &centroids, code, &q, nprobe);
                let n = nprobe.min(nlist);
                assert_eq!(probe.order, want[..n], "{metric} nprobe {nprobe}");
                probe.rank_rest();
                assert_eq!(probe.order, want, "{metric} nprobe {nprobe}, all lists");
            }
        }
    }
}
