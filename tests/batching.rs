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
async fn a_node_error_about_the_shared_files_reaches_every_search_of_the_batch() {
    let mut rng = SplitMix64::new(6);
    let (cluster, link, _, _) = loaded(&[], 1, &mut rng).await;
    // A file id no node knows: the node answers FILE_NOT_FOUND for the whole call, which each search
    // would get alone too, so it is every search's answer, in one call.
    let files = vec!["999999".to_string()];
    let queries = rng.vectors(4, DIM);
    let before = link_stats(&link).await;
    let answers = send_together(&cluster, &link, one_each(&files, &queries, false), &[]).await;
    let after = link_stats(&link).await;
    assert_eq!(after.search_calls - before.search_calls, 1);
    assert_eq!(after.refused_batches, before.refused_batches);
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

/// The query of search `i` made malformed as a careless client would: rows of the other kind, the
/// wrong dimension, no rows, NaN or an infinity. With the Milvus code each must get.
fn malformed(i: usize, query: &[f32]) -> (Vec<proto::RowRecord>, proto::ErrorCode) {
    let row = |float_data: Vec<f32>, binary_data: Vec<u8>| proto::RowRecord {
        float_data,
        binary_data,
    };
    match i % 6 {
        0 => (
            vec![row(Vec::new(), vec![0xA5; DIM / 8])],
            proto::ErrorCode::IllegalRowrecord,
        ),
        1 => (
            vec![row(query.to_vec(), vec![1])],
            proto::ErrorCode::IllegalRowrecord,
        ),
        2 => (
            vec![row(query[..DIM - 1].to_vec(), Vec::new())],
            proto::ErrorCode::IllegalDimension,
        ),
        3 => (Vec::new(), proto::ErrorCode::IllegalRowrecord),
        4 => {
            let mut nan = query.to_vec();
            nan[3] = f32::NAN;
            (
                vec![row(query.to_vec(), Vec::new()), row(nan, Vec::new())],
                proto::ErrorCode::IllegalRowrecord,
            )
        }
        _ => {
            let mut inf = query.to_vec();
            inf[0] = f32::NEG_INFINITY;
            (
                vec![row(inf, Vec::new())],
                proto::ErrorCode::IllegalRowrecord,
            )
        }
    }
}

/// Searches the node would refuse, sent to a link together with good ones (as if the gateway had not
/// checked them): the good ones get their exact answers, each bad one its own refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_search_in_a_batch_fails_only_itself() {
    let mut rng = SplitMix64::new(9);
    let (cluster, link, data, files) = loaded(&[], 1, &mut rng).await;
    let queries = rng.vectors(6, DIM);
    // An empty query (kind 3) adds no rows to a batch, so the node cannot refuse it there: the gateway
    // refuses it before batching (the next test).
    for bad in [0, 1, 2, 4, 5] {
        let mut requests = one_each(&files, &queries, false);
        let (rows, expected) = malformed(bad, &queries[bad]);
        requests[bad]
            .0
            .search_param
            .as_mut()
            .expect("param")
            .query_record_array = rows;
        let before = link_stats(&link).await;
        let answers = send_together(&cluster, &link, requests, &[]).await;
        let after = link_stats(&link).await;
        // One refused call, then one call per search.
        assert_eq!(
            after.search_calls - before.search_calls,
            1 + 6,
            "malformed kind {bad}"
        );
        assert_eq!(after.in_flight, 0);
        assert_eq!(
            after.refused_batches - before.refused_batches,
            1,
            "malformed kind {bad}"
        );
        for (i, a) in answers.iter().enumerate() {
            if i == bad {
                // The node's own answer to it alone.
                assert_eq!(a.as_ref().map(|a| a.batch), Some(1));
                assert_eq!(
                    code(&answer(a).status),
                    expected as i32,
                    "kind {bad}: {:?}",
                    answer(a).status
                );
            } else {
                assert_exact(answer(a), &data, std::slice::from_ref(&queries[i]), 10);
            }
        }
    }
    cluster.shutdown().await;
}

/// Through the gateway: six clients search normally while a seventh sends every kind of malformed
/// search. Each malformed one is refused with its code before batching; no good search fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_searches_beside_good_ones_fail_no_good_search() {
    let mut rng = SplitMix64::new(10);
    let (cluster, _link, data, _) = loaded(&[], 2, &mut rng).await;
    let data = std::sync::Arc::new(data);
    let addr = cluster.gateway.addr;
    let mut good = Vec::new();
    for client in 0..6 {
        let data = data.clone();
        let queries = SplitMix64::new(100 + client).vectors(40, DIM);
        good.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            let mut failed = 0;
            for q in &queries {
                let result = common::search(&mut c, "batched", std::slice::from_ref(q), 10).await;
                if code(&result.status) != 0 {
                    failed += 1;
                } else {
                    assert_exact(&result, &data, std::slice::from_ref(q), 10);
                }
            }
            failed
        }));
    }
    let bad_queries = rng.vectors(60, DIM);
    let bad = tokio::spawn(async move {
        let mut c = common::client(addr).await;
        for (i, q) in bad_queries.iter().enumerate() {
            let (rows, expected) = malformed(i, q);
            let param = proto::SearchParam {
                query_record_array: rows,
                ..search_param("batched", &[], 10)
            };
            let result = common::send_search(&mut c, param).await;
            assert_eq!(
                code(&result.status),
                expected as i32,
                "kind {}: {:?}",
                i % 6,
                result.status
            );
        }
    });
    bad.await.expect("malformed searches");
    let mut failed = 0;
    for g in good {
        failed += g.await.expect("good searches");
    }
    assert_eq!(failed, 0, "good searches failed");
    cluster.shutdown().await;
}

/// NaN or an infinity in a query: the gateway and the node refuse it alike (code and message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_queries_get_one_answer_from_gateway_and_node() {
    let mut rng = SplitMix64::new(11);
    let (cluster, _link, _, files) = loaded(&[], 1, &mut rng).await;
    let mut query = rng.vectors(1, DIM).remove(0);
    query[5] = f32::INFINITY;
    let param = search_param("batched", &[rng.vectors(1, DIM).remove(0), query], 10);
    let mut gateway = cluster.client().await;
    let from_gateway = common::send_search(&mut gateway, param.clone())
        .await
        .status;
    let reader = cluster.readers[0].as_ref().expect("read node").addr;
    let mut node = common::client(reader).await;
    let from_node = node
        .search_in_files(proto::SearchInFilesParam {
            file_id_array: files.clone(),
            search_param: Some(param.clone()),
        })
        .await
        .expect("search in files")
        .into_inner()
        .status;
    let mut writer = common::client(cluster.writer.as_ref().expect("write node").addr).await;
    let from_writer = common::send_search(&mut writer, param).await.status;
    assert_eq!(
        code(&from_gateway),
        proto::ErrorCode::IllegalRowrecord as i32
    );
    assert!(
        from_gateway.as_ref().is_some_and(|s| s
            .reason
            .contains("query vector 1 contains NaN or an infinite value")),
        "{from_gateway:?}"
    );
    assert_eq!(from_node, from_gateway);
    assert_eq!(from_writer, from_gateway);
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
