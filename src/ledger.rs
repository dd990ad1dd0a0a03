//! The append pipeline: decode → check link and signers → policy → store → ack.
//!
//! One writer thread owns every write. It takes what is queued (group commit), checks each event
//! in order against the chain heads and key registry as updated by the events before it in the
//! same group, writes the whole group and the new Merkle nodes and signed checkpoint in one sled
//! transaction, flushes (fsync) once, and only then answers every caller with its receipt.
//! Callers wait on a bounded queue: when it is full they get `Overloaded` at once instead of
//! growing memory. Reads go straight to the store.

use crate::crypto::{verify_signature, EventHash, SigError};
use crate::merkle;
use crate::note::{Checkpoint, NoteSigner};
use crate::pb::{event_body::Detail, EventBody, LogEntry, Receipt, SignatureMeaning, SignedEvent};
use crate::policy::{ChainState, Policy, Signer, Violation};
use crate::registry::{KeyError, Registry, RegistryError, KEYS_CHAIN};
use crate::store::{CommitBatch, Head, NewEntry, Store, StoreError};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Largest log entry (encoded `LogEntry`) accepted, DESIGN [R5].
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Longest chain id.
pub const MAX_CHAIN_ID: usize = 128;
/// How far in the future a signature or event time may be (clock skew between stations).
pub const MAX_CLOCK_SKEW_NANOS: i64 = 5 * 60 * crate::time::NANOS_PER_SEC;

/// Every way an append or read can fail; `api` maps each to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    BadSignature(#[from] SigError),
    #[error("entry is {size} bytes; the limit is {MAX_ENTRY_BYTES} bytes (64 KiB)")]
    TooLarge { size: usize },
    #[error("the ledger is busy ({0} appends queued); retry shortly")]
    Overloaded(usize),
    #[error("chain {chain} does not exist; its first event must have seq 0 (got seq {seq})")]
    UnknownChain { chain: String, seq: u64 },
    #[error("chain {chain} is at seq {head_seq}; seq {seq} would leave a gap (next is {next})", next = head_seq + 1)]
    Gap {
        chain: String,
        seq: u64,
        head_seq: u64,
    },
    #[error("stale prev_hash for chain {chain} seq {seq}: current head is seq {head_seq} hash {head_hash}; rebase on it and re-sign")]
    StalePrev {
        chain: String,
        seq: u64,
        head_seq: u64,
        head_hash: String,
    },
    #[error("seq {seq} of chain {chain} is already taken by a different event; current head is seq {head_seq} hash {head_hash}")]
    Fork {
        chain: String,
        seq: u64,
        head_seq: u64,
        head_hash: String,
    },
    #[error("signer rejected: {0}")]
    Signer(#[from] KeyError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("custody policy: {0}")]
    Policy(Violation),
    #[error("custody policy (signer role): {0}")]
    Role(Violation),
    #[error("{0}")]
    NotFound(String),
    #[error("the ledger store cannot be written, nothing was recorded: {0}")]
    Storage(String),
    #[error("the ledger is shutting down; retry on the restarted server")]
    ShuttingDown,
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

fn malformed(msg: impl Into<String>) -> LedgerError {
    LedgerError::Malformed(msg.into())
}

/// Valid chain ids: 1-128 characters from `[A-Za-z0-9._:=-]`.
pub fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHAIN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:=-".contains(&b))
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Appends waiting for the writer before new ones get `Overloaded`.
    pub queue_capacity: usize,
    /// Most events committed in one group.
    pub max_group: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            queue_capacity: 8192,
            max_group: 1024,
        }
    }
}

