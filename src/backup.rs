//! Online backup and restore.
//!
//! **Server side** (`celltrail.v1.Admin/Backup`): a consistent snapshot cut at a group-commit
//! boundary. The writer thread is paused only long enough to record the tree size `N`, the
//! signed checkpoint and the trees that change in place (`chains`, `meta`, and any tree this
//! module does not know). The trees that only ever gain keys (`entries`, `chain_events`,
//! `by_hash`, `nodes`) are then streamed while appends continue, keeping exactly the records
//! that belong to the first `N` log entries. The result is the store as it stood after the group
//! that made the log `N` entries long.
//!
//! **Client side** (`celltrail backup --to DIR`): writes the records into a new sled store at
//! `DIR/db` plus `log.vkey`, `trust-anchors.txt` and `backup.json`, then audits the copy.
//! `celltrail restore --from DIR --data-dir NEW --log-key FILE` copies a backup into a new data
//! directory a server can start on. The log's private key never travels with a backup.
//!
//! The audit ([`audit_store`]) checks what a copy must satisfy without trusting the server:
//! every chain links (`rules::check_link`, the writer's own rule),
//! the Merkle root recomputed from the entries equals the root of the stored checkpoint, and
//! the checkpoint is signed by the log key.

use crate::crypto::EventHash;
use crate::datadir::DataDir;
use crate::ledger::Ledger;
use crate::merkle;
use crate::note::{Checkpoint, NoteVerifier};
use crate::pb::admin_server::Admin;
use crate::pb::{BackupChunk, BackupHeader, BackupRecord, BackupRequest, EventBody, LogEntry};
use crate::rules::{check_link, Head};
use crate::store::{RawRecord, Store, APPEND_ONLY_TREES};
use anyhow::{bail, Context};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Records per streamed message.
const RECORDS_PER_CHUNK: usize = 512;

/// What the server needs to describe itself in a backup header (all public).
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub log_vkey: String,
    pub trust_anchors: String,
}

pub struct AdminService {
    ledger: Arc<Ledger>,
    info: ServerInfo,
}

impl AdminService {
    pub fn new(ledger: Arc<Ledger>, info: ServerInfo) -> Self {
        AdminService { ledger, info }
    }
}

