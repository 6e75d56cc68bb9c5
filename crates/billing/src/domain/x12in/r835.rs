//! The 835 health care claim payment/advice (005010X221A1): what a payer paid, claim by claim
//! and line by line, and why the rest was not paid (CAS adjustments).
//!
//! The reader walks the segments once. Loops are recognised by their leading segment (`N1*PR`
//! the payer, `N1*PE` the payee, `CLP` a claim, `SVC` a service line, `PLB` the provider
//! adjustments); segments this reader does not need (`N3`, `NM1`, `AMT`, `MOA`…) are skipped.

use chrono::NaiveDate;

use super::fields::{
    self, Quantity, amount, bad_code, date, missing_segment, optional, optional_amount,
    optional_date, optional_quantity, required, unexpected_segment,
};
use super::tokenizer::{Segment, Transaction};
use super::{for_transaction, transactions_of};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;

/// Reason: BPR02 (total paid) is not the claims' paid amounts less the provider adjustments.
pub const REMITTANCE_TOTAL_MISMATCH: &str = "REMITTANCE_TOTAL_MISMATCH";

/// One 835 transaction: one payment (or a notice of no payment) and the claims it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remittance {
    /// ST02, the transaction's control number.
    pub control_number: String,
    /// Who paid.
    pub payer: Payer,
    /// Who was paid (the practice).
    pub payee: Payee,
    /// The money: amount, method and date (BPR).
    pub payment: Payment,
    /// The trace (TRN): how the payment is found on the bank statement.
    pub trace: Trace,
    /// DTM*405, the date the payer produced the remittance.
    pub production_date: Option<NaiveDate>,
    /// The claims paid, adjusted or denied (CLP loops), in file order.
    pub claims: Vec<ClaimPayment>,
    /// Provider-level adjustments (PLB), one per reason/amount pair.
    pub provider_adjustments: Vec<ProviderAdjustment>,
}

/// The payer (loop 1000A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer {
    /// N1*PR name.
    pub name: String,
    /// The payer id: REF*2U when present, else N1*PR element 04.
    pub id: Option<String>,
}

/// The payee (loop 1000B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    /// N1*PE name.
    pub name: String,
    /// The NPI, when N1*PE identifies the payee by NPI (N103 = `XX`).
    pub npi: Option<String>,
    /// The tax id, when N1*PE uses one (N103 = `FI`) or a REF*TJ gives it.
    pub tax_id: Option<String>,
}

/// BPR: the payment itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// BPR01, the handling code: `I` remittance with payment, `H` notification only…
    pub handling: String,
    /// BPR02, the total actually paid (zero for a notice of no payment).
    pub total: Cents,
    /// BPR04, how it was paid.
    pub method: PaymentMethod,
    /// BPR16, the check issue or EFT effective date.
    pub date: NaiveDate,
}

/// BPR04: how the money moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentMethod {
    /// `ACH`: an electronic funds transfer through the ACH network.
    Ach,
    /// `BOP`: financial institution option.
    FinancialInstitutionOption,
    /// `CHK`: a paper check.
    Check,
    /// `FWT`: a federal reserve wire transfer.
    Wire,
    /// `NON`: no money moves (all claims denied, or amounts net to zero).
    NonPayment,
}

impl PaymentMethod {
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "ACH" => PaymentMethod::Ach,
            "BOP" => PaymentMethod::FinancialInstitutionOption,
            "CHK" => PaymentMethod::Check,
            "FWT" => PaymentMethod::Wire,
            "NON" => PaymentMethod::NonPayment,
            _ => return None,
        })
    }
}

/// TRN: the reassociation trace that ties this remittance to the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// TRN02: the check number or EFT trace number.
    pub number: String,
    /// TRN03: the payer's identifier (originating company), usually `1` + its tax id.
    pub originator: String,
}

/// One claim's adjudication (loop 2100, CLP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPayment {
    /// CLP01: our claim id, the CLM01 we sent.
    pub claim_id: String,
    /// CLP02: how the payer processed the claim.
    pub status: ClaimStatus,
    /// CLP03: the amount billed.
    pub billed: Cents,
    /// CLP04: the amount paid.
    pub paid: Cents,
    /// CLP05: the patient's responsibility, when given.
    pub patient_responsibility: Option<Cents>,
    /// CLP07: the payer's claim control number (quote it to the payer; used for corrections).
    pub payer_claim_control_number: String,
    /// Claim-level adjustments (CAS after CLP, before any SVC).
    pub adjustments: Vec<Adjustment>,
    /// The service lines (SVC loops), in file order; absent when the payer paid at claim level.
    pub services: Vec<ServicePayment>,
}

