//! The scrubber: everything about a draft claim that a clearinghouse or payer would reject,
//! found before the file is sent, all at once (one pass, not one failure per round trip).
//!
//! The checks that shape the 837P input live with the mapping (`to_x12.rs`), so a claim the
//! scrubber passes always maps; this module adds what the mapping does not need: the billing
//! entity (batch level) and the date rules that depend on today.

use chrono::NaiveDate;

use super::DraftClaim;
use super::to_x12::{Collector, build_billing_provider, build_claim};
use crate::domain::invalid::Invalid;
use crate::domain::x12::{Address, Sex};

/// Reason: no billing entity details were found for the claim's entity.
pub const BILLING_ENTITY_MISSING: &str = "BILLING_ENTITY_MISSING";
/// Reason: no payer details were found for the claim's payer.
pub const PAYER_MISSING: &str = "PAYER_MISSING";
/// Reason: the patient has no coverage (subscriber) with this payer.
pub const SUBSCRIBER_MISSING: &str = "SUBSCRIBER_MISSING";
/// Reason: the subscriber has no member id.
pub const SUBSCRIBER_MEMBER_ID_MISSING: &str = "SUBSCRIBER_MEMBER_ID_MISSING";
/// Reason: the member id has characters X12 cannot carry, or more than 80.
pub const MEMBER_ID_INVALID: &str = "MEMBER_ID_INVALID";
/// Reason: the subscriber has no birth date.
pub const SUBSCRIBER_BIRTH_DATE_MISSING: &str = "SUBSCRIBER_BIRTH_DATE_MISSING";
/// Reason: the birth date is after the date of service, or before year 1000.
pub const SUBSCRIBER_BIRTH_DATE_INVALID: &str = "SUBSCRIBER_BIRTH_DATE_INVALID";
/// Reason: the subscriber (who is the patient) has no address; 2010BA N3/N4 is required.
pub const SUBSCRIBER_ADDRESS_MISSING: &str = "SUBSCRIBER_ADDRESS_MISSING";
/// Reason: a required name (person or organization) is empty.
pub const NAME_MISSING: &str = "NAME_MISSING";
/// Reason: a name or address part is longer than its X12 element.
pub const TEXT_TOO_LONG: &str = "TEXT_TOO_LONG";
/// Reason: an address has no street line or no city.
pub const ADDRESS_INCOMPLETE: &str = "ADDRESS_INCOMPLETE";
/// Reason: a state is not two uppercase letters.
pub const ADDRESS_STATE_INVALID: &str = "ADDRESS_STATE_INVALID";
/// Reason: a ZIP code is not 5 or 9 digits.
pub const ADDRESS_ZIP_INVALID: &str = "ADDRESS_ZIP_INVALID";
/// Reason: the billing provider's ZIP is not 9 digits (ZIP+4 is required there in 5010).
pub const BILLING_ZIP_NOT_9_DIGITS: &str = "BILLING_ZIP_NOT_9_DIGITS";
/// Reason: the billing provider's address is a PO box (5010 requires a street address; a PO
/// box belongs in the pay-to address).
pub const BILLING_ADDRESS_PO_BOX: &str = "BILLING_ADDRESS_PO_BOX";
/// Reason: the payer's claim filing indicator is not an SBR09 code.
pub const CLAIM_FILING_INDICATOR_INVALID: &str = "CLAIM_FILING_INDICATOR_INVALID";
/// Reason: the group number has characters X12 cannot carry, or more than 50.
pub const GROUP_NUMBER_INVALID: &str = "GROUP_NUMBER_INVALID";
/// Reason: a claim has no line or more than 50.
pub const CLAIM_LINE_COUNT: &str = "CLAIM_LINE_COUNT";
/// Reason: a claim has no diagnosis or more than 12.
pub const CLAIM_DIAGNOSIS_COUNT: &str = "CLAIM_DIAGNOSIS_COUNT";
/// Reason: the claim's total is not the sum of its lines.
pub const CLAIM_TOTAL_MISMATCH: &str = "CLAIM_TOTAL_MISMATCH";
/// Reason: a line points at no diagnosis, or at more than 4.
pub const DIAGNOSIS_POINTER_COUNT: &str = "DIAGNOSIS_POINTER_COUNT";
/// Reason: a pointer is outside the claim's diagnoses, or repeats one of the line's.
pub const DIAGNOSIS_POINTER_INVALID: &str = "DIAGNOSIS_POINTER_INVALID";
/// Reason: a line's units are zero or negative.
pub const SERVICE_UNITS_NOT_POSITIVE: &str = "SERVICE_UNITS_NOT_POSITIVE";
/// Reason: a line's amount is negative or above the largest accepted amount.
pub const LINE_AMOUNT_OUT_OF_RANGE: &str = "LINE_AMOUNT_OUT_OF_RANGE";
/// Reason: a date of service is outside years 1000..=9999 (X12 dates have 4-digit years).
pub const DATE_OF_SERVICE_INVALID: &str = "DATE_OF_SERVICE_INVALID";
/// Reason: the date of service is after today.
pub const DATE_OF_SERVICE_IN_FUTURE: &str = "DATE_OF_SERVICE_IN_FUTURE";
/// Reason: more days have passed since the date of service than the payer's filing limit.
pub const TIMELY_FILING_EXPIRED: &str = "TIMELY_FILING_EXPIRED";