/// The part of the snapshot taken while the writer is paused.
struct Cut {
    tree_size: u64,
    checkpoint: String,
    records: Vec<BackupRecord>,
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Whether a record of an append-only tree belongs to the first `n` log entries (layouts as
/// written by `store::Store::commit`).
fn in_cut(tree: &str, key: &[u8], value: &[u8], n: u64) -> bool {
    match tree {
        "entries" => be_u64(key).is_some_and(|i| i < n),
        "chain_events" | "by_hash" | "bags" => be_u64(value).is_some_and(|i| i < n),
        // A leaf block b holds the leaves of entries [b·LEAF_BLOCK, (b+1)·LEAF_BLOCK).
        "leaves" => be_u64(key)
            .is_some_and(|b| (b as u128 + 1) * crate::store::LEAF_BLOCK as u128 <= n as u128),
        "nodes" => {
            if key.len() != 9 {
                return false;
            }
            let level = key[0] as u32;
            let Some(index) = be_u64(&key[1..]) else {
                return false;
            };
            // A perfect subtree (level, index) covers leaves [index·2^level, (index+1)·2^level).
            ((index as u128 + 1) << level) <= n as u128
        }
        _ => false,
    }
}

fn take_cut(store: &Store) -> Result<Cut, crate::store::StoreError> {
    let tree_size = store.tree_size()?;
    let checkpoint = store.checkpoint()?.unwrap_or_default();
    let mut records = Vec::new();
    for tree in store.raw_tree_names() {
        if APPEND_ONLY_TREES.contains(&tree.as_str()) {
            continue;
        }
        for item in store.raw_scan(&tree)? {
            let (key, value) = item?;
            records.push(BackupRecord {
                tree: tree.clone(),
                key,
                value,
            });
        }
    }
    Ok(Cut {
        tree_size,
        checkpoint,
        records,
    })
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = ChunkStream;

    async fn backup(
        &self,
        _req: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let store = self.ledger.store().clone();
        let s = store.clone();
        let cut = self
            .ledger
            .at_group_boundary(move || take_cut(&s))
            .await
            .map_err(Status::from)?
            .map_err(|e| Status::unavailable(format!("backup cut failed: {e}")))?;
        tracing::info!(tree_size = cut.tree_size, "backup cut taken");
        let header = BackupHeader {
            tree_size: cut.tree_size,
            checkpoint: cut.checkpoint,
            log_vkey: self.info.log_vkey.clone(),
            trust_anchors: self.info.trust_anchors.clone(),
            taken_at_unix_nanos: crate::time::now_nanos(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BackupChunk, Status>>(4);
        let n = cut.tree_size;
        let first = cut.records;
        tokio::task::spawn_blocking(move || {
            let send = |chunk: BackupChunk| tx.blocking_send(Ok(chunk)).is_ok();
            let mut header = Some(header);
            let mut pending: Vec<BackupRecord> = Vec::with_capacity(RECORDS_PER_CHUNK);
            let flush = |pending: &mut Vec<BackupRecord>, header: &mut Option<BackupHeader>| {
                send(BackupChunk {
                    header: header.take(),
                    records: std::mem::take(pending),
                })
            };
            for r in first {
                pending.push(r);
                if pending.len() == RECORDS_PER_CHUNK && !flush(&mut pending, &mut header) {
                    return;
                }
            }
            for tree in APPEND_ONLY_TREES {
                let scan = match store.raw_scan(tree) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::unavailable(e.to_string())));
                        crate::metrics::backup_taken(false);
                        return;
                    }
                };
                for item in scan {
                    let (key, value) = match item {
                        Ok(kv) => kv,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(Status::unavailable(e.to_string())));
                            crate::metrics::backup_taken(false);
                            return;
                        }
                    };
                    if !in_cut(tree, &key, &value, n) {
                        continue;
                    }
                    pending.push(BackupRecord {
                        tree: tree.to_string(),
                        key,
                        value,
                    });
                    if pending.len() == RECORDS_PER_CHUNK && !flush(&mut pending, &mut header) {
                        return;
                    }
                }
            }
            if (!pending.is_empty() || header.is_some()) && !flush(&mut pending, &mut header) {
                return;
            }
            crate::metrics::backup_taken(true);
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// What a backup directory's `backup.json` records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub tree_size: u64,
    pub checkpoint: String,
    pub taken_at: String,
    pub records: u64,
    pub source: String,
}

/// Result of auditing a store copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub tree_size: u64,
    pub chains: usize,
    pub root: [u8; 32],
}

/// Checks a store copy: every chain links, entry indices are dense, the Merkle root of the
/// entries equals the stored checkpoint's root, and the checkpoint is signed by `log_key`.
pub fn audit_store(store: &Store, log_key: Option<&NoteVerifier>) -> anyhow::Result<Audit> {
    let size = store.tree_size()?;
    let mut leaves = Vec::with_capacity(size.min(1 << 24) as usize);
    let mut heads: HashMap<String, Head> = HashMap::new();
    let mut next = 0u64;
    while next < size {
        let page = store.entries_from(next, 4096)?;
        if page.is_empty() {
            bail!("entry {next} is missing (tree size is {size})");
        }
        for (index, bytes) in page {
            if index != next {
                bail!("entry {next} is missing (next stored entry is {index})");
            }
            let entry = LogEntry::decode(bytes.as_slice())
                .with_context(|| format!("entry {index} does not decode"))?;
            if entry.index != index {
                bail!("entry {index} says it is entry {}", entry.index);
            }
            let body = EventBody::decode(entry.body.as_slice())
                .with_context(|| format!("entry {index}: body does not decode"))?;
            let hash = EventHash::of_body(&entry.body).0;
            // The writer's own link rule: seq 0 with a zero prev_hash, then each next seq
            // naming the previous event's hash.
            check_link(&body, heads.get(&body.chain_id))
                .map_err(|e| anyhow::anyhow!("entry {index}: {e}"))?;
            heads.insert(
                body.chain_id,
                Head {
                    seq: body.seq,
                    hash,
                    state_name: String::new(),
                    state: None,
                    hold: Vec::new(),
                },
            );
            leaves.push(merkle::leaf_hash(&bytes));
            next += 1;
            if next == size {
                break;
            }
        }
    }
    for (chain, last) in &heads {
        let stored = store
            .head(chain)?
            .with_context(|| format!("chain {chain} has entries but no stored head"))?;
        if stored.seq != last.seq || stored.hash != last.hash {
            bail!(
                "stored head of chain {chain} (seq {}) does not match its last entry (seq {})",
                stored.seq,
                last.seq
            );
        }
    }
    let root = merkle::root(&leaves);
    match store.checkpoint()? {
        None if size == 0 => {}
        None => bail!("the store has {size} entries but no checkpoint"),
        Some(note) => {
            let text = match log_key {
                Some(k) => {
                    crate::note::open_note(&note, std::slice::from_ref(k))
                        .map_err(|e| anyhow::anyhow!("checkpoint signature: {e}"))?
                        .text
                }
                None => note.split("\n\n").next().unwrap_or("").to_string() + "\n",
            };
            let cp = Checkpoint::parse(&text).map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
            if cp.size != size {
                bail!(
                    "checkpoint is for size {}, the store has {size} entries",
                    cp.size
                );
            }
            if cp.root != root {
                bail!(
                    "Merkle root of the entries {} differs from the checkpoint root {}",
                    hex::encode(root),
                    hex::encode(cp.root)
                );
            }
        }
    }
    Ok(Audit {
        tree_size: size,
        chains: heads.len(),
        root,
    })
}

