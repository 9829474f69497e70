//! The one error type of the crate: every message names the setting and where its value came from.

use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("unknown setting `{key}` in {path}")]
    UnknownKey { key: String, path: PathBuf },
    #[error("`{key}` in {path} is a setting of `mishards {owners}`, not of `mishards {scope}`")]
    WrongScope {
        key: String,
        path: PathBuf,
        owners: String,
        scope: &'static str,
    },
    #[error("invalid value for `{key}` (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        origin: String,
        reason: String,
    },
    #[error("`{key}` is required: set --{flag}, {env}, or `{key}` in the config file")]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
}
