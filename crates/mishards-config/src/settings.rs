//! Layering: each setting's value from command-line flag > environment variable > TOML file > default,
//! parsed by its [`Kind`], with the layer it came from kept for `config check` and for every error.
//!
//! Why this is hand-written rather than figment or clap's `env` + serde (the proposal, weighed
//! and declined):
//! - Every layer that sets a key is parsed, not only the winner: a malformed `SERVER_PORT` is refused
//!   even while `--port` hides it. Figment merges its providers into one dictionary before extraction, so
//!   a hidden value is never seen; clap reads one source per argument.
//! - The environment comes through an injected [`Source`], so tests never touch the process environment.
//!   Figment's `Env` and clap's `env` read `std::env` themselves (figment's tests use `Jail`, which sets
//!   the real environment); a custom figment provider over a `Source` would be this code again.
//! - One setting may have several names (`MISHARDS_LOG`, then `RUST_LOG`), an empty variable counts as
//!   unset, file keys match the Mishards names without regard to case, a key of another subcommand is
//!   refused naming its owner, and arrays are accepted for lists only. Figment lowercases environment
//!   names into key paths and parses values with its own TOML-like rules (`[a]` becomes an array).
//! - Every message names the setting and its origin ("invalid value for `server_port` (from env
//!   SERVER_PORT): …"); figment's and serde's errors would have to be rewritten back into these.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use mishards_meta::mask_password;

use crate::error::ConfigError;
use crate::specs::{
    DEFAULT_ADMIN_PORT, DEFAULT_PORT, Kind, OFF, Scope, Spec, spec_by_key, specs_for,
};
use crate::timezone::parse_timezone;

/// How `config check` shows a secret that is not a URI.
pub const SECRET_MASK: &str = "***";

/// A read-only key/value source, such as the process environment or a map in a test.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The real process environment; only `main` uses it.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(u64),
    Number(f64),
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::List(items) => write!(f, "{items:?}"),
        }
    }
}

/// The effective configuration of one scope: every setting with a value and its origin.
/// Its `Debug` masks secrets as `config check` does.
#[derive(Clone)]
pub struct Settings {
    scope: Scope,
    values: BTreeMap<&'static str, (Value, Origin)>,
}

/// Reads and parses a TOML config file into raw text per key, checking every key belongs to `scope`.
pub fn load_file(path: &Path, scope: Scope) -> Result<Vec<(&'static Spec, String)>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    let mut entries: Vec<(&'static Spec, String)> = Vec::new();
    let invalid = |spec: &'static Spec, reason: String| ConfigError::Invalid {
        key: spec.key,
        origin: Origin::File(path.to_path_buf()).to_string(),
        reason,
    };
    for (key, value) in table {
        let spec = spec_by_key(&key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.clone(),
            path: path.into(),
        })?;
        if !spec.scopes.contains(&scope) {
            let owners = spec
                .scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join("|");
            return Err(ConfigError::WrongScope {
                key,
                path: path.into(),
                owners,
                scope: scope.name(),
            });
        }
        if entries.iter().any(|(seen, _)| seen.key == spec.key) {
            return Err(invalid(
                spec,
                format!("set twice in the file (`{key}` names the same setting as another key)"),
            ));
        }
        let raw = match value {
            toml::Value::String(s) => s,
            toml::Value::Table(_) | toml::Value::Datetime(_) => {
                return Err(invalid(
                    spec,
                    format!("a {} is not a value for this setting", value.type_str()),
                ));
            }
            toml::Value::Array(_) if spec.kind != Kind::List => {
                return Err(invalid(
                    spec,
                    "an array is only accepted for a list setting".to_string(),
                ));
            }
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        entries.push((spec, raw));
    }
    Ok(entries)
}

