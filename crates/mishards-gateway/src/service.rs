//! The gateway's tonic `MilvusService`: a search becomes a plan from the routing actor and a
//! scatter-gather actor; every other RPC is relayed to the write node unchanged (partition tags
//! included). With the write node down, searches and the catalogue reads (HasCollection,
//! DescribeCollection, ShowCollections, ShowPartitions, CountCollection) answer from the metadata
//! snapshot and writes fail fast with CONNECT_FAILED naming the write node.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tonic::{Request, Response, Status};

use super::GatewayError;
use super::cluster::{Cluster, ConnStats, GetLinks};
use super::inspect::Record;
use super::metadata::{GetSnapshot, MetadataPoller, Refresh, Snapshot};
use super::node_link::{Acquire, LeaseReport, NodeClient, NodeLink};
use super::routing::Routing;
use super::scatter::{ScatterGather, Scattered};
use mishards_meta::DEFAULT_PARTITION_TAG;
use mishards_proto::error::{MilvusError, success};
use mishards_proto::{self as proto, WithStatus, milvus_service_server::MilvusService};
use mishards_telemetry::{RequestTraceId, outgoing, record_request, response_with_code};

/// How long relayed calls may take: most are quick; flush, index builds and compaction are not.
const QUICK: Duration = Duration::from_secs(60);
const SLOW: Duration = Duration::from_secs(3600);

/// Longest a write's client waits for the metadata refresh after it: a stuck metadata database must
/// not hold acknowledged writes (the poller catches up on its own schedule).
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The actors a request talks to.
#[derive(Clone)]
pub struct Actors {
    pub cluster: Addr<Cluster>,
    pub routing: Addr<Routing>,
    pub poller: Addr<MetadataPoller>,
    pub discovery: Addr<super::discovery::Discovery>,
    /// Fault injection's rules and log; `None` unless it is enabled.
    pub faults: Option<crate::injection::FaultHandle>,
    /// The write node's link (it follows the write node discovery finds, when WOSERVER is unset).
    pub write: Addr<NodeLink>,
    /// Keeps the manifests of recent and slow searches for the admin listener.
    pub inspector: Addr<super::inspect::Inspector>,
    /// The arbiter the long-lived actors run on; scatter-gather actors start there too.
    pub home: actix::ArbiterHandle,
}

pub struct GatewayService {
    actors: Actors,
    node_timeout: Duration,
    max_retry: u32,
    version: String,
    /// How searches hedge slow read nodes (`None`: they do not).
    hedging: Option<std::sync::Arc<super::hedge::Hedging>>,
    /// Relay clients' `set_config` to the write node (`allow_client_set_config`).
    allow_set_config: bool,
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T: WithStatus>(rpc: &'static str, result: Result<T, GatewayError>) -> Reply<T> {
    Ok(match result {
        Ok(r) => {
            let code = r.status().map_or(0, |s| s.error_code);
            response_with_code(r, code)
        }
        Err(e) => {
            let status = e.to_status();
            tracing::debug!(rpc, code = status.error_code, reason = %status.reason, "request failed");
            let code = status.error_code;
            response_with_code(T::failed(status), code)
        }
    })
}

fn mailbox(actor: &'static str) -> impl FnOnce(MailboxError) -> GatewayError {
    move |e| GatewayError::Actor {
        actor,
        reason: e.to_string(),
    }
}

fn succeeded<T: WithStatus>(r: &Result<T, GatewayError>) -> bool {
    matches!(r, Ok(reply) if reply.status().is_none_or(|s| s.error_code == 0))
}

impl GatewayService {
    pub fn new(actors: Actors, node_timeout: Duration, max_retry: u32, version: String) -> Self {
        GatewayService {
            actors,
            node_timeout,
            max_retry,
            version,
            hedging: None,
            allow_set_config: true,
        }
    }

    /// Whether clients' `Cmd("set_config …")` reaches the write node or is refused here.
    pub fn allowing_set_config(mut self, allowed: bool) -> Self {
        self.allow_set_config = allowed;
        self
    }