struct Job {
    event: SignedEvent,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

enum Msg {
    Append(Job),
    /// Finish what is queued, then exit.
    Stop,
    // --- ops: online backup (src/backup.rs) -------------------------------------------------
    /// Commit the group in progress, then run this on the writer thread before the next group:
    /// the store is at a group boundary and nothing writes while it runs.
    AtBoundary(Box<dyn FnOnce() + Send>),
}

/// The ledger: a handle to the writer thread plus read access to the store.
pub struct Ledger {
    store: Arc<Store>,
    tx: mpsc::Sender<Msg>,
    capacity: usize,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Ledger {
    /// Opens the ledger over `store`: replays the key registry and starts the writer thread.
    pub fn start(
        store: Arc<Store>,
        admins: &[crate::note::NoteVerifier],
        log_key: NoteSigner,
        policy: Policy,
        options: LedgerOptions,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let registry = replay_registry(&store, admins)?;
        let tree_size = store.tree_size()?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let mut writer = Writer {
            store: store.clone(),
            registry,
            policy,
            log_key,
            tree_size,
            last_accepted: 0,
            max_group: options.max_group.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("celltrail-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LedgerError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Ledger {
            store,
            tx,
            capacity: options.queue_capacity,
            writer: Mutex::new(Some(handle)),
        }))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Appends one signed event; returns once it is durable (or rejected).
    pub async fn append(&self, event: SignedEvent) -> Result<Receipt, LedgerError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Msg::Append(Job { event, reply })) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(LedgerError::Overloaded(self.capacity))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(LedgerError::ShuttingDown),
        }
        rx.await.unwrap_or(Err(LedgerError::ShuttingDown))
    }

    /// Stops taking appends, lets the writer finish and flush what is queued, and waits for it.
    pub fn shutdown(&self) {
        let handle = self.writer.lock().expect("writer lock").take();
        if let Some(h) = handle {
            // Waits for room: the stop goes behind every append already queued.
            let _ = self.tx.blocking_send(Msg::Stop);
            let _ = h.join();
        }
    }

    /// Async form of [`Ledger::shutdown`].
    pub async fn shutdown_async(self: &Arc<Self>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.shutdown()).await;
    }

    // --- ops: online backup (src/backup.rs) -------------------------------------------------
    /// Runs `f` on the writer thread between two groups (after every append queued before this
    /// call is committed) and returns its result. Appends wait while `f` runs.
    pub async fn at_group_boundary<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = reply.send(f());
        });
        self.tx
            .send(Msg::AtBoundary(job))
            .await
            .map_err(|_| LedgerError::ShuttingDown)?;
        rx.await.map_err(|_| LedgerError::ShuttingDown)
    }
    // --- end ops ------------------------------------------------------------------------------

    pub fn head(&self, chain_id: &str) -> Result<Head, LedgerError> {
        self.store
            .head(chain_id)?
            .ok_or_else(|| LedgerError::NotFound(format!("chain {chain_id} does not exist")))
    }
}

/// Rebuilds the key registry from the `keys` chain.
pub fn replay_registry(
    store: &Store,
    admins: &[crate::note::NoteVerifier],
) -> Result<Registry, LedgerError> {
    let mut reg = Registry::new(admins);
    for index in store.chain_indices(KEYS_CHAIN)? {
        let bytes = store.entry(index)?.ok_or_else(|| {
            LedgerError::Storage(format!("entry {index} of the keys chain is missing"))
        })?;
        let entry = LogEntry::decode(bytes.as_slice())
            .map_err(|e| LedgerError::Storage(format!("entry {index} does not decode: {e}")))?;
        let body = EventBody::decode(entry.body.as_slice()).map_err(|e| {
            LedgerError::Storage(format!("entry {index} body does not decode: {e}"))
        })?;
        match body.detail {
            Some(Detail::KeyRegistered(r)) => reg.register(&r)?,
            Some(Detail::KeyRevoked(r)) => reg.revoke(&r)?,
            _ => {
                return Err(LedgerError::Storage(format!(
                    "entry {index} on the keys chain is not a key event"
                )))
            }
        }
    }
    Ok(reg)
}

/// An event that passed every check, waiting for its group to commit.
struct Accepted {
    index: u64,
    hash: EventHash,
    chain_id: String,
    seq: u64,
}

enum Outcome {
    Accepted(Accepted),
    Duplicate(u64),
    Rejected(LedgerError),
}

