//! Loading a collection: creating (or reusing, or dropping and recreating) it, the insert stream,
//! flushing, and bringing the index to the one asked for.

use std::ops::Range;
use std::time::{Duration, Instant};

use mishards_node::index::Metric;
use mishards_proto as proto;
use mishards_proto::limits::{MAX_INDEX_FILE_SIZE_MB, MAX_INSERT_BYTES};

use super::BenchError;
use super::client::{Client, Failure, QUICK_CALL, SLOW_CALL, call, params};
use super::data::DataSet;

/// Milvus index type codes (IndexParam.index_type).
const INDEX_FLAT: i32 = 1;
const INDEX_IVF_FLAT: i32 = 2;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_batches_over_256_mb_are_refused() {
        let insert = InsertOptions {
            batch_rows: 100_000,
            ..InsertOptions::default()
        };
        let e = insert.validate(1024).unwrap_err().to_string();
        assert!(e.contains("256 MB") && e.contains("65536 rows"), "{e}");
        assert!(insert.validate(128).is_ok());
    }
}
