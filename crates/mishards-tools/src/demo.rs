//! The embedded cluster: one write node, read nodes and a gateway in this process, on loopback ports,
//! sharing one data folder and its SQLite metadata. `mishards demo` runs it; the chaos runner kills,
//! restarts, adds and removes its nodes (membership goes through the gateway's hosts file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mishards_config::{DiscoveryConfig, DiscoveryKind, GatewayConfig, NodeAddr, NodeConfig, Role};
use mishards_gateway::{self as gateway, GatewayError, RunningGateway, Tuning};
use mishards_node::{self as node, NodeError, RunningNode};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("{0}")]
    Io(String),
    #[error("no read node {0} in this cluster")]
    NoSuchReader(usize),
}

/// The gateway finds its read nodes in this file, re-read every second.
pub const HOSTS_FILE_NAME: &str = "read-nodes.txt";

pub struct EmbeddedCluster {
    data_dir: PathBuf,
    node_template: NodeConfig,
    hosts_file: PathBuf,
    pub writer: Option<RunningNode>,
    pub writer_addr: SocketAddr,
    /// `None` while a read node is stopped; its address stays, so a restart takes the same one.
    pub readers: Vec<Option<RunningNode>>,
    pub reader_addrs: Vec<SocketAddr>,
    /// Read nodes the gateway's hosts file lists (removed ones are left out).
    listed: Vec<bool>,
    /// The write node's fixed port (0: every node on a free port).
    first_port: u16,
    pub gateway: RunningGateway,
}

/// The `n`-th port after `first` (0 stays 0: a free port).
fn port_after(first: u16, n: usize) -> u16 {
    if first == 0 {
        0
    } else {
        first.saturating_add(n as u16)
    }
}

fn to_node_addr(a: SocketAddr) -> NodeAddr {
    NodeAddr {
        host: a.ip().to_string().into(),
        port: a.port(),
    }
}

