//! The scenario's steps as the run applies them: faults (a scenario's rule made the gateway's), kills,
//! restarts and membership changes, and the timeline of which read nodes could answer, which the
//! invariants are judged by.

use std::net::SocketAddr;
use std::time::Duration;

use mishards_fault::{FaultKind, FaultRule};

use super::ChaosError;
use super::check::Window;
use super::scenario::Action;
use crate::demo::EmbeddedCluster;

/// Applies one step; what it did, for the report.
pub(super) async fn apply(
    action: &Action,
    cluster: &mut EmbeddedCluster,
    faults: &mishards_gateway::injection::FaultHandle,
    timeline: &mut Timeline,
    at: Duration,
    wipe_wal: bool,
) -> Result<String, ChaosError> {
    let failed = |e: crate::demo::EmbeddedError| ChaosError::Run(e.to_string());
    Ok(match action {
        Action::Fault { rule } => {
            let rule = fault_rule(rule, &cluster.reader_addrs)?;
            let text = serde_json::to_string(&rule).unwrap_or_default();
            timeline.fault(&rule, at);
            faults
                .add(rule)
                .await
                .map_err(|e| ChaosError::Run(e.to_string()))?;
            format!("fault {text}")
        }
        Action::ClearFaults => {
            faults
                .clear()
                .await
                .map_err(|e| ChaosError::Run(e.to_string()))?;
            timeline.clear_faults(at);
            "faults cleared".into()
        }
        Action::KillReader { reader } => {
            cluster.kill_reader(*reader).await.map_err(failed)?;
            timeline.set(*reader, false, true, at);
            format!(
                "read node {reader} ({}) killed",
                cluster.reader_addrs[*reader]
            )
        }
        Action::RestartReader { reader } => {
            cluster.restart_reader(*reader).await.map_err(failed)?;
            timeline.set(*reader, true, true, at);
            timeline.heal(at);
            format!(
                "read node {reader} ({}) restarted",
                cluster.reader_addrs[*reader]
            )
        }
        Action::AddReader => {
            let i = cluster.add_reader().await.map_err(failed)?;
            timeline.add(cluster.reader_addrs[i], at);
            timeline.heal(at);
            format!("read node {i} ({}) added", cluster.reader_addrs[i])
        }
        Action::RemoveReader { reader } => {
            cluster.remove_reader(*reader).await.map_err(failed)?;
            timeline.set(*reader, false, false, at);
            timeline.heal(at);
            format!(
                "read node {reader} ({}) removed",
                cluster.reader_addrs[*reader]
            )
        }
        Action::CrashWriter => {
            cluster.crash_writer(wipe_wal).await.map_err(failed)?;
            format!(
                "write node crashed{}",
                if wipe_wal { " and its log wiped" } else { "" }
            )
        }
        Action::RestartWriter => {
            cluster.restart_writer().await.map_err(failed)?;
            timeline.heal(at);
            "write node restarted".into()
        }
    })
}

