//! The 837P (005010X222A1) writer: a [`Batch`] becomes one interchange with one functional group
//! of one or more transaction sets.
//!
//! Shape of the output (loops as the implementation guide names them):
//!
//! ```text
//! ISA GS
//!   ST BHT NM1*41 PER NM1*40                         header, 1000A, 1000B
//!   HL*1**20*1 PRV NM1*85 N3 N4 REF*EI [NM1*87 N3 N4] 2000A, 2010AA, 2010AB
//!   HL*n*1*22*0 SBR NM1*IL N3 N4 DMG NM1*PR [N3 N4]   2000B, 2010BA, 2010BB (per subscriber+payer)
//!     CLM [REF*F8] HI [NM1*82]                         2300, 2310B (per claim)
//!     [SBR CAS* AMT*D OI NM1*IL NM1*PR]                2320, 2330A, 2330B (secondary claims)
//!       LX SV1 DTP*472                                 2400 (per line)
//!       [SVD CAS* DTP*573]                             2430 (secondary claims)
//!   SE
//! GE IEA
//! ```
//!
//! Fixed choices (the "situational" rules this writer settles):
//! - ISA05/ISA07 `ZZ`; ISA14 `0` (no TA1 requested; the clearinghouse answers with a 999);
//!   ISA11 `^`, ISA16 `:`.
//! - BHT02 `00` (original), BHT06 `CH` (chargeable); BHT03 is the interchange control number
//!   followed by ST02, unique because interchange numbers never repeat.
//! - SBR01 `P` for a claim to the primary payer; `S` for a secondary claim, which carries the
//!   primary's adjudication (2320 SBR01 `P`, AMT*D, OI with benefits assigned and release on
//!   file; 2330A/2330B with member and payer ids; 2430 per line). SBR02 `18` and HL04 `0`: the
//!   patient is the subscriber (no 2000C loop).
//! - CLM05-2 `B` (place of service code set); CLM06 `Y` (provider signature on file); CLM07 `A`
//!   (assigned: the provider accepts assignment); CLM08 `Y` (benefits assigned to the provider);
//!   CLM09 `Y` (signed release of information on file). The practice must hold these
//!   signatures; the service is where that is enforced.
//! - SV103 `UN` (units); SV105 empty (the claim's place of service applies to every line).
//! - Claims are cut into transaction sets of at most [`WriteOptions::claims_per_transaction`]
//!   claims (5000, the guide's recommended maximum).

use std::collections::HashMap;

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::model::{
    Address, Adjustment, Batch, BillingProvider, Claim, Envelope, Frequency, OtherPayer, Payer,
    Receiver, ServiceLine, Sex, Submitter, Subscriber, Usage,
};
use super::segments::{self, Sink, composite, d8, name, optional, optional_name, required};
use super::{WriteError, control_number_ok};
use crate::domain::invalid::Invalid;
use crate::domain::money::{Cents, MAX_AMOUNT};

