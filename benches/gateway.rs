//! What the gateway costs: a search through the gateway in front of one read node against the same search
//! sent to that read node directly (nq = 1, top-10, a small collection), as median/p99 latency for one
//! client and as throughput with 32 concurrent clients; and the resident memory of an idle `mishards
//! gateway` process. Run: `cargo bench --bench gateway -- [rows] [seconds] [--tracing=none|off|on]`:
//! `none` installs no subscriber, `off` the production logging with tracing off, `on` exports every
//! span over OTLP to a sink in this process (sampler const 1). `--rounds=N` alternates N throughput rounds
//! of each side and reports the median, with the CPU each thread kind spent per search. `--profile=gateway`
//! (or `relay`, `direct`) runs only that side's throughput for `seconds`, for `perf record -t` to attach to.
//! `--search-batch=N` sets the gateway's `search_batch` (default 32; 1 sends each search alone).
//! `--tls` puts every hop under TLS (certificates of a throwaway CA): the nodes' ports, the gateway's
//! client port and its links to the nodes; the bare relay is left out then.

// The allocator the `mishards` binary uses, so the gateway and nodes here cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use mishards::config::{GatewayConfig, Scope};
use mishards::proto::{self, milvus_service_client::MilvusServiceClient};
use mishards::stats::percentile;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

mod common;
use common::{Client, SplitMix64, arg, connect, node_config, query, settings, use_tls, vector};

/// Median and p99 of `n` sequential searches, in microseconds.
async fn latency(
    addr: std::net::SocketAddr,
    n: usize,
    direct_files: Option<&[String]>,
) -> (f64, f64) {
    let mut c = connect(addr).await;
    let mut rng = SplitMix64::new(7);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let q = query("bench", &mut rng, 128);
        let started = Instant::now();
        let reply = match direct_files {
            Some(files) => {
                c.search_in_files(proto::SearchInFilesParam {
                    file_id_array: files.to_vec(),
                    search_param: Some(q),
                })
                .await
            }
            None => c.search(q).await,
        }
        .expect("search")
        .into_inner();
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply.status.map(|s| s.error_code), Some(0));
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 50.0), percentile(&times, 99.0))
}

/// Searches per second with `clients` concurrent clients for `seconds`.
async fn throughput(
    addr: std::net::SocketAddr,
    clients: usize,
    seconds: u64,
    direct_files: Option<Vec<String>>,
) -> f64 {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let files = direct_files.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut rng = SplitMix64::new(100 + i as u64);
            let mut done = 0u64;
            while Instant::now() < until {
                let q = query("bench", &mut rng, 128);
                let reply = match &files {
                    Some(files) => {
                        c.search_in_files(proto::SearchInFilesParam {
                            file_id_array: files.clone(),
                            search_param: Some(q),
                        })
                        .await
                    }
                    None => c.search(q).await,
                };
                assert_eq!(
                    reply
                        .expect("search")
                        .into_inner()
                        .status
                        .map(|s| s.error_code),
                    Some(0)
                );
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total as f64 / seconds as f64
}

/// CPU time this process's threads used, by thread name (digits dropped: `tokio-rt-worker`, ...).
#[derive(Default, Clone)]
struct ThreadCpu {
    micros: std::collections::BTreeMap<String, f64>,
    searches: f64,
}

impl ThreadCpu {
    fn read() -> ThreadCpu {
        let mut cpu = ThreadCpu::default();
        let tick_us = 1e6 / 100.0; // USER_HZ
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
                .sum();
            let name = comm
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            *cpu.micros.entry(name.to_string()).or_default() += ticks * tick_us;
        }
        cpu
    }

    fn since(&self, before: &ThreadCpu) -> ThreadCpu {
        let mut d = self.clone();
        for (name, us) in &before.micros {
            *d.micros.entry(name.clone()).or_default() -= us;
        }
        d
    }

    fn add(&mut self, other: ThreadCpu, searches: f64) {
        for (name, us) in other.micros {
            *self.micros.entry(name).or_default() += us;
        }
        self.searches += searches;
    }

    fn per_search(&self) -> String {
        let total: f64 = self.micros.values().sum();
        let mut parts: Vec<String> = self
            .micros
            .iter()
            .filter(|(_, us)| **us > 0.0)
            .map(|(name, us)| format!("{name} {:.0} µs", us / self.searches.max(1.0)))
            .collect();
        parts.insert(0, format!("total {:.0} µs", total / self.searches.max(1.0)));
        parts.join(", ")
    }
}

