//! The gRPC surface of the Scheduling service: decode, authorize against the resource's unit, run
//! the domain (slot search, lifecycle rules), write through the store, audit PHI.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use pm_api::RpcRequest;
use pm_api::scheduling::scheduling_service_server::SchedulingService;
use pm_api::scheduling::*;
use pm_authz::layer::Call;
use pm_authz::layer::Caller;
use pm_authz::phi::{Audited, PhiAudit, PhiCall};
use pm_runtime::config::Backend;
use pm_runtime::docstore::{self, ListScope, VerbCall};
use pm_runtime::idempotency;
use pm_runtime::names;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, Db, batch};
use pm_runtime::{create_call, list_call};
use sqlx::AnyConnection;
use tonic::{Code, Request};

use crate::access;
use crate::cache::TtlCache;

use crate::domain::{self, instant, timestamp, wire_interval};
use crate::eligibility::{self, Reason, Subject};
use crate::lifecycle::{self, Action, Transition};
use crate::occupancy::{self, Holder, HolderKind};
use crate::org::OrgView;
use crate::outbox::{self, Outbox};
use crate::store::{
    self, APPOINTMENT, AVAILABILITY_EXCEPTION, AVAILABILITY_RULE, ENCOUNTER, ROOM, VISIT_TYPE,
    WAITLIST_ENTRY,
};
use pm_api::scheduling::scheduling_event::Kind as EventKind;

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "scheduling.pm.dev";

use pm_runtime::names::patterns::{
    LOCATION as LOCATION_NAME, ORGANIZATION as ORGANIZATION_NAME, PATIENT as PATIENT_NAME,
    PROVIDER as PROVIDER_NAME, UNIT as UNIT_NAME,
};

mod changes;
mod feeds;
mod search;

use search::Search;

/// The Scheduling service.
#[derive(Clone)]
pub struct SchedulingApi {
    db: Db,
    org: Arc<OrgView>,
    phi: PhiAudit,
    /// Each unit's availability rules, decoded, for slot search.
    rules: Arc<store::UnitRulesCache>,
    /// Visit types as last read (for [`crate::cache::CACHE_TTL`], as Org's unit policies that
    /// allow them are: a deleted one may still be booked for that long).
    visit_types: Arc<TtlCache<VisitType>>,
    /// Its events: staged by writes, numbered by the outbox's sequencer, read by the streams and
    /// the waitlist follower.
    events: Outbox,
    /// Ends the streams and the background work when the server shuts down.
    shutdown: tokio_util::sync::CancellationToken,
    /// The back-fill of the spans of appointments older than their table, started at startup.
    spans: Arc<store::SpansReady>,
}

use pm_runtime::grpc::{Reply, required};

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    pm_runtime::grpc::reply(result, DOMAIN)
}

impl SchedulingApi {
    /// The service over its slice, asking Org through `org`, auditing PHI through `phi`.
    pub fn new(
        db: Db,
        org: Arc<OrgView>,
        phi: PhiAudit,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let events = Outbox::start(db.clone(), DOMAIN, shutdown.clone());
        let api = Self {
            db,
            org,
            phi,
            rules: Arc::default(),
            visit_types: Arc::default(),
            events,
            shutdown,
            spans: Arc::default(),
        };
        api.spawn_waitlist_worker();
        let ready = api.clone();
        tokio::spawn(async move {
            if let Err(err) = ready.spans.ensure(&ready.db).await {
                tracing::warn!(
                    reason = err.reason,
                    "the back-fill of appointment spans failed; the next calendar read retries it"
                );
            }
        });
        api
    }

    /// A visit type of `unit`, live.
    async fn visit_type_of(&self, unit: &str, name: &str, field: &str) -> ApiResult<VisitType> {
        VISIT_TYPE.pattern.parse(field, name)?;
        if names::parent_of(name) != unit {
            return Err(ApiError::invalid(field, "must be a visit type of the unit"));
        }
        if let Some(visit) = self.visit_types.get(name) {
            return Ok(visit);
        }
        let mut conn = self.db.read().await?;
        let visit = store::live_visit_type(&mut conn, name)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    Code::FailedPrecondition,
                    "VISIT_TYPE_NOT_FOUND",
                    format!("{name} does not exist"),
                )
                .with_violation(field, "does not exist")
            })?;
        self.visit_types.put(name, visit.clone());
        Ok(visit)
    }
}

/// A booking's start: on a whole minute, in the future.
fn check_start(start: chrono::DateTime<Utc>, field: &str) -> ApiResult<()> {
    if start.timestamp() % 60 != 0 || start.timestamp_subsec_nanos() != 0 {
        return Err(ApiError::invalid(field, "must be on a whole minute"));
    }
    if start <= Utc::now() {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "SLOT_IN_THE_PAST",
            format!("{field}: must be in the future"),
        )
        .with_violation(field, "must be in the future"));
    }
    Ok(())
}

/// The appointment as booked in `slot`: a hold for `hold` when given.
fn fill(mut a: Appointment, slot: eligibility::Slot, hold: Option<TimeDelta>) -> Appointment {
    a.interval = Some(wire_interval(slot.interval));
    a.room = slot.room.unwrap_or_default();
    a.payer = slot.payer.unwrap_or_default();
    a.history.clear();
    a.series.clear();
    a.hold_expire_time = hold.map(|ttl| timestamp(Utc::now() + ttl));
    let state = if hold.is_some() {
        AppointmentState::Held
    } else {
        AppointmentState::Booked
    };
    a.state = state as i32;
    a.history.push(event(state, ""));
    a
}

