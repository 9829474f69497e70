//! The write node's write-ahead log. An insert or delete is acknowledged only after its record is on disk
//! (`fsync`); concurrent writers share one `fsync` (group commit) through a dedicated writer thread.
//!
//! Layout: `<dir>/<first lsn, 20 digits>.wal`, each a sequence of records (`record.rs`). A torn record at
//! the end of the newest file (a crash mid-write) is cut off on open; damage followed by valid records is
//! an error (`read.rs`), because records after it would be lost silently.
//!
//! A batch whose write or `fsync` fails is cut off the file again at once and its writers get the error
//! (`settle` tells a flush which lsns failed, so their data never reaches a segment); later records follow
//! the last good one. If the cut fails too, the log refuses every later write until the node restarts.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

mod read;
mod record;

pub use read::DamagePolicy;
pub use record::WalRecord;

#[cfg(test)]
use crate::vectors::Vectors;
#[cfg(test)]
use record::HEADER_BYTES;

/// Start a new log file once the current one is this large.
const ROTATE_BYTES: u64 = 64 << 20;
/// The most record bytes queued for the writer thread and not yet written: a disk slower than the
/// clients makes them wait for room (or fail with a reason) instead of growing memory. Four of the
/// largest inserts Milvus 1.1 takes (256 MB each).
const MAX_QUEUED_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the write-ahead log writer has stopped")]
    Stopped,
    #[error(
        "the write-ahead log has {queued} bytes queued for a disk that is not keeping up; this record of {bytes} bytes would pass the bound of {MAX_QUEUED_BYTES}: retry later"
    )]
    Backlog { queued: usize, bytes: usize },
    #[error(
        "the write-ahead log takes no more writes: a failed write could not be undone ({0}); restart the node"
    )]
    Failed(String),
}

