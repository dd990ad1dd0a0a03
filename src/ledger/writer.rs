//! Second stage of the append pipeline, the only code that writes: checks each event of a
//! group in order (`checks`), stages the accepted ones with their Merkle nodes, commits the
//! group in one transaction, flushes, signs the checkpoint and answers every caller.

use super::verifier::{Outcome, Prep, Stage};
use super::{receipt_for_index, Job, LedgerError};
use crate::crypto::EventHash;
use crate::merkle;
use crate::note::{Checkpoint, NoteSigner};
use crate::pb::{EventBody, Receipt};
use crate::policy::{ChainState, PolicyBook};
use crate::registry::Registry;
use crate::rules::{bags_named, Head};
use crate::storage::{Group, NewEntry, Storage};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// When the writer entered its current write or flush (nanoseconds after `origin`; 0 = idle).
pub(super) struct Busy {
    origin: std::time::Instant,
    since: std::sync::atomic::AtomicU64,
}

impl Default for Busy {
    fn default() -> Self {
        Busy {
            origin: std::time::Instant::now(),
            since: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Marks the writer busy until dropped.
pub(super) struct BusyGuard<'a>(&'a Busy);

impl Busy {
    fn enter(&self) -> BusyGuard<'_> {
        let at = self.origin.elapsed().as_nanos().max(1) as u64;
        self.since.store(at, std::sync::atomic::Ordering::Release);
        BusyGuard(self)
    }

    pub(super) fn since(&self) -> Option<std::time::Duration> {
        match self.since.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            at => Some(
                self.origin
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_nanos(at)),
            ),
        }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.since.store(0, std::sync::atomic::Ordering::Release);
    }
}

pub(super) struct Writer {
    /// Most events committed in one transaction (`LedgerOptions::max_group`).
    pub(super) max_group: usize,
    /// Whether this server may write (None: always); see `LedgerOptions::role`.
    pub(super) role: Option<Arc<crate::role::Role>>,
    /// The lease epoch whose store state the writer holds in memory.
    pub(super) loaded_epoch: Option<u64>,
    /// Trust anchors, to replay the key registry on a reload.
    pub(super) admins: Vec<crate::note::NoteVerifier>,
    pub(super) store: Arc<dyn Storage>,
    /// Set while inside a write or flush (the watchdog reads it).
    pub(super) busy: Arc<Busy>,
    pub(super) registry: Registry,
    /// The registry as the verifier sees it, updated after each commit that changed it.
    pub(super) shared_registry: Arc<RwLock<Registry>>,
    /// The policy tables; the last one judges the next custody event.
    pub(super) book: PolicyBook,
    /// The book as the read side sees it, updated after each commit that activated a table.
    pub(super) shared_book: Arc<RwLock<PolicyBook>>,
    pub(super) log_key: NoteSigner,
    pub(super) tree_size: u64,
    pub(super) last_accepted: i64,
    /// What the checks read of the committed store, kept in memory (see `Committed`).
    pub(super) committed: Committed,
    /// A commit failed: the store may hold writes that were never fsynced. Flush before the
    /// next acknowledgement (a duplicate's receipt included).
    pub(super) unflushed: bool,
    /// The store's state after a failed commit could not be read back: refuse appends until
    /// a restart re-reads it (reads keep working).
    pub(super) poisoned: Option<String>,
    /// Where this log stands in a key rotation (`loglink`), read from the store.
    pub(super) rotation: Rotation,
}

/// Whether the writer's log key may append, as far as key rotation goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) enum Rotation {
    /// The key signed the stored checkpoint (or the log is empty): append.
    #[default]
    Current,
    /// `celltrail log retire` retired this key: append nothing.
    Retired { origin: String, size: u64 },
    /// The stored checkpoint is signed under another origin: this is a new key, and its
    /// first entry must be the link to that origin's final checkpoint.
    AwaitingLink { previous_origin: String },
}

