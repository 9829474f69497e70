//! Start in any order: the `mishards` binary's gateway, write node and read node, as real processes,
//! started in each of the six orders (on SQLite), and once while MySQL does not answer yet. Whatever
//! starts before what it needs waits (not ready on `/readyz`, saying why), then becomes ready by itself;
//! then a search through the gateway is exact.
//!
//! The gateway must know its nodes' addresses before they exist, and a node learns its port only when
//! it serves (port 0): the gateway knows each node by a relay on a port bound at once, pointed at the
//! node when it announces its address (tests/common/proxy.rs). The same kind of relay stands for a
//! MySQL server that does not answer yet: it closes every connection until it is pointed at the real one.

mod common;

use std::time::{Duration, Instant};

use common::process::Process;
use common::proxy::Relay;
use common::{
    Client, RandomVectors, SplitMix64, admin_get, create_collection, flush, insert, schema,
    search_exact,
};

/// How long a whole order may take to become ready (each process retries at most every 5 s, and the
/// gateway's link to a node at most every 8 s).
const READY_WITHIN: Duration = Duration::from_secs(40);

/// Between two starts: long enough for what started first to have retried a few times.
const PAUSE: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Gateway,
    Writer,
    Reader,
}

/// Where the processes of one run keep their data and metadata.
struct Setup {
    storage: std::path::PathBuf,
    /// The metadata URI every process is given; `None`: the nodes' default SQLite file, which the
    /// gateway is pointed at.
    meta_uri: Option<String>,
}

impl Setup {
    fn gateway_meta_uri(&self) -> String {
        self.meta_uri.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.storage
                    .join(mishards::meta::SQLITE_FILE_NAME)
                    .display()
            )
        })
    }
}

/// One started process and, for a node, the relay the gateway reaches it through.
struct Started {
    part: Part,
    process: Process,
    /// The probe (node) or admin (gateway) listener.
    admin: String,
    /// The gRPC address, once announced.
    grpc: Option<String>,
    started_at: Instant,
}

