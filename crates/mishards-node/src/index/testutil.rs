//! Test helpers: seeded data and a naive f64 reference search to check results against.

use super::topk::{Metric, RowBitmap, TopK};
use mishards_common::rng::SplitMix64;

/// The shared seeded generator, with the draws test data needs.
pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// Standard normal (the first of a Box–Muller pair).
    pub(crate) fn normal(&mut self) -> f32 {
        self.0.normal_pair().0 as f32
    }

    pub(crate) fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// `n` points around `centers` random centres: centre ~ N(0, 1)^dim, point = centre + noise·N(0, 1).
pub(crate) fn clustered(
    rng: &mut Rng,
    n: usize,
    dim: usize,
    centers: usize,
    noise: f32,
) -> Vec<f32> {
    let c = rng.normals(centers * dim);
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let ci = rng.below(centers);
        for d in 0..dim {
            out.push(c[ci * dim + d] + noise * rng.normal());
        }
    }
    out
}

pub(crate) fn exact(metric: Metric, q: &[f32], x: &[f32]) -> f64 {
    match metric {
        Metric::L2 => q
            .iter()
            .zip(x)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum(),
        Metric::Ip => q.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum(),
    }
}

/// All live rows of one query, best first (ties by id), as (distance, id).
pub(crate) fn reference_row(
    metric: Metric,
    q: &[f32],
    data: &[f32],
    ids: &[i64],
    dim: usize,
    deleted: Option<&RowBitmap>,
) -> Vec<(f64, i64)> {
    let mut all: Vec<(f64, i64)> = (0..ids.len())
        .filter(|&r| !deleted.is_some_and(|d| d.contains(r)))
        .map(|r| (exact(metric, q, &data[r * dim..(r + 1) * dim]), ids[r]))
        .collect();
    all.sort_by(|a, b| {
        let o = match metric {
            Metric::L2 => a.0.total_cmp(&b.0),
            Metric::Ip => b.0.total_cmp(&a.0),
        };
        o.then(a.1.cmp(&b.1))
    });
    all
}

/// Checks `got` against the naive f64 search, allowing float rounding: every hit's distance is
/// its true distance (± tol), rows are sorted with ties by id, ids are unique and live, the
/// sorted distances match the reference position by position, ids match wherever the reference
/// has no near-tie, and short rows are padded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    got: &TopK,
    metric: Metric,
    queries: &[f32],
    data: &[f32],
    ids: &[i64],
    dim: usize,
    k: usize,
    deleted: Option<&RowBitmap>,
) {
    let nq = queries.len() / dim;
    assert_eq!((got.nq, got.k, got.metric), (nq, k, metric));
    assert_eq!(got.ids.len(), nq * k);
    assert_eq!(got.distances.len(), nq * k);
    let max_norm = (0..ids.len())
        .map(|r| {
            exact(
                Metric::Ip,
                &data[r * dim..(r + 1) * dim],
                &data[r * dim..(r + 1) * dim],
            )
        })
        .fold(0.0, f64::max);
    for qi in 0..nq {
        let q = &queries[qi * dim..(qi + 1) * dim];
        let qn = exact(Metric::Ip, q, q);
        let tol = 2e-5 * (1.0 + qn + max_norm);
        let want = reference_row(metric, q, data, ids, dim, deleted);
        let gi = got.row_ids(qi);
        let gd = got.row_distances(qi);
        let hits = want.len().min(k);
        for s in 0..k {
            if s >= hits {
                assert_eq!(gi[s], -1, "query {qi} slot {s}: expected padding");
                assert_eq!(
                    gd[s],
                    metric.worst(),
                    "query {qi} slot {s}: padding distance"
                );
                continue;
            }
            let id = gi[s];
            let row = ids
                .iter()
                .position(|&x| x == id)
                .unwrap_or_else(|| panic!("unknown id {id}"));
            assert!(
                !deleted.is_some_and(|d| d.contains(row)),
                "deleted row {row} returned"
            );
            assert!(!gi[..s].contains(&id), "id {id} twice");
            let true_d = exact(metric, q, &data[row * dim..(row + 1) * dim]);
            assert!(
                (gd[s] as f64 - true_d).abs() <= tol,
                "query {qi} slot {s} id {id}: distance {} vs true {true_d} (tol {tol})",
                gd[s]
            );
            assert!(
                (gd[s] as f64 - want[s].0).abs() <= tol,
                "query {qi} slot {s}: distance {} vs reference {} (tol {tol})",
                gd[s],
                want[s].0
            );
            let isolated = (s == 0 || (want[s].0 - want[s - 1].0).abs() > 2.0 * tol)
                && (s + 1 >= want.len() || (want[s + 1].0 - want[s].0).abs() > 2.0 * tol);
            if isolated {
                assert_eq!(id, want[s].1, "query {qi} slot {s}: id");
            }
            if s > 0 {
                let (pd, pid) = (gd[s - 1], gi[s - 1]);
                let ordered = match metric {
                    Metric::L2 => pd < gd[s] || (pd == gd[s] && pid < id),
                    Metric::Ip => pd > gd[s] || (pd == gd[s] && pid < id),
                };
                assert!(ordered, "query {qi}: slots {} and {s} out of order", s - 1);
            }
        }
    }
}

/// Ids 1, 11, 21, …: not row numbers, so a result that mixes the two up shows.
pub(crate) fn seq_ids(n: usize) -> Vec<i64> {
    (0..n as i64).map(|i| 10 * i + 1).collect()
}

/// The share of the exact top-k ids that `got` found (padding never counts).
pub(crate) fn recall(got: &TopK, exact: &TopK) -> f64 {
    let mut hit = 0;
    for q in 0..got.nq {
        let want = exact.row_ids(q);
        hit += got
            .row_ids(q)
            .iter()
            .filter(|id| **id != -1 && want.contains(id))
            .count();
    }
    hit as f64 / (exact.nq * exact.k) as f64
}
