use super::*;

#[test]
fn hedge_counters_are_exported_when_hedging_is_on() {
    let off = GatewayMetrics::new().encode(None).unwrap();
    assert!(!off.contains("hedge"), "{off}");
    let hedging = std::sync::Arc::new(crate::hedge::Hedging::new(None, 0.05));
    hedging.budget.deposit();
    assert!(hedging.budget.try_take(2));
    hedging.budget.won();
    let text = GatewayMetrics::new()
        .with_hedging(Some(hedging))
        .encode(None)
        .unwrap();
    for line in [
        "mishards_hedge_requests_total 2",
        "mishards_hedges_won_total 1",
        "mishards_hedges_denied_total 0",
        "mishards_hedge_budget_searches_total 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
use crate::routing::NodeRouting;

fn link(node: &str, state: LinkState) -> LinkStats {
    LinkStats {
        node: node.into(),
        state,
        reason: None,
        version: Some("1.1.1".into()),
        in_flight: 2,
        latency_ewma_ms: 1.5,
        latency_p95_ms: None,
        requests: 7,
        errors: 1,
        cancelled: 0,
        restarts: 0,
        search_calls: 5,
        batched_searches: 3,
        refused_batches: 2,
    }
}

#[test]
fn rpc_metrics_and_the_cluster_sample_encode_as_openmetrics() {
    let metrics = GatewayMetrics::new();
    metrics.observe("Search", Some(0), Duration::from_millis(3));
    metrics.observe("Search", Some(0), Duration::from_millis(30));
    metrics.observe("Insert", None, Duration::from_micros(50));
    let text = metrics.encode(None).unwrap();
    assert!(
        text.contains("# TYPE mishards_rpc_requests counter"),
        "{text}"
    );
    assert!(
        text.contains("mishards_rpc_requests_total{rpc=\"Search\",code=\"0\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("mishards_rpc_requests_total{rpc=\"Insert\",code=\"grpc_error\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE mishards_rpc_duration_seconds histogram"));
    assert!(
        text.contains("mishards_rpc_duration_seconds_bucket{le=\"0.0001\",rpc=\"Insert\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    // Method names come from clients: odd ones and too many distinct ones become `other`.
    metrics.observe("../etc", None, Duration::ZERO);
    for i in 0..100 {
        metrics.observe(&format!("Made{i}"), None, Duration::ZERO);
    }
    metrics.observe("Search", Some(0), Duration::ZERO);
    let text = metrics.encode(None).unwrap();
    let names = text
        .lines()
        .filter(|l| l.starts_with("mishards_rpc_duration_seconds_count{"))
        .count();
    // Search and Insert (Milvus RPCs, always kept), MAX_RPC_NAMES unknown ones, and `other`.
    assert_eq!(names, MAX_RPC_NAMES + 3, "{text}");
    assert!(
        text.contains("mishards_rpc_requests_total{rpc=\"other\",code=\"grpc_error\"} 37"),
        "{text}"
    );
    assert!(
        text.contains("mishards_rpc_requests_total{rpc=\"Search\",code=\"0\"} 3"),
        "{text}"
    );

    let sample = ClusterSample {
        read_nodes: vec![
            NodeSample {
                node: "127.0.0.1:1".into(),
                stats: Ok(link("127.0.0.1:1", LinkState::Healthy)),
            },
            NodeSample {
                node: "127.0.0.1:2".into(),
                stats: Err("node link unavailable".into()),
            },
        ],
        write_node: NodeSample {
            node: "127.0.0.1:3".into(),
            stats: Ok(link("127.0.0.1:3", LinkState::Down)),
        },
        routing: RoutingStats {
            router: "rendezvous",
            membership_epoch: 2,
            snapshot_epoch: 5,
            snapshot_stale: false,
            nodes: vec![NodeRouting {
                node: "127.0.0.1:1".into(),
                state: LinkState::Healthy,
                files_owned: 4,
                files_tracked: 0,
                slow: false,
            }],
            placement_builds: 3,
            restarts: 0,
        },
        metadata: PollerStats {
            epoch: 5,
            lag_seconds: 0.25,
            ..Default::default()
        },
        inspector: InspectorStats::default(),
        discovery: DiscoveryStats {
            restarts: 2,
            source: "kubernetes",
            epoch: 4,
            source_up: false,
            errors: 3,
            ..Default::default()
        },
    };
    assert_eq!(sample.healthy_read_nodes(), 1);
    let text = metrics.encode(Some(&sample)).unwrap();
    for line in [
        "mishards_node_in_flight{node=\"127.0.0.1:1\",role=\"read\"} 2",
        "mishards_node_latency_ewma_seconds{node=\"127.0.0.1:1\",role=\"read\"} 0.0015",
        "mishards_node_requests_total{node=\"127.0.0.1:3\",role=\"write\"} 7",
        "mishards_node_search_calls_total{node=\"127.0.0.1:3\",role=\"write\"} 5",
        "mishards_node_batched_searches_total{node=\"127.0.0.1:3\",role=\"write\"} 3",
        "mishards_node_refused_batches_total{node=\"127.0.0.1:3\",role=\"write\"} 2",
        "mishards_node_state{node=\"127.0.0.1:1\",role=\"read\",state=\"healthy\"} 1",
        "mishards_node_state{node=\"127.0.0.1:3\",role=\"write\",state=\"healthy\"} 0",
        "mishards_node_state{node=\"127.0.0.1:3\",role=\"write\",state=\"down\"} 1",
        "mishards_routing_files_owned{node=\"127.0.0.1:1\"} 4",
        "mishards_router_info{router=\"rendezvous\"} 1",
        "mishards_metadata_poll_lag_seconds 0.25",
        "mishards_metadata_snapshot_epoch 5",
        "mishards_actor_restarts_total{actor=\"discovery\"} 2",
        "mishards_discovery_source_up 0",
        "mishards_discovery_errors_total 3",
        "mishards_discovery_membership_epoch 4",
        "# TYPE mishards_node_state gauge",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(!text.contains("127.0.0.1:2"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}
