//! IVF_SQ8 (Milvus 1.1 index type 3; IVF_SQ8H, type 5, is the same index on a CPU build): the
//! IVF_FLAT coarse quantizer, each vector's residual to its list centroid stored as 8-bit scalar
//! codes, as faiss's `IndexIVFScalarQuantizer` with `QT_8bit` and its default `by_residual`
//! (which is how Milvus builds it: `index_factory("IVF<nlist>,SQ8")`).
//!
//! Codes follow faiss's `ScalarQuantizer` (`QT_8bit`, `RS_minmax`): per dimension `d`, `vmin[d]`
//! and `vdiff[d] = vmax[d] − vmin[d]` are the range of the residuals over a training sample (at
//! most 100,000 rows, as faiss); a residual value `r` encodes as
//! `code = ⌊255 · clamp((r − vmin) / vdiff, 0, 1)⌋` (0 when `vdiff` is 0) and decodes to
//! `vmin + (code + 0.5) / 255 · vdiff`, the centre of its bucket. The decoded vector is
//! `centroid + decoded residual`; the reported distance is the query's distance to it (squared L2,
//! or the inner product), as faiss reports.
//!
//! Scoring without decoding: with `s = vdiff / 255`, `mid = vmin + 128.5·s` and `t = code − 128`,
//! the decoded vector is `c + mid + s∘t`. For a query `q` and list centroid `c`, with
//! `b = q − c − mid`:
//! - L2: `‖q − x̂‖² = ‖b‖² − 2·⟨s∘b, t⟩ + ‖s∘t‖²` — a per-(query, list) constant, one dot product
//!   of f32 weights with the i8 codes, and a per-row constant kept beside the codes;
//! - IP: `⟨q, x̂⟩ = ⟨q, c + mid⟩ + ⟨s∘q, t⟩`.
//!
//! Centring the codes on 128 keeps every term near the size of the distance itself, so the f32
//! sums lose little to cancellation. The dot product is `ivf_sq8/kernel.rs` (AVX2 + FMA, portable
//! fallback). Queries are batched list by list as in IVF_FLAT: a list's codes are read once for all
//! the batch's queries that probe it.

mod format;
mod kernel;
#[cfg(test)]
mod tests;

use std::fmt;

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::kernel::{Isa, l2_scores};
use super::kmeans::{assign, bucket_starts, kmeans, sample_indices, sort_by_bucket};
use super::scan::{self, Heaps, Offsets, Rows, l2_norms};
use super::topk::{Metric, RowBitmap, TopK};

/// Milvus 1.1's range for the build parameter `nlist`.
pub const NLIST_RANGE: std::ops::RangeInclusive<usize> = 1..=65536;
/// Milvus 1.1's range for the search parameter `nprobe`.
pub const NPROBE_RANGE: std::ops::RangeInclusive<usize> = 1..=65536;

/// Rows the scalar quantizer's range is trained on (faiss `train_encoder_num_vectors`).
const SQ_TRAIN_ROWS: usize = 100_000;
/// Mixed into the seed for the quantizer's training sample, so it is not k-means' sample.
const SQ_SAMPLE_SALT: u64 = 0x5138_5138_5138_5138;

/// Per-task heap entries (query block × k) a batched search may hold.
const HEAP_BUDGET: usize = 1 << 18;
/// Below this much work (≈ multiply-adds plus bytes streamed) the lists are scanned on the
/// caller's thread alone: waking a pool thread would cost more than it saves.
const SERIAL_WORK: usize = 1 << 18;
/// Most queries scored against one list in one pass (bounds the weight buffer).
const LIST_QUERY_GROUP: usize = 256;
/// Queries per kernel call: the widest tile; their dots stay in a small buffer.
const QUERY_TILE: usize = 4;

/// What IVF_SQ8 refuses.
#[derive(Debug, thiserror::Error)]
pub enum IvfSq8Error {
    #[error("IVF_SQ8 parameter nlist must be in [1, 65536], got {0}")]
    Nlist(usize),
    #[error("IVF_SQ8 search parameter nprobe must be in [1, 65536], got {0}")]
    Nprobe(usize),
    #[error("IVF_SQ8 indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
}

