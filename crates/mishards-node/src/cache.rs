//! The bytes-bounded segment cache: loaded segment files (vectors or index) with their delete marks,
//! least recently used evicted first. A file whose `updated_time` moved keeps its vectors and reloads
//! only its delete marks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::index::{BinaryMetric, RowBitmap, TopK, search_binary_flat, search_flat};
use super::segment::{self, RawSegment, SegmentError};
use super::segment_index::{IndexError, SearchParams, SegmentIndex, float_metric};
use super::vectors::{Vectors, VectorsRef};
use mishards_meta::{FileRow, FileType, MetricType};

/// What a file holds once loaded.
pub enum SegmentData {
    Raw(RawSegment),
    /// An index file: the index and the ids of its rows in their original (raw file) order.
    Index {
        index: Box<SegmentIndex>,
        ids: Vec<i64>,
    },
}

impl SegmentData {
    fn ids(&self) -> &[i64] {
        match self {
            SegmentData::Raw(raw) => &raw.ids,
            SegmentData::Index { ids, .. } => ids,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            SegmentData::Raw(raw) => raw.bytes(),
            SegmentData::Index { ids, index } => ids.len() * 8 + index.memory_bytes(),
        }
    }
}

/// One file ready to search: its data and the rows its segment has deleted.
pub struct LoadedSegment {
    pub file_id: i64,
    pub updated_time: i64,
    pub data: Arc<SegmentData>,
    pub deleted: Option<Arc<RowBitmap>>,
}

impl LoadedSegment {
    pub fn rows(&self) -> usize {
        self.data.ids().len()
    }

    pub fn live_rows(&self) -> usize {
        self.rows() - self.deleted.as_ref().map_or(0, |d| d.count())
    }

    /// How this file is searched, in Milvus's index names (a raw file is searched exhaustively).
    pub fn index_name(&self) -> &'static str {
        match &*self.data {
            SegmentData::Raw(raw) if raw.vectors.is_binary() => "BIN_FLAT",
            SegmentData::Raw(_) => "FLAT",
            SegmentData::Index { index, .. } => index.engine_type().name(),
        }
    }

    /// The top `k` of each query under the collection's `metric`; `params` apply to index files.
    pub fn search(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        metric: MetricType,
        params: &SearchParams,
    ) -> Result<TopK, IndexError> {
        let deleted = self.deleted.as_deref();
        match &*self.data {
            SegmentData::Raw(raw) => match (&raw.vectors, queries) {
                (Vectors::Float(data), VectorsRef::Float(q)) => Ok(search_flat(
                    q,
                    data,
                    &raw.ids,
                    raw.dim,
                    k,
                    float_metric(metric),
                    deleted,
                )),
                (Vectors::Binary(data), VectorsRef::Binary(q)) => {
                    let metric = BinaryMetric::from_code(metric.code())
                        .ok_or(IndexError::MetricMismatch(metric))?;
                    Ok(search_binary_flat(
                        q, data, &raw.ids, raw.dim, k, metric, deleted,
                    ))
                }
                _ => Err(IndexError::MetricMismatch(metric)),
            },
            SegmentData::Index { index, .. } => index.search(queries, k, params, deleted),
        }
    }

    /// Live ids of this file, in row order.
    pub fn live_ids(&self) -> Vec<i64> {
        let ids = self.data.ids();
        match &self.deleted {
            Some(d) => ids
                .iter()
                .enumerate()
                .filter(|(row, _)| !d.contains(*row))
                .map(|(_, id)| *id)
                .collect(),
            None => ids.to_vec(),
        }
    }

    /// The vector stored for `id`, unless deleted. Only raw files answer; index files return `None`.
    /// The live rows whose ids `wanted` holds, with their vectors, in one pass over the segment.
    pub fn vectors_of<V>(&self, wanted: &HashMap<i64, V>) -> Vec<(i64, Vectors)> {
        let SegmentData::Raw(raw) = &*self.data else {
            return Vec::new();
        };
        raw.ids
            .iter()
            .enumerate()
            .filter(|(row, id)| {
                wanted.contains_key(id) && !self.deleted.as_ref().is_some_and(|d| d.contains(*row))
            })
            .filter_map(|(row, id)| raw.vector(row).map(|v| (*id, v)))
            .collect()
    }
}

/// Reads a file from disk (raw or index, per its type) with its segment's delete marks.
pub fn load(storage: &Path, file: &FileRow) -> Result<LoadedSegment, SegmentError> {
    let path = segment::file_path(storage, file);
    let data = if file.file_type == FileType::Index {
        let (index, ids) = segment::read_index(&path)?;
        SegmentData::Index {
            index: Box::new(index),
            ids,
        }
    } else {
        SegmentData::Raw(segment::read_raw(&path)?)
    };
    let data = Arc::new(data);
    let deleted = deleted_rows(storage, file, data.ids())?;
    Ok(LoadedSegment {
        file_id: file.id,
        updated_time: file.updated_time,
        data,
        deleted,
    })
}

