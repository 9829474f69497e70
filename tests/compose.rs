//! docker-compose/docker-compose.yml cannot be started here (no Docker engine), so this test reads it:
//! every mishards service's command and environment must be accepted by the real CLI and config layer,
//! and the services must point at each other (gateway → write node and read nodes, everyone → MySQL,
//! nodes → one shared volume).

use std::collections::HashMap;

use mishards::config::{GatewayConfig, NodeConfig, Role, Scope, Settings};
use mishards::meta::MetaUri;
use serde_yaml_ng::Value;

fn compose() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker-compose/docker-compose.yml"
    );
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("compose file"))
        .expect("valid YAML")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn environment(service: &Value) -> HashMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.as_str()?.to_string(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a service's command with the real CLI and resolves its settings with its environment.
fn settings(service: &Value) -> (Scope, Settings) {
    let args = strings(&service["command"]);
    let matches = mishards::cli::command()
        .try_get_matches_from(std::iter::once("mishards".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("{args:?} is not a valid command line: {e}"));
    let (name, sub) = matches.subcommand().expect("a subcommand");
    let scope = match name {
        "gateway" => Scope::Gateway,
        "node" => Scope::Node,
        other => panic!("unexpected subcommand {other}"),
    };
    let flags: HashMap<&'static str, String> = mishards::config::specs_for(scope)
        .filter_map(|spec| {
            sub.get_one::<String>(spec.key)
                .map(|v| (spec.flag, v.clone()))
        })
        .collect();
    let env = environment(service);
    for key in env.keys() {
        if key.starts_with("MYSQL_") {
            continue;
        }
        assert!(
            mishards::config::specs_for(scope).any(|s| s.env.contains(&key.as_str())),
            "{key} is not a setting of `mishards {name}`"
        );
    }
    (
        scope,
        Settings::resolve(scope, &flags, &env, None).unwrap_or_else(|e| panic!("{args:?}: {e}")),
    )
}

fn mysql_host(uri: &str) -> (String, String) {
    match MetaUri::parse(uri, None).expect("metadata URI") {
        MetaUri::MySql(t) => (t.host, t.database),
        other => panic!("expected MySQL metadata, got {other}"),
    }
}

/// Services that run other projects' images.
const THIRD_PARTY: [&str; 2] = ["mysql", "jaeger"];

#[test]
fn every_service_is_a_valid_mishards_process_and_they_point_at_each_other() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let mysql = &doc["services"]["mysql"];
    let database = environment(mysql)["MYSQL_DATABASE"].clone();
    let volume_of = |s: &Value| strings(&s["volumes"]).first().cloned().unwrap_or_default();
    let jaeger = &doc["services"]["jaeger"];
    assert_eq!(environment(jaeger)["COLLECTOR_OTLP_ENABLED"], "true");
    assert!(strings(&jaeger["ports"]).contains(&"16686:16686".to_string()));
    let jaeger_otlp = "http://jaeger:4317".to_string();

    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut gateways = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap().to_string();
        if THIRD_PARTY.contains(&name.as_str()) {
            continue;
        }
        let (scope, s) = settings(service);
        match scope {
            Scope::Node => {
                let node = NodeConfig::from_settings(&s).expect("node config");
                assert_eq!(
                    node.tracing.otlp_endpoint.as_deref(),
                    Some(jaeger_otlp.as_str()),
                    "{name} sends its traces to Jaeger"
                );
                let (host, db) =
                    mysql_host(node.meta_uri.as_ref().expect("nodes use MySQL").expose());
                assert_eq!(
                    (host.as_str(), db.as_str()),
                    ("mysql", database.as_str()),
                    "{name}"
                );
                assert!(
                    volume_of(service).ends_with(&format!(":{}", node.storage.display())),
                    "{name} mounts its storage"
                );
                match node.role {
                    Role::Writer => writers.push((name, node, volume_of(service))),
                    Role::Reader => readers.push((name, node, volume_of(service))),
                }
            }
            _ => gateways.push((
                name,
                GatewayConfig::from_settings(&s).expect("gateway config"),
                service.clone(),
            )),
        }
    }
    assert_eq!(writers.len(), 1, "exactly one write node");
    assert_eq!(readers.len(), 2, "two read nodes");
    assert_eq!(gateways.len(), 1);
    let (_, writer, writer_volume) = &writers[0];
    assert!(
        readers.iter().all(|(_, _, v)| v == writer_volume),
        "all nodes share one volume"
    );

    let (_, gateway, service) = &gateways[0];
    let write_node = gateway.write_node.as_ref().expect("WOSERVER is set");
    assert_eq!((&*write_node.host, write_node.port), ("rw", writer.port));
    let mut hosts: Vec<(String, u16)> = gateway
        .discovery
        .static_hosts
        .iter()
        .map(|h| (h.host.to_string(), h.port))
        .collect();
    hosts.sort();
    let mut expected: Vec<(String, u16)> = readers
        .iter()
        .map(|(n, r, _)| (n.clone(), r.port))
        .collect();
    expected.sort();
    assert_eq!(
        hosts, expected,
        "the gateway discovers exactly the read nodes"
    );
    assert_eq!(
        mysql_host(gateway.meta_uri.expose()),
        ("mysql".into(), database.clone())
    );
    assert_eq!(
        gateway.tracing.otlp_endpoint.as_deref(),
        Some(jaeger_otlp.as_str())
    );
    assert_eq!(gateway.tracing.service_name, "mishards");
    assert!(
        !gateway.clients.allow_set_config,
        "the compose gateway refuses clients' set_config"
    );
    let admin_port = match gateway.admin.port {
        Some(port) => port,
        None => panic!("the gateway's admin API is on"),
    };
    assert_eq!(
        strings(&service["ports"]),
        [
            format!("19530:{}", gateway.port),
            format!("127.0.0.1:19121:{admin_port}")
        ]
    );
}

#[test]
fn the_dockerfile_builds_the_binary_the_services_run() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked --bin mishards"));
    // Multi-stage, and the image runs as an unprivileged user (the chart sets runAsNonRoot, which needs a
    // numeric user).
    assert!(dockerfile.contains(" AS build"));
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("ENTRYPOINT [\"mishards\"]"));
    // The build stage gets every top-level path the workspace build reads, and each exists.
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .flat_map(|args| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            parts[..parts.len().saturating_sub(1)].to_vec()
        })
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "crates",
        "proto",
        "src",
        "benches",
    ] {
        assert!(
            copied.contains(&needed),
            "the Dockerfile does not copy {needed}"
        );
    }
    for path in &copied {
        let on_disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        assert!(
            on_disk.exists(),
            "the Dockerfile copies {path}, which does not exist"
        );
    }
    let doc = compose();
    for (name, service) in doc["services"].as_mapping().unwrap() {
        if !THIRD_PARTY.contains(&name.as_str().unwrap_or_default()) {
            assert_eq!(
                service["image"].as_str(),
                Some("mishards:latest"),
                "{name:?}"
            );
        }
    }
}
