//! The full autologous CAR-T lifecycle through the default table.

use super::*;
use crate::policy::Custody;

#[test]
fn happy_lifecycle_enrolment_to_infusion_over_thirty_days() {
    let mut c = Chain::new();
    let mut states = Vec::new();
    for p in happy_path() {
        let s = c.ok(p);
        assert!(
            s.hold.is_none(),
            "no hold on the happy path, got {:?}",
            s.hold
        );
        states.push(s.state.clone());
    }
    let expected = [
        "Enrolled",
        "Collected",
        "Packed",
        "InTransitToManufacturing",
        "AtManufacturing",
        "Manufacturing",
        "Manufacturing",
        "Manufacturing",
        "Manufacturing",
        "Manufacturing",
        "Manufacturing",
        "QcTesting",
        "QcTesting",
        "QcTesting",
        "QcTesting",
        "QcTesting",
        "QcTesting",
        "QcTesting",
        "Released",
        "PackedForSite",
        "InTransitToSite",
        "AtSite",
        "Stored",
        "Stored",
        "Stored",
        "Dispensed",
        "BedsideChecked",
        "Infused",
    ];
    assert_eq!(states, expected);

    let st = c.st();
    let days = (c.now - T0) as f64 / DAY as f64;
    assert!((28.0..=32.0).contains(&days), "lifecycle took {days} days");
    assert_eq!(st.coi_ref, COI);
    assert_eq!(st.dins, ["W000025123456"]);
    assert_eq!(st.product_bag_ids, ["BAG-A", "BAG-B"]);
    assert_eq!(st.qc.len(), 7);
    assert_eq!(st.checked_bag_id.as_deref(), Some("BAG-A"));
    assert_eq!(
        st.custody,
        Custody::AtSite {
            site: CLINIC.into()
        }
    );
    assert_eq!(st.last_seq, 27);
    let ld = st
        .lymphodepletion
        .as_ref()
        .expect("lymphodepletion recorded");
    assert_eq!(
        (ld.site.as_str(), ld.completed_at_unix_nanos.is_some()),
        (CLINIC, true)
    );
    assert!(
        st.hold.is_none(),
        "infusion inside the window opens no hold"
    );
    for s in &states {
        assert!(c.policy.states().contains(s), "{s} not in states()");
    }
}

#[test]
fn custody_moves_with_shipment_and_receipt() {
    let c = Chain::upto(SHIP + 1);
    assert_eq!(
        c.st().custody,
        Custody::InTransit {
            from_site: APH.into(),
            to_site: MFG.into(),
            courier: COURIER_SITE.into(),
            shipper_id: "GRAI-SHIPPER-1".into(),
            since_unix_nanos: c.now,
        }
    );
    let c = Chain::upto(RECEIVE + 1);
    assert_eq!(c.st().custody, Custody::AtSite { site: MFG.into() });
}

#[test]
fn chain_state_round_trips_through_json() {
    let c = Chain::upto(DISPENSE + 1);
    let json = serde_json::to_string(c.st()).expect("serialize");
    let back: ChainState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(&back, c.st());
    assert_eq!(back.state_name(), "Dispensed");
}

/// Issue 14 point 4: the bedside pre-check refuses MATCH, with the reason's word, when the
/// chain is not dispensed, on hold, past the thaw window or ended, and for a chain with no
/// events; a dispensed chain inside the thaw window has no refusal.
#[test]
fn bedside_refusal_names_not_dispensed_on_hold_past_thaw_and_ended() {
    let word = |c: &Chain, now: i64| {
        c.policy
            .outlook(c.state.as_ref(), CLINIC, now)
            .bedside_refusal
            .map(|r| r.word)
    };
    let fresh = Chain::new();
    assert_eq!(word(&fresh, T0).as_deref(), Some("MISMATCH"));
    let stored = Chain::upto(DISPENSE);
    assert_eq!(word(&stored, stored.now).as_deref(), Some("NOT DISPENSED"));
    let mut c = Chain::upto(DISPENSE + 1);
    assert_eq!(word(&c, c.now), None, "dispensed, thawed 10 minutes ago");
    let limit = c
        .policy
        .outlook(c.state.as_ref(), CLINIC, c.now)
        .thaw_to_infusion_max_minutes as i64
        * MIN;
    // Thawed 10 minutes before the dispense: the window closes 10 minutes before now + limit.
    assert_eq!(word(&c, c.now + limit - 11 * MIN), None);
    assert_eq!(word(&c, c.now + limit).as_deref(), Some("PAST THAW WINDOW"));
    c.ok(plan(MIN, CLINIC, NURSE1, hold("bag label torn")));
    assert_eq!(word(&c, c.now).as_deref(), Some("ON HOLD"));
    let done = Chain::upto(INFUSE + 1);
    assert_eq!(word(&done, done.now).as_deref(), Some("INFUSED"));
}
