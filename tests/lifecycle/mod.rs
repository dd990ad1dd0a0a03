//! A full autologous CAR-T lifecycle (enrolment to infusion, 28 events, 8 signers) driven
//! through the real server, for the log and audit-bundle tests. Mirrors the policy's own happy
//! path (src/policy/tests) with real keys and signatures.
#![allow(dead_code)] // each test file uses a different part

use crate::common::{register, signed_at_link};
use celltrail::client::Client;
use celltrail::crypto::EventHash;
use celltrail::note::NoteSigner;
use celltrail::pb::{self, event_body::Detail, Receipt, SignatureMeaning, SignedEvent};
use SignatureMeaning::{Performed, Received as Rcv, Verified};

pub const SEC: i64 = 1_000_000_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

pub const APH: &str = "APH-0001";
pub const MFG: &str = "MFG-0001";
pub const CLINIC: &str = "CLINIC-0001";
pub const COURIER_SITE: &str = "COURIER-0001";
pub const COI: &str = "COI-7F3K-2291";

pub struct Keys {
    pub aph: NoteSigner,
    pub courier: NoteSigner,
    pub mfg: NoteSigner,
    pub qc: NoteSigner,
    pub qa: NoteSigner,
    pub pharm: NoteSigner,
    pub nurse1: NoteSigner,
    pub nurse2: NoteSigner,
}

impl Keys {
    pub fn new() -> Keys {
        let k = |n: &str| NoteSigner::generate(n).unwrap();
        Keys {
            aph: k("aph.nurse.ana"),
            courier: k("courier.kim"),
            mfg: k("mfg.op.moe"),
            qc: k("qc.quinn"),
            qa: k("qa.rosa"),
            pharm: k("pharm.pat"),
            nurse1: k("nurse.ada"),
            nurse2: k("nurse.ben"),
        }
    }

    /// Registers every key (8 events on the keys chain).
    pub async fn register(&self, c: &mut Client, admin: &NoteSigner) {
        register(c, admin, &self.aph, "apheresis_nurse", APH).await;
        register(c, admin, &self.courier, "courier", COURIER_SITE).await;
        register(c, admin, &self.mfg, "manufacturing", MFG).await;
        register(c, admin, &self.qc, "qc", MFG).await;
        register(c, admin, &self.qa, "qa", MFG).await;
        register(c, admin, &self.pharm, "pharmacist", CLINIC).await;
        register(c, admin, &self.nurse1, "nurse", CLINIC).await;
        register(c, admin, &self.nurse2, "nurse", CLINIC).await;
    }
}

