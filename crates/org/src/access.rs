//! Object-level authorization for the Org service: where each resource sits in the unit tree (its
//! [`Target`]), the decision against the caller's bindings after the resource is loaded, and the scope
//! a List is narrowed to. A resource out of scope and a resource that does not exist give the same
//! PERMISSION_DENIED, so ids cannot be probed.

use std::collections::{BTreeSet, HashMap};

use pm_api::org::{Credential, CredentialState, Enrollment, EnrollmentState, ServiceUnit};
use pm_authz::layer::Caller;
use pm_authz::policy::{Role, Target};
use pm_runtime::ApiResult;
use pm_runtime::docstore::{self, ListScope};
use pm_runtime::names;
use pm_runtime::time::now_micros;
use sqlx::AnyConnection;

use crate::domain;
use crate::store::{self, CREDENTIAL, ENROLLMENT, UNIT};

pub use pm_authz::layer::out_of_reach as denied;

/// Refuses unless `caller` may do `permission` on `target` (the target of `resource`).
pub async fn authorize(
    conn: &mut AnyConnection,
    caller: &Caller,
    permission: &str,
    resource: &str,
    target: &Target,
) -> ApiResult<()> {
    let provider_units = provider_units(conn, caller, &target.organization).await?;
    caller.enforce(permission, target, &provider_units, resource)
}

/// The decision for `caller` on `target`, with its reason (CheckAccess).
pub async fn explain(
    conn: &mut AnyConnection,
    caller: &Caller,
    permission: &str,
    target: &Target,
) -> ApiResult<pm_authz::policy::Decision> {
    let provider_units = provider_units(conn, caller, &target.organization).await?;
    Ok(caller.decide(permission, target, &provider_units, now_micros()))
}

/// The units a Provider caller's provider record is credentialed in now (ACTIVE and in force).
async fn provider_units(
    conn: &mut AnyConnection,
    caller: &Caller,
    organization: &str,
) -> ApiResult<Vec<String>> {
    let Some(provider) = caller.provider.as_deref() else {
        return Ok(Vec::new());
    };
    if !caller.is_provider_in(organization) || names::organization_of(provider) != organization {
        return Ok(Vec::new());
    }
    credentialed_units(conn, provider).await
}

/// The units `provider` is credentialed in now (ACTIVE and in force); none when it does not exist.
async fn credentialed_units(conn: &mut AnyConnection, provider: &str) -> ApiResult<Vec<String>> {
    let now = now_micros();
    let credentials =
        docstore::all_live::<Credential>(conn, &store::collection(&CREDENTIAL, provider)).await?;
    Ok(credentials
        .into_iter()
        .map(|c| c.resource)
        .filter(|c| c.state == CredentialState::Active as i32)
        .filter(|c| domain::period_of(c.effective_period.as_ref()).is_some_and(|p| p.contains(now)))
        .map(|c| c.unit)
        .collect())
}

/// Root-first lineage of a unit (empty when it does not exist).
pub async fn lineage(conn: &mut AnyConnection, unit: &str) -> ApiResult<Vec<String>> {
    // The name may come straight from a request (a unit-scoped caller's CreateServiceUnit with
    // `parent_unit` naming a patient): only a unit's name may be read as a unit. Another kind's
    // body decoded as a ServiceUnit fails (INTERNAL) or, worse, succeeds with garbage parents.
    if domain::UNIT_NAME.parse("unit", unit).is_err() {
        return Ok(Vec::new());
    }
    let mut names = store::lineage_names(conn, unit).await?;
    names.reverse();
    Ok(names)
}

/// A resource in one unit.
pub async fn in_unit(conn: &mut AnyConnection, unit: &str) -> ApiResult<Target> {
    Ok(Target::units(
        names::organization_of(unit),
        vec![lineage(conn, unit).await?],
    ))
}

/// A patient sits in the units of its active enrollments.
pub async fn patient(conn: &mut AnyConnection, patient: &str) -> ApiResult<Target> {
    let enrollments =
        docstore::all_live::<Enrollment>(conn, &store::collection(&ENROLLMENT, patient)).await?;
    let mut lineages = Vec::new();
    for enrollment in enrollments.into_iter().map(|e| e.resource) {
        if enrollment.state == EnrollmentState::Active as i32 {
            lineages.push(lineage(conn, &enrollment.unit).await?);
        }
    }
    Ok(Target::units(names::organization_of(patient), lineages))
}

