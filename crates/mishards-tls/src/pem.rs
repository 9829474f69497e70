//! PEM files into rustls configs. Every config uses the ring provider explicitly, so nothing depends on
//! which provider a process installed as its default, and offers ALPN `h2` (gRPC is HTTP/2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// One file as read: its path (for messages) and contents.
pub(crate) type FileContents = (PathBuf, Vec<u8>);

const ALPN_H2: &[u8] = b"h2";

/// The ring provider, as tonic's `tls-ring` uses. rustls 0.23.48 deprecates it because ring has no
/// post-quantum key exchange; aws-lc-rs, which has, needs cmake and a C toolchain to build. Moving is a
/// feature switch here and in tonic when the project wants it.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        store.add(cert).map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: format!("not a CA certificate rustls accepts: {e}"),
        })?;
    }
    Ok(store)
}

fn config_error(side: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Config {
        side,
        reason: e.to_string(),
    }
}

/// A server config from `[cert, key]` or `[cert, key, client CA]`. With a client CA, a client's
/// certificate must chain to it; without one it is optional unless `require_client_cert`.
pub(crate) fn server_config(
    files: &[FileContents],
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let [(cert_path, cert), (key_path, key), rest @ ..] = files else {
        unreachable!("ServerTls::load passes the certificate and key first")
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error("server"))?;
    let builder = match rest.first() {
        Some((ca_path, ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca_path, ca)?),
                provider(),
            );
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config {
                side: "server",
                reason: e.to_string(),
            })?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certificates(cert_path, cert)?, private_key(key_path, key)?)
        .map_err(config_error("server"))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client config from `[CA]` or `[CA, client cert, client key]`.
pub(crate) fn client_config(files: &[FileContents]) -> Result<rustls::ClientConfig, TlsError> {
    let [(ca_path, ca), rest @ ..] = files else {
        unreachable!("ClientTls::load passes the CA first")
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error("client"))?
        .with_root_certificates(roots(ca_path, ca)?);
    let mut config = match rest {
        [(cert_path, cert), (key_path, key)] => builder
            .with_client_auth_cert(certificates(cert_path, cert)?, private_key(key_path, key)?)
            .map_err(config_error("client"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
