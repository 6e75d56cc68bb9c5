//! The role model, in one reviewed table, and the permission decision.
//!
//! Roles are bound to a principal within one organization:
//! - Organization Administrator: everything in the organization.
//! - Program Manager: administers the units it is bound to and their subtrees (a binding on a unit
//!   covers every unit below it), including their workflows, enrollments and scheduling, and grants
//!   roles within those units.
//! - Provider: clinical access in the units where its provider record is credentialed at the time of
//!   the request (the caller passes those units in; Org knows them).
//! - Billing Staff: billing and scheduling for the units (workflows) it is assigned.
//! - Platform Operator: the platform, not an organization (bound under [`PLATFORM`]): creates
//!   organizations ([`PLATFORM_WIDE_PERMISSIONS`], allowed whatever organization is named) and grants
//!   a new organization its first administrator (RBAC's rule). It carries no permission on any
//!   organization's resources, so a request for one is refused before the resource is even looked at.
//!
//! Deny by default: no binding, no permission. Units are compared as whole resource names, never as
//! string prefixes (`organizations/ac` must not cover `organizations/acme`).

use std::fmt;

/// A role a principal can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything in the organization.
    OrganizationAdministrator,
    /// Administration of assigned units and their subtrees.
    ProgramManager,
    /// Clinical access where credentialed.
    Provider,
    /// Billing and scheduling for assigned units.
    BillingStaff,
    /// Creates organizations and grants each new one its first administrator; nothing inside one.
    PlatformOperator,
}

/// The scope of platform-level bindings: `organizations/-`, never a real organization's name (`-` is
/// no valid id), so no organization's decision ever matches it.
pub const PLATFORM: &str = "organizations/-";

/// The permissions a Platform Operator binding allows whatever organization the request names (the
/// organization does not exist yet when it is created). Everything else it carries acts on the
/// platform itself (its own principal and token; RBAC checks the grant of a first administrator).
pub const PLATFORM_WIDE_PERMISSIONS: &[&str] = &["org.organizations.create"];

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::OrganizationAdministrator => "Organization Administrator",
            Role::ProgramManager => "Program Manager",
            Role::Provider => "Provider",
            Role::BillingStaff => "Billing Staff",
            Role::PlatformOperator => "Platform Operator",
        })
    }
}

/// The permissions of each role: exact names or `<prefix>.*`. Reviewed as a table: changes here change
/// who can see PHI.
pub const ROLE_PERMISSIONS: &[(Role, &[&str])] = &[
    (
        Role::OrganizationAdministrator,
        &["org.*", "scheduling.*", "billing.*", "rbac.*", "audit.*"],
    ),
    (
        Role::ProgramManager,
        &[
            "org.organizations.get",
            "org.units.*",
            "org.locations.get",
            "org.locations.list",
            "org.providers.get",
            "org.providers.list",
            "org.credentials.*",
            "org.patients.*",
            "org.enrollments.*",
            "org.coverages.*",
            "scheduling.*",
            // The revenue of its units (reports are cut to the caller's units).
            "billing.reports.get",
            "rbac.permissions.list",
            "rbac.bindings.get",
            "rbac.bindings.list",
            "rbac.bindings.create",
            "rbac.bindings.delete",
            "rbac.tokens.issue",
        ],
    ),
    (
        Role::Provider,
        &[
            "org.organizations.get",
            "org.units.get",
            "org.units.list",
            "org.locations.get",
            "org.locations.list",
            "org.providers.get",
            "org.providers.list",
            "org.credentials.get",
            "org.credentials.list",
            "org.credentials.check",
            "org.patients.get",
            "org.patients.list",
            "org.patients.eligibility.get",
            "org.enrollments.get",
            "org.enrollments.list",
            "org.coverages.get",
            "org.coverages.list",
            "scheduling.appointments.get",
            "scheduling.appointments.list",
            "scheduling.encounters.*",
            "rbac.permissions.list",
            // Emergency access for oneself: time-boxed, with a reason, audited as break-glass.
            "rbac.breakglass.invoke",
            "rbac.tokens.issue",
        ],
    ),
    (
        Role::BillingStaff,
        &[
            "org.organizations.get",
            "org.units.get",
            "org.units.list",
            "org.locations.get",
            "org.locations.list",
            "org.providers.get",
            "org.providers.list",
            "org.patients.get",
            "org.patients.list",
            "org.patients.eligibility.get",
            "org.enrollments.get",
            "org.enrollments.list",
            "org.coverages.*",
            "scheduling.*",
            "billing.*",
            "rbac.permissions.list",
            "rbac.tokens.issue",
        ],
    ),
    (
        Role::PlatformOperator,
        &[
            // Creating an organization (by the name its first administrator will be bound in).
            "org.organizations.create",
            // The first administrator's principal and binding (RBAC allows only that grant), and
            // the operator's own token.
            "rbac.principals.create",
            "rbac.bindings.create",
            "rbac.tokens.issue",
            "rbac.permissions.list",
        ],
    ),
];

