//! Milvus 1.1's limits, shared by the node (which enforces them), the gateway (which checks the search
//! limits before fanning out, so a bad request is refused even when no node is asked) and the tools.

/// Longest collection name or partition tag.
pub const MAX_NAME_LEN: usize = 255;
/// Largest vector dimension.
pub const MAX_DIMENSION: i64 = 32768;
/// Largest `index_file_size`, in MB.
pub const MAX_INDEX_FILE_SIZE_MB: i64 = 65536;
/// One insert may carry at most this many bytes of vectors.
pub const MAX_INSERT_BYTES: usize = 256 << 20;
/// Largest `nlist` of an IVF index.
pub const MAX_NLIST: i64 = 65536;
/// Largest `nprobe` of a search.
pub const MAX_NPROBE: i64 = 65536;

/// Largest gRPC message a node or the gateway takes or sends: an insert may carry
/// [`MAX_INSERT_BYTES`] of vectors, plus ids and framing.
pub const MAX_MESSAGE_BYTES: usize = 300 << 20;

/// Largest `topk` Milvus 1.1 accepts.
pub const MAX_TOPK: i64 = 16384;

/// Most result entries (nq × topk) one search may ask for: bounds the memory a request can make a
/// node or the gateway allocate (16 Mi entries ≈ 200 MB of ids and distances).
pub const MAX_RESULT_ENTRIES: usize = 16 << 20;

/// Why `topk` is refused, if it is.
pub fn topk_problem(k: i64) -> Option<String> {
    (!(1..=MAX_TOPK).contains(&k))
        .then(|| format!("topk {k} is out of range: it must be 1 to {MAX_TOPK}"))
}

/// Why a search of `nq` queries with `k` hits each is refused, if it is.
pub fn result_size_problem(nq: usize, k: usize) -> Option<String> {
    match nq.checked_mul(k) {
        Some(n) if n <= MAX_RESULT_ENTRIES => None,
        _ => Some(format!(
            "{nq} queries × topk {k} exceeds {MAX_RESULT_ENTRIES} result entries: split the search"
        )),
    }
}

/// Most partition tags one search may name. Milvus 1.1 sets no such bound, but each tag is a regular
/// expression compiled for the search, so an unbounded list lets one request cost any amount of work.
pub const MAX_SEARCH_PARTITION_TAGS: usize = 4096;

/// Why a search's query vectors are refused for holding NaN or an infinity, if they are (the gateway
/// and the node say it alike).
pub fn non_finite_query_problem<'a>(mut rows: impl Iterator<Item = &'a [f32]>) -> Option<String> {
    rows.position(|row| row.iter().any(|v| !v.is_finite()))
        .map(|row| {
            format!("query vector {row} contains NaN or an infinite value: vectors must be finite")
        })
}
