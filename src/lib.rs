//! mishards: a Milvus 1.1-compatible vector-search cluster — an actor-model gateway, the write and read
//! nodes behind it, and an embedded demo of both.
//!
//! Imports run downward: `cli` → `gateway` / `node` → `meta`, `config`, `error`, `proto`, `telemetry`.
//! `gateway` and `node` never import each other; they meet on the wire and in the metadata schema.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod fault;
pub mod gateway;
pub mod limits;
pub mod meta;
pub mod node;
pub mod proto;
pub mod rng;
pub mod telemetry;
