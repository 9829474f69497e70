//! The node's accepted connections: TLS handshakes when the port has a certificate, and the kill switch
//! `RunningNode::abort` pulls.
//!
//! Why not tonic's `ServerTlsConfig`: its certificate is fixed when the server starts, and these
//! certificates are reloaded from their files (mishards-tls); and the connections must stay killable.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use mishards_tls::{MaybeTls, ServerStream, ServerTls};

/// The listener's connections, TLS ones once their handshake is done. Each handshake runs in its own
/// task (bounded by `mishards_tls::HANDSHAKE_TIMEOUT`), so a slow client never holds up the others;
/// dropping this stream (the server stopped or was aborted) closes the listener and ends them all.
pub(crate) struct NodeIncoming {
    tcp: TcpIncoming,
    tls: Option<ServerTls>,
    handshakes: JoinSet<Option<Killable>>,
    killed: Arc<AtomicBool>,
    listener_closed: bool,
}

impl NodeIncoming {
    pub(crate) fn new(
        tcp: TcpIncoming,
        tls: Option<ServerTls>,
        killed: Arc<AtomicBool>,
    ) -> NodeIncoming {
        NodeIncoming {
            tcp,
            tls,
            handshakes: JoinSet::new(),
            killed,
            listener_closed: false,
        }
    }
}

impl Stream for NodeIncoming {
    type Item = std::io::Result<Killable>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.listener_closed {
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let info = stream.connect_info();
                    let killed = this.killed.clone();
                    let Some(tls) = this.tls.clone() else {
                        return Poll::Ready(Some(Ok(Killable {
                            inner: MaybeTls::Plain(stream),
                            info,
                            killed,
                        })));
                    };
                    this.handshakes.spawn(async move {
                        match tls.accept(stream).await {
                            Ok(stream) => Some(Killable {
                                inner: MaybeTls::Tls(Box::new(stream)),
                                info,
                                killed,
                            }),
                            Err(e) => {
                                // Debug, not warn: any port scan or plain-TCP client lands here.
                                tracing::debug!(peer = ?info.remote_addr, error = %e, "TLS handshake with a client failed");
                                None
                            }
                        }
                    });
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.listener_closed = true,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => {
                    return Poll::Ready(Some(Ok(connection)));
                }
                // A failed handshake (already logged).
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) if this.listener_closed => return Poll::Ready(None),
                // No handshake under way: the listener's poll above registered the wake-up.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A connection `RunningNode::abort` can cut (the server's spawned connection tasks outlive its accept
/// loop): once the node is killed, the next read or write fails as a reset connection would. One relaxed
/// load per poll while alive.
pub(crate) struct Killable {
    inner: MaybeTls<ServerStream>,
    info: TcpConnectInfo,
    killed: Arc<AtomicBool>,
}

impl Killable {
    fn cut(&self) -> Option<std::io::Error> {
        self.killed.load(Ordering::Relaxed).then(|| {
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the node was killed")
        })
    }
}

impl Connected for Killable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
