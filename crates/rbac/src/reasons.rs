//! The error reasons RBAC sends beyond the shared ones ([`pm_runtime::reasons::SHARED`] and the
//! authorization layer's [`pm_authz::reasons::CATALOG`]). ErrorInfo domain: `rbac.pm.dev`.

use pm_runtime::reasons::Reason;

/// RBAC's reasons.
pub const CATALOG: &[Reason] = pm_runtime::reasons![
    "GRANT_OUT_OF_SCOPE" PermissionDenied "the caller may not grant this role over these units (a binding grants at most what its author holds)",
    "UNKNOWN_REFERENCE" InvalidArgument "a field names a principal, provider or unit that does not exist",
];

#[cfg(test)]
mod tests {
    pm_runtime::catalogued_reasons_test!(super::CATALOG, pm_authz::reasons::CATALOG);
}
