//! The metadata store on a real database: SQLite always, MariaDB/MySQL when MISHARDS_TEST_MYSQL_URL is set.

mod common;

use std::time::{Duration, Instant};

use mishards::meta::{
    CollectionIndex, EngineType, FileChanges, FileRow, FileType, MetaError, MetaOptions, MetaStore,
    MetaUri, MetricType, NewFile, NewTable, Retype, TableRow, TableState, select_tables,
};

async fn open(db: &common::TestDb) -> MetaStore {
    MetaStore::open(&db.uri, &MetaOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.label))
}

fn new_file(table: &str, segment: &str, file_type: FileType, rows: i64) -> NewFile {
    NewFile {
        table_id: table.into(),
        segment_id: segment.into(),
        engine_type: EngineType::Flat,
        file_id: format!("{segment}-f"),
        file_type,
        file_size: rows * 512,
        row_count: rows,
        now_us: 1_000,
        flush_lsn: 7,
    }
}

/// Registers a file row, panicking on a store error: setup, not the thing under test.
async fn add_file(
    store: &MetaStore,
    table: &str,
    segment: &str,
    file_type: FileType,
    rows: i64,
) -> FileRow {
    store
        .create_file(&new_file(table, segment, file_type, rows))
        .await
        .unwrap()
}

/// Creates an L2 collection of dimension 4, panicking on a store error: setup, not the thing under test.
async fn add_l2_collection(store: &MetaStore, name: &str, index_file_size: i64) -> TableRow {
    store
        .create_table(&NewTable::collection(
            name,
            4,
            index_file_size,
            MetricType::L2,
            1,
        ))
        .await
        .unwrap()
}

fn ids(files: &[FileRow]) -> Vec<i64> {
    files.iter().map(|f| f.id).collect()
}

#[tokio::test]
async fn collections_and_partitions() {
    for db in common::databases().await {
        let store = open(&db).await;
        let created = store
            .create_table(&NewTable::collection(
                "vectors",
                128,
                1 << 30,
                MetricType::Ip,
                42,
            ))
            .await
            .unwrap();
        assert_eq!(created.table_id, "vectors");
        assert_eq!(
            (created.state, created.dimension, created.metric_type),
            (TableState::Normal, 128, MetricType::Ip)
        );
        assert_eq!(
            (created.engine_type, created.created_on, created.flush_lsn),
            (EngineType::Flat, 42, 0)
        );
        assert_eq!(
            created.version.as_deref(),
            Some(mishards::meta::SCHEMA_VERSION)
        );

        let dup = store
            .create_table(&NewTable::collection("vectors", 8, 1, MetricType::L2, 0))
            .await;
        assert!(
            matches!(dup, Err(MetaError::AlreadyExists(name)) if name == "vectors"),
            "{}",
            db.label
        );

        // Partition tables get generated numeric ids, as Milvus 1.1's `NextCollectionId` gives.
        let mut part_ids = Vec::new();
        for tag in ["2024-01", "2024-02"] {
            let p = store
                .create_table(&NewTable::partition(&created, tag, 43))
                .await
                .unwrap();
            assert_eq!(
                (p.owner_table.as_str(), p.partition_tag.as_str()),
                ("vectors", tag)
            );
            assert!(
                p.table_id.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                p.table_id
            );
            assert!(!part_ids.contains(&p.table_id), "ids are unique");
            part_ids.push(p.table_id);
        }
        let (p01, p02) = (part_ids[0].as_str(), part_ids[1].as_str());
        store
            .create_table(&NewTable::collection(
                "another",
                4,
                1 << 30,
                MetricType::L2,
                44,
            ))
            .await
            .unwrap();

        let names: Vec<_> = store
            .collections()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.table_id)
            .collect();
        assert_eq!(names, ["another", "vectors"], "{}", db.label);
        let view = store
            .collection_with_partitions("vectors")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.collection.table_id, "vectors");
        assert_eq!(
            view.partitions
                .iter()
                .map(|p| p.partition_tag.as_str())
                .collect::<Vec<_>>(),
            ["2024-01", "2024-02"]
        );
        assert_eq!(select_tables(&view, &["2024-0[2]".into()]).unwrap(), [p02]);
        assert!(
            store
                .collection_with_partitions(p01)
                .await
                .unwrap()
                .is_none(),
            "a partition is no collection"
        );
        assert!(
            store
                .collection_with_partitions("missing")
                .await
                .unwrap()
                .is_none()
        );

        store
            .update_collection_index("vectors", EngineType::IvfFlat, r#"{"nlist": 1024}"#)
            .await
            .unwrap();
        store.update_table_flush_lsn(p01, 99).await.unwrap();
        let view = store
            .collection_with_partitions("vectors")
            .await
            .unwrap()
            .unwrap();
        assert!(
            std::iter::once(&view.collection)
                .chain(&view.partitions)
                .all(|t| t.engine_type == EngineType::IvfFlat)
        );
        assert_eq!(view.partitions[0].flush_lsn, 99);
        assert_eq!(view.collection.index_params, r#"{"nlist": 1024}"#);

        assert!(store.mark_table_deleted(p02, 50).await.unwrap());
        let view = store
            .collection_with_partitions("vectors")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.partitions.len(), 1);
        assert!(store.mark_collection_deleted("vectors", 51).await.unwrap());
        assert!(
            store
                .collection_with_partitions("vectors")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.table(p01).await.unwrap().unwrap().state,
            TableState::ToDelete
        );
        assert!(
            !store
                .mark_collection_deleted("never-was", 52)
                .await
                .unwrap()
        );

        store
            .delete_tables(&["vectors".into(), p01.into(), p02.into()])
            .await
            .unwrap();
        assert!(store.table("vectors").await.unwrap().is_none());
        assert_eq!(store.all_tables().await.unwrap().len(), 1);
        store.close().await;
    }
}

