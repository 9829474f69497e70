//! The metadata poller: reads `Tables` and the searchable `TableFiles` every interval and publishes an
//! immutable, numbered snapshot. A database outage keeps the last snapshot (marked stale), is logged once
//! and counted, and the gateway keeps serving from it. Before its first snapshot (the database does not
//! answer yet, or the write node has not created the schema yet: processes start in any order) it
//! retries every interval, logging each change of what it waits for once; `/readyz` says why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::control::{SetFaults, SiteFaults};
use mishards_fault::{Outcome, Site};
use mishards_meta::{
    CollectionTables, FileRow, MetaError, MetaOptions, MetaStore, MetaUri, TableRow, TableState,
};

/// Longest a periodic snapshot read may take (a big catalogue on a slow database included).
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// One consistent view of the cluster's metadata.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases whenever the content changes.
    pub epoch: u64,
    /// True while the database cannot be read: this is the last view that could.
    pub stale: bool,
    pub collections: HashMap<String, CollectionTables>,
    /// Searchable files (RAW, TO_INDEX, INDEX) by `table_id`, ordered by id.
    pub files: HashMap<String, Vec<FileRow>>,
    /// When this content was read.
    pub read_at: Option<Instant>,
}

impl Snapshot {
    fn build(epoch: u64, tables: Vec<TableRow>, files: Vec<FileRow>) -> Snapshot {
        let mut collections: HashMap<String, CollectionTables> = HashMap::new();
        let live: Vec<TableRow> = tables
            .into_iter()
            .filter(|t| t.state == TableState::Normal)
            .collect();
        for t in live.iter().filter(|t| !t.is_partition()) {
            collections.insert(
                t.table_id.clone(),
                CollectionTables {
                    collection: t.clone(),
                    partitions: Vec::new(),
                },
            );
        }
        for p in live.into_iter().filter(|t| t.is_partition()) {
            if let Some(c) = collections.get_mut(&p.owner_table) {
                c.partitions.push(p);
            }
        }
        let mut by_table: HashMap<String, Vec<FileRow>> = HashMap::new();
        for f in files {
            by_table.entry(f.table_id.clone()).or_default().push(f);
        }
        Snapshot {
            epoch,
            stale: false,
            collections,
            files: by_table,
            read_at: Some(Instant::now()),
        }
    }

    fn same_content(&self, other: &Snapshot) -> bool {
        self.collections == other.collections && self.files == other.files
    }

    /// The searchable files of the given tables.
    pub fn files_of<'a>(
        &'a self,
        table_ids: &'a [String],
    ) -> impl Iterator<Item = &'a FileRow> + 'a {
        table_ids.iter().filter_map(|t| self.files.get(t)).flatten()
    }
}

/// Sent to subscribers whenever a new snapshot (or a change of staleness) is published.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SnapshotUpdate(pub Arc<Snapshot>);

/// Asks for the current snapshot.
#[derive(Message)]
#[rtype(result = "Arc<Snapshot>")]
pub struct GetSnapshot;

/// Re-reads the database now and answers with the resulting snapshot (after a write through the
/// gateway, so the client's next search sees what it just wrote).
#[derive(Message)]
#[rtype(result = "Arc<Snapshot>")]
pub struct Refresh;

/// Registers a subscriber to `SnapshotUpdate`s.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<SnapshotUpdate>);

/// Counters for `conn_stats` and tests.
#[derive(Message)]
#[rtype(result = "PollerStats")]
pub struct GetPollerStats;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PollerStats {
    pub epoch: u64,
    pub stale: bool,
    pub polls: u64,
    pub failures: u64,
    pub outages: u64,
    pub collections: usize,
    pub files: usize,
    /// Seconds since the database was last read successfully (since the poller started, before that).
    pub lag_seconds: f64,
    /// When the database was last read successfully; `lag_seconds` is derived from it when asked.
    #[serde(skip)]
    pub last_success: Option<Instant>,
    /// Polls skipped because fault injection froze the snapshot.
    pub frozen: u64,
    /// Times its supervisor restarted it.
    pub restarts: u64,
    /// Why the last poll failed, while polls fail (`None` once one works).
    pub last_error: Option<String>,
}

/// The metadata source. `connect` is retried at every poll until it succeeds.
pub struct MetadataPoller {
    /// Serve the last snapshot through a database outage (the mitigation; off only in chaos tests).
    keep_on_outage: bool,
    uri: MetaUri,
    options: MetaOptions,
    store: Option<MetaStore>,
    interval: Duration,
    snapshot: Arc<Snapshot>,
    subscribers: Vec<Recipient<SnapshotUpdate>>,
    stats: PollerStats,
    /// Set while a poll is running, so ticks do not pile up behind a slow database.
    polling: bool,
    started_at: Instant,
    /// Fault injection's rules for the poller (outage, frozen snapshot).
    faults: Option<SiteFaults>,
}

