//! One actor per node: its small pool of gRPC channels, the version gate, a health probe, the
//! healthy / suspect / down state with exponential-backoff reconnects, in-flight count, latency EWMA and
//! request/error counters. Searches are sent through the link (`SearchFiles`), which batches those of
//! the same shape that arrive together into one call (batch.rs) and keeps its own counts; other calls
//! lease a client, are made by the caller (so a slow call never blocks the link), and report back.
//!
//! Longer than ~800 lines because the link is one actor: its connection state machine, the probe that
//! drives it, retargeting and the handlers that lease from and report to it share that state; split
//! across files they would only reach into each other's fields.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::{Either, join_all, select};
use tokio::sync::oneshot;
use tonic::transport::Endpoint;

use super::GatewayError;
use super::batch;
use super::latency::RecentLatency;
use super::transport::CoalescingConnector;
use crate::control::{Crash, SetLinkFaults, SiteFaults};
use crate::fault_channel::FaultChannel;
use mishards_config::NodeAddr;
use mishards_proto::limits::MAX_MESSAGE_BYTES;
use mishards_proto::{self as proto, milvus_service_client::MilvusServiceClient};

/// A node's client. Its calls go through the fault layer, a plain tonic channel unless fault
/// injection is on.
pub type NodeClient = MilvusServiceClient<FaultChannel>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not probed yet.
    Connecting,
    Healthy,
    /// Recent failures; still used, ranked after healthy nodes.
    Suspect,
    /// Unreachable or refused by the version gate; not used until a probe succeeds.
    Down,
}

#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub pool_size: usize,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// The prefix `Cmd("version")` must start with (pymilvus 1.1.2 needs `1.1.`).
    pub version_prefix: String,
    /// Consecutive failures that make a suspect node down.
    pub down_after: u32,
    pub max_backoff: Duration,
    /// Fault injection is on: the channels apply the rules the link is sent (`SetLinkFaults`).
    pub fault_injection: bool,
    /// Most searches one `SearchInFiles` carries (1: each search is a call of its own).
    pub search_batch: usize,
    /// TLS to the node (`None`: plain TCP).
    pub tls: Option<mishards_tls::ClientTls>,
}

/// A node's health as the router needs it: sent when its state changes or its p95 moves.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct NodeHealth {
    pub node: NodeAddr,
    pub state: LinkState,
    /// The p95 of its recent answered calls (`None`: too few samples).
    pub p95: Option<Duration>,
}

/// Borrow a client for one call; send a `LeaseReport` with its outcome.
#[derive(Message)]
#[rtype(result = "Result<Lease, GatewayError>")]
pub struct Acquire;

pub struct Lease {
    pub client: NodeClient,
    pub node: NodeAddr,
    pub started: Instant,
}

/// The outcome of a leased call. `failed` = the node did not answer (transport error or deadline), not
/// a Milvus error status, which is an answer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseReport {
    pub latency: Duration,
    pub failed: bool,
}

/// One search's `SearchInFiles`, made by the link: alone, or together with the other searches of the
/// same shape that reach the link before it next runs (batch.rs). The answer comes on `reply` by
/// `deadline`; a caller that drops its receiver has cancelled (a hedge won), and a call whose every
/// caller cancelled is dropped, which resets its HTTP/2 stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SearchFiles {
    /// With the caller's `traceparent`, when it has one (`telemetry::outgoing`).
    pub request: tonic::Request<proto::SearchInFilesParam>,
    pub deadline: Instant,
    /// Never batched: the request carries a sampled trace of its own.
    pub alone: bool,
    pub reply: oneshot::Sender<LinkAnswer>,
}

/// The link's answer to one `SearchFiles`.
#[derive(Debug)]
pub struct LinkAnswer {
    /// The node's answer to this search's queries, or why there is none (unreachable, transport
    /// error, deadline, malformed answer).
    pub result: Result<proto::TopKQueryResult, String>,
    /// How many searches the call carried (1: alone).
    pub batch: usize,
}

/// The lease holder dropped its call before an answer (a hedge won): neither a success nor a failure,
/// so the node's health and latency are left as they are.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancelled;

#[derive(Message)]
#[rtype(result = "LinkStats")]
pub struct GetLinkStats;

