//! OTLP span export: the tracer provider per export, the Jaeger-style samplers, and an exporter wrapper
//! that reports an unreachable collector once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult,
    SdkTracerProvider, ShouldSample, SpanData, SpanExporter,
};

use mishards_config::TracingConfig;

use crate::TelemetryError;

/// How long one export (and the final flush) may take: a collector that is slower is dropped from.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often finished spans are sent: soon enough that a trace shows up while one looks for it.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Spans waiting for export; beyond this new spans are dropped rather than slowing requests.
const EXPORT_QUEUE: usize = 8192;

pub(crate) fn tracer_provider(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
