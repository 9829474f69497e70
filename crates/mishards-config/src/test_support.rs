//! Helpers the unit tests of several modules share.

use std::collections::HashMap;

use crate::{ConfigError, GatewayConfig, Scope, Settings};

/// An environment for [`Settings::resolve`], from name/value pairs.
pub(crate) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Command-line flags for [`Settings::resolve`], from flag/value pairs.
pub(crate) fn flags(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// A TOML config file holding `text`, removed when dropped.
pub(crate) fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

/// The gateway's config from flags `f` (with a write node and metadata URI) and environment `e`.
pub(crate) fn gateway_config(
    f: &[(&'static str, &str)],
    e: &[(&str, &str)],
) -> Result<GatewayConfig, ConfigError> {
    let mut all = vec![("woserver", "w"), ("meta-uri", "sqlite::memory:")];
    all.extend_from_slice(f);
    let s = Settings::resolve(Scope::Gateway, &flags(&all), &env(e), None)?;
    GatewayConfig::from_settings(&s)
}