fn deleted_rows(
    storage: &Path,
    file: &FileRow,
    ids: &[i64],
) -> Result<Option<Arc<RowBitmap>>, SegmentError> {
    let deleted = segment::read_deleted(&segment::deleted_path(storage, file))?;
    if deleted.is_empty() {
        return Ok(None);
    }
    let mut bitmap = RowBitmap::new(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if deleted.binary_search(id).is_ok() {
            bitmap.set(row);
        }
    }
    Ok((!bitmap.is_empty()).then(|| Arc::new(bitmap)))
}

struct Entry {
    segment: Arc<LoadedSegment>,
    bytes: usize,
    last_used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<i64, Entry>,
    bytes: usize,
    clock: u64,
}

/// Loaded segments by `TableFiles.id`, bounded by the bytes of their vectors.
pub struct SegmentCache {
    capacity: AtomicUsize,
    state: Mutex<State>,
}

impl SegmentCache {
    pub fn new(capacity_bytes: usize) -> Self {
        SegmentCache {
            capacity: AtomicUsize::new(capacity_bytes),
            state: Mutex::new(State::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the bound; entries beyond it go at the next insert.
    pub fn set_capacity(&self, bytes: usize) {
        self.capacity.store(bytes, Ordering::Relaxed);
    }

    /// The loaded file, from the cache when its `updated_time` matches, else read (a changed file keeps
    /// its vectors and re-reads only its delete marks).
    pub fn get(&self, storage: &Path, file: &FileRow) -> Result<Arc<LoadedSegment>, SegmentError> {
        let cached = self.lookup(file.id);
        let segment = match cached {
            Some(s) if s.updated_time == file.updated_time => return Ok(s),
            Some(s) => Arc::new(LoadedSegment {
                file_id: file.id,
                updated_time: file.updated_time,
                deleted: deleted_rows(storage, file, s.data.ids())?,
                data: s.data.clone(),
            }),
            None => Arc::new(load(storage, file)?),
        };
        self.insert(segment.clone());
        Ok(segment)
    }

    /// The loaded file if cached, whatever its version (used while metadata cannot be read).
    pub fn peek(&self, file_id: i64) -> Option<Arc<LoadedSegment>> {
        self.lookup(file_id)
    }

    fn lookup(&self, file_id: i64) -> Option<Arc<LoadedSegment>> {
        let mut state = self.state.lock().ok()?;
        state.clock += 1;
        let clock = state.clock;
        state.entries.get_mut(&file_id).map(|e| {
            e.last_used = clock;
            e.segment.clone()
        })
    }

    fn insert(&self, segment: Arc<LoadedSegment>) {
        let bytes = segment.data.bytes();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let capacity = self.capacity();
        if bytes > capacity {
            return;
        }
        state.clock += 1;
        let clock = state.clock;
        if let Some(old) = state.entries.insert(
            segment.file_id,
            Entry {
                segment,
                bytes,
                last_used: clock,
            },
        ) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        while state.bytes > capacity {
            let Some((&victim, _)) = state.entries.iter().min_by_key(|(_, e)| e.last_used) else {
                break;
            };
            if let Some(e) = state.entries.remove(&victim) {
                state.bytes -= e.bytes;
            }
        }
    }

    /// Forgets files (released collections, reloaded or removed files).
    pub fn evict(&self, file_ids: &[i64]) {
        if let Ok(mut state) = self.state.lock() {
            for id in file_ids {
                if let Some(e) = state.entries.remove(id) {
                    state.bytes -= e.bytes;
                }
            }
        }
    }

    /// Keeps the files' vectors but makes the next `get` re-read their delete marks.
    pub fn forget_marks(&self, file_ids: &[i64]) {
        if let Ok(mut state) = self.state.lock() {
            for id in file_ids {
                if let Some(e) = state.entries.get_mut(id) {
                    e.segment = Arc::new(LoadedSegment {
                        file_id: e.segment.file_id,
                        updated_time: i64::MIN,
                        data: e.segment.data.clone(),
                        deleted: e.segment.deleted.clone(),
                    });
                }
            }
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.state.lock().map(|s| s.bytes).unwrap_or(0)
    }

    pub fn contains(&self, file_id: i64) -> bool {
        self.state
            .lock()
            .map(|s| s.entries.contains_key(&file_id))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mishards_meta::EngineType;

    /// A loaded raw segment of `rows` rows of dimension 4: 8 + 16 = 24 bytes a row.
    fn segment(file_id: i64, rows: usize) -> Arc<LoadedSegment> {
        Arc::new(LoadedSegment {
            file_id,
            updated_time: 1,
            data: Arc::new(SegmentData::Raw(RawSegment {
                dim: 4,
                ids: (0..rows as i64).collect(),
                vectors: Vectors::Float(vec![0.5; rows * 4]),
            })),
            deleted: None,
        })
    }

    const ROW_BYTES: usize = 24;

    fn cached(cache: &SegmentCache, ids: &[i64]) -> Vec<i64> {
        ids.iter()
            .copied()
            .filter(|id| cache.contains(*id))
            .collect()
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_counts_them() {
        let cache = SegmentCache::new(250 * ROW_BYTES);
        for id in 1..=3 {
            cache.insert(segment(id, 100));
            assert!(cache.used_bytes() <= cache.capacity());
        }
        // Three segments of 100 rows do not fit in 250 rows: the oldest went.
        assert_eq!(cached(&cache, &[1, 2, 3]), [2, 3]);
        assert_eq!(cache.used_bytes(), 200 * ROW_BYTES);
        // Inserting a file again replaces it without counting it twice.
        cache.insert(segment(3, 100));
        assert_eq!(cache.used_bytes(), 200 * ROW_BYTES);
        cache.evict(&[2, 42]);
        assert_eq!(cache.used_bytes(), 100 * ROW_BYTES);
        assert_eq!(cached(&cache, &[1, 2, 3]), [3]);
    }

    #[test]
    fn a_segment_larger_than_the_cache_is_not_kept_and_evicts_nothing() {
        let cache = SegmentCache::new(150 * ROW_BYTES);
        cache.insert(segment(1, 100));
        cache.insert(segment(2, 200));
        assert_eq!(cached(&cache, &[1, 2]), [1]);
        assert_eq!(cache.used_bytes(), 100 * ROW_BYTES);
    }

    #[test]
    fn the_least_recently_used_segment_goes_first() {
        let cache = SegmentCache::new(300 * ROW_BYTES);
        for id in 1..=3 {
            cache.insert(segment(id, 100));
        }
        // Using 1 makes 2 the least recently used.
        assert!(cache.peek(1).is_some());
        cache.insert(segment(4, 100));
        assert_eq!(cached(&cache, &[1, 2, 3, 4]), [1, 3, 4]);
        // A big newcomer pushes out as many old ones as it needs, oldest first.
        assert!(cache.peek(3).is_some());
        cache.insert(segment(5, 200));
        assert_eq!(cached(&cache, &[1, 3, 4, 5]), [3, 5]);
        assert_eq!(cache.used_bytes(), 300 * ROW_BYTES);
    }

    #[test]
    fn a_smaller_capacity_applies_at_the_next_insert() {
        let cache = SegmentCache::new(400 * ROW_BYTES);
        for id in 1..=4 {
            cache.insert(segment(id, 100));
        }
        cache.set_capacity(150 * ROW_BYTES);
        assert_eq!(cache.capacity(), 150 * ROW_BYTES);
        cache.insert(segment(5, 100));
        assert_eq!(cached(&cache, &[1, 2, 3, 4, 5]), [5]);
        assert!(cache.used_bytes() <= cache.capacity());
    }

    #[test]
    fn get_reads_a_file_once_and_rereads_only_marks_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = FileRow {
            id: 7,
            table_id: "t".into(),
            segment_id: "s1".into(),
            engine_type: EngineType::Flat,
            file_id: "f1".into(),
            file_type: FileType::Raw,
            file_size: 0,
            row_count: 3,
            updated_time: 10,
            created_on: 10,
            date: -1,
            flush_lsn: 0,
        };
        let path = segment::file_path(dir.path(), &file);
        segment::write_raw(
            &path,
            2,
            &[1, 2, 3],
            &Vectors::Float(vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]),
        )
        .unwrap();
        let cache = SegmentCache::new(1 << 20);
        let first = cache.get(dir.path(), &file).unwrap();
        assert_eq!((first.rows(), first.live_rows()), (3, 3));
        assert_eq!(cache.used_bytes(), 3 * (8 + 2 * 4));
        // Same version: the cached segment itself.
        assert!(Arc::ptr_eq(&first, &cache.get(dir.path(), &file).unwrap()));
        // A delete and a new updated_time: the same vectors, new marks.
        segment::add_deleted(&segment::deleted_path(dir.path(), &file), &[2]).unwrap();
        file.updated_time = 11;
        let second = cache.get(dir.path(), &file).unwrap();
        assert!(Arc::ptr_eq(&first.data, &second.data));
        assert_eq!(second.live_ids(), [1, 3]);
        assert_eq!(cache.used_bytes(), 3 * (8 + 2 * 4));
        // forget_marks makes the next get re-read them even at the same version.
        segment::add_deleted(&segment::deleted_path(dir.path(), &file), &[3]).unwrap();
        assert_eq!(cache.get(dir.path(), &file).unwrap().live_ids(), [1, 3]);
        cache.forget_marks(&[7]);
        assert_eq!(cache.get(dir.path(), &file).unwrap().live_ids(), [1]);
    }
}
