//! A backup written by an older celltrail (the sled-tree backup format, committed under
//! `tests/fixtures/backup-v1`) still restores into a data directory that verifies offline.

mod common;

use celltrail::datadir::DataDir;
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

/// The restored v1 backup served again, backed up in today's logical format (entries, heads,
/// checkpoint; no store files), restores to the same log; a backup whose heads or entries were
/// altered does not restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_backup_of_the_restored_log_restores_and_refuses_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("backup-v1");
    common::copy_dir(&fixture("backup-v1"), &from);
    let live = dir.path().join("live");
    let key = fixture("backup-v1.log.key");
    let v1 = celltrail::backup::restore(&from, &live, &key).unwrap();

    // The fixture's admin key is not committed: a second operator admin key joins the trust
    // anchors so that it can sign the backup request (Admin/Backup is authenticated).
    let admin = common::signer("admin.backup");
    let anchors = DataDir::new(&live).trust_anchors();
    let mut text = std::fs::read_to_string(&anchors).unwrap();
    text.push_str(&format!("{}\n", admin.verifier().to_key_string()));
    std::fs::write(&anchors, text).unwrap();
    let server = common::TestServer::builder(&live)
        .admin(admin)
        .start()
        .await;
    let logical = dir.path().join("logical");
    let (manifest, audit) =
        celltrail::backup::backup_to(&server.addr.to_string(), &logical, &server.admin)
            .await
            .expect("logical backup");
    server.stop().await;
    assert_eq!(manifest.format, celltrail::backup::LOGICAL_FORMAT);
    assert_eq!(audit, v1, "the same log: size, chains and root");
    let layout = DataDir::new(&logical);
    assert!(layout.backup_entries().exists() && layout.backup_heads().exists());
    assert!(
        !layout.db().exists(),
        "a logical backup holds no store files"
    );

    let again = celltrail::backup::restore(&logical, &dir.path().join("again"), &key).unwrap();
    assert_eq!(again, v1);
    common::assert_data_dir_verifies(&dir.path().join("again"), 34);

    // A head that does not name its chain's last entry.
    let bad_heads = dir.path().join("bad-heads");
    common::copy_dir(&logical, &bad_heads);
    let heads = std::fs::read_to_string(DataDir::new(&bad_heads).backup_heads()).unwrap();
    let heads = heads.replacen("\"seq\": 3", "\"seq\": 2", 1);
    std::fs::write(DataDir::new(&bad_heads).backup_heads(), heads).unwrap();
    let err = celltrail::backup::restore(&bad_heads, &dir.path().join("r1"), &key).unwrap_err();
    assert!(
        format!("{err:#}").contains("does not match its last entry"),
        "{err:#}"
    );

    // One byte of the last entry's signature changed: the entry still decodes and links, but
    // the root no longer matches the signed checkpoint.
    let bad_entry = dir.path().join("bad-entry");
    common::copy_dir(&logical, &bad_entry);
    let path = DataDir::new(&bad_entry).backup_entries();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = celltrail::backup::restore(&bad_entry, &dir.path().join("r2"), &key).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("differs from the checkpoint root"), "{msg}");
}
