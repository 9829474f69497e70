//! The invariants, checked over what a run recorded: every search (when, how long, what came back),
//! the windows in which no read node was left, when the faults cleared, the inserts acknowledged and
//! found again, and the panics seen.

use std::time::Duration;

use serde::Serialize;

use mishards_common::stats;

use super::scenario::Invariants;

/// What one search came back with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SearchOutcome {
    /// Equal to the fault-free answer.
    Exact,
    /// Answered, but not the fault-free answer.
    Wrong { detail: String },
    /// A Milvus error status (`code`) or a transport error (`code` = -1).
    Error { code: i32, reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchRecord {
    /// From the start of the load.
    pub started: Duration,
    pub latency: Duration,
    pub outcome: SearchOutcome,
}

impl SearchRecord {
    fn ended(&self) -> Duration {
        self.started + self.latency
    }

    fn overlaps(&self, window: &Window) -> bool {
        self.started < window.until && self.ended() > window.from
    }
}

/// A span of the run, from the start of the load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub from: Duration,
    pub until: Duration,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub searches: Vec<SearchRecord>,
    /// Fault-free searches before the load (their p99 is the baseline).
    pub warmup: Vec<SearchRecord>,
    /// Windows in which no read node was up and reachable.
    pub no_reader: Vec<Window>,
    /// Read node addresses that were down during each `no_reader` window.
    pub failed_readers: Vec<String>,
    /// When the last fault cleared or the last stopped node came back (None: nothing to recover from).
    pub healed_at: Option<Duration>,
    pub inserts_acknowledged: usize,
    /// Acknowledged insert ids not found at the end.
    pub inserts_missing: Vec<i64>,
    pub panics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub invariant: &'static str,
    pub held: bool,
    pub detail: String,
}

fn verdict(invariant: &'static str, problems: Vec<String>, ok: String) -> Verdict {
    Verdict {
        invariant,
        held: problems.is_empty(),
        detail: if problems.is_empty() {
            ok
        } else {
            let shown: Vec<String> = problems.iter().take(5).cloned().collect();
            let more = problems.len().saturating_sub(shown.len());
            format!(
                "{}{}",
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            )
        },
    }
}

/// p-th percentile (0..=100) of the searches' latencies, nearest rank; zero for no searches.
pub fn latency_percentile(records: &[SearchRecord], p: f64) -> Duration {
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    stats::percentile(&latencies, p)
}

