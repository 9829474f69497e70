//! Decode-and-score for 8-bit codes: `out[i][j] = Σ_d w_i[d] · t_j[d]` for query weight rows `w_i`
//! (f32) and code rows `t_j` (i8, the faiss code − 128), without writing decoded floats anywhere.
//!
//! [`super::IvfSq8`] folds the rest of the distance into per-query and per-row constants (see
//! `ivf_sq8.rs`), so this one dot product is all the per-(query, row) work. A tile of `M` weight
//! rows × `N` code rows keeps `M·N` eight-lane accumulators in registers; each step widens eight
//! codes of each row to f32 in registers (sign-extend, convert) and multiplies them into every
//! query's accumulator, so a code is decoded once per tile, not once per query.
//!
//! Like `index::kernel`, the operation order for one (query, row) pair does not depend on the tile
//! shape or position: duplicate rows score the same bits and tie by id. The AVX2 path fuses the
//! multiply-add, the portable one does not, so their last bits differ (the test allows for it).

use crate::index::kernel::Isa;

/// Lanes per accumulator (one AVX2 register of f32).
pub(super) const LANES: usize = 8;

/// Weight rows are padded to a whole number of lanes (zeros past `dim`), so every weight load is
/// a full one; only the code tail needs care.
pub(super) fn padded(dim: usize) -> usize {
    dim.div_ceil(LANES) * LANES
}

