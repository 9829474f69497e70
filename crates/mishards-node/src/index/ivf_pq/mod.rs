//! IVF_PQ (Milvus 1.1 index type 6): IVF_FLAT's coarse quantizer, with each vector stored as a
//! product-quantizer code of its residual to its list's centroid, as faiss's `IndexIVFPQ` does
//! (Milvus 1.1 wraps it).
//!
//! What follows faiss (checked against faiss-cpu 1.15's defaults):
//! - The coarse quantizer is exactly IVF_FLAT's (10 k-means iterations, spherical for IP).
//! - `by_residual` for both metrics: a vector is encoded as `x − c` (its list's centroid `c`).
//! - The product quantizer has `m` sub-quantizers of `2^nbits` centroids over `dim / m`
//!   dimensions each, trained with L2 k-means (25 iterations, 256 points per centroid at most)
//!   on the residuals of at most `256 · 2^nbits` sampled rows; codes are each sub-vector's
//!   nearest centroid.
//! - Search is asymmetric (ADC): per query and probed list a look-up table of `m × 2^nbits`
//!   partial distances, then one table look-up per sub-quantizer per code. There is no re-rank.
//!   For L2 the tables come from faiss's precomputed decomposition
//!   `‖q − c − r‖² = ‖q − c‖² + (‖r‖² + 2⟨c, r⟩) − 2⟨q, r⟩`: the middle term is a table per list
//!   computed at build time (when it fits in [`PRECOMPUTED_MAX_BYTES`]), the last one a table per
//!   query, so a list's table is one add per entry. For IP the table `⟨q, r⟩` is per query alone.
//!
//! The reported distance is faiss's ADC distance: squared L2 to, or the inner product with, the
//! decoded vector `c + r̂` (faiss reports the same up to float rounding). Equal distances rank
//! by smaller id.
//!
//! What differs, and why:
//! - Queries are searched query by query (in parallel over query chunks), not list by list as
//!   IVF_FLAT does: a list's codes (`m` bytes a row) are small next to the per-(query, list)
//!   table either order has to read, so reading each list once per batch saves nothing.
//! - Codes take one byte per sub-quantizer for `nbits ≤ 8` and two for `nbits > 8` (faiss packs
//!   them to `m · nbits` bits): the scan reads whole bytes.
//! - With deletes, a query whose probed lists hold fewer than `k` live rows goes on to the next
//!   nearest lists until it has `k` (faiss's filter would return fewer).

mod adc;
mod format;

use std::fmt;
use std::ops::RangeInclusive;

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::kernel::{self, Isa};
use super::kmeans::{assign, kmeans, kmeans_iters, nearest, sample_indices, sort_by_bucket};
use super::scan::{self, Heaps, Offsets, Rows, l2_norms};
use super::topk::{Metric, RowBitmap, TopK};

/// Milvus 1.1's range for `nlist`.
pub const NLIST_RANGE: RangeInclusive<usize> = 1..=65536;
/// Milvus 1.1's range for `nbits` (CPU build).
pub const NBITS_RANGE: RangeInclusive<usize> = 1..=16;
/// Milvus 1.1's range for the search parameter `nprobe`.
pub const NPROBE_RANGE: RangeInclusive<usize> = 1..=65536;

/// faiss's product-quantizer training: Lloyd iterations (`ClusteringParameters::niter`).
const PQ_NITER: usize = 25;
/// faiss's `max_points_per_centroid`: the PQ trains on at most this many rows per centroid.
const PQ_MAX_POINTS_PER_CENTROID: usize = 256;
/// Largest precomputed L2 table (`nlist × m × 2^nbits` f32) kept; past it, L2 tables are built
/// from the query's residual per list instead. faiss allows 2 GiB; a segment cache counts this
/// memory, so the cap is lower.
pub const PRECOMPUTED_MAX_BYTES: usize = 1 << 29;
/// Most multiply-adds spent deriving the precomputed L2 tables (`nlist × 2^nbits × dim`); past
/// it (only absurd shapes, e.g. m = 1 with 2^16 centroids) L2 tables are built per list instead.
const PRECOMPUTE_MAX_WORK: usize = 1 << 33;
/// Below this much work (≈ table entries plus code bytes) a batch runs on the caller's thread.
const SERIAL_WORK: usize = 1 << 18;
/// Most queries one parallel task searches.
const MAX_CHUNK: usize = 32;
/// Salt for the stream that samples the PQ training rows and seeds its sub-quantizers.
const PQ_SEED_SALT: u64 = 0x5051_5F54_5241_494E;

