//! How the gateway finds its nodes (`discovery_class_name` and the `discovery_*` settings), with the
//! checks that span several of them.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::node_addr::NodeAddr;
use crate::settings::Settings;

/// How the gateway finds its read nodes (`discovery_class_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    Static,
    File,
    Kubernetes,
}

impl DiscoveryKind {
    /// Its `discovery_class_name`.
    pub fn name(self) -> &'static str {
        match self {
            DiscoveryKind::Static => "static",
            DiscoveryKind::File => "file",
            DiscoveryKind::Kubernetes => "kubernetes",
        }
    }
}

/// `kubernetes` discovery: the read nodes (and, by a selector of its own, the write node) are the
/// namespace's pods that match, as Mishards' `KubernetesProvider` found them.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesDiscovery {
    /// `None`: the service account's namespace in the cluster, the kubeconfig context's outside it
    /// (`default` when neither names one).
    pub namespace: Option<String>,
    /// Use the pod's service account (`true`) rather than a kubeconfig (`KUBECONFIG`, then
    /// `~/.kube/config`).
    pub in_cluster: bool,
    /// How often the pods are listed afresh whatever the watch says (the watch applies changes at once).
    pub poll_interval: Duration,
    /// Pod names must match this regular expression from their start (Python's `re.match`); checked here.
    pub pod_pattern: Option<String>,
    /// Kubernetes label selector of the read nodes' pods (`tier=ro-servers`).
    pub label_selector: Option<String>,
    /// Label selector of the write node's pod; `None`: the write node is `woserver`.
    pub write_label_selector: Option<String>,
    /// Port of a pod whose containers name no port `milvus` or `grpc`.
    pub default_port: u16,
}

/// The discovery part of the gateway's config.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub kind: DiscoveryKind,
    pub static_hosts: Vec<NodeAddr>,
    pub file: Option<PathBuf>,
    pub kubernetes: Option<KubernetesDiscovery>,
}

impl DiscoveryConfig {
    pub fn from_settings(s: &Settings) -> Result<DiscoveryConfig, ConfigError> {
        let static_port = s.port("discovery_static_port");
        let static_hosts = s
            .list("discovery_static_hosts")
            .iter()
            .map(|h| NodeAddr::parse(h, static_port))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| s.invalid("discovery_static_hosts", r))?;
        let kind = match s.text("discovery_class_name") {
            Some("file") => DiscoveryKind::File,
            Some("kubernetes") => DiscoveryKind::Kubernetes,
            _ => DiscoveryKind::Static,
        };
        let file = s.path("discovery_file");
        if kind == DiscoveryKind::File && file.is_none() {
            return Err(s.invalid(
                "discovery_file",
                "file discovery needs DISCOVERY_FILE (--discovery-file)",
            ));
        }
        let kubernetes = match kind {
            DiscoveryKind::Kubernetes => Some(kubernetes(s, static_port)?),
            _ => None,
        };
        Ok(DiscoveryConfig {
            kind,
            static_hosts,
            file,
            kubernetes,
        })
    }

    /// Whether discovery names the write node (`woserver` unset is then allowed).
    pub fn finds_write_node(&self) -> bool {
        self.kubernetes
            .as_ref()
            .is_some_and(|k| k.write_label_selector.is_some())
    }
}