/// Reason: the batch has no claim (an 837 needs at least one).
pub const BATCH_EMPTY: &str = "BATCH_EMPTY";
/// Reason: an interchange or group control number is outside 1..=999_999_999.
pub const CONTROL_NUMBER_OUT_OF_RANGE: &str = "CONTROL_NUMBER_OUT_OF_RANGE";
/// Reason: a claim has no service line, or more than 50.
pub const CLAIM_LINE_COUNT: &str = "CLAIM_LINE_COUNT";
/// Reason: a claim's total is not the sum of its lines' charges.
pub const CLAIM_TOTAL_MISMATCH: &str = "CLAIM_TOTAL_MISMATCH";
/// Reason: a claim has no diagnosis, or more than 12.
pub const CLAIM_DIAGNOSIS_COUNT: &str = "CLAIM_DIAGNOSIS_COUNT";
/// Reason: a service line has more than 4 modifiers.
pub const SERVICE_MODIFIER_COUNT: &str = "SERVICE_MODIFIER_COUNT";
/// Reason: a service line has no diagnosis pointer, or more than 4.
pub const DIAGNOSIS_POINTER_COUNT: &str = "DIAGNOSIS_POINTER_COUNT";
/// Reason: a diagnosis pointer does not point at one of the claim's diagnoses, or repeats an
/// earlier pointer of the line.
pub const DIAGNOSIS_POINTER_INVALID: &str = "DIAGNOSIS_POINTER_INVALID";
/// Reason: a service line has zero units.
pub const SERVICE_UNITS_ZERO: &str = "SERVICE_UNITS_ZERO";
/// Reason: an amount is negative or above [`MAX_AMOUNT`].
pub const AMOUNT_OUT_OF_RANGE: &str = "AMOUNT_OUT_OF_RANGE";
/// Reason: a secondary claim's other-payer amounts do not add up to its total, or its lines do
/// not all carry the other payer's adjudication.
pub const OTHER_PAYER_NOT_BALANCED: &str = "OTHER_PAYER_NOT_BALANCED";

/// The implementation guide this writer follows (GS08, ST03).
const VERSION: &str = "005010X222A1";
/// The guide's limits on a claim.
const MAX_LINES: usize = 50;
const MAX_DIAGNOSES: usize = 12;
const MAX_MODIFIERS: usize = 4;
const MAX_POINTERS: usize = 4;
/// The guide recommends no more than 5000 claims (CLM) per transaction set.
const MAX_CLAIMS_PER_TRANSACTION: usize = 5000;

/// How the text is laid out. Only layout: the content is the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Whether a newline follows each `~` (easier to read and diff; receivers ignore it).
    pub line_break: bool,
    /// Claims per transaction set (ST…SE), clamped to 1..=5000.
    pub claims_per_transaction: usize,
}

impl Default for WriteOptions {
    /// `~\n` and 5000 claims per transaction set.
    fn default() -> Self {
        Self {
            line_break: true,
            claims_per_transaction: MAX_CLAIMS_PER_TRANSACTION,
        }
    }
}

/// Writes the batch as an 837P interchange with the default [`WriteOptions`].
pub fn write_837p(batch: &Batch) -> Result<String, WriteError> {
    write_837p_with(batch, &WriteOptions::default())
}

/// Writes the batch as an 837P interchange. Refuses (naming the field) anything that would give
/// a broken or self-contradicting file; never writes part of one.
pub fn write_837p_with(batch: &Batch, options: &WriteOptions) -> Result<String, WriteError> {
    if batch.claims.is_empty() {
        return Err(Invalid::new("claims", BATCH_EMPTY, "a batch needs at least one claim").into());
    }
    let envelope = &batch.envelope;
    check_control("envelope.interchange_control", envelope.interchange_control)?;
    check_control("envelope.group_control", envelope.group_control)?;
    let terminator = if options.line_break { "~\n" } else { "~" };
    let mut sink = Sink::new(terminator);
    write_isa(&mut sink, envelope)?;
    write_gs(&mut sink, envelope)?;
    let size = options
        .claims_per_transaction
        .clamp(1, MAX_CLAIMS_PER_TRANSACTION);
    let mut sets = 0;
    for (index, chunk) in batch.claims.chunks(size).enumerate() {
        sets += 1;
        write_transaction(&mut sink, batch, sets, index * size, chunk)?;
    }
    let group = envelope.group_control.to_string();
    sink.segment("GE", &[&sets.to_string(), &group]);
    let interchange = format!("{:09}", envelope.interchange_control);
    // One functional group per interchange.
    sink.segment("IEA", &["1", &interchange]);
    Ok(sink.finish())
}

fn check_control(field: &str, number: u32) -> Result<(), Invalid> {
    if control_number_ok(number) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            CONTROL_NUMBER_OUT_OF_RANGE,
            "a control number is between 1 and 999999999",
        ))
    }
}

