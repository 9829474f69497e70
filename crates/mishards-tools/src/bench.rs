//! `mishards bench`: a load generator for any Milvus 1.1 endpoint (a gateway, a data node, or Milvus
//! itself), also used as a library by the chaos runner.
//!
//! The pieces, each usable alone:
//! - [`DataSet::generate`]: seeded clustered Gaussian vectors (ids = row numbers), and
//!   [`DataSet::queries`] from the same distribution;
//! - [`DataSet::exact`] / [`exact_top_k`]: the exact top-k, by the data node's own FLAT kernel (equal
//!   distances rank by smaller id, as the gateway merges them);
//! - [`load`] creates (or reuses, or drops and recreates) a collection, inserts, flushes and builds the
//!   index; [`insert_rows`] is the insert stream alone and returns the acknowledged ids;
//! - [`run_searches`]: bounded concurrent search load with per-request accounting (latency
//!   percentiles, errors by Milvus status and by gRPC/transport kind, recall against expected
//!   answers), optionally every request's answer and a per-request callback;
//! - [`run`]: all of it, as the CLI does, returning a [`BenchReport`] (human text or JSON).
//!
//! Nothing here prints: progress goes to a caller-supplied callback ([`ProgressLine`] draws one).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tonic::transport::{Channel, Endpoint};

use mishards_node::index::{Metric, TopK, search_flat};
use mishards_proto::limits::{
    self, MAX_DIMENSION, MAX_INDEX_FILE_SIZE_MB, MAX_INSERT_BYTES, MAX_MESSAGE_BYTES, MAX_NLIST,
    MAX_NPROBE,
};
use mishards_proto::{self as proto, WithStatus, milvus_service_client::MilvusServiceClient};
pub use mishards_common::rng::SplitMix64;

/// A Milvus 1.1 gRPC client.
pub type Client = MilvusServiceClient<Channel>;

/// Where `mishards bench` sends its load unless told: Milvus's own port on this machine.
pub const DEFAULT_ADDR: &str = "127.0.0.1:19530";

/// How long connecting to the endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Catalogue calls (has, describe, create, count…).
const QUICK_CALL: Duration = Duration::from_secs(30);
/// Flush and index builds take as long as the data needs; still bounded.
const SLOW_CALL: Duration = Duration::from_secs(30 * 60);
/// Most concurrent search clients a run may open.
const MAX_CONCURRENCY: usize = 4096;
/// Milvus index type codes (IndexParam.index_type).
const INDEX_FLAT: i32 = 1;
const INDEX_IVF_FLAT: i32 = 2;

/// Why a bench could not be set up or run. Failures of individual searches and inserts during a run
/// are not errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot reach a Milvus endpoint at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{call} failed: {failure}")]
    Call {
        call: &'static str,
        failure: Failure,
    },
    /// The collection exists but does not hold what this run asks for.
    #[error("{0}")]
    Mismatch(String),
    #[error("bench task failed: {0}")]
    Task(String),
}

// ---- Seeded random numbers ------------------------------------------------------------------------------

/// The seed of one independent stream (`stream`, `index`) under `seed`: every row and every query has
/// its own, so any row can be generated alone, in any order, on any thread.
fn stream_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let a = SplitMix64::new(seed).next_u64();
    let b = SplitMix64::new(a ^ stream).next_u64();
    SplitMix64::new(b ^ index).next_u64()
}

const STREAM_CENTERS: u64 = 1;
const STREAM_ROWS: u64 = 2;
const STREAM_QUERIES: u64 = 3;

// ---- Data sets -------------------------------------------------------------------------------------------

/// The shape of a clustered Gaussian data set: `clusters` centres uniform in [0, 1)^dim, each point a
/// centre picked uniformly plus N(0, sigma²) noise per coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataSpec {
    pub rows: usize,
    pub dim: usize,
    pub clusters: usize,
    pub sigma: f64,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            rows: 10_000,
            dim: 128,
            clusters: 100,
            sigma: 0.1,
        }
    }
}

impl DataSpec {
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.rows == 0 {
            return Err(BenchError::Invalid("rows must be at least 1".into()));
        }
        if !(1..=MAX_DIMENSION as usize).contains(&self.dim) {
            return Err(BenchError::Invalid(format!(
                "dimension {} is out of range: Milvus takes 1 to {MAX_DIMENSION}",
                self.dim
            )));
        }
        if self.clusters == 0 {
            return Err(BenchError::Invalid("clusters must be at least 1".into()));
        }
        if !self.sigma.is_finite() || self.sigma < 0.0 {
            return Err(BenchError::Invalid(format!(
                "sigma {} must be a finite number ≥ 0",
                self.sigma
            )));
        }
        if self
            .rows
            .checked_mul(self.dim)
            .is_none_or(|n| n > (isize::MAX as usize) / 4)
        {
            return Err(BenchError::Invalid(format!(
                "{} rows × {} dimensions do not fit in memory",
                self.rows, self.dim
            )));
        }
        Ok(())
    }
}

/// A generated data set: row `i` has id `i`. The same spec and seed give the same vectors, bit for bit,
/// whatever the thread count.
#[derive(Clone, Debug)]
pub struct DataSet {
    spec: DataSpec,
    seed: u64,
    centers: Vec<f32>,
    vectors: Vec<f32>,
    ids: Vec<i64>,
}

impl DataSet {
    /// Generates `spec.rows` rows.
    pub fn generate(spec: DataSpec, seed: u64) -> Result<DataSet, BenchError> {
        spec.validate()?;
        let mut rng = SplitMix64::new(stream_seed(seed, STREAM_CENTERS, 0));
        let centers = (0..spec.clusters * spec.dim)
            .map(|_| rng.next_f64() as f32)
            .collect();
        let mut set = DataSet {
            spec: DataSpec { rows: 0, ..spec },
            seed,
            centers,
            vectors: Vec::new(),
            ids: Vec::new(),
        };
        set.extend(spec.rows);
        Ok(set)
    }

    /// Appends `n` more rows of the same distribution, ids continuing from [`DataSet::len`]: the
    /// first `m` rows of any data set are those of a data set of `m` rows with the same seed.
    pub fn extend(&mut self, n: usize) {
        let (dim, start) = (self.spec.dim, self.ids.len());
        self.vectors.resize((start + n) * dim, 0.0);
        let (seed, spec, centers) = (self.seed, self.spec, &self.centers);
        self.vectors[start * dim..]
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, row)| {
                let stream = stream_seed(seed, STREAM_ROWS, (start + i) as u64);
                fill_point(row, centers, &spec, stream)
            });
        self.ids.extend((start..start + n).map(|i| i as i64));
        self.spec.rows = self.ids.len();
    }

    /// `count` query vectors from the same clusters, independent of the rows (their own stream under
    /// `seed`).
    pub fn queries(&self, count: usize, seed: u64) -> QuerySet {
        let dim = self.spec.dim;
        let mut vectors = vec![0.0; count * dim];
        vectors
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(j, row)| {
                let stream = stream_seed(seed, STREAM_QUERIES, j as u64);
                fill_point(row, &self.centers, &self.spec, stream)
            });
        QuerySet { dim, vectors }
    }

    /// The exact top-`k` of every query over all rows.
    pub fn exact(&self, queries: &QuerySet, k: usize, metric: Metric) -> TopK {
        exact_top_k(&self.vectors, &self.ids, self.spec.dim, queries, k, metric)
    }

    /// The exact top-`k` over only the rows with the given ids (say, the inserts that were
    /// acknowledged); ids not in the data set are ignored.
    pub fn exact_over(&self, ids: &[i64], queries: &QuerySet, k: usize, metric: Metric) -> TopK {
        let dim = self.spec.dim;
        let kept: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| (0..self.ids.len() as i64).contains(id))
            .collect();
        let mut vectors = Vec::with_capacity(kept.len() * dim);
        for id in &kept {
            vectors.extend_from_slice(self.row(*id as usize));
        }
        exact_top_k(&vectors, &kept, dim, queries, k, metric)
    }

    pub fn spec(&self) -> DataSpec {
        self.spec
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// All rows, row-major.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Row `i`'s id is `ids()[i] == i`.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Row `i` (panics past the end, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.spec.dim..(i + 1) * self.spec.dim]
    }

    /// The cluster centres, row-major.
    pub fn centers(&self) -> &[f32] {
        &self.centers
    }
}

