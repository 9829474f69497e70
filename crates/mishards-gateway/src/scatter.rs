//! One scatter-gather actor per search: sends each node its files (after a `ReloadSegments` for files
//! whose delete marks changed since that node last saw them), one `SearchInFiles` per node with a
//! per-node deadline; on an error or a missed deadline re-sends only that node's files to their next
//! fallback nodes (at most `max_retry` times); merges the answers into the global top-k. Files that stay
//! unanswered make the reply an error naming them and the nodes tried — never a silently short answer.
//!
//! Hedging: an attempt still running past its node's expected latency also has its files sent to their
//! next nodes (within the gateway's hedge budget, hedge.rs). The original answers for all its files, each
//! hedge for a share of them, so the files are answered by the original alone or by every hedge — never
//! by both — and the side that has not answered is dropped (tonic cancels its HTTP/2 stream).

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::{LocalBoxFuture, join_all};
use tokio::sync::oneshot;
use tracing::{Instrument, Span, field::Empty};

use super::GatewayError;
use super::hedge::{self, Hedging};
use super::inspect::{
    AttemptManifest, AttemptWhy, Inspector, NodeManifest, Record, SearchManifest,
};
use super::merge::{Partial, merge_topk};
use super::node_link::{Acquire, Cancelled, Lease, LinkAnswer, NodeLink, Report, SearchFiles};
use super::routing::{Plan, Routing, SearchPlan, Seen};
use mishards_config::NodeAddr;
use mishards_proto::error::{MilvusError, success};
use mishards_proto::{self as proto, ErrorCode};
use mishards_telemetry::{RequestTraceId, outgoing, outgoing_traced};

/// What a scatter-gather ends with: the merged answer, or the request back when the snapshot does not
/// know the collection (the caller asks the write node, which may have just created it).
pub enum Scattered {
    Answer(proto::TopKQueryResult),
    Unknown(proto::SearchParam),
}

/// What the actor answers: the outcome, and for a search the write node must answer, the manifest
/// (the caller completes its status code and files it with the inspector).
pub type ScatterReply = (Result<Scattered, GatewayError>, Option<SearchManifest>);

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
    pub inspector: Addr<Inspector>,
    /// How slow attempts are hedged (`None`: they are not); shared by every search of the gateway.
    pub hedging: Option<Arc<Hedging>>,
}

impl Actor for ScatterGather {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(param) = self.param.take() else {
            ctx.stop();
            return;
        };
        let mut manifest = SearchManifest::start(self.trace_id, &param);
        let search = Search {
            routing: self.routing.clone(),
            node_timeout: self.node_timeout,
            max_retry: self.max_retry,
            rpc_span: self.span.clone(),
            started: Instant::now(),
            hedging: self.hedging.clone(),
        };
        let work = async move {
            let result = search.run(param, &mut manifest).await;
            manifest.total_ms = millis(search.started.elapsed());
            (result, manifest)
        }
        .instrument(self.span.clone());
        ctx.spawn(
            work.into_actor(self)
                .map(|(result, mut manifest), act, ctx| {
                    // The inspector lives on this arbiter: filing the manifest here costs no thread hop. Only a
                    // search relayed to the write node is filed by the caller, once it has that answer.
                    let unfiled = match &result {
                        Ok(Scattered::Unknown(_)) => Some(manifest),
                        Ok(Scattered::Answer(answer)) => {
                            manifest.finish(Ok(answer));
                            act.inspector.do_send(Record(manifest));
                            None
                        }
                        Err(e) => {
                            manifest.finish(Err(e));
                            act.inspector.do_send(Record(manifest));
                            None
                        }
                    };
                    if let Some(reply) = act.reply.take() {
                        let _ = reply.send((result, unfiled));
                    }
                    ctx.stop();
                }),
        );
    }
}

/// What one search needs besides its request.
struct Search {
    routing: Addr<Routing>,
    node_timeout: Duration,
    max_retry: u32,
    rpc_span: Span,
    started: Instant,
    hedging: Option<Arc<Hedging>>,
}

