//! Changes to booked time beyond a single booking: rescheduling, recurring series booked all or
//! nothing, and the waitlist that is offered freed slots.

use chrono::{DateTime, Days, TimeDelta, TimeZone, Utc};
use pm_api::RpcRequest;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_api::scheduling::*;
use pm_authz::layer::Caller;
use pm_runtime::docstore::{self, VerbCall};
use pm_runtime::idempotency;
use pm_runtime::{ApiError, ApiResult, names};
use tonic::Code;

use pm_runtime::follower::{self, Follow, FollowerConfig};
use sqlx::AnyConnection;

use super::{OFFER_WAITLIST, SchedulingApi, check_start, enter, fill, refusal};
use crate::access;
use crate::domain::{self, instant, timestamp, wire_interval};
use crate::eligibility;
use crate::lifecycle::{self, Action};
use crate::store::{self, WAITLIST_ENTRY};

/// How long a slot freed for the waitlist stays held for the patient offered it.
const OFFER_TTL: TimeDelta = TimeDelta::minutes(30);
/// How often lapsed holds are looked for.
const WAITLIST_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// The least time between two batches of the waitlist follower: under a stream of bookings, a few
/// cursor moves a second rather than one per event (the delay of an offer at most).
const WAITLIST_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// The waitlist follower's name (its cursor's key).
const WAITLIST_FOLLOWER: &str = "waitlist";

/// The request_id of the hold offering `freed`'s time to `entry`: the same for every attempt, so
/// that a repeated attempt is answered with the first hold. (Derived from the freed appointment
/// rather than the event: a lapsed hold's expiry may be published by two replicas' sweeps.)
fn offer_request_id(freed: &str, entry: &str) -> String {
    idempotency::derived_request_id("waitlist-offer", &[freed, entry])
}

impl SchedulingApi {
    pub(super) async fn reschedule(
        &self,
        caller: &Caller,
        req: RescheduleAppointmentRequest,
    ) -> ApiResult<Appointment> {
        let method = <RescheduleAppointmentRequest as RpcRequest>::METHOD;
        self.check_appointment(caller, method, &req.name).await?;
        let start = req
            .start_time
            .as_ref()
            .and_then(instant)
            .ok_or_else(|| ApiError::invalid("start_time", "required"))?;
        check_start(start, "start_time")?;
        let mut moved = store::appointment(&self.db, &req.name).await?;
        // Refused early, before the re-check asks Org; applied again in the transaction.
        let state = domain::lifecycle_state(&moved);
        lifecycle::apply(state, Action::Reschedule, Utc::now())?;
        if !req.provider.is_empty() {
            moved.provider = req.provider.clone();
        }
        if !req.location.is_empty() {
            moved.location = req.location.clone();
        }
        moved.interval = Some(pm_api::types::Interval {
            start_time: Some(timestamp(start)),
            end_time: None,
        });
        let visit = self
            .check_booking(caller, method, names::organization_of(&req.name), &moved)
            .await?;
        // Its own current time does not count against it.
        let slot = self.recheck(&moved, &visit, Some(&req.name)).await?;
        // An intake record with a visit count: counted again (without this visit) in the
        // transaction, under the patient's lock, as a booking does.
        let patient = self.org.patient(&moved.patient, &moved.unit).await?;
        let counted = if super::search::counts_visits(&patient) {
            Some((self.org.unit(&moved.unit).await?.policy, patient))
        } else {
            None
        };
        let call = VerbCall {
            method,
            name: &req.name,
            etag: &req.etag,
            request_id: "",
            request_hash: String::new(),
        };
        // A lapsed hold in the way would still hold its time.
        self.expire_lapsed_holds(names::organization_of(&req.name))
            .await?;
        let changed = store::transition_appointment(
            &self.db,
            call,
            async |conn, a| {
                let state = domain::lifecycle_state(a);
                let transition = lifecycle::apply(state, Action::Reschedule, Utc::now())?;
                if let Some((policy, patient)) = &counted {
                    self.lock_visits_of(conn, &a.patient).await?;
                    let visits = store::visits_of_patient(
                        conn,
                        &a.patient,
                        &a.unit,
                        Some(&a.name),
                        Utc::now(),
                    )
                    .await?;
                    let patient = eligibility::PatientContext {
                        visits,
                        ..patient.clone()
                    };
                    if let Some(broken) =
                        eligibility::unmet_intake_at(policy, &patient, &visit.code, start)
                    {
                        return Err(refusal(Some(&broken)));
                    }
                }
                let from = a
                    .interval
                    .as_ref()
                    .and_then(|i| i.start_time.as_ref())
                    .and_then(instant)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                a.provider = moved.provider.clone();
                a.location = moved.location.clone();
                a.interval = Some(wire_interval(slot.interval));
                a.room = slot.room.clone().unwrap_or_default();
                a.payer = slot.payer.clone().unwrap_or_default();
                // Frees the old time (the new one would conflict with it), then takes the new.
                enter(conn, a, transition, &format!("rescheduled from {from}")).await?;
                self.occupy(conn, a, &visit).await
            },
            async |conn, changed| self.publish(conn, caller, method, changed).await,
        )
        .await?;
        self.events.committed();
        Ok(changed)
    }

