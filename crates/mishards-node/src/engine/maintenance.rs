//! Maintenance: merging small files, compaction (rewriting segments without their deleted rows)
//! and garbage collection of retired files and dropped tables.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Engine, SEGMENT_FILES, blocking, every_table, group_by_segment, raw_file};
use crate::NodeError;
use crate::segment::{self, SegmentError};
use crate::vectors::Vectors;
use mishards_meta::{FileChanges, FileRow, FileType, Retype, TableRow, TableState, now_micros};

impl Engine {
    /// Merges a table's RAW files smaller than `index_file_size`, as Milvus 1.1 does: in id order, small
    /// files are gathered until together they reach `index_file_size`, and each such group (and the
    /// rest, when it is more than one file) becomes one file. A merged file that reaches
    /// `index_file_size` is due for the collection's index.
    pub(super) async fn merge_small_files(&self, table_id: &str) -> Result<(), NodeError> {
        let Some(table) = self.meta.table(table_id).await? else {
            return Ok(());
        };
        let raws = self
            .meta
            .files_of_tables(&[table_id.to_string()], &[FileType::Raw])
            .await?;
        let small = raws.iter().filter(|f| f.file_size < table.index_file_size);
        let mut groups: Vec<Vec<FileRow>> = Vec::new();
        let (mut group, mut size) = (Vec::new(), 0i64);
        for f in small {
            group.push(f.clone());
            size = size.saturating_add(f.file_size);
            if size >= table.index_file_size {
                groups.push(std::mem::take(&mut group));
                size = 0;
            }
        }
        groups.push(group);
        for group in groups.into_iter().filter(|g| g.len() > 1) {
            self.rewrite_files(&table, &group, &[], false).await?;
        }
        Ok(())
    }

    /// Writes the live rows of `files` (raw data) as one new file, then retires them and `also_retire`,
    /// in one metadata transaction (a crash never leaves both the new file and the old ones live). The
    /// new file becomes TO_INDEX when the collection has an index and the file reached
    /// `index_file_size` (or, for a compaction, the build threshold: compaction keeps indexed segments
    /// indexed).
    async fn rewrite_files(
        &self,
        table: &TableRow,
        files: &[FileRow],
        also_retire: &[FileRow],
        compaction: bool,
    ) -> Result<(), NodeError> {
        let storage = self.opts.storage.clone();
        let inputs = files.to_vec();
        let binary = table.metric_type.is_binary();
        let (ids, vectors) = blocking(move || -> Result<(Vec<i64>, Vectors), SegmentError> {
            let (mut ids, mut vectors) = (Vec::new(), Vectors::empty(binary));
            for f in &inputs {
                let raw = segment::read_raw(&segment::file_path(&storage, f))?;
                let deleted = segment::read_deleted(&segment::deleted_path(&storage, f))?;
                let width = raw.width();
                for (row, id) in raw.ids.iter().enumerate() {
                    if deleted.binary_search(id).is_err() {
                        ids.push(*id);
                        vectors.push_row_of(&raw.vectors, row, width);
                    }
                }
            }
            Ok((ids, vectors))
        })
        .await??;
        let flush_lsn = files.iter().map(|f| f.flush_lsn).max().unwrap_or(0);
        let mut changes = FileChanges::default();
        if !ids.is_empty() {
            changes.create.push(
                self.write_segment(table, &ids, &vectors, flush_lsn, compaction)
                    .await?,
            );
        }
        let old: Vec<i64> = files.iter().chain(also_retire).map(|f| f.id).collect();
        // A merge takes RAW files only; a compaction any live file of the segment.
        let expected: &[FileType] = if compaction {
            &SEGMENT_FILES
        } else {
            &[FileType::Raw]
        };
        changes.retype.push(Retype::expecting(
            &old,
            expected,
            FileType::ToDelete,
            now_micros(),
        ));
        self.meta.commit_files(&changes).await?;
        self.cache.evict(&old);
        Ok(())
    }

    /// Rewrites every segment of the collection that has deleted rows, without them.
    pub async fn compact(self: &Arc<Self>, name: &str) -> Result<(), NodeError> {
        self.writer("Compact")?;
        let tables = self.collection(name).await?;
        {
            let _m = self.maintenance.lock().await;
            for table in every_table(&tables) {
                let files = self
                    .meta
                    .files_of_tables(std::slice::from_ref(&table.table_id), &SEGMENT_FILES)
                    .await?;
                for segment_files in group_by_segment(&files).values() {
                    let Some(raw) = raw_file(segment_files) else {
                        continue;
                    };
                    let deleted =
                        segment::read_deleted(&segment::deleted_path(&self.opts.storage, raw))?;
                    if deleted.is_empty() {
                        continue;
                    }
                    let rest: Vec<FileRow> = segment_files
                        .iter()
                        .filter(|f| f.id != raw.id)
                        .map(|f| (*f).clone())
                        .collect();
                    self.rewrite_files(table, &[(*raw).clone()], &rest, true)
                        .await?;
                }
            }
        }
        self.build_pending_indexes().await
    }