fn kubernetes(s: &Settings, default_port: u16) -> Result<KubernetesDiscovery, ConfigError> {
    let text = |key: &str| {
        s.text(key)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let pod_pattern = text("discovery_kubernetes_pod_patt");
    if let Some(pattern) = &pod_pattern
        && let Err(e) = regex::Regex::new(pattern)
    {
        return Err(s.invalid(
            "discovery_kubernetes_pod_patt",
            format!("`{pattern}` is not a regular expression: {e}"),
        ));
    }
    let poll = s.int("discovery_kubernetes_poll_interval").unwrap_or(5);
    if !(1..=86_400).contains(&poll) {
        return Err(s.invalid(
            "discovery_kubernetes_poll_interval",
            format!("{poll} seconds: choose 1 to 86400"),
        ));
    }
    Ok(KubernetesDiscovery {
        namespace: text("discovery_kubernetes_namespace"),
        in_cluster: s.flag("discovery_kubernetes_in_cluster"),
        poll_interval: Duration::from_secs(poll),
        pod_pattern,
        label_selector: text("discovery_kubernetes_label_selector"),
        write_label_selector: text("discovery_kubernetes_write_label_selector"),
        default_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, flags};
    use crate::{GatewayConfig, Scope};

    fn config(e: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let s = Settings::resolve(Scope::Gateway, &flags(&[]), &env(e), None)?;
        GatewayConfig::from_settings(&s)
    }

    #[test]
    fn kubernetes_discovery_from_mishards_environment() {
        let g = config(&[
            ("SQLALCHEMY_DATABASE_URI", "sqlite::memory:"),
            ("WOSERVER", "tcp://mishards-rw:19530"),
            ("DISCOVERY_CLASS_NAME", "kubernetes"),
            ("DISCOVERY_KUBERNETES_NAMESPACE", "milvus"),
            ("DISCOVERY_KUBERNETES_IN_CLUSTER", "True"),
            ("DISCOVERY_KUBERNETES_POLL_INTERVAL", "10"),
            ("DISCOVERY_KUBERNETES_POD_PATT", "milvus-ro-servers-.*"),
            ("DISCOVERY_KUBERNETES_LABEL_SELECTOR", "tier=ro-servers"),
            ("DISCOVERY_STATIC_PORT", "19531"),
        ])
        .unwrap();
        assert_eq!(g.discovery.kind, DiscoveryKind::Kubernetes);
        assert_eq!(
            g.discovery.kubernetes,
            Some(KubernetesDiscovery {
                namespace: Some("milvus".into()),
                in_cluster: true,
                poll_interval: Duration::from_secs(10),
                pod_pattern: Some("milvus-ro-servers-.*".into()),
                label_selector: Some("tier=ro-servers".into()),
                write_label_selector: None,
                default_port: 19531,
            })
        );
        assert!(!g.discovery.finds_write_node());
        assert_eq!(
            g.write_node.map(|w| w.to_string()).as_deref(),
            Some("mishards-rw:19530")
        );
    }

    #[test]
    fn the_write_node_may_come_from_kubernetes_and_woserver_still_wins() {
        let base = [
            ("SQLALCHEMY_DATABASE_URI", "sqlite::memory:"),
            ("DISCOVERY_CLASS_NAME", "kubernetes"),
            (
                "DISCOVERY_KUBERNETES_WRITE_LABEL_SELECTOR",
                "tier=rw-server",
            ),
        ];
        let g = config(&base).unwrap();
        assert!(g.discovery.finds_write_node());
        assert_eq!(g.write_node, None, "discovery supplies it");
        let mut with_woserver = base.to_vec();
        with_woserver.push(("WOSERVER", "rw:1"));
        let g = config(&with_woserver).unwrap();
        assert!(!g.discovery.finds_write_node(), "the selector is not used");
        assert_eq!(g.write_node.map(|w| w.to_string()).as_deref(), Some("rw:1"));
        // Without a write selector, WOSERVER is still required.
        let err = config(&base[..2]).unwrap_err().to_string();
        assert!(err.contains("WOSERVER"), "{err}");
    }

    #[test]
    fn bad_kubernetes_settings_are_refused_naming_the_setting() {
        let base = [
            ("SQLALCHEMY_DATABASE_URI", "sqlite::memory:"),
            ("WOSERVER", "rw"),
            ("DISCOVERY_CLASS_NAME", "kubernetes"),
        ];
        for (name, value, says) in [
            (
                "DISCOVERY_KUBERNETES_POD_PATT",
                "ro-(",
                "not a regular expression",
            ),
            (
                "DISCOVERY_KUBERNETES_POLL_INTERVAL",
                "0",
                "choose 1 to 86400",
            ),
        ] {
            let mut e = base.to_vec();
            e.push((name, value));
            let err = config(&e).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(name), "{err}");
        }
        // The defaults: Mishards' 5 s poll, no pattern, no selector, the namespace left to the config.
        let k = config(&base).unwrap().discovery.kubernetes.unwrap();
        assert_eq!(
            (
                k.namespace,
                k.in_cluster,
                k.poll_interval,
                k.pod_pattern,
                k.label_selector,
                k.default_port
            ),
            (None, false, Duration::from_secs(5), None, None, 19530)
        );
    }
}
