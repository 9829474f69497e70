//! Settings for every subcommand, from four layers: command-line flag > environment variable (with the
//! Mishards names: WOSERVER, SERVER_PORT, SQLALCHEMY_DATABASE_URI, …) > TOML file > default.
//!
//! One table (`SPECS`) describes every setting once: its file key, environment names, flag, type, default
//! and help. The CLI builds its flags from it, `config check` prints from it, and resolution reads the
//! environment through an injected [`Source`], so tests never touch the process environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use mishards_meta::{MetaError, MetaUri, mask_password};

/// Which subcommand a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Gateway,
    Node,
    Demo,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Gateway, Scope::Node, Scope::Demo];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Gateway => "gateway",
            Scope::Node => "node",
            Scope::Demo => "demo",
        }
    }
}

const ALL: &[Scope] = &Scope::ALL;
const GATEWAY: &[Scope] = &[Scope::Gateway];
const NODE: &[Scope] = &[Scope::Node];
const DEMO: &[Scope] = &[Scope::Demo];
const GATEWAY_NODE: &[Scope] = &[Scope::Gateway, Scope::Node];
const GATEWAY_DEMO: &[Scope] = &[Scope::Gateway, Scope::Demo];

/// The type of a setting's value, which decides how text from any layer is parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Text,
    Path,
    Bool,
    Port,
    /// A port, or `off` for a listener that is not started.
    PortOrOff,
    Count,
    Number,
    /// Comma-separated in flags and the environment; a string or an array in TOML.
    List,
    /// One of these words, matched without regard to case.
    OneOf(&'static [&'static str]),
    /// A time zone as [`parse_timezone`] reads it; kept as text.
    TimeZone,
}

/// One setting.
#[derive(Debug)]
pub struct Spec {
    /// The TOML key, and the name `config check` prints.
    pub key: &'static str,
    /// Environment variable names, first one preferred.
    pub env: &'static [&'static str],
    /// The long flag, without `--`.
    pub flag: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    pub secret: bool,
    pub scopes: &'static [Scope],
    pub help: &'static str,
}

macro_rules! spec {
    ($key:literal, [$($env:literal),*], $flag:literal, $kind:expr, $default:expr, $scopes:expr, $help:literal) => {
        Spec { key: $key, env: &[$($env),*], flag: $flag, kind: $kind, default: $default, secret: false,
               scopes: $scopes, help: $help }
    };
}

pub const DEFAULT_PORT: u16 = 19530;

/// Milvus 1.1's own HTTP port, where the gateway's admin listener goes by default.
pub const DEFAULT_ADMIN_PORT: u16 = 19121;

/// The word that turns a `PortOrOff` listener off.
pub const OFF: &str = "off";

