//! Binary search against a plain bit-by-bit reference, Milvus's metric semantics on hand-made
//! vectors, and BIN_IVF_FLAT's build, search and serialized form.

use std::io;

use super::flat::search_binary_flat_with;
use super::kernel::PopIsa;
use super::*;
use crate::index::testutil::{Rng, clustered, recall};
use crate::index::topk::RowBitmap;

const ALL: [BinaryMetric; 5] = [
    BinaryMetric::Hamming,
    BinaryMetric::Jaccard,
    BinaryMetric::Tanimoto,
    BinaryMetric::Substructure,
    BinaryMetric::Superstructure,
];

fn bit(v: &[u8], i: usize) -> bool {
    (v[i / 8] >> (i % 8)) & 1 == 1
}

/// Random bytes, each bit set with probability `p`.
fn random_codes(rng: &mut Rng, n: usize, code: usize, p: f64) -> Vec<u8> {
    (0..n * code)
        .map(|_| {
            let mut b = 0u8;
            for i in 0..8 {
                if (rng.below(1_000_000) as f64) < p * 1_000_000.0 {
                    b |= 1 << i;
                }
            }
            b
        })
        .collect()
}

/// The sign bits of clustered floats: rows near a common centre share most bits.
fn clustered_codes(rng: &mut Rng, n: usize, dim_bits: usize, centers: usize) -> Vec<u8> {
    let x = clustered(rng, n, dim_bits, centers, 0.6);
    let code = dim_bits / 8;
    let mut out = vec![0u8; n * code];
    for (r, row) in x.chunks(dim_bits).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            if v > 0.0 {
                out[r * code + i / 8] |= 1 << (i % 8);
            }
        }
    }
    out
}

/// Milvus's distance between two vectors, bit by bit (Tanimoto as its Jaccard: the ranking key).
fn reference_key(metric: BinaryMetric, q: &[u8], x: &[u8], dim_bits: usize) -> Option<f32> {
    let (mut xor, mut and, mut or, mut q_in_x, mut x_in_q) = (0u32, 0u32, 0u32, true, true);
    for i in 0..dim_bits {
        let (a, b) = (bit(q, i), bit(x, i));
        xor += (a != b) as u32;
        and += (a && b) as u32;
        or += (a || b) as u32;
        q_in_x &= !a || b;
        x_in_q &= !b || a;
    }
    match metric {
        BinaryMetric::Hamming => Some(xor as f32),
        BinaryMetric::Jaccard | BinaryMetric::Tanimoto => Some(if and == 0 {
            1.0
        } else {
            1.0 - and as f32 / or as f32
        }),
        BinaryMetric::Substructure => q_in_x.then_some(0.0),
        BinaryMetric::Superstructure => x_in_q.then_some(0.0),
    }
}

