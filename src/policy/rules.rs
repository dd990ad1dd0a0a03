//! The checks on event details that the table parameterises but cannot express as data: the
//! chain of identity (CoI reference, bags produced), QC before release, shipment routing, and
//! time and temperature limits. Each failure names its rule. Excursions and over-long steps do
//! not reject the event that reports them (it is a fact); they open a hold that only the
//! table's hold-release signers (QA) can clear. The thaw window is the exception: a bedside
//! check or infusion outside it is refused, because that event is the decision to infuse.

use crate::pb::event_body::Detail;
use crate::pb::EventBody;

use super::kind::EventKind;
use super::presence::cut;
use super::table::{Row, Table};
use super::timefmt::{at, span};
use super::{ChainState, Context, Custody, Fail, OpenHold, QcRecord, Signer, Violation};

const NANOS_PER_MIN: i128 = 60_000_000_000;
const NANOS_PER_HOUR: i128 = 60 * NANOS_PER_MIN;
const NANOS_PER_DAY: i128 = 24 * NANOS_PER_HOUR;

fn required(fail: &Fail<'_>, kind: EventKind, field: &str, value: &str) -> Result<(), Violation> {
    if value.trim().is_empty() {
        Err(fail.v(
            "required_field",
            format!("{kind} with a non-empty {field}"),
            format!("{field} is empty"),
        ))
    } else {
        Ok(())
    }
}

/// A reason from the detail, or else from the body's comment.
fn reason(
    fail: &Fail<'_>,
    kind: EventKind,
    detail_reason: &str,
    body: &EventBody,
) -> Result<String, Violation> {
    let r = if detail_reason.trim().is_empty() {
        body.comment.trim()
    } else {
        detail_reason.trim()
    };
    required(fail, kind, "reason (or comment)", r)?;
    Ok(r.to_string())
}

pub(super) fn raise_hold(st: &mut ChainState, body: &EventBody, reason: String) {
    st.hold
        .get_or_insert_with(|| OpenHold {
            reasons: Vec::new(),
            opened_seq: body.seq,
            opened_at_unix_nanos: body.occurred_at_unix_nanos,
            opened_by: body.actor_key_id.clone(),
        })
        .reasons
        .push(reason);
}

