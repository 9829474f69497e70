//! Runs one scenario: an embedded cluster with fault injection on (seeded), a data set loaded as
//! separate segment files, the fault-free answers taken first, then bounded search (and insert) load
//! while the steps are applied on time, then the invariants. The steps themselves and the timeline of
//! read nodes they leave are in `steps.rs`.

pub use super::steps::fault_rule;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ChaosError;
use super::check::{self, Recording, SearchOutcome, SearchRecord};
use super::report::Report;
use super::scenario::Scenario;
use super::steps::{Timeline, apply};
use crate::bench::{self, CollectionSpec, DataSpec, Failure, IfExists, InsertOptions, LoadOptions};
use crate::demo::EmbeddedCluster;
use mishards_config::{GatewayConfig, NodeConfig, Scope, Settings};
use mishards_gateway::Tuning;
use mishards_node::index::{Metric, TopK};
use mishards_proto as proto;

const SEARCHED: &str = "chaos";
/// Inserts during the run go to a collection of their own, so they never change the searched answers.
const INSERTED: &str = "chaos_inserts";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A data folder removed when the run ends.
struct RunDir(PathBuf);

impl RunDir {
    fn new() -> Result<RunDir, ChaosError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("mishards-chaos-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| ChaosError::Cluster(format!("cannot create {}: {e}", dir.display())))?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(scope: Scope, flags: Vec<(&'static str, String)>) -> Result<Settings, ChaosError> {
    let env: HashMap<String, String> = HashMap::new();
    Settings::resolve(scope, &flags.into_iter().collect(), &env, None)
        .map_err(|e| ChaosError::Cluster(e.to_string()))
}

/// Runs `scenario` with `seed`; `origin` is its file, for the replay line.
pub async fn run(scenario: &Scenario, seed: u64, origin: &str) -> Result<Report, ChaosError> {
    let panics = PanicWatch::install();
    let dir = RunDir::new()?;
    let cluster = start_cluster(scenario, seed, &dir).await?;
    let outcome = drive(scenario, seed, cluster).await;
    let (recording, steps, faults, fault_log) = outcome?;
    let mut recording = recording;
    recording.panics = panics.taken();
    let mut invariants = scenario.invariants.clone();
    // Without an insert stream there is nothing to lose.
    invariants.no_lost_inserts &= scenario.load.insert_rows > 0;
    let verdicts = check::check(&invariants, &recording);
    Ok(Report::new(
        &scenario.name,
        seed,
        scenario.load.duration,
        &recording,
        steps,
        faults,
        verdicts,
        format!("mishards chaos run {origin} --seed {seed}"),
        fault_log,
    ))
}

async fn start_cluster(
    scenario: &Scenario,
    seed: u64,
    dir: &RunDir,
) -> Result<EmbeddedCluster, ChaosError> {
    let g = &scenario.gateway;
    let token = format!("{:016x}", mishards_gateway::injection::random_seed());
    let gateway = GatewayConfig::from_settings(&settings(
        Scope::Gateway,
        vec![
            ("host", "127.0.0.1".into()),
            ("port", "0".into()),
            ("admin-port", "off".into()),
            // Placeholders: the embedded cluster points these at its own nodes.
            ("woserver", "127.0.0.1:1".into()),
            ("meta-uri", "sqlite::memory:".into()),
            ("max-retry", g.max_retry.to_string()),
            ("node-timeout", g.node_timeout.as_secs_f64().to_string()),
            ("hedge", g.hedge.to_string()),
            ("demote-slow-nodes", g.demote_slow_nodes.to_string()),
            ("enable-fault-injection", "true".into()),
            ("fault-token", token),
            ("fault-seed", seed.to_string()),
        ],
    )?)
    .map_err(|e| ChaosError::Cluster(e.to_string()))?;
    let node = NodeConfig::from_settings(&settings(
        Scope::Node,
        vec![
            ("role", "rw".into()),
            ("port", node_ports(seed).to_string()),
            ("storage", dir.0.display().to_string()),
            (
                "auto-flush-interval",
                scenario.cluster.auto_flush.as_secs_f64().to_string(),
            ),
        ],
    )?)
    .map_err(|e| ChaosError::Cluster(e.to_string()))?;
    let tuning = Tuning {
        discovery_refresh: Duration::from_millis(500),
        keep_snapshot_on_outage: !scenario.sabotage.drop_snapshot_on_outage,
        ..Tuning::default()
    };
    let cluster = EmbeddedCluster::start(&dir.0, scenario.cluster.readers, gateway, node, tuning)
        .await
        .map_err(|e| ChaosError::Cluster(e.to_string()))?;
    wait_for_readers(&cluster, scenario.cluster.readers).await?;
    Ok(cluster)
}

/// The write node's port; the read nodes take the next ones. Fixed by the seed, because the fault
/// decisions of a node depend on its address: a replay must run the same addresses. Below the usual
/// ephemeral range (32768 and up), so outgoing connections do not take them.
pub fn node_ports(seed: u64) -> u16 {
    20_000 + (seed % 1_500) as u16 * 8
}

/// Waits (at most 20 s) until the gateway sees `n` healthy read nodes.
async fn wait_for_readers(cluster: &EmbeddedCluster, n: usize) -> Result<(), ChaosError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = cluster
            .gateway
            .actors
            .cluster
            .send(mishards_gateway::cluster::ConnStats)
            .await
            .map_err(|e| ChaosError::Cluster(e.to_string()))?;
        let healthy = stats["read_nodes"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|n| n["state"] == "healthy").count());
        if healthy >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ChaosError::Cluster(format!(
                "read nodes not healthy after 20 s: {stats}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Driven = (
    Recording,
    Vec<String>,
    BTreeMap<String, u64>,
    Vec<mishards_fault::LoggedFault>,
);

async fn drive(
    scenario: &Scenario,
    seed: u64,
    mut cluster: EmbeddedCluster,
) -> Result<Driven, ChaosError> {
    let result = drive_cluster(scenario, seed, &mut cluster).await;
    cluster.shutdown().await;
    result
}

async fn drive_cluster(
    scenario: &Scenario,
    seed: u64,
    cluster: &mut EmbeddedCluster,
) -> Result<Driven, ChaosError> {
    let addr = cluster.gateway.addr.to_string();
    let c = &scenario.cluster;
    let metric = if c.metric == "ip" {
        Metric::Ip
    } else {
        Metric::L2
    };
    let run = |e: bench::BenchError| ChaosError::Run(e.to_string());

    // The data set, one segment file per `rows_per_file` rows.
    let data = bench::DataSet::generate(
        DataSpec {
            rows: c.files * c.rows_per_file(),
            dim: c.dim,
            ..DataSpec::default()
        },
        seed,
    )
    .map_err(run)?;
    let mut client = bench::connect(&addr).await.map_err(run)?;
    let collection = CollectionSpec {
        index_file_size_mb: 1,
        metric,
        ..CollectionSpec::new(SEARCHED)
    };
    bench::load(
        &mut client,
        &collection,
        &data,
        &LoadOptions {
            if_exists: IfExists::Drop,
            insert: InsertOptions {
                batch_rows: c.rows_per_file(),
                flush_each_batch: true,
                ..InsertOptions::default()
            },
        },
        &mut |_, _| {},
    )
    .await
    .map_err(run)?;
    if scenario.load.insert_rows > 0 {
        create_collection(&mut client, INSERTED, c.dim, metric).await?;
    }

    // The fault-free answers: each query once, before anything goes wrong.
    let queries = Arc::new(data.queries(scenario.load.queries, seed ^ 0x5eed));
    let topk = scenario.load.topk as usize;
    let expected = Arc::new(fault_free_answers(&addr, &queries, topk, metric).await?);
    let target = bench::SearchTarget {
        addr: addr.clone(),
        tls: None,
        collection: SEARCHED.into(),
        queries: queries.clone(),
        expected: Some(expected.clone()),
    };
    let load = |duration: Duration| bench::SearchLoad {
        concurrency: scenario.load.searchers,
        duration: Some(duration),
        count: None,
        topk,
        timeout: CALL_TIMEOUT,
        warmup: true,
        ..bench::SearchLoad::default()
    };
    let warmup_records = Arc::new(Mutex::new(Vec::new()));
    let warmup_start = Instant::now();
    bench::run_searches(
        &target,
        &load(scenario.load.warmup),
        Some(recorder(warmup_start, warmup_records.clone())),
    )
    .await
    .map_err(run)?;

    // The run: search load, an insert stream, and the steps on time.
    let records = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let searches = {
        let (target, load, observer) = (
            target.clone(),
            load(scenario.load.duration),
            recorder(start, records.clone()),
        );
        tokio::spawn(async move { bench::run_searches(&target, &load, Some(observer)).await })
    };
    let inserts = (scenario.load.insert_rows > 0).then(|| {
        tokio::spawn(insert_stream(
            addr.clone(),
            c.dim,
            scenario.load.insert_rows,
            scenario.load.insert_every,
            start + scenario.load.duration,
            seed,
        ))
    });
    let mut timeline = Timeline::new(&cluster.reader_addrs);
    let mut steps_done = Vec::new();
    let mut steps: Vec<_> = scenario.steps.iter().collect();
    steps.sort_by_key(|s| s.at);
    let faults = cluster
        .gateway
        .faults()
        .ok_or_else(|| ChaosError::Run("the gateway has no fault injection".into()))?;
    for step in steps {
        tokio::time::sleep_until((start + step.at).into()).await;
        let at = start.elapsed();
        let done = apply(
            &step.action,
            cluster,
            &faults,
            &mut timeline,
            at,
            scenario.sabotage.wipe_wal_on_crash,
        )
        .await?;
        steps_done.push(format!("{:>6.2}s  {done}", at.as_secs_f64()));
    }
    let report = searches
        .await
        .map_err(|e| ChaosError::Run(e.to_string()))?
        .map_err(run)?;
    let ended = start.elapsed();
    if report.requests == 0 {
        return Err(ChaosError::Run("no search ran".into()));
    }

    // Inserts: every acknowledged one must be there (after a crashed writer came back).
    let mut recording = Recording::default();
    if let Some(inserts) = inserts {
        let acknowledged = inserts.await.map_err(|e| ChaosError::Run(e.to_string()))?;
        if cluster.writer.is_none() {
            cluster
                .restart_writer()
                .await
                .map_err(|e| ChaosError::Run(e.to_string()))?;
        }
        recording.inserts_missing = missing_inserts(&addr, &acknowledged).await?;
        recording.inserts_acknowledged = acknowledged.len();
    }
    let mut fault_report = faults
        .report()
        .await
        .map_err(|e| ChaosError::Run(e.to_string()))?;
    // Sites by role, not port: ports change from run to run, a replay's "read node 1" does not.
    let names: HashMap<String, String> = cluster
        .reader_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (a.to_string(), format!("read node {i}")))
        .chain([(cluster.writer_addr.to_string(), "write node".to_string())])
        .collect();
    for f in &mut fault_report.log {
        if let Some(name) = names.get(&f.site) {
            f.site = name.clone();
        }
    }
    let mut applied = BTreeMap::new();
    for f in &fault_report.log {
        let key = format!(
            "{} on {}{}",
            f.kind,
            f.site,
            f.rpc.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
        );
        *applied.entry(key).or_insert(0) += 1;
    }
    recording.searches = take(&records);
    recording.warmup = take(&warmup_records);
    recording.no_reader = timeline.no_reader_windows(ended);
    recording.failed_readers = timeline.failed_in(&recording.no_reader);
    recording.healed_at = timeline.healed_at;
    Ok((recording, steps_done, applied, fault_report.log))
}

