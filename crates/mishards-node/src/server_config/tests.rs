use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use mishards_proto::ErrorCode;
use mishards_proto::error::MilvusError;

use super::*;

/// Records what `set_config` asked the node to change.
#[derive(Default)]
struct Recorded {
    cache_bytes: Mutex<Vec<usize>>,
    flush_every: Mutex<Vec<Option<Duration>>>,
    insert_buffer: Mutex<Vec<u64>>,
}

impl LiveSettings for Recorded {
    fn set_cache_capacity(&self, bytes: usize) {
        self.cache_bytes.lock().unwrap().push(bytes);
    }
    fn set_auto_flush_interval(&self, every: Option<Duration>) {
        self.flush_every.lock().unwrap().push(every);
    }
    fn set_insert_buffer_size(&self, bytes: u64) {
        self.insert_buffer.lock().unwrap().push(bytes);
    }
}

fn config() -> (ServerConfig, Arc<Recorded>) {
    let live = Arc::new(Recorded::default());
    (ServerConfig::with_defaults(live.clone()), live)
}

fn code(result: Result<String, ConfigError>) -> ErrorCode {
    match result {
        Ok(answer) => panic!("answered {answer:?} where an error was expected"),
        Err(e) => e.code(),
    }
}

#[test]
fn the_table_covers_milvus_1_1_sections_once_each() {
    let mut seen = std::collections::HashSet::new();
    for key in KEYS {
        assert!(
            seen.insert((key.section, key.name)),
            "{}.{} twice",
            key.section,
            key.name
        );
    }
    let count = |section: &str| KEYS.iter().filter(|k| k.section == section).count();
    for (section, keys) in [
        ("cluster", 2),
        ("general", 6),
        ("network", 4),
        ("storage", 3),
        ("wal", 4),
        ("cache", 5),
        ("gpu", 7),
        ("fpga", 4),
        ("logs", 7),
        ("metric", 5),
        ("tracing_config", 1),
        ("engine_config", 5),
        ("db_config", 2),
    ] {
        assert_eq!(count(section), keys, "keys of {section}");
    }
    assert_eq!(KEYS.len(), 55);
}

#[test]
fn every_key_reads_back_its_default_and_every_default_is_of_its_kind() {
    let (config, _) = config();
    for key in KEYS {
        let cmd = format!("get_config {}.{}", key.section, key.name);
        assert_eq!(config.answer(&cmd).unwrap(), key.default, "{cmd}");
        check_form(key, key.default)
            .unwrap_or_else(|e| panic!("default of {}.{}: {e}", key.section, key.name));
    }
}

#[test]
fn get_config_star_answers_the_whole_tree_as_json() {
    let (config, _) = config();
    let tree: serde_json::Value =
        serde_json::from_str(&config.answer("get_config *").unwrap()).unwrap();
    assert_eq!(tree.as_object().unwrap().len(), 13);
    assert_eq!(tree["cache"]["cache_size"], "4GB");
    assert_eq!(tree["network"]["bind.port"], "19530");
    let keys: usize = tree
        .as_object()
        .unwrap()
        .values()
        .map(|s| s.as_object().unwrap().len())
        .sum();
    assert_eq!(keys, KEYS.len());
}

