//! The address of a node, as the settings and the discovery files write it.

use std::fmt;

/// A `host:port` address, from `tcp://host:port`, `host:port` or `host` (default port). The host is shared,
/// so a clone (plans, leases and manifests carry one per node per search) allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: std::sync::Arc<str>,
    pub port: u16,
}

impl NodeAddr {
    /// `127.0.0.1:port`.
    pub fn loopback(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    pub fn parse(text: &str, default_port: u16) -> Result<NodeAddr, String> {
        let trimmed = text.trim();
        let rest = trimmed
            .strip_prefix("tcp://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err("empty address".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                let port = port.parse::<u16>().ok().filter(|p| *p != 0);
                (
                    host,
                    port.ok_or_else(|| format!("`{text}` has no valid port"))?,
                )
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(format!("`{text}` is not host[:port]"));
        }
        Ok(NodeAddr {
            host: host.into(),
            port,
        })
    }

    /// The `http://` URI tonic connects to.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert_eq!(
            NodeAddr::parse("tcp://h:1", 2).unwrap(),
            NodeAddr {
                host: "h".into(),
                port: 1
            }
        );
        assert_eq!(NodeAddr::parse("h", 2).unwrap().port, 2);
        assert_eq!(
            NodeAddr::parse("[::1]:5", 2).unwrap().endpoint(),
            "http://[::1]:5"
        );
        assert!(NodeAddr::parse("h:x", 2).is_err());
        assert!(NodeAddr::parse("", 2).is_err());
    }
}
