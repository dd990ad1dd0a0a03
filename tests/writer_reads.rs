//! What the writer reads from its store per event. With the PostgreSQL store every read is a
//! round trip to the database, and reads per event, not the group commit, bounded its
//! throughput (issue 18: three point queries per event). The writer keeps the committed state
//! its checks need in memory, so a new event on a chain it has written reads nothing; the
//! store answers only what the writer has not seen yet (after a start), and resubmissions.
//!
//! The store here is the real one (sled, or PostgreSQL with `CELLTRAIL_TEST_STORE=postgres`),
//! wrapped to count the calls the ledger makes on it.

mod common;

use celltrail::crypto::EventHash;
use celltrail::pb::{
    event_body::Detail, Collected, Enrolled, SignatureMeaning::Performed, SignedEvent,
};
use celltrail::rules::Head;
use celltrail::storage::{Cut, Group, Hash, Storage, StorageError};
use celltrail::summary::ChainSummary;
use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A real store that counts the calls made on it, by method.
struct Counting {
    inner: Arc<dyn Storage>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Counting {
    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// The calls since the last `take`, by method.
    fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Storage for Counting {
    fn commit(&self, group: &Group) -> Result<(), StorageError> {
        self.count("commit");
        self.inner.commit(group)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.count("flush");
        self.inner.flush()
    }
    fn tree_size(&self) -> Result<u64, StorageError> {
        self.count("tree_size");
        self.inner.tree_size()
    }
    fn checkpoint(&self) -> Result<Option<String>, StorageError> {
        self.count("checkpoint");
        self.inner.checkpoint()
    }
    fn cut(&self) -> Result<Cut, StorageError> {
        self.count("cut");
        self.inner.cut()
    }
    fn head(&self, chain_id: &str) -> Result<Option<Head>, StorageError> {
        self.count("head");
        self.inner.head(chain_id)
    }
    fn chain_ids(&self) -> Result<Vec<String>, StorageError> {
        self.count("chain_ids");
        self.inner.chain_ids()
    }
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.count("entry");
        self.inner.entry(index)
    }
    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.count("entries_from");
        self.inner.entries_from(start, limit)
    }
    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError> {
        self.count("chain_event");
        self.inner.chain_event(chain_id, seq)
    }
    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError> {
        self.count("chain_indices");
        self.inner.chain_indices(chain_id)
    }
    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError> {
        self.count("index_of_hash");
        self.inner.index_of_hash(hash)
    }
    fn chains_of_bag(&self, bag: &str) -> Result<Vec<String>, StorageError> {
        self.count("chains_of_bag");
        self.inner.chains_of_bag(bag)
    }
    fn bag_in_chain(&self, bag: &str, chain_id: &str) -> Result<bool, StorageError> {
        self.count("bag_in_chain");
        self.inner.bag_in_chain(bag, chain_id)
    }
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StorageError> {
        self.count("node");
        self.inner.node(level, index)
    }
    fn recorded_leaf(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        self.count("recorded_leaf");
        self.inner.recorded_leaf(index)
    }
    fn chain_summary(&self, chain_id: &str) -> Result<Option<ChainSummary>, StorageError> {
        self.count("chain_summary");
        self.inner.chain_summary(chain_id)
    }
    fn chain_summaries(&self) -> Result<Vec<ChainSummary>, StorageError> {
        self.count("chain_summaries");
        self.inner.chain_summaries()
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.count("meta");
        self.inner.meta(key)
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.count("size_on_disk");
        self.inner.size_on_disk()
    }
}

fn counting_store(dir: &std::path::Path) -> Arc<Counting> {
    let inner: Arc<dyn Storage> = match test_store(dir) {
        Some(pg) => pg,
        None => Arc::new(celltrail::store::Store::open(&dir.join("db")).expect("open sled")),
    };
    Arc::new(Counting {
        inner,
        calls: Mutex::new(BTreeMap::new()),
    })
}