fn take(records: &Mutex<Vec<SearchRecord>>) -> Vec<SearchRecord> {
    records
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default()
}

/// Records every search of a load with its start time from `start` and whether it was exact.
fn recorder(start: Instant, records: Arc<Mutex<Vec<SearchRecord>>>) -> bench::Observer {
    Arc::new(move |r: &bench::RequestRecord| {
        let started = (Instant::now() - r.latency).saturating_duration_since(start);
        let outcome = match (&r.outcome, &r.check) {
            (Ok(_), Some(c))
                if c.same_id_rows == r.queries.len() && c.max_distance_error <= 1e-3 =>
            {
                SearchOutcome::Exact
            }
            (Ok(_), Some(c)) => SearchOutcome::Wrong {
                detail: format!(
                    "recall {:.3}, {} of {} rows as expected",
                    c.recall,
                    c.same_id_rows,
                    r.queries.len()
                ),
            },
            (Ok(_), None) => SearchOutcome::Wrong {
                detail: "not compared".into(),
            },
            (Err(Failure::Status { code, reason }), _) => SearchOutcome::Error {
                code: *code,
                reason: reason.clone(),
            },
            (Err(failure), _) => SearchOutcome::Error {
                code: -1,
                reason: failure.to_string(),
            },
        };
        if let Ok(mut records) = records.lock() {
            records.push(SearchRecord {
                started,
                latency: r.latency,
                outcome,
            });
        }
    })
}