/// `out[i * out_stride + j] = Σ_{d < dim} w[i * padded(dim) + d] · codes[j * dim + d]` for
/// `i < mq`, `j < nx`.
///
/// # Panics
/// If a slice is shorter than the shape says (a caller bug: the index sizes them itself).
#[allow(clippy::too_many_arguments)]
pub(super) fn dots(
    isa: Isa,
    w: &[f32],
    mq: usize,
    codes: &[i8],
    nx: usize,
    dim: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if mq == 0 || nx == 0 {
        return;
    }
    // These checks keep the unsafe tiles in bounds.
    let wp = padded(dim);
    assert!(dim > 0 && nx <= out_stride, "sq8 dots: bad shape");
    assert!(
        w.len() >= mq * wp && codes.len() >= nx * dim,
        "sq8 dots: short input"
    );
    assert!(
        out.len() >= (mq - 1) * out_stride + nx,
        "sq8 dots: short output"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && Isa::detect() == Isa::Avx2Fma {
        // SAFETY: AVX2 and FMA are present (checked just above) and the asserts above bound
        // every pointer the tiles form.
        unsafe {
            avx2::dots(
                w.as_ptr(),
                mq,
                codes.as_ptr(),
                nx,
                dim,
                out.as_mut_ptr(),
                out_stride,
            )
        };
        return;
    }
    let _ = isa;
    portable::dots(w, mq, codes, nx, dim, out, out_stride);
}

/// Tile widths per query count: `M·N` accumulators plus `N` widened code registers fit the 16
/// ymm registers (weights come straight from memory as FMA operands).
macro_rules! by_shape {
    ($rows:ident, $mq:expr, $($arg:expr),*) => {{
        let mut i = 0;
        while i + 4 <= $mq {
            $rows::<4, 3>(i, $($arg),*);
            i += 4;
        }
        match $mq - i {
            3 => $rows::<3, 4>(i, $($arg),*),
            2 => $rows::<2, 5>(i, $($arg),*),
            1 => $rows::<1, 8>(i, $($arg),*),
            _ => {}
        }
    }};
}

/// The portable tiles: the same lane layout and reduction tree as the AVX2 ones.
mod portable {
    use super::{LANES, padded};

    /// The fixed reduction tree shared with the AVX2 path: ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
    #[inline(always)]
    fn reduce(a: &[f32; LANES]) -> f32 {
        ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn tile<const M: usize, const N: usize>(
        i0: usize,
        w: &[f32],
        codes: &[i8],
        j0: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let wp = padded(dim);
        let mut acc = [[[0.0f32; LANES]; N]; M];
        let mut d = 0;
        while d < dim {
            let width = LANES.min(dim - d);
            let mut cv = [[0.0f32; LANES]; N];
            for (j, c) in cv.iter_mut().enumerate() {
                let row = &codes[(j0 + j) * dim + d..(j0 + j) * dim + d + width];
                for (l, &t) in row.iter().enumerate() {
                    c[l] = t as f32;
                }
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let wv = &w[(i0 + i) * wp + d..(i0 + i) * wp + d + LANES];
                for (acc_ij, c) in acc_i.iter_mut().zip(&cv) {
                    for l in 0..LANES {
                        acc_ij[l] += wv[l] * c[l];
                    }
                }
            }
            d += LANES;
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, acc_ij) in acc_i.iter().enumerate() {
                out[(i0 + i) * out_stride + j0 + j] = reduce(acc_ij);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rows<const M: usize, const N: usize>(
        i0: usize,
        w: &[f32],
        codes: &[i8],
        nx: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let mut j = 0;
        while j + N <= nx {
            tile::<M, N>(i0, w, codes, j, dim, out, out_stride);
            j += N;
        }
        while j < nx {
            tile::<M, 1>(i0, w, codes, j, dim, out, out_stride);
            j += 1;
        }
    }

    pub(super) fn dots(
        w: &[f32],
        mq: usize,
        codes: &[i8],
        nx: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        by_shape!(rows, mq, w, codes, nx, dim, out, out_stride);
    }
}

/// The AVX2 + FMA tiles. Only reached after the dispatcher saw both features.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, padded};
    use std::arch::x86_64::*;

    /// Reduces four accumulators to `[Σa, Σb, Σc, Σd]`, each by the tree
    /// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) whichever slot it sits in.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let ab = _mm256_hadd_ps(a, b);
        let cd = _mm256_hadd_ps(c, d);
        let abcd = _mm256_hadd_ps(ab, cd);
        _mm_add_ps(
            _mm256_castps256_ps128(abcd),
            _mm256_extractf128_ps::<1>(abcd),
        )
    }

    /// Eight codes at `p` widened to f32.
    ///
    /// Safety: AVX2 present; `p` covers 8 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen8(p: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes; the load is unaligned.
        let b = unsafe { _mm_loadl_epi64(p as *const __m128i) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))
    }

    /// One `M` × `N` tile: weight rows `i0..i0+M` against code rows `j0..j0+N`.
    ///
    /// Safety: AVX2 + FMA present; `w` holds rows `i0..i0+M` of `padded(dim)` floats, `c` rows
    /// `j0..j0+N` of `dim` bytes, `out` covers row `i0 + M - 1` up to column `j0 + N`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize, const N: usize>(
        i0: usize,
        w: *const f32,
        c: *const i8,
        j0: usize,
        dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let wp = padded(dim);
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        // SAFETY (whole block): every offset below stays inside the rows the caller vouched for;
        // the code tail is copied out so no load reads past a row.
        unsafe {
            let wb = w.add(i0 * wp);
            let cb = c.add(j0 * dim);
            let full = dim - dim % LANES;
            let mut d = 0;
            while d < full {
                let mut cv = [_mm256_setzero_ps(); N];
                for (j, v) in cv.iter_mut().enumerate() {
                    *v = widen8(cb.add(j * dim + d));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(wb.add(i * wp + d));
                    for (a, v) in acc_i.iter_mut().zip(&cv) {
                        *a = _mm256_fmadd_ps(wv, *v, *a);
                    }
                }
                d += LANES;
            }
            if d < dim {
                // The last codes of each row, zero-filled to eight (the weights there are zero).
                let mut cv = [_mm256_setzero_ps(); N];
                for (j, v) in cv.iter_mut().enumerate() {
                    let mut buf = [0i8; LANES];
                    std::ptr::copy_nonoverlapping(cb.add(j * dim + d), buf.as_mut_ptr(), dim - d);
                    *v = widen8(buf.as_ptr());
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(wb.add(i * wp + d));
                    for (a, v) in acc_i.iter_mut().zip(&cv) {
                        *a = _mm256_fmadd_ps(wv, *v, *a);
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
                    let mut tmp = [0.0f32; 4];
                    _mm_storeu_ps(tmp.as_mut_ptr(), s);
                    let n = (N - j).min(4);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst.add(j), n);
                    j += 4;
                }
            }
        }
    }

    /// Safety: as [`tile`], for rows `0..nx`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows<const M: usize, const N: usize>(
        i0: usize,
        w: *const f32,
        c: *const i8,
        nx: usize,
        dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut j = 0;
        // SAFETY: every tile covers rows below `nx`, which the caller vouched for.
        unsafe {
            while j + N <= nx {
                tile::<M, N>(i0, w, c, j, dim, out, out_stride);
                j += N;
            }
            while j < nx {
                tile::<M, 1>(i0, w, c, j, dim, out, out_stride);
                j += 1;
            }
        }
    }

    /// See [`super::dots`]. Safety: AVX2 + FMA present; `w` has `mq` rows of `padded(dim)`
    /// floats, `c` has `nx` rows of `dim` bytes, `out` covers `(mq - 1) * out_stride + nx`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(
        w: *const f32,
        mq: usize,
        c: *const i8,
        nx: usize,
        dim: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        // SAFETY: the shapes below are the caller's.
        unsafe {
            by_shape!(rows, mq, w, c, nx, dim, out, out_stride);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Every tile shape, code tails of every length, both instruction sets, against f64.
    #[test]
    fn sq8_dots_match_f64_on_every_isa_and_shape() {
        let mut seed = 7;
        for dim in [1usize, 3, 8, 13, 16, 33, 128] {
            let wp = padded(dim);
            for (mq, nx) in [
                (1usize, 1usize),
                (1, 9),
                (2, 11),
                (3, 5),
                (4, 3),
                (5, 17),
                (9, 26),
            ] {
                let mut w = vec![0.0f32; mq * wp];
                for i in 0..mq {
                    for d in 0..dim {
                        w[i * wp + d] = (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0;
                    }
                }
                let codes: Vec<i8> = (0..nx * dim).map(|_| lcg(&mut seed) as u8 as i8).collect();
                let stride = nx + 3;
                let mut got = vec![f32::NAN; (mq - 1) * stride + nx];
                let mut port = got.clone();
                dots(Isa::detect(), &w, mq, &codes, nx, dim, &mut got, stride);
                dots(Isa::Portable, &w, mq, &codes, nx, dim, &mut port, stride);
                for i in 0..mq {
                    for j in 0..nx {
                        let want: f64 = (0..dim)
                            .map(|d| w[i * wp + d] as f64 * codes[j * dim + d] as f64)
                            .sum();
                        for (what, v) in [
                            ("isa", got[i * stride + j]),
                            ("portable", port[i * stride + j]),
                        ] {
                            assert!(
                                (v as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()) * dim as f64,
                                "{what} dim {dim} mq {mq} nx {nx} ({i},{j}): {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A row scores the same bits wherever it sits in a tile and whatever the query count.
    #[test]
    fn sq8_dots_do_not_depend_on_tile_position() {
        let mut seed = 3;
        let dim = 21;
        let wp = padded(dim);
        let mut w = vec![0.0f32; 5 * wp];
        for i in 0..5 {
            for d in 0..dim {
                w[i * wp + d] = (lcg(&mut seed) % 1000) as f32 / 300.0 - 1.5;
            }
        }
        let codes: Vec<i8> = (0..11 * dim).map(|_| lcg(&mut seed) as u8 as i8).collect();
        for isa in [Isa::Portable, Isa::detect()] {
            let mut all = vec![0.0f32; 5 * 11];
            dots(isa, &w, 5, &codes, 11, dim, &mut all, 11);
            for i in 0..5 {
                for j in 0..11 {
                    let mut one = [0.0f32];
                    dots(
                        isa,
                        &w[i * wp..(i + 1) * wp],
                        1,
                        &codes[j * dim..(j + 1) * dim],
                        1,
                        dim,
                        &mut one,
                        1,
                    );
                    assert_eq!(
                        one[0].to_bits(),
                        all[i * 11 + j].to_bits(),
                        "{isa:?} ({i},{j})"
                    );
                }
            }
        }
    }
}