/// The expected result row: live rows by (key, id), the first k, Tanimoto converted and put back
/// in (distance, id) order, padded with (-1, f32::MAX).
#[allow(clippy::too_many_arguments)]
fn reference_row(
    metric: BinaryMetric,
    q: &[u8],
    data: &[u8],
    ids: &[i64],
    dim_bits: usize,
    k: usize,
    deleted: Option<&RowBitmap>,
) -> Vec<(i64, f32)> {
    let code = dim_bits / 8;
    let mut all: Vec<(f32, i64)> = (0..ids.len())
        .filter(|&r| !deleted.is_some_and(|d| d.contains(r)))
        .filter_map(|r| {
            reference_key(metric, q, &data[r * code..(r + 1) * code], dim_bits).map(|d| (d, ids[r]))
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    if metric == BinaryMetric::Tanimoto {
        for e in all.iter_mut() {
            e.0 = (-((1.0f32 - e.0) as f64).log2()) as f32;
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    let mut row: Vec<(i64, f32)> = all.into_iter().map(|(d, id)| (id, d)).collect();
    row.resize(k, (-1, f32::MAX));
    row
}

/// The expected result of every query (see [`reference_row`]).
#[allow(clippy::too_many_arguments)]
fn reference(
    metric: BinaryMetric,
    queries: &[u8],
    data: &[u8],
    ids: &[i64],
    dim_bits: usize,
    k: usize,
    deleted: Option<&RowBitmap>,
) -> Vec<Vec<(i64, f32)>> {
    queries
        .chunks(dim_bits / 8)
        .map(|q| reference_row(metric, q, data, ids, dim_bits, k, deleted))
        .collect()
}

/// `got` is `want` exactly: ids, distances bit for bit, padding.
fn check_exact(got: &TopK, want: &[Vec<(i64, f32)>], k: usize, what: &str) {
    assert_eq!(
        (got.nq, got.k, got.metric),
        (want.len(), k, Metric::L2),
        "{what}"
    );
    for (qi, want) in want.iter().enumerate() {
        let have: Vec<(i64, f32)> = got
            .row_ids(qi)
            .iter()
            .copied()
            .zip(got.row_distances(qi).iter().copied())
            .collect();
        assert_eq!(have.len(), want.len(), "{what} query {qi}");
        for (s, (h, w)) in have.iter().zip(want).enumerate() {
            assert!(
                h.0 == w.0 && h.1.to_bits() == w.1.to_bits(),
                "{what} query {qi} slot {s}: got {h:?}, want {w:?}"
            );
        }
    }
}

/// Queries that exercise every metric: random ones, subsets and supersets of stored rows (so the
/// match metrics find something), all-zero and all-ones, and a stored row itself.
fn mixed_queries(rng: &mut Rng, data: &[u8], code: usize) -> Vec<u8> {
    let rows = data.len() / code;
    let mut q = random_codes(rng, 2, code, 0.5);
    for _ in 0..2 {
        let r = rng.below(rows);
        let row = &data[r * code..(r + 1) * code];
        let mask = random_codes(rng, 1, code, 0.3);
        q.extend(row.iter().zip(&mask).map(|(a, m)| a & m));
        q.extend(row.iter().zip(&mask).map(|(a, m)| a | m));
    }
    q.extend(std::iter::repeat_n(0u8, code));
    q.extend(std::iter::repeat_n(0xffu8, code));
    let r = rng.below(rows);
    q.extend_from_slice(&data[r * code..(r + 1) * code]);
    q
}

#[test]
fn metric_codes_and_ranking() {
    for (m, code) in ALL.iter().zip(3..=7) {
        assert_eq!(m.code(), code);
        assert_eq!(BinaryMetric::from_code(code), Some(*m));
        assert_eq!(m.ranking(), Metric::L2);
    }
    for code in [-1, 0, 1, 2, 8, 100] {
        assert_eq!(BinaryMetric::from_code(code), None);
    }
    assert_eq!(BinaryMetric::Tanimoto.to_string(), "TANIMOTO");
}

/// Every metric, several dimensions (not multiples of 64 included), with and without deletes, k
/// from 1 to more than the rows, on every instruction set: exactly the reference, bit for bit.
#[test]
fn flat_matches_the_bitwise_reference_for_every_metric() {
    let mut rng = Rng::new(7);
    for dim_bits in [8usize, 24, 64, 520] {
        let code = dim_bits / 8;
        let rows = 240;
        let mut data = random_codes(&mut rng, rows, code, 0.5);
        // An all-zero row, an all-ones row and duplicates under different ids.
        data[..code].fill(0);
        data[code..2 * code].fill(0xff);
        let dup = data[5 * code..6 * code].to_vec();
        data[9 * code..10 * code].copy_from_slice(&dup);
        data[17 * code..18 * code].copy_from_slice(&dup);
        let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 37) % 241 + 5).collect();
        let queries = mixed_queries(&mut rng, &data, code);
        let mut deleted = RowBitmap::new(rows);
        for r in (0..rows).step_by(7) {
            deleted.set(r);
        }
        for metric in ALL {
            for del in [None, Some(&deleted)] {
                // Every live row ranked once; each k is a prefix of it, padded.
                let all = reference(metric, &queries, &data, &ids, dim_bits, rows, del);
                for k in [1usize, 10, rows + 5] {
                    let want: Vec<Vec<(i64, f32)>> = all
                        .iter()
                        .map(|row| {
                            let mut row = row[..k.min(rows)].to_vec();
                            row.resize(k, (-1, f32::MAX));
                            row
                        })
                        .collect();
                    for isa in PopIsa::available() {
                        let got = search_binary_flat_with(
                            isa, &queries, &data, &ids, dim_bits, k, metric, del,
                        );
                        let what = format!(
                            "{metric} {isa:?} dim {dim_bits} k {k} del {}",
                            del.is_some()
                        );
                        check_exact(&got, &want, k, &what);
                    }
                }
            }
        }
    }
}

/// Enough rows that one query and a batch are split into parallel chunks.
#[test]
fn flat_parallel_chunks_match_the_reference() {
    let mut rng = Rng::new(5);
    let (rows, dim_bits) = (20_000, 64);
    let data = clustered_codes(&mut rng, rows, dim_bits, 50);
    let ids: Vec<i64> = (0..rows as i64).rev().collect();
    let mut deleted = RowBitmap::new(rows);
    for r in (0..rows).step_by(3) {
        deleted.set(r);
    }
    for nq in [1, 9] {
        // Sparse subsets of stored rows: near their row, and contained in many others.
        let mut queries = Vec::new();
        for _ in 0..nq {
            let r = rng.below(rows);
            let mask = random_codes(&mut rng, 1, 8, 0.1);
            queries.extend(
                data[r * 8..(r + 1) * 8]
                    .iter()
                    .zip(&mask)
                    .map(|(a, m)| a & m),
            );
        }
        for metric in [
            BinaryMetric::Hamming,
            BinaryMetric::Tanimoto,
            BinaryMetric::Substructure,
        ] {
            let got =
                search_binary_flat(&queries, &data, &ids, dim_bits, 20, metric, Some(&deleted));
            let want = reference(metric, &queries, &data, &ids, dim_bits, 20, Some(&deleted));
            check_exact(&got, &want, 20, &format!("{metric} nq {nq}"));
        }
    }
}

/// Hand-checked values: Milvus issue #19723's pair, the all-zero 0/0 case, identical vectors.
#[test]
fn jaccard_and_tanimoto_values() {
    // 0x0b = 1011, 0x06 = 0110: one common bit of four → jaccard 0.75, tanimoto −log2(0.25) = 2.
    let data = [0x06u8, 0x00, 0x0b];
    let ids = [1i64, 2, 3];
    let got = search_binary_flat(&[0x0b], &data, &ids, 8, 3, BinaryMetric::Jaccard, None);
    assert_eq!(got.ids, vec![3, 1, 2]);
    assert_eq!(got.distances, vec![0.0, 0.75, 1.0]);
    let got = search_binary_flat(&[0x0b], &data, &ids, 8, 3, BinaryMetric::Tanimoto, None);
    assert_eq!(got.ids, vec![3, 1, 2]);
    assert_eq!(got.distances, vec![0.0, 2.0, f32::INFINITY]);
    let got = search_binary_flat(&[0x0b], &data, &ids, 8, 3, BinaryMetric::Hamming, None);
    assert_eq!(got.ids, vec![3, 1, 2]);
    assert_eq!(got.distances, vec![0.0, 3.0, 3.0]);
    // An all-zero query: jaccard 1.0 against every row (the 0/0 row too), ties by id.
    let got = search_binary_flat(&[0x00], &data, &ids, 8, 4, BinaryMetric::Jaccard, None);
    assert_eq!(got.ids, vec![1, 2, 3, -1]);
    assert_eq!(got.distances, vec![1.0, 1.0, 1.0, f32::MAX]);
    let got = search_binary_flat(&[0x00], &data, &ids, 8, 3, BinaryMetric::Tanimoto, None);
    assert_eq!(got.distances, vec![f32::INFINITY; 3]);
    let got = search_binary_flat(&[0x00], &data, &ids, 8, 3, BinaryMetric::Hamming, None);
    assert_eq!(
        (got.ids, got.distances),
        (vec![2, 1, 3], vec![0.0, 2.0, 3.0])
    );
}

/// Substructure: rows that contain the query; superstructure: rows the query contains. Matches
/// report 0.0, in id order; rows with fewer than k matches are padded.
#[test]
fn substructure_and_superstructure_match_semantics() {
    let q = [0b0011u8];
    let data = [0b0111u8, 0b0001, 0b0011, 0b1100, 0b0000, 0b1011];
    let ids = [60i64, 50, 40, 30, 20, 10];
    let got = search_binary_flat(&q, &data, &ids, 8, 5, BinaryMetric::Substructure, None);
    // q ⊆ x: 0111, 0011, 1011.
    assert_eq!(got.ids, vec![10, 40, 60, -1, -1]);
    assert_eq!(got.distances, vec![0.0, 0.0, 0.0, f32::MAX, f32::MAX]);
    let got = search_binary_flat(&q, &data, &ids, 8, 5, BinaryMetric::Superstructure, None);
    // x ⊆ q: 0001, 0011, 0000.
    assert_eq!(got.ids, vec![20, 40, 50, -1, -1]);
    // k below the matches: the smallest ids.
    let got = search_binary_flat(&q, &data, &ids, 8, 2, BinaryMetric::Substructure, None);
    assert_eq!(got.ids, vec![10, 40]);
    // Deleted matches are not returned.
    let mut deleted = RowBitmap::new(6);
    deleted.set(5);
    let got = search_binary_flat(
        &q,
        &data,
        &ids,
        8,
        3,
        BinaryMetric::Substructure,
        Some(&deleted),
    );
    assert_eq!(got.ids, vec![40, 60, -1]);
    // The all-zero query is a substructure of everything; the all-zero row of every query.
    let got = search_binary_flat(&[0], &data, &ids, 8, 6, BinaryMetric::Substructure, None);
    assert_eq!(got.ids, vec![10, 20, 30, 40, 50, 60]);
    let got = search_binary_flat(
        &[0xff],
        &data,
        &ids,
        8,
        6,
        BinaryMetric::Superstructure,
        None,
    );
    assert_eq!(got.ids, vec![10, 20, 30, 40, 50, 60]);
    let got = search_binary_flat(&[0xff], &data, &ids, 8, 2, BinaryMetric::Substructure, None);
    assert_eq!(got, TopK::empty(1, 2, Metric::L2));
}

#[test]
fn flat_padding_and_degenerate_shapes() {
    let data = [1u8, 2, 3];
    let ids = [1i64, 2, 3];
    for metric in ALL {
        let got = search_binary_flat(&[1], &data, &ids, 8, 0, metric, None);
        assert_eq!(got, TopK::empty(1, 0, Metric::L2));
        let got = search_binary_flat(&[], &data, &ids, 8, 3, metric, None);
        assert_eq!(got, TopK::empty(0, 3, Metric::L2));
        let got = search_binary_flat(&[1], &[], &[], 8, 2, metric, None);
        assert_eq!(got, TopK::empty(1, 2, Metric::L2));
        // Dimensions Milvus refuses answer no query.
        for dim_bits in [0, 12, 32776] {
            let got = search_binary_flat(&[1, 2], &data, &ids, dim_bits, 2, metric, None);
            assert_eq!(got, TopK::empty(0, 2, Metric::L2), "{dim_bits}");
        }
        // Everything deleted: all padding.
        let mut all = RowBitmap::new(3);
        (0..3).for_each(|r| all.set(r));
        let got = search_binary_flat(&[1, 7], &data, &ids, 8, 2, metric, Some(&all));
        assert_eq!(got, TopK::empty(2, 2, Metric::L2));
    }
    // A trailing partial query and ids beyond the data are ignored.
    let got = search_binary_flat(
        &[3, 0, 1],
        &data,
        &[1, 2, 3, 4],
        16,
        3,
        BinaryMetric::Hamming,
        None,
    );
    assert_eq!(got.ids, vec![1, -1, -1]);
    assert_eq!(got.distances[0], 2.0);
}

/// Searching parts of a segment and merging with `TopK::merge` equals searching the whole.
#[test]
fn flat_merge_of_parts_equals_whole() {
    let mut rng = Rng::new(9);
    let (rows, dim_bits) = (300, 72);
    let code = dim_bits / 8;
    let data = random_codes(&mut rng, rows, code, 0.4);
    let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 7919) % 1009).collect();
    let queries = mixed_queries(&mut rng, &data, code);
    let nq = queries.len() / code;
    for metric in ALL {
        for k in [1, 8, 400] {
            let whole = search_binary_flat(&queries, &data, &ids, dim_bits, k, metric, None);
            let mut merged = TopK::empty(nq, k, Metric::L2);
            for (a, b) in [(0, 97), (97, 200), (200, 300)] {
                let part = search_binary_flat(
                    &queries,
                    &data[a * code..b * code],
                    &ids[a..b],
                    dim_bits,
                    k,
                    metric,
                    None,
                );
                merged.merge(&part);
            }
            assert_eq!(merged, whole, "{metric} k={k}");
        }
    }
}

