//! Prometheus metrics of the gateway. Per-RPC request counts and latencies are kept as they happen (the
//! RPC layer tells [`GatewayMetrics`] of every finished call through `RpcObserver`); the state of the
//! cluster — node links, routing, metadata poller, inspector — is read from the actors at scrape time
//! ([`ClusterSample`]), so nothing on the request path keeps a second copy of it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::GatewayError;
use super::cluster::GetLinks;
use super::discovery::{DiscoveryStats, GetDiscoveryStats};
use super::inspect::{GetInspectorStats, InspectorStats};
use super::metadata::{GetPollerStats, PollerStats};
use super::node_link::{GetLinkStats, LinkState, LinkStats, NodeLink};
use super::routing::{GetRoutingStats, RoutingStats};
use super::service::Actors;
use mishards_telemetry::RpcObserver;

/// What `/metrics` answers with: the OpenMetrics text format prometheus-client writes (`# EOF` ends it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the RPC latency buckets, in seconds: 0.1 ms to 10 s (the per-node search deadline),
/// about three per decade.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label `code` takes when a call ended in a gRPC error instead of a Milvus status.
pub const GRPC_ERROR: &str = "grpc_error";

/// The label `rpc` takes for a method name beyond `MAX_RPC_NAMES` or not shaped like one: the name comes
/// from the request path, which any client chooses, and must not grow the series without bound.
pub const OTHER_RPC: &str = "other";

/// Distinct unknown method names kept as labels (the 41 Milvus 1.1 RPCs are always kept).
const MAX_RPC_NAMES: usize = 64;

/// Milvus status codes with a series handle kept per RPC (the codes of `ErrorCode` fit; any other is
/// looked up in the family).
const KEPT_CODES: usize = 64;

/// One known RPC's series, resolved on first use so that a request touches atomics only.
#[derive(Debug)]
struct RpcSeries {
    duration: Histogram,
    by_code: Vec<std::sync::OnceLock<Counter>>,
    grpc_error: std::sync::OnceLock<Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    /// `read` or `write`.
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    node: String,
    role: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadNodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouterLabels {
    router: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActorLabels {
    actor: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The gateway's Prometheus metrics. One per gateway, shared (`Arc`) by the gRPC server's RPC layer,
/// which calls [`RpcObserver::observe`], and the admin listener, which calls [`GatewayMetrics::encode`].
#[derive(Debug)]
pub struct GatewayMetrics {
    rpc_requests: Family<RpcCodeLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// Distinct unknown method names labelled so far (at most `MAX_RPC_NAMES`).
    rpc_names: AtomicUsize,
    /// The series of each of `proto::RPCS`, by its index there.
    known: Vec<std::sync::OnceLock<RpcSeries>>,
    /// The hedge budget, whose counters are exported as they stand (`None`: hedging is off).
    hedging: Option<std::sync::Arc<super::hedge::Hedging>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        GatewayMetrics {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            rpc_names: AtomicUsize::new(0),
            known: (0..mishards_proto::RPCS.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            hedging: None,
        }
    }

    /// Exports the counters of this hedge budget too.
    pub fn with_hedging(mut self, hedging: Option<std::sync::Arc<super::hedge::Hedging>>) -> Self {
        self.hedging = hedging;
        self
    }

    /// The exposition: the RPC metrics, then the cluster's state when `sample` is given (a scrape whose
    /// actors did not answer still reports the RPC metrics).
    pub fn encode(&self, sample: Option<&ClusterSample>) -> Result<String, std::fmt::Error> {
        // A fresh registry per scrape: the RPC families are shared handles (clones count into the same
        // series), the cluster's gauges are this scrape's values.
        let mut registry = Registry::with_prefix("mishards");
        registry.register(
            "rpc_requests",
            "Finished RPCs by method and Milvus status code (grpc_error: the call ended in a gRPC error)",
            self.rpc_requests.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time to answer an RPC, by method",
            Unit::Seconds,
            self.rpc_duration.clone(),
        );
        if let Some(hedging) = &self.hedging {
            register_hedging(&mut registry, &hedging.budget.stats());
        }
        if let Some(sample) = sample {
            register_sample(&mut registry, sample);
        }
        let mut text = String::new();
        encode_registry(&mut text, &registry)?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}

impl GatewayMetrics {
    /// `rpc` as a label: itself when it looks like a method name and is already known or there is room.
    fn rpc_label(&self, rpc: &str) -> String {
        let shaped = !rpc.is_empty()
            && rpc.len() <= 64
            && rpc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !shaped {
            return OTHER_RPC.to_string();
        }
        let labels = RpcLabels {
            rpc: rpc.to_string(),
        };
        let known = self.rpc_duration.get(&labels).is_some();
        // Two first calls of one name at once may count it twice: the cap only gets a little tighter.
        let room = || {
            self.rpc_names
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < MAX_RPC_NAMES).then_some(n + 1)
                })
                .is_ok()
        };
        if known || room() {
            labels.rpc
        } else {
            OTHER_RPC.to_string()
        }
    }
}

impl RpcObserver for GatewayMetrics {
    fn observe(&self, rpc: &str, code: Option<i32>, latency: Duration) {
        let Some(index) = mishards_proto::rpc_index(rpc) else {
            return self.observe_unknown(rpc, code, latency);
        };
        let series = self.known[index].get_or_init(|| RpcSeries {
            duration: self
                .rpc_duration
                .get_or_create(&RpcLabels { rpc: rpc.into() })
                .clone(),
            by_code: (0..KEPT_CODES)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            grpc_error: std::sync::OnceLock::new(),
        });
        series.duration.observe(latency.as_secs_f64());
        let slot = match code {
            None => &series.grpc_error,
            Some(c) => match usize::try_from(c).ok().and_then(|c| series.by_code.get(c)) {
                Some(slot) => slot,
                None => return self.count(rpc.into(), code),
            },
        };
        slot.get_or_init(|| {
            self.rpc_requests
                .get_or_create(&RpcCodeLabels {
                    rpc: rpc.into(),
                    code: code_label(code),
                })
                .clone()
        })
        .inc();
    }
}

fn code_label(code: Option<i32>) -> String {
    code.map_or_else(|| GRPC_ERROR.to_string(), |c| c.to_string())
}

impl GatewayMetrics {
    /// A method name outside Milvus 1.1's: labelled as itself while there is room (`rpc_label`).
    fn observe_unknown(&self, rpc: &str, code: Option<i32>, latency: Duration) {
        let rpc = self.rpc_label(rpc);
        self.rpc_duration
            .get_or_create(&RpcLabels { rpc: rpc.clone() })
            .observe(latency.as_secs_f64());
        self.count(rpc, code);
    }