/// Every setting of every subcommand.
pub static SPECS: &[Spec] = &[
    spec!(
        "server_port",
        ["SERVER_PORT"],
        "port",
        Kind::Port,
        Some("19530"),
        ALL,
        "gRPC port the Milvus 1.1 API listens on (0 picks a free port)"
    ),
    spec!(
        "host",
        ["MISHARDS_HOST"],
        "host",
        Kind::Text,
        Some("0.0.0.0"),
        ALL,
        "address the gRPC server binds"
    ),
    spec!(
        "woserver",
        ["WOSERVER"],
        "woserver",
        Kind::Text,
        None,
        GATEWAY,
        "the write node, tcp://host:port or host:port"
    ),
    Spec {
        secret: true,
        ..spec!(
            "sqlalchemy_database_uri",
            ["SQLALCHEMY_DATABASE_URI"],
            "meta-uri",
            Kind::Text,
            None,
            GATEWAY_NODE,
            "metadata database: mysql://…, mysql+pymysql://…, sqlite:////abs/path (node default: meta.sqlite in --storage)"
        )
    },
    spec!(
        "sql_echo",
        ["SQL_ECHO"],
        "sql-echo",
        Kind::Bool,
        Some("false"),
        ALL,
        "log every SQL statement"
    ),
    spec!(
        "discovery_class_name",
        ["DISCOVERY_CLASS_NAME"],
        "discovery",
        Kind::OneOf(&["static", "file", "kubernetes"]),
        Some("static"),
        GATEWAY,
        "how read nodes are found: static (DISCOVERY_STATIC_HOSTS, DNS names allowed) or file (a hosts file re-read on change); kubernetes (Mishards' pod discovery) is not available: the gateway refuses it"
    ),
    spec!(
        "discovery_static_hosts",
        ["DISCOVERY_STATIC_HOSTS"],
        "static-hosts",
        Kind::List,
        Some(""),
        GATEWAY,
        "read nodes for static discovery, host[:port] separated by commas; DNS names allowed"
    ),
    spec!(
        "discovery_static_port",
        ["DISCOVERY_STATIC_PORT"],
        "static-port",
        Kind::Port,
        Some("19530"),
        GATEWAY,
        "port of static hosts that name none"
    ),
    spec!(
        "discovery_file",
        ["DISCOVERY_FILE"],
        "discovery-file",
        Kind::Path,
        None,
        GATEWAY,
        "hosts file for file discovery: one host[:port] per line, # comments"
    ),
    spec!(
        "discovery_plugin_path",
        ["DISCOVERY_PLUGIN_PATH"],
        "discovery-plugin-path",
        Kind::Path,
        None,
        GATEWAY,
        "accepted for Mishards compatibility; Python plugins are not loaded"
    ),
    spec!(
        "discovery_kubernetes_namespace",
        ["DISCOVERY_KUBERNETES_NAMESPACE"],
        "kubernetes-namespace",
        Kind::Text,
        None,
        GATEWAY,
        "accepted for Mishards compatibility (kubernetes discovery is not available)"
    ),
    spec!(
        "discovery_kubernetes_in_cluster",
        ["DISCOVERY_KUBERNETES_IN_CLUSTER"],
        "kubernetes-in-cluster",
        Kind::Bool,
        Some("false"),
        GATEWAY,
        "accepted for Mishards compatibility (kubernetes discovery is not available)"
    ),
    spec!(
        "discovery_kubernetes_poll_interval",
        ["DISCOVERY_KUBERNETES_POLL_INTERVAL"],
        "kubernetes-poll-interval",
        Kind::Count,
        Some("5"),
        GATEWAY,
        "accepted for Mishards compatibility (kubernetes discovery is not available)"
    ),
    spec!(
        "discovery_kubernetes_pod_patt",
        ["DISCOVERY_KUBERNETES_POD_PATT"],
        "kubernetes-pod-patt",
        Kind::Text,
        None,
        GATEWAY,
        "accepted for Mishards compatibility (kubernetes discovery is not available)"
    ),
    spec!(
        "discovery_kubernetes_label_selector",
        ["DISCOVERY_KUBERNETES_LABEL_SELECTOR"],
        "kubernetes-label-selector",
        Kind::Text,
        None,
        GATEWAY,
        "accepted for Mishards compatibility (kubernetes discovery is not available)"
    ),
    spec!(
        "router_class_name",
        ["ROUTER_CLASS_NAME"],
        "router",
        Kind::OneOf(&["rendezvous", "FileBasedHashRingRouter"]),
        Some("rendezvous"),
        GATEWAY,
        "segment placement: rendezvous (load-bounded highest-random-weight) or FileBasedHashRingRouter"
    ),
    spec!(
        "router_plugin_path",
        ["ROUTER_PLUGIN_PATH"],
        "router-plugin-path",
        Kind::Path,
        None,
        GATEWAY,
        "accepted for Mishards compatibility; Python plugins are not loaded"
    ),
    spec!(
        "max_retry",
        ["MAX_RETRY"],
        "max-retry",
        Kind::Count,
        Some("3"),
        GATEWAY,
        "how many times a failed read-node attempt is re-sent to the next fallback node"
    ),
    spec!(
        "role",
        ["MISHARDS_ROLE"],
        "role",
        Kind::OneOf(&["rw", "ro"]),
        None,
        NODE,
        "rw: the one write node; ro: a read node on the same storage and metadata"
    ),
    spec!(
        "storage",
        ["MISHARDS_STORAGE"],
        "storage",
        Kind::Path,
        Some("./mishards-data"),
        NODE,
        "shared storage folder for segment files and the write-ahead log"
    ),
    spec!(
        "meta_poll_interval",
        ["MISHARDS_META_POLL_INTERVAL"],
        "meta-poll-interval",
        Kind::Number,
        Some("1"),
        GATEWAY,
        "seconds between reads of Tables/TableFiles into a new metadata snapshot"
    ),
    spec!(
        "version_gate",
        ["MISHARDS_VERSION_GATE"],
        "version-gate",
        Kind::Text,
        Some("1.1."),
        GATEWAY,
        "nodes must answer Cmd(\"version\") with this prefix to be used"
    ),
    spec!(
        "node_timeout",
        ["MISHARDS_NODE_TIMEOUT"],
        "node-timeout",
        Kind::Number,
        Some("10"),
        GATEWAY,
        "seconds a read node may take to answer its part of a search before its files go to a fallback node"
    ),
    spec!(
        "search_batch",
        ["MISHARDS_SEARCH_BATCH"],
        "search-batch",
        Kind::Count,
        Some("32"),
        GATEWAY_DEMO,
        "most searches one read-node call carries: concurrent searches of the same files, topk and parameters share one SearchInFiles (1 turns batching off; at most 1024)"
    ),
    spec!(
        "hedge",
        ["MISHARDS_HEDGE"],
        "hedge",
        Kind::Bool,
        Some("true"),
        GATEWAY_DEMO,
        "hedged requests: a read node still searching past its expected latency also has its files sent to their next nodes; the first complete answer wins, the other is cancelled"
    ),
    spec!(
        "hedge_delay_ms",
        ["MISHARDS_HEDGE_DELAY_MS"],
        "hedge-delay-ms",
        Kind::Count,
        None,
        GATEWAY_DEMO,
        "hedge after this many milliseconds (unset: after the node's recent p95, at most the read nodes' typical p95, at least 5 ms)"
    ),
    spec!(
        "hedge_max_share",
        ["MISHARDS_HEDGE_MAX_SHARE"],
        "hedge-max-share",
        Kind::Number,
        Some("0.05"),
        GATEWAY_DEMO,
        "most hedge requests per search, on average (more than 0, at most 1; bursts of up to 10)"
    ),
    spec!(
        "demote_slow_nodes",
        ["MISHARDS_DEMOTE_SLOW_NODES"],
        "demote-slow-nodes",
        Kind::Bool,
        Some("true"),
        GATEWAY_DEMO,
        "rank a read node whose recent p95 is over 3× the read nodes' typical p95 (and 20 ms above it) after its peers, until 30 s without its samples"
    ),
    spec!(
        "admin_host",
        ["ADMIN_HOST"],
        "admin-host",
        Kind::Text,
        Some("127.0.0.1"),
        GATEWAY_DEMO,
        "address the admin HTTP listener binds (loopback unless told: it shows requests and cluster state)"
    ),
    spec!(
        "admin_port",
        ["ADMIN_PORT"],
        "admin-port",
        Kind::PortOrOff,
        Some("19121"),
        GATEWAY_DEMO,
        "port of the admin HTTP listener (/requests, /slow, /cluster, /metrics, /healthz, /readyz); off: no listener; 0 picks a free port"
    ),
    spec!(
        "inspect_keep",
        ["MISHARDS_INSPECT_KEEP"],
        "inspect-keep",
        Kind::Count,
        Some("256"),
        GATEWAY_DEMO,
        "how many recent search manifests the admin listener keeps, and as many slow ones (1-65536)"
    ),
    spec!(
        "slow_query_ms",
        ["MISHARDS_SLOW_QUERY_MS"],
        "slow-query-ms",
        Kind::Count,
        Some("1000"),
        GATEWAY_DEMO,
        "searches taking at least this many milliseconds are logged as slow and kept in /slow (0: every search)"
    ),
    spec!(
        "enable_fault_injection",
        ["MISHARDS_ENABLE_FAULT_INJECTION"],
        "enable-fault-injection",
        Kind::Bool,
        Some("false"),
        GATEWAY,
        "accept fault rules (delays, errors, partitions, crashes…) on the admin listener's /faults, with the fault token; for chaos testing, never in production"
    ),
    Spec {
        secret: true,
        ..spec!(
            "fault_token",
            ["MISHARDS_FAULT_TOKEN"],
            "fault-token",
            Kind::Text,
            None,
            GATEWAY,
            "bearer token /faults requires (at least 16 characters); required with enable_fault_injection"
        )
    },
    spec!(
        "fault_seed",
        ["MISHARDS_FAULT_SEED"],
        "fault-seed",
        Kind::Count,
        None,
        GATEWAY,
        "seed of every fault decision: the same seed, rules and calls give the same faults (unset: random, logged)"
    ),
    spec!(
        "auto_flush_interval",
        ["MISHARDS_AUTO_FLUSH_INTERVAL"],
        "auto-flush-interval",
        Kind::Number,
        Some("1"),
        NODE,
        "seconds between automatic flushes of buffered inserts into segment files"
    ),
    spec!(
        "gc_grace",
        ["MISHARDS_GC_GRACE"],
        "gc-grace",
        Kind::Number,
        Some("60"),
        NODE,
        "seconds a replaced segment file stays on disk for read nodes still searching it"
    ),
    spec!(
        "cache_size",
        ["MISHARDS_CACHE_SIZE"],
        "cache-size",
        Kind::Count,
        Some("4096"),
        NODE,
        "segment cache size in MB"
    ),
    spec!(
        "index_build_threshold",
        ["MISHARDS_INDEX_BUILD_THRESHOLD"],
        "index-build-threshold",
        Kind::Count,
        Some("4096"),
        NODE,
        "files with fewer rows stay exact (FLAT) when an index is created"
    ),
    spec!(
        "node_version",
        ["MISHARDS_NODE_VERSION"],
        "node-version",
        Kind::Text,
        Some("1.1.1"),
        GATEWAY_NODE,
        "Milvus version reported to Cmd(\"version\"); pymilvus 1.1.2 needs 1.1.x"
    ),
    spec!(
        "data_dir",
        ["MISHARDS_DATA_DIR"],
        "data-dir",
        Kind::Path,
        Some("./mishards-data"),
        DEMO,
        "folder for the demo's metadata and segments, kept across restarts"
    ),
    spec!(
        "readers",
        ["MISHARDS_READERS"],
        "readers",
        Kind::Count,
        Some("2"),
        DEMO,
        "number of read nodes the demo starts"
    ),
    spec!(
        "debug",
        ["DEBUG"],
        "debug",
        Kind::Bool,
        Some("false"),
        ALL,
        "debug logging (raises the default log level to debug)"
    ),
    spec!(
        "log_filter",
        ["MISHARDS_LOG", "RUST_LOG"],
        "log-filter",
        Kind::Text,
        None,
        ALL,
        "tracing filter directives, e.g. info,mishards::gateway=debug (overrides DEBUG)"
    ),
    spec!(
        "log_path",
        ["LOG_PATH"],
        "log-path",
        Kind::Path,
        None,
        ALL,
        "also write logs to daily files in this folder"
    ),
    spec!(
        "log_name",
        ["LOG_NAME"],
        "log-name",
        Kind::Text,
        Some("logfile"),
        ALL,
        "log file name prefix inside LOG_PATH"
    ),
    spec!(
        "timezone",
        ["TIMEZONE"],
        "timezone",
        Kind::TimeZone,
        Some("UTC"),
        ALL,
        "time zone of log timestamps: UTC, local, an offset from UTC like +08:00 or UTC+8, or Etc/GMT-8 (region names like Asia/Shanghai are refused: give their offset)"
    ),
    spec!(
        "tracer_class_name",
        ["TRACER_CLASS_NAME"],
        "tracer",
        Kind::OneOf(&["", "jaeger"]),
        Some(""),
        ALL,
        "jaeger: export traces over OTLP; empty: no tracing"
    ),
    spec!(
        "tracer_plugin_path",
        ["TRACER_PLUGIN_PATH"],
        "tracer-plugin-path",
        Kind::Path,
        None,
        ALL,
        "accepted for Mishards compatibility; Python plugins are not loaded"
    ),
    spec!(
        "otlp_endpoint",
        ["MISHARDS_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        "otlp-endpoint",
        Kind::Text,
        None,
        ALL,
        "OTLP/gRPC collector (Jaeger: http://127.0.0.1:4317); setting it turns tracing on"
    ),
    spec!(
        "tracing_service_name",
        ["TRACING_SERVICE_NAME"],
        "tracing-service-name",
        Kind::Text,
        None,
        ALL,
        "service name in traces (default: mishards for the gateway, mishards-node for nodes)"
    ),
    spec!(
        "tracing_sampler_type",
        ["TRACING_SAMPLER_TYPE"],
        "tracing-sampler-type",
        Kind::OneOf(&["const", "probabilistic", "ratelimiting"]),
        Some("const"),
        ALL,
        "const (param 0 or 1), probabilistic (param = ratio) or ratelimiting (param = traces per second)"
    ),
    spec!(
        "tracing_sampler_param",
        ["TRACING_SAMPLER_PARAM"],
        "tracing-sampler-param",
        Kind::Number,
        Some("1"),
        ALL,
        "parameter of the sampler"
    ),
    spec!(
        "tracing_log_payload",
        ["TRACING_LOG_PAYLOAD"],
        "tracing-log-payload",
        Kind::Bool,
        Some("false"),
        ALL,
        "add request sizes and parameters (never vectors) to spans"
    ),
];

/// The settings of one scope, in table order.
pub fn specs_for(scope: Scope) -> impl Iterator<Item = &'static Spec> {
    SPECS.iter().filter(move |s| s.scopes.contains(&scope))
}

