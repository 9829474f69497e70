//! Reading the log back at start, and telling a torn write from damage.
//!
//! A crash mid-append leaves a partial record at the very end of the newest file, with nothing valid
//! after it: that tail is cut off. Damage followed by valid records is something else (a bad disk, a
//! stray write): cutting there would silently drop acknowledged writes, so the node refuses to start,
//! naming the file and offset, unless the operator opts into Milvus's `wal.recovery_error_ignore`, which
//! skips the damaged bytes and keeps every valid record around them.

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::WalError;
use super::record::{HEADER_BYTES, WalRecord};

/// What a damaged stretch of a log file is taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamagePolicy {
    /// Refuse to start (the default).
    Refuse,
    /// Skip the damaged bytes, keep every valid record (`wal.recovery_error_ignore`).
    Skip,
}

/// A record as found in a file: where it starts, its lsn, what it says.
struct Found {
    end: usize,
    lsn: u64,
    record: WalRecord,
}

/// Parses the record at `offset`; `None` when there is none (truncated, bad checksum, unparsable).
/// The length field is checked against the bytes present before anything is allocated.
fn record_at(bytes: &[u8], offset: usize) -> Option<Found> {
    let header = bytes.get(offset..offset.checked_add(HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let start = offset + HEADER_BYTES;
    let body = bytes.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let (lsn, record) = WalRecord::decode(body)?;
    Some(Found {
        end: start + len,
        lsn,
        record,
    })
}

/// The first valid record after the damage at `offset` with an lsn above `after`, if any.
fn next_valid(bytes: &[u8], offset: usize, after: u64) -> Option<(usize, Found)> {
    (offset + 1..bytes.len().saturating_sub(HEADER_BYTES - 1)).find_map(|o| {
        record_at(bytes, o)
            .filter(|f| f.lsn > after)
            .map(|f| (o, f))
    })
}

fn why_bad(bytes: &[u8], offset: usize) -> &'static str {
    let rest = bytes.len() - offset;
    if rest < HEADER_BYTES {
        return "truncated record header";
    }
    let len = u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ]) as usize;
    if len > rest - HEADER_BYTES {
        "record longer than the rest of the file"
    } else {
        "checksum mismatch or unparsable record"
    }
}

/// Appends every record of `path` to `out`. `newest` says whether this is the file being written when
/// the node stopped, the only one a crash can leave torn.
pub(super) fn read_file(
    path: &Path,
    newest: bool,
    policy: DamagePolicy,
    out: &mut Vec<(u64, WalRecord)>,
) -> Result<(), WalError> {
    let bytes = fs::read(path).map_err(|source| WalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut offset = 0usize;
    while offset < bytes.len() {
        if let Some(found) = record_at(&bytes, offset) {
            out.push((found.lsn, found.record));
            offset = found.end;
            continue;
        }
        let last_lsn = out.last().map_or(0, |r| r.0);
        let reason = why_bad(&bytes, offset);
        match next_valid(&bytes, offset, last_lsn) {
            None if newest => return cut_torn_tail(path, offset as u64, reason),
            None if policy == DamagePolicy::Skip => {
                tracing::warn!(path = %path.display(), offset, reason, "skipping a damaged end of a log file (wal.recovery_error_ignore)");
                return Ok(());
            }
            None => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: format!(
                        "{reason} in a log file that is not the newest, so no crash can have torn it"
                    ),
                });
            }
            Some((resume, found)) if policy == DamagePolicy::Skip => {
                tracing::warn!(path = %path.display(), offset, skipped_bytes = resume - offset, reason, next_lsn = found.lsn, "skipping damaged bytes of the write-ahead log (wal.recovery_error_ignore): the records in them are lost");
                offset = resume;
            }
            Some((resume, found)) => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: format!(
                        "{reason}, and valid records follow it (lsn {} at byte {resume}): this is damage, \
                         not a write torn by a crash, and starting would lose acknowledged writes. Restore \
                         the file, or set wal.recovery_error_ignore (MISHARDS_WAL_RECOVERY_ERROR_IGNORE=true) \
                         to start without the damaged records",
                        found.lsn
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A damaged tail of the newest file is a write the crash interrupted: cut it off and go on.
fn cut_torn_tail(path: &Path, offset: u64, reason: &str) -> Result<(), WalError> {
    tracing::warn!(path = %path.display(), offset, reason, "cutting off a torn write at the end of the log");
    let io_err = |source| WalError::Io {
        path: path.into(),
        source,
    };
    let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
    file.set_len(offset)
        .and_then(|_| file.sync_all())
        .map_err(io_err)
}
