//! Policy tests: a test harness that builds event bodies and verified signers directly (no
//! signing), the happy lifecycle, one accepting and one rejecting test per rule, table loading,
//! and property tests.

mod custody;
mod integrity;
mod lifecycle;
mod lymphodepletion;
mod product;
mod props;
mod table;

use crate::pb::event_body::Detail;
use crate::pb::{self, EventBody, SignatureMeaning};

use super::{ChainState, Context, Policy, Signer, Violation};

pub(super) const SEC: i64 = 1_000_000_000;
pub(super) const MIN: i64 = 60 * SEC;
pub(super) const HOUR: i64 = 60 * MIN;
pub(super) const DAY: i64 = 24 * HOUR;
/// 2025-03-01 08:00:00Z.
pub(super) const T0: i64 = 1_740_816_000 * SEC;

pub(super) const APH: &str = "APH-0001";
pub(super) const MFG: &str = "MFG-0001";
pub(super) const CLINIC: &str = "CLINIC-0001";
pub(super) const COURIER_SITE: &str = "COURIER-0001";
pub(super) const OTHER: &str = "CLINIC-0002";
pub(super) const COI: &str = "COI-7F3K-2291";

/// A registered key: its id, role and site.
#[derive(Debug, Clone, Copy)]
pub(super) struct K(pub &'static str, pub &'static str, pub &'static str);

pub(super) const APH_NURSE: K = K("aph.nurse.ana", "apheresis_nurse", APH);
pub(super) const COURIER: K = K("courier.kim", "courier", COURIER_SITE);
pub(super) const MFG_OP: K = K("mfg.op.moe", "manufacturing", MFG);
pub(super) const QC: K = K("qc.quinn", "qc", MFG);
pub(super) const QA: K = K("qa.rosa", "qa", MFG);
pub(super) const QA2: K = K("qa.sam", "qa", MFG);
pub(super) const PHARM: K = K("pharm.pat", "pharmacist", CLINIC);
pub(super) const NURSE1: K = K("nurse.ada", "nurse", CLINIC);
pub(super) const NURSE2: K = K("nurse.ben", "nurse", CLINIC);
pub(super) const OTHER_NURSE: K = K("nurse.zoe", "nurse", OTHER);

pub(super) use SignatureMeaning::{Approved, Performed, Received, Verified};

impl K {
    pub(super) fn signs(self, meaning: SignatureMeaning, at: i64) -> Signer {
        Signer {
            key_id: self.0.to_string(),
            role: self.1.to_string(),
            site: self.2.to_string(),
            meaning,
            signed_at_unix_nanos: at,
            valid_from_unix_nanos: T0 - 365 * DAY,
        }
    }
}

/// One event of a scripted chain: wait `after`, then `actor` (PERFORMED) and `others` sign
/// `detail` happening at `site`.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub after: i64,
    pub site: &'static str,
    pub actor: K,
    pub detail: Detail,
    pub others: Vec<(K, SignatureMeaning)>,
}

pub(super) fn plan(after: i64, site: &'static str, actor: K, detail: Detail) -> Planned {
    Planned {
        after,
        site,
        actor,
        detail,
        others: Vec::new(),
    }
}

impl Planned {
    pub(super) fn with(mut self, k: K, m: SignatureMeaning) -> Self {
        self.others.push((k, m));
        self
    }
}

/// A chain under test: the policy, the last accepted state, the next seq and the clock.
pub(super) struct Chain {
    pub policy: Policy,
    pub state: Option<ChainState>,
    pub seq: u64,
    pub now: i64,
}

impl Chain {
    pub(super) fn new() -> Chain {
        Chain::with_policy(Policy::default_autologous_car_t())
    }

    pub(super) fn with_policy(policy: Policy) -> Chain {
        Chain {
            policy,
            state: None,
            seq: 0,
            now: T0,
        }
    }

    pub(super) fn state_name(&self) -> &str {
        self.state.as_ref().map_or("Start", |s| s.state_name())
    }

    pub(super) fn st(&self) -> &ChainState {
        self.state.as_ref().expect("chain has events")
    }