/// One point: a centre chosen by the stream, plus Gaussian noise.
fn fill_point(out: &mut [f32], centers: &[f32], spec: &DataSpec, stream: u64) {
    let mut rng = SplitMix64::new(stream);
    let c = rng.below(spec.clusters as u64) as usize;
    let center = &centers[c * spec.dim..(c + 1) * spec.dim];
    let sigma = spec.sigma;
    for (pair, base) in out.chunks_mut(2).zip(center.chunks(2)) {
        let (a, b) = rng.normal_pair();
        pair[0] = (base[0] as f64 + sigma * a) as f32;
        if pair.len() > 1 {
            pair[1] = (base[1] as f64 + sigma * b) as f32;
        }
    }
}

/// Query vectors, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySet {
    pub dim: usize,
    pub vectors: Vec<f32>,
}

impl QuerySet {
    pub fn len(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// Exact top-`k` of `queries` over `vectors` (`ids[r]` is row `r`'s id), by the data node's FLAT
/// kernel: L2 is the squared distance, IP the inner product, equal distances rank by smaller id.
pub fn exact_top_k(
    vectors: &[f32],
    ids: &[i64],
    dim: usize,
    queries: &QuerySet,
    k: usize,
    metric: Metric,
) -> TopK {
    search_flat(&queries.vectors, vectors, ids, dim, k, metric, None)
}

// ---- Comparing answers -----------------------------------------------------------------------------------

/// Fraction of the expected hits (padding -1 excluded) that `found` holds, in any order; 1 when
/// nothing was expected.
pub fn recall(found: &[i64], expected: &[i64]) -> f64 {
    let mut sorted: Vec<i64> = found.to_vec();
    sorted.sort_unstable();
    let wanted = expected.iter().filter(|id| **id >= 0);
    let (mut hits, mut total) = (0usize, 0usize);
    for id in wanted {
        total += 1;
        hits += usize::from(sorted.binary_search(id).is_ok());
    }
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

/// How one answered row compares with its expected row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowCheck {
    pub recall: f64,
    /// The same ids in the same order (padding included).
    pub same_ids: bool,
    /// Largest |found − expected| distance over positions holding the same id.
    pub max_distance_error: f32,
}

/// Compares an answered row with the expected one (both best first; pass the expected top-k only).
pub fn check_row(
    found_ids: &[i64],
    found_distances: &[f32],
    expected_ids: &[i64],
    expected_distances: &[f32],
) -> RowCheck {
    let max_distance_error = found_ids
        .iter()
        .zip(found_distances)
        .zip(expected_ids.iter().zip(expected_distances))
        .filter(|((f, _), (e, _))| f == e && **f >= 0)
        .map(|((_, fd), (_, ed))| (fd - ed).abs())
        .fold(0.0f32, f32::max);
    RowCheck {
        recall: recall(found_ids, expected_ids),
        same_ids: found_ids == expected_ids,
        max_distance_error,
    }
}

// ---- Outcomes of one request -----------------------------------------------------------------------------

/// Why one call did not give an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The endpoint answered with a Milvus error status.
    Status { code: i32, reason: String },
    /// The call failed below Milvus: a gRPC status, connection errors included.
    Grpc { code: tonic::Code, message: String },
    /// No answer within the call's timeout.
    Timeout { after: Duration },
    /// An answer whose shape does not fit the request.
    Malformed(String),
}

impl Failure {
    fn from_grpc(status: &tonic::Status) -> Failure {
        Failure::Grpc {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Whether this is a Milvus status (else a gRPC or transport failure).
    pub fn is_status(&self) -> bool {
        matches!(self, Failure::Status { .. })
    }

    /// The key the report counts it under: the Milvus error code's name (`CONNECT_FAILED`), the gRPC
    /// code (`grpc Unavailable`), `timeout` or `malformed answer`.
    pub fn label(&self) -> String {
        match self {
            Failure::Status { code, .. } => status_name(*code),
            Failure::Grpc { code, .. } => format!("grpc {code:?}"),
            Failure::Timeout { .. } => "timeout".into(),
            Failure::Malformed(_) => "malformed answer".into(),
        }
    }
}

/// A Milvus error code's name, e.g. `COLLECTION_NOT_EXISTS`.
pub fn status_name(code: i32) -> String {
    proto::ErrorCode::try_from(code)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_else(|_| format!("code {code}"))
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { code, reason } => {
                write!(f, "{} ({code}): {reason}", status_name(*code))
            }
            Failure::Grpc { code, message } => write!(f, "gRPC {code:?}: {message}"),
            Failure::Timeout { after } => write!(f, "no answer within {after:?}"),
            Failure::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

/// One search's answer: `nq` rows of `k` hits, best first, padded with id -1.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub nq: usize,
    pub k: usize,
    pub ids: Vec<i64>,
    pub distances: Vec<f32>,
}

impl Answer {
    /// Checks a reply's shape against a request of `nq` queries and `topk`.
    pub fn from_reply(
        reply: proto::TopKQueryResult,
        nq: usize,
        topk: usize,
    ) -> Result<Answer, Failure> {
        if let Some(status) = reply.status.as_ref().filter(|s| s.error_code != 0) {
            return Err(Failure::Status {
                code: status.error_code,
                reason: status.reason.clone(),
            });
        }
        let malformed = |what: String| Err(Failure::Malformed(what));
        if reply.row_num != nq as i64 {
            return malformed(format!("{} rows for {nq} queries", reply.row_num));
        }
        if reply.ids.len() != reply.distances.len() || !reply.ids.len().is_multiple_of(nq.max(1)) {
            return malformed(format!(
                "{} ids and {} distances for {nq} queries",
                reply.ids.len(),
                reply.distances.len()
            ));
        }
        let k = reply.ids.len() / nq.max(1);
        if k > topk {
            return malformed(format!("{k} hits per query for topk {topk}"));
        }
        Ok(Answer {
            nq,
            k,
            ids: reply.ids,
            distances: reply.distances,
        })
    }

    pub fn row_ids(&self, row: usize) -> &[i64] {
        self.ids
            .get(row * self.k..(row + 1) * self.k)
            .unwrap_or(&[])
    }

    pub fn row_distances(&self, row: usize) -> &[f32] {
        self.distances
            .get(row * self.k..(row + 1) * self.k)
            .unwrap_or(&[])
    }
}

/// How one search compared with the expected answers, over its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestCheck {
    /// Mean recall over the request's rows.
    pub recall: f64,
    /// The lowest recall of one of its rows.
    pub min_recall: f64,
    /// Rows whose ids equal the expected ones exactly, in order.
    pub same_id_rows: usize,
    pub max_distance_error: f32,
}

/// One search request of a run.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Its number in the run, from 0.
    pub seq: u64,
    pub worker: usize,
    /// When it was sent, from the start of the run.
    pub started: Duration,
    pub latency: Duration,
    /// The query set's rows it asked, in order.
    pub queries: Vec<usize>,
    pub outcome: Result<Answer, Failure>,
    /// Against the expected answers, when they were given and the request was answered.
    pub check: Option<RequestCheck>,
}

/// Called with every request of a run as it completes, on the worker that sent it.
pub type Observer = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

// ---- Connecting and calling ------------------------------------------------------------------------------

/// A client for `addr` (`HOST:PORT` or `http://HOST:PORT`), connected, with message limits as large as
/// the gateway's and the nodes'.
pub async fn connect(addr: &str) -> Result<Client, BenchError> {
    let unreachable = |reason: String| BenchError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| unreachable(format!("not an address: {}", error_chain(&e))))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// An error and its causes, `: `-separated (tonic's own text is just "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// One unary call with a timeout, its Milvus status checked.
async fn call<T: WithStatus>(
    name: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, BenchError> {
    let failure = |failure| BenchError::Call {
        call: name,
        failure,
    };
    let reply = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| failure(Failure::Timeout { after: timeout }))?
        .map_err(|s| failure(Failure::from_grpc(&s)))?
        .into_inner();
    match reply.status() {
        Some(s) if s.error_code != 0 => Err(failure(Failure::Status {
            code: s.error_code,
            reason: s.reason.clone(),
        })),
        _ => Ok(reply),
    }
}

/// The endpoint's `Cmd("version")`: also proves it speaks Milvus.
pub async fn server_version(client: &mut Client) -> Result<String, BenchError> {
    let reply = call(
        "Cmd(version)",
        QUICK_CALL,
        client.cmd(proto::Command {
            cmd: "version".into(),
        }),
    )
    .await?;
    Ok(reply.string_reply)
}

fn params(json: serde_json::Value) -> Vec<proto::KeyValuePair> {
    vec![proto::KeyValuePair {
        key: "params".into(),
        value: json.to_string(),
    }]
}

// ---- Loading ---------------------------------------------------------------------------------------------

/// The collection's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSpec {
    Flat,
    IvfFlat { nlist: u32 },
}