/// Whether `role` carries `permission`.
pub fn role_grants(role: Role, permission: &str) -> bool {
    ROLE_PERMISSIONS
        .iter()
        .filter(|(r, _)| *r == role)
        .flat_map(|(_, perms)| perms.iter())
        .any(|p| matches_permission(p, permission))
}

fn matches_permission(pattern: &str, permission: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => permission.starts_with(prefix),
        None => pattern == permission,
    }
}

/// One role binding as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The binding's resource name (named in the decision's reason).
    pub binding: String,
    /// The role.
    pub role: Role,
    /// `organizations/{organization}`.
    pub organization: String,
    /// Units the binding covers (with their subtrees); empty for an organization-wide role. For a
    /// Provider binding, the units the provider is credentialed in at the time of the request.
    pub units: Vec<String>,
    /// When a time-boxed (break-glass) binding stops applying, microseconds since the epoch.
    pub expire_micros: Option<i64>,
    /// Granted through break-glass (audited as such).
    pub break_glass: bool,
}

/// What is being accessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The organization the resource belongs to.
    pub organization: String,
    /// Where in the organization.
    pub scope: Scope,
}

/// Where in an organization a resource sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// An organization-level resource that every role of the organization may reach (the
    /// organization itself, locations, providers) or a collection whose listing the caller's units
    /// narrow.
    Organization,
    /// A resource in units: for each, the unit's lineage (root first, the unit last). No units (a
    /// patient enrolled nowhere) means only organization-wide roles reach it.
    Units(Vec<Vec<String>>),
}

impl Target {
    /// An organization-level target.
    pub fn organization(organization: impl Into<String>) -> Self {
        Self {
            organization: organization.into(),
            scope: Scope::Organization,
        }
    }

    /// A target in units, given their lineages.
    pub fn units(organization: impl Into<String>, lineages: Vec<Vec<String>>) -> Self {
        Self {
            organization: organization.into(),
            scope: Scope::Units(lineages),
        }
    }
}

/// The answer with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The binding that allowed it.
    pub binding: Option<String>,
    /// Whether that binding was a break-glass grant.
    pub break_glass: bool,
    /// Why, in words (names bindings, roles and units; never PHI).
    pub reason: String,
}

/// Decides whether any of `grants` allows `permission` on `target` at `now_micros`.
///
/// An organization-wide role allows within its organization. A unit-scoped role allows when one of
/// its units is in the lineage of one of the target's units; on an organization-level target (a
/// collection such as `organizations/acme/patients`) a unit-scoped role is allowed and the caller must
/// narrow the results to the role's units.
pub fn decide(grants: &[Grant], permission: &str, target: &Target, now_micros: i64) -> Decision {
    let mut why_not = Vec::new();
    for grant in grants {
        let platform_wide = grant.role == Role::PlatformOperator
            && grant.organization == PLATFORM
            && PLATFORM_WIDE_PERMISSIONS.contains(&permission);
        if grant.organization != target.organization && !platform_wide {
            continue;
        }
        if grant.expire_micros.is_some_and(|end| end <= now_micros) {
            why_not.push(format!("{} has expired", grant.binding));
            continue;
        }
        if !role_grants(grant.role, permission) {
            why_not.push(format!(
                "{} ({}) does not carry {permission}",
                grant.binding, grant.role
            ));
            continue;
        }
        let covered = match (&grant.role, &target.scope) {
            (Role::OrganizationAdministrator, _) => true,
            (Role::PlatformOperator, _) => platform_wide,
            (_, _) if grant.units.is_empty() => false,
            (_, Scope::Organization) => true,
            (_, Scope::Units(lineages)) => lineages
                .iter()
                .any(|lineage| lineage.iter().any(|unit| grant.units.contains(unit))),
        };
        if covered {
            return Decision {
                allowed: true,
                binding: Some(grant.binding.clone()),
                break_glass: grant.break_glass,
                reason: format!("allowed by {} ({})", grant.binding, grant.role),
            };
        }
        why_not.push(format!(
            "{} ({}) does not cover the resource's units",
            grant.binding, grant.role
        ));
    }
    Decision {
        allowed: false,
        binding: None,
        break_glass: false,
        reason: if why_not.is_empty() {
            format!(
                "no role binding in {} grants {permission}",
                target.organization
            )
        } else {
            why_not.join("; ")
        },
    }
}

