//! Segment files on the shared storage folder.
//!
//! Layout: `<storage>/tables/<table>/<segment_id>/<file_id>` for each `TableFiles` row, and
//! `<storage>/tables/<table>/<segment_id>/deleted.ids` for the segment's delete marks (shared by its raw
//! file and its index file). Every file is written to a temporary name, fsynced and renamed into place,
//! so a reader sees either the old file or the complete new one; each ends in a CRC32 of its content
//! (written and checked by `checked_io`).
//!
//! Raw file: `MSRAW001 | dim u32 | rows u64 | ids [i64; rows] | vectors [f32; rows*dim] | crc u32`;
//! a binary collection's: `MSBIN001 | dim (bits) u32 | rows u64 | ids | vectors [u8; rows*dim/8] | crc`.
//! Ids come first so the ids alone can be read without the vectors.
//!
//! Index file: `MSIVF001 | rows u64 | ids [i64; rows] | IVF_FLAT bytes | crc` (the first format, kept
//! for IVF_FLAT) or `MSIDX001 | engine type u32 | rows u64 | ids | the index's own bytes | crc`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::checked_io::{CrcWriter, checked_content, from_le, write_le};
use crate::segment_index::SegmentIndex;
use crate::vectors::{Vectors, row_width};
use mishards_meta::{EngineType, FileRow};

const RAW_MAGIC: &[u8; 8] = b"MSRAW001";
const BINARY_RAW_MAGIC: &[u8; 8] = b"MSBIN001";
const INDEX_MAGIC: &[u8; 8] = b"MSIVF001";
const ANY_INDEX_MAGIC: &[u8; 8] = b"MSIDX001";
const DELETED_MAGIC: &[u8; 8] = b"MSDEL001";
pub const DELETED_FILE: &str = "deleted.ids";

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("segment file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl SegmentError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
        move |source| SegmentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn corrupt(path: &Path, reason: impl Into<String>) -> SegmentError {
        SegmentError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, SegmentError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A table name as a directory name: letters, digits, `_` and `-` stay, anything else becomes `%XX`.
fn dir_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn table_dir(storage: &Path, table_id: &str) -> PathBuf {
    storage.join("tables").join(dir_name(table_id))
}

pub fn segment_dir(storage: &Path, table_id: &str, segment_id: &str) -> PathBuf {
    table_dir(storage, table_id).join(segment_id)
}

pub fn file_path(storage: &Path, file: &FileRow) -> PathBuf {
    segment_dir(storage, &file.table_id, &file.segment_id).join(&file.file_id)
}

pub fn deleted_path(storage: &Path, file: &FileRow) -> PathBuf {
    segment_dir(storage, &file.table_id, &file.segment_id).join(DELETED_FILE)
}

/// A fresh id for a segment or a file: microseconds since the epoch with a process-wide counter, so ids
/// sort by creation and never repeat within a process.
pub fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = mishards_meta::now_micros().max(0) as u64;
    let next = |prev: u64| (prev + 1).max(now);
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| Some(next(prev)))
        .unwrap_or(0);
    next(prev).to_string()
}

/// Writes `path` atomically: `fill` writes the content, a CRC32 of it is appended, the temporary file is
/// fsynced and renamed over `path`, and the directory entry made durable. Returns the file's size.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, SegmentError> {
    let dir = path
        .parent()
        .ok_or_else(|| SegmentError::corrupt(path, "no parent folder"))?;
    fs::create_dir_all(dir).map_err(SegmentError::io(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment"),
        new_id()
    ));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut out = CrcWriter::new(BufWriter::with_capacity(1 << 20, file));
        fill(&mut out)?;
        let (out, len) = out.finish()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(len)
    })();
    match result {
        Ok(len) => {
            crate::wal::sync_dir(dir);
            Ok(len)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(SegmentError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    }
}

/// Reads a whole file and checks its trailing CRC32; returns the content without it.
pub fn read_checked(path: &Path) -> Result<Vec<u8>, SegmentError> {
    let mut bytes = fs::read(path).map_err(SegmentError::io(path))?;
    let content_len = checked_content(&bytes)
        .map_err(|e| SegmentError::corrupt(path, e.to_string()))?
        .len();
    bytes.truncate(content_len);
    Ok(bytes)
}

/// The vectors of a raw segment file, row-major. `dim` is the collection's dimension (bits for a
/// binary collection).
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    pub dim: usize,
    pub ids: Vec<i64>,
    pub vectors: Vectors,
}

impl RawSegment {
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    pub fn bytes(&self) -> usize {
        self.ids.len() * 8 + self.vectors.bytes()
    }