impl EmbeddedCluster {
    /// Starts it all in `data_dir` (created if missing). From `node` the nodes take everything but
    /// role, host, storage and metadata; its port, when not 0, is the write node's and the read nodes
    /// take the ones after it (fixed addresses: a chaos replay's nodes are the same nodes). From
    /// `gateway` the gateway takes everything but the write node, metadata and discovery, which point at
    /// these nodes.
    pub async fn start(
        data_dir: &Path,
        readers: usize,
        mut gateway_config: GatewayConfig,
        node_template: NodeConfig,
        tuning: Tuning,
    ) -> Result<EmbeddedCluster, EmbeddedError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| EmbeddedError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        let first_port = node_template.port;
        let node_template = NodeConfig {
            host: "127.0.0.1".into(),
            port: 0,
            storage: data_dir.clone(),
            meta_uri: None,
            ..node_template
        };
        let writer = node::start(&NodeConfig {
            role: Role::Writer,
            port: first_port,
            ..node_template.clone()
        })
        .await?;
        let writer_addr = writer.addr;
        let mut started = Vec::new();
        for i in 0..readers {
            started.push(
                node::start(&NodeConfig {
                    role: Role::Reader,
                    port: port_after(first_port, i + 1),
                    ..node_template.clone()
                })
                .await?,
            );
        }
        let reader_addrs: Vec<SocketAddr> = started.iter().map(|r| r.addr).collect();
        let hosts_file = data_dir.join(HOSTS_FILE_NAME);
        gateway_config.write_node = Some(to_node_addr(writer_addr));
        gateway_config.meta_uri = format!(
            "sqlite://{}",
            data_dir.join(mishards_meta::SQLITE_FILE_NAME).display()
        )
        .into();
        gateway_config.discovery = DiscoveryConfig {
            kind: DiscoveryKind::File,
            static_hosts: Vec::new(),
            file: Some(hosts_file.clone()),
            kubernetes: None,
        };
        write_hosts_file(&hosts_file, &reader_addrs)?;
        let gateway = gateway::start(&gateway_config, tuning).await?;
        Ok(EmbeddedCluster {
            data_dir,
            node_template,
            hosts_file,
            writer: Some(writer),
            writer_addr,
            readers: started.into_iter().map(Some).collect(),
            listed: vec![true; reader_addrs.len()],
            reader_addrs,
            first_port,
            gateway,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Rewrites the hosts file: every listed read node, stopped or not (a stopped one is the
    /// gateway's to find down, as with a real crash).
    fn publish(&self) -> Result<(), EmbeddedError> {
        let listed: Vec<SocketAddr> = self
            .reader_addrs
            .iter()
            .zip(&self.listed)
            .filter(|(_, listed)| **listed)
            .map(|(a, _)| *a)
            .collect();
        write_hosts_file(&self.hosts_file, &listed)
    }

    fn reader_config(&self, port: u16) -> NodeConfig {
        NodeConfig {
            role: Role::Reader,
            port,
            ..self.node_template.clone()
        }
    }

    /// Stops read node `i` at once: in-flight calls fail, nothing is handed over.
    pub async fn kill_reader(&mut self, i: usize) -> Result<(), EmbeddedError> {
        let slot = self
            .readers
            .get_mut(i)
            .ok_or(EmbeddedError::NoSuchReader(i))?;
        if let Some(reader) = slot.take() {
            reader.abort().await;
        }
        Ok(())
    }

    /// Starts read node `i` again on its old address.
    pub async fn restart_reader(&mut self, i: usize) -> Result<(), EmbeddedError> {
        let port = self
            .reader_addrs
            .get(i)
            .ok_or(EmbeddedError::NoSuchReader(i))?
            .port();
        if self.readers[i].is_none() {
            self.readers[i] = Some(node::start(&self.reader_config(port)).await?);
        }
        Ok(())
    }

    /// Starts one more read node and lists it; returns its index.
    pub async fn add_reader(&mut self) -> Result<usize, EmbeddedError> {
        let port = port_after(self.first_port, self.reader_addrs.len() + 1);
        let reader = node::start(&self.reader_config(port)).await?;
        self.reader_addrs.push(reader.addr);
        self.readers.push(Some(reader));
        self.listed.push(true);
        self.publish()?;
        Ok(self.readers.len() - 1)
    }

    /// Takes read node `i` out of the hosts file and stops it at once: the gateway learns of the
    /// removal on its next read of the file, and until then its calls to the node fail.
    pub async fn remove_reader(&mut self, i: usize) -> Result<(), EmbeddedError> {
        let listed = self
            .listed
            .get_mut(i)
            .ok_or(EmbeddedError::NoSuchReader(i))?;
        *listed = false;
        self.publish()?;
        if let Some(reader) = self.readers[i].take() {
            reader.abort().await;
        }
        Ok(())
    }

    /// Stops the write node as `kill -9` would: no final flush; only its log keeps unflushed writes.
    /// `wipe_log` also deletes the log (a test's way to show what losing it costs).
    pub async fn crash_writer(&mut self, wipe_log: bool) -> Result<(), EmbeddedError> {
        if let Some(writer) = self.writer.take() {
            writer.abort().await;
        }
        if wipe_log {
            let wal = self.data_dir.join(node::WAL_DIR_NAME);
            if wal.exists() {
                std::fs::remove_dir_all(&wal).map_err(|e| {
                    EmbeddedError::Io(format!("cannot remove {}: {e}", wal.display()))
                })?;
            }
        }
        Ok(())
    }

    /// Starts the write node again on its old address (replaying its log).
    pub async fn restart_writer(&mut self) -> Result<(), EmbeddedError> {
        if self.writer.is_none() {
            self.writer = Some(
                node::start(&NodeConfig {
                    role: Role::Writer,
                    port: self.writer_addr.port(),
                    ..self.node_template.clone()
                })
                .await?,
            );
        }
        Ok(())
    }

    /// Stops the gateway, then the read nodes, then the write node (which flushes).
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        for reader in self.readers.into_iter().flatten() {
            reader.shutdown().await;
        }
        if let Some(writer) = self.writer {
            writer.shutdown().await;
        }
    }
}

/// Replaces the hosts file in one rename, so the gateway never reads half of it.
fn write_hosts_file(path: &Path, readers: &[SocketAddr]) -> Result<(), EmbeddedError> {
    let text: String = readers.iter().map(|a| format!("{a}\n")).collect();
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| EmbeddedError::Io(format!("cannot write {}: {e}", path.display())))
}
