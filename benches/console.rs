//! The QA console's worklist for 10,000 chains (goal: under 200 ms on this 2-core machine).
//! A real sled store holds 10,000 chain heads with the summaries the writer commits; one
//! worklist request reads every summary (`Store::chain_summaries`, no chain replayed) and
//! renders the page (`console::pages::worklist`: counts by state, page 1 of the list). Reports
//! the median and worst of 21 runs of each part and of the whole. Run by `benches/run.sh`.

use celltrail::console::pages;
use celltrail::rules::Head;
use celltrail::storage::{Group as CommitBatch, Storage as _};
use celltrail::store::Store;
use celltrail::summary::{ChainSummary, HoldSummary};
use std::time::{Duration, Instant};

const CHAINS: usize = 10_000;
const STATES: [&str; 10] = [
    "Collected",
    "InTransitToManufacturing",
    "Manufacturing",
    "QcTesting",
    "Released",
    "InTransitToSite",
    "Stored",
    "Dispensed",
    "Infused",
    "Destroyed",
];

fn summary(i: usize, now: i64) -> ChainSummary {
    let day = 86_400_000_000_000i64;
    let mut s = ChainSummary::from_head(&format!("BAG-{i:06}"), STATES[i % STATES.len()], 20);
    s.coi_ref = format!("COI-{i:06}");
    s.therapy = "anti-CD19 CAR-T".into();
    s.dins = vec![format!("W0000{:08}", i)];
    s.product_bag_ids = vec![format!("BAG-{i:06}-A"), format!("BAG-{i:06}-B")];
    s.state_since_unix_nanos = now - (i as i64 % 20) * day;
    s.last_occurred_unix_nanos = s.state_since_unix_nanos;
    s.manufacturing_started_unix_nanos = Some(now - (i as i64 % 30) * day);
    if i.is_multiple_of(50) {
        s.hold = Some(HoldSummary {
            opened_seq: 4,
            opened_at_unix_nanos: now - day,
            reasons: vec!["ambient_exposure: 1 h 30 min out of controlled storage in transport, limit 1 h 0 min".into()],
        });
    }
    s
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(*v.last().unwrap()))
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = celltrail::time::now_nanos();
    for chunk in (0..CHAINS).collect::<Vec<_>>().chunks(1000) {
        let batch = CommitBatch {
            heads: chunk
                .iter()
                .map(|&i| {
                    let s = summary(i, now);
                    (
                        s.chain_id.clone(),
                        Head {
                            seq: 20,
                            hash: [7; 32],
                            state_name: s.state.clone(),
                            state: None,
                            hold: Vec::new(),
                        },
                    )
                })
                .collect(),
            summaries: chunk
                .iter()
                .map(|&i| {
                    let s = summary(i, now);
                    (s.chain_id.clone(), s)
                })
                .collect(),
            ..Default::default()
        };
        store.commit(&batch).unwrap();
    }
    let limits = celltrail::policy::Policy::default_autologous_car_t()
        .limits()
        .clone();
    let (mut read, mut render, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..21 {
        let t0 = Instant::now();
        let all = store.chain_summaries().unwrap();
        let t1 = Instant::now();
        let risks = all
            .iter()
            .filter(|s| celltrail::summary::at_risk(s, &limits, now).is_some())
            .count();
        let page = pages::worklist(&all, None, 1, risks, now);
        let t2 = Instant::now();
        assert_eq!(all.len(), CHAINS);
        assert!(page.html.contains("Page 1 of 200 (10000 in all)"));
        bytes = page.html.len();
        read.push(t1 - t0);
        render.push(t2 - t1);
        total.push(t2 - t0);
    }
    let (rm, rw) = stats(read);
    let (pm, pw) = stats(render);
    let (tm, tw) = stats(total);
    println!("console worklist, {CHAINS} chains (21 runs; median / worst):");
    println!("  read summaries     {rm:8.1} / {rw:8.1} ms");
    println!("  clocks + render    {pm:8.1} / {pw:8.1} ms   ({bytes} bytes of HTML)");
    println!(
        "  whole request      {tm:8.1} / {tw:8.1} ms   goal < 200 ms: {}",
        if tm < 200.0 { "met" } else { "NOT MET" }
    );
}