fn ensure_empty_dir(dir: &Path) -> anyhow::Result<()> {
    check_empty_dir(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn check_empty_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose a new directory",
            dir.display()
        );
    }
    Ok(())
}

/// `celltrail backup --to DIR`: streams a snapshot from the server at `server` into `DIR`.
pub async fn backup_to(server: &str, dir: &Path) -> anyhow::Result<(Manifest, Audit)> {
    backup_to_with(server, &crate::tls::TlsOptions::default(), dir).await
}

/// [`backup_to`] over TLS when `tls` names a CA. `DIR` is created only once the server has
/// started the snapshot, and removed again (or emptied, if it existed) when the backup fails.
pub async fn backup_to_with(
    server: &str,
    tls: &crate::tls::TlsOptions,
    dir: &Path,
) -> anyhow::Result<(Manifest, Audit)> {
    check_empty_dir(dir)?;
    let existed = dir.exists();
    let endpoint = crate::client::endpoint(server, tls)?;
    let url = endpoint.uri().to_string();
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {url}: {}",
            crate::client::error_chain(&e)
        )
    })?;
    let mut client = crate::pb::admin_client::AdminClient::new(channel);
    let stream = client
        .backup(BackupRequest {})
        .await
        .map_err(crate::client::status_error)?
        .into_inner();
    ensure_empty_dir(dir)?;
    let done = receive_backup(stream, dir, url).await;
    if done.is_err() {
        let _ = match existed {
            false => std::fs::remove_dir_all(dir),
            true => std::fs::read_dir(dir).and_then(|entries| {
                for e in entries {
                    let p = e?.path();
                    match p.is_dir() {
                        true => std::fs::remove_dir_all(&p)?,
                        false => std::fs::remove_file(&p)?,
                    }
                }
                Ok(())
            }),
        };
    }
    done
}

