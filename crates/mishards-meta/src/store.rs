//! `MetaStore`: the Milvus 1.1 metadata schema on MySQL or SQLite behind one type, with the typed queries
//! the node and the gateway need. Runtime queries only (`?` placeholders work on both backends).
//!
//! Past 800 lines on purpose: it is every statement of one schema, each beside the transaction that runs
//! it, so a change to a table is seen whole in one file.

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::MetaError;
use sqlx::FromRow;
use sqlx::mysql::{MySqlQueryResult, MySqlRow};
use sqlx::sqlite::{SqliteQueryResult, SqliteRow};

use super::schema::{
    CollectionTables, EngineType, FileRow, FileType, NewFile, NewTable, SCHEMA_VERSION, TableRow,
    TableState,
};
use super::uri::{MetaUri, SqliteTarget};

const TABLE_COLUMNS: &str = "id, table_id, state, dimension, created_on, flag, index_file_size, engine_type, \
     index_params, metric_type, owner_table, partition_tag, version, flush_lsn";
const FILE_COLUMNS: &str = "id, table_id, segment_id, engine_type, file_id, file_type, file_size, row_count, \
     updated_time, created_on, date, flush_lsn";

/// Milvus 1.1's DDL. Only `id` differs between the backends: SQLite auto-increments INTEGER keys only.
fn schema_ddl(mysql: bool) -> [String; 3] {
    let id = if mysql {
        "id BIGINT PRIMARY KEY AUTO_INCREMENT"
    } else {
        "id INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    let version = SCHEMA_VERSION;
    [
        format!(
            "CREATE TABLE IF NOT EXISTS Tables ({id}, table_id VARCHAR(255) UNIQUE NOT NULL, state INT NOT NULL, \
             dimension SMALLINT NOT NULL, created_on BIGINT NOT NULL, flag BIGINT DEFAULT 0 NOT NULL, \
             index_file_size BIGINT DEFAULT 1024 NOT NULL, engine_type INT DEFAULT 1 NOT NULL, \
             index_params VARCHAR(512) NOT NULL, metric_type INT DEFAULT 1 NOT NULL, \
             owner_table VARCHAR(255) NOT NULL, partition_tag VARCHAR(255) NOT NULL, \
             version VARCHAR(64) DEFAULT '{version}', flush_lsn BIGINT DEFAULT 0 NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS TableFiles ({id}, table_id VARCHAR(255) NOT NULL, \
             segment_id VARCHAR(255) NOT NULL, engine_type INT DEFAULT 1 NOT NULL, file_id VARCHAR(255) NOT NULL, \
             file_type INT DEFAULT 0 NOT NULL, file_size BIGINT DEFAULT 0 NOT NULL, \
             row_count BIGINT DEFAULT 0 NOT NULL, updated_time BIGINT NOT NULL, created_on BIGINT NOT NULL, \
             date INT DEFAULT -1 NOT NULL, flush_lsn BIGINT DEFAULT 0 NOT NULL)"
        ),
        "CREATE TABLE IF NOT EXISTS Environment (global_lsn BIGINT NOT NULL)".to_string(),
    ]
}

/// How to connect; the defaults suit a node or gateway.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    pub max_connections: u32,
    /// How long a connect or a query may wait for a connection before it fails.
    pub acquire_timeout: Duration,
    /// Log every SQL statement at INFO (`SQL_ECHO`).
    pub echo: bool,
    /// How long one statement may run before the caller gets an error (a locked table, a stalled
    /// server). A transaction's commit is not cut short: whether it happened would be unknown.
    pub statement_timeout: Duration,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            echo: false,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
enum Pool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$p` bound to whichever backend pool the store has; the body is type-checked once
/// per backend, which is what lets one query text serve both.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::MySql($p) => $body,
            Pool::Sqlite($p) => $body,
        }
    };
}

/// Binds each `Arg` of `$args` to the query `$query`, in order.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match *arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(s) => query.bind(s),
            };
        }
        query
    }};
}

/// Whether Milvus's tables are there (`MetaStore::schema_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    Ready,
    /// These tables do not exist yet.
    Missing(Vec<&'static str>),
}

/// Whether the database said the table does not exist (MySQL's ER_NO_SUCH_TABLE, SQLite's "no such
/// table"), as opposed to a column it lacks or any other refusal.
fn is_missing_table(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql.number() == 1146;
    }
    db.message().starts_with("no such table")
}