    pub(super) async fn series(
        &self,
        caller: &Caller,
        req: BookSeriesRequest,
    ) -> ApiResult<BookSeriesResponse> {
        let method = <BookSeriesRequest as RpcRequest>::METHOD;
        let first = req
            .appointment
            .clone()
            .ok_or_else(|| ApiError::invalid("appointment", "required"))?;
        let visit = self
            .check_booking(caller, method, &req.parent, &first)
            .await?;
        if !(2..=52).contains(&req.count) {
            return Err(ApiError::invalid("count", "from 2 to 52"));
        }
        let every_days = match req.every.as_ref() {
            Some(d) if d.nanos == 0 && d.seconds % 86_400 == 0 => d.seconds / 86_400,
            _ => 0,
        };
        if !(1..=28).contains(&every_days) {
            return Err(ApiError::invalid("every", "whole days, 1 to 28"));
        }
        idempotency::check_request_id(&req.request_id)?;
        let hash = idempotency::request_hash(&req);
        if let Some(previous) = self.replayed_series(&req.request_id, &hash).await? {
            return Ok(previous);
        }
        // Same local time in the location's zone for every occurrence, across DST changes.
        let zone: chrono_tz::Tz = self
            .org
            .zone(&first.location)
            .await?
            .parse()
            .map_err(|_| ApiError::internal("the location's zone", &"not an IANA zone"))?;
        let start = domain::start_of(&first)?;
        let local = start.with_timezone(&zone).naive_local();
        let mut occurrences = Vec::new();
        for i in 0..req.count {
            let days = u64::try_from(i64::from(i) * every_days).unwrap_or(0);
            let when: Option<DateTime<Utc>> = local
                .checked_add_days(Days::new(days))
                .and_then(|t| zone.from_local_datetime(&t).earliest())
                .map(|t| t.with_timezone(&Utc));
            let when = when.ok_or_else(|| occurrence_error(i, "does not exist in local time"))?;
            let mut a = first.clone();
            a.interval = Some(pm_api::types::Interval {
                start_time: Some(timestamp(when)),
                end_time: None,
            });
            // Every rule, for every occurrence, before anything is written.
            let slot = self
                .recheck(&a, &visit, None)
                .await
                .map_err(|e| e.with_meta("occurrence", i.to_string()))?;
            occurrences.push(fill(a, slot, None));
        }

        // An intake record with a visit count: the occurrences count against it with the visits
        // already booked, counted under the patient's lock as a single booking does.
        let patient = self.org.patient(&first.patient, &first.unit).await?;
        let policy = if super::search::counts_visits(&patient) {
            Some(self.org.unit(&first.unit).await?.policy)
        } else {
            None
        };

        // A lapsed hold in the way would still hold its time.
        self.expire_lapsed_holds(&req.parent).await?;
        let mut tx = self.db.write(&req.parent).await?;
        if let Some(previous) =
            idempotency::replay::<BookSeriesResponse>(tx.conn(), method, &req.request_id, &hash)
                .await?
        {
            return Ok(previous);
        }
        let mut counted = match policy {
            Some(policy) => {
                self.lock_visits_of(tx.conn(), &first.patient).await?;
                let visits = store::visits_of_patient(
                    tx.conn(),
                    &first.patient,
                    &first.unit,
                    None,
                    Utc::now(),
                )
                .await?;
                Some((policy, eligibility::PatientContext { visits, ..patient }))
            }
            None => None,
        };
        let series = format!("{}/appointments/{}", req.parent, uuid::Uuid::now_v7());
        let mut booked = Vec::new();
        for (i, mut a) in occurrences.into_iter().enumerate() {
            a.name = if i == 0 {
                series.clone()
            } else {
                format!("{}/appointments/{}", req.parent, uuid::Uuid::now_v7())
            };
            a.series = series.clone();
            if let Some((policy, patient)) = &mut counted {
                let start = domain::start_of(&a)?;
                if let Some(broken) =
                    eligibility::unmet_intake_at(policy, patient, &visit.code, start)
                {
                    return Err(refusal(Some(&broken)).with_meta("occurrence", i.to_string()));
                }
                patient.visits.push(eligibility::PriorVisit {
                    code: visit.code.clone(),
                    start,
                    state: eligibility::VisitState::Booked,
                });
            }
            self.occupy(tx.conn(), &a, &visit)
                .await
                .map_err(|e| e.with_meta("occurrence", i.to_string()))?;
            let stored = store::insert_appointment(tx.conn(), a).await?;
            self.publish(tx.conn(), caller, method, &stored).await?;
            booked.push(stored);
        }
        let response = BookSeriesResponse {
            appointments: booked,
        };
        idempotency::remember(tx.conn(), method, &req.request_id, &hash, &response).await?;
        tx.commit().await?;
        self.events.committed();
        Ok(response)
    }