/// Why a booking is refused, from the first rule its slot breaks. An intake requirement names the
/// requirement (`requirement`) and, when expired, since when (`expireTime`), when its visits are
/// used up, the record (`record`, its id on the enrollment) and its count (`visitCount`) in the
/// ErrorInfo.
fn refusal(broken: Option<&eligibility::Exclusion>) -> ApiError {
    if let Some(e) = broken
        && let Some(requirement) = e.reason.requirement()
    {
        let message = if e.visits_used.is_some() {
            "the patient's record of an intake requirement of the unit has covered all its visits"
        } else if e.expired_at.is_some() {
            "the patient's record of an intake requirement of the unit has expired"
        } else {
            "the patient's enrollment has no record of an intake requirement of the unit"
        };
        let mut error = ApiError::new(Code::FailedPrecondition, e.reason.code(), message)
            .with_meta("requirement", requirement.code());
        if let Some(used) = &e.visits_used {
            error = error
                .with_meta("record", used.record.as_str())
                .with_meta("visitCount", used.visit_count.to_string());
        }
        if let Some(expired_at) = e.expired_at {
            error = error.with_meta(
                "expireTime",
                expired_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            );
        }
        return error;
    }
    let (code, message) = match broken.map(|e| e.reason) {
        Some(Reason::ProviderBooked) => ("SLOT_UNAVAILABLE", "the provider is booked then"),
        Some(Reason::PatientBooked) => ("SLOT_UNAVAILABLE", "the patient is booked then"),
        Some(Reason::NoRoomAvailable) => ("SLOT_UNAVAILABLE", "no room is free then"),
        Some(Reason::VisitTypeNotAllowed) => (
            "VISIT_TYPE_NOT_ALLOWED",
            "the unit does not offer this visit type",
        ),
        Some(Reason::PatientNotEnrolled) => (
            "PATIENT_NOT_ENROLLED",
            "the patient has no active enrollment in the unit",
        ),
        Some(Reason::WrongPathwayStep) => (
            "WRONG_PATHWAY_STEP",
            "the visit type serves another care-pathway step than the enrollment's",
        ),
        Some(Reason::PayerNotAccepted) => (
            "PAYER_NOT_ACCEPTED",
            "no coverage accepted by the unit is in force and self-pay is not allowed",
        ),
        Some(Reason::ProviderNotCredentialed) => (
            "PROVIDER_NOT_CREDENTIALED",
            "the provider holds no active credential for the unit at that time",
        ),
        // The intake reasons are answered above.
        Some(Reason::OutsideAvailability) | Some(_) | None => (
            "OUTSIDE_AVAILABILITY",
            "the provider is not available for the unit at that time and location",
        ),
    };
    ApiError::new(Code::FailedPrecondition, code, message)
}

/// The lock scope of a patient's visits counted by intake records: bookings under a record with a
/// visit count count and write under it, so that two racing for the last covered visit do not both
/// win.
fn visits_lock_scope(patient: &str) -> String {
    format!("intake-visits/{patient}")
}

fn event(state: AppointmentState, reason: &str) -> AppointmentEvent {
    AppointmentEvent {
        time: Some(timestamp(Utc::now())),
        state: state as i32,
        reason: reason.to_string(),
    }
}

impl SchedulingApi {
    /// Marks the organization's lapsed holds EXPIRED and frees their time, in a write transaction
    /// of its own under the organization's lock; returns how many it expired. A booking refused by
    /// an overlap calls it, and the waitlist worker's sweep ([`Self::sweep_lapsed_holds`]). Each
    /// expiry is audited as the service's own write.
    async fn expire_lapsed_holds(&self, organization: &str) -> ApiResult<usize> {
        let itself = Caller::itself(crate::NAME);
        let now = Utc::now();
        let mut tx = self.db.write(organization).await?;
        let mut expired = 0;
        let conn = tx.conn();
        // A hold's occupancy rows carry its lapse, indexed: they name the candidates; the
        // appointment itself decides.
        let candidates = occupancy::lapsed(
            conn,
            Some(organization),
            now.timestamp_micros(),
            SWEEP_BATCH,
        )
        .await?;
        for name in candidates {
            let Some(stored) = store::live_appointment(conn, &name).await? else {
                continue;
            };
            let state = domain::lifecycle_state(&stored.resource);
            // Refused: not a hold, or not lapsed after all (confirmed, or its lapse unknown).
            let Ok(transition) = lifecycle::apply(state, Action::Expire, now) else {
                continue;
            };
            let mut a = stored.resource;
            enter(conn, &mut a, transition, "hold lapsed").await?;
            let a = store::replace_appointment(conn, stored.revision, a).await?;
            self.publish(conn, &itself, EXPIRE_HOLD, &a).await?;
            expired += 1;
        }
        tx.commit().await?;
        if expired > 0 {
            self.events.committed();
        }
        Ok(expired)
    }

    /// Marks every lapsed hold of the slice EXPIRED (a batch of organizations at a time), so that
    /// Get and List show a hold expired soon after it lapses, not only once a booking finds it in
    /// the way. The waitlist worker runs it on every turn.
    pub(super) async fn sweep_lapsed_holds(&self) -> ApiResult<usize> {
        let lapsed = {
            let mut conn = self.db.read().await?;
            occupancy::lapsed(&mut conn, None, now_micros(), SWEEP_BATCH).await?
        };
        let organizations: std::collections::BTreeSet<&str> =
            lapsed.iter().map(|a| names::organization_of(a)).collect();
        let mut expired = 0;
        for organization in organizations {
            expired += self.expire_lapsed_holds(organization).await?;
        }
        Ok(expired)
    }
}

/// Lapsed holds one sweep (or one organization's expiry) looks at, at most (the next turn takes
/// the rest).
const SWEEP_BATCH: i64 = 500;

/// The audit trail's name for the service's own change of a lapsed hold to EXPIRED (no RPC asked
/// for it; the last segment's verb gives its FHIR action, update).
const EXPIRE_HOLD: &str = "pm.scheduling.internal/UpdateLapsedHoldExpired";

/// The audit trail's name for the service's own change of a waitlist entry to OFFERED.
const OFFER_WAITLIST: &str = "pm.scheduling.internal/UpdateWaitlistEntryOffered";

/// The time an appointment occupies (buffers included) and who holds it.
fn occupancy_of(a: &Appointment, visit: &VisitType) -> ApiResult<(Vec<Holder>, i64, i64)> {
    let interval = domain::interval(a.interval.as_ref(), "appointment.interval")?;
    let padded = domain::padded(interval, &domain::visit_type(visit))?;
    let mut holders = vec![
        Holder {
            kind: HolderKind::Provider,
            name: a.provider.clone(),
        },
        Holder {
            kind: HolderKind::Patient,
            name: a.patient.clone(),
        },
    ];
    if !a.room.is_empty() {
        holders.push(Holder {
            kind: HolderKind::Room,
            name: a.room.clone(),
        });
    }
    Ok((
        holders,
        padded.start().timestamp_micros(),
        padded.end().timestamp_micros(),
    ))
}

