//! The ADC look-up table of one (query, list) and the scan of a list's codes against it.
//!
//! A code's distance is `dis0 + Σ_j T[j][code_j]`. For `nbits ≤ 8` the table is `m` arrays of
//! 256 floats indexed by the code byte, so the look-ups need no bounds checks; the common `m`
//! are compiled with `m` fixed so the sum unrolls. Each sum runs in four interleaved partial
//! sums (sub-quantizer `j` feeds partial `j mod 4`), added as `(p0 + p1) + (p2 + p3)`: short
//! dependency chains, and the same order on every path.

use crate::index::kernel::{Isa, use_avx2};

/// The per-query tables: `out[j·ksub + c] = Σ_d (scale·q[j·dsub + d]) · bt[(j·dsub + d)·ksub + c]`
/// for every sub-quantizer `j`, where `bt` holds each sub-quantizer's codebook transposed
/// (`dsub × ksub`). Summed `d = 0, 1, …` in order, with no fused multiply-add, so the AVX2 build
/// (the same code, compiled for 8 lanes) gives the same bits as the portable one. Written as
/// `dsub` passes of `a·x + y` over contiguous rows of `ksub`: no horizontal sums, which is what
/// makes short sub-vectors (dsub = 8 at m = 16, d = 128) cheap.
#[allow(clippy::too_many_arguments)]
pub(super) fn query_table(
    isa: Isa,
    bt: &[f32],
    q: &[f32],
    m: usize,
    dsub: usize,
    ksub: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(
        bt.len() >= m * dsub * ksub && q.len() >= m * dsub && out.len() >= m * ksub,
        "query_table: short input"
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2(isa) {
        // SAFETY: AVX2 is present (checked by `use_avx2`); the function is safe Rust otherwise.
        unsafe { query_table_avx2(bt, q, m, dsub, ksub, scale, out) };
        return;
    }
    let _ = isa;
    query_table_impl(bt, q, m, dsub, ksub, scale, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn query_table_avx2(
    bt: &[f32],
    q: &[f32],
    m: usize,
    dsub: usize,
    ksub: usize,
    scale: f32,
    out: &mut [f32],
) {
    query_table_impl(bt, q, m, dsub, ksub, scale, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn query_table_impl(
    bt: &[f32],
    q: &[f32],
    m: usize,
    dsub: usize,
    ksub: usize,
    scale: f32,
    out: &mut [f32],
) {
    if dsub == 0 {
        out[..m * ksub].fill(0.0);
        return;
    }
    for j in 0..m {
        let o = &mut out[j * ksub..(j + 1) * ksub];
        let b = &bt[j * dsub * ksub..(j + 1) * dsub * ksub];
        let qj = &q[j * dsub..(j + 1) * dsub];
        let q0 = scale * qj[0];
        for (o, &b) in o.iter_mut().zip(&b[..ksub]) {
            *o = q0 * b;
        }
        for (d, &qd) in qj.iter().enumerate().skip(1) {
            let qd = scale * qd;
            for (o, &b) in o.iter_mut().zip(&b[d * ksub..(d + 1) * ksub]) {
                *o += qd * b;
            }
        }
    }
}

/// `out[i] = a[i] + b[i]`: a list's L2 table from its precomputed part and the query's part.
pub(super) fn add(isa: Isa, a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2(isa) {
        // SAFETY: AVX2 is present (checked by `use_avx2`); the function is safe Rust otherwise.
        unsafe { add_avx2(a, b, out) };
        return;
    }
    let _ = isa;
    add_impl(a, b, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_avx2(a: &[f32], b: &[f32], out: &mut [f32]) {
    add_impl(a, b, out);
}

#[inline(always)]
fn add_impl(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Hints the CPU to start loading `v` (a no-op off x86-64): the next list's table and codes are
/// known a whole list scan before they are needed.
#[inline(always)]
pub(super) fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (p, bytes) = (v.as_ptr() as *const i8, std::mem::size_of_val(v));
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults, and the address lies inside a live slice.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(p.add(off));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// One table of `m` sub-quantizers.
pub(super) enum Lut {
    /// `nbits ≤ 8`: one byte per sub-quantizer.
    Narrow(Vec<[f32; 256]>),
    /// `nbits > 8`: two little-endian bytes per sub-quantizer, `m × ksub` floats.
    Wide { ksub: usize, t: Vec<f32> },
}

impl Lut {
    pub(super) fn new(m: usize, nbits: usize) -> Lut {
        if nbits <= 8 {
            Lut::Narrow(vec![[0.0; 256]; m])
        } else {
            let ksub = 1 << nbits;
            Lut::Wide {
                ksub,
                t: vec![0.0; m * ksub],
            }
        }
    }

    /// Calls `f(j, row)` with sub-quantizer `j`'s first `ksub` entries to fill, for every `j`.
    pub(super) fn fill(&mut self, ksub: usize, mut f: impl FnMut(usize, &mut [f32])) {
        match self {
            Lut::Narrow(t) => t
                .iter_mut()
                .enumerate()
                .for_each(|(j, r)| f(j, &mut r[..ksub])),
            Lut::Wide { ksub: w, t } => t
                .chunks_exact_mut(*w)
                .enumerate()
                .for_each(|(j, r)| f(j, &mut r[..ksub])),
        }
    }

    /// Fills every sub-quantizer's first `ksub` entries with `a + b` (both `m × ksub`).
    pub(super) fn fill_sum(&mut self, isa: Isa, ksub: usize, a: &[f32], b: &[f32]) {
        match self {
            Lut::Narrow(t) if ksub == 256 => add(isa, a, b, t.as_flattened_mut()),
            Lut::Wide { t, .. } => add(isa, a, b, t),
            Lut::Narrow(t) => {
                for (j, r) in t.iter_mut().enumerate() {
                    let s = j * ksub..(j + 1) * ksub;
                    add(isa, &a[s.clone()], &b[s], &mut r[..ksub]);
                }
            }
        }
    }

    /// `out[r] = dis0 + Σ_j T[j][code_j]` for each code `r` of `codes`. Every code must be
    /// below `ksub` (checked when an index is read).
    pub(super) fn scan(&self, codes: &[u8], dis0: f32, out: &mut [f32]) {
        match self {
            Lut::Narrow(t) => match t.len() {
                4 => scan_fixed::<4>(t, codes, dis0, out),
                8 => scan_fixed::<8>(t, codes, dis0, out),
                16 => scan_fixed::<16>(t, codes, dis0, out),
                32 => scan_fixed::<32>(t, codes, dis0, out),
                64 => scan_fixed::<64>(t, codes, dis0, out),
                _ => scan_narrow(t, codes, dis0, out),
            },
            Lut::Wide { ksub, t } => scan_wide(t, *ksub, codes, dis0, out),
        }
    }
}

#[inline(always)]
fn finish(dis0: f32, p: [f32; 4]) -> f32 {
    dis0 + ((p[0] + p[1]) + (p[2] + p[3]))
}

fn scan_fixed<const M: usize>(t: &[[f32; 256]], codes: &[u8], dis0: f32, out: &mut [f32]) {
    let Ok(t) = <&[[f32; 256]; M]>::try_from(t) else {
        return scan_narrow(t, codes, dis0, out);
    };
    let (rows, _) = codes.as_chunks::<M>();
    for (row, o) in rows.iter().zip(out.iter_mut()) {
        let mut p = [0.0f32; 4];
        for j in 0..M {
            p[j % 4] += t[j][row[j] as usize];
        }
        *o = finish(dis0, p);
    }
}

fn scan_narrow(t: &[[f32; 256]], codes: &[u8], dis0: f32, out: &mut [f32]) {
    let m = t.len();
    if m == 0 {
        out.fill(dis0);
        return;
    }
    for (row, o) in codes.chunks_exact(m).zip(out.iter_mut()) {
        let mut p = [0.0f32; 4];
        for (j, (tj, &c)) in t.iter().zip(row).enumerate() {
            p[j % 4] += tj[c as usize];
        }
        *o = finish(dis0, p);
    }
}

fn scan_wide(t: &[f32], ksub: usize, codes: &[u8], dis0: f32, out: &mut [f32]) {
    let m = t.len() / ksub.max(1);
    if m == 0 {
        out.fill(dis0);
        return;
    }
    for (row, o) in codes.chunks_exact(2 * m).zip(out.iter_mut()) {
        let mut p = [0.0f32; 4];
        for (j, (tj, c)) in t.chunks_exact(ksub).zip(row.chunks_exact(2)).enumerate() {
            let c = u16::from_le_bytes([c[0], c[1]]) as usize;
            // Codes are checked against ksub when an index is read; a bad one reads 0.
            p[j % 4] += tj.get(c).copied().unwrap_or(0.0);
        }
        *o = finish(dis0, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed-`m` scans, the generic one and the wide one all give the same bits as a plain
    /// sum in the documented order.
    #[test]
    fn every_scan_path_sums_in_the_same_order() {
        let mut seed = 5u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for m in [1usize, 3, 4, 8, 12, 16, 32, 64] {
            for nbits in [4usize, 8, 9] {
                let ksub = 1usize << nbits;
                let mut lut = Lut::new(m, nbits);
                let vals: Vec<f32> = (0..m * ksub)
                    .map(|_| (next() % 20000) as f32 / 997.0 - 10.0)
                    .collect();
                lut.fill(ksub, |j, r| {
                    r.copy_from_slice(&vals[j * ksub..(j + 1) * ksub])
                });
                let n = 7;
                let codes_idx: Vec<usize> = (0..n * m).map(|_| next() as usize % ksub).collect();
                let codes: Vec<u8> = if nbits <= 8 {
                    codes_idx.iter().map(|&c| c as u8).collect()
                } else {
                    codes_idx
                        .iter()
                        .flat_map(|&c| (c as u16).to_le_bytes())
                        .collect()
                };
                let mut out = vec![f32::NAN; n];
                lut.scan(&codes, 1.5, &mut out);
                for r in 0..n {
                    let mut p = [0.0f32; 4];
                    for j in 0..m {
                        p[j % 4] += vals[j * ksub + codes_idx[r * m + j]];
                    }
                    let want = finish(1.5, p);
                    assert_eq!(
                        out[r].to_bits(),
                        want.to_bits(),
                        "m {m} nbits {nbits} row {r}"
                    );
                }
                // The sum path fills the same tables on both instruction sets.
                let zeros = vec![0.0f32; m * ksub];
                let mut sum = Lut::new(m, nbits);
                sum.fill_sum(Isa::detect(), ksub, &vals, &zeros);
                let mut again = vec![f32::NAN; n];
                sum.scan(&codes, 1.5, &mut again);
                assert_eq!(again, out);
                if let Lut::Narrow(t) = &lut {
                    let mut generic = vec![f32::NAN; n];
                    scan_narrow(t, &codes, 1.5, &mut generic);
                    assert_eq!(generic, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// The AVX2 build of the table loops gives the portable build's bits, and the tables are
    /// the dot products they stand for.
    #[test]
    fn query_tables_and_sums_agree_across_instruction_sets() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (m, dsub, ksub) in [
            (1usize, 1usize, 2usize),
            (3, 5, 16),
            (4, 8, 256),
            (2, 3, 512),
        ] {
            let bt: Vec<f32> = (0..m * dsub * ksub).map(|_| next()).collect();
            let q: Vec<f32> = (0..m * dsub).map(|_| next()).collect();
            let mut a = vec![f32::NAN; m * ksub];
            let mut b = vec![f32::NAN; m * ksub];
            query_table(Isa::Portable, &bt, &q, m, dsub, ksub, -2.0, &mut a);
            query_table(Isa::detect(), &bt, &q, m, dsub, ksub, -2.0, &mut b);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "m {m} dsub {dsub} ksub {ksub}");
            for j in 0..m {
                for c in 0..ksub {
                    let want: f64 = (0..dsub)
                        .map(|d| q[j * dsub + d] as f64 * bt[(j * dsub + d) * ksub + c] as f64)
                        .sum();
                    assert!((a[j * ksub + c] as f64 + 2.0 * want).abs() < 1e-4);
                }
            }
            let mut s1 = vec![0.0f32; m * ksub];
            let mut s2 = vec![0.0f32; m * ksub];
            add(Isa::Portable, &a, &bt[..m * ksub], &mut s1);
            add(Isa::detect(), &a, &bt[..m * ksub], &mut s2);
            assert_eq!(bits(&s1), bits(&s2));
        }
    }
}
