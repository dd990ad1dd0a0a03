//! Whether this server may write: the writer's lease epoch, or the address of the server that
//! writes. Shared by the lease keeper (which changes it), the ledger writer (which refuses
//! appends as a standby and reloads its state when it becomes the writer) and the store (which
//! proves the epoch inside every group commit). A server on the embedded store is always the
//! writer and never has a role.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Role {
    /// The lease epoch this server holds; 0 = standby.
    epoch: AtomicU64,
    /// The writer's advertised address, as far as a standby knows it.
    writer: Mutex<Option<String>>,
}

impl Role {
    /// A standby that does not know the writer yet.
    pub fn standby() -> Role {
        Role::default()
    }

    /// The epoch of the lease this server holds, if it is the writer.
    pub fn epoch(&self) -> Option<u64> {
        match self.epoch.load(Ordering::SeqCst) {
            0 => None,
            e => Some(e),
        }
    }

    pub fn is_writer(&self) -> bool {
        self.epoch().is_some()
    }

    /// This server now holds the lease of `epoch` (> 0).
    pub fn become_writer(&self, epoch: u64, own_address: &str) {
        assert!(epoch > 0, "lease epochs start at 1");
        *self.writer.lock().expect("role lock") = Some(own_address.to_string());
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// This server no longer writes; `writer` is the current writer's address if known.
    pub fn step_down(&self, writer: Option<String>) {
        self.epoch.store(0, Ordering::SeqCst);
        *self.writer.lock().expect("role lock") = writer;
    }

    /// Records the writer's address (a standby learns it from the lease row).
    pub fn set_writer_address(&self, writer: Option<String>) {
        *self.writer.lock().expect("role lock") = writer;
    }

    /// The writer's address, if known.
    pub fn writer_address(&self) -> Option<String> {
        self.writer.lock().expect("role lock").clone()
    }
}
