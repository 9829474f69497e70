//! The serialized HNSW index, little-endian:
//!
//! ```text
//! header  magic "MSHNSW\0\0" (8 bytes), version u32 (= 1), body length u64
//! body    metric u32 (0 = L2, 1 = IP), dim u64, rows u64, M u32, efConstruction u32, seed u64,
//!         max level u32, entry row u32 (u32::MAX when empty),
//!         ids (rows × i64), vectors (rows × dim × f32), levels (rows × u8),
//!         links: for each row, for each level 0..=its level: count u32, count × u32 rows
//! trailer CRC-32 of the body, u32
//! ```
//!
//! Reading never trusts a length: each is checked against the bytes that remain before anything
//! is allocated, and the graph is checked (link counts within capacity, link targets in range,
//! levels consistent with the entry point), so a damaged buffer is an error, never a panic or a
//! search that reads out of bounds.

use std::io::{Read, Write};

use super::{EF_CONSTRUCTION_RANGE, Hnsw, HnswError, HnswParams, M_RANGE, MAX_LEVEL, NO_ROW};
use crate::index::topk::Metric;

const MAGIC: [u8; 8] = *b"MSHNSW\0\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const TRAILER_LEN: usize = 4;

impl Hnsw {
    /// The index in the format described in this module's doc.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            64 + self.len() * (8 + 1 + 4 * self.dim + 4 * (2 * self.params.m + 2)),
        );
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        body.extend_from_slice(&metric.to_le_bytes());
        body.extend_from_slice(&(self.dim as u64).to_le_bytes());
        body.extend_from_slice(&(self.len() as u64).to_le_bytes());
        body.extend_from_slice(&(self.params.m as u32).to_le_bytes());
        body.extend_from_slice(&(self.params.ef_construction as u32).to_le_bytes());
        body.extend_from_slice(&self.params.seed.to_le_bytes());
        body.extend_from_slice(&(self.max_level as u32).to_le_bytes());
        body.extend_from_slice(&self.entry.unwrap_or(NO_ROW).to_le_bytes());
        for id in &self.ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
        for row in 0..self.len() as u32 {
            for bits in self.vector(row) {
                body.extend_from_slice(&bits.to_le_bytes());
            }
        }
        body.extend_from_slice(&self.levels);
        for row in 0..self.len() as u32 {
            for level in 0..=self.levels[row as usize] as usize {
                let links = self.links(row, level);
                body.extend_from_slice(&(links.len() as u32).to_le_bytes());
                for l in links {
                    body.extend_from_slice(&l.to_le_bytes());
                }
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out
    }

    /// Writes [`Hnsw::to_bytes`] to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())
    }

    /// Reads all of `r` and parses it with [`Hnsw::from_bytes`].
    pub fn read_from(r: &mut impl Read) -> Result<Hnsw, HnswError> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)?;
        Hnsw::from_bytes(&bytes)
    }

    /// Parses what [`Hnsw::to_bytes`] wrote. A wrong magic or version, a length that does not
    /// match the buffer, a checksum mismatch or an inconsistent graph is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Hnsw, HnswError> {
        if bytes.len() < HEADER_LEN {
            return Err(HnswError::Truncated(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let mut header = Cursor::new(&bytes[..HEADER_LEN]);
        if header.take(8)? != MAGIC {
            return Err(HnswError::Magic);
        }
        let version = header.u32()?;
        if version != VERSION {
            return Err(HnswError::Version(version));
        }
        let body_len = header.u64()?;
        let rest = &bytes[HEADER_LEN..];
        let want = body_len.checked_add(TRAILER_LEN as u64);
        if want != Some(rest.len() as u64) {
            let what = if want.is_none_or(|w| w > rest.len() as u64) {
                HnswError::Truncated
            } else {
                HnswError::Corrupt
            };
            return Err(what(format!(
                "header says {body_len} body bytes and a {TRAILER_LEN}-byte checksum, {} bytes follow",
                rest.len()
            )));
        }
        let (body, trailer) = rest.split_at(rest.len() - TRAILER_LEN);
        let mut t = [0u8; 4];
        t.copy_from_slice(trailer);
        let stored = u32::from_le_bytes(t);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(HnswError::Checksum { stored, computed });
        }
        parse_body(body)
    }
}

fn corrupt(msg: impl Into<String>) -> HnswError {
    HnswError::Corrupt(msg.into())
}