struct Writer {
    store: Arc<Store>,
    registry: Registry,
    policy: Policy,
    log_key: NoteSigner,
    tree_size: u64,
    last_accepted: i64,
    max_group: usize,
}

/// What one group has changed so far, on top of the store.
#[derive(Default)]
struct Overlay {
    heads: HashMap<String, Head>,
    hashes: HashMap<EventHash, u64>,
    nodes: HashMap<(u32, u64), [u8; 32]>,
    registry: Option<Registry>,
    batch: CommitBatch,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut group = Vec::with_capacity(self.max_group);
        let mut stopping = false;
        let mut at_boundary = None; // ops: backup
        loop {
            match rx.blocking_recv() {
                Some(Msg::Append(job)) => group.push(job),
                Some(Msg::Stop) => stopping = true,
                Some(Msg::AtBoundary(f)) => at_boundary = Some(f), // ops: backup
                None => stopping = true,
            }
            while group.len() < self.max_group && !stopping && at_boundary.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Append(job)) => group.push(job),
                    Ok(Msg::Stop) => stopping = true,
                    Ok(Msg::AtBoundary(f)) => at_boundary = Some(f), // ops: backup
                    Err(_) => break,
                }
            }
            if stopping {
                // Refuse new appends; answer everything already queued, then exit.
                rx.close();
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Append(job) = msg {
                        group.push(job);
                    }
                }
                while !group.is_empty() {
                    let n = group.len().min(self.max_group);
                    self.commit_group(group.drain(..n).collect());
                }
                return;
            }
            self.commit_group(std::mem::take(&mut group));
            crate::metrics::queue_depth(rx.len()); // ops: metrics
            if let Some(f) = at_boundary.take() {
                f(); // ops: backup, runs between groups
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        if group.is_empty() {
            return;
        }
        let now = crate::time::now_nanos().max(self.last_accepted);
        let mut ov = Overlay::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let verify_started = std::time::Instant::now(); // ops: metrics
        for job in group {
            outcomes.push(self.check_one(&job.event, now, &mut ov));
            replies.push(job.reply);
        }
        crate::metrics::group_verified(verify_started.elapsed()); // ops: metrics
        let new_size = self.tree_size + ov.batch.entries.len() as u64;
        let mut checkpoint = None;
        let mut commit_error = None;
        if !ov.batch.entries.is_empty() {
            match self.finish_batch(&mut ov, new_size) {
                Ok(cp) => checkpoint = Some(cp),
                Err(e) => commit_error = Some(e.to_string()),
            }
            let flush_started = std::time::Instant::now(); // ops: metrics
            if commit_error.is_none() {
                if let Err(e) = self.store.commit(&ov.batch) {
                    commit_error = Some(e.to_string());
                }
            }
            if commit_error.is_none() {
                crate::metrics::group_committed(
                    ov.batch.entries.len(),
                    flush_started.elapsed(),
                    new_size,
                ); // ops: metrics
                self.tree_size = new_size;
                self.last_accepted = now;
                if let Some(reg) = ov.registry.take() {
                    self.registry = reg;
                }
            } else {
                tracing::error!(
                    error = commit_error.as_deref().unwrap_or(""),
                    "group commit failed"
                );
            }
        }
        let checkpoint = match checkpoint {
            Some(cp) => cp,
            None => self.store.checkpoint().ok().flatten().unwrap_or_default(),
        };
        for (outcome, reply) in outcomes.into_iter().zip(replies) {
            let result = match outcome {
                Outcome::Rejected(e) => Err(e),
                Outcome::Accepted(_) | Outcome::Duplicate(_) if commit_error.is_some() => Err(
                    LedgerError::Storage(commit_error.clone().unwrap_or_default()),
                ),
                Outcome::Accepted(a) => Ok(Receipt {
                    index: a.index,
                    event_hash: a.hash.0.to_vec(),
                    chain_id: a.chain_id,
                    seq: a.seq,
                    accepted_at_unix_nanos: now,
                    tree_size: self.tree_size,
                    checkpoint: checkpoint.clone(),
                    duplicate: false,
                }),
                Outcome::Duplicate(index) => {
                    receipt_for_index(&self.store, index, self.tree_size, &checkpoint)
                }
            };
            let _ = reply.send(result);
        }
    }

    /// Computes the new root, signs the checkpoint and adds nodes and checkpoint to the batch.
    fn finish_batch(&self, ov: &mut Overlay, new_size: u64) -> Result<String, LedgerError> {
        let store = &self.store;
        let nodes = &ov.nodes;
        let root = merkle::root_at(new_size, |l, i| node(store, nodes, l, i))?;
        let cp = Checkpoint {
            origin: self.log_key.name.clone(),
            size: new_size,
            root,
            extensions: vec![],
        };
        let note = crate::note::sign_note(&cp.to_text(), &[&self.log_key])
            .map_err(|e| LedgerError::Storage(format!("cannot sign checkpoint: {e}")))?;
        ov.batch.nodes = ov.nodes.iter().map(|(k, v)| (*k, *v)).collect();
        ov.batch.tree_size = new_size;
        ov.batch.checkpoint = Some(note.clone());
        Ok(note)
    }

    fn check_one(&self, ev: &SignedEvent, now: i64, ov: &mut Overlay) -> Outcome {
        match self.check_inner(ev, now, ov) {
            Ok(o) => o,
            Err(e) => Outcome::Rejected(e),
        }
    }

    fn check_inner(
        &self,
        ev: &SignedEvent,
        now: i64,
        ov: &mut Overlay,
    ) -> Result<Outcome, LedgerError> {
        if ev.body.len() > MAX_ENTRY_BYTES {
            return Err(LedgerError::TooLarge {
                size: ev.body.len(),
            });
        }
        let hash = EventHash::of_body(&ev.body);
        if let Some(index) = ov.hashes.get(&hash) {
            return Ok(Outcome::Duplicate(*index));
        }
        if let Some(index) = self.store.index_of_hash(&hash)? {
            return Ok(Outcome::Duplicate(index));
        }
        let body = EventBody::decode(ev.body.as_slice()).map_err(|e| {
            malformed(format!(
                "body bytes are not a valid celltrail.v1.EventBody: {e}"
            ))
        })?;
        check_shape(&body, ev, now)?;

        // Chain link [R2, R3].
        let head = match ov.heads.get(&body.chain_id) {
            Some(h) => Some(h.clone()),
            None => self.store.head(&body.chain_id)?,
        };
        check_link(&body, head.as_ref())?;

        // Signers [R4, R6].
        let registry = ov.registry.as_ref().unwrap_or(&self.registry);
        let signers = if body.chain_id == KEYS_CHAIN {
            for sig in &ev.signatures {
                let key = registry
                    .admin(&sig.key_id)
                    .ok_or_else(|| KeyError::NotAdmin(sig.key_id.clone()))?;
                verify_signature(key, &hash, sig)?;
            }
            Vec::new()
        } else {
            let mut signers = Vec::with_capacity(ev.signatures.len());
            let mut records = Vec::with_capacity(ev.signatures.len());
            for sig in &ev.signatures {
                records.push(registry.signer_at(&sig.key_id, sig.signed_at_unix_nanos)?);
            }
            for (sig, rec) in ev.signatures.iter().zip(&records) {
                verify_signature(&rec.public_key, &hash, sig)?;
                signers.push(Signer {
                    key_id: rec.key_id.clone(),
                    role: rec.role.clone(),
                    site: rec.site.clone(),
                    meaning: SignatureMeaning::try_from(sig.meaning)
                        .unwrap_or(SignatureMeaning::Unspecified),
                    signed_at_unix_nanos: sig.signed_at_unix_nanos,
                });
            }
            signers
        };

        // Build the log entry [R5].
        let index = self.tree_size + ov.batch.entries.len() as u64;
        let entry = LogEntry {
            body: ev.body.clone(),
            signatures: ev.signatures.clone(),
            accepted_at_unix_nanos: now,
            index,
        }
        .encode_to_vec();
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(LedgerError::TooLarge { size: entry.len() });
        }
        // Registry or custody rules.
        let (state_name, state) = if body.chain_id == KEYS_CHAIN {
            let mut reg = ov.registry.take().unwrap_or_else(|| self.registry.clone());
            let applied = match &body.detail {
                Some(Detail::KeyRegistered(r)) => reg.register(r),
                Some(Detail::KeyRevoked(r)) => reg.revoke(r),
                _ => Err(RegistryError::Invalid(
                    "the keys chain holds only KeyRegistered and KeyRevoked events".into(),
                )),
            };
            ov.registry = Some(reg);
            applied?;
            ("KeyRegistry".to_string(), serde_json::Value::Null)
        } else {
            if matches!(
                body.detail,
                Some(Detail::KeyRegistered(_)) | Some(Detail::KeyRevoked(_))
            ) {
                return Err(malformed(format!(
                    "key registry events belong on the {KEYS_CHAIN} chain, not on chain {}",
                    body.chain_id
                )));
            }
            let prior: Option<ChainState> = match &head {
                Some(h) => Some(serde_json::from_value(h.state.clone()).map_err(|e| {
                    LedgerError::Storage(format!(
                        "stored policy state of chain {} is unreadable: {e}",
                        body.chain_id
                    ))
                })?),
                None => None,
            };
            let next = self
                .policy
                .apply(prior.as_ref(), &body, &signers)
                .map_err(|v| {
                    if v.rule.starts_with("role") {
                        LedgerError::Role(v)
                    } else {
                        LedgerError::Policy(v)
                    }
                })?;
            let value = serde_json::to_value(&next).expect("policy state serializes to JSON");
            (next.state_name().to_string(), value)
        };

        let leaf = merkle::leaf_hash(&entry);
        let store = &self.store;
        let completed = {
            let nodes = &ov.nodes;
            merkle::nodes_completed_by_append(index, leaf, |l, i| node(store, nodes, l, i))?
        };
        ov.nodes.extend(completed);
        ov.hashes.insert(hash, index);
        ov.heads.insert(
            body.chain_id.clone(),
            Head {
                seq: body.seq,
                hash: hash.0,
                state_name,
                state,
            },
        );
        ov.batch.heads.retain(|(id, _)| id != &body.chain_id);
        ov.batch
            .heads
            .push((body.chain_id.clone(), ov.heads[&body.chain_id].clone()));
        ov.batch.entries.push(NewEntry {
            index,
            bytes: entry,
            event_hash: hash,
            chain_id: body.chain_id.clone(),
            seq: body.seq,
        });
        Ok(Outcome::Accepted(Accepted {
            index,
            hash,
            chain_id: body.chain_id,
            seq: body.seq,
        }))
    }
}

