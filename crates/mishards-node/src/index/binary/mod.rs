//! Binary vectors: exact search (Milvus BIN_FLAT, engine type 9) and BIN_IVF_FLAT (engine type
//! 10) over packed bit vectors, with Milvus 1.1's five binary metrics.
//!
//! A vector of `dim` bits (`dim % 8 == 0`) is `dim / 8` bytes, stored as the client sent them.
//! Bit `i` is bit `i % 8` (least significant first) of byte `i / 8`, as faiss's
//! `binary_to_real` reads it; only the k-means of [`BinIvfFlat`] cares (every metric below is a
//! sum over bit positions).
//!
//! # What each metric reports (Milvus 1.1)
//!
//! Read from Milvus's faiss fork, `core/src/index/thirdparty/faiss/` (`IndexBinaryFlat.cpp`,
//! `utils/BinaryDistance.cpp`, `utils/jaccard-inl.h`, `utils/substructure-inl.h`,
//! `utils/superstructure-inl.h`, `IndexBinaryIVF.cpp`) and knowhere's `IndexBinaryIDMAP.cpp` /
//! `IndexBinaryIVF.cpp`; the match metrics' definition is Milvus issue #1603. `q` is the query,
//! `x` a stored row, `|·|` a popcount.
//!
//! | metric (code) | reported distance | order |
//! |---|---|---|
//! | HAMMING (3) | `|q ⊕ x|` (an int32 in faiss, converted to f32 by knowhere) | ascending |
//! | JACCARD (4) | `1 − |q ∧ x| / |q ∨ x|` in f32; **`1.0` when `|q ∧ x| = 0`**, which covers the all-zero `0/0` case (`JaccardComputer*`: `if (accu_num == 0) return 1.0`) | ascending |
//! | TANIMOTO (5) | `−log2(1 − jaccard)`, applied to the Jaccard top-k after the search (`IndexBinaryFlat::search`: `D[i] = -log2(1 - D[i])`); `+∞` when jaccard is 1 (no common bit, or both all-zero) | ascending (ranked by Jaccard, the same order) |
//! | SUBSTRUCTURE (6) | `0.0` for a row that contains the query (`q ∧ x = q`, i.e. q ⊆ x); other rows are never returned | — |
//! | SUPERSTRUCTURE (7) | `0.0` for a row the query contains (`q ∧ x = x`, i.e. x ⊆ q); other rows are never returned | — |
//!
//! Rows with fewer than k hits: Milvus pads with id −1 and, in its heaps, `+∞` (Jaccard,
//! substructure, superstructure; `FLT_MAX` on faiss's other heap path), `0x7fffffff` as f32 for
//! Hamming, and for Tanimoto whatever `−log2(1 − pad)` gives (NaN). Here every padding slot is
//! id −1 with [`TopK`]'s L2 padding, `f32::MAX`, so results from any index and segment merge
//! alike (see [`BinaryMetric::ranking`]).
//!
//! Substructure/superstructure: Milvus (`binary_distance_knn_mc`) returns the *first* k matching
//! rows in segment row order, each at distance 0, padded as above. Here the k matches with the
//! smallest ids are returned, in id order: the same rows whenever ids grow with row order (auto
//! ids, ascending inserts), and what [`TopK::merge`] (ties by smaller id) needs to stay
//! consistent across segments.
//!
//! Ties (equal distances) rank by smaller id, as everywhere in this crate. Tanimoto is ranked by
//! its Jaccard distance, as Milvus does, then each row is put in (distance, id) order.
//!
//! Arithmetic, to the bit: Jaccard is `1.0 - (and as f32 / or as f32)` in f32 (Milvus computes
//! `1.0 - (float)num / (float)den` in double from the f32 quotient, which is exact and then
//! rounds once: the same value). Tanimoto is `−log2` of the f32 `1 − jaccard`, taken in f64 and
//! rounded to f32 (Milvus's `log2` may be the float or the double overload; they agree to the
//! last bit in nearly every case).
//!
//! # Index types
//! - [`search_binary_flat`]: exact, all five metrics.
//! - [`BinIvfFlat`]: HAMMING, JACCARD and TANIMOTO only; Milvus 1.1 refuses SUBSTRUCTURE and
//!   SUPERSTRUCTURE for IVF ("IVF not to support Substructure and Superstructure.").

mod flat;
mod ivf;
mod kernel;
mod probe;

#[cfg(test)]
mod tests;

