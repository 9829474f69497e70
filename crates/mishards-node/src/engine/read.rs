//! The read path: searches (segment cache → kernels → merged top-k), reads by id, and loading or
//! releasing a collection's files in the segment cache.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

use super::{Engine, Query, RAW_FILES, blocking, every_table, table_ids};
use crate::cache::LoadedSegment;
use crate::index::TopK;
use crate::segment_index::{SearchParams, float_metric};
use crate::vectors::{Vectors, VectorsRef, row_width};
use crate::{NodeError, validate};
use mishards_meta::{
    CollectionTables, FileRow, FileType, TableRow, TagPatterns, check_search_tags, select_matching,
};

impl Engine {
    /// Searches the collection's searchable files (of the tables the tags select). `None` when the
    /// collection has no data yet (Milvus answers such a search with an empty result).
    pub async fn search(
        &self,
        name: &str,
        tags: &[String],
        query: &Query<'_>,
    ) -> Result<Option<TopK>, NodeError> {
        let tables = self.collection(name).await?;
        let params = check_query(&tables.collection, query)?;
        let selected = tables_of(&tables, tags).await?;
        let files = self.meta.searchable_files(&selected).await?;
        self.search_files(&tables.collection, files, query, params)
            .await
    }

    /// Searches the given files (`TableFiles.id`s, as decimal strings) of a collection. A file replaced
    /// since the caller looked (TO_DELETE but still on disk) is searched as asked.
    pub async fn search_in_files(
        &self,
        name: &str,
        file_ids: &[String],
        query: &Query<'_>,
    ) -> Result<Option<TopK>, NodeError> {
        let tables = self.collection(name).await?;
        // As in Milvus, the query is checked before the files: a wrong dimension is ILLEGAL_DIMENSION
        // whatever files are named.
        let params = check_query(&tables.collection, query)?;
        if file_ids.is_empty() {
            return Err(NodeError::InvalidArgument("no file ids given".into()));
        }
        let ids = parse_file_ids(file_ids)?;
        let files = match self.meta.files_by_ids(&ids).await {
            Ok(files) => files,
            Err(e) => {
                // Metadata unreadable: the files this node has loaded can still be searched.
                let cached: Option<Vec<Arc<LoadedSegment>>> =
                    ids.iter().map(|id| self.cache.peek(*id)).collect();
                let Some(segments) = cached else {
                    return Err(e.into());
                };
                tracing::warn!(error = %e, files = ids.len(), "metadata unreadable: searching cached files");
                return self
                    .search_segments(&tables.collection, segments, query, params)
                    .await
                    .map(Some);
            }
        };
        let names: HashSet<&str> = every_table(&tables).map(|t| t.table_id.as_str()).collect();
        let readable = [
            FileType::Raw,
            FileType::ToIndex,
            FileType::Index,
            FileType::Backup,
            FileType::ToDelete,
        ];
        let found: HashSet<i64> = files.iter().map(|f| f.id).collect();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains(id))
            .map(i64::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(NodeError::FileNotFound(format!(
                "files {} do not exist",
                missing.join(", ")
            )));
        }
        if let Some(f) = files
            .iter()
            .find(|f| !names.contains(f.table_id.as_str()) || !readable.contains(&f.file_type))
        {
            return Err(NodeError::FileNotFound(format!(
                "file {} ({}, {}) is not a searchable file of collection `{name}`",
                f.id, f.table_id, f.file_type
            )));
        }
        self.search_files(&tables.collection, files, query, params)
            .await
    }

    async fn search_files(
        &self,
        collection: &TableRow,
        files: Vec<FileRow>,
        query: &Query<'_>,
        params: SearchParams,
    ) -> Result<Option<TopK>, NodeError> {
        if files.is_empty() {
            return Ok(None);
        }
        let segments = self.load_files(files).await?;
        self.search_segments(collection, segments, query, params)
            .await
            .map(Some)
    }

    async fn search_segments(
        &self,
        collection: &TableRow,
        segments: Vec<Arc<LoadedSegment>>,
        query: &Query<'_>,
        params: SearchParams,
    ) -> Result<TopK, NodeError> {
        let metric = collection.metric_type;
        let (vectors, nq, k) = (query.vectors.to_owned(), query.nq, query.k);
        // Segment spans run on rayon's threads: their parent is handed over explicitly.
        let parent = tracing::Span::current();
        let merged = blocking(move || {
            segments
                .par_iter()
                .map(|s| {
                    tracing::info_span!(
                        parent: &parent,
                        "segment",
                        file = s.file_id,
                        rows = s.rows(),
                        live_rows = s.live_rows(),
                        index = s.index_name(),
                    )
                    .in_scope(|| s.search(vectors.as_ref(), k, metric, &params))
                })
                .try_reduce(
                    || TopK::empty(nq, k, float_metric(metric)),
                    |mut a, b| {
                        a.merge(&b);
                        Ok(a)
                    },
                )
        })
        .await?;
        Ok(merged?)
    }

    /// Loads files through the cache, in parallel.
    async fn load_files(&self, files: Vec<FileRow>) -> Result<Vec<Arc<LoadedSegment>>, NodeError> {
        let storage = self.opts.storage.clone();
        let cache = self.cache.clone();
        blocking(move || {
            files
                .par_iter()
                .map(|f| cache.get(&storage, f).map_err(NodeError::from))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    }

    /// The stored vector of each id (`None` where absent or deleted), from the raw files of the tags' tables.
    pub async fn vectors_by_id(
        &self,
        name: &str,
        tag: &str,
        ids: &[i64],
    ) -> Result<Vec<Option<Vectors>>, NodeError> {
        if ids.is_empty() {
            return Err(NodeError::InvalidArgument("no vector ids given".into()));
        }
        let tables = self.collection(name).await?;
        let targets: Vec<String> = Self::tables_for_tag(&tables, tag)?
            .into_iter()
            .map(|t| t.table_id.clone())
            .collect();
        let files = self.meta.files_of_tables(&targets, &RAW_FILES).await?;
        let segments = self.load_files(files).await?;
        let ids = ids.to_vec();
        // One pass over each segment's ids, off the async threads: many ids × large segments must
        // cost rows + ids, and never stall other requests.
        blocking(move || {
            let mut found: Vec<Option<Vectors>> = vec![None; ids.len()];
            let mut wanted: HashMap<i64, Vec<usize>> = HashMap::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                wanted.entry(*id).or_default().push(i);
            }
            for segment in &segments {
                if wanted.is_empty() {
                    break;
                }
                for (id, vector) in segment.vectors_of(&wanted) {
                    for i in wanted.remove(&id).unwrap_or_default() {
                        found[i] = Some(vector.clone());
                    }
                }
            }
            found
        })
        .await
    }

    /// Live ids of one segment of the collection, in row order.
    pub async fn segment_ids(&self, name: &str, segment_name: &str) -> Result<Vec<i64>, NodeError> {
        let tables = self.collection(name).await?;
        let files = self
            .meta
            .files_of_tables(&table_ids(&tables), &RAW_FILES)
            .await?;
        let file = files
            .into_iter()
            .find(|f| f.segment_id == segment_name)
            .ok_or_else(|| {
                NodeError::FileNotFound(format!(
                    "segment `{segment_name}` does not exist in `{name}`"
                ))
            })?;
        let segments = self.load_files(vec![file]).await?;
        Ok(segments.first().map(|s| s.live_ids()).unwrap_or_default())
    }

    /// Loads the collection's (or the tags' partitions') searchable files into the cache.
    pub async fn preload(&self, name: &str, tags: &[String]) -> Result<(), NodeError> {
        let tables = self.collection(name).await?;
        let files = self
            .meta
            .searchable_files(&tables_of(&tables, tags).await?)
            .await?;
        let bytes: u64 = files
            .iter()
            .map(|f| u64::try_from(f.file_size).unwrap_or(0))
            .sum();
        // The cache's size now: `set_config cache.cache_size` may have changed it since the start.
        let capacity = self.cache.capacity() as u64;
        if bytes > capacity {
            return Err(NodeError::CacheFailed(format!(
                "collection `{name}` needs {} MB but the segment cache holds {} MB: raise cache.cache_size",
                bytes.div_ceil(1 << 20),
                capacity >> 20
            )));
        }
        self.load_files(files).await.map(drop)
    }

    pub async fn release(&self, name: &str, tags: &[String]) -> Result<(), NodeError> {
        let tables = self.collection(name).await?;
        let files = self
            .meta
            .searchable_files(&tables_of(&tables, tags).await?)
            .await?;
        self.cache
            .evict(&files.iter().map(|f| f.id).collect::<Vec<_>>());
        Ok(())
    }

    /// Makes the next search re-read the delete marks of these files (`TableFiles.id`s).
    pub async fn reload_segments(&self, name: &str, file_ids: &[String]) -> Result<(), NodeError> {
        self.collection(name).await?;
        let ids = parse_file_ids(file_ids)?;
        self.cache.forget_marks(&ids);
        Ok(())
    }
}

