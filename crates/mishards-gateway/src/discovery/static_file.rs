//! The `static` and `file` sources: a host list (DNS names re-resolved at every refresh) or a hosts file
//! re-read at every refresh, so operators and chaos tests change membership live.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mishards_config::NodeAddr;

/// Where a polled member list comes from.
#[derive(Debug, Clone)]
pub enum Polled {
    Static(Vec<NodeAddr>),
    /// One `host[:port]` per line; `#` starts a comment; `default_port` where none is given.
    File {
        path: PathBuf,
        default_port: u16,
    },
}

/// Resolves the source into member addresses. A DNS name with several addresses becomes one member per
/// address; a name with one address stays a name (the connection re-resolves it); a name that does not
/// resolve stays too (its link reports it down) so a DNS hiccup does not drop a node.
pub async fn resolve(source: Polled) -> Result<BTreeSet<NodeAddr>, String> {
    let hosts = match source {
        Polled::Static(hosts) => hosts,
        Polled::File { path, default_port } => {
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
}
