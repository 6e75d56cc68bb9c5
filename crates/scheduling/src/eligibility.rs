//! Eligibility: the rules a bookable slot must satisfy, and why candidates were excluded.
//!
//! [`find_slots`] answers a slot search for one patient, one service unit and one visit type
//! inside a window. A slot is offered only when every rule holds:
//!
//! * **Patient-level rules** (checked first; if any fails there are no slots at all, and every
//!   failing rule is reported against [`Subject::Patient`]):
//!   * the visit type is one of the unit's `allowed_visit_types` ([`Reason::VisitTypeNotAllowed`]);
//!   * the patient has an active enrollment in exactly this unit ([`Reason::PatientNotEnrolled`]);
//!     enrollment in a descendant unit does not count (the service layer resolves the tree);
//!   * when the visit type belongs to a pathway step, that step is one of the unit's
//!     `care_pathway_steps` and is the enrollment's current step ([`Reason::WrongPathwayStep`]);
//!   * unless self-pay is allowed, some coverage with an accepted payer is in force at some point
//!     of the window ([`Reason::PayerNotAccepted`]);
//!   * when enrolled in the unit, for each of the unit's intake requirements, some record of it on
//!     the enrollment that covers the visit type is in force at some point of the window; otherwise
//!     the requirement's own reason, one per requirement unmet (see *Intake requirements*).
//! * **Provider-level rule**: the provider holds an active credential for the unit in force at
//!   some point of the window, otherwise the provider is excluded as a whole
//!   ([`Reason::ProviderNotCredentialed`]). A provider whose availability yields no candidate
//!   start inside the window is excluded with [`Reason::OutsideAvailability`].
//! * **Candidate rules**, for each candidate start cut from the provider's availability with
//!   [`availability::slots`] (buffers must fit inside availability), in this order:
//!   1. an active credential for the unit is in force at the slot start
//!      ([`Reason::ProviderNotCredentialed`]; a credential may end mid-window);
//!   2. unless self-pay is allowed, a coverage with an accepted payer is in force at the slot
//!      start ([`Reason::PayerNotAccepted`]);
//!   3. every intake requirement of the unit has a record in force at the slot start that covers
//!      the visit type (the first unmet requirement, in the unit's order, is the reason);
//!   4. the *padded* interval `[start - buffer_before, end + buffer_after)` overlaps none of the
//!      provider's busy intervals ([`Reason::ProviderBooked`]);
//!   5. the padded interval overlaps none of the patient's busy intervals
//!      ([`Reason::PatientBooked`]);
//!   6. when the visit type needs a room, some room (the first free one, in input order) is free
//!      over the padded interval ([`Reason::NoRoomAvailable`]).
//!
//! # Intake requirements
//!
//! A unit may require a referral, consent, prior authorization or care plan before a patient is
//! seen. Each is met at an instant T by a record of it on the patient's enrollment in the unit that
//! is in force at T (`from <= T < until`) and covers the visit type (no visit types listed means
//! all). When none is, the requirement is *expired* if a covering record lapsed at or before T (the
//! explanation carries the latest such lapse: unmet since then) and *missing* otherwise (none was
//! ever recorded, or the only ones take effect later). Each requirement has its two reasons
//! ([`Requirement::missing`], [`Requirement::expired`]).
//!
//! A record with a visit count N (`visit_count > 0`; 0 means unlimited) covers at most N visits:
//! those of the patient's visits in the unit ([`PatientContext::visits`]) that count
//! ([`VisitState::counts`]: held, booked, checked in or completed, not cancelled, no-show or
//! expired), are of a visit type it covers and start inside its effective period. A record whose N
//! visits are taken meets nothing more; when every covering record in force is used up, the
//! requirement's third reason ([`Requirement::used`]) names the record and its count
//! ([`Exclusion::visits_used`]). A cancellation frees its visit again.
//!
//! Busy intervals are taken as given: the caller stores each existing booking's occupied span
//! (its own buffers included). Provider and location filters are applied by the caller, which
//! passes only the matching providers and rooms.
//!
//! # Explanations
//!
//! Excluded candidates are explained once per (provider, reason), with the earliest excluded
//! start, to keep explanations short. A provider never disappears silently: a provider that
//! contributes no slot has at least one [`Exclusion`] naming it.
//!
//! All instants are UTC and all intervals half-open, `[start, end)`.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use crate::availability::{self, Interval};

/// A visit type as Scheduling defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitType {
    /// The code units list in their `allowed_visit_types`.
    pub code: String,
    /// How long the visit lasts (positive).
    pub duration: TimeDelta,
    /// Time the provider, room and patient must be free before the visit.
    pub buffer_before: TimeDelta,
    /// Time the provider, room and patient must be free after the visit.
    pub buffer_after: TimeDelta,
    /// The care-pathway step this visit belongs to, if any.
    pub pathway_step: Option<String>,
    /// Whether the visit needs a room.
    pub needs_room: bool,
}

/// The effective (inherited and resolved) policy of the service unit searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPolicy {
    /// The unit's resource name.
    pub unit: String,
    /// Visit-type codes the unit offers. Empty means none.
    pub allowed_visit_types: Vec<String>,
    /// The unit's care-pathway step codes, in order.
    pub care_pathway_steps: Vec<String>,
    /// Payers accepted by the unit's billing profile.
    pub accepted_payers: Vec<String>,
    /// Whether a patient without accepted coverage may be seen as self-pay.
    pub self_pay_allowed: bool,
    /// What a patient needs recorded before being seen, in the unit's order (each at most once).
    pub intake_requirements: Vec<Requirement>,
}

/// An intake requirement a unit may declare (Org's `IntakeRequirement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    Referral,
    Consent,
    PriorAuthorization,
    CarePlan,
}

impl Requirement {
    /// The reason when no record of it was ever in force (or none yet) at the time.
    pub fn missing(self) -> Reason {
        match self {
            Self::Referral => Reason::IntakeReferralMissing,
            Self::Consent => Reason::IntakeConsentMissing,
            Self::PriorAuthorization => Reason::PriorAuthMissing,
            Self::CarePlan => Reason::IntakeCarePlanMissing,
        }
    }

    /// The reason when its records lapsed before the time.
    pub fn expired(self) -> Reason {
        match self {
            Self::Referral => Reason::ReferralExpired,
            Self::Consent => Reason::ConsentExpired,
            Self::PriorAuthorization => Reason::PriorAuthExpired,
            Self::CarePlan => Reason::CarePlanExpired,
        }
    }

    /// The reason when its records in force have covered all the visits they count.
    pub fn used(self) -> Reason {
        match self {
            Self::Referral => Reason::ReferralVisitsUsed,
            Self::Consent => Reason::ConsentVisitsUsed,
            Self::PriorAuthorization => Reason::PriorAuthVisitsUsed,
            Self::CarePlan => Reason::CarePlanVisitsUsed,
        }
    }

