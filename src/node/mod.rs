//! The data node (`mishards node --role rw|ro`): a Milvus 1.1-compatible write or read node on shared
//! storage. The gateway never imports this module.

pub mod cache;
pub mod engine;
pub mod index;
pub mod segment;
pub mod server;
pub mod service;
pub mod validate;
pub mod wal;

pub use server::{RunningNode, start};

/// The write node's log folder inside its storage folder.
pub const WAL_DIR_NAME: &str = "wal";

use crate::meta::{MetaError, PartitionSelectError};

/// Everything a node request can fail with; `crate::error` maps each to its Milvus status code.
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
    InvalidNlist(String),
    #[error("{0}")]
    InvalidMetric(String),
    #[error("{0}")]
    FileNotFound(String),
    #[error("{0}")]
    CacheFailed(String),
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
    Segment(#[from] segment::SegmentError),
    #[error("{0}")]
    Internal(String),
}
