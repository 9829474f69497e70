//! The routing actor: owns the membership, each node's health and recent p95 latency, the metadata
//! snapshot and the placement built from them (rebuilt on change, never per query), and the record of
//! which file version each node last saw (bounded by nodes × files, pruned with every snapshot). It turns
//! a search into a plan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::GatewayError;
use super::discovery::Membership;
use super::latency::LatencyView;
use super::metadata::{Snapshot, SnapshotUpdate};
use super::node_link::{LinkState, NodeHealth, NodeLink};
use super::placement::Router;
use mishards_config::{NodeAddr, RouterKind};
use mishards_meta::{MetricType, TagPatterns, all_tables, select_matching};

/// One file of a search and the nodes that may serve it, best first (down nodes left out).
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// `TableFiles.id`.
    pub id: i64,
    /// When the file's row last changed (its delete marks, for one).
    pub updated_time: i64,
    pub nodes: Vec<NodeAddr>,
    /// Nodes whose copy of this file's delete marks is older than the snapshot: reload before searching.
    pub stale_on: Vec<NodeAddr>,
    /// Nodes known to have searched this file at its current version: their answers need no `Seen`.
    pub current_on: Vec<NodeAddr>,
}

/// What a search needs to scatter.
#[derive(Clone)]
pub struct SearchPlan {
    /// The links to the read nodes, as of this plan (saves every search a trip to the cluster actor).
    pub links: Arc<HashMap<NodeAddr, Addr<NodeLink>>>,
    pub epoch: u64,
    pub stale: bool,
    /// The collection's dimension and metric.
    pub dimension: i64,
    pub metric_type: MetricType,
    pub files: Vec<PlannedFile>,
    /// Every read node in the membership (for error messages when none could serve).
    pub members: Arc<BTreeSet<NodeAddr>>,
    /// The read nodes' recent latencies, for hedging.
    pub latency: Arc<LatencyView>,
}

/// Plans a search over a collection, with optional partition tags (whole-string regular expressions),
/// compiled by the caller: compiling a search's patterns is its own work, never this actor's.
#[derive(Message)]
#[rtype(result = "Result<Option<SearchPlan>, GatewayError>")]
pub struct Plan {
    pub collection: String,
    /// `None`: every partition.
    pub tags: Option<Arc<TagPatterns>>,
}

/// The cluster's current read-node links (sent on every membership change).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Links(pub Arc<HashMap<NodeAddr, Addr<NodeLink>>>);

/// A node searched these files at these versions (`updated_time`): no reload needed until they change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Seen {
    pub node: NodeAddr,
    pub files: Vec<(i64, i64)>,
}

#[derive(Message)]
#[rtype(result = "RoutingStats")]
pub struct GetRoutingStats;

/// Each placed file's owner (first in its preference list), for inspection and tests.
#[derive(Message)]
#[rtype(result = "HashMap<i64, NodeAddr>")]
pub struct GetOwners;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoutingStats {
    pub router: &'static str,
    pub membership_epoch: u64,
    pub snapshot_epoch: u64,
    pub snapshot_stale: bool,
    pub nodes: Vec<NodeRouting>,
    pub placement_builds: u64,
    /// Times its supervisor restarted it.
    pub restarts: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRouting {
    pub node: String,
    pub state: LinkState,
    pub files_owned: usize,
    pub files_tracked: usize,
    /// Far slower than its peers lately: ranked after them (when `demote_slow_nodes` is on).
    pub slow: bool,
}

pub struct Routing {
    kind: RouterKind,
    load_factor: f64,
    membership: Membership,
    health: HashMap<NodeAddr, LinkState>,
    /// Each read node's recent p95, as its link last reported it.
    p95: HashMap<NodeAddr, Duration>,
    latency: Arc<LatencyView>,
    /// Rank slow nodes after their peers.
    demote_slow: bool,
    snapshot: Arc<Snapshot>,
    /// file id → its nodes in preference order, for every searchable file of the snapshot.
    placement: HashMap<i64, Vec<NodeAddr>>,
    seen: HashMap<NodeAddr, HashMap<i64, i64>>,
    builds: u64,
    links: Arc<HashMap<NodeAddr, Addr<NodeLink>>>,
    restarts: u64,
}

impl Routing {
    pub fn new(kind: RouterKind, load_factor: f64) -> Self {
        Routing {
            kind,
            load_factor,
            membership: Membership::default(),
            health: HashMap::new(),
            p95: HashMap::new(),
            latency: Arc::new(LatencyView::default()),
            demote_slow: false,
            snapshot: Arc::new(Snapshot::default()),
            placement: HashMap::new(),
            seen: HashMap::new(),
            builds: 0,
            links: Arc::new(HashMap::new()),
            restarts: 0,
        }
    }

