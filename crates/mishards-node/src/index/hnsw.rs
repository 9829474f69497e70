//! HNSW (Milvus 1.1 index type 11): a hierarchical navigable small-world graph, after hnswlib
//! (Malkov & Yashunin), which Milvus 1.1 wraps.
//!
//! What follows hnswlib: level of a row = ⌊−ln(u) / ln(M)⌋; up to `M` links per row on upper
//! levels and `2·M` on level 0; neighbours picked by hnswlib's heuristic (a candidate is kept only
//! if it is closer to the new row than to every neighbour already kept); the search keeps `ef`
//! candidates; deleted rows are still walked through but never returned (hnswlib's filter).
//!
//! What differs, and why: the build inserts rows in batches. Each row of a batch searches the
//! graph as it stood before the batch (in parallel: read-only work) and scores the rows of the
//! batch before it exactly, then picks its neighbours among both; the batch is then linked in one
//! step, each receiving row's list merged once with all its new back links. hnswlib inserts
//! concurrently under per-node locks, so its graph depends on thread timing; batches make the
//! graph a function of the data and the seed alone, whatever the thread count. Since every row
//! sees every row inserted before it (the batch's own through exact scores, which a graph search
//! would only approximate), recall matches or beats hnswlib's, also where batching used to hurt
//! (rows stored cluster by cluster, so that a batch holds whole clusters; queries far from every
//! cluster): see the tests, which state hnswlib's figures on the same rows. A batch is at most
//! 1/32 of the rows already in the graph and at most `MAX_BATCH` rows, so the exact scores cost
//! little.
//!
//! Memory follows hnswlib's `data_level0`: a row's level-0 links sit just before its vector in
//! one block, so expanding a row reads lines that scoring it has just brought in.
//!
//! Scores inside are "lower is better" (squared L2, or the negated inner product; hnswlib uses
//! 1 − ip, which orders the same); reported distances are Milvus's: squared L2 ascending, or the
//! inner product descending. Equal distances rank by smaller id.
//!
//! Past 800 lines on purpose: build, search and the neighbour heuristic share one graph layout and
//! scratch pool, and splitting them would spread that layout's invariants over several files.

mod format;

use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Mutex;

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::distance::{Floats, Scorer, prefetch};
use super::huge_pages::zeroed_on_huge_pages;
use super::topk::{Metric, RowBitmap, TopK, cmp_score};

/// Milvus 1.1's range for the build parameter `M`.
pub const M_RANGE: std::ops::RangeInclusive<usize> = 4..=64;
/// Milvus 1.1's range for the build parameter `efConstruction`.
pub const EF_CONSTRUCTION_RANGE: std::ops::RangeInclusive<usize> = 8..=512;
/// Milvus 1.1's largest search parameter `ef` (the smallest is the query's `k`).
pub const EF_MAX: usize = 32768;

/// Highest level a row may get. At M = 4 (the steepest level distribution) a row reaches level
/// 32 with probability 4^−32, so the cap never changes a real graph; it bounds corrupt input.
const MAX_LEVEL: usize = 32;
/// Batches hold at most `len / BATCH_DIVISOR` rows (`len` the rows already in the graph), so
/// the first rows go in one at a time.
const BATCH_DIVISOR: usize = 32;
/// Largest insertion batch: enough work per batch to keep every core busy, few enough rows
/// that scoring each against the batch's earlier rows stays a small part of the build.
const MAX_BATCH: usize = 256;
/// Marks "no row" in the serialized entry point.
const NO_ROW: u32 = u32::MAX;

