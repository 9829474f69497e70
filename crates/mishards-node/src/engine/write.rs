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
        Ok(ids)
    }

    /// Back-pressure of `cache.insert_buffer_size`: an insert that would take the buffered rows past it
    /// flushes first; when the buffer is still too full (a table cannot be flushed), it is refused with
    /// OUT_OF_MEMORY rather than growing memory. One insert larger than the limit goes into an empty buffer.
    async fn make_room(self: &Arc<Self>, bytes: usize) -> Result<(), NodeError> {
        let limit = self.insert_buffer_bytes.load(Ordering::Relaxed);
        let buffered = |engine: &Engine| -> Result<u64, NodeError> {
            let b = engine.buffers.lock().map_err(lock_error)?;
            Ok(b.tables.values().map(MemTable::bytes).sum::<usize>() as u64)
        };
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
                Ok(()) => touched.push(table_id),
                Err(e) => {
                    tracing::error!(table = %table_id, error = %e, "flush failed; keeping the data buffered");
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
mod tests {
    use super::super::EngineOptions;
    use super::*;
    use crate::wal::Wal;
    use mishards_config::Role;
    use mishards_meta::{MetaOptions, MetaStore, MetaUri, SqliteTarget};
    use std::time::Duration;

    fn options(storage: &std::path::Path) -> EngineOptions {
        EngineOptions {
            role: Role::Writer,
            storage: storage.to_path_buf(),
            auto_flush_interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(60),
            cache_bytes: 1 << 30,
            index_build_rows: 4096,
            wal_damage: crate::wal::DamagePolicy::Refuse,
        }
    }

    async fn open(storage: &std::path::Path) -> Arc<Engine> {
        let uri = MetaUri::Sqlite(SqliteTarget::File(storage.join("meta.sqlite")));
        let meta = MetaStore::open(&uri, &MetaOptions::default())
            .await
            .expect("metadata");
        let opts = EngineOptions {
            // Dropped tables' rows go at the first garbage collection, so a name can be used again.
            gc_grace: Duration::ZERO,
            ..options(storage)
        };
        Engine::open(meta, opts).await.expect("engine")
    }

    fn wal(engine: &Engine) -> &Wal {
        engine.wal.as_ref().expect("a write node")
    }

    async fn found(engine: &Engine, ids: &[i64]) -> Vec<bool> {
        found_in(engine, "c", ids).await
    }

    async fn found_in(engine: &Engine, name: &str, ids: &[i64]) -> Vec<bool> {
        engine
            .vectors_by_id(name, "", ids)
            .await
            .expect("by id")
            .iter()
            .map(Option::is_some)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_the_log_refused_never_reach_a_segment() {
        for restart in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut engine = open(dir.path()).await;
            engine.create_collection("c", 2, 1024, 1).await.unwrap();
            engine
                .insert("c", "", vec![1, 2], Vectors::Float(vec![1.0; 4]), 2)
                .await
                .unwrap();
            wal(&engine).fail_next_writes(1);
            let refused = engine
                .insert("c", "", vec![3, 4], Vectors::Float(vec![3.0; 4]), 2)
                .await;
            assert!(matches!(refused, Err(NodeError::Wal(_))), "{refused:?}");
            wal(&engine).fail_next_writes(1);
            let refused = engine.delete("c", "", vec![1]).await;
            assert!(matches!(refused, Err(NodeError::Wal(_))), "{refused:?}");
            // The log goes on after a failed write.
            engine
                .insert("c", "", vec![5], Vectors::Float(vec![5.0; 2]), 1)
                .await
                .unwrap();
            if restart {
                engine.close().await;
                engine = open(dir.path()).await;
            }
            engine.flush(&[]).await.unwrap();
            assert_eq!(engine.count("c").await.unwrap(), 3, "restart: {restart}");
            assert_eq!(
                found(&engine, &[1, 2, 3, 4, 5]).await,
                [true, true, false, false, true],
                "restart: {restart}"
            );
        }
    }

    /// The auto-flush interval counts from the last auto-flush: garbage collection ticking more often
    /// (every 200 ms here) must not keep postponing it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_flush_fires_though_garbage_collection_ticks_more_often() {
        let dir = tempfile::tempdir().unwrap();
        let uri = MetaUri::Sqlite(SqliteTarget::File(dir.path().join("meta.sqlite")));
        let meta = MetaStore::open(&uri, &MetaOptions::default())
            .await
            .expect("metadata");
        let opts = EngineOptions {
            auto_flush_interval: Duration::from_millis(500),
            gc_grace: Duration::from_millis(400),
            ..options(dir.path())
        };
        let engine = Engine::open(meta, opts).await.expect("engine");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let background = engine.spawn_background(stopped);
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        engine
            .insert("c", "", vec![1], Vectors::Float(vec![1.0; 2]), 1)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while engine.count("c").await.unwrap() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no auto-flush within 5 s at a 500 ms interval"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        background.await.unwrap();
    }

    /// A record whose write fails while a flush already took the buffer holding it is left out by the
    /// flush, not by its writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_leaves_out_records_whose_write_failed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        engine
            .insert("c", "", vec![1], Vectors::Float(vec![1.0; 2]), 1)
            .await
            .unwrap();
        wal(&engine).fail_next_writes(1);
        let pending = {
            // What `insert` does, short of taking its rows back after the failure.
            let mut b = engine.buffers.lock().unwrap();
            let record = WalRecord::Insert {
                table_id: "c".into(),
                created_on: None,
                dim: 2,
                ids: vec![2],
                vectors: Vectors::Float(vec![2.0; 2]),
            };
            let (lsn, durable) = wal(&engine).submit(&record).unwrap();
            apply_record(&mut b, lsn, record, 2);
            durable
        };
        engine.flush(&[]).await.unwrap();
        assert!(pending.wait().await.is_err());
        assert_eq!(found(&engine, &[1, 2]).await, [true, false]);
        assert_eq!(engine.count("c").await.unwrap(), 1);
    }

    fn rows(n: usize, dim: usize) -> Vectors {
        Vectors::Float((0..n * dim).map(|i| i as f32).collect())
    }

    /// The case: rows logged for a dropped collection never reach a new collection of the same
    /// name after a crash, whatever its dimension, and the same for a partition's table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_tables_log_records_never_reach_its_successor() {
        for new_dim in [8, 4] {
            let dir = tempfile::tempdir().unwrap();
            let engine = open(dir.path()).await;
            engine.create_collection("res_a", 8, 1024, 1).await.unwrap();
            engine.create_partition("res_a", "p").await.unwrap();
            engine
                .insert("res_a", "", vec![], rows(50, 8), 50)
                .await
                .unwrap();
            engine.flush(&[]).await.unwrap();
            engine
                .insert("res_a", "", vec![], rows(30, 8), 30)
                .await
                .unwrap();
            engine
                .insert("res_a", "p", vec![], rows(7, 8), 7)
                .await
                .unwrap();
            engine.drop_collection("res_a").await.unwrap();
            engine.collect_garbage().await.unwrap();
            engine
                .create_collection("res_a", new_dim, 1024, 1)
                .await
                .unwrap();
            engine.create_partition("res_a", "p").await.unwrap();
            assert_eq!(engine.count("res_a").await.unwrap(), 0);
            engine.close().await; // a crash: nothing flushed since the drop
            let engine = open(dir.path()).await;
            engine.flush(&[]).await.unwrap();
            assert_eq!(engine.count("res_a").await.unwrap(), 0, "dim {new_dim}");
            engine
                .insert("res_a", "p", vec![], rows(2, new_dim as usize), 2)
                .await
                .unwrap();
            engine.flush(&[]).await.unwrap();
            assert_eq!(engine.count("res_a").await.unwrap(), 2, "dim {new_dim}");
        }
    }

    /// A tag Milvus accepts names no file: 120 dots, slashes, 255 characters all flush and count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_tag_milvus_accepts_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        let tags = [
            ".".repeat(120),
            "../../etc".into(),
            "a/b\\c".into(),
            "é".repeat(127),
        ];
        for tag in &tags {
            engine.create_partition("c", tag).await.unwrap();
            engine
                .insert("c", tag, vec![], rows(3, 2), 3)
                .await
                .unwrap();
        }
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("c").await.unwrap(), 3 * tags.len() as i64);
        let mut listed = engine.partitions("c").await.unwrap();
        listed.sort();
        let mut wanted: Vec<String> = tags.iter().cloned().chain(["_default".into()]).collect();
        wanted.sort();
        assert_eq!(listed, wanted);
    }

    /// Collections `good` and `bad`; a file stands where `bad`'s folder must go, so every flush of `bad`
    /// fails until the returned file is removed.
    async fn good_and_unflushable(
        engine: &Arc<Engine>,
        storage: &std::path::Path,
    ) -> std::path::PathBuf {
        engine.create_collection("good", 2, 1024, 1).await.unwrap();
        engine.create_collection("bad", 2, 1024, 1).await.unwrap();
        let blocker = segment::table_dir(storage, "bad");
        std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
        std::fs::write(&blocker, b"not a folder").unwrap();
        blocker
    }

    /// A table whose flush fails (its folder cannot be created) holds up no other table, reports its
    /// error to flush, and does not keep old log files: its rows are logged again at the head of the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_failing_table_holds_up_no_other_and_the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        let blocker = good_and_unflushable(&engine, dir.path()).await;
        engine
            .insert("bad", "", vec![], rows(5, 2), 5)
            .await
            .unwrap();
        let mut first_files = None;
        for round in 0..4i64 {
            engine
                .insert("good", "", vec![], rows(10, 2), 10)
                .await
                .unwrap();
            let err = engine.flush(&[]).await.unwrap_err();
            assert!(err.to_string().contains("`bad`"), "{err}");
            assert_eq!(engine.count("good").await.unwrap(), 10 * (round + 1));
            // `good` alone flushes fine.
            engine.flush(&["good".into()]).await.unwrap();
            wal(&engine).rotate_for_test();
            let files = wal_files(dir.path());
            first_files.get_or_insert(files.clone());
            assert!(files.len() <= 3, "round {round}: the log keeps {files:?}");
        }
        // Once the folder can be made, the relogged rows flush, once.
        std::fs::remove_file(&blocker).unwrap();
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("bad").await.unwrap(), 5);
        engine.close().await;
        let engine = open(dir.path()).await;
        engine.flush(&[]).await.unwrap();
        assert_eq!(
            engine.count("bad").await.unwrap(),
            5,
            "nothing replayed twice"
        );
        assert_eq!(engine.count("good").await.unwrap(), 40);
    }

    /// Rows relogged for a table that cannot flush survive a crash, once each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relogged_rows_survive_a_crash_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        let blocker = good_and_unflushable(&engine, dir.path()).await;
        engine
            .insert("bad", "", vec![1, 2, 3], rows(3, 2), 3)
            .await
            .unwrap();
        engine.delete("bad", "", vec![2]).await.unwrap();
        for _ in 0..3 {
            wal(&engine).rotate_for_test();
            engine
                .insert("good", "", vec![], rows(1, 2), 1)
                .await
                .unwrap();
            assert!(engine.flush(&[]).await.is_err());
        }
        engine.close().await;
        std::fs::remove_file(&blocker).unwrap();
        let engine = open(dir.path()).await;
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("bad").await.unwrap(), 2);
        assert_eq!(
            found_in(&engine, "bad", &[1, 2, 3]).await,
            [true, false, true]
        );
    }

    /// What a crash leaves behind (a temporary file, a segment written but never committed, a file
    /// beside committed ones, the folder of a table that is gone) is removed at start; data stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_a_crash_leaves_are_swept_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        engine
            .insert("c", "", vec![1, 2], rows(2, 2), 2)
            .await
            .unwrap();
        engine.flush(&[]).await.unwrap();
        engine.delete("c", "", vec![2]).await.unwrap();
        engine.flush(&[]).await.unwrap();
        engine.close().await;
        let table = segment::table_dir(dir.path(), "c");
        let segment_dir = std::fs::read_dir(&table)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let orphans = [
            segment_dir.join(".1234.tmp-99"),
            segment_dir.join("1700000000000000"),
            table.join("1700000000000001").join("1700000000000002"),
            segment::table_dir(dir.path(), "gone").join("s").join("f"),
        ];
        for o in &orphans {
            std::fs::create_dir_all(o.parent().unwrap()).unwrap();
            std::fs::write(o, b"left by a crash").unwrap();
        }
        let engine = open(dir.path()).await;
        assert_eq!(engine.sweep_orphans().await.unwrap(), 4);
        for o in &orphans {
            assert!(!o.exists(), "{} stays", o.display());
        }
        assert!(!segment::table_dir(dir.path(), "gone").exists());
        assert!(segment_dir.join(segment::DELETED_FILE).exists());
        assert_eq!(engine.count("c").await.unwrap(), 1);
        assert_eq!(found(&engine, &[1, 2]).await, [true, false]);
    }

    /// `cache.insert_buffer_size` bounds the buffer: a full buffer is flushed to make room, and when it
    /// cannot be (a table that fails to flush holds it) inserts get OUT_OF_MEMORY instead of memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_insert_buffer_flushes_or_refuses_with_out_of_memory() {
        use mishards_proto::ErrorCode;
        use mishards_proto::error::MilvusError;
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.set_insert_buffer_size(1000);
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        for _ in 0..20 {
            engine
                .insert("c", "", vec![], rows(40, 2), 40)
                .await
                .unwrap();
        }
        assert_eq!(
            engine.count("c").await.unwrap(),
            760,
            "flushed to make room"
        );
        engine.create_collection("bad", 2, 1024, 1).await.unwrap();
        let blocker = segment::table_dir(dir.path(), "bad");
        std::fs::write(&blocker, b"").unwrap();
        engine
            .insert("bad", "", vec![], rows(40, 2), 40)
            .await
            .unwrap();
        let err = engine
            .insert("c", "", vec![], rows(40, 2), 40)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OutOfMemory);
        assert!(
            err.to_string().contains("cache.insert_buffer_size"),
            "{err}"
        );
        std::fs::remove_file(&blocker).unwrap();
        engine
            .insert("c", "", vec![], rows(40, 2), 40)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collection_takes_at_most_milvus_s_4096_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        engine.create_partition("c", "p0").await.unwrap();
        // The other 4095 rows in one transaction: one by one would take minutes.
        let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            dir.path().join("meta.sqlite").display()
        ))
        .await
        .unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4095) \
             INSERT INTO Tables (table_id, state, dimension, created_on, flag, index_file_size, \
             engine_type, index_params, metric_type, owner_table, partition_tag, version, flush_lsn) \
             SELECT 'x' || i, state, dimension, created_on, flag, index_file_size, engine_type, \
             index_params, metric_type, owner_table, 'p' || i, version, flush_lsn \
             FROM n, Tables WHERE partition_tag = 'p0'",
        )
        .execute(&mut db)
        .await
        .unwrap();
        assert_eq!(
            engine.partitions("c").await.unwrap().len(),
            1 + super::super::catalogue::MAX_PARTITIONS
        );
        let err = engine.create_partition("c", "one_more").await.unwrap_err();
        assert!(err.to_string().contains("upper limit(4096)"), "{err}");
    }

    /// DeleteByID without a tag reaches every partition with one log record (ids logged and buffered
    /// once, not once per partition), and replays into each after a crash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_over_many_partitions_is_one_record_replayed_into_each() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        for (i, tag) in ["", "a", "b"].iter().enumerate() {
            if !tag.is_empty() {
                engine.create_partition("c", tag).await.unwrap();
            }
            let ids = vec![i as i64 * 10, i as i64 * 10 + 1];
            engine.insert("c", tag, ids, rows(2, 2), 2).await.unwrap();
        }
        engine.flush(&[]).await.unwrap();
        let before = wal(&engine).next_lsn();
        engine.delete("c", "", vec![0, 11, 20]).await.unwrap();
        assert_eq!(wal(&engine).next_lsn(), before + 1, "one record");
        engine.close().await;
        let engine = open(dir.path()).await;
        engine.flush(&[]).await.unwrap();
        assert_eq!(engine.count("c").await.unwrap(), 3);
        assert_eq!(
            found(&engine, &[0, 1, 10, 11, 20, 21]).await,
            [false, true, true, false, false, true]
        );
    }

    fn wal_files(storage: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(storage.join(crate::WAL_DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}