impl IndexSpec {
    pub fn name(self) -> &'static str {
        match self {
            IndexSpec::Flat => "flat",
            IndexSpec::IvfFlat { .. } => "ivf_flat",
        }
    }
}

/// The collection a run loads and searches.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub metric: Metric,
    pub index: IndexSpec,
    /// Milvus's `index_file_size`, in MB: segments grow to this size before they are indexed.
    pub index_file_size_mb: i64,
}

impl CollectionSpec {
    pub fn new(name: impl Into<String>) -> Self {
        CollectionSpec {
            name: name.into(),
            metric: Metric::L2,
            index: IndexSpec::Flat,
            index_file_size_mb: 1024,
        }
    }
}

/// Milvus's metric code.
pub fn metric_code(metric: Metric) -> i32 {
    match metric {
        Metric::L2 => 1,
        Metric::Ip => 2,
    }
}

pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::L2 => "L2",
        Metric::Ip => "IP",
    }
}

/// What [`load`] does when the collection already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Refuse: the run would search data it did not load.
    Fail,
    /// Use it as it is, after checking it holds this data set (dimension, metric, row count, sample
    /// rows); the index is brought to the one asked for.
    Reuse,
    /// Drop it and load afresh.
    Drop,
}

/// How rows are inserted.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertOptions {
    /// Rows per Insert call; one call carries at most Milvus's 256 MB of vectors.
    pub batch_rows: usize,
    /// Partition to insert into (created by [`load`] if missing); empty: the default partition.
    pub partition_tag: String,
    pub timeout: Duration,
    /// Stop at the first failed batch (else go on and report every failure).
    pub stop_on_error: bool,
    /// Flush after every batch, so each batch becomes its own segment file.
    pub flush_each_batch: bool,
}

impl Default for InsertOptions {
    fn default() -> Self {
        InsertOptions {
            batch_rows: 10_000,
            partition_tag: String::new(),
            timeout: Duration::from_secs(60),
            stop_on_error: true,
            flush_each_batch: false,
        }
    }
}

