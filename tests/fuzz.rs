//! Fuzzing: what a client, a file on disk or an operator hands mishards, mutated at random from valid
//! seeds (and sometimes random outright), must be answered or refused — never a panic, never a hang.
//!
//! Targets: every gRPC request type through the data node's service (validation and engine), write-ahead
//! log files, raw segment and index files, delete marks, the node's `Cmd` config strings, the TOML config
//! file, and metadata URIs. Driven by proptest: inputs come from mutating valid seeds (byte flips,
//! inserts, deletions, truncation), so decoders get past their first checks. A failure is shrunk and
//! kept by proptest in `tests/fuzz.proptest-regressions`, which later runs replay first.
//!
//! `MISHARDS_FUZZ_CASES` sets the inputs per target (default 5000, a bounded run for the suite; a long
//! run: `MISHARDS_FUZZ_CASES=100000 cargo nextest run --test fuzz`). Every target prints how many inputs
//! it tried.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;
use tonic::Request;

use mishards::config::Scope;
use mishards::meta::{MetaOptions, MetaStore, MetaUri, MetricType};
use mishards::node::engine::{Engine, EngineOptions};
use mishards::node::segment;
use mishards::node::segment_index::SegmentIndex;
use mishards::node::server_config::ServerConfig;
use mishards::node::service::NodeService;
use mishards::node::vectors::Vectors;
use mishards::node::wal::{DamagePolicy, Wal};
use mishards::proto;
use mishards::proto::milvus_service_server::MilvusService;

fn cases() -> u32 {
    std::env::var("MISHARDS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Inputs are cheap to make and checks fail loudly; shrink enough to read a failure.
        max_shrink_iters: 2000,
        // Every failure found is kept here (committed), and replayed first by every later run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// One edit of a mutation.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    /// Writes a little-endian u32 (a length field, most often): 0, small, huge, or random.
    Word(Index, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
        (
            any::<Index>(),
            prop_oneof![Just(0u32), 1u32..64, Just(u32::MAX), any::<u32>()]
        )
            .prop_map(|(i, w)| Edit::Word(i, w)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit], cut: Option<Index>) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let n = bytes.len();
        match e {
            Edit::Set(i, b) => bytes[i.index(n)] = *b,
            Edit::FlipBit(i, b) => bytes[i.index(n)] ^= 1 << b,
            Edit::Insert(i, b) => bytes.insert(i.index(n + 1), *b),
            Edit::Remove(i) => {
                bytes.remove(i.index(n));
            }
            Edit::Word(i, w) => {
                let at = i.index(n);
                for (k, b) in w.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c.index(bytes.len() + 1));
    }
    bytes
}

/// Inputs: one of `seeds` under a few edits (and maybe cut short), or now and then random bytes.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    mutated_by(seeds, 12)
}

/// As [`mutated`], with at most `max_edits` edits: fewer keep more inputs decodable (protobuf).
fn mutated_by(seeds: Vec<Vec<u8>>, max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        9 => (0..n, proptest::collection::vec(edit(), 0..max_edits), proptest::option::weighted(0.2, any::<Index>()))
            .prop_map(move |(i, edits, cut)| apply(seeds[i].clone(), &edits, cut)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn report(target: &str, tried: u32) {
    eprintln!("fuzz target {target}: {tried} inputs, 0 crashes");
}

fn run(target: &str, strategy: impl Strategy<Value = Vec<u8>>, check: impl Fn(&[u8])) {
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let tried = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |input| {
        tried.set(tried.get() + 1);
        check(&input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target} failed: {e}");
    }
    report(target, tried.get());
}

// ---- files on disk --------------------------------------------------------------------------------------

fn wal_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        let records = [
            mishards::node::wal::WalRecord::Insert {
                table_id: "t".into(),
                created_on: Some(1),
                dim: 2,
                ids: vec![1, 2],
                vectors: Vectors::Float(vec![1.0, 2.0, 3.0, 4.0]),
            },
            mishards::node::wal::WalRecord::Delete {
                table_id: "t".into(),
                created_on: Some(1),
                ids: vec![2],
            },
            mishards::node::wal::WalRecord::Insert {
                table_id: "b".into(),
                created_on: None,
                dim: 16,
                ids: vec![3],
                vectors: Vectors::Binary(vec![0xff, 0x0f]),
            },
            mishards::node::wal::WalRecord::DeleteMany {
                tables: vec![("t".into(), 1), ("1700000000000000".into(), 2)],
                ids: vec![1, 2, 3],
            },
            mishards::node::wal::WalRecord::Relog {
                table_id: "t".into(),
                created_on: 1,
                dim: 2,
                deleted: vec![9],
                ids: vec![1],
                vectors: Vectors::Float(vec![1.0, 2.0]),
            },
        ];
        for r in &records {
            wal.submit(r).unwrap().1.wait().await.unwrap();
        }
    });
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read(file).unwrap()
}

