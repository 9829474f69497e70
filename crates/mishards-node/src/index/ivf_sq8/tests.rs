use std::io;

use super::*;
use crate::index::flat::search_flat_with;
use crate::index::ivf::IvfFlat;
use crate::index::testutil::{Rng, check, clustered, exact, recall, seq_ids};

fn params(nlist: usize, seed: u64) -> IvfSq8Params {
    IvfSq8Params { nlist, seed }
}

fn probe(nprobe: usize) -> IvfSq8Search {
    IvfSq8Search { nprobe }
}

fn build(data: &[f32], ids: &[i64], dim: usize, metric: Metric, nlist: usize, seed: u64) -> IvfSq8 {
    IvfSq8::build(data, ids, dim, metric, &params(nlist, seed)).expect("valid params")
}

/// Every row as the index decodes it, by segment row (faiss's formula, in f64):
/// `centroid + vmin + (code + 0.5) / 255 · vdiff`.
fn decoded(index: &IvfSq8) -> Vec<f32> {
    let dim = index.dim;
    let mut out = vec![0.0f32; index.len() * dim];
    for l in 0..index.nlist() {
        for e in index.list_starts[l]..index.list_starts[l + 1] {
            let row = index.offsets[e] as usize;
            for d in 0..dim {
                let code = (index.codes[e * dim + d] as u8 ^ 0x80) as f64;
                let v = index.centroids[l * dim + d] as f64
                    + index.vmin[d] as f64
                    + (code + 0.5) / 255.0 * index.vdiff[d] as f64;
                out[row * dim + d] = v as f32;
            }
        }
    }
    out
}

fn recall_at_nprobe_16(metric: Metric) {
    let mut rng = Rng::new(42);
    let (rows, dim, nq) = (4000, 32, 50);
    let all = clustered(&mut rng, rows + nq, dim, 100, 0.3);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let index = build(data, &ids, dim, metric, 64, 7);
    assert_eq!(
        (index.nlist(), index.len(), index.dim(), index.metric()),
        (64, rows, dim, metric)
    );
    let exact_top = search_flat_with(Isa::detect(), queries, data, &ids, dim, 10, metric, None);
    let got = index.search(queries, 10, &probe(16), None).expect("search");
    let r = recall(&got, &exact_top);
    assert!(r >= 0.9, "{metric:?}: recall@10 {r}");
    // Every hit carries its distance to the decoded vector.
    let dec = decoded(&index);
    for (s, &id) in got.ids.iter().enumerate() {
        assert!(id != -1, "slot {s} padded");
        let (row, q) = (((id - 1) / 10) as usize, s / 10);
        let want = exact(
            metric,
            &queries[q * dim..(q + 1) * dim],
            &dec[row * dim..(row + 1) * dim],
        );
        assert!(
            (got.distances[s] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()),
            "slot {s}: {} vs {want}",
            got.distances[s]
        );
    }
}

#[test]
fn sq8_l2_recall_at_nprobe_16_on_clustered_data() {
    recall_at_nprobe_16(Metric::L2);
}

#[test]
fn sq8_ip_recall_at_nprobe_16_on_clustered_data() {
    recall_at_nprobe_16(Metric::Ip);
}

/// With every list probed the index is an exact search over the decoded vectors: distances,
/// order, ties by id, deletes and padding all as the naive reference computes them.
#[test]
fn sq8_full_probe_is_exact_over_decoded_vectors() {
    let mut rng = Rng::new(1);
    let (rows, dim, nq) = (700, 13, 7);
    let data = clustered(&mut rng, rows, dim, 20, 0.5);
    let queries = rng.normals(nq * dim);
    let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 37) % 701).collect();
    let mut deleted = RowBitmap::new(rows);
    for r in (0..rows).step_by(4) {
        deleted.set(r);
    }
    for metric in [Metric::L2, Metric::Ip] {
        let index = build(&data, &ids, dim, metric, 16, 3);
        let dec = decoded(&index);
        for k in [1, 10, 200, 800] {
            for del in [None, Some(&deleted)] {
                let got = index.search(&queries, k, &probe(16), del).expect("search");
                check(&got, metric, &queries, &dec, &ids, dim, k, del);
                // nprobe beyond nlist is clamped.
                assert_eq!(
                    index
                        .search(&queries, k, &probe(1000), del)
                        .expect("search"),
                    got
                );
            }
        }
    }
}

