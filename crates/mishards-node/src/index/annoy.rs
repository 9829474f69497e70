//! ANNOY (Milvus 1.1 index type 12): a forest of random-projection trees, after Spotify's Annoy,
//! which Milvus 1.1's knowhere `IndexAnnoy` wraps.
//!
//! What follows Annoy: every tree splits its rows recursively by a hyperplane found with Annoy's
//! two-means heuristic (two centroids seeded from two random rows, 200 single-row update steps,
//! each centroid weighted by the rows it has absorbed); a node with at most `K` rows becomes a
//! leaf, `K` being what fits in the space of a split node (`dim + 2` row numbers, as in the Python
//! package's Euclidean index); a split that leaves more than 95% on one side is drawn again (up to
//! three times), and past 99% the rows are dealt out at random. A search walks all trees at once
//! with one priority queue keyed by the smallest margin seen on the way down, gathers leaf rows
//! until `search_k` of them (deleted rows excluded, duplicates included) have been seen, then
//! scores the distinct candidates exactly.
//!
//! Metrics, as Milvus 1.1 maps them: L2 uses Annoy's `Euclidean` (hyperplane halfway between the
//! two centroids, with an offset); IP uses Annoy's `DotProduct`, which turns inner-product search
//! into angular search (Bachrach et al. 2014): each row gets an extra coordinate
//! `√(M² − ‖x‖²)` (`M` the largest norm), the query gets 0, and the trees are angular trees
//! (cosine two-means, hyperplanes through the origin) over the augmented rows. Where Annoy's
//! `DotProduct::margin` adds the split normal's own extra weight squared for every point (the
//! query included), this uses the transformation as the paper states it: the row's extra
//! coordinate times the normal's extra weight, and nothing for the query.
//!
//! Reported distances are exact on the candidates, computed as FLAT computes them (same kernel,
//! same bits): squared L2 ascending (Milvus 1.1's Annoy reported √L2 for ANNOY; every other
//! Milvus index and this crate's contract report the square), or the inner product descending.
//! Equal distances rank by smaller id. `search_k = -1` means Milvus 1.1's default,
//! `max(k · n_trees, 5% of the rows)` (Milvus's Annoy fork; upstream Annoy uses `k · n_trees`).
//!
//! The build is parallel over trees (rayon), each tree seeded from `(seed, tree number)`, so the
//! forest depends on the data and the seed only, whatever the thread count.

mod build;
mod format;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Mutex;

use rayon::prelude::*;

use super::huge_pages::copy_to_huge_pages;
use super::kernel::{self, Isa};
use super::topk::{Metric, RowBitmap, TopK, cmp_score};

/// Milvus 1.1's range for the build parameter `n_trees`.
pub const N_TREES_RANGE: std::ops::RangeInclusive<usize> = 1..=1024;

/// Marks a node reference as a leaf (the low bits are the leaf number); otherwise it is a split.
const LEAF: u32 = 1 << 31;
/// Most rows a segment may hold: row numbers are u32, and leaf/split numbers must stay below
/// [`LEAF`].
const MAX_ROWS: usize = (LEAF - 1) as usize;
/// Candidates scored ahead of the one being scored are prefetched this far ahead.
const PREFETCH_AHEAD: usize = 4;

/// What ANNOY refuses: parameters out of Milvus's ranges and segments too large for it.
#[derive(Debug, thiserror::Error)]
pub enum AnnoyError {
    /// Worded as Milvus 1.1's `CheckParameterRange` words it.
    #[error("Invalid n_trees value: {0}. Valid range is [1, 1024]")]
    NTrees(usize),
    /// Milvus 1.1 documents the range as {-1} ∪ [top_k, n × n_trees]; values past n × n_trees
    /// are accepted (they visit every tree completely).
    #[error(
        "Invalid search_k value: {search_k}. Valid range is {{-1}} ∪ [top_k, n × n_trees] (top_k = {k})"
    )]
    SearchK { search_k: i64, k: usize },
    #[error("ANNOY indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
    #[error("ANNOY forest too large: {nodes} nodes (at most {max}); use fewer trees")]
    TooManyNodes { nodes: usize, max: usize },
}