/// Query vectors must be of the collection's kind (ILLEGAL_ROWRECORD) and dimension
/// (ILLEGAL_DIMENSION), and the params fit its index type, even when there is nothing to search.
/// Returns the checked search params.
fn check_query(collection: &TableRow, query: &Query<'_>) -> Result<SearchParams, NodeError> {
    let dim = collection.dimension as usize;
    let binary = query.vectors.is_binary();
    validate::vector_kind(&collection.table_id, collection.metric_type, binary)?;
    if query.nq == 0 || query.vectors.values() != query.nq * row_width(dim, binary) {
        return Err(NodeError::InvalidDimension(format!(
            "every query vector must have the collection's dimension {dim}{}",
            if binary { " (bits)" } else { "" }
        )));
    }
    if let VectorsRef::Float(values) = query.vectors
        && let Some(reason) =
            mishards_proto::limits::non_finite_query_problem(values.chunks(dim.max(1)))
    {
        return Err(NodeError::InvalidRowRecord(reason));
    }
    validate::search_params(collection.engine_type, query.k, query.params)
}

/// The tables a search (or preload, or release) of these tags reads. Compiling the tags' patterns is
/// CPU work bounded by `check_search_tags`: done on a blocking thread unless cached, so a search naming
/// thousands of tags does not hold up an async worker.
async fn tables_of(tables: &CollectionTables, tags: &[String]) -> Result<Vec<String>, NodeError> {
    if tags.is_empty() {
        return Ok(table_ids(tables));
    }
    let patterns = match TagPatterns::cached(tags) {
        Some(hit) => hit,
        None => {
            check_search_tags(tags)?;
            let tags = tags.to_vec();
            blocking(move || TagPatterns::compile(&tags)).await??
        }
    };
    Ok(select_matching(tables, &patterns)?)
}

/// `TableFiles.id`s as clients send them: decimal strings.
fn parse_file_ids(file_ids: &[String]) -> Result<Vec<i64>, NodeError> {
    file_ids
        .iter()
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| NodeError::InvalidArgument(format!("file id `{s}` is not a number")))
        })
        .collect()
}
