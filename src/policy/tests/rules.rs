//! One accepting and one rejecting test per rule, with the rejection message checked.

use super::*;
use crate::policy::Policy;

// ---- event_kind ----------------------------------------------------------------------------

#[test]
fn rejects_body_without_detail() {
    let c = Chain::new();
    let mut body = c.body(APH, APH_NURSE, enrolled(COI));
    body.detail = None;
    let r = c
        .policy
        .apply(None, &body, &[APH_NURSE.signs(Performed, T0)]);
    assert_violation(r, "event_kind", &["in state Start", "carries no detail"]);
}

#[test]
fn rejects_key_registry_event_on_a_bag_chain() {
    let c = Chain::upto(1);
    let mut body = c.body(APH, APH_NURSE, enrolled(COI));
    body.detail = Some(Detail::KeyRevoked(pb::KeyRevoked {
        key_id: "x".into(),
        revoked_at_unix_nanos: T0,
        reason: "lost".into(),
    }));
    let r = c
        .policy
        .apply(c.state.as_ref(), &body, &[APH_NURSE.signs(Performed, T0)]);
    assert_violation(r, "event_kind", &["\"keys\" chain"]);
}

// ---- chain_start ---------------------------------------------------------------------------

#[test]
fn accepts_enrollment_as_first_event() {
    let mut c = Chain::new();
    let s = c.ok(happy(0));
    assert_eq!(s.state, "Enrolled");
    assert_eq!(s.coi_ref, COI);
}

#[test]
fn rejects_collection_as_first_event() {
    let c = Chain::new();
    let r = c.try_(plan(0, APH, APH_NURSE, collected("W000025123456")));
    assert_violation(
        r,
        "chain_start",
        &[
            "in state Start expected enrolled as the chain's first event",
            "got collected",
        ],
    );
}

#[test]
fn rejects_first_event_not_at_seq_zero() {
    let mut c = Chain::new();
    c.seq = 3;
    let r = c.try_(happy(0));
    assert_violation(r, "chain_start", &["seq 3"]);
}

// ---- transition ----------------------------------------------------------------------------

#[test]
fn accepts_qc_result_during_manufacturing() {
    let mut c = Chain::upto(ACTIVATION + 1);
    let s = c.ok(plan(DAY, MFG, QC, qc("mycoplasma", true, "not detected")));
    assert_eq!(s.state, "QcTesting");
}

#[test]
fn rejects_second_enrollment() {
    let c = Chain::upto(2);
    let r = c.try_(happy(0));
    assert_violation(
        r,
        "transition",
        &["in state Collected", "enrolled is not allowed"],
    );
}

#[test]
fn rejects_release_before_qc_testing() {
    let c = Chain::upto(CRYO + 1);
    let r = c.try_(plan(DAY, MFG, QA, released(false, "")));
    assert_violation(
        r,
        "transition",
        &[
            "in state Manufacturing expected one of [",
            "qc_result",
            "released is not allowed",
        ],
    );
}

