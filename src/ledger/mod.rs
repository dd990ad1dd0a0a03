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
//! The queue is fair (`admission`): one FIFO per client connection, served round robin, in
//! small takes while connections compete; streamed events gather into one group over several
//! takes until a unary append is waiting or nothing more is queued.
//! Cheap checks come before expensive ones: an event with more signatures than any transition
//! of the policy takes is refused unverified, and a signature is verified only when its key is
//! registered, valid at its time and has a role the table lets sign that kind of event with
//! that meaning; a connection whose events keep failing verification is throttled, then cut off.
//! Reads go straight to the store.

mod checks;
mod verifier;
mod writer;

use crate::admission::{FairQueue, Peer, PushError};
use crate::crypto::{EventHash, SigError};
use crate::note::NoteSigner;
use crate::pb::{event_body::Detail, EventBody, LogEntry, Receipt, SignedEvent};
use crate::policy::{Policy, PolicyBook, Violation};
use crate::registry::{KeyError, Registry, RegistryError, KEYS_CHAIN};
use crate::rules::{Head, RuleError};
use crate::storage::{Storage, StorageError};
use prost::Message;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;
use verifier::Verifier;
use writer::Writer;

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
    /// The event is malformed by a policy rule (a missing field, a bad code, a key role).
    #[error("invalid event: {0}")]
    Invalid(Violation),
    #[error("bag {bag} is already named by chain {}; one bag belongs to one chain (ISBT 128 DINs are globally unique): check the scan, or record the event on chain {}", crate::policy::cut(chain), crate::policy::cut(chain))]
    BagTaken { bag: String, chain: String },
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
    /// A standby (servers sharing one PostgreSQL database): only the lease holder appends.
    #[error("this server is a standby and records nothing; {}; give clients every server (--server a,b,c) and they find the writer themselves", match .0 { Some(w) => format!("the writer is at {w}: send appends there"), None => "no server holds the writer lease right now (a standby takes over within seconds): retry shortly".into() })]
    NotWriter(Option<String>),
    /// The log key is retired (`celltrail log retire`), or a new key waits for its link
    /// (`celltrail log rotate`): nothing is appended; stations keep their events queued.
    #[error("{0}")]
    KeyRotation(String),
    /// A log-link event that does not fit this log.
    #[error("log link refused: {0}")]
    Link(String),
    /// The store is damaged (what it holds does not decode, sled failed on its files): the
    /// message names where and says to restore from a backup.
    #[error("{0}")]
    Corrupt(String),
    #[error("this connection sent too many events whose signatures failed verification and is cut off; reconnect and send events signed by registered keys")]
    CutOff,
}

impl From<StorageError> for LedgerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt(_) | StorageError::CorruptAt { .. } => {
                LedgerError::Corrupt(e.to_string())
            }
            _ => LedgerError::Storage(e.to_string()),
        }
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
    /// Servers sharing a database: the writer lease decides whether this one appends (None:
    /// always, the embedded store). The writer reloads its state from the store whenever it
    /// starts a new lease epoch.
    pub role: Option<Arc<crate::role::Role>>,
    /// While several connections have appends queued, one take off the queue stops at this many
    /// signatures (so a station's append never waits behind a long verification of someone
    /// else's events). Streamed events still gather into one group over several takes while no
    /// unary caller waits (`verifier`).
    pub shared_group_signatures: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            queue_capacity: 8192,
            max_group: 1024,
            role: None,
            shared_group_signatures: 256,
        }
    }
}

