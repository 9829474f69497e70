//! The root of the supervision tree: starts a supervised `NodeLink` for every read node the membership
//! names (and retires the links of nodes that leave), keeps the write node's link, and answers
//! `conn_stats` with every node's state, in-flight count, latency and request/error counts.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::discovery::{Discovery, GetDiscoveryStats, Membership};
use super::metadata::{GetPollerStats, MetadataPoller};
use super::node_link::{GetLinkStats, LinkOptions, NodeLink, Retarget, Retire, SubscribeHealth};
use super::routing::{GetRoutingStats, Links, Routing};
use crate::control::{Crash, CrashLink, SetFaults, SetLinkFaults};
use mishards_config::NodeAddr;
use mishards_fault::NodeRole;

/// The current read-node links, shared read-only with each search.
#[derive(Message)]
#[rtype(result = "Arc<HashMap<NodeAddr, Addr<NodeLink>>>")]
pub struct GetLinks;

/// The `conn_stats` JSON.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct ConnStats;

pub struct Cluster {
    links: Arc<HashMap<NodeAddr, Addr<NodeLink>>>,
    /// The write node (`None` until discovery finds it, when WOSERVER does not name it) and its link.
    write: (Option<NodeAddr>, Addr<NodeLink>),
    routing: Addr<Routing>,
    poller: Addr<MetadataPoller>,
    options: LinkOptions,
    arbiter: actix::ArbiterHandle,
    /// For `conn_stats` (its restarts).
    discovery: Option<Addr<Discovery>>,
    /// The fault rules in force (fault injection on): every link gets them, links started later too.
    faults: Option<SetFaults>,
}

impl Cluster {
    pub fn new(
        write: (Option<NodeAddr>, Addr<NodeLink>),
        routing: Addr<Routing>,
        poller: Addr<MetadataPoller>,
        options: LinkOptions,
        arbiter: actix::ArbiterHandle,
    ) -> Self {
        Cluster {
            links: Arc::new(HashMap::new()),
            write,
            routing,
            poller,
            options,
            arbiter,
            discovery: None,
            faults: None,
        }
    }

    /// `conn_stats` also shows discovery's state.
    pub fn with_discovery(mut self, discovery: Addr<Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    fn link_faults(faults: &SetFaults, role: NodeRole) -> SetLinkFaults {
        SetLinkFaults {
            plan: faults.plan.clone(),
            role,
            log: faults.log.clone(),
        }
    }
}

/// Starts a supervised link to `node` on `arbiter`: a crash restarts it with a fresh channel pool.
/// `None`: a link discovery will point at a node (`Retarget`); down until then.
pub fn start_link(
    node: Option<NodeAddr>,
    options: LinkOptions,
    arbiter: &actix::ArbiterHandle,
) -> Addr<NodeLink> {
    Supervisor::start_in_arbiter(arbiter, move |_| match node {
        Some(node) => NodeLink::new(node, options),
        None => NodeLink::unassigned(options),
    })
}

impl Actor for Cluster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
    }
}

impl Handler<Membership> for Cluster {
    type Result = ();
    fn handle(&mut self, m: Membership, _: &mut Context<Self>) {
        let mut links: HashMap<NodeAddr, Addr<NodeLink>> = HashMap::new();
        for node in m.nodes.iter() {
            let link = match self.links.get(node) {
                Some(link) => link.clone(),
                None => {
                    let link = start_link(Some(node.clone()), self.options.clone(), &self.arbiter);
                    link.do_send(SubscribeHealth(self.routing.clone().recipient()));
                    if let Some(faults) = &self.faults {
                        link.do_send(Self::link_faults(faults, NodeRole::Read));
                    }
                    link
                }
            };
            links.insert(node.clone(), link);
        }
        for (node, link) in self.links.iter() {
            if !m.nodes.contains(node) {
                link.do_send(Retire);
            }
        }
        self.links = Arc::new(links);
        self.routing.do_send(Links(self.links.clone()));
        // Discovery found the write node (WOSERVER unset), or found it moved: the one link follows it.
        if let Some(write) = m.write_node
            && self.write.0.as_ref() != Some(&write)
        {
            self.write.0 = Some(write.clone());
            self.write.1.do_send(Retarget(write));
            if let Some(faults) = &self.faults {
                self.write
                    .1
                    .do_send(Self::link_faults(faults, NodeRole::Write));
            }
        }
    }
}

impl Handler<SetFaults> for Cluster {
    type Result = ();
    fn handle(&mut self, faults: SetFaults, _: &mut Context<Self>) {
        for link in self.links.values() {
            link.do_send(Self::link_faults(&faults, NodeRole::Read));
        }
        self.write
            .1
            .do_send(Self::link_faults(&faults, NodeRole::Write));
        self.faults = Some(faults);
    }
}

impl Handler<CrashLink> for Cluster {
    type Result = bool;
    fn handle(&mut self, CrashLink(node): CrashLink, _: &mut Context<Self>) -> bool {
        let link = match self.links.get(&node) {
            Some(link) => link,
            None if Some(&node) == self.write.0.as_ref() => &self.write.1,
            None => {
                tracing::warn!(%node, "fault injection: no link to crash for this node");
                return false;
            }
        };
        link.do_send(Crash);
        true
    }
}

impl Handler<GetLinks> for Cluster {
    type Result = Arc<HashMap<NodeAddr, Addr<NodeLink>>>;
    fn handle(&mut self, _: GetLinks, _: &mut Context<Self>) -> Self::Result {
        self.links.clone()
    }
}

impl Handler<ConnStats> for Cluster {
    type Result = ResponseFuture<serde_json::Value>;
    fn handle(&mut self, _: ConnStats, _: &mut Context<Self>) -> Self::Result {
        let readers: Vec<(NodeAddr, Addr<NodeLink>)> = self
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        let (write_node, write) = self.write.clone();
        let write_node = write_node.map_or_else(
            || super::node_link::UNASSIGNED.to_string(),
            |n| n.to_string(),
        );
        let (routing, poller) = (self.routing.clone(), self.poller.clone());
        let discovery = self.discovery.clone();
        Box::pin(async move {
            let stats = |link: Addr<NodeLink>, node: String| async move {
                match link.send(GetLinkStats).await {
                    Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                    Err(e) => {
                        serde_json::json!({ "node": node, "state": "unavailable", "reason": e.to_string() })
                    }
                }
            };
            let mut read_nodes = Vec::new();
            for (node, link) in readers {
                read_nodes.push(stats(link, node.to_string()).await);
            }
            read_nodes.sort_by_key(|v| v["node"].as_str().unwrap_or_default().to_string());
            let routing = routing
                .send(GetRoutingStats)
                .await
                .ok()
                .map(|r| serde_json::to_value(r).unwrap_or_default());
            let metadata = poller
                .send(GetPollerStats)
                .await
                .ok()
                .map(|p| serde_json::to_value(p).unwrap_or_default());
            let discovery = match discovery {
                Some(d) => d
                    .send(GetDiscoveryStats)
                    .await
                    .ok()
                    .map(|s| serde_json::to_value(s).unwrap_or_default()),
                None => None,
            };
            serde_json::json!({
                "write_node": stats(write, write_node).await,
                "read_nodes": read_nodes,
                "routing": routing,
                "metadata": metadata,
                "discovery": discovery,
            })
        })
    }
}
