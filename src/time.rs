//! Time as the ledger records it: signed 64-bit nanoseconds since the Unix epoch (UTC), shown
//! to people as RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Now, in unix nanoseconds.
pub fn now_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// RFC 3339 in UTC with second precision (nanoseconds shown only when not zero).
pub fn rfc3339(nanos: i64) -> String {
    if nanos < 0 {
        return format!("{nanos}ns before 1970");
    }
    let t = UNIX_EPOCH + Duration::from_nanos(nanos as u64);
    if nanos % NANOS_PER_SEC == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_nanos(t).to_string()
    }
}

/// Parses RFC 3339 (`2026-11-25T13:00:00Z`) into unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| format!("{s:?} is not an RFC 3339 UTC time like 2026-11-25T13:00:00Z: {e}"))?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("{s:?} is too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let n = parse_rfc3339("2026-11-25T13:00:00Z").unwrap();
        assert_eq!(n, 1_795_611_600 * NANOS_PER_SEC);
        assert_eq!(rfc3339(n), "2026-11-25T13:00:00Z");
        assert_eq!(rfc3339(n + 5), "2026-11-25T13:00:00.000000005Z");
        assert!(parse_rfc3339("yesterday")
            .unwrap_err()
            .contains("not an RFC 3339"));
    }
}