/// Moves `a` along `transition` inside its write transaction: its state, a history entry giving
/// `reason`, and its time. For [`lifecycle::Occupancy::Move`] this frees the old time only: the
/// caller takes the new one, which needs the visit type's buffers.
async fn enter(
    conn: &mut AnyConnection,
    a: &mut Appointment,
    transition: Transition,
    reason: &str,
) -> ApiResult<()> {
    let state = domain::wire_state(transition.to);
    a.state = state as i32;
    a.history.push(event(state, reason));
    match transition.occupancy {
        lifecycle::Occupancy::Keep => {
            // Kept for good: the appointment no longer lapses, like its occupancy rows. (Only a
            // confirmed hold had a lapse to drop.)
            a.hold_expire_time = None;
            occupancy::set_expiry(conn, &a.name, None).await
        }
        lifecycle::Occupancy::Release | lifecycle::Occupancy::Move => {
            occupancy::release(conn, &a.name).await
        }
    }
}

impl SchedulingApi {
    /// Books (or holds) after the re-check; the occupancy rows, the appointment and its audit
    /// record commit together.
    async fn book(&self, caller: &Caller, req: BookAppointmentRequest) -> ApiResult<Appointment> {
        let a = required(req.appointment.clone(), "appointment")?;
        // A check of the request's own shape, so before the lookups of check_booking: it reveals
        // nothing about any resource, and a bad hold_ttl is refused without the work.
        let hold = match req.hold_ttl.as_ref() {
            None => None,
            Some(ttl) => Some(domain::hold_ttl(ttl)?),
        };
        let visit = self
            .check_booking(
                caller,
                <BookAppointmentRequest as RpcRequest>::METHOD,
                &req.parent,
                &a,
            )
            .await?;
        // A retry of a booking that succeeded is refused (its own booking holds the slot, or the
        // request_id's key is taken) and then answered with the first booking: every refusal looks
        // for an earlier answer to its request_id, so the common path spends no lookup on it.
        let slot = match self.recheck(&a, &visit, None).await {
            Ok(slot) => slot,
            Err(err) => return self.replayed(&req).await?.ok_or(err),
        };
        let a = fill(a, slot, hold);
        let booked = match self.insert_booking(caller, &req, a.clone(), &visit).await {
            // Only a lapsed hold (still holding its time until marked expired) may be in the way:
            // mark the organization's lapsed holds expired, and try once more if that freed any.
            Err(err) if err.reason == "SLOT_UNAVAILABLE" => {
                if self.expire_lapsed_holds(&req.parent).await? > 0 {
                    self.insert_booking(caller, &req, a, &visit).await
                } else {
                    Err(err)
                }
            }
            other => other,
        };
        // A concurrent twin of this request_id that committed first refuses this one (its time is
        // taken, or its request_id): the answer is the twin's booking.
        let booked = match booked {
            Ok(booked) => booked,
            Err(err) => return self.replayed(&req).await?.ok_or(err),
        };
        self.events.committed();
        Ok(booked)
    }

    /// Writes the booking: the appointment, its occupancy, its outbox event, its audit record and its
    /// request_id commit together, on PostgreSQL as one statement that takes no lock (the exclusion
    /// constraints refuse an overlap, the unique keys a taken name or request_id), so bookings run
    /// side by side in one round trip each; see [`pm_runtime::batch`].
    async fn insert_booking(
        &self,
        caller: &Caller,
        req: &BookAppointmentRequest,
        mut a: Appointment,
        visit: &VisitType,
    ) -> ApiResult<Appointment> {
        let method = <BookAppointmentRequest as RpcRequest>::METHOD;
        let call = create_call!(*req, method, &req.parent, appointment_id);
        a.name = docstore::new_name(&APPOINTMENT, &call)?;
        let (holders, from, until) = occupancy_of(&a, visit)?;
        let expire = a.hold_expire_time.as_ref().and_then(instant);
        let expire = expire.map(|t| t.timestamp_micros());
        let (booked, mut inserts) = store::appointment_insert_statements(a);
        inserts.push(occupancy::reserve_statement(
            &booked.name,
            &holders,
            (from, until),
            expire,
            self.db.backend() == Backend::Postgres,
        )?);
        inserts.push(outbox::staging_insert(EventKind::AppointmentChanged(
            booked.clone(),
        )));
        inserts.push(self.phi.write_record(
            caller,
            method,
            &booked.name,
            vec![booked.patient.clone()],
        )?);
        inserts.extend(idempotency::remember_statement(
            method,
            call.request_id,
            &call.request_hash,
            &booked,
        ));
        let patient = self.org.patient(&booked.patient, &booked.unit).await?;
        if !search::counts_visits(&patient) {
            batch::commit_inserts(&self.db, inserts, async |conn| {
                occupancy::check_free(conn, &holders, (from, until)).await
            })
            .await?;
            return Ok(booked);
        }
        // An intake record covers a limited number of visits: count them and write under the
        // patient's lock, so that of two bookings racing for the last covered visit exactly one
        // wins (the other counts the winner's visit once it has the lock).
        let policy = self.org.unit(&booked.unit).await?.policy;
        let start = domain::start_of(&booked)?;
        let mut tx = self.db.write(&visits_lock_scope(&booked.patient)).await?;
        occupancy::check_free(tx.conn(), &holders, (from, until)).await?;
        let visits =
            store::visits_of_patient(tx.conn(), &booked.patient, &booked.unit, None, Utc::now())
                .await?;
        let counted = eligibility::PatientContext { visits, ..patient };
        if let Some(broken) = eligibility::unmet_intake_at(&policy, &counted, &visit.code, start) {
            return Err(refusal(Some(&broken)));
        }
        for insert in &inserts {
            insert.execute(tx.conn()).await?;
        }
        tx.commit().await?;
        Ok(booked)
    }