/// One planned event: time offset from the previous, site, detail, signers.
pub struct Step<'a> {
    pub after: i64,
    pub site: &'static str,
    pub detail: Detail,
    pub signers: Vec<(&'a NoteSigner, SignatureMeaning)>,
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

fn mstep(name: &str, bags: &[&str]) -> Detail {
    Detail::ManufacturingStep(pb::ManufacturingStep {
        step: name.into(),
        batch_id: "B-2025-0117".into(),
        parameters: Default::default(),
        product_bag_ids: bags.iter().map(|b| b.to_string()).collect(),
    })
}

fn shipped(from: &str, to: &str, shipper: &str) -> Detail {
    Detail::Shipped(pb::Shipped {
        from_site: from.into(),
        to_site: to.into(),
        courier: COURIER_SITE.into(),
        shipper_id: shipper.into(),
        logger_id: "GIAI-LOGGER-7".into(),
        condition: "2-8C".into(),
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

/// The 28 events of the happy lifecycle (same shape as the policy's own happy path).
pub fn happy_path(k: &Keys) -> Vec<Step<'_>> {
    let mut p = vec![
        step(
            0,
            APH,
            Detail::Enrolled(pb::Enrolled {
                coi_ref: COI.into(),
                therapy: "anti-CD19 CAR-T".into(),
                manufacturing_site: MFG.into(),
            }),
            vec![(&k.aph, Performed)],
        ),
        step(
            2 * DAY,
            APH,
            Detail::Collected(pb::Collected {
                din: "W000025123456".into(),
                product_code: "S1234000".into(),
                volume_ml: Some(210),
                // Filled in by `ChainCursor::sign`: the collection ended at the event.
                collection_end_unix_nanos: None,
            }),
            vec![(&k.aph, Performed)],
        ),
        step(
            HOUR,
            APH,
            Detail::Packed(pb::Packed {
                shipper_id: "GRAI-SHIPPER-1".into(),
                logger_id: "GIAI-LOGGER-7".into(),
                seal_id: "SEAL-0042".into(),
            }),
            vec![(&k.aph, Performed)],
        ),
        step(
            30 * MIN,
            APH,
            shipped(APH, MFG, "GRAI-SHIPPER-1"),
            vec![(&k.aph, Performed), (&k.courier, Rcv)],
        ),
        step(
            20 * HOUR,
            MFG,
            received(APH, "GRAI-SHIPPER-1", 3.5, 6.0, 20 * 60),
            vec![(&k.mfg, Performed)],
        ),
        step(
            4 * HOUR,
            MFG,
            mstep("activation", &[]),
            vec![(&k.mfg, Performed)],
        ),
        step(
            DAY,
            MFG,
            mstep("transduction", &[]),
            vec![(&k.mfg, Performed)],
        ),
        step(
            2 * DAY,
            MFG,
            mstep("expansion", &[]),
            vec![(&k.mfg, Performed)],
        ),
        step(
            7 * DAY,
            MFG,
            mstep("harvest", &[]),
            vec![(&k.mfg, Performed)],
        ),
        step(
            4 * HOUR,
            MFG,
            mstep("formulation", &[]),
            vec![(&k.mfg, Performed)],
        ),
        step(
            2 * HOUR,
            MFG,
            mstep("cryopreservation", &["BAG-A", "BAG-B"]),
            vec![(&k.mfg, Performed)],
        ),
    ];
    for test in [
        "sterility",
        "endotoxin",
        "mycoplasma",
        "viability",
        "identity",
        "potency",
        "vcn",
    ] {
        p.push(step(
            DAY,
            MFG,
            Detail::QcResult(pb::QcResult {
                test: test.into(),
                method: "validated method".into(),
                result: "within specification".into(),
                passed: Some(true),
                specification: "per spec".into(),
            }),
            vec![(&k.qc, Performed)],
        ));
    }
    p.extend([
        step(
            DAY,
            MFG,
            Detail::Released(pb::Released {
                exceptional: false,
                deviation_id: String::new(),
            }),
            vec![(&k.qa, Performed)],
        ),
        step(
            DAY,
            MFG,
            Detail::Packed(pb::Packed {
                shipper_id: "LN2-SHIPPER-9".into(),
                logger_id: "GIAI-LOGGER-7".into(),
                seal_id: "SEAL-0042".into(),
            }),
            vec![(&k.mfg, Performed)],
        ),
        step(
            2 * HOUR,
            MFG,
            shipped(MFG, CLINIC, "LN2-SHIPPER-9"),
            vec![(&k.mfg, Performed), (&k.courier, Rcv)],
        ),
        step(
            DAY,
            CLINIC,
            received(MFG, "LN2-SHIPPER-9", -190.0, -176.0, 0),
            vec![(&k.pharm, Performed)],
        ),
        step(
            HOUR,
            CLINIC,
            Detail::Stored(pb::Stored {
                location: "LN2 freezer 3, rack B".into(),
                temp_c: Some(-185.0),
            }),
            vec![(&k.pharm, Performed)],
        ),
        // The patient's lymphodepletion at the clinic; infusion 2-14 days after it ends.
        step(
            HOUR,
            CLINIC,
            Detail::LymphodepletionStarted(pb::LymphodepletionStarted {
                regimen: "fludarabine/cyclophosphamide".into(),
                // Filled in by `ChainCursor::sign`: started at the event.
                started_at_unix_nanos: None,
            }),
            vec![(&k.nurse1, Performed)],
        ),
        step(
            3 * DAY,
            CLINIC,
            Detail::LymphodepletionCompleted(pb::LymphodepletionCompleted {
                // Filled in by `ChainCursor::sign`: completed at the event.
                completed_at_unix_nanos: None,
            }),
            vec![(&k.nurse1, Performed)],
        ),
        step(
            2 * DAY,
            CLINIC,
            Detail::Dispensed(pb::Dispensed {
                product_bag_id: "BAG-A".into(),
                thawed_at_unix_nanos: None,
            }),
            vec![(&k.pharm, Performed)],
        ),
        step(
            20 * MIN,
            CLINIC,
            Detail::BedsideCheck(pb::BedsideCheck {
                wristband_coi_ref: COI.into(),
                product_bag_id: "BAG-A".into(),
            }),
            vec![(&k.nurse1, Performed), (&k.nurse2, Verified)],
        ),
        step(
            10 * MIN,
            CLINIC,
            Detail::Infused(pb::Infused {
                product_bag_id: "BAG-A".into(),
                // Filled in by `ChainCursor::sign`: started at the event, ended 30 min later.
                started_at_unix_nanos: None,
                ended_at_unix_nanos: None,
            }),
            vec![(&k.nurse1, Performed)],
        ),
    ]);
    p
}

/// A chain being appended: its next seq, previous hash and clock.
pub struct ChainCursor {
    pub chain: String,
    pub seq: u64,
    pub prev: Vec<u8>,
    pub now: i64,
    /// Rewrite the happy path's bags to this chain's own (one bag belongs to one chain): the
    /// DIN becomes `din_for(chain)`, product bag `BAG-A` becomes `<chain>-BAG-A`.
    pub own_bags: bool,
}

impl ChainCursor {
    pub fn new(chain: &str, t0: i64) -> ChainCursor {
        ChainCursor {
            chain: chain.into(),
            seq: 0,
            prev: vec![0; 32],
            now: t0,
            own_bags: false,
        }
    }

    /// A further chain on the same server: its bags are its own (see `own_bags`).
    pub fn with_own_bags(chain: &str, t0: i64) -> ChainCursor {
        ChainCursor {
            own_bags: true,
            ..ChainCursor::new(chain, t0)
        }
    }

    /// Signs the next event of the chain from `s` (times filled in).
    pub fn sign(&mut self, mut s: Step<'_>) -> SignedEvent {
        self.now += s.after;
        if self.own_bags {
            let bag = |b: &mut String| *b = format!("{}-{b}", self.chain);
            match &mut s.detail {
                Detail::Collected(c) => c.din = crate::common::din_for(&self.chain),
                Detail::ManufacturingStep(m) => m.product_bag_ids.iter_mut().for_each(bag),
                Detail::Dispensed(d) => bag(&mut d.product_bag_id),
                Detail::BedsideCheck(b) => bag(&mut b.product_bag_id),
                Detail::Infused(i) => bag(&mut i.product_bag_id),
                _ => {}
            }
        }
        match &mut s.detail {
            Detail::Dispensed(d) => d.thawed_at_unix_nanos = Some(self.now - 10 * MIN),
            Detail::Collected(c) if c.collection_end_unix_nanos.is_none() => {
                c.collection_end_unix_nanos = Some(self.now)
            }
            Detail::Infused(i) => {
                let started = *i.started_at_unix_nanos.get_or_insert(self.now);
                i.ended_at_unix_nanos.get_or_insert(started + 30 * MIN);
            }
            Detail::LymphodepletionStarted(l) => {
                l.started_at_unix_nanos.get_or_insert(self.now);
            }
            Detail::LymphodepletionCompleted(l) => {
                l.completed_at_unix_nanos.get_or_insert(self.now);
            }
            _ => {}
        }
        let ev = signed_at_link(
            &self.chain,
            self.seq,
            self.prev.clone(),
            self.now,
            s.site,
            s.detail,
            &s.signers,
        );
        self.seq += 1;
        self.prev = EventHash::of_body(&ev.body).0.to_vec();
        ev
    }

    /// Signs and appends the steps; panics on any rejection.
    pub async fn append(&mut self, c: &mut Client, steps: Vec<Step<'_>>) -> Vec<Receipt> {
        let mut out = Vec::new();
        for s in steps {
            let ev = self.sign(s);
            let r = c
                .append(ev)
                .await
                .unwrap_or_else(|e| panic!("{} seq {}: {e:?}", self.chain, self.seq - 1))
                .into_inner();
            out.push(r);
        }
        out
    }
}
