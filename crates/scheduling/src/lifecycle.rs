//! The appointment lifecycle as a state machine: which action an appointment in a given state
//! accepts, the state it moves to, and what becomes of the time it occupies.
//!
//! ```text
//!              confirm   cancel      check in    no-show  complete    reschedule  expire
//!   Held       Booked¹   Cancelled   -           -        -           Held        Expired²
//!   Booked     -         Cancelled   CheckedIn   NoShow   Completed   Booked      -
//!   CheckedIn  -         Cancelled   -           NoShow   Completed   -           -
//!   (others)   -         -           -           -        -           -           -
//!   time:      keep      release     keep        release  keep        move        release
//! ```
//!
//! * ¹ A hold is confirmed only before it lapses ([`HOLD_EXPIRED`] otherwise, a hold without a
//!   readable lapse included: nobody can tell it is still valid); confirming keeps its time for
//!   good.
//! * ² A lapsed hold is expired only once its lapse is known and past; expiring frees its time.
//! * Cancelling (a held, booked or checked-in appointment) and a no-show (booked or checked in)
//!   free the time; checking in and completing keep it.
//! * Rescheduling (a held or booked appointment) keeps the state and moves the time. A lapsed hold
//!   may still be cancelled or rescheduled until the sweep marks it expired.
//!
//! Every other (state, action) pair is refused with FAILED_PRECONDITION
//! [`WRONG_APPOINTMENT_STATE`], whose message names the action and the state as the API spells it.
//!
//! Pure: no storage, no wire types; the handlers convert the stored appointment
//! ([`crate::domain::lifecycle_state`]) and apply the transition.

use std::fmt;

use chrono::{DateTime, Utc};
use pm_runtime::{ApiError, ApiResult};

/// The refusal reason for an action the appointment's state does not accept.
pub const WRONG_APPOINTMENT_STATE: &str = "WRONG_APPOINTMENT_STATE";
/// The refusal reason for confirming a hold whose lapse has passed.
pub const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
/// The refusal reason for expiring a hold whose lapse has not passed (or is unknown). Never sent to
/// a client: the sweep that expires holds skips such a hold.
pub const HOLD_NOT_LAPSED: &str = "HOLD_NOT_LAPSED";

/// Where an appointment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A state this version does not know (unset, or written by a newer one): accepts no action.
    Unspecified,
    /// A short-lived booking that lapses at `lapses_at` unless confirmed; `None` when the stored
    /// lapse is missing or unreadable.
    Held {
        /// When the hold lapses.
        lapses_at: Option<DateTime<Utc>>,
    },
    /// Booked for good.
    Booked,
    /// The patient arrived.
    CheckedIn,
    /// The visit took place.
    Completed,
    /// Called off before the visit.
    Cancelled,
    /// The patient did not come.
    NoShow,
    /// A hold that lapsed unconfirmed.
    Expired,
}

impl State {
    /// The state's name as the API spells it (`AppointmentState`'s proto names), for messages.
    pub fn api_name(self) -> &'static str {
        match self {
            State::Unspecified => "APPOINTMENT_STATE_UNSPECIFIED",
            State::Held { .. } => "APPOINTMENT_STATE_HELD",
            State::Booked => "APPOINTMENT_STATE_BOOKED",
            State::CheckedIn => "APPOINTMENT_STATE_CHECKED_IN",
            State::Completed => "APPOINTMENT_STATE_COMPLETED",
            State::Cancelled => "APPOINTMENT_STATE_CANCELLED",
            State::NoShow => "APPOINTMENT_STATE_NO_SHOW",
            State::Expired => "APPOINTMENT_STATE_EXPIRED",
        }
    }
}

impl State {
    /// Whether an appointment in this state occupies its time at `now`. A hold whose lapse has
    /// passed (or is unknown) does not, even before it is marked expired (by the waitlist worker's
    /// sweep, or a booking that finds it in the way).
    pub fn holds_time(self, now: DateTime<Utc>) -> bool {
        match self {
            State::Held { lapses_at } => lapses_at.is_some_and(|t| t > now),
            State::Booked | State::CheckedIn | State::Completed => true,
            State::Unspecified | State::Cancelled | State::NoShow | State::Expired => false,
        }
    }

