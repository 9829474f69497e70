//! Starting and stopping a node: the probe listener, the metadata (waited for: nodes start in any
//! order), the engine, background work, and the gRPC listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::NodeError;
use super::engine::{Engine, EngineOptions};
use super::health::{NodeHealth, Phase};
use super::incoming::NodeIncoming;
use super::metrics::NodeRpcMetrics;
use super::probe::Probe;
use super::server_config::ServerConfig;
use super::service::NodeService;
use super::wal::DamagePolicy;
use mishards_config::{NodeConfig, Role};
use mishards_meta::{Backoff, MetaOptions, MetaUri, SQLITE_FILE_NAME, SqliteTarget};
use mishards_proto::limits::MAX_MESSAGE_BYTES;
use mishards_proto::milvus_service_server::MilvusServiceServer;
use mishards_telemetry::{RpcLayer, RpcSide};

/// A node that serves until `shutdown` is called.
pub struct RunningNode {
    pub addr: SocketAddr,
    /// Where the probe listener (`/healthz`, `/readyz`, `/metrics`) listens; `None` when it is off.
    pub probe_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    pub health: Arc<NodeHealth>,
    probe: Option<Probe>,
    /// Set by `abort`: every open connection fails its next read or write.
    killed: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: JoinHandle<()>,
}

impl RunningNode {
    /// Stops taking requests, lets the write node flush once more, and waits for both.
    pub async fn shutdown(mut self) {
        self.health.set_phase(Phase::Stopping);
        let _ = self.stop.send(true);
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "gRPC server ended with an error");
        }
        let _ = self.background.await;
        self.engine.release_storage_lock();
        if let Some(probe) = self.probe.take() {
            probe.stop().await;
        }
    }

    /// Stops at once, as `kill -9` would: the listener closes, in-flight calls and background work
    /// are dropped, nothing is flushed (the write-ahead log already holds every acknowledged write).
    pub async fn abort(self) {
        self.health.set_phase(Phase::Stopping);
        self.killed.store(true, Ordering::Relaxed);
        self.server.abort();
        self.background.abort();
        let _ = self.server.await;
        let _ = self.background.await;
        self.engine.release_storage_lock();
    }
}

/// The metadata URI a node uses: the configured one, else `meta.sqlite` in its storage folder.
pub fn meta_uri(config: &NodeConfig) -> Result<MetaUri, NodeError> {
    match &config.meta_uri {
        Some(text) => Ok(MetaUri::parse(text.expose(), Some(&config.storage))?),
        None => Ok(MetaUri::Sqlite(SqliteTarget::File(
            config.storage.join(SQLITE_FILE_NAME),
        ))),
    }
}

/// A node that has its probe listener up and has not opened its metadata yet (`prepare`): `run` waits
/// for the metadata and serves. Dropping it stops the probe listener.
pub struct StartingNode {
    config: NodeConfig,
    tls: Option<mishards_tls::ServerTls>,
    health: Arc<NodeHealth>,
    rpcs: Arc<NodeRpcMetrics>,
    probe: Option<Probe>,
}

/// Checks what can be checked without the metadata (TLS files) and starts the probe listener, if any.
pub async fn prepare(config: &NodeConfig) -> Result<StartingNode, NodeError> {
    // Unreadable or unusable certificates are a misconfiguration: refuse to start, naming the file,
    // before the engine opens (and a write node replays its log).
    let tls = config
        .tls
        .as_ref()
        .map(mishards_tls::ServerTls::load)
        .transpose()
        .map_err(|e| NodeError::Internal(format!("TLS on the gRPC port: {e}")))?;
    let health = NodeHealth::new(config.role);
    let rpcs = Arc::new(NodeRpcMetrics::default());
    let probe = match &config.probe {
        Some(p) => Some(Probe::start(&p.host, p.port, health.clone(), rpcs.clone()).await?),
        None => None,
    };
    Ok(StartingNode {
        config: config.clone(),
        tls,
        health,
        rpcs,
        probe,
    })
}

/// Opens the metadata (a write node creates the schema; a read node waits until it exists, and any
/// node waits for a MySQL server that does not answer yet), the engine, and starts serving on
/// `config.host:config.port` (port 0 picks a free port; see `RunningNode::addr`).
pub async fn start(config: &NodeConfig) -> Result<RunningNode, NodeError> {
    prepare(config).await?.run().await
}

