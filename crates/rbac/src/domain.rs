//! RBAC's rules: the permission catalog, principal and binding validation, and how a stored binding
//! becomes a [`Grant`] for the decision in `pm_authz::policy`.

use std::collections::BTreeMap;

use pm_api::MethodRule;
use pm_api::rbac::{Permission, Principal, PrincipalKind, RoleBinding};
use pm_authz::policy::Role;
use pm_runtime::names;
use pm_runtime::time::{Micros, to_micros};
use pm_runtime::{ApiResult, Violations};

use pm_runtime::names::patterns::{PROVIDER as PROVIDER_NAME, UNIT as UNIT_NAME};
/// Longest break-glass grant.
pub const MAX_BREAK_GLASS_MICROS: Micros = 12 * 3600 * 1_000_000;

/// Every declared permission with the methods requiring it, ordered by name.
pub fn catalog(rules: &[MethodRule]) -> Vec<Permission> {
    let mut by_name: BTreeMap<&str, Permission> = BTreeMap::new();
    for rule in rules {
        let entry = by_name
            .entry(rule.permission)
            .or_insert_with(|| Permission {
                name: rule.permission.to_string(),
                methods: Vec::new(),
                phi: false,
            });
        entry.methods.push(rule.method.to_string());
        entry.phi |= rule.phi;
    }
    by_name.into_values().collect()
}

pub use pm_authz::layer::role_of;

/// Validates a principal.
pub fn validate_principal(principal: &Principal) -> ApiResult<()> {
    let mut v = Violations::new("principal");
    v.check(
        !principal.display_name.trim().is_empty(),
        "display_name",
        "must not be empty",
    );
    v.check(
        PrincipalKind::try_from(principal.kind).is_ok_and(|k| k != PrincipalKind::Unspecified),
        "kind",
        "must be one of the PRINCIPAL_KIND_* values",
    );
    v.check(
        principal.provider.is_empty()
            || PROVIDER_NAME.parse("provider", &principal.provider).is_ok(),
        "provider",
        "must be a resource name like organizations/{organization}/providers/{provider}",
    );
    v.finish()
}

/// Validates a binding against its principal: units per role, same organization, expiry in the future.
pub fn validate_binding(
    binding: &RoleBinding,
    principal: &Principal,
    now: Micros,
) -> ApiResult<()> {
    let mut v = Violations::new("role_binding");
    let organization = names::organization_of(&binding.name);
    match role_of(binding.role) {
        None => v.add("role", "must be one of the ROLE_* values"),
        Some(Role::OrganizationAdministrator) => v.check(
            binding.units.is_empty(),
            "units",
            "must be empty: the role covers the organization",
        ),
        Some(Role::Provider) => {
            v.check(
                binding.units.is_empty(),
                "units",
                "must be empty: a provider's units follow its credentials",
            );
            v.check(
                names::organization_of(&principal.provider) == organization
                    && !principal.provider.is_empty(),
                "principal",
                "must have a provider record in this organization",
            );
        }
        Some(Role::ProgramManager | Role::BillingStaff) => {
            v.check(
                !binding.units.is_empty(),
                "units",
                "must name at least one unit",
            );
        }
        Some(Role::PlatformOperator) => v.add(
            "role",
            "ROLE_PLATFORM_OPERATOR is bound only by `pm admin bootstrap`, never through the API",
        ),
    }
    for (i, unit) in binding.units.iter().enumerate() {
        let ok =
            UNIT_NAME.parse("unit", unit).is_ok() && names::organization_of(unit) == organization;
        v.check(
            ok,
            format!("units[{i}]"),
            "must be a unit of the same organization",
        );
    }
    if let Some(expire) = &binding.expire_time {
        v.check(
            to_micros(expire) > now,
            "expire_time",
            "must be in the future",
        );
    }
    v.finish()
}

/// What a platform operator may grant (see [`pm_authz::policy::Role::PlatformOperator`]): the first
/// Organization Administrator of an organization, i.e. one in which no role binding was ever made
/// (`organization_has_bindings`: live or revoked), to a principal that is no platform operator itself
/// (`principal_is_operator`), so that the platform never holds a role inside an organization.
pub fn first_administrator(
    binding: &RoleBinding,
    organization_has_bindings: bool,
    principal_is_operator: bool,
) -> ApiResult<()> {
    let organization = names::organization_of(&binding.name);
    if role_of(binding.role) != Some(Role::OrganizationAdministrator) {
        return Err(grant_refused(
            "a platform operator grants only ROLE_ORGANIZATION_ADMINISTRATOR (the first one of a new organization)",
        ));
    }
    if organization_has_bindings {
        return Err(grant_refused(&format!(
            "{organization} has role bindings already: its own administrators grant roles there"
        )));
    }
    if principal_is_operator {
        return Err(grant_refused(
            "a platform operator cannot be bound in an organization: make another principal its administrator",
        ));
    }
    Ok(())
}

