//! Fault injection rules and the deterministic injector that applies them (issue 6). Pure: no I/O and no
//! clock reads — callers pass `now` — so every decision can be replayed in a unit test.
//!
//! A rule names a target (nodes, the metadata poller, or a supervised actor), an optional RPC filter, a
//! kind of fault, a probability and a time window. Rules are armed in a [`FaultBook`] (one per gateway,
//! owned by the `Faults` actor), which publishes immutable [`FaultPlan`]s; each site that can fail (a
//! node link's channels, the poller, a crash timer) holds a [`FaultInjector`]: the plan's rules that
//! target it and its random streams.
//!
//! Randomness: one seed, one generator (SplitMix64, written here). SplitMix64's state after `n` steps is
//! `seed + n·γ`, so the `n`-th value of a stream is computed directly; each (site, rule, RPC) is its own
//! stream, its seed derived from the gateway's seed, and counts only the calls that rule saw. So the
//! decisions for one node's `SearchInFiles` depend on the seed, the rules and that node's own call
//! sequence — never on how calls to other nodes, or health probes, interleave with it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use mishards_config::NodeAddr;
use mishards_proto::{ErrorCode, RPCS};

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

/// Longest delay a rule may add: longer is a black hole, say so.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Shortest crash period: a supervised actor restarted hotter than this only measures the supervisor.
const MIN_CRASH_EVERY: Duration = Duration::from_millis(50);
/// Applied faults kept for reports; older ones are counted as dropped.
pub const LOG_CAPACITY: usize = 10_000;

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

/// Which nodes a node rule hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSet {
    /// Every node: the read nodes and the write node.
    All,
    /// Every read node.
    Read,
    /// The write node.
    Write,
    /// These nodes (`host:port`, as discovery names them).
    List(Vec<NodeAddr>),
}

/// A supervised actor a `crash` rule stops (its supervisor restarts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorName {
    Discovery,
    Poller,
    Routing,
    /// The node link of `host:port` (a read node or the write node).
    Link(NodeAddr),
}

impl std::fmt::Display for ActorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActorName::Discovery => f.write_str("discovery"),
            ActorName::Poller => f.write_str("poller"),
            ActorName::Routing => f.write_str("routing"),
            ActorName::Link(node) => write!(f, "link:{node}"),
        }
    }
}

/// `host:port` with the port required (rules must not guess a port).
fn parse_node(text: &str) -> Result<NodeAddr, String> {
    let node = NodeAddr::parse(text, 0)?;
    if node.port == 0 {
        return Err(format!("`{text}` has no port: name nodes as host:port"));
    }
    Ok(node)
}

impl std::str::FromStr for ActorName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "discovery" => Ok(ActorName::Discovery),
            "poller" => Ok(ActorName::Poller),
            "routing" => Ok(ActorName::Routing),
            other => match other.strip_prefix("link:") {
                Some(node) => parse_node(node).map(ActorName::Link),
                None => Err(format!(
                    "unknown actor `{other}`: use discovery, poller, routing or link:host:port"
                )),
            },
        }
    }
}

/// What a rule hits. In JSON/TOML: `"all"`, `"read"`, `"write"`, `"poller"`, `{"nodes": ["host:port"]}`
/// or `{"actor": "discovery" | "poller" | "routing" | "link:host:port"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Nodes(NodeSet),
    /// The metadata poller's reads of the database.
    Poller,
    Actor(ActorName),
}

const TARGET_FORMS: &str = "\"all\", \"read\", \"write\", \"poller\", {\"nodes\": [\"host:port\", …]} or {\"actor\": \"discovery|poller|routing|link:host:port\"}";

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Nodes(NodeSet::All) => s.serialize_str("all"),
            Target::Nodes(NodeSet::Read) => s.serialize_str("read"),
            Target::Nodes(NodeSet::Write) => s.serialize_str("write"),
            Target::Poller => s.serialize_str("poller"),
            Target::Nodes(NodeSet::List(nodes)) => {
                let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("nodes", &names)?;
                map.end()
            }
            Target::Actor(actor) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("actor", &actor.to_string())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a target: {TARGET_FORMS}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
                match v {
                    "all" => Ok(Target::Nodes(NodeSet::All)),
                    "read" => Ok(Target::Nodes(NodeSet::Read)),
                    "write" => Ok(Target::Nodes(NodeSet::Write)),
                    "poller" => Ok(Target::Poller),
                    other => Err(E::custom(format!(
                        "unknown target `{other}`: use {TARGET_FORMS}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Target, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!(
                        "empty target: use {TARGET_FORMS}"
                    )));
                };
                let target = match key.as_str() {
                    "nodes" => {
                        let names: Vec<String> = map.next_value()?;
                        if names.is_empty() {
                            return Err(de::Error::custom("`nodes` lists no node"));
                        }
                        let nodes = names
                            .iter()
                            .map(|n| parse_node(n))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(de::Error::custom)?;
                        Target::Nodes(NodeSet::List(nodes))
                    }
                    "actor" => {
                        let name: String = map.next_value()?;
                        Target::Actor(name.parse().map_err(de::Error::custom)?)
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown target key `{other}`: use {TARGET_FORMS}"
                        )));
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a target has one key; `{extra}` is one too many"
                    )));
                }
                Ok(target)
            }
        }
        d.deserialize_any(TargetVisitor)
    }
}

/// A gRPC status code by its name in the gRPC spec, lower case (`unavailable`, `deadline_exceeded`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCode(pub tonic::Code);

const GRPC_CODES: [(&str, tonic::Code); 17] = [
    ("ok", tonic::Code::Ok),
    ("cancelled", tonic::Code::Cancelled),
    ("unknown", tonic::Code::Unknown),
    ("invalid_argument", tonic::Code::InvalidArgument),
    ("deadline_exceeded", tonic::Code::DeadlineExceeded),
    ("not_found", tonic::Code::NotFound),
    ("already_exists", tonic::Code::AlreadyExists),
    ("permission_denied", tonic::Code::PermissionDenied),
    ("resource_exhausted", tonic::Code::ResourceExhausted),
    ("failed_precondition", tonic::Code::FailedPrecondition),
    ("aborted", tonic::Code::Aborted),
    ("out_of_range", tonic::Code::OutOfRange),
    ("unimplemented", tonic::Code::Unimplemented),
    ("internal", tonic::Code::Internal),
    ("unavailable", tonic::Code::Unavailable),
    ("data_loss", tonic::Code::DataLoss),
    ("unauthenticated", tonic::Code::Unauthenticated),
];

