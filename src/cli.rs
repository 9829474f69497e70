//! The command line: `mishards gateway | node | demo | inspect | config check`. Every setting's flag,
//! help, env name and default come from `config::SPECS`, so `--help` lists exactly what the config layer
//! accepts.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{
    self, ConfigError, DemoConfig, DiscoveryKind, GatewayConfig, Kind, NodeAddr, NodeConfig, Role,
    RouterKind, Scope, Settings, Source,
};
use crate::meta::MetaError;
use crate::telemetry::{self, Component, Export, TelemetryError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Help, version or a usage mistake: clap prints it and picks the exit code.
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// `mishards inspect` could not show the request.
    #[error("{0}")]
    Inspect(String),
}

const ABOUT: &str = "A Milvus 1.1-compatible vector-search cluster: a gateway that routes, scatters and gathers \
searches across read nodes, and the write and read nodes behind it.";

/// Where `mishards inspect` looks for the admin listener unless told.
const DEFAULT_ADMIN: &str = "127.0.0.1:19121";

/// How long `mishards inspect` waits for the admin listener.
const INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const SETTINGS_NOTE: &str = "Each setting is taken from its flag, else its environment variable, else the \
--config TOML file (key = the name in `mishards config check`), else its default.";

/// The full command tree.
pub fn command() -> Command {
    let config_flag = Arg::new("config")
        .long("config")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("TOML file with settings (see config/*.toml) [env: MISHARDS_CONFIG]");
    let scoped = |scope: Scope, about: &'static str| {
        Command::new(scope.name())
            .about(about)
            .after_help(SETTINGS_NOTE)
            .arg(config_flag.clone())
            .args(config::specs_for(scope).map(setting_arg))
    };
    Command::new("mishards")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(scoped(
            Scope::Gateway,
            "Run the cluster gateway: Milvus 1.1 gRPC on SERVER_PORT in front of one write node and the read nodes",
        ))
        .subcommand(scoped(Scope::Node, "Run a Milvus 1.1-compatible data node: --role rw (writer) or ro (reader)"))
        .subcommand(scoped(
            Scope::Demo,
            "Run gateway, one write node and N read nodes in one process, on SQLite and a local folder",
        ))
        .subcommand(
            Command::new("inspect")
                .about("Show what one search did (plan, nodes, attempts, timings), from a running gateway's admin listener")
                .arg(
                    Arg::new("trace_id")
                        .value_name("TRACE_ID")
                        .required(true)
                        .help("the search's trace id: 32 hex digits, as in the gateway's logs, /requests and /slow"),
                )
                .arg(
                    Arg::new("admin")
                        .long("admin")
                        .value_name("HOST:PORT")
                        .default_value(DEFAULT_ADMIN)
                        .help("the gateway's admin listener (its --admin-host and --admin-port)"),
                ),
        )
        .subcommand(
            Command::new("config").about("Inspect configuration").subcommand_required(true).subcommand(
                Command::new("check")
                    .about("Print the effective configuration (secrets masked) and check it")
                    .arg(
                        Arg::new("file")
                            .value_name("FILE")
                            .value_parser(clap::value_parser!(PathBuf))
                            .help("TOML file to check together with the environment"),
                    )
                    .arg(
                        Arg::new("for")
                            .long("for")
                            .value_parser(["gateway", "node", "demo"])
                            .help("subcommand whose settings to check [default: the one FILE's keys belong to, else gateway]"),
                    ),
            ),
        )
}

