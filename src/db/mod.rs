//! The database: one `AnyPool` over SQLite (embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are written once in the dialects' common subset (`$1` placeholders, text ids, integer
//! unix-millisecond times, JSON as text). What truly differs lives here, one function per concern:
//! connection set-up, migrations, the per-license write lock, and cross-instance notifications.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Transaction};

mod claim;
mod decode;
pub use decode::Flag;
pub mod list;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A cheap, cloneable handle to the pool.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    /// Where write transactions run. SQLite has one writer at a time: a pool of one connection
    /// queues writers in the process, first come first served, instead of letting them race for
    /// the file lock and sleep in SQLite's busy handler (which made activation p99 ~150 ms under
    /// load). PostgreSQL: the same pool as reads.
    writer: AnyPool,
    pub backend: Backend,
    /// Kept for the PostgreSQL `LISTEN` connection, which lives outside the pool.
    url: String,
}

pub type Tx = Transaction<'static, Any>;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel on which license changes are announced to every instance (PostgreSQL).
pub const LICENSE_CHANNEL: &str = "ecosire_license_changed";

/// How long the start waits for PostgreSQL to answer before giving up with the cause.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The default of `ECOSIRE_DB_ACQUIRE_TIMEOUT_S`: how long a request waits for a PostgreSQL
/// connection. While the database is down the pool keeps retrying refused connections for this
/// long, so it is also how long a request takes to fail with 503 `DATABASE_UNAVAILABLE`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `application_name` prefix of the `LISTEN` connection (`ecosire-listen/<pid>`), so an
/// operator can find each instance's listener in `pg_stat_activity`.
pub const LISTEN_APPLICATION_NAME: &str = "ecosire-listen";

/// A database error as the cause of a one-line message: the server's own message once (sqlx's
/// `Display` repeats it through `source()` and PostgreSQL's adds a source-code line), an I/O
/// error as "connection refused".
pub fn error_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) => crate::fsutil::io_cause(io),
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        sqlx::Error::Configuration(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// When SQLite last reported a fault of its file (read-only, I/O error, full, cannot open), in
/// unix ms: pooled connections opened before it are not reused (see `Db::connect_with`).
static SQLITE_FAULT_AT_MS: AtomicI64 = AtomicI64::new(i64::MIN);

/// When `e` means the database cannot serve at all right now (not a bug in a query): the
/// connection is refused or lost, the pool found none in time, the server is shutting down, the
/// disk is full, the file is read-only or failing. Answers the cause for the log. Such errors
/// become 503 `DATABASE_UNAVAILABLE`; every other database error stays a 500.
pub fn unavailable_cause(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(io) => Some(crate::fsutil::io_cause(io)),
        sqlx::Error::Tls(t) => Some(format!("TLS: {t}")),
        sqlx::Error::PoolTimedOut => Some("no database connection available in time".into()),
        sqlx::Error::PoolClosed => Some("the connection pool is closed".into()),
        sqlx::Error::WorkerCrashed => Some("the SQLite worker thread stopped".into()),
        sqlx::Error::Protocol(p) => Some(format!("protocol: {p}")),
        sqlx::Error::Database(d) => {
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Primary result codes (the low byte of the extended code).
                let code = d.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                if matches!(code & 0xff, 8 | 10 | 13 | 14) {
                    SQLITE_FAULT_AT_MS.fetch_max(crate::timestamp::now_ms(), Ordering::Relaxed);
                }
                let what = match code & 0xff {
                    5 | 6 => "the database is locked",
                    8 => "the database is read-only",
                    10 => "disk I/O error",
                    13 => "the disk is full",
                    14 => "cannot open the database file",
                    _ => return None,
                };
                return Some(if d.message() == what {
                    what.to_string()
                } else {
                    format!("{what} ({})", d.message())
                });
            }
            // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources
            // (disk full, out of memory, too many connections), 57P01-57P03 shutdown / not
            // accepting connections, 25006 a read-only (standby) server.
            let state = d.code()?;
            (state.starts_with("08")
                || state.starts_with("53")
                || matches!(&*state, "57P01" | "57P02" | "57P03" | "25006"))
            .then(|| format!("{} (SQLSTATE {state})", d.message()))
        }
        _ => None,
    }
}

