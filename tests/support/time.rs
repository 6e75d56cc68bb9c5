//! Times the Scheduling tests book at: New York wall-clock times on coming days.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::America::New_York;
use pm_api::types::Interval;

/// A UTC instant on the wire (whole seconds).
pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// An open-ended period from 1 January 2024.
pub fn since_2024() -> Option<Interval> {
    Some(Interval {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_704_067_200,
            nanos: 0,
        }),
        end_time: None,
    })
}

/// A Monday at least two days ahead, in New York.
pub fn next_monday() -> NaiveDate {
    let mut day = Utc::now().with_timezone(&New_York).date_naive() + chrono::Days::new(2);
    while day.weekday() != chrono::Weekday::Mon {
        day = day.succ_opt().expect("a next day");
    }
    day
}

/// `hh:mm` New York time on `day`, as a UTC instant.
pub fn at(day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    New_York
        .from_local_datetime(&day.and_hms_opt(hour, minute, 0).expect("a valid time"))
        .single()
        .expect("not in a daylight-saving gap or overlap")
        .with_timezone(&Utc)
}

/// A duration of `m` minutes on the wire.
pub fn minutes(m: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: m * 60,
        nanos: 0,
    })
}