fn setting_arg(spec: &'static config::Spec) -> Arg {
    let mut help = format!("{} [env: {}]", spec.help, spec.env.join(", "));
    match spec.default {
        Some("") | None => {}
        Some(default) => help.push_str(&format!(" [default: {default}]")),
    }
    let arg = Arg::new(spec.key)
        .long(spec.flag)
        .help(help)
        .action(ArgAction::Set);
    match spec.kind {
        Kind::Bool => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_name("BOOL"),
        Kind::OneOf(choices) => arg.value_name(
            choices
                .iter()
                .filter(|c| !c.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("|"),
        ),
        Kind::Port => arg.value_name("PORT").allow_hyphen_values(true),
        Kind::PortOrOff => arg.value_name("PORT|off").allow_hyphen_values(true),
        Kind::Path => arg.value_name("PATH"),
        Kind::List => arg.value_name("LIST"),
        Kind::Count | Kind::Number => arg.value_name("N").allow_hyphen_values(true),
        Kind::Text => arg.value_name("TEXT"),
    }
}

/// The flags given on the command line, by flag name, as text.
fn given_flags(matches: &ArgMatches, scope: Scope) -> HashMap<&'static str, String> {
    config::specs_for(scope)
        .filter(|spec| matches.value_source(spec.key) == Some(ValueSource::CommandLine))
        .filter_map(|spec| {
            matches
                .get_one::<String>(spec.key)
                .map(|v| (spec.flag, v.clone()))
        })
        .collect()
}