    pub(super) fn body(&self, site: &str, actor: K, detail: Detail) -> EventBody {
        EventBody {
            chain_id: "bag-chain-1".into(),
            seq: self.seq,
            prev_hash: vec![0; 32],
            occurred_at_unix_nanos: self.now,
            site: site.into(),
            actor_key_id: actor.0.into(),
            comment: String::new(),
            not_measured: Vec::new(),
            detail: Some(detail),
        }
    }

    /// Decide `p` (after its wait) without changing the chain.
    pub(super) fn try_(&self, p: Planned) -> Result<ChainState, Violation> {
        let now = self.now + p.after;
        let mut detail = p.detail;
        // Times the constructors leave open happen "now" (the event's time).
        match &mut detail {
            Detail::Collected(c) if c.collection_end_unix_nanos.is_none() => {
                c.collection_end_unix_nanos = Some(now)
            }
            Detail::Infused(i) => {
                let started = *i.started_at_unix_nanos.get_or_insert(now);
                i.ended_at_unix_nanos.get_or_insert(started);
            }
            Detail::LymphodepletionStarted(l) if l.started_at_unix_nanos == Some(0) => {
                l.started_at_unix_nanos = Some(now)
            }
            Detail::LymphodepletionCompleted(l) if l.completed_at_unix_nanos == Some(0) => {
                l.completed_at_unix_nanos = Some(now)
            }
            _ => {}
        }
        let mut body = self.body(p.site, p.actor, detail);
        body.occurred_at_unix_nanos = now;
        let mut signers = vec![p.actor.signs(Performed, now)];
        signers.extend(p.others.iter().map(|(k, m)| k.signs(*m, now)));
        self.policy
            .apply(self.state.as_ref(), &body, &signers, &Context::current(now))
    }

    /// Decide `p` and, if accepted, advance the chain; panics with the violation otherwise.
    pub(super) fn ok(&mut self, p: Planned) -> &ChainState {
        let after = p.after;
        let what = format!("{:?}", p.detail);
        match self.try_(p) {
            Ok(s) => self.accept(s, after),
            Err(v) => panic!("expected {what} to be accepted, got: {v}"),
        }
    }

    /// Apply an explicit body and signers; advance on success.
    pub(super) fn apply_raw(
        &mut self,
        body: &EventBody,
        signers: &[Signer],
    ) -> Result<ChainState, Violation> {
        let r = self
            .policy
            .apply(self.state.as_ref(), body, signers, &ctx_of(body, signers));
        if let Ok(s) = &r {
            self.now = body.occurred_at_unix_nanos;
            self.state = Some(s.clone());
            self.seq += 1;
        }
        r
    }

    fn accept(&mut self, s: ChainState, after: i64) -> &ChainState {
        self.now += after;
        self.seq += 1;
        self.state = Some(s);
        self.st()
    }
}

/// The current rules, accepted when the last signature was made (or at the event).
pub(super) fn ctx_of(body: &EventBody, signers: &[Signer]) -> Context {
    let at = signers
        .iter()
        .map(|s| s.signed_at_unix_nanos)
        .max()
        .unwrap_or(body.occurred_at_unix_nanos)
        .max(body.occurred_at_unix_nanos);
    Context::current(at)
}

/// Assert a rejection by `rule` whose message contains every fragment.
#[track_caller]
pub(super) fn assert_violation(r: Result<ChainState, Violation>, rule: &str, fragments: &[&str]) {
    match r {
        Ok(s) => panic!(
            "expected rule {rule} to reject, but accepted; new state {}",
            s.state
        ),
        Err(v) => {
            let msg = v.to_string();
            assert_eq!(v.rule, rule, "wrong rule; message: {msg}");
            assert!(
                msg.starts_with(&format!("rule {rule}: in state {} expected ", v.state)),
                "message shape: {msg}"
            );
            for f in fragments {
                assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
            }
        }
    }
}

// ---- detail constructors -----------------------------------------------------------------

pub(super) fn enrolled(coi: &str) -> Detail {
    Detail::Enrolled(pb::Enrolled {
        coi_ref: coi.into(),
        therapy: "anti-CD19 CAR-T".into(),
        manufacturing_site: MFG.into(),
    })
}

pub(super) fn collected(din: &str) -> Detail {
    Detail::Collected(pb::Collected {
        din: din.into(),
        product_code: "S1234000".into(),
        volume_ml: Some(210),
        collection_end_unix_nanos: None,
    })
}

