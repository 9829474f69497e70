//! Shared helpers for integration tests: a fresh metadata database per test, on SQLite always and on
//! MySQL/MariaDB too when `MISHARDS_TEST_MYSQL_URL` is set (its database name is used as a prefix).

#![allow(dead_code)]

pub mod process;
pub mod proxy;
pub mod requests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use mishards::meta::{MetaUri, MySqlTarget, SqliteTarget};
pub use mishards::rng::SplitMix64;
// Each test binary uses some of them.
#[allow(unused_imports)]
pub use requests::{
    cmd, code, collection, conn_stats, create_collection, create_index, create_partition, flush,
    index_param, insert, insert_param, params, partition, records, schema, search, search_in,
    search_param, send_search,
};
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

pub const MYSQL_ENV: &str = "MISHARDS_TEST_MYSQL_URL";

/// A fresh, empty metadata database that no other test uses.
pub struct TestDb {
    pub uri: MetaUri,
    pub label: &'static str,
    /// Keeps a SQLite database's folder alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

pub fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("meta.sqlite");
    TestDb {
        uri: MetaUri::Sqlite(SqliteTarget::File(path)),
        label: "sqlite",
        _dir: Some(dir),
    }
}

/// The MySQL server named by `MISHARDS_TEST_MYSQL_URL`, with a new database created for this test.
pub async fn mysql_db() -> Option<TestDb> {
    let url = std::env::var(MYSQL_ENV).ok().filter(|u| !u.is_empty())?;
    let MetaUri::MySql(server) =
        MetaUri::parse(&url, None).expect("MISHARDS_TEST_MYSQL_URL must be a mysql:// URI")
    else {
        panic!("{MYSQL_ENV} must name a MySQL server");
    };
    let database = format!("{}_{}", server.database, unique_suffix());
    let mut admin = admin_options(&server)
        .connect()
        .await
        .expect("connect to the MySQL test server");
    sqlx::query(&format!("CREATE DATABASE `{database}`"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    Some(TestDb {
        uri: MetaUri::MySql(MySqlTarget { database, ..server }),
        label: "mysql",
        _dir: None,
    })
}

fn admin_options(server: &MySqlTarget) -> MySqlConnectOptions {
    let options = MySqlConnectOptions::new()
        .host(&server.host)
        .port(server.port)
        .username(&server.user);
    match &server.password {
        Some(p) => options.password(p),
        None => options,
    }
}

/// SQLite, then MySQL when configured: every metadata test runs on each.
pub async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db()];
    dbs.extend(mysql_db().await);
    dbs
}

/// The Python with pymilvus 1.1.2 that `scripts/test.sh` prepares (`MISHARDS_TEST_PYTHON`, else `.venv`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MISHARDS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with pymilvus 1.1.2: run `scripts/test.sh` (it creates .venv) or set MISHARDS_TEST_PYTHON"
    );
    venv
}

/// Settings of a node on 127.0.0.1, port 0, with `storage` and extra flags (flag name → value).
pub fn node_config(
    role: &str,
    storage: &std::path::Path,
    extra: &[(&'static str, String)],
) -> mishards::config::NodeConfig {
    use mishards::config::{NodeConfig, Scope, Settings};
    let mut flags: std::collections::HashMap<&'static str, String> = [
        ("role", role.to_string()),
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("storage", storage.display().to_string()),
    ]
    .into_iter()
    .collect();
    flags.extend(extra.iter().cloned());
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = Settings::resolve(Scope::Node, &flags, &env, None).expect("node settings");
    NodeConfig::from_settings(&settings).expect("node config")
}

pub type Client =
    mishards::proto::milvus_service_client::MilvusServiceClient<tonic::transport::Channel>;

pub async fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect(format!("http://{addr}"))
        .await
        .expect("connect to node")
        .max_decoding_message_size(300 << 20)
        .max_encoding_message_size(300 << 20)
}