fn start(part: Part, setup: &Setup, relays: &(Relay, Relay)) -> Started {
    let storage = setup.storage.to_str().expect("utf-8 path").to_string();
    let meta = setup.meta_uri.clone();
    let (writer_relay, reader_relay) = (relays.0.addr.to_string(), relays.1.addr.to_string());
    let gateway_meta = setup.gateway_meta_uri();
    let mut args: Vec<String> = match part {
        Part::Gateway => [
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--woserver",
            &writer_relay,
            "--static-hosts",
            &reader_relay,
            "--meta-poll-interval",
            "0.2",
            "--meta-uri",
            &gateway_meta,
        ]
        .map(String::from)
        .to_vec(),
        Part::Writer | Part::Reader => [
            "node",
            "--role",
            if part == Part::Writer { "rw" } else { "ro" },
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--storage",
            &storage,
        ]
        .map(String::from)
        .to_vec(),
    };
    if let (Some(uri), Part::Writer | Part::Reader) = (&meta, part) {
        args.extend(["--meta-uri".to_string(), uri.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = Process::spawn(&args, &[]);
    Started {
        part,
        process,
        admin: String::new(),
        grpc: None,
        started_at: Instant::now(),
    }
}

/// Reads the lines a process prints at once: the gateway's two addresses, a node's probe address.
async fn announced(s: &mut Started) {
    let limit = Duration::from_secs(20);
    match s.part {
        Part::Gateway => {
            s.grpc = Some(s.process.line_after("listening on ", limit).await);
            s.admin = s.process.line_after("admin listening on ", limit).await;
        }
        Part::Writer | Part::Reader => {
            s.admin = s.process.line_after("admin listening on ", limit).await;
        }
    }
}

async fn readyz(admin: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_get(admin, "/readyz").await;
    let doc = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/readyz of {admin} answered {status}, not JSON ({e}): {body}"));
    (status, doc)
}

/// Asserts what a process started before what it needs says on `/readyz`: 503, and why.
async fn assert_waiting(s: &Started, started: &[Part], expect_in_reason: &[&str]) {
    let (status, doc) = readyz(&s.admin).await;
    assert_eq!(
        status, 503,
        "{:?} with only {started:?} started: {doc}",
        s.part
    );
    let text = doc.to_string();
    assert!(
        expect_in_reason.iter().any(|e| text.contains(e)),
        "{:?} with only {started:?} started: none of {expect_in_reason:?} in {doc}",
        s.part
    );
}

/// Until every process answers 200 on `/readyz` (bounded by `READY_WITHIN`), points each node's relay
/// (`relays`: the writer's, the reader's) at the node once it announces its gRPC address.
async fn wait_until_all_ready(all: &mut [Started], relays: &(Relay, Relay), label: &str) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let mut not_ready = Vec::new();
        for s in all.iter_mut() {
            if s.grpc.is_none()
                && let Some(addr) = s.process.try_line("listening on ")
            {
                let relay = match s.part {
                    Part::Writer => Some(&relays.0),
                    Part::Reader => Some(&relays.1),
                    Part::Gateway => None,
                };
                if let Some(relay) = relay {
                    relay.point_to(addr.parse().expect("a node's address"));
                }
                s.grpc = Some(addr);
            }
            assert!(s.process.running(), "{label}: {:?} exited", s.part);
            let (status, doc) = readyz(&s.admin).await;
            if status != 200 {
                not_ready.push(format!("{:?}: {doc}", s.part));
            }
        }
        if not_ready.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: not ready within {READY_WITHIN:?}: {not_ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A collection written and searched through the gateway: exact answers. Writes wait until the
/// gateway's link to the write node is healthy (its readiness is about searches: read nodes and
/// metadata; a link that failed while the writer was not up retries with backoff).
async fn search_through(gateway: &str, admin: &str, label: &str) {
    common::wait_for(
        "the gateway's link to the write node",
        READY_WITHIN,
        || async move {
            let (_, body) = admin_get(admin, "/cluster").await;
            let doc: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            (doc["write_node"]["state"] == "healthy")
                .then_some(())
                .ok_or_else(|| doc["write_node"].to_string())
        },
    )
    .await;
    let mut c: Client = Client::connect(format!("http://{gateway}"))
        .await
        .unwrap_or_else(|e| panic!("{label}: connect to the gateway: {e}"));
    let mut rng = SplitMix64::new(15);
    create_collection(&mut c, schema("ordered", 8, 1024, 1)).await;
    let vectors = rng.vectors(300, 8);
    let ids = insert(&mut c, "ordered", "", &vectors, Vec::new())
        .await
        .vector_id_array;
    assert_eq!(ids.len(), vectors.len(), "{label}");
    flush(&mut c, &["ordered"]).await;
    let data: Vec<(i64, Vec<f32>)> = ids.into_iter().zip(vectors).collect();
    let queries = rng.vectors(4, 8);
    // The gateway's snapshot follows the flush within a poll: retry briefly until it has the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = common::search(&mut c, "ordered", &queries, 10).await;
        if result.ids.len() == queries.len() * 10 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    search_exact(&mut c, "ordered", &data, &queries, 10).await;
}

/// Starts the three parts in `order`, checking that each part started before what it needs waits,
/// then that all become ready by themselves and a search through the gateway is exact. Returns the
/// processes' logs by part.
async fn run_order(order: [Part; 3], setup: Setup, label: String) -> Vec<(Part, Duration, String)> {
    let relays = (Relay::start(), Relay::start());
    let mut all: Vec<Started> = Vec::new();
    for part in order {
        let mut s = start(part, &setup, &relays);
        announced(&mut s).await;
        all.push(s);
        tokio::time::sleep(PAUSE).await;
        let started: Vec<Part> = all.iter().map(|s| s.part).collect();
        for s in &all {
            let waits_for = match s.part {
                // Without the writer there is no schema; without a reader nothing to search on.
                Part::Gateway if !started.contains(&Part::Writer) => Some(
                    &[
                        "has not been loaded yet",
                        "does not exist yet",
                        "do not exist yet",
                    ][..],
                ),
                Part::Gateway if !started.contains(&Part::Reader) => {
                    Some(&["no read node is healthy", "no read nodes"][..])
                }
                Part::Reader if !started.contains(&Part::Writer) => {
                    Some(&["does not exist yet", "do not exist yet"][..])
                }
                _ => None,
            };
            if let Some(reasons) = waits_for {
                assert_waiting(s, &started, reasons).await;
            }
        }
    }
    wait_until_all_ready(&mut all, &relays, &label).await;
    let gateway = all
        .iter()
        .find(|s| s.part == Part::Gateway)
        .expect("the gateway");
    let grpc = gateway.grpc.clone().expect("the gateway's address");
    search_through(&grpc, &gateway.admin, &label).await;
    all.into_iter()
        .map(|s| (s.part, s.started_at.elapsed(), s.process.stop()))
        .collect()
}

/// The log lines saying a process waits for its metadata.
fn waiting_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("waiting for the metadata"))
        .count()
}

/// Every order of gateway, write node and read node on SQLite (all six at once, each on its own
/// folder): each part started before what it needs waits, and all become ready by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_start_order_becomes_ready_by_itself() {
    use Part::{Gateway, Reader, Writer};
    let orders = [
        [Reader, Writer, Gateway],
        [Reader, Gateway, Writer],
        [Gateway, Reader, Writer],
        [Gateway, Writer, Reader],
        [Writer, Gateway, Reader],
        [Writer, Reader, Gateway],
    ];
    let dirs: Vec<tempfile::TempDir> = orders
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let runs = orders.iter().zip(&dirs).map(|(order, dir)| {
        let setup = Setup {
            storage: dir.path().join("data"),
            meta_uri: None,
        };
        run_order(*order, setup, format!("order {order:?}"))
    });
    let logs = futures::future::join_all(runs).await;
    for (order, logs) in orders.iter().zip(logs) {
        for (part, _, log) in logs {
            // One line per change of what it waits for (no database file / missing tables / some
            // tables), never one per retry, though the first part waited through several retries.
            assert!(
                waiting_lines(&log) <= 3,
                "{order:?}: {part:?} logged more than one line per state: {log}"
            );
            let waited =
                order.iter().position(|p| *p == part) < order.iter().position(|p| *p == Writer);
            if waited {
                assert!(
                    waiting_lines(&log) >= 1,
                    "{order:?}: {part:?} started before the writer and did not say it waits: {log}"
                );
            }
            assert!(log.contains("shutting down"), "{order:?}: {part:?}: {log}");
        }
    }
}

/// The address of the MySQL server `MISHARDS_TEST_MYSQL_URL` names, and the URI of `db` through `via`.
async fn mysql_through(
    db: &common::TestDb,
    via: std::net::SocketAddr,
) -> (std::net::SocketAddr, String) {
    let mishards::meta::MetaUri::MySql(t) = &db.uri else {
        panic!("not a MySQL database: {}", db.uri);
    };
    let server = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .expect("resolve the MySQL test server")
        .next()
        .expect("an address of the MySQL test server");
    let password = t
        .password
        .as_ref()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    (
        server,
        format!("mysql://{}{password}@{via}/{}", t.user, t.database),
    )
}

/// MySQL does not answer while the gateway, the read node and the write node start (a relay closes
/// every connection, as a server still starting would): all three wait, not ready, saying why. With
/// `MISHARDS_TEST_MYSQL_URL` set (CI sets it), the relay is then pointed at that server's fresh
/// database and all three become ready by themselves, with exact searches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_starts_before_mysql_answers_and_everything_does_after() {
    let mysql_relay = Relay::start();
    let db = common::mysql_db().await;
    let uri = match &db {
        Some(db) => mysql_through(db, mysql_relay.addr).await.1,
        None => format!("mysql://root@{}/mishards_not_there", mysql_relay.addr),
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        storage: dir.path().join("data"),
        meta_uri: Some(uri),
    };
    let relays = (Relay::start(), Relay::start());
    let mut all = Vec::new();
    for part in [Part::Gateway, Part::Reader, Part::Writer] {
        let mut s = start(part, &setup, &relays);
        announced(&mut s).await;
        all.push(s);
    }
    tokio::time::sleep(PAUSE).await;
    for s in &all {
        assert_waiting(
            s,
            &[Part::Gateway, Part::Reader, Part::Writer],
            &["cannot connect to metadata database", "does not answer"],
        )
        .await;
        assert!(
            s.grpc.is_none() || s.part == Part::Gateway,
            "{:?} serves without metadata",
            s.part
        );
    }
    let Some(db) = &db else {
        // No MySQL server to point at here: the waiting half is what this machine can check.
        for s in all {
            let log = s.process.stop();
            assert!(waiting_lines(&log) == 1, "{:?}: {log}", s.part);
        }
        return;
    };
    mysql_relay.point_to(mysql_through(db, mysql_relay.addr).await.0);
    wait_until_all_ready(&mut all, &relays, "MySQL").await;
    let grpc = all[0].grpc.clone().expect("the gateway's address");
    search_through(&grpc, &all[0].admin, "MySQL").await;
    for s in all {
        let log = s.process.stop();
        assert!(waiting_lines(&log) <= 3, "{:?}: {log}", s.part);
    }
}
