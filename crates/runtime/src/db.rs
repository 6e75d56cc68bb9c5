//! Storage: one database slice per service, SQLite (embedded default) or PostgreSQL, through sqlx's
//! `Any` driver so that one set of SQL statements (with `$1` placeholders, which both accept) serves
//! both. Migrations are per service and per backend, and run before a service starts serving.
//!
//! Writes are serialized per organization, so that a domain check followed by a write ("no overlapping
//! credential", "no cycle in the unit tree") is never raced:
//! - PostgreSQL: a transaction-scoped advisory lock keyed by the organization, which holds across
//!   replicas; statements after it (READ COMMITTED) see everything committed before.
//! - SQLite: one writer at a time per file (an async mutex; SQLite allows one writer anyway) in WAL
//!   mode, so readers never wait for it.
//!
//! A write whose every invariant the database's own constraints enforce (a booking: exclusion
//! constraints, unique keys) may skip the organization's lock ([`Db::write_constrained`],
//! [`crate::batch`]), so that such writes run side by side on PostgreSQL.
//!
//! Work per call is bounded on PostgreSQL: every pooled connection carries a `statement_timeout`
//! (`storage.statement_timeout_ms`, a little below the call's own timeout) and the same
//! `idle_in_transaction_session_timeout`. When tonic drops a handler whose deadline passed or whose
//! client went away, sqlx does not cancel the statement in flight: the connection is only pinged
//! (draining the statement) before it returns to the pool, so the statement timeout is what bounds
//! that work. Migrations run on a connection of their own without the timeout (an index build may
//! take longer). SQLite has no such timeout through sqlx; its work is bounded by the limits on
//! filters and page sizes.

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::{Backend, Config};
use crate::error::ApiResult;

/// A PostgreSQL connection idle for this long is pinged before it is handed out.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// One set of migrations for each backend (each a function returning `sqlx::migrate!(...)`).
///
/// A slice may hold several sets (a service's own, and shared ones such as the audit trail's): they
/// share sqlx's migrations table, so their versions must not collide (services use 1-999, shared sets
/// 1000 and up) and each ignores the versions it does not know.
pub struct Migrations {
    /// `migrations/sqlite`.
    pub sqlite: fn() -> Migrator,
    /// `migrations/postgres`.
    pub postgres: fn() -> Migrator,
}

/// The statement timeout of a PostgreSQL slice opened without a configuration
/// ([`Db::open_postgres`]): the default of `storage.statement_timeout_ms`.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(9_000);

async fn run_migrations<'a, A>(
    target: A,
    sets: &[&Migrations],
    backend: Backend,
) -> anyhow::Result<()>
where
    A: sqlx::Acquire<'a, Database = Any>,
{
    let mut conn = target.acquire().await?;
    for set in sets {
        let mut migrator = match backend {
            Backend::Sqlite => (set.sqlite)(),
            Backend::Postgres => (set.postgres)(),
        };
        migrator.set_ignore_missing(true);
        migrator.run(&mut *conn).await?;
    }
    Ok(())
}

/// A service's database slice.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// One connection of its own for a background writer (the audit writer): its serial work must
    /// not queue behind request traffic for a pooled connection.
    dedicated: AnyPool,
    backend: Backend,
    sqlite_writer: Arc<Mutex<()>>,
}

/// An open write transaction holding its organization's write lock.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _sqlite_writer: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits; the lock is released with it.
    pub async fn commit(self) -> ApiResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

static DRIVERS: Once = Once::new();

impl Db {
    /// Opens `service`'s slice as configured and migrates it.
    pub async fn open(
        config: &Config,
        service: &str,
        migrations: &[&Migrations],
    ) -> anyhow::Result<Db> {
        match config.storage.backend {
            Backend::Sqlite => {
                std::fs::create_dir_all(&config.data_dir)?;
                let file = config.data_dir.join(format!("{service}.db"));
                Self::open_sqlite(&file, config.storage.max_connections, migrations).await
            }
            Backend::Postgres => {
                let schema = format!("{}{service}", config.storage.postgres_schema_prefix);
                Self::open_postgres_bounded(
                    config.storage.postgres_url.expose(),
                    &schema,
                    config.storage.max_connections,
                    Duration::from_millis(config.storage.statement_timeout_ms),
                    migrations,
                )
                .await
            }
        }
    }