/// Build parameters, as Milvus 1.1 names them. Checked by [`IvfSq8::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfSq8Params {
    /// Coarse lists, in [`NLIST_RANGE`] (clamped to the row count at build time).
    pub nlist: usize,
    /// Seeds k-means and the quantizer's training sample.
    pub seed: u64,
}

impl IvfSq8Params {
    /// Checks the parameters against Milvus 1.1's ranges.
    pub fn validate(&self) -> Result<(), IvfSq8Error> {
        if !NLIST_RANGE.contains(&self.nlist) {
            return Err(IvfSq8Error::Nlist(self.nlist));
        }
        Ok(())
    }
}

/// Search parameters, as Milvus 1.1 names them. Checked by [`IvfSq8::search`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfSq8Search {
    /// Lists probed per query, in [`NPROBE_RANGE`] (clamped to the index's list count).
    pub nprobe: usize,
}

impl IvfSq8Search {
    /// Checks the parameters against Milvus 1.1's ranges.
    pub fn validate(&self) -> Result<(), IvfSq8Error> {
        if !NPROBE_RANGE.contains(&self.nprobe) {
            return Err(IvfSq8Error::Nprobe(self.nprobe));
        }
        Ok(())
    }
}

/// An IVF_SQ8 index over one segment.
///
/// Lists are stored back to back (CSR), as in IVF_FLAT: list `l` holds entries
/// `list_starts[l]..list_starts[l+1]` of `offsets` (segment row offsets, for the deleted bitmap),
/// `ids`, `codes` (`dim` bytes each) and, for L2, `code_norms`. Within a list, entries keep segment
/// row order.
#[derive(Clone, PartialEq)]
pub struct IvfSq8 {
    dim: usize,
    metric: Metric,
    centroids: Vec<f32>,
    /// Squared norms of the centroids (L2 only; derived, not serialized).
    centroid_norms: Vec<f32>,
    /// The trained range per dimension (faiss's `trained`: vmin, then vmax − vmin).
    vmin: Vec<f32>,
    vdiff: Vec<f32>,
    /// `vdiff / 255` and `vmin + 128.5 · step` (derived).
    step: Vec<f32>,
    mid: Vec<f32>,
    list_starts: Vec<usize>,
    offsets: Vec<u32>,
    ids: Vec<i64>,
    /// faiss code − 128 (`code ^ 0x80` as i8), `dim` per entry.
    codes: Vec<i8>,
    /// `‖step ∘ t‖²` per entry (L2 only; derived, not serialized).
    code_norms: Vec<f32>,
}