#[test]
fn values_changeable_in_service_read_back_as_written() {
    let (config, live) = config();
    for (key, value) in [
        ("cache.cache_size", "64MB"),
        ("cache.insert_buffer_size", "1m"),
        ("cache.cpu_cache_threshold", "0.5"),
        ("cache.cache_insert_data", "yES"),
        ("cache.preload_collection", "a,b_2"),
        ("engine_config.use_blas_threshold", "2000"),
        ("engine_config.simd_type", "avx2"),
        ("engine_config.search_combine_nq", "128"),
        ("storage.auto_flush_interval", "5"),
    ] {
        assert_eq!(
            config.answer(&format!("set_config {key} {value}")).unwrap(),
            ""
        );
        assert_eq!(
            config.answer(&format!("get_config {key}")).unwrap(),
            value,
            "{key}"
        );
    }
    assert_eq!(*live.cache_bytes.lock().unwrap(), vec![64 << 20]);
    assert_eq!(*live.insert_buffer.lock().unwrap(), vec![1 << 20]);
    assert_eq!(
        *live.flush_every.lock().unwrap(),
        vec![Some(Duration::from_secs(5))]
    );
    // 0 stops the regular flush, as in Milvus.
    config.set("storage", "auto_flush_interval", "0").unwrap();
    assert_eq!(live.flush_every.lock().unwrap().last(), Some(&None));
    // A preload of everything is kept as Milvus keeps it.
    config.set("cache", "preload_collection", "*").unwrap();
    assert_eq!(config.get("cache", "preload_collection").unwrap(), "'*'");
}

#[test]
fn unknown_misspelt_or_padded_keys_and_malformed_commands_are_refused() {
    let (config, _) = config();
    for cmd in [
        "get_config no_such.key",
        "get_config cache.no_such_key",
        "get_config Cache.cache_size",
        "get_config cache.Cache_size",
        "get_config cache_config.cpu_cache_capacity",
        "get_config cache.",
        "get_config .cache_size",
        "get_config engine.build_index_threshold",
        "set_config no_such.key 1",
        "set_config cache.cachesize 4GB",
    ] {
        let e = config.answer(cmd).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnexpectedError, "{cmd}");
        assert!(
            e.to_string().starts_with("Config node invalid: "),
            "{cmd}: {e}"
        );
    }
    for cmd in [
        "get_config",
        "get_config ",
        "get_config cache_size",
        "get_config cache.cache_size ",
        "get_config  cache.cache_size",
        " get_config cache.cache_size",
        "get_config\tcache.cache_size",
        "get_config cache.cache_size extra",
        "get_configuration cache.cache_size",
        "set_config cache.cache_size",
        "set_config cache.cache_size 4GB ",
        "set_config cache.cache_size  4GB",
        "set_config cache.cache_size 4 GB",
        "set_config cache_size 4GB",
        "",
    ] {
        let e = config.answer(cmd).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnexpectedError, "{cmd:?}");
        assert!(
            e.to_string().starts_with("Invalid command: "),
            "{cmd:?}: {e}"
        );
    }
    // Keys with a dot in the child name split at the first dot.
    assert_eq!(
        config.answer("get_config network.bind.port").unwrap(),
        "19530"
    );
}

#[test]
fn wrong_types_and_out_of_range_values_are_refused_and_change_nothing() {
    let (config, live) = config();
    for (key, value) in [
        ("cache.cache_size", "abc"),
        ("cache.cache_size", "-1"),
        ("cache.cache_size", "0"),
        ("cache.cache_size", "1.5GB"),
        ("cache.cache_size", "4TB"),
        ("cache.cache_size", "GB"),
        ("cache.cache_size", "99999999999999999999"),
        ("cache.cache_size", "9223372036854775807g"),
        ("cache.cache_size", "1\n"),
        ("cache.cpu_cache_threshold", "1.0"),
        ("cache.cpu_cache_threshold", "0"),
        ("cache.cpu_cache_threshold", "NaN"),
        ("cache.cache_insert_data", "maybe"),
        ("cache.preload_collection", "a,a"),
        ("cache.preload_collection", "1bad"),
        ("storage.auto_flush_interval", "-1"),
        ("storage.auto_flush_interval", "1.5"),
        ("storage.auto_flush_interval", "1+2"),
        ("storage.auto_flush_interval", "invalid"),
        ("storage.auto_flush_interval", "99999999999999999999"),
        ("engine_config.simd_type", "AVX2"),
        ("engine_config.use_blas_threshold", "1000.0"),
        ("engine_config.omp_thread_num", "100000"),
    ] {
        let e = config.set(
            key.split_once('.').unwrap().0,
            key.split_once('.').unwrap().1,
            value,
        );
        let e = e.unwrap_err();
        assert_eq!(e.code(), ErrorCode::IllegalArgument, "{key} {value:?}");
        assert!(e.to_string().contains("Possible reason"), "{e}");
    }
    assert!(live.cache_bytes.lock().unwrap().is_empty());
    assert!(live.flush_every.lock().unwrap().is_empty());
    assert_eq!(config.get("cache", "cache_size").unwrap(), "4GB");
    assert_eq!(config.get("storage", "auto_flush_interval").unwrap(), "1");
}