/// What IVF_PQ refuses: parameters out of Milvus 1.1's ranges, and segments too large.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IvfPqError {
    #[error("Invalid nlist value: {0}. Valid range is [1, 65536]")]
    Nlist(usize),
    #[error("Invalid m value: {m}. The dimension {dim} must be divisible by m (m ≥ 1)")]
    M { m: usize, dim: usize },
    #[error("Invalid nbits value: {0}. Valid range is [1, 16]")]
    Nbits(usize),
    #[error("Invalid nprobe value: {0}. Valid range is [1, 65536]")]
    Nprobe(usize),
    #[error("IVF_PQ indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
}

/// Build parameters, as Milvus 1.1 names them. Checked by [`IvfPq::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfPqParams {
    /// Coarse lists, in [`NLIST_RANGE`] (clamped to the row count at build).
    pub nlist: usize,
    /// Sub-quantizers; must divide the dimension.
    pub m: usize,
    /// Bits per sub-quantizer code, in [`NBITS_RANGE`] (Milvus's default is 8). Lowered at build
    /// when the segment has fewer than `2^nbits` rows, as Milvus's `MatchNbits` does.
    pub nbits: usize,
    /// Seeds the k-means and the training samples.
    pub seed: u64,
}

impl IvfPqParams {
    /// Checks the parameters against Milvus 1.1's `IVFPQConfAdapter` for a CPU build: `nlist`
    /// in [1, 65536], `nbits` in [1, 16], `m ≥ 1` dividing `dim`.
    pub fn validate(&self, dim: usize) -> Result<(), IvfPqError> {
        if !NLIST_RANGE.contains(&self.nlist) {
            return Err(IvfPqError::Nlist(self.nlist));
        }
        if self.m == 0 || !dim.is_multiple_of(self.m) {
            return Err(IvfPqError::M { m: self.m, dim });
        }
        if !NBITS_RANGE.contains(&self.nbits) {
            return Err(IvfPqError::Nbits(self.nbits));
        }
        Ok(())
    }
}

/// Search parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfPqSearch {
    /// Lists probed per query, in [`NPROBE_RANGE`] (clamped to the index's `nlist`).
    pub nprobe: usize,
}

impl IvfPqSearch {
    pub fn validate(&self) -> Result<(), IvfPqError> {
        if !NPROBE_RANGE.contains(&self.nprobe) {
            return Err(IvfPqError::Nprobe(self.nprobe));
        }
        Ok(())
    }
}

/// Milvus's `MatchNbits`: a segment with fewer rows than `2^nbits` trains 2^8, 2^4, 2^2 or 2^1
/// centroids per sub-quantizer, the largest its rows cover (at least 2^1).
fn match_nbits(rows: usize, nbits: usize) -> usize {
    if rows >= 1 << nbits {
        nbits
    } else if rows >= 1 << 8 {
        8
    } else if rows >= 1 << 4 {
        4
    } else if rows >= 1 << 2 {
        2
    } else {
        1
    }
}

/// An IVF_PQ index over one segment.
///
/// Lists are stored back to back (CSR) as in IVF_FLAT: list `l` holds entries
/// `list_starts[l]..list_starts[l+1]` of `offsets` (segment row offsets), `ids` and `codes`
/// (`code_size` bytes each: one byte per sub-quantizer, two little-endian when `nbits > 8`).
/// Codebooks are `m × ksub × dsub` f32 (`ksub = 2^nbits`, `dsub = dim / m`).
#[derive(Clone, PartialEq)]
pub struct IvfPq {
    dim: usize,
    metric: Metric,
    m: usize,
    /// Bits per code as built (after `MatchNbits`).
    nbits: usize,
    centroids: Vec<f32>,
    /// Squared norms of the centroids (L2 only; derived, not serialized).
    centroid_norms: Vec<f32>,
    codebooks: Vec<f32>,
    /// Squared norms of the codebook entries, `m × ksub` (derived).
    codebook_norms: Vec<f32>,
    /// The codebooks transposed per sub-quantizer, `m × dsub × ksub`, for the query tables
    /// (derived).
    codebooks_t: Vec<f32>,
    list_starts: Vec<usize>,
    offsets: Vec<u32>,
    ids: Vec<i64>,
    codes: Vec<u8>,
    /// L2: `‖r‖² + 2⟨c_l, r⟩` per (list, sub-quantizer, centroid), `nlist × m × ksub`; empty for
    /// IP or past [`PRECOMPUTED_MAX_BYTES`] (derived, not serialized).
    precomputed: Vec<f32>,
}