impl Rotation {
    /// Reads the rotation state of `store` for a writer signing as `origin`.
    pub(super) fn of_store(store: &dyn Storage, origin: &str) -> Result<Rotation, LedgerError> {
        let retired = store
            .meta(crate::loglink::META_RETIRED)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if retired.as_deref() == Some(origin) {
            return Ok(Rotation::Retired {
                origin: origin.to_string(),
                size: store.tree_size()?,
            });
        }
        let Some(note) = store.checkpoint()?.filter(|n| !n.is_empty()) else {
            return Ok(Rotation::Current);
        };
        let text = note.split_once("\n\n").map_or(note.as_str(), |(t, _)| t);
        let Ok(stored) = Checkpoint::parse(&format!("{text}\n")) else {
            // Not this check's business: the audit and the readers report a broken checkpoint.
            tracing::warn!("the stored checkpoint does not parse; key rotation state unknown");
            return Ok(Rotation::Current);
        };
        Ok(match stored.origin == origin {
            true => Rotation::Current,
            false => Rotation::AwaitingLink {
                previous_origin: stored.origin,
            },
        })
    }

    /// Why nothing but (possibly) the link may be appended now; `None`: append.
    pub(super) fn refusal(&self, own_origin: &str) -> Option<String> {
        match self {
            Rotation::Current => None,
            Rotation::Retired { origin, size } => Some(format!(
                "log {origin} is retired (celltrail log retire) at size {size} and appends \
                 nothing more; its successor takes appends once `celltrail log rotate` has \
                 linked it: keep the event and resubmit it then (stations keep it queued)"
            )),
            Rotation::AwaitingLink { previous_origin } => Some(format!(
                "this server signs as {own_origin}, but the log's checkpoints are signed by \
                 {previous_origin}: the first entry under a new log key must be the link to the \
                 retired key's final checkpoint (celltrail log rotate); until then nothing is \
                 appended: keep the event and resubmit it later"
            )),
        }
    }
}

/// Chains (and bags) whose committed state the writer keeps in memory before it starts over.
pub(super) const HEAD_CACHE_CHAINS: usize = 20_000;

/// The committed store's values that checking an event reads, kept in memory so that in a
/// steady stream of appends checking an event reads nothing from the store (with PostgreSQL
/// every read is a round trip to the database: three or four per event cost more than the
/// group commit itself). Only the writer changes the store, and with a role only in the lease
/// epoch whose state it loaded, so each value equals the store's; all are dropped together
/// whenever that may not hold (a failed commit, a new lease epoch) and when they grow past
/// `HEAD_CACHE_CHAINS`. A value not here is read from the store.
#[derive(Default)]
pub(super) struct Committed {
    /// Chain heads; saves a read and a JSON parse per event.
    pub(super) heads: HashMap<String, Head>,
    /// The worklist summaries of custody chains.
    pub(super) summaries: HashMap<String, crate::summary::ChainSummary>,
    /// Bag id → every chain that names it (the store's `chains_of_bag`).
    pub(super) bags: HashMap<String, Vec<String>>,
    /// The perfect subtrees that make up the tree of `tree_size` leaves (its compact range):
    /// the only stored nodes the next group's appends and root read (`merkle::compact_range`).
    pub(super) frontier: HashMap<(u32, u64), [u8; 32]>,
}

impl Committed {
    pub(super) fn clear(&mut self) {
        *self = Committed::default();
    }
}

/// What one group has changed so far, on top of the store.
#[derive(Default)]
pub(super) struct Overlay {
    pub(super) heads: HashMap<String, Head>,
    pub(super) hashes: HashMap<EventHash, u64>,
    pub(super) nodes: HashMap<(u32, u64), [u8; 32]>,
    pub(super) registry: Option<Registry>,
    /// The policy book with this group's activations (None: unchanged).
    pub(super) book: Option<PolicyBook>,
    pub(super) batch: Group,
    /// The group holds the log link that makes the writer's key current.
    pub(super) linked: bool,
    /// Chains naming a bag as read from the store for this group (before its own entries).
    pub(super) bag_reads: HashMap<String, Vec<String>>,
}

