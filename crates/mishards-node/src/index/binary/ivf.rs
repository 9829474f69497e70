//! BIN_IVF_FLAT (Milvus index type 10): binary coarse centroids, each vector stored as-is in its
//! nearest centroid's list; a search scans the `nprobe` lists nearest each query.
//!
//! Training follows faiss's `IndexBinaryIVF::train`: the bits are expanded to floats (bit 1 →
//! +1.0, bit 0 → −1.0, faiss's `binary_to_real`), clustered by L2 k-means (10 iterations, at
//! most 256 training points per centroid: [`crate::index::kmeans`]), and each centroid is
//! binarized back (bit set where the centroid is > 0, faiss's `real_to_binary`).
//!
//! Assignment and probing use the collection's metric, as Milvus does: its coarse quantizer is an
//! `IndexBinaryFlat` built with the collection's metric, so HAMMING files and probes by Hamming
//! distance and JACCARD / TANIMOTO by Jaccard distance (which orders like Tanimoto). Ties go to
//! the smaller list number. (Milvus's fork clusters Jaccard collections with a float "Jaccard"
//! of its own instead of L2; that k-means is not reproduced — faiss upstream uses L2 for all.)
//!
//! Distances within the lists are exactly what [`super::search_binary_flat`] reports, so
//! `nprobe >= nlist` gives the BIN_FLAT result bit for bit. When deleted rows leave a query
//! short of `k` live hits after `nprobe` lists, the next-nearest lists are scanned too until it
//! has `k` or every list was seen.

use std::fmt;
use std::io::{self, Read, Write};

use mishards_common::rng::SplitMix64;
use rayon::prelude::*;

use super::flat::{Codes, Offsets, Scratch, knn, scan};
use super::kernel::PopIsa;
use super::probe::Probe;
use super::{BinaryMetric, code_size, jaccard_to_tanimoto};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};
use crate::index::kernel::Isa;
use crate::index::kmeans::{kmeans, sort_by_bucket};
use crate::index::scan::{Heaps, par_map};
use crate::index::topk::{Metric, RowBitmap, TopK};

/// Milvus 1.1's range for `nlist` and `nprobe`.
const NLIST_MAX: usize = 65536;
/// Training sample cap per centroid (faiss `max_points_per_centroid`).
const MAX_POINTS_PER_CENTROID: usize = 256;

/// Serialized form: magic, then a format version.
const MAGIC: [u8; 8] = *b"MSBIVFL\0";
const VERSION: u32 = 1;

/// What BIN_IVF_FLAT refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinIvfError {
    #[error("BIN_IVF_FLAT parameter nlist must be in [1, 65536], got {0}")]
    Nlist(usize),
    #[error("BIN_IVF_FLAT search parameter nprobe must be in [1, 65536], got {0}")]
    Nprobe(usize),
    /// Milvus 1.1's own words (faiss fork, `IndexBinaryIVF::train`).
    #[error("IVF not to support Substructure and Superstructure.")]
    Metric(BinaryMetric),
    #[error("binary vector dimension must be a multiple of 8 in [8, 32768], got {0}")]
    DimBits(usize),
    #[error("BIN_IVF_FLAT indexes at most {max} rows, got {rows}")]
    TooManyRows { rows: usize, max: usize },
}

/// Build parameters, as Milvus 1.1 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinIvfParams {
    /// Number of lists, in [1, 65536] (clamped to the row count at build time).
    pub nlist: usize,
    /// Seeds the training sample and the k-means.
    pub seed: u64,
}

impl BinIvfParams {
    /// Checks `nlist` against Milvus 1.1's range and the metric against what IVF supports
    /// (HAMMING, JACCARD, TANIMOTO).
    pub fn validate(&self, metric: BinaryMetric) -> Result<(), BinIvfError> {
        if metric.is_match() {
            return Err(BinIvfError::Metric(metric));
        }
        if !(1..=NLIST_MAX).contains(&self.nlist) {
            return Err(BinIvfError::Nlist(self.nlist));
        }
        Ok(())
    }
}

/// Search parameters, as Milvus 1.1 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinIvfSearch {
    /// Lists scanned per query, in [1, 65536] (clamped to `nlist`).
    pub nprobe: usize,
}

impl BinIvfSearch {
    /// Checks `nprobe` against Milvus 1.1's range.
    pub fn validate(&self) -> Result<(), BinIvfError> {
        if !(1..=NLIST_MAX).contains(&self.nprobe) {
            return Err(BinIvfError::Nprobe(self.nprobe));
        }
        Ok(())
    }
}

