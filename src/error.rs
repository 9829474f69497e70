//! The one place where errors become Milvus `Status` codes. Each module keeps its own `thiserror` enum;
//! this file decides, for all of them, which `ErrorCode` a client sees. The reason is the error's own
//! message, written to be acted on.

use crate::gateway::GatewayError;
use crate::meta::{MetaError, PartitionSelectError};
use crate::node::NodeError;
use crate::proto::{ErrorCode, Status};

/// An error that a Milvus client can be told about.
pub trait MilvusError: std::error::Error {
    fn code(&self) -> ErrorCode;

    fn to_status(&self) -> Status {
        status(self.code(), self.to_string())
    }
}

/// A `Status` with `code` and `reason`.
pub fn status(code: ErrorCode, reason: impl Into<String>) -> Status {
    Status {
        error_code: code as i32,
        reason: reason.into(),
    }
}

/// The `Status` of a call that went well.
pub fn success() -> Status {
    status(ErrorCode::Success, "")
}

impl MilvusError for MetaError {
    fn code(&self) -> ErrorCode {
        match self {
            MetaError::NotFound(_) => ErrorCode::CollectionNotExists,
            MetaError::AlreadyExists(_) => ErrorCode::IllegalArgument,
            MetaError::InvalidUri { .. }
            | MetaError::Connect { .. }
            | MetaError::SchemaMismatch { .. }
            | MetaError::Query { .. }
            | MetaError::Conflict(_) => ErrorCode::MetaFailed,
        }
    }
}

impl MilvusError for PartitionSelectError {
    fn code(&self) -> ErrorCode {
        ErrorCode::IllegalArgument
    }
}

impl MilvusError for NodeError {
    fn code(&self) -> ErrorCode {
        match self {
            NodeError::CollectionNotFound(_) => ErrorCode::CollectionNotExists,
            NodeError::InvalidName(_) => ErrorCode::IllegalCollectionName,
            NodeError::InvalidDimension(_) => ErrorCode::IllegalDimension,
            NodeError::InvalidArgument(_) => ErrorCode::IllegalArgument,
            NodeError::InvalidTopk(_) => ErrorCode::IllegalTopk,
            NodeError::InvalidRowRecord(_) => ErrorCode::IllegalRowrecord,
            NodeError::InvalidVectorId(_) => ErrorCode::IllegalVectorId,
            NodeError::InvalidIndexType(_) => ErrorCode::IllegalIndexType,
            NodeError::InvalidNlist(_) => ErrorCode::IllegalNlist,
            NodeError::InvalidMetric(_) => ErrorCode::IllegalMetricType,
            NodeError::FileNotFound(_) => ErrorCode::FileNotFound,
            NodeError::CacheFailed(_) => ErrorCode::CacheFailed,
            NodeError::ReadOnly(_) => ErrorCode::PermissionDenied,
            NodeError::Partition(e) => e.code(),
            NodeError::Meta(e) => e.code(),
            NodeError::Segment(e) if e.is_not_found() => ErrorCode::FileNotFound,
            NodeError::Wal(_) | NodeError::Segment(_) | NodeError::Internal(_) => {
                ErrorCode::UnexpectedError
            }
        }
    }
}

impl MilvusError for GatewayError {
    fn code(&self) -> ErrorCode {
        match self {
            GatewayError::Unreachable { .. } | GatewayError::WriteNodeDown { .. } => {
                ErrorCode::ConnectFailed
            }
            GatewayError::Unanswered { .. }
            | GatewayError::Actor { .. }
            | GatewayError::Start(_) => ErrorCode::UnexpectedError,
            GatewayError::CollectionNotFound(_) => ErrorCode::CollectionNotExists,
            GatewayError::Partition(e) => e.code(),
            GatewayError::Merge(_) => ErrorCode::IllegalSearchResult,
            GatewayError::Meta(e) => e.code(),
            GatewayError::Node(status) => {
                ErrorCode::try_from(status.error_code).unwrap_or(ErrorCode::UnexpectedError)
            }
        }
    }

    fn to_status(&self) -> Status {
        match self {
            // A node's own answer travels unchanged.
            GatewayError::Node(status) => status.clone(),
            other => status(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_errors_map_to_milvus_codes_with_their_message() {
        let st = MetaError::NotFound("c1".into()).to_status();
        assert_eq!(st.error_code, ErrorCode::CollectionNotExists as i32);
        assert_eq!(st.reason, "`c1` not found");
        let st = MetaError::InvalidUri {
            uri: "x".into(),
            reason: "y".into(),
        }
        .to_status();
        assert_eq!(st.error_code, ErrorCode::MetaFailed as i32);
    }

    #[test]
    fn success_is_code_zero() {
        assert_eq!(success().error_code, 0);
    }
}
