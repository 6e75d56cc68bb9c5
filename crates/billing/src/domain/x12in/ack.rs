//! Acknowledgments of the claims we sent: the 999 (was the 837 file well formed? one answer
//! per transaction set) and the 277CA (005010X214: was each claim accepted into the payer's or
//! clearinghouse's system? one answer per claim).

use chrono::NaiveDate;

use super::fields::{
    self, bad_code, missing_segment, optional, optional_amount, optional_date, required,
    unexpected_segment,
};
use super::tokenizer::{Segment, Transaction};
use super::{for_transaction, transactions_of};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;

/// An acknowledgment code: IK501 for one transaction set, AK901 for the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `A`: accepted.
    Accepted,
    /// `E`: accepted, but errors were noted.
    AcceptedWithErrors,
    /// `P` (AK901 only): partially accepted, at least one transaction set was rejected.
    PartiallyAccepted,
    /// `R`: rejected.
    Rejected,
    /// `M`: rejected, message authentication code failed.
    RejectedAuthentication,
    /// `W`: rejected, assurance failed validity tests.
    RejectedAssurance,
    /// `X`: rejected, content could not be analyzed after decryption.
    RejectedDecryption,
}

impl AckCode {
    /// Whether the receiver took the transaction set (or at least part of the group) in:
    /// `A`, `E` and `P`.
    pub fn is_accepted(self) -> bool {
        matches!(
            self,
            AckCode::Accepted | AckCode::AcceptedWithErrors | AckCode::PartiallyAccepted
        )
    }

    /// The code from its letter; `P` only where `partial_allowed` (AK901, not IK501).
    fn from_code(code: &str, partial_allowed: bool) -> Option<Self> {
        Some(match code {
            "A" => AckCode::Accepted,
            "E" => AckCode::AcceptedWithErrors,
            "P" if partial_allowed => AckCode::PartiallyAccepted,
            "R" => AckCode::Rejected,
            "M" => AckCode::RejectedAuthentication,
            "W" => AckCode::RejectedAssurance,
            "X" => AckCode::RejectedDecryption,
            _ => return None,
        })
    }
}

/// A 999 transaction: the acknowledgment of one functional group we sent (AK1 … AK9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAck {
    /// AK101, the functional identifier of the group acknowledged (`HC` for 837s).
    pub functional_id: String,
    /// AK102, the group control number we sent (our GS06).
    pub group_control_number: String,
    /// AK103, the version we sent, when echoed (`005010X222A1`).
    pub version: Option<String>,
    /// One answer per transaction set acknowledged (AK2 loops), in file order.
    pub transactions: Vec<TransactionAck>,
    /// AK901, the answer for the group.
    pub status: AckCode,
    /// AK902, how many transaction sets the group said it held.
    pub included: u32,
    /// AK903, how many the receiver received.
    pub received: u32,
    /// AK904, how many it accepted.
    pub accepted: u32,
    /// AK905–AK909, the group-level syntax error codes, if any.
    pub error_codes: Vec<String>,
}

/// The answer for one transaction set (loop 2000: AK2, IK3/IK4, IK5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionAck {
    /// AK201, the kind of transaction set acknowledged (`837`).
    pub transaction_id: String,
    /// AK202, its control number (our ST02).
    pub control_number: String,
    /// AK203, its implementation guide version, when echoed.
    pub version: Option<String>,
    /// IK501, accepted or rejected.
    pub status: AckCode,
    /// IK502–IK506, the transaction-level syntax error codes, if any.
    pub error_codes: Vec<String>,
    /// The segments in error (IK3 loops), in file order.
    pub errors: Vec<SegmentError>,
}

/// One segment in error (IK3) with its element errors (IK4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    /// IK301, the id of the segment in error (`NM1`).
    pub segment_id: String,
    /// IK302, its position in the transaction set (ST is 1).
    pub position: u32,
    /// IK303, the loop it is in (`2010BA`), when given.
    pub loop_id: Option<String>,
    /// IK304, the segment syntax error code (`8` segment has data element errors…).
    pub code: String,
    /// The element errors in it (IK4).
    pub elements: Vec<ElementError>,
}

