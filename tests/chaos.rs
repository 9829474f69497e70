//! The chaos scenarios in tests/chaos/: each holds its invariants, each fails when the mitigation it
//! exercises is turned off, and the same seed replays the same fault decisions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mishards::chaos::report::Report;
use mishards::chaos::runner;
use mishards::chaos::scenario::{Action, Scenario};

const SEED: u64 = 20261125;

fn path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chaos")).join(format!("{name}.toml"))
}

fn scenario(name: &str) -> Scenario {
    Scenario::load(&path(name)).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(s: &Scenario) -> Report {
    runner::run(s, SEED, &format!("tests/chaos/{}.toml", s.name))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s.name))
}

async fn holds(name: &str) {
    let report = run(&scenario(name)).await;
    assert!(report.passed, "{report}");
}

/// Runs the scenario with its mitigation broken and expects `invariant` to be violated.
async fn breaks(s: Scenario, invariant: &str) {
    let report = run(&s).await;
    let verdict = report
        .invariants
        .iter()
        .find(|v| v.invariant == invariant)
        .unwrap_or_else(|| panic!("{invariant} not checked: {report}"));
    assert!(
        !verdict.held,
        "expected {invariant} to be violated:\n{report}"
    );
    assert!(!report.passed);
}

/// No retries, and neither hedging nor demotion (they too move files off a failing node at times).
fn without_failover(mut s: Scenario) -> Scenario {
    s.gateway.max_retry = 0;
    s.gateway.hedge = false;
    s.gateway.demote_slow_nodes = false;
    s
}

#[test]
fn every_scenario_file_parses() {
    let dir = path("x").parent().unwrap().to_path_buf();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                p.file_stem().unwrap().to_str().unwrap(),
                s.name,
                "a scenario's name is its file's"
            );
            names.push(s.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "all-readers-down",
            "flapping-reader",
            "kill-reader",
            "metadata-outage",
            "partition",
            "rebalance-under-load",
            "slow-reader",
            "writer-crash-and-replay"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reader() {
    holds("kill-reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reader_without_retries_loses_answers() {
    breaks(without_failover(scenario("kill-reader")), "exact_answers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader() {
    holds("slow-reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_without_hedging_or_demotion_has_a_slow_p99() {
    let mut s = scenario("slow-reader");
    s.gateway.hedge = false;
    s.gateway.demote_slow_nodes = false;
    breaks(s, "p99_within").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_reader() {
    holds("flapping-reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_reader_without_retries_loses_answers() {
    breaks(
        without_failover(scenario("flapping-reader")),
        "exact_answers",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() {
    holds("partition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_without_retries_loses_answers() {
    breaks(without_failover(scenario("partition")), "exact_answers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_crash_and_replay() {
    holds("writer-crash-and-replay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_crash_without_its_log_loses_inserts() {
    let mut s = scenario("writer-crash-and-replay");
    s.sabotage.wipe_wal_on_crash = true;
    breaks(s, "no_lost_inserts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_outage() {
    holds("metadata-outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_outage_without_the_last_snapshot_fails_searches() {
    let mut s = scenario("metadata-outage");
    s.sabotage.drop_snapshot_on_outage = true;
    breaks(s, "exact_answers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_under_load() {
    holds("rebalance-under-load").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_without_retries_loses_answers() {
    breaks(
        without_failover(scenario("rebalance-under-load")),
        "exact_answers",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_readers_down() {
    holds("all-readers-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_readers_down_for_good_never_recovers() {
    let mut s = scenario("all-readers-down");
    s.steps
        .retain(|step| !matches!(step.action, Action::RestartReader { .. }));
    breaks(s, "recover_within").await;
}

/// Per (site, RPC, rule) stream: the applied faults, by call number.
fn decisions(report: &Report) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut by_stream: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for f in &report.fault_log {
        by_stream
            .entry(format!("{} {:?} rule {}", f.site, f.rpc, f.rule))
            .or_default()
            .push((f.call, format!("{} {}", f.kind, f.detail)));
    }
    for v in by_stream.values_mut() {
        v.sort();
    }
    by_stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_replays_the_same_fault_sequence() {
    let text = r#"
        name = "replay"
        [cluster]
        readers = 2
        files = 4
        [gateway]
        hedge = false
        [load]
        duration = "2s"
        warmup = "200ms"
        searchers = 2
        [[step]]
        at = "0s"
        action = "fault"
        rule = { target = "read", rpcs = ["SearchInFiles"], probability = 0.5, kind = { type = "delay", fixed_ms = 1, jitter_ms = 20 } }
    "#;
    let s = Scenario::parse(text, "inline").unwrap();
    let mut runs = Vec::new();
    for seed in [42, 42, 43] {
        runs.push(decisions(&runner::run(&s, seed, "inline").await.unwrap()));
    }
    let (a, b, other) = (&runs[0], &runs[1], &runs[2]);
    assert!(!a.is_empty(), "no fault was applied");
    let mut compared = 0;
    for (stream, first) in a {
        let second = b.get(stream).cloned().unwrap_or_default();
        // Runs make different numbers of calls; both made every call up to the smaller last hit.
        let last = |v: &[(u64, String)]| v.last().map_or(0, |(call, _)| *call);
        let both = last(first).min(last(&second));
        let upto = |v: &[(u64, String)]| -> Vec<(u64, String)> {
            v.iter()
                .filter(|(call, _)| *call <= both)
                .cloned()
                .collect()
        };
        assert_eq!(
            upto(first),
            upto(&second),
            "stream {stream}: the same seed gave different decisions"
        );
        compared += upto(first).len();
    }
    assert!(compared >= 10, "too few decisions to compare: {compared}");
    assert_ne!(a, other, "another seed gave the very same decisions");
}
