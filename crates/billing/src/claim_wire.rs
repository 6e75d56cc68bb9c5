//! Claims on the wire: a stored claim as the API's `Claim`.

use chrono::Datelike;
use pm_api::billing::{
    Claim, ClaimEvent, ClaimLine, ClaimProblem, ClaimState as Wire, PayerSequence,
};

use crate::claim_store::StoredClaim;
use crate::domain::claims::ClaimState;

/// A state on the wire.
pub fn state(state: ClaimState) -> Wire {
    match state {
        ClaimState::Draft => Wire::Draft,
        ClaimState::Ready => Wire::Ready,
        ClaimState::Submitted => Wire::Submitted,
        ClaimState::Accepted => Wire::Accepted,
        ClaimState::Rejected => Wire::Rejected,
        ClaimState::Paid => Wire::Paid,
        ClaimState::PartiallyPaid => Wire::PartiallyPaid,
        ClaimState::Denied => Wire::Denied,
        ClaimState::Void => Wire::Void,
        ClaimState::Replaced => Wire::Replaced,
    }
}

/// A state from the wire (`None` for UNSPECIFIED).
pub fn state_of(wire: i32) -> Option<ClaimState> {
    Some(match Wire::try_from(wire).ok()? {
        Wire::Unspecified => return None,
        Wire::Draft => ClaimState::Draft,
        Wire::Ready => ClaimState::Ready,
        Wire::Submitted => ClaimState::Submitted,
        Wire::Accepted => ClaimState::Accepted,
        Wire::Rejected => ClaimState::Rejected,
        Wire::Paid => ClaimState::Paid,
        Wire::PartiallyPaid => ClaimState::PartiallyPaid,
        Wire::Denied => ClaimState::Denied,
        Wire::Void => ClaimState::Void,
        Wire::Replaced => ClaimState::Replaced,
    })
}

/// A stored claim on the wire.
pub fn claim(c: &StoredClaim) -> Claim {
    let timestamp = pm_runtime::time::to_timestamp;
    Claim {
        name: c.name.clone(),
        billing_entity: c.billing_entity.clone(),
        payer: c.payer.clone(),
        patient: c.patient.clone(),
        service_date: Some(pm_api::types::Date {
            year: c.service_date.year(),
            month: i32::try_from(c.service_date.month()).unwrap_or(0),
            day: i32::try_from(c.service_date.day()).unwrap_or(0),
        }),
        provider: c.provider.clone(),
        place_of_service: c.place_of_service.clone(),
        unit: c.unit.clone(),
        state: state(c.state).into(),
        frequency_code: c.frequency_code,
        original_claim: c.original_claim.clone(),
        payer_claim_number: c.payer_claim_number.clone(),
        total_cents: c.total.cents(),
        diagnoses: c.diagnoses.clone(),
        lines: c
            .lines
            .iter()
            .map(|l| ClaimLine {
                line_number: l.line_number,
                charge: l.charge.clone(),
                code: l.code.clone(),
                modifiers: l.modifiers.clone(),
                units: l.units,
                amount_cents: l.amount.cents(),
                diagnosis_pointers: l.diagnosis_pointers.iter().map(|p| i32::from(*p)).collect(),
                routed_by: l.routed_by.clone(),
            })
            .collect(),
        problems: c
            .problems
            .iter()
            .map(|p| ClaimProblem {
                field: p.field.clone(),
                reason: p.reason.clone(),
                message: p.message.clone(),
            })
            .collect(),
        split_with: c.split_with.clone(),
        batch: c.batch.clone(),
        history: c
            .history
            .iter()
            .map(|(s, reason, at)| ClaimEvent {
                state: state(*s).into(),
                reason: reason.clone(),
                time: Some(timestamp(*at)),
            })
            .collect(),
        create_time: Some(timestamp(c.create_us)),
        update_time: Some(timestamp(c.update_us)),
        delete_time: None,
        etag: format!("\"{}\"", c.update_us),
        payer_sequence: if c.payer_sequence == "S" {
            PayerSequence::Secondary
        } else {
            PayerSequence::Primary
        }
        .into(),
        prior_claim: c.prior_claim.clone(),
    }
}
