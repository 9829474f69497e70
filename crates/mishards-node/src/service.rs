//! The node's tonic `MilvusService`: protobuf in, one engine call, protobuf out. Every failure travels as
//! a Milvus `Status` inside the reply, as Milvus 1.1 does; only the Hybrid RPCs, which no Milvus 1.1
//! client uses, answer gRPC UNIMPLEMENTED.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::NodeError;
use super::engine::{Engine, Query};
use super::index::TopK;
use super::server_config::ServerConfig;
use super::validate;
use super::vectors::Vectors;
use mishards_proto::error::{MilvusError, success};
use mishards_proto::{self as proto, WithStatus, milvus_service_server::MilvusService};
use mishards_telemetry::{record_request, response_with_code};

type Reply<T> = Result<Response<T>, Status>;

/// Turns an engine result into the reply: success status on `Ok`, the error's Milvus status otherwise.
fn answer<T: WithStatus>(rpc: &'static str, result: Result<T, NodeError>) -> Reply<T> {
    Ok(match result {
        Ok(mut reply) => {
            reply.set_status(success());
            response_with_code(reply, 0)
        }
        Err(e) => {
            let status = log_failure(rpc, e);
            let code = status.error_code;
            response_with_code(T::failed(status), code)
        }
    })
}

fn answer_status(rpc: &'static str, result: Result<(), NodeError>) -> Reply<proto::Status> {
    let status = match result {
        Ok(()) => success(),
        Err(e) => log_failure(rpc, e),
    };
    let code = status.error_code;
    Ok(response_with_code(status, code))
}

fn log_failure(rpc: &'static str, e: NodeError) -> proto::Status {
    let status = e.to_status();
    match e {
        NodeError::Internal(_) | NodeError::Wal(_) | NodeError::Segment(_) | NodeError::Meta(_) => {
            tracing::warn!(rpc, code = status.error_code, reason = %status.reason, "request failed")
        }
        _ => {
            tracing::debug!(rpc, code = status.error_code, reason = %status.reason, "request refused")
        }
    }
    status
}

/// The value of `extra_params["params"]`, where Milvus 1.1 clients put their JSON parameters.
fn params_of(extra: &[proto::KeyValuePair]) -> Option<&str> {
    extra
        .iter()
        .find(|kv| kv.key == "params")
        .map(|kv| kv.value.as_str())
}

/// Flattens rows into one collection's vectors: all `float_data` or all `binary_data`, each row of
/// one length.
fn flatten(records: &[proto::RowRecord], what: &str) -> Result<(Vectors, usize), NodeError> {
    let binary = records
        .first()
        .is_some_and(|r| r.float_data.is_empty() && !r.binary_data.is_empty());
    let other_kind = |r: &proto::RowRecord| {
        if binary {
            !r.float_data.is_empty()
        } else {
            !r.binary_data.is_empty()
        }
    };
    if records.iter().any(other_kind) {
        return Err(NodeError::InvalidRowRecord(format!(
            "every {what} vector must carry float_data (L2, IP collections) or binary_data (binary \
             metrics), one kind for all of them"
        )));
    }
    let width = |r: &proto::RowRecord| {
        if binary {
            r.binary_data.len()
        } else {
            r.float_data.len()
        }
    };
    let row_width = records.first().map_or(0, width);
    if records.iter().any(|r| width(r) != row_width) {
        return Err(NodeError::InvalidDimension(format!(
            "all {what} vectors must have the same dimension"
        )));
    }
    let vectors = if binary {
        Vectors::Binary(
            records
                .iter()
                .flat_map(|r| r.binary_data.iter().copied())
                .collect(),
        )
    } else {
        let mut flat = Vec::with_capacity(records.len() * row_width);
        records
            .iter()
            .for_each(|r| flat.extend_from_slice(&r.float_data));
        Vectors::Float(flat)
    };
    Ok((vectors, records.len()))
}

/// A stored vector as a row record (an empty one where the id was not found).
fn row_record(vector: Option<Vectors>) -> proto::RowRecord {
    match vector {
        Some(Vectors::Float(float_data)) => proto::RowRecord {
            float_data,
            binary_data: Vec::new(),
        },
        Some(Vectors::Binary(binary_data)) => proto::RowRecord {
            float_data: Vec::new(),
            binary_data,
        },
        None => proto::RowRecord::default(),
    }
}