    fn rebuild(&mut self) {
        let nodes: Vec<NodeAddr> = self.membership.nodes.iter().cloned().collect();
        let router = Router::new(self.kind, nodes, self.load_factor);
        let ids: Vec<i64> = self
            .snapshot
            .files
            .values()
            .flatten()
            .map(|f| f.id)
            .collect();
        self.placement = router
            .place(&ids)
            .into_iter()
            .map(|p| (p.file_id, p.nodes))
            .collect();
        self.builds += 1;
        // Forget nodes that left and files that are gone.
        let live: HashSet<i64> = ids.into_iter().collect();
        self.seen
            .retain(|node, _| self.membership.nodes.contains(node));
        for files in self.seen.values_mut() {
            files.retain(|id, _| live.contains(id));
        }
    }

    /// Ranks nodes far slower than their peers after them (see `latency::SLOW_FACTOR`).
    pub fn demoting_slow_nodes(mut self, on: bool) -> Self {
        self.demote_slow = on;
        self
    }

    fn state(&self, node: &NodeAddr) -> LinkState {
        self.health
            .get(node)
            .copied()
            .unwrap_or(LinkState::Connecting)
    }

    /// Rebuilds the latency view from the p95s and health of the members.
    fn update_latency(&mut self) {
        let p95 = self
            .p95
            .iter()
            .filter(|(n, _)| self.membership.nodes.contains(*n))
            .map(|(n, d)| (n.clone(), *d))
            .collect();
        self.latency = Arc::new(LatencyView::new(
            p95,
            |n| self.state(n) == LinkState::Healthy,
            &self.latency,
        ));
    }

    /// A file's nodes, healthy ones first (slow ones last among them when demoting), suspect and
    /// connecting ones next, down ones left out.
    fn usable(&self, nodes: &[NodeAddr]) -> Vec<NodeAddr> {
        let state = |n: &NodeAddr| self.state(n);
        let slow = |n: &NodeAddr| self.demote_slow && self.latency.slow.contains(n);
        let rank = |n: &NodeAddr| match state(n) {
            LinkState::Healthy if slow(n) => 1,
            LinkState::Healthy => 0,
            LinkState::Suspect | LinkState::Connecting => 2,
            LinkState::Down => 3,
        };
        let mut usable: Vec<NodeAddr> = nodes
            .iter()
            .filter(|n| state(n) != LinkState::Down)
            .cloned()
            .collect();
        usable.sort_by_key(rank); // stable: keeps the preference order within a rank
        usable
    }

    fn plan(
        &self,
        collection: &str,
        tags: Option<&TagPatterns>,
    ) -> Result<Option<SearchPlan>, GatewayError> {
        let Some(tables) = self.snapshot.collections.get(collection) else {
            return Ok(None);
        };
        let selected = match tags {
            None => all_tables(tables),
            Some(patterns) => select_matching(tables, patterns).map_err(GatewayError::Partition)?,
        };
        let files = self
            .snapshot
            .files_of(&selected)
            .map(|f| {
                let nodes = self.usable(
                    self.placement
                        .get(&f.id)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                let (mut stale_on, mut current_on) = (Vec::new(), Vec::new());
                for n in &nodes {
                    match self.seen.get(n).and_then(|m| m.get(&f.id)) {
                        Some(t) if *t == f.updated_time => current_on.push(n.clone()),
                        Some(_) => stale_on.push(n.clone()),
                        None => {}
                    }
                }
                PlannedFile {
                    id: f.id,
                    updated_time: f.updated_time,
                    nodes,
                    stale_on,
                    current_on,
                }
            })
            .collect();
        Ok(Some(SearchPlan {
            links: self.links.clone(),
            epoch: self.snapshot.epoch,
            stale: self.snapshot.stale,
            dimension: tables.collection.dimension,
            metric_type: tables.collection.metric_type,
            files,
            members: self.membership.nodes.clone(),
            latency: self.latency.clone(),
        }))
    }
}

impl Actor for Routing {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
    }
}

impl Supervised for Routing {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("routing restarted");
        self.restarts += 1;
    }
}

