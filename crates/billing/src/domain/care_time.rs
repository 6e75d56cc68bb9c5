//! Time-based care management billing (CCM, complex CCM, PCM): checking a recorded time entry,
//! and closing one patient's calendar month into the codes it bills.
//!
//! Everything here is pure: no clock except in [`check_entry`] (a thin wrapper over
//! [`check_entry_at`]), no I/O. The caller groups entries by patient and by the month
//! [`month_of`] gives in the patient's time zone, then calls [`close_month`] once per group.
//!
//! Rules (CMS MLN909188 via ../shared/notes/oracles.md; CPT codes are opaque 5-character codes):
//! - CCM: 99490 needs ≥ 20 clinical staff minutes, 99439 each additional full 20 (at most 2);
//!   99491 needs ≥ 30 minutes by the physician/QHP personally, 99437 each additional full 30.
//! - Complex CCM: 99487 needs ≥ 60 clinical staff minutes, 99489 each additional full 30.
//! - PCM: 99424 (physician, ≥ 30) + 99425 (each additional 30); 99426 (clinical staff, ≥ 30) +
//!   99427 (each additional 30).
//! - One billing practitioner per patient per month; consent and a care plan must be in force
//!   by the end of the month.
//!
//! Decision (staff versus physician time): the rule text counts *clinical staff* time toward
//! 99490/99439, 99487/99489 and 99426/99427, and the physician's *personal* time toward
//! 99491/99437 and 99424/99425. So each family counts only its own role's minutes, and a month
//! bills ONE family: when both qualify, the family with more billable units wins (on equal units,
//! the one covering more documented minutes, which is always the physician family). The reason is
//! written into the base code's `why`. Physician minutes are not counted toward complex CCM.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::domain::invalid::Invalid;

/// Reason: an entry's minutes are outside `1..=1440`.
pub const MINUTES_INVALID: &str = "MINUTES_INVALID";
/// Reason: an entry falls in a month that is already closed for billing.
pub const MONTH_CLOSED: &str = "MONTH_CLOSED";
/// Reason: an entry says it was performed after "now".
pub const PERFORMED_IN_FUTURE: &str = "PERFORMED_IN_FUTURE";
/// Reason: the patient's time zone is not an IANA zone name this build knows.
pub const ZONE_UNKNOWN: &str = "ZONE_UNKNOWN";
/// Reason: a required identifier (patient, staff, billing practitioner) is blank.
pub const FIELD_REQUIRED: &str = "FIELD_REQUIRED";
/// Reason: a month's entries name more than one billing practitioner.
pub const MULTIPLE_BILLING_PRACTITIONERS: &str = "MULTIPLE_BILLING_PRACTITIONERS";
/// Reason: the entries handed to [`close_month`] belong to more than one patient.
pub const MULTIPLE_PATIENTS: &str = "MULTIPLE_PATIENTS";
/// Reason: no consent in force by the end of the month.
pub const CONSENT_MISSING: &str = "CONSENT_MISSING";
/// Reason: no care plan in force by the end of the month.
pub const CARE_PLAN_MISSING: &str = "CARE_PLAN_MISSING";
/// Reason: the month's countable minutes are below the first code's threshold.
pub const BELOW_THRESHOLD: &str = "BELOW_THRESHOLD";

/// The most minutes one entry may record: one day.
pub const MAX_ENTRY_MINUTES: i32 = 1440;

/// Who spent the time. The two are billed under different codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaffRole {
    /// Clinical staff directed by the billing practitioner.
    ClinicalStaff,
    /// The physician or other qualified health care professional (QHP), personally.
    Physician,
}

/// The care management program the patient is enrolled in for the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// Chronic care management: 99490/99439 (staff) or 99491/99437 (physician).
    Ccm,
    /// Complex chronic care management: 99487/99489 (staff).
    ComplexCcm,
    /// Principal care management: 99424/99425 (physician) or 99426/99427 (staff).
    Pcm,
}

/// One stretch of care management time, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeEntry {
    /// The patient's identifier.
    pub patient: String,
    /// Who spent the time.
    pub staff: String,
    /// Whether `staff` is clinical staff or the physician/QHP.
    pub role: StaffRole,
    /// Minutes spent, `1..=1440`.
    pub minutes: i32,
    /// When the time was spent; its month is taken in the patient's time zone.
    pub performed_at: DateTime<Utc>,
    /// The practitioner who will bill the month.
    pub billing_practitioner: String,
}