#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeHealth(pub Recipient<NodeHealth>);

#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkStats {
    pub node: String,
    pub state: LinkState,
    pub reason: Option<String>,
    pub version: Option<String>,
    pub in_flight: u64,
    pub latency_ewma_ms: f64,
    /// p95 of the recent answered calls (`None`: too few in the last 30 s).
    pub latency_p95_ms: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    /// Calls dropped before they answered because another node's answer won.
    pub cancelled: u64,
    pub restarts: u64,
    /// `SearchInFiles` calls the link made for searches, and the searches that shared a call with
    /// others: `searches / search_calls` is the mean batch.
    pub search_calls: u64,
    pub batched_searches: u64,
    /// Batched calls the node refused, whose searches were then asked one by one.
    pub refused_batches: u64,
}

pub struct NodeLink {
    /// `None`: a write node discovery has not found yet (`NodeLink::unassigned`); `Retarget` sets it.
    node: Option<NodeAddr>,
    options: LinkOptions,
    pool: Vec<NodeClient>,
    next: usize,
    state: LinkState,
    reason: Option<String>,
    version: Option<String>,
    failures: u32,
    backoff: Duration,
    next_probe: Instant,
    probing: bool,
    in_flight: u64,
    ewma_ms: f64,
    recent: RecentLatency,
    requests: u64,
    errors: u64,
    cancelled: u64,
    restarts: u64,
    subscribers: Vec<Recipient<NodeHealth>>,
    probe_timer: Option<SpawnHandle>,
    /// When recent restarts happened, to bound restart intensity.
    recent_restarts: std::collections::VecDeque<Instant>,
    /// With fault injection on: this node's rules, read by its channels on every call.
    faults: Option<tokio::sync::watch::Sender<Option<std::sync::Arc<SiteFaults>>>>,
    /// Searches waiting for the next flush, and whether one is scheduled.
    pending: Vec<SearchFiles>,
    flush_scheduled: bool,
    search_calls: u64,
    batched_searches: u64,
    /// Batched calls the node refused, whose searches were then asked one by one.
    refused_batches: u64,
}

/// More restarts than this within `RESTART_WINDOW` mark the node down until a probe succeeds after the
/// longest backoff, instead of restarting it hot.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The node left the cluster: stop probing and refuse leases; the actor ends once nobody holds it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Discovery found the node somewhere else (the write node's pod was replaced): the link connects there
/// afresh, its state starting over; calls in flight finish on their old connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retarget(pub NodeAddr);

/// What a link to a node discovery has not found yet calls itself.
pub const UNASSIGNED: &str = "(not discovered yet)";

impl NodeLink {
    pub fn new(node: NodeAddr, options: LinkOptions) -> Self {
        Self::with_node(Some(node), options)
    }

    /// A link to a node discovery will name (`Retarget`); until then it is down and refuses calls.
    pub fn unassigned(options: LinkOptions) -> Self {
        Self::with_node(None, options)
    }

    fn with_node(node: Option<NodeAddr>, options: LinkOptions) -> Self {
        NodeLink {
            node,
            pool: Vec::new(),
            next: 0,
            state: LinkState::Connecting,
            reason: None,
            version: None,
            failures: 0,
            backoff: options.probe_interval,
            next_probe: Instant::now(),
            probing: false,
            in_flight: 0,
            ewma_ms: 0.0,
            recent: RecentLatency::default(),
            requests: 0,
            errors: 0,
            cancelled: 0,
            restarts: 0,
            subscribers: Vec::new(),
            probe_timer: None,
            recent_restarts: std::collections::VecDeque::new(),
            faults: options
                .fault_injection
                .then(|| tokio::sync::watch::channel(None).0),
            options,
            pending: Vec::new(),
            flush_scheduled: false,
            search_calls: 0,
            batched_searches: 0,
            refused_batches: 0,
        }
    }

    /// The node's name for logs, stats and errors.
    fn name(&self) -> String {
        self.node
            .as_ref()
            .map_or_else(|| UNASSIGNED.to_string(), ToString::to_string)
    }