    async fn replayed_series(
        &self,
        request_id: &str,
        hash: &str,
    ) -> ApiResult<Option<BookSeriesResponse>> {
        let mut conn = self.db.read().await?;
        idempotency::replay(
            &mut conn,
            <BookSeriesRequest as RpcRequest>::METHOD,
            request_id,
            hash,
        )
        .await
    }

    pub(super) async fn create_waitlist_entry(
        &self,
        caller: &Caller,
        req: CreateWaitlistEntryRequest,
    ) -> ApiResult<WaitlistEntry> {
        let method = <CreateWaitlistEntryRequest as RpcRequest>::METHOD;
        let mut entry = req
            .waitlist_entry
            .clone()
            .ok_or_else(|| ApiError::invalid("waitlist_entry", "required"))?;
        names::patterns::ORGANIZATION.parse("parent", &req.parent)?;
        names::patterns::UNIT.parse("waitlist_entry.unit", &entry.unit)?;
        names::patterns::PATIENT.parse("waitlist_entry.patient", &entry.patient)?;
        for (field, name) in [
            ("waitlist_entry.unit", &entry.unit),
            ("waitlist_entry.patient", &entry.patient),
        ] {
            if names::organization_of(name) != req.parent {
                return Err(ApiError::invalid(
                    field,
                    "must be in the parent organization",
                ));
            }
        }
        access::authorize(&self.org, caller, method, &req.parent, Some(&entry.unit)).await?;
        let window = domain::interval(entry.window.as_ref(), "waitlist_entry.window")?;
        if window.end() <= Utc::now() {
            return Err(ApiError::invalid(
                "waitlist_entry.window",
                "must end in the future",
            ));
        }
        if window.duration() > TimeDelta::days(92) {
            return Err(ApiError::invalid(
                "waitlist_entry.window",
                "at most 92 days",
            ));
        }
        self.visit_type_of(&entry.unit, &entry.visit_type, "waitlist_entry.visit_type")
            .await?;
        entry.state = WaitlistState::Waiting as i32;
        entry.offered_appointment.clear();
        let call = docstore::CreateCall {
            method,
            parent: &req.parent,
            id: &req.waitlist_entry_id,
            id_field: "waitlist_entry_id",
            request_id: &req.request_id,
            request_hash: idempotency::request_hash(&req),
        };
        docstore::create(&self.db, &WAITLIST_ENTRY, call, entry, async |conn, e| {
            self.phi
                .record_write(conn, caller, method, &e.name, vec![e.patient.clone()])
                .await
        })
        .await
    }

    pub(super) async fn delete_waitlist_entry(
        &self,
        caller: &Caller,
        req: &DeleteWaitlistEntryRequest,
    ) -> ApiResult<WaitlistEntry> {
        let method = <DeleteWaitlistEntryRequest as RpcRequest>::METHOD;
        WAITLIST_ENTRY.pattern.parse("name", &req.name)?;
        self.check_stored(caller, method, &req.name, |e: WaitlistEntry| e.unit)
            .await?;
        docstore::soft_delete(
            &self.db,
            &WAITLIST_ENTRY,
            &req.name,
            &req.etag,
            async |conn, e| {
                self.phi
                    .record_write(conn, caller, method, &e.name, vec![e.patient.clone()])
                    .await
            },
        )
        .await
    }