fn config_file(matches: &ArgMatches, env: &dyn Source) -> Option<PathBuf> {
    matches.get_one::<PathBuf>("config").cloned().or_else(|| {
        env.get("MISHARDS_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Parses `args` and runs the chosen subcommand. `env` is the environment to read settings from;
/// `out` receives what the command prints for a person.
pub async fn run(
    args: Vec<OsString>,
    env: &dyn Source,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let matches = command().try_get_matches_from(args)?;
    match matches.subcommand() {
        Some(("gateway", m)) => {
            let settings = Settings::resolve(
                Scope::Gateway,
                &given_flags(m, Scope::Gateway),
                env,
                config_file(m, env).as_deref(),
            )?;
            let config = GatewayConfig::from_settings(&settings)?;
            let _telemetry = telemetry::init(
                &config.log,
                &[Export {
                    config: &config.tracing,
                    component: Component::Process,
                }],
            )?;
            telemetry::set_log_payload(config.tracing.log_payload);
            run_gateway(config, out).await
        }
        Some(("node", m)) => {
            let settings = Settings::resolve(
                Scope::Node,
                &given_flags(m, Scope::Node),
                env,
                config_file(m, env).as_deref(),
            )?;
            let config = NodeConfig::from_settings(&settings)?;
            let _telemetry = telemetry::init(
                &config.log,
                &[Export {
                    config: &config.tracing,
                    component: Component::Process,
                }],
            )?;
            telemetry::set_log_payload(config.tracing.log_payload);
            run_node(config, out).await
        }
        Some(("demo", m)) => {
            let settings = Settings::resolve(
                Scope::Demo,
                &given_flags(m, Scope::Demo),
                env,
                config_file(m, env).as_deref(),
            )?;
            let config = DemoConfig::from_settings(&settings)?;
            // One process, two services in the traces: the gateway's spans and the nodes' spans.
            let node_tracing = config::TracingConfig {
                service_name: config::DEFAULT_NODE_SERVICE_NAME.into(),
                ..config.tracing.clone()
            };
            let _telemetry = telemetry::init(
                &config.log,
                &[
                    Export {
                        config: &config.tracing,
                        component: Component::Gateway,
                    },
                    Export {
                        config: &node_tracing,
                        component: Component::Node,
                    },
                ],
            )?;
            telemetry::set_log_payload(config.tracing.log_payload);
            run_demo(config, out).await
        }
        Some(("inspect", m)) => {
            let trace_id = m.get_one::<String>("trace_id").cloned().unwrap_or_default();
            let admin = m
                .get_one::<String>("admin")
                .cloned()
                .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
            inspect(&trace_id, &admin, out).await
        }
        Some(("config", m)) => match m.subcommand() {
            Some(("check", c)) => {
                let file = c.get_one::<PathBuf>("file").map(PathBuf::as_path);
                let scope = match c.get_one::<String>("for").map(String::as_str) {
                    Some("node") => Scope::Node,
                    Some("demo") => Scope::Demo,
                    Some(_) => Scope::Gateway,
                    None => file.map(scope_of_file).unwrap_or(Scope::Gateway),
                };
                config_check(scope, env, file, out)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The subcommand whose settings a file holds: the first scope that accepts every key in it.
fn scope_of_file(path: &Path) -> Scope {
    Scope::ALL
        .into_iter()
        .find(|scope| config::load_file(path, *scope).is_ok())
        .unwrap_or(Scope::Gateway)
}

/// Prints the effective settings of `scope`, then checks them as the subcommand would.
pub fn config_check(
    scope: Scope,
    env: &dyn Source,
    file: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let settings = Settings::resolve(scope, &HashMap::new(), env, file)?;
    out.write_all(settings.render().as_bytes())?;
    match scope {
        Scope::Gateway => GatewayConfig::from_settings(&settings).map(drop),
        Scope::Node => NodeConfig::from_settings(&settings).map(drop),
        Scope::Demo => DemoConfig::from_settings(&settings).map(drop),
    }?;
    writeln!(
        out,
        "# ok: these settings are valid for `mishards {}`",
        scope.name()
    )?;
    Ok(())
}

/// `mishards inspect`: fetches one search's manifest from the admin listener and prints it as a tree.
async fn inspect(trace_id: &str, admin: &str, out: &mut dyn Write) -> Result<(), CliError> {
    use crate::gateway::admin::{AdminClientError, fetch};
    use crate::gateway::inspect::{is_trace_id, render_tree};
    // Also accept the listener's URL as a browser shows it.
    let admin = admin.trim_start_matches("http://").trim_end_matches('/');
    if !is_trace_id(trace_id) {
        return Err(CliError::Inspect(format!(
            "`{trace_id}` is not a trace id: 32 hex digits, as in the gateway's logs, /requests and /slow"
        )));
    }
    let reply = fetch(admin, &format!("/requests/{trace_id}"), INSPECT_TIMEOUT)
        .await
        .map_err(|e| match e {
            AdminClientError::Unreachable { .. } | AdminClientError::Timeout { .. } => {
                CliError::Inspect(format!(
                    "{e}; name the gateway's admin listener with --admin HOST:PORT"
                ))
            }
            AdminClientError::Malformed { .. } => CliError::Inspect(format!(
                "{e}; is {admin} the gateway's admin listener (--admin HOST:PORT)?"
            )),
        })?;
    let body: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
    let said = body
        .as_ref()
        .and_then(|b| b["error"].as_str())
        .unwrap_or(reply.body.trim())
        .to_string();
    match (reply.status, body) {
        (200, Some(manifest)) => {
            out.write_all(render_tree(&manifest).as_bytes())?;
            Ok(())
        }
        (200, None) => Err(CliError::Inspect(format!(
            "the admin listener at {admin} answered something that is not a manifest"
        ))),
        (404, _) => Err(CliError::Inspect(format!(
            "unknown trace id {trace_id} at {admin}: {said}"
        ))),
        (status, _) => Err(CliError::Inspect(format!(
            "the admin listener at {admin} answered {status}: {said}"
        ))),
    }
}

async fn run_gateway(config: GatewayConfig, out: &mut dyn Write) -> Result<(), CliError> {
    let signal = ShutdownSignal::install();
    let gateway = crate::gateway::start(&config, crate::gateway::Tuning::default()).await?;
    writeln!(out, "listening on {}", gateway.addr)?;
    if let Some(admin) = gateway.admin_addr {
        writeln!(out, "admin listening on {admin}")?;
    }
    out.flush()?;
    signal.received().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

/// The embedded cluster: one write node and `readers` read nodes on loopback ports, sharing the data
/// folder and its SQLite metadata, behind a gateway on the configured port.
async fn run_demo(config: DemoConfig, out: &mut dyn Write) -> Result<(), CliError> {
    let signal = ShutdownSignal::install();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let data_dir = config
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| config.data_dir.clone());
    let node_config = |role: Role| NodeConfig {
        role,
        host: "127.0.0.1".into(),
        port: 0,
        storage: data_dir.clone(),
        meta_uri: None,
        sql_echo: config.sql_echo,
        version: "1.1.1".into(),
        auto_flush_interval: std::time::Duration::from_secs(1),
        gc_grace: std::time::Duration::from_secs(60),
        cache_bytes: 1 << 30,
        index_build_rows: 4096,
        log: config.log.clone(),
        tracing: config.tracing.clone(),
    };
    let writer = crate::node::start(&node_config(Role::Writer)).await?;
    let mut readers = Vec::new();
    for _ in 0..config.readers {
        readers.push(crate::node::start(&node_config(Role::Reader)).await?);
    }
    let to_addr = |a: std::net::SocketAddr| NodeAddr {
        host: a.ip().to_string(),
        port: a.port(),
    };
    let gateway_config = GatewayConfig {
        host: config.host.clone(),
        port: config.port,
        write_node: to_addr(writer.addr),
        meta_uri: format!(
            "sqlite://{}",
            data_dir.join(crate::meta::SQLITE_FILE_NAME).display()
        ),
        sql_echo: config.sql_echo,
        discovery: DiscoveryKind::Static,
        static_hosts: readers.iter().map(|r| to_addr(r.addr)).collect(),
        discovery_file: None,
        router: RouterKind::Rendezvous,
        max_retry: 3,
        node_timeout: std::time::Duration::from_secs(10),
        version: "1.1.1".into(),
        meta_poll_interval: std::time::Duration::from_secs(1),
        version_gate: "1.1.".into(),
        admin: config.admin.clone(),
        log: config.log.clone(),
        tracing: config.tracing.clone(),
    };
    let gateway = crate::gateway::start(&gateway_config, crate::gateway::Tuning::default()).await?;
    let port = gateway.addr.port();
    writeln!(out, "listening on {}", gateway.addr)?;
    if let Some(admin) = gateway.admin_addr {
        writeln!(out, "admin listening on {admin}")?;
    }
    writeln!(out, "mishards demo: data in {}", data_dir.display())?;
    writeln!(out, "  gateway     {}  (Milvus 1.1 API)", gateway.addr)?;
    if let Some(admin) = gateway.admin_addr {
        writeln!(
            out,
            "  admin       http://{admin}  (/requests, /slow, /cluster, /metrics, /readyz)"
        )?;
    }
    writeln!(out, "  write node  {}", writer.addr)?;
    for (i, r) in readers.iter().enumerate() {
        writeln!(out, "  read node {} {}", i + 1, r.addr)?;
    }
    writeln!(
        out,
        "connect with pymilvus 1.1.2:\n  from milvus import Milvus\n  client = Milvus(host=\"127.0.0.1\", port=\"{port}\")\n  print(client.server_version())\nCtrl-C stops the cluster."
    )?;
    out.flush()?;
    signal.received().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    for r in readers {
        r.shutdown().await;
    }
    writer.shutdown().await;
    Ok(())
}

async fn run_node(config: NodeConfig, out: &mut dyn Write) -> Result<(), CliError> {
    let signal = ShutdownSignal::install();
    let node = crate::node::start(&config).await?;
    // The one line a supervisor or a test waits for: where the node listens.
    writeln!(out, "listening on {}", node.addr)?;
    out.flush()?;
    signal.received().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// Ctrl-C and SIGTERM, caught from before the process says where it listens: a supervisor that stops
/// it right after that line must still get a clean, logged shutdown.
struct ShutdownSignal {
    #[cfg(unix)]
    signals: Vec<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            ShutdownSignal {
                signals: [SignalKind::interrupt(), SignalKind::terminate()]
                    .into_iter()
                    .filter_map(|kind| signal(kind).ok())
                    .collect(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    async fn received(self) {
        #[cfg(unix)]
        {
            let mut signals = self.signals;
            if !signals.is_empty() {
                futures::future::select_all(signals.iter_mut().map(|s| Box::pin(s.recv()))).await;
                return;
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
