//! A stand-in for the Kubernetes API server, enough for pod discovery: `GET
//! /api/v1/namespaces/{ns}/pods` answers a `PodList` with `metadata.resourceVersion`, honouring
//! `labelSelector`; with `watch=1` (or `true`) it answers a chunked stream of newline-delimited
//! `WatchEvent`s (ADDED / MODIFIED / DELETED since `resourceVersion`, then live ones, BOOKMARKs when
//! `allowWatchBookmarks` is set), and for a `resourceVersion` older than its history an ERROR event
//! holding a `410 Gone` Status, as the real server does. Tests change pods, drop every watch
//! mid-stream, forget history (so the next watch gets 410), and stop and restart the server on its port
//! with its pods kept, as an API server restart looks to a client.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// One pod as the tests describe it.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub ip: Option<String>,
    /// Container port named `milvus` (None: no named port).
    pub port: Option<u16>,
    pub phase: &'static str,
    pub ready: bool,
    pub deleting: bool,
}

impl PodSpec {
    /// A Running, Ready pod at `ip:port` with label `tier=tier`.
    pub fn ready(name: &str, tier: &str, ip: &str, port: u16) -> PodSpec {
        PodSpec {
            name: name.into(),
            labels: vec![
                ("tier".into(), tier.into()),
                ("app".into(), "milvus".into()),
            ],
            ip: Some(ip.into()),
            port: Some(port),
            phase: "Running",
            ready: true,
            deleting: false,
        }
    }

    fn to_json(&self, namespace: &str, rv: u64) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut metadata = json!({
            "name": self.name,
            "namespace": namespace,
            "uid": format!("uid-{}", self.name),
            "resourceVersion": rv.to_string(),
            "labels": labels,
        });
        if self.deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let ports: Vec<Value> = self
            .port
            .iter()
            .map(|p| json!({ "name": "milvus", "containerPort": p, "protocol": "TCP" }))
            .chain(std::iter::once(
                json!({ "name": "metrics", "containerPort": 9091, "protocol": "TCP" }),
            ))
            .collect();
        let mut status = json!({
            "phase": self.phase,
            "conditions": [
                { "type": "ContainersReady", "status": "True" },
                { "type": "Ready", "status": if self.ready { "True" } else { "False" } },
            ],
        });
        if let Some(ip) = &self.ip {
            status["podIP"] = json!(ip);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": { "containers": [ { "name": "mishards", "image": "mishards", "ports": ports } ] },
            "status": status,
        })
    }
}

/// A change to one pod: the object before (for a selector it left) and after.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    before: Option<Value>,
    after: Value,
}

/// The server's data, kept across its restarts.
struct Data {
    namespace: String,
    rv: u64,
    pods: BTreeMap<String, Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    lists: u64,
    watches: u64,
    gone_answers: u64,
}

#[derive(Clone)]
struct Shared {
    data: Arc<Mutex<Data>>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch stream.
    drops: Arc<watch::Sender<u64>>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Shared,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Most watch events kept for watches that resume; older resourceVersions get 410.
const HISTORY: usize = 10_000;

impl ApiServer {
    /// Serves namespace `namespace` on 127.0.0.1, port 0.
    pub async fn start(namespace: &str) -> ApiServer {
        let shared = Shared {
            data: Arc::new(Mutex::new(Data {
                namespace: namespace.into(),
                rv: 100,
                pods: BTreeMap::new(),
                history: Vec::new(),
                oldest: 100,
                lists: 0,
                watches: 0,
                gone_answers: 0,
            })),
            changes: broadcast::channel(1024).0,
            drops: Arc::new(watch::channel(0).0),
        };
        let mut server = ApiServer {
            addr: "127.0.0.1:0".parse().expect("address"),
            shared,
            task: None,
        };
        server.serve().await;
        server
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the API server stand-in");
        self.addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods", get(pods))
            .with_state(self.shared.clone());
        // Connections are tasks of this one, so stopping it closes every open watch too.
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = hyper_util::service::TowerToHyperService::new(app.clone());
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }

    /// Stops serving: the port refuses connections and every open watch breaks off.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port, with the pods and history it had.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    /// Creates or replaces a pod (ADDED or MODIFIED).
    pub fn put(&self, pod: &PodSpec) {
        let mut data = self.shared.data.lock().expect("data");
        data.rv += 1;
        let rv = data.rv;
        let after = pod.to_json(&data.namespace.clone(), rv);
        let before = data.pods.insert(pod.name.clone(), after.clone());
        let change = Change {
            rv,
            kind: if before.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            before,
            after,
        };
        self.record(&mut data, change);
    }

    /// Deletes a pod (DELETED); a pod that does not exist is a test error.
    pub fn delete(&self, name: &str) {
        let mut data = self.shared.data.lock().expect("data");
        let before = data
            .pods
            .remove(name)
            .unwrap_or_else(|| panic!("no pod {name} to delete"));
        data.rv += 1;
        let rv = data.rv;
        let mut after = before.clone();
        after["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change {
            rv,
            kind: "DELETED",
            before: Some(before),
            after,
        };
        self.record(&mut data, change);
    }