/// What HNSW refuses: parameters out of Milvus's ranges, and unreadable serialized indexes.
#[derive(Debug, thiserror::Error)]
pub enum HnswError {
    #[error("HNSW parameter M must be in [4, 64], got {0}")]
    M(usize),
    #[error("HNSW parameter efConstruction must be in [8, 512], got {0}")]
    EfConstruction(usize),
    #[error("HNSW search parameter ef must be in [topk, 32768] = [{k}, 32768], got {ef}")]
    Ef { ef: usize, k: usize },
    #[error("HNSW indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
    #[error("not an HNSW index (bad magic)")]
    Magic,
    #[error("unsupported HNSW index format version {0} (this build reads version 1)")]
    Version(u32),
    #[error("truncated HNSW index: {0}")]
    Truncated(String),
    #[error("corrupt HNSW index: {0}")]
    Corrupt(String),
    #[error("HNSW index checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("reading HNSW index: {0}")]
    Io(#[from] std::io::Error),
}

/// Build parameters, as Milvus 1.1 names them. Checked by [`Hnsw::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per row on the upper levels (twice that on level 0), in [`M_RANGE`].
    pub m: usize,
    /// Candidates kept while linking a new row, in [`EF_CONSTRUCTION_RANGE`].
    pub ef_construction: usize,
    /// Seeds the level of every row.
    pub seed: u64,
}

impl HnswParams {
    /// Checks the parameters against Milvus 1.1's ranges.
    pub fn validate(&self) -> Result<(), HnswError> {
        if !M_RANGE.contains(&self.m) {
            return Err(HnswError::M(self.m));
        }
        if !EF_CONSTRUCTION_RANGE.contains(&self.ef_construction) {
            return Err(HnswError::EfConstruction(self.ef_construction));
        }
        Ok(())
    }
}

/// A row and its score (lower is better), ordered by score, then row: a total order, so every
/// heap and sort below is deterministic. Packed in one u64 (the score's bits mapped to an
/// unsigned order, −0 read as +0 and every NaN after every number, as `cmp_score` orders; then
/// the row) so the search heaps compare plain integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scored(u64);

impl Scored {
    #[inline(always)]
    fn new(score: f32, row: u32) -> Scored {
        // Adding +0 turns −0 into +0 and leaves every other value as it is.
        let bits = (score + 0.0).to_bits();
        let ordered = if score.is_nan() {
            u32::MAX
        } else if bits >> 31 == 1 {
            !bits
        } else {
            bits | 1 << 31
        };
        Scored(((ordered as u64) << 32) | row as u64)
    }

    #[inline(always)]
    fn score(self) -> f32 {
        let ordered = (self.0 >> 32) as u32;
        f32::from_bits(if ordered >> 31 == 1 {
            ordered & !(1 << 31)
        } else {
            !ordered
        })
    }

    #[inline(always)]
    fn row(self) -> u32 {
        self.0 as u32
    }
}

/// Rows seen by one search: a tag per row, equal to `current` when seen, so clearing is one
/// increment (a full wipe only when the tag wraps).
struct Visited {
    tags: Vec<u16>,
    current: u16,
}

impl Visited {
    fn new(rows: usize) -> Visited {
        Visited {
            tags: vec![0; rows],
            current: 0,
        }
    }

    fn reset(&mut self) {
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.tags.iter_mut().for_each(|t| *t = 0);
            self.current = 1;
        }
    }

    /// Marks `row` seen; returns whether it was already.
    #[inline]
    fn check_and_mark(&mut self, row: u32) -> bool {
        let t = &mut self.tags[row as usize];
        let seen = *t == self.current;
        *t = self.current;
        seen
    }
}

/// Per-search buffers, reused through [`ScratchPool`].
struct Scratch {
    visited: Visited,
    /// Rows still to expand, best first.
    candidates: BinaryHeap<std::cmp::Reverse<Scored>>,
    /// The best rows found, worst on top.
    found: BinaryHeap<Scored>,
    /// The unseen neighbours of the row being expanded.
    fresh: Vec<u32>,
}

impl Scratch {
    fn new(rows: usize) -> Scratch {
        Scratch {
            visited: Visited::new(rows),
            candidates: BinaryHeap::new(),
            found: BinaryHeap::new(),
            fresh: Vec::new(),
        }
    }
}

