//! Admin RPCs are authenticated (issue 16, point 2): `Admin/Backup` answers only a request
//! signed by an operator admin key over a fresh server challenge; one backup runs at a time;
//! a backup whose client stops reading is cancelled after the send timeout.

mod common;

use celltrail::pb::admin_client::AdminClient;
use celltrail::pb::{event_body::Detail, BackupRequest, ChallengeRequest, Deviation, Enrolled};
use celltrail::server::NetOptions;
use common::*;
use prost::Message;
use std::time::Duration;
use tonic::codegen::{http, Bytes};
use tonic::Code;

async fn admin_client(addr: &str) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn nonce(a: &mut AdminClient<tonic::transport::Channel>) -> Vec<u8> {
    a.challenge(ChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .nonce
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_an_admin_signature_over_a_fresh_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.b");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let mut a = admin_client(&server.addr.to_string()).await;

    let denied = |r: Result<_, tonic::Status>, says: &str| {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains(says), "{}", e.message());
        assert!(
            e.message().contains("--admin-key"),
            "says what to do: {}",
            e.message()
        );
    };
    denied(
        a.backup(BackupRequest { auth: None }).await.map(|_| ()),
        "no admin signature",
    );
    // A registered signer is not an operator admin.
    let n = nonce(&mut a).await;
    let auth = celltrail::admin_auth::sign("Backup", &n, &nurse);
    denied(
        a.backup(BackupRequest { auth: Some(auth) })
            .await
            .map(|_| ()),
        "not an operator admin key",
    );
    // Someone else's key under the admin's name.
    let mut impostor = signer("x");
    impostor.name = server.admin.name.clone();
    let n = nonce(&mut a).await;
    let auth = celltrail::admin_auth::sign("Backup", &n, &impostor);
    denied(
        a.backup(BackupRequest { auth: Some(auth) })
            .await
            .map(|_| ()),
        "does not verify",
    );
    // A nonce the server never issued.
    let auth = celltrail::admin_auth::sign("Backup", &[9u8; 32], &server.admin);
    denied(
        a.backup(BackupRequest { auth: Some(auth) })
            .await
            .map(|_| ()),
        "not issued by this server",
    );
    // The admin over a fresh challenge: the backup streams; the same signature twice does not.
    let n = nonce(&mut a).await;
    let auth = celltrail::admin_auth::sign("Backup", &n, &server.admin);
    let mut stream = a
        .backup(BackupRequest {
            auth: Some(auth.clone()),
        })
        .await
        .expect("admin backup")
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.header.is_some());
    while stream.message().await.unwrap().is_some() {}
    denied(
        a.backup(BackupRequest { auth: Some(auth) })
            .await
            .map(|_| ()),
        "already used",
    );
    // The CLI path signs for itself.
    let to = dir.path().join("bk");
    celltrail::backup::backup_to(&server.addr.to_string(), &to, &server.admin)
        .await
        .expect("backup with the admin key");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backup_at_a_time_and_a_stalled_one_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let net = NetOptions {
        backup_send_timeout: Duration::from_secs(1),
        ..NetOptions::default()
    };
    let server = TestServer::builder(dir.path()).net(net).start().await;
    let admin = server.admin.clone();
    let addr = server.addr;
    // A store of ~8 MB, so a backup that is never read fills its queue and waits.
    let mut c = celltrail::client::connect(&addr.to_string()).await.unwrap();
    let nurse = signer("nurse.s");
    let qa = signer("qa.s");
    register(&mut c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &admin, &qa, "qa", "HOSP-A").await;
    let mut ev = signed_at_link(
        "BK-1",
        0,
        vec![0; 32],
        celltrail::time::now_nanos(),
        "HOSP-A",
        Detail::Enrolled(Enrolled {
            coi_ref: "COI-1".into(),
            therapy: "CAR-T".into(),
            manufacturing_site: "MFG-1".into(),
        }),
        &[(&nurse, celltrail::pb::SignatureMeaning::Performed)],
    );
    for seq in 0..150u64 {
        let hash = celltrail::crypto::EventHash::of_body(&ev.body).0.to_vec();
        c.append(ev).await.unwrap();
        ev = signed_at_link(
            "BK-1",
            seq + 1,
            hash,
            celltrail::time::now_nanos(),
            "HOSP-A",
            Detail::Deviation(Deviation {
                deviation_id: format!("D{seq}"),
                description: "y".repeat(50_000),
            }),
            &[(&qa, celltrail::pb::SignatureMeaning::Performed)],
        );
    }

    let mut a = admin_client(&addr.to_string()).await;
    // A raw HTTP/2 client asks for a backup and never reads it.
    let n = nonce(&mut a).await;
    let msg = BackupRequest {
        auth: Some(celltrail::admin_auth::sign("Backup", &n, &admin)),
    }
    .encode_to_vec();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}/celltrail.v1.Admin/Backup"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (stalled, mut body) = send.send_request(req, false).unwrap();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    body.send_data(Bytes::from(framed), true).unwrap();
    let _stalled = stalled.await.expect("the stalled backup started");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let n = nonce(&mut a).await;
    let busy = a
        .backup(BackupRequest {
            auth: Some(celltrail::admin_auth::sign("Backup", &n, &admin)),
        })
        .await
        .expect_err("a second backup while one runs");
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    assert!(
        busy.message().contains("one at a time"),
        "{}",
        busy.message()
    );

    // After the send timeout the stalled backup is cancelled: the next one runs to the end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let to = dir.path().join("bk");
    let (manifest, _) = celltrail::backup::backup_to(&addr.to_string(), &to, &admin)
        .await
        .expect("backup after the stalled one was cancelled");
    assert_eq!(
        manifest.tree_size, 152,
        "2 keys, the enrolment and 149 deviations"
    );
    drop(send);
    conn.abort();
    server.stop().await;
}
