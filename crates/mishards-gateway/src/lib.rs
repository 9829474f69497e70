//! The gateway (`mishards gateway`): an actix actor system that discovers read nodes, polls metadata,
//! routes segment files and scatters/gathers searches (see actors.md). It reaches nodes only through the
//! public Milvus 1.1 API and never imports `node`.

pub mod admin;
pub mod admin_client;
pub mod batch;
pub mod cluster;
pub mod console;
pub mod control;
pub mod discovery;
pub mod fault_channel;
pub mod hedge;
pub mod injection;
pub mod inspect;
pub mod latency;
pub mod merge;
pub mod metadata;
pub mod metrics;
pub mod node_link;
pub mod placement;
mod race;
pub mod routing;
pub mod scatter;
pub mod server;
pub mod service;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use mishards_config::{DiscoveryKind, GatewayConfig};
use mishards_meta::{MetaError, MetaOptions, MetaUri, PartitionSelectError};
use mishards_proto::error::{MilvusError, status};
use mishards_proto::milvus_service_server::MilvusServiceServer;
use mishards_proto::{ErrorCode, Status};
use mishards_telemetry::{RpcLayer, RpcSide};

/// Everything a gateway request can fail with; its `MilvusError` impl below maps each to a Milvus status code.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    #[error(
        "the write node {node} is unreachable: {reason}; writes fail until it is back (searches go on)"
    )]
    WriteNodeDown { node: String, reason: String },
    #[error(
        "files {files:?} got no answer from any read node (attempts: {}; read nodes: {})",
        if failures.is_empty() { "none possible".to_string() } else { failures.join("; ") },
        if members.is_empty() { "none".to_string() } else { members.join(", ") }
    )]
    Unanswered {
        files: Vec<i64>,
        failures: Vec<String>,
        members: Vec<String>,
    },
    #[error("collection `{0}` does not exist")]
    CollectionNotFound(String),
    #[error(transparent)]
    Partition(PartitionSelectError),
    #[error("{}", .0.reason)]
    Node(mishards_proto::Status),
    #[error("the read nodes' answers do not fit together: {0}")]
    Merge(merge::PartialMergeError),
    #[error("gateway actor {actor} is unavailable: {reason}")]
    Actor { actor: &'static str, reason: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Start(String),
    #[error(
        "set_config is refused by this gateway (its setting allow_client_set_config, \
         MISHARDS_ALLOW_CLIENT_SET_CONFIG, is false); get_config works, and an operator changes the \
         write node's settings in its own configuration"
    )]
    SetConfigRefused,
}

impl MilvusError for GatewayError {
    fn code(&self) -> ErrorCode {
        match self {
            GatewayError::Unreachable { .. } | GatewayError::WriteNodeDown { .. } => {
                ErrorCode::ConnectFailed
            }
            GatewayError::Unanswered { .. }
            | GatewayError::Actor { .. }
            | GatewayError::Start(_) => ErrorCode::UnexpectedError,
            GatewayError::CollectionNotFound(_) => ErrorCode::CollectionNotExists,
            GatewayError::SetConfigRefused => ErrorCode::PermissionDenied,
            GatewayError::Partition(e) => e.code(),
            GatewayError::Merge(_) => ErrorCode::IllegalSearchResult,
            GatewayError::Meta(e) => e.code(),
            GatewayError::Node(status) => {
                ErrorCode::try_from(status.error_code).unwrap_or(ErrorCode::UnexpectedError)
            }
        }
    }

    fn to_status(&self) -> Status {
        match self {
            // A node's own answer travels unchanged.
            GatewayError::Node(status) => status.clone(),
            other => status(other.code(), other.to_string()),
        }
    }
}

/// Mailbox size of the actors every request talks to (routing, cluster, node links): actix's default
/// of 16 would make concurrent requests queue behind each other's sends.
pub const REQUEST_MAILBOX: usize = 4096;

/// Tunables of the actor system beyond `GatewayConfig`'s settings (tests shorten them).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Overrides `GatewayConfig::meta_poll_interval` when set.
    pub metadata_poll: Option<Duration>,
    pub probe_interval: Duration,
    pub discovery_refresh: Duration,
    pub load_factor: f64,
    pub pool_size: usize,
    /// The metadata poller serves its last snapshot through a database outage. Off only to show, in
    /// chaos tests, what that protects.
    pub keep_snapshot_on_outage: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            metadata_poll: None,
            probe_interval: Duration::from_millis(500),
            discovery_refresh: Duration::from_secs(1),
            load_factor: placement::DEFAULT_LOAD_FACTOR,
            // One HTTP/2 connection per node, as gRPC clients keep by default: concurrent calls share
            // its writes, where more connections would cost more syscalls and wake-ups per call.
            pool_size: 1,
            keep_snapshot_on_outage: true,
        }
    }
}