impl InsertOptions {
    pub fn validate(&self, dim: usize) -> Result<(), BenchError> {
        if self.batch_rows == 0 {
            return Err(BenchError::Invalid("batch must be at least 1 row".into()));
        }
        let bytes = self.batch_rows.saturating_mul(dim).saturating_mul(4);
        if bytes > MAX_INSERT_BYTES {
            return Err(BenchError::Invalid(format!(
                "a batch of {} rows × {dim} dimensions is {} MB of vectors; Milvus takes at most 256 MB per insert: use at most {} rows",
                self.batch_rows,
                bytes >> 20,
                MAX_INSERT_BYTES / (dim.max(1) * 4)
            )));
        }
        if self.timeout.is_zero() {
            return Err(BenchError::Invalid(
                "the insert timeout must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// One batch that was not acknowledged.
#[derive(Clone, Debug)]
pub struct BatchFailure {
    /// Its rows of the data set.
    pub rows: Range<usize>,
    pub latency: Duration,
    pub failure: Failure,
}

/// What an insert stream did.
#[derive(Clone, Debug, Default)]
pub struct InsertReport {
    /// Ids the endpoint acknowledged, in the order acknowledged.
    pub acknowledged: Vec<i64>,
    pub failures: Vec<BatchFailure>,
    pub batches: u64,
    pub elapsed: Duration,
}

/// Inserts rows `rows` of `data` into `collection` (ids = row numbers) in batches, and returns the
/// acknowledged ids and every failed batch. Progress is reported as (rows done, rows in all).
pub async fn insert_rows(
    client: &mut Client,
    collection: &str,
    data: &DataSet,
    rows: Range<usize>,
    options: &InsertOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> InsertReport {
    let started = Instant::now();
    let rows = rows.start.min(data.len())..rows.end.min(data.len());
    let total = rows.len() as u64;
    let mut report = InsertReport::default();
    let batch_rows = options.batch_rows.max(1);
    let mut start = rows.start;
    progress(0, total);
    while start < rows.end {
        let end = (start + batch_rows).min(rows.end);
        let request = proto::InsertParam {
            collection_name: collection.to_string(),
            row_record_array: (start..end)
                .map(|i| proto::RowRecord {
                    float_data: data.row(i).to_vec(),
                    binary_data: Vec::new(),
                })
                .collect(),
            row_id_array: data.ids()[start..end].to_vec(),
            partition_tag: options.partition_tag.clone(),
            extra_params: Vec::new(),
        };
        let sent = Instant::now();
        let outcome = call("Insert", options.timeout, client.insert(request))
            .await
            .map_err(failure_of)
            .and_then(|reply| {
                if reply.vector_id_array.len() == end - start {
                    Ok(reply.vector_id_array)
                } else {
                    Err(Failure::Malformed(format!(
                        "{} ids acknowledged for {} rows",
                        reply.vector_id_array.len(),
                        end - start
                    )))
                }
            });
        report.batches += 1;
        let failed = match outcome {
            Ok(ids) => {
                report.acknowledged.extend(ids);
                if options.flush_each_batch {
                    flush(client, collection).await.err().map(failure_of)
                } else {
                    None
                }
            }
            Err(failure) => Some(failure),
        };
        if let Some(failure) = failed {
            report.failures.push(BatchFailure {
                rows: start..end,
                latency: sent.elapsed(),
                failure,
            });
            if options.stop_on_error {
                break;
            }
        }
        start = end;
        progress((start - rows.start) as u64, total);
    }
    report.elapsed = started.elapsed();
    report
}

/// The failure inside a failed call.
fn failure_of(e: BenchError) -> Failure {
    match e {
        BenchError::Call { failure, .. } => failure,
        other => Failure::Malformed(other.to_string()),
    }
}

async fn flush(client: &mut Client, collection: &str) -> Result<(), BenchError> {
    call(
        "Flush",
        SLOW_CALL,
        client.flush(proto::FlushParam {
            collection_name_array: vec![collection.to_string()],
        }),
    )
    .await
    .map(drop)
}

/// Everything [`load`] needs besides the data.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    pub if_exists: IfExists,
    pub insert: InsertOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            if_exists: IfExists::Fail,
            insert: InsertOptions::default(),
        }
    }
}

/// What [`load`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The collection existed and was used as it was.
    pub reused: bool,
    /// The ids the collection holds: the acknowledged inserts, or the data set's when reused.
    pub ids: Vec<i64>,
    pub insert_time: Duration,
    pub flush_time: Duration,
    /// Index build (CreateIndex) time; zero when nothing was built.
    pub index_time: Duration,
}

impl Loaded {
    /// Rows inserted per second (0 when reused).
    pub fn insert_rate(&self) -> f64 {
        if self.reused || self.insert_time.is_zero() {
            0.0
        } else {
            self.ids.len() as f64 / self.insert_time.as_secs_f64()
        }
    }
}

/// Makes `collection` hold `data`: creates it and inserts every row (ids = row numbers), flushes, and
/// builds the index; or, per `options.if_exists`, reuses or recreates an existing one. Any failed
/// call is an error.
pub async fn load(
    client: &mut Client,
    collection: &CollectionSpec,
    data: &DataSet,
    options: &LoadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, BenchError> {
    data.spec().validate()?;
    options.insert.validate(data.dim())?;
    if !(1..=MAX_INDEX_FILE_SIZE_MB).contains(&collection.index_file_size_mb) {
        return Err(BenchError::Invalid(format!(
            "index_file_size {} MB is out of range: 1 to {MAX_INDEX_FILE_SIZE_MB}",
            collection.index_file_size_mb
        )));
    }
    let name = collection.name.clone();
    let exists = call(
        "HasCollection",
        QUICK_CALL,
        client.has_collection(proto::CollectionName {
            collection_name: name.clone(),
        }),
    )
    .await?
    .bool_reply;
    if exists {
        match options.if_exists {
            IfExists::Fail => {
                return Err(BenchError::Mismatch(format!(
                    "collection `{name}` already exists: reuse it (--reuse) or drop and reload it (--drop)"
                )));
            }
            IfExists::Reuse => {
                check_existing(client, collection, data).await?;
                let index_time = ensure_index(client, collection).await?;
                return Ok(Loaded {
                    reused: true,
                    ids: data.ids().to_vec(),
                    insert_time: Duration::ZERO,
                    flush_time: Duration::ZERO,
                    index_time,
                });
            }
            IfExists::Drop => {
                call(
                    "DropCollection",
                    SLOW_CALL,
                    client.drop_collection(proto::CollectionName {
                        collection_name: name.clone(),
                    }),
                )
                .await?;
            }
        }
    }
    call(
        "CreateCollection",
        QUICK_CALL,
        client.create_collection(proto::CollectionSchema {
            status: None,
            collection_name: name.clone(),
            dimension: data.dim() as i64,
            index_file_size: collection.index_file_size_mb,
            metric_type: metric_code(collection.metric),
            extra_params: Vec::new(),
        }),
    )
    .await?;
    let tag = options.insert.partition_tag.trim();
    if !tag.is_empty() {
        call(
            "CreatePartition",
            QUICK_CALL,
            client.create_partition(proto::PartitionParam {
                collection_name: name.clone(),
                tag: tag.to_string(),
            }),
        )
        .await?;
    }
    let insert_options = InsertOptions {
        stop_on_error: true,
        ..options.insert.clone()
    };
    let inserted = insert_rows(
        client,
        &name,
        data,
        0..data.len(),
        &insert_options,
        progress,
    )
    .await;
    if let Some(first) = inserted.failures.into_iter().next() {
        return Err(BenchError::Call {
            call: "Insert",
            failure: first.failure,
        });
    }
    let flush_started = Instant::now();
    flush(client, &name).await?;
    let flush_time = flush_started.elapsed();
    let index_time = ensure_index(client, collection).await?;
    Ok(Loaded {
        reused: false,
        ids: inserted.acknowledged,
        insert_time: inserted.elapsed,
        flush_time,
        index_time,
    })
}

/// Checks that an existing collection holds `data`: dimension, metric, row count and a few rows.
async fn check_existing(
    client: &mut Client,
    collection: &CollectionSpec,
    data: &DataSet,
) -> Result<(), BenchError> {
    let name = &collection.name;
    let schema = call(
        "DescribeCollection",
        QUICK_CALL,
        client.describe_collection(proto::CollectionName {
            collection_name: name.clone(),
        }),
    )
    .await?;
    let drop_hint = "(--drop reloads it)";
    if schema.dimension != data.dim() as i64 {
        return Err(BenchError::Mismatch(format!(
            "collection `{name}` has dimension {}, this run wants {} {drop_hint}",
            schema.dimension,
            data.dim()
        )));
    }
    if schema.metric_type != metric_code(collection.metric) {
        return Err(BenchError::Mismatch(format!(
            "collection `{name}` uses metric {}, this run wants {} {drop_hint}",
            schema.metric_type,
            metric_name(collection.metric)
        )));
    }
    let rows = call(
        "CountCollection",
        QUICK_CALL,
        client.count_collection(proto::CollectionName {
            collection_name: name.clone(),
        }),
    )
    .await?
    .collection_row_count;
    if rows != data.len() as i64 {
        return Err(BenchError::Mismatch(format!(
            "collection `{name}` has {rows} rows, this run wants {} {drop_hint}",
            data.len()
        )));
    }
    // A few rows, first, middle and last, must be this data set's (same seed, same spread).
    let mut sample = vec![0, data.len() / 2, data.len() - 1];
    sample.dedup();
    let found = call(
        "GetVectorsByID",
        QUICK_CALL,
        client.get_vectors_by_id(proto::VectorsIdentity {
            collection_name: name.clone(),
            partition_tag: String::new(),
            id_array: sample.iter().map(|i| *i as i64).collect(),
        }),
    )
    .await
    .map_err(|e| {
        BenchError::Mismatch(format!(
            "collection `{name}` does not hold this data set: {e} {drop_hint}"
        ))
    })?;
    let same = found.vectors_data.len() == sample.len()
        && sample
            .iter()
            .zip(&found.vectors_data)
            .all(|(i, v)| v.float_data == data.row(*i));
    if !same {
        return Err(BenchError::Mismatch(format!(
            "collection `{name}` holds other vectors than this data set (another --seed, --clusters or --sigma?) {drop_hint}"
        )));
    }
    Ok(())
}

/// Brings the collection's index to the one asked for; returns the time a build took.
async fn ensure_index(
    client: &mut Client,
    collection: &CollectionSpec,
) -> Result<Duration, BenchError> {
    let name = &collection.name;
    let current = call(
        "DescribeIndex",
        QUICK_CALL,
        client.describe_index(proto::CollectionName {
            collection_name: name.clone(),
        }),
    )
    .await?;
    let current_nlist = current
        .extra_params
        .iter()
        .find(|kv| kv.key == "params")
        .and_then(|kv| serde_json::from_str::<serde_json::Value>(&kv.value).ok())
        .and_then(|v| v.get("nlist").and_then(|n| n.as_u64()));
    let started = Instant::now();
    match collection.index {
        IndexSpec::Flat if current.index_type == INDEX_FLAT || current.index_type == 0 => {
            return Ok(Duration::ZERO);
        }
        IndexSpec::Flat => {
            call(
                "DropIndex",
                SLOW_CALL,
                client.drop_index(proto::CollectionName {
                    collection_name: name.clone(),
                }),
            )
            .await?;
        }
        IndexSpec::IvfFlat { nlist }
            if current.index_type == INDEX_IVF_FLAT && current_nlist == Some(nlist as u64) =>
        {
            return Ok(Duration::ZERO);
        }
        IndexSpec::IvfFlat { nlist } => {
            call(
                "CreateIndex",
                SLOW_CALL,
                client.create_index(proto::IndexParam {
                    status: None,
                    collection_name: name.clone(),
                    index_type: INDEX_IVF_FLAT,
                    extra_params: params(serde_json::json!({ "nlist": nlist })),
                }),
            )
            .await?;
        }
    }
    Ok(started.elapsed())
}

// ---- Search load -----------------------------------------------------------------------------------------

/// A bounded search load: `concurrency` clients, each with its own connection, send searches one
/// after another until `duration` has passed or `count` searches were sent, whichever comes first.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchLoad {
    pub concurrency: usize,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Queries per search: request `n` asks query-set rows `n·nq, n·nq + 1, …` (mod the set's size).
    pub nq: usize,
    pub topk: usize,
    /// Sent as `{"nprobe": N}` when set.
    pub nprobe: Option<u32>,
    pub partition_tags: Vec<String>,
    /// Per request: a search without an answer by then counts as a timeout.
    pub timeout: Duration,
    /// Each client sends one uncounted search first (connections set up, segments loaded).
    pub warmup: bool,
    /// Keep every request's record (answer included) in the report.
    pub keep_records: bool,
}

impl Default for SearchLoad {
    fn default() -> Self {
        SearchLoad {
            concurrency: 8,
            duration: Some(Duration::from_secs(10)),
            count: None,
            nq: 1,
            topk: 10,
            nprobe: None,
            partition_tags: Vec::new(),
            timeout: Duration::from_secs(10),
            warmup: true,
            keep_records: false,
        }
    }
}

impl SearchLoad {
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |m: String| Err(BenchError::Invalid(m));
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return invalid(format!(
                "concurrency {} is out of range: 1 to {MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        match (self.duration, self.count) {
            (None, None) => {
                return invalid("a search load needs a duration, a count, or both".into());
            }
            (Some(d), _) if d.is_zero() => return invalid("the duration must be above 0".into()),
            (_, Some(0)) => return invalid("the count must be at least 1".into()),
            _ => {}
        }
        if self.nq == 0 {
            return invalid("nq must be at least 1".into());
        }
        if let Some(problem) = limits::topk_problem(self.topk as i64) {
            return invalid(problem);
        }
        if let Some(problem) = limits::result_size_problem(self.nq, self.topk) {
            return invalid(problem);
        }
        if let Some(n) = self.nprobe
            && !(1..=MAX_NPROBE).contains(&(n as i64))
        {
            return invalid(format!("nprobe {n} is out of range: 1 to {MAX_NPROBE}"));
        }
        if self.timeout.is_zero() {
            return invalid("the request timeout must be above 0".into());
        }
        Ok(())
    }

    /// The query-set rows request `seq` asks.
    pub fn queries_of(&self, seq: u64, set_size: usize) -> Vec<usize> {
        let size = set_size.max(1) as u128;
        let first = seq as u128 * self.nq as u128;
        (0..self.nq as u128)
            .map(|i| ((first + i) % size) as usize)
            .collect()
    }
}

/// What a search load runs against.
#[derive(Clone, Debug)]
pub struct SearchTarget {
    pub addr: String,
    pub collection: String,
    pub queries: Arc<QuerySet>,
    /// The answer each query should get (one row per query-set row, at least `topk` wide): recall and
    /// exactness are measured against it.
    pub expected: Option<Arc<TopK>>,
}

/// Latency percentiles (nearest rank) over a set of requests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min: Duration,
    pub mean: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    pub fn from_samples(mut samples: Vec<Duration>) -> LatencySummary {
        samples.sort_unstable();
        let Some(&max) = samples.last() else {
            return LatencySummary::default();
        };
        let total: Duration = samples.iter().sum();
        LatencySummary {
            count: samples.len() as u64,
            min: samples[0],
            mean: total / samples.len() as u32,
            p50: percentile(&samples, 50.0),
            p95: percentile(&samples, 95.0),
            p99: percentile(&samples, 99.0),
            max,
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "min": ms(self.min),
            "mean": ms(self.mean),
            "p50": ms(self.p50),
            "p95": ms(self.p95),
            "p99": ms(self.p99),
            "max": ms(self.max),
        })
    }
}

/// The nearest-rank `p`-th percentile of ascending `sorted` samples (zero when empty): the smallest
/// sample with at least p % of the samples at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Failed requests by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// By Milvus status code name, e.g. `CONNECT_FAILED`.
    pub by_status: BTreeMap<String, u64>,
    /// By gRPC code (`grpc Unavailable`), `timeout` or `malformed answer`.
    pub by_transport: BTreeMap<String, u64>,
}

