//! A client of the gateway's admin listener, for `mishards inspect`, the chaos runner and the tests: one
//! request per connection over hyper's HTTP/1.1 client, bounded in time and in the size of the answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use mishards_common::errors::error_chain;

/// Why the admin listener could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot reach the gateway's admin listener at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the gateway's admin listener at {addr} gave no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("the answer from {addr} is not HTTP: {reason}")]
    Malformed { addr: String, reason: String },
}

/// An HTTP answer: status code, content type and body.
#[derive(Debug, Clone)]
pub struct AdminReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// Largest answer read (a full `/requests` of big manifests stays far below).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// `GET path` from the admin listener at `addr` (host:port), within `timeout`.
pub async fn fetch(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<AdminReply, AdminClientError> {
    request(addr, "GET", path, &[], None, timeout).await
}

/// `method path` to the admin listener at `addr`, with extra `headers` and a JSON `body`, within
/// `timeout` (connecting, sending and reading the whole answer).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, AdminClientError> {
    let malformed = |reason: String| AdminClientError::Malformed {
        addr: addr.to_string(),
        reason,
    };
    let unreachable = |reason: String| AdminClientError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(http::header::ACCEPT, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .map_err(|e| unreachable(format!("cannot form the request: {e}")))?;
    // No pool kept between calls: each call is one short exchange, and an idle pooled connection would
    // outlive the runtime of the test or command that made it.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| malformed(format!("cannot read the body: {e}")))?
            .to_bytes();
        Ok(AdminReply {
            status,
            content_type,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AdminClientError::Timeout {
            addr: addr.to_string(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn garbage_is_named_with_its_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket.write_all(b"SSH-2.0-OpenSSH\r\n").await;
        });
        let err = fetch(&addr, "/healthz", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = fetch(&addr, "/healthz", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AdminClientError::Unreachable { .. }), "{err}");
    }
}
