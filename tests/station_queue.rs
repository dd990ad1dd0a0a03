//! `celltrail queue list / discard / show`: an operator sees what the server refused, takes it
//! out of the queue with a reason, and nothing is lost: the discarded event is kept, exactly as
//! signed, and never sent. Real server, real station binary, a real conflict.

mod common;
mod station_support;

use celltrail::pb::{EventBody, SignedEvent};
use common::*;
use prost::Message;
use serde_json::Value;
use station_support::*;
use std::path::Path;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn json(o: &std::process::Output) -> Value {
    let out = expect(o, 0, "{");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn collect_args(nurse: &str, chain: &str, n: u32) -> Vec<String> {
    let (bag, _) = din(n);
    [
        "--key",
        nurse,
        "--site",
        "HOSP-A",
        "--yes",
        "--event",
        "collected",
        "--chain",
        chain,
        "--scan",
        &bag,
        "--set",
        "volume_ml=10",
        "--set",
        &collection_end_now(),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicted_events_are_listed_discarded_with_reason_kept_and_never_sent() {
    let mut site = site_with_nurse().await;
    let addr = site.server.addr;
    let queue = site.dir.path().join("q");
    let qdir = s(&queue);
    let other_queue = site.dir.path().join("other-station");
    let nurse = s(&site.nurse);
    let (bag, chain) = din(7);
    let (wrist, _) = coi("PAT777");
    let enrol = scan_enrolment(addr, &queue, &nurse, &bag, &wrist).await;
    expect(&enrol, 0, "ACCEPTED");
    let data_dir = site.server.data_dir.clone();
    site.server.stop().await;

    // Offline: seq 1 and seq 2 of the chain are signed and queued on this station.
    let a1 = collect_args(&nurse, &chain, 8);
    expect(
        &scan(addr, &queue, &strs(&a1)).await,
        3,
        "QUEUED (1 waiting)",
    );
    let a2 = collect_args(&nurse, &chain, 10);
    expect(
        &scan(addr, &queue, &strs(&a2)).await,
        3,
        "QUEUED (2 waiting)",
    );

    // Both wait; the list says so before anything was refused.
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(
        listed["summary"],
        serde_json::json!({"waiting": 2, "conflicted": 0, "rejected": 0})
    );

    // Meanwhile another station records seq 1 on the same chain.
    site.server = TestServer::start_on(celltrail::server::ServeOptions::new(&data_dir), addr).await;
    let b = collect_args(&nurse, &chain, 9);
    expect(&scan(addr, &other_queue, &strs(&b)).await, 0, "ACCEPTED");
    let mut c = site.server.client().await;
    let before = snapshot(&mut c).await;

    let drained = scan(addr, &queue, &["--drain"]).await;
    let text = expect(&drained, 1, "CONFLICT");
    assert!(
        text.contains(&format!("celltrail queue list --queue {qdir}")),
        "the station points the operator at `queue list`:\n{text}"
    );
    assert_eq!(snapshot(&mut c).await, before, "nothing appended");

    // queue list, text.
    let out = queue_cli(&["list", "--queue", &qdir]).await;
    let text = expect(&out, 0, "0 waiting, 2 conflicted, 0 rejected");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r.contains(" CONFLICT ")), "{text}");
    assert!(text.contains(&chain), "{text}");
    assert!(text.contains("nurse.ada (performed)"), "{text}");
    assert!(text.contains("reason: "), "{text}");
    assert!(
        text.contains("celltrail queue discard ID --reason"),
        "{text}"
    );

    // queue list --json.
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(listed["queue"], qdir.as_str());
    assert_eq!(
        listed["summary"],
        serde_json::json!({"waiting": 0, "conflicted": 2, "rejected": 0})
    );
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed:#}");
    let (first, second) = (&entries[0], &entries[1]);
    let id1 = first["id"].as_u64().unwrap();
    let id2 = second["id"].as_u64().unwrap();
    assert!(id1 < id2);
    for (e, seq) in [(first, 1), (second, 2)] {
        assert_eq!(e["chain_id"], chain.as_str());
        assert_eq!(e["seq"], seq);
        assert_eq!(e["kind"], "collected");
        assert_eq!(e["status"], "conflict");
        assert_eq!(e["signers"][0]["key_id"], "nurse.ada");
        assert_eq!(e["signers"][0]["meaning"], "performed");
        let at = e["signed_at"].as_str().unwrap();
        let nanos = celltrail::time::parse_rfc3339(at).unwrap();
        assert_eq!(Some(nanos), e["signed_at_unix_nanos"].as_i64());
        assert!(at.ends_with('Z'), "UTC: {at}");
    }
    let reason1 = first["reason"].as_str().unwrap().to_string();
    assert!(!reason1.is_empty(), "the server's reason is shown");
    assert!(
        text.contains(&reason1),
        "text shows the same reason:\n{text}"
    );
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("follows queued event #{id1}")),
        "{second:#}"
    );

    // Discard both (the first one names the second, which still blocks the chain).
    let reason = "recorded again by the pharmacy after the chain moved";
    let out = queue_cli(&[
        "discard",
        &id1.to_string(),
        "--reason",
        reason,
        "--queue",
        &qdir,
    ])
    .await;
    let text = expect(&out, 0, &format!("DISCARDED #{id1}"));
    assert!(text.contains(&format!("#{id2}")), "{text}");
    let out = queue_cli(&[
        "discard",
        &format!("#{id2}"),
        "--reason",
        "follows the discarded event",
        "--queue",
        &qdir,
    ])
    .await;
    expect(&out, 0, &format!("DISCARDED #{id2}"));

    // The pending list is empty ...
    let text = expect(
        &queue_cli(&["list", "--queue", &qdir]).await,
        0,
        "0 waiting, 0 conflicted, 0 rejected",
    );
    assert!(text.contains("is empty"), "{text}");
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(listed["entries"].as_array().unwrap().len(), 0);

    // ... and both are kept under --discarded, with the reason, the refusal and the exact bytes.
    let gone = json(&queue_cli(&["list", "--discarded", "--queue", &qdir, "--json"]).await);
    let gone = gone["discarded"].as_array().unwrap().clone();
    assert_eq!(gone.len(), 2);
    assert_eq!(gone[0]["id"].as_u64(), Some(id1));
    assert_eq!(gone[0]["discard_reason"], reason);
    assert_eq!(gone[0]["status"], "conflict");
    assert_eq!(gone[0]["reason"], reason1.as_str(), "server's reason kept");
    assert!(celltrail::time::parse_rfc3339(gone[0]["discarded_at"].as_str().unwrap()).is_ok());
    let bytes = hex::decode(gone[0]["signed_event_hex"].as_str().unwrap()).unwrap();
    let ev = SignedEvent::decode(bytes.as_slice()).unwrap();
    let body = EventBody::decode(ev.body.as_slice()).unwrap();
    assert_eq!((body.chain_id.as_str(), body.seq), (chain.as_str(), 1));
    assert_eq!(
        hex::encode(celltrail::crypto::EventHash::of_body(&ev.body).0),
        gone[0]["event_hash"].as_str().unwrap(),
        "the kept bytes are the event that was signed"
    );
    let text = expect(
        &queue_cli(&["list", "--discarded", "--queue", &qdir]).await,
        0,
        reason,
    );
    assert!(text.contains("2 discarded"), "{text}");
    assert!(text.contains("was CONFLICT"), "{text}");

    // queue show works for a discarded entry.
    let text = expect(
        &queue_cli(&["show", &id1.to_string(), "--queue", &qdir]).await,
        0,
        "DISCARDED, CONFLICT",
    );
    // Signatures as Part 11 §11.50 shows them (names from the registry the station last saw),
    // and the detail's fields by name, never a Rust Debug struct.
    assert!(
        text.contains("signed by    nurse.ada (test) (nurse.ada; apheresis_nurse at HOSP-A) PERFORMED (did the step) 20"),
        "{text}"
    );
    assert!(
        text.contains(" UTC (") && text.contains(" local, UTC"),
        "{text}"
    );
    assert!(text.contains("collected"), "{text}");
    assert!(!text.contains("Collected {"), "{text}");
    assert!(!text.contains("unix_nanos"), "{text}");

    // The ledger is unchanged, and a later drain sends nothing.
    assert_eq!(
        snapshot(&mut c).await,
        before,
        "discarding touches no ledger"
    );
    let again = scan(addr, &queue, &["--drain"]).await;
    let text = expect(&again, 0, "QUEUE EMPTY");
    assert!(!text.contains("SENT"), "{text}");
    assert_eq!(snapshot(&mut c).await, before);
    let (_, d9) = din(9);
    assert_eq!(collected_dins(&chain_events(&mut c, &chain).await), [d9]);

    // The chain is no longer blocked on this station: the event can be recorded again.
    let again = collect_args(&nurse, &chain, 8);
    expect(&scan(addr, &queue, &strs(&again)).await, 0, "ACCEPTED");
    let (_, d8) = din(8);
    let (_, d9) = din(9);
    assert_eq!(
        collected_dins(&chain_events(&mut c, &chain).await),
        [d9, d8]
    );
}

