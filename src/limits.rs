//! Milvus 1.1's search limits, shared by the node (which enforces them) and the gateway (which checks
//! them before fanning out, so a bad request is refused even when no node is asked).

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