    /// Whether reaching this state gave the appointment's time up (the states the transitions that
    /// release it lead to): the waitlist may be offered that time.
    pub fn gave_up_time(self) -> bool {
        matches!(self, State::Cancelled | State::NoShow | State::Expired)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// What is asked of an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// ConfirmAppointment: a hold becomes a booking.
    Confirm,
    /// CancelAppointment.
    Cancel,
    /// CheckInAppointment.
    CheckIn,
    /// MarkNoShow.
    MarkNoShow,
    /// CompleteAppointment.
    Complete,
    /// RescheduleAppointment: another time (provider, location), same state.
    Reschedule,
    /// The service's own expiry of a lapsed hold.
    Expire,
}

impl Action {
    /// Every action, for exhaustive tests.
    pub const ALL: [Action; 7] = [
        Action::Confirm,
        Action::Cancel,
        Action::CheckIn,
        Action::MarkNoShow,
        Action::Complete,
        Action::Reschedule,
        Action::Expire,
    ];

    /// The verb in a WRONG_APPOINTMENT_STATE message: "cannot {verb} an appointment in state …".
    fn verb(self) -> &'static str {
        match self {
            Action::Confirm => "confirm",
            Action::Cancel => "cancel",
            Action::CheckIn => "check in",
            Action::MarkNoShow => "mark as no-show",
            Action::Complete => "complete",
            Action::Reschedule => "reschedule",
            Action::Expire => "expire",
        }
    }
}

/// What an accepted action does with the appointment's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// Keeps it, for good (a confirmed hold no longer lapses).
    Keep,
    /// Frees it.
    Release,
    /// Frees it and takes the new time instead (a hold keeps its lapse).
    Move,
}

/// An accepted action's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state the appointment moves to.
    pub to: State,
    /// What becomes of its time.
    pub occupancy: Occupancy,
}

/// Applies `action` to an appointment in `state` at `now`: the transition, or the refusal the API
/// answers with.
pub fn apply(state: State, action: Action, now: DateTime<Utc>) -> ApiResult<Transition> {
    let to = |to: State, occupancy: Occupancy| Ok(Transition { to, occupancy });
    match (action, state) {
        (Action::Confirm, State::Held { lapses_at }) => {
            if lapses_at.is_none_or(|t| t <= now) {
                return Err(ApiError::precondition(
                    HOLD_EXPIRED,
                    "the hold lapsed: search and book again",
                ));
            }
            to(State::Booked, Occupancy::Keep)
        }
        (Action::Cancel, State::Held { .. } | State::Booked | State::CheckedIn) => {
            to(State::Cancelled, Occupancy::Release)
        }
        (Action::CheckIn, State::Booked) => to(State::CheckedIn, Occupancy::Keep),
        (Action::MarkNoShow, State::Booked | State::CheckedIn) => {
            to(State::NoShow, Occupancy::Release)
        }
        // The visit used its time: the occupancy stays, for good.
        (Action::Complete, State::Booked | State::CheckedIn) => {
            to(State::Completed, Occupancy::Keep)
        }
        (Action::Reschedule, State::Held { .. } | State::Booked) => to(state, Occupancy::Move),
        (Action::Expire, State::Held { lapses_at }) => {
            // Unlike a confirmation, an unknown lapse does not count as passed: the sweep leaves
            // such a hold alone rather than expire what may still be valid.
            if lapses_at.is_none_or(|t| t > now) {
                return Err(ApiError::precondition(
                    HOLD_NOT_LAPSED,
                    "the hold has not lapsed",
                ));
            }
            to(State::Expired, Occupancy::Release)
        }
        _ => Err(wrong_state(state, action)),
    }
}

