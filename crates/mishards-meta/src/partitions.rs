//! Which tables a search reads, given partition tags: Milvus 1.1 matches each tag as a regular expression
//! against the whole `partition_tag`, and `_default` names the collection's own table.

use regex::Regex;

use super::schema::CollectionTables;

/// The tag of the partition every collection has: its own `Tables` row.
pub const DEFAULT_PARTITION_TAG: &str = "_default";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionSelectError {
    #[error("partition tag `{tag}` is not a valid regular expression: {reason}")]
    BadPattern { tag: String, reason: String },
    #[error("no partition of collection `{collection}` matches the tags {tags:?}")]
    NoMatch {
        collection: String,
        tags: Vec<String>,
    },
}

/// The `table_id`s to search: every table of the collection when `tags` is empty, else the collection's
/// own table for `_default` plus each partition whose tag fully matches one of the patterns.
pub fn select_tables(
    tables: &CollectionTables,
    tags: &[String],
) -> Result<Vec<String>, PartitionSelectError> {
    if tags.is_empty() {
        return Ok(std::iter::once(&tables.collection)
            .chain(&tables.partitions)
            .map(|t| t.table_id.clone())
            .collect());
    }
    let mut selected = Vec::new();
    for raw in tags {
        let tag = raw.trim();
        if tag == DEFAULT_PARTITION_TAG {
            selected.push(tables.collection.table_id.clone());
            continue;
        }
        let pattern =
            Regex::new(&format!("^(?:{tag})$")).map_err(|e| PartitionSelectError::BadPattern {
                tag: tag.to_string(),
                reason: e.to_string(),
            })?;
        selected.extend(
            tables
                .partitions
                .iter()
                .filter(|p| pattern.is_match(&p.partition_tag))
                .map(|p| p.table_id.clone()),
        );
    }
    selected.sort();
    selected.dedup();
    if selected.is_empty() {
        return Err(PartitionSelectError::NoMatch {
            collection: tables.collection.table_id.clone(),
            tags: tags.to_vec(),
        });
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{MetricType, NewTable, TableRow, TableState};

    fn row(new: NewTable, id: i64) -> TableRow {
        TableRow {
            id,
            table_id: new.table_id,
            state: TableState::Normal,
            dimension: new.dimension,
            created_on: new.created_on,
            flag: 0,
            index_file_size: new.index_file_size,
            engine_type: new.engine_type,
            index_params: new.index_params,
            metric_type: new.metric_type,
            owner_table: new.owner_table,
            partition_tag: new.partition_tag,
            version: None,
            flush_lsn: 0,
        }
    }

    fn fixture() -> CollectionTables {
        let collection = row(NewTable::collection("c", 4, 1024, MetricType::L2, 0), 1);
        let partitions = ["2024-01", "2024-02", "other"]
            .iter()
            .enumerate()
            .map(|(i, tag)| row(NewTable::partition(&collection, tag, 0), i as i64 + 2))
            .collect();
        CollectionTables {
            collection,
            partitions,
        }
    }

    fn select(tags: &[&str]) -> Result<Vec<String>, PartitionSelectError> {
        select_tables(
            &fixture(),
            &tags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn no_tags_means_every_table() {
        assert_eq!(
            select(&[]).unwrap(),
            ["c", "c_2024-01", "c_2024-02", "c_other"]
        );
    }

    #[test]
    fn tags_are_whole_match_regular_expressions() {
        assert_eq!(select(&["2024-.*"]).unwrap(), ["c_2024-01", "c_2024-02"]);
        assert_eq!(
            select(&["2024"]).unwrap_err(),
            PartitionSelectError::NoMatch {
                collection: "c".into(),
                tags: vec!["2024".into()]
            }
        );
        assert_eq!(select(&["_default", "oth.r"]).unwrap(), ["c", "c_other"]);
    }

    #[test]
    fn bad_pattern_is_reported() {
        assert!(matches!(
            select(&["("]),
            Err(PartitionSelectError::BadPattern { .. })
        ));
    }
}