    /// Org's name of the requirement, e.g. `"INTAKE_REQUIREMENT_REFERRAL"`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Referral => "INTAKE_REQUIREMENT_REFERRAL",
            Self::Consent => "INTAKE_REQUIREMENT_CONSENT",
            Self::PriorAuthorization => "INTAKE_REQUIREMENT_PRIOR_AUTHORIZATION",
            Self::CarePlan => "INTAKE_REQUIREMENT_CARE_PLAN",
        }
    }

    /// Every requirement, in Org's order.
    pub const ALL: [Requirement; 4] = [
        Self::Referral,
        Self::Consent,
        Self::PriorAuthorization,
        Self::CarePlan,
    ];
}

/// One intake record on the patient's enrollment (Org's `IntakeRecord`, as far as slot search
/// needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeInfo {
    /// The requirement it meets.
    pub requirement: Requirement,
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end; `None` means it does not expire.
    pub until: Option<DateTime<Utc>>,
    /// Visit-type codes it covers; empty means all.
    pub visit_types: Vec<String>,
    /// The record's id on its enrollment (Org's `IntakeRecord.id`, e.g. `intake-2`).
    pub record: String,
    /// How many visits it covers; 0 means unlimited.
    pub visit_count: u32,
}

impl IntakeInfo {
    /// Whether it covers the visit type `code` (no visit types listed means all).
    pub fn covers(&self, code: &str) -> bool {
        self.visit_types.is_empty() || self.visit_types.iter().any(|v| v == code)
    }

    /// How many of `visits` it covers: those that count, of a visit type it covers, starting
    /// inside its effective period.
    pub fn visits_used(&self, visits: &[PriorVisit]) -> u32 {
        let used = visits
            .iter()
            .filter(|v| {
                v.state.counts()
                    && self.covers(&v.code)
                    && in_period(self.from, self.until, v.start)
            })
            .count();
        u32::try_from(used).unwrap_or(u32::MAX)
    }

    /// Whether it still covers another visit, given the patient's `visits`.
    fn has_visits_left(&self, visits: &[PriorVisit]) -> bool {
        self.visit_count == 0 || self.visits_used(visits) < self.visit_count
    }
}

/// The state of one of the patient's visits, as far as visit counts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitState {
    /// A hold not yet lapsed.
    Held,
    Booked,
    CheckedIn,
    Completed,
    Cancelled,
    NoShow,
    /// A hold that lapsed.
    Expired,
}

impl VisitState {
    /// Whether the visit uses one of a record's visits: held, booked, checked in or completed.
    pub fn counts(self) -> bool {
        matches!(
            self,
            Self::Held | Self::Booked | Self::CheckedIn | Self::Completed
        )
    }
}

/// One of the patient's visits in the unit (any state), for the records' visit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorVisit {
    /// Its visit type's code.
    pub code: String,
    /// Its start.
    pub start: DateTime<Utc>,
    /// Its state.
    pub state: VisitState,
}

/// The patient's current enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentInfo {
    /// The unit the patient is enrolled in.
    pub unit: String,
    /// The current care-pathway step, if the unit has a pathway.
    pub pathway_step: Option<String>,
    /// Whether the enrollment is active (not discharged).
    pub active: bool,
    /// The intake records on the enrollment, in any order.
    pub intake: Vec<IntakeInfo>,
}

/// One of the patient's coverages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageInfo {
    /// The payer's resource name.
    pub payer: String,
    /// 1 for primary, 2 for secondary, and so on.
    pub priority: i32,
    /// Inclusive start of the effective period.
    pub from: DateTime<Utc>,
    /// Exclusive end of the effective period; `None` means open-ended.
    pub until: Option<DateTime<Utc>>,
}

/// What the search knows about the patient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientContext {
    /// The patient's enrollment, if any.
    pub enrollment: Option<EnrollmentInfo>,
    /// The patient's coverages, in any order.
    pub coverages: Vec<CoverageInfo>,
    /// The patient's visits in the unit, in any state (the intake records' visit counts).
    pub visits: Vec<PriorVisit>,
}

/// One of a provider's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The unit the credential is for.
    pub unit: String,
    /// Whether the credential is active (pending, suspended and revoked are not).
    pub active: bool,
    /// Inclusive start of the effective period.
    pub from: DateTime<Utc>,
    /// Exclusive end of the effective period; `None` means open-ended.
    pub until: Option<DateTime<Utc>>,
}

/// A provider who may take the visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCandidate {
    /// The provider's resource name.
    pub provider: String,
    /// All of the provider's credentials (any unit).
    pub credentials: Vec<CredentialInfo>,
    /// Availability already expanded (see [`availability::expand`]).
    pub availability: Vec<Interval>,
    /// Time already taken (existing bookings, buffers included).
    pub busy: Vec<Interval>,
}

/// A room that may host the visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCandidate {
    /// The room's resource name.
    pub room: String,
    /// Time already taken.
    pub busy: Vec<Interval>,
}

/// A slot search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotQuery {
    /// The unit searched, with its effective policy.
    pub unit: UnitPolicy,
    /// The visit type requested.
    pub visit_type: VisitType,
    /// Slots must lie inside this window.
    pub window: Interval,
    /// Distance between candidate starts; a non-positive step means the visit's duration.
    pub step: TimeDelta,
    /// The patient.
    pub patient: PatientContext,
    /// Time the patient is already booked.
    pub patient_busy: Vec<Interval>,
    /// Providers to consider (already filtered by the caller).
    pub providers: Vec<ProviderCandidate>,
    /// Rooms to consider when the visit needs one (already filtered by the caller).
    pub rooms: Vec<RoomCandidate>,
}

/// A bookable slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The provider.
    pub provider: String,
    /// The room, when the visit type needs one.
    pub room: Option<String>,
    /// The visit itself (buffers excluded).
    pub interval: Interval,
    /// The payer to bill: the accepted coverage in force at the start with the lowest priority
    /// number; `None` means self-pay.
    pub payer: Option<String>,
}

/// Why something was excluded. [`Reason::code`] gives a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    VisitTypeNotAllowed,
    PatientNotEnrolled,
    WrongPathwayStep,
    PayerNotAccepted,
    ProviderNotCredentialed,
    OutsideAvailability,
    ProviderBooked,
    PatientBooked,
    NoRoomAvailable,
    IntakeReferralMissing,
    IntakeConsentMissing,
    PriorAuthMissing,
    IntakeCarePlanMissing,
    ReferralExpired,
    ConsentExpired,
    PriorAuthExpired,
    CarePlanExpired,
    ReferralVisitsUsed,
    ConsentVisitsUsed,
    PriorAuthVisitsUsed,
    CarePlanVisitsUsed,
}

