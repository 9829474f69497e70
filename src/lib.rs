//! mishards: a Milvus 1.1-compatible vector-search cluster — an actor-model gateway, the write and read
//! nodes behind it, and an embedded demo of both.
//!
//! The work lives in the crates under `crates/`, layered so that the build refuses an upward import:
//! `mishards-proto` and `mishards-common` at the bottom; `mishards-meta`; `mishards-config`;
//! `mishards-telemetry` and `mishards-fault`; `mishards-node` and `mishards-gateway`, which never depend on
//! each other (they meet on the wire and in the metadata schema); `mishards-tools`; and this package, the
//! `mishards` binary, on top. The modules below name those crates as one API for the binary, the tests and
//! the benches.

pub mod cli;

pub use mishards_common::{rng, stats};
pub use mishards_config as config;
pub use mishards_fault as fault;
pub use mishards_gateway as gateway;
pub use mishards_meta as meta;
pub use mishards_node as node;
pub use mishards_proto as proto;
pub use mishards_proto::{error, limits};
pub use mishards_telemetry as telemetry;
pub use mishards_tls as tls;
pub use mishards_tools::{bench, chaos, demo};
