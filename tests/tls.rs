//! TLS on the gateway's client port and on its links to the nodes, with certificates from throwaway CAs
//! (mishards-tls `testing`): a client trusting the CA connects and searches; a plain client, a client
//! trusting another CA, and (with mutual TLS) a client without a certificate are refused; new
//! certificates written over the old files are served to new connections without a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Client, RandomVectors, SplitMix64, cmd, create_collection, flush, insert, node_config, schema,
    search, start_gateway_with,
};
use mishards::tls::testing::{PemFiles, TestCa};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How a test client speaks to a port.
enum Dial<'a> {
    Plain,
    Tls {
        ca: &'a TestCa,
        identity: Option<&'a PemFiles>,
    },
}

/// Connects to `addr` and asks `Cmd("version")`: the client, or why it got no answer. Under TLS 1.3
/// a refused client certificate shows only at the first call, so a connection counts once it answered.
async fn dial(addr: SocketAddr, how: Dial<'_>) -> Result<Client, String> {
    let endpoint = match how {
        Dial::Plain => {
            Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?
        }
        Dial::Tls { ca, identity } => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
            if let Some(files) = identity {
                let cert = std::fs::read(&files.cert).map_err(|e| e.to_string())?;
                let key = std::fs::read(&files.key).map_err(|e| e.to_string())?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| e.to_string())?
                .tls_config(tls)
                .map_err(|e| e.to_string())?
        }
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = Client::new(channel);
    let reply = client
        .cmd(mishards::proto::Command {
            cmd: "version".into(),
        })
        .await
        .map_err(|e| format!("Cmd: {e:?}"))?
        .into_inner();
    assert_eq!(reply.status.map(|s| s.error_code), Some(0));
    Ok(client)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A write node and a read node on one storage folder, both TLS with the same certificate (for
/// 127.0.0.1), requiring client certificates of `ca` when `mtls`.
struct TlsNodes {
    writer: mishards::node::RunningNode,
    reader: mishards::node::RunningNode,
    meta_uri: String,
    hosts_file: std::path::PathBuf,
}

async fn start_nodes(dir: &Path, ca: &TestCa, mtls: bool) -> TlsNodes {
    let storage = dir.join("data");
    let meta_uri = format!("sqlite://{}", storage.join("meta.sqlite").display());
    let ca_file = ca.write(&dir.join("node-ca.pem"));
    let cert = ca.issue_files(dir, "node", &["127.0.0.1", "localhost"]);
    let mut flags = vec![
        ("meta-uri", meta_uri.clone()),
        ("auto-flush-interval", "3600".to_string()),
        ("tls-cert", path(&cert.cert)),
        ("tls-key", path(&cert.key)),
    ];
    if mtls {
        flags.push(("tls-client-ca", path(&ca_file)));
        flags.push(("tls-require-client-cert", "true".to_string()));
    }
    let writer = mishards::node::start(&node_config("rw", &storage, &flags))
        .await
        .expect("write node");
    let reader = mishards::node::start(&node_config("ro", &storage, &flags))
        .await
        .expect("read node");
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, reader.addr.to_string()).expect("hosts file");
    TlsNodes {
        writer,
        reader,
        meta_uri,
        hosts_file,
    }
}

/// Waits (bounded) until the gateway `client` reaches reports its write node and read node in `state`.
async fn wait_for_nodes(client: &mut Client, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = common::conn_stats(client).await;
        let readers_in_state = stats["read_nodes"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a.iter().all(|r| r["state"] == state));
        if readers_in_state && stats["write_node"]["state"] == state {
            return stats;
        }
        assert!(Instant::now() < deadline, "nodes not {state}: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_answers_trusted_clients_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("mishards test CA");
    let nodes = start_nodes(dir.path(), &ca, true).await;
    let gateway_cert = ca.issue_files(dir.path(), "gateway", &["127.0.0.1"]);
    let gateway_client = ca.issue_files(dir.path(), "gateway-client", &["mishards-gateway"]);
    let ca_file = ca.write(&dir.path().join("ca.pem"));
    let gateway = start_gateway_with(
        &nodes.writer.addr.to_string(),
        &nodes.meta_uri,
        &nodes.hosts_file,
        &[
            ("tls-cert", path(&gateway_cert.cert)),
            ("tls-key", path(&gateway_cert.key)),
            ("node-tls-ca", path(&ca_file)),
            ("node-tls-cert", path(&gateway_client.cert)),
            ("node-tls-key", path(&gateway_client.key)),
        ],
    )
    .await;
    let trusted = Dial::Tls {
        ca: &ca,
        identity: None,
    };
    let mut client = dial(gateway.addr, trusted)
        .await
        .expect("a trusting client");
    // The gateway passed both nodes' version gate over mutual TLS.
    wait_for_nodes(&mut client, "healthy").await;

    // Data in, through the write node; a search over the read node's files, exact.
    let name = "tls_vectors";
    create_collection(&mut client, schema(name, 8, 1024, 1)).await;
    let vectors = SplitMix64::new(14).vectors(200, 8);
    let ids: Vec<i64> = (1..=200).collect();
    let inserted = insert(&mut client, name, "", &vectors, ids.clone()).await;
    assert_eq!(inserted.vector_id_array, ids);
    flush(&mut client, &[name]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = search(&mut client, name, &vectors[41..44], 1).await;
        assert_eq!(
            result.status.as_ref().map(|s| s.error_code),
            Some(0),
            "{result:?}"
        );
        assert_eq!(result.ids, vec![42, 43, 44]);
        let stats = common::conn_stats(&mut client).await;
        if stats["read_nodes"][0]["requests"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        // Until the metadata poller sees the flushed file, searches go to the write node.
        assert!(
            Instant::now() < deadline,
            "no search reached the read node: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refused: plain TCP, and TLS trusting another CA.
    let plain = dial(gateway.addr, Dial::Plain).await;
    assert!(plain.is_err(), "a plain client got an answer");
    let stranger_ca = TestCa::new("another CA");
    let stranger = dial(
        gateway.addr,
        Dial::Tls {
            ca: &stranger_ca,
            identity: None,
        },
    )
    .await;
    let err = stranger.expect_err("a client trusting another CA got an answer");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    // The nodes require a client certificate of the CA: the gateway's passes, none or another's fails.
    let node = nodes.reader.addr;
    let with_cert = Dial::Tls {
        ca: &ca,
        identity: Some(&gateway_client),
    };
    dial(node, with_cert)
        .await
        .expect("the gateway's client certificate");
    let without = Dial::Tls {
        ca: &ca,
        identity: None,
    };
    assert!(
        dial(node, without).await.is_err(),
        "a node answered a client without a certificate"
    );
    let rogue = stranger_ca.issue_files(dir.path(), "rogue", &["mishards-gateway"]);
    let rogue_dial = Dial::Tls {
        ca: &ca,
        identity: Some(&rogue),
    };
    assert!(
        dial(node, rogue_dial).await.is_err(),
        "a node answered a certificate of another CA"
    );
    assert!(
        dial(node, Dial::Plain).await.is_err(),
        "a TLS node answered plain TCP"
    );

    // A gateway without the client certificate cannot use the nodes: both are down, with a reason.
    let no_identity = start_gateway_with(
        &nodes.writer.addr.to_string(),
        &nodes.meta_uri,
        &nodes.hosts_file,
        &[("node-tls-ca", path(&ca_file))],
    )
    .await;
    let mut plain_client = dial(no_identity.addr, Dial::Plain)
        .await
        .expect("plain gateway port");
    let stats = wait_for_nodes(&mut plain_client, "down").await;
    assert!(
        !stats["write_node"]["reason"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{stats}"
    );
    no_identity.shutdown().await;

    gateway.shutdown().await;
    nodes.reader.shutdown().await;
    nodes.writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_requires_certificates_and_reloads_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node_ca = TestCa::new("node CA");
    let nodes = start_nodes(dir.path(), &node_ca, false).await;
    let node_ca_file = node_ca.write(&dir.path().join("node-ca-for-gateway.pem"));
    let old_ca = TestCa::new("old client-port CA");
    let served = old_ca.issue_files(dir.path(), "served", &["127.0.0.1"]);
    let client_ca_file = old_ca.write(&dir.path().join("client-ca.pem"));
    let user = old_ca.issue_files(dir.path(), "user", &["a-user"]);
    let gateway = start_gateway_with(
        &nodes.writer.addr.to_string(),
        &nodes.meta_uri,
        &nodes.hosts_file,
        &[
            ("tls-cert", path(&served.cert)),
            ("tls-key", path(&served.key)),
            ("tls-client-ca", path(&client_ca_file)),
            ("tls-require-client-cert", "true".to_string()),
            ("tls-reload-interval", "0.1".to_string()),
            ("node-tls-ca", path(&node_ca_file)),
        ],
    )
    .await;
    let as_user = |ca| Dial::Tls {
        ca,
        identity: Some(&user),
    };
    let mut client = dial(gateway.addr, as_user(&old_ca))
        .await
        .expect("a client with a certificate");
    wait_for_nodes(&mut client, "healthy").await;
    let anonymous = Dial::Tls {
        ca: &old_ca,
        identity: None,
    };
    assert!(
        dial(gateway.addr, anonymous).await.is_err(),
        "a client without a certificate got an answer"
    );

    // A bad new key: the old certificate goes on serving new connections.
    std::fs::write(&served.key, "-----BEGIN PRIVATE KEY-----\nnot base64\n").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    dial(gateway.addr, as_user(&old_ca))
        .await
        .expect("the old certificate after a bad file");

    // A certificate from a new CA, written over the files (each replaced whole, key first).
    let new_ca = TestCa::new("new client-port CA");
    let next = new_ca.issue_files(dir.path(), "next", &["127.0.0.1"]);
    std::fs::rename(&next.key, &served.key).expect("replace the key");
    std::fs::rename(&next.cert, &served.cert).expect("replace the certificate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fresh = loop {
        match dial(gateway.addr, as_user(&new_ca)).await {
            Ok(client) => break client,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new certificate was not served: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cmd(&mut fresh, "status").await.string_reply, "OK");
    // New connections get only the new certificate; the connection opened before still works.
    assert!(
        dial(gateway.addr, as_user(&old_ca)).await.is_err(),
        "the old certificate is still served"
    );
    assert_eq!(cmd(&mut client, "status").await.string_reply, "OK");

    gateway.shutdown().await;
    nodes.reader.shutdown().await;
    nodes.writer.shutdown().await;
}

#[tokio::test]
async fn unusable_certificate_files_stop_a_node_and_a_gateway_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("mishards test CA");
    let good = ca.issue_files(dir.path(), "good", &["127.0.0.1"]);
    let other = ca.issue_files(dir.path(), "other", &["127.0.0.1"]);
    let storage = dir.path().join("data");
    let missing = dir.path().join("missing.pem");
    let node = |cert: &Path, key: &Path| {
        node_config(
            "rw",
            &storage,
            &[("tls-cert", path(cert)), ("tls-key", path(key))],
        )
    };
    let err = mishards::node::start(&node(&missing, &good.key))
        .await
        .err()
        .expect("a node with a missing certificate started");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key that is not the certificate's.
    let err = mishards::node::start(&node(&good.cert, &other.key))
        .await
        .err()
        .expect("a node with another certificate's key started");
    assert!(err.to_string().contains("TLS"), "{err}");
    // A gateway refuses to start too, naming the file.
    let writer = mishards::node::start(&node_config("rw", &storage, &[]))
        .await
        .expect("write node");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "").expect("hosts file");
    let meta_uri = format!("sqlite://{}", storage.join("meta.sqlite").display());
    let settings = [("node-tls-ca", path(&good.key))];
    let mut flags: std::collections::HashMap<&'static str, String> = [
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("woserver", writer.addr.to_string()),
        ("meta-uri", meta_uri),
        ("discovery", "file".to_string()),
        ("discovery-file", path(&hosts)),
        ("admin-port", "off".to_string()),
    ]
    .into_iter()
    .collect();
    flags.extend(settings);
    let env = std::collections::HashMap::new();
    let settings =
        mishards::config::Settings::resolve(mishards::config::Scope::Gateway, &flags, &env, None)
            .expect("gateway settings");
    let config = mishards::config::GatewayConfig::from_settings(&settings).expect("gateway config");
    let err = mishards::gateway::start(&config, Default::default())
        .await
        .err()
        .expect("a gateway with a key as its CA started");
    assert!(err.to_string().contains("good.key"), "{err}");
    writer.shutdown().await;
}

/// Runs `mishards bench ARGS…` (bounded to 60 s): exit code, stdout, stderr.
fn bench_process(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mishards"))
        .arg("bench")
        .args(args)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mishards bench");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("bench status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mishards bench did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("bench output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mishards demo` with a certificate speaks TLS on its client port, and `mishards bench --tls-ca` loads
/// and searches it exactly; with mutual TLS the bench's `--tls-cert`/`--tls-key` get it in, and a bench
/// without TLS, or without a certificate, is refused.
#[test]
fn demo_serves_tls_and_bench_speaks_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("mishards demo CA");
    let ca_file = path(&ca.write(&dir.path().join("ca.pem")));
    let server = ca.issue_files(dir.path(), "demo", &["127.0.0.1"]);
    let client = ca.issue_files(dir.path(), "bench", &["bench-client"]);
    let data = dir.path().join("data");
    let demo = common::process::Process::start(
        &[
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "off",
            "--readers",
            "1",
            "--data-dir",
            &path(&data),
            "--tls-cert",
            &path(&server.cert),
            "--tls-key",
            &path(&server.key),
            "--tls-client-ca",
            &ca_file,
            "--tls-require-client-cert",
        ],
        &[],
        1,
    );
    let addr = demo.addr().to_string();
    let (cert, key) = (path(&client.cert), path(&client.key));
    let load = [
        "--addr",
        &addr,
        "--rows",
        "2000",
        "--dim",
        "16",
        "--count",
        "40",
        "--concurrency",
        "2",
        "--queries",
        "10",
        "--json",
    ];
    fn with<'a>(load: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [load, extra].concat()
    }
    let (code, stdout, stderr) = bench_process(&with(
        &load,
        &["--tls-ca", &ca_file, "--tls-cert", &cert, "--tls-key", &key],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["load"]["rows"], 2000, "{report}");
    assert_eq!(report["search"]["succeeded"], 40, "{report}");
    assert_eq!(report["search"]["recall"]["mean"], 1.0, "{report}");

    let (code, _, stderr) = bench_process(&with(&load, &["--drop"]));
    assert_eq!(code, Some(1), "a plain client got through: {stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    let (code, _, stderr) = bench_process(&with(&load, &["--drop", "--tls-ca", &ca_file]));
    assert_eq!(
        code,
        Some(1),
        "a client without a certificate got through: {stderr}"
    );
    let stderr = demo.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