/// Each query searched once, one after another: the answers the run must keep giving.
async fn fault_free_answers(
    addr: &str,
    queries: &bench::QuerySet,
    topk: usize,
    metric: Metric,
) -> Result<TopK, ChaosError> {
    let mut client = bench::connect(addr)
        .await
        .map_err(|e| ChaosError::Run(e.to_string()))?;
    let mut ids = Vec::with_capacity(queries.len() * topk);
    let mut distances = Vec::with_capacity(queries.len() * topk);
    for q in 0..queries.len() {
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            client.search(proto::SearchParam {
                collection_name: SEARCHED.into(),
                query_record_array: vec![proto::RowRecord {
                    float_data: queries.row(q).to_vec(),
                    binary_data: Vec::new(),
                }],
                topk: topk as i64,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| ChaosError::Run("a fault-free search timed out".into()))?
        .map_err(|s| ChaosError::Run(format!("a fault-free search failed: {s}")))?
        .into_inner();
        let answer = bench::Answer::from_reply(reply, 1, topk)
            .map_err(|f| ChaosError::Run(format!("a fault-free search failed: {f}")))?;
        if answer.k != topk {
            return Err(ChaosError::Run(format!(
                "the data set is too small: a search found {} of top-{topk}",
                answer.k
            )));
        }
        ids.extend(answer.ids);
        distances.extend(answer.distances);
    }
    Ok(TopK {
        nq: queries.len(),
        k: topk,
        ids,
        distances,
        metric,
    })
}

async fn create_collection(
    client: &mut bench::Client,
    name: &str,
    dim: usize,
    metric: Metric,
) -> Result<(), ChaosError> {
    let status = client
        .create_collection(proto::CollectionSchema {
            collection_name: name.into(),
            dimension: dim as i64,
            index_file_size: 1024,
            metric_type: bench::metric_code(metric),
            ..Default::default()
        })
        .await
        .map_err(|s| ChaosError::Run(format!("cannot create {name}: {s}")))?
        .into_inner();
    if status.error_code != 0 {
        return Err(ChaosError::Run(format!(
            "cannot create {name}: {}",
            status.reason
        )));
    }
    Ok(())
}

/// Inserts `rows` rows every `every` until `until`; the ids the gateway acknowledged.
async fn insert_stream(
    addr: String,
    dim: usize,
    rows: usize,
    every: Duration,
    until: Instant,
    seed: u64,
) -> Vec<i64> {
    let mut acknowledged = Vec::new();
    let mut rng = mishards_fault::SplitMix64(seed ^ 0x001a_5e47);
    let Ok(mut client) = bench::connect(&addr).await else {
        return acknowledged;
    };
    while Instant::now() < until {
        let request = proto::InsertParam {
            collection_name: INSERTED.into(),
            row_record_array: (0..rows)
                .map(|_| proto::RowRecord {
                    float_data: (0..dim)
                        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
                        .collect(),
                    binary_data: Vec::new(),
                })
                .collect(),
            ..Default::default()
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(CALL_TIMEOUT, client.insert(request)).await {
            let reply = reply.into_inner();
            if reply.status.as_ref().is_none_or(|s| s.error_code == 0) {
                acknowledged.extend(reply.vector_id_array);
            }
        }
        tokio::time::sleep(every).await;
    }
    acknowledged
}

/// Acknowledged ids the collection does not hold: flushed first (retried while the write node comes
/// back), then read back by id.
async fn missing_inserts(addr: &str, acknowledged: &[i64]) -> Result<Vec<i64>, ChaosError> {
    let mut client = bench::connect(addr)
        .await
        .map_err(|e| ChaosError::Run(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flushed = client
            .flush(proto::FlushParam {
                collection_name_array: vec![INSERTED.into()],
            })
            .await
            .map(|r| r.into_inner().error_code == 0)
            .unwrap_or(false);
        if flushed {
            break;
        }
        if Instant::now() > deadline {
            return Err(ChaosError::Run(
                "the write node did not take a flush within 30 s of the run".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut missing = Vec::new();
    for ids in acknowledged.chunks(1000) {
        let reply = client
            .get_vectors_by_id(proto::VectorsIdentity {
                collection_name: INSERTED.into(),
                id_array: ids.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|s| ChaosError::Run(format!("GetVectorsByID failed: {s}")))?
            .into_inner();
        if let Some(status) = reply.status.filter(|s| s.error_code != 0) {
            return Err(ChaosError::Run(format!(
                "GetVectorsByID failed: {}",
                status.reason
            )));
        }
        missing.extend(
            ids.iter()
                .zip(&reply.vectors_data)
                .filter(|(_, v)| v.float_data.is_empty())
                .map(|(id, _)| *id),
        );
    }
    Ok(missing)
}

/// Counts panics on any thread while a run lasts (the previous hook still runs).
struct PanicWatch {
    seen: Arc<Mutex<Vec<String>>>,
}

impl PanicWatch {
    fn install() -> PanicWatch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut seen) = sink.lock() {
                seen.push(info.to_string());
            }
            previous(info);
        }));
        PanicWatch { seen }
    }

    fn taken(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}
