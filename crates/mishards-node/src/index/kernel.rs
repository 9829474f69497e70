//! Dot-product tiles: the one arithmetic kernel under FLAT search, IVF search and k-means.
//!
//! Every result is `⟨q, x⟩` for one query row `q` and one data row `x`, both row-major along the
//! dimension, so neither side is ever repacked (a FLAT search gets its segment as a plain slice).
//! A tile of `M` queries × `N` rows keeps `M·N` eight-lane accumulators in registers and walks the
//! dimension eight floats at a time (the last partial step uses masked loads), then reduces the
//! lanes with one fixed tree.
//!
//! The operation sequence for a given (query, row) pair does not depend on the tile shape, the
//! tile position, the block size or the thread that ran it: a row scored inside a 4 × 3 tile and
//! the same row scored alone give the same bits. That is what makes duplicate vectors tie exactly
//! (and then order by id), and makes IVF with `nprobe == nlist` return exactly the FLAT result.
//! [`norms`] follows the same sequence, so `norms(x)[j] == dots(x_j, x_j)`.
//!
//! Two access orders: [`dots`] works a block of rows that is already in L1 (compute-bound, four
//! or more queries), [`dots_streaming`] takes one row at a time in memory order for one to three
//! queries over rows coming from DRAM (memory-bound; see [`touch`] for why the order matters).
//!
//! The crate is not built with `target-cpu=native`, so AVX2 + FMA is chosen at run time
//! ([`Isa::detect`]); the portable path uses the same lane layout and reduction tree (without
//! fused multiply-add, so its last bits differ from the AVX2 path's, but it is self-consistent).

/// The instruction set a search runs on. Resolved once per call, then passed down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust over eight-lane arrays; the compiler vectorizes what it can.
    Portable,
    /// x86-64 AVX2 with FMA, detected at run time.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub(crate) fn detect() -> Isa {
        if avx2_fma_available() {
            Isa::Avx2Fma
        } else {
            Isa::Portable
        }
    }
}

/// Whether AVX2 builds of plain-Rust loops (compiled for 8 lanes, same bits as the portable
/// build) may run under `isa`.
pub(crate) fn use_avx2(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa == Isa::Avx2Fma && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_available() -> bool {
    // std caches the CPUID answer, so this is an atomic load after the first call.
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_available() -> bool {
    false
}

/// Lanes per accumulator (one AVX2 register of f32).
const LANES: usize = 8;

/// `out[i * out_stride + j] = ⟨q_i, x_j⟩` for `i < mq`, `j < nx`, where `q_i = q[i*dim..(i+1)*dim]`
/// and `x_j = x[j*dim..(j+1)*dim]`.
///
/// # Panics
/// If a slice is shorter than the shape says (a caller bug: every caller sizes them itself).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dots(
    isa: Isa,
    q: &[f32],
    mq: usize,
    x: &[f32],
    nx: usize,
    dim: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if mq == 0 || nx == 0 {
        return;
    }
    // These checks keep the unsafe tiles below in bounds.
    check_dots_shape("dots", q, mq, x, nx, dim, out, out_stride);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        // SAFETY: AVX2 and FMA are present (checked just above) and the shape checks above
        // bound every pointer the tiles form.
        unsafe {
            avx2::dots(
                q.as_ptr(),
                mq,
                x.as_ptr(),
                nx,
                dim,
                out.as_mut_ptr(),
                out_stride,
            )
        };
        return;
    }
    let _ = isa;
    portable::dots(q, mq, x, nx, dim, out, out_stride);
}

/// The shape checks of [`dots`] and [`dots_streaming`] (for `mq, nx ≥ 1`): every pointer the
/// unsafe tiles form stays inside `q`, `x` and `out`.
#[allow(clippy::too_many_arguments)]
fn check_dots_shape(
    what: &str,
    q: &[f32],
    mq: usize,
    x: &[f32],
    nx: usize,
    dim: usize,
    out: &[f32],
    out_stride: usize,
) {
    assert!(dim > 0 && nx <= out_stride, "{what}: bad shape");
    assert!(
        q.len() >= mq * dim && x.len() >= nx * dim,
        "{what}: short input"
    );
    assert!(
        out.len() >= (mq - 1) * out_stride + nx,
        "{what}: short output"
    );
}