    /// Searches hedge slow read nodes as `hedging` says.
    pub fn with_hedging(mut self, hedging: Option<std::sync::Arc<super::hedge::Hedging>>) -> Self {
        self.hedging = hedging;
        self
    }

    /// Relays one call to the write node. An unreachable write node is CONNECT_FAILED naming it.
    async fn relay<Req, Resp, F, Fut>(
        &self,
        req: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, GatewayError>
    where
        F: FnOnce(NodeClient, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let lease = match self
            .actors
            .write
            .send(Acquire)
            .await
            .map_err(mailbox("write node link"))?
        {
            Ok(lease) => lease,
            Err(GatewayError::Unreachable { node, reason }) => {
                return Err(GatewayError::WriteNodeDown { node, reason });
            }
            Err(e) => {
                return Err(GatewayError::WriteNodeDown {
                    node: super::node_link::UNASSIGNED.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let node = lease.node.to_string();
        let down = |reason: String| GatewayError::WriteNodeDown {
            node: node.clone(),
            reason,
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, call(lease.client, outgoing(req))).await;
        // Only a call that got no answer says something about the node's health.
        let unanswered = |s: &Status| {
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            )
        };
        let failed = match &outcome {
            Ok(Ok(_)) => false,
            Ok(Err(s)) => unanswered(s),
            Err(_) => true,
        };
        self.actors.write.do_send(LeaseReport {
            latency: started.elapsed(),
            failed,
        });
        match outcome {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) if unanswered(&status) => Err(down(status.message().to_string())),
            Ok(Err(status)) => Err(GatewayError::Node(mishards_proto::error::status(
                proto::ErrorCode::UnexpectedError,
                format!(
                    "the write node {node} refused the call: {}",
                    status.message()
                ),
            ))),
            Err(_) => Err(down(format!("no answer within {timeout:?}"))),
        }
    }

    /// Re-reads the metadata after a write, so the client's next search sees it; gives up after
    /// `REFRESH_TIMEOUT` (the write itself succeeded).
    async fn refresh(&self) {
        if tokio::time::timeout(REFRESH_TIMEOUT, self.actors.poller.send(Refresh))
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?REFRESH_TIMEOUT,
                "the metadata refresh after a write did not finish in time: answering the client; searches see the write once the poller reads it"
            );
        }
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, GatewayError> {
        self.actors
            .poller
            .send(GetSnapshot)
            .await
            .map_err(mailbox("metadata poller"))
    }

    /// A relayed write: on success the metadata is refreshed before the client hears back.
    async fn write<Req, Resp, F, Fut>(
        &self,
        req: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, GatewayError>
    where
        Resp: WithStatus,
        F: FnOnce(NodeClient, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let result = self.relay(req, timeout, call).await;
        if succeeded(&result) {
            self.refresh().await;
        }
        result
    }

    /// A catalogue read: from the write node, or from the snapshot while it is down.
    async fn read_or_snapshot<Req, Resp, F, Fut>(
        &self,
        req: Req,
        call: F,
        from_snapshot: impl FnOnce(&Snapshot) -> Result<Resp, GatewayError>,
    ) -> Result<Resp, GatewayError>
    where
        F: FnOnce(NodeClient, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        match self.relay(req, QUICK, call).await {
            Err(GatewayError::WriteNodeDown { node, reason }) => {
                let snapshot = self.snapshot().await?;
                if snapshot.epoch == 0 {
                    return Err(GatewayError::WriteNodeDown { node, reason });
                }
                tracing::debug!(%node, "write node down: answering from the metadata snapshot");
                from_snapshot(&snapshot)
            }
            other => other,
        }
    }

    /// A search: planned and scattered by a `ScatterGather` actor; its manifest goes to the inspector.
    async fn search_plan(
        &self,
        param: proto::SearchParam,
        trace_id: RequestTraceId,
    ) -> Result<proto::TopKQueryResult, GatewayError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let scatter = ScatterGather {
            param: Some(param),
            routing: self.actors.routing.clone(),
            node_timeout: self.node_timeout,
            max_retry: self.max_retry,
            span: tracing::Span::current(),
            trace_id,
            reply: Some(tx),
            inspector: self.actors.inspector.clone(),
            hedging: self.hedging.clone(),
        };
        // The handler runs as a local task of the actors' arbiter (server.rs), so the actor starts right
        // here and its messages to Routing and the node links never cross threads.
        scatter.start();
        let (outcome, unfiled) = rx.await.map_err(|_| GatewayError::Actor {
            actor: "scatter-gather",
            reason: "ended without an answer".into(),
        })?;
        match outcome {
            Ok(Scattered::Answer(result)) => Ok(result),
            Err(e) => Err(e),
            // Not in the snapshot (new, or unknown): the write node knows.
            Ok(Scattered::Unknown(param)) => {
                let result = self
                    .relay(param, QUICK, |mut c, r| async move { c.search(r).await })
                    .await;
                if let Some(mut manifest) = unfiled {
                    manifest.finish(result.as_ref());
                    self.actors.inspector.do_send(Record(manifest));
                }
                result
            }
        }
    }

    async fn conn_stats(&self) -> Result<String, GatewayError> {
        let mut stats = self
            .actors
            .cluster
            .send(ConnStats)
            .await
            .map_err(mailbox("cluster"))?;
        if let Some(object) = stats.as_object_mut() {
            let hedging = self
                .hedging
                .as_ref()
                .map(|h| serde_json::to_value(h.budget.stats()).unwrap_or_default());
            object.insert("hedging".into(), hedging.unwrap_or_default());
        }
        Ok(stats.to_string())
    }
}

fn collection_of<'s>(
    snapshot: &'s Snapshot,
    name: &str,
) -> Result<&'s mishards_meta::CollectionTables, GatewayError> {
    snapshot
        .collections
        .get(name)
        .ok_or_else(|| GatewayError::CollectionNotFound(name.to_string()))
}

/// The RPCs relayed as they are, each a row: `rpc(request) -> reply: "Name", path(arguments)`, where the
/// path is `relay(timeout)` (to the write node as is), `write(timeout)` (the metadata is refreshed after
/// a success) or `relay_to_every_node(timeout, read nodes)` (the write node, then every read node).
/// Expand it inside the `impl MilvusService` block. Written as `#[async_trait]` expands an `async fn`
/// (as `mishards_proto::unserved_hybrid_rpcs!` is), because the tonic trait is declared through it and
/// an attribute on the impl does not see inside a macro call.
macro_rules! relayed_rpcs {
    ($($rpc:ident($req:ident) -> $resp:ident: $name:literal, $path:ident($($arg:expr),*);)*) => {$(
        fn $rpc<'life0, 'async_trait>(
            &'life0 self,
            r: Request<proto::$req>,
        ) -> ::std::pin::Pin<Box<dyn Future<Output = Reply<proto::$resp>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                reply(
                    $name,
                    self.$path(r.into_inner(), $($arg,)* |mut c, r| async move { c.$rpc(r).await })
                        .await,
                )
            })
        }
    )*};
}

