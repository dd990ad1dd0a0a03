//! The scanning station end to end in scripted mode: the real `celltrail scan` binary against
//! a real server and sled directories. Collection to receipt at manufacturing, and the bedside
//! identity check that must refuse another patient's wristband before anything is signed.

mod common;
mod station_support;

use celltrail::client::{detail_from_fields, Fields};
use celltrail::crypto::EventHash;
use celltrail::note::NoteSigner;
use celltrail::pb::{event_body::Detail, SignatureMeaning};
use common::*;
use station_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_collection_handoff_and_receipt_are_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let addr = server.addr;
    let mut c = server.client().await;
    let (nurse, courier, mfg) = (signer("nurse.ada"), signer("courier.bo"), signer("mfg.cy"));
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &courier, "courier", "COURIER-1").await;
    register(&mut c, &server.admin, &mfg, "manufacturing", "MFG-1").await;
    let (nk, ck, mk) = (
        key_file(dir.path(), &nurse),
        key_file(dir.path(), &courier),
        key_file(dir.path(), &mfg),
    );
    let (nk, ck, mk) = (
        nk.to_str().unwrap(),
        ck.to_str().unwrap(),
        mk.to_str().unwrap(),
    );
    let queue = dir.path().join("station");
    let (bag, chain) = din(42);
    let (wrist, coi_ref) = coi("PAT042");
    let at_hosp = ["--key", nk, "--site", "HOSP-A", "--yes", "--scan", &bag];

    let run = |extra: &[&str], base: &[&str]| {
        let args: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
        let queue = queue.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            scan(addr, &queue, &args).await
        }
    };
    let enrol = [
        "--event",
        "enrolled",
        "--scan",
        &wrist,
        "--set",
        "manufacturing_site=MFG-1",
    ];
    expect(&run(&enrol, &at_hosp).await, 0, "ACCEPTED");
    let ended = collection_end_now();
    let collect = [
        "--event",
        "collected",
        "--scan",
        PRODUCT,
        "--set",
        "volume_ml=250",
        "--set",
        &ended,
    ];
    expect(&run(&collect, &at_hosp).await, 0, "ACCEPTED");
    let pack = ["--event", "packed", "--scan", SHIPPER];
    expect(&run(&pack, &at_hosp).await, 0, "ACCEPTED");

    // Hand-off needs the courier's RECEIVED signature: without it the station refuses to sign.
    let ship = [
        "--event",
        "shipped",
        "--scan",
        SHIPPER,
        "--set",
        "to_site=MFG-1",
    ];
    let refused = expect(&run(&ship, &at_hosp).await, 1, "second person");
    assert!(refused.contains("REJECTED"), "{refused}");
    let ship_cosigned = [&ship[..], &["--cosign-key", ck]].concat();
    expect(&run(&ship_cosigned, &at_hosp).await, 0, "ACCEPTED");

    // Receipt at manufacturing: a "No" answer needs a comment, checked before signing.
    let at_mfg = ["--key", mk, "--site", "MFG-1", "--yes", "--scan", &bag];
    let receive = [
        "--event",
        "received",
        "--scan",
        SHIPPER,
        "--set",
        "from_site=HOSP-A",
        "--set",
        "temp_min_c=3.5",
        "--set",
        "temp_max_c=6",
        "--set",
        "elapsed_seconds=600",
    ];
    let seal_no = [&receive[..], &["--set", "seal_intact=no"]].concat();
    expect(&run(&seal_no, &at_mfg).await, 1, "a comment is required");
    // Scripted with the seal not answered: the station sends no default for it; the server
    // names the missing reading and nothing is recorded (issue 13 point 1).
    let out = expect(&run(&receive, &at_mfg).await, 1, "REJECTED");
    assert!(out.contains("missing: seal_intact"), "{out}");
    // Readings that will open a hold are flagged on the SUMMARY, judged by the server's policy
    // with the allowed range, before anyone signs; the receipt (a fact) is still recorded.
    let mut seal_no_warm: Vec<&str> = receive.to_vec();
    let at = seal_no_warm
        .iter()
        .position(|a| *a == "temp_max_c=6")
        .unwrap();
    seal_no_warm[at] = "temp_max_c=12";
    seal_no_warm.extend([
        "--set",
        "seal_intact=no",
        "--comment",
        "seal torn, logger warm",
    ]);
    let out = expect(&run(&seal_no_warm, &at_mfg).await, 0, "ACCEPTED");
    let warn = out
        .find("THIS WILL OPEN A HOLD: temperature_range")
        .expect("temperature warning");
    assert!(out.contains("allowed 2.0..8.0 C"), "{out}");
    assert!(out.contains("THIS WILL OPEN A HOLD: seal_intact"), "{out}");
    assert!(warn < out.find("ACCEPTED").unwrap(), "{out}");
    // And once recorded, the receipt's holds are printed (issue 13 point 7).
    assert!(
        out.contains("HOLD OPENED: temperature_range") && out.contains("QA must release it"),
        "{out}"
    );

    let events = chain_events(&mut c, &chain).await;
    assert_eq!(
        kinds(&events),
        ["enrolled", "collected", "packed", "shipped", "received"]
    );
    let (enrolled, _) = &events[0];
    match &enrolled.detail {
        Some(Detail::Enrolled(e)) => assert_eq!(e.coi_ref, coi_ref),
        d => panic!("{d:?}"),
    }
    match &events[1].0.detail {
        Some(Detail::Collected(col)) => {
            assert_eq!(
                (col.din.as_str(), col.volume_ml),
                (chain.as_str(), Some(250))
            );
            assert_eq!(col.product_code, "S12954A0");
        }
        d => panic!("{d:?}"),
    }
    match &events[3].0.detail {
        Some(Detail::Shipped(s)) => {
            assert_eq!(s.shipper_id, SHIPPER_ID);
            assert_eq!(s.from_site, "HOSP-A", "inferred from the station's site");
            assert_eq!(s.courier, "courier.bo", "inferred from the second signer");
        }
        d => panic!("{d:?}"),
    }
    let meanings: Vec<(String, i32)> = events[3]
        .1
        .signatures
        .iter()
        .map(|s| (s.key_id.clone(), s.meaning))
        .collect();
    assert_eq!(
        meanings,
        [
            ("nurse.ada".to_string(), SignatureMeaning::Performed as i32),
            ("courier.bo".to_string(), SignatureMeaning::Received as i32)
        ]
    );
    assert_eq!(events[4].0.site, "MFG-1");
}

