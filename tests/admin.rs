//! The gateway's admin HTTP listener against an in-process cluster: JSON endpoints, Prometheus text,
//! search manifests by trace id, the slow-query ring, readiness, the bind address, and `mishards inspect`
//! reading it all from another process.

mod common;

use std::time::Duration;

use common::{
    RandomVectors, SplitMix64, TestCluster, admin_get, admin_json, code, newest_manifest,
    start_gateway_with, wait_for,
};
use serde_json::Value;

const DIM: usize = 16;
/// Rows per flush: 17,000 × 16 floats is just over index_file_size = 1 MB, so every flush stays its own
/// file and a search fans out to both read nodes.
const ROWS: usize = 17_000;

/// Creates `name` and loads `files` flushed files of `ROWS` rows each.
async fn load(cluster: &TestCluster, name: &str, files: usize) {
    let mut c = cluster.client().await;
    common::load_sized(&mut c, name, files, ROWS, DIM, &mut SplitMix64::new(7)).await;
}

async fn search(cluster: &TestCluster, name: &str) {
    let mut c = cluster.client().await;
    let r = common::search(&mut c, name, &SplitMix64::new(9).vectors(2, DIM), 5).await;
    assert_eq!(code(&r.status), 0, "{:?}", r.status);
    assert_eq!(r.row_num, 2);
}

