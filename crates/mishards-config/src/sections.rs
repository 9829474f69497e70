//! The sections several roles' configs share: logs, tracing, the admin listener, hedging and fault
//! injection. Each is built from [`Settings`] and checks what one setting's kind cannot.

use std::fmt;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::settings::{SECRET_MASK, Settings};
use crate::specs::DEFAULT_ADMIN_PORT;
use crate::timezone::{TimeZone, parse_timezone};

/// Log settings shared by all subcommands.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub debug: bool,
    pub filter: Option<String>,
    pub path: Option<PathBuf>,
    pub name: String,
    /// The zone of log timestamps: each line carries the zone's offset at its instant, daylight saving
    /// included.
    pub timezone: TimeZone,
}

impl LogConfig {
    pub fn from_settings(s: &Settings) -> Result<LogConfig, ConfigError> {
        Ok(LogConfig {
            debug: s.flag("debug"),
            filter: s.text("log_filter").map(str::to_string),
            path: s.path("log_path"),
            name: s.text("log_name").unwrap_or("logfile").to_string(),
            timezone: parse_timezone(s.text("timezone").unwrap_or("UTC"))
                .map_err(|reason| s.invalid("timezone", reason))?,
        })
    }
}

/// The nodes' service name in traces unless TRACING_SERVICE_NAME says otherwise.
pub const DEFAULT_NODE_SERVICE_NAME: &str = "mishards-node";

/// Jaeger's own OTLP/gRPC port on this machine.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4317";

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

/// Where Jaeger all-in-one serves its UI.
pub const DEFAULT_CONSOLE_JAEGER_URL: &str = "http://127.0.0.1:16686";

/// `console_jaeger_url`: an http(s) URL, its trailing `/` dropped; empty turns the links off.
fn jaeger_url(s: &Settings) -> Result<Option<String>, ConfigError> {
    let url = s
        .text("console_jaeger_url")
        .unwrap_or(DEFAULT_CONSOLE_JAEGER_URL)
        .trim()
        .trim_end_matches('/');
    if url.is_empty() {
        return Ok(None);
    }
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok
        || url
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>')
    {
        return Err(s.invalid(
            "console_jaeger_url",
            format!("`{url}` is not an http:// or https:// URL"),
        ));
    }
    Ok(Some(url.to_string()))
}

/// A node's admin HTTP listener (`admin_host`, `admin_port`): its liveness, readiness and metrics
/// probe. Off unless `admin_port` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
}

impl ProbeConfig {
    /// `None` when `admin_port` is `off` (the node's default).
    pub fn from_settings(s: &Settings) -> Result<Option<ProbeConfig>, ConfigError> {
        let Some(port) = s.port_or_off("admin_port") else {
            return Ok(None);
        };
        let host = s.text("admin_host").unwrap_or("127.0.0.1").trim();
        if host.is_empty() {
            return Err(s.invalid("admin_host", "empty address"));
        }
        Ok(Some(ProbeConfig {
            host: host.to_string(),
            port,
        }))
    }
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
    /// The Jaeger UI's base URL, without a trailing `/`, for the console's trace links (`None`: none).
    pub console_jaeger_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            host: "127.0.0.1".into(),
            port: Some(DEFAULT_ADMIN_PORT),
            inspect_keep: 256,
            slow_query: std::time::Duration::from_millis(1000),
            console_jaeger_url: Some(DEFAULT_CONSOLE_JAEGER_URL.into()),
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
            console_jaeger_url: jaeger_url(s)?,
        })
    }
}

/// What the gateway grants its clients (gateway and demo): `set_config`, and the resources one client
/// and all of them may hold on the gRPC port.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// Relay `Cmd("set_config …")` to the write node (else refuse it).
    pub allow_set_config: bool,
    /// Most HTTP/2 streams (requests) one connection may have open.
    pub max_concurrent_streams: u32,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Ping each connection this often…
    pub keepalive_interval: std::time::Duration,
    /// …and close it when a ping goes unanswered this long.
    pub keepalive_timeout: std::time::Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            allow_set_config: true,
            max_concurrent_streams: 1024,
            max_connections: 10_000,
            keepalive_interval: std::time::Duration::from_secs(20),
            keepalive_timeout: std::time::Duration::from_secs(20),
        }
    }
}

