//! Record integrity (entry format 1): presence instead of defaults, `not_measured`
//! declarations, time order between related events, the signature age window, and the replay
//! of format-0 entries under the rules they were written with.

use super::*;
use crate::pb::NotMeasured;

fn bare_received() -> Detail {
    Detail::Received(pb::Received {
        from_site: APH.into(),
        shipper_id: "GRAI-SHIPPER-1".into(),
        ..Default::default()
    })
}

/// Decide `detail` at `after` with an explicit body tweak and context.
fn decide(
    c: &Chain,
    after: i64,
    site: &str,
    actor: K,
    detail: Detail,
    tweak: impl FnOnce(&mut EventBody),
    ctx: impl FnOnce(i64) -> Context,
) -> Result<ChainState, Violation> {
    let now = c.now + after;
    let mut body = c.body(site, actor, detail);
    body.occurred_at_unix_nanos = now;
    tweak(&mut body);
    c.policy.apply(
        c.state.as_ref(),
        &body,
        &[actor.signs(Performed, now)],
        &ctx(now),
    )
}

#[test]
fn rejects_receipt_naming_every_missing_reading() {
    let c = Chain::upto(RECEIVE);
    let r = decide(
        &c,
        20 * HOUR,
        MFG,
        MFG_OP,
        bare_received(),
        |_| {},
        Context::current,
    );
    assert_violation(
        r,
        "missing_fields",
        &[
            "missing: seal_intact, temp_min_c, temp_max_c, elapsed_seconds",
            "not_measured",
        ],
    );
}

#[test]
fn missing_reading_is_malformed_not_a_precondition() {
    let c = Chain::upto(RECEIVE);
    let v = decide(
        &c,
        20 * HOUR,
        MFG,
        MFG_OP,
        bare_received(),
        |_| {},
        Context::current,
    )
    .unwrap_err();
    assert!(v.is_malformed(), "{v}");
}

#[test]
fn format_0_entry_replays_unset_readings_as_defaults() {
    // Before presence an unset seal meant "broken" and unset temperatures 0.0 C: replayed so.
    let c = Chain::upto(RECEIVE);
    let legacy = |now| Context {
        format: 0,
        accepted_at_unix_nanos: now,
    };
    let s = decide(&c, 20 * HOUR, MFG, MFG_OP, bare_received(), |_| {}, legacy).unwrap();
    let reasons = s.hold.expect("a hold").reasons;
    assert!(
        reasons[0].starts_with("seal_intact: seal broken"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("0.0..0.0 C"), "{reasons:?}");
}

#[test]
fn reading_not_measured_with_a_reason_opens_a_hold() {
    let c = Chain::upto(RECEIVE);
    let mut d = received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 60);
    if let Detail::Received(r) = &mut d {
        r.temp_min_c = None;
        r.temp_max_c = None;
    }
    let s = decide(
        &c,
        20 * HOUR,
        MFG,
        MFG_OP,
        d,
        |b| {
            for f in ["temp_min_c", "temp_max_c"] {
                b.not_measured.push(NotMeasured {
                    field: f.into(),
                    reason: "logger battery dead".into(),
                });
            }
        },
        Context::current,
    )
    .unwrap();
    assert_eq!(
        s.hold.expect("a hold").reasons,
        vec![
            "not_measured: received temp_min_c was not measured: logger battery dead",
            "not_measured: received temp_max_c was not measured: logger battery dead"
        ]
    );
}

#[test]
fn rejects_bad_not_measured_declarations() {
    let c = Chain::upto(RECEIVE);
    let declare = |field: &'static str, reason: &'static str, d: Detail| {
        decide(
            &c,
            20 * HOUR,
            MFG,
            MFG_OP,
            d,
            move |b| {
                b.not_measured.push(NotMeasured {
                    field: field.into(),
                    reason: reason.into(),
                })
            },
            Context::current,
        )
    };
    let full = received(APH, "GRAI-SHIPPER-1", 3.0, 6.0, 60);
    assert_violation(
        declare("temp_min_c", "x", full.clone()),
        "not_measured",
        &["temp_min_c is set and also declared not measured"],
    );
    assert_violation(
        declare("colour", "x", full.clone()),
        "not_measured",
        &["\"colour\" is not such a field", "seal_intact, temp_min_c"],
    );
    let mut no_min = full;
    if let Detail::Received(r) = &mut no_min {
        r.temp_min_c = None;
    }
    assert_violation(
        declare("temp_min_c", "  ", no_min),
        "not_measured",
        &["a reason"],
    );
}