/// Test vectors from the one seeded generator, coordinates uniform in [-1, 1): the tests compare answers
/// with brute force over the same vectors, so which values they are does not matter, only that a seed
/// gives the same ones again.
pub trait RandomVectors {
    fn vectors(&mut self, n: usize, dim: usize) -> Vec<Vec<f32>>;
}

impl RandomVectors for SplitMix64 {
    fn vectors(&mut self, n: usize, dim: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| (self.next_f64() * 2.0 - 1.0) as f32)
                    .collect()
            })
            .collect()
    }
}

/// Exact top-k by brute force: (id, distance), L2 squared ascending or IP descending, ties by id.
pub fn brute_force(data: &[(i64, Vec<f32>)], query: &[f32], k: usize, ip: bool) -> Vec<(i64, f32)> {
    let mut scored: Vec<(i64, f64)> = data
        .iter()
        .map(|(id, v)| {
            let d = if ip {
                v.iter()
                    .zip(query)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum::<f64>()
            } else {
                v.iter()
                    .zip(query)
                    .map(|(a, b)| ((*a - *b) as f64).powi(2))
                    .sum::<f64>()
            };
            (*id, d)
        })
        .collect();
    scored.sort_by(|a, b| {
        let ord = if ip {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        };
        ord.then(a.0.cmp(&b.0))
    });
    scored
        .into_iter()
        .take(k)
        .map(|(id, d)| (id, d as f32))
        .collect()
}

/// An in-process cluster: one write node, read nodes, and a gateway that finds the read nodes through a
/// hosts file (so tests change membership live), all on 127.0.0.1 port 0.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub meta_uri: String,
    pub writer: Option<mishards::node::RunningNode>,
    pub writer_port: u16,
    pub readers: Vec<Option<mishards::node::RunningNode>>,
    /// The delaying proxy in front of each read node that has one (listed in its place).
    pub proxies: Vec<Option<proxy::DelayProxy>>,
    pub gateway: mishards::gateway::RunningGateway,
    pub hosts_file: std::path::PathBuf,
}

impl TestCluster {
    /// `meta`: a MySQL database for the metadata, else SQLite in the storage folder.
    pub async fn start(readers: usize, meta: Option<&TestDb>) -> TestCluster {
        Self::start_with(readers, meta, &[]).await
    }

