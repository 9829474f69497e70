//! The global top-k: merging the read nodes' partial answers into the one answer the client sees.
//!
//! Each node searched only its share of the segment files, so the client's top k per query is the best k
//! of the union of the nodes' rows, with the same id reported by two nodes (a file searched twice after a
//! retry, or a segment being replaced) counted once. The result follows Milvus 1.1's `TopKQueryResult`:
//! row-major, `k` entries per query, short rows padded with id -1 and the metric's worst distance.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

/// The id Milvus pads short rows with; never a hit.
pub const PADDING_ID: i64 = -1;

/// Up to this k, duplicate ids are found by scanning the row merged so far rather than by a hash set.
const LINEAR_DEDUP_K: usize = 64;

/// One node's partial answer to the same nq queries: row-major `ids`/`distances`, `k` per row (rows may be
/// padded with id -1). Parts may have different k (a node may answer fewer per row).
#[derive(Debug, Clone, Copy)]
pub struct Partial<'a> {
    pub nq: usize,
    pub k: usize,
    pub ids: &'a [i64],
    pub distances: &'a [f32],
}

/// A part that cannot be merged: the reply of a misbehaving node, named by its index in `parts`, so the
/// caller can report (or retry) that node rather than return a silently wrong answer.
#[derive(thiserror::Error, Debug, PartialEq)]
pub enum PartialMergeError {
    #[error("partial result {part} answers {got} queries, expected {expected}")]
    QueryCount {
        part: usize,
        expected: usize,
        got: usize,
    },
    #[error("partial result {part} has {got} ids, expected nq {nq} × k {k} = {expected}")]
    IdCount {
        part: usize,
        nq: usize,
        k: usize,
        expected: usize,
        got: usize,
    },
    #[error("partial result {part} has {got} distances, expected nq {nq} × k {k} = {expected}")]
    DistanceCount {
        part: usize,
        nq: usize,
        k: usize,
        expected: usize,
        got: usize,
    },
    #[error("partial result {part}: nq {nq} × k {k} overflows")]
    PartTooLarge { part: usize, nq: usize, k: usize },
    #[error("merged result of nq {nq} × k {k} overflows")]
    ResultTooLarge { nq: usize, k: usize },
}

