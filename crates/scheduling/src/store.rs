//! The Scheduling slice: how each resource is indexed in the generic store, and the lookups slot
//! search and booking need. Double booking is guarded by [`crate::occupancy`].

use std::collections::HashMap;
use std::sync::Arc;

use pm_api::scheduling::{
    Appointment, AppointmentState, AvailabilityException, AvailabilityRule, Encounter,
    ExceptionKind, Room, VisitModality, VisitType, WaitlistEntry, WaitlistState, Weekday,
};
use pm_runtime::docstore::{self, Kind, Stored, enum_name};
use pm_runtime::names::NamePattern;
use pm_runtime::{ApiResult, Db};
use sqlx::{AnyConnection, Row};

use crate::availability::WeeklyRule;

/// Visit types, under a unit.
pub const VISIT_TYPE: Kind<VisitType> = Kind {
    pattern: NamePattern(&["organizations", "units", "visitTypes"]),
    field: "visit_type",
    // The unit is Org's: its existence is checked by asking Org.
    local_parent: false,
    filterable: &["code", "modality", "pathway_step"],
    protected: &["code"],
    attrs: |v| {
        vec![
            ("code", v.code.clone()),
            (
                "modality",
                enum_name(v.modality, VisitModality::as_str_name),
            ),
            ("pathway_step", v.pathway_step.clone()),
        ]
    },
};

/// Weekly availability rules, under a provider.
pub const AVAILABILITY_RULE: Kind<AvailabilityRule> = Kind {
    pattern: NamePattern(&["organizations", "providers", "availabilityRules"]),
    field: "availability_rule",
    local_parent: false,
    filterable: &["unit", "location", "weekday"],
    protected: &["unit", "location", "time_zone"],
    attrs: |r| {
        vec![
            ("unit", r.unit.clone()),
            // Slot search finds every rule of a unit across providers by this attribute.
            ("rule_unit", r.unit.clone()),
            ("location", r.location.clone()),
            ("weekday", enum_name(r.weekday, Weekday::as_str_name)),
        ]
    },
};

/// Availability exceptions, under a provider.
pub const AVAILABILITY_EXCEPTION: Kind<AvailabilityException> = Kind {
    pattern: NamePattern(&["organizations", "providers", "availabilityExceptions"]),
    field: "availability_exception",
    local_parent: false,
    filterable: &["kind"],
    protected: &[],
    attrs: |e| vec![("kind", enum_name(e.kind, ExceptionKind::as_str_name))],
};

/// Rooms, under a location.
pub const ROOM: Kind<Room> = Kind {
    pattern: NamePattern(&["organizations", "locations", "rooms"]),
    field: "room",
    local_parent: false,
    filterable: &["display_name"],
    protected: &[],
    attrs: |r| vec![("display_name", r.display_name.clone())],
};

/// Appointments, under the organization. State changes only through the appointment verbs.
pub const APPOINTMENT: Kind<Appointment> = Kind {
    pattern: NamePattern(&["organizations", "appointments"]),
    field: "appointment",
    local_parent: false,
    filterable: &["unit", "patient", "provider", "location", "state"],
    protected: &[
        "unit",
        "patient",
        "provider",
        "location",
        "room",
        "visit_type",
        "interval",
        "state",
        "hold_expire_time",
        "payer",
        "history",
    ],
    attrs: |a| {
        vec![
            ("unit", a.unit.clone()),
            ("patient", a.patient.clone()),
            ("provider", a.provider.clone()),
            ("location", a.location.clone()),
            ("state", enum_name(a.state, AppointmentState::as_str_name)),
        ]
    },
};

/// Encounters, under the organization; one per completed appointment, named after it.
pub const ENCOUNTER: Kind<Encounter> = Kind {
    pattern: NamePattern(&["organizations", "encounters"]),
    field: "encounter",
    local_parent: false,
    filterable: &["unit", "patient", "provider", "appointment"],
    protected: &[],
    attrs: |e| {
        vec![
            ("unit", e.unit.clone()),
            ("patient", e.patient.clone()),
            ("provider", e.provider.clone()),
            ("appointment", e.appointment.clone()),
        ]
    },
};

