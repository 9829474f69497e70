use std::io;

use super::*;
use crate::index::flat::search_flat_with;
use crate::index::testutil::{Rng, clustered, exact, recall, seq_ids};

fn params(nlist: usize, m: usize, nbits: usize, seed: u64) -> IvfPqParams {
    IvfPqParams {
        nlist,
        m,
        nbits,
        seed,
    }
}

fn probe(nprobe: usize) -> IvfPqSearch {
    IvfPqSearch { nprobe }
}

/// The vector stored at list position `at`: its centroid plus its decoded residual.
fn decoded(index: &IvfPq, at: usize) -> Vec<f32> {
    let (dim, ksub, dsub) = (index.dim, index.ksub(), index.dsub());
    let l = (0..index.nlist())
        .find(|&l| index.list_starts[l] <= at && at < index.list_starts[l + 1])
        .expect("position in a list");
    let mut v = index.centroids[l * dim..(l + 1) * dim].to_vec();
    let code = &index.codes[at * index.code_size()..(at + 1) * index.code_size()];
    for j in 0..index.m {
        let c = if index.nbits <= 8 {
            code[j] as usize
        } else {
            u16::from_le_bytes([code[2 * j], code[2 * j + 1]]) as usize
        };
        let b = &index.codebooks[(j * ksub + c) * dsub..(j * ksub + c + 1) * dsub];
        for (x, &y) in v[j * dsub..(j + 1) * dsub].iter_mut().zip(b) {
            *x += y;
        }
    }
    v
}

/// Brute force over the decoded vectors: for each query the top `k` (distance, id), best first,
/// ties by id; the ADC distance a full-probe search must report.
fn decoded_reference(
    index: &IvfPq,
    queries: &[f32],
    k: usize,
    deleted: Option<&RowBitmap>,
) -> Vec<Vec<(f64, i64)>> {
    let dim = index.dim;
    let all: Vec<(Vec<f32>, i64, usize)> = (0..index.len())
        .map(|at| {
            (
                decoded(index, at),
                index.ids[at],
                index.offsets[at] as usize,
            )
        })
        .collect();
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut row: Vec<(f64, i64)> = all
                .iter()
                .filter(|(_, _, o)| !deleted.is_some_and(|d| d.contains(*o)))
                .map(|(x, id, _)| (exact(index.metric, q, x), *id))
                .collect();
            row.sort_by(|a, b| {
                let o = match index.metric {
                    Metric::L2 => a.0.total_cmp(&b.0),
                    Metric::Ip => b.0.total_cmp(&a.0),
                };
                o.then(a.1.cmp(&b.1))
            });
            row.truncate(k);
            row
        })
        .collect()
}

/// A full-probe search is the brute force over decoded vectors: same distances (to rounding),
/// same ids wherever the reference has no near-tie, padding past the live rows.
fn assert_matches_decoded(got: &TopK, want: &[Vec<(f64, i64)>], k: usize, what: &str) {
    for (q, w) in want.iter().enumerate() {
        let (gi, gd) = (got.row_ids(q), got.row_distances(q));
        for s in 0..k {
            let Some(&(wd, wid)) = w.get(s) else {
                assert_eq!(gi[s], -1, "{what}: query {q} slot {s} should be padding");
                continue;
            };
            let tol = 1e-3 * (1.0 + wd.abs());
            assert!(
                (gd[s] as f64 - wd).abs() <= tol,
                "{what}: query {q} slot {s}: distance {} vs decoded {wd}",
                gd[s]
            );
            let isolated = (s == 0 || (w[s].0 - w[s - 1].0).abs() > 2.0 * tol)
                && w.get(s + 1).is_none_or(|n| (n.0 - wd).abs() > 2.0 * tol);
            if isolated {
                assert_eq!(gi[s], wid, "{what}: query {q} slot {s}");
            }
        }
    }
}

