//! Vector search kernels: exact FLAT search, IVF_FLAT and HNSW, over one segment's vectors.
//!
//! Pure Rust, no BLAS: distances come from one dot-product tile kernel (`kernel`, AVX2 + FMA
//! picked at run time, portable fallback) driven by a blocked scan with bounded per-query heaps
//! (`scan`), parallel with rayon. L2 is the squared distance ‖q‖² + ‖x‖² − 2⟨q,x⟩, as Milvus and
//! faiss report it; IP is the inner product. Results are deterministic: equal distances rank by
//! smaller id, whatever the thread count.

pub mod annoy;
pub mod binary;
pub mod flat;
pub mod hnsw;
pub mod ivf;
pub mod ivf_pq;
pub mod ivf_sq8;
pub mod nsg;
pub mod topk;

mod distance;
mod huge_pages;
mod kernel;
mod kmeans;
mod scan;

#[cfg(test)]
mod testutil;

pub use annoy::{Annoy, AnnoyError, AnnoyParams, AnnoySearch};
pub use binary::{
    BinIvfError, BinIvfFlat, BinIvfParams, BinIvfSearch, BinaryMetric, search_binary_flat,
};
pub use flat::search_flat;
pub use hnsw::{Hnsw, HnswError, HnswParams};
pub use ivf::IvfFlat;
pub use ivf_pq::{IvfPq, IvfPqError, IvfPqParams, IvfPqSearch};
pub use ivf_sq8::{IvfSq8, IvfSq8Error, IvfSq8Params, IvfSq8Search};
pub use nsg::{Nsg, NsgError, NsgParams, NsgSearch};
pub use topk::{MergeError, Metric, RowBitmap, TopK};
