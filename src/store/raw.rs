//! Raw tree access for online backup and restore (`backup`): tree names, scans and inserts of
//! key/value records as sled holds them. Never used on a live ledger's write path.

use super::{Store, StoreError};

/// Names of the trees that only ever gain keys (never change or lose one) once a group
/// committed: a backup may copy them after the cut by filtering on the log index.
pub const APPEND_ONLY_TREES: [&str; 6] = [
    "entries",
    "chain_events",
    "by_hash",
    "nodes",
    "leaves",
    "bags",
];

/// One raw key/value of a tree.
pub type RawRecord = (Vec<u8>, Vec<u8>);

impl Store {
    /// Names of every tree in the store, including sled's default tree.
    pub fn raw_tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    /// Every key/value of tree `name`, in key order.
    pub fn raw_scan(
        &self,
        name: &str,
    ) -> Result<impl Iterator<Item = Result<RawRecord, StoreError>>, StoreError> {
        let tree = self.db.open_tree(name)?;
        Ok(tree.iter().map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::Io)
        }))
    }

    /// Inserts records into tree `name` (restore only: never on a live ledger).
    pub fn raw_insert(&self, name: &str, records: &[RawRecord]) -> Result<(), StoreError> {
        let tree = self.db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            batch.insert(k.as_slice(), v.as_slice());
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// fsyncs everything written so far.
    pub fn raw_flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
