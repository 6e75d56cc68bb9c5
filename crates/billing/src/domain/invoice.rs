//! Employer invoices, pure: the month an invoice covers, which charges a per-visit invoice takes,
//! who counts as a member for a per-member-per-month one, the lines and total of an invoice, how a
//! payment is allocated across its lines (oldest first), and the state its ledger puts it in.
//! Nothing here reads a database or the wire.

use chrono::{Datelike, NaiveDate};

use crate::domain::invalid::Invalid;
use crate::domain::money::{Cents, MAX_AMOUNT};

/// The code a member-month's charge carries (it is no procedure: the contract's fixed fee).
pub const MEMBER_MONTH_CODE: &str = "PMPM";

/// How a contract's invoices bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The visits' charges.
    PerVisit,
    /// A fixed fee per member enrolled in the month.
    PerMemberPerMonth(Cents),
}

impl Basis {
    /// The basis as stored (`per_visit`, `per_member_per_month`).
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::PerVisit => "per_visit",
            Basis::PerMemberPerMonth(_) => "per_member_per_month",
        }
    }
}

/// A contract's invoicing terms, checked: `basis` is the wire enum's number (0 and 1 per visit, 2
/// per member per month) and `fee` the member-month fee in cents.
pub fn basis(basis: i32, fee: i64) -> Result<Basis, Invalid> {
    match basis {
        0 | 1 if fee != 0 => Err(Invalid::new(
            "contract.member_month_fee_cents",
            "MEMBER_MONTH_FEE_NOT_ALLOWED",
            "a per-visit contract bills its visits' fees: leave the member-month fee unset",
        )),
        0 | 1 => Ok(Basis::PerVisit),
        2 if fee <= 0 => Err(Invalid::new(
            "contract.member_month_fee_cents",
            "MEMBER_MONTH_FEE_REQUIRED",
            "a per-member-per-month contract needs a member-month fee above zero",
        )),
        2 if Cents::new(fee) > MAX_AMOUNT => Err(Invalid::new(
            "contract.member_month_fee_cents",
            "AMOUNT_INVALID",
            "at most 10 billion dollars",
        )),
        2 => Ok(Basis::PerMemberPerMonth(Cents::new(fee))),
        _ => Err(Invalid::new(
            "contract.invoice_basis",
            "INVOICE_BASIS_INVALID",
            "not an invoice basis",
        )),
    }
}

/// A calendar month (local dates of service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    first: NaiveDate,
}

impl Month {
    /// Parses `YYYY-MM` (`field` names the request field in the error).
    pub fn parse(field: &str, text: &str) -> Result<Month, Invalid> {
        let invalid = || Invalid::new(field, "MONTH_INVALID", "a month is YYYY-MM");
        if text.len() != 7 || text.as_bytes().get(4) != Some(&b'-') {
            return Err(invalid());
        }
        let first =
            NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").map_err(|_| invalid())?;
        Ok(Month { first })
    }

    /// The month holding `day`.
    pub fn of(day: NaiveDate) -> Month {
        Month {
            first: day.with_day(1).unwrap_or(day),
        }
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        self.first
    }

    /// The first day of the next month.
    pub fn next_first_day(self) -> NaiveDate {
        self.first
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX)
    }

    /// Its last day.
    pub fn last_day(self) -> NaiveDate {
        self.next_first_day().pred_opt().unwrap_or(self.first)
    }

    /// Whether `day` is in it.
    pub fn contains(self, day: NaiveDate) -> bool {
        day >= self.first && day < self.next_first_day()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), self.first.month())
    }
}

/// Whether `month` may be invoiced on `today` (the organization's local date): a per-visit month
/// once it has ended (its visits are all in), a per-member-per-month one from its first day
/// (capitation is billed ahead: the members are those enrolled up to the invoice).
pub fn check_invoiceable(month: Month, basis: Basis, today: NaiveDate) -> Result<(), Invalid> {
    match basis {
        Basis::PerVisit if today < month.next_first_day() => Err(Invalid::new(
            "month",
            "INVOICE_MONTH_NOT_ENDED",
            format!("{month} has not ended: its visits are invoiced from the next month"),
        )),
        Basis::PerMemberPerMonth(_) if today < month.first_day() => Err(Invalid::new(
            "month",
            "INVOICE_MONTH_NOT_STARTED",
            format!("{month} has not started"),
        )),
        _ => Ok(()),
    }
}

