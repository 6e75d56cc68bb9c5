//! Organizations in the store: the standard methods with the rules a write must pass inside its
//! transaction.

use pm_api::org::Organization;
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::{ApiError, ApiResult, Db};
use prost_types::FieldMask;

use super::{ORGANIZATION, has_live_units};
use crate::domain;

/// A live organization.
pub async fn get(db: &Db, name: &str) -> ApiResult<Organization> {
    docstore::get_by_name(db, &ORGANIZATION, name).await
}

/// One page of organizations.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Organization>> {
    docstore::list(db, &ORGANIZATION, call).await
}

/// Creates an organization.
pub async fn create(
    db: &Db,
    call: CreateCall<'_>,
    organization: Organization,
) -> ApiResult<Organization> {
    docstore::create(db, &ORGANIZATION, call, organization, async |_, org| {
        domain::validate_organization(org)
    })
    .await
}

/// Updates the fields of `patch` named by `mask`.
pub async fn update(
    db: &Db,
    patch: Option<Organization>,
    mask: Option<&FieldMask>,
) -> ApiResult<Organization> {
    docstore::update(db, &ORGANIZATION, patch, mask, async |_, _, org| {
        domain::validate_organization(org)
    })
    .await
}

/// Soft-deletes an organization that has no live service unit left.
pub async fn delete(db: &Db, name: &str, etag: &str) -> ApiResult<Organization> {
    docstore::soft_delete(db, &ORGANIZATION, name, etag, async |conn, org| {
        if has_live_units(conn, &org.name).await? {
            return Err(ApiError::precondition(
                "ORGANIZATION_NOT_EMPTY",
                format!("{} still has service units: delete them first", org.name),
            ));
        }
        Ok(())
    })
    .await
}