fn spec_by_key(key: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| {
        s.key.eq_ignore_ascii_case(key) || s.env.iter().any(|e| e.eq_ignore_ascii_case(key))
    })
}

/// A read-only key/value source, such as the process environment or a map in a test.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The real process environment; only `main` uses it.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(u64),
    Number(f64),
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::List(items) => write!(f, "{items:?}"),
        }
    }
}

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

/// The effective configuration of one scope: every setting with a value and its origin.
#[derive(Debug, Clone)]
pub struct Settings {
    scope: Scope,
    values: BTreeMap<&'static str, (Value, Origin)>,
}

/// Reads and parses a TOML config file into raw text per key, checking every key belongs to `scope`.
pub fn load_file(path: &Path, scope: Scope) -> Result<Vec<(&'static Spec, String)>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    let mut entries: Vec<(&'static Spec, String)> = Vec::new();
    let invalid = |spec: &'static Spec, reason: String| ConfigError::Invalid {
        key: spec.key,
        origin: Origin::File(path.to_path_buf()).to_string(),
        reason,
    };
    for (key, value) in table {
        let spec = spec_by_key(&key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.clone(),
            path: path.into(),
        })?;
        if !spec.scopes.contains(&scope) {
            let owners = spec
                .scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join("|");
            return Err(ConfigError::WrongScope {
                key,
                path: path.into(),
                owners,
                scope: scope.name(),
            });
        }
        if entries.iter().any(|(seen, _)| seen.key == spec.key) {
            return Err(invalid(
                spec,
                format!("set twice in the file (`{key}` names the same setting as another key)"),
            ));
        }
        let raw = match value {
            toml::Value::String(s) => s,
            toml::Value::Table(_) | toml::Value::Datetime(_) => {
                return Err(invalid(
                    spec,
                    format!("a {} is not a value for this setting", value.type_str()),
                ));
            }
            toml::Value::Array(_) if spec.kind != Kind::List => {
                return Err(invalid(
                    spec,
                    "an array is only accepted for a list setting".to_string(),
                ));
            }
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        entries.push((spec, raw));
    }
    Ok(entries)
}

impl Settings {
    /// Resolves every setting of `scope`: `flags` (flag name → text, only those given on the command
    /// line) over `env` over the optional `file` over defaults.
    pub fn resolve(
        scope: Scope,
        flags: &HashMap<&'static str, String>,
        env: &dyn Source,
        file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let file_entries = match file {
            Some(path) => load_file(path, scope)?,
            None => Vec::new(),
        };
        if let Some(unknown) = flags
            .keys()
            .find(|f| !specs_for(scope).any(|s| s.flag == **f))
        {
            return Err(ConfigError::Invalid {
                key: "flag",
                origin: format!("flag --{unknown}"),
                reason: format!("`mishards {}` has no such flag", scope.name()),
            });
        }
        let mut values = BTreeMap::new();
        for spec in specs_for(scope) {
            // Every layer that sets this key, highest precedence first. Each one is parsed, not only the
            // one that wins: a malformed value in the file or the environment is a mistake even while a
            // flag hides it, and it would surface the day the flag is dropped.
            let mut layers: Vec<(String, Origin)> = Vec::new();
            if let Some(v) = flags.get(spec.flag) {
                layers.push((v.clone(), Origin::Flag(spec.flag)));
            }
            for name in spec.env {
                if let Some(v) = env.get(name).filter(|v| !v.trim().is_empty()) {
                    layers.push((v, Origin::Env(name)));
                }
            }
            if let (Some((_, raw)), Some(path)) =
                (file_entries.iter().find(|(s, _)| s.key == spec.key), file)
            {
                layers.push((raw.clone(), Origin::File(path.to_path_buf())));
            }
            let mut parsed = Vec::with_capacity(layers.len());
            for (raw, origin) in layers {
                let value = parse_value(spec, &raw).map_err(|reason| ConfigError::Invalid {
                    key: spec.key,
                    origin: origin.to_string(),
                    reason,
                })?;
                parsed.push((value, origin));
            }
            let chosen = match parsed.into_iter().next() {
                Some(chosen) => Some(chosen),
                None => match spec.default {
                    Some(default) => Some((
                        parse_value(spec, default).map_err(|reason| ConfigError::Invalid {
                            key: spec.key,
                            origin: Origin::Default.to_string(),
                            reason,
                        })?,
                        Origin::Default,
                    )),
                    None => None,
                },
            };
            if let Some((value, origin)) = chosen {
                values.insert(spec.key, (value, origin));
            }
        }
        Ok(Settings { scope, values })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn spec(key: &str) -> &'static Spec {
        spec_by_key(key).unwrap_or_else(|| panic!("no setting named {key}"))
    }

    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|(_, origin)| origin)
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key).map(|(value, _)| value)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Text(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn required_text(&self, key: &str) -> Result<&str, ConfigError> {
        self.text(key).filter(|s| !s.is_empty()).ok_or_else(|| {
            let spec = Self::spec(key);
            ConfigError::Missing {
                key: spec.key,
                flag: spec.flag,
                env: spec.env.first().copied().unwrap_or("-"),
            }
        })
    }

    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.text(key).filter(|s| !s.is_empty()).map(PathBuf::from)
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.value(key), Some(Value::Bool(true)))
    }

    pub fn int(&self, key: &str) -> Option<u64> {
        match self.value(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn port(&self, key: &str) -> u16 {
        self.int(key)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(DEFAULT_PORT)
    }

    /// A `PortOrOff` setting: `None` when it is `off`.
    pub fn port_or_off(&self, key: &str) -> Option<u16> {
        match self.value(key) {
            Some(Value::Text(t)) if t == OFF => None,
            _ => Some(
                self.int(key)
                    .and_then(|n| u16::try_from(n).ok())
                    .unwrap_or(DEFAULT_ADMIN_PORT),
            ),
        }
    }

    pub fn number(&self, key: &str) -> Option<f64> {
        match self.value(key) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn list(&self, key: &str) -> &[String] {
        match self.value(key) {
            Some(Value::List(items)) => items,
            _ => &[],
        }
    }

    /// An error about `key`'s current value, for checks that need more than one setting.
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key,
            origin: self
                .origin(key)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "default".into()),
            reason: reason.into(),
        }
    }

    /// The effective configuration as TOML, secrets masked, each line commented with its origin. Settings
    /// without a value are listed commented out.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# effective configuration of `mishards {}`\n",
            self.scope.name()
        );
        for spec in specs_for(self.scope) {
            match self.values.get(spec.key) {
                Some((value, origin)) => {
                    let shown = match value {
                        // A URI shows all but its password; any other secret shows nothing.
                        Value::Text(s) if spec.secret && s.contains("://") => {
                            format!("{:?}", mask_password(s))
                        }
                        Value::Text(_) if spec.secret => format!("{:?}", SECRET_MASK),
                        other => toml_literal(other),
                    };
                    out.push_str(&format!("{} = {shown}  # {origin}\n", spec.key));
                }
                None => out.push_str(&format!("# {} =   (not set)\n", spec.key)),
            }
        }
        out
    }
}

