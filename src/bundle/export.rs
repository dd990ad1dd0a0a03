//! Building a bundle: from a running server over gRPC (`GetCheckpoint`, `GetChain`,
//! `GetEntries`, `GetInclusionProof`, `GetConsistencyProof`), or from a stopped data
//! directory's store through `log`. Both pin every proof to one checkpoint: the latest at the
//! start of the export; entries appended later are left out.

use super::{b64, Anchors, Bundle, Chain, ConsistencyProof, Entry, FORMAT};
use crate::client::{status_error, Client};
use crate::loglink::LOG_CHAIN;
use crate::note::{NoteSigner, NoteVerifier};
use crate::pb::{
    get_inclusion_proof_request::Leaf, EventBody, GetCheckpointRequest, GetConsistencyProofRequest,
    GetEntriesRequest, GetInclusionProofRequest, GetSignedChainHeadRequest, LogEntry,
};
use crate::registry::KEYS_CHAIN;
use crate::storage::Storage;
use anyhow::{bail, Context};
use prost::Message;

/// Which chains go into the bundle.
#[derive(Debug, Clone)]
pub enum Selection {
    Chains(Vec<String>),
    All,
}

pub fn anchors(log_key: &NoteVerifier, admins: &[NoteVerifier]) -> Anchors {
    Anchors {
        log_key: log_key.to_key_string(),
        admin_keys: admins.iter().map(|a| a.to_key_string()).collect(),
    }
}

fn hashes(h: &[[u8; 32]]) -> Vec<String> {
    h.iter().map(|h| b64(h)).collect()
}

/// Exports from an opened store (the server must not be running on it). With the log's
/// signing key (`DATA_DIR/log.key`) each chain gets its signed head statement.
pub fn from_store(
    store: &dyn Storage,
    anchors: Anchors,
    log_key: Option<&NoteSigner>,
    sel: &Selection,
    since: &[u64],
) -> anyhow::Result<Bundle> {
    let cp = crate::log::checkpoint(store)?
        .context("the log is empty: there is no checkpoint to export against")?;
    let size = cp.checkpoint.size;
    let ids = match sel {
        Selection::All => store
            .chain_ids()?
            .into_iter()
            .filter(|c| !crate::loglink::admin_signed(c))
            .collect(),
        Selection::Chains(ids) => ids.clone(),
    };
    let chain_entries = |id: &str| -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for index in store.chain_indices(id)? {
            if index >= size {
                continue;
            }
            let bytes = store
                .entry(index)?
                .with_context(|| format!("entry {index} of chain {id} is missing"))?;
            let p = crate::log::inclusion_proof(store, index, size)?;
            out.push(Entry {
                index,
                entry: b64(&bytes),
                proof: hashes(&p.hashes),
            });
        }
        Ok(out)
    };
    let signed_head = |id: &str| -> anyhow::Result<Option<String>> {
        let Some(k) = log_key else {
            return Ok(None);
        };
        let st = crate::log::chain_head_statement(store, &k.name, id, size)?;
        Ok(Some(crate::note::sign_note(&st.to_text(), &[k])?))
    };
    let mut chains = Vec::new();
    for id in ids {
        let entries = chain_entries(&id)?;
        if entries.is_empty() {
            bail!("chain {id} has no entries in the log (size {size})");
        }
        let head = signed_head(&id)?;
        chains.push(Chain {
            chain_id: id,
            entries,
            head,
        });
    }
    let registry = chain_entries(KEYS_CHAIN)?;
    let log_links = chain_entries(LOG_CHAIN)?;
    let mut consistency = Vec::new();
    for old in with_link_sizes(since, &log_links) {
        let p = crate::log::consistency_proof(store, old, size)
            .with_context(|| format!("consistency proof from size {old}"))?;
        consistency.push(ConsistencyProof {
            old_size: old,
            proof: hashes(&p.hashes),
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        exported_at: crate::time::rfc3339(crate::time::now_nanos()),
        anchors,
        checkpoint: cp.note,
        tree_size: size,
        registry_head: match registry.is_empty() {
            true => None,
            false => signed_head(KEYS_CHAIN)?,
        },
        registry,
        log_links,
        chains,
        consistency,
        later_checkpoints: Vec::new(),
    })
}

/// The sizes to prove consistency from: the `--since-size` ones, then the final checkpoint of
/// every log link (so `verify` can check each retired key's final checkpoint is a prefix).
fn with_link_sizes(since: &[u64], links: &[Entry]) -> Vec<u64> {
    let mut sizes = since.to_vec();
    for e in links {
        let size = super::unb64(&e.entry)
            .ok()
            .and_then(|b| LogEntry::decode(b.as_slice()).ok())
            .and_then(|e| EventBody::decode(e.body.as_slice()).ok())
            .and_then(|b| crate::loglink::Link::of_body(&b))
            .and_then(Result::ok)
            .map(|l| l.final_checkpoint.size);
        if let Some(s) = size.filter(|s| !sizes.contains(s)) {
            sizes.push(s);
        }
    }
    sizes
}

