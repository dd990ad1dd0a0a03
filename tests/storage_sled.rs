//! The storage trait's suite (`celltrail::storage::suite`) run against the sled backend.

use celltrail::storage::Storage;

celltrail::storage_suite!(|dir: &std::path::Path| -> Box<dyn Storage> {
    Box::new(celltrail::store::Store::open(dir).expect("open the sled store"))
});