impl GrpcCode {
    pub fn name(self) -> &'static str {
        GRPC_CODES
            .iter()
            .find(|(_, c)| *c == self.0)
            .map_or("unknown", |(n, _)| n)
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        GRPC_CODES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, c)| GrpcCode(*c))
            .ok_or_else(|| {
                let names: Vec<&str> = GRPC_CODES.iter().skip(1).map(|(n, _)| *n).collect();
                de::Error::custom(format!(
                    "unknown gRPC code `{name}`: use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Durations as whole milliseconds in JSON and TOML.
mod ms {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_ms {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::ms::serialize(d, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

/// What goes wrong. In JSON/TOML an object with `type` (snake case) and the kind's fields; durations
/// in milliseconds (`…_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// The call is held `fixed` + a uniform draw in `[0, jitter)` before it is sent.
    Delay {
        #[serde(rename = "fixed_ms", with = "ms", default)]
        fixed: Duration,
        #[serde(rename = "jitter_ms", with = "ms", default)]
        jitter: Duration,
    },
    /// The call fails without reaching the node: with a Milvus status (`milvus_code`: a well-formed
    /// reply whose status carries that code) or a gRPC status (`grpc_code`). Exactly one of the two.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milvus_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grpc_code: Option<GrpcCode>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    /// The call never answers: it hangs until the caller's deadline.
    BlackHole,
    /// The node is unreachable: the call fails at once with gRPC `unavailable`.
    Partition,
    /// Alternating reachability from the window's start: `up`, then partitioned for `down`, and again.
    Flap {
        #[serde(rename = "up_ms", with = "ms")]
        up: Duration,
        #[serde(rename = "down_ms", with = "ms")]
        down: Duration,
    },
    /// A node that just became reachable answers slowly: `extra` delay, decaying linearly to nothing
    /// over `over`, from the latest of the rule's start, the link's start and the node's last
    /// partition / flap-down / black-hole.
    SlowStart {
        #[serde(rename = "extra_ms", with = "ms")]
        extra: Duration,
        #[serde(rename = "over_ms", with = "ms")]
        over: Duration,
    },
    /// The poller's database reads fail as if the database were unreachable.
    MetaOutage,
    /// The poller's snapshot is frozen: no new epochs, and not marked stale.
    StaleSnapshot,
    /// The actor is stopped (its supervisor restarts it) when the window opens, and every `every`
    /// after that while the window lasts.
    Crash {
        #[serde(
            rename = "every_ms",
            with = "opt_ms",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        every: Option<Duration>,
    },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Delay { .. } => "delay",
            FaultKind::Error { .. } => "error",
            FaultKind::BlackHole => "black_hole",
            FaultKind::Partition => "partition",
            FaultKind::Flap { .. } => "flap",
            FaultKind::SlowStart { .. } => "slow_start",
            FaultKind::MetaOutage => "meta_outage",
            FaultKind::StaleSnapshot => "stale_snapshot",
            FaultKind::Crash { .. } => "crash",
        }
    }

    fn for_nodes(&self) -> bool {
        matches!(
            self,
            FaultKind::Delay { .. }
                | FaultKind::Error { .. }
                | FaultKind::BlackHole
                | FaultKind::Partition
                | FaultKind::Flap { .. }
                | FaultKind::SlowStart { .. }
        )
    }
}

fn one() -> f64 {
    1.0
}

fn is_one(p: &f64) -> bool {
    *p == 1.0
}

fn is_zero(d: &Duration) -> bool {
    d.is_zero()
}

/// One fault rule. JSON example:
/// `{"target": {"nodes": ["127.0.0.1:19531"]}, "rpcs": ["SearchInFiles"], "kind": {"type": "delay",
/// "fixed_ms": 200, "jitter_ms": 50}, "probability": 0.5, "start_after_ms": 1000, "duration_ms": 5000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Given by the gateway when the rule is added; ignored in a request.
    #[serde(default)]
    pub id: u64,
    pub target: Target,
    /// RPC method names (`SearchInFiles`, `ReloadSegments`, `Cmd` — the health probes…); none: all.
    /// Node targets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpcs: Option<Vec<String>>,
    pub kind: FaultKind,
    /// Chance that a call in the window is hit, 0 to 1 (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub probability: f64,
    /// The window opens this long after the rule is added.
    #[serde(
        default,
        rename = "start_after_ms",
        with = "ms",
        skip_serializing_if = "is_zero"
    )]
    pub start_after: Duration,
    /// How long the window stays open; none: until the rule is removed.
    #[serde(
        default,
        rename = "duration_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
}

impl FaultRule {
    /// A rule with probability 1, open from now until removed.
    pub fn new(target: Target, kind: FaultKind) -> FaultRule {
        FaultRule {
            id: 0,
            target,
            rpcs: None,
            kind,
            probability: 1.0,
            start_after: Duration::ZERO,
            duration: None,
        }
    }

    pub fn on_rpcs(mut self, rpcs: &[&str]) -> FaultRule {
        self.rpcs = Some(rpcs.iter().map(|r| r.to_string()).collect());
        self
    }

    pub fn with_probability(mut self, p: f64) -> FaultRule {
        self.probability = p;
        self
    }

    pub fn window(mut self, start_after: Duration, duration: Option<Duration>) -> FaultRule {
        self.start_after = start_after;
        self.duration = duration;
        self
    }

    /// Why the rule cannot be armed, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.probability.is_finite() && (0.0..=1.0).contains(&self.probability)) {
            return Err(format!(
                "probability {} is not within 0 and 1",
                self.probability
            ));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err("duration_ms 0 closes the window at once: give more than 0, or leave it out for no end".into());
        }
        let kind = self.kind.name();
        match (&self.target, &self.kind) {
            (Target::Nodes(_), k) if k.for_nodes() => {}
            (Target::Nodes(_), _) => {
                return Err(format!(
                    "a `{kind}` fault does not apply to nodes: target \"poller\" (meta_outage, stale_snapshot) or {{\"actor\": …}} (crash)"
                ));
            }
            (Target::Poller, FaultKind::MetaOutage | FaultKind::StaleSnapshot) => {}
            (Target::Poller, _) => {
                return Err(format!(
                    "the poller takes meta_outage or stale_snapshot, not `{kind}` (crash it with {{\"actor\": \"poller\"}})"
                ));
            }
            (Target::Actor(_), FaultKind::Crash { .. }) => {}
            (Target::Actor(_), _) => {
                return Err(format!("an actor target takes `crash`, not `{kind}`"));
            }
        }
        if let Some(rpcs) = &self.rpcs {
            if !matches!(self.target, Target::Nodes(_)) {
                return Err("`rpcs` filters calls to nodes; this target makes none".into());
            }
            if rpcs.is_empty() {
                return Err("`rpcs` is empty: leave it out to hit every RPC".into());
            }
            for rpc in rpcs {
                if rpc_index(rpc) == OTHER_RPC {
                    let hint = RPCS
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(rpc))
                        .map(|(n, _)| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    return Err(format!("unknown RPC `{rpc}`{hint}"));
                }
            }
        }
        match &self.kind {
            FaultKind::Delay { fixed, jitter } => {
                if fixed.is_zero() && jitter.is_zero() {
                    return Err("a delay needs fixed_ms or jitter_ms above 0".into());
                }
                if *fixed + *jitter > MAX_DELAY {
                    return Err(format!(
                        "a delay of up to {:?} is more than {MAX_DELAY:?}: use black_hole",
                        *fixed + *jitter
                    ));
                }
            }
            FaultKind::Error {
                milvus_code,
                grpc_code,
                ..
            } => match (milvus_code, grpc_code) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err("an error takes exactly one of milvus_code and grpc_code".into());
                }
                (Some(code), None) => match ErrorCode::try_from(*code) {
                    Ok(ErrorCode::Success) => {
                        return Err("milvus_code 0 is success, not an error".into());
                    }
                    Ok(_) => {}
                    Err(_) => return Err(format!("milvus_code {code} is not a Milvus error code")),
                },
                (None, Some(code)) => {
                    if code.0 == tonic::Code::Ok {
                        return Err("grpc_code `ok` is not an error".into());
                    }
                }
            },
            FaultKind::Flap { up, down } if up.is_zero() || down.is_zero() => {
                return Err("a flap needs up_ms and down_ms above 0".into());
            }
            FaultKind::SlowStart { extra, over } => {
                if extra.is_zero() || over.is_zero() {
                    return Err("a slow start needs extra_ms and over_ms above 0".into());
                }
                if *extra > MAX_DELAY {
                    return Err(format!("extra_ms is more than {MAX_DELAY:?}"));
                }
            }
            FaultKind::Crash { every: Some(every) } if *every < MIN_CRASH_EVERY => {
                return Err(format!(
                    "every_ms {} is below {} ms",
                    every.as_millis(),
                    MIN_CRASH_EVERY.as_millis()
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn hits_rpc(&self, rpc: &str) -> bool {
        self.rpcs
            .as_ref()
            .is_none_or(|rpcs| rpcs.iter().any(|r| r == rpc))
    }
}

/// Rules from JSON: one rule object or an array of them. Errors name the rule and the field.
pub fn rules_from_json(text: &str) -> Result<Vec<FaultRule>, FaultError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| FaultError::Parse(e.to_string()))?;
    // Parsed per rule (not as an untagged enum) so a mistake is reported by name, not as "no variant".
    let items = match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value::<FaultRule>(item).map_err(|e| FaultError::Invalid {
                index: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A scenario file: `seed` (optional) and `[[fault]]` tables, each one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultScenario {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultRule>,
}

/// A scenario from TOML, every rule checked.
pub fn scenario_from_toml(text: &str) -> Result<FaultScenario, FaultError> {
    let scenario: FaultScenario =
        toml::from_str(text).map_err(|e| FaultError::Parse(e.to_string()))?;
    for (i, rule) in scenario.faults.iter().enumerate() {
        rule.validate().map_err(|reason| FaultError::Invalid {
            index: i + 1,
            reason,
        })?;
    }
    Ok(scenario)
}

pub use mishards_common::rng::SplitMix64;

/// FNV-1a: a stable hash of names (the same in every process and Rust version).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform draw in [0, 1) from 53 bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A rule in a plan: when it was armed and the key of its random streams.
#[derive(Debug, Clone)]
pub struct ArmedRule {
    pub rule: FaultRule,
    pub armed_at: Instant,
    /// Derived from the rule's content (not its id), so re-adding the same rules replays the same draws.
    key: u64,
}

impl ArmedRule {
    /// How long the window has been open at `now`; `None` when it is not open.
    fn open_for(&self, now: Instant) -> Option<Duration> {
        let opens = self.armed_at + self.rule.start_after;
        let open_for = now.checked_duration_since(opens)?;
        match self.rule.duration {
            Some(d) if open_for >= d => None,
            _ => Some(open_for),
        }
    }

    fn window_start(&self) -> Instant {
        self.armed_at + self.rule.start_after
    }

    pub fn opens_at(&self) -> Instant {
        self.window_start()
    }

    pub fn closes_at(&self) -> Option<Instant> {
        self.rule.duration.map(|d| self.window_start() + d)
    }
}

/// The rules in force: immutable, shared by every site.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Increases with every change of the rules.
    pub generation: u64,
    pub rules: Vec<ArmedRule>,
}

/// Where a decision is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// Calls from the gateway to a node.
    Node {
        node: NodeAddr,
        role: NodeRole,
    },
    Poller,
    Actor(ActorName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    Read,
    Write,
}

impl Site {
    fn name(&self) -> String {
        match self {
            Site::Node { node, .. } => node.to_string(),
            Site::Poller => "poller".into(),
            Site::Actor(actor) => format!("actor:{actor}"),
        }
    }

    fn is_hit_by(&self, target: &Target) -> bool {
        match (self, target) {
            (Site::Node { node, role }, Target::Nodes(set)) => match set {
                NodeSet::All => true,
                NodeSet::Read => *role == NodeRole::Read,
                NodeSet::Write => *role == NodeRole::Write,
                NodeSet::List(nodes) => nodes.contains(node),
            },
            (Site::Poller, Target::Poller) => true,
            (Site::Actor(a), Target::Actor(b)) => a == b,
            _ => false,
        }
    }
}

/// Why an injected call fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A well-formed reply whose Milvus status carries `code`.
    Milvus { code: i32, reason: String },
    /// A gRPC error status.
    Grpc { code: tonic::Code, message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(Failure),
    /// Never answer.
    BlackHole,
    /// The poller's read fails as if the database were unreachable.
    MetaOutage,
    /// The poller keeps its snapshot.
    Freeze,
    /// Stop the actor.
    Crash,
}

/// One fault that took effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub at: Instant,
    pub site: String,
    pub rpc: Option<String>,
    pub rule: u64,
    pub kind: &'static str,
    /// Which call of this (site, rule, RPC) stream it was, from 0.
    pub call: u64,
    pub detail: String,
}

/// What to do with one call: wait `delay`, then the outcome; `applied` lists the faults, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub outcome: Outcome,
    pub applied: Vec<Applied>,
}