/// Exports from a running server over gRPC.
pub async fn from_server(
    c: &mut Client,
    anchors: Anchors,
    sel: &Selection,
    since: &[u64],
) -> anyhow::Result<Bundle> {
    let cp = pinned_checkpoint(c).await?;
    let size = cp.tree_size;
    let ids: Vec<String> = match sel {
        Selection::Chains(ids) => ids.clone(),
        Selection::All => {
            let mut ids = std::collections::BTreeSet::new();
            let mut start = 0;
            while start < size {
                let page = c
                    .get_entries(GetEntriesRequest { start, limit: 1000 })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if page.entries.is_empty() {
                    break;
                }
                for e in &page.entries {
                    let entry = LogEntry::decode(e.entry.as_slice())?;
                    let body = EventBody::decode(entry.body.as_slice())?;
                    if e.index < size && !crate::loglink::admin_signed(&body.chain_id) {
                        ids.insert(body.chain_id);
                    }
                }
                start = page.next;
            }
            ids.into_iter().collect()
        }
    };
    let mut chains = Vec::new();
    for id in &ids {
        let entries = server_chain(c, id, size).await?;
        if entries.is_empty() {
            bail!("chain {id} has no entries in the log (size {size})");
        }
        let head = server_head(c, id, size).await?;
        chains.push(Chain {
            chain_id: id.clone(),
            entries,
            head,
        });
    }
    let registry = match server_chain(c, KEYS_CHAIN, size).await {
        Ok(r) => r,
        Err(e) if e.to_string().contains("does not exist") => Vec::new(),
        Err(e) => return Err(e),
    };
    let registry_head = match registry.is_empty() {
        true => None,
        false => server_head(c, KEYS_CHAIN, size).await?,
    };
    let log_links = match server_chain(c, LOG_CHAIN, size).await {
        Ok(r) => r,
        Err(e) if e.to_string().contains("does not exist") => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut consistency = Vec::new();
    for old in with_link_sizes(since, &log_links) {
        let p = c
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: old,
                new_size: size,
            })
            .await
            .map_err(status_error)
            .with_context(|| format!("consistency proof from size {old}"))?
            .into_inner();
        consistency.push(ConsistencyProof {
            old_size: old,
            proof: p.hashes.iter().map(|h| b64(h)).collect(),
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        exported_at: crate::time::rfc3339(crate::time::now_nanos()),
        anchors,
        checkpoint: cp.checkpoint,
        tree_size: size,
        registry,
        registry_head,
        log_links,
        chains,
        consistency,
        later_checkpoints: Vec::new(),
    })
}

/// How long an export waits for the log's witnesses to cosign the current checkpoint.
pub const COSIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The checkpoint a server export pins to: for a witnessed log, the cosigned checkpoint once
/// it covers the log's current size (waiting up to [`COSIGN_WAIT`]: the log submits once a
/// second), so the bundle carries the cosignatures; otherwise the latest signed checkpoint.
async fn pinned_checkpoint(c: &mut Client) -> anyhow::Result<crate::pb::GetCheckpointResponse> {
    let first = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if first.witnesses == 0 {
        return Ok(first);
    }
    let deadline = tokio::time::Instant::now() + COSIGN_WAIT;
    let mut cp = first.clone();
    loop {
        if !cp.cosigned_checkpoint.is_empty() && cp.cosigned_tree_size >= first.tree_size {
            let note = crate::log::note_text(&cp.cosigned_checkpoint).unwrap_or_default();
            let parsed = crate::note::Checkpoint::parse(note)?;
            return Ok(crate::pb::GetCheckpointResponse {
                checkpoint: cp.cosigned_checkpoint.clone(),
                tree_size: cp.cosigned_tree_size,
                root_hash: parsed.root.to_vec(),
                ..cp
            });
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "note: no witness cosigned a checkpoint of size {} or more within {COSIGN_WAIT:?}; the bundle carries the log's signature only",
                first.tree_size
            );
            return Ok(first);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        cp = c
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
    }
}

/// The server's signed head statement of a chain at `size`; `None` from a server that
/// predates them (the bundle then cannot prove the chain's end).
async fn server_head(c: &mut Client, id: &str, size: u64) -> anyhow::Result<Option<String>> {
    match c
        .get_signed_chain_head(GetSignedChainHeadRequest {
            chain_id: id.to_string(),
            tree_size: size,
        })
        .await
    {
        Ok(h) => Ok(Some(h.into_inner().note)),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
        Err(s) => Err(status_error(s)).with_context(|| format!("head of chain {id}")),
    }
}

async fn server_chain(c: &mut Client, id: &str, size: u64) -> anyhow::Result<Vec<Entry>> {
    let chain = crate::client::get_whole_chain(c, id)
        .await
        .map_err(status_error)?;
    let mut out = Vec::new();
    for e in chain.entries.into_iter().filter(|e| e.index < size) {
        let p = c
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(Leaf::Index(e.index)),
                tree_size: size,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        out.push(Entry {
            index: e.index,
            entry: b64(&e.entry),
            proof: p.hashes.iter().map(|h| b64(h)).collect(),
        });
    }
    Ok(out)
}
