//! The admin HTTP listener (`--admin-port`, loopback by default): recent and slow search manifests, the
//! cluster's state, liveness and readiness, Prometheus metrics, and — with `--enable-fault-injection`,
//! behind a bearer token — the fault rules (`/faults`). Every answer is JSON except `/metrics`. Handlers
//! run on the gateway's tokio runtime and ask the actors with `Addr::send`, bounded in time: an actor
//! that does not answer makes a 503, never a hung request or a panic.
//!
//! The operator's console — the page at `/` and the JSON only it needs — is console/.
//! The small HTTP client `mishards inspect` uses to read it is admin_client.rs.

use std::sync::Arc;
use std::time::Duration;

use actix::MailboxError;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

use super::inspect::{Find, Inspector, Recent, SearchManifest, Slow, is_trace_id};
use super::metrics::{self, ClusterSample, GatewayMetrics, NodeSample};
use super::service::Actors;
use crate::console::{self, ConsoleInfo, live::LiveSeries};
use crate::injection::FaultHandle;
use mishards_fault::{FaultError, rules_from_json};

/// How long a handler waits for an actor.
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoints, for the 404 answer.
const ENDPOINTS: [&str; 14] = [
    "/ (the operator's console, a web page)",
    "/collections",
    "/live?seconds=N",
    "/console/info",
    "/console/faults (read-only, with --enable-fault-injection)",
    "/requests?limit=N",
    "/requests/{trace_id}",
    "/slow?limit=N",
    "/cluster",
    "/metrics",
    "/healthz",
    "/readyz",
    "GET|POST|DELETE /faults (with --enable-fault-injection and a bearer token)",
    "DELETE /faults/{id}",
];

/// What the handlers share.
pub struct AdminState {
    pub actors: Actors,
    pub metrics: Arc<GatewayMetrics>,
    /// The inspector's ring size: the most `limit` can ask for.
    pub inspect_keep: usize,
    pub slow_query_ms: u64,
    /// The bearer token `/faults` requires (fault injection on).
    pub fault_token: Option<String>,
    /// The console's view of the settings (`/console/info`).
    pub console: ConsoleInfo,
    /// The per-second samples of the live charts (`/live`).
    pub live: Arc<LiveSeries>,
}

/// The admin listener's routes.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/", get(console::index))
        .route("/console/app.js", get(console::app_js))
        .route("/console/style.css", get(console::style_css))
        .route("/console/info", get(console::info))
        .route("/console/faults", get(console::faults))
        .route("/collections", get(console::collections))
        .route("/live", get(console::live))
        .route("/requests", get(recent_requests))
        .route("/requests/{trace_id}", get(one_request))
        .route("/slow", get(slow_requests))
        .route("/cluster", get(cluster))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/faults",
            get(faults_report).post(faults_add).delete(faults_clear),
        )
        .route("/faults/{id}", delete(fault_remove))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(state))
}

type Shared = State<Arc<AdminState>>;

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) fn unavailable(actor: &str, e: MailboxError) -> Response {
    tracing::warn!(actor, error = %e, "admin request: actor did not answer");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the gateway's {actor} did not answer: {e}"),
    )
}

/// `limit=N` from the query string: at most the ring size, all of it when absent. The error is the
/// 400 answer's message.
fn limit(query: Option<&str>, keep: usize) -> Result<usize, String> {
    query_number(query, "limit", keep)
}

/// `name=N` from the query string: at most `most`, `most` when absent.
pub(crate) fn query_number(query: Option<&str>, name: &str, most: usize) -> Result<usize, String> {
    let given = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value);
    match given {
        None => Ok(most),
        Some(value) => value
            .parse::<usize>()
            .map(|n| n.min(most))
            .map_err(|_| format!("{name} `{value}` is not a whole number ≥ 0")),
    }
}