impl StartingNode {
    /// Where the probe listener listens (`None`: off).
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe.as_ref().map(|p| p.addr)
    }

    pub fn health(&self) -> &Arc<NodeHealth> {
        &self.health
    }

    /// Waits for the metadata (retrying with a backoff of 0.2 s doubling to 5 s), opens the engine and
    /// serves gRPC. Cancel it by dropping the future.
    pub async fn run(self) -> Result<RunningNode, NodeError> {
        self.run_with_backoff(Backoff::default()).await
    }

    /// `run`, with another backoff (tests).
    pub async fn run_with_backoff(self, backoff: Backoff) -> Result<RunningNode, NodeError> {
        let StartingNode {
            config,
            tls,
            health,
            rpcs,
            probe,
        } = self;
        let config = &config;
        let uri = &meta_uri(config)?;
        tracing::debug!(
            auto_flush = ?config.auto_flush_interval,
            gc_grace = ?config.gc_grace,
            cache_mb = config.cache_bytes >> 20,
            index_build_rows = config.index_build_rows,
            "engine settings"
        );
        let options = MetaOptions {
            echo: config.sql_echo,
            ..MetaOptions::default()
        };
        let meta = mishards_meta::open_when_ready(
            uri,
            &options,
            config.role == Role::Writer,
            backoff,
            |wait| {
                health.set_phase(match wait {
                    Some(wait) => Phase::WaitingForMetadata(wait.clone()),
                    None => Phase::Opening,
                })
            },
        )
        .await?;
        let engine = Engine::open(
            meta,
            EngineOptions {
                role: config.role,
                storage: config.storage.clone(),
                auto_flush_interval: config.auto_flush_interval,
                gc_grace: config.gc_grace,
                cache_bytes: config.cache_bytes,
                index_build_rows: config.index_build_rows,
                wal_damage: if config.wal_recovery_error_ignore {
                    DamagePolicy::Skip
                } else {
                    DamagePolicy::Refuse
                },
            },
        )
        .await?;
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|e| {
                NodeError::Internal(format!(
                    "cannot listen on {}:{}: {e}",
                    config.host, config.port
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        health.set_engine(engine.clone());
        let (stop, stopped) = watch::channel(false);
        let background = engine.spawn_background(stopped.clone());
        let server_config = ServerConfig::for_node(config, addr.port(), engine.clone());
        let service = MilvusServiceServer::new(NodeService::new(
            engine.clone(),
            server_config,
            config.version.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut stopped = stopped;
        let killed = Arc::new(AtomicBool::new(false));
        let connections_killed = killed.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(RpcLayer::new(RpcSide::Node, Some(rpcs)))
                .add_service(service)
                .serve_with_incoming_shutdown(
                    NodeIncoming::new(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        tls,
                        connections_killed,
                    ),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                ),
        );
        health.set_phase(Phase::Serving);
        tracing::info!(
            role = config.role.name(),
            %addr,
            meta = %uri,
            storage = %config.storage.display(),
            tls = config.tls.is_some(),
            mtls = config.tls.as_ref().is_some_and(|t| t.require_client_cert),
            "node serving"
        );
        if exposed(
            addr.ip(),
            config.tls.as_ref().is_some_and(|t| t.require_client_cert),
        ) {
            tracing::warn!(
                %addr,
                "this node answers anyone who can reach it: it has no authentication of its own, and a client can \
                 write, drop collections and change settings. Bind it to the address the gateway reaches it on \
                 (--host / MISHARDS_HOST, e.g. a private interface), firewall the port to the gateway's hosts, or \
                 require client certificates (tls_require_client_cert)"
            );
        }
        Ok(RunningNode {
            addr,
            probe_addr: probe.as_ref().map(|p| p.addr),
            probe,
            health,
            engine,
            killed,
            stop,
            server,
            background,
        })
    }
}

/// Whether a node listening on `ip` is reachable beyond this host without client certificates: bound
/// to every interface, or to an address that is neither loopback nor private.
fn exposed(ip: std::net::IpAddr, client_certs_required: bool) -> bool {
    if client_certs_required {
        return false;
    }
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_unspecified() || !(v4.is_loopback() || v4.is_private() || v4.is_link_local())
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_unspecified()
                || !(v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exposed;

    #[test]
    fn nodes_reachable_beyond_private_networks_are_called_exposed() {
        for (ip, want) in [
            ("0.0.0.0", true),
            ("::", true),
            ("203.0.113.7", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("192.168.0.9", false),
            ("::1", false),
            ("fd00::5", false),
        ] {
            assert_eq!(exposed(ip.parse().unwrap(), false), want, "{ip}");
            assert!(
                !exposed(ip.parse().unwrap(), true),
                "{ip} with client certificates"
            );
        }
    }
}
