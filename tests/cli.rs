//! The `mishards` binary as an operator meets it: help, config check, and one clear error line for bad
//! settings. Each run gets an explicit, empty environment.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::Process;

use mishards::config::{Kind, SPECS, Scope, specs_for};

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

/// Every command of the tree with its path of names, e.g. `["chaos", "run"]`.
fn all_commands(
    cmd: &clap::Command,
    path: Vec<String>,
    out: &mut Vec<(Vec<String>, clap::Command)>,
) {
    out.push((path.clone(), cmd.clone()));
    for sub in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        all_commands(sub, p, out);
    }
}

#[test]
fn help_describes_every_subcommand_and_every_option() {
    let mut commands = Vec::new();
    all_commands(&mishards::cli::command(), Vec::new(), &mut commands);
    let paths: Vec<String> = commands.iter().map(|(p, _)| p.join(" ")).collect();
    for expected in [
        "gateway",
        "node",
        "demo",
        "inspect",
        "bench",
        "chaos",
        "chaos run",
        "config",
        "config check",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "`mishards {expected}` missing: {paths:?}"
        );
    }
    for (path, cmd) in &commands {
        let name = format!("mishards {}", path.join(" "));
        assert!(
            cmd.get_about()
                .is_some_and(|a| !a.to_string().trim().is_empty()),
            "{name} has no description"
        );
        // The tree as clap parses it, with every argument; help and version are clap's own.
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .collect();
        let mut argv: Vec<&str> = path.iter().map(String::as_str).collect();
        argv.push("--help");
        let out = mishards(&argv, &[]);
        assert!(out.status.success(), "{name} --help: {}", stderr(&out));
        let help = stdout(&out);
        for arg in args {
            let id = arg.get_id().as_str();
            let described = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !described.trim().is_empty(),
                "{name}: option `{id}` has no help"
            );
            match arg.get_long() {
                Some(long) => assert!(
                    help.contains(&format!("--{long}")),
                    "{name} --help does not list --{long}"
                ),
                None => {
                    let value = arg
                        .get_value_names()
                        .and_then(|v| v.first().map(|s| s.to_string()))
                        .unwrap_or_else(|| id.to_uppercase());
                    assert!(
                        help.contains(&value),
                        "{name} --help does not list <{value}>"
                    )
                }
            }
            let first_words: String = described
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                help.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(&first_words),
                "{name} --help does not show the help of `{id}` ({first_words})"
            );
        }
    }
    // Settings: each flag names its environment variable, and every word its value may be is described.
    for scope in Scope::ALL {
        let help = stdout(&mishards(&[scope.name(), "--help"], &[]));
        assert!(help.contains("--config"));
        for spec in specs_for(scope) {
            assert!(
                help.contains(spec.env[0]),
                "{}: {} missing",
                scope.name(),
                spec.env[0]
            );
            if let Kind::OneOf(choices) = spec.kind {
                for choice in choices.iter().filter(|c| !c.is_empty()) {
                    assert!(
                        spec.help.contains(choice),
                        "{}: --{} accepts `{choice}` but its help does not say what it does",
                        scope.name(),
                        spec.flag
                    );
                }
            }
        }
    }
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

/// Runs `mishards ARGS…` for `running`, then stops it with SIGTERM (SIGKILL 20 s later) and returns
/// what it printed and how it ended: for servers that wait instead of exiting.
fn run_briefly(args: &[&str], env: &[(&str, &str)], running: std::time::Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mishards");
    std::thread::sleep(running);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(20));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("mishards output");
    drop(killer);
    out
}

