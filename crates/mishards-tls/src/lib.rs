//! TLS for the gRPC ports, shared by the gateway and the node (which never depend on each other): rustls
//! with the ring provider, certificates, keys and CAs read from PEM files and re-read when they change.
//!
//! Modules, one job each:
//! - `pem`: PEM files into rustls server and client configs (ALPN h2, as gRPC needs).
//! - `reload`: a config that watches its files and swaps itself for new connections.
//! - `stream`: a connection that is plain TCP or TLS, so one server or connector serves both.
//! - `testing` (feature `test-certs`): a throwaway CA for tests.

mod pem;
mod reload;
mod stream;
#[cfg(any(test, feature = "test-certs"))]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use mishards_config::{NodeTlsConfig, ServerTlsConfig};
use reload::Reloading;

pub use stream::MaybeTls;

/// A server's TLS connection.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;
/// A client's TLS connection.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Longest a TLS handshake may take: a client that stalls it holds no connection slot longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("the certificates and key do not make a TLS {side} configuration: {reason}")]
    Config { side: &'static str, reason: String },
    #[error("`{0}` is not a DNS name or IP address a certificate can be checked against")]
    ServerName(String),
}

/// TLS on a listening gRPC port: accepts connections with the current certificate (the one in the
/// files as last read, see `reload`).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Reads the files (any error here is a refusal to start) and, when the config asks for it and a
    /// tokio runtime is running, watches them for changes for as long as this value or a clone lives.
    pub fn load(config: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let mut files = vec![config.cert.clone(), config.key.clone()];
        files.extend(config.client_ca.clone());
        let require_client_cert = config.require_client_cert;
        let reloading = Reloading::load("server", files, move |files| {
            pem::server_config(files, require_client_cert)
        })?;
        if let Some(interval) = config.reload_interval {
            reload::watch(&reloading, interval);
        }
        Ok(ServerTls { config: reloading })
    }

    /// Completes the TLS handshake of an accepted connection, within `HANDSHAKE_TIMEOUT`.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<ServerStream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

/// TLS on outgoing connections (the gateway's links to its nodes): verifies the server against the
/// configured CA and shows the client certificate, if one is configured.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<rustls::ClientConfig>>,
    /// Checked instead of each server's own host.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// As `ServerTls::load`, for the client side.
    pub fn load(config: &NodeTlsConfig) -> Result<ClientTls, TlsError> {
        let server_name = config.server_name.as_deref().map(server_name).transpose()?;
        let mut files = vec![config.ca.clone()];
        if let Some((cert, key)) = &config.client_cert {
            files.extend([cert.clone(), key.clone()]);
        }
        let reloading = Reloading::load("client", files, pem::client_config)?;
        if let Some(interval) = config.reload_interval {
            reload::watch(&reloading, interval);
        }
        Ok(ClientTls {
            config: reloading,
            server_name,
        })
    }

    /// Completes the TLS handshake on a connection to `host` (a DNS name or an IP address, IPv6 with
    /// or without brackets), checking the server's certificate for `host` unless a server name is
    /// configured; within `HANDSHAKE_TIMEOUT`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<ClientStream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.files())
            .finish()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// `host` as a name to check a certificate against.
fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

#[cfg(test)]
mod tests;
