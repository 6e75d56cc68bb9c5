//! Availability: recurring weekly rules, exceptions, and their expansion into UTC intervals and
//! bookable slots.
//!
//! A [`WeeklyRule`] says "on this weekday, from `start` to `end` local time in this IANA zone,
//! effective from this date (inclusive) until that date (exclusive)". [`expand`] turns a set of
//! rules into concrete UTC [`Interval`]s inside a window, subtracts [`Exception`]s (time off,
//! closures, holidays), and returns the result clipped, merged and sorted. [`slots`] then cuts
//! bookable slots out of those intervals.
//!
//! # Daylight-saving time
//!
//! Rules are wall-clock rules: a 09:00–17:00 clinic is open 09:00–17:00 *local* on both sides of a
//! daylight-saving change, so its UTC instants move by the size of the change. Two local times
//! need a decision, and both are resolved the same way for every zone:
//!
//! * **Non-existent local time** (spring-forward gap, e.g. 02:30 in New York on 2026-03-08): it
//!   resolves to the *first valid instant after the gap*, i.e. the transition instant itself
//!   (02:30 → 03:00 EDT = 07:00Z). It is *not* shifted by the gap length (which would give
//!   03:30). This applies to both ends of a rule, so a rule lying wholly inside a gap is empty
//!   that day and produces nothing.
//! * **Ambiguous local time** (fall-back overlap, e.g. 01:30 in Chicago on 2026-11-01): the
//!   *start* takes the earlier instant (the first time the clock shows it) and the *end* takes the
//!   later instant (the last time the clock shows it) as long as that keeps `start < end`,
//!   otherwise the earlier one. So an interval runs from the first moment the wall clock reads
//!   `start` to the last moment it reads `end`, and the repeated hour is available in full.
//!
//! All intervals are half-open, `[start, end)`.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;

/// Why a rule, exception or interval was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvailabilityError {
    /// A weekly rule's end time is not after its start time (rules cannot span midnight: split
    /// them into two rules on consecutive weekdays).
    EndNotAfterStart { start: NaiveTime, end: NaiveTime },
    /// The zone name is not an IANA time-zone identifier known to the tz database.
    UnknownZone(String),
    /// The exclusive `effective_until` date is not after `effective_from`.
    UntilNotAfterFrom { from: NaiveDate, until: NaiveDate },
    /// An exception or interval whose end is not after its start.
    EmptyInterval {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

impl fmt::Display for AvailabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndNotAfterStart { start, end } => {
                write!(f, "end time {end} is not after start time {start}")
            }
            Self::UnknownZone(name) => write!(f, "unknown IANA time zone {name:?}"),
            Self::UntilNotAfterFrom { from, until } => write!(
                f,
                "effective_until {until} is not after effective_from {from}"
            ),
            Self::EmptyInterval { start, end } => {
                write!(f, "interval end {end} is not after its start {start}")
            }
        }
    }
}

impl std::error::Error for AvailabilityError {}

/// Parses an IANA time-zone identifier such as `"America/New_York"`.
pub fn parse_zone(name: &str) -> Result<Tz, AvailabilityError> {
    Tz::from_str(name).map_err(|_| AvailabilityError::UnknownZone(name.to_owned()))
}

/// A half-open span of time `[start, end)` with `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Interval {
    /// An interval `[start, end)`; rejects empty and inverted spans.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, AvailabilityError> {
        if start < end {
            Ok(Self { start, end })
        } else {
            Err(AvailabilityError::EmptyInterval { start, end })
        }
    }

    /// The first instant of the interval.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The first instant after the interval.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The length of the interval (always positive).
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }

    /// Whether `other` lies entirely inside this interval.
    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Builds an interval only if it is non-empty (the internal, non-failing constructor).
    fn non_empty(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<Self> {
        (start < end).then_some(Self { start, end })
    }
}

/// A recurring weekly availability rule in a location's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeeklyRule {
    weekday: Weekday,
    start: NaiveTime,
    end: NaiveTime,
    zone: Tz,
    effective_from: NaiveDate,
    effective_until: Option<NaiveDate>,
}

impl WeeklyRule {
    /// A rule open on `weekday` from `start` to `end` (local wall-clock time in `zone`, same day,
    /// `end > start`), for local dates `effective_from <= date < effective_until` (open-ended if
    /// `effective_until` is `None`).
    pub fn new(
        weekday: Weekday,
        start: NaiveTime,
        end: NaiveTime,
        zone: Tz,
        effective_from: NaiveDate,
        effective_until: Option<NaiveDate>,
    ) -> Result<Self, AvailabilityError> {
        if end <= start {
            return Err(AvailabilityError::EndNotAfterStart { start, end });
        }
        if let Some(until) = effective_until
            && until <= effective_from
        {
            return Err(AvailabilityError::UntilNotAfterFrom {
                from: effective_from,
                until,
            });
        }
        Ok(Self {
            weekday,
            start,
            end,
            zone,
            effective_from,
            effective_until,
        })
    }

    /// Like [`WeeklyRule::new`], with the zone given as an IANA identifier (`"Europe/Berlin"`).
    pub fn with_zone_name(
        weekday: Weekday,
        start: NaiveTime,
        end: NaiveTime,
        zone: &str,
        effective_from: NaiveDate,
        effective_until: Option<NaiveDate>,
    ) -> Result<Self, AvailabilityError> {
        Self::new(
            weekday,
            start,
            end,
            parse_zone(zone)?,
            effective_from,
            effective_until,
        )
    }

