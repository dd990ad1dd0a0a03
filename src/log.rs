//! The transparency log over the store: the current signed checkpoint, inclusion proofs and
//! consistency proofs (RFC 9162 §2.1), served from the stored perfect-subtree hashes with
//! O(log n) reads each, never by recomputing the tree. Read-only; the writer in `ledger` is the
//! only code that adds nodes and signs checkpoints. The math is `merkle`'s.

use crate::crypto::EventHash;
use crate::merkle::{self, Hash};
use crate::note::{ChainHeadStatement, Checkpoint};
use crate::storage::{Storage, StorageError};

/// Why a log read cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Store(#[from] StorageError),
}

/// The latest signed checkpoint: the note as stored and its parsed body.
#[derive(Debug, Clone)]
pub struct SignedCheckpoint {
    pub note: String,
    pub checkpoint: Checkpoint,
}

/// The signed text of a note (everything up to and including the newline before the blank
/// line that starts the signatures), without verifying anything.
pub fn note_text(note: &str) -> Option<&str> {
    note.rfind("\n\n").map(|i| &note[..=i])
}

/// The latest signed checkpoint, or `None` while the log is empty. Its size is the "current"
/// size of every proof request: a checkpoint is written in the same transaction as its nodes.
pub fn checkpoint(store: &dyn Storage) -> Result<Option<SignedCheckpoint>, LogError> {
    let Some(note) = store.checkpoint()? else {
        return Ok(None);
    };
    let text = note_text(&note)
        .ok_or_else(|| StorageError::Corrupt("stored checkpoint is not a signed note".into()))?;
    let checkpoint = Checkpoint::parse(text)
        .map_err(|e| StorageError::Corrupt(format!("stored checkpoint does not parse: {e}")))?;
    Ok(Some(SignedCheckpoint { note, checkpoint }))
}

fn current_size(store: &dyn Storage) -> Result<u64, LogError> {
    Ok(checkpoint(store)?.map_or(0, |c| c.checkpoint.size))
}

/// The head statement of `chain_id` in the tree of `tree_size` entries (0 = current size):
/// its events with an index below that size, and the hash of the last of them.
pub fn chain_head_statement(
    store: &dyn Storage,
    origin: &str,
    chain_id: &str,
    tree_size: u64,
) -> Result<ChainHeadStatement, LogError> {
    let size = resolve_size(store, tree_size)?;
    let indices: Vec<u64> = store
        .chain_indices(chain_id)?
        .into_iter()
        .take_while(|i| *i < size)
        .collect();
    let Some(&last) = indices.last() else {
        return Err(LogError::NotFound(format!(
            "chain {} has no events in the first {size} log entries",
            crate::policy::cut(chain_id)
        )));
    };
    let bytes = store
        .entry(last)?
        .ok_or_else(|| StorageError::Corrupt(format!("entry {last} is missing")))?;
    let entry = <crate::pb::LogEntry as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| StorageError::Corrupt(format!("entry {last} does not decode: {e}")))?;
    Ok(ChainHeadStatement {
        origin: origin.to_string(),
        chain_id: chain_id.to_string(),
        tree_size: size,
        length: indices.len() as u64,
        head_hash: EventHash::of_body(&entry.body).0,
    })
}

/// Resolves a requested tree size: 0 means the current checkpoint's size.
pub fn resolve_size(store: &dyn Storage, requested: u64) -> Result<u64, LogError> {
    let current = current_size(store)?;
    if current == 0 {
        return Err(LogError::NotFound(
            "the log is empty: there is no checkpoint yet".into(),
        ));
    }
    match requested {
        0 => Ok(current),
        n if n > current => Err(LogError::InvalidArgument(format!(
            "tree size {n} is larger than the current checkpoint's size {current}"
        ))),
        n => Ok(n),
    }
}

fn get_node(store: &dyn Storage, level: u32, index: u64) -> Result<Hash, LogError> {
    store.node(level, index)?.ok_or_else(|| {
        LogError::Store(StorageError::Corrupt(format!(
            "Merkle node ({level},{index}) is missing from the store"
        )))
    })
}

/// Root of the tree of `size` leaves (size ≤ current).
pub fn root_at(store: &dyn Storage, size: u64) -> Result<Hash, LogError> {
    merkle::root_at(size, |l, i| get_node(store, l, i))
}

/// Entries at the end of the log whose leaf hashes [`check_against_checkpoint`] recomputes
/// from their bytes (one Merkle leaf block: the last group's entries, or its tail).
pub const TAIL_CHECKED: u64 = 16;

