//! Slot search as the service runs it, for FindSlots and for the re-check of every booking: Org's
//! facts (the unit's policy, the patient's enrollment and coverage, credentials) and this slice's
//! rows (rules, exceptions, booked time) are gathered side by side, then the eligibility rules run
//! over the window a day at a time, earliest first, until enough slots are found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use pm_api::scheduling::{Appointment, VisitType};
use pm_runtime::{ApiError, ApiResult};
use sqlx::AnyConnection;

use super::{SchedulingApi, refusal};
use crate::availability::{self, Exception, Interval, WeeklyRule};
use crate::domain;
use crate::eligibility::{self, Reason, Subject};
use crate::occupancy::{self, HolderKind};
use crate::store::{self, SearchRule};

/// A slot search as the service runs it (FindSlots, and the re-check of every booking).
pub(super) struct Search<'a> {
    pub(super) unit: &'a str,
    pub(super) patient: &'a str,
    pub(super) visit: &'a VisitType,
    pub(super) window: Interval,
    pub(super) providers: &'a [String],
    pub(super) locations: &'a [String],
    pub(super) rooms: &'a [String],
    pub(super) step: TimeDelta,
    /// An appointment whose own time does not count as busy (the one being rescheduled).
    pub(super) ignore: Option<&'a str>,
    /// Stop once this many slots are found (0: no limit); the earliest are found first.
    pub(super) limit: usize,
    /// Whether the provider's and the patient's booked time is read (slot search). A booking's
    /// re-check leaves it to the occupancy guard in its own transaction, which has the last word
    /// anyway: a read here would only refuse earlier what the guard refuses too.
    pub(super) read_busy: bool,
}

/// Slots found, each with its location, and the exclusions.
#[derive(Default)]
pub(super) struct Found {
    pub(super) slots: Vec<(String, eligibility::Slot)>,
    pub(super) excluded: Vec<eligibility::Exclusion>,
}

/// What a search reads from this slice, before any rule runs.
struct SliceRows {
    /// The rules that apply, by location, then provider.
    rules: BTreeMap<String, BTreeMap<String, Vec<WeeklyRule>>>,
    /// Those rules' providers, each once.
    providers: Vec<String>,
    /// The exceptions of those providers.
    exceptions: HashMap<String, Vec<Exception>>,
    /// Their booked time (empty when the search does not read it).
    provider_busy: HashMap<String, Vec<(String, i64, i64)>>,
    /// The patient's booked time (likewise).
    patient_busy: Vec<Interval>,
}

/// A provider at a location, its availability expanded only as far as the search has got: most
/// searches stop within the first day or two of a long window.
struct Candidate {
    provider: String,
    credentials: Vec<eligibility::CredentialInfo>,
    busy: Vec<Interval>,
    rules: Vec<WeeklyRule>,
    exceptions: Vec<Exception>,
    /// Availability from the padded window's start up to `horizon`.
    expanded: Vec<Interval>,
    horizon: DateTime<Utc>,
}

impl Candidate {
    /// The availability blocks that belong to the day `[day_start, day_end)` (a block belongs to
    /// the day it starts in; the first day also takes those starting in the padding before it), each
    /// block whole.
    fn blocks_of_day(
        &mut self,
        padded: Interval,
        day_start: DateTime<Utc>,
        day_end: DateTime<Utc>,
        first: bool,
    ) -> Vec<Interval> {
        // Expanded far enough when the horizon is a day past the day's end, and no block used
        // today runs into the horizon (where expansion clips it): doubling the span each time
        // keeps the total work within twice one expansion of the whole window.
        let needed = day_end + TimeDelta::days(1);
        while self.horizon < padded.end()
            && (self.horizon < needed
                || self
                    .expanded
                    .iter()
                    .any(|b| b.start() < day_end && b.end() >= self.horizon))
        {
            let span = (self.horizon - padded.start()).max(TimeDelta::days(2));
            self.horizon = (padded.start() + span * 2).min(padded.end());
            self.expanded =
                availability::expand(&self.rules, &self.exceptions, padded.start(), self.horizon);
        }
        self.expanded
            .iter()
            .filter(|b| (first || b.start() >= day_start) && b.start() < day_end)
            .copied()
            .collect()
    }
}

