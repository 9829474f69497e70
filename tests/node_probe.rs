//! A data node's probe listener, in process: `/readyz` before the metadata schema exists and after,
//! `/metrics` with a table whose flush fails, and a foreign schema refused at once.

mod common;

use std::time::Duration;

use common::{
    RandomVectors, SplitMix64, admin_get, client, code, create_collection, flush, insert,
    node_config, schema, wait_for,
};

/// `GET path` from a node's probe listener, as JSON.
async fn probe_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_get(addr, path).await;
    let doc = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path} answered {status}, not JSON ({e}): {body}"));
    (status, doc)
}

/// A read node started before any write node made the schema waits, answers 503 on `/readyz` with
/// the reason, and becomes ready by itself once a write node has created the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_node_waits_for_the_schema_and_becomes_ready_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let starting = mishards::node::prepare(&node_config(
        "ro",
        dir.path(),
        &[("admin-port", "0".into())],
    ))
    .await
    .unwrap();
    let probe = starting.probe_addr().expect("probe listener").to_string();
    let reader = tokio::spawn(starting.run());
    let (status, doc) = wait_for(
        "the reader to wait for the schema",
        Duration::from_secs(10),
        || {
            let probe = probe.clone();
            async move {
                let (status, doc) = probe_json(&probe, "/readyz").await;
                (doc["phase"] == "waiting_for_metadata")
                    .then_some((status, doc.clone()))
                    .ok_or_else(|| doc.to_string())
            }
        },
    )
    .await;
    assert_eq!(status, 503, "{doc}");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("does not exist yet") || reason.contains("do not exist yet"),
        "{doc}"
    );
    let (status, _) = admin_get(&probe, "/healthz").await;
    assert_eq!(status, 200, "alive while waiting");
    let (_, metrics) = admin_get(&probe, "/metrics").await;
    assert!(metrics.contains("mishards_node_ready 0"), "{metrics}");
    assert!(
        metrics.contains("phase=\"waiting_for_metadata\"} 1"),
        "{metrics}"
    );
    assert!(!reader.is_finished(), "the reader waits instead of exiting");

    let writer = mishards::node::start(&node_config("rw", dir.path(), &[]))
        .await
        .unwrap();
    let reader = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .expect("the reader is ready within its backoff after the schema appears")
        .expect("reader task")
        .expect("reader starts");
    let (status, doc) = probe_json(&probe, "/readyz").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["metadata"], "reachable", "{doc}");
    let (_, metrics) = admin_get(&probe, "/metrics").await;
    assert!(metrics.contains("mishards_node_ready 1"), "{metrics}");
    assert!(
        metrics.contains("mishards_node_metadata_reachable 1"),
        "{metrics}"
    );
    // It serves: the writer's collection is seen through the reader.
    let mut w = client(writer.addr).await;
    create_collection(&mut w, schema("seen", 4, 1024, 1)).await;
    let mut r = client(reader.addr).await;
    let has = r
        .has_collection(common::collection("seen"))
        .await
        .unwrap()
        .into_inner();
    assert!(has.bool_reply, "{has:?}");
    reader.shutdown().await;
    // A stopped node's listener is gone with it.
    assert!(
        mishards::gateway::admin_client::fetch(&probe, "/healthz", Duration::from_secs(2))
            .await
            .is_err()
    );
    writer.shutdown().await;
}

/// A `Tables` that exists without Milvus's columns is not a schema still to come: a read node stops
/// at once, naming the table.
#[tokio::test]
async fn a_foreign_schema_stops_a_read_node_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.sqlite");
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE Tables (id INTEGER PRIMARY KEY, name TEXT)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        mishards::node::start(&node_config("ro", dir.path(), &[])),
    )
    .await
    .expect("a foreign schema is refused, not waited for");
    let err = started
        .err()
        .expect("the reader refuses to start")
        .to_string();
    assert!(
        err.contains("metadata table `Tables` does not have Milvus 1.1's columns"),
        "{err}"
    );
}

/// A table whose flush fails is counted in `/metrics` (per table, and in the gauge of tables failing
/// now) and named in `/readyz`, while the others flush; once it flushes, the gauge drops back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_flush_shows_in_metrics_until_the_table_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let node = mishards::node::start(&node_config(
        "rw",
        dir.path(),
        &[
            ("admin-port", "0".into()),
            ("auto-flush-interval", "3600".into()),
        ],
    ))
    .await
    .unwrap();
    let probe = node.probe_addr.expect("probe listener").to_string();
    let mut c = client(node.addr).await;
    create_collection(&mut c, schema("good", 4, 1024, 1)).await;
    create_collection(&mut c, schema("bad", 4, 1024, 1)).await;
    // A file where `bad`'s folder must go: every flush of `bad` fails until it is removed.
    let blocker = mishards::node::segment::table_dir(dir.path(), "bad");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a folder").unwrap();
    let mut rng = SplitMix64::new(7);
    for name in ["good", "bad"] {
        let r = insert(&mut c, name, "", &rng.vectors(10, 4), Vec::new()).await;
        assert_eq!(code(&r.status), 0, "{:?}", r.status);
    }
    let st = c
        .flush(mishards::proto::FlushParam {
            collection_name_array: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(st.error_code, 0, "{st:?}");
    assert!(st.reason.contains("`bad`"), "{st:?}");

    let (status, metrics) = admin_get(&probe, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mishards_node_flush_failures_total{table=\"bad\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("table=\"good\""), "{metrics}");
    assert!(
        metrics.contains("mishards_node_flush_failing_tables 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mishards_node_rows_inserted_total 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mishards_node_rpc_requests_total{rpc=\"Flush\",code=\""),
        "{metrics}"
    );
    let (status, doc) = probe_json(&probe, "/readyz").await;
    assert_eq!(
        status, 200,
        "a node whose one table cannot flush still serves: {doc}"
    );
    assert!(doc["flush_failing"]["bad"].is_string(), "{doc}");
    assert!(doc["flush_failing"].get("good").is_none(), "{doc}");

    std::fs::remove_file(&blocker).unwrap();
    flush(&mut c, &[]).await;
    let (_, metrics) = admin_get(&probe, "/metrics").await;
    assert!(
        metrics.contains("mishards_node_flush_failing_tables 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mishards_node_flush_failures_total{table=\"bad\"} 1"),
        "the count stays: {metrics}"
    );
    let (_, doc) = probe_json(&probe, "/readyz").await;
    assert_eq!(doc["flush_failing"], serde_json::json!({}), "{doc}");
    node.shutdown().await;
}