async fn receive_backup(
    mut stream: tonic::Streaming<crate::pb::BackupChunk>,
    dir: &Path,
    url: String,
) -> anyhow::Result<(Manifest, Audit)> {
    let layout = DataDir::new(dir);
    let store = Store::open(&layout.db())?;
    let mut header = None;
    let mut count = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(crate::client::status_error)?
    {
        if let Some(h) = chunk.header {
            header = Some(h);
        }
        let mut by_tree: HashMap<String, Vec<RawRecord>> = HashMap::new();
        for r in chunk.records {
            count += 1;
            by_tree.entry(r.tree).or_default().push((r.key, r.value));
        }
        for (tree, records) in by_tree {
            store.raw_insert(&tree, &records)?;
        }
    }
    let header = header.context("the server sent no backup header")?;
    store.raw_flush()?;
    let log_key = if header.log_vkey.is_empty() {
        None
    } else {
        std::fs::write(layout.log_vkey(), format!("{}\n", header.log_vkey.trim()))?;
        Some(
            NoteVerifier::from_key_string(header.log_vkey.trim())
                .map_err(|e| anyhow::anyhow!("server's log verifier key: {e}"))?,
        )
    };
    if !header.trust_anchors.is_empty() {
        std::fs::write(layout.trust_anchors(), &header.trust_anchors)?;
    }
    let audit =
        audit_store(&store, log_key.as_ref()).context("the backup copy does not audit cleanly")?;
    if audit.tree_size != header.tree_size {
        bail!(
            "backup holds {} entries, the cut was at {}",
            audit.tree_size,
            header.tree_size
        );
    }
    let manifest = Manifest {
        tree_size: header.tree_size,
        checkpoint: header.checkpoint,
        taken_at: crate::time::rfc3339(header.taken_at_unix_nanos),
        records: count,
        source: url,
    };
    std::fs::write(
        layout.backup_manifest(),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok((manifest, audit))
}

/// `celltrail restore`: makes a new data directory from a backup directory.
pub fn restore(from: &Path, data_dir: &Path, log_key_file: &Path) -> anyhow::Result<Audit> {
    let (src, dst) = (DataDir::new(from), DataDir::new(data_dir));
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(src.backup_manifest())
            .with_context(|| format!("{} is not a celltrail backup", from.display()))?,
    )?;
    let log_key = crate::keys::read_key_file(log_key_file)?;
    let vkey_path = src.log_vkey();
    if vkey_path.exists() {
        let vkey = std::fs::read_to_string(&vkey_path)?;
        if vkey.trim() != log_key.verifier().to_key_string() {
            bail!(
                "{} is not the log key of this backup (its verifier key is {})",
                log_key_file.display(),
                vkey.trim()
            );
        }
    }
    ensure_empty_dir(data_dir)?;
    {
        let src_store = Store::open(&src.db())?;
        let dst_store = Store::open(&dst.db())?;
        for tree in src_store.raw_tree_names() {
            let mut batch = Vec::with_capacity(RECORDS_PER_CHUNK);
            for item in src_store.raw_scan(&tree)? {
                batch.push(item?);
                if batch.len() == RECORDS_PER_CHUNK {
                    dst_store.raw_insert(&tree, &batch)?;
                    batch.clear();
                }
            }
            dst_store.raw_insert(&tree, &batch)?;
        }
        dst_store.raw_flush()?;
    }
    let copy = |from: PathBuf, to: PathBuf| -> anyhow::Result<()> {
        if from.exists() {
            std::fs::copy(&from, to)?;
        }
        Ok(())
    };
    copy(src.log_vkey(), dst.log_vkey())?;
    copy(src.trust_anchors(), dst.trust_anchors())?;
    // The file is copied as it is: an encrypted log key stays encrypted.
    copy_private(log_key_file, &dst.log_key())?;
    let store = Store::open(&dst.db())?;
    let audit = audit_store(&store, Some(&log_key.verifier()))?;
    if audit.tree_size != manifest.tree_size {
        bail!(
            "restored store holds {} entries, the backup manifest says {}",
            audit.tree_size,
            manifest.tree_size
        );
    }
    Ok(audit)
}

/// Copies a private key file to a new 0600 file (never over an existing one).
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?,
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::in_cut;

    #[test]
    fn node_is_in_cut_only_when_its_whole_subtree_is() {
        let key = |level: u8, index: u64| {
            let mut k = vec![level];
            k.extend_from_slice(&index.to_be_bytes());
            k
        };
        assert!(in_cut("nodes", &key(0, 4), b"", 5));
        assert!(!in_cut("nodes", &key(0, 5), b"", 5));
        assert!(in_cut("nodes", &key(2, 0), b"", 4)); // leaves 0..4
        assert!(!in_cut("nodes", &key(2, 1), b"", 7)); // leaves 4..8
        assert!(in_cut("leaves", &1u64.to_be_bytes(), b"", 32)); // leaves 16..32
        assert!(!in_cut("leaves", &1u64.to_be_bytes(), b"", 31));
        assert!(in_cut("entries", &6u64.to_be_bytes(), b"", 7));
        assert!(!in_cut("by_hash", b"h", &7u64.to_be_bytes(), 7));
    }
}
