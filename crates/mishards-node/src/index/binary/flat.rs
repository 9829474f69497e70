//! Exact search over packed bit vectors (Milvus BIN_FLAT), and the blocked scan under it that
//! BIN_IVF_FLAT's lists and coarse quantizer share.
//!
//! A block of rows small enough for L1 is scored against each query of a block with the popcount
//! kernels, the counts become "lower is better" scores (the Hamming count, or the Jaccard
//! distance; Tanimoto ranks by Jaccard and is converted at the end), and each score is offered
//! to a bounded per-query heap after one compare against the query's current k-th.

use super::kernel::{self, PopIsa};
use super::{BinaryMetric, code_size, jaccard, jaccard_to_tanimoto};
use crate::index::scan::{Heaps, par_map, query_block};
use crate::index::topk::{RowBitmap, TopK};

/// Bytes of rows per block: the block stays in L1 while every query of a batch sweeps it.
const BLOCK_BYTES: usize = 16 * 1024;
/// Smallest data chunk worth a parallel task.
const MIN_CHUNK_ROWS: usize = 4096;

/// Where row `r` of a [`Codes`] sits in its segment (for the deleted bitmap).
#[derive(Clone, Copy)]
pub(super) enum Offsets<'a> {
    /// Row `r` is segment row `base + r`.
    Base(usize),
    /// Row `r` is segment row `offsets[r]`.
    List(&'a [u32]),
}

impl Offsets<'_> {
    #[inline]
    fn get(&self, r: usize) -> usize {
        match *self {
            Offsets::Base(base) => base + r,
            Offsets::List(o) => o[r] as usize,
        }
    }

    fn slice(&self, r0: usize, r1: usize) -> Self {
        match *self {
            Offsets::Base(base) => Offsets::Base(base + r0),
            Offsets::List(o) => Offsets::List(&o[r0..r1]),
        }
    }
}

/// A run of rows to score: `ids.len()` codes of `code` bytes each, their ids and segment rows.
#[derive(Clone, Copy)]
pub(super) struct Codes<'a> {
    pub codes: &'a [u8],
    pub ids: &'a [i64],
    pub offsets: Offsets<'a>,
}

impl<'a> Codes<'a> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn slice(&self, code: usize, r0: usize, r1: usize) -> Codes<'a> {
        Codes {
            codes: &self.codes[r0 * code..r1 * code],
            ids: &self.ids[r0..r1],
            offsets: self.offsets.slice(r0, r1),
        }
    }
}

/// Reusable buffers for [`scan`].
#[derive(Default)]
pub(super) struct Scratch {
    a: Vec<u32>,
    b: Vec<u32>,
    scores: Vec<f32>,
}

/// Whether `x` matches `q` for a match metric: `q ⊆ x` (substructure) or `x ⊆ q`
/// (superstructure), bit by bit.
#[inline]
fn matches(metric: BinaryMetric, q: &[u8], x: &[u8]) -> bool {
    let (qc, xc) = (q.chunks_exact(8), x.chunks_exact(8));
    let (qt, xt) = (qc.remainder(), xc.remainder());
    let test = |a: u64, b: u64| match metric {
        BinaryMetric::Substructure => a & b == a,
        _ => a & b == b,
    };
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    qc.zip(xc).all(|(a, b)| test(word(a), word(b))) && test(word(qt), word(xt))
}

/// The largest Hamming count that may enter a heap whose threshold is `thr` (+∞ while the heap
/// fills: any count).
#[inline]
fn count_threshold(thr: f32) -> u32 {
    if thr >= u32::MAX as f32 {
        u32::MAX
    } else if thr < 0.0 {
        // Only a heap with k = 0 has a negative threshold: nothing enters.
        0
    } else {
        thr as u32
    }
}