    fn record(&self, data: &mut Data, change: Change) {
        data.history.push(change.clone());
        if data.history.len() > HISTORY {
            data.history.remove(0);
            data.oldest = data.history.first().map_or(data.rv, |c| c.rv - 1);
        }
        // No watch open is fine.
        let _ = self.changes_sender().send(change);
    }

    fn changes_sender(&self) -> &broadcast::Sender<Change> {
        &self.shared.changes
    }

    /// Ends every open watch stream (a dropped connection mid-stream, from the client's side).
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Forgets the history (etcd compaction): a watch resuming from any earlier resourceVersion gets
    /// 410 Gone and must list again.
    pub fn compact(&self) {
        let mut data = self.shared.data.lock().expect("data");
        data.history.clear();
        data.rv += 1;
        data.oldest = data.rv;
    }

    /// (lists, watches, 410 answers) served so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let data = self.shared.data.lock().expect("data");
        (data.lists, data.watches, data.gone_answers)
    }

    /// A kubeconfig naming this server over plain HTTP, with `namespace` in its context.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: tester\n    namespace: {namespace}\n\
             current-context: stand-in\nusers:\n- name: tester\n  user:\n    token: not-checked\n",
            self.addr
        )
    }
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (all must hold).
fn matches(selector: Option<&str>, pod: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.trim().is_empty()) else {
        return true;
    };
    let labels = &pod["metadata"]["labels"];
    selector.split(',').map(str::trim).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels[k.trim()].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

/// The watch event a change is for a watch with `selector`, if any: a pod that leaves the selector is
/// DELETED for it, one that enters it ADDED.
fn event_for(change: &Change, selector: Option<&str>) -> Option<Value> {
    let now = matches(selector, &change.after);
    let was = change.before.as_ref().is_some_and(|b| matches(selector, b));
    let kind = match (change.kind, was, now) {
        ("DELETED", _, true) => "DELETED",
        ("DELETED", _, false) => return None,
        (_, false, true) => "ADDED",
        (_, true, true) => "MODIFIED",
        (_, true, false) => "DELETED",
        (_, false, false) => return None,
    };
    Some(json!({ "type": kind, "object": change.after }))
}

fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn query(raw: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn pods(
    State(shared): State<Shared>,
    Path(namespace): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw);
    let selector = q.get("labelSelector").cloned();
    let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    if !watching {
        let mut data = shared.data.lock().expect("data");
        data.lists += 1;
        let items: Vec<Value> = if namespace == data.namespace {
            data.pods
                .values()
                .filter(|p| matches(selector.as_deref(), p))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let list = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": data.rv.to_string() },
            "items": items,
        });
        return (
            [(http::header::CONTENT_TYPE, "application/json")],
            list.to_string(),
        )
            .into_response();
    }
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let mut queue = VecDeque::new();
    let (changes, drops, seen) = {
        let mut data = shared.data.lock().expect("data");
        data.watches += 1;
        if since < data.oldest || namespace != data.namespace {
            data.gone_answers += 1;
            let gone = json!({
                "type": "ERROR",
                "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {since} ({})", data.oldest),
                    "reason": "Expired", "code": 410,
                },
            });
            return (
                [(http::header::CONTENT_TYPE, "application/json")],
                Body::from(line(&gone)),
            )
                .into_response();
        }
        for change in data.history.iter().filter(|c| c.rv > since) {
            queue.extend(event_for(change, selector.as_deref()).map(|e| line(&e)));
        }
        // Subscribed under the lock: no change falls between the replay and the live events.
        (
            shared.changes.subscribe(),
            shared.drops.subscribe(),
            data.rv,
        )
    };
    struct Stream {
        queue: VecDeque<Bytes>,
        changes: broadcast::Receiver<Change>,
        drops: watch::Receiver<u64>,
        selector: Option<String>,
        bookmarks: Option<tokio::time::Interval>,
        ends: tokio::time::Instant,
        /// The newest resourceVersion this stream has passed on (bookmarks never run ahead of it).
        seen: u64,
    }
    let state = Stream {
        queue,
        changes,
        drops,
        selector,
        bookmarks: bookmarks.then(|| tokio::time::interval(Duration::from_millis(500))),
        ends: tokio::time::Instant::now() + timeout,
        seen,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(next) = s.queue.pop_front() {
                return Some((Ok::<Bytes, Infallible>(next), s));
            }
            let bookmark = async {
                match &mut s.bookmarks {
                    Some(every) => {
                        every.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                change = s.changes.recv() => match change {
                    Ok(change) => {
                        s.seen = s.seen.max(change.rv);
                        s.queue.extend(event_for(&change, s.selector.as_deref()).map(|e| line(&e)));
                    }
                    // A watcher that fell behind is cut off, as the real server does.
                    Err(_) => return None,
                },
                _ = s.drops.changed() => return None,
                _ = tokio::time::sleep_until(s.ends) => return None,
                () = bookmark => {
                    let rv = s.seen;
                    let mark = json!({
                        "type": "BOOKMARK",
                        "object": { "kind": "Pod", "apiVersion": "v1", "metadata": { "resourceVersion": rv.to_string() } },
                    });
                    s.queue.push_back(line(&mark));
                }
            }
        }
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