/// Waitlist entries, under the organization. State changes only through promotion.
pub const WAITLIST_ENTRY: Kind<WaitlistEntry> = Kind {
    pattern: NamePattern(&["organizations", "waitlistEntries"]),
    field: "waitlist_entry",
    local_parent: false,
    filterable: &["unit", "patient", "state"],
    protected: &["state", "offered_appointment"],
    attrs: |w| {
        vec![
            ("unit", w.unit.clone()),
            ("patient", w.patient.clone()),
            ("state", enum_name(w.state, WaitlistState::as_str_name)),
        ]
    },
};

/// `{parent}/{collection id of kind}`.
pub fn collection<T>(kind: &Kind<T>, parent: &str) -> String {
    format!("{parent}/{}", kind.pattern.collection_id())
}

/// The appointment `name`, deleted or not; NOT_FOUND (INVALID_ARGUMENT for a malformed name) when
/// there is none.
pub async fn appointment(db: &Db, name: &str) -> ApiResult<Appointment> {
    docstore::get_by_name(db, &APPOINTMENT, name).await
}

/// The appointment `name` with its revision, unless missing or deleted, in the caller's
/// transaction.
pub async fn live_appointment(
    conn: &mut AnyConnection,
    name: &str,
) -> ApiResult<Option<Stored<Appointment>>> {
    docstore::get_live::<Appointment>(conn, name).await
}

/// Writes `a` over the stored appointment if that is still at `revision`, in the caller's
/// transaction; the appointment as stored.
pub async fn replace_appointment(
    conn: &mut AnyConnection,
    revision: i64,
    a: Appointment,
) -> ApiResult<Appointment> {
    docstore::replace(conn, &APPOINTMENT, revision, a, None).await
}

