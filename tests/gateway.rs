//! The gateway in front of an in-process cluster (write node + read nodes on one storage folder): exact
//! answers split across read nodes, a read node killed under load, a read node added, the write node down
//! and back. SQLite metadata always; MariaDB too when MISHARDS_TEST_MYSQL_URL is set.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    Client, RandomVectors, SplitMix64, TestCluster, cmd, code, collection, conn_stats,
    create_collection, create_partition, flush, insert, load_files, schema, search, search_exact,
    search_param, send_search,
};
use mishards::gateway::routing::GetOwners;
use mishards::proto::{self, ErrorCode};

const DIM: usize = common::FILE_DIM;
const ROWS: usize = common::FILE_ROWS;

/// The routing actor's current file → owning read node map.
async fn file_owners(
    cluster: &TestCluster,
) -> std::collections::HashMap<i64, mishards::config::NodeAddr> {
    cluster
        .gateway
        .actors
        .routing
        .send(GetOwners)
        .await
        .unwrap()
}

/// `CountCollection`'s row count for `name`; a failed call fails the test.
async fn row_count(c: &mut Client, name: &str) -> i64 {
    c.count_collection(collection(name))
        .await
        .unwrap()
        .into_inner()
        .collection_row_count
}

/// `requests` per read node from conn_stats.
async fn requests_by_node(cluster: &TestCluster) -> Vec<(String, u64)> {
    let stats = cluster.stats().await;
    stats["read_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

async fn search_over_all_readers(meta: Option<&common::TestDb>) {
    let cluster = TestCluster::start(3, meta).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(21);
    // Twelve files over three read nodes: the rendezvous load bound (1.25 × 4 = 5 files) leaves every node
    // at least two, whatever ports the nodes got (six files could legitimately split 3/3/0).
    let data = load_files(&mut c, "spread", 12, &mut rng).await;
    let queries = rng.vectors(5, DIM);
    let via_gateway = search_exact(&mut c, "spread", &data, &queries, 10).await;

    // The same as one node's own exact search over everything.
    let mut direct = common::client(cluster.writer.as_ref().unwrap().addr).await;
    let single = search(&mut direct, "spread", &queries, 10).await;
    assert_eq!(via_gateway.ids, single.ids);
    for (a, b) in via_gateway.distances.iter().zip(&single.distances) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0));
    }
    // Every read node took part.
    let requests = requests_by_node(&cluster).await;
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|(_, n)| *n > 0), "{requests:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_is_split_across_read_nodes_and_equals_the_exact_answer() {
    search_over_all_readers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_mysql_metadata() {
    let Some(db) = common::mysql_db().await else {
        return;
    };
    search_over_all_readers(Some(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_node_killed_under_load_costs_no_answer() {
    let mut cluster = TestCluster::start(3, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(22);
    let data = load_files(&mut c, "killed", 6, &mut rng).await;
    let queries = rng.vectors(3, DIM);
    let expected = search_exact(&mut c, "killed", &data, &queries, 10).await;

    // Bounded load: 4 clients × 15 searches; a read node stops a third of the way through.
    let addr = cluster.gateway.addr;
    let mut load = Vec::new();
    for _ in 0..4 {
        let (queries, expected) = (queries.clone(), expected.clone());
        load.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            for _ in 0..15 {
                let got = search(&mut c, "killed", &queries, 10).await;
                assert_eq!(code(&got.status), 0, "{:?}", got.status);
                assert_eq!(got.ids, expected.ids, "a search lost part of its answer");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.stop_reader(1).await;
    for l in load {
        l.await.unwrap();
    }
    // The gateway noticed, and keeps answering in full.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = cluster.stats().await;
        let down = stats["read_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "down")
            .count();
        if down == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped node is not marked down: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        search(&mut c, "killed", &queries, 10).await.ids,
        expected.ids
    );

    // With every read node gone the answer is an error naming the files and nodes, never a short answer.
    cluster.stop_reader(0).await;
    cluster.stop_reader(2).await;
    let none = search(&mut c, "killed", &queries, 10).await;
    assert_eq!(
        code(&none.status),
        ErrorCode::UnexpectedError as i32,
        "{:?}",
        none.status
    );
    let reason = none.status.unwrap().reason;
    assert!(
        reason.contains("files") && reason.contains("127.0.0.1:"),
        "{reason}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_node_added_takes_only_its_share() {
    // On the hash ring: rendezvous's load bound may also move a file between old nodes when the share
    // per node shrinks (the nodes' ports, and so their hashes, differ from run to run); the router's unit
    // tests check rendezvous's minimal movement where the bound does not bite.
    let mut cluster = TestCluster::start_with(
        2,
        None,
        &[("router", "FileBasedHashRingRouter".to_string())],
    )
    .await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(23);
    // Twenty files: the chance that none lands on the new node, (2/3)^20, is 0.03%.
    let data = load_files(&mut c, "grow", 20, &mut rng).await;
    let before = file_owners(&cluster).await;
    assert_eq!(before.len(), 20);

    let added = cluster.add_reader().await;
    cluster.publish_readers();
    cluster.wait_until_healthy(3).await;
    let after = file_owners(&cluster).await;
    let new_node = mishards::config::NodeAddr {
        host: added.ip().to_string().into(),
        port: added.port(),
    };
    let moved: Vec<i64> = before
        .iter()
        .filter(|(id, owner)| after.get(id) != Some(owner))
        .map(|(id, _)| *id)
        .collect();
    assert!(!moved.is_empty(), "the new node got no files");
    assert!(
        moved.iter().all(|id| after[id] == new_node),
        "files moved between old nodes: {moved:?}"
    );

    let queries = rng.vectors(3, DIM);
    search_exact(&mut c, "grow", &data, &queries, 10).await;
    let requests = requests_by_node(&cluster).await;
    let served = requests
        .iter()
        .find(|(n, _)| *n == new_node.to_string())
        .map(|(_, r)| *r)
        .unwrap_or(0);
    assert!(served > 0, "the new node served nothing: {requests:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_write_node_down_searches_go_on_and_writes_fail_clearly() {
    let mut cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(24);
    let data = load_files(&mut c, "steady", 2, &mut rng).await;
    let queries = rng.vectors(2, DIM);
    let expected = search_exact(&mut c, "steady", &data, &queries, 5).await;

    cluster.stop_writer().await;
    let name = || collection("steady");
    assert_eq!(
        search(&mut c, "steady", &queries, 5).await.ids,
        expected.ids
    );
    assert!(
        c.has_collection(name())
            .await
            .unwrap()
            .into_inner()
            .bool_reply
    );
    let described = c.describe_collection(name()).await.unwrap().into_inner();
    assert_eq!(
        (code(&described.status), described.dimension),
        (0, DIM as i64)
    );
    let listed = c
        .show_collections(proto::Command::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.collection_names, ["steady"]);
    let parts = c.show_partitions(name()).await.unwrap().into_inner();
    assert_eq!(parts.partition_tag_array, ["_default"]);
    assert_eq!(row_count(&mut c, "steady").await, 2 * ROWS as i64);
    // pymilvus asks for the version on connect: answered by the gateway itself.
    assert_eq!(cmd(&mut c, "version").await.string_reply, "1.1.1");

    let started = Instant::now();
    let refused = insert(&mut c, "steady", "", &queries, Vec::new()).await;
    assert_eq!(code(&refused.status), ErrorCode::ConnectFailed as i32);
    let reason = refused.status.unwrap().reason;
    assert!(
        reason.contains("write node") && reason.contains(&cluster.writer_port.to_string()),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "writes must fail fast"
    );
    let refused = c
        .create_collection(schema("x", 4, 1, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.error_code, ErrorCode::ConnectFailed as i32);

    cluster.restart_writer().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = insert(&mut c, "steady", "", &queries, Vec::new()).await;
        if code(&r.status) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = c
        .flush(proto::FlushParam::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0);
    assert_eq!(row_count(&mut c, "steady").await, 2 * ROWS as i64 + 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_tags_and_deletes_pass_through_the_gateway() {
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(25);
    create_collection(&mut c, schema("tagged", 8, 1024, 2)).await;
    create_partition(&mut c, "tagged", "p1").await;
    let v = rng.vectors(50, 8);
    let r = insert(&mut c, "tagged", "p1", &v, Vec::new()).await;
    let ids = r.vector_id_array;
    let d = insert(&mut c, "tagged", "", &v[..10], Vec::new()).await;
    assert_eq!(code(&d.status), 0);
    c.flush(proto::FlushParam::default()).await.unwrap();
    // A delete scoped to the default partition does not touch p1's rows.
    let st = c
        .delete_by_id(proto::DeleteByIdParam {
            collection_name: "tagged".into(),
            partition_tag: "_default".into(),
            id_array: vec![ids[0]],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0);
    c.flush(proto::FlushParam::default()).await.unwrap();
    let got = c
        .get_vectors_by_id(proto::VectorsIdentity {
            collection_name: "tagged".into(),
            id_array: vec![ids[0]],
            partition_tag: "p1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.vectors_data[0].float_data, v[0]);
    let only_p1 = send_search(
        &mut c,
        proto::SearchParam {
            partition_tag_array: vec!["p.".into()],
            ..search_param("tagged", &v[..1], 60)
        },
    )
    .await;
    assert_eq!(code(&only_p1.status), 0);
    let found: HashSet<i64> = only_p1.ids.iter().copied().filter(|id| *id >= 0).collect();
    assert_eq!(found, ids.iter().copied().collect::<HashSet<_>>());
    let bad = send_search(
        &mut c,
        proto::SearchParam {
            partition_tag_array: vec!["nope".into()],
            ..search_param("tagged", &v[..1], 1)
        },
    )
    .await;
    assert_eq!(code(&bad.status), ErrorCode::IllegalArgument as i32);
    let wrong_dim = search(&mut c, "tagged", &[vec![0.0; 3]], 1).await;
    assert_eq!(code(&wrong_dim.status), ErrorCode::IllegalDimension as i32);
    let huge = search(&mut c, "tagged", &vec![vec![0.0; 8]; 2000], 16384).await;
    assert_eq!(code(&huge.status), ErrorCode::IllegalArgument as i32);
    let missing = search(&mut c, "missing", &[vec![0.0; 8]], 1).await;
    assert_eq!(code(&missing.status), ErrorCode::CollectionNotExists as i32);
    cluster.shutdown().await;
}

/// Runs one statement on the cluster's SQLite metadata from outside the cluster.
async fn sqlite_exec(cluster: &TestCluster, sql: &str) {
    use sqlx::Connection;
    let path = cluster.storage().join("meta.sqlite");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

async fn wait_for_stale(cluster: &TestCluster, stale: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = cluster.stats().await;
        if stats["metadata"]["stale"] == stale {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "metadata stale never became {stale}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_go_on_through_a_metadata_outage_and_it_recovers() {
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(26);
    let data = load_files(&mut c, "outage", 4, &mut rng).await;
    let queries = rng.vectors(3, DIM);
    let expected = search_exact(&mut c, "outage", &data, &queries, 10).await;

    // The file table disappears: every metadata read fails, for the gateway and the nodes alike.
    sqlite_exec(&cluster, "ALTER TABLE TableFiles RENAME TO TableFiles_away").await;
    let stats = wait_for_stale(&cluster, true).await;
    assert!(stats["metadata"]["failures"].as_u64().unwrap() >= 1);
    for _ in 0..5 {
        let got = search(&mut c, "outage", &queries, 10).await;
        assert_eq!(code(&got.status), 0, "{:?}", got.status);
        assert_eq!(got.ids, expected.ids);
    }

    sqlite_exec(&cluster, "ALTER TABLE TableFiles_away RENAME TO TableFiles").await;
    let stats = wait_for_stale(&cluster, false).await;
    assert_eq!(stats["metadata"]["outages"], 1);
    assert_eq!(
        search(&mut c, "outage", &queries, 10).await.ids,
        expected.ids
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_link_is_restarted_and_restart_intensity_is_bounded() {
    use mishards::gateway::cluster::GetLinks;
    use mishards::gateway::control::Crash;
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(27);
    let data = load_files(&mut c, "crashy", 2, &mut rng).await;
    let queries = rng.vectors(2, DIM);
    let links = cluster.gateway.actors.cluster.send(GetLinks).await.unwrap();
    let (node, link) = links
        .iter()
        .next()
        .map(|(n, l)| (n.to_string(), l.clone()))
        .unwrap();
    let node_stats = |stats: serde_json::Value| {
        stats["read_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node.as_str())
            .cloned()
            .unwrap()
    };

    link.do_send(Crash);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = node_stats(cluster.stats().await);
        if s["restarts"] == 1 && s["state"] == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "the link was not restarted: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    search_exact(&mut c, "crashy", &data, &queries, 10).await;

    // Crashing again and again: after five restarts in a minute the link is held down, and searches
    // go to the other node.
    for _ in 0..6 {
        link.do_send(Crash);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = node_stats(cluster.stats().await);
        if s["state"] == "down"
            && s["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("restarted")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restart intensity not bounded: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    search_exact(&mut c, "crashy", &data, &queries, 10).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_through_the_gateway_warms_every_read_node() {
    let cluster = TestCluster::start(2, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(28);
    load_files(&mut c, "warm", 2, &mut rng).await;
    let cache_used = |addr: std::net::SocketAddr| async move {
        let mut n = common::client(addr).await;
        let info = cmd(&mut n, "get_system_info").await.string_reply;
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["cache_used_bytes"]
            .as_u64()
            .unwrap()
    };
    for r in cluster.readers.iter().flatten() {
        assert_eq!(cache_used(r.addr).await, 0);
    }
    let st = c
        .preload_collection(proto::PreloadCollectionParam {
            collection_name: "warm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
    for r in cluster.readers.iter().flatten() {
        assert!(
            cache_used(r.addr).await >= 2 * (ROWS * DIM * 4) as u64,
            "read node {} was not warmed",
            r.addr
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_gate_keeps_out_nodes_of_another_version() {
    let cluster = TestCluster::start(1, None).await;
    let reader = cluster.readers[0].as_ref().unwrap().addr.to_string();
    let picky = common::start_gateway_with(
        &cluster.writer.as_ref().unwrap().addr.to_string(),
        &cluster.meta_uri,
        &cluster.hosts_file,
        &[("version-gate", "2.0.".to_string())],
    )
    .await;
    let mut c = common::client(picky.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = conn_stats(&mut c).await;
        let node = stats["read_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == reader.as_str())
            .cloned();
        if let Some(node) = node
            && node["state"] == "down"
        {
            assert!(
                node["reason"].as_str().unwrap().contains("version gate"),
                "{node}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 1.1.1 node passed a 2.0. gate: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    picky.shutdown().await;
    cluster.shutdown().await;
}

/// The files each attempt of the newest search reloaded, and its result.
async fn search_and_reloads(
    cluster: &TestCluster,
    c: &mut Client,
    query: &[f32],
) -> (proto::TopKQueryResult, Vec<i64>) {
    let result = search(c, "marks", &[query.to_vec()], 5).await;
    assert_eq!(code(&result.status), 0, "{:?}", result.status);
    let recent = cluster
        .gateway
        .actors
        .inspector
        .send(mishards::gateway::inspect::Recent { limit: 1 })
        .await
        .unwrap();
    let reloaded = recent[0]
        .nodes
        .iter()
        .flat_map(|n| &n.attempts)
        .flat_map(|a| a.reloaded.clone())
        .collect();
    (result, reloaded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_node_reloads_a_file_once_after_its_delete_marks_change() {
    let cluster = TestCluster::start(1, None).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(31);
    let data = load_files(&mut c, "marks", 1, &mut rng).await;
    let (deleted, query) = data[0].clone();
    // The node's first search of the file, then one at the same version: nothing to reload.
    for _ in 0..2 {
        let (result, reloaded) = search_and_reloads(&cluster, &mut c, &query).await;
        assert_eq!(result.ids[0], deleted);
        assert!(reloaded.is_empty(), "{reloaded:?}");
    }
    let st = c
        .delete_by_id(proto::DeleteByIdParam {
            collection_name: "marks".into(),
            partition_tag: String::new(),
            id_array: vec![deleted],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
    flush(&mut c, &["marks"]).await;
    // The file's delete marks changed: the node reloads it before searching, once.
    let (result, reloaded) = search_and_reloads(&cluster, &mut c, &query).await;
    assert!(!result.ids.contains(&deleted), "{:?}", result.ids);
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    let (result, reloaded) = search_and_reloads(&cluster, &mut c, &query).await;
    assert!(!result.ids.contains(&deleted));
    assert!(reloaded.is_empty(), "reloaded again: {reloaded:?}");
    cluster.shutdown().await;
}