/// One element in error (IK4). IK404 (a copy of the bad data) is deliberately not kept: it
/// can be patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementError {
    /// IK401-1, the element's position in the segment.
    pub position: u32,
    /// IK401-2, the component's position, for a composite.
    pub component: Option<u32>,
    /// IK401-3, the repetition, for a repeated element.
    pub repetition: Option<u32>,
    /// IK402, the data element reference number, when given.
    pub reference: Option<String>,
    /// IK403, the element syntax error code (`1` required element missing, `7` invalid code…).
    pub code: String,
}

/// Parses a 999 file: one [`GroupAck`] per 999 transaction (each acknowledges one group).
pub fn parse_999(text: &str) -> Result<Vec<GroupAck>, Invalid> {
    transactions_of(text, "999")?
        .iter()
        .map(|t| for_transaction(t, read_999(t)))
        .collect()
}

/// The parts of a 999 seen so far.
#[derive(Default)]
struct Ack999 {
    ak1: Option<(String, String, Option<String>)>,
    transactions: Vec<PendingTransaction>,
    group: Option<GroupAck>,
}

/// An AK2 loop whose IK5 may not have arrived yet.
struct PendingTransaction {
    transaction_id: String,
    control_number: String,
    version: Option<String>,
    errors: Vec<SegmentError>,
    result: Option<(AckCode, Vec<String>)>,
}

fn read_999(transaction: &Transaction<'_>) -> Result<GroupAck, Invalid> {
    let mut ack = Ack999::default();
    for s in &transaction.segments {
        read_999_segment(&mut ack, s)?;
    }
    let (functional_id, group_control_number, version) = ack
        .ak1
        .ok_or_else(|| missing_segment("AK1", "a 999 needs an AK1 (the group acknowledged)"))?;
    let mut group = ack
        .group
        .ok_or_else(|| missing_segment("AK9", "a 999 needs an AK9 (the group's answer)"))?;
    group.functional_id = functional_id;
    group.group_control_number = group_control_number;
    group.version = version;
    for (index, pending) in ack.transactions.into_iter().enumerate() {
        let Some((status, error_codes)) = pending.result else {
            return Err(missing_segment(
                &format!("IK5 (AK2 {})", index + 1),
                "each AK2 loop needs an IK5 (the transaction set's answer)",
            ));
        };
        group.transactions.push(TransactionAck {
            transaction_id: pending.transaction_id,
            control_number: pending.control_number,
            version: pending.version,
            status,
            error_codes,
            errors: pending.errors,
        });
    }
    Ok(group)
}

fn read_999_segment(ack: &mut Ack999, s: &Segment<'_>) -> Result<(), Invalid> {
    let place = format!("AK2 {}", ack.transactions.len());
    match s.id {
        "AK1" => ack.ak1 = Some((required(s, 1, "")?, required(s, 2, "")?, optional(s, 3))),
        "AK2" => {
            let place = format!("AK2 {}", ack.transactions.len() + 1);
            ack.transactions.push(PendingTransaction {
                transaction_id: required(s, 1, &place)?,
                control_number: required(s, 2, &place)?,
                version: optional(s, 3),
                errors: Vec::new(),
                result: None,
            });
        }
        "IK3" => {
            let error = read_ik3(s, &place)?;
            open_transaction(ack, s)?.errors.push(error);
        }
        "IK4" => {
            let error = read_ik4(s, &place)?;
            let pending = open_transaction(ack, s)?;
            let segment = pending.errors.last_mut().ok_or_else(|| {
                unexpected_segment(s, &place, "an IK4 follows the IK3 of its segment")
            })?;
            segment.elements.push(error);
        }
        "IK5" => {
            let code = required(s, 1, &place)?;
            let status = AckCode::from_code(&code, false)
                .ok_or_else(|| bad_code(s, 1, &place, "A, E, R, M, W, X"))?;
            open_transaction(ack, s)?.result = Some((status, codes(s, 2..=6)));
        }
        "AK9" => ack.group = Some(read_ak9(s)?),
        // CTX (context, which can quote claim data) and anything else is not needed.
        _ => {}
    }
    Ok(())
}

/// The AK2 loop an IK3/IK4/IK5 belongs to: the last one, if its IK5 has not closed it.
fn open_transaction<'a>(
    ack: &'a mut Ack999,
    s: &Segment<'_>,
) -> Result<&'a mut PendingTransaction, Invalid> {
    match ack.transactions.last_mut() {
        Some(pending) if pending.result.is_none() => Ok(pending),
        _ => Err(unexpected_segment(
            s,
            "",
            "IK3, IK4 and IK5 belong inside an AK2 loop, before its IK5",
        )),
    }
}