/// ISA is fixed-width: every element has its exact length, the ids padded to 15.
fn write_isa(sink: &mut Sink, envelope: &Envelope) -> Result<(), Invalid> {
    let sender = required("envelope.sender_id", &envelope.sender_id, 15)?;
    let receiver = required("envelope.receiver_id", &envelope.receiver_id, 15)?;
    let (date, time) = (yymmdd(envelope.created), hhmm(envelope.created));
    let usage = match envelope.usage {
        Usage::Test => "T",
        Usage::Production => "P",
    };
    let repetition = segments::REPETITION_SEPARATOR.to_string();
    let component = segments::COMPONENT_SEPARATOR.to_string();
    let control = format!("{:09}", envelope.interchange_control);
    let blank = " ".repeat(10);
    sink.segment(
        "ISA",
        &[
            "00",
            &blank,
            "00",
            &blank,
            "ZZ",
            &format!("{sender:<15}"),
            "ZZ",
            &format!("{receiver:<15}"),
            &date,
            &time,
            &repetition,
            "00501",
            &control,
            "0",
            usage,
            &component,
        ],
    );
    Ok(())
}

fn write_gs(sink: &mut Sink, envelope: &Envelope) -> Result<(), Invalid> {
    let sender = required("envelope.gs_sender", &envelope.gs_sender, 15)?;
    let receiver = required("envelope.gs_receiver", &envelope.gs_receiver, 15)?;
    let date = ccyymmdd("envelope.created", envelope.created)?;
    let group = envelope.group_control.to_string();
    let time = hhmm(envelope.created);
    sink.segment(
        "GS",
        &["HC", &sender, &receiver, &date, &time, &group, "X", VERSION],
    );
    Ok(())
}

/// ISA09: the two-digit year is what the standard asks for.
fn yymmdd(at: NaiveDateTime) -> String {
    let year = at.year().rem_euclid(100);
    format!("{year:02}{:02}{:02}", at.month(), at.day())
}

fn hhmm(at: NaiveDateTime) -> String {
    format!("{:02}{:02}", at.hour(), at.minute())
}

fn ccyymmdd(field: &str, at: NaiveDateTime) -> Result<String, Invalid> {
    d8(field, at.date())
}

/// One ST…SE: header, submitter, receiver, billing provider, then the claims grouped by
/// subscriber and payer. `first` is the batch index of `claims[0]`, for error paths.
fn write_transaction(
    sink: &mut Sink,
    batch: &Batch,
    number: usize,
    first: usize,
    claims: &[Claim],
) -> Result<(), Invalid> {
    let start = sink.written();
    let control = format!("{number:04}");
    sink.segment("ST", &["837", &control, VERSION]);
    let envelope = &batch.envelope;
    let reference = format!("{:09}{control}", envelope.interchange_control);
    let date = ccyymmdd("envelope.created", envelope.created)?;
    let time = hhmm(envelope.created);
    sink.segment("BHT", &["0019", "00", &reference, &date, &time, "CH"]);
    write_submitter(sink, &batch.submitter).map_err(|e| e.under("submitter"))?;
    write_receiver(sink, &batch.receiver).map_err(|e| e.under("receiver"))?;
    sink.segment("HL", &["1", "", "20", "1"]);
    write_billing_provider(sink, &batch.billing_provider)
        .map_err(|e| e.under("billing_provider"))?;
    for (hl, group) in (2usize..).zip(group_by_subscriber(claims)) {
        write_subscriber_group(sink, hl, first, &group)?;
    }
    // SE01 counts ST through SE: the segments since ST, plus SE itself.
    let count = sink.written() - start + 1;
    sink.segment("SE", &[&count.to_string(), &control]);
    Ok(())
}