/// A handle to the metadata database. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct MetaStore {
    pool: Pool,
    uri: MetaUri,
    statement_timeout: Duration,
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn query_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> MetaError {
    move |source| MetaError::Query { op, source }
}

impl MetaStore {
    /// Connects to `uri` and creates the Milvus schema where it is missing. An existing Milvus database is
    /// left as it is, but checked: a table missing a Milvus column is reported, not half-used.
    pub async fn open(uri: &MetaUri, options: &MetaOptions) -> Result<MetaStore, MetaError> {
        let store = Self::connect(uri, options).await?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Connects without touching the schema (a reader of a database another process owns).
    pub async fn connect(uri: &MetaUri, options: &MetaOptions) -> Result<MetaStore, MetaError> {
        let statement_level = if options.echo {
            tracing::log::LevelFilter::Info
        } else {
            tracing::log::LevelFilter::Trace
        };
        let connect_error = |source: sqlx::Error| MetaError::Connect {
            uri: uri.to_string(),
            source,
        };
        let pool = match uri {
            MetaUri::MySql(target) => {
                // sqlx retries a refused connection until `acquire_timeout` and then reports only a
                // pool timeout. One plain TCP connect first says at once, and why, when nothing
                // listens (a server not started yet: processes start in any order and retry).
                if target.socket.is_none() {
                    let reach = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
                    match tokio::time::timeout(options.acquire_timeout, reach).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(connect_error(sqlx::Error::Io(e))),
                        Err(_) => {
                            return Err(connect_error(sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no TCP answer within {:?}", options.acquire_timeout),
                            ))));
                        }
                    }
                }
                let mut connect = MySqlConnectOptions::new()
                    .host(&target.host)
                    .port(target.port)
                    .username(&target.user)
                    .database(&target.database)
                    .charset(target.charset.as_deref().unwrap_or("utf8mb4"));
                if let Some(password) = &target.password {
                    connect = connect.password(password);
                }
                if let Some(socket) = &target.socket {
                    connect = connect.socket(socket);
                }
                let connect = connect.log_statements(statement_level);
                let pool = MySqlPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(connect_error)?;
                Pool::MySql(pool)
            }
            MetaUri::Sqlite(target) => {
                let connect = match target {
                    SqliteTarget::Memory => SqliteConnectOptions::new().in_memory(true),
                    SqliteTarget::File(path) => {
                        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                            std::fs::create_dir_all(dir)
                                .map_err(|e| connect_error(sqlx::Error::Io(e)))?;
                        }
                        // WAL lets the write node and the readers of the same file work side by side.
                        SqliteConnectOptions::new()
                            .filename(path)
                            .create_if_missing(true)
                            .journal_mode(SqliteJournalMode::Wal)
                            .synchronous(SqliteSynchronous::Full)
                    }
                }
                .busy_timeout(options.acquire_timeout)
                .log_statements(statement_level);
                // An in-memory database lives as long as its one connection: never let the pool drop it.
                let in_memory = matches!(target, SqliteTarget::Memory);
                let pool = SqlitePoolOptions::new()
                    .max_connections(if in_memory {
                        1
                    } else {
                        options.max_connections
                    })
                    .min_connections(if in_memory { 1 } else { 0 })
                    .idle_timeout(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(600))
                    })
                    .max_lifetime(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(1800))
                    })
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(connect_error)?;
                Pool::Sqlite(pool)
            }
        };
        Ok(MetaStore {
            pool,
            uri: uri.clone(),
            statement_timeout: options.statement_timeout,
        })
    }

    /// The URI this store was opened with (password masked when displayed).
    pub fn uri(&self) -> &MetaUri {
        &self.uri
    }

    /// Creates `Tables`, `TableFiles` and `Environment` where missing, then checks every Milvus column is
    /// there.
    pub async fn ensure_schema(&self) -> Result<(), MetaError> {
        for ddl in schema_ddl(matches!(self.pool, Pool::MySql(_))) {
            self.execute("create schema", &ddl, &[]).await?;
        }
        self.check_schema().await
    }

    /// Checks the Milvus schema is there and whole: `SchemaMissing` names the tables not created yet,
    /// `SchemaMismatch` a table that exists without Milvus's columns.
    pub async fn check_schema(&self) -> Result<(), MetaError> {
        match self.schema_status().await? {
            SchemaStatus::Ready => Ok(()),
            SchemaStatus::Missing(tables) => Err(MetaError::SchemaMissing { tables }),
        }
    }

    /// Reads zero rows of every Milvus column of each table. A table that does not exist is reported
    /// in `Missing` (the write node has not created it yet: a reader waits); one that exists but lacks a
    /// Milvus column, or that the database otherwise refuses to read, is `SchemaMismatch` (not Milvus's:
    /// waiting would not help). An error without the database's answer (a lost connection, a timeout)
    /// stays a `Query`/`Timeout` error.
    pub async fn schema_status(&self) -> Result<SchemaStatus, MetaError> {
        let mut missing = Vec::new();
        for (table, columns) in [
            ("Tables", TABLE_COLUMNS),
            ("TableFiles", FILE_COLUMNS),
            ("Environment", "global_lsn"),
        ] {
            let sql = format!("SELECT {columns} FROM {table} WHERE 1 = 0");
            match self.execute("check schema", &sql, &[]).await {
                Ok(_) => {}
                Err(MetaError::Query { source, .. }) if is_missing_table(&source) => {
                    missing.push(table);
                }
                Err(MetaError::Query {
                    source: source @ sqlx::Error::Database(_),
                    ..
                }) => return Err(MetaError::SchemaMismatch { table, source }),
                Err(other) => return Err(other),
            }
        }
        Ok(if missing.is_empty() {
            SchemaStatus::Ready
        } else {
            SchemaStatus::Missing(missing)
        })
    }

    /// One trivial statement: whether the database answers now.
    pub async fn ping(&self) -> Result<(), MetaError> {
        self.execute("ping", "SELECT 1", &[]).await.map(|_| ())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    // ---- Query plumbing ------------------------------------------------------------------------------------

    /// Runs a statement and returns the number of rows it touched.
    async fn execute(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<u64, MetaError> {
        self.bounded(op, async {
            on_pool!(&self.pool, |p| bind_all!(sqlx::query(sql), args)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))
        })
        .await?
        .map_err(query_error(op))
    }

    /// Fails `work` with `Timeout` once it takes longer than the statement timeout.
    async fn bounded<T>(
        &self,
        op: &'static str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, MetaError> {
        tokio::time::timeout(self.statement_timeout, work)
            .await
            .map_err(|_| MetaError::Timeout {
                op,
                after: self.statement_timeout,
            })
    }

    /// Runs one statement on its own and returns the number of rows it touched.
    async fn run(&self, statement: &Statement<'_>) -> Result<u64, MetaError> {
        self.execute(statement.op, &statement.sql, &statement.args)
            .await
    }

    /// Runs a query and decodes every row as `R`.
    async fn fetch<R>(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<R>, MetaError>
    where
        R: for<'r> FromRow<'r, MySqlRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.bounded(op, async {
            on_pool!(&self.pool, |p| bind_all!(sqlx::query_as::<_, R>(sql), args)
                .fetch_all(p)
                .await)
        })
        .await?
        .map_err(query_error(op))
    }

    /// Runs `statements` in one transaction: all of them take effect or none does. A statement with an
    /// `expect`ed row count that touches another number of rows rolls everything back as a `Conflict`.
    /// Returns each statement's (rows touched, generated key — 0 unless the statement is an `insert`).
    async fn transaction(
        &self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<(u64, i64)>, MetaError> {
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(query_error("begin transaction"))?;
            let mut results = Vec::with_capacity(statements.len());
            let mut outcome = Ok(());
            for s in statements {
                let result = self
                    .bounded(
                        s.op,
                        bind_all!(sqlx::query(&s.sql), &s.args).execute(&mut *tx),
                    )
                    .await
                    .and_then(|r| r.map_err(query_error(s.op)));
                match result {
                    Ok(r) if s.expect.is_some_and(|n| r.rows_affected() != n) => {
                        outcome = Err(MetaError::Conflict(format!(
                            "{}: {} of {} rows were in the expected state",
                            s.op,
                            r.rows_affected(),
                            s.expect.unwrap_or_default()
                        )));
                        break;
                    }
                    Ok(r) => {
                        let id = if s.insert { r.inserted_id() } else { 0 };
                        results.push((r.rows_affected(), id));
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            match outcome {
                Ok(()) => tx
                    .commit()
                    .await
                    .map(|_| results)
                    .map_err(query_error("commit transaction")),
                Err(e) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::warn!(error = %rollback, "metadata rollback failed; the connection discards the transaction");
                    }
                    Err(e)
                }
            }
        })
    }

    /// Applies a set of file-row changes atomically (one transaction): the metadata side of a flush, a
    /// merge, a compaction, an index build or an index change. Returns the created rows, in order.
    pub async fn commit_files(&self, changes: &FileChanges) -> Result<Vec<FileRow>, MetaError> {
        let mut statements = Vec::new();
        if let Some(index) = &changes.collection_index {
            statements.push(update_index_statement(
                &index.collection,
                index.engine_type,
                &index.index_params,
            ));
        }
        for r in &changes.retype {
            statements.extend(retype_statement(r));
        }
        statements.extend(changes.update.iter().map(update_file_statement));
        statements.extend(changes.create.iter().map(create_file_statement));
        if let Some((table_id, lsn)) = &changes.flush_lsn {
            statements.push(flush_lsn_statement(table_id, *lsn));
        }
        let ids = self
            .transaction(&statements)
            .await?
            .into_iter()
            .zip(&statements)
            .filter(|(_, s)| s.insert)
            .map(|((_, id), _)| id);
        Ok(changes
            .create
            .iter()
            .zip(ids)
            .map(|(file, id)| created_row(file, id))
            .collect())
    }

    // ---- Tables --------------------------------------------------------------------------------------------

    /// Inserts a collection or partition row. A name that exists already (in any state) is `AlreadyExists`.
    pub async fn create_table(&self, table: &NewTable) -> Result<TableRow, MetaError> {
        let sql = "INSERT INTO Tables (table_id, state, dimension, created_on, flag, index_file_size, engine_type, \
                   index_params, metric_type, owner_table, partition_tag, version, flush_lsn) \
                   VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)";
        let args = [
            Arg::Text(&table.table_id),
            Arg::Int(TableState::Normal.code().into()),
            Arg::Int(table.dimension),
            Arg::Int(table.created_on),
            Arg::Int(table.index_file_size),
            Arg::Int(table.engine_type.code().into()),
            Arg::Text(&table.index_params),
            Arg::Int(table.metric_type.code().into()),
            Arg::Text(&table.owner_table),
            Arg::Text(&table.partition_tag),
            Arg::Text(SCHEMA_VERSION),
            Arg::Int(table.flush_lsn),
        ];
        match self.execute("create table", sql, &args).await {
            Ok(_) => {}
            Err(MetaError::Query {
                source: sqlx::Error::Database(db),
                ..
            }) if db.is_unique_violation() => {
                return Err(MetaError::AlreadyExists(table.table_id.clone()));
            }
            Err(other) => return Err(other),
        }
        self.table(&table.table_id)
            .await?
            .ok_or_else(|| MetaError::NotFound(table.table_id.clone()))
    }

    /// The row named `table_id`, in any state.
    pub async fn table(&self, table_id: &str) -> Result<Option<TableRow>, MetaError> {
        let sql = format!("SELECT {TABLE_COLUMNS} FROM Tables WHERE table_id = ?");
        Ok(self
            .fetch("read table", &sql, &[Arg::Text(table_id)])
            .await?
            .into_iter()
            .next())
    }

    /// Every row of `Tables`, collections and partitions, in any state, ordered by id.
    pub async fn all_tables(&self) -> Result<Vec<TableRow>, MetaError> {
        self.fetch(
            "list tables",
            &format!("SELECT {TABLE_COLUMNS} FROM Tables ORDER BY id"),
            &[],
        )
        .await
    }

    /// Live collections (not partitions), ordered by name.
    pub async fn collections(&self) -> Result<Vec<TableRow>, MetaError> {
        let sql = format!(
            "SELECT {TABLE_COLUMNS} FROM Tables WHERE owner_table = '' AND state = ? ORDER BY table_id"
        );
        self.fetch(
            "list collections",
            &sql,
            &[Arg::Int(TableState::Normal.code().into())],
        )
        .await
    }

    /// A live collection and its live partitions (ordered by id, i.e. creation), or `None`.
    pub async fn collection_with_partitions(
        &self,
        name: &str,
    ) -> Result<Option<CollectionTables>, MetaError> {
        let sql = format!(
            "SELECT {TABLE_COLUMNS} FROM Tables WHERE state = ? AND \
             ((table_id = ? AND owner_table = '') OR owner_table = ?) ORDER BY id"
        );
        let args = [
            Arg::Int(TableState::Normal.code().into()),
            Arg::Text(name),
            Arg::Text(name),
        ];
        let rows: Vec<TableRow> = self.fetch("read collection", &sql, &args).await?;
        let (collections, partitions): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| !r.is_partition());
        Ok(collections
            .into_iter()
            .next()
            .map(|collection| CollectionTables {
                collection,
                partitions,
            }))
    }

    /// Marks a collection and all its partitions TO_DELETE, and their files too. Returns whether the
    /// collection existed.
    pub async fn mark_collection_deleted(
        &self,
        name: &str,
        now_us: i64,
    ) -> Result<bool, MetaError> {
        let files = "UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE table_id IN \
                     (SELECT table_id FROM Tables WHERE table_id = ? OR owner_table = ?)";
        let tables = "UPDATE Tables SET state = ? WHERE table_id = ? OR owner_table = ?";
        let done = self
            .transaction(&[
                Statement::new(
                    "mark collection files deleted",
                    files,
                    vec![
                        Arg::Int(FileType::ToDelete.code().into()),
                        Arg::Int(now_us),
                        Arg::Text(name),
                        Arg::Text(name),
                    ],
                ),
                Statement::new(
                    "mark collection deleted",
                    tables,
                    vec![
                        Arg::Int(TableState::ToDelete.code().into()),
                        Arg::Text(name),
                        Arg::Text(name),
                    ],
                ),
            ])
            .await?;
        Ok(done.get(1).is_some_and(|(rows, _)| *rows > 0))
    }

    /// Marks one table row (typically a partition) and its files TO_DELETE. Returns whether it existed.
    pub async fn mark_table_deleted(&self, table_id: &str, now_us: i64) -> Result<bool, MetaError> {
        let done = self
            .transaction(&[
                Statement::new(
                    "mark table files deleted",
                    "UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE table_id = ?",
                    vec![
                        Arg::Int(FileType::ToDelete.code().into()),
                        Arg::Int(now_us),
                        Arg::Text(table_id),
                    ],
                ),
                Statement::new(
                    "mark table deleted",
                    "UPDATE Tables SET state = ? WHERE table_id = ?",
                    vec![
                        Arg::Int(TableState::ToDelete.code().into()),
                        Arg::Text(table_id),
                    ],
                ),
            ])
            .await?;
        Ok(done.get(1).is_some_and(|(rows, _)| *rows > 0))
    }

    /// Removes `Tables` rows for good (after their files are gone from disk).
    pub async fn delete_tables(&self, table_ids: &[String]) -> Result<(), MetaError> {
        if table_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM Tables WHERE table_id IN ({})",
            placeholders(table_ids.len())
        );
        self.execute("delete tables", &sql, &texts(table_ids))
            .await
            .map(drop)
    }

    /// Sets the index of a collection and its partitions (`engine_type`, `index_params` JSON).
    pub async fn update_collection_index(
        &self,
        name: &str,
        engine_type: EngineType,
        index_params: &str,
    ) -> Result<(), MetaError> {
        self.run(&update_index_statement(name, engine_type, index_params))
            .await
            .map(drop)
    }

    /// Sets `Tables.flag` (Milvus keeps a collection's id mode there: auto or user-given ids).
    pub async fn update_table_flag(&self, table_id: &str, flag: i64) -> Result<(), MetaError> {
        let args = [Arg::Int(flag), Arg::Text(table_id)];
        self.execute(
            "update flag",
            "UPDATE Tables SET flag = ? WHERE table_id = ?",
            &args,
        )
        .await
        .map(drop)
    }

    /// Records the last log sequence number flushed for a table.
    pub async fn update_table_flush_lsn(
        &self,
        table_id: &str,
        flush_lsn: i64,
    ) -> Result<(), MetaError> {
        self.run(&flush_lsn_statement(table_id, flush_lsn))
            .await
            .map(drop)
    }

    // ---- TableFiles ----------------------------------------------------------------------------------------

    /// Inserts a file row and returns it with its database-assigned id.
    pub async fn create_file(&self, file: &NewFile) -> Result<FileRow, MetaError> {
        let statement = create_file_statement(file);
        // The two backends name the generated key differently, so this one insert is not `execute`.
        let id = on_pool!(&self.pool, |p| bind_all!(
            sqlx::query(&statement.sql),
            &statement.args
        )
        .execute(p)
        .await
        .map(|r| r.inserted_id()))
        .map_err(query_error(statement.op))?;
        Ok(created_row(file, id))
    }

    /// Writes back the mutable columns of a file row.
    pub async fn update_file(&self, file: &FileRow) -> Result<(), MetaError> {
        self.run(&update_file_statement(file)).await.map(drop)
    }

    /// Sets the type of the given files and stamps their `updated_time`.
    pub async fn set_files_type(
        &self,
        ids: &[i64],
        file_type: FileType,
        now_us: i64,
    ) -> Result<(), MetaError> {
        let retype = Retype::any(ids, file_type, now_us);
        match retype_statement(&retype) {
            Some(statement) => self.run(&statement).await.map(drop),
            None => Ok(()),
        }
    }

    /// Stamps `updated_time` on files whose content changed in place (new delete marks), so readers reload.
    pub async fn touch_files(&self, ids: &[i64], now_us: i64) -> Result<(), MetaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE TableFiles SET updated_time = ? WHERE id IN ({})",
            placeholders(ids.len())
        );
        let args: Vec<Arg> = std::iter::once(Arg::Int(now_us)).chain(ints(ids)).collect();
        self.execute("touch files", &sql, &args).await.map(drop)
    }

    /// Removes file rows for good (after the files are gone from disk).
    pub async fn delete_files(&self, ids: &[i64]) -> Result<(), MetaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM TableFiles WHERE id IN ({})",
            placeholders(ids.len())
        );
        self.execute("delete files", &sql, &ints(ids).collect::<Vec<_>>())
            .await
            .map(drop)
    }

    /// File rows by id, ordered by id; ids that do not exist are simply absent.
    pub async fn files_by_ids(&self, ids: &[i64]) -> Result<Vec<FileRow>, MetaError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE id IN ({}) ORDER BY id",
            placeholders(ids.len())
        );
        self.fetch("read files", &sql, &ints(ids).collect::<Vec<_>>())
            .await
    }

    /// Files of the given tables whose type is one of `types`, ordered by id.
    pub async fn files_of_tables(
        &self,
        table_ids: &[String],
        types: &[FileType],
    ) -> Result<Vec<FileRow>, MetaError> {
        if table_ids.is_empty() || types.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE table_id IN ({}) AND file_type IN ({}) ORDER BY id",
            placeholders(table_ids.len()),
            placeholders(types.len())
        );
        let mut args = texts(table_ids);
        args.extend(types.iter().map(|t| Arg::Int(t.code().into())));
        self.fetch("list files", &sql, &args).await
    }

    /// Files of any table whose type is one of `types`, ordered by id.
    pub async fn files_by_type(&self, types: &[FileType]) -> Result<Vec<FileRow>, MetaError> {
        if types.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM TableFiles WHERE file_type IN ({}) ORDER BY id",
            placeholders(types.len())
        );
        let args: Vec<Arg> = types.iter().map(|t| Arg::Int(t.code().into())).collect();
        self.fetch("list files by type", &sql, &args).await
    }

    /// The searchable files (RAW, TO_INDEX, INDEX) of the given tables, skipping tables marked TO_DELETE.
    pub async fn searchable_files(&self, table_ids: &[String]) -> Result<Vec<FileRow>, MetaError> {
        if table_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.searchable_files_where(Some(table_ids)).await
    }

    /// Every searchable file of every live table: what the gateway's metadata snapshot holds.
    pub async fn all_searchable_files(&self) -> Result<Vec<FileRow>, MetaError> {
        self.searchable_files_where(None).await
    }

    async fn searchable_files_where(
        &self,
        table_ids: Option<&[String]>,
    ) -> Result<Vec<FileRow>, MetaError> {
        let columns = FILE_COLUMNS
            .split(", ")
            .map(|c| format!("f.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let table_filter = match table_ids {
            Some(ids) => format!(" AND f.table_id IN ({})", placeholders(ids.len())),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {columns} FROM TableFiles f JOIN Tables t ON t.table_id = f.table_id \
             WHERE t.state = ? AND f.file_type IN (?, ?, ?){table_filter} ORDER BY f.id"
        );
        let mut args = vec![Arg::Int(TableState::Normal.code().into())];
        args.extend(
            FileType::SEARCHABLE
                .iter()
                .map(|t| Arg::Int(t.code().into())),
        );
        args.extend(texts(table_ids.unwrap_or_default()));
        self.fetch("list searchable files", &sql, &args).await
    }

    // ---- Environment ---------------------------------------------------------------------------------------

    /// The global log sequence number, or `None` before the first write.
    pub async fn global_lsn(&self) -> Result<Option<i64>, MetaError> {
        let rows: Vec<(i64,)> = self
            .fetch("read global lsn", "SELECT global_lsn FROM Environment", &[])
            .await?;
        Ok(rows.first().map(|(lsn,)| *lsn))
    }

    pub async fn set_global_lsn(&self, lsn: i64) -> Result<(), MetaError> {
        let sql = if self.global_lsn().await?.is_some() {
            "UPDATE Environment SET global_lsn = ?"
        } else {
            "INSERT INTO Environment (global_lsn) VALUES (?)"
        };
        self.execute("write global lsn", sql, &[Arg::Int(lsn)])
            .await
            .map(drop)
    }
}