#[test]
fn rejects_infusion_without_bedside_check() {
    let c = Chain::upto(DISPENSE + 1);
    let r = c.try_(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
    assert_violation(
        r,
        "transition",
        &[
            "in state Dispensed",
            "bedside_check",
            "infused is not allowed",
        ],
    );
}

// ---- terminal ------------------------------------------------------------------------------

#[test]
fn accepts_infusion_which_ends_the_chain() {
    let mut c = Chain::upto(INFUSE);
    assert_eq!(c.ok(happy(INFUSE)).state, "Infused");
    assert!(c.policy.terminal_states().contains(&"Infused".to_string()));
}

#[test]
fn rejects_event_after_infused() {
    let c = Chain::upto(INFUSE + 1);
    let r = c.try_(plan(HOUR, MFG, QA, deviation("DEV-9", "late paperwork")));
    assert_violation(
        r,
        "terminal",
        &[
            "in state Infused expected no further events",
            "ended with Infused at seq 25",
            "deviation cannot follow",
        ],
    );
}

#[test]
fn rejects_event_after_destroyed() {
    let mut c = Chain::upto(RECEIVE + 1);
    c.ok(plan(HOUR, MFG, MFG_OP, destroyed("bag leaked")).with(QA, Approved));
    assert_eq!(c.state_name(), "Destroyed");
    let r = c.try_(happy(ACTIVATION));
    assert_violation(r, "terminal", &["ended with Destroyed"]);
}

// ---- custodian_site ------------------------------------------------------------------------

#[test]
fn rejects_wrong_site_acting() {
    let c = Chain::upto(COLLECT);
    let r = c.try_(plan(DAY, OTHER, OTHER_NURSE, collected("W000025123456")));
    assert_violation(
        r,
        "custodian_site",
        &[
            "in state Enrolled expected collected by the custodian site APH-0001",
            "event at site \"CLINIC-0002\"",
        ],
    );
}

#[test]
fn rejects_acting_while_in_transit() {
    let c = Chain::upto(SHIP + 1);
    let r = c.try_(plan(HOUR, APH, APH_NURSE, handoff(APH, MFG)).with(MFG_OP, Received));
    assert_violation(
        r,
        "custodian_site",
        &[
            "expected a received event at MFG-0001",
            "custody_handoff at site \"APH-0001\" refused: the product is in transit from APH-0001 to MFG-0001",
        ],
    );
}

#[test]
fn custody_handoff_moves_custody_to_receiving_site() {
    let mut c = Chain::upto(STORE + 1);
    let ward = K("ward.nurse", "nurse", OTHER);
    c.ok(plan(HOUR, CLINIC, PHARM, handoff(CLINIC, OTHER)).with(ward, Received));
    assert_eq!(c.st().state, "Stored");
    // The old custodian may no longer act; the new one may.
    let r = c.try_(plan(HOUR, CLINIC, PHARM, stored(-185.0)));
    assert_violation(r, "custodian_site", &["custodian site CLINIC-0002"]);
    let pharm2 = K("pharm.two", "pharmacist", OTHER);
    c.ok(plan(HOUR, OTHER, pharm2, stored(-186.0)));
}

// ---- receive_at_destination ----------------------------------------------------------------

#[test]
fn accepts_receipt_at_destination() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(happy(RECEIVE));
    assert_eq!(s.state, "AtManufacturing");
}

#[test]
fn rejects_receipt_at_wrong_site() {
    let c = Chain::upto(RECEIVE);
    let wrong = K("mfg.other", "manufacturing", "MFG-0002");
    let r = c.try_(plan(
        HOUR,
        "MFG-0002",
        wrong,
        received(APH, "GRAI-SHIPPER-1", 4.0, 5.0, 0),
    ));
    assert_violation(
        r,
        "receive_at_destination",
        &["in state InTransitToManufacturing expected receipt at the shipment's destination MFG-0001"],
    );
}

// ---- distinct_signers, signatures, signer_site, unexpected_signer --------------------------

#[test]
fn accepts_bedside_check_by_two_nurses() {
    let mut c = Chain::upto(BEDSIDE);
    assert_eq!(c.ok(happy(BEDSIDE)).state, "BedsideChecked");
}

#[test]
fn rejects_same_key_twice_where_two_people_required() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-A")).with(NURSE1, Verified));
    assert_violation(
        r,
        "distinct_signers",
        &[
            "in state Dispensed expected PERFORMED by nurse (registered at the event site) and VERIFIED by nurse (registered at the event site), each from a different key",
            "key nurse.ada signed 2 times (PERFORMED, VERIFIED)",
        ],
    );
}

#[test]
fn rejects_bedside_check_without_second_nurse() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-A")));
    assert_violation(
        r,
        "signatures",
        &[
            "missing VERIFIED by nurse",
            "got nurse.ada (nurse @ CLINIC-0001) PERFORMED",
        ],
    );
}

#[test]
fn rejects_release_by_non_qa() {
    let c = Chain::upto(RELEASE);
    let r = c.try_(plan(DAY, MFG, QC, released(false, "")));
    assert_violation(
        r,
        "signatures",
        &["expected PERFORMED by qa", "missing PERFORMED by qa"],
    );
}

