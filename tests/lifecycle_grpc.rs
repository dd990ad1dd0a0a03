//! The autologous CAR-T lifecycle over gRPC against the real server and the default custody
//! table: enrolment to infusion across ~30 simulated days with a key per person, and the
//! custody rules as a station or MES sees them (status code and message).

mod common;

use celltrail::client::Client;
use celltrail::crypto::EventHash;
use celltrail::note::NoteSigner;
use celltrail::pb::{self, event_body::Detail, GetChainRequest, SignatureMeaning, SignedEvent};
use common::*;
use std::collections::HashMap;
use tonic::Code;

const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const APH: &str = "APH-0001";
const MFG: &str = "MFG-0001";
const CLINIC: &str = "CLINIC-0001";
const COI: &str = "COI-7F3K-2291";

/// People: key id → (role, site).
const PEOPLE: &[(&str, &str, &str)] = &[
    ("aph.nurse.ana", "apheresis_nurse", APH),
    ("courier.kim", "courier", "COURIER-0001"),
    ("mfg.op.moe", "manufacturing", MFG),
    ("qc.quinn", "qc", MFG),
    ("qa.rosa", "qa", MFG),
    ("pharm.pat", "pharmacist", CLINIC),
    ("nurse.ada", "nurse", CLINIC),
    ("nurse.ben", "nurse", CLINIC),
];

struct Ward {
    _dir: tempfile::TempDir,
    _server: TestServer,
    c: Client,
    keys: HashMap<&'static str, NoteSigner>,
    chain: String,
    seq: u64,
    prev: Vec<u8>,
    now: i64,
}

