//! Trace context across gRPC: the request's trace id, W3C `traceparent` on outgoing requests, and the
//! Milvus code a reply carries for the RPC layer.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::logging::exporting;

/// The W3C trace id of a request (32 hex digits when shown): the exported trace's id when tracing is
/// on, else the caller's `traceparent` id, else a fresh random one; the request inspector files
/// manifests under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestTraceId(pub [u8; 16]);

impl std::fmt::Display for RequestTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", u128::from_be_bytes(self.0))
    }
}

impl RequestTraceId {
    /// The request's id, as [`RpcLayer`] put it into the request's extensions.
    pub fn of<T>(request: &tonic::Request<T>) -> RequestTraceId {
        request
            .extensions()
            .get::<RequestTraceId>()
            .copied()
            .unwrap_or_else(Self::random)
    }

    pub(crate) fn random() -> RequestTraceId {
        RequestTraceId(RandomIdGenerator::default().new_trace_id().to_bytes())
    }
}

/// The Milvus status code of a reply, put into the response's extensions by the service so that
/// [`RpcLayer`] can record it on the RPC span and report it, without decoding the body.
#[derive(Debug, Clone, Copy)]
pub struct MilvusCode(pub i32);

/// A tonic response carrying its Milvus status code for [`RpcLayer`].
pub fn response_with_code<T>(message: T, code: i32) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    response.extensions_mut().insert(MilvusCode(code));
    response
}

pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// An outgoing request carrying the current span as W3C `traceparent` (when tracing is on).
pub fn outgoing<T>(message: T) -> tonic::Request<T> {
    outgoing_traced(message).0
}

/// `outgoing`, and whether the request carries a sampled trace (one the receiver's spans join): such a
/// request is not batched with others, whose traces it would not carry.
pub fn outgoing_traced<T>(message: T) -> (tonic::Request<T>, bool) {
    if !exporting() {
        return (tonic::Request::new(message), false);
    }
    let cx = Span::current().context();
    let sampled = cx.span().span_context().is_sampled();
    (with_context(message, &cx), sampled)
}

/// An outgoing request that its receiver must not trace (health probes): a `traceparent` whose
/// sampled flag is off, which the receiver's parent-based sampler follows. Sent whether or not this
/// process exports: the receiver may.
pub fn unsampled<T>(message: T) -> tonic::Request<T> {
    let ids = RandomIdGenerator::default();
    let context = opentelemetry::trace::SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        opentelemetry::trace::TraceFlags::default(),
        true,
        Default::default(),
    );
    with_context(
        message,
        &opentelemetry::Context::new().with_remote_span_context(context),
    )
}

fn with_context<T>(message: T, cx: &opentelemetry::Context) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(request.metadata_mut()));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_print_as_32_hex_digits() {
        let id = RequestTraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128.to_be_bytes());
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(RequestTraceId::random().to_string().len(), 32);
    }
}
