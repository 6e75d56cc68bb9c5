//! Locations in the store: the standard methods.

use pm_api::org::Location;
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::{ApiResult, Db};
use prost_types::FieldMask;

use super::LOCATION;
use crate::domain;

/// A live location.
pub async fn get(db: &Db, name: &str) -> ApiResult<Location> {
    docstore::get_by_name(db, &LOCATION, name).await
}

/// One page of an organization's locations.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Location>> {
    docstore::list(db, &LOCATION, call).await
}

/// Creates a location.
pub async fn create(db: &Db, call: CreateCall<'_>, location: Location) -> ApiResult<Location> {
    docstore::create(db, &LOCATION, call, location, async |_, l| {
        domain::validate_location(l)
    })
    .await
}

/// Updates the fields of `patch` named by `mask`.
pub async fn update(
    db: &Db,
    patch: Option<Location>,
    mask: Option<&FieldMask>,
) -> ApiResult<Location> {
    docstore::update(db, &LOCATION, patch, mask, async |_, _, l| {
        domain::validate_location(l)
    })
    .await
}

/// Undeletes a location.
pub async fn undelete(db: &Db, name: &str, etag: &str) -> ApiResult<Location> {
    docstore::undelete(db, &LOCATION, name, etag, async |_, _| Ok(())).await
}

/// Soft-deletes a location.
pub async fn delete(db: &Db, name: &str, etag: &str) -> ApiResult<Location> {
    docstore::soft_delete(db, &LOCATION, name, etag, async |_, _| Ok(())).await
}
