//! `Storage` for `PgStore`: the trait's calls map one to one onto the store's queries.

use super::{PgError, PgStore};
use crate::crypto::EventHash;
use crate::rules::Head;
use crate::storage::{Group, Hash, Storage, StorageError};

impl From<PgError> for StorageError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Corrupt(m) => StorageError::Corrupt(m),
            other => StorageError::Io(other.to_string()),
        }
    }
}

impl Storage for PgStore {
    fn commit(&self, group: &Group) -> Result<(), StorageError> {
        Ok(PgStore::commit(self, group)?)
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn tree_size(&self) -> Result<u64, StorageError> {
        Ok(PgStore::tree_size(self)?)
    }
    fn checkpoint(&self) -> Result<Option<String>, StorageError> {
        Ok(PgStore::checkpoint(self)?)
    }
    fn cut(&self) -> Result<crate::storage::Cut, StorageError> {
        let (tree_size, checkpoint) = PgStore::log_row(self)?;
        Ok(crate::storage::Cut {
            tree_size,
            checkpoint,
        })
    }
    fn head(&self, chain_id: &str) -> Result<Option<Head>, StorageError> {
        Ok(PgStore::head(self, chain_id)?)
    }
    fn chain_ids(&self) -> Result<Vec<String>, StorageError> {
        Ok(PgStore::chain_ids(self)?)
    }
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(PgStore::entry(self, index)?)
    }
    fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        Ok(PgStore::entries_from(self, start, limit)?)
    }
    fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, StorageError> {
        Ok(PgStore::chain_event(self, chain_id, seq)?)
    }
    fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, StorageError> {
        Ok(PgStore::chain_indices(self, chain_id)?)
    }
    fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, StorageError> {
        Ok(PgStore::index_of_hash(self, hash)?)
    }
    fn chains_of_bag(&self, bag: &str) -> Result<Vec<String>, StorageError> {
        Ok(PgStore::chains_of_bag(self, bag)?)
    }
    fn bag_in_chain(&self, bag: &str, chain_id: &str) -> Result<bool, StorageError> {
        Ok(PgStore::bag_in_chain(self, bag, chain_id)?)
    }
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(PgStore::node(self, level, index)?)
    }
    fn recorded_leaf(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(PgStore::node(self, 0, index)?)
    }
    fn chain_summary(
        &self,
        chain_id: &str,
    ) -> Result<Option<crate::summary::ChainSummary>, StorageError> {
        Ok(PgStore::chain_summary(self, chain_id)?)
    }
    fn chain_summaries(&self) -> Result<Vec<crate::summary::ChainSummary>, StorageError> {
        Ok(PgStore::chain_summaries(self)?)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(PgStore::meta(self, key)?)
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(PgStore::size_on_disk(self)?)
    }
}
