//! A draft claim and its context become the 837P writer's input ([`x12::Claim`],
//! [`x12::BillingProvider`]).
//!
//! The mapping also checks, collecting every failure rather than stopping at the first: the
//! scrubber runs the same code, so what it passes maps, and what would not map it reports.

use chrono::{Datelike, NaiveDate};

use super::scrub::{
    ADDRESS_INCOMPLETE, ADDRESS_STATE_INVALID, ADDRESS_ZIP_INVALID, BILLING_ADDRESS_PO_BOX,
    BILLING_ENTITY_MISSING, BILLING_ZIP_NOT_9_DIGITS, CLAIM_DIAGNOSIS_COUNT,
    CLAIM_FILING_INDICATOR_INVALID, CLAIM_LINE_COUNT, CLAIM_TOTAL_MISMATCH,
    DATE_OF_SERVICE_INVALID, DIAGNOSIS_POINTER_COUNT, DIAGNOSIS_POINTER_INVALID, EntityDetails,
    GROUP_NUMBER_INVALID, LINE_AMOUNT_OUT_OF_RANGE, MEMBER_ID_INVALID, NAME_MISSING, PAYER_MISSING,
    PayerDetails, RenderingDetails, SERVICE_UNITS_NOT_POSITIVE, SUBSCRIBER_ADDRESS_MISSING,
    SUBSCRIBER_BIRTH_DATE_INVALID, SUBSCRIBER_BIRTH_DATE_MISSING, SUBSCRIBER_MEMBER_ID_MISSING,
    SUBSCRIBER_MISSING, ScrubContext, SubscriberDetails, TEXT_TOO_LONG,
};
use super::{DraftClaim, DraftLine, ascii_name};

use crate::domain::codes::{DiagnosisCode, Ein, Modifier, Npi, PayerId, PlaceOfService};
use crate::domain::codes::{ProcedureCode, Taxonomy};
use crate::domain::invalid::Invalid;
use crate::domain::money::{Cents, MAX_AMOUNT};
use crate::domain::x12::{self, Address};

/// Reason: the claim id (CLM01) is empty, longer than 38 characters, or has characters X12
/// cannot carry.
pub const CLAIM_ID_INVALID: &str = "CLAIM_ID_INVALID";

/// Reason: the mapping stopped without naming a failure. A safety net that should never be
/// seen: every gap in the mapping records its own reason first.
pub const CLAIM_NOT_MAPPED: &str = "CLAIM_NOT_MAPPED";

/// SBR09 claim filing indicator codes (005010X222A1).
const FILING_INDICATORS: [&str; 23] = [
    "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI", "HM", "LM", "MA",
    "MB", "MC", "OF", "TV", "VA", "WC", "ZZ",
];

/// Maps a scrubbed claim to the 837P claim with id `claim_id` (CLM01, at most 38 characters).
/// Fails with the first failure the scrubber would also report (billing entity and date rules
/// aside), or `CLAIM_ID_INVALID`.
pub fn to_x12_claim(
    claim: &DraftClaim,
    ctx: &ScrubContext,
    claim_id: &str,
) -> Result<x12::Claim, Invalid> {
    if !x12_text(claim_id, 38) {
        return Err(Invalid::new(
            "claim_id",
            CLAIM_ID_INVALID,
            "a claim id is 1 to 38 printable ASCII characters without ~ * : ^",
        ));
    }
    let mut collector = Collector::default();
    let built = build_claim(claim, ctx, claim_id, &mut collector);
    collector.into_result(built)
}

/// The batch's billing provider (2010AA, 2010AB) from the context's billing entity.
pub fn to_x12_billing_provider(ctx: &ScrubContext) -> Result<x12::BillingProvider, Invalid> {
    let mut collector = Collector::default();
    let built = build_billing_provider(ctx, &mut collector);
    collector.into_result(built)
}

/// Collects failures while the mapping carries on.
#[derive(Debug, Default)]
pub(super) struct Collector {
    /// Every failure so far, in the order found.
    pub(super) failures: Vec<Invalid>,
}

impl Collector {
    /// Records a failure.
    pub(super) fn fail(&mut self, invalid: Invalid) {
        self.failures.push(invalid);
    }

