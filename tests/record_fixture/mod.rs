//! The batch-record fixture, built once per test binary through the real server on a real
//! sled directory: chain `BAG-QA-1` (a full CAR-T lifecycle with an ambient-exposure hold that
//! QA released, two deviations, a failed potency result and its retest, an exceptional release
//! signed PERFORMED, APPROVED and REVIEWED, infusion), chain `BAG-OPEN-2` (received at 12 °C:
//! a hold still open), and chain `BAG-XSS-3` whose every free-text field holds a script tag.
//! Bundles of each are exported over gRPC; the server is stopped, the data directory kept.
#![allow(dead_code)] // each test file uses a different part

use crate::common::{admin_event, register, TestServer};
use crate::lifecycle::{
    happy_path, ChainCursor, Keys, Step, APH, CLINIC, COI, DAY, HOUR, MFG, MIN,
};
use celltrail::bundle::export::{anchors, from_server, Selection};
use celltrail::note::{NoteSigner, NoteVerifier};
use celltrail::pb::{self, event_body::Detail, KeyRegistered, SignatureMeaning};
use std::path::PathBuf;
use SignatureMeaning::{Approved, Performed, Reviewed};

pub const MAIN: &str = "BAG-QA-1";
pub const OPEN: &str = "BAG-OPEN-2";
pub const XSS_CHAIN: &str = "BAG-XSS-3";
/// What every free-text field of `BAG-XSS-3` holds.
pub const XSS: &str = "<script>alert(1)</script>";

pub struct Fixture {
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub main_bundle: PathBuf,
    pub open_bundle: PathBuf,
    pub xss_bundle: PathBuf,
    pub log_vkey: PathBuf,
    pub anchors: PathBuf,
}

fn step<'a>(
    after: i64,
    site: &'static str,
    detail: Detail,
    signers: Vec<(&'a NoteSigner, SignatureMeaning)>,
) -> Step<'a> {
    Step {
        after,
        site,
        detail,
        signers,
    }
}

fn qc(test: &str, passed: bool, result: &str) -> Detail {
    Detail::QcResult(pb::QcResult {
        test: test.into(),
        method: "validated method".into(),
        result: result.into(),
        passed: Some(passed),
        specification: ">= 20% cytotoxicity at E:T 10:1".into(),
    })
}

fn deviation(id: &str, text: &str) -> Detail {
    Detail::Deviation(pb::Deviation {
        deviation_id: id.into(),
        description: text.into(),
    })
}

/// The main chain's steps: the happy path with a hold, deviations, a retest, an exceptional
/// release reviewed by a third QA person.
fn main_steps<'a>(k: &'a Keys, qa2: &'a NoteSigner, qa3: &'a NoteSigner) -> Vec<Step<'a>> {
    let mut p = happy_path(k);
    // seq 4: received after 90 minutes out of controlled storage (limit 60): a hold opens.
    p[4].detail = Detail::Received(pb::Received {
        from_site: APH.into(),
        seal_intact: Some(true),
        temp_min_c: Some(3.5),
        temp_max_c: Some(6.0),
        elapsed_seconds: Some(90 * 60),
        shipper_id: "GRAI-SHIPPER-1".into(),
    });
    let release_idx = p
        .iter()
        .position(|s| matches!(s.detail, Detail::Released(_)))
        .unwrap();
    p[release_idx].detail = Detail::Released(pb::Released {
        exceptional: true,
        deviation_id: "DEV-002".into(),
    });
    p[release_idx].signers = vec![(&k.qa, Performed), (qa2, Approved), (qa3, Reviewed)];
    p.insert(
        release_idx,
        step(
            2 * HOUR,
            MFG,
            deviation(
                "DEV-002",
                "Potency first result below specification; retest within specification.",
            ),
            vec![(&k.qa, Performed)],
        ),
    );
    let potency = p
        .iter()
        .position(|s| matches!(&s.detail, Detail::QcResult(q) if q.test == "potency"))
        .unwrap();
    p.insert(
        potency,
        step(
            DAY,
            MFG,
            qc("potency", false, "14% cytotoxicity"),
            vec![(&k.qc, Performed)],
        ),
    );
    p[potency + 1].detail = qc("potency", true, "31% cytotoxicity");
    p.insert(
        5,
        step(
            HOUR,
            MFG,
            Detail::HoldReleased(pb::HoldReleased {
                reason: "Exposure assessed against stability data: no impact.".into(),
            }),
            vec![(&k.qa, Performed)],
        ),
    );
    p.insert(
        5,
        step(
            30 * MIN,
            MFG,
            deviation(
                "DEV-001",
                "Shipment 90 min out of controlled storage (limit 60 min).",
            ),
            vec![(&k.qa, Performed)],
        ),
    );
    p
}

