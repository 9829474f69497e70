//! One scatter-gather actor per search: sends each node its files (after a `ReloadSegments` for files
//! whose delete marks changed since that node last saw them), one `SearchInFiles` per node with a
//! per-node deadline; on an error or a missed deadline re-sends only that node's files to their next
//! fallback nodes (at most `max_retry` times); merges the answers into the global top-k. Files that stay
//! unanswered make the reply an error naming them and the nodes tried — never a silently short answer.
//!
//! Hedging: an attempt still running past its node's expected latency also has its files sent to their
//! next nodes (within the gateway's hedge budget, hedge.rs). The original answers for all its files, each
//! hedge for a share of them, so the files are answered by the original alone or by every hedge — never
//! by both — and the side that has not answered is dropped (tonic cancels its HTTP/2 stream). The race
//! itself, and who wins it, is race.rs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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
use super::node_link::{Acquire, Cancelled, Lease, LeaseReport, LinkAnswer, NodeLink, SearchFiles};
use super::race::{self, Attempt, Call, NodeOutcome, Winner, millis};
use super::routing::{Plan, Routing, SearchPlan, Seen};
use mishards_config::NodeAddr;
use mishards_meta::{TagPatterns, check_search_tags};
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
        let tags = tag_patterns(&param.partition_tag_array).await?;
        let plan = self
            .routing
            .send(Plan {
                collection: param.collection_name.clone(),
                tags,
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
        check_query(&param, plan.dimension, plan.metric_type.is_binary())?;
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

/// Partition tags a search's manifest keeps.
const MANIFEST_TAGS: usize = 32;

impl SearchManifest {
    fn start(trace_id: RequestTraceId, param: &proto::SearchParam) -> SearchManifest {
        SearchManifest {
            trace_id: trace_id.to_string(),
            rpc: "Search",
            collection: param.collection_name.clone(),
            // The first few: a manifest is kept for a while, and a search may name thousands.
            partition_tags: param
                .partition_tag_array
                .iter()
                .take(MANIFEST_TAGS)
                .cloned()
                .collect(),
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

/// The search's partition tags, compiled: from the cache, or on a blocking thread, so a search naming
/// many tags never holds up the actors' thread (every other search's work runs there).
async fn tag_patterns(tags: &[String]) -> Result<Option<Arc<TagPatterns>>, GatewayError> {
    if tags.is_empty() {
        return Ok(None);
    }
    if let Some(cached) = TagPatterns::cached(tags) {
        return Ok(Some(cached));
    }
    // The limits are checked before the copy, so a huge list is refused without one.
    check_search_tags(tags).map_err(GatewayError::Partition)?;
    let tags = tags.to_vec();
    let compiled = tokio::task::spawn_blocking(move || TagPatterns::compile(&tags))
        .await
        .map_err(|e| GatewayError::Actor {
            actor: "partition tag compiler",
            reason: e.to_string(),
        })?;
    compiled.map(Some).map_err(GatewayError::Partition)
}

/// The checks Milvus makes before searching, so they hold even when no node is asked, and so a
/// malformed search is refused here rather than batched with good ones on a node.
fn check_query(
    param: &proto::SearchParam,
    dimension: i64,
    binary: bool,
) -> Result<(), GatewayError> {
    let invalid = |code: ErrorCode, reason: String| {
        GatewayError::Node(mishards_proto::error::status(code, reason))
    };
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
    if let Some(reason) = mishards_proto::limits::result_size_problem(
        param.query_record_array.len(),
        param.topk as usize,
    ) {
        return Err(invalid(ErrorCode::IllegalArgument, reason));
    }
    let records = &param.query_record_array;
    let (wrong_kind, expected) = if binary {
        (
            records.iter().any(|r| !r.float_data.is_empty()),
            "binary vectors (binary_data, dimension / 8 bytes each)",
        )
    } else {
        (
            records.iter().any(|r| !r.binary_data.is_empty()),
            "float vectors (float_data)",
        )
    };
    if wrong_kind {
        return Err(invalid(
            ErrorCode::IllegalRowrecord,
            format!("this collection is searched with {expected}"),
        ));
    }
    let width = |r: &proto::RowRecord| {
        if binary {
            r.binary_data.len() as i64 * 8
        } else {
            r.float_data.len() as i64
        }
    };
    if records.iter().any(|r| width(r) != dimension) {
        return Err(invalid(
            ErrorCode::IllegalDimension,
            format!("every query vector must have the collection's dimension {dimension}"),
        ));
    }
    if !binary
        && let Some(reason) = mishards_proto::limits::non_finite_query_problem(
            records.iter().map(|r| r.float_data.as_slice()),
        )
    {
        return Err(invalid(ErrorCode::IllegalRowrecord, reason));
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

/// How long past its node deadline a search waits for its link, which answers by that deadline
/// unless it stopped.
const LINK_GRACE: Duration = Duration::from_secs(1);

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
            return race::unhedged(original).await;
        };
        let overdue = race::overdue(&mut original, delay).await;
        // Worked out only now: most attempts answer before their hedge is due.
        let targets = if overdue {
            self.hedge_targets(node, files, cursor)
        } else {
            Vec::new()
        };
        if targets.is_empty() || !hedging.budget.try_take(targets.len() as u64) {
            return race::unhedged(original).await;
        }
        tracing::debug!(%node, after = ?delay, nodes = targets.len(), "hedging a slow attempt");
        let mut hedges = join_all(
            targets
                .into_iter()
                .map(|(to, files)| self.start_call(to, files, round, AttemptWhy::Hedge)),
        )
        .await;
        let winner = race::race(&mut original, &mut hedges).await;
        if matches!(winner, Winner::Hedges) {
            hedging.budget.won();
        }
        race::settle(winner, original, hedges)
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
        Call::new(node, files, span, record, started, future)
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
        link.do_send(LeaseReport { latency, failed });
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
