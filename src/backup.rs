//! Online backup and restore, as logical copies: log entries, chain heads and the signed
//! checkpoint, never a backend's own layout.
//!
//! **Server side** (`celltrail.v1.Admin/Backup`): a consistent cut at a group-commit boundary.
//! The writer thread is paused only long enough to read the tree size `N` and the signed
//! checkpoint for `N` ([`Storage::cut`] via `Ledger::at_group_boundary`: two reads, however
//! large the store). The entries `0..N` never change, so they are then streamed while appends
//! continue, and after them each chain's head as of the cut (`Ledger::head_at`: the stored head,
//! or for a chain that moved on since, the last of its entries below `N`; chains created after
//! the cut are left out). The result is the log as it stood after the group that made it `N`
//! long.
//!
//! **Client side** (`celltrail backup --to DIR`): writes `entries.bin` (the entries, each a
//! length-delimited `BackupEntry`), `heads.json`, `log.vkey`, `trust-anchors.txt` and
//! `backup.json` (which holds the checkpoint), then audits the copy. `celltrail restore --from
//! DIR --data-dir NEW --log-key FILE` rebuilds a new store from the entries (every index and
//! Merkle node is computed again, by the code the writer uses), takes the heads from the backup
//! once each matches its chain's last entry, and checks that the root of the rebuilt tree is the
//! root of the signed checkpoint. A backup written before backups were logical (a copy of the
//! sled trees in `DIR/db`) is read through the store and restored the same way. The log's
//! private key never travels with a backup.
//!
//! The audit ([`audit_log`]) checks what a copy must satisfy without trusting the server: every
//! chain links (`rules::check_link`, the writer's own rule), every head names its chain's last
//! entry, the Merkle root recomputed from the entries equals the root of the checkpoint, and the
//! checkpoint is signed by the log key.

use crate::crypto::EventHash;
use crate::datadir::DataDir;
use crate::ledger::Ledger;
use crate::merkle;
use crate::note::{Checkpoint, NoteVerifier};
use crate::pb::admin_server::Admin;
use crate::pb::{
    BackupChunk, BackupEntry, BackupHead, BackupHeader, BackupRequest, EventBody, LogEntry,
};
use crate::rules::{bags_named, check_link, Head};
use crate::storage::{Group, NewEntry, Storage, StorageError};
use anyhow::{bail, Context};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Entries (or heads) per streamed message.
const ITEMS_PER_CHUNK: usize = 512;
/// Entries per group when a restore rebuilds a store.
const RESTORE_GROUP: usize = 4096;
/// `BackupHeader.format` and `Manifest.format` of a logical backup. 0 (absent) is the older
/// copy of sled trees.
pub const LOGICAL_FORMAT: u32 = 2;
/// Bytes of entries per streamed message (a message holds at least one entry).
const CHUNK_BYTES: usize = 1024 * 1024;
/// Messages a backup may have waiting for its client. With [`CHUNK_BYTES`] and one read of
/// [`ITEMS_PER_CHUNK`] entries (each at most `rules::MAX_ENTRY_BYTES`), what one backup holds
/// in memory: at most 4 MiB queued plus 32 MiB read.
const CHUNKS_QUEUED: usize = 4;
/// A backup whose client takes longer than this to accept the next message is cancelled.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the server needs to describe itself in a backup header (all public).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub log_vkey: String,
    pub trust_anchors: String,
}

pub struct AdminService {
    ledger: Arc<Ledger>,
    info: ServerInfo,
    challenges: crate::admin_auth::Challenges,
    /// One backup at a time.
    running: Arc<tokio::sync::Semaphore>,
    send_timeout: std::time::Duration,
}

impl AdminService {
    pub fn new(ledger: Arc<Ledger>, info: ServerInfo) -> Self {
        AdminService {
            ledger,
            info,
            challenges: Default::default(),
            running: Arc::new(tokio::sync::Semaphore::new(1)),
            send_timeout: SEND_TIMEOUT,
        }
    }

    /// Cancels a backup whose client does not take the next message within `t`.
    pub fn with_send_timeout(mut self, t: std::time::Duration) -> Self {
        self.send_timeout = t;
        self
    }
}

