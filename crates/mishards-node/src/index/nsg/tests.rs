use std::io;

use super::*;
use crate::index::flat::search_flat_with;
use crate::index::kernel::Isa;
use crate::index::testutil::{Rng, check, clustered, exact, recall, seq_ids};

fn params(search_length: usize, out_degree: usize, knng: usize) -> NsgParams {
    NsgParams {
        search_length,
        out_degree,
        candidate_pool_size: 100,
        knng,
        seed: 7,
    }
}

fn sl(search_length: usize) -> NsgSearch {
    NsgSearch { search_length }
}

fn row_of(id: i64) -> usize {
    ((id - 1) / 10) as usize
}

/// Every row is reachable from the navigating node; links are in range and not self-loops; a
/// row has more than `out_degree` links only where repair added some (at most the repairs).
fn assert_graph_sound(index: &Nsg) {
    let rows = index.len();
    let Some(nav) = index.nav else {
        assert_eq!(rows, 0);
        return;
    };
    let mut extra = 0;
    for r in 0..rows as u32 {
        let links = index.links(r);
        assert!(
            links.iter().all(|&t| (t as usize) < rows && t != r),
            "row {r}"
        );
        let mut sorted = links.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), links.len(), "row {r} links a row twice");
        extra += links.len().saturating_sub(index.params.out_degree);
    }
    assert!(extra <= rows / 10 + 8, "{extra} links past out_degree");
    let mut seen = vec![false; rows];
    let mut stack = vec![nav];
    seen[nav as usize] = true;
    while let Some(r) = stack.pop() {
        for &t in index.links(r) {
            if !std::mem::replace(&mut seen[t as usize], true) {
                stack.push(t);
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "a row is unreachable");
}

/// Recall@10 against the exact search on clustered data, and every hit carries its true Milvus
/// distance, in Milvus order.
fn recall_on_clustered_data(metric: Metric) {
    let mut rng = Rng::new(42);
    let (rows, dim, nq) = (2000, 24, 50);
    let all = clustered(&mut rng, rows + nq, dim, 40, 0.4);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let index = Nsg::build(data, &ids, dim, metric, &params(40, 30, 50)).expect("valid params");
    assert_eq!(
        (index.len(), index.dim(), index.metric()),
        (rows, dim, metric)
    );
    assert_graph_sound(&index);
    let want = search_flat_with(Isa::detect(), queries, data, &ids, dim, 10, metric, None);
    let got = index.search(queries, 10, &sl(40), None).expect("valid");
    let r = recall(&got, &want);
    assert!(r >= 0.95, "{metric:?}: recall@10 {r}");
    for q in 0..nq {
        let (gi, gd) = (got.row_ids(q), got.row_distances(q));
        for s in 0..10 {
            assert_ne!(gi[s], -1, "query {q} slot {s} padded");
            let x = &data[row_of(gi[s]) * dim..(row_of(gi[s]) + 1) * dim];
            let truth = exact(metric, &queries[q * dim..(q + 1) * dim], x);
            assert!((gd[s] as f64 - truth).abs() < 1e-3 * (1.0 + truth.abs()));
            if s > 0 {
                match metric {
                    Metric::L2 => assert!(gd[s - 1] <= gd[s]),
                    Metric::Ip => assert!(gd[s - 1] >= gd[s]),
                }
            }
        }
    }
    // A longer pool never does worse here, and gets (nearly) everything.
    let wide = index.search(queries, 10, &sl(300), None).expect("valid");
    assert!(recall(&wide, &want) >= r.max(0.99), "{metric:?}");
}

#[test]
fn nsg_l2_recall_on_clustered_data() {
    recall_on_clustered_data(Metric::L2);
}

#[test]
fn nsg_ip_recall_on_clustered_data() {
    recall_on_clustered_data(Metric::Ip);
}

/// Past 8,192 rows the kNN graph comes from a partial IVF scan; the graph is still sound and the
/// recall good.
#[test]
fn nsg_ivf_knn_graph_on_a_larger_segment() {
    let mut rng = Rng::new(12);
    let (rows, dim, nq) = (9_000, 6, 40);
    let all = clustered(&mut rng, rows + nq, dim, 100, 0.3);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let index = Nsg::build(data, &ids, dim, Metric::L2, &params(10, 10, 10)).expect("valid");
    assert_graph_sound(&index);
    let want = search_flat_with(
        Isa::detect(),
        queries,
        data,
        &ids,
        dim,
        10,
        Metric::L2,
        None,
    );
    let r = recall(
        &index.search(queries, 10, &sl(60), None).expect("ok"),
        &want,
    );
    assert!(r >= 0.95, "recall@10 {r}");
}

#[test]
fn nsg_never_returns_deleted_rows_and_still_returns_k() {
    let mut rng = Rng::new(8);
    let (rows, dim) = (1500, 16);
    let data = clustered(&mut rng, rows, dim, 30, 0.3);
    let ids = seq_ids(rows);
    let queries = data[..8 * dim].to_vec();
    for metric in [Metric::L2, Metric::Ip] {
        let index = Nsg::build(&data, &ids, dim, metric, &params(30, 20, 20)).expect("valid");
        // Each query's 20 exact neighbours (itself included) plus every third row go.
        let near = search_flat_with(Isa::detect(), &queries, &data, &ids, dim, 20, metric, None);
        let mut deleted = RowBitmap::new(rows);
        for &id in &near.ids {
            deleted.set(row_of(id));
        }
        for r in (0..rows).step_by(3) {
            deleted.set(r);
        }
        let got = index
            .search(&queries, 10, &sl(40), Some(&deleted))
            .expect("ok");
        for &id in &got.ids {
            assert!(id != -1 && !deleted.contains(row_of(id)), "deleted {id}");
        }
        let want = search_flat_with(
            Isa::detect(),
            &queries,
            &data,
            &ids,
            dim,
            10,
            metric,
            Some(&deleted),
        );
        let r = recall(&got, &want);
        assert!(r >= 0.9, "{metric:?} recall with deletions {r}");
        // Dense deletes: all but 12 rows gone; the 12 still come back, exactly ranked.
        let mut dense = RowBitmap::new(rows);
        (0..rows)
            .filter(|r| r % 125 != 7)
            .for_each(|r| dense.set(r));
        let got = index
            .search(&queries, 12, &sl(10), Some(&dense))
            .expect("ok");
        check(&got, metric, &queries, &data, &ids, dim, 12, Some(&dense));
        // Everything deleted: only padding.
        let mut all = RowBitmap::new(rows);
        (0..rows).for_each(|r| all.set(r));
        let none = index.search(&queries, 5, &sl(50), Some(&all)).expect("ok");
        assert_eq!(none, TopK::empty(8, 5, metric));
    }
}

#[test]
fn nsg_refuses_params_out_of_range_with_milvus_messages() {
    let data = vec![0.5f32; 40];
    let ids = seq_ids(10);
    let ok = params(45, 50, 100);
    let cases = [
        (
            NsgParams {
                search_length: 9,
                ..ok
            },
            "Invalid search_length value: 9. Valid range is [10, 300]",
        ),
        (
            NsgParams {
                search_length: 301,
                ..ok
            },
            "Invalid search_length value: 301. Valid range is [10, 300]",
        ),
        (
            NsgParams {
                out_degree: 4,
                ..ok
            },
            "Invalid out_degree value: 4. Valid range is [5, 300]",
        ),
        (
            NsgParams {
                out_degree: 301,
                ..ok
            },
            "Invalid out_degree value: 301. Valid range is [5, 300]",
        ),
        (
            NsgParams {
                candidate_pool_size: 49,
                ..ok
            },
            "Invalid candidate_pool_size value: 49. Valid range is [50, 1000]",
        ),
        (
            NsgParams {
                candidate_pool_size: 1001,
                ..ok
            },
            "Invalid candidate_pool_size value: 1001. Valid range is [50, 1000]",
        ),
        (
            NsgParams { knng: 4, ..ok },
            "Invalid knng value: 4. Valid range is [5, 300]",
        ),
        (
            NsgParams { knng: 301, ..ok },
            "Invalid knng value: 301. Valid range is [5, 300]",
        ),
    ];
    for (p, msg) in cases {
        let e = Nsg::build(&data, &ids, 4, Metric::L2, &p).expect_err("refused");
        assert!(matches!(e, NsgError::Param { .. }));
        assert_eq!(e.to_string(), msg);
    }
    let low = NsgParams {
        search_length: 10,
        out_degree: 5,
        candidate_pool_size: 50,
        knng: 5,
        seed: 0,
    };
    let high = NsgParams {
        search_length: 300,
        out_degree: 300,
        candidate_pool_size: 1000,
        knng: 300,
        seed: u64::MAX,
    };
    for p in [low, high] {
        // Parameters above the row count are clamped, not refused.
        let index = Nsg::build(&data, &ids, 4, Metric::L2, &p).expect("boundary accepted");
        assert_graph_sound(&index);
    }
}

#[test]
fn nsg_refuses_search_length_out_of_range() {
    let mut rng = Rng::new(3);
    let data = rng.normals(50 * 4);
    let index = Nsg::build(&data, &seq_ids(50), 4, Metric::L2, &params(10, 8, 8)).expect("ok");
    let q = &data[..4];
    for bad in [0, 9, 301] {
        let e = index.search(q, 10, &sl(bad), None).expect_err("refused");
        assert_eq!(
            e.to_string(),
            format!("Invalid search_length value: {bad}. Valid range is [10, 300]")
        );
    }
    // Milvus does not tie search_length to topk: a k above it is answered in full.
    let got = index.search(q, 40, &sl(10), None).expect("ok");
    assert!(got.ids.iter().all(|&id| id != -1));
    // Refused on an empty index too: the parameter is wrong whatever the data.
    let empty = Nsg::build(&[], &[], 4, Metric::L2, &params(10, 8, 8)).expect("valid");
    assert!(empty.search(q, 10, &sl(5), None).is_err());
}

#[test]
fn nsg_empty_index_tiny_segments_and_k_beyond_rows() {
    let dim = 6;
    let mut rng = Rng::new(4);
    let queries = rng.normals(3 * dim);
    for metric in [Metric::L2, Metric::Ip] {
        let empty = Nsg::build(&[], &[], dim, metric, &params(45, 50, 100)).expect("valid");
        assert!(empty.is_empty());
        assert_eq!(empty.navigating_node(), None);
        assert_eq!(
            empty.search(&queries, 4, &sl(16), None).expect("ok"),
            TopK::empty(3, 4, metric)
        );
        for rows in [1usize, 2, 7] {
            // Fewer rows than k (and than search_length, out_degree, knng): every row, exactly
            // ranked, then padding.
            let data = rng.normals(rows * dim);
            let ids = seq_ids(rows);
            let small = Nsg::build(&data, &ids, dim, metric, &params(45, 50, 100)).expect("ok");
            assert_graph_sound(&small);
            let got = small.search(&queries, 10, &sl(10), None).expect("ok");
            check(&got, metric, &queries, &data, &ids, dim, 10, None);
        }
        let data = rng.normals(7 * dim);
        let small = Nsg::build(&data, &seq_ids(7), dim, metric, &params(10, 5, 5)).expect("ok");
        // k = 0 and no queries.
        assert_eq!(
            small.search(&queries, 0, &sl(10), None).expect("ok"),
            TopK::empty(3, 0, metric)
        );
        assert_eq!(
            small.search(&[], 3, &sl(10), None).expect("ok"),
            TopK::empty(0, 3, metric)
        );
        // Rows come from min(data.len() / dim, ids.len()).
        let short_ids = Nsg::build(&data, &seq_ids(4), dim, metric, &params(10, 5, 5)).expect("ok");
        assert_eq!(short_ids.len(), 4);
    }
}

#[test]
fn nsg_equal_distances_rank_by_smaller_id() {
    let mut rng = Rng::new(9);
    let dim = 4;
    let v = rng.normals(dim);
    // 6 copies of one vector, ids falling with the row, then 10 short vectors, far from it in L2
    // and with a small inner product.
    let mut data: Vec<f32> = v.repeat(6);
    data.extend(rng.normals(10 * dim).iter().map(|x| x * 0.01));
    let ids: Vec<i64> = (0..16).map(|r| 1000 - r).collect();
    for metric in [Metric::L2, Metric::Ip] {
        let index = Nsg::build(&data, &ids, dim, metric, &params(10, 5, 5)).expect("valid");
        let got = index.search(&v, 3, &sl(16), None).expect("ok");
        let want_d = got.distances[0];
        assert!(got.distances.iter().all(|&d| d == want_d), "{got:?}");
        assert_eq!(got.ids, vec![995, 996, 997], "{metric:?}");
    }
}

#[test]
fn nsg_single_queries_match_the_batch() {
    let mut rng = Rng::new(2);
    let (rows, dim) = (800, 12);
    let data = clustered(&mut rng, rows, dim, 15, 0.5);
    let ids = seq_ids(rows);
    let queries = rng.normals(20 * dim);
    let index = Nsg::build(&data, &ids, dim, Metric::L2, &params(30, 16, 20)).expect("ok");
    let batch = index.search(&queries, 7, &sl(30), None).expect("ok");
    for (q, one) in queries.chunks_exact(dim).enumerate() {
        let single = index.search(one, 7, &sl(30), None).expect("ok");
        assert_eq!(single.ids, batch.row_ids(q));
        assert_eq!(single.distances, batch.row_distances(q));
    }
}

#[test]
fn nsg_build_is_deterministic_across_thread_counts() {
    let mut rng = Rng::new(6);
    let (rows, dim) = (2000, 8);
    let data = clustered(&mut rng, rows, dim, 20, 0.5);
    let ids = seq_ids(rows);
    let build = || Nsg::build(&data, &ids, dim, Metric::L2, &params(30, 16, 20)).expect("ok");
    let a = build();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let b = one_thread.install(build);
    assert_eq!(a, b);
    assert_graph_sound(&a);
    let queries = &data[..20 * dim];
    assert_eq!(
        a.search(queries, 5, &sl(20), None).expect("ok"),
        one_thread
            .install(|| b.search(queries, 5, &sl(20), None))
            .expect("ok")
    );
    // The navigating node is the row nearest the centroid.
    let centroid: Vec<f32> = (0..dim)
        .map(|d| (0..rows).map(|r| data[r * dim + d] as f64).sum::<f64>() as f32 / rows as f32)
        .collect();
    let nearest = (0..rows)
        .min_by(|&x, &y| {
            let dx = exact(Metric::L2, &centroid, &data[x * dim..(x + 1) * dim]);
            let dy = exact(Metric::L2, &centroid, &data[y * dim..(y + 1) * dim]);
            dx.total_cmp(&dy)
        })
        .expect("rows");
    assert_eq!(a.navigating_node(), Some(nearest as u32));
    // Pruning keeps the graph sparse: the mean degree stays well under out_degree.
    assert!(a.link_count() < rows * 16, "{} links", a.link_count());
}

/// Far-apart tight clusters: the kNN graph never leaves a cluster, so the pruned graph starts out
/// disconnected and the repair has to link every cluster in.
#[test]
fn nsg_repair_links_disconnected_clusters() {
    let mut rng = Rng::new(21);
    let (rows, dim) = (600, 8);
    let centres: Vec<f32> = rng.normals(12 * dim).iter().map(|x| x * 100.0).collect();
    let mut data = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let c = r % 12;
        for d in 0..dim {
            data.push(centres[c * dim + d] + 0.01 * rng.normal());
        }
    }
    let ids = seq_ids(rows);
    let index = Nsg::build(&data, &ids, dim, Metric::L2, &params(10, 5, 5)).expect("ok");
    assert_graph_sound(&index);
    // Queries at each centre find their own cluster.
    let got = index.search(&centres, 5, &sl(20), None).expect("ok");
    for (q, row) in got.ids.chunks(5).enumerate() {
        assert!(
            row.iter().all(|&id| row_of(id) % 12 == q),
            "centre {q}: {row:?}"
        );
    }
}