impl ErrorCounts {
    pub fn add(&mut self, failure: &Failure) {
        let map = if failure.is_status() {
            &mut self.by_status
        } else {
            &mut self.by_transport
        };
        *map.entry(failure.label()).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.by_status
            .values()
            .chain(self.by_transport.values())
            .sum()
    }

    fn merge(&mut self, other: ErrorCounts) {
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_transport {
            *self.by_transport.entry(k).or_default() += v;
        }
    }
}

/// Recall over every answered row of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecallSummary {
    pub k: usize,
    /// Answered rows compared (a query asked several times counts each time).
    pub rows: u64,
    pub mean: f64,
    pub min: f64,
    /// Rows whose ids equal the expected ones exactly, in order.
    pub same_id_rows: u64,
    pub max_distance_error: f32,
}

/// What a search load measured.
#[derive(Clone, Debug)]
pub struct SearchReport {
    pub concurrency: usize,
    pub nq: usize,
    pub topk: usize,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// From the first search sent to the last answer (warm-up excluded).
    pub elapsed: Duration,
    /// Answered searches per second.
    pub qps: f64,
    /// Over answered searches.
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    /// When expected answers were given and at least one search was answered.
    pub recall: Option<RecallSummary>,
    /// Every request, by `seq`, when `keep_records` was set.
    pub records: Vec<RequestRecord>,
}

impl SearchReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "concurrency": self.concurrency,
            "nq": self.nq,
            "topk": self.topk,
            "seconds": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "qps": self.qps,
            "latency_ms": self.latency.to_json(),
            "errors": {
                "by_status": self.errors.by_status,
                "by_transport": self.errors.by_transport,
            },
            "recall": self.recall.map(|r| serde_json::json!({
                "k": r.k,
                "rows": r.rows,
                "mean": r.mean,
                "min": r.min,
                "same_id_rows": r.same_id_rows,
                "max_distance_error": r.max_distance_error,
            })),
        })
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    errors: ErrorCounts,
    recall_rows: u64,
    recall_sum: f64,
    recall_min: f64,
    same_id_rows: u64,
    max_distance_error: f32,
    records: Vec<RequestRecord>,
}

struct Shared {
    target: SearchTarget,
    load: SearchLoad,
    observer: Option<Observer>,
    next_seq: AtomicU64,
    started: Instant,
    deadline: Option<Instant>,
}

/// Runs a bounded search load against `target` and accounts for every request. Errors only when the
/// load is invalid or the endpoint cannot be reached at all; failed searches are counted.
pub async fn run_searches(
    target: &SearchTarget,
    load: &SearchLoad,
    observer: Option<Observer>,
) -> Result<SearchReport, BenchError> {
    load.validate()?;
    if target.queries.is_empty() {
        return Err(BenchError::Invalid("the query set is empty".into()));
    }
    if let Some(expected) = &target.expected
        && (expected.nq != target.queries.len() || expected.k < load.topk)
    {
        return Err(BenchError::Invalid(format!(
            "expected answers cover {} queries × top-{}, the load asks {} queries × top-{}",
            expected.nq,
            expected.k,
            target.queries.len(),
            load.topk
        )));
    }
    let mut clients = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency {
        clients.push(connect(&target.addr).await?);
    }
    if load.warmup {
        let warmups = clients.iter_mut().enumerate().map(|(i, client)| {
            let request = search_request(
                target,
                load,
                &load.queries_of(i as u64, target.queries.len()),
            );
            async move {
                let _ = tokio::time::timeout(load.timeout, client.search(request)).await;
            }
        });
        futures::future::join_all(warmups).await;
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        target: target.clone(),
        load: load.clone(),
        observer,
        next_seq: AtomicU64::new(0),
        started,
        deadline: load.duration.map(|d| started + d),
    });
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(worker, client)| tokio::spawn(search_worker(worker, client, shared.clone())))
        .collect();
    let mut total = Tally {
        recall_min: 1.0,
        ..Tally::default()
    };
    for handle in workers {
        let tally = handle.await.map_err(|e| BenchError::Task(e.to_string()))?;
        total.latencies.extend(tally.latencies);
        total.failed += tally.failed;
        total.errors.merge(tally.errors);
        total.recall_rows += tally.recall_rows;
        total.recall_sum += tally.recall_sum;
        total.recall_min = total.recall_min.min(tally.recall_min);
        total.same_id_rows += tally.same_id_rows;
        total.max_distance_error = total.max_distance_error.max(tally.max_distance_error);
        total.records.extend(tally.records);
    }
    let elapsed = started.elapsed();
    total.records.sort_by_key(|r| r.seq);
    let succeeded = total.latencies.len() as u64;
    let recall = (target.expected.is_some() && total.recall_rows > 0).then(|| RecallSummary {
        k: load.topk,
        rows: total.recall_rows,
        mean: total.recall_sum / total.recall_rows as f64,
        min: total.recall_min,
        same_id_rows: total.same_id_rows,
        max_distance_error: total.max_distance_error,
    });
    Ok(SearchReport {
        concurrency: load.concurrency,
        nq: load.nq,
        topk: load.topk,
        requests: succeeded + total.failed,
        succeeded,
        failed: total.failed,
        elapsed,
        qps: succeeded as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: LatencySummary::from_samples(total.latencies),
        errors: total.errors,
        recall,
        records: total.records,
    })
}

fn search_request(
    target: &SearchTarget,
    load: &SearchLoad,
    queries: &[usize],
) -> proto::SearchParam {
    proto::SearchParam {
        collection_name: target.collection.clone(),
        partition_tag_array: load.partition_tags.clone(),
        query_record_array: queries
            .iter()
            .map(|q| proto::RowRecord {
                float_data: target.queries.row(*q).to_vec(),
                binary_data: Vec::new(),
            })
            .collect(),
        topk: load.topk as i64,
        extra_params: load
            .nprobe
            .map(|n| params(serde_json::json!({ "nprobe": n })))
            .unwrap_or_default(),
    }
}

