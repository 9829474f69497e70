//! The seeded injector of one site: which rules hit it, and the decision for each of its calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mishards_config::NodeAddr;

use crate::{
    ActorName, ArmedRule, FaultKind, FaultPlan, NodeSet, OTHER_RPC, SplitMix64, Target, rpc_index,
    stable_hash,
};

/// A uniform draw in [0, 1) from 53 bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
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
            site_key: stable_hash(&site_name),
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
        let rpc_key = stable_hash(rpc);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultRule;
    use crate::test_support::{book_with, decisions, node, read_site};

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
}