    /// Values a row holds.
    pub fn width(&self) -> usize {
        row_width(self.dim, self.vectors.is_binary())
    }

    /// Row `row`'s vector alone.
    pub fn vector(&self, row: usize) -> Option<Vectors> {
        self.vectors.row(row, self.width())
    }
}

pub fn write_raw(
    path: &Path,
    dim: usize,
    ids: &[i64],
    vectors: &Vectors,
) -> Result<u64, SegmentError> {
    debug_assert_eq!(
        ids.len() * row_width(dim, vectors.is_binary()),
        vectors.values()
    );
    write_atomic(path, |w| {
        w.write_all(match vectors {
            Vectors::Float(_) => RAW_MAGIC,
            Vectors::Binary(_) => BINARY_RAW_MAGIC,
        })?;
        w.write_all(&(dim as u32).to_le_bytes())?;
        w.write_all(&(ids.len() as u64).to_le_bytes())?;
        write_i64s(w, ids)?;
        match vectors {
            Vectors::Float(v) => write_le(w, v, f32::to_le_bytes),
            Vectors::Binary(v) => w.write_all(v),
        }
    })
}

fn write_i64s(w: &mut dyn Write, values: &[i64]) -> io::Result<()> {
    write_le(w, values, i64::to_le_bytes)
}

fn le_i64s(bytes: &[u8]) -> Vec<i64> {
    from_le(bytes, i64::from_le_bytes)
}

/// Parses the raw header: (dim, rows, binary).
fn raw_header(path: &Path, bytes: &[u8]) -> Result<(usize, usize, bool), SegmentError> {
    let binary = match bytes.get(..8) {
        Some(m) if m == RAW_MAGIC => false,
        Some(m) if m == BINARY_RAW_MAGIC => true,
        _ => return Err(SegmentError::corrupt(path, "not a raw segment file")),
    };
    if bytes.len() < 20 {
        return Err(SegmentError::corrupt(path, "truncated header"));
    }
    let dim = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let rows = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default()) as usize;
    Ok((dim, rows, binary))
}

fn size_mismatch(path: &Path, dim: usize, rows: usize) -> SegmentError {
    SegmentError::corrupt(
        path,
        format!("{rows} rows of dimension {dim} do not fit its size"),
    )
}

pub fn read_raw(path: &Path) -> Result<RawSegment, SegmentError> {
    let bytes = read_checked(path)?;
    let (dim, rows, binary) = raw_header(path, &bytes)?;
    let value_bytes = if binary { 1 } else { 4 };
    let ids_end = rows.checked_mul(8).and_then(|n| n.checked_add(20));
    let end = ids_end.and_then(|e| {
        rows.checked_mul(row_width(dim, binary))?
            .checked_mul(value_bytes)?
            .checked_add(e)
    });
    match (ids_end, end) {
        (Some(ids_end), Some(end)) if end == bytes.len() => Ok(RawSegment {
            dim,
            ids: le_i64s(&bytes[20..ids_end]),
            vectors: if binary {
                Vectors::Binary(bytes[ids_end..].to_vec())
            } else {
                Vectors::Float(from_le(&bytes[ids_end..], f32::from_le_bytes))
            },
        }),
        _ => Err(size_mismatch(path, dim, rows)),
    }
}

/// Only the ids of a raw file (its first part), without reading the vectors.
pub fn read_raw_ids(path: &Path) -> Result<Vec<i64>, SegmentError> {
    let mut file = File::open(path).map_err(SegmentError::io(path))?;
    let mut header = [0u8; 20];
    file.read_exact(&mut header)
        .map_err(|_| SegmentError::corrupt(path, "truncated header"))?;
    let (dim, rows, _) = raw_header(path, &header)?;
    let file_len = file.metadata().map_err(SegmentError::io(path))?.len();
    let ids_len = rows
        .checked_mul(8)
        .filter(|n| (*n as u64).saturating_add(20) <= file_len);
    let mut ids = vec![0u8; ids_len.ok_or_else(|| size_mismatch(path, dim, rows))?];
    file.read_exact(&mut ids)
        .map_err(|_| SegmentError::corrupt(path, "truncated ids"))?;
    Ok(le_i64s(&ids))
}