/// CLP02, the claim status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimStatus {
    /// `1`: processed as primary.
    ProcessedAsPrimary,
    /// `2`: processed as secondary.
    ProcessedAsSecondary,
    /// `3`: processed as tertiary.
    ProcessedAsTertiary,
    /// `4`: denied.
    Denied,
    /// `19`: processed as primary, forwarded to additional payer(s).
    PrimaryForwarded,
    /// `20`: processed as secondary, forwarded to additional payer(s).
    SecondaryForwarded,
    /// `21`: processed as tertiary, forwarded to additional payer(s).
    TertiaryForwarded,
    /// `22`: reversal of a previous payment (amounts are negative).
    Reversal,
    /// `23`: not our claim, forwarded to additional payer(s).
    NotOurClaimForwarded,
    /// `25`: predetermination pricing only, no payment.
    PredeterminationOnly,
}

impl ClaimStatus {
    fn from_code(code: &str) -> Option<Self> {
        use ClaimStatus::*;
        Some(match code {
            "1" => ProcessedAsPrimary,
            "2" => ProcessedAsSecondary,
            "3" => ProcessedAsTertiary,
            "4" => Denied,
            "19" => PrimaryForwarded,
            "20" => SecondaryForwarded,
            "21" => TertiaryForwarded,
            "22" => Reversal,
            "23" => NotOurClaimForwarded,
            "25" => PredeterminationOnly,
            _ => return None,
        })
    }
}

/// One adjustment from a CAS segment: why part of the billed amount was not paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// CAS01, who bears it.
    pub group: AdjustmentGroup,
    /// The claim adjustment reason code (CARC), e.g. `45` (exceeds fee schedule), `2` (coinsurance).
    pub reason: String,
    /// The amount adjusted (negative amounts exist: reversals, interest).
    pub amount: Cents,
    /// The units adjusted, when given.
    pub quantity: Option<Quantity>,
}

/// CAS01, the claim adjustment group code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentGroup {
    /// `CO`: contractual obligation, written off by the practice.
    Contractual,
    /// `PR`: patient responsibility, billed to the patient.
    PatientResponsibility,
    /// `OA`: other adjustment.
    Other,
    /// `PI`: payer-initiated reduction.
    PayerInitiated,
}

impl AdjustmentGroup {
    /// CAS01 as sent: `CO`, `PR`, `OA` or `PI`.
    pub fn code(self) -> &'static str {
        match self {
            AdjustmentGroup::Contractual => "CO",
            AdjustmentGroup::PatientResponsibility => "PR",
            AdjustmentGroup::Other => "OA",
            AdjustmentGroup::PayerInitiated => "PI",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "CO" => AdjustmentGroup::Contractual,
            "PR" => AdjustmentGroup::PatientResponsibility,
            "OA" => AdjustmentGroup::Other,
            "PI" => AdjustmentGroup::PayerInitiated,
            _ => return None,
        })
    }
}

/// One service line's adjudication (loop 2110, SVC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePayment {
    /// SVC01: the procedure as adjudicated.
    pub procedure: Procedure,
    /// SVC02: the amount billed for the line.
    pub billed: Cents,
    /// SVC03: the amount paid for the line.
    pub paid: Cents,
    /// SVC05: the units paid (1 when absent, as the guide says).
    pub units: Quantity,
    /// DTM*472, the date of service, when given at line level.
    pub service_date: Option<NaiveDate>,
    /// REF*6R, the line item control number we sent in the 837 (REF*6R of the line).
    pub line_control_number: Option<String>,
    /// Line-level adjustments (CAS after SVC).
    pub adjustments: Vec<Adjustment>,
}

/// A composite procedure (SVC01): `HC:99213:25`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procedure {
    /// The code list qualifier: `HC` (CPT/HCPCS), `AD` (dental), `N4` (NDC)…
    pub qualifier: String,
    /// The procedure code.
    pub code: String,
    /// Up to four modifiers, empty ones dropped.
    pub modifiers: Vec<String>,
}

/// One provider-level adjustment (a PLB reason/amount pair): a recovery of an overpayment,
/// interest, a withholding… A positive amount reduces the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAdjustment {
    /// PLB01, the provider identifier.
    pub provider_id: String,
    /// PLB02, the last day of the provider's fiscal period.
    pub fiscal_period_end: Option<NaiveDate>,
    /// The adjustment reason code (first component of PLB03/05/…): `WO`, `L6`, `FB`…
    pub reason: String,
    /// The reference (second component), e.g. the claim control number recovered.
    pub reference: Option<String>,
    /// The amount (PLB04/06/…).
    pub amount: Cents,
}