impl Reason {
    /// The stable UPPER_SNAKE code, e.g. `"PAYER_NOT_ACCEPTED"`.
    pub fn code(self) -> &'static str {
        match self {
            Self::VisitTypeNotAllowed => "VISIT_TYPE_NOT_ALLOWED",
            Self::PatientNotEnrolled => "PATIENT_NOT_ENROLLED",
            Self::WrongPathwayStep => "WRONG_PATHWAY_STEP",
            Self::PayerNotAccepted => "PAYER_NOT_ACCEPTED",
            Self::ProviderNotCredentialed => "PROVIDER_NOT_CREDENTIALED",
            Self::OutsideAvailability => "OUTSIDE_AVAILABILITY",
            Self::ProviderBooked => "PROVIDER_BOOKED",
            Self::PatientBooked => "PATIENT_BOOKED",
            Self::NoRoomAvailable => "NO_ROOM_AVAILABLE",
            Self::IntakeReferralMissing => "INTAKE_REFERRAL_MISSING",
            Self::IntakeConsentMissing => "INTAKE_CONSENT_MISSING",
            Self::PriorAuthMissing => "PRIOR_AUTH_MISSING",
            Self::IntakeCarePlanMissing => "INTAKE_CARE_PLAN_MISSING",
            Self::ReferralExpired => "REFERRAL_EXPIRED",
            Self::ConsentExpired => "CONSENT_EXPIRED",
            Self::PriorAuthExpired => "PRIOR_AUTH_EXPIRED",
            Self::CarePlanExpired => "CARE_PLAN_EXPIRED",
            Self::ReferralVisitsUsed => "REFERRAL_VISITS_USED",
            Self::ConsentVisitsUsed => "CONSENT_VISITS_USED",
            Self::PriorAuthVisitsUsed => "PRIOR_AUTH_VISITS_USED",
            Self::CarePlanVisitsUsed => "CARE_PLAN_VISITS_USED",
        }
    }

    /// The intake requirement an intake reason is about; `None` for the other rules.
    pub fn requirement(self) -> Option<Requirement> {
        Requirement::ALL
            .into_iter()
            .find(|r| r.missing() == self || r.expired() == self || r.used() == self)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What an exclusion is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The whole search (patient-level rules).
    Patient,
    /// Every candidate of this provider.
    Provider(String),
    /// A candidate start of this provider (the earliest one excluded for the reason).
    Candidate {
        provider: String,
        start: DateTime<Utc>,
    },
}

/// One explanation of why something was not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub subject: Subject,
    pub reason: Reason,
    /// For an intake requirement that expired ([`Requirement::expired`]): when its latest covering
    /// record lapsed, i.e. since when the requirement is unmet. `None` for every other reason.
    pub expired_at: Option<DateTime<Utc>>,
    /// For an intake requirement whose records are used up ([`Requirement::used`]): the record
    /// in force and the visits it covers. `None` for every other reason.
    pub visits_used: Option<VisitsUsed>,
}

/// The record whose visits are all taken (see [`Exclusion::visits_used`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitsUsed {
    /// The record's id on the enrollment.
    pub record: String,
    /// The visits it covers (all taken).
    pub visit_count: u32,
}

impl Exclusion {
    /// An exclusion with no detail beyond its reason.
    pub fn new(subject: Subject, reason: Reason) -> Self {
        Self {
            subject,
            reason,
            expired_at: None,
            visits_used: None,
        }
    }
}

/// A rule broken, with the intake expiry when it is an expired requirement and the used-up record
/// when its visits are taken (see [`Exclusion`]).
type Broken = (Reason, Option<DateTime<Utc>>, Option<VisitsUsed>);

/// The answer to a slot search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchResult {
    /// Bookable slots, sorted by start then provider order.
    pub slots: Vec<Slot>,
    /// Why the rest was excluded.
    pub excluded: Vec<Exclusion>,
}

/// Runs a slot search; see the module documentation for the rules.
pub fn find_slots(query: &SlotQuery) -> SearchResult {
    let patient_failures = patient_rules(query);
    if !patient_failures.is_empty() {
        return SearchResult {
            slots: Vec::new(),
            excluded: patient_failures
                .into_iter()
                .map(|(reason, expired_at, visits_used)| Exclusion {
                    subject: Subject::Patient,
                    reason,
                    expired_at,
                    visits_used,
                })
                .collect(),
        };
    }

    let mut result = SearchResult::default();
    for provider in &query.providers {
        search_provider(query, provider, &mut result);
    }
    result.slots.sort_by_key(|slot| slot.interval.start());
    result
}

/// The patient-level rules that fail, in rule order.
fn patient_rules(query: &SlotQuery) -> Vec<Broken> {
    let unit = &query.unit;
    let visit = &query.visit_type;
    let mut failures = Vec::new();

    if !unit.allowed_visit_types.contains(&visit.code) {
        failures.push((Reason::VisitTypeNotAllowed, None, None));
    }

    let enrollment = query
        .patient
        .enrollment
        .as_ref()
        .filter(|e| e.active && e.unit == unit.unit);
    match enrollment {
        None => failures.push((Reason::PatientNotEnrolled, None, None)),
        Some(e) => {
            if let Some(step) = &visit.pathway_step
                && (!unit.care_pathway_steps.contains(step)
                    || e.pathway_step.as_ref() != Some(step))
            {
                failures.push((Reason::WrongPathwayStep, None, None));
            }
        }
    }

    if !unit.self_pay_allowed
        && !query
            .patient
            .coverages
            .iter()
            .any(|c| accepted(unit, c) && overlaps_period(c.from, c.until, query.window))
    {
        failures.push((Reason::PayerNotAccepted, None, None));
    }

    // Intake requirements are about the enrollment in this unit: without one, PATIENT_NOT_ENROLLED
    // already says all there is to say. A requirement is met for the window when a covering record
    // is in force at some point of it; the slot starts are checked one by one later.
    if let Some(e) = enrollment {
        for requirement in requirements(unit) {
            let covering: Vec<&IntakeInfo> = covering(e, requirement, &visit.code).collect();
            let in_window: Vec<&IntakeInfo> = covering
                .iter()
                .copied()
                .filter(|r| overlaps_period(r.from, r.until, query.window))
                .collect();
            if in_window.is_empty() {
                failures.push(unmet(requirement, &covering, query.window.start()));
            } else if let Some(used) = used_up(requirement, &in_window, &query.patient.visits) {
                failures.push(used);
            }
        }
    }
    failures
}

/// The unit's intake requirements in its order, each once.
fn requirements(unit: &UnitPolicy) -> Vec<Requirement> {
    let mut seen = Vec::new();
    for r in &unit.intake_requirements {
        if !seen.contains(r) {
            seen.push(*r);
        }
    }
    seen
}

/// The enrollment's records of `requirement` that cover the visit type `code`.
fn covering<'e>(
    enrollment: &'e EnrollmentInfo,
    requirement: Requirement,
    code: &'e str,
) -> impl Iterator<Item = &'e IntakeInfo> {
    enrollment
        .intake
        .iter()
        .filter(move |r| r.requirement == requirement && r.covers(code))
}

/// When every one of `in_force` (covering records of `requirement`, at least one) has covered all
/// its visits: the requirement's used-up reason, naming the first such record of the enrollment.
fn used_up(
    requirement: Requirement,
    in_force: &[&IntakeInfo],
    visits: &[PriorVisit],
) -> Option<Broken> {
    if in_force.iter().any(|r| r.has_visits_left(visits)) {
        return None;
    }
    let first = in_force.first()?;
    Some((
        requirement.used(),
        None,
        Some(VisitsUsed {
            record: first.record.clone(),
            visit_count: first.visit_count,
        }),
    ))
}

/// Why `requirement` is unmet at `at`, given its covering records (none in force then): expired,
/// since the latest lapse at or before `at`, or missing.
fn unmet(requirement: Requirement, covering: &[&IntakeInfo], at: DateTime<Utc>) -> Broken {
    match covering
        .iter()
        .filter_map(|r| r.until)
        .filter(|until| *until <= at)
        .max()
    {
        Some(lapsed) => (requirement.expired(), Some(lapsed), None),
        None => (requirement.missing(), None, None),
    }
}

