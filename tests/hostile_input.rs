//! Hostile and careless clients at the gateway: a search naming a million partition tags, `set_config`
//! from anyone, connections that pile up or stop answering. Each is refused or closed with a clear
//! reason, and the other clients do not notice.

mod common;

use std::time::{Duration, Instant};

use common::{RandomVectors, SplitMix64, TestCluster, cmd, code, search_param};
use mishards::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DIM: usize = common::FILE_DIM;

/// A search of collection `tags` naming `tags` partition tags.
fn tagged(query: &[f32], tags: Vec<String>) -> proto::SearchParam {
    proto::SearchParam {
        partition_tag_array: tags,
        ..search_param("tags", &[query.to_vec()], 10)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_partition_tags_are_refused_quickly_and_nobody_else_notices() {
    let mut rng = SplitMix64::new(21);
    let cluster = TestCluster::start_with(1, None, &[]).await;
    let mut c = cluster.client().await;
    let data = std::sync::Arc::new(common::load_files(&mut c, "tags", 1, &mut rng).await);
    common::create_partition(&mut c, "tags", "p7").await;
    let addr = cluster.gateway.addr;

    // Six clients search normally, a bounded number of times each.
    let mut normal = Vec::new();
    for client in 0..6 {
        let data = data.clone();
        let queries = SplitMix64::new(200 + client).vectors(30, DIM);
        normal.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            let mut failed = 0;
            for q in &queries {
                let result = common::search(&mut c, "tags", std::slice::from_ref(q), 10).await;
                if code(&result.status) == 0 {
                    common::assert_exact(&result, &data, std::slice::from_ref(q), 10);
                } else {
                    failed += 1;
                }
            }
            failed
        }));
    }

    let query = rng.vectors(1, DIM).remove(0);
    let mut hostile = common::client(addr).await;
    // A million tags: refused by their number, with Milvus's ILLEGAL_ARGUMENT and what to do.
    let million: Vec<String> = (0..1_000_000).map(|i| format!("t{i}")).collect();
    let refused = common::send_search(&mut hostile, tagged(&query, million.clone())).await;
    assert_eq!(
        code(&refused.status),
        proto::ErrorCode::IllegalArgument as i32,
        "{:?}",
        refused.status
    );
    let reason = refused.status.as_ref().map_or("", |s| s.reason.as_str());
    assert!(
        reason.contains("1000000 partition tags") && reason.contains("at most 4096"),
        "{reason}"
    );
    // The write node, asked directly, refuses it alike.
    let writer = cluster.writer.as_ref().expect("write node").addr;
    let from_node =
        common::send_search(&mut common::client(writer).await, tagged(&query, million)).await;
    assert_eq!(from_node.status, refused.status);
    // A tag past Milvus's 255 characters, and a blank one.
    for (tags, expected) in [
        (vec!["x".repeat(256)], "at most 255 characters"),
        (vec!["p7".to_string(), " ".to_string()], "must not be blank"),
    ] {
        let r = common::send_search(&mut hostile, tagged(&query, tags)).await;
        assert_eq!(code(&r.status), proto::ErrorCode::IllegalArgument as i32);
        assert!(
            r.status
                .as_ref()
                .is_some_and(|s| s.reason.contains(expected)),
            "{:?}",
            r.status
        );
    }
    // The most tags accepted, each a pattern to compile: compiled off the actors' thread, matching p7.
    let heavy: Vec<String> = (0..4096).map(|i| format!("p{i}(?:x|y)*")).collect();
    let accepted = common::send_search(&mut hostile, tagged(&query, heavy)).await;
    assert_eq!(code(&accepted.status), 0, "{:?}", accepted.status);

    let mut failed = 0;
    for n in normal {
        failed += n.await.expect("normal searches");
    }
    assert_eq!(failed, 0, "searches of other clients failed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_from_clients_is_relayed_or_refused_as_the_gateway_says() {
    // Allowed (the default): the write node takes it.
    let open = TestCluster::start_with(0, None, &[]).await;
    let mut c = open.client().await;
    let set = cmd(&mut c, "set_config storage.auto_flush_interval 5").await;
    assert_eq!(code(&set.status), 0, "{:?}", set.status);
    let got = cmd(&mut c, "get_config storage.auto_flush_interval").await;
    assert_eq!((code(&got.status), got.string_reply.as_str()), (0, "5"));
    open.shutdown().await;

    // Refused: PERMISSION_DENIED naming the setting; get_config still answers; nothing changed.
    let closed =
        TestCluster::start_with(0, None, &[("allow-client-set-config", "false".into())]).await;
    let mut c = closed.client().await;
    for text in [
        "set_config storage.auto_flush_interval 7",
        "set_config cache.cache_size 1GB",
    ] {
        let refused = cmd(&mut c, text).await;
        assert_eq!(
            code(&refused.status),
            proto::ErrorCode::PermissionDenied as i32,
            "{:?}",
            refused.status
        );
        let reason = refused.status.as_ref().map_or("", |s| s.reason.as_str());
        assert!(
            reason.contains("allow_client_set_config")
                && reason.contains("MISHARDS_ALLOW_CLIENT_SET_CONFIG"),
            "{reason}"
        );
    }
    let got = cmd(&mut c, "get_config storage.auto_flush_interval").await;
    assert_eq!(code(&got.status), 0, "{:?}", got.status);
    assert_eq!(
        got.string_reply, "3600",
        "the test cluster's own setting, unchanged"
    );
    closed.shutdown().await;
}