impl Decision {
    pub fn pass() -> Decision {
        Decision {
            delay: Duration::ZERO,
            outcome: Outcome::Pass,
            applied: Vec::new(),
        }
    }

    /// Nothing to do: the call goes through untouched.
    pub fn is_pass(&self) -> bool {
        self.delay.is_zero() && self.outcome == Outcome::Pass
    }
}

/// Time stamps kept in an atomic: 1 + nanoseconds after a base instant, `NEVER` for none (so
/// `fetch_max` keeps the latest).
const NEVER: u64 = 0;

/// One site's view of a plan: the rules that target it and their random streams. Shared by the
/// site's callers (a node link's pooled channels, on any thread): the stream counters are atomics, so
/// deciding takes no lock.
#[derive(Debug)]
pub struct FaultInjector {
    plan: Arc<FaultPlan>,
    site: Site,
    site_name: String,
    site_key: u64,
    /// Indices into `plan.rules` of the rules that hit this site.
    rules: Vec<usize>,
    /// `calls[i][rpc]`: calls rule `rules[i]` has seen for that RPC while its window was open.
    calls: Vec<Box<[AtomicU64]>>,
    /// When the site started (a link that just started is a node that just became reachable).
    started: Instant,
    /// When the site last got an unreachable outcome, as nanoseconds after `started`.
    last_unreachable: AtomicU64,
}

