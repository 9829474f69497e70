//! The wire contract: proto/milvus.proto and proto/status.proto, as compiled into the crate, must match
//! pymilvus 1.1.2's own descriptors message for message, field for field, RPC for RPC.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// Every fact about a descriptor set that the wire depends on, one line each.
fn facts(set: &FileDescriptorSet) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in &set.file {
        let package = file.package();
        out.insert(format!(
            "file {} package {} syntax {}",
            file.name(),
            package,
            file.syntax()
        ));
        for dep in &file.dependency {
            out.insert(format!("file {} imports {dep}", file.name()));
        }
        for e in &file.enum_type {
            enum_facts(&format!("{package}.{}", e.name()), e, &mut out);
        }
        for m in &file.message_type {
            message_facts(&format!("{package}.{}", m.name()), m, &mut out);
        }
        for service in &file.service {
            let name = format!("{package}.{}", service.name());
            out.insert(format!("service {name}"));
            for m in &service.method {
                out.insert(format!(
                    "rpc {name}.{}({}{}) returns ({}{})",
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                ));
            }
        }
    }
    out
}

fn enum_facts(name: &str, e: &EnumDescriptorProto, out: &mut BTreeSet<String>) {
    out.insert(format!("enum {name}"));
    for v in &e.value {
        out.insert(format!("enum {name} value {} = {}", v.name(), v.number()));
    }
}

fn message_facts(name: &str, m: &DescriptorProto, out: &mut BTreeSet<String>) {
    out.insert(format!("message {name}"));
    for f in &m.field {
        let oneof = f
            .oneof_index
            .map(|i| format!(" oneof {}", m.oneof_decl[i as usize].name()))
            .unwrap_or_default();
        out.insert(format!(
            "message {name} field {} = {} {:?} {:?} {}{oneof}",
            f.name(),
            f.number(),
            f.label(),
            f.r#type(),
            f.type_name()
        ));
    }
    for nested in &m.nested_type {
        message_facts(&format!("{name}.{}", nested.name()), nested, out);
    }
    for e in &m.enum_type {
        enum_facts(&format!("{name}.{}", e.name()), e, out);
    }
}

/// Lines only in `ours` and lines only in `theirs`: empty both ways means no drift.
fn drift(ours: &FileDescriptorSet, theirs: &FileDescriptorSet) -> (Vec<String>, Vec<String>) {
    let (a, b) = (facts(ours), facts(theirs));
    (
        a.difference(&b).cloned().collect(),
        b.difference(&a).cloned().collect(),
    )
}

fn ours() -> FileDescriptorSet {
    FileDescriptorSet::decode(mishards::proto::FILE_DESCRIPTOR_SET)
        .expect("our descriptor set decodes")
}

fn pymilvus() -> FileDescriptorSet {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/contract/pymilvus_descriptors.py"
    );
    let output = Command::new(common::python())
        .arg(script)
        .output()
        .expect("run Python");
    assert!(
        output.status.success(),
        "pymilvus descriptors: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    FileDescriptorSet::decode(bytes.as_slice()).expect("pymilvus descriptor set decodes")
}

/// `milvus.proto` in a descriptor set, for tests that change it to see the drift reported.
fn milvus_proto(set: &mut FileDescriptorSet) -> &mut prost_types::FileDescriptorProto {
    set.file
        .iter_mut()
        .find(|f| f.name() == "milvus.proto")
        .expect("milvus.proto")
}

#[test]
fn proto_matches_pymilvus_1_1_2() {
    let (ours, theirs) = (ours(), pymilvus());
    let (only_ours, only_theirs) = drift(&ours, &theirs);
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "proto drift from pymilvus 1.1.2\nonly in ours:\n  {}\nonly in pymilvus:\n  {}",
        only_ours.join("\n  "),
        only_theirs.join("\n  ")
    );
    let facts = facts(&ours);
    assert_eq!(
        facts
            .iter()
            .filter(|f| f.starts_with("rpc milvus.grpc.MilvusService."))
            .count(),
        41
    );
    assert_eq!(
        facts
            .iter()
            .filter(|f| f.starts_with("message ") && !f.contains(" field "))
            .count(),
        51
    );
}

#[test]
fn a_changed_field_number_is_drift() {
    let theirs = pymilvus();
    let mut changed = ours();
    let milvus = milvus_proto(&mut changed);
    let search = milvus
        .message_type
        .iter_mut()
        .find(|m| m.name() == "SearchParam")
        .expect("SearchParam");
    let topk = search
        .field
        .iter_mut()
        .find(|f| f.name() == "topk")
        .expect("topk");
    topk.number = Some(topk.number() + 100);
    let (only_ours, only_theirs) = drift(&changed, &theirs);
    assert_eq!(only_ours.len(), 1, "{only_ours:?}");
    assert!(
        only_ours[0].contains("SearchParam field topk"),
        "{only_ours:?}"
    );
    assert_eq!(only_theirs.len(), 1, "{only_theirs:?}");
}

#[test]
fn a_renamed_rpc_or_missing_message_is_drift() {
    let theirs = pymilvus();
    let mut changed = ours();
    let milvus = milvus_proto(&mut changed);
    milvus.service[0].method[0].name = Some("CreateTable".into());
    milvus.message_type.retain(|m| m.name() != "HEntity");
    let (only_ours, only_theirs) = drift(&changed, &theirs);
    assert!(
        only_ours.iter().any(|f| f.contains("CreateTable")),
        "{only_ours:?}"
    );
    assert!(
        only_theirs
            .iter()
            .any(|f| f == "message milvus.grpc.HEntity"),
        "{only_theirs:?}"
    );
}