fn ivf(
    data: &[u8],
    ids: &[i64],
    dim_bits: usize,
    metric: BinaryMetric,
    nlist: usize,
) -> BinIvfFlat {
    BinIvfFlat::build(
        data,
        ids,
        dim_bits,
        metric,
        &BinIvfParams { nlist, seed: 7 },
    )
    .expect("valid parameters")
}

fn probe(n: usize) -> BinIvfSearch {
    BinIvfSearch { nprobe: n }
}

#[test]
fn ivf_recall_at_10_against_flat_on_clustered_codes() {
    let mut rng = Rng::new(42);
    let (rows, dim_bits, nq) = (2000, 128, 50);
    let all = clustered_codes(&mut rng, rows + nq, dim_bits, 50);
    let (data, queries) = all.split_at(rows * dim_bits / 8);
    let ids: Vec<i64> = (0..rows as i64).map(|r| 10 * r + 1).collect();
    for metric in [
        BinaryMetric::Hamming,
        BinaryMetric::Jaccard,
        BinaryMetric::Tanimoto,
    ] {
        let index = ivf(data, &ids, dim_bits, metric, 32);
        assert_eq!(
            (index.nlist(), index.len(), index.dim_bits(), index.metric()),
            (32, rows, dim_bits, metric)
        );
        let exact = search_binary_flat(queries, data, &ids, dim_bits, 10, metric, None);
        let got = index.search(queries, 10, &probe(8), None).expect("search");
        let r = recall(&got, &exact);
        assert!(r >= 0.95, "{metric}: recall@10 {r}");
        // Every hit carries its exact distance (the IVF scores as the flat search does).
        let all_rows = search_binary_flat(queries, data, &ids, dim_bits, rows, metric, None);
        for q in 0..nq {
            for (id, d) in got.row_ids(q).iter().zip(got.row_distances(q)) {
                let at = all_rows
                    .row_ids(q)
                    .iter()
                    .position(|x| x == id)
                    .expect("hit");
                assert_eq!(d.to_bits(), all_rows.row_distances(q)[at].to_bits());
            }
        }
        let low = index.search(queries, 10, &probe(1), None).expect("search");
        assert!(recall(&low, &exact) <= r, "{metric}: nprobe 1 beats 8");
    }
}

