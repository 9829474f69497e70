//! Request inspection: what one search did, as a manifest the scatter-gather actor builds while it
//! works (trace id, collection, snapshot epoch, per node its files, attempts, outcomes and timings).

use serde::Serialize;

use mishards_config::NodeAddr;

/// Why a node was asked for a set of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptWhy {
    /// Round 0: the files' owner.
    First,
    /// A later round, to a node this search already asked (it is the next node for other files).
    Retry,
    /// A later round, to a node this search had not asked: the files' next fallback.
    Fallback,
    /// The same round, to the files' next node, because the attempt on their node ran past its
    /// expected latency; whichever complete answer comes first is used.
    Hedge,
}

impl AttemptWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptWhy::First => "first",
            AttemptWhy::Retry => "retry",
            AttemptWhy::Fallback => "fallback",
            AttemptWhy::Hedge => "hedge",
        }
    }
}

/// One ReloadSegments + SearchInFiles sent to one node.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptManifest {
    /// 0 for the first round; each retry round adds one.
    pub round: u32,
    pub why: AttemptWhy,
    /// `TableFiles.id` of the files asked for.
    pub files: Vec<i64>,
    /// Files reloaded first (their delete marks changed since this node last searched them).
    pub reloaded: Vec<i64>,
    /// Milliseconds from the start of the request to the start of this attempt.
    pub started_ms: f64,
    pub latency_ms: f64,
    /// `ok` (its answer is in the result), `failed` (its files went on to other nodes), `refused` (a
    /// client error ends the search), `cancelled` (dropped unanswered: a hedge or the hedged attempt
    /// answered first) or `unused` (answered, but the other side of a hedge had answered for its files).
    pub outcome: &'static str,
    /// Why it failed or was refused; empty when ok.
    pub reason: String,
    /// How many searches the node call carried: concurrent searches of the same shape share one
    /// (node_link.rs, batch.rs); 1 when it went alone.
    pub batch: usize,
}

fn serde_display<S: serde::Serializer>(value: &NodeAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// All attempts one search made on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeManifest {
    #[serde(serialize_with = "serde_display")]
    pub node: NodeAddr,
    pub attempts: Vec<AttemptManifest>,
}

/// What one search did, end to end.
#[derive(Debug, Clone, Serialize)]
pub struct SearchManifest {
    /// The W3C trace id (32 hex digits) of the request; the same id Jaeger shows when tracing is on.
    pub trace_id: String,
    pub rpc: &'static str,
    pub collection: String,
    pub partition_tags: Vec<String>,
    pub nq: usize,
    pub topk: i64,
    /// Metadata snapshot the plan came from (0 when the search never got a plan).
    pub epoch: u64,
    pub stale_snapshot: bool,
    /// Wall clock at the start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub total_ms: f64,
    pub plan_ms: f64,
    pub merge_ms: f64,
    /// Milvus status code of the reply (0 = success) and its reason.
    pub code: i32,
    pub reason: String,
    /// Files in the plan.
    pub files: usize,
    pub nodes: Vec<NodeManifest>,
}

/// Keeps the manifest of a finished search (ScatterGather's caller → Inspector).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Record(pub SearchManifest);

/// The newest manifests first, at most `limit` (Inspector → admin listener).
#[derive(actix::Message)]
#[rtype(result = "Vec<SearchManifest>")]
pub struct Recent {
    pub limit: usize,
}

/// The newest slow manifests first, at most `limit`.
#[derive(actix::Message)]
#[rtype(result = "Vec<SearchManifest>")]
pub struct Slow {
    pub limit: usize,
}

/// The manifest of the search with this trace id, if it is still kept (recent or slow).
#[derive(actix::Message)]
#[rtype(result = "Option<SearchManifest>")]
pub struct Find(pub String);

#[derive(actix::Message)]
#[rtype(result = "InspectorStats")]
pub struct GetInspectorStats;

#[derive(Debug, Clone, Default, Serialize)]
pub struct InspectorStats {
    /// Manifests recorded since the start.
    pub recorded: u64,
    /// Of those, how many were slow.
    pub slow: u64,
    pub kept: usize,
    pub kept_slow: usize,
    /// Capacity of each ring.
    pub keep: usize,
    pub slow_query_ms: u64,
}

/// Keeps the last `keep` search manifests and, apart, the last `keep` slow ones, so a burst of fast
/// searches does not push the slow ones out. Memory is bounded by the two rings; a manifest in both is
/// stored once.
pub struct Inspector {
    keep: usize,
    slow_after: std::time::Duration,
    recent: std::collections::VecDeque<std::sync::Arc<SearchManifest>>,
    slow: std::collections::VecDeque<std::sync::Arc<SearchManifest>>,
    recorded: u64,
    slow_count: u64,
}

