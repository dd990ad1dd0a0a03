//! A store that cannot be written (disk full, failed fsync): appends fail with a clear
//! `UNAVAILABLE`, reads keep working, nothing is acknowledged that may not be durable, log
//! indices are never reused, and appends work again once the store can be written.
//! Simulated with the store's fault-injection hook.

mod common;
mod realproc;

use celltrail::client::Client;
use celltrail::crypto::EventHash;
use celltrail::ledger::Ledger;
use celltrail::pb::{
    event_body::Detail, Collected, Enrolled, GetChainRequest, GetHeadRequest, SignatureMeaning,
    SignedEvent,
};
use celltrail::server::{open, run, ServeOptions};
use celltrail::store::Fault;
use common::{register, signed_at_link, signer};
use std::sync::Arc;
use tonic::Code;

struct Srv {
    ledger: Arc<Ledger>,
    c: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &std::path::Path) -> Srv {
    let opened = open(&ServeOptions::new(dir)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let ledger = opened.ledger.clone();
    let task = tokio::spawn(run(listener, opened.ledger, async {
        let _ = rx.await;
    }));
    let c = celltrail::client::connect(&addr.to_string()).await.unwrap();
    Srv { ledger, c, stop, task }
}

impl Srv {
    /// Graceful stop; releases the store so it can be reopened.
    async fn shutdown(self) {
        let Srv { ledger, c, stop, task } = self;
        drop(c);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
        drop(ledger);
    }
}

/// A chain of `enrolled` then `collected` events by one nurse, built link by link.
struct Bag {
    chain: String,
    nurse: celltrail::note::NoteSigner,
    seq: u64,
    prev: Vec<u8>,
}

impl Bag {
    fn next(&self) -> SignedEvent {
        let now = celltrail::time::now_nanos();
        let detail = if self.seq == 0 {
            Detail::Enrolled(Enrolled {
                coi_ref: "COI-7F3A-2291".into(),
                therapy: "CAR-T anti-CD19".into(),
                manufacturing_site: "MFG-1".into(),
            })
        } else {
            Detail::Collected(Collected {
                din: "A999926123456".into(),
                product_code: "S1234000".into(),
                volume_ml: 100 + self.seq as u32,
                collection_end_unix_nanos: now,
            })
        };
        signed_at_link(&self.chain, self.seq, self.prev.clone(), now, "HOSP-A", detail, &[(&self.nurse, SignatureMeaning::Performed)])
    }
    fn advance(&mut self, ev: &SignedEvent) {
        self.seq += 1;
        self.prev = EventHash::of_body(&ev.body).0.to_vec();
    }
}

async fn setup(dir: &std::path::Path) -> (Srv, Bag) {
    let mut s = start(dir).await;
    let admin = realproc::admin_key(dir);
    let nurse = signer("nurse.disk");
    register(&mut s.c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let mut bag = Bag { chain: "DISK-1".into(), nurse, seq: 0, prev: vec![0; 32] };
    let e0 = bag.next();
    s.c.append(e0.clone()).await.expect("first event");
    bag.advance(&e0);
    (s, bag)
}

async fn reads_work(c: &mut Client, chain: &str, len: usize) {
    let head = c.get_head(GetHeadRequest { chain_id: chain.into() }).await.expect("GetHead while unwritable").into_inner();
    assert_eq!(head.length as usize, len);
    let ch = c.get_chain(GetChainRequest { chain_id: chain.into() }).await.expect("GetChain while unwritable").into_inner();
    assert_eq!(ch.entries.len(), len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_appends_clearly_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, mut bag) = setup(dir.path()).await;
    let size = s.ledger.store().tree_size().unwrap();

    s.ledger.store().inject_fault(Fault::FailWrite);
    let e1 = bag.next();
    let err = s.c.append(e1.clone()).await.expect_err("disk full");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("cannot be written, nothing was recorded"), "{}", err.message());
    assert!(err.message().contains("no space left"), "{}", err.message());
    assert_eq!(s.ledger.store().tree_size().unwrap(), size);
    reads_work(&mut s.c, "DISK-1", 1).await;

    s.ledger.store().inject_fault(Fault::None);
    let r = s.c.append(e1.clone()).await.expect("space is back").into_inner();
    assert!(!r.duplicate);
    assert_eq!(r.index, size);
    bag.advance(&e1);
    let e2 = bag.next();
    assert_eq!(s.c.append(e2).await.unwrap().into_inner().index, size + 1);
    s.shutdown().await;
    realproc::check_store(dir.path());
}

/// The group's transaction applied but its fsync failed: the caller is told the truth (may or
/// may not be recorded; resubmit), nothing is acknowledged until a flush succeeds, and the next
/// group continues after the applied entries instead of overwriting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_flush_is_reported_as_uncertain_and_never_reuses_log_indices() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, mut bag) = setup(dir.path()).await;
    let size = s.ledger.store().tree_size().unwrap();

    s.ledger.store().inject_fault(Fault::FailFlush);
    let e1 = bag.next();
    let err = s.c.append(e1.clone()).await.expect_err("fsync failed");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("may or may not be recorded"), "{}", err.message());
    assert!(err.message().contains("resubmit"), "{}", err.message());
    // Resubmitting while the disk still fails must not be acknowledged (it is not durable).
    let err = s.c.append(e1.clone()).await.expect_err("still failing");
    assert_eq!(err.code(), Code::Unavailable);
    reads_work(&mut s.c, "DISK-1", 2).await; // the applied (unflushed) entry is readable

    s.ledger.store().inject_fault(Fault::None);
    let r = s.c.append(e1.clone()).await.expect("resubmission").into_inner();
    assert!(r.duplicate, "the resubmission finds the recorded event");
    assert_eq!(r.index, size);
    bag.advance(&e1);
    let e2 = bag.next();
    let r2 = s.c.append(e2).await.expect("next event").into_inner();
    assert_eq!(r2.index, size + 1, "the next group must not reuse the index of the applied group");
    assert_eq!(r2.tree_size, size + 2);
    s.shutdown().await;
    let (_, report) = realproc::check_store(dir.path());
    assert_eq!(report.tree_size, size + 2);
}
