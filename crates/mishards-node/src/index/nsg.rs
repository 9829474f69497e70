//! RNSG (Milvus 1.1 index type 4): a Navigating Spreading-out Graph (Fu, Xiang, Wang & Cai,
//! VLDB 2019), built the way Milvus 1.1's knowhere builds it.
//!
//! Build ([`build`]): a kNN graph of `knng` neighbours per row (knowhere gets it from an IVF index
//! over the same rows; so do we, with our [`super::IvfFlat`]); the navigating node is the row
//! nearest the centroid of all rows; every row then searches the kNN graph from the navigating
//! node with a pool of `search_length`, and its out-links are picked among everything that walk
//! visited (plus its kNN neighbours), nearest first and at most `candidate_pool_size` deep, by
//! NSG's rule: a candidate is kept only if no link already kept is closer to it than the row is,
//! up to `out_degree` links. Every kept link is then offered back to its target (the reverse
//! edge), the target's list pruned by the same rule when it overflows. Then a walk over the graph
//! from the navigating node finds the rows it cannot reach; each unreached row is linked from the
//! nearest reached row a search finds, until every row is reachable. A second pass repeats the
//! link step walking the graph just built instead of the kNN graph (see [`build`] for why).
//!
//! Search: greedy best-first from the navigating node, keeping the `search_length` best rows seen
//! in a sorted pool and expanding the best unexpanded one until none is left.
//!
//! What differs from knowhere, and why:
//! - The reverse edges are offered all at once (each target merges its own list with every
//!   incoming edge, then prunes once) instead of one source at a time under per-row locks, so
//!   the graph depends on the data and the seed alone, not on thread timing.
//! - knowhere fills its starting pool with random rows when the navigating node has fewer links
//!   than `search_length`; we start from the navigating node alone (the graph is connected, so
//!   the walk reaches the same region, without spending distances on random rows).
//! - `search_length` larger than the segment is clamped to its row count (knowhere refuses to
//!   build: "search_length > ntotal"), and a search keeps at least `k` rows in its pool (knowhere
//!   returns only `search_length` hits and pads the rest when `k` is larger), widened further
//!   when rows are deleted so `k` live rows come back whenever that many exist.
//! - The kNN graph probes a few IVF lists (see [`build`]) rather than knowhere's 10 % of them,
//!   which costs a tenth of the segment per row: quadratic in the row count.
//! - A second link pass over the first pass's graph (knowhere links once, over the kNN graph):
//!   on clustered data one pass leaves a star-shaped graph that searches navigate poorly.
//!
//! Scores inside are "lower is better" (squared L2, or the negated inner product, as knowhere's
//! `DistanceIP` does); reported distances are Milvus's: squared L2 ascending, or the inner
//! product descending. Equal distances rank by smaller id.

mod build;
mod format;

use std::cmp::Ordering;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use rayon::prelude::*;

use super::distance::{Scorer, prefetch};
use super::topk::{Metric, RowBitmap, TopK, cmp_score};

/// Milvus 1.1's range for the build parameter `search_length`, and for the search parameter of
/// the same name.
pub const SEARCH_LENGTH_RANGE: RangeInclusive<usize> = 10..=300;
/// Milvus 1.1's range for `out_degree`.
pub const OUT_DEGREE_RANGE: RangeInclusive<usize> = 5..=300;
/// Milvus 1.1's range for `candidate_pool_size`.
pub const CANDIDATE_POOL_SIZE_RANGE: RangeInclusive<usize> = 50..=1000;
/// Milvus 1.1's range for `knng`.
pub const KNNG_RANGE: RangeInclusive<usize> = 5..=300;

/// Marks "no row" (the navigating node of an empty index) in the serialized form.
const NO_ROW: u32 = u32::MAX;

/// What RNSG refuses: parameters out of Milvus's ranges, and segments too large to number.
#[derive(Debug, thiserror::Error)]
pub enum NsgError {
    /// A parameter out of range, worded as Milvus 1.1's server words it.
    #[error("Invalid {name} value: {value}. Valid range is [{min}, {max}]")]
    Param {
        name: &'static str,
        value: usize,
        min: usize,
        max: usize,
    },
    #[error("RNSG indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
}

fn check(name: &'static str, value: usize, range: &RangeInclusive<usize>) -> Result<(), NsgError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(NsgError::Param {
        name,
        value,
        min: *range.start(),
        max: *range.end(),
    })
}

/// Build parameters, as Milvus 1.1 names them. Checked by [`Nsg::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsgParams {
    /// Pool size of the walks that collect each row's link candidates, in [`SEARCH_LENGTH_RANGE`].
    pub search_length: usize,
    /// Most links a row keeps when pruned, in [`OUT_DEGREE_RANGE`].
    pub out_degree: usize,
    /// How many of a row's nearest candidates the pruning looks at, in
    /// [`CANDIDATE_POOL_SIZE_RANGE`].
    pub candidate_pool_size: usize,
    /// Neighbours per row in the kNN graph the build starts from, in [`KNNG_RANGE`].
    pub knng: usize,
    /// Seeds the k-means of the IVF index that finds the kNN graph.
    pub seed: u64,
}

