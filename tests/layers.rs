//! The layering of the workspace, checked: each crate under `crates/` may depend only on the mishards
//! crates of the layers below it. Cargo already refuses an import of a crate that is not a dependency, so
//! this test is what stops a dependency that breaks the layering from being added to a Cargo.toml.

use std::collections::BTreeMap;
use std::path::Path;

/// Each crate's layer, bottom first: a crate may depend on the crates of lower layers only, so two crates
/// of one layer (the node and the gateway; telemetry and fault) never depend on each other.
const LAYERS: &[(&str, u8)] = &[
    ("mishards-proto", 0),
    ("mishards-common", 0),
    ("mishards-meta", 1),
    ("mishards-config", 2),
    ("mishards-telemetry", 3),
    ("mishards-fault", 3),
    ("mishards-tls", 3),
    ("mishards-node", 4),
    ("mishards-gateway", 4),
    ("mishards-tools", 5),
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
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let dir = entry.expect("crates/ entry").path();
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("a crate's Cargo.toml");
        let manifest: toml::Table = text.parse().expect("Cargo.toml is TOML");
        let name = manifest["package"]["name"]
            .as_str()
            .expect("package name")
            .to_string();
        let Some(&own) = layer.get(name.as_str()) else {
            panic!("{name} is not in this test's layer table: give it its layer");
        };
        for dependency in mishards_dependencies(&manifest) {
            let below = layer.get(dependency.as_str()).is_some_and(|&l| l < own);
            assert!(
                below,
                "{name} (layer {own}) depends on {dependency}, which is not below it"
            );
        }
        seen.push(name);
    }
    seen.sort();
    let mut expected: Vec<_> = layer.keys().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "every crate in the table exists under crates/"
    );
}

#[test]
fn gateway_and_node_share_a_layer_so_neither_may_use_the_other() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    assert_eq!(layer["mishards-gateway"], layer["mishards-node"]);
}
