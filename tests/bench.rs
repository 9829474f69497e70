//! The bench library and `mishards bench` against an in-process cluster (write node, two read nodes,
//! gateway on 127.0.0.1): loads report every acknowledged id, FLAT searches through the gateway equal the
//! locally computed exact answers, failures are counted by Milvus status, and the binary's JSON report
//! says the same.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::TestCluster;
use mishards::bench::{
    self, BenchError, CollectionSpec, DataSet, DataSpec, IfExists, InsertOptions, LoadOptions,
    Loaded, SearchLoad, SearchTarget,
};
use mishards::node::index::Metric;
use mishards::proto;

const DIM: usize = 16;
const ROWS: usize = 4_000;

fn spec(rows: usize, dim: usize) -> DataSpec {
    DataSpec {
        rows,
        dim,
        clusters: 20,
        sigma: 0.1,
    }
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

/// `bench::load` without progress.
async fn load_quietly(
    client: &mut bench::Client,
    collection: &CollectionSpec,
    data: &DataSet,
    options: &LoadOptions,
) -> Result<Loaded, BenchError> {
    bench::load(client, collection, data, options, &mut no_progress()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_searches_through_the_gateway_equal_the_exact_answers() {
    let cluster = TestCluster::start(2, None).await;
    let addr = cluster.gateway.addr.to_string();
    let mut client = bench::connect(&addr).await.expect("connect");
    let data = DataSet::generate(spec(ROWS, DIM), 3).expect("data set");
    let collection = CollectionSpec {
        index_file_size_mb: 1,
        ..CollectionSpec::new("bench_flat")
    };
    // A file per batch, so searches are split across both read nodes.
    let options = LoadOptions {
        if_exists: IfExists::Fail,
        insert: InsertOptions {
            batch_rows: 1_000,
            flush_each_batch: true,
            ..InsertOptions::default()
        },
    };
    let mut seen = Vec::new();
    let loaded = bench::load(
        &mut client,
        &collection,
        &data,
        &options,
        &mut |done, total| seen.push((done, total)),
    )
    .await
    .expect("load");
    assert!(!loaded.reused);
    assert_eq!(loaded.ids, (0..ROWS as i64).collect::<Vec<_>>());
    assert!(loaded.insert_rate() > 0.0);
    assert_eq!(seen.first(), Some(&(0, ROWS as u64)));
    assert_eq!(seen.last(), Some(&(ROWS as u64, ROWS as u64)));

    let queries = data.queries(40, 3);
    let expected = data.exact(&queries, 10, Metric::L2);
    let target = SearchTarget {
        addr: addr.clone(),
        tls: None,
        collection: collection.name.clone(),
        queries: Arc::new(queries),
        expected: Some(Arc::new(expected.clone())),
    };
    let load = SearchLoad {
        concurrency: 4,
        duration: Some(Duration::from_secs(20)),
        count: Some(400),
        nq: 2,
        topk: 10,
        keep_records: true,
        ..SearchLoad::default()
    };
    let observed = Arc::new(AtomicU64::new(0));
    let counter = observed.clone();
    let report = bench::run_searches(
        &target,
        &load,
        Some(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })),
    )
    .await
    .expect("search load");
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(
        (report.requests, report.succeeded, report.failed),
        (400, 400, 0)
    );
    assert!(report.qps > 0.0);
    assert!(report.latency.p50 <= report.latency.p99 && report.latency.p99 <= report.latency.max);
    let recall = report.recall.expect("recall");
    assert_eq!((recall.k, recall.rows), (10, 800));
    assert_eq!((recall.mean, recall.min), (1.0, 1.0));
    assert_eq!(recall.same_id_rows, 800);
    assert!(
        recall.max_distance_error < 1e-3,
        "{}",
        recall.max_distance_error
    );
    assert_eq!(observed.load(Ordering::Relaxed), 400);
    assert_eq!(report.records.len(), 400);
    for (seq, record) in report.records.iter().enumerate() {
        assert_eq!(record.seq, seq as u64);
        let answer = record.outcome.as_ref().expect("answered");
        for (row, q) in record.queries.iter().enumerate() {
            assert_eq!(
                answer.row_ids(row),
                expected.row_ids(*q),
                "request {seq} query {q}"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_reuse_only_matching_collections_and_failures_are_counted() {
    let cluster = TestCluster::start(2, None).await;
    let addr = cluster.gateway.addr.to_string();
    let mut client = bench::connect(&addr).await.expect("connect");
    let data = DataSet::generate(spec(2_000, DIM), 5).expect("data set");
    let collection = CollectionSpec::new("bench_reuse");
    let mut options = LoadOptions::default();
    load_quietly(&mut client, &collection, &data, &options)
        .await
        .expect("first load");

    let refused = load_quietly(&mut client, &collection, &data, &options).await;
    assert!(
        matches!(&refused, Err(BenchError::Mismatch(m)) if m.contains("already exists")),
        "{refused:?}"
    );
    options.if_exists = IfExists::Reuse;
    let reused = load_quietly(&mut client, &collection, &data, &options)
        .await
        .expect("reuse");
    assert!(reused.reused);
    assert_eq!(reused.ids.len(), 2_000);
    let other_seed = DataSet::generate(spec(2_000, DIM), 6).expect("data set");
    let refused = load_quietly(&mut client, &collection, &other_seed, &options).await;
    assert!(
        matches!(&refused, Err(BenchError::Mismatch(m)) if m.contains("other vectors")),
        "{refused:?}"
    );
    let other_dim = DataSet::generate(spec(2_000, 8), 5).expect("data set");
    let refused = load_quietly(&mut client, &collection, &other_dim, &options).await;
    assert!(
        matches!(&refused, Err(BenchError::Mismatch(m)) if m.contains("dimension 16")),
        "{refused:?}"
    );

    // An insert stream: more rows of the same data set, every id acknowledged.
    let mut more = data.clone();
    more.extend(500);
    let stream = InsertOptions {
        batch_rows: 200,
        ..InsertOptions::default()
    };
    let inserted = bench::insert_rows(
        &mut client,
        &collection.name,
        &more,
        2_000..2_500,
        &stream,
        &mut no_progress(),
    )
    .await;
    assert!(inserted.failures.is_empty(), "{:?}", inserted.failures);
    assert_eq!(inserted.batches, 3);
    assert_eq!(inserted.acknowledged, (2_000..2_500).collect::<Vec<i64>>());
    // Into a collection that does not exist: every batch fails, none is acknowledged.
    let failing = InsertOptions {
        stop_on_error: false,
        ..stream
    };
    let inserted = bench::insert_rows(
        &mut client,
        "no_such_collection",
        &more,
        0..500,
        &failing,
        &mut no_progress(),
    )
    .await;
    assert!(inserted.acknowledged.is_empty());
    assert_eq!(inserted.failures.len(), 3);
    assert_eq!(inserted.failures[2].rows, 400..500);
    assert!(
        inserted
            .failures
            .iter()
            .all(|f| f.failure.label() == "COLLECTION_NOT_EXISTS"),
        "{:?}",
        inserted.failures
    );

    // Searches of a missing collection are counted by their Milvus status.
    let target = SearchTarget {
        addr: addr.clone(),
        tls: None,
        collection: "no_such_collection".into(),
        queries: Arc::new(data.queries(5, 1)),
        expected: None,
    };
    let load = SearchLoad {
        concurrency: 2,
        duration: Some(Duration::from_secs(20)),
        count: Some(20),
        warmup: false,
        ..SearchLoad::default()
    };
    let report = bench::run_searches(&target, &load, None)
        .await
        .expect("search load");
    assert_eq!(
        (report.requests, report.failed, report.succeeded),
        (20, 20, 0)
    );
    assert_eq!(
        report.errors.by_status.get("COLLECTION_NOT_EXISTS"),
        Some(&20),
        "{:?}",
        report.errors
    );
    assert!(report.recall.is_none());
    cluster.shutdown().await;
}

/// Runs `mishards bench ARGS…` (bounded to 60 s): exit code, stdout, stderr.
async fn bench_process(args: &[&str]) -> (Option<i32>, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .arg("bench")
        .args(args)
        .env_clear()
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("mishards bench finished within 60 s")
        .expect("run mishards bench");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_json_and_fails_with_one_line() {
    let cluster = TestCluster::start(2, None).await;
    let addr = cluster.gateway.addr.to_string();
    // IVF_FLAT with nprobe = nlist searches every list: exactly the FLAT answer. 5,000 rows reach the
    // nodes' index build threshold (4,096), so the index is really built.
    let args = [
        "--addr",
        &addr,
        "--collection",
        "bench_cli",
        "--rows",
        "5000",
        "--dim",
        "16",
        "--clusters",
        "10",
        "--index",
        "ivf_flat",
        "--nlist",
        "8",
        "--nprobe",
        "8",
        "--count",
        "200",
        "--concurrency",
        "4",
        "--queries",
        "20",
        "--json",
    ];
    let (code, stdout, stderr) = bench_process(&args).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["load"]["rows"], 5000, "{report}");
    assert_eq!(report["load"]["reused"], false);
    assert_eq!(report["data"]["index"], "ivf_flat");
    let search = &report["search"];
    assert_eq!(search["succeeded"], 200, "{report}");
    assert_eq!(search["failed"], 0, "{report}");
    assert!(search["qps"].as_f64().is_some_and(|q| q > 0.0), "{report}");
    assert_eq!(search["recall"]["mean"], 1.0, "{report}");
    assert_eq!(search["recall"]["same_id_rows"], 200, "{report}");
    for p in ["p50", "p95", "p99", "max"] {
        assert!(
            search["latency_ms"][p].as_f64().is_some_and(|v| v > 0.0),
            "{p}: {report}"
        );
    }
    assert!(
        stderr.contains("inserting: 5,000 / 5,000 rows (100 %)"),
        "{stderr}"
    );
    let mut client = cluster.client().await;
    let info = client
        .show_collection_info(proto::CollectionName {
            collection_name: "bench_cli".into(),
        })
        .await
        .expect("collection info")
        .into_inner();
    assert!(info.json_info.contains("IVFFLAT"), "{}", info.json_info);

    // Again without --reuse: refused, one line.
    let (code, stdout, stderr) = bench_process(&args).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: collection `bench_cli` already exists"),
        "{stderr}"
    );
    // With --reuse: searched as it is, human report this time.
    let human: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let (code, stdout, stderr) = bench_process(&[&human[..], &["--reuse"]].concat()).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("reused the existing 5,000 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("recall@10 1.0000"), "{stdout}");
    assert!(stdout.contains("errors    none"), "{stdout}");
    cluster.shutdown().await;

    // Nothing listening: one clear line, exit code 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let (code, _, stderr) = bench_process(&["--addr", &closed, "--count", "1"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach a Milvus endpoint at {closed}"
        )),
        "{stderr}"
    );
}
