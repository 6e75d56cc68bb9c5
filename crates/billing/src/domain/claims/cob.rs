//! Coordination of benefits: a secondary claim carries what the primary payer did with it.
//!
//! [`with_prior_payer()`] takes the 837P claim [`super::to_x12_claim()`] made for the secondary
//! payer and adds the primary's adjudication, as Billing stored it from the primary's 835: loop
//! 2320 (the primary's filing indicator, claim-level CAS, AMT*D paid), 2330A (the subscriber's
//! member id there), 2330B (the payer) and, per line, 2430 (SVD paid, CAS, DTP*573).
//!
//! It checks what a payer would reject: a known payer with a valid id and filing indicator,
//! adjustments with a group code and a reason, one adjudication per line, and amounts that
//! balance: the claim's total equals what the primary paid plus every adjustment it made.

use chrono::NaiveDate;

use super::scrub::PayerDetails;
use super::to_x12::{Collector, member_id, payer};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;
use crate::domain::x12;

/// Reason: the primary's adjudication has a different number of lines than the claim.
pub const COB_LINES_MISMATCH: &str = "COB_LINES_MISMATCH";
/// Reason: the claim's total is not what the primary paid plus its adjustments.
pub const COB_NOT_BALANCED: &str = "COB_NOT_BALANCED";
/// Reason: an adjustment's group code is not CO, PR, OA, PI or CR, or its reason code is not 1
/// to 5 letters or digits.
pub const COB_ADJUSTMENT_INVALID: &str = "COB_ADJUSTMENT_INVALID";

/// CAS01 group codes.
const GROUPS: [&str; 5] = ["CO", "PR", "OA", "PI", "CR"];

/// One CAS adjustment of the primary payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorAdjustment {
    /// Group code (CO, PR, OA, PI, CR).
    pub group: String,
    /// Claim adjustment reason code.
    pub reason: String,
    /// The amount.
    pub amount: Cents,
}

/// The primary's adjudication of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorLine {
    /// Paid on the line.
    pub paid: Cents,
    /// Its line-level adjustments.
    pub adjustments: Vec<PriorAdjustment>,
    /// When it was adjudicated.
    pub date: NaiveDate,
}

/// The primary payer and its adjudication of the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorPayer {
    /// The payer, as Billing configures it.
    pub payer: PayerDetails,
    /// The subscriber's member id at that payer.
    pub member_id: String,
    /// The group number there, when there is one.
    pub group_number: Option<String>,
    /// Claim-level adjustments.
    pub adjustments: Vec<PriorAdjustment>,
    /// One per line of the claim, in the claim's line order.
    pub lines: Vec<PriorLine>,
}

/// The claim with the primary's adjudication added (see the module), or the first failure; field
/// paths start with `claim.prior_payer`.
pub fn with_prior_payer(mut claim: x12::Claim, prior: &PriorPayer) -> Result<x12::Claim, Invalid> {
    let mut c = Collector::default();
    let mapped_payer = payer(Some(&prior.payer), &mut c);
    let member = member_id(&prior.member_id, &mut c);
    for failure in &mut c.failures {
        failure.field = failure.field.replacen("claim.", "claim.prior_payer.", 1);
    }
    let claim_adjustments =
        adjustments("claim.prior_payer.adjustments", &prior.adjustments, &mut c);
    if prior.lines.len() != claim.lines.len() {
        c.fail(Invalid::new(
            "claim.prior_payer.lines",
            COB_LINES_MISMATCH,
            "the primary payer's adjudication must have one entry per line of the claim",
        ));
    }
    let mut lines = Vec::with_capacity(prior.lines.len());
    for (i, line) in prior.lines.iter().enumerate() {
        let field = format!("claim.prior_payer.lines[{i}]");
        let adjusted = adjustments(&format!("{field}.adjustments"), &line.adjustments, &mut c);
        if line.paid.is_negative() {
            c.fail(Invalid::new(
                format!("{field}.paid"),
                COB_NOT_BALANCED,
                "a line's payment is zero or more",
            ));
        }
        lines.push(adjusted.map(|adjustments| x12::LineAdjudication {
            paid: line.paid,
            adjustments,
            date: line.date,
        }));
    }
    let paid: Option<Cents> = prior
        .lines
        .iter()
        .try_fold(Cents::ZERO, |sum, l| sum.checked_add(l.paid));
    let adjusted = prior
        .adjustments
        .iter()
        .chain(prior.lines.iter().flat_map(|l| l.adjustments.iter()))
        .try_fold(Cents::ZERO, |sum, a| sum.checked_add(a.amount));
    let balanced = paid
        .zip(adjusted)
        .and_then(|(p, a)| p.checked_add(a))
        .is_some_and(|sum| sum == claim.total);
    if !balanced {
        c.fail(Invalid::new(
            "claim.prior_payer",
            COB_NOT_BALANCED,
            "the claim's total must equal what the primary payer paid plus its adjustments",
        ));
    }
    let built = (|| {
        let (payer, filing) = mapped_payer?;
        let lines: Vec<x12::LineAdjudication> = lines.into_iter().collect::<Option<_>>()?;
        Some(x12::OtherPayer {
            claim_filing_indicator: filing,
            group_number: prior
                .group_number
                .as_deref()
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string),
            adjustments: claim_adjustments?,
            paid: paid?,
            member_id: member?,
            payer: x12::Payer {
                address: None,
                ..payer
            },
        })
        .map(|other| (other, lines))
    })();
    let (other, lines) = c.into_result(built)?;
    for (line, adjudication) in claim.lines.iter_mut().zip(lines) {
        line.prior = Some(adjudication);
    }
    claim.other_payer = Some(other);
    Ok(claim)
}

fn adjustments(
    field: &str,
    list: &[PriorAdjustment],
    c: &mut Collector,
) -> Option<Vec<x12::Adjustment>> {
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, a) in list.iter().enumerate() {
        let reason_ok = (1..=5).contains(&a.reason.len())
            && a.reason.bytes().all(|b| b.is_ascii_alphanumeric());
        if !GROUPS.contains(&a.group.as_str()) || !reason_ok {
            c.fail(Invalid::new(
                format!("{field}[{i}]"),
                COB_ADJUSTMENT_INVALID,
                "an adjustment has a group code (CO, PR, OA, PI, CR) and a reason code of 1 to 5 letters or digits",
            ));
            ok = false;
            continue;
        }
        out.push(x12::Adjustment {
            group: a.group.clone(),
            reason: a.reason.clone(),
            amount: a.amount,
        });
    }
    ok.then_some(out)
}

#[cfg(test)]
#[path = "cob_tests.rs"]
mod tests;
