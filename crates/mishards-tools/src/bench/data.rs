//! The data a bench runs on: seeded clustered Gaussian vectors (ids = row numbers), query sets from the
//! same distribution, and their exact top-k (the ground truth searches are measured against).

use rayon::prelude::*;

use mishards_common::rng::SplitMix64;
use mishards_node::index::{Metric, TopK, search_flat};
use mishards_proto::limits::MAX_DIMENSION;

use super::BenchError;

/// The seed of one independent stream (`stream`, `index`) under `seed`: every row and every query has
/// its own, so any row can be generated alone, in any order, on any thread.
fn stream_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let a = SplitMix64::new(seed).next_u64();
    let b = SplitMix64::new(a ^ stream).next_u64();
    SplitMix64::new(b ^ index).next_u64()
}

const STREAM_CENTERS: u64 = 1;
const STREAM_ROWS: u64 = 2;
const STREAM_QUERIES: u64 = 3;

/// The shape of a clustered Gaussian data set: `clusters` centres uniform in [0, 1)^dim, each point a
/// centre picked uniformly plus N(0, sigma²) noise per coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataSpec {
    pub rows: usize,
    pub dim: usize,
    pub clusters: usize,
    pub sigma: f64,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            rows: 10_000,
            dim: 128,
            clusters: 100,
            sigma: 0.1,
        }
    }
}

impl DataSpec {
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.rows == 0 {
            return Err(BenchError::Invalid("rows must be at least 1".into()));
        }
        if !(1..=MAX_DIMENSION as usize).contains(&self.dim) {
            return Err(BenchError::Invalid(format!(
                "dimension {} is out of range: Milvus takes 1 to {MAX_DIMENSION}",
                self.dim
            )));
        }
        if self.clusters == 0 {
            return Err(BenchError::Invalid("clusters must be at least 1".into()));
        }
        if !self.sigma.is_finite() || self.sigma < 0.0 {
            return Err(BenchError::Invalid(format!(
                "sigma {} must be a finite number ≥ 0",
                self.sigma
            )));
        }
        if self
            .rows
            .checked_mul(self.dim)
            .is_none_or(|n| n > (isize::MAX as usize) / 4)
        {
            return Err(BenchError::Invalid(format!(
                "{} rows × {} dimensions do not fit in memory",
                self.rows, self.dim
            )));
        }
        Ok(())
    }
}

/// A generated data set: row `i` has id `i`. The same spec and seed give the same vectors, bit for bit,
/// whatever the thread count.
#[derive(Clone, Debug)]
pub struct DataSet {
    spec: DataSpec,
    seed: u64,
    centers: Vec<f32>,
    vectors: Vec<f32>,
    ids: Vec<i64>,
}

impl DataSet {
    /// Generates `spec.rows` rows.
    pub fn generate(spec: DataSpec, seed: u64) -> Result<DataSet, BenchError> {
        spec.validate()?;
        let mut rng = SplitMix64::new(stream_seed(seed, STREAM_CENTERS, 0));
        let centers = (0..spec.clusters * spec.dim)
            .map(|_| rng.next_f64() as f32)
            .collect();
        let mut set = DataSet {
            spec: DataSpec { rows: 0, ..spec },
            seed,
            centers,
            vectors: Vec::new(),
            ids: Vec::new(),
        };
        set.extend(spec.rows);
        Ok(set)
    }