/// How long the start-up look at the metadata may take before the poller is left to wait for it.
const START_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long shutdown waits for the admin listener's open connections to finish.
const ADMIN_DRAIN: Duration = Duration::from_secs(5);

/// A gateway serving until `shutdown`.
pub struct RunningGateway {
    pub addr: SocketAddr,
    /// Where the admin HTTP listener listens; `None` when it is off.
    pub admin_addr: Option<SocketAddr>,
    pub actors: service::Actors,
    /// The gateway's Prometheus metrics; the gRPC server's RPC layer feeds them.
    pub metrics: Arc<metrics::GatewayMetrics>,
    /// How searches hedge slow read nodes, with its budget's counters (`None`: hedging is off).
    pub hedging: Option<Arc<hedge::Hedging>>,
    stop: watch::Sender<bool>,
    /// How the gRPC server ended (it runs on the actors' thread).
    server: tokio::sync::oneshot::Receiver<Result<(), String>>,
    admin: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    system: actix::System,
    system_thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningGateway {
    /// Fault injection from inside the process; `None` unless the gateway started with
    /// `--enable-fault-injection`.
    pub fn faults(&self) -> Option<injection::FaultHandle> {
        self.actors.faults.clone()
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Ok(Err(e)) = (&mut self.server).await {
            tracing::warn!(error = %e, "gRPC server ended with an error");
        }
        if let Some(mut admin) = self.admin.take() {
            match tokio::time::timeout(ADMIN_DRAIN, &mut admin).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin listener ended with an error"),
                Err(_) => admin.abort(),
                _ => {}
            }
        }
        self.system.stop();
        if let Some(thread) = self.system_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Starts the actor system and the gRPC server on a thread of their own, and the admin listener on the
/// caller's runtime.
pub async fn start(config: &GatewayConfig, tuning: Tuning) -> Result<RunningGateway, GatewayError> {
    // Unreadable or unusable certificates are a misconfiguration: refuse to start, naming the file.
    let client_port_tls = config
        .tls
        .as_ref()
        .map(mishards_tls::ServerTls::load)
        .transpose()
        .map_err(|e| GatewayError::Start(format!("TLS on the client port: {e}")))?;
    let node_tls = config
        .node_tls
        .as_ref()
        .map(mishards_tls::ClientTls::load)
        .transpose()
        .map_err(|e| GatewayError::Start(format!("TLS to the nodes: {e}")))?;
    let uri = MetaUri::parse(config.meta_uri.expose(), None)?;
    let meta_options = MetaOptions {
        echo: config.sql_echo,
        ..MetaOptions::default()
    };
    // Processes start in any order: a metadata database that does not answer yet, or has no Milvus
    // schema yet, is waited for by the poller (not ready on /readyz until its first snapshot). What
    // waiting cannot fix — a foreign schema, refused credentials, an unopenable SQLite file — stops
    // the gateway here, saying so. A database that takes longer than this to answer is left to the
    // poller too.
    let mut none = None;
    let first_try = mishards_meta::try_open(&uri, &meta_options, false, &mut none);
    match tokio::time::timeout(START_PROBE_TIMEOUT, first_try).await {
        Ok(Err(fatal)) => return Err(fatal.into()),
        Ok(Ok(Ok(store))) => store.close().await,
        Ok(Ok(Err(_))) | Err(_) => {}
    }
    let source = match config.discovery.kind {
        DiscoveryKind::Static => discovery::Source::Polled(discovery::Polled::Static(
            config.discovery.static_hosts.clone(),
        )),
        DiscoveryKind::File => discovery::Source::Polled(discovery::Polled::File {
            path: config.discovery.file.clone().unwrap_or_default(),
            default_port: mishards_config::DEFAULT_PORT,
        }),
        DiscoveryKind::Kubernetes => match &config.discovery.kubernetes {
            Some(kubernetes) => discovery::Source::Kubernetes(kubernetes.clone()),
            None => {
                return Err(GatewayError::Start(
                    "kubernetes discovery without its settings".into(),
                ));
            }
        },
    };
    let link_options = node_link::LinkOptions {
        pool_size: tuning.pool_size,
        probe_interval: tuning.probe_interval,
        probe_timeout: Duration::from_secs(2),
        version_prefix: config.version_gate.clone(),
        down_after: 2,
        max_backoff: Duration::from_secs(8),
        fault_injection: config.faults.enabled,
        search_batch: config.search_batch,
        tls: node_tls,
    };
    // Fault injection: one seed for every decision, logged so a run can be replayed.
    let fault_seed = config
        .faults
        .enabled
        .then(|| config.faults.seed.unwrap_or_else(injection::random_seed));
    if let Some(seed) = fault_seed {
        tracing::warn!(
            seed,
            "fault injection enabled (--enable-fault-injection): never in production"
        );
    }
    let (write_node, router_kind) = (config.write_node.clone(), config.router);
    let metadata_poll = tuning.metadata_poll.unwrap_or(config.meta_poll_interval);
    let (inspect_keep, slow_query) = (config.admin.inspect_keep, config.admin.slow_query);
    let demote_slow_nodes = config.hedge.demote_slow_nodes;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("mishards-actors".into())
        .spawn(move || {
            let system = actix::System::new();
            let actors = system.block_on(async move {
                let here = actix::Arbiter::current();
                let poller = Supervisor::start(move |_| {
                    metadata::MetadataPoller::with_outage_policy(
                        uri,
                        meta_options,
                        metadata_poll,
                        tuning.keep_snapshot_on_outage,
                    )
                });
                let routing = Supervisor::start(move |_| {
                    routing::Routing::new(router_kind, tuning.load_factor)
                        .demoting_slow_nodes(demote_slow_nodes)
                });
                let discovery = Supervisor::start(move |_| {
                    discovery::Discovery::new(source, tuning.discovery_refresh)
                });
                let write = cluster::start_link(write_node.clone(), link_options.clone(), &here);
                let cluster = cluster::Cluster::new(
                    (write_node.clone(), write.clone()),
                    routing.clone(),
                    poller.clone(),
                    link_options,
                    here.clone(),
                )
                .with_discovery(discovery.clone())
                .start();
                let faults = fault_seed.map(|seed| {
                    let targets = injection::FaultTargets {
                        cluster: cluster.clone(),
                        poller: poller.clone(),
                        routing: routing.clone(),
                        discovery: discovery.clone(),
                    };
                    injection::FaultHandle::new(injection::Faults::new(seed, targets).start(), seed)
                });
                let inspector = inspect::Inspector::new(inspect_keep, slow_query).start();
                poller.do_send(metadata::Subscribe(routing.clone().recipient()));
                discovery.do_send(discovery::SubscribeMembership(cluster.clone().recipient()));
                discovery.do_send(discovery::SubscribeMembership(routing.clone().recipient()));
                service::Actors {
                    cluster,
                    routing,
                    poller,
                    discovery,
                    faults,
                    write,
                    inspector,
                    home: here,
                }
            });
            let _ = ready_tx.send((actix::System::current(), actors));
            let _ = system.run();
        })
        .map_err(|e| GatewayError::Start(format!("cannot start the actor system: {e}")))?;
    let (system, actors) = ready_rx
        .await
        .map_err(|_| GatewayError::Start("the actor system stopped while starting".into()))?;

    let listeners = bind_listeners(config).await;
    let (listener, addr, admin_listener) = match listeners {
        Ok(bound) => bound,
        Err(e) => {
            // Nothing will use the actors: end their thread rather than leak it.
            system.stop();
            return Err(e);
        }
    };
    let hedging = config.hedge.on.then(|| {
        Arc::new(hedge::Hedging::new(
            config.hedge.delay,
            config.hedge.max_share,
        ))
    });
    let metrics = Arc::new(metrics::GatewayMetrics::new().with_hedging(hedging.clone()));
    let live = Arc::new(console::live::LiveCounters::new());
    let service = service::GatewayService::new(
        actors.clone(),
        config.node_timeout,
        config.max_retry,
        config.version.clone(),
    )
    .with_hedging(hedging.clone())
    .allowing_set_config(config.clients.allow_set_config);
    let grpc = MilvusServiceServer::new(service)
        .max_decoding_message_size(mishards_proto::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mishards_proto::limits::MAX_MESSAGE_BYTES);
    let (stop, stopped) = watch::channel(false);
    // The gRPC server runs on the actors' own thread, its connections and requests local tasks of their
    // arbiter (server.rs): a search never crosses a thread inside the gateway (each crossing is a futex
    // wake and a context switch, which cost more than the gateway's own work), and its handler starts
    // its scatter-gather actor in place.
    let listener = listener
        .into_std()
        .map_err(|e| GatewayError::Start(format!("cannot hand the gRPC listener over: {e}")))?;
    let observers: Vec<Arc<dyn mishards_telemetry::RpcObserver>> =
        vec![metrics.clone(), live.clone()];
    let observers = console::live::Observers(observers);
    let service = tower::Layer::layer(
        &RpcLayer::new(RpcSide::Gateway, Some(Arc::new(observers))),
        grpc,
    );
    let (served, server) = tokio::sync::oneshot::channel();
    let limits = config.clients.clone();
    // The server's tasks are local to the arbiter, so it is started there rather than sent to it.
    actors.home.spawn_fn(move || {
        actix::spawn(async move {
            let result = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    server::serve(listener, service, limits, stopped, client_port_tls).await;
                    Ok(())
                }
                Err(e) => Err(format!("cannot listen on the actors' thread: {e}")),
            };
            let _ = served.send(result);
        });
    });
    tracing::info!(
        %addr,
        write_node = %config.write_node.as_ref().map_or_else(|| "found by kubernetes discovery".to_string(), ToString::to_string),
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.require_client_cert),
        node_tls = config.node_tls.is_some(),
        "gateway serving"
    );
    let (admin_addr, admin) = match admin_listener {
        Some((listener, admin_addr)) => {
            let series = Arc::new(console::live::LiveSeries::new(console::live::KEEP_SECONDS));
            tokio::spawn(console::live::run_sampler(
                live.clone(),
                series.clone(),
                stop.subscribe(),
            ));
            let slow_query_ms = config.admin.slow_query.as_millis().min(u64::MAX as u128) as u64;
            let router = admin::router(admin::AdminState {
                actors: actors.clone(),
                metrics: metrics.clone(),
                inspect_keep: config.admin.inspect_keep,
                slow_query_ms,
                fault_token: config.faults.token.clone(),
                console: console::ConsoleInfo {
                    version: config.version.clone(),
                    tracing: config.tracing.otlp_endpoint.is_some(),
                    jaeger_url: config.admin.console_jaeger_url.clone(),
                    fault_injection: config.faults.enabled,
                    discovery_source: config.discovery.kind.name().to_string(),
                    refresh_ms: console::REFRESH_MS,
                    slow_query_ms,
                    inspect_keep: config.admin.inspect_keep,
                    live_keep_seconds: series.keep(),
                },
                live: series,
            });
            if config.faults.enabled && !admin_addr.ip().is_loopback() {
                tracing::warn!(addr = %admin_addr, "fault injection's /faults is reachable beyond this machine (admin_host is not loopback); only its token guards it");
            }
            let mut stopped = stop.subscribe();
            let task = tokio::spawn(admin::serve(listener, router, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            tracing::info!(addr = %admin_addr, "admin listener serving");
            (Some(admin_addr), Some(task))
        }
        None => (None, None),
    };
    Ok(RunningGateway {
        addr,
        admin_addr,
        actors,
        metrics,
        hedging,
        stop,
        server,
        admin,
        system,
        system_thread: Some(thread),
    })
}

type Bound = (
    tokio::net::TcpListener,
    SocketAddr,
    Option<(tokio::net::TcpListener, SocketAddr)>,
);

/// Binds the gRPC listener and, unless it is off, the admin listener.
async fn bind_listeners(config: &GatewayConfig) -> Result<Bound, GatewayError> {
    let bind = |what: &'static str, host: String, port: u16| async move {
        let cannot = |e: std::io::Error| {
            GatewayError::Start(format!("cannot listen on {host}:{port} ({what}): {e}"))
        };
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .map_err(cannot)?;
        let addr = listener.local_addr().map_err(cannot)?;
        Ok::<_, GatewayError>((listener, addr))
    };
    let (listener, addr) = bind("gRPC", config.host.clone(), config.port).await?;
    let admin = match config.admin.port {
        Some(port) => Some(bind("admin HTTP", config.admin.host.clone(), port).await?),
        None => None,
    };
    Ok((listener, addr, admin))
}
