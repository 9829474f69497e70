//! Segment-file placement: which read node searches which segment file, and where a file goes next when
//! its node fails.
//!
//! A [`Router`] is built once per membership change and then shared read-only (behind an `Arc`) by every
//! search, so building may do the expensive work (the hash ring) and placing stays cheap and lock-free.
//! Both strategies are consistent: a membership change moves only the files of the nodes that came or went,
//! which keeps the read nodes' segment caches warm across scale-ups, restarts and failures.
//!
//! - [`RouterKind::Rendezvous`] (the default): highest-random-weight hashing with a load bound, so no node
//!   owns more than `ceil(c * files / nodes)` of one call's files even when the hashes happen to be lumpy.
//! - [`RouterKind::HashRing`] (`FileBasedHashRingRouter`): the original Mishards' consistent hash ring, kept
//!   for parity, built once here instead of on every query.
//!
//! Every placement lists every node exactly once: the owner first, then the fallbacks a retry walks in order.
//! Everything here is pure: no actors, no I/O, no clocks.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use consistent_hash_ring::{Ring, RingBuilder};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use mishards_config::{NodeAddr, RouterKind};

/// The default rendezvous load bound `c`: loose enough that it rarely overrides the hash (so membership
/// changes stay minimal), tight enough to stop one node getting a visibly larger share of a search.
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;

/// Virtual nodes per node on the hash ring. The original Mishards' ring (ketama) used 160; more points
/// smooth the shares (about ±8% standard deviation at 160) at a cost paid once per membership change.
pub const RING_VNODES: usize = 160;

/// Where one segment file goes: `nodes[0]` is its owner, the rest its fallbacks in order (every other node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlacement {
    pub file_id: i64,
    pub nodes: Vec<NodeAddr>,
}

/// The placement strategy for one membership, built once and shared read-only.
#[derive(Clone)]
pub struct Router {
    /// Sorted and deduplicated, so the same membership always builds the same router.
    nodes: Vec<NodeAddr>,
    /// `host:port` of each node (same index as `nodes`): the identity both strategies hash, so a node's
    /// placement depends on its address and never on its position in the list.
    labels: Vec<String>,
    strategy: Strategy,
}

#[derive(Clone)]
enum Strategy {
    Rendezvous { load_factor: f64 },
    HashRing(Box<HashRing>),
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Router");
        d.field("kind", &self.kind()).field("nodes", &self.labels);
        if let Strategy::Rendezvous { load_factor } = &self.strategy {
            d.field("load_factor", load_factor);
        }
        d.finish()
    }
}

impl Router {
    /// `load_factor`: the rendezvous load bound c (≥ 1.0; default [`DEFAULT_LOAD_FACTOR`]): no node owns more
    /// than ceil(c * files / nodes) of one placement call's files. Values below 1.0 (or NaN) act as 1.0, the
    /// tightest bound that still places every file; the hash ring ignores it.
    pub fn new(kind: RouterKind, mut nodes: Vec<NodeAddr>, load_factor: f64) -> Router {
        nodes.sort();
        nodes.dedup();
        let labels: Vec<String> = nodes.iter().map(ToString::to_string).collect();
        let strategy = match kind {
            RouterKind::Rendezvous => Strategy::Rendezvous {
                load_factor: if load_factor >= 1.0 { load_factor } else { 1.0 },
            },
            RouterKind::HashRing => Strategy::HashRing(Box::new(HashRing::new(&labels))),
        };
        Router {
            nodes,
            labels,
            strategy,
        }
    }

    pub fn kind(&self) -> RouterKind {
        match self.strategy {
            Strategy::Rendezvous { .. } => RouterKind::Rendezvous,
            Strategy::HashRing(_) => RouterKind::HashRing,
        }
    }

