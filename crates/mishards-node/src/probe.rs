//! The node's admin HTTP listener (`admin_host`/`admin_port`, off unless set): `/healthz` (the process
//! answers), `/readyz` (200 once the metadata is open with Milvus's schema and gRPC serves; 503 with the
//! reason before that and while stopping) and Prometheus `/metrics`. It starts before the node waits for
//! its metadata, so an orchestrator sees a live, not-ready node rather than a crash loop.
//!
//! Once serving, a metadata outage does not make the node unready: it keeps answering from what it has
//! (the last metadata it read, its cached segments), and every read node of a cluster losing readiness at
//! once would empty the gateway's membership for nothing. `/readyz` and `/metrics` report it instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::NodeError;
use crate::health::NodeHealth;
use crate::metrics::{self, NodeRpcMetrics};

/// How long `/readyz` and `/metrics` wait for the metadata database's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long shutdown waits for open probe connections.
const DRAIN: Duration = Duration::from_secs(2);

struct ProbeState {
    health: Arc<NodeHealth>,
    rpcs: Arc<NodeRpcMetrics>,
}

type Shared = State<Arc<ProbeState>>;

/// A running probe listener; dropping it stops it.
pub struct Probe {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Probe {
    /// Binds `host:port` (0 picks a free port) and serves until stopped or dropped.
    pub async fn start(
        host: &str,
        port: u16,
        health: Arc<NodeHealth>,
        rpcs: Arc<NodeRpcMetrics>,
    ) -> Result<Probe, NodeError> {
        let cannot = |e: std::io::Error| {
            NodeError::Internal(format!("cannot listen on {host}:{port} (admin HTTP): {e}"))
        };
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(cannot)?;
        let addr = listener.local_addr().map_err(cannot)?;
        let router = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(prometheus))
            .fallback(not_found)
            .with_state(Arc::new(ProbeState { health, rpcs }));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "admin listener serving (/healthz, /readyz, /metrics)");
        Ok(Probe {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// Stops taking connections and waits (briefly) for open ones.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(DRAIN, &mut task).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin listener ended with an error"),
                Err(_) => task.abort(),
                _ => {}
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// The `/readyz` document and whether the node is ready.
pub async fn readiness(health: &NodeHealth) -> (bool, Value) {
    let phase = health.phase();
    let role = health.role().name();
    if let Some(reason) = phase.not_ready_reason() {
        return (
            false,
            json!({ "status": "not ready", "role": role, "phase": phase.name(), "reason": reason }),
        );
    }
    let Some(engine) = health.engine() else {
        return (
            false,
            json!({ "status": "not ready", "role": role, "phase": phase.name(), "reason": "no engine" }),
        );
    };
    let metadata = match tokio::time::timeout(PING_TIMEOUT, engine.metadata_reachable()).await {
        Ok(Ok(())) => "reachable".to_string(),
        Ok(Err(e)) => format!("unreachable (serving from what the node has): {e}"),
        Err(_) => format!("no answer within {PING_TIMEOUT:?} (serving from what the node has)"),
    };
    let failing: serde_json::Map<String, Value> = engine
        .counters()
        .flushes()
        .into_iter()
        .filter_map(|(table, s)| s.failing.map(|e| (table, json!(e))))
        .collect();
    (
        true,
        json!({
            "status": "ready",
            "role": role,
            "phase": phase.name(),
            "metadata": metadata,
            "flush_failing": failing,
        }),
    )
}

async fn readyz(State(s): Shared) -> Response {
    let (ready, body) = readiness(&s.health).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn prometheus(State(s): Shared) -> Response {
    let sample = metrics::sample(&s.health, PING_TIMEOUT).await;
    match metrics::encode(&s.health, &s.rpcs, &sample) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("cannot encode the metrics: {e}") })),
        )
            .into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!("no such endpoint: {}", uri.path()),
            "endpoints": ["/healthz", "/readyz", "/metrics"],
        })),
    )
        .into_response()
}