impl SchedulingApi {
    /// Runs slot search against Org's current facts and this slice's rows.
    pub(super) async fn search(&self, s: Search<'_>) -> ApiResult<Found> {
        let visit = domain::visit_type(s.visit);
        let padded = Interval::new(
            s.window.start() - visit.buffer_before,
            s.window.end() + visit.buffer_after,
        )
        .map_err(|e| ApiError::internal("padding the window", &e))?;
        let span = (
            padded.start().timestamp_micros(),
            padded.end().timestamp_micros(),
        );
        // Org's answers and this slice's rows do not depend on each other: side by side.
        let (unit, mut patient, rows) = tokio::try_join!(
            self.org.unit(s.unit),
            self.org.patient(s.patient, s.unit),
            self.slice_rows(&s, span),
        )?;
        // The visits the intake records count, read only when one of them has a visit count.
        if counts_visits(&patient) {
            let mut conn = self.db.read().await?;
            patient.visits =
                store::visits_of_patient(&mut conn, s.patient, s.unit, s.ignore, Utc::now())
                    .await?;
        }
        // The patient-level rules first: when one fails there is nothing to do per provider.
        let query = |providers, rooms, patient_busy| eligibility::SlotQuery {
            unit: unit.policy.clone(),
            visit_type: visit.clone(),
            window: s.window,
            step: s.step,
            patient: patient.clone(),
            patient_busy,
            providers,
            rooms,
        };
        let verdict = eligibility::find_slots(&query(Vec::new(), Vec::new(), Vec::new()));
        if !verdict.excluded.is_empty() {
            return Ok(Found {
                slots: Vec::new(),
                excluded: verdict.excluded,
            });
        }

        let providers = &rows.providers;
        let credentials: HashMap<String, Vec<eligibility::CredentialInfo>> = providers
            .iter()
            .cloned()
            .zip(
                futures::future::try_join_all(providers.iter().map(|p| self.org.credentials(p)))
                    .await?,
            )
            .collect();
        let mut locations = Vec::new();
        let mut conn = None;
        for (location, by_provider) in rows.rules {
            let rooms = if visit.needs_room {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(self.db.read().await?),
                };
                self.rooms(conn, &location, s.rooms, span, s.ignore).await?
            } else {
                Vec::new()
            };
            let candidates: Vec<Candidate> = by_provider
                .into_iter()
                .map(|(provider, rules)| Candidate {
                    credentials: credentials.get(&provider).cloned().unwrap_or_default(),
                    busy: intervals(rows.provider_busy.get(&provider), s.ignore),
                    exceptions: rows.exceptions.get(&provider).cloned().unwrap_or_default(),
                    rules,
                    expanded: Vec::new(),
                    horizon: padded.start(),
                    provider,
                })
                .collect();
            locations.push((location, candidates, rooms));
        }
        drop(conn);

