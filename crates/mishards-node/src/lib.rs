//! The data node (`mishards node --role rw|ro`): a Milvus 1.1-compatible write or read node on shared
//! storage. The gateway never imports this module.

pub mod cache;
mod checked_io;
pub mod engine;
pub mod health;
mod incoming;
pub mod index;
pub mod metrics;
pub mod probe;
pub mod segment;
pub mod segment_index;
pub mod server;
pub mod server_config;
pub mod service;
pub mod storage_lock;
pub mod validate;
pub mod vectors;
pub mod wal;

pub use server::{RunningNode, StartingNode, prepare, start};

/// The write node's log folder inside its storage folder.
pub const WAL_DIR_NAME: &str = "wal";

use mishards_meta::{MetaError, PartitionSelectError};
use mishards_proto::ErrorCode;
use mishards_proto::error::MilvusError;

/// Everything a node request can fail with; its `MilvusError` impl below maps each to a Milvus status code.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("collection `{0}` does not exist")]
    CollectionNotFound(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidDimension(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidTopk(String),
    #[error("{0}")]
    InvalidRowRecord(String),
    #[error("{0}")]
    InvalidVectorId(String),
    #[error("{0}")]
    InvalidIndexType(String),
    #[error("{0}")]
    InvalidMetric(String),
    #[error("{0}")]
    FileNotFound(String),
    #[error("{0}")]
    CacheFailed(String),
    /// A bound Milvus 1.1 sets (partitions per collection), answered with its code for it.
    #[error("{0}")]
    LimitReached(String),
    /// The write buffer is full and cannot be flushed now: Milvus's OUT_OF_MEMORY.
    #[error("{0}")]
    BufferFull(String),
    #[error(
        "this node is a read node (role ro) and does not take writes; send {0} to the write node (role rw)"
    )]
    ReadOnly(&'static str),
    #[error(transparent)]
    Partition(#[from] PartitionSelectError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    StorageLock(#[from] storage_lock::StorageLockError),
    #[error(transparent)]
    Segment(#[from] segment::SegmentError),
    #[error(transparent)]
    Config(#[from] server_config::ConfigError),
    #[error(transparent)]
    Index(#[from] segment_index::IndexError),
    #[error(
        "flushing table `{table}` failed: {source}; its rows stay in the write-ahead log and the next flush tries again"
    )]
    FlushFailed {
        table: String,
        source: Box<NodeError>,
    },
    #[error("{0}")]
    Internal(String),
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
            NodeError::InvalidMetric(_) => ErrorCode::IllegalMetricType,
            NodeError::FileNotFound(_) => ErrorCode::FileNotFound,
            NodeError::CacheFailed(_) => ErrorCode::CacheFailed,
            NodeError::BufferFull(_) => ErrorCode::OutOfMemory,
            // Milvus answers SERVER_UNSUPPORTED_ERROR, which reaches clients as UNEXPECTED_ERROR.
            NodeError::LimitReached(_) => ErrorCode::UnexpectedError,
            NodeError::ReadOnly(_) => ErrorCode::PermissionDenied,
            NodeError::Partition(e) => e.code(),
            NodeError::Meta(e) => e.code(),
            NodeError::Config(e) => e.code(),
            NodeError::Index(e) => match e {
                segment_index::IndexError::Unsupported(_) => ErrorCode::IllegalIndexType,
                segment_index::IndexError::MetricMismatch(_)
                | segment_index::IndexError::WrongKind(..) => ErrorCode::IllegalRowrecord,
                segment_index::IndexError::Params(_) => ErrorCode::IllegalArgument,
                segment_index::IndexError::Corrupt(_) => ErrorCode::UnexpectedError,
            },
            NodeError::Segment(e) if e.is_not_found() => ErrorCode::FileNotFound,
            NodeError::FlushFailed { source, .. } => source.code(),
            NodeError::Wal(wal::WalError::Backlog { .. }) => ErrorCode::OutOfMemory,
            NodeError::Wal(_)
            | NodeError::StorageLock(_)
            | NodeError::Segment(_)
            | NodeError::Internal(_) => ErrorCode::UnexpectedError,
        }
    }
}
