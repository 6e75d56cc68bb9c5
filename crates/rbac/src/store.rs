//! The RBAC slice: principals and role bindings in the generic resource store.

use pm_api::rbac::{Principal, PrincipalKind, Role, RoleBinding};
use pm_runtime::docstore::{Kind, enum_name};
use pm_runtime::names::NamePattern;

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