/// File-row changes that must land together: `MetaStore::commit_files` applies them in one transaction,
/// so a crash or an error between them never leaves half of a flush, merge, compaction or index build
/// in the metadata (duplicate rows, or rows flushed but still replayed from the log).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileChanges {
    /// A collection's (and its partitions') new index.
    pub collection_index: Option<CollectionIndex>,
    /// Files that change type.
    pub retype: Vec<Retype>,
    /// File rows whose mutable columns are written back.
    pub update: Vec<FileRow>,
    /// File rows to create.
    pub create: Vec<NewFile>,
    /// `Tables.flush_lsn` to record: (table_id, lsn).
    pub flush_lsn: Option<(String, i64)>,
}

/// The index of a collection and its partitions (`Tables.engine_type`, `Tables.index_params`).
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionIndex {
    pub collection: String,
    pub engine_type: EngineType,
    pub index_params: String,
}

/// Files whose type changes (and whose `updated_time` is stamped).
#[derive(Debug, Clone, PartialEq)]
pub struct Retype {
    pub ids: Vec<i64>,
    pub to: FileType,
    pub now_us: i64,
    /// The types the files must have now (empty: any). When one of them has another type (another change
    /// got there first) nothing of the transaction is kept: `MetaError::Conflict`.
    pub from: Vec<FileType>,
}

