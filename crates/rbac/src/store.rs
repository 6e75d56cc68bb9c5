//! The RBAC slice: principals and role bindings in the generic resource store.

use pm_api::rbac::{Principal, PrincipalKind, Role, RoleBinding};
use pm_runtime::ApiResult;
use pm_runtime::docstore::{self, Kind, enum_name};
use pm_runtime::names::NamePattern;
use sqlx::AnyConnection;

/// `principals/{principal}`.
pub const PRINCIPAL_NAME: NamePattern = NamePattern(&["principals"]);

/// Principals.
pub const PRINCIPAL: Kind<Principal> = Kind {
    pattern: PRINCIPAL_NAME,
    field: "principal",
    local_parent: true,
    filterable: &["provider", "kind", "external_subject"],
    protected: &[],
    attrs: |p| {
        vec![
            ("provider", p.provider.clone()),
            ("kind", enum_name(p.kind, PrincipalKind::as_str_name)),
            ("external_subject", p.external_subject.clone()),
        ]
    },
};

/// Role bindings: immutable once made (revoke and bind again).
pub const ROLE_BINDING: Kind<RoleBinding> = Kind {
    pattern: NamePattern(&["organizations", "roleBindings"]),
    field: "role_binding",
    local_parent: false,
    filterable: &["principal", "role", "unit"],
    protected: &[
        "principal",
        "role",
        "units",
        "expire_time",
        "break_glass",
        "reason",
    ],
    attrs: |b| {
        let mut attrs = vec![
            ("principal", b.principal.clone()),
            ("role", enum_name(b.role, Role::as_str_name)),
        ];
        attrs.extend(b.units.iter().map(|u| ("unit", u.clone())));
        attrs
    },
};

/// Whether a role binding was ever made in `organization` (live or revoked).
pub async fn any_binding_ever(conn: &mut AnyConnection, organization: &str) -> ApiResult<bool> {
    let row = sqlx::query("SELECT 1 AS one FROM resources WHERE collection = $1 LIMIT 1")
        .bind(format!("{organization}/roleBindings"))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// The live Platform Operator bindings (all of them, or those of `principal` when not empty).
pub async fn platform_bindings_of(
    conn: &mut AnyConnection,
    principal: &str,
) -> ApiResult<Vec<RoleBinding>> {
    let operators = docstore::find_by_attr::<RoleBinding>(
        conn,
        PLATFORM_BINDINGS,
        "role",
        Role::PlatformOperator.as_str_name(),
    )
    .await?;
    Ok(operators
        .into_iter()
        .map(|stored| stored.resource)
        .filter(|b| principal.is_empty() || b.principal == principal)
        .collect())
}

/// The collection of platform-level bindings (`organizations/-`, see `pm_authz::policy::PLATFORM`).
pub const PLATFORM_BINDINGS: &str = "organizations/-/roleBindings";