impl Inspector {
    /// `keep` is at least 1; searches taking at least `slow_after` are slow.
    pub fn new(keep: usize, slow_after: std::time::Duration) -> Self {
        let keep = keep.max(1);
        Inspector {
            keep,
            slow_after,
            recent: std::collections::VecDeque::with_capacity(keep.min(1024)),
            slow: std::collections::VecDeque::new(),
            recorded: 0,
            slow_count: 0,
        }
    }

    fn is_slow(&self, m: &SearchManifest) -> bool {
        m.total_ms >= self.slow_after.as_secs_f64() * 1000.0
    }

    fn record(&mut self, manifest: SearchManifest) {
        self.recorded += 1;
        let slow = self.is_slow(&manifest);
        let manifest = std::sync::Arc::new(manifest);
        if slow {
            self.slow_count += 1;
            // The slow-query log.
            tracing::warn!(
                trace_id = %manifest.trace_id,
                collection = %manifest.collection,
                total_ms = manifest.total_ms,
                code = manifest.code,
                nodes = manifest.nodes.len(),
                files = manifest.files,
                "slow search"
            );
            push_bounded(&mut self.slow, manifest.clone(), self.keep);
        }
        push_bounded(&mut self.recent, manifest, self.keep);
    }

    fn find(&self, trace_id: &str) -> Option<SearchManifest> {
        self.recent
            .iter()
            .rev()
            .chain(self.slow.iter().rev())
            .find(|m| m.trace_id.eq_ignore_ascii_case(trace_id))
            .map(|m| SearchManifest::clone(m))
    }

    fn stats(&self) -> InspectorStats {
        InspectorStats {
            recorded: self.recorded,
            slow: self.slow_count,
            kept: self.recent.len(),
            kept_slow: self.slow.len(),
            keep: self.keep,
            slow_query_ms: self.slow_after.as_millis().min(u64::MAX as u128) as u64,
        }
    }
}

fn push_bounded<T>(ring: &mut std::collections::VecDeque<T>, item: T, keep: usize) {
    while ring.len() >= keep {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn newest(
    ring: &std::collections::VecDeque<std::sync::Arc<SearchManifest>>,
    limit: usize,
) -> Vec<SearchManifest> {
    ring.iter()
        .rev()
        .take(limit)
        .map(|m| SearchManifest::clone(m))
        .collect()
}

impl actix::Actor for Inspector {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every search sends a Record.
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
    }
}

impl actix::Handler<Record> for Inspector {
    type Result = ();
    fn handle(&mut self, Record(manifest): Record, _: &mut Self::Context) {
        self.record(manifest);
    }
}

impl actix::Handler<Recent> for Inspector {
    type Result = actix::MessageResult<Recent>;
    fn handle(&mut self, r: Recent, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(newest(&self.recent, r.limit))
    }
}

impl actix::Handler<Slow> for Inspector {
    type Result = actix::MessageResult<Slow>;
    fn handle(&mut self, r: Slow, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(newest(&self.slow, r.limit))
    }
}

impl actix::Handler<Find> for Inspector {
    type Result = Option<SearchManifest>;
    fn handle(&mut self, Find(trace_id): Find, _: &mut Self::Context) -> Self::Result {
        self.find(&trace_id)
    }
}

impl actix::Handler<GetInspectorStats> for Inspector {
    type Result = actix::MessageResult<GetInspectorStats>;
    fn handle(&mut self, _: GetInspectorStats, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.stats())
    }
}

