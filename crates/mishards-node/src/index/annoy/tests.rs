use std::io;

use super::*;
use crate::index::flat::search_flat_with;
use crate::index::testutil::{Rng, check, clustered, exact, recall, seq_ids};

fn params(n_trees: usize) -> AnnoyParams {
    AnnoyParams { n_trees, seed: 7 }
}

fn sk(search_k: i64) -> AnnoySearch {
    AnnoySearch { search_k }
}

fn row_of(id: i64) -> usize {
    ((id - 1) / 10) as usize
}

fn flat(
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

/// Recall@10 against the exact search on clustered data; every hit carries its true Milvus
/// distance, in Milvus order; a search_k covering every tree entirely is the exact answer, bit
/// for bit.
fn recall_on_clustered_data(metric: Metric) {
    let mut rng = Rng::new(42);
    let (rows, dim, nq) = (2000, 32, 50);
    let all = clustered(&mut rng, rows + nq, dim, 40, 0.4);
    let (data, queries) = all.split_at(rows * dim);
    let ids = seq_ids(rows);
    let index = Annoy::build(data, &ids, dim, metric, &params(16)).expect("valid params");
    assert_eq!(
        (index.len(), index.dim(), index.metric(), index.n_trees()),
        (rows, dim, metric, 16)
    );
    let want = flat(queries, data, &ids, dim, 10, metric, None);
    let got = index.search(queries, 10, &sk(1000), None).expect("ok");
    let r = recall(&got, &want);
    assert!(
        r >= 0.9,
        "{metric:?}: recall@10 {r} at 16 trees, search_k 1000"
    );
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
    // The default (-1) gathers max(k · n_trees, 5% of rows) = 160 rows: a fair share.
    let default = index.search(queries, 10, &sk(-1), None).expect("ok");
    assert!(recall(&default, &want) >= 0.5, "{metric:?} default");
    // More candidates never hurt, and all of them is FLAT exactly.
    let wide = index.search(queries, 10, &sk(4000), None).expect("ok");
    assert!(recall(&wide, &want) >= r);
    let all = index
        .search(queries, 10, &sk((rows * 16) as i64), None)
        .expect("ok");
    assert_eq!(all, want, "{metric:?}: exhaustive search_k");
}

#[test]
fn annoy_l2_recall_on_clustered_data() {
    recall_on_clustered_data(Metric::L2);
}

#[test]
fn annoy_ip_recall_on_clustered_data() {
    recall_on_clustered_data(Metric::Ip);
}

/// Each tree covers every row exactly once, leaves hold at most `dim + 2` rows, and splits are
/// numbered below their parents (the invariant `read_from` relies on).
#[test]
fn annoy_trees_partition_the_rows() {
    let mut rng = Rng::new(5);
    let (rows, dim) = (1200, 6);
    let data = clustered(&mut rng, rows, dim, 10, 0.3);
    for metric in [Metric::L2, Metric::Ip] {
        let index = Annoy::build(&data, &seq_ids(rows), dim, metric, &params(5)).expect("ok");
        let f = &index.forest;
        assert_eq!(f.roots.len(), 5);
        for l in 0..f.leaves() {
            assert!((1..=dim + 2).contains(&f.leaf(l).len()), "leaf {l}");
        }
        for &root in &f.roots {
            let mut count = vec![0u32; rows];
            let mut stack = vec![(root, usize::MAX)];
            while let Some((node, parent)) = stack.pop() {
                if node & LEAF != 0 {
                    f.leaf((node & !LEAF) as usize)
                        .iter()
                        .for_each(|&r| count[r as usize] += 1);
                } else {
                    assert!((node as usize) < parent);
                    let [a, b] = f.children[node as usize];
                    stack.push((a, node as usize));
                    stack.push((b, node as usize));
                }
            }
            assert!(count.iter().all(|&c| c == 1), "{metric:?}");
        }
        format::check_shape(f).expect("a built forest passes the load checks");
    }
}

#[test]
fn annoy_never_returns_deleted_rows() {
    let mut rng = Rng::new(8);
    let (rows, dim) = (1500, 16);
    let data = clustered(&mut rng, rows, dim, 30, 0.3);
    let ids = seq_ids(rows);
    let queries = data[..8 * dim].to_vec();
    for metric in [Metric::L2, Metric::Ip] {
        let index = Annoy::build(&data, &ids, dim, metric, &params(8)).expect("valid");
        // Each query's 20 exact neighbours (itself included) plus every third row go.
        let near = flat(&queries, &data, &ids, dim, 20, metric, None);
        let mut deleted = RowBitmap::new(rows);
        for &id in &near.ids {
            deleted.set(row_of(id));
        }
        for r in (0..rows).step_by(3) {
            deleted.set(r);
        }
        let got = index
            .search(&queries, 10, &sk(400), Some(&deleted))
            .expect("ok");
        for &id in &got.ids {
            assert!(id != -1 && !deleted.contains(row_of(id)), "deleted {id}");
        }
        let want = flat(&queries, &data, &ids, dim, 10, metric, Some(&deleted));
        let r = recall(&got, &want);
        assert!(r >= 0.8, "{metric:?} recall with deletions {r}");
        // Dense deletes (all but 15 rows): still k live hits, the exact ones.
        let mut dense = RowBitmap::new(rows);
        (0..rows)
            .filter(|r| r % 100 != 7)
            .for_each(|r| dense.set(r));
        let got = index
            .search(&queries, 10, &sk(10), Some(&dense))
            .expect("ok");
        let want = flat(&queries, &data, &ids, dim, 10, metric, Some(&dense));
        assert!(got.ids.iter().all(|&id| id != -1 && row_of(id) % 100 == 7));
        assert!(recall(&got, &want) >= 0.6, "{metric:?} dense deletes");
        // Everything deleted: only padding.
        let mut all = RowBitmap::new(rows);
        (0..rows).for_each(|r| all.set(r));
        let none = index.search(&queries, 5, &sk(-1), Some(&all)).expect("ok");
        assert_eq!(none, TopK::empty(8, 5, metric));
    }
}

#[test]
fn annoy_refuses_params_out_of_range() {
    let data = vec![0.5f32; 40];
    let ids = seq_ids(10);
    for n in [0, 1025, 5000] {
        let e = Annoy::build(&data, &ids, 4, Metric::L2, &params(n)).expect_err("refused");
        assert!(matches!(e, AnnoyError::NTrees(x) if x == n), "{e}");
        assert_eq!(
            e.to_string(),
            format!("Invalid n_trees value: {n}. Valid range is [1, 1024]")
        );
    }
    for n in [1, 1024] {
        Annoy::build(&data, &ids, 4, Metric::L2, &params(n)).expect("boundary accepted");
    }
    let index = Annoy::build(&data, &ids, 4, Metric::L2, &params(2)).expect("ok");
    let q = &data[..4];
    for bad in [-2, 0, 9, i64::MIN] {
        let e = index
            .search(q, 10, &sk(bad), None)
            .expect_err("search_k refused");
        assert!(matches!(e, AnnoyError::SearchK { search_k, k: 10 } if search_k == bad));
        assert!(e.to_string().contains("{-1} ∪ [top_k, n × n_trees]"), "{e}");
    }
    for good in [-1, 10, 11, i64::MAX] {
        index
            .search(q, 10, &sk(good), None)
            .expect("search_k accepted");
    }
    assert!(sk(0).validate(0).is_ok());
    // Refused on an empty index too: the parameter is wrong whatever the data.
    let empty = Annoy::build(&[], &[], 4, Metric::L2, &params(2)).expect("valid");
    assert!(empty.search(q, 10, &sk(5), None).is_err());
}

#[test]
fn annoy_empty_index_and_k_beyond_rows() {
    let dim = 6;
    let mut rng = Rng::new(4);
    let queries = rng.normals(3 * dim);
    for metric in [Metric::L2, Metric::Ip] {
        let empty = Annoy::build(&[], &[], dim, metric, &params(8)).expect("valid");
        assert!(empty.is_empty());
        assert_eq!(empty.n_trees(), 0);
        assert_eq!(
            empty.search(&queries, 4, &sk(-1), None).expect("ok"),
            TopK::empty(3, 4, metric)
        );
        let mut bytes = Vec::new();
        empty.write_to(&mut bytes).expect("write");
        assert_eq!(
            Annoy::read_from(&mut bytes.as_slice()).expect("read"),
            empty
        );
        // Fewer rows than k: every row, exactly ranked, then padding.
        let data = rng.normals(7 * dim);
        let ids = seq_ids(7);
        let small = Annoy::build(&data, &ids, dim, metric, &params(3)).expect("valid");
        let got = small.search(&queries, 10, &sk(10), None).expect("ok");
        check(&got, metric, &queries, &data, &ids, dim, 10, None);
        // k = 0 and no queries.
        assert_eq!(
            small.search(&queries, 0, &sk(-1), None).expect("ok"),
            TopK::empty(3, 0, metric)
        );
        assert_eq!(
            small.search(&[], 3, &sk(-1), None).expect("ok"),
            TopK::empty(0, 3, metric)
        );
    }
}

#[test]
fn annoy_equal_distances_rank_by_smaller_id() {
    let mut rng = Rng::new(9);
    let dim = 4;
    let v = rng.normals(dim);
    // 30 copies of one vector (more than a leaf holds, so the splits must deal duplicates out
    // at random), ids falling with the row, then short vectors far from it.
    let mut data: Vec<f32> = v.repeat(30);
    data.extend(rng.normals(40 * dim).iter().map(|x| x * 0.01));
    let ids: Vec<i64> = (0..70).map(|r| 1000 - r).collect();
    for metric in [Metric::L2, Metric::Ip] {
        let index = Annoy::build(&data, &ids, dim, metric, &params(4)).expect("valid");
        let got = index.search(&v, 3, &sk(280), None).expect("ok");
        let want_d = got.distances[0];
        assert!(got.distances.iter().all(|&d| d == want_d), "{got:?}");
        assert_eq!(got.ids, vec![971, 972, 973], "{metric:?}");
    }
}

#[test]
fn annoy_one_query_and_batches_agree() {
    let mut rng = Rng::new(12);
    let (rows, dim) = (1000, 10);
    let data = clustered(&mut rng, rows, dim, 20, 0.5);
    let ids = seq_ids(rows);
    let queries = rng.normals(9 * dim);
    for metric in [Metric::L2, Metric::Ip] {
        let index = Annoy::build(&data, &ids, dim, metric, &params(6)).expect("ok");
        let batch = index.search(&queries, 5, &sk(60), None).expect("ok");
        for (q, one) in queries.chunks(dim).enumerate() {
            let single = index.search(one, 5, &sk(60), None).expect("ok");
            assert_eq!(single.ids, batch.row_ids(q));
            assert_eq!(single.distances, batch.row_distances(q));
        }
    }
}

#[test]
fn annoy_build_is_deterministic_across_thread_counts() {
    let mut rng = Rng::new(6);
    let (rows, dim) = (2000, 8);
    let data = clustered(&mut rng, rows, dim, 20, 0.5);
    let ids = seq_ids(rows);
    for metric in [Metric::L2, Metric::Ip] {
        let build = || Annoy::build(&data, &ids, dim, metric, &params(6)).expect("valid");
        let a = build();
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        assert_eq!(a, one_thread.install(build));
        assert_eq!(a, three.install(build));
        let queries = &data[..20 * dim];
        assert_eq!(
            a.search(queries, 5, &sk(40), None).expect("ok"),
            one_thread
                .install(|| a.search(queries, 5, &sk(40), None))
                .expect("ok")
        );
        let other = Annoy::build(
            &data,
            &ids,
            dim,
            metric,
            &AnnoyParams {
                seed: 8,
                ..params(6)
            },
        )
        .expect("valid");
        assert_ne!(a.forest, other.forest);
    }
}

fn small_index(metric: Metric) -> (Annoy, Vec<f32>) {
    let mut rng = Rng::new(10);
    let (rows, dim) = (120, 3);
    let data = clustered(&mut rng, rows, dim, 6, 0.5);
    let index = Annoy::build(&data, &seq_ids(rows), dim, metric, &params(2)).expect("ok");
    (index, rng.normals(4 * dim))
}

fn to_bytes(index: &Annoy) -> Vec<u8> {
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write to a Vec");
    bytes
}

#[test]
fn annoy_serialize_round_trip_gives_identical_results() {
    let mut rng = Rng::new(11);
    let (rows, dim) = (800, 12);
    let data = clustered(&mut rng, rows, dim, 15, 0.5);
    let ids = seq_ids(rows);
    let queries = rng.normals(10 * dim);
    let mut deleted = RowBitmap::new(rows);
    (0..rows).step_by(5).for_each(|r| deleted.set(r));
    for metric in [Metric::L2, Metric::Ip] {
        let index = Annoy::build(&data, &ids, dim, metric, &params(4)).expect("ok");
        let bytes = to_bytes(&index);
        let back = Annoy::read_from(&mut bytes.as_slice()).expect("read back");
        assert_eq!(back, index);
        assert_eq!(to_bytes(&back), bytes);
        for del in [None, Some(&deleted)] {
            assert_eq!(
                back.search(&queries, 7, &sk(100), del).expect("ok"),
                index.search(&queries, 7, &sk(100), del).expect("ok")
            );
        }
        let held = index.memory_bytes();
        assert!(held >= rows * (dim * 4 + 8) + index.forest.leaf_rows.len() * 4);
        assert!(held < 2 * bytes.len() + 4096, "{held} vs {}", bytes.len());
    }
}

#[test]
fn annoy_truncated_or_corrupt_bytes_are_errors() {
    for metric in [Metric::L2, Metric::Ip] {
        let (index, _) = small_index(metric);
        let bytes = to_bytes(&index);
        for cut in 0..bytes.len() {
            let e = Annoy::read_from(&mut &bytes[..cut]).expect_err("truncated accepted");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}: {e}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5A;
            let e = Annoy::read_from(&mut bad.as_slice()).expect_err("corruption accepted");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "byte {at}: {e}"
            );
        }
        let mut v2 = bytes.clone();
        v2[8] = 2;
        let e = Annoy::read_from(&mut v2.as_slice()).expect_err("version 2");
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = Annoy::read_from(&mut &b"not an index at all!"[..]).expect_err("magic");
        assert!(e.to_string().contains("bad magic"), "{e}");
    }
}