/// The refusal of `action` in `state`.
fn wrong_state(state: State, action: Action) -> ApiError {
    ApiError::precondition(
        WRONG_APPOINTMENT_STATE,
        format!("cannot {} an appointment in state {state}", action.verb()),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeDelta;
    use tonic::Code;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-09T13:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn held_until(minutes: i64) -> State {
        State::Held {
            lapses_at: Some(now() + TimeDelta::minutes(minutes)),
        }
    }

    /// Every state the table covers: a hold valid for ten more minutes, one that lapsed a minute
    /// ago, one lapsing this very instant, one whose lapse is unknown, and every other state.
    fn states() -> Vec<(&'static str, State)> {
        vec![
            ("held", held_until(10)),
            ("held, lapsed", held_until(-1)),
            ("held, lapsing now", held_until(0)),
            ("held, no lapse", State::Held { lapses_at: None }),
            ("booked", State::Booked),
            ("checked in", State::CheckedIn),
            ("completed", State::Completed),
            ("cancelled", State::Cancelled),
            ("no-show", State::NoShow),
            ("expired", State::Expired),
            ("unspecified", State::Unspecified),
        ]
    }

    /// What the table expects: the transition, or the refusal's reason.
    #[derive(Debug, PartialEq)]
    enum Expect {
        Goes(State, Occupancy),
        Refused(&'static str),
    }
    use Expect::{Goes, Refused};

    fn expected(label: &str, state: State, action: Action) -> Expect {
        use Action::*;
        use Occupancy::*;
        let valid_hold = label == "held";
        let lapsed_hold = matches!(label, "held, lapsed" | "held, lapsing now");
        match (action, state) {
            (Confirm, State::Held { .. }) if valid_hold => Goes(State::Booked, Keep),
            (Confirm, State::Held { .. }) => Refused(HOLD_EXPIRED),
            (Cancel, State::Held { .. } | State::Booked | State::CheckedIn) => {
                Goes(State::Cancelled, Release)
            }
            (CheckIn, State::Booked) => Goes(State::CheckedIn, Keep),
            (MarkNoShow, State::Booked | State::CheckedIn) => Goes(State::NoShow, Release),
            (Complete, State::Booked | State::CheckedIn) => Goes(State::Completed, Keep),
            (Reschedule, State::Held { .. } | State::Booked) => Goes(state, Move),
            (Expire, State::Held { .. }) if lapsed_hold => Goes(State::Expired, Release),
            (Expire, State::Held { .. }) => Refused(HOLD_NOT_LAPSED),
            _ => Refused(WRONG_APPOINTMENT_STATE),
        }
    }

    #[test]
    fn every_state_and_action() {
        for (label, state) in states() {
            for action in Action::ALL {
                let got = match apply(state, action, now()) {
                    Ok(t) => Goes(t.to, t.occupancy),
                    Err(err) => {
                        assert_eq!(err.code, Code::FailedPrecondition, "{label} {action:?}");
                        Refused(err.reason)
                    }
                };
                assert_eq!(got, expected(label, state, action), "{label} {action:?}");
            }
        }
    }

    #[test]
    fn the_states_that_gave_up_time_are_those_a_release_leads_to() {
        let mut released: Vec<State> = Vec::new();
        for (_, state) in states() {
            for action in Action::ALL {
                if let Ok(t) = apply(state, action, now())
                    && t.occupancy == Occupancy::Release
                    && !released.contains(&t.to)
                {
                    released.push(t.to);
                }
            }
        }
        for (label, state) in states() {
            assert_eq!(state.gave_up_time(), released.contains(&state), "{label}");
        }
    }

    #[test]
    fn which_states_hold_time() {
        for (label, state) in states() {
            let holds = matches!(label, "held" | "booked" | "checked in" | "completed");
            assert_eq!(state.holds_time(now()), holds, "{label}");
        }
    }

    #[test]
    fn refusals_say_what_the_api_said() {
        let err = apply(State::Completed, Action::Cancel, now()).unwrap_err();
        assert_eq!(
            err.message,
            "cannot cancel an appointment in state APPOINTMENT_STATE_COMPLETED"
        );
        let err = apply(State::Cancelled, Action::MarkNoShow, now()).unwrap_err();
        assert_eq!(
            err.message,
            "cannot mark as no-show an appointment in state APPOINTMENT_STATE_CANCELLED"
        );
        let err = apply(held_until(10), Action::CheckIn, now()).unwrap_err();
        assert_eq!(
            err.message,
            "cannot check in an appointment in state APPOINTMENT_STATE_HELD"
        );
        let err = apply(State::Unspecified, Action::Confirm, now()).unwrap_err();
        assert_eq!(
            err.message,
            "cannot confirm an appointment in state APPOINTMENT_STATE_UNSPECIFIED"
        );
        let err = apply(held_until(-1), Action::Confirm, now()).unwrap_err();
        assert_eq!(
            err,
            ApiError::new(
                Code::FailedPrecondition,
                "HOLD_EXPIRED",
                "the hold lapsed: search and book again"
            )
        );
        let err = apply(State::Booked, Action::Reschedule, now());
        assert_eq!(
            err.map(|t| t.to),
            Ok(State::Booked),
            "rescheduling keeps the state"
        );
        for (verb, action) in [
            ("confirm", Action::Confirm),
            ("complete", Action::Complete),
            ("reschedule", Action::Reschedule),
        ] {
            let err = apply(State::Expired, action, now()).unwrap_err();
            assert_eq!(
                err.message,
                format!("cannot {verb} an appointment in state APPOINTMENT_STATE_EXPIRED")
            );
        }
    }
}
