//! The types every search speaks: the metric, the deleted-rows bitmap and the top-k result.

use std::cmp::Ordering;

/// Which way distances sort.
///
/// `L2` is the squared Euclidean distance (what Milvus and faiss report), ascending.
/// `Ip` is the inner product, descending (higher is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    L2,
    Ip,
}

impl Metric {
    /// The distance a padding slot (id -1) carries: the worst value the metric can report.
    pub fn worst(self) -> f32 {
        match self {
            Metric::L2 => f32::MAX,
            Metric::Ip => -f32::MAX,
        }
    }

    /// Maps a distance to a score where lower is better, so one ordering serves both metrics.
    /// Negation is exact, so [`Metric::unscore`] restores the distance bit for bit.
    #[inline]
    pub(crate) fn score(self, distance: f32) -> f32 {
        match self {
            Metric::L2 => distance,
            Metric::Ip => -distance,
        }
    }

    /// Inverse of [`Metric::score`].
    #[inline]
    pub(crate) fn unscore(self, score: f32) -> f32 {
        self.score(score)
    }
}

/// Orders scores (lower is better) totally: NaN sorts after every number, so it never wins.
#[inline]
pub(crate) fn cmp_score(a: f32, b: f32) -> Ordering {
    match a.partial_cmp(&b) {
        Some(o) => o,
        None => a.is_nan().cmp(&b.is_nan()),
    }
}

/// Deleted rows of one segment, by row offset (`0..rows`).
///
/// Searches take `Option<&RowBitmap>`; `None` means nothing is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowBitmap {
    words: Vec<u64>,
    rows: usize,
}

impl RowBitmap {
    /// An empty bitmap (nothing deleted) covering rows `0..rows`.
    pub fn new(rows: usize) -> Self {
        RowBitmap {
            words: vec![0; rows.div_ceil(64)],
            rows,
        }
    }

    /// Marks `row` deleted. A row at or past [`RowBitmap::rows`] grows the bitmap rather than
    /// failing: a delete must never be lost because the bitmap was sized early.
    pub fn set(&mut self, row: usize) {
        if row >= self.rows {
            self.rows = row + 1;
            self.words.resize(self.rows.div_ceil(64), 0);
        }
        self.words[row / 64] |= 1 << (row % 64);
    }

    /// Whether `row` is deleted. Rows past the end are not.
    #[inline]
    pub fn contains(&self, row: usize) -> bool {
        match self.words.get(row / 64) {
            Some(w) => w & (1 << (row % 64)) != 0,
            None => false,
        }
    }

    /// How many rows are deleted.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no row is deleted (not whether the segment is empty).
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The number of rows the bitmap covers.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Top-k results of `nq` queries, row-major: row `q` is `ids[q*k..(q+1)*k]` (distances likewise),
/// best first.
///
/// Rows with fewer than `k` hits are padded with id -1 and [`Metric::worst`] (`f32::MAX` for L2,
/// `-f32::MAX` for IP). Within a row, equal distances are ordered by smaller id first.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub nq: usize,
    pub k: usize,
    pub ids: Vec<i64>,
    pub distances: Vec<f32>,
    pub metric: Metric,
}

/// Why two results cannot be merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("cannot merge results of {other} queries into results of {this} queries")]
    QueryCount { this: usize, other: usize },
    #[error("cannot merge {other:?} results into {this:?} results")]
    Metric { this: Metric, other: Metric },
}

impl TopK {
    /// All padding: `nq` rows of `k` slots with id -1 and the metric's worst distance.
    pub fn empty(nq: usize, k: usize, metric: Metric) -> Self {
        let n = nq.saturating_mul(k);
        TopK {
            nq,
            k,
            ids: vec![-1; n],
            distances: vec![metric.worst(); n],
            metric,
        }
    }

    /// Row `q`'s ids (empty if `q` is out of range or the vectors are shorter than `nq * k`).
    pub fn row_ids(&self, q: usize) -> &[i64] {
        self.ids.get(q * self.k..(q + 1) * self.k).unwrap_or(&[])
    }

    /// Row `q`'s distances (empty if out of range, like [`TopK::row_ids`]).
    pub fn row_distances(&self, q: usize) -> &[f32] {
        self.distances
            .get(q * self.k..(q + 1) * self.k)
            .unwrap_or(&[])
    }

    /// Merges another result for the same queries into `self`, keeping the best `self.k` per row.
    ///
    /// Order: by distance (ascending for L2, descending for IP), equal distances by smaller id. An
    /// id appears at most once per row (its best distance is kept); padding (-1) never displaces a
    /// real hit; a NaN distance ranks below every number. `other.k` may differ from `self.k`.
    ///
    /// # Panics
    /// If `other` answers a different number of queries or uses another metric: that is a caller
    /// bug (use [`TopK::try_merge`] for results that came off the wire).
    pub fn merge(&mut self, other: &TopK) {
        if let Err(e) = self.try_merge(other) {
            panic!("TopK::merge: {e}");
        }
    }