impl Search {
    /// Plans with Routing, checks the query against the plan, and scatters it.
    async fn run(
        &self,
        param: proto::SearchParam,
        manifest: &mut SearchManifest,
    ) -> Result<Scattered, GatewayError> {
        let route = tracing::info_span!(
            "route",
            epoch = Empty,
            stale = Empty,
            files = Empty,
            nodes = Empty
        );
        let plan = self
            .routing
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
        manifest.plan_ms = millis(self.started.elapsed());
        let Some(plan) = plan else {
            manifest.reason =
                "collection not in the metadata snapshot: asked the write node".into();
            return Ok(Scattered::Unknown(param));
        };
        let owners: std::collections::BTreeSet<&NodeAddr> =
            plan.files.iter().filter_map(|f| f.nodes.first()).collect();
        route.record("epoch", plan.epoch);
        route.record("stale", plan.stale);
        route.record("files", plan.files.len());
        route.record("nodes", owners.len());
        self.rpc_span.record("metric", plan.metric_type.name());
        manifest.epoch = plan.epoch;
        manifest.stale_snapshot = plan.stale;
        manifest.files = plan.files.len();
        check_query(&param, plan.dimension)?;
        if plan.files.is_empty() {
            // Milvus answers a search over no data with an empty result.
            return Ok(Scattered::Answer(proto::TopKQueryResult {
                status: Some(success()),
                ..Default::default()
            }));
        }
        if let Some(hedging) = &self.hedging {
            hedging.budget.deposit();
        }
        let job = Job {
            links: plan.links.clone(),
            plan,
            param,
            routing: self.routing.clone(),
            node_timeout: self.node_timeout,
            max_retry: self.max_retry,
            started: self.started,
            hedging: self.hedging.clone(),
        };
        job.run(manifest).await.map(Scattered::Answer)
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

    /// Completes the manifest with the reply's Milvus status.
    pub fn finish(&mut self, result: Result<&proto::TopKQueryResult, &GatewayError>) {
        let status = match result {
            Ok(answer) => answer.status.clone().unwrap_or_default(),
            Err(e) => e.to_status(),
        };
        self.code = status.error_code;
        if status.error_code != 0 {
            self.reason = status.reason;
        }
    }

    fn add_attempt(&mut self, node: &NodeAddr, attempt: AttemptManifest) {
        match self.nodes.iter_mut().find(|n| n.node == *node) {
            Some(n) => n.attempts.push(attempt),
            None => self.nodes.push(NodeManifest {
                node: node.clone(),
                attempts: vec![attempt],
            }),
        }
    }
}

/// The checks Milvus makes before searching, so they hold even when no node is asked.
fn check_query(param: &proto::SearchParam, dimension: i64) -> Result<(), GatewayError> {
    let invalid =
        |code: ErrorCode, reason: String| GatewayError::Node(mishards_proto::error::status(code, reason));
    if let Some(reason) = mishards_proto::limits::topk_problem(param.topk) {
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
        mishards_proto::limits::result_size_problem(param.query_record_array.len(), param.topk as usize)
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
    hedging: Option<Arc<Hedging>>,
}

/// What one call to a node came to.
enum Attempt {
    /// The node's answer, and how many searches its call carried (1: alone).
    Answered(proto::TopKQueryResult, usize),
    /// The node did not answer usefully; its files go to their fallbacks.
    Failed(String),
    /// The node answered with a client error (bad dimension, bad tag…): the search itself is wrong.
    Refused(proto::Status),
}

impl From<Result<proto::TopKQueryResult, String>> for Attempt {
    /// A node's answer (or why there is none) as an attempt: its own trouble fails the attempt, a
    /// client error refuses the search.
    fn from(answer: Result<proto::TopKQueryResult, String>) -> Attempt {
        let result = match answer {
            Err(reason) => return Attempt::Failed(reason),
            Ok(result) => result,
        };
        match result.status.as_ref().map_or(0, |s| s.error_code) {
            0 => Attempt::Answered(result, 1),
            code if node_trouble(code) => Attempt::Failed(format!(
                "answered {code}: {}",
                result
                    .status
                    .as_ref()
                    .map(|s| s.reason.as_str())
                    .unwrap_or_default()
            )),
            _ => Attempt::Refused(result.status.unwrap_or_default()),
        }
    }
}

impl Attempt {
    fn name(&self) -> &'static str {
        match self {
            Attempt::Answered(..) => "answered",
            Attempt::Failed(_) => "failed",
            Attempt::Refused(_) => "refused",
        }
    }
}

/// How long past its node deadline a search waits for its link, which answers by that deadline
/// unless it stopped.
const LINK_GRACE: Duration = Duration::from_secs(1);

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

/// What one node's attempt in a round came to, with the hedges of it if there were any.
#[derive(Default)]
struct NodeOutcome {
    /// Every call made, for the manifest.
    records: Vec<(NodeAddr, AttemptManifest)>,
    /// The answers to merge; together they answer for each of their files once.
    answers: Vec<proto::TopKQueryResult>,
    /// Calls that failed, and why.
    failures: Vec<(NodeAddr, String)>,
    /// Files no answer covered, each with the nodes that failed it in this round.
    unanswered: Vec<(usize, Vec<NodeAddr>)>,
    /// A client error: it ends the search.
    refused: Option<proto::Status>,
}

impl Job {
    async fn run(
        self,
        manifest: &mut SearchManifest,
    ) -> Result<proto::TopKQueryResult, GatewayError> {
        let nq = self.param.query_record_array.len();
        let k = usize::try_from(self.param.topk).unwrap_or(0);
        let higher_is_better = self.plan.metric_type.higher_is_better();
        // Which node in each file's list is being tried.
        let mut cursor: Vec<usize> = vec![0; self.plan.files.len()];
        let mut answers: Vec<proto::TopKQueryResult> = Vec::new();
        let mut failures: Vec<(NodeAddr, String)> = Vec::new();
        let mut unanswered: Vec<usize> = Vec::new();
        let mut pending: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
        // Few nodes per search: a list is cheaper than hashing their names.
        let mut asked: Vec<NodeAddr> = Vec::new();
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
            let outcomes = join_all(pending.iter().map(|(node, files)| {
                let why = match round {
                    0 => AttemptWhy::First,
                    _ if asked.contains(node) => AttemptWhy::Retry,
                    _ => AttemptWhy::Fallback,
                };
                self.attempt(node, files, round, why, &cursor)
            }))
            .await;
            let mut next: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
            for outcome in outcomes {
                for (node, record) in outcome.records {
                    manifest.add_attempt(&node, record);
                    if !asked.contains(&node) {
                        asked.push(node);
                    }
                }
                if let Some(status) = outcome.refused {
                    return Err(GatewayError::Node(status));
                }
                answers.extend(outcome.answers);
                failures.extend(outcome.failures);
                for (i, failed_on) in outcome.unanswered {
                    // On to the file's next node that has not just failed it.
                    let nodes = &self.plan.files[i].nodes;
                    cursor[i] += 1;
                    while nodes.get(cursor[i]).is_some_and(|n| failed_on.contains(n)) {
                        cursor[i] += 1;
                    }
                    match nodes.get(cursor[i]) {
                        Some(fallback) if round < self.max_retry => {
                            next.entry(fallback.clone()).or_default().push(i)
                        }
                        _ => unanswered.push(i),
                    }
                }
            }
            pending = next;
        }
        if !unanswered.is_empty() {
            unanswered.sort_unstable();
            return Err(GatewayError::Unanswered {
                files: unanswered.iter().map(|i| self.plan.files[*i].id).collect(),
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

    /// One node's attempt at its files. When hedging is on and the attempt runs past the node's
    /// expected latency, the files also go to their next nodes and the first complete answer wins.
    async fn attempt(
        &self,
        node: &NodeAddr,
        files: &[usize],
        round: u32,
        why: AttemptWhy,
        cursor: &[usize],
    ) -> NodeOutcome {
        let mut original = self
            .start_call(node.clone(), files.to_vec(), round, why)
            .await;
        let hedge = self.hedging.as_deref().and_then(|h| {
            if !self.can_hedge(node, files, cursor) {
                return None;
            }
            let delay = h
                .fixed_delay
                .or_else(|| self.plan.latency.hedge_after(node, hedge::MIN_DELAY))?;
            Some((h, delay))
        });
        let Some((hedging, delay)) = hedge else {
            original.wait().await;
            let decision = decide(&original, &[]).unwrap_or(Decision::Neither);
            return settle(decision, original, Vec::new());
        };
        let mut timer = pin!(tokio::time::sleep(delay));
        let overdue = poll_fn(|cx| {
            if original.poll_done(cx) {
                Poll::Ready(false)
            } else {
                timer.as_mut().poll(cx).map(|()| true)
            }
        })
        .await;
        // Worked out only now: most attempts answer before their hedge is due.
        let targets = if overdue {
            self.hedge_targets(node, files, cursor)
        } else {
            Vec::new()
        };
        if targets.is_empty() || !hedging.budget.try_take(targets.len() as u64) {
            original.wait().await;
            let decision = decide(&original, &[]).unwrap_or(Decision::Neither);
            return settle(decision, original, Vec::new());
        }
        tracing::debug!(%node, after = ?delay, nodes = targets.len(), "hedging a slow attempt");
        let mut hedges = join_all(
            targets
                .into_iter()
                .map(|(to, files)| self.start_call(to, files, round, AttemptWhy::Hedge)),
        )
        .await;
        let decision = race(&mut original, &mut hedges).await;
        if matches!(decision, Decision::Hedges) {
            hedging.budget.won();
        }
        settle(decision, original, hedges)
    }

    /// Whether every one of `files` has a node after `node` to hedge to (else the original would have
    /// to answer for some of them anyway, so hedging could not win).
    fn can_hedge(&self, node: &NodeAddr, files: &[usize], cursor: &[usize]) -> bool {
        files.iter().all(|&i| {
            self.plan.files[i]
                .nodes
                .iter()
                .skip(cursor[i] + 1)
                .any(|n| n != node)
        })
    }

    /// Each file's next node after `node` — the first not known to be slow, if any — grouped by node;
    /// empty when some file has no other node (see `can_hedge`).
    fn hedge_targets(
        &self,
        node: &NodeAddr,
        files: &[usize],
        cursor: &[usize],
    ) -> Vec<(NodeAddr, Vec<usize>)> {
        let mut targets: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
        for &i in files {
            let mut next = self.plan.files[i]
                .nodes
                .iter()
                .skip(cursor[i] + 1)
                .filter(|n| *n != node);
            let Some(first) = next.next() else {
                return Vec::new();
            };
            let target = std::iter::once(first)
                .chain(next)
                .find(|n| !self.plan.latency.slow.contains(*n))
                .unwrap_or(first);
            targets.entry(target.clone()).or_default().push(i);
        }
        targets.into_iter().collect()
    }

    /// Files whose delete marks changed since `node` last searched them.
    fn stale_on(&self, node: &NodeAddr, files: &[usize]) -> Vec<i64> {
        files
            .iter()
            .map(|i| &self.plan.files[*i])
            .filter(|f| f.stale_on.contains(node))
            .map(|f| f.id)
            .collect()
    }

    /// Leases a client of `node` and starts the call, in a `node_attempt` span of its own.
    async fn start_call(
        &self,
        node: NodeAddr,
        files: Vec<usize>,
        round: u32,
        why: AttemptWhy,
    ) -> Call<'_> {
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
        let stale = self.stale_on(&node, &files);
        let record = AttemptManifest {
            round,
            why,
            files: files.iter().map(|i| self.plan.files[*i].id).collect(),
            reloaded: stale.clone(),
            started_ms: millis(started.duration_since(self.started)),
            latency_ms: 0.0,
            outcome: "ok",
            reason: String::new(),
            batch: 1,
        };
        let future: LocalBoxFuture<'_, Attempt> = if stale.is_empty() {
            // The common case: the link makes the call, batched with other searches of the same shape.
            let sent = span.in_scope(|| self.send_to_link(&node, &files));
            Box::pin(
                self.answer_from_link(node.clone(), files.clone(), sent)
                    .instrument(span.clone()),
            )
        } else {
            // Leased before the call starts, so a call dropped unanswered always holds a lease to give
            // back.
            match self.lease(&node).instrument(span.clone()).await {
                Ok((link, lease)) => Box::pin(
                    self.call_node(node.clone(), files.clone(), stale, link, lease)
                        .instrument(span.clone()),
                ),
                Err(reason) => Box::pin(std::future::ready(Attempt::Failed(reason))),
            }
        };
        Call {
            node,
            files,
            span,
            record,
            started,
            future,
            result: None,
            took: None,
        }
    }

    async fn lease(&self, node: &NodeAddr) -> Result<(Addr<NodeLink>, Lease), String> {
        let Some(link) = self.links.get(node) else {
            return Err("no link to this node (it left the cluster)".into());
        };
        match link.send(Acquire).await {
            Ok(Ok(lease)) => Ok((link.clone(), lease)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("node link unavailable: {e}")),
        }
    }

    /// For files whose delete marks changed: `ReloadSegments`, then its own `SearchInFiles`, both within
    /// the deadline, on a leased client; reports to the link.
    async fn call_node(
        &self,
        node: NodeAddr,
        files: Vec<usize>,
        stale: Vec<i64>,
        link: Addr<NodeLink>,
        mut lease: Lease,
    ) -> Attempt {
        // Dropped before it answers (the other side of a hedge won): the link hears `Cancelled`.
        let mut unanswered = LeaseGuard(Some(link.clone()));
        let started = Instant::now();
        let deadline = self.node_timeout;
        let outcome = tokio::time::timeout(deadline, async {
            let reload = proto::ReLoadSegmentsParam {
                collection_name: self.param.collection_name.clone(),
                segment_id_array: stale.iter().map(i64::to_string).collect(),
            };
            let span =
                tracing::info_span!("reload_segments", otel.kind = "client", files = stale.len());
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
            lease
                .client
                .search_in_files(outgoing(self.search_request(&files)))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("SearchInFiles failed: {}", s.message()))
        })
        .await;
        let latency = started.elapsed();
        let attempt = match outcome {
            Err(_) => Attempt::Failed(format!("no answer within {deadline:?}")),
            Ok(answer) => Attempt::from(answer),
        };
        let failed = matches!(attempt, Attempt::Failed(_));
        unanswered.0 = None;
        link.do_send(Report { latency, failed });
        self.answered(node, &files, &attempt);
        attempt
    }