/// Checks, before a server serves a store, that it still holds the log its last signed
/// checkpoint describes: the checkpoint verifies with the log key (or is signed by another key:
/// a retired one after a rotation) and names the stored tree
/// size, the root recomputed from the stored subtree hashes equals the
/// signed root, and the last [`TAIL_CHECKED`] entries hash to the leaves recorded for them
/// (so the last group's bytes are checked, not only its hashes). O(log n) reads. An empty log
/// passes. A mismatch is [`StorageError::CorruptAt`], naming what differs.
pub fn check_against_checkpoint(
    store: &dyn Storage,
    log_key: &crate::note::NoteVerifier,
    at: &str,
) -> Result<(), StorageError> {
    let corrupt = |detail: String| StorageError::CorruptAt {
        at: at.to_string(),
        detail,
    };
    // Size and checkpoint read together: servers sharing a database start while another
    // appends, and everything below the checkpoint's size never changes.
    let cut = store.cut()?;
    let size = cut.tree_size;
    let Some(note) = cut.checkpoint else {
        return match size {
            0 => Ok(()),
            n => Err(corrupt(format!("{n} entries but no signed checkpoint"))),
        };
    };
    // Signed by the log key; after a rotation (`loglink`) the last checkpoint may be the
    // retired key's, whose signature `verify --data-dir` checks along the link.
    let text = match crate::note::open_note(&note, std::slice::from_ref(log_key)) {
        Ok(opened) => opened.text,
        Err(crate::note::NoteError::NoVerifiedSignature { .. }) => note_text(&note)
            .ok_or_else(|| corrupt("the stored checkpoint is not a signed note".into()))?
            .to_string(),
        Err(e) => {
            return Err(corrupt(format!(
                "the stored checkpoint does not verify with the log key: {e}"
            )))
        }
    };
    let cp = Checkpoint::parse(&text)
        .map_err(|e| corrupt(format!("the stored checkpoint does not parse: {e}")))?;
    if cp.size != size {
        return Err(corrupt(format!(
            "the stored tree size is {size}, but the signed checkpoint is for {} entries",
            cp.size
        )));
    }
    if size == 0 {
        return Ok(());
    }
    let root = match root_at(store, size) {
        Ok(r) => r,
        Err(LogError::Store(e)) => return Err(e),
        Err(e) => return Err(corrupt(format!("the Merkle root cannot be computed: {e}"))),
    };
    if root != cp.root {
        return Err(corrupt(format!(
            "the Merkle root of the stored tree ({}) is not the signed checkpoint's root ({}) \
             for {size} entries",
            hex::encode(root),
            hex::encode(cp.root)
        )));
    }
    for index in size.saturating_sub(TAIL_CHECKED)..size {
        let bytes = store
            .entry(index)?
            .ok_or_else(|| corrupt(format!("entry {index} is missing")))?;
        let leaf = merkle::leaf_hash(&bytes);
        let recorded = match store.recorded_leaf(index)? {
            Some(h) => h,
            None => store
                .node(0, index)?
                .ok_or_else(|| corrupt(format!("the leaf hash of entry {index} is missing")))?,
        };
        if leaf != recorded {
            return Err(corrupt(format!(
                "entry {index} hashes to leaf {}, but the tree records {}",
                hex::encode(leaf),
                hex::encode(recorded)
            )));
        }
        let entry = <crate::pb::LogEntry as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| corrupt(format!("entry {index} does not decode: {e}")))?;
        if entry.index != index {
            return Err(corrupt(format!(
                "entry {index} says it is entry {}",
                entry.index
            )));
        }
    }
    Ok(())
}

/// An inclusion proof of one entry.
#[derive(Debug, Clone)]
pub struct Inclusion {
    pub index: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub root: Hash,
    pub hashes: Vec<Hash>,
}

/// Global index of the event with this hash.
pub fn index_of_event(store: &dyn Storage, hash: &[u8]) -> Result<u64, LogError> {
    let h = EventHash::from_slice(hash).ok_or_else(|| {
        LogError::InvalidArgument(format!("event hash is {} bytes, expected 32", hash.len()))
    })?;
    store
        .index_of_hash(&h)?
        .ok_or_else(|| LogError::NotFound(format!("no event with hash {} in the log", h.to_hex())))
}

/// Inclusion proof of entry `index` in the tree of `tree_size` leaves (0 = current size).
pub fn inclusion_proof(
    store: &dyn Storage,
    index: u64,
    tree_size: u64,
) -> Result<Inclusion, LogError> {
    let size = resolve_size(store, tree_size)?;
    if index >= size {
        let current = current_size(store)?;
        return Err(if index >= current {
            LogError::NotFound(format!(
                "entry {index} does not exist: the log has {current} entries"
            ))
        } else {
            LogError::InvalidArgument(format!(
                "entry {index} is not in the tree of size {size}; ask for a size above {index}"
            ))
        });
    }
    let hashes = merkle::inclusion_proof_at(index, size, |l, i| get_node(store, l, i))?;
    Ok(Inclusion {
        index,
        tree_size: size,
        leaf_hash: get_node(store, 0, index)?,
        root: root_at(store, size)?,
        hashes,
    })
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone)]
pub struct Consistency {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Hash,
    pub new_root: Hash,
    pub hashes: Vec<Hash>,
}

