//! Exact (FLAT) search over one segment.

use super::kernel::Isa;
use super::scan::{self, Offsets, Rows};
use super::topk::{Metric, RowBitmap, TopK};

/// Exact search of `nq = queries.len() / dim` queries over one segment.
///
/// `data` is `rows × dim` f32, row-major; `ids[r]` is row `r`'s id. Rows set in `deleted` are
/// skipped. Returns the top `k` per query (see [`TopK`] for order and padding). For L2 the
/// distance is the squared Euclidean distance computed as ‖q‖² + ‖x‖² − 2⟨q,x⟩ (clamped at 0).
/// A NaN distance never enters the result. Every row is its own hit: ids are expected to be
/// unique within a segment (Milvus assigns them so), and are not deduplicated here.
///
/// Lengths are not trusted: the segment has `min(data.len() / dim, ids.len())` rows, and a
/// trailing partial query is ignored; `dim == 0` answers zero queries.
pub fn search_flat(
    queries: &[f32],
    data: &[f32],
    ids: &[i64],
    dim: usize,
    k: usize,
    metric: Metric,
    deleted: Option<&RowBitmap>,
) -> TopK {
    search_flat_with(Isa::detect(), queries, data, ids, dim, k, metric, deleted)
}

/// [`search_flat`] on a chosen instruction set (tests run both).
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_flat_with(
    isa: Isa,
    queries: &[f32],
    data: &[f32],
    ids: &[i64],
    dim: usize,
    k: usize,
    metric: Metric,
    deleted: Option<&RowBitmap>,
) -> TopK {
    if dim == 0 {
        return TopK::empty(0, k, metric);
    }
    let nq = queries.len() / dim;
    let rows = (data.len() / dim).min(ids.len());
    let data_rows = Rows {
        vecs: &data[..rows * dim],
        norms: None,
        ids: &ids[..rows],
        offsets: Offsets::Base(0),
    };
    scan::knn(
        isa,
        metric,
        dim,
        &queries[..nq * dim],
        None,
        data_rows,
        k,
        deleted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testutil::{Rng, check};

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::detect());
        }
        v
    }

    fn run_against_reference(metric: Metric) {
        let mut rng = Rng::new(match metric {
            Metric::L2 => 11,
            Metric::Ip => 12,
        });
        for &dim in &[1usize, 3, 17, 128] {
            let rows = 150;
            let data = rng.normals(rows * dim);
            let ids: Vec<i64> = (0..rows as i64).map(|r| 1000 + 3 * r).collect();
            let nq = 6;
            let queries = rng.normals(nq * dim);
            let mut deleted = RowBitmap::new(rows);
            for r in (0..rows).step_by(7) {
                deleted.set(r);
            }
            for &k in &[1usize, 10, 37, rows + 5] {
                for isa in isas() {
                    for del in [None, Some(&deleted)] {
                        let got = search_flat_with(isa, &queries, &data, &ids, dim, k, metric, del);
                        check(&got, metric, &queries, &data, &ids, dim, k, del);
                    }
                }
            }
        }
    }

    #[test]
    fn flat_l2_matches_naive_reference() {
        run_against_reference(Metric::L2);
    }

    #[test]
    fn flat_ip_matches_naive_reference() {
        run_against_reference(Metric::Ip);
    }

    /// Enough rows that the driver splits the segment into several parallel chunks, for one query
    /// and for a batch; the result must still be the exact top-k.
    #[test]
    fn flat_parallel_chunks_match_reference() {
        let mut rng = Rng::new(5);
        let (rows, dim) = (20_000, 5);
        let data = rng.normals(rows * dim);
        let ids: Vec<i64> = (0..rows as i64).rev().collect();
        let mut deleted = RowBitmap::new(rows);
        for r in (0..rows).step_by(3) {
            deleted.set(r);
        }
        for nq in [1, 9] {
            let queries = rng.normals(nq * dim);
            for metric in [Metric::L2, Metric::Ip] {
                let got = search_flat(&queries, &data, &ids, dim, 20, metric, Some(&deleted));
                check(&got, metric, &queries, &data, &ids, dim, 20, Some(&deleted));
            }
        }
    }

    /// Duplicate vectors under different ids tie exactly and come back smaller id first, across
    /// tile positions and chunk boundaries.
    #[test]
    fn flat_ties_rank_smaller_id_first() {
        let mut rng = Rng::new(3);
        let dim = 17;
        let base = rng.normals(4 * dim);
        // 40 rows: each of 4 vectors repeated 10 times, ids shuffled so id order ≠ row order.
        let mut data = Vec::new();
        let mut ids = Vec::new();
        for r in 0..40usize {
            data.extend_from_slice(&base[(r % 4) * dim..(r % 4 + 1) * dim]);
            ids.push(((r * 17) % 40) as i64);
        }
        let queries = rng.normals(3 * dim);
        for metric in [Metric::L2, Metric::Ip] {
            for isa in isas() {
                let got = search_flat_with(isa, &queries, &data, &ids, dim, 40, metric, None);
                for q in 0..3 {
                    let (gi, gd) = (got.row_ids(q), got.row_distances(q));
                    for g in 0..4 {
                        let group = &gd[g * 10..(g + 1) * 10];
                        assert!(
                            group.iter().all(|&d| d.to_bits() == group[0].to_bits()),
                            "{group:?}"
                        );
                        let gids = &gi[g * 10..(g + 1) * 10];
                        assert!(gids.windows(2).all(|w| w[0] < w[1]), "{metric:?}: {gids:?}");
                    }
                }
                // k cuts through a tie group: the smallest ids of the group survive.
                let cut = search_flat_with(isa, &queries, &data, &ids, dim, 5, metric, None);
                for q in 0..3 {
                    assert_eq!(cut.row_ids(q), &got.row_ids(q)[..5]);
                }
            }
        }
    }

    #[test]
    fn flat_pads_rows_with_fewer_than_k_hits() {
        let data = [0.0f32, 0.0, 1.0, 0.0, 5.0, 5.0];
        let ids = [7i64, 8, 9];
        let mut deleted = RowBitmap::new(3);
        deleted.set(1);
        let got = search_flat(&[1.0, 0.0], &data, &ids, 2, 4, Metric::L2, Some(&deleted));
        assert_eq!(got.ids, vec![7, 9, -1, -1]);
        assert_eq!(got.distances, vec![1.0, 41.0, f32::MAX, f32::MAX]);
        let got = search_flat(&[1.0, 0.0], &data, &ids, 2, 4, Metric::Ip, Some(&deleted));
        assert_eq!(got.ids, vec![9, 7, -1, -1]);
        assert_eq!(got.distances, vec![5.0, 0.0, -f32::MAX, -f32::MAX]);
        // Everything deleted: all padding.
        let mut all = RowBitmap::new(3);
        (0..3).for_each(|r| all.set(r));
        let got = search_flat(
            &[1.0, 0.0, 2.0, 2.0],
            &data,
            &ids,
            2,
            2,
            Metric::L2,
            Some(&all),
        );
        assert_eq!(got, TopK::empty(2, 2, Metric::L2));
    }

    #[test]
    fn flat_degenerate_shapes() {
        let data = [1.0f32, 2.0, 3.0, 4.0];
        let ids = [1i64, 2];
        assert_eq!(
            search_flat(&[1.0, 1.0], &data, &ids, 2, 0, Metric::L2, None),
            TopK::empty(1, 0, Metric::L2)
        );
        assert_eq!(
            search_flat(&[], &data, &ids, 2, 3, Metric::L2, None),
            TopK::empty(0, 3, Metric::L2)
        );
        assert_eq!(
            search_flat(&[1.0, 1.0], &[], &[], 2, 2, Metric::Ip, None),
            TopK::empty(1, 2, Metric::Ip)
        );
        assert_eq!(
            search_flat(&[1.0], &data, &ids, 0, 2, Metric::L2, None),
            TopK::empty(0, 2, Metric::L2)
        );
        // A trailing partial query and ids beyond the data are ignored.
        let got = search_flat(&[1.0, 2.0, 9.0], &data, &[1, 2, 3], 2, 3, Metric::L2, None);
        assert_eq!(got.ids, vec![1, 2, -1]);
        assert_eq!(got.distances[..2], [0.0, 8.0]);
    }

    /// Searching parts of a segment and merging equals searching the whole (bit for bit), and
    /// merging a result with itself changes nothing (ids are deduplicated).
    #[test]
    fn flat_merge_of_parts_equals_whole() {
        let mut rng = Rng::new(9);
        let (rows, dim, nq) = (300, 24, 5);
        let data = rng.normals(rows * dim);
        let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 7919) % 1009).collect();
        let queries = rng.normals(nq * dim);
        let mut deleted = RowBitmap::new(rows);
        for r in (0..rows).step_by(5) {
            deleted.set(r);
        }
        for metric in [Metric::L2, Metric::Ip] {
            for k in [1, 8, 50, 400] {
                let whole = search_flat(&queries, &data, &ids, dim, k, metric, Some(&deleted));
                let mut merged = TopK::empty(nq, k, metric);
                for (a, b) in [(0, 97), (97, 200), (200, 300)] {
                    let mut part_del = RowBitmap::new(b - a);
                    (a..b)
                        .filter(|&r| deleted.contains(r))
                        .for_each(|r| part_del.set(r - a));
                    let part = search_flat(
                        &queries,
                        &data[a * dim..b * dim],
                        &ids[a..b],
                        dim,
                        k,
                        metric,
                        Some(&part_del),
                    );
                    merged.merge(&part);
                }
                assert_eq!(merged, whole, "{metric:?} k={k}");
                let mut twice = whole.clone();
                twice.merge(&whole);
                assert_eq!(twice, whole);
            }
        }
    }
}
