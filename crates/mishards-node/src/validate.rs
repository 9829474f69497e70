//! Milvus 1.1's limits on names, dimensions, sizes and search parameters, each failing with the status code
//! Milvus uses and a reason a person can act on.

use serde_json::Value;

use super::NodeError;
use crate::segment_index::SearchParams;
use mishards_meta::{EngineType, MetricType};

pub use mishards_proto::limits::{
    MAX_DIMENSION, MAX_INDEX_FILE_SIZE_MB, MAX_INSERT_BYTES, MAX_NAME_LEN, MAX_NLIST, MAX_NPROBE,
};

/// An insert of `bytes` bytes of vectors: at most [`MAX_INSERT_BYTES`].
pub fn insert_size(bytes: usize) -> Result<(), NodeError> {
    if bytes > MAX_INSERT_BYTES {
        return Err(NodeError::InvalidRowRecord(format!(
            "an insert may carry at most 256 MB of vectors; this one has {} MB: split it",
            bytes >> 20
        )));
    }
    Ok(())
}

/// Collection names: letters, digits and `_`, starting with a letter or `_`, at most 255 characters.
pub fn collection_name(name: &str) -> Result<(), NodeError> {
    let invalid = |reason: &str| {
        NodeError::InvalidName(format!("invalid collection name `{name}`: {reason}"))
    };
    let first = name.chars().next().ok_or_else(|| invalid("it is empty"))?;
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 255 characters"));
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(invalid(
            "the first character must be a letter or an underscore",
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid("only letters, digits and underscores are allowed"));
    }
    Ok(())
}

/// Partition tags: not blank, at most 255 characters; surrounding blanks are trimmed as Milvus does.
pub fn partition_tag(tag: &str) -> Result<String, NodeError> {
    let trimmed = tag.trim();
    if trimmed.is_empty() {
        return Err(NodeError::InvalidArgument(
            "partition tag must not be empty".into(),
        ));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(NodeError::InvalidArgument(format!(
            "partition tag `{trimmed}` is longer than 255 characters"
        )));
    }
    Ok(trimmed.to_string())
}

pub fn dimension(dim: i64) -> Result<(), NodeError> {
    if !(1..=MAX_DIMENSION).contains(&dim) {
        return Err(NodeError::InvalidDimension(format!(
            "dimension {dim} is out of range: it must be 1 to 32768"
        )));
    }
    Ok(())
}

/// `index_file_size` in MB, 1..65536; returns bytes.
pub fn index_file_size(mb: i64) -> Result<i64, NodeError> {
    if !(1..=MAX_INDEX_FILE_SIZE_MB).contains(&mb) {
        return Err(NodeError::InvalidArgument(format!(
            "index_file_size {mb} is out of range: it must be 1 to 65536 (MB)"
        )));
    }
    Ok(mb << 20)
}

/// Every Milvus 1.1 metric type.
pub fn metric(code: i32) -> Result<MetricType, NodeError> {
    MetricType::try_from(code as i64).map_err(|_| {
        NodeError::InvalidMetric(format!(
            "metric type {code} is not a Milvus metric type: use L2 (1), IP (2), HAMMING (3), \
             JACCARD (4), TANIMOTO (5), SUBSTRUCTURE (6) or SUPERSTRUCTURE (7)"
        ))
    })
}

/// A binary collection's dimension counts bits, whole bytes of them (Milvus 1.1's rule).
pub fn binary_dimension(dim: i64, metric: MetricType) -> Result<(), NodeError> {
    if metric.is_binary() && dim % 8 != 0 {
        return Err(NodeError::InvalidDimension(format!(
            "Invalid collection dimension: {dim}. The collection dimension must be a multiple of 8 \
             for metric {metric} (binary vectors are counted in bits)"
        )));
    }
    Ok(())
}

