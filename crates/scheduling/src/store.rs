//! The Scheduling slice: how each resource is indexed in the generic store, and the lookups slot
//! search and booking need. Double booking is guarded by [`crate::occupancy`].

use std::collections::HashMap;
use std::sync::Arc;

use pm_api::scheduling::{
    Appointment, AppointmentState, AvailabilityException, AvailabilityRule, Encounter,
    ExceptionKind, Room, VisitModality, VisitType, WaitlistEntry, WaitlistState, Weekday,
};
use pm_runtime::batch::Insert;
use pm_runtime::docstore::{self, Kind, Stored, VerbCall, enum_name};
use pm_runtime::names::NamePattern;
use pm_runtime::{ApiResult, Db};
use sqlx::{AnyConnection, Row};

use crate::availability::WeeklyRule;
use crate::eligibility;

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

/// Appointments, under the organization. State changes only through the appointment verbs. Written
/// only through this module's appointment functions, which keep each one's span
/// (`appointment_spans`) in step with it.
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

/// ALREADY_EXISTS when another live visit type of `unit` has the code of `visit` (codes are what
/// workflow rules name: one per unit).
pub async fn check_visit_type_code_free(
    conn: &mut AnyConnection,
    unit: &str,
    visit: &VisitType,
) -> ApiResult<()> {
    let taken = docstore::find_by_attr::<VisitType>(
        conn,
        &collection(&VISIT_TYPE, unit),
        "code",
        &visit.code,
    )
    .await?
    .into_iter()
    .any(|other| other.resource.name != visit.name);
    if taken {
        return Err(pm_runtime::ApiError::already_exists(
            "VISIT_TYPE_CODE_TAKEN",
            format!("the unit already has a visit type with code {}", visit.code),
        ));
    }
    Ok(())
}

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

/// Writes `a` over the stored appointment if that is still at `revision`, with its span, in the
/// caller's transaction; the appointment as stored.
pub async fn replace_appointment(
    conn: &mut AnyConnection,
    revision: i64,
    a: Appointment,
) -> ApiResult<Appointment> {
    let a = docstore::replace(conn, &APPOINTMENT, revision, a, None).await?;
    write_span(conn, &a).await?;
    Ok(a)
}

/// Inserts a new appointment (its name set) with its span, in the caller's transaction.
pub async fn insert_appointment(
    conn: &mut AnyConnection,
    a: Appointment,
) -> ApiResult<Appointment> {
    let a = docstore::insert(conn, &APPOINTMENT, a).await?;
    write_span(conn, &a).await?;
    Ok(a)
}

/// The statements that insert a new appointment (its name set) and its span, and the appointment as
/// stored: for a write that sends them with others ([`pm_runtime::batch`]).
pub fn appointment_insert_statements(a: Appointment) -> (Appointment, Vec<Insert>) {
    let (stored, mut inserts) = docstore::insert_statements(&APPOINTMENT, a);
    inserts.extend(span_of(&stored).map(|span| span.insert(SPAN_INSERT)));
    (stored, inserts)
}

