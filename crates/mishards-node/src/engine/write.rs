//! The write path: inserts and deletes through the write-ahead log into the write buffer, and the
//! flush that turns the buffer into segment files and delete marks.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::buffer::{MemTable, apply_record, next_ids};
use super::catalogue::partition_table;
use super::{Engine, SEGMENT_FILES, blocking, group_by_segment, lock_error, raw_file};
use crate::segment::{self, SegmentError};
use crate::vectors::{Vectors, row_width};
use crate::wal::{Wal, WalRecord};
use crate::{NodeError, validate};
use mishards_meta::{
    EngineType, FLAG_AUTO_IDS, FLAG_USER_IDS, FileChanges, FileRow, FileType, NewFile, TableRow,
    TableState, now_micros,
};

/// Values a row of `table` holds.
pub(super) fn table_width(table: &TableRow) -> usize {
    row_width(table.dimension as usize, table.metric_type.is_binary())
}

/// The engine type of a raw file: Milvus's (binary) IDMAP.
pub(super) fn raw_engine_type(table: &TableRow) -> EngineType {
    if table.metric_type.is_binary() {
        EngineType::BinFlat
    } else {
        EngineType::Flat
    }
}

impl Engine {
    /// Inserts rows into a collection (or one partition) and returns their ids once the write-ahead log
    /// holds them. `ids` must be empty (ids are assigned) or one per row.
    pub async fn insert(
        self: &Arc<Self>,
        name: &str,
        tag: &str,
        ids: Vec<i64>,
        vectors: Vectors,
        rows: usize,
    ) -> Result<Vec<i64>, NodeError> {
        let wal = self.writer("Insert")?;
        let tables = self.collection(name).await?;
        let target = if tag.trim().is_empty() {
            &tables.collection
        } else {
            partition_table(&tables, tag.trim())?
        };
        let dim = target.dimension as usize;
        if rows == 0 {
            return Err(NodeError::InvalidRowRecord("no vectors to insert".into()));
        }
        // Milvus 1.1 answers a wrong number of ids with ILLEGAL_VECTOR_ID.
        if !ids.is_empty() && ids.len() != rows {
            return Err(NodeError::InvalidVectorId(format!(
                "{} ids for {rows} vectors: give an id for every vector or for none",
                ids.len()
            )));
        }
        let metric = tables.collection.metric_type;
        validate::vector_kind(name, metric, vectors.is_binary())?;
        let width = row_width(dim, vectors.is_binary());
        if vectors.values() != rows * width {
            return Err(NodeError::InvalidDimension(format!(
                "every vector must have the collection's dimension {dim}{}",
                if vectors.is_binary() { " (bits)" } else { "" }
            )));
        }
        validate::insert_size(vectors.bytes())?;
        if let Some(id) = ids.iter().find(|id| **id < 0) {
            return Err(NodeError::InvalidVectorId(format!(
                "id {id} is negative: ids must be ≥ 0 (-1 marks a missing hit)"
            )));
        }
        if let Vectors::Float(v) = &vectors
            && v.iter().any(|v| !v.is_finite())
        {
            return Err(NodeError::InvalidRowRecord(
                "vectors must not contain NaN or infinite values".into(),
            ));
        }
        self.check_id_mode(&tables.collection, !ids.is_empty())
            .await?;
        self.make_room(vectors.bytes() + rows * 8).await?;
        // Submitting and buffering under one lock keeps the buffer in log order, which a flush relies on.
        let (lsn, durable, ids) = {
            let mut b = self.buffers.lock().map_err(lock_error)?;
            let ids = if ids.is_empty() {
                next_ids(&mut b, rows)?
            } else {
                ids
            };
            let record = WalRecord::Insert {
                table_id: target.table_id.clone(),
                created_on: Some(target.created_on),
                dim: dim as u32,
                ids: ids.clone(),
                vectors,
            };
            let (lsn, durable) = wal.submit(&record)?;
            apply_record(&mut b, lsn, record, width);
            (lsn, durable, ids)
        };
        if let Err(e) = durable.wait().await {
            // Not in the log, so not acknowledged: the rows must not reach a segment either.
            self.discard_buffered(&target.table_id, lsn);
            return Err(e.into());
        }
        self.stats.inserted(ids.len());
        Ok(ids)
    }

