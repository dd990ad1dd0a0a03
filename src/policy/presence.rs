//! Presence, not defaults: which fields of each custody detail must be set (from entry format
//! 1 on), and the `not_measured` declarations that stand in for a reading that was genuinely
//! not possible. Pure. A missing field is refused naming every missing field; a declared
//! non-measurement is recorded and opens a hold (see `rules::apply_detail`).

use crate::pb::event_body::Detail;
use crate::pb::EventBody;

use super::kind::EventKind;
use super::{Fail, Violation};

/// Longest `not_measured` reason.
pub const MAX_REASON: usize = 512;

/// (field, is set, may be declared not measured) for every required field of `detail`.
fn required_fields(detail: &Detail) -> Vec<(&'static str, bool, bool)> {
    let s = |v: &str| !v.trim().is_empty();
    match detail {
        Detail::Enrolled(e) => vec![("coi_ref", s(&e.coi_ref), false)],
        Detail::Collected(c) => vec![
            ("din", s(&c.din), false),
            ("volume_ml", c.volume_ml.is_some(), true),
            (
                "collection_end_unix_nanos",
                c.collection_end_unix_nanos.is_some(),
                true,
            ),
        ],
        Detail::Shipped(sh) => vec![("to_site", s(&sh.to_site), false)],
        Detail::Received(r) => vec![
            ("seal_intact", r.seal_intact.is_some(), true),
            ("temp_min_c", r.temp_min_c.is_some(), true),
            ("temp_max_c", r.temp_max_c.is_some(), true),
            ("elapsed_seconds", r.elapsed_seconds.is_some(), true),
        ],
        Detail::ManufacturingStep(m) => vec![("step", s(&m.step), false)],
        Detail::QcResult(q) => vec![
            ("test", s(&q.test), false),
            ("result", s(&q.result), false),
            ("passed", q.passed.is_some(), false),
        ],
        Detail::Stored(st) => vec![
            ("location", s(&st.location), false),
            ("temp_c", st.temp_c.is_some(), true),
        ],
        Detail::Dispensed(d) => vec![
            ("product_bag_id", s(&d.product_bag_id), false),
            (
                "thawed_at_unix_nanos",
                d.thawed_at_unix_nanos.is_some(),
                false,
            ),
        ],
        Detail::BedsideCheck(b) => vec![
            ("wristband_coi_ref", s(&b.wristband_coi_ref), false),
            ("product_bag_id", s(&b.product_bag_id), false),
        ],
        Detail::Infused(i) => vec![
            ("product_bag_id", s(&i.product_bag_id), false),
            (
                "started_at_unix_nanos",
                i.started_at_unix_nanos.is_some(),
                false,
            ),
            (
                "ended_at_unix_nanos",
                i.ended_at_unix_nanos.is_some(),
                false,
            ),
        ],
        Detail::Deviation(d) => vec![("deviation_id", s(&d.deviation_id), false)],
        Detail::CustodyHandoff(h) => vec![("to_site", s(&h.to_site), false)],
        Detail::LymphodepletionStarted(l) => vec![
            ("regimen", s(&l.regimen), false),
            (
                "started_at_unix_nanos",
                l.started_at_unix_nanos.is_some(),
                false,
            ),
        ],
        Detail::LymphodepletionCompleted(l) => vec![(
            "completed_at_unix_nanos",
            l.completed_at_unix_nanos.is_some(),
            false,
        )],
        Detail::IdentityCheckFailed(n) => vec![
            ("check", s(&n.check), false),
            ("reason", s(&n.reason), false),
        ],
        _ => Vec::new(),
    }
}

/// The fields of `kind` a client must set (for documentation and `--help`), and which of them
/// may instead be declared in `not_measured`.
pub fn required_field_names(kind: EventKind) -> Vec<(&'static str, bool)> {
    let blank = crate::pb::EventBody {
        detail: Some(kind.blank_detail()),
        ..Default::default()
    };
    required_fields(blank.detail.as_ref().expect("set above"))
        .into_iter()
        .map(|(f, _, nm)| (f, nm))
        .collect()
}

/// Checks presence (entry format 1 on): every required field is set or, for a measurement,
/// declared in `not_measured` with a reason; every declaration names an unset measurement of
/// this detail, once. Returns the declared fields and reasons (each opens a hold).
pub(super) fn check(
    body: &EventBody,
    detail: &Detail,
    kind: EventKind,
    fail: &Fail<'_>,
) -> Result<Vec<(String, String)>, Violation> {
    let fields = required_fields(detail);
    let mut declared: Vec<(String, String)> = Vec::new();
    for nm in &body.not_measured {
        let field = nm.field.trim();
        let Some((_, set, may)) = fields.iter().find(|(f, _, _)| *f == field) else {
            let measurable: Vec<&str> = fields
                .iter()
                .filter(|(_, _, m)| *m)
                .map(|(f, _, _)| *f)
                .collect();
            return Err(fail.v(
                "not_measured",
                format!(
                    "not_measured naming a measurement of {kind} [{}]",
                    measurable.join(", ")
                ),
                format!("{:?} is not such a field", cut(field)),
            ));
        };
        if !may {
            return Err(fail.v(
                "not_measured",
                format!("{kind} with {field} set"),
                format!("{field} is not a measurement; it cannot be declared not measured"),
            ));
        }
        if *set {
            return Err(fail.v(
                "not_measured",
                format!("{field} either set or declared not measured"),
                format!("{field} is set and also declared not measured"),
            ));
        }
        if declared.iter().any(|(f, _)| f == field) {
            return Err(fail.v(
                "not_measured",
                "each field declared not measured once",
                format!("{field} is declared twice"),
            ));
        }
        let reason = nm.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(fail.v(
                "not_measured",
                format!("a reason (1-{MAX_REASON} bytes) why {field} could not be measured"),
                format!("the reason is {} bytes", reason.len()),
            ));
        }
        declared.push((field.to_string(), reason.to_string()));
    }
    let missing: Vec<&str> = fields
        .iter()
        .filter(|(f, set, _)| !set && !declared.iter().any(|(d, _)| d == f))
        .map(|(f, _, _)| *f)
        .collect();
    if !missing.is_empty() {
        return Err(fail.v(
            "missing_fields",
            format!("{kind} with {}", missing.join(", ")),
            format!(
                "missing: {}; set each (a reading that was genuinely not possible goes in not_measured with a reason)",
                missing.join(", ")
            ),
        ));
    }
    Ok(declared)
}

/// At most 64 characters of a client-supplied string, for messages.
pub fn cut(s: &str) -> String {
    cut_text(s, 64)
}

/// `s` cut to `max` characters (an ellipsis marks the cut).
pub fn cut_text(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}…")
    }
}