impl FaultInjector {
    /// The injector for `site` under `plan`, created at `now`. `previous` (the site's injector under
    /// the plan before) hands over its stream positions for rules that stay, and its start time.
    pub fn new(
        plan: Arc<FaultPlan>,
        site: Site,
        now: Instant,
        previous: Option<&FaultInjector>,
    ) -> FaultInjector {
        let rules: Vec<usize> = plan
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| site.is_hit_by(&r.rule.target))
            .map(|(i, _)| i)
            .collect();
        let calls = rules
            .iter()
            .map(|&i| {
                let carried = previous.and_then(|p| {
                    p.rules
                        .iter()
                        .position(|&j| p.plan.rules[j].key == plan.rules[i].key)
                        .map(|slot| &p.calls[slot])
                });
                (0..=OTHER_RPC)
                    .map(|rpc| {
                        AtomicU64::new(carried.map_or(0, |c| c[rpc].load(Ordering::Relaxed)))
                    })
                    .collect()
            })
            .collect();
        let started = previous.map_or(now, |p| p.started);
        let last_unreachable =
            previous.map_or(NEVER, |p| p.last_unreachable.load(Ordering::Relaxed));
        let site_name = site.name();
        FaultInjector {
            site_key: fnv(&site_name),
            site_name,
            site,
            rules,
            calls,
            plan,
            started,
            last_unreachable: AtomicU64::new(last_unreachable),
        }
    }

    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    /// No rule targets this site: every call passes.
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision for one call of `rpc` at `now`. Every rule whose window is open and whose filter
    /// takes `rpc` draws from its stream; delays add up, and the first failing outcome (in rule order)
    /// wins.
    pub fn decide(&self, rpc: &str, now: Instant) -> Decision {
        self.decide_among(rpc, now, None)
    }

    /// As `decide`, with rule `id` alone (a crash timer asks for its own rule).
    pub fn decide_rule(&self, id: u64, rpc: &str, now: Instant) -> Decision {
        self.decide_among(rpc, now, Some(id))
    }

    fn decide_among(&self, rpc: &str, now: Instant, only: Option<u64>) -> Decision {
        let mut decision = Decision::pass();
        if self.rules.is_empty() {
            return decision;
        }
        let rpc_slot = rpc_index(rpc);
        let rpc_key = fnv(rpc);
        let mut slow_start: Option<(&ArmedRule, u64, Duration, Duration, u64)> = None;
        for (slot, &i) in self.rules.iter().enumerate() {
            let armed = &self.plan.rules[i];
            let rule = &armed.rule;
            if !rule.hits_rpc(rpc) || only.is_some_and(|id| id != rule.id) {
                continue;
            }
            let Some(open_for) = armed.open_for(now) else {
                continue;
            };
            let call = self.calls[slot][rpc_slot].fetch_add(1, Ordering::Relaxed);
            let stream = self.plan.seed
                ^ SplitMix64::mix(self.site_key ^ SplitMix64::mix(armed.key ^ rpc_key));
            let chance = SplitMix64::nth(stream, 2 * call);
            if unit(chance) >= rule.probability {
                continue;
            }
            let spread = SplitMix64::nth(stream, 2 * call + 1);
            let terminal = !matches!(decision.outcome, Outcome::Pass);
            let mut apply = |detail: String, outcome: Option<Outcome>, delay: Duration| {
                if let Some(outcome) = outcome {
                    if terminal {
                        return;
                    }
                    decision.outcome = outcome;
                }
                decision.delay += delay;
                decision.applied.push(Applied {
                    at: now,
                    site: self.site_name.clone(),
                    rpc: matches!(self.site, Site::Node { .. }).then(|| rpc.to_string()),
                    rule: rule.id,
                    kind: rule.kind.name(),
                    call,
                    detail,
                });
            };
            let unreachable = |why: &str| {
                Outcome::Fail(Failure::Grpc {
                    code: tonic::Code::Unavailable,
                    message: format!("injected fault (rule {}): {why}", rule.id),
                })
            };
            match &rule.kind {
                FaultKind::Delay { fixed, jitter } => {
                    let extra = scale(*jitter, spread);
                    let delay = *fixed + extra;
                    apply(format!("delay {}us", delay.as_micros()), None, delay);
                }
                FaultKind::Error {
                    milvus_code,
                    grpc_code,
                    message,
                } => {
                    let text = if message.is_empty() {
                        format!("injected fault (rule {})", rule.id)
                    } else {
                        format!("injected fault (rule {}): {message}", rule.id)
                    };
                    let (detail, failure) = match (milvus_code, grpc_code) {
                        (Some(code), _) => (
                            format!("milvus {code}"),
                            Failure::Milvus {
                                code: *code,
                                reason: text,
                            },
                        ),
                        (None, Some(code)) => (
                            format!("grpc {}", code.name()),
                            Failure::Grpc {
                                code: code.0,
                                message: text,
                            },
                        ),
                        // Validation rules this out; an unset code still fails the call.
                        (None, None) => (
                            "grpc internal".into(),
                            Failure::Grpc {
                                code: tonic::Code::Internal,
                                message: text,
                            },
                        ),
                    };
                    apply(detail, Some(Outcome::Fail(failure)), Duration::ZERO);
                }
                FaultKind::BlackHole => {
                    apply(
                        "black hole".into(),
                        Some(Outcome::BlackHole),
                        Duration::ZERO,
                    );
                }
                FaultKind::Partition => {
                    apply(
                        "partition".into(),
                        Some(unreachable(&format!("{} is partitioned", self.site_name))),
                        Duration::ZERO,
                    );
                }
                FaultKind::Flap { up, down } => {
                    let period = (*up + *down).as_nanos();
                    let phase = open_for.as_nanos() % period.max(1);
                    if phase >= up.as_nanos() {
                        apply(
                            "flap down".into(),
                            Some(unreachable(&format!(
                                "{} is flapping (down)",
                                self.site_name
                            ))),
                            Duration::ZERO,
                        );
                    }
                }
                FaultKind::SlowStart { extra, over } => {
                    // Applied after the loop: it depends on whether this call is unreachable.
                    if slow_start.is_none() {
                        slow_start = Some((armed, call, *extra, *over, rule.id));
                    }
                }
                FaultKind::MetaOutage => {
                    apply(
                        "meta outage".into(),
                        Some(Outcome::MetaOutage),
                        Duration::ZERO,
                    );
                }
                FaultKind::StaleSnapshot => {
                    apply(
                        "stale snapshot".into(),
                        Some(Outcome::Freeze),
                        Duration::ZERO,
                    );
                }
                FaultKind::Crash { .. } => {
                    apply("crash".into(), Some(Outcome::Crash), Duration::ZERO);
                }
            }
        }
        let unreachable_now = matches!(
            decision.outcome,
            Outcome::BlackHole
                | Outcome::Fail(Failure::Grpc {
                    code: tonic::Code::Unavailable,
                    ..
                })
        );
        if unreachable_now {
            let at = now.saturating_duration_since(self.started).as_nanos();
            self.last_unreachable.fetch_max(
                at.min(u128::from(u64::MAX - 1)) as u64 + 1,
                Ordering::Relaxed,
            );
        } else if let Some((armed, call, extra, over, id)) = slow_start {
            let last = self.last_unreachable.load(Ordering::Relaxed);
            let mut since = armed.window_start().max(self.started);
            if last != NEVER {
                since = since.max(self.started + Duration::from_nanos(last - 1));
            }
            let elapsed = now.saturating_duration_since(since);
            if elapsed < over {
                let left = over - elapsed;
                // extra × left / over, in integers so every platform agrees.
                let delay = Duration::from_nanos(
                    (extra.as_nanos() * left.as_nanos() / over.as_nanos()).min(u128::from(u64::MAX))
                        as u64,
                );
                decision.delay += delay;
                decision.applied.push(Applied {
                    at: now,
                    site: self.site_name.clone(),
                    rpc: Some(rpc.to_string()),
                    rule: id,
                    kind: "slow_start",
                    call,
                    detail: format!("slow start {}us", delay.as_micros()),
                });
            }
        }
        decision
    }
}

