//! The node's engine: collections and partitions, the write path (WAL → memory buffer → flush into
//! segment files), merging small files, index builds, deletes, compaction, garbage collection, and the
//! read path (segment cache → kernels → merged top-k).
//!
//! Only a write node (`Role::Writer`) changes metadata or files. Every state change that rewrites files or
//! metadata runs under `maintenance`, so flush, merge, index commit, compaction and GC never interleave.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;
use tokio::sync::watch;

use super::cache::{LoadedSegment, SegmentCache};
use super::index::{IvfFlat, Metric, TopK};
use super::segment::{self, SegmentError};
use super::wal::{Durable, Wal, WalRecord};
use super::{NodeError, validate};
use mishards_config::Role;
use mishards_meta::{
    CollectionIndex, CollectionTables, DEFAULT_PARTITION_TAG, EngineType, FLAG_AUTO_IDS,
    FLAG_USER_IDS, FileChanges, FileRow, FileType, MetaError, MetaStore, MetricType, NewFile,
    NewTable, Retype, TableRow, TableState, now_micros, select_tables,
};

/// The files a segment can consist of while it is live: its raw data (searchable, waiting for an index,
/// or kept behind one) and its index.
const SEGMENT_FILES: [FileType; 4] = [
    FileType::Raw,
    FileType::ToIndex,
    FileType::Index,
    FileType::Backup,
];
/// The live files that hold a segment's vectors in row order (by-id reads use these).
const RAW_FILES: [FileType; 3] = [FileType::Raw, FileType::ToIndex, FileType::Backup];

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub role: Role,
    pub storage: PathBuf,
    /// How often buffered inserts become a segment file.
    pub auto_flush_interval: Duration,
    /// How long a replaced file stays on disk for readers still searching it.
    pub gc_grace: Duration,
    pub cache_bytes: usize,
    /// Files with fewer rows than this stay exact (FLAT) even when the collection has an index.
    pub index_build_rows: i64,
}

/// Inserts and deletes not yet flushed, per table, each tagged with the lsn of its log record (so a
/// record whose log write failed can be taken back out).
#[derive(Default)]
struct MemTable {
    dim: usize,
    ids: Vec<i64>,
    vectors: Vec<f32>,
    /// (lsn, first row) of each logged insert, in lsn order.
    inserts: Vec<(u64, usize)>,
    /// Logged deletes, in lsn order. At the flush they remove the buffered rows logged before them and
    /// mark the rows in the table's flushed segments.
    deletes: Vec<(u64, Vec<i64>)>,
}

impl MemTable {
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.deletes.is_empty()
    }

    fn push_insert(&mut self, lsn: u64, ids: Vec<i64>, mut vectors: Vec<f32>) {
        self.inserts.push((lsn, self.ids.len()));
        self.ids.extend(ids);
        self.vectors.append(&mut vectors);
    }

    /// Takes out what the record `lsn` added (its log write failed, its writer was told so).
    fn discard(&mut self, lsn: u64) {
        self.deletes.retain(|(l, _)| *l != lsn);
        let Some(pos) = self.inserts.iter().position(|(l, _)| *l == lsn) else {
            return;
        };
        let start = self.inserts[pos].1;
        let end = self.inserts.get(pos + 1).map_or(self.ids.len(), |c| c.1);
        self.ids.drain(start..end);
        self.vectors.drain(start * self.dim..end * self.dim);
        self.inserts.remove(pos);
        for chunk in &mut self.inserts[pos..] {
            chunk.1 -= end - start;
        }
    }

    /// The rows to flush: the buffered rows but those a delete logged after them removed.
    fn live_rows(&self) -> (Cow<'_, [i64]>, Cow<'_, [f32]>) {
        if self.deletes.is_empty() {
            return (Cow::Borrowed(&self.ids), Cow::Borrowed(&self.vectors));
        }
        let mut last_delete: HashMap<i64, u64> = HashMap::new();
        for (lsn, ids) in &self.deletes {
            for id in ids {
                last_delete.insert(*id, *lsn); // in lsn order: the last one wins
            }
        }
        let dim = self.dim;
        let (mut ids, mut vectors) = (Vec::new(), Vec::new());
        for (chunk, (lsn, start)) in self.inserts.iter().enumerate() {
            let end = self.inserts.get(chunk + 1).map_or(self.ids.len(), |c| c.1);
            for row in *start..end {
                let id = self.ids[row];
                if last_delete.get(&id).is_some_and(|deleted| deleted > lsn) {
                    continue;
                }
                ids.push(id);
                vectors.extend_from_slice(&self.vectors[row * dim..(row + 1) * dim]);
            }
        }
        (Cow::Owned(ids), Cow::Owned(vectors))
    }

    /// Every id deleted since the last flush, sorted, once each.
    fn deleted_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .deletes
            .iter()
            .flat_map(|(_, ids)| ids)
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Puts back what a failed flush took, ahead of anything buffered since (which is logged later).
    fn restore(&mut self, mut older: MemTable) {
        let offset = older.ids.len();
        older
            .inserts
            .extend(self.inserts.drain(..).map(|(lsn, row)| (lsn, row + offset)));
        older.ids.append(&mut self.ids);
        older.vectors.append(&mut self.vectors);
        older.deletes.append(&mut self.deletes);
        older.dim = older.dim.max(self.dim);
        *self = older;
    }
}