/// Writes an index file (see the module doc): the ids of its rows in raw row order, then the index.
/// The ids let delete marks (kept by id) become row offsets without reading the raw file.
pub fn write_index(path: &Path, index: &SegmentIndex, ids: &[i64]) -> Result<u64, SegmentError> {
    write_atomic(path, |mut w| {
        match index {
            SegmentIndex::IvfFlat(_) => w.write_all(INDEX_MAGIC)?,
            _ => {
                w.write_all(ANY_INDEX_MAGIC)?;
                w.write_all(&(index.engine_type().code() as u32).to_le_bytes())?;
            }
        }
        w.write_all(&(ids.len() as u64).to_le_bytes())?;
        write_i64s(w, ids)?;
        index.write_to(&mut w)
    })
}

pub fn read_index(path: &Path) -> Result<(SegmentIndex, Vec<i64>), SegmentError> {
    let bytes = read_checked(path)?;
    let (engine, header) = match bytes.get(..8) {
        Some(m) if m == INDEX_MAGIC => (EngineType::IvfFlat, 8),
        Some(m) if m == ANY_INDEX_MAGIC && bytes.len() >= 12 => {
            let code = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let engine = EngineType::try_from(i64::from(code))
                .map_err(|_| SegmentError::corrupt(path, format!("unknown index type {code}")))?;
            (engine, 12)
        }
        _ => return Err(SegmentError::corrupt(path, "not an index file")),
    };
    let rows_end = header + 8;
    let rows = bytes
        .get(header..rows_end)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| SegmentError::corrupt(path, "truncated header"))?;
    let ids_end = usize::try_from(rows)
        .ok()
        .and_then(|r| r.checked_mul(8))
        .and_then(|n| n.checked_add(rows_end))
        .filter(|e| *e <= bytes.len());
    let ids_end = ids_end.ok_or_else(|| SegmentError::corrupt(path, "ids do not fit its size"))?;
    let index = SegmentIndex::read_from(engine, &mut &bytes[ids_end..])
        .map_err(|e| SegmentError::corrupt(path, e.to_string()))?;
    if index.len() as u64 != rows {
        return Err(SegmentError::corrupt(
            path,
            format!("index holds {} rows, ids {rows}", index.len()),
        ));
    }
    Ok((index, le_i64s(&bytes[rows_end..ids_end])))
}

/// The deleted ids of a segment, sorted; none when the segment has no delete marks yet.
pub fn read_deleted(path: &Path) -> Result<Vec<i64>, SegmentError> {
    let bytes = match read_checked(path) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if bytes.len() < 16 || &bytes[..8] != DELETED_MAGIC {
        return Err(SegmentError::corrupt(path, "not a delete-marks file"));
    }
    let n = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
    if n.checked_mul(8).and_then(|b| b.checked_add(16)) != Some(bytes.len()) {
        return Err(SegmentError::corrupt(
            path,
            "length does not match its count",
        ));
    }
    Ok(le_i64s(&bytes[16..]))
}