    pub fn weekday(&self) -> Weekday {
        self.weekday
    }

    pub fn start(&self) -> NaiveTime {
        self.start
    }

    pub fn end(&self) -> NaiveTime {
        self.end
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn effective_from(&self) -> NaiveDate {
        self.effective_from
    }

    /// The first local date on which the rule no longer applies, if any.
    pub fn effective_until(&self) -> Option<NaiveDate> {
        self.effective_until
    }

    /// Whether the rule produces availability on this local date.
    pub fn applies_on(&self, date: NaiveDate) -> bool {
        date.weekday() == self.weekday
            && self.effective_from <= date
            && self.effective_until.is_none_or(|until| date < until)
    }

    /// The rule's interval on `date` (a local date in the rule's zone), resolved to UTC with the
    /// DST choices documented at module level. `None` if the rule does not apply that day or
    /// the resolved interval is empty (a rule wholly inside a spring-forward gap).
    pub fn interval_on(&self, date: NaiveDate) -> Option<Interval> {
        if !self.applies_on(date) {
            return None;
        }
        let start = resolve_start(self.zone, date.and_time(self.start))?;
        let end = resolve_end(self.zone, date.and_time(self.end), start)?;
        Interval::non_empty(start, end)
    }
}

/// Why an exception blocks time. All kinds block time the same way; the kind is kept for
/// display and auditing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionKind {
    TimeOff,
    Closure,
    Holiday,
}

/// A span of time in which no availability is offered, whatever the rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    span: Interval,
    kind: ExceptionKind,
}

impl Exception {
    /// An exception blocking `[start, end)`; rejects empty and inverted spans.
    pub fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        kind: ExceptionKind,
    ) -> Result<Self, AvailabilityError> {
        Ok(Self {
            span: Interval::new(start, end)?,
            kind,
        })
    }

    /// An exception blocking the whole local day `date` in `zone`: from local midnight to the
    /// next local midnight (a midnight that falls in a DST gap resolves as documented at module
    /// level). Fails only for a local day that does not exist at all (e.g. Pacific/Apia
    /// 2011-12-30).
    pub fn all_day(
        date: NaiveDate,
        zone: Tz,
        kind: ExceptionKind,
    ) -> Result<Self, AvailabilityError> {
        let next = date.succ_opt().unwrap_or(NaiveDate::MAX);
        let (Some(start), Some(end)) = (
            resolve_start(zone, date.and_time(NaiveTime::MIN)),
            resolve_start(zone, next.and_time(NaiveTime::MIN)),
        ) else {
            // Only reachable at the very edges of chrono's date range.
            return Err(AvailabilityError::EmptyInterval {
                start: DateTime::<Utc>::MIN_UTC,
                end: DateTime::<Utc>::MIN_UTC,
            });
        };
        Self::new(start, end, kind)
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.span.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.span.end
    }

    pub fn kind(&self) -> ExceptionKind {
        self.kind
    }

    pub fn span(&self) -> Interval {
        self.span
    }
}

/// Expands `rules` into UTC availability inside `[window_start, window_end)`.
///
/// For every local date (in each rule's own zone) that the window touches, each rule that applies
/// that day contributes its local interval converted to UTC (DST handling as documented at module
/// level). The result has the exceptions subtracted, is clipped to the window, and is merged
/// (overlapping or touching intervals become one) and sorted by start. An empty or inverted window
/// gives no intervals.
pub fn expand(
    rules: &[WeeklyRule],
    exceptions: &[Exception],
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
) -> Vec<Interval> {
    let Some(window) = Interval::non_empty(window_start, window_end) else {
        return Vec::new();
    };

    let mut raw = Vec::new();
    for rule in rules {
        // A rule's interval on local date D lies within D's local day, so the local dates the
        // window touches (with a day of slack on each side) cover everything; clipping trims it.
        let first = window_start
            .with_timezone(&rule.zone)
            .date_naive()
            .pred_opt()
            .unwrap_or(NaiveDate::MIN)
            .max(rule.effective_from);
        let mut last = window_end
            .with_timezone(&rule.zone)
            .date_naive()
            .succ_opt()
            .unwrap_or(NaiveDate::MAX);
        if let Some(until) = rule.effective_until {
            last = last.min(until);
        }
        for date in first.iter_days().take_while(|d| *d <= last) {
            if let Some(interval) = rule.interval_on(date)
                && let Some(clipped) = intersect(interval, window)
            {
                raw.push(clipped);
            }
        }
    }

    let available = merge(raw);
    let blocked = merge(exceptions.iter().map(Exception::span).collect());
    subtract(&available, &blocked)
}

/// Bookable slots inside `intervals`.
///
/// A slot `[s, s + duration)` is offered when `[s - buffer_before, s + duration + buffer_after)`
/// fits inside one interval. Candidate starts within an interval are
/// `interval.start + buffer_before + k * step` for `k = 0, 1, …` (i.e. aligned to the interval's
/// start). The intervals are merged first (availability is their union), and slots come back
/// sorted. A non-positive `duration` or `step` gives no slots; negative buffers count as zero.
pub fn slots(
    intervals: &[Interval],
    duration: TimeDelta,
    step: TimeDelta,
    buffer_before: TimeDelta,
    buffer_after: TimeDelta,
) -> Vec<Interval> {
    if duration <= TimeDelta::zero() || step <= TimeDelta::zero() {
        return Vec::new();
    }
    let buffer_before = buffer_before.max(TimeDelta::zero());
    let buffer_after = buffer_after.max(TimeDelta::zero());
    let Some(tail) = duration.checked_add(&buffer_after) else {
        return Vec::new();
    };

    let mut out = Vec::new();
    for interval in merge(intervals.to_vec()) {
        let mut start = interval.start.checked_add_signed(buffer_before);
        while let Some(s) = start {
            match s.checked_add_signed(tail) {
                Some(reach) if reach <= interval.end => {}
                _ => break,
            }
            if let Some(slot) = s
                .checked_add_signed(duration)
                .and_then(|end| Interval::non_empty(s, end))
            {
                out.push(slot);
            }
            start = s.checked_add_signed(step);
        }
    }
    out
}

