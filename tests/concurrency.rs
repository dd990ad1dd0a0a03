//! Concurrent appends: two stations racing for the same seq of one chain (exactly one wins, the
//! other learns the new head), and 64 clients on distinct chains losing nothing.

mod common;
mod realproc;

use celltrail::crypto::EventHash;
use celltrail::pb::{
    event_body::Detail, Collected, Enrolled, GetChainRequest, SignatureMeaning::Performed,
};
use common::*;
use std::time::{Duration, Instant};
use tonic::Code;

fn enrolled() -> Detail {
    Detail::Enrolled(Enrolled {
        coi_ref: "COI-7F3A-2291".into(),
        therapy: "CAR-T anti-CD19".into(),
        manufacturing_site: "MFG-1".into(),
    })
}

fn collected(chain: &str, volume_ml: u32) -> Detail {
    Detail::Collected(Collected {
        din: din_for(chain),
        product_code: "S1234000".into(),
        volume_ml: Some(volume_ml),
        collection_end_unix_nanos: Some(celltrail::time::now_nanos()),
    })
}

/// Per docs/design.md §6 a *different* event at a taken seq is a fork: `ALREADY_EXISTS`, and the status
/// names the current head (seq and hash) so the losing station can rebase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_seq_race_has_exactly_one_winner_and_the_loser_learns_the_new_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let a = signer("nurse.station-a");
    let b = signer("nurse.station-b");
    register(&mut c, &server.admin, &a, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &b, "apheresis_nurse", "HOSP-A").await;
    let mut ca = server.client().await;
    let mut cb = server.client().await;
    for round in 0..25 {
        let chain = format!("RACE-{round}");
        let now = celltrail::time::now_nanos();
        let first = signed_at_link(
            &chain,
            0,
            vec![0; 32],
            now,
            "HOSP-A",
            enrolled(),
            &[(&a, Performed)],
        );
        let head0 = EventHash::of_body(&first.body).0.to_vec();
        c.append(first).await.expect("enrol");

        let ev_a = signed_at_link(
            &chain,
            1,
            head0.clone(),
            now,
            "HOSP-A",
            collected(&chain, 200),
            &[(&a, Performed)],
        );
        let ev_b = signed_at_link(
            &chain,
            1,
            head0.clone(),
            now,
            "HOSP-A",
            collected(&chain, 300),
            &[(&b, Performed)],
        );
        let (ha, hb) = (
            EventHash::of_body(&ev_a.body),
            EventHash::of_body(&ev_b.body),
        );
        let (ra, rb) = tokio::join!(ca.append(ev_a), cb.append(ev_b));
        let (winner, loser) = match (ra, rb) {
            (Ok(_), Err(e)) => (ha, e),
            (Err(e), Ok(_)) => (hb, e),
            (ra, rb) => panic!("round {round}: exactly one must win: {ra:?} / {rb:?}"),
        };
        assert_eq!(
            loser.code(),
            Code::AlreadyExists,
            "round {round}: {}",
            loser.message()
        );
        let needle = format!("current head is seq 1 hash {}", winner.to_hex());
        assert!(
            loser.message().contains(&needle),
            "round {round}: {:?} should contain {needle:?}",
            loser.message()
        );
        let chain_now = c
            .get_chain(GetChainRequest {
                chain_id: chain.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(chain_now.entries.len(), 2);
        assert_eq!(chain_now.entries[1].event_hash, winner.0.to_vec());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_on_distinct_chains_lose_nothing_and_leave_no_gaps() {
    let secs: u64 = std::env::var("CELLTRAIL_CONCURRENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.many");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut client = server.client().await;
        let mut app = realproc::Appender::new(format!("MANY-{i:02}"), nurse.clone());
        tasks.push(tokio::spawn(async move {
            app.run(&mut client, until).await;
            app
        }));
    }
    let mut apps = Vec::new();
    for t in tasks {
        apps.push(t.await.unwrap());
    }
    let mut total = 0;
    for app in &apps {
        assert!(
            app.in_flight.is_none(),
            "chain {}: an append went unanswered",
            app.chain
        );
        let chain = celltrail::client::get_whole_chain(&mut c, &app.chain)
            .await
            .unwrap();
        let hashes: Vec<[u8; 32]> = chain
            .entries
            .iter()
            .map(|e| e.event_hash.clone().try_into().unwrap())
            .collect();
        assert_eq!(
            hashes, app.acked,
            "chain {}: exactly the acknowledged events, in order",
            app.chain
        );
        for (seq, e) in chain.entries.iter().enumerate() {
            let entry =
                <celltrail::pb::LogEntry as prost::Message>::decode(e.entry.as_slice()).unwrap();
            let body = <celltrail::pb::EventBody as prost::Message>::decode(entry.body.as_slice())
                .unwrap();
            assert_eq!(body.seq, seq as u64, "chain {} has no gaps", app.chain);
        }
        total += app.acked.len();
    }
    let all = snapshot(&mut c).await;
    assert_eq!(
        all.len(),
        total + 1,
        "the log holds the key registration and every acked event"
    );
    println!(
        "64 clients x {secs}s: {total} events acknowledged, 0 lost, {:.0} appends/s",
        total as f64 / secs as f64
    );
    assert!(
        apps.iter().all(|a| !a.acked.is_empty()),
        "every client got through"
    );
    server.stop().await;
}

/// A server whose verifier takes one signature's worth off the queue at a time while
/// connections compete, a registered nurse `name`, and its writer held busy for 800 ms from
/// 100 ms after the call (the handle ends when the writer is free again).
async fn one_signature_takes_and_a_busy_writer(
    dir: &std::path::Path,
    name: &str,
) -> (
    TestServer,
    celltrail::note::NoteSigner,
    tokio::task::JoinHandle<Result<(), celltrail::ledger::LedgerError>>,
) {
    let server = TestServer::builder(dir)
        .ledger_options(celltrail::ledger::LedgerOptions {
            shared_group_signatures: 1,
            ..Default::default()
        })
        .start()
        .await;
    let mut c = server.client().await;
    let nurse = signer(name);
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let hold = {
        let ledger = server.ledger.clone();
        tokio::spawn(async move {
            ledger
                .at_group_boundary(|| std::thread::sleep(Duration::from_millis(800)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    (server, nurse, hold)
}

/// Small groups the verifier finished while the writer was busy are committed together (one
/// transaction, one fsync, one checkpoint). While several connections have appends queued the
/// verifier cuts a group at a signature budget, here 1 signature: each of its groups holds one
/// connection's event, so without the merge no commit could hold events of two connections.
/// The writer is held for a moment while four connections queue appends; receipts of events from
/// different connections must then share a tree size (the size after their one commit).
#[tokio::test]
async fn small_groups_that_wait_for_the_writer_are_committed_together() {
    use std::collections::{HashMap, HashSet};
    let dir = tempfile::tempdir().unwrap();
    let (server, nurse, hold) =
        one_signature_takes_and_a_busy_writer(dir.path(), "nurse.merge").await;
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let c = server.client().await;
        for i in 0..8 {
            let mut c = c.clone();
            let ev = signed_at_link(
                &format!("MERGE-{conn}-{i}"),
                0,
                vec![0; 32],
                base_time(),
                "HOSP-A",
                enrolled(),
                &[(&nurse, Performed)],
            );
            tasks.push(tokio::spawn(async move {
                (conn, c.append(ev).await.expect("append").into_inner())
            }));
        }
    }
    hold.await.unwrap().unwrap();
    let mut conns_by_size: HashMap<u64, HashSet<usize>> = HashMap::new();
    for t in tasks {
        let (conn, receipt) = t.await.unwrap();
        conns_by_size
            .entry(receipt.tree_size)
            .or_default()
            .insert(conn);
    }
    let commits = conns_by_size.len();
    let merged = conns_by_size.values().filter(|c| c.len() > 1).count();
    println!("32 appends from 4 connections in {commits} commits, {merged} holding several connections' events");
    assert!(
        merged > 0,
        "no commit held events of two connections: {conns_by_size:?}"
    );
    server.stop().await;
}

/// Streamed events of several connections that queue up while the writer is busy commit in a
/// few large groups, not one commit per take of the fair queue (each take here holds one event):
/// with no unary caller waiting, the verifier lets a group grow over several takes. Each commit
/// costs an fsync and, on sled, disk space (BENCHMARKS.md, the 1 M-entry run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streamed_events_of_several_connections_commit_in_few_groups() {
    use std::collections::HashSet;
    let dir = tempfile::tempdir().unwrap();
    let (server, nurse, hold) =
        one_signature_takes_and_a_busy_writer(dir.path(), "nurse.stream-groups").await;
    const PER_STREAM: usize = 40;
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let mut c = server.client().await;
        let events: Vec<_> = (0..PER_STREAM)
            .map(|i| {
                signed_at_link(
                    &format!("STREAMGROUP-{conn}-{i}"),
                    0,
                    vec![0; 32],
                    base_time(),
                    "HOSP-A",
                    enrolled(),
                    &[(&nurse, Performed)],
                )
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut answers = c
                .append_stream(tokio_stream::iter(events))
                .await
                .expect("stream")
                .into_inner();
            let mut sizes = Vec::new();
            while let Some(r) = answers.message().await.expect("answer") {
                assert_eq!(r.code, 0, "{}", r.message);
                sizes.push(r.receipt.expect("receipt").tree_size);
            }
            sizes
        }));
    }
    hold.await.unwrap().unwrap();
    let mut commits = HashSet::new();
    let mut answered = 0;
    for t in tasks {
        let sizes = t.await.unwrap();
        answered += sizes.len();
        commits.extend(sizes);
    }
    assert_eq!(answered, 4 * PER_STREAM);
    println!(
        "{answered} streamed appends from 4 connections in {} commits",
        commits.len()
    );
    assert!(
        commits.len() <= 8,
        "{} commits for {answered} streamed events queued behind a busy writer",
        commits.len()
    );
    server.stop().await;
}