impl MetadataPoller {
    pub fn new(uri: MetaUri, options: MetaOptions, interval: Duration) -> Self {
        Self::with_outage_policy(uri, options, interval, true)
    }

    /// `keep_on_outage = false` drops the snapshot when the database is unreachable, as the original
    /// Mishards effectively did: only for showing (in chaos tests) what keeping it protects.
    pub fn with_outage_policy(
        uri: MetaUri,
        options: MetaOptions,
        interval: Duration,
        keep_on_outage: bool,
    ) -> Self {
        MetadataPoller {
            keep_on_outage,
            uri,
            options,
            store: None,
            interval,
            snapshot: Arc::new(Snapshot::default()),
            subscribers: Vec::new(),
            stats: PollerStats::default(),
            polling: false,
            started_at: Instant::now(),
            faults: None,
        }
    }

    fn read(
        &self,
    ) -> impl Future<Output = Result<(MetaStore, Vec<TableRow>, Vec<FileRow>), MetaError>> + 'static
    {
        let (store, uri, options) = (self.store.clone(), self.uri.clone(), self.options.clone());
        async move {
            let store = match store {
                Some(s) => s,
                None => {
                    // A new connection checks the schema first, so a database the write node has not
                    // set up yet (or a foreign one) is reported as such, not as a failed query.
                    let s = MetaStore::connect(&uri, &options).await?;
                    s.check_schema().await?;
                    s
                }
            };
            let tables = store.all_tables().await?;
            let files = store.all_searchable_files().await?;
            Ok((store, tables, files))
        }
    }

    /// Applies a poll's outcome and publishes when something changed.
    fn absorb(&mut self, outcome: Result<(MetaStore, Vec<TableRow>, Vec<FileRow>), MetaError>) {
        self.stats.polls += 1;
        let next = match outcome {
            Ok((store, tables, files)) => {
                self.store = Some(store);
                self.stats.last_success = Some(Instant::now());
                self.stats.last_error = None;
                let candidate = Snapshot::build(self.snapshot.epoch, tables, files);
                if self.snapshot.stale && self.snapshot.epoch == 0 {
                    tracing::info!(meta = %self.uri, "metadata read: the first snapshot is loaded");
                } else if self.snapshot.stale {
                    tracing::info!(meta = %self.uri, "metadata database reachable again");
                }
                if candidate.same_content(&self.snapshot)
                    && !self.snapshot.stale
                    && self.snapshot.epoch > 0
                {
                    return;
                }
                Snapshot {
                    epoch: self.snapshot.epoch + 1,
                    ..candidate
                }
            }
            Err(e) => {
                self.stats.failures += 1;
                let error = e.to_string();
                let changed = self.stats.last_error.as_ref() != Some(&error);
                self.stats.last_error = Some(error);
                if self.snapshot.epoch == 0 && changed {
                    // Nothing loaded yet: the gateway waits (one line per change of what it waits for).
                    if matches!(e, MetaError::SchemaMismatch { .. }) {
                        tracing::error!(meta = %self.uri, error = %e, "the metadata database is not Milvus's: the gateway cannot serve from it");
                    } else {
                        tracing::warn!(meta = %self.uri, error = %e, every = ?self.interval, "waiting for the metadata; retrying every poll");
                    }
                }
                if self.snapshot.stale {
                    return;
                }
                self.stats.outages += 1;
                self.store = None;
                if self.snapshot.epoch == 0 {
                    Snapshot {
                        stale: true,
                        ..Snapshot::default()
                    }
                } else if !self.keep_on_outage {
                    tracing::warn!(meta = %self.uri, error = %e, "metadata database unreachable; snapshot dropped (keep_snapshot_on_outage is off)");
                    Snapshot {
                        epoch: self.snapshot.epoch + 1,
                        stale: true,
                        read_at: self.snapshot.read_at,
                        ..Snapshot::default()
                    }
                } else {
                    tracing::warn!(meta = %self.uri, error = %e, epoch = self.snapshot.epoch, "metadata database unreachable; serving the last snapshot");
                    Snapshot {
                        epoch: self.snapshot.epoch,
                        stale: true,
                        collections: self.snapshot.collections.clone(),
                        files: self.snapshot.files.clone(),
                        read_at: self.snapshot.read_at,
                    }
                }
            }
        };
        self.stats.epoch = next.epoch;
        self.stats.stale = next.stale;
        self.stats.collections = next.collections.len();
        self.stats.files = next.files.values().map(Vec::len).sum();
        self.snapshot = Arc::new(next);
        for s in &self.subscribers {
            s.do_send(SnapshotUpdate(self.snapshot.clone()));
        }
    }

