//! The blocked scan shared by FLAT, IVF and k-means: score a block of queries against a block of
//! rows with the dot-product tiles, then offer each score to a bounded per-query heap.
//!
//! Scores are "lower is better" ([`Metric::score`]): squared L2 as ‖q‖² + ‖x‖² − 2⟨q,x⟩ (clamped at
//! 0, since rounding can push a near-duplicate slightly negative), or −⟨q,x⟩ for inner product.
//! Most candidates are rejected by a single compare against the query's current k-th score, and a
//! whole block of rows is skipped when its best score cannot enter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::kernel::{self, Isa};
use super::topk::{Metric, RowBitmap, TopK, cmp_score};

/// Rows per block: the block (plus a few queries) should sit in the 32 KiB L1 cache while every
/// query tile sweeps it. A multiple of 24 so the 3-, 4-, 6- and 8-row tiles divide it evenly.
fn block_rows(dim: usize) -> usize {
    let fit = (20 * 1024) / (dim * 4);
    (fit / 24 * 24).clamp(24, 480)
}

/// Squared norms of `n` rows for L2 (empty for IP, which never uses them).
pub(crate) fn l2_norms(isa: Isa, metric: Metric, x: &[f32], n: usize, dim: usize) -> Vec<f32> {
    match metric {
        Metric::L2 => kernel::norms_vec(isa, x, n, dim),
        Metric::Ip => Vec::new(),
    }
}

/// Per-query heaps' total entry budget per task, so a large k shrinks the query block instead of
/// growing memory.
const HEAP_BUDGET: usize = 1 << 16;

/// Largest query block: bounds the dot buffer (`QB × block_rows` floats).
const MAX_QUERY_BLOCK: usize = 256;

/// Smallest data chunk worth a parallel task.
const MIN_CHUNK_ROWS: usize = 4096;

/// Queries per block for a given k.
pub(crate) fn query_block(nq: usize, k: usize) -> usize {
    (HEAP_BUDGET / k.max(1))
        .clamp(4, MAX_QUERY_BLOCK)
        .min(nq.max(1))
}

/// `n` bounded max-heaps of `(score, id)`, `k` slots each, laid out contiguously. The root is the
/// worst kept entry: higher score, or equal score and higher id.
pub(crate) struct Heaps {
    k: usize,
    scores: Vec<f32>,
    ids: Vec<i64>,
    lens: Vec<usize>,
    /// The root's score once full, +∞ before: a candidate must be `<=` this to be considered.
    thr: Vec<f32>,
}

/// Whether `(sa, ia)` ranks worse than `(sb, ib)`. Scores in a heap are never NaN.
#[inline]
fn worse(sa: f32, ia: i64, sb: f32, ib: i64) -> bool {
    sa > sb || (sa == sb && ia > ib)
}

impl Heaps {
    pub(crate) fn new(n: usize, k: usize) -> Self {
        Heaps {
            k,
            scores: vec![0.0; n * k],
            ids: vec![0; n * k],
            lens: vec![0; n],
            thr: vec![
                if k == 0 {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                };
                n
            ],
        }
    }

    #[inline]
    pub(crate) fn threshold(&self, h: usize) -> f32 {
        self.thr[h]
    }

    /// Offers `(score, id)` to heap `h`; kept if the heap is not full or it beats the root.
    pub(crate) fn push(&mut self, h: usize, score: f32, id: i64) {
        let k = self.k;
        if k == 0 || score.is_nan() {
            return;
        }
        let base = h * k;
        let scores = &mut self.scores[base..base + k];
        let ids = &mut self.ids[base..base + k];
        let len = self.lens[h];
        if len < k {
            // Sift up from the new leaf.
            let mut i = len;
            while i > 0 {
                let p = (i - 1) / 2;
                if !worse(score, id, scores[p], ids[p]) {
                    break;
                }
                scores[i] = scores[p];
                ids[i] = ids[p];
                i = p;
            }
            scores[i] = score;
            ids[i] = id;
            self.lens[h] = len + 1;
            if len + 1 == k {
                self.thr[h] = scores[0];
            }
            return;
        }
        if !worse(scores[0], ids[0], score, id) {
            return;
        }
        // Replace the root and sift down.
        let mut i = 0;
        loop {
            let l = 2 * i + 1;
            if l >= k {
                break;
            }
            let r = l + 1;
            let c = if r < k && worse(scores[r], ids[r], scores[l], ids[l]) {
                r
            } else {
                l
            };
            if !worse(scores[c], ids[c], score, id) {
                break;
            }
            scores[i] = scores[c];
            ids[i] = ids[c];
            i = c;
        }
        scores[i] = score;
        ids[i] = id;
        self.thr[h] = scores[0];
    }

