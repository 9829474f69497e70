//! The race of one attempt: the original call to a node and, when it ran past its hedge delay, the
//! hedges of its files to their next nodes (scatter.rs starts them). The original answers for all its
//! files, each hedge for a share, so whichever side wins answers each file once; the calls of the losing
//! side still running are dropped, which cancels them (tonic resets their HTTP/2 streams).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use tracing::Span;

use super::inspect::AttemptManifest;
use mishards_config::NodeAddr;
use mishards_proto::{self as proto, ErrorCode};

/// A duration in milliseconds, as manifests keep them.
pub(super) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What one call to a node came to.
pub(super) enum Attempt {
    /// The node's answer, and how many searches its call carried (1: alone).
    Answered(proto::TopKQueryResult, usize),
    /// The node did not answer usefully; its files go to their fallbacks.
    Failed(String),
    /// The node answered with a client error (bad dimension, bad tag…): the search itself is wrong.
    Refused(proto::Status),
}

impl From<Result<proto::TopKQueryResult, String>> for Attempt {
    /// A node's answer (or why there is none) as an attempt: its own trouble fails the attempt, a
    /// client error refuses the search.
    fn from(answer: Result<proto::TopKQueryResult, String>) -> Attempt {
        let result = match answer {
            Err(reason) => return Attempt::Failed(reason),
            Ok(result) => result,
        };
        match result.status.as_ref().map_or(0, |s| s.error_code) {
            0 => Attempt::Answered(result, 1),
            code if node_trouble(code) => Attempt::Failed(format!(
                "answered {code}: {}",
                result
                    .status
                    .as_ref()
                    .map(|s| s.reason.as_str())
                    .unwrap_or_default()
            )),
            _ => Attempt::Refused(result.status.unwrap_or_default()),
        }
    }
}

impl Attempt {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Attempt::Answered(..) => "answered",
            Attempt::Failed(_) => "failed",
            Attempt::Refused(_) => "refused",
        }
    }
}

