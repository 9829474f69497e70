//! The gateway's gRPC server: hyper's HTTP/2 server, run on the actors' thread with every connection and
//! request a local task of the actors' arbiter.
//!
//! Why not `tonic::transport::Server`: it spawns connections and requests with `tokio::spawn`, outside
//! the arbiter's local set, where an actor cannot be started — each search then had to hand its
//! scatter-gather actor to the arbiter through a channel (`start_in_arbiter`) — and it routes every
//! request through an axum router and per-connection layers the gateway does not use. Here a handler
//! starts its actor in place. What tonic's server also did is kept: TCP_NODELAY, HTTP/2 only, graceful
//! shutdown that lets open requests finish, and `grpc-timeout` (in `telemetry::RpcService`).
//!
//! What clients may hold is bounded (`ClientLimits`): streams per connection, connections (one past the
//! cap is closed at once, so the client fails fast instead of waiting in the backlog), and keep-alive
//! pings that close a connection whose client stopped answering.
//! With TLS on, each connection's handshake runs in its own task, so a slow or failing client never
//! holds up the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mishards_config::ClientLimits;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use mishards_tls::{MaybeTls, ServerTls};

/// Runs hyper's tasks (a connection's request handlers) as local tasks of the current local set.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// How long an accept error (out of file descriptors, say) pauses the accept loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `service` on `listener` until `stop` turns true, then lets open connections finish their
/// requests; over TLS when `tls` is given (a client that fails the handshake is dropped). Must run
/// inside a `tokio::task::LocalSet` (the actors' arbiter).
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ClientLimits,
    mut stop: watch::Receiver<bool>,
    tls: Option<ServerTls>,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + 'static,
    S::Future: 'static,
    B: http_body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(LocalExec);
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let open = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    // Refusals are logged once per burst, not once per connection.
    let mut refused: u64 = 0;
    let mut connections = tokio::task::JoinSet::new();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(%peer, refused, max_connections = limits.max_connections, "client connection refused: the gateway holds max_connections already");
                        }
                        drop(stream);
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
                    }
                    let (http2, service, tls) = (http2.clone(), service.clone(), tls.clone());
                    let mut stop = connection_stop.clone();
                    connections.spawn_local(async move {
                        let _permit = permit;
                        let io = match tls {
                            None => MaybeTls::Plain(stream),
                            Some(tls) => {
                                let handshake = tokio::select! {
                                    result = tls.accept(stream) => result,
                                    _ = stop.wait_for(|s| *s) => return,
                                };
                                match handshake {
                                    Ok(stream) => MaybeTls::Tls(Box::new(stream)),
                                    Err(e) => {
                                        // Debug, not warn: any port scan or plain-TCP client lands here.
                                        tracing::debug!(%peer, error = %e, "TLS handshake with a client failed");
                                        return;
                                    }
                                }
                            }
                        };
                        let connection = http2.serve_connection(
                            TokioIo::new(io),
                            TowerToHyperService::new(service),
                        );
                        let mut connection = std::pin::pin!(connection);
                        let result = tokio::select! {
                            result = connection.as_mut() => result,
                            _ = stop.wait_for(|s| *s) => {
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "client connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Finished connections are reaped as they go, so a long-lived gateway keeps none.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}
