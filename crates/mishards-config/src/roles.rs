//! The config of each role (`mishards gateway`, `node` and `demo`): everything its subcommand needs,
//! built from [`Settings`] with the checks that span several settings.

use std::path::{Path, PathBuf};

use mishards_meta::{MetaError, MetaUri, SecretUri};

use crate::discovery::DiscoveryConfig;
use crate::error::ConfigError;
use crate::node_addr::NodeAddr;
use crate::sections::{
    AdminConfig, ClientLimits, DEFAULT_NODE_SERVICE_NAME, FaultConfig, HedgeConfig, LogConfig,
    NodeTlsConfig, ProbeConfig, ServerTlsConfig, TracingConfig,
};
use crate::settings::Settings;
use crate::specs::DEFAULT_PORT;

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

/// How segments are placed on read nodes (`router_class_name`).
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
    /// TLS on the client port (`None`: plain TCP).
    pub tls: Option<ServerTlsConfig>,
    /// TLS on the links to the nodes (`None`: plain TCP).
    pub node_tls: Option<NodeTlsConfig>,
    /// `woserver`; `None` only when discovery finds the write node (`discovery.finds_write_node()`).
    pub write_node: Option<NodeAddr>,
    /// Masked in `Debug`: a config may be printed or logged.
    pub meta_uri: SecretUri,
    pub sql_echo: bool,
    pub discovery: DiscoveryConfig,
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
    /// `set_config` from clients, and the resources clients may hold.
    pub clients: ClientLimits,
    pub faults: FaultConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

impl GatewayConfig {
    pub fn from_settings(s: &Settings) -> Result<GatewayConfig, ConfigError> {
        warn_inert(s);
        let mut discovery = DiscoveryConfig::from_settings(s)?;
        // WOSERVER wins; without it the write node must come from discovery.
        let write_node = match s.text("woserver").filter(|w| !w.trim().is_empty()) {
            Some(w) => {
                Some(NodeAddr::parse(w, DEFAULT_PORT).map_err(|r| s.invalid("woserver", r))?)
            }
            None if discovery.finds_write_node() => None,
            None => {
                return Err(ConfigError::Missing {
                    key: "woserver",
                    flag: "woserver",
                    env: "WOSERVER",
                });
            }
        };
        if write_node.is_some()
            && let Some(k) = discovery.kubernetes.as_mut()
            && k.write_label_selector.take().is_some()
        {
            tracing::info!(
                "WOSERVER names the write node: the write-node label selector is not used"
            );
        }
        let router = match s.text("router_class_name") {
            Some("FileBasedHashRingRouter") => RouterKind::HashRing,
            _ => RouterKind::Rendezvous,
        };
        let max_retry = u32::try_from(s.int("max_retry").unwrap_or(3))
            .map_err(|_| s.invalid("max_retry", "too large"))?;
        let meta_uri = SecretUri::new(s.required_text("sqlalchemy_database_uri")?);
        check_meta_uri(s, meta_uri.expose(), None)?;
        Ok(GatewayConfig {
            host: s.text("host").unwrap_or("0.0.0.0").to_string(),
            port: s.port("server_port"),
            tls: ServerTlsConfig::from_settings(s)?,
            node_tls: NodeTlsConfig::from_settings(s)?,
            write_node,
            meta_uri,
            sql_echo: s.flag("sql_echo"),
            discovery,
            router,
            max_retry,
            node_timeout: seconds(s, "node_timeout", 10.0)?,
            meta_poll_interval: seconds(s, "meta_poll_interval", 1.0)?,
            version_gate: s.text("version_gate").unwrap_or("1.1.").to_string(),
            version: s.text("node_version").unwrap_or("1.1.1").to_string(),
            admin: AdminConfig::from_settings(s)?,
            hedge: HedgeConfig::from_settings(s)?,
            search_batch: search_batch(s)?,
            clients: ClientLimits::from_settings(s)?,
            faults: FaultConfig::from_settings(s)?,
            log: LogConfig::from_settings(s)?,
            tracing: TracingConfig::from_settings(s, "mishards")?,
        })
    }
}

