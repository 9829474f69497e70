//! Fault injection rules and the deterministic injector that applies them (issue 6). Pure: no I/O and no
//! clock reads — callers pass `now` — so every decision can be replayed in a unit test.
//!
//! A rule names a target (nodes, the metadata poller, or a supervised actor), an optional RPC filter, a
//! kind of fault, a probability and a time window (rules.rs). Rules are armed in a [`FaultBook`] (one per
//! gateway, owned by the `Faults` actor), which publishes immutable [`FaultPlan`]s and logs the faults
//! applied (book.rs); each site that can fail (a node link's channels, the poller, a crash timer) holds a
//! [`FaultInjector`]: the plan's rules that target it and its random streams (injector.rs).
//!
//! Randomness: one seed, one generator (SplitMix64, from mishards-common). SplitMix64's state after `n`
//! steps is `seed + n·γ`, so the `n`-th value of a stream is computed directly; each (site, rule, RPC) is
//! its own stream, its seed derived from the gateway's seed, and counts only the calls that rule saw. So
//! the decisions for one node's `SearchInFiles` depend on the seed, the rules and that node's own call
//! sequence — never on how calls to other nodes, or health probes, interleave with it.

mod book;
mod injector;
mod rules;

pub use book::{
    ArmedRule, FaultBook, FaultPlan, FaultReport, LOG_CAPACITY, LoggedFault, RuleReport,
};
pub use injector::{Applied, Decision, Failure, FaultInjector, NodeRole, Outcome, Site};
pub use mishards_common::rng::SplitMix64;
pub use rules::{
    ActorName, FaultKind, FaultRule, FaultScenario, GrpcCode, NodeSet, Target, rules_from_json,
    scenario_from_toml,
};

use mishards_proto::RPCS;
use xxhash_rust::xxh3::xxh3_64;

/// Streams of anything that is not a known RPC (the poller's polls, crash timers) share this index.
const OTHER_RPC: usize = RPCS.len();

fn rpc_index(rpc: &str) -> usize {
    mishards_proto::rpc_index(rpc).unwrap_or(OTHER_RPC)
}

/// Whether `rpc` answers a bare `Status` (else a message with the `Status` in field 1).
pub fn returns_bare_status(rpc: &str) -> bool {
    RPCS.iter().any(|(name, bare)| *name == rpc && *bare)
}

/// The RPC name of a gRPC request path (`/milvus.grpc.MilvusService/SearchInFiles` → `SearchInFiles`).
pub fn rpc_of_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A stable hash of names and rule contents, the keys of the random streams: xxh3 is the same in every
/// process, platform and version (std's hasher is not).
fn stable_hash(text: &str) -> u64 {
    xxh3_64(text.as_bytes())
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("fault rule {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("cannot read fault rules: {0}")]
    Parse(String),
    #[error("no fault rule with id {0}")]
    NotFound(u64),
    #[error("fault injection is unavailable: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod test_support {
    use std::time::Instant;

    use mishards_config::NodeAddr;

    use crate::{Decision, FaultBook, FaultInjector, FaultRule, NodeRole, Site};

    pub(crate) fn node(port: u16) -> NodeAddr {
        NodeAddr::loopback(port)
    }

    pub(crate) fn read_site(port: u16) -> Site {
        Site::Node {
            node: node(port),
            role: NodeRole::Read,
        }
    }

    pub(crate) fn book_with(seed: u64, rules: Vec<FaultRule>, at: Instant) -> FaultBook {
        let mut book = FaultBook::new(seed, at);
        book.add(rules, at).expect("valid rules");
        book
    }

    pub(crate) fn decisions(
        book: &FaultBook,
        site: Site,
        rpc: &str,
        at: Instant,
        n: usize,
    ) -> Vec<Decision> {
        let injector = FaultInjector::new(book.plan(), site, at, None);
        (0..n).map(|_| injector.decide(rpc, at)).collect()
    }
}
