//! One-vector-against-one-vector scores for the NSG walk and its pruning.
//!
//! A graph walk scores one query against scattered single rows, which the tile kernel (built for
//! blocks of contiguous rows) does not fit. These are the one-pair versions: AVX-512 or AVX2 + FMA
//! picked at run time (the crate is not built with `target-cpu=native`), with a portable fallback.
//! Scores are "lower is better": the squared L2 distance (computed directly, as faiss's
//! `fvec_L2sqr` does for NSG), or the negated inner product (Milvus's NSG negates it the same way).
//!
//! `hnsw/distance.rs` holds the same kind of kernels for HNSW; they are private to that module, so
//! NSG keeps its own rather than reaching into another kernel's internals.

use crate::index::topk::Metric;

/// A SIMD level this CPU has. Only the detecting constructors make one, so holding one is what
/// makes calling the matching `unsafe` functions sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Simd(Level);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Avx2Fma,
    Avx512,
}

impl Simd {
    /// The best level this CPU has.
    pub(super) fn detect() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Simd(Level::Avx512));
        }
        Simd::avx2_fma()
    }

    /// AVX2 + FMA, if present (also where AVX-512 is, so the tests check both paths).
    pub(super) fn avx2_fma() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Simd(Level::Avx2Fma));
        }
        None
    }
}

/// How a pair of vectors is scored: the metric and the instruction set, resolved once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scorer {
    pub(super) metric: Metric,
    pub(super) simd: Option<Simd>,
}

impl PartialEq for Scorer {
    /// The instruction set is a property of the machine, not of the index.
    fn eq(&self, other: &Self) -> bool {
        self.metric == other.metric
    }
}

impl Scorer {
    pub(super) fn new(metric: Metric) -> Scorer {
        Scorer {
            metric,
            simd: Simd::detect(),
        }
    }

    /// The score of `a` against `b` (lower is better) over their common length.
    #[inline]
    pub(super) fn score(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => l2(self.simd, a, b),
            Metric::Ip => -dot(self.simd, a, b),
        }
    }
}

/// Squared Euclidean distance over the common length of `a` and `b`.
#[inline]
pub(super) fn l2(simd: Option<Simd>, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: a `Simd` exists only if the CPU has its instructions; both pointers cover `n`
        // floats.
        Some(Simd(Level::Avx512)) => return unsafe { avx512::l2(a.as_ptr(), b.as_ptr(), n) },
        Some(Simd(Level::Avx2Fma)) => return unsafe { avx2::l2(a.as_ptr(), b.as_ptr(), n) },
        None => {}
    }
    let _ = simd;
    portable(&a[..n], &b[..n], |x, y| (x - y) * (x - y))
}

/// Inner product over the common length of `a` and `b`.
#[inline]
pub(super) fn dot(simd: Option<Simd>, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: as in `l2`.
        Some(Simd(Level::Avx512)) => return unsafe { avx512::dot(a.as_ptr(), b.as_ptr(), n) },
        Some(Simd(Level::Avx2Fma)) => return unsafe { avx2::dot(a.as_ptr(), b.as_ptr(), n) },
        None => {}
    }
    let _ = simd;
    portable(&a[..n], &b[..n], |x, y| x * y)
}

/// Eight independent lanes (so the compiler can vectorize), summed with one fixed tree.
fn portable(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| term(x, y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += term(xa[l], xb[l]);
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Hints the CPU to start loading the vector `v` (a no-op off x86-64): the walk knows the next
/// row a whole distance computation before it needs it.
#[inline(always)]
pub(super) fn prefetch(v: &[f32]) {
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The lanes of the step starting at `i` that lie below `n` (all 16 on a full step).
    #[inline]
    fn mask(n: usize, i: usize) -> __mmask16 {
        if n - i >= 16 {
            0xFFFF
        } else {
            (1u16 << (n - i)) - 1
        }
    }

    /// Safety: AVX-512F present; `a` and `b` cover `n` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn l2(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            // Two chains: dim 128 is four steps of 32.
            let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 32 <= n {
                let d0 = _mm512_sub_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)));
                let d1 = _mm512_sub_ps(
                    _mm512_loadu_ps(a.add(i + 16)),
                    _mm512_loadu_ps(b.add(i + 16)),
                );
                s0 = _mm512_fmadd_ps(d0, d0, s0);
                s1 = _mm512_fmadd_ps(d1, d1, s1);
                i += 32;
            }
            while i < n {
                // Masked lanes read nothing, so the last partial step stays in bounds.
                let m = mask(n, i);
                let d = _mm512_sub_ps(
                    _mm512_maskz_loadu_ps(m, a.add(i)),
                    _mm512_maskz_loadu_ps(m, b.add(i)),
                );
                s0 = _mm512_fmadd_ps(d, d, s0);
                i += 16;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
        }
    }

    /// Safety: AVX-512F present; `a` and `b` cover `n` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 32 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.add(i + 16)),
                    _mm512_loadu_ps(b.add(i + 16)),
                    s1,
                );
                i += 32;
            }
            while i < n {
                let m = mask(n, i);
                s0 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, a.add(i)),
                    _mm512_maskz_loadu_ps(m, b.add(i)),
                    s0,
                );
                i += 16;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Safety: AVX2 + FMA present; `a` and `b` cover `n` floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn l2(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            // Four chains hide the FMA latency.
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, s) in acc.iter_mut().enumerate() {
                    let d = _mm256_sub_ps(
                        _mm256_loadu_ps(a.add(i + 8 * j)),
                        _mm256_loadu_ps(b.add(i + 8 * j)),
                    );
                    *s = _mm256_fmadd_ps(d, d, *s);
                }
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)));
                acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut r = hsum(sum);
            while i < n {
                let d = *a.add(i) - *b.add(i);
                r += d * d;
                i += 1;
            }
            r
        }
    }

    /// Safety: AVX2 + FMA present; `a` and `b` cover `n` floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, s) in acc.iter_mut().enumerate() {
                    *s = _mm256_fmadd_ps(
                        _mm256_loadu_ps(a.add(i + 8 * j)),
                        _mm256_loadu_ps(b.add(i + 8 * j)),
                        *s,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut r = hsum(sum);
            while i < n {
                r += *a.add(i) * *b.add(i);
                i += 1;
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testutil::{Rng, exact};

    #[test]
    fn nsg_distances_agree_with_f64_on_every_instruction_set() {
        let mut rng = Rng::new(5);
        for dim in [1usize, 3, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 128] {
            let a = rng.normals(dim);
            let b = rng.normals(dim);
            let (want_l2, want_ip) = (exact(Metric::L2, &a, &b), exact(Metric::Ip, &a, &b));
            let tol = 1e-5 * (1.0 + dim as f64);
            for simd in [None, Simd::avx2_fma(), Simd::detect()] {
                assert!(
                    (l2(simd, &a, &b) as f64 - want_l2).abs() < tol,
                    "{simd:?} l2 {dim}"
                );
                assert!(
                    (dot(simd, &a, &b) as f64 - want_ip).abs() < tol,
                    "{simd:?} ip {dim}"
                );
                let s = Scorer {
                    metric: Metric::Ip,
                    simd,
                };
                assert_eq!(s.score(&a, &b), -dot(simd, &a, &b));
            }
            assert_eq!(l2(Simd::detect(), &a, &a), 0.0);
        }
    }
}