    /// [`TopK::merge`], reporting a query-count or metric mismatch instead of panicking.
    pub fn try_merge(&mut self, other: &TopK) -> Result<(), MergeError> {
        if other.nq != self.nq {
            return Err(MergeError::QueryCount {
                this: self.nq,
                other: other.nq,
            });
        }
        if other.metric != self.metric {
            return Err(MergeError::Metric {
                this: self.metric,
                other: other.metric,
            });
        }
        let metric = self.metric;
        let k = self.k;
        // Repair a hand-built value whose vectors do not match nq * k, so indexing below is safe.
        let n = self.nq.saturating_mul(k);
        self.ids.resize(n, -1);
        self.distances.resize(n, metric.worst());
        let mut cand: Vec<(f32, i64)> = Vec::with_capacity(k + other.k);
        for q in 0..self.nq {
            cand.clear();
            for src in [&*self, other] {
                let hits = src.row_ids(q).iter().zip(src.row_distances(q));
                cand.extend(
                    hits.filter(|(id, _)| **id != -1)
                        .map(|(&id, &d)| (metric.score(d), id)),
                );
            }
            // Dedupe ids, keeping each id's best score, then rank.
            cand.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(cmp_score(a.0, b.0)));
            cand.dedup_by_key(|c| c.1);
            cand.sort_unstable_by(|a, b| cmp_score(a.0, b.0).then(a.1.cmp(&b.1)));
            let ids = &mut self.ids[q * k..(q + 1) * k];
            let dists = &mut self.distances[q * k..(q + 1) * k];
            for (slot, (id, d)) in ids.iter_mut().zip(dists.iter_mut()).enumerate() {
                match cand.get(slot) {
                    Some(&(s, cid)) => {
                        *id = cid;
                        *d = metric.unscore(s);
                    }
                    None => {
                        *id = -1;
                        *d = metric.worst();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: Metric, hits: &[(i64, f32)], k: usize) -> TopK {
        let mut t = TopK::empty(1, k, metric);
        for (i, &(id, d)) in hits.iter().enumerate() {
            t.ids[i] = id;
            t.distances[i] = d;
        }
        t
    }

    #[test]
    fn bitmap_set_contains_count() {
        let mut b = RowBitmap::new(100);
        assert!(b.is_empty());
        assert_eq!(b.count(), 0);
        for r in [0, 63, 64, 99] {
            b.set(r);
        }
        b.set(63);
        assert_eq!(b.count(), 4);
        assert!(b.contains(0) && b.contains(63) && b.contains(64) && b.contains(99));
        assert!(!b.contains(1) && !b.contains(98) && !b.contains(100) && !b.contains(10_000));
        assert!(!b.is_empty());
        b.set(200);
        assert_eq!(b.rows(), 201);
        assert!(b.contains(200));
        assert_eq!(b.count(), 5);
    }

    #[test]
    fn empty_is_padding() {
        let t = TopK::empty(2, 3, Metric::L2);
        assert_eq!(t.ids, vec![-1; 6]);
        assert_eq!(t.distances, vec![f32::MAX; 6]);
        let t = TopK::empty(1, 2, Metric::Ip);
        assert_eq!(t.distances, vec![-f32::MAX; 2]);
    }

    #[test]
    fn merge_orders_dedupes_and_breaks_ties_by_id() {
        let mut a = row(Metric::L2, &[(5, 1.0), (9, 2.0), (3, 4.0)], 4);
        let b = row(Metric::L2, &[(9, 1.5), (2, 2.0), (7, 2.0)], 3);
        a.merge(&b);
        // 9 keeps its better 1.5; 2 and 7 tie at 2.0 → 2 first; 3 is pushed out.
        assert_eq!(a.ids, vec![5, 9, 2, 7]);
        assert_eq!(a.distances, vec![1.0, 1.5, 2.0, 2.0]);

        let mut a = row(Metric::Ip, &[(1, 0.5), (4, 0.1)], 3);
        let b = row(Metric::Ip, &[(4, 0.9), (2, 0.5)], 3);
        a.merge(&b);
        assert_eq!(a.ids, vec![4, 1, 2]);
        assert_eq!(a.distances, vec![0.9, 0.5, 0.5]);
    }

    #[test]
    fn merge_padding_never_displaces_hits() {
        // A real hit at +inf is worse than the padding distance f32::MAX, but still kept.
        let mut a = row(Metric::L2, &[(1, f32::INFINITY)], 2);
        let b = TopK::empty(1, 2, Metric::L2);
        a.merge(&b);
        assert_eq!(a.ids, vec![1, -1]);
        assert_eq!(a.distances, vec![f32::INFINITY, f32::MAX]);
        let mut e = TopK::empty(1, 2, Metric::L2);
        e.merge(&a);
        assert_eq!(e, a);
        // NaN ranks last.
        let mut n = row(Metric::Ip, &[(8, f32::NAN)], 2);
        n.merge(&row(Metric::Ip, &[(9, -5.0)], 1));
        assert_eq!(n.ids, vec![9, 8]);
    }

    #[test]
    fn merge_rejects_mismatch() {
        let mut a = TopK::empty(2, 3, Metric::L2);
        assert_eq!(
            a.try_merge(&TopK::empty(1, 3, Metric::L2)),
            Err(MergeError::QueryCount { this: 2, other: 1 })
        );
        assert!(a.try_merge(&TopK::empty(2, 3, Metric::Ip)).is_err());
        // A malformed value (vectors shorter than nq * k) is read as padding, not a panic.
        let mut bad = TopK::empty(2, 3, Metric::L2);
        bad.ids.truncate(1);
        a.merge(&bad);
        assert_eq!(a, TopK::empty(2, 3, Metric::L2));
    }
}