async fn search_worker(worker: usize, mut client: Client, shared: Arc<Shared>) -> Tally {
    let (target, load) = (&shared.target, &shared.load);
    let mut tally = Tally {
        recall_min: 1.0,
        ..Tally::default()
    };
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        if load.count.is_some_and(|count| seq >= count) {
            break;
        }
        let queries = load.queries_of(seq, target.queries.len());
        let request = search_request(target, load, &queries);
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(load.timeout, client.search(request)).await {
            Err(_) => Err(Failure::Timeout {
                after: load.timeout,
            }),
            Ok(Err(status)) => Err(Failure::from_grpc(&status)),
            Ok(Ok(reply)) => Answer::from_reply(reply.into_inner(), load.nq, load.topk),
        };
        let latency = sent.elapsed();
        let check = match (&outcome, &target.expected) {
            (Ok(answer), Some(expected)) => {
                Some(check_answer(answer, &queries, expected, load.topk))
            }
            _ => None,
        };
        match &outcome {
            Ok(_) => tally.latencies.push(latency),
            Err(failure) => {
                tally.failed += 1;
                tally.errors.add(failure);
            }
        }
        if let Some(c) = &check {
            tally.recall_rows += queries.len() as u64;
            tally.recall_sum += c.recall * queries.len() as f64;
            tally.recall_min = tally.recall_min.min(c.min_recall);
            tally.same_id_rows += c.same_id_rows as u64;
            tally.max_distance_error = tally.max_distance_error.max(c.max_distance_error);
        }
        if shared.observer.is_some() || load.keep_records {
            let record = RequestRecord {
                seq,
                worker,
                started: sent.duration_since(shared.started),
                latency,
                queries,
                outcome,
                check,
            };
            if let Some(observe) = &shared.observer {
                observe(&record);
            }
            if load.keep_records {
                tally.records.push(record);
            }
        }
    }
    tally
}

/// Compares every row of an answer with the expected top-`topk` of its query.
pub fn check_answer(
    answer: &Answer,
    queries: &[usize],
    expected: &TopK,
    topk: usize,
) -> RequestCheck {
    let k = topk.min(expected.k);
    let mut check = RequestCheck {
        recall: 0.0,
        min_recall: 1.0,
        same_id_rows: 0,
        max_distance_error: 0.0,
    };
    for (row, q) in queries.iter().enumerate() {
        let expected_ids = expected.row_ids(*q);
        let expected_distances = expected.row_distances(*q);
        let c = check_row(
            answer.row_ids(row),
            answer.row_distances(row),
            &expected_ids[..k.min(expected_ids.len())],
            &expected_distances[..k.min(expected_distances.len())],
        );
        check.recall += c.recall;
        check.min_recall = check.min_recall.min(c.recall);
        check.same_id_rows += usize::from(c.same_ids);
        check.max_distance_error = check.max_distance_error.max(c.max_distance_error);
    }
    check.recall /= queries.len().max(1) as f64;
    check
}

// ---- A whole run -----------------------------------------------------------------------------------------

/// Everything `mishards bench` does, as settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    pub addr: String,
    pub collection: CollectionSpec,
    pub data: DataSpec,
    /// Seeds the data set and the queries.
    pub seed: u64,
    /// Distinct query vectors; searches cycle through them.
    pub queries: usize,
    pub load: LoadOptions,
    pub search: SearchLoad,
}

