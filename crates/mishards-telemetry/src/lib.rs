//! Logging and tracing through `tracing`. Logs: an env-filter (DEBUG raises the default level,
//! `--log-filter`/`RUST_LOG` overrides it), timestamps in the configured time zone, and with LOG_PATH also
//! daily log files. Traces: OpenTelemetry over OTLP/gRPC (Jaeger ingests it) with the Jaeger-style
//! samplers, W3C `traceparent` across gRPC, and one span per Milvus RPC ([`RpcLayer`]).

mod export;
mod log_time;
mod logging;
mod propagation;
mod rpc;

pub use export::RateLimitingSampler;
pub use logging::{Component, Export, TelemetryGuard, exporting, filter_directives, init};
pub use propagation::{
    MilvusCode, RequestTraceId, outgoing, outgoing_traced, response_with_code, unsampled,
};
pub use rpc::{
    RpcLayer, RpcObserver, RpcService, RpcSide, TracedRequest, record_request, set_log_payload,
};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{filter}`: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot write logs to {path}: {reason}")]
    LogPath { path: String, reason: String },
    #[error("cannot export traces to {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a global logger is already installed: {0}")]
    AlreadyInstalled(String),
}