/// The value of the sample `series` (name and labels exactly as printed) in a Prometheus text.
fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_json_or_prometheus_text() {
    let cluster = TestCluster::start(2, None).await;
    let admin = cluster.admin();
    assert!(
        cluster
            .gateway
            .admin_addr
            .is_some_and(|a| a.ip().is_loopback()),
        "the admin listener binds loopback unless told: {:?}",
        cluster.gateway.admin_addr
    );
    load(&cluster, "inspected", 3).await;
    search(&cluster, "inspected").await;

    let (status, doc) = admin_json(&admin, "/healthz").await;
    assert_eq!((status, doc), (200, serde_json::json!({ "status": "ok" })));
    let (status, doc) = admin_json(&admin, "/readyz").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "ready");
    assert_eq!(doc["healthy_read_nodes"], 2);

    // The search's manifest, newest first, and the same one by its trace id.
    let manifest = newest_manifest(&cluster, "inspected").await;
    let trace_id = manifest["trace_id"].as_str().expect("trace_id").to_string();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace_id}"
    );
    assert_eq!(manifest["rpc"], "Search");
    assert_eq!(manifest["nq"], 2);
    assert_eq!(manifest["topk"], 5);
    assert_eq!(manifest["code"], 0);
    assert!(manifest["epoch"].as_u64().unwrap_or(0) > 0, "{manifest}");
    let planned = manifest["files"].as_u64().unwrap_or(0);
    assert!(planned >= 1, "{manifest}");
    let asked: u64 = manifest["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .flat_map(|n| n["attempts"].as_array().into_iter().flatten())
        .map(|a| a["files"].as_array().map_or(0, |f| f.len() as u64))
        .sum();
    assert_eq!(
        asked, planned,
        "every planned file was asked once: {manifest}"
    );
    let (status, found) = admin_json(&admin, &format!("/requests/{trace_id}")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found, manifest);
    let (status, found) = admin_json(
        &admin,
        &format!("/requests/{}", trace_id.to_ascii_uppercase()),
    )
    .await;
    assert_eq!((status, &found["trace_id"]), (200, &manifest["trace_id"]));

    // Errors are JSON too.
    let (status, doc) = admin_json(&admin, &format!("/requests/{}", "0".repeat(32))).await;
    assert_eq!(status, 404, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("no search")),
        "{doc}"
    );
    let (status, doc) = admin_json(&admin, "/requests/not-a-trace-id").await;
    assert_eq!(status, 400, "{doc}");
    assert!(
        doc["error"].as_str().is_some_and(|e| e.contains("32 hex")),
        "{doc}"
    );
    let (status, doc) = admin_json(&admin, "/requests?limit=many").await;
    assert_eq!(status, 400, "{doc}");
    let (status, doc) = admin_json(&admin, "/requests?limit=0").await;
    assert_eq!((status, doc["count"].as_u64()), (200, Some(0)), "{doc}");
    let (status, doc) = admin_json(&admin, "/no/such/page").await;
    assert_eq!(status, 404, "{doc}");
    assert!(
        doc["endpoints"].as_array().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );

    // The default slow-query threshold is 1 s: only manifests at least that slow are in /slow.
    let (status, recent) = admin_json(&admin, "/requests").await;
    assert_eq!(status, 200);
    let (status, slow) = admin_json(&admin, "/slow?limit=100").await;
    assert_eq!(status, 200, "{slow}");
    assert_eq!(slow["slow_query_ms"], 1000);
    let slow_ids: Vec<&Value> = slow["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|m| &m["trace_id"])
        .collect();
    for m in recent["requests"].as_array().expect("requests") {
        let is_slow = m["total_ms"].as_f64().unwrap_or(0.0) >= 1000.0;
        assert_eq!(slow_ids.contains(&&m["trace_id"]), is_slow, "{m}");
    }

    // /cluster: read nodes with their state and load, the write node, routing, metadata.
    let (status, doc) = admin_json(&admin, "/cluster").await;
    assert_eq!(status, 200, "{doc}");
    let read_nodes = doc["read_nodes"].as_array().expect("read_nodes");
    assert_eq!(read_nodes.len(), 2, "{doc}");
    for n in read_nodes {
        assert_eq!(n["state"], "healthy", "{doc}");
        for key in [
            "in_flight",
            "latency_ewma_ms",
            "requests",
            "errors",
            "restarts",
            "files_owned",
        ] {
            assert!(n[key].is_number(), "{key} missing: {doc}");
        }
    }
    assert_eq!(doc["write_node"]["state"], "healthy", "{doc}");
    assert_eq!(doc["router"]["kind"], "rendezvous");
    assert!(
        doc["router"]["snapshot_epoch"].as_u64().unwrap_or(0) > 0,
        "{doc}"
    );
    let placed: u64 = doc["placement"]
        .as_object()
        .expect("placement")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(placed >= planned, "{doc}");
    assert!(doc["metadata"]["epoch"].as_u64().unwrap_or(0) > 0, "{doc}");
    assert_eq!(doc["metadata"]["stale"], false);
    assert!(
        doc["metadata"]["lag_seconds"]
            .as_f64()
            .is_some_and(|l| l < 60.0),
        "{doc}"
    );

    // /metrics: Prometheus text; the Search counter grows with each search; node gauges are there.
    let reply = mishards::gateway::admin_client::fetch(&admin, "/metrics", Duration::from_secs(10))
        .await
        .expect("GET /metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .as_deref()
            .is_some_and(|t| t.contains("openmetrics-text")),
        "{:?}",
        reply.content_type
    );
    let text = reply.body;
    for line in [
        "# TYPE mishards_rpc_requests counter",
        "# TYPE mishards_rpc_duration_seconds histogram",
        "# TYPE mishards_node_state gauge",
        "# TYPE mishards_node_in_flight gauge",
        "# TYPE mishards_node_latency_ewma_seconds gauge",
        "# TYPE mishards_metadata_poll_lag_seconds gauge",
        "# TYPE mishards_metadata_snapshot_epoch gauge",
        "# TYPE mishards_routing_files_owned gauge",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    for n in read_nodes {
        let series = format!(
            "mishards_node_state{{node=\"{}\",role=\"read\",state=\"healthy\"}}",
            n["node"].as_str().unwrap_or_default()
        );
        assert_eq!(sample_value(&text, &series), Some(1.0), "{series}:\n{text}");
    }
    let searches = "mishards_rpc_requests_total{rpc=\"Search\",code=\"0\"}";
    let before = sample_value(&text, searches).unwrap_or(0.0);
    assert!(before >= 1.0, "{text}");
    search(&cluster, "inspected").await;
    wait_for(
        "the Search counter to grow",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                let (_, text) = admin_get(&admin, "/metrics").await;
                let now = sample_value(&text, searches).unwrap_or(0.0);
                if now > before {
                    Ok(())
                } else {
                    Err(format!("{now}"))
                }
            }
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_at_least_slow_query_ms_long_are_kept_in_slow() {
    // 0 ms: every search is slow.
    let cluster = TestCluster::start_with(1, None, &[("slow-query-ms", "0".into())]).await;
    load(&cluster, "slowly", 1).await;
    search(&cluster, "slowly").await;
    let manifest = newest_manifest(&cluster, "slowly").await;
    let (status, slow) = admin_json(&cluster.admin(), "/slow").await;
    assert_eq!(status, 200, "{slow}");
    assert_eq!(slow["slow_query_ms"], 0);
    let kept = slow["requests"].as_array().expect("requests");
    assert!(
        kept.iter().any(|m| m["trace_id"] == manifest["trace_id"]),
        "{slow}"
    );
    // A slow one resolves by its trace id like any other.
    let (status, _) = admin_json(
        &cluster.admin(),
        &format!(
            "/requests/{}",
            manifest["trace_id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(status, 200);
    cluster.shutdown().await;
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_a_read_node_is_healthy() {
    let mut cluster = TestCluster::start(0, None).await;
    let admin = cluster.admin();
    // No read nodes at all.
    let (status, doc) = admin_json(&admin, "/readyz").await;
    assert_eq!(status, 503, "{doc}");
    assert_eq!(doc["status"], "not ready");
    let reasons = doc["reasons"].to_string();
    assert!(reasons.contains("no read nodes"), "{doc}");

    // A read node that does not answer.
    std::fs::write(&cluster.hosts_file, format!("127.0.0.1:{}\n", dead_port())).expect("hosts");
    let doc = wait_for("the dead node in /readyz", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            let (status, doc) = admin_json(&admin, "/readyz").await;
            match (status, doc["read_nodes"].as_u64()) {
                (503, Some(1)) => Ok(doc),
                _ => Err(doc.to_string()),
            }
        }
    })
    .await;
    assert!(
        doc["reasons"]
            .to_string()
            .contains("no read node is healthy"),
        "{doc}"
    );

    // A real one.
    cluster.add_reader().await;
    cluster.publish_readers();
    let doc = wait_for("readiness", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            let (status, doc) = admin_json(&admin, "/readyz").await;
            if status == 200 {
                Ok(doc)
            } else {
                Err(doc.to_string())
            }
        }
    })
    .await;
    assert_eq!(doc["status"], "ready");
    assert!(doc["snapshot_epoch"].as_u64().unwrap_or(0) > 0, "{doc}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_binds_the_host_it_is_told_or_none() {
    let cluster = TestCluster::start(0, None).await;
    let writer = format!("127.0.0.1:{}", cluster.writer_port);
    let everywhere = start_gateway_with(
        &writer,
        &cluster.meta_uri,
        &cluster.hosts_file,
        &[("admin-host", "0.0.0.0".into())],
    )
    .await;
    let addr = everywhere.admin_addr.expect("admin listener");
    assert!(addr.ip().is_unspecified(), "{addr}");
    let (status, _) = admin_get(&format!("127.0.0.1:{}", addr.port()), "/healthz").await;
    assert_eq!(status, 200);
    everywhere.shutdown().await;

    let off = start_gateway_with(
        &writer,
        &cluster.meta_uri,
        &cluster.hosts_file,
        &[("admin-port", "off".into())],
    )
    .await;
    assert_eq!(off.admin_addr, None);
    off.shutdown().await;

    // The admin listener stops with the gateway.
    let admin = cluster.admin();
    cluster.shutdown().await;
    let refused =
        mishards::gateway::admin_client::fetch(&admin, "/healthz", Duration::from_secs(5)).await;
    assert!(refused.is_err(), "{refused:?}");
}

/// Runs `mishards ARGS` with an empty environment, bounded to 30 s.
async fn mishards(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(args)
        .env_clear()
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("mishards finished within 30 s")
        .expect("run mishards")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mishards_inspect_prints_the_fan_out_as_a_tree() {
    let cluster = TestCluster::start(2, None).await;
    load(&cluster, "treed", 3).await;
    search(&cluster, "treed").await;
    let manifest = newest_manifest(&cluster, "treed").await;
    let trace_id = manifest["trace_id"].as_str().expect("trace_id");
    let admin = cluster.admin();

    let out = mishards(&["inspect", trace_id, "--admin", &admin]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Search  collection=treed nq=2 topk=5  code=0"),
        "{stdout}"
    );
    assert!(first.ends_with(&format!("trace {trace_id}")), "{stdout}");
    assert!(stdout.contains("├─ plan "), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("└─ merge ")),
        "{stdout}"
    );
    let nodes = manifest["nodes"].as_array().expect("nodes");
    assert_eq!(
        nodes.len(),
        2,
        "three files over two read nodes: {manifest}"
    );
    for node in nodes {
        let node = node["node"].as_str().unwrap_or_default();
        assert!(
            stdout.contains(&format!("├─ {node}  ")),
            "{node}:\n{stdout}"
        );
    }
    assert!(stdout.contains("#0 first    ok"), "{stdout}");

    // An unknown trace id, a malformed one, and no admin listener: one clear line each.
    let unknown = "0".repeat(32);
    let out = mishards(&["inspect", &unknown, "--admin", &admin]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("unknown trace id {unknown}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let out = mishards(&["inspect", "xyz", "--admin", &admin]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a trace id"), "{stderr}");

    let nowhere = format!("127.0.0.1:{}", dead_port());
    let out = mishards(&["inspect", trace_id, "--admin", &nowhere]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&nowhere) && stderr.contains("--admin"),
        "{stderr}"
    );
    cluster.shutdown().await;
}
