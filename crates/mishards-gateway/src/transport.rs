//! The node links' TCP connections. They are tonic's own (hyper's HTTP connector: DNS, connect timeout,
//! TCP_NODELAY, keep-alive) with two differences: the connection declines vectored writes, and it may
//! be TLS (`node_tls_ca`), set up here rather than by tonic's `ClientTlsConfig` so each new connection
//! takes the certificates as last reloaded (mishards-tls).
//!
//! Why: h2 sends a DATA frame of 256 bytes or more by chaining it to its write buffer, and a chained
//! frame must be written out before anything else is buffered — one `writev` per request. A search's
//! `SearchInFiles` is a few hundred bytes, so concurrent searches to one node each cost a syscall (and a
//! wake-up of the node). Without vectored I/O, h2 copies frames of up to 1 KiB into its 16 KiB buffer,
//! so the requests that are ready together leave in one write. Larger frames are still chained.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use mishards_tls::{ClientStream, ClientTls, MaybeTls};

/// Connects like tonic's `Endpoint::connect_lazy`; its connections coalesce small frames, and are TLS
/// when it has a `ClientTls`.
#[derive(Clone)]
pub struct CoalescingConnector {
    http: HttpConnector,
    tls: Option<ClientTls>,
}

impl CoalescingConnector {
    pub fn new(connect_timeout: Duration, tls: Option<ClientTls>) -> CoalescingConnector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        CoalescingConnector { http, tls }
    }
}

type Connecting = Pin<
    Box<dyn Future<Output = Result<CoalescingIo, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

impl tower::Service<Uri> for CoalescingConnector {
    type Response = CoalescingIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let host = uri.host().map(str::to_string);
        let connecting = tower::Service::call(&mut self.http, uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let stream = match (tls, host) {
                (None, _) => MaybeTls::Plain(tcp),
                (Some(tls), Some(host)) => MaybeTls::Tls(Box::new(tls.connect(&host, tcp).await?)),
                (Some(_), None) => return Err("a TLS node address needs a host".into()),
            };
            Ok(CoalescingIo(TokioIo::new(stream)))
        })
    }
}

/// A node connection (plain or TLS) that tells hyper it has no vectored writes (see the module's
/// comment).
pub struct CoalescingIo(TokioIo<MaybeTls<ClientStream>>);

impl hyper::rt::Read for CoalescingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CoalescingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
