//! The sled store: the only module that touches the ledger's data on disk.
//!
//! Trees (DESIGN §5): `entries` (global index → exact entry bytes), `chains` (chain id → head),
//! `chain_events` (chain id ‖ 0x00 ‖ seq → global index, for reading a chain in order),
//! `by_hash` (event hash → global index; makes resubmission idempotent), `nodes` (perfect
//! Merkle subtree hashes by level and index, for roots and proofs), `meta` (tree size, latest
//! checkpoint). One commit writes all trees in one sled transaction and then flushes (fsync)
//! before returning, so an acknowledged event survives a crash and a half-written group never
//! becomes visible.

use crate::crypto::EventHash;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the ledger store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("ledger store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("ledger store is corrupt: {0}")]
    Corrupt(String),
}

/// The head of one chain as stored in the `chains` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
    /// Name of the custody state after the head event.
    pub state_name: String,
    /// Policy state after the head event, as the writer holds it in memory. Never stored: it
    /// is rebuilt from the chain's entries when needed (`None` after a read from disk, and for
    /// chains the policy does not govern), so each append rewrites only a small head record.
    #[serde(skip)]
    pub state: Option<crate::policy::ChainState>,
}

impl Head {
    pub fn event_hash(&self) -> EventHash {
        EventHash(self.hash)
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("hash must be 32 bytes"))
    }
}

/// One accepted event to write.
pub struct NewEntry {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub event_hash: EventHash,
    pub chain_id: String,
    pub seq: u64,
}

/// Everything one group commit writes, applied atomically.
#[derive(Default)]
pub struct CommitBatch {
    pub entries: Vec<NewEntry>,
    pub heads: Vec<(String, Head)>,
    pub nodes: Vec<((u32, u64), [u8; 32])>,
    pub tree_size: u64,
    pub checkpoint: Option<String>,
}

/// A write failure to simulate (tests of the disk-full / failed-fsync paths; see `inject_fault`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None = 0,
    /// `commit` fails before writing anything, as on a full disk.
    FailWrite = 1,
    /// `commit` applies the transaction but the flush (fsync) fails.
    FailFlush = 2,
}

pub struct Store {
    /// Injected fault (a `Fault` as u8); always `Fault::None` outside tests.
    fault: std::sync::atomic::AtomicU8,
    db: sled::Db,
    entries: sled::Tree,
    chains: sled::Tree,
    chain_events: sled::Tree,
    by_hash: sled::Tree,
    nodes: sled::Tree,
    meta: sled::Tree,
}

const META_TREE_SIZE: &[u8] = b"tree_size";
/// Page cache of the offline audit (`verify --data-dir`).
const AUDIT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// How long `open` waits for a previous owner of the store to release sled's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// sled's page cache (its default is 1 GiB). Reads are mostly of recent entries and heads, so a
/// small cache keeps the server's memory flat as the log grows.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
const META_CHECKPOINT: &[u8] = b"checkpoint";