impl Db {
    /// Connects and checks the connection. Every error is one line naming `DATABASE_URL`, the
    /// database as the user wrote it (password hidden) and the cause; an unreachable PostgreSQL
    /// is reported within a few seconds.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        Self::connect_with(url, DEFAULT_ACQUIRE_TIMEOUT, 16).await
    }

    /// `connect`, waiting at most `acquire_timeout` for a PostgreSQL connection per request.
    pub async fn connect_with(
        url: &str,
        acquire_timeout: Duration,
        max_connections: u32,
    ) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let target = match backend {
            Backend::Sqlite => format!("open SQLite database {}", prepare_sqlite(url)?.display()),
            Backend::Postgres => format!("connect to {}", crate::config::redact_url(url)),
        };
        let fail = |cause: String| anyhow::anyhow!("DATABASE_URL: cannot {target}: {cause}");
        let options = AnyConnectOptions::from_str(url).map_err(|e| {
            anyhow::anyhow!(
                "DATABASE_URL: not a valid database URL ({})",
                error_cause(&e)
            )
        })?;
        let sqlite_pool = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // WAL lets readers run beside the single writer; NORMAL is durable
                        // across process crashes in WAL mode; the busy timeout queues writers.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA busy_timeout=15000; PRAGMA foreign_keys=ON;",
                        )
                        .execute(conn)
                        .await?;
                        Ok(())
                    })
                })
                // When a COMMIT fails on a full disk or a read-only file, SQLite rolls the
                // transaction back by itself and sqlx's rollback on drop then fails, so the
                // connection would believe forever that it is inside a transaction (and
                // refuse every `BEGIN`): such a connection is closed instead of reused. So is
                // one opened before SQLite last reported a fault of the file: one opened
                // while the file could not be written stays read-only for good.
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        let opened_ms = crate::timestamp::now_ms()
                            - i64::try_from(meta.age.as_millis()).unwrap_or(i64::MAX);
                        Ok(!conn.is_in_transaction()
                            && opened_ms > SQLITE_FAULT_AT_MS.load(Ordering::Relaxed))
                    })
                })
                .connect_with(options.clone())
        };
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                let pool = sqlite_pool(8).await.map_err(|e| fail(error_cause(&e)))?;
                let writer = sqlite_pool(1).await.map_err(|e| fail(error_cause(&e)))?;
                (pool, writer)
            }
            Backend::Postgres => {
                // The pool retries a refused connection until its acquire timeout and then
                // reports only "pool timed out": one direct attempt first gives the real cause.
                match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
                    Err(_) => {
                        return Err(fail(format!(
                            "no answer within {} s",
                            CONNECT_TIMEOUT.as_secs()
                        )));
                    }
                    Ok(Err(e)) => return Err(fail(error_cause(&e))),
                    Ok(Ok(probe)) => {
                        let _ = probe.close().await;
                    }
                }
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(|e| fail(error_cause(&e)))?;
                (pool.clone(), pool)
            }
        };
        Ok(Db {
            pool,
            writer,
            backend,
            url: url.to_string(),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&self.pool).await.map_err(|e| {
            use sqlx::migrate::MigrateError;
            let cause = match &e {
                MigrateError::Execute(e) => error_cause(e),
                MigrateError::ExecuteMigration(e, version) => {
                    format!("migration {version}: {}", error_cause(e))
                }
                other => other.to_string(),
            };
            anyhow::anyhow!("cannot migrate the database schema: {cause}")
        })
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads first and writes later can fail to upgrade its lock.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// What a `SELECT` appends to lock the rows it reads until commit, so checks and writes
    /// cannot interleave: `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write
    /// transaction (`begin`: `BEGIN IMMEDIATE`) already holds the database-wide write lock.
    pub fn row_lock(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Tells other instances, when `tx` commits, that a license changed (PostgreSQL sends a
    /// `NOTIFY` made inside a transaction at its commit, and never for a rollback); nothing on
    /// SQLite, where one process owns the file.
    pub async fn notify_license_changed_in(
        &self,
        tx: &mut Tx,
        key_digest: &str,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(LICENSE_CHANNEL)
                .bind(key_digest)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Tells other instances that a license changed (PostgreSQL `NOTIFY`; nothing on SQLite,
    /// where one process owns the file).
    pub async fn notify_license_changed(&self, key_digest: &str) {
        if self.backend == Backend::Postgres {
            let res = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(LICENSE_CHANNEL)
                .bind(key_digest)
                .execute(&self.pool)
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "could not NOTIFY a license change; other instances rely on the cache TTL");
            }
        }
    }

    /// A `LISTEN` connection for license changes (PostgreSQL only), named
    /// `ecosire-listen/<pid>` in `pg_stat_activity`. It does not reconnect by itself: after
    /// `try_recv` answers `Ok(None)` (connection lost) the caller drops it and connects anew, so it
    /// always knows that notifications may have been missed.
    pub async fn listen_license_changes(
        &self,
    ) -> Result<Option<sqlx::postgres::PgListener>, sqlx::Error> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)?
            .application_name(&format!("{LISTEN_APPLICATION_NAME}/{}", std::process::id()));
        // A pool of one, as `PgListener::connect` makes, but failing within seconds while the
        // database is down instead of retrying for half a minute.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options);
        let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
        l.ignore_pool_close_event(true);
        l.eager_reconnect(false);
        l.listen(LICENSE_CHANNEL).await?;
        Ok(Some(l))
    }

    /// A consistent copy of a SQLite database in the new file `to` (0600), taken online with
    /// `VACUUM INTO`: it reads one snapshot (WAL lets the server keep writing meanwhile) and
    /// writes a compact database that opens on its own, without `-wal` or `-shm` files.
    pub async fn backup_sqlite(&self, to: &std::path::Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.backend == Backend::Sqlite,
            "an online file copy is for SQLite only"
        );
        // SQLite writes into an empty file it is given, so the copy is private from the start.
        anyhow::ensure!(
            crate::fsutil::create_private_file(to)?,
            "{} already exists",
            to.display()
        );
        let target = to
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not valid UTF-8", to.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot copy the database: {}", error_cause(&e)))?;
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        self.check().await.is_ok()
    }

    /// Readiness: `Ok` when the database answers, else the cause. On PostgreSQL the pool gets
    /// one second (while the database is down it only retries refused connections, and then
    /// reports a bare timeout), then one direct connection attempt decides and names the cause;
    /// a busy pool in front of a database that answers is ready.
    pub async fn check(&self) -> Result<(), String> {
        let wait = match self.backend {
            Backend::Postgres => Duration::from_secs(1),
            Backend::Sqlite => CONNECT_TIMEOUT,
        };
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        let err = match tokio::time::timeout(wait, ping).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => sqlx::Error::PoolTimedOut,
        };
        if matches!(err, sqlx::Error::PoolTimedOut) && self.backend == Backend::Postgres {
            let options = AnyConnectOptions::from_str(&self.url).map_err(|e| error_cause(&e))?;
            return match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
                Err(_) => Err(format!(
                    "PostgreSQL does not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(error_cause(&e)),
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                    Ok(())
                }
            };
        }
        Err(unavailable_cause(&err).unwrap_or_else(|| error_cause(&err)))
    }
}

