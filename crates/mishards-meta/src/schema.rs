//! The Milvus 1.1 metadata schema: `Tables`, `TableFiles`, `Environment`, their rows and enums.
//! Column names, types and defaults are Milvus's own, so a database written by Milvus 1.1 reads here and
//! a database written here is read by Milvus 1.1.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::FromRow;

/// The Milvus version string written into `Tables.version` for new rows.
pub const SCHEMA_VERSION: &str = "1.1.1";
/// Milvus's default `index_file_size` (1024 MB), stored in bytes.
pub const DEFAULT_INDEX_FILE_SIZE: i64 = 1024 * 1024 * 1024;

/// Generates an `i32`-backed enum that converts from the stored integer (rejecting unknown values, so a
/// corrupt or newer database is reported instead of misread) and displays its Milvus name.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $value:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant = $value),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn code(self) -> i32 { self as i32 }
            pub fn name(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }

        impl TryFrom<i64> for $name {
            type Error = UnknownValue;
            fn try_from(value: i64) -> Result<Self, UnknownValue> {
                match value {
                    $($value => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }
    };
}

/// A stored integer that is not a known value of a Milvus enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a known {kind}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: i64,
}

stored_enum!(
    /// `Tables.state`.
    TableState { Normal = 0 => "NORMAL", ToDelete = 1 => "TO_DELETE" }
);

stored_enum!(
    /// `TableFiles.file_type`: a segment file's place in Milvus's lifecycle.
    FileType {
        New = 0 => "NEW",
        Raw = 1 => "RAW",
        ToIndex = 2 => "TO_INDEX",
        Index = 3 => "INDEX",
        ToDelete = 4 => "TO_DELETE",
        NewMerge = 5 => "NEW_MERGE",
        NewIndex = 6 => "NEW_INDEX",
        Backup = 7 => "BACKUP",
    }
);

impl FileType {
    /// The file types a search reads: RAW, TO_INDEX and INDEX.
    pub const SEARCHABLE: [FileType; 3] = [FileType::Raw, FileType::ToIndex, FileType::Index];

    pub fn is_searchable(self) -> bool {
        Self::SEARCHABLE.contains(&self)
    }
}

stored_enum!(
    /// `engine_type`: Milvus's engine (index) type; the public index type ids are the same numbers.
    EngineType {
        Invalid = 0 => "INVALID",
        Flat = 1 => "FLAT",
        IvfFlat = 2 => "IVF_FLAT",
        IvfSq8 = 3 => "IVF_SQ8",
        Rnsg = 4 => "RNSG",
        IvfSq8H = 5 => "IVF_SQ8H",
        IvfPq = 6 => "IVF_PQ",
        SptagKdt = 7 => "SPTAG_KDT",
        SptagBkt = 8 => "SPTAG_BKT",
        BinFlat = 9 => "BIN_FLAT",
        BinIvfFlat = 10 => "BIN_IVF_FLAT",
        Hnsw = 11 => "HNSW",
        Annoy = 12 => "ANNOY",
        IvfSq8Nr = 13 => "IVF_SQ8NR",
        HnswSq8Nm = 14 => "HNSW_SQ8NM",
    }
);

impl EngineType {
    /// The `index_name` Milvus reports per segment in `get_collection_stats`.
    pub fn stats_name(self) -> &'static str {
        match self {
            EngineType::Flat | EngineType::BinFlat | EngineType::Invalid => "IDMAP",
            EngineType::IvfFlat | EngineType::BinIvfFlat => "IVFFLAT",
            EngineType::IvfSq8 | EngineType::IvfSq8Nr => "IVFSQ8",
            EngineType::Rnsg => "NSG",
            EngineType::IvfSq8H => "IVFSQ8H",
            EngineType::IvfPq => "PQ",
            EngineType::Hnsw | EngineType::HnswSq8Nm => "HNSW",
            EngineType::Annoy => "ANNOY",
            EngineType::SptagKdt => "SPTAGKDT",
            EngineType::SptagBkt => "SPTAGBKT",
        }
    }
}

stored_enum!(
    /// `metric_type`.
    MetricType {
        L2 = 1 => "L2",
        Ip = 2 => "IP",
        Hamming = 3 => "HAMMING",
        Jaccard = 4 => "JACCARD",
        Tanimoto = 5 => "TANIMOTO",
        Substructure = 6 => "SUBSTRUCTURE",
        Superstructure = 7 => "SUPERSTRUCTURE",
    }
);

impl MetricType {
    /// Whether a larger distance is a better hit (only inner product); every other metric sorts ascending.
    pub fn higher_is_better(self) -> bool {
        self == MetricType::Ip
    }

    pub fn is_binary(self) -> bool {
        !matches!(self, MetricType::L2 | MetricType::Ip)
    }
}

/// `Tables.flag` bit: the collection's rows get automatic ids (Milvus's FLAG_MASK_NO_USERID).
pub const FLAG_AUTO_IDS: i64 = 1;
/// `Tables.flag` bit: the collection's rows carry ids the client gave (Milvus's FLAG_MASK_HAS_USERID).
pub const FLAG_USER_IDS: i64 = 1 << 1;

