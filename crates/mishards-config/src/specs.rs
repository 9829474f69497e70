//! The settings table: every setting of every subcommand, described once (file key, environment names,
//! flag, type, default, help). The CLI builds its flags from it, `config check` prints from it, and
//! [`Settings::resolve`](crate::Settings::resolve) parses each layer by it.
//!
//! This file is longer than the crate's others on purpose: the table is one list, in the order `--help`
//! and `config check` print it, and splitting it by scope would scatter the settings that several
//! subcommands share.

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
const GATEWAY_NODE_DEMO: &[Scope] = &[Scope::Gateway, Scope::Node, Scope::Demo];

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
    /// A time zone as [`parse_timezone`](crate::parse_timezone) reads it; kept as text.
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
    /// A different default for some scopes (the node's admin listener is off unless asked for).
    pub scope_defaults: &'static [(Scope, &'static str)],
    pub help: &'static str,
}

impl Spec {
    /// The default this setting has for `scope`.
    pub fn default_for(&self, scope: Scope) -> Option<&'static str> {
        self.scope_defaults
            .iter()
            .find(|(s, _)| *s == scope)
            .map(|(_, d)| *d)
            .or(self.default)
    }
}

macro_rules! spec {
    ($key:literal, [$($env:literal),*], $flag:literal, $kind:expr, $default:expr, $scopes:expr, $help:literal) => {
        Spec { key: $key, env: &[$($env),*], flag: $flag, kind: $kind, default: $default, secret: false,
               scopes: $scopes, scope_defaults: &[], help: $help }
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
        "tls_cert",
        ["MISHARDS_TLS_CERT"],
        "tls-cert",
        Kind::Path,
        None,
        ALL,
        "PEM certificate chain of the gRPC port; with tls_key the port speaks TLS only (unset: plain TCP)"
    ),
    spec!(
        "tls_key",
        ["MISHARDS_TLS_KEY"],
        "tls-key",
        Kind::Path,
        None,
        ALL,
        "PEM private key of tls_cert (PKCS#8, PKCS#1 or SEC1)"
    ),
    spec!(
        "tls_client_ca",
        ["MISHARDS_TLS_CLIENT_CA"],
        "tls-client-ca",
        Kind::Path,
        None,
        ALL,
        "PEM CA certificates that client certificates must chain to (a client presenting another is refused)"
    ),
    spec!(
        "tls_require_client_cert",
        ["MISHARDS_TLS_REQUIRE_CLIENT_CERT"],
        "tls-require-client-cert",
        Kind::Bool,
        Some("false"),
        ALL,
        "mutual TLS: refuse clients without a certificate signed by tls_client_ca"
    ),
    spec!(
        "tls_reload_interval",
        ["MISHARDS_TLS_RELOAD_INTERVAL"],
        "tls-reload-interval",
        Kind::Number,
        Some("5"),
        ALL,
        "seconds between checks of the certificate, key and CA files; changed files apply to new connections (0: never reload)"
    ),
    spec!(
        "node_tls_ca",
        ["MISHARDS_NODE_TLS_CA"],
        "node-tls-ca",
        Kind::Path,
        None,
        GATEWAY,
        "PEM CA certificates the nodes' certificates chain to; setting it makes the gateway reach every node over TLS"
    ),
    spec!(
        "node_tls_cert",
        ["MISHARDS_NODE_TLS_CERT"],
        "node-tls-cert",
        Kind::Path,
        None,
        GATEWAY,
        "PEM client certificate chain the gateway shows nodes that require client certificates"
    ),
    spec!(
        "node_tls_key",
        ["MISHARDS_NODE_TLS_KEY"],
        "node-tls-key",
        Kind::Path,
        None,
        GATEWAY,
        "PEM private key of node_tls_cert"
    ),
    spec!(
        "node_tls_server_name",
        ["MISHARDS_NODE_TLS_SERVER_NAME"],
        "node-tls-server-name",
        Kind::Text,
        None,
        GATEWAY,
        "name every node's certificate is checked against (unset: each node's own host name or IP address)"
    ),
    spec!(
        "woserver",
        ["WOSERVER"],
        "woserver",
        Kind::Text,
        None,
        GATEWAY,
        "the write node, tcp://host:port or host:port; with kubernetes discovery and a write label selector it may be left out, and it wins when set"
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
        "how read nodes are found: static (DISCOVERY_STATIC_HOSTS, DNS names allowed), file (a hosts file re-read on change) or kubernetes (the namespace's matching pods, listed then watched through the Kubernetes API)"
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
        "port of static hosts that name none, and of kubernetes pods whose containers name no port milvus or grpc"
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
        "kubernetes discovery: the pods' namespace (unset: the service account's namespace in the cluster, the kubeconfig context's outside it, else default)"
    ),
    spec!(
        "discovery_kubernetes_in_cluster",
        ["DISCOVERY_KUBERNETES_IN_CLUSTER"],
        "kubernetes-in-cluster",
        Kind::Bool,
        Some("false"),
        GATEWAY,
        "kubernetes discovery: use the pod's service account (true) instead of a kubeconfig (KUBECONFIG, then ~/.kube/config; http:// API servers work)"
    ),
    spec!(
        "discovery_kubernetes_poll_interval",
        ["DISCOVERY_KUBERNETES_POLL_INTERVAL"],
        "kubernetes-poll-interval",
        Kind::Count,
        Some("5"),
        GATEWAY,
        "kubernetes discovery: seconds between full re-lists of the pods (the watch applies changes at once; this bounds how long a missed change or an outage's end can go unseen)"
    ),
    spec!(
        "discovery_kubernetes_pod_patt",
        ["DISCOVERY_KUBERNETES_POD_PATT"],
        "kubernetes-pod-patt",
        Kind::Text,
        None,
        GATEWAY,
        "kubernetes discovery: regular expression a read node's pod name must match from its start (unset: any name)"
    ),
    spec!(
        "discovery_kubernetes_label_selector",
        ["DISCOVERY_KUBERNETES_LABEL_SELECTOR"],
        "kubernetes-label-selector",
        Kind::Text,
        None,
        GATEWAY,
        "kubernetes discovery: label selector of the read nodes' pods, e.g. tier=ro-servers (unset: every pod of the namespace)"
    ),
    spec!(
        "discovery_kubernetes_write_label_selector",
        ["DISCOVERY_KUBERNETES_WRITE_LABEL_SELECTOR"],
        "kubernetes-write-label-selector",
        Kind::Text,
        None,
        GATEWAY,
        "kubernetes discovery: label selector of the write node's pod, e.g. tier=rw-server; the write node is then found like the read nodes (WOSERVER, when set, wins)"
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
        GATEWAY_NODE_DEMO,
        "address the admin HTTP listener binds (loopback unless told: it shows requests and cluster state; a Kubernetes probe needs 0.0.0.0)"
    ),
    Spec {
        scope_defaults: &[(Scope::Node, OFF)],
        ..spec!(
            "admin_port",
            ["ADMIN_PORT"],
            "admin-port",
            Kind::PortOrOff,
            Some("19121"),
            GATEWAY_NODE_DEMO,
            "port of the admin HTTP listener (gateway: /requests, /slow, /cluster, /metrics, /healthz, /readyz; node: /healthz, /readyz, /metrics); off: no listener (the node's default); 0 picks a free port"
        )
    },
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
        "console_jaeger_url",
        ["MISHARDS_CONSOLE_JAEGER_URL"],
        "console-jaeger-url",
        Kind::Text,
        Some("http://127.0.0.1:16686"),
        GATEWAY_DEMO,
        "base URL of the Jaeger UI the console links each search's trace to (with tracing on); empty: no links"
    ),
    spec!(
        "allow_client_set_config",
        ["MISHARDS_ALLOW_CLIENT_SET_CONFIG"],
        "allow-client-set-config",
        Kind::Bool,
        Some("true"),
        GATEWAY_DEMO,
        "relay clients' Cmd(\"set_config …\") to the write node; false refuses it with PERMISSION_DENIED (get_config still works), so an anonymous client cannot change the write node's settings"
    ),
    spec!(
        "max_concurrent_streams",
        ["MISHARDS_MAX_CONCURRENT_STREAMS"],
        "max-concurrent-streams",
        Kind::Count,
        Some("1024"),
        GATEWAY_DEMO,
        "most requests one client connection may have open at once (HTTP/2 streams; 1 to 65536)"
    ),
    spec!(
        "max_connections",
        ["MISHARDS_MAX_CONNECTIONS"],
        "max-connections",
        Kind::Count,
        Some("10000"),
        GATEWAY_DEMO,
        "most client connections the gRPC port keeps open; one past it is closed at once (1 to 1000000)"
    ),
    spec!(
        "keepalive_interval",
        ["MISHARDS_KEEPALIVE_INTERVAL"],
        "keepalive-interval",
        Kind::Number,
        Some("20"),
        GATEWAY_DEMO,
        "seconds between the HTTP/2 pings the gateway sends on each client connection"
    ),
    spec!(
        "keepalive_timeout",
        ["MISHARDS_KEEPALIVE_TIMEOUT"],
        "keepalive-timeout",
        Kind::Number,
        Some("20"),
        GATEWAY_DEMO,
        "seconds a client has to answer a ping before its connection is closed (a dead or stuck client's connection goes within interval + timeout)"
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
        "wal_recovery_error_ignore",
        ["MISHARDS_WAL_RECOVERY_ERROR_IGNORE"],
        "wal-recovery-error-ignore",
        Kind::Bool,
        Some("false"),
        NODE,
        "Milvus's wal.recovery_error_ignore: start a write node whose write-ahead log is damaged (not merely torn by a crash) by skipping the damaged records, which are lost; off: refuse to start, naming the file and offset"
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
        "time zone of log timestamps: UTC, local, an offset from UTC like +08:00 or UTC+8, Etc/GMT-8, or a region like Asia/Shanghai or Europe/Berlin (daylight saving followed)"
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

pub(crate) fn spec_by_key(key: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| {
        s.key.eq_ignore_ascii_case(key) || s.env.iter().any(|e| e.eq_ignore_ascii_case(key))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::parse_value;

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
            for default in spec
                .default
                .iter()
                .chain(spec.scope_defaults.iter().map(|(_, d)| d))
            {
                parse_value(spec, default)
                    .unwrap_or_else(|e| panic!("default of {}: {e}", spec.key));
            }
            for (scope, _) in spec.scope_defaults {
                assert!(spec.scopes.contains(scope), "{}: {scope:?}", spec.key);
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
}
