//! Per-chain summaries for the QA console's worklist: state, open hold, clocks, identifiers.
//! The ledger writer derives one from the policy state after each event and stores it with
//! the chain head in the same commit, so listing 10,000 chains reads summaries and never
//! replays a chain. Pure: values in, values out.

use crate::policy::ChainState;
use serde::{Deserialize, Serialize};

/// What the worklist shows about one chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainSummary {
    pub chain_id: String,
    pub state: String,
    /// Seq of the last event.
    pub seq: u64,
    /// Pseudonymous chain-of-identity reference (never PHI).
    pub coi_ref: String,
    pub therapy: String,
    #[serde(default)]
    pub dins: Vec<String>,
    #[serde(default)]
    pub product_bag_ids: Vec<String>,
    /// Open hold: when it opened and why.
    #[serde(default)]
    pub hold: Option<HoldSummary>,
    /// When the chain entered its current state (the event's occurred time).
    pub state_since_unix_nanos: i64,
    pub last_occurred_unix_nanos: i64,
    #[serde(default)]
    pub manufacturing_started_unix_nanos: Option<i64>,
    #[serde(default)]
    pub thawed_at_unix_nanos: Option<i64>,
    /// Near misses recorded on the chain (`identity_check_failed`: a wrong patient at the
    /// bedside, a wrong shipper at a receipt). `None`: the summary was written by a version
    /// that did not count them (the writer counts them from the chain at its next event).
    #[serde(default)]
    pub near_misses: Option<NearMisses>,
}

/// How many near misses a chain has, and when the last one happened (its occurred time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NearMisses {
    pub count: u32,
    pub last_unix_nanos: i64,
}

impl NearMisses {
    /// After one more event, a near miss or not, that happened at `occurred`.
    pub fn after(self, near_miss: bool, occurred: i64) -> NearMisses {
        if near_miss {
            NearMisses {
                count: self.count.saturating_add(1),
                last_unix_nanos: occurred.max(self.last_unix_nanos),
            }
        } else {
            self
        }
    }

