//! The scope check of every resource a request names besides its target: the fields a method's rule
//! declares in `reference_fields` (a patient, a provider, a unit, a location, a visit type...).
//! Each non-empty value is decided with the method's permission against where that resource sits,
//! before the handler runs, so a call permitted on its target cannot write or reveal through another
//! field. A name out of the caller's scope and a name that does not exist get the same
//! PERMISSION_DENIED (the message names only what the caller sent).
//!
//! Where a resource sits comes from a [`ScopeResolver`]: Org answers from its own store, other
//! services through [`OrgScopes`] (Org's `ResolveScopes`, plus their own names mapped onto the Org
//! resource they belong to).

use std::collections::HashMap;

use pm_api::MethodRule;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{ResolveScopesRequest, ResourceScope};
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, names};
use prost_reflect::DynamicMessage;
use tonic::Code;

use crate::layer::{Caller, out_of_reach};
use crate::policy::Target;

/// Where named resources sit in their organization's unit tree.
#[tonic::async_trait]
pub trait ScopeResolver: Send + Sync + 'static {
    /// The target of each name, in the order asked; a name that does not exist sits in no unit.
    /// Every name belongs to `organization`.
    async fn targets(&self, organization: &str, names: &[String]) -> ApiResult<Vec<Target>>;
}

/// Checks the values of `rule`'s reference fields in `message` against `caller`'s scope.
pub async fn check(
    caller: &Caller,
    rule: &MethodRule,
    message: &DynamicMessage,
    resolver: Option<&dyn ScopeResolver>,
) -> ApiResult<()> {
    if caller.is_service() || caller.bootstrap || rule.reference_fields.is_empty() {
        return Ok(());
    }
    let now = now_micros();
    let mut by_organization: HashMap<String, Vec<String>> = HashMap::new();
    for field in rule.reference_fields {
        for (_, value) in crate::edge::values_at(message, field) {
            // A value that is no resource name at all is the handler's to refuse (INVALID_ARGUMENT
            // naming its field); it cannot name anything out of scope.
            if !is_resource_name(&value) {
                continue;
            }
            let organization = names::organization_of(&value).to_string();
            // An organization-wide role reaches everything in its organization: nothing to look up.
            let everywhere = Target::units(organization.clone(), Vec::new());
            if caller
                .decide(rule.permission, &everywhere, &[], now)
                .allowed
            {
                continue;
            }
            if !caller.grants.iter().any(|g| g.organization == organization) {
                return Err(out_of_reach(&value));
            }
            by_organization.entry(organization).or_default().push(value);
        }
    }
    if by_organization.is_empty() {
        return Ok(());
    }
    let Some(resolver) = resolver else {
        // A rule declares references this service cannot place: refuse rather than guess.
        let first = by_organization
            .into_values()
            .flatten()
            .next()
            .unwrap_or_default();
        return Err(out_of_reach(&first));
    };
    for (organization, mut wanted) in by_organization {
        wanted.sort();
        wanted.dedup();
        let provider_units = own_provider_units(caller, &organization, resolver).await?;
        let targets = resolver.targets(&organization, &wanted).await?;
        if targets.len() != wanted.len() {
            return Err(ApiError::new(
                Code::Unavailable,
                "SCOPES_UNAVAILABLE",
                "the resources' scopes could not be resolved, retry later",
            ));
        }
        for (name, target) in wanted.iter().zip(&targets) {
            caller.enforce(rule.permission, target, &provider_units, name)?;
        }
    }
    Ok(())
}

/// The units the caller's own provider record is credentialed in (for a Provider binding).
async fn own_provider_units(
    caller: &Caller,
    organization: &str,
    resolver: &dyn ScopeResolver,
) -> ApiResult<Vec<String>> {
    let Some(provider) = caller.provider.as_deref() else {
        return Ok(Vec::new());
    };
    if !caller.is_provider_in(organization) || names::organization_of(provider) != organization {
        return Ok(Vec::new());
    }
    let targets = resolver
        .targets(organization, &[provider.to_string()])
        .await?;
    Ok(leaf_units(targets.first()))
}