#[tonic::async_trait]
impl MilvusService for GatewayService {
    relayed_rpcs! {
        create_collection(CollectionSchema) -> Status: "CreateCollection", write(QUICK);
        show_collection_info(CollectionName) -> CollectionInfo: "ShowCollectionInfo", relay(QUICK);
        drop_collection(CollectionName) -> Status: "DropCollection", write(QUICK);
        create_index(IndexParam) -> Status: "CreateIndex", write(SLOW);
        describe_index(CollectionName) -> IndexParam: "DescribeIndex", relay(QUICK);
        drop_index(CollectionName) -> Status: "DropIndex", write(SLOW);
        create_partition(PartitionParam) -> Status: "CreatePartition", write(QUICK);
        drop_partition(PartitionParam) -> Status: "DropPartition", write(QUICK);
        insert(InsertParam) -> VectorIds: "Insert", relay(QUICK);
        get_vectors_by_id(VectorsIdentity) -> VectorsData: "GetVectorsByID", relay(QUICK);
        get_vector_i_ds(GetVectorIDsParam) -> VectorIds: "GetVectorIDs", relay(QUICK);
        search_by_id(SearchByIdParam) -> TopKQueryResult: "SearchByID", relay(QUICK);
        search_in_files(SearchInFilesParam) -> TopKQueryResult: "SearchInFiles", relay(QUICK);
        delete_by_id(DeleteByIdParam) -> Status: "DeleteByID", relay(QUICK);
        flush(FlushParam) -> Status: "Flush", write(SLOW);
        compact(CollectionName) -> Status: "Compact", write(SLOW);
        preload_collection(PreloadCollectionParam) -> Status:
            "PreloadCollection", relay_to_every_node(SLOW, ReadNodes::IfSucceeded);
        release_collection(PreloadCollectionParam) -> Status:
            "ReleaseCollection", relay_to_every_node(QUICK, ReadNodes::Always);
        reload_segments(ReLoadSegmentsParam) -> Status:
            "ReloadSegments", relay_to_every_node(QUICK, ReadNodes::Always);
    }

