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

use super::GatewayError;
use super::merge::{Partial, merge_topk};
use super::node_link::{Acquire, NodeLink, Report};
use super::routing::{Plan, Routing, SearchPlan, Seen};
use crate::config::NodeAddr;
use crate::error::success;
use crate::proto::{self, ErrorCode};

/// What a scatter-gather ends with: the merged answer, or the request back when the snapshot does not
/// know the collection (the caller asks the write node, which may have just created it).
pub enum Scattered {
    Answer(proto::TopKQueryResult),
    Unknown(proto::SearchParam),
}

/// Everything one search needs; the actor plans it with Routing, answers on `reply` and stops.
pub struct ScatterGather {
    /// Taken by the job when the actor starts.
    pub param: Option<proto::SearchParam>,
    pub routing: Addr<Routing>,
    pub node_timeout: Duration,
    pub max_retry: u32,
    pub reply: Option<oneshot::Sender<Result<Scattered, GatewayError>>>,
}

impl Actor for ScatterGather {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(param) = self.param.take() else {
            ctx.stop();
            return;
        };
        let (routing, node_timeout, max_retry) =
            (self.routing.clone(), self.node_timeout, self.max_retry);
        let work = async move {
            let plan = routing
                .send(Plan {
                    collection: param.collection_name.clone(),
                    tags: param.partition_tag_array.clone(),
                })
                .await
                .map_err(|e| GatewayError::Actor {
                    actor: "routing",
                    reason: e.to_string(),
                })??;
            let Some(plan) = plan else {
                return Ok(Scattered::Unknown(param));
            };
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
                param,
                routing,
                node_timeout,
                max_retry,
            };
            job.run().await.map(Scattered::Answer)
        };
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(result);
            }
            ctx.stop();
        }));
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
fn node_trouble(code: i32) -> bool {
    [
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
    async fn run(self) -> Result<proto::TopKQueryResult, GatewayError> {
        let nq = self.param.query_record_array.len();
        let k = usize::try_from(self.param.topk).unwrap_or(0);
        let higher_is_better = self.plan.collection.metric_type.higher_is_better();
        // Which node in each file's list is being tried.
        let mut cursor: Vec<usize> = vec![0; self.plan.files.len()];
        let mut answers: Vec<proto::TopKQueryResult> = Vec::new();
        let mut failures: Vec<(NodeAddr, String)> = Vec::new();
        let mut unanswered: Vec<usize> = Vec::new();
        let mut pending: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
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
            let attempts = join_all(
                pending
                    .iter()
                    .map(|(node, files)| self.attempt(node, files, round)),
            )
            .await;
            let mut next: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
            for ((node, files), attempt) in pending.into_iter().zip(attempts) {
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
        let (ids, distances) =
            merge_topk(&parts, nq, k, higher_is_better).map_err(GatewayError::Merge)?;
        Ok(proto::TopKQueryResult {
            status: Some(success()),
            row_num: nq as i64,
            ids,
            distances,
        })
    }

    /// One node, its files: reload where needed, then one SearchInFiles within the deadline.
    async fn attempt(&self, node: &NodeAddr, files: &[usize], round: u32) -> Attempt {
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
        let stale: Vec<String> = files
            .iter()
            .map(|i| &self.plan.files[*i])
            .filter(|f| f.stale_on.contains(node))
            .map(|f| f.file.id.to_string())
            .collect();
        let outcome = tokio::time::timeout(deadline, async {
            if !stale.is_empty() {
                let reload = proto::ReLoadSegmentsParam {
                    collection_name: self.param.collection_name.clone(),
                    segment_id_array: stale.clone(),
                };
                match lease.client.reload_segments(reload).await {
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
                .search_in_files(request)
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
