//! The `mishards` binary as an operator meets it: help, config check, and one clear error line for bad
//! settings. Each run gets an explicit, empty environment.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::Process;

use mishards::config::{SPECS, Scope, specs_for};

fn mishards(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run mishards")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_describes_every_subcommand_and_every_option() {
    let top = mishards(&["--help"], &[]);
    assert!(top.status.success());
    for sub in ["gateway", "node", "demo", "config"] {
        assert!(stdout(&top).contains(sub), "{sub} missing from --help");
    }
    for scope in Scope::ALL {
        let out = mishards(&[scope.name(), "--help"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("--config"));
        for spec in specs_for(scope) {
            assert!(
                help.contains(&format!("--{}", spec.flag)),
                "{}: --{} missing",
                scope.name(),
                spec.flag
            );
            assert!(
                help.contains(spec.env[0]),
                "{}: {} missing",
                scope.name(),
                spec.env[0]
            );
        }
    }
    let check = mishards(&["config", "check", "--help"], &[]);
    assert!(check.status.success() && stdout(&check).contains("--for"));
}

#[test]
fn every_example_config_file_checks_out() {
    for (file, scope) in [
        ("config/gateway.toml", "gateway"),
        ("config/node-rw.toml", "node"),
        ("config/node-ro.toml", "node"),
        ("config/demo.toml", "demo"),
    ] {
        let out = mishards(&["config", "check", file], &[]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("valid for `mishards {scope}`")),
            "{file}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn config_check_shows_origins_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(&file, "woserver = \"tcp://w:19530\"\nmax_retry = 5\n").unwrap();
    let out = mishards(
        &["config", "check", file.to_str().unwrap()],
        &[
            (
                "SQLALCHEMY_DATABASE_URI",
                "mysql+pymysql://root:topsecret@db:3306/milvus",
            ),
            ("SERVER_PORT", "19531"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("server_port = 19531  # env SERVER_PORT"),
        "{text}"
    );
    assert!(text.contains("max_retry = 5  # file"), "{text}");
    assert!(
        text.contains("router_class_name = \"rendezvous\"  # default"),
        "{text}"
    );
    assert!(text.contains("root:***@db"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
    // Its output is itself a valid config file.
    let rendered = dir.path().join("rendered.toml");
    std::fs::write(&rendered, &text).unwrap();
    let again = mishards(
        &[
            "config",
            "check",
            rendered.to_str().unwrap(),
            "--for",
            "gateway",
        ],
        &[],
    );
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn bad_settings_fail_with_one_line_naming_the_key() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (
            &["gateway"],
            &[("SERVER_PORT", "http")],
            "`server_port` (from env SERVER_PORT)",
        ),
        (
            &["gateway", "--max-retry", "-2"],
            &[],
            "`max_retry` (from flag --max-retry)",
        ),
        (
            &["gateway"],
            &[("SQLALCHEMY_DATABASE_URI", "sqlite::memory:")],
            "`woserver` is required",
        ),
        (&["node"], &[], "`role` is required"),
    ];
    for (args, env, expected) in cases {
        let out = mishards(args, env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "wo_server = \"x\"\n").unwrap();
    let out = mishards(&["config", "check", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown setting `wo_server`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_metadata_database_is_one_clear_line() {
    let out = mishards(
        &[
            "gateway",
            "--woserver",
            "127.0.0.1:19531",
            "--meta-uri",
            "mysql://root:pw@127.0.0.1:1/milvus",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: cannot connect to metadata database `mysql://root:***@127.0.0.1:1/milvus`"
        ),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "{err}");
}

/// A `mishards node` process (see common::process).
fn node_process(args: &[&str], env: &[(&str, &str)]) -> Process {
    let args: Vec<&str> = std::iter::once("node")
        .chain(args.iter().copied())
        .collect();
    Process::start(&args, env, 1)
}

#[test]
fn a_node_listens_on_a_free_port_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let rw = node_process(
        &[
            "--role",
            "rw",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            storage.to_str().unwrap(),
        ],
        &[],
    );
    assert!(rw.addr().starts_with("127.0.0.1:"), "{}", rw.addr());
    assert!(Path::new(&storage.join("meta.sqlite")).exists());
    // A read node on the same folder finds the schema the writer made.
    let ro = node_process(
        &[
            "--role",
            "ro",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            storage.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(ro.addr(), rw.addr());
    assert!(ro.stop().contains("shutting down"));
    assert!(rw.stop().contains("shutting down"));
}

#[test]
fn settings_table_names_each_key_once() {
    let mut seen = std::collections::HashSet::new();
    assert!(SPECS.iter().all(|s| seen.insert(s.key)));
}

#[test]
fn log_path_also_writes_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let storage = dir.path().join("data");
    let node = node_process(
        &[
            "--role",
            "rw",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            storage.to_str().unwrap(),
        ],
        &[
            ("LOG_PATH", logs.to_str().unwrap()),
            ("LOG_NAME", "node"),
            ("DEBUG", "True"),
        ],
    );
    assert!(node.stop().contains("node serving"));
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("node."),
        "{files:?}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("node serving") && text.contains("DEBUG"),
        "{text}"
    );
}