/// Event `seq` of `chain`: enrolment at 0, then collections of the chain's own bag.
fn event(chain: &str, seq: u64, prev: &[u8], nurse: &celltrail::note::NoteSigner) -> SignedEvent {
    let at = base_time() + seq as i64 * 60 * 1_000_000_000;
    let detail = match seq {
        0 => Detail::Enrolled(Enrolled {
            coi_ref: format!("COI-{chain}"),
            therapy: "CAR-T".into(),
            manufacturing_site: "MFG-1".into(),
        }),
        _ => Detail::Collected(Collected {
            din: din_for(chain),
            product_code: "S1234000".into(),
            volume_ml: Some(250),
            collection_end_unix_nanos: Some(at),
        }),
    };
    signed_at_link(
        chain,
        seq,
        prev.to_vec(),
        at,
        "HOSP-A",
        detail,
        &[(nurse, Performed)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_on_a_chain_the_writer_has_written_reads_nothing_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = counting_store(dir.path());
    let server = TestServer::builder(dir.path())
        .storage(store.clone())
        .start()
        .await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let chains = ["C-1", "C-2", "C-3"];
    let mut prev: BTreeMap<&str, Vec<u8>> = chains.iter().map(|c| (*c, vec![0; 32])).collect();
    let mut sent = Vec::new();
    let mut append = |seq: u64, chain: &'static str, prev: &mut BTreeMap<&str, Vec<u8>>| {
        let ev = event(chain, seq, &prev[chain], &nurse);
        prev.insert(chain, EventHash::of_body(&ev.body).0.to_vec());
        sent.push(ev.clone());
        ev
    };
    // Enrolment and the first collection (the bag named for the first time) of each chain.
    for seq in 0..2 {
        for chain in chains {
            let ev = append(seq, chain, &mut prev);
            c.append(ev).await.expect("append");
        }
    }

    store.take();
    let mut appended = 0;
    for seq in 2..6 {
        for chain in chains {
            let ev = append(seq, chain, &mut prev);
            let r = c.append(ev).await.expect("append").into_inner();
            assert!(!r.duplicate);
            appended += 1;
        }
    }
    let calls = store.take();
    assert_eq!(
        calls.get("commit"),
        Some(&appended),
        "one commit per unary append: {calls:?}"
    );
    let reads: BTreeMap<_, _> = calls
        .iter()
        .filter(|(m, _)| !matches!(**m, "commit" | "flush"))
        .collect();
    assert!(
        reads.is_empty(),
        "the writer read its store for new events of chains it has written: {reads:?}"
    );

    // A resubmission is still found (the store is asked, as it must be) and answered with the
    // receipt of the stored event; another event at a taken seq is still a fork.
    let again = c
        .append(sent[7].clone())
        .await
        .expect("resubmit")
        .into_inner();
    assert!(again.duplicate, "a resubmitted event is a duplicate");
    assert_eq!(again.seq, 2);
    assert!(store.take().contains_key("chain_event"));
    let fork = event("C-2", 3, &prev["C-2"], &nurse);
    let err = c.append(fork).await.expect_err("a fork is refused");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("already taken"), "{}", err.message());

    // One bag, one chain still holds against the committed bags the writer remembers.
    let mut taken = event("C-9", 0, &[0; 32], &nurse);
    c.append(taken.clone()).await.expect("enrol C-9");
    taken = signed_at_link(
        "C-9",
        1,
        EventHash::of_body(&taken.body).0.to_vec(),
        base_time() + 60_000_000_000,
        "HOSP-A",
        Detail::Collected(Collected {
            din: din_for("C-1"),
            product_code: "S1234000".into(),
            volume_ml: Some(250),
            collection_end_unix_nanos: Some(base_time() + 60_000_000_000),
        }),
        &[(&nurse, Performed)],
    );
    let err = c.append(taken).await.expect_err("C-1's bag is taken");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("C-1"), "{}", err.message());
    server.stop().await;
}