/// A node's part in the cluster (`role`).
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
    /// TLS on the gRPC port (`None`: plain TCP).
    pub tls: Option<ServerTlsConfig>,
    pub storage: PathBuf,
    /// `None`: `meta.sqlite` inside `storage`. Masked in `Debug`.
    pub meta_uri: Option<SecretUri>,
    pub sql_echo: bool,
    pub version: String,
    pub auto_flush_interval: std::time::Duration,
    pub gc_grace: std::time::Duration,
    pub cache_bytes: usize,
    pub index_build_rows: i64,
    /// `wal.recovery_error_ignore`: skip damaged write-ahead log records instead of refusing to start.
    pub wal_recovery_error_ignore: bool,
    /// The HTTP probe listener (`/healthz`, `/readyz`, `/metrics`); `None`: off.
    pub probe: Option<ProbeConfig>,
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
            .map(SecretUri::new);
        if let Some(uri) = &meta_uri {
            check_meta_uri(s, uri.expose(), Some(&storage))?;
        }
        Ok(NodeConfig {
            role,
            host: s.text("host").unwrap_or("0.0.0.0").to_string(),
            port: s.port("server_port"),
            tls: ServerTlsConfig::from_settings(s)?,
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
            wal_recovery_error_ignore: s.flag("wal_recovery_error_ignore"),
            probe: ProbeConfig::from_settings(s)?,
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
    /// TLS on the gateway's client port; the nodes behind it, in this process on loopback, stay plain.
    pub tls: Option<ServerTlsConfig>,
    pub data_dir: PathBuf,
    pub readers: u32,
    pub sql_echo: bool,
    pub admin: AdminConfig,
    pub hedge: HedgeConfig,
    pub search_batch: usize,
    pub clients: ClientLimits,
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
            tls: ServerTlsConfig::from_settings(s)?,
            data_dir: s
                .path("data_dir")
                .unwrap_or_else(|| PathBuf::from("./mishards-data")),
            readers: readers as u32,
            sql_echo: s.flag("sql_echo"),
            admin: AdminConfig::from_settings(s)?,
            hedge: HedgeConfig::from_settings(s)?,
            search_batch: search_batch(s)?,
            clients: ClientLimits::from_settings(s)?,
            log: LogConfig::from_settings(s)?,
            tracing: TracingConfig::from_settings(s, "mishards")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, flags, gateway_config};
    use crate::{DEFAULT_OTLP_ENDPOINT, Scope, TimeZone, specs_for};

    /// A password with `/`, `@` and `:` in it, percent-encoded and not.
    const SECRET_URIS: [&str; 2] = [
        "mysql://user:p%40ss:w/rd@db:3306/milvus",
        "mysql+pymysql://user:p@ss:w/rd@db:3306/milvus?charset=utf8mb4",
    ];

    fn assert_no_password(shown: &str) {
        for piece in ["p%40ss", "p@ss", "ss:w", "w/rd", "rd@"] {
            assert!(!shown.contains(piece), "`{piece}` shown in {shown}");
        }
        assert!(shown.contains("user:***@db"), "{shown}");
    }

    #[test]
    fn configs_holding_a_metadata_uri_never_show_its_password() {
        for uri in SECRET_URIS {
            let e = env(&[("WOSERVER", "w:1"), ("SQLALCHEMY_DATABASE_URI", uri)]);
            let s = Settings::resolve(Scope::Gateway, &flags(&[]), &e, None).unwrap();
            assert_no_password(&format!("{s:?}"));
            assert_no_password(&s.render());
            let g = GatewayConfig::from_settings(&s).unwrap();
            assert_eq!(g.meta_uri.expose(), uri);
            assert_no_password(&format!("{g:?}"));
            assert_no_password(&format!("{g:#?}"));
            assert_no_password(&g.meta_uri.to_string());
            let s = Settings::resolve(
                Scope::Node,
                &flags(&[("role", "rw"), ("meta-uri", uri)]),
                &env(&[]),
                None,
            )
            .unwrap();
            assert_no_password(&format!("{s:?}"));
            assert_no_password(&s.render());
            let n = NodeConfig::from_settings(&s).unwrap();
            assert_no_password(&format!("{n:?}"));
            assert_no_password(&format!("{n:#?}"));
        }
    }

    #[test]
    fn client_limits_settings() {
        let g = gateway_config(&[], &[]).unwrap();
        assert_eq!(g.clients, ClientLimits::default());
        assert!(g.clients.allow_set_config);
        assert_eq!(g.clients.max_concurrent_streams, 1024);
        let g = gateway_config(
            &[
                ("allow-client-set-config", "false"),
                ("max-concurrent-streams", "8"),
                ("keepalive-interval", "0.5"),
            ],
            &[
                ("MISHARDS_MAX_CONNECTIONS", "3"),
                ("MISHARDS_KEEPALIVE_TIMEOUT", "2"),
            ],
        )
        .unwrap();
        assert_eq!(
            g.clients,
            ClientLimits {
                allow_set_config: false,
                max_concurrent_streams: 8,
                max_connections: 3,
                keepalive_interval: std::time::Duration::from_millis(500),
                keepalive_timeout: std::time::Duration::from_secs(2),
            }
        );
        for (flag, value) in [
            ("max-concurrent-streams", "0"),
            ("max-connections", "0"),
            ("keepalive-interval", "0"),
            ("keepalive-timeout", "7200"),
        ] {
            let err = gateway_config(&[(flag, value)], &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("choose"), "{flag}: {err}");
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
            Some(NodeAddr {
                host: "127.0.0.1".into(),
                port: 19530
            })
        );
        assert_eq!(
            g.discovery.static_hosts,
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
        assert_eq!(
            g.log.timezone,
            TimeZone::fixed(jiff::tz::offset(8)),
            "TIMEZONE=+08:00"
        );
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
        assert_eq!(
            n.probe, None,
            "a node's admin listener is off unless asked for"
        );
        let s = Settings::resolve(
            Scope::Node,
            &flags(&[("role", "rw")]),
            &env(&[("ADMIN_PORT", "19121"), ("ADMIN_HOST", "0.0.0.0")]),
            None,
        )
        .unwrap();
        assert_eq!(
            NodeConfig::from_settings(&s).unwrap().probe,
            Some(ProbeConfig {
                host: "0.0.0.0".into(),
                port: 19121
            })
        );
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), None).unwrap();
        assert_eq!(s.int("admin_port"), Some(19121), "the gateway's stays on");
        let s =
            Settings::resolve(Scope::Demo, &flags(&[("readers", "0")]), &env(&[]), None).unwrap();
        assert!(
            DemoConfig::from_settings(&s)
                .unwrap_err()
                .to_string()
                .contains("readers")
        );
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
}
