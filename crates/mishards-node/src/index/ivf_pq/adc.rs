//! The ADC look-up table of one (query, list) and the scan of a list's codes against it.
//!
//! A code's distance is `dis0 + Σ_j T[j][code_j]`. For `nbits ≤ 8` the table is `m` arrays of
//! 256 floats indexed by the code byte, so the look-ups need no bounds checks; the common `m`
//! are compiled with `m` fixed so the sum unrolls. Each sum runs in four interleaved partial
//! sums (sub-quantizer `j` feeds partial `j mod 4`), added as `(p0 + p1) + (p2 + p3)`: short
//! dependency chains, and the same order on every path.

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
                if let Lut::Narrow(t) = &lut {
                    let mut generic = vec![f32::NAN; n];
                    scan_narrow(t, &codes, 1.5, &mut generic);
                    assert_eq!(generic, out);
                }
            }
        }
    }
}