/// Build parameters, as Milvus 1.1 names them. Checked by [`Annoy::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnoyParams {
    /// Trees in the forest, in [`N_TREES_RANGE`].
    pub n_trees: usize,
    /// Seeds every tree's random choices.
    pub seed: u64,
}

impl AnnoyParams {
    /// Checks the parameters against Milvus 1.1's range.
    pub fn validate(&self) -> Result<(), AnnoyError> {
        if !N_TREES_RANGE.contains(&self.n_trees) {
            return Err(AnnoyError::NTrees(self.n_trees));
        }
        Ok(())
    }
}

/// Search parameters, as Milvus 1.1 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnoySearch {
    /// Leaf rows to gather before scoring: -1 for the default (see the module doc), else at
    /// least the query's `k`.
    pub search_k: i64,
}

impl AnnoySearch {
    /// Checks `search_k` for a query of `k` results: -1, or at least `k`.
    pub fn validate(&self, k: usize) -> Result<(), AnnoyError> {
        if self.search_k == -1 || (self.search_k >= 0 && self.search_k as u64 >= k as u64) {
            Ok(())
        } else {
            Err(AnnoyError::SearchK {
                search_k: self.search_k,
                k,
            })
        }
    }
}

/// The trees, flat. A node reference is a split number, or `LEAF | leaf number`.
///
/// Split `s` has its hyperplane at `planes[s*(dim+1)..]`: the unit normal (`dim` floats), then
/// the offset (L2) or the normal's weight on the augmented coordinate (IP); its children are
/// `children[s]` = [margin ≤ 0 side, margin > 0 side]. Splits are numbered children first, so a
/// child split always has a smaller number than its parent (which is what makes a loaded forest
/// provably acyclic). Leaf `l` holds rows `leaf_rows[leaf_starts[l]..leaf_starts[l+1]]`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Forest {
    roots: Vec<u32>,
    planes: Vec<f32>,
    children: Vec<[u32; 2]>,
    leaf_starts: Vec<usize>,
    leaf_rows: Vec<u32>,
}

impl Forest {
    fn empty() -> Forest {
        Forest {
            leaf_starts: vec![0],
            ..Forest::default()
        }
    }

    fn splits(&self) -> usize {
        self.children.len()
    }

    fn leaves(&self) -> usize {
        self.leaf_starts.len().saturating_sub(1)
    }

    #[inline]
    fn leaf(&self, l: usize) -> &[u32] {
        &self.leaf_rows[self.leaf_starts[l]..self.leaf_starts[l + 1]]
    }
}

/// An ANNOY index over one segment: the rows in segment order (row `r` is
/// `vectors[r*dim..(r+1)*dim]`, id `ids[r]`) and the forest over them.
#[derive(Clone, PartialEq)]
pub struct Annoy {
    dim: usize,
    metric: Metric,
    params: AnnoyParams,
    ids: Vec<i64>,
    vectors: Vec<f32>,
    forest: Forest,
    pool: ScratchPool,
}

impl fmt::Debug for Annoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Annoy")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .field("splits", &self.forest.splits())
            .field("leaves", &self.forest.leaves())
            .finish_non_exhaustive()
    }
}

/// The largest number of rows a leaf holds for vectors of `dim` floats: Annoy's `K`, the row
/// numbers that fit where a split node keeps its normal, offset and two children.
fn leaf_capacity(dim: usize) -> usize {
    dim + 2
}

impl Annoy {
    /// Builds `params.n_trees` trees over `data` (`rows × dim` f32, row-major), after checking
    /// `params` against Milvus 1.1's range.
    ///
    /// The segment has `min(data.len() / dim, ids.len())` rows; with none the index is empty and
    /// every search returns padding. Parallel over trees; the forest depends only on the data
    /// and `params`.
    pub fn build(
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: &AnnoyParams,
    ) -> Result<Annoy, AnnoyError> {
        params.validate()?;
        let rows = data.len().checked_div(dim).unwrap_or(0).min(ids.len());
        if rows > MAX_ROWS {
            return Err(AnnoyError::TooManyRows {
                rows,
                max: MAX_ROWS,
            });
        }
        let isa = Isa::detect();
        let vectors = copy_to_huge_pages(&data[..rows * dim]);
        let sq_norms = kernel::norms_vec(isa, &vectors, rows, dim);
        let forest = if rows == 0 {
            Forest::empty()
        } else {
            build::forest(isa, &vectors, &sq_norms, dim, metric, params)?
        };
        tracing::debug!(
            rows,
            dim,
            n_trees = params.n_trees,
            splits = forest.splits(),
            leaves = forest.leaves(),
            "ANNOY forest built"
        );
        Ok(Annoy {
            dim,
            metric,
            params: *params,
            ids: ids[..rows].to_vec(),
            vectors,
            forest,
            pool: ScratchPool::default(),
        })
    }

