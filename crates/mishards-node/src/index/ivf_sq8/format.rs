//! The serialized form of [`IvfSq8`], little-endian:
//! magic `MSIVFSQ8`, version u32, metric u32 (0 = L2, 1 = IP), dim u64, nlist u64, len u64,
//! centroids (nlist × dim f32), vmin (dim f32) and vdiff (dim f32) — both only when len > 0 —,
//! list lengths (nlist × u64), row offsets (len × u32), ids (len × i64), codes (len × dim u8,
//! faiss `QT_8bit` codes, list by list), then a CRC-32 of everything before it. Derived data
//! (norms, steps) is recomputed on read.

use std::io::{self, Read, Write};

use super::{IvfSq8, NLIST_RANGE};
use crate::checked_io::{CrcReader, CrcWriter, read_le, read_u32, read_u64, write_le};
use crate::index::topk::{Metric, RowBitmap};

const MAGIC: [u8; 8] = *b"MSIVFSQ8";
const VERSION: u32 = 1;

impl IvfSq8 {
    /// Serializes the index (layout in `ivf_sq8/format.rs`).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter::new(w);
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let metric: u32 = match self.metric {
            Metric::L2 => 0,
            Metric::Ip => 1,
        };
        w.write_all(&metric.to_le_bytes())?;
        for v in [self.dim, self.nlist(), self.len()] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        write_le(&mut w, &self.centroids, f32::to_le_bytes)?;
        write_le(&mut w, &self.vmin, f32::to_le_bytes)?;
        write_le(&mut w, &self.vdiff, f32::to_le_bytes)?;
        let lens: Vec<u64> = (0..self.nlist()).map(|l| self.list_len(l) as u64).collect();
        write_le(&mut w, &lens, u64::to_le_bytes)?;
        write_le(&mut w, &self.offsets, u32::to_le_bytes)?;
        write_le(&mut w, &self.ids, i64::to_le_bytes)?;
        write_le(&mut w, &self.codes, |t| [(t as u8) ^ 0x80])?;
        w.finish().map(drop)
    }

    /// Reads what [`IvfSq8::write_to`] wrote. A wrong magic or version, inconsistent lengths, an
    /// out-of-range or repeated row offset, a checksum mismatch or a truncated stream is an
    /// `Err` (`InvalidData` or `UnexpectedEof`), never a panic; memory grows only as bytes arrive,
    /// so a corrupt length cannot trigger a huge allocation.
    pub fn read_from(r: &mut impl Read) -> io::Result<IvfSq8> {
        let mut r = CrcReader::new(r);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an IVF_SQ8 index (bad magic)"));
        }
        let version = read_u32(&mut r)?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported IVF_SQ8 index format version {version} (this build reads {VERSION})"
            )));
        }
        let metric = match read_u32(&mut r)? {
            0 => Metric::L2,
            1 => Metric::Ip,
            m => return Err(invalid(format!("unknown metric code {m}"))),
        };
        let dim = read_len(&mut r)?;
        let nlist = read_len(&mut r)?;
        let len = read_len(&mut r)?;
        if (nlist == 0) != (len == 0) || nlist > len || (len > 0 && dim == 0) {
            return Err(invalid(format!(
                "inconsistent header: dim {dim}, nlist {nlist}, len {len}"
            )));
        }
        if nlist > *NLIST_RANGE.end() {
            return Err(invalid(format!("nlist {nlist} is above the 65536 allowed")));
        }
        if len > u32::MAX as usize + 1 {
            return Err(invalid("more rows than u32 offsets can address"));
        }
        let too_big = || invalid("index size overflows");
        let centroids = read_le(
            &mut r,
            nlist.checked_mul(dim).ok_or_else(too_big)?,
            f32::from_le_bytes,
        )?;
        let trained = if len > 0 { dim } else { 0 };
        let vmin = read_le(&mut r, trained, f32::from_le_bytes)?;
        let vdiff = read_le(&mut r, trained, f32::from_le_bytes)?;
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
            len.checked_mul(dim).ok_or_else(too_big)?,
            |[b]: [u8; 1]| (b ^ 0x80) as i8,
        )?;
        r.finish()?;
        Ok(IvfSq8::assemble(
            dim,
            metric,
            centroids,
            vmin,
            vdiff,
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
