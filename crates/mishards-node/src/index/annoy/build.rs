//! Growing the trees: Annoy's two-means splits, one tree per rayon task.

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::{AnnoyError, AnnoyParams, Forest, LEAF, gather_dots, leaf_capacity};
use crate::index::kernel::{self, Isa};
use crate::index::topk::Metric;

/// Annoy's `iteration_steps`: single-row updates of the two centroids per split.
const TWO_MEANS_STEPS: usize = 200;
/// Hyperplanes drawn for one node before settling for an unbalanced one.
const SPLIT_ATTEMPTS: usize = 3;
/// A split putting more than this share of the rows on one side is drawn again.
const RETRY_IMBALANCE: f64 = 0.95;
/// Past this share the rows are dealt out at random instead (a hyperplane that separates
/// nothing, e.g. over duplicate rows).
const RANDOM_IMBALANCE: f64 = 0.99;

/// Builds `params.n_trees` trees over `rows ≥ 1` rows, in parallel, and lays them out flat.
pub(super) fn forest(
    isa: Isa,
    vectors: &[f32],
    sq_norms: &[f32],
    dim: usize,
    metric: Metric,
    params: &AnnoyParams,
) -> Result<Forest, AnnoyError> {
    let extra = match metric {
        Metric::L2 => Vec::new(),
        Metric::Ip => {
            // Bachrach et al.: lift every row to norm M with one extra coordinate.
            let max = sq_norms.iter().copied().fold(0.0f32, f32::max);
            sq_norms
                .iter()
                .map(|&n| (max - n).max(0.0).sqrt())
                .collect()
        }
    };
    let b = Builder {
        isa,
        dim,
        metric,
        vectors,
        sq_norms,
        extra: &extra,
        cap: leaf_capacity(dim),
    };
    let trees: Vec<Tree> = (0..params.n_trees as u64)
        .into_par_iter()
        .map(|t| b.tree(SplitMix64::nth(params.seed, t)))
        .collect();

    let splits: usize = trees.iter().map(|t| t.children.len()).sum();
    let leaves: usize = trees.iter().map(|t| t.leaf_lens.len()).sum();
    let max = (LEAF - 1) as usize;
    if splits > max || leaves > max {
        return Err(AnnoyError::TooManyNodes {
            nodes: splits.max(leaves),
            max,
        });
    }
    let entries: usize = trees.iter().map(|t| t.leaf_rows.len()).sum();
    let mut f = Forest {
        roots: Vec::with_capacity(trees.len()),
        planes: Vec::with_capacity(splits * (dim + 1)),
        children: Vec::with_capacity(splits),
        leaf_starts: Vec::with_capacity(leaves + 1),
        leaf_rows: Vec::with_capacity(entries),
    };
    f.leaf_starts.push(0);
    for t in trees {
        // Both counts are below LEAF (checked above), so the shifted references fit.
        let (split_base, leaf_base) = (f.children.len() as u32, f.leaf_starts.len() as u32 - 1);
        let shift = |r: u32| {
            if r & LEAF != 0 {
                r + leaf_base
            } else {
                r + split_base
            }
        };
        f.roots.push(shift(t.root));
        f.planes.extend_from_slice(&t.planes);
        f.children
            .extend(t.children.iter().map(|&[l, r]| [shift(l), shift(r)]));
        for len in t.leaf_lens {
            let end = f.leaf_starts[f.leaf_starts.len() - 1] + len as usize;
            f.leaf_starts.push(end);
        }
        f.leaf_rows.extend_from_slice(&t.leaf_rows);
    }
    Ok(f)
}

/// One tree, references local to it (split numbers and leaf numbers from 0).
#[derive(Default)]
struct Tree {
    planes: Vec<f32>,
    children: Vec<[u32; 2]>,
    leaf_lens: Vec<u32>,
    leaf_rows: Vec<u32>,
    root: u32,
}

/// What every tree reads.
struct Builder<'a> {
    isa: Isa,
    dim: usize,
    metric: Metric,
    vectors: &'a [f32],
    /// Squared norms of the rows.
    sq_norms: &'a [f32],
    /// IP: each row's augmented coordinate; L2: empty (the coordinate is 0).
    extra: &'a [f32],
    cap: usize,
}

