//! The node's engine: collections and partitions, the write path (WAL → memory buffer → flush into
//! segment files), merging small files, index builds, deletes, compaction, garbage collection, and the
//! read path (segment cache → kernels → merged top-k).
//!
//! Only a write node (`Role::Writer`) changes metadata or files. Every state change that rewrites files or
//! metadata runs under `maintenance`, so flush, merge, index commit, compaction and GC never interleave.
//!
//! One job per file: `catalogue` (collections, partitions, count and stats), `write` (insert, delete,
//! flush) over the `buffer` of unflushed writes, `indexing` (index builds), `maintenance` (merge,
//! compaction, garbage collection) and `read` (search, get by id, cache loading). This file holds the
//! `Engine` itself, its options and settings, the background loop and the helpers they share.

mod buffer;
mod catalogue;
mod indexing;
mod maintenance;
mod read;
mod stats;
mod write;

pub use stats::{EngineStats, TableFlushStats};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use self::buffer::{Buffers, apply_record};
use crate::NodeError;
use crate::cache::SegmentCache;
use crate::storage_lock::StorageLock;
use crate::vectors::VectorsRef;
use crate::wal::{DamagePolicy, Wal, WalRecord};
use mishards_config::Role;
use mishards_meta::{CollectionTables, FileRow, FileType, MetaStore, TableRow, TableState};

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

/// How an engine runs: its role, where its files live, and its flush, GC, cache and index settings.
/// Milvus 1.1's default `cache.insert_buffer_size` (1 GB).
pub const DEFAULT_INSERT_BUFFER_BYTES: u64 = 1 << 30;

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
    /// What a damaged write-ahead log does at start (`wal.recovery_error_ignore`).
    pub wal_damage: DamagePolicy,
}

/// A query against one collection.
pub struct Query<'a> {
    pub vectors: VectorsRef<'a>,
    pub nq: usize,
    pub k: usize,
    /// The request's params JSON, checked against the collection's index type.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
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
    /// `cache.insert_buffer_size`: the most the write buffer holds before inserts wait for a flush.
    insert_buffer_bytes: AtomicU64,
    /// A write node's exclusive claim on its storage folder, held while the engine lives.
    storage_lock: Mutex<Option<StorageLock>>,
    /// Rows inserted and flush failures, for `/metrics` and `/readyz`.
    stats: EngineStats,
}