impl Ward {
    async fn new(chain: &str) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let mut c = server.client().await;
        let mut keys = HashMap::new();
        for (id, role, site) in PEOPLE {
            let k = signer(id);
            register(&mut c, &server.admin, &k, role, site).await;
            keys.insert(*id, k);
        }
        Ward {
            _dir: dir,
            _server: server,
            c,
            keys,
            chain: chain.into(),
            seq: 0,
            prev: vec![0; 32],
            now: base_time(),
        }
    }

    fn event(
        &self,
        at: i64,
        site: &str,
        signers: &[(&str, SignatureMeaning)],
        detail: Detail,
    ) -> SignedEvent {
        let s: Vec<(&NoteSigner, SignatureMeaning)> =
            signers.iter().map(|(id, m)| (&self.keys[id], *m)).collect();
        signed_at_link(
            &self.chain,
            self.seq,
            self.prev.clone(),
            at,
            site,
            detail,
            &s,
        )
    }

    /// Appends an event `after` the previous one; panics with the server's reason if refused.
    async fn ok(
        &mut self,
        after: i64,
        site: &str,
        signers: &[(&str, SignatureMeaning)],
        detail: Detail,
    ) -> String {
        match self.try_append(after, site, signers, detail).await {
            Ok(state) => state,
            Err(s) => panic!("seq {} refused: {:?} {}", self.seq, s.code(), s.message()),
        }
    }

    async fn try_append(
        &mut self,
        after: i64,
        site: &str,
        signers: &[(&str, SignatureMeaning)],
        detail: Detail,
    ) -> Result<String, tonic::Status> {
        let at = self.now + after;
        let ev = self.event(at, site, signers, detail);
        self.c.append(ev.clone()).await?;
        self.now = at;
        self.seq += 1;
        self.prev = EventHash::of_body(&ev.body).0.to_vec();
        let chain = self
            .c
            .get_chain(GetChainRequest {
                chain_id: self.chain.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(chain.head.unwrap().state)
    }

    /// Expects a refusal with `code` whose message contains every needle; the chain is unchanged.
    async fn refused(
        &mut self,
        after: i64,
        site: &str,
        signers: &[(&str, SignatureMeaning)],
        detail: Detail,
        code: Code,
        needles: &[&str],
    ) {
        let before = snapshot(&mut self.c).await;
        let ev = self.event(self.now + after, site, signers, detail);
        let err = self.c.append(ev).await.expect_err("must be refused");
        assert_eq!(err.code(), code, "{}", err.message());
        for n in needles {
            assert!(
                err.message().contains(n),
                "message {:?} lacks {n:?}",
                err.message()
            );
        }
        assert_eq!(snapshot(&mut self.c).await, before);
    }

    /// The patient's lymphodepletion at the clinic, completed two days from now.
    async fn lymphodepleted(&mut self) {
        use SignatureMeaning::*;
        self.ok(
            HOUR,
            CLINIC,
            &[("nurse.ada", Performed)],
            ld_started(self.now + HOUR),
        )
        .await;
        let done = self.now + 2 * DAY;
        self.ok(
            2 * DAY,
            CLINIC,
            &[("nurse.ada", Performed)],
            Detail::LymphodepletionCompleted(pb::LymphodepletionCompleted {
                completed_at_unix_nanos: Some(done),
            }),
        )
        .await;
    }

    /// Enrolment to arrival at manufacturing.
    async fn through_receipt_at_manufacturing(&mut self, temp_max: f64) -> String {
        use SignatureMeaning::*;
        self.through_shipment().await;
        self.ok(
            20 * HOUR,
            MFG,
            &[("mfg.op.moe", Performed)],
            received(APH, "GRAI-SHIPPER-1", 3.5, temp_max, 20 * 60),
        )
        .await
    }

    /// Enrolment to shipment towards manufacturing.
    async fn through_shipment(&mut self) {
        use SignatureMeaning::*;
        self.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
            .await;
        self.ok(
            2 * DAY,
            APH,
            &[("aph.nurse.ana", Performed)],
            Detail::Collected(pb::Collected {
                din: "W000025123456".into(),
                product_code: "S1234000".into(),
                volume_ml: Some(250),
                collection_end_unix_nanos: Some(self.now + 2 * DAY),
            }),
        )
        .await;
        self.ok(
            HOUR,
            APH,
            &[("aph.nurse.ana", Performed)],
            Detail::Packed(pb::Packed {
                shipper_id: "GRAI-SHIPPER-1".into(),
                logger_id: "LOG-1".into(),
                seal_id: "SEAL-1".into(),
            }),
        )
        .await;
        self.ok(
            30 * MIN,
            APH,
            &[("aph.nurse.ana", Performed), ("courier.kim", Received)],
            shipped(APH, MFG, "GRAI-SHIPPER-1"),
        )
        .await;
    }

    /// Through receipt, one cryopreservation step making BAG-A, and every QC test, each passing
    /// except `failing` (empty: none fails).
    async fn through_qc(&mut self, failing: &str) {
        use SignatureMeaning::*;
        self.through_receipt_at_manufacturing(6.0).await;
        self.ok(
            HOUR,
            MFG,
            &[("mfg.op.moe", Performed)],
            step("cryopreservation", &["BAG-A"]),
        )
        .await;
        for t in QC_TESTS {
            self.ok(HOUR, MFG, &[("qc.quinn", Performed)], qc(t, *t != failing))
                .await;
        }
    }
}

fn released() -> Detail {
    Detail::Released(pb::Released {
        exceptional: false,
        deviation_id: String::new(),
    })
}

fn enrolled() -> Detail {
    Detail::Enrolled(pb::Enrolled {
        coi_ref: COI.into(),
        therapy: "CAR-T anti-CD19".into(),
        manufacturing_site: MFG.into(),
    })
}
fn shipped(from: &str, to: &str, shipper: &str) -> Detail {
    Detail::Shipped(pb::Shipped {
        from_site: from.into(),
        to_site: to.into(),
        courier: "courier.kim".into(),
        shipper_id: shipper.into(),
        logger_id: "LOG-1".into(),
        condition: "controlled".into(),
    })
}
fn received(from: &str, shipper: &str, tmin: f64, tmax: f64, elapsed: u64) -> Detail {
    Detail::Received(pb::Received {
        from_site: from.into(),
        seal_intact: Some(true),
        temp_min_c: Some(tmin),
        temp_max_c: Some(tmax),
        elapsed_seconds: Some(elapsed),
        shipper_id: shipper.into(),
    })
}
fn step(name: &str, bags: &[&str]) -> Detail {
    Detail::ManufacturingStep(pb::ManufacturingStep {
        step: name.into(),
        batch_id: "B-77".into(),
        parameters: Default::default(),
        product_bag_ids: bags.iter().map(|b| b.to_string()).collect(),
    })
}
fn qc(test: &str, passed: bool) -> Detail {
    Detail::QcResult(pb::QcResult {
        test: test.into(),
        method: "compendial".into(),
        result: if passed {
            "within specification"
        } else {
            "growth at day 7"
        }
        .into(),
        passed: Some(passed),
        specification: "per IND".into(),
    })
}

const QC_TESTS: &[&str] = &[
    "sterility",
    "endotoxin",
    "mycoplasma",
    "viability",
    "identity",
    "potency",
    "vcn",
];

#[tokio::test]
async fn full_lifecycle_enrolment_to_infusion_over_thirty_days() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-LIFE").await;
    assert_eq!(
        w.through_receipt_at_manufacturing(6.0).await,
        "AtManufacturing"
    );
    for (after, name, bags) in [
        (4 * HOUR, "activation", &[][..]),
        (DAY, "transduction", &[]),
        (2 * DAY, "expansion", &[]),
        (7 * DAY, "harvest", &[]),
        (4 * HOUR, "formulation", &[]),
        (2 * HOUR, "cryopreservation", &["BAG-A", "BAG-B"][..]),
    ] {
        assert_eq!(
            w.ok(after, MFG, &[("mfg.op.moe", Performed)], step(name, bags))
                .await,
            "Manufacturing"
        );
    }
    for t in QC_TESTS {
        assert_eq!(
            w.ok(DAY, MFG, &[("qc.quinn", Performed)], qc(t, true))
                .await,
            "QcTesting"
        );
    }
    assert_eq!(
        w.ok(DAY, MFG, &[("qa.rosa", Performed)], released()).await,
        "Released"
    );
    w.ok(
        DAY,
        MFG,
        &[("mfg.op.moe", Performed)],
        Detail::Packed(pb::Packed {
            shipper_id: "LN2-SHIPPER-9".into(),
            logger_id: "LOG-9".into(),
            seal_id: "SEAL-9".into(),
        }),
    )
    .await;
    w.ok(
        2 * HOUR,
        MFG,
        &[("mfg.op.moe", Performed), ("courier.kim", Received)],
        shipped(MFG, CLINIC, "LN2-SHIPPER-9"),
    )
    .await;
    assert_eq!(
        w.ok(
            DAY,
            CLINIC,
            &[("pharm.pat", Performed)],
            received(MFG, "LN2-SHIPPER-9", -190.0, -176.0, 0)
        )
        .await,
        "AtSite"
    );
    assert_eq!(
        w.ok(
            HOUR,
            CLINIC,
            &[("pharm.pat", Performed)],
            Detail::Stored(pb::Stored {
                location: "LN2-FREEZER-2/RACK-4".into(),
                temp_c: Some(-185.0)
            })
        )
        .await,
        "Stored"
    );
    // Thawing before the patient's lymphodepletion is refused (entry format 2).
    w.refused(
        DAY,
        CLINIC,
        &[("pharm.pat", Performed)],
        Detail::Dispensed(pb::Dispensed {
            product_bag_id: "BAG-A".into(),
            thawed_at_unix_nanos: Some(w.now + DAY - 10 * MIN),
        }),
        Code::FailedPrecondition,
        &[
            "rule lymphodepletion_completed",
            "no lymphodepletion is recorded on this chain",
        ],
    )
    .await;
    // Lymphodepletion at another clinic than the one holding the product is refused.
    w.refused(
        HOUR,
        "CLINIC-0002",
        &[("nurse.ada", Performed)],
        ld_started(w.now + HOUR),
        Code::FailedPrecondition,
        &["rule treating_site", "at the treating site CLINIC-0001"],
    )
    .await;
    let started = w.now + HOUR;
    assert_eq!(
        w.ok(
            HOUR,
            CLINIC,
            &[("nurse.ada", Performed)],
            ld_started(started)
        )
        .await,
        "Stored"
    );
    let done = w.now + 3 * DAY;
    assert_eq!(
        w.ok(
            3 * DAY,
            CLINIC,
            &[("nurse.ada", Performed)],
            Detail::LymphodepletionCompleted(pb::LymphodepletionCompleted {
                completed_at_unix_nanos: Some(done)
            })
        )
        .await,
        "Stored"
    );
    let thawed = w.now + 2 * DAY - 10 * MIN;
    assert_eq!(
        w.ok(
            2 * DAY,
            CLINIC,
            &[("pharm.pat", Performed)],
            Detail::Dispensed(pb::Dispensed {
                product_bag_id: "BAG-A".into(),
                thawed_at_unix_nanos: Some(thawed)
            })
        )
        .await,
        "Dispensed"
    );
    assert_eq!(
        w.ok(
            20 * MIN,
            CLINIC,
            &[("nurse.ada", Performed), ("nurse.ben", Verified)],
            Detail::BedsideCheck(pb::BedsideCheck {
                wristband_coi_ref: COI.into(),
                product_bag_id: "BAG-A".into()
            })
        )
        .await,
        "BedsideChecked"
    );
    let start = w.now + 10 * MIN;
    assert_eq!(
        w.ok(
            10 * MIN,
            CLINIC,
            &[("nurse.ada", Performed)],
            Detail::Infused(pb::Infused {
                product_bag_id: "BAG-A".into(),
                started_at_unix_nanos: Some(start),
                ended_at_unix_nanos: Some(start + 20 * MIN)
            })
        )
        .await,
        "Infused"
    );
    let days = (w.now - base_time()) as f64 / DAY as f64;
    assert!((28.0..=32.0).contains(&days), "lifecycle spans {days} days");
    assert_eq!(w.seq, 28);
    // Nothing follows Infused.
    w.refused(
        HOUR,
        CLINIC,
        &[("pharm.pat", Performed)],
        Detail::Stored(pb::Stored {
            location: "X".into(),
            temp_c: Some(-185.0),
        }),
        Code::FailedPrecondition,
        &["Infused"],
    )
    .await;
}