    /// Appends `n` more rows of the same distribution, ids continuing from [`DataSet::len`]: the
    /// first `m` rows of any data set are those of a data set of `m` rows with the same seed.
    pub fn extend(&mut self, n: usize) {
        let (dim, start) = (self.spec.dim, self.ids.len());
        self.vectors.resize((start + n) * dim, 0.0);
        let (seed, spec, centers) = (self.seed, self.spec, &self.centers);
        self.vectors[start * dim..]
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, row)| {
                let stream = stream_seed(seed, STREAM_ROWS, (start + i) as u64);
                fill_point(row, centers, &spec, stream)
            });
        self.ids.extend((start..start + n).map(|i| i as i64));
        self.spec.rows = self.ids.len();
    }

    /// `count` query vectors from the same clusters, independent of the rows (their own stream under
    /// `seed`).
    pub fn queries(&self, count: usize, seed: u64) -> QuerySet {
        let dim = self.spec.dim;
        let mut vectors = vec![0.0; count * dim];
        vectors
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(j, row)| {
                let stream = stream_seed(seed, STREAM_QUERIES, j as u64);
                fill_point(row, &self.centers, &self.spec, stream)
            });
        QuerySet { dim, vectors }
    }

    /// The exact top-`k` of every query over all rows.
    pub fn exact(&self, queries: &QuerySet, k: usize, metric: Metric) -> TopK {
        exact_top_k(&self.vectors, &self.ids, self.spec.dim, queries, k, metric)
    }

    /// The exact top-`k` over only the rows with the given ids (say, the inserts that were
    /// acknowledged); ids not in the data set are ignored.
    pub fn exact_over(&self, ids: &[i64], queries: &QuerySet, k: usize, metric: Metric) -> TopK {
        let dim = self.spec.dim;
        let kept: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| (0..self.ids.len() as i64).contains(id))
            .collect();
        let mut vectors = Vec::with_capacity(kept.len() * dim);
        for id in &kept {
            vectors.extend_from_slice(self.row(*id as usize));
        }
        exact_top_k(&vectors, &kept, dim, queries, k, metric)
    }

    pub fn spec(&self) -> DataSpec {
        self.spec
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// All rows, row-major.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Row `i`'s id is `ids()[i] == i`.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Row `i` (panics past the end, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.spec.dim..(i + 1) * self.spec.dim]
    }

    /// The cluster centres, row-major.
    pub fn centers(&self) -> &[f32] {
        &self.centers
    }
}

/// One point: a centre chosen by the stream, plus Gaussian noise.
fn fill_point(out: &mut [f32], centers: &[f32], spec: &DataSpec, stream: u64) {
    let mut rng = SplitMix64::new(stream);
    let c = rng.below(spec.clusters as u64) as usize;
    let center = &centers[c * spec.dim..(c + 1) * spec.dim];
    let sigma = spec.sigma;
    for (pair, base) in out.chunks_mut(2).zip(center.chunks(2)) {
        let (a, b) = rng.normal_pair();
        pair[0] = (base[0] as f64 + sigma * a) as f32;
        if pair.len() > 1 {
            pair[1] = (base[1] as f64 + sigma * b) as f32;
        }
    }
}

/// Query vectors, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySet {
    pub dim: usize,
    pub vectors: Vec<f32>,
}

