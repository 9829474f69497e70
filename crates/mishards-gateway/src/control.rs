//! Control messages that several actors handle — crashes and fault plans — and the per-site view of a
//! fault plan. A leaf module: the actors import it, it imports none of them, so the fault actor
//! (`injection`) can sit above the actors it steers without an import circle.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::watch;

use mishards_config::NodeAddr;
use mishards_fault::{Applied, Decision, FaultInjector, FaultPlan, NodeRole, Site};

/// Ends the actor it is sent to (chaos tests; each actor's supervisor restarts it fresh). Discovery,
/// the metadata poller, routing and every node link handle it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// A new set of rules, for `Cluster` (which passes it on to the node links) and the poller.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SetFaults {
    pub plan: Arc<FaultPlan>,
    pub log: Recipient<RecordFaults>,
}

/// A new set of rules for one node link, with the role of its node.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SetLinkFaults {
    pub plan: Arc<FaultPlan>,
    pub role: NodeRole,
    pub log: Recipient<RecordFaults>,
}

/// Faults that took effect, for the log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordFaults(pub Vec<Applied>);

/// Stop the link of this node (read or write); answers whether there is one.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashLink(pub NodeAddr);

/// One site's rules and where its applied faults go: what a node link hands its channels, and what
/// the poller keeps.
#[derive(Debug)]
pub struct SiteFaults {
    pub injector: FaultInjector,
    pub log: Recipient<RecordFaults>,
}

impl SiteFaults {
    /// The site's view of a new plan, carrying over stream positions from `previous`.
    pub fn new(
        plan: Arc<FaultPlan>,
        site: Site,
        log: Recipient<RecordFaults>,
        previous: Option<&SiteFaults>,
    ) -> SiteFaults {
        SiteFaults {
            injector: FaultInjector::new(plan, site, now(), previous.map(|p| &p.injector)),
            log,
        }
    }

    /// Decides one call at `now` and logs what took effect.
    pub fn decide(&self, rpc: &str, now: Instant) -> Decision {
        let decision = self.injector.decide(rpc, now);
        if !decision.applied.is_empty() {
            for a in &decision.applied {
                tracing::debug!(site = %a.site, rpc = a.rpc.as_deref().unwrap_or(""), rule = a.rule, detail = %a.detail, "fault injected");
            }
            self.log.do_send(RecordFaults(decision.applied.clone()));
        }
        decision
    }
}

/// What a node link's channels read their rules from; `None` until a plan arrives.
pub type FaultWatch = watch::Receiver<Option<Arc<SiteFaults>>>;

impl SetLinkFaults {
    /// The link of `node`'s view of this plan (stream positions carried over from `previous`).
    pub fn for_link(&self, node: &NodeAddr, previous: Option<&SiteFaults>) -> Arc<SiteFaults> {
        Arc::new(SiteFaults::new(
            self.plan.clone(),
            Site::Node {
                node: node.clone(),
                role: self.role,
            },
            self.log.clone(),
            previous,
        ))
    }
}

/// Now, on tokio's clock (paused in tests), as a std `Instant`.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
