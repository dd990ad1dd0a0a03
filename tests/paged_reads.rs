//! Paged, bounded reads (issue 16, point 5): `GetChain` answers at most a page of entries and
//! about 1 MiB per response with a page token; the CLI pages transparently; readers that never
//! read cannot make the server hold a whole long chain per request.

mod common;
mod realproc;

use celltrail::client::get_whole_chain;
use celltrail::pb::{
    event_body::Detail, Deviation, Enrolled, GetChainRequest, SignatureMeaning::Performed,
};
use common::*;
use prost::Message;
use std::time::Duration;
use tonic::codegen::{http, Bytes};
use tonic::Code;

/// Appends an enrolment and `n` deviations of `size` bytes of description to `chain`.
async fn long_chain(
    c: &mut celltrail::client::Client,
    admin: &celltrail::note::NoteSigner,
    chain: &str,
    n: usize,
    size: usize,
) {
    let nurse = signer("nurse.p");
    let qa = signer("qa.p");
    register(c, admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(c, admin, &qa, "qa", "HOSP-A").await;
    let mut ev = signed_at_link(
        chain,
        0,
        vec![0; 32],
        celltrail::time::now_nanos(),
        "HOSP-A",
        Detail::Enrolled(Enrolled {
            coi_ref: "COI-1".into(),
            therapy: "CAR-T".into(),
            manufacturing_site: "MFG-1".into(),
        }),
        &[(&nurse, Performed)],
    );
    for seq in 0..=n as u64 {
        let hash = celltrail::crypto::EventHash::of_body(&ev.body).0.to_vec();
        c.append(ev).await.expect("append");
        ev = signed_at_link(
            chain,
            seq + 1,
            hash,
            celltrail::time::now_nanos(),
            "HOSP-A",
            Detail::Deviation(Deviation {
                deviation_id: format!("DEV-{seq}"),
                description: "x".repeat(size),
            }),
            &[(&qa, Performed)],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_chain_answers_in_pages_and_clients_page_transparently() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    long_chain(&mut c, &server.admin, "PAGED-1", 40, 50_000).await;

    let first = c
        .get_chain(GetChainRequest {
            chain_id: "PAGED-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bytes: usize = first.entries.iter().map(|e| e.entry.len()).sum();
    assert!(
        bytes <= celltrail::api::MAX_PAGE_BYTES && !first.entries.is_empty(),
        "a page holds at most ~1 MiB ({} entries, {bytes} bytes)",
        first.entries.len()
    );
    assert!(first.entries.len() < 41 && !first.next_page_token.is_empty());
    assert_eq!(first.head.as_ref().unwrap().length, 41);

    let small = c
        .get_chain(GetChainRequest {
            chain_id: "PAGED-1".into(),
            page_token: first.next_page_token.clone(),
            page_size: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.entries.len(), 3);
    let next_seq: u64 = first.next_page_token.parse().unwrap();
    assert_eq!(next_seq as usize, first.entries.len());

    let whole = get_whole_chain(&mut c, "PAGED-1").await.unwrap();
    assert_eq!(whole.entries.len(), 41);
    for (i, e) in whole.entries.iter().enumerate() {
        let entry = celltrail::pb::LogEntry::decode(e.entry.as_slice()).unwrap();
        let body = celltrail::pb::EventBody::decode(entry.body.as_slice()).unwrap();
        assert_eq!(body.seq, i as u64, "pages join in seq order");
    }

    let bad = c
        .get_chain(GetChainRequest {
            chain_id: "PAGED-1".into(),
            page_token: "not-a-token".into(),
            page_size: 0,
        })
        .await
        .expect_err("a made-up token");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("next_page_token"),
        "{}",
        bad.message()
    );

    // `celltrail chain` prints every event of the chain, across pages.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(["chain", "--server", &server.addr.to_string(), "PAGED-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("41 events"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("40 ")), "{text}");
    server.stop().await;
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_hold_a_page_each_not_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = realproc::Proc::start(dir.path(), &[]).await;
    let mut c = p.client().await;
    let admin = realproc::admin_key(dir.path());
    // A 13 MB chain: 220 events of 60 KB.
    long_chain(&mut c, &admin, "BIG-1", 220, 60_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(p.child.id());

    // 16 GetChain requests on raw HTTP/2 connections whose response bodies are never read
    // (no flow-control window is ever returned).
    let mut held = Vec::new();
    let addr = p.addr.clone();
    for _ in 0..16 {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        let req = http::Request::post(format!("http://{addr}/celltrail.v1.Ledger/GetChain"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        let msg = GetChainRequest {
            chain_id: "BIG-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        body.send_data(Bytes::from(framed), true).unwrap();
        held.push((send, resp, conn));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kb(p.child.id());
    let growth_mb = during.saturating_sub(before) / 1024;
    eprintln!(
        "server RSS {before} kB before, {during} kB with 16 stalled readers (+{growth_mb} MB)"
    );
    // Unpaged, each request would hold the whole 13 MB chain (twice: entries and the encoded
    // message): over 400 MB. Paged, a page of ~1 MiB each.
    assert!(
        growth_mb < 64,
        "RSS grew by {growth_mb} MB with 16 readers that never read"
    );
    drop(held);
}
