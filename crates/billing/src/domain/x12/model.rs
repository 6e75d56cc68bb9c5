//! The input of the 837P writer: one batch of claims of ONE billing entity to ONE clearinghouse.
//!
//! The scrubber has already checked formats (NPI check digit, ZIP, ICD-10 and HCPCS codes, phone
//! digits…), so these types carry plain strings. The writer still refuses anything that would break
//! the file itself: separators or control characters in data, empty required values, values longer
//! than their element, totals that do not add up.

use chrono::{NaiveDate, NaiveDateTime};

use crate::domain::money::Cents;

/// Everything one 837P file holds: the envelope, who sends it to whom, the billing provider and
/// its claims (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// ISA/GS envelope: identifiers, control numbers, test or production.
    pub envelope: Envelope,
    /// Loop 1000A: who submits the file (us, or the practice).
    pub submitter: Submitter,
    /// Loop 1000B: the clearinghouse receiving the file.
    pub receiver: Receiver,
    /// Loop 2000A/2010AA: the one billing entity every claim of the batch belongs to.
    pub billing_provider: BillingProvider,
    /// Loop 2300 claims, in the order they are written. Claims with the same subscriber and payer
    /// share one subscriber HL (first appearance decides the order).
    pub claims: Vec<Claim>,
}

/// The interchange (ISA/IEA) and functional group (GS/GE) envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// ISA06, interchange sender id (qualifier ISA05 is always `ZZ`, mutually defined); at most
    /// 15 characters, padded with spaces to 15 by the writer.
    pub sender_id: String,
    /// ISA08, interchange receiver id (qualifier ISA07 `ZZ`); at most 15 characters, padded.
    pub receiver_id: String,
    /// GS02, application sender's code (2 to 15 characters, as the clearinghouse assigned).
    pub gs_sender: String,
    /// GS03, application receiver's code.
    pub gs_receiver: String,
    /// ISA15: test or production data.
    pub usage: Usage,
    /// ISA13/IEA02, 1..=999_999_999, written with 9 digits. Allocated by the service from a
    /// database sequence so that it never repeats (see [`super::control_number_ok`]).
    pub interchange_control: u32,
    /// GS06/GE02, 1..=999_999_999, written without padding. Same allocation rule.
    pub group_control: u32,
    /// When the file was created: ISA09/10, GS04/05 and BHT04/05.
    pub created: NaiveDateTime,
}

/// ISA15, usage indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// `T`: the receiver validates the file but does not adjudicate it.
    Test,
    /// `P`: real claims.
    Production,
}

/// Loop 1000A, the submitter, with the contact the clearinghouse calls about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// NM103, organization name (upper-cased by the writer, at most 60 characters).
    pub name: String,
    /// NM109, submitter id the clearinghouse assigned (qualifier `46`).
    pub id: String,
    /// PER02, contact person's name.
    pub contact_name: String,
    /// PER04, contact telephone (qualifier `TE`), digits only, e.g. `5555551234`.
    pub phone: String,
}

/// Loop 1000B, the receiver (clearinghouse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// NM103, organization name.
    pub name: String,
    /// NM109, receiver id (qualifier `46`).
    pub id: String,
}

/// A US postal address: N3/N4.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// N301, first address line (at most 55 characters).
    pub line1: String,
    /// N302, second address line, when there is one.
    pub line2: Option<String>,
    /// N401, city (at most 30 characters).
    pub city: String,
    /// N402, two-letter state code.
    pub state: String,
    /// N403, ZIP code: 9 digits for the billing provider (5010 rule), 5 or 9 elsewhere.
    pub zip: String,
}

/// Loop 2000A/2010AA (and 2010AB): the billing provider, an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingProvider {
    /// NM103, organization name.
    pub organization_name: String,
    /// NM109, the organization's NPI (qualifier `XX`).
    pub npi: String,
    /// REF02 with qualifier `EI`: the employer identification number, 9 digits, no dash.
    pub ein: String,
    /// PRV03, provider taxonomy code (qualifiers `BI`, `PXC`), e.g. `207Q00000X`.
    pub taxonomy: String,
    /// Loop 2010AA N3/N4: a street address (not a PO box).
    pub address: Address,
    /// Loop 2010AB: where payments go, when not to `address`.
    pub pay_to: Option<Address>,
}

/// Loop 2300, one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// CLM01, our claim id (patient control number), at most 38 characters. Payers echo it on
    /// the 277CA and 835.
    pub claim_id: String,
    /// CLM02, the total charge; the writer refuses a claim whose total is not the sum of its
    /// lines' charges.
    pub total: Cents,
    /// CLM05-1, the two-digit place of service code (`11` office, `02` telehealth…).
    pub place_of_service: String,
    /// CLM05-3, and REF*F8 for a replacement or void.
    pub frequency: Frequency,
    /// HI, ICD-10-CM codes without the dot; the first is the principal diagnosis (`ABK`), the
    /// others (`ABF`) follow. 1 to 12 codes.
    pub diagnoses: Vec<String>,
    /// Loops 2000B/2010BA, the subscriber, who is the patient (SBR02 = `18`, self).
    pub subscriber: Subscriber,
    /// Loop 2010BB, the payer.
    pub payer: Payer,
    /// Loop 2310B, the rendering provider, when not the billing provider.
    pub rendering_provider: Option<RenderingProvider>,
    /// Loop 2400, the service lines: 1 to 50.
    pub lines: Vec<ServiceLine>,
    /// Loops 2320/2330A/2330B: the payer that adjudicated the claim before (coordination of
    /// benefits). `Some` makes this a secondary claim: the 2000B SBR01 becomes `S`, and every line
    /// carries that payer's adjudication (loop 2430).
    pub other_payer: Option<OtherPayer>,
}