    /// Searches the `queries.len() / dim` queries and returns the top `k` per query as ids and
    /// Milvus distances (rows short of `k` padded, see [`TopK`]). Rows in `deleted` (by segment
    /// row offset) are never returned and do not count towards `search_k`; the walk goes on
    /// until `k` distinct live rows are found or the trees are exhausted.
    ///
    /// `search.search_k` must be -1 or at least `k` ([`AnnoySearch::validate`]). Queries run in
    /// parallel; one query runs on the caller's thread.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        search: &AnnoySearch,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, AnnoyError> {
        search.validate(k)?;
        let metric = self.metric;
        if self.dim == 0 {
            return Ok(TopK::empty(0, k, metric));
        }
        let nq = queries.len() / self.dim;
        let mut out = TopK::empty(nq, k, metric);
        if nq == 0 || k == 0 || self.is_empty() {
            return Ok(out);
        }
        let search_k = if search.search_k < 0 {
            (k.saturating_mul(self.forest.roots.len())).max(self.len() * 5 / 100)
        } else {
            usize::try_from(search.search_k).unwrap_or(usize::MAX)
        };
        let isa = Isa::detect();
        let rows = self.len();
        let chunks = out
            .ids
            .chunks_mut(k)
            .zip(out.distances.chunks_mut(k))
            .zip(queries.chunks_exact(self.dim));
        if nq == 1 {
            let mut s = self.pool.take(rows);
            for ((ids, dists), q) in chunks {
                self.search_one(isa, q, k, search_k, deleted, &mut s, ids, dists);
            }
            self.pool.give(s);
        } else {
            let work: Vec<_> = chunks.collect();
            work.into_par_iter().for_each_init(
                || PooledScratch {
                    pool: &self.pool,
                    scratch: self.pool.take(rows),
                },
                |s, ((ids, dists), q)| {
                    self.search_one(isa, q, k, search_k, deleted, &mut s.scratch, ids, dists)
                },
            );
        }
        Ok(out)
    }

    /// One query: walk the forest until `search_k` live leaf rows (and at least `k` distinct
    /// ones) are gathered, then score the distinct ones and keep the best `k`.
    #[allow(clippy::too_many_arguments)]
    fn search_one(
        &self,
        isa: Isa,
        q: &[f32],
        k: usize,
        search_k: usize,
        deleted: Option<&RowBitmap>,
        s: &mut Scratch,
        out_ids: &mut [i64],
        out_dists: &mut [f32],
    ) {
        let dim = self.dim;
        let forest = &self.forest;
        // The rows marked seen are exactly the last search's candidates.
        s.visited.unmark(&s.cands);
        s.queue.clear();
        s.cands.clear();
        for &root in &forest.roots {
            s.queue.push(Pending {
                priority: f32::INFINITY,
                node: root,
            });
        }
        let is_deleted = |r: u32| deleted.is_some_and(|d| d.contains(r as usize));
        let mut gathered = 0usize;
        while gathered < search_k || s.cands.len() < k {
            let Some(Pending { priority, node }) = s.queue.pop() else {
                break;
            };
            if node & LEAF != 0 {
                for &r in forest.leaf((node & !LEAF) as usize) {
                    if is_deleted(r) {
                        continue;
                    }
                    gathered += 1;
                    if !s.visited.check_and_mark(r) {
                        s.cands.push(r);
                    }
                }
            } else {
                let sp = node as usize;
                let plane = &forest.planes[sp * (dim + 1)..(sp + 1) * (dim + 1)];
                let mut m = dot(isa, &plane[..dim], q);
                if self.metric == Metric::L2 {
                    m += plane[dim];
                }
                let [left, right] = forest.children[sp];
                s.queue.push(Pending {
                    priority: priority.min(m),
                    node: right,
                });
                s.queue.push(Pending {
                    priority: priority.min(-m),
                    node: left,
                });
            }
        }
        self.score(isa, q, k, s, out_ids, out_dists);
    }

    /// Exact scores of the gathered candidates, as FLAT computes them; the best `k` (ties by
    /// smaller id) go to the output row.
    fn score(
        &self,
        isa: Isa,
        q: &[f32],
        k: usize,
        s: &mut Scratch,
        out_ids: &mut [i64],
        out_dists: &mut [f32],
    ) {
        let dim = self.dim;
        let n = s.cands.len();
        s.dots.clear();
        s.dots.resize(n, 0.0);
        s.scores.clear();
        s.scores.resize(n, 0.0);
        // L2 also needs each candidate's norm, taken from the same gathered block.
        let l2 = self.metric == Metric::L2;
        if l2 {
            s.xn.clear();
            s.xn.resize(n, 0.0);
        }
        let xn = l2.then_some(&mut s.xn[..]);
        gather_dots(
            isa,
            q,
            &self.vectors,
            &s.cands,
            &mut s.block,
            &mut s.dots,
            xn,
        );
        if l2 {
            let mut qn = [0.0f32];
            kernel::norms(isa, q, 1, dim, &mut qn);
            kernel::l2_scores(isa, qn[0], &s.xn, &s.dots, &mut s.scores);
        } else {
            kernel::ip_scores(isa, &s.dots, &mut s.scores);
        }
        s.hits.clear();
        s.hits.extend(
            s.cands
                .iter()
                .zip(&s.scores)
                .map(|(&r, &score)| (score, self.ids[r as usize])),
        );
        let by_rank = |a: &(f32, i64), b: &(f32, i64)| cmp_score(a.0, b.0).then(a.1.cmp(&b.1));
        if s.hits.len() > k {
            s.hits.select_nth_unstable_by(k - 1, by_rank);
            s.hits.truncate(k);
        }
        s.hits.sort_unstable_by(by_rank);
        for ((id, d), &(score, hid)) in out_ids.iter_mut().zip(out_dists.iter_mut()).zip(&s.hits) {
            *id = hid;
            *d = self.metric.unscore(score);
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn params(&self) -> AnnoyParams {
        self.params
    }

    /// The number of rows indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of trees built (0 when empty).
    pub fn n_trees(&self) -> usize {
        self.forest.roots.len()
    }

    /// Bytes this index holds in memory (for the segment cache's budget).
    pub fn memory_bytes(&self) -> usize {
        let f = &self.forest;
        std::mem::size_of::<Annoy>()
            + self.ids.capacity() * 8
            + self.vectors.capacity() * 4
            + f.roots.capacity() * 4
            + f.planes.capacity() * 4
            + f.children.capacity() * 8
            + f.leaf_starts.capacity() * std::mem::size_of::<usize>()
            + f.leaf_rows.capacity() * 4
    }
}

/// `⟨a, b⟩` through the tile kernel (one pair).
#[inline]
fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0.0f32];
    kernel::dots(isa, a, 1, b, 1, a.len(), &mut out, 1);
    out[0]
}

