//! Store-and-forward: the station keeps signed events while the server is away and replays them
//! in order, exactly once, even when the station itself is killed mid-replay. A chain that moved
//! meanwhile is shown as a conflict, not rebased.

mod common;
mod station_support;

use common::*;
use station_support::*;
use std::time::Duration;

const MT: i32 = 0;

/// Enrols chains A and B online, stops the server, queues 20 collections (alternating A, B)
/// and restarts the server on the same address and data dir. Returns the site, the two chain
/// ids and the DINs queued for each chain in order.
struct Offline {
    site: Site,
    queue: std::path::PathBuf,
    chains: [String; 2],
    queued: [Vec<String>; 2],
    entries_before: usize,
}

async fn queue_twenty_while_offline() -> Offline {
    let mut site = site_with_nurse().await;
    let addr = site.server.addr;
    let queue = site.dir.path().join("station-queue");
    let nurse = site.nurse.to_str().unwrap().to_string();
    let mut chains = [String::new(), String::new()];
    for (i, chain) in chains.iter_mut().enumerate() {
        let (bag, canon) = din(100 + i as u32);
        let (wrist, _) = coi(&format!("PAT00{i}"));
        let o = scan_enrolment(addr, &queue, &nurse, &bag, &wrist).await;
        expect(&o, MT, "ACCEPTED");
        *chain = canon;
    }
    let mut c = site.server.client().await;
    let entries_before = snapshot(&mut c).await.len();
    drop(c);
    let data_dir = site.server.data_dir.clone();
    site.server.stop().await;

    let mut queued = [Vec::new(), Vec::new()];
    for n in 0..20u32 {
        let k = (n % 2) as usize;
        let (bag, canon) = din(1000 + n);
        let o = scan(
            addr,
            &queue,
            &[
                "--key",
                &nurse,
                "--site",
                "HOSP-A",
                "--event",
                "collected",
                "--chain",
                &chains[k],
                "--scan",
                &bag,
                "--scan",
                PRODUCT,
                "--set",
                &format!("volume_ml={}", 50 + n),
                "--set",
                &collection_end_now(),
                "--yes",
            ],
        )
        .await;
        expect(&o, 3, &format!("QUEUED ({} waiting)", n + 1));
        queued[k].push(canon);
    }
    site.server = TestServer::start_on(celltrail::server::ServeOptions::new(&data_dir), addr).await;
    Offline {
        site,
        queue,
        chains,
        queued,
        entries_before,
    }
}

