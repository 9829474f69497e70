//! Node discovery: the `Discovery` actor and its sources, `static` (DISCOVERY_STATIC_HOSTS, DNS names
//! re-resolved periodically), `file` (a hosts file re-read when it changes, so operators and chaos tests
//! change membership live) — both polled, static_file.rs — and `kubernetes` (the namespace's pods, listed
//! then watched, kubernetes.rs). Publishes the member set whenever it changes; a source that fails keeps
//! the last member set, and its state shows in `conn_stats`, `/cluster`, `/readyz` and `/metrics`.

pub mod kubernetes;
pub mod static_file;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use mishards_config::{KubernetesDiscovery, NodeAddr};

pub use static_file::{Polled, parse_hosts};

/// The read nodes (and the write node, when discovery finds it), as of `epoch`.
#[derive(Message, Clone, Debug, Default, PartialEq)]
#[rtype(result = "()")]
pub struct Membership {
    pub epoch: u64,
    pub nodes: Arc<BTreeSet<NodeAddr>>,
    /// The write node discovery found (`None`: discovery does not look for it; WOSERVER names it).
    /// Once found it is kept until another replaces it, so a write pod's restart does not unset it.
    pub write_node: Option<NodeAddr>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeMembership(pub Recipient<Membership>);

#[derive(Message)]
#[rtype(result = "Membership")]
pub struct GetMembership;

/// Discovery's state for `conn_stats` and `/cluster`.
#[derive(Message)]
#[rtype(result = "DiscoveryStats")]
pub struct GetDiscoveryStats;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiscoveryStats {
    /// `static`, `file` or `kubernetes`.
    pub source: &'static str,
    pub epoch: u64,
    pub nodes: usize,
    /// The write node discovery found, if it looks for one.
    pub write_node: Option<String>,
    /// Whether the last attempt to read the source succeeded (false: the last member set is served).
    pub source_up: bool,
    /// Why the source could not be read, while it cannot.
    pub last_error: Option<String>,
    /// Failed attempts to read the source since start.
    pub errors: u64,
    /// Times its supervisor restarted it.
    pub restarts: u64,
}

/// Where members come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Read every refresh.
    Polled(Polled),
    /// Listed, then watched (kubernetes.rs).
    Kubernetes(KubernetesDiscovery),
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Polled(Polled::Static(_)) => "static",
            Source::Polled(Polled::File { .. }) => "file",
            Source::Kubernetes(_) => "kubernetes",
        }
    }
}

pub struct Discovery {
    source: Source,
    refresh: Duration,
    current: Membership,
    /// The read nodes the source last gave in full (`None`: not yet), and the write node it found.
    read: Option<BTreeSet<NodeAddr>>,
    write: Option<NodeAddr>,
    subscribers: Vec<Recipient<Membership>>,
    /// The last error, so it is logged once rather than at every attempt; `None` while the source is up.
    last_error: Option<String>,
    /// Whether the source has been read yet (it is not up before).
    answered: bool,
    errors: u64,
    busy: bool,
    restarts: u64,
}

