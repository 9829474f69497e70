//! Milvus 1.1's server config tree behind `Cmd("get_config parent.child")` and
//! `Cmd("set_config parent.child value")`: the key table (`keys.rs`), the values this node runs with, and
//! the command grammar Milvus 1.1 answers (`Config::ProcessConfigCli`):
//!
//! - the command splits on single spaces: `get_config KEY` takes exactly two words, `set_config KEY VALUE`
//!   three (a padded or doubled space makes an empty word, so the command is invalid); otherwise
//!   UNEXPECTED_ERROR "Invalid command: …";
//! - `get_config *` answers every section as one JSON object;
//! - KEY is `parent.child`, split at the first dot (`network.bind.address` is `network` + `bind.address`);
//!   no dot is an invalid command, an unknown pair UNEXPECTED_ERROR "Config node invalid: parent.child";
//! - a value of the wrong form or out of range is ILLEGAL_ARGUMENT with the reason; a valid one reads back
//!   exactly as written (`yES`, `8GB`).
//!
//! Milvus 1.1 also accepts keys read only at start and rewrites its yaml for the next start. This node has
//! no such file, so a value there could never take effect: those keys are refused (ILLEGAL_ARGUMENT, as
//! 1.1 refuses `tracing_config.json_config_path`) rather than kept as if they had.

mod keys;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mishards_config::{NodeConfig, Role};
use mishards_proto::ErrorCode;
use mishards_proto::error::MilvusError;

pub use keys::{Applies, KEYS, Key, Kind};

use super::engine::Engine;

/// The longest piece of a client's command or value echoed back in a reason.
const ECHO_CHARS: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Invalid command: {0}")]
    InvalidCommand(String),
    #[error("Config node invalid: {0}")]
    UnknownKey(String),
    #[error("Config node invalid: {key}. Possible reason: {why}.")]
    NotSettable { key: String, why: &'static str },
    #[error("{0}")]
    InvalidValue(String),
}

impl MilvusError for ConfigError {
    fn code(&self) -> ErrorCode {
        match self {
            ConfigError::InvalidValue(_) => ErrorCode::IllegalArgument,
            _ => ErrorCode::UnexpectedError,
        }
    }
}

/// What a `set_config` changes on the running node.
pub trait LiveSettings: Send + Sync {
    fn set_cache_capacity(&self, bytes: usize);
    /// `None`: no regular flush (Milvus's `auto_flush_interval` 0).
    fn set_auto_flush_interval(&self, every: Option<Duration>);
    fn set_insert_buffer_size(&self, bytes: u64);
}

impl LiveSettings for Engine {
    fn set_cache_capacity(&self, bytes: usize) {
        self.cache().set_capacity(bytes);
    }

    fn set_auto_flush_interval(&self, every: Option<Duration>) {
        self.set_auto_flush(every);
    }

    fn set_insert_buffer_size(&self, bytes: u64) {
        Engine::set_insert_buffer_size(self, bytes);
    }
}

/// The current value of every key in `KEYS`, in table order.
pub struct ServerConfig {
    values: Mutex<Vec<String>>,
    live: Arc<dyn LiveSettings>,
}

impl ServerConfig {
    /// Every key at its Milvus 1.1 default.
    pub fn with_defaults(live: Arc<dyn LiveSettings>) -> ServerConfig {
        ServerConfig {
            values: Mutex::new(KEYS.iter().map(|k| k.default.to_string()).collect()),
            live,
        }
    }

