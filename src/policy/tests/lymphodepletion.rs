//! Lymphodepletion (entry format 2, the default table): recorded at the treating site by
//! clinical roles; `dispensed` (thaw) refused before a completed course at the dispensing site;
//! an infusion outside the window after completion opens a hold; format-1 entries replay
//! without these rules.

use super::*;
use crate::policy::DEFAULT_TABLE_TOML;

/// A chain stored at the clinic, ready for lymphodepletion (events up to `LD_START`).
fn stored() -> Chain {
    Chain::upto(LD_START)
}

/// The happy path up to `LD_START`, then `extra`, then the happy path's dispense onwards is
/// the caller's business.
fn thaw_now(c: &Chain, after: i64) -> Planned {
    let at = c.now + after;
    plan(after, CLINIC, PHARM, dispensed("BAG-A", at - 10 * MIN))
}

#[test]
fn rejects_dispensing_before_any_lymphodepletion() {
    let c = stored();
    assert_violation(
        c.try_(thaw_now(&c, DAY)),
        "lymphodepletion_completed",
        &[
            "in state Stored expected a lymphodepletion course completed at the dispensing site before the thaw",
            "no lymphodepletion is recorded on this chain",
        ],
    );
}

#[test]
fn rejects_dispensing_while_the_course_is_not_completed() {
    let mut c = stored();
    c.ok(happy(LD_START));
    assert_violation(
        c.try_(thaw_now(&c, DAY)),
        "lymphodepletion_completed",
        &["(seq 23) is not completed; do not thaw yet"],
    );
}

#[test]
fn rejects_thaw_before_lymphodepletion_completed() {
    let mut c = stored();
    c.ok(happy(LD_START));
    let done = c.now + 3 * DAY;
    c.ok(plan(3 * DAY + HOUR, CLINIC, NURSE1, ld_completed(done)));
    // Dispensed an hour later, but the thaw time given is before the completion.
    assert_violation(
        c.try_(plan(HOUR, CLINIC, PHARM, dispensed("BAG-A", done - MIN))),
        "time_order",
        &[
            "a thaw not before lymphodepletion was completed",
            "1 min before",
        ],
    );
}

#[test]
fn accepts_dispensing_after_a_completed_course() {
    let mut c = Chain::upto(DISPENSE);
    assert_eq!(c.ok(happy(DISPENSE)).state, "Dispensed");
}

#[test]
fn lymphodepletion_keeps_the_product_state() {
    let mut c = stored();
    assert_eq!(c.ok(happy(LD_START)).state, "Stored");
    let s = c.ok(happy(LD_DONE));
    assert_eq!(s.state, "Stored");
    assert!(s
        .lymphodepletion
        .as_ref()
        .unwrap()
        .completed_at_unix_nanos
        .is_some());
}

#[test]
fn rejects_lymphodepletion_away_from_the_site_holding_the_product() {
    let c = stored();
    assert_violation(
        c.try_(plan(HOUR, OTHER, OTHER_NURSE, ld_started(0))),
        "treating_site",
        &[
            "expected lymphodepletion_started at the treating site CLINIC-0001",
            "event at site \"CLINIC-0002\"",
        ],
    );
}

#[test]
fn lymphodepletion_during_transport_is_at_the_destination() {
    let c = Chain::upto(RECEIVE_AT_SITE);
    assert_eq!(c.state_name(), "InTransitToSite");
    assert_violation(
        c.try_(plan(HOUR, OTHER, OTHER_NURSE, ld_started(0))),
        "treating_site",
        &["at the treating site CLINIC-0001"],
    );
    assert!(c.try_(plan(HOUR, CLINIC, NURSE1, ld_started(0))).is_ok());
}

#[test]
fn lymphodepletion_before_shipment_fixes_the_treating_site() {
    // Started at another clinic while the product is still at manufacturing: the product is
    // then shipped to CLINIC, and thawing it there for this patient is refused.
    let mut c = Chain::upto(RELEASE + 1);
    assert_eq!(c.state_name(), "Released");
    c.ok(plan(HOUR, OTHER, OTHER_NURSE, ld_started(0)));
    c.ok(plan(3 * DAY, OTHER, OTHER_NURSE, ld_completed(0)));
    assert_violation(
        c.try_(plan(HOUR, CLINIC, NURSE1, ld_started(0))),
        "treating_site",
        &["treating site CLINIC-0002"],
    );
    for i in RELEASE + 1..LD_START {
        c.ok(happy(i));
    }
    assert_violation(
        c.try_(thaw_now(&c, HOUR)),
        "lymphodepletion_completed",
        &["lymphodepleted at CLINIC-0002, the product is dispensed at \"CLINIC-0001\""],
    );
}

#[test]
fn rejects_lymphodepletion_signed_by_a_non_clinical_role() {
    let c = stored();
    assert_violation(
        c.try_(plan(HOUR, CLINIC, PHARM, ld_started(0))),
        "signatures",
        &["PERFORMED by physician|nurse"],
    );
}

#[test]
fn rejects_completion_without_a_course_in_progress() {
    let c = stored();
    assert_violation(
        c.try_(plan(HOUR, CLINIC, NURSE1, ld_completed(0))),
        "lymphodepletion_order",
        &["no lymphodepletion course is in progress"],
    );
}

#[test]
fn rejects_a_second_course_while_one_is_in_progress() {
    let mut c = stored();
    c.ok(happy(LD_START));
    assert_violation(
        c.try_(plan(HOUR, CLINIC, NURSE1, ld_started(0))),
        "lymphodepletion_order",
        &["is not completed"],
    );
}