    fn connect(&mut self) -> Result<(), GatewayError> {
        let connect_timeout = self.options.probe_timeout.max(Duration::from_millis(200));
        let Some(node) = &self.node else {
            return Err(GatewayError::Unreachable {
                node: self.name(),
                reason: "discovery has not found this node yet".into(),
            });
        };
        let endpoint = Endpoint::from_shared(node.endpoint())
            .map_err(|e| GatewayError::Unreachable {
                node: self.name(),
                reason: e.to_string(),
            })?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        self.pool = (0..self.options.pool_size.max(1))
            .map(|_| {
                let faults = self.faults.as_ref().map(|rules| rules.subscribe());
                MilvusServiceClient::new(FaultChannel::new(
                    endpoint.connect_with_connector_lazy(CoalescingConnector::new(
                        connect_timeout,
                        self.options.tls.clone(),
                    )),
                    faults,
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .collect();
        Ok(())
    }

    fn set_state(&mut self, state: LinkState, reason: Option<String>) {
        if state != self.state {
            match state {
                LinkState::Down => {
                    tracing::warn!(node = %self.name(), reason = reason.as_deref().unwrap_or(""), "node down")
                }
                LinkState::Healthy => {
                    tracing::info!(node = %self.name(), version = self.version.as_deref().unwrap_or(""), "node healthy")
                }
                _ => tracing::debug!(node = %self.name(), ?state, "node state"),
            }
            self.state = state;
            self.tell_health();
        }
        self.reason = reason;
    }

    fn health(&self) -> Option<NodeHealth> {
        Some(NodeHealth {
            node: self.node.clone()?,
            state: self.state,
            p95: self.recent.p95(),
        })
    }

    fn tell_health(&self) {
        let Some(health) = self.health() else {
            return;
        };
        for s in &self.subscribers {
            s.do_send(health.clone());
        }
    }

    fn failed(&mut self, reason: String) {
        self.failures += 1;
        if self.failures >= self.options.down_after || self.state == LinkState::Connecting {
            self.set_state(LinkState::Down, Some(reason));
            self.next_probe = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(self.options.max_backoff);
        } else {
            self.set_state(LinkState::Suspect, Some(reason));
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.backoff = self.options.probe_interval;
        self.set_state(LinkState::Healthy, None);
    }

    /// Probes the node: `Cmd("version")` (the gate) until it passed once, then `Cmd("status")`.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing || Instant::now() < self.next_probe {
            return;
        }
        let Some(mut client) = self.pool.first().cloned() else {
            return;
        };
        self.probing = true;
        let timeout = self.options.probe_timeout;
        let gate = self
            .version
            .is_none()
            .then(|| self.options.version_prefix.clone());
        let fut = async move {
            let cmd = if gate.is_some() { "version" } else { "status" };
            let reply = tokio::time::timeout(
                timeout,
                client.cmd(mishards_telemetry::unsampled(proto::Command {
                    cmd: cmd.into(),
                })),
            )
            .await;
            match reply {
                Err(_) => Err(format!("no answer to a health probe within {timeout:?}")),
                Ok(Err(status)) => Err(format!("health probe failed: {}", status.message())),
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    match (&gate, reply.status.as_ref().map(|s| s.error_code)) {
                        (_, Some(code)) if code != 0 => {
                            Err(format!("health probe answered error {code}"))
                        }
                        (Some(prefix), _) if !reply.string_reply.starts_with(prefix.as_str()) => {
                            Err(format!(
                                "version gate: node runs {:?}, this gateway needs {prefix}x",
                                reply.string_reply
                            ))
                        }
                        (Some(_), _) => Ok(Some(reply.string_reply)),
                        (None, _) => Ok(None),
                    }
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(|outcome, act, _| {
            act.probing = false;
            match outcome {
                Ok(version) => {
                    if version.is_some() {
                        act.version = version;
                    }
                    act.succeeded();
                }
                Err(reason) => act.failed(reason),
            }
        }));
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            node: self.name(),
            state: self.state,
            reason: self.reason.clone(),
            version: self.version.clone(),
            in_flight: self.in_flight,
            latency_ewma_ms: (self.ewma_ms * 1000.0).round() / 1000.0,
            latency_p95_ms: self
                .recent
                .p95()
                .map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0),
            requests: self.requests,
            errors: self.errors,
            cancelled: self.cancelled,
            restarts: self.restarts,
            search_calls: self.search_calls,
            batched_searches: self.batched_searches,
            refused_batches: self.refused_batches,
        }
    }

    /// Why the link takes no calls now, if it does not.
    fn unusable(&self) -> Option<GatewayError> {
        (matches!(self.state, LinkState::Down) || self.pool.is_empty()).then(|| {
            GatewayError::Unreachable {
                node: self.name(),
                reason: self
                    .reason
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            }
        })
    }

    /// The next client of the pool, round robin.
    fn next_client(&mut self) -> Option<NodeClient> {
        if self.pool.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.pool.len();
        Some(self.pool[self.next].clone())
    }

    /// A call's outcome for the node's latency and health (`failed`: no usable answer).
    fn call_ended(&mut self, latency: Duration, failed: bool, ctx: &mut Context<Self>) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.ewma_ms = if self.ewma_ms == 0.0 {
            ms
        } else {
            0.8 * self.ewma_ms + 0.2 * ms
        };
        if !failed && self.recent.record(Instant::now(), latency) {
            self.tell_health();
        }
        if failed {
            self.failed("a request got no answer".into());
            self.next_probe = self.next_probe.min(Instant::now());
            self.probe(ctx);
        } else if self.state != LinkState::Healthy && self.version.is_some() {
            self.succeeded();
        }
    }

    /// Sends every pending search, batched by shape.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let mut pending = std::mem::take(&mut self.pending);
        while !pending.is_empty() {
            let searches = batch::take_batch(
                &mut pending,
                self.options.search_batch,
                |s| s.request.get_ref(),
                |s| s.alone,
            );
            self.send_batch(searches, ctx);
        }
    }

