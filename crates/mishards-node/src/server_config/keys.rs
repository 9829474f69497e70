//! Every key of Milvus 1.1's `server_config.yaml` tree that `Cmd("get_config …")` answers, with its type,
//! range, documented default and whether `Cmd("set_config …")` may change it while the node runs.
//!
//! The facts are Milvus 1.1's (`core/src/config/Config.cpp`, `core/conf/server_config.template` and
//! `core/src/utils/ValidationUtil.cpp` of the 1.x branch): key names, defaults (the template's, where it
//! and the code's fallback differ), ranges and which sections change in service (`cache`,
//! `engine_config`; `gpu` only in a GPU build). `engine_config` and `db_config` are sections the template
//! no longer shows but a 1.1 server still answers.

/// What a value must look like (Milvus 1.1's check for that key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `true/false/on/off/yes/no/1/0` in any case, or empty; read back as written.
    Bool,
    /// Decimal digits only (no sign, no point), within `min..=max`.
    Natural { min: i64, max: i64 },
    /// A port: digits, strictly between 1024 and 65535.
    Port,
    /// Bytes with an optional `b/k/m/g` unit (`4GB`, `512m`, `1073741824`), within `min..=max` bytes.
    Size { min: i64, max: i64 },
    /// A decimal number strictly between 0 and 1.
    Fraction,
    /// A dotted IPv4 address.
    Ipv4,
    /// `UTC+8`, `UTC-5:30`, `UTC+08:30`.
    Timezone,
    /// `dialect://user:password@host:port/database`, dialect `mysql` or `sqlite`.
    MetaUri,
    /// An absolute path of word characters, single dashes and slashes (Milvus's storage path rule).
    Path,
    /// One of these words exactly.
    OneOf(&'static [&'static str]),
    /// Any text.
    Text,
    /// Empty, `*`, or comma-separated collection names without duplicates.
    CollectionList,
    /// Comma-separated devices `<prefix><n>`, e.g. `gpu0,gpu1`.
    Devices(&'static str),
}

/// Whether and how `set_config` changes the key on a running node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applies {
    /// Changed at once and acted on by this node.
    Live,
    /// Changeable while Milvus 1.1 runs; validated and kept so it reads back (this node has no use for it).
    Stored,
    /// Read at start only: refused, since the node cannot make a new value take effect.
    AtStart,
    /// Milvus 1.1 offers no `set_config` for it (or not in a CPU build); refused as an unknown node.
    Never(&'static str),
    /// Milvus 1.1 refuses every value as an invalid argument.
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub applies: Applies,
}

const fn key(
    section: &'static str,
    name: &'static str,
    kind: Kind,
    default: &'static str,
    applies: Applies,
) -> Key {
    Key {
        section,
        name,
        kind,
        default,
        applies,
    }
}

const MB: i64 = 1 << 20;
const GB: i64 = 1 << 30;
const ANY_NATURAL: Kind = Kind::Natural {
    min: 0,
    max: i64::MAX,
};
const CPU_ONLY: Applies =
    Applies::Never("this node runs in CPU mode (`Cmd(\"mode\")` answers CPU)");
const NO_SETTER: Applies = Applies::Never("Milvus 1.1's set_config does not change this key");

use Applies::{AtStart, Live, Stored, Unsupported};
use Kind::*;