fn small_index(metric: Metric) -> (Nsg, Vec<f32>) {
    let mut rng = Rng::new(10);
    let (rows, dim) = (200, 5);
    let data = clustered(&mut rng, rows, dim, 10, 0.5);
    let index = Nsg::build(&data, &seq_ids(rows), dim, metric, &params(20, 8, 10)).expect("ok");
    (index, rng.normals(6 * dim))
}

fn to_bytes(index: &Nsg) -> Vec<u8> {
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write to a Vec");
    bytes
}

#[test]
fn nsg_serialize_round_trip_gives_identical_results() {
    let mut rng = Rng::new(11);
    let (rows, dim) = (800, 12);
    let data = clustered(&mut rng, rows, dim, 15, 0.5);
    let ids = seq_ids(rows);
    let queries = rng.normals(10 * dim);
    let mut deleted = RowBitmap::new(rows);
    (0..rows).step_by(5).for_each(|r| deleted.set(r));
    for metric in [Metric::L2, Metric::Ip] {
        let index = Nsg::build(&data, &ids, dim, metric, &params(30, 16, 20)).expect("ok");
        let bytes = to_bytes(&index);
        let back = Nsg::read_from(&mut bytes.as_slice()).expect("read back");
        assert_eq!(back, index);
        assert_eq!(to_bytes(&back), bytes);
        assert_eq!(back.params(), index.params());
        for del in [None, Some(&deleted)] {
            assert_eq!(
                back.search(&queries, 7, &sl(30), del).expect("ok"),
                index.search(&queries, 7, &sl(30), del).expect("ok")
            );
        }
        // The cache budget counts at least the vectors, ids and links.
        assert!(index.memory_bytes() >= rows * (dim * 4 + 8) + index.link_count() * 4);
    }
    let empty = Nsg::build(&[], &[], dim, Metric::L2, &params(10, 5, 5)).expect("ok");
    let back = Nsg::read_from(&mut to_bytes(&empty).as_slice()).expect("empty round trip");
    assert_eq!(back, empty);
}