/// Each chain holds its enrolment and then exactly the queued collections, in order.
async fn assert_exactly_once(o: &Offline) {
    let mut c = o.site.server.client().await;
    for k in 0..2 {
        let events = chain_events(&mut c, &o.chains[k]).await;
        assert_eq!(kinds(&events)[0], "enrolled");
        assert_eq!(
            collected_dins(&events),
            o.queued[k],
            "chain {}",
            o.chains[k]
        );
        for (i, (b, _)) in events.iter().enumerate() {
            assert_eq!(b.seq, i as u64);
        }
    }
    assert_eq!(
        snapshot(&mut c).await.len(),
        o.entries_before + 20,
        "the log holds each queued event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_queues_twenty_events_and_replays_them_in_order_exactly_once() {
    let o = queue_twenty_while_offline().await;
    let out = scan(o.site.server.addr, &o.queue, &["--drain"]).await;
    let text = expect(&out, 0, "QUEUE EMPTY");
    assert_eq!(text.matches("ACCEPTED, log index").count(), 20, "{text}");
    assert_exactly_once(&o).await;

    // Draining again sends nothing.
    let again = scan(o.site.server.addr, &o.queue, &["--drain"]).await;
    let text = expect(&again, 0, "QUEUE EMPTY");
    assert!(!text.contains("SENT"), "{text}");
    assert_exactly_once(&o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_killed_mid_replay_sends_each_event_exactly_once_after_restart() {
    let o = queue_twenty_while_offline().await;
    let addr = o.site.server.addr;
    let mut child = tokio::process::Command::new(BIN)
        .arg("scan")
        .arg("--server")
        .arg(addr.to_string())
        .arg("--queue")
        .arg(&o.queue)
        .arg("--drain")
        .env("CELLTRAIL_STATION_REPLAY_PAUSE_MS", "150")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut c = o.site.server.client().await;
    let mut at_kill = 0;
    for _ in 0..1000 {
        at_kill = snapshot(&mut c).await.len() - o.entries_before;
        if at_kill >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the station was killed, not finished");
    let sent_before_kill = snapshot(&mut c).await.len() - o.entries_before;
    assert!(
        (5..20).contains(&sent_before_kill),
        "killed mid-replay: {sent_before_kill} of 20 sent (seen {at_kill})"
    );

    let out = scan(addr, &o.queue, &["--drain"]).await;
    expect(&out, 0, "QUEUE EMPTY");
    assert_exactly_once(&o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_receipt_before_dequeue_resends_as_duplicate_not_twice() {
    let o = queue_twenty_while_offline().await;
    let addr = o.site.server.addr;
    // The station dies right after the 3rd receipt, before removing that event from its queue.
    let crashed = scan_env(
        addr,
        &o.queue,
        &["--drain"],
        &[("CELLTRAIL_STATION_CRASH_AFTER_SEND", "3")],
    )
    .await;
    assert!(!crashed.status.success());
    let mut c = o.site.server.client().await;
    assert_eq!(snapshot(&mut c).await.len(), o.entries_before + 3);

    let out = scan(addr, &o.queue, &["--drain"]).await;
    let text = expect(&out, 0, "QUEUE EMPTY");
    assert_eq!(
        text.matches("(was already recorded)").count(),
        1,
        "the 3rd event is resent once and answered as a duplicate:\n{text}"
    );
    assert_eq!(text.matches("ACCEPTED, log index").count(), 18, "{text}");
    assert_exactly_once(&o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_moved_while_offline_is_shown_as_conflict_and_kept_not_rebased() {
    let mut site = site_with_nurse().await;
    let addr = site.server.addr;
    let queue = site.dir.path().join("q");
    let other_queue = site.dir.path().join("other-station");
    let nurse = site.nurse.to_str().unwrap().to_string();
    let (bag, chain) = din(7);
    let (wrist, _) = coi("PAT777");
    let base = ["--key", &nurse, "--site", "HOSP-A", "--yes"];
    let o = scan(
        addr,
        &queue,
        &[
            &base[..],
            &[
                "--event",
                "enrolled",
                "--scan",
                &bag,
                "--scan",
                &wrist,
                "--set",
                "manufacturing_site=MFG-1",
            ],
        ]
        .concat(),
    )
    .await;
    expect(&o, 0, "ACCEPTED");
    let data_dir = site.server.data_dir.clone();
    site.server.stop().await;

    let collect = |n: u32| {
        let (b, _) = din(n);
        [
            "--event".to_string(),
            "collected".into(),
            "--chain".into(),
            chain.clone(),
            "--scan".into(),
            b,
            "--set".into(),
            "volume_ml=10".into(),
            "--set".into(),
            collection_end_now(),
        ]
    };
    let args1: Vec<String> = base
        .iter()
        .map(|s| s.to_string())
        .chain(collect(8))
        .collect();
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();
    expect(&scan(addr, &queue, &args1).await, 3, "QUEUED (1 waiting)");

    // Meanwhile another station records seq 1 on the same chain.
    site.server = TestServer::start_on(celltrail::server::ServeOptions::new(&data_dir), addr).await;
    let args2: Vec<String> = base
        .iter()
        .map(|s| s.to_string())
        .chain(collect(9))
        .collect();
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    expect(&scan(addr, &other_queue, &args2).await, 0, "ACCEPTED");
    let mut c = site.server.client().await;
    let before = snapshot(&mut c).await;

    let out = scan(addr, &queue, &["--drain"]).await;
    let text = expect(&out, 1, "CONFLICT");
    assert!(text.contains("NEED ATTENTION"), "{text}");
    assert_eq!(
        snapshot(&mut c).await,
        before,
        "nothing rebased or appended"
    );
    let (_, d9) = din(9);
    assert_eq!(collected_dins(&chain_events(&mut c, &chain).await), [d9]);

    // The station refuses to sign more on that chain until the conflict is dealt with.
    let args3: Vec<String> = base
        .iter()
        .map(|s| s.to_string())
        .chain(collect(10))
        .collect();
    let args3: Vec<&str> = args3.iter().map(String::as_str).collect();
    let text = expect(&scan(addr, &queue, &args3).await, 1, "REJECTED");
    assert!(text.contains("refused"), "{text}");
    assert_eq!(snapshot(&mut c).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedside_check_while_offline_signs_and_queues_nothing() {
    let site = site_with_nurse().await;
    let addr = site.server.addr;
    let queue = site.dir.path().join("q");
    let nurse = site.nurse.to_str().unwrap().to_string();
    site.server.stop().await;
    let (bag, _) = din(11);
    let (wrist, _) = coi("PAT011");
    let out = scan(
        addr,
        &queue,
        &[
            "--bedside",
            "--key",
            &nurse,
            "--site",
            "HOSP-A",
            "--scan",
            &wrist,
            "--scan",
            &bag,
            "--cosign-key",
            &nurse,
            "--yes",
        ],
    )
    .await;
    let text = expect(&out, 2, "CANNOT CHECK");
    assert!(text.contains("NOTHING WAS SIGNED"), "{text}");
    let q = celltrail::station::Queue::open(&queue).unwrap();
    assert_eq!(q.counts().unwrap(), (0, 0), "nothing queued");
}