impl Writer {
    /// Commits what the verifier hands over, in order. Groups the verifier finished while the
    /// writer was busy with the previous commit are checked and committed together, up to
    /// `max_group` events: one transaction, one fsync and one signed checkpoint for all of them.
    /// The verifier takes small bites off the queue while several connections compete
    /// (`admission`), so that a station's event is verified soon after it arrives, and passes a
    /// group on after each bite while a unary caller waits; without this, each of those small
    /// groups would pay its own fsync and the writer, not the CPU, would bound a busy server.
    /// Merging only happens when groups are already waiting, so it never delays an event the
    /// writer could have taken sooner.
    pub(super) fn run(&mut self, rx: std::sync::mpsc::Receiver<Stage>) {
        let mut held: Option<Stage> = None;
        loop {
            let stage = match held.take() {
                Some(stage) => stage,
                None => match rx.recv() {
                    Ok(stage) => stage,
                    Err(_) => return,
                },
            };
            match stage {
                Stage::Group(mut group) => {
                    while group.jobs.len() < self.max_group {
                        match rx.try_recv() {
                            Ok(Stage::Group(g))
                                if group.jobs.len() + g.jobs.len() <= self.max_group =>
                            {
                                group.extend(g);
                            }
                            // A control step (backup cut) or a group that does not fit: after
                            // this commit.
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group.jobs, group.preps, group.now)
                }
                Stage::AtBoundary(f) => f(),
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>, prepared: Vec<Prep>, now: i64) {
        if group.is_empty() {
            return;
        }
        if let Err(e) = self.check_role() {
            for job in group {
                let _ = job.reply.send(Err(match &e {
                    LedgerError::NotWriter(w) => LedgerError::NotWriter(w.clone()),
                    other => LedgerError::Storage(other.to_string()),
                }));
            }
            return;
        }
        if let Rotation::Retired { .. } = self.rotation {
            let why = self
                .rotation
                .refusal(&self.log_key.name)
                .unwrap_or_default();
            for job in group {
                let _ = job.reply.send(Err(LedgerError::KeyRotation(why.clone())));
            }
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
            let _busy = self.busy.enter();
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
                let busy = self.busy.enter();
                #[cfg(debug_assertions)]
                crate::failpoint::stall_commit();
                let committed = self.store.commit(&ov.batch);
                drop(busy);
                match committed {
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
                                // Servers sharing a database (a role): give up the lease, so
                                // this or another server takes it with a new epoch and reloads
                                // the state from the store (`check_role`), e.g. once a
                                // promoted standby answers. Alone: only a restart re-reads it.
                                let until = match &self.role {
                                    Some(role) => {
                                        role.step_down(None);
                                        "a server takes the writer lease again and reloads the \
                                         store's state"
                                    }
                                    None => "the server restarts",
                                };
                                let why = format!(
                                    "after a failed write ({e}) the store's tree size is {other:?}, \
                                     expected {} or {new_size}; appends are refused until {until}",
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
                if ov.linked {
                    self.rotation = Rotation::Current;
                }
                if let Some(book) = ov.book.take() {
                    *self.shared_book.write().expect("policy book lock") = book.clone();
                    self.book = book;
                }
                if let Some(reg) = ov.registry.take() {
                    *self.shared_registry.write().expect("registry lock") = reg.clone();
                    self.registry = reg;
                }
                self.remember_committed(&mut ov, new_size);
            } else {
                // Whatever the store holds now, the cache must not answer for it.
                self.committed.clear();
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
                    holds_opened: a.holds_opened,
                }),
                Outcome::Duplicate(index) => {
                    receipt_for_index(self.store.as_ref(), index, self.tree_size, &checkpoint)
                }
            };
            let _ = reply.send(result);
        }
    }

    /// Computes the new root, signs the checkpoint and adds nodes and checkpoint to the batch.
    /// With a role: refuses as a standby; on a new lease epoch first reloads what it holds in
    /// memory (tree size, key registry, heads, time order) from the store, where another writer
    /// may have appended since.
    fn check_role(&mut self) -> Result<(), LedgerError> {
        let Some(role) = self.role.clone() else {
            return Ok(());
        };
        let Some(epoch) = role.epoch() else {
            return Err(LedgerError::NotWriter(role.writer_address()));
        };
        if self.loaded_epoch != Some(epoch) {
            let registry = super::replay_registry(self.store.as_ref(), &self.admins)?;
            let base = (*self.book.tables()[0].policy).clone();
            let book = super::replay_policies(self.store.as_ref(), PolicyBook::new(base))?;
            *self.shared_book.write().expect("policy book lock") = book.clone();
            self.book = book;
            let tree_size = self.store.tree_size()?;
            let last_accepted = match tree_size.checked_sub(1) {
                Some(last) => match self.store.entry(last)? {
                    Some(bytes) => {
                        <crate::pb::LogEntry as prost::Message>::decode(bytes.as_slice())
                            .map_err(|e| {
                                LedgerError::Storage(format!("entry {last} does not decode: {e}"))
                            })?
                            .accepted_at_unix_nanos
                    }
                    None => 0,
                },
                None => 0,
            };
            *self.shared_registry.write().expect("registry lock") = registry.clone();
            self.registry = registry;
            self.tree_size = tree_size;
            self.last_accepted = self.last_accepted.max(last_accepted);
            self.committed.clear();
            self.unflushed = false;
            self.poisoned = None;
            self.rotation = Rotation::of_store(self.store.as_ref(), &self.log_key.name)?;
            self.loaded_epoch = Some(epoch);
            tracing::info!(
                epoch,
                tree_size,
                "writer state reloaded for a new lease epoch"
            );
        }
        Ok(())
    }

    /// After a group is committed: what it changed becomes the committed state in memory.
    fn remember_committed(&mut self, ov: &mut Overlay, new_size: u64) {
        let c = &mut self.committed;
        if c.heads.len() + ov.heads.len() > HEAD_CACHE_CHAINS
            || c.bags.len() + ov.bag_reads.len() > HEAD_CACHE_CHAINS
        {
            c.clear();
        }
        // The compact range of the new size: from this group's nodes and the old range; after
        // a start or a reload, read once from the store.
        let mut frontier = HashMap::new();
        for (l, i) in merkle::compact_range(new_size) {
            match node(self.store.as_ref(), &ov.nodes, &c.frontier, l, i) {
                Ok(h) => {
                    frontier.insert((l, i), h);
                }
                Err(e) => tracing::warn!(error = %e, "Merkle frontier node not read; read later"),
            }
        }
        c.frontier = frontier;
        c.heads.extend(ov.heads.drain());
        c.summaries.extend(ov.batch.summaries.drain(..));
        c.bags.extend(ov.bag_reads.drain());
        for (bag, chain, _) in &ov.batch.bags {
            // Only a bag whose chains are all known gets one more; others are read when needed.
            if let Some(chains) = c.bags.get_mut(bag) {
                if !chains.contains(chain) {
                    chains.push(chain.clone());
                }
            }
        }
    }

    /// Every chain that names `bag`, committed or earlier in this group.
    pub(super) fn chains_naming(
        &self,
        bag: &str,
        ov: &mut Overlay,
    ) -> Result<Vec<String>, LedgerError> {
        let mut chains = match ov
            .bag_reads
            .get(bag)
            .or_else(|| self.committed.bags.get(bag))
        {
            Some(c) => c.clone(),
            None => {
                let c = self.store.chains_of_bag(bag)?;
                ov.bag_reads.insert(bag.to_string(), c.clone());
                c
            }
        };
        for (d, c, _) in &ov.batch.bags {
            if d == bag && !chains.contains(c) {
                chains.push(c.clone());
            }
        }
        Ok(chains)
    }

    fn finish_batch(&self, ov: &mut Overlay, new_size: u64) -> Result<String, LedgerError> {
        let store = self.store.as_ref();
        let (nodes, frontier) = (&ov.nodes, &self.committed.frontier);
        let root = merkle::root_at(new_size, |l, i| node(store, nodes, frontier, l, i))?;
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

    /// Adds an accepted entry to the group: its Merkle nodes and, when a block of leaves is
    /// complete, that block's leaf hashes; the bags it names for the first time in its chain;
    /// the chain's new head; the entry itself.
    #[allow(clippy::too_many_arguments)] // one call site; the values of one accepted event
    pub(super) fn stage_entry(
        &self,
        ov: &mut Overlay,
        index: u64,
        entry: Vec<u8>,
        hash: EventHash,
        body: &EventBody,
        state_name: String,
        state: Option<ChainState>,
    ) -> Result<(), LedgerError> {
        let leaf = merkle::leaf_hash(&entry);
        let store = self.store.as_ref();
        let completed = {
            let (nodes, frontier) = (&ov.nodes, &self.committed.frontier);
            merkle::nodes_completed_by_append(index, leaf, |l, i| {
                node(store, nodes, frontier, l, i)
            })?
        };
        ov.nodes.extend(completed);
        ov.hashes.insert(hash, index);
        for din in bags_named(body) {
            if !self.chains_naming(din, ov)?.contains(&body.chain_id) {
                ov.batch
                    .bags
                    .push((din.to_string(), body.chain_id.clone(), index));
            }
        }
        if let Some(st) = &state {
            // The worklist's summary, written with the head (the console never replays).
            let prev = match ov
                .batch
                .summaries
                .iter()
                .position(|(c, _)| *c == body.chain_id)
            {
                Some(i) => Some(ov.batch.summaries.swap_remove(i).1),
                None => match self.committed.summaries.get(&body.chain_id) {
                    Some(s) => Some(s.clone()),
                    None => self.store.chain_summary(&body.chain_id)?,
                },
            };
            // Near misses so far: from the summary, or counted once from the chain when its
            // summary was written by a version that did not count them.
            let before = match prev.as_ref().and_then(|p| p.near_misses) {
                Some(n) => n,
                None if body.seq == 0 => crate::summary::NearMisses::default(),
                None => super::checks::near_misses_stored(store, &body.chain_id)?,
            };
            let summary = crate::summary::ChainSummary::after(
                &body.chain_id,
                prev.as_ref(),
                st,
                body.occurred_at_unix_nanos,
                before.after_event(body),
            );
            ov.batch.summaries.push((body.chain_id.clone(), summary));
        }
        ov.heads.insert(
            body.chain_id.clone(),
            Head::after(body.seq, hash.0, state_name, state),
        );
        ov.batch.entries.push(NewEntry {
            index,
            bytes: entry,
            event_hash: hash,
            chain_id: body.chain_id.clone(),
            seq: body.seq,
        });
        Ok(())
    }
}

/// One stored perfect-subtree hash, from this group's overlay, the committed frontier or the
/// store.
pub(super) fn node(
    store: &dyn Storage,
    overlay: &HashMap<(u32, u64), [u8; 32]>,
    frontier: &HashMap<(u32, u64), [u8; 32]>,
    level: u32,
    index: u64,
) -> Result<[u8; 32], LedgerError> {
    if let Some(h) = overlay
        .get(&(level, index))
        .or_else(|| frontier.get(&(level, index)))
    {
        return Ok(*h);
    }
    store.node(level, index)?.ok_or_else(|| {
        LedgerError::Storage(format!(
            "Merkle node ({level},{index}) is missing from the store"
        ))
    })
}
