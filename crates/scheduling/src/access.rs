//! Object-level authorization for Scheduling: where a request's resource sits in Org's unit tree,
//! decided against the caller's bindings once the resource (or its unit) is known. A resource out of
//! scope and one that does not exist give the same PERMISSION_DENIED.

use chrono::Utc;
use pm_authz::layer::Caller;
use pm_authz::policy::{self, Role, Target};
use pm_runtime::time::now_micros;
use pm_runtime::{ApiResult, names};
use tonic::Code;

use crate::org::OrgView;

pub use pm_authz::layer::out_of_reach as denied;

fn permission_of(method: &str) -> &'static str {
    pm_api::rule_for(method)
        .map(|r| r.permission)
        .unwrap_or_default()
}

/// The units the caller's provider record is credentialed in now.
async fn provider_units(org: &OrgView, caller: &Caller, organization: &str) -> Vec<String> {
    let Some(provider) = caller.provider.as_deref() else {
        return Vec::new();
    };
    if !caller.is_provider_in(organization) || names::organization_of(provider) != organization {
        return Vec::new();
    }
    let now = Utc::now();
    match org.credentials(provider).await {
        Ok(credentials) => credentials
            .into_iter()
            .filter(|c| c.active && c.from <= now && c.until.is_none_or(|u| now < u))
            .map(|c| c.unit)
            .collect(),
        // Without Org's answer the Provider binding covers nothing: deny rather than guess.
        Err(_) => Vec::new(),
    }
}

/// Refuses unless `caller` may call `method` on `resource`, which sits in `unit` (or at the
/// organization level when `unit` is `None`).
pub async fn authorize(
    org: &OrgView,
    caller: &Caller,
    method: &str,
    resource: &str,
    unit: Option<&str>,
) -> ApiResult<()> {
    if caller.is_service() {
        return Ok(());
    }
    let permission = permission_of(method);
    let organization = names::organization_of(resource);
    let now = now_micros();
    // An organization-wide role decides without asking Org where the resource sits.
    let organization_wide = Target::units(organization, Vec::new());
    if caller
        .decide(permission, &organization_wide, &[], now)
        .allowed
    {
        return Ok(());
    }
    let target = match unit {
        None => Target::organization(organization),
        Some(unit) if names::organization_of(unit) == organization => match org.unit(unit).await {
            Ok(info) => Target::units(organization, vec![info.lineage]),
            Err(err) if err.code == Code::Unavailable => return Err(err),
            Err(_) => Target::units(organization, Vec::new()),
        },
        Some(_) => Target::units(organization, Vec::new()),
    };
    let provider_units = provider_units(org, caller, organization).await;
    caller.enforce(permission, &target, &provider_units, resource)
}

/// The units a List by `caller` narrows to (`None`: everything in the organization).
pub async fn visible_units(
    org: &OrgView,
    caller: &Caller,
    method: &str,
    organization: &str,
) -> ApiResult<Option<Vec<String>>> {
    if caller.is_service() {
        return Ok(None);
    }
    let permission = permission_of(method);
    let needs_tree = caller
        .grants
        .iter()
        .any(|g| g.organization == organization && g.role != Role::OrganizationAdministrator);
    let tree = if needs_tree {
        org.unit_tree(organization).await?
    } else {
        Vec::new()
    };
    let provider_units = provider_units(org, caller, organization).await;
    Ok(policy::visible_units(
        &caller.grants,
        permission,
        organization,
        now_micros(),
        &provider_units,
        &tree,
    ))
}

/// Scheduling's own names placed under the Org resource whose scope they inherit, for the shared
/// reference check (`pm_authz::references::OrgScopes`).
pub struct OwnPlacement {
    db: pm_runtime::Db,
}

impl OwnPlacement {
    /// Places names from `db`, Scheduling's slice.
    pub fn new(db: pm_runtime::Db) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl pm_authz::references::OwnNames for OwnPlacement {
    async fn place(&self, names: &[String]) -> ApiResult<Vec<Option<String>>> {
        let mut conn = self.db.read().await?;
        let mut placed = Vec::with_capacity(names.len());
        for name in names {
            placed.push(crate::store::org_placement(&mut conn, name).await?);
        }
        Ok(placed)
    }

    /// As the handlers check a call's target: a visit type in the unit its name says, a room at its
    /// location and a provider's time off at its provider (both organization-level), whether or
    /// not they exist (the handler answers NOT_FOUND); the others where they are stored.
    async fn place_target(&self, names: &[String]) -> ApiResult<Vec<Option<String>>> {
        let mut placed = Vec::with_capacity(names.len());
        for name in names {
            placed.push(match target_parent(name) {
                Some(parent) => Some(parent.to_string()),
                None => self
                    .place(std::slice::from_ref(name))
                    .await?
                    .pop()
                    .flatten(),
            });
        }
        Ok(placed)
    }
}

/// The Org resource a Scheduling target sits under by its name alone, for the kinds whose handlers
/// check their parent (`None` for the others).
pub fn target_parent(name: &str) -> Option<&str> {
    use crate::store::{AVAILABILITY_EXCEPTION, ROOM, VISIT_TYPE};
    let by_name = VISIT_TYPE.pattern.parse("", name).is_ok()
        || ROOM.pattern.parse("", name).is_ok()
        || AVAILABILITY_EXCEPTION.pattern.parse("", name).is_ok();
    by_name.then(|| names::parent_of(name))
}