/// nprobe ≥ nlist is the flat search, bit for bit, with and without deletes, on every
/// instruction set.
#[test]
fn ivf_full_probe_equals_flat_exactly() {
    let mut rng = Rng::new(1);
    let (rows, dim_bits) = (700, 104);
    let code = dim_bits / 8;
    let data = clustered_codes(&mut rng, rows, dim_bits, 20);
    let queries = mixed_queries(&mut rng, &data, code);
    let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 37) % 701).collect();
    let mut deleted = RowBitmap::new(rows);
    for r in (0..rows).step_by(4) {
        deleted.set(r);
    }
    for metric in [
        BinaryMetric::Hamming,
        BinaryMetric::Jaccard,
        BinaryMetric::Tanimoto,
    ] {
        let index = ivf(&data, &ids, dim_bits, metric, 16);
        for k in [1, 10, 800] {
            for del in [None, Some(&deleted)] {
                let flat = search_binary_flat(&queries, &data, &ids, dim_bits, k, metric, del);
                for isa in PopIsa::available() {
                    assert_eq!(
                        index.search_with(isa, &queries, k, 16, del),
                        flat,
                        "{metric} k={k} {isa:?}"
                    );
                }
                assert_eq!(
                    index
                        .search(&queries, k, &probe(1000), del)
                        .expect("search"),
                    flat
                );
            }
        }
    }
}