/// `out[j] = ⟨x_j, x_j⟩` for `j < n`, bit-identical to what [`dots`] gives for the pair `(x_j, x_j)`.
///
/// # Panics
/// If `x` holds fewer than `n` rows or `out` fewer than `n` floats.
pub(crate) fn norms(isa: Isa, x: &[f32], n: usize, dim: usize, out: &mut [f32]) {
    if n == 0 {
        return;
    }
    assert!(
        dim > 0 && x.len() >= n * dim && out.len() >= n,
        "norms: bad shape"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        // SAFETY: features checked just above; the assert bounds the pointers.
        unsafe { avx2::norms(x.as_ptr(), n, dim, out.as_mut_ptr()) };
        return;
    }
    let _ = isa;
    portable::norms(x, n, dim, out);
}

/// Convenience: the norms of `n` rows as a new vector.
pub(crate) fn norms_vec(isa: Isa, x: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    norms(isa, x, n, dim, &mut out);
    out
}

/// Fewest queries for which [`dots`] is compute-bound; below it, scans use [`dots_streaming`].
pub(crate) const STREAMING_BELOW: usize = 4;

/// [`dots`] for 1..[`STREAMING_BELOW`] queries over rows that are probably not in cache: one pass
/// in memory order, one row at a time (all queries against it), optionally also writing the
/// rows' squared norms to `norms_out`. With so few queries the scan is bound by memory, and a
/// single sequential stream is what the prefetcher follows best. Results are bit-identical to
/// [`dots`] and [`norms`].
///
/// # Panics
/// On a shape mismatch, like [`dots`], or if `mq` is 0 or not below [`STREAMING_BELOW`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn dots_streaming(
    isa: Isa,
    q: &[f32],
    mq: usize,
    x: &[f32],
    nx: usize,
    dim: usize,
    out: &mut [f32],
    out_stride: usize,
    norms_out: Option<&mut [f32]>,
) {
    assert!(
        (1..STREAMING_BELOW).contains(&mq),
        "dots_streaming: {mq} queries"
    );
    if nx == 0 {
        return;
    }
    check_dots_shape("dots_streaming", q, mq, x, nx, dim, out, out_stride);
    if let Some(n) = &norms_out {
        assert!(n.len() >= nx, "dots_streaming: short norms output");
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        let nptr = norms_out.map_or(std::ptr::null_mut(), |n| n.as_mut_ptr());
        // SAFETY: features checked just above; the asserts bound every pointer, and `nptr` is
        // either null (not written) or covers `nx` floats.
        unsafe {
            avx2::dots_streaming(
                q.as_ptr(),
                mq,
                x.as_ptr(),
                nx,
                dim,
                out.as_mut_ptr(),
                out_stride,
                nptr,
            )
        };
        return;
    }
    let _ = isa;
    portable::dots(q, mq, x, nx, dim, out, out_stride);
    if let Some(n) = norms_out {
        portable::norms(x, nx, dim, n);
    }
}

/// Reads one float per cache line of `x`, in order, so a block about to be scored is streamed
/// into cache as one sequential run. The tiles read several rows in an interleaved order, which
/// the hardware prefetcher follows poorly: on the 2-core bench machine a first touch through the
/// tiles streamed at ~10 GB/s per core, a sequential pass at ~25 GB/s.
pub(crate) fn touch(x: &[f32]) {
    let mut acc = 0.0f32;
    for v in x.iter().step_by(16) {
        acc += *v;
    }
    std::hint::black_box(acc);
}

