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