use super::topk::{Metric, TopK};

pub use flat::search_binary_flat;
pub use ivf::{BinIvfError, BinIvfFlat, BinIvfParams, BinIvfSearch};

/// Milvus 1.1's binary metrics (metric types 3 to 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryMetric {
    Hamming,
    Jaccard,
    Tanimoto,
    Substructure,
    Superstructure,
}

impl BinaryMetric {
    /// The metric for a Milvus metric-type code (3 to 7); `None` for any other code (1 = L2 and
    /// 2 = IP are float metrics).
    pub fn from_code(code: i32) -> Option<BinaryMetric> {
        match code {
            3 => Some(BinaryMetric::Hamming),
            4 => Some(BinaryMetric::Jaccard),
            5 => Some(BinaryMetric::Tanimoto),
            6 => Some(BinaryMetric::Substructure),
            7 => Some(BinaryMetric::Superstructure),
            _ => None,
        }
    }

    /// The Milvus metric-type code.
    pub fn code(self) -> i32 {
        match self {
            BinaryMetric::Hamming => 3,
            BinaryMetric::Jaccard => 4,
            BinaryMetric::Tanimoto => 5,
            BinaryMetric::Substructure => 6,
            BinaryMetric::Superstructure => 7,
        }
    }

    /// How results of this metric rank in a [`TopK`]: always [`Metric::L2`].
    ///
    /// Every binary metric is a distance, smaller is better (Milvus sorts all of them ascending,
    /// only IP descends), and that is exactly what `Metric::L2` means to [`TopK`]: ascending
    /// order, ties by smaller id, padding id −1 at `f32::MAX`. So binary results merge across
    /// segments and nodes with the float machinery unchanged. The `TopK` then says `L2`; the
    /// collection's metric says which distance the numbers are.
    pub fn ranking(self) -> Metric {
        Metric::L2
    }

    /// Whether the metric matches rows (distance 0) rather than ranking them by distance.
    fn is_match(self) -> bool {
        matches!(
            self,
            BinaryMetric::Substructure | BinaryMetric::Superstructure
        )
    }
}

impl std::fmt::Display for BinaryMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BinaryMetric::Hamming => "HAMMING",
            BinaryMetric::Jaccard => "JACCARD",
            BinaryMetric::Tanimoto => "TANIMOTO",
            BinaryMetric::Substructure => "SUBSTRUCTURE",
            BinaryMetric::Superstructure => "SUPERSTRUCTURE",
        })
    }
}

/// Bytes per vector for a dimension in bits, or `None` when Milvus would refuse the dimension
/// (not a positive multiple of 8, or above its 32768 limit).
fn code_size(dim_bits: usize) -> Option<usize> {
    (dim_bits > 0 && dim_bits.is_multiple_of(8) && dim_bits <= MAX_DIM_BITS).then_some(dim_bits / 8)
}

/// Milvus 1.1's largest dimension (for binary collections, in bits).
const MAX_DIM_BITS: usize = 32768;

/// Turns Jaccard distances of finished rows into Tanimoto distances and restores (distance, id)
/// order within each row (the transform is monotone, so only equal results can move).
fn jaccard_to_tanimoto(top: &mut TopK) {
    let k = top.k;
    for q in 0..top.nq {
        let ids = &mut top.ids[q * k..(q + 1) * k];
        let dists = &mut top.distances[q * k..(q + 1) * k];
        let hits = ids.iter().take_while(|&&id| id != -1).count();
        for d in dists[..hits].iter_mut() {
            *d = tanimoto(*d);
        }
        let mut row: Vec<(f32, i64)> = dists[..hits]
            .iter()
            .copied()
            .zip(ids[..hits].iter().copied())
            .collect();
        row.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (slot, (d, id)) in row.into_iter().enumerate() {
            dists[slot] = d;
            ids[slot] = id;
        }
    }
}

/// Milvus's Tanimoto distance from its Jaccard distance: `−log2(1 − jaccard)`.
fn tanimoto(jaccard: f32) -> f32 {
    let similarity = 1.0f32 - jaccard;
    (-(similarity as f64).log2()) as f32
}

/// Milvus's Jaccard distance from the popcounts of `q ∧ x` and `q ∨ x`.
#[inline]
fn jaccard(and: u32, or: u32) -> f32 {
    if and == 0 {
        1.0
    } else {
        1.0 - and as f32 / or as f32
    }
}