fn toml_literal(value: &Value) -> String {
    match value {
        Value::List(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| format!("{i:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// Parses one setting's text per its kind.
fn parse_value(spec: &Spec, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    match spec.kind {
        Kind::Text | Kind::Path => Ok(Value::Text(text.to_string())),
        Kind::TimeZone => parse_timezone(text).map(|_| Value::Text(text.to_string())),
        Kind::Bool => parse_bool(text).map(Value::Bool),
        Kind::Port => match text.parse::<u16>() {
            Err(_) => Err(format!(
                "`{text}` is not a port (0-65535; 0 picks a free one)"
            )),
            Ok(port) => Ok(Value::Int(port.into())),
        },
        Kind::PortOrOff if text.eq_ignore_ascii_case(OFF) => Ok(Value::Text(OFF.to_string())),
        Kind::PortOrOff => match text.parse::<u16>() {
            Err(_) => Err(format!(
                "`{text}` is not a port (0-65535; 0 picks a free one) or `{OFF}`"
            )),
            Ok(port) => Ok(Value::Int(port.into())),
        },
        Kind::Count => text
            .parse::<u64>()
            .map(Value::Int)
            .map_err(|_| format!("`{text}` is not a whole number ≥ 0")),
        Kind::Number => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => Err(format!("`{text}` is not a number")),
        },
        Kind::List => Ok(Value::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Kind::OneOf(choices) => choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(text))
            .map(|c| Value::Text(c.to_string()))
            .ok_or_else(|| {
                let listed = choices
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("`{text}` is not one of {listed}")
            }),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{text}` is not a boolean (true/false)")),
    }
}

/// A `host:port` address, from `tcp://host:port`, `host:port` or `host` (default port). The host is shared,
/// so a clone (plans, leases and manifests carry one per node per search) allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: std::sync::Arc<str>,
    pub port: u16,
}

impl NodeAddr {
    /// `127.0.0.1:port`.
    pub fn loopback(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    pub fn parse(text: &str, default_port: u16) -> Result<NodeAddr, String> {
        let trimmed = text.trim();
        let rest = trimmed
            .strip_prefix("tcp://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err("empty address".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                let port = port.parse::<u16>().ok().filter(|p| *p != 0);
                (
                    host,
                    port.ok_or_else(|| format!("`{text}` has no valid port"))?,
                )
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(format!("`{text}` is not host[:port]"));
        }
        Ok(NodeAddr {
            host: host.into(),
            port,
        })
    }

    /// The `http://` URI tonic connects to.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Log settings shared by all subcommands.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub debug: bool,
    pub filter: Option<String>,
    pub path: Option<PathBuf>,
    pub name: String,
    /// Offset of log timestamps from UTC, in seconds; `None` = the machine's local offset.
    pub utc_offset_seconds: Option<i32>,
}

/// Tracing settings shared by all subcommands (exported by the tracing issue's telemetry).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where to send spans; `None` = tracing off.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    pub sampler_type: String,
    pub sampler_param: f64,
    pub log_payload: bool,
}

/// Most search manifests (and as many slow ones) the gateway keeps for inspection: bounds its memory.
pub const MAX_INSPECT_KEEP: usize = 65_536;

/// The gateway's admin HTTP listener and its request inspection (gateway and demo).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub host: String,
    /// `None`: no admin listener (`admin_port = "off"`); 0 picks a free port.
    pub port: Option<u16>,
    /// How many recent search manifests are kept, and as many slow ones.
    pub inspect_keep: usize,
    /// Searches taking at least this long are logged as slow and kept apart.
    pub slow_query: std::time::Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            host: "127.0.0.1".into(),
            port: Some(DEFAULT_ADMIN_PORT),
            inspect_keep: 256,
            slow_query: std::time::Duration::from_millis(1000),
        }
    }
}

impl AdminConfig {
    pub fn from_settings(s: &Settings) -> Result<AdminConfig, ConfigError> {
        let defaults = AdminConfig::default();
        let keep = s
            .int("inspect_keep")
            .unwrap_or(defaults.inspect_keep as u64);
        if !(1..=MAX_INSPECT_KEEP as u64).contains(&keep) {
            return Err(s.invalid(
                "inspect_keep",
                format!("{keep} manifests: choose 1 to {MAX_INSPECT_KEEP}"),
            ));
        }
        let host = s.text("admin_host").unwrap_or(&defaults.host).trim();
        if host.is_empty() {
            return Err(s.invalid("admin_host", "empty address"));
        }
        Ok(AdminConfig {
            host: host.to_string(),
            port: s.port_or_off("admin_port"),
            inspect_keep: keep as usize,
            slow_query: std::time::Duration::from_millis(s.int("slow_query_ms").unwrap_or(1000)),
        })
    }
}

/// Slow-node mitigation (gateway and demo): hedged requests and ranking slow read nodes last.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    /// Hedged requests on or off.
    pub on: bool,
    /// Hedge after this long; `None`: after each node's recent p95.
    pub delay: Option<std::time::Duration>,
    /// Most hedge requests per search, on average.
    pub max_share: f64,
    /// Rank read nodes far slower than their peers after them.
    pub demote_slow_nodes: bool,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            on: true,
            delay: None,
            max_share: 0.05,
            demote_slow_nodes: true,
        }
    }
}

impl HedgeConfig {
    pub fn from_settings(s: &Settings) -> Result<HedgeConfig, ConfigError> {
        let defaults = HedgeConfig::default();
        let delay = match s.int("hedge_delay_ms") {
            None => None,
            Some(ms @ 1..=3_600_000) => Some(std::time::Duration::from_millis(ms)),
            Some(ms) => {
                return Err(s.invalid(
                    "hedge_delay_ms",
                    format!("{ms} ms: choose 1 to 3600000, or leave it unset for each node's p95"),
                ));
            }
        };
        let max_share = s.number("hedge_max_share").unwrap_or(defaults.max_share);
        if !(max_share > 0.0 && max_share <= 1.0) {
            return Err(s.invalid(
                "hedge_max_share",
                format!("{max_share}: choose more than 0 and at most 1 (hedge = false turns hedging off)"),
            ));
        }
        Ok(HedgeConfig {
            on: s.flag("hedge"),
            delay,
            max_share,
            demote_slow_nodes: s.flag("demote_slow_nodes"),
        })
    }
}

/// How `config check` shows a secret that is not a URI.
pub const SECRET_MASK: &str = "***";

/// Shortest fault token accepted: it guards the power to break the cluster.
pub const MIN_FAULT_TOKEN_CHARS: usize = 16;

/// Fault injection (gateway): off unless enabled, and then only with a token.
#[derive(Clone, PartialEq, Default)]
pub struct FaultConfig {
    pub enabled: bool,
    /// The bearer token `/faults` requires; always set when `enabled`.
    pub token: Option<String>,
    /// `None`: a random seed, logged at start.
    pub seed: Option<u64>,
}

impl fmt::Debug for FaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| SECRET_MASK))
            .field("seed", &self.seed)
            .finish()
    }
}