#[test]
fn rejects_signer_registered_at_another_site() {
    let c = Chain::upto(BEDSIDE);
    let r =
        c.try_(plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-A")).with(OTHER_NURSE, Verified));
    assert_violation(
        r,
        "signer_site",
        &[
            "key nurse.zoe (role nurse) is registered at site \"CLINIC-0002\"",
            "must come from site \"CLINIC-0001\"",
        ],
    );
}

#[test]
fn accepts_qa_approving_destruction_from_another_site() {
    let mut c = Chain::upto(STORE + 1);
    // QA is registered at the manufacturer; destruction happens at the clinic.
    let s = c.ok(plan(HOUR, CLINIC, PHARM, destroyed("dropped, bag cracked")).with(QA, Approved));
    assert_eq!(s.state, "Destroyed");
}

#[test]
fn rejects_destruction_without_qa_approval() {
    let c = Chain::upto(STORE + 1);
    let r = c.try_(plan(HOUR, CLINIC, PHARM, destroyed("dropped")).with(NURSE1, Approved));
    assert_violation(r, "signatures", &["missing APPROVED by qa"]);
}

#[test]
fn rejects_signature_the_event_does_not_take() {
    let c = Chain::upto(COLLECT);
    let r = c.try_(happy(COLLECT).with(COURIER, SignatureMeaning::Reviewed));
    assert_violation(
        r,
        "unexpected_signer",
        &["key courier.kim (role courier @ COURIER-0001) signed REVIEWED, which this event does not take"],
    );
}

#[test]
fn accepts_optional_signature_declared_in_table() {
    let toml = crate::policy::DEFAULT_TABLE_TOML.replace(
        "event = \"collected\"\nfrom = [\"Enrolled\", \"Collected\"]     # a collection may fill more than one bag\nto = \"Collected\"\n",
        "event = \"collected\"\nfrom = [\"Enrolled\", \"Collected\"]\nto = \"Collected\"\noptional_signatures = [{ role = \"*\", meaning = \"REVIEWED\", site = \"any\" }]\n",
    );
    let policy = Policy::from_toml(&toml).expect("table loads");
    let mut c = Chain::with_policy(policy);
    c.ok(happy(0));
    let s = c.ok(happy(COLLECT).with(COURIER, SignatureMeaning::Reviewed));
    assert_eq!(s.state, "Collected");
    // Two keys cannot share the one required slot just because an optional slot is free.
    let aph2 = K("aph.nurse.bo", "apheresis_nurse", APH);
    let r = c.try_(happy(COLLECT).with(aph2, Performed));
    assert_violation(
        r,
        "signatures",
        &["cannot fill every requirement with a different key", "aph.nurse.bo (apheresis_nurse @ APH-0001) PERFORMED"],
    );
}

// ---- required_field ------------------------------------------------------------------------

#[test]
fn rejects_collection_without_din() {
    let c = Chain::upto(COLLECT);
    let r = c.try_(plan(DAY, APH, APH_NURSE, collected("  ")));
    assert_violation(
        r,
        "required_field",
        &["expected collected with a non-empty din"],
    );
}

#[test]
fn rejects_hold_without_reason() {
    let c = Chain::upto(STORE + 1);
    let r = c.try_(plan(HOUR, CLINIC, PHARM, hold("")));
    assert_violation(
        r,
        "required_field",
        &["hold with a non-empty reason (or comment)"],
    );
}

#[test]
fn accepts_hold_by_any_role_with_reason() {
    let mut c = Chain::upto(STORE + 1);
    let s = c.ok(plan(
        HOUR,
        CLINIC,
        PHARM,
        hold("freezer alarm, investigating"),
    ));
    let h = s.hold.as_ref().expect("hold open");
    assert_eq!(h.reasons, ["hold: freezer alarm, investigating"]);
    assert_eq!(h.opened_by, PHARM.0);
}

// ---- time_order ----------------------------------------------------------------------------

#[test]
fn accepts_small_clock_skew_between_sites() {
    let mut c = Chain::upto(RECEIVE);
    // The manufacturer's clock is 4 minutes behind the apheresis site's.
    c.ok(plan(
        -4 * MIN,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 0),
    ));
}

#[test]
fn rejects_event_earlier_than_previous() {
    let c = Chain::upto(RECEIVE);
    let r = c.try_(plan(
        -HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 0),
    ));
    assert_violation(
        r,
        "time_order",
        &[
            "not earlier than the previous event (tolerance 5 min)",
            "1 h 0 min before the previous event at 2025-03-03 09:30:00Z",
        ],
    );
}

#[test]
fn rejects_signature_made_before_the_event() {
    let c = Chain::upto(COLLECT);
    let body = c.body(APH, APH_NURSE, collected("W000025123456"));
    let signer = APH_NURSE.signs(Performed, c.now - HOUR);
    let r = c.policy.apply(c.state.as_ref(), &body, &[signer]);
    assert_violation(
        r,
        "time_order",
        &[
            "every signature made at or after the event",
            "key aph.nurse.ana signed PERFORMED at 2025-03-01 07:00:00Z, 1 h 0 min before",
        ],
    );
}

