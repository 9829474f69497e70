//! One scatter-gather actor per search: sends each node its files (after a `ReloadSegments` for files
//! whose delete marks changed since that node last saw them), one `SearchInFiles` per node with a
//! per-node deadline; on an error or a missed deadline re-sends only that node's files to their next
//! fallback nodes (at most `max_retry` times); merges the answers into the global top-k. Files that stay
//! unanswered make the reply an error naming them and the nodes tried — never a silently short answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use tokio::sync::oneshot;
use tracing::{Instrument, Span, field::Empty};

use super::GatewayError;
use super::inspect::{AttemptManifest, AttemptWhy, NodeManifest, SearchManifest};
use super::merge::{Partial, merge_topk};
use super::node_link::{Acquire, NodeLink, Report};
use super::routing::{Plan, Routing, SearchPlan, Seen};
use crate::config::NodeAddr;
use crate::error::success;
use crate::proto::{self, ErrorCode};
use crate::telemetry::{RequestTraceId, outgoing};

/// What a scatter-gather ends with: the merged answer, or the request back when the snapshot does not
/// know the collection (the caller asks the write node, which may have just created it).
pub enum Scattered {
    Answer(proto::TopKQueryResult),
    Unknown(proto::SearchParam),
}

/// What the actor answers: the outcome, and the manifest of what it did (the caller completes its
/// status code and files it with the inspector).
pub type ScatterReply = (Result<Scattered, GatewayError>, SearchManifest);

/// Everything one search needs; the actor plans it with Routing, answers on `reply` and stops.
pub struct ScatterGather {
    /// Taken by the job when the actor starts.
    pub param: Option<proto::SearchParam>,
    pub routing: Addr<Routing>,
    pub node_timeout: Duration,
    pub max_retry: u32,
    /// The request's RPC span: the actor's work runs inside it, so its spans are the RPC's children.
    pub span: Span,
    pub trace_id: RequestTraceId,
    pub reply: Option<oneshot::Sender<ScatterReply>>,
}

impl Actor for ScatterGather {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(param) = self.param.take() else {
            ctx.stop();
            return;
        };
        let mut manifest = SearchManifest::start(self.trace_id, &param);
        let started = Instant::now();
        let (routing, node_timeout, max_retry, rpc_span) = (
            self.routing.clone(),
            self.node_timeout,
            self.max_retry,
            self.span.clone(),
        );
        let work = async move {
            let result = async {
                let route = tracing::info_span!(
                    "route",
                    epoch = Empty,
                    stale = Empty,
                    files = Empty,
                    nodes = Empty
                );
                let plan = routing
                    .send(Plan {
                        collection: param.collection_name.clone(),
                        tags: param.partition_tag_array.clone(),
                    })
                    .instrument(route.clone())
                    .await
                    .map_err(|e| GatewayError::Actor {
                        actor: "routing",
                        reason: e.to_string(),
                    })??;
                manifest.plan_ms = millis(started.elapsed());
                let Some(plan) = plan else {
                    manifest.reason =
                        "collection not in the metadata snapshot: asked the write node".into();
                    return Ok(Scattered::Unknown(param.clone()));
                };
                let owners: std::collections::BTreeSet<&NodeAddr> =
                    plan.files.iter().filter_map(|f| f.nodes.first()).collect();
                route.record("epoch", plan.epoch);
                route.record("stale", plan.stale);
                route.record("files", plan.files.len());
                route.record("nodes", owners.len());
                rpc_span.record("metric", plan.collection.metric_type.name());
                manifest.epoch = plan.epoch;
                manifest.stale_snapshot = plan.stale;
                manifest.files = plan.files.len();
                check_query(&param, plan.collection.dimension)?;
                if plan.files.is_empty() {
                    // Milvus answers a search over no data with an empty result.
                    return Ok(Scattered::Answer(proto::TopKQueryResult {
                        status: Some(success()),
                        ..Default::default()
                    }));
                }
                let job = Job {
                    links: plan.links.clone(),
                    plan,
                    param: param.clone(),
                    routing,
                    node_timeout,
                    max_retry,
                    started,
                };
                job.run(&mut manifest).await.map(Scattered::Answer)
            }
            .await;
            manifest.total_ms = millis(started.elapsed());
            (result, manifest)
        }
        .instrument(self.span.clone());
        ctx.spawn(work.into_actor(self).map(|outcome, act, ctx| {
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(outcome);
            }
            ctx.stop();
        }));
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl SearchManifest {
    fn start(trace_id: RequestTraceId, param: &proto::SearchParam) -> SearchManifest {
        SearchManifest {
            trace_id: trace_id.to_string(),
            rpc: "Search",
            collection: param.collection_name.clone(),
            partition_tags: param.partition_tag_array.clone(),
            nq: param.query_record_array.len(),
            topk: param.topk,
            epoch: 0,
            stale_snapshot: false,
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            total_ms: 0.0,
            plan_ms: 0.0,
            merge_ms: 0.0,
            code: 0,
            reason: String::new(),
            files: 0,
            nodes: Vec::new(),
        }
    }

    fn add_attempt(&mut self, node: &NodeAddr, attempt: AttemptManifest) {
        let name = node.to_string();
        match self.nodes.iter_mut().find(|n| n.node == name) {
            Some(n) => n.attempts.push(attempt),
            None => self.nodes.push(NodeManifest {
                node: name,
                attempts: vec![attempt],
            }),
        }
    }
}

