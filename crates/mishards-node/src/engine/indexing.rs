//! Index builds: CreateIndex and DropIndex, and the background builder that gives every TO_INDEX
//! file its collection's index.

use std::sync::Arc;

use super::write::raw_engine_type;
use super::{Engine, SEGMENT_FILES, blocking, table_ids};
use crate::segment;
use crate::segment_index::SegmentIndex;
use crate::{NodeError, validate};
use mishards_meta::{
    CollectionIndex, EngineType, FileChanges, FileRow, FileType, MetaError, NewFile, Retype,
    TableRow, now_micros,
};

impl Engine {
    /// Whether a new RAW file should get the collection's index: when it reached `index_file_size` (on a
    /// flush or a merge, as Milvus 1.1 does; built in the background), or, with `by_rows` (CreateIndex,
    /// compaction), when it has at least `index_build_rows` rows.
    pub(super) fn due_for_index(
        &self,
        table: &TableRow,
        file_size: i64,
        rows: i64,
        by_rows: bool,
    ) -> bool {
        !matches!(
            table.engine_type,
            EngineType::Flat | EngineType::BinFlat | EngineType::Invalid
        ) && (file_size >= table.index_file_size || (by_rows && rows >= self.opts.index_build_rows))
    }

    pub async fn create_index(
        self: &Arc<Self>,
        name: &str,
        index_type: i32,
        params: &str,
    ) -> Result<(), NodeError> {
        self.writer("CreateIndex")?;
        let tables = self.collection(name).await?;
        let collection = &tables.collection;
        let engine = validate::index_type(index_type, collection.metric_type)?;
        let params = validate::index_params(
            engine,
            collection.dimension,
            &validate::params_json(Some(params))?,
        )?;
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
            let ids_of = |t: FileType| ids_of_type(&files, t);
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
        let ids_of = |t: FileType| ids_of_type(&files, t);
        let now = now_micros();
        let mut back = ids_of(FileType::Backup);
        back.extend(ids_of(FileType::ToIndex));
        let changes = FileChanges {
            collection_index: Some(CollectionIndex {
                collection: name.to_string(),
                engine_type: raw_engine_type(&tables.collection),
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

    pub(super) fn schedule_index_builds(self: &Arc<Self>) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.build_pending_indexes().await {
                tracing::error!(error = %e, "index build failed");
            }
        });
    }

    /// Builds an index for every TO_INDEX file, one at a time, until none is left. A file whose
    /// index cannot be built from its data (the kernel refuses it) goes back to RAW, stays searchable
    /// exactly, and does not hold up the other files; the first such error is returned.
    pub(super) async fn build_pending_indexes(&self) -> Result<(), NodeError> {
        let _builder = self.index_builder.lock().await;
        let mut refused = None;
        loop {
            let pending = self.meta.files_by_type(&[FileType::ToIndex]).await?;
            let Some(file) = pending.into_iter().next() else {
                return refused.map_or(Ok(()), Err);
            };
            let id = file.id;
            match self.build_index(file).await {
                Ok(()) => {}
                Err(NodeError::Index(e)) => {
                    tracing::error!(file = id, error = %e, "index build refused: the file stays raw");
                    let back =
                        Retype::expecting(&[id], &[FileType::ToIndex], FileType::Raw, now_micros());
                    let changes = FileChanges {
                        retype: vec![back],
                        ..FileChanges::default()
                    };
                    match self.meta.commit_files(&changes).await {
                        Ok(_) | Err(MetaError::Conflict(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    refused.get_or_insert(NodeError::Index(e));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn build_index(&self, file: FileRow) -> Result<(), NodeError> {
        let Some(table) = self.meta.table(&file.table_id).await? else {
            self.meta
                .set_files_type(&[file.id], FileType::ToDelete, now_micros())
                .await?;
            return Ok(());
        };
        let params = validate::params_json(Some(&table.index_params))?;
        let engine = table.engine_type;
        let index_file_id = segment::new_id();
        let storage = self.opts.storage.clone();
        let (raw_file, metric) = (file.clone(), table.metric_type);
        let index_path =
            segment::segment_dir(&storage, &file.table_id, &file.segment_id).join(&index_file_id);
        let path = index_path.clone();
        let started = std::time::Instant::now();
        let size = blocking(move || -> Result<u64, NodeError> {
            let raw = segment::read_raw(&segment::file_path(&storage, &raw_file))?;
            let index = SegmentIndex::build(engine, &raw, metric, &params, raw_file.id as u64)?;
            Ok(segment::write_index(&path, &index, &raw.ids)?)
        })
        .await??;
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
                engine_type: engine,
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
            index = %engine,
            params = %table.index_params,
            seconds = started.elapsed().as_secs_f64(),
            "built an index"
        );
        Ok(())
    }
}

/// The ids of the files of one type.
fn ids_of_type(files: &[FileRow], file_type: FileType) -> Vec<i64> {
    files
        .iter()
        .filter(|f| f.file_type == file_type)
        .map(|f| f.id)
        .collect()
}