/// The heads of every chain as of the cut (`tree_size` entries), read without pausing the
/// writer: chains created after the cut are left out, a chain that moved on since is given
/// the head it had at the cut (`Ledger::head_at`).
fn heads_at(
    ledger: &Ledger,
    tree_size: u64,
) -> Result<Vec<BackupHead>, crate::ledger::LedgerError> {
    let mut heads = Vec::new();
    for chain_id in ledger.store().chain_ids()? {
        if let Some(h) = ledger.head_at(&chain_id, tree_size)? {
            heads.push(BackupHead {
                chain_id,
                seq: h.seq,
                hash: h.hash.to_vec(),
                state_name: h.state_name,
            });
        }
    }
    Ok(heads)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = ChunkStream;

    async fn backup(
        &self,
        req: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let ledger = self.ledger.clone();
        let who = self
            .challenges
            .verify("Backup", req.get_ref().auth.as_ref(), |id| {
                ledger.admin_key(id)
            })?;
        let permit = self.running.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "a backup is already running (one at a time); retry when it has finished",
            )
        })?;
        tracing::info!(admin = %who, "backup requested");
        let store = self.ledger.store().clone();
        let s = store.clone();
        // The only part done while the writer waits: two reads, whatever the store holds.
        let paused = std::time::Instant::now();
        let cut = self
            .ledger
            .at_group_boundary(move || s.cut())
            .await
            .map_err(Status::from)?
            .map_err(|e| Status::unavailable(format!("backup cut failed: {e}")))?;
        tracing::info!(
            tree_size = cut.tree_size,
            waited_us = paused.elapsed().as_micros() as u64,
            "backup cut taken"
        );
        let header = BackupHeader {
            tree_size: cut.tree_size,
            checkpoint: cut.checkpoint.unwrap_or_default(),
            log_vkey: self.info.log_vkey.clone(),
            trust_anchors: self.info.trust_anchors.clone(),
            taken_at_unix_nanos: crate::time::now_nanos(),
            format: LOGICAL_FORMAT,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BackupChunk, Status>>(CHUNKS_QUEUED);
        let n = cut.tree_size;
        let ledger = self.ledger.clone();
        let send_timeout = self.send_timeout;
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A client that stops reading cancels its backup after `send_timeout` instead of
            // holding this thread (and the permit) forever.
            let send = |item: Result<BackupChunk, Status>| {
                let sent = runtime
                    .block_on(tokio::time::timeout(send_timeout, tx.send(item)))
                    .is_ok_and(|r| r.is_ok());
                if !sent {
                    tracing::warn!("backup cancelled: the client stopped reading");
                }
                sent
            };
            let fail = |status: Status| {
                crate::metrics::backup_taken(false);
                let _ = send(Err(status));
            };
            let mut header = Some(header);
            let mut next = 0u64;
            while next < n {
                let want = ITEMS_PER_CHUNK.min((n - next) as usize);
                let page = match store.entries_from(next, want) {
                    Ok(p) if !p.is_empty() => p,
                    Ok(_) => {
                        return fail(Status::unavailable(format!(
                            "entry {next} is missing from the store"
                        )))
                    }
                    Err(e) => return fail(Status::unavailable(e.to_string())),
                };
                next = page.last().map_or(next, |(i, _)| i + 1);
                // Messages of at most about CHUNK_BYTES, each holding at least one entry.
                let mut entries = Vec::new();
                let mut bytes = 0usize;
                let mut page = page.into_iter().filter(|(i, _)| *i < n).peekable();
                while let Some((index, entry)) = page.next() {
                    bytes += entry.len();
                    entries.push(BackupEntry { index, entry });
                    if (bytes >= CHUNK_BYTES || page.peek().is_none())
                        && !send(Ok(BackupChunk {
                            header: header.take(),
                            entries: std::mem::take(&mut entries),
                            ..Default::default()
                        }))
                    {
                        crate::metrics::backup_taken(false);
                        return;
                    }
                    if bytes >= CHUNK_BYTES {
                        bytes = 0;
                    }
                }
            }
            // The heads last, as of the cut (read while appends go on).
            let heads = match heads_at(&ledger, n) {
                Ok(h) => h,
                Err(e) => {
                    return fail(Status::unavailable(format!(
                        "cannot read the chain heads of the cut: {e}"
                    )))
                }
            };
            let mut parts = heads.chunks(ITEMS_PER_CHUNK).peekable();
            while header.is_some() || parts.peek().is_some() {
                if !send(Ok(BackupChunk {
                    header: header.take(),
                    heads: parts.next().map(<[BackupHead]>::to_vec).unwrap_or_default(),
                    ..Default::default()
                })) {
                    crate::metrics::backup_taken(false);
                    return;
                }
            }
            crate::metrics::backup_taken(true);
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn challenge(
        &self,
        _req: Request<crate::pb::ChallengeRequest>,
    ) -> Result<Response<crate::pb::ChallengeResponse>, Status> {
        Ok(Response::new(crate::pb::ChallengeResponse {
            nonce: self.challenges.issue().to_vec(),
            server_time_unix_nanos: crate::time::now_nanos(),
        }))
    }
}