/// Dense deletes: the probed lists run dry, the search widens and still returns k live hits.
#[test]
fn ivf_dense_deletes_still_return_k_live_hits() {
    let mut rng = Rng::new(8);
    let (rows, dim_bits) = (2000, 128);
    let data = clustered_codes(&mut rng, rows, dim_bits, 30);
    let ids: Vec<i64> = (0..rows as i64).collect();
    let queries = data[..5 * 16].to_vec();
    let index = ivf(&data, &ids, dim_bits, BinaryMetric::Hamming, 32);
    let mut deleted = RowBitmap::new(rows);
    for r in 0..rows {
        if r % 50 != 0 {
            deleted.set(r);
        }
    }
    let got = index
        .search(&queries, 10, &probe(1), Some(&deleted))
        .expect("search");
    for &id in &got.ids {
        assert!(id != -1, "a query came back short");
        assert!(!deleted.contains(id as usize), "deleted row {id} returned");
    }
    // Only 40 live rows: k = 50 returns all of them, then padding.
    let got = index
        .search(&queries[..16], 50, &probe(1), Some(&deleted))
        .expect("search");
    assert_eq!(got.ids.iter().filter(|&&id| id != -1).count(), 40);
    assert!(got.ids[40..].iter().all(|&id| id == -1));
}