/// Rows copied together before scoring: 32 rows of dim 128 are 16 KiB, in L1 with the query.
const GATHER_BLOCK: usize = 32;

/// `out[i] = ⟨q, vectors[rows[i]]⟩` for scattered rows: each block of rows is copied into `buf`
/// (prefetching the rows ahead) and scored with one 1 × N kernel call, whose eight independent
/// accumulator chains do a row in a fraction of the time one chain takes. The kernel gives the
/// same bits for a pair whatever the tile shape, so these are FLAT's dot products exactly.
///
/// With `norms_out`, also `norms_out[i] = ‖vectors[rows[i]]‖²` (the bits FLAT uses), computed on
/// the block while it is in L1: cheaper than keeping a norm per row and reading it from a
/// scattered place in memory (a cache miss per candidate).
fn gather_dots(
    isa: Isa,
    q: &[f32],
    vectors: &[f32],
    rows: &[u32],
    buf: &mut Vec<f32>,
    out: &mut [f32],
    mut norms_out: Option<&mut [f32]>,
) {
    let dim = q.len();
    buf.resize(GATHER_BLOCK * dim, 0.0);
    let row = |r: u32| &vectors[r as usize * dim..(r as usize + 1) * dim];
    for (b, (block, out)) in rows
        .chunks(GATHER_BLOCK)
        .zip(out.chunks_mut(GATHER_BLOCK))
        .enumerate()
    {
        for (i, &r) in block.iter().enumerate() {
            if let Some(&ahead) = rows.get(b * GATHER_BLOCK + i + PREFETCH_AHEAD) {
                prefetch(row(ahead));
            }
            buf[i * dim..(i + 1) * dim].copy_from_slice(row(r));
        }
        let n = block.len();
        kernel::dots(isa, q, 1, &buf[..n * dim], n, dim, out, n);
        if let Some(norms) = norms_out.as_deref_mut() {
            let at = b * GATHER_BLOCK;
            kernel::norms(isa, &buf[..n * dim], n, dim, &mut norms[at..at + n]);
        }
    }
}

