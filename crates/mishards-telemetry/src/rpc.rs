//! One span per Milvus RPC: the tower layer around a tonic server, the caller's `grpc-timeout`, what a
//! span may say about a request, and the observer told of every finished RPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use mishards_proto as proto;

use crate::propagation::{HeaderExtractor, MilvusCode, RequestTraceId};

/// Told of every finished RPC by [`RpcLayer`]: the method name (`Search`, `Insert`…), the Milvus status
/// code of the reply (`None` when the call ended in a gRPC error instead), and how long it took.
pub trait RpcObserver: Send + Sync + 'static {
    fn observe(&self, rpc: &str, code: Option<i32>, latency: std::time::Duration);
}

/// Which side of the wire an [`RpcLayer`] serves: its spans' target (and so the demo's exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcSide {
    Gateway,
    Node,
}

/// Wraps a tonic server: one span per Milvus RPC (parent: the caller's `traceparent`), the request's
/// trace id in its extensions, and on completion the Milvus code on the span and to the observer.
#[derive(Clone)]
pub struct RpcLayer {
    side: RpcSide,
    observer: Option<Arc<dyn RpcObserver>>,
}

impl RpcLayer {
    pub fn new(side: RpcSide, observer: Option<Arc<dyn RpcObserver>>) -> Self {
        RpcLayer { side, observer }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

/// The fields every RPC span declares; handlers fill what they know with [`record_request`].
macro_rules! rpc_span {
    ($target:literal, $rpc:expr) => {
        tracing::info_span!(
            target: $target,
            "rpc",
            otel.name = $rpc,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc = $rpc,
            collection = tracing::field::Empty,
            nq = tracing::field::Empty,
            topk = tracing::field::Empty,
            metric = tracing::field::Empty,
            code = tracing::field::Empty,
            request_bytes = tracing::field::Empty,
            params = tracing::field::Empty,
        )
    };
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let name = path.rsplit('/').next().unwrap_or(path);
        let rpc: std::borrow::Cow<'static, str> = match mishards_proto::rpc_name(name) {
            Some(known) => known.into(),
            None => name.to_string().into(),
        };
        let span = match self.layer.side {
            RpcSide::Gateway => rpc_span!("mishards::gateway::rpc", rpc.as_ref()),
            RpcSide::Node => rpc_span!("mishards::node::rpc", rpc.as_ref()),
        };
        let incoming = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let incoming_id = incoming.span().span_context().trace_id();
        let mut trace_id = None;
        if !span.is_disabled() {
            let _ = span.set_parent(incoming);
            let id = span.context().span().span_context().trace_id();
            if id != opentelemetry::trace::TraceId::INVALID {
                trace_id = Some(id);
            }
        }
        let trace_id = match trace_id {
            Some(id) => RequestTraceId(id.to_bytes()),
            None if incoming_id != opentelemetry::trace::TraceId::INVALID => {
                RequestTraceId(incoming_id.to_bytes())
            }
            None => RequestTraceId::random(),
        };
        request.extensions_mut().insert(trace_id);
        // The node's tonic server applies `grpc-timeout` itself; the gateway's hyper server does not.
        let deadline = match self.layer.side {
            RpcSide::Gateway => grpc_timeout(request.headers()),
            RpcSide::Node => None,
        };
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let observer = self.layer.observer.clone();
        Box::pin(
            async move {
                let result = match deadline {
                    None => future.await,
                    // The caller's deadline: past it, nobody waits for the answer.
                    Some(deadline) => match tokio::time::timeout(deadline, future).await {
                        Ok(result) => result,
                        Err(_) => Ok(tonic::Status::cancelled("Timeout expired").into_http()),
                    },
                };
                let code = match &result {
                    Ok(response) => response.extensions().get::<MilvusCode>().map(|c| c.0),
                    Err(_) => None,
                };
                let span = Span::current();
                match code {
                    Some(code) => {
                        span.record("code", code);
                        if code != 0 {
                            span.record("otel.status_code", "ERROR");
                        }
                    }
                    None => {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                if let Some(observer) = observer {
                    observer.observe(&rpc, code, started.elapsed());
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The caller's deadline from its `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a unit,
/// H M S m u n); `None` when absent or malformed, as gRPC servers treat it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What an RPC span can say about a request (never vector data).
pub trait TracedRequest {
    fn collection(&self) -> &str;
    /// Number of query or inserted vectors.
    fn vectors(&self) -> Option<usize> {
        None
    }
    fn topk(&self) -> Option<i64> {
        None
    }
    /// Request parameters (extra params, tags, ids count…), recorded with TRACING_LOG_PAYLOAD only.
    fn params(&self) -> String {
        String::new()
    }
}

fn key_values(params: &[proto::KeyValuePair]) -> String {
    params
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tags_and_params(tags: &[String], params: &[proto::KeyValuePair]) -> String {
    format!("tags={tags:?} {}", key_values(params))
}

impl TracedRequest for proto::SearchParam {
    fn collection(&self) -> &str {
        &self.collection_name
    }
    fn vectors(&self) -> Option<usize> {
        Some(self.query_record_array.len())
    }
    fn topk(&self) -> Option<i64> {
        Some(self.topk)
    }
    fn params(&self) -> String {
        tags_and_params(&self.partition_tag_array, &self.extra_params)
    }
}

impl TracedRequest for proto::SearchInFilesParam {
    fn collection(&self) -> &str {
        self.search_param
            .as_ref()
            .map_or("", |p| p.collection_name.as_str())
    }
    fn vectors(&self) -> Option<usize> {
        self.search_param.as_ref().and_then(|p| p.vectors())
    }
    fn topk(&self) -> Option<i64> {
        self.search_param.as_ref().map(|p| p.topk)
    }
    fn params(&self) -> String {
        format!(
            "files={:?} {}",
            self.file_id_array,
            self.search_param
                .as_ref()
                .map(|p| p.params())
                .unwrap_or_default()
        )
    }
}

impl TracedRequest for proto::SearchByIdParam {
    fn collection(&self) -> &str {
        &self.collection_name
    }
    fn vectors(&self) -> Option<usize> {
        Some(self.id_array.len())
    }
    fn topk(&self) -> Option<i64> {
        Some(self.topk)
    }
    fn params(&self) -> String {
        tags_and_params(&self.partition_tag_array, &self.extra_params)
    }
}

impl TracedRequest for proto::InsertParam {
    fn collection(&self) -> &str {
        &self.collection_name
    }
    fn vectors(&self) -> Option<usize> {
        Some(self.row_record_array.len())
    }
    fn params(&self) -> String {
        format!(
            "partition={:?} with_ids={} {}",
            self.partition_tag,
            !self.row_id_array.is_empty(),
            key_values(&self.extra_params)
        )
    }
}

static LOG_PAYLOAD: AtomicBool = AtomicBool::new(false);

/// TRACING_LOG_PAYLOAD: request parameters go onto RPC spans.
pub fn set_log_payload(on: bool) {
    LOG_PAYLOAD.store(on, Ordering::Relaxed);
}

/// Fills the current RPC span's request fields.
pub fn record_request<R: TracedRequest + prost::Message>(request: &R) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("collection", request.collection());
    if let Some(n) = request.vectors() {
        span.record("nq", n);
    }
    if let Some(k) = request.topk() {
        span.record("topk", k);
    }
    if LOG_PAYLOAD.load(Ordering::Relaxed) {
        span.record("request_bytes", request.encoded_len());
        span.record("params", request.params());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers_parse_as_grpc_defines_them() {
        let parse = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "12"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
