//! The batch record: what a QA reviewer reads before release, built from a bundle and the
//! verification [`Report`] that `verify` computes for it (the same code, never a second
//! verdict). This module owns the model (serialized as `report --format json`, specified in
//! `docs/report.md`); `html` and `text` render it, `chart` draws the temperature chart. The
//! web console (`crate::console`) renders its chain page through the same functions.
//!
//! Only verified events appear: when verification fails, the record says FAILED at the top,
//! shows what verified before the failure, and says that nothing after it can be trusted.

pub mod chart;
pub mod fields;
pub mod html;
pub mod text;

use super::verify::{Report, SignerRow, TimelineRow};
use crate::pb::event_body::Detail;
use crate::policy::{ChainState, EventKind, Policy};
use fields::{detail_fields, duration, local_time, Field};
use serde::Serialize;

/// The whole record: one verdict, one section per chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRecord {
    /// `celltrail-batch-record/v1`.
    pub format: String,
    /// When this record was rendered (UTC) — not when anything happened.
    pub generated_at: String,
    pub generated_at_local: String,
    /// What was read: the bundle file, or the server and chain.
    pub source: String,
    pub verdict: Verdict,
    pub chains: Vec<ChainRecord>,
}

/// The verification verdict, as `verify` computed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// True only when every check passed.
    pub ok: bool,
    /// `VERIFIED` or `FAILED`.
    pub status: String,
    /// The first thing that does not hold (only when FAILED).
    pub failure: Option<String>,
    /// What was checked, each with its outcome.
    pub checks: Vec<Check>,
    pub log_key: String,
    /// The C2SP key hash of the log key (the `+hex+` part of the verifier key string).
    pub log_key_fingerprint: String,
    pub log_key_source: String,
    pub policy: String,
    /// The full `verify` report.
    pub report: Report,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub check: String,
    pub outcome: String,
}

/// Everything about one chain (one product).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainRecord {
    pub chain_id: String,
    pub coi_ref: String,
    pub therapy: String,
    pub manufacturing_site: String,
    /// Apheresis bag DINs.
    pub dins: Vec<String>,
    pub product_bag_ids: Vec<String>,
    /// Custody state after the last verified event.
    pub state: String,
    /// `complete` (the log signed that nothing follows), `END NOT PROVEN`, or `not verified`.
    pub end: String,
    pub open_holds: Vec<HoldRow>,
    /// Every hold, open or released, in order.
    pub holds: Vec<HoldRow>,
    pub deviations: Vec<DeviationRow>,
    /// Near misses the stations recorded (`identity_check_failed`: a wrong patient at the
    /// bedside, a wrong shipper at a receipt), in order.
    pub near_misses: Vec<NearMissRow>,
    pub qc: Vec<QcRow>,
    pub legs: Vec<Leg>,
    pub temperatures: Vec<Reading>,
    /// Signatures with meaning REVIEWED (the QA record review), newest last.
    pub reviews: Vec<Review>,
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldRow {
    pub opened_seq: u64,
    /// Kind of the event that opened it.
    pub opened_by_event: String,
    pub opened_at: String,
    pub opened_by: String,
    /// Each reason names the policy rule and the values, e.g. `ambient_exposure: ...`.
    pub reasons: Vec<String>,
    pub released_seq: Option<u64>,
    pub released_at: Option<String>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
    /// Seconds open (until release, or until the record was generated).
    pub age_seconds: i64,
    pub age: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviationRow {
    pub seq: u64,
    pub deviation_id: String,
    pub description: String,
    pub recorded_at: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearMissRow {
    pub seq: u64,
    /// The event being recorded when the check failed (`bedside_check`, `received`).
    pub check: String,
    /// What did not match, as the station showed it.
    pub reason: String,
    pub recorded_at: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QcRow {
    pub seq: u64,
    pub test: String,
    pub method: String,
    pub result: String,
    pub specification: String,
    pub passed: bool,
    /// 0 for the first result of a test, 1 for its first retest, ...
    pub retest: u32,
    pub occurred_at: String,
}

/// An elapsed time against its policy limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leg {
    pub leg: String,
    pub from: String,
    pub to: String,
    pub elapsed_seconds: i64,
    pub elapsed: String,
    pub limit_seconds: Option<i64>,
    pub limit: String,
    pub over_limit: bool,
}

/// A recorded temperature (a point, or the min..max a logger saw) and the allowed range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub seq: u64,
    pub event: String,
    pub at_unix_nanos: i64,
    pub at: String,
    pub min_c: f64,
    pub max_c: f64,
    pub allowed_min_c: Option<f64>,
    pub allowed_max_c: Option<f64>,
    pub in_range: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub seq: u64,
    pub event: String,
    pub signature: Manifestation,
}

/// A signature as Part 11 §11.50 asks it to be shown: who, in what role, where, meaning, when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifestation {
    pub printed_name: String,
    pub key_id: String,
    pub role: String,
    pub site: String,
    /// PERFORMED, VERIFIED, REVIEWED, APPROVED, RECEIVED, RELEASED.
    pub meaning: String,
    pub signed_at_utc: String,
    pub signed_at_local: String,
}