#[tokio::test]
async fn temperature_excursion_on_receipt_raises_hold_that_only_qa_clears() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-WARM").await;
    w.through_receipt_at_manufacturing(14.5).await;
    // While held, manufacturing may not proceed.
    w.refused(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        step("activation", &[]),
        Code::FailedPrecondition,
        &["hold"],
    )
    .await;
    // Only QA clears the hold: the operator is refused for the role (PERMISSION_DENIED) ...
    w.refused(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        Detail::HoldReleased(pb::HoldReleased {
            reason: "looks fine".into(),
        }),
        Code::PermissionDenied,
        &["qa"],
    )
    .await;
    // ... QA is accepted, and manufacturing goes on.
    w.ok(
        2 * HOUR,
        MFG,
        &[("qa.rosa", Performed)],
        Detail::HoldReleased(pb::HoldReleased {
            reason: "logger probe fault, product temp in range (DEV-12)".into(),
        }),
    )
    .await;
    assert_eq!(
        w.ok(
            HOUR,
            MFG,
            &[("mfg.op.moe", Performed)],
            step("activation", &[])
        )
        .await,
        "Manufacturing"
    );
}

#[tokio::test]
async fn rejects_wrong_site_acting_and_names_the_custodian() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-SITE").await;
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    // The clinic pharmacist cannot collect at the apheresis unit's bag.
    w.refused(
        HOUR,
        CLINIC,
        &[("pharm.pat", Performed)],
        Detail::Collected(pb::Collected {
            din: "W000025123456".into(),
            product_code: "S1234000".into(),
            volume_ml: Some(250),
            collection_end_unix_nanos: Some(w.now + HOUR),
        }),
        Code::FailedPrecondition,
        &[APH],
    )
    .await;
}