/// True for a W3C trace id: 32 hex digits.
pub fn is_trace_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A manifest as `mishards inspect` prints it: the request on one line, then its plan, each node with
/// its attempts, and the merge, as a tree. Reads the admin listener's JSON, so fields a newer or older
/// gateway lacks print as empty rather than failing.
pub fn render_tree(m: &serde_json::Value) -> String {
    use std::fmt::Write;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let ms = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let ids = |v: &serde_json::Value| {
        let ids: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(|id| id.to_string()).collect())
            .unwrap_or_default();
        format!("[{}]", ids.join(", "))
    };
    let mut out = String::new();
    let code = m["code"].as_i64().unwrap_or(-1);
    let _ = write!(
        out,
        "{}  collection={} nq={} topk={}",
        m["rpc"].as_str().unwrap_or("Search"),
        text(&m["collection"]),
        m["nq"].as_u64().unwrap_or(0),
        m["topk"].as_i64().unwrap_or(0),
    );
    let tags: Vec<String> = m["partition_tags"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if !tags.is_empty() {
        let _ = write!(out, " partitions=[{}]", tags.join(", "));
    }
    let _ = write!(
        out,
        "  code={code}  {:.1} ms  epoch {}{}  trace {}",
        ms(&m["total_ms"]),
        m["epoch"].as_u64().unwrap_or(0),
        if m["stale_snapshot"].as_bool() == Some(true) {
            " (stale)"
        } else {
            ""
        },
        text(&m["trace_id"]),
    );
    out.push('\n');

    // Each child of the root is a head line with its own lines below it.
    let mut children: Vec<(String, Vec<String>)> = Vec::new();
    children.push((
        format!(
            "plan {:.1} ms, {}",
            ms(&m["plan_ms"]),
            files_count(m["files"].as_u64().unwrap_or(0) as usize)
        ),
        Vec::new(),
    ));
    let no_nodes = Vec::new();
    for node in m["nodes"].as_array().unwrap_or(&no_nodes) {
        let attempts = node["attempts"].as_array().unwrap_or(&no_nodes);
        let mut files: Vec<i64> = attempts
            .iter()
            .flat_map(|a| a["files"].as_array().into_iter().flatten())
            .filter_map(|f| f.as_i64())
            .collect();
        files.sort_unstable();
        files.dedup();
        let lines = attempts
            .iter()
            .map(|a| {
                let mut line = format!(
                    "#{} {:<8} {:<7} {:.1} ms  files {}",
                    a["round"].as_u64().unwrap_or(0),
                    text(&a["why"]),
                    text(&a["outcome"]),
                    ms(&a["latency_ms"]),
                    ids(&a["files"]),
                );
                if a["reloaded"].as_array().is_some_and(|r| !r.is_empty()) {
                    let _ = write!(line, "  reloaded {}", ids(&a["reloaded"]));
                }
                let reason = text(&a["reason"]);
                if !reason.is_empty() {
                    let _ = write!(line, "  {reason}");
                }
                line
            })
            .collect();
        children.push((
            format!("{}  {}", text(&node["node"]), files_count(files.len())),
            lines,
        ));
    }
    children.push((format!("merge {:.1} ms", ms(&m["merge_ms"])), Vec::new()));
    let reason = text(&m["reason"]);
    if code != 0 && !reason.is_empty() {
        children.push((format!("error: {reason}"), Vec::new()));
    }
    let last = children.len() - 1;
    for (i, (head, lines)) in children.iter().enumerate() {
        let (branch, indent) = if i == last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        let _ = writeln!(out, "{branch} {head}");
        for (j, line) in lines.iter().enumerate() {
            let twig = if j + 1 == lines.len() {
                "└─"
            } else {
                "├─"
            };
            let _ = writeln!(out, "{indent}{twig} {line}");
        }
    }
    out
}