/// A state change of one live appointment ([`docstore::transition_then`]): `change` mutates it,
/// the new version and its span are stored, then `after` sees it, all in one transaction.
pub async fn transition_appointment<F, A>(
    db: &Db,
    call: VerbCall<'_>,
    change: F,
    after: A,
) -> ApiResult<Appointment>
where
    F: AsyncFnOnce(&mut AnyConnection, &mut Appointment) -> ApiResult<()>,
    A: AsyncFnOnce(&mut AnyConnection, &Appointment) -> ApiResult<()>,
{
    docstore::transition_then(db, &APPOINTMENT, call, change, async move |conn, a| {
        write_span(conn, a).await?;
        after(conn, a).await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Appointment spans: each appointment's time, indexed, so that a calendar reads its window only.

/// An appointment's row of `appointment_spans`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    appointment: String,
    organization: String,
    unit: String,
    provider: String,
    location: String,
    patient: String,
    start_us: i64,
    end_us: i64,
}

/// Inserts a new span (a new appointment).
const SPAN_INSERT: &str = "INSERT INTO appointment_spans \
     (appointment, organization, unit, provider, location, patient, start_us, end_us) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Inserts or moves a span (any write of an appointment).
const SPAN_UPSERT: &str = "INSERT INTO appointment_spans \
     (appointment, organization, unit, provider, location, patient, start_us, end_us) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (appointment) DO UPDATE SET organization = excluded.organization, \
     unit = excluded.unit, provider = excluded.provider, location = excluded.location, \
     patient = excluded.patient, start_us = excluded.start_us, end_us = excluded.end_us";

impl Span {
    fn insert(self, sql: &str) -> Insert {
        Insert::new(
            "appointment_spans",
            sql,
            vec![
                self.appointment.into(),
                self.organization.into(),
                self.unit.into(),
                self.provider.into(),
                self.location.into(),
                self.patient.into(),
                self.start_us.into(),
                self.end_us.into(),
            ],
        )
    }
}

/// The span of `a`; `None` when its interval is not a valid one (no calendar shows it).
fn span_of(a: &Appointment) -> Option<Span> {
    let interval = crate::domain::interval(a.interval.as_ref(), "interval").ok()?;
    Some(Span {
        appointment: a.name.clone(),
        organization: pm_runtime::names::organization_of(&a.name).to_string(),
        unit: a.unit.clone(),
        provider: a.provider.clone(),
        location: a.location.clone(),
        patient: a.patient.clone(),
        start_us: interval.start().timestamp_micros(),
        end_us: interval.end().timestamp_micros(),
    })
}

/// Writes (or moves) the span of `a`, in the caller's transaction; removes it if `a` has no valid
/// interval.
async fn write_span(conn: &mut AnyConnection, a: &Appointment) -> ApiResult<()> {
    match span_of(a) {
        Some(span) => span.insert(SPAN_UPSERT).execute(conn).await,
        None => {
            sqlx::query("DELETE FROM appointment_spans WHERE appointment = $1")
                .bind(a.name.as_str())
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}

/// Whose appointments [`appointments_in_window`] reads.
#[derive(Debug, Clone, Copy)]
pub enum SpanScope<'a> {
    /// Every one of the organization.
    Organization(&'a str),
    /// Those of these units.
    Units(&'a [String]),
    /// Those of this provider.
    Provider(&'a str),
    /// Those at this location.
    Location(&'a str),
    /// Those of this patient.
    Patient(&'a str),
}

/// The live appointments of `scope` whose interval overlaps `[from_us, until_us)` (touching ones
/// excluded), by name, in any state. One range scan of the scope's span index from `from_us` on:
/// the scope's past is not read.
pub async fn appointments_in_window(
    conn: &mut AnyConnection,
    scope: SpanScope<'_>,
    from_us: i64,
    until_us: i64,
) -> ApiResult<Vec<Stored<Appointment>>> {
    let (column, values): (&str, Vec<&str>) = match scope {
        SpanScope::Organization(o) => ("organization", vec![o]),
        SpanScope::Units(units) => ("unit", units.iter().map(String::as_str).collect()),
        SpanScope::Provider(p) => ("provider", vec![p]),
        SpanScope::Location(l) => ("location", vec![l]),
        SpanScope::Patient(p) => ("patient", vec![p]),
    };
    if values.is_empty() {
        return Ok(Vec::new());
    }
    // Placeholders only in the SQL text: the Any driver has no array binds.
    let list = (3..3 + values.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT r.name, r.revision, r.create_time, r.update_time, r.delete_time, r.body \
         FROM appointment_spans s JOIN resources r ON r.name = s.appointment \
         WHERE s.{column} IN ({list}) AND s.end_us > $1 AND s.start_us < $2 \
         AND r.delete_time IS NULL ORDER BY r.name"
    );
    let mut query = sqlx::query(&sql).bind(from_us).bind(until_us);
    for value in values {
        query = query.bind(value);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(docstore::decode_row).collect()
}

/// The patient's visits in `unit` in any state, for the intake records' visit counts
/// ([`eligibility::PriorVisit`]), leaving out the appointment `ignore` (one being moved). A hold
/// whose time has lapsed (not yet marked expired) counts as expired; a visit whose visit type
/// cannot be read (it has a code then, deleted or not) is left out.
pub async fn visits_of_patient(
    conn: &mut AnyConnection,
    patient: &str,
    unit: &str,
    ignore: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<Vec<eligibility::PriorVisit>> {
    use eligibility::VisitState;
    let appointments =
        appointments_in_window(conn, SpanScope::Patient(patient), i64::MIN, i64::MAX).await?;
    let mut codes: HashMap<String, Option<String>> = HashMap::new();
    let mut visits = Vec::new();
    for stored in appointments {
        let a = stored.resource;
        if a.unit != unit || Some(a.name.as_str()) == ignore {
            continue;
        }
        let lapsed = a
            .hold_expire_time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .is_some_and(|t| t <= now);
        let state = match AppointmentState::try_from(a.state) {
            Ok(AppointmentState::Held) if lapsed => VisitState::Expired,
            Ok(AppointmentState::Held) => VisitState::Held,
            Ok(AppointmentState::Booked) => VisitState::Booked,
            Ok(AppointmentState::CheckedIn) => VisitState::CheckedIn,
            Ok(AppointmentState::Completed) => VisitState::Completed,
            Ok(AppointmentState::Cancelled) => VisitState::Cancelled,
            Ok(AppointmentState::NoShow) => VisitState::NoShow,
            Ok(AppointmentState::Expired) => VisitState::Expired,
            Ok(AppointmentState::Unspecified) | Err(_) => continue,
        };
        let Some(start) = a
            .interval
            .as_ref()
            .and_then(|i| i.start_time.as_ref())
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        else {
            continue;
        };
        let code = match codes.get(&a.visit_type) {
            Some(code) => code.clone(),
            None => {
                let code = docstore::get::<VisitType>(conn, &a.visit_type)
                    .await?
                    .map(|v| v.resource.code);
                codes.insert(a.visit_type.clone(), code.clone());
                code
            }
        };
        if let Some(code) = code {
            visits.push(eligibility::PriorVisit { code, start, state });
        }
    }
    Ok(visits)
}

/// Rows per statement of the back-fill (8 values each).
const BACKFILL_CHUNK: usize = 100;

/// Writes the spans of the appointments stored before `appointment_spans` existed, once per slice
/// (a marker row records it, in the same transaction); `Some(rows written)` when this call did it,
/// `None` when it was done already. Appointments that have a span keep it: running it again writes
/// nothing.
pub async fn backfill_spans(db: &Db) -> ApiResult<Option<u64>> {
    async fn done(conn: &mut AnyConnection) -> ApiResult<bool> {
        let done: i64 =
            sqlx::query_scalar("SELECT done FROM appointment_spans_backfill WHERE id = 1")
                .fetch_one(conn)
                .await?;
        Ok(done != 0)
    }
    if done(&mut *db.read().await?).await? {
        return Ok(None);
    }
    let mut tx = db.write("appointment_spans_backfill").await?;
    // Another replica may have done it while this one waited for the lock.
    if done(tx.conn()).await? {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT name, revision, create_time, update_time, delete_time, body FROM resources \
         WHERE collection LIKE 'organizations/%/appointments'",
    )
    .fetch_all(tx.conn())
    .await?;
    let mut spans = Vec::with_capacity(rows.len());
    for row in &rows {
        let stored = docstore::decode_row::<Appointment>(row)?;
        spans.extend(span_of(&stored.resource));
    }
    drop(rows);
    let mut written = 0;
    for chunk in spans.chunks(BACKFILL_CHUNK) {
        let placeholders = (0..chunk.len())
            .map(|i| {
                let n = i * 8;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7,
                    n + 8
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO appointment_spans \
             (appointment, organization, unit, provider, location, patient, start_us, end_us) \
             VALUES {placeholders} ON CONFLICT (appointment) DO NOTHING"
        );
        let mut query = sqlx::query(&sql);
        for span in chunk {
            query = query
                .bind(span.appointment.as_str())
                .bind(span.organization.as_str())
                .bind(span.unit.as_str())
                .bind(span.provider.as_str())
                .bind(span.location.as_str())
                .bind(span.patient.as_str())
                .bind(span.start_us)
                .bind(span.end_us);
        }
        written += query.execute(tx.conn()).await?.rows_affected();
    }
    sqlx::query("UPDATE appointment_spans_backfill SET done = 1 WHERE id = 1")
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    tracing::info!(
        appointments = spans.len(),
        written,
        "appointment spans back-filled"
    );
    Ok(Some(written))
}

/// The back-fill of [`backfill_spans`] as a service runs it: started at startup, awaited by every
/// read of spans, so that none reads before the appointments older than the table have theirs.
#[derive(Default)]
pub struct SpansReady {
    done: tokio::sync::OnceCell<()>,
}

impl SpansReady {
    /// Returns once the back-fill is done (running it if no one has yet; a failure is returned and
    /// the next call tries again).
    pub async fn ensure(&self, db: &Db) -> ApiResult<()> {
        self.done
            .get_or_try_init(|| async { backfill_spans(db).await.map(|_| ()) })
            .await
            .map(|_| ())
    }
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
