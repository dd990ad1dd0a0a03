//! The storage trait's test suite (`storage::suite`) on the PostgreSQL store, exactly as the
//! sled store runs it: each case gets its own database in one throw-away cluster, named after
//! the case's directory, so "reopen" means a new connection to the same database.
mod pg;

celltrail::storage_suite!(
    |dir: &std::path::Path| -> Box<dyn celltrail::storage::Storage> {
        let key = dir
            .file_name()
            .expect("the suite gives each case a directory")
            .to_string_lossy()
            .into_owned();
        let url = pg::PgCluster::shared().db_for(&key);
        Box::new(
            celltrail::pg::PgStore::open(&url, None, &celltrail::pg::PgOptions::default())
                .expect("open the PostgreSQL store"),
        )
    }
);
