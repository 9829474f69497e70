//! The node's Prometheus metrics (`/metrics` on its probe listener). RPC counts are kept as calls finish
//! (the gRPC server's RPC layer reports each one through `RpcObserver`); everything else is read from
//! the engine at scrape time, so nothing on the request path keeps a second copy of it.

use std::path::Path;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::health::{NodeHealth, Phase};
use mishards_telemetry::RpcObserver;

/// What `/metrics` answers with: the OpenMetrics text format prometheus-client writes (`# EOF` ends it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label `rpc` takes for a method that is not one of Milvus 1.1's (clients choose the path: the
/// series must not grow with it).
const OTHER_RPC: &str = "other";

/// The label `code` takes when a call ended in a gRPC error instead of a Milvus status.
const GRPC_ERROR: &str = "grpc_error";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    role: &'static str,
    phase: &'static str,
}

/// Counts of finished RPCs, by method and Milvus status code.
#[derive(Debug, Default)]
pub struct NodeRpcMetrics {
    requests: Family<RpcCodeLabels, Counter>,
}

impl RpcObserver for NodeRpcMetrics {
    fn observe(&self, rpc: &str, code: Option<i32>, _latency: Duration) {
        let rpc = match mishards_proto::rpc_index(rpc) {
            Some(_) => rpc.to_string(),
            None => OTHER_RPC.to_string(),
        };
        let code = code.map_or_else(|| GRPC_ERROR.to_string(), |c| c.to_string());
        self.requests
            .get_or_create(&RpcCodeLabels { rpc, code })
            .inc();
    }
}

/// One scrape's reading of the engine and the metadata.
#[derive(Debug, Default)]
pub struct NodeSample {
    /// Whether the metadata database answered this scrape (`None`: not asked, the engine is not open).
    pub metadata_reachable: Option<bool>,
    /// Bytes of the write-ahead log's files on disk (a write node's).
    pub wal_bytes: Option<u64>,
}

/// Reads what a scrape needs beyond counters: a metadata ping bounded by `timeout`, the log's size.
pub async fn sample(health: &NodeHealth, timeout: Duration) -> NodeSample {
    let Some(engine) = health.engine() else {
        return NodeSample::default();
    };
    let reachable = matches!(
        tokio::time::timeout(timeout, engine.metadata_reachable()).await,
        Ok(Ok(()))
    );
    let wal_bytes = match engine.wal_dir() {
        Some(dir) => tokio::task::spawn_blocking(move || folder_bytes(&dir))
            .await
            .ok(),
        None => None,
    };
    NodeSample {
        metadata_reachable: Some(reachable),
        wal_bytes,
    }
}

/// The total size of the files directly in `dir` (0 when it cannot be read).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The `/metrics` text: this scrape's values in a fresh registry (the RPC family is a shared handle).
pub fn encode(
    health: &NodeHealth,
    rpcs: &NodeRpcMetrics,
    sample: &NodeSample,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("mishards_node");
    let phase = health.phase();
    registry.register(
        "ready",
        "1 while the node serves gRPC with its metadata open (what /readyz answers 200 to), else 0",
        gauge(i64::from(phase == Phase::Serving)),
    );
    let state: Family<NodeLabels, Gauge> = Family::default();
    state
        .get_or_create(&NodeLabels {
            role: health.role().name(),
            phase: phase.name(),
        })
        .set(1);
    registry.register(
        "phase",
        "The node's role and phase (starting, waiting_for_metadata, opening, serving, stopping)",
        state,
    );
    registry.register(
        "rpc_requests",
        "Finished RPCs by method and Milvus status code (grpc_error: the call ended in a gRPC error)",
        rpcs.requests.clone(),
    );
    if let Some(reachable) = sample.metadata_reachable {
        registry.register(
            "metadata_reachable",
            "1 when the metadata database answered this scrape",
            gauge(i64::from(reachable)),
        );
    }
    let Some(engine) = health.engine() else {
        let mut text = String::new();
        encode_registry(&mut text, &registry)?;
        encode_eof(&mut text)?;
        return Ok(text);
    };
    let stats = engine.counters();
    let inserted: Counter = Counter::default();
    inserted.inc_by(stats.rows_inserted());
    registry.register(
        "rows_inserted",
        "Rows acknowledged to inserts since the node started",
        inserted,
    );
    let flushes = stats.flushes();
    let failures: Family<TableLabels, Counter> = Family::default();
    let mut failing = 0;
    for (table, s) in &flushes {
        failures
            .get_or_create(&TableLabels {
                table: table.clone(),
            })
            .inc_by(s.failures);
        failing += i64::from(s.failing.is_some());
    }
    registry.register(
        "flush_failures",
        "Flushes of a table that failed since the node started (its rows stay buffered and in the write-ahead log)",
        failures,
    );
    registry.register(
        "flush_failing_tables",
        "Tables whose last flush failed (their error reaches the next client that flushes them)",
        gauge(failing),
    );
    registry.register_with_unit(
        "insert_buffer",
        "Inserts and deletes buffered for the next flush",
        Unit::Bytes,
        gauge(clamp(engine.buffered_bytes().unwrap_or(0))),
    );
    registry.register_with_unit(
        "wal_queued",
        "Write-ahead log records submitted and not yet written",
        Unit::Bytes,
        gauge(clamp(engine.wal_queued_bytes())),
    );
    if let Some(bytes) = sample.wal_bytes {
        registry.register_with_unit(
            "wal",
            "Size of the write-ahead log's files on disk",
            Unit::Bytes,
            gauge(clamp(bytes)),
        );
    }
    registry.register_with_unit(
        "segment_cache",
        "Segment data held in the cache",
        Unit::Bytes,
        gauge(clamp(engine.cache().used_bytes() as u64)),
    );
    registry.register_with_unit(
        "segment_cache_capacity",
        "The segment cache's capacity (cache.cache_size)",
        Unit::Bytes,
        gauge(clamp(engine.cache().capacity() as u64)),
    );
    let mut text = String::new();
    encode_registry(&mut text, &registry)?;
    encode_eof(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_outside_milvus_s_go_under_one_label() {
        let m = NodeRpcMetrics::default();
        m.observe("Search", Some(0), Duration::ZERO);
        m.observe("NoSuchMethod", None, Duration::ZERO);
        let health = NodeHealth::new(mishards_config::Role::Reader);
        let text = encode(&health, &m, &NodeSample::default()).unwrap();
        assert!(
            text.contains("mishards_node_rpc_requests_total{rpc=\"Search\",code=\"0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rpc=\"other\",code=\"grpc_error\"} 1"),
            "{text}"
        );
        assert!(text.contains("mishards_node_ready 0"), "{text}");
        assert!(
            text.contains("mishards_node_phase{role=\"ro\",phase=\"starting\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
