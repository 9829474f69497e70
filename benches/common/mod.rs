//! What the in-process benches share: positional arguments, settings without the process environment,
//! deterministic vectors and queries, and a client. Each bench uses part of it.
#![allow(dead_code)]

use mishards::config::{NodeConfig, Scope, Settings};
use mishards::proto::{self, milvus_service_client::MilvusServiceClient};
pub use mishards::rng::SplitMix64;
use tonic::transport::Channel;

pub type Client = MilvusServiceClient<Channel>;

/// The `n`th positional argument (flags starting with `-` skipped), or `default`.
pub fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Settings from these flags alone (no environment, no file).
pub fn settings(scope: Scope, flags: &[(&'static str, String)]) -> Settings {
    let env: std::collections::HashMap<String, String> = Default::default();
    Settings::resolve(scope, &flags.iter().cloned().collect(), &env, None).expect("settings")
}

/// A node on loopback port 0 with its storage in `storage`, and any `extra` flags.
pub fn node_config(role: &str, storage: &str, extra: &[(&'static str, String)]) -> NodeConfig {
    let mut flags = vec![
        ("role", role.to_string()),
        ("host", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("storage", storage.to_string()),
    ];
    flags.extend_from_slice(extra);
    NodeConfig::from_settings(&settings(Scope::Node, &flags)).expect("node config")
}

/// A vector of `dim` values in [0, 1) from the one seeded generator.
pub fn vector(rng: &mut SplitMix64, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.next_f64() as f32).collect()
}

/// One query vector, top-10.
pub fn query(collection: &str, rng: &mut SplitMix64, dim: usize) -> proto::SearchParam {
    proto::SearchParam {
        collection_name: collection.into(),
        query_record_array: vec![proto::RowRecord {
            float_data: vector(rng, dim),
            binary_data: Vec::new(),
        }],
        topk: 10,
        ..Default::default()
    }
}

/// The CA every `connect` trusts once a bench turned TLS on (`use_tls`): its connections are then TLS.
static TLS_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// From now on `connect` speaks TLS, trusting `ca_pem`.
pub fn use_tls(ca_pem: String) {
    let _ = TLS_CA.set(ca_pem);
}

pub async fn connect(addr: std::net::SocketAddr) -> Client {
    let Some(ca) = TLS_CA.get() else {
        return MilvusServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect over TLS");
    MilvusServiceClient::new(channel)
}