    /// The members, sorted and deduplicated.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// Places files (`TableFiles.id` values), deterministic for the same nodes and files, independent of input
    /// order; the result is in the order of `file_ids`, and a repeated id gets the same placement each time.
    /// No nodes → every placement has an empty list.
    ///
    /// With rendezvous hashing a file's owner may depend on the other files of the call (the load bound), but
    /// never on their order.
    pub fn place(&self, file_ids: &[i64]) -> Vec<FilePlacement> {
        if self.nodes.is_empty() {
            return file_ids
                .iter()
                .map(|&file_id| FilePlacement {
                    file_id,
                    nodes: Vec::new(),
                })
                .collect();
        }
        match &self.strategy {
            Strategy::Rendezvous { load_factor } => self.place_rendezvous(file_ids, *load_factor),
            Strategy::HashRing(ring) => file_ids
                .iter()
                .map(|&file_id| FilePlacement {
                    file_id,
                    nodes: self.addrs(&ring.order(file_id, self.nodes.len())),
                })
                .collect(),
        }
    }

    /// The same placement grouped per owner node: node → its file ids (sorted, each once). Convenience for
    /// scatter: one `SearchInFiles` per node. Files without any node are left out.
    pub fn group_by_owner(placements: &[FilePlacement]) -> BTreeMap<NodeAddr, Vec<i64>> {
        let mut groups: BTreeMap<NodeAddr, Vec<i64>> = BTreeMap::new();
        for placement in placements {
            if let Some(owner) = placement.nodes.first() {
                if let Some(files) = groups.get_mut(owner) {
                    files.push(placement.file_id);
                } else {
                    groups.insert(owner.clone(), vec![placement.file_id]);
                }
            }
        }
        for files in groups.values_mut() {
            files.sort_unstable();
            files.dedup();
        }
        groups
    }

    fn addrs(&self, order: &[usize]) -> Vec<NodeAddr> {
        order.iter().map(|&i| self.nodes[i].clone()).collect()
    }