/// Since when the patient's consent and comprehensive care plan are in force, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prerequisites {
    /// The date consent to care management was recorded.
    pub consent_since: Option<NaiveDate>,
    /// The date the care plan was established.
    pub care_plan_since: Option<NaiveDate>,
}

/// A calendar month (`month` is 1..=12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthKey {
    /// The year.
    pub year: i32,
    /// The month, 1 = January.
    pub month: u32,
}

impl MonthKey {
    /// The month `date` falls in.
    pub fn of_date(date: NaiveDate) -> Self {
        Self {
            year: date.year(),
            month: date.month(),
        }
    }

    /// The month's last day, or `None` if the key is not a real month (month 13, far years).
    pub fn last_day(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)?
            .checked_add_months(Months::new(1))?
            .pred_opt()
    }
}

/// `2026-02`.
impl fmt::Display for MonthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One code on the month's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledCode {
    /// The CPT code.
    pub code: &'static str,
    /// How many times it is billed (the base code once, an add-on once per block).
    pub units: i32,
    /// The documented minutes these units account for.
    pub minutes_covered: i32,
    /// Why this code and these units, for the person checking the claim.
    pub why: String,
}

/// Why a month bills nothing. [`NotBilled::reason`] gives the stable reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBilled {
    /// The entries belong to more than one patient: the caller grouped them wrongly.
    MultiplePatients,
    /// Entry `entry` (index into the slice) breaks rule `reason` (see [`check_fields`]).
    EntryInvalid {
        /// Index of the first offending entry.
        entry: usize,
        /// [`MINUTES_INVALID`] or [`FIELD_REQUIRED`].
        reason: &'static str,
    },
    /// The entries name several billing practitioners; none is guessed.
    MultipleBillingPractitioners {
        /// Every practitioner named, sorted, each once.
        practitioners: Vec<String>,
    },
    /// No consent in force by the end of the month.
    ConsentMissing,
    /// No care plan in force by the end of the month.
    CarePlanMissing,
    /// The countable minutes are below the first code's threshold.
    BelowThreshold {
        /// The minutes counted toward the family closest to its threshold.
        minutes: i32,
        /// That family's threshold.
        needed: i32,
    },
}

impl NotBilled {
    /// The stable SCREAMING_SNAKE reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            NotBilled::MultiplePatients => MULTIPLE_PATIENTS,
            NotBilled::EntryInvalid { reason, .. } => reason,
            NotBilled::MultipleBillingPractitioners { .. } => MULTIPLE_BILLING_PRACTITIONERS,
            NotBilled::ConsentMissing => CONSENT_MISSING,
            NotBilled::CarePlanMissing => CARE_PLAN_MISSING,
            NotBilled::BelowThreshold { .. } => BELOW_THRESHOLD,
        }
    }

    /// A sentence for a person. Names practitioners, never patient data.
    pub fn why(&self) -> String {
        match self {
            NotBilled::MultiplePatients => {
                "the entries belong to more than one patient; close each patient separately".into()
            }
            NotBilled::EntryInvalid { entry, reason } => {
                format!("entries[{entry}] is not a valid time entry ({reason})")
            }
            NotBilled::MultipleBillingPractitioners { practitioners } => format!(
                "one billing practitioner per patient per month, but the entries name {}",
                practitioners.join(", ")
            ),
            NotBilled::ConsentMissing => "no consent in force by the end of the month".into(),
            NotBilled::CarePlanMissing => "no care plan in force by the end of the month".into(),
            NotBilled::BelowThreshold { minutes, needed } => {
                format!("{minutes} countable minutes, the first code needs {needed}")
            }
        }
    }
}

/// One patient's month, closed: the codes to bill, or why nothing is billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthClose {
    /// The patient (empty when the entries were empty or named several patients).
    pub patient: String,
    /// The month closed.
    pub month: MonthKey,
    /// The billing practitioner (empty when none or several were named).
    pub practitioner: String,
    /// The codes to bill; empty exactly when `not_billed` is set.
    pub codes: Vec<BilledCode>,
    /// Why nothing is billed, if so.
    pub not_billed: Option<NotBilled>,
    /// All entries' minutes, both roles, counted or not. `i64` so that no slice overflows it.
    pub total_minutes: i64,
}

/// The calendar month `at` falls in, in the patient's IANA time zone (`America/New_York`);
/// `None` when the zone is unknown. 2026-03-01T03:00Z is February in New York.
pub fn month_of(at: DateTime<Utc>, patient_zone: &str) -> Option<MonthKey> {
    let zone: Tz = patient_zone.parse().ok()?;
    let local = at.with_timezone(&zone);
    Some(MonthKey {
        year: local.year(),
        month: local.month(),
    })
}

