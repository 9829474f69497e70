//! Popcount kernels over packed bit vectors: for one query and a run of rows (each `code` bytes,
//! back to back), the per-row counts `|q ⊕ x|` (Hamming) or `|q ∧ x|` and `|q ∨ x|` (Jaccard).
//!
//! Counts are integers, so every instruction set gives the same answer bit for bit; only the
//! speed differs. The crate is not built with `target-cpu=native`, so the set is picked at run
//! time ([`PopIsa::detect`]):
//! - `Avx512`: AVX-512 `VPOPCNTQ` (Ice Lake and later, Zen 4), 64 bytes per step, the tail by a
//!   masked load;
//! - `Avx2`: the nibble-lookup popcount (`VPSHUFB`, Muła et al.), 32 bytes per step;
//! - `Popcnt`: 64-bit words with the scalar `POPCNT` instruction (what faiss's
//!   `HammingComputer*` compile to);
//! - `Portable`: the same word loop without `POPCNT` (the compiler's bit-twiddling fallback).
//!
//! Rows are read straight from the caller's bytes (unaligned loads): a FLAT search gets its
//! segment as a plain slice and never repacks it.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The instruction set the popcount kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopIsa {
    Portable,
    Popcnt,
    Avx2,
    Avx512,
}

impl PopIsa {
    /// The fastest set this CPU supports (std caches the CPUID answer).
    pub(crate) fn detect() -> PopIsa {
        if avx512_available() {
            PopIsa::Avx512
        } else if avx2_available() {
            PopIsa::Avx2
        } else if popcnt_available() {
            PopIsa::Popcnt
        } else {
            PopIsa::Portable
        }
    }

    /// Every set this CPU can run, slowest first (tests compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<PopIsa> {
        let mut v = vec![PopIsa::Portable];
        if popcnt_available() {
            v.push(PopIsa::Popcnt);
        }
        if avx2_available() {
            v.push(PopIsa::Avx2);
        }
        if avx512_available() {
            v.push(PopIsa::Avx512);
        }
        v
    }
}

#[cfg(target_arch = "x86_64")]
fn popcnt_available() -> bool {
    std::arch::is_x86_feature_detected!("popcnt")
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && popcnt_available()
}

#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

#[cfg(not(target_arch = "x86_64"))]
fn popcnt_available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_available() -> bool {
    false
}

/// Checks the shape every kernel relies on: `out` rows of `code` bytes in `rows`, a query of
/// `code` bytes. The unsafe kernels stay in bounds because of it.
fn check_shape(q: &[u8], rows: &[u8], code: usize, n: usize) {
    assert!(
        code > 0 && q.len() == code && rows.len() >= n * code,
        "binary kernel: bad shape"
    );
}

/// `out[r] = |q ⊕ row_r|` for the first `out.len()` rows of `rows`.
///
/// # Panics
/// If `q` is not `code` bytes or `rows` holds fewer than `out.len()` rows (a caller bug).
pub(crate) fn xor_counts(isa: PopIsa, q: &[u8], rows: &[u8], code: usize, out: &mut [u32]) {
    check_shape(q, rows, code, out.len());
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY (all three): the feature set was detected on this CPU (checked again here) and
        // `check_shape` bounds every row the kernel reads.
        PopIsa::Avx512 if avx512_available() => {
            return unsafe { avx512::xor_counts(q, rows, code, out) };
        }
        PopIsa::Avx2 if avx2_available() => return unsafe { avx2::xor_counts(q, rows, code, out) },
        PopIsa::Popcnt if popcnt_available() => {
            return unsafe { xor_counts_popcnt(q, rows, code, out) };
        }
        _ => {}
    }
    let _ = isa;
    xor_counts_words(q, rows, code, out);
}

/// `and[r] = |q ∧ row_r|`, `or[r] = |q ∨ row_r|` for the first `and.len()` rows of `rows`.
///
/// # Panics
/// If the shapes disagree (a caller bug), as [`xor_counts`].
pub(crate) fn and_or_counts(
    isa: PopIsa,
    q: &[u8],
    rows: &[u8],
    code: usize,
    and: &mut [u32],
    or: &mut [u32],
) {
    check_shape(q, rows, code, and.len());
    assert_eq!(and.len(), or.len(), "binary kernel: bad shape");
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: as in `xor_counts`.
        PopIsa::Avx512 if avx512_available() => {
            return unsafe { avx512::and_or_counts(q, rows, code, and, or) };
        }
        PopIsa::Avx2 if avx2_available() => {
            return unsafe { avx2::and_or_counts(q, rows, code, and, or) };
        }
        PopIsa::Popcnt if popcnt_available() => {
            return unsafe { and_or_counts_popcnt(q, rows, code, and, or) };
        }
        _ => {}
    }
    let _ = isa;
    and_or_counts_words(q, rows, code, and, or);
}