/// A batch (searched list by list) gives each query exactly what it gets alone (searched query
/// by query). Without deletes a query sees exactly its nprobe lists, short or not; with deletes
/// the search widens until k live hits.
#[test]
fn ivf_batches_equal_single_queries_and_widen_only_for_deletes() {
    let mut rng = Rng::new(21);
    let (rows, dim_bits) = (300, 64);
    let data = clustered_codes(&mut rng, rows, dim_bits, 8);
    let ids: Vec<i64> = (0..rows as i64).map(|r| 1000 - 3 * r).collect();
    let queries = random_codes(&mut rng, 20, 8, 0.5);
    let mut deleted = RowBitmap::new(rows);
    for r in (0..rows).filter(|r| r % 3 != 0) {
        deleted.set(r);
    }
    for metric in [BinaryMetric::Hamming, BinaryMetric::Tanimoto] {
        let index = ivf(&data, &ids, dim_bits, metric, 64);
        for nprobe in [1, 3] {
            for del in [None, Some(&deleted)] {
                let batch = index.search(&queries, 10, &probe(nprobe), del).unwrap();
                for q in 0..20 {
                    let one = index
                        .search(&queries[q * 8..(q + 1) * 8], 10, &probe(nprobe), del)
                        .unwrap();
                    assert_eq!(one.row_ids(0), batch.row_ids(q), "{metric} {nprobe} {q}");
                    assert_eq!(one.row_distances(0), batch.row_distances(q));
                }
                let full = batch.ids.iter().all(|&id| id != -1);
                // ~5 rows a list: nprobe 1 leaves queries short unless deletes make it widen.
                if nprobe == 1 {
                    assert_eq!(full, del.is_some(), "{metric} del {}", del.is_some());
                }
            }
        }
    }
}

/// Every row sits in the list of its nearest centroid by the index's metric.
#[test]
fn ivf_files_rows_by_the_collection_metric() {
    let mut rng = Rng::new(4);
    let (rows, dim_bits) = (600, 64);
    let code = dim_bits / 8;
    let data = clustered_codes(&mut rng, rows, dim_bits, 12);
    for metric in [BinaryMetric::Hamming, BinaryMetric::Jaccard] {
        let index = ivf(
            &data,
            &(0..rows as i64).collect::<Vec<_>>(),
            dim_bits,
            metric,
            12,
        );
        for l in 0..index.nlist() {
            for e in index.list_starts[l]..index.list_starts[l + 1] {
                let x = &index.codes[e * code..(e + 1) * code];
                let key = |c: usize| {
                    reference_key(
                        metric,
                        x,
                        &index.centroids[c * code..(c + 1) * code],
                        dim_bits,
                    )
                    .expect("a distance")
                };
                let best = (0..index.nlist()).map(key).fold(f32::INFINITY, f32::min);
                assert_eq!(key(l), best, "{metric}: entry {e} in list {l}");
            }
        }
    }
}