/// [`check_entry_at`] against the system clock.
pub fn check_entry(
    entry: &TimeEntry,
    closed_months: &[MonthKey],
    patient_zone: &str,
) -> Result<(), Invalid> {
    check_entry_at(entry, closed_months, patient_zone, Utc::now())
}

/// Whether a time entry may be recorded: [`check_fields`], then the zone is known
/// (`patient_zone`, [`ZONE_UNKNOWN`]), `performed_at` is not after `now`
/// ([`PERFORMED_IN_FUTURE`]) and not in a closed month ([`MONTH_CLOSED`]). First failure wins.
pub fn check_entry_at(
    entry: &TimeEntry,
    closed_months: &[MonthKey],
    patient_zone: &str,
    now: DateTime<Utc>,
) -> Result<(), Invalid> {
    check_fields(entry)?;
    let month = month_of(entry.performed_at, patient_zone).ok_or_else(|| {
        Invalid::new(
            "patient_zone",
            ZONE_UNKNOWN,
            "the patient's time zone is not a known IANA zone name",
        )
    })?;
    if entry.performed_at > now {
        return Err(Invalid::new(
            "performed_at",
            PERFORMED_IN_FUTURE,
            "time can only be recorded once it has been spent",
        ));
    }
    if closed_months.contains(&month) {
        return Err(Invalid::new(
            "performed_at",
            MONTH_CLOSED,
            "the entry falls in a month already closed for billing",
        ));
    }
    Ok(())
}

/// The rules that need neither clock nor zone: `patient`, `staff` and `billing_practitioner`
/// are not blank ([`FIELD_REQUIRED`]); `minutes` is `1..=1440` ([`MINUTES_INVALID`]).
/// [`close_month`] re-applies these, so a bad entry never reaches a claim.
pub fn check_fields(entry: &TimeEntry) -> Result<(), Invalid> {
    let required = [
        ("patient", &entry.patient),
        ("staff", &entry.staff),
        ("billing_practitioner", &entry.billing_practitioner),
    ];
    for (field, value) in required {
        if value.trim().is_empty() {
            return Err(Invalid::new(field, FIELD_REQUIRED, "must not be blank"));
        }
    }
    if !(1..=MAX_ENTRY_MINUTES).contains(&entry.minutes) {
        return Err(Invalid::new(
            "minutes",
            MINUTES_INVALID,
            format!("minutes must be between 1 and {MAX_ENTRY_MINUTES} (one day)"),
        ));
    }
    Ok(())
}

/// Closes one patient's month. `entries` are that patient's entries for the month (grouped by
/// the caller with [`month_of`]); `month_end` names the month (its last day is used for the
/// prerequisites, whatever day is passed). Deterministic, and independent of entry order.
///
/// Checks, first failure wins: one patient; every entry passes [`check_fields`]; one billing
/// practitioner; consent; care plan; then the thresholds (see the module docs).
pub fn close_month(
    program: Program,
    entries: &[TimeEntry],
    prerequisites: Prerequisites,
    month_end: NaiveDate,
) -> MonthClose {
    let month = MonthKey::of_date(month_end);
    let total_minutes = entries
        .iter()
        .fold(0_i64, |sum, e| sum.saturating_add(i64::from(e.minutes)));
    let mut close = MonthClose {
        patient: String::new(),
        month,
        practitioner: String::new(),
        codes: Vec::new(),
        not_billed: None,
        total_minutes,
    };
    let last_day = month.last_day().unwrap_or(month_end);
    match billable(program, entries, prerequisites, last_day) {
        Ok((patient, practitioner, codes)) => {
            close.patient = patient;
            close.practitioner = practitioner;
            close.codes = codes;
        }
        Err(not_billed) => close.not_billed = Some(not_billed),
    }
    close
}