#[tokio::test]
async fn bedside_check_rejects_other_patients_wristband() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-BED").await;
    w.through_qc("").await;
    w.ok(HOUR, MFG, &[("qa.rosa", Performed)], released()).await;
    w.ok(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        Detail::Packed(pb::Packed {
            shipper_id: "LN2-9".into(),
            logger_id: "LOG-9".into(),
            seal_id: "S".into(),
        }),
    )
    .await;
    w.ok(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed), ("courier.kim", Received)],
        shipped(MFG, CLINIC, "LN2-9"),
    )
    .await;
    w.ok(
        DAY,
        CLINIC,
        &[("pharm.pat", Performed)],
        received(MFG, "LN2-9", -190.0, -176.0, 0),
    )
    .await;
    w.lymphodepleted().await;
    let thawed = w.now + HOUR - 5 * MIN;
    w.ok(
        HOUR,
        CLINIC,
        &[("pharm.pat", Performed)],
        Detail::Dispensed(pb::Dispensed {
            product_bag_id: "BAG-A".into(),
            thawed_at_unix_nanos: Some(thawed),
        }),
    )
    .await;
    w.refused(
        10 * MIN,
        CLINIC,
        &[("nurse.ada", Performed), ("nurse.ben", Verified)],
        Detail::BedsideCheck(pb::BedsideCheck {
            wristband_coi_ref: "COI-OTHER-0001".into(),
            product_bag_id: "BAG-A".into(),
        }),
        Code::FailedPrecondition,
        &["coi_match"],
    )
    .await;
    // The same nurse cannot sign twice where two people are required.
    w.refused(
        10 * MIN,
        CLINIC,
        &[("nurse.ada", Performed), ("nurse.ada", Verified)],
        Detail::BedsideCheck(pb::BedsideCheck {
            wristband_coi_ref: COI.into(),
            product_bag_id: "BAG-A".into(),
        }),
        Code::InvalidArgument,
        &["more than once"],
    )
    .await;
    // The right patient, checked by two nurses; the infusion then starts a day after
    // lymphodepletion ended (the window is 2-14 days): recorded, and the receipt says which
    // hold it opened.
    w.ok(
        10 * MIN,
        CLINIC,
        &[("nurse.ada", Performed), ("nurse.ben", Verified)],
        Detail::BedsideCheck(pb::BedsideCheck {
            wristband_coi_ref: COI.into(),
            product_bag_id: "BAG-A".into(),
        }),
    )
    .await;
    let at = w.now + 10 * MIN;
    let ev = w.event(
        at,
        CLINIC,
        &[("nurse.ada", Performed)],
        Detail::Infused(pb::Infused {
            product_bag_id: "BAG-A".into(),
            started_at_unix_nanos: Some(at),
            ended_at_unix_nanos: Some(at),
        }),
    );
    let r = w.c.append(ev).await.unwrap().into_inner();
    assert_eq!(r.holds_opened.len(), 1, "{:?}", r.holds_opened);
    assert!(
        r.holds_opened[0].starts_with(
            "lymphodepletion_window: infusion started 1 h 20 min after lymphodepletion completed"
        ) && r.holds_opened[0].ends_with("window 2.0 days..14.0 days"),
        "{:?}",
        r.holds_opened
    );
}