/// A metadata database that does not answer is waited for (processes start in any order): said once
/// in the log and on `/readyz`, password masked. One that can never be used (a SQLite file that
/// cannot be created) stops the gateway with one clear line.
#[test]
fn an_unreachable_metadata_database_is_waited_for_and_an_unusable_one_is_one_clear_line() {
    let gateway = Process::local_gateway(
        &[
            "--woserver",
            "127.0.0.1:19531",
            "--meta-uri",
            "mysql://root:pw@127.0.0.1:1/milvus",
        ],
        &[],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = gateway.addrs[1].clone();
    // The reason appears with the first poll's answer.
    let body = runtime.block_on(common::wait_for(
        "the gateway's reason",
        std::time::Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                let (status, body) = common::admin_get(&admin, "/readyz").await;
                assert_eq!(status, 503, "{body}");
                body.contains("cannot connect to metadata database")
                    .then_some(body.clone())
                    .ok_or(body)
            }
        },
    ));
    assert!(
        body.contains("cannot connect to metadata database `mysql://root:***@127.0.0.1:1/milvus`"),
        "{body}"
    );
    let err = gateway.stop();
    let waiting: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("waiting for the metadata"))
        .collect();
    assert_eq!(waiting.len(), 1, "one line, not one per retry: {err}");
    assert!(waiting[0].contains("root:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");

    let out = mishards(
        &[
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "off",
            "--woserver",
            "127.0.0.1:19531",
            "--meta-uri",
            "sqlite:////proc/mishards-nowhere/meta.sqlite",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot connect to metadata database `sqlite:")
            && last.contains("mishards-nowhere"),
        "{err}"
    );
}

#[test]
fn a_node_listens_on_a_free_port_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let rw = Process::local_node("rw", storage.to_str().unwrap(), &[], &[]);
    assert!(rw.addr().starts_with("127.0.0.1:"), "{}", rw.addr());
    assert!(Path::new(&storage.join("meta.sqlite")).exists());
    // A read node on the same folder finds the schema the writer made.
    let ro = Process::local_node("ro", storage.to_str().unwrap(), &[], &[]);
    assert_ne!(ro.addr(), rw.addr());
    assert!(ro.stop().contains("shutting down"));
    assert!(rw.stop().contains("shutting down"));
}

/// Two write nodes on one storage folder would share one write-ahead log: the second exits non-zero
/// with one line saying whose the folder is, and the first goes on serving.
#[test]
fn a_second_write_node_on_one_folder_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let rw = Process::local_node("rw", storage.to_str().unwrap(), &[], &[]);
    let out = mishards(
        &[
            "node",
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
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: storage folder ")
            && last.contains("is in use by another write node (pid ")
            && last.contains("only one write node may use a storage folder"),
        "{err}"
    );
    // Read nodes take no lock.
    let ro = Process::local_node("ro", storage.to_str().unwrap(), &[], &[]);
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
    let node = Process::local_node(
        "rw",
        storage.to_str().unwrap(),
        &[],
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

#[test]
fn config_check_rejects_a_metadata_uri_the_gateway_would_reject() {
    let out = mishards(
        &["config", "check", "--for", "gateway"],
        &[
            ("WOSERVER", "tcp://w:19530"),
            ("SQLALCHEMY_DATABASE_URI", "postgres://u:secret@h/db"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: invalid value for `sqlalchemy_database_uri` (from env SQLALCHEMY_DATABASE_URI): \
             `postgres://u:***@h/db` is not a metadata URI: unsupported database `postgres`"
        ),
        "{err}"
    );
    assert!(!err.contains("secret") && !stdout(&out).contains("secret"));
    assert!(!stdout(&out).contains("# ok"), "{}", stdout(&out));
    // The gateway itself refuses it with the same line.
    let gateway = mishards(
        &[
            "gateway",
            "--woserver",
            "w:1",
            "--meta-uri",
            "postgres://u:secret@h/db",
        ],
        &[],
    );
    assert_eq!(gateway.status.code(), Some(1));
    assert!(
        stderr(&gateway).contains("`postgres://u:***@h/db` is not a metadata URI"),
        "{}",
        stderr(&gateway)
    );
    // A node config file with a bad URI is refused too, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "role = \"ro\"\nsqlalchemy_database_uri = \"mysql://root:pw@db:3306/\"\n",
    )
    .unwrap();
    let out = mishards(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "`sqlalchemy_database_uri` (from file {})",
            file.display()
        )) && err.contains("root:***@db")
            && err.contains("no database name"),
        "{err}"
    );
}

#[test]
fn config_check_rejects_a_bad_file_value_even_when_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(&file, "woserver = \"w:1\"\nserver_port = \"http\"\n").unwrap();
    for env in [&[][..], &[("SERVER_PORT", "19531")][..]] {
        let out = mishards(&["config", "check", file.to_str().unwrap()], env);
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "invalid value for `server_port` (from file {}): `http` is not a port",
                file.display()
            )),
            "{env:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// A password with `/`, `@` and `:` in it, percent-encoded and not: neither `config check`, nor a
/// node's or a gateway's logs (debug on) while they fail to reach the database, show any of it.
#[test]
fn metadata_passwords_never_reach_output_or_logs() {
    let pieces = ["p%40ss", "p@ss", "ss:w", "w/rd", "rd@"];
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    for uri in [
        "mysql://user:p%40ss:w/rd@127.0.0.1:1/milvus",
        "mysql+pymysql://user:p@ss:w/rd@127.0.0.1:1/milvus",
    ] {
        let runs = [
            mishards(
                &["config", "check", "--for", "gateway"],
                &[("SQLALCHEMY_DATABASE_URI", uri), ("WOSERVER", "w:1")],
            ),
            mishards(
                &["config", "check", "--for", "node"],
                &[("SQLALCHEMY_DATABASE_URI", uri), ("MISHARDS_ROLE", "rw")],
            ),
            run_briefly(
                &[
                    "gateway",
                    "--debug",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--woserver",
                    "127.0.0.1:19531",
                    "--admin-port",
                    "off",
                ],
                &[("SQLALCHEMY_DATABASE_URI", uri)],
                std::time::Duration::from_millis(1500),
            ),
            run_briefly(
                &[
                    "node",
                    "--debug",
                    "--role",
                    "rw",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--storage",
                    storage.to_str().unwrap(),
                ],
                &[("SQLALCHEMY_DATABASE_URI", uri)],
                std::time::Duration::from_millis(1500),
            ),
        ];
        for (i, out) in runs.iter().enumerate() {
            let text = format!("{}{}", stdout(out), stderr(out));
            assert!(text.contains("user:***@127.0.0.1"), "run {i}: {text}");
            for piece in pieces {
                assert!(!text.contains(piece), "run {i} shows `{piece}`: {text}");
            }
        }
        // The servers could not reach the database, said so, waited, and stopped cleanly when told.
        for run in &runs[2..] {
            assert_eq!(run.status.code(), Some(0), "{}", stderr(run));
            assert!(
                stderr(run).contains("waiting for the metadata"),
                "{}",
                stderr(run)
            );
        }
    }
}