#[test]
fn wal_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{:020}.wal", 1));
    run("wal_files", mutated(vec![wal_seed()]), |bytes| {
        for policy in [DamagePolicy::Refuse, DamagePolicy::Skip] {
            std::fs::write(&path, bytes).unwrap();
            // Either records or a clear error; a torn tail is cut in place.
            let _ = Wal::open(dir.path(), 1, policy).map(|(_, records)| records.len());
        }
    });
}

fn file_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let raw = dir.join("raw");
    segment::write_raw(
        &raw,
        4,
        &[1, 2, 3],
        &Vectors::Float((0..12).map(|i| i as f32).collect()),
    )
    .unwrap();
    let bin = dir.join("bin");
    segment::write_raw(&bin, 16, &[1, 2], &Vectors::Binary(vec![1, 2, 3, 4])).unwrap();
    let deleted = dir.join("deleted");
    segment::add_deleted(&deleted, &[1, 5, 9]).unwrap();
    let mut seeds: Vec<Vec<u8>> = [&raw, &bin, &deleted]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // One index file of each kind, built on a small segment.
    let many = mishards::node::segment::RawSegment {
        dim: 4,
        ids: (0..64).collect(),
        vectors: Vectors::Float(
            (0..64 * 4)
                .map(|i| ((i * 7919) % 101) as f32 / 10.0)
                .collect(),
        ),
    };
    for (engine, params) in [
        (mishards::meta::EngineType::IvfFlat, r#"{"nlist": 4}"#),
        (mishards::meta::EngineType::IvfSq8, r#"{"nlist": 4}"#),
        (mishards::meta::EngineType::IvfPq, r#"{"nlist": 4, "m": 2}"#),
        (
            mishards::meta::EngineType::Hnsw,
            r#"{"M": 8, "efConstruction": 16}"#,
        ),
        (mishards::meta::EngineType::Annoy, r#"{"n_trees": 2}"#),
    ] {
        let params: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(params).unwrap();
        let index = SegmentIndex::build(engine, &many, MetricType::L2, &params, 7).unwrap();
        let path = dir.join(format!("index-{engine:?}"));
        segment::write_index(&path, &index, &many.ids).unwrap();
        seeds.push(std::fs::read(&path).unwrap());
    }
    seeds
}

#[test]
fn segment_and_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = file_seeds(dir.path());
    let path = dir.path().join("fuzzed");
    let strategy = mutated(seeds);
    run("segment_and_index_files", strategy, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        // Every reader on every input: each must answer or refuse.
        let _ = segment::read_raw(&path);
        let _ = segment::read_raw_ids(&path);
        let _ = segment::read_deleted(&path);
        let _ = segment::read_index(&path);
    });
}

// ---- operator input -------------------------------------------------------------------------------------

#[test]
fn config_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mishards.toml");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!seeds.is_empty(), "config/ holds the example files");
    run("config_files", mutated(seeds), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        for scope in Scope::ALL {
            let _ = mishards::config::Settings::resolve(
                scope,
                &Default::default(),
                &std::collections::HashMap::<String, String>::new(),
                Some(&path),
            );
        }
    });
}

#[test]
fn metadata_uris() {
    let seeds = [
        "mysql://root:p%40ss@127.0.0.1:3306/milvus",
        "mysql+pymysql://u:pw@host:1/db?charset=utf8",
        "sqlite:////var/lib/milvus/meta.sqlite",
        "sqlite://:@:/",
        "sqlite::memory:",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("metadata_uris", mutated(seeds), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(uri) = MetaUri::parse(&text, Some(Path::new("/tmp"))) {
            // Shown everywhere with the password masked.
            let _ = uri.to_string();
        }
    });
}