    /// One `SearchInFiles` for `searches` (all of one shape); their answers are split back by rows.
    fn send_batch(&mut self, searches: Vec<SearchFiles>, ctx: &mut Context<Self>) {
        let size = searches.len();
        if size == 0 {
            return;
        }
        let Some(mut client) = self.next_client() else {
            let reason = self.unusable().map_or_else(String::new, |e| e.to_string());
            self.in_flight = self.in_flight.saturating_sub(size as u64);
            for s in searches {
                let _ = s.reply.send(LinkAnswer {
                    result: Err(reason.clone()),
                    batch: size,
                });
            }
            return;
        };
        self.search_calls += 1;
        if size > 1 {
            self.batched_searches += size as u64;
        }
        let deadline = searches.iter().map(|s| s.deadline).min();
        let deadline = tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now));
        let (requests, mut replies): (Vec<_>, Vec<_>) =
            searches.into_iter().map(|s| (s.request, s.reply)).unzip();
        let mut requests = requests.into_iter();
        let Some(first) = requests.next() else {
            return;
        };
        // A batch keeps a copy of its request: if the node refuses it, each search is asked alone,
        // so one bad search fails only itself.
        let (request, rows, members) = if size == 1 {
            (first, Vec::new(), None)
        } else {
            // The first caller's metadata (its traceparent, if any) goes with the call.
            let (metadata, extensions, first) = first.into_parts();
            let searches = std::iter::once(first).chain(requests.map(tonic::Request::into_inner));
            let (combined, rows) = batch::combine(searches.collect());
            let members = Some(combined.clone());
            (
                tonic::Request::from_parts(metadata, extensions, combined),
                rows,
                members,
            )
        };
        let started = Instant::now();
        let call = async move {
            let answer = tokio::time::timeout_at(deadline, client.search_in_files(request));
            let all_cancelled = join_all(replies.iter_mut().map(|r| r.closed()));
            let answer = match select(std::pin::pin!(answer), std::pin::pin!(all_cancelled)).await {
                Either::Left((answer, _)) => Some(answer),
                Either::Right(_) => None,
            };
            (answer, replies)
        };
        ctx.spawn(
            call.into_actor(self)
                .map(move |(answer, replies), act, ctx| {
                    act.in_flight = act.in_flight.saturating_sub(size as u64);
                    let latency = started.elapsed();
                    if let Some(members) = members
                        && answer.as_ref().is_some_and(refused_batch)
                    {
                        act.call_ended(latency, false, ctx);
                        act.answer_alone(members, &rows, replies, deadline.into_std(), ctx);
                        return;
                    }
                    let answers: Vec<Result<proto::TopKQueryResult, String>> = match answer {
                        None => {
                            // Every caller went away: neither a success nor a failure for the node.
                            act.cancelled += size as u64;
                            return;
                        }
                        Some(Err(_)) => vec![
                            Err(format!(
                                "no answer within {:?}",
                                deadline.saturating_duration_since(started.into())
                            ));
                            size
                        ],
                        Some(Ok(Err(status))) => {
                            vec![Err(format!("SearchInFiles failed: {}", status.message())); size]
                        }
                        Some(Ok(Ok(answer))) if size == 1 => vec![Ok(answer.into_inner())],
                        Some(Ok(Ok(answer))) => match batch::split(answer.into_inner(), &rows) {
                            Ok(parts) => parts.into_iter().map(Ok).collect(),
                            Err(reason) => vec![Err(reason); size],
                        },
                    };
                    let failed = answers.iter().any(Result::is_err);
                    if failed {
                        act.errors += size as u64;
                    }
                    act.call_ended(latency, failed, ctx);
                    for (reply, result) in replies.into_iter().zip(answers) {
                        if reply.is_closed() {
                            act.cancelled += 1;
                        } else {
                            let _ = reply.send(LinkAnswer {
                                result,
                                batch: size,
                            });
                        }
                    }
                }),
        );
    }
}