/// The least a second gRPC hop can cost: a bare relay that answers `Search` by sending the node the
/// `SearchInFiles` a gateway would, with no routing, actors, metrics or inspection. It runs on one
/// thread of its own, as the gateway's actors do.
#[derive(Clone)]
struct BareRelay {
    node: Client,
    files: std::sync::Arc<Vec<String>>,
}

impl tonic::server::NamedService for BareRelay {
    const NAME: &'static str = "milvus.grpc.MilvusService";
}

impl tonic::server::UnaryService<proto::SearchParam> for BareRelay {
    type Response = proto::TopKQueryResult;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tonic::Response<proto::TopKQueryResult>, tonic::Status>,
                > + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<proto::SearchParam>) -> Self::Future {
        let (mut node, files) = (self.node.clone(), self.files.clone());
        Box::pin(async move {
            node.search_in_files(proto::SearchInFilesParam {
                file_id_array: files.to_vec(),
                search_param: Some(request.into_inner()),
            })
            .await
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for BareRelay {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let relay = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(relay, req).await)
        })
    }
}

/// Starts a `BareRelay` to `node` on a thread of its own; its address.
fn bare_relay(node: std::net::SocketAddr, files: Vec<String>) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bare-relay".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("relay listener");
                tx.send(listener.local_addr().expect("relay addr"))
                    .expect("relay addr");
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{node}"))
                    .expect("endpoint")
                    .tcp_nodelay(true)
                    .connect_lazy();
                let relay = BareRelay {
                    node: MilvusServiceClient::new(channel),
                    files: std::sync::Arc::new(files),
                };
                let _ = tonic::transport::Server::builder()
                    .add_service(relay)
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                    )
                    .await;
            });
        })
        .expect("relay thread");
    rx.recv().expect("relay started")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// An OTLP collector that counts the spans it receives.
#[derive(Default, Clone)]
struct SpanSink(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Installs telemetry as `--tracing=MODE` asks; the guard and the span counter of `on`.
async fn tracing_mode() -> (
    Option<mishards::telemetry::TelemetryGuard>,
    Option<SpanSink>,
) {
    let mode = std::env::args()
        .find_map(|a| a.strip_prefix("--tracing=").map(str::to_string))
        .unwrap_or_else(|| "none".into());
    let log = mishards::config::LogConfig {
        debug: false,
        // The production default (info): spans must cost nothing even where logs are on.
        filter: None,
        path: None,
        name: "bench".into(),
        timezone: mishards::config::TimeZone::UTC,
    };
    let init = |exports: &[mishards::telemetry::Export<'_>]| {
        mishards::telemetry::init(&log, exports).expect("telemetry")
    };
    match mode.as_str() {
        "off" => (Some(init(&[])), None),
        "on" => {
            let sink = SpanSink::default();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("sink");
            let addr = listener.local_addr().expect("sink addr");
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(sink.clone()))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            let config = mishards::config::TracingConfig {
                otlp_endpoint: Some(format!("http://{addr}")),
                service_name: "mishards".into(),
                sampler_type: "const".into(),
                sampler_param: 1.0,
                log_payload: false,
            };
            let guard = init(&[mishards::telemetry::Export {
                config: &config,
                component: mishards::telemetry::Component::Process,
            }]);
            (Some(guard), Some(sink))
        }
        _ => (None, None),
    }
}

