//! The AVX2 + FMA tiles: the same lane layout and reduction tree as the portable ones in
//! `kernel`, so both paths order their arithmetic alike. Only reached after
//! `avx2_fma_available()` said yes.

use super::LANES;
use std::arch::x86_64::*;

/// `MASKS[8 - r..16 - r]` enables the first `r` lanes of a masked load.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// Reduces four accumulators to `[Σa, Σb, Σc, Σd]`, each lane by the tree
/// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) whichever slot it sits in (`hadd` adds neighbours, and
/// float addition is commutative), so the result does not depend on the grouping.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let ab = _mm256_hadd_ps(a, b);
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// Stores the first `n` (≤ 4) lanes of `v` at `dst`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_lanes(v: __m128, n: usize, dst: *mut f32) {
    unsafe {
        if n == 4 {
            _mm_storeu_ps(dst, v);
        } else {
            let mut tmp = [0.0f32; 4];
            _mm_storeu_ps(tmp.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
        }
    }
}

/// One `M` × `N` tile: queries `i0..i0+M` against rows `j0..j0+N`.
///
/// Safety: the caller guarantees AVX2 + FMA and that every row touched is in bounds.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const M: usize, const N: usize>(
    q: *const f32,
    i0: usize,
    x: *const f32,
    j0: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let qb = q.add(i0 * dim);
        let xb = x.add(j0 * dim);
        let full = dim - dim % LANES;
        let mut d = 0;
        while d < full {
            let mut xv = [_mm256_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(xb.add(j * dim + d));
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(qb.add(i * dim + d));
                for (j, a) in acc_i.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, xv[j], *a);
                }
            }
            d += LANES;
        }
        if d < dim {
            // Masked-off lanes load as 0.0 and are never read from memory.
            let mask = _mm256_loadu_si256(MASKS.as_ptr().add(LANES - (dim - d)) as *const __m256i);
            let mut xv = [_mm256_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(xb.add(j * dim + d), mask);
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let qv = _mm256_maskload_ps(qb.add(i * dim + d), mask);
                for (j, a) in acc_i.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, xv[j], *a);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        for (i, acc_i) in acc.iter().enumerate() {
            let dst = out.add((i0 + i) * out_stride + j0);
            let mut j = 0;
            while j < N {
                let mut g = [zero; 4];
                for (t, v) in g.iter_mut().enumerate() {
                    if j + t < N {
                        *v = acc_i[j + t];
                    }
                }
                let s = hsum4(g[0], g[1], g[2], g[3]);
                store_lanes(s, (N - j).min(4), dst.add(j));
                j += 4;
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const M: usize, const N: usize>(
    q: *const f32,
    i0: usize,
    x: *const f32,
    nx: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
) {
    unsafe {
        let mut j = 0;
        while j + N <= nx {
            tile::<M, N>(q, i0, x, j, dim, out, out_stride);
            j += N;
        }
        while j < nx {
            tile::<M, 1>(q, i0, x, j, dim, out, out_stride);
            j += 1;
        }
    }
}

/// See [`super::dots`]. Safety: AVX2 + FMA present; `q` has `mq` rows, `x` has `nx` rows and
/// `out` covers `(mq - 1) * out_stride + nx` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots(
    q: *const f32,
    mq: usize,
    x: *const f32,
    nx: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
) {
    unsafe {
        let mut i = 0;
        // 4 × 3 keeps 12 accumulators + 3 row registers in the 16 ymm registers; fewer
        // queries get wider row tiles so there are still enough independent FMA chains.
        while i + 4 <= mq {
            rows::<4, 3>(q, i, x, nx, dim, out, out_stride);
            i += 4;
        }
        match mq - i {
            3 => rows::<3, 4>(q, i, x, nx, dim, out, out_stride),
            2 => rows::<2, 6>(q, i, x, nx, dim, out, out_stride),
            1 => rows::<1, 8>(q, i, x, nx, dim, out, out_stride),
            _ => {}
        }
    }
}

/// Smallest lane of `v` (NaN lanes never win: `min(v, acc)` keeps `acc` when `v` is NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// See [`super::l2_scores`]. Safety: AVX2 present; every pointer covers `n` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2_scores(
    qn: f32,
    xn: *const f32,
    dots: *const f32,
    out: *mut f32,
    n: usize,
) -> f32 {
    unsafe {
        let (q, zero) = (_mm256_set1_ps(qn), _mm256_setzero_ps());
        let mut best = _mm256_set1_ps(f32::INFINITY);
        let mut r = 0;
        while r + LANES <= n {
            let d = _mm256_loadu_ps(dots.add(r));
            let v = _mm256_sub_ps(
                _mm256_add_ps(q, _mm256_loadu_ps(xn.add(r))),
                _mm256_add_ps(d, d),
            );
            // max(0, v): the second operand wins on NaN, so NaN stays NaN, as in `l2_score`.
            let v = _mm256_max_ps(zero, v);
            _mm256_storeu_ps(out.add(r), v);
            best = _mm256_min_ps(v, best);
            r += LANES;
        }
        let mut m = hmin(best);
        while r < n {
            let v = super::l2_score(qn, *xn.add(r), *dots.add(r));
            *out.add(r) = v;
            if v < m {
                m = v;
            }
            r += 1;
        }
        m
    }
}

/// See [`super::ip_scores`]. Safety: AVX2 present; both pointers cover `n` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn ip_scores(dots: *const f32, out: *mut f32, n: usize) -> f32 {
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let mut best = _mm256_set1_ps(f32::INFINITY);
        let mut r = 0;
        while r + LANES <= n {
            let v = _mm256_xor_ps(_mm256_loadu_ps(dots.add(r)), sign);
            _mm256_storeu_ps(out.add(r), v);
            best = _mm256_min_ps(v, best);
            r += LANES;
        }
        let mut m = hmin(best);
        while r < n {
            let v = -*dots.add(r);
            *out.add(r) = v;
            if v < m {
                m = v;
            }
            r += 1;
        }
        m
    }
}

