//! Property tests: random event sequences stay within the table's states and never panic;
//! `from_toml` never panics.

use proptest::prelude::*;

use super::*;
use crate::policy::{EventKind, Policy, DEFAULT_TABLE_TOML};

const SITES: [&str; 5] = [APH, MFG, CLINIC, OTHER, COURIER_SITE];
const KEYS: [K; 10] = [
    APH_NURSE,
    COURIER,
    MFG_OP,
    QC,
    QA,
    QA2,
    PHARM,
    NURSE1,
    NURSE2,
    OTHER_NURSE,
];
const MEANINGS: [SignatureMeaning; 6] = [
    Performed,
    Verified,
    SignatureMeaning::Reviewed,
    Approved,
    Received,
    SignatureMeaning::Released,
];

/// One step of a random run: either the next event of the happy path, or a random event.
#[derive(Debug, Clone)]
enum Action {
    Happy,
    Random {
        kind: usize,
        site: usize,
        actor: usize,
        second: Option<(usize, usize)>,
        after: i64,
        variant: u8,
        occurred_override: Option<i64>,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => Just(Action::Happy),
        3 => (
            0..EventKind::ALL.len(),
            0..SITES.len(),
            0..KEYS.len(),
            proptest::option::of((0..KEYS.len(), 0..MEANINGS.len())),
            prop_oneof![Just(0i64), -HOUR..HOUR, 0..40 * DAY],
            any::<u8>(),
            proptest::option::weighted(0.05, any::<i64>()),
        )
            .prop_map(|(kind, site, actor, second, after, variant, occurred_override)| Action::Random {
                kind,
                site,
                actor,
                second,
                after,
                variant,
                occurred_override,
            }),
    ]
}

/// A detail of `kind` with fields drawn from small pools, so some random events are valid.
fn detail_for(kind: EventKind, v: u8, now: i64) -> Detail {
    let pick = |a: &'static str, b: &'static str| if v & 1 == 0 { a } else { b };
    let site = SITES[(v as usize >> 1) % SITES.len()];
    let temp = [5.0, 12.0, -180.0, -100.0, f64::NAN][(v as usize >> 2) % 5];
    let bag = pick("BAG-A", "BAG-Z");
    match kind {
        EventKind::Enrolled => enrolled(pick(COI, "bad coi ref")),
        EventKind::Collected => collected(pick("W000025123456", "")),
        EventKind::Packed => packed(pick("GRAI-SHIPPER-1", "LN2-SHIPPER-9")),
        EventKind::Shipped => shipped(pick(APH, ""), site, pick("GRAI-SHIPPER-1", "")),
        EventKind::Received => received(
            pick(APH, MFG),
            pick("GRAI-SHIPPER-1", "LN2-SHIPPER-9"),
            temp,
            temp,
            v as u64 * 60,
        ),
        EventKind::ManufacturingStep => step(
            pick("activation", "cryopreservation"),
            if v & 2 == 0 { &["BAG-A"] } else { &[] },
        ),
        EventKind::QcResult => qc(REQUIRED_QC[v as usize % 7], v & 8 == 0, "r"),
        EventKind::Released => released(v & 1 == 1, pick("DEV-1", "")),
        EventKind::Rejected => Detail::Rejected(pb::Rejected {
            reason: pick("oos", "").into(),
        }),
        EventKind::Stored => stored(temp),
        EventKind::Dispensed => dispensed(bag, now - (v as i64) * MIN),
        EventKind::BedsideCheck => bedside(pick(COI, "COI-OTHER"), bag),
        EventKind::Infused => infused(bag, 0),
        EventKind::Hold => hold(pick("check", "")),
        EventKind::HoldReleased => hold_released(pick("ok", "")),
        EventKind::Deviation => deviation(pick("DEV-1", "DEV-2"), "desc"),
        EventKind::Destroyed => destroyed(pick("gone", "")),
        EventKind::CustodyHandoff => handoff(pick("", CLINIC), site),
        EventKind::LymphodepletionStarted => ld_started(now - (v as i64) * DAY),
        EventKind::LymphodepletionCompleted => ld_completed(now - (v as i64) * HOUR),
        EventKind::IdentityCheckFailed => Detail::IdentityCheckFailed(pb::IdentityCheckFailed {
            check: "bedside_check".into(),
            reason: pick("wrong patient", "").into(),
            scanned_bag_id: bag.into(),
            ..Default::default()
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_event_sequences_stay_in_reachable_states(actions in proptest::collection::vec(action(), 1..80)) {
        let mut c = Chain::new();
        let states = c.policy.states();
        let terminal = c.policy.terminal_states();
        let happy = happy_path();
        let mut cursor = 0;
        for a in actions {
            let before = c.state.clone();
            let (result, kind) = match a {
                Action::Happy => {
                    let Some(p) = happy.get(cursor).cloned() else { continue };
                    let kind = EventKind::of(&p.detail);
                    let r = c.try_(p.clone());
                    if r.is_ok() {
                        cursor += 1;
                        c.ok(p);
                    }
                    (r, kind)
                }
                Action::Random { kind, site, actor, second, after, variant, occurred_override } => {
                    let kind = EventKind::ALL[kind];
                    let now = c.now.saturating_add(after);
                    let mut body = c.body(SITES[site], KEYS[actor], detail_for(kind, variant, now));
                    body.occurred_at_unix_nanos = occurred_override.unwrap_or(now);
                    let mut signers = vec![KEYS[actor].signs(Performed, body.occurred_at_unix_nanos)];
                    if let Some((k, m)) = second {
                        signers.push(KEYS[k].signs(MEANINGS[m], body.occurred_at_unix_nanos));
                    }
                    (c.apply_raw(&body, &signers), Some(kind))
                }
            };
            if let Ok(s) = &result {
                prop_assert!(states.contains(&s.state), "state {} not in states()", s.state);
                if let Some(prev) = &before {
                    prop_assert!(!terminal.contains(&prev.state), "accepted an event after {}", prev.state);
                    if prev.hold.is_some() {
                        let kind = kind.expect("custody event");
                        prop_assert!(
                            matches!(kind, EventKind::HoldReleased | EventKind::Deviation | EventKind::Destroyed | EventKind::Rejected | EventKind::LymphodepletionStarted | EventKind::LymphodepletionCompleted | EventKind::IdentityCheckFailed),
                            "accepted {kind} while on hold"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn from_toml_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = Policy::from_toml(&text);
    }

    #[test]
    fn from_toml_never_panics_on_mangled_default(cut in 0usize..8000, len in 0usize..200, insert in "[\\[\\]=\"a-zA-Z*0-9 \n]{0,20}") {
        let mut text = DEFAULT_TABLE_TOML.to_string();
        let start = (cut % (text.len() + 1)).min(text.len());
        let mut start = start;
        while !text.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        text.replace_range(start..end, &insert);
        if let Ok(p) = Policy::from_toml(&text) {
            // A table that loads must be usable.
            let c = Chain::with_policy(p);
            let _ = c.try_(happy(0));
        }
    }
}