/// The layout the format module documents, encoded by hand.
#[test]
fn nsg_serialized_form_is_the_documented_layout() {
    let (index, _) = small_index(Metric::Ip);
    let mut want = b"MSNSG\0\0\0".to_vec();
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(&(index.dim as u64).to_le_bytes());
    want.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for v in [20u32, 8, 100, 10] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    want.extend_from_slice(&7u64.to_le_bytes());
    want.extend_from_slice(&index.nav.expect("rows").to_le_bytes());
    want.extend_from_slice(&(index.links.len() as u64).to_le_bytes());
    index
        .ids
        .iter()
        .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
    index
        .vectors
        .iter()
        .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
    for r in 0..index.len() as u32 {
        want.extend_from_slice(&(index.links(r).len() as u32).to_le_bytes());
    }
    index
        .links
        .iter()
        .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
    let crc = crc32fast::hash(&want);
    want.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(to_bytes(&index), want);
}

#[test]
fn nsg_truncated_or_corrupt_input_is_an_error() {
    let (index, _) = small_index(Metric::L2);
    let bytes = to_bytes(&index);
    for cut in 0..bytes.len() {
        assert!(
            Nsg::read_from(&mut &bytes[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5A;
        assert!(
            Nsg::read_from(&mut bad.as_slice()).is_err(),
            "corruption at byte {at} accepted"
        );
    }
    let mut v2 = bytes.clone();
    v2[8] = 2;
    let e = Nsg::read_from(&mut v2.as_slice()).expect_err("version 2");
    assert!(e.to_string().contains("version 2"), "{e}");
    let e = Nsg::read_from(&mut &b"not an index at all!"[..]).expect_err("magic");
    assert!(e.to_string().contains("bad magic"), "{e}");
}

/// Damage behind a valid checksum (as a buggy writer would produce) is still caught by the
/// structural checks, and a huge claimed size fails on the missing bytes, before anything that
/// size is allocated.
#[test]
fn nsg_inconsistent_body_with_valid_checksum_is_an_error() {
    let (index, _) = small_index(Metric::L2);
    let bytes = to_bytes(&index);
    let body = bytes[..bytes.len() - 4].to_vec();
    let reseal = |mut b: Vec<u8>| {
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Nsg::read_from(&mut b.as_slice())
    };
    assert_eq!(reseal(body.clone()).expect("intact"), index);
    // Offsets: magic 0, version 8, metric 12, dim 16, rows 24, search_length 32, out_degree 36,
    // candidate_pool_size 40, knng 44, seed 48, navigating row 56, links 60, ids 68.
    let patch = |at: usize, v: &[u8]| {
        let mut b = body.clone();
        b[at..at + v.len()].copy_from_slice(v);
        reseal(b)
    };
    for (at, v) in [
        (12usize, 9u32.to_le_bytes().to_vec()),
        (16, 0u64.to_le_bytes().to_vec()),
        (16, u64::MAX.to_le_bytes().to_vec()),
        (24, (1u64 << 40).to_le_bytes().to_vec()),
        (24, u64::MAX.to_le_bytes().to_vec()),
        (24, 0u64.to_le_bytes().to_vec()),
        (32, 9u32.to_le_bytes().to_vec()),
        (36, 301u32.to_le_bytes().to_vec()),
        (40, 49u32.to_le_bytes().to_vec()),
        (44, 4u32.to_le_bytes().to_vec()),
        (56, 200u32.to_le_bytes().to_vec()),
        (56, u32::MAX.to_le_bytes().to_vec()),
        (60, (index.links.len() as u64 + 1).to_le_bytes().to_vec()),
        (60, u64::MAX.to_le_bytes().to_vec()),
    ] {
        assert!(patch(at, &v).is_err(), "patch at {at} accepted");
    }
    let rows = index.len();
    let degrees_at = 68 + rows * 8 + rows * index.dim * 4;
    let links_at = degrees_at + rows * 4;
    // A degree one too high (the sum no longer matches), and a link past the last row.
    let d0 = u32::from_le_bytes(body[degrees_at..degrees_at + 4].try_into().expect("4"));
    assert!(patch(degrees_at, &(d0 + 1).to_le_bytes()).is_err());
    let e = patch(links_at, &(rows as u32).to_le_bytes()).expect_err("bad link");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("link to row"), "{e}");
    // A header claiming an enormous index fails on the missing bytes, without allocating it.
    let mut huge = body[..68].to_vec();
    huge[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
    huge[24..32].copy_from_slice(&((1u64 << 32) - 2).to_le_bytes());
    let e = Nsg::read_from(&mut huge.as_slice()).expect_err("huge header");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}