/// A BIN_IVF_FLAT index over one segment.
///
/// Lists are stored back to back (CSR): list `l` holds entries `list_starts[l]..list_starts[l+1]`
/// of `offsets` (row offsets into the original segment, for the deleted bitmap), `ids` and
/// `codes` (`dim_bits / 8` bytes each). Within a list, entries keep segment row order.
#[derive(Clone, PartialEq)]
pub struct BinIvfFlat {
    dim_bits: usize,
    metric: BinaryMetric,
    /// `nlist` binary centroids, `dim_bits / 8` bytes each.
    pub(super) centroids: Vec<u8>,
    pub(super) list_starts: Vec<usize>,
    offsets: Vec<u32>,
    ids: Vec<i64>,
    pub(super) codes: Vec<u8>,
}

impl fmt::Debug for BinIvfFlat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinIvfFlat")
            .field("dim_bits", &self.dim_bits)
            .field("metric", &self.metric)
            .field("nlist", &self.nlist())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl BinIvfFlat {
    /// Trains `nlist` binary centroids on `data` (packed, `dim_bits / 8` bytes per row) and files
    /// every row under its nearest centroid by `metric`.
    ///
    /// Deterministic for a seed, whatever the thread count. `nlist` is clamped to `1..=rows`; with
    /// no rows the index is empty and every search returns padding. The segment has
    /// `min(data.len() / code, ids.len())` rows.
    pub fn build(
        data: &[u8],
        ids: &[i64],
        dim_bits: usize,
        metric: BinaryMetric,
        params: &BinIvfParams,
    ) -> Result<BinIvfFlat, BinIvfError> {
        params.validate(metric)?;
        let code = code_size(dim_bits).ok_or(BinIvfError::DimBits(dim_bits))?;
        let rows = (data.len() / code).min(ids.len());
        let max = u32::MAX as usize + 1;
        if rows > max {
            return Err(BinIvfError::TooManyRows { rows, max });
        }
        let nlist = if rows == 0 {
            0
        } else {
            params.nlist.clamp(1, rows)
        };
        let data = &data[..rows * code];
        let centroids = if nlist == 0 {
            Vec::new()
        } else {
            train(data, dim_bits, nlist, params.seed)
        };
        let isa = PopIsa::detect();
        let list_ids: Vec<i64> = (0..nlist as i64).collect();
        let quantizer = Codes {
            codes: &centroids,
            ids: &list_ids,
            offsets: Offsets::Base(0),
        };
        let nearest = knn(isa, metric, code, data, quantizer, 1, None);
        let lists: Vec<u32> = nearest
            .ids
            .iter()
            .map(|&l| u32::try_from(l).unwrap_or(0))
            .collect();
        let (list_starts, order) = sort_by_bucket(&lists, nlist);
        let mut offsets = Vec::with_capacity(rows);
        let mut out_ids = Vec::with_capacity(rows);
        let mut codes = Vec::with_capacity(rows * code);
        for &r in &order {
            // `rows <= u32::MAX + 1`, so every offset fits.
            offsets.push(r as u32);
            out_ids.push(ids[r]);
            codes.extend_from_slice(&data[r * code..(r + 1) * code]);
        }
        Ok(BinIvfFlat {
            dim_bits,
            metric,
            centroids,
            list_starts,
            offsets,
            ids: out_ids,
            codes,
        })
    }

    /// The `k` best rows for each of the `queries.len() / code` queries, scanning the `nprobe`
    /// lists nearest each query (clamped to `nlist`: `nprobe >= nlist` is exact), more when
    /// deleted rows leave fewer than `k` live hits. Rows in `deleted` (by original row offset)
    /// are skipped. Distances, order and padding as [`super::search_binary_flat`].
    pub fn search(
        &self,
        queries: &[u8],
        k: usize,
        search: &BinIvfSearch,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, BinIvfError> {
        search.validate()?;
        Ok(self.search_with(PopIsa::detect(), queries, k, search.nprobe, deleted))
    }

    pub(super) fn search_with(
        &self,
        isa: PopIsa,
        queries: &[u8],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
    ) -> TopK {
        let code = self.code();
        let nq = queries.len() / code;
        let queries = &queries[..nq * code];
        let mut out = TopK::empty(nq, k, self.metric.ranking());
        if nq == 0 || k == 0 || self.is_empty() {
            return out;
        }
        let nprobe = nprobe.clamp(1, self.nlist());
        // Query by query, each query's lists one after the other, as faiss's IndexBinaryIVF
        // does: one heap per query whose threshold tightens from list to list. Scoring the
        // queries of a batch list by list (so a list is read once per group of queries) was
        // 1.2–1.9× slower at every nprobe on 200,000 × 512 bits, nq 1,000: the lists are small
        // and stay in cache, while splitting a query's lists over tasks cost a heap per task and
        // a merge per query.
        self.query_major(isa, queries, k, nprobe, deleted, &mut out);
        if self.metric == BinaryMetric::Tanimoto {
            jaccard_to_tanimoto(&mut out);
        }
        out
    }

    /// The rows of list `l`.
    fn list(&self, l: usize) -> Codes<'_> {
        let (s, e) = (self.list_starts[l], self.list_starts[l + 1]);
        let code = self.code();
        Codes {
            codes: &self.codes[s * code..e * code],
            ids: &self.ids[s..e],
            offsets: Offsets::List(&self.offsets[s..e]),
        }
    }

    /// Query by query: each query's `nprobe` nearest lists, then (with deletes) more while its
    /// heap is short of `k`. Fills `out` (padded, Jaccard for Tanimoto).
    fn query_major(
        &self,
        isa: PopIsa,
        queries: &[u8],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
        out: &mut TopK,
    ) {
        let (code, nlist) = (self.code(), self.nlist());
        let runs = query_runs(queries.len() / code);
        let search_run = |&(q0, q1): &(usize, usize)| {
            let mut heaps = Heaps::new(q1 - q0, k.min(self.len()));
            let mut scratch = Scratch::default();
            let mut probe = Probe::default();
            let widen = widens(deleted);
            for (i, q) in queries[q0 * code..q1 * code].chunks_exact(code).enumerate() {
                probe.rank(isa, self.metric, &self.centroids, code, q, nprobe);
                let mut next = 0;
                while next < nlist
                    && (next < nprobe || (widen && heaps.threshold(i) == f32::INFINITY))
                {
                    if next == nprobe {
                        probe.rank_rest();
                    }
                    let l = probe.order[next] as usize;
                    next += 1;
                    let rows = self.list(l);
                    let (m, h) = (self.metric, &mut heaps);
                    scan(isa, m, code, q, &[i], rows, deleted, h, &mut scratch);
                }
            }
            heaps
        };
        let parts: Vec<Heaps> = par_map(&runs, search_run);
        for (&(q0, q1), part) in runs.iter().zip(&parts) {
            let (ids, dists) = (
                &mut out.ids[q0 * k..q1 * k],
                &mut out.distances[q0 * k..q1 * k],
            );
            Heaps::combine(
                std::slice::from_ref(part),
                q1 - q0,
                k,
                out.metric,
                ids,
                dists,
            );
        }
    }

    fn code(&self) -> usize {
        self.dim_bits / 8
    }

    /// The number of lists (after clamping at build time).
    pub fn nlist(&self) -> usize {
        self.list_starts.len().saturating_sub(1)
    }

    pub fn dim_bits(&self) -> usize {
        self.dim_bits
    }

    pub fn metric(&self) -> BinaryMetric {
        self.metric
    }

    /// The number of vectors indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of vectors in list `list` (0 past the end).
    pub fn list_len(&self, list: usize) -> usize {
        match (self.list_starts.get(list), self.list_starts.get(list + 1)) {
            (Some(s), Some(e)) => e - s,
            _ => 0,
        }
    }

    /// Bytes this index holds in memory (for the segment cache's budget).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.centroids.capacity()
            + self.list_starts.capacity() * std::mem::size_of::<usize>()
            + self.offsets.capacity() * 4
            + self.ids.capacity() * 8
            + self.codes.capacity()
    }

    /// Serializes the index, little-endian:
    /// magic `MSBIVFL\0`, version u32, metric u32 (Milvus code: 3, 4 or 5), dim_bits u64,
    /// nlist u64, len u64, centroids (nlist × dim_bits/8 bytes), list lengths (nlist × u64),
    /// row offsets (len × u32), ids (len × i64), codes (len × dim_bits/8 bytes), then a CRC-32 of
    /// everything before it.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(self.metric.code() as u32).to_le_bytes())?;
        for v in [self.dim_bits, self.nlist(), self.len()] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        w.write_all(&self.centroids)?;
        let lens: Vec<u64> = (0..self.nlist()).map(|l| self.list_len(l) as u64).collect();
        write_le(&mut w, &lens, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.offsets, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.ids, |v| v.to_le_bytes())?;
        w.write_all(&self.codes)?;
        w.finish().map(drop)
    }

    /// Reads what [`BinIvfFlat::write_to`] wrote. A wrong magic or version, an unknown or
    /// unsupported metric, a dimension Milvus refuses, inconsistent lengths, an out-of-range or
    /// repeated row offset, a checksum mismatch or a truncated stream is an `Err` (`InvalidData`
    /// or `UnexpectedEof`), never a panic; memory grows only as bytes arrive.
    pub fn read_from(r: &mut impl Read) -> io::Result<BinIvfFlat> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not a BIN_IVF_FLAT index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported BIN_IVF_FLAT format version {version}"
            )));
        }
        let code = read_u32(&mut r)?;
        let metric = i32::try_from(code)
            .ok()
            .and_then(BinaryMetric::from_code)
            .filter(|m| !m.is_match())
            .ok_or_else(|| invalid(format!("metric code {code} is not a BIN_IVF_FLAT metric")))?;
        let dim_bits = read_len(&mut r)?;
        let code = code_size(dim_bits)
            .ok_or_else(|| invalid(format!("invalid binary dimension {dim_bits}")))?;
        let nlist = read_len(&mut r)?;
        let len = read_len(&mut r)?;
        if (nlist == 0) != (len == 0) || nlist > len {
            return Err(invalid(format!(
                "inconsistent header: nlist {nlist}, len {len}"
            )));
        }
        if len > u32::MAX as usize + 1 {
            return Err(invalid("more rows than u32 offsets can address"));
        }
        let too_big = || invalid("index size overflows");
        let centroids = read_le(
            &mut r,
            nlist.checked_mul(code).ok_or_else(too_big)?,
            |b: [u8; 1]| b[0],
        )?;
        let lens = read_le(&mut r, nlist, u64::from_le_bytes)?;
        let mut list_starts = Vec::with_capacity(nlist + 1);
        list_starts.push(0usize);
        let mut total = 0usize;
        for &l in &lens {
            total = usize::try_from(l)
                .ok()
                .and_then(|l| total.checked_add(l))
                .ok_or_else(too_big)?;
            list_starts.push(total);
        }
        if total != len {
            return Err(invalid(format!(
                "list lengths add up to {total}, header says {len}"
            )));
        }
        let offsets = read_le(&mut r, len, u32::from_le_bytes)?;
        let mut seen = RowBitmap::new(len);
        for &o in &offsets {
            let o = o as usize;
            if o >= len || seen.contains(o) {
                return Err(invalid(format!("row offset {o} out of range or repeated")));
            }
            seen.set(o);
        }
        let ids = read_le(&mut r, len, i64::from_le_bytes)?;
        let codes = read_le(
            &mut r,
            len.checked_mul(code).ok_or_else(too_big)?,
            |b: [u8; 1]| b[0],
        )?;
        r.finish()?;
        Ok(BinIvfFlat {
            dim_bits,
            metric,
            centroids,
            list_starts,
            offsets,
            ids,
            codes,
        })
    }
}