impl NsgParams {
    /// Checks the parameters against Milvus 1.1's ranges, in the order Milvus checks them.
    pub fn validate(&self) -> Result<(), NsgError> {
        check("search_length", self.search_length, &SEARCH_LENGTH_RANGE)?;
        check("out_degree", self.out_degree, &OUT_DEGREE_RANGE)?;
        check(
            "candidate_pool_size",
            self.candidate_pool_size,
            &CANDIDATE_POOL_SIZE_RANGE,
        )?;
        check("knng", self.knng, &KNNG_RANGE)
    }
}

/// Search parameters, as Milvus 1.1 names them. Checked by [`Nsg::search`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsgSearch {
    /// Rows kept in the search pool, in [`SEARCH_LENGTH_RANGE`]. Milvus does not tie it to topk;
    /// a pool smaller than `k` is widened to `k` (see the module doc).
    pub search_length: usize,
}

impl NsgSearch {
    /// Checks the parameter against Milvus 1.1's range.
    pub fn validate(&self) -> Result<(), NsgError> {
        check("search_length", self.search_length, &SEARCH_LENGTH_RANGE)
    }
}

/// A row and its score (lower is better), ordered by score, then row: a total order, so every
/// sort and pool below is deterministic.
#[derive(Clone, Copy, Debug)]
struct Scored {
    score: f32,
    row: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_score(self.score, other.score).then(self.row.cmp(&other.row))
    }
}

/// The rows and how they are scored: what every walk and every pruning step reads.
#[derive(Clone, Copy)]
struct Space<'a> {
    vectors: &'a [f32],
    dim: usize,
    scorer: Scorer,
}

impl Space<'_> {
    #[inline]
    fn vector(&self, row: u32) -> &[f32] {
        let r = row as usize;
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }

    /// The score of row `b` seen from `a` (a query or another row's vector).
    #[inline]
    fn score(&self, a: &[f32], b: u32) -> f32 {
        self.scorer.score(a, self.vector(b))
    }
}

/// Rows seen by one walk: a tag per row, equal to `current` when seen, so clearing is one
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

    #[inline]
    fn contains(&self, row: u32) -> bool {
        self.tags[row as usize] == self.current
    }
}

/// A pool entry: a row, its score, and whether the walk has expanded it yet.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hit: Scored,
    expanded: bool,
}

/// Per-walk buffers, reused through [`ScratchPool`].
struct Scratch {
    visited: Visited,
    /// The best rows found so far, best first, at most the pool size.
    pool: Vec<Entry>,
    /// The unseen neighbours of the row being expanded.
    fresh: Vec<u32>,
}

impl Scratch {
    fn new(rows: usize) -> Scratch {
        Scratch {
            visited: Visited::new(rows),
            pool: Vec::new(),
            fresh: Vec::new(),
        }
    }
}

/// NSG's search (knowhere's `GetNeighbors`): from `start`, keep the `size` best rows seen in a
/// sorted pool; repeatedly expand the best unexpanded row (score its unseen neighbours, insert
/// those that make the pool), jumping back when an insert lands before the cursor. Ends when
/// every pool row is expanded; `s.pool` then holds the result, best first. Every row scored
/// along the way is also appended to `seen` when given (the build prunes among them).
fn walk<'g>(
    space: Space<'_>,
    links: impl Fn(u32) -> &'g [u32],
    start: u32,
    q: &[f32],
    size: usize,
    s: &mut Scratch,
    mut seen: Option<&mut Vec<Scored>>,
) {
    let Scratch {
        visited,
        pool,
        fresh,
    } = s;
    let size = size.max(1);
    visited.reset();
    pool.clear();
    visited.check_and_mark(start);
    let first = Scored {
        score: space.score(q, start),
        row: start,
    };
    pool.push(Entry {
        hit: first,
        expanded: false,
    });
    if let Some(v) = seen.as_deref_mut() {
        v.push(first);
    }
    let mut cursor = 0;
    while cursor < pool.len() {
        if pool[cursor].expanded {
            cursor += 1;
            continue;
        }
        pool[cursor].expanded = true;
        let row = pool[cursor].hit.row;
        // Unseen neighbours first, so only vectors about to be scored are prefetched.
        fresh.clear();
        fresh.extend(
            links(row)
                .iter()
                .copied()
                .filter(|&n| !visited.check_and_mark(n)),
        );
        if let Some(&n) = fresh.first() {
            prefetch(space.vector(n));
        }
        let mut lowest = usize::MAX;
        for (i, &n) in fresh.iter().enumerate() {
            if let Some(&next) = fresh.get(i + 1) {
                prefetch(space.vector(next));
            }
            let hit = Scored {
                score: space.score(q, n),
                row: n,
            };
            if let Some(v) = seen.as_deref_mut() {
                v.push(hit);
            }
            if pool.len() >= size {
                if hit >= pool[size - 1].hit {
                    continue;
                }
                pool.pop();
            }
            let at = pool.partition_point(|e| e.hit < hit);
            pool.insert(
                at,
                Entry {
                    hit,
                    expanded: false,
                },
            );
            lowest = lowest.min(at);
        }
        // A row inserted at or before the cursor is the best unexpanded one: go back to it.
        cursor = if lowest <= cursor { lowest } else { cursor + 1 };
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

/// An RNSG index over one segment.
///
/// Rows are the segment's rows in order (row `r` is `vectors[r*dim..(r+1)*dim]`, id `ids[r]`).
/// Links are stored back to back (CSR): row `r` links to `links[link_starts[r]..link_starts[r+1]]`.
/// Most rows have at most `out_degree` links; the rows that connectivity repair linked from
/// may have a few more.
#[derive(Clone, PartialEq)]
pub struct Nsg {
    dim: usize,
    metric: Metric,
    params: NsgParams,
    ids: Vec<i64>,
    vectors: Vec<f32>,
    /// `rows + 1` offsets into `links` (empty when the index is).
    link_starts: Vec<usize>,
    links: Vec<u32>,
    /// Where every walk starts, `None` when empty.
    nav: Option<u32>,
    scorer: Scorer,
    pool: ScratchPool,
}

impl fmt::Debug for Nsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nsg")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .field("links", &self.links.len())
            .field("nav", &self.nav)
            .finish_non_exhaustive()
    }
}

