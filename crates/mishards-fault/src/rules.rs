//! Fault rules: what they target and do, how they read from JSON and TOML, and their checks.

use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use mishards_config::NodeAddr;
use mishards_proto::{ErrorCode, RPCS};

use crate::{FaultError, OTHER_RPC, rpc_index};

/// Longest delay a rule may add: longer is a black hole, say so.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Shortest crash period: a supervised actor restarted hotter than this only measures the supervisor.
const MIN_CRASH_EVERY: Duration = Duration::from_millis(50);

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

    pub(crate) fn hits_rpc(&self, rpc: &str) -> bool {
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
    validate_all(&scenario.faults)?;
    Ok(scenario)
}

/// Checks every rule; the first mistake is named with its rule's place in the list (from 1).
pub(crate) fn validate_all(rules: &[FaultRule]) -> Result<(), FaultError> {
    for (i, rule) in rules.iter().enumerate() {
        rule.validate().map_err(|reason| FaultError::Invalid {
            index: i + 1,
            reason,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::FaultBook;
    use crate::test_support::node;

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
