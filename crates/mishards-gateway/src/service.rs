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
use super::node_link::{Acquire, Client, NodeLink, Report};
use super::routing::Routing;
use super::scatter::{ScatterGather, Scattered};
use mishards_config::NodeAddr;
use mishards_proto::error::{MilvusError, success};
use mishards_meta::DEFAULT_PARTITION_TAG;
use mishards_proto::{self as proto, WithStatus, milvus_service_server::MilvusService};
use mishards_telemetry::{RequestTraceId, outgoing, record_request, response_with_code};

/// How long relayed calls may take: most are quick; flush, index builds and compaction are not.
const QUICK: Duration = Duration::from_secs(60);
const SLOW: Duration = Duration::from_secs(3600);

/// The actors a request talks to.
#[derive(Clone)]
pub struct Actors {
    pub cluster: Addr<Cluster>,
    pub routing: Addr<Routing>,
    pub poller: Addr<MetadataPoller>,
    pub discovery: Addr<super::discovery::Discovery>,
    /// Fault injection's rules and log; `None` unless it is enabled.
    pub faults: Option<crate::injection::FaultHandle>,
    pub write: Addr<NodeLink>,
    pub write_node: NodeAddr,
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
        }
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
        F: FnOnce(Client, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let node = self.actors.write_node.to_string();
        let down = |reason: String| GatewayError::WriteNodeDown {
            node: node.clone(),
            reason,
        };
        let lease = match self
            .actors
            .write
            .send(Acquire)
            .await
            .map_err(mailbox("write node link"))?
        {
            Ok(lease) => lease,
            Err(e) => return Err(down(e.to_string())),
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
        self.actors.write.do_send(Report {
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

    /// Re-reads the metadata after a write, so the client's next search sees it.
    async fn refresh(&self) {
        let _ = self.actors.poller.send(Refresh).await;
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
        F: FnOnce(Client, Request<Req>) -> Fut,
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
        F: FnOnce(Client, Request<Req>) -> Fut,
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

#[tonic::async_trait]
impl MilvusService for GatewayService {
    async fn create_collection(&self, r: Request<proto::CollectionSchema>) -> Reply<proto::Status> {
        reply(
            "CreateCollection",
            self.write(r.into_inner(), QUICK, |mut c, r| async move {
                c.create_collection(r).await
            })
            .await,
        )
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

    async fn show_collection_info(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionInfo> {
        reply(
            "ShowCollectionInfo",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.show_collection_info(r).await
            })
            .await,
        )
    }

    async fn drop_collection(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        reply(
            "DropCollection",
            self.write(r.into_inner(), QUICK, |mut c, r| async move {
                c.drop_collection(r).await
            })
            .await,
        )
    }

    async fn create_index(&self, r: Request<proto::IndexParam>) -> Reply<proto::Status> {
        reply(
            "CreateIndex",
            self.write(r.into_inner(), SLOW, |mut c, r| async move {
                c.create_index(r).await
            })
            .await,
        )
    }

    async fn describe_index(&self, r: Request<proto::CollectionName>) -> Reply<proto::IndexParam> {
        reply(
            "DescribeIndex",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.describe_index(r).await
            })
            .await,
        )
    }

    async fn drop_index(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        reply(
            "DropIndex",
            self.write(r.into_inner(), SLOW, |mut c, r| async move {
                c.drop_index(r).await
            })
            .await,
        )
    }

    async fn create_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::Status> {
        reply(
            "CreatePartition",
            self.write(r.into_inner(), QUICK, |mut c, r| async move {
                c.create_partition(r).await
            })
            .await,
        )
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

    async fn drop_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::Status> {
        reply(
            "DropPartition",
            self.write(r.into_inner(), QUICK, |mut c, r| async move {
                c.drop_partition(r).await
            })
            .await,
        )
    }

    async fn insert(&self, r: Request<proto::InsertParam>) -> Reply<proto::VectorIds> {
        reply(
            "Insert",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.insert(r).await
            })
            .await,
        )
    }

    async fn get_vectors_by_id(
        &self,
        r: Request<proto::VectorsIdentity>,
    ) -> Reply<proto::VectorsData> {
        reply(
            "GetVectorsByID",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.get_vectors_by_id(r).await
            })
            .await,
        )
    }

    async fn get_vector_i_ds(
        &self,
        r: Request<proto::GetVectorIDsParam>,
    ) -> Reply<proto::VectorIds> {
        reply(
            "GetVectorIDs",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.get_vector_i_ds(r).await
            })
            .await,
        )
    }

    async fn search(&self, r: Request<proto::SearchParam>) -> Reply<proto::TopKQueryResult> {
        record_request(r.get_ref());
        let trace_id = RequestTraceId::of(&r);
        reply("Search", self.search_plan(r.into_inner(), trace_id).await)
    }

    async fn search_by_id(
        &self,
        r: Request<proto::SearchByIdParam>,
    ) -> Reply<proto::TopKQueryResult> {
        reply(
            "SearchByID",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.search_by_id(r).await
            })
            .await,
        )
    }

    async fn search_in_files(
        &self,
        r: Request<proto::SearchInFilesParam>,
    ) -> Reply<proto::TopKQueryResult> {
        reply(
            "SearchInFiles",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.search_in_files(r).await
            })
            .await,
        )
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

    async fn delete_by_id(&self, r: Request<proto::DeleteByIdParam>) -> Reply<proto::Status> {
        reply(
            "DeleteByID",
            self.relay(r.into_inner(), QUICK, |mut c, r| async move {
                c.delete_by_id(r).await
            })
            .await,
        )
    }

    async fn preload_collection(
        &self,
        r: Request<proto::PreloadCollectionParam>,
    ) -> Reply<proto::Status> {
        let param = r.into_inner();
        let result = self
            .relay(param.clone(), SLOW, |mut c, r| async move {
                c.preload_collection(r).await
            })
            .await;
        if succeeded(&result) {
            self.on_read_nodes(
                param,
                |mut c, p| async move { c.preload_collection(p).await },
            )
            .await;
        }
        reply("PreloadCollection", result)
    }

    async fn release_collection(
        &self,
        r: Request<proto::PreloadCollectionParam>,
    ) -> Reply<proto::Status> {
        let param = r.into_inner();
        let result = self
            .relay(param.clone(), QUICK, |mut c, r| async move {
                c.release_collection(r).await
            })
            .await;
        self.on_read_nodes(
            param,
            |mut c, p| async move { c.release_collection(p).await },
        )
        .await;
        reply("ReleaseCollection", result)
    }

    async fn reload_segments(
        &self,
        r: Request<proto::ReLoadSegmentsParam>,
    ) -> Reply<proto::Status> {
        let param = r.into_inner();
        let result = self
            .relay(param.clone(), QUICK, |mut c, r| async move {
                c.reload_segments(r).await
            })
            .await;
        self.on_read_nodes(param, |mut c, p| async move { c.reload_segments(p).await })
            .await;
        reply("ReloadSegments", result)
    }

    async fn flush(&self, r: Request<proto::FlushParam>) -> Reply<proto::Status> {
        reply(
            "Flush",
            self.write(
                r.into_inner(),
                SLOW,
                |mut c, r| async move { c.flush(r).await },
            )
            .await,
        )
    }

    async fn compact(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        reply(
            "Compact",
            self.write(r.into_inner(), SLOW, |mut c, r| async move {
                c.compact(r).await
            })
            .await,
        )
    }

    proto::unserved_hybrid_rpcs!();
}

impl GatewayService {
    /// Sends a call to every read node (best effort: warming and releasing caches), waiting for all.
    async fn on_read_nodes<P, R, F, Fut>(&self, param: P, call: F)
    where
        P: Clone,
        F: Fn(Client, P) -> Fut,
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
                link.do_send(Report {
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
