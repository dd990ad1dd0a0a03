//! A backup written by an older celltrail (the sled-tree backup format, committed under
//! `tests/fixtures/backup-v1`) still restores into a data directory that verifies offline.

mod common;

use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn backup_in_the_sled_tree_format_still_restores_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // Restore opens the backup's store; work on a copy so the committed fixture never changes.
    let from = dir.path().join("backup");
    common::copy_dir(&fixture("backup-v1"), &from);
    let restored = dir.path().join("restored");
    let audit = celltrail::backup::restore(&from, &restored, &fixture("backup-v1.log.key"))
        .expect("restore the v1 backup");
    assert_eq!(audit.tree_size, 34);
    assert_eq!(audit.chains, 16);
    assert_eq!(
        hex::encode(audit.root),
        "926b41e56810715afbb418426265c3fdefbffc96be55ec9ae00bd36443b63b0c"
    );
    common::assert_data_dir_verifies(&restored, 34);
}

#[test]
fn restore_of_the_v1_backup_refuses_another_log_key() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("backup");
    common::copy_dir(&fixture("backup-v1"), &from);
    let other = dir.path().join("other.key");
    let key = celltrail::note::NoteSigner::generate("celltrail.test/other").unwrap();
    celltrail::keys::write_key_file(&other, &key).unwrap();
    let err = celltrail::backup::restore(&from, &dir.path().join("restored"), &other)
        .expect_err("a different log key must be refused");
    assert!(
        err.to_string()
            .contains("is not the log key of this backup"),
        "{err:#}"
    );
}