fn write_submitter(sink: &mut Sink, submitter: &Submitter) -> Result<(), Invalid> {
    let org = name("name", &submitter.name, 60)?;
    let id = required("id", &submitter.id, 80)?;
    let contact = name("contact_name", &submitter.contact_name, 60)?;
    let phone = required("phone", &submitter.phone, 256)?;
    sink.segment("NM1", &["41", "2", &org, "", "", "", "", "46", &id]);
    sink.segment("PER", &["IC", &contact, "TE", &phone]);
    Ok(())
}

fn write_receiver(sink: &mut Sink, receiver: &Receiver) -> Result<(), Invalid> {
    let org = name("name", &receiver.name, 60)?;
    let id = required("id", &receiver.id, 80)?;
    sink.segment("NM1", &["40", "2", &org, "", "", "", "", "46", &id]);
    Ok(())
}

/// 2000A PRV, 2010AA and the optional 2010AB pay-to address.
fn write_billing_provider(sink: &mut Sink, provider: &BillingProvider) -> Result<(), Invalid> {
    let taxonomy = required("taxonomy", &provider.taxonomy, 50)?;
    let org = name("organization_name", &provider.organization_name, 60)?;
    let npi = required("npi", &provider.npi, 80)?;
    let ein = required("ein", &provider.ein, 50)?;
    sink.segment("PRV", &["BI", "PXC", &taxonomy]);
    sink.segment("NM1", &["85", "2", &org, "", "", "", "", "XX", &npi]);
    write_address(sink, &provider.address).map_err(|e| e.under("address"))?;
    sink.segment("REF", &["EI", &ein]);
    if let Some(pay_to) = &provider.pay_to {
        // 2010AB carries only the entity: no name or id (NM103..NM109 are not used).
        sink.segment("NM1", &["87", "2"]);
        write_address(sink, pay_to).map_err(|e| e.under("pay_to"))?;
    }
    Ok(())
}

/// N3 and N4. A value refused half-way through a loop does no harm: on any error the whole
/// output is dropped, never returned.
fn write_address(sink: &mut Sink, address: &Address) -> Result<(), Invalid> {
    let line1 = name("line1", &address.line1, 55)?;
    let line2 = optional_name("line2", address.line2.as_deref(), 55)?.unwrap_or_default();
    let city = name("city", &address.city, 30)?;
    let state = name("state", &address.state, 2)?;
    let zip = required("zip", &address.zip, 15)?;
    sink.segment("N3", &[&line1, &line2]);
    sink.segment("N4", &[&city, &state, &zip]);
    Ok(())
}

/// Claims sharing one subscriber and payer, with their batch-relative positions.
struct SubscriberGroup<'a> {
    subscriber: &'a Subscriber,
    payer: &'a Payer,
    /// SBR01: `P`, or `S` for secondary claims.
    sequence: &'static str,
    claims: Vec<(usize, &'a Claim)>,
}

/// SBR01 of a claim's 2000B loop.
fn sequence(claim: &Claim) -> &'static str {
    if claim.other_payer.is_some() {
        "S"
    } else {
        "P"
    }
}