fn chain_event_key(chain_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(chain_id.len() + 9);
    k.extend_from_slice(chain_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, expected 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

impl Store {
    /// Opens (or creates) the store in `path`. sled recovers its log on open.
    ///
    /// sled holds an exclusive file lock while any handle (including its background flusher)
    /// lives; a previous owner that is just closing, in this process or another, releases it
    /// moments later, so a busy lock is retried for up to `LOCK_WAIT`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(path, CACHE_BYTES)
    }

    /// [`Store::open`] with another page-cache size: the offline audit reads every entry and
    /// every leaf once, and on an auditor's laptop memory is not the constraint.
    pub fn open_for_audit(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(path, AUDIT_CACHE_BYTES)
    }

    fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .open();
            match opened {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    break other.map_err(|source| StoreError::Open {
                        path: path.display().to_string(),
                        source,
                    })?
                }
            }
        };
        let t = |name: &str| db.open_tree(name);
        Ok(Store {
            fault: std::sync::atomic::AtomicU8::new(Fault::None as u8),
            entries: t("entries")?,
            chains: t("chains")?,
            chain_events: t("chain_events")?,
            by_hash: t("by_hash")?,
            nodes: t("nodes")?,
            meta: t("meta")?,
            db,
        })
    }

    pub fn tree_size(&self) -> Result<u64, StoreError> {
        match self.meta.get(META_TREE_SIZE)? {
            Some(v) => be_u64(&v, "meta tree_size"),
            None => Ok(0),
        }
    }

    pub fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(match self.meta.get(META_CHECKPOINT)? {
            Some(v) => Some(
                String::from_utf8(v.to_vec())
                    .map_err(|_| StoreError::Corrupt("checkpoint is not UTF-8".into()))?,
            ),
            None => None,
        })
    }

    pub fn head(&self, chain_id: &str) -> Result<Option<Head>, StoreError> {
        match self.chains.get(chain_id.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("head of chain {chain_id}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StoreError> {
        match self.by_hash.get(hash.0)? {
            Some(v) => be_u64(&v, "by_hash value").map(Some),
            None => Ok(None),
        }
    }

    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(index.to_be_bytes())?.map(|v| v.to_vec()))
    }

    /// Up to `limit` entries from `start` on, in index order.
    pub fn entries_from(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.entries.range(start.to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push((be_u64(&k, "entries key")?, v.to_vec()));
        }
        Ok(out)
    }

    /// Global indices of a chain's events in seq order.
    pub fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StoreError> {
        let mut prefix = chain_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.chain_events.scan_prefix(&prefix) {
            let (_, v) = item?;
            out.push(be_u64(&v, "chain_events value")?);
        }
        Ok(out)
    }

    /// Ids of every chain, in byte order.
    pub fn chain_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.chains.iter() {
            let (k, _) = item?;
            out.push(
                String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError::Corrupt("chain id is not UTF-8".into()))?,
            );
        }
        Ok(out)
    }

    /// Hash of the perfect Merkle subtree (level, index), if stored.
    pub fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        match self.nodes.get(node_key(level, index))? {
            Some(v) => v.as_ref().try_into().map(Some).map_err(|_| {
                StoreError::Corrupt(format!("node ({level},{index}) is not 32 bytes"))
            }),
            None => Ok(None),
        }
    }

    /// Makes every later `commit`/`flush` fail the given way until `Fault::None` is injected.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.fault
            .store(fault as u8, std::sync::atomic::Ordering::SeqCst);
    }

    fn fault(&self) -> Fault {
        match self.fault.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Fault::FailWrite,
            2 => Fault::FailFlush,
            _ => Fault::None,
        }
    }

    fn injected(what: &str) -> StoreError {
        StoreError::Io(sled::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{what}: no space left on device (injected fault)"),
        )))
    }

    /// Flushes (fsyncs) everything written so far.
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.fault() == Fault::FailFlush {
            return Err(Self::injected("flush"));
        }
        self.db.flush()?;
        Ok(())
    }

    /// Writes one group atomically, then fsyncs. Returns only after the data is durable.
    /// On an error the group may or may not have been applied (a failed flush leaves it applied
    /// but perhaps not durable): callers re-read `tree_size` to learn which.
    pub fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        if self.fault() == Fault::FailWrite {
            return Err(Self::injected("write"));
        }
        let mut entries = sled::Batch::default();
        let mut chain_events = sled::Batch::default();
        let mut by_hash = sled::Batch::default();
        for e in &batch.entries {
            entries.insert(&e.index.to_be_bytes(), e.bytes.as_slice());
            chain_events.insert(chain_event_key(&e.chain_id, e.seq), &e.index.to_be_bytes());
            by_hash.insert(&e.event_hash.0, &e.index.to_be_bytes());
        }
        let mut chains = sled::Batch::default();
        for (id, head) in &batch.heads {
            let json = serde_json::to_vec(head).expect("heads serialize to JSON");
            chains.insert(id.as_bytes(), json);
        }
        let mut nodes = sled::Batch::default();
        for ((level, index), hash) in &batch.nodes {
            nodes.insert(&node_key(*level, *index), hash);
        }
        let mut meta = sled::Batch::default();
        meta.insert(META_TREE_SIZE, &batch.tree_size.to_be_bytes());
        if let Some(cp) = &batch.checkpoint {
            meta.insert(META_CHECKPOINT, cp.as_bytes());
        }
        let started = std::time::Instant::now();
        let trees = (
            &self.entries,
            &self.chain_events,
            &self.by_hash,
            &self.chains,
            &self.nodes,
            &self.meta,
        );
        trees
            .transaction(|(te, tc, tb, th, tn, tm)| {
                te.apply_batch(&entries)?;
                tc.apply_batch(&chain_events)?;
                tb.apply_batch(&by_hash)?;
                th.apply_batch(&chains)?;
                tn.apply_batch(&nodes)?;
                tm.apply_batch(&meta)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Io(e),
                TransactionError::Abort(()) => StoreError::Corrupt("transaction aborted".into()),
            })?;
        let applied = started.elapsed();
        self.flush()?;
        tracing::debug!(
            entries = batch.entries.len(),
            apply_us = applied.as_micros() as u64,
            flush_us = (started.elapsed() - applied).as_micros() as u64,
            "store commit"
        );
        Ok(())
    }

    /// Bytes sled reports on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

