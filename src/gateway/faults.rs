//! Fault injection inside the gateway (`--enable-fault-injection`): the `Faults` actor that owns the
//! rules and the applied-fault log (`crate::fault::FaultBook`), the gRPC channel wrapper that applies
//! rules on the gateway → node edge (`FaultChannel`), the crash timers, and the in-process handle
//! (`FaultHandle`) the admin listener and the chaos runner use.
//!
//! How rules travel: `Faults` publishes each new `FaultPlan` by message — `SetFaults` to `Cluster`
//! (which hands `SetLinkFaults` to every node link, and to links it starts later) and to the
//! `MetadataPoller`. A node link turns the plan into its own `SiteFaults` (the rules that hit it and
//! their random streams) and hands that to its pooled channels through a `tokio::sync::watch`: a
//! channel reads the current value per call, without a lock on any actor's state. Applied faults come
//! back to `Faults` as `RecordFaults`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::transport::Channel;

use super::cluster::Cluster;
use super::discovery::Discovery;
use super::metadata::MetadataPoller;
use super::node_link::Crash;
use super::routing::Routing;
use crate::config::NodeAddr;
use crate::fault::{
    ActorName, Applied, Decision, Failure, FaultBook, FaultError, FaultInjector, FaultKind,
    FaultPlan, FaultReport, FaultRule, LoggedFault, NodeRole, Outcome, Site, Target,
    returns_bare_status, rpc_of_path,
};
use crate::proto;

/// A new set of rules, for `Cluster` (which passes it on to the node links) and the poller.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SetFaults {
    pub plan: Arc<FaultPlan>,
    pub log: Recipient<RecordFaults>,
}

/// A new set of rules for one node link, with the role of its node.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SetLinkFaults {
    pub plan: Arc<FaultPlan>,
    pub role: NodeRole,
    pub log: Recipient<RecordFaults>,
}

/// Faults that took effect, for the log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordFaults(pub Vec<Applied>);

/// Stop the link of this node (read or write); answers whether there is one.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashLink(pub NodeAddr);

/// Arms rules; answers their ids (all are checked first: all or none).
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>, FaultError>")]
pub struct AddFaults(pub Vec<FaultRule>);

#[derive(Message)]
#[rtype(result = "Result<(), FaultError>")]
pub struct RemoveFault(pub u64);

/// Removes every rule (the log stays).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearFaults;

/// Forgets the applied faults (the rules stay).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearFaultLog;

#[derive(Message)]
#[rtype(result = "FaultReport")]
pub struct GetFaults;

/// One site's rules and where its applied faults go: what a node link hands its channels, and what
/// the poller keeps.
#[derive(Debug)]
pub struct SiteFaults {
    pub injector: FaultInjector,
    pub log: Recipient<RecordFaults>,
}

impl SiteFaults {
    /// The site's view of a new plan, carrying over stream positions from `previous`.
    pub fn new(
        plan: Arc<FaultPlan>,
        site: Site,
        log: Recipient<RecordFaults>,
        previous: Option<&SiteFaults>,
    ) -> SiteFaults {
        SiteFaults {
            injector: FaultInjector::new(plan, site, now(), previous.map(|p| &p.injector)),
            log,
        }
    }

    /// Decides one call at `now` and logs what took effect.
    pub fn decide(&self, rpc: &str, now: Instant) -> Decision {
        let decision = self.injector.decide(rpc, now);
        if !decision.applied.is_empty() {
            for a in &decision.applied {
                tracing::debug!(site = %a.site, rpc = a.rpc.as_deref().unwrap_or(""), rule = a.rule, detail = %a.detail, "fault injected");
            }
            self.log.do_send(RecordFaults(decision.applied.clone()));
        }
        decision
    }
}

/// What a node link's channels read their rules from; `None` until a plan arrives.
pub type FaultWatch = watch::Receiver<Option<Arc<SiteFaults>>>;

impl SetLinkFaults {
    /// The link of `node`'s view of this plan (stream positions carried over from `previous`).
    pub fn for_link(&self, node: &NodeAddr, previous: Option<&SiteFaults>) -> Arc<SiteFaults> {
        Arc::new(SiteFaults::new(
            self.plan.clone(),
            Site::Node {
                node: node.clone(),
                role: self.role,
            },
            self.log.clone(),
            previous,
        ))
    }
}