/// Squared-L2 scores of one query against a block: `out[r] = max(0, (qn + xn[r]) − 2·dots[r])`
/// (rounding can take a near-duplicate just below zero). Returns the smallest score, NaN
/// ignored (+∞ if none), so a block that cannot beat the heap is skipped with one compare.
/// The AVX2 and portable paths give the same bits.
pub(crate) fn l2_scores(isa: Isa, qn: f32, xn: &[f32], dots: &[f32], out: &mut [f32]) -> f32 {
    let n = out.len();
    assert!(xn.len() >= n && dots.len() >= n, "l2_scores: short input");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        // SAFETY: features checked just above; the assert bounds the pointers.
        return unsafe { avx2::l2_scores(qn, xn.as_ptr(), dots.as_ptr(), out.as_mut_ptr(), n) };
    }
    let _ = isa;
    let mut best = f32::INFINITY;
    for ((o, &x), &d) in out.iter_mut().zip(xn).zip(dots) {
        *o = l2_score(qn, x, d);
        if *o < best {
            best = *o;
        }
    }
    best
}

/// Inner-product scores (lower is better): `out[r] = −dots[r]`; returns the smallest, like
/// [`l2_scores`].
pub(crate) fn ip_scores(isa: Isa, dots: &[f32], out: &mut [f32]) -> f32 {
    let n = out.len();
    assert!(dots.len() >= n, "ip_scores: short input");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma && avx2_fma_available() {
        // SAFETY: features checked just above; the assert bounds the pointers.
        return unsafe { avx2::ip_scores(dots.as_ptr(), out.as_mut_ptr(), n) };
    }
    let _ = isa;
    let mut best = f32::INFINITY;
    for (o, &d) in out.iter_mut().zip(dots) {
        *o = -d;
        if *o < best {
            best = *o;
        }
    }
    best
}

/// One squared-L2 score, as [`l2_scores`] computes it (`d + d` is exactly `2·d`).
#[inline]
fn l2_score(qn: f32, x: f32, d: f32) -> f32 {
    let v = (qn + x) - (d + d);
    if v < 0.0 { 0.0 } else { v }
}

/// The portable tiles: the same lane layout and reduction tree as the AVX2 ones.
mod portable {
    use super::LANES;