    /// Bounded-load rendezvous: files are handed out in ascending id order (so the outcome does not depend on
    /// the caller's order), each to the first node of its preference order that is still below the cap.
    fn place_rendezvous(&self, file_ids: &[i64], load_factor: f64) -> Vec<FilePlacement> {
        let mut unique = file_ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let cap = load_cap(load_factor, unique.len(), self.nodes.len());
        let mut loads = vec![0usize; self.nodes.len()];
        let mut scratch = Vec::new();
        let orders: Vec<Vec<usize>> = unique
            .iter()
            .map(|&file_id| {
                let mut order = rendezvous_preference(file_id, &self.labels, &mut scratch);
                // Capacity is nodes * cap ≥ files, so some node is always below the cap; should that ever
                // fail, the hash's first choice keeps the file placed rather than dropped.
                let pick = order.iter().position(|&n| loads[n] < cap).unwrap_or(0);
                let owner = order.remove(pick);
                order.insert(0, owner);
                loads[owner] += 1;
                order
            })
            .collect();
        file_ids
            .iter()
            .map(|&file_id| FilePlacement {
                file_id,
                nodes: unique
                    .binary_search(&file_id)
                    .map(|i| self.addrs(&orders[i]))
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// ceil(c * files / nodes), at least 1 so a call with files always has room.
fn load_cap(load_factor: f64, files: usize, nodes: usize) -> usize {
    let cap = (load_factor * files as f64 / nodes.max(1) as f64).ceil();
    // `as` saturates: an infinite factor means no bound.
    (cap as usize).max(1)
}

/// score(file, node) = xxh3_64(file id as 8 little-endian bytes ++ "host:port"): a fixed byte layout, so
/// every gateway (whatever its architecture or version of std's hashing) computes the same scores.
fn rendezvous_score(file_id: i64, label: &str, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    scratch.extend_from_slice(&file_id.to_le_bytes());
    scratch.extend_from_slice(label.as_bytes());
    xxh3_64(scratch)
}

/// Node indices by score descending, ties by node (index order is node order).
fn rendezvous_preference(file_id: i64, labels: &[String], scratch: &mut Vec<u8>) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (rendezvous_score(file_id, label, scratch), i))
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The `FileBasedHashRingRouter` ring plus a clockwise table of its arcs.
///
/// The owner comes from the crate's lookup. Fallbacks are the following distinct nodes clockwise from the
/// file's point: removing a node only deletes its arcs, so every list just loses that node and the file's
/// new owner is its first surviving fallback. (The crate's `replicas` re-hashes the key per replica, which
/// would reshuffle fallback lists on every membership change.)
#[derive(Clone)]
struct HashRing {
    ring: Ring<RingNode, Xxh3Build>,
    /// (last hash of the arc, node index), in ring order; the final arc ends at `u64::MAX` and wraps.
    arcs: Vec<(u64, usize)>,
}

impl HashRing {
    fn new(labels: &[String]) -> HashRing {
        let ring = RingBuilder::new(Xxh3Build)
            .vnodes(RING_VNODES)
            .nodes_iter(labels.iter().enumerate().map(|(index, label)| RingNode {
                label: label.clone(),
                index,
            }))
            .build();
        let arcs = ring
            .resident_ranges()
            .map(|arc| (*arc.keys().end(), arc.node().index))
            .collect();
        HashRing { ring, arcs }
    }

    /// The owner, then every other node in clockwise order from the file's point on the ring.
    fn order(&self, file_id: i64, node_count: usize) -> Vec<usize> {
        let mut order = Vec::with_capacity(node_count);
        let mut seen = vec![false; node_count];
        let mut take = |i: usize, order: &mut Vec<usize>| {
            if let Some(s) = seen.get_mut(i).filter(|s| !**s) {
                *s = true;
                order.push(i);
            }
        };
        if let Some(owner) = self.ring.try_get(file_id) {
            take(owner.index, &mut order);
        }
        if !self.arcs.is_empty() {
            let point = Xxh3Build.hash_one(file_id);
            let start = self.arcs.partition_point(|&(end, _)| end < point) % self.arcs.len();
            let clockwise = self.arcs[start..].iter().chain(&self.arcs[..start]);
            for &(_, node) in clockwise {
                if order.len() == node_count {
                    break;
                }
                take(node, &mut order);
            }
        }
        // Only a node whose every virtual point collided away could be missing; keep the list complete.
        for i in 0..node_count {
            take(i, &mut order);
        }
        order
    }
}

/// A ring member: hashed (and compared) by its `host:port` alone, so its points on the ring depend on its
/// address, not on its index in this membership.
#[derive(Clone, Debug)]
struct RingNode {
    label: String,
    index: usize,
}

impl PartialEq for RingNode {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label
    }
}

impl Eq for RingNode {}

impl Hash for RingNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.label.hash(state);
    }
}

/// xxh3 for the ring, as the design asks, with integers fed little-endian so the ring is the same on every
/// architecture (std's default feeds native-endian bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Xxh3Build;

impl BuildHasher for Xxh3Build {
    type Hasher = Xxh3Hasher;

    fn build_hasher(&self) -> Xxh3Hasher {
        Xxh3Hasher(Xxh3Default::new())
    }
}

struct Xxh3Hasher(Xxh3Default);

impl Hasher for Xxh3Hasher {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        // Always 8 bytes, so 32- and 64-bit gateways agree.
        self.write_u64(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeAddr {
        NodeAddr {
            host: format!("10.0.0.{i}").into(),
            port: 19530,
        }
    }

    fn nodes(range: std::ops::Range<usize>) -> Vec<NodeAddr> {
        range.map(node).collect()
    }

    const KINDS: [RouterKind; 2] = [RouterKind::Rendezvous, RouterKind::HashRing];

    fn owners(placements: &[FilePlacement]) -> BTreeMap<NodeAddr, usize> {
        Router::group_by_owner(placements)
            .into_iter()
            .map(|(n, files)| (n, files.len()))
            .collect()
    }

    /// Deterministic shuffle (xorshift), no extra crates.
    fn shuffled(mut v: Vec<i64>, mut seed: u64) -> Vec<i64> {
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        v
    }

    #[test]
    fn router_is_shareable_across_threads() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Router>();
    }