#[tokio::test]
async fn rejects_release_when_sterility_failed() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-QC").await;
    w.through_qc("sterility").await;
    w.refused(
        HOUR,
        MFG,
        &[("qa.rosa", Performed)],
        released(),
        Code::FailedPrecondition,
        &["qc_all_passed", "sterility"],
    )
    .await;
}

/// Issue 13: `event --kind received` with no readings was stored as "seal broken, 0.0..0.0 C".
/// Now every unset reading is named and nothing is stored.
#[tokio::test]
async fn rejects_receipt_without_readings_naming_every_missing_field() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-BARE").await;
    w.through_shipment().await;
    w.refused(
        20 * HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        Detail::Received(pb::Received {
            from_site: APH.into(),
            shipper_id: "GRAI-SHIPPER-1".into(),
            ..Default::default()
        }),
        Code::InvalidArgument,
        &[
            "missing: seal_intact, temp_min_c, temp_max_c, elapsed_seconds",
            "not_measured",
        ],
    )
    .await;
    // A seal recorded as broken is a reading (false), not a missing one: accepted, and held.
    let mut d = received(APH, "GRAI-SHIPPER-1", 3.5, 6.0, 60);
    if let Detail::Received(r) = &mut d {
        r.seal_intact = Some(false);
    }
    w.ok(20 * HOUR, MFG, &[("mfg.op.moe", Performed)], d).await;
}

