//! Search batching (gateway/batch.rs, node_link.rs): concurrent searches of the same shape share one
//! `SearchInFiles`, and each still gets exactly the answer it gets alone.

mod common;

use std::time::{Duration, Instant};

use common::{
    RandomVectors, SplitMix64, TestCluster, assert_exact, code, search_exact, search_param,
};
use mishards::gateway::cluster::GetLinks;
use mishards::gateway::node_link::{GetLinkStats, LinkAnswer, LinkStats, NodeLink, SearchFiles};
use mishards::gateway::routing::GetOwners;
use mishards::proto;
use tokio::sync::oneshot;

const DIM: usize = common::FILE_DIM;

/// The ids of the `n` files the metadata snapshot places, once it has them all.
async fn placed_files(cluster: &TestCluster, n: usize) -> Vec<String> {
    let routing = cluster.gateway.actors.routing.clone();
    common::wait_for("the files placed", Duration::from_secs(10), || {
        let routing = routing.clone();
        async move {
            let owners = routing.send(GetOwners).await.expect("owners");
            let mut ids: Vec<String> = owners.keys().map(i64::to_string).collect();
            ids.sort();
            if ids.len() == n {
                Ok(ids)
            } else {
                Err(format!("{ids:?}"))
            }
        }
    })
    .await
}

/// The link to the cluster's only read node.
async fn read_link(cluster: &TestCluster) -> actix::Addr<NodeLink> {
    let links = cluster
        .gateway
        .actors
        .cluster
        .send(GetLinks)
        .await
        .expect("links");
    assert_eq!(links.len(), 1, "one read node");
    links.values().next().expect("a link").clone()
}

async fn link_stats(link: &actix::Addr<NodeLink>) -> LinkStats {
    link.send(GetLinkStats).await.expect("link stats")
}

/// The `SearchInFilesParam` of one query over `files`.
fn request(files: &[String], query: &[f32], topk: i64) -> proto::SearchInFilesParam {
    proto::SearchInFilesParam {
        file_id_array: files.to_vec(),
        search_param: Some(search_param("batched", &[query.to_vec()], topk)),
    }
}

/// One request per query over `files`, top-10; `alone` marks them all.
fn one_each(
    files: &[String],
    queries: &[Vec<f32>],
    alone: bool,
) -> Vec<(proto::SearchInFilesParam, bool)> {
    queries
        .iter()
        .map(|q| (request(files, q, 10), alone))
        .collect()
}