    /// The defaults, with what the node's own settings already determine; `port` is the bound port.
    pub fn for_node(config: &NodeConfig, port: u16, live: Arc<dyn LiveSettings>) -> ServerConfig {
        let this = ServerConfig::with_defaults(live);
        {
            let mut values = this.lock();
            for (section, name, value) in node_values(config, port) {
                if let Some(i) = keys::position(section, name) {
                    values[i] = value;
                }
            }
        }
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // Plain strings: a panic elsewhere leaves nothing half-written worth refusing for.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a `get_config …` / `set_config …` command as Milvus 1.1 does.
    pub fn answer(&self, cmd: &str) -> Result<String, ConfigError> {
        let words: Vec<&str> = cmd.split(' ').collect();
        let invalid = || ConfigError::InvalidCommand(echo(cmd));
        match words.as_slice() {
            ["get_config", "*"] => Ok(self.all_json()),
            ["get_config", key] => {
                let (section, name) = split_key(key).ok_or_else(invalid)?;
                self.get(section, name)
            }
            ["set_config", key, value] => {
                let (section, name) = split_key(key).ok_or_else(invalid)?;
                self.set(section, name, value).map(|()| String::new())
            }
            _ => Err(invalid()),
        }
    }

    pub fn get(&self, section: &str, name: &str) -> Result<String, ConfigError> {
        let i = keys::position(section, name)
            .ok_or_else(|| ConfigError::UnknownKey(echo(&format!("{section}.{name}"))))?;
        Ok(self.lock()[i].clone())
    }

    pub fn set(&self, section: &str, name: &str, value: &str) -> Result<(), ConfigError> {
        let full = format!("{section}.{name}");
        let i =
            keys::position(section, name).ok_or_else(|| ConfigError::UnknownKey(echo(&full)))?;
        let key = &KEYS[i];
        match key.applies {
            Applies::Never(why) => {
                return Err(ConfigError::NotSettable { key: full, why });
            }
            Applies::Unsupported => {
                return Err(ConfigError::InvalidValue(format!(
                    "Invalid {section} config: {}. Possible reason: {full} is not supported to configure.",
                    echo(value)
                )));
            }
            Applies::Live | Applies::Stored | Applies::AtStart => {}
        }
        let mut values = self.lock();
        let amount = check(key, value, &values)?;
        if key.applies == Applies::AtStart {
            return Err(ConfigError::InvalidValue(format!(
                "Invalid {full}: {}. Possible reason: {full} is read only when the node starts; \
                 change the node's settings and restart it.",
                echo(value)
            )));
        }
        match (section, name) {
            ("cache", "cache_size") => self
                .live
                .set_cache_capacity(usize::try_from(amount).unwrap_or(usize::MAX)),
            ("cache", "insert_buffer_size") => self
                .live
                .set_insert_buffer_size(u64::try_from(amount).unwrap_or(u64::MAX)),
            ("storage", "auto_flush_interval") => self.live.set_auto_flush_interval(
                (amount > 0).then(|| Duration::from_secs(amount.unsigned_abs())),
            ),
            _ => {}
        }
        // Milvus 1.1 keeps a preload of every collection as the yaml literal `'*'`.
        values[i] = match (section, name, value) {
            ("cache", "preload_collection", "*") => "'*'".to_string(),
            _ => value.to_string(),
        };
        tracing::info!(key = %full, value = %values[i], "set_config");
        Ok(())
    }

    /// Every section and key with its value, as `get_config *` answers.
    pub fn all_json(&self) -> String {
        let values = self.lock();
        let mut tree = serde_json::Map::new();
        for (key, value) in KEYS.iter().zip(values.iter()) {
            if let serde_json::Value::Object(section) = tree
                .entry(key.section)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
            {
                section.insert(key.name.to_string(), value.clone().into());
            }
        }
        serde_json::Value::Object(tree).to_string()
    }
}

/// `parent.child` split at the first dot; `None` without one.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
}

/// A client's text as echoed in a reason: at most `ECHO_CHARS` characters.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Checks `value` for `key` as Milvus 1.1 does; the amount it stands for (bytes, seconds, count; 0 when
/// it is not a number) so the caller need not parse it again.
fn check(key: &Key, value: &str, values: &[String]) -> Result<i64, ConfigError> {
    let amount = check_form(key, value)?;
    check_against_machine(key, amount, values).map_err(|why| refusal(key, value, why))?;
    Ok(amount)
}

fn refusal(key: &Key, value: &str, why: String) -> ConfigError {
    let full = format!("{}.{}", key.section, key.name);
    ConfigError::InvalidValue(format!(
        "Invalid {full}: {}. Possible reason: {full} {why}.",
        echo(value)
    ))
}