        let mut found = Found::default();
        let mut day_end = s.window.start();
        while day_end < s.window.end() && (s.limit == 0 || found.slots.len() < s.limit) {
            let day_start = day_end;
            day_end = (day_start + TimeDelta::days(1)).min(s.window.end());
            let first = day_start == s.window.start();
            for (location, candidates, rooms) in &mut locations {
                let providers = candidates
                    .iter_mut()
                    .map(|c| eligibility::ProviderCandidate {
                        availability: c.blocks_of_day(padded, day_start, day_end, first),
                        provider: c.provider.clone(),
                        credentials: c.credentials.clone(),
                        busy: c.busy.clone(),
                    })
                    .collect();
                let result = eligibility::find_slots(&query(
                    providers,
                    rooms.clone(),
                    rows.patient_busy.clone(),
                ));
                found.slots.extend(
                    result
                        .slots
                        .into_iter()
                        .map(|slot| (location.clone(), slot)),
                );
                found.excluded.extend(result.excluded);
            }
        }
        found.excluded = explain(found.excluded, &found.slots);
        // A provider asked for by name never disappears silently.
        for provider in s.providers {
            if !providers.contains(provider) {
                found.excluded.push(eligibility::Exclusion::new(
                    Subject::Provider(provider.clone()),
                    Reason::OutsideAvailability,
                ));
            }
        }
        found.slots.sort_by(|a, b| {
            (a.1.interval.start(), &a.1.provider).cmp(&(b.1.interval.start(), &b.1.provider))
        });
        Ok(found)
    }

    /// The rows of this slice a search needs, over the padded window `(from, until)`.
    async fn slice_rows(&self, s: &Search<'_>, (from, until): (i64, i64)) -> ApiResult<SliceRows> {
        let mut conn = self.db.read().await?;
        // A unit's rules come from the versioned cache, then its providers' exceptions; named
        // providers (a booking's re-check) read only theirs, rules and exceptions in one query.
        let (rules, read_exceptions) = if s.providers.is_empty() {
            (self.rules.rules_of_unit(&mut conn, s.unit).await?, None)
        } else {
            let (rules, exceptions) =
                store::availability_of_providers(&mut conn, s.providers, s.unit).await?;
            let rules = rules.iter().map(SearchRule::of).collect::<ApiResult<_>>()?;
            (Arc::new(rules), Some(exceptions))
        };
        let mut by_location: BTreeMap<String, BTreeMap<String, Vec<WeeklyRule>>> = BTreeMap::new();
        for rule in rules.iter().filter(|r| wanted(s, r)) {
            by_location
                .entry(rule.location.clone())
                .or_default()
                .entry(rule.provider.clone())
                .or_default()
                .push(rule.weekly.clone());
        }
        let providers = distinct(rules.iter().filter(|r| wanted(s, r)));
        let stored_exceptions = match read_exceptions {
            Some(exceptions) => exceptions,
            None => store::exceptions_of_all(&mut conn, &providers).await?,
        };
        let mut exceptions = HashMap::new();
        for (provider, stored) in stored_exceptions {
            let decoded = stored
                .iter()
                .map(domain::exception)
                .collect::<ApiResult<Vec<_>>>()?;
            exceptions.insert(provider, decoded);
        }
        let (provider_busy, patient_busy) = if s.read_busy {
            (
                occupancy::busy(&mut conn, HolderKind::Provider, &providers, from, until).await?,
                busy_of(
                    &mut conn,
                    HolderKind::Patient,
                    s.patient,
                    from,
                    until,
                    s.ignore,
                )
                .await?,
            )
        } else {
            Default::default()
        };
        Ok(SliceRows {
            rules: by_location,
            providers,
            exceptions,
            provider_busy,
            patient_busy,
        })
    }

    /// The rooms of `location` (only `wanted` ones when given) with their booked time.
    async fn rooms(
        &self,
        conn: &mut AnyConnection,
        location: &str,
        wanted: &[String],
        (from, until): (i64, i64),
        ignore: Option<&str>,
    ) -> ApiResult<Vec<eligibility::RoomCandidate>> {
        let mut rooms = Vec::new();
        for room in store::rooms_of(conn, location).await? {
            if wanted.is_empty() || wanted.contains(&room.name) {
                rooms.push(eligibility::RoomCandidate {
                    busy: busy_of(conn, HolderKind::Room, &room.name, from, until, ignore).await?,
                    room: room.name,
                });
            }
        }
        Ok(rooms)
    }

    /// Re-checks every rule for the appointment about to be booked and returns the slot.
    pub(super) async fn recheck(
        &self,
        a: &Appointment,
        visit: &VisitType,
        ignore: Option<&str>,
    ) -> ApiResult<eligibility::Slot> {
        let start = domain::start_of(a)?;
        let duration = domain::visit_type(visit).duration;
        let window = Interval::new(start, start + duration)
            .map_err(|e| ApiError::internal("the visit's interval", &e))?;
        let rooms: Vec<String> = (!a.room.is_empty())
            .then(|| a.room.clone())
            .into_iter()
            .collect();
        let found = self
            .search(Search {
                unit: &a.unit,
                patient: &a.patient,
                visit,
                window,
                providers: std::slice::from_ref(&a.provider),
                locations: std::slice::from_ref(&a.location),
                rooms: &rooms,
                step: TimeDelta::minutes(1),
                ignore,
                limit: 0,
                read_busy: false,
            })
            .await?;
        if let Some((_, slot)) = found
            .slots
            .into_iter()
            .find(|(_, slot)| slot.interval.start() == start)
        {
            return Ok(slot);
        }
        Err(refusal(found.excluded.first()))
    }
}

