//! Tests of the write path: inserts, deletes, flushes, the log and its recovery.
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