#[test]
fn a_cache_beyond_the_machines_memory_is_refused() {
    let Some(memory) = memory_limit() else {
        return;
    };
    let (config, live) = config();
    let too_big = format!("{}", memory);
    assert_eq!(
        code(config.answer(&format!("set_config cache.cache_size {too_big}"))),
        ErrorCode::IllegalArgument
    );
    assert!(live.cache_bytes.lock().unwrap().is_empty());
}

#[test]
fn keys_read_at_start_are_refused_after_their_value_is_checked() {
    let (config, _) = config();
    for (key, value) in [
        ("storage.path", "/var/lib/milvus2"),
        ("network.bind.port", "19531"),
        ("network.bind.address", "0.0.0.0"),
        ("wal.enable", "false"),
        ("wal.path", "/var/lib/milvus/wal"),
        ("wal.buffer_size", "128MB"),
        ("cluster.role", "ro"),
        (
            "general.meta_uri",
            "mysql://root:123456@127.0.0.1:3306/milvus",
        ),
        ("general.timezone", "UTC-5:30"),
        ("logs.level", "info"),
        ("logs.max_log_file_size", "2GB"),
        ("metric.port", "9092"),
        ("db_config.archive_days_threshold", "3"),
    ] {
        let e = config
            .answer(&format!("set_config {key} {value}"))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::IllegalArgument, "{key}");
        assert!(e.to_string().contains("when the node starts"), "{key}: {e}");
    }
    assert_eq!(config.get("storage", "path").unwrap(), "/var/lib/milvus");
    // A bad value for such a key is refused for what is wrong with it.
    for (key, value) in [
        ("network.bind.port", "1024"),
        ("network.bind.port", "65535"),
        ("network.bind.port", "19530 "),
        ("network.bind.address", "300.1.1.1"),
        ("general.timezone", "utc+8"),
        ("general.timezone", "UTC++8"),
        ("general.timezone", "GMT+8"),
        ("general.meta_uri", "postgres://a:b@c:1/d"),
        ("storage.path", "relative/path"),
        ("storage.path", "/a//b"),
        ("logs.max_log_file_size", "256MB"),
        ("logs.log_rotate_num", "1025"),
        ("wal.enable", "-1"),
    ] {
        let Some((section, name)) = key.split_once('.') else {
            unreachable!()
        };
        let e = config.set(section, name, value).unwrap_err();
        assert_eq!(e.code(), ErrorCode::IllegalArgument, "{key} {value:?}");
        assert!(
            !e.to_string().contains("when the node starts"),
            "{key}: {e}"
        );
    }
}

#[test]
fn keys_milvus_1_1_never_sets_are_refused_as_it_refuses_them() {
    let (config, _) = config();
    for cmd in [
        "set_config gpu.enable true",
        "set_config gpu.gpu_search_threshold 2000",
        "set_config gpu.search_devices gpu0",
        "set_config fpga.enable false",
        "set_config network.http.enable false",
        "set_config storage.file_cleanup_timeout 20",
        "set_config metric.cluster_label x",
    ] {
        let e = config.answer(cmd).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnexpectedError, "{cmd}");
        assert!(e.to_string().contains("Possible reason"), "{cmd}: {e}");
    }
    assert_eq!(
        code(config.answer("set_config tracing_config.json_config_path /tmp/x.json")),
        ErrorCode::IllegalArgument
    );
    assert_eq!(config.get("gpu", "enable").unwrap(), "false");
}

