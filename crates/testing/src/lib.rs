//! Test support shared by every service's store suites: a fresh database slice per test on either
//! backend, and a macro that runs a test function against both.
//!
//! Its own crate rather than a module of `pm-runtime` behind a feature: with a `testing` feature,
//! `cargo test` (which unifies the features its dev-dependencies ask for) would build `pm-runtime`
//! with it and `cargo build -p pm` without it, so `cargo run -p pm` after `make test` would
//! recompile the runtime and every crate above it. A crate only dev-dependencies name changes
//! nothing in the graph the binary is built from, and never links into it.

use pm_runtime::Db;
pub use pm_runtime::config::Backend;
use pm_runtime::db::Migrations;

/// The PostgreSQL server tests use: `PM_TEST_POSTGRES_URL`, default the local server.
pub fn postgres_url() -> String {
    std::env::var("PM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh slice: a SQLite file in a temporary folder, or a PostgreSQL schema `pmtest_<uuid>`.
pub struct TestSlice {
    /// The database.
    pub db: Db,
    /// Which backend.
    pub backend: Backend,
    schema: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestSlice {
    /// Opens and migrates a fresh slice.
    pub async fn open(backend: Backend, migrations: &[&Migrations]) -> anyhow::Result<TestSlice> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let db = Db::open_sqlite(&dir.path().join("test.db"), 4, migrations).await?;
                Ok(TestSlice {
                    db,
                    backend,
                    schema: String::new(),
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let schema = format!("pmtest_{}", uuid::Uuid::new_v4().simple());
                let db = Db::open_postgres(&postgres_url(), &schema, 4, migrations).await?;
                Ok(TestSlice {
                    db,
                    backend,
                    schema,
                    _dir: None,
                })
            }
        }
    }

    /// Closes the pool and drops the PostgreSQL schema (the SQLite folder goes with the value).
    pub async fn finish(self) -> anyhow::Result<()> {
        self.db.close().await;
        if self.backend == Backend::Postgres {
            Db::drop_postgres_schema(&postgres_url(), &self.schema).await?;
        }
        Ok(())
    }
}

/// Runs each listed `async fn name(&Harness) -> anyhow::Result<()>` against SQLite and PostgreSQL.
/// `$harness` is a type with `async fn new(Backend) -> anyhow::Result<Self>` and
/// `async fn finish(self) -> anyhow::Result<()>`.
#[macro_export]
macro_rules! on_both_backends {
    ($harness:path; $($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    let harness = <$harness>::new($crate::Backend::Sqlite).await?;
                    super::$test(&harness).await?;
                    harness.finish().await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    let harness = <$harness>::new($crate::Backend::Postgres).await?;
                    super::$test(&harness).await?;
                    harness.finish().await
                }
            )*
        }
    };
}