impl Retype {
    /// Retypes the files whatever their type.
    pub fn any(ids: &[i64], to: FileType, now_us: i64) -> Self {
        Retype {
            ids: ids.to_vec(),
            to,
            now_us,
            from: Vec::new(),
        }
    }

    /// Retypes the files, all of which must have one of the types `from`.
    pub fn expecting(ids: &[i64], from: &[FileType], to: FileType, now_us: i64) -> Self {
        Retype {
            ids: ids.to_vec(),
            to,
            now_us,
            from: from.to_vec(),
        }
    }
}

/// One SQL statement with its arguments, run alone or inside a transaction.
struct Statement<'a> {
    op: &'static str,
    sql: String,
    args: Vec<Arg<'a>>,
    /// The generated key is wanted (an INSERT).
    insert: bool,
    /// The number of rows it must touch, or the transaction is rolled back.
    expect: Option<u64>,
}

impl<'a> Statement<'a> {
    fn new(op: &'static str, sql: impl Into<String>, args: Vec<Arg<'a>>) -> Self {
        Statement {
            op,
            sql: sql.into(),
            args,
            insert: false,
            expect: None,
        }
    }
}

/// The key a backend generated for an INSERT.
trait InsertedId {
    fn inserted_id(&self) -> i64;
}

impl InsertedId for MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_id() as i64
    }
}