impl FaultConfig {
    pub fn from_settings(s: &Settings) -> Result<FaultConfig, ConfigError> {
        let enabled = s.flag("enable_fault_injection");
        let token = s
            .text("fault_token")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if enabled {
            match &token {
                None => {
                    return Err(s.invalid(
                        "enable_fault_injection",
                        "fault injection needs a token for /faults: set --fault-token or MISHARDS_FAULT_TOKEN",
                    ));
                }
                Some(t) if t.chars().count() < MIN_FAULT_TOKEN_CHARS => {
                    return Err(s.invalid(
                        "fault_token",
                        format!(
                            "{} characters: give at least {MIN_FAULT_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)",
                            t.chars().count()
                        ),
                    ));
                }
                Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    return Err(s.invalid(
                        "fault_token",
                        "has spaces or control characters: it must fit an Authorization header",
                    ));
                }
                _ => {}
            }
        }
        Ok(FaultConfig {
            enabled,
            token: enabled.then_some(token).flatten(),
            seed: s.int("fault_seed"),
        })
    }
}

/// The nodes' service name in traces unless TRACING_SERVICE_NAME says otherwise.
pub const DEFAULT_NODE_SERVICE_NAME: &str = "mishards-node";

/// Jaeger's own OTLP/gRPC port on this machine.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4317";

impl LogConfig {
    pub fn from_settings(s: &Settings) -> Result<LogConfig, ConfigError> {
        Ok(LogConfig {
            debug: s.flag("debug"),
            filter: s.text("log_filter").map(str::to_string),
            path: s.path("log_path"),
            name: s.text("log_name").unwrap_or("logfile").to_string(),
            utc_offset_seconds: parse_timezone(s.text("timezone").unwrap_or("UTC"))
                .map_err(|reason| s.invalid("timezone", reason))?,
        })
    }
}

/// What TIMEZONE accepts, for its help and its errors.
const TIMEZONE_FORMS: &str = "UTC, local, an offset from UTC like +08:00, -0530 or UTC+8, or a fixed IANA zone like Etc/GMT-8";

/// Names of UTC in the IANA database and in common use.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "UCT",
    "GMT",
    "GMT0",
    "Z",
    "Zulu",
    "Universal",
    "Greenwich",
    "Etc/UTC",
    "Etc/UCT",
    "Etc/GMT",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Etc/Universal",
    "Etc/Zulu",
    "Etc/Greenwich",
];

/// TIMEZONE as seconds east of UTC, `None` for the machine's local offset. Accepted: `local`; UTC and its
/// IANA aliases (`Etc/UTC`, `GMT`, `Z`, …); an offset (`+08:00`, `-0530`, `+8`, `UTC+8`, `GMT-3`, east
/// positive); the fixed IANA zones `Etc/GMT±N` (POSIX sign: `Etc/GMT-8` is UTC+08:00). Region names such
/// as `Asia/Shanghai` need a time zone database with its daylight-saving rules, which mishards does not
/// bundle (no chrono-tz or jiff dependency, and /usr/share/zoneinfo is missing from slim containers): they
/// are refused with a message that asks for the offset instead.
pub fn parse_timezone(text: &str) -> Result<Option<i32>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Some(0));
    }
    if t.eq_ignore_ascii_case("local") {
        return Ok(None);
    }
    if UTC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(t)) {
        return Ok(Some(0));
    }
    let bad = || format!("`{text}` is not a time zone mishards reads; use {TIMEZONE_FORMS}");
    // Etc/GMT+8 is 8 hours *behind* UTC (the POSIX sign convention of the IANA `Etc` zones).
    let lower = t.to_ascii_lowercase();
    if let Some(posix) = lower.strip_prefix("etc/gmt") {
        return match parse_offset(posix) {
            Some(seconds) if seconds % 3600 == 0 => Ok(Some(-seconds)),
            _ => Err(bad()),
        };
    }
    if t.contains('/') {
        return Err(format!(
            "`{text}` is a region time zone, whose daylight-saving rules need a time zone database that \
             mishards does not bundle; give its current offset from UTC instead (e.g. +08:00 for \
             Asia/Shanghai), or use {TIMEZONE_FORMS}"
        ));
    }
    let offset = ["utc", "gmt"]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    parse_offset(offset).map(Some).ok_or_else(bad)
}

