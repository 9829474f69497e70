//! A TCP proxy that delays what a node sends back: a slow read node without touching the node. Each
//! chunk from the node is held until `delay` after it arrived, so chunks do not wait behind each other:
//! every call on the connection takes `delay` longer, however many run at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Listens on 127.0.0.1, port 0, and forwards to `target`; stops (with its connections) when dropped.
pub struct DelayProxy {
    pub addr: SocketAddr,
    pub target: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(target: SocketAddr, delay: Duration) -> DelayProxy {
        Self::spawn(target, delay)
    }

    /// As `start`, from synchronous code running inside a tokio runtime.
    pub fn spawn(target: SocketAddr, delay: Duration) -> DelayProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy port");
        let listener = TcpListener::from_std(listener).expect("proxy port in the runtime");
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which ends every connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(relay(client, target, delay));
                while connections.try_join_next().is_some() {}
            }
        });
        DelayProxy {
            addr,
            target,
            accept,
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(node) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = node.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut node_read, mut node_write) = node.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut node_write).await;
        let _ = node_write.shutdown().await;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = node_read.read(&mut buffer).await {
            if tx
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if client_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, read, write);
}

/// A TCP relay whose target is set later: it listens on 127.0.0.1, port 0, from the start, closes
/// every connection at once until `point_to` names a target (a server that is not up yet, as a client
/// sees it), then forwards each new connection there. Stops, with its connections, when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Must run inside a tokio runtime.
    pub fn start() -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking relay port");
        let listener = TcpListener::from_std(listener).expect("relay port in the runtime");
        let target = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let shared = target.clone();
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let to = shared.lock().ok().and_then(|t| *t);
                match to {
                    // Dropping the connection closes it: the client's connect fails.
                    None => drop(client),
                    Some(to) => {
                        connections.spawn(relay(client, to, Duration::ZERO));
                    }
                }
                while connections.try_join_next().is_some() {}
            }
        });
        Relay {
            addr,
            target,
            accept,
        }
    }

    /// From now on, new connections go to `to`.
    pub fn point_to(&self, to: SocketAddr) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(to);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