/// A scenario's rule as the gateway takes it: `{ readers = [i, …] }` targets become node addresses.
pub fn fault_rule(rule: &toml::Value, readers: &[SocketAddr]) -> Result<FaultRule, ChaosError> {
    let mut rule = rule.clone();
    if let Some(target) = rule.get_mut("target")
        && let Some(indices) = target.get("readers").and_then(|r| r.as_array()).cloned()
    {
        let nodes = indices
            .iter()
            .map(|i| {
                i.as_integer()
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| readers.get(i))
                    .map(|a| toml::Value::String(a.to_string()))
                    .ok_or_else(|| {
                        ChaosError::Run(format!(
                            "fault target names read node {i}, which is not there"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut table = toml::map::Map::new();
        table.insert("nodes".into(), toml::Value::Array(nodes));
        *target = toml::Value::Table(table);
    }
    let rule: FaultRule = rule
        .try_into()
        .map_err(|e: toml::de::Error| ChaosError::Run(format!("fault rule: {e}")))?;
    rule.validate()
        .map_err(|reason| ChaosError::Run(format!("fault rule: {reason}")))?;
    Ok(rule)
}

/// Which read nodes could answer, over the run: to excuse searches while none could, and to know when
/// the last fault cleared.
pub(super) struct Timeline {
    addrs: Vec<SocketAddr>,
    /// Per read node, in order: (time, running, listed in the hosts file). No entry yet: not there.
    states: Vec<Vec<(Duration, bool, bool)>>,
    /// Per read node: windows in which a fault cuts it off.
    cut: Vec<Vec<Window>>,
    /// Every moment something changed.
    times: Vec<Duration>,
    pub(super) healed_at: Option<Duration>,
}

impl Timeline {
    pub(super) fn new(addrs: &[SocketAddr]) -> Timeline {
        Timeline {
            addrs: addrs.to_vec(),
            states: vec![vec![(Duration::ZERO, true, true)]; addrs.len()],
            cut: vec![Vec::new(); addrs.len()],
            times: vec![Duration::ZERO],
            healed_at: None,
        }
    }

    fn heal(&mut self, at: Duration) {
        self.healed_at = Some(self.healed_at.map_or(at, |h| h.max(at)));
    }

    fn set(&mut self, reader: usize, running: bool, listed: bool, at: Duration) {
        if let Some(states) = self.states.get_mut(reader) {
            states.push((at, running, listed));
        }
        self.times.push(at);
    }

    fn add(&mut self, addr: SocketAddr, at: Duration) {
        self.addrs.push(addr);
        self.states.push(vec![(at, true, true)]);
        self.cut.push(Vec::new());
        self.times.push(at);
    }

    /// A rule that makes nodes unreachable for sure (partition, black hole, flapping) counts them out
    /// for its window; a timed rule's end is a moment the run heals.
    fn fault(&mut self, rule: &FaultRule, at: Duration) {
        let from = at + rule.start_after;
        let until = rule.duration.map_or(Duration::MAX, |d| from + d);
        if until != Duration::MAX {
            self.heal(until);
            self.times.push(until);
        }
        self.times.push(from);
        let cuts = matches!(
            rule.kind,
            FaultKind::Partition | FaultKind::BlackHole | FaultKind::Flap { .. }
        ) && rule.probability >= 1.0;
        let mishards_fault::Target::Nodes(set) = &rule.target else {
            return;
        };
        if !cuts {
            return;
        }
        for (i, addr) in self.addrs.iter().enumerate() {
            let hit = match set {
                mishards_fault::NodeSet::All | mishards_fault::NodeSet::Read => true,
                mishards_fault::NodeSet::Write => false,
                mishards_fault::NodeSet::List(nodes) => nodes
                    .iter()
                    .any(|n| *n.host == *addr.ip().to_string() && n.port == addr.port()),
            };
            if hit {
                self.cut[i].push(Window { from, until });
            }
        }
    }

    fn clear_faults(&mut self, at: Duration) {
        for window in self.cut.iter_mut().flatten() {
            window.until = window.until.min(at);
        }
        self.heal(at);
        self.times.push(at);
    }

    /// (running, listed) of read node `i` at `t`; `None` before it was there.
    fn state_at(&self, i: usize, t: Duration) -> Option<(bool, bool)> {
        self.states[i]
            .iter()
            .rfind(|(at, _, _)| *at <= t)
            .map(|(_, running, listed)| (*running, *listed))
    }

    fn up_at(&self, i: usize, t: Duration) -> bool {
        self.state_at(i, t)
            .is_some_and(|(running, listed)| running && listed)
            && !self.cut[i].iter().any(|w| w.from <= t && t < w.until)
    }

    /// Windows in which no read node could answer.
    pub(super) fn no_reader_windows(&self, end: Duration) -> Vec<Window> {
        let mut times = self.times.clone();
        times.retain(|t| *t < end);
        times.sort();
        times.dedup();
        let mut windows: Vec<Window> = Vec::new();
        for (n, t) in times.iter().enumerate() {
            let next = times.get(n + 1).copied().unwrap_or(end);
            if (0..self.addrs.len()).any(|i| self.up_at(i, *t)) {
                continue;
            }
            match windows.last_mut() {
                Some(w) if w.until == *t => w.until = next,
                _ => windows.push(Window {
                    from: *t,
                    until: next,
                }),
            }
        }
        windows
    }

    /// The listed read nodes that were down in those windows (the ones an error must name).
    pub(super) fn failed_in(&self, windows: &[Window]) -> Vec<String> {
        let mut failed: Vec<String> = windows
            .iter()
            .flat_map(|w| {
                (0..self.addrs.len())
                    .filter(|i| self.state_at(*i, w.from).is_some_and(|(_, listed)| listed))
                    .map(|i| self.addrs[i].to_string())
            })
            .collect();
        failed.sort();
        failed.dedup();
        failed
    }
}