const MIN: i64 = 60 * 1_000_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

struct Ward {
    _dir: tempfile::TempDir,
    server: TestServer,
    chain: String,
    coi_ref: String,
    product_bag: (String, String),
    nurse1: String,
    nurse2: String,
    queue: std::path::PathBuf,
}

/// A chain taken through manufacturing, release and shipment to CLINIC-1, dispensed (thawed
/// 15 minutes ago): ready for the bedside check.
async fn dispensed_chain() -> Ward {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let aph = signer("aph.ana");
    let courier = signer("courier.kim");
    let mfg = signer("mfg.moe");
    let qc = signer("qc.quinn");
    let qa = signer("qa.rosa");
    let pharm = signer("pharm.pat");
    let n1 = signer("nurse.ada");
    let n2 = signer("nurse.ben");
    for (k, role, site) in [
        (&aph, "apheresis_nurse", "HOSP-A"),
        (&courier, "courier", "COURIER-1"),
        (&mfg, "manufacturing", "MFG-1"),
        (&qc, "qc", "MFG-1"),
        (&qa, "qa", "MFG-1"),
        (&pharm, "pharmacist", "CLINIC-1"),
        (&n1, "nurse", "CLINIC-1"),
        (&n2, "nurse", "CLINIC-1"),
    ] {
        register(&mut c, &server.admin, k, role, site).await;
    }
    let (_, chain) = din(500);
    let product_bag = din(501);
    let (_, coi_ref) = coi("PAT500");
    let now = celltrail::time::now_nanos() / 1_000_000_000 * 1_000_000_000;
    let thawed = celltrail::time::rfc3339(now - 15 * MIN);
    type Plan<'a> = (
        i64,
        &'a str,
        &'a str,
        Vec<String>,
        Vec<(&'a NoteSigner, SignatureMeaning)>,
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    use SignatureMeaning::{Performed as P, Received as R};
    let mut plan: Vec<Plan> = vec![
        (
            0,
            "HOSP-A",
            "enrolled",
            s(&[&format!("coi_ref={coi_ref}"), "manufacturing_site=MFG-1"]),
            vec![(&aph, P)],
        ),
        (
            HOUR,
            "HOSP-A",
            "collected",
            s(&[
                &format!("din={chain}"),
                "volume_ml=200",
                &format!(
                    "collection_end={}",
                    celltrail::time::rfc3339(now - 20 * DAY + HOUR)
                ),
            ]),
            vec![(&aph, P)],
        ),
        (
            HOUR,
            "HOSP-A",
            "packed",
            s(&["shipper_id=S1"]),
            vec![(&aph, P)],
        ),
        (
            HOUR,
            "HOSP-A",
            "shipped",
            s(&["from_site=HOSP-A", "to_site=MFG-1", "shipper_id=S1"]),
            vec![(&aph, P), (&courier, R)],
        ),
        (
            20 * HOUR,
            "MFG-1",
            "received",
            s(&[
                "from_site=HOSP-A",
                "seal_intact=yes",
                "temp_min_c=3.5",
                "temp_max_c=6",
                "elapsed_seconds=1200",
                "shipper_id=S1",
            ]),
            vec![(&mfg, P)],
        ),
        (
            4 * HOUR,
            "MFG-1",
            "manufacturing_step",
            s(&["step=activation"]),
            vec![(&mfg, P)],
        ),
        (
            10 * DAY,
            "MFG-1",
            "manufacturing_step",
            s(&[
                "step=cryopreservation",
                &format!("product_bag_ids={}", product_bag.1),
            ]),
            vec![(&mfg, P)],
        ),
    ];
    for t in [
        "sterility",
        "endotoxin",
        "mycoplasma",
        "viability",
        "identity",
        "potency",
        "vcn",
    ] {
        plan.push((
            HOUR,
            "MFG-1",
            "qc_result",
            s(&[
                &format!("test={t}"),
                "result=within specification",
                "passed=yes",
            ]),
            vec![(&qc, P)],
        ));
    }
    plan.extend([
        (DAY, "MFG-1", "released", vec![], vec![(&qa, P)]),
        (
            HOUR,
            "MFG-1",
            "packed",
            s(&["shipper_id=LN2-9"]),
            vec![(&mfg, P)],
        ),
        (
            HOUR,
            "MFG-1",
            "shipped",
            s(&["from_site=MFG-1", "to_site=CLINIC-1", "shipper_id=LN2-9"]),
            vec![(&mfg, P), (&courier, R)],
        ),
        (
            DAY,
            "CLINIC-1",
            "received",
            s(&[
                "from_site=MFG-1",
                "seal_intact=yes",
                "temp_min_c=-190",
                "temp_max_c=-176",
                "elapsed_seconds=0",
                "shipper_id=LN2-9",
            ]),
            vec![(&pharm, P)],
        ),
        (
            HOUR,
            "CLINIC-1",
            "stored",
            s(&["location=LN2-FREEZER-2", "temp_c=-185"]),
            vec![(&pharm, P)],
        ),
    ]);
    let mut t = now - 20 * DAY;
    let mut prev = vec![0u8; 32];
    let mut seq = 0;
    let mut append = |at: i64,
                      site: &str,
                      kind: &str,
                      set: Vec<String>,
                      signers: Vec<(&NoteSigner, SignatureMeaning)>| {
        let detail = detail_from_fields(kind, Fields::parse(&set).unwrap()).unwrap();
        let ev = signed_at_link(&chain, seq, prev.clone(), at, site, detail, &signers);
        prev = EventHash::of_body(&ev.body).0.to_vec();
        seq += 1;
        ev
    };
    let mut events = Vec::new();
    for (after, site, kind, set, signers) in plan {
        t += after;
        events.push(append(t, site, kind, set, signers));
    }
    // The patient's lymphodepletion, recorded through the same `--set` field table.
    events.push(append(
        now - 3 * DAY,
        "CLINIC-1",
        "lymphodepletion_started",
        s(&[
            "regimen=fludarabine/cyclophosphamide",
            &format!("started_at={}", celltrail::time::rfc3339(now - 3 * DAY)),
        ]),
        vec![(&n1, P)],
    ));
    events.push(append(
        now - 2 * DAY,
        "CLINIC-1",
        "lymphodepletion_completed",
        s(&[&format!(
            "completed_at={}",
            celltrail::time::rfc3339(now - 2 * DAY)
        )]),
        vec![(&n1, P)],
    ));
    events.push(append(
        now - 10 * MIN,
        "CLINIC-1",
        "dispensed",
        s(&[
            &format!("product_bag_id={}", product_bag.1),
            &format!("thawed_at={thawed}"),
        ]),
        vec![(&pharm, P)],
    ));
    for ev in events {
        c.append(ev).await.unwrap_or_else(|s| panic!("{s:?}"));
    }
    let head = chain_events(&mut c, &chain).await;
    assert_eq!(head.len(), 22);
    Ward {
        nurse1: key_file(dir.path(), &n1).to_str().unwrap().into(),
        nurse2: key_file(dir.path(), &n2).to_str().unwrap().into(),
        queue: dir.path().join("bedside-station"),
        _dir: dir,
        server,
        chain,
        coi_ref,
        product_bag,
    }
}

async fn bedside(w: &Ward, wristband: &str, bag: &str) -> std::process::Output {
    bedside_on(w, Some(&w.chain), wristband, bag).await
}

/// The bedside check; without `chain` the station finds the chain from the scanned bag.
async fn bedside_on(
    w: &Ward,
    chain: Option<&str>,
    wristband: &str,
    bag: &str,
) -> std::process::Output {
    let mut args = vec![
        "--bedside",
        "--key",
        &w.nurse1,
        "--cosign-key",
        &w.nurse2,
        "--site",
        "CLINIC-1",
    ];
    if let Some(chain) = chain {
        args.extend(["--chain", chain]);
    }
    args.extend(["--scan", wristband, "--scan", bag, "--yes"]);
    scan(w.server.addr, &w.queue, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_mismatch_signs_nothing_and_records_a_near_miss_for_qa() {
    let w = dispensed_chain().await;
    let mut c = w.server.client().await;
    let before = chain_events(&mut c, &w.chain).await.len();

    let (other_wrist, other_coi) = coi("PAT999");
    let out = expect(
        &bedside(&w, &other_wrist, &w.product_bag.0).await,
        2,
        "MISMATCH",
    );
    assert!(out.contains("WRONG PATIENT"), "{out}");
    assert!(out.contains("NOTHING WAS SIGNED"), "{out}");
    assert!(out.contains("NEAR MISS RECORDED for QA"), "{out}");
    assert!(
        !out.contains("ACCEPTED") && !out.contains("QUEUED"),
        "no result word but MISMATCH:\n{out}"
    );

    let (wrist, coi_ref) = coi("PAT500");
    let (other_bag, other_bag_id) = din(777);
    let out = expect(&bedside(&w, &wrist, &other_bag).await, 2, "MISMATCH");
    assert!(out.contains("WRONG BAG"), "{out}");
    assert!(out.contains("NEAR MISS RECORDED for QA"), "{out}");

    // Two near misses, each signed PERFORMED by the nurse who scanned, naming the scans; no
    // bedside check and no second signature.
    let events = chain_events(&mut c, &w.chain).await;
    assert_eq!(events.len(), before + 2);
    assert_eq!(
        kinds(&events[before..]),
        ["identity_check_failed", "identity_check_failed"]
    );
    let scans: Vec<(String, String, String)> = events[before..]
        .iter()
        .map(|(body, entry)| {
            assert_eq!(body.actor_key_id, "nurse.ada");
            let sigs: Vec<(&str, i32)> = entry
                .signatures
                .iter()
                .map(|s| (s.key_id.as_str(), s.meaning))
                .collect();
            assert_eq!(sigs, [("nurse.ada", SignatureMeaning::Performed as i32)]);
            match &body.detail {
                Some(Detail::IdentityCheckFailed(n)) => (
                    n.check.clone(),
                    n.scanned_wristband_coi_ref.clone(),
                    n.scanned_bag_id.clone(),
                ),
                d => panic!("{d:?}"),
            }
        })
        .collect();
    assert_eq!(
        scans,
        [
            ("bedside_check".into(), other_coi, w.product_bag.1.clone()),
            ("bedside_check".into(), coi_ref, other_bag_id),
        ]
    );
    // The near misses changed nothing: the right wristband and bag still MATCH.
    expect(&bedside(&w, &wrist, &w.product_bag.0).await, 0, "ACCEPTED");
    let (waiting, _) = celltrail::station::Queue::open(&w.queue)
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(waiting, 0, "nothing queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_check_match_is_signed_by_two_nurses_and_accepted() {
    let w = dispensed_chain().await;
    let mut c = w.server.client().await;
    let (wrist, canon) = coi("PAT500");
    assert_eq!(canon, w.coi_ref);
    let out = expect(&bedside(&w, &wrist, &w.product_bag.0).await, 0, "ACCEPTED");
    let m = out.find("MATCH").expect("MATCH shown");
    let s = out.find("SUMMARY").expect("summary shown");
    assert!(m < s, "MATCH is shown before anything is signed:\n{out}");
    let events = chain_events(&mut c, &w.chain).await;
    let (body, entry) = events.last().unwrap();
    match &body.detail {
        Some(Detail::BedsideCheck(b)) => {
            assert_eq!(b.wristband_coi_ref, w.coi_ref);
            assert_eq!(b.product_bag_id, w.product_bag.1);
        }
        d => panic!("{d:?}"),
    }
    let signers: Vec<(&str, i32)> = entry
        .signatures
        .iter()
        .map(|s| (s.key_id.as_str(), s.meaning))
        .collect();
    assert_eq!(
        signers,
        [
            ("nurse.ada", SignatureMeaning::Performed as i32),
            ("nurse.ben", SignatureMeaning::Verified as i32)
        ]
    );
}

/// The product bag's DIN is not the chain id (the chain is named by the apheresis bag): with
/// no --chain the station asks the server's bag index, shows which chain it found, and the
/// check and the signed event go to that chain. An unknown bag stays a MISMATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_check_finds_the_chain_from_the_product_bag_alone() {
    let w = dispensed_chain().await;
    assert_ne!(
        w.product_bag.1, w.chain,
        "the product bag must not name the chain"
    );
    let mut c = w.server.client().await;
    let (wrist, _) = coi("PAT500");

    let (other_bag, _) = din(777);
    let before = snapshot(&mut c).await;
    let out = expect(
        &bedside_on(&w, None, &wrist, &other_bag).await,
        2,
        "MISMATCH",
    );
    assert!(out.contains("this bag is unknown"), "{out}");
    assert_eq!(snapshot(&mut c).await, before, "nothing appended");

    let out = expect(
        &bedside_on(&w, None, &wrist, &w.product_bag.0).await,
        0,
        "ACCEPTED",
    );
    assert!(
        out.contains(&format!(
            "bag {} belongs to chain {}",
            w.product_bag.1, w.chain
        )),
        "{out}"
    );
    let events = chain_events(&mut c, &w.chain).await;
    match &events.last().unwrap().0.detail {
        Some(Detail::BedsideCheck(b)) => assert_eq!(b.product_bag_id, w.product_bag.1),
        d => panic!("{d:?}"),
    }
}

/// Records `infused` on the ward's chain (nurse.ada), as the infusion pump's record would.
async fn infuse(w: &Ward) {
    let nurse = celltrail::keys::KeyFile::load(std::path::Path::new(&w.nurse1))
        .unwrap()
        .open(&celltrail::keys::Passphrase::new(TEST_PASSPHRASE))
        .unwrap();
    let mut c = w.server.client().await;
    let now = celltrail::time::now_nanos();
    let draft = celltrail::client::Draft {
        chain_id: w.chain.clone(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: now,
        site: "CLINIC-1".into(),
        comment: String::new(),
        detail: Detail::Infused(celltrail::pb::Infused {
            product_bag_id: w.product_bag.1.clone(),
            // Started after the bedside check (an infusion never starts before it).
            started_at_unix_nanos: Some(now),
            ended_at_unix_nanos: Some(now),
        }),
    };
    celltrail::client::append_draft(&mut c, draft, &[(&nurse, SignatureMeaning::Performed)])
        .await
        .expect("infused");
}

/// Issue 14 point 4: a bag that was already infused never gets the MATCH banner; the reason
/// is in the big word's place, before any question, and nothing is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_refuses_match_for_an_infused_bag_before_any_question() {
    let w = dispensed_chain().await;
    let (wrist, _) = coi("PAT500");
    expect(&bedside(&w, &wrist, &w.product_bag.0).await, 0, "ACCEPTED");
    infuse(&w).await;
    let mut c = w.server.client().await;
    let before = snapshot(&mut c).await;
    let out = expect(&bedside(&w, &wrist, &w.product_bag.0).await, 2, "INFUSED");
    assert!(
        !out.contains("MATCH"),
        "never MATCH for an infused bag:\n{out}"
    );
    assert!(out.contains("the chain ended with Infused"), "{out}");
    assert!(out.contains("NOTHING WAS SIGNED"), "{out}");
    assert!(!out.contains("SUMMARY"), "{out}");
    assert_eq!(snapshot(&mut c).await, before, "nothing appended");
}

/// Issue 18: a station given several servers (`--server a,b`) asks the policy at whichever
/// answers, as it appends: with the first server down, an infused bag is still refused by the
/// policy before any question, and a new bag's check still warns from the server's preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_given_a_server_list_asks_the_policy_at_the_server_that_answers() {
    let w = dispensed_chain().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let servers = format!("{dead},{}", w.server.addr);
    let (wrist, _) = coi("PAT500");
    let args = |bag: &str| {
        vec![
            "--bedside".to_string(),
            "--key".into(),
            w.nurse1.clone(),
            "--cosign-key".into(),
            w.nurse2.clone(),
            "--site".into(),
            "CLINIC-1".into(),
            "--chain".into(),
            w.chain.clone(),
            "--scan".into(),
            wrist.clone(),
            "--scan".into(),
            bag.to_string(),
            "--yes".into(),
        ]
    };
    let a = args(&w.product_bag.0);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = expect(&scan_at(&servers, &w.queue, &a, &[]).await, 0, "ACCEPTED");
    assert!(
        !out.contains("could not"),
        "the station reached the policy:\n{out}"
    );
    infuse(&w).await;
    let mut c = w.server.client().await;
    let before = snapshot(&mut c).await;
    let out = expect(&scan_at(&servers, &w.queue, &a, &[]).await, 2, "INFUSED");
    assert!(out.contains("the chain ended with Infused"), "{out}");
    assert!(out.contains("NOTHING WAS SIGNED"), "{out}");
    assert_eq!(snapshot(&mut c).await, before, "nothing appended");
}

/// A bag that was never dispensed is refused at the bedside (the policy says why), and the
/// events the policy allows next come from the server with their signer slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_next_comes_from_the_policy_with_signer_slots() {
    use celltrail::pb::station_client::StationClient;
    use celltrail::pb::{GetAllowedNextRequest, PreviewEventRequest};
    let w = dispensed_chain().await;
    let mut s = StationClient::connect(format!("http://{}", w.server.addr))
        .await
        .unwrap();
    let n = s
        .get_allowed_next(GetAllowedNextRequest {
            chain_id: w.chain.clone(),
            site: "CLINIC-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.state, "Dispensed");
    assert!(n.bedside_refusal_word.is_empty(), "{n:?}");
    let check = n
        .events
        .iter()
        .find(|e| e.kind == "bedside_check")
        .expect("bedside_check allowed next");
    let meanings: Vec<i32> = check
        .signers
        .iter()
        .filter(|s| !s.optional)
        .map(|s| s.meaning)
        .collect();
    assert_eq!(
        meanings,
        [
            SignatureMeaning::Performed as i32,
            SignatureMeaning::Verified as i32
        ]
    );
    assert!(check.not_here.is_empty());
    // Asked from another site, custody says no.
    let elsewhere = s
        .get_allowed_next(GetAllowedNextRequest {
            chain_id: w.chain.clone(),
            site: "CLINIC-9".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let b = elsewhere
        .events
        .iter()
        .find(|e| e.kind == "bedside_check")
        .unwrap();
    assert!(b.not_here.contains("custody is at CLINIC-1"), "{b:?}");
    // A chain with no events: only enrolment, and no MATCH.
    let fresh = s
        .get_allowed_next(GetAllowedNextRequest {
            chain_id: "NO-SUCH-CHAIN".into(),
            site: "X".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.state, "Start");
    let kinds: Vec<&str> = fresh.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["enrolled"]);
    assert_eq!(fresh.bedside_refusal_word, "MISMATCH");
    // Bad input: a precise INVALID_ARGUMENT.
    let err = s
        .get_allowed_next(GetAllowedNextRequest {
            chain_id: String::new(),
            site: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("chain_id"), "{}", err.message());
    let err = s
        .preview_event(PreviewEventRequest {
            body: vec![0xff, 0xff, 0xff],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // After infusion: terminal, nothing allowed, the bedside refusal names it.
    let (wrist, _) = coi("PAT500");
    expect(&bedside(&w, &wrist, &w.product_bag.0).await, 0, "ACCEPTED");
    infuse(&w).await;
    let done = s
        .get_allowed_next(GetAllowedNextRequest {
            chain_id: w.chain.clone(),
            site: "CLINIC-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.terminal);
    assert!(done.events.is_empty());
    assert_eq!(done.bedside_refusal_word, "INFUSED");
}

/// Issue 14 point 7: a station that saw a chain online finds it from the product bag alone
/// while the server is down and queues the event on it; a station that never saw the chain
/// refuses before any question, and signs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_station_finds_the_chain_of_a_bag_it_has_seen_and_queues_on_it() {
    let w = dispensed_chain().await;
    let addr = w.server.addr;
    let nurse = w.nurse1.clone();
    let bag = w.product_bag.0.clone();
    // Online, for an event the chain does not allow now: refused, but the bag is learnt.
    let learn = [
        "--key", &nurse, "--site", "CLINIC-1", "--event", "infused", "--scan", &bag, "--yes",
    ];
    expect(&scan(addr, &w.queue, &learn).await, 1, "NO INFUSED NOW");
    let Ward {
        _dir,
        server,
        chain,
        queue,
        ..
    } = w;
    let length = server
        .client()
        .await
        .get_head(celltrail::pb::GetHeadRequest {
            chain_id: chain.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .length;
    server.stop().await;
    let hold = [
        "--key",
        &nurse,
        "--site",
        "CLINIC-1",
        "--event",
        "hold",
        "--scan",
        &bag,
        "--set",
        "reason=label smudged",
        "--comment",
        "label smudged",
        "--yes",
    ];
    let out = expect(&scan(addr, &queue, &hold).await, 3, "QUEUED");
    assert!(
        out.contains(&format!("belongs to chain {chain}")),
        "the remembered chain is named:\n{out}"
    );
    let q = celltrail::station::Queue::open(&queue).unwrap();
    let all = q.all().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1.chain_id, chain);
    assert_eq!(all[0].1.seq, length, "chained after the head seen online");
    drop(q);
    // A station that never saw the chain cannot chain the event.
    let fresh = _dir.path().join("fresh-station");
    let out = expect(&scan(addr, &fresh, &hold).await, 1, "CANNOT CHAIN");
    assert!(out.contains("nothing was asked"), "{out}");
    let q = celltrail::station::Queue::open(&fresh).unwrap();
    assert_eq!(q.counts().unwrap(), (0, 0), "nothing queued");
}

/// Issue 14 point 5: at a receipt whose shipment named a shipper, the shipper scan is
/// required and must be that shipper; a wrong one stops the receipt before it is signed and is
/// recorded as a near miss (point 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_requires_the_shipper_the_shipment_named() {
    let s = shipped_to_mfg(610).await;
    let mut c = s.server.client().await;
    let before = snapshot(&mut c).await;
    let mk = s.mfg_key.to_str().unwrap();
    let queue = s.dir.path().join("mfg-station");
    let receive = |shipper: Option<&'static str>| {
        let mut a: Vec<String> = [
            "--key",
            mk,
            "--site",
            "MFG-1",
            "--yes",
            "--event",
            "received",
            "--scan",
            &s.bag,
            "--set",
            "seal_intact=yes",
            "--set",
            "temp_min_c=3.5",
            "--set",
            "temp_max_c=6",
            "--set",
            "elapsed_seconds=600",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if let Some(sh) = shipper {
            a.extend(["--scan".to_string(), sh.to_string()]);
        }
        a
    };
    let run = |args: Vec<String>| {
        let queue = queue.clone();
        let addr = s.server.addr;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            scan(addr, &queue, &a).await
        }
    };
    let out = expect(&run(receive(None)).await, 1, "REJECTED");
    assert!(
        out.contains(&format!("the shipment named shipper {SHIPPER_ID}")),
        "{out}"
    );
    let out = expect(
        &run(receive(Some("(8003)09506000134352SHIP2"))).await,
        2,
        "WRONG SHIPPER",
    );
    assert!(out.contains("09506000134352SHIP2"), "{out}");
    assert!(!out.contains("SUMMARY"), "{out}");
    // Issue 14 point 6: the wrong shipper is a near miss, recorded for QA; no receipt.
    assert!(out.contains("NEAR MISS RECORDED for QA"), "{out}");
    assert_eq!(snapshot(&mut c).await.len(), before.len() + 1);
    let events = chain_events(&mut c, &s.chain).await;
    let (body, entry) = events.last().unwrap();
    match &body.detail {
        Some(Detail::IdentityCheckFailed(n)) => {
            assert_eq!(n.check, "received");
            assert_eq!(n.scanned_shipper_id, "09506000134352SHIP2");
            assert_eq!(n.expected_shipper_id, SHIPPER_ID);
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(entry.signatures[0].key_id, "mfg.cy");
    expect(&run(receive(Some(SHIPPER))).await, 0, "ACCEPTED");
    assert_eq!(
        kinds(&chain_events(&mut c, &s.chain).await).last(),
        Some(&"received")
    );
}

/// Issue 14 point 6 offline: a wrong shipper scanned while the server is down is a near miss
/// signed and queued like any event (the station remembers the shipper the shipment named);
/// replayed, it changes nothing, the receipt still follows, and the offline verifier replays
/// the chain with it: VERIFIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_near_miss_is_queued_replayed_and_verified() {
    let s = shipped_to_mfg(630).await;
    let mk = s.mfg_key.to_str().unwrap().to_string();
    let queue = s.dir.path().join("mfg-station");
    let receive = |shipper: &str| -> Vec<String> {
        [
            "--key",
            &mk,
            "--site",
            "MFG-1",
            "--yes",
            "--event",
            "received",
            "--scan",
            &s.bag,
            "--scan",
            shipper,
            "--set",
            "seal_intact=yes",
            "--set",
            "temp_min_c=3.5",
            "--set",
            "temp_max_c=6",
            "--set",
            "elapsed_seconds=600",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let addr = s.server.addr;
    let run = |args: Vec<String>| {
        let queue = queue.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            scan(addr, &queue, &a).await
        }
    };
    // Online once: the station learns the chain (and the shipper its shipment named).
    let learn = [
        "--key", &mk, "--site", "MFG-1", "--yes", "--event", "stored", "--scan", &s.bag,
    ];
    expect(&scan(addr, &queue, &learn).await, 1, "NO STORED NOW");
    let Shipped {
        dir, server, chain, ..
    } = s;
    let data = server.data_dir.clone();
    server.stop().await;

    let out = expect(
        &run(receive("(8003)09506000134352SHIP2")).await,
        2,
        "WRONG SHIPPER",
    );
    assert!(out.contains("NEAR MISS QUEUED for QA"), "{out}");
    let q = celltrail::station::Queue::open(&queue).unwrap();
    let all = q.all().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (all[0].1.chain_id.as_str(), all[0].1.kind.as_str()),
        (chain.as_str(), "identity_check_failed")
    );
    drop(q);

    let server = TestServer::builder(&data).on(addr).start().await;
    let out = scan(addr, &queue, &["--drain"]).await;
    expect(&out, 0, "QUEUE EMPTY");
    expect(&run(receive(SHIPPER)).await, 0, "ACCEPTED");
    let mut c = server.client().await;
    let events = chain_events(&mut c, &chain).await;
    assert_eq!(
        kinds(&events)[4..],
        ["identity_check_failed", "received"],
        "the near miss, then the receipt it did not block"
    );

    let bundle = dir.path().join("chain.bundle.json");
    let vkey = data.join("log.vkey");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("CELLTRAIL_LOG", "warn")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}:\n{text}");
        text
    };
    let b = bundle.to_str().unwrap();
    cli(&[
        "export",
        "--server",
        &addr.to_string(),
        "--chain",
        &chain,
        "--log-vkey",
        vkey.to_str().unwrap(),
        "--trust-anchors",
        data.join("trust-anchors.txt").to_str().unwrap(),
        "--out",
        b,
    ]);
    let report = cli(&["verify", b, "--log-key", vkey.to_str().unwrap()]);
    assert!(report.contains("identity_check_failed"), "{report}");
    assert!(report.contains("NEAR MISS at received"), "{report}");
}

/// Waits for `want` in the terminal, then types `send` (and Enter) if given.
fn pty_step(
    p: &mut rexpect::session::PtySession,
    seen: &mut String,
    want: &str,
    send: Option<&str>,
) {
    *seen += &p
        .exp_string(want)
        .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
    *seen += want;
    if let Some(line) = send {
        p.send_line(line).unwrap();
    }
}

/// Issue 14 point 4 through a terminal: a nurse at an interactive station scans the wristband
/// and an infused bag; the big word is the reason (INFUSED), never MATCH, before any question,
/// and nothing is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_bedside_check_of_an_infused_bag_shows_the_reason_not_match() {
    let w = dispensed_chain().await;
    let (wrist, _) = coi("PAT500");
    expect(&bedside(&w, &wrist, &w.product_bag.0).await, 0, "ACCEPTED");
    infuse(&w).await;
    let mut c = w.server.client().await;
    let before = snapshot(&mut c).await;
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(w.server.addr.to_string())
        .arg("--queue")
        .arg(&w.queue)
        .arg("--key")
        .arg(&w.nurse1)
        .arg("--site")
        .arg("CLINIC-1")
        .env(
            "CELLTRAIL_PASSPHRASE_FILE",
            pass_path(std::path::Path::new(&w.nurse1)),
        )
        .env("CELLTRAIL_LOG", "warn");
    let bag = w.product_bag.0.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        pty_step(&mut p, &mut seen, "scan >", Some(&wrist));
        pty_step(&mut p, &mut seen, "scan >", Some(&bag));
        pty_step(&mut p, &mut seen, "scan >", Some(""));
        pty_step(&mut p, &mut seen, "event >", Some("bedside_check"));
        pty_step(&mut p, &mut seen, "INFUSED", None);
        pty_step(&mut p, &mut seen, "the chain ended with Infused", None);
        pty_step(&mut p, &mut seen, "NOTHING WAS SIGNED", None);
        pty_step(&mut p, &mut seen, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    let after_choice = &seen[seen.find("event >").unwrap()..];
    assert!(!after_choice.contains("MATCH"), "never MATCH:\n{seen}");
    assert!(!after_choice.contains("SUMMARY"), "{seen}");
    assert_eq!(snapshot(&mut c).await, before, "nothing appended");
}

/// Issue 14 point 4 through a terminal: the allowed range is shown next to the temperature
/// questions at a receipt, and readings outside it are flagged on the SUMMARY before anyone
/// signs ("THIS WILL OPEN A HOLD"); CANCEL there signs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_receipt_flags_readings_that_will_open_a_hold_before_signing() {
    let s = shipped_to_mfg(640).await;
    let mut c = s.server.client().await;
    let before = snapshot(&mut c).await;
    let cmd = s.mfg_station();
    let bag = s.bag.clone();
    tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        pty_step(&mut p, &mut seen, "scan >", Some(&bag));
        pty_step(&mut p, &mut seen, "scan >", Some(SHIPPER));
        pty_step(&mut p, &mut seen, "scan >", Some(""));
        pty_step(&mut p, &mut seen, "event >", Some("received"));
        pty_step(&mut p, &mut seen, "Seal intact? (yes/no) >", Some("yes"));
        pty_step(&mut p, &mut seen, "Lowest logger temperature", None);
        pty_step(&mut p, &mut seen, "[allowed 2.0 to 8.0 ", None);
        pty_step(&mut p, &mut seen, "] >", Some("3.5"));
        pty_step(&mut p, &mut seen, "Highest logger temperature", None);
        pty_step(&mut p, &mut seen, "[allowed 2.0 to 8.0 ", None);
        pty_step(&mut p, &mut seen, "] >", Some("12.4"));
        pty_step(
            &mut p,
            &mut seen,
            "Minutes out of controlled storage",
            Some("10"),
        );
        pty_step(&mut p, &mut seen, "Comment (Enter for none) >", Some(""));
        pty_step(
            &mut p,
            &mut seen,
            "Sign: scan your badge or type your key name >",
            Some("mfg.cy"),
        );
        pty_step(&mut p, &mut seen, "SUMMARY", None);
        pty_step(&mut p, &mut seen, "THIS WILL OPEN A HOLD", None);
        pty_step(
            &mut p,
            &mut seen,
            "mfg.cy: type your passphrase to sign (PERFORMED) >",
            Some("CANCEL"),
        );
        pty_step(&mut p, &mut seen, "nothing was signed", None);
        pty_step(&mut p, &mut seen, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();
    assert_eq!(snapshot(&mut c).await, before, "nothing was signed");
}

/// A bedside check on a bag that is not dispensed yet is refused before any question (NOT
/// DISPENSED); when the wristband is also another patient's, that is what the nurse must see
/// first: MISMATCH with WRONG PATIENT and the state, and the near miss is recorded for QA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_check_of_an_undispensed_bag_names_a_wrong_patient_first() {
    let s = site_with_nurse().await;
    let mut c = s.server.client().await;
    let queue = s.dir.path().join("station");
    let k = s.nurse.to_str().unwrap();
    let (bag, chain) = din(520);
    let (wrist, _) = coi("PAT520");
    let (other, other_ref) = coi("PAT999");
    expect(
        &scan_enrolment(s.server.addr, &queue, k, &bag, &wrist).await,
        0,
        "ACCEPTED",
    );
    let check = |w: &str| {
        let args = [
            "--bedside",
            "--key",
            k,
            "--site",
            "HOSP-A",
            "--chain",
            &chain,
            "--scan",
            w,
            "--scan",
            &bag,
            "--yes",
        ]
        .map(str::to_string);
        let (addr, queue) = (s.server.addr, queue.clone());
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            scan(addr, &queue, &a).await
        }
    };
    let right = expect(&check(&wrist).await, 2, "NOT DISPENSED");
    assert!(
        !right.contains("MISMATCH") && !right.contains("NEAR MISS"),
        "{right}"
    );
    assert_eq!(kinds(&chain_events(&mut c, &chain).await), ["enrolled"]);

    let wrong = expect(&check(&other).await, 2, "MISMATCH");
    assert!(wrong.contains("WRONG PATIENT"), "{wrong}");
    assert!(
        wrong.contains("and NOT DISPENSED: the chain is in state"),
        "{wrong}"
    );
    assert!(wrong.contains("NEAR MISS RECORDED for QA"), "{wrong}");
    let events = chain_events(&mut c, &chain).await;
    assert_eq!(kinds(&events), ["enrolled", "identity_check_failed"]);
    match &events[1].0.detail {
        Some(Detail::IdentityCheckFailed(n)) => {
            assert_eq!(n.check, "bedside_check");
            assert_eq!(n.scanned_wristband_coi_ref, other_ref);
            assert!(n.reason.contains("WRONG PATIENT"), "{}", n.reason);
        }
        d => panic!("{d:?}"),
    }
}

/// `celltrail scan` at the ward (CLINIC-1) with the nurses' key directory: signers pick their
/// key by name and type their passphrase at the prompt (no key or passphrase from the
/// environment).
fn ward_station_with_key_directory(w: &Ward) -> std::process::Command {
    let keys = std::path::Path::new(&w.nurse1)
        .parent()
        .unwrap()
        .to_path_buf();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(w.server.addr.to_string())
        .arg("--queue")
        .arg(&w.queue)
        .arg("--keys-dir")
        .arg(&keys)
        .arg("--site")
        .arg("CLINIC-1")
        .env_remove("CELLTRAIL_KEY")
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env("CELLTRAIL_LOG", "warn");
    cmd
}

/// The bedside check at a ward station with a key directory, through a terminal: MATCH before
/// anyone signs, then the nurse identifies and a second nurse (not the same one) verifies,
/// each typing their own passphrase; the record carries PERFORMED and VERIFIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_bedside_match_is_signed_by_two_nurses_with_their_passphrases() {
    let w = dispensed_chain().await;
    let (wrist, _) = coi("PAT500");
    let cmd = ward_station_with_key_directory(&w);
    let bag = w.product_bag.0.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        pty_step(&mut p, &mut seen, "scan >", Some(&wrist));
        pty_step(&mut p, &mut seen, "scan >", Some(&bag));
        pty_step(&mut p, &mut seen, "scan >", Some(""));
        pty_step(&mut p, &mut seen, "event >", Some("bedside_check"));
        pty_step(&mut p, &mut seen, "MATCH", None);
        pty_step(&mut p, &mut seen, "Comment (Enter for none) >", Some(""));
        pty_step(
            &mut p,
            &mut seen,
            "Sign: scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        pty_step(
            &mut p,
            &mut seen,
            "Second person (VERIFIED): scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        pty_step(&mut p, &mut seen, "must be someone else", None);
        pty_step(&mut p, &mut seen, "(VERIFIED): scan", Some("nurse.ben"));
        pty_step(&mut p, &mut seen, "SUMMARY", None);
        pty_step(
            &mut p,
            &mut seen,
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        pty_step(
            &mut p,
            &mut seen,
            "nurse.ben: type your passphrase to sign (VERIFIED) >",
            Some(TEST_PASSPHRASE),
        );
        pty_step(&mut p, &mut seen, "ACCEPTED", None);
        pty_step(
            &mut p,
            &mut seen,
            "VERIFIED (second person checked it)",
            None,
        );
        pty_step(&mut p, &mut seen, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    let matched = seen.find("MATCH").unwrap();
    assert!(
        seen.find("Sign: scan your badge").unwrap() > matched,
        "MATCH before anyone signs:\n{seen}"
    );
    let mut c = w.server.client().await;
    let events = chain_events(&mut c, &w.chain).await;
    let (_, last) = events.last().unwrap();
    let sigs: Vec<(&str, i32)> = last
        .signatures
        .iter()
        .map(|s| (s.key_id.as_str(), s.meaning))
        .collect();
    assert_eq!(
        sigs,
        [
            ("nurse.ada", SignatureMeaning::Performed as i32),
            ("nurse.ben", SignatureMeaning::Verified as i32)
        ]
    );
}

/// A bedside MISMATCH at a ward station with a key directory, through a terminal: nothing is
/// signed for the check, and the near miss for QA is signed by the nurse who identifies and
/// types their passphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_bedside_mismatch_records_the_near_miss_signed_by_the_nurse() {
    let w = dispensed_chain().await;
    let (other, other_ref) = coi("PAT999");
    let cmd = ward_station_with_key_directory(&w);
    let bag = w.product_bag.0.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        pty_step(&mut p, &mut seen, "scan >", Some(&other));
        pty_step(&mut p, &mut seen, "scan >", Some(&bag));
        pty_step(&mut p, &mut seen, "scan >", Some(""));
        pty_step(&mut p, &mut seen, "event >", Some("bedside_check"));
        pty_step(&mut p, &mut seen, "MISMATCH", None);
        pty_step(&mut p, &mut seen, "WRONG PATIENT", None);
        pty_step(&mut p, &mut seen, "Recording this near miss for QA", None);
        // What will be signed, before the badge prompt.
        pty_step(&mut p, &mut seen, "NEAR MISS RECORD", None);
        pty_step(&mut p, &mut seen, "IDENTITY_CHECK_FAILED", None);
        pty_step(&mut p, &mut seen, "scanned_wristband_coi_ref", None);
        pty_step(&mut p, &mut seen, "PERFORMED", None);
        pty_step(
            &mut p,
            &mut seen,
            "Sign: scan your badge or type your key name >",
            Some("nurse.ben"),
        );
        pty_step(
            &mut p,
            &mut seen,
            "nurse.ben: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        pty_step(&mut p, &mut seen, "NEAR MISS RECORDED for QA", None);
        pty_step(&mut p, &mut seen, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    assert!(
        !seen.contains("SUMMARY"),
        "nothing to sign for the check:\n{seen}"
    );
    let mut c = w.server.client().await;
    let events = chain_events(&mut c, &w.chain).await;
    let (body, entry) = events.last().unwrap();
    match &body.detail {
        Some(Detail::IdentityCheckFailed(n)) => {
            assert_eq!(n.check, "bedside_check");
            assert_eq!(n.scanned_wristband_coi_ref, other_ref);
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(entry.signatures[0].key_id, "nurse.ben");
}