/// Spare scratch buffers: a search over a large segment would otherwise allocate (and fault in)
/// a visited tag per row for every query. Not part of the index's value: clones start empty and
/// equality ignores it.
#[derive(Default)]
struct ScratchPool(Mutex<Vec<Scratch>>);

impl ScratchPool {
    fn take(&self, rows: usize) -> Scratch {
        let spare = self.0.lock().ok().and_then(|mut v| v.pop());
        match spare {
            Some(s) if s.visited.tags.len() == rows => s,
            _ => Scratch::new(rows),
        }
    }

    fn give(&self, s: Scratch) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
}

impl Clone for ScratchPool {
    fn clone(&self) -> Self {
        ScratchPool::default()
    }
}

impl PartialEq for ScratchPool {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// An HNSW index over one segment.
///
/// Rows are the segment's rows in order (id `ids[r]`). Level 0 is one block per row, as hnswlib's
/// `data_level0`: `blocks[r*stride..]` holds a link count, up to `2M` rows, then the row's vector
/// as f32 bits (`stride = 1 + 2M + dim`), so expanding a row reads its links from the lines its
/// vector was just scored from. Level `l ≥ 1` is `upper[r][(l-1)*(M+1)..]`, a count then up to
/// `M` rows (rows of level 0 have no `upper`).
#[derive(Clone, PartialEq)]
pub struct Hnsw {
    dim: usize,
    metric: Metric,
    params: HnswParams,
    ids: Vec<i64>,
    levels: Vec<u8>,
    blocks: Vec<u32>,
    /// u32s per level-0 block: `1 + 2M + dim`.
    stride: usize,
    upper: Vec<Vec<u32>>,
    /// The row searches start from (one of the highest level), `None` when empty.
    entry: Option<u32>,
    max_level: usize,
    scorer: Scorer,
    pool: ScratchPool,
}

impl fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hnsw")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .field("max_level", &self.max_level)
            .finish_non_exhaustive()
    }
}

/// A new row's chosen neighbours, per level from 0 up.
type Plan = Vec<Vec<u32>>;

impl Hnsw {
    /// Builds the graph over `data` (`rows × dim` f32, row-major), after checking `params`
    /// against Milvus 1.1's ranges.
    ///
    /// The segment has `min(data.len() / dim, ids.len())` rows; with none the index is empty and
    /// every search returns padding. The graph depends only on the data and `params` (the seed
    /// picks the levels), not on the thread count. Parallel with rayon.
    pub fn build(
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: HnswParams,
    ) -> Result<Hnsw, HnswError> {
        params.validate()?;
        let rows = data.len().checked_div(dim).unwrap_or(0).min(ids.len());
        // Row numbers are u32, and u32::MAX marks "no row" in the format.
        let max = NO_ROW as usize;
        if rows > max {
            return Err(HnswError::TooManyRows { rows, max });
        }
        let levels: Vec<u8> = (0..rows as u64)
            .map(|r| random_level(params.seed, r, params.m))
            .collect();
        let mut index = Hnsw::with_levels(dim, metric, params, ids[..rows].to_vec(), levels);
        for (r, v) in data[..rows * dim].chunks_exact(dim.max(1)).enumerate() {
            index.set_vector(r, v.iter().map(|x| x.to_bits()));
        }
        index.link_all();
        Ok(index)
    }

    /// An index with its ids and levels but no vectors (zeros) and no links yet.
    fn with_levels(
        dim: usize,
        metric: Metric,
        params: HnswParams,
        ids: Vec<i64>,
        levels: Vec<u8>,
    ) -> Hnsw {
        let rows = ids.len();
        let stride = 1 + 2 * params.m + dim;
        let upper = levels
            .iter()
            .map(|&l| vec![0u32; l as usize * (params.m + 1)])
            .collect();
        Hnsw {
            dim,
            metric,
            params,
            ids,
            levels,
            blocks: zeroed_on_huge_pages(rows * stride),
            stride,
            upper,
            entry: None,
            max_level: 0,
            scorer: Scorer::new(metric),
            pool: ScratchPool::default(),
        }
    }