pub(super) fn packed(shipper: &str) -> Detail {
    Detail::Packed(pb::Packed {
        shipper_id: shipper.into(),
        logger_id: "GIAI-LOGGER-7".into(),
        seal_id: "SEAL-0042".into(),
    })
}

pub(super) fn shipped(from: &str, to: &str, shipper: &str) -> Detail {
    Detail::Shipped(pb::Shipped {
        from_site: from.into(),
        to_site: to.into(),
        courier: COURIER_SITE.into(),
        shipper_id: shipper.into(),
        logger_id: "GIAI-LOGGER-7".into(),
        condition: "2-8C".into(),
    })
}

pub(super) fn received(from: &str, shipper: &str, tmin: f64, tmax: f64, elapsed_s: u64) -> Detail {
    Detail::Received(pb::Received {
        from_site: from.into(),
        seal_intact: Some(true),
        temp_min_c: Some(tmin),
        temp_max_c: Some(tmax),
        elapsed_seconds: Some(elapsed_s),
        shipper_id: shipper.into(),
    })
}

pub(super) fn step(name: &str, bags: &[&str]) -> Detail {
    Detail::ManufacturingStep(pb::ManufacturingStep {
        step: name.into(),
        batch_id: "B-2025-0117".into(),
        parameters: Default::default(),
        product_bag_ids: bags.iter().map(|b| b.to_string()).collect(),
    })
}

pub(super) fn qc(test: &str, passed: bool, result: &str) -> Detail {
    Detail::QcResult(pb::QcResult {
        test: test.into(),
        method: "validated method".into(),
        result: result.into(),
        passed: Some(passed),
        specification: "per spec".into(),
    })
}

pub(super) fn released(exceptional: bool, deviation: &str) -> Detail {
    Detail::Released(pb::Released {
        exceptional,
        deviation_id: deviation.into(),
    })
}

pub(super) fn stored(temp: f64) -> Detail {
    Detail::Stored(pb::Stored {
        location: "LN2 freezer 3, rack B".into(),
        temp_c: Some(temp),
    })
}

pub(super) fn dispensed(bag: &str, thawed_at: i64) -> Detail {
    Detail::Dispensed(pb::Dispensed {
        product_bag_id: bag.into(),
        thawed_at_unix_nanos: Some(thawed_at),
    })
}

pub(super) fn bedside(wristband: &str, bag: &str) -> Detail {
    Detail::BedsideCheck(pb::BedsideCheck {
        wristband_coi_ref: wristband.into(),
        product_bag_id: bag.into(),
    })
}

pub(super) fn infused(bag: &str, started: i64) -> Detail {
    Detail::Infused(pb::Infused {
        product_bag_id: bag.into(),
        started_at_unix_nanos: (started != 0).then_some(started),
        ended_at_unix_nanos: None,
    })
}

pub(super) fn hold(reason: &str) -> Detail {
    Detail::Hold(pb::Hold {
        reason: reason.into(),
    })
}

pub(super) fn hold_released(reason: &str) -> Detail {
    Detail::HoldReleased(pb::HoldReleased {
        reason: reason.into(),
    })
}

pub(super) fn deviation(id: &str, text: &str) -> Detail {
    Detail::Deviation(pb::Deviation {
        deviation_id: id.into(),
        description: text.into(),
    })
}

pub(super) fn destroyed(reason: &str) -> Detail {
    Detail::Destroyed(pb::Destroyed {
        reason: reason.into(),
    })
}

pub(super) fn handoff(from: &str, to: &str) -> Detail {
    Detail::CustodyHandoff(pb::CustodyHandoff {
        from_site: from.into(),
        to_site: to.into(),
    })
}

/// Lymphodepletion started at `at` (0: at the event's time).
pub(super) fn ld_started(at: i64) -> Detail {
    Detail::LymphodepletionStarted(pb::LymphodepletionStarted {
        regimen: "fludarabine/cyclophosphamide".into(),
        started_at_unix_nanos: Some(at),
    })
}

/// Lymphodepletion completed at `at` (0: at the event's time).
pub(super) fn ld_completed(at: i64) -> Detail {
    Detail::LymphodepletionCompleted(pb::LymphodepletionCompleted {
        completed_at_unix_nanos: Some(at),
    })
}