impl Discovery {
    pub fn new(source: Source, refresh: Duration) -> Self {
        Discovery {
            source,
            refresh,
            current: Membership::default(),
            read: None,
            write: None,
            subscribers: Vec::new(),
            last_error: None,
            answered: false,
            errors: 0,
            busy: false,
            restarts: 0,
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let Source::Polled(source) = &self.source else {
            return;
        };
        if self.busy {
            return;
        }
        self.busy = true;
        let source = source.clone();
        ctx.spawn(
            static_file::resolve(source)
                .into_actor(self)
                .map(|result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(nodes) => {
                            act.source_up();
                            act.read = Some(nodes);
                            act.publish();
                        }
                        Err(e) => act.source_down(e),
                    }
                }),
        );
    }

    fn source_up(&mut self) {
        if let Some(e) = self.last_error.take() {
            tracing::info!(source = self.source.name(), after = %e, "discovery source answers again");
        }
        self.answered = true;
    }

    fn source_down(&mut self, reason: String) {
        self.errors += 1;
        if self.last_error.as_deref() != Some(reason.as_str()) {
            tracing::warn!(source = self.source.name(), error = %reason, "discovery failed; keeping the last member set");
            self.last_error = Some(reason);
        }
    }

    /// Publishes the member set if it changed (never before the source gave its read nodes once).
    fn publish(&mut self) {
        let Some(nodes) = &self.read else {
            return;
        };
        if self.current.epoch > 0
            && *self.current.nodes == *nodes
            && self.current.write_node == self.write
        {
            return;
        }
        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        match &self.write {
            Some(write) => {
                tracing::info!(nodes = ?names, write_node = %write, "membership changed")
            }
            None => tracing::info!(nodes = ?names, "read-node membership changed"),
        }
        self.current = Membership {
            epoch: self.current.epoch + 1,
            nodes: Arc::new(nodes.clone()),
            write_node: self.write.clone(),
        };
        for s in &self.subscribers {
            s.do_send(self.current.clone());
        }
    }

    /// The write node among the pods the write selector found: the one already used while it is still
    /// there, else the first by pod name. None found keeps the last one (its link says if it is down).
    fn choose_write(&mut self, pods: &BTreeMap<String, NodeAddr>) {
        if pods.len() > 1 {
            tracing::warn!(pods = ?pods.keys().collect::<Vec<_>>(), "several ready pods match the write-node selector; using one (there must be one write node)");
        }
        let still_there = self
            .write
            .as_ref()
            .is_some_and(|w| pods.values().any(|p| p == w));
        if !still_there && let Some(first) = pods.values().next() {
            self.write = Some(first.clone());
        }
    }
}

impl Actor for Discovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match &self.source {
            Source::Polled(_) => {
                self.refresh(ctx);
                ctx.run_interval(self.refresh, |act, ctx| act.refresh(ctx));
            }
            Source::Kubernetes(config) => {
                // Tied to this context: a restart by the supervisor starts a fresh watch.
                ctx.spawn(
                    kubernetes::watch(config.clone(), ctx.address().recipient()).into_actor(self),
                );
            }
        }
    }
}

impl Supervised for Discovery {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("discovery restarted");
        self.restarts += 1;
        self.busy = false;
    }
}

impl Handler<SubscribeMembership> for Discovery {
    type Result = ();
    fn handle(&mut self, SubscribeMembership(r): SubscribeMembership, _: &mut Context<Self>) {
        if self.current.epoch > 0 {
            r.do_send(self.current.clone());
        }
        self.subscribers.push(r);
    }
}

impl Handler<GetMembership> for Discovery {
    type Result = MessageResult<GetMembership>;
    fn handle(&mut self, _: GetMembership, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.current.clone())
    }
}

impl Handler<GetDiscoveryStats> for Discovery {
    type Result = MessageResult<GetDiscoveryStats>;
    fn handle(&mut self, _: GetDiscoveryStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DiscoveryStats {
            source: self.source.name(),
            epoch: self.current.epoch,
            nodes: self.current.nodes.len(),
            write_node: self.write.as_ref().map(ToString::to_string),
            source_up: self.answered && self.last_error.is_none(),
            last_error: self.last_error.clone(),
            errors: self.errors,
            restarts: self.restarts,
        })
    }
}

impl Handler<kubernetes::Observed> for Discovery {
    type Result = ();
    fn handle(&mut self, observed: kubernetes::Observed, _: &mut Context<Self>) {
        match observed {
            kubernetes::Observed::Up => self.source_up(),
            kubernetes::Observed::Down(reason) => self.source_down(reason),
            kubernetes::Observed::Members { role, pods } => {
                match role {
                    kubernetes::Role::Read => self.read = Some(pods.into_values().collect()),
                    kubernetes::Role::Write => self.choose_write(&pods),
                }
                self.publish();
            }
        }
    }
}