/// Merges partial answers into the global top `k` per query: ascending distance, descending when
/// `higher_is_better` (IP); equal distances by smaller id; an id appears once per row (keeping its best
/// distance); -1 padding never displaces a hit; rows with fewer hits are padded with id -1 and the metric's
/// worst distance (`f32::MAX` ascending, `-f32::MAX` descending). Returns (ids, distances) of length nq*k.
///
/// A NaN distance ranks after every number (it is kept, as the node reported it, if it still makes the
/// top k). Rows a node sent in order — as nodes do — are merged as they are (a k-way merge that stops after
/// k distinct ids); a row out of order is sorted first rather than trusted.
pub fn merge_topk(
    parts: &[Partial<'_>],
    nq: usize,
    k: usize,
    higher_is_better: bool,
) -> Result<(Vec<i64>, Vec<f32>), PartialMergeError> {
    for (i, part) in parts.iter().enumerate() {
        check_part(i, part, nq)?;
    }
    let len = nq
        .checked_mul(k)
        .ok_or(PartialMergeError::ResultTooLarge { nq, k })?;
    let worst = if higher_is_better {
        -f32::MAX
    } else {
        f32::MAX
    };
    let mut ids = Vec::with_capacity(len);
    let mut distances = Vec::with_capacity(len);
    if k == 0 {
        return Ok((ids, distances));
    }

    let order = Order { higher_is_better };
    // Scratch reused across rows: every part's row (hits only) back to back, where each run starts, the
    // merge heap and the ids already output.
    let mut hits: Vec<Hit> = Vec::new();
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(parts.len());
    let mut heap: BinaryHeap<Head> = BinaryHeap::with_capacity(parts.len());
    let mut seen: HashSet<i64> = HashSet::new();

    for row in 0..nq {
        hits.clear();
        runs.clear();
        for part in parts {
            let range = row * part.k..(row + 1) * part.k;
            let start = hits.len();
            let mut sorted = true;
            for (&id, &distance) in part.ids[range.clone()].iter().zip(&part.distances[range]) {
                if id == PADDING_ID {
                    continue;
                }
                let hit = Hit { distance, id };
                if let Some(last) = hits[start..].last() {
                    sorted &= order.cmp(last, &hit) != Ordering::Greater;
                }
                hits.push(hit);
            }
            if !sorted {
                hits[start..].sort_unstable_by(|a, b| order.cmp(a, b));
            }
            if hits.len() > start {
                runs.push((start, hits.len()));
            }
        }

        heap.clear();
        heap.extend(runs.iter().enumerate().map(|(run, &(start, _))| Head {
            hit: hits[start],
            at: start,
            run,
            order,
        }));
        seen.clear();
        let row_start = ids.len();
        while ids.len() - row_start < k {
            let Some(head) = heap.pop() else { break };
            // Runs are in order, so an id's first appearance is its best distance. A short row is
            // searched instead of hashed: cheaper for the usual top-k of tens.
            let first = if k <= LINEAR_DEDUP_K {
                !ids[row_start..].contains(&head.hit.id)
            } else {
                seen.insert(head.hit.id)
            };
            if first {
                ids.push(head.hit.id);
                distances.push(head.hit.distance);
            }
            let next = head.at + 1;
            if next < runs[head.run].1 {
                heap.push(Head {
                    hit: hits[next],
                    at: next,
                    ..head
                });
            }
        }
        let padded = row_start + k;
        ids.resize(padded, PADDING_ID);
        distances.resize(padded, worst);
    }
    Ok((ids, distances))
}

fn check_part(part: usize, p: &Partial<'_>, nq: usize) -> Result<(), PartialMergeError> {
    if p.nq != nq {
        return Err(PartialMergeError::QueryCount {
            part,
            expected: nq,
            got: p.nq,
        });
    }
    let expected =
        nq.checked_mul(p.k)
            .ok_or(PartialMergeError::PartTooLarge { part, nq, k: p.k })?;
    if p.ids.len() != expected {
        return Err(PartialMergeError::IdCount {
            part,
            nq,
            k: p.k,
            expected,
            got: p.ids.len(),
        });
    }
    if p.distances.len() != expected {
        return Err(PartialMergeError::DistanceCount {
            part,
            nq,
            k: p.k,
            expected,
            got: p.distances.len(),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    distance: f32,
    id: i64,
}

/// The result order: better distance first, NaN last, then smaller id.
#[derive(Debug, Clone, Copy)]
struct Order {
    higher_is_better: bool,
}

impl Order {
    fn cmp(self, a: &Hit, b: &Hit) -> Ordering {
        let by_distance = match (a.distance.is_nan(), b.distance.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // Not NaN, so comparable; `partial_cmp` (not `total_cmp`) keeps 0.0 and -0.0 equal.
            (false, false) if self.higher_is_better => b
                .distance
                .partial_cmp(&a.distance)
                .unwrap_or(Ordering::Equal),
            (false, false) => a
                .distance
                .partial_cmp(&b.distance)
                .unwrap_or(Ordering::Equal),
        };
        by_distance.then(a.id.cmp(&b.id))
    }
}

/// A run's current hit in the merge heap; `BinaryHeap` pops the greatest, so "greater" means better.
#[derive(Debug, Clone, Copy)]
struct Head {
    hit: Hit,
    /// Index of `hit` in the row's scratch.
    at: usize,
    run: usize,
    order: Order,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order
            .cmp(&other.hit, &self.hit)
            .then(other.run.cmp(&self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: reproducible random cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// An owned partial answer, for building test cases.
    #[derive(Debug, Clone)]
    struct Part {
        nq: usize,
        k: usize,
        ids: Vec<i64>,
        distances: Vec<f32>,
    }

    impl Part {
        fn view(&self) -> Partial<'_> {
            Partial {
                nq: self.nq,
                k: self.k,
                ids: &self.ids,
                distances: &self.distances,
            }
        }

        /// Rows from per-row hit lists, sorted the way a node sends them and padded to `k`.
        fn from_rows(rows: &[Vec<(i64, f32)>], k: usize, higher_is_better: bool) -> Part {
            let worst = if higher_is_better {
                -f32::MAX
            } else {
                f32::MAX
            };
            let order = Order { higher_is_better };
            let mut part = Part {
                nq: rows.len(),
                k,
                ids: Vec::new(),
                distances: Vec::new(),
            };
            for row in rows {
                let mut row: Vec<Hit> = row
                    .iter()
                    .map(|&(id, distance)| Hit { distance, id })
                    .collect();
                row.sort_by(|a, b| order.cmp(a, b));
                row.truncate(k);
                let pad = k - row.len();
                part.ids.extend(row.iter().map(|h| h.id));
                part.distances.extend(row.iter().map(|h| h.distance));
                part.ids.extend(std::iter::repeat_n(PADDING_ID, pad));
                part.distances.extend(std::iter::repeat_n(worst, pad));
            }
            part
        }
    }

    fn merge(parts: &[Part], nq: usize, k: usize, hib: bool) -> (Vec<i64>, Vec<f32>) {
        let views: Vec<Partial<'_>> = parts.iter().map(Part::view).collect();
        match merge_topk(&views, nq, k, hib) {
            Ok(r) => r,
            Err(e) => panic!("unexpected merge error: {e}"),
        }
    }

    /// Brute force: every distinct id's best distance, fully sorted, cut to k, padded.
    fn brute_force(rows: &[Vec<(i64, f32)>], k: usize, hib: bool) -> (Vec<i64>, Vec<f32>) {
        let worst = if hib { -f32::MAX } else { f32::MAX };
        let order = Order {
            higher_is_better: hib,
        };
        let (mut ids, mut distances) = (Vec::new(), Vec::new());
        for row in rows {
            let mut best: Vec<Hit> = Vec::new();
            for &(id, distance) in row {
                let hit = Hit { distance, id };
                match best.iter_mut().find(|h| h.id == id) {
                    Some(h) if order.cmp(&hit, h) == Ordering::Less => *h = hit,
                    Some(_) => {}
                    None => best.push(hit),
                }
            }
            best.sort_by(|a, b| order.cmp(a, b));
            best.truncate(k);
            for i in 0..k {
                ids.push(best.get(i).map_or(PADDING_ID, |h| h.id));
                distances.push(best.get(i).map_or(worst, |h| h.distance));
            }
        }
        (ids, distances)
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Random whole answers split over random parts (each part sees a random subset of the hits, some hits
    /// in several parts with different distances, different k per part), merged vs brute force.
    #[test]
    fn random_splits_match_brute_force() {
        random_splits(0x2545_f491_4f6c_dd1d, 400, 1..13, 40);
    }

    /// Rows longer than `LINEAR_DEDUP_K`, where duplicates are found by hashing.
    #[test]
    fn random_splits_with_a_large_k_match_brute_force() {
        random_splits(
            0x6a09_e667_f3bc_c908,
            60,
            LINEAR_DEDUP_K + 1..LINEAR_DEDUP_K + 40,
            200,
        );
    }

    fn random_splits(seed: u64, cases: usize, ks: std::ops::Range<usize>, max_ids: usize) {
        let mut rng = Rng(seed);
        for case in 0..cases {
            let nq = 1 + rng.below(4);
            let k = ks.start + rng.below(ks.len());
            let n_parts = 1 + rng.below(5);
            let hib = rng.below(2) == 1;
            let id_space = 1 + rng.below(max_ids) as i64;
            // A small set of distance values makes ties common.
            let levels = 1 + rng.below(8);
            let mut part_rows: Vec<Vec<Vec<(i64, f32)>>> = vec![vec![Vec::new(); nq]; n_parts];
            let mut all_rows: Vec<Vec<(i64, f32)>> = vec![Vec::new(); nq];
            let per_row = 3 * k.max(10);
            for row in 0..nq * per_row {
                let row = row / per_row;
                if rng.below(2) == 0 {
                    continue;
                }
                let id = rng.below(id_space as usize) as i64;
                let distance = (rng.below(levels) as f32 - 2.0) * 0.5;
                let cell = &mut part_rows[rng.below(n_parts)][row];
                // A node reports an id once per row.
                if cell.iter().all(|&(i, _)| i != id) {
                    cell.push((id, distance));
                }
            }
            let mut parts = Vec::new();
            for rows in &part_rows {
                let part_k = 1 + rng.below(k + 3);
                let mut part = Part::from_rows(rows, part_k, hib);
                // Now and then a node sends its rows out of order (padding included): sorted, not trusted.
                if rng.below(4) == 0 {
                    for row in 0..nq {
                        for j in (1..part_k).rev() {
                            let swap = rng.below(j + 1);
                            part.ids.swap(row * part_k + j, row * part_k + swap);
                            part.distances.swap(row * part_k + j, row * part_k + swap);
                        }
                    }
                }
                // What the node actually sent (after its own cut) is what the merge can know about.
                for (row, all) in all_rows.iter_mut().enumerate() {
                    for j in row * part_k..(row + 1) * part_k {
                        if part.ids[j] != PADDING_ID {
                            all.push((part.ids[j], part.distances[j]));
                        }
                    }
                }
                parts.push(part);
            }
            let (ids, distances) = merge(&parts, nq, k, hib);
            let (want_ids, want_distances) = brute_force(&all_rows, k, hib);
            assert_eq!(
                ids, want_ids,
                "case {case}: nq {nq} k {k} hib {hib} {parts:?}"
            );
            assert!(
                same_bits(&distances, &want_distances),
                "case {case}: {distances:?} vs {want_distances:?}"
            );
        }
    }

    /// Exact splits of one brute-force answer (each hit in exactly one part) give back that answer.
    #[test]
    fn disjoint_splits_reassemble_the_brute_force_top_k() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let nq = 1 + rng.below(3);
            let k = 1 + rng.below(20);
            let hib = rng.below(2) == 0;
            let n_parts = 1 + rng.below(6);
            let mut rows: Vec<Vec<(i64, f32)>> = Vec::new();
            for _ in 0..nq {
                let n = rng.below(60);
                rows.push(
                    (0..n as i64)
                        .map(|id| (id * 3 + 1, (rng.next() % 1000) as f32 / 7.0))
                        .collect(),
                );
            }
            let want = brute_force(&rows, k, hib);
            // Each part keeps its own top k of the hits dealt to it: the global top k survives that cut.
            let mut dealt: Vec<Vec<Vec<(i64, f32)>>> = vec![vec![Vec::new(); nq]; n_parts];
            for (r, row) in rows.iter().enumerate() {
                for &hit in row {
                    dealt[rng.below(n_parts)][r].push(hit);
                }
            }
            let parts: Vec<Part> = dealt
                .iter()
                .map(|rows| Part::from_rows(rows, k, hib))
                .collect();
            let got = merge(&parts, nq, k, hib);
            assert_eq!(got.0, want.0, "case {case}");
            assert!(same_bits(&got.1, &want.1), "case {case}");
        }
    }

    #[test]
    fn duplicates_across_parts_keep_the_best_distance() {
        let a = Part::from_rows(&[vec![(7, 0.5), (8, 0.9)]], 2, false);
        let b = Part::from_rows(&[vec![(7, 0.2), (9, 0.3)]], 2, false);
        let (ids, d) = merge(&[a.clone(), b.clone()], 1, 3, false);
        assert_eq!(ids, [7, 9, 8]);
        assert_eq!(d, [0.2, 0.3, 0.9]);
        // The same part twice (a retried node answering again) changes nothing.
        let (ids, _) = merge(&[a.clone(), a.clone(), b], 1, 4, false);
        assert_eq!(ids, [7, 9, 8, -1]);
        // IP: the higher score is the better one to keep.
        let a = Part::from_rows(&[vec![(7, 0.5)]], 1, true);
        let b = Part::from_rows(&[vec![(7, 0.8)]], 1, true);
        let (ids, d) = merge(&[a, b], 1, 2, true);
        assert_eq!(ids, [7, -1]);
        assert_eq!(d, [0.8, -f32::MAX]);
    }

    #[test]
    fn padding_never_displaces_a_hit_and_fills_short_rows() {
        // A hit with the worst possible distance still beats padding, wherever padding sits in a row.
        let a = Part {
            nq: 2,
            k: 3,
            ids: vec![-1, 4, -1, -1, -1, -1],
            distances: vec![0.0, f32::MAX, 0.0, -5.0, -5.0, -5.0],
        };
        let (ids, d) = merge(&[a], 2, 2, false);
        assert_eq!(ids, [4, -1, -1, -1]);
        assert_eq!(d, [f32::MAX; 4]);
        let (ids, d) = merge(&[], 1, 2, true);
        assert_eq!(ids, [-1, -1]);
        assert_eq!(d, [-f32::MAX, -f32::MAX]);
        let (ids, d) = merge(&[], 0, 5, false);
        assert!(ids.is_empty() && d.is_empty());
    }

    #[test]
    fn ip_sorts_descending_and_l2_ascending() {
        let rows = [vec![(1, 0.1), (2, 0.9), (3, 0.5)]];
        let (ids, d) = merge(&[Part::from_rows(&rows, 3, true)], 1, 3, true);
        assert_eq!(ids, [2, 3, 1]);
        assert_eq!(d, [0.9, 0.5, 0.1]);
        let (ids, _) = merge(&[Part::from_rows(&rows, 3, false)], 1, 3, false);
        assert_eq!(ids, [1, 3, 2]);
        // Negative IP scores order correctly too.
        let rows = [vec![(1, -0.1), (2, -0.9)]];
        let (ids, _) = merge(&[Part::from_rows(&rows, 2, true)], 1, 2, true);
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn equal_distances_order_by_smaller_id() {
        for hib in [false, true] {
            // Ties split over parts and sent in the "wrong" tie order by one node.
            let a = Part {
                nq: 1,
                k: 3,
                ids: vec![30, 10, 50],
                distances: vec![1.0; 3],
            };
            let b = Part::from_rows(&[vec![(20, 1.0), (40, 1.0)]], 2, hib);
            let (ids, _) = merge(&[a.clone(), b.clone()], 1, 4, hib);
            assert_eq!(ids, [10, 20, 30, 40], "hib {hib}");
        }
        // 0.0 and -0.0 are the same distance.
        let a = Part {
            nq: 1,
            k: 2,
            ids: vec![5, 3],
            distances: vec![0.0, -0.0],
        };
        let (ids, _) = merge(&[a], 1, 2, false);
        assert_eq!(ids, [3, 5]);
    }

    #[test]
    fn parts_with_different_k() {
        let a = Part::from_rows(&[vec![(1, 0.1)], vec![]], 1, false);
        let b = Part::from_rows(
            &[vec![(2, 0.05), (3, 0.3)], vec![(4, 0.2), (5, 0.1)]],
            4,
            false,
        );
        let c = Part::from_rows(&[vec![], vec![]], 0, false);
        let (ids, d) = merge(&[a, b, c], 2, 3, false);
        assert_eq!(ids, [2, 1, 3, 5, 4, -1]);
        assert_eq!(d, [0.05, 0.1, 0.3, 0.1, 0.2, f32::MAX]);
    }

    #[test]
    fn unsorted_rows_are_sorted_not_trusted() {
        let a = Part {
            nq: 1,
            k: 4,
            ids: vec![1, 2, -1, 3],
            distances: vec![0.9, 0.1, 0.0, 0.5],
        };
        let (ids, d) = merge(std::slice::from_ref(&a), 1, 2, false);
        assert_eq!(ids, [2, 3]);
        assert_eq!(d, [0.1, 0.5]);
        let (ids, _) = merge(&[a], 1, 2, true);
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn nan_distances_rank_last_without_panicking() {
        for hib in [false, true] {
            let a = Part {
                nq: 1,
                k: 3,
                ids: vec![1, 2, 3],
                distances: vec![f32::NAN, 0.5, f32::NAN],
            };
            let b = Part {
                nq: 1,
                k: 2,
                ids: vec![4, 1],
                distances: vec![f32::NAN, 0.7],
            };
            let (ids, d) = merge(&[a, b], 1, 4, hib);
            let want_first = if hib { [1, 2] } else { [2, 1] };
            assert_eq!(ids[..2], want_first, "hib {hib}");
            // Id 1 kept its numeric distance over its NaN; the NaN-only ids come last, by id.
            assert_eq!(ids[2..], [3, 4]);
            assert!(!d[0].is_nan() && !d[1].is_nan() && d[2].is_nan() && d[3].is_nan());
        }
    }

    #[test]
    fn k_zero_gives_an_empty_answer() {
        let a = Part::from_rows(&[vec![(1, 0.1)]], 1, false);
        let (ids, d) = merge(&[a], 1, 0, false);
        assert!(ids.is_empty() && d.is_empty());
    }

    #[test]
    fn malformed_parts_are_rejected_by_index() {
        let good = Part::from_rows(&[vec![(1, 0.1)], vec![(2, 0.2)]], 1, false);
        fn pair<'a>(good: &'a Part, bad: &'a Part) -> Vec<Partial<'a>> {
            vec![good.view(), bad.view()]
        }
        let views = |bad| pair(&good, bad);
        let wrong_nq = Part {
            nq: 3,
            ..good.clone()
        };
        assert_eq!(
            merge_topk(&views(&wrong_nq), 2, 1, false),
            Err(PartialMergeError::QueryCount {
                part: 1,
                expected: 2,
                got: 3
            })
        );
        let short_ids = Part {
            ids: vec![1],
            ..good.clone()
        };
        assert_eq!(
            merge_topk(&views(&short_ids), 2, 1, false),
            Err(PartialMergeError::IdCount {
                part: 1,
                nq: 2,
                k: 1,
                expected: 2,
                got: 1
            })
        );
        let long_distances = Part {
            distances: vec![0.0; 3],
            ..good.clone()
        };
        let err = merge_topk(&views(&long_distances), 2, 1, false);
        assert_eq!(
            err,
            Err(PartialMergeError::DistanceCount {
                part: 1,
                nq: 2,
                k: 1,
                expected: 2,
                got: 3
            })
        );
        assert!(
            err.map_err(|e| e.to_string())
                .unwrap_err()
                .contains("partial result 1 has 3 distances")
        );
        let huge = Partial {
            nq: 2,
            k: usize::MAX,
            ids: &[],
            distances: &[],
        };
        assert_eq!(
            merge_topk(&[huge], 2, 1, false),
            Err(PartialMergeError::PartTooLarge {
                part: 0,
                nq: 2,
                k: usize::MAX
            })
        );
        assert_eq!(
            merge_topk(&[], 2, usize::MAX, false),
            Err(PartialMergeError::ResultTooLarge {
                nq: 2,
                k: usize::MAX
            })
        );
    }
}