#[test]
fn odd_input_never_panics() {
    let (config, _) = config();
    let long = "9".repeat(100_000);
    for cmd in [
        "get_config 中文.キー",
        "set_config cache.cache_size 中文",
        "set_config cache.cache_size é",
        "set_config cache.cache_size b",
        "set_config cache.cache_size Ωg",
        "set_config general.timezone UTC+é",
        "set_config storage.path /é",
        "get_config ..",
        "set_config . .",
        "\u{0}",
        &format!("set_config cache.cache_size {long}"),
        &format!("get_config cache.{long}"),
    ] {
        if let Err(e) = config.answer(cmd) {
            assert!(
                e.to_string().chars().count() < 600,
                "{cmd:.40}: reason too long"
            );
        }
    }
}

#[test]
fn sizes_parse_as_milvus_parses_them() {
    for (text, bytes) in [
        ("1024", Some(1024)),
        ("", Some(0)),
        ("4GB", Some(4 << 30)),
        ("4gb", Some(4 << 30)),
        ("4G", Some(4 << 30)),
        ("512MB", Some(512 << 20)),
        ("64m", Some(64 << 20)),
        ("2k", Some(2048)),
        ("100b", Some(100)),
        ("100B", Some(100)),
        ("4TB", None),
        ("-1", None),
        ("1.5GB", None),
        ("GB", None),
        ("b", None),
        ("9223372036854775807g", None),
    ] {
        assert_eq!(parse_bytes(text), bytes, "{text:?}");
    }
    assert_eq!(size_text(4 << 30), "4GB");
    assert_eq!(size_text(96 << 20), "96MB");
    assert_eq!(size_text(1000), "1000");
}

#[test]
fn the_forms_follow_milvus_rules() {
    for tz in ["UTC+8", "UTC-5", "UTC+08:30", "UTC-5:30", "UTC+23", "UTC+0"] {
        assert!(is_timezone(tz), "{tz}");
    }
    for tz in [
        "UTC", "UTC+24", "UTC+8:60", "UTC+8:5", "utc+8", "UTC+123", "UTC+",
    ] {
        assert!(!is_timezone(tz), "{tz}");
    }
    for path in ["/var/lib/milvus", "/a", "/a-b/c_d/", "/a-/b"] {
        assert!(is_storage_path(path), "{path}");
    }
    for path in ["/", "a/b", "/a//b", "/a--/b", "/-a", "/a@b", "/a.b", ""] {
        assert!(!is_storage_path(path), "{path}");
    }
    for uri in [
        "sqlite://:@:/",
        "mysql://root:123456@127.0.0.1:3306/milvus",
        "mysql+pymysql://u:p@db:3306/m",
    ] {
        assert!(is_meta_uri(uri), "{uri}");
    }
    for uri in [
        "sqlite://",
        "postgres://a:b@c:1/d",
        "mysql://root@h:1/d",
        "mysql://a:b@h:x/d",
    ] {
        assert!(!is_meta_uri(uri), "{uri}");
    }
    assert_eq!(
        mishards_meta::mask_password("mysql://root:secret@db:3306/milvus"),
        "mysql://root:***@db:3306/milvus"
    );
    assert_eq!(
        mishards_meta::mask_password("sqlite://:@:/"),
        "sqlite://:@:/"
    );
    let zone = |text: &str| mishards_config::parse_timezone(text).expect("a zone");
    assert_eq!(timezone_text(&zone("UTC+8")).as_deref(), Some("UTC+8"));
    assert_eq!(timezone_text(&zone("-05:30")).as_deref(), Some("UTC-5:30"));
    assert_eq!(
        timezone_text(&zone("Asia/Shanghai")).as_deref(),
        Some("Asia/Shanghai")
    );
}