    /// This attempt's `SearchInFiles`: its files, the client's query.
    fn search_request(&self, files: &[usize]) -> proto::SearchInFilesParam {
        proto::SearchInFilesParam {
            file_id_array: files
                .iter()
                .map(|i| self.plan.files[*i].id.to_string())
                .collect(),
            search_param: Some(self.param.clone()),
        }
    }

    /// Hands the search to `node`'s link, which answers on the returned receiver (`None`: no link).
    fn send_to_link(
        &self,
        node: &NodeAddr,
        files: &[usize],
    ) -> Option<oneshot::Receiver<LinkAnswer>> {
        let link = self.links.get(node)?;
        let (reply, answer) = oneshot::channel();
        let (request, alone) = outgoing_traced(self.search_request(files));
        link.do_send(SearchFiles {
            request,
            deadline: Instant::now() + self.node_timeout,
            alone,
            reply,
        });
        Some(answer)
    }

    /// Waits for the link's answer. The link answers by the deadline; the grace covers a link that
    /// stops without answering (its receiver then closes at once).
    async fn answer_from_link(
        &self,
        node: NodeAddr,
        files: Vec<usize>,
        sent: Option<oneshot::Receiver<LinkAnswer>>,
    ) -> Attempt {
        let Some(answer) = sent else {
            return Attempt::Failed("no link to this node (it left the cluster)".into());
        };
        let attempt = match tokio::time::timeout(self.node_timeout + LINK_GRACE, answer).await {
            Err(_) => Attempt::Failed(format!("no answer within {:?}", self.node_timeout)),
            Ok(Err(_)) => Attempt::Failed("the node link stopped before answering".into()),
            Ok(Ok(LinkAnswer { result, batch })) => match Attempt::from(result) {
                Attempt::Answered(result, _) => Attempt::Answered(result, batch),
                other => other,
            },
        };
        self.answered(node, &files, &attempt);
        attempt
    }

