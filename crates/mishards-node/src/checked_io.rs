//! Checked binary I/O, written once for every on-disk format of the node: segment files
//! (`segment`), the IVF_FLAT index body (`index::ivf`) and write-ahead log records (`wal`).
//!
//! A checked body is followed by the CRC-32 (IEEE, `crc32fast`) of every byte before it,
//! little-endian. Numbers and slices of numbers are little-endian. Large slices go through a
//! bounded buffer, so writing or reading a segment of hundreds of MB never holds a second copy, and
//! a corrupt length read from a file cannot make a reader allocate more than the bytes that arrive.

use std::io::{self, Read, Write};

/// Bytes per chunk when a slice is written or read piecewise.
const CHUNK_BYTES: usize = 64 * 1024;

/// Feeds every byte written through a CRC-32 and counts them.
pub(crate) struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> CrcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Appends the CRC-32 of everything written so far (the checksum itself is not counted in
    /// it). Returns the inner writer and the bytes written in all, checksum included.
    pub(crate) fn finish(mut self) -> io::Result<(W, u64)> {
        let crc = self.crc.finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        Ok((self.inner, self.len + 4))
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Feeds every byte read through a CRC-32.
pub(crate) struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Reads the stored CRC-32 that follows the content and checks it against every byte read so
    /// far: `UnexpectedEof` when it is missing, `InvalidData` when it does not match.
    pub(crate) fn finish(mut self) -> io::Result<R> {
        let computed = self.crc.finalize();
        let stored = read_u32(&mut self.inner)?;
        if stored != computed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "checksum mismatch",
            ));
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Why a whole checked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CrcError {
    #[error("shorter than its checksum")]
    Short,
    #[error("checksum mismatch")]
    Mismatch,
}

/// The content of a whole checked body (`content | crc u32`) held in memory, once its trailing
/// CRC-32 matches.
pub(crate) fn checked_content(bytes: &[u8]) -> Result<&[u8], CrcError> {
    let body_len = bytes.len().checked_sub(4).ok_or(CrcError::Short)?;
    let (content, stored) = bytes.split_at(body_len);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if crc32fast::hash(content) != stored {
        return Err(CrcError::Mismatch);
    }
    Ok(content)
}

/// Writes `values` little-endian through a bounded buffer.
pub(crate) fn write_le<T: Copy, const N: usize>(
    w: &mut (impl Write + ?Sized),
    values: &[T],
    to_le: impl Fn(T) -> [u8; N],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK_BYTES.min(values.len() * N));
    for chunk in values.chunks(CHUNK_BYTES / N) {
        buf.clear();
        extend_le(&mut buf, chunk, &to_le);
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Appends `values` little-endian to an in-memory buffer.
pub(crate) fn extend_le<T: Copy, const N: usize>(
    out: &mut Vec<u8>,
    values: &[T],
    to_le: impl Fn(T) -> [u8; N],
) {
    out.reserve(values.len() * N);
    values
        .iter()
        .for_each(|v| out.extend_from_slice(&to_le(*v)));
}

/// Reads `n` little-endian values, growing the vector only as data arrives.
pub(crate) fn read_le<T, const N: usize>(
    r: &mut (impl Read + ?Sized),
    n: usize,
    from_le: impl Fn([u8; N]) -> T,
) -> io::Result<Vec<T>> {
    let chunk_values = CHUNK_BYTES / N;
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk_values.min(n) * N];
    let mut left = n;
    while left > 0 {
        let m = left.min(chunk_values);
        r.read_exact(&mut buf[..m * N])?;
        out.extend(decode_le(&buf[..m * N], &from_le));
        left -= m;
    }
    Ok(out)
}

/// Decodes whole little-endian values from bytes held in memory; a trailing partial value is
/// ignored (callers check lengths first).
pub(crate) fn from_le<T, const N: usize>(bytes: &[u8], from_le: impl Fn([u8; N]) -> T) -> Vec<T> {
    decode_le(bytes, &from_le).collect()
}

fn decode_le<'a, T, const N: usize>(
    bytes: &'a [u8],
    from_le: &'a impl Fn([u8; N]) -> T,
) -> impl Iterator<Item = T> + 'a {
    bytes.chunks_exact(N).map(move |c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        from_le(a)
    })
}

pub(crate) fn read_u32(r: &mut (impl Read + ?Sized)) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

pub(crate) fn read_u64(r: &mut (impl Read + ?Sized)) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(content: &[u8]) -> Vec<u8> {
        let (bytes, len) = {
            let mut w = CrcWriter::new(Vec::new());
            w.write_all(content).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(len, bytes.len() as u64);
        bytes
    }

    #[test]
    fn a_checked_body_is_its_content_then_its_crc32_le() {
        let bytes = checked(b"123456789");
        // The CRC-32 (IEEE) check value of "123456789".
        assert_eq!(&bytes[9..], &0xCBF4_3926u32.to_le_bytes());
        assert_eq!(checked_content(&bytes), Ok(&b"123456789"[..]));
        let mut reader = CrcReader::new(&bytes[..]);
        let mut content = [0u8; 9];
        reader.read_exact(&mut content).unwrap();
        assert!(reader.finish().unwrap().is_empty());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let bytes = checked(b"a checked body");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert_eq!(checked_content(&bad), Err(CrcError::Mismatch), "byte {at}");
            let mut reader = CrcReader::new(&bad[..]);
            let mut content = vec![0u8; bytes.len() - 4];
            reader.read_exact(&mut content).unwrap();
            let err = reader.finish().expect_err("flipped byte");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {at}");
        }
        assert_eq!(checked_content(&bytes[..3]), Err(CrcError::Short));
        for cut in 4..bytes.len() {
            assert!(checked_content(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut reader = CrcReader::new(&bytes[..bytes.len() - 2]);
        let mut content = vec![0u8; bytes.len() - 4];
        reader.read_exact(&mut content).unwrap();
        let err = reader.finish().expect_err("missing checksum");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn little_endian_slices_round_trip_across_chunks() {
        // More than one chunk of each width.
        let ids: Vec<i64> = (0..20_000i64).map(|i| i * 7 - 3).collect();
        let floats: Vec<f32> = (0..40_000).map(|i| i as f32 * 0.25).collect();
        let mut written = Vec::new();
        write_le(&mut written, &ids, i64::to_le_bytes).unwrap();
        write_le(&mut written, &floats, f32::to_le_bytes).unwrap();
        let mut extended = Vec::new();
        extend_le(&mut extended, &ids, i64::to_le_bytes);
        extend_le(&mut extended, &floats, f32::to_le_bytes);
        assert_eq!(written, extended);
        assert_eq!(&written[..8], &(-3i64).to_le_bytes());
        assert_eq!(from_le(&written[..ids.len() * 8], i64::from_le_bytes), ids);

        let mut r = &written[..];
        assert_eq!(read_le(&mut r, ids.len(), i64::from_le_bytes).unwrap(), ids);
        assert_eq!(
            read_le(&mut r, floats.len(), f32::from_le_bytes).unwrap(),
            floats
        );
        assert!(r.is_empty());
        // A count larger than the bytes fails without allocating for it.
        let err = read_le(&mut &written[..16], usize::MAX / 8, i64::from_le_bytes)
            .expect_err("short input");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