#[test]
fn full_probe_is_brute_force_over_the_decoded_vectors() {
    let mut rng = Rng::new(3);
    let (rows, dim, nq) = (600, 12, 6);
    let all = clustered(&mut rng, rows + nq, dim, 15, 0.4);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let mut deleted = RowBitmap::new(rows);
    for r in (0..rows).step_by(3) {
        deleted.set(r);
    }
    for metric in [Metric::L2, Metric::Ip] {
        for (m, nbits) in [(4, 6), (12, 2)] {
            let index = IvfPq::build(data, &ids, dim, metric, &params(8, m, nbits, 1)).unwrap();
            assert_eq!((index.nlist(), index.m(), index.nbits()), (8, m, nbits));
            let what = format!("{metric:?} m {m} nbits {nbits}");
            for del in [None, Some(&deleted)] {
                let got = index.search(queries, 10, &probe(8), del).unwrap();
                let want = decoded_reference(&index, queries, 10, del);
                assert_matches_decoded(&got, &want, 10, &what);
                // nprobe past nlist is clamped.
                assert_eq!(index.search(queries, 10, &probe(500), del).unwrap(), got);
            }
        }
    }
}

/// nbits > 8: two-byte codes, the same answers as brute force over the decoded vectors.
#[test]
fn wide_codes_search_like_the_decoded_brute_force() {
    let mut rng = Rng::new(5);
    let (rows, dim, nq) = (530, 2, 5);
    let all = clustered(&mut rng, rows + nq, dim, 10, 0.5);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    for metric in [Metric::L2, Metric::Ip] {
        let index = IvfPq::build(data, &ids, dim, metric, &params(4, 1, 9, 1)).unwrap();
        assert_eq!((index.nbits(), index.code_size()), (9, 2));
        let got = index.search(queries, 8, &probe(4), None).unwrap();
        let want = decoded_reference(&index, queries, 8, None);
        assert_matches_decoded(&got, &want, 8, &format!("{metric:?} wide"));
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).expect("write");
        assert_eq!(
            IvfPq::read_from(&mut bytes.as_slice()).expect("read"),
            index
        );
    }
}