    async fn has_collection(&self, r: Request<proto::CollectionName>) -> Reply<proto::BoolReply> {
        let name = r.get_ref().collection_name.clone();
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.has_collection(r).await },
                |s| {
                    Ok(proto::BoolReply {
                        status: Some(success()),
                        bool_reply: s.collections.contains_key(&name),
                    })
                },
            )
            .await;
        reply("HasCollection", result)
    }

    async fn describe_collection(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionSchema> {
        let name = r.get_ref().collection_name.clone();
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.describe_collection(r).await },
                |s| {
                    let t = &collection_of(s, &name)?.collection;
                    Ok(proto::CollectionSchema {
                        status: Some(success()),
                        collection_name: t.table_id.clone(),
                        dimension: t.dimension,
                        index_file_size: t.index_file_size >> 20,
                        metric_type: t.metric_type.code(),
                        extra_params: Vec::new(),
                    })
                },
            )
            .await;
        reply("DescribeCollection", result)
    }

    async fn count_collection(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionRowCount> {
        let name = r.get_ref().collection_name.clone();
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.count_collection(r).await },
                |s| {
                    let tables = collection_of(s, &name)?;
                    let ids: Vec<String> = std::iter::once(&tables.collection)
                        .chain(&tables.partitions)
                        .map(|t| t.table_id.clone())
                        .collect();
                    let rows = s.files_of(&ids).map(|f| f.row_count).sum();
                    Ok(proto::CollectionRowCount {
                        status: Some(success()),
                        collection_row_count: rows,
                    })
                },
            )
            .await;
        reply("CountCollection", result)
    }

    async fn show_collections(
        &self,
        r: Request<proto::Command>,
    ) -> Reply<proto::CollectionNameList> {
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.show_collections(r).await },
                |s| {
                    let mut names: Vec<String> = s.collections.keys().cloned().collect();
                    names.sort();
                    Ok(proto::CollectionNameList {
                        status: Some(success()),
                        collection_names: names,
                    })
                },
            )
            .await;
        reply("ShowCollections", result)
    }

    async fn has_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::BoolReply> {
        let (name, tag) = (
            r.get_ref().collection_name.clone(),
            r.get_ref().tag.trim().to_string(),
        );
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.has_partition(r).await },
                |s| {
                    let tables = collection_of(s, &name)?;
                    let found = tag == DEFAULT_PARTITION_TAG
                        || tables.partitions.iter().any(|p| p.partition_tag == tag);
                    Ok(proto::BoolReply {
                        status: Some(success()),
                        bool_reply: found,
                    })
                },
            )
            .await;
        reply("HasPartition", result)
    }

    async fn show_partitions(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::PartitionList> {
        let name = r.get_ref().collection_name.clone();
        let result = self
            .read_or_snapshot(
                r.into_inner(),
                |mut c, r| async move { c.show_partitions(r).await },
                |s| {
                    let tables = collection_of(s, &name)?;
                    let tags = std::iter::once(DEFAULT_PARTITION_TAG.to_string())
                        .chain(tables.partitions.iter().map(|p| p.partition_tag.clone()))
                        .collect();
                    Ok(proto::PartitionList {
                        status: Some(success()),
                        partition_tag_array: tags,
                    })
                },
            )
            .await;
        reply("ShowPartitions", result)
    }

    async fn search(&self, r: Request<proto::SearchParam>) -> Reply<proto::TopKQueryResult> {
        // Refused before anything copies the tags (the search's manifest, its plan): a list past the
        // limit costs only its length check.
        if let Err(e) = mishards_meta::check_search_tags(&r.get_ref().partition_tag_array) {
            return reply("Search", Err(GatewayError::Partition(e)));
        }
        record_request(r.get_ref());
        let trace_id = RequestTraceId::of(&r);
        reply("Search", self.search_plan(r.into_inner(), trace_id).await)
    }

    async fn cmd(&self, r: Request<proto::Command>) -> Reply<proto::StringReply> {
        let cmd = r.get_ref().cmd.trim().to_string();
        let local = |s: String| {
            Ok(proto::StringReply {
                status: Some(success()),
                string_reply: s,
            })
        };
        let result = match cmd.as_str() {
            // Answered here, so clients connect (pymilvus asks for the version) while the write node is down.
            "version" => local(self.version.clone()),
            "status" => local("OK".into()),
            "conn_stats" => self.conn_stats().await.and_then(local),
            // As Milvus 1.1 (and the node): any command starting so is a config change.
            _ if !self.allow_set_config && cmd.starts_with("set_config") => {
                Err(GatewayError::SetConfigRefused)
            }
            _ => {
                self.relay(
                    r.into_inner(),
                    QUICK,
                    |mut c, r| async move { c.cmd(r).await },
                )
                .await
            }
        };
        reply("Cmd", result)
    }

    proto::unserved_hybrid_rpcs!();
}

