//! Slow-node mitigation: one read node behind a proxy that delays its answers (tests/common/proxy.rs).
//! Hedged attempts answer for its files, the first complete answer wins and the loser is cancelled;
//! each file is answered exactly once; the budget bounds how many searches hedge; a failed hedge leaves
//! the files to the original; with hedging off nothing hedges; a node far slower than its peers is
//! ranked after them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{RandomVectors, SplitMix64, TestCluster, load_files, search_exact};
use mishards::gateway::inspect::{Recent, SearchManifest};
use mishards::gateway::routing::GetRoutingStats;

const DIM: usize = common::FILE_DIM;
/// Twelve files over three read nodes: the rendezvous load bound leaves every node at least two.
const FILES: usize = 12;

/// The last `n` search manifests, oldest first.
async fn manifests(gateway: &mishards::gateway::RunningGateway, n: usize) -> Vec<SearchManifest> {
    let mut recent = gateway
        .actors
        .inspector
        .send(Recent { limit: n })
        .await
        .unwrap();
    assert_eq!(recent.len(), n, "the inspector lost manifests");
    recent.reverse();
    recent
}

/// Loads `FILES` files into `name` (rows from `seed`), then runs `searches` searches of `queries`
/// random queries each, every answer checked exact: the gateway then holds one manifest a search.
async fn load_and_search(
    cluster: &TestCluster,
    name: &str,
    seed: u64,
    searches: usize,
    queries: usize,
) {
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(seed);
    let data = load_files(&mut c, name, FILES, &mut rng).await;
    for _ in 0..searches {
        search_exact(&mut c, name, &data, &rng.vectors(queries, DIM), 10).await;
    }
}

/// The routing actor's per-node view: placement, latency and whether it ranks the node slow.
async fn routing_nodes(cluster: &TestCluster) -> Vec<mishards::gateway::routing::NodeRouting> {
    cluster
        .gateway
        .actors
        .routing
        .send(GetRoutingStats)
        .await
        .unwrap()
        .nodes
}

/// (node, why, outcome) of every attempt of a search.
fn attempts(m: &SearchManifest) -> Vec<(String, &'static str, &'static str)> {
    m.nodes
        .iter()
        .flat_map(|n| {
            n.attempts
                .iter()
                .map(|a| (n.node.to_string(), a.why.as_str(), a.outcome))
        })
        .collect()
}

/// Every planned file is in exactly one answer that went into the result.
fn assert_each_file_answered_once(m: &SearchManifest) {
    let mut used: BTreeMap<i64, usize> = BTreeMap::new();
    for a in m.nodes.iter().flat_map(|n| &n.attempts) {
        if a.outcome == "ok" {
            for f in &a.files {
                *used.entry(*f).or_default() += 1;
            }
        }
    }
    assert_eq!(used.len(), m.files, "files unanswered: {m:#?}");
    assert!(
        used.values().all(|n| *n == 1),
        "a file answered twice: {m:#?}"
    );
}

/// One line per search: its time, then each attempt — why, outcome, files, start + latency in ms.
fn describe(searches: &[SearchManifest], slow: &str) -> String {
    let mut lines = Vec::new();
    for m in searches {
        let mut tried = Vec::new();
        for n in &m.nodes {
            for a in &n.attempts {
                tried.push(format!(
                    "{}{} {} {} @{:.0}+{:.0}",
                    if n.node.to_string() == slow {
                        "SLOW "
                    } else {
                        ""
                    },
                    a.why.as_str(),
                    a.outcome,
                    a.files.len(),
                    a.started_ms,
                    a.latency_ms
                ));
            }
        }
        lines.push(format!("{:.0} ms: {}", m.total_ms, tried.join(" | ")));
    }
    lines.join("\n")
}