    /// Heap `h`'s entries, unordered.
    fn entries(&self, h: usize) -> impl Iterator<Item = (f32, i64)> + '_ {
        let (base, len) = (h * self.k, self.lens[h]);
        self.scores[base..base + len]
            .iter()
            .copied()
            .zip(self.ids[base..base + len].iter().copied())
    }

    /// Combines heaps that scored disjoint parts of the data for the same `n` queries into
    /// sorted, padded result rows: per query the best `k` entries, ties by smaller id. Every
    /// row is its own hit (ids within a segment are unique in Milvus; were they not, a search
    /// would still not depend on how it was split into parts). Writes the hits of query `h` to
    /// the front of `ids[h*k..]` / `dists[h*k..]`, which the caller has filled with padding.
    pub(crate) fn combine(
        parts: &[Heaps],
        n: usize,
        k: usize,
        metric: Metric,
        ids: &mut [i64],
        dists: &mut [f32],
    ) {
        let mut row: Vec<(f32, i64)> = Vec::new();
        for h in 0..n {
            row.clear();
            for p in parts {
                row.extend(p.entries(h));
            }
            if row.is_empty() {
                continue;
            }
            row.sort_unstable_by(|a, b| cmp_score(a.0, b.0).then(a.1.cmp(&b.1)));
            for (slot, &(s, id)) in row.iter().take(k).enumerate() {
                ids[h * k + slot] = id;
                dists[h * k + slot] = metric.unscore(s);
            }
        }
    }
}

/// Where row `r` of a [`Rows`] sits in its segment (for the deleted bitmap).
#[derive(Clone, Copy)]
pub(crate) enum Offsets<'a> {
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
}

/// A run of rows to score: vectors, their squared norms (L2 only; computed per block when absent),
/// ids and segment offsets.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub vecs: &'a [f32],
    pub norms: Option<&'a [f32]>,
    pub ids: &'a [i64],
    pub offsets: Offsets<'a>,
}

impl Rows<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Reusable buffers for [`scan`].
#[derive(Default)]
pub(crate) struct Scratch {
    dots: Vec<f32>,
    xnorms: Vec<f32>,
    scores: Vec<f32>,
}