/// Little-endian u64 from up to 8 bytes, zero-padded: padding bits are 0 on both sides, so they
/// add nothing to any count.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Σ popcount(f(a_i, b_i)) over the 64-bit words of two equal-length byte strings.
#[inline(always)]
pub(super) fn fold_words(a: &[u8], b: &[u8], f: impl Fn(u64, u64) -> u64) -> u32 {
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    let mut acc = 0u32;
    for (x, y) in ac.zip(bc) {
        acc += f(word(x), word(y)).count_ones();
    }
    if !at.is_empty() {
        acc += f(word(at), word(bt)).count_ones();
    }
    acc
}

#[inline(always)]
fn xor_counts_words(q: &[u8], rows: &[u8], code: usize, out: &mut [u32]) {
    for (row, o) in rows.chunks_exact(code).zip(out.iter_mut()) {
        *o = fold_words(q, row, |a, b| a ^ b);
    }
}

#[inline(always)]
fn and_or_counts_words(q: &[u8], rows: &[u8], code: usize, and: &mut [u32], or: &mut [u32]) {
    for ((row, a), o) in rows
        .chunks_exact(code)
        .zip(and.iter_mut())
        .zip(or.iter_mut())
    {
        *a = fold_words(q, row, |x, y| x & y);
        *o = fold_words(q, row, |x, y| x | y);
    }
}

/// The word loop compiled with `POPCNT` (the inlined `count_ones` becomes one instruction).
///
/// Safety: the caller guarantees `POPCNT`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn xor_counts_popcnt(q: &[u8], rows: &[u8], code: usize, out: &mut [u32]) {
    xor_counts_words(q, rows, code, out);
}