/// Now, on tokio's clock (paused in tests), as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The gRPC channel of a node link: the plain tonic `Channel` when fault injection is off (one branch
/// on `None` per call), else each call asks the link's current `SiteFaults` and is delayed, failed or
/// swallowed accordingly. Health probes go through it too (RPC `Cmd`), so a partitioned node goes down
/// in the gateway's eyes.
#[derive(Clone, Debug)]
pub struct FaultChannel {
    inner: Channel,
    faults: Option<FaultWatch>,
}

impl FaultChannel {
    pub fn new(inner: Channel, faults: Option<FaultWatch>) -> FaultChannel {
        FaultChannel { inner, faults }
    }
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tonic::transport::Error>> + Send>>;

/// The channel's future: tonic's own when nothing is injected (no allocation), else a boxed one.
pub enum FaultFuture {
    Direct(tonic::transport::channel::ResponseFuture),
    Faulted(BoxedResponse),
}

impl Future for FaultFuture {
    type Output = Result<http::Response<Body>, tonic::transport::Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            FaultFuture::Direct(f) => Pin::new(f).poll(cx),
            FaultFuture::Faulted(f) => f.as_mut().poll(cx),
        }
    }
}

impl tower::Service<http::Request<Body>> for FaultChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = FaultFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> FaultFuture {
        let faults = match &self.faults {
            None => None,
            Some(watch) => watch.borrow().clone(),
        };
        let Some(faults) = faults.filter(|f| !f.injector.is_idle()) else {
            return FaultFuture::Direct(tower::Service::call(&mut self.inner, request));
        };
        let rpc = rpc_of_path(request.uri().path()).to_string();
        let decision = faults.decide(&rpc, now());
        if decision.is_pass() {
            return FaultFuture::Direct(tower::Service::call(&mut self.inner, request));
        }
        let delay = decision.delay;
        match decision.outcome {
            Outcome::Fail(failure) => FaultFuture::Faulted(Box::pin(async move {
                pause(delay).await;
                Ok(failure_response(&rpc, failure))
            })),
            Outcome::BlackHole => FaultFuture::Faulted(Box::pin(async move {
                pause(delay).await;
                futures::future::pending().await
            })),
            // A delay (the poller's and crash outcomes never reach a channel). The channel made ready
            // by `poll_ready` goes with the call; a clone takes its place.
            _ => {
                let fresh = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, fresh);
                FaultFuture::Faulted(Box::pin(async move {
                    pause(delay).await;
                    tower::Service::call(&mut ready, request).await
                }))
            }
        }
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A reply message holding only a status in field 1, as every Milvus reply but `Status` has it.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusOnly {
    #[prost(message, optional, tag = "1")]
    status: Option<proto::Status>,
}

/// The HTTP response of an injected failure: a gRPC error status, or a well-formed Milvus reply (one
/// message, `grpc-status: 0` trailers) whose status carries the chosen code — what a node in trouble
/// answers, so the gateway's handling of node statuses is what gets exercised.
fn failure_response(rpc: &str, failure: Failure) -> http::Response<Body> {
    match failure {
        Failure::Grpc { code, message } => tonic::Status::new(code, message).into_http(),
        Failure::Milvus { code, reason } => {
            use prost::Message as _;
            let status = proto::Status {
                error_code: code,
                reason,
            };
            let message = if returns_bare_status(rpc) {
                status.encode_to_vec()
            } else {
                StatusOnly {
                    status: Some(status),
                }
                .encode_to_vec()
            };
            // gRPC framing: not compressed, big-endian length, the message.
            let mut frame = Vec::with_capacity(5 + message.len());
            frame.push(0);
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = futures::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(
                    frame,
                ))),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            let mut response =
                http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        }
    }
}

/// The actors a `crash` rule can stop, and the cluster and poller that take new plans.
pub struct FaultTargets {
    pub cluster: Addr<Cluster>,
    pub poller: Addr<MetadataPoller>,
    pub routing: Addr<Routing>,
    pub discovery: Addr<Discovery>,
}

