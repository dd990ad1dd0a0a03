//! Bringing a store written by an older celltrail to the current layout, once, on open.

use super::*;

impl Sled {
    /// Brings a store of an older format to this one, once, before anything else uses it:
    /// re-keys `by_hash` by run, packs the leaf hashes into `leaves` blocks, drops the stored
    /// subtrees below `STORED_NODE_MIN_LEVEL` and builds the `bags` index from the entries.
    /// Idempotent if interrupted.
    pub(super) fn upgrade(&self) -> Result<(), StorageError> {
        let format = self.format()?;
        if format == FORMAT {
            if self.meta.get(META_FORMAT)?.is_none() {
                self.meta.insert(META_FORMAT, &FORMAT.to_be_bytes())?;
            }
            return Ok(());
        }
        let started = std::time::Instant::now();
        let size = self.tree_size()?;
        tracing::info!(
            entries = size,
            "upgrading the store from format {format} to {FORMAT} (once)"
        );
        let mut rekeyed = 0u64;
        let mut batch = sled::Batch::default();
        for item in self.by_hash.iter() {
            let (k, v) = item?;
            if k.len() != 32 {
                continue;
            }
            let index = be_u64(&v, "by_hash value")?;
            let hash = EventHash(k.as_ref().try_into().expect("32-byte key"));
            batch.remove(k);
            batch.insert(&hash_key(index, &hash)[..], &index.to_be_bytes());
            rekeyed += 1;
            if rekeyed.is_multiple_of(50_000) {
                self.by_hash.apply_batch(std::mem::take(&mut batch))?;
                tracing::info!(rekeyed, of = size, "upgrading the hash index");
            }
        }
        self.by_hash.apply_batch(batch)?;
        let mut blocks = sled::Batch::default();
        for block in 0..size / LEAF_BLOCK {
            if self.leaves.contains_key(block.to_be_bytes())? {
                continue; // an interrupted upgrade got this far
            }
            let mut hashes = Vec::with_capacity(32 * LEAF_BLOCK as usize);
            for i in block * LEAF_BLOCK..(block + 1) * LEAF_BLOCK {
                let leaf = self.stored_node(0, i)?.ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "format {format} store lacks the leaf hash of entry {i}"
                    ))
                })?;
                hashes.extend_from_slice(&leaf);
            }
            blocks.insert(&block.to_be_bytes(), hashes);
        }
        self.leaves.apply_batch(blocks)?;
        let mut low = sled::Batch::default();
        for item in self.nodes.iter() {
            let (k, _) = item?;
            if k.first()
                .is_some_and(|l| u32::from(*l) < STORED_NODE_MIN_LEVEL)
            {
                low.remove(k);
            }
        }
        self.nodes.apply_batch(low)?;
        for item in self.entries.iter() {
            let (k, v) = item?;
            let index = be_u64(&k, "entries key")?;
            let body = crate::pb::LogEntry::decode(v.as_ref())
                .ok()
                .and_then(|e| crate::pb::EventBody::decode(e.body.as_slice()).ok())
                .ok_or_else(|| StorageError::Corrupt(format!("entry {index} does not decode")))?;
            for din in crate::rules::bags_named(&body) {
                let key = bag_key(din, &body.chain_id);
                if !self.bags.contains_key(&key)? {
                    self.bags.insert(key, &index.to_be_bytes())?;
                }
            }
        }
        self.meta.insert(META_FORMAT, &FORMAT.to_be_bytes())?;
        self.db.flush()?;
        tracing::info!(
            rekeyed,
            secs = started.elapsed().as_secs_f64(),
            "store upgraded to format {FORMAT}"
        );
        Ok(())
    }
}
