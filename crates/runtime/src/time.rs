//! Instants as the store keeps them (microseconds since the Unix epoch, UTC) and as the wire carries
//! them (google.protobuf.Timestamp).

use prost_types::Timestamp;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// Now, in microseconds.
pub fn now_micros() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// A wire timestamp as microseconds (sub-microsecond precision is dropped).
pub fn to_micros(ts: &Timestamp) -> Micros {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos / 1_000))
}

/// Microseconds as a wire timestamp.
pub fn to_timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Whether a wire timestamp is within the range the API accepts (years 0001 to 9999) and normalized.
pub fn is_valid(ts: &Timestamp) -> bool {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    (MIN..=MAX).contains(&ts.seconds) && (0..1_000_000_000).contains(&ts.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_before_and_after_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            assert_eq!(to_micros(&to_timestamp(micros)), micros);
        }
    }

    #[test]
    fn rejects_out_of_range_and_unnormalized() {
        assert!(is_valid(&Timestamp {
            seconds: 0,
            nanos: 0
        }));
        assert!(!is_valid(&Timestamp {
            seconds: 0,
            nanos: -1
        }));
        assert!(!is_valid(&Timestamp {
            seconds: i64::MAX,
            nanos: 0
        }));
    }
}