fn files_count(n: usize) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::prelude::*;

    use super::*;

    fn manifest(trace: u32, total_ms: f64) -> SearchManifest {
        SearchManifest {
            trace_id: format!("{trace:032x}"),
            rpc: "Search",
            collection: "foo".into(),
            partition_tags: Vec::new(),
            nq: 1,
            topk: 10,
            epoch: 42,
            stale_snapshot: false,
            started_unix_ms: 0,
            total_ms,
            plan_ms: 0.2,
            merge_ms: 0.1,
            code: 0,
            reason: String::new(),
            files: 0,
            nodes: Vec::new(),
        }
    }

    fn traces(ms: &[SearchManifest]) -> Vec<String> {
        ms.iter().map(|m| m.trace_id[28..].to_string()).collect()
    }

    #[test]
    fn rings_are_bounded_newest_first_and_slow_ones_kept_apart() {
        let mut inspector = Inspector::new(3, Duration::from_millis(100));
        inspector.record(manifest(1, 500.0));
        for t in 2..=10 {
            inspector.record(manifest(t, 1.0));
        }
        inspector.record(manifest(11, 100.0));
        // Recent: the last three, newest first; the slow one from the start is still kept apart.
        assert_eq!(
            traces(&newest(&inspector.recent, 10)),
            ["000b", "000a", "0009"]
        );
        assert_eq!(traces(&newest(&inspector.recent, 2)), ["000b", "000a"]);
        assert_eq!(traces(&newest(&inspector.slow, 10)), ["000b", "0001"]);
        assert!(inspector.find(&format!("{:032x}", 1)).is_some());
        assert!(inspector.find(&format!("{:032x}", 9)).is_some());
        assert!(inspector.find(&format!("{:032x}", 5)).is_none());
        let stats = inspector.stats();
        assert_eq!(
            (stats.recorded, stats.slow, stats.kept, stats.kept_slow),
            (11, 2, 3, 2)
        );
        for t in 12..=20 {
            inspector.record(manifest(t, 1000.0));
        }
        assert_eq!(inspector.slow.len(), 3);
        assert_eq!(inspector.recent.len(), 3);
    }

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn slow_searches_make_the_slow_query_log() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut inspector = Inspector::new(2, Duration::from_millis(100));
            inspector.record(manifest(1, 5.0));
            inspector.record(manifest(2, 150.0));
        });
        let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert_eq!(log.matches("slow search").count(), 1, "{log}");
        let line = log.lines().find(|l| l.contains("slow search")).unwrap();
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&format!("trace_id={:032x}", 2)), "{line}");
        assert!(line.contains("collection=foo"), "{line}");
        assert!(line.contains("total_ms=150"), "{line}");
    }

    #[test]
    fn trace_ids_are_32_hex_digits() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473g"));
        assert!(!is_trace_id(""));
    }

    #[actix::test]
    async fn the_actor_answers_each_message() {
        let inspector = Inspector::new(4, Duration::from_millis(10)).start();
        inspector.do_send(Record(manifest(1, 50.0)));
        inspector.do_send(Record(manifest(2, 1.0)));
        let recent = inspector.send(Recent { limit: 10 }).await.unwrap();
        assert_eq!(traces(&recent), ["0002", "0001"]);
        let slow = inspector.send(Slow { limit: 10 }).await.unwrap();
        assert_eq!(traces(&slow), ["0001"]);
        let found = inspector.send(Find(format!("{:032X}", 2))).await.unwrap();
        assert_eq!(found.map(|m| m.total_ms), Some(1.0));
        assert!(
            inspector
                .send(Find("0".repeat(32)))
                .await
                .unwrap()
                .is_none()
        );
        let stats = inspector.send(GetInspectorStats).await.unwrap();
        assert_eq!(
            (stats.recorded, stats.slow, stats.keep, stats.slow_query_ms),
            (2, 1, 4, 10)
        );
    }

    #[test]
    fn the_tree_shows_plan_nodes_attempts_and_merge() {
        let mut m = manifest(0x4736, 12.34);
        m.files = 6;
        m.nodes = vec![
            NodeManifest {
                node: NodeAddr::loopback(19531),
                attempts: vec![AttemptManifest {
                    round: 0,
                    why: AttemptWhy::First,
                    files: vec![1, 4, 6],
                    reloaded: Vec::new(),
                    started_ms: 0.3,
                    latency_ms: 3.12,
                    outcome: "ok",
                    reason: String::new(),
                    batch: 1,
                }],
            },
            NodeManifest {
                node: NodeAddr::loopback(19532),
                attempts: vec![
                    AttemptManifest {
                        round: 0,
                        why: AttemptWhy::First,
                        files: vec![2, 3, 5],
                        reloaded: vec![3],
                        started_ms: 0.3,
                        latency_ms: 10000.0,
                        outcome: "failed",
                        reason: "no answer within 10s".into(),
                        batch: 1,
                    },
                    AttemptManifest {
                        round: 1,
                        why: AttemptWhy::Retry,
                        files: vec![2],
                        reloaded: Vec::new(),
                        started_ms: 10000.5,
                        latency_ms: 2.0,
                        outcome: "ok",
                        reason: String::new(),
                        batch: 1,
                    },
                ],
            },
        ];
        let tree = render_tree(&serde_json::to_value(&m).unwrap());
        let expected = "\
Search  collection=foo nq=1 topk=10  code=0  12.3 ms  epoch 42  trace 00000000000000000000000000004736
├─ plan 0.2 ms, 6 files
├─ 127.0.0.1:19531  3 files
│  └─ #0 first    ok      3.1 ms  files [1, 4, 6]
├─ 127.0.0.1:19532  3 files
│  ├─ #0 first    failed  10000.0 ms  files [2, 3, 5]  reloaded [3]  no answer within 10s
│  └─ #1 retry    ok      2.0 ms  files [2]
└─ merge 0.1 ms
";
        assert_eq!(tree, expected, "\n{tree}");
        // A failed search names its reason; an unknown field layout still renders.
        m.code = 1;
        m.reason = "files [2] got no answer".into();
        m.stale_snapshot = true;
        let tree = render_tree(&serde_json::to_value(&m).unwrap());
        assert!(
            tree.contains("code=1") && tree.contains("epoch 42 (stale)"),
            "{tree}"
        );
        assert!(
            tree.ends_with("└─ error: files [2] got no answer\n"),
            "{tree}"
        );
        let empty = render_tree(&serde_json::json!({}));
        assert!(empty.starts_with("Search  collection= nq=0"), "{empty}");
        assert!(empty.contains("├─ plan 0.0 ms, 0 files"), "{empty}");
    }
}