/// The coarse quantizer is IVF_FLAT's: same nlist and seed, same lists.
#[test]
fn sq8_lists_are_ivf_flat_lists() {
    let mut rng = Rng::new(5);
    let (rows, dim) = (1500, 16);
    let data = clustered(&mut rng, rows, dim, 40, 0.4);
    let ids = seq_ids(rows);
    for metric in [Metric::L2, Metric::Ip] {
        let sq = build(&data, &ids, dim, metric, 32, 9);
        let flat = IvfFlat::build(&data, &ids, dim, 32, metric, 9);
        assert_eq!(sq.nlist(), flat.nlist());
        for l in 0..sq.nlist() {
            assert_eq!(sq.list_len(l), flat.list_len(l), "{metric:?} list {l}");
        }
        // nprobe 1 reaches the same list: asking for exactly its size, the same ids come back.
        for qi in 0..5 {
            let q = &data[qi * dim..(qi + 1) * dim];
            let b = flat.search(q, rows, 1, None);
            let mut y: Vec<i64> = b.ids.iter().copied().filter(|&i| i != -1).collect();
            let a = sq.search(q, y.len(), &probe(1), None).expect("search");
            let mut x = a.ids.clone();
            x.sort_unstable();
            y.sort_unstable();
            assert_eq!(x, y, "{metric:?} query {qi}");
        }
    }
}

/// faiss's QT_8bit formula: ⌊255·(x − vmin)/vdiff⌋ clamped, decoded at the bucket centre.
#[test]
fn sq8_codes_follow_faiss_qt_8bit() {
    let vmin = [-1.0f32, 0.0, 2.0];
    let vdiff = [2.0f32, 0.0, 1.0];
    let zero = [0.0f32; 3];
    let cases: [([f32; 3], [u8; 3]); 4] = [
        ([-1.0, 5.0, 2.0], [0, 0, 0]),
        ([1.0, -5.0, 3.0], [255, 0, 255]),
        ([0.0, 0.0, 2.5], [127, 0, 127]),
        ([-9.0, f32::NAN, 99.0], [0, 0, 255]),
    ];
    for (x, want) in cases {
        let mut out = [0i8; 3];
        encode(&x, &zero, &vmin, &vdiff, &mut out);
        let got: Vec<u8> = out.iter().map(|&t| t as u8 ^ 0x80).collect();
        assert_eq!(got, want, "{x:?}");
    }
    // NaN input: 0 after clamping fails, as faiss's cast gives.
    let mut out = [0i8; 3];
    encode(&[f32::NAN; 3], &zero, &vmin, &vdiff, &mut out);
    assert_eq!(out.map(|t| t as u8 ^ 0x80), [0, 0, 0]);
    // Residuals: the centroid is taken off first.
    encode(&[0.0, 0.0, 3.0], &[1.0, 0.0, 1.0], &vmin, &vdiff, &mut out);
    assert_eq!(out.map(|t| t as u8 ^ 0x80), [0, 0, 0]);
}

/// The trained range is the residuals' min and max per dimension.
#[test]
fn sq8_range_is_the_residual_min_max() {
    let mut rng = Rng::new(2);
    let (rows, dim) = (300, 6);
    let data = rng.normals(rows * dim);
    let index = build(&data, &seq_ids(rows), dim, Metric::L2, 4, 1);
    let norms = l2_norms(Isa::detect(), Metric::L2, &index.centroids, 4, dim);
    let lists = assign(
        Isa::detect(),
        Metric::L2,
        dim,
        &index.centroids,
        &norms,
        &data,
        None,
    );
    for d in 0..dim {
        let res =
            (0..rows).map(|r| data[r * dim + d] - index.centroids[lists[r] as usize * dim + d]);
        let lo = res.clone().fold(f32::INFINITY, f32::min);
        let hi = res.fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(index.vmin[d], lo);
        assert_eq!(index.vdiff[d], hi - lo);
    }
}

#[test]
fn sq8_honours_deletions_and_dense_deletes_still_fill_k() {
    let mut rng = Rng::new(8);
    let (rows, dim) = (2000, 16);
    let data = clustered(&mut rng, rows, dim, 30, 0.3);
    let ids = seq_ids(rows);
    let queries = data[..5 * dim].to_vec();
    let index = build(&data, &ids, dim, Metric::L2, 32, 11);
    let before = index.search(&queries, 5, &probe(8), None).expect("search");
    let mut deleted = RowBitmap::new(rows);
    for &id in &before.ids {
        deleted.set(((id - 1) / 10) as usize);
    }
    let got = index
        .search(&queries, 10, &probe(8), Some(&deleted))
        .expect("search");
    for &id in &got.ids {
        assert!(
            id != -1 && !deleted.contains(((id - 1) / 10) as usize),
            "deleted id {id} returned"
        );
    }
    // 99% deleted: nprobe 1 reaches too few live rows, the search widens and still fills k.
    let mut dense = RowBitmap::new(rows);
    for r in 0..rows {
        if r % 100 != 7 {
            dense.set(r);
        }
    }
    for k in [10, 20, 25] {
        let got = index
            .search(&queries, k, &probe(1), Some(&dense))
            .expect("search");
        for (s, &id) in got.ids.iter().enumerate() {
            let live = s % k < 20;
            if live {
                assert!(id != -1 && (id - 1) / 10 % 100 == 7, "k {k} slot {s}: {id}");
            } else {
                assert_eq!(id, -1, "k {k} slot {s}: only 20 live rows");
            }
        }
    }
    // All live rows with a full probe equal what the widened search returns.
    let full = index
        .search(&queries, 20, &probe(32), Some(&dense))
        .expect("search");
    assert_eq!(
        index
            .search(&queries, 20, &probe(1), Some(&dense))
            .expect("search"),
        full
    );
}