/// See [`super::dots_streaming`]. Safety: AVX2 + FMA present; `q` has `mq` (1..=3) rows,
/// `x` has `nx` rows, `out` covers `(mq - 1) * out_stride + nx` floats, and `norms_out` is
/// null or covers `nx` floats.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dots_streaming(
    q: *const f32,
    mq: usize,
    x: *const f32,
    nx: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
    norms_out: *mut f32,
) {
    unsafe {
        let with_norms = !norms_out.is_null();
        match (mq, with_norms) {
            (1, false) => seq::<1, false>(q, x, nx, dim, out, out_stride, norms_out),
            (1, true) => seq::<1, true>(q, x, nx, dim, out, out_stride, norms_out),
            (2, false) => seq::<2, false>(q, x, nx, dim, out, out_stride, norms_out),
            (2, true) => seq::<2, true>(q, x, nx, dim, out, out_stride, norms_out),
            (3, false) => seq::<3, false>(q, x, nx, dim, out, out_stride, norms_out),
            _ => seq::<3, true>(q, x, nx, dim, out, out_stride, norms_out),
        }
    }
}

/// `M` queries against each row in turn (plus the row's norm when `NORM`), with the same
/// per-pair chain and reduction as [`tile`] and [`norms`]. Rows are read strictly in order;
/// only the lane reductions are batched, four rows per [`hsum4`].
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn seq<const M: usize, const NORM: bool>(
    q: *const f32,
    x: *const f32,
    nx: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
    norms_out: *mut f32,
) {
    unsafe {
        let mut j = 0;
        while j + 4 <= nx {
            seq_rows::<M, NORM, 4>(q, x, j, dim, out, out_stride, norms_out);
            j += 4;
        }
        while j < nx {
            seq_rows::<M, NORM, 1>(q, x, j, dim, out, out_stride, norms_out);
            j += 1;
        }
    }
}

/// Rows `j0..j0+R` (R ≤ 4) of [`seq`], one after the other.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn seq_rows<const M: usize, const NORM: bool, const R: usize>(
    q: *const f32,
    x: *const f32,
    j0: usize,
    dim: usize,
    out: *mut f32,
    out_stride: usize,
    norms_out: *mut f32,
) {
    unsafe {
        let full = dim - dim % LANES;
        let mask = _mm256_loadu_si256(MASKS.as_ptr().add(LANES - dim % LANES) as *const __m256i);
        let zero = _mm256_setzero_ps();
        let mut acc = [[zero; M]; 4];
        let mut accn = [zero; 4];
        for t in 0..R {
            let row = x.add((j0 + t) * dim);
            let mut d = 0;
            while d < full {
                let v = _mm256_loadu_ps(row.add(d));
                for (i, a) in acc[t].iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i * dim + d)), v, *a);
                }
                if NORM {
                    accn[t] = _mm256_fmadd_ps(v, v, accn[t]);
                }
                d += LANES;
            }
            if d < dim {
                let v = _mm256_maskload_ps(row.add(d), mask);
                for (i, a) in acc[t].iter_mut().enumerate() {
                    let qv = _mm256_maskload_ps(q.add(i * dim + d), mask);
                    *a = _mm256_fmadd_ps(qv, v, *a);
                }
                if NORM {
                    accn[t] = _mm256_fmadd_ps(v, v, accn[t]);
                }
            }
        }
        // Query i's four row sums sit in acc[0..4][i]: a transposed read.
        #[allow(clippy::needless_range_loop)]
        for i in 0..M {
            let s = hsum4(acc[0][i], acc[1][i], acc[2][i], acc[3][i]);
            store_lanes(s, R, out.add(i * out_stride + j0));
        }
        if NORM {
            let s = hsum4(accn[0], accn[1], accn[2], accn[3]);
            store_lanes(s, R, norms_out.add(j0));
        }
    }
}

/// See [`super::norms`]. Safety: AVX2 + FMA present; `x` has `n` rows, `out` `n` floats.
///
/// One row at a time, in memory order: this pass is usually the first touch of a block, and
/// a single sequential stream is what the hardware prefetcher follows best (interleaving
/// rows halved the streaming rate). Out-of-order execution overlaps consecutive rows' chains.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn norms(x: *const f32, n: usize, dim: usize, out: *mut f32) {
    unsafe {
        // The query pointer is unused without queries (M = 0).
        let (q, none) = (x, std::ptr::null_mut());
        let mut j = 0;
        while j + 4 <= n {
            seq_rows::<0, true, 4>(q, x, j, dim, none, 0, out);
            j += 4;
        }
        while j < n {
            seq_rows::<0, true, 1>(q, x, j, dim, none, 0, out);
            j += 1;
        }
    }
}