/// A reading that was genuinely not possible is recorded with its reason and opens a hold.
#[tokio::test]
async fn reading_not_possible_is_recorded_with_reason_and_opens_a_hold() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-NOLOG").await;
    w.through_shipment().await;
    let at = w.now + 20 * HOUR;
    let ev = celltrail::client::sign_draft_with(
        celltrail::client::Draft {
            chain_id: w.chain.clone(),
            seq: w.seq,
            prev_hash: w.prev.clone(),
            occurred_at: at,
            site: MFG.into(),
            comment: String::new(),
            detail: Detail::Received(pb::Received {
                from_site: APH.into(),
                seal_intact: Some(true),
                elapsed_seconds: Some(600),
                shipper_id: "GRAI-SHIPPER-1".into(),
                ..Default::default()
            }),
        },
        ["temp_min_c", "temp_max_c"]
            .iter()
            .map(|f| pb::NotMeasured {
                field: f.to_string(),
                reason: "logger battery dead on arrival".into(),
            })
            .collect(),
        &[(&w.keys["mfg.op.moe"], Performed)],
        signing_time(at),
    );
    w.c.append(ev.clone())
        .await
        .expect("recorded as not measured");
    w.now = at;
    w.seq += 1;
    w.prev = EventHash::of_body(&ev.body).0.to_vec();
    // The hold blocks manufacturing until QA releases it.
    w.refused(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        step("activation", &[]),
        Code::FailedPrecondition,
        &["not_measured: received temp_min_c was not measured: logger battery dead on arrival"],
    )
    .await;
}

fn collected(din: &str, product_code: &str, at: i64) -> Detail {
    Detail::Collected(pb::Collected {
        din: din.into(),
        product_code: product_code.into(),
        volume_ml: Some(250),
        collection_end_unix_nanos: Some(at),
    })
}

/// Issue 13: the server accepted DINs `A99992600020` (12 characters) and `hello world!!` and
/// product codes `E0001000` and `zzz`. It now checks them with the station's `codes` module.
#[tokio::test]
async fn rejects_malformed_din_and_product_code_naming_the_field() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-CODES").await;
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    let at = w.now + HOUR;
    for (din, product, needles) in [
        (
            "A99992600020",
            "S1234000",
            ["din: an ISBT 128 DIN", "12 characters"],
        ),
        (
            "hello world!!",
            "S1234000",
            ["din: an ISBT 128 DIN", "hello world!!"],
        ),
        (
            "A999926000201",
            "E0001000",
            ["product_code:", "not a cellular therapy"],
        ),
        ("A999926000201", "zzz", ["product_code:", "zzz"]),
    ] {
        w.refused(
            HOUR,
            APH,
            &[("aph.nurse.ana", Performed)],
            collected(din, product, at),
            Code::InvalidArgument,
            &needles,
        )
        .await;
    }
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("A999926000201", "S1234000", at),
    )
    .await;
}