    /// After a node answered: tells Routing which files it now has current (in the steady state,
    /// none it did not know).
    fn answered(&self, node: NodeAddr, files: &[usize], attempt: &Attempt) {
        tracing::debug!(%node, files = files.len(), outcome = attempt.name(), "read node attempt");
        if matches!(attempt, Attempt::Failed(_)) {
            return;
        }
        let seen: Vec<(i64, i64)> = files
            .iter()
            .map(|i| &self.plan.files[*i])
            .filter(|f| !f.current_on.contains(&node))
            .map(|f| (f.id, f.updated_time))
            .collect();
        if !seen.is_empty() {
            self.routing.do_send(Seen { node, files: seen });
        }
    }
}

/// Tells the link a leased call ended unanswered, unless disarmed (`.0 = None`) by an answer.
struct LeaseGuard(Option<Addr<NodeLink>>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            link.do_send(Cancelled);
        }
    }
}

/// One call to one node. Its manifest record and span live outside the call, so a call dropped
/// unanswered is still recorded.
struct Call<'a> {
    node: NodeAddr,
    /// Indexes into the plan's files.
    files: Vec<usize>,
    span: Span,
    record: AttemptManifest,
    started: Instant,
    future: LocalBoxFuture<'a, Attempt>,
    result: Option<Attempt>,
    /// How long it took to answer.
    took: Option<Duration>,
}