/// What the scrubber and the 837P mapping need besides the claim. Each part is `None` when the
/// service found nothing (the scrubber reports it missing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrubContext {
    /// The billing entity of the claim's key.
    pub billing_entity: Option<EntityDetails>,
    /// The claim's payer.
    pub payer: Option<PayerDetails>,
    /// The patient's coverage with that payer (the patient is the subscriber).
    pub subscriber: Option<SubscriberDetails>,
    /// The rendering provider; `None` when the billing entity itself rendered the care (no
    /// 2310B loop). Also left out of the 837P when its NPI is the billing entity's.
    pub rendering_provider: Option<RenderingDetails>,
}

/// A billing entity (type-2, organization) as the 837P's 2010AA needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityDetails {
    /// Organization name.
    pub name: String,
    /// Type-2 (organization) NPI.
    pub npi: String,
    /// EIN, `12-3456789` or `123456789`.
    pub ein: String,
    /// Provider taxonomy code.
    pub taxonomy: String,
    /// Street address (ZIP+4 required).
    pub address: Address,
    /// Where payments go, when not to `address`.
    pub pay_to: Option<Address>,
}

/// A payer as a claim needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerDetails {
    /// Payer name.
    pub name: String,
    /// X12 payer id the clearinghouse uses.
    pub payer_id: String,
    /// SBR09 claim filing indicator (`CI`, `MB`, `MC`, `BL`…).
    pub claim_filing_indicator: String,
    /// Days after the date of service the payer accepts a claim; `None`: no limit known.
    pub timely_filing_days: Option<u32>,
    /// The payer's address, when the clearinghouse wants it.
    pub address: Option<Address>,
}

/// The subscriber, from Org's coverage (the patient is the subscriber).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberDetails {
    /// Member id on the insurance card.
    pub member_id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Birth date.
    pub birth_date: Option<NaiveDate>,
    /// Administrative sex (`Unknown` when not recorded).
    pub sex: Sex,
    /// Home address.
    pub address: Option<Address>,
    /// Group or policy number, when the card has one.
    pub group_number: Option<String>,
}

/// The individual who rendered the care (type-1 NPI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderingDetails {
    /// Type-1 NPI.
    pub npi: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// Every reason `claim` would be rejected, each naming its field under `claim.` (e.g.
/// `claim.billing_entity.npi`, `claim.lines[2].code`, `claim.subscriber.member_id`). Empty
/// means the claim is ready, and [`super::to_x12_claim`] will map it.
pub fn scrub(claim: &DraftClaim, ctx: &ScrubContext, today: NaiveDate) -> Vec<Invalid> {
    let mut collector = Collector::default();
    build_billing_provider(ctx, &mut collector);
    build_claim(claim, ctx, "", &mut collector);
    check_dates(claim, ctx, today, &mut collector);
    collector.failures
}

/// Future dates of service and the payer's timely-filing limit, on the claim's date of service.
fn check_dates(claim: &DraftClaim, ctx: &ScrubContext, today: NaiveDate, c: &mut Collector) {
    let date = claim.key.service_date;
    if date > today {
        c.fail(Invalid::new(
            "claim.service_date",
            DATE_OF_SERVICE_IN_FUTURE,
            "the date of service is after today; bill care once it is given",
        ));
    }
    let limit = ctx.payer.as_ref().and_then(|p| p.timely_filing_days);
    if let Some(days) = limit
        && (today - date).num_days() > i64::from(days)
    {
        c.fail(Invalid::new(
            "claim.service_date",
            TIMELY_FILING_EXPIRED,
            format!("the payer accepts claims up to {days} days after the date of service"),
        ));
    }
}

#[cfg(test)]
#[path = "scrub_tests.rs"]
pub(crate) mod tests;