/// Owns the rules, the seed and the applied-fault log; publishes plans; runs crash timers.
pub struct Faults {
    book: FaultBook,
    targets: FaultTargets,
    /// The crash sites' injectors, by actor name (stream positions carried across plans).
    crash_sites: HashMap<String, FaultInjector>,
}

impl Faults {
    pub fn new(seed: u64, targets: FaultTargets) -> Faults {
        Faults {
            book: FaultBook::new(seed, now()),
            targets,
            crash_sites: HashMap::new(),
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        let plan = self.book.plan();
        let set = SetFaults {
            plan: plan.clone(),
            log: ctx.address().recipient(),
        };
        self.targets.cluster.do_send(set.clone());
        self.targets.poller.do_send(set);
        let at = now();
        let mut sites = HashMap::new();
        for armed in &plan.rules {
            if let Target::Actor(actor) = &armed.rule.target {
                let name = actor.to_string();
                if let std::collections::hash_map::Entry::Vacant(site) = sites.entry(name) {
                    let previous = self.crash_sites.get(site.key());
                    site.insert(FaultInjector::new(
                        plan.clone(),
                        Site::Actor(actor.clone()),
                        at,
                        previous,
                    ));
                }
            }
        }
        self.crash_sites = sites;
    }

    /// Runs when crash rule `id`'s window opens, and every `every` after while it stays open.
    fn crash_tick(&mut self, id: u64, ctx: &mut Context<Self>) {
        let Some(armed) = self.book.rule(id) else {
            return; // removed
        };
        let (Target::Actor(actor), FaultKind::Crash { every }) =
            (&armed.rule.target, &armed.rule.kind)
        else {
            return;
        };
        let (actor, every, closes) = (actor.clone(), *every, armed.closes_at());
        let at = now();
        let Some(site) = self.crash_sites.get(&actor.to_string()) else {
            return;
        };
        let decision = site.decide_rule(id, "crash", at);
        if decision.outcome == Outcome::Crash {
            tracing::warn!(%actor, rule = id, "fault injection: crashing a supervised actor");
            match &actor {
                ActorName::Discovery => self.targets.discovery.do_send(Crash),
                ActorName::Poller => self.targets.poller.do_send(Crash),
                ActorName::Routing => self.targets.routing.do_send(Crash),
                ActorName::Link(node) => self.targets.cluster.do_send(CrashLink(node.clone())),
            }
            self.book.record(decision.applied);
        }
        if let Some(every) = every
            && closes.is_none_or(|end| at + every < end)
        {
            ctx.run_later(every, move |act, ctx| act.crash_tick(id, ctx));
        }
    }
}

impl Actor for Faults {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
        tracing::warn!(
            seed = self.book.seed(),
            "fault injection is ON: rules come from the admin listener's /faults or the in-process handle"
        );
    }
}

impl Handler<AddFaults> for Faults {
    type Result = Result<Vec<u64>, FaultError>;
    fn handle(&mut self, AddFaults(rules): AddFaults, ctx: &mut Context<Self>) -> Self::Result {
        let at = now();
        let ids = self.book.add(rules, at)?;
        for id in &ids {
            if let Some(armed) = self.book.rule(*id) {
                tracing::info!(
                    rule = id,
                    spec = %serde_json::to_string(&armed.rule).unwrap_or_default(),
                    "fault rule added"
                );
                if matches!(armed.rule.kind, FaultKind::Crash { .. }) {
                    let id = *id;
                    let wait = armed.opens_at().saturating_duration_since(at);
                    ctx.run_later(wait, move |act, ctx| act.crash_tick(id, ctx));
                }
            }
        }
        self.publish(ctx);
        Ok(ids)
    }
}

impl Handler<RemoveFault> for Faults {
    type Result = Result<(), FaultError>;
    fn handle(&mut self, RemoveFault(id): RemoveFault, ctx: &mut Context<Self>) -> Self::Result {
        self.book.remove(id)?;
        tracing::info!(rule = id, "fault rule removed");
        self.publish(ctx);
        Ok(())
    }
}