/// Which of an organization's live appointments [`appointments_of`] reads: all, or those whose
/// indexed attribute (`provider`, `location` or `patient`) has a value.
#[derive(Debug, Clone, Copy)]
pub enum AppointmentsOf<'a> {
    /// Every one.
    All,
    /// Those of this provider.
    Provider(&'a str),
    /// Those at this location.
    Location(&'a str),
    /// Those of this patient.
    Patient(&'a str),
}

/// The live appointments of `organization` that `which` selects.
pub async fn appointments_of(
    conn: &mut AnyConnection,
    organization: &str,
    which: AppointmentsOf<'_>,
) -> ApiResult<Vec<Stored<Appointment>>> {
    let appointments = collection(&APPOINTMENT, organization);
    let (attr, value) = match which {
        AppointmentsOf::All => {
            return docstore::all_live::<Appointment>(conn, &appointments).await;
        }
        AppointmentsOf::Provider(p) => ("provider", p),
        AppointmentsOf::Location(l) => ("location", l),
        AppointmentsOf::Patient(p) => ("patient", p),
    };
    docstore::find_by_attr(conn, &appointments, attr, value).await
}

/// The encounter `name`, deleted or not; NOT_FOUND (INVALID_ARGUMENT for a malformed name) when
/// there is none.
pub async fn encounter(db: &Db, name: &str) -> ApiResult<Encounter> {
    docstore::get_by_name(db, &ENCOUNTER, name).await
}

/// The visit type `name`, unless missing or deleted.
pub async fn live_visit_type(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<VisitType>> {
    Ok(docstore::get_live::<VisitType>(conn, name)
        .await?
        .map(|s| s.resource))
}

/// The billing-code hints of the visit type `name`, deleted or not (an encounter completes a visit
/// booked before its type was deleted); none when it does not exist.
pub async fn billing_code_hints(conn: &mut AnyConnection, name: &str) -> ApiResult<Vec<String>> {
    Ok(docstore::get::<VisitType>(conn, name)
        .await?
        .map(|v| v.resource.billing_code_hints)
        .unwrap_or_default())
}

/// The waitlist entries of `organization` for `unit`, live ones in any state.
pub async fn waitlist_of_unit(
    conn: &mut AnyConnection,
    organization: &str,
    unit: &str,
) -> ApiResult<Vec<Stored<WaitlistEntry>>> {
    let entries = collection(&WAITLIST_ENTRY, organization);
    docstore::find_by_attr::<WaitlistEntry>(conn, &entries, "unit", unit).await
}

/// Every live availability rule for `unit`, across providers.
pub async fn rules_of_unit(
    conn: &mut AnyConnection,
    unit: &str,
) -> ApiResult<Vec<AvailabilityRule>> {
    Ok(
        docstore::find_anywhere_by_attr::<AvailabilityRule>(conn, "rule_unit", unit)
            .await?
            .into_iter()
            .map(|s| s.resource)
            .collect(),
    )
}

/// An availability rule as slot search uses it, decoded once: whose and where it is, and its weekly
/// pattern.
#[derive(Debug, Clone)]
pub struct SearchRule {
    /// The provider it belongs to.
    pub provider: String,
    /// Where the provider works by it.
    pub location: String,
    /// When.
    pub weekly: WeeklyRule,
}

impl SearchRule {
    /// Decodes a stored rule.
    pub fn of(rule: &AvailabilityRule) -> ApiResult<SearchRule> {
        Ok(SearchRule {
            provider: pm_runtime::names::parent_of(&rule.name).to_string(),
            location: rule.location.clone(),
            weekly: crate::domain::weekly_rule(rule)?,
        })
    }
}

/// Which state of a unit's rules a read saw: how many rule rows the unit has (deleted ones
/// included) and the sum of their revisions. Creating a rule adds a row and deleting one bumps its
/// revision, so any change to the unit's rules, by any replica, moves it.
type RulesVersion = (i64, i64);

/// Each unit's rules as last read, decoded, with the version they were read at. A search asks for
/// the version (one aggregate over the unit's index rows) and decodes the rules again only when it
/// moved: decoding a large unit's rules is most of a search's database time.
#[derive(Default)]
pub struct UnitRulesCache {
    units: std::sync::Mutex<HashMap<String, CachedRules>>,
}

/// A unit's rules and the version they were read at.
type CachedRules = (RulesVersion, Arc<Vec<SearchRule>>);

/// Units whose rules are kept (a bound on memory; past it the cache starts over).
const CACHED_UNITS: usize = 1_000;

impl UnitRulesCache {
    /// The live rules of `unit`, current as of this call.
    pub async fn rules_of_unit(
        &self,
        conn: &mut AnyConnection,
        unit: &str,
    ) -> ApiResult<Arc<Vec<SearchRule>>> {
        let version = rules_version(conn, unit).await?;
        let cached = self.units.lock().ok().and_then(|units| {
            units
                .get(unit)
                .filter(|(seen, _)| *seen == version)
                .map(|(_, rules)| Arc::clone(rules))
        });
        if let Some(rules) = cached {
            return Ok(rules);
        }
        // Read after the version: a change in between makes the next search read again.
        let rules = Arc::new(
            rules_of_unit(conn, unit)
                .await?
                .iter()
                .map(SearchRule::of)
                .collect::<ApiResult<Vec<_>>>()?,
        );
        if let Ok(mut units) = self.units.lock() {
            if units.len() >= CACHED_UNITS {
                units.clear();
            }
            units.insert(unit.to_string(), (version, Arc::clone(&rules)));
        }
        Ok(rules)
    }
}

async fn rules_version(conn: &mut AnyConnection, unit: &str) -> ApiResult<RulesVersion> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS rules, CAST(COALESCE(SUM(r.revision), 0) AS BIGINT) AS revisions \
         FROM resource_attrs a JOIN resources r ON r.name = a.name \
         WHERE a.attr = 'rule_unit' AND a.value = $1",
    )
    .bind(unit)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("rules")?, row.try_get("revisions")?))
}