/// The target of any Org resource name (an unknown one has no units: only organization-wide roles
/// reach it, and they then learn it does not exist).
pub async fn of(conn: &mut AnyConnection, name: &str) -> ApiResult<Target> {
    let organization = names::organization_of(name).to_string();
    let segments: Vec<&str> = name.split('/').collect();
    match segments.as_slice() {
        ["organizations", _] | ["organizations", _, "locations" | "providers", _] => {
            Ok(Target::organization(organization))
        }
        ["organizations", _, "units", _] => in_unit(conn, name).await,
        ["organizations", _, "providers", _, "credentials", _] => {
            match docstore::get::<Credential>(conn, name).await? {
                Some(c) => in_unit(conn, &c.resource.unit).await,
                None => Ok(Target::units(organization, Vec::new())),
            }
        }
        ["organizations", _, "patients", _] => patient(conn, name).await,
        ["organizations", _, "patients", _, "enrollments", _] => {
            match docstore::get::<Enrollment>(conn, name).await? {
                Some(e) => in_unit(conn, &e.resource.unit).await,
                None => Ok(Target::units(organization, Vec::new())),
            }
        }
        ["organizations", _, "patients", _, "coverages", _] => {
            patient(conn, names::parent_of(name)).await
        }
        _ => Ok(Target::units(organization, Vec::new())),
    }
}

/// Where a resource named by another field of a request sits, for the shared reference check
/// (`pm_authz::references`): as [`of`] places it, except that a provider sits in the units it is
/// credentialed in now, so that a unit-scoped caller cannot act on (or learn about) the schedule of a
/// provider outside its units; the organization itself sits at the organization level only if it
/// exists.
pub async fn reference_target(conn: &mut AnyConnection, name: &str) -> ApiResult<Target> {
    let organization = names::organization_of(name).to_string();
    let segments: Vec<&str> = name.split('/').collect();
    match segments.as_slice() {
        ["organizations", _, "providers", _] => {
            let mut lineages = Vec::new();
            for unit in credentialed_units(conn, name).await? {
                lineages.push(lineage(conn, &unit).await?);
            }
            Ok(Target::units(organization, lineages))
        }
        _ => of(conn, name).await,
    }
}

/// The shared reference check's view of Org: each name placed from Org's own store.
pub struct StoreScopes {
    db: pm_runtime::Db,
}

impl StoreScopes {
    /// Places names from `db`, Org's slice.
    pub fn new(db: pm_runtime::Db) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl pm_authz::references::ScopeResolver for StoreScopes {
    async fn targets(&self, _organization: &str, names: &[String]) -> ApiResult<Vec<Target>> {
        let mut conn = self.db.read().await?;
        let mut targets = Vec::with_capacity(names.len());
        for name in names {
            targets.push(reference_target(&mut conn, name).await?);
        }
        Ok(targets)
    }

    /// As the handlers place a call's target ([`of`]).
    async fn call_targets(&self, _organization: &str, names: &[String]) -> ApiResult<Vec<Target>> {
        let mut conn = self.db.read().await?;
        let mut targets = Vec::with_capacity(names.len());
        for name in names {
            targets.push(of(&mut conn, name).await?);
        }
        Ok(targets)
    }
}

/// The units (whole subtrees) the caller may use `permission` in, within `organization`; `None` when
/// an organization-wide role covers it all.
pub async fn visible_units(
    conn: &mut AnyConnection,
    caller: &Caller,
    permission: &str,
    organization: &str,
) -> ApiResult<Option<Vec<String>>> {
    if caller.is_service() {
        return Ok(None);
    }
    let now = now_micros();
    let usable = caller.grants.iter().filter(|g| {
        g.organization == organization
            && g.expire_micros.is_none_or(|end| end > now)
            && pm_authz::policy::role_grants(g.role, permission)
    });
    let mut roots: BTreeSet<String> = BTreeSet::new();
    for grant in usable {
        match grant.role {
            Role::OrganizationAdministrator => return Ok(None),
            Role::Provider => roots.extend(provider_units(conn, caller, organization).await?),
            _ => roots.extend(grant.units.iter().cloned()),
        }
    }
    if roots.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let units =
        docstore::all_live::<ServiceUnit>(conn, &store::collection(&UNIT, organization)).await?;
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    for unit in units.into_iter().map(|u| u.resource) {
        children
            .entry(unit.parent_unit)
            .or_default()
            .push(unit.name);
    }
    let mut visible: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = roots.into_iter().collect();
    while let Some(unit) = queue.pop() {
        if visible.insert(unit.clone()) {
            queue.extend(children.get(&unit).cloned().unwrap_or_default());
        }
    }
    Ok(Some(visible.into_iter().collect()))
}

/// The organizations the caller has any binding in (for ListOrganizations); `None` for services.
pub fn visible_organizations(caller: &Caller) -> Option<Vec<String>> {
    if caller.is_service() {
        return None;
    }
    let organizations: BTreeSet<String> = caller
        .grants
        .iter()
        .map(|g| g.organization.clone())
        .collect();
    Some(organizations.into_iter().collect())
}

/// Narrows a List of `kind_collection` to what `units` cover.
pub fn scope_for(collection_id: &str, units: Vec<String>) -> ListScope {
    match collection_id {
        "units" => ListScope::Names(units),
        "patients" => ListScope::Child(
            "enrollments",
            vec![
                ("unit", units),
                (
                    "state",
                    vec![EnrollmentState::Active.as_str_name().to_string()],
                ),
            ],
        ),
        _ => ListScope::Attr("unit", units),
    }
}
