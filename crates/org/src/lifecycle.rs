//! The enrollment lifecycle as a state machine: which actions each state allows, what state follows,
//! and which history event records the step.
//!
//! ```text
//!            Enroll               Discharge
//!   New ───────────────▶ Active ───────────▶ Discharged
//!                        │    ▲
//!                        └────┘ Transfer (unit or pathway step changes)
//! ```
//!
//! Pure: no SQL, no protobuf. The checks that need the database (the target unit exists, the step
//! belongs to its effective pathway, the patient is not already enrolled there) stay with the
//! caller, which runs them on the transition's new unit and step before it writes anything; every
//! refusal made here comes before those checks, in the order the API has always answered them.

use pm_runtime::time::Micros;
use pm_runtime::{ApiError, ApiResult};

/// Where an enrollment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not stored yet: the enrollment being created.
    New,
    /// Enrolled and active.
    Active,
    /// Discharged from the unit; final.
    Discharged,
    /// A stored state the API does not define (unspecified); allows nothing but is not an error
    /// until an action needs an active enrollment.
    Unknown,
}

/// What the lifecycle needs to know of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The enrollment's resource name (refusals name it).
    pub name: String,
    pub status: Status,
    /// The service unit the patient is enrolled in.
    pub unit: String,
    /// The current care pathway step (may be empty).
    pub pathway_step: String,
}

/// A request to move an enrollment along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enroll the patient in the state's unit at the state's step (CreateEnrollment).
    Enroll,
    /// Move to another unit and/or pathway step; an empty `unit` keeps the current one, while the
    /// step is always the one given (an empty step clears it).
    Transfer {
        unit: String,
        pathway_step: String,
        reason: String,
    },
    /// Discharge with a (required, non-blank) reason.
    Discharge { reason: String },
}

/// The kind of a history event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Enrolled,
    Transferred,
    Discharged,
}

/// One entry appended to the enrollment's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// When it happened (the `now` given to [`apply`]).
    pub time: Micros,
    /// The unit after the step.
    pub unit: String,
    /// The pathway step after the step.
    pub pathway_step: String,
    /// The caller's reason (empty for enrollment).
    pub reason: String,
}

/// The outcome of an allowed action: the new state and the event that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub event: Event,
}

/// Applies `action` to an enrollment in `state` at `now`, or says why it is refused.
pub fn apply(state: &State, action: &Action, now: Micros) -> ApiResult<Transition> {
    match action {
        Action::Enroll => {
            // Only a new enrollment can be enrolled; an existing one moves by transfer. The
            // handlers only ever enroll new records, so this refusal mirrors the store's.
            if state.status != Status::New {
                return Err(ApiError::already_exists(
                    "RESOURCE_ALREADY_EXISTS",
                    format!("{} already exists", state.name),
                ));
            }
            Ok(step(state, Status::Active, EventKind::Enrolled, now, None))
        }
        Action::Transfer {
            unit,
            pathway_step,
            reason,
        } => {
            require_active(state)?;
            let unit = if unit.is_empty() { &state.unit } else { unit };
            if *unit == state.unit && *pathway_step == state.pathway_step {
                return Err(ApiError::invalid(
                    "unit",
                    "a transfer must change the unit or the pathway step",
                ));
            }
            let moved = State {
                unit: unit.clone(),
                pathway_step: pathway_step.clone(),
                ..state.clone()
            };
            Ok(step(
                &moved,
                Status::Active,
                EventKind::Transferred,
                now,
                Some(reason),
            ))
        }
        Action::Discharge { reason } => {
            // The reason is checked before the state: a blank reason is a malformed request
            // whatever the enrollment's state, as the API has always answered.
            if reason.trim().is_empty() {
                return Err(ApiError::invalid("reason", "must not be empty"));
            }
            require_active(state)?;
            Ok(step(
                state,
                Status::Discharged,
                EventKind::Discharged,
                now,
                Some(reason),
            ))
        }
    }
}

/// Transfers, discharges and intake records (RecordIntake) need an active enrollment: a discharged
/// one is history, and evidence recorded on it would never be checked.
pub fn require_active(state: &State) -> ApiResult<()> {
    if state.status == Status::Active {
        Ok(())
    } else {
        Err(ApiError::precondition(
            "ENROLLMENT_NOT_ACTIVE",
            format!("{} is not active", state.name),
        ))
    }
}

