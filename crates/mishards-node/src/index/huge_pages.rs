//! Large arrays that a search reads at random, backed by 2 MiB pages where the kernel allows it
//! (Linux transparent huge pages in `madvise` mode, the common default).
//!
//! A tree search (ANNOY) reads a few thousand rows scattered over the whole segment per query, a
//! graph search (HNSW, NSG) a few hundred; with 4 KiB pages nearly every row is a TLB miss and a
//! page walk on top of the cache miss, with 2 MiB pages a 100 MB segment fits in the TLB. The
//! advice is a hint: where it is refused (or off Linux) the array is an ordinary one.

/// Huge pages are 2 MiB on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Arrays smaller than this are left to the allocator as they are.
const MIN_BYTES: usize = 4 * HUGE_PAGE;

/// `len` zeros (`T::default()`) in a fresh vector whose pages were advised huge before first
/// touch.
pub(crate) fn zeroed_on_huge_pages<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    advise_huge(out.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    out.resize(len, T::default());
    out
}

/// `src` copied into a fresh vector whose pages were advised huge before first touch.
pub(crate) fn copy_to_huge_pages(src: &[f32]) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(src.len());
    advise_huge(out.as_mut_ptr() as *mut u8, std::mem::size_of_val(src));
    out.extend_from_slice(src);
    out
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, bytes: usize) {
    if bytes < MIN_BYTES {
        return;
    }
    // The whole huge pages inside the allocation: madvise wants a page-aligned start.
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside the allocation `ptr..ptr+bytes`, which this process owns;
    // MADV_HUGEPAGE changes only how its pages are backed, never their contents.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "huge pages not advised; using ordinary pages"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *mut u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_copy_equals_the_source() {
        let big: Vec<f32> = (0..(MIN_BYTES / 4 + 12_345))
            .map(|i| i as f32 * 0.5)
            .collect();
        assert_eq!(copy_to_huge_pages(&big), big);
        let small = [1.0f32, -2.0, 3.5];
        assert_eq!(copy_to_huge_pages(&small), small);
        assert!(copy_to_huge_pages(&[]).is_empty());
    }
}
