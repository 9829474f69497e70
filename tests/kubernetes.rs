//! Kubernetes discovery end to end: a `mishards gateway` process with `DISCOVERY_CLASS_NAME=kubernetes`
//! finds its read nodes and its write node as pods of a stand-in API server (kubernetes/api_server.rs,
//! the real list/watch JSON over plain HTTP from a kubeconfig), whose pod IPs are real in-process nodes
//! on 127.0.0.2, 127.0.0.3, …. Pods are added, made unready, deleted; the watch is dropped mid-stream,
//! answered 410 Gone, and the API server goes away and comes back; searches stay exact throughout and
//! membership, `/readyz` and `/metrics` say what happened.

mod common;
mod kubernetes {
    pub mod api_server;
}

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::process::Process;
use common::{
    RandomVectors, SplitMix64, admin_get, assert_exact, client, conn_stats, load_files,
    node_config, search, wait_for,
};
use kubernetes::api_server::{ApiServer, PodSpec};

const NAMESPACE: &str = "milvus";
const WAIT: Duration = Duration::from_secs(20);

/// An in-process data node of `role` on `ip`, port 0.
async fn node(
    role: &str,
    ip: &str,
    storage: &std::path::Path,
    meta: &str,
) -> mishards::node::RunningNode {
    let config = node_config(
        role,
        storage,
        &[
            ("host", ip.to_string()),
            ("meta-uri", meta.to_string()),
            ("auto-flush-interval", "3600".into()),
        ],
    );
    mishards::node::start(&config)
        .await
        .unwrap_or_else(|e| panic!("{role} node on {ip}: {e}"))
}

/// `mishards gateway` with the given environment (and a clean one besides), on 127.0.0.1.
async fn gateway(meta: &str, env: Vec<(String, String)>) -> Process {
    let meta = meta.to_string();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Process::local_gateway(&["--meta-uri", &meta, "--node-timeout", "5"], &env)
    })
    .await
    .expect("gateway start")
}

async fn stop(process: Process) -> String {
    tokio::task::spawn_blocking(move || process.stop())
        .await
        .expect("gateway stop")
}