/// `+8`, `-05:30`, `+0530`: seconds east of UTC, at most 14 hours.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, digits) = if let Some(d) = text.strip_prefix('+') {
        (1, d)
    } else if let Some(d) = text.strip_prefix('-') {
        (-1, d)
    } else {
        return None;
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        // Only ASCII digits here, so splitting at a byte index is safe.
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    if hours.is_empty() || hours.len() > 2 || minutes.is_empty() || minutes.len() > 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 14 || minutes > 59 || (hours == 14 && minutes > 0) {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

impl TracingConfig {
    pub fn from_settings(
        s: &Settings,
        default_service: &str,
    ) -> Result<TracingConfig, ConfigError> {
        let jaeger = s.text("tracer_class_name") == Some("jaeger");
        let otlp_endpoint = s
            .text("otlp_endpoint")
            .map(str::to_string)
            .or_else(|| jaeger.then(|| DEFAULT_OTLP_ENDPOINT.to_string()));
        let sampler_type = s
            .text("tracing_sampler_type")
            .unwrap_or("const")
            .to_string();
        let sampler_param = s.number("tracing_sampler_param").unwrap_or(1.0);
        let param_ok = match sampler_type.as_str() {
            "const" => sampler_param == 0.0 || sampler_param == 1.0,
            "probabilistic" => (0.0..=1.0).contains(&sampler_param),
            _ => sampler_param > 0.0,
        };
        if !param_ok {
            return Err(s.invalid(
                "tracing_sampler_param",
                format!("{sampler_param} does not suit the {sampler_type} sampler (const: 0 or 1, probabilistic: 0..1, ratelimiting: > 0)"),
            ));
        }
        Ok(TracingConfig {
            otlp_endpoint,
            service_name: s
                .text("tracing_service_name")
                .unwrap_or(default_service)
                .to_string(),
            sampler_type,
            sampler_param,
            log_payload: s.flag("tracing_log_payload"),
        })
    }
}

/// Warns about Mishards settings that are accepted but have no effect here.
fn warn_inert(s: &Settings) {
    for key in [
        "discovery_plugin_path",
        "router_plugin_path",
        "tracer_plugin_path",
    ] {
        if s.path(key).is_some() {
            tracing::warn!(
                setting = key,
                "Python plugins are not loaded by mishards; this setting has no effect"
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    Static,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    Rendezvous,
    HashRing,
}

/// Everything `mishards gateway` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub host: String,
    pub port: u16,
    pub write_node: NodeAddr,
    pub meta_uri: String,
    pub sql_echo: bool,
    pub discovery: DiscoveryKind,
    pub static_hosts: Vec<NodeAddr>,
    pub discovery_file: Option<PathBuf>,
    pub router: RouterKind,
    pub max_retry: u32,
    pub node_timeout: std::time::Duration,
    pub version: String,
    pub meta_poll_interval: std::time::Duration,
    pub version_gate: String,
    pub admin: AdminConfig,
    pub hedge: HedgeConfig,
    /// Most searches one read-node call carries (1: no batching).
    pub search_batch: usize,
    pub faults: FaultConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

impl GatewayConfig {
    pub fn from_settings(s: &Settings) -> Result<GatewayConfig, ConfigError> {
        warn_inert(s);
        let write_node = NodeAddr::parse(s.required_text("woserver")?, DEFAULT_PORT)
            .map_err(|r| s.invalid("woserver", r))?;
        let static_port = s.port("discovery_static_port");
        let static_hosts = s
            .list("discovery_static_hosts")
            .iter()
            .map(|h| NodeAddr::parse(h, static_port))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| s.invalid("discovery_static_hosts", r))?;
        let discovery = match s.text("discovery_class_name") {
            Some("file") => DiscoveryKind::File,
            Some("kubernetes") => {
                return Err(s.invalid(
                    "discovery_class_name",
                    "kubernetes discovery is not available; use static (DNS names allowed) or file",
                ));
            }
            _ => DiscoveryKind::Static,
        };
        let discovery_file = s.path("discovery_file");
        if discovery == DiscoveryKind::File && discovery_file.is_none() {
            return Err(s.invalid(
                "discovery_file",
                "file discovery needs DISCOVERY_FILE (--discovery-file)",
            ));
        }
        let router = match s.text("router_class_name") {
            Some("FileBasedHashRingRouter") => RouterKind::HashRing,
            _ => RouterKind::Rendezvous,
        };
        let max_retry = u32::try_from(s.int("max_retry").unwrap_or(3))
            .map_err(|_| s.invalid("max_retry", "too large"))?;
        let meta_uri = s.required_text("sqlalchemy_database_uri")?.to_string();
        check_meta_uri(s, &meta_uri, None)?;
        Ok(GatewayConfig {
            host: s.text("host").unwrap_or("0.0.0.0").to_string(),
            port: s.port("server_port"),
            write_node,
            meta_uri,
            sql_echo: s.flag("sql_echo"),
            discovery,
            static_hosts,
            discovery_file,
            router,
            max_retry,
            node_timeout: seconds(s, "node_timeout", 10.0)?,
            meta_poll_interval: seconds(s, "meta_poll_interval", 1.0)?,
            version_gate: s.text("version_gate").unwrap_or("1.1.").to_string(),
            version: s.text("node_version").unwrap_or("1.1.1").to_string(),
            admin: AdminConfig::from_settings(s)?,
            hedge: HedgeConfig::from_settings(s)?,
            search_batch: search_batch(s)?,
            faults: FaultConfig::from_settings(s)?,
            log: LogConfig::from_settings(s)?,
            tracing: TracingConfig::from_settings(s, "mishards")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one node that writes data files and metadata.
    Writer,
    /// A node that serves reads and searches from the shared storage.
    Reader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Writer => "rw",
            Role::Reader => "ro",
        }
    }
}

/// Everything `mishards node` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub role: Role,
    pub host: String,
    pub port: u16,
    pub storage: PathBuf,
    /// `None`: `meta.sqlite` inside `storage`.
    pub meta_uri: Option<String>,
    pub sql_echo: bool,
    pub version: String,
    pub auto_flush_interval: std::time::Duration,
    pub gc_grace: std::time::Duration,
    pub cache_bytes: usize,
    pub index_build_rows: i64,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

impl NodeConfig {
    pub fn from_settings(s: &Settings) -> Result<NodeConfig, ConfigError> {
        warn_inert(s);
        let role = match s.required_text("role")? {
            "rw" => Role::Writer,
            _ => Role::Reader,
        };
        let version = s.text("node_version").unwrap_or("1.1.1").to_string();
        if !version.starts_with("1.1.") {
            tracing::warn!(%version, "pymilvus 1.1.2 refuses servers whose version is not 1.1.x");
        }
        let storage = s
            .path("storage")
            .unwrap_or_else(|| PathBuf::from("./mishards-data"));
        let meta_uri = s
            .text("sqlalchemy_database_uri")
            .filter(|u| !u.trim().is_empty())
            .map(str::to_string);
        if let Some(uri) = &meta_uri {
            check_meta_uri(s, uri, Some(&storage))?;
        }
        Ok(NodeConfig {
            role,
            host: s.text("host").unwrap_or("0.0.0.0").to_string(),
            port: s.port("server_port"),
            storage,
            meta_uri,
            sql_echo: s.flag("sql_echo"),
            version,
            auto_flush_interval: seconds(s, "auto_flush_interval", 1.0)?,
            gc_grace: seconds(s, "gc_grace", 60.0)?,
            cache_bytes: (s.int("cache_size").unwrap_or(4096) as usize).saturating_mul(1 << 20),
            index_build_rows: s
                .int("index_build_threshold")
                .unwrap_or(4096)
                .min(i64::MAX as u64) as i64,
            log: LogConfig::from_settings(s)?,
            tracing: TracingConfig::from_settings(s, DEFAULT_NODE_SERVICE_NAME)?,
        })
    }
}

/// Parses a metadata URI as the gateway and the node will (`MetaUri::parse`), so a URI they would refuse
/// fails here, naming the setting and where it came from, with the password masked. Nothing connects.
fn check_meta_uri(s: &Settings, uri: &str, storage: Option<&Path>) -> Result<(), ConfigError> {
    match MetaUri::parse(uri, storage) {
        Ok(_) => Ok(()),
        Err(MetaError::InvalidUri { uri, reason }) => Err(s.invalid(
            "sqlalchemy_database_uri",
            format!("`{uri}` is not a metadata URI: {reason}"),
        )),
        Err(other) => Err(s.invalid("sqlalchemy_database_uri", other.to_string())),
    }
}

/// A positive number of seconds, at most a day.
fn seconds(
    s: &Settings,
    key: &'static str,
    default: f64,
) -> Result<std::time::Duration, ConfigError> {
    let value = s.number(key).unwrap_or(default);
    if !(value > 0.0 && value <= 86_400.0) {
        return Err(s.invalid(
            key,
            format!("{value} seconds: choose more than 0 and at most 86400"),
        ));
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// `search_batch`: 1 (off) to 1024.
fn search_batch(s: &Settings) -> Result<usize, ConfigError> {
    match s.int("search_batch").unwrap_or(32) {
        n @ 1..=1024 => Ok(n as usize),
        n => Err(s.invalid(
            "search_batch",
            format!("{n}: choose 1 (no batching) to 1024 searches per read-node call"),
        )),
    }
}

/// Everything `mishards demo` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub readers: u32,
    pub sql_echo: bool,
    pub admin: AdminConfig,
    pub hedge: HedgeConfig,
    pub search_batch: usize,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

impl DemoConfig {
    pub fn from_settings(s: &Settings) -> Result<DemoConfig, ConfigError> {
        let readers = s.int("readers").unwrap_or(2);
        if !(1..=64).contains(&readers) {
            return Err(s.invalid("readers", format!("{readers} read nodes: choose 1 to 64")));
        }
        Ok(DemoConfig {
            host: s.text("host").unwrap_or("0.0.0.0").to_string(),
            port: s.port("server_port"),
            data_dir: s
                .path("data_dir")
                .unwrap_or_else(|| PathBuf::from("./mishards-data")),
            readers: readers as u32,
            sql_echo: s.flag("sql_echo"),
            admin: AdminConfig::from_settings(s)?,
            hedge: HedgeConfig::from_settings(s)?,
            search_batch: search_batch(s)?,
            log: LogConfig::from_settings(s)?,
            tracing: TracingConfig::from_settings(s, "mishards")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flags(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn every_spec_is_well_formed() {
        let mut keys = std::collections::HashSet::new();
        let mut flags_by_scope = std::collections::HashSet::new();
        for spec in SPECS {
            assert!(keys.insert(spec.key), "duplicate key {}", spec.key);
            for scope in spec.scopes {
                assert!(
                    flags_by_scope.insert((scope.name(), spec.flag)),
                    "duplicate flag {}",
                    spec.flag
                );
            }
            assert!(
                !spec.env.is_empty() && !spec.help.is_empty(),
                "{}",
                spec.key
            );
            if let Some(default) = spec.default {
                parse_value(spec, default)
                    .unwrap_or_else(|e| panic!("default of {}: {e}", spec.key));
            }
        }
    }

    #[test]
    fn every_setting_the_seeds_name_is_accepted() {
        for name in [
            "WOSERVER",
            "SERVER_PORT",
            "SQLALCHEMY_DATABASE_URI",
            "SQL_ECHO",
            "DISCOVERY_CLASS_NAME",
            "DISCOVERY_STATIC_HOSTS",
            "DISCOVERY_STATIC_PORT",
            "DISCOVERY_PLUGIN_PATH",
            "DISCOVERY_KUBERNETES_NAMESPACE",
            "DISCOVERY_KUBERNETES_IN_CLUSTER",
            "DISCOVERY_KUBERNETES_POLL_INTERVAL",
            "DISCOVERY_KUBERNETES_POD_PATT",
            "DISCOVERY_KUBERNETES_LABEL_SELECTOR",
            "ROUTER_CLASS_NAME",
            "ROUTER_PLUGIN_PATH",
            "TRACER_CLASS_NAME",
            "TRACER_PLUGIN_PATH",
            "TRACING_SERVICE_NAME",
            "TRACING_SAMPLER_TYPE",
            "TRACING_SAMPLER_PARAM",
            "TRACING_LOG_PAYLOAD",
            "LOG_PATH",
            "LOG_NAME",
            "DEBUG",
            "TIMEZONE",
            "MAX_RETRY",
        ] {
            let spec = spec_by_key(name).unwrap_or_else(|| panic!("{name} is not accepted"));
            assert!(spec.env.contains(&name));
            assert!(
                spec.scopes.contains(&Scope::Gateway),
                "{name} must reach the gateway"
            );
        }
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let f = file("server_port = 1111\nwoserver = \"tcp://10.0.0.1:19530\"\nmax_retry = 7\n");
        let e = env(&[("SERVER_PORT", "2222"), ("WOSERVER", "w:1")]);
        let s = Settings::resolve(
            Scope::Gateway,
            &flags(&[("port", "3333")]),
            &e,
            Some(f.path()),
        )
        .unwrap();
        assert_eq!(s.port("server_port"), 3333);
        assert_eq!(s.origin("server_port"), Some(&Origin::Flag("port")));
        assert_eq!(s.text("woserver"), Some("w:1"));
        assert_eq!(s.origin("woserver"), Some(&Origin::Env("WOSERVER")));
        assert_eq!(s.int("max_retry"), Some(7));
        assert_eq!(
            s.origin("max_retry"),
            Some(&Origin::File(f.path().to_path_buf()))
        );
        assert_eq!(s.int("discovery_static_port"), Some(19530));
        assert_eq!(s.origin("discovery_static_port"), Some(&Origin::Default));
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let s = Settings::resolve(
            Scope::Gateway,
            &flags(&[]),
            &env(&[("TRACER_CLASS_NAME", "")]),
            None,
        )
        .unwrap();
        assert_eq!(s.origin("tracer_class_name"), Some(&Origin::Default));
    }

    #[test]
    fn unknown_and_misplaced_file_keys_are_rejected_by_name() {
        let f = file("server_port = 1\nwoserverr = \"x\"\n");
        let err =
            Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), Some(f.path())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, .. } if key == "woserverr"),
            "{err}"
        );
        let f = file("woserver = \"x\"\n");
        let err =
            Settings::resolve(Scope::Node, &flags(&[]), &env(&[]), Some(f.path())).unwrap_err();
        assert!(err.to_string().contains("`woserver`"), "{err}");
        assert!(err.to_string().contains("mishards gateway"), "{err}");
    }

    #[test]
    fn file_keys_may_use_the_mishards_names() {
        let f = file("WOSERVER = \"tcp://a:1\"\nDISCOVERY_STATIC_HOSTS = [\"b\", \"c:2\"]\n");
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), Some(f.path())).unwrap();
        assert_eq!(s.text("woserver"), Some("tcp://a:1"));
        assert_eq!(s.list("discovery_static_hosts"), ["b", "c:2"]);
    }

    #[test]
    fn malformed_values_name_the_key_and_origin() {
        let cases: [(&str, &str, &str); 5] = [
            ("SERVER_PORT", "70000", "server_port"),
            ("DEBUG", "maybe", "debug"),
            ("MAX_RETRY", "-1", "max_retry"),
            ("ROUTER_CLASS_NAME", "roundrobin", "router_class_name"),
            ("TRACING_SAMPLER_PARAM", "abc", "tracing_sampler_param"),
        ];
        for (name, value, key) in cases {
            let err = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[(name, value)]), None)
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{key}`")) && text.contains(name),
                "{text}"
            );
        }
    }

    #[test]
    fn gateway_config_from_mishards_environment() {
        let e = env(&[
            ("WOSERVER", "tcp://127.0.0.1:19530"),
            (
                "SQLALCHEMY_DATABASE_URI",
                "mysql+pymysql://root:root@127.0.0.1:3306/milvus?charset=utf8mb4",
            ),
            ("DISCOVERY_STATIC_HOSTS", "ro-1, ro-2:19540"),
            ("DISCOVERY_STATIC_PORT", "19531"),
            ("ROUTER_CLASS_NAME", "filebasedhashringrouter"),
            ("TRACER_CLASS_NAME", "Jaeger"),
            ("DEBUG", "True"),
            ("TIMEZONE", "+08:00"),
        ]);
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &e, None).unwrap();
        let g = GatewayConfig::from_settings(&s).unwrap();
        assert_eq!(
            g.write_node,
            NodeAddr {
                host: "127.0.0.1".into(),
                port: 19530
            }
        );
        assert_eq!(
            g.static_hosts,
            [
                NodeAddr {
                    host: "ro-1".into(),
                    port: 19531
                },
                NodeAddr {
                    host: "ro-2".into(),
                    port: 19540
                }
            ]
        );
        assert_eq!(g.router, RouterKind::HashRing);
        assert_eq!(
            g.tracing.otlp_endpoint.as_deref(),
            Some(DEFAULT_OTLP_ENDPOINT)
        );
        assert_eq!(g.tracing.service_name, "mishards");
        assert!(g.log.debug);
        assert_eq!(g.log.utc_offset_seconds, Some(8 * 3600));
        assert!(s.render().contains("mysql+pymysql://root:***@127.0.0.1"));
        assert!(!s.render().contains("root:root"));
    }

    #[test]
    fn gateway_requires_write_node_and_metadata() {
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), None).unwrap();
        let err = GatewayConfig::from_settings(&s).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                key: "woserver",
                flag: "woserver",
                env: "WOSERVER"
            }
        );
        let s = Settings::resolve(
            Scope::Gateway,
            &flags(&[("woserver", "w")]),
            &env(&[]),
            None,
        )
        .unwrap();
        let err = GatewayConfig::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("SQLALCHEMY_DATABASE_URI"), "{err}");
    }

    #[test]
    fn node_and_demo_configs() {
        let s = Settings::resolve(
            Scope::Node,
            &flags(&[("role", "RO"), ("port", "19541")]),
            &env(&[]),
            None,
        )
        .unwrap();
        let n = NodeConfig::from_settings(&s).unwrap();
        assert_eq!(
            (n.role, n.port, n.meta_uri.clone()),
            (Role::Reader, 19541, None)
        );
        assert_eq!(n.tracing.service_name, "mishards-node");
        let s =
            Settings::resolve(Scope::Demo, &flags(&[("readers", "0")]), &env(&[]), None).unwrap();
        assert!(
            DemoConfig::from_settings(&s)
                .unwrap_err()
                .to_string()
                .contains("readers")
        );
    }

    /// The gateway's config from flags `f` (with a write node and metadata URI) and environment `e`.
    fn gateway_config(
        f: &[(&'static str, &str)],
        e: &[(&str, &str)],
    ) -> Result<GatewayConfig, ConfigError> {
        let mut all = vec![("woserver", "w"), ("meta-uri", "sqlite::memory:")];
        all.extend_from_slice(f);
        let s = Settings::resolve(Scope::Gateway, &flags(&all), &env(e), None)?;
        GatewayConfig::from_settings(&s)
    }

    #[test]
    fn admin_listener_settings() {
        let gateway =
            |f: &[(&'static str, &str)], e: &[(&str, &str)]| gateway_config(f, e).map(|g| g.admin);
        // Loopback on Milvus 1.1's HTTP port unless told.
        assert_eq!(gateway(&[], &[]).unwrap(), AdminConfig::default());
        assert_eq!(AdminConfig::default().host, "127.0.0.1");
        assert_eq!(AdminConfig::default().port, Some(19121));
        let a = gateway(
            &[("admin-port", "0"), ("slow-query-ms", "5")],
            &[("ADMIN_HOST", "0.0.0.0"), ("MISHARDS_INSPECT_KEEP", "10")],
        )
        .unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.inspect_keep, a.slow_query),
            ("0.0.0.0", Some(0), 10, std::time::Duration::from_millis(5))
        );
        assert_eq!(gateway(&[("admin-port", "OFF")], &[]).unwrap().port, None);
        assert_eq!(gateway(&[], &[("ADMIN_PORT", "off")]).unwrap().port, None);
        let err = gateway(&[("admin-port", "none")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`admin_port`") && err.contains("`off`"),
            "{err}"
        );
        let err = gateway(&[("inspect-keep", "0")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`inspect_keep`"), "{err}");
        // `off` survives `config check`: the rendered file reads back the same.
        let s = Settings::resolve(
            Scope::Demo,
            &flags(&[("admin-port", "off")]),
            &env(&[]),
            None,
        )
        .unwrap();
        let rendered = s.render();
        assert!(
            rendered.contains("admin_port = \"off\"  # flag --admin-port"),
            "{rendered}"
        );
        let f = file(&rendered);
        let again = Settings::resolve(Scope::Demo, &flags(&[]), &env(&[]), Some(f.path())).unwrap();
        assert_eq!(DemoConfig::from_settings(&again).unwrap().admin.port, None);
        // The node has no admin listener.
        assert!(specs_for(Scope::Node).all(|spec| !spec.key.starts_with("admin")));
    }

    #[test]
    fn search_batch_setting() {
        let gateway = |f: &[(&'static str, &str)], e: &[(&str, &str)]| {
            gateway_config(f, e).map(|g| g.search_batch)
        };
        assert_eq!(gateway(&[], &[]).unwrap(), 32);
        assert_eq!(gateway(&[("search-batch", "1")], &[]).unwrap(), 1);
        assert_eq!(
            gateway(&[], &[("MISHARDS_SEARCH_BATCH", "64")]).unwrap(),
            64
        );
        for value in ["0", "1025"] {
            let err = gateway(&[("search-batch", value)], &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`search_batch`") && err.contains("1 (no batching) to 1024"),
                "{err}"
            );
        }
        let s = Settings::resolve(
            Scope::Demo,
            &flags(&[("search-batch", "4")]),
            &env(&[]),
            None,
        )
        .unwrap();
        assert_eq!(DemoConfig::from_settings(&s).unwrap().search_batch, 4);
        assert!(specs_for(Scope::Node).all(|spec| spec.key != "search_batch"));
    }

    #[test]
    fn hedge_settings() {
        let gateway =
            |f: &[(&'static str, &str)], e: &[(&str, &str)]| gateway_config(f, e).map(|g| g.hedge);
        // On, adaptive, 5%, demoting, unless told.
        assert_eq!(gateway(&[], &[]).unwrap(), HedgeConfig::default());
        assert!(HedgeConfig::default().on && HedgeConfig::default().demote_slow_nodes);
        let h = gateway(
            &[("hedge-delay-ms", "25"), ("hedge-max-share", "0.1")],
            &[
                ("MISHARDS_HEDGE", "false"),
                ("MISHARDS_DEMOTE_SLOW_NODES", "off"),
            ],
        )
        .unwrap();
        assert_eq!(
            h,
            HedgeConfig {
                on: false,
                delay: Some(std::time::Duration::from_millis(25)),
                max_share: 0.1,
                demote_slow_nodes: false,
            }
        );
        for (flag, value, key) in [
            ("hedge-max-share", "0", "hedge_max_share"),
            ("hedge-max-share", "1.5", "hedge_max_share"),
            ("hedge-delay-ms", "0", "hedge_delay_ms"),
        ] {
            let err = gateway(&[(flag, value)], &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
        // The demo takes the same settings; the node does not.
        let s =
            Settings::resolve(Scope::Demo, &flags(&[("hedge", "false")]), &env(&[]), None).unwrap();
        assert!(!DemoConfig::from_settings(&s).unwrap().hedge.on);
        assert!(specs_for(Scope::Node).all(|spec| !spec.key.contains("hedge")));
    }

    #[test]
    fn node_addresses() {
        assert_eq!(
            NodeAddr::parse("tcp://h:1", 2).unwrap(),
            NodeAddr {
                host: "h".into(),
                port: 1
            }
        );
        assert_eq!(NodeAddr::parse("h", 2).unwrap().port, 2);
        assert_eq!(
            NodeAddr::parse("[::1]:5", 2).unwrap().endpoint(),
            "http://[::1]:5"
        );
        assert!(NodeAddr::parse("h:x", 2).is_err());
        assert!(NodeAddr::parse("", 2).is_err());
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC"), Ok(Some(0)));
        assert_eq!(parse_timezone("local"), Ok(None));
        assert_eq!(parse_timezone("-05:30"), Ok(Some(-(5 * 3600 + 1800))));
        assert_eq!(parse_timezone("UTC+8"), Ok(Some(8 * 3600)));
        assert_eq!(parse_timezone("GMT-3"), Ok(Some(-3 * 3600)));
        assert_eq!(parse_timezone("+0530"), Ok(Some(5 * 3600 + 1800)));
        for utc in ["Etc/UTC", "etc/utc", "Z", "GMT", "Universal", "Etc/GMT+0"] {
            assert_eq!(parse_timezone(utc), Ok(Some(0)), "{utc}");
        }
        // The IANA `Etc` zones count hours with the POSIX sign: Etc/GMT-8 is UTC+08:00.
        assert_eq!(parse_timezone("Etc/GMT-8"), Ok(Some(8 * 3600)));
        assert_eq!(parse_timezone("Etc/GMT+5"), Ok(Some(-5 * 3600)));
        let err = parse_timezone("Asia/Shanghai").unwrap_err();
        assert!(
            err.contains("+08:00") && err.contains("Asia/Shanghai"),
            "{err}"
        );
        for bad in [
            "+",
            "+15",
            "+14:30",
            "+1:60",
            "+123",
            "8",
            "CET",
            "+1é2",
            "+é",
            "Etc/GMT+5:30",
            "Etc/GMTx",
            "UTC+",
            "+08:00:00",
        ] {
            assert!(parse_timezone(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn fault_injection_is_off_unless_enabled_with_a_token_which_config_check_hides() {
        let gateway = |f: &[(&'static str, &str)], e: &[(&str, &str)]| {
            let mut all = vec![("woserver", "w"), ("meta-uri", "sqlite::memory:")];
            all.extend_from_slice(f);
            let s = Settings::resolve(Scope::Gateway, &flags(&all), &env(e), None)?;
            GatewayConfig::from_settings(&s).map(|g| (g.faults, s.render()))
        };
        let (off, _) = gateway(&[], &[("MISHARDS_FAULT_TOKEN", "0123456789abcdef")]).unwrap();
        assert_eq!(off, FaultConfig::default(), "a token alone enables nothing");
        let err = gateway(&[("enable-fault-injection", "true")], &[]).unwrap_err();
        assert!(err.to_string().contains("MISHARDS_FAULT_TOKEN"), "{err}");
        let err = gateway(
            &[],
            &[
                ("MISHARDS_ENABLE_FAULT_INJECTION", "1"),
                ("MISHARDS_FAULT_TOKEN", "abc"),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("`fault_token`"), "{err}");
        let (on, rendered) = gateway(
            &[("enable-fault-injection", "true"), ("fault-seed", "42")],
            &[("MISHARDS_FAULT_TOKEN", "0123456789abcdef-secret")],
        )
        .unwrap();
        assert!(on.enabled);
        assert_eq!(on.seed, Some(42));
        assert_eq!(on.token.as_deref(), Some("0123456789abcdef-secret"));
        assert!(!rendered.contains("secret"), "{rendered}");
        assert!(
            rendered.contains("fault_token = \"***\"  # env MISHARDS_FAULT_TOKEN"),
            "{rendered}"
        );
        assert!(rendered.contains("# fault_seed =") || rendered.contains("fault_seed = 42"));
        let err = gateway(&[("fault-seed", "-1")], &[]).unwrap_err();
        assert!(err.to_string().contains("`fault_seed`"), "{err}");
    }

    #[test]
    fn tracing_sampler_params_are_checked() {
        let e = env(&[
            ("TRACING_SAMPLER_TYPE", "const"),
            ("TRACING_SAMPLER_PARAM", "0.5"),
        ]);
        let s = Settings::resolve(Scope::Node, &flags(&[("role", "rw")]), &e, None).unwrap();
        assert!(
            NodeConfig::from_settings(&s)
                .unwrap_err()
                .to_string()
                .contains("tracing_sampler_param")
        );
    }
}