/// Safety: the caller guarantees `POPCNT`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn and_or_counts_popcnt(
    q: &[u8],
    rows: &[u8],
    code: usize,
    and: &mut [u32],
    or: &mut [u32],
) {
    and_or_counts_words(q, rows, code, and, or);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;

    /// Rows per group: eight per-row accumulators reduce together (see [`reduce8`]).
    const GROUP: usize = 8;

    /// The mask loading the first `n` (< 64) bytes of a 64-byte step.
    #[inline(always)]
    fn tail_mask(n: usize) -> __mmask64 {
        (1u64 << n) - 1
    }

    /// Σ lanes of a u64 vector.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    fn hsum(v: __m512i) -> u32 {
        _mm512_reduce_add_epi64(v) as u32
    }

    /// The lane sums of eight u64 vectors, as eight u32 in order: a transpose-and-add tree that
    /// costs about what two single reductions do.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    fn reduce8(v: &[__m512i; GROUP]) -> __m256i {
        // Within each 128-bit chunk: (row 2i, row 2i+1) pair sums.
        let pair = |a: __m512i, b: __m512i| {
            _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
        };
        let (p01, p23, p45, p67) = (
            pair(v[0], v[1]),
            pair(v[2], v[3]),
            pair(v[4], v[5]),
            pair(v[6], v[7]),
        );
        // Across chunks: even chunks plus odd chunks, twice.
        let fold = |a: __m512i, b: __m512i| {
            _mm512_add_epi64(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
            )
        };
        let (s, t) = (fold(p01, p23), fold(p45, p67));
        _mm512_cvtepi64_epi32(fold(s, t))
    }

    /// Per-row `Σ popcount(op(q, row))` into `acc` (one accumulator per row of the group).
    ///
    /// Safety: AVX-512 F/BW/VPOPCNTDQ, and `acc.len()` rows of `code` bytes at `rp`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    unsafe fn accumulate<const N: usize>(
        qp: *const u8,
        rp: *const u8,
        code: usize,
        op: impl Fn(__m512i, __m512i) -> [__m512i; N],
        acc: &mut [[__m512i; N]],
    ) {
        let (full, rem) = (code / 64, code % 64);
        // SAFETY: row `j` of the group is `rp[j*code..(j+1)*code]`; full steps read 64 bytes
        // below `64 * full <= code`, the masked step only the first `rem` bytes after them.
        unsafe {
            for c in 0..full {
                let y = _mm512_loadu_si512(qp.add(c * 64) as *const __m512i);
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_si512(rp.add(j * code + c * 64) as *const __m512i);
                    for (a, v) in a.iter_mut().zip(op(x, y)) {
                        *a = _mm512_add_epi64(*a, _mm512_popcnt_epi64(v));
                    }
                }
            }
            if rem != 0 {
                let m = tail_mask(rem);
                let y = _mm512_maskz_loadu_epi8(m, qp.add(full * 64) as *const i8);
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_maskz_loadu_epi8(m, rp.add(j * code + full * 64) as *const i8);
                    for (a, v) in a.iter_mut().zip(op(x, y)) {
                        *a = _mm512_add_epi64(*a, _mm512_popcnt_epi64(v));
                    }
                }
            }
        }
    }

    /// The counts of `N` operations for every row: groups of eight rows reduced together, the
    /// last few one by one.
    ///
    /// Safety: the caller guarantees AVX-512 F/BW/VPOPCNTDQ, `q.len() == code` and
    /// `rows.len() >= outs[i].len() * code`, all `outs` the same length.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    unsafe fn counts<const N: usize>(
        q: &[u8],
        rows: &[u8],
        code: usize,
        op: impl Fn(__m512i, __m512i) -> [__m512i; N] + Copy,
        mut outs: [&mut [u32]; N],
    ) {
        let n = outs[0].len();
        let (qp, rp) = (q.as_ptr(), rows.as_ptr());
        let mut r = 0;
        // SAFETY: rows `r..r+GROUP` (then `r`) are below `n`, inside `rows` by the caller's
        // bound; stores go to `outs[i][r..r+GROUP]`, in bounds for the same reason.
        unsafe {
            while r + GROUP <= n {
                let mut acc = [[_mm512_setzero_si512(); N]; GROUP];
                accumulate(qp, rp.add(r * code), code, op, &mut acc);
                for (i, out) in outs.iter_mut().enumerate() {
                    let v: [__m512i; GROUP] = std::array::from_fn(|j| acc[j][i]);
                    _mm256_storeu_si256(out.as_mut_ptr().add(r) as *mut __m256i, reduce8(&v));
                }
                r += GROUP;
            }
            while r < n {
                let mut acc = [[_mm512_setzero_si512(); N]; 1];
                accumulate(qp, rp.add(r * code), code, op, &mut acc);
                for (i, out) in outs.iter_mut().enumerate() {
                    out[r] = hsum(acc[0][i]);
                }
                r += 1;
            }
        }
    }

    /// Safety: see [`counts`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    pub(super) unsafe fn xor_counts(q: &[u8], rows: &[u8], code: usize, out: &mut [u32]) {
        // SAFETY: forwarded from the caller.
        unsafe { counts(q, rows, code, |x, y| [_mm512_xor_si512(x, y)], [out]) }
    }

    /// Safety: see [`counts`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    pub(super) unsafe fn and_or_counts(
        q: &[u8],
        rows: &[u8],
        code: usize,
        and: &mut [u32],
        or: &mut [u32],
    ) {
        let op = |x, y| [_mm512_and_si512(x, y), _mm512_or_si512(x, y)];
        // SAFETY: forwarded from the caller.
        unsafe { counts(q, rows, code, op, [and, or]) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// Per-byte popcounts of `v`, summed into four u64 lanes (`VPSADBW` against zero).
    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    fn popcount_lanes(v: __m256i) -> __m256i {
        let lookup = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
            3, 3, 4,
        );
        let low = _mm256_set1_epi8(0x0f);
        let lo = _mm256_and_si256(v, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
        let bytes = _mm256_add_epi8(
            _mm256_shuffle_epi8(lookup, lo),
            _mm256_shuffle_epi8(lookup, hi),
        );
        _mm256_sad_epu8(bytes, _mm256_setzero_si256())
    }

    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    fn hsum(v: __m256i) -> u32 {
        let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as u32
    }

    /// Safety: the caller guarantees AVX2 + POPCNT and the shape of `super::xor_counts`.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn xor_counts(q: &[u8], rows: &[u8], code: usize, out: &mut [u32]) {
        let full = code / 32;
        let qp = q.as_ptr();
        for (row, o) in rows.chunks_exact(code).zip(out.iter_mut()) {
            let rp = row.as_ptr();
            let mut acc = _mm256_setzero_si256();
            for c in 0..full {
                // SAFETY: step `c < code / 32` reads bytes `32c..32c+32` of the query and the
                // row, both `code` bytes long.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_si256(rp.add(c * 32) as *const __m256i),
                        _mm256_loadu_si256(qp.add(c * 32) as *const __m256i),
                    )
                };
                acc = _mm256_add_epi64(acc, popcount_lanes(_mm256_xor_si256(x, y)));
            }
            // The last `code % 32` bytes by 64-bit words.
            *o = hsum(acc) + fold_words(&q[full * 32..], &row[full * 32..], |a, b| a ^ b);
        }
    }

    /// Safety: as [`xor_counts`], with `and.len() == or.len()` rows.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn and_or_counts(
        q: &[u8],
        rows: &[u8],
        code: usize,
        and: &mut [u32],
        or: &mut [u32],
    ) {
        let full = code / 32;
        let qp = q.as_ptr();
        let outs = and.iter_mut().zip(or.iter_mut());
        for (row, (a, o)) in rows.chunks_exact(code).zip(outs) {
            let rp = row.as_ptr();
            let mut acc_and = _mm256_setzero_si256();
            let mut acc_or = _mm256_setzero_si256();
            for c in 0..full {
                // SAFETY: as in `xor_counts`.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_si256(rp.add(c * 32) as *const __m256i),
                        _mm256_loadu_si256(qp.add(c * 32) as *const __m256i),
                    )
                };
                acc_and = _mm256_add_epi64(acc_and, popcount_lanes(_mm256_and_si256(x, y)));
                acc_or = _mm256_add_epi64(acc_or, popcount_lanes(_mm256_or_si256(x, y)));
            }
            let (qt, rt) = (&q[full * 32..], &row[full * 32..]);
            *a = hsum(acc_and) + fold_words(qt, rt, |x, y| x & y);
            *o = hsum(acc_or) + fold_words(qt, rt, |x, y| x | y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testutil::Rng;

    fn bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
        (0..n).map(|_| rng.below(256) as u8).collect()
    }

    fn naive(q: &[u8], x: &[u8], f: impl Fn(u8, u8) -> u8) -> u32 {
        q.iter().zip(x).map(|(&a, &b)| f(a, b).count_ones()).sum()
    }

    /// Every instruction set gives the naive byte-by-byte counts, for code sizes around each
    /// kernel's step (8, 32, 64 bytes) and a large one, on random and on all-ones data.
    #[test]
    fn every_isa_counts_like_the_naive_loop() {
        let mut rng = Rng::new(31);
        for code in [
            1, 3, 7, 8, 9, 24, 31, 32, 33, 63, 64, 65, 96, 127, 128, 130, 512, 4096,
        ] {
            let n = 13;
            let q = bytes(&mut rng, code);
            let mut rows = bytes(&mut rng, n * code);
            // One all-ones and one all-zero row: the counts' extremes.
            rows[..code].fill(0xff);
            rows[code..2 * code].fill(0);
            let want_xor: Vec<u32> = rows
                .chunks(code)
                .map(|x| naive(&q, x, |a, b| a ^ b))
                .collect();
            let want_and: Vec<u32> = rows
                .chunks(code)
                .map(|x| naive(&q, x, |a, b| a & b))
                .collect();
            let want_or: Vec<u32> = rows
                .chunks(code)
                .map(|x| naive(&q, x, |a, b| a | b))
                .collect();
            for isa in PopIsa::available() {
                let mut out = vec![0; n];
                xor_counts(isa, &q, &rows, code, &mut out);
                assert_eq!(out, want_xor, "{isa:?} code {code}");
                let (mut a, mut o) = (vec![0; n], vec![0; n]);
                and_or_counts(isa, &q, &rows, code, &mut a, &mut o);
                assert_eq!(a, want_and, "{isa:?} code {code}");
                assert_eq!(o, want_or, "{isa:?} code {code}");
                // A prefix of the rows, and rows followed by unrelated bytes, read only their own.
                let mut short = vec![0; 5];
                let mut padded = rows[..5 * code].to_vec();
                padded.extend_from_slice(&[0xAA; 70]);
                xor_counts(isa, &q, &padded, code, &mut short);
                assert_eq!(short, want_xor[..5], "{isa:?} code {code}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "bad shape")]
    fn short_rows_are_refused() {
        let mut out = [0u32; 3];
        xor_counts(PopIsa::detect(), &[0; 8], &[0; 16], 8, &mut out);
    }
}