/// Buffers one tree's growth reuses.
struct Work {
    /// The two centroids, `p` then `q`, `dim` floats each (contiguous, so one kernel call scores
    /// a row against both).
    pq: Vec<f32>,
    /// Rows of the margin > 0 side while partitioning.
    right: Vec<u32>,
    /// The rows' margins against the split being tried.
    margins: Vec<f32>,
    /// Rows copied together for [`gather_dots`].
    block: Vec<f32>,
}

impl Builder<'_> {
    fn tree(&self, seed: u64) -> Tree {
        let rows = self.sq_norms.len();
        let mut rng = SplitMix64::new(seed);
        // Row numbers fit in u32: `Annoy::build` bounds the rows.
        let mut order: Vec<u32> = (0..rows as u32).collect();
        let mut t = Tree::default();
        let mut w = Work {
            pq: vec![0.0; 2 * self.dim],
            right: Vec::new(),
            margins: Vec::new(),
            block: Vec::new(),
        };
        t.root = self.grow(&mut order, &mut rng, &mut t, &mut w);
        t
    }

    #[inline]
    fn row(&self, r: u32) -> &[f32] {
        let r = r as usize;
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }

    #[inline]
    fn extra(&self, r: u32) -> f32 {
        self.extra.get(r as usize).copied().unwrap_or(0.0)
    }

    /// Builds the subtree over `rows` (reordered in place) and returns its reference. Children
    /// are added before their parent, so a child split always has the smaller number.
    fn grow(&self, rows: &mut [u32], rng: &mut SplitMix64, t: &mut Tree, w: &mut Work) -> u32 {
        let n = rows.len();
        if n <= self.cap {
            t.leaf_lens.push(n as u32);
            t.leaf_rows.extend_from_slice(rows);
            return LEAF | (t.leaf_lens.len() - 1) as u32;
        }
        let mut plane = vec![0.0f32; self.dim + 1];
        let mut at = 0;
        for _ in 0..SPLIT_ATTEMPTS {
            self.two_means_plane(rows, rng, &mut plane, w);
            w.margins.resize(n, 0.0);
            gather_dots(
                self.isa,
                &plane[..self.dim],
                self.vectors,
                rows,
                &mut w.block,
                &mut w.margins,
                None,
            );
            for (m, &r) in w.margins.iter_mut().zip(rows.iter()) {
                *m += plane[self.dim]
                    * match self.metric {
                        Metric::L2 => 1.0,
                        Metric::Ip => self.extra(r),
                    };
            }
            at = partition(rows, &w.margins, rng, &mut w.right);
            if imbalance(at, n) < RETRY_IMBALANCE {
                break;
            }
        }
        while imbalance(at, n) > RANDOM_IMBALANCE {
            // Annoy's last resort: a null hyperplane, rows dealt out by coin flips.
            plane.fill(0.0);
            w.margins.clear();
            w.margins.resize(n, 0.0);
            at = partition(rows, &w.margins, rng, &mut w.right);
        }
        let (lo, hi) = rows.split_at_mut(at);
        let left = self.grow(lo, rng, t, w);
        let right = self.grow(hi, rng, t, w);
        t.planes.extend_from_slice(&plane);
        t.children.push([left, right]);
        (t.children.len() - 1) as u32
    }

    /// Annoy's two-means heuristic over `rows` (at least 2), then the hyperplane between the
    /// two centroids into `plane`: unit normal, then the offset (L2, Annoy's `Euclidean`) or the
    /// normal's augmented weight (IP, the angular split of Annoy's `DotProduct`).
    fn two_means_plane(&self, rows: &[u32], rng: &mut SplitMix64, plane: &mut [f32], w: &mut Work) {
        let (dim, count) = (self.dim, rows.len() as u64);
        let cosine = self.metric == Metric::Ip;
        let i = rng.below(count) as usize;
        let mut j = rng.below(count - 1) as usize;
        if j >= i {
            j += 1;
        }
        let (p, q) = w.pq.split_at_mut(dim);
        p.copy_from_slice(self.row(rows[i]));
        q.copy_from_slice(self.row(rows[j]));
        let (mut pe, mut qe) = (self.extra(rows[i]), self.extra(rows[j]));
        if cosine {
            normalize(p, &mut pe);
            normalize(q, &mut qe);
        }
        let sq = |v: &[f32], e: f32| {
            let mut n = [0.0f32];
            kernel::norms(self.isa, v, 1, dim, &mut n);
            n[0] + e * e
        };
        let (mut pn, mut qn) = (sq(p, pe), sq(q, qe));
        let (mut ic, mut jc) = (1.0f32, 1.0f32);
        let mut both = [0.0f32; 2];
        for _ in 0..TWO_MEANS_STEPS {
            let r = rows[rng.below(count) as usize];
            let (x, xe) = (self.row(r), self.extra(r));
            let xn = self.sq_norms[r as usize] + xe * xe;
            kernel::dots(self.isa, &w.pq, 2, x, 1, dim, &mut both, 1);
            let (px, qx) = (both[0] + pe * xe, both[1] + qe * xe);
            let (di, dj, scale) = if cosine {
                let norm = xn.sqrt();
                // Annoy skips a zero-norm row (and a NaN one).
                if norm.is_nan() || norm <= 0.0 {
                    continue;
                }
                (
                    ic * angular(pn, xn, px),
                    jc * angular(qn, xn, qx),
                    1.0 / norm,
                )
            } else {
                let d = |cn: f32, cx: f32| (cn + xn - 2.0 * cx).max(0.0);
                (ic * d(pn, px), jc * d(qn, qx), 1.0)
            };
            let (p, q) = w.pq.split_at_mut(dim);
            if di < dj {
                absorb(p, &mut pe, ic, x, xe, scale);
                ic += 1.0;
                pn = sq(p, pe);
            } else if dj < di {
                absorb(q, &mut qe, jc, x, xe, scale);
                jc += 1.0;
                qn = sq(q, qe);
            }
        }
        let (p, q) = w.pq.split_at(dim);
        let (normal, rest) = plane.split_at_mut(dim);
        for ((n, &a), &b) in normal.iter_mut().zip(p).zip(q) {
            *n = a - b;
        }
        let mut ne = pe - qe;
        normalize(normal, &mut ne);
        rest[0] = match self.metric {
            // The hyperplane halfway between the centroids: n·x + a = 0 at (p + q) / 2.
            Metric::L2 => -normal
                .iter()
                .zip(p.iter().zip(q))
                .map(|(&n, (&a, &b))| n * (a + b) / 2.0)
                .sum::<f32>(),
            Metric::Ip => ne,
        };
    }
}