/// `d` × the top 53 bits of `x` / 2^53: a uniform draw in [0, d), in integers.
fn scale(d: Duration, x: u64) -> Duration {
    let nanos = (d.as_nanos() * u128::from(x >> 11)) >> 53;
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

/// One applied fault as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedFault {
    /// Milliseconds since fault injection started.
    pub at_ms: u64,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<String>,
    pub rule: u64,
    pub kind: String,
    pub call: u64,
    pub detail: String,
}

impl LoggedFault {
    /// What two runs with the same seed, rules and calls agree on (not the time): sort by it to
    /// compare logs, since calls to different sites interleave differently from run to run.
    pub fn replay_key(&self) -> (String, Option<String>, u64, u64, String, String) {
        (
            self.site.clone(),
            self.rpc.clone(),
            self.rule,
            self.call,
            self.kind.clone(),
            self.detail.clone(),
        )
    }
}

/// A rule as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    #[serde(flatten)]
    pub rule: FaultRule,
    /// Milliseconds since fault injection started when the rule was added.
    pub armed_ms: u64,
    /// Whether the window is open now.
    pub active: bool,
    /// The window closed: the rule does nothing any more (it stays listed until removed).
    pub expired: bool,
}

/// The rules, the seed and the applied faults, newest last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub seed: u64,
    pub rules: Vec<RuleReport>,
    pub log: Vec<LoggedFault>,
    /// Applied faults no longer kept (the log keeps the last `LOG_CAPACITY`).
    pub log_dropped: u64,
}

impl FaultReport {
    /// The log sorted by `LoggedFault::replay_key`, for comparing runs.
    pub fn replay_sequence(&self) -> Vec<(String, Option<String>, u64, u64, String, String)> {
        let mut keys: Vec<_> = self.log.iter().map(LoggedFault::replay_key).collect();
        keys.sort();
        keys
    }
}

/// The gateway's rules and log (the `Faults` actor owns it): rules are added and removed here, and each
/// change makes a new `FaultPlan` for the sites.
#[derive(Debug)]
pub struct FaultBook {
    seed: u64,
    started: Instant,
    next_id: u64,
    generation: u64,
    rules: Vec<ArmedRule>,
    log: VecDeque<LoggedFault>,
    log_capacity: usize,
    dropped: u64,
}

