//! The bytes-bounded segment cache: loaded segment files (vectors or index) with their delete marks,
//! least recently used evicted first. A file whose `updated_time` moved keeps its vectors and reloads
//! only its delete marks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::index::{IvfFlat, Metric, RowBitmap, TopK, search_flat};
use super::segment::{self, RawSegment, SegmentError};
use crate::meta::{FileRow, FileType};

/// What a file holds once loaded.
pub enum SegmentData {
    Raw(RawSegment),
    /// An index file: the index and the ids of its rows in their original (raw file) order.
    Ivf {
        index: IvfFlat,
        ids: Vec<i64>,
    },
}

impl SegmentData {
    fn ids(&self) -> &[i64] {
        match self {
            SegmentData::Raw(raw) => &raw.ids,
            SegmentData::Ivf { ids, .. } => ids,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            SegmentData::Raw(raw) => raw.bytes(),
            SegmentData::Ivf { ids, index } => ids.len() * 12 + index.len() * index.dim() * 4,
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
            SegmentData::Raw(_) => "FLAT",
            SegmentData::Ivf { .. } => "IVF_FLAT",
        }
    }

    /// The top `k` of each query; `nprobe` applies to index files (default: 1/16 of the lists, at least 1).
    pub fn search(&self, queries: &[f32], k: usize, metric: Metric, nprobe: Option<usize>) -> TopK {
        let deleted = self.deleted.as_deref();
        match &*self.data {
            SegmentData::Raw(raw) => {
                search_flat(queries, &raw.vectors, &raw.ids, raw.dim, k, metric, deleted)
            }
            SegmentData::Ivf { index, .. } => {
                let nprobe = nprobe.unwrap_or_else(|| (index.nlist() / 16).max(1));
                index.search(queries, k, nprobe, deleted)
            }
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
    pub fn vector_of(&self, id: i64) -> Option<Vec<f32>> {
        let SegmentData::Raw(raw) = &*self.data else {
            return None;
        };
        let row = raw.ids.iter().position(|x| *x == id)?;
        if self.deleted.as_ref().is_some_and(|d| d.contains(row)) {
            return None;
        }
        Some(raw.vector(row).to_vec())
    }
}

/// Reads a file from disk (raw or index, per its type) with its segment's delete marks.
pub fn load(storage: &Path, file: &FileRow) -> Result<LoadedSegment, SegmentError> {
    let path = segment::file_path(storage, file);
    let data = if file.file_type == FileType::Index {
        let (index, ids) = segment::read_index(&path)?;
        SegmentData::Ivf { index, ids }
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