/// Rows (inserted or queried) must be of the collection's kind: `binary_data` for binary metrics,
/// `float_data` for L2 and IP.
pub fn vector_kind(collection: &str, metric: MetricType, binary: bool) -> Result<(), NodeError> {
    match (metric.is_binary(), binary) {
        (true, false) => Err(NodeError::InvalidRowRecord(format!(
            "collection `{collection}` holds binary vectors (metric {metric}): send them in binary_data, \
             dimension / 8 bytes a vector"
        ))),
        (false, true) => Err(NodeError::InvalidRowRecord(format!(
            "collection `{collection}` holds float vectors (metric {metric}): send them in float_data"
        ))),
        _ => Ok(()),
    }
}

pub fn topk(k: i64) -> Result<usize, NodeError> {
    match mishards_proto::limits::topk_problem(k) {
        Some(reason) => Err(NodeError::InvalidTopk(reason)),
        None => Ok(k as usize),
    }
}

/// The size of a search's result: nq × topk within `limits::MAX_RESULT_ENTRIES`.
pub fn result_size(nq: usize, k: usize) -> Result<(), NodeError> {
    mishards_proto::limits::result_size_problem(nq, k)
        .map_or(Ok(()), |reason| Err(NodeError::InvalidArgument(reason)))
}

/// The engine type CreateIndex asks for, as a collection of `metric` stores it: binary collections
/// take FLAT and IVF_FLAT (stored as BIN_FLAT and BIN_IVF_FLAT), and IVF_FLAT only for HAMMING,
/// JACCARD and TANIMOTO; IVF_SQ8H needs Milvus's GPU build, this node is a CPU build.
pub fn index_type(code: i32, metric: MetricType) -> Result<EngineType, NodeError> {
    let engine = EngineType::try_from(code as i64).map_err(|_| {
        NodeError::InvalidIndexType(format!(
            "Invalid index type: {code}. Make sure the index type is in IndexType list: FLAT (1), \
             IVF_FLAT (2), IVF_SQ8 (3), RNSG (4), IVF_PQ (6), HNSW (11), ANNOY (12)"
        ))
    })?;
    let unsupported = |why: &str| {
        Err(NodeError::InvalidIndexType(format!(
            "Unsupported index type: {code} ({engine}): {why}"
        )))
    };
    if metric.is_binary() {
        return match engine {
            EngineType::Flat => Ok(EngineType::BinFlat),
            EngineType::IvfFlat
                if !matches!(
                    metric,
                    MetricType::Substructure | MetricType::Superstructure
                ) =>
            {
                Ok(EngineType::BinIvfFlat)
            }
            _ => Err(NodeError::InvalidIndexType(format!(
                "Invalid index type for collection metric type: a {metric} collection takes FLAT{}",
                if matches!(
                    metric,
                    MetricType::Substructure | MetricType::Superstructure
                ) {
                    " only"
                } else {
                    " or IVF_FLAT"
                }
            ))),
        };
    }
    match engine {
        EngineType::Flat
        | EngineType::IvfFlat
        | EngineType::IvfSq8
        | EngineType::IvfPq
        | EngineType::Hnsw
        | EngineType::Rnsg
        | EngineType::Annoy => Ok(engine),
        EngineType::IvfSq8H => unsupported(
            "IVF_SQ8H is built by Milvus's GPU version only; this node runs in CPU mode (use IVF_SQ8)",
        ),
        EngineType::Invalid => Err(NodeError::InvalidIndexType(
            "Invalid index type: 0. Make sure the index type is in IndexType list".into(),
        )),
        _ => unsupported("not an index type Milvus 1.1 builds for float vectors"),
    }
}

/// What DescribeIndex reports for a stored engine type: the binary ones as the FLAT / IVF_FLAT a
/// client asked for (Milvus 1.1 converts them back the same way).
pub fn public_index_type(engine: EngineType) -> EngineType {
    match engine {
        EngineType::BinFlat => EngineType::Flat,
        EngineType::BinIvfFlat => EngineType::IvfFlat,
        other => other,
    }
}

