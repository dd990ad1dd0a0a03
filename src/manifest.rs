//! Signature manifestation (21 CFR Part 11 §11.50): how a signature is shown wherever a person
//! reads a signed record (`chain`, `verify`, `queue show`, the station's SUMMARY). Each shows
//! the signer's printed name, role and site (from the key registry), the meaning of the
//! signature, and when it was signed in UTC and in the reader's local time. No raw nanoseconds.
//! Pure apart from reading the local time zone (`TZ`, else `/etc/localtime`).

use crate::pb::SignatureMeaning;
use chrono::{DateTime, Local, TimeZone, Utc};

/// What the key registry says about a signer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignerInfo {
    pub printed_name: String,
    pub role: String,
    pub site: String,
}

impl From<&crate::registry::KeyRecord> for SignerInfo {
    fn from(r: &crate::registry::KeyRecord) -> Self {
        SignerInfo {
            printed_name: r.printed_name.clone(),
            role: r.role.clone(),
            site: r.site.clone(),
        }
    }
}

impl From<&crate::pb::KeyRegistered> for SignerInfo {
    fn from(r: &crate::pb::KeyRegistered) -> Self {
        SignerInfo {
            printed_name: r.printed_name.clone(),
            role: r.role.clone(),
            site: r.site.clone(),
        }
    }
}

/// What a meaning says, for a reader: `PERFORMED (did the step)`.
pub fn meaning_text(m: i32) -> String {
    match SignatureMeaning::try_from(m) {
        Ok(SignatureMeaning::Unspecified) | Err(_) => format!("meaning {m} (unknown)"),
        Ok(k) => meaning_name_text(k.as_str_name()),
    }
}

/// As [`meaning_text`] from the meaning's name (any case), as reports carry it.
pub fn meaning_name_text(name: &str) -> String {
    let word = name.to_ascii_uppercase();
    let gloss = match word.as_str() {
        "PERFORMED" => "did the step",
        "VERIFIED" => "second person checked it",
        "REVIEWED" => "reviewed the record",
        "APPROVED" => "approved it",
        "RECEIVED" => "took custody",
        "RELEASED" => "released the product",
        _ => return format!("{word} (unknown meaning)"),
    };
    format!("{word} ({gloss})")
}

/// `2026-11-29 17:25:01 UTC (18:25:01 local, UTC+01:00)`; the date is repeated for local time
/// when it differs.
pub fn when(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let Some(utc) = Utc.timestamp_opt(secs, 0).single() else {
        return format!("{nanos} ns since 1970 (out of range)");
    };
    let local: DateTime<Local> = utc.with_timezone(&Local);
    let utc_date = utc.format("%Y-%m-%d").to_string();
    let local_date = local.format("%Y-%m-%d").to_string();
    let local_part = if local_date == utc_date {
        local.format("%H:%M:%S").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    };
    format!(
        "{} UTC ({local_part} local, UTC{})",
        utc.format("%Y-%m-%d %H:%M:%S"),
        local.format("%:z")
    )
}

/// One signature as a person reads it:
/// `A. Nurse (nurse.ada; apheresis_nurse at HOSP-A) PERFORMED (did the step) 2026-… UTC (… local)`.
pub fn signature_line(
    key_id: &str,
    info: Option<&SignerInfo>,
    meaning: i32,
    signed_at_nanos: i64,
) -> String {
    line(key_id, info, meaning_text(meaning), signed_at_nanos)
}

/// As [`signature_line`] with the meaning by name (`performed`, `VERIFIED`, …).
pub fn signature_line_named(
    key_id: &str,
    info: Option<&SignerInfo>,
    meaning: &str,
    signed_at_nanos: i64,
) -> String {
    line(key_id, info, meaning_name_text(meaning), signed_at_nanos)
}

fn line(key_id: &str, info: Option<&SignerInfo>, meaning: String, at: i64) -> String {
    let who = match info {
        Some(i) if !i.printed_name.is_empty() => {
            format!("{} ({key_id}; {} at {})", i.printed_name, i.role, i.site)
        }
        Some(i) => format!("{key_id} ({} at {})", i.role, i.site),
        None => format!("{key_id} (not in the key registry known here)"),
    };
    format!("{who} {meaning} {}", when(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_line_names_person_role_site_meaning_and_both_times() {
        let info = SignerInfo {
            printed_name: "A. Nurse".into(),
            role: "apheresis_nurse".into(),
            site: "HOSP-A".into(),
        };
        // 2026-11-29T17:25:01.123456789Z
        let t = 1_795_973_101_123_456_789;
        let line = signature_line(
            "nurse.ada",
            Some(&info),
            SignatureMeaning::Performed as i32,
            t,
        );
        assert!(
            line.starts_with("A. Nurse (nurse.ada; apheresis_nurse at HOSP-A) PERFORMED"),
            "{line}"
        );
        assert!(line.contains("2026-11-29 17:25:01 UTC ("), "{line}");
        assert!(line.contains(" local, UTC"), "{line}");
        assert!(!line.contains("123456789"), "raw nanoseconds: {line}");
        let unknown = signature_line("x.y", None, 99, t);
        assert!(unknown.contains("not in the key registry"), "{unknown}");
        assert!(unknown.contains("meaning 99 (unknown)"), "{unknown}");
    }
}