    /// The value, or `None` with the failure recorded.
    pub(super) fn keep<T>(&mut self, result: Result<T, Invalid>) -> Option<T> {
        result.map_err(|e| self.fail(e)).ok()
    }

    /// The built value when nothing failed, else the first failure.
    pub(super) fn into_result<T>(self, built: Option<T>) -> Result<T, Invalid> {
        match (self.failures.into_iter().next(), built) {
            (None, Some(value)) => Ok(value),
            (Some(first), _) => Err(first),
            // Every `None` above comes with a failure; this arm only keeps the match total.
            (None, None) => Err(Invalid::new(
                "claim",
                CLAIM_NOT_MAPPED,
                "the claim could not be mapped",
            )),
        }
    }
}

/// Printable ASCII without X12 separators, 1 to `max` characters after trimming.
fn x12_text(text: &str, max: usize) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b'~' | b'*' | b':' | b'^'))
}

/// A required name or address part, transliterated to ASCII, at most `max` characters.
fn text(field: &str, value: &str, max: usize, missing: &'static str) -> Result<String, Invalid> {
    let ascii = ascii_name(field, value)?;
    let ascii = ascii.trim();
    if ascii.is_empty() {
        return Err(Invalid::new(field, missing, "a value is required here"));
    }
    if ascii.len() > max {
        return Err(Invalid::new(
            field,
            TEXT_TOO_LONG,
            format!("at most {max} characters fit here"),
        ));
    }
    Ok(ascii.to_string())
}

/// Whether X12 can write the date (4-digit year).
fn d8_ok(date: NaiveDate) -> bool {
    (1000..=9999).contains(&date.year())
}

/// An address; `billing` adds the 5010 billing-provider rules (ZIP+4, no PO box).
fn address(c: &mut Collector, field: &str, a: &Address, billing: bool) -> Option<Address> {
    let at = |part: &str| format!("{field}.{part}");
    let line1 = c.keep(text(&at("line1"), &a.line1, 55, ADDRESS_INCOMPLETE));
    let line2 = match a.line2.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        Some(l) => c.keep(text(&at("line2"), l, 55, ADDRESS_INCOMPLETE).map(Some)),
    };
    let city = c.keep(text(&at("city"), &a.city, 30, ADDRESS_INCOMPLETE));
    let state_ok =
        matches!(a.state.as_bytes(), [x, y] if x.is_ascii_uppercase() && y.is_ascii_uppercase());
    if !state_ok {
        c.fail(Invalid::new(
            at("state"),
            ADDRESS_STATE_INVALID,
            "a state is two uppercase letters (IL)",
        ));
    }
    let digits = a.zip.bytes().all(|b| b.is_ascii_digit());
    // 5010: the billing provider's ZIP is ZIP+4; elsewhere 5 or 9 digits.
    let zip_ok = digits && (a.zip.len() == 9 || (!billing && a.zip.len() == 5));
    if !zip_ok {
        let (reason, message) = if billing {
            (
                BILLING_ZIP_NOT_9_DIGITS,
                "the billing provider's ZIP code is 9 digits (ZIP+4), no dash",
            )
        } else {
            (ADDRESS_ZIP_INVALID, "a ZIP code is 5 or 9 digits, no dash")
        };
        c.fail(Invalid::new(at("zip"), reason, message));
    }
    if billing && line1.as_deref().is_some_and(is_po_box) {
        c.fail(Invalid::new(
            at("line1"),
            BILLING_ADDRESS_PO_BOX,
            "the billing provider's address is a street address; put a PO box in pay-to",
        ));
    }
    let (line1, line2, city) = (line1?, line2?, city?);
    (state_ok && zip_ok).then(|| Address {
        line1,
        line2,
        city,
        state: a.state.clone(),
        zip: a.zip.clone(),
    })
}

/// `PO Box 9`, `P.O. Box`, `Post Office Box`, in any case and spacing.
fn is_po_box(line: &str) -> bool {
    let squeezed: String = line
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    squeezed.starts_with("POBOX") || squeezed.starts_with("POSTOFFICEBOX")
}