/// Offsets of the header fields and arrays in a serialized index.
struct Layout {
    roots: usize,
    children: usize,
    leaf_rows: usize,
    end: usize,
}

fn layout(index: &Annoy) -> Layout {
    let f = &index.forest;
    let roots = 8 + 4 + 4 + 8 * 8 + index.len() * (8 + 4 * index.dim());
    let children = roots + 4 * f.roots.len() + 4 * f.planes.len();
    let leaf_rows = children + 8 * f.splits() + 4 * f.leaves();
    Layout {
        roots,
        children,
        leaf_rows,
        end: leaf_rows + 4 * f.leaf_rows.len(),
    }
}

/// Damage behind a valid checksum (as a buggy writer would produce) is still caught by the
/// structural checks, and a huge claimed size fails before anything that size is allocated.
#[test]
fn annoy_inconsistent_body_with_valid_checksum_is_an_error() {
    let (index, _) = small_index(Metric::L2);
    let bytes = to_bytes(&index);
    let at = layout(&index);
    assert_eq!(at.end + 4, bytes.len());
    let reseal = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut body = bytes[..bytes.len() - 4].to_vec();
        edit(&mut body);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        Annoy::read_from(&mut body.as_slice())
    };
    assert_eq!(reseal(&|_| {}).expect("intact"), index);
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let f = &index.forest;
    assert!(f.splits() >= 2, "the test needs a few splits");
    let top = f.roots[0] as usize;
    type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Edit)> = vec![
        // A root pointing at a split that is also some split's child: used twice.
        ("twice", Box::new(|b| put(b, at.roots, 0))),
        // A child pointing up at its own parent: a loop.
        (
            "loop",
            Box::new(move |b| put(b, at.children + 8 * top, top as u32)),
        ),
        // A leaf out of range.
        ("range", Box::new(|b| put(b, at.roots, LEAF | 0x7FFF))),
        // A leaf row past the last row.
        ("row", Box::new(|b| put(b, at.leaf_rows, 120))),
    ];
    for (what, edit) in cases {
        let e = reseal(&*edit).expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
    }
    // A header claiming an enormous index fails on the missing bytes, without allocating it.
    let mut huge = bytes[..16].to_vec();
    for v in [128u64, 1 << 30, 4, 7, 4, 1 << 30, 1 << 30, 1 << 34] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    let e = Annoy::read_from(&mut huge.as_slice()).expect_err("huge header");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    let mut overflow = bytes[..16].to_vec();
    for v in [u64::MAX, u64::MAX, 4, 7, 4, 1, 1, 1] {
        overflow.extend_from_slice(&v.to_le_bytes());
    }
    assert!(Annoy::read_from(&mut overflow.as_slice()).is_err());
}
