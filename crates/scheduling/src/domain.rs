//! Pure rules of the Scheduling resources: validation, and turning stored resources into the values
//! slot search works on ([`crate::availability`], [`crate::eligibility`]).

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use pm_api::scheduling::{
    Appointment, AppointmentState, AvailabilityException, AvailabilityRule, ExceptionKind,
    ServiceLine, VisitType, Weekday,
};
use pm_api::types::{Date, Interval as WireInterval};
use pm_runtime::error::Violations;
use pm_runtime::{ApiError, ApiResult};
use prost_types::{Duration, Timestamp};

use crate::availability::{self, Interval, WeeklyRule};
use crate::eligibility;
use crate::lifecycle;

/// Longest window a slot search may cover.
pub const MAX_WINDOW: TimeDelta = TimeDelta::days(31);
/// Longest a slot may be held before it is confirmed.
pub const MAX_HOLD: TimeDelta = TimeDelta::minutes(30);
/// Longest step between slot starts a search may ask for.
pub const MAX_STEP: TimeDelta = TimeDelta::days(1);

/// A wire timestamp as a UTC instant; `None` outside the API's range (years 1 to 9999) or when
/// not normalized, so that the days and hours later added to an instant can never overflow.
pub fn instant(ts: &Timestamp) -> Option<DateTime<Utc>> {
    if !pm_runtime::time::is_valid(ts) {
        return None;
    }
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// When an appointment (as requested) starts: INVALID_ARGUMENT on
/// `appointment.interval.start_time` when it does not say.
pub fn start_of(a: &pm_api::scheduling::Appointment) -> ApiResult<DateTime<Utc>> {
    a.interval
        .as_ref()
        .and_then(|i| i.start_time.as_ref())
        .and_then(instant)
        .ok_or_else(|| ApiError::invalid("appointment.interval.start_time", "required"))
}

/// A UTC instant on the wire.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An interval on the wire.
pub fn wire_interval(i: Interval) -> WireInterval {
    WireInterval {
        start_time: Some(timestamp(i.start())),
        end_time: Some(timestamp(i.end())),
    }
}

/// A wire interval, both ends set and start before end.
pub fn interval(value: Option<&WireInterval>, field: &str) -> ApiResult<Interval> {
    let value = value.ok_or_else(|| ApiError::invalid(field, "required"))?;
    let end_of = |ts: Option<&Timestamp>, end: &str| {
        let ts = ts.ok_or_else(|| ApiError::invalid(format!("{field}.{end}"), "required"))?;
        instant(ts).ok_or_else(|| {
            ApiError::invalid(
                format!("{field}.{end}"),
                "a normalized instant in years 1 to 9999",
            )
        })
    };
    let start = end_of(value.start_time.as_ref(), "start_time")?;
    let end = end_of(value.end_time.as_ref(), "end_time")?;
    Interval::new(start, end)
        .map_err(|_| ApiError::invalid(format!("{field}.end_time"), "must be after start_time"))
}

/// A whole number of minutes from a wire duration (`None` when unset).
fn minutes(value: Option<&Duration>) -> Option<i64> {
    value.map(|d| {
        if d.nanos == 0 && d.seconds % 60 == 0 {
            d.seconds / 60
        } else {
            -1
        }
    })
}

/// A stored visit type's duration. Validated at creation (whole minutes, at most 480), checked
/// anyway so that no stored value can panic a search.
fn delta(value: Option<&Duration>) -> TimeDelta {
    value
        .and_then(|d| TimeDelta::try_seconds(d.seconds))
        .unwrap_or_default()
}

/// A hold's time to live: 1 second to [`MAX_HOLD`], INVALID_ARGUMENT on `hold_ttl` otherwise.
/// Checked before it becomes a `TimeDelta`: any i64 of seconds arrives here, and
/// `TimeDelta::seconds` panics past ±i64::MAX / 1000.
pub fn hold_ttl(ttl: &Duration) -> ApiResult<TimeDelta> {
    TimeDelta::try_seconds(ttl.seconds)
        .filter(|ttl| *ttl > TimeDelta::zero() && *ttl <= MAX_HOLD)
        .ok_or_else(|| ApiError::invalid("hold_ttl", "from 1 second to 30 minutes"))
}

/// A slot search's step between slot starts (zero when unset: the search's own default): whole
/// minutes from 1 minute to [`MAX_STEP`], INVALID_ARGUMENT on `step` otherwise. A step longer
/// than a day would find no more than one a day does.
pub fn slot_step(step: Option<&Duration>) -> ApiResult<TimeDelta> {
    let Some(step) = step else {
        return Ok(TimeDelta::zero());
    };
    if (60..=MAX_STEP.num_seconds()).contains(&step.seconds)
        && step.seconds % 60 == 0
        && step.nanos == 0
        && let Some(step) = TimeDelta::try_seconds(step.seconds)
    {
        return Ok(step);
    }
    Err(ApiError::invalid(
        "step",
        "whole minutes, from 1 minute to 24 hours",
    ))
}

/// A duration on the wire.
pub fn duration(d: TimeDelta) -> Duration {
    Duration {
        seconds: d.num_seconds(),
        nanos: 0,
    }
}

/// Checks a visit type as created.
pub fn validate_visit_type(v: &VisitType) -> ApiResult<()> {
    let mut errors = Violations::new("visit_type");
    errors.check(
        !v.code.is_empty()
            && v.code.len() <= 63
            && v.code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "code",
        "required: 1 to 63 lowercase letters, digits and dashes",
    );
    errors.check(
        !v.display_name.trim().is_empty() && v.display_name.len() <= 200,
        "display_name",
        "required, at most 200 characters",
    );
    errors.check(
        matches!(minutes(v.duration.as_ref()), Some(5..=480)),
        "duration",
        "required: whole minutes from 5 to 480",
    );
    for (field, value) in [
        ("buffer_before", &v.buffer_before),
        ("buffer_after", &v.buffer_after),
    ] {
        errors.check(
            matches!(minutes(value.as_ref()), None | Some(0..=120)),
            field,
            "whole minutes from 0 to 120",
        );
    }
    errors.finish()
}

/// The visit type as slot search sees it.
pub fn visit_type(v: &VisitType) -> eligibility::VisitType {
    eligibility::VisitType {
        code: v.code.clone(),
        duration: delta(v.duration.as_ref()),
        buffer_before: delta(v.buffer_before.as_ref()),
        buffer_after: delta(v.buffer_after.as_ref()),
        pathway_step: (!v.pathway_step.is_empty()).then(|| v.pathway_step.clone()),
        needs_room: v.needs_room,
    }
}

fn local_time(value: &str) -> Option<NaiveTime> {
    (value.len() == 5)
        .then(|| NaiveTime::parse_from_str(value, "%H:%M").ok())
        .flatten()
}

fn date(value: Option<&Date>) -> Option<NaiveDate> {
    value.and_then(|d| {
        NaiveDate::from_ymd_opt(
            d.year,
            u32::try_from(d.month).ok()?,
            u32::try_from(d.day).ok()?,
        )
    })
}

fn weekday(value: i32) -> Option<chrono::Weekday> {
    use chrono::Weekday as W;
    Some(match Weekday::try_from(value).ok()? {
        Weekday::Monday => W::Mon,
        Weekday::Tuesday => W::Tue,
        Weekday::Wednesday => W::Wed,
        Weekday::Thursday => W::Thu,
        Weekday::Friday => W::Fri,
        Weekday::Saturday => W::Sat,
        Weekday::Sunday => W::Sun,
        Weekday::Unspecified => return None,
    })
}

/// Whether the unit's effective workflow rules allow a visit type, checked when it is written so
/// that a visit type that could never be booked is refused at once (and not found out later as a
/// FindSlots exclusion): its code must be one of `allowed_visit_types` and its pathway step, if any,
/// one of `care_pathway_steps`. FAILED_PRECONDITION naming the field: the request is well formed,
/// the unit's rules do not have it.
pub fn check_visit_type_allowed(v: &VisitType, unit: &eligibility::UnitPolicy) -> ApiResult<()> {
    if !unit.allowed_visit_types.contains(&v.code) {
        return Err(ApiError::precondition(
            "VISIT_TYPE_NOT_ALLOWED",
            format!(
                "visit_type.code: {} is not among the allowed visit types of {} (its workflow rules, inherited ones included)",
                v.code, unit.unit
            ),
        )
        .with_violation("visit_type.code", "is not an allowed visit type of the unit")
        .with_meta("unit", &unit.unit));
    }
    if !v.pathway_step.is_empty() && !unit.care_pathway_steps.contains(&v.pathway_step) {
        return Err(ApiError::precondition(
            "PATHWAY_STEP_UNKNOWN",
            format!(
                "visit_type.pathway_step: {} is not a step of the care pathway of {}",
                v.pathway_step, unit.unit
            ),
        )
        .with_violation(
            "visit_type.pathway_step",
            "is not a step of the unit's care pathway",
        )
        .with_meta("unit", &unit.unit));
    }
    Ok(())
}

/// Checks an availability rule as created (the zone is checked once Org gave it).
pub fn validate_rule(r: &AvailabilityRule) -> ApiResult<()> {
    let mut errors = Violations::new("availability_rule");
    errors.check(weekday(r.weekday).is_some(), "weekday", "required");
    let start = local_time(&r.start_time);
    let end = local_time(&r.end_time);
    errors.check(start.is_some(), "start_time", "required, HH:MM");
    errors.check(end.is_some(), "end_time", "required, HH:MM");
    if let (Some(start), Some(end)) = (start, end) {
        errors.check(
            end > start,
            "end_time",
            "must be after start_time (same day)",
        );
    }
    let from = date(r.effective_from.as_ref());
    errors.check(from.is_some(), "effective_from", "required, a valid date");
    if r.effective_until.is_some() {
        let until = date(r.effective_until.as_ref());
        errors.check(until.is_some(), "effective_until", "a valid date");
        if let (Some(from), Some(until)) = (from, until) {
            errors.check(
                until >= from,
                "effective_until",
                "must not be before effective_from",
            );
        }
    }
    errors.finish()
}

/// A stored rule as a weekly rule in its location's zone.
pub fn weekly_rule(r: &AvailabilityRule) -> ApiResult<WeeklyRule> {
    let broken = |what: &str| ApiError::internal("reading an availability rule", &what);
    let (Some(day), Some(start), Some(end), Some(from)) = (
        weekday(r.weekday),
        local_time(&r.start_time),
        local_time(&r.end_time),
        date(r.effective_from.as_ref()),
    ) else {
        return Err(broken("invalid fields"));
    };
    // The wire's last date is inclusive; the domain's end date is exclusive.
    let until = date(r.effective_until.as_ref()).and_then(|d| d.succ_opt());
    WeeklyRule::with_zone_name(day, start, end, &r.time_zone, from, until)
        .map_err(|e| broken(&e.to_string()))
}

/// Checks an exception as created.
pub fn validate_exception(e: &AvailabilityException) -> ApiResult<()> {
    let mut errors = Violations::new("availability_exception");
    errors.check(
        ExceptionKind::try_from(e.kind).is_ok_and(|k| k != ExceptionKind::Unspecified),
        "kind",
        "required",
    );
    errors.check(
        e.description.len() <= 200,
        "description",
        "at most 200 characters",
    );
    errors.finish()?;
    interval(e.interval.as_ref(), "availability_exception.interval").map(|_| ())
}

/// A stored exception as the availability domain sees it.
pub fn exception(e: &AvailabilityException) -> ApiResult<availability::Exception> {
    let span = interval(e.interval.as_ref(), "interval")?;
    let kind = match ExceptionKind::try_from(e.kind) {
        Ok(ExceptionKind::Closure) => availability::ExceptionKind::Closure,
        Ok(ExceptionKind::Holiday) => availability::ExceptionKind::Holiday,
        _ => availability::ExceptionKind::TimeOff,
    };
    availability::Exception::new(span.start(), span.end(), kind)
        .map_err(|e| ApiError::internal("reading an exception", &e))
}

/// `interval` widened by the visit's buffers: the time an appointment occupies.
pub fn padded(interval: Interval, visit: &eligibility::VisitType) -> ApiResult<Interval> {
    Interval::new(
        interval.start() - visit.buffer_before,
        interval.end() + visit.buffer_after,
    )
    .map_err(|e| ApiError::internal("padding an appointment", &e))
}

/// Where a stored appointment is in its lifecycle. A state this version does not know is
/// [`lifecycle::State::Unspecified`], which accepts no action; a hold's lapse is `None` when
/// missing or out of range.
pub fn lifecycle_state(a: &Appointment) -> lifecycle::State {
    use lifecycle::State;
    match AppointmentState::try_from(a.state).unwrap_or(AppointmentState::Unspecified) {
        AppointmentState::Unspecified => State::Unspecified,
        AppointmentState::Held => State::Held {
            lapses_at: a.hold_expire_time.as_ref().and_then(instant),
        },
        AppointmentState::Booked => State::Booked,
        AppointmentState::CheckedIn => State::CheckedIn,
        AppointmentState::Completed => State::Completed,
        AppointmentState::Cancelled => State::Cancelled,
        AppointmentState::NoShow => State::NoShow,
        AppointmentState::Expired => State::Expired,
    }
}

/// A lifecycle state on the wire.
pub fn wire_state(state: lifecycle::State) -> AppointmentState {
    use lifecycle::State;
    match state {
        State::Unspecified => AppointmentState::Unspecified,
        State::Held { .. } => AppointmentState::Held,
        State::Booked => AppointmentState::Booked,
        State::CheckedIn => AppointmentState::CheckedIn,
        State::Completed => AppointmentState::Completed,
        State::Cancelled => AppointmentState::Cancelled,
        State::NoShow => AppointmentState::NoShow,
        State::Expired => AppointmentState::Expired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_round_trip_and_keep_their_api_names() {
        for value in 0..=8 {
            let a = Appointment {
                state: value,
                ..Default::default()
            };
            let state = lifecycle_state(&a);
            let wire = AppointmentState::try_from(value).unwrap_or(AppointmentState::Unspecified);
            assert_eq!(wire_state(state), wire, "{value}");
            // The refusals' messages name the state as the API spells it.
            assert_eq!(state.api_name(), wire.as_str_name(), "{value}");
        }
    }

    fn d(seconds: i64, nanos: i32) -> Duration {
        Duration { seconds, nanos }
    }

    fn field_of(err: ApiError) -> Vec<String> {
        err.violations.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn hold_ttl_out_of_range_is_invalid_not_a_panic() {
        for seconds in [
            i64::MAX,
            i64::MIN,
            i64::MAX / 1000 + 1,
            -1,
            0,
            1_801,
            315_576_000_001,
        ] {
            let err = hold_ttl(&d(seconds, 0)).err();
            assert_eq!(
                err.map(field_of),
                Some(vec!["hold_ttl".to_string()]),
                "{seconds}"
            );
        }
        assert_eq!(hold_ttl(&d(1, 0)).ok(), Some(TimeDelta::seconds(1)));
        assert_eq!(hold_ttl(&d(1_800, 0)).ok(), Some(MAX_HOLD));
    }

    #[test]
    fn slot_step_out_of_range_is_invalid_not_a_panic() {
        for (seconds, nanos) in [
            (i64::MAX, 0),
            (i64::MIN, 0),
            (i64::MAX - i64::MAX % 60, 0),
            (86_460, 0),
            (59, 0),
            (0, 0),
            (-60, 0),
            (90, 0),
            (60, 1),
        ] {
            let err = slot_step(Some(&d(seconds, nanos))).err();
            assert_eq!(
                err.map(field_of),
                Some(vec!["step".to_string()]),
                "{seconds}s {nanos}ns"
            );
        }
        assert_eq!(slot_step(None).ok(), Some(TimeDelta::zero()));
        assert_eq!(slot_step(Some(&d(60, 0))).ok(), Some(TimeDelta::minutes(1)));
        assert_eq!(slot_step(Some(&d(86_400, 0))).ok(), Some(MAX_STEP));
    }

    #[test]
    fn instants_outside_years_1_to_9999_are_refused() {
        for (seconds, nanos) in [
            (i64::MAX, 0),
            (i64::MIN, 0),
            (253_402_300_800, 0),
            (-62_135_596_801, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            assert_eq!(instant(&Timestamp { seconds, nanos }), None, "{seconds}");
        }
        assert!(
            instant(&Timestamp {
                seconds: 253_402_300_799,
                nanos: 999_999_999
            })
            .is_some()
        );
        let err = interval(
            Some(&WireInterval {
                start_time: Some(Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                end_time: Some(Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
            }),
            "window",
        )
        .err();
        assert_eq!(
            err.map(field_of),
            Some(vec!["window.start_time".to_string()])
        );
    }
}

/// The most service lines one encounter carries.
pub const MAX_SERVICE_LINES: usize = 50;

/// Checks the shape of an encounter's service lines: a 5-character code of letters and digits, at
/// most four 2-character modifiers, 1 to 999 units, and 1 to 4 pointers, each at one of the
/// encounter's `diagnoses` (1-based). Code sets themselves are Billing's to check when it prices.
pub fn validate_service_lines(lines: &[ServiceLine], diagnoses: usize) -> ApiResult<()> {
    if lines.len() > MAX_SERVICE_LINES {
        return Err(ApiError::invalid(
            "service_lines",
            format!("at most {MAX_SERVICE_LINES} lines"),
        ));
    }
    let alphanumeric = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    };
    let mut violations = Violations::new("");
    for (i, line) in lines.iter().enumerate() {
        let at = |field: &str| format!("service_lines[{i}].{field}");
        violations.check(
            alphanumeric(&line.code, 5),
            at("code"),
            "5 uppercase letters or digits (a CPT or HCPCS code)",
        );
        violations.check(line.modifiers.len() <= 4, at("modifiers"), "at most 4");
        for (m, modifier) in line.modifiers.iter().enumerate() {
            violations.check(
                alphanumeric(modifier, 2),
                at(&format!("modifiers[{m}]")),
                "2 uppercase letters or digits",
            );
        }
        violations.check(
            (1..=999).contains(&line.units),
            at("units"),
            "from 1 to 999",
        );
        violations.check(
            (1..=4).contains(&line.diagnosis_pointers.len()),
            at("diagnosis_pointers"),
            "1 to 4 pointers into diagnoses",
        );
        for (p, pointer) in line.diagnosis_pointers.iter().enumerate() {
            let points = usize::try_from(*pointer).is_ok_and(|n| (1..=diagnoses).contains(&n));
            violations.check(
                points,
                at(&format!("diagnosis_pointers[{p}]")),
                format!("points at no diagnosis (the encounter has {diagnoses})"),
            );
        }
        violations.check(
            line.place_of_service.is_empty() || alphanumeric(&line.place_of_service, 2),
            at("place_of_service"),
            "two digits, or empty for the unit's",
        );
    }
    violations.finish()
}

#[cfg(test)]
mod service_line_tests {
    use super::*;

    fn line(code: &str, modifiers: &[&str], units: i32, pointers: &[i32]) -> ServiceLine {
        ServiceLine {
            code: code.into(),
            modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
            units,
            diagnosis_pointers: pointers.to_vec(),
            place_of_service: String::new(),
        }
    }

    fn fields(result: ApiResult<()>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(e) => e.violations.into_iter().map(|(f, _)| f).collect(),
        }
    }

    #[test]
    fn each_bad_part_of_a_line_is_named() {
        assert!(
            fields(validate_service_lines(
                &[line("99213", &["25"], 1, &[1, 2])],
                2
            ))
            .is_empty()
        );
        let cases: [(ServiceLine, &str); 7] = [
            (line("9921", &[], 1, &[1]), "service_lines[0].code"),
            (
                line("99213", &["2"], 1, &[1]),
                "service_lines[0].modifiers[0]",
            ),
            (
                line("99213", &["25", "59", "GT", "95", "XU"], 1, &[1]),
                "service_lines[0].modifiers",
            ),
            (line("99213", &[], 0, &[1]), "service_lines[0].units"),
            (
                line("99213", &[], 1, &[]),
                "service_lines[0].diagnosis_pointers",
            ),
            (
                line("99213", &[], 1, &[3]),
                "service_lines[0].diagnosis_pointers[0]",
            ),
            (
                line("99213", &[], 1, &[0]),
                "service_lines[0].diagnosis_pointers[0]",
            ),
        ];
        for (bad, field) in cases {
            assert_eq!(fields(validate_service_lines(&[bad], 2)), vec![field]);
        }
        let too_many = vec![line("99213", &[], 1, &[1]); MAX_SERVICE_LINES + 1];
        assert_eq!(
            fields(validate_service_lines(&too_many, 1)),
            vec!["service_lines"]
        );
    }
}