// ---- coi_ref_format ------------------------------------------------------------------------

#[test]
fn accepts_pseudonymous_coi_ref() {
    let mut c = Chain::new();
    c.ok(plan(0, APH, APH_NURSE, enrolled("A1-b2-C3")));
    assert!(crate::policy::rules::coi_ref_well_formed(&"Z".repeat(64)));
}

#[test]
fn rejects_enrollment_with_name_like_coi_ref() {
    let c = Chain::new();
    let r = c.try_(plan(0, APH, APH_NURSE, enrolled("Jane Doe 1970-01-01")));
    assert_violation(
        r,
        "coi_ref_format",
        &[
            "pseudonymous CoI reference of 1-64 characters [A-Za-z0-9-], no PHI",
            "\"Jane Doe 1970-01-01\"",
        ],
    );
    assert!(!crate::policy::rules::coi_ref_well_formed(&"Z".repeat(65)));
    assert!(!crate::policy::rules::coi_ref_well_formed(""));
}

// ---- custody_route, ship_to_manufacturing_site, shipment_matches ---------------------------

#[test]
fn rejects_shipment_to_own_site() {
    let c = Chain::upto(SHIP);
    let r = c.try_(
        plan(HOUR, APH, APH_NURSE, shipped(APH, APH, "GRAI-SHIPPER-1")).with(COURIER, Received),
    );
    assert_violation(
        r,
        "custody_route",
        &["shipment to another site", "is the sending site"],
    );
}

#[test]
fn rejects_handoff_naming_another_from_site() {
    let c = Chain::upto(STORE + 1);
    let ward = K("ward.nurse", "nurse", OTHER);
    let r = c.try_(plan(HOUR, CLINIC, PHARM, handoff(MFG, OTHER)).with(ward, Received));
    assert_violation(
        r,
        "custody_route",
        &[
            "hand-off from the custodian site CLINIC-0001",
            "from_site is \"MFG-0001\"",
        ],
    );
}

#[test]
fn rejects_handoff_received_by_key_of_another_site() {
    let c = Chain::upto(STORE + 1);
    let r = c.try_(plan(HOUR, CLINIC, PHARM, handoff(CLINIC, OTHER)).with(NURSE1, Received));
    assert_violation(
        r,
        "signer_site",
        &[
            "registered at the receiving site",
            "must come from site \"CLINIC-0002\"",
        ],
    );
}

#[test]
fn accepts_apheresis_shipped_to_enrolled_manufacturing_site() {
    let mut c = Chain::upto(SHIP);
    assert_eq!(c.ok(happy(SHIP)).state, "InTransitToManufacturing");
}

#[test]
fn rejects_apheresis_shipped_to_other_manufacturer() {
    let c = Chain::upto(SHIP);
    let r = c.try_(
        plan(
            30 * MIN,
            APH,
            APH_NURSE,
            shipped(APH, "MFG-0002", "GRAI-SHIPPER-1"),
        )
        .with(COURIER, Received),
    );
    assert_violation(
        r,
        "ship_to_manufacturing_site",
        &[
            "manufacturing site named at enrolment, MFG-0001",
            "to_site is \"MFG-0002\"",
        ],
    );
}

#[test]
fn rejects_receipt_of_different_shipper() {
    let c = Chain::upto(RECEIVE);
    let r = c.try_(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-7", 3.0, 6.0, 0),
    ));
    assert_violation(
        r,
        "shipment_matches",
        &[
            "receipt of shipper GRAI-SHIPPER-1",
            "received shipper \"GRAI-SHIPPER-7\"; wrong shipper",
        ],
    );
}

// ---- holds: temperature_range, seal_intact, ambient_exposure, collection_to_receipt --------

