//! One-vector-against-one-vector scores for the graph indexes' walks (HNSW and NSG).
//!
//! A graph search scores one query against scattered single rows, so the tile kernel (built for
//! blocks of rows) does not fit; these are the one-pair versions: AVX-512 or AVX2 + FMA picked at
//! run time (the crate is not built with `target-cpu=native`; hnswlib's wheel is, and uses
//! AVX-512 where the CPU has it), with a portable fallback. Scores are "lower is better": the
//! squared L2 distance, or the negated inner product.

use crate::index::topk::Metric;

/// Lanes per accumulator (one AVX2 register of f32).
const LANES: usize = 8;

/// A SIMD instruction set this CPU has. Only the detecting constructors make one, so holding
/// one is what makes calling the matching `unsafe` functions sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Simd(Level);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Avx2Fma,
    Avx512,
}

impl Simd {
    /// The best one this CPU has.
    pub(super) fn detect() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Simd(Level::Avx512));
        }
        Simd::avx2_fma()
    }

    /// AVX2 + FMA, if present (even where AVX-512 is: the tests check both paths).
    pub(super) fn avx2_fma() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Simd(Level::Avx2Fma));
        }
        None
    }
}

/// A vector of f32 as the kernels read it: plain floats (a query), or a row's floats stored as
/// their bits beside its links (see [`super::Hnsw`]'s level-0 blocks). Bits and floats have the
/// same size and alignment, and every bit pattern is a valid f32, so both are read in place.
pub(super) trait Floats {
    fn ptr(&self) -> *const f32;
    fn count(&self) -> usize;
    fn at(&self, i: usize) -> f32;
}

impl Floats for [f32] {
    #[inline(always)]
    fn ptr(&self) -> *const f32 {
        self.as_ptr()
    }
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self[i]
    }
}

impl Floats for [u32] {
    #[inline(always)]
    fn ptr(&self) -> *const f32 {
        self.as_ptr().cast()
    }
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        f32::from_bits(self[i])
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

    /// The score of `a` against `b` (lower is better); both are one vector of the same length.
    #[inline]
    pub(super) fn score<A: Floats + ?Sized, B: Floats + ?Sized>(&self, a: &A, b: &B) -> f32 {
        match self.metric {
            Metric::L2 => l2(self.simd, a, b),
            Metric::Ip => -dot(self.simd, a, b),
        }
    }
}

/// Squared Euclidean distance over the common length of `a` and `b`.
#[inline]
pub(super) fn l2<A: Floats + ?Sized, B: Floats + ?Sized>(simd: Option<Simd>, a: &A, b: &B) -> f32 {
    let n = a.count().min(b.count());
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: a `Simd` exists only if the CPU has its instructions; both pointers cover `n`
        // floats (`Floats::ptr` points at `count()` readable f32-sized values).
        Some(Simd(Level::Avx512)) => return unsafe { avx512::l2(a.ptr(), b.ptr(), n) },
        Some(Simd(Level::Avx2Fma)) => return unsafe { avx2::l2(a.ptr(), b.ptr(), n) },
        None => {}
    }
    let _ = simd;
    portable(n, |i| {
        let d = a.at(i) - b.at(i);
        d * d
    })
}

/// Inner product over the common length of `a` and `b`.
#[inline]
pub(super) fn dot<A: Floats + ?Sized, B: Floats + ?Sized>(simd: Option<Simd>, a: &A, b: &B) -> f32 {
    let n = a.count().min(b.count());
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: as in `l2`.
        Some(Simd(Level::Avx512)) => return unsafe { avx512::dot(a.ptr(), b.ptr(), n) },
        Some(Simd(Level::Avx2Fma)) => return unsafe { avx2::dot(a.ptr(), b.ptr(), n) },
        None => {}
    }
    let _ = simd;
    portable(n, |i| a.at(i) * b.at(i))
}

fn reduce(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The sum of `term(i)` over `0..n` in `LANES` interleaved partial sums (as the SIMD kernels
/// add), so the compiler can vectorise it.
#[inline(always)]
fn portable(n: usize, term: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let full = n - n % LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += term(base + l);
        }
    }
    let tail: f32 = (full..n).map(&term).sum();
    reduce(&acc) + tail
}

/// Hints the CPU to start loading `v` (a no-op off x86-64). The graph walk knows the next
/// neighbour a whole distance computation ahead of needing it, as hnswlib exploits too.
#[inline(always)]
pub(super) fn prefetch<V: Floats + ?Sized>(v: &V) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..v.count()).step_by(16) {
        // SAFETY: a prefetch never faults, and the offset stays within the live slice anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(v.ptr().add(line) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Safety: AVX-512F present; `a` and `b` cover `n` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn l2(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            // Two chains of 16 lanes: dim 128 is four steps of 32.
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
                // The last partial step loads only the lanes in range (masked lanes read nothing).
                let m: __mmask16 = if n - i >= 16 {
                    0xFFFF
                } else {
                    (1u16 << (n - i)) - 1
                };
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
                let m: __mmask16 = if n - i >= 16 {
                    0xFFFF
                } else {
                    (1u16 << (n - i)) - 1
                };
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
    fn graph_distances_match_f64_on_every_isa() {
        let mut rng = Rng::new(5);
        for dim in [1usize, 3, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 128] {
            let a = rng.normals(dim);
            let b = rng.normals(dim);
            let want_l2 = exact(Metric::L2, &a, &b);
            let want_ip = exact(Metric::Ip, &a, &b);
            for isa in [None, Simd::avx2_fma(), Simd::detect()] {
                let tol = 1e-5 * (1.0 + dim as f64);
                assert!(
                    (l2(isa, &a[..], &b[..]) as f64 - want_l2).abs() < tol,
                    "{isa:?} l2 {dim}"
                );
                assert!(
                    (dot(isa, &a[..], &b[..]) as f64 - want_ip).abs() < tol,
                    "{isa:?} ip {dim}"
                );
                let s = Scorer {
                    metric: Metric::Ip,
                    simd: isa,
                };
                assert_eq!(s.score(&a[..], &b[..]), -dot(isa, &a[..], &b[..]));
            }
            assert_eq!(l2(Simd::detect(), &a[..], &a[..]), 0.0);
            // A row stored as bits scores exactly as its floats.
            let bits: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
            for isa in [None, Simd::avx2_fma(), Simd::detect()] {
                assert_eq!(l2(isa, &a[..], &bits[..]), l2(isa, &a[..], &b[..]));
                assert_eq!(dot(isa, &bits[..], &a[..]), dot(isa, &b[..], &a[..]));
            }
        }
    }
}