/// Issue 13: a nurse could name another chain's bag DIN in her own chain, and
/// `FindChainsByBag` then returned two chains. Now ALREADY_EXISTS names the other chain.
#[tokio::test]
async fn one_bag_belongs_to_one_chain() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-ONE").await;
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    let at = w.now + HOUR;
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("W000025123456", "S1234000", at),
    )
    .await;
    // A second collection into the same chain names the same bag: fine.
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("W000025123456", "S1234000", at),
    )
    .await;
    // Another chain naming that bag is refused.
    w.chain = "BAG-TWO".into();
    w.seq = 0;
    w.prev = vec![0; 32];
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    w.refused(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("W000025123456", "S1234000", at),
        Code::AlreadyExists,
        &["bag W000025123456 is already named by chain BAG-ONE"],
    )
    .await;
    let found =
        w.c.find_chains_by_bag(pb::FindChainsByBagRequest {
            din: "W000025123456".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = found.chains.iter().map(|c| c.chain_id.as_str()).collect();
    assert_eq!(ids, ["BAG-ONE"]);
}

/// Issue 13: an append that opened a hold said only "recorded". The receipt now names each
/// hold it opened and the chain head shows the open hold until QA releases it.
#[tokio::test]
async fn receipt_and_chain_head_show_the_hold_an_event_opened() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-HOLD").await;
    w.through_shipment().await;
    let at = w.now + 20 * HOUR;
    let ev = w.event(
        at,
        MFG,
        &[("mfg.op.moe", Performed)],
        received(APH, "GRAI-SHIPPER-1", 3.5, 14.5, 20 * 60),
    );
    let r = w.c.append(ev.clone()).await.unwrap().into_inner();
    assert_eq!(r.holds_opened.len(), 1, "{:?}", r.holds_opened);
    assert!(
        r.holds_opened[0].starts_with("temperature_range: logger recorded 3.5..14.5 C"),
        "{:?}",
        r.holds_opened
    );
    w.now = at;
    w.seq += 1;
    w.prev = EventHash::of_body(&ev.body).0.to_vec();
    let head = |c: &mut celltrail::client::Client| {
        let mut c = c.clone();
        async move {
            c.get_head(pb::GetHeadRequest {
                chain_id: "BAG-HOLD".into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    assert_eq!(head(&mut w.c).await.open_hold, r.holds_opened);
    // A resubmission is a duplicate: its receipt opens nothing new.
    let again = w.c.append(ev).await.unwrap().into_inner();
    assert!(again.duplicate && again.holds_opened.is_empty());
    w.ok(
        HOUR,
        MFG,
        &[("qa.rosa", Performed)],
        Detail::HoldReleased(pb::HoldReleased {
            reason: "probe fault (DEV-12)".into(),
        }),
    )
    .await;
    assert!(head(&mut w.c).await.open_hold.is_empty());
}

fn ld_started(at: i64) -> Detail {
    Detail::LymphodepletionStarted(pb::LymphodepletionStarted {
        regimen: "fludarabine/cyclophosphamide".into(),
        started_at_unix_nanos: Some(at),
    })
}

/// Time order between related events (issue 13 point 2), through the API: a thaw before the
/// product's receipt at the site, a bedside check before the thaw, an infusion that starts
/// before the bedside check or ends before it started: each refused naming the rule, with
/// nothing stored; the same events in order are accepted.
#[tokio::test]
async fn time_order_between_related_events_is_enforced() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-ORDER").await;
    w.through_qc("").await;
    w.ok(HOUR, MFG, &[("qa.rosa", Performed)], released()).await;
    w.ok(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        Detail::Packed(pb::Packed {
            shipper_id: "LN2-9".into(),
            logger_id: "LOG-9".into(),
            seal_id: "S".into(),
        }),
    )
    .await;
    w.ok(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed), ("courier.kim", Received)],
        shipped(MFG, CLINIC, "LN2-9"),
    )
    .await;
    w.ok(
        DAY,
        CLINIC,
        &[("pharm.pat", Performed)],
        received(MFG, "LN2-9", -190.0, -176.0, 0),
    )
    .await;
    let received_at = w.now;
    w.lymphodepleted().await;
    let dispensed = |thawed: i64| {
        Detail::Dispensed(pb::Dispensed {
            product_bag_id: "BAG-A".into(),
            thawed_at_unix_nanos: Some(thawed),
        })
    };
    w.refused(
        HOUR,
        CLINIC,
        &[("pharm.pat", Performed)],
        dispensed(received_at - MIN),
        Code::FailedPrecondition,
        &["time_order", "a thaw time not before the product's receipt"],
    )
    .await;
    let thawed = w.now + HOUR - MIN;
    w.ok(HOUR, CLINIC, &[("pharm.pat", Performed)], dispensed(thawed))
        .await;
    let bedside = || {
        Detail::BedsideCheck(pb::BedsideCheck {
            wristband_coi_ref: COI.into(),
            product_bag_id: "BAG-A".into(),
        })
    };
    let nurses = [("nurse.ada", Performed), ("nurse.ben", Verified)];
    // Two minutes before the thaw (inside the clock-skew tolerance of the previous event).
    w.refused(
        -3 * MIN,
        CLINIC,
        &nurses,
        bedside(),
        Code::FailedPrecondition,
        &["time_order", "a bedside check not before the thaw"],
    )
    .await;
    w.ok(10 * MIN, CLINIC, &nurses, bedside()).await;
    let checked = w.now;
    let infused = |started: i64, ended: i64| {
        Detail::Infused(pb::Infused {
            product_bag_id: "BAG-A".into(),
            started_at_unix_nanos: Some(started),
            ended_at_unix_nanos: Some(ended),
        })
    };
    w.refused(
        20 * MIN,
        CLINIC,
        &[("nurse.ada", Performed)],
        infused(checked - MIN, checked + 30 * MIN),
        Code::FailedPrecondition,
        &[
            "time_order",
            "an infusion starting after the bedside identity check",
        ],
    )
    .await;
    w.refused(
        20 * MIN,
        CLINIC,
        &[("nurse.ada", Performed)],
        infused(checked + 5 * MIN, checked + 4 * MIN),
        Code::FailedPrecondition,
        &["time_order", "infusion ending after it started"],
    )
    .await;
    w.ok(
        20 * MIN,
        CLINIC,
        &[("nurse.ada", Performed)],
        infused(checked + 5 * MIN, checked + 35 * MIN),
    )
    .await;
}

/// Identifiers checked on the server beyond the DIN (issue 13 point 3): a CoI reference that
/// is not a pseudonym (a name and a birth date) and a shipper given as a GS1 element string
/// that holds no GRAI are refused INVALID_ARGUMENT naming the field; nothing is stored.
#[tokio::test]
async fn rejects_a_coi_reference_with_phi_and_a_gs1_shipper_that_is_no_grai() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-IDS").await;
    w.refused(
        0,
        APH,
        &[("aph.nurse.ana", Performed)],
        Detail::Enrolled(pb::Enrolled {
            coi_ref: "Jane Doe 1970-01-01".into(),
            therapy: "CAR-T anti-CD19".into(),
            manufacturing_site: MFG.into(),
        }),
        Code::InvalidArgument,
        &["coi_ref_format", "a pseudonymous CoI reference"],
    )
    .await;
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    let at = w.now + HOUR;
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("A999926000201", "S1234000", at),
    )
    .await;
    w.refused(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        Detail::Packed(pb::Packed {
            shipper_id: "(00)123456789012345675".into(),
            logger_id: "LOG-1".into(),
            seal_id: "SEAL-1".into(),
        }),
        Code::InvalidArgument,
        &["code_format", "shipper_id:", "holds no (8003)"],
    )
    .await;
}

