//! `mishards chaos run SCENARIO.toml --seed N`: starts an embedded cluster with fault injection on,
//! drives bounded search and insert load, applies the scenario's timed steps (faults, kills and
//! restarts of in-process nodes, membership changes through the gateway's hosts file), checks the
//! invariants and reports. The same seed gives the same fault decisions.

pub mod check;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod steps;

/// Everything a chaos run can fail with before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("scenario {file}: {reason}")]
    Scenario { file: String, reason: String },
    #[error("cannot start the cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Run(String),
}
