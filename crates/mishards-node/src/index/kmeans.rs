//! Seeded k-means for the IVF_FLAT coarse quantizer: training, nearest-centroid assignment,
//! empty-cluster splitting and the training sample.
//!
//! Training follows faiss's `IndexIVFFlat` so recall and build cost are comparable: 10 Lloyd
//! iterations, at most 256 training points per centroid (a seeded random sample beyond that),
//! random initial centroids, empty clusters re-seeded by splitting a large one, and for inner
//! product the lists are assigned by maximum inner product with spherical (unit-norm) centroids,
//! as faiss does for `METRIC_INNER_PRODUCT`.

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::kernel::{Isa, use_avx2};
use super::scan::{self, Offsets, Rows, l2_norms};
use super::topk::Metric;

/// Lloyd iterations. faiss's `IndexIVF` lowers its clustering default (25) to 10 for the coarse
/// quantizer ("a low # iterations because this is typically used for large clusterings"), so
/// Milvus 1.1's IVF_FLAT trains with 10; so do we.
const NITER: usize = 10;
/// Training sample cap per centroid (faiss `max_points_per_centroid`).
const MAX_POINTS_PER_CENTROID: usize = 256;

/// The nearest centroid (largest inner product for IP) of every row of `data`; ties go to the
/// smaller list number. A row whose distance to every centroid is NaN goes to list 0.
pub(super) fn assign(
    isa: Isa,
    metric: Metric,
    dim: usize,
    centroids: &[f32],
    centroid_norms: &[f32],
    data: &[f32],
    data_norms: Option<&[f32]>,
) -> Vec<u32> {
    let nlist = centroids.len() / dim;
    let list_ids: Vec<i64> = (0..nlist as i64).collect();
    let rows = Rows {
        vecs: centroids,
        norms: (metric == Metric::L2).then_some(centroid_norms),
        ids: &list_ids,
        offsets: Offsets::Base(0),
    };
    let top = scan::knn(isa, metric, dim, data, data_norms, rows, 1, None);
    top.ids
        .iter()
        .map(|&l| u32::try_from(l).unwrap_or(0))
        .collect()
}

/// Up to this many dimensions, [`nearest`] scores L2 centroids exactly, one dimension at a time
/// over all centroids ([`nearest_small_l2`]): product-quantizer sub-vectors (4 floats at m 32,
/// d 128) are far too short for the tile kernel, whose per-pair overhead then dominates.
const SMALL_DIM: usize = 16;
/// Centroid columns are padded to a multiple of this many lanes.
const LANES: usize = 16;
/// Rows per parallel task in [`nearest_small_l2`].
const SMALL_ROWS_PER_TASK: usize = 2048;

/// The nearest centroid of every row of `data`, as [`assign`] finds it (`data_norms` as it takes
/// them; the centroids' norms are derived here); for L2 in at most [`SMALL_DIM`] dimensions by
/// exact squared differences instead, which needs no norms (see [`nearest_small_l2`]). For
/// training and encoding, where rows are not probed later by [`assign`]'s arithmetic.
pub(super) fn nearest(
    isa: Isa,
    metric: Metric,
    dim: usize,
    centroids: &[f32],
    data: &[f32],
    data_norms: Option<&[f32]>,
) -> Vec<u32> {
    if metric == Metric::L2 && (1..=SMALL_DIM).contains(&dim) {
        return nearest_small_l2(isa, dim, centroids, data);
    }
    let norms = l2_norms(isa, metric, centroids, centroids.len() / dim, dim);
    assign(isa, metric, dim, centroids, &norms, data, data_norms)
}

/// The centroid with the least `Σ (x_d − c_d)²` for every row (ties to the smaller number, a row
/// whose every distance is NaN to 0). The centroids are laid out column by column (padded with
/// +∞, never nearer than a real centroid), so each dimension is one pass of subtract, square and
/// add over a contiguous column: lanes over centroids, no horizontal sums. No fused
/// multiply-add, so the AVX2 build gives the portable build's bits.
fn nearest_small_l2(isa: Isa, dim: usize, centroids: &[f32], data: &[f32]) -> Vec<u32> {
    let k = centroids.len() / dim;
    let padded = k.next_multiple_of(LANES);
    let mut columns = vec![f32::INFINITY; dim * padded];
    for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
        for (d, &v) in centroid.iter().enumerate() {
            columns[d * padded + c] = v;
        }
    }
    let mut out = vec![0u32; data.len() / dim];
    out.par_chunks_mut(SMALL_ROWS_PER_TASK)
        .zip(data.par_chunks(SMALL_ROWS_PER_TASK * dim))
        .for_each(|(out, rows)| {
            let mut dist = vec![0.0f32; padded];
            for (o, x) in out.iter_mut().zip(rows.chunks_exact(dim)) {
                *o = nearest_column(isa, x, &columns, &mut dist);
            }
        });
    out
}

