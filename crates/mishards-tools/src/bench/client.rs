//! Talking to a Milvus 1.1 endpoint: connecting, one unary call with a timeout and its status checked,
//! and why a call failed ([`Failure`]).

use std::fmt;
use std::time::Duration;

use mishards_gateway::transport::CoalescingConnector;
use mishards_tls::ClientTls;
use tonic::transport::{Channel, Endpoint};

use mishards_common::errors::error_chain;
use mishards_proto::limits::MAX_MESSAGE_BYTES;
use mishards_proto::{self as proto, WithStatus, milvus_service_client::MilvusServiceClient};

use super::BenchError;

/// A Milvus 1.1 gRPC client.
pub type Client = MilvusServiceClient<Channel>;

/// Where `mishards bench` sends its load unless told: Milvus's own port on this machine.
pub const DEFAULT_ADDR: &str = "127.0.0.1:19530";

/// How long connecting to the endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Catalogue calls (has, describe, create, count…).
pub(super) const QUICK_CALL: Duration = Duration::from_secs(30);
/// Flush and index builds take as long as the data needs; still bounded.
pub(super) const SLOW_CALL: Duration = Duration::from_secs(30 * 60);

/// Why one call did not give an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The endpoint answered with a Milvus error status.
    Status { code: i32, reason: String },
    /// The call failed below Milvus: a gRPC status, connection errors included.
    Grpc { code: tonic::Code, message: String },
    /// No answer within the call's timeout.
    Timeout { after: Duration },
    /// An answer whose shape does not fit the request.
    Malformed(String),
}

impl Failure {
    pub(super) fn from_grpc(status: &tonic::Status) -> Failure {
        Failure::Grpc {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Whether this is a Milvus status (else a gRPC or transport failure).
    pub fn is_status(&self) -> bool {
        matches!(self, Failure::Status { .. })
    }

    /// The key the report counts it under: the Milvus error code's name (`CONNECT_FAILED`), the gRPC
    /// code (`grpc Unavailable`), `timeout` or `malformed answer`.
    pub fn label(&self) -> String {
        match self {
            Failure::Status { code, .. } => status_name(*code),
            Failure::Grpc { code, .. } => format!("grpc {code:?}"),
            Failure::Timeout { .. } => "timeout".into(),
            Failure::Malformed(_) => "malformed answer".into(),
        }
    }
}

/// A Milvus error code's name, e.g. `COLLECTION_NOT_EXISTS`.
pub fn status_name(code: i32) -> String {
    proto::ErrorCode::try_from(code)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_else(|_| format!("code {code}"))
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { code, reason } => {
                write!(f, "{} ({code}): {reason}", status_name(*code))
            }
            Failure::Grpc { code, message } => write!(f, "gRPC {code:?}: {message}"),
            Failure::Timeout { after } => write!(f, "no answer within {after:?}"),
            Failure::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

/// A client for `addr` (`HOST:PORT` or `http://HOST:PORT`), connected, with message limits as large as
/// the gateway's and the nodes'.
pub async fn connect(addr: &str) -> Result<Client, BenchError> {
    connect_with(addr, None).await
}

/// As [`connect`]; over TLS when `tls` is given (the endpoint's certificate checked against its CA, the
/// client certificate shown when it has one), with the gateway's own connector.
pub async fn connect_with(addr: &str, tls: Option<&ClientTls>) -> Result<Client, BenchError> {
    let unreachable = |reason: String| BenchError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| unreachable(format!("not an address: {}", error_chain(&e))))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let connecting = async {
        match tls {
            None => endpoint.connect().await,
            Some(tls) => {
                let connector = CoalescingConnector::new(CONNECT_TIMEOUT, Some(tls.clone()));
                endpoint.connect_with_connector(connector).await
            }
        }
    };
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// One unary call with a timeout, its Milvus status checked.
pub(super) async fn call<T: WithStatus>(
    name: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, BenchError> {
    let failure = |failure| BenchError::Call {
        call: name,
        failure,
    };
    let reply = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| failure(Failure::Timeout { after: timeout }))?
        .map_err(|s| failure(Failure::from_grpc(&s)))?
        .into_inner();
    match reply.status() {
        Some(s) if s.error_code != 0 => Err(failure(Failure::Status {
            code: s.error_code,
            reason: s.reason.clone(),
        })),
        _ => Ok(reply),
    }
}

/// The endpoint's `Cmd("version")`: also proves it speaks Milvus.
pub async fn server_version(client: &mut Client) -> Result<String, BenchError> {
    let reply = call(
        "Cmd(version)",
        QUICK_CALL,
        client.cmd(proto::Command {
            cmd: "version".into(),
        }),
    )
    .await?;
    Ok(reply.string_reply)
}

/// Milvus's `extra_params`: one `params` key holding JSON.
pub(super) fn params(json: serde_json::Value) -> Vec<proto::KeyValuePair> {
    vec![proto::KeyValuePair {
        key: "params".into(),
        value: json.to_string(),
    }]
}
