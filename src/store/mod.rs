//! The sled store: the only module that touches the ledger's data on disk.
//!
//! Trees (DESIGN §5): `entries` (global index → exact entry bytes), `chains` (chain id → head),
//! `chain_events` (chain id ‖ 0x00 ‖ seq → global index, for reading a chain in order and for
//! recognising a resubmission), `by_hash` (event hash → global index, for lookups by hash),
//! `nodes` and `leaves` (Merkle subtree and leaf hashes, for roots and proofs), `bags` (bag
//! DIN ‖ 0x00 ‖ chain id → index of the first entry naming that bag in that chain: how a
//! bedside station finds a product bag's chain), `meta` (tree size, latest checkpoint, store
//! format). One commit writes all trees in one sled transaction and then flushes (fsync)
//! before returning, so an acknowledged event survives a crash and a half-written group never
//! becomes visible.
//!
//! Two layouts keep sled's space and memory small (BENCHMARKS.md, "M"):
//! - `by_hash` keys are `run ‖ hash` with `run = index >> HASH_RUN_BITS`. Keyed by the bare
//!   hash, a group's inserts land all over the B-tree, and sled rewrites (and keeps garbage
//!   of) every page they touch; grouped by run, they land in the newest run's few pages. A
//!   lookup probes each run (`tree_size / 1024` point reads); the writer's hot path never
//!   looks up by hash (a resubmission is found through `chain_events`).
//! - `nodes` holds perfect subtrees of level `STORED_NODE_MIN_LEVEL` and above only. The leaf
//!   hashes are kept in `leaves`, one record per completed block of `LEAF_BLOCK` entries
//!   (block number → their 32-byte leaf hashes in order), and the levels in between are
//!   recomputed from a block (or, in the unfinished last block, from the entries). This turns
//!   1.9 sled items per entry into 0.13.

use crate::crypto::EventHash;
use crate::rules::Head;
use crate::storage::{Group, Hash, Storage, StorageError};
use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

mod guard;
mod upgrade;

pub use guard::Store;

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> StorageError {
        match e {
            // sled found a checksum or structure that does not match what it wrote.
            sled::Error::Corruption { at, .. } => StorageError::CorruptAt {
                at: match at {
                    Some(ptr) => format!("sled file position {ptr}"),
                    None => "an unknown place in sled's files".into(),
                },
                detail: "sled found data that does not match its checksum".into(),
            },
            other => StorageError::Io(other.to_string()),
        }
    }
}

/// The sled trees of the store. Every call from outside goes through [`Store`], which turns a
/// panic inside sled into an error.
pub(crate) struct Sled {
    db: sled::Db,
    entries: sled::Tree,
    chains: sled::Tree,
    chain_events: sled::Tree,
    by_hash: sled::Tree,
    nodes: sled::Tree,
    leaves: sled::Tree,
    bags: sled::Tree,
    meta: sled::Tree,
    /// chain id -> `ChainSummary` JSON, written with the head (the console's worklist).
    summaries: sled::Tree,
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
/// Prefix of the meta keys set through `Group::meta` (kept apart from the keys above).
const META_USER_PREFIX: &[u8] = b"x/";
/// The layout this code writes (see the module doc); stores without the key are format 1.
const META_FORMAT: &[u8] = b"format";
const FORMAT: u64 = 2;
/// `by_hash` groups its keys in runs of 2^HASH_RUN_BITS consecutive log entries.
const HASH_RUN_BITS: u32 = 10;
/// Merkle subtrees below this level are not stored but recomputed from the leaf hashes.
const STORED_NODE_MIN_LEVEL: u32 = 4;
/// Entries per record of the `leaves` tree (the width of a subtree at `STORED_NODE_MIN_LEVEL`).
const LEAF_BLOCK: u64 = 1 << STORED_NODE_MIN_LEVEL;

fn hash_key(index: u64, hash: &EventHash) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..4].copy_from_slice(&hash_run(index).to_be_bytes());
    k[4..].copy_from_slice(&hash.0);
    k
}

fn hash_run(index: u64) -> u32 {
    u32::try_from(index >> HASH_RUN_BITS).expect("fewer than 2^42 log entries")
}