#[test]
fn rejects_completion_before_the_start_and_times_after_the_event() {
    let mut c = stored();
    let started = c.now + HOUR;
    c.ok(plan(HOUR, CLINIC, NURSE1, ld_started(started)));
    assert_violation(
        c.try_(plan(DAY, CLINIC, NURSE1, ld_completed(started - HOUR))),
        "time_order",
        &["a lymphodepletion completion not before its start"],
    );
    assert_violation(
        c.try_(plan(DAY, CLINIC, NURSE1, ld_completed(c.now + 2 * DAY))),
        "time_order",
        &["lymphodepletion completion at", "is after the event at"],
    );
}

#[test]
fn rejects_lymphodepletion_without_regimen_or_start_naming_both() {
    let c = stored();
    let r = c.try_(plan(
        HOUR,
        CLINIC,
        NURSE1,
        Detail::LymphodepletionStarted(pb::LymphodepletionStarted::default()),
    ));
    assert_violation(r, "missing_fields", &["regimen", "started_at_unix_nanos"]);
}

/// The chain up to the bedside check, with the infusion `gap` after lymphodepletion ended.
fn infusion_after(gap: i64) -> (Chain, i64) {
    let mut c = stored();
    c.ok(happy(LD_START));
    c.ok(happy(LD_DONE));
    let done = c.now;
    // Thaw, check and infuse within the thaw window, `gap` after completion.
    c.ok(thaw_now(&c, gap - 30 * MIN));
    c.ok(happy(BEDSIDE));
    (c, done)
}

#[test]
fn infusion_too_soon_after_lymphodepletion_opens_a_hold() {
    let (mut c, _) = infusion_after(DAY);
    let s = c.ok(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
    assert_eq!(s.state, "Infused");
    let h = s.hold.as_ref().expect("outside the window opens a hold");
    assert!(
        h.reasons[0].starts_with("lymphodepletion_window: infusion started 24 h 0 min after lymphodepletion completed at")
            && h.reasons[0].ends_with("window 2.0 days..14.0 days"),
        "{:?}",
        h.reasons
    );
}

#[test]
fn infusion_too_late_after_lymphodepletion_opens_a_hold() {
    let (mut c, _) = infusion_after(15 * DAY);
    let s = c.ok(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
    let h = s.hold.as_ref().expect("outside the window opens a hold");
    assert!(h.reasons[0].contains("15.0 days after"), "{:?}", h.reasons);
}

#[test]
fn infusion_inside_the_window_opens_no_hold() {
    for gap in [2 * DAY, 14 * DAY] {
        let (mut c, _) = infusion_after(gap);
        let s = c.ok(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
        assert!(s.hold.is_none(), "gap {gap}: {:?}", s.hold);
    }
}

#[test]
fn the_window_comes_from_the_table() {
    let text = DEFAULT_TABLE_TOML.replace(
        "lymphodepletion_to_infusion_min_days = 2",
        "lymphodepletion_to_infusion_min_days = 0",
    );
    let policy = Policy::from_toml(&text).unwrap();
    let mut c = Chain::with_policy(policy);
    for p in happy_path().into_iter().take(LD_START) {
        c.ok(p);
    }
    c.ok(happy(LD_START));
    c.ok(happy(LD_DONE));
    c.ok(thaw_now(&c, HOUR));
    c.ok(happy(BEDSIDE));
    let s = c.ok(plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)));
    assert!(s.hold.is_none(), "{:?}", s.hold);
}

#[test]
fn format_1_entries_replay_without_the_lymphodepletion_rules() {
    // A dispense and infusion written before lymphodepletion was in the table (format 1).
    let mut c = stored();
    let f1 = |at| Context {
        format: 1,
        accepted_at_unix_nanos: at,
    };
    let now = c.now + DAY;
    let mut body = c.body(CLINIC, PHARM, dispensed("BAG-A", now - 10 * MIN));
    body.occurred_at_unix_nanos = now;
    let signers = [PHARM.signs(Performed, now)];
    let current = c
        .policy
        .apply(c.state.as_ref(), &body, &signers, &Context::current(now));
    assert_violation(current, "lymphodepletion_completed", &[]);
    let s = c
        .policy
        .apply(c.state.as_ref(), &body, &signers, &f1(now))
        .expect("format 1 replays without lymphodepletion");
    assert_eq!(s.state, "Dispensed");
    c.state = Some(s);
    c.now = now;
    c.seq += 1;
    c.ok(happy(BEDSIDE));
}

#[test]
fn table_checks_the_lymphodepletion_options() {
    let e = Policy::from_toml(&DEFAULT_TABLE_TOML.replace(
        "lymphodepletion_to_infusion_min_days = 2",
        "lymphodepletion_to_infusion_min_days = 20",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("lymphodepletion_to_infusion_min_days = 20 is above"),
        "{e}"
    );
    let e = Policy::from_toml(&DEFAULT_TABLE_TOML.replace(
        "to = \"BedsideChecked\"\n",
        "to = \"BedsideChecked\"\nrequires_lymphodepletion = true\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("requires_lymphodepletion applies to \"dispensed\" only"),
        "{e}"
    );
    let e = Policy::from_toml(&DEFAULT_TABLE_TOML.replace(
        "to = \"BedsideChecked\"\n",
        "to = \"BedsideChecked\"\nsite = \"treating\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("site = \"treating\" applies to the lymphodepletion events only"),
        "{e}"
    );
}