    /// Starts the waitlist's background work until shutdown: the follower of the outbox that offers
    /// the time each cancellation, no-show or lapsed hold freed ([`WaitlistOffers`]), and the sweep
    /// that marks lapsed holds expired ([`SchedulingApi::sweep_lapsed_holds`]) every
    /// [`WAITLIST_POLL`], which may free time for an offer.
    pub(super) fn spawn_waitlist_worker(&self) {
        let config = FollowerConfig {
            pause: WAITLIST_PAUSE,
            ..FollowerConfig::named(WAITLIST_FOLLOWER)
        };
        follower::spawn(
            self.db.clone(),
            config,
            self.events.clone(),
            WaitlistOffers { api: self.clone() },
            self.shutdown.clone(),
        );
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                match api.sweep_lapsed_holds().await {
                    Ok(0) => {}
                    Ok(expired) => tracing::info!(expired, "lapsed holds marked expired"),
                    Err(err) => {
                        tracing::warn!(reason = err.reason, "the hold sweep failed; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(WAITLIST_POLL) => {}
                    _ = api.shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Offers the time `freed` gave up to the first waiting entry it suits (oldest first) for
    /// which every booking rule holds, as a hold. Doing it again for the same cancellation finds
    /// the same hold (its request_id is derived from the cancellation and the entry) or the slot
    /// taken, so a repeat offers nothing twice.
    async fn offer(&self, caller: &Caller, freed: &Appointment) -> ApiResult<()> {
        let Some(start) = freed
            .interval
            .as_ref()
            .and_then(|i| i.start_time.as_ref())
            .and_then(instant)
        else {
            return Ok(());
        };
        if start <= Utc::now() {
            return Ok(());
        }
        let mut waiting = {
            let mut conn = self.db.read().await?;
            let organization = names::organization_of(&freed.name);
            store::waitlist_of_unit(&mut conn, organization, &freed.unit).await?
        };
        waiting.retain(|e| e.resource.state == WaitlistState::Waiting as i32);
        waiting.sort_by_key(|e| {
            e.resource
                .create_time
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default()
        });
        for entry in waiting.into_iter().map(|s| s.resource) {
            let suits = domain::interval(entry.window.as_ref(), "window")
                .is_ok_and(|w| w.start() <= start && start < w.end())
                && (entry.providers.is_empty() || entry.providers.contains(&freed.provider))
                && entry.patient != freed.patient;
            if !suits {
                continue;
            }
            let hold = BookAppointmentRequest {
                parent: names::organization_of(&freed.name).to_string(),
                appointment: Some(Appointment {
                    unit: freed.unit.clone(),
                    patient: entry.patient.clone(),
                    provider: freed.provider.clone(),
                    location: freed.location.clone(),
                    visit_type: entry.visit_type.clone(),
                    interval: Some(pm_api::types::Interval {
                        start_time: Some(timestamp(start)),
                        end_time: None,
                    }),
                    ..Default::default()
                }),
                hold_ttl: Some(domain::duration(OFFER_TTL)),
                request_id: offer_request_id(&freed.name, &entry.name),
                appointment_id: String::new(),
            };
            // Not eligible (another pathway step, coverage lapsed...) or the time is taken (an
            // earlier offer of it): the next entry may be. Org unreachable: try again later.
            let held = match self.book(caller, hold).await {
                Ok(held) => held,
                Err(err) if err.code == Code::Unavailable => return Err(err),
                Err(_) => continue,
            };
            if held.state != AppointmentState::Held as i32 {
                continue;
            }
            let call = VerbCall {
                method: OFFER_WAITLIST,
                name: &entry.name,
                etag: "",
                request_id: "",
                request_hash: String::new(),
            };
            docstore::transition(&self.db, &WAITLIST_ENTRY, call, async |conn, e| {
                e.state = WaitlistState::Offered as i32;
                e.offered_appointment = held.name.clone();
                let patients = vec![e.patient.clone()];
                self.phi
                    .record_write(conn, caller, OFFER_WAITLIST, &e.name, patients)
                    .await
            })
            .await?;
            tracing::info!("a freed slot was offered to the waitlist");
            return Ok(());
        }
        Ok(())
    }
}

/// The waitlist follower: an event that gave up an appointment's time offers it to the waitlist.
/// An offer books through [`SchedulingApi::book`] (its own transaction) with a request_id derived
/// from the freed appointment and the entry, so a repeat after a crash offers nothing twice; the
/// follower's transaction then only moves its cursor.
struct WaitlistOffers {
    api: SchedulingApi,
}

impl Follow<SchedulingEvent> for WaitlistOffers {
    type Effect = ();

    async fn prepare(&self, event: &SchedulingEvent, _request_id: &str) -> ApiResult<Option<()>> {
        if let Some(EventKind::AppointmentChanged(a)) = &event.kind
            && domain::lifecycle_state(a).gave_up_time()
        {
            self.api.offer(&Caller::itself(crate::NAME), a).await?;
        }
        Ok(None)
    }

    async fn write(&self, _conn: &mut AnyConnection, _effect: ()) -> ApiResult<()> {
        Ok(())
    }
}

fn occurrence_error(i: i32, what: &str) -> ApiError {
    ApiError::invalid(
        "appointment.interval.start_time",
        format!("occurrence {i} {what}"),
    )
    .with_meta("occurrence", i.to_string())
}