fn nearest_column(isa: Isa, x: &[f32], columns: &[f32], dist: &mut [f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx2(isa) {
        // SAFETY: AVX2 is present (checked by `use_avx2`); the function is safe Rust otherwise.
        return unsafe { nearest_column_avx2(x, columns, dist) };
    }
    let _ = isa;
    nearest_column_impl(x, columns, dist)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn nearest_column_avx2(x: &[f32], columns: &[f32], dist: &mut [f32]) -> u32 {
    nearest_column_impl(x, columns, dist)
}

#[inline(always)]
fn nearest_column_impl(x: &[f32], columns: &[f32], dist: &mut [f32]) -> u32 {
    let padded = dist.len();
    let column = |d: usize| &columns[d * padded..(d + 1) * padded];
    // The first pass writes the sums, the last also keeps each lane's least: no separate
    // clearing or minimum pass over the distances.
    let mut lane_min = [f32::INFINITY; LANES];
    match x {
        [] => return 0,
        [only] => column_pass::<true, true>(*only, column(0), dist, &mut lane_min),
        [first, middle @ .., last] => {
            column_pass::<true, false>(*first, column(0), dist, &mut lane_min);
            for (d, &xd) in middle.iter().enumerate() {
                column_pass::<false, false>(xd, column(d + 1), dist, &mut lane_min);
            }
            column_pass::<false, true>(*last, column(x.len() - 1), dist, &mut lane_min);
        }
    }
    let least = lane_min
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    // The first centroid at the least distance; padding follows every real centroid, and with
    // every distance NaN nothing equals `least`.
    dist.iter().position(|&v| v == least).unwrap_or(0) as u32
}

/// One dimension's pass: `dist[c] (+)= (xd − column[c])²` (`=` on the first pass), and on the
/// last pass each lane's least distance into `lane_min`.
#[inline(always)]
fn column_pass<const FIRST: bool, const LAST: bool>(
    xd: f32,
    column: &[f32],
    dist: &mut [f32],
    lane_min: &mut [f32; LANES],
) {
    for (out, col) in dist.chunks_exact_mut(LANES).zip(column.chunks_exact(LANES)) {
        for ((o, &c), m) in out.iter_mut().zip(col).zip(lane_min.iter_mut()) {
            let t = xd - c;
            let v = if FIRST { t * t } else { *o + t * t };
            *o = v;
            if LAST {
                *m = if v < *m { v } else { *m };
            }
        }
    }
}

/// Seeded, deterministic k-means (see the module doc for how it mirrors faiss): `k` centroids,
/// row-major. Requires `1 <= k <= rows`.
pub(super) fn kmeans(
    isa: Isa,
    data: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    seed: u64,
) -> Vec<f32> {
    kmeans_iters(isa, data, dim, k, metric, seed, NITER)
}

/// [`kmeans`] with `niter` Lloyd iterations (faiss trains its product quantizers with 25).
pub(super) fn kmeans_iters(
    isa: Isa,
    data: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    seed: u64,
    niter: usize,
) -> Vec<f32> {
    let n = data.len() / dim;
    let mut rng = SplitMix64::new(seed);
    let max_points = k.saturating_mul(MAX_POINTS_PER_CENTROID);
    let sample;
    let x: &[f32] = if n > max_points {
        let mut pick = sample_indices(&mut rng, n, max_points);
        pick.sort_unstable();
        sample = gather(data, dim, &pick);
        &sample
    } else {
        data
    };
    let nx = x.len() / dim;
    let spherical = metric == Metric::Ip;
    let mut centroids = gather(x, dim, &sample_indices(&mut rng, nx, k));
    if spherical {
        normalize_rows(&mut centroids, dim);
    }
    let xnorms = l2_norms(isa, metric, x, nx, dim);
    let xn = (metric == Metric::L2).then_some(&xnorms[..]);
    for _ in 0..niter {
        let a = nearest(isa, metric, dim, &centroids, x, xn);
        // Group points by cluster (counting sort, stable), then average each cluster in f64.
        let (starts, order) = sort_by_bucket(&a, k);
        centroids
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(c, cent)| {
                let members = &order[starts[c]..starts[c + 1]];
                if members.is_empty() {
                    return;
                }
                let mut sum = vec![0.0f64; dim];
                for &p in members {
                    for (s, &v) in sum.iter_mut().zip(&x[p * dim..(p + 1) * dim]) {
                        *s += v as f64;
                    }
                }
                let inv = 1.0 / members.len() as f64;
                for (c, s) in cent.iter_mut().zip(&sum) {
                    *c = (s * inv) as f32;
                }
            });
        let mut counts: Vec<usize> = (0..k).map(|c| starts[c + 1] - starts[c]).collect();
        split_empty_clusters(&mut centroids, &mut counts, dim, nx, &mut rng);
        if spherical {
            normalize_rows(&mut centroids, dim);
        }
    }
    centroids
}

/// Re-seeds each empty cluster by splitting a populated one, as faiss does: pick cluster `j` with
/// probability ∝ (size − 1), copy its centroid and nudge the two copies apart symmetrically.
fn split_empty_clusters(
    centroids: &mut [f32],
    counts: &mut [usize],
    dim: usize,
    n: usize,
    rng: &mut SplitMix64,
) {
    const EPS: f32 = 1.0 / 1024.0;
    let k = counts.len();
    for ci in 0..k {
        if counts[ci] != 0 {
            continue;
        }
        let mut cj = 0;
        let mut tries = 0usize;
        loop {
            // n == k gives p = +inf for any cluster with two points: it is then taken at once.
            let p = (counts[cj] as f64 - 1.0) / (n - k) as f64;
            if rng.next_f64() < p {
                break;
            }
            cj = (cj + 1) % k;
            tries += 1;
            if tries > 64 * k {
                // Vanishingly unlikely; take the largest so the loop always ends.
                cj = (0..k)
                    .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
                    .unwrap_or(0);
                break;
            }
        }
        if cj == ci {
            continue;
        }
        for d in 0..dim {
            let v = centroids[cj * dim + d];
            let (a, b) = if d % 2 == 0 {
                (1.0 + EPS, 1.0 - EPS)
            } else {
                (1.0 - EPS, 1.0 + EPS)
            };
            centroids[ci * dim + d] = v * a;
            centroids[cj * dim + d] = v * b;
        }
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
    }
}

fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_exact_mut(dim) {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

pub(super) fn gather(x: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        out.extend_from_slice(&x[r * dim..(r + 1) * dim]);
    }
    out
}

/// `m` distinct indices from `0..n` (m ≤ n), by a partial Fisher–Yates shuffle.
pub(super) fn sample_indices(rng: &mut SplitMix64, n: usize, m: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(m);
    idx
}

/// Where each of `k` buckets starts once the items labelled `labels` are ordered by bucket
/// (counting sort): `k + 1` offsets, the last the item count. Labels must be below `k`.
pub(super) fn bucket_starts(labels: impl Iterator<Item = usize>, k: usize) -> Vec<usize> {
    let mut starts = vec![0usize; k + 1];
    for l in labels {
        starts[l + 1] += 1;
    }
    for b in 0..k {
        starts[b + 1] += starts[b];
    }
    starts
}

/// A stable counting sort of items by their label (below `k`): the bucket starts (as
/// [`bucket_starts`]) and, for each sorted position, the index of the item that lands there.
pub(super) fn sort_by_bucket(labels: &[u32], k: usize) -> (Vec<usize>, Vec<usize>) {
    let starts = bucket_starts(labels.iter().map(|&l| l as usize), k);
    let mut fill = starts.clone();
    let mut order = vec![0usize; labels.len()];
    for (item, &l) in labels.iter().enumerate() {
        order[fill[l as usize]] = item;
        fill[l as usize] += 1;
    }
    (starts, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_by_bucket_is_stable_and_counts_every_bucket() {
        let labels = [2u32, 0, 2, 1, 0, 2];
        let (starts, order) = sort_by_bucket(&labels, 4);
        assert_eq!(starts, [0, 2, 3, 6, 6]);
        assert_eq!(order, [1, 4, 3, 0, 2, 5]);
        assert_eq!(bucket_starts([3usize, 3].into_iter(), 4), [0, 0, 0, 0, 2]);
    }

    #[test]
    fn samples_are_distinct_and_seeded() {
        let pick = |seed| sample_indices(&mut SplitMix64::new(seed), 100, 30);
        let a = pick(5);
        assert_eq!(a.len(), 30);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 30);
        assert!(sorted.iter().all(|&i| i < 100));
        assert_eq!(a, pick(5));
        assert_ne!(a, pick(6));
        assert_eq!(pick(1).len(), 30);
        assert_eq!(sample_indices(&mut SplitMix64::new(1), 3, 3).len(), 3);
    }

    #[test]
    fn an_empty_cluster_is_split_off_a_populated_one() {
        // Cluster 1 is empty; cluster 0 is the only one with more than one point.
        let mut centroids = vec![1.0f32, 2.0, 0.0, 0.0, 5.0, 5.0];
        let mut counts = vec![9, 0, 1];
        split_empty_clusters(&mut centroids, &mut counts, 2, 10, &mut SplitMix64::new(3));
        assert_eq!(counts, [5, 4, 1]);
        assert_eq!(counts.iter().sum::<usize>(), 10);
        // The two halves sit symmetrically either side of the old centroid.
        for d in 0..2 {
            let (a, b) = (centroids[2 + d], centroids[d]);
            assert_ne!(a, b);
            assert!(((a + b) / 2.0 - [1.0, 2.0][d]).abs() < 1e-6);
        }
        assert_eq!(&centroids[4..], &[5.0, 5.0]);
    }

    /// The column-by-column search finds the exact nearest centroid (ties to the smaller
    /// number, never a padding lane), with the same bits on every instruction set.
    #[test]
    fn small_dimension_assignment_is_the_exact_nearest_centroid() {
        let mut rng = crate::index::testutil::Rng::new(4);
        for (dim, k) in [(1, 3), (4, 256), (8, 37), (16, 17)] {
            let mut centroids = rng.normals(k * dim);
            // A duplicate centroid: every row nearer to it than to the rest ties, and goes to
            // the smaller number.
            let dup = centroids[..dim].to_vec();
            centroids[(k - 1) * dim..].copy_from_slice(&dup);
            let mut data = rng.normals(300 * dim);
            data[dim] = f32::NAN;
            let got = nearest_small_l2(Isa::detect(), dim, &centroids, &data);
            assert_eq!(got, nearest_small_l2(Isa::Portable, dim, &centroids, &data));
            for (r, x) in data.chunks_exact(dim).enumerate() {
                let d2 = |c: usize| -> f32 {
                    x.iter()
                        .zip(&centroids[c * dim..(c + 1) * dim])
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum()
                };
                let want = if x.iter().any(|v| v.is_nan()) {
                    0
                } else {
                    (0..k).fold(0, |best, c| if d2(c) < d2(best) { c } else { best })
                };
                assert_eq!(got[r] as usize, want, "dim {dim} k {k} row {r}");
                assert_ne!(got[r] as usize, k - 1, "the duplicate of centroid 0 won");
            }
        }
    }

    #[test]
    fn kmeans_is_deterministic_and_ip_centroids_are_unit_norm() {
        let mut rng = crate::index::testutil::Rng::new(2);
        let (rows, dim, k) = (500, 6, 8);
        let data = rng.normals(rows * dim);
        for metric in [Metric::L2, Metric::Ip] {
            let a = kmeans(Isa::detect(), &data, dim, k, metric, 9);
            assert_eq!(a.len(), k * dim);
            assert_eq!(a, kmeans(Isa::detect(), &data, dim, k, metric, 9));
            if metric == Metric::Ip {
                for c in a.chunks(dim) {
                    let n: f32 = c.iter().map(|v| v * v).sum();
                    assert!((n - 1.0).abs() < 1e-4, "centroid norm² {n}");
                }
            }
            // Every point goes to a centroid that exists, none is left without points.
            let norms = l2_norms(Isa::detect(), metric, &a, k, dim);
            let lists = assign(Isa::detect(), metric, dim, &a, &norms, &data, None);
            let (starts, _) = sort_by_bucket(&lists, k);
            assert!(
                starts.windows(2).all(|w| w[1] > w[0]),
                "{metric:?}: {starts:?}"
            );
        }
    }
}
