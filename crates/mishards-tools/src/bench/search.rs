//! The search load: bounded concurrent clients, each request accounted for (latency, failure, recall
//! against the expected answers), and the answer of one search as the bench reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mishards_node::index::TopK;
use mishards_proto as proto;
use mishards_proto::limits::{self, MAX_NPROBE};

use super::BenchError;
use super::client::{Client, Failure, connect_with, params};
use super::data::QuerySet;
use super::recall::{RequestCheck, check_answer};
use super::report::{ErrorCounts, LatencySummary, RecallSummary, SearchReport};

/// Most concurrent search clients a run may open.
const MAX_CONCURRENCY: usize = 4096;

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
    /// Each client connects over TLS when set.
    pub tls: Option<mishards_tls::ClientTls>,
    pub collection: String,
    pub queries: Arc<QuerySet>,
    /// The answer each query should get (one row per query-set row, at least `topk` wide): recall and
    /// exactness are measured against it.
    pub expected: Option<Arc<TopK>>,
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
        clients.push(connect_with(&target.addr, target.tls.as_ref()).await?);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