/// The UTC instant of a rule's local start time (earlier instant when ambiguous, first instant
/// after the gap when non-existent).
fn resolve_start(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.to_utc()),
        LocalResult::None => first_instant_after_gap(zone, local),
    }
}

/// The UTC instant of a rule's local end time (later instant when ambiguous, if that keeps it
/// after `start`; first instant after the gap when non-existent).
fn resolve_end(zone: Tz, local: NaiveDateTime, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(earlier, later) => {
            let later = later.to_utc();
            Some(if later > start {
                later
            } else {
                earlier.to_utc()
            })
        }
        LocalResult::None => first_instant_after_gap(zone, local),
    }
}

/// For a local time that does not exist in `zone`, the instant at which the gap ends (the DST
/// transition instant): the first instant whose local time is past `local`.
///
/// chrono-tz does not expose its transition table, so this binary-searches whole seconds (tz
/// transitions fall on whole seconds) within ±16 hours of `local` read as UTC, a range that
/// contains every UTC offset the tz database uses.
fn first_instant_after_gap(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    const REACH: TimeDelta = TimeDelta::hours(16);
    let is_past = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .is_some_and(|t| t.with_timezone(&zone).naive_local() > local)
    };
    // Invariant: the local time at `lo` is not past `local`, the one at `hi` is.
    let mut lo = local.checked_sub_signed(REACH)?.and_utc().timestamp();
    let mut hi = local.checked_add_signed(REACH)?.and_utc().timestamp();
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if is_past(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// The overlap of two intervals, if any.
fn intersect(a: Interval, b: Interval) -> Option<Interval> {
    Interval::non_empty(a.start.max(b.start), a.end.min(b.end))
}

/// Sorts and merges overlapping or touching intervals.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        match out.last_mut() {
            Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
            _ => out.push(interval),
        }
    }
    out
}

/// The free part of `open` (sorted and merged, as [`expand`] gives it): without `busy` (any order,
/// may overlap; a provider's booked and held time), sorted and merged.
pub fn free_time(open: &[Interval], busy: &[Interval]) -> Vec<Interval> {
    subtract(open, &merge(busy.to_vec()))
}

