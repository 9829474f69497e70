//! Every index type of Milvus 1.1 through the gateway with two read nodes: CreateIndex, search recall
//! against brute force on clustered data, deletes, compaction, DescribeIndex, stats and DropIndex,
//! for L2 and IP; and binary collections with every binary metric, exact against a brute force here.

mod common;

use common::{
    Client, SplitMix64, TestCluster, brute_force, code, collection, create_collection, flush,
    index_param, insert, schema, search_in,
};
use mishards::proto;

/// One index type as a test drives it.
struct IndexCase {
    /// Milvus's index type code.
    index_type: i32,
    build: &'static str,
    search: &'static str,
    /// The segment index name `get_collection_stats` reports.
    stats_name: &'static str,
    /// Lowest recall@10 accepted on this data with these params.
    min_recall: f64,
}

const DIM: usize = 16;
const K: usize = 10;
/// Rows a file: above the node's 4,096-row build threshold, so CreateIndex indexes each file.
const FILE_ROWS: usize = 4200;

/// Points around 40 fixed centres (centre ~ U(-1, 1), noise ±0.15): clustered, as real embeddings
/// are; queries come from the same distribution as the data.
struct Clusters {
    rng: SplitMix64,
    centres: Vec<Vec<f32>>,
}

impl Clusters {
    fn new(seed: u64) -> Clusters {
        let mut rng = SplitMix64::new(seed);
        let centres = (0..40)
            .map(|_| {
                (0..DIM)
                    .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
                    .collect()
            })
            .collect();
        Clusters { rng, centres }
    }

    fn points(&mut self, n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let c = &self.centres[(self.rng.next_u64() % 40) as usize];
                c.iter()
                    .map(|x| x + (self.rng.next_f64() as f32 - 0.5) * 0.3)
                    .collect()
            })
            .collect()
    }
}

async fn ok_status(st: proto::Status) {
    assert_eq!(st.error_code, 0, "{st:?}");
}

async fn stats(c: &mut Client, name: &str) -> String {
    let info = c
        .show_collection_info(collection(name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&info.status), 0, "{:?}", info.status);
    info.json_info
}

/// Recall@K of `result` against brute force over `data`.
fn recall(
    result: &proto::TopKQueryResult,
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
    ip: bool,
) -> f64 {
    assert_eq!(code(&result.status), 0, "{:?}", result.status);
    assert_eq!(result.row_num as usize, queries.len());
    let mut hits = 0;
    for (q, query) in queries.iter().enumerate() {
        let truth: Vec<i64> = brute_force(data, query, K, ip)
            .into_iter()
            .map(|e| e.0)
            .collect();
        hits += result.ids[q * K..(q + 1) * K]
            .iter()
            .filter(|id| truth.contains(id))
            .count();
    }
    hits as f64 / (queries.len() * K) as f64
}