/// Groups claims by (subscriber, payer, payer sequence), in order of first appearance; claims
/// keep their order within a group.
fn group_by_subscriber(claims: &[Claim]) -> Vec<SubscriberGroup<'_>> {
    let mut groups: Vec<SubscriberGroup<'_>> = Vec::new();
    let mut index: HashMap<(&Subscriber, &Payer, &str), usize> = HashMap::new();
    for (position, claim) in claims.iter().enumerate() {
        let key = (&claim.subscriber, &claim.payer, sequence(claim));
        let slot = *index.entry(key).or_insert_with(|| {
            groups.push(SubscriberGroup {
                subscriber: &claim.subscriber,
                payer: &claim.payer,
                sequence: sequence(claim),
                claims: Vec::new(),
            });
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(slot) {
            group.claims.push((position, claim));
        }
    }
    groups
}

/// 2000B HL and SBR, 2010BA, 2010BB, then the group's claims. Errors in the subscriber or payer
/// name the group's first claim.
fn write_subscriber_group(
    sink: &mut Sink,
    hl: usize,
    first: usize,
    group: &SubscriberGroup<'_>,
) -> Result<(), Invalid> {
    let head = group.claims.first().map_or(first, |(p, _)| first + p);
    let at = format!("claims[{head}]");
    sink.segment("HL", &[&hl.to_string(), "1", "22", "0"]);
    write_subscriber(sink, group.subscriber, group.sequence)
        .map_err(|e| e.under(&format!("{at}.subscriber")))?;
    write_payer(sink, group.payer).map_err(|e| e.under(&format!("{at}.payer")))?;
    for (position, claim) in &group.claims {
        write_claim(sink, claim).map_err(|e| e.under(&format!("claims[{}]", first + position)))?;
    }
    Ok(())
}

/// SBR and 2010BA (the subscriber is the patient, so N3/N4 and DMG are required).
fn write_subscriber(
    sink: &mut Sink,
    subscriber: &Subscriber,
    sequence: &str,
) -> Result<(), Invalid> {
    let group = optional("group_number", subscriber.group_number.as_deref(), 50)?;
    let filing = required(
        "claim_filing_indicator",
        &subscriber.claim_filing_indicator,
        2,
    )?;
    let last = name("last_name", &subscriber.last_name, 60)?;
    let first = name("first_name", &subscriber.first_name, 35)?;
    let member = required("member_id", &subscriber.member_id, 80)?;
    let birth = d8("birth_date", subscriber.birth_date)?;
    let group = group.unwrap_or_default();
    sink.segment(
        "SBR",
        &[sequence, "18", &group, "", "", "", "", "", &filing],
    );
    sink.segment(
        "NM1",
        &["IL", "1", &last, &first, "", "", "", "MI", &member],
    );
    write_address(sink, &subscriber.address).map_err(|e| e.under("address"))?;
    sink.segment("DMG", &["D8", &birth, sex_code(subscriber.sex)]);
    Ok(())
}

fn sex_code(sex: Sex) -> &'static str {
    match sex {
        Sex::Female => "F",
        Sex::Male => "M",
        Sex::Unknown => "U",
    }
}

fn write_payer(sink: &mut Sink, payer: &Payer) -> Result<(), Invalid> {
    let org = name("name", &payer.name, 60)?;
    let id = required("payer_id", &payer.payer_id, 80)?;
    sink.segment("NM1", &["PR", "2", &org, "", "", "", "", "PI", &id]);
    if let Some(address) = &payer.address {
        write_address(sink, address).map_err(|e| e.under("address"))?;
    }
    Ok(())
}

/// 2300 CLM, REF*F8, HI, 2310B, then the lines. The claim-level rules are checked first.
fn write_claim(sink: &mut Sink, claim: &Claim) -> Result<(), Invalid> {
    check_claim(claim)?;
    let id = required("claim_id", &claim.claim_id, 38)?;
    let pos = required("place_of_service", &claim.place_of_service, 2)?;
    let (frequency, original) = match &claim.frequency {
        Frequency::Original => ("1", None),
        Frequency::Corrected { payer_claim_number } => ("7", Some(payer_claim_number)),
        Frequency::Void { payer_claim_number } => ("8", Some(payer_claim_number)),
    };
    let original = original
        .map(|n| required("frequency.payer_claim_number", n, 50))
        .transpose()?;
    let hi = diagnosis_elements(&claim.diagnoses)?;
    let location = composite(&[&pos, "B", frequency]);
    let total = claim.total.to_x12();
    sink.segment("CLM", &[&id, &total, "", "", &location, "Y", "A", "Y", "Y"]);
    if let Some(original) = original {
        sink.segment("REF", &["F8", &original]);
    }
    let hi: Vec<&str> = hi.iter().map(String::as_str).collect();
    sink.segment("HI", &hi);
    if let Some(rendering) = &claim.rendering_provider {
        let last = name("rendering_provider.last_name", &rendering.last_name, 60)?;
        let first = name("rendering_provider.first_name", &rendering.first_name, 35)?;
        let npi = required("rendering_provider.npi", &rendering.npi, 80)?;
        sink.segment("NM1", &["82", "1", &last, &first, "", "", "", "XX", &npi]);
    }
    let other_payer_id = match &claim.other_payer {
        Some(other) => Some(
            write_other_payer(sink, other, &claim.subscriber)
                .map_err(|e| e.under("other_payer"))?,
        ),
        None => None,
    };
    for (number, line) in (1usize..).zip(&claim.lines) {
        write_line(sink, number, line, claim.diagnoses.len())
            .and_then(|()| match (&other_payer_id, &line.prior) {
                (Some(id), Some(_)) => write_line_adjudication(sink, id, line),
                _ => Ok(()),
            })
            .map_err(|e| e.under(&format!("lines[{}]", number - 1)))?;
    }
    Ok(())
}

