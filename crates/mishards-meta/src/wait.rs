//! Opening the metadata when processes start in any order: a read node or a gateway may come up before
//! MySQL answers or before the write node has created Milvus's tables. Such a process waits and retries
//! with a bounded backoff, logging one line per change of what it waits for, and carries on by itself
//! once the database and the schema are there. What waiting cannot fix — a URI that does not parse, a
//! MySQL server refusing the credentials, a SQLite file that cannot be opened, a table that exists
//! without Milvus's columns (Milvus 1.1 refuses to start on such a schema too) — fails at once.

use std::fmt;
use std::time::{Duration, Instant};

use super::MetaError;
use super::store::{MetaOptions, MetaStore, SchemaStatus};
use super::uri::MetaUri;

/// Why a process is still waiting for its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaWait {
    /// The database does not answer (not started yet, not reachable, overloaded); the error says how.
    Unreachable(String),
    /// The database answers but the write node has not created these Milvus tables yet.
    SchemaMissing(Vec<&'static str>),
}

impl fmt::Display for MetaWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaWait::Unreachable(why) => write!(f, "the metadata database does not answer: {why}"),
            MetaWait::SchemaMissing(tables) => {
                write!(
                    f,
                    "{}",
                    MetaError::SchemaMissing {
                        tables: tables.clone()
                    }
                )
            }
        }
    }
}

/// Delays between attempts: `first`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 0.2 s doubling to 5 s: a process is ready within 5 s of its metadata, and a database that is
    /// down sees one attempt every 5 s from it.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// What one attempt found that waiting may fix, or the error it cannot.
fn classify(uri: &MetaUri, error: MetaError) -> Result<MetaWait, MetaError> {
    match error {
        MetaError::SchemaMissing { tables } => Ok(MetaWait::SchemaMissing(tables)),
        // A local SQLite file that cannot be opened is a wrong path or permission: nothing comes later.
        MetaError::Connect { .. } if uri.is_sqlite() => Err(error),
        MetaError::Connect { source, .. } if refused_credentials(&source) => {
            Err(MetaError::Connect {
                uri: uri.to_string(),
                source,
            })
        }
        MetaError::Connect { .. } | MetaError::Timeout { .. } => {
            Ok(MetaWait::Unreachable(error.to_string()))
        }
        // The database answered a statement with an error: it is there, and refuses (no rights to
        // create a table, a foreign schema). Anything else (a dropped connection) may pass.
        MetaError::Query {
            source: sqlx::Error::Database(_),
            ..
        } => Err(error),
        MetaError::Query { .. } => Ok(MetaWait::Unreachable(error.to_string())),
        other => Err(other),
    }
}

/// MySQL's "access denied" (1045, 1044): the server is up and says no; retrying would not change that.
fn refused_credentials(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1044 | 1045))
}

/// One attempt: connect (reusing `store` when an earlier attempt connected), then create the schema
/// where missing (`create_schema`: the write node) or check it is there (a reader). `Ok(Err(wait))` is
/// what waiting may fix; `Err` what it cannot.
pub async fn try_open(
    uri: &MetaUri,
    options: &MetaOptions,
    create_schema: bool,
    store: &mut Option<MetaStore>,
) -> Result<Result<MetaStore, MetaWait>, MetaError> {
    let connected = match store.clone() {
        Some(s) => s,
        None => match MetaStore::connect(uri, options).await {
            Ok(s) => s,
            Err(e) => return classify(uri, e).map(Err),
        },
    };
    let checked = if create_schema {
        connected.ensure_schema().await
    } else {
        connected.schema_status().await.and_then(|s| match s {
            SchemaStatus::Ready => Ok(()),
            SchemaStatus::Missing(tables) => Err(MetaError::SchemaMissing { tables }),
        })
    };
    match checked {
        Ok(()) => Ok(Ok(connected)),
        Err(e) => {
            let wait = classify(uri, e)?;
            // A lost connection is dropped with its pool; a missing schema keeps the pool.
            *store = matches!(wait, MetaWait::SchemaMissing(_)).then_some(connected);
            Ok(Err(wait))
        }
    }
}

/// Opens the metadata, waiting for the database and the schema as long as it takes: one attempt, then
/// one after each `backoff` delay. Each change of what it waits for is logged once (a warning) and
/// passed to `report`; `report(None)` once it is ready. Cancel it by dropping the future.
pub async fn open_when_ready(
    uri: &MetaUri,
    options: &MetaOptions,
    create_schema: bool,
    mut backoff: Backoff,
    mut report: impl FnMut(Option<&MetaWait>),
) -> Result<MetaStore, MetaError> {
    let started = Instant::now();
    let mut store = None;
    let mut waiting: Option<MetaWait> = None;
    let mut attempts: u64 = 0;
    loop {
        attempts += 1;
        match try_open(uri, options, create_schema, &mut store).await? {
            Ok(store) => {
                if waiting.is_some() {
                    tracing::info!(
                        meta = %uri,
                        waited_s = started.elapsed().as_secs_f64().round(),
                        attempts,
                        "metadata database ready"
                    );
                }
                report(None);
                return Ok(store);
            }
            Err(wait) => {
                if waiting.as_ref() != Some(&wait) {
                    tracing::warn!(
                        meta = %uri,
                        "waiting for the metadata: {wait}; retrying (at most every {:?}) until it is there",
                        backoff.max
                    );
                    report(Some(&wait));
                    waiting = Some(wait);
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn what_waiting_cannot_fix_is_an_error() {
        let mysql = MetaUri::parse("mysql://u@127.0.0.1:1/d", None).unwrap();
        let refused = MetaError::Connect {
            uri: "x".into(),
            source: sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
        };
        assert!(matches!(
            classify(&mysql, refused),
            Ok(MetaWait::Unreachable(_))
        ));
        let sqlite = MetaUri::parse("sqlite:////nonexistent/x.sqlite", None).unwrap();
        let unopenable = MetaError::Connect {
            uri: "x".into(),
            source: sqlx::Error::Io(std::io::ErrorKind::PermissionDenied.into()),
        };
        assert!(classify(&sqlite, unopenable).is_err());
        let missing = MetaError::SchemaMissing {
            tables: vec!["Tables"],
        };
        assert_eq!(
            classify(&mysql, missing).unwrap().to_string(),
            "metadata table `Tables` does not exist yet: the write node (mishards node --role rw) creates it"
        );
        let lost = MetaError::Query {
            op: "check schema",
            source: sqlx::Error::PoolTimedOut,
        };
        assert!(matches!(
            classify(&mysql, lost),
            Ok(MetaWait::Unreachable(_))
        ));
    }
}
