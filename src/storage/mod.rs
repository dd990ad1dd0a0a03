//! The storage seam: what the ledger needs from a backend, and nothing about how it keeps it.
//!
//! A backend stores the log entries (the exact bytes that are hashed into the Merkle log), the
//! chain heads, the indexes the reads need (a chain's events in order, an event's index by hash,
//! the chains that name a bag), the hashes of perfect Merkle subtrees, the latest signed
//! checkpoint and a few meta values. The writer hands it one [`Group`] at a time; the backend
//! applies the whole group atomically and durably. Which Merkle nodes a backend persists, how it
//! lays out its keys and how it reports I/O failures inside are its own business: the trait
//! speaks only of values, and [`StorageError`] carries no backend type.
//!
//! The sled backend (`store::Store`) is the first implementation. `suite` holds the tests any
//! implementation must pass (`storage_suite!` runs them against a backend).
//!
//! # Threading
//!
//! Methods are synchronous and may block on I/O. The ledger calls [`Storage::commit`] and
//! [`Storage::flush`] only from its one dedicated writer thread, never concurrently with each
//! other; reads come from that thread and, concurrently, from tokio's blocking pool
//! (`spawn_blocking`) and from offline tools. A backend must therefore be `Send + Sync`, must
//! never expose a half-applied group to a concurrent reader, and must not assume a tokio
//! runtime on the calling thread: a backend with an async client owns its own runtime (or uses
//! a blocking client) and blocks on it inside these methods.

pub mod suite;

use crate::crypto::EventHash;
use crate::rules::Head;

/// A 32-byte Merkle hash.
pub type Hash = [u8; 32];

/// What a backend failure means to the ledger. Messages say what failed; no backend types.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the ledger store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("ledger store I/O failed: {0}")]
    Io(String),
    #[error("ledger store is corrupt: {0}")]
    Corrupt(String),
    /// The backend itself failed on damaged files (sled panicked or found a bad checksum), or
    /// the store does not match its last signed checkpoint.
    #[error("store corrupt at {at}: {detail}; restore from backup (`celltrail restore --from BACKUP_DIR --data-dir NEW_DIR --log-key LOG_KEY`)")]
    CorruptAt { at: String, detail: String },
}

/// One accepted event to write.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Its global log index.
    pub index: u64,
    /// The encoded `LogEntry`: exactly the bytes hashed into the Merkle log.
    pub bytes: Vec<u8>,
    pub event_hash: EventHash,
    pub chain_id: String,
    pub seq: u64,
}

/// Everything one group commit writes, applied atomically: all of it becomes visible (and
/// durable) together, or none of it.
#[derive(Debug, Default, Clone)]
pub struct Group {
    /// The new entries, with consecutive indices starting at the stored tree size.
    pub entries: Vec<NewEntry>,
    /// The new head of every chain the group touched.
    pub heads: Vec<(String, Head)>,
    /// Every perfect Merkle subtree the group's entries completed, as (level, index) → hash,
    /// leaves (level 0) included. A backend keeps what it needs to answer [`Storage::node`].
    pub nodes: Vec<((u32, u64), Hash)>,
    /// Bags named for the first time by a chain: (bag id, chain id, index of the entry).
    pub bags: Vec<(String, String, u64)>,
    /// Meta values to set (see [`Storage::meta`]).
    pub meta: Vec<(String, Vec<u8>)>,
    /// Per-chain summaries after the group (`crate::summary`), for the console's worklist.
    pub summaries: Vec<(String, crate::summary::ChainSummary)>,
    /// The tree size after the group.
    pub tree_size: u64,
    /// The signed checkpoint for `tree_size`.
    pub checkpoint: Option<String>,
}

/// A consistent cut of the log: its size and the signed checkpoint for that size. Entries
/// below `tree_size` never change, so they can be read after the cut while appends continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub tree_size: u64,
    pub checkpoint: Option<String>,
}

/// What the ledger needs from a storage backend. See the module documentation for threading.
pub trait Storage: Send + Sync {
    /// Applies `group` atomically, then makes it durable; returns only once it is. On an error
    /// the group may or may not have been applied (a failed flush after a successful write):
    /// callers re-read [`Storage::tree_size`] to learn which.
    fn commit(&self, group: &Group) -> Result<(), StorageError>;

    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// Number of entries in the log.
    fn tree_size(&self) -> Result<u64, StorageError>;

    /// The latest signed checkpoint, `None` while the log is empty.
    fn checkpoint(&self) -> Result<Option<String>, StorageError>;

    /// The tree size and its checkpoint, read together. Called between two groups (the ledger
    /// runs it on the writer thread via `Ledger::at_group_boundary`) or on a stopped store.
    fn cut(&self) -> Result<Cut, StorageError> {
        Ok(Cut {
            tree_size: self.tree_size()?,
            checkpoint: self.checkpoint()?,
        })
    }

    /// The head of a chain (its `state` is `None`: the policy state is never stored).
    fn head(&self, chain_id: &str) -> Result<Option<Head>, StorageError>;

    /// Ids of every chain, in byte order.
    fn chain_ids(&self) -> Result<Vec<String>, StorageError>;

    /// The entry at a global index.
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries from `start` on, in index order.
    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;

    /// Global index of a chain's event at `seq`.
    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError>;

    /// Global indices of a chain's events, in seq order.
    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError>;

    /// Global index of the event with this hash.
    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError>;

    /// Chains that name bag `bag`, in byte order.
    fn chains_of_bag(&self, bag: &str) -> Result<Vec<String>, StorageError>;

    /// Whether chain `chain_id` already names bag `bag`.
    fn bag_in_chain(&self, bag: &str, chain_id: &str) -> Result<bool, StorageError>;

    /// Hash of the perfect Merkle subtree (level, index) over leaves
    /// `[index·2^level, (index+1)·2^level)`, or `None` if not all of those leaves exist.
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StorageError>;

    /// The leaf hash recorded for entry `index` when it was appended, if the backend keeps one
    /// apart from the entry (the offline audit compares it with the entry's bytes).
    fn recorded_leaf(&self, _index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(None)
    }

    /// The stored summary of a chain (`None` where the backend keeps none).
    fn chain_summary(
        &self,
        _chain_id: &str,
    ) -> Result<Option<crate::summary::ChainSummary>, StorageError> {
        Ok(None)
    }

    /// Every custody chain's summary, by chain id; by default each chain's head state only.
    fn chain_summaries(&self) -> Result<Vec<crate::summary::ChainSummary>, StorageError> {
        let mut out = Vec::new();
        for chain in self.chain_ids()? {
            if crate::loglink::admin_signed(&chain) {
                continue;
            }
            if let Some(head) = self.head(&chain)? {
                out.push(crate::summary::ChainSummary::from_head(
                    &chain,
                    &head.state_name,
                    head.seq,
                ));
            }
        }
        Ok(out)
    }

    /// A meta value set by an earlier group.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Bytes the backend uses on disk (an estimate is fine).
    fn size_on_disk(&self) -> Result<u64, StorageError>;
}