/// A cluster with one read node and `files` files of collection `batched` (gateway `flags`): the
/// cluster, the read node's link, the rows and the placed file ids.
async fn loaded(
    flags: &[(&'static str, String)],
    files: usize,
    rng: &mut SplitMix64,
) -> (
    TestCluster,
    actix::Addr<NodeLink>,
    Vec<(i64, Vec<f32>)>,
    Vec<String>,
) {
    let cluster = TestCluster::start_with(1, None, flags).await;
    let mut c = cluster.client().await;
    let data = common::load_files(&mut c, "batched", files, rng).await;
    let link = read_link(&cluster).await;
    let placed = placed_files(&cluster, files).await;
    (cluster, link, data, placed)
}

/// Each answer went alone and is the exact top-10 of its query.
fn assert_alone_and_exact(
    answers: &[Option<LinkAnswer>],
    data: &[(i64, Vec<f32>)],
    queries: &[Vec<f32>],
) {
    assert_eq!(answers.len(), queries.len());
    for (a, q) in answers.iter().zip(queries) {
        assert_eq!(a.as_ref().map(|a| a.batch), Some(1));
        assert_exact(answer(a), data, std::slice::from_ref(q), 10);
    }
}

/// Sends every request to `link` from one task on the actors' thread, so all are in its mailbox before
/// it runs (deterministic batches); returns their answers in order. `dropped` requests have their
/// receiver dropped at once (their searches were cancelled).
async fn send_together(
    cluster: &TestCluster,
    link: &actix::Addr<NodeLink>,
    requests: Vec<(proto::SearchInFilesParam, bool)>,
    dropped: &[usize],
) -> Vec<Option<LinkAnswer>> {
    let mut receivers = Vec::new();
    let mut messages = Vec::new();
    for (i, (request, alone)) in requests.into_iter().enumerate() {
        let (reply, answer) = oneshot::channel();
        messages.push(SearchFiles {
            request: tonic::Request::new(request),
            deadline: Instant::now() + Duration::from_secs(10),
            alone,
            reply,
        });
        receivers.push((!dropped.contains(&i)).then_some(answer));
    }
    let link = link.clone();
    let (sent, all_sent) = oneshot::channel();
    cluster.gateway.actors.home.spawn(async move {
        for m in messages {
            link.do_send(m);
        }
        let _ = sent.send(());
    });
    all_sent.await.expect("sent on the actors' thread");
    let mut answers = Vec::new();
    for r in receivers {
        answers.push(match r {
            Some(r) => Some(
                tokio::time::timeout(Duration::from_secs(20), r)
                    .await
                    .expect("answered in time")
                    .expect("answered"),
            ),
            None => None,
        });
    }
    answers
}

fn answer(a: &Option<LinkAnswer>) -> &proto::TopKQueryResult {
    a.as_ref()
        .expect("an answer")
        .result
        .as_ref()
        .expect("a result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_that_reach_a_link_together_share_one_call_and_get_their_own_answers() {
    let mut rng = SplitMix64::new(5);
    let (cluster, link, data, files) = loaded(&[], 2, &mut rng).await;
    let queries = rng.vectors(8, DIM);

    // Each alone: eight calls.
    let before = link_stats(&link).await;
    let alone = send_together(&cluster, &link, one_each(&files, &queries, true), &[]).await;
    let after_alone = link_stats(&link).await;
    assert_eq!(after_alone.search_calls - before.search_calls, 8);
    assert_eq!(after_alone.batched_searches, before.batched_searches);
    assert_alone_and_exact(&alone, &data, &queries);

    // Together, with one of another topk among them: one call for the eight, one for the other.
    let mut together = one_each(&files, &queries, false);
    together.insert(3, (request(&files, &queries[0], 5), false));
    let mut batched = send_together(&cluster, &link, together, &[]).await;
    let after = link_stats(&link).await;
    assert_eq!(after.search_calls - after_alone.search_calls, 2);
    assert_eq!(after.batched_searches - after_alone.batched_searches, 8);
    assert_eq!(after.in_flight, 0);
    let other = batched.remove(3);
    assert_eq!(other.as_ref().map(|a| a.batch), Some(1));
    assert_exact(answer(&other), &data, &queries[..1], 5);
    for (b, a) in batched.iter().zip(&alone) {
        assert_eq!(b.as_ref().map(|b| b.batch), Some(8));
        // Bit for bit what the search got alone.
        assert_eq!(answer(b), answer(a));
    }

    // Searches cancelled before the call answers: the rest are answered, the link counts them.
    let batched = send_together(&cluster, &link, one_each(&files, &queries, false), &[1, 6]).await;
    let last = link_stats(&link).await;
    assert_eq!(last.search_calls - after.search_calls, 1);
    assert_eq!(last.cancelled - after.cancelled, 2);
    assert_eq!(last.in_flight, 0);
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        if i == 1 || i == 6 {
            assert!(b.is_none());
        } else {
            assert_eq!(answer(b), answer(a), "search {i}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_error_reaches_every_search_of_the_batch() {
    let mut rng = SplitMix64::new(6);
    let (cluster, link, _, _) = loaded(&[], 1, &mut rng).await;
    // A file id no node knows: the node answers FILE_NOT_FOUND for the whole call.
    let files = vec!["999999".to_string()];
    let queries = rng.vectors(4, DIM);
    let before = link_stats(&link).await;
    let answers = send_together(&cluster, &link, one_each(&files, &queries, false), &[]).await;
    assert_eq!(
        link_stats(&link).await.search_calls - before.search_calls,
        1
    );
    for a in &answers {
        assert_eq!(a.as_ref().map(|a| a.batch), Some(4));
        assert_eq!(
            code(&answer(a).status),
            proto::ErrorCode::FileNotFound as i32,
            "{:?}",
            answer(a).status
        );
    }
    cluster.shutdown().await;
}

/// Many clients at once through the gateway: whatever batches form, every search gets the exact
/// answer; the run is bounded in count (rounds × clients) and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_through_the_gateway_each_get_the_exact_answer() {
    let mut rng = SplitMix64::new(7);
    let (cluster, link, data, _) = loaded(&[], 2, &mut rng).await;
    let data = std::sync::Arc::new(data);
    let until = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while rounds < 20 && Instant::now() < until {
        rounds += 1;
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let queries = rng.vectors(1 + rounds % 3, DIM);
            let addr = cluster.gateway.addr;
            let data = data.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = common::client(addr).await;
                search_exact(&mut c, "batched", &data, &queries, 10).await;
            }));
        }
        for t in tasks {
            t.await.expect("search task");
        }
        if rounds >= 3 && link_stats(&link).await.batched_searches > 0 {
            break;
        }
    }
    // 32 clients at once over a few rounds: some searches reach the link together.
    let stats = link_stats(&link).await;
    assert!(stats.batched_searches > 0, "{stats:?}");
    assert!(stats.search_calls < stats.requests, "{stats:?}");
    cluster.shutdown().await;
}

/// With `search_batch = 1` every search is a call of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_batch_one_turns_batching_off() {
    let mut rng = SplitMix64::new(8);
    let (cluster, link, data, files) = loaded(&[("search-batch", "1".into())], 1, &mut rng).await;
    let queries = rng.vectors(6, DIM);
    let before = link_stats(&link).await;
    let answers = send_together(&cluster, &link, one_each(&files, &queries, false), &[]).await;
    let after = link_stats(&link).await;
    assert_eq!(after.search_calls - before.search_calls, 6);
    assert_eq!(after.batched_searches, 0);
    assert_alone_and_exact(&answers, &data, &queries);
    cluster.shutdown().await;
}
