//! The database: one `AnyPool` over SQLite (embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are written once in the dialects' common subset (`$1` placeholders, text ids, integer
//! unix-millisecond times, JSON as text). What truly differs lives here, one function per concern:
//! connection set-up, migrations, the per-license write lock, and cross-instance notifications.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};

mod claim;
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
    pub backend: Backend,
    /// Kept for the PostgreSQL `LISTEN` connection, which lives outside the pool.
    url: String,
}

pub type Tx = Transaction<'static, Any>;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel on which license changes are announced to every instance (PostgreSQL).
pub const LICENSE_CHANNEL: &str = "ecosire_license_changed";

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options =
            AnyConnectOptions::from_str(&url).context("DATABASE_URL: not a valid database URL")?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
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
                    .connect_with(options)
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
            }
        }
        .with_context(|| {
            format!(
                "DATABASE_URL: cannot connect to {}",
                crate::config::redact_url(&url)
            )
        })?;
        Ok(Db { pool, backend, url })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator
            .run(&self.pool)
            .await
            .context("running database migrations")?;
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads first and writes later can fail to upgrade its lock.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Opens a transaction that holds the write lock of one license until commit, so seat checks
    /// and inserts cannot interleave: SQLite takes its (database-wide) write lock up front with
    /// `BEGIN IMMEDIATE`; PostgreSQL locks the license row.
    pub async fn begin_license_write(&self, license_id: &str) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.begin().await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT id FROM licenses WHERE id = $1 FOR UPDATE")
                    .bind(license_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
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

    /// A `LISTEN` connection for license changes (PostgreSQL only).
    pub async fn listen_license_changes(
        &self,
    ) -> anyhow::Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(LICENSE_CHANNEL).await?;
        Ok(Some(l))
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Creates the SQLite file's folder and asks for the file to be created when missing.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!("DATABASE_URL: an in-memory SQLite database is not supported; name a file");
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("DATABASE_URL: cannot create folder {}", dir.display()))?;
    }
    let mode = if query.contains("mode=") {
        String::new()
    } else {
        "mode=rwc".to_string()
    };
    let q = [query, mode.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("&");
    Ok(format!("sqlite://{path}?{q}"))
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
