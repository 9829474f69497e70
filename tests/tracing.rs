//! Traces end to end: a gateway and its nodes as separate processes export over OTLP to a collector
//! running in this test; one search is one trace, from the client's `traceparent` through routing and
//! every node attempt into each node's SearchInFiles and segment spans.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::Process;
use common::{Client, RandomVectors, SplitMix64, cmd, code, conn_stats, search_param};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

const DIM: usize = common::FILE_DIM;
const ROWS: usize = common::FILE_ROWS;

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                });
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .map(|spans| {
                spans
                    .iter()
                    .filter(|s| s.trace_id == trace_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The spans of `trace_id` once `done` holds of them (at most 20 s).
    async fn wait_for(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.trace(trace_id);
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A write node and read nodes as processes on one storage folder (a `stranger` read node has a
/// folder and metadata of its own, so it knows none of the collections), and a gateway.
struct Cluster {
    _dir: tempfile::TempDir,
    writer: Process,
    readers: Vec<Process>,
    gateway: Process,
}

impl Cluster {
    fn start(otlp: &str, readers: usize, strangers: usize) -> Cluster {
        Self::start_with(otlp, readers, strangers, |_, addr| addr.to_string(), &[])
    }

    /// As `start`; the gateway lists node `i` at `listed(i, its address)` and takes `gateway_args` too.
    fn start_with(
        otlp: &str,
        readers: usize,
        strangers: usize,
        mut listed: impl FnMut(usize, &str) -> String,
        gateway_args: &[&str],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("data");
        let storage = storage.to_str().unwrap().to_string();
        let node = |role: &str, storage: &str| {
            Process::local_node(role, storage, &["--otlp-endpoint", otlp], &[])
        };
        let writer = node("rw", &storage);
        let mut nodes: Vec<Process> = (0..readers).map(|_| node("ro", &storage)).collect();
        for i in 0..strangers {
            let own = dir.path().join(format!("stranger-{i}"));
            // A read node needs the schema its write node would have made.
            let w = node("rw", own.to_str().unwrap());
            drop(w.stop());
            nodes.push(node("ro", own.to_str().unwrap()));
        }
        let hosts: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| listed(i, n.addr()))
            .collect();
        let hosts = hosts.join(",");
        let meta = format!("sqlite://{storage}/meta.sqlite");
        let mut args = vec![
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--woserver",
            writer.addr(),
            "--meta-uri",
            &meta,
            "--static-hosts",
            &hosts,
            "--otlp-endpoint",
            otlp,
            "--admin-port",
            "0",
        ];
        args.extend_from_slice(gateway_args);
        let gateway = Process::start(&args, &[], 2);
        Cluster {
            _dir: dir,
            writer,
            readers: nodes,
            gateway,
        }
    }

    fn gateway_addr(&self) -> SocketAddr {
        self.gateway.addr().parse().unwrap()
    }

    fn admin_addr(&self) -> &str {
        &self.gateway.addrs[1]
    }

    async fn client(&self) -> Client {
        common::client(self.gateway_addr()).await
    }

    fn stop(self) {
        let logs = self.gateway.stop();
        assert!(!logs.contains("panicked"), "{logs}");
        for node in self.readers.into_iter().chain([self.writer]) {
            let logs = node.stop();
            assert!(!logs.contains("panicked"), "{logs}");
        }
    }
}

/// Waits until the gateway sees `n` healthy read nodes (at most 20 s).
async fn wait_healthy(c: &mut Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = conn_stats(c).await;
        let healthy = stats["read_nodes"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|n| n["state"] == "healthy").count());
        if healthy >= n {
            return;
        }
        assert!(Instant::now() < deadline, "read nodes not healthy: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A collection of `files` flushed files.
async fn load(c: &mut Client, name: &str, files: usize) {
    common::load_files(c, name, files, &mut SplitMix64::new(7)).await;
}

/// Searches with the client's own `traceparent`; returns the trace id and the client's span id.
async fn traced_search(c: &mut Client, name: &str, seed: u64) -> (String, String) {
    let trace_id = format!("{:016x}{:016x}", 0x4bf9_2f35_77b3_4da6u64 ^ seed, seed + 1);
    let client_span = format!("{:016x}", 0x00f0_67aa_0ba9_02b7u64 ^ seed);
    let mut request = tonic::Request::new(search_param(
        name,
        &SplitMix64::new(seed).vectors(1, DIM),
        10,
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span}-01").parse().unwrap(),
    );
    let result = c.search(request).await.unwrap().into_inner();
    assert_eq!(code(&result.status), 0, "{:?}", result.status);
    assert_eq!(result.ids.len(), 10);
    (trace_id, client_span)
}

fn named<'s>(spans: &'s [Span], service: &str, name: &str) -> Vec<&'s Span> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_search_is_one_trace_across_gateway_and_nodes() {
    let (collector, otlp) = Collector::start().await;
    let cluster = Cluster::start(&otlp, 2, 0);
    let mut c = cluster.client().await;
    wait_healthy(&mut c, 2).await;
    // Four files over two read nodes: the placement's load bound gives each node at least one.
    load(&mut c, "traced", 4).await;
    let (trace_id, client_span) = traced_search(&mut c, "traced", 1).await;

    let spans = collector
        .wait_for(&trace_id, |s| {
            named(s, "mishards-node", "segment").len() >= 4
                && named(s, "mishards", "Search").len() == 1
                && named(s, "mishards", "merge").len() == 1
        })
        .await;
    let show = || format!("{spans:#?}");

    // The gateway's RPC span continues the client's trace.
    let rpc = named(&spans, "mishards", "Search");
    assert_eq!(rpc.len(), 1, "{}", show());
    let rpc = rpc[0];
    assert_eq!(rpc.parent, client_span);
    assert_eq!(rpc.attr("collection"), "traced");
    assert_eq!(rpc.attr("nq"), "1");
    assert_eq!(rpc.attr("topk"), "10");
    assert_eq!(rpc.attr("metric"), "L2");
    assert_eq!(rpc.attr("code"), "0");

    let route = named(&spans, "mishards", "route");
    assert_eq!(route.len(), 1, "{}", show());
    assert_eq!(route[0].parent, rpc.span_id);
    assert_eq!(route[0].attr("files"), "4");
    assert_eq!(route[0].attr("nodes"), "2");
    assert_ne!(route[0].attr("epoch"), "0");
    let merge = named(&spans, "mishards", "merge");
    assert_eq!(merge[0].parent, rpc.span_id);

    // One attempt per read node, each the parent of that node's SearchInFiles.
    let attempts = named(&spans, "mishards", "node_attempt");
    assert_eq!(attempts.len(), 2, "{}", show());
    let searches = named(&spans, "mishards-node", "SearchInFiles");
    assert_eq!(searches.len(), 2, "{}", show());
    let mut files_searched = 0;
    for attempt in &attempts {
        assert_eq!(attempt.parent, rpc.span_id);
        assert_eq!(attempt.attr("attempt"), "1");
        assert_eq!(attempt.attr("why"), "first");
        assert_eq!(attempt.attr("outcome"), "ok");
        let children: Vec<_> = searches
            .iter()
            .filter(|s| s.parent == attempt.span_id)
            .collect();
        assert_eq!(children.len(), 1, "{}", show());
        let node_rpc = children[0];
        assert_eq!(node_rpc.attr("code"), "0");
        let files: usize = attempt.attr("files").parse().unwrap();
        let segments: Vec<_> = named(&spans, "mishards-node", "segment")
            .into_iter()
            .filter(|s| s.parent == node_rpc.span_id)
            .collect();
        assert_eq!(segments.len(), files, "{}", show());
        for segment in segments {
            assert_eq!(segment.attr("rows"), ROWS.to_string());
            assert_eq!(segment.attr("index"), "FLAT");
        }
        files_searched += files;
    }
    assert_eq!(files_searched, 4);

    // Health probes are not traced: every node span belongs to a gateway request.
    let all = collector.spans.lock().unwrap().clone();
    assert!(
        !all.iter()
            .any(|s| s.service == "mishards-node" && s.name == "Cmd"),
        "health probes were traced"
    );
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_shows_in_the_trace_and_in_the_inspector() {
    let (collector, otlp) = Collector::start().await;
    // One good read node and one that has none of the files.
    let cluster = Cluster::start(&otlp, 1, 1);
    let mut c = cluster.client().await;
    wait_healthy(&mut c, 2).await;
    load(&mut c, "retried", 4).await;
    let stranger = cluster.readers[1].addr().to_string();
    let good = cluster.readers[0].addr().to_string();
    let (trace_id, _) = traced_search(&mut c, "retried", 2).await;

    let spans = collector
        .wait_for(&trace_id, |s| {
            named(s, "mishards", "node_attempt").len() >= 3
                && named(s, "mishards", "Search").len() == 1
        })
        .await;
    let show = || format!("{spans:#?}");
    let attempts = named(&spans, "mishards", "node_attempt");
    let failed: Vec<_> = attempts
        .iter()
        .filter(|a| a.attr("outcome") == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", show());
    assert_eq!(failed[0].attr("node"), stranger);
    assert!(failed[0].attr("reason").contains("not exist"), "{}", show());
    let retried: Vec<_> = attempts
        .iter()
        .filter(|a| a.attr("attempt") == "2")
        .collect();
    assert_eq!(retried.len(), 1, "{}", show());
    assert_eq!(retried[0].attr("node"), good);
    assert_eq!(retried[0].attr("why"), "retry");
    assert_eq!(retried[0].attr("outcome"), "ok");
    assert_eq!(retried[0].attr("files"), failed[0].attr("files"));

    // The inspector has the same story under the same trace id.
    let manifest = admin_get(cluster.admin_addr(), &format!("/requests/{trace_id}")).await;
    assert_eq!(manifest["trace_id"], trace_id.as_str());
    assert_eq!(manifest["collection"], "retried");
    assert_eq!(manifest["code"], 0);
    let nodes = manifest["nodes"].as_array().unwrap();
    let of = |addr: &str| {
        nodes
            .iter()
            .find(|n| n["node"] == addr)
            .unwrap_or_else(|| panic!("{addr} not in {manifest}"))["attempts"]
            .as_array()
            .unwrap()
            .clone()
    };
    let stranger_attempts = of(&stranger);
    assert_eq!(stranger_attempts.len(), 1, "{manifest}");
    assert_eq!(stranger_attempts[0]["outcome"], "failed");
    let good_attempts = of(&good);
    assert_eq!(good_attempts.len(), 2, "{manifest}");
    assert_eq!(good_attempts[1]["round"], 1);
    assert_eq!(good_attempts[1]["why"], "retry");
    assert_eq!(good_attempts[1]["files"], stranger_attempts[0]["files"]);
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_and_the_attempt_it_beat_show_in_the_trace() {
    let (collector, otlp) = Collector::start().await;
    // Read node 0 answers a second late; its attempts are hedged after 150 ms (debug builds sharing
    // two cores may take 100 ms and more to search).
    let mut proxy = None;
    let cluster = Cluster::start_with(
        &otlp,
        2,
        0,
        |i, addr| match i {
            0 => {
                let slow = common::proxy::DelayProxy::spawn(
                    addr.parse().unwrap(),
                    Duration::from_millis(1000),
                );
                let listed = slow.addr.to_string();
                proxy = Some(slow);
                listed
            }
            _ => addr.to_string(),
        },
        &[
            "--hedge-delay-ms",
            "150",
            "--hedge-max-share",
            "1",
            "--demote-slow-nodes=false",
        ],
    );
    let slow = proxy.as_ref().unwrap().addr.to_string();
    let fast = cluster.readers[1].addr().to_string();
    let mut c = cluster.client().await;
    wait_healthy(&mut c, 2).await;
    // Four files over two read nodes: the placement's load bound gives each node at least one.
    load(&mut c, "hedged", 4).await;
    // A search whose hedge won (at most three tries: the hedge wins unless the machine stalls).
    let mut won = None;
    for seed in 10..13 {
        let (trace_id, _) = traced_search(&mut c, "hedged", seed).await;
        let manifest = admin_get(cluster.admin_addr(), &format!("/requests/{trace_id}")).await;
        let attempts: Vec<(serde_json::Value, serde_json::Value)> = manifest["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| {
                let node = n["node"].clone();
                n["attempts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |a| (node.clone(), a.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let cancelled = attempts.iter().any(|(node, a)| {
            node == slow.as_str() && a["why"] == "first" && a["outcome"] == "cancelled"
        });
        // A stalled machine can make the fast node late too, and its files get a hedge of their own:
        // such a search shows two hedges, not the one race this test looks at.
        let hedges = attempts.iter().filter(|(_, a)| a["why"] == "hedge").count();
        if cancelled && hedges == 1 {
            won = Some(trace_id);
            break;
        }
    }
    let trace_id = won.expect("no lone hedge beat a node one second slow in three searches");
    let spans = collector
        .wait_for(&trace_id, |s| {
            named(s, "mishards", "node_attempt").len() >= 3
                && named(s, "mishards", "Search").len() == 1
                && named(s, "mishards-node", "SearchInFiles").len() >= 2
        })
        .await;
    let show = || format!("{spans:#?}");
    let rpc = named(&spans, "mishards", "Search");
    assert_eq!(rpc.len(), 1, "{}", show());
    let attempts = named(&spans, "mishards", "node_attempt");
    let loser: Vec<_> = attempts
        .iter()
        .filter(|a| a.attr("node") == slow && a.attr("why") == "first")
        .collect();
    assert_eq!(loser.len(), 1, "{}", show());
    assert_eq!(loser[0].attr("outcome"), "cancelled", "{}", show());
    // Losing to a hedge is not an error.
    assert_eq!(loser[0].attr("otel.status_code"), "", "{}", show());
    let hedges: Vec<_> = attempts
        .iter()
        .filter(|a| a.attr("why") == "hedge")
        .collect();
    assert_eq!(hedges.len(), 1, "{}", show());
    let hedge = hedges[0];
    assert_eq!(hedge.attr("node"), fast);
    assert_eq!(hedge.attr("outcome"), "ok");
    assert_eq!(hedge.attr("files"), loser[0].attr("files"));
    assert_eq!(hedge.parent, rpc[0].span_id);
    // The hedge's own SearchInFiles on the fast node is its child, in the same trace.
    let searches = named(&spans, "mishards-node", "SearchInFiles");
    assert!(
        searches.iter().any(|s| s.parent == hedge.span_id),
        "{}",
        show()
    );
    cluster.stop();
    drop(proxy);
}

/// GET on the gateway's admin listener, as JSON.
async fn admin_get(addr: &str, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_logged_once_and_requests_go_on() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Process::local_node(
        "rw",
        dir.path().to_str().unwrap(),
        &["--otlp-endpoint", &format!("http://{closed}")],
        &[],
    );
    let mut c = common::client(node.addr().parse().unwrap()).await;
    // Spans over several export rounds (every 0.5 s): each round fails.
    for _ in 0..6 {
        let started = Instant::now();
        let reply = cmd(&mut c, "version").await;
        assert_eq!(code(&reply.status), 0);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a request waited for the exporter"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let logs = node.stop();
    let complaints = logs.matches("cannot export traces").count();
    assert_eq!(complaints, 1, "{logs}");
}
