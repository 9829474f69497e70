//! Settings for every subcommand, from four layers: command-line flag > environment variable (with the
//! Mishards names: WOSERVER, SERVER_PORT, SQLALCHEMY_DATABASE_URI, …) > TOML file > default.
//!
//! One table (`SPECS`) describes every setting once: its file key, environment names, flag, type, default
//! and help. The CLI builds its flags from it, `config check` prints from it, and resolution reads the
//! environment through an injected [`Source`], so tests never touch the process environment.
//!
//! Modules, one job each; everything public is re-exported here, so callers name `mishards_config::X`:
//! - `specs`: the table, and the kinds and scopes of its settings.
//! - `settings`: the layering that resolves each setting and remembers where its value came from.
//! - `sections` and `roles`: the typed configs built from the settings, with their checks.
//! - `discovery`: how the gateway finds its nodes (static, file, kubernetes).
//! - `node_addr`: the address of a node.
//! - `timezone`: TIMEZONE, the time zone of log timestamps.

mod discovery;
mod error;
mod node_addr;
mod roles;
mod sections;
mod settings;
mod specs;
mod timezone;

#[cfg(test)]
mod test_support;

pub use discovery::{DiscoveryConfig, DiscoveryKind, KubernetesDiscovery};
pub use error::ConfigError;
pub use node_addr::NodeAddr;
pub use roles::{DemoConfig, GatewayConfig, NodeConfig, Role, RouterKind};
pub use sections::{
    AdminConfig, ClientLimits, DEFAULT_NODE_SERVICE_NAME, DEFAULT_OTLP_ENDPOINT, FaultConfig,
    HedgeConfig, LogConfig, MAX_INSPECT_KEEP, MIN_FAULT_TOKEN_CHARS, NodeTlsConfig, ProbeConfig,
    ServerTlsConfig, TracingConfig,
};
pub use settings::{Origin, ProcessEnv, SECRET_MASK, Settings, Source, Value, load_file};
pub use specs::{DEFAULT_ADMIN_PORT, DEFAULT_PORT, Kind, OFF, SPECS, Scope, Spec, specs_for};
pub use timezone::{TimeZone, parse_timezone};