pub async fn build() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let server = TestServer::start(&data_dir).await;
    let mut c = server.client().await;
    let k = Keys::new();
    k.register(&mut c, &server.admin).await;
    let qa2 = NoteSigner::generate("qa.omar").unwrap();
    let qa3 = NoteSigner::generate("qa.lena").unwrap();
    register(&mut c, &server.admin, &qa2, "qa", MFG).await;
    register(&mut c, &server.admin, &qa3, "qa", MFG).await;

    let t0 = crate::common::base_time();
    let mut main = ChainCursor::new(MAIN, t0);
    main.append(&mut c, main_steps(&k, &qa2, &qa3)).await;

    let mut open = ChainCursor::with_own_bags(OPEN, t0 + 20 * DAY);
    let mut steps = happy_path(&k);
    steps.truncate(5);
    steps[4].detail = Detail::Received(pb::Received {
        from_site: APH.into(),
        seal_intact: Some(true),
        temp_min_c: Some(4.0),
        temp_max_c: Some(12.0),
        elapsed_seconds: Some(20 * 60),
        shipper_id: "GRAI-SHIPPER-1".into(),
    });
    open.append(&mut c, steps).await;

    // Every free-text field a client can fill holds a script tag.
    let xss_nurse = NoteSigner::generate("xss.nurse").unwrap();
    admin_event(
        &mut c,
        &server.admin,
        Detail::KeyRegistered(KeyRegistered {
            key_id: xss_nurse.name.clone(),
            public_key: xss_nurse.key.verifying_key().as_bytes().to_vec(),
            printed_name: XSS.into(),
            role: "apheresis_nurse".into(),
            site: APH.into(),
            valid_from_unix_nanos: t0 - 365 * DAY,
            valid_until_unix_nanos: 0,
        }),
    )
    .await
    .unwrap();
    let mut x = ChainCursor::with_own_bags(XSS_CHAIN, t0 + 30 * DAY);
    x.append(
        &mut c,
        vec![
            step(
                0,
                APH,
                Detail::Enrolled(pb::Enrolled {
                    coi_ref: COI.into(),
                    therapy: XSS.into(),
                    manufacturing_site: MFG.into(),
                }),
                vec![(&xss_nurse, Performed)],
            ),
            step(
                HOUR,
                APH,
                Detail::Hold(pb::Hold { reason: XSS.into() }),
                vec![(&xss_nurse, Performed)],
            ),
            step(HOUR, APH, deviation(XSS, XSS), vec![(&k.qa, Performed)]),
            step(
                HOUR,
                APH,
                Detail::HoldReleased(pb::HoldReleased { reason: XSS.into() }),
                vec![(&k.qa, Performed)],
            ),
        ],
    )
    .await;

    let log_vkey = data_dir.join("log.vkey");
    let anchors_path = data_dir.join("trust-anchors.txt");
    let vkey =
        NoteVerifier::from_key_string(std::fs::read_to_string(&log_vkey).unwrap().trim()).unwrap();
    let admins = celltrail::keys::read_trust_anchors(&anchors_path).unwrap();
    let export = |chain: &'static str| {
        let a = anchors(&vkey, &admins);
        let path = root.path().join(format!("{chain}.bundle.json"));
        (a, path, chain)
    };
    let mut out = Vec::new();
    for chain in [MAIN, OPEN, XSS_CHAIN] {
        let (a, path, chain) = export(chain);
        let b = from_server(&mut c, a, &Selection::Chains(vec![chain.into()]), &[])
            .await
            .unwrap();
        std::fs::write(&path, b.to_json()).unwrap();
        out.push(path);
    }
    server.stop().await;
    let _ = CLINIC;
    Fixture {
        data_dir,
        main_bundle: out[0].clone(),
        open_bundle: out[1].clone(),
        xss_bundle: out[2].clone(),
        log_vkey,
        anchors: anchors_path,
        root,
    }
}
