//! The store's boundary: every call into sled goes through [`Store`], which turns a panic
//! inside sled into [`StorageError::CorruptAt`] ("store corrupt at …; restore from backup").
//! sled 0.34 panics instead of returning an error on some damaged files (a truncated `db`, a
//! flipped bit in a blob); without this a corrupt store would take down `serve` or `verify`
//! with a backtrace that tells an operator nothing. After one such panic the store answers
//! every later call with the same error: sled's state is no longer trusted.
//!
//! sled also *recovers* quietly from some damage by cutting its log back to the last record
//! that passes its checks (a truncated `db`, a bad blob): the store then opens as it was some
//! groups ago, acknowledged events gone, and the next appends would reuse their log indices.
//! So after each committed group the store also writes the group's signed checkpoint to
//! [`LAST_CHECKPOINT`] beside sled's files (no fsync: it must never be ahead of what sled made
//! durable, and a lost or torn copy is ignored), and [`Store::open`] refuses a store that holds
//! fewer entries than that checkpoint.

use super::Sled;
use crate::crypto::EventHash;
use crate::rules::Head;
use crate::storage::{Group, Hash, Storage, StorageError};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// The sled backend of [`Storage`], behind the panic boundary.
pub struct Store {
    sled: Sled,
    /// The store's directory, for messages.
    path: PathBuf,
    /// Set by the first panic caught; every later call returns it.
    broken: Mutex<Option<StorageError>>,
}

thread_local! {
    /// Set while this thread is inside a guarded sled call: the panic hook stays quiet.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened (file:line inside sled).
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The file in the store's directory holding the last committed group's signed checkpoint.
pub const LAST_CHECKPOINT: &str = "celltrail-last-checkpoint";

/// Installs (once) a panic hook that records, instead of printing, a panic raised inside a
/// guarded sled call; any other panic goes to the hook that was there before.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANICKED_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info)
            }
        }));
    });
}

/// Runs `f`, returning the panic's message and place if it panics.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        match PANICKED_AT.with(|p| p.borrow_mut().take()) {
            Some(at) => format!("sled panicked at {at}: {msg}"),
            None => format!("sled panicked: {msg}"),
        }
    })
}

/// The tree size of a signed checkpoint note (its text is everything before the blank line).
fn checkpoint_size(note: &str) -> Option<u64> {
    let text = &note[..note.find("\n\n")? + 1];
    crate::note::Checkpoint::parse(text).ok().map(|c| c.size)
}

fn corrupt(path: &Path, what: &str, detail: String) -> StorageError {
    StorageError::CorruptAt {
        at: format!("{} ({what})", path.display()),
        detail,
    }
}