    /// What fault injection does to this poll: an outage fails it as an unreachable database would,
    /// a frozen snapshot skips it (no new epoch, not marked stale, lag keeps growing).
    /// `true` when the poll is done with: an injected outage was absorbed as a failed read, or a frozen
    /// snapshot skipped it.
    fn injected(&mut self) -> bool {
        let Some(faults) = &self.faults else {
            return false;
        };
        match faults.decide("poll", Instant::now()).outcome {
            Outcome::MetaOutage => {
                let outage = MetaError::Connect {
                    uri: self.uri.to_string(),
                    source: sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "injected fault: metadata database outage",
                    )),
                };
                self.absorb(Err(outage));
                true
            }
            Outcome::Freeze => {
                self.stats.polls += 1;
                self.stats.frozen += 1;
                true
            }
            _ => false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling || self.injected() {
            return;
        }
        self.polling = true;
        // Bounded, so a read stuck on the database cannot stop every later poll (`polling` stays set
        // until it ends): one past the bound counts as an outage, and the next poll tries afresh.
        let read = tokio::time::timeout(POLL_TIMEOUT, self.read());
        ctx.spawn(read.into_actor(self).map(|outcome, act, _| {
            act.polling = false;
            act.absorb(outcome.unwrap_or_else(|_| {
                Err(MetaError::Query {
                    op: "metadata snapshot (no answer within 30 s)",
                    source: sqlx::Error::PoolTimedOut,
                })
            }));
        }));
    }
}

impl Actor for MetadataPoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::REQUEST_MAILBOX);
        self.poll(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.poll(ctx));
    }
}

impl Supervised for MetadataPoller {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!("metadata poller restarted");
        self.stats.restarts += 1;
        self.polling = false;
        self.store = None;
    }
}

impl Handler<GetSnapshot> for MetadataPoller {
    type Result = Arc<Snapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Arc<Snapshot> {
        self.snapshot.clone()
    }
}

impl Handler<Refresh> for MetadataPoller {
    type Result = ResponseActFuture<Self, Arc<Snapshot>>;
    fn handle(&mut self, _: Refresh, _: &mut Context<Self>) -> Self::Result {
        if self.injected() {
            return Box::pin(actix::fut::ready(self.snapshot.clone()));
        }
        // Bounded like the caller's wait (service::REFRESH_TIMEOUT), so a stuck database leaves no
        // reads piling up here; a read that ran out changes nothing and the next poll tries again.
        let read = tokio::time::timeout(super::service::REFRESH_TIMEOUT, self.read());
        Box::pin(read.into_actor(self).map(|outcome, act, _| {
            match outcome {
                Ok(outcome) => act.absorb(outcome),
                Err(_) => tracing::debug!(meta = %act.uri, "a metadata refresh timed out"),
            }
            act.snapshot.clone()
        }))
    }
}

impl Handler<Subscribe> for MetadataPoller {
    type Result = ();
    fn handle(&mut self, Subscribe(r): Subscribe, _: &mut Context<Self>) {
        r.do_send(SnapshotUpdate(self.snapshot.clone()));
        self.subscribers.push(r);
    }
}

impl Handler<GetPollerStats> for MetadataPoller {
    type Result = MessageResult<GetPollerStats>;
    fn handle(&mut self, _: GetPollerStats, _: &mut Context<Self>) -> Self::Result {
        let since = self.stats.last_success.unwrap_or(self.started_at);
        MessageResult(PollerStats {
            lag_seconds: (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            ..self.stats.clone()
        })
    }
}

impl Handler<SetFaults> for MetadataPoller {
    type Result = ();
    fn handle(&mut self, faults: SetFaults, _: &mut Context<Self>) {
        let next = SiteFaults::new(faults.plan, Site::Poller, faults.log, self.faults.as_ref());
        self.faults = (!next.injector.is_idle()).then_some(next);
    }
}

/// Stops the actor (fault injection); its supervisor restarts it with its snapshot and subscribers.
impl Handler<crate::control::Crash> for MetadataPoller {
    type Result = ();
    fn handle(&mut self, _: crate::control::Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mishards_meta::MySqlTarget;

    /// A metadata database that accepts connections and never answers (a stuck server, a black-holed
    /// network): a refresh after a write gives up after `REFRESH_TIMEOUT` instead of waiting out the
    /// store's own minute-long acquire timeout.
    #[actix::test]
    async fn a_refresh_gives_up_on_a_stuck_metadata_database() {
        // Connections complete in the kernel's backlog and are never accepted: nothing is ever read.
        let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = stuck.local_addr().expect("address").port();
        let uri = MetaUri::MySql(MySqlTarget {
            host: "127.0.0.1".into(),
            port,
            user: "u".into(),
            password: None,
            database: "d".into(),
            charset: None,
            socket: None,
        });
        let options = MetaOptions {
            acquire_timeout: Duration::from_secs(300),
            ..MetaOptions::default()
        };
        let poller = MetadataPoller::new(uri, options, Duration::from_secs(3600)).start();
        let bound = super::super::service::REFRESH_TIMEOUT * 4;
        let snapshot = tokio::time::timeout(bound, poller.send(Refresh))
            .await
            .expect("the refresh answers within its timeout")
            .expect("the poller answers");
        // Nothing was read: the (empty) snapshot it had.
        assert_eq!(snapshot.epoch, 0);
        drop(stuck);
    }
}