impl Manifestation {
    pub fn of(s: &SignerRow) -> Manifestation {
        Manifestation {
            printed_name: s.printed_name.clone(),
            key_id: s.key_id.clone(),
            role: s.role.clone(),
            site: s.site.clone(),
            meaning: s.meaning.to_ascii_uppercase(),
            signed_at_utc: s.signed_at.clone(),
            signed_at_local: local_time(s.signed_at_unix_nanos),
        }
    }
}

/// One verified event with every field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub index: u64,
    pub seq: u64,
    pub event: String,
    pub occurred_at: String,
    pub occurred_at_local: String,
    /// When the log accepted it.
    pub recorded_at: String,
    pub site: String,
    pub actor_key_id: String,
    pub comment: String,
    pub fields: Vec<Field>,
    pub state_after: String,
    pub on_hold_after: bool,
    pub event_hash: String,
    pub signatures: Vec<Manifestation>,
}

/// Builds the record of a verified (or failed) bundle. `now` is the generation time.
/// Each event's clocks and readings are measured against the table that judged it (the
/// report's recorded table, or the auditor's override).
pub fn build(report: &Report, source: &str, now: i64) -> BatchRecord {
    let mut chains: Vec<ChainRecord> = Vec::new();
    let mut start = 0;
    while start < report.timeline.len() {
        let id = &report.timeline[start].chain;
        let end = report.timeline[start..]
            .iter()
            .position(|r| &r.chain != id)
            .map_or(report.timeline.len(), |n| start + n);
        chains.push(chain(report, &report.timeline[start..end], now));
        start = end;
    }
    BatchRecord {
        format: "celltrail-batch-record/v1".into(),
        generated_at: crate::time::rfc3339(
            now / crate::time::NANOS_PER_SEC * crate::time::NANOS_PER_SEC,
        ),
        generated_at_local: local_time(now),
        source: source.to_string(),
        verdict: verdict(report),
        chains,
    }
}

fn verdict(r: &Report) -> Verdict {
    let ok = r.ok && r.failure.is_none();
    let mut checks = Vec::new();
    let mut add = |check: &str, outcome: String| {
        checks.push(Check {
            check: check.into(),
            outcome,
        })
    };
    let n = r.entries_verified;
    match &r.checkpoint {
        Some(cp) => add(
            "checkpoint",
            format!(
                "signature verified with the log key; origin {}, tree size {}, root {}",
                cp.origin, cp.size, cp.root
            ),
        ),
        None => add("checkpoint", "NOT VERIFIED".into()),
    }
    add(
        "signatures",
        format!("{n} entries: strict ed25519 signatures verified"),
    );
    add(
        "key registry",
        format!(
            "{} key registry entries replayed with operator admin signatures; each signer registered, unrevoked and in its role at signing time, under the registry as the log held it when the entry was recorded",
            r.registry_entries
        ),
    );
    // What holds under the rules but needs a person's review (e.g. a signature made after a
    // revocation time that was recorded later): the record says so, not only `verify`.
    for w in &r.warnings {
        add("WARNING", w.clone());
    }
    add(
        "chain links",
        "every event's prev_hash is the previous event's hash, from seq 0".into(),
    );
    add(
        "policy replay",
        format!("custody policy {:?} replayed from seq 0", r.policy),
    );
    add(
        "inclusion proofs",
        if r.inclusion_proofs > 0 {
            format!(
                "{} inclusion proofs against the checkpoint",
                r.inclusion_proofs
            )
        } else {
            "Merkle root recomputed from every entry".into()
        },
    );
    if let Some(p) = r.previous_size {
        add(
            "history",
            format!("the auditor's checkpoint of size {p} is a prefix of this log"),
        );
    }
    for c in &r.chain_ends_proven {
        add(
            "chain complete",
            format!("{c}: the log signed that no event follows the last one shown"),
        );
    }
    for c in &r.chain_ends_unproven {
        add(
            "chain complete",
            format!("{c}: END NOT PROVEN — the bundle has no signed chain head"),
        );
    }
    if !ok {
        for c in &mut checks {
            c.outcome = format!("not established (verification FAILED): {}", c.outcome);
        }
    }
    let fingerprint = r.log_key.split('+').nth(1).unwrap_or_default().to_string();
    Verdict {
        ok,
        status: if ok { "VERIFIED" } else { "FAILED" }.into(),
        failure: r
            .failure
            .as_ref()
            .map(|f| f.to_string())
            .or_else(|| (!ok).then(|| "verification did not complete".to_string())),
        checks,
        log_key: r.log_key.clone(),
        log_key_fingerprint: fingerprint,
        log_key_source: r.log_key_source.clone(),
        policy: r.policy.clone(),
        report: r.clone(),
    }
}

