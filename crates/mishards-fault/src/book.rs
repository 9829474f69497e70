//! The gateway's book of fault rules: arming and removing them, the plans it publishes to the sites,
//! and the log of the faults applied.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rules::validate_all;
use crate::{Applied, FaultError, FaultRule, stable_hash};

/// Applied faults kept for reports; older ones are counted as dropped.
pub const LOG_CAPACITY: usize = 10_000;

/// A rule in a plan: when it was armed and the key of its random streams.
#[derive(Debug, Clone)]
pub struct ArmedRule {
    pub rule: FaultRule,
    pub armed_at: Instant,
    /// Derived from the rule's content (not its id), so re-adding the same rules replays the same draws.
    pub(crate) key: u64,
}

impl ArmedRule {
    /// How long the window has been open at `now`; `None` when it is not open.
    pub(crate) fn open_for(&self, now: Instant) -> Option<Duration> {
        let opens = self.armed_at + self.rule.start_after;
        let open_for = now.checked_duration_since(opens)?;
        match self.rule.duration {
            Some(d) if open_for >= d => None,
            _ => Some(open_for),
        }
    }

    pub(crate) fn window_start(&self) -> Instant {
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
        validate_all(&rules)?;
        let mut ids = Vec::with_capacity(rules.len());
        for mut rule in rules {
            rule.id = self.next_id;
            self.next_id += 1;
            let content = stable_hash(
                &serde_json::to_string(&FaultRule {
                    id: 0,
                    ..rule.clone()
                })
                .unwrap_or_default(),
            );
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
    use crate::test_support::{book_with, read_site};
    use crate::{FaultInjector, FaultKind, NodeSet, Target};

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
}