/// The units a List narrows to for a caller holding `grants` (`None`: no narrowing, an
/// organization-wide role allows it): every unit a usable binding covers, with its subtree. A
/// Provider binding covers `provider_units` (where the caller's provider record is credentialed
/// now). `tree` holds every unit of the organization with its parent ("" for a root).
pub fn visible_units(
    grants: &[Grant],
    permission: &str,
    organization: &str,
    now_micros: i64,
    provider_units: &[String],
    tree: &[(String, String)],
) -> Option<Vec<String>> {
    let mut roots: Vec<String> = Vec::new();
    for grant in grants.iter().filter(|g| {
        g.organization == organization
            && g.expire_micros.is_none_or(|end| end > now_micros)
            && role_grants(g.role, permission)
    }) {
        match grant.role {
            Role::OrganizationAdministrator => return None,
            Role::PlatformOperator => {}
            Role::Provider => roots.extend(provider_units.iter().cloned()),
            _ => roots.extend(grant.units.iter().cloned()),
        }
    }
    let mut children: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for (unit, parent) in tree {
        children.entry(parent.as_str()).or_default().push(unit);
    }
    let mut visible = std::collections::BTreeSet::new();
    while let Some(unit) = roots.pop() {
        if visible.insert(unit.clone()) {
            roots.extend(
                children
                    .get(unit.as_str())
                    .into_iter()
                    .flatten()
                    .map(|u| u.to_string()),
            );
        }
    }
    Some(visible.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, units: &[&str]) -> Grant {
        Grant {
            binding: format!("organizations/acme/roleBindings/{role:?}").to_lowercase(),
            role,
            organization: "organizations/acme".into(),
            units: units.iter().map(|u| u.to_string()).collect(),
            expire_micros: None,
            break_glass: false,
        }
    }

    fn unit_target(lineage: &[&str]) -> Target {
        Target::units(
            "organizations/acme",
            vec![lineage.iter().map(|u| u.to_string()).collect()],
        )
    }

    const CLINIC: &str = "organizations/acme/units/clinic";
    const CCM: &str = "organizations/acme/units/ccm";

    #[test]
    fn deny_by_default() {
        let decision = decide(&[], "org.patients.get", &unit_target(&[CLINIC]), 0);
        assert!(!decision.allowed);
        assert!(decision.reason.contains("no role binding"));
    }

    #[test]
    fn a_binding_on_a_unit_covers_its_subtree_only() {
        let manager = [grant(Role::ProgramManager, &[CLINIC])];
        assert!(
            decide(
                &manager,
                "org.enrollments.create",
                &unit_target(&[CLINIC, CCM]),
                0
            )
            .allowed
        );
        let ccm_only = [grant(Role::ProgramManager, &[CCM])];
        assert!(
            !decide(
                &ccm_only,
                "org.enrollments.create",
                &unit_target(&[CLINIC]),
                0
            )
            .allowed
        );
    }

    #[test]
    fn units_are_compared_whole_not_as_prefixes() {
        let short = [grant(
            Role::ProgramManager,
            &["organizations/acme/units/cc"],
        )];
        assert!(!decide(&short, "org.patients.get", &unit_target(&[CCM]), 0).allowed);
        let other_org = Target::organization("organizations/acmecorp");
        assert!(
            !decide(
                &[grant(Role::OrganizationAdministrator, &[])],
                "org.patients.get",
                &other_org,
                0
            )
            .allowed
        );
    }

    #[test]
    fn roles_carry_only_their_permissions() {
        let billing = [grant(Role::BillingStaff, &[CLINIC])];
        assert!(
            decide(
                &billing,
                "billing.claims.create",
                &unit_target(&[CLINIC]),
                0
            )
            .allowed
        );
        let refused = decide(&billing, "org.units.update", &unit_target(&[CLINIC]), 0);
        assert!(!refused.allowed);
        assert!(
            refused.reason.contains("does not carry org.units.update"),
            "{}",
            refused.reason
        );
        let provider = [grant(Role::Provider, &[CLINIC])];
        assert!(decide(&provider, "org.patients.get", &unit_target(&[CLINIC]), 0).allowed);
        assert!(!decide(&provider, "org.patients.delete", &unit_target(&[CLINIC]), 0).allowed);
        assert!(
            !decide(
                &provider,
                "rbac.bindings.create",
                &unit_target(&[CLINIC]),
                0
            )
            .allowed
        );
    }

    #[test]
    fn a_resource_in_no_unit_is_for_organization_admins_only() {
        let nowhere = Target::units("organizations/acme", vec![]);
        assert!(
            !decide(
                &[grant(Role::ProgramManager, &[CLINIC])],
                "org.patients.get",
                &nowhere,
                0
            )
            .allowed
        );
        assert!(
            decide(
                &[grant(Role::OrganizationAdministrator, &[])],
                "org.patients.get",
                &nowhere,
                0
            )
            .allowed
        );
        let collection = Target::organization("organizations/acme");
        assert!(
            decide(
                &[grant(Role::ProgramManager, &[CLINIC])],
                "org.patients.list",
                &collection,
                0
            )
            .allowed
        );
    }

    #[test]
    fn a_provider_without_credentialed_units_sees_nothing() {
        let provider = [grant(Role::Provider, &[])];
        assert!(!decide(&provider, "org.patients.get", &unit_target(&[CLINIC]), 0).allowed);
    }

    #[test]
    fn break_glass_expires_and_is_reported() {
        let mut emergency = grant(Role::Provider, &[CLINIC]);
        emergency.break_glass = true;
        emergency.expire_micros = Some(1_000);
        let decision = decide(
            std::slice::from_ref(&emergency),
            "org.patients.get",
            &unit_target(&[CLINIC]),
            999,
        );
        assert!(decision.allowed && decision.break_glass);
        let expired = decide(
            &[emergency],
            "org.patients.get",
            &unit_target(&[CLINIC]),
            1_000,
        );
        assert!(!expired.allowed);
        assert!(expired.reason.contains("expired"));
    }

    #[test]
    fn organization_admin_allows_everything_in_its_organization() {
        let admin = [grant(Role::OrganizationAdministrator, &[])];
        for permission in [
            "org.units.delete",
            "rbac.bindings.create",
            "billing.claims.submit",
        ] {
            assert!(
                decide(&admin, permission, &unit_target(&[CLINIC]), 0).allowed,
                "{permission}"
            );
        }
    }

    fn platform_operator() -> Grant {
        Grant {
            binding: format!("{PLATFORM}/roleBindings/ops"),
            role: Role::PlatformOperator,
            organization: PLATFORM.into(),
            units: Vec::new(),
            expire_micros: None,
            break_glass: false,
        }
    }

    #[test]
    fn a_platform_operator_creates_organizations_and_reaches_nothing_inside_one() {
        let operator = [platform_operator()];
        let new_org = Target::organization("organizations/riverside");
        let allowed = decide(&operator, "org.organizations.create", &new_org, 0);
        assert!(allowed.allowed, "{}", allowed.reason);
        assert_eq!(
            allowed.binding.as_deref(),
            Some("organizations/-/roleBindings/ops")
        );
        for permission in [
            "org.organizations.get",
            "org.organizations.update",
            "org.patients.get",
            "org.patients.list",
            "org.units.create",
            "scheduling.appointments.create",
            "rbac.bindings.list",
            "audit.accesses.list",
        ] {
            for target in [
                Target::organization("organizations/acme"),
                unit_target(&[CLINIC]),
                Target::units("organizations/acme", vec![]),
            ] {
                let refused = decide(&operator, permission, &target, 0);
                assert!(!refused.allowed, "{permission} on {target:?}");
            }
        }
        // It lists no units of any organization either.
        assert_eq!(
            visible_units(
                &operator,
                "org.patients.list",
                "organizations/acme",
                0,
                &[],
                &[]
            ),
            Some(Vec::new())
        );
        // Only a platform binding is platform-wide: the role bound in an organization (which RBAC
        // never writes) would not create other organizations.
        let misplaced = Grant {
            organization: "organizations/acme".into(),
            ..platform_operator()
        };
        assert!(!decide(&[misplaced], "org.organizations.create", &new_org, 0).allowed);
    }

    #[test]
    fn every_declared_permission_is_reachable_by_some_role() {
        for rule in pm_api::RULES {
            assert!(
                ROLE_PERMISSIONS
                    .iter()
                    .any(|(role, _)| role_grants(*role, rule.permission)),
                "{} is granted by no role",
                rule.permission
            );
        }
    }
}
