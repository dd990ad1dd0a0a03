//! The append pipeline: decode → check link and signers → policy → store → ack.
//!
//! Two threads, one after the other. The verifier takes what is queued (a group), decodes each
//! event, runs the stateless checks and verifies the signatures of already-known keys strictly,
//! in parallel. The writer, which owns every write, then checks each event in order against the
//! chain heads and key registry as updated by the events before it in the same group, writes the
//! whole group, the new Merkle nodes and the signed checkpoint in one sled transaction, flushes
//! (fsync) once, and only then answers every caller with its receipt. While the writer commits
//! group N the verifier prepares group N+1. Callers wait on a bounded queue: when it is full a
//! unary append gets `Overloaded` at once instead of growing memory (streams wait for room).
//! Reads go straight to the store.

use crate::crypto::{verify_signature, EventHash, SigError};
use crate::merkle;
use crate::note::{Checkpoint, NoteSigner};
use crate::pb::{event_body::Detail, EventBody, LogEntry, Receipt, SignatureMeaning, SignedEvent};
use crate::policy::{ChainState, Policy, Signer, Violation};
use crate::registry::{KeyError, Registry, RegistryError, KEYS_CHAIN};
use crate::rules::{bags_named, check_link, check_shape, Head, RuleError, MAX_ENTRY_BYTES};
use crate::store::{CommitBatch, NewEntry, Store, StoreError};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Every way an append or read can fail; `api` maps each to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("{0}")]
    BadSignature(#[from] SigError),
    #[error("the ledger is busy ({0} appends queued); retry shortly")]
    Overloaded(usize),
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
    /// A group commit failed after its transaction may have been applied (e.g. the fsync failed).
    #[error("the ledger store failed while recording this event ({0}); it may or may not be recorded: resubmit it unchanged (resubmission is idempotent)")]
    Uncertain(String),
    #[error("the ledger is shutting down; retry on the restarted server")]
    ShuttingDown,
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

fn malformed(msg: impl Into<String>) -> LedgerError {
    LedgerError::Rule(crate::rules::malformed(msg))
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

/// The ledger: a handle to the verifier and writer threads plus read access to the store.
pub struct Ledger {
    store: Arc<Store>,
    /// The log key, for statements the read side signs (chain heads); checkpoints are signed
    /// by the writer.
    log_key: NoteSigner,
    tx: mpsc::Sender<Msg>,
    capacity: usize,
    /// The verifier and writer threads, joined in that order on shutdown.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Ledger {
    /// Opens the ledger over `store`: replays the key registry and starts the verifier and
    /// writer threads.
    pub fn start(
        store: Arc<Store>,
        admins: &[crate::note::NoteVerifier],
        log_key: NoteSigner,
        policy: Policy,
        options: LedgerOptions,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let registry = replay_registry(&store, admins)?;
        let tree_size = store.tree_size()?;
        let statement_key = log_key.clone();
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let shared_registry = Arc::new(RwLock::new(registry.clone()));
        let mut verifier = Verifier {
            registry: shared_registry.clone(),
            max_group: options.max_group.max(1),
        };
        // Two groups may wait between the stages: the verifier works on group N+1 while the
        // writer checks, writes and flushes group N.
        let (prepared_tx, prepared_rx) = std::sync::mpsc::sync_channel(2);
        let mut writer = Writer {
            store: store.clone(),
            registry,
            shared_registry,
            policy,
            log_key,
            tree_size,
            last_accepted: 0,
            head_cache: HashMap::new(),
            unflushed: false,
            poisoned: None,
        };
        let spawn_err = |e: std::io::Error| {
            LedgerError::Storage(format!("cannot start the ledger threads: {e}"))
        };
        let verify_handle = std::thread::Builder::new()
            .name("celltrail-verify".into())
            .spawn(move || verifier.run(rx, prepared_tx))
            .map_err(spawn_err)?;
        let write_handle = std::thread::Builder::new()
            .name("celltrail-writer".into())
            .spawn(move || writer.run(prepared_rx))
            .map_err(spawn_err)?;
        Ok(Arc::new(Ledger {
            store,
            log_key: statement_key,
            tx,
            capacity: options.queue_capacity,
            threads: Mutex::new(vec![verify_handle, write_handle]),
        }))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The signed head statement of a chain in the tree of `tree_size` entries (0 = current).
    pub fn signed_chain_head(
        &self,
        chain_id: &str,
        tree_size: u64,
    ) -> Result<(crate::note::ChainHeadStatement, String), crate::log::LogError> {
        let st =
            crate::log::chain_head_statement(&self.store, &self.log_key.name, chain_id, tree_size)?;
        let note = crate::note::sign_note(&st.to_text(), &[&self.log_key]).map_err(|e| {
            crate::log::LogError::InvalidArgument(format!(
                "chain id {chain_id:?} cannot go into a signed note: {e}"
            ))
        })?;
        Ok((st, note))
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

    /// Like [`Ledger::append`], but waits for room in the queue instead of failing with
    /// `Overloaded` (streams get back-pressure from HTTP/2 flow control instead).
    pub async fn append_wait(&self, event: SignedEvent) -> Result<Receipt, LedgerError> {
        self.submit(event).await.await
    }

    /// Queues `event` (waiting for room) and returns the future of its receipt. Events
    /// submitted one after another reach the writer in that order, so a client may pipeline a
    /// chain's events without waiting for each receipt.
    pub async fn submit(
        &self,
        event: SignedEvent,
    ) -> impl std::future::Future<Output = Result<Receipt, LedgerError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Msg::Append(Job { event, reply }))
            .await
            .is_ok();
        async move {
            if !sent {
                return Err(LedgerError::ShuttingDown);
            }
            rx.await.unwrap_or(Err(LedgerError::ShuttingDown))
        }
    }

    /// Stops taking appends, lets the writer finish and flush what is queued, and waits for it.
    pub fn shutdown(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        if !threads.is_empty() {
            // Waits for room: the stop goes behind every append already queued.
            let _ = self.tx.blocking_send(Msg::Stop);
            for t in threads {
                let _ = t.join();
            }
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

/// An event that passed the stateless checks, with its signature verdicts (None = key not
/// known before this group; verified in order).
struct Ready {
    hash: EventHash,
    body: EventBody,
    sig_ok: Vec<Option<bool>>,
}

enum Prep {
    Done(Outcome),
    Ready(Box<Ready>),
}

enum Outcome {
    Accepted(Accepted),
    Duplicate(u64),
    Rejected(LedgerError),
}

/// First stage: takes a group off the queue, does the stateless checks and verifies the
/// signatures of keys it already knows (keys never change once registered, so a registry that
/// is a group behind gives the same verdicts; validity and revocation are the writer's).
struct Verifier {
    registry: Arc<RwLock<Registry>>,
    max_group: usize,
}

/// What the verifier hands the writer, in queue order.
enum Stage {
    Group(Vec<Job>, Vec<Prep>, i64),
    /// ops: backup. Run on the writer thread between two groups.
    AtBoundary(Box<dyn FnOnce() + Send>),
}

struct Writer {
    store: Arc<Store>,
    registry: Registry,
    /// The registry as the verifier sees it, updated after each commit that changed it.
    shared_registry: Arc<RwLock<Registry>>,
    policy: Policy,
    log_key: NoteSigner,
    tree_size: u64,
    last_accepted: i64,
    /// Committed heads of recently used chains (only the writer changes heads, so this always
    /// equals the store); saves a read and a JSON parse per event.
    head_cache: HashMap<String, Head>,
    /// A commit failed: the store may hold writes that were never fsynced. Flush before the
    /// next acknowledgement (a duplicate's receipt included).
    unflushed: bool,
    /// The store's state after a failed commit could not be read back: refuse appends until
    /// a restart re-reads it (reads keep working).
    poisoned: Option<String>,
}

/// Chains whose committed head the writer keeps in memory before it starts over.
const HEAD_CACHE_CHAINS: usize = 20_000;

/// What one group has changed so far, on top of the store.
#[derive(Default)]
struct Overlay {
    heads: HashMap<String, Head>,
    hashes: HashMap<EventHash, u64>,
    nodes: HashMap<(u32, u64), [u8; 32]>,
    registry: Option<Registry>,
    batch: CommitBatch,
}

impl Verifier {
    fn run(&mut self, mut rx: mpsc::Receiver<Msg>, out: std::sync::mpsc::SyncSender<Stage>) {
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
                    self.pass_on(group.drain(..n).collect(), &out);
                }
                return; // dropping `out` stops the writer once it has committed everything
            }
            self.pass_on(std::mem::take(&mut group), &out);
            crate::metrics::queue_depth(rx.len()); // ops: metrics
            if let Some(f) = at_boundary.take() {
                // ops: backup. Runs on the writer after every group before it is committed.
                let _ = out.send(Stage::AtBoundary(f));
            }
        }
    }

    fn pass_on(&self, group: Vec<Job>, out: &std::sync::mpsc::SyncSender<Stage>) {
        let now = crate::time::now_nanos();
        let verify_started = std::time::Instant::now(); // ops: metrics
        let prepared = self.prepare_group(&group, now);
        crate::metrics::group_verified(verify_started.elapsed()); // ops: metrics
        let _ = out.send(Stage::Group(group, prepared, now));
    }

    /// Stateless checks of every event in the group, then all signatures whose key is already
    /// known are verified at once, in parallel (strict).
    fn prepare_group(&self, group: &[Job], now: i64) -> Vec<Prep> {
        let mut preps: Vec<Prep> = group.iter().map(|j| self.prepare(&j.event, now)).collect();
        let registry = self.registry.read().expect("registry lock");
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for (pi, (prep, job)) in preps.iter().zip(group).enumerate() {
            let Prep::Ready(p) = prep else { continue };
            for (si, sig) in job.event.signatures.iter().enumerate() {
                let key = if p.body.chain_id == KEYS_CHAIN {
                    registry.admin(&sig.key_id)
                } else {
                    registry.get(&sig.key_id).map(|r| &r.public_key)
                };
                let (Some(key), Some(msg)) = (
                    key,
                    crate::crypto::signature_message(
                        &p.hash,
                        sig.meaning,
                        sig.signed_at_unix_nanos,
                        &sig.key_id,
                    ),
                ) else {
                    continue;
                };
                let sig: [u8; 64] = sig
                    .signature
                    .as_slice()
                    .try_into()
                    .expect("length checked in prepare");
                items.push(crate::crypto::SigItem { key, msg, sig });
                slots.push((pi, si));
            }
        }
        let verdicts = crate::crypto::verify_strict_many(&items);
        drop(items);
        drop(registry);
        for ((pi, si), ok) in slots.into_iter().zip(verdicts) {
            if let Prep::Ready(p) = &mut preps[pi] {
                p.sig_ok[si] = Some(ok);
            }
        }
        preps
    }

    fn prepare(&self, ev: &SignedEvent, now: i64) -> Prep {
        let reject = |e| Prep::Done(Outcome::Rejected(e));
        if ev.body.len() > MAX_ENTRY_BYTES {
            return reject(
                RuleError::TooLarge {
                    size: ev.body.len(),
                }
                .into(),
            );
        }
        let hash = EventHash::of_body(&ev.body);
        let body = match EventBody::decode(ev.body.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                return reject(malformed(format!(
                    "body bytes are not a valid celltrail.v1.EventBody: {e}"
                )))
            }
        };
        if let Err(e) = check_shape(&body, ev, now) {
            return reject(e.into());
        }
        if let Some(sig) = ev.signatures.iter().find(|s| s.signature.len() != 64) {
            return reject(
                SigError::Length {
                    key_id: sig.key_id.clone(),
                    len: sig.signature.len(),
                }
                .into(),
            );
        }
        Prep::Ready(Box::new(Ready {
            hash,
            body,
            sig_ok: vec![None; ev.signatures.len()],
        }))
    }
}

impl Writer {
    fn run(&mut self, rx: std::sync::mpsc::Receiver<Stage>) {
        while let Ok(stage) = rx.recv() {
            match stage {
                Stage::Group(group, prepared, now) => self.commit_group(group, prepared, now),
                Stage::AtBoundary(f) => f(),
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>, prepared: Vec<Prep>, now: i64) {
        if group.is_empty() {
            return;
        }
        let now = now.max(self.last_accepted);
        let mut ov = Overlay::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let started = std::time::Instant::now();
        for (job, prep) in group.into_iter().zip(prepared) {
            let outcome = match prep {
                Prep::Done(o) => o,
                Prep::Ready(p) => self
                    .check_ready(&job.event, p, now, &mut ov)
                    .unwrap_or_else(Outcome::Rejected),
            };
            outcomes.push(outcome);
            replies.push(job.reply);
        }
        tracing::debug!(
            group = outcomes.len(),
            check_us = started.elapsed().as_micros() as u64,
            "group checked"
        );
        let new_size = self.tree_size + ov.batch.entries.len() as u64;
        let mut checkpoint = None;
        let mut commit_error = None;
        // After an earlier failed commit, nothing is acknowledged until a flush succeeds.
        if let Some(why) = &self.poisoned {
            commit_error = Some(LedgerError::Uncertain(why.clone()));
        } else if self.unflushed {
            match self.store.flush() {
                Ok(()) => self.unflushed = false,
                // sled keeps failing after an I/O error until it is reopened.
                Err(e) => {
                    commit_error = Some(LedgerError::Uncertain(format!(
                        "{e}; the store has failed since an earlier write: once the disk has \
                         space and works, restart the server"
                    )))
                }
            }
        }
        // On such an error the write is skipped: accepted and duplicate events get the error.
        if commit_error.is_none() && !ov.batch.entries.is_empty() {
            match self.finish_batch(&mut ov, new_size) {
                Ok(cp) => checkpoint = Some(cp),
                Err(e) => commit_error = Some(e),
            }
            let mut applied = false;
            if commit_error.is_none() {
                let flush_started = std::time::Instant::now(); // ops: metrics
                match self.store.commit(&ov.batch) {
                    Ok(()) => {
                        applied = true;
                        crate::metrics::group_committed(
                            ov.batch.entries.len(),
                            flush_started.elapsed(),
                            new_size,
                        ); // ops: metrics
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "group commit failed");
                        // The transaction may have been applied even though `commit` failed (a
                        // failed fsync after it). Learn which from the store, so the next group
                        // never reuses log indices, and flush before acknowledging anything else.
                        self.unflushed = true;
                        commit_error = Some(match self.store.tree_size() {
                            Ok(size) if size == self.tree_size => {
                                LedgerError::Storage(e.to_string())
                            }
                            Ok(size) if size == new_size => {
                                applied = true;
                                LedgerError::Uncertain(e.to_string())
                            }
                            other => {
                                let why = format!(
                                    "after a failed write ({e}) the store's tree size is {other:?}, \
                                     expected {} or {new_size}; appends are refused until the \
                                     server restarts",
                                    self.tree_size
                                );
                                self.poisoned = Some(why);
                                LedgerError::Uncertain(e.to_string())
                            }
                        });
                    }
                }
            }
            if applied {
                self.tree_size = new_size;
                self.last_accepted = now;
                if let Some(reg) = ov.registry.take() {
                    *self.shared_registry.write().expect("registry lock") = reg.clone();
                    self.registry = reg;
                }
                if self.head_cache.len() + ov.heads.len() > HEAD_CACHE_CHAINS {
                    self.head_cache.clear();
                }
                self.head_cache.extend(ov.heads.drain());
            } else {
                // Whatever the store holds now, the cache must not answer for it.
                self.head_cache.clear();
            }
        }
        let checkpoint = match checkpoint {
            Some(cp) => cp,
            None => self.store.checkpoint().ok().flatten().unwrap_or_default(),
        };
        for (outcome, reply) in outcomes.into_iter().zip(replies) {
            let result = match outcome {
                Outcome::Rejected(e) => Err(e),
                Outcome::Accepted(_) | Outcome::Duplicate(_) if commit_error.is_some() => {
                    Err(match commit_error.as_ref().expect("checked by the guard") {
                        LedgerError::Uncertain(m) => LedgerError::Uncertain(m.clone()),
                        LedgerError::Storage(m) => LedgerError::Storage(m.clone()),
                        other => LedgerError::Storage(other.to_string()),
                    })
                }
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
        ov.batch.heads = ov
            .heads
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        ov.batch.tree_size = new_size;
        ov.batch.checkpoint = Some(note.clone());
        Ok(note)
    }

    /// The policy state of a committed chain, replayed from its entries (heads on disk carry
    /// only seq, hash and state name). Keys never change role or site once registered, so the
    /// signers are what they were when each entry was accepted.
    fn rebuild_state(&self, chain_id: &str) -> Result<ChainState, LedgerError> {
        let broken = |why: String| {
            LedgerError::Storage(format!(
                "cannot rebuild the custody state of chain {chain_id}: {why}"
            ))
        };
        let mut state: Option<ChainState> = None;
        for index in self.store.chain_indices(chain_id)? {
            let bytes = self
                .store
                .entry(index)?
                .ok_or_else(|| broken(format!("entry {index} is missing")))?;
            let entry = LogEntry::decode(bytes.as_slice())
                .map_err(|e| broken(format!("entry {index}: {e}")))?;
            let body = EventBody::decode(entry.body.as_slice())
                .map_err(|e| broken(format!("entry {index}: {e}")))?;
            let mut signers = Vec::with_capacity(entry.signatures.len());
            for sig in &entry.signatures {
                let rec = self.registry.get(&sig.key_id).ok_or_else(|| {
                    broken(format!(
                        "entry {index}: signer {} is not registered",
                        sig.key_id
                    ))
                })?;
                signers.push(signer_of(rec, sig));
            }
            state = Some(
                self.policy
                    .apply(state.as_ref(), &body, &signers)
                    .map_err(|v| {
                        broken(format!(
                            "entry {index} no longer passes the custody policy: {v}"
                        ))
                    })?,
            );
        }
        state.ok_or_else(|| broken("the chain has no entries".into()))
    }

    /// The signature verdict computed in `prepare_group`, or a verification now for a key that
    /// was registered earlier in this same group.
    fn signature_ok(
        sig_ok: Option<bool>,
        key: &ed25519_dalek::VerifyingKey,
        hash: &EventHash,
        sig: &crate::pb::Signature,
    ) -> Result<(), LedgerError> {
        match sig_ok {
            Some(true) => Ok(()),
            Some(false) => Err(SigError::Invalid {
                key_id: sig.key_id.clone(),
                event: hash.short(),
            }
            .into()),
            None => Ok(verify_signature(key, hash, sig)?),
        }
    }

    /// The in-order checks that depend on what came before: duplicates in this group, chain
    /// link, signer validity, registry or custody policy.
    fn check_ready(
        &self,
        ev: &SignedEvent,
        ready: Box<Ready>,
        now: i64,
        ov: &mut Overlay,
    ) -> Result<Outcome, LedgerError> {
        let Ready { hash, body, sig_ok } = *ready;
        if let Some(index) = ov.hashes.get(&hash) {
            return Ok(Outcome::Duplicate(*index));
        }
        // A resubmission names a (chain, seq) already taken; the event there tells whether it
        // is the same one (same hash: the same receipt again) or another (a fork, below).
        if let Some(index) = self.store.chain_event(&body.chain_id, body.seq)? {
            if stored_event_hash(&self.store, index)? == hash {
                return Ok(Outcome::Duplicate(index));
            }
        }

        // Chain link [R2, R3].
        let head = match ov
            .heads
            .get(&body.chain_id)
            .or_else(|| self.head_cache.get(&body.chain_id))
        {
            Some(h) => Some(h.clone()),
            None => self.store.head(&body.chain_id)?,
        };
        check_link(&body, head.as_ref())?;

        // Signers [R4, R6].
        let registry = ov.registry.as_ref().unwrap_or(&self.registry);
        let signers = if body.chain_id == KEYS_CHAIN {
            for (sig, ok) in ev.signatures.iter().zip(&sig_ok) {
                let key = registry
                    .admin(&sig.key_id)
                    .ok_or_else(|| KeyError::NotAdmin(sig.key_id.clone()))?;
                Self::signature_ok(*ok, key, &hash, sig)?;
            }
            Vec::new()
        } else {
            let mut signers = Vec::with_capacity(ev.signatures.len());
            let mut records = Vec::with_capacity(ev.signatures.len());
            for sig in &ev.signatures {
                records.push(registry.signer_at(&sig.key_id, sig.signed_at_unix_nanos, now)?);
            }
            for ((sig, rec), ok) in ev.signatures.iter().zip(&records).zip(&sig_ok) {
                Self::signature_ok(*ok, &rec.public_key, &hash, sig)?;
                signers.push(signer_of(rec, sig));
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
            return Err(RuleError::TooLarge { size: entry.len() }.into());
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
            ("KeyRegistry".to_string(), None)
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
            let rebuilt;
            let prior: Option<&ChainState> = match &head {
                Some(Head { state: Some(s), .. }) => Some(s),
                Some(_) => {
                    rebuilt = self.rebuild_state(&body.chain_id)?;
                    Some(&rebuilt)
                }
                None => None,
            };
            let next = self.policy.apply(prior, &body, &signers).map_err(|v| {
                // A signer the table does not allow for this event (role, site, or a signature
                // it does not take) is PERMISSION_DENIED (DESIGN §6); everything else is a
                // custody precondition.
                if matches!(
                    v.rule.as_str(),
                    "signatures" | "signer_site" | "unexpected_signer"
                ) {
                    LedgerError::Role(v)
                } else {
                    LedgerError::Policy(v)
                }
            })?;
            (next.state_name().to_string(), Some(next))
        };

        let leaf = merkle::leaf_hash(&entry);
        let store = &self.store;
        let completed = {
            let nodes = &ov.nodes;
            merkle::nodes_completed_by_append(index, leaf, |l, i| node(store, nodes, l, i))?
        };
        ov.nodes.extend(completed);
        if (index + 1).is_multiple_of(crate::store::LEAF_BLOCK) {
            // A block of leaves is complete: record its leaf hashes (the store keeps no
            // per-entry node below `STORED_NODE_MIN_LEVEL`).
            let first = index + 1 - crate::store::LEAF_BLOCK;
            let nodes = &ov.nodes;
            let leaves = (first..=index)
                .map(|j| node(store, nodes, 0, j))
                .collect::<Result<Vec<_>, _>>()?;
            ov.batch
                .leaf_blocks
                .push((first / crate::store::LEAF_BLOCK, leaves));
        }
        ov.hashes.insert(hash, index);
        for din in bags_named(&body) {
            let named = ov
                .batch
                .bags
                .iter()
                .any(|(d, c, _)| d == din && *c == body.chain_id);
            if !named && !self.store.bag_in_chain(din, &body.chain_id)? {
                ov.batch
                    .bags
                    .push((din.to_string(), body.chain_id.clone(), index));
            }
        }
        ov.heads.insert(
            body.chain_id.clone(),
            Head {
                seq: body.seq,
                hash: hash.0,
                state_name,
                state,
            },
        );
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

/// What the custody policy knows of one verified signature.
fn signer_of(rec: &crate::registry::KeyRecord, sig: &crate::pb::Signature) -> Signer {
    Signer {
        key_id: rec.key_id.clone(),
        role: rec.role.clone(),
        site: rec.site.clone(),
        meaning: SignatureMeaning::try_from(sig.meaning).unwrap_or(SignatureMeaning::Unspecified),
        signed_at_unix_nanos: sig.signed_at_unix_nanos,
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

/// Event hash of the stored entry at `index`.
fn stored_event_hash(store: &Store, index: u64) -> Result<EventHash, LedgerError> {
    let bytes = store
        .entry(index)?
        .ok_or_else(|| LedgerError::Storage(format!("entry {index} is missing")))?;
    let entry = LogEntry::decode(bytes.as_slice())
        .map_err(|e| LedgerError::Storage(format!("entry {index} does not decode: {e}")))?;
    Ok(EventHash::of_body(&entry.body))
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