/// One bag, one chain for product bags too (issue 13 point 4): a manufacturing step naming a
/// final product bag another chain's step produced is refused ALREADY_EXISTS naming that chain,
/// and the lookup still finds the one chain.
#[tokio::test]
async fn a_product_bag_named_by_another_chain_is_refused() {
    use SignatureMeaning::*;
    let mut w = Ward::new("BAG-PA").await;
    w.through_qc("").await; // its cryopreservation step produced BAG-A
    w.chain = "BAG-PB".into();
    w.seq = 0;
    w.prev = vec![0; 32];
    w.ok(0, APH, &[("aph.nurse.ana", Performed)], enrolled())
        .await;
    let at = w.now + HOUR;
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        collected("A999926000201", "S1234000", at),
    )
    .await;
    w.ok(
        HOUR,
        APH,
        &[("aph.nurse.ana", Performed)],
        Detail::Packed(pb::Packed {
            shipper_id: "GRAI-SHIPPER-2".into(),
            logger_id: "LOG-2".into(),
            seal_id: "SEAL-2".into(),
        }),
    )
    .await;
    w.ok(
        30 * MIN,
        APH,
        &[("aph.nurse.ana", Performed), ("courier.kim", Received)],
        shipped(APH, MFG, "GRAI-SHIPPER-2"),
    )
    .await;
    w.ok(
        20 * HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        received(APH, "GRAI-SHIPPER-2", 3.5, 6.0, 20 * 60),
    )
    .await;
    w.refused(
        HOUR,
        MFG,
        &[("mfg.op.moe", Performed)],
        step("cryopreservation", &["BAG-B", "BAG-A"]),
        Code::AlreadyExists,
        &["bag BAG-A is already named by chain BAG-PA"],
    )
    .await;
    let found =
        w.c.find_chains_by_bag(pb::FindChainsByBagRequest {
            din: "BAG-A".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = found.chains.iter().map(|c| c.chain_id.as_str()).collect();
    assert_eq!(ids, ["BAG-PA"]);
}