impl Settings {
    /// Resolves every setting of `scope`: `flags` (flag name → text, only those given on the command
    /// line) over `env` over the optional `file` over defaults.
    pub fn resolve(
        scope: Scope,
        flags: &HashMap<&'static str, String>,
        env: &dyn Source,
        file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let file_entries = match file {
            Some(path) => load_file(path, scope)?,
            None => Vec::new(),
        };
        if let Some(unknown) = flags
            .keys()
            .find(|f| !specs_for(scope).any(|s| s.flag == **f))
        {
            return Err(ConfigError::Invalid {
                key: "flag",
                origin: format!("flag --{unknown}"),
                reason: format!("`mishards {}` has no such flag", scope.name()),
            });
        }
        let mut values = BTreeMap::new();
        for spec in specs_for(scope) {
            // Every layer that sets this key, highest precedence first. Each one is parsed, not only the
            // one that wins: a malformed value in the file or the environment is a mistake even while a
            // flag hides it, and it would surface the day the flag is dropped.
            let mut layers: Vec<(String, Origin)> = Vec::new();
            if let Some(v) = flags.get(spec.flag) {
                layers.push((v.clone(), Origin::Flag(spec.flag)));
            }
            for name in spec.env {
                if let Some(v) = env.get(name).filter(|v| !v.trim().is_empty()) {
                    layers.push((v, Origin::Env(name)));
                }
            }
            if let (Some((_, raw)), Some(path)) =
                (file_entries.iter().find(|(s, _)| s.key == spec.key), file)
            {
                layers.push((raw.clone(), Origin::File(path.to_path_buf())));
            }
            let mut parsed = Vec::with_capacity(layers.len());
            for (raw, origin) in layers {
                let value = parse_value(spec, &raw).map_err(|reason| ConfigError::Invalid {
                    key: spec.key,
                    origin: origin.to_string(),
                    reason,
                })?;
                parsed.push((value, origin));
            }
            let chosen = match parsed.into_iter().next() {
                Some(chosen) => Some(chosen),
                None => match spec.default_for(scope) {
                    Some(default) => Some((
                        parse_value(spec, default).map_err(|reason| ConfigError::Invalid {
                            key: spec.key,
                            origin: Origin::Default.to_string(),
                            reason,
                        })?,
                        Origin::Default,
                    )),
                    None => None,
                },
            };
            if let Some((value, origin)) = chosen {
                values.insert(spec.key, (value, origin));
            }
        }
        Ok(Settings { scope, values })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn spec(key: &str) -> &'static Spec {
        spec_by_key(key).unwrap_or_else(|| panic!("no setting named {key}"))
    }

    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|(_, origin)| origin)
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key).map(|(value, _)| value)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Text(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn required_text(&self, key: &str) -> Result<&str, ConfigError> {
        self.text(key).filter(|s| !s.is_empty()).ok_or_else(|| {
            let spec = Self::spec(key);
            ConfigError::Missing {
                key: spec.key,
                flag: spec.flag,
                env: spec.env.first().copied().unwrap_or("-"),
            }
        })
    }

    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.text(key).filter(|s| !s.is_empty()).map(PathBuf::from)
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.value(key), Some(Value::Bool(true)))
    }

    pub fn int(&self, key: &str) -> Option<u64> {
        match self.value(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn port(&self, key: &str) -> u16 {
        self.int(key)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(DEFAULT_PORT)
    }

    /// A `PortOrOff` setting: `None` when it is `off`.
    pub fn port_or_off(&self, key: &str) -> Option<u16> {
        match self.value(key) {
            Some(Value::Text(t)) if t == OFF => None,
            _ => Some(
                self.int(key)
                    .and_then(|n| u16::try_from(n).ok())
                    .unwrap_or(DEFAULT_ADMIN_PORT),
            ),
        }
    }

    pub fn number(&self, key: &str) -> Option<f64> {
        match self.value(key) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn list(&self, key: &str) -> &[String] {
        match self.value(key) {
            Some(Value::List(items)) => items,
            _ => &[],
        }
    }

    /// An error about `key`'s current value, for checks that need more than one setting.
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key,
            origin: self
                .origin(key)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "default".into()),
            reason: reason.into(),
        }
    }

    /// The effective configuration as TOML, secrets masked, each line commented with its origin. Settings
    /// without a value are listed commented out.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# effective configuration of `mishards {}`\n",
            self.scope.name()
        );
        for spec in specs_for(self.scope) {
            match self.values.get(spec.key) {
                Some((value, origin)) => {
                    let shown = shown(spec, value);
                    out.push_str(&format!("{} = {shown}  # {origin}\n", spec.key));
                }
                None => out.push_str(&format!("# {} =   (not set)\n", spec.key)),
            }
        }
        out
    }
}

/// A value as `config check` and `Debug` show it: a URI shows all but its password, any other secret
/// shows nothing.
fn shown(spec: &Spec, value: &Value) -> String {
    match value {
        Value::Text(s) if spec.secret && s.contains("://") => format!("{:?}", mask_password(s)),
        Value::Text(_) if spec.secret => format!("{:?}", SECRET_MASK),
        other => toml_literal(other),
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, (value, origin)) in &self.values {
            let value = match spec_by_key(key) {
                Some(spec) => shown(spec, value),
                None => format!("{:?}", SECRET_MASK),
            };
            map.entry(key, &format_args!("{value} ({origin})"));
        }
        map.finish()
    }
}