    fn count(&self, rpc: String, code: Option<i32>) {
        self.rpc_requests
            .get_or_create(&RpcCodeLabels {
                rpc,
                code: code_label(code),
            })
            .inc();
    }
}

/// One node's link as a scrape saw it: its stats, or why its link did not answer.
#[derive(Debug, Clone)]
pub struct NodeSample {
    pub node: String,
    pub stats: Result<LinkStats, String>,
}

/// The state of the cluster, read from the actors in one go (for `/metrics`, `/cluster`, `/readyz`).
#[derive(Debug, Clone)]
pub struct ClusterSample {
    /// Sorted by node address.
    pub read_nodes: Vec<NodeSample>,
    pub write_node: NodeSample,
    pub routing: RoutingStats,
    pub metadata: PollerStats,
    pub inspector: InspectorStats,
    pub discovery: DiscoveryStats,
}

impl ClusterSample {
    /// Read nodes whose link is healthy.
    pub fn healthy_read_nodes(&self) -> usize {
        self.read_nodes
            .iter()
            .filter(|n| matches!(&n.stats, Ok(s) if s.state == LinkState::Healthy))
            .count()
    }
}

/// Asks every actor for its stats; each ask waits at most `timeout`. A node link that does not answer
/// is reported as such; any other actor that does not answer fails the sample.
pub async fn sample(actors: &Actors, timeout: Duration) -> Result<ClusterSample, GatewayError> {
    let unavailable = |actor: &'static str| {
        move |e: MailboxError| GatewayError::Actor {
            actor,
            reason: e.to_string(),
        }
    };
    let links = actors
        .cluster
        .send(GetLinks)
        .timeout(timeout)
        .await
        .map_err(unavailable("cluster"))?;
    let link_sample = |node: String, link: Addr<NodeLink>| async move {
        let stats = link
            .send(GetLinkStats)
            .timeout(timeout)
            .await
            .map_err(|e| format!("node link unavailable: {e}"));
        NodeSample { node, stats }
    };
    let mut read_nodes = join_all(
        links
            .iter()
            .map(|(node, link)| link_sample(node.to_string(), link.clone())),
    )
    .await;
    read_nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let mut write_node = link_sample(String::new(), actors.write.clone()).await;
    write_node.node = match &write_node.stats {
        Ok(stats) => stats.node.clone(),
        Err(_) => "write node".to_string(),
    };
    let routing = actors
        .routing
        .send(GetRoutingStats)
        .timeout(timeout)
        .await
        .map_err(unavailable("routing"))?;
    let metadata = actors
        .poller
        .send(GetPollerStats)
        .timeout(timeout)
        .await
        .map_err(unavailable("metadata poller"))?;
    let inspector = actors
        .inspector
        .send(GetInspectorStats)
        .timeout(timeout)
        .await
        .map_err(unavailable("inspector"))?;
    let discovery = actors
        .discovery
        .send(GetDiscoveryStats)
        .timeout(timeout)
        .await
        .map_err(unavailable("discovery"))?;
    Ok(ClusterSample {
        read_nodes,
        write_node,
        routing,
        metadata,
        inspector,
        discovery,
    })
}

