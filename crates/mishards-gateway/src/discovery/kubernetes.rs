//! The `kubernetes` source: the namespace's pods that match the read nodes' label selector and pod-name
//! pattern (and, by a selector of their own, the write node's pod), through the Kubernetes API.
//!
//! `kube::runtime::watcher` lists the pods, then watches from the list's resourceVersion (bookmarks on,
//! a re-list on `410 Gone`, a re-watch after a dropped stream), with kube's default backoff after errors.
//! Every `poll_interval` the watch is started afresh with a new list, as Mishards polled: a change the
//! watch missed, or the end of an outage on a quiet watch, is seen within that time. The member set is
//! replaced only by a complete list, so an API-server outage keeps the last one.

use std::collections::BTreeMap;

use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use regex::Regex;

use mishards_config::{KubernetesDiscovery, NodeAddr};

/// Container port names that carry the Milvus gRPC API, in order of preference.
pub const PORT_NAMES: [&str; 2] = ["milvus", "grpc"];

/// Which of the gateway's nodes a watch finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
}

/// What the watch tells the `Discovery` actor.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum Observed {
    /// The pods of `role` that are members now, by pod name (after a complete list, or a change since).
    Members {
        role: Role,
        pods: BTreeMap<String, NodeAddr>,
    },
    /// The API server answered a complete list: the source is up.
    Up,
    /// The API server could not be asked, or refused: the last member set stays.
    Down(String),
}

/// The node a pod is, if it is one now: `Running`, Ready, not being deleted, with a pod IP, and (when
/// `pattern` is given) a name that matches it from its start. Its port is the container port named
/// `milvus` (else `grpc`), else `default_port`.
pub fn pod_member(pod: &Pod, pattern: Option<&Regex>, default_port: u16) -> Option<NodeAddr> {
    let name = pod.metadata.name.as_deref()?;
    if let Some(pattern) = pattern
        && pattern.find(name).is_none_or(|m| m.start() != 0)
    {
        return None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let port = PORT_NAMES
        .iter()
        .find_map(|wanted| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(*wanted))
                .and_then(|p| u16::try_from(p.container_port).ok().filter(|p| *p != 0))
        })
        .unwrap_or(default_port);
    Some(NodeAddr {
        host: ip.into(),
        port,
    })
}

/// The pods of one selector: the members as of the last complete list and the changes since.
struct PodSet {
    role: Role,
    pattern: Option<Regex>,
    default_port: u16,
    /// A list in progress (between `Init` and `InitDone`).
    listing: Option<BTreeMap<String, NodeAddr>>,
    /// `None` until the first complete list.
    members: Option<BTreeMap<String, NodeAddr>>,
}

impl PodSet {
    fn member(&self, pod: &Pod) -> Option<NodeAddr> {
        pod_member(pod, self.pattern.as_ref(), self.default_port)
    }

    /// Applies one watcher event; returns the members when they changed, and whether a list completed.
    fn apply(&mut self, event: Event<Pod>) -> (Option<BTreeMap<String, NodeAddr>>, bool) {
        let before = self.members.clone();
        let mut listed = false;
        match event {
            Event::Init => self.listing = Some(BTreeMap::new()),
            Event::InitApply(pod) => {
                let member = self.member(&pod);
                if let (Some(listing), Some(name), Some(member)) =
                    (&mut self.listing, pod.metadata.name, member)
                {
                    listing.insert(name, member);
                }
            }
            Event::InitDone => {
                self.members = Some(self.listing.take().unwrap_or_default());
                listed = true;
            }
            Event::Apply(pod) => {
                let member = self.member(&pod);
                if let (Some(members), Some(name)) = (&mut self.members, pod.metadata.name) {
                    match member {
                        Some(member) => members.insert(name, member),
                        None => members.remove(&name),
                    };
                }
            }
            Event::Delete(pod) => {
                if let (Some(members), Some(name)) = (&mut self.members, pod.metadata.name) {
                    members.remove(&name);
                }
            }
        }
        let changed = self.members != before;
        (changed.then(|| self.members.clone()).flatten(), listed)
    }
}

/// An error and its causes, on one line (kube's own messages name only the outermost).
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A client from the pod's service account (`in_cluster`) or the kubeconfig (`KUBECONFIG`, then
/// `~/.kube/config`; an `http://` server is spoken to in plain HTTP).
async fn client(config: &KubernetesDiscovery) -> Result<kube::Client, String> {
    let kube_config = if config.in_cluster {
        kube::Config::incluster()
            .map_err(|e| format!("in-cluster Kubernetes config: {}", describe(&e)))?
    } else {
        kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig: {}", describe(&e)))?
    };
    kube::Client::try_from(kube_config).map_err(|e| format!("Kubernetes client: {}", describe(&e)))
}