/// Parses the JSON object Milvus carries in `extra_params["params"]`; absent means `{}`.
pub fn params_json(text: Option<&str>) -> Result<serde_json::Map<String, Value>, NodeError> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NodeError::InvalidArgument(format!(
            "params must be a JSON object, got `{text}`"
        ))),
        Err(e) => Err(NodeError::InvalidArgument(format!(
            "params `{text}` are not valid JSON: {e}"
        ))),
    }
}

/// An integer param in `min..=max`, required; Milvus 1.1's messages (ILLEGAL_ARGUMENT).
fn required_int(
    params: &serde_json::Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<i64, NodeError> {
    let value = params.get(key).ok_or_else(|| {
        NodeError::InvalidArgument(format!(
            "Parameter list must contain: {key} (an integer in [{min}, {max}])"
        ))
    })?;
    match value.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(NodeError::InvalidArgument(format!(
            "Invalid {key} value: {n}. Valid range is [{min}, {max}]"
        ))),
        None => Err(NodeError::InvalidArgument(format!(
            "Invalid {key}: {value} is not an integer. Valid range is [{min}, {max}]"
        ))),
    }
}

/// Milvus 1.1's build-param ranges.
pub const NLIST: (i64, i64) = (1, MAX_NLIST);
pub const HNSW_M: (i64, i64) = (4, 64);
pub const HNSW_EF_CONSTRUCTION: (i64, i64) = (8, 512);
pub const NSG_SEARCH_LENGTH: (i64, i64) = (10, 300);
pub const NSG_OUT_DEGREE: (i64, i64) = (5, 300);
pub const NSG_CANDIDATE_POOL: (i64, i64) = (50, 1000);
pub const NSG_KNNG: (i64, i64) = (5, 300);
pub const ANNOY_N_TREES: (i64, i64) = (1, 1024);
/// Largest HNSW search `ef`.
pub const HNSW_MAX_EF: i64 = 32768;

/// The build params of an index, checked as Milvus 1.1 checks them (a param an index does not read is
/// ignored), and returned as the JSON stored in `Tables.index_params`: the object as given, so
/// DescribeIndex answers exactly what CreateIndex was sent.
pub fn index_params(
    engine: EngineType,
    dim: i64,
    params: &serde_json::Map<String, Value>,
) -> Result<String, NodeError> {
    let need = |key: &str, (min, max): (i64, i64)| required_int(params, key, min, max);
    match engine {
        EngineType::IvfFlat | EngineType::IvfSq8 | EngineType::BinIvfFlat => {
            need("nlist", NLIST)?;
        }
        EngineType::IvfPq => {
            need("nlist", NLIST)?;
            let m = need("m", (1, i64::MAX))?;
            // Milvus 1.1 on a CPU: m must divide the dimension; codes are 8 bits.
            // Milvus 1.1's sub-quantizer counts; on a CPU m must also divide the dimension.
            const M_VALUES: [i64; 16] = [1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96];
            let valid: Vec<String> = M_VALUES
                .iter()
                .filter(|v| dim % **v == 0)
                .map(|v| v.to_string())
                .collect();
            if !M_VALUES.contains(&m) || dim % m != 0 {
                return Err(NodeError::InvalidArgument(format!(
                    "Invalid m, must be one of the following values: {} (m must divide the dimension {dim})",
                    valid.join(",")
                )));
            }
            // Milvus 1.1's CPU version accepts nbits and builds with 8 whatever it says.
            if params.contains_key("nbits") {
                need("nbits", (1, 16))?;
            }
        }
        EngineType::Hnsw => {
            need("M", HNSW_M)?;
            need("efConstruction", HNSW_EF_CONSTRUCTION)?;
        }
        EngineType::Rnsg => {
            need("search_length", NSG_SEARCH_LENGTH)?;
            need("out_degree", NSG_OUT_DEGREE)?;
            need("candidate_pool_size", NSG_CANDIDATE_POOL)?;
            need("knng", NSG_KNNG)?;
        }
        EngineType::Annoy => {
            need("n_trees", ANNOY_N_TREES)?;
        }
        _ => {}
    }
    Ok(Value::Object(params.clone()).to_string())
}