/// The first of the unit's intake requirements unmet at `at` for the enrollment and visit type
/// (no covering record in force, or all of those in force used up by `visits`).
fn first_unmet_intake(
    unit: &UnitPolicy,
    enrollment: &EnrollmentInfo,
    code: &str,
    at: DateTime<Utc>,
    visits: &[PriorVisit],
) -> Option<Broken> {
    requirements(unit).into_iter().find_map(|requirement| {
        let covering: Vec<&IntakeInfo> = covering(enrollment, requirement, code).collect();
        let in_force: Vec<&IntakeInfo> = covering
            .iter()
            .copied()
            .filter(|r| in_period(r.from, r.until, at))
            .collect();
        if in_force.is_empty() {
            Some(unmet(requirement, &covering, at))
        } else {
            used_up(requirement, &in_force, visits)
        }
    })
}

/// The first of the unit's intake requirements unmet at `at` for the patient's enrollment in the
/// unit and the visit type `code`, counting the patient's visits (what a booking re-checks under
/// its lock, once it has counted them afresh); `None` when all are met or there is no such
/// enrollment (the other rules say so).
pub fn unmet_intake_at(
    unit: &UnitPolicy,
    patient: &PatientContext,
    code: &str,
    at: DateTime<Utc>,
) -> Option<Exclusion> {
    let enrollment = patient
        .enrollment
        .as_ref()
        .filter(|e| e.active && e.unit == unit.unit)?;
    first_unmet_intake(unit, enrollment, code, at, &patient.visits).map(
        |(reason, expired_at, visits_used)| Exclusion {
            subject: Subject::Patient,
            reason,
            expired_at,
            visits_used,
        },
    )
}

/// Evaluates one provider's candidates, appending slots and exclusions.
fn search_provider(query: &SlotQuery, provider: &ProviderCandidate, result: &mut SearchResult) {
    let unit = &query.unit;
    let visit = &query.visit_type;
    let name = &provider.provider;

    let credentials: Vec<&CredentialInfo> = provider
        .credentials
        .iter()
        .filter(|c| c.active && c.unit == unit.unit)
        .collect();
    if !credentials
        .iter()
        .any(|c| overlaps_period(c.from, c.until, query.window))
    {
        result.excluded.push(Exclusion::new(
            Subject::Provider(name.clone()),
            Reason::ProviderNotCredentialed,
        ));
        return;
    }

    let step = if query.step > TimeDelta::zero() {
        query.step
    } else {
        visit.duration
    };
    let candidates: Vec<Interval> = availability::slots(
        &provider.availability,
        visit.duration,
        step,
        visit.buffer_before,
        visit.buffer_after,
    )
    .into_iter()
    .filter(|slot| query.window.contains(slot))
    .collect();
    if candidates.is_empty() {
        result.excluded.push(Exclusion::new(
            Subject::Provider(name.clone()),
            Reason::OutsideAvailability,
        ));
        return;
    }

    // Reasons already explained for this provider (candidates are sorted, so the first one
    // seen is the earliest).
    let mut explained: Vec<Reason> = Vec::new();
    for candidate in candidates {
        match check_candidate(query, &credentials, provider, candidate) {
            Ok((room, payer)) => result.slots.push(Slot {
                provider: name.clone(),
                room,
                interval: candidate,
                payer,
            }),
            Err((reason, expired_at, visits_used)) => {
                if !explained.contains(&reason) {
                    explained.push(reason);
                    result.excluded.push(Exclusion {
                        subject: Subject::Candidate {
                            provider: name.clone(),
                            start: candidate.start(),
                        },
                        reason,
                        expired_at,
                        visits_used,
                    });
                }
            }
        }
    }
}

/// The room (if needed) and payer (`None` for self-pay) of a bookable candidate, or the first
/// rule it breaks.
fn check_candidate(
    query: &SlotQuery,
    credentials: &[&CredentialInfo],
    provider: &ProviderCandidate,
    candidate: Interval,
) -> Result<(Option<String>, Option<String>), Broken> {
    let unit = &query.unit;
    let visit = &query.visit_type;
    let start = candidate.start();
    let broken = |reason| (reason, None, None);

    if !credentials
        .iter()
        .any(|c| in_period(c.from, c.until, start))
    {
        return Err(broken(Reason::ProviderNotCredentialed));
    }

    let payer = query
        .patient
        .coverages
        .iter()
        .filter(|c| accepted(unit, c) && in_period(c.from, c.until, start))
        .min_by_key(|c| c.priority)
        .map(|c| c.payer.clone());
    if payer.is_none() && !unit.self_pay_allowed {
        return Err(broken(Reason::PayerNotAccepted));
    }

    // The patient rules passed, so the patient is enrolled in the unit; a record may still lapse
    // (or take effect) inside the window.
    if let Some(enrollment) = &query.patient.enrollment
        && let Some(unmet) =
            first_unmet_intake(unit, enrollment, &visit.code, start, &query.patient.visits)
    {
        return Err(unmet);
    }

    let padded = pad(candidate, visit.buffer_before, visit.buffer_after);
    if any_overlap(&provider.busy, padded) {
        return Err(broken(Reason::ProviderBooked));
    }
    if any_overlap(&query.patient_busy, padded) {
        return Err(broken(Reason::PatientBooked));
    }

    let room = if visit.needs_room {
        let free = query
            .rooms
            .iter()
            .find(|room| !any_overlap(&room.busy, padded))
            .ok_or(broken(Reason::NoRoomAvailable))?;
        Some(free.room.clone())
    } else {
        None
    };
    Ok((room, payer))
}

/// Whether the unit's billing profile accepts the coverage's payer.
fn accepted(unit: &UnitPolicy, coverage: &CoverageInfo) -> bool {
    unit.accepted_payers.contains(&coverage.payer)
}

/// Whether `instant` lies in the half-open period `[from, until)`.
fn in_period(from: DateTime<Utc>, until: Option<DateTime<Utc>>, instant: DateTime<Utc>) -> bool {
    from <= instant && until.is_none_or(|until| instant < until)
}

/// Whether the half-open period `[from, until)` shares an instant with `window`.
fn overlaps_period(from: DateTime<Utc>, until: Option<DateTime<Utc>>, window: Interval) -> bool {
    from < window.end() && until.is_none_or(|until| window.start() < until)
}

/// Whether any of `busy` shares an instant with `interval`.
fn any_overlap(busy: &[Interval], interval: Interval) -> bool {
    busy.iter()
        .any(|b| b.start() < interval.end() && interval.start() < b.end())
}

