//! Logging through `tracing`: an env-filter (DEBUG raises the default level, `--log-filter`/`RUST_LOG`
//! overrides it), timestamps in the configured time zone, and with LOG_PATH also daily log files.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::time::OffsetTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{filter}`: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot write logs to {path}: {reason}")]
    LogPath { path: String, reason: String },
    #[error("a global logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the background log-file writer alive; drop it last so buffered lines reach the file.
#[must_use]
pub struct LogGuard {
    _file_writer: Option<WorkerGuard>,
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

/// Installs the global subscriber: stderr always, plus `LOG_PATH/LOG_NAME.YYYY-MM-DD` when LOG_PATH is set.
pub fn init_logging(config: &LogConfig) -> Result<LogGuard, TelemetryError> {
    let directives = filter_directives(config);
    let filter = |d: &str| {
        EnvFilter::try_new(d).map_err(|e| TelemetryError::Filter {
            filter: d.to_string(),
            reason: e.to_string(),
        })
    };
    let offset = match config.utc_offset_seconds {
        Some(seconds) => {
            time::UtcOffset::from_whole_seconds(seconds).unwrap_or(time::UtcOffset::UTC)
        }
        None => time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC),
    };
    let timer = OffsetTime::new(offset, time::format_description::well_known::Rfc3339);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(timer.clone())
        .with_filter(filter(&directives)?);

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
                .with_filter(filter(&directives)?);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(LogGuard {
        _file_writer: guard,
    })
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
            utc_offset_seconds: Some(0),
        }
    }

    #[test]
    fn debug_raises_the_level_and_an_explicit_filter_wins() {
        assert!(filter_directives(&config(false, None)).starts_with("info"));
        assert!(filter_directives(&config(true, None)).starts_with("debug"));
        assert_eq!(filter_directives(&config(true, Some("warn"))), "warn");
    }
}