/// 2320 (SBR, CAS, AMT*D, OI), 2330A (NM1*IL) and 2330B (NM1*PR); returns the other payer's id,
/// which each 2430 SVD01 repeats.
fn write_other_payer(
    sink: &mut Sink,
    other: &OtherPayer,
    subscriber: &Subscriber,
) -> Result<String, Invalid> {
    let group = optional("group_number", other.group_number.as_deref(), 50)?.unwrap_or_default();
    let filing = required("claim_filing_indicator", &other.claim_filing_indicator, 2)?;
    let last = name("subscriber.last_name", &subscriber.last_name, 60)?;
    let first = name("subscriber.first_name", &subscriber.first_name, 35)?;
    let member = required("member_id", &other.member_id, 80)?;
    let payer_name = name("payer.name", &other.payer.name, 60)?;
    let payer_id = required("payer.payer_id", &other.payer.payer_id, 80)?;
    check_amount("paid", other.paid)?;
    sink.segment("SBR", &["P", "18", &group, "", "", "", "", "", &filing]);
    write_adjustments(sink, "adjustments", &other.adjustments)?;
    sink.segment("AMT", &["D", &other.paid.to_x12()]);
    sink.segment("OI", &["", "", "Y", "", "", "Y"]);
    sink.segment(
        "NM1",
        &["IL", "1", &last, &first, "", "", "", "MI", &member],
    );
    sink.segment(
        "NM1",
        &["PR", "2", &payer_name, "", "", "", "", "PI", &payer_id],
    );
    Ok(payer_id)
}

/// CAS segments: one per group code (in order of first appearance), up to six reason/amount
/// pairs each (CAS02..CAS19), more pairs in another CAS of the same group.
fn write_adjustments(sink: &mut Sink, field: &str, list: &[Adjustment]) -> Result<(), Invalid> {
    let mut groups: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let group = required(&format!("{field}[{i}].group"), &a.group, 2)?;
        let reason = required(&format!("{field}[{i}].reason"), &a.reason, 5)?;
        if a.amount.cents().unsigned_abs() > MAX_AMOUNT.cents().unsigned_abs() {
            return Err(Invalid::new(
                format!("{field}[{i}].amount"),
                AMOUNT_OUT_OF_RANGE,
                "an adjustment is at most the largest accepted amount",
            ));
        }
        let pair = (reason, a.amount.to_x12());
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, pairs)) => pairs.push(pair),
            None => groups.push((group, vec![pair])),
        }
    }
    for (group, pairs) in &groups {
        for chunk in pairs.chunks(6) {
            let mut elements: Vec<&str> = vec![group];
            for (i, (reason, amount)) in chunk.iter().enumerate() {
                if i > 0 {
                    // CAS04/07/…: the quantity of the previous pair, not sent.
                    elements.push("");
                }
                elements.push(reason);
                elements.push(amount);
            }
            sink.segment("CAS", &elements);
        }
    }
    Ok(())
}

