//! The serialized ANNOY index, little-endian:
//!
//! ```text
//! magic "MSANNOY\0" (8 bytes), version u32 (= 1), metric u32 (0 = L2, 1 = IP), dim u64,
//! rows u64, n_trees u64 (the build parameter), seed u64, trees u64 (n_trees, or 0 when empty),
//! splits u64, leaves u64, leaf entries u64,
//! ids (rows × i64), vectors (rows × dim × f32), roots (trees × u32),
//! planes (splits × (dim + 1) × f32), children (splits × 2 × u32), leaf lengths (leaves × u32),
//! leaf rows (entries × u32), then a CRC-32 of everything before it (u32)
//! ```
//!
//! A node reference (root or child) is a split number, or 2³¹ | a leaf number. Reading never
//! trusts a length (arrays grow only as bytes arrive, products are checked), and the forest is
//! checked before use: references in range, every node referenced exactly once, a child split
//! numbered below its parent (so no walk can loop), leaves non-empty and holding rows in range.
//! A damaged stream is an `InvalidData` or `UnexpectedEof` error, never a panic.

use std::io::{self, Read, Write};

use super::{Annoy, AnnoyParams, Forest, LEAF, MAX_ROWS, N_TREES_RANGE, ScratchPool};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};
use crate::index::huge_pages::copy_to_huge_pages;
use crate::index::topk::Metric;

const MAGIC: [u8; 8] = *b"MSANNOY\0";
const VERSION: u32 = 1;

impl Annoy {
    /// Writes the index in the format this module's doc describes.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        w.write_all(&metric.to_le_bytes())?;
        let f = &self.forest;
        for v in [
            self.dim as u64,
            self.len() as u64,
            self.params.n_trees as u64,
            self.params.seed,
            f.roots.len() as u64,
            f.splits() as u64,
            f.leaves() as u64,
            f.leaf_rows.len() as u64,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        write_le(&mut w, &self.ids, i64::to_le_bytes)?;
        write_le(&mut w, &self.vectors, f32::to_le_bytes)?;
        write_le(&mut w, &f.roots, u32::to_le_bytes)?;
        write_le(&mut w, &f.planes, f32::to_le_bytes)?;
        let children: Vec<u32> = f.children.iter().flatten().copied().collect();
        write_le(&mut w, &children, u32::to_le_bytes)?;
        let lens: Vec<u32> = f
            .leaf_starts
            .windows(2)
            .map(|s| (s[1] - s[0]) as u32)
            .collect();
        write_le(&mut w, &lens, u32::to_le_bytes)?;
        write_le(&mut w, &f.leaf_rows, u32::to_le_bytes)?;
        w.finish().map(drop)
    }