enum Command {
    Append {
        bytes: Vec<u8>,
        lsn: u64,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    /// Every record with an lsn ≤ this is durable elsewhere: whole files of them may go.
    Checkpoint(u64),
    /// Answered once every record submitted before it is on disk or has failed.
    Barrier(oneshot::Sender<()>),
}

struct Submitter {
    next_lsn: u64,
    tx: mpsc::Sender<Command>,
}

/// A handle to the log. Cheap to clone; all clones feed one writer thread.
#[derive(Clone)]
pub struct Wal {
    submitter: Arc<Mutex<Submitter>>,
    /// Lsns of records whose write failed (their submitters were told), until `forget_failed_through`.
    failed: Arc<Mutex<BTreeSet<u64>>>,
    /// Record bytes submitted and not yet written (bounded by `MAX_QUEUED_BYTES`).
    queued: Arc<AtomicUsize>,
    /// The first lsn of the file being written (0 before the first write): records below it sit in
    /// files a checkpoint can drop.
    current_file: Arc<AtomicU64>,
    /// Test hook: this many coming writes fail halfway.
    #[cfg(test)]
    fail_writes: Arc<AtomicUsize>,
    /// Test hook: the next write starts a new file.
    #[cfg(test)]
    rotate: Arc<std::sync::atomic::AtomicBool>,
}

/// Waits until a submitted record is on disk.
pub struct Durable(oneshot::Receiver<Result<(), WalError>>);

impl Durable {
    pub async fn wait(self) -> Result<(), WalError> {
        self.0.await.unwrap_or(Err(WalError::Stopped))
    }
}

impl Wal {
    /// Opens (creating) the log in `dir` and returns it with every intact record, in lsn order, for
    /// replay. New records get lsns after the highest one found (or after `min_next_lsn - 1`).
    pub fn open(
        dir: &Path,
        min_next_lsn: u64,
        damage: DamagePolicy,
    ) -> Result<(Wal, Vec<(u64, WalRecord)>), WalError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = list_files(dir).map_err(io_err(dir))?;
        let mut records = Vec::new();
        for (i, (_, path)) in files.iter().enumerate() {
            read::read_file(path, i + 1 == files.len(), damage, &mut records)?;
        }
        let next_lsn = records
            .last()
            .map(|(lsn, _)| lsn + 1)
            .unwrap_or(1)
            .max(min_next_lsn);
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(Mutex::new(BTreeSet::new()));
        let fail_writes = Arc::new(AtomicUsize::new(0));
        let current_file = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let rotate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = Writer {
            queued: queued.clone(),
            rotate: rotate.clone(),
            current_file: current_file.clone(),
            dir: dir.to_path_buf(),
            files,
            current: None,
            failed: failed.clone(),
            broken: None,
            fail_writes: fail_writes.clone(),
        };
        std::thread::Builder::new()
            .name("mishards-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((
            Wal {
                submitter: Arc::new(Mutex::new(Submitter { next_lsn, tx })),
                failed,
                queued,
                current_file,
                #[cfg(test)]
                fail_writes,
                #[cfg(test)]
                rotate,
            },
            records,
        ))
    }

    /// Queues `record` and returns its lsn and a handle that resolves once it is on disk. Records are
    /// written in the order they are submitted, which is also lsn order.
    pub fn submit(&self, record: &WalRecord) -> Result<(u64, Durable), WalError> {
        let mut s = self.submitter.lock().map_err(|_| WalError::Stopped)?;
        let lsn = s.next_lsn;
        let bytes = record.encode(lsn);
        let queued = self.queued.load(Ordering::SeqCst);
        // One record always goes into an empty queue, whatever its size.
        if queued > 0 && queued + bytes.len() > MAX_QUEUED_BYTES {
            return Err(WalError::Backlog {
                queued,
                bytes: bytes.len(),
            });
        }
        self.queued.fetch_add(bytes.len(), Ordering::SeqCst);
        let (done, wait) = oneshot::channel();
        s.tx.send(Command::Append { bytes, lsn, done })
            .map_err(|_| WalError::Stopped)?;
        s.next_lsn += 1;
        Ok((lsn, Durable(wait)))
    }

    /// Record bytes submitted and not yet written.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) as u64
    }

    /// The lsn the next record will get; every record before it has been submitted.
    pub fn next_lsn(&self) -> u64 {
        self.submitter.lock().map(|s| s.next_lsn).unwrap_or(0)
    }

    /// The first lsn of the file being written: a checkpoint can drop the files holding records below it.
    pub fn current_file_first_lsn(&self) -> u64 {
        self.current_file.load(Ordering::SeqCst)
    }

    /// Lets the log drop files whose records all have lsn ≤ `lsn`.
    pub fn checkpoint(&self, lsn: u64) {
        if let Ok(s) = self.submitter.lock() {
            let _ = s.tx.send(Command::Checkpoint(lsn));
        }
    }

    /// Waits until every record submitted so far is on disk or has failed, and returns the lsns ≤ `upto`
    /// whose write failed: their submitters were told the write failed, so nobody may apply them.
    pub async fn settle(&self, upto: u64) -> Result<Vec<u64>, WalError> {
        let (done, wait) = oneshot::channel();
        self.submitter
            .lock()
            .map_err(|_| WalError::Stopped)?
            .tx
            .send(Command::Barrier(done))
            .map_err(|_| WalError::Stopped)?;
        wait.await.map_err(|_| WalError::Stopped)?;
        let failed = self.failed.lock().map_err(|_| WalError::Stopped)?;
        Ok(failed.range(..=upto).copied().collect())
    }

    /// Forgets the failed lsns ≤ `upto` once a flush has left them out.
    pub fn forget_failed_through(&self, upto: u64) {
        if let Ok(mut failed) = self.failed.lock() {
            *failed = failed.split_off(&(upto.saturating_add(1)));
        }
    }

    /// Makes the next write start a new file, as one reaching the rotation size would.
    #[cfg(test)]
    pub(crate) fn rotate_for_test(&self) {
        self.rotate.store(true, Ordering::SeqCst);
    }

    /// Makes the next `n` writes fail halfway through their record, as a full disk would.
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: usize) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }
}

fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            files.push((first, path));
        }
    }
    files.sort();
    Ok(files)
}

struct Writer {
    dir: PathBuf,
    /// (first lsn, path) of every file, oldest first; the last one is `current` once writing started.
    files: Vec<(u64, PathBuf)>,
    current: Option<(File, u64)>,
    failed: Arc<Mutex<BTreeSet<u64>>>,
    /// Why the log takes no more writes (a failed write could not be cut off again).
    broken: Option<String>,
    fail_writes: Arc<AtomicUsize>,
    current_file: Arc<AtomicU64>,
    rotate: Arc<std::sync::atomic::AtomicBool>,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        // Each turn takes everything queued, writes it, and pays for one fsync: group commit.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut appends = Vec::new();
            let mut barriers = Vec::new();
            for command in batch {
                match command {
                    Command::Append { bytes, lsn, done } => appends.push((bytes, lsn, done)),
                    Command::Checkpoint(lsn) => self.drop_files_through(lsn),
                    Command::Barrier(done) => barriers.push(done),
                }
            }
            if let Some((_, first_lsn, _)) = appends.first() {
                let result = self.append_batch(*first_lsn, appends.iter().map(|a| &a.0[..]));
                if let Err(e) = &result {
                    tracing::error!(error = %e, records = appends.len(), "write-ahead log write failed; the writes are refused");
                    if let Ok(mut failed) = self.failed.lock() {
                        failed.extend(appends.iter().map(|a| a.1));
                    }
                }
                let written: usize = appends.iter().map(|a| a.0.len()).sum();
                self.queued.fetch_sub(written, Ordering::SeqCst);
                for (_, _, done) in appends {
                    let _ = done.send(match &result {
                        Ok(()) => Ok(()),
                        Err(WalError::Failed(why)) => Err(WalError::Failed(why.clone())),
                        Err(e) => Err(WalError::Io {
                            path: self.dir.clone(),
                            source: io::Error::other(e.to_string()),
                        }),
                    });
                }
            }
            for done in barriers {
                let _ = done.send(());
            }
        }
    }

    /// Writes a batch of records and syncs them. On failure the batch is cut off the file again, so
    /// records written later follow the last good one; when that fails too, the log takes no more writes
    /// (the damage stays at the tail, where the next open cuts it off).
    fn append_batch<'a>(
        &mut self,
        first_lsn: u64,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), WalError> {
        if let Some(why) = &self.broken {
            return Err(WalError::Failed(why.clone()));
        }
        self.open_file(first_lsn)?;
        let mark = self.current.as_ref().map_or(0, |(_, size)| *size);
        let mut result = Ok(());
        for bytes in records {
            result = self.write(bytes);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.sync();
        }
        if result.is_err()
            && let Err(undo) = self.truncate(mark)
        {
            tracing::error!(error = %undo, "cannot cut a failed write off the write-ahead log; it takes no more writes");
            self.broken = Some(undo.to_string());
        }
        result
    }

    /// Starts a new file when there is none or the current one is full.
    fn open_file(&mut self, lsn: u64) -> Result<(), WalError> {
        let needs_new = match &self.current {
            None => true,
            Some((_, size)) => *size >= ROTATE_BYTES || self.rotate.swap(false, Ordering::SeqCst),
        };
        if needs_new {
            self.sync()?;
            let path = self.dir.join(format!("{lsn:020}.wal"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| WalError::Io {
                    path: path.clone(),
                    source,
                })?;
            sync_dir(&self.dir);
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.files.push((lsn, path));
            self.current = Some((file, size));
            self.current_file.store(lsn, Ordering::SeqCst);
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        let Some((file, size)) = self.current.as_mut() else {
            return Err(WalError::Stopped);
        };
        let io_err = |source| WalError::Io {
            path: self.dir.clone(),
            source,
        };
        if self
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // What a full disk does: part of the record lands, then the write fails.
            *size += file.write(&bytes[..bytes.len() / 2]).map_err(io_err)? as u64;
            return Err(io_err(io::Error::other("injected write failure")));
        }
        file.write_all(bytes).map_err(io_err)?;
        *size += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the current file back to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> Result<(), WalError> {
        let Some((file, size)) = self.current.as_mut() else {
            return Ok(());
        };
        file.set_len(len)
            .and_then(|_| file.sync_all())
            .map_err(|source| WalError::Io {
                path: self.dir.clone(),
                source,
            })?;
        *size = len;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        match &self.current {
            Some((file, _)) => file.sync_data().map_err(|source| WalError::Io {
                path: self.dir.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Removes every file whose records all have lsn ≤ `lsn` (the next file starts at or below lsn + 1),
    /// never the file being written.
    fn drop_files_through(&mut self, lsn: u64) {
        while self.files.len() > 1 && self.files[1].0 <= lsn + 1 {
            let (_, path) = self.files.remove(0);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a checkpointed log file");
            }
        }
    }
}

/// Makes a created or renamed entry in `dir` durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(table: &str, ids: &[i64]) -> WalRecord {
        WalRecord::Insert {
            table_id: table.into(),
            created_on: Some(1),
            dim: 2,
            ids: ids.to_vec(),
            vectors: Vectors::Float(ids.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect()),
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert!(replay.is_empty());
        let (l1, d1) = wal.submit(&insert("a", &[1, 2])).unwrap();
        let (l2, d2) = wal
            .submit(&WalRecord::Delete {
                table_id: "a".into(),
                created_on: Some(1),
                ids: vec![2],
            })
            .unwrap();
        d1.wait().await.unwrap();
        d2.wait().await.unwrap();
        assert_eq!((l1, l2), (1, 2));
        drop(wal);
        let (wal, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(
            replay,
            vec![
                (1, insert("a", &[1, 2])),
                (
                    2,
                    WalRecord::Delete {
                        table_id: "a".into(),
                        created_on: Some(1),
                        ids: vec![2]
                    }
                )
            ]
        );
        assert_eq!(wal.next_lsn(), 3);
    }

    #[tokio::test]
    async fn concurrent_writers_share_fsyncs_and_keep_lsn_order() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 10, DamagePolicy::Refuse).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8i64 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let (_, d) = wal.submit(&insert("t", &[t * 1000 + i])).unwrap();
                    d.wait().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (_, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(replay.len(), 400);
        assert!(replay.windows(2).all(|w| w[1].0 == w[0].0 + 1));
        assert_eq!(replay[0].0, 10);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        for i in 0..3 {
            wal.submit(&insert("t", &[i]))
                .unwrap()
                .1
                .wait()
                .await
                .unwrap();
        }
        drop(wal);
        let (_, path) = list_files(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        // A crash halfway through the last record.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (wal, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(replay.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        wal.submit(&insert("t", &[9]))
            .unwrap()
            .1
            .wait()
            .await
            .unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(replay.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);

        // Flip a byte inside the first record of a file that is not the newest one.
        fs::write(
            dir.path().join(format!("{:020}.wal", 100)),
            insert("x", &[1]).encode(100),
        )
        .unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 3] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 1, DamagePolicy::Refuse),
            Err(WalError::Corrupt { .. })
        ));
    }

    /// Six acknowledged records, then one byte flipped a third of the way into the newest file: the
    /// node must not start with two of them (the case), and with `Skip` it keeps the other five.
    #[tokio::test]
    async fn damage_followed_by_valid_records_in_the_newest_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        for i in 0..6 {
            let (_, d) = wal.submit(&insert("t", &[i])).unwrap();
            d.wait().await.unwrap();
        }
        drop(wal);
        let (_, path) = list_files(dir.path()).unwrap().pop().unwrap();
        let pristine = fs::read(&path).unwrap();
        let mut bytes = pristine.clone();
        bytes[pristine.len() / 3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        match Wal::open(dir.path(), 1, DamagePolicy::Refuse) {
            Err(WalError::Corrupt {
                path: p, reason, ..
            }) => {
                assert_eq!(p, path);
                assert!(reason.contains("recovery_error_ignore"), "{reason}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|r| r.1)),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "a refused start changes nothing"
        );
        let (_, replay) = Wal::open(dir.path(), 1, DamagePolicy::Skip).unwrap();
        assert_eq!(replay.len(), 5, "only the damaged record is lost");
        assert!(replay.windows(2).all(|w| w[0].0 < w[1].0));

        // A length field claiming 4 GiB is damage like any other, read without allocating it.
        let mut bytes = pristine;
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 1, DamagePolicy::Refuse),
            Err(WalError::Corrupt { offset: 0, .. })
        ));
    }

    /// Queued bytes go back to zero once records are written, failed writes included: a leak here
    /// would end in every write refused as a backlog.
    #[tokio::test]
    async fn the_backlog_drains_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        let pending: Vec<Durable> = (0..50)
            .map(|i| wal.submit(&insert("t", &[i])).unwrap().1)
            .collect();
        for d in pending {
            d.wait().await.unwrap();
        }
        wal.fail_next_writes(1);
        let failed = wal.submit(&insert("t", &[99])).unwrap().1;
        assert!(failed.wait().await.is_err());
        wal.settle(u64::MAX).await.unwrap();
        assert_eq!(wal.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn checkpoints_drop_only_fully_covered_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer {
            dir: dir.path().into(),
            files: Vec::new(),
            current: None,
            failed: Default::default(),
            broken: None,
            fail_writes: Default::default(),
            current_file: Default::default(),
            rotate: Default::default(),
            queued: Default::default(),
        };
        for first in [1u64, 50, 90] {
            let path = dir.path().join(format!("{first:020}.wal"));
            fs::write(&path, b"").unwrap();
            w.files.push((first, path));
        }
        w.drop_files_through(48);
        assert_eq!(w.files.len(), 3);
        w.drop_files_through(49);
        assert_eq!(w.files.iter().map(|f| f.0).collect::<Vec<_>>(), [50, 90]);
        w.drop_files_through(1_000);
        assert_eq!(
            w.files.iter().map(|f| f.0).collect::<Vec<_>>(),
            [90],
            "the newest file stays"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_cut_off_reported_and_later_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        let (l1, d1) = wal.submit(&insert("t", &[1])).unwrap();
        d1.wait().await.unwrap();
        wal.fail_next_writes(1);
        let (l2, d2) = wal.submit(&insert("t", &[2])).unwrap();
        assert!(d2.wait().await.is_err(), "the write failed");
        assert_eq!(wal.settle(u64::MAX).await.unwrap(), [l2]);
        assert!(wal.settle(l1).await.unwrap().is_empty(), "only lsns ≤ upto");
        let (l3, d3) = wal.submit(&insert("t", &[3])).unwrap();
        d3.wait().await.unwrap();
        assert_eq!(wal.settle(u64::MAX).await.unwrap(), [l2]);
        wal.forget_failed_through(l2);
        assert!(wal.settle(u64::MAX).await.unwrap().is_empty());
        drop(wal);
        // The half-written record was cut off: the record after it replays, the failed one does not.
        let (_, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(
            replay,
            vec![(l1, insert("t", &[1])), (l3, insert("t", &[3]))]
        );
    }

    #[tokio::test]
    async fn settle_waits_for_records_submitted_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        let pending: Vec<Durable> = (0..20)
            .map(|i| wal.submit(&insert("t", &[i])).unwrap().1)
            .collect();
        assert!(wal.settle(u64::MAX).await.unwrap().is_empty());
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 1, DamagePolicy::Refuse).unwrap();
        assert_eq!(
            replay.len(),
            20,
            "every record before the barrier is on disk"
        );
        for d in pending {
            d.wait().await.unwrap();
        }
    }
}