/// The patient, the practitioner and the codes, or why the month bills nothing.
fn billable(
    program: Program,
    entries: &[TimeEntry],
    prerequisites: Prerequisites,
    last_day: NaiveDate,
) -> Result<(String, String, Vec<BilledCode>), NotBilled> {
    let patients = distinct(entries.iter().map(|e| &e.patient));
    if patients.len() > 1 {
        return Err(NotBilled::MultiplePatients);
    }
    for (index, entry) in entries.iter().enumerate() {
        check_fields(entry).map_err(|invalid| NotBilled::EntryInvalid {
            entry: index,
            reason: invalid.reason,
        })?;
    }
    let practitioners = distinct(entries.iter().map(|e| &e.billing_practitioner));
    if practitioners.len() > 1 {
        return Err(NotBilled::MultipleBillingPractitioners { practitioners });
    }
    // "In force by month end": recorded on or before the last day of the month.
    let in_force = |since: Option<NaiveDate>| since.is_some_and(|d| d <= last_day);
    if !in_force(prerequisites.consent_since) {
        return Err(NotBilled::ConsentMissing);
    }
    if !in_force(prerequisites.care_plan_since) {
        return Err(NotBilled::CarePlanMissing);
    }
    let minutes = Minutes::of(entries);
    let codes = select_codes(program, minutes)?;
    let first = |names: Vec<String>| names.into_iter().next().unwrap_or_default();
    Ok((first(patients), first(practitioners), codes))
}

/// The distinct values, sorted (so that the result never depends on entry order).
fn distinct<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&String> = values.collect();
    set.into_iter().cloned().collect()
}

/// The month's minutes per role.
#[derive(Debug, Clone, Copy)]
struct Minutes {
    staff: i64,
    physician: i64,
}

impl Minutes {
    fn of(entries: &[TimeEntry]) -> Self {
        let sum = |role: StaffRole| {
            entries
                .iter()
                .filter(|e| e.role == role)
                .fold(0_i64, |sum, e| sum.saturating_add(i64::from(e.minutes)))
        };
        Self {
            staff: sum(StaffRole::ClinicalStaff),
            physician: sum(StaffRole::Physician),
        }
    }

    fn of_role(self, role: StaffRole) -> i64 {
        match role {
            StaffRole::ClinicalStaff => self.staff,
            StaffRole::Physician => self.physician,
        }
    }
}

/// A base code and its add-on, billed from one role's minutes.
#[derive(Debug, Clone, Copy)]
struct Family {
    role: StaffRole,
    base: &'static str,
    /// Minutes the base code needs.
    threshold: i64,
    add_on: &'static str,
    /// Minutes per add-on unit: only full blocks count.
    block: i64,
    /// Most add-on units per month, where the rule text sets one.
    cap: Option<i64>,
}

// CMS MLN909188 via ../shared/notes/oracles.md. Only 99439 has a stated monthly cap there.
const CCM_STAFF: Family = Family {
    role: StaffRole::ClinicalStaff,
    base: "99490",
    threshold: 20,
    add_on: "99439",
    block: 20,
    cap: Some(2),
};
const CCM_PHYSICIAN: Family = Family {
    role: StaffRole::Physician,
    base: "99491",
    threshold: 30,
    add_on: "99437",
    block: 30,
    cap: None,
};
const COMPLEX_CCM_STAFF: Family = Family {
    role: StaffRole::ClinicalStaff,
    base: "99487",
    threshold: 60,
    add_on: "99489",
    block: 30,
    cap: None,
};
const PCM_PHYSICIAN: Family = Family {
    role: StaffRole::Physician,
    base: "99424",
    threshold: 30,
    add_on: "99425",
    block: 30,
    cap: None,
};
const PCM_STAFF: Family = Family {
    role: StaffRole::ClinicalStaff,
    base: "99426",
    threshold: 30,
    add_on: "99427",
    block: 30,
    cap: None,
};

/// The program's families, staff first (the order decides nothing but ties in shortfall).
fn families(program: Program) -> &'static [Family] {
    match program {
        Program::Ccm => &[CCM_STAFF, CCM_PHYSICIAN],
        Program::ComplexCcm => &[COMPLEX_CCM_STAFF],
        Program::Pcm => &[PCM_STAFF, PCM_PHYSICIAN],
    }
}

/// What one family would bill: add-on units (0 when only the base code).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    family: Family,
    minutes: i64,
    add_ons: i64,
}

impl Candidate {
    fn units(self) -> i64 {
        1 + self.add_ons
    }

    fn minutes_covered(self) -> i64 {
        self.family.threshold + self.add_ons * self.family.block
    }
}

fn candidate(family: Family, minutes: Minutes) -> Option<Candidate> {
    let minutes = minutes.of_role(family.role);
    if minutes < family.threshold {
        return None;
    }
    let full_blocks = (minutes - family.threshold) / family.block;
    let add_ons = family.cap.map_or(full_blocks, |cap| full_blocks.min(cap));
    Some(Candidate {
        family,
        minutes,
        add_ons,
    })
}