// --- ops: raw tree access for online backup and restore (src/backup.rs) -----------------------
/// Names of the trees that only ever gain keys (never change or lose one) once a group
/// committed: a backup may copy them after the cut by filtering on the log index.
pub const APPEND_ONLY_TREES: [&str; 4] = ["entries", "chain_events", "by_hash", "nodes"];

/// One raw key/value of a tree.
pub type RawRecord = (Vec<u8>, Vec<u8>);

impl Store {
    /// Names of every tree in the store, including sled's default tree.
    pub fn raw_tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    /// Every key/value of tree `name`, in key order.
    pub fn raw_scan(
        &self,
        name: &str,
    ) -> Result<impl Iterator<Item = Result<RawRecord, StoreError>>, StoreError> {
        let tree = self.db.open_tree(name)?;
        Ok(tree.iter().map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::Io)
        }))
    }

    /// Inserts records into tree `name` (restore only: never on a live ledger).
    pub fn raw_insert(&self, name: &str, records: &[RawRecord]) -> Result<(), StoreError> {
        let tree = self.db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            batch.insert(k.as_slice(), v.as_slice());
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// fsyncs everything written so far.
    pub fn raw_flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
// --- end ops ------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> Head {
        Head {
            seq,
            hash: [seq as u8; 32],
            state_name: "S".into(),
            state: None,
        }
    }

    #[test]
    fn commit_is_visible_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.tree_size().unwrap(), 0);
            let batch = CommitBatch {
                entries: vec![
                    NewEntry {
                        index: 0,
                        bytes: b"e0".to_vec(),
                        event_hash: EventHash([1; 32]),
                        chain_id: "A".into(),
                        seq: 0,
                    },
                    NewEntry {
                        index: 1,
                        bytes: b"e1".to_vec(),
                        event_hash: EventHash([2; 32]),
                        chain_id: "A".into(),
                        seq: 1,
                    },
                ],
                heads: vec![("A".into(), head(1))],
                nodes: vec![((0, 0), [9; 32])],
                tree_size: 2,
                checkpoint: Some("cp\n".into()),
            };
            s.commit(&batch).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.tree_size().unwrap(), 2);
        assert_eq!(s.entry(1).unwrap().unwrap(), b"e1");
        assert_eq!(s.head("A").unwrap().unwrap(), head(1));
        assert_eq!(s.chain_indices("A").unwrap(), vec![0, 1]);
        assert_eq!(s.index_of_hash(&EventHash([2; 32])).unwrap(), Some(1));
        assert_eq!(s.node(0, 0).unwrap(), Some([9; 32]));
        assert_eq!(s.checkpoint().unwrap().as_deref(), Some("cp\n"));
        assert_eq!(s.entries_from(1, 10).unwrap(), vec![(1, b"e1".to_vec())]);
        assert_eq!(s.chain_ids().unwrap(), vec!["A".to_string()]);
    }

    #[test]
    fn chain_prefix_does_not_leak_into_longer_chain_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let batch = CommitBatch {
            entries: vec![
                NewEntry {
                    index: 0,
                    bytes: b"a".to_vec(),
                    event_hash: EventHash([1; 32]),
                    chain_id: "A".into(),
                    seq: 0,
                },
                NewEntry {
                    index: 1,
                    bytes: b"ab".to_vec(),
                    event_hash: EventHash([2; 32]),
                    chain_id: "AB".into(),
                    seq: 0,
                },
            ],
            tree_size: 2,
            ..Default::default()
        };
        s.commit(&batch).unwrap();
        assert_eq!(s.chain_indices("A").unwrap(), vec![0]);
        assert_eq!(s.chain_indices("AB").unwrap(), vec![1]);
    }
}
