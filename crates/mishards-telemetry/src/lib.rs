//! Logging and tracing through `tracing`. Logs: an env-filter (DEBUG raises the default level,
//! `--log-filter`/`RUST_LOG` overrides it), timestamps in the configured time zone, and with LOG_PATH also
//! daily log files. Traces: OpenTelemetry over OTLP/gRPC (Jaeger ingests it) with the Jaeger-style
//! samplers, W3C `traceparent` across gRPC, and one span per Milvus RPC ([`RpcLayer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler,
    SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SpanData, SpanExporter,
};
use tracing::subscriber::Interest;
use tracing::{Instrument, Metadata, Span};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use mishards_config::{LogConfig, TracingConfig};
use mishards_proto as proto;

mod log_time;

use log_time::ZonedTime;

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

/// Told of every finished RPC by [`RpcLayer`]: the method name (`Search`, `Insert`…), the Milvus status
/// code of the reply (`None` when the call ended in a gRPC error instead), and how long it took.
pub trait RpcObserver: Send + Sync + 'static {
    fn observe(&self, rpc: &str, code: Option<i32>, latency: std::time::Duration);
}

/// The filter directives `config` asks for: the explicit filter, or info/debug for our crate and warn
/// for chatty dependencies.
pub fn filter_directives(config: &LogConfig) -> String {
    match &config.filter {
        Some(filter) => filter.clone(),
        None if config.debug => "debug,h2=info,hyper=info,tower=info,sqlx=info".to_string(),
        None => "info,sqlx=warn".to_string(),
    }
}

/// Which spans one OTLP export carries: a gateway or node process exports all of ours; the demo runs
/// both in one process and exports each side under its own service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Process,
    Gateway,
    Node,
}

impl Component {
    fn target_prefix(self) -> &'static str {
        match self {
            Component::Process => "mishards",
            Component::Gateway => "mishards::gateway",
            Component::Node => "mishards::node",
        }
    }
}

/// One OTLP export: the settings (endpoint `None` = this export is off) and the spans it carries.
pub struct Export<'a> {
    pub config: &'a TracingConfig,
    pub component: Component,
}

/// Keeps the log-file writer and the span exporters alive; dropping it flushes both.
#[must_use]
pub struct TelemetryGuard {
    _file_writer: Option<WorkerGuard>,
    providers: Vec<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if self.providers.is_empty() {
            return;
        }
        let providers = std::mem::take(&mut self.providers);
        // The exporter's gRPC connection lives on the tokio runtime, which must keep running while the
        // last batch goes out: block this worker only (never the whole runtime).
        let flush = move || {
            for provider in providers {
                if let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                    tracing::debug!(error = %e, "span exporter did not shut down cleanly");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush)
            }
            _ => flush(),
        }
    }
}

/// How long one export (and the final flush) may take: a collector that is slower is dropped from.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often finished spans are sent: soon enough that a trace shows up while one looks for it.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Spans waiting for export; beyond this new spans are dropped rather than slowing requests.
const EXPORT_QUEUE: usize = 8192;

/// Set once tracing is exported, so the request path skips propagation work otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (some export in [`init`] had an endpoint).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber: logs to stderr (and `LOG_PATH/LOG_NAME.YYYY-MM-DD` when LOG_PATH is
/// set), plus one OTLP exporter per export whose endpoint is set.
///
/// With no export, the log layers see events only: span callsites are then disabled outright, so the
/// request path's spans cost a cached callsite check and nothing else.
pub fn init(config: &LogConfig, exports: &[Export<'_>]) -> Result<TelemetryGuard, TelemetryError> {
    let directives = filter_directives(config);
    let tracing_on = exports.iter().any(|e| e.config.otlp_endpoint.is_some());
    let filter = |d: &str| {
        EnvFilter::try_new(d).map_err(|e| TelemetryError::Filter {
            filter: d.to_string(),
            reason: e.to_string(),
        })
    };
    let timer = ZonedTime::new(config.timezone.clone());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(timer.clone())
        .with_filter(filter(&directives)?.and(SpansWhen(tracing_on)));

    let (file_layer, guard) = match &config.path {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| TelemetryError::LogPath {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            let appender = tracing_appender::rolling::daily(dir, &config.name);
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_timer(timer)
                .with_filter(filter(&directives)?.and(SpansWhen(tracing_on)));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };

    let mut providers = Vec::new();
    let mut otel_layers = Vec::new();
    for export in exports {
        let Some(endpoint) = &export.config.otlp_endpoint else {
            continue;
        };
        let provider = tracer_provider(endpoint, export.config)?;
        let prefix = export.component.target_prefix();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mishards"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(move |m| {
                m.target().starts_with(prefix) && *m.level() <= tracing::Level::INFO
            }));
        otel_layers.push(layer);
        providers.push(provider);
    }
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        // An empty Vec of layers would claim no interest in anything and silence the logs too.
        .with((!otel_layers.is_empty()).then_some(otel_layers))
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if tracing_on {
        EXPORTING.store(true, Ordering::Relaxed);
        for export in exports {
            if let Some(endpoint) = &export.config.otlp_endpoint {
                tracing::info!(
                    %endpoint,
                    service = %export.config.service_name,
                    sampler = %export.config.sampler_type,
                    param = export.config.sampler_param,
                    "exporting traces over OTLP"
                );
            }
        }
    }
    Ok(TelemetryGuard {
        _file_writer: guard,
        providers,
    })
}

/// Lets events through, and spans only when traces are exported (see [`init`]).
struct SpansWhen(bool);