struct Job {
    event: SignedEvent,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

/// Control messages on the append queue; each runs after every append queued before it.
enum Msg {
    /// Finish what is queued, then exit.
    Stop,
    // --- ops: online backup (src/backup.rs) -------------------------------------------------
    /// Commit the group in progress, then run this on the writer thread before the next group:
    /// the store is at a group boundary and nothing writes while it runs.
    AtBoundary(Box<dyn FnOnce() + Send>),
}

/// The ledger: a handle to the verifier and writer threads plus read access to the store.
pub struct Ledger {
    store: Arc<dyn Storage>,
    /// The log key, for statements the read side signs (chain heads); checkpoints are signed
    /// by the writer.
    log_key: NoteSigner,
    /// The policy tables (base and activated), for the read side's questions about a chain
    /// (the Station service); the writer replaces it after a group that activated a table.
    book: Arc<RwLock<PolicyBook>>,
    registry: Arc<RwLock<Registry>>,
    queue: Arc<FairQueue<Job, Msg>>,
    /// The peer of in-process callers ([`Ledger::append`]).
    local: Arc<Peer>,
    /// Set while the writer is inside a write or flush (the watchdog reads it).
    busy: Arc<writer::Busy>,
    /// The verifier and writer threads, joined in that order on shutdown.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Meta key set by a restore: the store holds no chain summaries yet. The ledger writes them
/// (replaying each chain) when it starts on the store, then clears the key.
pub const META_SUMMARIES_MISSING: &str = "summaries_missing";

/// After a restore: every custody chain's summary, replayed from its entries, written in one
/// commit (at the same tree size and checkpoint) that also clears [`META_SUMMARIES_MISSING`].
fn write_missing_summaries(
    store: &dyn Storage,
    registry: &Registry,
    book: &PolicyBook,
) -> Result<(), LedgerError> {
    if store
        .meta(META_SUMMARIES_MISSING)?
        .is_none_or(|v| v.is_empty())
    {
        return Ok(());
    }
    let chains = store.chain_ids()?;
    tracing::info!(
        chains = chains.len(),
        "restored store: writing the console's chain summaries (each chain replayed once)"
    );
    let cut = store.cut()?;
    let mut group = crate::storage::Group {
        tree_size: cut.tree_size,
        checkpoint: cut.checkpoint,
        meta: vec![(META_SUMMARIES_MISSING.to_string(), Vec::new())],
        ..Default::default()
    };
    // A chain that does not replay keeps no summary (its rows show state and seq only, as
    // before); it does not keep the server from serving: appending to it says why.
    let (mut failed, mut first) = (0usize, None);
    for chain in chains {
        if chain == crate::registry::KEYS_CHAIN || chain == crate::loglink::LOG_CHAIN {
            continue;
        }
        match checks::replay_summary(store, registry, book, &chain) {
            Ok(Some(s)) => group.summaries.push((chain, s)),
            Ok(None) => {}
            Err(LedgerError::Storage(why)) => {
                failed += 1;
                first.get_or_insert(why);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(first) = first {
        tracing::warn!(
            chains = failed,
            first = %first,
            "restored store: these chains do not replay, so the console shows their state and seq only"
        );
    }
    store.commit(&group)?;
    Ok(())
}

impl Ledger {
    /// Opens the ledger over `store`: replays the key registry and the policy tables, and
    /// starts the verifier and writer threads. Every entry is judged under the table the log
    /// records for it: the built-in table until the first `PolicyActivated`, as `verify`
    /// replays it; no table reaches the writer any other way.
    pub fn start(
        store: Arc<dyn Storage>,
        admins: &[crate::note::NoteVerifier],
        log_key: NoteSigner,
        options: LedgerOptions,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let registry = replay_registry(store.as_ref(), admins)?;
        let book = replay_policies(
            store.as_ref(),
            PolicyBook::new(Policy::default_autologous_car_t()),
        )?;
        if options.role.is_none() {
            // Only the embedded store is restored (`backup::restore`); a shared database's
            // writer is decided by its lease.
            write_missing_summaries(store.as_ref(), &registry, &book)?;
        }
        let shared_book = Arc::new(RwLock::new(book.clone()));
        let tree_size = store.tree_size()?;
        let rotation = writer::Rotation::of_store(store.as_ref(), &log_key.name)?;
        let statement_key = log_key.clone();
        let queue = Arc::new(FairQueue::new(options.queue_capacity));
        let shared_registry = Arc::new(RwLock::new(registry.clone()));
        let read_registry = shared_registry.clone();
        let mut verifier = Verifier {
            registry: shared_registry.clone(),
            max_group: options.max_group.max(1),
            shared_group_signatures: options.shared_group_signatures.max(1),
            book: shared_book.clone(),
        };
        let busy = Arc::new(writer::Busy::default());
        // Two groups may wait between the stages: the verifier works on group N+1 while the
        // writer checks, writes and flushes group N; the writer commits the groups it finds
        // waiting together (`Writer::run`).
        let (prepared_tx, prepared_rx) = std::sync::mpsc::sync_channel(2);
        let mut writer = Writer {
            max_group: options.max_group.max(1),
            role: options.role.clone(),
            loaded_epoch: options.role.as_ref().and_then(|r| r.epoch()),
            admins: admins.to_vec(),
            store: store.clone(),
            busy: busy.clone(),
            registry,
            shared_registry,
            book,
            shared_book: shared_book.clone(),
            log_key,
            tree_size,
            last_accepted: 0,
            committed: Default::default(),
            unflushed: false,
            poisoned: None,
            rotation,
        };
        let spawn_err = |e: std::io::Error| {
            LedgerError::Storage(format!("cannot start the ledger threads: {e}"))
        };
        let verify_handle = std::thread::Builder::new()
            .name("celltrail-verify".into())
            .spawn({
                let queue = queue.clone();
                move || verifier.run(&queue, prepared_tx)
            })
            .map_err(spawn_err)?;
        let write_handle = std::thread::Builder::new()
            .name("celltrail-writer".into())
            .spawn(move || writer.run(prepared_rx))
            .map_err(spawn_err)?;
        Ok(Arc::new(Ledger {
            store,
            log_key: statement_key,
            book: shared_book,
            registry: read_registry,
            queue,
            local: Peer::local(),
            busy,
            threads: Mutex::new(vec![verify_handle, write_handle]),
        }))
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The signed head statement of a chain in the tree of `tree_size` entries (0 = current).
    pub fn signed_chain_head(
        &self,
        chain_id: &str,
        tree_size: u64,
    ) -> Result<(crate::note::ChainHeadStatement, String), crate::log::LogError> {
        let st = crate::log::chain_head_statement(
            self.store.as_ref(),
            &self.log_key.name,
            chain_id,
            tree_size,
        )?;
        let note = crate::note::sign_note(&st.to_text(), &[&self.log_key]).map_err(|e| {
            crate::log::LogError::InvalidArgument(format!(
                "chain id {:?} cannot go into a signed note: {e}",
                crate::policy::cut(chain_id)
            ))
        })?;
        Ok((st, note))
    }

    /// Appends one signed event; returns once it is durable (or rejected).
    pub async fn append(&self, event: SignedEvent) -> Result<Receipt, LedgerError> {
        self.append_from(&self.local.clone(), event).await
    }

    /// [`Ledger::append`] for a client connection: queued in `peer`'s own queue, refused at
    /// once when the ledger's queue is full.
    pub async fn append_from(
        &self,
        peer: &Arc<Peer>,
        event: SignedEvent,
    ) -> Result<Receipt, LedgerError> {
        let (reply, rx) = oneshot::channel();
        match self.queue.try_push(peer, Job { event, reply }) {
            Ok(()) => {}
            Err(PushError::Full(_)) => return Err(LedgerError::Overloaded(self.queue.capacity())),
            Err(PushError::Closed(_)) => return Err(LedgerError::ShuttingDown),
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
        self.submit_from(&self.local.clone(), event).await
    }

    /// [`Ledger::submit`] for a client connection (its own queue, served round robin).
    pub async fn submit_from(
        &self,
        peer: &Arc<Peer>,
        event: SignedEvent,
    ) -> impl std::future::Future<Output = Result<Receipt, LedgerError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .queue
            .push_wait(peer, Job { event, reply })
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
            // The stop goes behind every append already queued.
            let _ = self.queue.push_control(Msg::Stop);
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
        self.queue
            .push_control(Msg::AtBoundary(job))
            .map_err(|_| LedgerError::ShuttingDown)?;
        rx.await.map_err(|_| LedgerError::ShuttingDown)
    }
    // --- end ops ------------------------------------------------------------------------------

    /// The custody policy table in force for the next entry.
    pub fn policy(&self) -> Arc<Policy> {
        self.book
            .read()
            .expect("policy book lock")
            .current()
            .policy
            .clone()
    }

    /// Every policy table: the base, then each activated one (for reports).
    pub fn policy_book(&self) -> PolicyBook {
        self.book.read().expect("policy book lock").clone()
    }

    /// A chain's custody state, replayed from its committed entries (`None`: no entries).
    pub fn chain_state(
        &self,
        chain_id: &str,
    ) -> Result<Option<crate::policy::ChainState>, LedgerError> {
        let registry = self
            .registry
            .read()
            .map_err(|_| LedgerError::Storage("the key registry lock is poisoned".into()))?
            .clone();
        let book = self.policy_book();
        checks::replay_state(self.store.as_ref(), &registry, &book, chain_id)
    }

    // --- ops: online backup (src/backup.rs) -------------------------------------------------
    /// The head chain `chain_id` had when the log held `tree_size` entries (`None`: it had no
    /// entries then). Needs no pause of the writer: entries below `tree_size` never change, so a
    /// head that moved on since is found again among them — the last seq whose entry lies below
    /// the cut (a binary search over the chain's seqs), its event hash, and its custody state
    /// name replayed from the chain's entries before the cut.
    pub fn head_at(&self, chain_id: &str, tree_size: u64) -> Result<Option<Head>, LedgerError> {
        let store = self.store.as_ref();
        let Some(live) = store.head(chain_id)? else {
            return Ok(None);
        };
        let index_of = |seq: u64| -> Result<u64, LedgerError> {
            store.chain_event(chain_id, seq)?.ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "chain {} has a head at seq {} but no entry at seq {seq}",
                    crate::policy::cut(chain_id),
                    live.seq
                ))
            })
        };
        if index_of(live.seq)? < tree_size {
            return Ok(Some(live));
        }
        if index_of(0)? >= tree_size {
            return Ok(None);
        }
        // Entry of seq `lo` is below the cut, entry of seq `hi` is not.
        let (mut lo, mut hi) = (0u64, live.seq);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match index_of(mid)? < tree_size {
                true => lo = mid,
                false => hi = mid,
            }
        }
        let index = index_of(lo)?;
        let hash = stored_event_hash(store, index)?;
        let (state_name, state) = match chain_id {
            KEYS_CHAIN => ("KeyRegistry".to_string(), None),
            crate::loglink::LOG_CHAIN => ("LogLink".to_string(), None),
            _ => {
                let registry = self.registry.read().expect("registry lock").clone();
                let book = self.policy_book();
                let state =
                    checks::replay_state_before(store, &registry, &book, chain_id, index + 1)?;
                let name = state
                    .as_ref()
                    .map_or_else(String::new, |s| s.state_name().to_string());
                (name, state)
            }
        };
        Ok(Some(Head::after(lo, hash.0, state_name, state)))
    }
    // --- end ops ------------------------------------------------------------------------------