fn lock_error<T>(_: T) -> NodeError {
    NodeError::Internal("an engine lock was poisoned by a panic".into())
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
        let storage_lock = match opts.role {
            Role::Reader => None,
            Role::Writer => Some(StorageLock::acquire(&opts.storage)?),
        };
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
                    opts.wal_damage,
                )?;
                let replayed = records.len();
                for (lsn, record) in records {
                    // Records of a dropped table of the same name, or older than the table, are not its.
                    let live: Vec<&TableRow> = record
                        .tables()
                        .into_iter()
                        .filter_map(|(name, created_on)| {
                            let table = tables.get(name)?;
                            (table.state == TableState::Normal
                                && lsn as i64 > table.flush_lsn
                                && created_on.is_none_or(|c| c == table.created_on))
                            .then_some(table)
                        })
                        .collect();
                    let Some(first) = live.first() else {
                        continue;
                    };
                    let width = write::table_width(first);
                    let record = match record {
                        WalRecord::DeleteMany { ids, .. } => WalRecord::DeleteMany {
                            tables: live
                                .iter()
                                .map(|t| (t.table_id.clone(), t.created_on))
                                .collect(),
                            ids,
                        },
                        other => other,
                    };
                    apply_record(&mut buffers, lsn, record, width);
                }
                if replayed > 0 {
                    tracing::info!(records = replayed, "replayed the write-ahead log");
                }
                Some(wal)
            }
        };
        Ok(Arc::new(Engine {
            stats: EngineStats::default(),
            storage_lock: Mutex::new(storage_lock),
            insert_buffer_bytes: AtomicU64::new(DEFAULT_INSERT_BUFFER_BYTES),
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

    /// Lets go of the engine once background work scheduled on it (index builds) has let go too, which
    /// releases a write node's storage folder; so one process can open the folder again (tests of a
    /// restart). Gives up waiting after 10 s.
    pub async fn close(self: Arc<Self>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.release_storage_lock();
    }

    /// Gives up the write node's claim on its storage folder: for a node stopped inside a process that
    /// goes on (tests, the embedded demo), where a connection task may still hold the engine.
    pub fn release_storage_lock(&self) {
        if let Ok(mut lock) = self.storage_lock.lock() {
            lock.take();
        }
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

    pub fn counters(&self) -> &EngineStats {
        &self.stats
    }

    /// Bytes of inserts and deletes buffered for the next flush.
    pub fn buffered_bytes(&self) -> Result<u64, NodeError> {
        let b = self.buffers.lock().map_err(lock_error)?;
        Ok(b.tables
            .values()
            .map(buffer::MemTable::bytes)
            .sum::<usize>() as u64)
    }

    /// Record bytes submitted to the write-ahead log and not yet written (0 on a read node).
    pub fn wal_queued_bytes(&self) -> u64 {
        self.wal.as_ref().map_or(0, Wal::queued_bytes)
    }

    /// The write-ahead log's folder (a write node's).
    pub fn wal_dir(&self) -> Option<PathBuf> {
        self.wal
            .is_some()
            .then(|| self.opts.storage.join(super::WAL_DIR_NAME))
    }

    /// Whether the metadata database answers now (bounded by its statement timeout).
    pub async fn metadata_reachable(&self) -> Result<(), NodeError> {
        Ok(self.meta.ping().await?)
    }

    /// The lsn of the last record logged (0 on a read node): a table created now starts after it.
    fn last_lsn(&self) -> i64 {
        self.wal
            .as_ref()
            .map_or(0, |w| w.next_lsn().saturating_sub(1) as i64)
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
            if let Err(e) = engine.sweep_orphans().await {
                tracing::warn!(error = %e, "cannot sweep the storage folder for files a crash left behind");
            }
            // Files left TO_INDEX by an earlier run (stopped mid-build) get their index now.
            engine.schedule_index_builds();
            let gc_every = (engine.opts.gc_grace / 2)
                .clamp(Duration::from_millis(200), Duration::from_secs(30));
            let mut gc_tick = tokio::time::interval(gc_every);
            // Measured from the last auto-flush, not from the last wake-up: a garbage-collection tick
            // must not restart the wait, or an interval longer than the GC period would never end.
            let mut last_flush = tokio::time::Instant::now();
            loop {
                let every = Duration::from_millis(engine.auto_flush_ms.load(Ordering::Relaxed));
                let flush_in = every.saturating_sub(last_flush.elapsed());
                tokio::select! {
                    _ = tokio::time::sleep(flush_in) => {
                        last_flush = tokio::time::Instant::now();
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

    /// Changes the insert buffer's limit at run time (`set_config cache.insert_buffer_size`).
    pub fn set_insert_buffer_size(&self, bytes: u64) {
        self.insert_buffer_bytes
            .store(bytes.max(1), Ordering::Relaxed);
    }

    /// Changes the auto-flush interval at run time (`Cmd("set_config storage.auto_flush_interval …")`);
    /// `None` stops the regular flush.
    pub fn set_auto_flush(&self, every: Option<Duration>) {
        let ms = every.map_or(u64::MAX, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.auto_flush_ms.store(ms, Ordering::Relaxed);
    }
}

/// Runs blocking work (file I/O, index builds, kernels) on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))
}

/// The collection's own table, then its partitions'.
fn every_table(tables: &CollectionTables) -> impl Iterator<Item = &TableRow> {
    std::iter::once(&tables.collection).chain(&tables.partitions)
}

fn table_ids(tables: &CollectionTables) -> Vec<String> {
    every_table(tables).map(|t| t.table_id.clone()).collect()
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

/// The raw-data file among one segment's files (the one that is not its index): the segment's delete
/// marks are matched against its ids.
fn raw_file<'f>(segment_files: &[&'f FileRow]) -> Option<&'f FileRow> {
    segment_files
        .iter()
        .copied()
        .find(|f| f.file_type != FileType::Index)
}
