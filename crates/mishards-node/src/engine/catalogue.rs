//! The catalogue: collections and partitions (create, drop, list, describe) and what `count` and
//! the collection stats show of them.

use super::{Engine, every_table, table_ids};
use crate::{NodeError, validate};
use mishards_meta::{
    CollectionTables, DEFAULT_PARTITION_TAG, EngineType, FileRow, NewTable, TableRow, TableState,
    now_micros,
};

/// Milvus 1.1's bound on a collection's partitions (`CreatePartitionRequest`).
pub const MAX_PARTITIONS: usize = 4096;

impl Engine {
    /// A live collection with its partitions. While the metadata database cannot be read, the last
    /// view this node read is used, so searches of loaded data go on through an outage.
    pub async fn collection(&self, name: &str) -> Result<CollectionTables, NodeError> {
        validate::collection_name(name)?;
        match self.meta.collection_with_partitions(name).await {
            Ok(Some(tables)) => {
                if let Ok(mut known) = self.known.lock() {
                    known.insert(name.to_string(), tables.clone());
                }
                Ok(tables)
            }
            Ok(None) => {
                if let Ok(mut known) = self.known.lock() {
                    known.remove(name);
                }
                Err(NodeError::CollectionNotFound(name.into()))
            }
            Err(e) => match self.known.lock().ok().and_then(|k| k.get(name).cloned()) {
                Some(tables) => {
                    tracing::warn!(collection = name, error = %e, "metadata unreadable: using the last known collection");
                    Ok(tables)
                }
                None => Err(e.into()),
            },
        }
    }

