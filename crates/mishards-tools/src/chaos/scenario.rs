//! Scenario files: the cluster to start, the load to drive, the timed steps (faults, kills, restarts,
//! membership changes) and the invariants to check. TOML; durations as `250ms`, `3s`, `1.5s`, `2m`.

use std::time::Duration;

use serde::Deserialize;

use super::ChaosError;

/// One scenario, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub gateway: GatewaySpec,
    #[serde(default)]
    pub load: LoadSpec,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub invariants: Invariants,
    /// Breaks a mitigation on purpose, to show an invariant catches it (tests only).
    #[serde(default)]
    pub sabotage: Sabotage,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSpec {
    pub readers: usize,
    /// Flushed segment files the data set is split into (so every read node owns some).
    pub files: usize,
    /// Rows per file; raised to just over 1 MB of vectors so the write node never merges the files
    /// (it merges files smaller than the collection's `index_file_size`, 1 MB here).
    pub rows_per_file: usize,
    pub dim: usize,
    /// `l2` or `ip`.
    pub metric: String,
    /// The write node's auto-flush interval (how long inserts live only in its log).
    #[serde(with = "text_duration")]
    pub auto_flush: Duration,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            readers: 3,
            files: 6,
            rows_per_file: 0,
            dim: 32,
            metric: "l2".into(),
            auto_flush: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySpec {
    pub max_retry: u32,
    #[serde(with = "text_duration")]
    pub node_timeout: Duration,
    pub hedge: bool,
    /// Routing ranks a read node far slower than its peers after them.
    pub demote_slow_nodes: bool,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            max_retry: 3,
            node_timeout: Duration::from_secs(2),
            hedge: true,
            demote_slow_nodes: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSpec {
    /// How long the load runs; steps happen within it.
    #[serde(with = "text_duration")]
    pub duration: Duration,
    /// Concurrent search clients.
    pub searchers: usize,
    /// Distinct query vectors (their fault-free answers are computed before the run).
    pub queries: usize,
    pub topk: i64,
    /// Rows per insert of the insert stream; 0 = no inserts.
    pub insert_rows: usize,
    #[serde(with = "text_duration")]
    pub insert_every: Duration,
    /// Fault-free searches measured before the steps start (the baseline for `p99_within`).
    #[serde(with = "text_duration")]
    pub warmup: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            duration: Duration::from_secs(10),
            searchers: 4,
            queries: 16,
            topk: 10,
            insert_rows: 0,
            insert_every: Duration::from_millis(200),
            warmup: Duration::from_secs(2),
        }
    }
}

/// One timed step; `at` counts from the start of the load (after the warm-up). (`deny_unknown_fields`
/// does not combine with `flatten`; the action itself refuses unknown fields.)
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    #[serde(with = "text_duration")]
    pub at: Duration,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Installs a fault rule (the gateway's fault-rule format; `reader:N` names the N-th read node).
    Fault {
        rule: toml::Value,
    },
    ClearFaults,
    /// Stops read node N at once (in-flight calls fail).
    KillReader {
        reader: usize,
    },
    /// Starts read node N again on its old address.
    RestartReader {
        reader: usize,
    },
    /// Starts one more read node and adds it to the gateway's hosts file.
    AddReader,
    /// Takes read node N out of the hosts file, then stops it.
    RemoveReader {
        reader: usize,
    },
    /// Stops the write node without flushing (as `kill -9`): only its log keeps unflushed writes.
    CrashWriter,
    RestartWriter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Invariants {
    /// While at least one read node is up and reachable, every search equals the fault-free answer.
    pub exact_answers: bool,
    /// Every acknowledged insert is searchable/countable at the end (after any writer crash).
    pub no_lost_inserts: bool,
    /// No thread of the process panicked.
    pub no_panics: bool,
    /// After the last fault clears (or the last node comes back), errors stop within this time.
    #[serde(with = "option_duration")]
    pub recover_within: Option<Duration>,
    /// While no read node is left, every search error names the read nodes that failed.
    pub errors_name_failed_nodes: bool,
    /// The run's search p99 stays within this multiple of the warm-up's p99.
    pub p99_within: Option<f64>,
    /// Only searches started this long into the run count for `p99_within` (the gateway needs some
    /// answers from a slow node before it knows it is slow).
    #[serde(with = "option_duration")]
    pub p99_from: Option<Duration>,
}

impl Default for Invariants {
    fn default() -> Self {
        Invariants {
            exact_answers: true,
            no_lost_inserts: true,
            no_panics: true,
            recover_within: None,
            errors_name_failed_nodes: false,
            p99_within: None,
            p99_from: None,
        }
    }
}

/// Mitigations a test turns off to show that the invariant guarding them fails.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sabotage {
    /// Deletes the write node's log when it crashes (what `no_lost_inserts` guards).
    pub wipe_wal_on_crash: bool,
    /// The gateway drops its metadata snapshot during a database outage instead of serving it.
    pub drop_snapshot_on_outage: bool,
}

