//! The serialized RNSG index, little-endian:
//!
//! ```text
//! magic "MSNSG\0\0\0" (8 bytes), version u32 (= 1),
//! metric u32 (0 = L2, 1 = IP), dim u64, rows u64,
//! search_length u32, out_degree u32, candidate_pool_size u32, knng u32, seed u64,
//! navigating row u32 (u32::MAX when empty), links u64,
//! ids (rows × i64), vectors (rows × dim × f32), degrees (rows × u32), links (links × u32 rows),
//! CRC-32 of everything before it, u32
//! ```
//!
//! Reading never trusts a length: arrays grow only as their bytes arrive (so a corrupt count
//! fails on the missing bytes, not on a huge allocation), and the graph is checked (degrees add
//! up to the link count, every link names a row of the segment, the navigating row exists), so a
//! damaged file is an error, never a panic or a search that reads out of bounds.

use std::io::{self, Read, Write};

use super::{NO_ROW, Nsg, NsgParams, ScratchPool};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};
use crate::index::distance::Scorer;
use crate::index::huge_pages::copy_to_huge_pages;
use crate::index::topk::Metric;

const MAGIC: [u8; 8] = *b"MSNSG\0\0\0";
const VERSION: u32 = 1;

impl Nsg {
    /// Writes the index in the format described in this module's doc.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        w.write_all(&metric.to_le_bytes())?;
        w.write_all(&(self.dim as u64).to_le_bytes())?;
        w.write_all(&(self.len() as u64).to_le_bytes())?;
        let p = &self.params;
        for v in [p.search_length, p.out_degree, p.candidate_pool_size, p.knng] {
            // Validated into ranges far below u32::MAX.
            w.write_all(&(v as u32).to_le_bytes())?;
        }
        w.write_all(&p.seed.to_le_bytes())?;
        w.write_all(&self.nav.unwrap_or(NO_ROW).to_le_bytes())?;
        w.write_all(&(self.links.len() as u64).to_le_bytes())?;
        write_le(&mut w, &self.ids, i64::to_le_bytes)?;
        write_le(&mut w, &self.vectors, f32::to_le_bytes)?;
        let degrees: Vec<u32> = self
            .link_starts
            .windows(2)
            .map(|s| (s[1] - s[0]) as u32)
            .collect();
        write_le(&mut w, &degrees, u32::to_le_bytes)?;
        write_le(&mut w, &self.links, u32::to_le_bytes)?;
        w.finish().map(drop)
    }

    /// Reads what [`Nsg::write_to`] wrote. A wrong magic or version, parameters out of Milvus's
    /// ranges, an inconsistent graph, a checksum mismatch or a truncated stream is an `Err`
    /// (`InvalidData` or `UnexpectedEof`, with the reason), never a panic.
    pub fn read_from(r: &mut impl Read) -> io::Result<Nsg> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an RNSG index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported RNSG format version {version} (this build reads version {VERSION})"
            )));
        }
        let metric = match read_u32(&mut r)? {
            0 => Metric::L2,
            1 => Metric::Ip,
            m => return Err(invalid(format!("unknown metric code {m}"))),
        };
        let dim = read_len(&mut r)?;
        let rows = read_len(&mut r)?;
        let params = NsgParams {
            search_length: read_u32(&mut r)? as usize,
            out_degree: read_u32(&mut r)? as usize,
            candidate_pool_size: read_u32(&mut r)? as usize,
            knng: read_u32(&mut r)? as usize,
            seed: read_u64(&mut r)?,
        };
        params
            .validate()
            .map_err(|e| invalid(format!("stored build parameters: {e}")))?;
        let nav = read_u32(&mut r)?;
        let total = read_len(&mut r)?;
        if rows >= NO_ROW as usize || (rows > 0 && dim == 0) {
            return Err(invalid(format!(
                "inconsistent shape: {rows} rows of dim {dim}"
            )));
        }
        let nav = match (rows, nav) {
            (0, NO_ROW) if total == 0 => None,
            (_, n) if (n as usize) < rows => Some(n),
            _ => {
                return Err(invalid(format!(
                    "navigating row {nav} and {total} links do not fit {rows} rows"
                )));
            }
        };
        let floats = rows
            .checked_mul(dim)
            .ok_or_else(|| invalid("vector data size overflows"))?;
        let ids = read_le(&mut r, rows, i64::from_le_bytes)?;
        let vectors = read_le(&mut r, floats, f32::from_le_bytes)?;
        let degrees = read_le(&mut r, rows, u32::from_le_bytes)?;
        let mut link_starts = Vec::with_capacity(if rows == 0 { 0 } else { rows + 1 });
        if rows > 0 {
            link_starts.push(0usize);
        }
        let mut sum = 0usize;
        for &d in &degrees {
            sum = sum
                .checked_add(d as usize)
                .filter(|&s| s <= total)
                .ok_or_else(|| invalid(format!("degrees add up to more than {total} links")))?;
            link_starts.push(sum);
        }
        if sum != total {
            return Err(invalid(format!(
                "degrees add up to {sum} links, header says {total}"
            )));
        }
        let links = read_le(&mut r, total, u32::from_le_bytes)?;
        if let Some(&bad) = links.iter().find(|&&l| l as usize >= rows) {
            return Err(invalid(format!("a link to row {bad} of {rows}")));
        }
        r.finish()?;
        Ok(Nsg {
            dim,
            metric,
            params,
            ids,
            // Read at random by every search: on huge pages, as built.
            vectors: copy_to_huge_pages(&vectors),
            link_starts,
            links,
            nav,
            scorer: Scorer::new(metric),
            pool: ScratchPool::default(),
        })
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_len(r: &mut impl Read) -> io::Result<usize> {
    usize::try_from(read_u64(r)?).map_err(|_| invalid("length does not fit in memory"))
}
