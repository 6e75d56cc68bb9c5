//! Enrollments in the store: the standard methods and the lifecycle verbs, each inside one write
//! transaction, with the checks of a target unit that need the database.

use pm_api::org::{
    Enrollment, EnrollmentEvent, EnrollmentEventKind, EnrollmentState, IntakeRecord,
};
use pm_runtime::docstore::{self, CreateCall, ListCall, Page, VerbCall};
use pm_runtime::time::{now_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db, names};
use sqlx::AnyConnection;

use super::{ENROLLMENT, active_enrollment_in, effective_policy, referenced_unit};
use crate::{domain, lifecycle};

/// A live enrollment.
pub async fn get(db: &Db, name: &str) -> ApiResult<Enrollment> {
    docstore::get_by_name(db, &ENROLLMENT, name).await
}

/// One page of a patient's enrollments.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Enrollment>> {
    docstore::list(db, &ENROLLMENT, call).await
}

/// Enrolls the patient (CreateEnrollment): the target unit and step are checked, then the lifecycle
/// starts the enrollment; `record` runs in the same transaction (the PHI audit of the write: both
/// commit or neither does).
pub async fn create<R>(
    db: &Db,
    call: CreateCall<'_>,
    enrollment: Enrollment,
    record: R,
) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::create(db, &ENROLLMENT, call, enrollment, async |conn, e| {
        check_target(conn, e, &e.unit, &e.pathway_step, "enrollment").await?;
        // Whatever state and history the client sent, a new enrollment starts its life here.
        let state = lifecycle_state(e, lifecycle::Status::New);
        let step = lifecycle::apply(&state, &lifecycle::Action::Enroll, now_micros())?;
        e.history.clear();
        // Intake records are output only: they are added through RecordIntake, audited one by one.
        e.intake_records.clear();
        enter(e, step);
        record(conn, e).await
    })
    .await
}

/// Moves a stored enrollment along its lifecycle (TransferEnrollment, DischargeEnrollment);
/// `record` as for [`create`].
pub async fn advance<R>(
    db: &Db,
    call: VerbCall<'_>,
    action: &lifecycle::Action,
    record: R,
) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::transition(db, &ENROLLMENT, call, async |conn, e| {
        let step = lifecycle::apply(&stored_state(e), action, now_micros())?;
        if let lifecycle::Action::Transfer { .. } = action {
            // The lifecycle allows the move; the target itself is checked against the store
            // before anything is written.
            check_target(conn, e, &step.state.unit, &step.state.pathway_step, "").await?;
        }
        enter(e, step);
        record(conn, e).await
    })
    .await
}

/// Appends an intake record (already validated with [`domain::validate_intake_record`]) to an
/// active enrollment (RecordIntake); `record` as for [`create`]. A discharged enrollment, or one
/// holding [`domain::MAX_INTAKE_RECORDS`] already, is refused with nothing written.
pub async fn record_intake<R>(
    db: &Db,
    call: VerbCall<'_>,
    intake: IntakeRecord,
    record: R,
) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::transition(db, &ENROLLMENT, call, async |conn, e| {
        lifecycle::require_active(&stored_state(e))?;
        if e.intake_records.len() >= domain::MAX_INTAKE_RECORDS {
            return Err(ApiError::precondition(
                "TOO_MANY_INTAKE_RECORDS",
                format!(
                    "{} holds {} intake records already, the most it may",
                    e.name,
                    domain::MAX_INTAKE_RECORDS
                ),
            )
            .with_meta("enrollment", e.name.clone())
            .with_meta("limit", domain::MAX_INTAKE_RECORDS.to_string()));
        }
        // The server owns the record's identity and revocation, whatever the client sent. Records
        // are never removed, so the count gives a fresh id.
        e.intake_records.push(IntakeRecord {
            id: format!("intake-{}", e.intake_records.len() + 1),
            revoke_time: None,
            revoke_reason: String::new(),
            ..intake
        });
        record(conn, e).await
    })
    .await
}

/// Revokes the intake record `record_id` of an active enrollment at `now` with `reason`
/// (RevokeIntake, already validated with [`domain::validate_revocation`]); `record` as for
/// [`create`]. An id the enrollment does not have is NOT_FOUND, a record revoked already
/// FAILED_PRECONDITION; nothing is written on either.
pub async fn revoke_intake<R>(
    db: &Db,
    call: VerbCall<'_>,
    record_id: &str,
    reason: &str,
    record: R,
) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::transition(db, &ENROLLMENT, call, async |conn, e| {
        lifecycle::require_active(&stored_state(e))?;
        let name = e.name.clone();
        let Some(intake) = e.intake_records.iter_mut().find(|r| r.id == record_id) else {
            return Err(ApiError::new(
                tonic::Code::NotFound,
                "INTAKE_RECORD_NOT_FOUND",
                format!("{name} has no intake record with this id"),
            )
            .with_meta("enrollment", name));
        };
        if intake.revoke_time.is_some() {
            return Err(ApiError::precondition(
                "INTAKE_RECORD_REVOKED",
                format!("the intake record of {name} is revoked already"),
            )
            .with_meta("enrollment", name)
            .with_meta("recordId", intake.id.clone()));
        }
        intake.revoke_time = Some(to_timestamp(now_micros()));
        intake.revoke_reason = reason.to_string();
        record(conn, e).await
    })
    .await
}