/// Parses an 835 file: one [`Remittance`] per ST/SE transaction, after the envelope checks.
/// Each remittance's BPR02 must equal its claims' CLP04 total less its PLB amounts.
pub fn parse_835(text: &str) -> Result<Vec<Remittance>, Invalid> {
    transactions_of(text, "835")?
        .iter()
        .map(|t| for_transaction(t, read_remittance(t)))
        .collect()
}

/// Reads one 835 transaction.
fn read_remittance(transaction: &Transaction<'_>) -> Result<Remittance, Invalid> {
    let mut reader = Reader::default();
    for segment in &transaction.segments {
        reader.segment(segment)?;
    }
    reader.finish(transaction.control_number)
}

/// Where the reader is: which N1 loop of the header, or which claim/service of the detail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Place {
    #[default]
    Header,
    PayerLoop,
    PayeeLoop,
    /// After LX, before any CLP of that header number.
    Detail,
    /// Inside the last claim of `claims`, before any of its service lines.
    Claim,
    /// Inside the last service of the last claim.
    Service,
    /// After PLB: the summary.
    Summary,
}

/// The remittance being built, segment by segment.
#[derive(Debug, Default)]
struct Reader {
    place: Place,
    payment: Option<Payment>,
    trace: Option<Trace>,
    production_date: Option<NaiveDate>,
    payer: Option<Payer>,
    payer_ref_id: Option<String>,
    payee: Option<Payee>,
    claims: Vec<ClaimPayment>,
    provider_adjustments: Vec<ProviderAdjustment>,
    /// How many PLB segments so far, to name them in errors.
    plb_segments: usize,
}

impl Reader {
    fn segment(&mut self, s: &Segment<'_>) -> Result<(), Invalid> {
        match s.id {
            "BPR" => self.payment = Some(read_bpr(s)?),
            "TRN" => self.trace = Some(read_trn(s)?),
            "DTM" if s.element(1) == "405" && self.place == Place::Header => {
                self.production_date = Some(date(s, 2, "")?);
            }
            "N1" => self.n1(s)?,
            "REF" => self.reference(s),
            "LX" => self.place = Place::Detail,
            "CLP" => {
                let place = self.claim_place(self.claims.len());
                self.claims.push(read_clp(s, &place)?);
                self.place = Place::Claim;
            }
            "SVC" => self.service(s)?,
            "CAS" => self.cas(s)?,
            "DTM" if s.element(1) == "472" && self.place == Place::Service => {
                let place = self.service_place();
                let date = date(s, 2, &place)?;
                if let Some(service) = self.current_service() {
                    service.service_date = Some(date);
                }
            }
            "PLB" => {
                self.place = Place::Summary;
                self.plb_segments += 1;
                let adjustments = read_plb(s, self.plb_segments)?;
                self.provider_adjustments.extend(adjustments);
            }
            // Everything else (N3, N4, PER, NM1, MIA, MOA, AMT, QTY, LQ, TS3…) is not needed.
            _ => {}
        }
        Ok(())
    }

    fn n1(&mut self, s: &Segment<'_>) -> Result<(), Invalid> {
        match s.element(1) {
            "PR" => {
                self.place = Place::PayerLoop;
                self.payer = Some(Payer {
                    name: required(s, 2, "payer")?,
                    id: optional(s, 4),
                });
            }
            "PE" => {
                self.place = Place::PayeeLoop;
                let id = optional(s, 4);
                let qualifier = s.element(3);
                self.payee = Some(Payee {
                    name: required(s, 2, "payee")?,
                    npi: id.clone().filter(|_| qualifier == "XX"),
                    tax_id: id.filter(|_| qualifier == "FI"),
                });
            }
            // Other N1 loops (none in X221 today) end the payer/payee loops.
            _ => self.place = Place::Header,
        }
        Ok(())
    }

    /// REF*2U (payer id), REF*TJ (payee tax id), REF*6R (line control number); others skipped.
    fn reference(&mut self, s: &Segment<'_>) {
        match (self.place, s.element(1)) {
            (Place::PayerLoop, "2U") => self.payer_ref_id = optional(s, 2),
            (Place::PayeeLoop, "TJ") => {
                if let Some(payee) = self.payee.as_mut() {
                    payee.tax_id = payee.tax_id.take().or_else(|| optional(s, 2));
                }
            }
            (Place::Service, "6R") => {
                let value = optional(s, 2);
                if let Some(service) = self.current_service() {
                    service.line_control_number = value;
                }
            }
            _ => {}
        }
    }

