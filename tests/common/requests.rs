//! The proto requests the tests send, built in one place, and the calls that send the common ones. A
//! test states only what differs (`..search_param(…)`, `..schema(…)`).

use mishards::proto;

use super::Client;

/// One row record per vector.
pub fn records(vectors: &[Vec<f32>]) -> Vec<proto::RowRecord> {
    vectors
        .iter()
        .map(|v| proto::RowRecord {
            float_data: v.clone(),
            binary_data: Vec::new(),
        })
        .collect()
}

/// The error code of a reply's status (-1 when it has none).
pub fn code(status: &Option<proto::Status>) -> i32 {
    status.as_ref().map_or(-1, |s| s.error_code)
}

/// Milvus's `extra_params`: one `params` key holding `json` as given (not checked, so tests can send
/// bad JSON).
pub fn params(json: &str) -> Vec<proto::KeyValuePair> {
    vec![proto::KeyValuePair {
        key: "params".into(),
        value: json.into(),
    }]
}

pub fn collection(name: &str) -> proto::CollectionName {
    proto::CollectionName {
        collection_name: name.into(),
    }
}

/// A collection of dimension `dim`, `index_file_size` MB, Milvus metric code `metric` (1 L2, 2 IP).
pub fn schema(name: &str, dim: i64, index_file_size: i64, metric: i32) -> proto::CollectionSchema {
    proto::CollectionSchema {
        collection_name: name.into(),
        dimension: dim,
        index_file_size,
        metric_type: metric,
        ..Default::default()
    }
}

/// Creates the collection `schema` and checks that it was.
pub async fn create_collection(c: &mut Client, schema: proto::CollectionSchema) {
    let st = c
        .create_collection(schema)
        .await
        .expect("create collection")
        .into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
}

/// Creates partition `tag` of `name` and checks that it was.
pub async fn create_partition(c: &mut Client, name: &str, tag: &str) {
    let st = c
        .create_partition(partition(name, tag))
        .await
        .expect("create partition")
        .into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
}

/// `vectors` into partition `tag` (empty: the default one), with `ids` (empty: ids assigned).
pub fn insert_param(
    name: &str,
    tag: &str,
    vectors: &[Vec<f32>],
    ids: Vec<i64>,
) -> proto::InsertParam {
    proto::InsertParam {
        collection_name: name.into(),
        row_record_array: records(vectors),
        row_id_array: ids,
        partition_tag: tag.into(),
        extra_params: Vec::new(),
    }
}

/// Flushes `names` (none: every collection) and checks that it did.
pub async fn flush(c: &mut Client, names: &[&str]) {
    let st = c
        .flush(proto::FlushParam {
            collection_name_array: names.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .expect("flush")
        .into_inner();
    assert_eq!(st.error_code, 0, "{st:?}");
}

/// `queries` over all of `name`, top-`k`, no extra parameters.
pub fn search_param(name: &str, queries: &[Vec<f32>], k: i64) -> proto::SearchParam {
    proto::SearchParam {
        collection_name: name.into(),
        query_record_array: records(queries),
        topk: k,
        ..Default::default()
    }
}

/// Sends a search; the reply, whatever its status.
pub async fn send_search(c: &mut Client, param: proto::SearchParam) -> proto::TopKQueryResult {
    c.search(param).await.expect("search").into_inner()
}

/// `queries` over all of `name`, top-`k`: the reply, whatever its status.
pub async fn search(
    c: &mut Client,
    name: &str,
    queries: &[Vec<f32>],
    k: i64,
) -> proto::TopKQueryResult {
    send_search(c, search_param(name, queries, k)).await
}

/// As `search`, in partitions matching `tags` (none: all), with `extra` as the `params` JSON.
pub async fn search_in(
    c: &mut Client,
    name: &str,
    tags: &[&str],
    queries: &[Vec<f32>],
    k: i64,
    extra: &str,
) -> proto::TopKQueryResult {
    let param = proto::SearchParam {
        partition_tag_array: tags.iter().map(|s| s.to_string()).collect(),
        extra_params: params(extra),
        ..search_param(name, queries, k)
    };
    send_search(c, param).await
}

/// Inserts `vectors` (see `insert_param`); the reply, whatever its status.
pub async fn insert(
    c: &mut Client,
    name: &str,
    tag: &str,
    vectors: &[Vec<f32>],
    ids: Vec<i64>,
) -> proto::VectorIds {
    c.insert(insert_param(name, tag, vectors, ids))
        .await
        .expect("insert")
        .into_inner()
}

/// An index of Milvus type code `index_type` (1 FLAT, 2 IVF_FLAT) with `json` as its `params`.
pub fn index_param(name: &str, index_type: i32, json: &str) -> proto::IndexParam {
    proto::IndexParam {
        collection_name: name.into(),
        index_type,
        extra_params: params(json),
        ..Default::default()
    }
}

pub fn partition(name: &str, tag: &str) -> proto::PartitionParam {
    proto::PartitionParam {
        collection_name: name.into(),
        tag: tag.into(),
    }
}

/// `Cmd(text)`: the reply, whatever its status.
pub async fn cmd(c: &mut Client, text: &str) -> proto::StringReply {
    c.cmd(proto::Command { cmd: text.into() })
        .await
        .expect("cmd")
        .into_inner()
}

/// Builds the index `index_param` describes: the status, whatever it is.
pub async fn create_index(
    c: &mut Client,
    name: &str,
    index_type: i32,
    json: &str,
) -> proto::Status {
    c.create_index(index_param(name, index_type, json))
        .await
        .expect("create index")
        .into_inner()
}

/// `Cmd("conn_stats")`: the gateway's view of its nodes, as JSON.
pub async fn conn_stats(c: &mut Client) -> serde_json::Value {
    let reply = cmd(c, "conn_stats").await;
    serde_json::from_str(&reply.string_reply).expect("conn_stats is JSON")
}