    /// Inserts every row, in row order, in batches (see the module doc).
    fn link_all(&mut self) {
        let rows = self.len();
        if rows == 0 {
            return;
        }
        self.entry = Some(0);
        self.max_level = self.levels[0] as usize;
        let mut next = 1;
        while next < rows {
            let batch = (next / BATCH_DIVISOR).clamp(1, MAX_BATCH).min(rows - next);
            let range = next..next + batch;
            // Every row of the batch searches the graph as it stood before the batch, and scores
            // the rows of the batch before it exactly: read-only work, so the result does not
            // depend on which thread ran what.
            let plans: Vec<Plan> = if batch == 1 {
                let mut s = self.pool.take(rows);
                let p = vec![self.plan_insert(next as u32, next, &mut s)];
                self.pool.give(s);
                p
            } else {
                range
                    .clone()
                    .into_par_iter()
                    .map_init(
                        || PooledScratch {
                            pool: &self.pool,
                            scratch: self.pool.take(rows),
                        },
                        |s, r| self.plan_insert(r as u32, next, &mut s.scratch),
                    )
                    .collect()
            };
            // Back links, grouped by the row that receives them, each group merged on its own
            // into that row's list: its plan for a row of this batch, else its current links.
            let mut back: Vec<(u8, u32, u32)> = Vec::new();
            for (plan, row) in plans.iter().zip(range.clone()) {
                for (level, links) in plan.iter().enumerate() {
                    back.extend(links.iter().map(|&to| (level as u8, to, row as u32)));
                }
            }
            back.sort_unstable();
            let groups: Vec<&[(u8, u32, u32)]> =
                back.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)).collect();
            let merge = |g: &&[(u8, u32, u32)]| {
                let (level, to) = (g[0].0 as usize, g[0].1);
                let base = match (to as usize).checked_sub(next) {
                    Some(i) => plans[i][level].as_slice(),
                    None => self.links(to, level),
                };
                self.merge_back_links(g, base)
            };
            let merged: Vec<(usize, u32, Vec<u32>)> = if groups.len() < 64 {
                groups.iter().map(merge).collect()
            } else {
                groups.par_iter().map(merge).collect()
            };
            for (plan, row) in plans.iter().zip(range.clone()) {
                for (level, links) in plan.iter().enumerate() {
                    self.set_links(row as u32, level, links);
                }
            }
            for (level, row, links) in &merged {
                self.set_links(*row, *level, links);
            }
            // The first row of the highest level becomes the entry point.
            for row in range {
                if self.levels[row] as usize > self.max_level {
                    self.max_level = self.levels[row] as usize;
                    self.entry = Some(row as u32);
                }
            }
            next += batch;
        }
    }

    /// Where row `row` links: per level `0..=level`, the neighbours hnswlib's heuristic keeps
    /// among the `efConstruction` nearest of the graph as it stood before the batch (found by
    /// its search) and of the rows `batch_start..row` (scored exactly). With the latter, each row
    /// sees every row inserted before it, as in hnswlib's one-at-a-time build; without, the rows
    /// of a batch would never link to each other, and a cluster whose rows arrive together would
    /// be left without inner links.
    fn plan_insert(&self, row: u32, batch_start: usize, s: &mut Scratch) -> Plan {
        let q = self.vector(row);
        let level = self.levels[row as usize] as usize;
        let efc = self.params.ef_construction;
        let mut cands: Vec<Vec<Scored>> = vec![Vec::new(); level + 1];
        if let Some(mut cur) = self.entry {
            let mut cur_score = self.scorer.score(q, self.vector(cur));
            for l in (level + 1..=self.max_level).rev() {
                (cur, cur_score) = self.greedy(q, cur, cur_score, l);
            }
            for l in (0..=level.min(self.max_level)).rev() {
                let found = self.search_level(q, Scored::new(cur_score, cur), efc, l, None, s);
                if let Some(best) = found.first() {
                    (cur, cur_score) = (best.row(), best.score());
                }
                cands[l] = found;
            }
        }
        // Level 0 keeps only what can make its `efc` best (most of the batch cannot); the upper
        // levels, with few rows each, take every row of the batch that reaches them.
        let bound = match cands[0].get(efc - 1) {
            Some(w) => w.score(),
            None => f32::INFINITY,
        };
        for other in batch_start as u32..row {
            let score = self.scorer.score(q, self.vector(other));
            let hit = Scored::new(score, other);
            if score < bound {
                cands[0].push(hit);
            }
            let top = (self.levels[other as usize] as usize).min(level);
            for c in &mut cands[1..=top] {
                c.push(hit);
            }
        }
        cands
            .iter_mut()
            .map(|c| {
                c.sort_unstable();
                c.truncate(efc);
                self.select_neighbours(c, self.params.m)
            })
            .collect()
    }

    /// Row `to`'s new links on `level` once the rows in `group` (all `(level, to, from)`) link to
    /// it, `base` being its links before: appended while there is room, else the heuristic picks
    /// among old and new (hnswlib's `mutuallyConnectNewElement`, for the whole batch at once).
    fn merge_back_links(&self, group: &[(u8, u32, u32)], base: &[u32]) -> (usize, u32, Vec<u32>) {
        let (level, to) = (group[0].0 as usize, group[0].1);
        let cap = self.capacity(level);
        let mut links = base.to_vec();
        links.extend(group.iter().map(|g| g.2));
        if links.len() > cap {
            let x = self.vector(to);
            let mut cands: Vec<Scored> = links
                .iter()
                .map(|&r| Scored::new(self.scorer.score(x, self.vector(r)), r))
                .collect();
            cands.sort_unstable();
            links = self.select_neighbours(&cands, cap);
        }
        (level, to, links)
    }

    /// hnswlib's neighbour heuristic over `cands` (sorted best first): keep a candidate only if
    /// it is closer to the base row than to every neighbour kept so far, up to `max`. This keeps
    /// links pointing in different directions, which is what makes the graph navigable.
    fn select_neighbours(&self, cands: &[Scored], max: usize) -> Vec<u32> {
        if cands.len() < max {
            return cands.iter().map(|c| c.row()).collect();
        }
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for c in cands {
            if kept.len() >= max {
                break;
            }
            let v = self.vector(c.row());
            if kept
                .iter()
                .all(|&k| self.scorer.score(v, self.vector(k)) >= c.score())
            {
                kept.push(c.row());
            }
        }
        kept
    }

    fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    /// Sets row `row`'s vector from its f32 bits.
    fn set_vector(&mut self, row: usize, bits: impl Iterator<Item = u32>) {
        let at = row * self.stride + 1 + 2 * self.params.m;
        for (slot, b) in self.blocks[at..at + self.dim].iter_mut().zip(bits) {
            *slot = b;
        }
    }

    /// The links of `row` on `level` (empty above the row's level).
    #[inline]
    fn links(&self, row: u32, level: usize) -> &[u32] {
        let list = if level == 0 {
            let at = row as usize * self.stride;
            self.blocks.get(at..at + 1 + 2 * self.params.m)
        } else {
            let stride = self.params.m + 1;
            self.upper
                .get(row as usize)
                .and_then(|u| u.get((level - 1) * stride..level * stride))
        };
        match list {
            Some(l) => {
                let n = (l[0] as usize).min(l.len() - 1);
                &l[1..1 + n]
            }
            None => &[],
        }
    }

    fn set_links(&mut self, row: u32, level: usize, links: &[u32]) {
        let list = if level == 0 {
            let at = row as usize * self.stride;
            &mut self.blocks[at..at + 1 + 2 * self.params.m]
        } else {
            let stride = self.params.m + 1;
            &mut self.upper[row as usize][(level - 1) * stride..level * stride]
        };
        let n = links.len().min(list.len() - 1);
        list[0] = n as u32;
        list[1..1 + n].copy_from_slice(&links[..n]);
        // Clear what a longer earlier list left, so equal graphs compare equal.
        list[1 + n..].fill(0);
    }

    /// Row `row`'s vector, as f32 bits.
    #[inline]
    fn vector(&self, row: u32) -> &[u32] {
        let at = row as usize * self.stride + 1 + 2 * self.params.m;
        &self.blocks[at..at + self.dim]
    }

    /// Row `row`'s level-0 block: its links, then its vector.
    #[inline]
    fn block(&self, row: u32) -> &[u32] {
        let at = row as usize * self.stride;
        &self.blocks[at..at + self.stride]
    }

    /// Greedy walk on one upper level: move to the best neighbour while it improves.
    fn greedy<Q: Floats + ?Sized>(
        &self,
        q: &Q,
        mut cur: u32,
        mut cur_score: f32,
        level: usize,
    ) -> (u32, f32) {
        loop {
            let mut moved = false;
            for &n in self.links(cur, level) {
                let s = self.scorer.score(q, self.vector(n));
                if Scored::new(s, n) < Scored::new(cur_score, cur) {
                    (cur, cur_score, moved) = (n, s, true);
                }
            }
            if !moved {
                return (cur, cur_score);
            }
        }
    }

    /// hnswlib's `searchBaseLayer`: best-first search on `level` from `start`, keeping the `ef`
    /// best rows. Rows in `deleted` are walked through but not kept; while fewer than `ef` live
    /// rows are kept the search does not stop early (as hnswlib does with deletions). Returns the
    /// kept rows, best first.
    fn search_level<Q: Floats + ?Sized>(
        &self,
        q: &Q,
        start: Scored,
        ef: usize,
        level: usize,
        deleted: Option<&RowBitmap>,
        s: &mut Scratch,
    ) -> Vec<Scored> {
        let Scratch {
            visited,
            candidates,
            found,
            fresh,
        } = s;
        visited.reset();
        candidates.clear();
        found.clear();
        let is_deleted = |r: u32| deleted.is_some_and(|d| d.contains(r as usize));
        visited.check_and_mark(start.row());
        candidates.push(std::cmp::Reverse(start));
        if !is_deleted(start.row()) {
            found.push(start);
        }
        let mut bound = found.peek().map_or(f32::INFINITY, |w| w.score());
        while let Some(std::cmp::Reverse(c)) = candidates.pop() {
            if c.score() > bound && (found.len() >= ef || deleted.is_none()) {
                break;
            }
            // Unseen neighbours first, so only vectors about to be scored are prefetched (most
            // neighbours are already seen; loading theirs would waste memory bandwidth).
            fresh.clear();
            fresh.extend(
                self.links(c.row(), level)
                    .iter()
                    .copied()
                    .filter(|&n| !visited.check_and_mark(n)),
            );
            // On level 0 the whole block: a row scored now is likely expanded later.
            let fetch = |r: u32| {
                prefetch(if level == 0 {
                    self.block(r)
                } else {
                    self.vector(r)
                })
            };
            if let Some(&first) = fresh.first() {
                fetch(first);
            }
            for (i, &n) in fresh.iter().enumerate() {
                if let Some(&next) = fresh.get(i + 1) {
                    fetch(next);
                }
                let score = self.scorer.score(q, self.vector(n));
                if found.len() < ef || score < bound {
                    let hit = Scored::new(score, n);
                    candidates.push(std::cmp::Reverse(hit));
                    if !is_deleted(n) {
                        found.push(hit);
                        if found.len() > ef {
                            found.pop();
                        }
                    }
                    if let Some(w) = found.peek() {
                        bound = w.score();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = found.drain().collect();
        out.sort_unstable();
        out
    }

    /// The `ef` best live rows for one query, best first (ties by row).
    fn search_one(
        &self,
        q: &[f32],
        ef: usize,
        deleted: Option<&RowBitmap>,
        s: &mut Scratch,
    ) -> Vec<Scored> {
        let Some(mut cur) = self.entry else {
            return Vec::new();
        };
        let mut cur_score = self.scorer.score(q, self.vector(cur));
        for l in (1..=self.max_level).rev() {
            (cur, cur_score) = self.greedy(q, cur, cur_score, l);
        }
        let start = Scored::new(cur_score, cur);
        self.search_level(q, start, ef, 0, deleted, s)
    }

    /// Searches the `queries.len() / dim` queries, keeping `ef` candidates each, and returns the
    /// top `k` per query as ids and Milvus distances (rows short of `k` padded, see [`TopK`]).
    /// Rows in `deleted` (by segment row offset) are never returned, though the search still
    /// walks through them.
    ///
    /// `ef` must lie in `[k, 32768]`, as Milvus 1.1 requires. Queries run in parallel; each
    /// query's answer is deterministic.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        ef: usize,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, HnswError> {
        if ef < k || ef > EF_MAX {
            return Err(HnswError::Ef { ef, k });
        }
        let metric = self.metric;
        if self.dim == 0 {
            return Ok(TopK::empty(0, k, metric));
        }
        let nq = queries.len() / self.dim;
        let mut out = TopK::empty(nq, k, metric);
        if nq == 0 || k == 0 || self.is_empty() {
            return Ok(out);
        }
        let rows = self.len();
        let answer = |s: &mut Scratch, q: &[f32], ids: &mut [i64], dists: &mut [f32]| {
            let mut hits = self.search_one(q, ef, deleted, s);
            // Equal distances rank by smaller id (the search ranked them by row), also at the
            // k-th place, so the cut comes after this sort.
            hits.sort_by(|a, b| {
                cmp_score(a.score(), b.score())
                    .then(self.ids[a.row() as usize].cmp(&self.ids[b.row() as usize]))
            });
            for ((id, d), h) in ids.iter_mut().zip(dists.iter_mut()).zip(&hits) {
                *id = self.ids[h.row() as usize];
                // + 0 reports a zero score as +0 whatever its sign.
                *d = metric.unscore(h.score()) + 0.0;
            }
        };
        let chunks = out
            .ids
            .chunks_mut(k)
            .zip(out.distances.chunks_mut(k))
            .zip(queries.chunks_exact(self.dim));
        if nq == 1 {
            let mut s = self.pool.take(rows);
            for ((ids, dists), q) in chunks {
                answer(&mut s, q, ids, dists);
            }
            self.pool.give(s);
        } else {
            let work: Vec<_> = chunks.collect();
            work.into_par_iter().for_each_init(
                || PooledScratch {
                    pool: &self.pool,
                    scratch: self.pool.take(rows),
                },
                |s, ((ids, dists), q)| answer(&mut s.scratch, q, ids, dists),
            );
        }
        Ok(out)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The number of rows indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes the index holds in memory: vectors, ids, levels and links.
    pub fn memory_bytes(&self) -> usize {
        let upper: usize = self.upper.iter().map(|u| u.len() * 4 + 24).sum();
        self.blocks.len() * 4 + self.ids.len() * 9 + upper
    }

    /// The highest level of the graph (0 when empty).
    pub fn max_level(&self) -> usize {
        self.max_level
    }
}

/// A scratch buffer that goes back to its pool when the rayon task is done with it.
struct PooledScratch<'a> {
    pool: &'a ScratchPool,
    scratch: Scratch,
}

impl Drop for PooledScratch<'_> {
    fn drop(&mut self) {
        // An empty scratch allocates nothing.
        self.pool
            .give(std::mem::replace(&mut self.scratch, Scratch::new(0)));
    }
}

/// Row `row`'s level: ⌊−ln(u) / ln(M)⌋ with u uniform in (0, 1] drawn from the seed's stream at
/// position `row`, so the level of a row does not depend on the order rows are drawn in.
fn random_level(seed: u64, row: u64, m: usize) -> u8 {
    let u = 1.0 - (SplitMix64::nth(seed, row) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let level = (-u.ln() / (m as f64).ln()).floor();
    (level as usize).min(MAX_LEVEL) as u8
}

#[cfg(test)]
mod tests;
