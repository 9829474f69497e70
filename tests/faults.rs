//! Fault injection in the gateway's actors, against an in-process cluster: delays, errors, partitions,
//! black holes and flapping on the gateway → node edge, metadata outages and frozen snapshots in the
//! poller, crashes of every supervised actor — searches stay exact throughout — the same seed giving the
//! same faults, and the `/faults` control API's guards.

mod common;

use std::time::{Duration, Instant};

use common::{
    Client, FAULT_TOKEN, RandomVectors, SplitMix64, TestCluster, admin_json, admin_request,
    assert_exact, code, fault_flags, newest_manifest, search, search_exact, start_gateway_with,
    wait_for,
};
use mishards::config::NodeAddr;
use mishards::fault::{
    ActorName, FaultKind, FaultRule, GrpcCode, NodeSet, Target, rules_from_json,
};
use mishards::gateway::routing::GetOwners;
use mishards::proto::{self, ErrorCode};
use serde_json::Value;

const DIM: usize = 16;
/// 17,000 × 16 floats is just over index_file_size = 1 MB: every flush stays its own file.
const ROWS: usize = 17_000;
const K: usize = 5;

/// Creates `name` with `files` flushed files; answers every (id, vector).
async fn load(
    c: &mut Client,
    name: &str,
    files: usize,
    rng: &mut SplitMix64,
) -> Vec<(i64, Vec<f32>)> {
    common::load_sized(c, name, files, ROWS, DIM, rng).await
}

/// Where most tests here start: a cluster of two read nodes with fault injection on.
struct Loaded {
    cluster: TestCluster,
    c: Client,
    /// The generator the rows and queries came from, for more of them.
    rng: SplitMix64,
    data: Vec<(i64, Vec<f32>)>,
    queries: Vec<Vec<f32>>,
}

/// Starts two read nodes behind a gateway with faults seeded by `fault_seed` and `flags`, loads `files`
/// files into `name` with rows from `data_seed`, and draws `nq` queries from the same generator.
async fn loaded(
    fault_seed: u64,
    flags: &[(&'static str, String)],
    data_seed: u64,
    name: &str,
    files: usize,
    nq: usize,
) -> Loaded {
    let cluster = TestCluster::start_with_faults(2, fault_seed, flags).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(data_seed);
    let data = load(&mut c, name, files, &mut rng).await;
    let queries = rng.vectors(nq, DIM);
    Loaded {
        cluster,
        c,
        rng,
        data,
        queries,
    }
}

/// Inserts one file's worth of rows and flushes.
async fn insert_file(c: &mut Client, name: &str, rng: &mut SplitMix64) -> Vec<(i64, Vec<f32>)> {
    common::insert_file(c, name, ROWS, DIM, rng).await
}

/// The read node owning the most files (the one to hurt) and the others.
async fn victim(cluster: &TestCluster) -> (NodeAddr, Vec<NodeAddr>) {
    let owners = cluster
        .gateway
        .actors
        .routing
        .send(GetOwners)
        .await
        .expect("routing answers");
    let mut count: std::collections::BTreeMap<NodeAddr, usize> = Default::default();
    for node in owners.values() {
        *count.entry(node.clone()).or_default() += 1;
    }
    let (victim, _) = count
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, c)| (n.clone(), *c))
        .expect("files are placed");
    let others = count.keys().filter(|n| **n != victim).cloned().collect();
    (victim, others)
}

fn on_node(node: &NodeAddr, kind: FaultKind) -> FaultRule {
    FaultRule::new(Target::Nodes(NodeSet::List(vec![node.clone()])), kind)
}

/// A read node's entry in `conn_stats`.
fn node_stats(stats: &Value, node: &NodeAddr) -> Value {
    stats["read_nodes"]
        .as_array()
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["node"] == node.to_string().as_str())
        })
        .cloned()
        .unwrap_or(Value::Null)
}