/// The checks Milvus makes before searching, so they hold even when no node is asked.
fn check_query(param: &proto::SearchParam, dimension: i64) -> Result<(), GatewayError> {
    let invalid =
        |code: ErrorCode, reason: String| GatewayError::Node(crate::error::status(code, reason));
    if let Some(reason) = crate::limits::topk_problem(param.topk) {
        return Err(invalid(ErrorCode::IllegalTopk, reason));
    }
    if param.query_record_array.is_empty() {
        return Err(invalid(
            ErrorCode::IllegalRowrecord,
            "no query vectors given".into(),
        ));
    }
    // topk is within 1..=MAX_TOPK here, so the cast is exact.
    if let Some(reason) =
        crate::limits::result_size_problem(param.query_record_array.len(), param.topk as usize)
    {
        return Err(invalid(ErrorCode::IllegalArgument, reason));
    }
    if param
        .query_record_array
        .iter()
        .any(|r| r.float_data.len() as i64 != dimension)
    {
        return Err(invalid(
            ErrorCode::IllegalDimension,
            format!("every query vector must have the collection's dimension {dimension}"),
        ));
    }
    Ok(())
}

struct Job {
    plan: SearchPlan,
    param: proto::SearchParam,
    links: Arc<HashMap<NodeAddr, Addr<NodeLink>>>,
    routing: Addr<Routing>,
    node_timeout: Duration,
    max_retry: u32,
    /// When the request started (attempt timings in the manifest are relative to it).
    started: Instant,
}

/// Why a node's attempt did not count.
enum Attempt {
    Answered(proto::TopKQueryResult),
    /// The node did not answer usefully; its files go to their fallbacks.
    Failed(String),
    /// The node answered with a client error (bad dimension, bad tag…): the search itself is wrong.
    Refused(proto::Status),
}