#[test]
fn temperature_excursion_on_receipt_raises_hold_only_qa_clears() {
    let mut c = Chain::upto(RECEIVE);
    // The event is accepted (it is a fact) and opens a hold.
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 12.4, 600),
    ));
    assert_eq!(s.state, "AtManufacturing");
    let h = s.hold.as_ref().expect("excursion opens a hold");
    assert_eq!(
        h.reasons,
        ["temperature_range: logger recorded 3.0..12.4 C at MFG-0001, allowed 2.0..8.0 C"]
    );
    // While held, manufacturing may not start.
    assert_violation(
        c.try_(plan(HOUR, MFG, MFG_OP, step("activation", &[]))),
        "on_hold",
        &[
            "in state AtManufacturing expected only [rejected, hold_released, deviation, destroyed] while on hold",
            "manufacturing_step refused: hold opened at seq 4 by mfg.op.moe (temperature_range",
        ],
    );
    // Manufacturing cannot clear it.
    assert_violation(
        c.try_(plan(HOUR, MFG, MFG_OP, hold_released("looks fine"))),
        "signatures",
        &["missing PERFORMED by qa"],
    );
    // QA records the deviation and clears the hold; manufacturing proceeds.
    c.ok(plan(
        HOUR,
        MFG,
        QA,
        deviation("DEV-0007", "transport excursion to 12.4 C, 25 min"),
    ));
    let s = c.ok(plan(
        HOUR,
        MFG,
        QA,
        hold_released("impact assessed under DEV-0007"),
    ));
    assert!(s.hold.is_none());
    assert_eq!(
        c.ok(plan(HOUR, MFG, MFG_OP, step("activation", &[]))).state,
        "Manufacturing"
    );
}

#[test]
fn receipt_within_temperature_range_opens_no_hold() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 2.0, 8.0, 0),
    ));
    assert!(s.hold.is_none());
}

#[test]
fn warm_ln2_storage_raises_hold() {
    let mut c = Chain::upto(STORE);
    let s = c.ok(plan(HOUR, CLINIC, PHARM, stored(-120.0)));
    assert_eq!(
        s.hold.as_ref().map(|h| h.reasons.clone()),
        Some(vec!["temperature_range: storage at -120.0..-120.0 C at CLINIC-0001, allowed -200.0..-150.0 C".to_string()])
    );
}

#[test]
fn broken_seal_on_receipt_raises_hold() {
    let mut c = Chain::upto(RECEIVE);
    let mut d = received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 0);
    if let Detail::Received(r) = &mut d {
        r.seal_intact = false;
    }
    let s = c.ok(plan(20 * HOUR, MFG, MFG_OP, d));
    assert_eq!(
        s.hold.as_ref().map(|h| h.reasons.clone()),
        Some(vec![
            "seal_intact: seal broken on receipt at MFG-0001".to_string()
        ])
    );
}

#[test]
fn ambient_exposure_of_sixty_minutes_is_accepted_without_hold() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 3600),
    ));
    assert!(s.hold.is_none());
}

#[test]
fn ambient_exposure_over_sixty_minutes_raises_hold() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 3660),
    ));
    assert_eq!(
        s.hold.as_ref().map(|h| h.reasons.clone()),
        Some(vec![
            "ambient_exposure: 1 h 1 min out of controlled storage in transport, limit 1 h 0 min"
                .to_string()
        ])
    );
}

#[test]
fn receipt_fifty_hours_after_collection_raises_hold() {
    let mut c = Chain::upto(RECEIVE);
    // Collected at day 2; shipped 1.5 h later; received 48.5 h after that.
    let s = c.ok(plan(
        48 * HOUR + 30 * MIN,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 0),
    ));
    let reasons = &s.hold.as_ref().expect("hold").reasons;
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("collection_to_receipt: received 2.1 days after collection ended at 2025-03-03 08:00:00Z, limit 48 h"),
        "{reasons:?}"
    );
}

#[test]
fn several_excursions_are_all_named_in_one_hold() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", f64::NAN, 30.0, 7200),
    ));
    let reasons = &s.hold.as_ref().expect("hold").reasons;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("temperature_range:"));
    assert!(reasons[1].starts_with("ambient_exposure:"));
}

#[test]
fn missing_logger_reading_counts_as_excursion() {
    let mut c = Chain::upto(RECEIVE);
    let s = c.ok(plan(20 * HOUR, MFG, MFG_OP, received(APH, "GRAI-SHIPPER-1", f64::NAN, 5.0, 0)));
    let reasons = &s.hold.as_ref().expect("NaN reading opens a hold").reasons;
    assert_eq!(reasons, &["temperature_range: logger recorded NaN..5.0 C at MFG-0001, allowed 2.0..8.0 C"]);
}

// ---- on_hold, hold_open --------------------------------------------------------------------