/// A charge a per-visit invoice may take, as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitCharge {
    /// The charge.
    pub charge: String,
    /// The patient.
    pub patient: String,
    /// Its unit.
    pub unit: String,
    /// Its payer.
    pub payer: String,
    /// The contract its unit's profile names ("" for none).
    pub contract: String,
    /// The claim form of its unit's profile when it was made.
    pub claim_form: String,
    /// The local date of service.
    pub service_date: NaiveDate,
    /// The procedure code.
    pub code: String,
    /// Its amount.
    pub amount: Cents,
}

/// A contract as invoicing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceContract {
    /// Its name.
    pub name: String,
    /// Its payer.
    pub payer: String,
    /// Its units (each with its subtree).
    pub units: Vec<String>,
    /// First day in force.
    pub from: NaiveDate,
    /// First day no longer in force.
    pub until: Option<NaiveDate>,
    /// How it bills.
    pub basis: Basis,
}

impl InvoiceContract {
    /// Whether it is in force on `day`.
    pub fn in_force(&self, day: NaiveDate) -> bool {
        day >= self.from && self.until.is_none_or(|u| day < u)
    }

    /// Whether it is in force on some day of `month`.
    pub fn in_force_during(&self, month: Month) -> bool {
        self.from < month.next_first_day() && self.until.is_none_or(|u| u > month.first_day())
    }
}

/// Whether a per-visit invoice of `contract` for `month` takes `charge`: a line of a unit whose
/// claim form is `NONE`, dated in the month, billed under the contract (the unit's profile names
/// it, or names none and the contract covers the unit for the charge's payer on its date, as claim
/// routing reads contracts). `in_subtree(unit, ancestor)` answers from the unit tree.
pub fn takes(
    contract: &InvoiceContract,
    month: Month,
    charge: &VisitCharge,
    in_subtree: &dyn Fn(&str, &str) -> bool,
) -> bool {
    if charge.claim_form != "NONE" || !month.contains(charge.service_date) {
        return false;
    }
    if charge.contract == contract.name {
        return true;
    }
    charge.contract.is_empty()
        && charge.payer == contract.payer
        && contract.in_force(charge.service_date)
        && contract.units.iter().any(|u| in_subtree(&charge.unit, u))
}

/// One line of an invoice before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The charge (for a member-month: the one to make).
    pub charge: String,
    /// The patient.
    pub patient: String,
    /// The unit.
    pub unit: String,
    /// The date of service (a member-month: the month's last day).
    pub service_date: NaiveDate,
    /// The code ([`MEMBER_MONTH_CODE`] for a member-month).
    pub code: String,
    /// For a member-month, its month.
    pub month: Option<Month>,
    /// What it bills.
    pub amount: Cents,
}

/// An invoice's lines, in order, and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// By date of service, then charge.
    pub lines: Vec<Line>,
    /// The sum of the lines.
    pub total: Cents,
}

/// The lines of a per-visit invoice: the charges it takes, oldest date of service first. `None`
/// when there is nothing to bill (or the total would not fit).
pub fn compose_visits(charges: &[VisitCharge]) -> Option<Composed> {
    let mut lines: Vec<Line> = charges
        .iter()
        .filter(|c| c.amount.is_positive())
        .map(|c| Line {
            charge: c.charge.clone(),
            patient: c.patient.clone(),
            unit: c.unit.clone(),
            service_date: c.service_date,
            code: c.code.clone(),
            month: None,
            amount: c.amount,
        })
        .collect();
    lines.sort_by(|a, b| (a.service_date, &a.charge).cmp(&(b.service_date, &b.charge)));
    lines.dedup_by(|a, b| a.charge == b.charge);
    finish(lines)
}

/// A member of a per-member-per-month contract in a month: the patient and the unit of its
/// enrollment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// The patient.
    pub patient: String,
    /// The unit it was enrolled in during the month.
    pub unit: String,
}

/// The lines of a per-member-per-month invoice: the fee once per patient (a patient enrolled in
/// two of the contract's units is one member), each a charge named by `charge_name(patient)`.
pub fn compose_members(
    members: &[Member],
    month: Month,
    fee: Cents,
    charge_name: &dyn Fn(&str) -> String,
) -> Option<Composed> {
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort();
    members.dedup_by(|a, b| a.patient == b.patient);
    let lines = members
        .into_iter()
        .map(|m| Line {
            charge: charge_name(&m.patient),
            patient: m.patient.clone(),
            unit: m.unit.clone(),
            service_date: month.last_day(),
            code: MEMBER_MONTH_CODE.to_string(),
            month: Some(month),
            amount: fee,
        })
        .collect();
    finish(lines)
}