/// What a backup directory's `backup.json` records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`LOGICAL_FORMAT`]; absent (0) in a backup that copied sled trees into `db/`.
    #[serde(default)]
    pub format: u32,
    pub tree_size: u64,
    pub checkpoint: String,
    pub taken_at: String,
    /// Entries and heads received (sled records in a format-0 backup).
    pub records: u64,
    pub source: String,
}

/// Result of auditing a copy of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub tree_size: u64,
    pub chains: usize,
    pub root: [u8; 32],
}

/// Checks a log copy: entry indices are dense from 0 to `size`, every chain links, each head
/// in `heads` names its chain's last entry (and every chain has one), the Merkle root of the
/// entries equals the checkpoint's root, and the checkpoint is signed by `log_key`.
pub fn audit_log(
    size: u64,
    entries: impl Iterator<Item = anyhow::Result<(u64, Vec<u8>)>>,
    heads: impl Fn(&str) -> anyhow::Result<Option<Head>>,
    checkpoint: Option<&str>,
    log_key: Option<&NoteVerifier>,
) -> anyhow::Result<Audit> {
    let mut leaves = Vec::with_capacity(size.min(1 << 24) as usize);
    let mut last: HashMap<String, Head> = HashMap::new();
    let mut next = 0u64;
    for item in entries {
        let (index, bytes) = item?;
        if next == size {
            break;
        }
        if index != next {
            bail!("entry {next} is missing (next entry is {index})");
        }
        let entry = LogEntry::decode(bytes.as_slice())
            .with_context(|| format!("entry {index} does not decode"))?;
        if entry.index != index {
            bail!("entry {index} says it is entry {}", entry.index);
        }
        let body = EventBody::decode(entry.body.as_slice())
            .with_context(|| format!("entry {index}: body does not decode"))?;
        // The writer's own link rule: seq 0 with a zero prev_hash, then each next seq naming
        // the previous event's hash.
        check_link(&body, last.get(&body.chain_id))
            .map_err(|e| anyhow::anyhow!("entry {index}: {e}"))?;
        last.insert(
            body.chain_id,
            Head {
                seq: body.seq,
                hash: EventHash::of_body(&entry.body).0,
                state_name: String::new(),
                state: None,
                hold: Vec::new(),
            },
        );
        leaves.push(merkle::leaf_hash(&bytes));
        next += 1;
    }
    if next != size {
        bail!("entry {next} is missing (tree size is {size})");
    }
    for (chain, want) in &last {
        let stored = heads(chain)?
            .with_context(|| format!("chain {chain} has entries but no stored head"))?;
        if stored.seq != want.seq || stored.hash != want.hash {
            bail!(
                "stored head of chain {chain} (seq {}) does not match its last entry (seq {})",
                stored.seq,
                want.seq
            );
        }
    }
    let root = merkle::root(&leaves);
    match checkpoint.filter(|c| !c.is_empty()) {
        None if size == 0 => {}
        None => bail!("the copy has {size} entries but no checkpoint"),
        Some(note) => {
            let cp = checkpoint_of(note, log_key)?;
            if cp.size != size {
                bail!(
                    "checkpoint is for size {}, the copy has {size} entries",
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
        chains: last.len(),
        root,
    })
}

/// The checkpoint in a signed note: its signature checked when `log_key` is given.
fn checkpoint_of(note: &str, log_key: Option<&NoteVerifier>) -> anyhow::Result<Checkpoint> {
    let text = match log_key {
        Some(k) => {
            crate::note::open_note(note, std::slice::from_ref(k))
                .map_err(|e| anyhow::anyhow!("checkpoint signature: {e}"))?
                .text
        }
        None => note.split("\n\n").next().unwrap_or("").to_string() + "\n",
    };
    Checkpoint::parse(&text).map_err(|e| anyhow::anyhow!("checkpoint: {e}"))
}

/// [`audit_log`] over a store: its entries, heads and checkpoint.
pub fn audit_store(store: &dyn Storage, log_key: Option<&NoteVerifier>) -> anyhow::Result<Audit> {
    let size = store.tree_size()?;
    let checkpoint = store.checkpoint()?;
    audit_log(
        size,
        store_entries(store, size),
        |chain| Ok(store.head(chain)?),
        checkpoint.as_deref(),
        log_key,
    )
}

/// The entries `0..size` of a store, read a page at a time.
fn store_entries(
    store: &dyn Storage,
    size: u64,
) -> impl Iterator<Item = anyhow::Result<(u64, Vec<u8>)>> + '_ {
    let mut next = 0u64;
    let mut page: std::vec::IntoIter<(u64, Vec<u8>)> = Vec::new().into_iter();
    std::iter::from_fn(move || {
        if let Some(item) = page.next() {
            next = item.0 + 1;
            return Some(Ok(item));
        }
        if next >= size {
            return None;
        }
        match store.entries_from(next, 4096) {
            Ok(p) if p.is_empty() => None,
            Ok(p) => {
                page = p.into_iter();
                let item = page.next()?;
                next = item.0 + 1;
                Some(Ok(item))
            }
            Err(e) => {
                next = size;
                Some(Err(e.into()))
            }
        }
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

fn head_of(h: &BackupHead) -> anyhow::Result<Head> {
    Ok(Head {
        seq: h.seq,
        hash: h.hash.as_slice().try_into().with_context(|| {
            format!(
                "head of chain {} has a {}-byte hash",
                h.chain_id,
                h.hash.len()
            )
        })?,
        state_name: h.state_name.clone(),
        state: None,
        hold: Vec::new(),
    })
}

/// `celltrail backup --to DIR`: streams a snapshot from the server at `server` into `DIR`.
pub async fn backup_to(
    server: &str,
    dir: &Path,
    admin: &crate::note::NoteSigner,
) -> anyhow::Result<(Manifest, Audit)> {
    backup_to_with(server, &crate::tls::TlsOptions::default(), dir, admin).await
}

/// [`backup_to`] over TLS when `tls` names a CA. `DIR` is created only once the server has
/// started the snapshot, and removed again (or emptied, if it existed) when the backup fails.
/// The request is signed by `admin` (an operator admin key) over the server's fresh challenge.
pub async fn backup_to_with(
    server: &str,
    tls: &crate::tls::TlsOptions,
    dir: &Path,
    admin: &crate::note::NoteSigner,
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
    let nonce = client
        .challenge(crate::pb::ChallengeRequest {})
        .await
        .map_err(crate::client::status_error)?
        .into_inner()
        .nonce;
    let stream = client
        .backup(BackupRequest {
            auth: Some(crate::admin_auth::sign("Backup", &nonce, admin)),
        })
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
    let path = layout.backup_entries();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut header = None;
    let mut heads: BTreeMap<String, Head> = BTreeMap::new();
    let mut count = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(crate::client::status_error)?
    {
        if let Some(h) = chunk.header {
            if h.format != LOGICAL_FORMAT {
                bail!(
                    "the server sent a backup of format {} (this celltrail reads format {LOGICAL_FORMAT}); use a celltrail of the server's version",
                    h.format
                );
            }
            header = Some(h);
        }
        for h in &chunk.heads {
            heads.insert(h.chain_id.clone(), head_of(h)?);
            count += 1;
        }
        for e in chunk.entries {
            out.write_all(&e.encode_length_delimited_to_vec())?;
            count += 1;
        }
    }
    let header = header.context("the server sent no backup header")?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::write(
        layout.backup_heads(),
        serde_json::to_string_pretty(&heads)? + "\n",
    )?;
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
    let manifest = Manifest {
        format: LOGICAL_FORMAT,
        tree_size: header.tree_size,
        checkpoint: header.checkpoint,
        taken_at: crate::time::rfc3339(header.taken_at_unix_nanos),
        records: count,
        source: url,
    };
    let audit = audit_backup(&layout, &manifest, log_key.as_ref())
        .context("the backup copy does not audit cleanly")?;
    std::fs::write(
        layout.backup_manifest(),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok((manifest, audit))
}

/// The entries of a logical backup's `entries.bin`, in file order.
fn file_entries(
    path: &Path,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<(u64, Vec<u8>)>>> {
    let mut r = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut at = 0u64;
    Ok(std::iter::from_fn(move || {
        match r.fill_buf() {
            Ok([]) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
        let result = read_delimited(&mut r)
            .and_then(|bytes| Ok(BackupEntry::decode(bytes.as_slice())?))
            .map(|e| (e.index, e.entry))
            .with_context(|| format!("record {at} of the backup's entries does not decode"));
        at += 1;
        Some(result)
    }))
}

/// One length-delimited record (a protobuf varint length, then that many bytes).
fn read_delimited(r: &mut impl std::io::Read) -> anyhow::Result<Vec<u8>> {
    let mut len: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        len |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            if len > 4 * crate::rules::MAX_ENTRY_BYTES as u64 {
                bail!("a record of {len} bytes is larger than any entry");
            }
            let mut buf = vec![0u8; len as usize];
            r.read_exact(&mut buf)?;
            return Ok(buf);
        }
    }
    bail!("record length is not a varint")
}

fn backup_heads(layout: &DataDir) -> anyhow::Result<BTreeMap<String, Head>> {
    let path = layout.backup_heads();
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} does not parse", path.display()))
}

/// Audits a logical backup directory.
fn audit_backup(
    layout: &DataDir,
    manifest: &Manifest,
    log_key: Option<&NoteVerifier>,
) -> anyhow::Result<Audit> {
    let heads = backup_heads(layout)?;
    audit_log(
        manifest.tree_size,
        file_entries(&layout.backup_entries())?,
        |chain| Ok(heads.get(chain).cloned()),
        Some(&manifest.checkpoint),
        log_key,
    )
}

/// `celltrail restore`: makes a new data directory (sled store) from a backup directory.
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
    let verifier = log_key.verifier();
    let audit = {
        let dest = crate::store::Store::open(&dst.db())?;
        if manifest.format == LOGICAL_FORMAT {
            let heads = backup_heads(&src)?;
            rebuild(
                &dest,
                manifest.tree_size,
                file_entries(&src.backup_entries())?,
                heads,
                &manifest.checkpoint,
                &verifier,
            )?
        } else {
            // A backup made before backups were logical: a copy of the sled trees. Read it
            // through the store (never writing to it) and rebuild like any other.
            let old = crate::store::Store::open_for_audit(&src.db())
                .with_context(|| format!("{} holds no readable store", from.display()))?;
            let size = old.tree_size()?;
            let mut heads = BTreeMap::new();
            for chain in old.chain_ids()? {
                if let Some(h) = old.head(&chain)? {
                    heads.insert(chain, h);
                }
            }
            let checkpoint = old.checkpoint()?.unwrap_or_default();
            rebuild(
                &dest,
                size,
                store_entries(&old, size),
                heads,
                &checkpoint,
                &verifier,
            )?
        }
    };
    let copy = |from: std::path::PathBuf, to: std::path::PathBuf| -> anyhow::Result<()> {
        if from.exists() {
            std::fs::copy(&from, to)?;
        }
        Ok(())
    };
    copy(src.log_vkey(), dst.log_vkey())?;
    copy(src.trust_anchors(), dst.trust_anchors())?;
    // The file is copied as it is: an encrypted log key stays encrypted.
    copy_private(log_key_file, &dst.log_key())?;
    if audit.tree_size != manifest.tree_size {
        bail!(
            "restored store holds {} entries, the backup manifest says {}",
            audit.tree_size,
            manifest.tree_size
        );
    }
    Ok(audit)
}

/// Rebuilds an empty store from a log's entries: each group's indexes (chain events, hashes,
/// bags) and Merkle nodes computed as the writer computes them, the heads from the backup (each
/// checked against its chain's last entry), the checkpoint last. Then audits the result and
/// checks that the root the rebuilt store serves is the checkpoint's root.
fn rebuild(
    dest: &dyn Storage,
    size: u64,
    entries: impl Iterator<Item = anyhow::Result<(u64, Vec<u8>)>>,
    heads: BTreeMap<String, Head>,
    checkpoint: &str,
    log_key: &NoteVerifier,
) -> anyhow::Result<Audit> {
    if dest.tree_size()? != 0 {
        bail!("a restore needs an empty store");
    }
    let mut nodes: HashMap<(u32, u64), merkle::Hash> = HashMap::new();
    let mut group = Group::default();
    let mut named: std::collections::HashSet<(String, String)> = Default::default();
    let mut next = 0u64;
    for item in entries {
        let (index, bytes) = item?;
        if next == size {
            break;
        }
        if index != next {
            bail!("entry {next} is missing from the backup (next is {index})");
        }
        let entry = LogEntry::decode(bytes.as_slice())
            .with_context(|| format!("entry {index} does not decode"))?;
        let body = EventBody::decode(entry.body.as_slice())
            .with_context(|| format!("entry {index}: body does not decode"))?;
        let leaf = merkle::leaf_hash(&bytes);
        let completed =
            merkle::nodes_completed_by_append(index, leaf, |l, i| match nodes.get(&(l, i)) {
                Some(h) => Ok(*h),
                None => dest.node(l, i)?.ok_or_else(|| {
                    StorageError::Corrupt(format!("Merkle node ({l},{i}) is missing"))
                }),
            })?;
        nodes.extend(completed.iter().copied());
        group.nodes.extend(completed);
        for bag in bags_named(&body) {
            if named.insert((bag.to_string(), body.chain_id.clone())) {
                group
                    .bags
                    .push((bag.to_string(), body.chain_id.clone(), index));
            }
        }
        group.entries.push(NewEntry {
            index,
            event_hash: EventHash::of_body(&entry.body),
            chain_id: body.chain_id,
            seq: body.seq,
            bytes,
        });
        next += 1;
        if group.entries.len() == RESTORE_GROUP {
            group.tree_size = next;
            dest.commit(&std::mem::take(&mut group))?;
            nodes.clear();
        }
    }
    if next != size {
        bail!("the backup holds {next} entries, its checkpoint covers {size}");
    }
    group.tree_size = size;
    group.heads = heads.into_iter().collect();
    group.checkpoint = (!checkpoint.is_empty()).then(|| checkpoint.to_string());
    // The console's chain summaries need the key registry and the policy tables: the ledger
    // replays them and writes the summaries when the restored store is first served.
    group.meta.push((
        crate::ledger::META_SUMMARIES_MISSING.to_string(),
        b"1".to_vec(),
    ));
    dest.commit(&group)?;
    let audit = audit_store(dest, Some(log_key))?;
    let served = merkle::root_at(size, |l, i| {
        dest.node(l, i)?
            .ok_or_else(|| StorageError::Corrupt(format!("Merkle node ({l},{i}) is missing")))
    })?;
    if served != audit.root {
        bail!(
            "the rebuilt store's Merkle root {} differs from the checkpoint root {}",
            hex::encode(served),
            hex::encode(audit.root)
        );
    }
    Ok(audit)
}

/// Copies a private key file to a new 0600 file (never over an existing one).
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
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