impl Handler<ClearFaults> for Faults {
    type Result = ();
    fn handle(&mut self, _: ClearFaults, ctx: &mut Context<Self>) {
        self.book.clear();
        tracing::info!("fault rules cleared");
        self.publish(ctx);
    }
}

impl Handler<ClearFaultLog> for Faults {
    type Result = ();
    fn handle(&mut self, _: ClearFaultLog, _: &mut Context<Self>) {
        self.book.clear_log();
    }
}

impl Handler<RecordFaults> for Faults {
    type Result = ();
    fn handle(&mut self, RecordFaults(applied): RecordFaults, _: &mut Context<Self>) {
        self.book.record(applied);
    }
}

impl Handler<GetFaults> for Faults {
    type Result = MessageResult<GetFaults>;
    fn handle(&mut self, _: GetFaults, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.report(now()))
    }
}

/// How long the handle waits for the `Faults` actor.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Fault injection from inside the process (the chaos runner, tests) and the admin listener: every
/// call is a message to the `Faults` actor, bounded to 5 s.
#[derive(Clone)]
pub struct FaultHandle {
    faults: Addr<Faults>,
    seed: u64,
}

impl FaultHandle {
    pub fn new(faults: Addr<Faults>, seed: u64) -> FaultHandle {
        FaultHandle { faults, seed }
    }

    /// The seed every fault decision derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    async fn ask<M>(&self, message: M) -> Result<M::Result, FaultError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Faults: Handler<M>,
    {
        self.faults
            .send(message)
            .timeout(ASK_TIMEOUT)
            .await
            .map_err(|e| FaultError::Unavailable(e.to_string()))
    }

    /// Arms one rule; answers its id.
    pub async fn add(&self, rule: FaultRule) -> Result<u64, FaultError> {
        let ids = self.add_all(vec![rule]).await?;
        ids.first()
            .copied()
            .ok_or_else(|| FaultError::Unavailable("no id given".into()))
    }

    /// Arms rules (all or none); answers their ids.
    pub async fn add_all(&self, rules: Vec<FaultRule>) -> Result<Vec<u64>, FaultError> {
        self.ask(AddFaults(rules)).await?
    }

    pub async fn remove(&self, id: u64) -> Result<(), FaultError> {
        self.ask(RemoveFault(id)).await?
    }

    /// Removes every rule (the log stays).
    pub async fn clear(&self) -> Result<(), FaultError> {
        self.ask(ClearFaults).await
    }

    /// Forgets the applied faults.
    pub async fn clear_log(&self) -> Result<(), FaultError> {
        self.ask(ClearFaultLog).await
    }

    /// The rules, the seed and the applied faults.
    pub async fn report(&self) -> Result<FaultReport, FaultError> {
        self.ask(GetFaults).await
    }

    /// The applied faults, oldest first.
    pub async fn log(&self) -> Result<Vec<LoggedFault>, FaultError> {
        Ok(self.report().await?.log)
    }
}