/// Checks every invariant the scenario asks for.
pub fn check(invariants: &Invariants, r: &Recording) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    // After a window with no read node, the gateway needs a moment to see a node back (probes,
    // backoff): that time belongs to `recover_within`, not to exactness.
    let settle = invariants.recover_within.unwrap_or(Duration::from_secs(10));
    let excused = |s: &SearchRecord| {
        r.no_reader.iter().any(|w| {
            s.overlaps(&Window {
                from: w.from,
                until: w.until + settle,
            })
        })
    };
    if invariants.exact_answers {
        let mut problems = Vec::new();
        let mut checked = 0;
        for s in r.searches.iter().filter(|s| !excused(s)) {
            checked += 1;
            match &s.outcome {
                SearchOutcome::Exact => {}
                SearchOutcome::Wrong { detail } => problems.push(format!(
                    "search at {:.2}s answered wrongly: {detail}",
                    s.started.as_secs_f64()
                )),
                SearchOutcome::Error { code, reason } => problems.push(format!(
                    "search at {:.2}s failed ({code}): {reason}",
                    s.started.as_secs_f64()
                )),
            }
        }
        if checked == 0 {
            problems.push("no search ran while a read node was up".into());
        }
        verdicts.push(verdict(
            "exact_answers",
            problems,
            format!("{checked} searches with a read node up all equal the fault-free answer"),
        ));
    }
    if invariants.no_lost_inserts {
        let problems = if r.inserts_missing.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "{} of {} acknowledged inserts are gone, e.g. ids {:?}",
                r.inserts_missing.len(),
                r.inserts_acknowledged,
                &r.inserts_missing[..r.inserts_missing.len().min(5)]
            )]
        };
        verdicts.push(verdict(
            "no_lost_inserts",
            problems,
            format!(
                "all {} acknowledged inserts are there",
                r.inserts_acknowledged
            ),
        ));
    }
    if invariants.no_panics {
        verdicts.push(verdict(
            "no_panics",
            r.panics.clone(),
            "no thread panicked".into(),
        ));
    }
    if let Some(within) = invariants.recover_within {
        let mut problems = Vec::new();
        match r.healed_at {
            Some(healed) => {
                let deadline = healed + within;
                problems.extend(
                    r.searches
                        .iter()
                        .filter(|s| s.started >= deadline)
                        .filter(|s| !matches!(s.outcome, SearchOutcome::Exact))
                        .map(|s| {
                            format!(
                                "search at {:.2}s (faults cleared at {:.2}s) was {:?}",
                                s.started.as_secs_f64(),
                                healed.as_secs_f64(),
                                s.outcome
                            )
                        }),
                );
                if !r.searches.iter().any(|s| s.started >= deadline) {
                    problems.push(format!(
                        "no search ran after {:.2}s to show the recovery",
                        deadline.as_secs_f64()
                    ));
                }
            }
            None => problems.push("the scenario never clears its faults".into()),
        }
        verdicts.push(verdict(
            "recover_within",
            problems,
            format!("errors stopped within {within:?} of the faults clearing"),
        ));
    }
    if invariants.errors_name_failed_nodes {
        let mut problems = Vec::new();
        let mut errors = 0;
        for s in r
            .searches
            .iter()
            .filter(|s| r.no_reader.iter().any(|w| s.overlaps(w)))
        {
            if let SearchOutcome::Error { reason, .. } = &s.outcome {
                errors += 1;
                let unnamed: Vec<&String> = r
                    .failed_readers
                    .iter()
                    .filter(|n| !reason.contains(n.as_str()))
                    .collect();
                if !unnamed.is_empty() {
                    problems.push(format!(
                        "error at {:.2}s does not name {unnamed:?}: {reason}",
                        s.started.as_secs_f64()
                    ));
                }
            }
        }
        if errors == 0 {
            problems.push("no search failed while no read node was left".into());
        }
        verdicts.push(verdict(
            "errors_name_failed_nodes",
            problems,
            format!("{errors} errors with no read node left all name the failed nodes"),
        ));
    }
    if let Some(factor) = invariants.p99_within {
        let baseline = latency_percentile(&r.warmup, 99.0);
        let from = invariants.p99_from.unwrap_or_default();
        let counted: Vec<SearchRecord> = r
            .searches
            .iter()
            .filter(|s| !excused(s) && s.started >= from)
            .cloned()
            .collect();
        let p99 = latency_percentile(&counted, 99.0);
        let limit = baseline.mul_f64(factor);
        let problems = if r.warmup.is_empty() {
            vec!["no warm-up searches to compare with".into()]
        } else if p99 > limit {
            vec![format!(
                "p99 {:.1} ms exceeds {factor} × the fault-free p99 {:.1} ms",
                millis(p99),
                millis(baseline)
            )]
        } else {
            Vec::new()
        };
        verdicts.push(verdict(
            "p99_within",
            problems,
            format!(
                "p99 {:.1} ms within {factor} × the fault-free p99 {:.1} ms",
                millis(p99),
                millis(baseline)
            ),
        ));
    }
    verdicts
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(at_ms: u64, latency_ms: u64, outcome: SearchOutcome) -> SearchRecord {
        SearchRecord {
            started: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
        }
    }

    fn error(reason: &str) -> SearchOutcome {
        SearchOutcome::Error {
            code: 1,
            reason: reason.into(),
        }
    }

    /// No invariant: each test turns on the ones it checks.
    fn none() -> Invariants {
        Invariants {
            exact_answers: false,
            no_lost_inserts: false,
            no_panics: false,
            recover_within: None,
            errors_name_failed_nodes: false,
            p99_within: None,
            p99_from: None,
        }
    }

    #[test]
    fn a_wrong_answer_or_error_outside_the_no_reader_window_is_a_violation() {
        let inv = Invariants {
            exact_answers: true,
            recover_within: Some(Duration::from_secs(1)),
            ..none()
        };
        let mut r = Recording {
            searches: vec![
                search(100, 5, SearchOutcome::Exact),
                search(2_000, 5, error("files [1] got no answer")),
                search(5_000, 5, SearchOutcome::Exact),
            ],
            no_reader: vec![Window {
                from: Duration::from_millis(1_900),
                until: Duration::from_millis(2_500),
            }],
            healed_at: Some(Duration::from_millis(2_500)),
            ..Recording::default()
        };
        assert!(
            check(&inv, &r).iter().all(|v| v.held),
            "{:?}",
            check(&inv, &r)
        );
        // An error outside the window breaks exactness.
        r.searches.push(search(600, 5, error("boom")));
        let verdicts = check(&inv, &r);
        assert!(
            !verdicts[0].held && verdicts[0].detail.contains("boom"),
            "{verdicts:?}"
        );
        // An error after the recovery deadline breaks recovery.
        r.searches.pop();
        r.searches.push(search(4_000, 5, error("late")));
        let verdicts = check(&inv, &r);
        assert!(
            !verdicts[1].held && verdicts[1].detail.contains("late"),
            "{verdicts:?}"
        );
    }

    #[test]
    fn errors_with_no_reader_left_must_name_the_failed_nodes() {
        let inv = Invariants {
            errors_name_failed_nodes: true,
            ..none()
        };
        let window = Window {
            from: Duration::from_secs(1),
            until: Duration::from_secs(2),
        };
        let mut r = Recording {
            searches: vec![search(
                1_500,
                5,
                error("read nodes: 127.0.0.1:1, 127.0.0.1:2"),
            )],
            no_reader: vec![window],
            failed_readers: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            ..Recording::default()
        };
        assert!(check(&inv, &r)[0].held);
        r.searches.push(search(1_600, 5, error("something failed")));
        assert!(!check(&inv, &r)[0].held);
    }

    #[test]
    fn lost_inserts_panics_and_a_slow_p99_are_violations() {
        let inv = Invariants {
            exact_answers: false,
            p99_within: Some(1.5),
            ..Invariants::default()
        };
        let fast: Vec<SearchRecord> = (0..100)
            .map(|i| search(i, 10, SearchOutcome::Exact))
            .collect();
        let mut r = Recording {
            searches: fast.clone(),
            warmup: fast,
            inserts_acknowledged: 10,
            ..Recording::default()
        };
        assert!(check(&inv, &r).iter().all(|v| v.held));
        r.inserts_missing = vec![7];
        r.panics = vec!["thread 'x' panicked".into()];
        r.searches
            .extend((0..5).map(|i| search(200 + i, 40, SearchOutcome::Exact)));
        let verdicts = check(&inv, &r);
        assert!(verdicts.iter().all(|v| !v.held), "{verdicts:?}");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let records: Vec<SearchRecord> = (1..=100)
            .map(|i| search(0, i, SearchOutcome::Exact))
            .collect();
        assert_eq!(
            latency_percentile(&records, 99.0),
            Duration::from_millis(99)
        );
        assert_eq!(
            latency_percentile(&records, 50.0),
            Duration::from_millis(50)
        );
        assert_eq!(latency_percentile(&[], 99.0), Duration::ZERO);
    }
}