/// `interval` widened by the buffers (negative buffers count as zero; saturates at chrono's
/// range).
fn pad(interval: Interval, before: TimeDelta, after: TimeDelta) -> Interval {
    let start = interval
        .start()
        .checked_sub_signed(before.max(TimeDelta::zero()))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let end = interval
        .end()
        .checked_add_signed(after.max(TimeDelta::zero()))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    Interval::new(start, end).unwrap_or(interval)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const UNIT: &str = "organizations/o/units/cardio";
    const OTHER_UNIT: &str = "organizations/o/units/derm";
    const DR_A: &str = "organizations/o/providers/a";
    const ACME: &str = "payers/acme";
    const OTHER_PAYER: &str = "payers/other";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    /// An instant on 2026-03-09 given as `"HH:MM"` UTC.
    fn at(time: &str) -> DateTime<Utc> {
        utc(&format!("2026-03-09T{time}:00Z"))
    }

    fn iv(start: &str, end: &str) -> Interval {
        Interval::new(at(start), at(end)).unwrap()
    }

    /// Everything passes: Dr A available 13:00-15:00, 30-minute visits every 30 minutes, one
    /// free room, patient enrolled at the right step with an accepted, open-ended coverage.
    fn baseline() -> SlotQuery {
        SlotQuery {
            unit: UnitPolicy {
                unit: UNIT.into(),
                allowed_visit_types: vec!["FOLLOW_UP".into(), "NEW_PATIENT".into()],
                care_pathway_steps: vec!["intake".into(), "treatment".into()],
                accepted_payers: vec![ACME.into()],
                self_pay_allowed: false,
                intake_requirements: vec![],
            },
            visit_type: VisitType {
                code: "FOLLOW_UP".into(),
                duration: TimeDelta::minutes(30),
                buffer_before: TimeDelta::zero(),
                buffer_after: TimeDelta::zero(),
                pathway_step: Some("treatment".into()),
                needs_room: true,
            },
            window: Interval::new(at("00:00"), utc("2026-03-10T00:00:00Z")).unwrap(),
            step: TimeDelta::minutes(30),
            patient: PatientContext {
                enrollment: Some(EnrollmentInfo {
                    unit: UNIT.into(),
                    pathway_step: Some("treatment".into()),
                    active: true,
                    intake: vec![],
                }),
                coverages: vec![CoverageInfo {
                    payer: ACME.into(),
                    priority: 1,
                    from: utc("2026-01-01T00:00:00Z"),
                    until: None,
                }],
                visits: vec![],
            },
            patient_busy: vec![],
            providers: vec![ProviderCandidate {
                provider: DR_A.into(),
                credentials: vec![CredentialInfo {
                    unit: UNIT.into(),
                    active: true,
                    from: utc("2025-01-01T00:00:00Z"),
                    until: None,
                }],
                availability: vec![iv("13:00", "15:00")],
                busy: vec![],
            }],
            rooms: vec![RoomCandidate {
                room: "rooms/1".into(),
                busy: vec![],
            }],
        }
    }

    const BASELINE_STARTS: [&str; 4] = ["13:00", "13:30", "14:00", "14:30"];

    fn starts(result: &SearchResult) -> Vec<DateTime<Utc>> {
        result.slots.iter().map(|s| s.interval.start()).collect()
    }

    fn expect_starts(result: &SearchResult, expected: &[&str]) {
        let expected: Vec<_> = expected.iter().map(|t| at(t)).collect();
        assert_eq!(starts(result), expected, "{result:#?}");
    }

    fn patient_excluded(reason: Reason) -> Exclusion {
        Exclusion::new(Subject::Patient, reason)
    }

    fn provider_excluded(reason: Reason) -> Exclusion {
        Exclusion::new(Subject::Provider(DR_A.into()), reason)
    }

    fn candidate_excluded(start: &str, reason: Reason) -> Exclusion {
        Exclusion::new(
            Subject::Candidate {
                provider: DR_A.into(),
                start: at(start),
            },
            reason,
        )
    }

    /// Applies `change` to the baseline and checks that no slot is left and `expected` explains
    /// why, with the right code.
    fn assert_no_slots(change: impl FnOnce(&mut SlotQuery), expected: Exclusion, code: &str) {
        let mut q = baseline();
        change(&mut q);
        let result = find_slots(&q);
        assert!(result.slots.is_empty(), "{result:#?}");
        assert!(result.excluded.contains(&expected), "{result:#?}");
        assert_eq!(expected.reason.code(), code);
    }

    #[test]
    fn baseline_yields_slots_with_room_and_payer() {
        let result = find_slots(&baseline());
        expect_starts(&result, &BASELINE_STARTS);
        assert!(result.excluded.is_empty(), "{result:#?}");
        let first = &result.slots[0];
        assert_eq!(first.provider, DR_A);
        assert_eq!(first.room.as_deref(), Some("rooms/1"));
        assert_eq!(first.payer.as_deref(), Some(ACME));
        assert_eq!(first.interval, iv("13:00", "13:30"));
    }

    #[test]
    fn visit_type_not_allowed() {
        assert_no_slots(
            |q| q.unit.allowed_visit_types = vec!["NEW_PATIENT".into()],
            patient_excluded(Reason::VisitTypeNotAllowed),
            "VISIT_TYPE_NOT_ALLOWED",
        );
    }

    #[test]
    fn unenrolled_patient() {
        assert_no_slots(
            |q| q.patient.enrollment = None,
            patient_excluded(Reason::PatientNotEnrolled),
            "PATIENT_NOT_ENROLLED",
        );
    }

    #[test]
    fn discharged_or_other_unit_enrollment_does_not_count() {
        let discharged = |q: &mut SlotQuery| {
            if let Some(e) = q.patient.enrollment.as_mut() {
                e.active = false;
            }
        };
        let elsewhere = |q: &mut SlotQuery| {
            if let Some(e) = q.patient.enrollment.as_mut() {
                e.unit = OTHER_UNIT.into();
            }
        };
        assert_no_slots(
            discharged,
            patient_excluded(Reason::PatientNotEnrolled),
            "PATIENT_NOT_ENROLLED",
        );
        assert_no_slots(
            elsewhere,
            patient_excluded(Reason::PatientNotEnrolled),
            "PATIENT_NOT_ENROLLED",
        );
    }

    #[test]
    fn wrong_pathway_step() {
        assert_no_slots(
            |q| {
                if let Some(e) = q.patient.enrollment.as_mut() {
                    e.pathway_step = Some("intake".into());
                }
            },
            patient_excluded(Reason::WrongPathwayStep),
            "WRONG_PATHWAY_STEP",
        );
    }

    #[test]
    fn visit_type_without_pathway_step_ignores_the_step() {
        let mut q = baseline();
        q.visit_type.pathway_step = None;
        if let Some(e) = q.patient.enrollment.as_mut() {
            e.pathway_step = None;
        }
        expect_starts(&find_slots(&q), &BASELINE_STARTS);
    }

    #[test]
    fn payer_not_accepted() {
        assert_no_slots(
            |q| q.patient.coverages[0].payer = OTHER_PAYER.into(),
            patient_excluded(Reason::PayerNotAccepted),
            "PAYER_NOT_ACCEPTED",
        );
    }

    #[test]
    fn payer_not_accepted_but_self_pay_allowed_gives_slots_back() {
        let mut q = baseline();
        q.patient.coverages[0].payer = OTHER_PAYER.into();
        q.unit.self_pay_allowed = true;
        let result = find_slots(&q);
        expect_starts(&result, &BASELINE_STARTS);
        assert!(result.excluded.is_empty(), "{result:#?}");
        assert!(result.slots.iter().all(|s| s.payer.is_none()));
    }

    #[test]
    fn coverage_not_yet_effective_at_the_slot_time() {
        let mut q = baseline();
        q.patient.coverages[0].from = at("14:00");
        let result = find_slots(&q);
        expect_starts(&result, &["14:00", "14:30"]);
        assert_eq!(
            result.excluded,
            vec![candidate_excluded("13:00", Reason::PayerNotAccepted)]
        );

        // Effective only after the window: excluded at patient level.
        q.patient.coverages[0].from = utc("2026-03-10T00:00:00Z");
        let result = find_slots(&q);
        assert!(result.slots.is_empty());
        assert_eq!(
            result.excluded,
            vec![patient_excluded(Reason::PayerNotAccepted)]
        );
    }

    #[test]
    fn primary_coverage_is_billed() {
        let mut q = baseline();
        q.unit.accepted_payers.push(OTHER_PAYER.into());
        q.patient.coverages.push(CoverageInfo {
            payer: OTHER_PAYER.into(),
            priority: 2,
            from: utc("2026-01-01T00:00:00Z"),
            until: None,
        });
        q.patient.coverages.reverse();
        let result = find_slots(&q);
        assert!(
            result
                .slots
                .iter()
                .all(|s| s.payer.as_deref() == Some(ACME))
        );
    }

    #[test]
    fn provider_not_credentialed_for_the_unit() {
        assert_no_slots(
            |q| q.providers[0].credentials[0].unit = OTHER_UNIT.into(),
            provider_excluded(Reason::ProviderNotCredentialed),
            "PROVIDER_NOT_CREDENTIALED",
        );
    }

    #[test]
    fn credential_pending_is_not_active() {
        assert_no_slots(
            |q| q.providers[0].credentials[0].active = false,
            provider_excluded(Reason::ProviderNotCredentialed),
            "PROVIDER_NOT_CREDENTIALED",
        );
    }

    #[test]
    fn credential_ending_mid_window_keeps_slots_before_the_end() {
        let mut q = baseline();
        q.providers[0].credentials[0].until = Some(at("14:00"));
        let result = find_slots(&q);
        expect_starts(&result, &["13:00", "13:30"]);
        // Explained once, with the earliest excluded start.
        assert_eq!(
            result.excluded,
            vec![candidate_excluded("14:00", Reason::ProviderNotCredentialed)]
        );
    }

    #[test]
    fn outside_availability() {
        assert_no_slots(
            |q| q.providers[0].availability = vec![iv("13:00", "13:20")],
            provider_excluded(Reason::OutsideAvailability),
            "OUTSIDE_AVAILABILITY",
        );
        // Availability outside the window counts as none.
        assert_no_slots(
            |q| q.window = iv("16:00", "18:00"),
            provider_excluded(Reason::OutsideAvailability),
            "OUTSIDE_AVAILABILITY",
        );
    }

    #[test]
    fn provider_busy() {
        let mut q = baseline();
        q.providers[0].busy = vec![iv("13:30", "14:00")];
        let result = find_slots(&q);
        expect_starts(&result, &["13:00", "14:00", "14:30"]);
        assert_eq!(
            result.excluded,
            vec![candidate_excluded("13:30", Reason::ProviderBooked)]
        );
        assert_eq!(Reason::ProviderBooked.code(), "PROVIDER_BOOKED");
    }

    #[test]
    fn provider_busy_within_the_buffer() {
        let mut q = baseline();
        q.providers[0].availability = vec![iv("13:00", "15:30")];
        q.visit_type.buffer_before = TimeDelta::minutes(10);
        q.visit_type.buffer_after = TimeDelta::minutes(10);
        // Not busy: starts 13:10, 13:40, 14:10, 14:40 (the before-buffer must fit in availability).
        expect_starts(&find_slots(&q), &["13:10", "13:40", "14:10", "14:40"]);

        // Busy 14:45-15:00 does not touch 14:10-14:40 but touches its after-buffer (to 14:50),
        // and overlaps 14:40-15:10 itself.
        q.providers[0].busy = vec![iv("14:45", "15:00")];
        let result = find_slots(&q);
        expect_starts(&result, &["13:10", "13:40"]);
        assert_eq!(
            result.excluded,
            vec![candidate_excluded("14:10", Reason::ProviderBooked)]
        );
    }

    #[test]
    fn patient_busy() {
        let mut q = baseline();
        q.patient_busy = vec![iv("14:00", "15:00")];
        let result = find_slots(&q);
        expect_starts(&result, &["13:00", "13:30"]);
        assert_eq!(
            result.excluded,
            vec![candidate_excluded("14:00", Reason::PatientBooked)]
        );
        assert_eq!(Reason::PatientBooked.code(), "PATIENT_BOOKED");
    }

    #[test]
    fn no_room_free_when_needed() {
        assert_no_slots(
            |q| q.rooms[0].busy = vec![iv("12:00", "16:00")],
            candidate_excluded("13:00", Reason::NoRoomAvailable),
            "NO_ROOM_AVAILABLE",
        );
        assert_no_slots(
            |q| q.rooms.clear(),
            candidate_excluded("13:00", Reason::NoRoomAvailable),
            "NO_ROOM_AVAILABLE",
        );
    }

    #[test]
    fn first_free_room_is_taken_and_rooms_are_ignored_when_not_needed() {
        let mut q = baseline();
        q.rooms[0].busy = vec![iv("13:00", "14:00")];
        q.rooms.push(RoomCandidate {
            room: "rooms/2".into(),
            busy: vec![],
        });
        let result = find_slots(&q);
        let rooms: Vec<_> = result.slots.iter().map(|s| s.room.as_deref()).collect();
        assert_eq!(
            rooms,
            vec![
                Some("rooms/2"),
                Some("rooms/2"),
                Some("rooms/1"),
                Some("rooms/1")
            ]
        );

        q.visit_type.needs_room = false;
        q.rooms.clear();
        let result = find_slots(&q);
        expect_starts(&result, &BASELINE_STARTS);
        assert!(result.slots.iter().all(|s| s.room.is_none()));
    }

    #[test]
    fn every_failing_patient_rule_is_reported() {
        let mut q = baseline();
        q.unit.allowed_visit_types.clear();
        q.patient = PatientContext::default();
        let result = find_slots(&q);
        assert!(result.slots.is_empty());
        assert_eq!(
            result.excluded,
            vec![
                patient_excluded(Reason::VisitTypeNotAllowed),
                patient_excluded(Reason::PatientNotEnrolled),
                patient_excluded(Reason::PayerNotAccepted),
            ]
        );
    }

    #[test]
    fn no_provider_is_dropped_silently() {
        let mut q = baseline();
        let ok = q.providers[0].clone();
        let mut uncredentialed = ok.clone();
        uncredentialed.provider = "organizations/o/providers/b".into();
        uncredentialed.credentials.clear();
        let mut unavailable = ok.clone();
        unavailable.provider = "organizations/o/providers/c".into();
        unavailable.availability.clear();
        let mut fully_booked = ok;
        fully_booked.provider = "organizations/o/providers/d".into();
        fully_booked.busy = vec![iv("00:00", "23:00")];
        q.providers
            .extend([uncredentialed, unavailable, fully_booked]);

        let result = find_slots(&q);
        assert!(result.slots.iter().all(|s| s.provider == DR_A));
        expect_starts(&result, &BASELINE_STARTS);
        let codes: Vec<_> = result.excluded.iter().map(|e| e.reason.code()).collect();
        assert_eq!(
            codes,
            vec![
                "PROVIDER_NOT_CREDENTIALED",
                "OUTSIDE_AVAILABILITY",
                "PROVIDER_BOOKED"
            ]
        );
        assert_eq!(
            result.excluded[2].subject,
            Subject::Candidate {
                provider: "organizations/o/providers/d".into(),
                start: at("13:00"),
            }
        );
    }

    #[test]
    fn reason_codes_are_stable() {
        let all = [
            (Reason::VisitTypeNotAllowed, "VISIT_TYPE_NOT_ALLOWED"),
            (Reason::PatientNotEnrolled, "PATIENT_NOT_ENROLLED"),
            (Reason::WrongPathwayStep, "WRONG_PATHWAY_STEP"),
            (Reason::PayerNotAccepted, "PAYER_NOT_ACCEPTED"),
            (Reason::ProviderNotCredentialed, "PROVIDER_NOT_CREDENTIALED"),
            (Reason::OutsideAvailability, "OUTSIDE_AVAILABILITY"),
            (Reason::ProviderBooked, "PROVIDER_BOOKED"),
            (Reason::PatientBooked, "PATIENT_BOOKED"),
            (Reason::NoRoomAvailable, "NO_ROOM_AVAILABLE"),
            (Reason::IntakeReferralMissing, "INTAKE_REFERRAL_MISSING"),
            (Reason::IntakeConsentMissing, "INTAKE_CONSENT_MISSING"),
            (Reason::PriorAuthMissing, "PRIOR_AUTH_MISSING"),
            (Reason::IntakeCarePlanMissing, "INTAKE_CARE_PLAN_MISSING"),
            (Reason::ReferralExpired, "REFERRAL_EXPIRED"),
            (Reason::ConsentExpired, "CONSENT_EXPIRED"),
            (Reason::PriorAuthExpired, "PRIOR_AUTH_EXPIRED"),
            (Reason::CarePlanExpired, "CARE_PLAN_EXPIRED"),
        ];
        for (reason, code) in all {
            assert_eq!(reason.code(), code);
            assert_eq!(reason.to_string(), code);
        }
    }

    /// A record of `requirement` in force from `from` (on 2026-03-09, or `"-"` for 2026-01-01)
    /// until `until` (or open-ended), for every visit type.
    fn record(requirement: Requirement, from: &str, until: Option<&str>) -> IntakeInfo {
        IntakeInfo {
            requirement,
            from: if from == "-" {
                utc("2026-01-01T00:00:00Z")
            } else {
                at(from)
            },
            until: until.map(at),
            visit_types: vec![],
            record: "intake-1".into(),
            visit_count: 0,
        }
    }

    /// (case, records on the enrollment, slot starts offered, exclusions).
    type IntakeCase = (
        &'static str,
        Vec<IntakeInfo>,
        Vec<&'static str>,
        Vec<Exclusion>,
    );

    fn require(q: &mut SlotQuery, requirements: &[Requirement], records: Vec<IntakeInfo>) {
        q.unit.intake_requirements = requirements.to_vec();
        if let Some(e) = q.patient.enrollment.as_mut() {
            e.intake = records;
        }
    }

    /// Each requirement alone: met by an open record, missing without one, missing when recorded
    /// only for another visit type or only later, expired (with the lapse) when its record ended
    /// before the window, and cut mid-window when it lapses inside it.
    #[test]
    fn each_intake_requirement_alone_excludes_a_slot() {
        for requirement in Requirement::ALL {
            let missing = requirement.missing();
            let expired = requirement.expired();
            assert_eq!(missing.requirement(), Some(requirement));
            assert_eq!(expired.requirement(), Some(requirement));
            let other_visit = IntakeInfo {
                visit_types: vec!["NEW_PATIENT".into()],
                ..record(requirement, "-", None)
            };
            let this_visit = IntakeInfo {
                visit_types: vec!["NEW_PATIENT".into(), "FOLLOW_UP".into()],
                ..record(requirement, "-", None)
            };
            let lapsed_early = IntakeInfo {
                until: Some(utc("2026-02-01T00:00:00Z")),
                ..record(requirement, "-", None)
            };
            let lapsed_later = IntakeInfo {
                until: Some(utc("2026-03-01T00:00:00Z")),
                ..record(requirement, "-", None)
            };
            let cases: Vec<IntakeCase> = vec![
                (
                    "open record",
                    vec![record(requirement, "-", None)],
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "recorded for this visit type",
                    vec![this_visit],
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                ("no record", vec![], vec![], vec![patient_excluded(missing)]),
                (
                    "recorded for another visit type only",
                    vec![other_visit],
                    vec![],
                    vec![patient_excluded(missing)],
                ),
                (
                    "another requirement recorded",
                    vec![record(
                        Requirement::ALL
                            .into_iter()
                            .find(|r| *r != requirement)
                            .unwrap(),
                        "-",
                        None,
                    )],
                    vec![],
                    vec![patient_excluded(missing)],
                ),
                (
                    "effective only after the window",
                    vec![IntakeInfo {
                        from: utc("2026-03-10T00:00:00Z"),
                        ..record(requirement, "-", None)
                    }],
                    vec![],
                    vec![patient_excluded(missing)],
                ),
                (
                    "expired before the window: since the latest lapse",
                    vec![lapsed_early, lapsed_later],
                    vec![],
                    vec![Exclusion {
                        expired_at: Some(utc("2026-03-01T00:00:00Z")),
                        ..patient_excluded(expired)
                    }],
                ),
                (
                    "lapses mid-window",
                    vec![record(requirement, "-", Some("14:00"))],
                    vec!["13:00", "13:30"],
                    vec![Exclusion {
                        expired_at: Some(at("14:00")),
                        ..candidate_excluded("14:00", expired)
                    }],
                ),
                (
                    "takes effect mid-window",
                    vec![record(requirement, "13:30", None)],
                    vec!["13:30", "14:00", "14:30"],
                    vec![candidate_excluded("13:00", missing)],
                ),
                (
                    "renewed exactly as the old one lapses",
                    vec![
                        record(requirement, "-", Some("14:00")),
                        record(requirement, "14:00", None),
                    ],
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
            ];
            for (case, records, slots, exclusions) in cases {
                let mut q = baseline();
                require(&mut q, &[requirement], records);
                let result = find_slots(&q);
                expect_starts(&result, &slots);
                assert_eq!(result.excluded, exclusions, "{requirement:?}: {case}");
            }
        }
    }

    #[test]
    fn every_unmet_requirement_is_reported_and_a_slot_names_the_first_in_unit_order() {
        let mut q = baseline();
        require(
            &mut q,
            &[
                Requirement::Referral,
                Requirement::Consent,
                Requirement::Referral,
            ],
            vec![],
        );
        let result = find_slots(&q);
        assert!(result.slots.is_empty());
        assert_eq!(
            result.excluded,
            vec![
                patient_excluded(Reason::IntakeReferralMissing),
                patient_excluded(Reason::IntakeConsentMissing),
            ],
            "each requirement once, in the unit's order"
        );

        // Both lapse mid-window: a candidate names the first requirement of the unit it breaks.
        require(
            &mut q,
            &[Requirement::Referral, Requirement::Consent],
            vec![
                record(Requirement::Referral, "-", Some("14:30")),
                record(Requirement::Consent, "-", Some("14:00")),
            ],
        );
        let result = find_slots(&q);
        expect_starts(&result, &["13:00", "13:30"]);
        assert_eq!(
            result.excluded,
            vec![
                // The referral still holds at 14:00.
                Exclusion {
                    expired_at: Some(at("14:00")),
                    ..candidate_excluded("14:00", Reason::ConsentExpired)
                },
                // At 14:30 both have lapsed: the referral comes first in the unit's order.
                Exclusion {
                    expired_at: Some(at("14:30")),
                    ..candidate_excluded("14:30", Reason::ReferralExpired)
                },
            ]
        );
    }

    #[test]
    fn intake_is_not_checked_without_an_enrollment_in_the_unit() {
        let mut q = baseline();
        require(&mut q, &[Requirement::Referral], vec![]);
        q.patient.enrollment = None;
        assert_eq!(
            find_slots(&q).excluded,
            vec![patient_excluded(Reason::PatientNotEnrolled)]
        );
    }

    /// One of the patient's visits: `code` at `when` (RFC 3339) in `state`.
    fn visit(code: &str, when: &str, state: VisitState) -> PriorVisit {
        PriorVisit {
            code: code.into(),
            start: utc(when),
            state,
        }
    }

    /// `n` booked FOLLOW_UP visits on 2026-03-02 (before the window, inside the records' periods).
    fn booked(n: usize) -> Vec<PriorVisit> {
        (0..n)
            .map(|i| {
                visit(
                    "FOLLOW_UP",
                    &format!("2026-03-02T1{i}:00:00Z"),
                    VisitState::Booked,
                )
            })
            .collect()
    }

    /// (case, records, the patient's visits, slot starts offered, exclusions).
    type VisitCountCase = (
        &'static str,
        Vec<IntakeInfo>,
        Vec<PriorVisit>,
        Vec<&'static str>,
        Vec<Exclusion>,
    );

    /// A record covering N visits: 0, N-1 covered visits leave slots; N exclude with the
    /// requirement's used-up reason, naming the record and its count; cancelled, no-show and
    /// expired visits, visits of other visit types and visits outside its period are not counted;
    /// a count of 0 is unlimited; a record used up mid-window cuts only its own time.
    #[test]
    fn a_record_covers_at_most_its_visit_count() {
        for requirement in Requirement::ALL {
            let used = requirement.used();
            assert_eq!(used.requirement(), Some(requirement));
            let counted = |n: u32| IntakeInfo {
                record: "intake-2".into(),
                visit_count: n,
                ..record(requirement, "-", None)
            };
            let used_up = |n: u32| Exclusion {
                visits_used: Some(VisitsUsed {
                    record: "intake-2".into(),
                    visit_count: n,
                }),
                ..patient_excluded(used)
            };
            let released = vec![
                visit("FOLLOW_UP", "2026-03-02T10:00:00Z", VisitState::Cancelled),
                visit("FOLLOW_UP", "2026-03-02T11:00:00Z", VisitState::NoShow),
                visit("FOLLOW_UP", "2026-03-02T12:00:00Z", VisitState::Expired),
            ];
            let mut every_counting_state = vec![
                visit("FOLLOW_UP", "2026-03-03T10:00:00Z", VisitState::Held),
                visit("FOLLOW_UP", "2026-03-03T11:00:00Z", VisitState::Booked),
                visit("FOLLOW_UP", "2026-03-03T12:00:00Z", VisitState::CheckedIn),
            ];
            let cases: Vec<VisitCountCase> = vec![
                (
                    "no visit yet",
                    vec![counted(3)],
                    vec![],
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "N-1 visits",
                    vec![counted(3)],
                    booked(2),
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "N visits",
                    vec![counted(3)],
                    booked(3),
                    vec![],
                    vec![used_up(3)],
                ),
                (
                    "held, booked, checked in and completed all count",
                    vec![counted(4)],
                    {
                        every_counting_state.push(visit(
                            "FOLLOW_UP",
                            "2026-03-03T13:00:00Z",
                            VisitState::Completed,
                        ));
                        every_counting_state.clone()
                    },
                    vec![],
                    vec![used_up(4)],
                ),
                (
                    "cancelled, no-show and expired visits are not counted",
                    vec![counted(3)],
                    [booked(2), released.clone()].concat(),
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "visits of visit types it does not cover are not counted",
                    vec![IntakeInfo {
                        visit_types: vec!["FOLLOW_UP".into()],
                        ..counted(1)
                    }],
                    vec![visit(
                        "NEW_PATIENT",
                        "2026-03-02T10:00:00Z",
                        VisitState::Booked,
                    )],
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "a record for all visit types counts every visit type",
                    vec![counted(1)],
                    vec![visit(
                        "NEW_PATIENT",
                        "2026-03-02T10:00:00Z",
                        VisitState::Booked,
                    )],
                    vec![],
                    vec![used_up(1)],
                ),
                (
                    "visits before its period are not counted",
                    vec![IntakeInfo {
                        from: utc("2026-03-05T00:00:00Z"),
                        ..counted(2)
                    }],
                    booked(3),
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "a visit count of 0 is unlimited",
                    vec![counted(0)],
                    booked(5),
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "another record in force with visits left",
                    vec![
                        counted(2),
                        IntakeInfo {
                            record: "intake-3".into(),
                            ..counted(3)
                        },
                    ],
                    booked(2),
                    BASELINE_STARTS.to_vec(),
                    vec![],
                ),
                (
                    "used up until 14:00, then a new record",
                    vec![
                        IntakeInfo {
                            until: Some(at("14:00")),
                            ..counted(1)
                        },
                        IntakeInfo {
                            record: "intake-3".into(),
                            ..record(requirement, "14:00", None)
                        },
                    ],
                    booked(1),
                    vec!["14:00", "14:30"],
                    vec![Exclusion {
                        visits_used: Some(VisitsUsed {
                            record: "intake-2".into(),
                            visit_count: 1,
                        }),
                        ..candidate_excluded("13:00", used)
                    }],
                ),
            ];
            for (case, records, visits, slots, exclusions) in cases {
                let mut q = baseline();
                require(&mut q, &[requirement], records);
                q.patient.visits = visits;
                let result = find_slots(&q);
                expect_starts(&result, &slots);
                assert_eq!(result.excluded, exclusions, "{requirement:?}: {case}");
            }
        }
    }

    #[test]
    fn only_held_booked_checked_in_and_completed_visits_count() {
        use VisitState::*;
        for (state, counts) in [
            (Held, true),
            (Booked, true),
            (CheckedIn, true),
            (Completed, true),
            (Cancelled, false),
            (NoShow, false),
            (Expired, false),
        ] {
            assert_eq!(state.counts(), counts, "{state:?}");
        }
    }
}
