//! Connecting to SQLite or PostgreSQL through sqlx's `Any` driver, and serialising writers.

use crate::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store over one database. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    url: String,
    /// Writers: one connection for SQLite; the shared pool for PostgreSQL.
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    pub(crate) backend: Backend,
    /// Rows a bulk enrolment wrote since this store opened, and the count at which PostgreSQL's
    /// statistics are next refreshed (see [`SqlStore::refresh_statistics`]).
    bulk_rows: Arc<AtomicU64>,
    next_analyze: Arc<AtomicU64>,
    /// SQLite only: checkpoints the write-ahead log in the background until the last clone drops.
    checkpointer: Option<Arc<crate::wal::Checkpointer>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// Bulk-enrolled rows after which PostgreSQL's statistics are first refreshed.
const FIRST_ANALYZE: u64 = 8192;

/// `temp_store = MEMORY` keeps statement journals (the undo of one multi-row insert inside a
/// transaction) in memory instead of a temporary file created and closed at every commit.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;";

/// Whether a connection given back to the pool may serve again: not while it is still inside a
/// transaction. A commit that fails for want of space makes SQLite roll the transaction back
/// itself; the driver, which counts the transactions it opened, then fails to roll it back and
/// counts it open for good, so every later transaction on that connection would be a savepoint
/// whose release commits nothing, and writes would be acknowledged and lost. Such a connection
/// is closed (rolling back whatever it holds) and the pool opens a fresh one.
async fn reusable(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction queues its rollback: let it run before looking again.
    conn.ping().await?;
    let stuck = conn.is_in_transaction();
    if stuck {
        tracing::warn!("a database connection is still inside a failed transaction; closing it");
    }
    Ok(!stuck)
}

impl SqlStore {
    /// Opens `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file if needed, and
    /// runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            )));
        };
        let store = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
                let options = AnyConnectOptions::from_str(&url)?;
                let pool = |max: u32| {
                    AnyPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(Duration::from_secs(30))
                        // A connection to a local file does not go stale; the ping sqlx would
                        // send before every use is a round trip to its worker thread per query.
                        .test_before_acquire(false)
                        .after_connect(|conn, _meta| {
                            Box::pin(async move {
                                conn.execute(SQLITE_PRAGMAS).await?;
                                // A commit checkpoints only as a backstop ([`crate::wal`]).
                                let backstop =
                                    format!("PRAGMA wal_autocheckpoint = {}", crate::wal::BACKSTOP_PAGES);
                                conn.execute(backstop.as_str()).await?;
                                Ok(())
                            })
                        })
                        .after_release(|conn, _meta| Box::pin(reusable(conn)))
                        .connect_with(options.clone())
                };
                let write = pool(1).await?;
                let read = pool(4).await?;
                let mut store = Self::with_pools(url.clone(), write, read, backend);
                store.checkpointer = Some(Arc::new(crate::wal::Checkpointer::start(store.read.clone())));
                store
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("SET synchronous_commit = on").await?;
                            Ok(())
                        })
                    })
                    .after_release(|conn, _meta| Box::pin(reusable(conn)))
                    .connect(url)
                    .await?;
                Self::with_pools(url.to_owned(), pool.clone(), pool, backend)
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    fn with_pools(url: String, write: AnyPool, read: AnyPool, backend: Backend) -> Self {
        let (bulk_rows, next_analyze) = (Arc::default(), Arc::new(AtomicU64::new(FIRST_ANALYZE)));
        Self { url, write, read, backend, bulk_rows, next_analyze, checkpointer: None }
    }

    /// Counts `rows` written by a bulk enrolment and, on PostgreSQL, refreshes the gallery tables'
    /// statistics each time that count doubles. The planner's estimates otherwise stay those of
    /// the empty tables until autovacuum (which may be off, and lags a bulk load) catches up, and
    /// with them it looks a batch's subjects up by scanning the whole gallery.
    ///
    /// In the background, best effort: the rows are committed, and their writer answered, whatever
    /// happens here.
    pub(crate) fn refresh_statistics(&self, rows: u64) {
        let total = self.bulk_rows.fetch_add(rows, Ordering::Relaxed) + rows;
        if self.backend != Backend::Postgres || total < self.next_analyze.load(Ordering::Relaxed) {
            return;
        }
        self.next_analyze.store(total.saturating_mul(2), Ordering::Relaxed);
        let pool = self.write.clone();
        tokio::spawn(async move {
            let analyzed =
                sqlx::query("ANALYZE subjects, templates, idempotency, changes").execute(&pool).await;
            if let Err(e) = analyzed {
                tracing::warn!(error = %e, "refreshing the gallery tables' statistics failed");
            }
        });
    }

    /// The URL the store was opened with (may hold a password: never log it).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.write).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.write).await?,
        }
        Ok(())
    }

    /// Starts a write transaction that no other writer interleaves with, so sequence numbers
    /// commit in order.
    pub(crate) async fn begin_write(
        &self,
        lock: WriteLock,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.write.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock as i64).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Which sequence a write transaction extends; writers of different sequences do not wait for
/// each other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteLock {
    ChangeLog = 7_262_771,
    AuditLog = 7_262_772,
}

/// Converts a stored non-negative integer.
pub(crate) fn to_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
