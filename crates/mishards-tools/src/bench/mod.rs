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
//!
//! The modules, one job each: [`data`] (data sets, queries, exact answers), [`client`] (connecting and
//! calling), [`load`] (collections, inserts, index), [`search`] (the search load), [`recall`] (answers
//! against the expected ones) and [`report`] (what a run measured, as text or JSON). Their items are
//! re-exported here, so `bench::X` names any of them.

pub mod client;
pub mod data;
pub mod load;
pub mod recall;
pub mod report;
pub mod search;

use std::sync::Arc;

use mishards_proto as proto;
use mishards_proto::limits::MAX_NLIST;

pub use client::{
    Client, DEFAULT_ADDR, Failure, connect, connect_with, server_version, status_name,
};
pub use data::{DataSet, DataSpec, QuerySet, exact_top_k};
pub use load::{
    BatchFailure, CollectionSpec, IfExists, IndexSpec, InsertOptions, InsertReport, LoadOptions,
    Loaded, insert_rows, load, metric_code, metric_name,
};
pub use mishards_common::rng::SplitMix64;
pub use recall::{RequestCheck, RowCheck, check_answer, check_row, recall};
pub use report::{
    BenchReport, ErrorCounts, LatencySummary, ProgressLine, RecallSummary, SearchReport,
};
pub use search::{Answer, Observer, RequestRecord, SearchLoad, SearchTarget, run_searches};

use client::{SLOW_CALL, call};

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

/// Everything `mishards bench` does, as settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    pub addr: String,
    /// TLS to the endpoint (`--tls-ca`, and `--tls-cert`/`--tls-key` where it requires a certificate).
    pub tls: Option<mishards_config::NodeTlsConfig>,
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

/// Generates the data set, loads it (per `config.load.if_exists`), computes the exact answers of the
/// query set, and runs the search load with them. `progress` sees the insert: (rows done, rows in all).
pub async fn run(
    config: &BenchConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let tls = config
        .tls
        .as_ref()
        .map(mishards_tls::ClientTls::load)
        .transpose()
        .map_err(|e| BenchError::Invalid(format!("TLS to {}: {e}", config.addr)))?;
    let mut client = connect_with(&config.addr, tls.as_ref()).await?;
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
        tls,
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