/// Readies the SQLite file a URL names and returns its path: creates its folder (0700) and the
/// file itself (0600) when the URL lets SQLite create it, so the database and its `-wal`/`-shm`
/// (which SQLite creates with the database file's mode) are never readable by others; an
/// existing file that is gets restricted, with a warning.
fn prepare_sqlite(url: &str) -> anyhow::Result<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).map_err(|e| {
        anyhow::anyhow!("DATABASE_URL: not a valid SQLite URL ({})", error_cause(&e))
    })?;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mode = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned());
    let path = options.get_filename().to_path_buf();
    if path.as_os_str().is_empty()
        // sqlx's name for `:memory:`
        || path.to_string_lossy().starts_with("file:sqlx-in-memory")
        || mode.as_deref() == Some("memory")
    {
        anyhow::bail!("DATABASE_URL: an in-memory SQLite database is not supported; name a file");
    }
    let fail = |e: anyhow::Error| anyhow::anyhow!("DATABASE_URL: {e:#}");
    // Without `mode`, sqlx opens an existing file only; we create it, with our permissions.
    if matches!(mode.as_deref(), None | Some("rwc")) {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::fsutil::create_private_dir(dir).map_err(fail)?;
        }
        crate::fsutil::create_private_file(&path).map_err(fail)?;
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            anyhow::bail!(
                "DATABASE_URL: {} is a folder, not a database file",
                path.display()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "DATABASE_URL: {} does not exist (and mode={} does not create it)",
            path.display(),
            mode.as_deref().unwrap_or_default()
        ),
        _ => {}
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let file = PathBuf::from(file);
        if let Some(old) = crate::fsutil::make_private(&file).map_err(fail)? {
            tracing::warn!(
                file = %file.display(),
                "the database file was readable by others (mode {old:o}); restricted it to its owner"
            );
        }
    }
    Ok(path)
}

/// `($1, $2, …), (…), …`: the `VALUES` list of a multi-row insert of `rows` rows of `cols`
/// columns, numbered as both backends accept (sqlx's `QueryBuilder` over `Any` writes `?`, which
/// PostgreSQL refuses).
pub fn values_list(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// Builds `WHERE` clauses with numbered placeholders that both backends accept.
#[derive(Default)]
pub struct Filters {
    clauses: Vec<String>,
    pub args: Vec<String>,
}

impl Filters {
    /// Adds `<column> <op> $n` bound to `value` (a text value; all our ids are text).
    pub fn push(&mut self, column: &'static str, op: &'static str, value: impl Into<String>) {
        self.args.push(value.into());
        self.clauses
            .push(format!("{column} {op} ${}", self.args.len()));
    }
    /// Adds a clause in which `$?` stands for the next placeholder number (used once).
    pub fn push_raw(&mut self, clause: &'static str, value: impl Into<String>) {
        self.args.push(value.into());
        self.clauses
            .push(clause.replace("$?", &format!("${}", self.args.len())));
    }
    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
    pub fn next_placeholder(&self) -> usize {
        self.args.len() + 1
    }
}
