//! Read-node discovery: `static` (DISCOVERY_STATIC_HOSTS, DNS names re-resolved periodically) or `file`
//! (a hosts file re-read when it changes, so operators and chaos tests change membership live).
//! Publishes the member set whenever it changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use mishards_config::NodeAddr;

/// The read nodes, as of `epoch`.
#[derive(Message, Clone, Debug, PartialEq)]
#[rtype(result = "()")]
pub struct Membership {
    pub epoch: u64,
    pub nodes: Arc<BTreeSet<NodeAddr>>,
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
    pub epoch: u64,
    pub nodes: usize,
    /// Times its supervisor restarted it.
    pub restarts: u64,
}

/// Where members come from.
#[derive(Debug, Clone)]
pub enum Source {
    Static(Vec<NodeAddr>),
    /// One `host[:port]` per line; `#` starts a comment; `default_port` where none is given.
    File {
        path: PathBuf,
        default_port: u16,
    },
}

pub struct Discovery {
    source: Source,
    refresh: Duration,
    current: Membership,
    subscribers: Vec<Recipient<Membership>>,
    /// The last file read error, so it is logged once rather than every second.
    last_error: Option<String>,
    busy: bool,
    restarts: u64,
}

impl Discovery {
    pub fn new(source: Source, refresh: Duration) -> Self {
        Discovery {
            source,
            refresh,
            current: Membership {
                epoch: 0,
                nodes: Arc::new(BTreeSet::new()),
            },
            subscribers: Vec::new(),
            last_error: None,
            busy: false,
            restarts: 0,
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let source = self.source.clone();
        ctx.spawn(resolve(source).into_actor(self).map(|result, act, _| {
            act.busy = false;
            match result {
                Ok(nodes) => {
                    act.last_error = None;
                    act.publish(nodes);
                }
                Err(e) => {
                    if act.last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(error = %e, "discovery failed; keeping the last member set");
                        act.last_error = Some(e);
                    }
                }
            }
        }));
    }

    fn publish(&mut self, nodes: BTreeSet<NodeAddr>) {
        if *self.current.nodes == nodes && self.current.epoch > 0 {
            return;
        }
        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        tracing::info!(nodes = ?names, "read-node membership changed");
        self.current = Membership {
            epoch: self.current.epoch + 1,
            nodes: Arc::new(nodes),
        };
        for s in &self.subscribers {
            s.do_send(self.current.clone());
        }
    }
}

/// Resolves the source into member addresses. A DNS name with several addresses becomes one member per
/// address; a name with one address stays a name (the connection re-resolves it); a name that does not
/// resolve stays too (its link reports it down) so a DNS hiccup does not drop a node.
async fn resolve(source: Source) -> Result<BTreeSet<NodeAddr>, String> {
    let hosts = match source {
        Source::Static(hosts) => hosts,
        Source::File { path, default_port } => {
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse_hosts(&text, default_port).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let mut nodes = BTreeSet::new();
    for host in hosts {
        if host.host.parse::<std::net::IpAddr>().is_ok() {
            nodes.insert(host);
            continue;
        }
        let resolved = tokio::net::lookup_host((&*host.host, host.port))
            .await
            .map(|a| a.collect::<BTreeSet<_>>());
        match resolved {
            Ok(addrs) => {
                if addrs.len() > 1 {
                    nodes.extend(addrs.into_iter().map(|a| NodeAddr {
                        host: a.ip().to_string().into(),
                        port: a.port(),
                    }));
                } else {
                    nodes.insert(host);
                }
            }
            Err(_) => {
                nodes.insert(host);
            }
        }
    }
    Ok(nodes)
}

/// Parses a hosts file: one `host[:port]` per line, blank lines and `#` comments ignored.
pub fn parse_hosts(text: &str, default_port: u16) -> Result<Vec<NodeAddr>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split('#').next().unwrap_or_default().trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| NodeAddr::parse(line, default_port).map_err(|e| format!("line {n}: {e}")))
        .collect()
}

impl Actor for Discovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh(ctx);
        ctx.run_interval(self.refresh, |act, ctx| act.refresh(ctx));
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
            epoch: self.current.epoch,
            nodes: self.current.nodes.len(),
            restarts: self.restarts,
        })
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

    #[test]
    fn hosts_files() {
        let parsed = parse_hosts(
            "# readers\n127.0.0.1:19531\n\n  ro-2  # second\nro-3:7\n",
            19530,
        )
        .unwrap();
        assert_eq!(
            parsed.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["127.0.0.1:19531", "ro-2:19530", "ro-3:7"]
        );
        assert!(parse_hosts("a:b\n", 1).unwrap_err().contains("line 1"));
    }

    #[actix::test]
    async fn a_file_source_publishes_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1:1\n").unwrap();
        let discovery = Discovery::new(
            Source::File {
                path: path.clone(),
                default_port: 19530,
            },
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
        // A broken file keeps the last member set.
        std::fs::write(&path, "127.0.0.1:x\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(discovery.send(GetMembership).await.unwrap(), second);
    }
}