#[test]
fn node_cmd_strings() {
    let engine = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { open_engine(tempfile::tempdir().unwrap().keep()).await });
    let config = ServerConfig::with_defaults(engine);
    let seeds = [
        "get_config cache.cache_size",
        "set_config cache.insert_buffer_size 2GB",
        "set_config storage.auto_flush_interval 3",
        "get_config *",
        "mode",
        "version",
        "set_config wal.recovery_error_ignore true",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("node_cmd_strings", mutated(seeds), |bytes| {
        let _ = config.answer(&String::from_utf8_lossy(bytes));
    });
}

// ---- every gRPC request type ----------------------------------------------------------------------------

async fn open_engine(storage: std::path::PathBuf) -> Arc<Engine> {
    let uri = MetaUri::Sqlite(mishards::meta::SqliteTarget::File(
        storage.join("meta.sqlite"),
    ));
    let meta = MetaStore::open(&uri, &MetaOptions::default())
        .await
        .unwrap();
    let opts = EngineOptions {
        role: mishards::config::Role::Writer,
        storage,
        auto_flush_interval: Duration::from_secs(3600),
        gc_grace: Duration::ZERO,
        cache_bytes: 64 << 20,
        index_build_rows: 32,
        wal_damage: DamagePolicy::Refuse,
    };
    Engine::open(meta, opts).await.unwrap()
}

