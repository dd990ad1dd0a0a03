//! Bedside identity check: does the scanned wristband belong to the patient this chain was
//! enrolled for, and did this chain produce the scanned bag? Decided from the chain's entries
//! as the server returned them (pure), before anything can be signed.

use crate::codes::{CoiId, Din};
use crate::pb::{event_body::Detail, EventBody, LogEntry, StoredEntry};
use prost::Message;

/// The answer shown to the nurse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub matched: bool,
    /// One line per check, e.g. `WRISTBAND  CHG123423AB12CD = enrolled CoI  ✔`.
    pub lines: Vec<String>,
}

/// Canonical form of a CoI or bag id so an eye-readable or check-character form compares
/// equal to the stored one.
fn canon_coi(s: &str) -> String {
    s.parse::<CoiId>()
        .map(|c| c.to_string())
        .unwrap_or_else(|_| s.trim().to_string())
}

fn canon_bag(s: &str) -> String {
    s.parse::<Din>()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| s.trim().to_string())
}

/// The WRONG PATIENT line when the chain was enrolled for another patient than `wristband`
/// (`None` when it matches or the chain names no patient).
pub fn wrong_patient(entries: &[StoredEntry], wristband: &str) -> Option<String> {
    let v = check(entries, wristband, "");
    v.lines.into_iter().find(|l| l.ends_with("WRONG PATIENT"))
}

/// Compares the scans with the chain: the wristband must equal the Enrolled `coi_ref`, and the
/// bag must be one of the chain's ManufacturingStep `product_bag_ids`.
pub fn check(entries: &[StoredEntry], wristband: &str, bag: &str) -> Verdict {
    let mut coi_ref: Option<String> = None;
    let mut bags: Vec<String> = Vec::new();
    for e in entries {
        let Ok(entry) = LogEntry::decode(e.entry.as_slice()) else {
            continue;
        };
        let Ok(body) = EventBody::decode(entry.body.as_slice()) else {
            continue;
        };
        match body.detail {
            Some(Detail::Enrolled(en)) => coi_ref = Some(en.coi_ref),
            Some(Detail::ManufacturingStep(m)) => bags.extend(m.product_bag_ids),
            _ => {}
        }
    }
    let mut lines = Vec::new();
    let coi_ok = match &coi_ref {
        Some(c) if canon_coi(c) == canon_coi(wristband) => {
            lines.push(format!("WRISTBAND  {wristband}  =  enrolled CoI {c}   OK"));
            true
        }
        Some(c) => {
            lines.push(format!(
                "WRISTBAND  {wristband}  IS NOT  the enrolled patient {c}   WRONG PATIENT"
            ));
            false
        }
        None => {
            lines.push("WRISTBAND  this chain has no enrolment: cannot confirm the patient".into());
            false
        }
    };
    let bag_ok = bags.iter().any(|b| canon_bag(b) == canon_bag(bag));
    if bag_ok {
        lines.push(format!("BAG        {bag}  was produced by this chain   OK"));
    } else {
        lines.push(format!(
            "BAG        {bag}  WAS NOT PRODUCED by this chain (its bags: {})   WRONG BAG",
            if bags.is_empty() {
                "none".to_string()
            } else {
                bags.join(", ")
            }
        ));
    }
    Verdict {
        matched: coi_ok && bag_ok,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Enrolled, ManufacturingStep};

    fn stored(detail: Detail) -> StoredEntry {
        let body = EventBody {
            detail: Some(detail),
            ..Default::default()
        }
        .encode_to_vec();
        StoredEntry {
            entry: LogEntry {
                body,
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        }
    }

    fn chain() -> Vec<StoredEntry> {
        vec![
            stored(Detail::Enrolled(Enrolled {
                coi_ref: "CHG123423AB12CD".into(),
                ..Default::default()
            })),
            stored(Detail::ManufacturingStep(ManufacturingStep {
                step: "cryopreservation".into(),
                product_bag_ids: vec!["G123417654322".into()],
                ..Default::default()
            })),
        ]
    }

    #[test]
    fn matches_only_when_both_wristband_and_bag_belong_to_the_chain() {
        assert!(check(&chain(), "CHG123423AB12CD", "G123417654322").matched);
        let other_patient = check(&chain(), "CHG123423ZZ99ZZ", "G123417654322");
        assert!(!other_patient.matched);
        assert!(other_patient.lines[0].contains("WRONG PATIENT"));
        let other_bag = check(&chain(), "CHG123423AB12CD", "G123417654399");
        assert!(!other_bag.matched);
        assert!(other_bag.lines[1].contains("WRONG BAG"));
        assert!(!check(&[], "CHG123423AB12CD", "G123417654322").matched);
    }
}
