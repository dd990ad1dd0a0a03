//! Standby refusals and clients that fail over, through the real gRPC server: a standby
//! answers appends with UNAVAILABLE naming the writer (and records nothing); a client given
//! several servers finds the writer, remembers it, and resends the same signed bytes.
mod common;

use celltrail::failover::{self, Servers};
use celltrail::pb::{event_body::Detail, Enrolled, SignatureMeaning};
use celltrail::role::Role;
use celltrail::server::ServeOptions;
use common::TestServer;
use std::sync::Arc;

fn enrolled(signer: &celltrail::note::NoteSigner, chain: &str) -> celltrail::pb::SignedEvent {
    common::signed_at_link(
        chain,
        0,
        vec![0; 32],
        common::base_time(),
        "SITE-A",
        Detail::Enrolled(Enrolled {
            coi_ref: "COI-TEST-0001".into(),
            ..Default::default()
        }),
        &[(signer, SignatureMeaning::Performed)],
    )
}

#[tokio::test]
async fn a_standby_refuses_appends_naming_the_writer_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let role = Arc::new(Role::standby());
    role.set_writer_address(Some("10.1.2.3:50051".into()));
    let mut opts = ServeOptions::new(dir.path());
    opts.ledger.role = Some(role.clone());
    let srv = TestServer::start_with(opts).await;
    let mut c = srv.client().await;
    let ev = enrolled(&srv.admin, "keys");
    let err = c.append(ev.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("standby"), "{}", err.message());
    assert!(
        err.message().contains("10.1.2.3:50051"),
        "{}",
        err.message()
    );
    assert_eq!(
        failover::writer_hint(&err).as_deref(),
        Some("10.1.2.3:50051")
    );
    assert!(
        common::snapshot(&mut c).await.is_empty(),
        "nothing recorded"
    );

    // Nobody holds the lease: the refusal says to retry, with no address.
    role.step_down(None);
    let err = c.append(ev.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("retry shortly"), "{}", err.message());
    assert_eq!(failover::writer_hint(&err), None);

    // Once it holds the lease it writes.
    role.become_writer(1, &srv.addr.to_string());
    let nurse = common::signer("nurse.failover");
    let r = common::register(&mut c, &srv.admin, &nurse, "apheresis_nurse", "SITE-A").await;
    assert_eq!(r.index, 0);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_given_several_servers_finds_the_writer_and_remembers_it() {
    // The writer: an ordinary server. The standby in front of it names it.
    let wdir = tempfile::tempdir().unwrap();
    let writer = TestServer::start(wdir.path()).await;
    let sdir = tempfile::tempdir().unwrap();
    let role = Arc::new(Role::standby());
    role.set_writer_address(Some(writer.addr.to_string()));
    let mut opts = ServeOptions::new(sdir.path());
    opts.ledger.role = Some(role);
    let standby = TestServer::start_with(opts).await;
    // A third address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let spec = format!("{dead},{},{}", standby.addr, writer.addr);
    let servers = Servers::new(&spec, Default::default()).unwrap();
    let nurse = common::signer("nurse.failover");
    let reg = common::signed_at_link(
        "keys",
        0,
        vec![0; 32],
        celltrail::time::now_nanos(),
        "",
        Detail::KeyRegistered(celltrail::pb::KeyRegistered {
            key_id: nurse.name.clone(),
            public_key: nurse.key.verifying_key().as_bytes().to_vec(),
            printed_name: "Nurse (test)".into(),
            role: "apheresis_nurse".into(),
            site: "SITE-A".into(),
            valid_from_unix_nanos: common::base_time() - 86_400_000_000_000,
            valid_until_unix_nanos: 0,
        }),
        &[(&writer.admin, SignatureMeaning::Performed)],
    );
    let r = servers.append(&reg).await.expect("reaches the writer");
    assert!(!r.duplicate);
    assert_eq!(failover::remembered_writer(), Some(writer.addr.to_string()));
    assert_eq!(failover::ordered(&servers.list)[0], writer.addr.to_string());
    // The same signed bytes again (an answer lost in a failover): the original receipt.
    let again = servers.append(&reg).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.index, r.index);
    // Only the writer recorded anything.
    let mut sc = standby.client().await;
    assert!(common::snapshot(&mut sc).await.is_empty());
    let mut wc = writer.client().await;
    assert_eq!(common::snapshot(&mut wc).await.len(), 1);

    // Every server down or a standby: the last refusal comes back, not a hang.
    let only = Servers::new(&format!("{dead},{}", standby.addr), Default::default()).unwrap();
    let err = only.append(&enrolled(&nurse, "BAG-1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    standby.stop().await;
    writer.stop().await;
}
