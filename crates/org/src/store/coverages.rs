//! Coverages in the store: the standard methods with the rules a write must pass inside its
//! transaction.

use pm_api::org::Coverage;
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::{ApiResult, Db, names};
use prost_types::FieldMask;
use sqlx::AnyConnection;

use super::{COVERAGE, coverage_periods};
use crate::domain;

/// A live coverage.
pub async fn get(db: &Db, name: &str) -> ApiResult<Coverage> {
    docstore::get_by_name(db, &COVERAGE, name).await
}

/// One page of a patient's coverages.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Coverage>> {
    docstore::list(db, &COVERAGE, call).await
}

/// Creates a coverage; `record` runs in the same transaction once the rules pass (the PHI audit
/// of the write: both commit or neither does).
pub async fn create<R>(
    db: &Db,
    call: CreateCall<'_>,
    coverage: Coverage,
    record: R,
) -> ApiResult<Coverage>
where
    R: AsyncFnOnce(&mut AnyConnection, &Coverage) -> ApiResult<()>,
{
    docstore::create(db, &COVERAGE, call, coverage, async |conn, c| {
        check(conn, c).await?;
        record(conn, c).await
    })
    .await
}

/// Updates the fields of `patch` named by `mask`; `record` as for [`create`].
pub async fn update<R>(
    db: &Db,
    patch: Option<Coverage>,
    mask: Option<&FieldMask>,
    record: R,
) -> ApiResult<Coverage>
where
    R: AsyncFnOnce(&mut AnyConnection, &Coverage) -> ApiResult<()>,
{
    docstore::update(db, &COVERAGE, patch, mask, async |conn, _, c| {
        check(conn, c).await?;
        record(conn, c).await
    })
    .await
}

/// Undeletes a coverage: it may not overlap the patient's live coverages; `record` as for
/// [`create`].
pub async fn undelete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Coverage>
where
    R: AsyncFnOnce(&mut AnyConnection, &Coverage) -> ApiResult<()>,
{
    docstore::undelete(db, &COVERAGE, name, etag, async |conn, c| {
        check(conn, c).await?;
        record(conn, c).await
    })
    .await
}

/// Soft-deletes a coverage; `record` as for [`create`].
pub async fn delete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Coverage>
where
    R: AsyncFnOnce(&mut AnyConnection, &Coverage) -> ApiResult<()>,
{
    docstore::soft_delete(db, &COVERAGE, name, etag, async |conn, c| {
        record(conn, c).await
    })
    .await
}

/// The coverage's own rules, then it may not overlap the patient's other live coverages.
async fn check(conn: &mut AnyConnection, coverage: &Coverage) -> ApiResult<()> {
    let period = domain::validate_coverage(coverage)?;
    let others = coverage_periods(conn, names::parent_of(&coverage.name), &coverage.name).await?;
    domain::check_no_coverage_overlap(coverage, &period, &others)
}
