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
use common::{din_for, register, signed_at_link, signer};
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
    Srv {
        ledger,
        c,
        stop,
        task,
    }
}

impl Srv {
    /// Graceful stop; releases the store so it can be reopened.
    async fn shutdown(self) {
        let Srv {
            ledger,
            c,
            stop,
            task,
        } = self;
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
                din: din_for(&self.chain),
                product_code: "S1234000".into(),
                volume_ml: Some(100 + self.seq as u32),
                collection_end_unix_nanos: Some(now),
            })
        };
        signed_at_link(
            &self.chain,
            self.seq,
            self.prev.clone(),
            now,
            "HOSP-A",
            detail,
            &[(&self.nurse, SignatureMeaning::Performed)],
        )
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
    let mut bag = Bag {
        chain: "DISK-1".into(),
        nurse,
        seq: 0,
        prev: vec![0; 32],
    };
    let e0 = bag.next();
    s.c.append(e0.clone()).await.expect("first event");
    bag.advance(&e0);
    (s, bag)
}

async fn reads_work(c: &mut Client, chain: &str, len: usize) {
    let head = c
        .get_head(GetHeadRequest {
            chain_id: chain.into(),
        })
        .await
        .expect("GetHead while unwritable")
        .into_inner();
    assert_eq!(head.length as usize, len);
    let ch = c
        .get_chain(GetChainRequest {
            chain_id: chain.into(),
        })
        .await
        .expect("GetChain while unwritable")
        .into_inner();
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
    assert!(
        err.message()
            .contains("cannot be written, nothing was recorded"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("no space left"), "{}", err.message());
    assert_eq!(s.ledger.store().tree_size().unwrap(), size);
    reads_work(&mut s.c, "DISK-1", 1).await;

    s.ledger.store().inject_fault(Fault::None);
    let r =
        s.c.append(e1.clone())
            .await
            .expect("space is back")
            .into_inner();
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
    assert!(
        err.message().contains("may or may not be recorded"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("resubmit"), "{}", err.message());
    // Resubmitting while the disk still fails must not be acknowledged (it is not durable).
    let err = s.c.append(e1.clone()).await.expect_err("still failing");
    assert_eq!(err.code(), Code::Unavailable);
    reads_work(&mut s.c, "DISK-1", 2).await; // the applied (unflushed) entry is readable

    s.ledger.store().inject_fault(Fault::None);
    let r =
        s.c.append(e1.clone())
            .await
            .expect("resubmission")
            .into_inner();
    assert!(r.duplicate, "the resubmission finds the recorded event");
    assert_eq!(r.index, size);
    bag.advance(&e1);
    let e2 = bag.next();
    let r2 = s.c.append(e2).await.expect("next event").into_inner();
    assert_eq!(
        r2.index,
        size + 1,
        "the next group must not reuse the index of the applied group"
    );
    assert_eq!(r2.tree_size, size + 2);
    s.shutdown().await;
    let (_, report) = realproc::check_store(dir.path());
    assert_eq!(report.tree_size, size + 2);
}

/// A real full file system: a small tmpfs (needs root and `mount`; skipped otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_full_tmpfs_refuses_appends_keeps_reads_and_recovers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let data = mnt.join("data");
    let (mut s, mut bag) = setup(&data).await;
    // Fill the file system.
    let ballast = mnt.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for _ in 0..2000 {
        let ev = bag.next();
        match s.c.append(ev.clone()).await {
            Ok(_) => bag.advance(&ev),
            Err(e) => {
                refused = Some((ev, e));
                break;
            }
        }
    }
    let (ev, e) = refused.expect("a full disk must refuse appends");
    eprintln!("full tmpfs: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("No space left"), "{}", e.message());
    // Reads keep working (the refused event may be visible: "may or may not be recorded").
    let head =
        s.c.get_head(GetHeadRequest {
            chain_id: "DISK-1".into(),
        })
        .await
        .expect("GetHead on a full disk")
        .into_inner();
    assert!(
        head.length == bag.seq || head.length == bag.seq + 1,
        "{head:?}"
    );
    s.c.get_chain(GetChainRequest {
        chain_id: "DISK-1".into(),
    })
    .await
    .expect("GetChain on a full disk");
    // Space comes back. sled keeps failing after an I/O error until it is reopened, so the
    // ledger keeps refusing (truthfully) until the server restarts; then the resubmission is
    // recorded or found, and appends continue.
    std::fs::remove_file(&ballast).unwrap();
    let still =
        s.c.append(ev.clone())
            .await
            .expect_err("sled stays failed until reopened");
    assert_eq!(still.code(), Code::Unavailable);
    assert!(
        still.message().contains("restart the server"),
        "{}",
        still.message()
    );
    s.shutdown().await;
    let mut s = start(&data).await;
    let r =
        s.c.append(ev.clone())
            .await
            .expect("resubmit after restart")
            .into_inner();
    eprintln!(
        "after freeing space and restarting: index {} duplicate {}",
        r.index, r.duplicate
    );
    bag.advance(&ev);
    let next = bag.next();
    s.c.append(next).await.expect("next append after restart");
    s.shutdown().await;
    realproc::check_store(&data);
    drop(_guard);
}