    /// [`NearMisses::after`] `body`: a near miss when it is an `identity_check_failed`.
    pub fn after_event(self, body: &crate::pb::EventBody) -> NearMisses {
        self.after(
            matches!(
                body.detail,
                Some(crate::pb::event_body::Detail::IdentityCheckFailed(_))
            ),
            body.occurred_at_unix_nanos,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldSummary {
    pub opened_seq: u64,
    pub opened_at_unix_nanos: i64,
    pub reasons: Vec<String>,
}

impl ChainSummary {
    /// The summary after an event that left the chain in `st`, given the summary before it and
    /// the chain's near misses including this event.
    pub fn after(
        chain_id: &str,
        prev: Option<&ChainSummary>,
        st: &ChainState,
        occurred: i64,
        near_misses: NearMisses,
    ) -> ChainSummary {
        let since = match prev {
            Some(p) if p.state == st.state => p.state_since_unix_nanos,
            _ => occurred,
        };
        ChainSummary {
            chain_id: chain_id.to_string(),
            state: st.state.clone(),
            seq: st.last_seq,
            coi_ref: st.coi_ref.clone(),
            therapy: st.therapy.clone(),
            dins: st.dins.clone(),
            product_bag_ids: st.product_bag_ids.clone(),
            hold: st.hold.as_ref().map(|h| HoldSummary {
                opened_seq: h.opened_seq,
                opened_at_unix_nanos: h.opened_at_unix_nanos,
                reasons: h.reasons.clone(),
            }),
            state_since_unix_nanos: since,
            last_occurred_unix_nanos: st.last_occurred_unix_nanos,
            manufacturing_started_unix_nanos: st.manufacturing_started_unix_nanos,
            thawed_at_unix_nanos: st.thawed_at_unix_nanos,
            near_misses: Some(near_misses),
        }
    }

    /// What a chain without a stored summary shows: its head's state and seq.
    pub fn from_head(chain_id: &str, state: &str, seq: u64) -> ChainSummary {
        ChainSummary {
            chain_id: chain_id.to_string(),
            state: state.to_string(),
            seq,
            coi_ref: String::new(),
            therapy: String::new(),
            dins: Vec::new(),
            product_bag_ids: Vec::new(),
            hold: None,
            state_since_unix_nanos: 0,
            last_occurred_unix_nanos: 0,
            manufacturing_started_unix_nanos: None,
            thawed_at_unix_nanos: None,
            near_misses: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("summaries serialize")
    }

    pub fn from_bytes(b: &[u8]) -> Option<ChainSummary> {
        serde_json::from_slice(b).ok()
    }

    /// The worklist group of the state (the default table's states; others are "Other").
    pub fn bucket(&self) -> Bucket {
        Bucket::of(&self.state)
    }
}

/// Worklist groups, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    Collection,
    InTransit,
    AtManufacturing,
    Qc,
    Released,
    AtSite,
    Closed,
    Other,
}

impl Bucket {
    pub const ALL: [Bucket; 8] = [
        Bucket::Collection,
        Bucket::InTransit,
        Bucket::AtManufacturing,
        Bucket::Qc,
        Bucket::Released,
        Bucket::AtSite,
        Bucket::Closed,
        Bucket::Other,
    ];

    pub fn of(state: &str) -> Bucket {
        match state {
            "Enrolled" | "Collected" | "Packed" => Bucket::Collection,
            "InTransitToManufacturing" | "InTransitToSite" => Bucket::InTransit,
            "AtManufacturing" | "Manufacturing" => Bucket::AtManufacturing,
            "QcTesting" => Bucket::Qc,
            "Released" | "PackedForSite" => Bucket::Released,
            "AtSite" | "Stored" | "Dispensed" | "BedsideChecked" => Bucket::AtSite,
            "Infused" | "Destroyed" | "Rejected" => Bucket::Closed,
            _ => Bucket::Other,
        }
    }

    /// URL slug.
    pub fn slug(self) -> &'static str {
        match self {
            Bucket::Collection => "collection",
            Bucket::InTransit => "in-transit",
            Bucket::AtManufacturing => "manufacturing",
            Bucket::Qc => "qc",
            Bucket::Released => "released",
            Bucket::AtSite => "at-site",
            Bucket::Closed => "closed",
            Bucket::Other => "other",
        }
    }

    pub fn from_slug(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.slug() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            Bucket::Collection => "Enrolment and collection",
            Bucket::InTransit => "In transit",
            Bucket::AtManufacturing => "At manufacturing",
            Bucket::Qc => "QC testing",
            Bucket::Released => "Released",
            Bucket::AtSite => "At treatment site",
            Bucket::Closed => "Infused, destroyed or rejected",
            Bucket::Other => "Other states",
        }
    }
}

/// A clock that is running out.
#[derive(Debug, Clone, PartialEq)]
pub struct AtRisk {
    pub chain_id: String,
    pub clock: String,
    /// Nanoseconds left (negative: overdue) or waited.
    pub nanos: i64,
    pub detail: String,
}

/// Clocks at risk at `now`: the manufacturing window past 75 % of its length, a thawed product
/// not yet infused (thaw window), and product waiting at the treatment site for over 7 days.
pub fn at_risk(s: &ChainSummary, limits: &crate::policy::Limits, now: i64) -> Option<AtRisk> {
    const DAY: i64 = 86_400_000_000_000;
    const MIN: i64 = 60_000_000_000;
    match s.bucket() {
        Bucket::AtManufacturing | Bucket::Qc => {
            let start = s.manufacturing_started_unix_nanos?;
            let window = limits.manufacturing_window_days as i64 * DAY;
            let used = now - start;
            (used * 4 >= window * 3).then(|| AtRisk {
                chain_id: s.chain_id.clone(),
                clock: "manufacturing window".into(),
                nanos: start + window - now,
                detail: format!("{} day window", limits.manufacturing_window_days),
            })
        }
        Bucket::AtSite if matches!(s.state.as_str(), "Dispensed" | "BedsideChecked") => {
            let thawed = s.thawed_at_unix_nanos?;
            let limit = limits.thaw_to_infusion_max_minutes as i64 * MIN;
            Some(AtRisk {
                chain_id: s.chain_id.clone(),
                clock: "thaw to infusion".into(),
                nanos: thawed + limit - now,
                detail: format!("{} min after thaw", limits.thaw_to_infusion_max_minutes),
            })
        }
        Bucket::AtSite => {
            let waited = now - s.state_since_unix_nanos;
            (waited > 7 * DAY).then(|| AtRisk {
                chain_id: s.chain_id.clone(),
                clock: "waiting at site".into(),
                nanos: -waited,
                detail: format!("in state {} since its last change", s.state),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(state: &str) -> ChainSummary {
        ChainSummary {
            chain_id: "BAG-1".into(),
            state: state.into(),
            seq: 3,
            coi_ref: "COI-1".into(),
            therapy: String::new(),
            dins: vec![],
            product_bag_ids: vec![],
            hold: None,
            state_since_unix_nanos: 0,
            last_occurred_unix_nanos: 0,
            manufacturing_started_unix_nanos: None,
            thawed_at_unix_nanos: None,
            near_misses: Some(NearMisses::default()),
        }
    }

    /// A summary stored by a version that did not count near misses reads as "not counted",
    /// never as none; each near miss counts once and keeps the latest time.
    #[test]
    fn near_misses_count_and_an_older_summary_reads_as_not_counted() {
        let mut old = serde_json::to_value(summary("Enrolled")).unwrap();
        old.as_object_mut().unwrap().remove("near_misses");
        let old = ChainSummary::from_bytes(old.to_string().as_bytes()).unwrap();
        assert_eq!(old.near_misses, None);
        let n = NearMisses::default()
            .after(true, 50)
            .after(false, 60)
            .after(true, 40);
        assert_eq!(
            n,
            NearMisses {
                count: 2,
                last_unix_nanos: 50
            }
        );
    }

    #[test]
    fn summaries_round_trip_through_their_stored_bytes() {
        let mut prev = summary("Manufacturing");
        prev.hold = Some(HoldSummary {
            opened_seq: 2,
            opened_at_unix_nanos: 7,
            reasons: vec!["ambient_exposure: 90 min".into()],
        });
        assert_eq!(ChainSummary::from_bytes(&prev.to_bytes()).unwrap(), prev);
        assert!(ChainSummary::from_bytes(b"not json").is_none());
    }

    #[test]
    fn clocks_at_risk() {
        let limits = crate::policy::Policy::default_autologous_car_t()
            .limits()
            .clone();
        const DAY: i64 = 86_400_000_000_000;
        let mut s = summary("Manufacturing");
        s.manufacturing_started_unix_nanos = Some(0);
        assert!(at_risk(&s, &limits, 20 * DAY).is_none());
        let r = at_risk(&s, &limits, 22 * DAY).unwrap();
        assert_eq!(r.nanos, 6 * DAY);
        let mut s = summary("Stored");
        assert!(at_risk(&s, &limits, 6 * DAY).is_none());
        assert_eq!(at_risk(&s, &limits, 9 * DAY).unwrap().nanos, -9 * DAY);
        s.state = "Dispensed".into();
        s.thawed_at_unix_nanos = Some(DAY);
        assert_eq!(
            at_risk(&s, &limits, DAY + 100 * 60_000_000_000)
                .unwrap()
                .nanos,
            20 * 60_000_000_000
        );
        assert_eq!(Bucket::of("QcTesting"), Bucket::Qc);
        assert_eq!(Bucket::from_slug("at-site"), Some(Bucket::AtSite));
    }
}