#[test]
fn l2_tables_built_per_list_agree_with_the_precomputed_ones() {
    let mut rng = Rng::new(4);
    let (rows, dim, nq) = (500, 16, 8);
    let all = clustered(&mut rng, rows + nq, dim, 10, 0.5);
    let (data, queries) = all.split_at(rows * dim);
    let index =
        IvfPq::build(data, &seq_ids(rows), dim, Metric::L2, &params(10, 4, 5, 2)).expect("build");
    assert!(index.has_precomputed_tables());
    let mut plain = index.clone();
    plain.precomputed = Vec::new();
    for nprobe in [1, 3, 10] {
        let a = index.search(queries, 7, &probe(nprobe), None).unwrap();
        let b = plain.search(queries, 7, &probe(nprobe), None).unwrap();
        assert_eq!(a.ids, b.ids, "nprobe {nprobe}");
        for (x, y) in a.distances.iter().zip(&b.distances) {
            assert!((x - y).abs() <= 1e-3 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
    // IP never precomputes.
    let ip = IvfPq::build(data, &seq_ids(rows), dim, Metric::Ip, &params(10, 4, 5, 2)).unwrap();
    assert!(!ip.has_precomputed_tables());
}

/// Recall@10 against the exact search on clustered data, nlist 32, nprobe 8, m 4 (2 dims per
/// sub-quantizer), nbits 6: L2 measured 0.825, IP 0.715 (IP neighbours sit at the rim, where
/// quantization error weighs most).
fn recall_line(metric: Metric) -> f64 {
    let mut rng = Rng::new(42);
    let (rows, dim, nq) = (2000, 8, 40);
    let all = clustered(&mut rng, rows + nq, dim, 50, 0.3);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let index = IvfPq::build(data, &ids, dim, metric, &params(32, 4, 6, 7)).unwrap();
    let want = search_flat_with(Isa::detect(), queries, data, &ids, dim, 10, metric, None);
    let got = index.search(queries, 10, &probe(8), None).unwrap();
    recall(&got, &want)
}

#[test]
fn l2_recall_on_clustered_data() {
    let r = recall_line(Metric::L2);
    assert!(r >= 0.75, "recall@10 {r}");
}

#[test]
fn ip_recall_on_clustered_data() {
    let r = recall_line(Metric::Ip);
    assert!(r >= 0.65, "recall@10 {r}");
}

#[test]
fn deletes_are_never_returned_and_dense_deletes_still_give_k() {
    let mut rng = Rng::new(8);
    let (rows, dim) = (1200, 8);
    let data = clustered(&mut rng, rows, dim, 20, 0.3);
    let ids = seq_ids(rows);
    let queries = data[..4 * dim].to_vec();
    let index = IvfPq::build(&data, &ids, dim, Metric::L2, &params(24, 4, 6, 11)).unwrap();
    // Each query's own row and its nearest hits deleted.
    let before = index.search(&queries, 5, &probe(4), None).unwrap();
    let mut deleted = RowBitmap::new(rows);
    for &id in &before.ids {
        deleted.set(((id - 1) / 10) as usize);
    }
    let got = index
        .search(&queries, 10, &probe(4), Some(&deleted))
        .unwrap();
    for &id in &got.ids {
        assert!(id != -1 && !deleted.contains(((id - 1) / 10) as usize));
    }
    // 95% deleted: one probed list holds few live rows, yet every query gets k live hits.
    let mut dense = RowBitmap::new(rows);
    for r in 0..rows {
        if r % 20 != 0 {
            dense.set(r);
        }
    }
    let live = rows - dense.count();
    let k = 10;
    for nq in [1, 4] {
        let got = index
            .search(&queries[..nq * dim], k, &probe(1), Some(&dense))
            .unwrap();
        for q in 0..nq {
            let row = got.row_ids(q);
            assert!(row.iter().all(|&id| id != -1), "query {q}: {row:?}");
            for &id in row {
                assert!(!dense.contains(((id - 1) / 10) as usize));
            }
        }
    }
    // Asking for more than the live rows returns them all, then padding.
    let got = index
        .search(&queries[..dim], live + 5, &probe(1), Some(&dense))
        .unwrap();
    let hits = got.ids.iter().filter(|&&id| id != -1).count();
    assert_eq!(hits, live);
    assert!(got.ids[live..].iter().all(|&id| id == -1));
    assert!(got.distances[live..].iter().all(|&d| d == f32::MAX));
}

#[test]
fn one_query_at_a_time_equals_the_batch() {
    let mut rng = Rng::new(9);
    let (rows, dim, nq) = (800, 16, 9);
    let all = clustered(&mut rng, rows + nq, dim, 12, 0.5);
    let (data, queries) = all.split_at(rows * dim);
    for metric in [Metric::L2, Metric::Ip] {
        let index = IvfPq::build(data, &seq_ids(rows), dim, metric, &params(16, 4, 5, 3)).unwrap();
        let batch = index.search(queries, 6, &probe(3), None).unwrap();
        for (q, qv) in queries.chunks_exact(dim).enumerate() {
            let one = index.search(qv, 6, &probe(3), None).unwrap();
            assert_eq!(one.ids, batch.row_ids(q), "{metric:?} query {q}");
            assert_eq!(
                one.distances,
                batch.row_distances(q),
                "{metric:?} query {q}"
            );
        }
        // Results are ordered best first, ties by id.
        for q in 0..nq {
            let (ids, d) = (batch.row_ids(q), batch.row_distances(q));
            for s in 1..ids.len() {
                let ok = match metric {
                    Metric::L2 => d[s - 1] < d[s] || (d[s - 1] == d[s] && ids[s - 1] < ids[s]),
                    Metric::Ip => d[s - 1] > d[s] || (d[s - 1] == d[s] && ids[s - 1] < ids[s]),
                };
                assert!(ok, "{metric:?} query {q} slot {s}");
            }
        }
    }
}

#[test]
fn build_is_deterministic_for_a_seed() {
    let mut rng = Rng::new(6);
    let (rows, dim) = (700, 8);
    let data = rng.normals(rows * dim);
    let ids = seq_ids(rows);
    let a = IvfPq::build(&data, &ids, dim, Metric::L2, &params(10, 2, 6, 99)).unwrap();
    let b = IvfPq::build(&data, &ids, dim, Metric::L2, &params(10, 2, 6, 99)).unwrap();
    assert_eq!(a, b);
    let c = IvfPq::build(&data, &ids, dim, Metric::L2, &params(10, 2, 6, 100)).unwrap();
    assert_ne!(a.codebooks, c.codebooks);
    // The same on one thread.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool.install(|| IvfPq::build(&data, &ids, dim, Metric::L2, &params(10, 2, 6, 99)));
    assert_eq!(one.unwrap(), a);
}

#[test]
fn params_are_checked_against_milvus_ranges() {
    let ok = params(1024, 16, 8, 0);
    assert_eq!(ok.validate(128), Ok(()));
    assert_eq!(params(65536, 1, 16, 0).validate(5), Ok(()));
    assert_eq!(params(1, 128, 1, 0).validate(128), Ok(()));
    let err = |p: IvfPqParams, dim| p.validate(dim).unwrap_err();
    assert_eq!(err(params(0, 16, 8, 0), 128), IvfPqError::Nlist(0));
    assert_eq!(err(params(65537, 16, 8, 0), 128), IvfPqError::Nlist(65537));
    assert_eq!(
        err(params(8, 0, 8, 0), 128),
        IvfPqError::M { m: 0, dim: 128 }
    );
    assert_eq!(
        err(params(8, 12, 8, 0), 128),
        IvfPqError::M { m: 12, dim: 128 }
    );
    assert_eq!(err(params(8, 16, 0, 0), 128), IvfPqError::Nbits(0));
    assert_eq!(err(params(8, 16, 17, 0), 128), IvfPqError::Nbits(17));
    let msg = err(params(0, 16, 8, 0), 128).to_string();
    assert!(msg.contains("[1, 65536]"), "{msg}");
    assert!(
        err(params(8, 16, 17, 0), 128)
            .to_string()
            .contains("[1, 16]")
    );
    assert!(
        err(params(8, 12, 8, 0), 128)
            .to_string()
            .contains("divisible")
    );
    assert_eq!(probe(1).validate(), Ok(()));
    assert_eq!(probe(65536).validate(), Ok(()));
    assert_eq!(probe(0).validate(), Err(IvfPqError::Nprobe(0)));
    assert_eq!(probe(65537).validate(), Err(IvfPqError::Nprobe(65537)));
    // build and search refuse the same.
    let data = vec![0.0f32; 40];
    let ids = seq_ids(5);
    assert!(IvfPq::build(&data, &ids, 8, Metric::L2, &params(2, 3, 8, 0)).is_err());
    let index = IvfPq::build(&data, &ids, 8, Metric::L2, &params(2, 4, 8, 0)).unwrap();
    assert_eq!(
        index.search(&data[..8], 1, &probe(0), None),
        Err(IvfPqError::Nprobe(0))
    );
}

#[test]
fn small_segments_lower_nbits_and_nlist_and_pad() {
    let mut rng = Rng::new(12);
    let dim = 4;
    for (rows, want_nbits) in [(1usize, 1usize), (3, 1), (5, 2), (40, 4), (300, 8)] {
        let data = rng.normals(rows * dim);
        let ids = seq_ids(rows);
        let index = IvfPq::build(&data, &ids, dim, Metric::L2, &params(64, 2, 12, 1)).unwrap();
        assert_eq!(index.nbits(), want_nbits, "rows {rows}");
        assert_eq!(index.nlist(), rows.min(64));
        assert_eq!(index.len(), rows);
        // k past the rows: every row, then padding.
        let got = index
            .search(&data[..dim], rows + 3, &probe(64), None)
            .unwrap();
        let mut found: Vec<i64> = got.ids[..rows].to_vec();
        found.sort_unstable();
        assert_eq!(found, ids);
        assert_eq!(got.ids[rows..], [-1, -1, -1]);
        assert_eq!(got.distances[rows..], [f32::MAX; 3]);
    }
    // No rows: an empty index that answers padding; k = 0 answers nothing.
    let empty = IvfPq::build(&[], &[], dim, Metric::Ip, &params(8, 2, 8, 1)).unwrap();
    assert!(empty.is_empty());
    let q = rng.normals(2 * dim);
    assert_eq!(
        empty.search(&q, 4, &probe(2), None).unwrap(),
        TopK::empty(2, 4, Metric::Ip)
    );
    let data = rng.normals(50 * dim);
    let index = IvfPq::build(&data, &seq_ids(50), dim, Metric::L2, &params(4, 2, 4, 1)).unwrap();
    assert_eq!(
        index.search(&q, 0, &probe(2), None).unwrap(),
        TopK::empty(2, 0, Metric::L2)
    );
}

fn sample_index(metric: Metric, nbits: usize) -> (IvfPq, Vec<f32>) {
    let mut rng = Rng::new(10);
    let (rows, dim) = (300, 6);
    let data = clustered(&mut rng, rows, dim, 8, 0.5);
    let index = IvfPq::build(&data, &seq_ids(rows), dim, metric, &params(6, 3, nbits, 2)).unwrap();
    (index, rng.normals(3 * dim))
}

#[test]
fn write_read_round_trip() {
    for metric in [Metric::L2, Metric::Ip] {
        for nbits in [4, 8] {
            let (index, queries) = sample_index(metric, nbits);
            let mut bytes = Vec::new();
            index.write_to(&mut bytes).expect("write");
            let back = IvfPq::read_from(&mut bytes.as_slice()).expect("read back");
            assert_eq!(back, index, "{metric:?} nbits {nbits}");
            assert_eq!(
                back.search(&queries, 5, &probe(3), None),
                index.search(&queries, 5, &probe(3), None)
            );
            assert!(back.memory_bytes() >= back.codes.len() + back.ids.len() * 8);
        }
    }
    let empty = IvfPq::build(&[], &[], 6, Metric::L2, &params(8, 3, 8, 1)).unwrap();
    let mut bytes = Vec::new();
    empty.write_to(&mut bytes).expect("write");
    assert_eq!(
        IvfPq::read_from(&mut bytes.as_slice()).expect("read"),
        empty
    );
}

#[test]
fn truncated_or_corrupt_input_is_an_error() {
    let (index, _) = sample_index(Metric::L2, 4);
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write");
    for cut in 0..bytes.len() {
        assert!(
            IvfPq::read_from(&mut &bytes[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5A;
        assert!(
            IvfPq::read_from(&mut bad.as_slice()).is_err(),
            "corruption at {at} accepted"
        );
    }
    // A header claiming an enormous index fails on the missing bytes, without allocating it.
    let mut huge = bytes[..16].to_vec();
    for v in [1u64 << 12, 1u64 << 20, 1u64 << 6, 8, 1u64 << 32] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    let err = IvfPq::read_from(&mut huge.as_slice()).expect_err("huge header");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let mut overflow = bytes[..16].to_vec();
    for v in [u64::MAX, u64::MAX, 1, 8, u64::MAX] {
        overflow.extend_from_slice(&v.to_le_bytes());
    }
    assert!(IvfPq::read_from(&mut overflow.as_slice()).is_err());
    // A code past its codebook (with a valid checksum) is refused, not searched.
    let mut forged = index.clone();
    forged.codes[0] = 200;
    let mut fb = Vec::new();
    forged.write_to(&mut fb).expect("write");
    let err = IvfPq::read_from(&mut fb.as_slice()).expect_err("bad code");
    assert!(err.to_string().contains("codebook"), "{err}");
}