/// Whether a batched call's outcome is a refusal that may be one member's doing: an error status about
/// the request (its rows, say), or a gRPC error other than the node being unreachable, slow or gone. A
/// refusal about what the members share (the collection, its files, the metadata) would fail each of
/// them alone too, so it goes to all of them as it is. A refused batch's searches are asked again one
/// by one.
fn refused_batch(
    answer: &Result<
        Result<tonic::Response<proto::TopKQueryResult>, tonic::Status>,
        tokio::time::error::Elapsed,
    >,
) -> bool {
    use proto::ErrorCode;
    match answer {
        Ok(Ok(reply)) => reply.get_ref().status.as_ref().is_some_and(|s| {
            let shared = [
                ErrorCode::CollectionNotExists,
                ErrorCode::FileNotFound,
                ErrorCode::MetaFailed,
                ErrorCode::CacheFailed,
                ErrorCode::OutOfMemory,
            ];
            s.error_code != 0 && !shared.iter().any(|c| *c as i32 == s.error_code)
        }),
        Ok(Err(status)) => !matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        Err(_) => false,
    }
}

impl NodeLink {
    /// Sends each search of a refused batch as a call of its own, by the batch's deadline; each
    /// caller gets its own answer.
    fn answer_alone(
        &mut self,
        combined: proto::SearchInFilesParam,
        rows: &[usize],
        replies: Vec<oneshot::Sender<LinkAnswer>>,
        deadline: Instant,
        ctx: &mut Context<Self>,
    ) {
        tracing::debug!(node = %self.name(), searches = rows.len(), "a batched search was refused: asking its searches one by one");
        self.refused_batches += 1;
        for (param, reply) in batch::separate(combined, rows).into_iter().zip(replies) {
            if reply.is_closed() {
                self.cancelled += 1;
                continue;
            }
            self.in_flight += 1;
            let alone = SearchFiles {
                request: tonic::Request::new(param),
                deadline,
                alone: true,
                reply,
            };
            self.send_batch(vec![alone], ctx);
        }
    }
}

impl Actor for NodeLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
        if let Err(e) = self.connect() {
            self.set_state(LinkState::Down, Some(e.to_string()));
        }
        self.probe(ctx);
        let every = self.options.probe_interval;
        self.probe_timer = Some(ctx.run_interval(every, |act, ctx| act.probe(ctx)));
        // Let an idle node's latencies age out, and tell Routing when that changes its p95.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            if act.recent.expire(Instant::now()) {
                act.tell_health();
            }
        });
    }
}

impl Supervised for NodeLink {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(node = %self.name(), "node link restarted with a fresh channel pool");
        self.restarts += 1;
        self.pool.clear();
        self.probing = false;
        self.in_flight = 0;
        // Their callers see the link gone and send the files on.
        self.pending.clear();
        self.flush_scheduled = false;
        self.version = None;
        self.state = LinkState::Connecting;
        self.next_probe = Instant::now();
        let now = Instant::now();
        self.recent_restarts.push_back(now);
        while self
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            self.recent_restarts.pop_front();
        }
        if self.recent_restarts.len() > MAX_RESTARTS {
            let reason = format!(
                "restarted {} times within {RESTART_WINDOW:?}",
                self.recent_restarts.len()
            );
            tracing::error!(node = %self.name(), %reason, "node link restarting too often: holding it down");
            self.set_state(LinkState::Down, Some(reason));
            self.next_probe = now + self.options.max_backoff;
        }
    }
}