impl fmt::Debug for IvfPq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvfPq")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("nlist", &self.nlist())
            .field("m", &self.m)
            .field("nbits", &self.nbits)
            .field("len", &self.len())
            .field("precomputed", &!self.precomputed.is_empty())
            .finish_non_exhaustive()
    }
}

/// One query's state while its lists are scanned.
struct QueryCtx<'a> {
    q: &'a [f32],
    /// L2 with precomputed tables: −2⟨q_j, b_jc⟩; IP: −⟨q_j, b_jc⟩ (`m × ksub`).
    sim: &'a [f32],
}

impl IvfPq {
    /// Trains the coarse quantizer and the product quantizer on `data` (`rows × dim` f32,
    /// row-major) and encodes every row, after checking `params` against Milvus 1.1's ranges.
    ///
    /// The segment has `min(data.len() / dim, ids.len())` rows; with none the index is empty and
    /// every search returns padding. `nlist` is clamped to the row count, `nbits` lowered as
    /// [`IvfPqParams::nbits`] says. Deterministic for a seed, whatever the thread count.
    pub fn build(
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: &IvfPqParams,
    ) -> Result<IvfPq, IvfPqError> {
        params.validate(dim)?;
        Self::build_with(Isa::detect(), data, ids, dim, metric, params)
    }

    pub(crate) fn build_with(
        isa: Isa,
        data: &[f32],
        ids: &[i64],
        dim: usize,
        metric: Metric,
        params: &IvfPqParams,
    ) -> Result<IvfPq, IvfPqError> {
        let rows = data.len().checked_div(dim).unwrap_or(0).min(ids.len());
        let max = u32::MAX as usize + 1;
        if rows > max {
            return Err(IvfPqError::TooManyRows { rows, max });
        }
        let m = params.m;
        let nbits = match_nbits(rows, params.nbits);
        if rows == 0 {
            return Ok(IvfPq::from_parts(
                isa,
                dim,
                metric,
                m,
                nbits,
                Vec::new(),
                Vec::new(),
                vec![0],
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ));
        }
        let data = &data[..rows * dim];
        let nlist = params.nlist.clamp(1, rows);
        let t = std::time::Instant::now();
        let centroids = kmeans(isa, data, dim, nlist, metric, params.seed);
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let lists = assign(isa, metric, dim, &centroids, &centroid_norms, data, None);
        let coarse_s = t.elapsed().as_secs_f64();

        let t = std::time::Instant::now();
        let (ksub, dsub) = (1usize << nbits, dim / m);
        let mut rng = SplitMix64::new(params.seed ^ PQ_SEED_SALT);
        let max_train = PQ_MAX_POINTS_PER_CENTROID * ksub;
        let train_rows: Vec<usize> = if rows > max_train {
            let mut pick = sample_indices(&mut rng, rows, max_train);
            pick.sort_unstable();
            pick
        } else {
            (0..rows).collect()
        };
        let train_seed = rng.next_u64();
        let codebooks: Vec<f32> = (0..m)
            .into_par_iter()
            .map(|j| {
                let x = residual_slice(data, dim, &centroids, &lists, &train_rows, j * dsub, dsub);
                let n = train_rows.len();
                let kk = ksub.min(n);
                let seed = SplitMix64::nth(train_seed, j as u64);
                let mut cb = kmeans_iters(isa, &x, dsub, kk, Metric::L2, seed, PQ_NITER);
                // Fewer training rows than centroids (a tiny segment): the spare centroids copy
                // the first, so ties send every code to the first one and they stay unused.
                let first = cb[..dsub].to_vec();
                while cb.len() < ksub * dsub {
                    cb.extend_from_slice(&first);
                }
                cb
            })
            .collect::<Vec<Vec<f32>>>()
            .concat();
        let train_s = t.elapsed().as_secs_f64();

        let t = std::time::Instant::now();
        let (list_starts, order) = sort_by_bucket(&lists, nlist);
        let code_size = code_size(m, nbits);
        let mut codes = vec![0u8; rows * code_size];
        let all_rows: Vec<usize> = order.clone();
        for j in 0..m {
            // Residual sub-vectors in list order, so the codes land in place.
            let x = residual_slice(data, dim, &centroids, &lists, &all_rows, j * dsub, dsub);
            let cb = &codebooks[j * ksub * dsub..(j + 1) * ksub * dsub];
            let codes_j = nearest(isa, Metric::L2, dsub, cb, &x, None);
            for (at, &c) in codes_j.iter().enumerate() {
                if nbits <= 8 {
                    codes[at * code_size + j] = c as u8;
                } else {
                    let b = (c as u16).to_le_bytes();
                    codes[at * code_size + 2 * j..at * code_size + 2 * j + 2].copy_from_slice(&b);
                }
            }
        }
        // `rows` is bounded by u32::MAX + 1 above, so every offset fits.
        let offsets: Vec<u32> = order.iter().map(|&r| r as u32).collect();
        let out_ids: Vec<i64> = order.iter().map(|&r| ids[r]).collect();
        let encode_s = t.elapsed().as_secs_f64();
        tracing::debug!(
            rows,
            nlist,
            m,
            nbits,
            coarse_s,
            train_s,
            encode_s,
            "IVF_PQ built"
        );
        Ok(IvfPq::from_parts(
            isa,
            dim,
            metric,
            m,
            nbits,
            centroids,
            codebooks,
            list_starts,
            offsets,
            out_ids,
            codes,
        ))
    }

