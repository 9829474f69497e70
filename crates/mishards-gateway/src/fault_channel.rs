//! The gRPC channel of a node link with fault injection on the gateway → node edge: each call asks
//! the link's current `SiteFaults` and is delayed, failed or swallowed accordingly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::Channel;

use crate::control::{FaultWatch, now};
use mishards_fault::{Failure, Outcome, returns_bare_status, rpc_of_path};
use mishards_proto as proto;

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

#[cfg(test)]
mod tests {
    use super::*;

    use actix::prelude::*;
    use tokio::sync::watch;

    use crate::control::{RecordFaults, SetLinkFaults};
    use mishards_config::NodeAddr;
    use mishards_fault::{Applied, FaultBook, FaultKind, FaultRule, NodeRole, NodeSet, Target};
    use mishards_proto::milvus_service_client::MilvusServiceClient;

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
                grpc_code: Some(mishards_fault::GrpcCode(tonic::Code::ResourceExhausted)),
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