/// A grant the caller may not make.
pub fn grant_refused(message: &str) -> pm_runtime::ApiError {
    pm_runtime::ApiError::new(
        tonic::Code::PermissionDenied,
        "GRANT_OUT_OF_SCOPE",
        message.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_api::rbac::Role as PbRole;

    #[test]
    fn groups_methods_by_permission_and_marks_phi() {
        let catalog = catalog(pm_api::RULES);
        let patients_get = catalog
            .iter()
            .find(|p| p.name == "org.patients.get")
            .expect("org.patients.get is declared");
        assert!(patients_get.phi);
        assert_eq!(
            patients_get.methods,
            vec!["/pm.org.v1.OrgService/GetPatient"]
        );
        let units_get = catalog
            .iter()
            .find(|p| p.name == "org.units.get")
            .expect("declared");
        assert_eq!(
            units_get.methods.len(),
            2,
            "GetServiceUnit and GetEffectivePolicy"
        );
        assert!(!units_get.phi);
        assert!(catalog.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn every_rpc_of_the_contracts_has_a_rule() {
        // build.rs refuses to build without one; this checks the table reached the crate intact.
        let methods: usize = catalog(pm_api::RULES).iter().map(|p| p.methods.len()).sum();
        assert_eq!(methods, pm_api::RULES.len());
        assert!(pm_api::rule_for("/pm.org.v1.OrgService/CreateServiceUnit").is_some());
        assert!(pm_api::rule_for("/pm.org.v1.OrgService/NoSuchMethod").is_none());
    }

    fn binding(role: PbRole, units: &[&str]) -> RoleBinding {
        RoleBinding {
            name: "organizations/acme/roleBindings/b".into(),
            principal: "principals/ann".into(),
            role: role as i32,
            units: units.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn units_follow_the_role() {
        let person = Principal {
            name: "principals/ann".into(),
            ..Default::default()
        };
        assert!(
            validate_binding(&binding(PbRole::OrganizationAdministrator, &[]), &person, 0).is_ok()
        );
        assert!(
            validate_binding(
                &binding(
                    PbRole::OrganizationAdministrator,
                    &["organizations/acme/units/a"]
                ),
                &person,
                0
            )
            .is_err()
        );
        assert!(validate_binding(&binding(PbRole::ProgramManager, &[]), &person, 0).is_err());
        assert!(
            validate_binding(
                &binding(PbRole::ProgramManager, &["organizations/other/units/a"]),
                &person,
                0
            )
            .is_err()
        );
        assert!(
            validate_binding(
                &binding(PbRole::ProgramManager, &["organizations/acme/units/a"]),
                &person,
                0
            )
            .is_ok()
        );
        assert!(
            validate_binding(&binding(PbRole::Provider, &[]), &person, 0).is_err(),
            "no provider record"
        );
        let clinician = Principal {
            provider: "organizations/acme/providers/okafor".into(),
            ..person
        };
        assert!(validate_binding(&binding(PbRole::Provider, &[]), &clinician, 0).is_ok());
        let operator = validate_binding(&binding(PbRole::PlatformOperator, &[]), &clinician, 0)
            .expect_err("no API call binds a platform operator");
        assert!(
            operator.message.contains("pm admin bootstrap"),
            "{}",
            operator.message
        );
    }

    #[test]
    fn a_platform_operator_grants_only_the_first_administrator() {
        let admin = binding(PbRole::OrganizationAdministrator, &[]);
        assert!(first_administrator(&admin, false, false).is_ok());
        let again = first_administrator(&admin, true, false).expect_err("bindings exist");
        assert_eq!(again.code, tonic::Code::PermissionDenied);
        assert!(
            again
                .message
                .contains("organizations/acme has role bindings already")
        );
        let itself = first_administrator(&admin, false, true).expect_err("an operator");
        assert!(
            itself.message.contains("cannot be bound"),
            "{}",
            itself.message
        );
        let manager = binding(PbRole::ProgramManager, &["organizations/acme/units/a"]);
        let other = first_administrator(&manager, false, false).expect_err("not an admin");
        assert!(
            other
                .message
                .contains("only ROLE_ORGANIZATION_ADMINISTRATOR")
        );
    }
}
