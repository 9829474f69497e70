//! The operator's console without a browser: the page and its assets as the admin listener serves
//! them, and the JSON only the page needs (`/collections` with the routing placement, `/live` with the
//! per-second samples, `/console/info`, the read-only `/console/faults`) against an in-process cluster;
//! and `mishards demo` taking a free admin port when the default one is taken. The page itself, in a
//! real browser: tests/console_browser.rs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    FAULT_TOKEN, RandomVectors, SplitMix64, TestCluster, admin_json, admin_request, code,
    newest_manifest, wait_for,
};
use serde_json::Value;

const DIM: usize = 16;
/// 17,000 × 16 floats is just over index_file_size = 1 MB: every flush stays its own file.
const ROWS: usize = 17_000;

async fn load_and_search(cluster: &TestCluster, name: &str, files: usize) {
    let mut c = cluster.client().await;
    common::load_sized(&mut c, name, files, ROWS, DIM, &mut SplitMix64::new(3)).await;
    let r = common::search(&mut c, name, &SplitMix64::new(4).vectors(2, DIM), 5).await;
    assert_eq!(code(&r.status), 0, "{:?}", r.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_json_against_a_real_cluster() {
    let cluster = TestCluster::start(2, None).await;
    let admin = cluster.admin();
    load_and_search(&cluster, "shown", 3).await;

    // The page and its two assets, from the binary, with their types; the page under a strict CSP.
    let page = mishards::gateway::admin_client::fetch(&admin, "/", Duration::from_secs(10))
        .await
        .expect("GET /");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("<title>mishards console</title>"),
        "{}",
        page.body
    );
    for (path, kind) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
    ] {
        let asset = mishards::gateway::admin_client::fetch(&admin, path, Duration::from_secs(10))
            .await
            .expect("asset");
        assert_eq!(
            (asset.status, asset.content_type.as_deref()),
            (200, Some(kind)),
            "{path}"
        );
        assert!(asset.body.len() > 1000, "{path}: {}", asset.body);
    }

    // Settings the page reads.
    let (status, info) = admin_json(&admin, "/console/info").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["fault_injection"], false);
    assert_eq!(info["tracing"], false);
    assert_eq!(info["discovery_source"], "file");
    assert_eq!(info["jaeger_url"], "http://127.0.0.1:16686");
    assert_eq!(info["refresh_ms"], 1000);
    let (status, _) = admin_json(&admin, "/console/faults").await;
    assert_eq!(status, 404, "no faults view without fault injection");

    // Collections: the files of the snapshot, each with the read node the placement gives it.
    let (status, doc) = admin_json(&admin, "/collections").await;
    assert_eq!(status, 200, "{doc}");
    let collection = doc["collections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "shown"))
        .unwrap_or_else(|| panic!("no collection `shown`: {doc}"));
    assert_eq!(collection["dimension"], DIM);
    assert_eq!(collection["metric"], "L2");
    assert_eq!(collection["files_total"], 3, "{collection}");
    assert_eq!(collection["rows_total"], 3 * ROWS, "{collection}");
    let readers: Vec<String> = (0..2).map(|i| cluster.reader_host(i)).collect();
    let files = collection["files"].as_array().expect("files");
    let owners: HashMap<i64, String> = files
        .iter()
        .map(|f| {
            let owner = f["owner"].as_str().unwrap_or_default().to_string();
            assert!(readers.contains(&owner), "owner of {f} is not a read node");
            assert!(f["size_bytes"].as_i64().unwrap_or(0) > 0, "{f}");
            assert_eq!(f["rows"], ROWS, "{f}");
            assert_eq!(f["partition"], "_default", "{f}");
            (f["id"].as_i64().expect("file id"), owner)
        })
        .collect();
    let by_owner: u64 = collection["files_by_owner"]
        .as_object()
        .expect("files_by_owner")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by_owner, 3, "{collection}");
    // The search asked each file's owner first: the page's placement is the one searches use.
    let manifest = newest_manifest(&cluster, "shown").await;
    for node in manifest["nodes"].as_array().expect("nodes") {
        for attempt in node["attempts"].as_array().expect("attempts") {
            if attempt["why"] != "first" {
                continue;
            }
            for file in attempt["files"].as_array().expect("files") {
                let id = file.as_i64().expect("file id");
                assert_eq!(
                    owners.get(&id).map(String::as_str),
                    node["node"].as_str(),
                    "file {id}: {manifest}"
                );
            }
        }
    }

    // The live series: the search shows up in a per-second sample within a couple of seconds.
    let sample = wait_for(
        "a live sample with the search",
        Duration::from_secs(5),
        || {
            let admin = admin.clone();
            async move {
                let (status, doc) = admin_json(&admin, "/live?seconds=30").await;
                assert_eq!(status, 200, "{doc}");
                assert_eq!(doc["keep_seconds"], 600);
                doc["samples"]
                    .as_array()
                    .and_then(|s| {
                        s.iter()
                            .find(|s| s["searches"].as_u64() >= Some(1))
                            .cloned()
                    })
                    .ok_or_else(|| doc.to_string())
            }
        },
    )
    .await;
    assert!(
        sample["search_p50_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{sample}"
    );
    assert!(
        sample["search_qps"].as_f64().unwrap_or(0.0) > 0.0,
        "{sample}"
    );
    assert_eq!(sample["search_errors"], 0, "{sample}");
    let (status, doc) = admin_json(&admin, "/live?seconds=x").await;
    assert_eq!(status, 400, "{doc}");

    // The cluster view's extra columns: p95, search calls, batching.
    let (_, c) = admin_json(&admin, "/cluster").await;
    let calls: u64 = c["read_nodes"]
        .as_array()
        .expect("read nodes")
        .iter()
        .map(|n| {
            assert!(n.get("latency_p95_ms").is_some(), "{n}");
            assert!(n.get("batched_searches").is_some(), "{n}");
            n["search_calls"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(calls >= 1, "{c}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faults_view_reads_without_the_token_and_changes_nothing() {
    let cluster = TestCluster::start_with_faults(1, 11, &[]).await;
    let admin = cluster.admin();
    let (_, info) = admin_json(&admin, "/console/info").await;
    assert_eq!(info["fault_injection"], true, "{info}");
    let rule = r#"{"target": "read", "rpcs": ["SearchInFiles"], "kind": {"type": "delay", "fixed_ms": 1}}"#;
    let (status, body) =
        admin_request(&admin, "POST", "/faults", Some(FAULT_TOKEN), Some(rule)).await;
    assert_eq!(status, 201, "{body}");
    let (status, doc) = admin_json(&admin, "/console/faults").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["rules"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["rules"][0]["kind"]["type"], "delay", "{doc}");
    assert_eq!(doc["seed"], 11);
    assert!(doc["log"].is_array() && doc["log_kept"].is_u64(), "{doc}");
    // Nothing changes through the console's view: it takes GET only.
    let (status, _) = admin_request(&admin, "POST", "/console/faults", None, Some(rule)).await;
    assert_eq!(status, 405);
    let (status, _) = admin_request(&admin, "DELETE", "/console/faults", None, None).await;
    assert_eq!(status, 405);
    let (_, doc) = admin_json(&admin, "/console/faults").await;
    assert_eq!(doc["rules"].as_array().map(Vec::len), Some(1), "{doc}");
    cluster.shutdown().await;
}

/// `mishards demo` with the default admin port taken (here, or by anything else) says so, takes a free
/// port, and prints the console's URL, which serves the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_takes_a_free_admin_port_when_the_default_is_taken() {
    // Hold the default port if it is free; if something else holds it, it is taken all the same.
    let _holder = std::net::TcpListener::bind(("127.0.0.1", mishards::config::DEFAULT_ADMIN_PORT));
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args([
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--readers",
            "1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mishards demo");
    let stdout = child.stdout.take().expect("stdout");
    let rx = common::process::lines_of(stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let console = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let url = line
                    .trim()
                    .strip_prefix("console")
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string);
                lines.push(line);
                if let Some(url) = url {
                    break url;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the demo printed no console URL: {lines:#?}");
            }
        }
    };
    let addr = console
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("console URL {console}"))
        .to_string();
    let page = mishards::gateway::admin_client::fetch(&addr, "/", Duration::from_secs(10)).await;
    let _ = child.kill();
    let _ = child.wait();
    let said = lines.join("\n");
    let page = page.unwrap_or_else(|e| panic!("GET {console}: {e}\n{said}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("mishards console"), "{}", page.body);
    assert!(
        said.contains(&format!(
            "admin port {} on 127.0.0.1 is taken",
            mishards::config::DEFAULT_ADMIN_PORT
        )),
        "{said}"
    );
    assert!(
        !addr.ends_with(&format!(":{}", mishards::config::DEFAULT_ADMIN_PORT)),
        "{said}"
    );
    assert!(
        said.contains(&format!("admin listening on {addr}")),
        "{said}"
    );
}