    /// Back-pressure of `cache.insert_buffer_size`: an insert that would take the buffered rows past it
    /// flushes first; when the buffer is still too full (a table cannot be flushed), it is refused with
    /// OUT_OF_MEMORY rather than growing memory. One insert larger than the limit goes into an empty buffer.
    async fn make_room(self: &Arc<Self>, bytes: usize) -> Result<(), NodeError> {
        let limit = self.insert_buffer_bytes.load(Ordering::Relaxed);
        let buffered = Engine::buffered_bytes;
        let over = |held: u64| held > 0 && held.saturating_add(bytes as u64) > limit;
        if !over(buffered(self)?) {
            return Ok(());
        }
        if let Err(e) = self.flush(&[]).await {
            tracing::warn!(error = %e, "a flush to make room in the insert buffer failed");
        }
        let held = buffered(self)?;
        if over(held) {
            return Err(NodeError::BufferFull(format!(
                "the write node's insert buffer holds {held} bytes that cannot be flushed now, and this                  insert of {bytes} bytes would pass cache.insert_buffer_size ({limit} bytes): retry later,                  check the node's log for why flushes fail, or raise cache.insert_buffer_size"
            )));
        }
        Ok(())
    }

    /// Takes a record whose log write failed back out of the buffer. One that a flush took meanwhile is
    /// left out by the flush (`Wal::settle`).
    fn discard_buffered(&self, table_id: &str, lsn: u64) {
        if let Ok(mut b) = self.buffers.lock()
            && let Some(mem) = b.tables.get_mut(table_id)
        {
            mem.discard(lsn);
        }
    }

    /// Milvus 1.1 fixes a collection's id mode at its first insert (in `Tables.flag`): afterwards every
    /// insert must give ids, or none must.
    async fn check_id_mode(&self, collection: &TableRow, user_ids: bool) -> Result<(), NodeError> {
        let wanted = if user_ids {
            FLAG_USER_IDS
        } else {
            FLAG_AUTO_IDS
        };
        let mode = |flag: i64| flag & (FLAG_USER_IDS | FLAG_AUTO_IDS);
        let refuse = |flag: i64| {
            Err(NodeError::InvalidVectorId(if flag & FLAG_USER_IDS != 0 {
                format!(
                    "collection `{}` uses ids given by the client: give an id for every vector",
                    collection.table_id
                )
            } else {
                format!(
                    "collection `{}` uses automatic ids: insert without ids",
                    collection.table_id
                )
            }))
        };
        match mode(collection.flag) {
            0 => {}
            m if m & wanted != 0 => return Ok(()),
            _ => return refuse(collection.flag),
        }
        // The first insert decides; serialise it so two first inserts cannot decide differently.
        let _first = self.maintenance.lock().await;
        let current = self
            .meta
            .table(&collection.table_id)
            .await?
            .map_or(0, |t| t.flag);
        match mode(current) {
            0 => Ok(self
                .meta
                .update_table_flag(&collection.table_id, current | wanted)
                .await?),
            m if m & wanted != 0 => Ok(()),
            _ => refuse(current),
        }
    }