impl ClientLimits {
    pub fn from_settings(s: &Settings) -> Result<ClientLimits, ConfigError> {
        let defaults = ClientLimits::default();
        let streams = s
            .int("max_concurrent_streams")
            .unwrap_or(u64::from(defaults.max_concurrent_streams));
        if !(1..=65_536).contains(&streams) {
            return Err(s.invalid(
                "max_concurrent_streams",
                format!("{streams} streams: choose 1 to 65536"),
            ));
        }
        let connections = s
            .int("max_connections")
            .unwrap_or(defaults.max_connections as u64);
        if !(1..=1_000_000).contains(&connections) {
            return Err(s.invalid(
                "max_connections",
                format!("{connections} connections: choose 1 to 1000000"),
            ));
        }
        let seconds = |key: &'static str, default: std::time::Duration| {
            let value = s.number(key).unwrap_or(default.as_secs_f64());
            if !(0.01..=3600.0).contains(&value) {
                return Err(s.invalid(key, format!("{value} seconds: choose 0.01 to 3600")));
            }
            Ok(std::time::Duration::from_secs_f64(value))
        };
        Ok(ClientLimits {
            allow_set_config: s.flag("allow_client_set_config"),
            max_concurrent_streams: streams as u32,
            max_connections: connections as usize,
            keepalive_interval: seconds("keepalive_interval", defaults.keepalive_interval)?,
            keepalive_timeout: seconds("keepalive_timeout", defaults.keepalive_timeout)?,
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

/// Longest `tls_reload_interval`: a day, as for the other intervals.
const MAX_TLS_RELOAD_SECONDS: f64 = 86_400.0;

/// `tls_reload_interval`: `None` for 0 (never reload).
fn tls_reload_interval(s: &Settings) -> Result<Option<std::time::Duration>, ConfigError> {
    let seconds = s.number("tls_reload_interval").unwrap_or(5.0);
    if !(0.0..=MAX_TLS_RELOAD_SECONDS).contains(&seconds) {
        return Err(s.invalid(
            "tls_reload_interval",
            format!("{seconds} seconds: choose 0 (never reload) to {MAX_TLS_RELOAD_SECONDS}"),
        ));
    }
    Ok((seconds > 0.0).then(|| std::time::Duration::from_secs_f64(seconds)))
}

/// TLS on a role's gRPC port (gateway and node): its certificate, and the CA client certificates
/// must chain to (mutual TLS). Present only when `tls_cert` and `tls_key` are set.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates, when presented (or required), must chain to these CAs.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate; always with `client_ca`.
    pub require_client_cert: bool,
    /// How often the files are checked for changes (`None`: never).
    pub reload_interval: Option<std::time::Duration>,
}

impl ServerTlsConfig {
    /// `None` when the port speaks plain TCP (no certificate configured).
    pub fn from_settings(s: &Settings) -> Result<Option<ServerTlsConfig>, ConfigError> {
        let (cert, key) = (s.path("tls_cert"), s.path("tls_key"));
        let client_ca = s.path("tls_client_ca");
        let require_client_cert = s.flag("tls_require_client_cert");
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(s.invalid("tls_cert", "needs tls_key as well")),
            (None, Some(_)) => return Err(s.invalid("tls_key", "needs tls_cert as well")),
            (None, None) => {
                if client_ca.is_some() {
                    return Err(s.invalid(
                        "tls_client_ca",
                        "client certificates need TLS: set tls_cert and tls_key too",
                    ));
                }
                if require_client_cert {
                    return Err(s.invalid(
                        "tls_require_client_cert",
                        "client certificates need TLS: set tls_cert, tls_key and tls_client_ca",
                    ));
                }
                return Ok(None);
            }
        };
        if require_client_cert && client_ca.is_none() {
            return Err(s.invalid(
                "tls_require_client_cert",
                "needs tls_client_ca, the CA client certificates must chain to",
            ));
        }
        Ok(Some(ServerTlsConfig {
            cert,
            key,
            client_ca,
            require_client_cert,
            reload_interval: tls_reload_interval(s)?,
        }))
    }
}

/// TLS on the gateway's links to its nodes: the CA their certificates chain to, the gateway's own
/// client certificate for nodes that require one, and the name to check. Present only when
/// `node_tls_ca` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTlsConfig {
    pub ca: PathBuf,
    /// The gateway's client certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Checked against every node's certificate instead of the node's own host.
    pub server_name: Option<String>,
    /// How often the files are checked for changes (`None`: never).
    pub reload_interval: Option<std::time::Duration>,
}