/// `available` minus `blocked`; both sorted and merged, and so is the result.
fn subtract(available: &[Interval], blocked: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut b = 0;
    for interval in available {
        let mut cursor = interval.start;
        // Skip blocks that end before this interval starts; they cannot matter later either.
        while b < blocked.len() && blocked[b].end <= interval.start {
            b += 1;
        }
        let mut i = b;
        while i < blocked.len() && blocked[i].start < interval.end {
            let block = blocked[i];
            if let Some(piece) = Interval::non_empty(cursor, block.start.min(interval.end)) {
                out.push(piece);
            }
            cursor = cursor.max(block.end);
            if block.end >= interval.end {
                break;
            }
            i += 1;
        }
        if let Some(piece) = Interval::non_empty(cursor, interval.end) {
            out.push(piece);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Weekday::{Mon, Sun};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn iv(start: &str, end: &str) -> Interval {
        Interval::new(utc(start), utc(end)).unwrap()
    }

    fn rule(day: Weekday, start: NaiveTime, end: NaiveTime, zone: &str) -> WeeklyRule {
        WeeklyRule::with_zone_name(day, start, end, zone, d("2026-01-01"), None).unwrap()
    }

    fn expand_all(rules: &[WeeklyRule], from: &str, to: &str) -> Vec<Interval> {
        expand(rules, &[], utc(from), utc(to))
    }

    // --- DST: spring forward -------------------------------------------------------------

    #[test]
    fn new_york_monday_clinic_across_spring_forward() {
        // 2026-03-08 (Sun): EST (UTC-5) -> EDT (UTC-4). 09:00-17:00 local on both sides.
        let got = expand_all(
            &[rule(Mon, t(9, 0), t(17, 0), "America/New_York")],
            "2026-03-01T00:00:00Z",
            "2026-03-17T00:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                iv("2026-03-02T14:00:00Z", "2026-03-02T22:00:00Z"), // EST
                iv("2026-03-09T13:00:00Z", "2026-03-09T21:00:00Z"), // EDT
                iv("2026-03-16T13:00:00Z", "2026-03-16T21:00:00Z"), // EDT
            ]
        );
    }

    #[test]
    fn berlin_across_spring_forward_including_the_change_day() {
        // 2026-03-29 (Sun) 01:00Z: CET (UTC+1) -> CEST (UTC+2).
        let zone = "Europe/Berlin";
        let got = expand_all(
            &[
                rule(Mon, t(9, 0), t(17, 0), zone),
                rule(Sun, t(9, 0), t(17, 0), zone),
            ],
            "2026-03-22T00:00:00Z",
            "2026-03-31T00:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                iv("2026-03-22T08:00:00Z", "2026-03-22T16:00:00Z"), // Sun, CET
                iv("2026-03-23T08:00:00Z", "2026-03-23T16:00:00Z"), // Mon, CET
                iv("2026-03-29T07:00:00Z", "2026-03-29T15:00:00Z"), // Sun, change day: CEST
                iv("2026-03-30T07:00:00Z", "2026-03-30T15:00:00Z"), // Mon, CEST
            ]
        );
    }

    // --- DST: fall back ------------------------------------------------------------------

    #[test]
    fn berlin_across_fall_back() {
        // 2026-10-25 (Sun) 01:00Z: CEST (UTC+2) -> CET (UTC+1).
        let got = expand_all(
            &[rule(Mon, t(9, 0), t(17, 0), "Europe/Berlin")],
            "2026-10-19T00:00:00Z",
            "2026-10-27T00:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                iv("2026-10-19T07:00:00Z", "2026-10-19T15:00:00Z"), // CEST
                iv("2026-10-26T08:00:00Z", "2026-10-26T16:00:00Z"), // CET
            ]
        );
    }

    #[test]
    fn chicago_across_fall_back_including_the_change_day() {
        // 2026-11-01 (Sun) 07:00Z: CDT (UTC-5) -> CST (UTC-6).
        let zone = "America/Chicago";
        let got = expand_all(
            &[
                rule(Sun, t(9, 0), t(17, 0), zone),
                rule(Mon, t(9, 0), t(17, 0), zone),
            ],
            "2026-10-25T00:00:00Z",
            "2026-11-03T00:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                iv("2026-10-25T14:00:00Z", "2026-10-25T22:00:00Z"), // Sun, CDT
                iv("2026-10-26T14:00:00Z", "2026-10-26T22:00:00Z"), // Mon, CDT
                iv("2026-11-01T15:00:00Z", "2026-11-01T23:00:00Z"), // Sun, change day: CST
                iv("2026-11-02T15:00:00Z", "2026-11-02T23:00:00Z"), // Mon, CST
            ]
        );
    }

    #[test]
    fn new_york_across_fall_back() {
        // 2026-11-01 (Sun) 06:00Z: EDT (UTC-4) -> EST (UTC-5).
        let got = expand_all(
            &[rule(Mon, t(9, 0), t(17, 0), "America/New_York")],
            "2026-10-26T00:00:00Z",
            "2026-11-03T00:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                iv("2026-10-26T13:00:00Z", "2026-10-26T21:00:00Z"),
                iv("2026-11-02T14:00:00Z", "2026-11-02T22:00:00Z"),
            ]
        );
    }

    // --- DST: rules touching the gap or the overlap ---------------------------------------

    fn on_day(r: WeeklyRule, day: &str) -> Vec<Interval> {
        let date = d(day);
        let from = date.and_time(NaiveTime::MIN).and_utc() - TimeDelta::days(1);
        expand(&[r], &[], from, from + TimeDelta::days(3))
    }

    #[test]
    fn new_york_rule_crossing_the_gap_keeps_its_wall_clock_ends() {
        // 02:00 EST (07:00Z) jumps to 03:00 EDT. 01:30 EST = 06:30Z, 03:30 EDT = 07:30Z: one real
        // hour of availability for two wall-clock hours.
        let got = on_day(
            rule(Sun, t(1, 30), t(3, 30), "America/New_York"),
            "2026-03-08",
        );
        assert_eq!(
            got,
            vec![iv("2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z")]
        );
    }

    #[test]
    fn new_york_start_in_gap_moves_to_end_of_gap_not_by_gap_length() {
        // 02:30 does not exist; it becomes 03:00 EDT = 07:00Z (not 03:30 EDT = 07:30Z).
        let got = on_day(
            rule(Sun, t(2, 30), t(4, 0), "America/New_York"),
            "2026-03-08",
        );
        assert_eq!(
            got,
            vec![iv("2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z")]
        );
    }

    #[test]
    fn new_york_end_in_gap_moves_to_end_of_gap() {
        // 01:00 EST = 06:00Z; 02:30 does not exist -> 03:00 EDT = 07:00Z.
        let got = on_day(
            rule(Sun, t(1, 0), t(2, 30), "America/New_York"),
            "2026-03-08",
        );
        assert_eq!(
            got,
            vec![iv("2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z")]
        );
    }

    #[test]
    fn rule_wholly_inside_the_gap_yields_nothing_that_day_only() {
        let r = rule(Sun, t(2, 10), t(2, 50), "America/New_York");
        assert_eq!(on_day(r.clone(), "2026-03-08"), vec![]);
        // The week before it is an ordinary 40 minutes (EST: 07:10Z-07:50Z).
        assert_eq!(
            on_day(r, "2026-03-01"),
            vec![iv("2026-03-01T07:10:00Z", "2026-03-01T07:50:00Z")]
        );
    }

    #[test]
    fn berlin_start_in_gap_moves_to_end_of_gap() {
        // 2026-03-29 02:00 CET (01:00Z) jumps to 03:00 CEST. 02:15 -> 01:00Z; 05:00 CEST = 03:00Z.
        let got = on_day(rule(Sun, t(2, 15), t(5, 0), "Europe/Berlin"), "2026-03-29");
        assert_eq!(
            got,
            vec![iv("2026-03-29T01:00:00Z", "2026-03-29T03:00:00Z")]
        );
    }

    #[test]
    fn half_hour_gap_in_lord_howe() {
        // Australia/Lord_Howe: 2026-10-04 02:00 (+10:30, = 2026-10-03T15:30Z) jumps to 02:30
        // (+11). 02:10 -> 15:30Z; 03:00 (+11) = 16:00Z.
        let got = on_day(
            rule(Sun, t(2, 10), t(3, 0), "Australia/Lord_Howe"),
            "2026-10-04",
        );
        assert_eq!(
            got,
            vec![iv("2026-10-03T15:30:00Z", "2026-10-03T16:00:00Z")]
        );
    }

    #[test]
    fn chicago_ambiguous_start_takes_earlier_instant() {
        // 01:00-01:59 happens twice on 2026-11-01. Start 01:30 -> first occurrence (CDT) =
        // 06:30Z; end 03:00 CST = 09:00Z.
        let got = on_day(
            rule(Sun, t(1, 30), t(3, 0), "America/Chicago"),
            "2026-11-01",
        );
        assert_eq!(
            got,
            vec![iv("2026-11-01T06:30:00Z", "2026-11-01T09:00:00Z")]
        );
    }

    #[test]
    fn chicago_ambiguous_end_takes_later_instant() {
        // Start 00:30 CDT = 05:30Z; end 01:30 -> last occurrence (CST) = 07:30Z: two real hours.
        let got = on_day(
            rule(Sun, t(0, 30), t(1, 30), "America/Chicago"),
            "2026-11-01",
        );
        assert_eq!(
            got,
            vec![iv("2026-11-01T05:30:00Z", "2026-11-01T07:30:00Z")]
        );
    }

    #[test]
    fn chicago_both_ends_ambiguous_span_first_start_to_last_end() {
        // 01:10 CDT = 06:10Z to 01:50 CST = 07:50Z.
        let got = on_day(
            rule(Sun, t(1, 10), t(1, 50), "America/Chicago"),
            "2026-11-01",
        );
        assert_eq!(
            got,
            vec![iv("2026-11-01T06:10:00Z", "2026-11-01T07:50:00Z")]
        );
    }

    #[test]
    fn berlin_ambiguous_start_takes_earlier_instant() {
        // 2026-10-25: 02:00-02:59 happens twice. 02:30 CEST = 00:30Z; 04:00 CET = 03:00Z.
        let got = on_day(rule(Sun, t(2, 30), t(4, 0), "Europe/Berlin"), "2026-10-25");
        assert_eq!(
            got,
            vec![iv("2026-10-25T00:30:00Z", "2026-10-25T03:00:00Z")]
        );
    }

    #[test]
    fn ambiguous_end_falls_back_to_earlier_instant_when_later_would_not_follow_start() {
        // Directly exercise the guard: a start already past the later instant.
        let zone = parse_zone("America/Chicago").unwrap();
        let local = d("2026-11-01").and_time(t(1, 30));
        let later_start = utc("2026-11-01T07:45:00Z");
        assert_eq!(
            resolve_end(zone, local, later_start),
            Some(utc("2026-11-01T06:30:00Z"))
        );
        assert_eq!(
            resolve_end(zone, local, utc("2026-11-01T06:00:00Z")),
            Some(utc("2026-11-01T07:30:00Z"))
        );
    }

    // --- effective dating ----------------------------------------------------------------

    #[test]
    fn effective_dating_is_from_inclusive_until_exclusive() {
        let r = WeeklyRule::with_zone_name(
            Mon,
            t(9, 0),
            t(17, 0),
            "America/New_York",
            d("2026-03-09"),
            Some(d("2026-03-23")),
        )
        .unwrap();
        let got = expand_all(&[r], "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
        // Not 03-02 (before from), not 03-23 (until is exclusive), not 03-30.
        assert_eq!(
            got,
            vec![
                iv("2026-03-09T13:00:00Z", "2026-03-09T21:00:00Z"),
                iv("2026-03-16T13:00:00Z", "2026-03-16T21:00:00Z"),
            ]
        );
        assert!(
            slots(
                &got,
                TimeDelta::minutes(30),
                TimeDelta::minutes(30),
                TimeDelta::zero(),
                TimeDelta::zero(),
            )
            .iter()
            .all(|s| s.start() >= utc("2026-03-09T13:00:00Z")
                && s.end() <= utc("2026-03-16T21:00:00Z"))
        );
    }

    #[test]
    fn effective_dating_uses_the_local_date_not_the_utc_date() {
        // Tokyo (UTC+9) Monday 07:00-08:00 local on 2026-03-09 is Sunday 22:00Z-23:00Z 03-08.
        let r =
            WeeklyRule::with_zone_name(Mon, t(7, 0), t(8, 0), "Asia/Tokyo", d("2026-03-09"), None)
                .unwrap();
        let got = expand_all(&[r], "2026-03-01T00:00:00Z", "2026-03-10T00:00:00Z");
        assert_eq!(
            got,
            vec![iv("2026-03-08T22:00:00Z", "2026-03-08T23:00:00Z")]
        );
    }

    // --- exceptions ----------------------------------------------------------------------

    #[test]
    fn holiday_removes_a_whole_day_and_time_off_cuts_the_middle() {
        let ny = parse_zone("America/New_York").unwrap();
        let rules = [rule(Mon, t(9, 0), t(17, 0), "America/New_York")];
        let exceptions = [
            Exception::all_day(d("2026-03-16"), ny, ExceptionKind::Holiday).unwrap(),
            // 12:00-13:00 EDT on 03-09.
            Exception::new(
                utc("2026-03-09T16:00:00Z"),
                utc("2026-03-09T17:00:00Z"),
                ExceptionKind::TimeOff,
            )
            .unwrap(),
        ];
        let got = expand(
            &rules,
            &exceptions,
            utc("2026-03-08T00:00:00Z"),
            utc("2026-03-24T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                iv("2026-03-09T13:00:00Z", "2026-03-09T16:00:00Z"),
                iv("2026-03-09T17:00:00Z", "2026-03-09T21:00:00Z"),
                iv("2026-03-23T13:00:00Z", "2026-03-23T21:00:00Z"),
            ]
        );
    }

    #[test]
    fn closures_trim_edges_and_overlapping_exceptions_combine() {
        let rules = [rule(Mon, t(9, 0), t(17, 0), "Europe/Berlin")];
        let exceptions = [
            // Covers the opening (07:00Z-09:00Z on a CEST Monday).
            Exception::new(
                utc("2026-06-01T05:00:00Z"),
                utc("2026-06-01T09:00:00Z"),
                ExceptionKind::Closure,
            )
            .unwrap(),
            // Two overlapping time-offs 12:00Z-13:00Z and 12:30Z-14:00Z.
            Exception::new(
                utc("2026-06-01T12:00:00Z"),
                utc("2026-06-01T13:00:00Z"),
                ExceptionKind::TimeOff,
            )
            .unwrap(),
            Exception::new(
                utc("2026-06-01T12:30:00Z"),
                utc("2026-06-01T14:00:00Z"),
                ExceptionKind::TimeOff,
            )
            .unwrap(),
            // Past the close; must not matter.
            Exception::new(
                utc("2026-06-01T20:00:00Z"),
                utc("2026-06-01T21:00:00Z"),
                ExceptionKind::TimeOff,
            )
            .unwrap(),
        ];
        let got = expand(
            &rules,
            &exceptions,
            utc("2026-06-01T00:00:00Z"),
            utc("2026-06-02T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                iv("2026-06-01T09:00:00Z", "2026-06-01T12:00:00Z"),
                iv("2026-06-01T14:00:00Z", "2026-06-01T15:00:00Z"),
            ]
        );
    }

    #[test]
    fn multi_day_closure_removes_every_day_it_covers() {
        let rules = [
            rule(Mon, t(9, 0), t(17, 0), "Europe/Berlin"),
            rule(Sun, t(9, 0), t(17, 0), "Europe/Berlin"),
        ];
        let closure = Exception::new(
            utc("2026-06-06T00:00:00Z"),
            utc("2026-06-09T00:00:00Z"),
            ExceptionKind::Closure,
        )
        .unwrap();
        let got = expand(
            &rules,
            &[closure],
            utc("2026-06-01T00:00:00Z"),
            utc("2026-06-16T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                iv("2026-06-01T07:00:00Z", "2026-06-01T15:00:00Z"),
                iv("2026-06-14T07:00:00Z", "2026-06-14T15:00:00Z"),
                iv("2026-06-15T07:00:00Z", "2026-06-15T15:00:00Z"),
            ]
        );
    }

    #[test]
    fn all_day_holiday_follows_local_midnights_across_dst() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let h = Exception::all_day(d("2026-03-29"), berlin, ExceptionKind::Holiday).unwrap();
        // 00:00 CET = 23:00Z the day before; next midnight 00:00 CEST = 22:00Z: a 23-hour day.
        assert_eq!(h.start(), utc("2026-03-28T23:00:00Z"));
        assert_eq!(h.end(), utc("2026-03-29T22:00:00Z"));
        assert_eq!(h.kind(), ExceptionKind::Holiday);
    }

    #[test]
    fn a_local_day_that_does_not_exist_cannot_be_a_holiday() {
        // Samoa skipped 2011-12-30 entirely.
        let apia = parse_zone("Pacific/Apia").unwrap();
        assert!(matches!(
            Exception::all_day(d("2011-12-30"), apia, ExceptionKind::Holiday),
            Err(AvailabilityError::EmptyInterval { .. })
        ));
    }

    // --- window, merge, sort -------------------------------------------------------------

    #[test]
    fn window_clips_intervals() {
        let got = expand_all(
            &[rule(Mon, t(9, 0), t(17, 0), "America/New_York")],
            "2026-03-09T15:00:00Z",
            "2026-03-09T18:00:00Z",
        );
        assert_eq!(
            got,
            vec![iv("2026-03-09T15:00:00Z", "2026-03-09T18:00:00Z")]
        );
    }

    #[test]
    fn window_edges_are_half_open() {
        let r = [rule(Mon, t(9, 0), t(17, 0), "America/New_York")];
        // A window ending exactly at the opening, or starting exactly at the close, is empty.
        assert_eq!(
            expand_all(&r, "2026-03-09T00:00:00Z", "2026-03-09T13:00:00Z"),
            vec![]
        );
        assert_eq!(
            expand_all(&r, "2026-03-09T21:00:00Z", "2026-03-10T00:00:00Z"),
            vec![]
        );
    }

    #[test]
    fn empty_or_inverted_window_gives_nothing() {
        let r = [rule(Mon, t(9, 0), t(17, 0), "America/New_York")];
        assert_eq!(
            expand_all(&r, "2026-03-10T00:00:00Z", "2026-03-09T00:00:00Z"),
            vec![]
        );
        assert_eq!(
            expand_all(&r, "2026-03-09T15:00:00Z", "2026-03-09T15:00:00Z"),
            vec![]
        );
    }

    #[test]
    fn overlapping_and_touching_rules_merge_and_sort() {
        let zone = "America/New_York";
        let rules = [
            // Given out of order; 13:00-17:00 touches 09:00-13:00, 10:00-11:00 is inside it.
            rule(Mon, t(13, 0), t(17, 0), zone),
            rule(Mon, t(9, 0), t(13, 0), zone),
            rule(Mon, t(10, 0), t(11, 0), zone),
            rule(Mon, t(18, 0), t(19, 0), zone),
        ];
        let got = expand_all(&rules, "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z");
        assert_eq!(
            got,
            vec![
                iv("2026-06-01T13:00:00Z", "2026-06-01T21:00:00Z"),
                iv("2026-06-01T22:00:00Z", "2026-06-01T23:00:00Z"),
            ]
        );
    }

    #[test]
    fn rules_in_different_zones_merge_in_utc() {
        // Berlin Mon 15:00-19:00 CEST = 13:00Z-17:00Z; New York Mon 09:00-17:00 EDT = 13:00Z-21:00Z.
        let rules = [
            rule(Mon, t(15, 0), t(19, 0), "Europe/Berlin"),
            rule(Mon, t(9, 0), t(17, 0), "America/New_York"),
        ];
        let got = expand_all(&rules, "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z");
        assert_eq!(
            got,
            vec![iv("2026-06-01T13:00:00Z", "2026-06-01T21:00:00Z")]
        );
    }

    // --- slots ---------------------------------------------------------------------------

    #[test]
    fn slots_respect_duration_step_and_buffers() {
        let avail = [iv("2026-03-09T13:00:00Z", "2026-03-09T17:00:00Z")];
        let got = slots(
            &avail,
            TimeDelta::minutes(30),
            TimeDelta::minutes(15),
            TimeDelta::minutes(10),
            TimeDelta::minutes(5),
        );
        // Starts 13:10, 13:25, ..., 16:25 (16:25 + 30 + 5 = 17:00 fits; 16:40 would not).
        assert_eq!(got.len(), 14);
        assert_eq!(got[0], iv("2026-03-09T13:10:00Z", "2026-03-09T13:40:00Z"));
        assert_eq!(got[1], iv("2026-03-09T13:25:00Z", "2026-03-09T13:55:00Z"));
        assert_eq!(got[13], iv("2026-03-09T16:25:00Z", "2026-03-09T16:55:00Z"));
        for s in &got {
            let padded = Interval::new(
                s.start() - TimeDelta::minutes(10),
                s.end() + TimeDelta::minutes(5),
            )
            .unwrap();
            assert!(avail[0].contains(&padded));
        }
    }

    #[test]
    fn slots_never_straddle_a_cut_in_availability() {
        // Morning 13:00Z-16:00Z and afternoon 17:00Z-21:00Z (a lunch time-off between).
        let avail = [
            iv("2026-03-09T17:00:00Z", "2026-03-09T21:00:00Z"),
            iv("2026-03-09T13:00:00Z", "2026-03-09T16:00:00Z"),
        ];
        let got = slots(
            &avail,
            TimeDelta::minutes(60),
            TimeDelta::minutes(60),
            TimeDelta::zero(),
            TimeDelta::minutes(15),
        );
        // Morning: 13:00, 14:00 (14:00+75m = 15:15 fits; 15:00+75m = 16:15 does not).
        // Afternoon: 17:00, 18:00, 19:00 (20:00+75m = 21:15 does not fit).
        let starts: Vec<_> = got.iter().map(Interval::start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2026-03-09T13:00:00Z"),
                utc("2026-03-09T14:00:00Z"),
                utc("2026-03-09T17:00:00Z"),
                utc("2026-03-09T18:00:00Z"),
                utc("2026-03-09T19:00:00Z"),
            ]
        );
        assert!(got.iter().all(|s| s.duration() == TimeDelta::minutes(60)));
    }

    #[test]
    fn slots_treat_touching_intervals_as_one() {
        let avail = [
            iv("2026-03-09T13:00:00Z", "2026-03-09T13:30:00Z"),
            iv("2026-03-09T13:30:00Z", "2026-03-09T14:00:00Z"),
        ];
        let got = slots(
            &avail,
            TimeDelta::minutes(60),
            TimeDelta::minutes(15),
            TimeDelta::zero(),
            TimeDelta::zero(),
        );
        assert_eq!(
            got,
            vec![iv("2026-03-09T13:00:00Z", "2026-03-09T14:00:00Z")]
        );
    }

    #[test]
    fn slots_need_room_for_buffers() {
        let avail = [iv("2026-03-09T13:00:00Z", "2026-03-09T14:00:00Z")];
        let fits = slots(
            &avail,
            TimeDelta::minutes(50),
            TimeDelta::minutes(5),
            TimeDelta::minutes(5),
            TimeDelta::minutes(5),
        );
        assert_eq!(
            fits,
            vec![iv("2026-03-09T13:05:00Z", "2026-03-09T13:55:00Z")]
        );
        let too_long = slots(
            &avail,
            TimeDelta::minutes(51),
            TimeDelta::minutes(5),
            TimeDelta::minutes(5),
            TimeDelta::minutes(5),
        );
        assert_eq!(too_long, vec![]);
    }

    #[test]
    fn slots_with_degenerate_parameters() {
        let avail = [iv("2026-03-09T13:00:00Z", "2026-03-09T14:00:00Z")];
        let m = TimeDelta::minutes;
        assert_eq!(slots(&avail, m(30), m(0), m(0), m(0)), vec![]);
        assert_eq!(slots(&avail, m(30), m(-15), m(0), m(0)), vec![]);
        assert_eq!(slots(&avail, m(0), m(15), m(0), m(0)), vec![]);
        // Negative buffers count as zero: slots start at the opening and end at the close.
        let got = slots(&avail, m(30), m(30), m(-10), m(-10));
        assert_eq!(
            got,
            vec![
                iv("2026-03-09T13:00:00Z", "2026-03-09T13:30:00Z"),
                iv("2026-03-09T13:30:00Z", "2026-03-09T14:00:00Z"),
            ]
        );
    }

    #[test]
    fn end_to_end_slots_across_spring_forward_stay_at_local_times() {
        // A Monday 09:00-10:00 New York rule, hourly slots: 09:00 local each week.
        let avail = expand_all(
            &[rule(Mon, t(9, 0), t(10, 0), "America/New_York")],
            "2026-03-01T00:00:00Z",
            "2026-03-10T00:00:00Z",
        );
        let got = slots(
            &avail,
            TimeDelta::hours(1),
            TimeDelta::hours(1),
            TimeDelta::zero(),
            TimeDelta::zero(),
        );
        assert_eq!(
            got,
            vec![
                iv("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z"),
                iv("2026-03-09T13:00:00Z", "2026-03-09T14:00:00Z"),
            ]
        );
    }

    // --- invalid inputs ------------------------------------------------------------------

    #[test]
    fn end_before_or_at_start_is_rejected() {
        for end in [t(8, 0), t(9, 0)] {
            assert_eq!(
                WeeklyRule::with_zone_name(
                    Mon,
                    t(9, 0),
                    end,
                    "Europe/Berlin",
                    d("2026-01-01"),
                    None
                ),
                Err(AvailabilityError::EndNotAfterStart {
                    start: t(9, 0),
                    end
                })
            );
        }
    }

    #[test]
    fn unknown_zone_is_rejected() {
        let err = WeeklyRule::with_zone_name(
            Mon,
            t(9, 0),
            t(17, 0),
            "Mars/Olympus_Mons",
            d("2026-01-01"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            AvailabilityError::UnknownZone("Mars/Olympus_Mons".into())
        );
        assert_eq!(
            err.to_string(),
            "unknown IANA time zone \"Mars/Olympus_Mons\""
        );
        assert_eq!(parse_zone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        assert!(parse_zone("").is_err());
    }

    #[test]
    fn until_before_or_at_from_is_rejected() {
        for until in [d("2026-02-28"), d("2026-03-01")] {
            assert_eq!(
                WeeklyRule::with_zone_name(
                    Mon,
                    t(9, 0),
                    t(17, 0),
                    "Europe/Berlin",
                    d("2026-03-01"),
                    Some(until)
                ),
                Err(AvailabilityError::UntilNotAfterFrom {
                    from: d("2026-03-01"),
                    until
                })
            );
        }
        assert!(
            WeeklyRule::with_zone_name(
                Mon,
                t(9, 0),
                t(17, 0),
                "Europe/Berlin",
                d("2026-03-01"),
                Some(d("2026-03-02"))
            )
            .is_ok()
        );
    }

    #[test]
    fn empty_exceptions_and_intervals_are_rejected() {
        let a = utc("2026-03-09T13:00:00Z");
        let b = utc("2026-03-09T14:00:00Z");
        assert_eq!(
            Exception::new(b, a, ExceptionKind::TimeOff),
            Err(AvailabilityError::EmptyInterval { start: b, end: a })
        );
        assert!(Exception::new(a, a, ExceptionKind::Closure).is_err());
        assert!(Interval::new(a, a).is_err());
        assert!(Interval::new(b, a).is_err());
        assert!(Interval::new(a, b).is_ok());
    }

    #[test]
    fn free_time_is_open_time_minus_busy_time() {
        let span = |a: &str, b: &str| Interval::new(utc(a), utc(b)).expect("a valid span");
        let open = [
            span("2026-07-06T13:00:00Z", "2026-07-06T17:00:00Z"),
            span("2026-07-06T18:00:00Z", "2026-07-06T19:00:00Z"),
        ];
        // Unsorted, overlapping, one across the gap, one outside, one touching an end.
        let busy = [
            span("2026-07-06T14:30:00Z", "2026-07-06T15:00:00Z"),
            span("2026-07-06T14:00:00Z", "2026-07-06T14:45:00Z"),
            span("2026-07-06T16:30:00Z", "2026-07-06T18:15:00Z"),
            span("2026-07-06T20:00:00Z", "2026-07-06T21:00:00Z"),
            span("2026-07-06T18:45:00Z", "2026-07-06T19:00:00Z"),
        ];
        assert_eq!(
            free_time(&open, &busy),
            vec![
                span("2026-07-06T13:00:00Z", "2026-07-06T14:00:00Z"),
                span("2026-07-06T15:00:00Z", "2026-07-06T16:30:00Z"),
                span("2026-07-06T18:15:00Z", "2026-07-06T18:45:00Z"),
            ]
        );
        assert_eq!(free_time(&open, &[]), open.to_vec());
        assert!(
            free_time(
                &open,
                &[span("2026-07-06T12:00:00Z", "2026-07-06T20:00:00Z")]
            )
            .is_empty()
        );
    }
}