impl fmt::Debug for IvfSq8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvfSq8")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("nlist", &self.nlist())
            .field("len", &self.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

impl IvfSq8 {
    /// Trains `nlist` centroids on `data` (`rows × dim` f32, row-major) exactly as IVF_FLAT does
    /// (same seed, same lists), trains the per-dimension code range on the residuals, then files
    /// every row's codes under its nearest centroid.
    ///
    /// Deterministic for a given seed, whatever the thread count. `nlist` is clamped to
    /// `1..=rows`; with no rows the index is empty and every search returns padding. The segment
    /// has `min(data.len() / dim, ids.len())` rows.
    pub fn build(
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: &IvfSq8Params,
    ) -> Result<IvfSq8, IvfSq8Error> {
        params.validate()?;
        Self::build_with(Isa::detect(), data, ids, dim, metric, params)
    }

    pub(crate) fn build_with(
        isa: Isa,
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: &IvfSq8Params,
    ) -> Result<IvfSq8, IvfSq8Error> {
        let rows = data.len().checked_div(dim).unwrap_or(0).min(ids.len());
        // Row offsets are stored as u32.
        let max = u32::MAX as usize + 1;
        if rows > max {
            return Err(IvfSq8Error::TooManyRows { rows, max });
        }
        let nlist = if rows == 0 {
            0
        } else {
            params.nlist.clamp(1, rows)
        };
        let data = &data[..rows * dim];
        let centroids = if nlist == 0 {
            Vec::new()
        } else {
            kmeans(isa, data, dim, nlist, metric, params.seed)
        };
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let lists = assign(isa, metric, dim, &centroids, &centroid_norms, data, None);
        let (vmin, vdiff) = if rows == 0 {
            (Vec::new(), Vec::new())
        } else {
            train_range(data, dim, &centroids, &lists, params.seed)
        };
        let (list_starts, order) = sort_by_bucket(&lists, nlist);
        let n = lists.len();
        let mut codes = vec![0i8; n * dim];
        if dim > 0 {
            codes
                .par_chunks_mut(dim)
                .zip(order.par_iter())
                .for_each(|(out, &r)| {
                    let c = lists[r] as usize;
                    encode(
                        &data[r * dim..(r + 1) * dim],
                        &centroids[c * dim..(c + 1) * dim],
                        &vmin,
                        &vdiff,
                        out,
                    );
                });
        }
        // `rows` is bounded by u32::MAX + 1 above, so every offset fits.
        let offsets: Vec<u32> = order.iter().map(|&r| r as u32).collect();
        let out_ids: Vec<i64> = order.iter().map(|&r| ids[r]).collect();
        tracing::debug!(rows, dim, nlist, "IVF_SQ8 built");
        Ok(Self::assemble(
            dim,
            metric,
            centroids,
            vmin,
            vdiff,
            list_starts,
            offsets,
            out_ids,
            codes,
        ))
    }

    /// The index from its stored parts, with the derived ones computed (build and read share
    /// this, so a read index equals the one written).
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dim: usize,
        metric: Metric,
        centroids: Vec<f32>,
        vmin: Vec<f32>,
        vdiff: Vec<f32>,
        list_starts: Vec<usize>,
        offsets: Vec<u32>,
        ids: Vec<i64>,
        codes: Vec<i8>,
    ) -> IvfSq8 {
        let isa = Isa::detect();
        let nlist = list_starts.len().saturating_sub(1);
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let step: Vec<f32> = vdiff.iter().map(|&v| v / 255.0).collect();
        let mid: Vec<f32> = vmin
            .iter()
            .zip(&step)
            .map(|(&lo, &s)| lo + 128.5 * s)
            .collect();
        let code_norms = match metric {
            Metric::L2 if dim > 0 => codes
                .par_chunks(dim)
                .map(|t| {
                    t.iter()
                        .zip(&step)
                        .map(|(&t, &s)| {
                            let v = s * t as f32;
                            v * v
                        })
                        .sum()
                })
                .collect(),
            _ => Vec::new(),
        };
        IvfSq8 {
            dim,
            metric,
            centroids,
            centroid_norms,
            vmin,
            vdiff,
            step,
            mid,
            list_starts,
            offsets,
            ids,
            codes,
            code_norms,
        }
    }

    /// Searches the `search.nprobe` lists nearest each of the `queries.len() / dim` queries
    /// (clamped to `1..=nlist`) and returns the top `k` per query, distances to the decoded vectors
    /// (see the module doc). Rows in `deleted` (by original segment row offset) are never
    /// returned; a query whose probed lists hold fewer than `k` live rows is searched again over
    /// twice as many lists, until it has `k` hits or every list was probed.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        search: &IvfSq8Search,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, IvfSq8Error> {
        search.validate()?;
        Ok(self.search_with(Isa::detect(), queries, k, search.nprobe, deleted))
    }

    pub(crate) fn search_with(
        &self,
        isa: Isa,
        queries: &[f32],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
    ) -> TopK {
        let (dim, nlist) = (self.dim, self.nlist());
        let nq = queries.len().checked_div(dim).unwrap_or(0);
        let queries = &queries[..nq * dim];
        if nq == 0 || k == 0 || self.is_empty() {
            return TopK::empty(nq, k, self.metric);
        }
        let mut nprobe = nprobe.clamp(1, nlist);
        let mut out = self.search_probed(isa, queries, k, nprobe, deleted);
        // Widen short rows (dense deletes, or small lists) until they are full or all lists were
        // probed. The live count is only needed once some row is short.
        let mut live = None;
        while nprobe < nlist {
            let hits = |q: usize| out.row_ids(q).iter().filter(|&&id| id != -1).count();
            if (0..nq).all(|q| hits(q) == k) {
                break;
            }
            let live = *live.get_or_insert_with(|| self.live_rows(deleted));
            let short: Vec<usize> = (0..nq).filter(|&q| hits(q) < k.min(live)).collect();
            if short.is_empty() {
                break;
            }
            nprobe = nprobe.saturating_mul(2).min(nlist);
            let mut again = Vec::with_capacity(short.len() * dim);
            for &q in &short {
                again.extend_from_slice(&queries[q * dim..(q + 1) * dim]);
            }
            let wider = self.search_probed(isa, &again, k, nprobe, deleted);
            for (i, &q) in short.iter().enumerate() {
                out.ids[q * k..(q + 1) * k].copy_from_slice(wider.row_ids(i));
                out.distances[q * k..(q + 1) * k].copy_from_slice(wider.row_distances(i));
            }
        }
        out
    }

    /// Rows not in `deleted`.
    fn live_rows(&self, deleted: Option<&RowBitmap>) -> usize {
        match deleted {
            None => self.len(),
            Some(del) => (0..self.len()).filter(|&r| !del.contains(r)).count(),
        }
    }

    /// One search pass at a fixed `nprobe` (already clamped to `1..=nlist`).
    fn search_probed(
        &self,
        isa: Isa,
        queries: &[f32],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
    ) -> TopK {
        let (dim, metric, nlist) = (self.dim, self.metric, self.nlist());
        let nq = queries.len() / dim;
        let mut out = TopK::empty(nq, k, metric);
        let list_ids: Vec<i64> = (0..nlist as i64).collect();
        let centroids = Rows {
            vecs: &self.centroids,
            norms: (metric == Metric::L2).then_some(&self.centroid_norms[..]),
            ids: &list_ids,
            offsets: Offsets::Base(0),
        };
        let probes = scan::knn(isa, metric, dim, queries, None, centroids, nprobe, None);

        let threads = rayon::current_num_threads().max(1);
        // Large query blocks: a list is read from memory once per block, for all the block's
        // queries that probe it. The bound keeps per-task heaps (block × k entries) modest.
        let qb = (HEAP_BUDGET / k).clamp(1, nq);
        let mut q0 = 0;
        while q0 < nq {
            let q1 = (q0 + qb).min(nq);
            let m = q1 - q0;
            // Invert the probes: for each list, the block's queries that probe it.
            let probed = |q: usize| probes.row_ids(q).iter().filter(|&&l| l >= 0);
            let qstart = bucket_starts((q0..q1).flat_map(probed).map(|&l| l as usize), nlist);
            let mut fill = qstart.clone();
            let mut qs = vec![0usize; qstart[nlist]];
            for q in q0..q1 {
                for &l in probed(q) {
                    qs[fill[l as usize]] = q - q0;
                    fill[l as usize] += 1;
                }
            }
            // Lists with work, split into contiguous runs of similar cost for the threads.
            let cost = |l: usize| {
                let n = self.list_len(l) * dim;
                (qstart[l + 1] - qstart[l]) * n + n
            };
            let work: Vec<usize> = (0..nlist)
                .filter(|&l| qstart[l + 1] > qstart[l] && self.list_len(l) > 0)
                .collect();
            let total: usize = work.iter().map(|&l| cost(l)).sum();
            let tasks = if total < SERIAL_WORK {
                1
            } else {
                work.len().min(4 * threads).max(1)
            };
            let mut runs: Vec<&[usize]> = Vec::with_capacity(tasks);
            let (mut start, mut acc) = (0, 0u128);
            for (i, &l) in work.iter().enumerate() {
                acc += cost(l) as u128;
                if acc * tasks as u128 >= total as u128 * (runs.len() as u128 + 1)
                    || i + 1 == work.len()
                {
                    runs.push(&work[start..=i]);
                    start = i + 1;
                }
            }
            let scan_run = |run: &&[usize]| {
                // No heap needs more slots than there are rows.
                let mut heaps = Heaps::new(m, k.min(self.len()));
                let mut scratch = ListScratch::default();
                for &l in run.iter() {
                    for members in qs[qstart[l]..qstart[l + 1]].chunks(LIST_QUERY_GROUP) {
                        let q = |lq: usize| &queries[(q0 + lq) * dim..(q0 + lq + 1) * dim];
                        self.scan_list(isa, l, members, q, deleted, &mut heaps, &mut scratch);
                    }
                }
                heaps
            };
            let parts: Vec<Heaps> = scan::par_map(&runs, scan_run);
            let (ids, dists) = (
                &mut out.ids[q0 * k..q1 * k],
                &mut out.distances[q0 * k..q1 * k],
            );
            Heaps::combine(&parts, m, k, metric, ids, dists);
            q0 = q1;
        }
        out
    }

    /// Scores the queries `members` (heap slots; `query(slot)` is the vector) against every
    /// entry of list `l`, skipping deleted rows.
    #[allow(clippy::too_many_arguments)]
    fn scan_list<'q>(
        &self,
        isa: Isa,
        l: usize,
        members: &[usize],
        query: impl Fn(usize) -> &'q [f32],
        deleted: Option<&RowBitmap>,
        heaps: &mut Heaps,
        s: &mut ListScratch,
    ) {
        let (dim, metric) = (self.dim, self.metric);
        let (start, end) = (self.list_starts[l], self.list_starts[l + 1]);
        let n = end - start;
        let mq = members.len();
        if n == 0 || mq == 0 {
            return;
        }
        // Per (query, list): the weights on the codes and the constant term.
        let wp = kernel::padded(dim);
        s.w.clear();
        s.w.resize(mq * wp, 0.0);
        s.consts.clear();
        let c = &self.centroids[l * dim..(l + 1) * dim];
        for (i, &slot) in members.iter().enumerate() {
            let q = query(slot);
            let w = &mut s.w[i * wp..i * wp + dim];
            match metric {
                Metric::L2 => {
                    let mut bb = 0.0f32;
                    for d in 0..dim {
                        let b = q[d] - c[d] - self.mid[d];
                        bb += b * b;
                        w[d] = self.step[d] * b;
                    }
                    s.consts.push(bb);
                }
                Metric::Ip => {
                    let mut qc = 0.0f32;
                    for d in 0..dim {
                        qc += q[d] * (c[d] + self.mid[d]);
                        w[d] = self.step[d] * q[d];
                    }
                    s.consts.push(qc);
                }
            }
        }
        let rb = block_rows(dim);
        s.dots.resize(QUERY_TILE * rb, 0.0);
        s.scores.resize(rb, 0.0);
        let mut b0 = 0;
        while b0 < n {
            let nb = rb.min(n - b0);
            let (e0, e1) = (start + b0, start + b0 + nb);
            let codes = &self.codes[e0 * dim..e1 * dim];
            let mut g = 0;
            while g < mq {
                let gm = QUERY_TILE.min(mq - g);
                let w = &s.w[g * wp..(g + gm) * wp];
                kernel::dots(isa, w, gm, codes, nb, dim, &mut s.dots, rb);
                for i in 0..gm {
                    let slot = members[g + i];
                    let mut thr = heaps.threshold(slot);
                    let dots = &s.dots[i * rb..i * rb + nb];
                    let scores = &mut s.scores[..nb];
                    let konst = s.consts[g + i];
                    let best = match metric {
                        Metric::L2 => l2_scores(isa, konst, &self.code_norms[e0..e1], dots, scores),
                        Metric::Ip => ip_scores(konst, dots, scores),
                    };
                    if best > thr {
                        continue;
                    }
                    for (r, &sc) in scores.iter().enumerate() {
                        if sc <= thr {
                            let e = e0 + r;
                            if let Some(del) = deleted
                                && del.contains(self.offsets[e] as usize)
                            {
                                continue;
                            }
                            heaps.push(slot, sc, self.ids[e]);
                            thr = heaps.threshold(slot);
                        }
                    }
                }
                g += gm;
            }
            b0 += nb;
        }
    }

    /// The number of lists (after clamping at build time).
    pub fn nlist(&self) -> usize {
        self.list_starts.len().saturating_sub(1)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The number of vectors indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of vectors in list `list` (0 past the end).
    pub fn list_len(&self, list: usize) -> usize {
        match (self.list_starts.get(list), self.list_starts.get(list + 1)) {
            (Some(s), Some(e)) => e - s,
            _ => 0,
        }
    }

    /// Bytes this index holds in memory (for the segment cache's budget): codes, ids, row
    /// offsets, per-row norms, list bounds, centroids and the trained range.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let f32s = self.centroids.len()
            + self.centroid_norms.len()
            + self.vmin.len()
            + self.vdiff.len()
            + self.step.len()
            + self.mid.len()
            + self.code_norms.len();
        size_of::<Self>()
            + f32s * size_of::<f32>()
            + self.list_starts.len() * size_of::<usize>()
            + self.offsets.len() * size_of::<u32>()
            + self.ids.len() * size_of::<i64>()
            + self.codes.len()
    }
}