fn read_ik3(s: &Segment<'_>, place: &str) -> Result<SegmentError, Invalid> {
    Ok(SegmentError {
        segment_id: required(s, 1, place)?,
        position: count(s, 2, place)?,
        loop_id: optional(s, 3),
        code: required(s, 4, place)?,
        elements: Vec::new(),
    })
}

fn read_ik4(s: &Segment<'_>, place: &str) -> Result<ElementError, Invalid> {
    let parts = s.components(1);
    let part = |i: usize| parts.get(i).map(|p| p.trim()).unwrap_or("");
    let number = |i: usize| -> Result<Option<u32>, Invalid> {
        match part(i) {
            "" => Ok(None),
            text => text.parse().map(Some).map_err(|_| not_a_count(s, 1, place)),
        }
    };
    Ok(ElementError {
        position: number(0)?.ok_or_else(|| not_a_count(s, 1, place))?,
        component: number(1)?,
        repetition: number(2)?,
        reference: optional(s, 2),
        code: required(s, 3, place)?,
    })
}

fn read_ak9(s: &Segment<'_>) -> Result<GroupAck, Invalid> {
    let code = required(s, 1, "")?;
    let status =
        AckCode::from_code(&code, true).ok_or_else(|| bad_code(s, 1, "", "A, E, P, R, M, W, X"))?;
    Ok(GroupAck {
        functional_id: String::new(),
        group_control_number: String::new(),
        version: None,
        transactions: Vec::new(),
        status,
        included: count(s, 2, "")?,
        received: count(s, 3, "")?,
        accepted: count(s, 4, "")?,
        error_codes: codes(s, 5..=9),
    })
}

/// The non-empty elements in `range`: a list of error codes.
fn codes(s: &Segment<'_>, range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.filter_map(|n| optional(s, n)).collect()
}

/// Element `n` as a count (digits), required.
fn count(s: &Segment<'_>, n: usize, place: &str) -> Result<u32, Invalid> {
    required(s, n, place)?
        .parse()
        .map_err(|_| not_a_count(s, n, place))
}

fn not_a_count(s: &Segment<'_>, n: usize, place: &str) -> Invalid {
    Invalid::new(
        fields::field(s, n, place),
        fields::ELEMENT_INVALID,
        "a count or position here is a whole number",
    )
}

/// Whether a 277CA status category (STC01-1) means the claim was taken in.
///
/// Accepted or acknowledged: `A0` (forwarded), `A1` (received), `A2` (accepted into
/// adjudication), `A5` (split claim). Everything else is not accepted: `A3` (returned as
/// unprocessable), `A4` (not found), `A6` (rejected for missing information), `A7` (rejected
/// for invalid information), `A8` (rejected for relational field in error), and any other
/// category (`E0`–`E4` errors, `D0`, unknown codes), which the claim must be looked at for.
pub fn category_accepted(category: &str) -> bool {
    matches!(category, "A0" | "A1" | "A2" | "A5")
}

/// One claim's acknowledgment in a 277CA (loop 2200D).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimAck {
    /// TRN02 of loop 2200D: our claim id, the CLM01 we sent.
    pub claim_id: String,
    /// REF*1K: the payer's claim number, when assigned.
    pub payer_claim_number: Option<String>,
    /// REF*D9: the clearinghouse's trace number, when given.
    pub clearinghouse_trace: Option<String>,
    /// The claim-level statuses (every STC of loop 2200D; STC10 and STC11 add more).
    pub statuses: Vec<ClaimStatusInfo>,
    /// Whether the claim was taken in: every status category is accepted per
    /// [`category_accepted`]. One rejecting status rejects the claim.
    pub accepted: bool,
}

/// One status of a claim (an STC composite and the elements around it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimStatusInfo {
    /// The status category (`A1`, `A7`…), see [`category_accepted`].
    pub category: String,
    /// The claim status code (`20` accepted for processing, `21` missing or invalid information…).
    pub code: String,
    /// The entity the status concerns (`85` billing provider, `IL` subscriber…), when given.
    pub entity: Option<String>,
    /// STC02, the date the status took effect.
    pub date: Option<NaiveDate>,
    /// STC03, the action code (`WQ` accepted, `U` rejected), when given.
    pub action: Option<String>,
    /// STC04, the total claim charge as the receiver read it.
    pub amount: Option<Cents>,
}