/// The read nodes of `conn_stats`, as `host:port`.
fn read_nodes(stats: &serde_json::Value) -> BTreeSet<String> {
    stats["read_nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the gateway's read nodes are exactly `expected`, all healthy; returns `conn_stats`.
async fn members(
    gateway: std::net::SocketAddr,
    expected: &[String],
    what: &str,
) -> serde_json::Value {
    let expected: BTreeSet<String> = expected.iter().cloned().collect();
    wait_for(what, WAIT, || {
        let expected = expected.clone();
        async move {
            let stats = conn_stats(&mut client(gateway).await).await;
            let healthy = stats["read_nodes"]
                .as_array()
                .is_some_and(|a| a.iter().all(|n| n["state"] == "healthy"));
            if read_nodes(&stats) == expected && healthy {
                Ok(stats)
            } else {
                Err(stats.to_string())
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_come_and_go_through_watch_410_and_an_api_server_outage_with_searches_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("data");
    let meta = format!("sqlite://{}", storage.join("meta.sqlite").display());
    let writer = node("rw", "127.0.0.5", &storage, &meta).await;
    let mut readers = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        readers.push(Some(node("ro", ip, &storage, &meta).await));
    }
    let addrs: Vec<std::net::SocketAddr> = readers.iter().flatten().map(|r| r.addr).collect();
    let at = |i: usize| addrs[i];
    let name = |i: usize| at(i).to_string();
    let ro = |i: usize| {
        PodSpec::ready(
            &format!("mishards-ro-{i}"),
            "ro",
            &at(i).ip().to_string(),
            at(i).port(),
        )
    };

    let mut api = ApiServer::start(NAMESPACE).await;
    api.put(&PodSpec::ready(
        "mishards-rw-0",
        "rw",
        "127.0.0.5",
        writer.addr.port(),
    ));
    api.put(&ro(0));
    api.put(&ro(1));
    // Not yet a member: still starting.
    let mut starting = ro(2);
    starting.phase = "Pending";
    starting.ready = false;
    api.put(&starting);
    // Never members: a name the pattern refuses, a label the selector refuses, a pod being deleted.
    api.put(&PodSpec::ready("other-app-0", "ro", "127.0.0.6", 19530));
    api.put(&PodSpec::ready(
        "mishards-ro-web",
        "web",
        "127.0.0.7",
        19530,
    ));
    let mut leaving = PodSpec::ready("mishards-ro-9", "ro", "127.0.0.8", 19530);
    leaving.deleting = true;
    api.put(&leaving);

    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("elsewhere")).expect("kubeconfig");
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let gateway = gateway(
        &meta,
        vec![
            env("KUBECONFIG", &kubeconfig.display().to_string()),
            env("DISCOVERY_CLASS_NAME", "kubernetes"),
            env("DISCOVERY_KUBERNETES_NAMESPACE", NAMESPACE),
            env("DISCOVERY_KUBERNETES_LABEL_SELECTOR", "tier=ro,app=milvus"),
            env("DISCOVERY_KUBERNETES_POD_PATT", "mishards-ro-"),
            env("DISCOVERY_KUBERNETES_WRITE_LABEL_SELECTOR", "tier=rw"),
            // Longer than this test: every change below comes through the watch, not a periodic list.
            env("DISCOVERY_KUBERNETES_POLL_INTERVAL", "120"),
            env("MISHARDS_META_POLL_INTERVAL", "0.2"),
            env(
                "MISHARDS_LOG",
                "warn,mishards_gateway::discovery=info,mishards_gateway::node_link=info",
            ),
        ],
    )
    .await;
    let addr: std::net::SocketAddr = gateway.addr().parse().expect("gateway address");
    let admin = gateway.addrs[1].clone();

    // Found: the two ready read pods, and the write node without WOSERVER.
    let stats = members(addr, &[name(0), name(1)], "the first two read pods").await;
    let write_node = format!("127.0.0.5:{}", writer.addr.port());
    wait_for("the write node found by its selector", WAIT, || {
        let write_node = write_node.clone();
        async move {
            let stats = conn_stats(&mut client(addr).await).await;
            match stats["write_node"]["node"] == write_node.as_str()
                && stats["write_node"]["state"] == "healthy"
            {
                true => Ok(()),
                false => Err(stats.to_string()),
            }
        }
    })
    .await;
    assert_eq!(stats["discovery"]["source"], "kubernetes", "{stats}");
    assert_eq!(stats["discovery"]["source_up"], true, "{stats}");

    let mut c = client(addr).await;
    let mut rng = SplitMix64::new(15);
    let data = Arc::new(load_files(&mut c, "pods", 6, &mut rng).await);
    let queries = Arc::new(rng.vectors(4, common::FILE_DIM));
    assert_exact(
        &search(&mut c, "pods", &queries, 10).await,
        &data,
        &queries,
        10,
    );

    // Searches run all along; every answer must be the exact one.
    let stop_searching = Arc::new(AtomicBool::new(false));
    let searched = Arc::new(AtomicU64::new(0));
    let searcher = {
        let (data, queries, stop, searched) = (
            data.clone(),
            queries.clone(),
            stop_searching.clone(),
            searched.clone(),
        );
        tokio::spawn(async move {
            let mut c = client(addr).await;
            // Bounded: at most 10,000 searches, stopped by the test long before.
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                assert_exact(
                    &search(&mut c, "pods", &queries, 10).await,
                    &data,
                    &queries,
                    10,
                );
                searched.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // A pod becomes ready: it joins.
    api.put(&ro(2));
    members(
        addr,
        &[name(0), name(1), name(2)],
        "the third pod once ready",
    )
    .await;
    // A pod becomes unready: it leaves (its node still runs).
    let mut unready = ro(0);
    unready.ready = false;
    api.put(&unready);
    members(addr, &[name(1), name(2)], "the unready pod gone").await;

    // The watch drops mid-stream: the watcher watches again from where it was, without a list.
    let (lists, watches, _) = api.counts();
    api.drop_watches();
    wait_for("a new watch after the drop", WAIT, || {
        let counts = api.counts();
        async move {
            if counts.1 >= watches + 2 {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        }
    })
    .await;
    api.put(&ro(0));
    members(
        addr,
        &[name(0), name(1), name(2)],
        "a change after the dropped watch",
    )
    .await;
    assert_eq!(
        api.counts().0,
        lists,
        "a dropped watch resumes without listing again"
    );

    // History compacted, watch dropped: the resumed watch gets 410 Gone, and the pods are listed again.
    api.compact();
    api.drop_watches();
    wait_for("a list after 410 Gone", WAIT, || {
        let counts = api.counts();
        async move {
            if counts.2 >= 1 && counts.0 >= lists + 2 {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        }
    })
    .await;
    api.delete("mishards-ro-1");
    members(addr, &[name(0), name(2)], "the deleted pod gone").await;
    if let Some(gone) = readers[1].take() {
        gone.shutdown().await;
    }

    // The API server goes away: the membership stays, and /readyz and /metrics say why.
    let before = conn_stats(&mut client(addr).await).await;
    let searched_before_outage = searched.load(Ordering::Relaxed);
    api.stop().await;
    let down = wait_for("discovery to report the outage", WAIT, || async {
        let stats = conn_stats(&mut client(addr).await).await;
        match stats["discovery"]["source_up"] == false {
            true => Ok(stats),
            false => Err(stats.to_string()),
        }
    })
    .await;
    assert_eq!(read_nodes(&down), read_nodes(&before), "{down}");
    assert_eq!(
        down["discovery"]["epoch"], before["discovery"]["epoch"],
        "{down}"
    );
    let (status, body) = admin_get(&admin, "/readyz").await;
    assert_eq!(
        status, 200,
        "searches go on, so the gateway stays ready: {body}"
    );
    assert!(
        body.contains("discovery (kubernetes) cannot read its source"),
        "{body}"
    );
    let (_, metrics) = admin_get(&admin, "/metrics").await;
    assert!(
        metrics.contains("mishards_discovery_source_up 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("mishards_discovery_errors_total 0\n"),
        "{metrics}"
    );
    let (_, cluster) = admin_get(&admin, "/cluster").await;
    assert!(cluster.contains("\"source_up\":false"), "{cluster}");
    // Searches go on through the outage, and the membership stays.
    wait_for("searches during the outage", WAIT, || {
        let n = searched.load(Ordering::Relaxed);
        async move {
            if n >= searched_before_outage + 3 {
                Ok(())
            } else {
                Err(format!("{n} searches"))
            }
        }
    })
    .await;
    assert_eq!(
        read_nodes(&conn_stats(&mut client(addr).await).await),
        read_nodes(&before)
    );

    // A pod leaves while the server is away; once it is back the watch resumes and sees it.
    api.delete("mishards-ro-2");
    api.restart().await;
    let back = members(addr, &[name(0)], "the change made during the outage").await;
    wait_for("discovery up again", WAIT, || async {
        let stats = conn_stats(&mut client(addr).await).await;
        let (status, body) = admin_get(&admin, "/readyz").await;
        match stats["discovery"]["source_up"] == true
            && status == 200
            && !body.contains("discovery (")
        {
            true => Ok(()),
            false => Err(format!("{stats} {body}")),
        }
    })
    .await;
    assert!(
        back["discovery"]["epoch"].as_u64() > before["discovery"]["epoch"].as_u64(),
        "{back}"
    );

    stop_searching.store(true, Ordering::Relaxed);
    searcher
        .await
        .expect("every search during the changes was exact");
    let searched = searched.load(Ordering::Relaxed);
    assert!(
        searched > searched_before_outage,
        "searches ran all along: {searched}"
    );

    // The write node's pod is replaced by one on another address: the write link follows it, and
    // writes through the gateway reach the new write node.
    writer.shutdown().await;
    let writer = node("rw", "127.0.0.10", &storage, &meta).await;
    api.put(&PodSpec::ready(
        "mishards-rw-0",
        "rw",
        "127.0.0.10",
        writer.addr.port(),
    ));
    let moved = writer.addr.to_string();
    wait_for("the write link to follow the moved pod", WAIT, || {
        let moved = moved.clone();
        async move {
            let stats = conn_stats(&mut client(addr).await).await;
            match stats["write_node"]["node"] == moved.as_str()
                && stats["write_node"]["state"] == "healthy"
            {
                true => Ok(()),
                false => Err(stats.to_string()),
            }
        }
    })
    .await;
    let mut all = data.to_vec();
    all.extend(common::insert_file(&mut c, "pods", 500, common::FILE_DIM, &mut rng).await);
    assert_exact(
        &search(&mut c, "pods", &queries, 10).await,
        &all,
        &queries,
        10,
    );

    let log = stop(gateway).await;
    assert!(log.contains("membership changed"), "{log}");
    assert!(log.contains("node link retargeted"), "{log}");
    for r in readers.into_iter().flatten() {
        r.shutdown().await;
    }
    writer.shutdown().await;
}

/// Outside a cluster without KUBECONFIG the gateway reads `~/.kube/config`, whose context names the
/// namespace; a pod naming no `milvus`/`grpc` port is reached on DISCOVERY_STATIC_PORT; WOSERVER wins
/// over the write-node selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_kubeconfig_static_port_and_woserver_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("data");
    let meta = format!("sqlite://{}", storage.join("meta.sqlite").display());
    let writer = node("rw", "127.0.0.1", &storage, &meta).await;
    let reader = node("ro", "127.0.0.2", &storage, &meta).await;
    let api = ApiServer::start("ns-from-context").await;
    let mut pod = PodSpec::ready("ro-0", "ro", "127.0.0.2", 1);
    pod.port = None;
    api.put(&pod);
    // A write pod that is not the write node: WOSERVER names the real one.
    api.put(&PodSpec::ready("rw-elsewhere", "rw", "127.0.0.9", 19530));
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).expect("~/.kube");
    std::fs::write(home.join(".kube/config"), api.kubeconfig("ns-from-context")).expect("config");
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let gateway = gateway(
        &meta,
        vec![
            env("HOME", &home.display().to_string()),
            env("DISCOVERY_CLASS_NAME", "kubernetes"),
            env("DISCOVERY_KUBERNETES_LABEL_SELECTOR", "tier=ro"),
            env("DISCOVERY_KUBERNETES_WRITE_LABEL_SELECTOR", "tier=rw"),
            env("DISCOVERY_STATIC_PORT", &reader.addr.port().to_string()),
            env("WOSERVER", &writer.addr.to_string()),
            env("MISHARDS_LOG", "warn"),
        ],
    )
    .await;
    let addr: std::net::SocketAddr = gateway.addr().parse().expect("gateway address");
    let stats = members(
        addr,
        &[reader.addr.to_string()],
        "the pod on the static port",
    )
    .await;
    assert_eq!(
        stats["write_node"]["node"],
        writer.addr.to_string(),
        "{stats}"
    );
    assert_eq!(stats["write_node"]["state"], "healthy", "{stats}");
    let mut c = client(addr).await;
    let mut rng = SplitMix64::new(16);
    let data = load_files(&mut c, "home", 2, &mut rng).await;
    let queries = rng.vectors(3, common::FILE_DIM);
    assert_exact(
        &search(&mut c, "home", &queries, 5).await,
        &data,
        &queries,
        5,
    );
    stop(gateway).await;
    reader.shutdown().await;
    writer.shutdown().await;
}