/// The client connection preface and an empty SETTINGS frame: an HTTP/2 connection as far as the
/// server is concerned, from a client that then says nothing (and never answers a ping).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

async fn silent_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PREFACE).await.expect("preface");
    stream
}

/// Reads until the server closes the connection (`Ok(bytes read)`) or `limit` passes (`Err`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {limit:?} ({total} bytes read)")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

/// The server's first SETTINGS frame: (identifier, value) pairs; `Err` when the server closed the
/// connection instead, or said nothing within 2 s.
async fn server_settings(stream: &mut TcpStream) -> Result<Vec<(u16, u32)>, String> {
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut header))
        .await
        .map_err(|_| "no SETTINGS within 2 s".to_string())?
        .map_err(|e| format!("no frame: {e}"))?;
    if header[3] != 0x4 {
        return Err(format!("the server's first frame is of type {}", header[3]));
    }
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("SETTINGS payload: {e}"))?;
    Ok(payload
        .chunks_exact(6)
        .map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            )
        })
        .collect())
}

/// A silent client the gateway serves (it greets it with SETTINGS). Retried, bounded: a connection the
/// test harness just closed may hold its slot for a moment.
async fn served_client(addr: std::net::SocketAddr) -> TcpStream {
    common::wait_for(
        "a served connection",
        Duration::from_secs(10),
        || async move {
            let mut stream = silent_client(addr).await;
            server_settings(&mut stream).await.map(|_| stream)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_disconnected_in_time() {
    let cluster = TestCluster::start_with(
        0,
        None,
        &[
            ("keepalive-interval", "0.2".into()),
            ("keepalive-timeout", "0.3".into()),
            ("max-concurrent-streams", "7".into()),
        ],
    )
    .await;
    let mut stream = silent_client(cluster.gateway.addr).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) as configured.
    let settings = server_settings(&mut stream).await.expect("served");
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
    let started = Instant::now();
    read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the gateway closes a connection whose pings go unanswered");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed before any ping was due"
    );
    // A real client, which answers pings, keeps its connection across many ping rounds.
    let mut c = cluster.client().await;
    for _ in 0..4 {
        assert_eq!(code(&cmd(&mut c, "status").await.status), 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let cluster = TestCluster::start_with(0, None, &[("max-connections", "2".into())]).await;
    let addr = cluster.gateway.addr;
    // Two served connections hold both slots.
    let first = served_client(addr).await;
    let second = served_client(addr).await;
    let mut third = silent_client(addr).await;
    let read = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is closed");
    assert_eq!(read, 0, "closed without being served");
    // One leaves: a new one is served again.
    drop(first);
    let fourth = served_client(addr).await;
    // Closed by the client: a graceful shutdown would otherwise wait for them (up to the keep-alive).
    drop((second, third, fourth));
    cluster.shutdown().await;
}