impl Handler<Acquire> for NodeLink {
    type Result = Result<Lease, GatewayError>;
    fn handle(&mut self, _: Acquire, _: &mut Context<Self>) -> Self::Result {
        if let Some(e) = self.unusable() {
            return Err(e);
        }
        let (Some(node), Some(client)) = (self.node.clone(), self.next_client()) else {
            return Err(GatewayError::Unreachable {
                node: self.name(),
                reason: "not connected".into(),
            });
        };
        self.in_flight += 1;
        self.requests += 1;
        Ok(Lease {
            client,
            node,
            started: Instant::now(),
        })
    }
}

impl Handler<SearchFiles> for NodeLink {
    type Result = ();
    fn handle(&mut self, search: SearchFiles, ctx: &mut Context<Self>) {
        if let Some(e) = self.unusable() {
            let _ = search.reply.send(LinkAnswer {
                result: Err(e.to_string()),
                batch: 1,
            });
            return;
        }
        self.in_flight += 1;
        self.requests += 1;
        self.pending.push(search);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // Flushed once the tasks already woken have run: the searches they carry join this batch,
            // so batches form under load and a lone search waits for nothing.
            ctx.spawn(
                tokio::task::yield_now()
                    .into_actor(self)
                    .map(|(), act, ctx| act.flush(ctx)),
            );
        }
    }
}

impl Handler<LeaseReport> for NodeLink {
    type Result = ();
    fn handle(&mut self, r: LeaseReport, ctx: &mut Context<Self>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if r.failed {
            self.errors += 1;
        }
        self.call_ended(r.latency, r.failed, ctx);
    }
}

impl Handler<GetLinkStats> for NodeLink {
    type Result = MessageResult<GetLinkStats>;
    fn handle(&mut self, _: GetLinkStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<SubscribeHealth> for NodeLink {
    type Result = ();
    fn handle(&mut self, SubscribeHealth(r): SubscribeHealth, _: &mut Context<Self>) {
        if let Some(health) = self.health() {
            r.do_send(health);
        }
        self.subscribers.push(r);
    }
}

impl Handler<Cancelled> for NodeLink {
    type Result = ();
    fn handle(&mut self, _: Cancelled, _: &mut Context<Self>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.cancelled += 1;
    }
}

impl Handler<Retire> for NodeLink {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        if let Some(timer) = self.probe_timer.take() {
            ctx.cancel_future(timer);
        }
        self.pool.clear();
        self.set_state(LinkState::Down, Some("left the cluster".into()));
    }
}

impl Handler<Crash> for NodeLink {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<SetLinkFaults> for NodeLink {
    type Result = ();
    fn handle(&mut self, rules: SetLinkFaults, _: &mut Context<Self>) {
        if let (Some(faults), Some(node)) = (&self.faults, &self.node) {
            // Kept across restarts: a crash does not lift the node's faults.
            faults.send_modify(|current| {
                *current = Some(rules.for_link(node, current.as_deref()));
            });
        }
    }
}

impl Handler<Retarget> for NodeLink {
    type Result = ();
    fn handle(&mut self, Retarget(node): Retarget, ctx: &mut Context<Self>) {
        if self.node.as_ref() == Some(&node) {
            return;
        }
        tracing::info!(from = %self.name(), to = %node, "node link retargeted by discovery");
        self.node = Some(node);
        self.pool.clear();
        self.version = None;
        self.failures = 0;
        self.backoff = self.options.probe_interval;
        self.recent = RecentLatency::default();
        self.ewma_ms = 0.0;
        self.state = LinkState::Connecting;
        self.reason = None;
        self.next_probe = Instant::now();
        match self.connect() {
            Ok(()) => self.probe(ctx),
            Err(e) => self.set_state(LinkState::Down, Some(e.to_string())),
        }
    }
}