fn kind_of(name: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.name() == name)
}

fn chain(report: &Report, rows: &[TimelineRow], now: i64) -> ChainRecord {
    let id = rows[0].chain.clone();
    let last_state: Option<&ChainState> = rows
        .iter()
        .rev()
        .find_map(|r| r.verified.as_ref().map(|v| &v.state_after));
    let end = if !report.ok {
        "not verified"
    } else if report.chain_ends_proven.contains(&id) {
        "complete"
    } else {
        "END NOT PROVEN"
    };
    let mut rec = ChainRecord {
        chain_id: id,
        coi_ref: last_state.map(|s| s.coi_ref.clone()).unwrap_or_default(),
        therapy: last_state.map(|s| s.therapy.clone()).unwrap_or_default(),
        manufacturing_site: last_state
            .map(|s| s.manufacturing_site.clone())
            .unwrap_or_default(),
        dins: last_state.map(|s| s.dins.clone()).unwrap_or_default(),
        product_bag_ids: last_state
            .map(|s| s.product_bag_ids.clone())
            .unwrap_or_default(),
        state: rows.last().map(|r| r.state.clone()).unwrap_or_default(),
        end: end.into(),
        open_holds: Vec::new(),
        holds: Vec::new(),
        deviations: Vec::new(),
        near_misses: Vec::new(),
        qc: Vec::new(),
        legs: Vec::new(),
        temperatures: Vec::new(),
        reviews: Vec::new(),
        events: Vec::new(),
    };
    let min = 60i64;
    let mut before: Option<&ChainState> = None;
    let mut lymphodepletion: Option<(i64, u64)> = None;
    let mut last_mfg: Option<(i64, u64, &Policy)> = None;
    for row in rows {
        let Some(v) = row.verified.as_deref() else {
            continue;
        };
        let policy: &Policy = &v.policy;
        let limits = policy.limits();
        let body = &v.body;
        let occurred = body.occurred_at_unix_nanos;
        let (kind_name, fields) =
            detail_fields(&v.body_bytes).unwrap_or_else(|| (row.event.clone(), Vec::new()));
        let prev_state = before.map_or(crate::policy::START, |s| s.state.as_str());
        let after = &v.state_after;

        // Holds: opened when the state gains one, released when it loses it.
        let was = before.and_then(|s| s.hold.as_ref());
        match (was, after.hold.as_ref()) {
            (None, Some(h)) => rec.holds.push(HoldRow {
                opened_seq: h.opened_seq,
                opened_by_event: row.event.clone(),
                opened_at: crate::time::rfc3339(h.opened_at_unix_nanos),
                opened_by: h.opened_by.clone(),
                reasons: h.reasons.clone(),
                released_seq: None,
                released_at: None,
                released_by: None,
                release_reason: None,
                age_seconds: (now - h.opened_at_unix_nanos) / crate::time::NANOS_PER_SEC,
                age: duration((now - h.opened_at_unix_nanos) as f64),
            }),
            (Some(_), Some(h)) => {
                if let Some(open) = rec.holds.last_mut() {
                    open.reasons = h.reasons.clone();
                }
            }
            (Some(h), None) => {
                if let Some(open) = rec.holds.last_mut() {
                    open.released_seq = Some(body.seq);
                    open.released_at = Some(crate::time::rfc3339(occurred));
                    open.released_by = Some(body.actor_key_id.clone());
                    open.release_reason = Some(match &body.detail {
                        Some(Detail::HoldReleased(r)) if !r.reason.is_empty() => r.reason.clone(),
                        _ => body.comment.clone(),
                    });
                    open.age_seconds = (occurred - h.opened_at_unix_nanos) / 1_000_000_000;
                    open.age = duration((occurred - h.opened_at_unix_nanos) as f64);
                }
            }
            (None, None) => {}
        }

        match &body.detail {
            Some(Detail::Deviation(d)) => rec.deviations.push(DeviationRow {
                seq: body.seq,
                deviation_id: d.deviation_id.clone(),
                description: d.description.clone(),
                recorded_at: crate::time::rfc3339(occurred),
                by: body.actor_key_id.clone(),
            }),
            Some(Detail::IdentityCheckFailed(n)) => rec.near_misses.push(NearMissRow {
                seq: body.seq,
                check: n.check.clone(),
                reason: n.reason.clone(),
                recorded_at: crate::time::rfc3339(occurred),
                by: body.actor_key_id.clone(),
            }),
            Some(Detail::QcResult(q)) => {
                let retest = rec.qc.iter().filter(|r| r.test == q.test).count() as u32;
                rec.qc.push(QcRow {
                    seq: body.seq,
                    test: q.test.clone(),
                    method: q.method.clone(),
                    result: q.result.clone(),
                    specification: q.specification.clone(),
                    // Unset only in format-0 entries, where unset meant false.
                    passed: q.passed.unwrap_or(false),
                    retest,
                    occurred_at: crate::time::rfc3339(occurred),
                });
            }
            Some(Detail::Received(r)) => {
                let (_, max_hours) = policy.row_limits(EventKind::Received, prev_state);
                if let (Some(h), Some(start)) = (max_hours, after.collection_end_unix_nanos) {
                    rec.legs.push(leg(
                        "collection → receipt",
                        start,
                        &format!("seq {} received", body.seq),
                        occurred,
                        Some(h as i64 * 3600),
                        "collection end",
                    ));
                }
                let limit = limits.ambient_exposure_max_minutes as i64 * min;
                // Not measured: no leg (its hold says so).
                if let Some(elapsed) = r.elapsed_seconds {
                    let secs = i64::try_from(elapsed).unwrap_or(i64::MAX);
                    rec.legs.push(Leg {
                        leg: format!("ambient exposure in transport (seq {})", body.seq),
                        from: format!("shipped from {}", r.from_site),
                        to: format!("seq {} received", body.seq),
                        elapsed_seconds: secs,
                        elapsed: duration(secs as f64 * 1e9),
                        limit_seconds: Some(limit),
                        limit: duration(limit as f64 * 1e9),
                        over_limit: secs > limit,
                    });
                }
            }
            Some(Detail::ManufacturingStep(_)) => last_mfg = Some((occurred, body.seq, policy)),
            Some(Detail::BedsideCheck(_)) => {
                if let Some(t) = after.thawed_at_unix_nanos {
                    rec.legs.push(leg(
                        "thaw → bedside check",
                        t,
                        &format!("seq {} bedside check", body.seq),
                        occurred,
                        Some(limits.thaw_to_infusion_max_minutes as i64 * min),
                        "thawed",
                    ));
                }
            }
            Some(Detail::Infused(i)) => {
                let started = i
                    .started_at_unix_nanos
                    .filter(|t| *t > 0)
                    .unwrap_or(occurred);
                let to = format!("seq {} infusion start", body.seq);
                if let Some(t) = after.thawed_at_unix_nanos {
                    rec.legs.push(leg(
                        "thaw → infusion",
                        t,
                        &to,
                        started,
                        Some(limits.thaw_to_infusion_max_minutes as i64 * min),
                        "thawed",
                    ));
                }
                if let Some((t, seq)) = lymphodepletion {
                    // From the completion the policy recorded (format 2); the window's upper
                    // end is the limit (an infusion too soon opens a hold the record shows).
                    let done = after
                        .lymphodepletion
                        .as_ref()
                        .and_then(|l| l.completed_at_unix_nanos)
                        .unwrap_or(t);
                    rec.legs.push(leg(
                        "lymphodepletion → infusion",
                        done,
                        &to,
                        started,
                        Some(limits.lymphodepletion_to_infusion_max_days as i64 * 86_400),
                        &format!("seq {seq} lymphodepletion"),
                    ));
                }
                if let Some(c) = after.collection_end_unix_nanos {
                    rec.legs
                        .push(leg("vein-to-vein", c, &to, started, None, "collection end"));
                }
            }
            _ => {}
        }
        if kind_name.starts_with("lymphodepletion") {
            lymphodepletion = Some((occurred, body.seq));
        }

        readings(
            &mut rec, policy, &kind_name, &fields, prev_state, body.seq, occurred,
        );

        let signatures: Vec<Manifestation> = row.signers.iter().map(Manifestation::of).collect();
        for s in signatures.iter().filter(|s| s.meaning == "REVIEWED") {
            rec.reviews.push(Review {
                seq: body.seq,
                event: kind_name.clone(),
                signature: s.clone(),
            });
        }
        rec.events.push(EventRecord {
            index: row.index,
            seq: body.seq,
            event: kind_name,
            occurred_at: crate::time::rfc3339(occurred),
            occurred_at_local: local_time(occurred),
            recorded_at: crate::time::rfc3339(v.accepted_at_unix_nanos),
            site: body.site.clone(),
            actor_key_id: body.actor_key_id.clone(),
            comment: body.comment.clone(),
            fields,
            state_after: after.state.clone(),
            on_hold_after: after.hold.is_some(),
            event_hash: row.event_hash.clone(),
            signatures,
        });
        before = Some(after);
    }
    if let (Some(start), Some((end, seq, policy))) = (
        last_state.and_then(|s| s.manufacturing_started_unix_nanos),
        last_mfg,
    ) {
        rec.legs.insert(
            rec.legs
                .iter()
                .position(|l| l.leg.starts_with("thaw") || l.leg.starts_with("vein"))
                .unwrap_or(rec.legs.len()),
            leg(
                "manufacturing window",
                start,
                &format!("seq {seq} last manufacturing step"),
                end,
                Some(policy.limits().manufacturing_window_days as i64 * 86_400),
                "first manufacturing step",
            ),
        );
    }
    rec.open_holds = rec
        .holds
        .iter()
        .filter(|h| h.released_seq.is_none())
        .cloned()
        .collect();
    rec
}

