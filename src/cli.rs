//! The command line: `mishards gateway | node | demo | inspect | bench | config check`. Every setting's flag,
//! help, env name and default come from `config::SPECS`, so `--help` lists exactly what the config layer
//! accepts.
//!
//! Past 800 lines on purpose: each subcommand is a short parse-then-hand-over, and they share the
//! settings plumbing and the printing; the work itself lives in the crates.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{
    self, ConfigError, DemoConfig, DiscoveryConfig, DiscoveryKind, GatewayConfig, Kind, NodeAddr,
    NodeConfig, Role, RouterKind, Scope, Settings, Source,
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
    #[error(transparent)]
    ChaosSetup(#[from] crate::chaos::ChaosError),
    #[error(transparent)]
    Embedded(#[from] crate::demo::EmbeddedError),
    #[error("{0}")]
    Chaos(String),
    /// `mishards inspect` could not show the request.
    #[error("{0}")]
    Inspect(String),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
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
            .args(config::specs_for(scope).map(|spec| setting_arg(spec, scope)))
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
        .subcommand(bench_command())
        .subcommand(
            Command::new("chaos")
                .about("Chaos scenarios against an embedded cluster with fault injection")
                .subcommand_required(true)
                .subcommand(
                    Command::new("run")
                        .about("Run a scenario (tests/chaos/*.toml): faults, kills, restarts and membership changes under load; check its invariants")
                        .arg(
                            Arg::new("scenario")
                                .value_name("SCENARIO.toml")
                                .value_parser(clap::value_parser!(PathBuf))
                                .required(true)
                                .help("the scenario file"),
                        )
                        .arg(
                            Arg::new("seed")
                                .long("seed")
                                .value_name("N")
                                .value_parser(clap::value_parser!(u64))
                                .help("seed of every random choice (data, queries, faults); the report names it [default: random]"),
                        )
                        .arg(
                            Arg::new("json")
                                .long("json")
                                .action(ArgAction::SetTrue)
                                .help("print the report as JSON"),
                        )
                        .arg(
                            Arg::new("verbose")
                                .long("verbose")
                                .action(ArgAction::SetTrue)
                                .help("log the cluster's warnings and errors too (default: errors only)"),
                        ),
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

fn setting_arg(spec: &'static config::Spec, scope: Scope) -> Arg {
    let mut help = format!("{} [env: {}]", spec.help, spec.env.join(", "));
    match spec.default_for(scope) {
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
        Kind::TimeZone => arg.value_name("ZONE").allow_hyphen_values(true),
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
/// The settings of `scope` from the subcommand's flags, the environment and its config file.
fn resolve(scope: Scope, m: &ArgMatches, env: &dyn Source) -> Result<Settings, CliError> {
    Ok(Settings::resolve(
        scope,
        &given_flags(m, scope),
        env,
        config_file(m, env).as_deref(),
    )?)
}

/// Logging and trace export for a process that is one service (a gateway or a node).
fn init_process_telemetry(
    log: &config::LogConfig,
    tracing: &config::TracingConfig,
) -> Result<telemetry::TelemetryGuard, CliError> {
    let guard = telemetry::init(
        log,
        &[Export {
            config: tracing,
            component: Component::Process,
        }],
    )?;
    telemetry::set_log_payload(tracing.log_payload);
    Ok(guard)
}

/// `out` receives what the command prints for a person.
pub async fn run(
    args: Vec<OsString>,
    env: &dyn Source,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let matches = command().try_get_matches_from(args)?;
    match matches.subcommand() {
        Some(("gateway", m)) => {
            let config = GatewayConfig::from_settings(&resolve(Scope::Gateway, m, env)?)?;
            let _telemetry = init_process_telemetry(&config.log, &config.tracing)?;
            run_gateway(config, out).await
        }
        Some(("node", m)) => {
            let config = NodeConfig::from_settings(&resolve(Scope::Node, m, env)?)?;
            let _telemetry = init_process_telemetry(&config.log, &config.tracing)?;
            run_node(config, out).await
        }
        Some(("demo", m)) => {
            let settings = resolve(Scope::Demo, m, env)?;
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
        Some(("bench", m)) => bench(m, out).await,
        Some(("chaos", m)) => match m.subcommand() {
            Some(("run", r)) => chaos_run(r, out).await,
            _ => Ok(()),
        },
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
    use crate::gateway::admin_client::{AdminClientError, fetch};
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

const BENCH_ABOUT: &str = "Load and search any Milvus 1.1 endpoint: seeded clustered data, concurrent \
searches; QPS, latency percentiles, errors, recall@k";

const BENCH_NOTE: &str = "Searches run until --duration or --count is reached, whichever comes first \
(10 s when neither is given). Recall is measured against exact answers computed locally.";

const BENCH_REUSE_HELP: &str = "search an existing collection as it is if it holds this data set (rows, \
dim, metric, seed); if it does not exist, create and load it";

/// `mishards bench`: its own flags, not settings of a server (no env names, no TOML).
fn bench_command() -> Command {
    use clap::value_parser;
    let number = |name: &'static str, value_name: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_name(value_name).help(help)
    };
    Command::new("bench")
        .about(BENCH_ABOUT)
        .after_help(BENCH_NOTE)
        .arg(
            Arg::new("addr")
                .long("addr")
                .value_name("HOST:PORT")
                .default_value(crate::bench::DEFAULT_ADDR)
                .help("the Milvus 1.1 endpoint: a mishards gateway, a data node or Milvus"),
        )
        .arg(
            Arg::new("tls-ca")
                .long("tls-ca")
                .value_name("PEM")
                .value_parser(clap::value_parser!(PathBuf))
                .help("speak TLS to the endpoint, trusting the CA certificates in this file"),
        )
        .arg(
            Arg::new("tls-cert")
                .long("tls-cert")
                .value_name("PEM")
                .requires_all(["tls-ca", "tls-key"])
                .value_parser(clap::value_parser!(PathBuf))
                .help("client certificate chain, for an endpoint that requires one (mutual TLS)"),
        )
        .arg(
            Arg::new("tls-key")
                .long("tls-key")
                .value_name("PEM")
                .requires_all(["tls-ca", "tls-cert"])
                .value_parser(clap::value_parser!(PathBuf))
                .help("private key of --tls-cert"),
        )
        .arg(
            Arg::new("tls-server-name")
                .long("tls-server-name")
                .value_name("NAME")
                .requires("tls-ca")
                .help("name the endpoint's certificate is checked against (default: the host of --addr)"),
        )
        .arg(
            Arg::new("collection")
                .long("collection")
                .value_name("NAME")
                .default_value("bench")
                .help("collection to load and search"),
        )
        .arg(
            Arg::new("reuse")
                .long("reuse")
                .action(ArgAction::SetTrue)
                .conflicts_with("drop")
                .help(BENCH_REUSE_HELP),
        )
        .arg(
            Arg::new("drop")
                .long("drop")
                .action(ArgAction::SetTrue)
                .help("drop the collection first if it exists"),
        )
        .arg(
            number("rows", "N", "rows to load")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("10000"),
        )
        .arg(
            number("dim", "D", "vector dimension")
                .value_parser(value_parser!(u64).range(1..=32768))
                .default_value("128"),
        )
        .arg(
            Arg::new("metric")
                .long("metric")
                .value_parser(["l2", "ip"])
                .ignore_case(true)
                .default_value("l2")
                .help("distance: l2 (squared Euclidean) or ip (inner product)"),
        )
        .arg(
            Arg::new("index")
                .long("index")
                .value_parser(["flat", "ivf_flat"])
                .ignore_case(true)
                .default_value("flat")
                .help("index built after loading"),
        )
        .arg(
            number("nlist", "N", "IVF_FLAT lists")
                .value_parser(value_parser!(u32).range(1..=65536))
                .default_value("1024"),
        )
        .arg(
            number(
                "nprobe",
                "N",
                "IVF_FLAT lists probed per query [default: 16 with ivf_flat]",
            )
            .value_parser(value_parser!(u32).range(1..=65536)),
        )
        .arg(
            number(
                "clusters",
                "K",
                "Gaussian clusters, centres uniform in [0,1)^dim",
            )
            .value_parser(value_parser!(u64).range(1..))
            .default_value("100"),
        )
        .arg(
            number(
                "sigma",
                "S",
                "standard deviation of each coordinate around its centre",
            )
            .value_parser(value_parser!(f64))
            .default_value("0.1"),
        )
        .arg(
            number("seed", "N", "seed of the data set and the queries")
                .value_parser(value_parser!(u64))
                .default_value("42"),
        )
        .arg(
            number("batch", "N", "rows per insert (at most 256 MB of vectors)")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("10000"),
        )
        .arg(
            number("index-file-size", "MB", "the collection's index_file_size")
                .value_parser(value_parser!(i64).range(1..=65536))
                .default_value("1024"),
        )
        .arg(
            Arg::new("partition")
                .long("partition")
                .value_name("TAG")
                .help("load into and search only this partition (created if missing)"),
        )
        .arg(
            number(
                "concurrency",
                "C",
                "concurrent search clients, one connection each",
            )
            .value_parser(value_parser!(u64).range(1..=4096))
            .default_value("8"),
        )
        .arg(number("duration", "SECS", "search for this long").value_parser(value_parser!(f64)))
        .arg(
            number("count", "N", "send this many searches")
                .value_parser(value_parser!(u64).range(1..)),
        )
        .arg(
            number("nq", "N", "query vectors per search")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("1"),
        )
        .arg(
            number("topk", "K", "hits per query")
                .value_parser(value_parser!(i64).range(1..=crate::limits::MAX_TOPK))
                .default_value("10"),
        )
        .arg(
            number(
                "queries",
                "Q",
                "distinct query vectors, from the data's distribution",
            )
            .value_parser(value_parser!(u64).range(1..))
            .default_value("100"),
        )
        .arg(
            number(
                "timeout",
                "SECS",
                "per search: no answer by then counts as a timeout",
            )
            .value_parser(value_parser!(f64))
            .default_value("10"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("print the report as JSON"),
        )
}

/// Seconds from a flag, as a positive duration.
fn seconds_flag(m: &ArgMatches, name: &str) -> Result<Option<std::time::Duration>, CliError> {
    match m.get_one::<f64>(name) {
        None => Ok(None),
        Some(s) if s.is_finite() && *s > 0.0 && *s < 1e9 => {
            Ok(Some(std::time::Duration::from_secs_f64(*s)))
        }
        Some(s) => Err(crate::bench::BenchError::Invalid(format!(
            "--{name} {s}: give a number of seconds above 0"
        ))
        .into()),
    }
}

fn bench_config(m: &ArgMatches) -> Result<crate::bench::BenchConfig, CliError> {
    use crate::bench::{
        BenchConfig, CollectionSpec, DataSpec, IfExists, IndexSpec, InsertOptions, LoadOptions,
        SearchLoad,
    };
    use crate::node::index::Metric;
    let text = |name: &str| m.get_one::<String>(name).cloned().unwrap_or_default();
    // clap checked every number's range, so these only narrow to the target types.
    let int = |name: &str| m.get_one::<u64>(name).copied().unwrap_or_default() as usize;
    let index = match text("index").to_ascii_lowercase().as_str() {
        "ivf_flat" => IndexSpec::IvfFlat {
            nlist: m.get_one::<u32>("nlist").copied().unwrap_or(1024),
        },
        _ => IndexSpec::Flat,
    };
    let nprobe = m
        .get_one::<u32>("nprobe")
        .copied()
        .or(matches!(index, IndexSpec::IvfFlat { .. }).then_some(16));
    let duration = seconds_flag(m, "duration")?;
    let count = m.get_one::<u64>("count").copied();
    let partition = m.get_one::<String>("partition").cloned();
    let path = |name: &str| m.get_one::<PathBuf>(name).cloned();
    let tls = path("tls-ca").map(|ca| crate::config::NodeTlsConfig {
        ca,
        client_cert: path("tls-cert").zip(path("tls-key")),
        server_name: m.get_one::<String>("tls-server-name").cloned(),
        reload_interval: None,
    });
    Ok(BenchConfig {
        addr: text("addr"),
        tls,
        collection: CollectionSpec {
            name: text("collection"),
            metric: if text("metric").eq_ignore_ascii_case("ip") {
                Metric::Ip
            } else {
                Metric::L2
            },
            index,
            index_file_size_mb: m.get_one::<i64>("index-file-size").copied().unwrap_or(1024),
        },
        data: DataSpec {
            rows: int("rows"),
            dim: int("dim"),
            clusters: int("clusters"),
            sigma: m.get_one::<f64>("sigma").copied().unwrap_or(0.1),
        },
        seed: m.get_one::<u64>("seed").copied().unwrap_or(42),
        queries: int("queries"),
        load: LoadOptions {
            if_exists: if m.get_flag("reuse") {
                IfExists::Reuse
            } else if m.get_flag("drop") {
                IfExists::Drop
            } else {
                IfExists::Fail
            },
            insert: InsertOptions {
                batch_rows: int("batch"),
                partition_tag: partition.clone().unwrap_or_default(),
                ..InsertOptions::default()
            },
        },
        search: SearchLoad {
            concurrency: int("concurrency"),
            duration: match (duration, count) {
                (None, None) => Some(std::time::Duration::from_secs(10)),
                (d, _) => d,
            },
            count,
            nq: int("nq"),
            topk: m.get_one::<i64>("topk").copied().unwrap_or(10) as usize,
            nprobe,
            partition_tags: partition.into_iter().collect(),
            timeout: seconds_flag(m, "timeout")?.unwrap_or(std::time::Duration::from_secs(10)),
            ..SearchLoad::default()
        },
    })
}

/// `mishards bench`: loads, searches, and prints the report (JSON with `--json`); insert progress goes
/// to stderr.
async fn bench(m: &ArgMatches, out: &mut dyn Write) -> Result<(), CliError> {
    use std::io::IsTerminal;
    let config = bench_config(m)?;
    let stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    let mut progress = crate::bench::ProgressLine::new(Box::new(stderr), terminal);
    let report = crate::bench::run(&config, &mut |done, total| progress.update(done, total)).await;
    progress.finish();
    let report = report?;
    if m.get_flag("json") {
        writeln!(out, "{}", report.to_json())?;
    } else {
        out.write_all(report.render().as_bytes())?;
    }
    out.flush()?;
    Ok(())
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
async fn run_demo(mut config: DemoConfig, out: &mut dyn Write) -> Result<(), CliError> {
    let signal = ShutdownSignal::install();
    // The demo is for trying things out: a console already on the default admin port (another demo, a
    // Milvus) should not stop it. The gateway itself keeps failing loudly on a taken port.
    if config.admin.port == Some(config::DEFAULT_ADMIN_PORT)
        && port_taken(&config.admin.host, config::DEFAULT_ADMIN_PORT)
    {
        writeln!(
            out,
            "admin port {} on {} is taken: the console and admin listener take a free port instead",
            config::DEFAULT_ADMIN_PORT,
            config.admin.host
        )?;
        config.admin.port = Some(0);
    }
    let node = NodeConfig {
        role: Role::Writer,
        host: "127.0.0.1".into(),
        port: 0,
        tls: None,
        storage: config.data_dir.clone(),
        meta_uri: None,
        sql_echo: config.sql_echo,
        version: "1.1.1".into(),
        auto_flush_interval: std::time::Duration::from_secs(1),
        gc_grace: std::time::Duration::from_secs(60),
        cache_bytes: 1 << 30,
        index_build_rows: 4096,
        wal_recovery_error_ignore: false,
        probe: None,
        log: config.log.clone(),
        tracing: config.tracing.clone(),
    };
    // Write node, metadata and discovery are the embedded cluster's to fill in.
    let gateway = GatewayConfig {
        host: config.host.clone(),
        port: config.port,
        tls: config.tls.clone(),
        node_tls: None,
        write_node: Some(NodeAddr::loopback(0)),
        meta_uri: Default::default(),
        sql_echo: config.sql_echo,
        discovery: DiscoveryConfig {
            kind: DiscoveryKind::File,
            static_hosts: Vec::new(),
            file: None,
            kubernetes: None,
        },
        router: RouterKind::Rendezvous,
        max_retry: 3,
        node_timeout: std::time::Duration::from_secs(10),
        version: "1.1.1".into(),
        meta_poll_interval: std::time::Duration::from_secs(1),
        version_gate: "1.1.".into(),
        admin: config.admin.clone(),
        hedge: config.hedge.clone(),
        search_batch: config.search_batch,
        clients: config.clients.clone(),
        faults: Default::default(),
        log: config.log.clone(),
        tracing: config.tracing.clone(),
    };
    let cluster = crate::demo::EmbeddedCluster::start(
        &config.data_dir,
        config.readers as usize,
        gateway,
        node,
        crate::gateway::Tuning::default(),
    )
    .await?;
    let addr = cluster.gateway.addr;
    writeln!(out, "listening on {addr}")?;
    if let Some(admin) = cluster.gateway.admin_addr {
        writeln!(out, "admin listening on {admin}")?;
    }
    writeln!(
        out,
        "mishards demo: data in {}",
        cluster.data_dir().display()
    )?;
    writeln!(out, "  gateway     {addr}  (Milvus 1.1 API)")?;
    if let Some(admin) = cluster.gateway.admin_addr {
        writeln!(out, "  console     http://{admin}/  (open it in a browser)")?;
        writeln!(
            out,
            "  admin       http://{admin}  (/requests, /slow, /cluster, /collections, /live, /metrics, /readyz)"
        )?;
    }
    writeln!(out, "  write node  {}", cluster.writer_addr)?;
    for (i, r) in cluster.reader_addrs.iter().enumerate() {
        writeln!(out, "  read node {} {r}", i + 1)?;
    }
    if config.tls.is_some() {
        // pymilvus 1.1.2 has no TLS option: point at a client that has.
        writeln!(
            out,
            "the gateway speaks TLS only (tls_cert): pymilvus 1.1.2 cannot connect; gRPC clients with TLS can, e.g.\n  mishards bench --addr 127.0.0.1:{} --tls-ca <CA file>\nCtrl-C stops the cluster.",
            addr.port()
        )?;
    } else {
        writeln!(
            out,
            "connect with pymilvus 1.1.2:\n  from milvus import Milvus\n  client = Milvus(host=\"127.0.0.1\", port=\"{}\")\n  print(client.server_version())\nCtrl-C stops the cluster.",
            addr.port()
        )?;
    }
    out.flush()?;
    signal.received().await;
    tracing::info!("shutting down");
    cluster.shutdown().await;
    Ok(())
}

/// Whether something already listens on `host:port` (a bind fails with "address in use").
fn port_taken(host: &str, port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind((host, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

async fn run_node(config: NodeConfig, out: &mut dyn Write) -> Result<(), CliError> {
    let mut signal = std::pin::pin!(ShutdownSignal::install().received());
    let starting = crate::node::prepare(&config).await?;
    // The probe listener answers (not ready) while the node waits for its metadata.
    if let Some(probe) = starting.probe_addr() {
        writeln!(out, "admin listening on {probe}")?;
        out.flush()?;
    }
    let node = tokio::select! {
        node = starting.run() => node?,
        () = &mut signal => {
            tracing::info!("stopped before serving");
            return Ok(());
        }
    };
    // The one line a supervisor or a test waits for: where the node listens.
    writeln!(out, "listening on {}", node.addr)?;
    out.flush()?;
    signal.await;
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

/// `mishards chaos run`: prints the report; violated invariants make the exit code 1.
async fn chaos_run(m: &ArgMatches, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(path) = m.get_one::<PathBuf>("scenario") else {
        return Ok(());
    };
    let scenario = crate::chaos::scenario::Scenario::load(path)?;
    let seed = m
        .get_one::<u64>("seed")
        .copied()
        .unwrap_or_else(crate::gateway::injection::random_seed);
    let _telemetry = telemetry::init(
        &config::LogConfig {
            debug: false,
            filter: Some(
                if m.get_flag("verbose") {
                    "warn"
                } else {
                    "error"
                }
                .into(),
            ),
            path: None,
            name: "chaos".into(),
            timezone: config::TimeZone::UTC,
        },
        &[],
    )?;
    let report = crate::chaos::runner::run(&scenario, seed, &path.display().to_string()).await?;
    if m.get_flag("json") {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{report}")?;
    }
    if report.passed {
        Ok(())
    } else {
        Err(CliError::Chaos(format!(
            "scenario {}: invariants violated (replay: {})",
            report.scenario, report.replay
        )))
    }
}