impl InsertedId for SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

fn update_index_statement<'a>(
    name: &'a str,
    engine_type: EngineType,
    index_params: &'a str,
) -> Statement<'a> {
    Statement::new(
        "update index",
        "UPDATE Tables SET engine_type = ?, index_params = ? WHERE table_id = ? OR owner_table = ?",
        vec![
            Arg::Int(engine_type.code().into()),
            Arg::Text(index_params),
            Arg::Text(name),
            Arg::Text(name),
        ],
    )
}

fn flush_lsn_statement(table_id: &str, flush_lsn: i64) -> Statement<'_> {
    Statement::new(
        "update flush lsn",
        "UPDATE Tables SET flush_lsn = ? WHERE table_id = ?",
        vec![Arg::Int(flush_lsn), Arg::Text(table_id)],
    )
}

fn create_file_statement(file: &NewFile) -> Statement<'_> {
    Statement {
        insert: true,
        ..Statement::new(
            "create file",
            "INSERT INTO TableFiles (table_id, segment_id, engine_type, file_id, file_type, file_size, \
             row_count, updated_time, created_on, date, flush_lsn) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, -1, ?)",
            vec![
                Arg::Text(&file.table_id),
                Arg::Text(&file.segment_id),
                Arg::Int(file.engine_type.code().into()),
                Arg::Text(&file.file_id),
                Arg::Int(file.file_type.code().into()),
                Arg::Int(file.file_size),
                Arg::Int(file.row_count),
                Arg::Int(file.now_us),
                Arg::Int(file.now_us),
                Arg::Int(file.flush_lsn),
            ],
        )
    }
}