/// Scores the queries (contiguous, `slots.len()` codes; query `i` feeds heap `slots[i]`) against
/// every row of `rows`, skipping deleted segment rows. Scores are the Hamming count or the Jaccard
/// distance (also for Tanimoto), or 0 for a matching row under a match metric.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    isa: PopIsa,
    metric: BinaryMetric,
    code: usize,
    queries: &[u8],
    slots: &[usize],
    rows: Codes<'_>,
    deleted: Option<&RowBitmap>,
    heaps: &mut Heaps,
    scratch: &mut Scratch,
) {
    let n = rows.len();
    if slots.is_empty() || n == 0 {
        return;
    }
    let rb = (BLOCK_BYTES / code).clamp(16, 1024);
    scratch.a.resize(rb, 0);
    scratch.b.resize(rb, 0);
    scratch.scores.resize(rb, 0.0);
    let live = |r: usize| !deleted.is_some_and(|d| d.contains(rows.offsets.get(r)));
    let mut b0 = 0;
    while b0 < n {
        let nb = rb.min(n - b0);
        let block = &rows.codes[b0 * code..(b0 + nb) * code];
        for (i, &slot) in slots.iter().enumerate() {
            let q = &queries[i * code..(i + 1) * code];
            if metric.is_match() {
                // Every match scores 0: once k are held, only a smaller id enters.
                for (r, x) in block.chunks_exact(code).enumerate() {
                    let row = b0 + r;
                    if matches(metric, q, x) && live(row) {
                        heaps.push(slot, 0.0, rows.ids[row]);
                    }
                }
                continue;
            }
            let scores = &mut scratch.scores[..nb];
            match metric {
                BinaryMetric::Hamming => {
                    let counts = &mut scratch.a[..nb];
                    kernel::xor_counts(isa, q, block, code, counts);
                    // Counts are integers: compare them with the k-th count so far as integers
                    // (a count c enters iff c as f32 <= threshold), no float pass over the block.
                    let mut thr = count_threshold(heaps.threshold(slot));
                    for (r, &c) in counts.iter().enumerate() {
                        if c <= thr {
                            let row = b0 + r;
                            if !live(row) {
                                continue;
                            }
                            heaps.push(slot, c as f32, rows.ids[row]);
                            thr = count_threshold(heaps.threshold(slot));
                        }
                    }
                    continue;
                }
                _ => {
                    let (and, or) = (&mut scratch.a[..nb], &mut scratch.b[..nb]);
                    kernel::and_or_counts(isa, q, block, code, and, or);
                    for ((s, &a), &o) in scores.iter_mut().zip(and.iter()).zip(or.iter()) {
                        *s = jaccard(a, o);
                    }
                }
            }
            let mut thr = heaps.threshold(slot);
            for (r, &s) in scores.iter().enumerate() {
                if s <= thr {
                    let row = b0 + r;
                    if !live(row) {
                        continue;
                    }
                    heaps.push(slot, s, rows.ids[row]);
                    thr = heaps.threshold(slot);
                }
            }
        }
        b0 += nb;
    }
}

