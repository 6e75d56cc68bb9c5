//! Encounters become charges, exactly once: a follower of Scheduling's event stream (its
//! StreamEvents RPC, called with Billing's certificate) that turns each EncounterCompleted into one
//! charge per line. The charges and the follower's cursor commit in one transaction; each charge's
//! name is derived from its encounter line, and the table holds one charge per line, so a
//! redelivered or replayed event makes nothing new, and a crash before the commit loses nothing
//! (the stream is read again from the stored cursor).

use std::sync::Arc;

use pm_api::billing::ChargeSource;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::{Encounter, SchedulingEvent, StreamEventsRequest};
use pm_runtime::follower::{Follow, Source};
use pm_runtime::outbox::EventStream;
use pm_runtime::time::to_micros;
use pm_runtime::{ApiError, ApiResult, names};
use sqlx::AnyConnection;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::charges::{self, ChargeRow};
use crate::charging::{Charging, Context};
use crate::domain::charge;

/// The follower's name: its cursor's key and its request ids' namespace.
pub const FOLLOWER: &str = "billing-charges";

/// Scheduling's event stream, over mTLS.
pub struct SchedulingEvents {
    client: SchedulingServiceClient<Channel>,
}

impl SchedulingEvents {
    /// Scheduling at the other end of `channel` (with Billing's certificate).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: SchedulingServiceClient::new(channel),
        }
    }
}

impl Source<SchedulingEvent> for SchedulingEvents {
    async fn subscribe(&self, after: i64) -> ApiResult<EventStream<SchedulingEvent>> {
        let stream = self
            .client
            .clone()
            .stream_events(StreamEventsRequest {
                after_sequence: after,
            })
            .await
            .map_err(|status| ApiError::peer_unavailable("scheduling", &status.message()))?
            .into_inner();
        Ok(Box::pin(stream.map(|item| item)))
    }
}

/// Turns completed encounters into charges.
pub struct EncounterCharges {
    charging: Arc<Charging>,
}

impl EncounterCharges {
    /// Charging through `charging`.
    pub fn new(charging: Arc<Charging>) -> Self {
        Self { charging }
    }
}

/// The charge name of an encounter's line: the same on every delivery of the event.
pub fn charge_name(encounter: &str, line: usize) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:charge:{encounter}#{line}").as_bytes(),
    );
    format!("{}/charges/{id}", names::organization_of(encounter))
}

impl EncounterCharges {
    /// The charges of one encounter, one per line.
    pub async fn charges_of(&self, encounter: &Encounter) -> ApiResult<Vec<ChargeRow>> {
        let organization = names::organization_of(&encounter.name);
        let start = encounter
            .interval
            .as_ref()
            .and_then(|i| i.start_time.as_ref())
            .map(to_micros)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| ApiError::invalid("encounter.interval", "has no start"))?;
        let zone = self.charging.org().zone(&encounter.location).await?;
        let service_date = charge::local_date(start, &zone)
            .ok_or_else(|| ApiError::internal("a location's time zone", &zone))?;
        let context = Context {
            patient: encounter.patient.clone(),
            unit: encounter.unit.clone(),
            provider: encounter.provider.clone(),
            payer: charge::qualified(organization, &encounter.payer),
            service_date,
        };
        let schedules = self.charging.fee_schedules(organization).await?;
        let mut rows = Vec::new();
        for (i, line) in charge::lines_of(encounter).iter().enumerate() {
            let number = i + 1;
            let mut row = self
                .charging
                .charge(
                    &schedules,
                    charge_name(&encounter.name, number),
                    ChargeSource::Encounter,
                    &context,
                    line,
                )
                .await?;
            row.encounter = Some((
                encounter.name.clone(),
                i32::try_from(number).unwrap_or(i32::MAX),
            ));
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Whether a failure to charge an encounter may pass (the peer or the store was unavailable).
fn retryable(error: &ApiError) -> bool {
    !matches!(
        error.code,
        tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
    )
}

/// The lines of an encounter that cannot be priced or routed, held with `reason` (dated by the UTC
/// day of its start, the best known without its location).
fn held_lines(encounter: &Encounter, reason: &str) -> Vec<ChargeRow> {
    let start = encounter
        .interval
        .as_ref()
        .and_then(|i| i.start_time.as_ref())
        .map(to_micros)
        .unwrap_or_default();
    let service_date = chrono::DateTime::from_timestamp_micros(start)
        .map(|t| t.date_naive())
        .unwrap_or_default();
    let now = pm_runtime::time::now_micros();
    let organization = names::organization_of(&encounter.name);
    charge::lines_of(encounter)
        .into_iter()
        .enumerate()
        .map(|(i, line)| ChargeRow {
            name: charge_name(&encounter.name, i + 1),
            source: ChargeSource::Encounter,
            encounter: Some((
                encounter.name.clone(),
                i32::try_from(i + 1).unwrap_or(i32::MAX),
            )),
            patient: encounter.patient.clone(),
            unit: encounter.unit.clone(),
            provider: encounter.provider.clone(),
            payer: charge::qualified(organization, &encounter.payer),
            billing_entity: String::new(),
            contract: String::new(),
            code: line.code,
            modifiers: line.modifiers,
            units: line.units.max(1),
            diagnoses: line.diagnoses,
            service_date,
            place_of_service: line.place_of_service,
            unit_price: Default::default(),
            amount: Default::default(),
            fee_schedule_version: String::new(),
            state: pm_api::billing::ChargeState::Held,
            hold_reason: reason.to_string(),
            related_charge: String::new(),
            profile: Default::default(),
            create_us: now,
            update_us: now,
        })
        .collect()
}

impl Follow<SchedulingEvent> for EncounterCharges {
    type Effect = Vec<ChargeRow>;

    async fn prepare(
        &self,
        event: &SchedulingEvent,
        _request_id: &str,
    ) -> ApiResult<Option<Vec<ChargeRow>>> {
        match &event.kind {
            Some(EventKind::EncounterCompleted(encounter)) => {
                match self.charges_of(encounter).await {
                    Ok(rows) => Ok(Some(rows)),
                    // Org or the store is down: retried from the cursor.
                    Err(e) if retryable(&e) => Err(e),
                    // The encounter names what Org no longer knows: its lines are kept, held with the
                    // reason, rather than stopping every charge after it.
                    Err(e) => Ok(Some(held_lines(encounter, e.reason))),
                }
            }
            _ => Ok(None),
        }
    }

    async fn write(&self, conn: &mut AnyConnection, rows: Vec<ChargeRow>) -> ApiResult<()> {
        for row in &rows {
            charges::insert(conn, row).await?;
        }
        Ok(())
    }
}