    pub async fn create_collection(
        &self,
        name: &str,
        dim: i64,
        index_file_size_mb: i64,
        metric: i32,
    ) -> Result<(), NodeError> {
        self.writer("CreateCollection")?;
        validate::collection_name(name)?;
        validate::dimension(dim)?;
        let size = validate::index_file_size(index_file_size_mb)?;
        let metric = validate::metric(metric)?;
        validate::binary_dimension(dim, metric)?;
        let mut table = NewTable::collection(name, dim, size, metric, now_micros());
        table.flush_lsn = self.last_lsn();
        if metric.is_binary() {
            table.engine_type = EngineType::BinFlat; // as Milvus 1.1 creates binary collections
        }
        match self.meta.create_table(&table).await {
            Ok(_) => Ok(()),
            Err(mishards_meta::MetaError::AlreadyExists(_)) => match self.meta.table(name).await? {
                Some(t) if t.state == TableState::ToDelete => {
                    Err(NodeError::InvalidArgument(format!(
                        "collection `{name}` is being deleted; try again once its files are removed"
                    )))
                }
                _ => Err(NodeError::InvalidArgument(format!(
                    "collection `{name}` already exists"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    pub async fn has_collection(&self, name: &str) -> Result<bool, NodeError> {
        validate::collection_name(name)?;
        Ok(self.meta.collection_with_partitions(name).await?.is_some())
    }

    pub async fn collections(&self) -> Result<Vec<String>, NodeError> {
        Ok(self
            .meta
            .collections()
            .await?
            .into_iter()
            .map(|t| t.table_id)
            .collect())
    }

    pub async fn drop_collection(&self, name: &str) -> Result<(), NodeError> {
        self.writer("DropCollection")?;
        let tables = self.collection(name).await?;
        let _m = self.maintenance.lock().await;
        self.meta
            .mark_collection_deleted(name, now_micros())
            .await?;
        self.forget_buffered(every_table(&tables));
        Ok(())
    }

    /// Drops the buffered writes of tables that are gone.
    fn forget_buffered<'t>(&self, tables: impl IntoIterator<Item = &'t TableRow>) {
        if let Ok(mut b) = self.buffers.lock() {
            for t in tables {
                b.tables.remove(&t.table_id);
                self.stats.forget(&t.table_id);
            }
        }
    }

    pub async fn create_partition(&self, name: &str, tag: &str) -> Result<(), NodeError> {
        self.writer("CreatePartition")?;
        let tag = validate::partition_tag(tag)?;
        let tables = self.collection(name).await?;
        if tag == DEFAULT_PARTITION_TAG || tables.partitions.iter().any(|p| p.partition_tag == tag)
        {
            return Err(NodeError::InvalidArgument(format!(
                "partition `{tag}` already exists in `{name}`"
            )));
        }
        if tables.partitions.len() >= MAX_PARTITIONS {
            return Err(NodeError::LimitReached(format!(
                "The number of partitions exceeds the upper limit({MAX_PARTITIONS}): collection `{name}` \
                 has {} partitions; drop one first",
                tables.partitions.len()
            )));
        }
        let mut partition = NewTable::partition(&tables.collection, &tag, now_micros());
        partition.flush_lsn = self.last_lsn();
        match self.meta.create_table(&partition).await {
            Ok(_) => Ok(()),
            Err(mishards_meta::MetaError::AlreadyExists(t)) => {
                Err(NodeError::InvalidArgument(format!(
                    "partition table `{t}` exists already (being deleted, or a collection of that name)"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn has_partition(&self, name: &str, tag: &str) -> Result<bool, NodeError> {
        let tables = self.collection(name).await?;
        let tag = tag.trim();
        Ok(
            tag == DEFAULT_PARTITION_TAG
                || tables.partitions.iter().any(|p| p.partition_tag == tag),
        )
    }

    pub async fn partitions(&self, name: &str) -> Result<Vec<String>, NodeError> {
        let tables = self.collection(name).await?;
        Ok(std::iter::once(DEFAULT_PARTITION_TAG.to_string())
            .chain(tables.partitions.into_iter().map(|p| p.partition_tag))
            .collect())
    }

    pub async fn drop_partition(&self, name: &str, tag: &str) -> Result<(), NodeError> {
        self.writer("DropPartition")?;
        let tag = validate::partition_tag(tag)?;
        if tag == DEFAULT_PARTITION_TAG {
            return Err(NodeError::InvalidArgument(
                "the `_default` partition cannot be dropped".into(),
            ));
        }
        let tables = self.collection(name).await?;
        let partition = partition_table(&tables, &tag)?.clone();
        let _m = self.maintenance.lock().await;
        self.meta
            .mark_table_deleted(&partition.table_id, now_micros())
            .await?;
        self.forget_buffered([&partition]);
        Ok(())
    }

    /// The table rows an insert, delete or by-id read addresses: one partition (`_default` = the
    /// collection itself) or, without a tag, every table of the collection.
    pub(super) fn tables_for_tag<'t>(
        tables: &'t CollectionTables,
        tag: &str,
    ) -> Result<Vec<&'t TableRow>, NodeError> {
        let tag = tag.trim();
        if tag.is_empty() {
            return Ok(every_table(tables).collect());
        }
        Ok(vec![partition_table(tables, tag)?])
    }

    /// Rows in searchable files (deleted rows excluded once flushed).
    pub async fn count(&self, name: &str) -> Result<i64, NodeError> {
        let tables = self.collection(name).await?;
        Ok(self
            .meta
            .searchable_files(&table_ids(&tables))
            .await?
            .iter()
            .map(|f| f.row_count)
            .sum())
    }

    /// Milvus's `get_collection_stats` JSON: the default partition first, only RAW, TO_INDEX and INDEX files.
    pub async fn stats(&self, name: &str) -> Result<String, NodeError> {
        let tables = self.collection(name).await?;
        let files = self.meta.searchable_files(&table_ids(&tables)).await?;
        let mut total = 0;
        let partitions: Vec<serde_json::Value> = every_table(&tables)
            .map(|t| {
                let mine: Vec<&FileRow> =
                    files.iter().filter(|f| f.table_id == t.table_id).collect();
                let rows: i64 = mine.iter().map(|f| f.row_count).sum();
                total += rows;
                let tag = if t.is_partition() {
                    t.partition_tag.as_str()
                } else {
                    DEFAULT_PARTITION_TAG
                };
                serde_json::json!({
                    "tag": tag,
                    "row_count": rows,
                    "segments": mine.iter().map(|f| serde_json::json!({
                        "name": f.segment_id,
                        "row_count": f.row_count,
                        "index_name": f.engine_type.stats_name(),
                        "data_size": f.file_size,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(serde_json::json!({ "row_count": total, "partitions": partitions }).to_string())
    }
}

pub(super) fn partition_table<'t>(
    tables: &'t CollectionTables,
    tag: &str,
) -> Result<&'t TableRow, NodeError> {
    if tag == DEFAULT_PARTITION_TAG {
        return Ok(&tables.collection);
    }
    tables
        .partitions
        .iter()
        .find(|p| p.partition_tag == tag)
        .ok_or_else(|| {
            NodeError::InvalidArgument(format!(
                "partition `{tag}` does not exist in collection `{}`",
                tables.collection.table_id
            ))
        })
}