/// Exact top-k rows for every query (scores as [`scan`]; Tanimoto still as Jaccard): the driver
/// under [`search_binary_flat`], the IVF coarse quantizer and list assignment.
///
/// Work is split into (query block × data chunk) tasks: several data chunks when there are few
/// queries (so one query still uses every core), one chunk per query block when there are many.
/// Partial heaps combine in an order that does not depend on the split.
pub(super) fn knn(
    isa: PopIsa,
    metric: BinaryMetric,
    code: usize,
    queries: &[u8],
    rows: Codes<'_>,
    k: usize,
    deleted: Option<&RowBitmap>,
) -> TopK {
    let ranking = metric.ranking();
    let nq = queries.len() / code;
    let n = rows.len();
    let mut out = TopK::empty(nq, k, ranking);
    if nq == 0 || k == 0 || n == 0 {
        return out;
    }
    let qb = query_block(nq, k.min(n));
    let n_qblocks = nq.div_ceil(qb);
    let threads = rayon::current_num_threads().max(1);
    let n_chunks = (4 * threads)
        .div_ceil(n_qblocks)
        .clamp(1, (n / MIN_CHUNK_ROWS).max(1));
    let chunk = n.div_ceil(n_chunks);
    let tasks: Vec<(usize, usize)> = (0..n_qblocks)
        .flat_map(|b| (0..n_chunks).map(move |c| (b, c)))
        .collect();
    let run = |&(b, c): &(usize, usize)| {
        let (q0, q1) = (b * qb, ((b + 1) * qb).min(nq));
        let r0 = (c * chunk).min(n);
        let r1 = (r0 + chunk).min(n);
        let slots: Vec<usize> = (0..q1 - q0).collect();
        // No heap needs more slots than the chunk has rows.
        let mut heaps = Heaps::new(q1 - q0, k.min(r1 - r0));
        let qv = &queries[q0 * code..q1 * code];
        let part = rows.slice(code, r0, r1);
        let mut scratch = Scratch::default();
        scan(
            isa,
            metric,
            code,
            qv,
            &slots,
            part,
            deleted,
            &mut heaps,
            &mut scratch,
        );
        heaps
    };
    let parts: Vec<Heaps> = par_map(&tasks, run);
    for (b, group) in parts.chunks(n_chunks).enumerate() {
        let (q0, q1) = (b * qb, ((b + 1) * qb).min(nq));
        let (ids, dists) = (
            &mut out.ids[q0 * k..q1 * k],
            &mut out.distances[q0 * k..q1 * k],
        );
        Heaps::combine(group, q1 - q0, k, ranking, ids, dists);
    }
    out
}

/// Exact search over binary vectors (Milvus BIN_FLAT): the `k` best rows of `data` for each
/// query, by `metric`, as Milvus 1.1 reports them (see the module doc for each metric's distance
/// and the match metrics' semantics).
///
/// `queries` and `data` are packed `dim_bits / 8` bytes per vector; the segment has
/// `min(data.len() / code, ids.len())` rows, a trailing partial query is ignored. Rows in
/// `deleted` (by row offset into `data`) are skipped. Results are best first, ties by smaller id,
/// ranked as [`BinaryMetric::ranking`] (`Metric::L2`), rows with fewer than `k` hits padded with
/// id −1 at `f32::MAX`. A `dim_bits` Milvus would refuse (0, not a multiple of 8, above 32768)
/// answers zero queries.
pub fn search_binary_flat(
    queries: &[u8],
    data: &[u8],
    ids: &[i64],
    dim_bits: usize,
    k: usize,
    metric: BinaryMetric,
    deleted: Option<&RowBitmap>,
) -> TopK {
    search_binary_flat_with(
        PopIsa::detect(),
        queries,
        data,
        ids,
        dim_bits,
        k,
        metric,
        deleted,
    )
}

/// [`search_binary_flat`] on a chosen instruction set (tests run all of them).
#[allow(clippy::too_many_arguments)]
pub(super) fn search_binary_flat_with(
    isa: PopIsa,
    queries: &[u8],
    data: &[u8],
    ids: &[i64],
    dim_bits: usize,
    k: usize,
    metric: BinaryMetric,
    deleted: Option<&RowBitmap>,
) -> TopK {
    let Some(code) = code_size(dim_bits) else {
        tracing::warn!(
            dim_bits,
            "binary search with an invalid dimension: no queries answered"
        );
        return TopK::empty(0, k, metric.ranking());
    };
    let nq = queries.len() / code;
    let rows = (data.len() / code).min(ids.len());
    let codes = Codes {
        codes: &data[..rows * code],
        ids: &ids[..rows],
        offsets: Offsets::Base(0),
    };
    let mut top = knn(isa, metric, code, &queries[..nq * code], codes, k, deleted);
    if metric == BinaryMetric::Tanimoto {
        jaccard_to_tanimoto(&mut top);
    }
    top
}