/// When a call relayed to the write node also goes to every read node.
enum ReadNodes {
    /// Only when the write node answered with success (preloading: nothing to warm otherwise).
    IfSucceeded,
    /// Whatever the write node answered (releasing and reloading: the read nodes' caches must follow).
    Always,
}

impl GatewayService {
    /// Relays a call to the write node, then makes it on every read node as `read_nodes` says; the
    /// client hears the write node's answer.
    async fn relay_to_every_node<P, R, F, Fut>(
        &self,
        param: P,
        timeout: Duration,
        read_nodes: ReadNodes,
        call: F,
    ) -> Result<R, GatewayError>
    where
        P: Clone,
        R: WithStatus,
        F: Fn(NodeClient, Request<P>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let result = self.relay(param.clone(), timeout, &call).await;
        if matches!(read_nodes, ReadNodes::Always) || succeeded(&result) {
            // `Request::new` is what tonic makes of a bare message, as the read node calls always had.
            self.on_read_nodes(param, |c, p| call(c, Request::new(p)))
                .await;
        }
        result
    }

    /// Sends a call to every read node (best effort: warming and releasing caches), waiting for all.
    async fn on_read_nodes<P, R, F, Fut>(&self, param: P, call: F)
    where
        P: Clone,
        F: Fn(NodeClient, P) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let Ok(links) = self.actors.cluster.send(GetLinks).await else {
            return;
        };
        let calls = links.iter().map(|(node, link)| {
            let (param, call) = (param.clone(), &call);
            async move {
                let Ok(Ok(lease)) = link.send(Acquire).await else {
                    return;
                };
                let started = Instant::now();
                let outcome = tokio::time::timeout(SLOW, call(lease.client, param)).await;
                let failed = !matches!(outcome, Ok(Ok(_)));
                link.do_send(LeaseReport {
                    latency: started.elapsed(),
                    failed,
                });
                if failed {
                    tracing::warn!(%node, "a read node did not take a preload/release/reload call");
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}
