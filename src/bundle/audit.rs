//! Auditing a whole copied data directory (`verify --data-dir`): every entry `0..size` present
//! and matching the leaf hash recorded when it was appended, the key registry and every chain
//! replayed with the same checks as a bundle (chains grouped by the chain id inside each entry,
//! so the store's own indexes are not trusted), and the Merkle root recomputed from all entries
//! and compared with the stored signed checkpoint.

use super::verify::{
    check_previous, checkpoint_signer, open_checkpoint, peek_links, replay, replay_links, top,
    CheckpointInfo, Ctx, Failure, Item, Report,
};
use crate::loglink::{Link, LOG_CHAIN};
use crate::merkle;
use crate::note::NoteVerifier;
use crate::pb::{EventBody, LogEntry};
use crate::policy::Policy;
use crate::registry::KEYS_CHAIN;
use crate::storage::Storage;
use prost::Message;

/// Where a data directory's trust comes from.
pub struct DataDirKeys {
    pub log_key: NoteVerifier,
    pub log_key_source: String,
    pub admins: Vec<NoteVerifier>,
}

/// The report for a store that cannot be audited at all (it does not open: damaged files, or
/// it lost groups it had committed): FAILED, with the store's own error naming where.
pub fn unopenable_store(
    keys: &DataDirKeys,
    policy: &Policy,
    error: impl std::fmt::Display,
) -> Report {
    Report::new(&keys.log_key.to_key_string(), &keys.log_key_source, policy)
        .fail(top(error.to_string()))
}

/// Audits a whole copied store: every entry present and matching its stored leaf hash, every
/// chain replayed (links, signatures, registry, policy), and the Merkle root recomputed from
/// all entries compared with the stored signed checkpoint.
pub fn verify_store(
    store: &dyn Storage,
    keys: &DataDirKeys,
    policy: &Policy,
    previous: Option<&str>,
) -> Report {
    let mut report = Report::new(&keys.log_key.to_key_string(), &keys.log_key_source, policy);
    let note = match store.checkpoint() {
        Ok(Some(n)) => n,
        Ok(None) => return report.fail(top("the store holds no signed checkpoint")),
        Err(e) => return report.fail(top(e.to_string())),
    };
    // After a log key rotation the checkpoint is signed by the last link's key. The store's
    // index only picks the key here; the links are checked from the entries themselves below.
    let indexed_links: Vec<Item> = match store.chain_indices(LOG_CHAIN) {
        Ok(ix) => ix
            .into_iter()
            .filter_map(|index| {
                let bytes = store.entry(index).ok().flatten()?;
                Some(Item {
                    index,
                    bytes,
                    proof: None,
                })
            })
            .collect(),
        Err(e) => return report.fail(top(e.to_string())),
    };
    let signer = match peek_links(&indexed_links).and_then(|l| checkpoint_signer(&keys.log_key, &l))
    {
        Ok((signer, followed)) => {
            report.log_key = signer.to_key_string();
            if let Some(n) = followed {
                report.log_key_source.push_str(&n);
            }
            signer
        }
        Err(f) => return report.fail(f),
    };
    let cp = match open_checkpoint(&note, &signer, "stored checkpoint") {
        Ok(cp) => cp,
        Err(f) => return report.fail(f),
    };
    report.checkpoint = Some(CheckpointInfo {
        origin: cp.origin.clone(),
        size: cp.size,
        root: hex::encode(cp.root),
    });
    match store.tree_size() {
        Ok(n) if n == cp.size => {}
        Ok(n) => {
            return report.fail(top(format!(
                "store tree_size is {n}, but its signed checkpoint has size {}",
                cp.size
            )))
        }
        Err(e) => return report.fail(top(e.to_string())),
    }
    // Every entry, in log order, against the leaf hash recorded when it was appended.
    let mut leaves = Vec::with_capacity(cp.size as usize);
    let mut by_chain: std::collections::BTreeMap<String, Vec<Item>> = Default::default();
    for index in 0..cp.size {
        let at = |reason: String| Failure {
            index: Some(index),
            chain: None,
            seq: None,
            reason,
        };
        let bytes = match store.entry(index) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return report.fail(at(format!(
                    "entry is missing from the store (the checkpoint covers {} entries)",
                    cp.size
                )))
            }
            Err(e) => return report.fail(at(e.to_string())),
        };
        let leaf = merkle::leaf_hash(&bytes);
        if let Ok(Some(stored)) = store.recorded_leaf(index) {
            if stored != leaf {
                return report.fail(at(format!(
                    "stored bytes hash to leaf {}, but the leaf recorded when it was appended is {}",
                    hex::encode(leaf),
                    hex::encode(stored)
                )));
            }
        }
        leaves.push(leaf);
        let chain = LogEntry::decode(bytes.as_slice())
            .ok()
            .and_then(|e| EventBody::decode(e.body.as_slice()).ok())
            .map(|b| b.chain_id)
            .unwrap_or_default();
        by_chain.entry(chain).or_default().push(Item {
            index,
            bytes,
            proof: None,
        });
    }
    if let Ok(extra) = store.entries_from(cp.size, 1) {
        if let Some((i, _)) = extra.first() {
            return report.fail(Failure {
                index: Some(*i),
                chain: None,
                seq: None,
                reason: format!(
                    "the store holds entries beyond its signed checkpoint (size {})",
                    cp.size
                ),
            });
        }
    }
    if let Some(prev) = previous {
        let proof = |old: u64| {
            merkle::consistency_proof(&leaves, old)
                .ok()
                .map(|p| p.iter().map(|h| h.to_vec()).collect())
        };
        match check_previous(prev, &signer, &cp, proof) {
            Ok(size) => report.previous_size = Some(size),
            Err(f) => return report.fail(f),
        }
    }
    let links = by_chain.remove(LOG_CHAIN).unwrap_or_default();
    match peek_links(&links).and_then(|l| checkpoint_signer(&keys.log_key, &l)) {
        Ok((s, _)) if s == signer => {}
        Ok((s, _)) => {
            return report.fail(top(format!(
                "the store's index of the {LOG_CHAIN} chain leads to log key {}, its entries to {}",
                signer.to_key_string(),
                s.to_key_string()
            )))
        }
        Err(f) => return report.fail(f),
    }
    let registry = by_chain.remove(KEYS_CHAIN).unwrap_or_default();
    let chains: Vec<(String, Vec<Item>)> = by_chain.into_iter().collect();
    let ctx = Ctx {
        root: None,
        policy: std::sync::Arc::new(policy.clone()),
        keep_events: false,
    };
    let failure = replay(&ctx, &registry, &chains, &keys.admins, &mut report);
    if let Some(f) = failure {
        return report.fail(f);
    }
    let prefix = |l: &Link| {
        let f = &l.final_checkpoint;
        match merkle::root(&leaves[..f.size.min(cp.size) as usize]) == f.root {
            true => Ok(()),
            false => Err("its root is not the root of the store's first entries".to_string()),
        }
    };
    if let Err(f) = replay_links(&ctx, &links, &keys.admins, &mut report, prefix) {
        return report.fail(f);
    }
    let root = merkle::root(&leaves);
    if root != cp.root {
        return report.fail(top(format!(
            "Merkle root recomputed from all {} entries is {}, but the signed checkpoint says {}",
            cp.size,
            hex::encode(root),
            hex::encode(cp.root)
        )));
    }
    report.inclusion_proofs = 0;
    report.ok = true;
    report
}