/// Stops the actor (fault injection); its supervisor restarts it with its member set and subscribers.
impl Handler<crate::control::Crash> for Discovery {
    type Result = ();
    fn handle(&mut self, _: crate::control::Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubernetes::{Observed, Role};

    fn pods(list: &[(&str, u16)]) -> BTreeMap<String, NodeAddr> {
        list.iter()
            .map(|(name, port)| (name.to_string(), NodeAddr::loopback(*port)))
            .collect()
    }

    /// What the watch reports becomes membership: read nodes after a complete list, the write node kept
    /// until another replaces it, an outage keeping everything and showing in the stats.
    #[actix::test]
    async fn kubernetes_observations_become_membership_and_an_outage_keeps_it() {
        // In-cluster config outside a cluster: the watch task reports `Down` at once, then waits an hour.
        let config = KubernetesDiscovery {
            namespace: Some("milvus".into()),
            in_cluster: true,
            poll_interval: Duration::from_secs(3600),
            pod_pattern: None,
            label_selector: None,
            write_label_selector: Some("tier=rw".into()),
            default_port: 19530,
        };
        let discovery = Discovery::new(Source::Kubernetes(config), Duration::from_secs(1)).start();
        let stats = || async { discovery.send(GetDiscoveryStats).await.unwrap() };
        for _ in 0..200 {
            if stats().await.errors > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let down = stats().await;
        assert!(!down.source_up && down.epoch == 0, "{down:?}");
        assert!(down.last_error.unwrap().contains("in-cluster"));

        // The write node alone publishes nothing: the read nodes come first.
        discovery.do_send(Observed::Members {
            role: Role::Write,
            pods: pods(&[("rw-0", 9)]),
        });
        discovery.do_send(Observed::Up);
        discovery.do_send(Observed::Members {
            role: Role::Read,
            pods: pods(&[("ro-0", 1), ("ro-1", 2)]),
        });
        let m = discovery.send(GetMembership).await.unwrap();
        assert_eq!((m.epoch, m.nodes.len()), (1, 2));
        assert_eq!(m.write_node, Some(NodeAddr::loopback(9)));
        assert!(stats().await.source_up);

        // The write pod gone: the last write node stays. Another one: it replaces it.
        discovery.do_send(Observed::Members {
            role: Role::Write,
            pods: pods(&[]),
        });
        assert_eq!(discovery.send(GetMembership).await.unwrap(), m);
        discovery.do_send(Observed::Members {
            role: Role::Write,
            pods: pods(&[("rw-1", 10)]),
        });
        let moved = discovery.send(GetMembership).await.unwrap();
        assert_eq!(
            (moved.epoch, moved.write_node.clone()),
            (2, Some(NodeAddr::loopback(10)))
        );

        // An outage keeps the member set and says why; the next answer clears it.
        discovery.do_send(Observed::Down("API server unreachable".into()));
        assert_eq!(discovery.send(GetMembership).await.unwrap(), moved);
        let s = stats().await;
        assert!(!s.source_up && s.errors >= 2, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some("API server unreachable"));
        discovery.do_send(Observed::Up);
        let s = stats().await;
        assert!(s.source_up && s.last_error.is_none(), "{s:?}");
        assert_eq!(
            (s.source, s.nodes, s.write_node.as_deref()),
            ("kubernetes", 2, Some("127.0.0.1:10"))
        );
    }

    #[actix::test]
    async fn a_file_source_publishes_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1:1\n").unwrap();
        let discovery = Discovery::new(
            Source::Polled(Polled::File {
                path: path.clone(),
                default_port: 19530,
            }),
            Duration::from_millis(20),
        )
        .start();
        let wait_for = |n: usize| {
            let discovery = discovery.clone();
            async move {
                for _ in 0..200 {
                    let m = discovery.send(GetMembership).await.unwrap();
                    if m.nodes.len() == n {
                        return m;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("membership never reached {n} nodes");
            }
        };
        let first = wait_for(1).await;
        std::fs::write(&path, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
        let second = wait_for(2).await;
        assert_eq!(second.epoch, first.epoch + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            discovery.send(GetMembership).await.unwrap().epoch,
            second.epoch,
            "no change, no new epoch"
        );
        assert!(discovery.send(GetDiscoveryStats).await.unwrap().source_up);
        // A broken file keeps the last member set, and says why.
        std::fs::write(&path, "127.0.0.1:x\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(discovery.send(GetMembership).await.unwrap(), second);
        let stats = discovery.send(GetDiscoveryStats).await.unwrap();
        assert!(!stats.source_up && stats.errors > 0, "{stats:?}");
        assert!(stats.last_error.unwrap().contains("line 1"));
    }
}