impl Handler<Membership> for Routing {
    type Result = ();
    fn handle(&mut self, m: Membership, _: &mut Context<Self>) {
        if m.epoch != self.membership.epoch {
            self.membership = m;
            self.health.retain(|n, _| self.membership.nodes.contains(n));
            self.p95.retain(|n, _| self.membership.nodes.contains(n));
            self.update_latency();
            self.rebuild();
        }
    }
}

impl Handler<SnapshotUpdate> for Routing {
    type Result = ();
    fn handle(&mut self, SnapshotUpdate(snapshot): SnapshotUpdate, _: &mut Context<Self>) {
        let content_changed = snapshot.epoch != self.snapshot.epoch;
        self.snapshot = snapshot;
        if content_changed {
            self.rebuild();
        }
    }
}

impl Handler<NodeHealth> for Routing {
    type Result = ();
    fn handle(&mut self, h: NodeHealth, _: &mut Context<Self>) {
        match h.p95 {
            Some(p95) => self.p95.insert(h.node.clone(), p95),
            None => self.p95.remove(&h.node),
        };
        self.health.insert(h.node, h.state);
        self.update_latency();
    }
}

impl Handler<Plan> for Routing {
    type Result = Result<Option<SearchPlan>, GatewayError>;
    fn handle(&mut self, p: Plan, _: &mut Context<Self>) -> Self::Result {
        self.plan(&p.collection, p.tags.as_deref())
    }
}

impl Handler<Links> for Routing {
    type Result = ();
    fn handle(&mut self, Links(links): Links, _: &mut Context<Self>) {
        self.links = links;
    }
}

impl Handler<Seen> for Routing {
    type Result = ();
    fn handle(&mut self, s: Seen, _: &mut Context<Self>) {
        if !self.membership.nodes.contains(&s.node) {
            return;
        }
        let seen = self.seen.entry(s.node).or_default();
        for (id, updated) in s.files {
            if self.placement.contains_key(&id) {
                seen.insert(id, updated);
            }
        }
    }
}

impl Handler<GetOwners> for Routing {
    type Result = MessageResult<GetOwners>;
    fn handle(&mut self, _: GetOwners, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.placement
                .iter()
                .filter_map(|(id, nodes)| Some((*id, nodes.first()?.clone())))
                .collect(),
        )
    }
}

impl Handler<GetRoutingStats> for Routing {
    type Result = MessageResult<GetRoutingStats>;
    fn handle(&mut self, _: GetRoutingStats, _: &mut Context<Self>) -> Self::Result {
        let mut owned: HashMap<&NodeAddr, usize> = HashMap::new();
        for nodes in self.placement.values() {
            if let Some(owner) = nodes.first() {
                *owned.entry(owner).or_default() += 1;
            }
        }
        MessageResult(RoutingStats {
            router: match self.kind {
                RouterKind::Rendezvous => "rendezvous",
                RouterKind::HashRing => "FileBasedHashRingRouter",
            },
            membership_epoch: self.membership.epoch,
            snapshot_epoch: self.snapshot.epoch,
            snapshot_stale: self.snapshot.stale,
            nodes: self
                .membership
                .nodes
                .iter()
                .map(|n| NodeRouting {
                    node: n.to_string(),
                    state: self.health.get(n).copied().unwrap_or(LinkState::Connecting),
                    files_owned: owned.get(n).copied().unwrap_or(0),
                    files_tracked: self.seen.get(n).map_or(0, HashMap::len),
                    slow: self.latency.slow.contains(n),
                })
                .collect(),
            placement_builds: self.builds,
            restarts: self.restarts,
        })
    }
}

/// Stops the actor (fault injection); its supervisor restarts it with its state: plans wait in the
/// mailbox meanwhile.
impl Handler<crate::control::Crash> for Routing {
    type Result = ();
    fn handle(&mut self, _: crate::control::Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