impl<S> Filter<S> for SpansWhen {
    fn enabled(&self, meta: &Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        self.0 || meta.is_event()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.0 || meta.is_event() {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    // No opinion on levels: without this the combined filter would have no level hint at all, and every
    // trace/debug call site of every dependency (h2, hyper, tonic) would be checked one by one instead
    // of being cut off by the global maximum level.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
}

fn tracer_provider(
    endpoint: &str,
    config: &TracingConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        // A lost batch is better than retries piling up behind an absent collector.
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let processor = BatchSpanProcessor::builder(ReportOnce::new(exporter, endpoint))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_INTERVAL)
                .with_max_queue_size(EXPORT_QUEUE)
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(root_sampler(config)))
        .with_resource(resource)
        .build())
}

/// The sampler for traces this process starts; a sampled or unsampled parent (an incoming
/// `traceparent`) decides for its children.
fn root_sampler(config: &TracingConfig) -> Box<dyn ShouldSample> {
    match config.sampler_type.as_str() {
        "probabilistic" => Box::new(Sampler::TraceIdRatioBased(config.sampler_param)),
        "ratelimiting" => Box::new(RateLimitingSampler::new(config.sampler_param)),
        _ if config.sampler_param == 0.0 => Box::new(Sampler::AlwaysOff),
        _ => Box::new(Sampler::AlwaysOn),
    }
}

/// Jaeger's `ratelimiting` sampler: at most `per_second` new traces a second, as a token bucket
/// holding up to one second's worth (at least one token).
#[derive(Debug, Clone)]
pub struct RateLimitingSampler {
    per_second: f64,
    bucket: Arc<std::sync::Mutex<TokenBucket>>,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl RateLimitingSampler {
    pub fn new(per_second: f64) -> Self {
        RateLimitingSampler {
            per_second,
            bucket: Arc::new(std::sync::Mutex::new(TokenBucket {
                tokens: per_second.max(1.0),
                last: Instant::now(),
            })),
        }
    }

    /// Takes a token if one is there at `now`.
    fn admit(&self, now: Instant) -> bool {
        // A poisoned lock only means another sampling call panicked; the bucket is still usable.
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl ShouldSample for RateLimitingSampler {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        _trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        _span_kind: &opentelemetry::trace::SpanKind,
        _attributes: &[KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let decision = if self.admit(Instant::now()) {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// Wraps the OTLP exporter so an unreachable collector is logged once (and its return once), not
/// once per batch.
#[derive(Debug)]
struct ReportOnce<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> ReportOnce<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        ReportOnce {
            inner,
            endpoint: endpoint.to_string(),
            failing: AtomicBool::new(false),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, error = %e, "cannot export traces; spans are dropped until the collector answers (logged once)");
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "trace collector reachable again");
            }
            _ => {}
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

// ---- Trace context across gRPC ---------------------------------------------------------------------------

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

    fn random() -> RequestTraceId {
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

struct HeaderExtractor<'a>(&'a http::HeaderMap);

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

    fn config(debug: bool, filter: Option<&str>) -> LogConfig {
        LogConfig {
            debug,
            filter: filter.map(str::to_string),
            path: None,
            name: "logfile".into(),
            timezone: mishards_config::TimeZone::UTC,
        }
    }

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

    #[test]
    fn the_rate_limiting_sampler_admits_its_rate() {
        let sampler = RateLimitingSampler::new(2.0);
        let start = Instant::now();
        // A full bucket: two at once, then none until time refills it.
        assert!(sampler.admit(start));
        assert!(sampler.admit(start));
        assert!(!sampler.admit(start));
        assert!(!sampler.admit(start + Duration::from_millis(100)));
        assert!(sampler.admit(start + Duration::from_millis(600)));
        // Over ten seconds of constant asking, about twenty traces.
        let admitted = (0..1000)
            .filter(|i| sampler.admit(start + Duration::from_millis(1000 + 10 * i)))
            .count();
        assert!((19..=22).contains(&admitted), "{admitted}");
        // Below one per second the bucket still holds one token.
        let slow = RateLimitingSampler::new(0.5);
        assert!(slow.admit(start));
        assert!(!slow.admit(start + Duration::from_secs(1)));
        assert!(slow.admit(start + Duration::from_secs(3)));
    }

    #[test]
    fn samplers_follow_the_mishards_settings() {
        let config = |kind: &str, param: f64| TracingConfig {
            otlp_endpoint: None,
            service_name: "t".into(),
            sampler_type: kind.into(),
            sampler_param: param,
            log_payload: false,
        };
        let decide = |kind: &str, param: f64, id: u128| {
            root_sampler(&config(kind, param))
                .should_sample(
                    None,
                    opentelemetry::trace::TraceId::from(id),
                    "Search",
                    &opentelemetry::trace::SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
        };
        assert_eq!(decide("const", 1.0, 7), SamplingDecision::RecordAndSample);
        assert_eq!(decide("const", 0.0, 7), SamplingDecision::Drop);
        // A ratio keeps the trace ids below it: about half of a spread of ids.
        let kept = (0..1000u128)
            .filter(|i| {
                decide(
                    "probabilistic",
                    0.5,
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ) == SamplingDecision::RecordAndSample
            })
            .count();
        assert!((400..=600).contains(&kept), "{kept}");
    }

    #[test]
    fn trace_ids_print_as_32_hex_digits() {
        let id = RequestTraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128.to_be_bytes());
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(RequestTraceId::random().to_string().len(), 32);
    }

    #[test]
    fn debug_raises_the_level_and_an_explicit_filter_wins() {
        assert!(filter_directives(&config(false, None)).starts_with("info"));
        assert!(filter_directives(&config(true, None)).starts_with("debug"));
        assert_eq!(filter_directives(&config(true, Some("warn"))), "warn");
    }
}
