//! The write node's claim on its storage folder: an exclusive lock on `<storage>/mishards-writer.lock`,
//! held as long as the node runs. Two write nodes on one folder would both replay, append to and cut the
//! same write-ahead log; the second one refuses to start and says who holds the folder. The operating
//! system drops the lock when the process dies, however it dies, so a crash never leaves a stale claim.
//! Read nodes take no lock: any number of them share the folder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOCK_FILE_NAME: &str = "mishards-writer.lock";

#[derive(Debug, thiserror::Error)]
pub enum StorageLockError {
    #[error(
        "storage folder {folder} is in use by another write node ({holder}); only one write node may use a \
         storage folder: stop that node, or give this one another --storage"
    )]
    Held { folder: PathBuf, holder: String },
    #[error("cannot lock storage folder {folder} ({path}): {source}")]
    Io {
        folder: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the folder.
#[derive(Debug)]
pub struct StorageLock {
    _file: File,
}

impl StorageLock {
    /// Takes the folder for this process, writing who holds it into the lock file.
    pub fn acquire(folder: &Path) -> Result<StorageLock, StorageLockError> {
        let path = folder.join(LOCK_FILE_NAME);
        let io = |source| StorageLockError::Io {
            folder: folder.to_path_buf(),
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // What the holder wrote; bounded, it is only for the message.
                let _ = (&file).take(512).read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StorageLockError::Held {
                    folder: folder.to_path_buf(),
                    holder: if holder.is_empty() {
                        "it has not said who it is".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let me = format!(
            "pid {} on host {}, since {}",
            std::process::id(),
            hostname(),
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(jiff::Timestamp::now())
        );
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.sync_data())
            .map_err(io)?;
        Ok(StorageLock { _file: file })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = StorageLock::acquire(dir.path()).unwrap();
        match StorageLock::acquire(dir.path()) {
            Err(StorageLockError::Held { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StorageLock::acquire(dir.path()).expect("free again once dropped");
    }
}