fn parse_body(body: &[u8]) -> Result<Hnsw, HnswError> {
    let mut c = Cursor::new(body);
    let metric = match c.u32()? {
        0 => Metric::L2,
        1 => Metric::Ip,
        m => return Err(corrupt(format!("unknown metric code {m}"))),
    };
    let dim = c.len()?;
    let rows = c.len()?;
    let m = c.u32()? as usize;
    let ef_construction = c.u32()? as usize;
    let seed = c.u64()?;
    let max_level = c.u32()? as usize;
    let entry = c.u32()?;
    if !M_RANGE.contains(&m) || !EF_CONSTRUCTION_RANGE.contains(&ef_construction) {
        return Err(corrupt(format!(
            "parameters out of range: M {m}, efConstruction {ef_construction}"
        )));
    }
    if rows >= NO_ROW as usize || (rows > 0 && dim == 0) {
        return Err(corrupt(format!(
            "inconsistent shape: {rows} rows of dim {dim}"
        )));
    }
    let ids = c.array(rows, i64::from_le_bytes)?;
    let floats = rows
        .checked_mul(dim)
        .ok_or_else(|| corrupt("vector data size overflows"))?;
    let vector_bytes = c.take(
        floats
            .checked_mul(4)
            .ok_or_else(|| corrupt("vector data size overflows"))?,
    )?;
    let levels = c.take(rows)?.to_vec();
    if let Some(&l) = levels.iter().find(|&&l| l as usize > MAX_LEVEL) {
        return Err(corrupt(format!("level {l} above the limit {MAX_LEVEL}")));
    }
    let highest = levels.iter().copied().max().unwrap_or(0) as usize;
    let entry = match (rows, entry) {
        (0, NO_ROW) if max_level == 0 => None,
        (_, e)
            if (e as usize) < rows
                && levels[e as usize] as usize == max_level
                && max_level == highest =>
        {
            Some(e)
        }
        _ => {
            return Err(corrupt(format!(
                "entry row {entry} at max level {max_level} does not fit {rows} rows"
            )));
        }
    };
    // Every row has a link count per level: check those bytes exist before allocating the
    // link lists they size.
    let count_bytes: usize = levels.iter().map(|&l| 4 * (l as usize + 1)).sum();
    if count_bytes > c.remaining() {
        return Err(HnswError::Truncated(format!(
            "{count_bytes} bytes of link counts needed, {} left",
            c.remaining()
        )));
    }
    let params = HnswParams {
        m,
        ef_construction,
        seed,
    };
    let mut index = Hnsw::with_levels(dim, metric, params, ids, levels);
    if dim > 0 {
        for (row, v) in vector_bytes.chunks_exact(4 * dim).enumerate() {
            index.set_vector(
                row,
                v.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    }
    index.entry = entry;
    index.max_level = max_level;
    let mut links = Vec::with_capacity(2 * m);
    for row in 0..rows as u32 {
        for level in 0..=index.levels[row as usize] as usize {
            let count = c.u32()? as usize;
            if count > index.capacity(level) {
                return Err(corrupt(format!(
                    "row {row} has {count} links on level {level}, more than {}",
                    index.capacity(level)
                )));
            }
            links.clear();
            for _ in 0..count {
                let to = c.u32()?;
                if to as usize >= rows {
                    return Err(corrupt(format!("row {row} links to row {to} of {rows}")));
                }
                links.push(to);
            }
            index.set_links(row, level, &links);
        }
    }
    if c.remaining() != 0 {
        return Err(corrupt(format!("{} bytes after the links", c.remaining())));
    }
    Ok(index)
}

/// Reads a body front to back; every read checks the bytes that remain first.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HnswError> {
        if n > self.bytes.len() {
            return Err(HnswError::Truncated(format!(
                "{n} bytes needed, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], HnswError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, HnswError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn u64(&mut self) -> Result<u64, HnswError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    fn len(&mut self) -> Result<usize, HnswError> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| corrupt(format!("length {v} does not fit in memory")))
    }

    /// `n` values of `N` bytes each; the size is checked against what remains before the
    /// vector is allocated.
    fn array<T, const N: usize>(
        &mut self,
        n: usize,
        from: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, HnswError> {
        let size = n
            .checked_mul(N)
            .ok_or_else(|| corrupt(format!("{n} values overflow the address space")))?;
        let raw = self.take(size)?;
        Ok(raw
            .chunks_exact(N)
            .map(|b| {
                let mut a = [0u8; N];
                a.copy_from_slice(b);
                from(a)
            })
            .collect())
    }
}
