//! Slow-node mitigation: search latency through a gateway over three read nodes, one of them behind a
//! proxy that delays its answers by 50 ms (tests/common/proxy.rs), with hedging and slow-node demotion
//! off and on, against the same cluster with no delay. Reports p50/p99 and the hedge requests sent per
//! search.
//!
//! Run: `cargo bench --bench hedging -- [seconds per run] [clients] [delay ms]` (defaults 40, 4, 50).
//! Each run is a fresh gateway over the same nodes: 100 warm-up searches, then `clients` closed-loop
//! clients for `seconds` (longer than the 30 s a demoted node's latencies take to age out, so a run of
//! the default configuration includes the node's return and its second demotion).

#[allow(dead_code)]
#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use mishards::config::{GatewayConfig, Scope};
use mishards::proto;
use mishards::stats::percentile;

mod common;
use common::{Client, SplitMix64, arg, connect, node_config, query, settings, vector};

const DIM: usize = 128;
/// Rows per flush: 3,000 × 128 floats is 1.5 MB, over index_file_size = 1 MB, so every flush stays a file.
const ROWS: usize = 3_000;
/// Twelve files over three read nodes: the rendezvous load bound leaves every node at least two.
const FILES: usize = 12;

async fn search(c: &mut Client, rng: &mut SplitMix64) {
    let reply = c
        .search(query("hedging", rng, DIM))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        reply.status.as_ref().map(|s| s.error_code),
        Some(0),
        "{:?}",
        reply.status
    );
    assert_eq!(reply.ids.len(), 10);
}

struct Run {
    name: &'static str,
    searches: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Hedge requests sent per search.
    extra: f64,
}