impl QuerySet {
    pub fn len(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// Exact top-`k` of `queries` over `vectors` (`ids[r]` is row `r`'s id), by the data node's FLAT
/// kernel: L2 is the squared distance, IP the inner product, equal distances rank by smaller id.
pub fn exact_top_k(
    vectors: &[f32],
    ids: &[i64],
    dim: usize,
    queries: &QuerySet,
    k: usize,
    metric: Metric,
) -> TopK {
    search_flat(&queries.vectors, vectors, ids, dim, k, metric, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rows: usize, dim: usize, clusters: usize) -> DataSpec {
        DataSpec {
            rows,
            dim,
            clusters,
            sigma: 0.1,
        }
    }

    #[test]
    fn a_data_set_is_determined_by_its_seed() {
        let a = DataSet::generate(spec(500, 12, 5), 42).unwrap();
        let b = DataSet::generate(spec(500, 12, 5), 42).unwrap();
        let c = DataSet::generate(spec(500, 12, 5), 43).unwrap();
        assert_eq!(a.vectors(), b.vectors());
        assert_ne!(a.vectors(), c.vectors());
        assert_eq!(a.ids(), (0..500).collect::<Vec<i64>>().as_slice());
        assert_eq!(a.len(), 500);
        assert_eq!(a.spec().rows, 500);
        // Odd dimensions fill every coordinate.
        let odd = DataSet::generate(spec(10, 3, 2), 1).unwrap();
        assert!(odd.vectors().iter().all(|v| *v != 0.0));
        // Queries: seeded, distinct from the rows, and from the same clusters.
        let q = a.queries(20, 42);
        assert_eq!(q, b.queries(20, 42));
        assert_ne!(q, a.queries(20, 43));
        assert_eq!(q.len(), 20);
        assert!((0..20).all(|i| a.row(i) != q.row(i)));
    }

    #[test]
    fn extending_a_data_set_gives_the_rows_of_a_larger_one() {
        let mut small = DataSet::generate(spec(300, 8, 4), 9).unwrap();
        small.extend(200);
        let large = DataSet::generate(spec(500, 8, 4), 9).unwrap();
        assert_eq!(small.vectors(), large.vectors());
        assert_eq!(small.ids(), large.ids());
        assert_eq!(small.spec(), large.spec());
    }

    #[test]
    fn points_sit_around_their_centres() {
        let set = DataSet::generate(spec(2_000, 16, 4), 5).unwrap();
        let dim = set.dim();
        assert_eq!(set.centers().len(), 4 * dim);
        assert!(set.centers().iter().all(|c| (0.0..1.0).contains(c)));
        // With sigma 0.1 over 16 dimensions a point is about 0.4 from its centre; centres are about
        // 1.6 apart. Every point is closer than 1.0 to some centre.
        for i in 0..set.len() {
            let nearest = set
                .centers()
                .chunks(dim)
                .map(|c| {
                    c.iter()
                        .zip(set.row(i))
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f32>()
                })
                .fold(f32::MAX, f32::min);
            assert!(
                nearest.sqrt() < 1.0,
                "row {i} is {} from every centre",
                nearest.sqrt()
            );
        }
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        for (bad, word) in [
            (spec(0, 8, 1), "rows"),
            (spec(10, 0, 1), "dimension"),
            (spec(10, 40_000, 1), "dimension"),
            (spec(10, 8, 0), "clusters"),
            (
                DataSpec {
                    sigma: f64::NAN,
                    ..spec(10, 8, 1)
                },
                "sigma",
            ),
        ] {
            let e = DataSet::generate(bad, 1).unwrap_err().to_string();
            assert!(e.contains(word), "{bad:?}: {e}");
        }
    }

    #[test]
    fn exact_answers_on_a_tiny_set() {
        // Points on a line: 0, 1, 2, …, 9 in dimension 2 (second coordinate 0).
        let vectors: Vec<f32> = (0..10).flat_map(|i| [i as f32, 0.0]).collect();
        let ids: Vec<i64> = (100..110).collect();
        let queries = QuerySet {
            dim: 2,
            vectors: vec![2.2, 0.0, 9.9, 0.0, 4.5, 0.0],
        };
        let l2 = exact_top_k(&vectors, &ids, 2, &queries, 3, Metric::L2);
        assert_eq!(l2.row_ids(0), &[102, 103, 101]);
        assert_eq!(l2.row_ids(1), &[109, 108, 107]);
        // 4 and 5 are equally far from 4.5: the smaller id first.
        assert_eq!(l2.row_ids(2), &[104, 105, 103]);
        let d = l2.row_distances(0);
        assert!(
            (d[0] - 0.04).abs() < 1e-5 && (d[1] - 0.64).abs() < 1e-5,
            "{d:?}"
        );
        let ip = exact_top_k(&vectors, &ids, 2, &queries, 2, Metric::Ip);
        assert_eq!(ip.row_ids(0), &[109, 108]);
        // More k than rows: padded with -1.
        let wide = exact_top_k(&vectors[..4], &ids[..2], 2, &queries, 3, Metric::L2);
        assert_eq!(wide.row_ids(0), &[101, 100, -1]);
    }

    #[test]
    fn exact_over_a_subset_matches_a_set_of_only_those_rows() {
        let set = DataSet::generate(spec(400, 8, 3), 11).unwrap();
        let queries = set.queries(5, 11);
        let kept: Vec<i64> = (0..400).filter(|i| i % 3 != 0).collect();
        let over = set.exact_over(&kept, &queries, 10, Metric::L2);
        let all = set.exact(&queries, 400, Metric::L2);
        for q in 0..5 {
            let expected: Vec<i64> = all
                .row_ids(q)
                .iter()
                .copied()
                .filter(|id| id % 3 != 0)
                .take(10)
                .collect();
            assert_eq!(over.row_ids(q), expected.as_slice(), "query {q}");
        }
    }
}