/// The live availability rules of `providers` for `unit`, and each provider's live exceptions, in
/// one query (a booking's re-check).
pub async fn availability_of_providers(
    conn: &mut AnyConnection,
    providers: &[String],
    unit: &str,
) -> ApiResult<(
    Vec<AvailabilityRule>,
    HashMap<String, Vec<AvailabilityException>>,
)> {
    let collections: Vec<String> = providers
        .iter()
        .flat_map(|p| {
            [
                collection(&AVAILABILITY_RULE, p),
                collection(&AVAILABILITY_EXCEPTION, p),
            ]
        })
        .collect();
    let rows = docstore::read_live(conn, &[], &collections).await?;
    let mut rules = Vec::new();
    let mut exceptions = HashMap::new();
    for provider in providers {
        rules.extend(
            rows.in_collection::<AvailabilityRule>(&collection(&AVAILABILITY_RULE, provider))?
                .into_iter()
                .map(|s| s.resource)
                .filter(|r| r.unit == unit),
        );
        let own: Vec<AvailabilityException> = rows
            .in_collection(&collection(&AVAILABILITY_EXCEPTION, provider))?
            .into_iter()
            .map(|s| s.resource)
            .collect();
        if !own.is_empty() {
            exceptions.insert(provider.clone(), own);
        }
    }
    Ok((rules, exceptions))
}

/// A provider's live exceptions.
pub async fn exceptions_of(
    conn: &mut AnyConnection,
    provider: &str,
) -> ApiResult<Vec<AvailabilityException>> {
    Ok(docstore::all_live::<AvailabilityException>(
        conn,
        &collection(&AVAILABILITY_EXCEPTION, provider),
    )
    .await?
    .into_iter()
    .map(|s| s.resource)
    .collect())
}

/// The live exceptions of each of `providers`.
pub async fn exceptions_of_all(
    conn: &mut AnyConnection,
    providers: &[String],
) -> ApiResult<std::collections::HashMap<String, Vec<AvailabilityException>>> {
    let collections: Vec<String> = providers
        .iter()
        .map(|p| collection(&AVAILABILITY_EXCEPTION, p))
        .collect();
    let mut by_provider: std::collections::HashMap<String, Vec<AvailabilityException>> =
        Default::default();
    for stored in docstore::all_live_in::<AvailabilityException>(conn, &collections).await? {
        let provider = pm_runtime::names::parent_of(&stored.resource.name).to_string();
        by_provider
            .entry(provider)
            .or_default()
            .push(stored.resource);
    }
    Ok(by_provider)
}

/// A location's live rooms.
pub async fn rooms_of(conn: &mut AnyConnection, location: &str) -> ApiResult<Vec<Room>> {
    Ok(
        docstore::all_live::<Room>(conn, &collection(&ROOM, location))
            .await?
            .into_iter()
            .map(|s| s.resource)
            .collect(),
    )
}

/// The Org resource whose scope a Scheduling resource inherits (for the shared reference check):
/// a visit type's or rule's unit, an appointment's, encounter's or waitlist entry's unit, a time
/// off's provider, a room's location. `Some(name)` unchanged for a name that is not Scheduling's;
/// `None` for a Scheduling name that does not exist (or is deleted).
pub async fn org_placement(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<String>> {
    let parent = || Some(pm_runtime::names::parent_of(name).to_string());
    Ok(if VISIT_TYPE.pattern.parse("", name).is_ok() {
        docstore::get_live::<VisitType>(conn, name)
            .await?
            .and(parent())
    } else if AVAILABILITY_RULE.pattern.parse("", name).is_ok() {
        docstore::get_live::<AvailabilityRule>(conn, name)
            .await?
            .map(|r| r.resource.unit)
    } else if AVAILABILITY_EXCEPTION.pattern.parse("", name).is_ok() {
        docstore::get_live::<AvailabilityException>(conn, name)
            .await?
            .and(parent())
    } else if ROOM.pattern.parse("", name).is_ok() {
        docstore::get_live::<Room>(conn, name).await?.and(parent())
    } else if APPOINTMENT.pattern.parse("", name).is_ok() {
        docstore::get_live::<Appointment>(conn, name)
            .await?
            .map(|a| a.resource.unit)
    } else if ENCOUNTER.pattern.parse("", name).is_ok() {
        docstore::get_live::<Encounter>(conn, name)
            .await?
            .map(|e| e.resource.unit)
    } else if WAITLIST_ENTRY.pattern.parse("", name).is_ok() {
        docstore::get_live::<WaitlistEntry>(conn, name)
            .await?
            .map(|w| w.resource.unit)
    } else {
        Some(name.to_string())
    })
}