/// The checks of `check` that depend on the value alone.
fn check_form(key: &Key, value: &str) -> Result<i64, ConfigError> {
    let refuse = |why: String| refusal(key, value, why);
    let in_range = |n: i64, min: i64, max: i64| {
        if (min..=max).contains(&n) {
            Ok(n)
        } else if max == i64::MAX {
            Err(refuse(format!("is less than {min}")))
        } else {
            Err(refuse(format!("is not in range [{min}, {max}]")))
        }
    };
    let amount = match key.kind {
        Kind::Bool => {
            let lower = value.to_ascii_lowercase();
            const WORDS: [&str; 9] = ["true", "on", "yes", "1", "false", "off", "no", "0", ""];
            if !WORDS.contains(&lower.as_str()) {
                return Err(refuse("is not a boolean".into()));
            }
            0
        }
        Kind::Natural { min, max } => {
            let n = natural(value).ok_or_else(|| refuse("is not a natural number".into()))?;
            in_range(n, min, max)?
        }
        Kind::Port => {
            let port = natural(value).ok_or_else(|| refuse("is not a number".into()))?;
            if !(1025..=65534).contains(&port) {
                return Err(refuse("is not in range (1024, 65535)".into()));
            }
            port
        }
        Kind::Size { min, max } => {
            let bytes = parse_bytes(value).ok_or_else(|| {
                refuse("is not a size: digits with an optional unit b, k, m or g (e.g. 4GB)".into())
            })?;
            in_range(bytes, min, max)?
        }
        Kind::Fraction => match value.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => 0,
            _ => return Err(refuse("is not in range (0.0, 1.0)".into())),
        },
        Kind::Ipv4 => {
            if value.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(refuse("is not an IPv4 address".into()));
            }
            0
        }
        Kind::Timezone => {
            if !is_timezone(value) {
                return Err(refuse("is not in the form UTC+X, UTC-X or UTC+X:MM".into()));
            }
            0
        }
        Kind::MetaUri => {
            if !is_meta_uri(value) {
                return Err(refuse(
                    "is not like sqlite://:@:/ or mysql://root:123456@127.0.0.1:3306/milvus".into(),
                ));
            }
            0
        }
        Kind::Path => {
            if !is_storage_path(value) {
                return Err(refuse(
                    "is not an absolute path of letters, digits, '_', single '-' and '/'".into(),
                ));
            }
            0
        }
        Kind::OneOf(words) => {
            if !words.contains(&value) {
                return Err(refuse(format!("is not one of {}", words.join(", "))));
            }
            0
        }
        Kind::Text => 0,
        Kind::CollectionList => {
            check_collection_list(value).map_err(refuse)?;
            0
        }
        Kind::Devices(prefix) => {
            check_devices(value, prefix).map_err(refuse)?;
            0
        }
    };
    Ok(amount)
}