#[test]
fn sq8_build_is_deterministic_whatever_the_threads() {
    let mut rng = Rng::new(6);
    let (rows, dim) = (600, 10);
    let data = clustered(&mut rng, rows, dim, 12, 0.5);
    let ids = seq_ids(rows);
    let a = build(&data, &ids, dim, Metric::L2, 10, 99);
    let b = build(&data, &ids, dim, Metric::L2, 10, 99);
    assert_eq!(a, b);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let c = one.install(|| build(&data, &ids, dim, Metric::L2, 10, 99));
    assert_eq!(a, c);
    let q = rng.normals(20 * dim);
    let sa = a.search(&q, 7, &probe(3), None).expect("search");
    assert_eq!(
        one.install(|| c.search(&q, 7, &probe(3), None).expect("search")),
        sa
    );
    // One query at a time gives the batch's rows.
    for qi in 0..20 {
        let s = a
            .search(&q[qi * dim..(qi + 1) * dim], 7, &probe(3), None)
            .expect("search");
        assert_eq!(s.ids, sa.row_ids(qi));
        assert_eq!(s.distances, sa.row_distances(qi));
    }
    let d = build(&data, &ids, dim, Metric::L2, 10, 100);
    assert_ne!(a.centroids, d.centroids);
}

#[test]
fn sq8_params_are_checked_against_milvus_ranges() {
    for ok in [1, 16, 65536] {
        assert!(params(ok, 0).validate().is_ok());
    }
    for bad in [0, 65537] {
        let e = params(bad, 0).validate().expect_err("out of range");
        assert!(matches!(e, IvfSq8Error::Nlist(n) if n == bad));
        assert_eq!(
            e.to_string(),
            format!("IVF_SQ8 parameter nlist must be in [1, 65536], got {bad}")
        );
        assert!(IvfSq8::build(&[0.0; 8], &[1, 2], 4, Metric::L2, &params(bad, 0)).is_err());
    }
    let index = build(&[0.0, 1.0, 2.0, 3.0], &[1, 2], 2, Metric::L2, 1, 0);
    for ok in [1, 65536] {
        assert!(index.search(&[0.0, 0.0], 1, &probe(ok), None).is_ok());
    }
    for bad in [0, 65537] {
        let e = index
            .search(&[0.0, 0.0], 1, &probe(bad), None)
            .expect_err("out of range");
        assert_eq!(
            e.to_string(),
            format!("IVF_SQ8 search parameter nprobe must be in [1, 65536], got {bad}")
        );
    }
}

#[test]
fn sq8_small_empty_and_padding() {
    let mut rng = Rng::new(3);
    let dim = 5;
    let data = rng.normals(7 * dim);
    let ids = seq_ids(7);
    // More lists than rows: clamped; k above the row count pads.
    let small = build(&data, &ids, dim, Metric::Ip, 50, 1);
    assert_eq!((small.nlist(), small.len()), (7, 7));
    let got = small
        .search(&data[..2 * dim], 10, &probe(1), None)
        .expect("search");
    for q in 0..2 {
        assert_eq!(got.row_ids(q).iter().filter(|&&i| i != -1).count(), 7);
        assert!(got.row_ids(q)[7..].iter().all(|&i| i == -1));
        assert!(got.row_distances(q)[7..].iter().all(|&d| d == -f32::MAX));
    }
    // No rows: an empty index that answers padding.
    let empty = build(&[], &[], dim, Metric::L2, 8, 1);
    assert_eq!((empty.nlist(), empty.len(), empty.is_empty()), (0, 0, true));
    assert_eq!(
        empty
            .search(&data[..2 * dim], 4, &probe(2), None)
            .expect("search"),
        TopK::empty(2, 4, Metric::L2)
    );
    assert_eq!(
        small
            .search(&data[..2 * dim], 0, &probe(2), None)
            .expect("search"),
        TopK::empty(2, 0, Metric::Ip)
    );
}