/// One `Tables` row: a collection (`owner_table` empty) or a partition (`owner_table` = its collection).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct TableRow {
    pub id: i64,
    pub table_id: String,
    #[sqlx(try_from = "i64")]
    pub state: TableState,
    pub dimension: i64,
    pub created_on: i64,
    pub flag: i64,
    /// Bytes.
    pub index_file_size: i64,
    #[sqlx(try_from = "i64")]
    pub engine_type: EngineType,
    pub index_params: String,
    #[sqlx(try_from = "i64")]
    pub metric_type: MetricType,
    pub owner_table: String,
    pub partition_tag: String,
    pub version: Option<String>,
    pub flush_lsn: i64,
}

impl TableRow {
    pub fn is_partition(&self) -> bool {
        !self.owner_table.is_empty()
    }

    /// The collection this row belongs to: its own name for a collection, the owner for a partition.
    pub fn collection_name(&self) -> &str {
        if self.is_partition() {
            &self.owner_table
        } else {
            &self.table_id
        }
    }
}

/// What a caller supplies to create a `Tables` row; the id is assigned by the database.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTable {
    pub table_id: String,
    pub dimension: i64,
    pub created_on: i64,
    pub index_file_size: i64,
    pub engine_type: EngineType,
    pub index_params: String,
    pub metric_type: MetricType,
    pub owner_table: String,
    pub partition_tag: String,
    /// The write-ahead log's last lsn when the table is created, as Milvus 1.1 sets it: records logged
    /// before the table existed are never replayed into it.
    pub flush_lsn: i64,
}

/// A `table_id` for a new partition: a number unique on this write node, as Milvus 1.1's
/// `NextCollectionId` makes one (microseconds × 1000 plus a counter). Unlike a name built from the tag, it
/// fits every file system and the column whatever the tag holds, and cannot clash with a collection (whose
/// name must start with a letter or `_`).
fn next_partition_table_id(now_us: i64) -> String {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let wanted = now_us.saturating_mul(1000);
    let id = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(wanted.max(last.saturating_add(1)))
        })
        .map_or(wanted, |last| wanted.max(last.saturating_add(1)));
    id.to_string()
}

impl NewTable {
    /// A new collection with Milvus's defaults: FLAT engine, no index params, no partitions.
    pub fn collection(
        name: &str,
        dimension: i64,
        index_file_size: i64,
        metric_type: MetricType,
        now_us: i64,
    ) -> Self {
        NewTable {
            table_id: name.to_string(),
            dimension,
            created_on: now_us,
            index_file_size,
            engine_type: EngineType::Flat,
            index_params: "{}".to_string(),
            metric_type,
            owner_table: String::new(),
            partition_tag: String::new(),
            flush_lsn: 0,
        }
    }

    /// A partition of `parent` with the tag in its own column and a generated `table_id`, as Milvus 1.1
    /// creates one, inheriting the parent's dimension, metric and index settings.
    pub fn partition(parent: &TableRow, tag: &str, now_us: i64) -> Self {
        NewTable {
            table_id: next_partition_table_id(now_us),
            dimension: parent.dimension,
            created_on: now_us,
            index_file_size: parent.index_file_size,
            engine_type: parent.engine_type,
            index_params: parent.index_params.clone(),
            metric_type: parent.metric_type,
            owner_table: parent.table_id.clone(),
            partition_tag: tag.to_string(),
            flush_lsn: 0,
        }
    }
}

/// One `TableFiles` row: a segment file. `id` is the "file id" of SearchInFiles and ReloadSegments.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct FileRow {
    pub id: i64,
    pub table_id: String,
    pub segment_id: String,
    #[sqlx(try_from = "i64")]
    pub engine_type: EngineType,
    pub file_id: String,
    #[sqlx(try_from = "i64")]
    pub file_type: FileType,
    pub file_size: i64,
    pub row_count: i64,
    pub updated_time: i64,
    pub created_on: i64,
    pub date: i64,
    pub flush_lsn: i64,
}

/// What a caller supplies to create a `TableFiles` row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub table_id: String,
    pub segment_id: String,
    pub engine_type: EngineType,
    pub file_id: String,
    pub file_type: FileType,
    pub file_size: i64,
    pub row_count: i64,
    pub now_us: i64,
    pub flush_lsn: i64,
}

/// A collection with all its live partitions, as one consistent view.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionTables {
    pub collection: TableRow,
    pub partitions: Vec<TableRow>,
}

/// Microseconds since the Unix epoch, Milvus's unit for `created_on` and `updated_time`.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_reject_unknown_values() {
        for t in FileType::ALL {
            assert_eq!(FileType::try_from(t.code() as i64), Ok(*t));
        }
        for m in MetricType::ALL {
            assert_eq!(MetricType::try_from(m.code() as i64), Ok(*m));
        }
        assert_eq!(
            FileType::try_from(8).unwrap_err().to_string(),
            "8 is not a known FileType"
        );
        assert!(TableState::try_from(2).is_err());
        assert!(EngineType::try_from(-1).is_err());
    }

    #[test]
    fn searchable_files_are_raw_to_index_and_index() {
        let searchable: Vec<_> = FileType::ALL.iter().filter(|t| t.is_searchable()).collect();
        assert_eq!(
            searchable,
            [&FileType::Raw, &FileType::ToIndex, &FileType::Index]
        );
    }

    #[test]
    fn only_inner_product_sorts_descending() {
        assert!(MetricType::Ip.higher_is_better());
        assert!(
            MetricType::ALL
                .iter()
                .filter(|m| m.higher_is_better())
                .count()
                == 1
        );
    }
}