/// A seed for a gateway started without `--fault-seed`: from the clock and the process id (it is
/// logged, so a run can be replayed).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::NodeSet;
    use crate::proto::milvus_service_client::MilvusServiceClient;

    /// Collects applied faults.
    struct Sink(Vec<Applied>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<RecordFaults> for Sink {
        type Result = ();
        fn handle(&mut self, RecordFaults(a): RecordFaults, _: &mut Context<Self>) {
            self.0.extend(a);
        }
    }
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Count;
    impl Handler<Count> for Sink {
        type Result = usize;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.0.len()
        }
    }

    /// A client whose channel points at a port nothing listens on, under `rules`: any call that
    /// reaches the network fails with `unavailable` from the transport, not from a rule.
    fn client(
        rules: Vec<FaultRule>,
        log: Recipient<RecordFaults>,
    ) -> MilvusServiceClient<FaultChannel> {
        let mut book = FaultBook::new(9, now());
        book.add(rules, now()).unwrap();
        let node = NodeAddr::loopback(1);
        let faults = SetLinkFaults {
            plan: book.plan(),
            role: NodeRole::Read,
            log,
        }
        .for_link(&node, None);
        let (_tx, rx) = watch::channel(Some(faults));
        // The sender may go: the receiver keeps the last value.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        MilvusServiceClient::new(FaultChannel::new(channel, Some(rx)))
    }

    fn search_in_files() -> proto::SearchInFilesParam {
        proto::SearchInFilesParam::default()
    }

    fn node_rule(kind: FaultKind) -> FaultRule {
        FaultRule::new(Target::Nodes(NodeSet::All), kind)
    }

    #[actix::test]
    async fn a_milvus_error_is_a_well_formed_reply() {
        let sink = Sink(Vec::new()).start();
        let rule = node_rule(FaultKind::Error {
            milvus_code: Some(proto::ErrorCode::FileNotFound as i32),
            grpc_code: None,
            message: "gone".into(),
        })
        .on_rpcs(&["SearchInFiles", "ReloadSegments"]);
        let mut c = client(vec![rule], sink.clone().recipient());
        let reply = c
            .search_in_files(search_in_files())
            .await
            .unwrap()
            .into_inner();
        let status = reply.status.unwrap();
        assert_eq!(status.error_code, proto::ErrorCode::FileNotFound as i32);
        assert!(status.reason.contains("gone"), "{}", status.reason);
        // An RPC that answers a bare Status gets one.
        let status = c
            .reload_segments(proto::ReLoadSegmentsParam::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.error_code, proto::ErrorCode::FileNotFound as i32);
        // Not filtered: reaches the (dead) network.
        let err = c
            .cmd(proto::Command {
                cmd: "status".into(),
            })
            .await
            .unwrap_err();
        assert!(!err.message().contains("injected"), "{err:?}");
        assert_eq!(sink.send(Count).await.unwrap(), 2);
    }

    #[actix::test]
    async fn grpc_errors_and_partitions_fail_at_once() {
        let sink = Sink(Vec::new()).start();
        let mut c = client(
            vec![node_rule(FaultKind::Error {
                milvus_code: None,
                grpc_code: Some(crate::fault::GrpcCode(tonic::Code::ResourceExhausted)),
                message: String::new(),
            })],
            sink.clone().recipient(),
        );
        let err = c.search_in_files(search_in_files()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        let mut c = client(vec![node_rule(FaultKind::Partition)], sink.recipient());
        let err = c
            .cmd(proto::Command {
                cmd: "status".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("partitioned"), "{err:?}");
    }

    #[actix::test]
    async fn delays_hold_the_call_and_black_holes_never_answer() {
        // Paused time: sleeps and deadlines pass at once, measured exactly.
        tokio::time::pause();
        let sink = Sink(Vec::new()).start();
        let delay_then_fail = vec![
            node_rule(FaultKind::Delay {
                fixed: Duration::from_secs(3),
                jitter: Duration::ZERO,
            }),
            node_rule(FaultKind::Error {
                milvus_code: Some(1),
                grpc_code: None,
                message: String::new(),
            }),
        ];
        let mut c = client(delay_then_fail, sink.clone().recipient());
        let started = tokio::time::Instant::now();
        let reply = c.search_in_files(search_in_files()).await.unwrap();
        assert_eq!(reply.into_inner().status.unwrap().error_code, 1);
        // Tokio's timer ticks in whole milliseconds.
        let took = started.elapsed();
        assert!(
            (Duration::from_secs(3)..Duration::from_millis(3010)).contains(&took),
            "{took:?}"
        );

        let mut c = client(vec![node_rule(FaultKind::BlackHole)], sink.recipient());
        let started = tokio::time::Instant::now();
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            c.search_in_files(search_in_files()),
        )
        .await;
        assert!(waited.is_err(), "a black hole answered: {waited:?}");
        let took = started.elapsed();
        assert!(
            (Duration::from_secs(60)..Duration::from_millis(60010)).contains(&took),
            "{took:?}"
        );
    }

    #[test]
    fn tonics_response_future_needs_no_box() {
        fn unpin<T: Unpin>() {}
        unpin::<tonic::transport::channel::ResponseFuture>();
    }
}
