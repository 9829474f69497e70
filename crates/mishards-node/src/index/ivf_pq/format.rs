//! The serialized IVF_PQ index, little-endian:
//!
//! ```text
//! magic "MSIVFPQ\0" (8 bytes), version u32 (= 1), metric u32 (0 = L2, 1 = IP),
//! dim u64, nlist u64, m u64, nbits u64, len u64,
//! centroids (nlist × dim f32), codebooks (m × 2^nbits × dim/m f32; none when nlist = 0),
//! list lengths (nlist × u64), row offsets (len × u32), ids (len × i64),
//! codes (len × code_size u8; code_size = m, or 2m little-endian u16 when nbits > 8),
//! CRC-32 of everything before it (u32)
//! ```
//!
//! Norms and the L2 tables are derived and recomputed on read. Reading checks every count
//! against the header's consistency rules before use and grows buffers only as bytes arrive, so
//! damage is an `InvalidData` / `UnexpectedEof` error, never a panic or a huge allocation.

use std::io::{self, Read, Write};

use super::{IvfPq, NBITS_RANGE, code_size};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};
use crate::index::kernel::Isa;
use crate::index::topk::{Metric, RowBitmap};

const MAGIC: [u8; 8] = *b"MSIVFPQ\0";
const VERSION: u32 = 1;

impl IvfPq {
    /// Writes the index in the format of this module's doc.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        w.write_all(&metric.to_le_bytes())?;
        for v in [self.dim, self.nlist(), self.m, self.nbits, self.len()] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        write_le(&mut w, &self.centroids, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.codebooks, |v| v.to_le_bytes())?;
        let lens: Vec<u64> = (0..self.nlist()).map(|l| self.list_len(l) as u64).collect();
        write_le(&mut w, &lens, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.offsets, |v| v.to_le_bytes())?;
        write_le(&mut w, &self.ids, |v| v.to_le_bytes())?;
        w.write_all(&self.codes)?;
        w.finish().map(drop)
    }

    /// Reads what [`IvfPq::write_to`] wrote. A wrong magic or version, inconsistent counts, an
    /// out-of-range or repeated row offset, a code past its codebook, a checksum mismatch or a
    /// truncated stream is an `Err`, never a panic.
    pub fn read_from(r: &mut impl Read) -> io::Result<IvfPq> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an IVF_PQ index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported IVF_PQ index format version {version} (this build reads {VERSION})"
            )));
        }
        let metric = match read_u32(&mut r)? {
            0 => Metric::L2,
            1 => Metric::Ip,
            other => return Err(invalid(format!("unknown metric code {other}"))),
        };
        let dim = read_len(&mut r)?;
        let nlist = read_len(&mut r)?;
        let m = read_len(&mut r)?;
        let nbits = read_len(&mut r)?;
        let len = read_len(&mut r)?;
        if !NBITS_RANGE.contains(&nbits) {
            return Err(invalid(format!("nbits {nbits} outside [1, 16]")));
        }
        if m == 0 || !dim.is_multiple_of(m) {
            return Err(invalid(format!("m {m} does not divide dim {dim}")));
        }
        if (len == 0) != (nlist == 0) || nlist > len || (len > 0 && dim == 0) {
            return Err(invalid(format!(
                "inconsistent shape: {len} rows in {nlist} lists of dim {dim}"
            )));
        }
        if len > u32::MAX as usize + 1 {
            return Err(invalid(format!("{len} rows, more than 2^32")));
        }
        let ksub = 1usize << nbits;
        let too_big = || invalid("lengths overflow");
        let centroids = read_le(
            &mut r,
            nlist.checked_mul(dim).ok_or_else(too_big)?,
            f32::from_le_bytes,
        )?;
        let n_codebook = if nlist == 0 {
            0
        } else {
            ksub.checked_mul(dim).ok_or_else(too_big)?
        };
        let codebooks = read_le(&mut r, n_codebook, f32::from_le_bytes)?;
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
        let codes = read_le(
            &mut r,
            len.checked_mul(code_size(m, nbits)).ok_or_else(too_big)?,
            u8::from_le_bytes,
        )?;
        let bad_code = if nbits <= 8 {
            codes.iter().any(|&c| (c as usize) >= ksub)
        } else {
            codes
                .chunks_exact(2)
                .any(|c| u16::from_le_bytes([c[0], c[1]]) as usize >= ksub)
        };
        if bad_code {
            return Err(invalid(format!("a code is past its {ksub}-entry codebook")));
        }
        r.finish()?;
        Ok(IvfPq::from_parts(
            Isa::detect(),
            dim,
            metric,
            m,
            nbits,
            centroids,
            codebooks,
            list_starts,
            offsets,
            ids,
            codes,
        ))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_len(r: &mut impl Read) -> io::Result<usize> {
    usize::try_from(read_u64(r)?).map_err(|_| invalid("length does not fit in memory"))
}