/// 2430: SVD (the other payer's id, what it paid, the procedure, the units), CAS, DTP*573.
fn write_line_adjudication(
    sink: &mut Sink,
    payer_id: &str,
    line: &ServiceLine,
) -> Result<(), Invalid> {
    let Some(prior) = &line.prior else {
        return Ok(());
    };
    check_amount("prior.paid", prior.paid)?;
    let mut procedure = vec!["HC".to_string(), name("code", &line.code, 48)?];
    for (i, modifier) in line.modifiers.iter().enumerate() {
        procedure.push(name(&format!("modifiers[{i}]"), modifier, 2)?);
    }
    let procedure: Vec<&str> = procedure.iter().map(String::as_str).collect();
    let date = d8("prior.date", prior.date)?;
    sink.segment(
        "SVD",
        &[
            payer_id,
            &prior.paid.to_x12(),
            &composite(&procedure),
            "",
            &line.units.to_string(),
        ],
    );
    write_adjustments(sink, "prior.adjustments", &prior.adjustments)?;
    sink.segment("DTP", &["573", "D8", &date]);
    Ok(())
}

/// The counts the guide allows, and the total: CLM02 must equal the sum of SV102.
fn check_claim(claim: &Claim) -> Result<(), Invalid> {
    if claim.lines.is_empty() || claim.lines.len() > MAX_LINES {
        return Err(Invalid::new(
            "lines",
            CLAIM_LINE_COUNT,
            format!("a claim has 1 to {MAX_LINES} service lines"),
        ));
    }
    if claim.diagnoses.is_empty() || claim.diagnoses.len() > MAX_DIAGNOSES {
        return Err(Invalid::new(
            "diagnoses",
            CLAIM_DIAGNOSIS_COUNT,
            format!("a claim has 1 to {MAX_DIAGNOSES} diagnoses"),
        ));
    }
    check_amount("total", claim.total)?;
    for (i, line) in claim.lines.iter().enumerate() {
        check_amount(&format!("lines[{i}].charge"), line.charge)?;
    }
    // Cannot overflow: at most 50 amounts of at most MAX_AMOUNT each.
    let sum: Cents = claim.lines.iter().map(|line| line.charge).sum();
    if sum != claim.total {
        return Err(Invalid::new(
            "total",
            CLAIM_TOTAL_MISMATCH,
            "the claim total must equal the sum of its service line charges",
        ));
    }
    if let Some(other) = &claim.other_payer {
        check_other_payer(claim, other)?;
    }
    Ok(())
}

/// A secondary claim: every line carries the other payer's adjudication, AMT*D is the sum of the
/// lines' SVD02, and the total is what it paid plus every adjustment (claim and line level).
fn check_other_payer(claim: &Claim, other: &OtherPayer) -> Result<(), Invalid> {
    let not_balanced = |field: &str, message: &str| {
        Err(Invalid::new(
            format!("other_payer.{field}"),
            OTHER_PAYER_NOT_BALANCED,
            message.to_string(),
        ))
    };
    let mut paid: i128 = 0;
    let mut adjusted: i128 = other
        .adjustments
        .iter()
        .map(|a| i128::from(a.amount.cents()))
        .sum();
    for line in &claim.lines {
        let Some(prior) = &line.prior else {
            return not_balanced(
                "lines",
                "every line of a secondary claim carries the other payer's adjudication",
            );
        };
        paid += i128::from(prior.paid.cents());
        adjusted += prior
            .adjustments
            .iter()
            .map(|a| i128::from(a.amount.cents()))
            .sum::<i128>();
    }
    if paid != i128::from(other.paid.cents()) {
        return not_balanced("paid", "AMT*D must equal the sum of the lines' payments");
    }
    if paid + adjusted != i128::from(claim.total.cents()) {
        return not_balanced(
            "adjustments",
            "the total must equal what the other payer paid plus its adjustments",
        );
    }
    Ok(())
}