    /// Assembles an index from its stored parts and derives the rest (norms, L2 tables).
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        isa: Isa,
        dim: usize,
        metric: Metric,
        m: usize,
        nbits: usize,
        centroids: Vec<f32>,
        codebooks: Vec<f32>,
        list_starts: Vec<usize>,
        offsets: Vec<u32>,
        ids: Vec<i64>,
        codes: Vec<u8>,
    ) -> IvfPq {
        let nlist = list_starts.len().saturating_sub(1);
        let ksub = 1usize << nbits;
        let dsub = dim.checked_div(m).unwrap_or(0);
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let codebook_norms = if codebooks.is_empty() || dsub == 0 {
            Vec::new()
        } else {
            kernel::norms_vec(isa, &codebooks, m * ksub, dsub)
        };
        let mut codebooks_t = vec![0.0f32; codebooks.len()];
        if dsub > 0 {
            let blocks = codebooks.chunks_exact(ksub * dsub);
            for (src, dst) in blocks.zip(codebooks_t.chunks_exact_mut(ksub * dsub)) {
                for (c, entry) in src.chunks_exact(dsub).enumerate() {
                    for (d, &v) in entry.iter().enumerate() {
                        dst[d * ksub + c] = v;
                    }
                }
            }
        }
        let mut index = IvfPq {
            dim,
            metric,
            m,
            nbits,
            centroids,
            centroid_norms,
            codebooks,
            codebook_norms,
            codebooks_t,
            list_starts,
            offsets,
            ids,
            codes,
            precomputed: Vec::new(),
        };
        let table_bytes = nlist
            .checked_mul(m)
            .and_then(|v| v.checked_mul(ksub))
            .and_then(|v| v.checked_mul(4));
        if metric == Metric::L2
            && nlist > 0
            && dsub > 0
            && table_bytes.is_some_and(|b| b <= PRECOMPUTED_MAX_BYTES)
            && nlist.saturating_mul(ksub).saturating_mul(dim) <= PRECOMPUTE_MAX_WORK
        {
            index.precomputed = index.precompute_l2(isa);
        }
        index
    }

    /// faiss's "term 1": `‖b_jc‖² + 2⟨c_l[j], b_jc⟩` for every list `l`, sub-quantizer `j` and
    /// codebook entry `c`, laid out `[l][j][c]` so a list's table is contiguous.
    fn precompute_l2(&self, isa: Isa) -> Vec<f32> {
        let (nlist, m, ksub, dsub) = (self.nlist(), self.m, self.ksub(), self.dsub());
        let stride = m * ksub;
        let mut table = vec![0.0f32; nlist * stride];
        let mut sub = vec![0.0f32; nlist * dsub];
        for j in 0..m {
            for (l, s) in sub.chunks_exact_mut(dsub).enumerate() {
                let c = &self.centroids[l * self.dim + j * dsub..];
                s.copy_from_slice(&c[..dsub]);
            }
            let cb = &self.codebooks[j * ksub * dsub..(j + 1) * ksub * dsub];
            kernel::dots(
                isa,
                &sub,
                nlist,
                cb,
                ksub,
                dsub,
                &mut table[j * ksub..],
                stride,
            );
            let norms = &self.codebook_norms[j * ksub..(j + 1) * ksub];
            for row in table.chunks_exact_mut(stride) {
                for (t, &n) in row[j * ksub..(j + 1) * ksub].iter_mut().zip(norms) {
                    *t = n + 2.0 * *t;
                }
            }
        }
        table
    }

    /// Searches the `nprobe` lists nearest each of the `queries.len() / dim` queries and returns
    /// the top `k` per query by ADC distance (see the module doc), padded as [`TopK`] says. Rows
    /// in `deleted` (by segment row offset) are never returned.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        search: &IvfPqSearch,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, IvfPqError> {
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
        let (dim, metric, nlist) = (self.dim, self.metric, self.nlist());
        if dim == 0 {
            return TopK::empty(0, k, metric);
        }
        let nq = queries.len() / dim;
        let queries = &queries[..nq * dim];
        let mut out = TopK::empty(nq, k, metric);
        if nq == 0 || k == 0 || self.is_empty() {
            return out;
        }
        let nprobe = nprobe.clamp(1, nlist);
        let probes = self.coarse(isa, queries, nprobe);

        // Work per query ≈ table entries built plus code bytes scanned.
        let per_list = self.len() / nlist * self.code_size() + self.m * self.ksub();
        let total = nq.saturating_mul(nprobe).saturating_mul(per_list);
        let threads = rayon::current_num_threads().max(1);
        let chunk = if total < SERIAL_WORK {
            nq
        } else {
            nq.div_ceil(4 * threads).clamp(1, MAX_CHUNK)
        };
        let tasks: Vec<(usize, usize)> = (0..nq)
            .step_by(chunk)
            .map(|q0| (q0, (q0 + chunk).min(nq)))
            .collect();
        let run = |&(q0, q1): &(usize, usize)| {
            self.search_chunk(isa, &queries[q0 * dim..q1 * dim], q0, &probes, k, deleted)
        };
        let parts: Vec<Heaps> = scan::par_map(&tasks, run);
        for (&(q0, q1), heaps) in tasks.iter().zip(&parts) {
            let (ids, dists) = (
                &mut out.ids[q0 * k..q1 * k],
                &mut out.distances[q0 * k..q1 * k],
            );
            Heaps::combine(std::slice::from_ref(heaps), q1 - q0, k, metric, ids, dists);
        }
        out
    }

    /// The `nprobe` nearest lists of every query, with their coarse distances (squared L2, or
    /// the inner product).
    fn coarse(&self, isa: Isa, queries: &[f32], nprobe: usize) -> TopK {
        let (dim, metric) = (self.dim, self.metric);
        let list_ids: Vec<i64> = (0..self.nlist() as i64).collect();
        let centroids = Rows {
            vecs: &self.centroids,
            norms: (metric == Metric::L2).then_some(&self.centroid_norms[..]),
            ids: &list_ids,
            offsets: Offsets::Base(0),
        };
        scan::knn(isa, metric, dim, queries, None, centroids, nprobe, None)
    }

    /// Searches queries `q0..` (the rows of `queries`) over their probed lists.
    fn search_chunk(
        &self,
        isa: Isa,
        queries: &[f32],
        q0: usize,
        probes: &TopK,
        k: usize,
        deleted: Option<&RowBitmap>,
    ) -> Heaps {
        let (dim, m, ksub) = (self.dim, self.m, self.ksub());
        let n = queries.len() / dim;
        let mut heaps = Heaps::new(n, k.min(self.len()));
        let mut sim = Vec::new();
        let mut lut = adc::Lut::new(m, self.nbits);
        let mut scores = Vec::new();
        let mut residual = vec![0.0f32; dim];
        let mut dots = vec![
            0.0f32;
            if self.metric == Metric::L2 && self.precomputed.is_empty() {
                m * ksub
            } else {
                0
            }
        ];
        for i in 0..n {
            let q = &queries[i * dim..(i + 1) * dim];
            self.query_table(isa, q, &mut sim);
            let ctx = QueryCtx { q, sim: &sim };
            if self.metric == Metric::Ip {
                // The inner-product table does not depend on the list.
                lut.fill(ksub, |j, t| {
                    t.copy_from_slice(&ctx.sim[j * ksub..(j + 1) * ksub])
                });
            }
            let row = probes.row_ids(q0 + i);
            let lists = row.iter().zip(probes.row_distances(q0 + i));
            for (p, (&l, &d)) in lists.enumerate() {
                if l < 0 {
                    continue;
                }
                if let Some(&next) = row.get(p + 1) {
                    self.prefetch_list(next);
                }
                let scan = ScanBufs {
                    lut: &mut lut,
                    scores: &mut scores,
                    residual: &mut residual,
                    dots: &mut dots,
                };
                self.scan_list(isa, &ctx, l as usize, d, i, scan, deleted, &mut heaps);
            }
            let nprobe = probes.k;
            if deleted.is_some() && heaps.threshold(i) == f32::INFINITY && nprobe < self.nlist() {
                // Deletes left the probed lists short of k live rows: go on to the next lists.
                let all = self.coarse(isa, ctx.q, self.nlist());
                let more = all.row_ids(0).iter().zip(all.row_distances(0)).skip(nprobe);
                for (&l, &d) in more {
                    if l < 0 {
                        continue;
                    }
                    let scan = ScanBufs {
                        lut: &mut lut,
                        scores: &mut scores,
                        residual: &mut residual,
                        dots: &mut dots,
                    };
                    self.scan_list(isa, &ctx, l as usize, d, i, scan, deleted, &mut heaps);
                    if heaps.threshold(i) != f32::INFINITY {
                        break;
                    }
                }
            }
        }
        heaps
    }

    /// Starts loading list `l`'s table and codes (nothing for `l < 0`).
    fn prefetch_list(&self, l: i64) {
        let Ok(l) = usize::try_from(l) else { return };
        let (m, ksub, cs) = (self.m, self.ksub(), self.code_size());
        if let Some(pre) = self.precomputed.get(l * m * ksub..(l + 1) * m * ksub) {
            adc::prefetch(pre);
        }
        if let (Some(&s), Some(&e)) = (self.list_starts.get(l), self.list_starts.get(l + 1)) {
            adc::prefetch(&self.codes[s * cs..e * cs]);
        }
    }

    /// Query `q`'s table into `out` (`m × ksub`): −2⟨q_j, b_jc⟩ for L2 with precomputed list
    /// tables, −⟨q_j, b_jc⟩ for IP (so lower is better); left empty otherwise.
    fn query_table(&self, isa: Isa, q: &[f32], out: &mut Vec<f32>) {
        let (m, ksub, dsub) = (self.m, self.ksub(), self.dsub());
        // Scaling by −1 or −2 is exact.
        let scale = match self.metric {
            Metric::L2 if self.precomputed.is_empty() => return,
            Metric::L2 => -2.0,
            Metric::Ip => -1.0,
        };
        out.resize(m * ksub, 0.0);
        adc::query_table(isa, &self.codebooks_t, q, m, dsub, ksub, scale, out);
    }

    /// Scores every code of list `l` for query slot `h` and offers the live ones to its heap.
    /// `coarse` is the query's coarse distance to the list (squared L2, or inner product).
    #[allow(clippy::too_many_arguments)]
    fn scan_list(
        &self,
        isa: Isa,
        ctx: &QueryCtx<'_>,
        l: usize,
        coarse: f32,
        h: usize,
        bufs: ScanBufs<'_>,
        deleted: Option<&RowBitmap>,
        heaps: &mut Heaps,
    ) {
        let (s, e) = (self.list_starts[l], self.list_starts[l + 1]);
        if s == e {
            return;
        }
        let (m, ksub, dsub) = (self.m, self.ksub(), self.dsub());
        let ScanBufs {
            lut,
            scores,
            residual,
            dots,
        } = bufs;
        let dis0 = match self.metric {
            Metric::Ip => -coarse,
            Metric::L2 if !self.precomputed.is_empty() => {
                let pre = &self.precomputed[l * m * ksub..(l + 1) * m * ksub];
                lut.fill_sum(isa, ksub, pre, ctx.sim);
                coarse
            }
            Metric::L2 => {
                // faiss without precomputed tables: ‖r_j − b‖² from the residual r = q − c_l.
                let c = &self.centroids[l * self.dim..(l + 1) * self.dim];
                for ((r, &q), &c) in residual.iter_mut().zip(ctx.q).zip(c) {
                    *r = q - c;
                }
                let (bt, norms) = (&self.codebooks_t, &self.codebook_norms);
                adc::query_table(isa, bt, residual, m, dsub, ksub, -2.0, dots);
                lut.fill(ksub, |j, t| {
                    let rj = &residual[j * dsub..(j + 1) * dsub];
                    let rn: f32 = rj.iter().map(|v| v * v).sum();
                    let (nj, dj) = (&norms[j * ksub..], &dots[j * ksub..]);
                    for ((t, &n), &d) in t.iter_mut().zip(nj).zip(dj) {
                        *t = ((rn + n) + d).max(0.0);
                    }
                });
                0.0
            }
        };
        scores.resize(e - s, 0.0);
        lut.scan(
            &self.codes[s * self.code_size()..e * self.code_size()],
            dis0,
            scores,
        );
        let mut thr = heaps.threshold(h);
        for (r, &score) in scores.iter().enumerate() {
            if score <= thr {
                let at = s + r;
                if let Some(del) = deleted
                    && del.contains(self.offsets[at] as usize)
                {
                    continue;
                }
                heaps.push(h, score, self.ids[at]);
                thr = heaps.threshold(h);
            }
        }
    }

    /// The number of lists (after clamping at build time).
    pub fn nlist(&self) -> usize {
        self.list_starts.len().saturating_sub(1)
    }

    /// Sub-quantizers.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bits per sub-quantizer code, as built (see [`IvfPqParams::nbits`]).
    pub fn nbits(&self) -> usize {
        self.nbits
    }

    /// Bytes per stored code.
    pub fn code_size(&self) -> usize {
        code_size(self.m, self.nbits)
    }

    fn ksub(&self) -> usize {
        1 << self.nbits
    }

    fn dsub(&self) -> usize {
        self.dim.checked_div(self.m).unwrap_or(0)
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

    /// Bytes this index holds in memory (for the segment cache's budget), derived tables included.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let f = self.centroids.capacity()
            + self.centroid_norms.capacity()
            + self.codebooks.capacity()
            + self.codebook_norms.capacity()
            + self.codebooks_t.capacity()
            + self.precomputed.capacity();
        size_of::<IvfPq>()
            + f * size_of::<f32>()
            + self.list_starts.capacity() * size_of::<usize>()
            + self.offsets.capacity() * size_of::<u32>()
            + self.ids.capacity() * size_of::<i64>()
            + self.codes.capacity()
    }

    /// Whether L2 searches use the precomputed per-list tables.
    pub fn has_precomputed_tables(&self) -> bool {
        !self.precomputed.is_empty()
    }
}

/// Scratch buffers for [`IvfPq::scan_list`].
struct ScanBufs<'a> {
    lut: &'a mut adc::Lut,
    scores: &'a mut Vec<f32>,
    residual: &'a mut [f32],
    dots: &'a mut [f32],
}

fn code_size(m: usize, nbits: usize) -> usize {
    if nbits <= 8 { m } else { 2 * m }
}

/// Sub-vector `[d0, d0 + dsub)` of the residual `x_r − c_{lists[r]}` of each row `r` in `rows`,
/// contiguous.
fn residual_slice(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    lists: &[u32],
    rows: &[usize],
    d0: usize,
    dsub: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dsub);
    for &r in rows {
        let x = &data[r * dim + d0..r * dim + d0 + dsub];
        let c = lists[r] as usize;
        let c = &centroids[c * dim + d0..c * dim + d0 + dsub];
        out.extend(x.iter().zip(c).map(|(&x, &c)| x - c));
    }
    out
}

#[cfg(test)]
mod tests;