    #[test]
    fn nodes_are_sorted_and_deduplicated() {
        for kind in KINDS {
            let r = Router::new(kind, vec![node(3), node(1), node(3), node(2)], 1.25);
            assert_eq!(r.nodes(), &[node(1), node(2), node(3)][..]);
            assert_eq!(r.kind(), kind);
        }
    }

    #[test]
    fn no_nodes_gives_empty_lists() {
        for kind in KINDS {
            let r = Router::new(kind, vec![], DEFAULT_LOAD_FACTOR);
            let p = r.place(&[5, 1, 5]);
            assert_eq!(p.iter().map(|p| p.file_id).collect::<Vec<_>>(), [5, 1, 5]);
            assert!(p.iter().all(|p| p.nodes.is_empty()));
            assert!(Router::group_by_owner(&p).is_empty());
        }
    }

    #[test]
    fn placement_is_deterministic_and_input_order_independent() {
        let files: Vec<i64> = (1..=500).map(|i| i * 7 + 3).collect();
        for kind in KINDS {
            let a = Router::new(kind, nodes(0..5), DEFAULT_LOAD_FACTOR);
            // Same members given in another order, with a duplicate.
            let mut members = nodes(0..5);
            members.reverse();
            members.push(node(2));
            let b = Router::new(kind, members, DEFAULT_LOAD_FACTOR);
            let pa = a.place(&files);
            assert_eq!(pa, a.place(&files), "{kind:?}: same call twice");
            assert_eq!(pa, b.place(&files), "{kind:?}: members in another order");
            let mixed = shuffled(files.clone(), 0x9e37_79b9_7f4a_7c15);
            assert_ne!(mixed, files);
            let mut pm = b.place(&mixed);
            assert_eq!(
                pm.iter().map(|p| p.file_id).collect::<Vec<_>>(),
                mixed,
                "{kind:?}: result follows the input order"
            );
            pm.sort_by_key(|p| p.file_id);
            assert_eq!(pa, pm, "{kind:?}: input order changed a placement");
        }
    }

    #[test]
    fn repeated_file_ids_get_one_placement() {
        for kind in KINDS {
            let r = Router::new(kind, nodes(0..3), 1.0);
            let p = r.place(&[9, 4, 9, 9]);
            assert_eq!(p[0], p[2]);
            assert_eq!(p[0], p[3]);
            let groups = Router::group_by_owner(&p);
            let all: Vec<i64> = groups.values().flatten().copied().collect();
            assert_eq!(all.len(), 2, "{kind:?}: {groups:?}");
        }
    }

    #[test]
    fn every_list_holds_every_node_exactly_once() {
        let files: Vec<i64> = (0..2_000).collect();
        for kind in KINDS {
            for n in [1, 2, 5, 13] {
                let r = Router::new(kind, nodes(0..n), DEFAULT_LOAD_FACTOR);
                for p in r.place(&files) {
                    let mut sorted = p.nodes.clone();
                    sorted.sort();
                    assert_eq!(sorted, r.nodes(), "{kind:?} n={n} file {}", p.file_id);
                }
            }
        }
    }

    #[test]
    fn group_by_owner_matches_placement() {
        for kind in KINDS {
            let r = Router::new(kind, nodes(0..4), DEFAULT_LOAD_FACTOR);
            let files = shuffled((0..300).collect(), 7);
            let p = r.place(&files);
            let groups = Router::group_by_owner(&p);
            let mut total = 0;
            for (owner, ids) in &groups {
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
                for id in ids {
                    let placement = p.iter().find(|p| p.file_id == *id);
                    assert_eq!(placement.map(|p| &p.nodes[0]), Some(owner));
                }
                total += ids.len();
            }
            assert_eq!(total, files.len());
        }
    }

