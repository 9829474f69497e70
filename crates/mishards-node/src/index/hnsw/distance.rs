//! One-vector-against-one-vector scores for the graph walk.
//!
//! A graph search scores one query against scattered single rows, so the tile kernel (built for
//! blocks of rows) does not fit; these are the one-pair versions: AVX2 + FMA picked at run time
//! (the crate is not built with `target-cpu=native`), with a portable fallback. Scores are
//! "lower is better": the squared L2 distance, or the negated inner product.

use crate::index::topk::Metric;

/// Lanes per accumulator (one AVX2 register of f32).
const LANES: usize = 8;

/// Proof that this CPU has AVX2 and FMA: only [`Avx2Fma::detect`] makes one, so holding one
/// is what makes calling the AVX2 functions sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Avx2Fma(());

impl Avx2Fma {
    pub(super) fn detect() -> Option<Avx2Fma> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Avx2Fma(()));
        }
        None
    }
}

/// How a pair of vectors is scored: the metric and the instruction set, resolved once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scorer {
    pub(super) metric: Metric,
    pub(super) simd: Option<Avx2Fma>,
}

impl Scorer {
    pub(super) fn new(metric: Metric) -> Scorer {
        Scorer {
            metric,
            simd: Avx2Fma::detect(),
        }
    }

    /// The score of `a` against `b` (lower is better); both are one vector of the same length.
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
pub(super) fn l2(simd: Option<Avx2Fma>, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if simd.is_some() {
        // SAFETY: an `Avx2Fma` exists only if the CPU has both; both pointers cover `n` floats.
        return unsafe { avx2::l2(a.as_ptr(), b.as_ptr(), n) };
    }
    let _ = simd;
    portable_l2(&a[..n], &b[..n])
}

/// Inner product over the common length of `a` and `b`.
#[inline]
pub(super) fn dot(simd: Option<Avx2Fma>, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if simd.is_some() {
        // SAFETY: as in `l2`.
        return unsafe { avx2::dot(a.as_ptr(), b.as_ptr(), n) };
    }
    let _ = simd;
    portable_dot(&a[..n], &b[..n])
}

fn reduce(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

fn portable_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let d = xa[l] - xb[l];
            acc[l] += d * d;
        }
    }
    reduce(&acc) + tail
}

fn portable_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += xa[l] * xb[l];
        }
    }
    reduce(&acc) + tail
}

/// Hints the CPU to start loading the vector at `v` (a no-op off x86-64). The graph walk knows
/// the next neighbour a whole distance computation ahead of needing it, as hnswlib exploits too.
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
            // Four independent chains hide the FMA latency.
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
    fn hnsw_distances_match_f64_on_every_isa() {
        let mut rng = Rng::new(5);
        for dim in [1usize, 3, 8, 9, 31, 32, 33, 64, 100, 128] {
            let a = rng.normals(dim);
            let b = rng.normals(dim);
            let want_l2 = exact(Metric::L2, &a, &b);
            let want_ip = exact(Metric::Ip, &a, &b);
            for isa in [None, Avx2Fma::detect()] {
                let tol = 1e-5 * (1.0 + dim as f64);
                assert!(
                    (l2(isa, &a, &b) as f64 - want_l2).abs() < tol,
                    "{isa:?} l2 {dim}"
                );
                assert!(
                    (dot(isa, &a, &b) as f64 - want_ip).abs() < tol,
                    "{isa:?} ip {dim}"
                );
                let s = Scorer {
                    metric: Metric::Ip,
                    simd: isa,
                };
                assert_eq!(s.score(&a, &b), -dot(isa, &a, &b));
            }
            assert_eq!(l2(Avx2Fma::detect(), &a, &a), 0.0);
        }
    }
}
