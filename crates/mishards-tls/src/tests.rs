//! Handshakes over loopback with throwaway CAs: trust, refusal, client certificates, and reloads.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::testing::{PemFiles, TestCa};

fn server_settings(files: &PemFiles, client_ca: Option<&Path>, require: bool) -> ServerTlsConfig {
    ServerTlsConfig {
        cert: files.cert.clone(),
        key: files.key.clone(),
        client_ca: client_ca.map(Path::to_path_buf),
        require_client_cert: require,
        reload_interval: None,
    }
}

fn client_settings(ca: &Path, client: Option<&PemFiles>) -> NodeTlsConfig {
    NodeTlsConfig {
        ca: ca.to_path_buf(),
        client_cert: client.map(|f| (f.cert.clone(), f.key.clone())),
        server_name: None,
        reload_interval: None,
    }
}

/// One connection from `client` to a server with `server`: both sides' outcome. On success the server
/// echoes one byte back, so the connection is shown to carry data.
async fn handshake(server: &ServerTls, client: &ClientTls, host: &str) -> (bool, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = server.accept(tcp).await else {
            return false;
        };
        let mut byte = [0u8; 1];
        if tls.read_exact(&mut byte).await.is_err() {
            return false;
        }
        tls.write_all(&byte).await.is_ok() && tls.flush().await.is_ok()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_ok = match client.connect(host, tcp).await {
        Ok(mut tls) => {
            let mut byte = [0u8; 1];
            tls.write_all(b"x").await.is_ok()
                && tls.flush().await.is_ok()
                && tls.read_exact(&mut byte).await.is_ok()
                && &byte == b"x"
        }
        Err(_) => false,
    };
    (serving.await.unwrap(), client_ok)
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_and_one_trusting_another_ca_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.pem"));
    let server_files = ca.issue_files(dir.path(), "node", &["localhost", "127.0.0.1"]);
    let server = ServerTls::load(&server_settings(&server_files, None, false)).unwrap();
    let client = ClientTls::load(&client_settings(&ca_file, None)).unwrap();
    assert_eq!(handshake(&server, &client, "127.0.0.1").await, (true, true));
    assert_eq!(handshake(&server, &client, "localhost").await, (true, true));
    // A name the certificate does not carry is refused.
    assert!(!handshake(&server, &client, "other.example").await.1);
    let other = TestCa::new("another CA");
    let other_file = other.write(&dir.path().join("other.pem"));
    let stranger = ClientTls::load(&client_settings(&other_file, None)).unwrap();
    assert_eq!(
        handshake(&server, &stranger, "127.0.0.1").await,
        (false, false)
    );
}

#[tokio::test]
async fn the_server_name_setting_replaces_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.pem"));
    let server_files = ca.issue_files(dir.path(), "node", &["nodes.internal"]);
    let server = ServerTls::load(&server_settings(&server_files, None, false)).unwrap();
    let plain = ClientTls::load(&client_settings(&ca_file, None)).unwrap();
    assert!(!handshake(&server, &plain, "127.0.0.1").await.1);
    let named = ClientTls::load(&NodeTlsConfig {
        server_name: Some("nodes.internal".into()),
        ..client_settings(&ca_file, None)
    })
    .unwrap();
    assert_eq!(handshake(&server, &named, "127.0.0.1").await, (true, true));
}

#[tokio::test]
async fn required_client_certificates_must_chain_to_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.pem"));
    let server_files = ca.issue_files(dir.path(), "node", &["127.0.0.1"]);
    let gateway_files = ca.issue_files(dir.path(), "gateway", &["gateway"]);
    let rogue = TestCa::new("rogue CA");
    let rogue_files = rogue.issue_files(dir.path(), "rogue", &["gateway"]);
    let required = ServerTls::load(&server_settings(&server_files, Some(&ca_file), true)).unwrap();
    let with_cert = ClientTls::load(&client_settings(&ca_file, Some(&gateway_files))).unwrap();
    let without = ClientTls::load(&client_settings(&ca_file, None)).unwrap();
    let with_rogue = ClientTls::load(&client_settings(&ca_file, Some(&rogue_files))).unwrap();
    assert_eq!(
        handshake(&required, &with_cert, "127.0.0.1").await,
        (true, true)
    );
    assert!(!handshake(&required, &without, "127.0.0.1").await.0);
    assert!(!handshake(&required, &with_rogue, "127.0.0.1").await.0);
    // Optional: no certificate is fine, a certificate of another CA is not.
    let optional = ServerTls::load(&server_settings(&server_files, Some(&ca_file), false)).unwrap();
    assert_eq!(
        handshake(&optional, &without, "127.0.0.1").await,
        (true, true)
    );
    assert!(!handshake(&optional, &with_rogue, "127.0.0.1").await.0);
}

