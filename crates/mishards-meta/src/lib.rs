//! The metadata store: Milvus 1.1's `Tables` / `TableFiles` / `Environment` schema on MySQL or SQLite.
//! Only the write node writes it; the gateway and the read nodes read it.

mod partitions;
mod schema;
mod store;
mod uri;
mod wait;

use mishards_proto::ErrorCode;
use mishards_proto::error::MilvusError;

pub use partitions::{
    DEFAULT_PARTITION_TAG, PartitionSelectError, TagPatterns, all_tables, check_search_tags,
    select_matching, select_tables,
};
pub use schema::*;
pub use store::{CollectionIndex, FileChanges, MetaOptions, MetaStore, Retype, SchemaStatus};
pub use uri::{MetaUri, MySqlTarget, SQLITE_FILE_NAME, SecretUri, SqliteTarget, mask_password};
pub use wait::{Backoff, MetaWait, open_when_ready, try_open};

/// Everything that can go wrong talking to the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("invalid metadata URI `{uri}`: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("cannot connect to metadata database `{uri}`: {source}")]
    Connect { uri: String, source: sqlx::Error },
    #[error(
        "metadata table `{table}` does not have Milvus 1.1's columns: {source}; this database was not made by Milvus 1.1 or mishards (drop the table or point the node at another database)"
    )]
    SchemaMismatch {
        table: &'static str,
        source: sqlx::Error,
    },
    /// The database answers, but the write node has not created Milvus's tables yet.
    #[error("{}", missing_tables(.tables))]
    SchemaMissing { tables: Vec<&'static str> },
    #[error("metadata query failed ({op}): {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
    #[error("`{0}` already exists")]
    AlreadyExists(String),
    #[error("`{0}` not found")]
    NotFound(String),
    /// A transaction found a row in another state than it expected (another change got there first);
    /// nothing of it was kept.
    #[error("metadata changed meanwhile, nothing was written: {0}")]
    Conflict(String),
    #[error(
        "metadata query ({op}) took longer than {after:?}: the metadata database is locked or overloaded; retry later"
    )]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },
}

/// "metadata table `Tables` does not exist yet…", "metadata tables `Tables`, `TableFiles` do not…".
fn missing_tables(tables: &[&str]) -> String {
    let names = tables
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() == 1 {
        format!(
            "metadata table {names} does not exist yet: the write node (mishards node --role rw) creates it"
        )
    } else {
        format!(
            "metadata tables {names} do not exist yet: the write node (mishards node --role rw) creates them"
        )
    }
}

impl MilvusError for MetaError {
    fn code(&self) -> ErrorCode {
        match self {
            MetaError::NotFound(_) => ErrorCode::CollectionNotExists,
            MetaError::AlreadyExists(_) => ErrorCode::IllegalArgument,
            MetaError::InvalidUri { .. }
            | MetaError::Connect { .. }
            | MetaError::SchemaMismatch { .. }
            | MetaError::SchemaMissing { .. }
            | MetaError::Query { .. }
            | MetaError::Timeout { .. }
            | MetaError::Conflict(_) => ErrorCode::MetaFailed,
        }
    }
}

impl MilvusError for PartitionSelectError {
    fn code(&self) -> ErrorCode {
        ErrorCode::IllegalArgument
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
}