#[test]
fn rejects_identity_field_declared_not_measured() {
    let c = Chain::upto(BEDSIDE);
    let r = decide(
        &c,
        20 * MIN,
        CLINIC,
        NURSE1,
        bedside("", "BAG-A"),
        |b| {
            b.not_measured.push(NotMeasured {
                field: "wristband_coi_ref".into(),
                reason: "no wristband".into(),
            })
        },
        Context::current,
    );
    assert_violation(
        r,
        "not_measured",
        &["wristband_coi_ref is not a measurement"],
    );
}

#[test]
fn rejects_infusion_started_before_the_bedside_check() {
    let mut c = Chain::upto(INFUSE);
    let checked = c.now;
    // Recorded 10 minutes after the check, but started 2 minutes before it.
    let r = c.apply_raw(
        &{
            let mut b = c.body(CLINIC, NURSE1, infused("BAG-A", checked - 2 * MIN));
            if let Some(Detail::Infused(i)) = &mut b.detail {
                i.ended_at_unix_nanos = Some(checked + 20 * MIN);
            }
            b.occurred_at_unix_nanos = checked + 10 * MIN;
            b
        },
        &[NURSE1.signs(Performed, checked + 10 * MIN)],
    );
    assert_violation(
        r,
        "time_order",
        &[
            "an infusion starting after the bedside identity check",
            "2 min",
        ],
    );
}

#[test]
fn rejects_infusion_ending_before_it_started() {
    let mut c = Chain::upto(INFUSE);
    let t = c.now + 10 * MIN;
    let mut b = c.body(CLINIC, NURSE1, infused("BAG-A", t));
    if let Some(Detail::Infused(i)) = &mut b.detail {
        i.ended_at_unix_nanos = Some(t - MIN);
    }
    b.occurred_at_unix_nanos = t;
    let r = c.apply_raw(&b, &[NURSE1.signs(Performed, t)]);
    assert_violation(r, "time_order", &["infusion ending after it started"]);
}

#[test]
fn rejects_thaw_before_the_receipt_at_the_site() {
    let c = Chain::upto(DISPENSE);
    let received_at = {
        let mut t = T0;
        for p in happy_path().into_iter().take(RECEIVE_AT_SITE + 1) {
            t += p.after;
        }
        t
    };
    let r = c.try_(plan(
        5 * DAY,
        CLINIC,
        PHARM,
        dispensed("BAG-A", received_at - HOUR),
    ));
    assert_violation(
        r,
        "time_order",
        &[
            "a thaw time not before the product's receipt at this site",
            "1 h 0 min before",
        ],
    );
}

#[test]
fn rejects_bedside_check_before_the_thaw() {
    let mut c = Chain::upto(DISPENSE);
    // Thawed "in the future" of the bedside check but within the dispense's skew tolerance.
    let t = c.now + 5 * DAY;
    c.ok(plan(
        5 * DAY,
        CLINIC,
        PHARM,
        dispensed("BAG-A", t + 4 * MIN),
    ));
    let r = c.try_(plan(MIN, CLINIC, NURSE1, bedside(COI, "BAG-A")).with(NURSE2, Verified));
    assert_violation(r, "time_order", &["a bedside check not before the thaw"]);
}

#[test]
fn rejects_signature_older_than_the_window() {
    let c = Chain::upto(COLLECT);
    let late = |days: i64| {
        decide(
            &c,
            DAY,
            APH,
            APH_NURSE,
            collected("W000025123456"),
            |b| {
                if let Some(Detail::Collected(d)) = &mut b.detail {
                    d.collection_end_unix_nanos = Some(b.occurred_at_unix_nanos);
                }
            },
            move |now| Context::current(now + days * DAY),
        )
    };
    assert!(late(7).is_ok());
    assert_violation(
        late(8),
        "signature_age",
        &["at most 7.0 days", "QA deviation"],
    );
    // Format-0 entries were written without the window.
    let legacy = decide(
        &c,
        DAY,
        APH,
        APH_NURSE,
        collected("W000025123456"),
        |_| {},
        |now| Context {
            format: 0,
            accepted_at_unix_nanos: now + 30 * DAY,
        },
    );
    assert!(legacy.is_ok(), "{legacy:?}");
}

