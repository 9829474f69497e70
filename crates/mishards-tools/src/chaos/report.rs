//! The report of one run: load, faults applied, errors by kind, latency percentiles, each invariant
//! held or violated, and the seed that replays it. Human text or JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::check::{Recording, SearchOutcome, Verdict, latency_percentile, millis};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub duration_s: f64,
    pub searches: usize,
    pub searches_per_s: f64,
    pub inserts_acknowledged: usize,
    /// Each step as it was applied: time and what it did.
    pub steps: Vec<String>,
    /// The fault injector's log of faults applied, counted by target, RPC and kind.
    pub faults_applied: BTreeMap<String, u64>,
    /// Search outcomes other than exact, by kind (`wrong`, `code N`, `transport`).
    pub errors: BTreeMap<String, usize>,
    pub latency: Latency,
    pub warmup_p99_ms: f64,
    pub invariants: Vec<Verdict>,
    pub passed: bool,
    pub replay: String,
    /// Every applied fault (the runs' replay test compares these).
    #[serde(skip)]
    pub fault_log: Vec<mishards_fault::LoggedFault>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        seed: u64,
        duration: std::time::Duration,
        recording: &Recording,
        steps: Vec<String>,
        faults_applied: BTreeMap<String, u64>,
        invariants: Vec<Verdict>,
        replay: String,
        fault_log: Vec<mishards_fault::LoggedFault>,
    ) -> Report {
        let searches = &recording.searches;
        let mut errors = BTreeMap::new();
        for s in searches {
            let kind = match &s.outcome {
                SearchOutcome::Exact => continue,
                SearchOutcome::Wrong { .. } => "wrong answer".to_string(),
                SearchOutcome::Error { code: -1, .. } => "transport error".to_string(),
                SearchOutcome::Error { code, .. } => format!("status {code}"),
            };
            *errors.entry(kind).or_insert(0) += 1;
        }
        let max = searches.iter().map(|s| s.latency).max().unwrap_or_default();
        Report {
            scenario: scenario.to_string(),
            seed,
            duration_s: duration.as_secs_f64(),
            searches: searches.len(),
            searches_per_s: searches.len() as f64 / duration.as_secs_f64().max(1e-9),
            inserts_acknowledged: recording.inserts_acknowledged,
            steps,
            faults_applied,
            errors,
            latency: Latency {
                p50_ms: millis(latency_percentile(searches, 50.0)),
                p95_ms: millis(latency_percentile(searches, 95.0)),
                p99_ms: millis(latency_percentile(searches, 99.0)),
                max_ms: millis(max),
            },
            warmup_p99_ms: millis(latency_percentile(&recording.warmup, 99.0)),
            passed: invariants.iter().all(|v| v.held),
            invariants,
            replay,
            fault_log,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {}  seed {}  {}",
            self.scenario,
            self.seed,
            if self.passed { "PASSED" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "load: {} searches in {:.1} s ({:.0}/s), {} inserts acknowledged",
            self.searches, self.duration_s, self.searches_per_s, self.inserts_acknowledged
        )?;
        writeln!(
            f,
            "latency: p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (fault-free p99 {:.1} ms)",
            self.latency.p50_ms,
            self.latency.p95_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.warmup_p99_ms
        )?;
        writeln!(f, "steps:")?;
        for step in &self.steps {
            writeln!(f, "  {step}")?;
        }
        if !self.faults_applied.is_empty() {
            writeln!(f, "faults applied:")?;
            for (fault, n) in &self.faults_applied {
                writeln!(f, "  {n:>6} × {fault}")?;
            }
        }
        if self.errors.is_empty() {
            writeln!(f, "errors: none")?;
        } else {
            writeln!(f, "errors:")?;
            for (kind, n) in &self.errors {
                writeln!(f, "  {n:>6} × {kind}")?;
            }
        }
        writeln!(f, "invariants:")?;
        for v in &self.invariants {
            writeln!(
                f,
                "  [{}] {}: {}",
                if v.held { "held" } else { "VIOLATED" },
                v.invariant,
                v.detail
            )?;
        }
        write!(f, "replay: {}", self.replay)
    }
}
