//! What the gateway costs: a search through the gateway in front of one read node against the same search
//! sent to that read node directly (nq = 1, top-10, a small collection), as median/p99 latency for one
//! client and as throughput with 32 concurrent clients; and the resident memory of an idle `mishards
//! gateway` process. Run: `cargo bench --bench gateway -- [rows] [seconds] [--tracing=none|off|on]`:
//! `none` installs no subscriber, `off` the production logging with tracing off, `on` exports every
//! span over OTLP to a sink in this process (sampler const 1).

use std::time::{Duration, Instant};

use mishards::config::{GatewayConfig, NodeConfig, Scope, Settings};
use mishards::proto::{self, milvus_service_client::MilvusServiceClient};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn settings(scope: Scope, flags: &[(&'static str, String)]) -> Settings {
    let env: std::collections::HashMap<String, String> = Default::default();
    Settings::resolve(scope, &flags.iter().cloned().collect(), &env, None).expect("settings")
}

fn vector(seed: &mut u64, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn query(seed: &mut u64) -> proto::SearchParam {
    proto::SearchParam {
        collection_name: "bench".into(),
        query_record_array: vec![proto::RowRecord {
            float_data: vector(seed, 128),
            binary_data: Vec::new(),
        }],
        topk: 10,
        ..Default::default()
    }
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    MilvusServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// Median and p99 of `n` sequential searches, in microseconds.
async fn latency(
    addr: std::net::SocketAddr,
    n: usize,
    direct_files: Option<&[String]>,
) -> (f64, f64) {
    let mut c = connect(addr).await;
    let mut seed = 7u64;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let q = query(&mut seed);
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
    (times[n / 2], times[n * 99 / 100])
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
            let mut seed = 100 + i as u64;
            let mut done = 0u64;
            while Instant::now() < until {
                let q = query(&mut seed);
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
        utc_offset_seconds: Some(0),
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
    let node = |role: &str| {
        NodeConfig::from_settings(&settings(
            Scope::Node,
            &[
                ("role", role.into()),
                ("host", "127.0.0.1".into()),
                ("port", "0".into()),
                ("storage", storage.clone()),
            ],
        ))
        .expect("node config")
    };
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
    ];
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
    let mut seed = 1u64;
    let records: Vec<proto::RowRecord> = (0..rows)
        .map(|_| proto::RowRecord {
            float_data: vector(&mut seed, 128),
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
            .search(query(&mut seed))
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

    let n = 2000;
    let (direct_p50, direct_p99) = latency(reader.addr, n, Some(&files)).await;
    let (gw_p50, gw_p99) = latency(gateway.addr, n, None).await;
    let direct_qps = throughput(reader.addr, 32, seconds, Some(files.clone())).await;
    let gw_qps = throughput(gateway.addr, 32, seconds, None).await;
    println!(
        "collection: {rows} × 128 float32 in {} segment(s); nq = 1, top-10; one read node",
        segments.len()
    );
    println!(
        "latency, 1 client, {n} searches: direct p50 {direct_p50:.0} µs p99 {direct_p99:.0} µs | via gateway p50 {gw_p50:.0} µs p99 {gw_p99:.0} µs | added at the median {:.0} µs",
        gw_p50 - direct_p50
    );
    println!(
        "throughput, 32 clients, {seconds} s: direct {direct_qps:.0}/s | via gateway {gw_qps:.0}/s = {:.0}% of direct",
        gw_qps / direct_qps * 100.0
    );
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