/// Hints the CPU to start loading `v` (a no-op off x86-64): candidate rows are scattered over
/// the segment, and the next few are known while the current one is scored.
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch never faults, and the pointer comes from a live slice anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// A node waiting in the search queue: the largest priority is expanded first (Annoy's
/// `std::priority_queue`); equal priorities by node reference, so the walk is deterministic.
#[derive(Clone, Copy, Debug)]
struct Pending {
    priority: f32,
    node: u32,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        // The larger priority is the greater (popped first). `cmp_score` ranks NaN after every
        // number, so comparing the negations puts a NaN priority (only from NaN data) below
        // every number: expanded last, never a panic.
        cmp_score(-self.priority, -other.priority)
            .reverse()
            .then(other.node.cmp(&self.node))
    }
}

/// Rows seen by one search, one bit per row: 25 KB for 200,000 rows stays in L2 where a tag per
/// row (2 bytes) did not, and the marks are scattered, so each one was a cache miss.
struct Visited {
    words: Vec<u64>,
    rows: usize,
}

impl Visited {
    fn new(rows: usize) -> Visited {
        Visited {
            words: vec![0; rows.div_ceil(64)],
            rows,
        }
    }

    /// Clears the marks of `marked` (every row marked since the last clear): a search touches
    /// far fewer words than the bitset has.
    fn unmark(&mut self, marked: &[u32]) {
        for &r in marked {
            self.words[r as usize >> 6] = 0;
        }
    }

    /// Marks `row` seen; returns whether it was already.
    #[inline]
    fn check_and_mark(&mut self, row: u32) -> bool {
        let (w, bit) = (row as usize >> 6, 1u64 << (row & 63));
        let word = &mut self.words[w];
        let seen = *word & bit != 0;
        *word |= bit;
        seen
    }
}

/// Per-search buffers, reused through [`ScratchPool`].
struct Scratch {
    visited: Visited,
    queue: BinaryHeap<Pending>,
    cands: Vec<u32>,
    /// Candidate rows copied together for scoring.
    block: Vec<f32>,
    dots: Vec<f32>,
    /// Squared norms of the candidates (L2).
    xn: Vec<f32>,
    scores: Vec<f32>,
    hits: Vec<(f32, i64)>,
}

impl Scratch {
    fn new(rows: usize) -> Scratch {
        Scratch {
            visited: Visited::new(rows),
            queue: BinaryHeap::new(),
            cands: Vec::new(),
            block: Vec::new(),
            dots: Vec::new(),
            xn: Vec::new(),
            scores: Vec::new(),
            hits: Vec::new(),
        }
    }
}

/// Spare scratch buffers, so a query does not allocate (and fault in) a tag per row. Not part
/// of the index's value: clones start empty and equality ignores it.
#[derive(Default)]
struct ScratchPool(Mutex<Vec<Scratch>>);

impl ScratchPool {
    fn take(&self, rows: usize) -> Scratch {
        let spare = self.0.lock().ok().and_then(|mut v| v.pop());
        match spare {
            Some(s) if s.visited.rows == rows => s,
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

#[cfg(test)]
mod tests;
