//! The layering of the workspace, checked: each crate under `crates/` may depend only on the mishards
//! crates of the layers below it. Cargo already refuses an import of a crate that is not a dependency, so
//! this test is what stops a dependency that breaks the layering from being added to a Cargo.toml.

use std::collections::BTreeMap;
use std::path::Path;

/// Each crate and the mishards crates it may depend on: the layers, bottom first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("mishards-proto", &[]),
    ("mishards-common", &[]),
    ("mishards-meta", &["mishards-proto", "mishards-common"]),
    (
        "mishards-config",
        &["mishards-proto", "mishards-common", "mishards-meta"],
    ),
    (
        "mishards-telemetry",
        &[
            "mishards-proto",
            "mishards-common",
            "mishards-meta",
            "mishards-config",
        ],
    ),
    (
        "mishards-fault",
        &[
            "mishards-proto",
            "mishards-common",
            "mishards-meta",
            "mishards-config",
        ],
    ),
    (
        "mishards-node",
        &[
            "mishards-proto",
            "mishards-common",
            "mishards-meta",
            "mishards-config",
            "mishards-telemetry",
        ],
    ),
    (
        "mishards-gateway",
        &[
            "mishards-proto",
            "mishards-common",
            "mishards-meta",
            "mishards-config",
            "mishards-telemetry",
            "mishards-fault",
        ],
    ),
    (
        "mishards-tools",
        &[
            "mishards-proto",
            "mishards-common",
            "mishards-meta",
            "mishards-config",
            "mishards-telemetry",
            "mishards-fault",
            "mishards-node",
            "mishards-gateway",
        ],
    ),
];

/// The mishards crates a manifest names in any of its dependency tables.
fn mishards_dependencies(manifest: &toml::Table) -> Vec<String> {
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|table| manifest.get(*table).and_then(|t| t.as_table()))
        .flat_map(|t| t.keys())
        .filter(|name| name.starts_with("mishards"))
        .cloned()
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let dir = entry.expect("crates/ entry").path();
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("a crate's Cargo.toml");
        let manifest: toml::Table = text.parse().expect("Cargo.toml is TOML");
        let name = manifest["package"]["name"]
            .as_str()
            .expect("package name")
            .to_string();
        let Some(may) = allowed.get(name.as_str()) else {
            panic!("{name} is not in this test's layer table: give it its layer");
        };
        for dependency in mishards_dependencies(&manifest) {
            assert!(
                may.contains(&dependency.as_str()),
                "{name} depends on {dependency}, which is not below it (it may use {may:?})"
            );
        }
        seen.push(name);
    }
    seen.sort();
    let mut expected: Vec<_> = allowed.keys().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "every layer in the table exists under crates/"
    );
}

#[test]
fn gateway_and_node_never_depend_on_each_other() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    assert!(!allowed["mishards-gateway"].contains(&"mishards-node"));
    assert!(!allowed["mishards-node"].contains(&"mishards-gateway"));
}