    /// Opens (creating) a SQLite file and migrates it.
    pub async fn open_sqlite(
        file: &Path,
        max_connections: u32,
        migrations: &[&Migrations],
    ) -> anyhow::Result<Db> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let options: AnyConnectOptions = url.parse()?;
        let pool_of = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(5))
                // A local file cannot go stale like a network connection: skip the ping round
                // trip to the connection's thread on every acquire.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL: readers never wait for the writer. FULL: a commit survives power
                        // loss.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        Ok(())
                    })
                })
        };
        let pool = pool_of(max_connections.max(1))
            .connect_with(options.clone())
            .await?;
        run_migrations(&pool, migrations, Backend::Sqlite).await?;
        let dedicated = pool_of(1).connect_lazy_with(options);
        Ok(Db {
            pool,
            dedicated,
            backend: Backend::Sqlite,
            sqlite_writer: Arc::new(Mutex::new(())),
        })
    }

    /// Opens a PostgreSQL schema (creating it) and migrates it, with the default statement timeout
    /// ([`DEFAULT_STATEMENT_TIMEOUT`]).
    pub async fn open_postgres(
        url: &str,
        schema: &str,
        max_connections: u32,
        migrations: &[&Migrations],
    ) -> anyhow::Result<Db> {
        Self::open_postgres_bounded(
            url,
            schema,
            max_connections,
            DEFAULT_STATEMENT_TIMEOUT,
            migrations,
        )
        .await
    }

    /// Opens a PostgreSQL schema (creating it) and migrates it. Every pooled connection cancels a
    /// statement running longer than `statement_timeout` (SQLSTATE 57014, answered
    /// DEADLINE_EXCEEDED) and ends a session idle that long inside a transaction; zero disables
    /// both (PostgreSQL's own meaning of 0).
    pub async fn open_postgres_bounded(
        url: &str,
        schema: &str,
        max_connections: u32,
        statement_timeout: Duration,
        migrations: &[&Migrations],
    ) -> anyhow::Result<Db> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        anyhow::ensure!(
            !schema.is_empty()
                && schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "schema name must be lowercase letters, digits and underscores"
        );
        let mut admin = AnyConnection::connect(url).await?;
        let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        if let Err(err) = admin.execute(create.as_str()).await {
            // Two replicas creating the schema at once: the loser sees a duplicate, which is fine.
            let duplicate = err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "23505" || code == "42P06");
            if !duplicate {
                return Err(err.into());
            }
        }
        // Migrations on this connection, which has no statement timeout: building an index on a
        // large table may rightly take longer than any call.
        admin
            .execute(format!("SET search_path TO {schema}").as_str())
            .await?;
        run_migrations(&mut admin, migrations, Backend::Postgres).await?;
        admin.close().await?;

        // Integers only, so the statement is built from nothing a caller controls.
        let timeout_ms = statement_timeout.as_millis().min(i32::MAX as u128);
        let session: Arc<str> = format!(
            "SET search_path TO {schema}; SET statement_timeout = {timeout_ms}; \
             SET idle_in_transaction_session_timeout = {timeout_ms}"
        )
        .into();
        let pool_of = |size: u32| {
            let session = Arc::clone(&session);
            AnyPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(5))
                // Ping only a connection that sat idle (the server may have dropped it meanwhile):
                // a ping on every acquire is a round trip to the server per statement or
                // transaction, measured as a fifth of a booking's cost under load.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_WHEN_IDLE_FOR {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(move |conn, _| {
                    let session = Arc::clone(&session);
                    Box::pin(async move {
                        conn.execute(&*session).await?;
                        Ok(())
                    })
                })
        };
        let pool = pool_of(max_connections.max(1)).connect(url).await?;
        let dedicated = pool_of(1).connect_lazy(url)?;
        Ok(Db {
            pool,
            dedicated,
            backend: Backend::Postgres,
            sqlite_writer: Arc::new(Mutex::new(())),
        })
    }

    /// Drops a PostgreSQL schema and everything in it (test clean-up).
    pub async fn drop_postgres_schema(url: &str, schema: &str) -> anyhow::Result<()> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let mut admin = AnyConnection::connect(url).await?;
        admin
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await?;
        admin.close().await?;
        Ok(())
    }

    /// The backend this slice is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reads.
    pub async fn read(&self) -> ApiResult<PoolConnection<Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Begins a write transaction holding the write lock of `scope` (an organization name).
    pub async fn write(&self, scope: &str) -> ApiResult<WriteTx> {
        // SQLite's writer lock is already the scope's (and every other scope's) lock.
        let mut tx = self.write_constrained().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
                .bind(lock_key(scope))
                .execute(tx.conn())
                .await?;
        }
        Ok(tx)
    }

    /// Begins a write transaction that takes no lock on PostgreSQL, for a write whose every invariant
    /// the database's own constraints enforce (a booking: exclusion constraints over its time, unique
    /// keys on its name and request_id), so that such writes run side by side instead of queueing on
    /// their organization's lock. On SQLite it holds the writer lock like [`Db::write`] (SQLite admits
    /// one writer anyway).
    pub async fn write_constrained(&self) -> ApiResult<WriteTx> {
        let guard = match self.backend {
            Backend::Sqlite => Some(Arc::clone(&self.sqlite_writer).lock_owned().await),
            Backend::Postgres => None,
        };
        Ok(WriteTx {
            tx: self.begin(&self.pool).await?,
            _sqlite_writer: guard,
        })
    }

    /// A transaction on the slice's dedicated connection, for its one background writer (the audit
    /// writer). On SQLite it holds the writer lock like [`Db::write`]; on PostgreSQL it takes no lock
    /// (the writer takes what it needs).
    pub async fn write_dedicated(&self) -> ApiResult<WriteTx> {
        let guard = match self.backend {
            Backend::Sqlite => Some(Arc::clone(&self.sqlite_writer).lock_owned().await),
            Backend::Postgres => None,
        };
        Ok(WriteTx {
            tx: self.begin(&self.dedicated).await?,
            _sqlite_writer: guard,
        })
    }

    /// Refreshes the query planner's statistics of this slice's tables (after a bulk load, before
    /// autovacuum would get to it). PostgreSQL: `ANALYZE` of each table of the slice's schema only.
    pub async fn analyze(&self) -> ApiResult<()> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                conn.execute("ANALYZE").await?;
            }
            Backend::Postgres => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()",
                )
                .fetch_all(&mut *conn)
                .await?;
                if !tables.is_empty() {
                    conn.execute(format!("ANALYZE {}", tables.join(", ")).as_str())
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Begins a write transaction on `pool`. SQLite: `BEGIN IMMEDIATE`, which takes the file's
    /// write lock at once (waiting up to the busy timeout): a deferred transaction that read first
    /// could not upgrade to a writer once another process (a tool, a second handle) committed, and
    /// would fail instead of waiting.
    async fn begin(&self, pool: &AnyPool) -> ApiResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        })
    }

    /// Whether the database answers within a second.
    pub async fn ping(&self) -> bool {
        let probe = async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(_))
        )
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.dedicated.close().await;
        self.pool.close().await;
    }
}