#[test]
fn rejects_hold_release_when_not_on_hold() {
    let c = Chain::upto(STORE + 1);
    let r = c.try_(plan(HOUR, MFG, QA, hold_released("nothing to release")));
    assert_violation(
        r,
        "hold_open",
        &[
            "in state Stored expected an open hold to release",
            "not on hold",
        ],
    );
}

#[test]
fn qa_may_reject_a_held_product() {
    let mut c = Chain::upto(RECEIVE);
    c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", 3.0, 25.0, 0),
    ));
    let s = c.ok(plan(
        HOUR,
        MFG,
        QA,
        crate::pb::event_body::Detail::Rejected(pb::Rejected {
            reason: "excursion".into(),
        }),
    ));
    assert_eq!(s.state, "Rejected");
    assert!(s.hold.is_some(), "rejection does not clear the hold");
    assert_eq!(
        c.ok(plan(HOUR, MFG, MFG_OP, destroyed("rejected material")).with(QA2, Approved))
            .state,
        "Destroyed"
    );
}

// ---- manufacturing_window ------------------------------------------------------------------

#[test]
fn manufacturing_step_within_window_opens_no_hold() {
    let mut c = Chain::upto(ACTIVATION + 1);
    let s = c.ok(plan(
        27 * DAY,
        MFG,
        MFG_OP,
        step("cryopreservation", &["BAG-A"]),
    ));
    assert!(s.hold.is_none());
}

#[test]
fn manufacturing_step_past_window_raises_hold() {
    let mut c = Chain::upto(ACTIVATION + 1);
    let s = c.ok(plan(
        29 * DAY,
        MFG,
        MFG_OP,
        step("cryopreservation", &["BAG-A"]),
    ));
    assert_eq!(
        s.hold.as_ref().map(|h| h.reasons.clone()),
        Some(vec!["manufacturing_window: step 'cryopreservation' 29.0 days after manufacturing started at 2025-03-04 09:30:00Z, window 28.0 days".to_string()])
    );
    assert_violation(
        c.try_(plan(DAY, MFG, QC, qc("sterility", true, "no growth"))),
        "on_hold",
        &["manufacturing_window"],
    );
}

#[test]
fn manufacturing_window_is_configurable() {
    let toml = crate::policy::DEFAULT_TABLE_TOML.replace(
        "manufacturing_window_days = 28",
        "manufacturing_window_days = 14",
    );
    let mut c = Chain::with_policy(Policy::from_toml(&toml).expect("loads"));
    for p in happy_path().into_iter().take(ACTIVATION + 1) {
        c.ok(p);
    }
    let s = c.ok(plan(15 * DAY, MFG, MFG_OP, step("harvest", &[])));
    assert!(s.hold.as_ref().expect("hold").reasons[0].contains("window 14.0 days"));
}

// ---- product_bags_exist, qc_all_passed, exceptional_release --------------------------------

#[test]
fn accepts_release_when_every_qc_test_passed() {
    let mut c = Chain::upto(RELEASE);
    let s = c.ok(happy(RELEASE));
    assert_eq!(s.state, "Released");
    assert_eq!(s.exceptional_release_deviation, None);
}

#[test]
fn rejects_release_without_product_bags() {
    let mut c = Chain::upto(CRYO);
    c.ok(plan(HOUR, MFG, MFG_OP, step("cryopreservation", &[])));
    for t in REQUIRED_QC {
        c.ok(plan(HOUR, MFG, QC, qc(t, true, "ok")));
    }
    let r = c.try_(plan(DAY, MFG, QA, released(false, "")));
    assert_violation(r, "product_bags_exist", &["at least one final product bag"]);
}

/// A chain after cryopreservation with the required QC results, `sterility` given by the caller.
fn qc_done(sterility: Option<(bool, &str)>) -> Chain {
    let mut c = Chain::upto(QC_FIRST);
    if let Some((passed, result)) = sterility {
        c.ok(plan(DAY, MFG, QC, qc("Sterility", passed, result)));
    }
    for t in &REQUIRED_QC[1..] {
        c.ok(plan(HOUR, MFG, QC, qc(t, true, "within specification")));
    }
    c
}

#[test]
fn rejects_release_when_sterility_failed() {
    let c = qc_done(Some((false, "growth at day 7")));
    let r = c.try_(plan(DAY, MFG, QA, released(false, "")));
    assert_violation(
        r,
        "qc_all_passed",
        &[
            "rule qc_all_passed: in state QcTesting expected every required QC test passed before released: sterility failed (result 'growth at day 7', spec 'per spec', seq 11)",
            "needs an exceptional release (deviation + two QA signatures)",
        ],
    );
}

