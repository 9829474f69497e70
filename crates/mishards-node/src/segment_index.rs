//! One segment's index, whatever its type: building it from a raw segment with the collection's
//! index params, searching it with a request's search params, and its bytes in an index file.
//!
//! The kernels live in [`crate::index`]; this module maps Milvus's engine types, params JSON and
//! metric types onto them.

use std::io::{self, Read, Write};

use serde_json::{Map, Value};

use crate::index::{
    Annoy, AnnoyParams, AnnoySearch, BinIvfFlat, BinIvfParams, BinIvfSearch, BinaryMetric, Hnsw,
    HnswParams, IvfFlat, IvfPq, IvfPqParams, IvfPqSearch, IvfSq8, IvfSq8Params, IvfSq8Search,
    Metric, Nsg, NsgParams, NsgSearch, RowBitmap, TopK,
};
use crate::segment::RawSegment;
use crate::vectors::{Vectors, VectorsRef};
use mishards_meta::{EngineType, MetricType};

/// A built index of one segment.
#[derive(Debug, PartialEq)]
pub enum SegmentIndex {
    IvfFlat(IvfFlat),
    IvfSq8(IvfSq8),
    IvfPq(IvfPq),
    Hnsw(Hnsw),
    Annoy(Annoy),
    Nsg(Nsg),
    BinIvfFlat(BinIvfFlat),
}

/// `$body` with `$i` bound to the kernel inside whichever variant `$index` is.
macro_rules! each_kernel {
    ($index:expr, $i:ident => $body:expr) => {
        match $index {
            SegmentIndex::IvfFlat($i) => $body,
            SegmentIndex::IvfSq8($i) => $body,
            SegmentIndex::IvfPq($i) => $body,
            SegmentIndex::Hnsw($i) => $body,
            SegmentIndex::Annoy($i) => $body,
            SegmentIndex::Nsg($i) => $body,
            SegmentIndex::BinIvfFlat($i) => $body,
        }
    };
}

/// A search request's params (`extra_params["params"]`), each used by the index types that read
/// it; checked against the collection's index type by `validate::search_params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchParams {
    pub nprobe: Option<usize>,
    pub ef: Option<usize>,
    pub search_k: Option<i64>,
    pub search_length: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index type {0} is not built by this node")]
    Unsupported(EngineType),
    #[error("{0} vectors cannot be searched with a {1} index")]
    WrongKind(&'static str, EngineType),
    #[error("these query vectors cannot search a {0} collection: send {kind}", kind = if .0.is_binary() { "binary_data" } else { "float_data" })]
    MetricMismatch(MetricType),
    #[error("{0}")]
    Params(String),
    #[error("{0}")]
    Corrupt(String),
}

/// The float metric a kernel ranks by: inner product for IP, squared L2 for everything else.
pub fn float_metric(metric: MetricType) -> Metric {
    if metric == MetricType::Ip {
        Metric::Ip
    } else {
        Metric::L2
    }
}

/// An integer build param as stored in `Tables.index_params` (validated when the index was
/// created), or `default` where an older row lacks it.
fn param(params: &Map<String, Value>, key: &str, default: usize) -> usize {
    params
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(default)
}

/// The lists Milvus 1.1 trains for `nlist` asked on `rows` rows (knowhere's `MatchNlist`): at most
/// 16,384 per million rows, at least 1, so small segments do not get near-empty lists.
pub fn matched_nlist(rows: usize, nlist: usize) -> usize {
    const TYPICAL_COUNT: usize = 1_000_000;
    const PER_NLIST: usize = 16_384;
    if nlist.saturating_mul(TYPICAL_COUNT) > rows.saturating_mul(PER_NLIST) {
        (rows.saturating_mul(PER_NLIST) / TYPICAL_COUNT).max(1)
    } else {
        nlist
    }
}