pub const KEYS: &[Key] = &[
    // cluster
    key("cluster", "enable", Bool, "false", AtStart),
    key("cluster", "role", OneOf(&["rw", "ro"]), "rw", AtStart),
    // general
    key("general", "timezone", Timezone, "UTC+8", AtStart),
    key("general", "meta_uri", MetaUri, "sqlite://:@:/", AtStart),
    key("general", "meta_ssl_ca", Text, "", AtStart),
    key("general", "meta_ssl_key", Text, "", AtStart),
    key("general", "meta_ssl_cert", Text, "", AtStart),
    key("general", "search_raw_enable", Bool, "true", AtStart),
    // network
    key("network", "bind.address", Ipv4, "0.0.0.0", AtStart),
    key("network", "bind.port", Port, "19530", AtStart),
    key("network", "http.enable", Bool, "true", NO_SETTER),
    key("network", "http.port", Port, "19121", AtStart),
    // storage (file_cleanup_timeout: how long a replaced file stays for readers still searching it)
    key("storage", "path", Path, "/var/lib/milvus", AtStart),
    key("storage", "auto_flush_interval", ANY_NATURAL, "1", Live),
    key(
        "storage",
        "file_cleanup_timeout",
        Natural { min: 0, max: 3600 },
        "10",
        NO_SETTER,
    ),
    // wal (a buffer_size out of [64MB, 4096MB] is taken as the nearest bound, not refused)
    key("wal", "enable", Bool, "true", AtStart),
    key("wal", "recovery_error_ignore", Bool, "false", AtStart),
    key(
        "wal",
        "buffer_size",
        Size {
            min: 0,
            max: i64::MAX,
        },
        "256MB",
        AtStart,
    ),
    key("wal", "path", Path, "/var/lib/milvus/wal", AtStart),
    // cache (the sum of cache_size and insert_buffer_size must stay below the machine's memory)
    key(
        "cache",
        "cache_size",
        Size {
            min: 1,
            max: i64::MAX,
        },
        "4GB",
        Live,
    ),
    key(
        "cache",
        "insert_buffer_size",
        Size {
            min: 1,
            max: i64::MAX,
        },
        "1GB",
        Live,
    ),
    key("cache", "preload_collection", CollectionList, "", Stored),
    key("cache", "cpu_cache_threshold", Fraction, "0.7", Stored),
    key("cache", "cache_insert_data", Bool, "false", Stored),
    // gpu
    key("gpu", "enable", Bool, "false", CPU_ONLY),
    key("gpu", "cache.enable", Bool, "false", CPU_ONLY),
    key(
        "gpu",
        "cache_size",
        Size {
            min: 0,
            max: i64::MAX,
        },
        "1GB",
        CPU_ONLY,
    ),
    key("gpu", "cache_threshold", Fraction, "0.7", CPU_ONLY),
    key("gpu", "gpu_search_threshold", ANY_NATURAL, "1000", CPU_ONLY),
    key("gpu", "search_devices", Devices("gpu"), "gpu0", CPU_ONLY),
    key(
        "gpu",
        "build_index_devices",
        Devices("gpu"),
        "gpu0",
        CPU_ONLY,
    ),
    // fpga
    key("fpga", "enable", Bool, "false", CPU_ONLY),
    key("fpga", "search_devices", Devices("fpga"), "fpga0", CPU_ONLY),
    key(
        "fpga",
        "cache_size",
        Size {
            min: 0,
            max: i64::MAX,
        },
        "1GB",
        CPU_ONLY,
    ),
    key("fpga", "cache_threshold", Fraction, "0.7", CPU_ONLY),
    // logs
    key(
        "logs",
        "level",
        OneOf(&["debug", "info", "warning", "error", "fatal"]),
        "debug",
        AtStart,
    ),
    key("logs", "trace.enable", Bool, "true", AtStart),
    key("logs", "path", Path, "/var/lib/milvus/logs", AtStart),
    key(
        "logs",
        "max_log_file_size",
        Size {
            min: 512 * MB,
            max: 4 * GB,
        },
        "1024MB",
        AtStart,
    ),
    key(
        "logs",
        "log_rotate_num",
        Natural { min: 0, max: 1024 },
        "0",
        AtStart,
    ),
    key("logs", "log_to_stdout", Bool, "false", AtStart),
    key("logs", "log_to_file", Bool, "true", AtStart),
    // metric
    key("metric", "enable", Bool, "false", AtStart),
    key("metric", "address", Ipv4, "127.0.0.1", AtStart),
    key("metric", "port", Port, "9091", AtStart),
    key("metric", "cluster_label", Text, "milvus_cluster", NO_SETTER),
    key("metric", "instance_label", Text, "", NO_SETTER),
    // tracing_config
    key("tracing_config", "json_config_path", Text, "", Unsupported),
    // engine_config (omp_thread_num is further bounded by the machine's threads)
    key(
        "engine_config",
        "use_blas_threshold",
        ANY_NATURAL,
        "1100",
        Stored,
    ),
    key("engine_config", "omp_thread_num", ANY_NATURAL, "0", Stored),
    key(
        "engine_config",
        "simd_type",
        OneOf(&["avx512", "avx2", "sse", "auto"]),
        "auto",
        Stored,
    ),
    key(
        "engine_config",
        "search_combine_nq",
        ANY_NATURAL,
        "64",
        Stored,
    ),
    key(
        "engine_config",
        "max_partition_num",
        ANY_NATURAL,
        "4096",
        Stored,
    ),
    // db_config
    key(
        "db_config",
        "archive_disk_threshold",
        ANY_NATURAL,
        "0",
        AtStart,
    ),
    key(
        "db_config",
        "archive_days_threshold",
        ANY_NATURAL,
        "0",
        AtStart,
    ),
];

/// The table's index of `section.name`.
pub fn position(section: &str, name: &str) -> Option<usize> {
    KEYS.iter()
        .position(|k| k.section == section && k.name == name)
}