/// CoI references are pseudonyms: 1-64 of [A-Za-z0-9-]. Anything else (spaces, dots, commas,
/// as in names or dates of birth) is refused. Whether a well-formed string is PHI is not decidable.
pub(super) fn coi_ref_well_formed(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks on the envelope: a site, a time, time order, no signature before the event.
pub(super) fn check_envelope(
    t: &Table,
    st: &ChainState,
    has_history: bool,
    body: &EventBody,
    signers: &[Signer],
    ctx: &Context,
    fail: &Fail<'_>,
) -> Result<(), Violation> {
    let kind = body.detail.as_ref().and_then(EventKind::of);
    let kind = kind.map_or("event", EventKind::name);
    if body.site.trim().is_empty() {
        return Err(fail.v(
            "required_field",
            format!("{kind} with a non-empty site"),
            "site is empty",
        ));
    }
    let occurred = body.occurred_at_unix_nanos;
    if occurred <= 0 {
        return Err(fail.v(
            "required_field",
            format!("{kind} with occurred_at_unix_nanos > 0"),
            format!("occurred_at_unix_nanos is {occurred}"),
        ));
    }
    let skew = t.limits.clock_skew_tolerance_seconds as i128 * 1_000_000_000;
    if has_history && (occurred as i128) + skew < st.last_occurred_unix_nanos as i128 {
        return Err(fail.v(
            "time_order",
            format!(
                "{kind} not earlier than the previous event (tolerance {})",
                span(skew)
            ),
            format!(
                "occurred at {}, {} before the previous event at {}",
                at(occurred),
                span(st.last_occurred_unix_nanos as i128 - occurred as i128),
                at(st.last_occurred_unix_nanos)
            ),
        ));
    }
    if !ctx.legacy() {
        let window = t.limits.signature_max_age_days as i128 * NANOS_PER_DAY;
        let accepted = ctx.accepted_at_unix_nanos;
        for s in signers {
            let age = accepted as i128 - s.signed_at_unix_nanos as i128;
            if age > window {
                return Err(fail.v(
                    "signature_age",
                    format!(
                        "every signature made at most {} before the log accepts the event",
                        span(window)
                    ),
                    format!(
                        "key {} signed {} at {}, {} before acceptance at {}; an event held longer (an offline station) needs a QA deviation on the chain, then a fresh signature",
                        s.key_id,
                        s.meaning.as_str_name(),
                        at(s.signed_at_unix_nanos),
                        span(age),
                        at(accepted)
                    ),
                ));
            }
        }
    }
    if ctx.lymphodepletion() {
        // A lower bound on the event's time: not before the actor's key was valid (a key may
        // be registered valid from an earlier date to record older events).
        if let Some(actor) = signers.iter().find(|s| s.key_id == body.actor_key_id) {
            if occurred < actor.valid_from_unix_nanos {
                return Err(fail.v(
                    "time_order",
                    format!("{kind} not before the actor's key was valid"),
                    format!(
                        "occurred at {}, before key {} was valid (from {})",
                        at(occurred),
                        actor.key_id,
                        at(actor.valid_from_unix_nanos)
                    ),
                ));
            }
        }
    }
    for s in signers {
        if (s.signed_at_unix_nanos as i128) + skew < occurred as i128 {
            return Err(fail.v(
                "time_order",
                "every signature made at or after the event",
                format!(
                    "key {} signed {} at {}, {} before the event occurred at {}",
                    s.key_id,
                    s.meaning.as_str_name(),
                    at(s.signed_at_unix_nanos),
                    span(occurred as i128 - s.signed_at_unix_nanos as i128),
                    at(occurred)
                ),
            ));
        }
    }
    Ok(())
}

fn bag_produced(
    fail: &Fail<'_>,
    st: &ChainState,
    kind: EventKind,
    bag: &str,
) -> Result<(), Violation> {
    if st.product_bag_ids.iter().any(|b| b == bag) {
        return Ok(());
    }
    Err(fail.v(
        "bag_produced",
        format!(
            "{kind} of a product bag this chain produced [{}]",
            st.product_bag_ids.join(", ")
        ),
        format!(
            "bag {:?} was not produced for CoI {}; possible mix-up, do not use it",
            cut(bag),
            st.coi_ref
        ),
    ))
}

fn bag_matches(
    fail: &Fail<'_>,
    kind: EventKind,
    bag: &str,
    expected: Option<&String>,
    what: &str,
) -> Result<(), Violation> {
    match expected {
        Some(e) if e != bag => Err(fail.v(
            "bag_matches",
            format!("{kind} of the {what} bag {e}"),
            format!("scanned bag {:?}", cut(bag)),
        )),
        _ => Ok(()),
    }
}

fn thaw_window(
    t: &Table,
    st: &ChainState,
    fail: &Fail<'_>,
    kind: EventKind,
    when: i64,
) -> Result<(), Violation> {
    let Some(thawed) = st.thawed_at_unix_nanos else {
        return Ok(());
    };
    let max = t.limits.thaw_to_infusion_max_minutes as i128 * NANOS_PER_MIN;
    let elapsed = when as i128 - thawed as i128;
    if elapsed > max {
        return Err(fail.v(
            "thaw_window",
            format!("{kind} within {} of thaw", span(max)),
            format!(
                "thawed at {}, {kind} at {}: {} after thaw; the product is outside its thaw window, do not infuse; QA dispositions it (deviation, destroyed)",
                at(thawed),
                at(when),
                span(elapsed)
            ),
        ));
    }
    Ok(())
}

/// A time field that must be set and positive (presence has already refused it unset).
fn positive_time(
    fail: &Fail<'_>,
    kind: EventKind,
    field: &str,
    v: Option<i64>,
) -> Result<i64, Violation> {
    match v {
        Some(t) if t > 0 => Ok(t),
        other => Err(fail.v(
            "required_field",
            format!("{kind} with {field} > 0"),
            format!("{field} is {}", other.unwrap_or(0)),
        )),
    }
}

/// A time the event reports must not lie after the event itself (beyond the skew tolerance).
fn not_after_event(
    fail: &Fail<'_>,
    what: &str,
    when: i64,
    occurred: i64,
    skew: i128,
) -> Result<(), Violation> {
    if when as i128 > occurred as i128 + skew {
        return Err(fail.v(
            "time_order",
            format!("a {what} no later than the event that records it"),
            format!(
                "{what} at {} is after the event at {}",
                at(when),
                at(occurred)
            ),
        ));
    }
    Ok(())
}

/// `dispensed` (thaw) needs a completed lymphodepletion course at the dispensing site, and a
/// thaw not before its completion.
fn lymphodepleted_before(
    fail: &Fail<'_>,
    st: &ChainState,
    body: &EventBody,
    thawed: i64,
) -> Result<(), Violation> {
    let expected = "a lymphodepletion course completed at the dispensing site before the thaw";
    let Some(ld) = &st.lymphodepletion else {
        return Err(fail.v(
            "lymphodepletion_completed",
            expected,
            "no lymphodepletion is recorded on this chain; do not thaw the product for a patient who has not been lymphodepleted (record lymphodepletion_started and lymphodepletion_completed first)",
        ));
    };
    let Some(done) = ld.completed_at_unix_nanos else {
        return Err(fail.v(
            "lymphodepletion_completed",
            expected,
            format!(
                "the course started at {} (seq {}) is not completed; do not thaw yet",
                at(ld.started_at_unix_nanos),
                ld.started_seq
            ),
        ));
    };
    if ld.site != body.site {
        return Err(fail.v(
            "lymphodepletion_completed",
            expected,
            format!(
                "the patient was lymphodepleted at {}, the product is dispensed at {:?}: wrong site, possible mix-up",
                ld.site,
                cut(&body.site)
            ),
        ));
    }
    if thawed < done {
        return Err(fail.v(
            "time_order",
            "a thaw not before lymphodepletion was completed",
            format!(
                "thawed_at {} is {} before lymphodepletion completed at {}",
                at(thawed),
                span(done as i128 - thawed as i128),
                at(done)
            ),
        ));
    }
    Ok(())
}

/// An infusion started outside the window after lymphodepletion completed opens a hold (the
/// infusion is a fact once done; QA dispositions it).
fn infusion_window_hold(t: &Table, st: &mut ChainState, body: &EventBody, started: i64) {
    let Some(done) = st
        .lymphodepletion
        .as_ref()
        .and_then(|ld| ld.completed_at_unix_nanos)
    else {
        return;
    };
    let min = t.limits.lymphodepletion_to_infusion_min_days as i128 * NANOS_PER_DAY;
    let max = t.limits.lymphodepletion_to_infusion_max_days as i128 * NANOS_PER_DAY;
    let since = started as i128 - done as i128;
    if since < min || since > max {
        raise_hold(
            st,
            body,
            format!(
                "lymphodepletion_window: infusion started {} after lymphodepletion completed at {}, window {}..{}",
                span(since),
                at(done),
                span(min),
                span(max)
            ),
        );
    }
}

fn temperature_hold(
    row: &Row,
    st: &mut ChainState,
    body: &EventBody,
    lo: f64,
    hi: f64,
    what: &str,
) {
    if let Some((min, max)) = row.temp_range_c {
        // NaN fails both comparisons and so counts as an excursion.
        if !(lo >= min && hi <= max) {
            raise_hold(
                st,
                body,
                format!("temperature_range: {what} {lo:.1}..{hi:.1} C at {}, allowed {min:.1}..{max:.1} C", body.site),
            );
        }
    }
}

fn qc_problems(t: &Table, st: &ChainState) -> Vec<String> {
    let mut problems = Vec::new();
    for test in &t.required_qc {
        match st.qc.get(test) {
            None => problems.push(format!("no {test} result")),
            Some(results) => {
                for r in results.iter().filter(|r| !r.passed) {
                    problems.push(format!(
                        "{test} failed (result '{}', spec '{}', seq {})",
                        r.result, r.specification, r.seq
                    ));
                }
            }
        }
    }
    problems
}

/// Check the detail and update `st`. May open a hold.
pub(super) fn apply_detail(
    t: &Table,
    row: &Row,
    st: &mut ChainState,
    body: &EventBody,
    detail: &Detail,
    ctx: &Context,
    fail: &Fail<'_>,
) -> Result<(), Violation> {
    let occurred = body.occurred_at_unix_nanos;
    // Entries of format 0 were written before presence: an unset reading then meant 0 / false.
    let legacy = ctx.legacy();
    let skew = t.limits.clock_skew_tolerance_seconds as i128 * 1_000_000_000;
    let kind = row.event;
    match detail {
        Detail::KeyRegistered(_)
        | Detail::KeyRevoked(_)
        | Detail::LogLink(_)
        | Detail::PolicyActivated(_) => {
            // EventKind::of already refused these; unreachable through Policy::apply.
        }
        Detail::Enrolled(e) => {
            if !coi_ref_well_formed(&e.coi_ref) {
                return Err(fail.v(
                    "coi_ref_format",
                    "a pseudonymous CoI reference of 1-64 characters [A-Za-z0-9-], no PHI",
                    format!(
                        "coi_ref {:?} ({} bytes) is not of that form",
                        cut(&e.coi_ref),
                        e.coi_ref.len()
                    ),
                ));
            }
            st.coi_ref = e.coi_ref.clone();
            st.therapy = e.therapy.clone();
            st.manufacturing_site = e.manufacturing_site.clone();
            st.custody = Custody::AtSite {
                site: body.site.clone(),
            };
        }
        Detail::Collected(c) => {
            required(fail, kind, "din", &c.din)?;
            let end = match c.collection_end_unix_nanos {
                Some(e) if e > 0 => e,
                Some(e) if !legacy => {
                    return Err(fail.v(
                        "required_field",
                        "collected with collection_end_unix_nanos > 0",
                        format!("collection_end_unix_nanos is {e}"),
                    ))
                }
                // Legacy unset, or declared not measured: the collection event's own time.
                _ => occurred,
            };
            if !legacy && end as i128 > occurred as i128 + skew {
                return Err(fail.v(
                    "time_order",
                    "a collection end no later than the collected event",
                    format!(
                        "collection ended {} after the event at {}",
                        at(end),
                        at(occurred)
                    ),
                ));
            }
            st.collection_end_unix_nanos =
                Some(st.collection_end_unix_nanos.map_or(end, |e| e.min(end)));
            if !st.dins.contains(&c.din) {
                st.dins.push(c.din.clone());
            }
        }
        Detail::Packed(p) => {
            st.packed_shipper_id = p.shipper_id.clone();
        }
        Detail::Shipped(s) => {
            required(fail, kind, "to_site", &s.to_site)?;
            if !s.from_site.is_empty() && s.from_site != body.site {
                return Err(fail.v(
                    "custody_route",
                    format!("shipment from the custodian site {}", body.site),
                    format!("from_site is {:?}", cut(&s.from_site)),
                ));
            }
            if s.to_site == body.site {
                return Err(fail.v(
                    "custody_route",
                    "shipment to another site",
                    format!("to_site {:?} is the sending site", cut(&s.to_site)),
                ));
            }
            if row.destination_must_be_manufacturing_site
                && !st.manufacturing_site.is_empty()
                && s.to_site != st.manufacturing_site
            {
                return Err(fail.v(
                    "ship_to_manufacturing_site",
                    format!(
                        "shipment to the manufacturing site named at enrolment, {}",
                        st.manufacturing_site
                    ),
                    format!("to_site is {:?}", cut(&s.to_site)),
                ));
            }
            let shipper = if s.shipper_id.is_empty() {
                st.packed_shipper_id.clone()
            } else {
                s.shipper_id.clone()
            };
            st.custody = Custody::InTransit {
                from_site: body.site.clone(),
                to_site: s.to_site.clone(),
                courier: s.courier.clone(),
                shipper_id: shipper,
                since_unix_nanos: occurred,
            };
        }
        Detail::Received(r) => {
            if let Custody::InTransit {
                from_site,
                shipper_id,
                ..
            } = &st.custody
            {
                if !r.from_site.is_empty() && r.from_site != *from_site {
                    return Err(fail.v(
                        "shipment_matches",
                        format!("receipt of the shipment from {from_site}"),
                        format!("from_site is {:?}", cut(&r.from_site)),
                    ));
                }
                if !r.shipper_id.is_empty() && !shipper_id.is_empty() && r.shipper_id != *shipper_id
                {
                    return Err(fail.v(
                        "shipment_matches",
                        format!("receipt of shipper {shipper_id}"),
                        format!(
                            "received shipper {:?}; wrong shipper, possible mix-up",
                            cut(&r.shipper_id)
                        ),
                    ));
                }
            }
            if r.seal_intact.or(legacy.then_some(false)) == Some(false) {
                raise_hold(
                    st,
                    body,
                    format!("seal_intact: seal broken on receipt at {}", body.site),
                );
            }
            let (lo, hi) = if legacy {
                (
                    Some(r.temp_min_c.unwrap_or(0.0)),
                    Some(r.temp_max_c.unwrap_or(0.0)),
                )
            } else {
                // One of the two declared not measured: check the other alone (the missing
                // reading opens its own hold).
                (r.temp_min_c.or(r.temp_max_c), r.temp_max_c.or(r.temp_min_c))
            };
            if let (Some(lo), Some(hi)) = (lo, hi) {
                temperature_hold(row, st, body, lo, hi, "logger recorded");
            }
            let max = t.limits.ambient_exposure_max_minutes as i128 * NANOS_PER_MIN;
            let exposure =
                r.elapsed_seconds.or(legacy.then_some(0)).unwrap_or(0) as i128 * 1_000_000_000;
            if exposure > max {
                raise_hold(
                    st,
                    body,
                    format!(
                        "ambient_exposure: {} out of controlled storage in transport, limit {}",
                        span(exposure),
                        span(max)
                    ),
                );
            }
            if let (Some(h), Some(end)) =
                (row.max_hours_since_collection, st.collection_end_unix_nanos)
            {
                let since = occurred as i128 - end as i128;
                if since > h as i128 * NANOS_PER_HOUR {
                    raise_hold(
                        st,
                        body,
                        format!(
                            "collection_to_receipt: received {} after collection ended at {}, limit {h} h",
                            span(since),
                            at(end)
                        ),
                    );
                }
            }
            st.custody = Custody::AtSite {
                site: body.site.clone(),
            };
            st.received_at_unix_nanos = Some(occurred);
        }
        Detail::ManufacturingStep(m) => {
            required(fail, kind, "step", &m.step)?;
            match st.manufacturing_started_unix_nanos {
                None => st.manufacturing_started_unix_nanos = Some(occurred),
                Some(start) => {
                    let max = t.limits.manufacturing_window_days as i128 * NANOS_PER_DAY;
                    let since = occurred as i128 - start as i128;
                    if since > max {
                        raise_hold(
                            st,
                            body,
                            format!(
                                "manufacturing_window: step '{}' {} after manufacturing started at {}, window {}",
                                m.step,
                                span(since),
                                at(start),
                                span(max)
                            ),
                        );
                    }
                }
            }
            for bag in &m.product_bag_ids {
                required(fail, kind, "product_bag_ids entry", bag)?;
                if !st.product_bag_ids.contains(bag) {
                    st.product_bag_ids.push(bag.clone());
                }
            }
        }
        Detail::QcResult(q) => {
            required(fail, kind, "test", &q.test)?;
            st.qc
                .entry(q.test.trim().to_ascii_lowercase())
                .or_default()
                .push(QcRecord {
                    passed: q.passed.unwrap_or(false),
                    result: q.result.clone(),
                    method: q.method.clone(),
                    specification: q.specification.clone(),
                    seq: body.seq,
                });
        }
        Detail::Released(r) => {
            if st.product_bag_ids.is_empty() {
                return Err(fail.v(
                    "product_bags_exist",
                    "at least one final product bag from a manufacturing step before release",
                    "no manufacturing step listed product_bag_ids",
                ));
            }
            if r.exceptional {
                if r.deviation_id.trim().is_empty() || !st.deviations.contains(&r.deviation_id) {
                    return Err(fail.v(
                        "exceptional_release",
                        "an exceptional release citing a deviation recorded on this chain",
                        format!(
                            "deviation_id {:?} is not among the recorded deviations [{}]",
                            cut(&r.deviation_id),
                            st.deviations.join(", ")
                        ),
                    ));
                }
                st.exceptional_release_deviation = Some(r.deviation_id.clone());
            } else {
                let problems = qc_problems(t, st);
                if !problems.is_empty() {
                    return Err(fail.v(
                        "qc_all_passed",
                        "every required QC test passed before released",
                        format!(
                            "{}; an out-of-specification product needs an exceptional release (deviation + two QA signatures)",
                            problems.join("; ")
                        ),
                    ));
                }
            }
        }
        Detail::Rejected(r) => {
            reason(fail, kind, &r.reason, body)?;
        }
        Detail::Stored(s) => {
            required(fail, kind, "location", &s.location)?;
            if let Some(temp) = s.temp_c.or(legacy.then_some(0.0)) {
                temperature_hold(row, st, body, temp, temp, "storage at");
            }
        }
        Detail::Dispensed(d) => {
            required(fail, kind, "product_bag_id", &d.product_bag_id)?;
            bag_produced(fail, st, kind, &d.product_bag_id)?;
            let thawed = d.thawed_at_unix_nanos.unwrap_or(0);
            if thawed <= 0 {
                return Err(fail.v(
                    "required_field",
                    "dispensed with thawed_at_unix_nanos > 0",
                    format!("thawed_at_unix_nanos is {thawed}"),
                ));
            }
            if thawed as i128 > occurred as i128 + skew {
                return Err(fail.v(
                    "time_order",
                    "a thaw time no later than the dispense event",
                    format!(
                        "thawed_at {} is after the event at {}",
                        at(thawed),
                        at(occurred)
                    ),
                ));
            }
            if let (false, Some(received)) = (legacy, st.received_at_unix_nanos) {
                if thawed < received {
                    return Err(fail.v(
                        "time_order",
                        "a thaw time not before the product's receipt at this site",
                        format!(
                            "thawed_at {} is {} before the receipt at {}",
                            at(thawed),
                            span(received as i128 - thawed as i128),
                            at(received)
                        ),
                    ));
                }
            }
            if row.requires_lymphodepletion && ctx.lymphodepletion() {
                lymphodepleted_before(fail, st, body, thawed)?;
            }
            st.dispensed_bag_id = Some(d.product_bag_id.clone());
            st.thawed_at_unix_nanos = Some(thawed);
        }
        Detail::BedsideCheck(b) => {
            required(fail, kind, "wristband_coi_ref", &b.wristband_coi_ref)?;
            if b.wristband_coi_ref != st.coi_ref {
                return Err(fail.v(
                    "coi_match",
                    format!("the wristband of the patient enrolled as CoI {}", st.coi_ref),
                    format!(
                        "wristband scanned CoI {:?}: MISMATCH, this product is not for this patient; do not infuse",
                        cut(&b.wristband_coi_ref)
                    ),
                ));
            }
            required(fail, kind, "product_bag_id", &b.product_bag_id)?;
            bag_produced(fail, st, kind, &b.product_bag_id)?;
            bag_matches(
                fail,
                kind,
                &b.product_bag_id,
                st.dispensed_bag_id.as_ref(),
                "dispensed (thawed)",
            )?;
            if let (false, Some(thawed)) = (legacy, st.thawed_at_unix_nanos) {
                if occurred < thawed {
                    return Err(fail.v(
                        "time_order",
                        "a bedside check not before the thaw",
                        format!(
                            "bedside check at {} is {} before the thaw at {}",
                            at(occurred),
                            span(thawed as i128 - occurred as i128),
                            at(thawed)
                        ),
                    ));
                }
            }
            thaw_window(t, st, fail, kind, occurred)?;
            st.checked_bag_id = Some(b.product_bag_id.clone());
            st.bedside_checked_at_unix_nanos = Some(occurred);
        }
        Detail::Infused(i) => {
            required(fail, kind, "product_bag_id", &i.product_bag_id)?;
            bag_produced(fail, st, kind, &i.product_bag_id)?;
            bag_matches(
                fail,
                kind,
                &i.product_bag_id,
                st.checked_bag_id.as_ref(),
                "bedside-checked",
            )?;
            let started = match i.started_at_unix_nanos {
                Some(s) if s > 0 => s,
                Some(s) if !legacy => {
                    return Err(fail.v(
                        "required_field",
                        "infused with started_at_unix_nanos > 0",
                        format!("started_at_unix_nanos is {s}"),
                    ))
                }
                _ => occurred,
            };
            let ended = i.ended_at_unix_nanos.unwrap_or(0);
            if (!legacy || ended != 0) && ended < started {
                return Err(fail.v(
                    "time_order",
                    "infusion ending after it started",
                    format!("started {}, ended {}", at(started), at(ended)),
                ));
            }
            if let (false, Some(checked)) = (legacy, st.bedside_checked_at_unix_nanos) {
                if started < checked {
                    return Err(fail.v(
                        "time_order",
                        "an infusion starting after the bedside identity check",
                        format!(
                            "infusion started {}, {} before the bedside check at {}",
                            at(started),
                            span(checked as i128 - started as i128),
                            at(checked)
                        ),
                    ));
                }
            }
            thaw_window(t, st, fail, kind, started)?;
            if ctx.lymphodepletion() {
                infusion_window_hold(t, st, body, started);
            }
        }
        Detail::Hold(h) => {
            let r = reason(fail, kind, &h.reason, body)?;
            raise_hold(st, body, format!("hold: {r}"));
        }
        Detail::HoldReleased(h) => {
            if st.hold.is_none() {
                return Err(fail.v(
                    "hold_open",
                    "an open hold to release",
                    "the chain is not on hold",
                ));
            }
            reason(fail, kind, &h.reason, body)?;
            st.hold = None;
        }
        Detail::Deviation(d) => {
            required(fail, kind, "deviation_id", &d.deviation_id)?;
            let text = if d.description.trim().is_empty() {
                &body.comment
            } else {
                &d.description
            };
            required(fail, kind, "description (or comment)", text)?;
            if !st.deviations.contains(&d.deviation_id) {
                st.deviations.push(d.deviation_id.clone());
            }
        }
        Detail::Destroyed(d) => {
            reason(fail, kind, &d.reason, body)?;
        }
        Detail::LymphodepletionStarted(l) => {
            required(fail, kind, "regimen", &l.regimen)?;
            let started =
                positive_time(fail, kind, "started_at_unix_nanos", l.started_at_unix_nanos)?;
            not_after_event(fail, "lymphodepletion start", started, occurred, skew)?;
            if let Some(ld) = st
                .lymphodepletion
                .as_ref()
                .filter(|ld| ld.completed_at_unix_nanos.is_none())
            {
                return Err(fail.v(
                    "lymphodepletion_order",
                    "one lymphodepletion course at a time: complete the course started before a new one",
                    format!(
                        "a course started at {} (seq {}) at {} is not completed",
                        at(ld.started_at_unix_nanos),
                        ld.started_seq,
                        ld.site
                    ),
                ));
            }
            st.lymphodepletion = Some(super::Lymphodepletion {
                site: body.site.clone(),
                regimen: l.regimen.trim().to_string(),
                started_at_unix_nanos: started,
                started_seq: body.seq,
                completed_at_unix_nanos: None,
            });
        }
        Detail::LymphodepletionCompleted(l) => {
            let completed = positive_time(
                fail,
                kind,
                "completed_at_unix_nanos",
                l.completed_at_unix_nanos,
            )?;
            not_after_event(
                fail,
                "lymphodepletion completion",
                completed,
                occurred,
                skew,
            )?;
            let Some(ld) = st
                .lymphodepletion
                .as_mut()
                .filter(|ld| ld.completed_at_unix_nanos.is_none())
            else {
                return Err(fail.v(
                    "lymphodepletion_order",
                    "lymphodepletion_started before lymphodepletion_completed",
                    "no lymphodepletion course is in progress on this chain",
                ));
            };
            if completed < ld.started_at_unix_nanos {
                return Err(fail.v(
                    "time_order",
                    "a lymphodepletion completion not before its start",
                    format!(
                        "completed_at {} is {} before the start at {}",
                        at(completed),
                        span(ld.started_at_unix_nanos as i128 - completed as i128),
                        at(ld.started_at_unix_nanos)
                    ),
                ));
            }
            ld.completed_at_unix_nanos = Some(completed);
        }
        // A near miss: recorded, never changes the chain's state.
        Detail::IdentityCheckFailed(n) => {
            required(fail, kind, "check", &n.check)?;
            required(fail, kind, "reason", &n.reason)?;
            if n.scanned_wristband_coi_ref.is_empty()
                && n.scanned_bag_id.is_empty()
                && n.scanned_shipper_id.is_empty()
            {
                return Err(fail.v(
                    "near_miss_scans",
                    "what was scanned (a wristband, bag or shipper)",
                    "no scanned value",
                ));
            }
        }
        Detail::CustodyHandoff(h) => {
            required(fail, kind, "to_site", &h.to_site)?;
            if !h.from_site.is_empty() && h.from_site != body.site {
                return Err(fail.v(
                    "custody_route",
                    format!("hand-off from the custodian site {}", body.site),
                    format!("from_site is {:?}", cut(&h.from_site)),
                ));
            }
            if h.to_site == body.site {
                return Err(fail.v(
                    "custody_route",
                    "hand-off to another site",
                    format!("to_site {:?} already holds custody", cut(&h.to_site)),
                ));
            }
            st.custody = Custody::AtSite {
                site: h.to_site.clone(),
            };
        }
    }
    Ok(())
}