/// A search's params, checked against the collection's index type as Milvus 1.1 checks them: each
/// index type requires its own param (`nprobe`, `ef`, `search_length` or `search_k`); FLAT none.
pub fn search_params(
    engine: EngineType,
    topk: usize,
    params: &serde_json::Map<String, Value>,
) -> Result<SearchParams, NodeError> {
    let mut out = SearchParams::default();
    let need = |key: &str, min: i64, max: i64| required_int(params, key, min, max);
    match engine {
        EngineType::IvfFlat
        | EngineType::IvfSq8
        | EngineType::IvfSq8H
        | EngineType::IvfPq
        | EngineType::BinIvfFlat => out.nprobe = Some(need("nprobe", 1, MAX_NPROBE)? as usize),
        EngineType::Rnsg => {
            let (min, max) = NSG_SEARCH_LENGTH;
            out.search_length = Some(need("search_length", min, max)? as usize)
        }
        EngineType::Hnsw => out.ef = Some(need("ef", topk as i64, HNSW_MAX_EF)? as usize),
        EngineType::Annoy => {
            let search_k = need("search_k", -1, i64::MAX)?;
            if search_k != -1 && search_k < topk as i64 {
                return Err(NodeError::InvalidArgument(format!(
                    "Invalid search_k value: {search_k}. It must be -1 (n_trees × topk) or at least topk ({topk})"
                )));
            }
            out.search_k = Some(search_k)
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_over_256_mb_are_refused_naming_the_limit() {
        assert!(insert_size(MAX_INSERT_BYTES).is_ok());
        let err = insert_size(MAX_INSERT_BYTES + 1).unwrap_err();
        assert!(
            matches!(&err, NodeError::InvalidRowRecord(r) if r.contains("256 MB")),
            "{err}"
        );
        assert!(insert_size(usize::MAX).is_err());
    }

    #[test]
    fn collection_names() {
        assert!(collection_name("_a1").is_ok());
        assert!(collection_name(&"a".repeat(255)).is_ok());
        for bad in ["", "1a", "a-b", "a b", "é", &"a".repeat(256)] {
            assert!(
                matches!(collection_name(bad), Err(NodeError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranges() {
        assert!(dimension(1).is_ok() && dimension(32768).is_ok());
        assert!(dimension(0).is_err() && dimension(32769).is_err());
        assert_eq!(index_file_size(1).unwrap(), 1 << 20);
        assert!(index_file_size(0).is_err() && index_file_size(65537).is_err());
        assert!(topk(16384).is_ok() && topk(0).is_err() && topk(16385).is_err());
        assert!((1..=7).all(|m| metric(m).is_ok()));
        assert!(matches!(metric(0), Err(NodeError::InvalidMetric(_))));
        assert!(matches!(metric(99), Err(NodeError::InvalidMetric(_))));
        assert!(binary_dimension(512, MetricType::Hamming).is_ok());
        assert!(binary_dimension(12, MetricType::L2).is_ok());
        assert!(matches!(
            binary_dimension(12, MetricType::Jaccard),
            Err(NodeError::InvalidDimension(_))
        ));
    }

    #[test]
    fn index_types_follow_the_collection_metric() {
        let l2 = MetricType::L2;
        assert_eq!(index_type(2, l2).unwrap(), EngineType::IvfFlat);
        assert_eq!(index_type(11, l2).unwrap(), EngineType::Hnsw);
        for bad in [5, 7, 9, 10, 13, 99, 0] {
            assert!(
                matches!(index_type(bad, l2), Err(NodeError::InvalidIndexType(_))),
                "{bad}"
            );
        }
        assert_eq!(
            index_type(1, MetricType::Hamming).unwrap(),
            EngineType::BinFlat
        );
        assert_eq!(
            index_type(2, MetricType::Tanimoto).unwrap(),
            EngineType::BinIvfFlat
        );
        assert!(index_type(2, MetricType::Substructure).is_err());
        assert!(index_type(11, MetricType::Jaccard).is_err());
        assert_eq!(
            public_index_type(EngineType::BinIvfFlat),
            EngineType::IvfFlat
        );
    }

    #[test]
    fn index_params_are_checked_and_kept_as_given() {
        let p = |text: &str| params_json(Some(text)).unwrap();
        assert_eq!(
            index_params(EngineType::Flat, 8, &p(r#"{"nlist": 1024}"#)).unwrap(),
            r#"{"nlist":1024}"#
        );
        let err = index_params(
            EngineType::Hnsw,
            8,
            &p(r#"{"M": 3, "efConstruction": 100}"#),
        );
        assert!(
            matches!(&err, Err(NodeError::InvalidArgument(r)) if r.contains("[4, 64]")),
            "{err:?}"
        );
        assert!(index_params(EngineType::Hnsw, 8, &p(r#"{"M": 16}"#)).is_err());
        assert!(index_params(EngineType::IvfPq, 64, &p(r#"{"nlist": 8, "m": 16}"#)).is_ok());
        let err = index_params(EngineType::IvfPq, 64, &p(r#"{"nlist": 8, "m": 6}"#));
        assert!(
            matches!(&err, Err(NodeError::InvalidArgument(r)) if r.contains("1,2,4,8,16,32,64")),
            "{err:?}"
        );
        assert!(index_params(EngineType::Annoy, 8, &p(r#"{"n_trees": 0}"#)).is_err());
        assert!(
            index_params(
                EngineType::Rnsg,
                8,
                &p(r#"{"search_length": 45, "out_degree": 50, "candidate_pool_size": 300, "knng": 100}"#)
            )
            .is_ok()
        );
    }

    #[test]
    fn search_params_are_required_per_index_type() {
        let p = |text: &str| params_json(Some(text)).unwrap();
        assert_eq!(
            search_params(EngineType::Flat, 10, &p("{}")).unwrap(),
            SearchParams::default()
        );
        let err = search_params(EngineType::IvfFlat, 10, &p("{}"));
        assert!(
            matches!(&err, Err(NodeError::InvalidArgument(r)) if r.contains("must contain: nprobe")),
            "{err:?}"
        );
        assert_eq!(
            search_params(EngineType::IvfSq8, 10, &p(r#"{"nprobe": 16}"#))
                .unwrap()
                .nprobe,
            Some(16)
        );
        assert!(search_params(EngineType::IvfFlat, 10, &p(r#"{"nprobe": "16"}"#)).is_err());
        assert!(search_params(EngineType::IvfFlat, 10, &p(r#"{"nprobe": 70000}"#)).is_err());
        assert!(search_params(EngineType::Hnsw, 10, &p(r#"{"ef": 9}"#)).is_err());
        assert_eq!(
            search_params(EngineType::Hnsw, 10, &p(r#"{"ef": 10}"#))
                .unwrap()
                .ef,
            Some(10)
        );
        assert!(search_params(EngineType::Annoy, 10, &p(r#"{"search_k": 5}"#)).is_err());
        assert!(search_params(EngineType::Annoy, 10, &p(r#"{"search_k": -1}"#)).is_ok());
        assert!(search_params(EngineType::Rnsg, 10, &p(r#"{"search_length": 301}"#)).is_err());
    }

    #[test]
    fn result_sizes_are_bounded() {
        assert!(result_size(1024, 16384).is_ok());
        assert!(matches!(
            result_size(1025, 16384),
            Err(NodeError::InvalidArgument(_))
        ));
        assert!(result_size(usize::MAX, 2).is_err());
    }

    #[test]
    fn params_are_a_json_object() {
        assert!(params_json(Some("{nprobe:")).is_err());
        assert!(params_json(Some("[1]")).is_err());
        assert!(params_json(None).unwrap().is_empty());
    }
}