fn created_row(file: &NewFile, id: i64) -> FileRow {
    FileRow {
        id,
        table_id: file.table_id.clone(),
        segment_id: file.segment_id.clone(),
        engine_type: file.engine_type,
        file_id: file.file_id.clone(),
        file_type: file.file_type,
        file_size: file.file_size,
        row_count: file.row_count,
        updated_time: file.now_us,
        created_on: file.now_us,
        date: -1,
        flush_lsn: file.flush_lsn,
    }
}

fn update_file_statement(file: &FileRow) -> Statement<'_> {
    Statement::new(
        "update file",
        "UPDATE TableFiles SET segment_id = ?, engine_type = ?, file_id = ?, file_type = ?, file_size = ?, \
         row_count = ?, updated_time = ?, flush_lsn = ? WHERE id = ?",
        vec![
            Arg::Text(&file.segment_id),
            Arg::Int(file.engine_type.code().into()),
            Arg::Text(&file.file_id),
            Arg::Int(file.file_type.code().into()),
            Arg::Int(file.file_size),
            Arg::Int(file.row_count),
            Arg::Int(file.updated_time),
            Arg::Int(file.flush_lsn),
            Arg::Int(file.id),
        ],
    )
}

/// `None` when there is no file to retype.
fn retype_statement(r: &Retype) -> Option<Statement<'static>> {
    let mut ids = r.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return None;
    }
    let mut sql = format!(
        "UPDATE TableFiles SET file_type = ?, updated_time = ? WHERE id IN ({})",
        placeholders(ids.len())
    );
    let mut args: Vec<Arg> = vec![Arg::Int(r.to.code().into()), Arg::Int(r.now_us)];
    args.extend(ids.iter().map(|id| Arg::Int(*id)));
    if !r.from.is_empty() {
        sql.push_str(&format!(
            " AND file_type IN ({})",
            placeholders(r.from.len())
        ));
        args.extend(r.from.iter().map(|t| Arg::Int(t.code().into())));
    }
    Some(Statement {
        expect: (!r.from.is_empty()).then_some(ids.len() as u64),
        ..Statement::new("set file type", sql, args)
    })
}

/// A value bound to a `?` placeholder: every Milvus column is an integer or text.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

fn ints(values: &[i64]) -> impl Iterator<Item = Arg<'static>> + '_ {
    values.iter().map(|v| Arg::Int(*v))
}

fn texts(values: &[String]) -> Vec<Arg<'_>> {
    values.iter().map(|v| Arg::Text(v)).collect()
}