/// Status codes a node may answer that another node might not (its own trouble, not the request's).
/// COLLECTION_NOT_EXISTS is one: the plan came from a snapshot that has the collection, so a node
/// that does not know it reads other metadata or lags behind.
fn node_trouble(code: i32) -> bool {
    [
        ErrorCode::CollectionNotExists,
        ErrorCode::UnexpectedError,
        ErrorCode::FileNotFound,
        ErrorCode::CacheFailed,
        ErrorCode::OutOfMemory,
        ErrorCode::MetaFailed,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

/// What one node's attempt in a round came to, with the hedges of it if there were any.
#[derive(Default)]
pub(super) struct NodeOutcome {
    /// Every call made, for the manifest.
    pub(super) records: Vec<(NodeAddr, AttemptManifest)>,
    /// The answers to merge; together they answer for each of their files once.
    pub(super) answers: Vec<proto::TopKQueryResult>,
    /// Calls that failed, and why.
    pub(super) failures: Vec<(NodeAddr, String)>,
    /// Files no answer covered, each with the nodes that failed it in this round.
    pub(super) unanswered: Vec<(usize, Vec<NodeAddr>)>,
    /// A client error: it ends the search.
    pub(super) refused: Option<proto::Status>,
}

/// One call to one node. Its manifest record and span live outside the call, so a call dropped
/// unanswered is still recorded.
pub(super) struct Call<'a> {
    node: NodeAddr,
    /// Indexes into the plan's files.
    files: Vec<usize>,
    span: Span,
    record: AttemptManifest,
    started: Instant,
    future: LocalBoxFuture<'a, Attempt>,
    result: Option<Attempt>,
    /// How long it took to answer.
    took: Option<Duration>,
}

impl<'a> Call<'a> {
    /// A call of `files` to `node`, started at `started`, answered by `future`.
    pub(super) fn new(
        node: NodeAddr,
        files: Vec<usize>,
        span: Span,
        record: AttemptManifest,
        started: Instant,
        future: LocalBoxFuture<'a, Attempt>,
    ) -> Call<'a> {
        Call {
            node,
            files,
            span,
            record,
            started,
            future,
            result: None,
            took: None,
        }
    }

    /// Polls the call unless it is done; true once it is.
    fn poll_done(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.result.is_none()
            && let Poll::Ready(attempt) = self.future.as_mut().poll(cx)
        {
            self.result = Some(attempt);
            self.took = Some(self.started.elapsed());
        }
        self.result.is_some()
    }

    pub(super) async fn wait(&mut self) {
        poll_fn(|cx| {
            if self.poll_done(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Ends the call — one still running is dropped, which cancels it — and completes its record:
    /// `used` says whether its answer goes into the result.
    fn close(self, used: bool) -> (NodeAddr, AttemptManifest, Option<Attempt>) {
        let Call {
            node,
            span,
            mut record,
            started,
            future,
            result,
            took,
            ..
        } = self;
        drop(future);
        record.latency_ms = millis(took.unwrap_or_else(|| started.elapsed()));
        if let Some(Attempt::Answered(_, batch)) = &result {
            record.batch = *batch;
        }
        (record.outcome, record.reason) = match &result {
            None => ("cancelled", String::new()),
            Some(Attempt::Answered(..)) if used => ("ok", String::new()),
            Some(Attempt::Answered(..)) => ("unused", String::new()),
            Some(Attempt::Failed(reason)) => ("failed", reason.clone()),
            Some(Attempt::Refused(status)) => ("refused", status.reason.clone()),
        };
        span.record("latency_ms", record.latency_ms);
        span.record("outcome", record.outcome);
        if !record.reason.is_empty() {
            span.record("reason", record.reason.as_str());
            span.record("otel.status_code", "ERROR");
        }
        (node, record, result)
    }
}

/// Who answers for an attempt's files.
#[derive(Debug, PartialEq)]
pub(super) enum Winner {
    /// The original call answered: hedges still running are dropped, answered ones unused.
    Original,
    /// Every hedge answered: the original, if still running, is dropped.
    Hedges,
    /// The original failed and every hedge is done, not all answered: answered hedges count, the
    /// files of failed ones go on to their next nodes (all the files when there was no hedge).
    Neither,
    /// A node refused the request itself: the search ends with its status.
    Refused(proto::Status),
}

/// Who answers, once that is settled (`None`: wait for more calls).
pub(super) fn decide(original: &Call<'_>, hedges: &[Call<'_>]) -> Option<Winner> {
    match &original.result {
        Some(Attempt::Answered(..)) => return Some(Winner::Original),
        Some(Attempt::Refused(status)) => return Some(Winner::Refused(status.clone())),
        _ => {}
    }
    if let Some(status) = hedges.iter().find_map(|h| match &h.result {
        Some(Attempt::Refused(status)) => Some(status.clone()),
        _ => None,
    }) {
        return Some(Winner::Refused(status));
    }
    let answered = |h: &Call<'_>| matches!(h.result, Some(Attempt::Answered(..)));
    if !hedges.is_empty() && hedges.iter().all(answered) {
        return Some(Winner::Hedges);
    }
    (original.result.is_some() && hedges.iter().all(|h| h.result.is_some()))
        .then_some(Winner::Neither)
}

/// Runs the original and its hedges together until `decide` settles who answers.
pub(super) async fn race(original: &mut Call<'_>, hedges: &mut [Call<'_>]) -> Winner {
    poll_fn(|cx| {
        original.poll_done(cx);
        for hedge in hedges.iter_mut() {
            hedge.poll_done(cx);
        }
        decide(original, hedges).map_or(Poll::Pending, Poll::Ready)
    })
    .await
}

/// Runs the original alone until it answers or `delay` passes; true when the delay passed first (its
/// hedges are due).
pub(super) async fn overdue(original: &mut Call<'_>, delay: Duration) -> bool {
    let mut timer = pin!(tokio::time::sleep(delay));
    poll_fn(|cx| {
        if original.poll_done(cx) {
            Poll::Ready(false)
        } else {
            timer.as_mut().poll(cx).map(|()| true)
        }
    })
    .await
}

/// An attempt without hedges: the original answers for its files, or they all go on.
pub(super) async fn unhedged(mut original: Call<'_>) -> NodeOutcome {
    original.wait().await;
    let winner = decide(&original, &[]).unwrap_or(Winner::Neither);
    settle(winner, original, Vec::new())
}

/// Closes every call of an attempt as `winner` says and gathers what they came to. The hedges split
/// the original's files between them, so whichever side is used answers for each file once.
pub(super) fn settle(winner: Winner, original: Call<'_>, hedges: Vec<Call<'_>>) -> NodeOutcome {
    let mut out = NodeOutcome::default();
    let original_node = original.node.clone();
    let hedged = !hedges.is_empty();
    let calls = std::iter::once((original, false)).chain(hedges.into_iter().map(|h| (h, true)));
    for (call, is_hedge) in calls {
        let used = match winner {
            Winner::Original => !is_hedge,
            Winner::Hedges | Winner::Neither => is_hedge,
            Winner::Refused(_) => false,
        };
        let files = call.files.clone();
        let (node, record, result) = call.close(used);
        match result {
            Some(Attempt::Answered(answer, _)) if used => out.answers.push(answer),
            Some(Attempt::Failed(reason)) => {
                tracing::warn!(%node, files = files.len(), round = record.round, why = record.why.as_str(), %reason, "read node attempt failed");
                // Files go on when no answer covers them: a failed hedge's when the original failed
                // too, the original's when there was no hedge.
                if winner == Winner::Neither && (is_hedge || !hedged) {
                    let failed_on: Vec<NodeAddr> = if is_hedge {
                        vec![original_node.clone(), node.clone()]
                    } else {
                        vec![node.clone()]
                    };
                    out.unanswered
                        .extend(files.into_iter().map(|i| (i, failed_on.clone())));
                }
                out.failures.push((node.clone(), reason));
            }
            _ => {}
        }
        out.records.push((node, record));
    }
    if let Winner::Refused(status) = winner {
        out.refused = Some(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::poll;
    use tokio::sync::oneshot;

    use super::*;
    use crate::inspect::AttemptWhy;
    use mishards_proto::error::success;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::loopback(port)
    }

    /// A call that answers whatever its sender sends (a failure if the sender is dropped).
    fn call(
        port: u16,
        files: Vec<usize>,
        why: AttemptWhy,
    ) -> (Call<'static>, oneshot::Sender<Attempt>) {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            node: node(port),
            record: AttemptManifest {
                round: 0,
                why,
                files: files.iter().map(|i| *i as i64).collect(),
                reloaded: Vec::new(),
                started_ms: 0.0,
                latency_ms: 0.0,
                outcome: "ok",
                reason: String::new(),
                batch: 1,
            },
            files,
            span: Span::none(),
            started: Instant::now(),
            future: Box::pin(async move {
                rx.await
                    .unwrap_or_else(|_| Attempt::Failed("sender dropped".into()))
            }),
            result: None,
            took: None,
        };
        (call, tx)
    }

    fn answer(ids: &[i64]) -> Attempt {
        Attempt::Answered(
            proto::TopKQueryResult {
                status: Some(success()),
                row_num: 1,
                ids: ids.to_vec(),
                distances: vec![0.0; ids.len()],
            },
            1,
        )
    }

    fn outcomes(out: &NodeOutcome) -> Vec<(u16, &'static str)> {
        out.records
            .iter()
            .map(|(n, r)| (n.port, r.outcome))
            .collect()
    }

    fn answered_ids(out: &NodeOutcome) -> Vec<i64> {
        out.answers.iter().flat_map(|a| a.ids.clone()).collect()
    }

    type Hedged = (
        Call<'static>,
        Vec<Call<'static>>,
        Vec<Option<oneshot::Sender<Attempt>>>,
    );

    /// Sends call `i` of `senders` its outcome; false if nobody waits for it any more.
    fn send(senders: &mut [Option<oneshot::Sender<Attempt>>], i: usize, attempt: Attempt) -> bool {
        senders[i].take().is_some_and(|s| s.send(attempt).is_ok())
    }

    /// A slow original of files 0..4, hedged to node 2 (files 0, 1) and node 3 (files 2, 3).
    fn hedged() -> Hedged {
        let (original, o) = call(1, vec![0, 1, 2, 3], AttemptWhy::First);
        let (h2, s2) = call(2, vec![0, 1], AttemptWhy::Hedge);
        let (h3, s3) = call(3, vec![2, 3], AttemptWhy::Hedge);
        (original, vec![h2, h3], vec![Some(o), Some(s2), Some(s3)])
    }

    #[test]
    fn hedges_that_all_answer_win_and_the_original_is_cancelled() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let winner = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                // One of two hedges is not a complete answer.
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 2, answer(&[12, 13])));
                race.await
            };
            assert_eq!(winner, Winner::Hedges);
            let out = settle(winner, original, hedges);
            assert_eq!(outcomes(&out), [(1, "cancelled"), (2, "ok"), (3, "ok")]);
            assert_eq!(answered_ids(&out), [10, 11, 12, 13]);
            assert!(out.unanswered.is_empty() && out.failures.is_empty());
            // The original's call was dropped: nothing waits for its answer any more.
            assert!(!send(&mut senders, 0, answer(&[1])));
        });
    }

    #[test]
    fn an_original_that_answers_first_wins_alone() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let winner = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 0, answer(&[1, 2, 3, 4])));
                race.await
            };
            assert_eq!(winner, Winner::Original);
            let out = settle(winner, original, hedges);
            // The hedge that answered is not merged as well: each file is answered once.
            assert_eq!(outcomes(&out), [(1, "ok"), (2, "unused"), (3, "cancelled")]);
            assert_eq!(answered_ids(&out), [1, 2, 3, 4]);
            assert!(senders[2].as_ref().is_some_and(|s| s.is_closed()));
        });
    }

    #[test]
    fn a_failed_hedge_leaves_the_files_to_the_original() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let winner = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 2, Attempt::Failed("down".into())));
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                // A hedge failed: only the original can still answer for all files.
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 0, answer(&[1, 2, 3, 4])));
                race.await
            };
            assert_eq!(winner, Winner::Original);
            let out = settle(winner, original, hedges);
            assert_eq!(outcomes(&out), [(1, "ok"), (2, "unused"), (3, "failed")]);
            assert_eq!(answered_ids(&out), [1, 2, 3, 4]);
            assert!(out.unanswered.is_empty());
            assert_eq!(out.failures.len(), 1);
        });
    }

    #[test]
    fn when_the_original_fails_the_hedges_answer_for_what_they_can() {
        block_on(async {
            let (mut original, mut hedges, mut senders) = hedged();
            let winner = {
                let mut race = pin!(race(&mut original, &mut hedges));
                assert!(send(&mut senders, 0, Attempt::Failed("reset".into())));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 1, answer(&[10, 11])));
                assert!(poll!(race.as_mut()).is_pending());
                assert!(send(&mut senders, 2, Attempt::Failed("down".into())));
                race.await
            };
            assert_eq!(winner, Winner::Neither);
            let out = settle(winner, original, hedges);
            assert_eq!(outcomes(&out), [(1, "failed"), (2, "ok"), (3, "failed")]);
            assert_eq!(answered_ids(&out), [10, 11]);
            // Node 3's files go on, and not back to a node that just failed them.
            assert_eq!(
                out.unanswered,
                [(2, vec![node(1), node(3)]), (3, vec![node(1), node(3)])]
            );
            assert_eq!(out.failures.len(), 2);

            // The original failing first and both hedges answering: the hedges answer for all.
            let (mut original, mut hedges, mut senders) = hedged();
            for (i, attempt) in [
                Attempt::Failed("reset".into()),
                answer(&[10]),
                answer(&[12]),
            ]
            .into_iter()
            .enumerate()
            {
                assert!(send(&mut senders, i, attempt));
            }
            let winner = race(&mut original, &mut hedges).await;
            assert_eq!(winner, Winner::Hedges);
            let out = settle(winner, original, hedges);
            assert_eq!(outcomes(&out), [(1, "failed"), (2, "ok"), (3, "ok")]);
            assert!(out.unanswered.is_empty());
        });
    }

    #[test]
    fn without_hedges_a_failure_sends_every_file_on_and_a_refusal_ends_the_search() {
        block_on(async {
            let (mut original, o) = call(1, vec![0, 1], AttemptWhy::First);
            assert!(o.send(Attempt::Failed("reset".into())).is_ok());
            original.wait().await;
            let winner = decide(&original, &[]);
            assert_eq!(winner, Some(Winner::Neither));
            let out = settle(Winner::Neither, original, Vec::new());
            assert_eq!(out.unanswered, [(0, vec![node(1)]), (1, vec![node(1)])]);

            let (mut original, mut hedges, mut senders) = hedged();
            let refusal = mishards_proto::error::status(ErrorCode::IllegalDimension, "no");
            assert!(send(&mut senders, 2, Attempt::Refused(refusal.clone())));
            let winner = race(&mut original, &mut hedges).await;
            assert_eq!(winner, Winner::Refused(refusal.clone()));
            let out = settle(winner, original, hedges);
            assert_eq!(out.refused, Some(refusal));
            assert_eq!(
                outcomes(&out),
                [(1, "cancelled"), (2, "cancelled"), (3, "refused")]
            );
            assert!(senders[0].as_ref().is_some_and(|s| s.is_closed()));
        });
    }
}
