//! Encounters, the event stream and the unified calendar: what the other handlers wrote, read back
//! over a scope of the hierarchy or followed live through the outbox.

use std::collections::{BTreeSet, HashMap};

use pm_api::RpcRequest;
use pm_api::scheduling::calendar_entry::Entry;
use pm_api::scheduling::*;
use pm_authz::layer::Caller;
use pm_runtime::docstore::{self, VerbCall};
use pm_runtime::{ApiError, ApiResult, names};
use tonic::Code;

use super::{SchedulingApi, enter};
use crate::access;
use crate::availability::{self, Interval};
use crate::domain::{self, wire_interval};
use crate::lifecycle::{self, Action};
use crate::occupancy::{self, HolderKind};
use crate::outbox;
use crate::store::{self, ENCOUNTER, SpanScope};
use pm_api::scheduling::scheduling_event::Kind as EventKind;

/// A stream of events as tonic serves it.
pub type EventStream = pm_runtime::outbox::EventStream<SchedulingEvent>;

/// What a calendar covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Organization,
    Unit(String),
    Provider(String),
    Location(String),
    Patient(String),
}

fn scope_of(name: &str) -> ApiResult<Scope> {
    let segments: Vec<&str> = name.split('/').collect();
    let valid = |id: &str| names::is_valid_id(id);
    match segments.as_slice() {
        ["organizations", o] if valid(o) => Ok(Scope::Organization),
        ["organizations", o, collection, id] if valid(o) && valid(id) => match *collection {
            "units" => Ok(Scope::Unit(name.into())),
            "providers" => Ok(Scope::Provider(name.into())),
            "locations" => Ok(Scope::Location(name.into())),
            "patients" => Ok(Scope::Patient(name.into())),
            _ => Err(bad_scope()),
        },
        _ => Err(bad_scope()),
    }
}

fn bad_scope() -> ApiError {
    ApiError::invalid(
        "scope",
        "an organization, or a unit, provider, location or patient of it",
    )
}

/// Which appointments a calendar shows: the scope, cut to the units the caller may see.
#[derive(Clone)]
struct Matcher {
    /// The organization of the scope (the outbox spans every organization).
    organization: String,
    scope: Scope,
    /// Units of the scope's subtree, for a unit scope.
    subtree: Option<BTreeSet<String>>,
    /// Units the caller may see (`None`: all of the organization).
    visible: Option<BTreeSet<String>>,
}

impl Matcher {
    fn matches(&self, a: &Appointment) -> bool {
        let in_scope = match &self.scope {
            Scope::Organization => true,
            Scope::Unit(_) => self.subtree.as_ref().is_some_and(|s| s.contains(&a.unit)),
            Scope::Provider(p) => &a.provider == p,
            Scope::Location(l) => &a.location == l,
            Scope::Patient(p) => &a.patient == p,
        };
        in_scope
            && names::organization_of(&a.name) == self.organization
            && self.visible.as_ref().is_none_or(|v| v.contains(&a.unit))
    }

    /// The units whose availability the calendar shows.
    fn units(&self, tree: &[(String, String)]) -> Vec<String> {
        tree.iter()
            .map(|(unit, _)| unit.clone())
            .filter(|u| self.subtree.as_ref().is_none_or(|s| s.contains(u)))
            .filter(|u| self.visible.as_ref().is_none_or(|v| v.contains(u)))
            .collect()
    }
}