impl BenchConfig {
    /// Every setting's range, checked before anything is generated or sent.
    pub fn validate(&self) -> Result<(), BenchError> {
        self.data.validate()?;
        self.load.insert.validate(self.data.dim)?;
        self.search.validate()?;
        if self.queries == 0 {
            return Err(BenchError::Invalid("queries must be at least 1".into()));
        }
        if let IndexSpec::IvfFlat { nlist } = self.collection.index
            && !(1..=MAX_NLIST).contains(&(nlist as i64))
        {
            return Err(BenchError::Invalid(format!(
                "nlist {nlist} is out of range: 1 to {MAX_NLIST}"
            )));
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub server_version: String,
    pub loaded: Loaded,
    pub search: SearchReport,
}

/// Generates the data set, loads it (per `config.load.if_exists`), computes the exact answers of the
/// query set, and runs the search load with them. `progress` sees the insert: (rows done, rows in all).
pub async fn run(
    config: &BenchConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let mut client = connect(&config.addr).await?;
    let server_version =
        server_version(&mut client)
            .await
            .map_err(|e| BenchError::Unreachable {
                addr: config.addr.clone(),
                reason: format!("it does not answer as a Milvus 1.1 endpoint ({e})"),
            })?;
    let (spec, seed) = (config.data, config.seed);
    let data = tokio::task::spawn_blocking(move || DataSet::generate(spec, seed))
        .await
        .map_err(|e| BenchError::Task(e.to_string()))??;
    let data = Arc::new(data);
    let loaded = load(
        &mut client,
        &config.collection,
        &data,
        &config.load,
        progress,
    )
    .await?;
    // Searches should measure the search, not the first read of every segment.
    if let Err(e) = call(
        "PreloadCollection",
        SLOW_CALL,
        client.preload_collection(proto::PreloadCollectionParam {
            collection_name: config.collection.name.clone(),
            partition_tag_array: Vec::new(),
        }),
    )
    .await
    {
        tracing::warn!(error = %e, "preload failed; the first searches will load segments");
    }
    let (count, topk, metric) = (config.queries, config.search.topk, config.collection.metric);
    let for_exact = data.clone();
    let (queries, expected) = tokio::task::spawn_blocking(move || {
        let queries = for_exact.queries(count, seed);
        let expected = for_exact.exact(&queries, topk, metric);
        (queries, expected)
    })
    .await
    .map_err(|e| BenchError::Task(e.to_string()))?;
    let target = SearchTarget {
        addr: config.addr.clone(),
        collection: config.collection.name.clone(),
        queries: Arc::new(queries),
        expected: Some(Arc::new(expected)),
    };
    let search = run_searches(&target, &config.search, None).await?;
    Ok(BenchReport {
        config: config.clone(),
        server_version,
        loaded,
        search,
    })
}

impl BenchReport {
    /// The report for machines (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        let nlist = match c.collection.index {
            IndexSpec::IvfFlat { nlist } => Some(nlist),
            IndexSpec::Flat => None,
        };
        let mut search = self.search.to_json();
        search["nprobe"] = serde_json::json!(c.search.nprobe);
        search["queries"] = serde_json::json!(c.queries);
        serde_json::json!({
            "endpoint": c.addr,
            "server_version": self.server_version,
            "collection": c.collection.name,
            "data": {
                "rows": c.data.rows,
                "dim": c.data.dim,
                "clusters": c.data.clusters,
                "sigma": c.data.sigma,
                "seed": c.seed,
                "metric": metric_name(c.collection.metric),
                "index": c.collection.index.name(),
                "nlist": nlist,
            },
            "load": {
                "reused": self.loaded.reused,
                "rows": self.loaded.ids.len(),
                "insert_seconds": self.loaded.insert_time.as_secs_f64(),
                "insert_rows_per_second": self.loaded.insert_rate(),
                "flush_seconds": self.loaded.flush_time.as_secs_f64(),
                "index_seconds": self.loaded.index_time.as_secs_f64(),
            },
            "search": search,
        })
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let (c, s, l) = (&self.config, &self.search, &self.loaded);
        let mut text = String::new();
        let mut line = |t: String| {
            text.push_str(&t);
            text.push('\n');
        };
        line(format!(
            "mishards bench: {} (Milvus {}), collection `{}`",
            c.addr, self.server_version, c.collection.name
        ));
        let index = match c.collection.index {
            IndexSpec::Flat => "flat".to_string(),
            IndexSpec::IvfFlat { nlist } => format!("ivf_flat, nlist {nlist}"),
        };
        line(format!(
            "data      {} × {}, {}, {} clusters (sigma {}), seed {}; index {index}",
            group(c.data.rows as u64),
            c.data.dim,
            metric_name(c.collection.metric),
            c.data.clusters,
            c.data.sigma,
            c.seed
        ));
        if l.reused {
            line(format!(
                "load      reused the existing {} rows{}",
                group(l.ids.len() as u64),
                index_note(l.index_time)
            ));
        } else {
            line(format!(
                "load      {} rows in {:.2} s ({} rows/s); flush {:.2} s{}",
                group(l.ids.len() as u64),
                l.insert_time.as_secs_f64(),
                group(l.insert_rate().round() as u64),
                l.flush_time.as_secs_f64(),
                index_note(l.index_time)
            ));
        }
        let nprobe = c
            .search
            .nprobe
            .map(|n| format!(", nprobe {n}"))
            .unwrap_or_default();
        line(format!(
            "search    {} clients, nq {}, top-{}{nprobe}, {} distinct queries, {:.2} s",
            s.concurrency,
            s.nq,
            s.topk,
            group(c.queries as u64),
            s.elapsed.as_secs_f64()
        ));
        line(format!(
            "  requests  {} ({} answered, {} failed)",
            group(s.requests),
            group(s.succeeded),
            group(s.failed)
        ));
        line(format!("  QPS       {:.1}", s.qps));
        line(format!(
            "  latency   p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(s.latency.p50),
            ms(s.latency.p95),
            ms(s.latency.p99),
            ms(s.latency.max)
        ));
        let errors: Vec<String> = s
            .errors
            .by_status
            .iter()
            .chain(&s.errors.by_transport)
            .map(|(kind, n)| format!("{kind} {}", group(*n)))
            .collect();
        line(format!(
            "  errors    {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        ));
        match s.recall {
            Some(r) => line(format!(
                "  recall@{} {:.4} (mean over {} answered queries; lowest {:.2}; {} exactly the exact top-{})",
                r.k,
                r.mean,
                group(r.rows),
                r.min,
                group(r.same_id_rows),
                r.k
            )),
            None => line(format!("  recall@{} n/a (no answer)", s.topk)),
        }
        text
    }
}

fn index_note(built: Duration) -> String {
    if built.is_zero() {
        String::new()
    } else {
        format!("; index built in {:.2} s", built.as_secs_f64())
    }
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---- Progress --------------------------------------------------------------------------------------------

/// Draws insert progress: on a terminal one line redrawn in place (`\r`) at most ten times a second;
/// elsewhere (a log, a pipe) a line at every tenth of the way.
pub struct ProgressLine {
    out: Box<dyn Write + Send>,
    terminal: bool,
    /// Set by the first update: the rate counts from the insert's start, not from construction.
    started: Option<Instant>,
    last_drawn: Option<Instant>,
    last_tenth: Option<u64>,
    open_line: bool,
}

impl ProgressLine {
    pub fn new(out: Box<dyn Write + Send>, terminal: bool) -> Self {
        ProgressLine {
            out,
            terminal,
            started: None,
            last_drawn: None,
            last_tenth: None,
            open_line: false,
        }
    }

    /// Progress is a courtesy: a failed write to it is ignored.
    pub fn update(&mut self, done: u64, total: u64) {
        let total = total.max(1);
        let percent = done.min(total) * 100 / total;
        let started = *self.started.get_or_insert_with(Instant::now);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        if self.terminal {
            let due = self
                .last_drawn
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if !due && done < total {
                return;
            }
            let filled = (percent / 5) as usize;
            let _ = write!(
                self.out,
                "\rinserting [{}{}] {:>3} %  {} / {} rows  {} rows/s ",
                "#".repeat(filled),
                "-".repeat(20 - filled),
                percent,
                group(done),
                group(total),
                group(rate.round() as u64)
            );
            self.open_line = true;
            self.last_drawn = Some(Instant::now());
        } else {
            let tenth = done.min(total) * 10 / total;
            if self.last_tenth.is_some_and(|t| t >= tenth) {
                return;
            }
            self.last_tenth = Some(tenth);
            let _ = writeln!(
                self.out,
                "inserting: {} / {} rows ({percent} %), {} rows/s",
                group(done),
                group(total),
                group(rate.round() as u64)
            );
        }
        let _ = self.out.flush();
    }

    /// Ends the redrawn line, if one is open.
    pub fn finish(&mut self) {
        if self.open_line {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
            self.open_line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rows: usize, dim: usize, clusters: usize) -> DataSpec {
        DataSpec {
            rows,
            dim,
            clusters,
            sigma: 0.1,
        }
    }

    #[test]
    fn splitmix_is_seeded_and_normals_look_normal() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], SplitMix64::new(8).next_u64());
        // 20,000 draws from a fixed seed: a deterministic check of the transform, not a flaky one.
        let mut rng = SplitMix64::new(1);
        let samples: Vec<f64> = (0..10_000)
            .flat_map(|_| {
                let (x, y) = rng.normal_pair();
                [x, y]
            })
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let mut rng = SplitMix64::new(2);
        assert!((0..1000).all(|_| rng.below(7) < 7));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.next_f64())));
    }

    #[test]
    fn a_data_set_is_determined_by_its_seed() {
        let a = DataSet::generate(spec(500, 12, 5), 42).unwrap();
        let b = DataSet::generate(spec(500, 12, 5), 42).unwrap();
        let c = DataSet::generate(spec(500, 12, 5), 43).unwrap();
        assert_eq!(a.vectors(), b.vectors());
        assert_ne!(a.vectors(), c.vectors());
        assert_eq!(a.ids(), (0..500).collect::<Vec<i64>>().as_slice());
        assert_eq!(a.len(), 500);
        assert_eq!(a.spec().rows, 500);
        // Odd dimensions fill every coordinate.
        let odd = DataSet::generate(spec(10, 3, 2), 1).unwrap();
        assert!(odd.vectors().iter().all(|v| *v != 0.0));
        // Queries: seeded, distinct from the rows, and from the same clusters.
        let q = a.queries(20, 42);
        assert_eq!(q, b.queries(20, 42));
        assert_ne!(q, a.queries(20, 43));
        assert_eq!(q.len(), 20);
        assert!((0..20).all(|i| a.row(i) != q.row(i)));
    }

    #[test]
    fn extending_a_data_set_gives_the_rows_of_a_larger_one() {
        let mut small = DataSet::generate(spec(300, 8, 4), 9).unwrap();
        small.extend(200);
        let large = DataSet::generate(spec(500, 8, 4), 9).unwrap();
        assert_eq!(small.vectors(), large.vectors());
        assert_eq!(small.ids(), large.ids());
        assert_eq!(small.spec(), large.spec());
    }

    #[test]
    fn points_sit_around_their_centres() {
        let set = DataSet::generate(spec(2_000, 16, 4), 5).unwrap();
        let dim = set.dim();
        assert_eq!(set.centers().len(), 4 * dim);
        assert!(set.centers().iter().all(|c| (0.0..1.0).contains(c)));
        // With sigma 0.1 over 16 dimensions a point is about 0.4 from its centre; centres are about
        // 1.6 apart. Every point is closer than 1.0 to some centre.
        for i in 0..set.len() {
            let nearest = set
                .centers()
                .chunks(dim)
                .map(|c| {
                    c.iter()
                        .zip(set.row(i))
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f32>()
                })
                .fold(f32::MAX, f32::min);
            assert!(
                nearest.sqrt() < 1.0,
                "row {i} is {} from every centre",
                nearest.sqrt()
            );
        }
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        for (bad, word) in [
            (spec(0, 8, 1), "rows"),
            (spec(10, 0, 1), "dimension"),
            (spec(10, 40_000, 1), "dimension"),
            (spec(10, 8, 0), "clusters"),
            (
                DataSpec {
                    sigma: f64::NAN,
                    ..spec(10, 8, 1)
                },
                "sigma",
            ),
        ] {
            let e = DataSet::generate(bad, 1).unwrap_err().to_string();
            assert!(e.contains(word), "{bad:?}: {e}");
        }
        let insert = InsertOptions {
            batch_rows: 100_000,
            ..InsertOptions::default()
        };
        let e = insert.validate(1024).unwrap_err().to_string();
        assert!(e.contains("256 MB") && e.contains("65536 rows"), "{e}");
        assert!(insert.validate(128).is_ok());
    }

    #[test]
    fn exact_answers_on_a_tiny_set() {
        // Points on a line: 0, 1, 2, …, 9 in dimension 2 (second coordinate 0).
        let vectors: Vec<f32> = (0..10).flat_map(|i| [i as f32, 0.0]).collect();
        let ids: Vec<i64> = (100..110).collect();
        let queries = QuerySet {
            dim: 2,
            vectors: vec![2.2, 0.0, 9.9, 0.0, 4.5, 0.0],
        };
        let l2 = exact_top_k(&vectors, &ids, 2, &queries, 3, Metric::L2);
        assert_eq!(l2.row_ids(0), &[102, 103, 101]);
        assert_eq!(l2.row_ids(1), &[109, 108, 107]);
        // 4 and 5 are equally far from 4.5: the smaller id first.
        assert_eq!(l2.row_ids(2), &[104, 105, 103]);
        let d = l2.row_distances(0);
        assert!(
            (d[0] - 0.04).abs() < 1e-5 && (d[1] - 0.64).abs() < 1e-5,
            "{d:?}"
        );
        let ip = exact_top_k(&vectors, &ids, 2, &queries, 2, Metric::Ip);
        assert_eq!(ip.row_ids(0), &[109, 108]);
        // More k than rows: padded with -1.
        let wide = exact_top_k(&vectors[..4], &ids[..2], 2, &queries, 3, Metric::L2);
        assert_eq!(wide.row_ids(0), &[101, 100, -1]);
    }

    #[test]
    fn exact_over_a_subset_matches_a_set_of_only_those_rows() {
        let set = DataSet::generate(spec(400, 8, 3), 11).unwrap();
        let queries = set.queries(5, 11);
        let kept: Vec<i64> = (0..400).filter(|i| i % 3 != 0).collect();
        let over = set.exact_over(&kept, &queries, 10, Metric::L2);
        let all = set.exact(&queries, 400, Metric::L2);
        for q in 0..5 {
            let expected: Vec<i64> = all
                .row_ids(q)
                .iter()
                .copied()
                .filter(|id| id % 3 != 0)
                .take(10)
                .collect();
            assert_eq!(over.row_ids(q), expected.as_slice(), "query {q}");
        }
    }

    #[test]
    fn recall_counts_expected_hits_found_in_any_order() {
        assert_eq!(recall(&[1, 2, 3, 4], &[4, 3, 2, 1]), 1.0);
        assert_eq!(recall(&[1, 2, 9, 8], &[1, 2, 3, 4]), 0.5);
        assert_eq!(recall(&[], &[1, 2]), 0.0);
        // Padding is not a hit to find; nothing expected means nothing missed.
        assert_eq!(recall(&[5, -1, -1], &[5, -1, -1]), 1.0);
        assert_eq!(recall(&[-1], &[-1]), 1.0);
        // A duplicate in the answer does not count twice.
        assert_eq!(recall(&[1, 1, 1], &[1, 2, 3]), 1.0 / 3.0);
        let c = check_row(&[1, 2, 3], &[0.1, 0.2, 0.35], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(c.same_ids && c.recall == 1.0);
        assert!((c.max_distance_error - 0.05).abs() < 1e-6);
        let c = check_row(&[2, 1, 3], &[0.1, 0.2, 0.3], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(!c.same_ids && c.recall == 1.0);
        // A short row is not the expected answer.
        let c = check_row(&[1, 2], &[0.1, 0.2], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(!c.same_ids && (c.recall - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_answer_is_checked_row_by_row_against_its_queries() {
        let expected = TopK {
            nq: 3,
            k: 3,
            ids: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            distances: vec![0.0; 9],
            metric: Metric::L2,
        };
        let answer = Answer {
            nq: 2,
            k: 2,
            ids: vec![7, 8, 4, 9],
            distances: vec![0.0; 4],
        };
        // Rows ask queries 2 and 1 (top-2): row 0 exact, row 1 half.
        let c = check_answer(&answer, &[2, 1], &expected, 2);
        assert_eq!(c.same_id_rows, 1);
        assert_eq!(c.min_recall, 0.5);
        assert_eq!(c.recall, 0.75);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = LatencySummary::from_samples(samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p95, Duration::from_millis(95));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let one = LatencySummary::from_samples(vec![Duration::from_millis(7)]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7)
            )
        );
        assert_eq!(
            LatencySummary::from_samples(Vec::new()),
            LatencySummary::default()
        );
        let sorted: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 91.0), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 90.0), Duration::from_millis(9));
    }

    #[test]
    fn replies_of_the_wrong_shape_are_malformed() {
        let reply = |row_num, ids: Vec<i64>, code| proto::TopKQueryResult {
            status: Some(proto::Status {
                error_code: code,
                reason: "why".into(),
            }),
            row_num,
            distances: vec![0.5; ids.len()],
            ids,
        };
        let ok = Answer::from_reply(reply(2, vec![1, 2, 3, 4], 0), 2, 2).unwrap();
        assert_eq!((ok.row_ids(1), ok.k), (&[3i64, 4][..], 2));
        assert!(matches!(
            Answer::from_reply(reply(1, vec![1, 2], 0), 2, 2),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            Answer::from_reply(reply(2, vec![1, 2, 3], 0), 2, 2),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            Answer::from_reply(reply(1, vec![1, 2, 3], 0), 1, 2),
            Err(Failure::Malformed(_))
        ));
        let failed = Answer::from_reply(reply(0, vec![], 4), 1, 2).unwrap_err();
        assert_eq!(failed.label(), "COLLECTION_NOT_EXISTS");
        assert_eq!(failed.to_string(), "COLLECTION_NOT_EXISTS (4): why");
    }

    #[test]
    fn errors_are_counted_by_status_and_by_transport_kind() {
        let mut counts = ErrorCounts::default();
        counts.add(&Failure::Status {
            code: 2,
            reason: String::new(),
        });
        counts.add(&Failure::Status {
            code: 2,
            reason: String::new(),
        });
        counts.add(&Failure::Grpc {
            code: tonic::Code::Unavailable,
            message: String::new(),
        });
        counts.add(&Failure::Timeout {
            after: Duration::from_secs(1),
        });
        assert_eq!(counts.by_status.get("CONNECT_FAILED"), Some(&2));
        assert_eq!(counts.by_transport.get("grpc Unavailable"), Some(&1));
        assert_eq!(counts.by_transport.get("timeout"), Some(&1));
        assert_eq!(counts.total(), 4);
        assert_eq!(status_name(999), "code 999");
    }

    #[test]
    fn searches_cycle_through_the_query_set() {
        let load = SearchLoad {
            nq: 3,
            ..SearchLoad::default()
        };
        assert_eq!(load.queries_of(0, 10), vec![0, 1, 2]);
        assert_eq!(load.queries_of(3, 10), vec![9, 0, 1]);
        assert_eq!(load.queries_of(1, 2), vec![1, 0, 1]);
        assert_eq!(load.queries_of(u64::MAX, 7).len(), 3);
    }

    #[test]
    fn search_loads_need_a_bound_and_sane_sizes() {
        let ok = SearchLoad::default();
        assert!(ok.validate().is_ok());
        for (bad, word) in [
            (
                SearchLoad {
                    duration: None,
                    count: None,
                    ..ok.clone()
                },
                "duration, a count",
            ),
            (
                SearchLoad {
                    concurrency: 0,
                    ..ok.clone()
                },
                "concurrency",
            ),
            (
                SearchLoad {
                    topk: 20_000,
                    ..ok.clone()
                },
                "topk",
            ),
            (
                SearchLoad {
                    nq: 10_000,
                    topk: 16_384,
                    ..ok.clone()
                },
                "result entries",
            ),
            (
                SearchLoad {
                    nprobe: Some(0),
                    ..ok.clone()
                },
                "nprobe",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn progress_writes_a_line_per_tenth_when_not_on_a_terminal() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let mut progress = ProgressLine::new(Box::new(sink.clone()), false);
        for done in (0..=1000).step_by(50) {
            progress.update(done, 1000);
        }
        progress.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("inserting: 1,000 / 1,000 rows (100 %)"),
            "{text}"
        );
        assert!(!text.contains('\r'));
        // On a terminal: redrawn in place, ended by one newline.
        let sink = Shared::default();
        let mut progress = ProgressLine::new(Box::new(sink.clone()), true);
        progress.update(0, 10);
        progress.update(10, 10);
        progress.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with('\r') && text.ends_with('\n') && text.contains("100 %"),
            "{text:?}"
        );
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
