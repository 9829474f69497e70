//! A TLS config built from files and rebuilt when their contents change. Polling the contents (a few
//! small files every few seconds) rather than mtimes or inotify: it sees a file replaced by a rename,
//! a mounted secret's symlink swapped, or a copy that kept the old mtime, on every file system.
//!
//! What a reload promises: connections accepted or made after it use the new files; open connections
//! keep the config they started with. New contents that do not make a config (a half-written file, a
//! key that does not match its certificate) keep the old config and log one warning, until the files
//! change again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::TlsError;
use crate::pem::FileContents;

type Build<T> = dyn Fn(&[FileContents]) -> Result<T, TlsError> + Send + Sync;

/// The contents of the files, or why one could not be read: what a poll compares.
type Snapshot = Result<Vec<FileContents>, String>;

pub(crate) struct Reloading<T> {
    /// "server" or "client", for logs.
    side: &'static str,
    files: Vec<PathBuf>,
    build: Box<Build<T>>,
    current: RwLock<Arc<T>>,
    /// What the files held at the last poll, whether or not it made a config.
    last_seen: Mutex<Snapshot>,
}

fn read_all(files: &[PathBuf]) -> Result<Vec<FileContents>, TlsError> {
    files
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map(|bytes| (path.clone(), bytes))
                .map_err(|e| TlsError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads the files and builds the first config; an error here means the process should not start.
    pub(crate) fn load(
        side: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn(&[FileContents]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Reloading<T>>, TlsError> {
        let contents = read_all(&files)?;
        let config = build(&contents)?;
        Ok(Arc::new(Reloading {
            side,
            files,
            build: Box::new(build),
            current: RwLock::new(Arc::new(config)),
            last_seen: Mutex::new(Ok(contents)),
        }))
    }

    /// The files the config is built from.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The config new connections use.
    pub(crate) fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(current) => current.clone(),
            // A panic while swapping cannot leave a half-written Arc: the value is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files once; when they changed since the last poll, rebuilds the config and swaps it
    /// in, or keeps the old one and warns. Returns whether the config was replaced.
    pub(crate) fn poll(&self) -> bool {
        let snapshot: Snapshot = read_all(&self.files).map_err(|e| e.to_string());
        let mut last_seen = match self.last_seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *last_seen == snapshot {
            return false;
        }
        let outcome = match &snapshot {
            Ok(contents) => (self.build)(contents).map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        *last_seen = snapshot;
        match outcome {
            Ok(config) => {
                let mut current = match self.current.write() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(config);
                tracing::info!(side = self.side, files = ?self.files, "TLS files changed: new connections use them");
                true
            }
            Err(reason) => {
                tracing::warn!(side = self.side, files = ?self.files, %reason, "TLS files changed but cannot be used; keeping the previous certificates");
                false
            }
        }
    }
}

/// Polls `reloading`'s files every `interval` on the current tokio runtime, until the last other
/// handle to it is dropped. Without a runtime there is nothing to poll on: a warning says so.
pub(crate) fn watch<T: Send + Sync + 'static>(reloading: &Arc<Reloading<T>>, interval: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            side = reloading.side,
            "no async runtime: TLS files will not be reloaded"
        );
        return;
    };
    let weak: Weak<Reloading<T>> = Arc::downgrade(reloading);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(reloading) = weak.upgrade() else {
                return;
            };
            // File reads block: keep them off the runtime's worker.
            let polled = tokio::task::spawn_blocking(move || {
                reloading.poll();
            })
            .await;
            if polled.is_err() {
                tracing::warn!("TLS file check failed; trying again at the next interval");
            }
        }
    });
}