    /// Reads what [`Annoy::write_to`] wrote (see the module doc for what is checked).
    pub fn read_from(r: &mut impl Read) -> io::Result<Annoy> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an ANNOY index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported ANNOY format version {version} (this build reads version {VERSION})"
            )));
        }
        let metric = match read_u32(&mut r)? {
            0 => Metric::L2,
            1 => Metric::Ip,
            m => return Err(invalid(format!("unknown metric code {m}"))),
        };
        let dim = read_len(&mut r)?;
        let rows = read_len(&mut r)?;
        let n_trees = read_len(&mut r)?;
        let seed = read_u64(&mut r)?;
        let trees = read_len(&mut r)?;
        let splits = read_len(&mut r)?;
        let leaves = read_len(&mut r)?;
        let entries = read_len(&mut r)?;
        if !N_TREES_RANGE.contains(&n_trees) {
            return Err(invalid(format!("n_trees {n_trees} out of [1, 1024]")));
        }
        if rows > MAX_ROWS || (rows > 0 && dim == 0) {
            return Err(invalid(format!(
                "inconsistent shape: {rows} rows of dim {dim}"
            )));
        }
        let want_trees = if rows == 0 { 0 } else { n_trees };
        if trees != want_trees
            || (rows == 0 && (splits, leaves, entries) != (0, 0, 0))
            || (rows > 0 && leaves == 0)
            || splits >= LEAF as usize
            || leaves >= LEAF as usize
        {
            return Err(invalid(format!(
                "inconsistent forest: {trees} trees, {splits} splits, {leaves} leaves over {rows} rows"
            )));
        }
        let too_big = || invalid("index size overflows");
        let ids = read_le(&mut r, rows, i64::from_le_bytes)?;
        let vectors = read_le(
            &mut r,
            rows.checked_mul(dim).ok_or_else(too_big)?,
            f32::from_le_bytes,
        )?;
        let roots = read_le(&mut r, trees, u32::from_le_bytes)?;
        let plane_len = dim.checked_add(1).ok_or_else(too_big)?;
        let planes = read_le(
            &mut r,
            splits.checked_mul(plane_len).ok_or_else(too_big)?,
            f32::from_le_bytes,
        )?;
        let flat = read_le(
            &mut r,
            splits.checked_mul(2).ok_or_else(too_big)?,
            u32::from_le_bytes,
        )?;
        let lens = read_le(&mut r, leaves, u32::from_le_bytes)?;
        let leaf_rows = read_le(&mut r, entries, u32::from_le_bytes)?;
        r.finish()?;

        let children: Vec<[u32; 2]> = flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
        let mut leaf_starts = Vec::with_capacity(leaves + 1);
        leaf_starts.push(0usize);
        for &len in &lens {
            if len == 0 {
                return Err(invalid("empty leaf"));
            }
            let end = leaf_starts[leaf_starts.len() - 1] + len as usize;
            if end > entries {
                return Err(invalid(format!(
                    "leaf lengths add up to more than the {entries} entries"
                )));
            }
            leaf_starts.push(end);
        }
        if leaf_starts[leaf_starts.len() - 1] != entries {
            return Err(invalid(format!(
                "leaf lengths add up to {}, header says {entries}",
                leaf_starts[leaf_starts.len() - 1]
            )));
        }
        if let Some(&r) = leaf_rows.iter().find(|&&r| r as usize >= rows) {
            return Err(invalid(format!("leaf row {r} out of range ({rows} rows)")));
        }
        let forest = Forest {
            roots,
            planes,
            children,
            leaf_starts,
            leaf_rows,
        };
        check_shape(&forest)?;
        Ok(Annoy {
            dim,
            metric,
            params: AnnoyParams { n_trees, seed },
            ids,
            vectors: copy_to_huge_pages(&vectors),
            forest,
            pool: ScratchPool::default(),
        })
    }
}

/// Checks that the references form a forest: each in range, each split and leaf referenced
/// exactly once (as a root or a child), and each child split numbered below its parent. With
/// every node having one parent and parents numbered above their child splits, no walk from a
/// root can revisit a node, so a search always ends.
pub(super) fn check_shape(f: &Forest) -> io::Result<()> {
    let (splits, leaves) = (f.splits(), f.leaves());
    let mut split_seen = vec![false; splits];
    let mut leaf_seen = vec![false; leaves];
    let mut mark = |r: u32, parent: Option<usize>| -> io::Result<()> {
        let seen = if r & LEAF != 0 {
            leaf_seen.get_mut((r & !LEAF) as usize)
        } else {
            let s = r as usize;
            if parent.is_some_and(|p| s >= p) {
                return Err(invalid(format!(
                    "split {s} is a child of split {}, which is not above it",
                    parent.unwrap_or(0)
                )));
            }
            split_seen.get_mut(s)
        };
        match seen {
            None => Err(invalid(format!("node reference {r:#x} out of range"))),
            Some(true) => Err(invalid(format!("node reference {r:#x} used twice"))),
            Some(s) => {
                *s = true;
                Ok(())
            }
        }
    };
    for &root in &f.roots {
        mark(root, None)?;
    }
    for (s, pair) in f.children.iter().enumerate() {
        for &c in pair {
            mark(c, Some(s))?;
        }
    }
    if split_seen.iter().chain(&leaf_seen).any(|&s| !s) {
        return Err(invalid("a node no tree reaches"));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_len(r: &mut impl Read) -> io::Result<usize> {
    usize::try_from(read_u64(r)?).map_err(|_| invalid("length does not fit in memory"))
}