fn toml_literal(value: &Value) -> String {
    match value {
        Value::List(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| format!("{i:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// Parses one setting's text per its kind.
pub(crate) fn parse_value(spec: &Spec, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    match spec.kind {
        Kind::Text | Kind::Path => Ok(Value::Text(text.to_string())),
        Kind::TimeZone => parse_timezone(text).map(|_| Value::Text(text.to_string())),
        Kind::Bool => parse_bool(text).map(Value::Bool),
        Kind::Port => match text.parse::<u16>() {
            Err(_) => Err(format!(
                "`{text}` is not a port (0-65535; 0 picks a free one)"
            )),
            Ok(port) => Ok(Value::Int(port.into())),
        },
        Kind::PortOrOff if text.eq_ignore_ascii_case(OFF) => Ok(Value::Text(OFF.to_string())),
        Kind::PortOrOff => match text.parse::<u16>() {
            Err(_) => Err(format!(
                "`{text}` is not a port (0-65535; 0 picks a free one) or `{OFF}`"
            )),
            Ok(port) => Ok(Value::Int(port.into())),
        },
        Kind::Count => text
            .parse::<u64>()
            .map(Value::Int)
            .map_err(|_| format!("`{text}` is not a whole number ≥ 0")),
        Kind::Number => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => Err(format!("`{text}` is not a number")),
        },
        Kind::List => Ok(Value::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Kind::OneOf(choices) => choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(text))
            .map(|c| Value::Text(c.to_string()))
            .ok_or_else(|| {
                let listed = choices
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("`{text}` is not one of {listed}")
            }),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{text}` is not a boolean (true/false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, file, flags};

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let f = file("server_port = 1111\nwoserver = \"tcp://10.0.0.1:19530\"\nmax_retry = 7\n");
        let e = env(&[("SERVER_PORT", "2222"), ("WOSERVER", "w:1")]);
        let s = Settings::resolve(
            Scope::Gateway,
            &flags(&[("port", "3333")]),
            &e,
            Some(f.path()),
        )
        .unwrap();
        assert_eq!(s.port("server_port"), 3333);
        assert_eq!(s.origin("server_port"), Some(&Origin::Flag("port")));
        assert_eq!(s.text("woserver"), Some("w:1"));
        assert_eq!(s.origin("woserver"), Some(&Origin::Env("WOSERVER")));
        assert_eq!(s.int("max_retry"), Some(7));
        assert_eq!(
            s.origin("max_retry"),
            Some(&Origin::File(f.path().to_path_buf()))
        );
        assert_eq!(s.int("discovery_static_port"), Some(19530));
        assert_eq!(s.origin("discovery_static_port"), Some(&Origin::Default));
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let s = Settings::resolve(
            Scope::Gateway,
            &flags(&[]),
            &env(&[("TRACER_CLASS_NAME", "")]),
            None,
        )
        .unwrap();
        assert_eq!(s.origin("tracer_class_name"), Some(&Origin::Default));
    }

    #[test]
    fn unknown_and_misplaced_file_keys_are_rejected_by_name() {
        let f = file("server_port = 1\nwoserverr = \"x\"\n");
        let err =
            Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), Some(f.path())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, .. } if key == "woserverr"),
            "{err}"
        );
        let f = file("woserver = \"x\"\n");
        let err =
            Settings::resolve(Scope::Node, &flags(&[]), &env(&[]), Some(f.path())).unwrap_err();
        assert!(err.to_string().contains("`woserver`"), "{err}");
        assert!(err.to_string().contains("mishards gateway"), "{err}");
    }

    #[test]
    fn file_keys_may_use_the_mishards_names() {
        let f = file("WOSERVER = \"tcp://a:1\"\nDISCOVERY_STATIC_HOSTS = [\"b\", \"c:2\"]\n");
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[]), Some(f.path())).unwrap();
        assert_eq!(s.text("woserver"), Some("tcp://a:1"));
        assert_eq!(s.list("discovery_static_hosts"), ["b", "c:2"]);
    }

    #[test]
    fn malformed_values_name_the_key_and_origin() {
        let cases: [(&str, &str, &str); 5] = [
            ("SERVER_PORT", "70000", "server_port"),
            ("DEBUG", "maybe", "debug"),
            ("MAX_RETRY", "-1", "max_retry"),
            ("ROUTER_CLASS_NAME", "roundrobin", "router_class_name"),
            ("TRACING_SAMPLER_PARAM", "abc", "tracing_sampler_param"),
        ];
        for (name, value, key) in cases {
            let err = Settings::resolve(Scope::Gateway, &flags(&[]), &env(&[(name, value)]), None)
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{key}`")) && text.contains(name),
                "{text}"
            );
        }
    }
}