/// Milvus 1.1's limits that depend on the machine: the CPU cache and the insert buffer together below
/// its memory, `omp_thread_num` at most its threads.
fn check_against_machine(key: &Key, amount: i64, values: &[String]) -> Result<(), String> {
    let other_size = |name: &str| {
        keys::position("cache", name)
            .and_then(|i| parse_bytes(&values[i]))
            .unwrap_or(0)
    };
    match (key.section, key.name) {
        ("cache", "cache_size") | ("cache", "insert_buffer_size") => {
            let Some(memory) = memory_limit() else {
                return Ok(());
            };
            if amount >= memory {
                return Err(format!("exceeds system memory ({} MB)", memory >> 20));
            }
            let other = other_size(if key.name == "cache_size" {
                "insert_buffer_size"
            } else {
                "cache_size"
            });
            if amount.saturating_add(other) >= memory {
                return Err(format!(
                    "with {} the sum of cache.cache_size and cache.insert_buffer_size exceeds system \
                     memory ({} MB)",
                    if key.name == "cache_size" {
                        "cache.insert_buffer_size"
                    } else {
                        "cache.cache_size"
                    },
                    memory >> 20
                ));
            }
            Ok(())
        }
        ("engine_config", "omp_thread_num") => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            if amount > threads as i64 {
                return Err(format!("exceeds system cpu cores ({threads})"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Digits only, as a non-negative `i64`.
fn natural(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Milvus 1.1's `parse_bytes`: digits are bytes; a `b/k/m/g` unit (any case, optionally followed by `b`)
/// multiplies; empty is 0. `None` for anything else or a result past `i64`.
pub fn parse_bytes(text: &str) -> Option<i64> {
    if text.is_empty() {
        return Some(0);
    }
    if let Some(n) = natural(text) {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    let mut rest = lower.as_str();
    // `4gb`: the trailing `b` after a unit letter is only the word "bytes".
    if rest.len() >= 2 && rest.ends_with('b') {
        let before = rest.as_bytes()[rest.len() - 2];
        if before.is_ascii_alphabetic() {
            rest = &rest[..rest.len() - 1];
        }
    }
    let unit: i64 = match rest.as_bytes().last()? {
        b'b' => 1,
        b'k' => 1 << 10,
        b'm' => 1 << 20,
        b'g' => 1 << 30,
        _ => return None,
    };
    natural(&rest[..rest.len() - 1])?.checked_mul(unit)
}

/// The bytes a size key stands for as a short Milvus-style text: `4GB`, `512MB`, or plain bytes.
pub fn size_text(bytes: usize) -> String {
    if bytes > 0 && bytes.is_multiple_of(1 << 30) {
        format!("{}GB", bytes >> 30)
    } else if bytes > 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}MB", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// `UTC` then a sign, an hour 0–23 (one digit, or two up to 23) and optionally `:MM` (00–59).
fn is_timezone(text: &str) -> bool {
    let Some(offset) = text
        .strip_prefix("UTC+")
        .or_else(|| text.strip_prefix("UTC-"))
    else {
        return false;
    };
    let (hours, minutes) = match offset.split_once(':') {
        Some((h, m)) => (h, Some(m)),
        None => (offset, None),
    };
    let hours_ok = match hours.as_bytes() {
        [h] => h.is_ascii_digit(),
        [a, b] => {
            a.is_ascii_digit() && b.is_ascii_digit() && (*a < b'2' || (*a == b'2' && *b <= b'3'))
        }
        _ => false,
    };
    let minutes_ok = match minutes.map(str::as_bytes) {
        None => true,
        Some([a, b]) => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
        Some(_) => false,
    };
    hours_ok && minutes_ok
}

/// `dialect://user:password@host:port/database` with a `mysql` or `sqlite` dialect and a numeric or
/// empty port.
fn is_meta_uri(text: &str) -> bool {
    let Some((dialect, rest)) = text.split_once("://") else {
        return false;
    };
    let dialect = dialect.to_ascii_lowercase();
    if !dialect.contains("mysql") && !dialect.contains("sqlite") {
        return false;
    }
    let Some((user_info, location)) = rest.rsplit_once('@') else {
        return false;
    };
    let Some((host_port, _database)) = location.split_once('/') else {
        return false;
    };
    let Some((_host, port)) = host_port.rsplit_once(':') else {
        return false;
    };
    user_info.contains(':') && (port.is_empty() || natural(port).is_some())
}

/// Milvus 1.1's storage path rule `^/(\w+-?/?)+$`: after the leading `/`, runs of word characters, each
/// optionally followed by one `-` and then one `/`.
fn is_storage_path(text: &str) -> bool {
    #[derive(PartialEq)]
    enum At {
        GroupStart,
        Word,
        Dash,
        Slash,
    }
    let Some(rest) = text.strip_prefix('/') else {
        return false;
    };
    let mut at = At::GroupStart;
    for c in rest.chars() {
        let word = c.is_ascii_alphanumeric() || c == '_';
        at = match (at, c) {
            (_, _) if word => At::Word,
            (At::Word, '-') => At::Dash,
            (At::Word | At::Dash, '/') => At::Slash,
            _ => return false,
        };
    }
    at != At::GroupStart
}

/// Empty, `*`, or distinct valid collection names separated by commas.
fn check_collection_list(text: &str) -> Result<(), String> {
    if text.is_empty() || text == "*" {
        return Ok(());
    }
    let names: Vec<&str> = text.split(',').collect();
    for name in &names {
        if super::validate::collection_name(name).is_err() {
            return Err(format!("names an invalid collection `{}`", echo(name)));
        }
    }
    let distinct: std::collections::HashSet<&&str> = names.iter().collect();
    if distinct.len() != names.len() {
        return Err("contains a duplicate collection".into());
    }
    Ok(())
}

/// Distinct devices `<prefix><n>` separated by commas.
fn check_devices(text: &str, prefix: &str) -> Result<(), String> {
    let devices: Vec<String> = text.split(',').map(str::to_ascii_lowercase).collect();
    for device in &devices {
        if device.strip_prefix(prefix).and_then(natural).is_none() {
            return Err(format!("is not a list of devices like {prefix}0,{prefix}1"));
        }
    }
    let distinct: std::collections::HashSet<&String> = devices.iter().collect();
    if distinct.len() != devices.len() {
        return Err("contains a duplicate device".into());
    }
    Ok(())
}

/// The memory this process may use: the machine's, or its cgroup's limit when lower. `None` when
/// neither can be read (then the memory checks are skipped).
fn memory_limit() -> Option<i64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kb.checked_mul(1024)
        });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
    });
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// What the node's own settings say for keys of the tree.
fn node_values(config: &NodeConfig, port: u16) -> Vec<(&'static str, &'static str, String)> {
    let writer = config.role == Role::Writer;
    let mut values = vec![
        ("cluster", "enable", "true".to_string()),
        ("cluster", "role", config.role.name().to_string()),
        ("network", "bind.address", config.host.clone()),
        ("network", "bind.port", port.to_string()),
        // The node serves gRPC only.
        ("network", "http.enable", "false".to_string()),
        ("storage", "path", config.storage.display().to_string()),
        (
            "storage",
            "auto_flush_interval",
            seconds_text(config.auto_flush_interval),
        ),
        (
            "storage",
            "file_cleanup_timeout",
            config.gc_grace.as_secs().to_string(),
        ),
        ("wal", "enable", writer.to_string()),
        (
            "wal",
            "path",
            config
                .storage
                .join(super::WAL_DIR_NAME)
                .display()
                .to_string(),
        ),
        ("cache", "cache_size", size_text(config.cache_bytes)),
        (
            "logs",
            "level",
            if config.log.debug { "debug" } else { "info" }.to_string(),
        ),
        ("logs", "log_to_file", config.log.path.is_some().to_string()),
        (
            "logs",
            "log_to_stdout",
            config.log.path.is_none().to_string(),
        ),
    ];
    if let Some(uri) = &config.meta_uri {
        // `get_config` answers anyone who can connect: the password stays masked.
        values.push(("general", "meta_uri", uri.to_string()));
    }
    if let Some(path) = &config.log.path {
        values.push(("logs", "path", path.display().to_string()));
    }
    if let Some(zone) = timezone_text(&config.log.timezone) {
        values.push(("general", "timezone", zone));
    }
    values
}

/// Whole seconds as an integer, a fraction as a decimal (a node may flush more often than Milvus could).
fn seconds_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

/// A region by its IANA name, a fixed zone in Milvus's `UTC+8` form; `None` for a zone with neither.
fn timezone_text(zone: &jiff::tz::TimeZone) -> Option<String> {
    if let Some(name) = zone.iana_name() {
        return Some(name.to_string());
    }
    let offset_seconds = zone.to_fixed_offset().ok()?.seconds();
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let minutes = offset_seconds.unsigned_abs() / 60;
    match minutes % 60 {
        0 => Some(format!("UTC{sign}{}", minutes / 60)),
        m => Some(format!("UTC{sign}{}:{m:02}", minutes / 60)),
    }
}

#[cfg(test)]
mod tests;
