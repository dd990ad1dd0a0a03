//! What a chain allows next, for a station that must not duplicate the policy: the events the
//! table allows in the chain's state (with the signer slots each needs and the ranges its
//! readings are checked against), why a bedside check must not show MATCH now, the fields the
//! chain already knows, and a preview of whether an event's readings would open a hold. Pure.

use std::collections::BTreeMap;

use crate::pb::EventBody;

use super::kind::EventKind;
use super::table::{Requirement, SiteRule};
use super::timefmt::{at, span};
use super::{ChainState, Custody, Fail, Policy, Violation};

/// One event the policy allows next.
#[derive(Debug, Clone, PartialEq)]
pub struct NextEvent {
    pub kind: EventKind,
    /// Required signatures (the first is the actor's PERFORMED).
    pub signers: Vec<Requirement>,
    pub optional_signers: Vec<Requirement>,
    /// Temperature range (°C) the event's readings are checked against; outside opens a hold.
    pub temp_range_c: Option<(f64, f64)>,
    /// Set when the event is allowed in this state but not at the asking site (custody).
    pub not_here: Option<String>,
}

/// Why a bedside check must not show MATCH: a word for the big box and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub word: String,
    pub reason: String,
}

/// What the policy says about a chain's next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlook {
    /// `Start` for a chain with no events.
    pub state: String,
    pub terminal: bool,
    pub hold_reasons: Vec<String>,
    pub events: Vec<NextEvent>,
    /// Fields the chain already knows for the next events (e.g. `from_site`, `shipper_id`).
    pub known: BTreeMap<String, String>,
    pub bedside_refusal: Option<Refusal>,
    pub ambient_exposure_max_minutes: u64,
    pub thaw_to_infusion_max_minutes: u64,
    /// Bags the chain has named: collected DINs, then product bags.
    pub bag_ids: Vec<String>,
}