#[test]
fn rejects_release_with_a_missing_qc_test() {
    let c = qc_done(None);
    let r = c.try_(plan(DAY, MFG, QA, released(false, "")));
    assert_violation(r, "qc_all_passed", &["no sterility result"]);
}

#[test]
fn rejects_release_after_failed_test_passes_on_retest() {
    let mut c = qc_done(Some((false, "growth at day 7")));
    c.ok(plan(
        DAY,
        MFG,
        QC,
        qc("sterility", true, "no growth (retest)"),
    ));
    let r = c.try_(plan(DAY, MFG, QA, released(false, "")));
    assert_violation(
        r,
        "qc_all_passed",
        &["sterility failed (result 'growth at day 7'"],
    );
}

#[test]
fn exceptional_release_with_deviation_and_two_qa_is_accepted() {
    let mut c = qc_done(Some((false, "growth at day 7")));
    c.ok(plan(
        DAY,
        MFG,
        QA,
        deviation(
            "DEV-0100",
            "sterility OOS; organism identified as lab contaminant",
        ),
    ));
    let s = c.ok(plan(HOUR, MFG, QA, released(true, "DEV-0100")).with(QA2, Approved));
    assert_eq!(s.state, "Released");
    assert_eq!(s.exceptional_release_deviation.as_deref(), Some("DEV-0100"));
}

#[test]
fn rejects_exceptional_release_with_one_qa_signature() {
    let mut c = qc_done(Some((false, "growth at day 7")));
    c.ok(plan(DAY, MFG, QA, deviation("DEV-0100", "sterility OOS")));
    let r = c.try_(plan(HOUR, MFG, QA, released(true, "DEV-0100")));
    assert_violation(
        r,
        "signatures",
        &[
            "expected PERFORMED by qa (registered at the event site) and APPROVED by qa",
            "missing APPROVED by qa",
        ],
    );
}

#[test]
fn rejects_exceptional_release_with_same_qa_key_twice() {
    let mut c = qc_done(Some((false, "growth at day 7")));
    c.ok(plan(DAY, MFG, QA, deviation("DEV-0100", "sterility OOS")));
    let r = c.try_(plan(HOUR, MFG, QA, released(true, "DEV-0100")).with(QA, Approved));
    assert_violation(r, "distinct_signers", &["key qa.rosa signed 2 times"]);
}

#[test]
fn rejects_exceptional_release_without_recorded_deviation() {
    let c = qc_done(Some((false, "growth at day 7")));
    let r = c.try_(plan(HOUR, MFG, QA, released(true, "DEV-0100")).with(QA2, Approved));
    assert_violation(
        r,
        "exceptional_release",
        &["deviation_id \"DEV-0100\" is not among the recorded deviations []"],
    );
}

// ---- bag_produced, bag_matches, coi_match --------------------------------------------------

#[test]
fn rejects_dispensing_bag_not_produced_by_this_chain() {
    let c = Chain::upto(DISPENSE);
    let r = c.try_(plan(HOUR, CLINIC, PHARM, dispensed("BAG-Z", c.now)));
    assert_violation(
        r,
        "bag_produced",
        &[
            "dispensed of a product bag this chain produced [BAG-A, BAG-B]",
            "bag \"BAG-Z\" was not produced for CoI COI-7F3K-2291",
        ],
    );
}

#[test]
fn bedside_check_accepts_matching_wristband_and_bag() {
    let mut c = Chain::upto(BEDSIDE);
    let s = c.ok(happy(BEDSIDE));
    assert_eq!(s.checked_bag_id.as_deref(), Some("BAG-A"));
}

#[test]
fn bedside_check_rejects_other_patients_wristband() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(
        plan(20 * MIN, CLINIC, NURSE1, bedside("COI-9Q2P-0005", "BAG-A")).with(NURSE2, Verified),
    );
    assert_violation(
        r,
        "coi_match",
        &[
            "in state Dispensed expected the wristband of the patient enrolled as CoI COI-7F3K-2291",
            "wristband scanned CoI \"COI-9Q2P-0005\": MISMATCH",
        ],
    );
}

#[test]
fn bedside_check_rejects_bag_of_another_chain() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(
        plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-OTHER-PATIENT")).with(NURSE2, Verified),
    );
    assert_violation(
        r,
        "bag_produced",
        &["bag \"BAG-OTHER-PATIENT\" was not produced"],
    );
}