    /// The fixed reduction tree shared with the AVX2 path: ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
    #[inline(always)]
    fn reduce(a: &[f32; LANES]) -> f32 {
        ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn tile<const M: usize, const N: usize>(
        q: &[f32],
        i0: usize,
        x: &[f32],
        j0: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let mut acc = [[[0.0f32; LANES]; N]; M];
        let mut d = 0;
        while d < dim {
            let w = LANES.min(dim - d);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let qs = &q[(i0 + i) * dim + d..(i0 + i) * dim + d + w];
                for (j, acc_ij) in acc_i.iter_mut().enumerate() {
                    let xs = &x[(j0 + j) * dim + d..(j0 + j) * dim + d + w];
                    for l in 0..w {
                        acc_ij[l] += qs[l] * xs[l];
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
        q: &[f32],
        i0: usize,
        x: &[f32],
        nx: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
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

    pub(super) fn dots(
        q: &[f32],
        mq: usize,
        x: &[f32],
        nx: usize,
        dim: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let mut i = 0;
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

    pub(super) fn norms(x: &[f32], n: usize, dim: usize, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate().take(n) {
            let row = &x[j * dim..(j + 1) * dim];
            let mut acc = [0.0f32; LANES];
            for chunk in row.chunks(LANES) {
                for (a, &v) in acc.iter_mut().zip(chunk) {
                    *a += v * v;
                }
            }
            *o = reduce(&acc);
        }
    }
}

/// The AVX2 + FMA tiles, in their own file (`kernel/avx2.rs`).
#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn naive(q: &[f32], x: &[f32]) -> f64 {
        q.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// Score passes: both instruction sets give the same bits (clamping, NaN kept in the output
    /// but never the minimum), for lengths with and without a scalar tail.
    #[test]
    fn scores_match_across_isas() {
        let mut seed = 3;
        for n in [0usize, 1, 7, 8, 13, 48] {
            let dots: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 10.0).collect();
            let mut xn: Vec<f32> = (0..n).map(|_| lcg(&mut seed).abs() * 5.0).collect();
            if n > 3 {
                xn[2] = f32::NAN;
                xn[3] = -30.0; // forces a negative score, clamped to 0
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let mut want = vec![0.0; n];
            let want_min = l2_scores(Isa::Portable, 1.5, &xn, &dots, &mut want);
            let mut got = vec![0.0; n];
            let got_min = l2_scores(Isa::detect(), 1.5, &xn, &dots, &mut got);
            assert_eq!(bits(&got), bits(&want), "l2 n={n}");
            assert_eq!(got_min.to_bits(), want_min.to_bits(), "l2 min n={n}");
            let naive = want
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .fold(f32::INFINITY, f32::min);
            assert_eq!(want_min, naive);
            if n > 3 {
                assert!(want[2].is_nan() && want[3] == 0.0);
            }
            let want_min = ip_scores(Isa::Portable, &dots, &mut want);
            let got_min = ip_scores(Isa::detect(), &dots, &mut got);
            assert_eq!(bits(&got), bits(&want), "ip n={n}");
            assert_eq!(got_min.to_bits(), want_min.to_bits(), "ip min n={n}");
        }
    }

    /// Every shape path (4×3 tiles, 3/2/1-query remainders, single-row tails, masked dimension
    /// tails) against f64, on both instruction sets; and position independence of each pair.
    #[test]
    fn dots_match_naive_and_are_position_independent() {
        let mut seed = 7;
        for &dim in &[1usize, 3, 7, 8, 9, 17, 64, 128, 131] {
            for &(mq, nx) in &[
                (1usize, 1usize),
                (1, 13),
                (2, 7),
                (3, 9),
                (4, 3),
                (5, 11),
                (9, 25),
            ] {
                let q: Vec<f32> = (0..mq * dim).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..nx * dim).map(|_| lcg(&mut seed)).collect();
                for isa in [Isa::Portable, Isa::detect()] {
                    let stride = nx + 2;
                    let mut out = vec![f32::NAN; mq * stride];
                    dots(isa, &q, mq, &x, nx, dim, &mut out, stride);
                    for i in 0..mq {
                        for j in 0..nx {
                            let want =
                                naive(&q[i * dim..(i + 1) * dim], &x[j * dim..(j + 1) * dim]);
                            let got = out[i * stride + j];
                            assert!(
                                (got as f64 - want).abs() <= 1e-5 * (dim as f64),
                                "{isa:?} dim {dim} ({i},{j}): {got} vs {want}"
                            );
                            // The same pair alone gives the same bits.
                            let mut one = [0.0f32];
                            dots(isa, &q[i * dim..], 1, &x[j * dim..], 1, dim, &mut one, 1);
                            assert_eq!(one[0].to_bits(), got.to_bits(), "{isa:?} dim {dim}");
                        }
                        // Padding columns are left alone.
                        assert!(out[i * stride + nx].is_nan());
                    }
                    if mq < STREAMING_BELOW {
                        // The streaming pass gives the same bits, and the same norms.
                        let mut out2 = vec![f32::NAN; mq * stride];
                        let mut n2 = vec![f32::NAN; nx];
                        dots_streaming(isa, &q, mq, &x, nx, dim, &mut out2, stride, Some(&mut n2));
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&out2), bits(&out), "{isa:?} streaming dim {dim}");
                        assert_eq!(
                            bits(&n2),
                            bits(&norms_vec(isa, &x, nx, dim)),
                            "{isa:?} dim {dim}"
                        );
                        dots_streaming(isa, &q, mq, &x, nx, dim, &mut out2, stride, None);
                        assert_eq!(bits(&out2), bits(&out), "{isa:?} streaming dim {dim}");
                    }
                    let n = norms_vec(isa, &x, nx, dim);
                    for j in 0..nx {
                        let mut one = [0.0f32];
                        let xj = &x[j * dim..(j + 1) * dim];
                        dots(isa, xj, 1, xj, 1, dim, &mut one, 1);
                        assert_eq!(n[j].to_bits(), one[0].to_bits(), "{isa:?} norm dim {dim}");
                    }
                }
            }
        }
    }
}