/// The units a target sits in directly (the last of each lineage).
pub fn leaf_units(target: Option<&Target>) -> Vec<String> {
    match target.map(|t| &t.scope) {
        Some(crate::policy::Scope::Units(lineages)) => {
            lineages.iter().filter_map(|l| l.last().cloned()).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether `value` has the shape of a resource name: `organizations/{id}` followed by
/// `collection/{id}` pairs.
pub fn is_resource_name(value: &str) -> bool {
    let segments: Vec<&str> = value.split('/').collect();
    segments.len() >= 2
        && segments.len().is_multiple_of(2)
        && segments[0] == "organizations"
        && segments
            .chunks(2)
            .all(|pair| !pair[0].is_empty() && names::is_valid_id(pair[1]))
}

/// The wire form of a target (Org's `ResolveScopes` answer).
pub fn scope_of(name: &str, target: &Target) -> ResourceScope {
    match &target.scope {
        crate::policy::Scope::Organization => ResourceScope {
            name: name.to_string(),
            organization_level: true,
            lineages: Vec::new(),
        },
        crate::policy::Scope::Units(lineages) => ResourceScope {
            name: name.to_string(),
            organization_level: false,
            lineages: lineages
                .iter()
                .map(|units| pm_api::org::UnitLineage {
                    units: units.clone(),
                })
                .collect(),
        },
    }
}

fn target_of(organization: &str, scope: ResourceScope) -> Target {
    if scope.organization_level {
        Target::organization(organization)
    } else {
        Target::units(
            organization,
            scope.lineages.into_iter().map(|l| l.units).collect(),
        )
    }
}

/// A service's own resources, placed under the Org resource whose scope they inherit (a visit type
/// under its unit, an appointment under its unit, a provider's time off under the provider).
#[tonic::async_trait]
pub trait OwnNames: Send + Sync + 'static {
    /// For each name: `Some(org_name)` when it is this service's resource and exists, `None` when it
    /// is this service's and does not exist; names of Org are returned unchanged.
    async fn place(&self, names: &[String]) -> ApiResult<Vec<Option<String>>>;
}

/// The resolver of a service other than Org: its own names through [`OwnNames`], then Org's
/// `ResolveScopes` over mTLS with the service's identity.
pub struct OrgScopes {
    client: OrgServiceClient<tonic::transport::Channel>,
    own: Option<std::sync::Arc<dyn OwnNames>>,
}

impl OrgScopes {
    /// A resolver asking Org over `channel`, placing this service's names with `own`.
    pub fn new(
        channel: tonic::transport::Channel,
        own: Option<std::sync::Arc<dyn OwnNames>>,
    ) -> Self {
        Self {
            client: OrgServiceClient::new(channel),
            own,
        }
    }
}

#[tonic::async_trait]
impl ScopeResolver for OrgScopes {
    async fn targets(&self, organization: &str, names: &[String]) -> ApiResult<Vec<Target>> {
        let placed: Vec<Option<String>> = match &self.own {
            Some(own) => own.place(names).await?,
            None => names.iter().cloned().map(Some).collect(),
        };
        let asked: Vec<String> = placed.iter().flatten().cloned().collect();
        let answers: Vec<ResourceScope> = if asked.is_empty() {
            Vec::new()
        } else {
            self.client
                .clone()
                .resolve_scopes(ResolveScopesRequest {
                    parent: organization.to_string(),
                    names: asked,
                })
                .await
                .map_err(|status| {
                    tracing::warn!(code = ?status.code(), "org could not resolve scopes");
                    ApiError::new(
                        Code::Unavailable,
                        "PEER_UNAVAILABLE",
                        "org could not resolve the resources' scopes, retry later",
                    )
                })?
                .into_inner()
                .scopes
        };
        let mut answers = answers.into_iter();
        Ok(placed
            .into_iter()
            .map(|place| match place {
                Some(_) => answers
                    .next()
                    .map(|scope| target_of(organization, scope))
                    .unwrap_or_else(|| Target::units(organization, Vec::new())),
                None => Target::units(organization, Vec::new()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_recognized_by_shape() {
        assert!(is_resource_name("organizations/acme"));
        assert!(is_resource_name("organizations/acme/patients/p-1"));
        assert!(!is_resource_name("organizations/acme/patients/"));
        assert!(!is_resource_name("organizations/acme/patients"));
        assert!(!is_resource_name("patients/p1"));
        assert!(!is_resource_name("organizations/ACME"));
        assert!(!is_resource_name(""));
    }
}

/// Every request field that can name a resource is either the rule's target or declared as a
/// reference: a field added to a request message without a declaration fails here.
#[cfg(test)]
mod coverage {
    use prost_reflect::{Kind, MessageDescriptor};

    /// Field names that hold resource names wherever they appear.
    const NAMING: &[&str] = &[
        "name",
        "parent",
        "patient",
        "patients",
        "provider",
        "providers",
        "unit",
        "units",
        "parent_unit",
        "location",
        "locations",
        "room",
        "visit_type",
        "scope",
        "resource",
        "principal",
        "appointment",
        "encounter",
        "offered_appointment",
        "series",
        "billing_entity",
        "fee_schedule",
        "contract",
        "payer",
    ];

    /// Fields that can name a resource but need no scope check, each with the reason.
    const EXEMPT: &[(&str, &str, &str)] = &[
        // Output-only names of a resource being created: the server assigns them.
        (
            "*",
            "service_unit.name",
            "output only on create; the target on update",
        ),
        (
            "*",
            "location.name",
            "output only on create; the target on update",
        ),
        (
            "*",
            "provider.name",
            "output only on create; the target on update",
        ),
        (
            "*",
            "credential.name",
            "output only on create; the target on update",
        ),
        (
            "*",
            "patient.name",
            "output only on create; the target on update",
        ),
        ("*", "enrollment.name", "output only"),
        (
            "*",
            "enrollment.history.unit",
            "output only: the enrollment's history",
        ),
        (
            "*",
            "coverage.name",
            "output only on create; the target on update",
        ),
        (
            "*",
            "organization.name",
            "output only on create; the target on update",
        ),
        ("*", "visit_type.name", "output only"),
        ("*", "availability_rule.name", "output only"),
        ("*", "availability_exception.name", "output only"),
        ("*", "room.name", "output only"),
        ("*", "appointment.name", "output only"),
        ("*", "appointment.series", "output only: set by BookSeries"),
        ("*", "waitlist_entry.name", "output only"),
        ("*", "waitlist_entry.offered_appointment", "output only"),
        ("*", "role_binding.name", "output only"),
        ("*", "principal.name", "output only"),
        // Billing names on Org's billing profiles and coverage: Billing will own and check them.
        (
            "*",
            "service_unit.billing_profile.billing_entity",
            "Billing's resource, checked there",
        ),
        (
            "*",
            "service_unit.billing_profile.fee_schedule",
            "Billing's resource, checked there",
        ),
        (
            "*",
            "service_unit.billing_profile.payer_contracts.payer",
            "Billing's resource",
        ),
        (
            "*",
            "service_unit.billing_profile.payer_contracts.contract",
            "Billing's resource",
        ),
        (
            "*",
            "service_unit.billing_profile.accepted_payers.payer",
            "Billing's resource",
        ),
        (
            "*",
            "service_unit.billing_profile.accepted_payers.contract",
            "Billing's resource",
        ),
        (
            "*",
            "coverage.payer",
            "a payer id, not yet a resource of the mesh",
        ),
        ("*", "appointment.payer", "output only"),
        // RBAC's own names: principals and bindings are checked by RBAC's handlers.
        (
            "/pm.org.v1.OrgService/CheckAccess",
            "principal",
            "an RBAC principal; admins only",
        ),
        (
            "/pm.rbac.v1.RbacService/*",
            "principal",
            "RBAC's own resource",
        ),
        (
            "/pm.rbac.v1.RbacService/*",
            "role_binding.principal",
            "RBAC's own resource",
        ),
        (
            "/pm.rbac.v1.RbacService/*",
            "role_binding.units",
            "checked by RBAC's grant rules",
        ),
        (
            "/pm.rbac.v1.RbacService/*",
            "principal.provider",
            "checked by RBAC against Org",
        ),
        (
            "/pm.rbac.v1.RbacService/BreakGlass",
            "units",
            "break-glass asks for units outside the caller's scope by design: time-boxed, audited",
        ),
    ];

    fn exempt(method: &str, path: &str) -> bool {
        EXEMPT.iter().any(|(m, p, _)| {
            *p == path
                && (*m == "*"
                    || *m == method
                    || m.strip_suffix('*')
                        .is_some_and(|prefix| method.starts_with(prefix)))
        })
    }

    fn naming_paths(
        message: &MessageDescriptor,
        prefix: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if depth > 4 || message.full_name().starts_with("google.") {
            return;
        }
        for field in message.fields() {
            let path = if prefix.is_empty() {
                field.name().to_string()
            } else {
                format!("{prefix}.{}", field.name())
            };
            match field.kind() {
                Kind::String if NAMING.contains(&field.name()) => out.push(path),
                Kind::Message(inner) => naming_paths(&inner, &path, depth + 1, out),
                _ => {}
            }
        }
    }

    #[test]
    fn every_request_field_that_names_a_resource_is_declared() {
        let mut undeclared = Vec::new();
        for rule in pm_api::RULES {
            let Some(input) = crate::edge::input_of(rule.method) else {
                undeclared.push(format!("{}: no input message", rule.method));
                continue;
            };
            let mut paths = Vec::new();
            naming_paths(&input, "", 0, &mut paths);
            for path in paths {
                let declared = path == rule.resource_field
                    || rule.reference_fields.contains(&path.as_str())
                    || exempt(rule.method, &path);
                if !declared {
                    undeclared.push(format!("{} {path}", rule.method));
                }
            }
        }
        assert!(
            undeclared.is_empty(),
            "request fields that can name a resource but are neither the rule's resource_field, \
             nor in its reference_fields, nor exempt with a reason:\n{}",
            undeclared.join("\n")
        );
    }

    #[test]
    fn every_declared_reference_is_a_string_field_of_the_request() {
        for rule in pm_api::RULES {
            let Some(input) = crate::edge::input_of(rule.method) else {
                continue;
            };
            let mut paths = Vec::new();
            naming_paths(&input, "", 0, &mut paths);
            for reference in rule.reference_fields {
                assert!(
                    paths.iter().any(|p| p == reference),
                    "{} declares {reference}, which is no resource-naming field of its request",
                    rule.method
                );
            }
        }
    }
}
