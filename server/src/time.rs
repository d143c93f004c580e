//! Time as stored (integer microseconds since the epoch) and as sent (protobuf Timestamp).

use prost_types::Timestamp;

use crate::error::{Error, Result};

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub fn to_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Converts a request timestamp, refusing values outside years 0001..9999.
pub fn from_timestamp(field: &str, ts: &Timestamp) -> Result<i64> {
    const MIN: i64 = -62_135_596_800; // 0001-01-01
    const MAX: i64 = 253_402_300_799; // 9999-12-31
    if ts.seconds < MIN || ts.seconds > MAX || !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(field, "is not a valid timestamp"));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for micros in [0, 1, -1, 1_700_000_000_123_456] {
            assert_eq!(from_timestamp("t", &to_timestamp(micros)).unwrap(), micros);
        }
        let bad = Timestamp {
            seconds: 0,
            nanos: -5,
        };
        assert!(from_timestamp("t", &bad).is_err());
    }
}