/// The portable kernel and the detected one rank alike (their sums differ in the last bits).
#[test]
fn sq8_portable_and_simd_searches_agree() {
    let mut rng = Rng::new(21);
    let (rows, dim) = (1200, 24);
    let data = clustered(&mut rng, rows, dim, 20, 0.5);
    let queries = rng.normals(9 * dim);
    let ids = seq_ids(rows);
    for metric in [Metric::L2, Metric::Ip] {
        let index = build(&data, &ids, dim, metric, 16, 4);
        let a = index.search_with(Isa::Portable, &queries, 10, 4, None);
        let b = index.search_with(Isa::detect(), &queries, 10, 4, None);
        assert!(recall(&a, &b) >= 0.98, "{metric:?}");
        for (x, y) in a.distances.iter().zip(&b.distances) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                "{metric:?}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn sq8_memory_is_under_three_tenths_of_the_floats() {
    let mut rng = Rng::new(4);
    let (rows, dim) = (5000, 128);
    let data = clustered(&mut rng, rows, dim, 50, 1.0);
    let index = build(&data, &seq_ids(rows), dim, Metric::L2, 16, 1);
    let raw = rows * dim * 4;
    let ratio = index.memory_bytes() as f64 / raw as f64;
    assert!(
        ratio <= 0.3,
        "memory {} of {raw} bytes: {ratio}",
        index.memory_bytes()
    );
    assert!(index.memory_bytes() >= rows * (dim + 12));
}

#[test]
fn sq8_write_read_round_trip() {
    let mut rng = Rng::new(10);
    let (rows, dim) = (400, 9);
    let data = clustered(&mut rng, rows, dim, 10, 0.5);
    let ids = seq_ids(rows);
    let queries = rng.normals(3 * dim);
    for metric in [Metric::L2, Metric::Ip] {
        let index = build(&data, &ids, dim, metric, 8, 2);
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).expect("write to a Vec");
        let back = IvfSq8::read_from(&mut bytes.as_slice()).expect("read back");
        assert_eq!(back, index);
        assert_eq!(
            back.search(&queries, 5, &probe(3), None).expect("search"),
            index.search(&queries, 5, &probe(3), None).expect("search")
        );
    }
    let empty = build(&[], &[], dim, Metric::L2, 8, 1);
    let mut bytes = Vec::new();
    empty.write_to(&mut bytes).expect("write");
    assert_eq!(
        IvfSq8::read_from(&mut bytes.as_slice()).expect("read"),
        empty
    );
}

/// The layout `format.rs` documents, encoded by hand.
#[test]
fn sq8_serialized_form_is_the_documented_layout() {
    let mut rng = Rng::new(14);
    let (rows, dim) = (40, 3);
    let data = rng.normals(rows * dim);
    for (metric, code) in [(Metric::L2, 0u32), (Metric::Ip, 1)] {
        let index = build(&data, &seq_ids(rows), dim, metric, 4, 5);
        let mut want = b"MSIVFSQ8".to_vec();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&code.to_le_bytes());
        for v in [dim, index.nlist(), rows] {
            want.extend_from_slice(&(v as u64).to_le_bytes());
        }
        for v in index
            .centroids
            .iter()
            .chain(&index.vmin)
            .chain(&index.vdiff)
        {
            want.extend_from_slice(&v.to_le_bytes());
        }
        (0..index.nlist())
            .for_each(|l| want.extend_from_slice(&(index.list_len(l) as u64).to_le_bytes()));
        index
            .offsets
            .iter()
            .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
        index
            .ids
            .iter()
            .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
        want.extend(index.codes.iter().map(|&t| t as u8 ^ 0x80));
        let crc = crc32fast::hash(&want);
        want.extend_from_slice(&crc.to_le_bytes());
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).expect("write");
        assert_eq!(bytes, want, "{metric:?}");
    }
}

#[test]
fn sq8_truncated_or_corrupt_input_is_err() {
    let mut rng = Rng::new(12);
    let (rows, dim) = (60, 4);
    let data = rng.normals(rows * dim);
    let index = build(&data, &seq_ids(rows), dim, Metric::L2, 4, 2);
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write");
    for cut in 0..bytes.len() {
        assert!(
            IvfSq8::read_from(&mut &bytes[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5A;
        assert!(
            IvfSq8::read_from(&mut bad.as_slice()).is_err(),
            "corruption at {at} accepted"
        );
    }
    let mut magic = bytes.clone();
    magic[0] = b'X';
    let err = IvfSq8::read_from(&mut magic.as_slice()).expect_err("bad magic");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("IVF_SQ8"), "{err}");
    // A header claiming an enormous index fails on the missing bytes, without allocating it.
    let mut huge = bytes[..16].to_vec();
    for v in [1u64 << 20, 1u64 << 16, 1u64 << 32] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    let err = IvfSq8::read_from(&mut huge.as_slice()).expect_err("huge header");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let mut overflow = bytes[..16].to_vec();
    for v in [u64::MAX, 65536, u64::MAX] {
        overflow.extend_from_slice(&v.to_le_bytes());
    }
    assert!(IvfSq8::read_from(&mut overflow.as_slice()).is_err());
}