pub fn state_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Connecting => "connecting",
        LinkState::Healthy => "healthy",
        LinkState::Suspect => "suspect",
        LinkState::Down => "down",
    }
}

const STATES: [LinkState; 4] = [
    LinkState::Connecting,
    LinkState::Healthy,
    LinkState::Suspect,
    LinkState::Down,
];

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn f64_gauge(value: f64) -> F64Gauge {
    let g = F64Gauge::default();
    g.set(value);
    g
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn register_hedging(registry: &mut Registry, stats: &super::hedge::HedgeStats) {
    registry.register(
        "hedge_requests",
        "Hedge requests sent to read nodes",
        counter(stats.sent),
    );
    registry.register(
        "hedges_won",
        "Hedges that answered before the attempt they hedged",
        counter(stats.won),
    );
    registry.register(
        "hedges_denied",
        "Hedges not sent because the hedge budget was spent",
        counter(stats.denied),
    );
    registry.register(
        "hedge_budget_searches",
        "Searches that added their share to the hedge budget",
        counter(stats.searches),
    );
}

fn register_sample(registry: &mut Registry, sample: &ClusterSample) {
    let in_flight = Family::<NodeLabels, Gauge>::default();
    let latency = Family::<NodeLabels, F64Gauge>::default();
    let requests = Family::<NodeLabels, Counter>::default();
    let errors = Family::<NodeLabels, Counter>::default();
    let restarts = Family::<NodeLabels, Counter>::default();
    let cancelled = Family::<NodeLabels, Counter>::default();
    let search_calls = Family::<NodeLabels, Counter>::default();
    let batched = Family::<NodeLabels, Counter>::default();
    let refused_batches = Family::<NodeLabels, Counter>::default();
    let latency_p95 = Family::<NodeLabels, F64Gauge>::default();
    let state = Family::<NodeStateLabels, Gauge>::default();
    let nodes = sample
        .read_nodes
        .iter()
        .map(|n| (n, "read"))
        .chain(std::iter::once((&sample.write_node, "write")));
    for (n, role) in nodes {
        let labels = NodeLabels {
            node: n.node.clone(),
            role,
        };
        let Ok(stats) = &n.stats else {
            continue;
        };
        in_flight
            .get_or_create(&labels)
            .set(i64::try_from(stats.in_flight).unwrap_or(i64::MAX));
        latency
            .get_or_create(&labels)
            .set(stats.latency_ewma_ms / 1000.0);
        requests.get_or_create(&labels).inc_by(stats.requests);
        errors.get_or_create(&labels).inc_by(stats.errors);
        restarts.get_or_create(&labels).inc_by(stats.restarts);
        cancelled.get_or_create(&labels).inc_by(stats.cancelled);
        search_calls
            .get_or_create(&labels)
            .inc_by(stats.search_calls);
        batched
            .get_or_create(&labels)
            .inc_by(stats.batched_searches);
        refused_batches
            .get_or_create(&labels)
            .inc_by(stats.refused_batches);
        if let Some(p95) = stats.latency_p95_ms {
            latency_p95.get_or_create(&labels).set(p95 / 1000.0);
        }
        for s in STATES {
            state
                .get_or_create(&NodeStateLabels {
                    node: n.node.clone(),
                    role,
                    state: state_name(s),
                })
                .set(i64::from(stats.state == s));
        }
    }
    registry.register("node_in_flight", "Calls to the node in progress", in_flight);
    registry.register_with_unit(
        "node_latency_ewma",
        "Moving average of the node's call latency",
        Unit::Seconds,
        latency,
    );
    registry.register("node_requests", "Calls leased to the node", requests);
    registry.register(
        "node_errors",
        "Calls to the node that got no answer",
        errors,
    );
    registry.register(
        "node_restarts",
        "Restarts of the node's link actor",
        restarts,
    );
    registry.register(
        "node_cancelled",
        "Calls to the node dropped unanswered because another node's answer won",
        cancelled,
    );
    registry.register(
        "node_search_calls",
        "SearchInFiles calls the node link made for searches (batched or alone)",
        search_calls,
    );
    registry.register(
        "node_batched_searches",
        "Searches that shared a SearchInFiles call with other searches of the same shape",
        batched,
    );
    registry.register(
        "node_refused_batches",
        "Batched SearchInFiles calls the node refused, whose searches were then asked one by one",
        refused_batches,
    );
    registry.register_with_unit(
        "node_latency_p95",
        "p95 of the node's recent answered calls (absent until it has 20 within 30 s)",
        Unit::Seconds,
        latency_p95,
    );
    registry.register(
        "node_state",
        "The node link's state, one-hot: 1 for the current state",
        state,
    );

    let owned = Family::<ReadNodeLabels, Gauge>::default();
    for n in &sample.routing.nodes {
        owned
            .get_or_create(&ReadNodeLabels {
                node: n.node.clone(),
            })
            .set(i64::try_from(n.files_owned).unwrap_or(i64::MAX));
    }
    registry.register(
        "routing_files_owned",
        "Searchable files placed on the read node as their owner",
        owned,
    );
    registry.register(
        "router",
        "The placement strategy",
        Info::new(RouterLabels {
            router: sample.routing.router.to_string(),
        }),
    );
    registry.register(
        "routing_membership_epoch",
        "Epoch of the read-node membership routing uses",
        gauge(sample.routing.membership_epoch),
    );
    registry.register(
        "routing_snapshot_epoch",
        "Epoch of the metadata snapshot routing uses",
        gauge(sample.routing.snapshot_epoch),
    );
    registry.register(
        "routing_placement_builds",
        "Rebuilds of the file placement",
        counter(sample.routing.placement_builds),
    );
    let actor_restarts = Family::<ActorLabels, Counter>::default();
    for (actor, n) in [
        ("discovery", sample.discovery.restarts),
        ("poller", sample.metadata.restarts),
        ("routing", sample.routing.restarts),
    ] {
        actor_restarts
            .get_or_create(&ActorLabels { actor })
            .inc_by(n);
    }
    registry.register(
        "actor_restarts",
        "Restarts of a supervised gateway actor by its supervisor (node links: node_restarts)",
        actor_restarts,
    );

    let d = &sample.discovery;
    registry.register(
        "discovery_source_up",
        "1 while discovery reads its source (hosts, file, Kubernetes API); 0 while it serves the last member set",
        gauge(u64::from(d.source_up)),
    );
    registry.register(
        "discovery_errors",
        "Failed attempts to read the discovery source (API server unreachable or refusing, file unreadable)",
        counter(d.errors),
    );
    registry.register(
        "discovery_membership_epoch",
        "Epoch of discovery's member set (0: not known yet)",
        gauge(d.epoch),
    );

    let m = &sample.metadata;
    registry.register_with_unit(
        "metadata_poll_lag",
        "Time since the metadata database was last read successfully",
        Unit::Seconds,
        f64_gauge(m.lag_seconds),
    );
    registry.register(
        "metadata_snapshot_epoch",
        "Epoch of the current metadata snapshot (0: not loaded yet)",
        gauge(m.epoch),
    );
    registry.register(
        "metadata_snapshot_stale",
        "1 while the metadata database cannot be read and the last snapshot is served",
        gauge(u64::from(m.stale)),
    );
    registry.register("metadata_polls", "Metadata polls", counter(m.polls));
    registry.register(
        "metadata_poll_failures",
        "Metadata polls that failed",
        counter(m.failures),
    );
    registry.register(
        "metadata_outages",
        "Times the metadata database became unreachable",
        counter(m.outages),
    );
    registry.register(
        "metadata_collections",
        "Collections in the snapshot",
        gauge(m.collections as u64),
    );
    registry.register(
        "metadata_files",
        "Searchable files in the snapshot",
        gauge(m.files as u64),
    );

    registry.register(
        "searches_inspected",
        "Search manifests recorded for inspection",
        counter(sample.inspector.recorded),
    );
    registry.register(
        "slow_searches",
        "Searches at least slow_query_ms long",
        counter(sample.inspector.slow),
    );
}

#[cfg(test)]
mod tests;