#[derive(Default)]
struct Buffers {
    tables: HashMap<String, MemTable>,
    last_id: i64,
}

/// A query against one collection.
pub struct Query<'a> {
    pub vectors: &'a [f32],
    pub nq: usize,
    pub k: usize,
    pub nprobe: Option<usize>,
}

pub struct Engine {
    meta: MetaStore,
    opts: EngineOptions,
    /// `storage.auto_flush_interval` in milliseconds; `set_config` changes it at run time.
    auto_flush_ms: AtomicU64,
    wal: Option<Wal>,
    buffers: Mutex<Buffers>,
    maintenance: tokio::sync::Mutex<()>,
    index_builder: tokio::sync::Mutex<()>,
    cache: Arc<SegmentCache>,
    /// The last metadata read of each collection, for riding out a metadata outage.
    known: Mutex<HashMap<String, CollectionTables>>,
}

fn lock_error<T>(_: T) -> NodeError {
    NodeError::Internal("an engine lock was poisoned by a panic".into())
}

fn metric_of(m: MetricType) -> Metric {
    if m == MetricType::Ip {
        Metric::Ip
    } else {
        Metric::L2
    }
}

impl Engine {
    /// Opens the engine. A write node opens its write-ahead log and replays every record newer than its
    /// table's `flush_lsn` into memory, so acknowledged writes survive a crash.
    pub async fn open(meta: MetaStore, opts: EngineOptions) -> Result<Arc<Engine>, NodeError> {
        std::fs::create_dir_all(&opts.storage).map_err(|e| {
            NodeError::Internal(format!(
                "cannot create storage folder {}: {e}",
                opts.storage.display()
            ))
        })?;
        let mut buffers = Buffers::default();
        let wal = match opts.role {
            Role::Reader => None,
            Role::Writer => {
                let tables: HashMap<String, TableRow> = meta
                    .all_tables()
                    .await?
                    .into_iter()
                    .map(|t| (t.table_id.clone(), t))
                    .collect();
                let flushed = tables
                    .values()
                    .map(|t| t.flush_lsn)
                    .chain(meta.global_lsn().await?)
                    .max()
                    .unwrap_or(0);
                let (wal, records) = Wal::open(
                    &opts.storage.join(super::WAL_DIR_NAME),
                    flushed.max(0) as u64 + 1,
                )?;
                let replayed = records.len();
                for (lsn, record) in records {
                    let Some(table) = tables.get(record.table_id()) else {
                        continue;
                    };
                    if table.state != TableState::Normal || lsn as i64 <= table.flush_lsn {
                        continue;
                    }
                    apply_record(&mut buffers, lsn, record, table.dimension as usize);
                }
                if replayed > 0 {
                    tracing::info!(records = replayed, "replayed the write-ahead log");
                }
                Some(wal)
            }
        };
        Ok(Arc::new(Engine {
            cache: Arc::new(SegmentCache::new(opts.cache_bytes)),
            known: Mutex::new(HashMap::new()),
            auto_flush_ms: AtomicU64::new(opts.auto_flush_interval.as_millis().max(1) as u64),
            meta,
            opts,
            wal,
            buffers: Mutex::new(buffers),
            maintenance: tokio::sync::Mutex::new(()),
            index_builder: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn role(&self) -> Role {
        self.opts.role
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub fn cache(&self) -> &SegmentCache {
        &self.cache
    }

    fn writer(&self, rpc: &'static str) -> Result<&Wal, NodeError> {
        self.wal.as_ref().ok_or(NodeError::ReadOnly(rpc))
    }

    /// Runs auto-flush, index builds and garbage collection until `shutdown` turns true, then flushes once
    /// more. Readers run nothing.
    pub fn spawn_background(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            if engine.wal.is_none() {
                return;
            }
            // Files left TO_INDEX by an earlier run (stopped mid-build) get their index now.
            engine.schedule_index_builds();
            let gc_every = (engine.opts.gc_grace / 2)
                .clamp(Duration::from_millis(200), Duration::from_secs(30));
            let mut gc_tick = tokio::time::interval(gc_every);
            loop {
                let flush_in = Duration::from_millis(engine.auto_flush_ms.load(Ordering::Relaxed));
                tokio::select! {
                    _ = tokio::time::sleep(flush_in) => {
                        if let Err(e) = engine.flush(&[]).await {
                            tracing::error!(error = %e, "auto-flush failed; data stays in the write-ahead log");
                        }
                    }
                    _ = gc_tick.tick() => {
                        if let Err(e) = engine.collect_garbage().await {
                            tracing::warn!(error = %e, "garbage collection failed");
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
            if let Err(e) = engine.flush(&[]).await {
                tracing::error!(error = %e, "final flush failed; data stays in the write-ahead log");
            }
        })
    }

    /// Changes the auto-flush interval at run time (`Cmd("set_config storage.auto_flush_interval …")`);
    /// `None` stops the regular flush.
    pub fn set_auto_flush(&self, every: Option<Duration>) {
        let ms = every.map_or(u64::MAX, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.auto_flush_ms.store(ms, Ordering::Relaxed);
    }

    // ---- Collections and partitions -----------------------------------------------------------------------

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
        match self
            .meta
            .create_table(&NewTable::collection(name, dim, size, metric, now_micros()))
            .await
        {
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
        self.forget_tables(&tables);
        Ok(())
    }

    /// Drops buffered data and cached files of tables that are gone.
    fn forget_tables(&self, tables: &CollectionTables) {
        if let Ok(mut b) = self.buffers.lock() {
            for t in std::iter::once(&tables.collection).chain(&tables.partitions) {
                b.tables.remove(&t.table_id);
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
        let partition = NewTable::partition(&tables.collection, &tag, now_micros());
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
        if let Ok(mut b) = self.buffers.lock() {
            b.tables.remove(&partition.table_id);
        }
        Ok(())
    }

    /// The table rows an insert, delete or by-id read addresses: one partition (`_default` = the
    /// collection itself) or, without a tag, every table of the collection.
    fn tables_for_tag<'t>(
        tables: &'t CollectionTables,
        tag: &str,
    ) -> Result<Vec<&'t TableRow>, NodeError> {
        let tag = tag.trim();
        if tag.is_empty() {
            return Ok(std::iter::once(&tables.collection)
                .chain(&tables.partitions)
                .collect());
        }
        Ok(vec![partition_table(tables, tag)?])
    }

    // ---- Write path ---------------------------------------------------------------------------------------

    /// Inserts rows into a collection (or one partition) and returns their ids once the write-ahead log
    /// holds them. `ids` must be empty (ids are assigned) or one per row.
    pub async fn insert(
        &self,
        name: &str,
        tag: &str,
        ids: Vec<i64>,
        vectors: Vec<f32>,
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
        if vectors.len() != rows * dim {
            return Err(NodeError::InvalidDimension(format!(
                "every vector must have the collection's dimension {dim}"
            )));
        }
        validate::insert_size(vectors.len())?;
        if let Some(id) = ids.iter().find(|id| **id < 0) {
            return Err(NodeError::InvalidVectorId(format!(
                "id {id} is negative: ids must be ≥ 0 (-1 marks a missing hit)"
            )));
        }
        if vectors.iter().any(|v| !v.is_finite()) {
            return Err(NodeError::InvalidRowRecord(
                "vectors must not contain NaN or infinite values".into(),
            ));
        }
        self.check_id_mode(&tables.collection, !ids.is_empty())
            .await?;
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
                dim: dim as u32,
                ids: ids.clone(),
                vectors,
            };
            let (lsn, durable) = wal.submit(&record)?;
            apply_record(&mut b, lsn, record, dim);
            (lsn, durable, ids)
        };
        if let Err(e) = durable.wait().await {
            // Not in the log, so not acknowledged: the rows must not reach a segment either.
            self.discard_buffered(&target.table_id, lsn);
            return Err(e.into());
        }
        Ok(ids)
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
        let waits: Vec<(String, u64, Durable)> = {
            let mut b = self.buffers.lock().map_err(lock_error)?;
            let mut waits = Vec::new();
            for table in targets {
                let record = WalRecord::Delete {
                    table_id: table.table_id.clone(),
                    ids: ids.clone(),
                };
                let (lsn, durable) = wal.submit(&record)?;
                apply_record(&mut b, lsn, record, table.dimension as usize);
                waits.push((table.table_id.clone(), lsn, durable));
            }
            waits
        };
        let mut first_error = None;
        for (table_id, lsn, durable) in waits {
            if let Err(e) = durable.wait().await {
                self.discard_buffered(&table_id, lsn);
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
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
        let mut first_error = None;
        let mut touched = Vec::new();
        for (table_id, mem) in taken {
            match self.flush_table(&table_id, &mem, upto as i64).await {
                Ok(()) => touched.push(table_id),
                Err(e) => {
                    tracing::error!(table = %table_id, error = %e, "flush failed; keeping the data buffered");
                    if let Ok(mut b) = self.buffers.lock() {
                        b.tables.entry(table_id).or_default().restore(mem);
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if wanted.is_none() {
            // Every buffered table was taken and cleaned: failed records up to `upto` are gone for good.
            wal.forget_failed_through(upto);
        }
        if everything {
            self.meta.set_global_lsn(upto as i64).await?;
            wal.checkpoint(upto);
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
        Ok(())
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
        let Some(table) = self
            .meta
            .table(table_id)
            .await?
            .filter(|t| t.state == TableState::Normal)
        else {
            return Ok(()); // dropped meanwhile: nothing to keep
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
    async fn write_segment(
        &self,
        table: &TableRow,
        ids: &[i64],
        vectors: &[f32],
        flush_lsn: i64,
        index_by_rows: bool,
    ) -> Result<NewFile, NodeError> {
        let new = NewFile {
            table_id: table.table_id.clone(),
            segment_id: segment::new_id(),
            engine_type: EngineType::Flat,
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
            (table.dimension as usize, ids.to_vec(), vectors.to_vec());
        let size = tokio::task::spawn_blocking(move || {
            segment::write_raw(&path, dim, &ids_owned, &vectors_owned)
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))??;
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
            let Some(raw) = segment_files
                .iter()
                .find(|f| f.file_type != FileType::Index)
            else {
                continue;
            };
            let storage = self.opts.storage.clone();
            let raw = (*raw).clone();
            let wanted = wanted.clone();
            let outcome = tokio::task::spawn_blocking(
                move || -> Result<Option<(usize, usize)>, SegmentError> {
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
                },
            )
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))??;
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

    /// Merges a table's RAW files smaller than `index_file_size`, as Milvus 1.1 does: in id order, small
    /// files are gathered until together they reach `index_file_size`, and each such group (and the
    /// rest, when it is more than one file) becomes one file. A merged file that reaches
    /// `index_file_size` is due for the collection's index.
    async fn merge_small_files(&self, table_id: &str) -> Result<(), NodeError> {
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
        let (ids, vectors) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<i64>, Vec<f32>), SegmentError> {
                let (mut ids, mut vectors) = (Vec::new(), Vec::new());
                for f in &inputs {
                    let raw = segment::read_raw(&segment::file_path(&storage, f))?;
                    let deleted = segment::read_deleted(&segment::deleted_path(&storage, f))?;
                    for (row, id) in raw.ids.iter().enumerate() {
                        if deleted.binary_search(id).is_err() {
                            ids.push(*id);
                            vectors.extend_from_slice(raw.vector(row));
                        }
                    }
                }
                Ok((ids, vectors))
            })
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))??;
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

    /// Whether a new RAW file should get the collection's index: when it reached `index_file_size` (on a
    /// flush or a merge, as Milvus 1.1 does; built in the background), or, with `by_rows` (CreateIndex,
    /// compaction), when it has at least `index_build_rows` rows.
    fn due_for_index(&self, table: &TableRow, file_size: i64, rows: i64, by_rows: bool) -> bool {
        table.engine_type == EngineType::IvfFlat
            && (file_size >= table.index_file_size
                || (by_rows && rows >= self.opts.index_build_rows))
    }

    // ---- Indexes ------------------------------------------------------------------------------------------

    pub async fn create_index(
        self: &Arc<Self>,
        name: &str,
        index_type: i32,
        params: &str,
    ) -> Result<(), NodeError> {
        self.writer("CreateIndex")?;
        let tables = self.collection(name).await?;
        let engine = validate::index_type(index_type)?;
        let params = validate::index_params(engine, &validate::params_json(Some(params))?)?;
        {
            let _m = self.maintenance.lock().await;
            let changed =
                tables.collection.engine_type != engine || tables.collection.index_params != params;
            let table_ids = table_ids(&tables);
            let files = self
                .meta
                .files_of_tables(&table_ids, &SEGMENT_FILES)
                .await?;
            let now = now_micros();
            let ids_of = |t: FileType| -> Vec<i64> {
                files
                    .iter()
                    .filter(|f| f.file_type == t)
                    .map(|f| f.id)
                    .collect()
            };
            // The index, the retired index files and the files due for the new one: one transaction.
            let mut changes = FileChanges {
                collection_index: Some(CollectionIndex {
                    collection: name.to_string(),
                    engine_type: engine,
                    index_params: params.clone(),
                }),
                ..FileChanges::default()
            };
            let mut raw: Vec<&FileRow> = files
                .iter()
                .filter(|f| f.file_type == FileType::Raw)
                .collect();
            let mut retired = Vec::new();
            if changed {
                // A different index: retire built ones and bring their raw files back.
                retired = ids_of(FileType::Index);
                changes
                    .retype
                    .push(Retype::any(&retired, FileType::ToDelete, now));
                changes
                    .retype
                    .push(Retype::any(&ids_of(FileType::Backup), FileType::Raw, now));
                raw.extend(files.iter().filter(|f| f.file_type == FileType::Backup));
            }
            let mut table = tables.collection.clone();
            table.engine_type = engine;
            let due: Vec<i64> = raw
                .iter()
                .filter(|f| self.due_for_index(&table, f.file_size, f.row_count, true))
                .map(|f| f.id)
                .collect();
            changes
                .retype
                .push(Retype::any(&due, FileType::ToIndex, now));
            self.meta.commit_files(&changes).await?;
            self.cache.evict(&retired);
        }
        // Milvus answers CreateIndex once the existing data is indexed.
        self.build_pending_indexes().await
    }

    pub async fn drop_index(&self, name: &str) -> Result<(), NodeError> {
        self.writer("DropIndex")?;
        let tables = self.collection(name).await?;
        let _m = self.maintenance.lock().await;
        let all = [FileType::ToIndex, FileType::Index, FileType::Backup];
        let files = self.meta.files_of_tables(&table_ids(&tables), &all).await?;
        let ids_of = |t: FileType| {
            files
                .iter()
                .filter(|f| f.file_type == t)
                .map(|f| f.id)
                .collect::<Vec<_>>()
        };
        let now = now_micros();
        let mut back = ids_of(FileType::Backup);
        back.extend(ids_of(FileType::ToIndex));
        let changes = FileChanges {
            collection_index: Some(CollectionIndex {
                collection: name.to_string(),
                engine_type: EngineType::Flat,
                index_params: "{}".into(),
            }),
            retype: vec![
                Retype::any(&ids_of(FileType::Index), FileType::ToDelete, now),
                Retype::any(&back, FileType::Raw, now),
            ],
            ..FileChanges::default()
        };
        self.meta.commit_files(&changes).await?;
        self.cache.evict(&ids_of(FileType::Index));
        Ok(())
    }

    fn schedule_index_builds(self: &Arc<Self>) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.build_pending_indexes().await {
                tracing::error!(error = %e, "index build failed");
            }
        });
    }

    /// Builds an index for every TO_INDEX file, one at a time, until none is left.
    async fn build_pending_indexes(&self) -> Result<(), NodeError> {
        let _builder = self.index_builder.lock().await;
        loop {
            let pending = self.meta.files_by_type(&[FileType::ToIndex]).await?;
            let Some(file) = pending.into_iter().next() else {
                return Ok(());
            };
            self.build_index(file).await?;
        }
    }

    async fn build_index(&self, file: FileRow) -> Result<(), NodeError> {
        let Some(table) = self.meta.table(&file.table_id).await? else {
            self.meta
                .set_files_type(&[file.id], FileType::ToDelete, now_micros())
                .await?;
            return Ok(());
        };
        let nlist = validate::params_json(Some(&table.index_params))?
            .get("nlist")
            .and_then(|v| v.as_u64())
            .unwrap_or(1024) as usize;
        let index_file_id = segment::new_id();
        let storage = self.opts.storage.clone();
        let (raw_file, metric) = (file.clone(), metric_of(table.metric_type));
        let index_path =
            segment::segment_dir(&storage, &file.table_id, &file.segment_id).join(&index_file_id);
        let path = index_path.clone();
        let started = std::time::Instant::now();
        let size = tokio::task::spawn_blocking(move || -> Result<u64, SegmentError> {
            let raw = segment::read_raw(&segment::file_path(&storage, &raw_file))?;
            let index = IvfFlat::build(
                &raw.vectors,
                &raw.ids,
                raw.dim,
                nlist,
                metric,
                raw_file.id as u64,
            );
            segment::write_index(&path, &index, &raw.ids)
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))??;
        let _m = self.maintenance.lock().await;
        let current = self.meta.files_by_ids(&[file.id]).await?;
        let Some(current) = current
            .into_iter()
            .next()
            .filter(|f| f.file_type == FileType::ToIndex)
        else {
            let _ = std::fs::remove_file(&index_path); // the file was dropped or rebuilt meanwhile
            return Ok(());
        };
        let now = now_micros();
        // The index file row and the raw file's move behind it: one transaction, so a crash never leaves
        // the segment searchable twice (INDEX and TO_INDEX).
        let changes = FileChanges {
            create: vec![NewFile {
                table_id: file.table_id.clone(),
                segment_id: file.segment_id.clone(),
                engine_type: EngineType::IvfFlat,
                file_id: index_file_id,
                file_type: FileType::Index,
                file_size: i64::try_from(size).unwrap_or(i64::MAX),
                row_count: current.row_count,
                now_us: now,
                flush_lsn: file.flush_lsn,
            }],
            retype: vec![Retype::expecting(
                &[file.id],
                &[FileType::ToIndex],
                FileType::Backup,
                now,
            )],
            ..FileChanges::default()
        };
        let index_row = match self.meta.commit_files(&changes).await {
            Ok(created) => created.into_iter().next(),
            Err(MetaError::Conflict(_)) => {
                let _ = std::fs::remove_file(&index_path);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.cache.evict(&[file.id]);
        tracing::info!(
            file = file.id,
            index_file = index_row.map_or(0, |r| r.id),
            nlist,
            seconds = started.elapsed().as_secs_f64(),
            "built IVF_FLAT index"
        );
        Ok(())
    }

    // ---- Compaction and garbage collection ----------------------------------------------------------------

    /// Rewrites every segment of the collection that has deleted rows, without them.
    pub async fn compact(self: &Arc<Self>, name: &str) -> Result<(), NodeError> {
        self.writer("Compact")?;
        let tables = self.collection(name).await?;
        {
            let _m = self.maintenance.lock().await;
            for table in std::iter::once(&tables.collection).chain(&tables.partitions) {
                let files = self
                    .meta
                    .files_of_tables(std::slice::from_ref(&table.table_id), &SEGMENT_FILES)
                    .await?;
                for segment_files in group_by_segment(&files).values() {
                    let Some(raw) = segment_files
                        .iter()
                        .find(|f| f.file_type != FileType::Index)
                    else {
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

    // ---- Read path ----------------------------------------------------------------------------------------

    /// Searches the collection's searchable files (of the tables the tags select). `None` when the
    /// collection has no data yet (Milvus answers such a search with an empty result).
    pub async fn search(
        &self,
        name: &str,
        tags: &[String],
        query: &Query<'_>,
    ) -> Result<Option<TopK>, NodeError> {
        let tables = self.collection(name).await?;
        check_query(&tables.collection, query)?;
        let selected = select_tables(&tables, tags)?;
        let files = self.meta.searchable_files(&selected).await?;
        self.search_files(&tables.collection, files, query).await
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
        check_query(&tables.collection, query)?;
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
                    .search_segments(&tables.collection, segments, query)
                    .await
                    .map(Some);
            }
        };
        let names: HashSet<&str> = std::iter::once(&tables.collection)
            .chain(&tables.partitions)
            .map(|t| t.table_id.as_str())
            .collect();
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
        self.search_files(&tables.collection, files, query).await
    }

    async fn search_files(
        &self,
        collection: &TableRow,
        files: Vec<FileRow>,
        query: &Query<'_>,
    ) -> Result<Option<TopK>, NodeError> {
        if files.is_empty() {
            return Ok(None);
        }
        let segments = self.load_files(files).await?;
        self.search_segments(collection, segments, query)
            .await
            .map(Some)
    }

    async fn search_segments(
        &self,
        collection: &TableRow,
        segments: Vec<Arc<LoadedSegment>>,
        query: &Query<'_>,
    ) -> Result<TopK, NodeError> {
        check_query(collection, query)?;
        let metric = metric_of(collection.metric_type);
        let (vectors, nq, k, nprobe) = (query.vectors.to_vec(), query.nq, query.k, query.nprobe);
        // Segment spans run on rayon's threads: their parent is handed over explicitly.
        let parent = tracing::Span::current();
        let merged = tokio::task::spawn_blocking(move || {
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
                    .in_scope(|| s.search(&vectors, k, metric, nprobe))
                })
                .reduce(
                    || TopK::empty(nq, k, metric),
                    |mut a, b| {
                        a.merge(&b);
                        a
                    },
                )
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok(merged)
    }

    /// Loads files through the cache, in parallel.
    async fn load_files(&self, files: Vec<FileRow>) -> Result<Vec<Arc<LoadedSegment>>, NodeError> {
        let storage = self.opts.storage.clone();
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            files
                .par_iter()
                .map(|f| cache.get(&storage, f).map_err(NodeError::from))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
    }

    /// The stored vector of each id (`None` where absent or deleted), from the raw files of the tags' tables.
    pub async fn vectors_by_id(
        &self,
        name: &str,
        tag: &str,
        ids: &[i64],
    ) -> Result<Vec<Option<Vec<f32>>>, NodeError> {
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
        Ok(ids
            .iter()
            .map(|id| segments.iter().find_map(|s| s.vector_of(*id)))
            .collect())
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
        let partitions: Vec<serde_json::Value> = std::iter::once(&tables.collection)
            .chain(&tables.partitions)
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

    /// Loads the collection's (or the tags' partitions') searchable files into the cache.
    pub async fn preload(&self, name: &str, tags: &[String]) -> Result<(), NodeError> {
        let tables = self.collection(name).await?;
        let files = self
            .meta
            .searchable_files(&select_tables(&tables, tags)?)
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
            .searchable_files(&select_tables(&tables, tags)?)
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

/// Query vectors must have the collection's dimension (ILLEGAL_DIMENSION otherwise), even when there is
/// nothing to search.
fn check_query(collection: &TableRow, query: &Query<'_>) -> Result<(), NodeError> {
    let dim = collection.dimension as usize;
    if query.nq == 0 || query.vectors.len() != query.nq * dim {
        return Err(NodeError::InvalidDimension(format!(
            "every query vector must have the collection's dimension {dim}"
        )));
    }
    Ok(())
}

fn partition_table<'t>(tables: &'t CollectionTables, tag: &str) -> Result<&'t TableRow, NodeError> {
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

fn table_ids(tables: &CollectionTables) -> Vec<String> {
    std::iter::once(&tables.collection)
        .chain(&tables.partitions)
        .map(|t| t.table_id.clone())
        .collect()
}

fn group_by_segment(files: &[FileRow]) -> BTreeMap<(&str, &str), Vec<&FileRow>> {
    let mut groups: BTreeMap<(&str, &str), Vec<&FileRow>> = BTreeMap::new();
    for f in files {
        groups
            .entry((f.table_id.as_str(), f.segment_id.as_str()))
            .or_default()
            .push(f);
    }
    groups
}

/// Ids for `n` new rows: increasing, and past the clock (microseconds × 1000) so they stay unique
/// across restarts without being stored.
fn next_ids(b: &mut Buffers, n: usize) -> Result<Vec<i64>, NodeError> {
    let first = b
        .last_id
        .saturating_add(1)
        .max(now_micros().saturating_mul(1000));
    let last = first
        .checked_add(n as i64 - 1)
        .filter(|l| *l < i64::MAX)
        .ok_or_else(|| {
            NodeError::InvalidVectorId(
                "automatic ids are exhausted: ids given earlier reach the largest id; give ids"
                    .into(),
            )
        })?;
    b.last_id = last;
    Ok((first..=last).collect())
}

/// Applies a logged change to the in-memory buffers (on the write path and on replay alike).
fn apply_record(b: &mut Buffers, lsn: u64, record: WalRecord, dim: usize) {
    match record {
        WalRecord::Insert {
            table_id,
            ids,
            vectors,
            ..
        } => {
            b.last_id = b.last_id.max(ids.iter().copied().max().unwrap_or(0));
            let mem = b.tables.entry(table_id).or_default();
            mem.dim = dim;
            mem.push_insert(lsn, ids, vectors);
        }
        WalRecord::Delete { table_id, ids } => {
            let mem = b.tables.entry(table_id).or_default();
            mem.dim = dim;
            mem.deletes.push((lsn, ids));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mishards_meta::{MetaOptions, MetaUri, SqliteTarget};

    fn mem_table(dim: usize) -> MemTable {
        MemTable {
            dim,
            ..MemTable::default()
        }
    }

    #[test]
    fn a_delete_removes_only_buffered_rows_logged_before_it() {
        let mut m = mem_table(1);
        m.push_insert(1, vec![10, 11], vec![1.0, 1.1]);
        m.deletes.push((2, vec![10, 12]));
        m.push_insert(3, vec![10, 12], vec![2.0, 2.2]);
        let (ids, vectors) = m.live_rows();
        assert_eq!(&ids[..], [11, 10, 12]);
        assert_eq!(&vectors[..], [1.1, 2.0, 2.2]);
        assert_eq!(m.deleted_ids(), [10, 12]);
    }

    #[test]
    fn discarding_a_record_takes_out_exactly_its_rows() {
        let mut m = mem_table(2);
        m.push_insert(1, vec![1], vec![1.0, 1.0]);
        m.push_insert(2, vec![2, 3], vec![2.0, 2.0, 3.0, 3.0]);
        m.deletes.push((3, vec![1]));
        m.push_insert(4, vec![4], vec![4.0, 4.0]);
        m.discard(2);
        m.discard(3);
        m.discard(99);
        assert_eq!(m.ids, [1, 4]);
        assert_eq!(m.vectors, [1.0, 1.0, 4.0, 4.0]);
        assert_eq!(m.inserts, [(1, 0), (4, 1)]);
        assert!(m.deletes.is_empty());
        m.discard(4);
        m.discard(1);
        assert!(m.is_empty());
    }

    #[test]
    fn a_restored_buffer_keeps_log_order() {
        let mut older = mem_table(1);
        older.push_insert(1, vec![1, 2], vec![1.0, 2.0]);
        older.deletes.push((2, vec![5]));
        let mut newer = mem_table(1);
        newer.push_insert(3, vec![5], vec![5.0]);
        newer.deletes.push((4, vec![1]));
        newer.restore(older);
        assert_eq!(newer.inserts, [(1, 0), (3, 2)]);
        let (ids, _) = newer.live_rows();
        assert_eq!(
            &ids[..],
            [2, 5],
            "5 was inserted after its delete, 1 deleted after its insert"
        );
        newer.discard(3);
        assert_eq!(newer.ids, [1, 2]);
    }

    fn options(storage: &std::path::Path) -> EngineOptions {
        EngineOptions {
            role: Role::Writer,
            storage: storage.to_path_buf(),
            auto_flush_interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(60),
            cache_bytes: 1 << 30,
            index_build_rows: 4096,
        }
    }

    async fn open(storage: &std::path::Path) -> Arc<Engine> {
        let uri = MetaUri::Sqlite(SqliteTarget::File(storage.join("meta.sqlite")));
        let meta = MetaStore::open(&uri, &MetaOptions::default())
            .await
            .expect("metadata");
        Engine::open(meta, options(storage)).await.expect("engine")
    }

    fn wal(engine: &Engine) -> &Wal {
        engine.wal.as_ref().expect("a write node")
    }

    async fn found(engine: &Engine, ids: &[i64]) -> Vec<bool> {
        engine
            .vectors_by_id("c", "", ids)
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
                .insert("c", "", vec![1, 2], vec![1.0; 4], 2)
                .await
                .unwrap();
            wal(&engine).fail_next_writes(1);
            let refused = engine.insert("c", "", vec![3, 4], vec![3.0; 4], 2).await;
            assert!(matches!(refused, Err(NodeError::Wal(_))), "{refused:?}");
            wal(&engine).fail_next_writes(1);
            let refused = engine.delete("c", "", vec![1]).await;
            assert!(matches!(refused, Err(NodeError::Wal(_))), "{refused:?}");
            // The log goes on after a failed write.
            engine
                .insert("c", "", vec![5], vec![5.0; 2], 1)
                .await
                .unwrap();
            if restart {
                drop(engine);
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

    /// A record whose write fails while a flush already took the buffer holding it is left out by the
    /// flush, not by its writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_leaves_out_records_whose_write_failed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path()).await;
        engine.create_collection("c", 2, 1024, 1).await.unwrap();
        engine
            .insert("c", "", vec![1], vec![1.0; 2], 1)
            .await
            .unwrap();
        wal(&engine).fail_next_writes(1);
        let pending = {
            // What `insert` does, short of taking its rows back after the failure.
            let mut b = engine.buffers.lock().unwrap();
            let record = WalRecord::Insert {
                table_id: "c".into(),
                dim: 2,
                ids: vec![2],
                vectors: vec![2.0; 2],
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
}