    #[test]
    fn rendezvous_score_is_xxh3_of_id_bytes_and_address() {
        let label = "10.0.0.1:19530";
        let mut bytes = 42i64.to_le_bytes().to_vec();
        bytes.extend_from_slice(label.as_bytes());
        assert_eq!(
            rendezvous_score(42, label, &mut Vec::new()),
            xxh3_64(&bytes)
        );
        assert_eq!(node(1).to_string(), label);
    }

    #[test]
    fn rendezvous_balance_stays_within_the_bound() {
        let files: Vec<i64> = (1..=10_000).collect();
        let r = Router::new(RouterKind::Rendezvous, nodes(0..5), DEFAULT_LOAD_FACTOR);
        let cap = load_cap(DEFAULT_LOAD_FACTOR, files.len(), 5);
        assert_eq!(cap, 2_500);
        let counts = owners(&r.place(&files));
        assert_eq!(counts.len(), 5);
        assert_eq!(counts.values().sum::<usize>(), files.len());
        for (n, c) in &counts {
            assert!(*c <= cap, "{n} owns {c} > {cap}");
            // Far below the bound: the hash itself spreads evenly (mean 2,000).
            assert!((1_800..=2_200).contains(c), "{n} owns {c}: {counts:?}");
        }
    }

    #[test]
    fn rendezvous_tight_bound_is_enforced() {
        // With c = 1 the bound bites: every node ends up with exactly its share.
        let files: Vec<i64> = (1..=1_000).collect();
        let r = Router::new(RouterKind::Rendezvous, nodes(0..4), 1.0);
        let p = r.place(&files);
        let counts = owners(&p);
        assert!(counts.values().all(|&c| c == 250), "{counts:?}");
        // The bound overrode the hash for some files, whose first choice is then their first fallback.
        let mut scratch = Vec::new();
        let overridden = p
            .iter()
            .filter(|p| {
                let pref = rendezvous_preference(p.file_id, &r.labels, &mut scratch);
                r.nodes[pref[0]] != p.nodes[0]
            })
            .count();
        assert!(overridden > 0);
        // Even when the bound decides, the caller's order does not.
        let mut mixed = r.place(&shuffled(files.clone(), 99));
        mixed.sort_by_key(|p| p.file_id);
        assert_eq!(mixed, p);
        // Out-of-range factors act as 1.0.
        for c in [0.5, f64::NAN, -3.0] {
            let q = Router::new(RouterKind::Rendezvous, nodes(0..4), c).place(&files);
            assert_eq!(q, p, "load factor {c}");
        }
    }

    #[test]
    fn rendezvous_uneven_counts_fit_the_cap() {
        for (files, n, c) in [
            (7usize, 3usize, 1.0),
            (1, 5, 1.0),
            (10, 4, 1.1),
            (333, 7, 1.0),
        ] {
            let ids: Vec<i64> = (0..files as i64).collect();
            let r = Router::new(RouterKind::Rendezvous, nodes(0..n), c);
            let cap = load_cap(c, files, n);
            let counts = owners(&r.place(&ids));
            assert_eq!(counts.values().sum::<usize>(), files);
            assert!(counts.values().all(|&k| k <= cap), "{counts:?} cap {cap}");
        }
    }

    #[test]
    fn hash_ring_balance_within_a_quarter_of_the_mean() {
        let files: Vec<i64> = (1..=10_000).collect();
        let r = Router::new(RouterKind::HashRing, nodes(0..5), DEFAULT_LOAD_FACTOR);
        let counts = owners(&r.place(&files));
        assert_eq!(counts.len(), 5);
        for (n, c) in &counts {
            assert!((1_500..=2_500).contains(c), "{n} owns {c}: {counts:?}");
        }
    }

