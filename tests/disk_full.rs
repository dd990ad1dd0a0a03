//! A store that cannot be written (disk full, failed fsync): appends fail with a clear
//! `UNAVAILABLE`, reads keep working, nothing is acknowledged that may not be durable, log
//! indices are never reused, and appends work again once the store can be written.
//! Simulated by a storage backend that wraps the real sled store and fails its writes on demand
//! (no test hook in the store itself).

mod common;
mod realproc;

use celltrail::client::Client;
use celltrail::crypto::EventHash;
use celltrail::datadir::DataDir;
use celltrail::pb::{
    event_body::Detail, Collected, Enrolled, GetChainRequest, GetHeadRequest, SignatureMeaning,
    SignedEvent,
};
use celltrail::storage::{Group, Storage, StorageError};
use celltrail::store::Store;
use common::{din_for, register, signed_at_link, signer, TestServer};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tonic::Code;

/// A write failure to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None = 0,
    /// `commit` fails before writing anything, as on a full disk.
    FailWrite = 1,
    /// `commit` applies the group but the flush (fsync) fails, and so does every later flush.
    FailFlush = 2,
}

/// The real sled store behind a switch that makes its writes fail like a full disk or a failed
/// fsync.
struct Faulty {
    inner: Store,
    fault: AtomicU8,
}

impl Faulty {
    fn inject(&self, f: Fault) {
        self.fault.store(f as u8, Ordering::SeqCst);
    }
    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::FailWrite,
            2 => Fault::FailFlush,
            _ => Fault::None,
        }
    }
    fn injected(what: &str) -> StorageError {
        StorageError::Io(format!("{what}: no space left on device (injected fault)"))
    }
}

impl Storage for Faulty {
    fn commit(&self, group: &Group) -> Result<(), StorageError> {
        match self.fault() {
            Fault::FailWrite => Err(Self::injected("write")),
            Fault::FailFlush => {
                self.inner.commit(group)?;
                Err(Self::injected("flush"))
            }
            Fault::None => self.inner.commit(group),
        }
    }
    fn flush(&self) -> Result<(), StorageError> {
        match self.fault() {
            Fault::FailFlush => Err(Self::injected("flush")),
            _ => self.inner.flush(),
        }
    }
    fn tree_size(&self) -> Result<u64, StorageError> {
        self.inner.tree_size()
    }
    fn checkpoint(&self) -> Result<Option<String>, StorageError> {
        self.inner.checkpoint()
    }
    fn head(&self, chain_id: &str) -> Result<Option<celltrail::rules::Head>, StorageError> {
        self.inner.head(chain_id)
    }
    fn chain_ids(&self) -> Result<Vec<String>, StorageError> {
        self.inner.chain_ids()
    }
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.entry(index)
    }
    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.inner.entries_from(start, limit)
    }
    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError> {
        self.inner.chain_event(chain_id, seq)
    }
    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError> {
        self.inner.chain_indices(chain_id)
    }
    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError> {
        self.inner.index_of_hash(hash)
    }
    fn chains_of_bag(&self, bag: &str) -> Result<Vec<String>, StorageError> {
        self.inner.chains_of_bag(bag)
    }
    fn bag_in_chain(&self, bag: &str, chain_id: &str) -> Result<bool, StorageError> {
        self.inner.bag_in_chain(bag, chain_id)
    }
    fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StorageError> {
        self.inner.node(level, index)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.meta(key)
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.inner.size_on_disk()
    }
}

struct Srv {
    store: Arc<Faulty>,
    server: TestServer,
    c: Client,
}

/// A server whose storage is the sled store of `dir` behind the fault switch.
async fn start(dir: &std::path::Path) -> Srv {
    let store = Arc::new(Faulty {
        inner: Store::open(&DataDir::new(dir).db()).unwrap(),
        fault: AtomicU8::new(0),
    });
    let server = TestServer::builder(dir)
        .storage(store.clone())
        .start()
        .await;
    let c = server.client().await;
    Srv { store, server, c }
}

impl Srv {
    /// Graceful stop; releases the store so it can be reopened.
    async fn shutdown(self) {
        let Srv { store, server, c } = self;
        drop(c);
        server.stop().await;
        drop(store);
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
            ..Default::default()
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
    let size = s.store.tree_size().unwrap();

    s.store.inject(Fault::FailWrite);
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
    assert_eq!(s.store.tree_size().unwrap(), size);
    reads_work(&mut s.c, "DISK-1", 1).await;

    s.store.inject(Fault::None);
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
    let size = s.store.tree_size().unwrap();

    s.store.inject(Fault::FailFlush);
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

    s.store.inject(Fault::None);
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
        ..Default::default()
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