/// Adds `ids` to a segment's delete marks (rewriting the file atomically). Returns how many were new.
pub fn add_deleted(path: &Path, ids: &[i64]) -> Result<usize, SegmentError> {
    let mut all = read_deleted(path)?;
    let before = all.len();
    all.extend_from_slice(ids);
    all.sort_unstable();
    all.dedup();
    let added = all.len() - before;
    if added > 0 {
        write_atomic(path, |w| {
            w.write_all(DELETED_MAGIC)?;
            w.write_all(&(all.len() as u64).to_le_bytes())?;
            write_i64s(w, &all)
        })?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_files_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/s/f");
        let ids = [5i64, -1, 7];
        let vectors = Vectors::Float((0..9).map(|i| i as f32 * 0.5).collect());
        let size = write_raw(&path, 3, &ids, &vectors).unwrap();
        assert_eq!(size, fs::metadata(&path).unwrap().len());
        let raw = read_raw(&path).unwrap();
        assert_eq!(
            raw,
            RawSegment {
                dim: 3,
                ids: ids.to_vec(),
                vectors: vectors.clone()
            }
        );
        assert_eq!(raw.vector(2), Some(Vectors::Float(vec![3.0, 3.5, 4.0])));
        assert_eq!(read_raw_ids(&path).unwrap(), ids);

        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_raw(&path), Err(SegmentError::Corrupt { .. })));
        fs::write(&path, &bytes[..10]).unwrap();
        assert!(read_raw(&path).is_err());
        assert!(read_raw_ids(&path).is_err());
        assert!(
            read_raw(&dir.path().join("missing"))
                .unwrap_err()
                .is_not_found()
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("t/s")).unwrap().count(), 1);
    }

    /// The layouts documented above, built by hand: files written by earlier versions still load,
    /// and new files are byte for byte what they wrote.
    #[test]
    fn files_keep_their_byte_layout() {
        fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            bytes
        }
        let dir = tempfile::tempdir().unwrap();
        let (ids, vectors) = ([7i64, -3], [0.5f32, -1.0, 2.0, 8.25]);

        let mut raw = RAW_MAGIC.to_vec();
        raw.extend_from_slice(&2u32.to_le_bytes());
        raw.extend_from_slice(&2u64.to_le_bytes());
        ids.iter()
            .for_each(|i| raw.extend_from_slice(&i.to_le_bytes()));
        vectors
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
        let raw = with_crc(raw);
        let path = dir.path().join("raw");
        assert_eq!(
            write_raw(&path, 2, &ids, &Vectors::Float(vectors.to_vec())).unwrap(),
            raw.len() as u64
        );
        assert_eq!(fs::read(&path).unwrap(), raw);
        let old = dir.path().join("old_raw");
        fs::write(&old, &raw).unwrap();
        assert_eq!(
            read_raw(&old).unwrap().vectors,
            Vectors::Float(vectors.to_vec())
        );
        assert_eq!(read_raw_ids(&old).unwrap(), ids);

        let mut marks = DELETED_MAGIC.to_vec();
        marks.extend_from_slice(&2u64.to_le_bytes());
        [-3i64, 7]
            .iter()
            .for_each(|i| marks.extend_from_slice(&i.to_le_bytes()));
        let marks = with_crc(marks);
        let path = dir.path().join(DELETED_FILE);
        add_deleted(&path, &ids).unwrap();
        assert_eq!(fs::read(&path).unwrap(), marks);
        let old = dir.path().join("old_marks");
        fs::write(&old, &marks).unwrap();
        assert_eq!(read_deleted(&old).unwrap(), [-3, 7]);

        let ivf = crate::index::IvfFlat::build(&vectors, &ids, 2, 1, crate::index::Metric::L2, 1);
        let mut file = INDEX_MAGIC.to_vec();
        file.extend_from_slice(&2u64.to_le_bytes());
        ids.iter()
            .for_each(|i| file.extend_from_slice(&i.to_le_bytes()));
        ivf.write_to(&mut file).unwrap();
        let index = SegmentIndex::IvfFlat(ivf);
        let file = with_crc(file);
        let path = dir.path().join("index");
        assert_eq!(write_index(&path, &index, &ids).unwrap(), file.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), file);
        let old = dir.path().join("old_index");
        fs::write(&old, &file).unwrap();
        assert_eq!(read_index(&old).unwrap(), (index, ids.to_vec()));
    }

    #[test]
    fn binary_raw_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        let vectors = Vectors::Binary(vec![0xf0, 0x0f, 0xaa, 0x55, 0x01, 0x80]);
        write_raw(&path, 16, &[4, 5, 6], &vectors).unwrap();
        let raw = read_raw(&path).unwrap();
        assert_eq!((raw.dim, raw.width()), (16, 2));
        assert_eq!(raw.vectors, vectors);
        assert_eq!(raw.vector(1), Some(Vectors::Binary(vec![0xaa, 0x55])));
        assert_eq!(read_raw_ids(&path).unwrap(), [4, 5, 6]);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], BINARY_RAW_MAGIC);
        // 3 rows of 16 bits are 6 bytes: a file claiming 4 rows does not load.
        let mut longer = bytes[..bytes.len() - 4].to_vec();
        longer[12] = 4;
        let crc = crc32fast::hash(&longer);
        longer.extend_from_slice(&crc.to_le_bytes());
        fs::write(&path, &longer).unwrap();
        assert!(matches!(read_raw(&path), Err(SegmentError::Corrupt { .. })));
    }

    #[test]
    fn delete_marks_accumulate_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DELETED_FILE);
        assert!(read_deleted(&path).unwrap().is_empty());
        assert_eq!(add_deleted(&path, &[9, 3, 3]).unwrap(), 2);
        assert_eq!(add_deleted(&path, &[3, 1]).unwrap(), 1);
        assert_eq!(add_deleted(&path, &[1]).unwrap(), 0);
        assert_eq!(read_deleted(&path).unwrap(), [1, 3, 9]);
    }

    #[test]
    fn table_names_become_safe_directory_names() {
        assert_eq!(dir_name("c_2024-01"), "c_2024-01");
        assert_eq!(dir_name("a/../b c"), "a%2F%2E%2E%2Fb%20c");
    }

    #[test]
    fn new_ids_are_unique_and_increasing() {
        let ids: Vec<u64> = (0..1000).map(|_| new_id().parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