/// Code rows per block: the block should stay in L1 while every query tile sweeps it.
fn block_rows(dim: usize) -> usize {
    (16 * 1024 / dim.max(1)).clamp(16, 512)
}

/// Inner-product scores (lower is better): `out[r] = −(c + dots[r])`; returns the smallest, NaN
/// ignored (+∞ if none).
fn ip_scores(c: f32, dots: &[f32], out: &mut [f32]) -> f32 {
    let mut best = f32::INFINITY;
    for (o, &d) in out.iter_mut().zip(dots) {
        *o = -(c + d);
        best = best.min(*o);
    }
    best
}

/// Reusable buffers for [`IvfSq8::scan_list`].
#[derive(Default)]
struct ListScratch {
    w: Vec<f32>,
    consts: Vec<f32>,
    dots: Vec<f32>,
    scores: Vec<f32>,
}

/// faiss's `RS_minmax` training on the residuals of a seeded sample of at most
/// [`SQ_TRAIN_ROWS`] rows: per dimension the minimum and `max − min`. NaN values are ignored (a
/// dimension with no number gets range 0).
fn train_range(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    lists: &[u32],
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let rows = lists.len();
    let sample: Vec<usize> = if rows > SQ_TRAIN_ROWS {
        let mut rng = SplitMix64::new(seed ^ SQ_SAMPLE_SALT);
        let mut pick = sample_indices(&mut rng, rows, SQ_TRAIN_ROWS);
        pick.sort_unstable();
        pick
    } else {
        (0..rows).collect()
    };
    let fresh = || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]);
    // Min and max are exact, so the parallel reduction gives the same answer on any split.
    let (lo, hi) = sample
        .par_chunks(4096)
        .fold(fresh, |(mut lo, mut hi), chunk| {
            for &r in chunk {
                let c = lists[r] as usize;
                let x = &data[r * dim..(r + 1) * dim];
                let cent = &centroids[c * dim..(c + 1) * dim];
                for d in 0..dim {
                    let v = x[d] - cent[d];
                    if v < lo[d] {
                        lo[d] = v;
                    }
                    if v > hi[d] {
                        hi[d] = v;
                    }
                }
            }
            (lo, hi)
        })
        .reduce(fresh, |(mut lo, mut hi), (lo2, hi2)| {
            for d in 0..dim {
                lo[d] = lo[d].min(lo2[d]);
                hi[d] = hi[d].max(hi2[d]);
            }
            (lo, hi)
        });
    let mut vmin = lo;
    let mut vdiff = hi;
    for d in 0..dim {
        if vmin[d] > vdiff[d] {
            // No number in this dimension.
            (vmin[d], vdiff[d]) = (0.0, 0.0);
        } else {
            vdiff[d] -= vmin[d];
        }
    }
    (vmin, vdiff)
}

/// Encodes the residual `x − centroid` as faiss `QT_8bit` codes, stored as `code − 128`.
fn encode(x: &[f32], centroid: &[f32], vmin: &[f32], vdiff: &[f32], out: &mut [i8]) {
    for d in 0..out.len() {
        let mut u = 0.0f32;
        if vdiff[d] != 0.0 {
            u = (x[d] - centroid[d] - vmin[d]) / vdiff[d];
            u = u.clamp(0.0, 1.0);
        }
        // `as u8` truncates like faiss's `(int)`; NaN becomes 0.
        let code = (255.0 * u) as u8;
        out[d] = (code ^ 0x80) as i8;
    }
}