#[tokio::test]
async fn files_lifecycle_and_searchable_set() {
    for db in common::databases().await {
        let store = open(&db).await;
        let c = add_l2_collection(&store, "c", 1 << 30).await;
        let c_p = store
            .create_table(&NewTable::partition(&c, "p", 1))
            .await
            .unwrap()
            .table_id;
        let c_p = c_p.as_str();
        add_l2_collection(&store, "d", 1 << 30).await;

        let raw = add_file(&store, "c", "s1", FileType::Raw, 10).await;
        let to_index = add_file(&store, c_p, "s2", FileType::ToIndex, 20).await;
        let index = add_file(&store, "c", "s3", FileType::Index, 30).await;
        let new = add_file(&store, "c", "s4", FileType::New, 0).await;
        let other = add_file(&store, "d", "s5", FileType::Raw, 5).await;
        assert!(
            raw.id < to_index.id
                && to_index.id < index.id
                && index.id < new.id
                && new.id < other.id
        );
        assert_eq!(
            (raw.date, raw.updated_time, raw.created_on, raw.flush_lsn),
            (-1, 1_000, 1_000, 7)
        );

        let read = store
            .files_by_ids(&[index.id, raw.id, 999_999])
            .await
            .unwrap();
        assert_eq!(read, [raw.clone(), index.clone()], "{}", db.label);

        let tables = ["c".to_string(), c_p.to_string()];
        assert_eq!(
            ids(&store.searchable_files(&tables).await.unwrap()),
            [raw.id, to_index.id, index.id]
        );
        assert_eq!(
            ids(&store.all_searchable_files().await.unwrap()),
            [raw.id, to_index.id, index.id, other.id]
        );
        assert_eq!(
            ids(&store
                .files_of_tables(&tables, &[FileType::New])
                .await
                .unwrap()),
            [new.id]
        );
        assert!(store.searchable_files(&[]).await.unwrap().is_empty());

        // A merge: the new file becomes RAW, the one it replaces TO_DELETE.
        let mut merged = new.clone();
        merged.file_type = FileType::Raw;
        merged.row_count = 10;
        merged.file_size = 5120;
        merged.updated_time = 2_000;
        store.update_file(&merged).await.unwrap();
        store
            .set_files_type(&[raw.id], FileType::ToDelete, 2_000)
            .await
            .unwrap();
        assert_eq!(
            ids(&store.searchable_files(&tables).await.unwrap()),
            [to_index.id, index.id, new.id]
        );
        assert_eq!(store.files_by_ids(&[new.id]).await.unwrap(), [merged]);
        assert_eq!(
            store.files_by_ids(&[raw.id]).await.unwrap()[0].updated_time,
            2_000
        );

        store.touch_files(&[index.id], 3_000).await.unwrap();
        assert_eq!(
            store.files_by_ids(&[index.id]).await.unwrap()[0].updated_time,
            3_000
        );

        // Dropping a partition hides its files from search even before they are removed.
        store.mark_table_deleted(c_p, 4_000).await.unwrap();
        assert_eq!(
            ids(&store.searchable_files(&tables).await.unwrap()),
            [index.id, new.id]
        );
        assert_eq!(
            store.files_by_ids(&[to_index.id]).await.unwrap()[0].file_type,
            FileType::ToDelete
        );

        store.delete_files(&[raw.id, to_index.id]).await.unwrap();
        assert!(
            store
                .files_by_ids(&[raw.id, to_index.id])
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
    }
}

/// `commit_files` is one transaction: a change whose files are not in the expected state keeps nothing
/// (no new row, no flush lsn, no retype, no update), and a good one keeps everything.
#[tokio::test]
async fn file_changes_commit_together_or_not_at_all() {
    for db in common::databases().await {
        let label = db.label;
        let store = open(&db).await;
        add_l2_collection(&store, "t", 1 << 20).await;
        let a = add_file(&store, "t", "a", FileType::Raw, 10).await;
        let b = add_file(&store, "t", "b", FileType::Raw, 10).await;
        let c = add_file(&store, "t", "c", FileType::Index, 10).await;
        let all = |store: &MetaStore| {
            let store = store.clone();
            async move {
                store
                    .files_of_tables(&["t".to_string()], FileType::ALL)
                    .await
                    .unwrap()
            }
        };
        let before = all(&store).await;
        let mut touched = c.clone();
        touched.row_count = 3;
        touched.updated_time = 5_000;
        let changes = |expected: FileType| FileChanges {
            collection_index: Some(CollectionIndex {
                collection: "t".into(),
                engine_type: EngineType::IvfFlat,
                index_params: r#"{"nlist":8}"#.into(),
            }),
            retype: vec![Retype::expecting(
                &[a.id, b.id, b.id],
                &[expected],
                FileType::ToDelete,
                6_000,
            )],
            update: vec![touched.clone()],
            create: vec![
                new_file("t", "merged", FileType::ToIndex, 20),
                new_file("t", "second", FileType::Raw, 1),
            ],
            flush_lsn: Some(("t".into(), 42)),
        };

        // b is RAW, not TO_INDEX: the statement touches fewer rows than asked, and nothing is kept.
        let conflict = store.commit_files(&changes(FileType::ToIndex)).await;
        assert!(
            matches!(conflict, Err(MetaError::Conflict(_))),
            "{label}: {conflict:?}"
        );
        assert_eq!(all(&store).await, before, "{label}: files unchanged");
        let t = store.table("t").await.unwrap().unwrap();
        assert_eq!(
            (t.flush_lsn, t.engine_type),
            (0, EngineType::Flat),
            "{label}: table unchanged"
        );

        let created = store.commit_files(&changes(FileType::Raw)).await.unwrap();
        assert_eq!(created.len(), 2, "{label}");
        assert!(
            created[0].id > c.id && created[1].id > created[0].id,
            "{label}"
        );
        assert_eq!(
            store
                .files_by_ids(&[created[0].id, created[1].id])
                .await
                .unwrap(),
            created,
            "{label}: the returned rows are the stored ones"
        );
        let after = store.files_by_ids(&[a.id, b.id]).await.unwrap();
        assert_eq!(
            after
                .iter()
                .map(|f| (f.file_type, f.updated_time))
                .collect::<Vec<_>>(),
            [(FileType::ToDelete, 6_000), (FileType::ToDelete, 6_000)],
            "{label}"
        );
        let c_after = store.files_by_ids(&[c.id]).await.unwrap();
        assert_eq!(c_after, [touched.clone()], "{label}: the update landed too");
        let t = store.table("t").await.unwrap().unwrap();
        assert_eq!(
            (t.flush_lsn, t.engine_type, t.index_params.as_str()),
            (42, EngineType::IvfFlat, r#"{"nlist":8}"#),
            "{label}"
        );

        // Nothing to retype and nothing else: an empty transaction commits.
        assert!(
            store
                .commit_files(&FileChanges::default())
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn global_lsn_round_trips() {
    for db in common::databases().await {
        let store = open(&db).await;
        assert_eq!(store.global_lsn().await.unwrap(), None);
        store.set_global_lsn(5).await.unwrap();
        store.set_global_lsn(5).await.unwrap();
        store.set_global_lsn(12).await.unwrap();
        assert_eq!(store.global_lsn().await.unwrap(), Some(12), "{}", db.label);
        store.close().await;
    }
}

/// A database Milvus made (its own DDL, its own rows) is used as it is, never re-created.
#[tokio::test]
async fn an_existing_milvus_database_is_left_as_it_is() {
    for db in common::databases().await {
        let first = open(&db).await;
        let c = first
            .create_table(&NewTable::collection(
                "kept",
                16,
                1 << 30,
                MetricType::L2,
                1,
            ))
            .await
            .unwrap();
        let f = add_file(&first, "kept", "seg", FileType::Index, 3).await;
        first.set_global_lsn(77).await.unwrap();
        first.close().await;

        let second = open(&db).await;
        assert_eq!(second.table("kept").await.unwrap(), Some(c));
        assert_eq!(second.files_by_ids(&[f.id]).await.unwrap(), [f]);
        assert_eq!(second.global_lsn().await.unwrap(), Some(77));
        second.close().await;
    }
}

#[tokio::test]
async fn a_table_without_milvus_columns_is_reported() {
    for db in common::databases().await {
        // A `Tables` that lacks most Milvus columns, as an older or foreign schema would.
        run_raw(
            &db.uri,
            "CREATE TABLE Tables (id BIGINT PRIMARY KEY, table_id VARCHAR(255))",
        )
        .await
        .unwrap();
        let err = MetaStore::open(&db.uri, &MetaOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                MetaError::SchemaMismatch {
                    table: "Tables",
                    ..
                }
            ),
            "{}: {err}",
            db.label
        );
        assert!(err.to_string().contains("`Tables`"), "{err}");
    }
}

async fn run_raw(uri: &MetaUri, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    match uri {
        MetaUri::Sqlite(mishards::meta::SqliteTarget::File(path)) => {
            let mut c =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await?;
            sqlx::query(sql).execute(&mut c).await.map(drop)
        }
        MetaUri::MySql(t) => {
            let url = format!("mysql://{}@{}:{}/{}", t.user, t.host, t.port, t.database);
            let mut c = sqlx::MySqlConnection::connect(&url).await?;
            sqlx::query(sql).execute(&mut c).await.map(drop)
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_naming_the_uri_without_password() {
    let uri = MetaUri::parse("mysql+pymysql://root:s3cret@127.0.0.1:1/milvus", None).unwrap();
    let options = MetaOptions {
        acquire_timeout: Duration::from_secs(3),
        ..MetaOptions::default()
    };
    let started = Instant::now();
    let err = MetaStore::open(&uri, &options).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(
        text.contains("mysql://root:***@127.0.0.1:1/milvus"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_across_queries() {
    let store = MetaStore::open(
        &MetaUri::parse("sqlite::memory:", None).unwrap(),
        &MetaOptions::default(),
    )
    .await
    .unwrap();
    store
        .create_table(&NewTable::collection("m", 2, 1, MetricType::L2, 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(store.collections().await.unwrap().len(), 1);
}

/// Milvus 1.1's columns, in order, with their declared types (SQLite declares `id` INTEGER to autoincrement).
#[tokio::test]
async fn the_schema_has_milvus_columns_and_types() {
    let expected_tables = [
        ("id", "BIGINT"),
        ("table_id", "VARCHAR(255)"),
        ("state", "INT"),
        ("dimension", "SMALLINT"),
        ("created_on", "BIGINT"),
        ("flag", "BIGINT"),
        ("index_file_size", "BIGINT"),
        ("engine_type", "INT"),
        ("index_params", "VARCHAR(512)"),
        ("metric_type", "INT"),
        ("owner_table", "VARCHAR(255)"),
        ("partition_tag", "VARCHAR(255)"),
        ("version", "VARCHAR(64)"),
        ("flush_lsn", "BIGINT"),
    ];
    let expected_files = [
        ("id", "BIGINT"),
        ("table_id", "VARCHAR(255)"),
        ("segment_id", "VARCHAR(255)"),
        ("engine_type", "INT"),
        ("file_id", "VARCHAR(255)"),
        ("file_type", "INT"),
        ("file_size", "BIGINT"),
        ("row_count", "BIGINT"),
        ("updated_time", "BIGINT"),
        ("created_on", "BIGINT"),
        ("date", "INT"),
        ("flush_lsn", "BIGINT"),
    ];
    for db in common::databases().await {
        open(&db).await.close().await;
        for (table, expected) in [
            ("Tables", &expected_tables[..]),
            ("TableFiles", &expected_files[..]),
            ("Environment", &[("global_lsn", "BIGINT")][..]),
        ] {
            let columns = columns_of(&db.uri, table).await;
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(n, t)| {
                    let t = if db.label == "sqlite" && *n == "id" {
                        "INTEGER"
                    } else {
                        t
                    };
                    (n.to_string(), t.to_string())
                })
                .collect();
            assert_eq!(columns, expected, "{} {table}", db.label);
        }
    }
}

/// (name, declared type) of each column, normalised to upper case without MySQL's display widths.
async fn columns_of(uri: &MetaUri, table: &str) -> Vec<(String, String)> {
    use sqlx::{Connection, Row};
    let rows: Vec<(String, String)> = match uri {
        MetaUri::Sqlite(mishards::meta::SqliteTarget::File(path)) => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(&format!("PRAGMA table_info({table})"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<String, _>("name"), r.get::<String, _>("type")))
                .collect()
        }
        MetaUri::MySql(t) => {
            let url = format!("mysql://{}@{}:{}/{}", t.user, t.host, t.port, t.database);
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::query(
                "SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(COLUMN_TYPE AS CHAR) AS type \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            )
            .bind(&t.database)
            .bind(table)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>("name"), r.get::<String, _>("type")))
            .collect()
        }
        other => panic!("unexpected {other}"),
    };
    let width = regex::Regex::new(r"^(BIGINT|INT|SMALLINT)\(\d+\)$").unwrap();
    rows.into_iter()
        .map(|(n, t)| {
            let t = t.to_uppercase();
            (n, width.replace(&t, "$1").into_owned())
        })
        .collect()
}

/// A statement stuck behind a lock fails after the statement timeout with a reason, instead of
/// holding its caller (and the actor or request behind it) for as long as the lock lasts.
#[tokio::test]
async fn a_statement_stuck_behind_a_lock_times_out() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.sqlite");
    let uri = MetaUri::Sqlite(mishards::meta::SqliteTarget::File(path.clone()));
    let options = MetaOptions {
        acquire_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_millis(300),
        ..MetaOptions::default()
    };
    let store = MetaStore::open(&uri, &options).await.unwrap();
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .create_table(&NewTable::collection("locked", 2, 1, MetricType::L2, 0))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, MetaError::Timeout { .. }), "{err}");
    assert_eq!(
        mishards::proto::error::MilvusError::code(&err),
        mishards::proto::ErrorCode::MetaFailed
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    store
        .create_table(&NewTable::collection("locked", 2, 1, MetricType::L2, 0))
        .await
        .unwrap();
}