/// 2010AA/2010AB from the context, under `claim.billing_entity`.
pub(super) fn build_billing_provider(
    ctx: &ScrubContext,
    c: &mut Collector,
) -> Option<x12::BillingProvider> {
    let field = "claim.billing_entity";
    let Some(entity) = &ctx.billing_entity else {
        c.fail(Invalid::new(
            field,
            BILLING_ENTITY_MISSING,
            "the claim's billing entity has no details on file",
        ));
        return None;
    };
    let EntityDetails {
        name,
        npi,
        ein,
        taxonomy,
        address: street,
        pay_to,
    } = entity;
    let at = |part: &str| format!("{field}.{part}");
    let name = c.keep(text(&at("name"), name, 60, NAME_MISSING));
    let npi = c.keep(Npi::parse(&at("npi"), npi));
    let ein = c.keep(Ein::parse(&at("ein"), ein));
    let taxonomy = c.keep(Taxonomy::parse(&at("taxonomy"), taxonomy));
    let street = address(c, &at("address"), street, true);
    let pay_to = match pay_to {
        None => Some(None),
        Some(a) => address(c, &at("pay_to"), a, false).map(Some),
    };
    Some(x12::BillingProvider {
        organization_name: name?,
        npi: npi?.as_str().to_string(),
        ein: ein?.as_str().to_string(),
        taxonomy: taxonomy?.as_str().to_string(),
        address: street?,
        pay_to: pay_to?,
    })
}

/// The 2300 claim with its subscriber, payer, rendering provider and lines, under `claim`.
pub(super) fn build_claim(
    claim: &DraftClaim,
    ctx: &ScrubContext,
    claim_id: &str,
    c: &mut Collector,
) -> Option<x12::Claim> {
    let diagnoses = diagnoses(claim, c);
    let place = c.keep(PlaceOfService::parse(
        "claim.place_of_service",
        &claim.place_of_service,
    ));
    let payer = payer(ctx.payer.as_ref(), c);
    let subscriber = subscriber(claim, ctx, c);
    let rendering = rendering(ctx, c);
    let lines = lines(claim, c);
    Some(x12::Claim {
        claim_id: claim_id.trim().to_string(),
        total: claim.total,
        place_of_service: place?.as_str().to_string(),
        frequency: claim.frequency.clone(),
        diagnoses: diagnoses?,
        subscriber: subscriber?,
        payer: payer?.0,
        rendering_provider: rendering?,
        lines: lines?,
        other_payer: None,
    })
}

/// HI: 1 to 12 valid ICD-10-CM codes, without dots.
fn diagnoses(claim: &DraftClaim, c: &mut Collector) -> Option<Vec<String>> {
    let count = claim.diagnoses.len();
    if count == 0 || count > super::MAX_CLAIM_DIAGNOSES {
        c.fail(Invalid::new(
            "claim.diagnoses",
            CLAIM_DIAGNOSIS_COUNT,
            "a claim has 1 to 12 diagnoses",
        ));
    }
    let mut codes = Vec::with_capacity(count);
    for (i, code) in claim.diagnoses.iter().enumerate() {
        let parsed = c.keep(DiagnosisCode::parse(&format!("claim.diagnoses[{i}]"), code));
        codes.push(parsed.map(|code| code.x12()));
    }
    codes.into_iter().collect()
}

/// 2010BB, and the payer's claim filing indicator for SBR09.
pub(super) fn payer(
    payer: Option<&PayerDetails>,
    c: &mut Collector,
) -> Option<(x12::Payer, String)> {
    let Some(payer) = payer else {
        c.fail(Invalid::new(
            "claim.payer",
            PAYER_MISSING,
            "the claim's payer has no details on file",
        ));
        return None;
    };
    let name = c.keep(text("claim.payer.name", &payer.name, 60, NAME_MISSING));
    let id = c.keep(PayerId::parse("claim.payer.payer_id", &payer.payer_id));
    let filing = payer.claim_filing_indicator.as_str();
    if !FILING_INDICATORS.contains(&filing) {
        c.fail(Invalid::new(
            "claim.payer.claim_filing_indicator",
            CLAIM_FILING_INDICATOR_INVALID,
            "a claim filing indicator is an SBR09 code (CI, MB, MC, BL, 12, HM…)",
        ));
    }
    let address = match &payer.address {
        None => Some(None),
        Some(a) => address(c, "claim.payer.address", a, false).map(Some),
    };
    let mapped = x12::Payer {
        name: name?,
        payer_id: id?.as_str().to_string(),
        address: address?,
    };
    FILING_INDICATORS
        .contains(&filing)
        .then(|| (mapped, filing.to_string()))
}