    fn service(&mut self, s: &Segment<'_>) -> Result<(), Invalid> {
        if !matches!(self.place, Place::Claim | Place::Service) {
            return Err(unexpected_segment(
                s,
                "",
                "an SVC belongs inside a claim (after a CLP)",
            ));
        }
        let place = self.claim_place(self.claims.len().saturating_sub(1));
        let index = self.claims.last().map_or(0, |c| c.services.len());
        let service = read_svc(s, &format!("{place}, service {}", index + 1))?;
        if let Some(claim) = self.claims.last_mut() {
            claim.services.push(service);
        }
        self.place = Place::Service;
        Ok(())
    }

    /// A CAS belongs to the current service line, or to the claim before any service line.
    fn cas(&mut self, s: &Segment<'_>) -> Result<(), Invalid> {
        let place = match self.place {
            Place::Claim => self.claim_place(self.claims.len().saturating_sub(1)),
            Place::Service => self.service_place(),
            _ => {
                return Err(unexpected_segment(
                    s,
                    "",
                    "a CAS belongs inside a claim or service line",
                ));
            }
        };
        let adjustments = read_cas(s, &place)?;
        let target = match self.place {
            Place::Service => self.current_service().map(|sv| &mut sv.adjustments),
            _ => self.claims.last_mut().map(|c| &mut c.adjustments),
        };
        if let Some(target) = target {
            target.extend(adjustments);
        }
        Ok(())
    }

    fn current_service(&mut self) -> Option<&mut ServicePayment> {
        self.claims.last_mut().and_then(|c| c.services.last_mut())
    }

    /// `claim 2` for the claim at 0-based `index`.
    fn claim_place(&self, index: usize) -> String {
        format!("claim {}", index + 1)
    }

    /// `claim 2, service 3` for the current service line.
    fn service_place(&self) -> String {
        let claim = self.claims.len();
        let service = self.claims.last().map_or(0, |c| c.services.len());
        format!("claim {claim}, service {service}")
    }

    /// Checks the required segments are there and the total adds up.
    fn finish(self, control_number: &str) -> Result<Remittance, Invalid> {
        let payment = self
            .payment
            .ok_or_else(|| missing_segment("BPR", "an 835 needs a BPR (the payment)"))?;
        let trace = self
            .trace
            .ok_or_else(|| missing_segment("TRN", "an 835 needs a TRN (the trace number)"))?;
        let mut payer = self
            .payer
            .ok_or_else(|| missing_segment("N1*PR", "an 835 needs an N1*PR (the payer)"))?;
        let payee = self
            .payee
            .ok_or_else(|| missing_segment("N1*PE", "an 835 needs an N1*PE (the payee)"))?;
        // REF*2U is the payer's identification proper; N104 is the fallback.
        if self.payer_ref_id.is_some() {
            payer.id = self.payer_ref_id;
        }
        check_total(payment.total, &self.claims, &self.provider_adjustments)?;
        Ok(Remittance {
            control_number: control_number.to_string(),
            payer,
            payee,
            payment,
            trace,
            production_date: self.production_date,
            claims: self.claims,
            provider_adjustments: self.provider_adjustments,
        })
    }
}

/// BPR02 = sum(CLP04) − sum(PLB amounts): the balancing rule of the 835 guide. A file that
/// does not balance cannot be posted: some payment would be lost or invented.
fn check_total(
    total: Cents,
    claims: &[ClaimPayment],
    provider_adjustments: &[ProviderAdjustment],
) -> Result<(), Invalid> {
    let paid: Cents = claims.iter().map(|c| c.paid).sum();
    let adjusted: Cents = provider_adjustments.iter().map(|p| p.amount).sum();
    let expected = paid - adjusted;
    if total == expected {
        return Ok(());
    }
    Err(Invalid::new(
        "BPR02",
        REMITTANCE_TOTAL_MISMATCH,
        format!(
            "BPR02 says {total} paid, but the claims pay {paid} less {adjusted} of provider \
             adjustments, {expected}"
        ),
    ))
}