fn leg(name: &str, from: i64, to: &str, until: i64, limit: Option<i64>, from_what: &str) -> Leg {
    let secs = (until - from) / crate::time::NANOS_PER_SEC;
    Leg {
        leg: name.into(),
        from: format!("{from_what} {}", crate::time::rfc3339(from)),
        to: format!("{to} {}", crate::time::rfc3339(until)),
        elapsed_seconds: secs,
        elapsed: duration((until - from) as f64),
        limit_seconds: limit,
        limit: limit.map_or_else(|| "no limit".into(), |l| duration(l as f64 * 1e9)),
        over_limit: limit.is_some_and(|l| secs > l),
    }
}

/// Every `*_c` field of the detail is a reading: `temp_min_c`/`temp_max_c` together are the
/// range a logger saw; others are points. The allowed range is the policy row's for the event
/// in the state it was recorded in.
fn readings(
    rec: &mut ChainRecord,
    policy: &Policy,
    kind: &str,
    fields: &[Field],
    state_before: &str,
    seq: u64,
    at: i64,
) {
    let temp = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.raw.as_f64())
    };
    let (allowed, _) = kind_of(kind).map_or((None, None), |k| policy.row_limits(k, state_before));
    let mut push = |lo: f64, hi: f64| {
        rec.temperatures.push(Reading {
            seq,
            event: kind.into(),
            at_unix_nanos: at,
            at: crate::time::rfc3339(at),
            min_c: lo,
            max_c: hi,
            allowed_min_c: allowed.map(|a| a.0),
            allowed_max_c: allowed.map(|a| a.1),
            in_range: allowed.is_none_or(|(a, b)| lo >= a && hi <= b),
        })
    };
    if let (Some(lo), Some(hi)) = (temp("temp_min_c"), temp("temp_max_c")) {
        push(lo, hi);
    }
    for f in fields {
        if f.name.ends_with("_c") && f.name != "temp_min_c" && f.name != "temp_max_c" {
            if let Some(x) = f.raw.as_f64() {
                push(x, x);
            }
        }
    }
}