/// The whole life of one index type on a collection of `metric` (1 L2, 2 IP).
async fn index_lifecycle(c: &mut Client, case: &IndexCase, metric: i32, seed: u64) {
    let name = format!("idx_{}_{metric}", case.index_type);
    let ip = metric == 2;
    create_collection(c, schema(&name, DIM as i64, 1024, metric)).await;
    let mut clusters = Clusters::new(seed);
    let mut data = Vec::new();
    // Two indexed files (one a read node each, most likely) and a small raw one searched exactly.
    for rows in [FILE_ROWS, FILE_ROWS, 300] {
        let vectors = clusters.points(rows);
        let ids = insert(c, &name, "", &vectors, Vec::new())
            .await
            .vector_id_array;
        assert_eq!(ids.len(), rows);
        data.extend(ids.into_iter().zip(vectors));
        flush(c, &[&name]).await;
    }
    let queries = clusters.points(20);

    let st = c
        .create_index(index_param(&name, case.index_type, case.build))
        .await
        .unwrap()
        .into_inner();
    ok_status(st).await;
    let described = c
        .describe_index(collection(&name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&described.status), 0, "{:?}", described.status);
    assert_eq!(described.index_type, case.index_type);
    let given: serde_json::Value = serde_json::from_str(case.build).unwrap();
    let answered: serde_json::Value =
        serde_json::from_str(&described.extra_params[0].value).unwrap();
    assert_eq!(answered, given, "DescribeIndex answers the params as given");
    let info = stats(c, &name).await;
    assert!(info.contains(case.stats_name), "{info}");

    let result = search_in(c, &name, &[], &queries, K as i64, case.search).await;
    let r = recall(&result, &data, &queries, ip);
    assert!(
        r >= case.min_recall,
        "index {} metric {metric}: recall@10 {r} below {}",
        case.index_type,
        case.min_recall
    );
    // Without its search param the index type's search is refused, naming the param.
    if case.search != "{}" {
        let bare = search_in(c, &name, &[], &queries, K as i64, "{}").await;
        assert_eq!(
            code(&bare.status),
            proto::ErrorCode::IllegalArgument as i32,
            "{:?}",
            bare.status
        );
    }

    // Deleted rows never come back, from an index or a raw file.
    let nearest: Vec<i64> = result.ids[..K]
        .iter()
        .copied()
        .filter(|id| *id >= 0)
        .collect();
    let st = c
        .delete_by_id(proto::DeleteByIdParam {
            collection_name: name.clone(),
            partition_tag: String::new(),
            id_array: nearest.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    ok_status(st).await;
    flush(c, &[&name]).await;
    data.retain(|(id, _)| !nearest.contains(id));
    let after = search_in(c, &name, &[], &queries, K as i64, case.search).await;
    assert!(after.ids.iter().all(|id| !nearest.contains(id)));
    assert!(recall(&after, &data, &queries, ip) >= case.min_recall - 0.05);

    // Compaction rewrites the segments and keeps them indexed.
    ok_status(c.compact(collection(&name)).await.unwrap().into_inner()).await;
    let count = c
        .count_collection(collection(&name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.collection_row_count as usize, data.len());
    assert!(stats(c, &name).await.contains(case.stats_name));

    // DropIndex goes back to exact search.
    ok_status(c.drop_index(collection(&name)).await.unwrap().into_inner()).await;
    let info = stats(c, &name).await;
    assert!(
        !info.contains(case.stats_name) || case.stats_name == "IDMAP",
        "{info}"
    );
    let exact = search_in(c, &name, &[], &queries, K as i64, "{}").await;
    assert_eq!(recall(&exact, &data, &queries, ip), 1.0);
}

async fn lifecycle_on_l2_and_ip(case: IndexCase) {
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    index_lifecycle(&mut c, &case, 1, 7).await;
    index_lifecycle(&mut c, &case, 2, 8).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_flat() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 2,
        build: r#"{"nlist": 64}"#,
        search: r#"{"nprobe": 16}"#,
        stats_name: "IVFFLAT",
        min_recall: 0.9,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 11,
        build: r#"{"M": 16, "efConstruction": 100}"#,
        search: r#"{"ef": 64}"#,
        stats_name: "HNSW",
        min_recall: 0.9,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_sq8() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 3,
        build: r#"{"nlist": 64}"#,
        search: r#"{"nprobe": 16}"#,
        stats_name: "IVFSQ8",
        min_recall: 0.85,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_pq() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 6,
        build: r#"{"nlist": 64, "m": 8}"#,
        search: r#"{"nprobe": 16}"#,
        stats_name: "\"PQ\"",
        min_recall: 0.5,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annoy() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 12,
        build: r#"{"n_trees": 8}"#,
        search: r#"{"search_k": 2000}"#,
        stats_name: "ANNOY",
        min_recall: 0.8,
    })
    .await;
}

/// A Milvus binary metric's distance between two packed bit vectors, written plainly; `None` where
/// the row does not match (SUBSTRUCTURE: the query's bits all in the row; SUPERSTRUCTURE: the row's
/// bits all in the query).
fn binary_distance(metric: i32, q: &[u8], x: &[u8]) -> Option<f32> {
    let ones = |f: &dyn Fn(u8, u8) -> u8| -> u32 {
        q.iter().zip(x).map(|(a, b)| f(*a, *b).count_ones()).sum()
    };
    let and = ones(&|a, b| a & b);
    let or = ones(&|a, b| a | b);
    // Milvus 1.1 (its faiss fork) answers 1.0 when no bit is shared, including 0/0.
    let jaccard = || {
        if and == 0 {
            1.0
        } else {
            1.0 - and as f32 / or as f32
        }
    };
    match metric {
        3 => Some(ones(&|a, b| a ^ b) as f32),
        4 => Some(jaccard()),
        5 => Some(-((1.0 - jaccard()) as f64).log2() as f32),
        6 => (and == ones(&|a, _| a)).then_some(0.0),
        7 => (and == ones(&|_, b| b)).then_some(0.0),
        _ => unreachable!("not a binary metric"),
    }
}

/// Equal distances, infinite ones included (TANIMOTO of rows sharing no bit).
fn close(a: f32, b: f32) -> bool {
    a == b || (a - b).abs() < 1e-5
}

fn binary_rows(rows: &[Vec<u8>]) -> Vec<proto::RowRecord> {
    rows.iter()
        .map(|r| proto::RowRecord {
            float_data: Vec::new(),
            binary_data: r.clone(),
        })
        .collect()
}

/// Checks a binary search against the brute force: each row's distances are the best `K` (padded
/// with -1 where fewer rows match), and every id returned is at the distance reported.
fn assert_binary_exact(
    result: &proto::TopKQueryResult,
    data: &[(i64, Vec<u8>)],
    queries: &[Vec<u8>],
    metric: i32,
) {
    assert_eq!(code(&result.status), 0, "{:?}", result.status);
    for (q, query) in queries.iter().enumerate() {
        let mut truth: Vec<f32> = data
            .iter()
            .filter_map(|(_, x)| binary_distance(metric, query, x))
            .collect();
        truth.sort_by(f32::total_cmp);
        truth.truncate(K);
        let (ids, dists) = (
            &result.ids[q * K..(q + 1) * K],
            &result.distances[q * K..(q + 1) * K],
        );
        let hits = ids.iter().filter(|id| **id >= 0).count();
        assert_eq!(hits, truth.len(), "metric {metric} query {q}: {ids:?}");
        for (slot, (id, d)) in ids.iter().zip(dists).take(hits).enumerate() {
            assert!(
                close(*d, truth[slot]),
                "metric {metric} query {q} slot {slot}: {d} vs {}",
                truth[slot]
            );
            let x = &data.iter().find(|(i, _)| i == id).expect("a known id").1;
            let real = binary_distance(metric, query, x).expect("a matching row");
            assert!(close(real, *d), "id {id} reported at {d}, is at {real}");
        }
        assert!(ids[hits..].iter().all(|id| *id == -1));
    }
}

/// Every binary metric through the gateway: inserts of packed bits, exact search (FLAT), reads by id,
/// deletes; IVF_FLAT where Milvus 1.1 allows it, exact at nprobe = nlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_collections() {
    const BITS: usize = 128;
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(21);
    for metric in 3..=7 {
        let name = format!("bin_{metric}");
        create_collection(&mut c, schema(&name, BITS as i64, 1024, metric)).await;
        // Sparse rows, so SUBSTRUCTURE/SUPERSTRUCTURE find matches among random ones.
        let mut row = |density: u64| -> Vec<u8> {
            (0..BITS / 8)
                .map(|_| {
                    (0..8).fold(0u8, |b, bit| {
                        b | (((rng.next_u64() % 100 < density) as u8) << bit)
                    })
                })
                .collect()
        };
        let mut data: Vec<(i64, Vec<u8>)> = Vec::new();
        // A file above the build threshold and a small one.
        for (first_id, n) in [(0, FILE_ROWS), (FILE_ROWS, 300)] {
            let rows: Vec<Vec<u8>> = (0..n)
                .map(|i| row(if i % 2 == 0 { 10 } else { 60 }))
                .collect();
            let ids: Vec<i64> = (0..n).map(|i| (first_id + i) as i64).collect();
            let reply = c
                .insert(proto::InsertParam {
                    collection_name: name.clone(),
                    row_record_array: binary_rows(&rows),
                    row_id_array: ids.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(code(&reply.status), 0, "{:?}", reply.status);
            data.extend(ids.into_iter().zip(rows));
            flush(&mut c, &[&name]).await;
        }
        let queries: Vec<Vec<u8>> = (0..8)
            .map(|i| row(if i % 2 == 0 { 5 } else { 70 }))
            .collect();
        let search = |c: &mut Client, extra: &'static str| {
            let param = proto::SearchParam {
                collection_name: name.clone(),
                query_record_array: binary_rows(&queries),
                topk: K as i64,
                extra_params: common::params(extra),
                ..Default::default()
            };
            let mut c = c.clone();
            async move { c.search(param).await.unwrap().into_inner() }
        };
        assert_binary_exact(&search(&mut c, "{}").await, &data, &queries, metric);

        // Reads by id answer the bytes inserted; float queries are refused.
        let got = c
            .get_vectors_by_id(proto::VectorsIdentity {
                collection_name: name.clone(),
                id_array: vec![7, 2000],
                partition_tag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.vectors_data[0].binary_data, data[7].1);
        assert_eq!(got.vectors_data[1].binary_data, data[2000].1);
        let float = search_in(&mut c, &name, &[], &[vec![0.5; BITS]], K as i64, "{}").await;
        assert_eq!(
            code(&float.status),
            proto::ErrorCode::IllegalRowrecord as i32
        );

        // Deleted rows never come back.
        // The best hits of every query (a SUBSTRUCTURE query may match nothing).
        let mut first: Vec<i64> = search(&mut c, "{}")
            .await
            .ids
            .chunks(K)
            .flat_map(|row| row.iter().take(2))
            .copied()
            .filter(|id| *id >= 0)
            .collect();
        first.sort_unstable();
        first.dedup();
        assert!(
            !first.is_empty(),
            "metric {metric}: no query matched anything"
        );
        let st = c
            .delete_by_id(proto::DeleteByIdParam {
                collection_name: name.clone(),
                partition_tag: String::new(),
                id_array: first.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        ok_status(st).await;
        flush(&mut c, &[&name]).await;
        data.retain(|(id, _)| !first.contains(id));
        assert_binary_exact(&search(&mut c, "{}").await, &data, &queries, metric);

        let ivf = c
            .create_index(index_param(&name, 2, r#"{"nlist": 16}"#))
            .await
            .unwrap()
            .into_inner();
        if metric >= 6 {
            assert_eq!(
                ivf.error_code,
                proto::ErrorCode::IllegalIndexType as i32,
                "{ivf:?}"
            );
            continue;
        }
        ok_status(ivf).await;
        let described = c
            .describe_index(collection(&name))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            described.index_type, 2,
            "BIN_IVF_FLAT is described as IVF_FLAT"
        );
        assert!(stats(&mut c, &name).await.contains("IVFFLAT"));
        assert_binary_exact(
            &search(&mut c, r#"{"nprobe": 16}"#).await,
            &data,
            &queries,
            metric,
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rnsg() {
    lifecycle_on_l2_and_ip(IndexCase {
        index_type: 4,
        build: r#"{"search_length": 45, "out_degree": 50, "candidate_pool_size": 300, "knng": 100}"#,
        search: r#"{"search_length": 100}"#,
        stats_name: "NSG",
        // faiss's NSG reaches 0.82 (L2) on data of this shape with these params.
        min_recall: 0.75,
    })
    .await;
}