impl Store {
    /// Opens (or creates) the store in `path`. sled recovers its log on open; an older layout
    /// is upgraded once.
    ///
    /// sled holds an exclusive file lock while any handle (including its background flusher)
    /// lives; a previous owner that is just closing, in this process or another, releases it
    /// moments later, so a busy lock is retried for a few seconds.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let sled = catch(|| Sled::open(path))
            .map_err(|detail| corrupt(path, "opening the store", detail))??;
        let store = Store::wrap(sled, path);
        store.check_last_checkpoint()?;
        Ok(store)
    }

    /// [`Store::open`] for the offline audit: a larger page cache, and never writes (an
    /// auditor's copy stays as it was handed over; an older format is read as it is).
    pub fn open_for_audit(path: &Path) -> Result<Store, StorageError> {
        let sled = catch(|| Sled::open_for_audit(path))
            .map_err(|detail| corrupt(path, "opening the store", detail))??;
        let store = Store::wrap(sled, path);
        store.check_last_checkpoint()?;
        Ok(store)
    }

    /// Refuses a store that lost groups it had committed: it holds fewer entries than the
    /// checkpoint written beside it after its last commit. (Whether the stored tree matches its
    /// own checkpoint is `log::check_against_checkpoint`'s question, and the audit's.)
    /// A missing or unreadable copy (never written, or torn by a crash) proves nothing.
    fn check_last_checkpoint(&self) -> Result<(), StorageError> {
        let file = self.path.join(LAST_CHECKPOINT);
        let Ok(note) = std::fs::read_to_string(&file) else {
            return Ok(());
        };
        let Some(size) = checkpoint_size(&note) else {
            tracing::warn!(file = %file.display(), "ignoring an unreadable last-checkpoint copy");
            return Ok(());
        };
        let stored_size = self.tree_size()?;
        let lost = |detail: String| StorageError::CorruptAt {
            at: self.path.display().to_string(),
            detail,
        };
        if stored_size < size {
            return Err(lost(format!(
                "it holds {stored_size} log entries, but its last commit signed a checkpoint \
                 for {size} ({}): sled dropped the end of its files on recovery",
                file.display()
            )));
        }
        Ok(())
    }

    /// The trees inside, for the store's own tests.
    #[cfg(test)]
    pub(super) fn sled(&self) -> &Sled {
        &self.sled
    }

    fn wrap(sled: Sled, path: &Path) -> Store {
        Store {
            sled,
            path: path.to_path_buf(),
            broken: Mutex::new(None),
        }
    }

    /// Runs one call into sled; a panic becomes [`StorageError::CorruptAt`] naming the store
    /// and `what` was being done, and breaks the store for good.
    fn guard<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Sled) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = broken.as_ref() {
            return Err(e.clone());
        }
        drop(broken);
        match catch(|| f(&self.sled)) {
            Ok(result) => result,
            Err(detail) => {
                let e = corrupt(&self.path, &what(), detail);
                tracing::error!(error = %e, "the store is corrupt");
                broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
                *broken = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl Storage for Store {
    fn commit(&self, group: &Group) -> Result<(), StorageError> {
        self.guard(
            || {
                format!(
                    "writing entries from {}",
                    group.tree_size - group.entries.len() as u64
                )
            },
            |s| s.commit(group),
        )?;
        // Only after sled made the group durable: this copy is never ahead of the store.
        if let Some(note) = &group.checkpoint {
            let file = self.path.join(LAST_CHECKPOINT);
            if let Err(e) = std::fs::write(&file, note) {
                tracing::warn!(file = %file.display(), error = %e, "cannot write the last-checkpoint copy");
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.guard(|| "flushing".into(), |s| s.flush())
    }

    fn tree_size(&self) -> Result<u64, StorageError> {
        self.guard(|| "reading the tree size".into(), |s| s.tree_size())
    }

    fn checkpoint(&self) -> Result<Option<String>, StorageError> {
        self.guard(|| "reading the checkpoint".into(), |s| s.checkpoint())
    }

    fn head(&self, chain_id: &str) -> Result<Option<Head>, StorageError> {
        self.guard(
            || format!("reading the head of chain {chain_id}"),
            |s| s.head(chain_id),
        )
    }

    fn chain_ids(&self) -> Result<Vec<String>, StorageError> {
        self.guard(|| "listing chains".into(), |s| s.chain_ids())
    }

    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.guard(|| format!("reading entry {index}"), |s| s.entry(index))
    }

    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.guard(
            || format!("reading entries from {start}"),
            |s| s.entries_from(start, limit),
        )
    }

    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError> {
        self.guard(
            || format!("reading chain {chain_id} seq {seq}"),
            |s| s.chain_event(chain_id, seq),
        )
    }

    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError> {
        self.guard(
            || format!("reading chain {chain_id}"),
            |s| s.chain_indices(chain_id),
        )
    }

    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError> {
        self.guard(
            || "looking up an event by hash".into(),
            |s| s.index_of_hash(hash),
        )
    }

    fn chains_of_bag(&self, bag: &str) -> Result<Vec<String>, StorageError> {
        self.guard(
            || format!("reading the chains of bag {bag}"),
            |s| s.chains_of_bag(bag),
        )
    }

    fn bag_in_chain(&self, bag: &str, chain_id: &str) -> Result<bool, StorageError> {
        self.guard(
            || format!("reading the bags of chain {chain_id}"),
            |s| s.bag_in_chain(bag, chain_id),
        )
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StorageError> {
        self.guard(
            || format!("reading Merkle node ({level},{index})"),
            |s| s.node(level, index),
        )
    }

    fn recorded_leaf(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        self.guard(
            || format!("reading the leaf hash of entry {index}"),
            |s| s.recorded_leaf(index),
        )
    }

    fn chain_summary(
        &self,
        chain_id: &str,
    ) -> Result<Option<crate::summary::ChainSummary>, StorageError> {
        self.guard(
            || format!("reading the summary of chain {chain_id}"),
            |s| s.chain_summary(chain_id),
        )
    }

    fn chain_summaries(&self) -> Result<Vec<crate::summary::ChainSummary>, StorageError> {
        self.guard(|| "reading chain summaries".into(), |s| s.chain_summaries())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.guard(|| format!("reading meta {key}"), |s| s.meta(key))
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.guard(|| "measuring the store".into(), |s| s.size_on_disk())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_a_guarded_call_is_an_error_naming_the_store_and_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store
            .guard(
                || "reading entry 7".into(),
                |_| -> Result<(), StorageError> { panic!("bad page") },
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("store corrupt at "), "{msg}");
        assert!(
            msg.contains("reading entry 7") && msg.contains("bad page"),
            "{msg}"
        );
        assert!(msg.contains("restore from backup"), "{msg}");
        // Broken for good: later calls answer the same error without touching sled.
        assert_eq!(store.tree_size().unwrap_err().to_string(), msg);
    }
}