impl FaultBook {
    pub fn new(seed: u64, now: Instant) -> FaultBook {
        FaultBook {
            seed,
            started: now,
            next_id: 1,
            generation: 0,
            rules: Vec::new(),
            log: VecDeque::new(),
            log_capacity: LOG_CAPACITY,
            dropped: 0,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Checks every rule, then arms them all at `now` (all or none); answers their ids.
    pub fn add(&mut self, rules: Vec<FaultRule>, now: Instant) -> Result<Vec<u64>, FaultError> {
        for (i, rule) in rules.iter().enumerate() {
            rule.validate().map_err(|reason| FaultError::Invalid {
                index: i + 1,
                reason,
            })?;
        }
        let mut ids = Vec::with_capacity(rules.len());
        for mut rule in rules {
            rule.id = self.next_id;
            self.next_id += 1;
            let content = fnv(&serde_json::to_string(&FaultRule {
                id: 0,
                ..rule.clone()
            })
            .unwrap_or_default());
            // Identical rules get distinct streams: their content key plus how many came before.
            let twins = self
                .rules
                .iter()
                .filter(|r| r.key & !0xFFFF == content & !0xFFFF)
                .count() as u64;
            ids.push(rule.id);
            self.rules.push(ArmedRule {
                rule,
                armed_at: now,
                key: (content & !0xFFFF) | (twins & 0xFFFF),
            });
        }
        self.generation += 1;
        Ok(ids)
    }

    pub fn remove(&mut self, id: u64) -> Result<(), FaultError> {
        let before = self.rules.len();
        self.rules.retain(|r| r.rule.id != id);
        if self.rules.len() == before {
            return Err(FaultError::NotFound(id));
        }
        self.generation += 1;
        Ok(())
    }

    /// Removes every rule (the log stays).
    pub fn clear(&mut self) {
        self.rules.clear();
        self.generation += 1;
    }

    pub fn rules(&self) -> &[ArmedRule] {
        &self.rules
    }

    pub fn rule(&self, id: u64) -> Option<&ArmedRule> {
        self.rules.iter().find(|r| r.rule.id == id)
    }

    pub fn plan(&self) -> Arc<FaultPlan> {
        Arc::new(FaultPlan {
            seed: self.seed,
            generation: self.generation,
            rules: self.rules.clone(),
        })
    }

    pub fn record(&mut self, applied: impl IntoIterator<Item = Applied>) {
        for a in applied {
            if self.log.len() >= self.log_capacity {
                self.log.pop_front();
                self.dropped += 1;
            }
            self.log.push_back(LoggedFault {
                at_ms: a.at.saturating_duration_since(self.started).as_millis() as u64,
                site: a.site,
                rpc: a.rpc,
                rule: a.rule,
                kind: a.kind.to_string(),
                call: a.call,
                detail: a.detail,
            });
        }
    }

    /// Forgets the applied faults (the rules stay).
    pub fn clear_log(&mut self) {
        self.log.clear();
        self.dropped = 0;
    }

    pub fn report(&self, now: Instant) -> FaultReport {
        FaultReport {
            seed: self.seed,
            rules: self
                .rules
                .iter()
                .map(|r| RuleReport {
                    rule: r.rule.clone(),
                    armed_ms: r
                        .armed_at
                        .saturating_duration_since(self.started)
                        .as_millis() as u64,
                    active: r.open_for(now).is_some(),
                    expired: r.closes_at().is_some_and(|end| now >= end),
                })
                .collect(),
            log: self.log.iter().cloned().collect(),
            log_dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::loopback(port)
    }

    fn read_site(port: u16) -> Site {
        Site::Node {
            node: node(port),
            role: NodeRole::Read,
        }
    }

    fn book_with(seed: u64, rules: Vec<FaultRule>, at: Instant) -> FaultBook {
        let mut book = FaultBook::new(seed, at);
        book.add(rules, at).expect("valid rules");
        book
    }

    fn decisions(book: &FaultBook, site: Site, rpc: &str, at: Instant, n: usize) -> Vec<Decision> {
        let injector = FaultInjector::new(book.plan(), site, at, None);
        (0..n).map(|_| injector.decide(rpc, at)).collect()
    }

    #[test]
    fn splitmix_nth_matches_stepping() {
        let mut g = SplitMix64(42);
        for n in 0..10 {
            assert_eq!(g.next_u64(), SplitMix64::nth(42, n));
        }
        // The published first value of SplitMix64 seeded 0.
        assert_eq!(SplitMix64(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn same_seed_and_calls_give_the_same_decisions() {
        let t = Instant::now();
        let rules = vec![
            FaultRule::new(
                Target::Nodes(NodeSet::Read),
                FaultKind::Delay {
                    fixed: Duration::from_millis(5),
                    jitter: Duration::from_millis(100),
                },
            )
            .with_probability(0.5),
            FaultRule::new(
                Target::Nodes(NodeSet::All),
                FaultKind::Error {
                    milvus_code: Some(1),
                    grpc_code: None,
                    message: String::new(),
                },
            )
            .on_rpcs(&["SearchInFiles"])
            .with_probability(0.3),
        ];
        let a = decisions(
            &book_with(7, rules.clone(), t),
            read_site(1),
            "SearchInFiles",
            t,
            200,
        );
        let b = decisions(
            &book_with(7, rules.clone(), t),
            read_site(1),
            "SearchInFiles",
            t,
            200,
        );
        assert_eq!(a, b);
        let hits = a.iter().filter(|d| !d.is_pass()).count();
        assert!((80..=180).contains(&hits), "{hits} of 200 hit");
        let c = decisions(
            &book_with(8, rules.clone(), t),
            read_site(1),
            "SearchInFiles",
            t,
            200,
        );
        assert_ne!(a, c, "another seed, another sequence");
        // Another node draws from its own stream.
        let d = decisions(
            &book_with(7, rules, t),
            read_site(2),
            "SearchInFiles",
            t,
            200,
        );
        assert_ne!(
            a.iter().map(|x| x.delay).collect::<Vec<_>>(),
            d.iter().map(|x| x.delay).collect::<Vec<_>>()
        );
    }

    #[test]
    fn interleaving_with_other_rpcs_and_nodes_does_not_change_a_stream() {
        let t = Instant::now();
        let rule = FaultRule::new(
            Target::Nodes(NodeSet::All),
            FaultKind::Delay {
                fixed: Duration::ZERO,
                jitter: Duration::from_millis(50),
            },
        )
        .with_probability(0.5);
        let book = book_with(3, vec![rule], t);
        let alone = FaultInjector::new(book.plan(), read_site(1), t, None);
        let mixed = FaultInjector::new(book.plan(), read_site(1), t, None);
        let other = FaultInjector::new(book.plan(), read_site(2), t, None);
        let mut plain = Vec::new();
        let mut interleaved = Vec::new();
        for i in 0..100 {
            plain.push(alone.decide("SearchInFiles", t));
            for _ in 0..(i % 3) {
                mixed.decide("Cmd", t);
                other.decide("SearchInFiles", t);
            }
            interleaved.push(mixed.decide("SearchInFiles", t));
        }
        assert_eq!(plain, interleaved);
    }

    #[test]
    fn probability_zero_never_and_one_always() {
        let t = Instant::now();
        let rule = |p| {
            FaultRule::new(Target::Nodes(NodeSet::All), FaultKind::Partition).with_probability(p)
        };
        let never = decisions(
            &book_with(1, vec![rule(0.0)], t),
            read_site(1),
            "Cmd",
            t,
            500,
        );
        assert!(never.iter().all(Decision::is_pass));
        let always = decisions(
            &book_with(1, vec![rule(1.0)], t),
            read_site(1),
            "Cmd",
            t,
            500,
        );
        assert!(always.iter().all(|d| matches!(
            &d.outcome,
            Outcome::Fail(Failure::Grpc {
                code: tonic::Code::Unavailable,
                ..
            })
        )));
        assert!(always.iter().all(|d| d.applied.len() == 1));
    }

    #[test]
    fn windows_open_and_close_on_the_given_clock() {
        let t = Instant::now();
        let rule = FaultRule::new(Target::Nodes(NodeSet::All), FaultKind::BlackHole)
            .window(Duration::from_secs(2), Some(Duration::from_secs(3)));
        let book = book_with(1, vec![rule], t);
        let injector = FaultInjector::new(book.plan(), read_site(1), t, None);
        let at = |s: u64| injector.decide("Cmd", t + Duration::from_millis(s));
        assert!(at(0).is_pass());
        assert!(at(1999).is_pass());
        assert_eq!(at(2000).outcome, Outcome::BlackHole);
        assert_eq!(at(4999).outcome, Outcome::BlackHole);
        assert!(at(5000).is_pass());
        let report = book.report(t + Duration::from_secs(6));
        assert!(report.rules[0].expired && !report.rules[0].active);
    }

    #[test]
    fn targets_and_rpc_filters() {
        let t = Instant::now();
        let book = book_with(
            1,
            vec![
                FaultRule::new(
                    Target::Nodes(NodeSet::List(vec![node(2)])),
                    FaultKind::Partition,
                )
                .on_rpcs(&["SearchInFiles"]),
                FaultRule::new(Target::Nodes(NodeSet::Write), FaultKind::BlackHole),
            ],
            t,
        );
        let site = |port, role| Site::Node {
            node: node(port),
            role,
        };
        let one = |s: Site, rpc: &str| FaultInjector::new(book.plan(), s, t, None).decide(rpc, t);
        assert!(one(site(1, NodeRole::Read), "SearchInFiles").is_pass());
        assert!(one(site(2, NodeRole::Read), "Cmd").is_pass());
        assert!(!one(site(2, NodeRole::Read), "SearchInFiles").is_pass());
        assert_eq!(
            one(site(3, NodeRole::Write), "Insert").outcome,
            Outcome::BlackHole
        );
        assert!(FaultInjector::new(book.plan(), Site::Poller, t, None).is_idle());
    }

    #[test]
    fn flapping_alternates_by_the_window_clock() {
        let t = Instant::now();
        let book = book_with(
            1,
            vec![FaultRule::new(
                Target::Nodes(NodeSet::All),
                FaultKind::Flap {
                    up: Duration::from_millis(100),
                    down: Duration::from_millis(50),
                },
            )],
            t,
        );
        let injector = FaultInjector::new(book.plan(), read_site(1), t, None);
        let down = |ms: u64| {
            !injector
                .decide("Cmd", t + Duration::from_millis(ms))
                .is_pass()
        };
        assert_eq!(
            [0, 99, 100, 149, 150, 249, 250, 299].map(down),
            [false, false, true, true, false, false, true, true]
        );
    }

    #[test]
    fn slow_start_decays_from_the_last_unreachable_call() {
        let t = Instant::now();
        let book = book_with(
            1,
            vec![
                FaultRule::new(Target::Nodes(NodeSet::All), FaultKind::Partition)
                    .window(Duration::ZERO, Some(Duration::from_secs(1))),
                FaultRule::new(
                    Target::Nodes(NodeSet::All),
                    FaultKind::SlowStart {
                        extra: Duration::from_millis(400),
                        over: Duration::from_secs(2),
                    },
                ),
            ],
            t,
        );
        let injector = FaultInjector::new(book.plan(), read_site(1), t, None);
        let at = |ms: u64| injector.decide("SearchInFiles", t + Duration::from_millis(ms));
        assert!(matches!(at(900).outcome, Outcome::Fail(_)));
        assert_eq!(
            at(900).delay,
            Duration::ZERO,
            "a refused call is not delayed"
        );
        assert_eq!(at(1400).delay, Duration::from_millis(300));
        assert_eq!(at(2400).delay, Duration::from_millis(100));
        assert!(at(2900).is_pass());
    }

    #[test]
    fn poller_and_crash_sites() {
        let t = Instant::now();
        let book = book_with(
            1,
            vec![
                FaultRule::new(Target::Poller, FaultKind::MetaOutage)
                    .window(Duration::ZERO, Some(Duration::from_secs(1))),
                FaultRule::new(Target::Poller, FaultKind::StaleSnapshot)
                    .window(Duration::from_secs(1), Some(Duration::from_secs(1))),
                FaultRule::new(
                    Target::Actor(ActorName::Routing),
                    FaultKind::Crash { every: None },
                ),
            ],
            t,
        );
        let poller = FaultInjector::new(book.plan(), Site::Poller, t, None);
        assert_eq!(poller.decide("poll", t).outcome, Outcome::MetaOutage);
        assert_eq!(
            poller
                .decide("poll", t + Duration::from_millis(1500))
                .outcome,
            Outcome::Freeze
        );
        assert!(poller.decide("poll", t + Duration::from_secs(3)).is_pass());
        let routing = FaultInjector::new(book.plan(), Site::Actor(ActorName::Routing), t, None);
        assert_eq!(routing.decide("crash", t).outcome, Outcome::Crash);
        let discovery = FaultInjector::new(book.plan(), Site::Actor(ActorName::Discovery), t, None);
        assert!(discovery.is_idle());
    }

    #[test]
    fn streams_carry_over_when_other_rules_change() {
        let t = Instant::now();
        let delay = FaultRule::new(
            Target::Nodes(NodeSet::All),
            FaultKind::Delay {
                fixed: Duration::ZERO,
                jitter: Duration::from_millis(100),
            },
        );
        let mut book = book_with(5, vec![delay.clone()], t);
        let first = FaultInjector::new(book.plan(), read_site(1), t, None);
        let straight: Vec<Duration> = {
            let fresh = FaultInjector::new(book.plan(), read_site(1), t, None);
            (0..20).map(|_| fresh.decide("Cmd", t).delay).collect()
        };
        let mut seen: Vec<Duration> = (0..10).map(|_| first.decide("Cmd", t).delay).collect();
        book.add(
            vec![FaultRule::new(Target::Poller, FaultKind::MetaOutage)],
            t,
        )
        .unwrap();
        let second = FaultInjector::new(book.plan(), read_site(1), t, Some(&first));
        seen.extend((0..10).map(|_| second.decide("Cmd", t).delay));
        assert_eq!(seen, straight);
        // The same rule added again (after clearing) replays the same draws.
        book.clear();
        book.add(vec![delay], t).unwrap();
        let again = FaultInjector::new(book.plan(), read_site(1), t, None);
        let replay: Vec<Duration> = (0..20).map(|_| again.decide("Cmd", t).delay).collect();
        assert_eq!(replay, straight);
    }

    #[test]
    fn the_log_is_bounded_and_sorted_for_replay() {
        let t = Instant::now();
        let mut book = book_with(
            1,
            vec![FaultRule::new(
                Target::Nodes(NodeSet::All),
                FaultKind::Partition,
            )],
            t,
        );
        book.log_capacity = 5;
        let injector = FaultInjector::new(book.plan(), read_site(1), t, None);
        for _ in 0..8 {
            let d = injector.decide("Cmd", t);
            book.record(d.applied);
        }
        let report = book.report(t);
        assert_eq!((report.log.len(), report.log_dropped), (5, 3));
        assert_eq!(report.log[0].call, 3);
        assert_eq!(report.replay_sequence()[4].3, 7);
    }

    #[test]
    fn rules_read_from_json_and_toml() {
        let rules = rules_from_json(
            r#"[{"target": {"nodes": ["127.0.0.1:19531"]}, "rpcs": ["SearchInFiles"],
                 "kind": {"type": "delay", "fixed_ms": 200, "jitter_ms": 50},
                 "probability": 0.5, "start_after_ms": 1000, "duration_ms": 5000},
                {"target": "poller", "kind": {"type": "meta_outage"}},
                {"target": {"actor": "link:127.0.0.1:19531"}, "kind": {"type": "crash", "every_ms": 500}},
                {"target": "write", "kind": {"type": "error", "grpc_code": "unavailable"}}]"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[0].kind,
            FaultKind::Delay {
                fixed: Duration::from_millis(200),
                jitter: Duration::from_millis(50)
            }
        );
        assert_eq!(
            rules[0].target,
            Target::Nodes(NodeSet::List(vec![node(19531)]))
        );
        assert_eq!(rules[0].duration, Some(Duration::from_secs(5)));
        assert_eq!(rules[2].target, Target::Actor(ActorName::Link(node(19531))));
        // Round trip.
        let text = serde_json::to_string(&rules).unwrap();
        assert_eq!(rules_from_json(&text).unwrap(), rules);
        // One object is a list of one.
        let one = rules_from_json(r#"{"target": "read", "kind": {"type": "partition"}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].probability, 1.0);

        let scenario = scenario_from_toml(
            r#"
            seed = 42
            [[fault]]
            target = "read"
            rpcs = ["SearchInFiles"]
            kind = { type = "error", milvus_code = 1, message = "disk on fire" }
            probability = 0.1
            [[fault]]
            target = { actor = "routing" }
            kind = { type = "crash" }
            start_after_ms = 2000
            "#,
        )
        .unwrap();
        assert_eq!(scenario.seed, Some(42));
        assert_eq!(scenario.faults.len(), 2);
        assert_eq!(scenario.faults[1].start_after, Duration::from_secs(2));
        let text = toml::to_string(&scenario).unwrap();
        assert_eq!(scenario_from_toml(&text).unwrap(), scenario);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |json: &str| {
            let rules = match rules_from_json(json) {
                Ok(rules) => rules,
                Err(e) => return e.to_string(),
            };
            let mut book = FaultBook::new(1, Instant::now());
            book.add(rules, Instant::now()).unwrap_err().to_string()
        };
        for (json, says) in [
            (
                r#"{"target": "reed", "kind": {"type": "partition"}}"#,
                "unknown target `reed`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "explode"}}"#,
                "unknown variant `explode`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "partition"}, "probabilty": 1}"#,
                "unknown field `probabilty`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "delay", "fixed_ms": 1, "jiter_ms": 1}}"#,
                "unknown field `jiter_ms`",
            ),
            (
                r#"{"target": {"nodes": ["h"]}, "kind": {"type": "partition"}}"#,
                "has no port",
            ),
            (
                r#"{"target": {"actor": "scatter"}, "kind": {"type": "crash"}}"#,
                "unknown actor `scatter`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "partition"}, "probability": 1.5}"#,
                "probability 1.5",
            ),
            (
                r#"{"target": "read", "rpcs": ["searchinfiles"], "kind": {"type": "partition"}}"#,
                "did you mean `SearchInFiles`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "error"}}"#,
                "exactly one of milvus_code and grpc_code",
            ),
            (
                r#"{"target": "read", "kind": {"type": "error", "milvus_code": 999}}"#,
                "not a Milvus error code",
            ),
            (
                r#"{"target": "read", "kind": {"type": "error", "grpc_code": "nope"}}"#,
                "unknown gRPC code `nope`",
            ),
            (
                r#"{"target": "read", "kind": {"type": "crash"}}"#,
                "does not apply to nodes",
            ),
            (
                r#"{"target": "poller", "kind": {"type": "partition"}}"#,
                "the poller takes",
            ),
            (
                r#"{"target": {"actor": "routing"}, "kind": {"type": "crash", "every_ms": 1}}"#,
                "below 50 ms",
            ),
            (
                r#"{"target": "read", "kind": {"type": "flap", "up_ms": 0, "down_ms": 5}}"#,
                "up_ms and down_ms",
            ),
            (
                r#"[{"target": "read", "kind": {"type": "partition"}}, {"target": "read"}]"#,
                "fault rule 2",
            ),
        ] {
            let got = err(json);
            assert!(got.contains(says), "{json}: {got}");
        }
    }
}
