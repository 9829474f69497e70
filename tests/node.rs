//! The data node over gRPC, in process: every RPC's happy and error paths, exact results, roles sharing one
//! storage folder, merge and garbage collection, and write-ahead-log replay.
//!
//! Long (over 1,000 lines) on purpose: it is one test binary (`--test node`) that walks every RPC family
//! end to end; the requests it sends are built by `common::requests`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    Client, RandomVectors, SplitMix64, brute_force, client, cmd, code, collection,
    create_collection, create_index, create_partition, flush, insert, node_config, partition,
    schema, search_in, search_param,
};
use mishards::node::vectors::{Vectors, VectorsRef};
use mishards::proto::{self, ErrorCode};

fn ok(status: &Option<proto::Status>) {
    assert_eq!(code(status), 0, "{status:?}");
}

/// A collection with segments of up to 1 GB: these tests' files never reach it, so none is indexed
/// in the background unless a test means it.
async fn create(c: &mut Client, name: &str, dim: i64, metric: i32) {
    create_collection(c, schema(name, dim, 1024, metric)).await;
}

/// A node of `role` on `dir` with extra flags (see `node_config`); one that cannot start fails the test.
async fn start_node(
    role: &str,
    dir: &std::path::Path,
    extra: &[(&'static str, String)],
) -> mishards::node::RunningNode {
    mishards::node::start(&node_config(role, dir, extra))
        .await
        .unwrap()
}

/// A write node that flushes only when asked (auto-flush every hour) on a fresh folder, and a client of
/// it. Keep the folder until the end of the test (bind it to `_dir`, not `_`): dropping it deletes the
/// node's storage.
async fn writer_and_client() -> (tempfile::TempDir, mishards::node::RunningNode, Client) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node("rw", dir.path(), &[("auto-flush-interval", "3600".into())]).await;
    let c = client(node.addr).await;
    (dir, node, c)
}

/// Inserts `vectors` into the default partition with ids the node assigns; the (id, vector) rows
/// that `assert_exact` checks against.
async fn insert_rows(c: &mut Client, name: &str, vectors: &[Vec<f32>]) -> Vec<(i64, Vec<f32>)> {
    let ids = insert(c, name, "", vectors, Vec::new())
        .await
        .vector_id_array;
    assert_eq!(ids.len(), vectors.len(), "one id a row");
    ids.into_iter().zip(vectors.iter().cloned()).collect()
}

/// `DeleteByID` of `ids` in partition `tag` ("" for the whole collection); the status, whatever it is.
async fn delete_ids(c: &mut Client, name: &str, tag: &str, ids: Vec<i64>) -> proto::Status {
    c.delete_by_id(proto::DeleteByIdParam {
        collection_name: name.into(),
        partition_tag: tag.into(),
        id_array: ids,
    })
    .await
    .unwrap()
    .into_inner()
}

/// `ShowCollectionInfo`'s reply for `name`, whatever its status.
async fn collection_info(c: &mut Client, name: &str) -> proto::CollectionInfo {
    c.show_collection_info(collection(name))
        .await
        .unwrap()
        .into_inner()
}

async fn count(c: &mut Client, name: &str) -> i64 {
    let r = c
        .count_collection(collection(name))
        .await
        .unwrap()
        .into_inner();
    ok(&r.status);
    r.collection_row_count
}

/// Searches all of `name` with `extra` as the params JSON and checks the answer against brute force
/// (L2) over `data`.
async fn search_l2_exact(
    c: &mut Client,
    name: &str,
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
    k: usize,
    extra: &str,
) {
    let result = search_in(c, name, &[], queries, k as i64, extra).await;
    assert_exact(&result, data, queries, k, false);
}

/// Checks each result row against brute force: same ids in order, distances within a small tolerance.
fn assert_exact(
    result: &proto::TopKQueryResult,
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
    k: usize,
    ip: bool,
) {
    ok(&result.status);
    assert_eq!(result.row_num as usize, queries.len());
    for (q, query) in queries.iter().enumerate() {
        let expected = brute_force(data, query, k, ip);
        let ids = &result.ids[q * k..(q + 1) * k];
        let distances = &result.distances[q * k..(q + 1) * k];
        let expected_ids: Vec<i64> = expected
            .iter()
            .map(|e| e.0)
            .chain(std::iter::repeat(-1))
            .take(k)
            .collect();
        assert_eq!(ids, expected_ids.as_slice(), "query {q}");
        for (got, want) in distances.iter().zip(&expected) {
            assert!(
                (got - want.1).abs() <= 1e-3 * want.1.abs().max(1.0),
                "query {q}: {got} vs {}",
                want.1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_partitions_and_exact_search() {
    let (_dir, node, mut c) = writer_and_client().await;
    let mut rng = SplitMix64::new(7);

    create(&mut c, "vectors", 16, 1).await;
    let has = c
        .has_collection(collection("vectors"))
        .await
        .unwrap()
        .into_inner();
    assert!(has.bool_reply);
    let schema = c
        .describe_collection(collection("vectors"))
        .await
        .unwrap()
        .into_inner();
    ok(&schema.status);
    assert_eq!(
        (schema.dimension, schema.index_file_size, schema.metric_type),
        (16, 1024, 1)
    );

    create_partition(&mut c, "vectors", "2024-01").await;
    let parts = c
        .show_partitions(collection("vectors"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parts.partition_tag_array, ["_default", "2024-01"]);

    let base = rng.vectors(600, 16);
    let ids = insert(&mut c, "vectors", "", &base[..400], Vec::new()).await;
    ok(&ids.status);
    assert_eq!(ids.vector_id_array.len(), 400);
    assert_eq!(
        ids.vector_id_array.iter().collect::<HashSet<_>>().len(),
        400,
        "auto ids are unique"
    );
    // The first insert fixed automatic ids for this collection: ids given now are refused.
    let given: Vec<i64> = (1..=200).map(|i| i * 10).collect();
    let refused = insert(&mut c, "vectors", "2024-01", &base[400..], given).await;
    assert_eq!(code(&refused.status), ErrorCode::IllegalVectorId as i32);
    let r = insert(&mut c, "vectors", "2024-01", &base[400..], Vec::new()).await;
    ok(&r.status);
    let part_ids = r.vector_id_array;
    assert!(part_ids.iter().all(|id| !ids.vector_id_array.contains(id)));

    assert_eq!(
        count(&mut c, "vectors").await,
        0,
        "nothing is searchable before a flush"
    );
    flush(&mut c, &["vectors"]).await;
    assert_eq!(count(&mut c, "vectors").await, 600);

    let data: Vec<(i64, Vec<f32>)> = ids
        .vector_id_array
        .iter()
        .chain(&part_ids)
        .copied()
        .zip(base.iter().cloned())
        .collect();
    let queries = rng.vectors(5, 16);
    let result = search_in(&mut c, "vectors", &[], &queries, 10, "{}").await;
    assert_exact(&result, &data, &queries, 10, false);

    // Tags are whole-string regular expressions; `_default` is the collection's own table.
    let only_part = search_in(&mut c, "vectors", &["2024-.*"], &queries, 5, "{}").await;
    assert_exact(&only_part, &data[400..], &queries, 5, false);
    let only_default = search_in(&mut c, "vectors", &["_default"], &queries, 5, "{}").await;
    assert_exact(&only_default, &data[..400], &queries, 5, false);
    let none = search_in(&mut c, "vectors", &["2024"], &queries, 5, "{}").await;
    assert_eq!(code(&none.status), ErrorCode::IllegalArgument as i32);

    // More hits asked than rows: padded with -1.
    create(&mut c, "tiny", 16, 2).await;
    let tiny_ids = insert(&mut c, "tiny", "", &base[..3], vec![1, 2, 3]).await;
    ok(&tiny_ids.status);
    flush(&mut c, &[]).await;
    let tiny_data: Vec<(i64, Vec<f32>)> = vec![
        (1, base[0].clone()),
        (2, base[1].clone()),
        (3, base[2].clone()),
    ];
    let padded = search_in(&mut c, "tiny", &[], &queries[..2], 5, "{}").await;
    assert_exact(&padded, &tiny_data, &queries[..2], 5, true);

    // An empty collection answers with an empty result, as Milvus does.
    create(&mut c, "empty", 16, 1).await;
    let empty = search_in(&mut c, "empty", &[], &queries, 3, "{}").await;
    ok(&empty.status);
    assert_eq!((empty.row_num, empty.ids.len()), (0, 0));

    // Vectors by id (with and without the partition), ids of a segment, the stats JSON.
    let got = c
        .get_vectors_by_id(proto::VectorsIdentity {
            collection_name: "vectors".into(),
            id_array: vec![part_ids[3], 123_456],
            partition_tag: "2024-01".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ok(&got.status);
    assert_eq!(got.vectors_data[0].float_data, base[403]);
    assert!(got.vectors_data[1].float_data.is_empty());
    let stats = collection_info(&mut c, "vectors").await;
    ok(&stats.status);
    let json: serde_json::Value = serde_json::from_str(&stats.json_info).unwrap();
    assert_eq!(json["row_count"], 600);
    assert_eq!(json["partitions"][0]["tag"], "_default");
    assert_eq!(json["partitions"][0]["row_count"], 400);
    assert_eq!(json["partitions"][1]["tag"], "2024-01");
    let segment = json["partitions"][1]["segments"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(json["partitions"][1]["segments"][0]["index_name"], "IDMAP");
    let seg_ids = c
        .get_vector_i_ds(proto::GetVectorIDsParam {
            collection_name: "vectors".into(),
            segment_name: segment,
        })
        .await
        .unwrap()
        .into_inner();
    ok(&seg_ids.status);
    assert_eq!(seg_ids.vector_id_array, part_ids);

    // Deletes count at the next flush, in the partition named.
    let st = delete_ids(&mut c, "vectors", "2024-01", vec![part_ids[0], part_ids[1]]).await;
    assert_eq!(st.error_code, 0, "{st:?}");
    flush(&mut c, &["vectors"]).await;
    assert_eq!(count(&mut c, "vectors").await, 598);
    let remaining: Vec<(i64, Vec<f32>)> = data
        .iter()
        .filter(|(id, _)| !part_ids[..2].contains(id))
        .cloned()
        .collect();
    search_l2_exact(&mut c, "vectors", &remaining, &[base[400].clone()], 3, "{}").await;
    let compact = c.compact(collection("vectors")).await.unwrap().into_inner();
    assert_eq!(compact.error_code, 0, "{compact:?}");
    assert_eq!(count(&mut c, "vectors").await, 598);
    search_l2_exact(&mut c, "vectors", &remaining, &queries, 10, "{}").await;

    // Dropping a partition, then the collection.
    let st = c
        .drop_partition(partition("vectors", "2024-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0);
    assert_eq!(count(&mut c, "vectors").await, 400);
    let st = c
        .drop_collection(collection("vectors"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0);
    let listed = c
        .show_collections(proto::Command::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.collection_names, ["empty", "tiny"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_index_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        "rw",
        dir.path(),
        &[
            ("auto-flush-interval", "3600".into()),
            ("index-build-threshold", "100".into()),
        ],
    )
    .await;
    let mut c = client(node.addr).await;
    let mut rng = SplitMix64::new(11);
    create(&mut c, "ivf", 8, 1).await;
    let base = rng.vectors(2000, 8);
    let data = insert_rows(&mut c, "ivf", &base).await;
    let ids: Vec<i64> = data.iter().map(|(id, _)| *id).collect();
    flush(&mut c, &[]).await;

    let bad = create_index(&mut c, "ivf", 2, r#"{"nlist": 0}"#).await;
    assert_eq!(bad.error_code, ErrorCode::IllegalArgument as i32, "{bad:?}");
    assert!(bad.reason.contains("[1, 65536]"), "{bad:?}");
    // IVF_SQ8H needs Milvus's GPU version; this node answers as a CPU build does.
    let unsupported = create_index(&mut c, "ivf", 5, r#"{"nlist": 16}"#).await;
    assert_eq!(unsupported.error_code, ErrorCode::IllegalIndexType as i32);

    let st = create_index(&mut c, "ivf", 2, r#"{"nlist": 16}"#).await;
    assert_eq!(st.error_code, 0, "{st:?}");
    let described = c
        .describe_index(collection("ivf"))
        .await
        .unwrap()
        .into_inner();
    ok(&described.status);
    assert_eq!(described.index_type, 2);
    assert_eq!(described.extra_params[0].value, r#"{"nlist":16}"#);
    let stats = collection_info(&mut c, "ivf").await;
    assert!(stats.json_info.contains("IVFFLAT"), "{}", stats.json_info);

    let queries = rng.vectors(4, 8);
    // nprobe = nlist searches every list: exact.
    search_l2_exact(&mut c, "ivf", &data, &queries, 10, r#"{"nprobe": 16}"#).await;
    let bad_nprobe = search_in(&mut c, "ivf", &[], &queries, 10, r#"{"nprobe": 0}"#).await;
    assert_eq!(code(&bad_nprobe.status), ErrorCode::IllegalArgument as i32);
    // Vectors stay readable by id while the raw file is kept behind the index.
    let got = c
        .get_vectors_by_id(proto::VectorsIdentity {
            collection_name: "ivf".into(),
            id_array: vec![ids[5]],
            partition_tag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.vectors_data[0].float_data, base[5]);

    // Deletes reach the index; compaction rewrites the segment and keeps it indexed.
    let st = delete_ids(&mut c, "ivf", "", ids[..10].to_vec()).await;
    assert_eq!(st.error_code, 0);
    flush(&mut c, &[]).await;
    let data: Vec<(i64, Vec<f32>)> = data[10..].to_vec();
    search_l2_exact(&mut c, "ivf", &data, &queries, 10, r#"{"nprobe": 16}"#).await;
    let st = c.compact(collection("ivf")).await.unwrap().into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
    assert_eq!(count(&mut c, "ivf").await, 1990);
    let stats = collection_info(&mut c, "ivf").await;
    assert!(stats.json_info.contains("IVFFLAT"), "{}", stats.json_info);
    search_l2_exact(&mut c, "ivf", &data, &queries, 10, r#"{"nprobe": 16}"#).await;

    let st = c.drop_index(collection("ivf")).await.unwrap().into_inner();
    assert_eq!(st.error_code, 0);
    let stats = collection_info(&mut c, "ivf").await;
    assert!(
        stats.json_info.contains("IDMAP") && !stats.json_info.contains("IVFFLAT"),
        "{}",
        stats.json_info
    );
    search_l2_exact(&mut c, "ivf", &data, &queries, 10, "{}").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_statuses_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node("rw", dir.path(), &[]).await;
    let mut c = client(node.addr).await;
    let cases = [
        (schema("1bad", 4, 1024, 1), ErrorCode::IllegalCollectionName),
        (schema("a-b", 4, 1024, 1), ErrorCode::IllegalCollectionName),
        (schema("ok", 0, 1024, 1), ErrorCode::IllegalDimension),
        (schema("ok", 32769, 1024, 1), ErrorCode::IllegalDimension),
        (schema("ok", 4, 0, 1), ErrorCode::IllegalArgument),
        // Binary dimensions count bits, whole bytes of them.
        (schema("ok", 12, 1024, 3), ErrorCode::IllegalDimension),
        (schema("ok", 4, 1024, 42), ErrorCode::IllegalMetricType),
    ];
    for (s, expected) in cases {
        let st = c.create_collection(s.clone()).await.unwrap().into_inner();
        assert_eq!(st.error_code, expected as i32, "{s:?}: {st:?}");
        assert!(!st.reason.is_empty());
    }
    create(&mut c, "ok", 4, 1).await;
    let dup = c
        .create_collection(schema("ok", 4, 1024, 1))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(dup.error_code, 0);

    let v = vec![vec![0.1f32; 4]; 3];
    let missing = insert(&mut c, "nope", "", &v, Vec::new()).await;
    assert_eq!(code(&missing.status), ErrorCode::CollectionNotExists as i32);
    let wrong_dim = insert(&mut c, "ok", "", &[vec![0.1f32; 5]], Vec::new()).await;
    assert_eq!(code(&wrong_dim.status), ErrorCode::IllegalDimension as i32);
    let mixed = insert(
        &mut c,
        "ok",
        "",
        &[vec![0.1f32; 4], vec![0.1f32; 3]],
        Vec::new(),
    )
    .await;
    assert_eq!(code(&mixed.status), ErrorCode::IllegalDimension as i32);
    let empty = insert(&mut c, "ok", "", &[], Vec::new()).await;
    assert_eq!(code(&empty.status), ErrorCode::IllegalRowrecord as i32);
    // Milvus 1.1 answers a wrong number of ids with ILLEGAL_VECTOR_ID (InsertRequest.cpp).
    let some_ids = insert(&mut c, "ok", "", &v, vec![1]).await;
    assert_eq!(code(&some_ids.status), ErrorCode::IllegalVectorId as i32);
    let no_partition = insert(&mut c, "ok", "nope", &v, Vec::new()).await;
    assert_eq!(
        code(&no_partition.status),
        ErrorCode::IllegalArgument as i32
    );
    let nan = insert(&mut c, "ok", "", &[vec![f32::NAN; 4]], Vec::new()).await;
    assert_eq!(code(&nan.status), ErrorCode::IllegalRowrecord as i32);

    let negative = insert(&mut c, "ok", "", &v, vec![1, -2, 3]).await;
    assert_eq!(code(&negative.status), ErrorCode::IllegalVectorId as i32);
    ok(&insert(&mut c, "ok", "", &v, vec![1, 2, 3]).await.status);
    let auto = insert(&mut c, "ok", "", &v, Vec::new()).await;
    assert_eq!(
        code(&auto.status),
        ErrorCode::IllegalVectorId as i32,
        "ids were given before: auto ids refused"
    );
    flush(&mut c, &[]).await;
    for (k, expected) in [(0, ErrorCode::IllegalTopk), (16385, ErrorCode::IllegalTopk)] {
        let r = search_in(&mut c, "ok", &[], &v, k, "{}").await;
        assert_eq!(code(&r.status), expected as i32);
    }
    let r = search_in(&mut c, "ok", &[], &[vec![0.1f32; 7]], 1, "{}").await;
    assert_eq!(code(&r.status), ErrorCode::IllegalDimension as i32);
    let r = search_in(&mut c, "ok", &[], &v, 1, "{nprobe").await;
    assert_eq!(code(&r.status), ErrorCode::IllegalArgument as i32);
    let r = search_in(&mut c, "ok", &["("], &v, 1, "{}").await;
    assert_eq!(code(&r.status), ErrorCode::IllegalArgument as i32);
    let in_files = |ids: Vec<&str>| proto::SearchInFilesParam {
        file_id_array: ids.into_iter().map(String::from).collect(),
        search_param: Some(search_param("ok", &v, 1)),
    };
    let r = c
        .search_in_files(in_files(vec!["999999"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), ErrorCode::FileNotFound as i32);
    let r = c
        .search_in_files(in_files(vec!["x"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), ErrorCode::IllegalArgument as i32);
    let st = c
        .create_partition(partition("ok", "_default"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(st.error_code, 0);
    let st = c
        .drop_partition(partition("ok", "_default"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(st.error_code, 0);
    let st = delete_ids(&mut c, "ok", "", Vec::new()).await;
    assert_eq!(st.error_code, ErrorCode::IllegalVectorId as i32);
    let hybrid = c.has_hybrid_collection(collection("ok")).await.unwrap_err();
    assert_eq!(hybrid.code(), tonic::Code::Unimplemented);

    // A search whose result would not fit in memory is refused up front.
    let many = vec![vec![0.1f32; 4]; 2000];
    let r = search_in(&mut c, "ok", &[], &many, 16384, "{}").await;
    assert_eq!(code(&r.status), ErrorCode::IllegalArgument as i32);

    // Cmd.
    assert_eq!(cmd(&mut c, "version").await.string_reply, "1.1.1");
    assert_eq!(cmd(&mut c, "status").await.string_reply, "OK");
    assert_eq!(cmd(&mut c, "mode").await.string_reply, "CPU");
    assert_eq!(
        cmd(&mut c, "whatever").await.string_reply,
        "Unknown command"
    );
    let info = cmd(&mut c, "get_system_info").await.string_reply;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["role"],
        "rw"
    );
    let st = cmd(&mut c, "set_config storage.auto_flush_interval 2").await;
    ok(&st.status);
    assert_eq!(
        cmd(&mut c, "get_config storage.auto_flush_interval")
            .await
            .string_reply,
        "2"
    );
    let st = cmd(&mut c, "set_config storage.auto_flush_interval -1").await;
    assert_eq!(code(&st.status), ErrorCode::IllegalArgument as i32);

    // Still serving.
    assert_eq!(count(&mut c, "ok").await, 3);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_node_on_the_same_storage_answers_the_same_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rw = start_node("rw", dir.path(), &[("auto-flush-interval", "0.2".into())]).await;
    let ro = start_node("ro", dir.path(), &[]).await;
    let (mut w, mut r) = (client(rw.addr).await, client(ro.addr).await);
    let mut rng = SplitMix64::new(3);
    create(&mut w, "shared", 12, 2).await;
    let base = rng.vectors(300, 12);
    let data = insert_rows(&mut w, "shared", &base).await;
    // Auto-flush makes the data visible without an explicit flush.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&mut r, "shared").await < 300 {
        assert!(Instant::now() < deadline, "auto-flush did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queries = rng.vectors(4, 12);
    let from_rw = search_in(&mut w, "shared", &[], &queries, 7, "{}").await;
    let from_ro = search_in(&mut r, "shared", &[], &queries, 7, "{}").await;
    assert_eq!(from_rw, from_ro);
    assert_exact(&from_ro, &data, &queries, 7, true);

    // The reader picks up deletes the writer flushed.
    let st = delete_ids(&mut w, "shared", "", vec![from_rw.ids[0]]).await;
    assert_eq!(st.error_code, 0);
    flush(&mut w, &[]).await;
    let again = search_in(&mut r, "shared", &[], &queries[..1], 7, "{}").await;
    assert!(!again.ids.contains(&from_rw.ids[0]));

    let refused = insert(&mut r, "shared", "", &base[..1], Vec::new()).await;
    assert_eq!(code(&refused.status), ErrorCode::PermissionDenied as i32);
    assert!(refused.status.unwrap().reason.contains("read node"));
    let refused = r
        .create_collection(schema("x", 4, 1, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.error_code, ErrorCode::PermissionDenied as i32);
    ro.shutdown().await;
    rw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_merge_and_retired_files_leave_the_disk_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        ("auto-flush-interval", "3600".to_string()),
        ("gc-grace", "0.3".to_string()),
    ];
    let node = start_node("rw", dir.path(), &extra).await;
    let mut c = client(node.addr).await;
    let mut rng = SplitMix64::new(5);
    create(&mut c, "m", 4, 1).await;
    let mut data = Vec::new();
    for _ in 0..3 {
        let v = rng.vectors(50, 4);
        data.extend(insert_rows(&mut c, "m", &v).await);
        flush(&mut c, &[]).await;
    }
    let stats = collection_info(&mut c, "m").await;
    let json: serde_json::Value = serde_json::from_str(&stats.json_info).unwrap();
    assert_eq!(
        json["partitions"][0]["segments"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    assert_eq!(json["row_count"], 150);
    let files_on_disk = || {
        walk(&dir.path().join("tables"))
            .into_iter()
            .filter(|p| !p.ends_with("deleted.ids"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_on_disk() > 1 {
        assert!(Instant::now() < deadline, "retired files are still on disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queries = rng.vectors(3, 4);
    search_l2_exact(&mut c, "m", &data, &queries, 5, "{}").await;
    node.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

/// A write node that stops without flushing (as after `kill -9`) replays its log on the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_writes_survive_a_crash_through_the_log() {
    use mishards::meta::{MetaOptions, MetaStore};
    use mishards::node::engine::{Engine, EngineOptions, Query};
    let dir = tempfile::tempdir().unwrap();
    let config = node_config("rw", dir.path(), &[]);
    let opts = EngineOptions {
        role: config.role,
        storage: config.storage.clone(),
        auto_flush_interval: Duration::from_secs(3600),
        gc_grace: Duration::from_secs(60),
        cache_bytes: 1 << 30,
        index_build_rows: 4096,
        wal_damage: mishards::node::wal::DamagePolicy::Refuse,
    };
    let uri = mishards::node::server::meta_uri(&config).unwrap();
    // Each open is a fresh start of the engine on the same storage and metadata.
    async fn open_engine(
        uri: &mishards::meta::MetaUri,
        opts: &EngineOptions,
    ) -> std::sync::Arc<Engine> {
        let meta = MetaStore::open(uri, &MetaOptions::default()).await.unwrap();
        Engine::open(meta, opts.clone()).await.unwrap()
    }
    let mut rng = SplitMix64::new(9);
    let vectors = rng.vectors(100, 4);
    let flat: Vec<f32> = vectors.concat();
    let bits: Vec<u8> = vec![0xff, 0x00, 0x0f, 0xf0, 0x01, 0x80];
    let ids = {
        let engine = open_engine(&uri, &opts).await;
        engine
            .create_collection("durable", 4, 1024, 1)
            .await
            .unwrap();
        let ids = engine
            .insert("durable", "", Vec::new(), Vectors::Float(flat.clone()), 100)
            .await
            .unwrap();
        engine
            .delete("durable", "", vec![ids[0], ids[1]])
            .await
            .unwrap();
        // A binary collection's rows go through the same log.
        engine.create_collection("bits", 16, 1024, 3).await.unwrap();
        engine
            .insert("bits", "", vec![1, 2, 3], Vectors::Binary(bits.clone()), 3)
            .await
            .unwrap();
        ids
        // dropped here without a flush: only the log has the data
    };
    let engine = open_engine(&uri, &opts).await;
    assert_eq!(engine.count("durable").await.unwrap(), 0);
    engine.flush(&[]).await.unwrap();
    assert_eq!(engine.count("durable").await.unwrap(), 98);
    let no_params = serde_json::Map::new();
    let query = Query {
        vectors: VectorsRef::Float(&vectors[0]),
        nq: 1,
        k: 1,
        params: &no_params,
    };
    let top = engine
        .search("durable", &[], &query)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(top.ids[0], ids[0], "a deleted row came back");
    assert_eq!(engine.count("bits").await.unwrap(), 3);
    assert_eq!(
        engine.vectors_by_id("bits", "", &[2]).await.unwrap(),
        [Some(Vectors::Binary(vec![0x0f, 0xf0]))]
    );
    let query = Query {
        vectors: VectorsRef::Binary(&bits[4..]),
        ..query
    };
    let top = engine.search("bits", &[], &query).await.unwrap().unwrap();
    assert_eq!(
        (top.ids[0], top.distances[0]),
        (3, 0.0),
        "HAMMING of a row to itself"
    );
    // Ids handed out after the restart never repeat earlier ones.
    let more = engine
        .insert(
            "durable",
            "",
            Vec::new(),
            Vectors::Float(flat[..4].to_vec()),
            1,
        )
        .await
        .unwrap();
    assert!(more[0] > *ids.iter().max().unwrap());
    engine.close().await;
    // A second restart after the flush replays nothing twice.
    let engine = open_engine(&uri, &opts).await;
    engine.flush(&[]).await.unwrap();
    assert_eq!(engine.count("durable").await.unwrap(), 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_mysql_metadata() {
    let Some(db) = common::mysql_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = match &db.uri {
        mishards::meta::MetaUri::MySql(t) => {
            format!("mysql://{}@{}:{}/{}", t.user, t.host, t.port, t.database)
        }
        other => panic!("{other}"),
    };
    let node = start_node("rw", dir.path(), &[("meta-uri", uri)]).await;
    let mut c = client(node.addr).await;
    let mut rng = SplitMix64::new(13);
    create(&mut c, "on_mysql", 6, 1).await;
    let v = rng.vectors(120, 6);
    let data = insert_rows(&mut c, "on_mysql", &v).await;
    flush(&mut c, &[]).await;
    let queries = rng.vectors(2, 6);
    search_l2_exact(&mut c, "on_mysql", &data, &queries, 4, "{}").await;
    node.shutdown().await;
}

/// `abort` is `kill -9` for an in-process node: open connections fail at once and the port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_node_cuts_its_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node("rw", dir.path(), &[]).await;
    let addr = node.addr;
    let mut c = client(addr).await;
    let version = || proto::Command {
        cmd: "version".into(),
    };
    assert!(c.cmd(version()).await.is_ok());
    node.abort().await;
    let cut = tokio::time::timeout(Duration::from_secs(5), c.cmd(version())).await;
    assert!(
        matches!(cut, Ok(Err(_))),
        "a call on an open connection to an aborted node must fail at once: {cut:?}"
    );
    // The address is free for a restart.
    let again = start_node("rw", dir.path(), &[("port", addr.port().to_string())]).await;
    assert_eq!(again.addr, addr);
    again.shutdown().await;
}

async fn index_info(c: &mut Client, name: &str) -> serde_json::Value {
    let stats = collection_info(c, name).await;
    ok(&stats.status);
    serde_json::from_str(&stats.json_info).unwrap()
}

/// Milvus 1.1's background build: with IVF_FLAT set, a file that reaches `index_file_size` — merged from
/// small flushes, or flushed that large at once — becomes TO_INDEX and gets its index without a
/// CreateIndex or a Compact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_reach_index_file_size_get_their_index_in_the_background() {
    let (_dir, node, mut c) = writer_and_client().await;
    let mut rng = SplitMix64::new(17);
    create_collection(&mut c, schema("grow", 16, 1, 1)).await;
    let st = create_index(&mut c, "grow", 2, r#"{"nlist": 16}"#).await;
    ok(&Some(st));

    // 5,000 rows × (8 + 64) bytes ≈ 0.34 MB a flush: the third flush merges past 1 MB.
    let mut data = Vec::new();
    for round in 0..3 {
        let v = rng.vectors(5_000, 16);
        data.extend(insert_rows(&mut c, "grow", &v).await);
        flush(&mut c, &[]).await;
        if round < 2 {
            let json = index_info(&mut c, "grow").await;
            let segments = json["partitions"][0]["segments"]
                .as_array()
                .unwrap()
                .clone();
            assert_eq!(segments.len(), 1, "small files merge into one: {json}");
            assert_eq!(
                segments[0]["index_name"], "IDMAP",
                "below index_file_size: {json}"
            );
        }
    }
    // 16,000 rows ≈ 1.15 MB flushed at once: due for the index straight away.
    let v = rng.vectors(16_000, 16);
    data.extend(insert_rows(&mut c, "grow", &v).await);
    flush(&mut c, &[]).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let json = index_info(&mut c, "grow").await;
        let segments = json["partitions"][0]["segments"]
            .as_array()
            .unwrap()
            .clone();
        if segments.len() == 2 && segments.iter().all(|s| s["index_name"] == "IVFFLAT") {
            assert_eq!(json["row_count"], 31_000, "{json}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no background index build within 20 s: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&mut c, "grow").await, 31_000);
    let queries = rng.vectors(5, 16);
    // nprobe = nlist searches every list: the exact answer.
    search_l2_exact(&mut c, "grow", &data, &queries, 10, r#"{"nprobe": 16}"#).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_the_wrong_dimension_is_refused_even_without_data() {
    let (_dir, node, mut c) = writer_and_client().await;
    create(&mut c, "empty8", 8, 1).await;
    let wrong = vec![vec![0.5f32; 7]];
    let right = vec![vec![0.5f32; 8]];
    for buffered in [false, true] {
        let r = search_in(&mut c, "empty8", &[], &wrong, 3, "{}").await;
        assert_eq!(
            code(&r.status),
            ErrorCode::IllegalDimension as i32,
            "buffered rows: {buffered}: {r:?}"
        );
        let r = search_in(&mut c, "empty8", &[], &right, 3, "{}").await;
        ok(&r.status);
        assert_eq!(r.ids.len(), 0, "nothing flushed yet");
        let in_files = |queries: &[Vec<f32>], files: Vec<&str>| proto::SearchInFilesParam {
            file_id_array: files.into_iter().map(String::from).collect(),
            search_param: Some(search_param("empty8", queries, 3)),
        };
        for files in [vec![], vec!["1"]] {
            let r = c
                .search_in_files(in_files(&wrong, files.clone()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                code(&r.status),
                ErrorCode::IllegalDimension as i32,
                "SearchInFiles {files:?}: {r:?}"
            );
        }
        // Rows in the buffer only: still no file to search.
        ok(&insert(&mut c, "empty8", "", &right, Vec::new())
            .await
            .status);
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preload_larger_than_the_cache_answers_cache_failed() {
    let (_dir, node, mut c) = writer_and_client().await;
    let mut rng = SplitMix64::new(19);
    create(&mut c, "big", 128, 1).await;
    // 4,000 × (8 + 512) bytes ≈ 2 MB.
    ok(
        &insert(&mut c, "big", "", &rng.vectors(4_000, 128), Vec::new())
            .await
            .status,
    );
    flush(&mut c, &[]).await;
    let preload = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.preload_collection(proto::PreloadCollectionParam {
                collection_name: "big".into(),
                partition_tag_array: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    ok(&Some(preload(&mut c).await));
    // The cache's live size counts, not the one the node started with.
    let st = cmd(&mut c, "set_config cache.cache_size 1MB").await;
    ok(&st.status);
    let refused = preload(&mut c).await;
    assert_eq!(
        refused.error_code,
        ErrorCode::CacheFailed as i32,
        "{refused:?}"
    );
    assert!(refused.reason.contains("cache"), "{refused:?}");
    let st = cmd(&mut c, "set_config cache.cache_size 64MB").await;
    ok(&st.status);
    ok(&Some(preload(&mut c).await));
    node.shutdown().await;
}

/// Milvus 1.1's config tree over gRPC: values the node really runs with, a change in service that reads
/// back, and Milvus's refusals (unknown or padded keys, wrong values, keys read only at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_config_tree_over_cmd() {
    let dir = tempfile::tempdir().unwrap();
    let rw = start_node("rw", dir.path(), &[("cache-size", "256".into())]).await;
    let ro = start_node("ro", dir.path(), &[]).await;
    let mut c = client(rw.addr).await;
    let mut r = client(ro.addr).await;
    let cmd = |s: &str| proto::Command { cmd: s.into() };
    async fn answer(c: &mut Client, text: &str) -> (i32, String) {
        let reply = c
            .cmd(proto::Command { cmd: text.into() })
            .await
            .unwrap()
            .into_inner();
        (code(&reply.status), reply.string_reply)
    }
    let get = |key: &str| format!("get_config {key}");

    assert_eq!(answer(&mut c, "mode").await, (0, "CPU".to_string()));
    let storage = dir.path().display().to_string();
    for (key, want) in [
        ("storage.path", storage.clone()),
        ("wal.enable", "true".to_string()),
        ("wal.path", dir.path().join("wal").display().to_string()),
        ("cache.cache_size", "256MB".to_string()),
        ("cluster.enable", "true".to_string()),
        ("cluster.role", "rw".to_string()),
        ("network.bind.port", rw.addr.port().to_string()),
        ("gpu.enable", "false".to_string()),
        ("tracing_config.json_config_path", String::new()),
    ] {
        assert_eq!(answer(&mut c, &get(key)).await, (0, want), "{key}");
    }
    assert_eq!(
        answer(&mut r, &get("wal.enable")).await,
        (0, "false".to_string())
    );
    assert_eq!(
        answer(&mut r, &get("cluster.role")).await,
        (0, "ro".to_string())
    );
    let (status, tree) = answer(&mut c, "get_config *").await;
    assert_eq!(status, 0);
    let tree: serde_json::Value = serde_json::from_str(&tree).unwrap();
    assert_eq!(tree["storage"]["path"], storage.as_str());
    assert_eq!(tree.as_object().unwrap().len(), 13);

    // Changes in service read back as written and act: the cache is now 1 MB.
    assert_eq!(
        answer(&mut c, "set_config cache.cache_size 1MB").await,
        (0, String::new())
    );
    assert_eq!(
        answer(&mut c, &get("cache.cache_size")).await,
        (0, "1MB".to_string())
    );
    let info = c
        .cmd(cmd("get_system_info"))
        .await
        .unwrap()
        .into_inner()
        .string_reply;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["cache_capacity_bytes"],
        1 << 20
    );
    assert_eq!(
        answer(&mut c, "set_config engine_config.use_blas_threshold 2000").await,
        (0, String::new())
    );
    assert_eq!(
        answer(&mut c, &get("engine_config.use_blas_threshold")).await,
        (0, "2000".to_string())
    );

    // Refusals, with Milvus 1.1's codes; none changes anything.
    let unexpected = ErrorCode::UnexpectedError as i32;
    let illegal = ErrorCode::IllegalArgument as i32;
    for (text, want) in [
        ("get_config no_such.key", unexpected),
        ("get_config cache.Cache_size", unexpected),
        ("get_config cache.cache_size ", unexpected),
        ("get_config  cache.cache_size", unexpected),
        ("get_config cache_size", unexpected),
        ("get_config", unexpected),
        ("set_config cache.cache_size", unexpected),
        ("set_config gpu.enable true", unexpected),
        ("set_config cache.cache_size lots", illegal),
        (
            "set_config cache.cache_size 99999999999999999999GB",
            illegal,
        ),
        ("set_config storage.auto_flush_interval 1.5", illegal),
        ("set_config storage.path /var/lib/milvus", illegal),
        ("set_config network.bind.port 19531", illegal),
        (
            "set_config tracing_config.json_config_path /x.json",
            illegal,
        ),
    ] {
        let (status, _) = answer(&mut c, text).await;
        assert_eq!(status, want, "{text:?}");
    }
    assert_eq!(
        answer(&mut c, &get("storage.path")).await,
        (0, storage.clone())
    );
    assert_eq!(
        answer(&mut c, &get("cache.cache_size")).await,
        (0, "1MB".to_string())
    );
    ro.shutdown().await;
    rw.shutdown().await;
}

/// Makes the metadata database refuse one kind of change, as a crash or an outage at that moment would.
enum Refuse {
    /// Any update of `Tables.flush_lsn`.
    FlushLsn,
    /// Any file becoming this type.
    FileType(i32),
}

async fn raw_sql(uri: &mishards::meta::MetaUri, sql: &str) {
    use sqlx::Connection;
    match uri {
        mishards::meta::MetaUri::Sqlite(mishards::meta::SqliteTarget::File(path)) => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
        mishards::meta::MetaUri::MySql(t) => {
            let url = format!("mysql://{}@{}:{}/{}", t.user, t.host, t.port, t.database);
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
        other => panic!("unexpected {other}"),
    }
}

async fn refuse(uri: &mishards::meta::MetaUri, what: Refuse) {
    let mysql = matches!(uri, mishards::meta::MetaUri::MySql(_));
    let sql = match (what, mysql) {
        (Refuse::FlushLsn, false) => "CREATE TRIGGER refuse BEFORE UPDATE OF flush_lsn ON Tables \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            .to_string(),
        (Refuse::FlushLsn, true) => {
            "CREATE TRIGGER refuse BEFORE UPDATE ON Tables FOR EACH ROW BEGIN \
             IF NEW.flush_lsn <> OLD.flush_lsn THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END"
                .to_string()
        }
        (Refuse::FileType(t), false) => format!(
            "CREATE TRIGGER refuse BEFORE UPDATE OF file_type ON TableFiles WHEN NEW.file_type = {t} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ),
        (Refuse::FileType(t), true) => format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON TableFiles FOR EACH ROW BEGIN \
             IF NEW.file_type = {t} AND OLD.file_type <> {t} THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END"
        ),
    };
    raw_sql(uri, &sql).await;
}

async fn allow(uri: &mishards::meta::MetaUri) {
    raw_sql(uri, "DROP TRIGGER refuse").await;
}

/// Flush (file row + flush lsn), merge (new file + retired files) and index build (index file + raw
/// file moved behind it) each change the metadata in one transaction: when its last write fails, its
/// first one is not kept either, so no row is counted twice and nothing is replayed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_transitions_are_all_or_nothing() {
    use mishards::meta::{FileType, MetaOptions, MetaStore};
    use mishards::node::engine::{Engine, EngineOptions};
    for db in common::databases().await {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            index_build_rows: 100,
            ..writer_options(dir.path())
        };
        let meta = MetaStore::open(&db.uri, &MetaOptions::default())
            .await
            .unwrap();
        let engine = Engine::open(meta.clone(), opts.clone()).await.unwrap();
        let label = db.label;
        let mut rng = SplitMix64::new(23);
        engine.create_collection("tx", 4, 1024, 1).await.unwrap();
        let mut rows = 0i64;
        async fn add(
            engine: &std::sync::Arc<Engine>,
            rng: &mut SplitMix64,
            rows: &mut i64,
            n: usize,
        ) {
            *rows += n as i64;
            let flat: Vec<f32> = rng.vectors(n, 4).concat();
            engine
                .insert("tx", "", Vec::new(), Vectors::Float(flat), n)
                .await
                .unwrap();
        }
        let files_of = |t: FileType| {
            let meta = meta.clone();
            async move {
                meta.files_of_tables(&["tx".to_string()], &[t])
                    .await
                    .unwrap()
                    .len()
            }
        };

        // Flush: the segment's row and the flush lsn.
        add(&engine, &mut rng, &mut rows, 200).await;
        refuse(&db.uri, Refuse::FlushLsn).await;
        assert!(engine.flush(&[]).await.is_err(), "{label}");
        assert_eq!(
            files_of(FileType::Raw).await,
            0,
            "{label}: no file row without its flush lsn"
        );
        allow(&db.uri).await;
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("tx").await.unwrap(), 200, "{label}");
        // A restart replays nothing the flush committed.
        // (One write node per storage folder: the first goes before the restart.)
        engine.close().await;
        let engine = Engine::open(meta.clone(), opts.clone()).await.unwrap();
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("tx").await.unwrap(), 200, "{label}");

        // Merge: the merged file and the retired small files.
        add(&engine, &mut rng, &mut rows, 100).await;
        refuse(&db.uri, Refuse::FileType(FileType::ToDelete.code())).await;
        // The flush itself succeeds; the merge after it fails and keeps nothing.
        engine.flush(&[]).await.unwrap();
        assert_eq!(
            engine.count("tx").await.unwrap(),
            rows,
            "{label}: no row twice"
        );
        assert_eq!(files_of(FileType::Raw).await, 2, "{label}");
        allow(&db.uri).await;
        add(&engine, &mut rng, &mut rows, 100).await;
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("tx").await.unwrap(), rows, "{label}");
        assert_eq!(files_of(FileType::Raw).await, 1, "{label}: merged");

        // Index build: the index file and the raw file moved behind it.
        refuse(&db.uri, Refuse::FileType(FileType::Backup.code())).await;
        let built = engine.create_index("tx", 2, r#"{"nlist": 4}"#).await;
        assert!(built.is_err(), "{label}: the build fails");
        assert_eq!(files_of(FileType::Index).await, 0, "{label}");
        assert_eq!(
            engine.count("tx").await.unwrap(),
            rows,
            "{label}: no row twice"
        );
        allow(&db.uri).await;
        engine
            .create_index("tx", 2, r#"{"nlist": 4}"#)
            .await
            .unwrap();
        assert_eq!(files_of(FileType::Index).await, 1, "{label}");
        assert_eq!(files_of(FileType::Backup).await, 1, "{label}");
        assert_eq!(engine.count("tx").await.unwrap(), rows, "{label}");
    }
}

/// The issue's case on every metadata backend: rows logged for a dropped collection (and its partition)
/// never reach a collection created again under the same name, with the same or another dimension,
/// after a crash of the write node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_collections_log_never_reaches_its_successor_on_every_backend() {
    use mishards::meta::{MetaOptions, MetaStore};
    use mishards::node::engine::{Engine, EngineOptions};
    for db in common::databases().await {
        for new_dim in [8i64, 4] {
            let dir = tempfile::tempdir().unwrap();
            let opts = EngineOptions {
                gc_grace: Duration::ZERO,
                ..writer_options(dir.path())
            };
            let label = format!("{} dim {new_dim}", db.label);
            let meta = MetaStore::open(&db.uri, &MetaOptions::default())
                .await
                .unwrap();
            let rows = |n: usize, dim: usize| Vectors::Float(vec![0.5; n * dim]);
            let engine = Engine::open(meta.clone(), opts.clone()).await.unwrap();
            let name = format!("res_a_{new_dim}");
            engine.create_collection(&name, 8, 1024, 1).await.unwrap();
            engine.create_partition(&name, "p").await.unwrap();
            engine
                .insert(&name, "", vec![], rows(50, 8), 50)
                .await
                .unwrap();
            engine.flush(&[]).await.unwrap();
            engine
                .insert(&name, "", vec![], rows(30, 8), 30)
                .await
                .unwrap();
            engine
                .insert(&name, "p", vec![], rows(5, 8), 5)
                .await
                .unwrap();
            engine.drop_collection(&name).await.unwrap();
            engine.collect_garbage().await.unwrap();
            engine
                .create_collection(&name, new_dim, 1024, 1)
                .await
                .unwrap();
            engine.create_partition(&name, "p").await.unwrap();
            engine.close().await; // kill -9: nothing flushed since the drop
            let engine = Engine::open(meta.clone(), opts.clone()).await.unwrap();
            engine.flush(&[]).await.unwrap();
            assert_eq!(engine.count(&name).await.unwrap(), 0, "{label}");
            engine
                .insert(&name, "p", vec![], rows(3, new_dim as usize), 3)
                .await
                .unwrap();
            engine.flush(&[]).await.unwrap();
            assert_eq!(engine.count(&name).await.unwrap(), 3, "{label}");
        }
    }
}

/// A tmpfs of a given size, unmounted when dropped: a disk that fills up, and gets space back.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a small tmpfs (root or CAP_SYS_ADMIN), and could not: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// ENOSPC during WAL appends, flushes, merges and index builds: each is an error to its caller, no
/// acknowledged row is lost or doubled, and the node carries on once space returns (after a restart too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_calls_but_loses_nothing_acknowledged() {
    use mishards::meta::{MetaOptions, MetaStore, MetaUri, SqliteTarget};
    use mishards::node::engine::{Engine, EngineOptions};
    let disk = SmallDisk::mount("3m");
    let opts = EngineOptions {
        gc_grace: Duration::ZERO,
        index_build_rows: 100,
        ..writer_options(disk.path())
    };
    let uri = MetaUri::Sqlite(SqliteTarget::File(disk.path().join("meta.sqlite")));
    let open = || async {
        let meta = MetaStore::open(&uri, &MetaOptions::default())
            .await
            .unwrap();
        Engine::open(meta, opts.clone()).await.unwrap()
    };
    let engine = open().await;
    engine.create_collection("full", 64, 1, 1).await.unwrap();
    let mut rng = SplitMix64::new(5);
    let mut acknowledged = 0i64;
    let mut refused = None;
    // Inserts (WAL appends) and flushes (segment files) until the disk refuses; bounded.
    for round in 0..400 {
        let flat: Vec<f32> = rng.vectors(100, 64).concat();
        match engine
            .insert("full", "", vec![], Vectors::Float(flat), 100)
            .await
        {
            Ok(_) => acknowledged += 100,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        if round % 5 == 4 && engine.flush(&[]).await.is_err() {
            // A failed flush keeps its rows in the log and the buffer; go on until inserts fail too.
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(
        refused.to_string().contains("No space left on device")
            || refused.to_string().contains("full"),
        "{refused}"
    );
    assert!(acknowledged > 0);
    // Flush, merge and index build on a full disk: errors, never a panic or a hang.
    let flushed = engine.flush(&[]).await;
    let indexed = engine.create_index("full", 2, r#"{"nlist": 4}"#).await;
    assert!(
        flushed.is_err() || indexed.is_err(),
        "something must have needed space"
    );

    // Space returns: everything acknowledged is there, once.
    disk.resize("64m");
    engine.flush(&[]).await.unwrap();
    assert_eq!(engine.count("full").await.unwrap(), acknowledged);
    engine
        .create_index("full", 2, r#"{"nlist": 4}"#)
        .await
        .unwrap();
    let flat: Vec<f32> = rng.vectors(100, 64).concat();
    engine
        .insert("full", "", vec![], Vectors::Float(flat), 100)
        .await
        .unwrap();
    acknowledged += 100;
    engine.close().await;
    let engine = open().await;
    engine.flush(&[]).await.unwrap();
    assert_eq!(
        engine.count("full").await.unwrap(),
        acknowledged,
        "after a restart"
    );
    engine.close().await;
}

/// A write node's engine on `storage` that flushes only when told.
fn writer_options(storage: &std::path::Path) -> mishards::node::engine::EngineOptions {
    mishards::node::engine::EngineOptions {
        role: mishards::config::Role::Writer,
        storage: storage.to_path_buf(),
        auto_flush_interval: Duration::from_secs(3600),
        gc_grace: Duration::from_secs(60),
        cache_bytes: 1 << 30,
        index_build_rows: 4096,
        wal_damage: mishards::node::wal::DamagePolicy::Refuse,
    }
}