/// 2000B/2010BA: the subscriber is the patient, so birth date and address are required.
fn subscriber(
    claim: &DraftClaim,
    ctx: &ScrubContext,
    c: &mut Collector,
) -> Option<x12::Subscriber> {
    let Some(s) = &ctx.subscriber else {
        c.fail(Invalid::new(
            "claim.subscriber",
            SUBSCRIBER_MISSING,
            "the patient has no coverage on file with this payer",
        ));
        return None;
    };
    let member_id = member_id(&s.member_id, c);
    let last = c.keep(text(
        "claim.subscriber.last_name",
        &s.last_name,
        60,
        NAME_MISSING,
    ));
    let first = c.keep(text(
        "claim.subscriber.first_name",
        &s.first_name,
        35,
        NAME_MISSING,
    ));
    let birth = birth_date(s, claim.key.service_date, c);
    let home = match &s.address {
        Some(a) => address(c, "claim.subscriber.address", a, false),
        None => {
            c.fail(Invalid::new(
                "claim.subscriber.address",
                SUBSCRIBER_ADDRESS_MISSING,
                "the subscriber's address is required (the subscriber is the patient)",
            ));
            None
        }
    };
    let group = group_number(s, c);
    let filing = ctx.payer.as_ref().map(|p| p.claim_filing_indicator.clone());
    Some(x12::Subscriber {
        member_id: member_id?,
        last_name: last?,
        first_name: first?,
        birth_date: birth?,
        sex: s.sex,
        address: home?,
        group_number: group?,
        claim_filing_indicator: filing?,
    })
}

pub(super) fn member_id(id: &str, c: &mut Collector) -> Option<String> {
    let field = "claim.subscriber.member_id";
    if id.trim().is_empty() {
        c.fail(Invalid::new(
            field,
            SUBSCRIBER_MEMBER_ID_MISSING,
            "the subscriber's member id (on the insurance card) is required",
        ));
        return None;
    }
    if !x12_text(id, 80) {
        c.fail(Invalid::new(
            field,
            MEMBER_ID_INVALID,
            "a member id is at most 80 printable ASCII characters without ~ * : ^",
        ));
        return None;
    }
    Some(id.trim().to_string())
}

fn birth_date(s: &SubscriberDetails, service: NaiveDate, c: &mut Collector) -> Option<NaiveDate> {
    let field = "claim.subscriber.birth_date";
    let Some(birth) = s.birth_date else {
        c.fail(Invalid::new(
            field,
            SUBSCRIBER_BIRTH_DATE_MISSING,
            "the subscriber's birth date is required",
        ));
        return None;
    };
    if birth > service || !d8_ok(birth) {
        c.fail(Invalid::new(
            field,
            SUBSCRIBER_BIRTH_DATE_INVALID,
            "the birth date must be on or before the date of service",
        ));
        return None;
    }
    Some(birth)
}

/// `Some(None)`: no group number; `None`: an invalid one.
fn group_number(s: &SubscriberDetails, c: &mut Collector) -> Option<Option<String>> {
    match s.group_number.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        Some(group) if x12_text(group, 50) => Some(Some(group.to_string())),
        Some(_) => {
            c.fail(Invalid::new(
                "claim.subscriber.group_number",
                GROUP_NUMBER_INVALID,
                "a group number is at most 50 printable ASCII characters without ~ * : ^",
            ));
            None
        }
    }
}

/// 2310B, left out when absent or when it is the billing entity's NPI. `Some(None)`: no loop.
fn rendering(ctx: &ScrubContext, c: &mut Collector) -> Option<Option<x12::RenderingProvider>> {
    let Some(RenderingDetails {
        npi,
        first_name,
        last_name,
    }) = &ctx.rendering_provider
    else {
        return Some(None);
    };
    let field = |part: &str| format!("claim.rendering_provider.{part}");
    let npi = c.keep(Npi::parse(&field("npi"), npi));
    let last = c.keep(text(&field("last_name"), last_name, 60, NAME_MISSING));
    let first = c.keep(text(&field("first_name"), first_name, 35, NAME_MISSING));
    let npi = npi?;
    let billing_npi = ctx.billing_entity.as_ref().map(|e| e.npi.as_str());
    if billing_npi == Some(npi.as_str()) {
        return Some(None);
    }
    Some(Some(x12::RenderingProvider {
        npi: npi.as_str().to_string(),
        last_name: last?,
        first_name: first?,
    }))
}