/// Loops 2320 (other subscriber information), 2330A (other subscriber) and 2330B (other payer):
/// the primary payer of a secondary claim and what it paid and adjusted at claim level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherPayer {
    /// 2320 SBR09, the other payer's claim filing indicator (2320 SBR01 is `P`: it was primary).
    pub claim_filing_indicator: String,
    /// 2320 SBR03, the group number at the other payer, when there is one.
    pub group_number: Option<String>,
    /// 2320 CAS: adjustments the other payer made at claim level.
    pub adjustments: Vec<Adjustment>,
    /// 2320 AMT*D: what the other payer paid on the claim.
    pub paid: Cents,
    /// 2330A NM109 (qualifier `MI`): the subscriber's member id at the other payer (the names are
    /// the claim's subscriber's: the patient is the subscriber at both).
    pub member_id: String,
    /// 2330B NM1*PR: the other payer (its address is not written).
    pub payer: Payer,
}

/// One CAS adjustment triplet under its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// CAS01, the group code: `CO`, `PR`, `OA`, `PI` or `CR`.
    pub group: String,
    /// The claim adjustment reason code (CARC), 1 to 5 characters.
    pub reason: String,
    /// The amount adjusted (may be negative).
    pub amount: Cents,
}

/// Loop 2430: what the other payer did with one service line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineAdjudication {
    /// SVD02, what it paid on the line (zero or more).
    pub paid: Cents,
    /// CAS under 2430.
    pub adjustments: Vec<Adjustment>,
    /// DTP*573, the date it adjudicated (remittance date).
    pub date: NaiveDate,
}

/// CLM05-3, claim frequency type code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frequency {
    /// `1`: a new claim.
    Original,
    /// `7`: replaces a claim the payer already adjudicated.
    Corrected {
        /// REF*F8: the payer's claim control number of the claim being replaced.
        payer_claim_number: String,
    },
    /// `8`: voids a claim the payer already adjudicated.
    Void {
        /// REF*F8: the payer's claim control number of the claim being voided.
        payer_claim_number: String,
    },
}

/// DMG03, administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// `F`.
    Female,
    /// `M`.
    Male,
    /// `U`.
    Unknown,
}

/// Loops 2000B/2010BA: the subscriber (insured). Only "the patient is the subscriber" is
/// supported for now, so there is no 2000C patient loop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscriber {
    /// NM109, the member id on the insurance card (qualifier `MI`).
    pub member_id: String,
    /// NM103, last name.
    pub last_name: String,
    /// NM104, first name.
    pub first_name: String,
    /// DMG02, date of birth.
    pub birth_date: NaiveDate,
    /// DMG03.
    pub sex: Sex,
    /// N3/N4, required because the subscriber is the patient.
    pub address: Address,
    /// SBR03, the group or policy number, when the card has one.
    pub group_number: Option<String>,
    /// SBR09, claim filing indicator code: `MB` Medicare Part B, `MC` Medicaid, `CI`
    /// commercial, `BL` Blue Cross, `12` PPO, `HM` HMO…
    pub claim_filing_indicator: String,
}

/// Loop 2010BB: the payer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payer {
    /// NM103, payer name.
    pub name: String,
    /// NM109, the payer id the clearinghouse uses (qualifier `PI`).
    pub payer_id: String,
    /// N3/N4, when the clearinghouse wants the payer's address.
    pub address: Option<Address>,
}

/// Loop 2310B: the individual who rendered the care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderingProvider {
    /// NM109, the person's NPI (qualifier `XX`).
    pub npi: String,
    /// NM103, last name.
    pub last_name: String,
    /// NM104, first name.
    pub first_name: String,
}

/// Loop 2400: one service line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLine {
    /// SV101-2, the CPT/HCPCS code (qualifier `HC`).
    pub code: String,
    /// SV101-3..6, up to 4 two-character modifiers.
    pub modifiers: Vec<String>,
    /// SV102, the line charge (zero or more).
    pub charge: Cents,
    /// SV104, units of service (unit `UN`), at least 1.
    pub units: u32,
    /// SV107, 1 to 4 one-based positions in the claim's `diagnoses`.
    pub diagnosis_pointers: Vec<u8>,
    /// DTP*472, the date of service.
    pub service_date: NaiveDate,
    /// Loop 2430: the other payer's adjudication of this line (secondary claims only).
    pub prior: Option<LineAdjudication>,
}