    /// Deletes ids from a collection (or one partition). Takes effect for searches at the next flush,
    /// as in Milvus 1.1.
    pub async fn delete(&self, name: &str, tag: &str, ids: Vec<i64>) -> Result<(), NodeError> {
        let wal = self.writer("DeleteByID")?;
        if ids.is_empty() {
            return Err(NodeError::InvalidVectorId("no ids to delete".into()));
        }
        let tables = self.collection(name).await?;
        let targets = Self::tables_for_tag(&tables, tag)?;
        let Some(first) = targets.first() else {
            return Ok(());
        };
        let width = table_width(first);
        // One record for every table reached: the ids are logged and buffered once, however many
        // partitions the collection has.
        let record = match &targets[..] {
            [table] => WalRecord::Delete {
                table_id: table.table_id.clone(),
                created_on: Some(table.created_on),
                ids,
            },
            _ => WalRecord::DeleteMany {
                tables: targets
                    .iter()
                    .map(|t| (t.table_id.clone(), t.created_on))
                    .collect(),
                ids,
            },
        };
        let (lsn, durable) = {
            let mut b = self.buffers.lock().map_err(lock_error)?;
            let (lsn, durable) = wal.submit(&record)?;
            apply_record(&mut b, lsn, record, width);
            (lsn, durable)
        };
        if let Err(e) = durable.wait().await {
            for table in &targets {
                self.discard_buffered(&table.table_id, lsn);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Turns buffered inserts into segment files and applies buffered deletes, for the named collections
    /// (all when empty); then merges small files and builds indexes that became due.
    pub async fn flush(self: &Arc<Self>, names: &[String]) -> Result<(), NodeError> {
        let wal = self.writer("Flush")?;
        let mut wanted: Option<HashSet<String>> = None;
        if !names.is_empty() {
            let mut set = HashSet::new();
            for name in names {
                let tables = self.collection(name).await?;
                set.extend(
                    std::iter::once(tables.collection)
                        .chain(tables.partitions)
                        .map(|t| t.table_id),
                );
            }
            wanted = Some(set);
        }
        let _m = self.maintenance.lock().await;
        let (taken, upto, everything) = {
            let mut b = self.buffers.lock().map_err(lock_error)?;
            let upto = wal.next_lsn().saturating_sub(1);
            let keys: Vec<String> = b
                .tables
                .iter()
                .filter(|(t, m)| !m.is_empty() && wanted.as_ref().is_none_or(|w| w.contains(*t)))
                .map(|(t, _)| t.clone())
                .collect();
            let taken: Vec<(String, MemTable)> = keys
                .into_iter()
                .filter_map(|t| b.tables.remove(&t).map(|m| (t, m)))
                .collect();
            let everything = b.tables.values().all(MemTable::is_empty);
            (taken, upto, everything)
        };
        if taken.is_empty() {
            return Ok(());
        }
        // Records up to `upto` may still be on their way to disk: wait for them, and leave out those whose
        // write failed (their writers were told so).
        let failed = match wal.settle(upto).await {
            Ok(failed) => failed,
            Err(e) => {
                if let Ok(mut b) = self.buffers.lock() {
                    for (table_id, mem) in taken {
                        b.tables.entry(table_id).or_default().restore(mem);
                    }
                }
                return Err(e.into());
            }
        };
        let mut taken = taken;
        for (_, mem) in &mut taken {
            failed.iter().for_each(|lsn| mem.discard(*lsn));
        }
        // One table's failing flush holds up no other: the rest flush, merge, build indexes and let the
        // log go; the failing table keeps its rows buffered and its error goes to the caller.
        let mut failed_tables = Vec::new();
        let mut touched = Vec::new();
        for (table_id, mem) in taken {
            match self.flush_table(&table_id, &mem, upto as i64).await {
                Ok(()) => {
                    self.stats.flush_worked(&table_id);
                    touched.push(table_id);
                }
                Err(e) => {
                    tracing::error!(table = %table_id, error = %e, "flush failed; keeping the data buffered");
                    self.stats.flush_failed(&table_id, &e);
                    if let Ok(mut b) = self.buffers.lock() {
                        b.tables.entry(table_id.clone()).or_default().restore(mem);
                    }
                    failed_tables.push((table_id, e));
                }
            }
        }
        if wanted.is_none() {
            // Every buffered table was taken and cleaned: failed records up to `upto` are gone for good.
            wal.forget_failed_through(upto);
        }
        if everything {
            let kept = self.relog_unflushed(wal, &failed_tables).await;
            let checkpoint = kept.map_or(upto, |first| upto.min(first.saturating_sub(1)));
            self.meta.set_global_lsn(checkpoint as i64).await?;
            wal.checkpoint(checkpoint);
        }
        // The flushed data is safe whatever happens to the merge: a merge that fails leaves the small
        // files as they are (all or nothing) and is tried again after the next flush.
        for table_id in &touched {
            if let Err(e) = self.merge_small_files(table_id).await {
                tracing::warn!(table = %table_id, error = %e, "merging small files failed; they stay as they are");
            }
        }
        drop(_m);
        self.schedule_index_builds();
        match failed_tables.into_iter().next() {
            Some((table_id, e)) => Err(NodeError::FlushFailed {
                table: table_id,
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }

    /// Logs again, at the head of the log, the buffered state of tables whose flush failed when it holds
    /// log files that could otherwise go: so one table that cannot be flushed keeps at most its own
    /// buffered rows in the log, not every write since it started failing. Returns the first lsn still
    /// needed for a table that could not be logged again (the checkpoint must stay below it).
    async fn relog_unflushed(&self, wal: &Wal, failed: &[(String, NodeError)]) -> Option<u64> {
        let current_file = wal.current_file_first_lsn();
        let mut kept: Option<u64> = None;
        let mut keep = |lsn: u64| kept = Some(kept.map_or(lsn, |k| k.min(lsn)));
        let mut waits = Vec::new();
        if let Ok(mut b) = self.buffers.lock() {
            for (table_id, _) in failed {
                let (first, record, width) = {
                    let Some(mem) = b.tables.get(table_id) else {
                        continue;
                    };
                    let Some(first) = mem.first_lsn() else {
                        continue;
                    };
                    let Some(created_on) = mem.created_on.filter(|_| first < current_file) else {
                        keep(first); // in the newest file already (or of an older log): hold the checkpoint
                        continue;
                    };
                    let record = mem.relog(table_id, created_on, mem.dim() as u32);
                    (first, record, mem.width())
                };
                match wal.submit(&record) {
                    Ok((lsn, durable)) => {
                        apply_record(&mut b, lsn, record, width);
                        waits.push((first, durable));
                    }
                    Err(_) => keep(first),
                }
            }
        } else {
            return Some(0);
        }
        for (first, durable) in waits {
            if let Err(e) = durable.wait().await {
                tracing::error!(error = %e, "logging an unflushable table again failed; the log keeps its files");
                keep(first);
            }
        }
        kept
    }

    /// Writes a table's buffered rows as a segment file and applies its buffered deletes; the new file
    /// row, the deleted rows' counts and the table's `flush_lsn` land in one metadata transaction, so a
    /// crash leaves either all of them (the log is not replayed again) or none (the log replays it all).
    async fn flush_table(
        &self,
        table_id: &str,
        mem: &MemTable,
        upto: i64,
    ) -> Result<(), NodeError> {
        let Some(table) = self.meta.table(table_id).await?.filter(|t| {
            t.state == TableState::Normal && mem.created_on.is_none_or(|c| c == t.created_on)
        }) else {
            return Ok(()); // dropped meanwhile (and maybe created again): nothing to keep
        };
        let mut changes = FileChanges {
            flush_lsn: Some((table_id.to_string(), upto)),
            ..FileChanges::default()
        };
        let deleted = mem.deleted_ids();
        if !deleted.is_empty() {
            changes.update = self.mark_deleted(table_id, &deleted).await?;
        }
        let (ids, vectors) = mem.live_rows();
        if !ids.is_empty() {
            changes.create.push(
                self.write_segment(&table, &ids, &vectors, upto, false)
                    .await?,
            );
        }
        for file in self.meta.commit_files(&changes).await? {
            tracing::debug!(
                table = table_id,
                file = file.id,
                rows = file.row_count,
                file_type = %file.file_type,
                "flushed a segment"
            );
        }
        Ok(())
    }

    /// Writes rows as a new segment file and returns the row to register for it: RAW, or TO_INDEX when
    /// the collection's index is due for it (see `due_for_index`).
    pub(super) async fn write_segment(
        &self,
        table: &TableRow,
        ids: &[i64],
        vectors: &Vectors,
        flush_lsn: i64,
        index_by_rows: bool,
    ) -> Result<NewFile, NodeError> {
        let new = NewFile {
            table_id: table.table_id.clone(),
            segment_id: segment::new_id(),
            engine_type: raw_engine_type(table),
            file_id: segment::new_id(),
            file_type: FileType::Raw,
            file_size: 0,
            row_count: ids.len() as i64,
            now_us: now_micros(),
            flush_lsn,
        };
        let path = segment::segment_dir(&self.opts.storage, &new.table_id, &new.segment_id)
            .join(&new.file_id);
        let (dim, ids_owned, vectors_owned) =
            (table.dimension as usize, ids.to_vec(), vectors.clone());
        let size =
            blocking(move || segment::write_raw(&path, dim, &ids_owned, &vectors_owned)).await??;
        let file_size = i64::try_from(size).unwrap_or(i64::MAX);
        let file_type = if self.due_for_index(table, file_size, new.row_count, index_by_rows) {
            FileType::ToIndex
        } else {
            FileType::Raw
        };
        Ok(NewFile {
            file_size,
            file_type,
            ..new
        })
    }

    /// Marks `ids` deleted in every flushed segment of a table that holds them, and returns those
    /// segments' file rows with lowered row counts and a new `updated_time` (so readers reload the
    /// marks), for the caller to commit.
    async fn mark_deleted(&self, table_id: &str, ids: &[i64]) -> Result<Vec<FileRow>, NodeError> {
        let wanted: HashSet<i64> = ids.iter().copied().collect();
        let files = self
            .meta
            .files_of_tables(&[table_id.to_string()], &SEGMENT_FILES)
            .await?;
        let mut updates = Vec::new();
        for segment_files in group_by_segment(&files).values() {
            let Some(raw) = raw_file(segment_files) else {
                continue;
            };
            let storage = self.opts.storage.clone();
            let raw = raw.clone();
            let wanted = wanted.clone();
            let outcome = blocking(move || -> Result<Option<(usize, usize)>, SegmentError> {
                let seg_ids = segment::read_raw_ids(&segment::file_path(&storage, &raw))?;
                let hits: Vec<i64> = seg_ids
                    .iter()
                    .copied()
                    .filter(|id| wanted.contains(id))
                    .collect();
                if hits.is_empty() {
                    return Ok(None);
                }
                let path = segment::deleted_path(&storage, &raw);
                segment::add_deleted(&path, &hits)?;
                Ok(Some((seg_ids.len(), segment::read_deleted(&path)?.len())))
            })
            .await??;
            if let Some((rows, deleted)) = outcome {
                let now = now_micros();
                for f in segment_files {
                    let mut f = (*f).clone();
                    f.row_count = (rows - deleted.min(rows)) as i64;
                    f.updated_time = now;
                    updates.push(f);
                }
            }
        }
        Ok(updates)
    }
}

#[cfg(test)]
mod tests;