/// One gateway over `hosts` with `flags`: warm-up, then `clients` clients for `seconds`.
async fn run(
    name: &'static str,
    base: &[(&'static str, String)],
    hosts: &str,
    flags: &[(&'static str, &str)],
    seconds: u64,
    clients: usize,
) -> Run {
    let mut all: Vec<(&'static str, String)> = base.to_vec();
    all.push(("static-hosts", hosts.to_string()));
    all.extend(flags.iter().map(|(k, v)| (*k, v.to_string())));
    let config = GatewayConfig::from_settings(&settings(Scope::Gateway, &all)).expect("config");
    let gateway = mishards::gateway::start(&config, Default::default())
        .await
        .expect("gateway");
    let addr = gateway.addr;
    let mut c = connect(addr).await;
    let mut rng = SplitMix64::new(11);
    // Until the gateway has the collection's files and healthy nodes, then warm-up.
    for _ in 0..200 {
        let reply = c
            .search(query("hedging", &mut rng, DIM))
            .await
            .expect("search")
            .into_inner();
        if reply.status.map(|s| s.error_code) == Some(0) && reply.ids.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        search(&mut c, &mut rng).await;
    }
    let before = gateway.hedging.as_ref().map(|h| h.budget.stats());
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut rng = SplitMix64::new(1000 + i as u64);
            let mut times = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                search(&mut c, &mut rng).await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.expect("client"));
    }
    let after = gateway.hedging.as_ref().map(|h| h.budget.stats());
    let extra = match (before, after) {
        (Some(b), Some(a)) => (a.sent - b.sent) as f64 / (a.searches - b.searches).max(1) as f64,
        _ => 0.0,
    };
    gateway.shutdown().await;
    times.sort_by(f64::total_cmp);
    Run {
        name,
        searches: times.len(),
        p50_ms: percentile(&times, 50.0),
        p99_ms: percentile(&times, 99.0),
        max_ms: times.last().copied().unwrap_or(0.0),
        extra,
    }
}

#[tokio::main]
async fn main() {
    let (seconds, clients, delay_ms) = (arg(0, 40), arg(1, 4) as usize, arg(2, 50));
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().display().to_string();
    let node = |role: &str| node_config(role, &storage, &[("auto-flush-interval", "3600".into())]);
    let writer = mishards::node::start(&node("rw"))
        .await
        .expect("write node");
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(mishards::node::start(&node("ro")).await.expect("read node"));
    }
    // Read node 0 is reached through a proxy in every run, so only the delay differs.
    let fair = proxy::DelayProxy::start(readers[0].addr, Duration::ZERO).await;
    let slow = proxy::DelayProxy::start(readers[0].addr, Duration::from_millis(delay_ms)).await;
    let hosts =
        |first: std::net::SocketAddr| format!("{first},{},{}", readers[1].addr, readers[2].addr);
    let meta = format!("sqlite://{storage}/meta.sqlite");
    let base = [
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("woserver", writer.addr.to_string()),
        ("meta-uri", meta),
        ("admin-port", "off".to_string()),
    ];

    let mut w = connect(writer.addr).await;
    w.create_collection(proto::CollectionSchema {
        collection_name: "hedging".into(),
        dimension: DIM as i64,
        index_file_size: 1,
        metric_type: 1,
        ..Default::default()
    })
    .await
    .expect("create");
    let mut rng = SplitMix64::new(1);
    for _ in 0..FILES {
        let records = (0..ROWS)
            .map(|_| proto::RowRecord {
                float_data: vector(&mut rng, DIM),
                binary_data: Vec::new(),
            })
            .collect();
        w.insert(proto::InsertParam {
            collection_name: "hedging".into(),
            row_record_array: records,
            ..Default::default()
        })
        .await
        .expect("insert");
        w.flush(proto::FlushParam {
            collection_name_array: vec!["hedging".into()],
        })
        .await
        .expect("flush");
    }

    let off = [("hedge", "false"), ("demote-slow-nodes", "false")];
    let runs = [
        run(
            "no delay, defaults (hedging and demotion on)",
            &base,
            &hosts(fair.addr),
            &[],
            seconds,
            clients,
        )
        .await,
        run(
            "no delay, mitigation off",
            &base,
            &hosts(fair.addr),
            &off,
            seconds,
            clients,
        )
        .await,
        run(
            "slow node, mitigation off",
            &base,
            &hosts(slow.addr),
            &off,
            seconds,
            clients,
        )
        .await,
        run(
            "slow node, hedging only",
            &base,
            &hosts(slow.addr),
            &[("demote-slow-nodes", "false")],
            seconds,
            clients,
        )
        .await,
        run(
            "slow node, demotion only",
            &base,
            &hosts(slow.addr),
            &[("hedge", "false")],
            seconds,
            clients,
        )
        .await,
        run(
            "slow node, defaults (hedging and demotion on)",
            &base,
            &hosts(slow.addr),
            &[],
            seconds,
            clients,
        )
        .await,
    ];
    println!(
        "{FILES} files × {ROWS} × {DIM} float32 over 3 read nodes; nq = 1, top-10; {clients} clients, {seconds} s per run; slow node: +{delay_ms} ms per answer"
    );
    println!("| run | searches | p50 ms | p99 ms | max ms | hedge requests per search |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1} | {:.2}% |",
            r.name,
            r.searches,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.extra * 100.0
        );
    }
    // The no-fault p99 of the gateway without any mitigation.
    let baseline = runs[1].p99_ms;
    for r in &runs[3..] {
        println!(
            "{}: p99 {:.2}× the no-delay p99 without mitigation ({}), {:.2}% extra requests ({})",
            r.name,
            r.p99_ms / baseline,
            if r.p99_ms <= 1.5 * baseline {
                "≤ 1.5×: met"
            } else {
                "> 1.5×: not met"
            },
            r.extra * 100.0,
            if r.extra <= 0.05 {
                "≤ 5%: met"
            } else {
                "> 5%: not met"
            },
        );
    }
    drop((fair, slow));
    for r in readers {
        r.shutdown().await;
    }
    writer.shutdown().await;
}