/// Scores `queries` (contiguous, `slots.len()` rows of `dim`; query `i` feeds heap `slots[i]`)
/// against every row of `rows`, skipping deleted segment rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan(
    isa: Isa,
    metric: Metric,
    dim: usize,
    queries: &[f32],
    qnorms: &[f32],
    slots: &[usize],
    rows: Rows<'_>,
    deleted: Option<&RowBitmap>,
    heaps: &mut Heaps,
    scratch: &mut Scratch,
) {
    let mq = slots.len();
    let n = rows.len();
    if mq == 0 || n == 0 {
        return;
    }
    let rb = block_rows(dim);
    scratch.dots.resize(mq * rb, 0.0);
    scratch.scores.resize(rb, 0.0);
    if rows.norms.is_none() && metric == Metric::L2 {
        scratch.xnorms.resize(rb, 0.0);
    }
    let mut b0 = 0;
    while b0 < n {
        let nb = rb.min(n - b0);
        let xb = &rows.vecs[b0 * dim..(b0 + nb) * dim];
        let xn: &[f32] = if mq < kernel::STREAMING_BELOW {
            // Memory-bound: one pass in row order gives the dots and, if needed, the norms.
            let out = &mut scratch.dots;
            match (metric, rows.norms) {
                (Metric::L2, None) => {
                    let nout = Some(&mut scratch.xnorms[..nb]);
                    kernel::dots_streaming(isa, queries, mq, xb, nb, dim, out, rb, nout);
                    &scratch.xnorms[..nb]
                }
                (Metric::L2, Some(norms)) => {
                    kernel::dots_streaming(isa, queries, mq, xb, nb, dim, out, rb, None);
                    &norms[b0..b0 + nb]
                }
                (Metric::Ip, _) => {
                    kernel::dots_streaming(isa, queries, mq, xb, nb, dim, out, rb, None);
                    &[]
                }
            }
        } else {
            // Compute-bound: stream the block in once in row order (the norms pass, or a plain
            // touch), then let the tiles work on it from L1.
            let xn: &[f32] = match (metric, rows.norms) {
                (Metric::Ip, _) => {
                    kernel::touch(xb);
                    &[]
                }
                (Metric::L2, Some(norms)) => {
                    kernel::touch(xb);
                    &norms[b0..b0 + nb]
                }
                (Metric::L2, None) => {
                    kernel::norms(isa, xb, nb, dim, &mut scratch.xnorms);
                    &scratch.xnorms[..nb]
                }
            };
            kernel::dots(isa, queries, mq, xb, nb, dim, &mut scratch.dots, rb);
            xn
        };
        for (i, &slot) in slots.iter().enumerate() {
            let mut thr = heaps.threshold(slot);
            let dots = &scratch.dots[i * rb..i * rb + nb];
            let scores = &mut scratch.scores[..nb];
            let best = match metric {
                Metric::L2 => kernel::l2_scores(isa, qnorms[i], xn, dots, scores),
                Metric::Ip => kernel::ip_scores(isa, dots, scores),
            };
            if best > thr {
                continue;
            }
            for (r, &s) in scores.iter().enumerate() {
                if s <= thr {
                    let row = b0 + r;
                    if let Some(del) = deleted
                        && del.contains(rows.offsets.get(row))
                    {
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

/// Exact k-nearest rows for every query: the driver under FLAT search, the IVF coarse quantizer and
/// k-means assignment.
///
/// Work is split into (query block × data chunk) tasks for rayon: several data chunks when there
/// are few queries (so one query still uses every core), one chunk per query block when there are
/// many. Partial heaps are combined with [`Heaps::combine`], whose order does not depend on how
/// the work was split.
#[allow(clippy::too_many_arguments)]
pub(crate) fn knn(
    isa: Isa,
    metric: Metric,
    dim: usize,
    queries: &[f32],
    qnorms: Option<&[f32]>,
    rows: Rows<'_>,
    k: usize,
    deleted: Option<&RowBitmap>,
) -> TopK {
    let nq = queries.len().checked_div(dim).unwrap_or(0);
    let n = rows.len();
    let mut out = TopK::empty(nq, k, metric);
    if nq == 0 || k == 0 || n == 0 {
        return out;
    }
    let owned_qnorms;
    let qnorms: &[f32] = match (metric, qnorms) {
        (Metric::Ip, _) => &[],
        (Metric::L2, Some(q)) => q,
        (Metric::L2, None) => {
            owned_qnorms = kernel::norms_vec(isa, queries, nq, dim);
            &owned_qnorms
        }
    };
    let qb = query_block(nq, k.min(n));
    let n_qblocks = nq.div_ceil(qb);
    let threads = rayon::current_num_threads().max(1);
    let want_tasks = 4 * threads;
    let n_chunks = want_tasks
        .div_ceil(n_qblocks)
        .clamp(1, (n / MIN_CHUNK_ROWS).max(1));
    let chunk = n.div_ceil(n_chunks);
    let tasks: Vec<(usize, usize)> = (0..n_qblocks)
        .flat_map(|b| (0..n_chunks).map(move |c| (b, c)))
        .collect();
    let run = |scratch: &mut Scratch, &(b, c): &(usize, usize)| {
        let q0 = b * qb;
        let q1 = (q0 + qb).min(nq);
        let r0 = (c * chunk).min(n);
        let r1 = (r0 + chunk).min(n);
        let slots: Vec<usize> = (0..q1 - q0).collect();
        // No heap needs more slots than the chunk has rows.
        let mut heaps = Heaps::new(q1 - q0, k.min(r1 - r0));
        let part = Rows {
            vecs: &rows.vecs[r0 * dim..r1 * dim],
            norms: rows.norms.map(|nr| &nr[r0..r1]),
            ids: &rows.ids[r0..r1],
            offsets: match rows.offsets {
                Offsets::Base(base) => Offsets::Base(base + r0),
                Offsets::List(o) => Offsets::List(&o[r0..r1]),
            },
        };
        let qn = if qnorms.is_empty() {
            &[][..]
        } else {
            &qnorms[q0..q1]
        };
        let qv = &queries[q0 * dim..q1 * dim];
        scan(
            isa, metric, dim, qv, qn, &slots, part, deleted, &mut heaps, scratch,
        );
        heaps
    };
    let parts: Vec<Heaps> = par_map(&tasks, |t| run(&mut Scratch::default(), t));
    for (b, group) in parts.chunks(n_chunks).enumerate() {
        let q0 = b * qb;
        let q1 = (q0 + qb).min(nq);
        let (ids, dists) = (
            &mut out.ids[q0 * k..q1 * k],
            &mut out.distances[q0 * k..q1 * k],
        );
        Heaps::combine(group, q1 - q0, k, metric, ids, dists);
    }
    out
}

/// Maps `f` over `items` on the rayon pool, results in item order.
///
/// The calling thread works too: it and up to `threads − 1` pool helpers pull items from a shared
/// counter until none are left. A search called from outside the pool (a one-query search is a
/// few hundred microseconds) then does not sleep while pool threads wake up, and inside the pool
/// (the engine searching segments in parallel) it is ordinary work stealing.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = rayon::current_num_threads();
    if items.len() <= 1 || threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let r = f(item);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    };
    let helpers = (threads - 1).min(items.len() - 1);
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| work());
        }
        work();
    });
    slots
        .into_iter()
        .map(|m| {
            let r = m.into_inner().unwrap_or_else(|e| e.into_inner());
            // The scope returns only after every item has been taken and finished.
            r.expect("par_map: every item is processed before the scope ends")
        })
        .collect()
}