    /// The verifying key of operator admin key `key_id` (a trust anchor), if it is one.
    pub fn admin_key(&self, key_id: &str) -> Option<ed25519_dalek::VerifyingKey> {
        self.registry
            .read()
            .expect("registry lock")
            .admin(key_id)
            .copied()
    }

    /// How long the writer has been inside one group's write or flush (`None`: it is not).
    /// The server's watchdog turns health NOT_SERVING when this grows too long.
    pub fn writer_busy_for(&self) -> Option<std::time::Duration> {
        self.busy.since()
    }

    pub fn head(&self, chain_id: &str) -> Result<Head, LedgerError> {
        self.store.head(chain_id)?.ok_or_else(|| {
            LedgerError::NotFound(format!(
                "chain {} does not exist",
                crate::policy::cut(chain_id)
            ))
        })
    }
}

/// Rebuilds the key registry from the `keys` chain.
pub fn replay_registry(
    store: &dyn Storage,
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
            Some(Detail::PolicyActivated(_)) => {}
            _ => {
                return Err(LedgerError::Storage(format!(
                    "entry {index} on the keys chain is not a key event"
                )))
            }
        }
    }
    Ok(reg)
}

/// The policy tables: `base`, then each `PolicyActivated` of the `keys` chain at its index.
pub fn replay_policies(store: &dyn Storage, base: PolicyBook) -> Result<PolicyBook, LedgerError> {
    let mut book = base;
    for index in store.chain_indices(KEYS_CHAIN)? {
        let bytes = store.entry(index)?.ok_or_else(|| {
            LedgerError::Storage(format!("entry {index} of the keys chain is missing"))
        })?;
        let entry = LogEntry::decode(bytes.as_slice())
            .map_err(|e| LedgerError::Storage(format!("entry {index} does not decode: {e}")))?;
        let body = EventBody::decode(entry.body.as_slice()).map_err(|e| {
            LedgerError::Storage(format!("entry {index} body does not decode: {e}"))
        })?;
        if let Some(Detail::PolicyActivated(pa)) = body.detail {
            book.activate(index, &pa).map_err(|e| {
                LedgerError::Storage(format!("entry {index}: stored policy table: {e}"))
            })?;
        }
    }
    Ok(book)
}

/// Event hash of the stored entry at `index`.
fn stored_event_hash(store: &dyn Storage, index: u64) -> Result<EventHash, LedgerError> {
    let bytes = store
        .entry(index)?
        .ok_or_else(|| LedgerError::Storage(format!("entry {index} is missing")))?;
    let entry = LogEntry::decode(bytes.as_slice())
        .map_err(|e| LedgerError::Storage(format!("entry {index} does not decode: {e}")))?;
    Ok(EventHash::of_body(&entry.body))
}

/// The receipt of an event already in the log (idempotent resubmission).
pub fn receipt_for_index(
    store: &dyn Storage,
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
        holds_opened: Vec::new(),
    })
}