impl Call<'_> {
    /// Polls the call unless it is done; true once it is.
    fn poll_done(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.result.is_none()
            && let Poll::Ready(attempt) = self.future.as_mut().poll(cx)
        {
            self.result = Some(attempt);
            self.took = Some(self.started.elapsed());
        }
        self.result.is_some()
    }

    async fn wait(&mut self) {
        poll_fn(|cx| {
            if self.poll_done(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Ends the call — one still running is dropped, which cancels it — and completes its record:
    /// `used` says whether its answer goes into the result.
    fn close(self, used: bool) -> (NodeAddr, AttemptManifest, Option<Attempt>) {
        let Call {
            node,
            span,
            mut record,
            started,
            future,
            result,
            took,
            ..
        } = self;
        drop(future);
        record.latency_ms = millis(took.unwrap_or_else(|| started.elapsed()));
        if let Some(Attempt::Answered(_, batch)) = &result {
            record.batch = *batch;
        }
        (record.outcome, record.reason) = match &result {
            None => ("cancelled", String::new()),
            Some(Attempt::Answered(..)) if used => ("ok", String::new()),
            Some(Attempt::Answered(..)) => ("unused", String::new()),
            Some(Attempt::Failed(reason)) => ("failed", reason.clone()),
            Some(Attempt::Refused(status)) => ("refused", status.reason.clone()),
        };
        span.record("latency_ms", record.latency_ms);
        span.record("outcome", record.outcome);
        if !record.reason.is_empty() {
            span.record("reason", record.reason.as_str());
            span.record("otel.status_code", "ERROR");
        }
        (node, record, result)
    }
}

/// Who answers for an attempt's files.
#[derive(Debug, PartialEq)]
enum Decision {
    /// The original call answered: hedges still running are dropped, answered ones unused.
    Original,
    /// Every hedge answered: the original, if still running, is dropped.
    Hedges,
    /// The original failed and every hedge is done, not all answered: answered hedges count, the
    /// files of failed ones go on to their next nodes (all the files when there was no hedge).
    Neither,
    /// A node refused the request itself: the search ends with its status.
    Refused(proto::Status),
}

/// Who answers, once that is settled (`None`: wait for more calls).
fn decide(original: &Call<'_>, hedges: &[Call<'_>]) -> Option<Decision> {
    match &original.result {
        Some(Attempt::Answered(..)) => return Some(Decision::Original),
        Some(Attempt::Refused(status)) => return Some(Decision::Refused(status.clone())),
        _ => {}
    }
    if let Some(status) = hedges.iter().find_map(|h| match &h.result {
        Some(Attempt::Refused(status)) => Some(status.clone()),
        _ => None,
    }) {
        return Some(Decision::Refused(status));
    }
    let answered = |h: &Call<'_>| matches!(h.result, Some(Attempt::Answered(..)));
    if !hedges.is_empty() && hedges.iter().all(answered) {
        return Some(Decision::Hedges);
    }
    (original.result.is_some() && hedges.iter().all(|h| h.result.is_some()))
        .then_some(Decision::Neither)
}

/// Runs the original and its hedges together until `decide` settles who answers.
async fn race(original: &mut Call<'_>, hedges: &mut [Call<'_>]) -> Decision {
    poll_fn(|cx| {
        original.poll_done(cx);
        for hedge in hedges.iter_mut() {
            hedge.poll_done(cx);
        }
        decide(original, hedges).map_or(Poll::Pending, Poll::Ready)
    })
    .await
}

/// Closes every call of an attempt as `decision` says and gathers what they came to. The hedges split
/// the original's files between them, so whichever side is used answers for each file once.
fn settle(decision: Decision, original: Call<'_>, hedges: Vec<Call<'_>>) -> NodeOutcome {
    let mut out = NodeOutcome::default();
    let original_node = original.node.clone();
    let hedged = !hedges.is_empty();
    let calls = std::iter::once((original, false)).chain(hedges.into_iter().map(|h| (h, true)));
    for (call, is_hedge) in calls {
        let used = match decision {
            Decision::Original => !is_hedge,
            Decision::Hedges | Decision::Neither => is_hedge,
            Decision::Refused(_) => false,
        };
        let files = call.files.clone();
        let (node, record, result) = call.close(used);
        match result {
            Some(Attempt::Answered(answer, _)) if used => out.answers.push(answer),
            Some(Attempt::Failed(reason)) => {
                tracing::warn!(%node, files = files.len(), round = record.round, why = record.why.as_str(), %reason, "read node attempt failed");
                // Files go on when no answer covers them: a failed hedge's when the original failed
                // too, the original's when there was no hedge.
                if decision == Decision::Neither && (is_hedge || !hedged) {
                    let failed_on: Vec<NodeAddr> = if is_hedge {
                        vec![original_node.clone(), node.clone()]
                    } else {
                        vec![node.clone()]
                    };
                    out.unanswered
                        .extend(files.into_iter().map(|i| (i, failed_on.clone())));
                }
                out.failures.push((node.clone(), reason));
            }
            _ => {}
        }
        out.records.push((node, record));
    }
    if let Decision::Refused(status) = decision {
        out.refused = Some(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::poll;

    use super::*;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::loopback(port)
    }

    /// A call that answers whatever its sender sends (a failure if the sender is dropped).
    fn call(
        port: u16,
        files: Vec<usize>,
        why: AttemptWhy,
    ) -> (Call<'static>, oneshot::Sender<Attempt>) {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            node: node(port),
            record: AttemptManifest {
                round: 0,
                why,
                files: files.iter().map(|i| *i as i64).collect(),
                reloaded: Vec::new(),
                started_ms: 0.0,
                latency_ms: 0.0,
                outcome: "ok",
                reason: String::new(),
                batch: 1,
            },
            files,
            span: Span::none(),
            started: Instant::now(),
            future: Box::pin(async move {
                rx.await
                    .unwrap_or_else(|_| Attempt::Failed("sender dropped".into()))
            }),
            result: None,
            took: None,
        };
        (call, tx)
    }

    fn answer(ids: &[i64]) -> Attempt {
        Attempt::Answered(
            proto::TopKQueryResult {
                status: Some(success()),
                row_num: 1,
                ids: ids.to_vec(),
                distances: vec![0.0; ids.len()],
            },
            1,
        )
    }

    fn outcomes(out: &NodeOutcome) -> Vec<(u16, &'static str)> {
        out.records
            .iter()
            .map(|(n, r)| (n.port, r.outcome))
            .collect()
    }

    fn answered_ids(out: &NodeOutcome) -> Vec<i64> {
        out.answers.iter().flat_map(|a| a.ids.clone()).collect()
    }

    type Hedged = (
        Call<'static>,
        Vec<Call<'static>>,
        Vec<Option<oneshot::Sender<Attempt>>>,
    );

    /// Sends call `i` of `senders` its outcome; false if nobody waits for it any more.
    fn send(senders: &mut [Option<oneshot::Sender<Attempt>>], i: usize, attempt: Attempt) -> bool {
        senders[i].take().is_some_and(|s| s.send(attempt).is_ok())
    }

    /// A slow original of files 0..4, hedged to node 2 (files 0, 1) and node 3 (files 2, 3).
    fn hedged() -> Hedged {
        let (original, o) = call(1, vec![0, 1, 2, 3], AttemptWhy::First);
        let (h2, s2) = call(2, vec![0, 1], AttemptWhy::Hedge);
        let (h3, s3) = call(3, vec![2, 3], AttemptWhy::Hedge);
        (original, vec![h2, h3], vec![Some(o), Some(s2), Some(s3)])
    }

    #[test]
    fn hedges_that_all_answer_win_and_the_original_is_cancelled() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let decision = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                // One of two hedges is not a complete answer.
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 2, answer(&[12, 13])));
                race.await
            };
            assert_eq!(decision, Decision::Hedges);
            let out = settle(decision, original, hedges);
            assert_eq!(outcomes(&out), [(1, "cancelled"), (2, "ok"), (3, "ok")]);
            assert_eq!(answered_ids(&out), [10, 11, 12, 13]);
            assert!(out.unanswered.is_empty() && out.failures.is_empty());
            // The original's call was dropped: nothing waits for its answer any more.
            assert!(!send(&mut senders, 0, answer(&[1])));
        });
    }

    #[test]
    fn an_original_that_answers_first_wins_alone() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let decision = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 0, answer(&[1, 2, 3, 4])));
                race.await
            };
            assert_eq!(decision, Decision::Original);
            let out = settle(decision, original, hedges);
            // The hedge that answered is not merged as well: each file is answered once.
            assert_eq!(outcomes(&out), [(1, "ok"), (2, "unused"), (3, "cancelled")]);
            assert_eq!(answered_ids(&out), [1, 2, 3, 4]);
            assert!(senders[2].as_ref().is_some_and(|s| s.is_closed()));
        });
    }

    #[test]
    fn a_failed_hedge_leaves_the_files_to_the_original() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let decision = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 2, Attempt::Failed("down".into())));
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                // A hedge failed: only the original can still answer for all files.
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 0, answer(&[1, 2, 3, 4])));
                race.await
            };
            assert_eq!(decision, Decision::Original);
            let out = settle(decision, original, hedges);
            assert_eq!(outcomes(&out), [(1, "ok"), (2, "unused"), (3, "failed")]);
            assert_eq!(answered_ids(&out), [1, 2, 3, 4]);
            assert!(out.unanswered.is_empty());
            assert_eq!(out.failures.len(), 1);
        });
    }

    #[test]
    fn when_the_original_fails_the_hedges_answer_for_what_they_can() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let decision = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 0, Attempt::Failed("reset".into())));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 2, Attempt::Failed("down".into())));
                race.await
            };
            assert_eq!(decision, Decision::Neither);
            let out = settle(decision, original, hedges);
            assert_eq!(outcomes(&out), [(1, "failed"), (2, "ok"), (3, "failed")]);
            assert_eq!(answered_ids(&out), [10, 11]);
            // Node 3's files go on, and not back to a node that just failed them.
            assert_eq!(
                out.unanswered,
                [(2, vec![node(1), node(3)]), (3, vec![node(1), node(3)])]
            );
            assert_eq!(out.failures.len(), 2);

            // The original failing first and both hedges answering: the hedges answer for all.
            let (mut original, mut hedges, mut senders) = hedged();
            for (i, attempt) in [
                Attempt::Failed("reset".into()),
                answer(&[10]),
                answer(&[12]),
            ]
            .into_iter()
            .enumerate()
            {
                assert!(send(&mut senders, i, attempt));
            }
            let decision = race(&mut original, &mut hedges).await;
            assert_eq!(decision, Decision::Hedges);
            let out = settle(decision, original, hedges);
            assert_eq!(outcomes(&out), [(1, "failed"), (2, "ok"), (3, "ok")]);
            assert!(out.unanswered.is_empty());
        });
    }

    #[test]
    fn without_hedges_a_failure_sends_every_file_on_and_a_refusal_ends_the_search() {
        block_on(async {
            let (mut original, o) = call(1, vec![0, 1], AttemptWhy::First);
            assert!(o.send(Attempt::Failed("reset".into())).is_ok());
            original.wait().await;
            let decision = decide(&original, &[]);
            assert_eq!(decision, Some(Decision::Neither));
            let out = settle(Decision::Neither, original, Vec::new());
            assert_eq!(out.unanswered, [(0, vec![node(1)]), (1, vec![node(1)])]);

            let (mut original, mut hedges, mut senders) = hedged();
            let refusal = mishards_proto::error::status(ErrorCode::IllegalDimension, "no");
            assert!(send(&mut senders, 2, Attempt::Refused(refusal.clone())));
            let decision = race(&mut original, &mut hedges).await;
            assert_eq!(decision, Decision::Refused(refusal.clone()));
            let out = settle(decision, original, hedges);
            assert_eq!(out.refused, Some(refusal));
            assert_eq!(
                outcomes(&out),
                [(1, "cancelled"), (2, "cancelled"), (3, "refused")]
            );
            assert!(senders[0].as_ref().is_some_and(|s| s.is_closed()));
        });
    }
}