impl SegmentIndex {
    /// Builds the `engine` index of `raw` (seeded by `seed`, so a rebuild gives the same index).
    pub fn build(
        engine: EngineType,
        raw: &RawSegment,
        metric: MetricType,
        params: &Map<String, Value>,
        seed: u64,
    ) -> Result<SegmentIndex, IndexError> {
        let float = match &raw.vectors {
            Vectors::Float(v) => Ok(v.as_slice()),
            Vectors::Binary(_) => Err(IndexError::WrongKind("binary", engine)),
        };
        let m = float_metric(metric);
        let (rows, dim, ids) = (raw.rows(), raw.dim, &raw.ids);
        let nlist = matched_nlist(rows, param(params, "nlist", 1024));
        let refused = |e: &dyn std::fmt::Display| IndexError::Params(e.to_string());
        Ok(match engine {
            EngineType::IvfFlat => {
                SegmentIndex::IvfFlat(IvfFlat::build(float?, ids, dim, nlist, m, seed))
            }
            EngineType::IvfSq8 => {
                let p = IvfSq8Params { nlist, seed };
                SegmentIndex::IvfSq8(
                    IvfSq8::build(float?, ids, dim, m, &p).map_err(|e| refused(&e))?,
                )
            }
            EngineType::IvfPq => {
                // Milvus 1.1's CPU version builds with 8-bit codes whatever nbits says.
                let p = IvfPqParams {
                    nlist,
                    m: param(params, "m", 8),
                    nbits: 8,
                    seed,
                };
                SegmentIndex::IvfPq(IvfPq::build(float?, ids, dim, m, &p).map_err(|e| refused(&e))?)
            }
            EngineType::Hnsw => {
                let p = HnswParams {
                    m: param(params, "M", 16),
                    ef_construction: param(params, "efConstruction", 200),
                    seed,
                };
                SegmentIndex::Hnsw(Hnsw::build(float?, ids, dim, m, p).map_err(|e| refused(&e))?)
            }
            EngineType::Annoy => {
                let p = AnnoyParams {
                    n_trees: param(params, "n_trees", 8),
                    seed,
                };
                SegmentIndex::Annoy(Annoy::build(float?, ids, dim, m, &p).map_err(|e| refused(&e))?)
            }
            EngineType::Rnsg => {
                let p = NsgParams {
                    search_length: param(params, "search_length", 45),
                    out_degree: param(params, "out_degree", 50),
                    candidate_pool_size: param(params, "candidate_pool_size", 300),
                    knng: param(params, "knng", 100),
                    seed,
                };
                SegmentIndex::Nsg(Nsg::build(float?, ids, dim, m, &p).map_err(|e| refused(&e))?)
            }
            EngineType::BinIvfFlat => {
                let Vectors::Binary(bits) = &raw.vectors else {
                    return Err(IndexError::WrongKind("float", engine));
                };
                let metric = BinaryMetric::from_code(metric.code())
                    .ok_or(IndexError::MetricMismatch(metric))?;
                let p = BinIvfParams {
                    nlist: param(params, "nlist", 1024),
                    seed,
                };
                SegmentIndex::BinIvfFlat(
                    BinIvfFlat::build(bits, ids, dim, metric, &p).map_err(|e| refused(&e))?,
                )
            }
            other => return Err(IndexError::Unsupported(other)),
        })
    }

    pub fn engine_type(&self) -> EngineType {
        match self {
            SegmentIndex::IvfFlat(_) => EngineType::IvfFlat,
            SegmentIndex::IvfSq8(_) => EngineType::IvfSq8,
            SegmentIndex::IvfPq(_) => EngineType::IvfPq,
            SegmentIndex::Hnsw(_) => EngineType::Hnsw,
            SegmentIndex::Annoy(_) => EngineType::Annoy,
            SegmentIndex::Nsg(_) => EngineType::Rnsg,
            SegmentIndex::BinIvfFlat(_) => EngineType::BinIvfFlat,
        }
    }