fn chain_event_key(chain_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(chain_id.len() + 9);
    k.extend_from_slice(chain_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Opens a sled database, waiting up to `LOCK_WAIT` for a previous owner to release sled's
/// file lock: one that is just closing (in this process or another) keeps it for a moment
/// while its background flusher stops.
pub(crate) fn open_sled(config: sled::Config) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn bag_key(din: &str, chain_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(din.len() + 1 + chain_id.len());
    k.extend_from_slice(din.as_bytes());
    k.push(0);
    k.extend_from_slice(chain_id.as_bytes());
    k
}

fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StorageError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StorageError::Corrupt(format!("{what} is {} bytes, expected 8", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(arr))
}

impl Sled {
    /// Opens (or creates) the store in `path`. sled recovers its log on open.
    ///
    /// sled holds an exclusive file lock while any handle (including its background flusher)
    /// lives; a previous owner that is just closing, in this process or another, releases it
    /// moments later, so a busy lock is retried for up to `LOCK_WAIT`.
    fn open(path: &Path) -> Result<Sled, StorageError> {
        let store = Self::open_with_cache(path, CACHE_BYTES)?;
        store.upgrade()?;
        Ok(store)
    }

    /// [`Store::open`] with another page-cache size: the offline audit reads every entry and
    /// every leaf once, and on an auditor's laptop memory is not the constraint.
    ///
    /// Never writes: an auditor's copy stays as it was handed over (an older format is read as
    /// it is; the audit needs only entries, stored subtrees and the checkpoint).
    fn open_for_audit(path: &Path) -> Result<Sled, StorageError> {
        let store = Self::open_with_cache(path, AUDIT_CACHE_BYTES)?;
        store.format()?;
        Ok(store)
    }

    /// The store's layout version; an error for one newer than this code.
    fn format(&self) -> Result<u64, StorageError> {
        let format = match self.meta.get(META_FORMAT)? {
            Some(v) => be_u64(&v, "meta format")?,
            None if self.tree_size()? == 0 && self.by_hash.is_empty() => FORMAT,
            None => 1,
        };
        if format > FORMAT {
            return Err(StorageError::Corrupt(format!(
                "the store has format {format}, written by a newer celltrail; this one reads up to {FORMAT}"
            )));
        }
        Ok(format)
    }

    fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Sled, StorageError> {
        let db = open_sled(sled::Config::new().path(path).cache_capacity(cache_bytes)).map_err(
            |source| StorageError::Open {
                path: path.display().to_string(),
                reason: source.to_string(),
            },
        )?;
        let t = |name: &str| db.open_tree(name);
        Ok(Sled {
            entries: t("entries")?,
            chains: t("chains")?,
            chain_events: t("chain_events")?,
            by_hash: t("by_hash")?,
            nodes: t("nodes")?,
            leaves: t("leaves")?,
            bags: t("bags")?,
            meta: t("meta")?,
            summaries: t("summaries")?,
            db,
        })
    }

    /// The leaf hashes of block `block` (entries `[block·LEAF_BLOCK, (block+1)·LEAF_BLOCK)`), if
    /// the block is complete.
    fn leaf_block(&self, block: u64) -> Result<Option<Vec<[u8; 32]>>, StorageError> {
        let Some(v) = self.leaves.get(block.to_be_bytes())? else {
            return Ok(None);
        };
        if v.len() != 32 * LEAF_BLOCK as usize {
            return Err(StorageError::Corrupt(format!(
                "leaf block {block} is {} bytes, expected {}",
                v.len(),
                32 * LEAF_BLOCK
            )));
        }
        Ok(Some(
            v.chunks_exact(32)
                .map(|c| c.try_into().expect("32-byte chunk"))
                .collect(),
        ))
    }

    /// The subtree hash recorded in `nodes` when the subtree was completed (level
    /// `STORED_NODE_MIN_LEVEL` and above; below that only in a format-1 store).
    fn stored_node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StorageError> {
        match self.nodes.get(node_key(level, index))? {
            Some(v) => v.as_ref().try_into().map(Some).map_err(|_| {
                StorageError::Corrupt(format!("node ({level},{index}) is not 32 bytes"))
            }),
            None => Ok(None),
        }
    }
}

impl Storage for Sled {
    /// The stored summary of a chain (`None` for chains written before summaries existed).
    fn chain_summary(
        &self,
        chain_id: &str,
    ) -> Result<Option<crate::summary::ChainSummary>, StorageError> {
        Ok(self
            .summaries
            .get(chain_id.as_bytes())?
            .and_then(|b| crate::summary::ChainSummary::from_bytes(&b)))
    }

    /// Every custody chain's summary, by chain id. A chain without a stored summary (written
    /// by an older version, or restored from a backup, which does not copy summaries) is
    /// listed with its head's state only. Reads two trees; never replays a chain.
    fn chain_summaries(&self) -> Result<Vec<crate::summary::ChainSummary>, StorageError> {
        let mut out = Vec::new();
        let mut stored = self.summaries.iter().peekable();
        for item in self.chains.iter() {
            let (k, v) = item?;
            if crate::loglink::admin_signed(&String::from_utf8_lossy(&k)) {
                continue;
            }
            while stored
                .peek()
                .is_some_and(|s| s.as_ref().is_ok_and(|(sk, _)| sk.as_ref() < k.as_ref()))
            {
                stored.next();
            }
            let summary = match stored.peek() {
                Some(Ok((sk, sv))) if sk.as_ref() == k.as_ref() => {
                    crate::summary::ChainSummary::from_bytes(sv)
                }
                _ => None,
            };
            let summary = match summary {
                Some(s) => s,
                None => {
                    let head: Head = serde_json::from_slice(&v)
                        .map_err(|e| StorageError::Corrupt(format!("chain head: {e}")))?;
                    crate::summary::ChainSummary::from_head(
                        &String::from_utf8_lossy(&k),
                        &head.state_name,
                        head.seq,
                    )
                }
            };
            out.push(summary);
        }
        Ok(out)
    }

    fn tree_size(&self) -> Result<u64, StorageError> {
        match self.meta.get(META_TREE_SIZE)? {
            Some(v) => be_u64(&v, "meta tree_size"),
            None => Ok(0),
        }
    }

    fn checkpoint(&self) -> Result<Option<String>, StorageError> {
        Ok(match self.meta.get(META_CHECKPOINT)? {
            Some(v) => Some(
                String::from_utf8(v.to_vec())
                    .map_err(|_| StorageError::Corrupt("checkpoint is not UTF-8".into()))?,
            ),
            None => None,
        })
    }

    fn head(&self, chain_id: &str) -> Result<Option<Head>, StorageError> {
        match self.chains.get(chain_id.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StorageError::Corrupt(format!("head of chain {chain_id}: {e}"))),
            None => Ok(None),
        }
    }

    /// Global index of the event with this hash: probes each run of `by_hash`, newest first.
    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError> {
        let size = self.tree_size()?;
        if size == 0 {
            return Ok(None);
        }
        for run in (0..=hash_run(size - 1)).rev() {
            if let Some(v) = self
                .by_hash
                .get(hash_key(u64::from(run) << HASH_RUN_BITS, hash))?
            {
                return be_u64(&v, "by_hash value").map(Some);
            }
        }
        Ok(None)
    }

    /// Chains that name bag `din` (in a Collected or ManufacturingStep event), in byte order.
    fn chains_of_bag(&self, din: &str) -> Result<Vec<String>, StorageError> {
        let mut prefix = din.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.bags.scan_prefix(&prefix) {
            let (k, _) = item?;
            out.push(
                String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| StorageError::Corrupt("bag index chain id is not UTF-8".into()))?,
            );
        }
        Ok(out)
    }

    /// Whether chain `chain_id` already names bag `din`.
    fn bag_in_chain(&self, din: &str, chain_id: &str) -> Result<bool, StorageError> {
        Ok(self.bags.contains_key(bag_key(din, chain_id))?)
    }

    /// Global index of a chain's event at `seq`, if there is one.
    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError> {
        match self.chain_events.get(chain_event_key(chain_id, seq))? {
            Some(v) => be_u64(&v, "chain_events value").map(Some),
            None => Ok(None),
        }
    }

    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries.get(index.to_be_bytes())?.map(|v| v.to_vec()))
    }

    /// Up to `limit` entries from `start` on, in index order.
    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.entries.range(start.to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push((be_u64(&k, "entries key")?, v.to_vec()));
        }
        Ok(out)
    }

    /// Global indices of a chain's events in seq order.
    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError> {
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
    fn chain_ids(&self) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        for item in self.chains.iter() {
            let (k, _) = item?;
            out.push(
                String::from_utf8(k.to_vec())
                    .map_err(|_| StorageError::Corrupt("chain id is not UTF-8".into()))?,
            );
        }
        Ok(out)
    }

    /// Hash of the perfect Merkle subtree (level, index) over leaves
    /// `[index·2^level, (index+1)·2^level)`: read from `nodes`, or below
    /// `STORED_NODE_MIN_LEVEL` recomputed from the leaf hashes. `None` if not all exist.
    fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StorageError> {
        if level >= STORED_NODE_MIN_LEVEL {
            return self.stored_node(level, index);
        }
        let width = 1u64 << level;
        let Some(first) = index.checked_mul(width) else {
            return Ok(None);
        };
        let leaves = match self.leaf_block(first / LEAF_BLOCK)? {
            Some(block) => {
                let at = (first % LEAF_BLOCK) as usize;
                block[at..at + width as usize].to_vec()
            }
            None => {
                // The unfinished last block: hash the entries themselves.
                let entries = self.entries_from(first, width as usize)?;
                if entries.len() as u64 != width
                    || entries.last().map(|(i, _)| *i) != Some(first + width - 1)
                {
                    return Ok(None);
                }
                entries
                    .iter()
                    .map(|(_, bytes)| crate::merkle::leaf_hash(bytes))
                    .collect()
            }
        };
        Ok(Some(crate::merkle::root(&leaves)))
    }

    /// The leaf hash recorded for entry `index` when it was appended (complete blocks only;
    /// a format-1 store kept every leaf in `nodes`). The audit compares it with the entry.
    fn recorded_leaf(&self, index: u64) -> Result<Option<[u8; 32]>, StorageError> {
        if let Some(block) = self.leaf_block(index / LEAF_BLOCK)? {
            return Ok(Some(block[(index % LEAF_BLOCK) as usize]));
        }
        self.stored_node(0, index)
    }

    /// Flushes (fsyncs) everything written so far.
    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    /// Writes one group atomically, then fsyncs. Returns only after the data is durable.
    /// On an error the group may or may not have been applied (a failed flush leaves it applied
    /// but perhaps not durable): callers re-read `tree_size` to learn which.
    fn commit(&self, batch: &Group) -> Result<(), StorageError> {
        let mut entries = sled::Batch::default();
        let mut chain_events = sled::Batch::default();
        let mut by_hash = sled::Batch::default();
        for e in &batch.entries {
            entries.insert(&e.index.to_be_bytes(), e.bytes.as_slice());
            chain_events.insert(chain_event_key(&e.chain_id, e.seq), &e.index.to_be_bytes());
            by_hash.insert(
                &hash_key(e.index, &e.event_hash)[..],
                &e.index.to_be_bytes(),
            );
        }
        let mut chains = sled::Batch::default();
        for (id, head) in &batch.heads {
            let json = serde_json::to_vec(head).expect("heads serialize to JSON");
            chains.insert(id.as_bytes(), json);
        }
        let mut nodes = sled::Batch::default();
        for ((level, index), hash) in &batch.nodes {
            if *level >= STORED_NODE_MIN_LEVEL {
                nodes.insert(&node_key(*level, *index), hash);
            }
        }
        // A block of leaves is complete: record its leaf hashes (no per-entry node is stored
        // below `STORED_NODE_MIN_LEVEL`).
        let mut leaves = sled::Batch::default();
        let group_leaves: std::collections::HashMap<u64, Hash> = batch
            .nodes
            .iter()
            .filter(|((level, _), _)| *level == 0)
            .map(|((_, index), h)| (*index, *h))
            .collect();
        for e in &batch.entries {
            if !(e.index + 1).is_multiple_of(LEAF_BLOCK) {
                continue;
            }
            let first = e.index + 1 - LEAF_BLOCK;
            let mut hashes = Vec::with_capacity(32 * LEAF_BLOCK as usize);
            for j in first..=e.index {
                let leaf = match group_leaves.get(&j) {
                    Some(h) => *h,
                    None => self.node(0, j)?.ok_or_else(|| {
                        StorageError::Corrupt(format!("the leaf hash of entry {j} is missing"))
                    })?,
                };
                hashes.extend_from_slice(&leaf);
            }
            leaves.insert(&(first / LEAF_BLOCK).to_be_bytes(), hashes);
        }
        let mut bags = sled::Batch::default();
        for (din, chain, index) in &batch.bags {
            bags.insert(bag_key(din, chain), &index.to_be_bytes());
        }
        let mut summaries = sled::Batch::default();
        for (id, summary) in &batch.summaries {
            summaries.insert(id.as_bytes(), summary.to_bytes());
        }
        let mut meta = sled::Batch::default();
        meta.insert(META_TREE_SIZE, &batch.tree_size.to_be_bytes());
        if let Some(cp) = &batch.checkpoint {
            meta.insert(META_CHECKPOINT, cp.as_bytes());
        }
        for (key, value) in &batch.meta {
            meta.insert(
                [META_USER_PREFIX, key.as_bytes()].concat(),
                value.as_slice(),
            );
        }
        let started = std::time::Instant::now();
        let trees = (
            &self.entries,
            &self.chain_events,
            &self.by_hash,
            &self.chains,
            &self.nodes,
            &self.leaves,
            &self.bags,
            &self.meta,
            &self.summaries,
        );
        trees
            .transaction(|(te, tc, tb, th, tn, tl, tg, tm, ts)| {
                te.apply_batch(&entries)?;
                tc.apply_batch(&chain_events)?;
                tb.apply_batch(&by_hash)?;
                th.apply_batch(&chains)?;
                tn.apply_batch(&nodes)?;
                tl.apply_batch(&leaves)?;
                tg.apply_batch(&bags)?;
                tm.apply_batch(&meta)?;
                ts.apply_batch(&summaries)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StorageError::from(e),
                TransactionError::Abort(()) => StorageError::Corrupt("transaction aborted".into()),
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
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()?)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .meta
            .get([META_USER_PREFIX, key.as_bytes()].concat())?
            .map(|v| v.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::NewEntry;

    fn head(seq: u64) -> Head {
        Head {
            hold: Vec::new(),
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
            let batch = Group {
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
                bags: vec![("A999926123456".into(), "A".into(), 0)],
                meta: vec![],
                tree_size: 2,
                checkpoint: Some("cp\n".into()),
                summaries: vec![(
                    "A".into(),
                    crate::summary::ChainSummary::from_head("A", "Collected", 1),
                )],
            };
            s.commit(&batch).unwrap();
            // A chain whose head has no summary (written before summaries existed).
            let old = Group {
                heads: vec![("B".into(), head(4))],
                tree_size: 2,
                ..Default::default()
            };
            s.commit(&old).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.tree_size().unwrap(), 2);
        assert_eq!(s.entry(1).unwrap().unwrap(), b"e1");
        assert_eq!(s.head("A").unwrap().unwrap(), head(1));
        assert_eq!(s.chain_indices("A").unwrap(), vec![0, 1]);
        assert_eq!(s.index_of_hash(&EventHash([2; 32])).unwrap(), Some(1));
        // Low subtrees are recomputed from the entries, not read back.
        assert_eq!(s.node(0, 0).unwrap(), Some(crate::merkle::leaf_hash(b"e0")));
        assert_eq!(s.node(0, 2).unwrap(), None);
        assert_eq!(s.sled().stored_node(0, 0).unwrap(), None);
        assert_eq!(s.recorded_leaf(0).unwrap(), None, "block 0 is not complete");
        assert_eq!(s.checkpoint().unwrap().as_deref(), Some("cp\n"));
        assert_eq!(s.entries_from(1, 10).unwrap(), vec![(1, b"e1".to_vec())]);
        assert_eq!(
            s.chain_ids().unwrap(),
            vec!["A".to_string(), "B".to_string()]
        );
        let sums = s.chain_summaries().unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(
            (sums[0].chain_id.as_str(), sums[0].state.as_str()),
            ("A", "Collected")
        );
        assert_eq!(
            sums[1].chain_id, "B",
            "a chain without a summary is listed from its head"
        );
        assert_eq!(sums[1].seq, 4);
        assert_eq!(
            s.chains_of_bag("A999926123456").unwrap(),
            vec!["A".to_string()]
        );
        assert!(s.bag_in_chain("A999926123456", "A").unwrap());
        assert!(
            s.chains_of_bag("A99992612345").unwrap().is_empty(),
            "prefix of a DIN"
        );
    }

    #[test]
    fn chain_prefix_does_not_leak_into_longer_chain_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let batch = Group {
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

    /// Writes a store in format 1 (by_hash keyed by the bare hash, every node level stored),
    /// as celltrail wrote before format 2.
    fn write_format_1(path: &Path, n: u64) -> Vec<(Vec<u8>, EventHash)> {
        let db = sled::open(path).unwrap();
        let (entries, by_hash, nodes, meta) = (
            db.open_tree("entries").unwrap(),
            db.open_tree("by_hash").unwrap(),
            db.open_tree("nodes").unwrap(),
            db.open_tree("meta").unwrap(),
        );
        let mut all = Vec::new();
        let mut done = std::collections::HashMap::new();
        for i in 0..n {
            // Every third entry collects a bag, so the upgrade has bags to index.
            let detail = (i % 3 == 0).then(|| {
                crate::pb::event_body::Detail::Collected(crate::pb::Collected {
                    din: format!("A99992612{i:04}"),
                    ..Default::default()
                })
            });
            let body = crate::pb::EventBody {
                chain_id: format!("C{}", i % 2),
                seq: i / 2,
                detail,
                ..Default::default()
            };
            let bytes = crate::pb::LogEntry {
                body: body.encode_to_vec(),
                index: i,
                ..Default::default()
            }
            .encode_to_vec();
            let hash = EventHash([i as u8 + 1; 32]);
            entries.insert(i.to_be_bytes(), bytes.clone()).unwrap();
            by_hash.insert(hash.0, &i.to_be_bytes()).unwrap();
            let leaf = crate::merkle::leaf_hash(&bytes);
            for ((l, j), h) in
                crate::merkle::nodes_completed_by_append(i, leaf, |l, j| Ok::<_, ()>(done[&(l, j)]))
                    .unwrap()
            {
                nodes.insert(node_key(l, j), &h).unwrap();
                done.insert((l, j), h);
            }
            all.push((bytes, hash));
        }
        meta.insert(META_TREE_SIZE, &n.to_be_bytes()).unwrap();
        db.flush().unwrap();
        all
    }

    #[test]
    fn a_format_1_store_is_upgraded_once_on_open_and_read_as_is_by_the_audit() {
        let dir = tempfile::tempdir().unwrap();
        let all = write_format_1(dir.path(), 37);
        let leaves: Vec<_> = all
            .iter()
            .map(|(b, _)| crate::merkle::leaf_hash(b))
            .collect();
        {
            // The audit never writes: the copy stays format 1 and its leaves are still read.
            let s = Store::open_for_audit(dir.path()).unwrap();
            assert_eq!(s.sled().format().unwrap(), 1);
            assert_eq!(s.recorded_leaf(20).unwrap(), Some(leaves[20]));
        }
        for _ in 0..2 {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.sled().format().unwrap(), FORMAT);
            for (i, (_, hash)) in all.iter().enumerate() {
                assert_eq!(s.index_of_hash(hash).unwrap(), Some(i as u64), "entry {i}");
            }
            assert_eq!(s.index_of_hash(&EventHash([0; 32])).unwrap(), None);
            // Blocks 0 and 1 are complete (32 of 37 entries): their leaves were packed.
            assert_eq!(s.recorded_leaf(5).unwrap(), Some(leaves[5]));
            assert_eq!(s.recorded_leaf(31).unwrap(), Some(leaves[31]));
            assert_eq!(s.recorded_leaf(33).unwrap(), None);
            assert_eq!(
                s.sled().stored_node(0, 5).unwrap(),
                None,
                "low levels dropped"
            );
            assert_eq!(
                s.chains_of_bag("A999926120033").unwrap(),
                vec!["C1".to_string()]
            );
            assert_eq!(
                s.chains_of_bag("A999926120036").unwrap(),
                vec!["C0".to_string()]
            );
            assert!(s.chains_of_bag("A999926120034").unwrap().is_empty());
            assert_eq!(
                crate::merkle::root_at(37, |l, i| s.node(l, i).map(|h| h.unwrap())).unwrap(),
                crate::merkle::root(&leaves)
            );
        }
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sled::open(dir.path()).unwrap();
            s.meta.insert(META_FORMAT, &9u64.to_be_bytes()).unwrap();
            s.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("format 9"), "{err}");
    }
}