impl ClusterSpec {
    /// Rows per file: as asked, but at least just over 1 MB of vectors (see `rows_per_file`).
    pub fn rows_per_file(&self) -> usize {
        self.rows_per_file
            .max((1 << 20) / (self.dim.max(1) * 4) + 64)
    }
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ChaosError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ChaosError::Scenario {
            file: origin.to_string(),
            reason: e.to_string(),
        })?;
        scenario.check(origin)?;
        Ok(scenario)
    }

    pub fn load(path: &std::path::Path) -> Result<Scenario, ChaosError> {
        let text = std::fs::read_to_string(path).map_err(|e| ChaosError::Scenario {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// What serde cannot see: steps within the run, readers that exist, a load that can run.
    fn check(&self, origin: &str) -> Result<(), ChaosError> {
        let bad = |reason: String| ChaosError::Scenario {
            file: origin.to_string(),
            reason,
        };
        let c = &self.cluster;
        if c.readers == 0 || c.files == 0 || !(1..=4096).contains(&c.dim) {
            return Err(bad(
                "cluster.readers and files must be at least 1, and dim within 1..=4096".into(),
            ));
        }
        if !matches!(c.metric.as_str(), "l2" | "ip") {
            return Err(bad(format!(
                "cluster.metric `{}` is not l2 or ip",
                c.metric
            )));
        }
        let l = &self.load;
        if l.searchers == 0 || l.queries == 0 || !(1..=16384).contains(&l.topk) {
            return Err(bad(
                "load.searchers and load.queries must be at least 1 and load.topk within 1..=16384"
                    .into(),
            ));
        }
        // Readers that exist at each step: the initial ones plus those added before it.
        let mut steps: Vec<&Step> = self.steps.iter().collect();
        steps.sort_by_key(|s| s.at);
        let mut readers = c.readers;
        for step in steps {
            if step.at > l.duration {
                return Err(bad(format!(
                    "a step at {:?} is after the end of the load ({:?})",
                    step.at, l.duration
                )));
            }
            match &step.action {
                Action::AddReader => readers += 1,
                Action::KillReader { reader }
                | Action::RestartReader { reader }
                | Action::RemoveReader { reader }
                    if *reader >= readers =>
                {
                    return Err(bad(format!(
                        "step at {:?} names reader {reader}, but only readers 0..{readers} exist then",
                        step.at
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `250ms`, `3s`, `1.5s`, `2m` → Duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => return Err(format!("`{text}` needs a unit (ms, s or m)")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 250ms, 3s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: unit must be ms, s or m")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 24 hours)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

mod text_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod option_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_only() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_scenario_with_steps_parses_and_is_checked() {
        let text = r#"
            name = "kill-reader"
            [cluster]
            readers = 2
            [load]
            duration = "5s"
            [[step]]
            at = "1s"
            action = "kill_reader"
            reader = 1
            [[step]]
            at = "2s"
            action = "fault"
            rule = { target = "reader:0", kind = "delay", fixed = "10ms" }
            [invariants]
            recover_within = "2s"
        "#;
        let s = Scenario::parse(text, "inline").unwrap();
        assert_eq!(s.steps.len(), 2);
        assert!(matches!(
            s.steps[0].action,
            Action::KillReader { reader: 1 }
        ));
        assert_eq!(s.invariants.recover_within, Some(Duration::from_secs(2)));
        assert!(s.invariants.exact_answers);

        let late = text.replace("at = \"2s\"", "at = \"9s\"");
        let e = Scenario::parse(&late, "inline").unwrap_err().to_string();
        assert!(e.contains("after the end of the load"), "{e}");
        let missing = text.replace("reader = 1", "reader = 2");
        let e = Scenario::parse(&missing, "inline").unwrap_err().to_string();
        assert!(e.contains("names reader 2"), "{e}");
        let typo = text.replace("recover_within", "recover_in");
        let e = Scenario::parse(&typo, "inline").unwrap_err().to_string();
        assert!(e.contains("recover_in"), "{e}");
    }
}