/// One stored perfect-subtree hash, from this group's overlay or the store.
fn node(
    store: &Store,
    overlay: &HashMap<(u32, u64), [u8; 32]>,
    level: u32,
    index: u64,
) -> Result<[u8; 32], LedgerError> {
    if let Some(h) = overlay.get(&(level, index)) {
        return Ok(*h);
    }
    store.node(level, index)?.ok_or_else(|| {
        LedgerError::Storage(format!(
            "Merkle node ({level},{index}) is missing from the store"
        ))
    })
}

/// Field checks that need no state.
pub fn check_shape(body: &EventBody, ev: &SignedEvent, now: i64) -> Result<(), LedgerError> {
    if !valid_chain_id(&body.chain_id) {
        return Err(malformed(format!(
            "chain id {:?} must be 1-{MAX_CHAIN_ID} characters from A-Z a-z 0-9 . _ : = -",
            body.chain_id.chars().take(40).collect::<String>()
        )));
    }
    if body.prev_hash.len() != 32 {
        return Err(malformed(format!(
            "prev_hash is {} bytes, expected 32",
            body.prev_hash.len()
        )));
    }
    if body.detail.is_none() {
        return Err(malformed(
            "event body has no event detail (the oneof `detail` is empty)",
        ));
    }
    if body.occurred_at_unix_nanos <= 0 {
        return Err(malformed("occurred_at_unix_nanos is missing"));
    }
    if body.occurred_at_unix_nanos > now + MAX_CLOCK_SKEW_NANOS {
        return Err(malformed(format!(
            "occurred_at {} is in the future (server time {}); check the station clock",
            crate::time::rfc3339(body.occurred_at_unix_nanos),
            crate::time::rfc3339(now)
        )));
    }
    if ev.signatures.is_empty() {
        return Err(malformed(
            "the event has no signatures; at least the performer must sign",
        ));
    }
    let mut seen = HashSet::new();
    let mut actor_performed = false;
    for sig in &ev.signatures {
        if !seen.insert(sig.key_id.as_str()) {
            return Err(malformed(format!(
                "key {} signs the event more than once",
                sig.key_id
            )));
        }
        let meaning = SignatureMeaning::try_from(sig.meaning)
            .ok()
            .filter(|m| *m != SignatureMeaning::Unspecified)
            .ok_or_else(|| {
                malformed(format!(
                    "signature by {} has no valid meaning ({})",
                    sig.key_id, sig.meaning
                ))
            })?;
        if sig.signed_at_unix_nanos > now + MAX_CLOCK_SKEW_NANOS {
            return Err(malformed(format!(
                "signature by {} is dated {}, in the future (server time {}); check the station clock",
                sig.key_id,
                crate::time::rfc3339(sig.signed_at_unix_nanos),
                crate::time::rfc3339(now)
            )));
        }
        if sig.key_id == body.actor_key_id && meaning == SignatureMeaning::Performed {
            actor_performed = true;
        }
    }
    if !actor_performed {
        return Err(malformed(format!(
            "actor {:?} must sign the event with meaning PERFORMED",
            body.actor_key_id
        )));
    }
    Ok(())
}

