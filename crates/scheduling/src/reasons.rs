//! The error reasons Scheduling sends beyond the shared ones ([`pm_runtime::reasons::SHARED`] and
//! the authorization layer's [`pm_authz::reasons::CATALOG`]). ErrorInfo domain: `scheduling.pm.dev`.
//! A refused booking carries the eligibility rule it broke as its reason (the same codes FindSlots
//! gives in its exclusions, [`crate::eligibility::Reason`]).

use pm_runtime::reasons::Reason;

/// Scheduling's reasons.
pub const CATALOG: &[Reason] = pm_runtime::reasons![
    "SLOT_UNAVAILABLE" FailedPrecondition "the time is taken (by the provider, the patient or the room) or not bookable",
    "SLOT_IN_THE_PAST" InvalidArgument "the start time has passed",
    "HOLD_EXPIRED" FailedPrecondition "the hold lapsed before it was confirmed: book again",
    "HOLD_NOT_LAPSED" FailedPrecondition "the hold has not lapsed yet, so it cannot be expired",
    "WRONG_APPOINTMENT_STATE" FailedPrecondition "the appointment's state does not accept this action (see its lifecycle)",
    "VISIT_TYPE_NOT_FOUND" FailedPrecondition "the visit type does not exist in the unit",
    "VISIT_TYPE_CODE_TAKEN" AlreadyExists "the unit has a live visit type with this code",
    "VISIT_TYPE_NOT_ALLOWED" FailedPrecondition "the unit's policy does not allow the visit type",
    "PATHWAY_STEP_UNKNOWN" FailedPrecondition "the visit type's pathway step is not a step of the unit's care pathway",
    "PATIENT_NOT_ENROLLED" FailedPrecondition "the patient has no active enrollment in the unit at the time",
    "WRONG_PATHWAY_STEP" FailedPrecondition "the patient's enrollment is at another pathway step than the visit type requires",
    "PAYER_NOT_ACCEPTED" FailedPrecondition "no coverage of the patient is with a payer the unit accepts",
    "PROVIDER_NOT_CREDENTIALED" FailedPrecondition "the provider holds no active credential in the unit at the time",
    "OUTSIDE_AVAILABILITY" FailedPrecondition "the time is outside the provider's availability",
    "PROVIDER_BOOKED" FailedPrecondition "the provider is booked at the time",
    "PATIENT_BOOKED" FailedPrecondition "the patient is booked at the time",
    "NO_ROOM_AVAILABLE" FailedPrecondition "no room of the location is free at the time",
    "INTAKE_REFERRAL_MISSING" FailedPrecondition "the unit requires a referral and the patient's enrollment has none covering the visit type at the time",
    "INTAKE_CONSENT_MISSING" FailedPrecondition "the unit requires consent and the patient's enrollment has none covering the visit type at the time",
    "PRIOR_AUTH_MISSING" FailedPrecondition "the unit requires prior authorization and the patient's enrollment has none covering the visit type at the time",
    "INTAKE_CARE_PLAN_MISSING" FailedPrecondition "the unit requires a care plan and the patient's enrollment has none covering the visit type at the time",
    "REFERRAL_EXPIRED" FailedPrecondition "the patient's referral for the visit type expired before the time (expireTime says when)",
    "CONSENT_EXPIRED" FailedPrecondition "the patient's consent for the visit type expired before the time (expireTime says when)",
    "PRIOR_AUTH_EXPIRED" FailedPrecondition "the patient's prior authorization for the visit type expired before the time (expireTime says when)",
    "CARE_PLAN_EXPIRED" FailedPrecondition "the patient's care plan for the visit type expired before the time (expireTime says when)",
    "REFERRAL_VISITS_USED" FailedPrecondition "the patient's referral in force for the visit type has covered all its visits (record and visitCount say which)",
    "CONSENT_VISITS_USED" FailedPrecondition "the patient's consent in force for the visit type has covered all its visits (record and visitCount say which)",
    "PRIOR_AUTH_VISITS_USED" FailedPrecondition "the patient's prior authorization in force for the visit type has covered all its visits (record and visitCount say which)",
    "CARE_PLAN_VISITS_USED" FailedPrecondition "the patient's care plan in force for the visit type has covered all its visits (record and visitCount say which)",
];

#[cfg(test)]
mod tests {
    use crate::eligibility::Reason as Rule;

    pm_runtime::catalogued_reasons_test!(super::CATALOG, pm_authz::reasons::CATALOG);

    #[test]
    fn every_eligibility_rule_is_a_catalogued_reason() {
        for rule in [
            Rule::VisitTypeNotAllowed,
            Rule::PatientNotEnrolled,
            Rule::WrongPathwayStep,
            Rule::PayerNotAccepted,
            Rule::ProviderNotCredentialed,
            Rule::OutsideAvailability,
            Rule::ProviderBooked,
            Rule::PatientBooked,
            Rule::NoRoomAvailable,
            Rule::IntakeReferralMissing,
            Rule::IntakeConsentMissing,
            Rule::PriorAuthMissing,
            Rule::IntakeCarePlanMissing,
            Rule::ReferralExpired,
            Rule::ConsentExpired,
            Rule::PriorAuthExpired,
            Rule::CarePlanExpired,
            Rule::ReferralVisitsUsed,
            Rule::ConsentVisitsUsed,
            Rule::PriorAuthVisitsUsed,
            Rule::CarePlanVisitsUsed,
        ] {
            assert!(
                super::CATALOG.iter().any(|r| r.reason == rule.code()),
                "{rule} is not in the catalog"
            );
        }
    }
}