fn subtree(tree: &[(String, String)], root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::from([root.to_string()]);
    loop {
        let before = found.len();
        for (unit, parent) in tree {
            if found.contains(parent) {
                found.insert(unit.clone());
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Whether the appointment holds its time now ([`lifecycle::State::holds_time`]).
fn active(a: &Appointment) -> bool {
    domain::lifecycle_state(a).holds_time(chrono::Utc::now())
}

impl SchedulingApi {
    /// Completes an appointment: the appointment, its encounter and both events commit together.
    pub(super) async fn complete(
        &self,
        caller: &Caller,
        req: CompleteAppointmentRequest,
    ) -> ApiResult<CompleteAppointmentResponse> {
        let method = <CompleteAppointmentRequest as RpcRequest>::METHOD;
        self.check_appointment(caller, method, &req.name).await?;
        if !(0..=1440).contains(&req.care_minutes) {
            return Err(ApiError::invalid("care_minutes", "from 0 to 1440"));
        }
        for (field, codes) in [
            ("service_codes", &req.service_codes),
            ("diagnoses", &req.diagnoses),
        ] {
            if let Some(i) = codes.iter().position(|c| {
                c.is_empty()
                    || c.len() > 10
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
            }) {
                return Err(ApiError::invalid(
                    format!("{field}[{i}]"),
                    "1 to 10 letters, digits or dots",
                ));
            }
        }
        domain::validate_service_lines(&req.service_lines, req.diagnoses.len())?;
        let current = store::appointment(&self.db, &req.name).await?;
        let hints = {
            let mut conn = self.db.read().await?;
            store::billing_code_hints(&mut conn, &current.visit_type).await?
        };
        let call = VerbCall {
            method,
            name: &req.name,
            etag: &req.etag,
            request_id: "",
            request_hash: String::new(),
        };
        let mut encounter = None;
        let appointment = store::transition_appointment(
            &self.db,
            call,
            async |conn, a| {
                let state = domain::lifecycle_state(a);
                let transition = lifecycle::apply(state, Action::Complete, chrono::Utc::now())?;
                enter(conn, a, transition, "").await
            },
            async |conn, a| {
                let id = a.name.rsplit('/').next().unwrap_or_default();
                let stored = docstore::insert(
                    conn,
                    &ENCOUNTER,
                    Encounter {
                        name: format!("{}/encounters/{id}", names::organization_of(&a.name)),
                        appointment: a.name.clone(),
                        unit: a.unit.clone(),
                        patient: a.patient.clone(),
                        provider: a.provider.clone(),
                        location: a.location.clone(),
                        visit_type: a.visit_type.clone(),
                        interval: a.interval,
                        service_codes: if req.service_codes.is_empty() {
                            hints.clone()
                        } else {
                            req.service_codes.clone()
                        },
                        diagnoses: req.diagnoses.clone(),
                        care_minutes: req.care_minutes,
                        service_lines: req.service_lines.clone(),
                        payer: a.payer.clone(),
                        ..Default::default()
                    },
                )
                .await?;
                outbox::append(conn, EventKind::EncounterCompleted(stored.clone())).await?;
                self.publish(conn, caller, method, a).await?;
                encounter = Some(stored);
                Ok(())
            },
        )
        .await?;
        self.events.committed();
        Ok(CompleteAppointmentResponse {
            appointment: Some(appointment),
            encounter,
        })
    }

    pub(super) async fn encounter(&self, caller: &Caller, name: &str) -> ApiResult<Encounter> {
        ENCOUNTER.pattern.parse("name", name)?;
        self.check_stored(
            caller,
            <GetEncounterRequest as RpcRequest>::METHOD,
            name,
            |e: Encounter| e.unit,
        )
        .await?;
        store::encounter(&self.db, name).await
    }

    /// The whole outbox, for services (Billing) only: it spans every organization.
    pub(super) async fn events(&self, caller: &Caller, after: i64) -> ApiResult<EventStream> {
        if !caller.is_service() {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                "the event stream is for services; people follow WatchCalendar",
            ));
        }
        if after < 0 {
            return Err(ApiError::invalid("after_sequence", "must not be negative"));
        }
        Ok(self.events.stream(after, |_| true))
    }

    /// Authorizes a calendar over `scope` and works out what it shows.
    async fn matcher(&self, caller: &Caller, method: &str, scope_name: &str) -> ApiResult<Matcher> {
        let scope = scope_of(scope_name)?;
        let organization = names::organization_of(scope_name).to_string();
        let unit = match &scope {
            Scope::Unit(u) => Some(u.as_str()),
            _ => None,
        };
        access::authorize(&self.org, caller, method, scope_name, unit).await?;
        let visible = access::visible_units(&self.org, caller, method, &organization)
            .await?
            .map(|v| v.into_iter().collect());
        let subtree = match &scope {
            Scope::Unit(u) => Some(subtree(&self.org.unit_tree(&organization).await?, u)),
            _ => None,
        };
        Ok(Matcher {
            organization,
            scope,
            subtree,
            visible,
        })
    }

    pub(super) async fn calendar(
        &self,
        caller: &Caller,
        req: &ListCalendarRequest,
    ) -> ApiResult<ListCalendarResponse> {
        let method = <ListCalendarRequest as RpcRequest>::METHOD;
        let window = domain::interval(req.window.as_ref(), "window")?;
        if window.duration() > domain::MAX_WINDOW {
            return Err(ApiError::invalid("window", "at most 31 days"));
        }
        let matcher = self.matcher(caller, method, &req.scope).await?;
        let organization = names::organization_of(&req.scope).to_string();
        // The appointments older than the spans table have theirs (once, at startup).
        self.spans.ensure(&self.db).await?;
        let mut conn = self.db.read().await?;
        let sequence = outbox::head(&mut conn).await?;

        // Only the window's appointments are read (by an index on their end): not the scope's
        // history, which grows every day the clinic runs.
        let units: Vec<String> = matcher.subtree.iter().flatten().cloned().collect();
        let which = match &matcher.scope {
            Scope::Organization => SpanScope::Organization(&organization),
            Scope::Unit(_) => SpanScope::Units(&units),
            Scope::Provider(p) => SpanScope::Provider(p),
            Scope::Location(l) => SpanScope::Location(l),
            Scope::Patient(p) => SpanScope::Patient(p),
        };
        let appointments = store::appointments_in_window(
            &mut conn,
            which,
            window.start().timestamp_micros(),
            window.end().timestamp_micros(),
        )
        .await?;
        let mut entries: Vec<(i64, CalendarEntry)> = Vec::new();
        for a in appointments.into_iter().map(|s| s.resource) {
            let Ok(interval) = domain::interval(a.interval.as_ref(), "interval") else {
                continue;
            };
            let overlaps = interval.start() < window.end() && window.start() < interval.end();
            if overlaps && matcher.matches(&a) && (req.show_inactive || active(&a)) {
                entries.push((
                    interval.start().timestamp(),
                    CalendarEntry {
                        entry: Some(Entry::Appointment(a)),
                    },
                ));
            }
        }

        // Open and blocked time: the rules of the scope's units (none for a patient's calendar).
        if !matches!(matcher.scope, Scope::Patient(_)) {
            let tree = self.org.unit_tree(&organization).await?;
            let mut providers_seen = BTreeSet::new();
            let mut busy_of: HashMap<String, Vec<Interval>> = HashMap::new();
            for unit in matcher.units(&tree) {
                for rule in store::rules_of_unit(&mut conn, &unit).await? {
                    let provider = names::parent_of(&rule.name).to_string();
                    let keep = match &matcher.scope {
                        Scope::Provider(p) => &provider == p,
                        Scope::Location(l) => &rule.location == l,
                        _ => true,
                    };
                    if !keep {
                        continue;
                    }
                    let exceptions = store::exceptions_of(&mut conn, &provider).await?;
                    let blocks = exceptions
                        .iter()
                        .map(domain::exception)
                        .collect::<ApiResult<Vec<_>>>()?;
                    let open = availability::expand(
                        &[domain::weekly_rule(&rule)?],
                        &blocks,
                        window.start(),
                        window.end(),
                    );
                    // Free time: what the provider's booked and held visits (anywhere) leave.
                    let open = if req.raw_availability {
                        open
                    } else {
                        if !busy_of.contains_key(&provider) {
                            let busy = busy_time(&mut conn, &provider, window).await?;
                            busy_of.insert(provider.clone(), busy);
                        }
                        let busy = busy_of
                            .get(&provider)
                            .map(Vec::as_slice)
                            .unwrap_or_default();
                        availability::free_time(&open, busy)
                    };
                    for interval in open {
                        entries.push((
                            interval.start().timestamp(),
                            CalendarEntry {
                                entry: Some(Entry::Availability(AvailabilityBlock {
                                    provider: provider.clone(),
                                    unit: unit.clone(),
                                    location: rule.location.clone(),
                                    interval: Some(wire_interval(interval)),
                                })),
                            },
                        ));
                    }
                    if providers_seen.insert(provider.clone()) {
                        for e in exceptions {
                            let Ok(span) = domain::interval(e.interval.as_ref(), "interval") else {
                                continue;
                            };
                            if let Some(clipped) = clip(span, window) {
                                entries.push((
                                    clipped.start().timestamp(),
                                    CalendarEntry {
                                        entry: Some(Entry::Blocked(BlockedTime {
                                            provider: provider.clone(),
                                            kind: e.kind,
                                            interval: Some(wire_interval(clipped)),
                                        })),
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        entries.sort_by_key(|(start, _)| *start);
        Ok(ListCalendarResponse {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            sequence,
        })
    }

    pub(super) async fn watch(
        &self,
        caller: &Caller,
        req: &WatchCalendarRequest,
    ) -> ApiResult<EventStream> {
        let method = <WatchCalendarRequest as RpcRequest>::METHOD;
        if req.after_sequence < 0 {
            return Err(ApiError::invalid("after_sequence", "must not be negative"));
        }
        let matcher = self.matcher(caller, method, &req.scope).await?;
        let after = if req.after_sequence == 0 {
            let mut conn = self.db.read().await?;
            outbox::head(&mut conn).await?
        } else {
            req.after_sequence
        };
        Ok(self.events.stream(after, move |event| match &event.kind {
            Some(EventKind::AppointmentChanged(a)) => matcher.matches(a),
            _ => false,
        }))
    }
}

/// The time `provider`'s booked and held appointments occupy in `window`, buffers included (lapsed
/// holds are not busy): the occupancy guard's own rows.
async fn busy_time(
    conn: &mut sqlx::AnyConnection,
    provider: &str,
    window: Interval,
) -> ApiResult<Vec<Interval>> {
    let spans = occupancy::busy(
        conn,
        HolderKind::Provider,
        &[provider.to_string()],
        window.start().timestamp_micros(),
        window.end().timestamp_micros(),
    )
    .await?;
    Ok(spans
        .into_values()
        .flatten()
        .filter_map(|(_, start, end)| {
            let start = chrono::DateTime::from_timestamp_micros(start)?;
            let end = chrono::DateTime::from_timestamp_micros(end)?;
            Interval::new(start, end).ok()
        })
        .collect())
}

fn clip(span: Interval, window: Interval) -> Option<Interval> {
    let start = span.start().max(window.start());
    let end = span.end().min(window.end());
    Interval::new(start, end).ok()
}