/// The PostgreSQL advisory-lock key of a scope (an organization's write lock, or any other name a
/// statement locks with `pg_advisory_xact_lock`): the first 8 bytes of its SHA-256.
pub fn lock_key(scope: &str) -> i64 {
    let digest = Sha256::digest(scope.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The PostgreSQL server tests use (`pm-testing` has the same; it depends on this crate).
    fn postgres_url() -> String {
        std::env::var("PM_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Whether a statement holding `marker` is running now on the server.
    async fn running(url: &str, marker: &str) -> anyhow::Result<bool> {
        let mut admin = AnyConnection::connect(url).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
        )
        .bind(marker)
        .fetch_one(&mut admin)
        .await?;
        admin.close().await?;
        Ok(count > 0)
    }

    #[tokio::test]
    async fn postgres_statements_are_cancelled_by_the_statement_timeout() -> anyhow::Result<()> {
        let url = postgres_url();
        let schema = format!("pmtest_{}", uuid::Uuid::new_v4().simple());
        let db =
            Db::open_postgres_bounded(&url, &schema, 2, Duration::from_millis(300), &[]).await?;
        let outcome = async {
            // A statement past the timeout is cancelled by the server, and answered as such.
            let started = Instant::now();
            let mut conn = db.read().await?;
            let err = sqlx::query("SELECT pg_sleep(5)")
                .execute(&mut *conn)
                .await
                .expect_err("the statement outlives the timeout");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            let api = crate::ApiError::from(err);
            assert_eq!(
                (api.code, api.reason),
                (tonic::Code::DeadlineExceeded, "STATEMENT_TIMEOUT")
            );
            // The connection is still good for the next statement.
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            drop(conn);

            // A call dropped mid-statement (its deadline passed, its client went away): the
            // statement does not keep running on the server past the timeout.
            let marker = format!("dropped_{}", uuid::Uuid::new_v4().simple());
            let sql = format!("SELECT pg_sleep(5), '{marker}'");
            let dropped = async {
                let mut conn = db.read().await?;
                sqlx::query(&sql).execute(&mut *conn).await?;
                anyhow::Ok(())
            };
            assert!(
                tokio::time::timeout(Duration::from_millis(100), dropped)
                    .await
                    .is_err()
            );
            let mut still_running = true;
            for _ in 0..20 {
                still_running = running(&url, &marker).await?;
                if !still_running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!still_running, "the dropped statement outlived the timeout");

            // A transaction left idle past the timeout is ended by the server.
            let mut tx = db.write_constrained().await?;
            sqlx::query("SELECT 1").execute(tx.conn()).await?;
            tokio::time::sleep(Duration::from_millis(800)).await;
            let late = sqlx::query("SELECT 1").execute(tx.conn()).await;
            assert!(late.is_err(), "the idle transaction was ended");
            anyhow::Ok(())
        }
        .await;
        db.close().await;
        Db::drop_postgres_schema(&url, &schema).await?;
        outcome
    }
}