/// Consistency proof from `old_size` to `new_size` (0 = current size).
pub fn consistency_proof(
    store: &dyn Storage,
    old_size: u64,
    new_size: u64,
) -> Result<Consistency, LogError> {
    let new = resolve_size(store, new_size)?;
    if old_size == 0 {
        return Err(LogError::InvalidArgument(
            "old tree size must be at least 1: a proof from the empty tree proves nothing".into(),
        ));
    }
    if old_size > new {
        return Err(LogError::InvalidArgument(format!(
            "old tree size {old_size} is larger than the new tree size {new}"
        )));
    }
    let hashes = merkle::consistency_proof_at(old_size, new, |l, i| get_node(store, l, i))?;
    Ok(Consistency {
        old_size,
        new_size: new,
        old_root: root_at(store, old_size)?,
        new_root: root_at(store, new)?,
        hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Group, NewEntry};
    use crate::store::Store;
    use std::collections::HashMap;

    /// A store holding `n` entries in groups of 3, with nodes and a signed checkpoint as the
    /// writer stores them; returns it with the reference leaf hashes.
    fn store_with(n: u64) -> (tempfile::TempDir, Store, Vec<Hash>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = crate::note::NoteSigner::generate("test.log").unwrap();
        let mut nodes: HashMap<(u32, u64), Hash> = HashMap::new();
        let mut leaves = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + 3).min(n);
            let mut batch = Group::default();
            for i in start..end {
                let bytes = format!("entry {i}").into_bytes();
                let leaf = merkle::leaf_hash(&bytes);
                leaves.push(leaf);
                let done = merkle::nodes_completed_by_append(i, leaf, |l, x| {
                    nodes.get(&(l, x)).copied().ok_or(())
                })
                .unwrap();
                for (id, h) in done {
                    nodes.insert(id, h);
                    batch.nodes.push((id, h));
                }
                batch.entries.push(NewEntry {
                    index: i,
                    bytes,
                    event_hash: EventHash([i as u8; 32]),
                    chain_id: "A".into(),
                    seq: i,
                });
            }
            let cp = Checkpoint {
                origin: "test.log".into(),
                size: end,
                root: merkle::root(&leaves),
                extensions: vec![],
            };
            batch.tree_size = end;
            batch.checkpoint = Some(crate::note::sign_note(&cp.to_text(), &[&key]).unwrap());
            store.commit(&batch).unwrap();
            start = end;
        }
        (dir, store, leaves)
    }

    #[test]
    fn proofs_from_the_store_equal_the_reference_proofs_at_every_size() {
        let (_d, store, leaves) = store_with(13);
        for size in 1..=13u64 {
            let l = &leaves[..size as usize];
            assert_eq!(root_at(&store, size).unwrap(), merkle::root(l));
            for index in 0..size {
                let p = inclusion_proof(&store, index, size).unwrap();
                assert_eq!(p.hashes, merkle::inclusion_proof(l, index).unwrap());
                assert_eq!(p.leaf_hash, leaves[index as usize]);
            }
            for old in 1..=size {
                let c = consistency_proof(&store, old, size).unwrap();
                assert_eq!(c.hashes, merkle::consistency_proof(l, old).unwrap());
            }
        }
        let cp = checkpoint(&store).unwrap().unwrap();
        assert_eq!(cp.checkpoint.size, 13);
        assert_eq!(cp.checkpoint.root, merkle::root(&leaves));
    }

    #[test]
    fn sizes_and_indexes_outside_the_log_are_refused_precisely() {
        let (_d, store, _) = store_with(5);
        let msg = |r: Result<Inclusion, LogError>| match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("must fail"),
        };
        assert!(matches!(resolve_size(&store, 0), Ok(5)));
        assert_eq!(
            msg(inclusion_proof(&store, 0, 6)),
            "tree size 6 is larger than the current checkpoint's size 5"
        );
        assert_eq!(
            msg(inclusion_proof(&store, 5, 0)),
            "entry 5 does not exist: the log has 5 entries"
        );
        assert_eq!(
            msg(inclusion_proof(&store, 3, 2)),
            "entry 3 is not in the tree of size 2; ask for a size above 3"
        );
        assert!(matches!(
            consistency_proof(&store, 0, 3),
            Err(LogError::InvalidArgument(_))
        ));
        assert!(matches!(
            consistency_proof(&store, 4, 3),
            Err(LogError::InvalidArgument(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        let store = Store::open(empty.path()).unwrap();
        assert!(matches!(checkpoint(&store), Ok(None)));
        assert!(matches!(
            inclusion_proof(&store, 0, 0),
            Err(LogError::NotFound(_))
        ));
    }
}