/// Watches the pods until the receiver is gone, telling it what it finds. Each round lists afresh and
/// then watches for `poll_interval`; the member sets carry over rounds, and only a complete list
/// replaces one.
pub async fn watch(config: KubernetesDiscovery, to: Recipient<Observed>) {
    let pattern = match config.pod_pattern.as_deref().map(Regex::new).transpose() {
        Ok(pattern) => pattern,
        Err(e) => {
            // The config checked it; a pattern that fails here is reported, never ignored.
            let _ = to
                .send(Observed::Down(format!("pod name pattern: {e}")))
                .await;
            return;
        }
    };
    let mut read = PodSet {
        role: Role::Read,
        pattern,
        default_port: config.default_port,
        listing: None,
        members: None,
    };
    let mut write = config.write_label_selector.as_ref().map(|_| PodSet {
        role: Role::Write,
        pattern: None,
        default_port: config.default_port,
        listing: None,
        members: None,
    });
    let round = config.poll_interval;
    // Whether the last thing told was `Down`: the next answer of any kind is then `Up`.
    let mut down = false;
    let mut client_cache: Option<kube::Client> = None;
    loop {
        let client = match &client_cache {
            Some(c) => c.clone(),
            None => match client(&config).await {
                Ok(c) => {
                    client_cache = Some(c.clone());
                    c
                }
                Err(reason) => {
                    down = true;
                    if to.send(Observed::Down(reason)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(round).await;
                    continue;
                }
            },
        };
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let api: kube::Api<Pod> = kube::Api::namespaced(client, &namespace);
        let selector = |s: Option<&String>| {
            let watch = watcher::Config::default();
            match s {
                Some(s) => watch.labels(s),
                None => watch,
            }
        };
        let reads = watcher::watcher(api.clone(), selector(config.label_selector.as_ref()))
            .default_backoff()
            .map(|e| (Role::Read, e))
            .boxed();
        let writes = match &config.write_label_selector {
            Some(s) => watcher::watcher(api, selector(Some(s)))
                .default_backoff()
                .map(|e| (Role::Write, e))
                .boxed(),
            None => futures::stream::pending().boxed(),
        };
        let mut events = futures::stream::select(reads, writes);
        let ends = tokio::time::Instant::now() + round;
        // Whether this round completed a list, or said why not.
        let mut accounted = false;
        while let Ok(Some((role, event))) = tokio::time::timeout_at(ends, events.next()).await {
            let set = match role {
                Role::Read => &mut read,
                Role::Write => match write.as_mut() {
                    Some(w) => w,
                    None => continue,
                },
            };
            let message = match event {
                Ok(event) => {
                    let (changed, complete) = set.apply(event);
                    accounted |= complete && role == Role::Read;
                    if (complete || down) && to.send(Observed::Up).await.is_err() {
                        return;
                    }
                    down = false;
                    match changed {
                        Some(pods) => Observed::Members {
                            role: set.role,
                            pods,
                        },
                        None => continue,
                    }
                }
                // A stale resourceVersion: the watcher lists afresh; nothing is down.
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    tracing::debug!(reason = %status.message, "Kubernetes watch expired (410 Gone): listing the pods again");
                    continue;
                }
                Err(e) => {
                    accounted = true;
                    down = true;
                    Observed::Down(format!(
                        "Kubernetes API (namespace {namespace}): {}",
                        describe(&e)
                    ))
                }
            };
            if to.send(message).await.is_err() {
                return;
            }
        }
        if !accounted {
            down = true;
            let reason = format!(
                "Kubernetes API (namespace {namespace}): no complete pod list within {round:?}"
            );
            if to.send(Observed::Down(reason)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "node".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: (!n.is_empty()).then(|| n.to_string()),
                                container_port: *p,
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.1.2.3".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn addr(pod: &Pod, pattern: Option<&str>) -> Option<String> {
        let pattern = pattern.map(|p| Regex::new(p).unwrap());
        pod_member(pod, pattern.as_ref(), 19530).map(|a| a.to_string())
    }

    #[test]
    fn a_running_ready_pod_is_a_member_on_its_named_port() {
        let p = pod("ro-0", &[("metrics", 9091), ("milvus", 19531)]);
        assert_eq!(addr(&p, None).as_deref(), Some("10.1.2.3:19531"));
        // `milvus` wins over `grpc`, whatever the order; `grpc` alone is used; else the default port.
        let p = pod("ro-0", &[("grpc", 7000), ("milvus", 19531)]);
        assert_eq!(addr(&p, None).as_deref(), Some("10.1.2.3:19531"));
        let p = pod("ro-0", &[("http", 80), ("grpc", 7000)]);
        assert_eq!(addr(&p, None).as_deref(), Some("10.1.2.3:7000"));
        let p = pod("ro-0", &[("http", 80), ("", 19533)]);
        assert_eq!(addr(&p, None).as_deref(), Some("10.1.2.3:19530"));
        // A port number that is no port falls back to the default.
        let p = pod("ro-0", &[("milvus", 70000)]);
        assert_eq!(addr(&p, None).as_deref(), Some("10.1.2.3:19530"));
    }

    #[test]
    fn pods_not_running_not_ready_deleting_or_without_ip_are_not_members() {
        let base = pod("ro-0", &[("milvus", 19531)]);
        let mut p = base.clone();
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert_eq!(addr(&p, None), None, "Pending");
        let mut p = base.clone();
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert_eq!(addr(&p, None), None, "Ready=False");
        let mut p = base.clone();
        p.status.as_mut().unwrap().conditions = None;
        assert_eq!(addr(&p, None), None, "no conditions");
        let mut p = base.clone();
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].type_ = "ContainersReady".into();
        assert_eq!(addr(&p, None), None, "only another condition is True");
        let mut p = base.clone();
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(addr(&p, None), None, "being deleted");
        let mut p = base.clone();
        p.status.as_mut().unwrap().pod_ip = None;
        assert_eq!(addr(&p, None), None, "no IP");
        let mut p = base.clone();
        p.status.as_mut().unwrap().pod_ip = Some(String::new());
        assert_eq!(addr(&p, None), None, "empty IP");
        let mut p = base.clone();
        p.status = None;
        assert_eq!(addr(&p, None), None, "no status");
        let mut p = base;
        p.metadata.name = None;
        assert_eq!(addr(&p, None), None, "no name");
    }

    #[test]
    fn the_pod_name_pattern_matches_from_the_start_as_mishards_re_match() {
        let p = pod("milvus-ro-servers-1", &[("milvus", 19531)]);
        assert!(addr(&p, Some("milvus-ro-servers-.*")).is_some());
        assert!(addr(&p, Some("milvus-ro")).is_some(), "a prefix is enough");
        assert!(addr(&p, Some("ro-servers")).is_none(), "not from the start");
        assert!(addr(&p, Some("milvus-rw-.*")).is_none());
        assert!(addr(&p, Some("^.*-1$")).is_some());
        let ipv6 = {
            let mut p = p.clone();
            p.status.as_mut().unwrap().pod_ip = Some("fd00::7".into());
            p
        };
        let member = pod_member(&ipv6, None, 19530).unwrap();
        assert_eq!((&*member.host, member.port), ("fd00::7", 19531));
    }

    #[test]
    fn a_pod_set_replaces_members_only_with_a_complete_list() {
        let mut set = PodSet {
            role: Role::Read,
            pattern: None,
            default_port: 19530,
            listing: None,
            members: None,
        };
        let a = pod("ro-a", &[("milvus", 1)]);
        let b = pod("ro-b", &[("milvus", 2)]);
        assert_eq!(set.apply(Event::Init), (None, false));
        assert_eq!(set.apply(Event::InitApply(a.clone())), (None, false));
        let (members, listed) = set.apply(Event::InitDone);
        assert!(listed);
        assert_eq!(members.unwrap().keys().collect::<Vec<_>>(), ["ro-a"]);
        // A watched pod joins; an unready one leaves; a second list without `ro-a` drops it only once
        // the list is complete.
        let (members, _) = set.apply(Event::Apply(b.clone()));
        assert_eq!(members.unwrap().len(), 2);
        let mut unready = b.clone();
        unready.status.as_mut().unwrap().phase = Some("Failed".into());
        let (members, _) = set.apply(Event::Apply(unready));
        assert_eq!(members.unwrap().keys().collect::<Vec<_>>(), ["ro-a"]);
        assert_eq!(
            set.apply(Event::Apply(a.clone())),
            (None, false),
            "no change"
        );
        set.apply(Event::Init);
        assert_eq!(set.apply(Event::InitApply(b.clone())), (None, false));
        assert_eq!(set.members.as_ref().unwrap().len(), 1, "kept while listing");
        let (members, _) = set.apply(Event::InitDone);
        assert_eq!(members.unwrap().keys().collect::<Vec<_>>(), ["ro-b"]);
        let (members, _) = set.apply(Event::Delete(b));
        assert!(members.unwrap().is_empty());
    }
}