impl NodeTlsConfig {
    /// `None` when the gateway reaches its nodes over plain TCP.
    pub fn from_settings(s: &Settings) -> Result<Option<NodeTlsConfig>, ConfigError> {
        let client_cert = match (s.path("node_tls_cert"), s.path("node_tls_key")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(s.invalid("node_tls_cert", "needs node_tls_key as well")),
            (None, Some(_)) => return Err(s.invalid("node_tls_key", "needs node_tls_cert as well")),
            (None, None) => None,
        };
        let server_name = s
            .text("node_tls_server_name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let Some(ca) = s.path("node_tls_ca") else {
            if client_cert.is_some() {
                return Err(s.invalid(
                    "node_tls_cert",
                    "a client certificate needs TLS to the nodes: set node_tls_ca too",
                ));
            }
            if server_name.is_some() {
                return Err(s.invalid(
                    "node_tls_server_name",
                    "a server name needs TLS to the nodes: set node_tls_ca too",
                ));
            }
            return Ok(None);
        };
        Ok(Some(NodeTlsConfig {
            ca,
            client_cert,
            server_name,
            reload_interval: tls_reload_interval(s)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, file, flags, gateway_config};
    use crate::{DemoConfig, GatewayConfig, NodeConfig, Scope, specs_for};

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
        // The console's Jaeger links: Jaeger all-in-one's UI unless told; empty turns them off.
        let jaeger = |f: &[(&'static str, &str)], e: &[(&str, &str)]| {
            gateway(f, e).map(|a| a.console_jaeger_url)
        };
        assert_eq!(
            jaeger(&[], &[]).unwrap().as_deref(),
            Some("http://127.0.0.1:16686")
        );
        assert_eq!(
            jaeger(
                &[],
                &[("MISHARDS_CONSOLE_JAEGER_URL", "https://jaeger.example/ui/")]
            )
            .unwrap()
            .as_deref(),
            Some("https://jaeger.example/ui")
        );
        assert_eq!(jaeger(&[("console-jaeger-url", "")], &[]).unwrap(), None);
        let err = jaeger(&[("console-jaeger-url", "javascript:alert(1)")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`console_jaeger_url`"), "{err}");
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
        // The node's admin listener (its probe) shares the names and is off unless asked for; the
        // gateway's inspection settings are not the node's.
        let node =
            Settings::resolve(Scope::Node, &flags(&[("role", "ro")]), &env(&[]), None).unwrap();
        assert_eq!(ProbeConfig::from_settings(&node).unwrap(), None);
        assert_eq!(node.origin("admin_port"), Some(&crate::Origin::Default));
        assert!(specs_for(Scope::Node).all(|spec| spec.key != "inspect_keep"));
    }

    #[test]
    fn tls_settings() {
        let node = |f: &[(&'static str, &str)]| {
            let mut all = vec![("role", "ro")];
            all.extend_from_slice(f);
            let s = Settings::resolve(Scope::Node, &flags(&all), &env(&[]), None)?;
            NodeConfig::from_settings(&s).map(|n| n.tls)
        };
        // Plain TCP unless a certificate is given.
        assert_eq!(node(&[]).unwrap(), None);
        assert_eq!(gateway_config(&[], &[]).unwrap().node_tls, None);
        let tls = node(&[
            ("tls-cert", "/c.pem"),
            ("tls-key", "/k.pem"),
            ("tls-client-ca", "/ca.pem"),
            ("tls-require-client-cert", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            tls,
            ServerTlsConfig {
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
                client_ca: Some("/ca.pem".into()),
                require_client_cert: true,
                reload_interval: Some(std::time::Duration::from_secs(5)),
            }
        );
        let never = node(&[
            ("tls-cert", "/c.pem"),
            ("tls-key", "/k.pem"),
            ("tls-reload-interval", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(never.reload_interval, None);
        for (f, key) in [
            (&[("tls-cert", "/c.pem")][..], "`tls_cert`"),
            (&[("tls-key", "/k.pem")][..], "`tls_key`"),
            (&[("tls-client-ca", "/ca.pem")][..], "`tls_client_ca`"),
            (
                &[("tls-require-client-cert", "true")][..],
                "`tls_require_client_cert`",
            ),
            (
                &[
                    ("tls-cert", "/c.pem"),
                    ("tls-key", "/k.pem"),
                    ("tls-require-client-cert", "true"),
                ][..],
                "`tls_require_client_cert`",
            ),
            (
                &[
                    ("tls-cert", "/c.pem"),
                    ("tls-key", "/k.pem"),
                    ("tls-reload-interval", "-1"),
                ][..],
                "`tls_reload_interval`",
            ),
        ] {
            let err = node(f).unwrap_err().to_string();
            assert!(err.contains(key), "{f:?}: {err}");
        }
        let links = gateway_config(
            &[
                ("node-tls-ca", "/ca.pem"),
                ("node-tls-cert", "/g.pem"),
                ("node-tls-key", "/g.key"),
                ("node-tls-server-name", "nodes.internal"),
            ],
            &[],
        )
        .unwrap()
        .node_tls
        .unwrap();
        assert_eq!(
            links,
            NodeTlsConfig {
                ca: "/ca.pem".into(),
                client_cert: Some(("/g.pem".into(), "/g.key".into())),
                server_name: Some("nodes.internal".into()),
                reload_interval: Some(std::time::Duration::from_secs(5)),
            }
        );
        // From the environment, as a container would set them.
        let g = gateway_config(
            &[],
            &[
                ("MISHARDS_TLS_CERT", "/c.pem"),
                ("MISHARDS_TLS_KEY", "/k.pem"),
                ("MISHARDS_NODE_TLS_CA", "/ca.pem"),
            ],
        )
        .unwrap();
        assert_eq!(g.tls.unwrap().cert, PathBuf::from("/c.pem"));
        assert_eq!(g.node_tls.unwrap().client_cert, None);
        for (f, key) in [
            (
                &[("node-tls-cert", "/g.pem"), ("node-tls-key", "/g.key")][..],
                "`node_tls_cert`",
            ),
            (
                &[("node-tls-ca", "/ca.pem"), ("node-tls-key", "/g.key")][..],
                "`node_tls_key`",
            ),
            (
                &[("node-tls-server-name", "x")][..],
                "`node_tls_server_name`",
            ),
        ] {
            let err = gateway_config(f, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{f:?}: {err}");
        }
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