/// Puts the rows with margin ≤ 0 first and those with margin > 0 after (each in their old
/// order); a margin of exactly 0 goes to a coin flip, as Annoy's `side` does. `margins[i]` is
/// row `rows[i]`'s. Returns the count on the first side.
fn partition(
    rows: &mut [u32],
    margins: &[f32],
    rng: &mut SplitMix64,
    right: &mut Vec<u32>,
) -> usize {
    right.clear();
    let mut kept = 0;
    for i in 0..rows.len() {
        let (r, m) = (rows[i], margins[i]);
        let positive = if m != 0.0 {
            m > 0.0
        } else {
            rng.next_u64() & 1 == 1
        };
        if positive {
            right.push(r);
        } else {
            rows[kept] = r;
            kept += 1;
        }
    }
    rows[kept..].copy_from_slice(right);
    kept
}

/// Annoy's angular distance `2 − 2·cos` from squared norms and the dot product (2 when a norm
/// is 0).
fn angular(an: f32, bn: f32, ab: f32) -> f32 {
    let nn = an * bn;
    if nn > 0.0 {
        2.0 - 2.0 * ab / nn.sqrt()
    } else {
        2.0
    }
}

/// Scales `(v, e)` to unit norm (left alone when the norm is 0).
fn normalize(v: &mut [f32], e: &mut f32) {
    let norm = (v.iter().map(|&x| x * x).sum::<f32>() + *e * *e).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
        *e /= norm;
    }
}

/// One two-means update: the centroid `(c, ce)` that has absorbed `weight` rows takes in
/// `(x, xe) · scale` as one more.
fn absorb(c: &mut [f32], ce: &mut f32, weight: f32, x: &[f32], xe: f32, scale: f32) {
    let next = weight + 1.0;
    for (a, &b) in c.iter_mut().zip(x) {
        *a = (*a * weight + b * scale) / next;
    }
    *ce = (*ce * weight + xe * scale) / next;
}

/// Share of the rows on the larger side of a split of `n` rows with `left` on one side.
fn imbalance(left: usize, n: usize) -> f64 {
    left.max(n - left) as f64 / n as f64
}
