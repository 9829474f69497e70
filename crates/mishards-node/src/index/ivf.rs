//! IVF_FLAT: k-means coarse centroids (trained in [`super::kmeans`]), each vector stored
//! uncompressed in its nearest centroid's list; a search scans only the `nprobe` lists nearest each
//! query.
//!
//! A batch of queries is searched list by list: the queries probing a list are scored against it
//! together, so a list is read from memory once per batch rather than once per query.

use std::fmt;
use std::io::{self, Read, Write};

use super::kernel::Isa;
use super::kmeans::{assign, bucket_starts, kmeans, sort_by_bucket};
use super::scan::{self, Heaps, Offsets, Rows, Scratch, l2_norms};
use super::topk::{Metric, RowBitmap, TopK};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};

/// Per-task heap entries (query block × k) a batched IVF search may hold.
const IVF_HEAP_BUDGET: usize = 1 << 18;
/// Below this much work (≈ multiply-adds plus floats streamed) the lists are scanned on the
/// caller's thread alone: waking a pool thread would cost more than it saves.
const SERIAL_WORK: usize = 1 << 18;

/// Most queries scored against one list in one pass.
const LIST_QUERY_GROUP: usize = 256;

/// Serialized form: magic, then a format version.
const MAGIC: [u8; 8] = *b"MSIVFFL\0";
const VERSION: u32 = 1;

/// An IVF_FLAT index over one segment.
///
/// Lists are stored back to back (CSR): list `l` holds entries `list_starts[l]..list_starts[l+1]`
/// of `offsets` (row offsets into the original segment, for the deleted bitmap), `ids`, `vectors`
/// (contiguous, `dim` floats each) and, for L2, the vectors' squared norms. Within a list,
/// entries keep segment row order.
#[derive(Clone, PartialEq)]
pub struct IvfFlat {
    dim: usize,
    metric: Metric,
    centroids: Vec<f32>,
    /// Squared norms of the centroids (L2 only; derived, not serialized).
    centroid_norms: Vec<f32>,
    list_starts: Vec<usize>,
    offsets: Vec<u32>,
    ids: Vec<i64>,
    vectors: Vec<f32>,
    /// Squared norms of `vectors` (L2 only; derived, not serialized).
    norms: Vec<f32>,
}