/// The window is `[limits] signature_max_age_days` of the table (issue 13 point 2): 7 days when
/// the key is left out, another length when set, and 0 is refused when the table loads.
#[test]
fn signature_window_is_configurable_in_the_table_and_defaults_to_7_days() {
    let table =
        |line: &str| crate::policy::DEFAULT_TABLE_TOML.replace("signature_max_age_days = 7", line);
    let late = |policy: Policy, days: i64| {
        let mut c = Chain::upto(COLLECT);
        c.policy = policy;
        decide(
            &c,
            DAY,
            APH,
            APH_NURSE,
            collected("W000025123456"),
            |b| {
                if let Some(Detail::Collected(d)) = &mut b.detail {
                    d.collection_end_unix_nanos = Some(b.occurred_at_unix_nanos);
                }
            },
            move |now| Context::current(now + days * DAY),
        )
    };
    let omitted = Policy::from_toml(&table("")).unwrap();
    assert_eq!(omitted.limits().signature_max_age_days, 7);
    assert!(late(omitted.clone(), 7).is_ok());
    assert_violation(late(omitted, 8), "signature_age", &["at most 7.0 days"]);
    let thirty = Policy::from_toml(&table("signature_max_age_days = 30")).unwrap();
    assert!(late(thirty.clone(), 8).is_ok());
    assert_violation(late(thirty, 31), "signature_age", &["at most 30.0 days"]);
    let two = Policy::from_toml(&table("signature_max_age_days = 2")).unwrap();
    assert_violation(late(two, 3), "signature_age", &["at most 2.0 days"]);
    let zero = Policy::from_toml(&table("signature_max_age_days = 0")).unwrap_err();
    assert!(
        zero.to_string().contains("signature_max_age_days"),
        "{zero}"
    );
}

#[test]
fn rejects_malformed_codes_naming_the_field() {
    let c = Chain::upto(COLLECT);
    let collect = |din: &str, product: &str| {
        let mut d = collected(din);
        if let Detail::Collected(x) = &mut d {
            x.product_code = product.into();
        }
        c.try_(plan(DAY, APH, APH_NURSE, d))
    };
    assert_violation(
        collect("A99992600020", "S1234000"),
        "code_format",
        &["din: an ISBT 128 DIN", "12 characters"],
    );
    assert_violation(
        collect("hello world!!", "S1234000"),
        "code_format",
        &["din:"],
    );
    assert_violation(
        collect("A999926000201", "E0001000"),
        "code_format",
        &["product_code:", "not a cellular therapy product code"],
    );
    assert_violation(
        collect("A999926000201", "zzz"),
        "code_format",
        &["product_code:"],
    );
    assert!(collect("A999926000201", "S1234000").is_ok());
    assert!(
        collect("A999926000201", "").is_ok(),
        "product code is optional"
    );
    let v = collect("A99992600020", "").unwrap_err();
    assert!(v.is_malformed());
}

#[test]
fn rejects_bracketed_gs1_shipper_that_is_not_a_grai() {
    let c = Chain::upto(COLLECT + 1);
    let r = c.try_(plan(HOUR, APH, APH_NURSE, packed("(00)123456789012345675")));
    assert_violation(r, "code_format", &["shipper_id:", "holds no (8003)"]);
}

#[test]
fn rejects_a_site_that_is_not_a_site_code_from_format_2() {
    let c = Chain::new();
    let mut body = c.body("CLINIC 1; DROP", APH_NURSE, enrolled(COI));
    body.occurred_at_unix_nanos = T0;
    let signers = [APH_NURSE.signs(Performed, T0)];
    let r = c.policy.apply(None, &body, &signers, &Context::current(T0));
    assert_violation(
        r,
        "code_format",
        &["site: a site code or GLN", "\"CLINIC 1; DROP\""],
    );
    let f1 = Context {
        format: 1,
        accepted_at_unix_nanos: T0,
    };
    // Format 1 did not check the syntax (the signer's site rule refuses this one instead).
    let r = c.policy.apply(None, &body, &signers, &f1);
    assert_ne!(r.unwrap_err().rule, "code_format");
    let mut body = c.body(APH, APH_NURSE, enrolled(COI));
    body.occurred_at_unix_nanos = T0;
    if let Some(Detail::Enrolled(e)) = &mut body.detail {
        e.manufacturing_site = "MFG/1".into();
    }
    let r = c.policy.apply(None, &body, &signers, &Context::current(T0));
    assert_violation(r, "code_format", &["manufacturing_site: a site code"]);
}

#[test]
fn rejects_an_event_dated_before_the_actors_key_was_valid() {
    let c = Chain::new();
    let long_ago = 1_000_000_000; // 1970-01-01T00:00:01Z
    let mut body = c.body(APH, APH_NURSE, enrolled(COI));
    body.occurred_at_unix_nanos = long_ago;
    let signers = [APH_NURSE.signs(Performed, T0)];
    let r = c.policy.apply(None, &body, &signers, &Context::current(T0));
    assert_violation(
        r,
        "time_order",
        &[
            "enrolled not before the actor's key was valid",
            "1970-01-01",
        ],
    );
}
