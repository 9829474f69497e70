//! Logs and the global subscriber: the env-filter, stderr and daily files, timestamps in the configured
//! zone, and the OTLP exports installed beside them.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use mishards_config::{LogConfig, TracingConfig};

use crate::TelemetryError;
use crate::export::{EXPORT_TIMEOUT, tracer_provider};
use crate::log_time::ZonedTime;

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
    fn debug_raises_the_level_and_an_explicit_filter_wins() {
        assert!(filter_directives(&config(false, None)).starts_with("info"));
        assert!(filter_directives(&config(true, None)).starts_with("debug"));
        assert_eq!(filter_directives(&config(true, Some("warn"))), "warn");
    }
}