/// Whether a search may scan past its `nprobe` lists: only to make up for deleted rows (without
/// deletes a query sees exactly its `nprobe` lists, as in faiss and Milvus, even when they hold
/// fewer than `k` rows).
fn widens(deleted: Option<&RowBitmap>) -> bool {
    deleted.is_some_and(|d| !d.is_empty())
}

/// Contiguous runs of queries, one parallel task each (a single query runs on the caller).
fn query_runs(nq: usize) -> Vec<(usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let per_task = nq.div_ceil(4 * threads).max(1);
    (0..nq)
        .step_by(per_task)
        .map(|q0| (q0, (q0 + per_task).min(nq)))
        .collect()
}

/// Binary centroids for `data` as faiss's `IndexBinaryIVF::train` makes them (see the module doc).
fn train(data: &[u8], dim_bits: usize, nlist: usize, seed: u64) -> Vec<u8> {
    let code = dim_bits / 8;
    let n = data.len() / code;
    let mut rng = SplitMix64::new(seed);
    // Sample before expanding to floats, so only the training points are ever 32× their size.
    let cap = nlist.saturating_mul(MAX_POINTS_PER_CENTROID);
    let pick: Vec<usize> = if n > cap {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..cap {
            let j = i + rng.below((n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(cap);
        idx.sort_unstable();
        idx
    } else {
        (0..n).collect()
    };
    let mut x = vec![0.0f32; pick.len() * dim_bits];
    x.par_chunks_mut(dim_bits)
        .zip(pick.par_iter())
        .for_each(|(out, &r)| {
            let row = &data[r * code..(r + 1) * code];
            for (i, v) in out.iter_mut().enumerate() {
                *v = if (row[i >> 3] >> (i & 7)) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                };
            }
        });
    let centroids = kmeans(
        Isa::detect(),
        &x,
        dim_bits,
        nlist,
        Metric::L2,
        rng.next_u64(),
    );
    let mut out = vec![0u8; nlist * code];
    for (c, bits) in centroids
        .chunks_exact(dim_bits)
        .zip(out.chunks_exact_mut(code))
    {
        for (i, &v) in c.iter().enumerate() {
            if v > 0.0 {
                bits[i >> 3] |= 1 << (i & 7);
            }
        }
    }
    out
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_len(r: &mut impl Read) -> io::Result<usize> {
    usize::try_from(read_u64(r)?).map_err(|_| invalid("length does not fit in memory"))
}