/// `state` (already at its new unit and step) moved to `status`, with the event recording it.
fn step(
    state: &State,
    status: Status,
    kind: EventKind,
    now: Micros,
    reason: Option<&String>,
) -> Transition {
    Transition {
        state: State {
            status,
            ..state.clone()
        },
        event: Event {
            kind,
            time: now,
            unit: state.unit.clone(),
            pathway_step: state.pathway_step.clone(),
            reason: reason.cloned().unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const NAME: &str = "organizations/o/patients/p/enrollments/e";
    const CARDIO: &str = "organizations/o/units/cardio";
    const DERM: &str = "organizations/o/units/derm";
    const NOW: Micros = 1_700_000_000_000_000;

    fn state(status: Status) -> State {
        State {
            name: NAME.into(),
            status,
            unit: CARDIO.into(),
            pathway_step: "intake".into(),
        }
    }

    fn transfer(unit: &str, step: &str) -> Action {
        Action::Transfer {
            unit: unit.into(),
            pathway_step: step.into(),
            reason: "moved".into(),
        }
    }

    fn discharge(reason: &str) -> Action {
        Action::Discharge {
            reason: reason.into(),
        }
    }

    fn not_active() -> ApiError {
        ApiError::precondition("ENROLLMENT_NOT_ACTIVE", format!("{NAME} is not active"))
    }

    fn exists() -> ApiError {
        ApiError::already_exists("RESOURCE_ALREADY_EXISTS", format!("{NAME} already exists"))
    }

    fn no_change() -> ApiError {
        ApiError::invalid(
            "unit",
            "a transfer must change the unit or the pathway step",
        )
    }

    fn blank_reason() -> ApiError {
        ApiError::invalid("reason", "must not be empty")
    }

    /// The expected success: the state after and the event appended.
    fn ok(status: Status, kind: EventKind, unit: &str, step: &str, reason: &str) -> Transition {
        Transition {
            state: State {
                name: NAME.into(),
                status,
                unit: unit.into(),
                pathway_step: step.into(),
            },
            event: Event {
                kind,
                time: NOW,
                unit: unit.into(),
                pathway_step: step.into(),
                reason: reason.into(),
            },
        }
    }

    #[test]
    fn every_state_and_action() {
        use Status::*;
        let cases: Vec<(&str, Status, Action, ApiResult<Transition>)> = vec![
            // Enroll: only a new enrollment.
            (
                "enroll new",
                New,
                Action::Enroll,
                Ok(ok(Active, EventKind::Enrolled, CARDIO, "intake", "")),
            ),
            ("enroll active", Active, Action::Enroll, Err(exists())),
            (
                "enroll discharged",
                Discharged,
                Action::Enroll,
                Err(exists()),
            ),
            ("enroll unknown", Unknown, Action::Enroll, Err(exists())),
            // Transfer: only an active enrollment, and something must change.
            (
                "transfer active to another unit",
                Active,
                transfer(DERM, "intake"),
                Ok(ok(Active, EventKind::Transferred, DERM, "intake", "moved")),
            ),
            (
                "transfer active to another step, unit kept",
                Active,
                transfer("", "treatment"),
                Ok(ok(
                    Active,
                    EventKind::Transferred,
                    CARDIO,
                    "treatment",
                    "moved",
                )),
            ),
            (
                "transfer active clears the step",
                Active,
                transfer(CARDIO, ""),
                Ok(ok(Active, EventKind::Transferred, CARDIO, "", "moved")),
            ),
            (
                "transfer active to where it is",
                Active,
                transfer(CARDIO, "intake"),
                Err(no_change()),
            ),
            (
                "transfer active, empty unit, same step",
                Active,
                transfer("", "intake"),
                Err(no_change()),
            ),
            (
                "transfer new",
                New,
                transfer(DERM, "intake"),
                Err(not_active()),
            ),
            (
                "transfer discharged",
                Discharged,
                transfer(DERM, "intake"),
                Err(not_active()),
            ),
            (
                "transfer unknown",
                Unknown,
                transfer(DERM, "intake"),
                Err(not_active()),
            ),
            // A non-active enrollment is refused as such even when nothing would change.
            (
                "transfer discharged to where it is",
                Discharged,
                transfer(CARDIO, "intake"),
                Err(not_active()),
            ),
            // Discharge: a reason first, then an active enrollment.
            (
                "discharge active",
                Active,
                discharge("recovered"),
                Ok(ok(
                    Discharged,
                    EventKind::Discharged,
                    CARDIO,
                    "intake",
                    "recovered",
                )),
            ),
            (
                "discharge active blank",
                Active,
                discharge(" \t"),
                Err(blank_reason()),
            ),
            (
                "discharge new",
                New,
                discharge("recovered"),
                Err(not_active()),
            ),
            (
                "discharge discharged",
                Discharged,
                discharge("again"),
                Err(not_active()),
            ),
            (
                "discharge unknown",
                Unknown,
                discharge("recovered"),
                Err(not_active()),
            ),
            (
                "discharge discharged blank: the reason is refused first",
                Discharged,
                discharge(""),
                Err(blank_reason()),
            ),
        ];
        for (case, status, action, want) in cases {
            assert_eq!(apply(&state(status), &action, NOW), want, "{case}");
        }
    }

    #[test]
    fn refusals_keep_their_codes() {
        assert_eq!(not_active().code, Code::FailedPrecondition);
        assert_eq!(no_change().code, Code::InvalidArgument);
        assert_eq!(blank_reason().code, Code::InvalidArgument);
        assert_eq!(exists().code, Code::AlreadyExists);
    }
}