/// The request types of the Milvus 1.1 API, by number: one valid seed of each.
fn grpc_seeds() -> Vec<Vec<u8>> {
    let name = || proto::CollectionName {
        collection_name: "f".into(),
    };
    let kv = |k: &str, v: &str| proto::KeyValuePair {
        key: k.into(),
        value: v.into(),
    };
    let row = |v: Vec<f32>| proto::RowRecord {
        float_data: v,
        binary_data: vec![],
    };
    let tagged = |kind: u8, bytes: Vec<u8>| {
        let mut out = vec![kind];
        out.extend(bytes);
        out
    };
    vec![
        tagged(
            0,
            proto::CollectionSchema {
                status: None,
                collection_name: "g".into(),
                dimension: 4,
                index_file_size: 1,
                metric_type: 1,
                extra_params: vec![],
            }
            .encode_to_vec(),
        ),
        tagged(1, name().encode_to_vec()),
        tagged(
            2,
            proto::IndexParam {
                status: None,
                collection_name: "f".into(),
                index_type: 2,
                extra_params: vec![kv("params", r#"{"nlist": 4}"#)],
            }
            .encode_to_vec(),
        ),
        tagged(
            3,
            proto::PartitionParam {
                collection_name: "f".into(),
                tag: "p".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            4,
            proto::InsertParam {
                collection_name: "f".into(),
                row_record_array: vec![row(vec![1.0, 2.0, 3.0, 4.0]), row(vec![0.5; 4])],
                row_id_array: vec![],
                partition_tag: String::new(),
                extra_params: vec![],
            }
            .encode_to_vec(),
        ),
        tagged(
            5,
            proto::VectorsIdentity {
                collection_name: "f".into(),
                partition_tag: String::new(),
                id_array: vec![1, 2, 3],
            }
            .encode_to_vec(),
        ),
        tagged(
            6,
            proto::GetVectorIDsParam {
                collection_name: "f".into(),
                segment_name: "x".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            7,
            proto::SearchParam {
                collection_name: "f".into(),
                partition_tag_array: vec!["p".into()],
                query_record_array: vec![row(vec![1.0, 2.0, 3.0, 4.0])],
                topk: 3,
                extra_params: vec![kv("params", r#"{"nprobe": 2}"#)],
            }
            .encode_to_vec(),
        ),
        tagged(
            8,
            proto::SearchByIdParam {
                collection_name: "f".into(),
                partition_tag_array: vec![],
                id_array: vec![1],
                topk: 3,
                extra_params: vec![kv("params", "{}")],
            }
            .encode_to_vec(),
        ),
        tagged(
            9,
            proto::SearchInFilesParam {
                file_id_array: vec!["1".into()],
                search_param: Some(proto::SearchParam {
                    collection_name: "f".into(),
                    partition_tag_array: vec![],
                    query_record_array: vec![row(vec![0.0; 4])],
                    topk: 1,
                    extra_params: vec![],
                }),
            }
            .encode_to_vec(),
        ),
        tagged(
            10,
            proto::Command {
                cmd: "get_config cache.cache_size".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            11,
            proto::DeleteByIdParam {
                collection_name: "f".into(),
                partition_tag: String::new(),
                id_array: vec![1],
            }
            .encode_to_vec(),
        ),
        tagged(
            12,
            proto::PreloadCollectionParam {
                collection_name: "f".into(),
                partition_tag_array: vec![],
            }
            .encode_to_vec(),
        ),
        tagged(
            13,
            proto::ReLoadSegmentsParam {
                collection_name: "f".into(),
                segment_id_array: vec!["1".into()],
            }
            .encode_to_vec(),
        ),
        tagged(
            14,
            proto::FlushParam {
                collection_name_array: vec!["f".into()],
            }
            .encode_to_vec(),
        ),
        tagged(15, name().encode_to_vec()),
        tagged(16, name().encode_to_vec()),
    ]
}

/// Decodes `bytes` as the request type its first byte names and calls the service with it. Calls that
/// take a collection name go through every RPC of that shape.
/// Calls made, and calls answered SUCCESS, by the gRPC target.
static CALLS: AtomicU64 = AtomicU64::new(0);
static SUCCEEDED: AtomicU64 = AtomicU64::new(0);

async fn call(service: &NodeService, bytes: &[u8]) {
    let Some((kind, body)) = bytes.split_first() else {
        return;
    };
    macro_rules! each {
        ($t:ty, $($rpc:ident),+) => {
            if let Ok(m) = <$t>::decode(body) {
                $(
                    let reply = service.$rpc(Request::new(m.clone())).await;
                    CALLS.fetch_add(1, Ordering::Relaxed);
                    // How deep inputs get: answered SUCCESS, not refused by the first check.
                    if reply.is_ok_and(|r| format!("{:?}", r.into_inner()).contains("error_code: Success")) {
                        SUCCEEDED.fetch_add(1, Ordering::Relaxed);
                    }
                )+
            }
        };
    }
    match kind % 17 {
        0 => each!(proto::CollectionSchema, create_collection),
        1 | 15 | 16 => each!(
            proto::CollectionName,
            has_collection,
            describe_collection,
            count_collection,
            show_collection_info,
            describe_index,
            compact,
            drop_index,
            drop_collection
        ),
        2 => each!(proto::IndexParam, create_index),
        3 => each!(
            proto::PartitionParam,
            create_partition,
            has_partition,
            drop_partition
        ),
        4 => each!(proto::InsertParam, insert),
        5 => each!(proto::VectorsIdentity, get_vectors_by_id),
        6 => each!(proto::GetVectorIDsParam, get_vector_i_ds),
        7 => each!(proto::SearchParam, search),
        8 => each!(proto::SearchByIdParam, search_by_id),
        9 => each!(proto::SearchInFilesParam, search_in_files),
        10 => each!(proto::Command, cmd),
        11 => each!(proto::DeleteByIdParam, delete_by_id),
        12 => each!(
            proto::PreloadCollectionParam,
            preload_collection,
            release_collection
        ),
        13 => each!(proto::ReLoadSegmentsParam, reload_segments),
        _ => each!(proto::FlushParam, flush),
    }
}

#[test]
fn grpc_requests() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = rt.block_on(async {
        let engine = open_engine(dir.path().to_path_buf()).await;
        NodeService::new(
            engine.clone(),
            ServerConfig::with_defaults(engine),
            "1.1.1".into(),
        )
    });
    let fixture = async |service: &NodeService| {
        // Mutated requests drop and change things: the fixture comes back before each input.
        let _ = service
            .create_collection(Request::new(proto::CollectionSchema {
                status: None,
                collection_name: "f".into(),
                dimension: 4,
                index_file_size: 1,
                metric_type: 1,
                extra_params: vec![],
            }))
            .await;
        let _ = service
            .create_partition(Request::new(proto::PartitionParam {
                collection_name: "f".into(),
                tag: "p".into(),
            }))
            .await;
    };
    run("grpc_requests", mutated_by(grpc_seeds(), 4), |bytes| {
        rt.block_on(async {
            fixture(&service).await;
            tokio::time::timeout(Duration::from_secs(20), call(&service, bytes))
                .await
                .unwrap_or_else(|_| panic!("a request hung: {bytes:?}"));
        })
    });
    eprintln!(
        "fuzz target grpc_requests: {} service calls, {} answered SUCCESS",
        CALLS.load(Ordering::Relaxed),
        SUCCEEDED.load(Ordering::Relaxed)
    );
}