    /// As `start`, with extra gateway flags (flag name → value).
    pub async fn start_with(
        readers: usize,
        meta: Option<&TestDb>,
        gateway_flags: &[(&'static str, String)],
    ) -> TestCluster {
        Self::start_custom(readers, meta, &[], gateway_flags).await
    }

    /// As `start_with` on SQLite, with read node `i` behind a proxy that delays its answers by `delay`
    /// for each `(i, delay)` of `slow`: the gateway knows the node by the proxy's address.
    pub async fn start_slow(
        readers: usize,
        slow: &[(usize, std::time::Duration)],
        gateway_flags: &[(&'static str, String)],
    ) -> TestCluster {
        Self::start_custom(readers, None, slow, gateway_flags).await
    }

    async fn start_custom(
        readers: usize,
        meta: Option<&TestDb>,
        slow: &[(usize, std::time::Duration)],
        gateway_flags: &[(&'static str, String)],
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = dir.path().join("data");
        let meta_uri = match meta.map(|m| &m.uri) {
            Some(mishards::meta::MetaUri::MySql(t)) => {
                format!("mysql://{}@{}:{}/{}", t.user, t.host, t.port, t.database)
            }
            _ => format!("sqlite://{}", storage.join("meta.sqlite").display()),
        };
        let node = |role: &str| {
            node_config(
                role,
                &storage,
                &[
                    ("meta-uri", meta_uri.clone()),
                    ("auto-flush-interval", "3600".into()),
                ],
            )
        };
        let writer = mishards::node::start(&node("rw"))
            .await
            .expect("write node");
        let writer_port = writer.addr.port();
        let mut started = Vec::new();
        for _ in 0..readers {
            started.push(Some(
                mishards::node::start(&node("ro")).await.expect("read node"),
            ));
        }
        let mut proxies = Vec::new();
        for (i, reader) in started.iter().enumerate() {
            let delay = slow.iter().find(|(s, _)| *s == i).map(|(_, d)| *d);
            proxies.push(match (reader, delay) {
                (Some(reader), Some(delay)) => {
                    Some(proxy::DelayProxy::start(reader.addr, delay).await)
                }
                _ => None,
            });
        }
        let hosts_file = dir.path().join("hosts");
        let hosts = listed_readers(&started, &proxies);
        std::fs::write(&hosts_file, hosts.join("\n")).expect("hosts file");
        let gateway = start_gateway_with(
            &writer.addr.to_string(),
            &meta_uri,
            &hosts_file,
            gateway_flags,
        )
        .await;
        let cluster = TestCluster {
            dir,
            meta_uri,
            writer: Some(writer),
            writer_port,
            readers: started,
            proxies,
            gateway,
            hosts_file,
        };
        cluster.wait_until_healthy(readers).await;
        cluster
    }

    /// As `start_with`, with fault injection on: token `FAULT_TOKEN`, seed `seed`. Hedging is off, so a
    /// search asks each node exactly as its plan says and the fault sequence is reproducible.
    pub async fn start_with_faults(
        readers: usize,
        seed: u64,
        gateway_flags: &[(&'static str, String)],
    ) -> TestCluster {
        let mut flags = fault_flags(seed);
        flags.extend(gateway_flags.iter().cloned());
        Self::start_with(readers, None, &flags).await
    }

    /// The gateway's in-process fault handle (fault injection must be on).
    pub fn faults(&self) -> mishards::gateway::injection::FaultHandle {
        self.gateway
            .faults()
            .expect("the test gateway runs with fault injection")
    }

    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub async fn client(&self) -> Client {
        client(self.gateway.addr).await
    }

    /// Where the gateway's admin HTTP listener is (`host:port`).
    pub fn admin(&self) -> String {
        self.gateway
            .admin_addr
            .expect("the test gateway runs its admin listener")
            .to_string()
    }

    /// `GET path` from the gateway's admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(&self.admin(), path).await
    }

    /// `conn_stats` as JSON.
    pub async fn stats(&self) -> serde_json::Value {
        conn_stats(&mut self.client().await).await
    }

    /// Waits (bounded) until `n` read nodes and the write node are healthy.
    pub async fn wait_until_healthy(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let stats = self.stats().await;
            let healthy = stats["read_nodes"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|r| r["state"] == "healthy").count());
            if healthy == n && stats["write_node"]["state"] == "healthy" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cluster not healthy: {stats}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Rewrites the hosts file with the running read nodes.
    pub fn publish_readers(&self) {
        let hosts = listed_readers(&self.readers, &self.proxies);
        std::fs::write(&self.hosts_file, hosts.join("\n")).expect("hosts file");
    }

    /// The address the gateway knows read node `i` by: its proxy's, if it has one.
    pub fn reader_host(&self, i: usize) -> String {
        match (&self.proxies.get(i), &self.readers[i]) {
            (Some(Some(proxy)), _) => proxy.addr.to_string(),
            (_, Some(reader)) => reader.addr.to_string(),
            (_, None) => panic!("read node {i} is stopped"),
        }
    }

    pub async fn add_reader(&mut self) -> std::net::SocketAddr {
        let config = node_config(
            "ro",
            &self.storage(),
            &[("meta-uri", self.meta_uri.clone())],
        );
        let reader = mishards::node::start(&config).await.expect("read node");
        let addr = reader.addr;
        self.readers.push(Some(reader));
        self.proxies.push(None);
        addr
    }

    pub async fn stop_reader(&mut self, i: usize) {
        if let Some(r) = self.readers[i].take() {
            r.shutdown().await;
        }
    }

    pub async fn stop_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.shutdown().await;
        }
    }

    /// Restarts the write node on its old port.
    pub async fn restart_writer(&mut self) {
        let config = node_config(
            "rw",
            &self.storage(),
            &[
                ("meta-uri", self.meta_uri.clone()),
                ("auto-flush-interval", "3600".into()),
                ("port", self.writer_port.to_string()),
            ],
        );
        self.writer = Some(
            mishards::node::start(&config)
                .await
                .expect("write node restart"),
        );
    }

    pub async fn shutdown(self) {
        let TestCluster {
            gateway,
            readers,
            writer,
            ..
        } = self;
        gateway.shutdown().await;
        for r in readers.into_iter().flatten() {
            r.shutdown().await;
        }
        if let Some(w) = writer {
            w.shutdown().await;
        }
    }
}

/// The running read nodes as the gateway knows them: through their proxy where they have one.
fn listed_readers(
    readers: &[Option<mishards::node::RunningNode>],
    proxies: &[Option<proxy::DelayProxy>],
) -> Vec<String> {
    readers
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.as_ref()?;
            Some(match proxies.get(i) {
                Some(Some(proxy)) => proxy.addr.to_string(),
                _ => r.addr.to_string(),
            })
        })
        .collect()
}

pub async fn start_gateway(
    write_node: &str,
    meta_uri: &str,
    hosts_file: &std::path::Path,
) -> mishards::gateway::RunningGateway {
    start_gateway_with(write_node, meta_uri, hosts_file, &[]).await
}

pub async fn start_gateway_with(
    write_node: &str,
    meta_uri: &str,
    hosts_file: &std::path::Path,
    extra: &[(&'static str, String)],
) -> mishards::gateway::RunningGateway {
    use mishards::config::{GatewayConfig, Scope, Settings};
    let mut flags: std::collections::HashMap<&'static str, String> = [
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("woserver", write_node.to_string()),
        ("meta-uri", meta_uri.to_string()),
        ("discovery", "file".to_string()),
        ("discovery-file", hosts_file.display().to_string()),
        ("node-timeout", "5".to_string()),
        // Loopback (the default host) on a free port: tests run side by side.
        ("admin-port", "0".to_string()),
    ]
    .into_iter()
    .collect();
    flags.extend(extra.iter().cloned());
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = Settings::resolve(Scope::Gateway, &flags, &env, None).expect("gateway settings");
    let config = GatewayConfig::from_settings(&settings).expect("gateway config");
    let tuning = mishards::gateway::Tuning {
        metadata_poll: Some(std::time::Duration::from_millis(100)),
        probe_interval: std::time::Duration::from_millis(100),
        discovery_refresh: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    mishards::gateway::start(&config, tuning)
        .await
        .expect("gateway")
}

/// `GET path` from an admin listener at `addr`: status and body (bounded to 10 s).
pub async fn admin_get(addr: &str, path: &str) -> (u16, String) {
    let reply =
        mishards::gateway::admin_client::fetch(addr, path, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (reply.status, reply.body)
}

/// `GET path` from an admin listener, as JSON: status and document.
pub async fn admin_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_get(addr, path).await;
    let doc = serde_json::from_str(&body).unwrap_or_else(|e| {
        panic!("GET {path} answered {status} with something not JSON ({e}): {body}")
    });
    (status, doc)
}

/// The fault token test gateways use.
pub const FAULT_TOKEN: &str = "test-fault-token-0123456789";

/// Gateway flags turning fault injection on with `FAULT_TOKEN` and `seed`, hedging off.
pub fn fault_flags(seed: u64) -> Vec<(&'static str, String)> {
    vec![
        ("enable-fault-injection", "true".into()),
        ("fault-token", FAULT_TOKEN.into()),
        ("fault-seed", seed.to_string()),
        ("hedge", "false".into()),
    ]
}

/// `method path` to an admin listener, with `Authorization: Bearer token` when given and a JSON body:
/// status and body (bounded to 10 s).
pub async fn admin_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let reply = mishards::gateway::admin_client::request(
        addr,
        method,
        path,
        &headers,
        body,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (reply.status, reply.body)
}

/// Dimension of the collections `load_files` makes.
pub const FILE_DIM: usize = 32;
/// Rows per flushed file: 9,000 × 32 floats is just over index_file_size = 1 MB, so the write node never
/// merges the files and every flush stays its own segment file.
pub const FILE_ROWS: usize = 9_000;

/// Creates the L2 collection `name` (dimension `FILE_DIM`, index_file_size 1 MB) and loads `files`
/// flushed files of `FILE_ROWS` random rows each; returns (id, vector) of every row.
pub async fn load_files(
    c: &mut Client,
    name: &str,
    files: usize,
    rng: &mut SplitMix64,
) -> Vec<(i64, Vec<f32>)> {
    load_sized(c, name, files, FILE_ROWS, FILE_DIM, rng).await
}

/// As `load_files`, with `rows` rows of dimension `dim` per file (keep rows × dim × 4 above 1 MB, or
/// the write node merges the files).
pub async fn load_sized(
    c: &mut Client,
    name: &str,
    files: usize,
    rows: usize,
    dim: usize,
    rng: &mut SplitMix64,
) -> Vec<(i64, Vec<f32>)> {
    create_collection(c, schema(name, dim as i64, 1, 1)).await;
    let mut data = Vec::new();
    for _ in 0..files {
        data.extend(insert_file(c, name, rows, dim, rng).await);
    }
    data
}

/// Inserts `rows` random rows into `name` and flushes them into a file of their own.
pub async fn insert_file(
    c: &mut Client,
    name: &str,
    rows: usize,
    dim: usize,
    rng: &mut SplitMix64,
) -> Vec<(i64, Vec<f32>)> {
    let v = rng.vectors(rows, dim);
    let r = c
        .insert(insert_param(name, "", &v, Vec::new()))
        .await
        .expect("insert")
        .into_inner();
    assert_eq!(code(&r.status), 0, "{:?}", r.status);
    flush(c, &[name]).await;
    r.vector_id_array.into_iter().zip(v).collect()
}

/// Polls `probe` every 50 ms until it gives `Ok`, at most `limit` long (and so at most limit / 50 ms
/// times).
pub async fn wait_for<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    const EVERY: std::time::Duration = std::time::Duration::from_millis(50);
    let deadline = std::time::Instant::now() + limit;
    let attempts = (limit.as_millis() / EVERY.as_millis()).max(1) + 1;
    let mut last = String::new();
    for _ in 0..attempts {
        match probe().await {
            Ok(value) => return value,
            Err(e) => last = e,
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(EVERY).await;
    }
    panic!("{what} not within {limit:?}; last: {last}");
}

/// The newest manifest of a search over `name`, once the inspector has it.
pub async fn newest_manifest(cluster: &TestCluster, name: &str) -> serde_json::Value {
    let admin = cluster.admin();
    wait_for(
        "the search's manifest",
        std::time::Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                let (status, doc) = admin_json(&admin, "/requests?limit=10").await;
                assert_eq!(status, 200, "{doc}");
                doc["requests"]
                    .as_array()
                    .and_then(|r| r.iter().find(|m| m["collection"] == name).cloned())
                    .ok_or_else(|| doc.to_string())
            }
        },
    )
    .await
}

/// Checks a search answer against brute force (L2): every query's top-`k` ids in order.
pub fn assert_exact(
    result: &mishards::proto::TopKQueryResult,
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
    k: usize,
) {
    assert_eq!(code(&result.status), 0, "{:?}", result.status);
    assert_eq!(result.row_num as usize, queries.len());
    for (q, query) in queries.iter().enumerate() {
        let expected: Vec<i64> = brute_force(data, query, k, false)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            &result.ids[q * k..(q + 1) * k],
            expected.as_slice(),
            "query {q}"
        );
    }
}

/// Searches `queries` over `name`, top-`k`, and checks the answer against brute force over `data`;
/// returns the checked answer for tests that compare later answers to it.
pub async fn search_exact(
    c: &mut Client,
    name: &str,
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
    k: usize,
) -> mishards::proto::TopKQueryResult {
    let result = search(c, name, queries, k as i64).await;
    assert_exact(&result, data, queries, k);
    result
}