/// 2400 lines, and the claim-level line rules (count, total).
fn lines(claim: &DraftClaim, c: &mut Collector) -> Option<Vec<x12::ServiceLine>> {
    let count = claim.lines.len();
    if count == 0 || count > super::MAX_CLAIM_LINES {
        c.fail(Invalid::new(
            "claim.lines",
            CLAIM_LINE_COUNT,
            "a claim has 1 to 50 lines",
        ));
    }
    let sum = claim
        .lines
        .iter()
        .try_fold(Cents::ZERO, |sum, l| sum.checked_add(l.line.amount));
    if sum != Some(claim.total) {
        c.fail(Invalid::new(
            "claim.total",
            CLAIM_TOTAL_MISMATCH,
            "the claim total must equal the sum of its lines",
        ));
    }
    let mapped: Vec<Option<x12::ServiceLine>> = claim
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| service_line(&format!("claim.lines[{i}]"), line, claim, c))
        .collect();
    mapped.into_iter().collect()
}

fn service_line(
    field: &str,
    draft: &DraftLine,
    claim: &DraftClaim,
    c: &mut Collector,
) -> Option<x12::ServiceLine> {
    let at = |part: &str| format!("{field}.{part}");
    let line = &draft.line;
    let code = c.keep(ProcedureCode::parse(&at("code"), &line.code));
    let modifiers = c.keep(Modifier::parse_modifiers(&at("modifiers"), &line.modifiers));
    let units = u32::try_from(line.units).ok().filter(|u| *u > 0);
    if units.is_none() {
        c.fail(Invalid::new(
            at("units"),
            SERVICE_UNITS_NOT_POSITIVE,
            "a line has at least 1 unit",
        ));
    }
    let amount_ok = !line.amount.is_negative() && line.amount <= MAX_AMOUNT;
    if !amount_ok {
        c.fail(Invalid::new(
            at("amount"),
            LINE_AMOUNT_OUT_OF_RANGE,
            "a line's amount is zero or more, at most the largest accepted amount",
        ));
    }
    if !d8_ok(line.service_date) {
        c.fail(Invalid::new(
            at("service_date"),
            DATE_OF_SERVICE_INVALID,
            "a date of service has a 4-digit year",
        ));
    }
    let pointers = pointers(&at("diagnosis_pointers"), draft, claim.diagnoses.len(), c);
    let modifiers = modifiers?.iter().map(|m| m.as_str().to_string()).collect();
    Some(x12::ServiceLine {
        code: code?.as_str().to_string(),
        modifiers,
        charge: Some(line.amount).filter(|_| amount_ok)?,
        units: units?,
        diagnosis_pointers: pointers?,
        service_date: Some(line.service_date).filter(|d| d8_ok(*d))?,
        prior: None,
    })
}

/// SV107: 1 to 4 pointers, each within the claim's diagnoses and not repeated.
fn pointers(
    field: &str,
    draft: &DraftLine,
    diagnoses: usize,
    c: &mut Collector,
) -> Option<Vec<u8>> {
    let pointers = &draft.diagnosis_pointers;
    if pointers.is_empty() || pointers.len() > 4 {
        c.fail(Invalid::new(
            field,
            DIAGNOSIS_POINTER_COUNT,
            "a line points at 1 to 4 of the claim's diagnoses",
        ));
        return None;
    }
    let mut ok = true;
    for (i, &p) in pointers.iter().enumerate() {
        let repeated = pointers.iter().take(i).any(|&q| q == p);
        if p == 0 || usize::from(p) > diagnoses || repeated {
            ok = false;
            c.fail(Invalid::new(
                format!("{field}[{i}]"),
                DIAGNOSIS_POINTER_INVALID,
                "a pointer is the 1-based position of one of the claim's diagnoses, once each",
            ));
        }
    }
    ok.then(|| pointers.clone())
}

#[cfg(test)]
#[path = "to_x12_tests.rs"]
mod tests;