/// Whether any intake record of the patient's enrollment covers a limited number of visits.
pub(super) fn counts_visits(patient: &eligibility::PatientContext) -> bool {
    patient
        .enrollment
        .as_ref()
        .is_some_and(|e| e.intake.iter().any(|r| r.visit_count > 0))
}

async fn busy_of(
    conn: &mut AnyConnection,
    kind: HolderKind,
    holder: &str,
    from: i64,
    until: i64,
    ignore: Option<&str>,
) -> ApiResult<Vec<Interval>> {
    let spans = occupancy::busy(conn, kind, &[holder.to_string()], from, until).await?;
    Ok(intervals(spans.get(holder), ignore))
}

/// The exclusions of a search done a day at a time: one per (provider, reason), the earliest; and a
/// provider-wide one (no candidate that day) only for a provider that got nothing anywhere.
fn explain(
    excluded: Vec<eligibility::Exclusion>,
    slots: &[(String, eligibility::Slot)],
) -> Vec<eligibility::Exclusion> {
    let provider_of = |e: &eligibility::Exclusion| match &e.subject {
        Subject::Provider(p) | Subject::Candidate { provider: p, .. } => Some(p.clone()),
        Subject::Patient => None,
    };
    let active: std::collections::BTreeSet<String> = slots
        .iter()
        .map(|(_, slot)| slot.provider.clone())
        .chain(
            excluded
                .iter()
                .filter(|e| matches!(e.subject, Subject::Candidate { .. }))
                .filter_map(provider_of),
        )
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    excluded
        .into_iter()
        .filter(|e| {
            let provider = provider_of(e);
            let provider_wide = matches!(e.subject, Subject::Provider(_));
            !(provider_wide && provider.as_ref().is_some_and(|p| active.contains(p)))
                && seen.insert((provider, provider_wide, e.reason))
        })
        .collect()
}

/// Whether the search asks for the rule's provider and location (no filter: every one).
fn wanted(s: &Search<'_>, rule: &SearchRule) -> bool {
    (s.providers.is_empty() || s.providers.contains(&rule.provider))
        && (s.locations.is_empty() || s.locations.contains(&rule.location))
}

/// The providers of `rules`, each once, in order.
fn distinct<'r>(rules: impl Iterator<Item = &'r SearchRule>) -> Vec<String> {
    rules
        .map(|r| r.provider.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Occupied spans as intervals, leaving out those of the appointment `ignore`.
fn intervals(spans: Option<&Vec<(String, i64, i64)>>, ignore: Option<&str>) -> Vec<Interval> {
    spans
        .into_iter()
        .flatten()
        .filter(|(appointment, _, _)| Some(appointment.as_str()) != ignore)
        .filter_map(|(_, start, end)| {
            let start = chrono::DateTime::from_timestamp_micros(*start)?;
            let end = chrono::DateTime::from_timestamp_micros(*end)?;
            Interval::new(start, end).ok()
        })
        .collect()
}
