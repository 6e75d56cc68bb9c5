//! What every service of the mesh shares: configuration, mTLS, server bootstrap (health, reflection,
//! timeouts, limits, graceful shutdown), tracing, storage (SQLite or PostgreSQL), the mapping of errors
//! to `tonic::Status`, and the generic resource store with its AIP helpers (names, paging, filters,
//! field masks, idempotency).

pub mod batch;
pub mod cache;
pub mod catch_panic;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod docstore;
pub mod error;
pub mod fieldmask;
pub mod filter;
pub mod follower;
pub mod grpc;
pub mod idempotency;
pub mod names;
pub mod outbox;
pub mod paging;
pub mod reasons;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use config::Config;
pub use db::Db;
pub use error::{ApiError, ApiResult, Violations, quote};
