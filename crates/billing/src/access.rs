//! Where Billing's resources sit for authorization, and the finer decisions its handlers make.
//! Configuration (billing entities, payers, contracts, fee schedules) sits at the organization
//! level: any role of the organization holding the permission reads it, and only an
//! organization-wide role writes it. A charge sits in its unit (an encounter, for a reference, in
//! the unit of its charges): Billing Staff see the charges of their units only.

use pm_authz::layer::Caller;
use pm_authz::policy::{self, Target};
use pm_runtime::time::now_micros;
use pm_runtime::{ApiResult, Db, names};

use crate::charges;
use crate::org::OrgView;

pub use pm_authz::layer::out_of_reach as denied;

/// Billing's configuration collections (all directly under the organization).
const CONFIGURATION: &[&str] = &[
    "billingEntities",
    "payers",
    "contracts",
    "feeSchedules",
    "routingRules",
];

/// Whether `name` is one of Billing's configuration resources (a version under its schedule too).
pub fn is_configuration(name: &str) -> bool {
    let segments: Vec<&str> = name.split('/').collect();
    match segments.as_slice() {
        ["organizations", _, collection, _] => CONFIGURATION.contains(collection),
        ["organizations", _, "feeSchedules", _, "versions", _] => true,
        _ => false,
    }
}

fn is_charge_or_encounter(name: &str) -> bool {
    matches!(
        name.split('/').collect::<Vec<_>>().as_slice(),
        ["organizations", _, "charges" | "encounters", _]
    )
}

fn is_claim(name: &str) -> bool {
    matches!(
        name.split('/').collect::<Vec<_>>().as_slice(),
        ["organizations", _, "claims", _]
    )
}

fn is_invoice(name: &str) -> bool {
    matches!(
        name.split('/').collect::<Vec<_>>().as_slice(),
        ["organizations", _, "invoices", _]
    )
}

/// Refuses (NOT_FOUND on `resource`, as for one that does not exist) unless the caller may use
/// `permission` in every one of `units` (an invoice's, a contract's: it bills them all).
pub async fn in_every_unit(
    org: &OrgView,
    caller: &Caller,
    permission: &str,
    resource: &str,
    units: &[String],
) -> ApiResult<()> {
    if units.is_empty() {
        return organization_wide(caller, permission, resource)
            .map_err(|_| pm_runtime::ApiError::not_found(resource));
    }
    for unit in units {
        in_unit(org, caller, permission, resource, unit)
            .await
            .map_err(|e| {
                if e.code == tonic::Code::Unavailable {
                    e
                } else {
                    pm_runtime::ApiError::not_found(resource)
                }
            })?;
    }
    Ok(())
}

/// Refuses unless the caller holds `permission` across the whole organization of `resource`
/// (configuration writes, which apply to every unit). A unit-scoped caller gets the same answer as
/// for a resource out of scope.
pub fn organization_wide(caller: &Caller, permission: &str, resource: &str) -> ApiResult<()> {
    if caller.is_service() {
        return Ok(());
    }
    let organization = names::organization_of(resource);
    let everywhere = Target::units(organization, Vec::new());
    if caller
        .decide(permission, &everywhere, &[], now_micros())
        .allowed
    {
        Ok(())
    } else {
        Err(denied(resource))
    }
}

/// Refuses unless the caller may use `permission` on something in `unit` (a charge's).
pub async fn in_unit(
    org: &OrgView,
    caller: &Caller,
    permission: &str,
    resource: &str,
    unit: &str,
) -> ApiResult<()> {
    if caller.is_service() {
        return Ok(());
    }
    let organization = names::organization_of(resource);
    let everywhere = Target::units(organization, Vec::new());
    if caller
        .decide(permission, &everywhere, &[], now_micros())
        .allowed
    {
        return Ok(());
    }
    let lineage = match org.unit(unit).await {
        Ok(info) => info.nearest_first.into_iter().rev().collect(),
        Err(e) if e.code == tonic::Code::Unavailable => return Err(e),
        Err(_) => Vec::new(),
    };
    caller.enforce(
        permission,
        &Target::units(organization, vec![lineage]),
        &[],
        resource,
    )
}

/// The units a list by `caller` narrows to (`None`: every unit of the organization).
pub async fn visible_units(
    org: &OrgView,
    caller: &Caller,
    permission: &str,
    organization: &str,
) -> ApiResult<Option<Vec<String>>> {
    if caller.is_service() {
        return Ok(None);
    }
    let tree = org.unit_tree(organization).await?;
    Ok(policy::visible_units(
        &caller.grants,
        permission,
        organization,
        now_micros(),
        &[],
        &tree,
    ))
}

/// Billing's names placed under the Org resource whose scope they inherit, for the shared scope
/// check (`pm_authz::references::OrgScopes`).
pub struct OwnPlacement {
    db: Db,
}

impl OwnPlacement {
    /// Places names from `db`, Billing's slice.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl pm_authz::references::OwnNames for OwnPlacement {
    async fn place(&self, names: &[String]) -> ApiResult<Vec<Option<String>>> {
        let mut conn = self.db.read().await?;
        let mut placed = Vec::with_capacity(names.len());
        for name in names {
            placed.push(if is_configuration(name) {
                let live = crate::store::exists(&mut conn, name).await?;
                live.then(|| names::organization_of(name).to_string())
            } else if is_charge_or_encounter(name) {
                charges::unit_of(&mut conn, name).await?
            } else if is_claim(name) {
                crate::claim_store::unit_of(&mut conn, name).await?
            } else if is_invoice(name) {
                let live = crate::invoice_store::exists(&mut conn, name).await?;
                live.then(|| names::organization_of(name).to_string())
            } else {
                Some(name.clone())
            });
        }
        Ok(placed)
    }

    /// As the handlers check a call's target: configuration and invoices at the organization level
    /// whether or not they exist (the handler answers NOT_FOUND, also for an invoice of units out
    /// of the caller's scope), a charge in its unit.
    async fn place_target(&self, names: &[String]) -> ApiResult<Vec<Option<String>>> {
        let mut placed = Vec::with_capacity(names.len());
        for name in names {
            placed.push(if is_configuration(name) || is_invoice(name) {
                Some(names::organization_of(name).to_string())
            } else {
                self.place(std::slice::from_ref(name))
                    .await?
                    .pop()
                    .flatten()
            });
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_names_are_recognised_by_shape() {
        for name in [
            "organizations/o/billingEntities/clinic",
            "organizations/o/payers/medicare",
            "organizations/o/contracts/mcr",
            "organizations/o/feeSchedules/base",
            "organizations/o/feeSchedules/base/versions/2026",
        ] {
            assert!(is_configuration(name), "{name}");
        }
        for name in [
            "organizations/o",
            "organizations/o/charges/c",
            "organizations/o/units/u",
            "payers/medicare",
            "organizations/o/feeSchedules/base/entries/x",
        ] {
            assert!(!is_configuration(name), "{name}");
        }
    }
}