/// Undeletes an enrollment: an active one's unit and step are checked again (the patient may have
/// been enrolled there anew meanwhile); `record` as for [`create`].
pub async fn undelete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::undelete(db, &ENROLLMENT, name, etag, async |conn, e| {
        if e.state == EnrollmentState::Active as i32 {
            check_target(conn, e, &e.unit, &e.pathway_step, "").await?;
        }
        record(conn, e).await
    })
    .await
}

/// Soft-deletes an enrollment; `record` as for [`create`].
pub async fn delete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Enrollment>
where
    R: AsyncFnOnce(&mut AnyConnection, &Enrollment) -> ApiResult<()>,
{
    docstore::soft_delete(db, &ENROLLMENT, name, etag, async |conn, e| {
        record(conn, e).await
    })
    .await
}

/// The unit must exist, the step must belong to its effective pathway, and the patient may not already
/// be actively enrolled there.
async fn check_target(
    conn: &mut AnyConnection,
    enrollment: &Enrollment,
    unit: &str,
    step: &str,
    prefix: &str,
) -> ApiResult<()> {
    let field = |f: &str| {
        if prefix.is_empty() {
            f.to_string()
        } else {
            format!("{prefix}.{f}")
        }
    };
    referenced_unit(conn, unit, &field("unit")).await?;
    let policy = effective_policy(conn, unit).await?;
    domain::check_pathway_step(
        &field("pathway_step"),
        step,
        &policy.workflow_rules.unwrap_or_default(),
    )?;
    let patient = names::parent_of(&enrollment.name);
    if let Some(other) = active_enrollment_in(conn, patient, unit, &enrollment.name).await? {
        return Err(ApiError::precondition(
            "ALREADY_ENROLLED",
            format!("the patient is already enrolled in {unit} ({other})"),
        )
        .with_meta("enrollment", other)
        .with_meta("unit", unit));
    }
    Ok(())
}

/// The lifecycle's view of a stored enrollment.
fn stored_state(enrollment: &Enrollment) -> lifecycle::State {
    let status = match EnrollmentState::try_from(enrollment.state) {
        Ok(EnrollmentState::Active) => lifecycle::Status::Active,
        Ok(EnrollmentState::Discharged) => lifecycle::Status::Discharged,
        // Unspecified or out of range: the lifecycle allows nothing from it.
        _ => lifecycle::Status::Unknown,
    };
    lifecycle_state(enrollment, status)
}

/// The lifecycle's view of `enrollment`, taken to be in `status`.
fn lifecycle_state(enrollment: &Enrollment, status: lifecycle::Status) -> lifecycle::State {
    lifecycle::State {
        name: enrollment.name.clone(),
        status,
        unit: enrollment.unit.clone(),
        pathway_step: enrollment.pathway_step.clone(),
    }
}

/// Writes an allowed transition into the enrollment: its new state, unit and step, and the event
/// appended to its history.
fn enter(enrollment: &mut Enrollment, step: lifecycle::Transition) {
    enrollment.state = match step.state.status {
        lifecycle::Status::Active => EnrollmentState::Active,
        lifecycle::Status::Discharged => EnrollmentState::Discharged,
        // The lifecycle never moves an enrollment into these; keep the proto's "not a value".
        lifecycle::Status::New | lifecycle::Status::Unknown => EnrollmentState::Unspecified,
    } as i32;
    enrollment.unit = step.state.unit;
    enrollment.pathway_step = step.state.pathway_step;
    let kind = match step.event.kind {
        lifecycle::EventKind::Enrolled => EnrollmentEventKind::Enrolled,
        lifecycle::EventKind::Transferred => EnrollmentEventKind::Transferred,
        lifecycle::EventKind::Discharged => EnrollmentEventKind::Discharged,
    };
    enrollment.history.push(EnrollmentEvent {
        kind: kind as i32,
        time: Some(to_timestamp(step.event.time)),
        unit: step.event.unit,
        pathway_step: step.event.pathway_step,
        reason: step.event.reason,
    });
}