fn topk_reply(result: Option<TopK>) -> proto::TopKQueryResult {
    match result {
        // Milvus answers a search over no data with an empty result.
        None => proto::TopKQueryResult::default(),
        Some(t) => proto::TopKQueryResult {
            status: None,
            row_num: t.nq as i64,
            ids: t.ids,
            distances: t.distances,
        },
    }
}

pub struct NodeService {
    engine: Arc<Engine>,
    config: ServerConfig,
    version: String,
    started: Instant,
}

impl NodeService {
    pub fn new(engine: Arc<Engine>, config: ServerConfig, version: String) -> Self {
        NodeService {
            engine,
            config,
            version,
            started: Instant::now(),
        }
    }

    async fn run_search(
        &self,
        param: &proto::SearchParam,
        files: Option<&[String]>,
    ) -> Result<proto::TopKQueryResult, NodeError> {
        let k = validate::topk(param.topk)?;
        let params = validate::params_json(params_of(&param.extra_params))?;
        let (vectors, nq) = flatten(&param.query_record_array, "query")?;
        if nq == 0 {
            return Err(NodeError::InvalidRowRecord("no query vectors given".into()));
        }
        validate::result_size(nq, k)?;
        let query = Query {
            vectors: vectors.as_ref(),
            nq,
            k,
            params: &params,
        };
        let result = match files {
            Some(files) => {
                self.engine
                    .search_in_files(&param.collection_name, files, &query)
                    .await?
            }
            None => {
                self.engine
                    .search(&param.collection_name, &param.partition_tag_array, &query)
                    .await?
            }
        };
        Ok(topk_reply(result))
    }

    fn cmd_reply(&self, cmd: &str) -> Result<String, NodeError> {
        // As Milvus 1.1: any command starting so goes to the config tree, which judges the rest.
        if cmd.starts_with("get_config") || cmd.starts_with("set_config") {
            return Ok(self.config.answer(cmd)?);
        }
        let mut words = cmd.split_whitespace();
        let opts = self.engine.options();
        Ok(match words.next().unwrap_or_default() {
            "version" => self.version.clone(),
            "status" => "OK".to_string(),
            "mode" => "CPU".to_string(),
            "tasktable" => String::new(),
            "build_commit_id" => concat!("mishards-", env!("CARGO_PKG_VERSION")).to_string(),
            "get_system_info" => serde_json::json!({
                "role": opts.role.name(),
                "storage": opts.storage.display().to_string(),
                "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                "cache_capacity_bytes": self.engine.cache().capacity(),
                "cache_used_bytes": self.engine.cache().used_bytes(),
                "uptime_seconds": self.started.elapsed().as_secs(),
            })
            .to_string(),
            _ => "Unknown command".to_string(),
        })
    }
}

#[tonic::async_trait]
impl MilvusService for NodeService {
    async fn create_collection(&self, r: Request<proto::CollectionSchema>) -> Reply<proto::Status> {
        let s = r.into_inner();
        answer_status(
            "CreateCollection",
            self.engine
                .create_collection(
                    &s.collection_name,
                    s.dimension,
                    s.index_file_size,
                    s.metric_type,
                )
                .await,
        )
    }

    async fn has_collection(&self, r: Request<proto::CollectionName>) -> Reply<proto::BoolReply> {
        let name = r.into_inner().collection_name;
        let result = self.engine.has_collection(&name).await;
        answer(
            "HasCollection",
            result.map(|b| proto::BoolReply {
                status: None,
                bool_reply: b,
            }),
        )
    }

