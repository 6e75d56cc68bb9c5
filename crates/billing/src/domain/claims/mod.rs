//! Claims: from open charges to 837P input.
//!
//! The path a charge takes, one submodule per step:
//! 1. [`assemble()`] routes each open charge line to a billing entity (explicit rule, contract or
//!    the unit's profile), sets aside what is never claimed (self-pay, invoiced-only) or cannot be
//!    claimed yet (UB-04), and groups the rest into [`DraftClaim`]s with diagnosis pointers.
//! 2. [`scrub()`] checks a draft claim against everything a payer or clearinghouse would reject
//!    (identifiers, codes, pointers, dates, names), returning every failure at once.
//! 3. [`apply()`] moves a claim through its lifecycle (Draft → Ready → Submitted → …).
//! 4. [`to_x12_claim()`] maps a scrubbed claim to the 837P writer's [`crate::domain::x12::Claim`].
//!
//! Everything here is pure: the service loads the inputs below and stores what comes out.

use chrono::NaiveDate;

use crate::domain::money::Cents;

mod ascii;
mod assemble;
mod cob;
mod lifecycle;
mod scrub;
mod to_x12;

pub use ascii::{NAME_CHARACTER_INVALID, NAME_NOT_ASCII, ascii_name};
pub use assemble::{
    Assembly, CLAIM_FORM_UB04_NOT_SUPPORTED, CLAIM_FORM_UNKNOWN, ClaimKey, DraftClaim, DraftLine,
    INVOICED_NOT_CLAIMED, MAX_CLAIM_DIAGNOSES, MAX_CLAIM_LINES, RoutedBy, Routing, SELF_PAY,
    SetAside, assemble,
};
pub use cob::{
    COB_ADJUSTMENT_INVALID, COB_LINES_MISMATCH, COB_NOT_BALANCED, PriorAdjustment, PriorLine,
    PriorPayer, with_prior_payer,
};
pub use lifecycle::{
    Amended, Amendment, CLAIM_STATE_INVALID, ClaimAction, ClaimState, FREQUENCY_NOT_SUBMITTED,
    PAYER_CLAIM_NUMBER_MISSING, REMIT_AMOUNT_INVALID, amend, apply, frequency_for,
};
pub use scrub::*;
pub use to_x12::{CLAIM_ID_INVALID, CLAIM_NOT_MAPPED, to_x12_billing_provider, to_x12_claim};

/// One OPEN charge, as the charges table holds it: the unit of assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeLine {
    /// Resource name of the charge (unique; lines are ordered by it).
    pub charge: String,
    /// Resource name of the patient.
    pub patient: String,
    /// The org unit where the care was given.
    pub unit: String,
    /// The provider who rendered the care.
    pub provider: String,
    /// The payer billed; `""` means self-pay, which is never claimed.
    pub payer: String,
    /// The billing entity of the unit's billing profile (qualified name): the fallback route.
    pub billing_entity: String,
    /// `""`, or the contract the unit's accepted-payer entry names for this payer.
    pub contract: String,
    /// The unit's claim form: `CMS1500`, `UB04`, `NONE` or `UNSPECIFIED`.
    pub claim_form: String,
    /// CPT/HCPCS code.
    pub code: String,
    /// Up to four modifiers, in order.
    pub modifiers: Vec<String>,
    /// Units of service.
    pub units: i32,
    /// ICD-10-CM codes, dotted, in the order the clinician ranked them (1 to 4).
    pub diagnoses: Vec<String>,
    /// Date of service.
    pub service_date: NaiveDate,
    /// Two-digit CMS place-of-service code.
    pub place_of_service: String,
    /// The line's charge.
    pub amount: Cents,
}

/// An explicit routing of lines to a billing entity. Every condition that is set must match the
/// line; a rule with no condition set matches nothing (a catch-all would silently reroute every
/// line of the organization, so it is ignored rather than obeyed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRule {
    /// The line's code must equal this.
    pub code: Option<String>,
    /// The line's unit must be this unit or inside its subtree.
    pub unit: Option<String>,
    /// The line's payer must equal this.
    pub payer: Option<String>,
    /// Where matching lines are billed.
    pub billing_entity: String,
    /// Why, in the operator's words; recorded on every line it routes.
    pub reason: String,
}

/// A payer contract's routing terms: the entity that bills `payer` for care in `units` (each
/// with its subtree) from `from` until the day before `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractTerms {
    /// Resource name of the contract.
    pub name: String,
    /// The payer it is with.
    pub payer: String,
    /// The entity that bills under it.
    pub billing_entity: String,
    /// The units it covers, each with its subtree.
    pub units: Vec<String>,
    /// First day in force (date of service).
    pub from: NaiveDate,
    /// First day NO LONGER in force (exclusive, as the Contract resource defines it); `None`
    /// means open-ended.
    pub until: Option<NaiveDate>,
}

impl ContractTerms {
    /// Whether the contract is in force on `date`: `from <= date < until`.
    pub fn in_force(&self, date: NaiveDate) -> bool {
        self.from <= date && self.until.is_none_or(|until| date < until)
    }
}