fn attempts_on(manifest: &Value, node: &NodeAddr) -> Vec<Value> {
    manifest["nodes"]
        .as_array()
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["node"] == node.to_string().as_str())
        })
        .and_then(|n| n["attempts"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_on_one_read_node_shows_in_its_latency_and_answers_stay_exact() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(1, &[], 61, "delayed", 4, 3).await;
    let (victim, _) = victim(&cluster).await;
    let faults = cluster.faults();
    faults
        .add(
            on_node(
                &victim,
                FaultKind::Delay {
                    fixed: Duration::from_millis(400),
                    jitter: Duration::from_millis(100),
                },
            )
            .on_rpcs(&["SearchInFiles"]),
        )
        .await
        .unwrap();
    let started = Instant::now();
    search_exact(&mut c, "delayed", &data, &queries, K).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    let manifest = newest_manifest(&cluster, "delayed").await;
    let attempts = attempts_on(&manifest, &victim);
    assert_eq!(attempts.len(), 1, "{manifest}");
    assert_eq!(attempts[0]["outcome"], "ok");
    let latency = attempts[0]["latency_ms"].as_f64().unwrap_or_default();
    assert!((400.0..2000.0).contains(&latency), "{manifest}");
    let log = faults.log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].site.as_str(),
            log[0].rpc.as_deref(),
            log[0].kind.as_str()
        ),
        (victim.to_string().as_str(), Some("SearchInFiles"), "delay")
    );

    // Removed, the node answers at its own pace again.
    faults.clear().await.unwrap();
    search_exact(&mut c, "delayed", &data, &queries, K).await;
    assert_eq!(faults.log().await.unwrap().len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_on_search_in_files_sends_the_nodes_files_to_fallbacks() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(2, &[], 62, "erring", 4, 3).await;
    let (victim, others) = victim(&cluster).await;
    let faults = cluster.faults();
    // A Milvus status a node in trouble answers (a well-formed reply), then a gRPC-level error.
    let errors = [
        FaultKind::Error {
            milvus_code: Some(ErrorCode::UnexpectedError as i32),
            grpc_code: None,
            message: "disk on fire".into(),
        },
        FaultKind::Error {
            milvus_code: None,
            grpc_code: Some(GrpcCode(tonic::Code::Internal)),
            message: "stream reset".into(),
        },
    ];
    for kind in errors {
        let id = faults
            .add(on_node(&victim, kind).on_rpcs(&["SearchInFiles"]))
            .await
            .unwrap();
        search_exact(&mut c, "erring", &data, &queries, K).await;
        let manifest = newest_manifest(&cluster, "erring").await;
        let failed = attempts_on(&manifest, &victim);
        assert_eq!(failed.len(), 1, "{manifest}");
        assert_eq!(failed[0]["outcome"], "failed", "{manifest}");
        let reason = failed[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("injected fault"), "{manifest}");
        // Its files went to the other node in a second round.
        let retried: Vec<Value> = others
            .iter()
            .flat_map(|n| attempts_on(&manifest, n))
            .filter(|a| a["round"] == 1 && a["outcome"] == "ok")
            .collect();
        assert_eq!(retried.len(), 1, "{manifest}");
        assert!(
            retried[0]["why"] == "retry" || retried[0]["why"] == "fallback",
            "{manifest}"
        );
        assert_eq!(
            retried[0]["files"].as_array().map(Vec::len),
            failed[0]["files"].as_array().map(Vec::len),
            "{manifest}"
        );
        faults.remove(id).await.unwrap();
        // The node is back in the plans once a probe finds it well (probes were never hit).
        wait_for("the node healthy again", Duration::from_secs(5), || async {
            let s = node_stats(&cluster.stats().await, &victim);
            (s["state"] == "healthy").then_some(()).ok_or(s.to_string())
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_goes_down_and_comes_back_and_searches_go_on() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(3, &[], 63, "split", 4, 3).await;
    let (victim, _) = victim(&cluster).await;
    let faults = cluster.faults();
    let id = faults
        .add(on_node(&victim, FaultKind::Partition))
        .await
        .unwrap();
    // The health probes are refused too: the node goes down in the gateway's eyes.
    let down = wait_for(
        "the partitioned node down",
        Duration::from_secs(5),
        || async {
            let s = node_stats(&cluster.stats().await, &victim);
            (s["state"] == "down")
                .then(|| s.clone())
                .ok_or(s.to_string())
        },
    )
    .await;
    assert!(
        down["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("partitioned"),
        "{down}"
    );
    for _ in 0..3 {
        search_exact(&mut c, "split", &data, &queries, K).await;
    }
    // A down node is left out of plans: the searches did not ask it.
    let manifest = newest_manifest(&cluster, "split").await;
    assert!(attempts_on(&manifest, &victim).is_empty(), "{manifest}");

    faults.remove(id).await.unwrap();
    wait_for("the node healthy again", Duration::from_secs(8), || async {
        let s = node_stats(&cluster.stats().await, &victim);
        (s["state"] == "healthy").then_some(()).ok_or(s.to_string())
    })
    .await;
    search_exact(&mut c, "split", &data, &queries, K).await;
    let report = faults.report().await.unwrap();
    assert!(
        report
            .log
            .iter()
            .any(|f| f.kind == "partition" && f.rpc.as_deref() == Some("Cmd")),
        "probes saw the partition: {:?}",
        report.log
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_node_is_given_up_after_node_timeout_and_its_files_retried() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(4, &[("node-timeout", "0.5".into())], 64, "void", 4, 3).await;
    let (victim, _) = victim(&cluster).await;
    cluster
        .faults()
        .add(on_node(&victim, FaultKind::BlackHole).on_rpcs(&["SearchInFiles"]))
        .await
        .unwrap();
    let started = Instant::now();
    search_exact(&mut c, "void", &data, &queries, K).await;
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(5)).contains(&took),
        "{took:?}"
    );
    let manifest = newest_manifest(&cluster, "void").await;
    let swallowed = attempts_on(&manifest, &victim);
    assert_eq!(swallowed.len(), 1, "{manifest}");
    assert_eq!(swallowed[0]["outcome"], "failed");
    assert!(
        swallowed[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer within"),
        "{manifest}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_stay_exact_while_a_node_flaps() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(5, &[], 65, "flappy", 4, 2).await;
    let (victim, _) = victim(&cluster).await;
    let faults = cluster.faults();
    // Long enough for several flaps and, on a loaded 2-core machine, for at least five searches.
    let window = Duration::from_millis(4000);
    faults
        .add(
            on_node(
                &victim,
                FaultKind::Flap {
                    up: Duration::from_millis(300),
                    down: Duration::from_millis(300),
                },
            )
            .window(Duration::ZERO, Some(window)),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut searches = 0;
    while started.elapsed() < window && searches < 60 {
        search_exact(&mut c, "flappy", &data, &queries, K).await;
        searches += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(searches >= 5, "only {searches} searches");
    let log = faults.log().await.unwrap();
    assert!(log.iter().any(|f| f.kind == "flap"), "{log:?}");
    // Past the window, the node is well again.
    wait_for("the node healthy again", Duration::from_secs(8), || async {
        let s = node_stats(&cluster.stats().await, &victim);
        (s["state"] == "healthy").then_some(()).ok_or(s.to_string())
    })
    .await;
    search_exact(&mut c, "flappy", &data, &queries, K).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_outage_marks_the_snapshot_stale_searches_go_on_and_it_recovers() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(6, &[], 66, "outage", 3, 3).await;
    cluster
        .faults()
        .add(
            FaultRule::new(Target::Poller, FaultKind::MetaOutage)
                .window(Duration::ZERO, Some(Duration::from_millis(1500))),
        )
        .await
        .unwrap();
    let stale = wait_for("a stale snapshot", Duration::from_secs(3), || async {
        let s = cluster.stats().await;
        (s["metadata"]["stale"] == true)
            .then(|| s.clone())
            .ok_or(s.to_string())
    })
    .await;
    assert!(stale["metadata"]["failures"].as_u64().unwrap_or(0) >= 1);
    for _ in 0..3 {
        search_exact(&mut c, "outage", &data, &queries, K).await;
    }
    let recovered = wait_for("a fresh snapshot", Duration::from_secs(5), || async {
        let s = cluster.stats().await;
        (s["metadata"]["stale"] == false)
            .then(|| s.clone())
            .ok_or(s.to_string())
    })
    .await;
    assert_eq!(recovered["metadata"]["outages"], 1, "{recovered}");
    search_exact(&mut c, "outage", &data, &queries, K).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_snapshot_hides_new_files_until_its_window_ends() {
    let Loaded {
        cluster,
        mut c,
        mut rng,
        mut data,
        queries,
    } = loaded(7, &[], 67, "frozen", 2, 2).await;
    let epoch = |s: &Value| s["metadata"]["epoch"].as_u64().unwrap_or(0);
    let before = epoch(&cluster.stats().await);
    let window = Duration::from_millis(3000);
    cluster
        .faults()
        .add(
            FaultRule::new(Target::Poller, FaultKind::StaleSnapshot)
                .window(Duration::ZERO, Some(window)),
        )
        .await
        .unwrap();
    let frozen_at = Instant::now();
    let old = data.clone();
    data.extend(insert_file(&mut c, "frozen", &mut rng).await);
    // Within the window (the write's own refresh included): the new file is not in the snapshot,
    // searches answer from the old one, and the snapshot is not marked stale (nobody knows).
    let stats = cluster.stats().await;
    let answer = search(&mut c, "frozen", &queries, K as i64).await;
    if frozen_at.elapsed() < window - Duration::from_millis(200) {
        assert_eq!(epoch(&stats), before, "{stats}");
        assert_eq!(stats["metadata"]["stale"], false, "{stats}");
        assert_exact(&answer, &old, &queries, K);
    }
    let stats = wait_for("a new epoch", Duration::from_secs(6), || async {
        let s = cluster.stats().await;
        (epoch(&s) > before).then(|| s.clone()).ok_or(s.to_string())
    })
    .await;
    assert!(
        frozen_at.elapsed() >= window,
        "the snapshot moved within the window"
    );
    assert!(
        stats["metadata"]["frozen"].as_u64().unwrap_or(0) >= 5,
        "{stats}"
    );
    search_exact(&mut c, "frozen", &data, &queries, K).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supervised_actor_crashed_is_restarted_and_searches_go_on() {
    let Loaded {
        cluster,
        mut c,
        data,
        queries,
        ..
    } = loaded(8, &[], 68, "crashy", 3, 2).await;
    let (victim, _) = victim(&cluster).await;
    let crash =
        |actor: ActorName| FaultRule::new(Target::Actor(actor), FaultKind::Crash { every: None });
    let ids = cluster
        .faults()
        .add_all(vec![
            crash(ActorName::Discovery),
            crash(ActorName::Poller),
            crash(ActorName::Routing),
            crash(ActorName::Link(victim.clone())),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 4);
    let stats = wait_for("every actor restarted", Duration::from_secs(5), || async {
        let s = cluster.stats().await;
        let restarted = s["discovery"]["restarts"] == 1
            && s["metadata"]["restarts"] == 1
            && s["routing"]["restarts"] == 1
            && node_stats(&s, &victim)["restarts"] == 1
            && node_stats(&s, &victim)["state"] == "healthy";
        restarted.then(|| s.clone()).ok_or(s.to_string())
    })
    .await;
    assert_eq!(stats["metadata"]["stale"], false, "{stats}");
    for _ in 0..3 {
        search_exact(&mut c, "crashy", &data, &queries, K).await;
    }
    // `/cluster` and `/metrics` count the restarts too.
    let (status, doc) = admin_json(&cluster.admin(), "/cluster").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["discovery"]["restarts"], 1, "{doc}");
    assert_eq!(doc["router"]["restarts"], 1, "{doc}");
    assert_eq!(doc["metadata"]["restarts"], 1, "{doc}");
    let (_, metrics) = cluster.admin_get("/metrics").await;
    assert!(
        metrics.contains("mishards_actor_restarts_total{actor=\"routing\"} 1"),
        "{metrics}"
    );
    let crashes: Vec<String> = cluster
        .faults()
        .log()
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.kind == "crash")
        .map(|f| f.site)
        .collect();
    assert_eq!(crashes.len(), 4, "{crashes:?}");

    // A crash every 200 ms for 700 ms: three or four more restarts, and still exact answers.
    cluster
        .faults()
        .add(
            FaultRule::new(
                Target::Actor(ActorName::Routing),
                FaultKind::Crash {
                    every: Some(Duration::from_millis(200)),
                },
            )
            .window(Duration::ZERO, Some(Duration::from_millis(700))),
        )
        .await
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        search_exact(&mut c, "crashy", &data, &queries, K).await;
    }
    let restarts = cluster.stats().await["routing"]["restarts"]
        .as_u64()
        .unwrap_or(0);
    assert!((4..=5).contains(&restarts), "{restarts}");
    cluster.shutdown().await;
}

/// The fault sequence of a run: a search sequence under two random rules, as (site, rpc, call, kind,
/// detail) sorted — rule ids left out, so runs on one gateway compare too — and the searches' codes.
async fn replay(
    gateway: &mishards::gateway::RunningGateway,
    data_name: &str,
    queries: &[Vec<f32>],
) -> (Vec<(String, Option<String>, u64, String, String)>, Vec<i32>) {
    let faults = gateway.faults().expect("fault injection on");
    faults.clear().await.unwrap();
    faults.clear_log().await.unwrap();
    let rules = rules_from_json(&format!(
        r#"[{{"target": "read", "rpcs": ["SearchInFiles"], "probability": 0.5,
             "kind": {{"type": "delay", "jitter_ms": 20}}}},
            {{"target": "read", "rpcs": ["SearchInFiles"], "probability": 0.2,
             "kind": {{"type": "error", "milvus_code": {}}}}}]"#,
        ErrorCode::IllegalTopk as i32
    ))
    .unwrap();
    faults.add_all(rules).await.unwrap();
    let mut c = common::client(gateway.addr).await;
    let mut codes = Vec::new();
    for q in queries.chunks(1) {
        codes.push(code(&search(&mut c, data_name, q, K as i64).await.status));
    }
    faults.clear().await.unwrap();
    let mut sequence: Vec<_> = faults
        .log()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.site, f.rpc, f.call, f.kind, f.detail))
        .collect();
    sequence.sort();
    (sequence, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_rules_and_searches_give_the_same_faults() {
    let cluster = TestCluster::start_with_faults(2, 42, &[]).await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(69);
    load(&mut c, "replay", 4, &mut rng).await;
    let queries = rng.vectors(20, DIM);
    let first = replay(&cluster.gateway, "replay", &queries).await;
    assert!(first.0.len() >= 6, "too few faults to compare: {first:?}");
    assert!(
        first.1.contains(&(ErrorCode::IllegalTopk as i32)) && first.1.contains(&0),
        "{first:?}"
    );
    // The same rules again on the same gateway: the streams start over.
    assert_eq!(replay(&cluster.gateway, "replay", &queries).await, first);

    // Another gateway over the same nodes, same seed: the same faults; another seed: others.
    let writer = format!("127.0.0.1:{}", cluster.writer_port);
    let gateway = |seed| {
        let (writer, meta, hosts) = (&writer, &cluster.meta_uri, &cluster.hosts_file);
        async move {
            let mut flags = fault_flags(seed);
            flags.push(("admin-port", "off".into()));
            start_gateway_with(writer, meta, hosts, &flags).await
        }
    };
    for (seed, same) in [(42, true), (43, false)] {
        let other = gateway(seed).await;
        wait_for(
            "the other gateway ready",
            Duration::from_secs(10),
            || async {
                let s = common::client(other.addr)
                    .await
                    .cmd(proto::Command {
                        cmd: "conn_stats".into(),
                    })
                    .await
                    .map(|r| r.into_inner().string_reply)
                    .unwrap_or_default();
                let s: Value = serde_json::from_str(&s).unwrap_or_default();
                let healthy = s["read_nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["state"] == "healthy"));
                (healthy && s["metadata"]["epoch"].as_u64().unwrap_or(0) > 0)
                    .then_some(())
                    .ok_or(s.to_string())
            },
        )
        .await;
        let got = replay(&other, "replay", &queries).await;
        assert_eq!(got == first, same, "seed {seed}: {got:?}\nvs {first:?}");
        other.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faults_api_needs_fault_injection_on_and_the_token() {
    // Off (the default): 404, saying how to turn it on, whatever the token.
    let off = TestCluster::start(0, None).await;
    assert!(off.gateway.faults().is_none());
    for method in ["GET", "POST", "DELETE"] {
        let (status, body) = admin_request(
            &off.admin(),
            method,
            "/faults",
            Some(FAULT_TOKEN),
            Some("{}"),
        )
        .await;
        assert_eq!(status, 404, "{method}: {body}");
        assert!(body.contains("--enable-fault-injection"), "{body}");
    }
    off.shutdown().await;

    let on = TestCluster::start_with_faults(0, 11, &[]).await;
    let admin = on.admin();
    // The admin listener, and with it /faults, is on loopback unless told.
    assert!(on.gateway.admin_addr.unwrap().ip().is_loopback());
    let (status, body) = admin_request(&admin, "GET", "/faults", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) =
        admin_request(&admin, "GET", "/faults", Some("not-the-token-at-all"), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = admin_request(
        &admin,
        "POST",
        "/faults",
        Some("not-the-token-at-all"),
        Some(r#"{"target": "read", "kind": {"type": "partition"}}"#),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(on.faults().report().await.unwrap().rules.is_empty());

    let token = Some(FAULT_TOKEN);
    let (status, body) = admin_request(&admin, "GET", "/faults", token, None).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["seed"], 11);
    assert_eq!(doc["rules"], Value::Array(Vec::new()));

    // A mistake is named and adds nothing.
    let (status, body) = admin_request(
        &admin,
        "POST",
        "/faults",
        token,
        Some(r#"[{"target": "read", "kind": {"type": "partition"}}, {"target": "read", "kind": {"type": "delay", "fixed_ms": 5, "jiter_ms": 1}}]"#),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("fault rule 2") && body.contains("jiter_ms"),
        "{body}"
    );
    assert!(on.faults().report().await.unwrap().rules.is_empty());

    let (status, body) = admin_request(
        &admin,
        "POST",
        "/faults",
        token,
        Some(
            r#"[{"target": "poller", "kind": {"type": "stale_snapshot"}, "start_after_ms": 60000},
                {"target": {"actor": "routing"}, "kind": {"type": "crash"}, "start_after_ms": 60000}]"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ids: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ids["ids"], serde_json::json!([1, 2]));
    let (_, body) = admin_request(&admin, "GET", "/faults", token, None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["rules"][1]["target"]["actor"], "routing", "{doc}");
    assert_eq!(doc["rules"][1]["active"], false, "{doc}");

    let (status, _) = admin_request(&admin, "DELETE", "/faults/1", token, None).await;
    assert_eq!(status, 200);
    let (status, body) = admin_request(&admin, "DELETE", "/faults/1", token, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin_request(&admin, "DELETE", "/faults/one", token, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = admin_request(&admin, "DELETE", "/faults/2", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = admin_request(&admin, "DELETE", "/faults", token, None).await;
    assert_eq!(status, 200);
    assert!(on.faults().report().await.unwrap().rules.is_empty());
    on.shutdown().await;
}

#[test]
fn fault_injection_needs_a_token_to_start() {
    use mishards::config::{GatewayConfig, Scope, Settings};
    let config = |flags: &[(&'static str, &str)]| {
        let mut all: std::collections::HashMap<&'static str, String> = [
            ("woserver", "127.0.0.1:19530"),
            ("meta-uri", "sqlite::memory:"),
            ("enable-fault-injection", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        all.extend(flags.iter().map(|(k, v)| (*k, v.to_string())));
        let env: std::collections::HashMap<String, String> = Default::default();
        let settings = Settings::resolve(Scope::Gateway, &all, &env, None).unwrap();
        GatewayConfig::from_settings(&settings).map(|g| g.faults)
    };
    let err = config(&[]).unwrap_err().to_string();
    assert!(err.contains("--fault-token"), "{err}");
    let err = config(&[("fault-token", "short")]).unwrap_err().to_string();
    assert!(err.contains("at least 16"), "{err}");
    let on = config(&[("fault-token", FAULT_TOKEN), ("fault-seed", "9")]).unwrap();
    assert!(on.enabled);
    assert_eq!((on.token.as_deref(), on.seed), (Some(FAULT_TOKEN), Some(9)));
    assert!(
        !format!("{on:?}").contains(FAULT_TOKEN),
        "Debug hides the token"
    );
}
