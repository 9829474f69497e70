//! Configuration layers as an operator meets them: every layer's value is checked, not only the one that
//! wins, and the metadata URI is parsed as the gateway and the node parse it. Settings are resolved from
//! injected maps and temporary files; the process environment is never read.

use std::collections::HashMap;
use std::path::Path;

use mishards::config::{
    ConfigError, GatewayConfig, LogConfig, NodeConfig, Origin, Scope, Settings, TimeZone,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flags(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::fs::write(f.path(), text).expect("write temp file");
    f
}

fn resolve(
    scope: Scope,
    f: &[(&'static str, &str)],
    e: &[(&str, &str)],
    path: Option<&Path>,
) -> Result<Settings, ConfigError> {
    Settings::resolve(scope, &flags(f), &env(e), path)
}

/// The error is `Invalid` for `key`, from the file at `path`.
fn assert_invalid_in_file(err: &ConfigError, key: &str, path: &Path) {
    let text = err.to_string();
    match err {
        ConfigError::Invalid { key: k, origin, .. } => {
            assert_eq!(*k, key, "{text}");
            assert_eq!(
                origin,
                &Origin::File(path.to_path_buf()).to_string(),
                "{text}"
            );
        }
        other => panic!("expected an invalid value of `{key}`, got {other:?}"),
    }
    assert!(text.contains(&format!("`{key}`")), "{text}");
    assert!(
        text.contains(&path.display().to_string()),
        "the error does not name the file: {text}"
    );
}

/// A gateway config file holding `contents` is refused as `Invalid` for `key`, naming the file, and
/// with `says` (if given) in the message.
fn assert_gateway_file_rejected(contents: &str, key: &str, says: Option<&str>) {
    let f = file(contents);
    let err = resolve(Scope::Gateway, &[], &[], Some(f.path())).unwrap_err();
    assert_invalid_in_file(&err, key, f.path());
    if let Some(says) = says {
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn a_bad_value_in_the_file_is_rejected_naming_key_and_file() {
    assert_gateway_file_rejected(
        "server_port = \"http\"\nwoserver = \"w:1\"\n",
        "server_port",
        Some("`http` is not a port"),
    );
}

#[test]
fn a_bad_value_in_the_file_is_rejected_even_when_a_flag_or_env_overrides_it() {
    let cases: [(&str, &'static str, &'static str, &str, &str); 5] = [
        (
            "server_port = 70000",
            "server_port",
            "port",
            "SERVER_PORT",
            "19531",
        ),
        ("debug = \"maybe\"", "debug", "debug", "DEBUG", "true"),
        ("max_retry = -1", "max_retry", "max-retry", "MAX_RETRY", "2"),
        (
            "discovery_class_name = \"zookeeper\"",
            "discovery_class_name",
            "discovery",
            "DISCOVERY_CLASS_NAME",
            "static",
        ),
        (
            "timezone = \"Mars/Olympus\"",
            "timezone",
            "timezone",
            "TIMEZONE",
            "UTC",
        ),
    ];
    for (line, key, flag, env_name, good) in cases {
        let f = file(&format!("{line}\n"));
        // Not overridden.
        let err = resolve(Scope::Gateway, &[], &[], Some(f.path())).unwrap_err();
        assert_invalid_in_file(&err, key, f.path());
        // Overridden by a flag.
        let err = resolve(Scope::Gateway, &[(flag, good)], &[], Some(f.path())).unwrap_err();
        assert_invalid_in_file(&err, key, f.path());
        // Overridden by the environment.
        let err = resolve(Scope::Gateway, &[], &[(env_name, good)], Some(f.path())).unwrap_err();
        assert_invalid_in_file(&err, key, f.path());
        // The same good value in the file is accepted, and the override still wins.
        let f = file(&format!(
            "{key} = {}\n",
            if good.parse::<f64>().is_ok() || good == "true" {
                good.to_string()
            } else {
                format!("{good:?}")
            }
        ));
        let s = resolve(Scope::Gateway, &[(flag, good)], &[], Some(f.path())).unwrap();
        assert_eq!(s.origin(key), Some(&Origin::Flag(flag)));
    }
}

#[test]
fn a_bad_environment_value_is_rejected_even_when_a_flag_overrides_it() {
    let err = resolve(
        Scope::Gateway,
        &[("port", "19531")],
        &[("SERVER_PORT", "http")],
        None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`server_port` (from env SERVER_PORT)"),
        "{text}"
    );
    // A bad flag is named as the flag, even with a good environment value under it.
    let err = resolve(
        Scope::Node,
        &[("role", "writer")],
        &[("MISHARDS_ROLE", "rw")],
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`role` (from flag --role)"),
        "{err}"
    );
}

#[test]
fn file_values_of_the_wrong_shape_are_rejected_by_key() {
    assert_gateway_file_rejected("woserver = [\"a:1\", \"b:2\"]\n", "woserver", Some("array"));

    assert_gateway_file_rejected("[woserver]\nhost = \"a\"\n", "woserver", None);

    // The same setting under its file key and its Mishards name.
    assert_gateway_file_rejected(
        "woserver = \"a:1\"\nWOSERVER = \"b:2\"\n",
        "woserver",
        Some("twice"),
    );

    // A list setting still takes an array.
    let f = file("discovery_static_hosts = [\"a\", \"b:2\"]\n");
    let s = resolve(Scope::Gateway, &[], &[], Some(f.path())).unwrap();
    assert_eq!(s.list("discovery_static_hosts"), ["a", "b:2"]);
}

#[test]
fn a_bad_metadata_uri_names_the_key_and_masks_the_password() {
    let base = [("woserver", "127.0.0.1:19530")];
    for (uri, expected) in [
        (
            "postgres://u:secret@h/db",
            "unsupported database `postgres`",
        ),
        ("mysql+pymysql://u:secret@h:3306/", "no database name"),
        ("mysql://u:secret@h:notaport/milvus", "invalid port"),
        ("secret", "expected `mysql://"),
        ("sqlite://:@:/", "storage folder"),
    ] {
        let s = resolve(
            Scope::Gateway,
            &base,
            &[("SQLALCHEMY_DATABASE_URI", uri)],
            None,
        )
        .unwrap();
        let err = GatewayConfig::from_settings(&s).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "invalid value for `sqlalchemy_database_uri` (from env SQLALCHEMY_DATABASE_URI)"
            ),
            "{uri}: {text}"
        );
        assert!(text.contains(expected), "{uri}: {text}");
        if uri.contains("secret@") {
            assert!(!text.contains("secret"), "{uri}: password shown: {text}");
            assert!(text.contains(":***@"), "{uri}: {text}");
        }
        assert_eq!(text.lines().count(), 1, "{text}");
    }
    // The node parses it the same way, from the flag; its `sqlite://:@:/` is meta.sqlite in --storage.
    let s = resolve(
        Scope::Node,
        &[
            ("role", "rw"),
            ("meta-uri", "postgresql://root:pw@db/milvus"),
        ],
        &[],
        None,
    )
    .unwrap();
    let text = NodeConfig::from_settings(&s).unwrap_err().to_string();
    assert!(
        text.contains("`sqlalchemy_database_uri` (from flag --meta-uri)")
            && text.contains("root:***@db"),
        "{text}"
    );
    let s = resolve(
        Scope::Node,
        &[("role", "ro"), ("meta-uri", "sqlite://:@:/")],
        &[],
        None,
    )
    .unwrap();
    NodeConfig::from_settings(&s).unwrap();
    // Every spelling the issue names is accepted.
    for uri in [
        "mysql://root:pw@127.0.0.1:3306/milvus",
        "mysql+pymysql://root:pw@host:3306/milvus?charset=utf8mb4",
        "sqlite:////abs/path/meta.sqlite",
        "sqlite::memory:",
    ] {
        let s = resolve(Scope::Gateway, &[("meta-uri", uri), base[0]], &[], None).unwrap();
        GatewayConfig::from_settings(&s).unwrap_or_else(|e| panic!("{uri}: {e}"));
    }
}

#[test]
fn timezone_accepts_utc_offsets_fixed_zones_and_regions() {
    let zone = |tz: &str| {
        let s = resolve(Scope::Node, &[("role", "rw")], &[("TIMEZONE", tz)], None)?;
        LogConfig::from_settings(&s).map(|l| l.timezone)
    };
    // Seconds east of UTC in mid-January and mid-July.
    let offsets = |tz: &str| {
        let zone = zone(tz).unwrap_or_else(|e| panic!("{tz}: {e}"));
        ["2026-01-15T12:00:00Z", "2026-07-15T12:00:00Z"].map(|instant| {
            zone.to_offset(instant.parse().expect("an instant"))
                .seconds()
        })
    };
    assert_eq!(offsets("UTC"), [0, 0]);
    assert_eq!(offsets("Etc/UTC"), [0, 0]);
    assert_eq!(offsets("+08:00"), [8 * 3600; 2]);
    assert_eq!(offsets("UTC+8"), [8 * 3600; 2]);
    assert_eq!(offsets("Etc/GMT-8"), [8 * 3600; 2]);
    assert_eq!(zone("local").unwrap(), TimeZone::system());
    assert_eq!(offsets("Asia/Shanghai"), [8 * 3600; 2]);
    assert_eq!(
        offsets("Europe/Berlin"),
        [3600, 2 * 3600],
        "daylight saving"
    );
    let err = zone("Asia/Shangai").unwrap_err().to_string();
    assert!(
        err.contains("`timezone` (from env TIMEZONE)") && err.contains("Asia/Shanghai"),
        "{err}"
    );
}

/// Every setting of the table (specs.rs) has its row in the README's settings table, with its
/// environment name and flag (a `prefix_*` row covers a family).
#[test]
fn every_setting_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let rows: Vec<Vec<&str>> = readme
        .lines()
        .filter(|l| l.starts_with("| "))
        .map(|l| l.split(" | ").collect())
        .filter(|cells: &Vec<&str>| cells.len() >= 6)
        .collect();
    let mut missing = Vec::new();
    for spec in mishards::config::SPECS {
        let row = rows.iter().find(|cells| {
            cells[0].trim_start_matches("| ").split(", ").any(|name| {
                name == spec.key
                    || name
                        .strip_suffix('*')
                        .is_some_and(|prefix| spec.key.starts_with(prefix))
            })
        });
        match row {
            Some(cells) if cells[0].contains('*') => {}
            Some(cells) => {
                let env_ok = spec.env.iter().all(|e| cells[1].contains(e));
                let flag_ok =
                    cells[2].contains(&format!("--{}", spec.flag)) || cells[2].contains("--*");
                if !(env_ok && flag_ok) {
                    missing.push(format!("{} (env or flag differs)", spec.key));
                }
            }
            None => missing.push(spec.key.to_string()),
        }
    }
    assert!(
        missing.is_empty(),
        "settings not in the README's table: {missing:?}"
    );
}