impl Policy {
    /// What may happen next to a chain in `state` (`None`: no events yet), asked from `site`
    /// at `now` (unix nanoseconds).
    pub fn outlook(&self, state: Option<&ChainState>, site: &str, now: i64) -> Outlook {
        let t = &self.table;
        let cur = state.map_or(super::START, |s| s.state.as_str());
        let terminal = t.terminal.contains(cur);
        let hold = state.and_then(|s| s.hold.as_ref());
        let mut events = Vec::new();
        if !terminal {
            for kind in t.events_from(cur) {
                if hold.is_some() && !t.hold_allowed.contains(&kind) {
                    continue;
                }
                let row = t.row(kind, cur).expect("events_from lists rows");
                let not_here = match (row.site, state.map(|s| &s.custody)) {
                    (SiteRule::Custodian, Some(Custody::AtSite { site: c }))
                        if !c.is_empty() && c != site =>
                    {
                        Some(format!(
                            "custody is at {c}; only that site may record {kind}"
                        ))
                    }
                    (SiteRule::Custodian, Some(Custody::InTransit { to_site, .. })) => {
                        Some(format!(
                            "the product is in transit to {to_site}; it must be received first"
                        ))
                    }
                    (SiteRule::Destination, Some(Custody::InTransit { to_site, .. }))
                        if to_site != site =>
                    {
                        Some(format!("the shipment is addressed to {to_site}"))
                    }
                    _ => None,
                };
                events.push(NextEvent {
                    kind,
                    signers: row.signatures.clone(),
                    optional_signers: row.optional_signatures.clone(),
                    temp_range_c: row.temp_range_c,
                    not_here,
                });
            }
        }
        let mut known = BTreeMap::new();
        if let Some(Custody::InTransit {
            from_site,
            shipper_id,
            to_site,
            ..
        }) = state.map(|s| &s.custody)
        {
            known.insert("from_site".to_string(), from_site.clone());
            known.insert("to_site".to_string(), to_site.clone());
            if !shipper_id.is_empty() {
                known.insert("shipper_id".to_string(), shipper_id.clone());
            }
        }
        let bedside_refusal = bedside_refusal(self, state, &events, now);
        Outlook {
            state: cur.to_string(),
            terminal,
            hold_reasons: hold.map(|h| h.reasons.clone()).unwrap_or_default(),
            events,
            known,
            bedside_refusal,
            ambient_exposure_max_minutes: t.limits.ambient_exposure_max_minutes,
            thaw_to_infusion_max_minutes: t.limits.thaw_to_infusion_max_minutes,
            bag_ids: state
                .map(|s| s.dins.iter().chain(&s.product_bag_ids).cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// What `body` would do to a chain in `state`, judged on its details only (no signatures,
    /// site or envelope checks): `Ok(reasons)` lists the holds it would open (empty: none),
    /// `Err` the violation that would refuse it. `ctx` is the entry the event would become
    /// (the current format, accepted now).
    pub fn preview(
        &self,
        state: Option<&ChainState>,
        body: &EventBody,
        ctx: &super::Context,
    ) -> Result<Vec<String>, Violation> {
        let t = &self.table;
        let cur = state.map_or(super::START, |s| s.state.as_str());
        let fail = Fail { state: cur };
        let Some(detail) = body.detail.as_ref() else {
            return Err(fail.v("event_kind", "a custody event detail", "no detail"));
        };
        let Some(kind) = EventKind::of(detail) else {
            return Err(fail.v("event_kind", "a custody event", "a key registry event"));
        };
        if state.is_some_and(|s| t.terminal.contains(&s.state)) {
            return Err(fail.v(
                "terminal",
                "no further events",
                format!("the chain ended with {cur}"),
            ));
        }
        let Some(row) = t.row(kind, cur) else {
            let allowed: Vec<&str> = t.events_from(cur).iter().map(|k| k.name()).collect();
            return Err(fail.v(
                "transition",
                format!("one of [{}]", allowed.join(", ")),
                format!("{kind} is not allowed in state {cur}"),
            ));
        };
        let mut next = state.cloned().unwrap_or_else(ChainState::blank);
        let before = next.hold.as_ref().map_or(0, |h| h.reasons.len());
        super::rules::apply_detail(t, row, &mut next, body, detail, ctx, &fail)?;
        Ok(next
            .hold
            .map(|h| h.reasons.into_iter().skip(before).collect())
            .unwrap_or_default())
    }
}

fn bedside_refusal(
    p: &Policy,
    state: Option<&ChainState>,
    events: &[NextEvent],
    now: i64,
) -> Option<Refusal> {
    let t = &p.table;
    let refuse = |word: &str, reason: String| {
        Some(Refusal {
            word: word.to_string(),
            reason,
        })
    };
    let Some(s) = state else {
        return refuse(
            "MISMATCH",
            "no events on the server for this chain: this bag is unknown".into(),
        );
    };
    if t.terminal.contains(&s.state) {
        return refuse(
            &s.state.to_ascii_uppercase(),
            format!(
                "the chain ended with {} at seq {}: nothing may follow",
                s.state, s.last_seq
            ),
        );
    }
    if let Some(h) = &s.hold {
        return refuse(
            "ON HOLD",
            format!(
                "hold opened at seq {} ({}); QA must release it first",
                h.opened_seq,
                h.reasons.join("; ")
            ),
        );
    }
    if !events.iter().any(|e| e.kind == EventKind::BedsideCheck) {
        return refuse(
            "NOT DISPENSED",
            format!(
                "the chain is in state {}: a bedside check follows dispensing and thaw",
                s.state
            ),
        );
    }
    if let Some(thawed) = s.thawed_at_unix_nanos {
        let max = t.limits.thaw_to_infusion_max_minutes as i128 * 60_000_000_000;
        let elapsed = now as i128 - thawed as i128;
        if elapsed > max {
            return refuse(
                "PAST THAW WINDOW",
                format!(
                    "thawed at {}, {} ago; the limit is {}",
                    at(thawed),
                    span(elapsed),
                    span(max)
                ),
            );
        }
    }
    None
}