/// Parses a 277CA file: one [`ClaimAck`] per claim (loop 2200D), across all transactions.
pub fn parse_277ca(text: &str) -> Result<Vec<ClaimAck>, Invalid> {
    let mut claims = Vec::new();
    for transaction in transactions_of(text, "277")? {
        claims.extend(for_transaction(&transaction, read_277ca(&transaction))?);
    }
    Ok(claims)
}

/// The 277CA reader's position.
#[derive(Default)]
struct Ack277 {
    /// The HL03 level code of the current hierarchical level (`20`, `21`, `19`, `PT`).
    level: String,
    /// Inside a service line loop (2220D), whose STC/REF are not the claim's.
    in_service: bool,
    claims: Vec<ClaimAck>,
}

fn read_277ca(transaction: &Transaction<'_>) -> Result<Vec<ClaimAck>, Invalid> {
    let mut ack = Ack277::default();
    for s in &transaction.segments {
        read_277_segment(&mut ack, s)?;
    }
    for (index, claim) in ack.claims.iter_mut().enumerate() {
        if claim.statuses.is_empty() {
            return Err(missing_segment(
                &format!("STC (claim {})", index + 1),
                "each claim of a 277CA needs an STC (its status)",
            ));
        }
        claim.accepted = claim
            .statuses
            .iter()
            .all(|s| category_accepted(&s.category));
    }
    Ok(ack.claims)
}

fn read_277_segment(ack: &mut Ack277, s: &Segment<'_>) -> Result<(), Invalid> {
    let in_claim = ack.level == "PT" && !ack.in_service && !ack.claims.is_empty();
    let place = format!("claim {}", ack.claims.len());
    match s.id {
        "HL" => {
            ack.level = s.element(3).trim().to_string();
            ack.in_service = false;
        }
        "TRN" if ack.level == "PT" => {
            let place = format!("claim {}", ack.claims.len() + 1);
            ack.claims.push(ClaimAck {
                claim_id: required(s, 2, &place)?,
                payer_claim_number: None,
                clearinghouse_trace: None,
                statuses: Vec::new(),
                accepted: false,
            });
            ack.in_service = false;
        }
        "SVC" => ack.in_service = true,
        "STC" if in_claim => {
            let statuses = read_stc(s, &place)?;
            if let Some(claim) = ack.claims.last_mut() {
                claim.statuses.extend(statuses);
            }
        }
        "REF" if in_claim => {
            if let Some(claim) = ack.claims.last_mut() {
                match s.element(1) {
                    "1K" => claim.payer_claim_number = optional(s, 2),
                    "D9" => claim.clearinghouse_trace = optional(s, 2),
                    _ => {}
                }
            }
        }
        // NM1, DTP, QTY, AMT and the STC of other levels are not needed.
        _ => {}
    }
    Ok(())
}

/// STC: the status composite in STC01, and optionally two more in STC10 and STC11, all sharing
/// the date (STC02), action (STC03) and amount (STC04).
fn read_stc(s: &Segment<'_>, place: &str) -> Result<Vec<ClaimStatusInfo>, Invalid> {
    let date = optional_date(s, 2, place)?;
    let action = optional(s, 3);
    let amount = optional_amount(s, 4, place)?;
    let mut statuses = Vec::new();
    for n in [1, 10, 11] {
        let parts = s.components(n);
        let part = |i: usize| parts.get(i).map(|p| p.trim()).unwrap_or("");
        if part(0).is_empty() && n != 1 {
            continue;
        }
        if part(0).is_empty() || part(1).is_empty() {
            return Err(Invalid::new(
                fields::field(s, n, place),
                fields::ELEMENT_MISSING,
                "a status composite needs a category and a status code (A7:562)",
            ));
        }
        statuses.push(ClaimStatusInfo {
            category: part(0).to_string(),
            code: part(1).to_string(),
            entity: Some(part(2)).filter(|e| !e.is_empty()).map(str::to_string),
            date,
            action: action.clone(),
            amount,
        });
    }
    Ok(statuses)
}