/// seq / prev_hash rules [R2, R3].
pub fn check_link(body: &EventBody, head: Option<&Head>) -> Result<(), LedgerError> {
    let chain = body.chain_id.clone();
    match head {
        None if body.seq != 0 => Err(LedgerError::UnknownChain {
            chain,
            seq: body.seq,
        }),
        None if body.prev_hash != [0u8; 32] => Err(malformed(format!(
            "first event (seq 0) of chain {chain} must carry prev_hash of 32 zero bytes"
        ))),
        None => Ok(()),
        Some(h) if body.seq <= h.seq => Err(LedgerError::Fork {
            chain,
            seq: body.seq,
            head_seq: h.seq,
            head_hash: hex::encode(h.hash),
        }),
        Some(h) if body.seq > h.seq + 1 => Err(LedgerError::Gap {
            chain,
            seq: body.seq,
            head_seq: h.seq,
        }),
        Some(h) if body.prev_hash != h.hash => Err(LedgerError::StalePrev {
            chain,
            seq: body.seq,
            head_seq: h.seq,
            head_hash: hex::encode(h.hash),
        }),
        Some(_) => Ok(()),
    }
}

/// The receipt of an event already in the log (idempotent resubmission).
pub fn receipt_for_index(
    store: &Store,
    index: u64,
    tree_size: u64,
    checkpoint: &str,
) -> Result<Receipt, LedgerError> {
    let bytes = store
        .entry(index)?
        .ok_or_else(|| LedgerError::Storage(format!("entry {index} is missing")))?;
    let entry = LogEntry::decode(bytes.as_slice())
        .map_err(|e| LedgerError::Storage(format!("entry {index} does not decode: {e}")))?;
    let body = EventBody::decode(entry.body.as_slice())
        .map_err(|e| LedgerError::Storage(format!("entry {index} body does not decode: {e}")))?;
    Ok(Receipt {
        index,
        event_hash: EventHash::of_body(&entry.body).0.to_vec(),
        chain_id: body.chain_id,
        seq: body.seq,
        accepted_at_unix_nanos: entry.accepted_at_unix_nanos,
        tree_size,
        checkpoint: checkpoint.to_string(),
        duplicate: true,
    })
}
