//! Starting and stopping a node: metadata, engine, background work, and the gRPC listener.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::NodeError;
use super::engine::{Engine, EngineOptions};
use super::service::NodeService;
use crate::config::{NodeConfig, Role};
use crate::meta::{MetaOptions, MetaStore, MetaUri, SQLITE_FILE_NAME, SqliteTarget};
use crate::proto::milvus_service_server::MilvusServiceServer;
use crate::telemetry::{RpcLayer, RpcSide};

/// Largest gRPC message a node takes or sends: an insert may carry 256 MB of vectors.
pub const MAX_MESSAGE_BYTES: usize = 300 << 20;

/// A node that serves until `shutdown` is called.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: JoinHandle<()>,
}

impl RunningNode {
    /// Stops taking requests, lets the write node flush once more, and waits for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "gRPC server ended with an error");
        }
        let _ = self.background.await;
    }
}

/// The metadata URI a node uses: the configured one, else `meta.sqlite` in its storage folder.
pub fn meta_uri(config: &NodeConfig) -> Result<MetaUri, NodeError> {
    match &config.meta_uri {
        Some(text) => Ok(MetaUri::parse(text, Some(&config.storage))?),
        None => Ok(MetaUri::Sqlite(SqliteTarget::File(
            config.storage.join(SQLITE_FILE_NAME),
        ))),
    }
}

/// Opens the metadata (a write node creates the schema; a read node needs it to exist), the engine, and
/// starts serving on `config.host:config.port` (port 0 picks a free port; see `RunningNode::addr`).
pub async fn start(config: &NodeConfig) -> Result<RunningNode, NodeError> {
    let uri = meta_uri(config)?;
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
    let meta = match config.role {
        Role::Writer => MetaStore::open(&uri, &options).await?,
        Role::Reader => {
            let meta = MetaStore::connect(&uri, &options).await?;
            meta.check_schema().await?;
            meta
        }
    };
    let engine = Engine::open(
        meta,
        EngineOptions {
            role: config.role,
            storage: config.storage.clone(),
            auto_flush_interval: config.auto_flush_interval,
            gc_grace: config.gc_grace,
            cache_bytes: config.cache_bytes,
            index_build_rows: config.index_build_rows,
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
    let (stop, stopped) = watch::channel(false);
    let background = engine.spawn_background(stopped.clone());
    let service =
        MilvusServiceServer::new(NodeService::new(engine.clone(), config.version.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut stopped = stopped;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RpcLayer::new(RpcSide::Node, None))
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ),
    );
    tracing::info!(role = config.role.name(), %addr, meta = %uri, storage = %config.storage.display(), "node serving");
    Ok(RunningNode {
        addr,
        engine,
        stop,
        server,
        background,
    })
}