fn check_amount(field: &str, amount: Cents) -> Result<(), Invalid> {
    if amount.is_negative() || amount > MAX_AMOUNT {
        return Err(Invalid::new(
            field,
            AMOUNT_OUT_OF_RANGE,
            "a charge is zero or more, and at most the largest accepted amount",
        ));
    }
    Ok(())
}

/// HI01 is the principal diagnosis (`ABK`), HI02..HI12 the others (`ABF`).
fn diagnosis_elements(diagnoses: &[String]) -> Result<Vec<String>, Invalid> {
    let mut elements = Vec::with_capacity(diagnoses.len());
    for (i, code) in diagnoses.iter().enumerate() {
        let code = name(&format!("diagnoses[{i}]"), code, 30)?;
        let qualifier = if i == 0 { "ABK" } else { "ABF" };
        elements.push(composite(&[qualifier, &code]));
    }
    Ok(elements)
}

/// 2400: LX, SV1, DTP*472. `diagnoses` is how many diagnoses the claim has (pointers must
/// stay within them). SV105 stays empty: the claim's place of service applies.
fn write_line(
    sink: &mut Sink,
    number: usize,
    line: &ServiceLine,
    diagnoses: usize,
) -> Result<(), Invalid> {
    let code = name("code", &line.code, 48)?;
    if line.modifiers.len() > MAX_MODIFIERS {
        return Err(Invalid::new(
            "modifiers",
            SERVICE_MODIFIER_COUNT,
            format!("a service line has at most {MAX_MODIFIERS} modifiers"),
        ));
    }
    let mut procedure = vec!["HC".to_string(), code];
    for (i, modifier) in line.modifiers.iter().enumerate() {
        procedure.push(name(&format!("modifiers[{i}]"), modifier, 2)?);
    }
    if line.units == 0 {
        return Err(Invalid::new(
            "units",
            SERVICE_UNITS_ZERO,
            "a service line has at least 1 unit",
        ));
    }
    let pointers = pointer_element(&line.diagnosis_pointers, diagnoses)?;
    let date = d8("service_date", line.service_date)?;
    let procedure: Vec<&str> = procedure.iter().map(String::as_str).collect();
    let charge = line.charge.to_x12();
    let units = line.units.to_string();
    sink.segment("LX", &[&number.to_string()]);
    sink.segment(
        "SV1",
        &[
            &composite(&procedure),
            &charge,
            "UN",
            &units,
            "",
            "",
            &pointers,
        ],
    );
    sink.segment("DTP", &["472", "D8", &date]);
    Ok(())
}

/// SV107: 1 to 4 pointers, each a 1-based position among the claim's `diagnoses` (in HI),
/// joined as `1:2`.
fn pointer_element(pointers: &[u8], diagnoses: usize) -> Result<String, Invalid> {
    if pointers.is_empty() || pointers.len() > MAX_POINTERS {
        return Err(Invalid::new(
            "diagnosis_pointers",
            DIAGNOSIS_POINTER_COUNT,
            format!("a service line points at 1 to {MAX_POINTERS} diagnoses"),
        ));
    }
    // Out of range, or repeating an earlier pointer (payers reject SV107 repeats).
    let bad = |(i, &p): (usize, &u8)| {
        p == 0 || usize::from(p) > diagnoses || pointers.iter().take(i).any(|&q| q == p)
    };
    if let Some(i) = pointers.iter().enumerate().position(bad) {
        return Err(Invalid::new(
            format!("diagnosis_pointers[{i}]"),
            DIAGNOSIS_POINTER_INVALID,
            "a pointer is the 1-based position of one of the claim's diagnoses, each at most once",
        ));
    }
    let parts: Vec<String> = pointers.iter().map(u8::to_string).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(composite(&parts))
}
