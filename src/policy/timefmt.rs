//! Human-readable times and durations for violation messages (UTC, no time-zone database).

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Unix nanoseconds as "2025-03-01 08:00:00Z".
pub(crate) fn at(unix_nanos: i64) -> String {
    let secs = (unix_nanos as i128).div_euclid(NANOS_PER_SEC) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A duration in nanoseconds as "2 h 5 min", "45 min", "31.5 days" (negative gets a "-").
pub(crate) fn span(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let secs = nanos.unsigned_abs() / NANOS_PER_SEC as u128;
    let mins = secs / 60;
    if secs < 60 {
        format!("{sign}{secs} s")
    } else if mins < 60 {
        format!("{sign}{mins} min")
    } else if mins < 48 * 60 {
        format!("{sign}{} h {} min", mins / 60, mins % 60)
    } else {
        format!("{sign}{:.1} days", secs as f64 / 86_400.0)
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants_and_spans() {
        assert_eq!(at(0), "1970-01-01 00:00:00Z");
        // 2025-03-01T08:00:00Z = 1740816000 s
        assert_eq!(at(1_740_816_000 * 1_000_000_000), "2025-03-01 08:00:00Z");
        assert_eq!(at(i64::MIN), "1677-09-21 00:12:43Z");
        assert_eq!(span(45 * 60 * NANOS_PER_SEC), "45 min");
        assert_eq!(span(3 * 3600 * NANOS_PER_SEC), "3 h 0 min");
        assert_eq!(span(31 * 86_400 * NANOS_PER_SEC), "31.0 days");
        assert_eq!(span(-90 * NANOS_PER_SEC), "-1 min");
    }
}