    /// Removes files retired longer than the grace period ago, and tables whose files are all gone.
    pub async fn collect_garbage(&self) -> Result<(), NodeError> {
        let _m = self.maintenance.lock().await;
        let grace = self.opts.gc_grace.as_micros() as i64;
        let now = now_micros();
        let retired = self.meta.files_by_type(&[FileType::ToDelete]).await?;
        let expired: Vec<FileRow> = retired
            .into_iter()
            .filter(|f| f.updated_time + grace <= now)
            .collect();
        if !expired.is_empty() {
            let live = [
                FileType::Raw,
                FileType::ToIndex,
                FileType::Index,
                FileType::Backup,
                FileType::New,
                FileType::NewMerge,
                FileType::NewIndex,
            ];
            let tables: Vec<String> = expired
                .iter()
                .map(|f| f.table_id.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let remaining = self.meta.files_of_tables(&tables, &live).await?;
            let busy: HashSet<(&str, &str)> = remaining
                .iter()
                .map(|f| (f.table_id.as_str(), f.segment_id.as_str()))
                .collect();
            for f in &expired {
                let path = segment::file_path(&self.opts.storage, f);
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a retired file");
                    continue;
                }
                if !busy.contains(&(f.table_id.as_str(), f.segment_id.as_str())) {
                    let dir = segment::segment_dir(&self.opts.storage, &f.table_id, &f.segment_id);
                    let _ = std::fs::remove_file(dir.join(segment::DELETED_FILE));
                    let _ = std::fs::remove_dir(&dir);
                }
            }
            let ids: Vec<i64> = expired.iter().map(|f| f.id).collect();
            self.meta.delete_files(&ids).await?;
            self.cache.evict(&ids);
        }
        // Tables dropped whose files are all gone.
        let dropped: Vec<String> = self
            .meta
            .all_tables()
            .await?
            .into_iter()
            .filter(|t| t.state == TableState::ToDelete)
            .map(|t| t.table_id)
            .collect();
        if !dropped.is_empty() {
            let any = FileType::ALL;
            let left: HashSet<String> = self
                .meta
                .files_of_tables(&dropped, any)
                .await?
                .into_iter()
                .map(|f| f.table_id)
                .collect();
            let done: Vec<String> = dropped.into_iter().filter(|t| !left.contains(t)).collect();
            for t in &done {
                let _ = std::fs::remove_dir_all(segment::table_dir(&self.opts.storage, t));
            }
            self.meta.delete_tables(&done).await?;
        }
        Ok(())
    }
}

impl Engine {
    /// Removes what a crash can leave in the storage folder that no metadata row names: temporary files
    /// of interrupted atomic writes, segment files written but never committed, and folders of tables
    /// that no longer exist. Runs on the write node at start, before anything else writes files.
    pub(super) async fn sweep_orphans(&self) -> Result<usize, NodeError> {
        let _m = self.maintenance.lock().await;
        let tables = self.meta.all_tables().await?;
        let table_ids: Vec<String> = tables.iter().map(|t| t.table_id.clone()).collect();
        let files = self.meta.files_of_tables(&table_ids, FileType::ALL).await?;
        let storage = self.opts.storage.clone();
        blocking(move || orphans::sweep(&storage, &tables, &files)).await?
    }
}

/// The file-system side of [`Engine::sweep_orphans`].
mod orphans {
    use std::collections::{HashMap, HashSet};
    use std::fs;
    use std::path::{Path, PathBuf};

    use mishards_meta::{FileRow, TableRow};

    use crate::NodeError;
    use crate::segment;

    pub(super) fn sweep(
        storage: &Path,
        tables: &[TableRow],
        files: &[FileRow],
    ) -> Result<usize, NodeError> {
        let root = storage.join("tables");
        if !root.is_dir() {
            return Ok(0);
        }
        let known_tables: HashMap<PathBuf, &str> = tables
            .iter()
            .map(|t| {
                (
                    segment::table_dir(storage, &t.table_id),
                    t.table_id.as_str(),
                )
            })
            .collect();
        // Per segment folder, the file names metadata knows.
        let mut known_files: HashMap<PathBuf, HashSet<&str>> = HashMap::new();
        for f in files {
            known_files
                .entry(segment::segment_dir(storage, &f.table_id, &f.segment_id))
                .or_default()
                .insert(f.file_id.as_str());
        }
        let mut removed = 0;
        for table_dir in entries(&root)? {
            if !known_tables.contains_key(&table_dir) {
                removed += remove(&table_dir, "folder of a table that does not exist");
                continue;
            }
            for segment_dir in entries(&table_dir)? {
                let Some(known) = known_files.get(&segment_dir) else {
                    removed += remove(&segment_dir, "segment no file row names");
                    continue;
                };
                for file in entries(&segment_dir)? {
                    let name = file
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if name == segment::DELETED_FILE || known.contains(name) {
                        continue;
                    }
                    removed += remove(
                        &file,
                        "file no file row names (a write a crash interrupted)",
                    );
                }
            }
        }
        Ok(removed)
    }

    fn entries(dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
        let read = fs::read_dir(dir)
            .map_err(|e| NodeError::Internal(format!("cannot list {}: {e}", dir.display())))?;
        Ok(read.filter_map(|e| e.ok().map(|e| e.path())).collect())
    }

    fn remove(path: &Path, why: &str) -> usize {
        let result = if path.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match result {
            Ok(()) => {
                tracing::info!(path = %path.display(), why, "removed an orphan from the storage folder");
                1
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, why, "cannot remove an orphan from the storage folder");
                0
            }
        }
    }
}
