//! Service units in the store: the standard methods with the tree's rules a write must pass
//! inside its transaction.

use pm_api::org::{EffectivePolicy, ServiceUnit};
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::{ApiError, ApiResult, Db};
use prost_types::FieldMask;

use super::{UNIT, effective_policy, has_live_children, lineage_names, referenced_unit};
use crate::domain;

/// A live service unit.
pub async fn get(db: &Db, name: &str) -> ApiResult<ServiceUnit> {
    docstore::get_by_name(db, &UNIT, name).await
}

/// One page of an organization's units.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<ServiceUnit>> {
    docstore::list(db, &UNIT, call).await
}

/// The effective policy of a live unit; NOT_FOUND when there is none.
pub async fn policy_of(db: &Db, unit: &str) -> ApiResult<EffectivePolicy> {
    let mut conn = db.read().await?;
    if docstore::get_live::<ServiceUnit>(&mut conn, unit)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(unit));
    }
    effective_policy(&mut conn, unit).await
}

/// Creates a unit under an existing parent unit (or at the top of the tree).
pub async fn create(db: &Db, call: CreateCall<'_>, unit: ServiceUnit) -> ApiResult<ServiceUnit> {
    docstore::create(db, &UNIT, call, unit, async |conn, unit| {
        domain::validate_unit(unit)?;
        if !unit.parent_unit.is_empty() {
            referenced_unit(conn, &unit.parent_unit, "service_unit.parent_unit").await?;
        }
        Ok(())
    })
    .await
}

/// Updates the fields of `patch` named by `mask`; a move must land on a live unit outside the
/// unit's own subtree.
pub async fn update(
    db: &Db,
    patch: ServiceUnit,
    mask: Option<&FieldMask>,
) -> ApiResult<ServiceUnit> {
    docstore::update(db, &UNIT, Some(patch), mask, async |conn, stored, unit| {
        domain::validate_unit(unit)?;
        if !unit.parent_unit.is_empty() && unit.parent_unit != stored.parent_unit {
            referenced_unit(conn, &unit.parent_unit, "service_unit.parent_unit").await?;
            let lineage = lineage_names(conn, &unit.parent_unit).await?;
            domain::check_no_cycle(&unit.name, &lineage)?;
        }
        Ok(())
    })
    .await
}

/// Undeletes a unit: its parent unit, if any, must be live (undelete from the top down).
pub async fn undelete(db: &Db, name: &str, etag: &str) -> ApiResult<ServiceUnit> {
    docstore::undelete(db, &UNIT, name, etag, async |conn, unit| {
        if !unit.parent_unit.is_empty() && !docstore::exists_live(conn, &unit.parent_unit).await? {
            return Err(ApiError::precondition(
                "PARENT_UNIT_DELETED",
                format!(
                    "its parent unit {} is deleted: undelete it first",
                    unit.parent_unit
                ),
            )
            .with_meta("resource", &unit.parent_unit));
        }
        Ok(())
    })
    .await
}

/// Soft-deletes a unit that has no live child unit left.
pub async fn delete(db: &Db, name: &str, etag: &str) -> ApiResult<ServiceUnit> {
    docstore::soft_delete(db, &UNIT, name, etag, async |conn, unit| {
        if has_live_children(conn, &unit.name).await? {
            return Err(ApiError::precondition(
                "UNIT_HAS_CHILDREN",
                format!(
                    "{} still has child units: move or delete them first",
                    unit.name
                ),
            ));
        }
        Ok(())
    })
    .await
}
