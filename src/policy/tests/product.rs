//! Rule tests, product: holds (temperature, seal, ambient exposure, collection-to-receipt,
//! manufacturing window) that only QA clears, QC before release and exceptional release, the
//! bedside identity check and the thaw window. One accepting and one rejecting test per rule,
//! with the rejection message checked.

use super::*;
use crate::policy::Policy;

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
            "in state AtManufacturing expected only [rejected, hold_released, deviation, destroyed, lymphodepletion_started, lymphodepletion_completed, identity_check_failed] while on hold",
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
        r.seal_intact = Some(false);
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
    let s = c.ok(plan(
        20 * HOUR,
        MFG,
        MFG_OP,
        received(APH, "GRAI-SHIPPER-1", f64::NAN, 5.0, 0),
    ));
    let reasons = &s.hold.as_ref().expect("NaN reading opens a hold").reasons;
    assert_eq!(
        reasons,
        &["temperature_range: logger recorded NaN..5.0 C at MFG-0001, allowed 2.0..8.0 C"]
    );
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