    pub fn len(&self) -> usize {
        each_kernel!(self, i => i.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index holds in memory.
    pub fn memory_bytes(&self) -> usize {
        each_kernel!(self, i => i.memory_bytes())
    }

    /// The top `k` of each query. A param the request leaves out (possible only for a file whose
    /// type is not the collection's, e.g. one being replaced) takes the index's default.
    pub fn search(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams,
        deleted: Option<&RowBitmap>,
    ) -> Result<TopK, IndexError> {
        let engine = self.engine_type();
        let float = match (queries, self) {
            (VectorsRef::Binary(q), SegmentIndex::BinIvfFlat(index)) => {
                let p = BinIvfSearch {
                    nprobe: params.nprobe.unwrap_or((index.nlist() / 16).max(1)),
                };
                return index
                    .search(q, k, &p, deleted)
                    .map_err(|e| IndexError::Params(e.to_string()));
            }
            (VectorsRef::Float(q), _) => q,
            (VectorsRef::Binary(_), _) => return Err(IndexError::WrongKind("binary", engine)),
        };
        let refused = |e: &dyn std::fmt::Display| IndexError::Params(e.to_string());
        // The default nprobe of a file searched without one: 1/16 of its lists.
        let nprobe = |nlist: usize| params.nprobe.unwrap_or((nlist / 16).max(1));
        Ok(match self {
            SegmentIndex::IvfFlat(index) => index.search(float, k, nprobe(index.nlist()), deleted),
            SegmentIndex::IvfSq8(index) => {
                let p = IvfSq8Search {
                    nprobe: nprobe(index.nlist()),
                };
                index
                    .search(float, k, &p, deleted)
                    .map_err(|e| refused(&e))?
            }
            SegmentIndex::IvfPq(index) => {
                let p = IvfPqSearch {
                    nprobe: nprobe(index.nlist()),
                };
                index
                    .search(float, k, &p, deleted)
                    .map_err(|e| refused(&e))?
            }
            SegmentIndex::Hnsw(index) => {
                let ef = params.ef.unwrap_or(k.max(64));
                index
                    .search(float, k, ef, deleted)
                    .map_err(|e| refused(&e))?
            }
            SegmentIndex::Annoy(index) => {
                let p = AnnoySearch {
                    search_k: params.search_k.unwrap_or(-1),
                };
                index
                    .search(float, k, &p, deleted)
                    .map_err(|e| refused(&e))?
            }
            SegmentIndex::Nsg(index) => {
                let p = NsgSearch {
                    search_length: params.search_length.unwrap_or(k.max(40)),
                };
                index
                    .search(float, k, &p, deleted)
                    .map_err(|e| refused(&e))?
            }
            SegmentIndex::BinIvfFlat(_) => return Err(IndexError::WrongKind("float", engine)),
        })
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        each_kernel!(self, i => i.write_to(w))
    }

    /// Reads an index of type `engine` (named by its file's header).
    pub fn read_from(engine: EngineType, r: &mut impl Read) -> Result<SegmentIndex, IndexError> {
        let corrupt = |e: &dyn std::fmt::Display| IndexError::Corrupt(e.to_string());
        Ok(match engine {
            EngineType::IvfFlat => {
                SegmentIndex::IvfFlat(IvfFlat::read_from(r).map_err(|e| corrupt(&e))?)
            }
            EngineType::IvfSq8 => {
                SegmentIndex::IvfSq8(IvfSq8::read_from(r).map_err(|e| corrupt(&e))?)
            }
            EngineType::IvfPq => SegmentIndex::IvfPq(IvfPq::read_from(r).map_err(|e| corrupt(&e))?),
            EngineType::Hnsw => SegmentIndex::Hnsw(Hnsw::read_from(r).map_err(|e| corrupt(&e))?),
            EngineType::Annoy => SegmentIndex::Annoy(Annoy::read_from(r).map_err(|e| corrupt(&e))?),
            EngineType::Rnsg => SegmentIndex::Nsg(Nsg::read_from(r).map_err(|e| corrupt(&e))?),
            EngineType::BinIvfFlat => {
                SegmentIndex::BinIvfFlat(BinIvfFlat::read_from(r).map_err(|e| corrupt(&e))?)
            }
            other => return Err(IndexError::Unsupported(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlist_is_matched_to_the_rows_as_milvus_does() {
        assert_eq!(matched_nlist(200_000, 1024), 1024);
        assert_eq!(matched_nlist(10_000, 1024), 163);
        assert_eq!(matched_nlist(10, 1024), 1);
        assert_eq!(matched_nlist(0, 16), 1);
    }
}