    async fn describe_collection(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionSchema> {
        let name = r.into_inner().collection_name;
        let result = self
            .engine
            .collection(&name)
            .await
            .map(|t| proto::CollectionSchema {
                status: None,
                collection_name: t.collection.table_id,
                dimension: t.collection.dimension,
                index_file_size: t.collection.index_file_size >> 20,
                metric_type: t.collection.metric_type.code(),
                extra_params: Vec::new(),
            });
        answer("DescribeCollection", result)
    }

    async fn count_collection(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionRowCount> {
        let name = r.into_inner().collection_name;
        let result = self.engine.count(&name).await;
        answer(
            "CountCollection",
            result.map(|n| proto::CollectionRowCount {
                status: None,
                collection_row_count: n,
            }),
        )
    }

    async fn show_collections(
        &self,
        _r: Request<proto::Command>,
    ) -> Reply<proto::CollectionNameList> {
        let result = self.engine.collections().await;
        answer(
            "ShowCollections",
            result.map(|names| proto::CollectionNameList {
                status: None,
                collection_names: names,
            }),
        )
    }

    async fn show_collection_info(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::CollectionInfo> {
        let name = r.into_inner().collection_name;
        let result = self.engine.stats(&name).await;
        answer(
            "ShowCollectionInfo",
            result.map(|json| proto::CollectionInfo {
                status: None,
                json_info: json,
            }),
        )
    }

    async fn drop_collection(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        answer_status(
            "DropCollection",
            self.engine
                .drop_collection(&r.into_inner().collection_name)
                .await,
        )
    }

    async fn create_index(&self, r: Request<proto::IndexParam>) -> Reply<proto::Status> {
        let p = r.into_inner();
        let params = params_of(&p.extra_params).unwrap_or("{}");
        answer_status(
            "CreateIndex",
            self.engine
                .create_index(&p.collection_name, p.index_type, params)
                .await,
        )
    }

    async fn describe_index(&self, r: Request<proto::CollectionName>) -> Reply<proto::IndexParam> {
        let name = r.into_inner().collection_name;
        let result = self
            .engine
            .collection(&name)
            .await
            .map(|t| proto::IndexParam {
                status: None,
                collection_name: t.collection.table_id,
                index_type: validate::public_index_type(t.collection.engine_type).code(),
                extra_params: vec![proto::KeyValuePair {
                    key: "params".into(),
                    value: t.collection.index_params,
                }],
            });
        answer("DescribeIndex", result)
    }

    async fn drop_index(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        answer_status(
            "DropIndex",
            self.engine
                .drop_index(&r.into_inner().collection_name)
                .await,
        )
    }

    async fn create_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "CreatePartition",
            self.engine
                .create_partition(&p.collection_name, &p.tag)
                .await,
        )
    }

    async fn has_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::BoolReply> {
        let p = r.into_inner();
        let result = self.engine.has_partition(&p.collection_name, &p.tag).await;
        answer(
            "HasPartition",
            result.map(|b| proto::BoolReply {
                status: None,
                bool_reply: b,
            }),
        )
    }

    async fn show_partitions(
        &self,
        r: Request<proto::CollectionName>,
    ) -> Reply<proto::PartitionList> {
        let name = r.into_inner().collection_name;
        let result = self.engine.partitions(&name).await;
        answer(
            "ShowPartitions",
            result.map(|tags| proto::PartitionList {
                status: None,
                partition_tag_array: tags,
            }),
        )
    }

    async fn drop_partition(&self, r: Request<proto::PartitionParam>) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "DropPartition",
            self.engine.drop_partition(&p.collection_name, &p.tag).await,
        )
    }

    async fn insert(&self, r: Request<proto::InsertParam>) -> Reply<proto::VectorIds> {
        let p = r.into_inner();
        let result = async {
            let (vectors, rows) = flatten(&p.row_record_array, "inserted")?;
            let ids = self
                .engine
                .insert(
                    &p.collection_name,
                    &p.partition_tag,
                    p.row_id_array,
                    vectors,
                    rows,
                )
                .await?;
            Ok(proto::VectorIds {
                status: None,
                vector_id_array: ids,
            })
        }
        .await;
        answer("Insert", result)
    }

    async fn get_vectors_by_id(
        &self,
        r: Request<proto::VectorsIdentity>,
    ) -> Reply<proto::VectorsData> {
        let p = r.into_inner();
        let result = self
            .engine
            .vectors_by_id(&p.collection_name, &p.partition_tag, &p.id_array)
            .await
            .map(|found| proto::VectorsData {
                status: None,
                vectors_data: found.into_iter().map(row_record).collect(),
            });
        answer("GetVectorsByID", result)
    }

    async fn get_vector_i_ds(
        &self,
        r: Request<proto::GetVectorIDsParam>,
    ) -> Reply<proto::VectorIds> {
        let p = r.into_inner();
        let result = self
            .engine
            .segment_ids(&p.collection_name, &p.segment_name)
            .await;
        answer(
            "GetVectorIDs",
            result.map(|ids| proto::VectorIds {
                status: None,
                vector_id_array: ids,
            }),
        )
    }

    async fn search(&self, r: Request<proto::SearchParam>) -> Reply<proto::TopKQueryResult> {
        record_request(r.get_ref());
        let p = r.into_inner();
        answer("Search", self.run_search(&p, None).await)
    }

    async fn search_by_id(
        &self,
        r: Request<proto::SearchByIdParam>,
    ) -> Reply<proto::TopKQueryResult> {
        record_request(r.get_ref());
        let p = r.into_inner();
        let result = async {
            if p.id_array.is_empty() {
                return Err(NodeError::InvalidVectorId("no ids to search by".into()));
            }
            let found = self
                .engine
                .vectors_by_id(&p.collection_name, "", &p.id_array)
                .await?;
            let missing: Vec<String> = p
                .id_array
                .iter()
                .zip(&found)
                .filter(|(_, v)| v.is_none())
                .map(|(id, _)| id.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(NodeError::InvalidVectorId(format!(
                    "ids {} are not in the collection",
                    missing.join(", ")
                )));
            }
            let records = found.into_iter().map(row_record).collect();
            let param = proto::SearchParam {
                collection_name: p.collection_name,
                partition_tag_array: p.partition_tag_array,
                query_record_array: records,
                topk: p.topk,
                extra_params: p.extra_params,
            };
            self.run_search(&param, None).await
        }
        .await;
        answer("SearchByID", result)
    }

    async fn search_in_files(
        &self,
        r: Request<proto::SearchInFilesParam>,
    ) -> Reply<proto::TopKQueryResult> {
        record_request(r.get_ref());
        let p = r.into_inner();
        let result = match &p.search_param {
            Some(param) => self.run_search(param, Some(&p.file_id_array)).await,
            None => Err(NodeError::InvalidArgument("search_param is missing".into())),
        };
        answer("SearchInFiles", result)
    }

    async fn cmd(&self, r: Request<proto::Command>) -> Reply<proto::StringReply> {
        let cmd = r.into_inner().cmd;
        answer(
            "Cmd",
            self.cmd_reply(&cmd).map(|s| proto::StringReply {
                status: None,
                string_reply: s,
            }),
        )
    }

    async fn delete_by_id(&self, r: Request<proto::DeleteByIdParam>) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "DeleteByID",
            self.engine
                .delete(&p.collection_name, &p.partition_tag, p.id_array)
                .await,
        )
    }

    async fn preload_collection(
        &self,
        r: Request<proto::PreloadCollectionParam>,
    ) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "PreloadCollection",
            self.engine
                .preload(&p.collection_name, &p.partition_tag_array)
                .await,
        )
    }

    async fn release_collection(
        &self,
        r: Request<proto::PreloadCollectionParam>,
    ) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "ReleaseCollection",
            self.engine
                .release(&p.collection_name, &p.partition_tag_array)
                .await,
        )
    }

    async fn reload_segments(
        &self,
        r: Request<proto::ReLoadSegmentsParam>,
    ) -> Reply<proto::Status> {
        let p = r.into_inner();
        answer_status(
            "ReloadSegments",
            self.engine
                .reload_segments(&p.collection_name, &p.segment_id_array)
                .await,
        )
    }

    async fn flush(&self, r: Request<proto::FlushParam>) -> Reply<proto::Status> {
        let names = r.into_inner().collection_name_array;
        answer_status("Flush", self.engine.flush(&names).await)
    }

    async fn compact(&self, r: Request<proto::CollectionName>) -> Reply<proto::Status> {
        answer_status(
            "Compact",
            self.engine.compact(&r.into_inner().collection_name).await,
        )
    }

    proto::unserved_hybrid_rpcs!();
}