/// A free loopback address with nothing listening on it.
async fn nobody_listening() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_refuse_bad_input_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    let nurse = key_file(dir.path(), &signer("nurse.ada"));
    let queue = dir.path().join("q");
    let qdir = s(&queue);
    let addr = nobody_listening().await;
    // An enrolment starts a chain, so it can be signed and queued with no server at all.
    let (bag, _) = din(5);
    let (wrist, _) = coi("PAT005");
    let o = scan_enrolment(addr, &queue, &s(&nurse), &bag, &wrist).await;
    expect(&o, 3, "QUEUED (1 waiting)");
    let text = expect(
        &queue_cli(&["list", "--queue", &qdir]).await,
        0,
        "1 waiting, 0 conflicted, 0 rejected",
    );
    assert!(text.contains("WAITING"), "{text}");
    assert!(
        !text.contains("reason:"),
        "a waiting entry has no reason:\n{text}"
    );
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    let id = listed["entries"][0]["id"].as_u64().unwrap();
    assert_eq!(listed["entries"][0]["status"], "waiting");
    assert_eq!(listed["entries"][0]["reason"], Value::Null);
    let id_s = id.to_string();

    let text = expect(
        &queue_cli(&["show", &format!("#{id}"), "--queue", &qdir]).await,
        0,
        &format!("Queue entry #{id}: QUEUED, WAITING"),
    );
    assert!(text.contains("manufacturing site       MFG-1"), "{text}");
    // Queued while offline by a station that never saw the key registry: the key id, said so.
    assert!(
        text.contains("signed by    nurse.ada (not in the key registry known here) PERFORMED"),
        "{text}"
    );

    // A WAITING entry was refused by nobody: it cannot be discarded.
    let o = queue_cli(&["discard", &id_s, "--reason", "not needed", "--queue", &qdir]).await;
    expect_err(&o, 1, &format!("queue entry #{id} ("));
    assert!(stderr(&o).contains("is WAITING"), "{}", stderr(&o));

    // Unknown id.
    let o = queue_cli(&["discard", "424242", "--reason", "x", "--queue", &qdir]).await;
    expect_err(
        &o,
        1,
        "no queue entry #424242 in this queue: see `celltrail queue list`",
    );
    let o = queue_cli(&["show", "424242", "--queue", &qdir]).await;
    expect_err(&o, 1, "no queue entry #424242");

    // Empty and missing reason.
    let o = queue_cli(&["discard", &id_s, "--reason", "  ", "--queue", &qdir]).await;
    expect_err(&o, 1, "--reason is empty");
    let o = queue_cli(&["discard", &id_s, "--queue", &qdir]).await;
    expect_err(&o, 2, "--reason <REASON>");

    // Not an id.
    let o = queue_cli(&["discard", "first", "--reason", "x", "--queue", &qdir]).await;
    expect_err(&o, 2, "\"first\" is not a queue entry id");

    // Nothing of that was discarded or lost.
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(listed["entries"][0]["id"].as_u64(), Some(id));
    let text = expect(
        &queue_cli(&["list", "--discarded", "--queue", &qdir]).await,
        0,
        "0 discarded",
    );
    assert!(text.contains("Nothing was ever discarded"), "{text}");

    // A queue a running station holds open is named as such (sled allows one process).
    let held = celltrail::station::Queue::open(&queue).unwrap();
    let o = queue_cli(&["list", "--queue", &qdir]).await;
    expect_err(&o, 1, "is another station running on it?");
    drop(held);

    // A queue directory that does not exist is named, and not created.
    let missing = dir.path().join("no-such-station");
    for args in [
        vec!["list", "--queue", missing.to_str().unwrap()],
        vec!["list", "--json", "--queue", missing.to_str().unwrap()],
        vec![
            "discard",
            "1",
            "--reason",
            "x",
            "--queue",
            missing.to_str().unwrap(),
        ],
    ] {
        let o = queue_cli(&args).await;
        let err = expect_err(&o, 1, "the directory does not exist");
        assert!(err.contains(missing.to_str().unwrap()), "{err}");
        assert!(o.stdout.is_empty(), "nothing on stdout for {args:?}");
        assert!(
            !missing.exists(),
            "`queue {}` created the directory",
            args[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_is_listed_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q");
    drop(celltrail::station::Queue::open(&queue).unwrap());
    let qdir = s(&queue);
    let text = expect(
        &queue_cli(&["list", "--queue", &qdir]).await,
        0,
        "0 waiting, 0 conflicted, 0 rejected",
    );
    assert!(
        text.contains(&format!("Station queue {qdir} is empty")),
        "{text}"
    );
    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(listed["entries"], serde_json::json!([]));
    assert_eq!(
        listed["summary"],
        serde_json::json!({"waiting": 0, "conflicted": 0, "rejected": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_event_is_listed_with_the_servers_reason_and_can_be_discarded() {
    let site = site_with_nurse().await;
    let queue = site.dir.path().join("q");
    let qdir = s(&queue);
    // A key the server never registered signs an enrolment offline.
    let eve = key_file(site.dir.path(), &signer("nurse.eve"));
    let (bag, chain) = din(31);
    let (wrist, _) = coi("PAT031");
    let o = scan_enrolment(nobody_listening().await, &queue, &s(&eve), &bag, &wrist).await;
    expect(&o, 3, "QUEUED (1 waiting)");
    let mut c = site.server.client().await;
    let before = snapshot(&mut c).await;
    let drained = scan(site.server.addr, &queue, &["--drain"]).await;
    expect(&drained, 1, "REJECTED");

    let listed = json(&queue_cli(&["list", "--queue", &qdir, "--json"]).await);
    assert_eq!(
        listed["summary"],
        serde_json::json!({"waiting": 0, "conflicted": 0, "rejected": 1})
    );
    let e = &listed["entries"][0];
    assert_eq!(e["status"], "rejected");
    assert_eq!(e["chain_id"], chain.as_str());
    assert_eq!(e["signers"][0]["key_id"], "nurse.eve");
    let why = e["reason"].as_str().unwrap();
    assert!(why.contains("nurse.eve"), "the server names the key: {why}");
    let text = expect(
        &queue_cli(&["list", "--queue", &qdir]).await,
        0,
        "0 waiting, 0 conflicted, 1 rejected",
    );
    assert!(text.contains(why), "{text}");

    let id = e["id"].as_u64().unwrap().to_string();
    let out = queue_cli(&[
        "discard",
        &id,
        "--reason",
        "signed with an unregistered key; re-recorded by nurse.ada",
        "--queue",
        &qdir,
    ])
    .await;
    expect(&out, 0, "was REJECTED");
    let text = expect(
        &queue_cli(&["list", "--discarded", "--queue", &qdir]).await,
        0,
        "was REJECTED: ",
    );
    assert!(text.contains("re-recorded by nurse.ada"), "{text}");
    let text = expect(
        &scan(site.server.addr, &queue, &["--drain"]).await,
        0,
        "QUEUE EMPTY",
    );
    assert!(!text.contains("SENT"), "{text}");
    assert_eq!(snapshot(&mut c).await, before, "nothing recorded");
}