/// Status codes a node may answer that another node might not (its own trouble, not the request's).
/// COLLECTION_NOT_EXISTS is one: the plan came from a snapshot that has the collection, so a node
/// that does not know it reads other metadata or lags behind.
fn node_trouble(code: i32) -> bool {
    [
        ErrorCode::CollectionNotExists,
        ErrorCode::UnexpectedError,
        ErrorCode::FileNotFound,
        ErrorCode::CacheFailed,
        ErrorCode::OutOfMemory,
        ErrorCode::MetaFailed,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

impl Job {
    async fn run(
        self,
        manifest: &mut SearchManifest,
    ) -> Result<proto::TopKQueryResult, GatewayError> {
        let nq = self.param.query_record_array.len();
        let k = usize::try_from(self.param.topk).unwrap_or(0);
        let higher_is_better = self.plan.collection.metric_type.higher_is_better();
        // Which node in each file's list is being tried.
        let mut cursor: Vec<usize> = vec![0; self.plan.files.len()];
        let mut answers: Vec<proto::TopKQueryResult> = Vec::new();
        let mut failures: Vec<(NodeAddr, String)> = Vec::new();
        let mut unanswered: Vec<usize> = Vec::new();
        let mut pending: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
        let mut asked: std::collections::HashSet<NodeAddr> = std::collections::HashSet::new();
        for (i, f) in self.plan.files.iter().enumerate() {
            match f.nodes.first() {
                Some(node) => pending.entry(node.clone()).or_default().push(i),
                None => unanswered.push(i),
            }
        }
        for round in 0..=self.max_retry {
            if pending.is_empty() {
                break;
            }
            let attempts = join_all(pending.iter().map(|(node, files)| {
                let why = match round {
                    0 => AttemptWhy::First,
                    _ if asked.contains(node) => AttemptWhy::Retry,
                    _ => AttemptWhy::Fallback,
                };
                self.attempt(node, files, round, why)
            }))
            .await;
            let mut next: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
            for ((node, files), (attempt, record)) in pending.into_iter().zip(attempts) {
                manifest.add_attempt(&node, record);
                asked.insert(node.clone());
                match attempt {
                    Attempt::Answered(topk) => answers.push(topk),
                    Attempt::Refused(status) => return Err(GatewayError::Node(status)),
                    Attempt::Failed(reason) => {
                        tracing::warn!(%node, files = files.len(), round, %reason, "read node attempt failed; trying fallbacks");
                        failures.push((node, reason));
                        for i in files {
                            cursor[i] += 1;
                            match self.plan.files[i].nodes.get(cursor[i]) {
                                Some(fallback) if round < self.max_retry => {
                                    next.entry(fallback.clone()).or_default().push(i)
                                }
                                _ => unanswered.push(i),
                            }
                        }
                    }
                }
            }
            pending = next;
        }
        if !unanswered.is_empty() {
            unanswered.sort_unstable();
            return Err(GatewayError::Unanswered {
                files: unanswered
                    .iter()
                    .map(|i| self.plan.files[*i].file.id)
                    .collect(),
                failures: failures.iter().map(|(n, r)| format!("{n}: {r}")).collect(),
                members: self.plan.members.iter().map(|n| n.to_string()).collect(),
            });
        }
        let parts: Vec<Partial<'_>> = answers
            .iter()
            .filter(|a| a.row_num > 0)
            .map(|a| Partial {
                nq: a.row_num as usize,
                k: if a.row_num > 0 {
                    a.ids.len() / a.row_num as usize
                } else {
                    0
                },
                ids: &a.ids,
                distances: &a.distances,
            })
            .collect();
        let merging = Instant::now();
        let merged = tracing::info_span!("merge", parts = parts.len(), nq, k)
            .in_scope(|| merge_topk(&parts, nq, k, higher_is_better));
        manifest.merge_ms = millis(merging.elapsed());
        let (ids, distances) = merged.map_err(GatewayError::Merge)?;
        Ok(proto::TopKQueryResult {
            status: Some(success()),
            row_num: nq as i64,
            ids,
            distances,
        })
    }

    /// One node, its files, in a span of its own: the attempt and the record of it for the manifest.
    async fn attempt(
        &self,
        node: &NodeAddr,
        files: &[usize],
        round: u32,
        why: AttemptWhy,
    ) -> (Attempt, AttemptManifest) {
        let span = tracing::info_span!(
            "node_attempt",
            otel.kind = "client",
            otel.status_code = Empty,
            %node,
            files = files.len(),
            attempt = round + 1,
            why = why.as_str(),
            latency_ms = Empty,
            outcome = Empty,
            reason = Empty,
        );
        let started = Instant::now();
        let mut record = AttemptManifest {
            round,
            why,
            files: files.iter().map(|i| self.plan.files[*i].file.id).collect(),
            reloaded: Vec::new(),
            started_ms: millis(started.duration_since(self.started)),
            latency_ms: 0.0,
            outcome: "ok",
            reason: String::new(),
        };
        let attempt = self
            .try_node(node, files, round, &mut record)
            .instrument(span.clone())
            .await;
        record.latency_ms = millis(started.elapsed());
        span.record("latency_ms", record.latency_ms);
        match &attempt {
            Attempt::Answered(_) => {}
            Attempt::Failed(reason) => {
                (record.outcome, record.reason) = ("failed", reason.clone());
            }
            Attempt::Refused(status) => {
                (record.outcome, record.reason) = ("refused", status.reason.clone());
            }
        }
        span.record("outcome", record.outcome);
        if !record.reason.is_empty() {
            span.record("reason", record.reason.as_str());
            span.record("otel.status_code", "ERROR");
        }
        (attempt, record)
    }

    /// Reload where needed, then one SearchInFiles within the deadline.
    async fn try_node(
        &self,
        node: &NodeAddr,
        files: &[usize],
        round: u32,
        record: &mut AttemptManifest,
    ) -> Attempt {
        let Some(link) = self.links.get(node) else {
            return Attempt::Failed("no link to this node (it left the cluster)".into());
        };
        let mut lease = match link.send(Acquire).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => return Attempt::Failed(e.to_string()),
            Err(e) => return Attempt::Failed(format!("node link unavailable: {e}")),
        };
        let started = Instant::now();
        let deadline = self.node_timeout;
        let stale: Vec<i64> = files
            .iter()
            .map(|i| &self.plan.files[*i])
            .filter(|f| f.stale_on.contains(node))
            .map(|f| f.file.id)
            .collect();
        record.reloaded = stale.clone();
        let outcome = tokio::time::timeout(deadline, async {
            if !stale.is_empty() {
                let reload = proto::ReLoadSegmentsParam {
                    collection_name: self.param.collection_name.clone(),
                    segment_id_array: stale.iter().map(i64::to_string).collect(),
                };
                let span = tracing::info_span!(
                    "reload_segments",
                    otel.kind = "client",
                    files = stale.len()
                );
                let answer = async { lease.client.reload_segments(outgoing(reload)).await }
                    .instrument(span)
                    .await;
                match answer {
                    Ok(r) if r.get_ref().error_code == 0 => {}
                    Ok(r) => {
                        return Err(format!(
                            "ReloadSegments answered {}: {}",
                            r.get_ref().error_code,
                            r.get_ref().reason
                        ));
                    }
                    Err(s) => return Err(format!("ReloadSegments failed: {}", s.message())),
                }
            }
            let request = proto::SearchInFilesParam {
                file_id_array: files
                    .iter()
                    .map(|i| self.plan.files[*i].file.id.to_string())
                    .collect(),
                search_param: Some(self.param.clone()),
            };
            lease
                .client
                .search_in_files(outgoing(request))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("SearchInFiles failed: {}", s.message()))
        })
        .await;
        let latency = started.elapsed();
        let attempt = match outcome {
            Err(_) => Attempt::Failed(format!("no answer within {deadline:?}")),
            Ok(Err(reason)) => Attempt::Failed(reason),
            Ok(Ok(result)) => match result.status.as_ref().map_or(0, |s| s.error_code) {
                0 => Attempt::Answered(result),
                code if node_trouble(code) => Attempt::Failed(format!(
                    "answered {code}: {}",
                    result
                        .status
                        .as_ref()
                        .map(|s| s.reason.as_str())
                        .unwrap_or_default()
                )),
                _ => Attempt::Refused(result.status.unwrap_or_default()),
            },
        };
        let failed = matches!(attempt, Attempt::Failed(_));
        link.do_send(Report { latency, failed });
        if !failed {
            let seen = files
                .iter()
                .map(|i| {
                    (
                        self.plan.files[*i].file.id,
                        self.plan.files[*i].file.updated_time,
                    )
                })
                .collect();
            self.routing.do_send(Seen {
                node: node.clone(),
                files: seen,
            });
        }
        tracing::debug!(%node, files = files.len(), round, ?latency, failed, "read node attempt");
        attempt
    }
}