fn finish(lines: Vec<Line>) -> Option<Composed> {
    if lines.is_empty() {
        return None;
    }
    let mut total = Cents::ZERO;
    for line in &lines {
        total = total.checked_add(line.amount)?;
    }
    Some(Composed { lines, total })
}

/// One span of an enrollment's history: in `unit` from `from_us` until `until_us` (µs since the
/// epoch; `None`: still).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The unit.
    pub unit: String,
    /// From (inclusive).
    pub from_us: i64,
    /// Until (exclusive).
    pub until_us: Option<i64>,
}

/// What happened to an enrollment, as Org records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Enrolled or transferred: in `unit` from then on.
    In(String),
    /// Discharged.
    Out,
}

/// The spans an enrollment's history (oldest first, each event with its time) makes.
pub fn spans(history: &[(i64, Event)]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for (at, event) in history {
        if let Some(open) = spans.last_mut().filter(|s| s.until_us.is_none()) {
            open.until_us = Some(*at);
        }
        if let Event::In(unit) = event {
            spans.push(Span {
                unit: unit.clone(),
                from_us: *at,
                until_us: None,
            });
        }
    }
    spans
}

/// The units (of those `counts` accepts) an enrollment was in at some instant of `[from_us,
/// until_us)`.
pub fn units_during(
    spans: &[Span],
    from_us: i64,
    until_us: i64,
    counts: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    spans
        .iter()
        .filter(|s| s.from_us < until_us && s.until_us.is_none_or(|u| u > from_us))
        .filter(|s| s.until_us != Some(s.from_us))
        .filter(|s| counts(&s.unit))
        .map(|s| s.unit.clone())
        .collect()
}

/// An invoice line's balance, as the ledger gives it, in allocation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// The charge.
    pub charge: String,
    /// Its date of service.
    pub service_date: NaiveDate,
    /// Its position on the invoice.
    pub line_number: i32,
    /// The sum of its ledger entries.
    pub balance: Cents,
}

/// Why a payment cannot be allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unallocated {
    /// Zero or negative.
    NotPositive,
    /// More than the invoice's balance (which is given).
    ExceedsBalance(Cents),
}

/// Allocates `amount` across `lines` oldest first (date of service, then line number), each part
/// at most the line's balance. Refused whole when the amount is not positive or is more than the
/// invoice owes: the sum of the lines' balances, where a credit (a corrected line's payment, see
/// `invoice_store::add_correction`) counts against what the other lines owe. Nothing is allocated
/// then.
pub fn allocate(lines: &[Owed], amount: Cents) -> Result<Vec<(String, Cents)>, Unallocated> {
    if !amount.is_positive() {
        return Err(Unallocated::NotPositive);
    }
    let positive: Cents = lines
        .iter()
        .map(|l| l.balance)
        .filter(|b| b.is_positive())
        .sum();
    let net: Cents = lines.iter().map(|l| l.balance).sum();
    let balance = if net < positive { net } else { positive };
    let balance = if balance.is_negative() {
        Cents::ZERO
    } else {
        balance
    };
    if amount > balance {
        return Err(Unallocated::ExceedsBalance(balance));
    }
    let mut ordered: Vec<&Owed> = lines.iter().filter(|l| l.balance.is_positive()).collect();
    ordered.sort_by_key(|l| (l.service_date, l.line_number));
    let mut left = amount;
    let mut parts = Vec::new();
    for line in ordered {
        if !left.is_positive() {
            break;
        }
        let part = if line.balance < left {
            line.balance
        } else {
            left
        };
        parts.push((line.charge.clone(), part));
        left = left - part;
    }
    Ok(parts)
}

/// Where an invoice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing paid.
    Open,
    /// Paid in part.
    PartiallyPaid,
    /// Nothing owed.
    Paid,
}

impl State {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::PartiallyPaid => "partially_paid",
            State::Paid => "paid",
        }
    }

    /// From storage (anything unknown reads as open).
    pub fn parse(text: &str) -> State {
        match text {
            "partially_paid" => State::PartiallyPaid,
            "paid" => State::Paid,
            _ => State::Open,
        }
    }
}

/// The state an invoice's ledger puts it in: PAID when nothing is owed, PARTIALLY_PAID once
/// something is paid, OPEN otherwise. `paid` is positive.
pub fn state(balance: Cents, paid: Cents) -> State {
    if !balance.is_positive() {
        State::Paid
    } else if paid.is_positive() {
        State::PartiallyPaid
    } else {
        State::Open
    }
}

#[cfg(test)]
#[path = "invoice_tests.rs"]
mod tests;
