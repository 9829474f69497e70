//! Milvus 1.1's limits on names, dimensions, sizes and search parameters, each failing with the status code
//! Milvus uses and a reason a person can act on.

use serde_json::Value;

use super::NodeError;
use mishards_meta::{EngineType, MetricType};

pub use mishards_proto::limits::{
    MAX_DIMENSION, MAX_INDEX_FILE_SIZE_MB, MAX_INSERT_BYTES, MAX_NAME_LEN, MAX_NLIST, MAX_NPROBE,
};

/// An insert of `floats` float32 values: at most [`MAX_INSERT_BYTES`] of them.
pub fn insert_size(floats: usize) -> Result<(), NodeError> {
    let bytes = floats.saturating_mul(4);
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

/// The metric types a float collection can use here.
pub fn metric(code: i32) -> Result<MetricType, NodeError> {
    match MetricType::try_from(code as i64) {
        Ok(m @ (MetricType::L2 | MetricType::Ip)) => Ok(m),
        Ok(m) => Err(NodeError::InvalidMetric(format!(
            "metric type {m} is not supported yet: binary collections arrive with the index work; use L2 or IP"
        ))),
        Err(_) => Err(NodeError::InvalidMetric(format!(
            "metric type {code} is not a Milvus metric type"
        ))),
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

/// The index types this node builds.
pub fn index_type(code: i32) -> Result<EngineType, NodeError> {
    match EngineType::try_from(code as i64) {
        Ok(t @ (EngineType::Flat | EngineType::IvfFlat)) => Ok(t),
        Ok(t) => Err(NodeError::InvalidIndexType(format!(
            "index type {t} is not supported yet: FLAT and IVF_FLAT are"
        ))),
        Err(_) => Err(NodeError::InvalidIndexType(format!(
            "index type {code} is not a Milvus index type"
        ))),
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

/// An integer parameter within `range`, or `None` when absent.
fn int_param(
    params: &serde_json::Map<String, Value>,
    key: &str,
    max: i64,
    error: fn(String) -> NodeError,
) -> Result<Option<i64>, NodeError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(error(format!(
                "{key} {v} is out of range: it must be an integer from 1 to {max}"
            ))),
        },
    }
}

/// The build parameters of an index, normalised to the JSON stored in `Tables.index_params`.
pub fn index_params(
    engine: EngineType,
    params: &serde_json::Map<String, Value>,
) -> Result<String, NodeError> {
    match engine {
        EngineType::IvfFlat => {
            let nlist = int_param(params, "nlist", MAX_NLIST, NodeError::InvalidNlist)?
                .ok_or_else(|| {
                    NodeError::InvalidNlist(
                        "IVF_FLAT needs `nlist` (1 to 65536) in its params".into(),
                    )
                })?;
            Ok(serde_json::json!({ "nlist": nlist }).to_string())
        }
        _ => Ok("{}".to_string()),
    }
}

/// `nprobe` of a search, 1..65536; `None` when absent (the index's default applies).
pub fn nprobe(params: &serde_json::Map<String, Value>) -> Result<Option<usize>, NodeError> {
    Ok(int_param(params, "nprobe", MAX_NPROBE, NodeError::InvalidArgument)?.map(|n| n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_over_256_mb_are_refused_naming_the_limit() {
        assert!(insert_size(MAX_INSERT_BYTES / 4).is_ok());
        let err = insert_size(MAX_INSERT_BYTES / 4 + 1).unwrap_err();
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
        assert!(metric(1).is_ok() && metric(2).is_ok());
        assert!(matches!(metric(3), Err(NodeError::InvalidMetric(_))));
        assert!(matches!(metric(99), Err(NodeError::InvalidMetric(_))));
        assert!(matches!(
            index_type(11),
            Err(NodeError::InvalidIndexType(_))
        ));
        assert_eq!(index_type(2).unwrap(), EngineType::IvfFlat);
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
    fn params() {
        let p = params_json(Some(r#"{"nlist": 128}"#)).unwrap();
        assert_eq!(
            index_params(EngineType::IvfFlat, &p).unwrap(),
            r#"{"nlist":128}"#
        );
        let p = params_json(Some(r#"{"nlist": 0}"#)).unwrap();
        assert!(matches!(
            index_params(EngineType::IvfFlat, &p),
            Err(NodeError::InvalidNlist(_))
        ));
        assert!(matches!(
            index_params(EngineType::IvfFlat, &params_json(None).unwrap()),
            Err(NodeError::InvalidNlist(_))
        ));
        assert!(params_json(Some("{nprobe:")).is_err());
        assert!(params_json(Some("[1]")).is_err());
        assert_eq!(
            nprobe(&params_json(Some(r#"{"nprobe": 16}"#)).unwrap()).unwrap(),
            Some(16)
        );
        assert!(nprobe(&params_json(Some(r#"{"nprobe": "16"}"#)).unwrap()).is_err());
        assert!(nprobe(&params_json(Some(r#"{"nprobe": 70000}"#)).unwrap()).is_err());
    }
}