#[tokio::main]
async fn main() {
    let (rows, seconds) = (arg(0, 10_000) as usize, arg(1, 5));
    let (_telemetry, sink) = tracing_mode().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().display().to_string();
    // `--tls`: one CA for every hop; the bench's clients trust it.
    let tls = std::env::args().any(|a| a == "--tls");
    let (mut node_flags, mut gateway_tls_flags) = (Vec::new(), Vec::new());
    if tls {
        let ca = mishards::tls::testing::TestCa::new("bench CA");
        let ca_file = ca.write(&dir.path().join("ca.pem"));
        let cert = ca.issue_files(dir.path(), "bench", &["127.0.0.1"]);
        let (cert, key) = (
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
        );
        node_flags = vec![("tls-cert", cert.clone()), ("tls-key", key.clone())];
        gateway_tls_flags = vec![
            ("tls-cert", cert),
            ("tls-key", key),
            ("node-tls-ca", ca_file.display().to_string()),
        ];
        use_tls(ca.pem());
    }
    let node = |role: &str| node_config(role, &storage, &node_flags);
    let writer = mishards::node::start(&node("rw"))
        .await
        .expect("write node");
    let reader = mishards::node::start(&node("ro")).await.expect("read node");
    let meta = format!("sqlite://{}/meta.sqlite", storage);
    let gateway_flags = [
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("woserver", writer.addr.to_string()),
        ("meta-uri", meta.clone()),
        ("static-hosts", reader.addr.to_string()),
        ("admin-port", "0".to_string()),
        // `--search-batch=N`: most searches per read-node call (1: each search is a call of its own).
        (
            "search-batch",
            std::env::args()
                .find_map(|a| a.strip_prefix("--search-batch=").map(str::to_string))
                .unwrap_or_else(|| "32".into()),
        ),
    ];
    let gateway_flags: Vec<_> = gateway_flags.into_iter().chain(gateway_tls_flags).collect();
    let gateway_config = GatewayConfig::from_settings(&settings(Scope::Gateway, &gateway_flags))
        .expect("gateway config");
    let gateway = mishards::gateway::start(&gateway_config, Default::default())
        .await
        .expect("gateway");

    let mut c = connect(gateway.addr).await;
    c.create_collection(proto::CollectionSchema {
        collection_name: "bench".into(),
        dimension: 128,
        index_file_size: 1024,
        metric_type: 1,
        ..Default::default()
    })
    .await
    .expect("create");
    let mut rng = SplitMix64::new(1);
    let records: Vec<proto::RowRecord> = (0..rows)
        .map(|_| proto::RowRecord {
            float_data: vector(&mut rng, 128),
            binary_data: Vec::new(),
        })
        .collect();
    c.insert(proto::InsertParam {
        collection_name: "bench".into(),
        row_record_array: records,
        ..Default::default()
    })
    .await
    .expect("insert");
    c.flush(proto::FlushParam::default()).await.expect("flush");
    let info = c
        .show_collection_info(proto::CollectionName {
            collection_name: "bench".into(),
        })
        .await
        .expect("stats");
    let json: serde_json::Value = serde_json::from_str(&info.into_inner().json_info).expect("json");
    let segments = json["partitions"][0]["segments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The file ids a gateway would send the read node (one small collection: one file).
    let files: Vec<String> = {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&meta).await.expect("meta");
        sqlx::query_scalar::<_, i64>("SELECT id FROM TableFiles WHERE file_type IN (1, 2, 3)")
            .fetch_all(&mut db)
            .await
            .expect("files")
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    };
    // Wait until the gateway sees the read node healthy and the file.
    for _ in 0..100 {
        let r = c
            .search(query("bench", &mut rng, 128))
            .await
            .expect("search")
            .into_inner();
        if r.status.map(|s| s.error_code) == Some(0) && r.row_num == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm both paths.
    latency(reader.addr, 200, Some(&files)).await;
    latency(gateway.addr, 200, None).await;

    // `--profile=gateway|relay|direct`: only that side's throughput, for `perf record` to attach to.
    if let Some(side) =
        std::env::args().find_map(|a| a.strip_prefix("--profile=").map(str::to_string))
    {
        let target = match side.as_str() {
            "relay" => {
                assert!(!tls, "the bare relay speaks plain TCP only: drop --tls");
                bare_relay(reader.addr, files.clone())
            }
            "direct" => reader.addr,
            _ => gateway.addr,
        };
        let direct = (side == "direct").then(|| files.clone());
        eprintln!("profiling {side}: pid {}", std::process::id());
        let before = ThreadCpu::read();
        let qps = throughput(target, 32, seconds, direct).await;
        let mut cpu = ThreadCpu::default();
        cpu.add(ThreadCpu::read().since(&before), qps * seconds as f64);
        eprintln!("{side}: {qps:.0}/s; CPU per search: {}", cpu.per_search());
        gateway.shutdown().await;
        return;
    }
    let n = 2000;
    let (direct_p50, direct_p99) = latency(reader.addr, n, Some(&files)).await;
    let (gw_p50, gw_p99) = latency(gateway.addr, n, None).await;
    // Alternating rounds, so a disturbance of the shared machine touches both sides alike.
    let rounds = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=").and_then(|r| r.parse().ok()))
        .unwrap_or(1usize)
        .max(1);
    let (mut direct_runs, mut gw_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_direct = ThreadCpu::default();
    let mut cpu_gateway = ThreadCpu::default();
    // The bare relay speaks plain TCP only: left out under `--tls`.
    let relay = (!tls).then(|| bare_relay(reader.addr, files.clone()));
    let mut relay_runs = Vec::new();
    let mut cpu_relay = ThreadCpu::default();
    for _ in 0..rounds {
        let before = ThreadCpu::read();
        let direct = throughput(reader.addr, 32, seconds, Some(files.clone())).await;
        cpu_direct.add(ThreadCpu::read().since(&before), direct * seconds as f64);
        let before = ThreadCpu::read();
        let via = throughput(gateway.addr, 32, seconds, None).await;

        cpu_gateway.add(ThreadCpu::read().since(&before), via * seconds as f64);
        if let Some(relay) = relay {
            let before = ThreadCpu::read();
            let relayed = throughput(relay, 32, seconds, None).await;
            cpu_relay.add(ThreadCpu::read().since(&before), relayed * seconds as f64);
            eprintln!("round: bare relay {relayed:.0}/s");
            relay_runs.push(relayed / direct);
        }
        eprintln!("round: direct {direct:.0}/s, via gateway {via:.0}/s");
        direct_runs.push(direct);
        gw_runs.push(via);
        ratios.push(via / direct);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (direct_qps, gw_qps) = (median(&mut direct_runs), median(&mut gw_runs));
    println!(
        "collection: {rows} × 128 float32 in {} segment(s); nq = 1, top-10; one read node{}",
        segments.len(),
        if tls { "; TLS on every hop" } else { "" }
    );
    println!(
        "latency, 1 client, {n} searches: direct p50 {direct_p50:.0} µs p99 {direct_p99:.0} µs | via gateway p50 {gw_p50:.0} µs p99 {gw_p99:.0} µs | added at the median {:.0} µs",
        gw_p50 - direct_p50
    );
    println!(
        "throughput, 32 clients, {seconds} s, median of {rounds}: direct {direct_qps:.0}/s | via gateway {gw_qps:.0}/s | gateway/direct per round {} (median {:.0}%)",
        ratios
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect::<Vec<_>>()
            .join(" "),
        median(&mut ratios) * 100.0
    );
    if !tls {
        println!(
            "bare relay (a second gRPC hop and nothing else), per round: {}",
            relay_runs
                .iter()
                .map(|r| format!("{:.0}%", r * 100.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "CPU per search by thread, direct:      {}",
        cpu_direct.per_search()
    );
    println!(
        "CPU per search by thread, via gateway: {}",
        cpu_gateway.per_search()
    );
    if !tls {
        println!(
            "CPU per search by thread, bare relay:  {}",
            cpu_relay.per_search()
        );
    }
    let links = gateway
        .actors
        .cluster
        .send(mishards::gateway::cluster::GetLinks)
        .await
        .expect("links");
    for link in links.values() {
        let s = link
            .send(mishards::gateway::node_link::GetLinkStats)
            .await
            .expect("link stats");
        println!(
            "read node {}: {} searches in {} SearchInFiles calls (mean batch {:.1}), {} of them batched",
            s.node,
            s.requests,
            s.search_calls,
            s.requests as f64 / s.search_calls.max(1) as f64,
            s.batched_searches
        );
    }
    if let Some(sink) = &sink {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "spans exported: {}",
            sink.0.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    gateway.shutdown().await;

    // An idle gateway process on its own.
    let hosts = reader.addr.to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args([
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--woserver",
            &writer.addr.to_string(),
            "--meta-uri",
            &meta,
            "--static-hosts",
            &hosts,
            "--admin-port",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gateway process");
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "idle gateway process resident memory: {:.1} MB",
        rss_kb(child.id()) as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    reader.shutdown().await;
    writer.shutdown().await;
}