#[test]
fn ivf_params_are_validated_as_milvus_does() {
    let p = |nlist| BinIvfParams { nlist, seed: 1 };
    assert!(p(1).validate(BinaryMetric::Hamming).is_ok());
    assert!(p(65536).validate(BinaryMetric::Tanimoto).is_ok());
    assert_eq!(
        p(0).validate(BinaryMetric::Jaccard),
        Err(BinIvfError::Nlist(0))
    );
    assert_eq!(
        p(65537).validate(BinaryMetric::Hamming),
        Err(BinIvfError::Nlist(65537))
    );
    for m in [BinaryMetric::Substructure, BinaryMetric::Superstructure] {
        let err = p(16).validate(m).expect_err("FLAT only");
        assert_eq!(err, BinIvfError::Metric(m));
        assert_eq!(
            err.to_string(),
            "IVF not to support Substructure and Superstructure."
        );
        assert!(BinIvfFlat::build(&[0; 64], &[1; 8], 64, m, &p(2)).is_err());
    }
    assert!(probe(1).validate().is_ok() && probe(65536).validate().is_ok());
    assert_eq!(probe(0).validate(), Err(BinIvfError::Nprobe(0)));
    assert_eq!(probe(65537).validate(), Err(BinIvfError::Nprobe(65537)));
    let err = p(0).validate(BinaryMetric::Hamming).unwrap_err();
    assert!(err.to_string().contains("[1, 65536]"), "{err}");
    for dim_bits in [0, 12, 32776] {
        assert_eq!(
            BinIvfFlat::build(&[0; 64], &[1; 4], dim_bits, BinaryMetric::Hamming, &p(2)),
            Err(BinIvfError::DimBits(dim_bits))
        );
    }
    let index = ivf(&[1u8; 16], &[1, 2], 64, BinaryMetric::Hamming, 1);
    assert_eq!(
        index.search(&[0u8; 8], 1, &probe(0), None),
        Err(BinIvfError::Nprobe(0))
    );
}

#[test]
fn ivf_build_is_deterministic_and_clamps_nlist() {
    let mut rng = Rng::new(6);
    let (rows, dim_bits) = (300, 40);
    let code = dim_bits / 8;
    let data = random_codes(&mut rng, rows, code, 0.5);
    let ids: Vec<i64> = (0..rows as i64).collect();
    let params = |seed| BinIvfParams { nlist: 10, seed };
    let a = BinIvfFlat::build(&data, &ids, dim_bits, BinaryMetric::Hamming, &params(99)).unwrap();
    let b = BinIvfFlat::build(&data, &ids, dim_bits, BinaryMetric::Hamming, &params(99)).unwrap();
    assert_eq!(a, b);
    assert_eq!((0..a.nlist()).map(|l| a.list_len(l)).sum::<usize>(), rows);
    let c = BinIvfFlat::build(&data, &ids, dim_bits, BinaryMetric::Hamming, &params(100)).unwrap();
    assert_ne!(a.centroids, c.centroids);
    assert!(a.memory_bytes() >= rows * (code + 12));
    assert!(format!("{a:?}").starts_with("BinIvfFlat { dim_bits: 40"));
    // More lists than rows: clamped, still exact at full probe.
    let small = ivf(
        &data[..7 * code],
        &ids[..7],
        dim_bits,
        BinaryMetric::Jaccard,
        50,
    );
    assert_eq!(small.nlist(), 7);
    let q = &data[..2 * code];
    assert_eq!(
        small.search(q, 3, &probe(7), None).unwrap(),
        search_binary_flat(
            q,
            &data[..7 * code],
            &ids[..7],
            dim_bits,
            3,
            BinaryMetric::Jaccard,
            None
        )
    );
    // No rows: an empty index answering padding.
    let empty = ivf(&[], &[], dim_bits, BinaryMetric::Tanimoto, 8);
    assert_eq!((empty.nlist(), empty.len(), empty.is_empty()), (0, 0, true));
    assert_eq!(
        empty.search(q, 4, &probe(2), None).unwrap(),
        TopK::empty(2, 4, Metric::L2)
    );
    assert_eq!(
        a.search(q, 0, &probe(2), None).unwrap(),
        TopK::empty(2, 0, Metric::L2)
    );
}