fn read_bpr(s: &Segment<'_>) -> Result<Payment, Invalid> {
    let method_code = required(s, 4, "")?;
    let method = PaymentMethod::from_code(&method_code)
        .ok_or_else(|| bad_code(s, 4, "", "ACH, BOP, CHK, FWT, NON"))?;
    Ok(Payment {
        handling: required(s, 1, "")?,
        total: amount(s, 2, "")?,
        method,
        date: date(s, 16, "")?,
    })
}

fn read_trn(s: &Segment<'_>) -> Result<Trace, Invalid> {
    Ok(Trace {
        number: required(s, 2, "")?,
        originator: required(s, 3, "")?,
    })
}

fn read_clp(s: &Segment<'_>, place: &str) -> Result<ClaimPayment, Invalid> {
    let status_code = required(s, 2, place)?;
    let status = ClaimStatus::from_code(&status_code)
        .ok_or_else(|| bad_code(s, 2, place, "1, 2, 3, 4, 19, 20, 21, 22, 23, 25"))?;
    Ok(ClaimPayment {
        claim_id: required(s, 1, place)?,
        status,
        billed: amount(s, 3, place)?,
        paid: amount(s, 4, place)?,
        patient_responsibility: optional_amount(s, 5, place)?,
        payer_claim_control_number: required(s, 7, place)?,
        adjustments: Vec::new(),
        services: Vec::new(),
    })
}

fn read_svc(s: &Segment<'_>, place: &str) -> Result<ServicePayment, Invalid> {
    Ok(ServicePayment {
        procedure: read_procedure(s, place)?,
        billed: amount(s, 2, place)?,
        paid: amount(s, 3, place)?,
        units: optional_quantity(s, 5, place)?.unwrap_or(Quantity::ONE),
        service_date: None,
        line_control_number: None,
        adjustments: Vec::new(),
    })
}

/// SVC01: qualifier, code, then up to four modifiers (the description in component 7 is
/// not kept).
fn read_procedure(s: &Segment<'_>, place: &str) -> Result<Procedure, Invalid> {
    let parts = s.components(1);
    let part = |i: usize| parts.get(i).map(|p| p.trim()).unwrap_or("");
    let (qualifier, code) = (part(0), part(1));
    if qualifier.is_empty() || code.is_empty() {
        return Err(Invalid::new(
            fields::field(s, 1, place),
            fields::ELEMENT_MISSING,
            "SVC01 needs a qualifier and a procedure code (HC:99213)",
        ));
    }
    Ok(Procedure {
        qualifier: qualifier.to_string(),
        code: code.to_string(),
        modifiers: (2..6)
            .map(part)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// CAS: a group code, then up to six reason/amount/quantity triplets (elements 2–19).
fn read_cas(s: &Segment<'_>, place: &str) -> Result<Vec<Adjustment>, Invalid> {
    let group_code = required(s, 1, place)?;
    let group = AdjustmentGroup::from_code(&group_code)
        .ok_or_else(|| bad_code(s, 1, place, "CO, PR, OA, PI"))?;
    let mut adjustments = Vec::new();
    for first in (2..=17).step_by(3) {
        let Some(reason) = optional(s, first) else {
            continue;
        };
        adjustments.push(Adjustment {
            group,
            reason,
            amount: amount(s, first + 1, place)?,
            quantity: optional_quantity(s, first + 2, place)?,
        });
    }
    if adjustments.is_empty() {
        return Err(Invalid::new(
            fields::field(s, 2, place),
            fields::ELEMENT_MISSING,
            "a CAS needs at least one reason code and amount",
        ));
    }
    Ok(adjustments)
}

/// PLB: provider id, fiscal period date, then up to six reason/amount pairs (elements 3–14).
/// `number` is the segment's 1-based position among the PLB segments (for error paths).
fn read_plb(s: &Segment<'_>, number: usize) -> Result<Vec<ProviderAdjustment>, Invalid> {
    let place = format!("PLB {number}");
    let provider_id = required(s, 1, &place)?;
    let fiscal_period_end = optional_date(s, 2, &place)?;
    let mut adjustments = Vec::new();
    for first in (3..=13).step_by(2) {
        let parts = s.components(first);
        let reason = parts.first().map(|p| p.trim()).unwrap_or("");
        if reason.is_empty() {
            continue;
        }
        adjustments.push(ProviderAdjustment {
            provider_id: provider_id.clone(),
            fiscal_period_end,
            reason: reason.to_string(),
            reference: parts
                .get(1)
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            amount: amount(s, first + 1, &place)?,
        });
    }
    Ok(adjustments)
}