impl fmt::Debug for IvfFlat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvfFlat")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("nlist", &self.nlist())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl IvfFlat {
    /// Trains `nlist` centroids on `data` (`rows × dim` f32, row-major) with seeded k-means, then
    /// files every row under its nearest centroid (largest inner product for [`Metric::Ip`]).
    ///
    /// Deterministic for a given seed, whatever the thread count. `nlist` is clamped to
    /// `1..=rows` (more lists than rows would leave lists empty by construction); with no rows the
    /// index is empty (`nlist() == 0`) and every search returns padding. The segment has
    /// `min(data.len() / dim, ids.len())` rows.
    ///
    /// # Panics
    /// If the segment has more than `u32::MAX + 1` rows (row offsets are stored as u32).
    pub fn build(
        data: &[f32],
        ids: &[i64],
        dim: usize,
        nlist: usize,
        metric: Metric,
        seed: u64,
    ) -> IvfFlat {
        Self::build_with(Isa::detect(), data, ids, dim, nlist, metric, seed)
    }

    pub(crate) fn build_with(
        isa: Isa,
        data: &[f32],
        ids: &[i64],
        dim: usize,
        nlist: usize,
        metric: Metric,
        seed: u64,
    ) -> IvfFlat {
        let rows = data.len().checked_div(dim).unwrap_or(0).min(ids.len());
        assert!(
            rows <= u32::MAX as usize + 1,
            "IVF_FLAT: a segment is limited to 2^32 rows"
        );
        let nlist = if rows == 0 { 0 } else { nlist.clamp(1, rows) };
        let data = &data[..rows * dim];
        let centroids = if nlist == 0 {
            Vec::new()
        } else {
            kmeans(isa, data, dim, nlist, metric, seed)
        };
        Self::from_centroids(isa, dim, metric, centroids, data, &ids[..rows])
    }

    /// Files `data` under the given centroids.
    fn from_centroids(
        isa: Isa,
        dim: usize,
        metric: Metric,
        centroids: Vec<f32>,
        data: &[f32],
        ids: &[i64],
    ) -> IvfFlat {
        let nlist = centroids.len().checked_div(dim).unwrap_or(0);
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let lists = assign(isa, metric, dim, &centroids, &centroid_norms, data, None);
        let (list_starts, rows_in_list_order) = sort_by_bucket(&lists, nlist);
        let n = lists.len();
        let mut offsets = vec![0u32; n];
        let mut out_ids = vec![0i64; n];
        let mut vectors = vec![0.0f32; n * dim];
        for (at, &r) in rows_in_list_order.iter().enumerate() {
            // `build_with` bounds rows by u32::MAX + 1, so every offset fits.
            offsets[at] = r as u32;
            out_ids[at] = ids[r];
            vectors[at * dim..(at + 1) * dim].copy_from_slice(&data[r * dim..(r + 1) * dim]);
        }
        let norms = l2_norms(isa, metric, &vectors, n, dim);
        IvfFlat {
            dim,
            metric,
            centroids,
            centroid_norms,
            list_starts,
            offsets,
            ids: out_ids,
            vectors,
            norms,
        }
    }

    /// Searches the `nprobe` lists nearest each of the `queries.len() / dim` queries (`nprobe` is
    /// clamped to `1..=nlist`, so `nprobe >= nlist` is an exact search) and returns the top `k`
    /// per query. Rows in `deleted` (by original segment row offset) are skipped. Distances and
    /// order are exactly what [`super::search_flat`] reports for the same rows.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
    ) -> TopK {
        self.search_with(Isa::detect(), queries, k, nprobe, deleted)
    }

    pub(crate) fn search_with(
        &self,
        isa: Isa,
        queries: &[f32],
        k: usize,
        nprobe: usize,
        deleted: Option<&RowBitmap>,
    ) -> TopK {
        let (dim, metric, nlist) = (self.dim, self.metric, self.nlist());
        if dim == 0 {
            return TopK::empty(0, k, metric);
        }
        let nq = queries.len() / dim;
        let queries = &queries[..nq * dim];
        let mut out = TopK::empty(nq, k, metric);
        if nq == 0 || k == 0 || self.is_empty() {
            return out;
        }
        let nprobe = nprobe.clamp(1, nlist);
        let qnorms = l2_norms(isa, metric, queries, nq, dim);
        let list_ids: Vec<i64> = (0..nlist as i64).collect();
        let centroids = Rows {
            vecs: &self.centroids,
            norms: (metric == Metric::L2).then_some(&self.centroid_norms[..]),
            ids: &list_ids,
            offsets: Offsets::Base(0),
        };
        let qn = (metric == Metric::L2).then_some(&qnorms[..]);
        let probes = scan::knn(isa, metric, dim, queries, qn, centroids, nprobe, None);

        let threads = rayon::current_num_threads().max(1);
        // Large query blocks: a list is read from memory once per block, for all the block's
        // queries that probe it. The bound keeps per-task heaps (block × k entries) modest.
        let qb = (IVF_HEAP_BUDGET / k).clamp(1, nq);
        let mut q0 = 0;
        while q0 < nq {
            let q1 = (q0 + qb).min(nq);
            let m = q1 - q0;
            // Invert the probes: for each list, the block's queries that probe it.
            let probed = |q: usize| probes.row_ids(q).iter().filter(|&&l| l >= 0);
            let qstart = bucket_starts((q0..q1).flat_map(probed).map(|&l| l as usize), nlist);
            let mut fill = qstart.clone();
            let mut qs = vec![0usize; qstart[nlist]];
            for q in q0..q1 {
                for &l in probed(q) {
                    qs[fill[l as usize]] = q - q0;
                    fill[l as usize] += 1;
                }
            }
            // Lists with work, split into contiguous runs of similar cost for the threads.
            let cost = |l: usize| {
                (qstart[l + 1] - qstart[l]) * self.list_len(l) * dim + self.list_len(l) * dim
            };
            let work: Vec<usize> = (0..nlist)
                .filter(|&l| qstart[l + 1] > qstart[l] && self.list_len(l) > 0)
                .collect();
            let total: usize = work.iter().map(|&l| cost(l)).sum();
            // Too little work to be worth waking the pool: one run on this thread.
            let tasks = if total < SERIAL_WORK {
                1
            } else {
                work.len().min(4 * threads).max(1)
            };
            let mut runs: Vec<&[usize]> = Vec::with_capacity(tasks);
            let (mut start, mut acc) = (0, 0u128);
            for (i, &l) in work.iter().enumerate() {
                acc += cost(l) as u128;
                if acc * tasks as u128 >= total as u128 * (runs.len() as u128 + 1)
                    || i + 1 == work.len()
                {
                    runs.push(&work[start..=i]);
                    start = i + 1;
                }
            }
            let scan_run = |run: &&[usize]| {
                // No heap needs more slots than there are vectors.
                let mut heaps = Heaps::new(m, k.min(self.len()));
                let mut scratch = Scratch::default();
                let (mut qbuf, mut qnb) = (Vec::new(), Vec::new());
                for &l in run.iter() {
                    let (s, e) = (self.list_starts[l], self.list_starts[l + 1]);
                    let rows = Rows {
                        vecs: &self.vectors[s * dim..e * dim],
                        norms: (metric == Metric::L2).then(|| &self.norms[s..e]),
                        ids: &self.ids[s..e],
                        offsets: Offsets::List(&self.offsets[s..e]),
                    };
                    // A popular list is scored in groups of queries, so the dot buffer stays
                    // small; the list itself stays in cache between groups.
                    for members in qs[qstart[l]..qstart[l + 1]].chunks(LIST_QUERY_GROUP) {
                        qbuf.clear();
                        qnb.clear();
                        for &lq in members {
                            let q = q0 + lq;
                            qbuf.extend_from_slice(&queries[q * dim..(q + 1) * dim]);
                            if metric == Metric::L2 {
                                qnb.push(qnorms[q]);
                            }
                        }
                        let (qv, qn) = (&qbuf[..], &qnb[..]);
                        scan::scan(
                            isa,
                            metric,
                            dim,
                            qv,
                            qn,
                            members,
                            rows,
                            deleted,
                            &mut heaps,
                            &mut scratch,
                        );
                    }
                }
                heaps
            };
            let parts: Vec<Heaps> = scan::par_map(&runs, scan_run);
            let (ids, dists) = (
                &mut out.ids[q0 * k..q1 * k],
                &mut out.distances[q0 * k..q1 * k],
            );
            Heaps::combine(&parts, m, k, metric, ids, dists);
            q0 = q1;
        }
        out
    }

    /// The number of lists (after clamping at build time).
    pub fn nlist(&self) -> usize {
        self.list_starts.len().saturating_sub(1)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The number of vectors indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes the index holds in memory: vectors, ids, row offsets, norms and centroids.
    pub fn memory_bytes(&self) -> usize {
        (self.vectors.len() + self.norms.len() + self.centroids.len() + self.centroid_norms.len())
            * 4
            + self.ids.len() * 8
            + self.offsets.len() * 4
            + self.list_starts.len() * 8
    }

    /// The number of vectors in list `list` (0 past the end).
    pub fn list_len(&self, list: usize) -> usize {
        match (self.list_starts.get(list), self.list_starts.get(list + 1)) {
            (Some(s), Some(e)) => e - s,
            _ => 0,
        }
    }

    /// Serializes the index, little-endian:
    /// magic `MSIVFFL\0`, version u32, metric u32 (0 = L2, 1 = IP), dim u64, nlist u64, len u64,
    /// centroids (nlist × dim f32), list lengths (nlist × u64), row offsets (len × u32),
    /// ids (len × i64), vectors (len × dim f32), then a CRC-32 of everything before it.
    /// Norms are derived data and are recomputed on read.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        w.write_all(&metric.to_le_bytes())?;
        for v in [self.dim, self.nlist(), self.len()] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        write_le(&mut w, &self.centroids, |v| v.to_le_bytes())?;
        let lens: Vec<u64> = (0..self.nlist()).map(|l| self.list_len(l) as u64).collect();
        write_le(&mut w, &lens, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.offsets, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.ids, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.vectors, |v| v.to_le_bytes())?;
        w.finish().map(drop)
    }

    /// Reads what [`IvfFlat::write_to`] wrote. A wrong magic or version, inconsistent lengths, an
    /// out-of-range or repeated row offset, a checksum mismatch or a truncated stream is an
    /// `Err` (`InvalidData` or `UnexpectedEof`), never a panic; memory grows only as bytes arrive,
    /// so a corrupt length cannot trigger a huge allocation.
    pub fn read_from(r: &mut impl Read) -> io::Result<IvfFlat> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an IVF_FLAT index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported IVF_FLAT format version {version}"
            )));
        }
        let metric = match read_u32(&mut r)? {
            0 => Metric::L2,
            1 => Metric::Ip,
            m => return Err(invalid(format!("unknown metric code {m}"))),
        };
        let dim = read_len(&mut r)?;
        let nlist = read_len(&mut r)?;
        let len = read_len(&mut r)?;
        if (nlist == 0) != (len == 0) || nlist > len || (len > 0 && dim == 0) {
            return Err(invalid(format!(
                "inconsistent header: dim {dim}, nlist {nlist}, len {len}"
            )));
        }
        if len > u32::MAX as usize + 1 {
            return Err(invalid("more rows than u32 offsets can address"));
        }
        let too_big = || invalid("index size overflows");
        let centroids = read_le(
            &mut r,
            nlist.checked_mul(dim).ok_or_else(too_big)?,
            f32::from_le_bytes,
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
        let vectors = read_le(
            &mut r,
            len.checked_mul(dim).ok_or_else(too_big)?,
            f32::from_le_bytes,
        )?;
        r.finish()?;
        let isa = Isa::detect();
        let centroid_norms = l2_norms(isa, metric, &centroids, nlist, dim);
        let norms = l2_norms(isa, metric, &vectors, len, dim);
        Ok(IvfFlat {
            dim,
            metric,
            centroids,
            centroid_norms,
            list_starts,
            offsets,
            ids,
            vectors,
            norms,
        })
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_len(r: &mut impl Read) -> io::Result<usize> {
    usize::try_from(read_u64(r)?).map_err(|_| invalid("length does not fit in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::flat::search_flat_with;
    use crate::index::testutil::{Rng, check, clustered, exact as exact_distance, recall, seq_ids};

    /// Recall@10 of nprobe 16 (of 64 lists) against the exact search, on clustered data.
    fn recall_at_nprobe_16(metric: Metric) {
        let mut rng = Rng::new(42);
        let (rows, dim, nq) = (4000, 32, 50);
        // One generator call for data + queries so both come from the same clusters.
        let all = clustered(&mut rng, rows + nq, dim, 100, 0.3);
        let (data, queries) = all.split_at(rows * dim);
        let ids = seq_ids(rows);
        let index = IvfFlat::build(data, &ids, dim, 64, metric, 7);
        assert_eq!(
            (index.nlist(), index.len(), index.dim(), index.metric()),
            (64, rows, dim, metric)
        );
        let exact = search_flat_with(Isa::detect(), queries, data, &ids, dim, 10, metric, None);
        let got = index.search(queries, 10, 16, None);
        let r = recall(&got, &exact);
        assert!(r >= 0.95, "{metric:?}: recall@10 {r}");
        // Every returned hit carries its true distance.
        for (s, &id) in got.ids.iter().enumerate() {
            assert!(id != -1, "slot {s} padded");
            let (row, q) = (((id - 1) / 10) as usize, s / 10);
            let want = exact_distance(
                metric,
                &queries[q * dim..(q + 1) * dim],
                &data[row * dim..(row + 1) * dim],
            );
            assert!((got.distances[s] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn ivf_l2_recall_at_nprobe_16_on_clustered_data() {
        recall_at_nprobe_16(Metric::L2);
    }

    #[test]
    fn ivf_ip_recall_at_nprobe_16_on_clustered_data() {
        recall_at_nprobe_16(Metric::Ip);
    }

    #[test]
    fn ivf_full_probe_equals_flat_exactly() {
        let mut rng = Rng::new(1);
        let (rows, dim, nq) = (700, 13, 7);
        let data = clustered(&mut rng, rows, dim, 20, 0.5);
        let queries = rng.normals(nq * dim);
        let ids: Vec<i64> = (0..rows as i64).map(|r| (r * 37) % 701).collect();
        let mut deleted = RowBitmap::new(rows);
        for r in (0..rows).step_by(4) {
            deleted.set(r);
        }
        for metric in [Metric::L2, Metric::Ip] {
            let index = IvfFlat::build(&data, &ids, dim, 16, metric, 3);
            for k in [1, 10, 200, 800] {
                for del in [None, Some(&deleted)] {
                    let flat =
                        search_flat_with(Isa::detect(), &queries, &data, &ids, dim, k, metric, del);
                    assert_eq!(index.search(&queries, k, 16, del), flat, "{metric:?} k={k}");
                    // nprobe beyond nlist is clamped.
                    assert_eq!(
                        index.search(&queries, k, 1000, del),
                        flat,
                        "{metric:?} k={k}"
                    );
                }
            }
            // Every one of the few IVF results is a correct exact neighbour set in its lists.
            let partial = index.search(&queries, 5, 3, Some(&deleted));
            for &id in partial.ids.iter().filter(|&&id| id != -1) {
                let row = ids.iter().position(|&x| x == id).unwrap_or(usize::MAX);
                assert!(row < rows && !deleted.contains(row));
            }
        }
    }

    #[test]
    fn ivf_honours_deletions() {
        let mut rng = Rng::new(8);
        let (rows, dim) = (2000, 16);
        let data = clustered(&mut rng, rows, dim, 30, 0.3);
        let ids = seq_ids(rows);
        let queries = data[..5 * dim].to_vec();
        let index = IvfFlat::build(&data, &ids, dim, 32, Metric::L2, 11);
        // Delete each query's first 5 exact neighbours (including itself), then check the
        // search at nprobe 8 never returns them and agrees with the exact search on what is left.
        let before = search_flat_with(
            Isa::detect(),
            &queries,
            &data,
            &ids,
            dim,
            5,
            Metric::L2,
            None,
        );
        let mut deleted = RowBitmap::new(rows);
        for &id in &before.ids {
            deleted.set(((id - 1) / 10) as usize);
        }
        let got = index.search(&queries, 10, 8, Some(&deleted));
        for &id in &got.ids {
            assert!(
                id != -1 && !deleted.contains(((id - 1) / 10) as usize),
                "deleted id {id} returned"
            );
        }
        let exact = search_flat_with(
            Isa::detect(),
            &queries,
            &data,
            &ids,
            dim,
            10,
            Metric::L2,
            Some(&deleted),
        );
        assert!(recall(&got, &exact) >= 0.9);
        let full = index.search(&queries, 10, 32, Some(&deleted));
        check(
            &full,
            Metric::L2,
            &queries,
            &data,
            &ids,
            dim,
            10,
            Some(&deleted),
        );
    }

    #[test]
    fn ivf_ip_assigns_by_max_inner_product() {
        let mut rng = Rng::new(4);
        let (rows, dim) = (600, 8);
        let data = rng.normals(rows * dim);
        let index = IvfFlat::build(&data, &seq_ids(rows), dim, 12, Metric::Ip, 5);
        // Spherical centroids, and each vector sits in its max-inner-product list.
        for c in index.centroids.chunks(dim) {
            let n: f32 = c.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-4, "centroid norm² {n}");
        }
        for l in 0..index.nlist() {
            for e in index.list_starts[l]..index.list_starts[l + 1] {
                let x = &index.vectors[e * dim..(e + 1) * dim];
                let ip = |c: usize| {
                    crate::index::testutil::exact(
                        Metric::Ip,
                        x,
                        &index.centroids[c * dim..(c + 1) * dim],
                    )
                };
                let best = (0..index.nlist()).map(ip).fold(f64::MIN, f64::max);
                assert!(
                    ip(l) >= best - 1e-5,
                    "entry {e} in list {l}: {} < {best}",
                    ip(l)
                );
            }
        }
    }

    #[test]
    fn ivf_build_is_deterministic_and_clamps_nlist() {
        let mut rng = Rng::new(6);
        let (rows, dim) = (300, 5);
        let data = rng.normals(rows * dim);
        let ids = seq_ids(rows);
        let a = IvfFlat::build(&data, &ids, dim, 10, Metric::L2, 99);
        let b = IvfFlat::build(&data, &ids, dim, 10, Metric::L2, 99);
        assert_eq!(a, b);
        assert_eq!(a.len(), rows);
        assert_eq!((0..a.nlist()).map(|l| a.list_len(l)).sum::<usize>(), rows);
        let c = IvfFlat::build(&data, &ids, dim, 10, Metric::L2, 100);
        assert_ne!(a.centroids, c.centroids);
        // More lists than rows: clamped to the row count, still exact at full probe.
        let small = IvfFlat::build(&data[..7 * dim], &ids[..7], dim, 50, Metric::L2, 1);
        assert_eq!(small.nlist(), 7);
        let q = &data[..2 * dim];
        assert_eq!(
            small.search(q, 3, 7, None),
            search_flat_with(
                Isa::detect(),
                q,
                &data[..7 * dim],
                &ids[..7],
                dim,
                3,
                Metric::L2,
                None
            )
        );
        // No rows: an empty index that answers padding.
        let empty = IvfFlat::build(&[], &[], dim, 8, Metric::Ip, 1);
        assert_eq!((empty.nlist(), empty.len()), (0, 0));
        assert_eq!(empty.search(q, 4, 2, None), TopK::empty(2, 4, Metric::Ip));
        assert_eq!(a.search(q, 0, 2, None), TopK::empty(2, 0, Metric::L2));
    }

    #[test]
    fn ivf_write_read_round_trip() {
        let mut rng = Rng::new(10);
        let (rows, dim) = (400, 9);
        let data = clustered(&mut rng, rows, dim, 10, 0.5);
        let ids = seq_ids(rows);
        let queries = rng.normals(3 * dim);
        for metric in [Metric::L2, Metric::Ip] {
            let index = IvfFlat::build(&data, &ids, dim, 8, metric, 2);
            let mut bytes = Vec::new();
            index.write_to(&mut bytes).expect("write to a Vec");
            let back = IvfFlat::read_from(&mut bytes.as_slice()).expect("read back");
            assert_eq!(back, index);
            assert_eq!(
                back.search(&queries, 5, 3, None),
                index.search(&queries, 5, 3, None)
            );
        }
        let empty = IvfFlat::build(&[], &[], dim, 8, Metric::L2, 1);
        let mut bytes = Vec::new();
        empty.write_to(&mut bytes).expect("write");
        assert_eq!(
            IvfFlat::read_from(&mut bytes.as_slice()).expect("read"),
            empty
        );
    }

    /// The layout `write_to` documents, encoded by hand: indexes written by earlier versions still
    /// load, and new ones are byte for byte what they wrote.
    #[test]
    fn ivf_serialized_form_is_the_documented_layout() {
        let mut rng = Rng::new(14);
        let (rows, dim) = (40, 3);
        let data = rng.normals(rows * dim);
        for (metric, code) in [(Metric::L2, 0u32), (Metric::Ip, 1)] {
            let index = IvfFlat::build(&data, &seq_ids(rows), dim, 4, metric, 5);
            let mut want = b"MSIVFFL\0".to_vec();
            want.extend_from_slice(&1u32.to_le_bytes());
            want.extend_from_slice(&code.to_le_bytes());
            for v in [dim, index.nlist(), rows] {
                want.extend_from_slice(&(v as u64).to_le_bytes());
            }
            index
                .centroids
                .iter()
                .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
            (0..index.nlist())
                .for_each(|l| want.extend_from_slice(&(index.list_len(l) as u64).to_le_bytes()));
            index
                .offsets
                .iter()
                .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
            index
                .ids
                .iter()
                .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
            index
                .vectors
                .iter()
                .for_each(|v| want.extend_from_slice(&v.to_le_bytes()));
            let crc = crc32fast::hash(&want);
            want.extend_from_slice(&crc.to_le_bytes());
            let mut bytes = Vec::new();
            index.write_to(&mut bytes).expect("write");
            assert_eq!(bytes, want, "{metric:?}");
            assert_eq!(
                IvfFlat::read_from(&mut want.as_slice()).expect("read"),
                index
            );
        }
    }

    #[test]
    fn ivf_truncated_or_corrupt_input_is_err() {
        let mut rng = Rng::new(12);
        let (rows, dim) = (60, 4);
        let data = rng.normals(rows * dim);
        let index = IvfFlat::build(&data, &seq_ids(rows), dim, 4, Metric::L2, 2);
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).expect("write");
        // Every truncation fails.
        for cut in 0..bytes.len() {
            assert!(
                IvfFlat::read_from(&mut &bytes[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
        // Every single flipped byte fails (header checks, offset checks or the checksum).
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5A;
            assert!(
                IvfFlat::read_from(&mut bad.as_slice()).is_err(),
                "corruption at {at} accepted"
            );
        }
        // A header claiming an enormous index fails on the missing bytes, without allocating it.
        let mut huge = bytes[..16].to_vec();
        for v in [1u64 << 20, 1u64 << 30, 1u64 << 32] {
            huge.extend_from_slice(&v.to_le_bytes());
        }
        let err = IvfFlat::read_from(&mut huge.as_slice()).expect_err("huge header");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut overflow = bytes[..16].to_vec();
        for v in [u64::MAX, u64::MAX, u64::MAX] {
            overflow.extend_from_slice(&v.to_le_bytes());
        }
        assert!(IvfFlat::read_from(&mut overflow.as_slice()).is_err());
    }
}