    #[test]
    fn hash_ring_owner_is_the_crates_lookup_and_first_arc() {
        let r = Router::new(RouterKind::HashRing, nodes(0..6), DEFAULT_LOAD_FACTOR);
        let Strategy::HashRing(ring) = &r.strategy else {
            panic!("not a ring")
        };
        assert_eq!(ring.ring.vnodes(), 6 * RING_VNODES);
        for file_id in -50..2_000i64 {
            let owner = ring.ring.try_get(file_id).map(|n| n.index);
            // The first arc clockwise from the file's point is the crate's answer too.
            let point = Xxh3Build.hash_one(file_id);
            let start = ring.arcs.partition_point(|&(end, _)| end < point) % ring.arcs.len();
            assert_eq!(owner, Some(ring.arcs[start].1), "file {file_id}");
        }
    }

    /// For 1,000 files over 4 nodes, removing one node moves exactly its files, each to the first surviving
    /// node of its old list, and every list only loses that node; adding a 5th moves files only onto it.
    #[test]
    fn membership_change_moves_only_the_files_of_nodes_that_came_or_went() {
        let files: Vec<i64> = (1..=1_000).collect();
        for kind in KINDS {
            let before = Router::new(kind, nodes(0..4), DEFAULT_LOAD_FACTOR).place(&files);
            if kind == RouterKind::Rendezvous {
                assert_bound_did_not_bite(&before, 4);
            }

            // Remove one node.
            let gone = node(2);
            let after = Router::new(
                kind,
                nodes(0..4).into_iter().filter(|n| *n != gone).collect(),
                DEFAULT_LOAD_FACTOR,
            )
            .place(&files);
            if kind == RouterKind::Rendezvous {
                assert_bound_did_not_bite(&after, 3);
            }
            let mut moved = 0;
            for (old, new) in before.iter().zip(&after) {
                let expected: Vec<NodeAddr> =
                    old.nodes.iter().filter(|n| **n != gone).cloned().collect();
                assert_eq!(new.nodes, expected, "{kind:?} file {}", old.file_id);
                if old.nodes[0] == gone {
                    moved += 1;
                } else {
                    assert_eq!(new.nodes[0], old.nodes[0], "{kind:?}");
                }
            }
            let owned_by_gone = owners(&before).get(&gone).copied().unwrap_or(0);
            assert_eq!(moved, owned_by_gone);
            assert!(moved > 150, "{kind:?}: node owned only {moved} of 1000");

            // Add a fifth node.
            let came = node(4);
            let grown = Router::new(kind, nodes(0..5), DEFAULT_LOAD_FACTOR).place(&files);
            if kind == RouterKind::Rendezvous {
                assert_bound_did_not_bite(&grown, 5);
            }
            let mut gained = 0;
            for (old, new) in before.iter().zip(&grown) {
                let without: Vec<NodeAddr> =
                    new.nodes.iter().filter(|n| **n != came).cloned().collect();
                assert_eq!(without, old.nodes, "{kind:?} file {}", old.file_id);
                if new.nodes[0] != old.nodes[0] {
                    assert_eq!(new.nodes[0], came, "{kind:?} moved between old nodes");
                    gained += 1;
                }
            }
            assert_eq!(gained, owners(&grown).get(&came).copied().unwrap_or(0));
            assert!(gained > 100, "{kind:?}: new node gained only {gained}");
        }
    }

    /// The movement test is only meaningful if the load bound did not override the hash: check that every
    /// owner is its file's first rendezvous choice and that no node reached the cap.
    fn assert_bound_did_not_bite(placements: &[FilePlacement], n: usize) {
        let labels: Vec<String> = nodes(0..5)
            .into_iter()
            .filter(|a| placements.first().is_some_and(|p| p.nodes.contains(a)))
            .map(|a| a.to_string())
            .collect();
        assert_eq!(labels.len(), n);
        let mut scratch = Vec::new();
        for p in placements {
            let pref = rendezvous_preference(p.file_id, &labels, &mut scratch);
            assert_eq!(
                labels[pref[0]],
                p.nodes[0].to_string(),
                "file {}",
                p.file_id
            );
        }
        let cap = load_cap(DEFAULT_LOAD_FACTOR, placements.len(), n);
        let counts = owners(placements);
        assert!(counts.values().all(|&c| c < cap), "{counts:?} cap {cap}");
    }
}