#[test]
fn files_that_make_no_config_are_refused_at_load_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let files = ca.issue_files(dir.path(), "node", &["127.0.0.1"]);
    let other = ca.issue_files(dir.path(), "other", &["127.0.0.1"]);
    let missing = PemFiles {
        cert: dir.path().join("absent.pem"),
        ..files.clone()
    };
    let err = ServerTls::load(&server_settings(&missing, None, false))
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.pem"), "{err}");
    // A key that is not the certificate's.
    let mismatched = PemFiles {
        key: other.key.clone(),
        ..files.clone()
    };
    let err = ServerTls::load(&server_settings(&mismatched, None, false))
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::Config { .. }), "{err}");
    // A key file given as the certificate, and the other way round.
    let swapped = PemFiles {
        cert: files.key.clone(),
        key: files.cert.clone(),
    };
    let err = ServerTls::load(&server_settings(&swapped, None, false))
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = ClientTls::load(&client_settings(&files.key, None))
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let bad_name = ClientTls::load(&NodeTlsConfig {
        server_name: Some("not a name".into()),
        ..client_settings(&files.cert, None)
    })
    .err()
    .unwrap();
    assert!(matches!(bad_name, TlsError::ServerName(_)), "{bad_name}");
    assert!(server_name("[::1]").is_ok());
}

#[test]
fn a_poll_swaps_in_good_new_files_and_keeps_the_old_config_for_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let files = ca.issue_files(dir.path(), "node", &["127.0.0.1"]);
    let server = ServerTls::load(&server_settings(&files, None, false)).unwrap();
    let first = server.config.current();
    assert!(!server.config.poll(), "unchanged files reload nothing");
    assert!(Arc::ptr_eq(&first, &server.config.current()));
    // A half-written key: the old config stays, and the same bad contents are not retried.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap();
    assert!(!server.config.poll());
    assert!(Arc::ptr_eq(&first, &server.config.current()));
    assert!(!server.config.poll());
    // A whole new certificate and key from another CA.
    let next = TestCa::new("next CA").issue_files(dir.path(), "next", &["127.0.0.1"]);
    std::fs::rename(&next.cert, &files.cert).unwrap();
    std::fs::rename(&next.key, &files.key).unwrap();
    assert!(server.config.poll());
    assert!(!Arc::ptr_eq(&first, &server.config.current()));
    // A vanished file keeps the current config too.
    let second = server.config.current();
    std::fs::remove_file(&files.cert).unwrap();
    assert!(!server.config.poll());
    assert!(Arc::ptr_eq(&second, &server.config.current()));
}

#[tokio::test]
async fn the_watcher_applies_new_files_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let new_ca_file = new_ca.write(&dir.path().join("new-ca.pem"));
    let files = old_ca.issue_files(dir.path(), "node", &["127.0.0.1"]);
    let server = ServerTls::load(&ServerTlsConfig {
        reload_interval: Some(Duration::from_millis(20)),
        ..server_settings(&files, None, false)
    })
    .unwrap();
    let client = ClientTls::load(&client_settings(&new_ca_file, None)).unwrap();
    assert!(!handshake(&server, &client, "127.0.0.1").await.1);
    let next = new_ca.issue_files(dir.path(), "next", &["127.0.0.1"]);
    std::fs::rename(&next.key, &files.key).unwrap();
    std::fs::rename(&next.cert, &files.cert).unwrap();
    // Bounded: the watcher polls every 20 ms.
    let mut connected = false;
    for _ in 0..250 {
        if handshake(&server, &client, "127.0.0.1").await == (true, true) {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected, "the new certificate was not picked up");
}

#[tokio::test]
async fn a_client_poll_picks_up_a_new_ca_for_its_next_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let ca_file = old_ca.write(&dir.path().join("ca.pem"));
    let server_files = new_ca.issue_files(dir.path(), "node", &["127.0.0.1"]);
    let server = ServerTls::load(&server_settings(&server_files, None, false)).unwrap();
    let client = ClientTls::load(&client_settings(&ca_file, None)).unwrap();
    assert!(!handshake(&server, &client, "127.0.0.1").await.1);
    new_ca.write(&ca_file);
    assert!(client.config.poll());
    assert_eq!(handshake(&server, &client, "127.0.0.1").await, (true, true));
}
