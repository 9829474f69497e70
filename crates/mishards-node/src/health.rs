//! Where a node stands between its start and its stop, for its probe listener (`/readyz`, `/metrics`)
//! and its log: waiting for the metadata, opening the engine (a write node replays its log), serving,
//! stopping.

use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::Engine;
use mishards_config::Role;
use mishards_meta::MetaWait;

/// A node's phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Before anything was tried.
    Starting,
    /// The metadata database does not answer, or has no Milvus schema yet; retried with backoff.
    WaitingForMetadata(MetaWait),
    /// The metadata is there; the engine opens (a write node replays its log), then gRPC is bound.
    Opening,
    /// gRPC serves.
    Serving,
    /// Shutting down: no longer ready.
    Stopping,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForMetadata(_) => "waiting_for_metadata",
            Phase::Opening => "opening",
            Phase::Serving => "serving",
            Phase::Stopping => "stopping",
        }
    }

    /// Why a node in this phase is not ready (`None` when serving).
    pub fn not_ready_reason(&self) -> Option<String> {
        match self {
            Phase::Starting => Some("starting".into()),
            Phase::WaitingForMetadata(wait) => Some(format!("waiting for the metadata: {wait}")),
            Phase::Opening => Some(
                "opening the engine (a write node replays its write-ahead log) before serving gRPC"
                    .into(),
            ),
            Phase::Serving => None,
            Phase::Stopping => Some("shutting down".into()),
        }
    }
}

/// Shared by the start-up and the probe listener.
pub struct NodeHealth {
    role: Role,
    phase: Mutex<Phase>,
    /// Set once the engine is open.
    engine: OnceLock<Arc<Engine>>,
}

impl NodeHealth {
    pub fn new(role: Role) -> Arc<NodeHealth> {
        Arc::new(NodeHealth {
            role,
            phase: Mutex::new(Phase::Starting),
            engine: OnceLock::new(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Phase::Stopping)
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    pub(crate) fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.get()
    }
}