#[test]
fn bedside_check_rejects_bag_other_than_the_thawed_one() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-B")).with(NURSE2, Verified));
    assert_violation(
        r,
        "bag_matches",
        &[
            "bedside_check of the dispensed (thawed) bag BAG-A",
            "scanned bag \"BAG-B\"",
        ],
    );
}

#[test]
fn rejects_infusion_of_bag_not_checked_at_bedside() {
    let c = Chain::upto(INFUSE);
    let r = c.try_(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-B", 0)));
    assert_violation(
        r,
        "bag_matches",
        &["infused of the bedside-checked bag BAG-A"],
    );
}

// ---- thaw_window ---------------------------------------------------------------------------

#[test]
fn accepts_infusion_within_thaw_window() {
    let mut c = Chain::upto(INFUSE);
    // Thawed 30 minutes before now (10 min before dispense + 20 min to the bedside check).
    let s = c.ok(plan(80 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
    assert_eq!(s.state, "Infused");
}

#[test]
fn rejects_infusion_three_hours_after_thaw() {
    let c = Chain::upto(INFUSE);
    let thawed = c.st().thawed_at_unix_nanos.expect("thawed");
    let r = c.try_(plan(
        10 * MIN,
        CLINIC,
        NURSE1,
        infused("BAG-A", thawed + 3 * HOUR),
    ));
    assert_violation(
        r,
        "thaw_window",
        &[
            "in state BedsideChecked expected infused within 2 h 0 min of thaw",
            "3 h 0 min after thaw",
            "do not infuse",
        ],
    );
}

#[test]
fn rejects_bedside_check_after_thaw_window() {
    let c = Chain::upto(BEDSIDE);
    let r = c.try_(plan(3 * HOUR, CLINIC, NURSE1, bedside(COI, "BAG-A")).with(NURSE2, Verified));
    assert_violation(
        r,
        "thaw_window",
        &[
            "bedside_check within 2 h 0 min of thaw",
            "3 h 10 min after thaw",
        ],
    );
}

#[test]
fn rejects_thaw_time_after_the_dispense_event() {
    let c = Chain::upto(DISPENSE);
    let r = c.try_(plan(
        HOUR,
        CLINIC,
        PHARM,
        dispensed("BAG-A", c.now + 3 * HOUR),
    ));
    assert_violation(
        r,
        "time_order",
        &["a thaw time no later than the dispense event"],
    );
}

// ---- another product's table ----------------------------------------------------------------

#[test]
fn operator_table_changes_required_qc_tests() {
    let toml = crate::policy::DEFAULT_TABLE_TOML.replace(
        "required_tests = [\"sterility\", \"endotoxin\", \"mycoplasma\", \"viability\", \"identity\", \"potency\", \"vcn\"]",
        "required_tests = [\"sterility\"]",
    );
    let mut c = Chain::with_policy(Policy::from_toml(&toml).expect("loads"));
    for p in happy_path().into_iter().take(QC_FIRST) {
        c.ok(p);
    }
    c.ok(plan(DAY, MFG, QC, qc("sterility", true, "no growth")));
    assert_eq!(
        c.ok(plan(DAY, MFG, QA, released(false, ""))).state,
        "Released"
    );
}

// ---- the second shipment (LN2) ---------------------------------------------------------------

#[test]
fn rejects_product_shipment_without_courier_signature() {
    let c = Chain::upto(SHIP_TO_SITE);
    let mut p = happy(SHIP_TO_SITE);
    p.others.clear();
    assert_violation(
        c.try_(p),
        "signatures",
        &["missing RECEIVED by courier (registered at any site)"],
    );
}

#[test]
fn warm_ln2_shipper_on_receipt_at_site_raises_hold() {
    let mut c = Chain::upto(RECEIVE_AT_SITE);
    let s = c.ok(plan(
        DAY,
        CLINIC,
        PHARM,
        received(MFG, "LN2-SHIPPER-9", -190.0, -140.0, 0),
    ));
    assert_eq!(s.state, "AtSite");
    assert!(s.hold.as_ref().expect("hold").reasons[0].contains("allowed -200.0..-150.0 C"));
    assert_violation(
        c.try_(plan(HOUR, CLINIC, PHARM, stored(-185.0))),
        "on_hold",
        &["stored refused"],
    );
}