fn flags(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The `conn_stats` entry of the read node the gateway knows as `host`.
fn link_stats(stats: &serde_json::Value, host: &str) -> serde_json::Value {
    stats["read_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == host)
        .unwrap_or_else(|| panic!("{host} not in {stats}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_hedged_each_file_answered_once_and_the_loser_cancelled() {
    // Debug builds sharing two cores may take 100 ms and more to search: the fixed delay is well above
    // that, so hedges go mostly to the slow node's files, and well below the slow node's delay.
    let slow_by = Duration::from_millis(800);
    let cluster = TestCluster::start_slow(
        3,
        &[(0, slow_by)],
        &flags(&[
            ("hedge-delay-ms", "250"),
            ("hedge-max-share", "1"),
            ("demote-slow-nodes", "false"),
        ]),
    )
    .await;
    let slow = cluster.reader_host(0);
    let searches = 12;
    load_and_search(&cluster, "hedged", 61, searches, 3).await;
    let mut hedged_won = 0;
    let kept = manifests(&cluster.gateway, searches).await;
    let summary = describe(&kept, &slow);
    for m in kept {
        assert_eq!(m.code, 0, "{m:#?}");
        assert_each_file_answered_once(&m);
        let tried = attempts(&m);
        let won = tried.iter().any(|(node, why, outcome)| {
            *node == slow && *why == "first" && *outcome == "cancelled"
        }) && tried
            .iter()
            .any(|(_, why, outcome)| *why == "hedge" && *outcome == "ok");
        hedged_won += usize::from(won);
    }
    // Hedges start after 250 ms and the slow node answers after 800: they win unless the machine stalls.
    assert!(
        hedged_won >= searches / 2,
        "hedges won only {hedged_won} of {searches} searches:\n{summary}"
    );
    let stats = cluster.stats().await;
    let slow_link = link_stats(&stats, &slow);
    assert!(
        slow_link["cancelled"].as_u64().unwrap() >= hedged_won as u64,
        "{stats}"
    );
    // Losing to a hedge is not a failure: the slow node stays healthy.
    assert_eq!(slow_link["state"], "healthy", "{stats}");
    assert_eq!(slow_link["errors"], 0, "{stats}");
    let hedging = &stats["hedging"];
    assert_eq!(hedging["searches"], searches as u64, "{stats}");
    assert!(
        hedging["won"].as_u64().unwrap() >= hedged_won as u64,
        "{stats}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hedging_off_a_search_waits_for_the_slow_node() {
    let slow_by = Duration::from_millis(200);
    let cluster = TestCluster::start_slow(
        3,
        &[(1, slow_by)],
        &flags(&[("hedge", "false"), ("demote-slow-nodes", "false")]),
    )
    .await;
    let slow = cluster.reader_host(1);
    let searches = 5;
    load_and_search(&cluster, "unhedged", 62, searches, 2).await;
    for m in manifests(&cluster.gateway, searches).await {
        assert_each_file_answered_once(&m);
        let tried = attempts(&m);
        assert!(tried.iter().all(|(_, why, _)| *why == "first"), "{m:#?}");
        assert!(
            tried.iter().all(|(_, _, outcome)| *outcome == "ok"),
            "{m:#?}"
        );
        assert!(tried.iter().any(|(node, _, _)| *node == slow), "{m:#?}");
        // The proxy really holds the slow node's answers back.
        assert!(m.total_ms >= slow_by.as_secs_f64() * 1000.0, "{m:#?}");
    }
    let stats = cluster.stats().await;
    assert!(stats["hedging"].is_null(), "{stats}");
    assert_eq!(link_stats(&stats, &slow)["cancelled"], 0, "{stats}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_the_share_of_searches_that_hedge() {
    let cluster = TestCluster::start_slow(
        3,
        &[(2, Duration::from_millis(60))],
        &flags(&[
            ("hedge-delay-ms", "5"),
            ("hedge-max-share", "0.1"),
            ("demote-slow-nodes", "false"),
        ]),
    )
    .await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(63);
    let data = load_files(&mut c, "budget", FILES, &mut rng).await;
    let queries = rng.vectors(1, DIM);
    // 60 searches, every one of which would hedge: 4 clients × 15.
    let (clients, each) = (4, 15);
    let mut load = Vec::new();
    for _ in 0..clients {
        let (addr, data, queries) = (cluster.gateway.addr, data.clone(), queries.clone());
        load.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            for _ in 0..each {
                search_exact(&mut c, "budget", &data, &queries, 10).await;
            }
        }));
    }
    for l in load {
        l.await.unwrap();
    }
    let searches = clients * each;
    let mut hedged_searches = 0;
    let mut hedge_requests = 0;
    for m in manifests(&cluster.gateway, searches).await {
        assert_each_file_answered_once(&m);
        let hedges = attempts(&m)
            .iter()
            .filter(|(_, why, _)| *why == "hedge")
            .count();
        hedged_searches += usize::from(hedges > 0);
        hedge_requests += hedges;
    }
    // A burst of 10 hedge requests, then a tenth of one per search.
    let most = mishards::gateway::hedge::BURST as usize + searches / 10;
    assert!(
        hedge_requests <= most,
        "{hedge_requests} hedge requests for {searches} searches"
    );
    assert!(
        hedged_searches >= 3,
        "only {hedged_searches} searches hedged"
    );
    let stats = cluster.stats().await;
    let hedging = &stats["hedging"];
    assert_eq!(hedging["sent"], hedge_requests as u64, "{stats}");
    assert!(hedging["denied"].as_u64().unwrap() > 0, "{stats}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hedge_leaves_the_files_to_the_original() {
    let slow_by = Duration::from_millis(150);
    let mut cluster = TestCluster::start_slow(
        1,
        &[(0, slow_by)],
        &flags(&[("hedge-delay-ms", "10"), ("demote-slow-nodes", "false")]),
    )
    .await;
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(64);
    let data = load_files(&mut c, "fallback", 4, &mut rng).await;
    // A read node with a folder and metadata of its own: it knows no collection, so every search it
    // gets fails (COLLECTION_NOT_EXISTS), hedges included.
    let own = cluster.dir.path().join("stranger");
    let own_node = |role: &str| common::node_config(role, &own, &[]);
    mishards::node::start(&own_node("rw"))
        .await
        .expect("stranger's write node (makes its schema)")
        .shutdown()
        .await;
    let stranger = mishards::node::start(&own_node("ro"))
        .await
        .expect("stranger");
    let slow = cluster.reader_host(0);
    std::fs::write(&cluster.hosts_file, format!("{slow}\n{}", stranger.addr)).unwrap();
    cluster.wait_until_healthy(2).await;
    // Wait (bounded) until routing places files on the stranger too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while routing_nodes(&cluster).await.len() < 2 {
        assert!(Instant::now() < deadline, "routing never saw the stranger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    search_exact(&mut c, "fallback", &data, &rng.vectors(2, DIM), 10).await;
    let m = manifests(&cluster.gateway, 1).await.remove(0);
    assert_each_file_answered_once(&m);
    let stranger_host = stranger.addr.to_string();
    let tried = attempts(&m);
    // The slow node's own files were hedged to the stranger, which failed; the slow node answered.
    assert!(
        tried.contains(&(stranger_host.clone(), "hedge", "failed")),
        "{m:#?}"
    );
    assert!(tried.contains(&(slow.clone(), "first", "ok")), "{m:#?}");
    assert!(
        tried
            .iter()
            .all(|(node, _, outcome)| *node != slow || *outcome == "ok"),
        "{m:#?}"
    );
    cluster.readers.push(Some(stranger));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_slower_than_its_peers_is_ranked_after_them() {
    // Demotion alone (a won hedge would cancel a slow answer and so delay the verdict). The delay is
    // large against what debug builds sharing two cores take, so the node is far slower than 3× its
    // peers, and below the 2 s health-probe timeout (the proxy delays probes too).
    let slow_by = Duration::from_millis(1500);
    let cluster = TestCluster::start_slow(3, &[(0, slow_by)], &flags(&[("hedge", "false")])).await;
    let slow = cluster.reader_host(0);
    let mut c = cluster.client().await;
    let mut rng = SplitMix64::new(65);
    let data = load_files(&mut c, "demoted", FILES, &mut rng).await;
    let queries = rng.vectors(1, DIM);
    // Searches (at most 30 rounds of 4; 5 suffice on a quiet machine) until routing has the slow node's
    // p95 from enough samples and its peers are fast enough beside it.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut rounds = 0;
    loop {
        let slow_now = routing_nodes(&cluster)
            .await
            .iter()
            .any(|n| n.node == slow && n.slow);
        if slow_now {
            break;
        }
        rounds += 1;
        assert!(
            rounds <= 30 && Instant::now() < deadline,
            "the slow node was never ranked slow: {}",
            cluster.stats().await
        );
        let mut batch = Vec::new();
        for _ in 0..4 {
            let (addr, data, queries) = (cluster.gateway.addr, data.clone(), queries.clone());
            batch.push(tokio::spawn(async move {
                let mut c = common::client(addr).await;
                search_exact(&mut c, "demoted", &data, &queries, 10).await;
            }));
        }
        for b in batch {
            b.await.unwrap();
        }
    }
    let stats = cluster.stats().await;
    let p95 = link_stats(&stats, &slow)["latency_p95_ms"]
        .as_f64()
        .unwrap();
    assert!(p95 >= slow_by.as_secs_f64() * 1000.0, "{stats}");
    // Its files now go to their next nodes first: the slow node is not asked at all.
    let searches = 5;
    for _ in 0..searches {
        search_exact(&mut c, "demoted", &data, &queries, 10).await;
    }
    for m in manifests(&cluster.gateway, searches).await {
        assert_each_file_answered_once(&m);
        assert!(m.nodes.iter().all(|n| n.node.to_string() != slow), "{m:#?}");
    }
    cluster.shutdown().await;
}