    /// Takes the lock of the patient's counted visits in `conn`'s transaction (PostgreSQL; on
    /// SQLite the writer lock already serializes every write), as a booking under an intake record
    /// with a visit count does ([`Db::write`] of [`visits_lock_scope`]).
    async fn lock_visits_of(&self, conn: &mut AnyConnection, patient: &str) -> ApiResult<()> {
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
                .bind(pm_runtime::db::lock_key(&visits_lock_scope(patient)))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// The checks of a booking request before any rule is evaluated: names, the caller's right to
    /// book in the unit, a future start on a whole minute, the unit's visit type.
    async fn check_booking(
        &self,
        caller: &Caller,
        method: &str,
        parent: &str,
        a: &Appointment,
    ) -> ApiResult<VisitType> {
        ORGANIZATION_NAME.parse("parent", parent)?;
        UNIT_NAME.parse("appointment.unit", &a.unit)?;
        PATIENT_NAME.parse("appointment.patient", &a.patient)?;
        PROVIDER_NAME.parse("appointment.provider", &a.provider)?;
        LOCATION_NAME.parse("appointment.location", &a.location)?;
        if !a.room.is_empty() {
            ROOM.pattern.parse("appointment.room", &a.room)?;
        }
        for (field, name) in [
            ("appointment.unit", &a.unit),
            ("appointment.patient", &a.patient),
            ("appointment.provider", &a.provider),
            ("appointment.location", &a.location),
        ] {
            if names::organization_of(name) != parent {
                return Err(ApiError::invalid(
                    field,
                    "must be in the parent organization",
                ));
            }
        }
        access::authorize(&self.org, caller, method, parent, Some(&a.unit)).await?;
        let start = domain::start_of(a)?;
        check_start(start, "appointment.interval.start_time")?;
        self.visit_type_of(&a.unit, &a.visit_type, "appointment.visit_type")
            .await
    }

    /// Takes the appointment's time for its provider, patient and room, in the caller's
    /// transaction.
    async fn occupy(
        &self,
        conn: &mut AnyConnection,
        a: &Appointment,
        visit: &VisitType,
    ) -> ApiResult<()> {
        let (holders, from, until) = occupancy_of(a, visit)?;
        let expire = a.hold_expire_time.as_ref().and_then(instant);
        let expire = expire.map(|t| t.timestamp_micros());
        occupancy::reserve(conn, &a.name, &holders, (from, until), expire).await
    }

    /// The last writes of an appointment change, in its transaction: the outbox event and the audit
    /// record (both staged: the sequencer and the audit sealer order them once committed).
    async fn publish(
        &self,
        conn: &mut AnyConnection,
        caller: &Caller,
        method: &str,
        a: &Appointment,
    ) -> ApiResult<()> {
        outbox::append(conn, EventKind::AppointmentChanged(a.clone())).await?;
        self.phi
            .record_write(conn, caller, method, &a.name, vec![a.patient.clone()])
            .await
    }

    /// The appointment an earlier call with this request's `request_id` booked, if any.
    async fn replayed(&self, req: &BookAppointmentRequest) -> ApiResult<Option<Appointment>> {
        if req.request_id.is_empty() {
            return Ok(None);
        }
        let mut conn = self.db.read().await?;
        idempotency::replay::<Appointment>(
            &mut conn,
            <BookAppointmentRequest as RpcRequest>::METHOD,
            &req.request_id,
            &idempotency::request_hash(req),
        )
        .await
    }

    /// The object-level check of a stored resource: against the unit it sits in (`unit_of`), or,
    /// when it does not exist, against no unit, so that only organization-wide roles pass (and
    /// learn that it does not exist) and everyone else gets the same PERMISSION_DENIED as for a
    /// resource out of scope.
    async fn check_stored<T: pm_api::Resource>(
        &self,
        caller: &Caller,
        method: &str,
        name: &str,
        unit_of: fn(T) -> String,
    ) -> ApiResult<()> {
        let unit = {
            let mut conn = self.db.read().await?;
            docstore::get::<T>(&mut conn, name)
                .await?
                .map(|s| unit_of(s.resource))
        };
        let unit = unit.unwrap_or_else(|| format!("{}/units/-", names::organization_of(name)));
        access::authorize(&self.org, caller, method, name, Some(&unit)).await
    }

    /// A page of `kind` in the organization a List names, cut to the units the caller may see:
    /// what every List of an organization's unit-placed records (appointments, encounters, waitlist
    /// entries) answers.
    async fn list_in_units<T: pm_api::Resource>(
        &self,
        rpc: PhiCall<'_>,
        kind: &docstore::Kind<T>,
        mut list: docstore::ListCall<'_>,
    ) -> ApiResult<docstore::Page<T>> {
        ORGANIZATION_NAME.parse("parent", list.parent)?;
        access::authorize(&self.org, rpc.caller, rpc.method, list.parent, None).await?;
        let units = access::visible_units(&self.org, rpc.caller, rpc.method, list.parent).await?;
        list.scope = units.map(|units| ListScope::Attr("unit", units));
        docstore::list(&self.db, kind, list).await
    }

    /// Soft-deletes a resource kept in the generic store, authorized at the level `unit_of` gives
    /// (its unit, or the organization's for `None`).
    async fn soft_delete<T: pm_api::Resource>(
        &self,
        rpc: Call<'_>,
        kind: &docstore::Kind<T>,
        name: &str,
        etag: &str,
        unit_of: fn(&str) -> Option<String>,
    ) -> ApiResult<T> {
        kind.pattern.parse("name", name)?;
        let unit = unit_of(name);
        access::authorize(&self.org, rpc.caller, rpc.method, name, unit.as_deref()).await?;
        docstore::soft_delete(&self.db, kind, name, etag, async |_, _| Ok(())).await
    }

    async fn check_appointment(&self, caller: &Caller, method: &str, name: &str) -> ApiResult<()> {
        APPOINTMENT.pattern.parse("name", name)?;
        self.check_stored(caller, method, name, |a: Appointment| a.unit)
            .await
    }

    /// A lifecycle verb: checks, then applies `action` (noting `reason` in the history) in one
    /// transaction with its audit record.
    async fn verb(
        &self,
        caller: &Caller,
        method: &'static str,
        name: &str,
        etag: &str,
        action: Action,
        reason: &str,
    ) -> ApiResult<Appointment> {
        self.check_appointment(caller, method, name).await?;
        let call = VerbCall {
            method,
            name,
            etag,
            request_id: "",
            request_hash: String::new(),
        };
        let changed = store::transition_appointment(
            &self.db,
            call,
            async |conn, a| {
                let state = domain::lifecycle_state(a);
                let transition = lifecycle::apply(state, action, Utc::now())?;
                enter(conn, a, transition, reason).await
            },
            async |conn, changed| self.publish(conn, caller, method, changed).await,
        )
        .await?;
        self.events.committed();
        Ok(changed)
    }
}

fn no_unit(_: &str) -> Option<String> {
    None
}

/// The unit a visit type belongs to (its parent).
fn unit_of_visit_type(name: &str) -> Option<String> {
    Some(names::parent_of(name).to_string())
}

#[tonic::async_trait]
impl SchedulingService for SchedulingApi {
    // Visit types