/// Picks the family to bill and writes its codes, or says how far below threshold the month is.
fn select_codes(program: Program, minutes: Minutes) -> Result<Vec<BilledCode>, NotBilled> {
    let all = families(program);
    let qualifying: Vec<Candidate> = all.iter().filter_map(|f| candidate(*f, minutes)).collect();
    // More units wins; on equal units, more minutes covered. Ties beyond that cannot happen
    // between a 20- and a 30-minute family, and max_by_key keeps the last (physician) anyway.
    let Some(chosen) = qualifying
        .iter()
        .copied()
        .max_by_key(|c| (c.units(), c.minutes_covered()))
    else {
        return Err(below_threshold(all, minutes));
    };
    let choice_note = choice_note(program, chosen, &qualifying, minutes);
    Ok(codes_for(program, chosen, &choice_note))
}

/// The family closest to its threshold (smallest shortfall; staff on a tie).
fn below_threshold(all: &[Family], minutes: Minutes) -> NotBilled {
    let closest = all
        .iter()
        .map(|f| (f.threshold - minutes.of_role(f.role), *f))
        .reduce(|best, next| if next.0 < best.0 { next } else { best });
    match closest {
        Some((_, family)) => NotBilled::BelowThreshold {
            minutes: saturate(minutes.of_role(family.role)),
            needed: saturate(family.threshold),
        },
        // Every program has a family; this arm only keeps the function total.
        None => NotBilled::BelowThreshold {
            minutes: 0,
            needed: 0,
        },
    }
}

/// Why the other role's minutes are not on the claim, if there are any.
fn choice_note(
    program: Program,
    chosen: Candidate,
    qualifying: &[Candidate],
    minutes: Minutes,
) -> String {
    let other_role = match chosen.family.role {
        StaffRole::ClinicalStaff => StaffRole::Physician,
        StaffRole::Physician => StaffRole::ClinicalStaff,
    };
    let other_minutes = minutes.of_role(other_role);
    if other_minutes == 0 {
        return String::new();
    }
    let other_name = role_name(other_role);
    if program == Program::ComplexCcm {
        return format!(
            "; {other_minutes} {other_name} minutes not counted: complex CCM counts clinical staff time"
        );
    }
    match qualifying.iter().find(|c| c.family.role == other_role) {
        Some(other) => format!(
            "; {base} ({units} units) also qualified but is not billed in the same month as {chosen_base}: \
             the family with more units is billed (on equal units, the one covering more minutes)",
            base = other.family.base,
            units = other.units(),
            chosen_base = chosen.family.base,
        ),
        None => format!(
            "; {other_minutes} {other_name} minutes are below {base}'s {threshold} and not billed",
            base = other_family(program, other_role).map_or("", |f| f.base),
            threshold = other_family(program, other_role).map_or(0, |f| f.threshold),
        ),
    }
}

fn other_family(program: Program, role: StaffRole) -> Option<Family> {
    families(program).iter().copied().find(|f| f.role == role)
}

fn program_name(program: Program) -> &'static str {
    match program {
        Program::Ccm => "CCM",
        Program::ComplexCcm => "complex CCM",
        Program::Pcm => "PCM",
    }
}

fn role_name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::ClinicalStaff => "clinical staff",
        StaffRole::Physician => "physician/QHP",
    }
}

/// The base code, plus the add-on when at least one full block beyond the threshold exists.
fn codes_for(program: Program, chosen: Candidate, choice_note: &str) -> Vec<BilledCode> {
    let family = chosen.family;
    let role = role_name(family.role);
    let mut codes = vec![BilledCode {
        code: family.base,
        units: 1,
        minutes_covered: saturate(family.threshold),
        why: format!(
            "{program}: {minutes} {role} minutes reach {base}'s {threshold}{choice_note}",
            program = program_name(program),
            minutes = chosen.minutes,
            base = family.base,
            threshold = family.threshold,
        ),
    }];
    if chosen.add_ons > 0 {
        let capped = match family.cap {
            Some(cap) if chosen.add_ons == cap => format!(" (capped at {cap} per month)"),
            _ => String::new(),
        };
        codes.push(BilledCode {
            code: family.add_on,
            units: saturate(chosen.add_ons),
            minutes_covered: saturate(chosen.add_ons * family.block),
            why: format!(
                "one unit per full {block} {role} minutes beyond the first {threshold}{capped}",
                block = family.block,
                threshold = family.threshold,
            ),
        });
    }
    codes
}

/// An `i64` count as `i32`, clamped (never larger than the value, so "covered ≤ total" holds).
fn saturate(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

#[cfg(test)]
mod tests;