/// Asks the inspector for manifests with the `limit` of the query string; the error answer when the
/// limit is malformed or the inspector does not answer.
async fn inspected<M>(
    s: &AdminState,
    query: Option<&str>,
    ask: impl FnOnce(usize) -> M,
) -> Result<Vec<SearchManifest>, Response>
where
    M: actix::Message<Result = Vec<SearchManifest>> + Send + 'static,
    Inspector: actix::Handler<M>,
{
    let limit = limit(query, s.inspect_keep).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    s.actors
        .inspector
        .send(ask(limit))
        .timeout(ASK_TIMEOUT)
        .await
        .map_err(|e| unavailable("inspector", e))
}

async fn recent_requests(State(s): Shared, RawQuery(query): RawQuery) -> Response {
    match inspected(&s, query.as_deref(), |limit| Recent { limit }).await {
        Ok(requests) => Json(json!({
            "count": requests.len(),
            "keep": s.inspect_keep,
            "requests": requests,
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

async fn slow_requests(State(s): Shared, RawQuery(query): RawQuery) -> Response {
    match inspected(&s, query.as_deref(), |limit| Slow { limit }).await {
        Ok(requests) => Json(json!({
            "count": requests.len(),
            "keep": s.inspect_keep,
            "slow_query_ms": s.slow_query_ms,
            "requests": requests,
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

async fn one_request(State(s): Shared, Path(trace_id): Path<String>) -> Response {
    if !is_trace_id(&trace_id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{trace_id}` is not a trace id (32 hex digits)"),
        );
    }
    match s
        .actors
        .inspector
        .send(Find(trace_id.to_ascii_lowercase()))
        .timeout(ASK_TIMEOUT)
        .await
    {
        Ok(Some(manifest)) => Json(manifest).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no search with trace id {trace_id} is kept (the gateway keeps the last {} searches and the last {} slow ones)",
                s.inspect_keep, s.inspect_keep
            ),
        ),
        Err(e) => unavailable("inspector", e),
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Why the gateway cannot serve searches yet; empty when it can.
pub fn not_ready_reasons(sample: &ClusterSample) -> Vec<String> {
    let mut reasons = Vec::new();
    if sample.metadata.epoch == 0 {
        reasons.push(match &sample.metadata.last_error {
            Some(e) => format!("the metadata snapshot has not been loaded yet: {e}"),
            None => "the metadata snapshot has not been loaded yet".to_string(),
        });
    }
    if sample.read_nodes.is_empty() {
        reasons.push(match &sample.discovery.last_error {
            Some(e) => format!("no read nodes in the membership (discovery: {e})"),
            None => "no read nodes in the membership".to_string(),
        });
    } else if sample.healthy_read_nodes() == 0 {
        let states: Vec<String> = sample
            .read_nodes
            .iter()
            .map(|n| match &n.stats {
                Ok(s) => match &s.reason {
                    Some(reason) => {
                        format!("{} {} ({reason})", n.node, metrics::state_name(s.state))
                    }
                    None => format!("{} {}", n.node, metrics::state_name(s.state)),
                },
                Err(e) => format!("{} {e}", n.node),
            })
            .collect();
        reasons.push(format!("no read node is healthy: {}", states.join(", ")));
    }
    reasons
}

/// What is wrong without stopping searches: discovery cannot read its source (the Kubernetes API server
/// is away, say) and serves its last member set. Not a reason to be unready: an API-server outage would
/// otherwise take every gateway out of its Service at once.
pub fn degraded_reasons(sample: &ClusterSample) -> Vec<String> {
    let d = &sample.discovery;
    let mut degraded = Vec::new();
    if let Some(e) = &d.last_error
        && d.epoch > 0
    {
        degraded.push(format!(
            "discovery ({}) cannot read its source, serving its last member set (epoch {}, {} read nodes): {e}",
            d.source, d.epoch, d.nodes
        ));
    }
    if sample.write_node.node == crate::node_link::UNASSIGNED {
        degraded.push(
            "the write node has not been discovered yet (no ready pod matches the write-node selector): writes fail".to_string(),
        );
    }
    degraded
}

async fn readyz(State(s): Shared) -> Response {
    let sample = match metrics::sample(&s.actors, ASK_TIMEOUT).await {
        Ok(sample) => sample,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready", "reasons": [e.to_string()] })),
            )
                .into_response();
        }
    };
    let reasons = not_ready_reasons(&sample);
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "not ready" },
        "reasons": reasons,
        "degraded": degraded_reasons(&sample),
        "snapshot_epoch": sample.metadata.epoch,
        "read_nodes": sample.read_nodes.len(),
        "healthy_read_nodes": sample.healthy_read_nodes(),
    });
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

fn node_json(n: &NodeSample, files_owned: Option<usize>) -> Value {
    let mut v = match &n.stats {
        Ok(s) => json!({
            "node": n.node,
            "state": metrics::state_name(s.state),
            "reason": s.reason,
            "version": s.version,
            "in_flight": s.in_flight,
            "latency_ewma_ms": s.latency_ewma_ms,
            "latency_p95_ms": s.latency_p95_ms,
            "requests": s.requests,
            "errors": s.errors,
            "cancelled": s.cancelled,
            "restarts": s.restarts,
            "search_calls": s.search_calls,
            "batched_searches": s.batched_searches,
            "refused_batches": s.refused_batches,
        }),
        Err(e) => json!({ "node": n.node, "state": "unavailable", "reason": e }),
    };
    if let (Some(files), Some(map)) = (files_owned, v.as_object_mut()) {
        map.insert("files_owned".into(), json!(files));
    }
    v
}

/// The `/cluster` document.
pub fn cluster_json(sample: &ClusterSample) -> Value {
    let owned = |node: &str| {
        sample
            .routing
            .nodes
            .iter()
            .find(|r| r.node == node)
            .map_or(0, |r| r.files_owned)
    };
    let placement: serde_json::Map<String, Value> = sample
        .routing
        .nodes
        .iter()
        .map(|r| (r.node.clone(), json!(r.files_owned)))
        .collect();
    let m = &sample.metadata;
    let r = &sample.routing;
    json!({
        "read_nodes": sample
            .read_nodes
            .iter()
            .map(|n| node_json(n, Some(owned(&n.node))))
            .collect::<Vec<_>>(),
        "write_node": node_json(&sample.write_node, None),
        "router": {
            "kind": r.router,
            "membership_epoch": r.membership_epoch,
            "snapshot_epoch": r.snapshot_epoch,
            "snapshot_stale": r.snapshot_stale,
            "placement_builds": r.placement_builds,
            "restarts": r.restarts,
        },
        "placement": placement,
        "metadata": {
            "epoch": m.epoch,
            "stale": m.stale,
            "lag_seconds": m.lag_seconds,
            "polls": m.polls,
            "failures": m.failures,
            "outages": m.outages,
            "collections": m.collections,
            "files": m.files,
            "frozen": m.frozen,
            "restarts": m.restarts,
        },
        "discovery": sample.discovery,
        "inspector": sample.inspector,
    })
}

async fn cluster(State(s): Shared) -> Response {
    match metrics::sample(&s.actors, ASK_TIMEOUT).await {
        Ok(sample) => Json(cluster_json(&sample)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn prometheus(State(s): Shared) -> Response {
    // The RPC metrics are worth a scrape even when an actor does not answer.
    let sample = match metrics::sample(&s.actors, ASK_TIMEOUT).await {
        Ok(sample) => Some(sample),
        Err(e) => {
            tracing::warn!(error = %e, "metrics scrape without the cluster's state");
            None
        }
    };
    match s.metrics.encode(sample.as_ref()) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        ),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!("no such endpoint: {method} {}", uri.path()),
            "endpoints": ENDPOINTS,
        })),
    )
        .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} {} is not served: /faults takes GET, POST and DELETE, /faults/{{id}} DELETE, every other endpoint GET",
            uri.path()
        ),
    )
}

/// Equal contents, in time that depends on the length only (the token is a secret).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Why a `/faults` request is refused.
enum FaultGate {
    /// Fault injection is off: 404, saying how to turn it on.
    Off,
    /// No `Authorization: Bearer …`: 401.
    NoToken,
    /// Another token: 403.
    WrongToken,
}

impl IntoResponse for FaultGate {
    fn into_response(self) -> Response {
        match self {
            FaultGate::Off => (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": "fault injection is off",
                    "enable": "start the gateway with --enable-fault-injection and --fault-token TOKEN (or MISHARDS_ENABLE_FAULT_INJECTION=true and MISHARDS_FAULT_TOKEN); for chaos testing only",
                })),
            )
                .into_response(),
            FaultGate::NoToken => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"mishards-faults\"")],
                Json(json!({ "error": "/faults needs `Authorization: Bearer TOKEN` (the gateway's --fault-token)" })),
            )
                .into_response(),
            FaultGate::WrongToken => error(StatusCode::FORBIDDEN, "wrong fault token"),
        }
    }
}

/// The fault handle when fault injection is on and the request carries its token.
fn fault_gate<'s>(s: &'s AdminState, headers: &HeaderMap) -> Result<&'s FaultHandle, FaultGate> {
    let (Some(handle), Some(token)) = (&s.actors.faults, &s.fault_token) else {
        return Err(FaultGate::Off);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(FaultGate::NoToken),
        Some(t) if same_secret(t.as_bytes(), token.as_bytes()) => Ok(handle),
        Some(_) => Err(FaultGate::WrongToken),
    }
}

fn fault_error(e: FaultError) -> Response {
    let status = match &e {
        FaultError::Invalid { .. } | FaultError::Parse(_) => StatusCode::BAD_REQUEST,
        FaultError::NotFound(_) => StatusCode::NOT_FOUND,
        FaultError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// `GET /faults`: the seed, the rules and the applied-fault log.
async fn faults_report(State(s): Shared, headers: HeaderMap) -> Response {
    let handle = match fault_gate(&s, &headers) {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    match handle.report().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => fault_error(e),
    }
}

/// `POST /faults` with one rule or a list of rules (JSON): 201 with their ids, or 400 naming the
/// mistake (then no rule is added).
async fn faults_add(State(s): Shared, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let handle = match fault_gate(&s, &headers) {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON");
    };
    let added = match rules_from_json(text) {
        Ok(rules) => handle.add_all(rules).await,
        Err(e) => Err(e),
    };
    match added {
        Ok(ids) => (StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response(),
        Err(e) => fault_error(e),
    }
}

/// `DELETE /faults`: removes every rule (the log stays).
async fn faults_clear(State(s): Shared, headers: HeaderMap) -> Response {
    let handle = match fault_gate(&s, &headers) {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    match handle.clear().await {
        Ok(()) => Json(json!({ "cleared": true })).into_response(),
        Err(e) => fault_error(e),
    }
}

/// `DELETE /faults/{id}`.
async fn fault_remove(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let handle = match fault_gate(&s, &headers) {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a fault rule id (a whole number)"),
        );
    };
    match handle.remove(id).await {
        Ok(()) => Json(json!({ "removed": id })).into_response(),
        Err(e) => fault_error(e),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_the_ring_and_are_capped() {
        assert_eq!(limit(None, 256).ok(), Some(256));
        assert_eq!(limit(Some("limit=5"), 256).ok(), Some(5));
        assert_eq!(limit(Some("x=1&limit=999"), 256).ok(), Some(256));
        let bad = limit(Some("limit=-1"), 256).unwrap_err();
        assert!(bad.contains("`-1`"), "{bad}");
    }
}