#[test]
fn ivf_write_read_round_trip() {
    let mut rng = Rng::new(10);
    let (rows, dim_bits) = (400, 72);
    let data = clustered_codes(&mut rng, rows, dim_bits, 10);
    let ids: Vec<i64> = (0..rows as i64).map(|r| r * 3 - 7).collect();
    let queries = random_codes(&mut rng, 3, dim_bits / 8, 0.5);
    for metric in [
        BinaryMetric::Hamming,
        BinaryMetric::Jaccard,
        BinaryMetric::Tanimoto,
    ] {
        let index = ivf(&data, &ids, dim_bits, metric, 8);
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).expect("write to a Vec");
        let back = BinIvfFlat::read_from(&mut bytes.as_slice()).expect("read back");
        assert_eq!(back, index);
        assert_eq!(
            back.search(&queries, 5, &probe(3), None),
            index.search(&queries, 5, &probe(3), None)
        );
        // The documented layout: header fields where the doc says.
        assert_eq!(&bytes[..8], b"MSBIVFL\0");
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &(metric.code() as u32).to_le_bytes());
        assert_eq!(&bytes[16..24], &(dim_bits as u64).to_le_bytes());
        assert_eq!(&bytes[24..32], &8u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &(rows as u64).to_le_bytes());
        let body = bytes.len() - 4;
        assert_eq!(bytes.len(), 40 + 8 * 9 + 8 * 8 + rows * (4 + 8 + 9) + 4);
        assert_eq!(
            &bytes[body..],
            &crc32fast::hash(&bytes[..body]).to_le_bytes()
        );
    }
    let empty = ivf(&[], &[], dim_bits, BinaryMetric::Hamming, 8);
    let mut bytes = Vec::new();
    empty.write_to(&mut bytes).expect("write");
    assert_eq!(
        BinIvfFlat::read_from(&mut bytes.as_slice()).expect("read"),
        empty
    );
}

#[test]
fn ivf_truncated_or_corrupt_input_is_err() {
    let mut rng = Rng::new(12);
    let (rows, dim_bits) = (60, 16);
    let data = random_codes(&mut rng, rows, 2, 0.5);
    let ids: Vec<i64> = (0..rows as i64).collect();
    let index = ivf(&data, &ids, dim_bits, BinaryMetric::Jaccard, 4);
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write");
    for cut in 0..bytes.len() {
        assert!(
            BinIvfFlat::read_from(&mut &bytes[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5A;
        assert!(
            BinIvfFlat::read_from(&mut bad.as_slice()).is_err(),
            "corruption at {at} accepted"
        );
    }
    // A header claiming an enormous index fails on the missing bytes, without allocating it.
    let mut huge = bytes[..24].to_vec();
    for v in [1u64 << 20, 1u64 << 32] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    let err = BinIvfFlat::read_from(&mut huge.as_slice()).expect_err("huge header");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let mut overflow = bytes[..16].to_vec();
    for v in [8u64, u64::MAX, u64::MAX] {
        overflow.extend_from_slice(&v.to_le_bytes());
    }
    assert!(BinIvfFlat::read_from(&mut overflow.as_slice()).is_err());
    // A substructure index, or an odd dimension, is refused with a reason.
    for (at, value, why) in [(12, 6u64, "metric"), (16, 12, "dimension")] {
        let mut bad = bytes.clone();
        let width = if at == 12 { 4 } else { 8 };
        bad[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        let err = BinIvfFlat::read_from(&mut bad.as_slice()).expect_err(why);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(why), "{err}");
    }
}