pub(super) const REQUIRED_QC: [&str; 7] = [
    "sterility",
    "endotoxin",
    "mycoplasma",
    "viability",
    "identity",
    "potency",
    "vcn",
];

// Indices of the happy path's events.
pub(super) const COLLECT: usize = 1;
pub(super) const SHIP: usize = 3;
pub(super) const RECEIVE: usize = 4;
pub(super) const ACTIVATION: usize = 5;
pub(super) const CRYO: usize = 10;
pub(super) const QC_FIRST: usize = 11;
pub(super) const RELEASE: usize = 18;
pub(super) const SHIP_TO_SITE: usize = 20;
pub(super) const RECEIVE_AT_SITE: usize = 21;
pub(super) const STORE: usize = 22;
pub(super) const LD_START: usize = 23;
pub(super) const LD_DONE: usize = 24;
pub(super) const DISPENSE: usize = 25;
pub(super) const BEDSIDE: usize = 26;
pub(super) const INFUSE: usize = 27;

/// The autologous CAR-T lifecycle, enrolment to infusion over ~30 days (28 events).
pub(super) fn happy_path() -> Vec<Planned> {
    let mut p = vec![
        plan(0, APH, APH_NURSE, enrolled(COI)),
        plan(2 * DAY, APH, APH_NURSE, collected("W000025123456")),
        plan(HOUR, APH, APH_NURSE, packed("GRAI-SHIPPER-1")),
        plan(
            30 * MIN,
            APH,
            APH_NURSE,
            shipped(APH, MFG, "GRAI-SHIPPER-1"),
        )
        .with(COURIER, Received),
        plan(
            20 * HOUR,
            MFG,
            MFG_OP,
            received(APH, "GRAI-SHIPPER-1", 3.5, 6.0, 20 * 60),
        ),
        plan(4 * HOUR, MFG, MFG_OP, step("activation", &[])),
        plan(DAY, MFG, MFG_OP, step("transduction", &[])),
        plan(2 * DAY, MFG, MFG_OP, step("expansion", &[])),
        plan(7 * DAY, MFG, MFG_OP, step("harvest", &[])),
        plan(4 * HOUR, MFG, MFG_OP, step("formulation", &[])),
        plan(
            2 * HOUR,
            MFG,
            MFG_OP,
            step("cryopreservation", &["BAG-A", "BAG-B"]),
        ),
    ];
    for test in REQUIRED_QC {
        p.push(plan(DAY, MFG, QC, qc(test, true, "within specification")));
    }
    p.extend([
        plan(DAY, MFG, QA, released(false, "")),
        plan(DAY, MFG, MFG_OP, packed("LN2-SHIPPER-9")),
        plan(2 * HOUR, MFG, MFG_OP, shipped(MFG, CLINIC, "LN2-SHIPPER-9")).with(COURIER, Received),
        plan(
            DAY,
            CLINIC,
            PHARM,
            received(MFG, "LN2-SHIPPER-9", -190.0, -176.0, 0),
        ),
        plan(HOUR, CLINIC, PHARM, stored(-185.0)),
        // The patient's lymphodepletion at the clinic; infusion 2-14 days after it ends.
        plan(HOUR, CLINIC, NURSE1, ld_started(0)),
        plan(3 * DAY, CLINIC, NURSE1, ld_completed(0)),
        // thawed_at is filled in below: 10 minutes before the dispense is recorded.
        plan(2 * DAY, CLINIC, PHARM, dispensed("BAG-A", 0)),
        plan(20 * MIN, CLINIC, NURSE1, bedside(COI, "BAG-A")).with(NURSE2, Verified),
        plan(10 * MIN, CLINIC, NURSE1, infused("BAG-A", 0)),
    ]);
    let mut t = T0;
    for e in &mut p {
        t += e.after;
        if let Detail::Dispensed(d) = &mut e.detail {
            d.thawed_at_unix_nanos = Some(t - 10 * MIN);
        }
    }
    p
}

impl Chain {
    /// A chain that accepted the first `n` events of the happy path.
    pub(super) fn upto(n: usize) -> Chain {
        let mut c = Chain::new();
        for p in happy_path().into_iter().take(n) {
            c.ok(p);
        }
        c
    }
}

/// The happy path's event `i`.
pub(super) fn happy(i: usize) -> Planned {
    happy_path().swap_remove(i)
}