    async fn get_visit_type(&self, request: Request<GetVisitTypeRequest>) -> Reply<VisitType> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                VISIT_TYPE.pattern.parse("name", name)?;
                let unit = names::parent_of(name);
                access::authorize(&self.org, caller, rpc.method, name, Some(unit)).await?;
                docstore::get_by_name(&self.db, &VISIT_TYPE, name).await
            })
            .await,
        )
    }

    async fn list_visit_types(
        &self,
        request: Request<ListVisitTypesRequest>,
    ) -> Reply<ListVisitTypesResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                UNIT_NAME.parse("parent", &req.parent)?;
                access::authorize(
                    &self.org,
                    caller,
                    rpc.method,
                    &req.parent,
                    Some(&req.parent),
                )
                .await?;
                let page = docstore::list(
                    &self.db,
                    &VISIT_TYPE,
                    list_call!(req, &req.parent, req.show_deleted),
                )
                .await?;
                Ok(ListVisitTypesResponse {
                    visit_types: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_visit_type(
        &self,
        request: Request<CreateVisitTypeRequest>,
    ) -> Reply<VisitType> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                UNIT_NAME.parse("parent", &req.parent)?;
                access::authorize(
                    &self.org,
                    caller,
                    rpc.method,
                    &req.parent,
                    Some(&req.parent),
                )
                .await?;
                let visit = required(req.visit_type.clone(), "visit_type")?;
                domain::validate_visit_type(&visit)?;
                // The unit is Org's: it must exist there, and its rules in force allow the visit.
                let unit = self.org.unit_now(&req.parent).await?;
                domain::check_visit_type_allowed(&visit, &unit.policy)?;
                let call = create_call!(req, rpc.method, &req.parent, visit_type_id);
                docstore::create(&self.db, &VISIT_TYPE, call, visit, async |conn, v| {
                    store::check_visit_type_code_free(conn, &req.parent, v).await
                })
                .await
            })
            .await,
        )
    }

    async fn delete_visit_type(
        &self,
        request: Request<DeleteVisitTypeRequest>,
    ) -> Reply<VisitType> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let deleted = self
                    .soft_delete(rpc, &VISIT_TYPE, &req.name, &req.etag, unit_of_visit_type)
                    .await?;
                // This replica stops booking it at once; others within the cache's lifetime.
                self.visit_types.remove(&deleted.name);
                Ok(deleted)
            })
            .await,
        )
    }

    async fn update_visit_type(
        &self,
        request: Request<UpdateVisitTypeRequest>,
    ) -> Reply<VisitType> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .visit_type
                    .as_ref()
                    .map(|v| v.name.clone())
                    .unwrap_or_default();
                VISIT_TYPE.pattern.parse("visit_type.name", &name)?;
                let unit = names::parent_of(&name).to_string();
                access::authorize(&self.org, caller, rpc.method, &name, Some(&unit)).await?;
                let policy = self.org.unit_now(&unit).await?.policy;
                let updated = docstore::update(
                    &self.db,
                    &VISIT_TYPE,
                    req.visit_type,
                    req.update_mask.as_ref(),
                    async |_, _, merged| {
                        domain::validate_visit_type(merged)?;
                        domain::check_visit_type_allowed(merged, &policy)
                    },
                )
                .await?;
                // This replica books the new version at once; others within the cache's lifetime.
                self.visit_types.remove(&updated.name);
                Ok(updated)
            })
            .await,
        )
    }

    async fn undelete_visit_type(
        &self,
        request: Request<UndeleteVisitTypeRequest>,
    ) -> Reply<VisitType> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                VISIT_TYPE.pattern.parse("name", &req.name)?;
                let unit = names::parent_of(&req.name).to_string();
                access::authorize(&self.org, caller, rpc.method, &req.name, Some(&unit)).await?;
                let policy = self.org.unit_now(&unit).await?.policy;
                let restored = docstore::undelete(
                    &self.db,
                    &VISIT_TYPE,
                    &req.name,
                    &req.etag,
                    async |conn, v| {
                        domain::check_visit_type_allowed(v, &policy)?;
                        store::check_visit_type_code_free(conn, &unit, v).await
                    },
                )
                .await?;
                self.visit_types.remove(&restored.name);
                Ok(restored)
            })
            .await,
        )
    }

    // Availability rules

    async fn list_availability_rules(
        &self,
        request: Request<ListAvailabilityRulesRequest>,
    ) -> Reply<ListAvailabilityRulesResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER_NAME.parse("parent", &req.parent)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, None).await?;
                // A provider works in several units: only the rules of the caller's units.
                let units = access::visible_units(
                    &self.org,
                    caller,
                    rpc.method,
                    names::organization_of(&req.parent),
                )
                .await?;
                let mut call = list_call!(req, &req.parent, req.show_deleted);
                call.scope = units.map(|units| ListScope::Attr("unit", units));
                let page = docstore::list(&self.db, &AVAILABILITY_RULE, call).await?;
                Ok(ListAvailabilityRulesResponse {
                    availability_rules: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_availability_rule(
        &self,
        request: Request<CreateAvailabilityRuleRequest>,
    ) -> Reply<AvailabilityRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER_NAME.parse("parent", &req.parent)?;
                let mut rule = required(req.availability_rule.clone(), "availability_rule")?;
                UNIT_NAME.parse("availability_rule.unit", &rule.unit)?;
                LOCATION_NAME.parse("availability_rule.location", &rule.location)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, Some(&rule.unit))
                    .await?;
                domain::validate_rule(&rule)?;
                // The unit as Org has it now (a write is checked against the state in force).
                self.org.unit_now(&rule.unit).await?;
                rule.time_zone = self.org.zone(&rule.location).await?;
                domain::weekly_rule(&rule).map_err(|_| {
                    ApiError::invalid(
                        "availability_rule.location",
                        "the location's time zone is unknown",
                    )
                })?;
                let call = create_call!(req, rpc.method, &req.parent, availability_rule_id);
                docstore::create(
                    &self.db,
                    &AVAILABILITY_RULE,
                    call,
                    rule,
                    async |_, _| Ok(()),
                )
                .await
            })
            .await,
        )
    }

    async fn delete_availability_rule(
        &self,
        request: Request<DeleteAvailabilityRuleRequest>,
    ) -> Reply<AvailabilityRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                AVAILABILITY_RULE.pattern.parse("name", &req.name)?;
                // Checked against the unit the rule is for.
                self.check_stored(caller, rpc.method, &req.name, |r: AvailabilityRule| r.unit)
                    .await?;
                docstore::soft_delete(
                    &self.db,
                    &AVAILABILITY_RULE,
                    &req.name,
                    &req.etag,
                    async |_, _| Ok(()),
                )
                .await
            })
            .await,
        )
    }

    async fn update_availability_rule(
        &self,
        request: Request<UpdateAvailabilityRuleRequest>,
    ) -> Reply<AvailabilityRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .availability_rule
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                AVAILABILITY_RULE
                    .pattern
                    .parse("availability_rule.name", &name)?;
                // Checked against the unit the rule is for (which an update cannot change).
                self.check_stored(caller, rpc.method, &name, |r: AvailabilityRule| r.unit)
                    .await?;
                docstore::update(
                    &self.db,
                    &AVAILABILITY_RULE,
                    req.availability_rule,
                    req.update_mask.as_ref(),
                    async |_, _, merged| domain::validate_rule(merged),
                )
                .await
            })
            .await,
        )
    }

    async fn undelete_availability_rule(
        &self,
        request: Request<UndeleteAvailabilityRuleRequest>,
    ) -> Reply<AvailabilityRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                AVAILABILITY_RULE.pattern.parse("name", &req.name)?;
                self.check_stored(caller, rpc.method, &req.name, |r: AvailabilityRule| r.unit)
                    .await?;
                docstore::undelete(
                    &self.db,
                    &AVAILABILITY_RULE,
                    &req.name,
                    &req.etag,
                    async |_, _| Ok(()),
                )
                .await
            })
            .await,
        )
    }

    // Availability exceptions

    async fn list_availability_exceptions(
        &self,
        request: Request<ListAvailabilityExceptionsRequest>,
    ) -> Reply<ListAvailabilityExceptionsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER_NAME.parse("parent", &req.parent)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, None).await?;
                let page = docstore::list(
                    &self.db,
                    &AVAILABILITY_EXCEPTION,
                    list_call!(req, &req.parent, req.show_deleted),
                )
                .await?;
                Ok(ListAvailabilityExceptionsResponse {
                    availability_exceptions: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_availability_exception(
        &self,
        request: Request<CreateAvailabilityExceptionRequest>,
    ) -> Reply<AvailabilityException> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER_NAME.parse("parent", &req.parent)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, None).await?;
                let exception =
                    required(req.availability_exception.clone(), "availability_exception")?;
                domain::validate_exception(&exception)?;
                let call = create_call!(req, rpc.method, &req.parent, availability_exception_id);
                docstore::create(
                    &self.db,
                    &AVAILABILITY_EXCEPTION,
                    call,
                    exception,
                    async |_, _| Ok(()),
                )
                .await
            })
            .await,
        )
    }

    async fn delete_availability_exception(
        &self,
        request: Request<DeleteAvailabilityExceptionRequest>,
    ) -> Reply<AvailabilityException> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.soft_delete(rpc, &AVAILABILITY_EXCEPTION, &req.name, &req.etag, no_unit)
                    .await
            })
            .await,
        )
    }

    // Rooms

    async fn list_rooms(&self, request: Request<ListRoomsRequest>) -> Reply<ListRoomsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                LOCATION_NAME.parse("parent", &req.parent)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, None).await?;
                let page = docstore::list(
                    &self.db,
                    &ROOM,
                    list_call!(req, &req.parent, req.show_deleted),
                )
                .await?;
                Ok(ListRoomsResponse {
                    rooms: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_room(&self, request: Request<CreateRoomRequest>) -> Reply<Room> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                LOCATION_NAME.parse("parent", &req.parent)?;
                access::authorize(&self.org, caller, rpc.method, &req.parent, None).await?;
                let room = required(req.room.clone(), "room")?;
                if room.display_name.trim().is_empty() || room.display_name.len() > 200 {
                    return Err(ApiError::invalid(
                        "room.display_name",
                        "required, at most 200 characters",
                    ));
                }
                self.org.zone(&req.parent).await?;
                let call = create_call!(req, rpc.method, &req.parent, room_id);
                docstore::create(&self.db, &ROOM, call, room, async |_, _| Ok(())).await
            })
            .await,
        )
    }

    async fn delete_room(&self, request: Request<DeleteRoomRequest>) -> Reply<Room> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.soft_delete(rpc, &ROOM, &req.name, &req.etag, no_unit)
                    .await
            })
            .await,
        )
    }

    // Slot search

    async fn find_slots(&self, request: Request<FindSlotsRequest>) -> Reply<FindSlotsResponse> {
        let audit = |r: &FindSlotsRequest| {
            let p = r.patient.clone();
            Audited::read(&r.unit, move |_| vec![p.clone()]).naming(vec![r.patient.clone()])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    UNIT_NAME.parse("unit", &req.unit)?;
                    PATIENT_NAME.parse("patient", &req.patient)?;
                    for (i, p) in req.providers.iter().enumerate() {
                        PROVIDER_NAME.parse(&format!("providers[{i}]"), p)?;
                    }
                    for (i, l) in req.locations.iter().enumerate() {
                        LOCATION_NAME.parse(&format!("locations[{i}]"), l)?;
                    }
                    let window = domain::interval(req.window.as_ref(), "window")?;
                    if window.duration() > domain::MAX_WINDOW {
                        return Err(ApiError::invalid("window", "at most 31 days"));
                    }
                    if req.max_slots < 0 {
                        return Err(ApiError::invalid("max_slots", "must not be negative"));
                    }
                    let step = domain::slot_step(req.step.as_ref())?;
                    access::authorize(&self.org, caller, rpc.method, &req.unit, Some(&req.unit))
                        .await?;
                    let visit = self
                        .visit_type_of(&req.unit, &req.visit_type, "visit_type")
                        .await?;
                    let max = match req.max_slots {
                        0 => 100,
                        n => usize::try_from(n).unwrap_or(1000).min(1000),
                    };
                    let found = self
                        .search(Search {
                            unit: &req.unit,
                            patient: &req.patient,
                            visit: &visit,
                            window,
                            providers: &req.providers,
                            locations: &req.locations,
                            rooms: &[],
                            step,
                            ignore: None,
                            // One more than asked, to tell whether there were more.
                            limit: max + 1,
                            read_busy: true,
                        })
                        .await?;
                    let truncated = found.slots.len() > max;
                    Ok(FindSlotsResponse {
                        slots: found
                            .slots
                            .into_iter()
                            .take(max)
                            .map(|(location, slot)| Slot {
                                provider: slot.provider,
                                location,
                                room: slot.room.unwrap_or_default(),
                                interval: Some(wire_interval(slot.interval)),
                                payer: slot.payer.unwrap_or_default(),
                            })
                            .collect(),
                        exclusions: found.excluded.into_iter().map(wire_exclusion).collect(),
                        truncated,
                    })
                })
                .await,
        )
    }

    // Appointments

    async fn book_appointment(
        &self,
        request: Request<BookAppointmentRequest>,
    ) -> Reply<Appointment> {
        let audit = |r: &BookAppointmentRequest| {
            Audited::write(&r.parent)
                .naming(r.appointment.iter().map(|a| a.patient.clone()).collect())
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.book(rpc.caller, req).await
                })
                .await,
        )
    }

    async fn confirm_appointment(
        &self,
        request: Request<ConfirmAppointmentRequest>,
    ) -> Reply<Appointment> {
        let audit = |r: &ConfirmAppointmentRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    self.check_appointment(caller, rpc.method, &req.name)
                        .await?;
                    let current = store::appointment(&self.db, &req.name).await?;
                    // Refused early, before the re-check asks Org; applied again in the transaction.
                    let state = domain::lifecycle_state(&current);
                    lifecycle::apply(state, Action::Confirm, Utc::now())?;
                    // The hold already occupies the slot, and confirming keeps it; but Org's facts may have
                    // changed since it was taken (a credential suspended, coverage ended, the patient
                    // discharged): every rule is checked again, as for a booking.
                    let visit = self
                        .visit_type_of(&current.unit, &current.visit_type, "name")
                        .await?;
                    self.recheck(&current, &visit, Some(&current.name)).await?;
                    self.verb(
                        caller,
                        rpc.method,
                        &req.name,
                        &req.etag,
                        Action::Confirm,
                        "hold confirmed",
                    )
                    .await
                })
                .await,
        )
    }

    async fn get_appointment(&self, request: Request<GetAppointmentRequest>) -> Reply<Appointment> {
        let audit = |r: &GetAppointmentRequest| {
            Audited::read(&r.name, |a: &Appointment| vec![a.patient.clone()])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    self.check_appointment(caller, rpc.method, &req.name)
                        .await?;
                    store::appointment(&self.db, &req.name).await
                })
                .await,
        )
    }

    async fn list_appointments(
        &self,
        request: Request<ListAppointmentsRequest>,
    ) -> Reply<ListAppointmentsResponse> {
        let audit = |r: &ListAppointmentsRequest| {
            Audited::read(&r.parent, |page: &ListAppointmentsResponse| {
                page.appointments
                    .iter()
                    .map(|a| a.patient.clone())
                    .collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.list_in_units(rpc, &APPOINTMENT, list_call!(req, &req.parent, false))
                        .await
                        .map(|page| ListAppointmentsResponse {
                            appointments: page.items,
                            next_page_token: page.next_page_token,
                        })
                })
                .await,
        )
    }

    async fn cancel_appointment(
        &self,
        request: Request<CancelAppointmentRequest>,
    ) -> Reply<Appointment> {
        let audit = |r: &CancelAppointmentRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    if req.reason.trim().is_empty() || req.reason.len() > 500 {
                        return Err(ApiError::invalid(
                            "reason",
                            "required, at most 500 characters",
                        ));
                    }
                    let changed = self
                        .verb(
                            caller,
                            rpc.method,
                            &req.name,
                            &req.etag,
                            Action::Cancel,
                            &req.reason,
                        )
                        .await?;
                    // The waitlist worker offers the freed time from the outbox.
                    Ok(changed)
                })
                .await,
        )
    }

    async fn check_in_appointment(
        &self,
        request: Request<CheckInAppointmentRequest>,
    ) -> Reply<Appointment> {
        let audit = |r: &CheckInAppointmentRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    self.verb(
                        caller,
                        rpc.method,
                        &req.name,
                        &req.etag,
                        Action::CheckIn,
                        "",
                    )
                    .await
                })
                .await,
        )
    }

    async fn mark_no_show(&self, request: Request<MarkNoShowRequest>) -> Reply<Appointment> {
        let audit = |r: &MarkNoShowRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    if req.reason.len() > 500 {
                        return Err(ApiError::invalid("reason", "at most 500 characters"));
                    }
                    let changed = self
                        .verb(
                            caller,
                            rpc.method,
                            &req.name,
                            &req.etag,
                            Action::MarkNoShow,
                            &req.reason,
                        )
                        .await?;
                    // The waitlist worker offers the freed time from the outbox.
                    Ok(changed)
                })
                .await,
        )
    }

    // Encounters, events, calendar

    async fn complete_appointment(
        &self,
        request: Request<CompleteAppointmentRequest>,
    ) -> Reply<CompleteAppointmentResponse> {
        let audit = |r: &CompleteAppointmentRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.complete(rpc.caller, req).await
                })
                .await,
        )
    }

    async fn get_encounter(&self, request: Request<GetEncounterRequest>) -> Reply<Encounter> {
        let audit = |r: &GetEncounterRequest| {
            Audited::read(&r.name, |e: &Encounter| vec![e.patient.clone()])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.encounter(rpc.caller, &req.name).await
                })
                .await,
        )
    }

    async fn list_encounters(
        &self,
        request: Request<ListEncountersRequest>,
    ) -> Reply<ListEncountersResponse> {
        let audit = |r: &ListEncountersRequest| {
            Audited::read(&r.parent, |page: &ListEncountersResponse| {
                page.encounters.iter().map(|e| e.patient.clone()).collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.list_in_units(rpc, &ENCOUNTER, list_call!(req, &req.parent, false))
                        .await
                        .map(|page| ListEncountersResponse {
                            encounters: page.items,
                            next_page_token: page.next_page_token,
                        })
                })
                .await,
        )
    }

    type StreamEventsStream = feeds::EventStream;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Reply<Self::StreamEventsStream> {
        let audit = |_: &StreamEventsRequest| Audited::read("", |_: &feeds::EventStream| vec![]);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    // One record per subscription: the stream carries every patient's events from here on.
                    self.events(rpc.caller, req.after_sequence).await
                })
                .await,
        )
    }

    async fn list_calendar(
        &self,
        request: Request<ListCalendarRequest>,
    ) -> Reply<ListCalendarResponse> {
        let audit = |r: &ListCalendarRequest| {
            Audited::read(&r.scope, |calendar: &ListCalendarResponse| {
                calendar
                    .entries
                    .iter()
                    .filter_map(|e| match &e.entry {
                        Some(pm_api::scheduling::calendar_entry::Entry::Appointment(a)) => {
                            Some(a.patient.clone())
                        }
                        _ => None,
                    })
                    .collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.calendar(rpc.caller, &req).await
                })
                .await,
        )
    }

    type WatchCalendarStream = feeds::EventStream;

    async fn watch_calendar(
        &self,
        request: Request<WatchCalendarRequest>,
    ) -> Reply<Self::WatchCalendarStream> {
        let audit =
            |r: &WatchCalendarRequest| Audited::read(&r.scope, |_: &feeds::EventStream| vec![]);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.watch(rpc.caller, &req).await
                })
                .await,
        )
    }

    // Reschedule, series, waitlist

    async fn reschedule_appointment(
        &self,
        request: Request<RescheduleAppointmentRequest>,
    ) -> Reply<Appointment> {
        let audit = |r: &RescheduleAppointmentRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.reschedule(rpc.caller, req).await
                })
                .await,
        )
    }

    async fn book_series(&self, request: Request<BookSeriesRequest>) -> Reply<BookSeriesResponse> {
        let audit = |r: &BookSeriesRequest| {
            Audited::write(&r.parent)
                .naming(r.appointment.iter().map(|a| a.patient.clone()).collect())
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.series(rpc.caller, req).await
                })
                .await,
        )
    }

    async fn create_waitlist_entry(
        &self,
        request: Request<CreateWaitlistEntryRequest>,
    ) -> Reply<WaitlistEntry> {
        let audit = |r: &CreateWaitlistEntryRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.create_waitlist_entry(rpc.caller, req).await
                })
                .await,
        )
    }

    async fn list_waitlist_entries(
        &self,
        request: Request<ListWaitlistEntriesRequest>,
    ) -> Reply<ListWaitlistEntriesResponse> {
        let audit = |r: &ListWaitlistEntriesRequest| {
            Audited::read(&r.parent, |page: &ListWaitlistEntriesResponse| {
                page.waitlist_entries
                    .iter()
                    .map(|e| e.patient.clone())
                    .collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.list_in_units(rpc, &WAITLIST_ENTRY, list_call!(req, &req.parent, false))
                        .await
                        .map(|page| ListWaitlistEntriesResponse {
                            waitlist_entries: page.items,
                            next_page_token: page.next_page_token,
                        })
                })
                .await,
        )
    }

    async fn delete_waitlist_entry(
        &self,
        request: Request<DeleteWaitlistEntryRequest>,
    ) -> Reply<WaitlistEntry> {
        let audit = |r: &DeleteWaitlistEntryRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.delete_waitlist_entry(rpc.caller, &req).await
                })
                .await,
        )
    }
}

fn wire_exclusion(e: eligibility::Exclusion) -> Exclusion {
    let (subject, provider, start_time) = match e.subject {
        Subject::Patient => (ExclusionSubject::Patient, String::new(), None),
        Subject::Provider(p) => (ExclusionSubject::Provider, p, None),
        Subject::Candidate { provider, start } => (
            ExclusionSubject::Candidate,
            provider,
            Some(timestamp(start)),
        ),
    };
    Exclusion {
        subject: subject as i32,
        provider,
        start_time,
        reason: e.reason.code().to_string(),
        requirement: e
            .reason
            .requirement()
            .map(|r| r.code().to_string())
            .unwrap_or_default(),
        expire_time: e.expired_at.map(timestamp),
        intake_record: e
            .visits_used
            .as_ref()
            .map(|u| u.record.clone())
            .unwrap_or_default(),
        visit_count: e
            .visits_used
            .map(|u| i32::try_from(u.visit_count).unwrap_or(i32::MAX))
            .unwrap_or_default(),
    }
}