impl Nsg {
    fn space(&self) -> Space<'_> {
        Space {
            vectors: &self.vectors,
            dim: self.dim,
            scorer: self.scorer,
        }
    }

    /// The links of `row`.
    #[inline]
    fn links(&self, row: u32) -> &[u32] {
        let r = row as usize;
        match (self.link_starts.get(r), self.link_starts.get(r + 1)) {
            (Some(&s), Some(&e)) => &self.links[s..e],
            _ => &[],
        }
    }

    /// Searches the `queries.len() / dim` queries and returns the top `k` per query as ids and
    /// Milvus distances (rows short of `k` padded, see [`TopK`]). Rows in `deleted` (by segment
    /// row offset) are walked through but never returned.
    ///
    /// The pool holds `search_length` rows, or `k` if that is more; when rows are deleted it is
    /// widened by the deleted share, and doubled until `k` live rows are in it (or it holds the
    /// whole segment). Queries run in parallel; each query's answer is deterministic.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        search: &NsgSearch,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, NsgError> {
        search.validate()?;
        let metric = self.metric;
        if self.dim == 0 {
            return Ok(TopK::empty(0, k, metric));
        }
        let nq = queries.len() / self.dim;
        let mut out = TopK::empty(nq, k, metric);
        let Some(nav) = self.nav else {
            return Ok(out);
        };
        if nq == 0 || k == 0 {
            return Ok(out);
        }
        let rows = self.len();
        let base = search.search_length.max(k);
        let size = match deleted {
            None => base,
            Some(d) => {
                // Bits past the segment only make this estimate generous.
                let live = rows.saturating_sub(d.count()).max(1);
                base.saturating_mul(rows).div_ceil(live)
            }
        }
        .clamp(1, rows);
        let space = self.space();
        let is_deleted = |r: u32| deleted.is_some_and(|d| d.contains(r as usize));
        let answer = |s: &mut Scratch, q: &[f32], ids: &mut [i64], dists: &mut [f32]| {
            let mut size = size;
            loop {
                walk(space, |r| self.links(r), nav, q, size, s, None);
                let live = s.pool.iter().filter(|e| !is_deleted(e.hit.row)).count();
                // A pool as large as the segment holds every row: the graph is connected.
                if live >= k || size >= rows {
                    break;
                }
                size = size.saturating_mul(2).min(rows);
            }
            let mut hits: Vec<Scored> = s
                .pool
                .iter()
                .map(|e| e.hit)
                .filter(|h| !is_deleted(h.row))
                .collect();
            // Equal distances rank by smaller id (the pool ranked them by row), also at the k-th
            // place, so the cut comes after this sort.
            hits.sort_by(|a, b| {
                cmp_score(a.score, b.score)
                    .then(self.ids[a.row as usize].cmp(&self.ids[b.row as usize]))
            });
            for ((id, d), h) in ids.iter_mut().zip(dists.iter_mut()).zip(&hits) {
                *id = self.ids[h.row as usize];
                *d = metric.unscore(h.score);
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

    pub fn params(&self) -> NsgParams {
        self.params
    }

    /// The number of rows indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The row every search starts from (`None` when empty).
    pub fn navigating_node(&self) -> Option<u32> {
        self.nav
    }

    /// The number of links in the graph (their mean per row is the graph's average degree).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Bytes this index holds in memory: vectors, ids and the graph (for the segment cache's
    /// budget; per-search scratch is not counted).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.vectors.len() * std::mem::size_of::<f32>()
            + self.ids.len() * std::mem::size_of::<i64>()
            + self.link_starts.len() * std::mem::size_of::<usize>()
            + self.links.len() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests;
