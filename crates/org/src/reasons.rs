//! The error reasons Org sends beyond the shared ones ([`pm_runtime::reasons::SHARED`] and the
//! authorization layer's [`pm_authz::reasons::CATALOG`]). ErrorInfo domain: `org.pm.dev`.

use pm_runtime::reasons::Reason;

/// Org's reasons.
pub const CATALOG: &[Reason] = pm_runtime::reasons![
    "UNIT_CYCLE" FailedPrecondition "the new parent unit lies below the unit: the tree would have a cycle",
    "UNIT_TREE_TOO_DEEP" FailedPrecondition "the unit tree would be deeper than it may be",
    "UNIT_HAS_CHILDREN" FailedPrecondition "a unit with live child units cannot be deleted",
    "PARENT_UNIT_DELETED" FailedPrecondition "the unit's parent unit is deleted: undelete it first",
    "ORGANIZATION_NOT_EMPTY" FailedPrecondition "an organization with live units, providers or patients cannot be deleted",
    "CREDENTIAL_PERIOD_OVERLAP" FailedPrecondition "the provider already holds a credential in the unit over part of the period",
    "COVERAGE_PRIORITY_OVERLAP" FailedPrecondition "the patient has another coverage of the same priority over part of the period",
    "ALREADY_ENROLLED" FailedPrecondition "the patient has an active enrollment in the unit already",
    "ENROLLMENT_NOT_ACTIVE" FailedPrecondition "the enrollment is discharged or transferred: it cannot change",
    "INTAKE_RECORD_INVALID" InvalidArgument "the intake record is malformed: an expiry not after its effective time, a referral without its referring provider, a prior authorization without its number, or a field too long",
    "INTAKE_RECORD_NOT_FOUND" NotFound "the enrollment has no intake record with the id given",
    "INTAKE_RECORD_REVOKED" FailedPrecondition "the intake record is revoked already",
    "TOO_MANY_INTAKE_RECORDS" FailedPrecondition "the enrollment holds the most intake records it may",
    "NPI_ALREADY_REGISTERED" AlreadyExists "another provider of the organization has this NPI",
    "PATIENT_IDENTIFIER_TAKEN" AlreadyExists "another patient has this identifier in this system",
    "UNKNOWN_REFERENCE" InvalidArgument "a field names a resource that does not exist",
    "NO_ACCESS_SOURCE" Unimplemented "no service's audit trail is configured to answer ListPatientAccesses",
];

#[cfg(test)]
mod tests {
    pm_runtime::catalogued_reasons_test!(super::CATALOG, pm_authz::reasons::CATALOG);
}
