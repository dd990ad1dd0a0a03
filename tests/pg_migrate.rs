//! `celltrail migrate` between the sled store and a real PostgreSQL database, both ways, and
//! `celltrail verify --store postgres://…`: the same root under the same signed checkpoint.
mod common;
mod lifecycle;
use common::pg;

use common::TestServer;
use std::path::Path;
use std::process::Command;

fn celltrail(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(args)
        .output()
        .expect("run celltrail");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A stopped data directory holding a full lifecycle (8 keys + 28 events) and 3 more chains.
async fn populated_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.client().await;
    let keys = lifecycle::Keys::new();
    keys.register(&mut c, &srv.admin).await;
    let mut chain = lifecycle::ChainCursor::new("COI-7F3K-2291", common::base_time());
    chain.append(&mut c, lifecycle::happy_path(&keys)).await;
    srv.stop().await;
    dir
}

#[tokio::test]
async fn a_log_moves_to_postgres_and_back_under_the_same_signed_checkpoint() {
    let dir = populated_dir().await;
    let cluster = pg::PgCluster::shared();
    let url = cluster.create_db();
    let vkey = dir.path().join("log.vkey");
    let anchors = dir.path().join("trust-anchors.txt");

    let (ok, out) = celltrail(&["migrate", "--from", path(dir.path()), "--to", &url]);
    assert!(ok, "migrate to PostgreSQL: {out}");
    assert!(out.contains("migrated 36 entries"), "{out}");
    assert!(
        out.contains("equals the root of the same signed checkpoint"),
        "{out}"
    );

    // An auditor checks the database like a data directory.
    let (ok, out) = celltrail(&[
        "verify",
        "--store",
        &url,
        "--log-key",
        path(&vkey),
        "--trust-anchors",
        path(&anchors),
    ]);
    assert!(ok, "verify --store: {out}");

    // Into a target that already holds a log: refused, nothing written.
    let (ok, out) = celltrail(&["migrate", "--from", path(dir.path()), "--to", &url]);
    assert!(!ok && out.contains("already holds a log"), "{out}");

    // And back into a new data directory, which verifies like the original.
    let back = tempfile::tempdir().unwrap();
    let (ok, out) = celltrail(&[
        "migrate",
        "--from",
        &url,
        "--to",
        path(back.path()),
        "--log-key",
        path(&vkey),
    ]);
    assert!(ok, "migrate back: {out}");
    std::fs::copy(&vkey, back.path().join("log.vkey")).unwrap();
    std::fs::copy(&anchors, back.path().join("trust-anchors.txt")).unwrap();
    let v = common::verify_data_dir(back.path());
    assert!(
        v.ok,
        "verify --data-dir of the copy: {}{}",
        v.stdout, v.stderr
    );
    let orig = celltrail::store::Store::open_for_audit(&dir.path().join("db")).unwrap();
    let copy = celltrail::store::Store::open_for_audit(&back.path().join("db")).unwrap();
    use celltrail::storage::Storage;
    assert_eq!(
        orig.checkpoint().unwrap(),
        copy.checkpoint().unwrap(),
        "the same signed note"
    );
    for i in 0..orig.tree_size().unwrap() {
        assert_eq!(
            orig.entry(i).unwrap(),
            copy.entry(i).unwrap(),
            "entry {i}: exact bytes"
        );
    }
    // Heads (with any open hold) and the console's chain summaries came along both ways.
    for id in orig.chain_ids().unwrap() {
        assert_eq!(
            orig.head(&id).unwrap(),
            copy.head(&id).unwrap(),
            "head of {id}"
        );
    }
    let summaries = orig.chain_summaries().unwrap();
    assert!(
        summaries.iter().any(|s| !s.coi_ref.is_empty()),
        "the lifecycle chain has a stored summary: {summaries:?}"
    );
    assert_eq!(summaries, copy.chain_summaries().unwrap());
}

#[tokio::test]
async fn a_tampered_database_fails_verify_and_cannot_be_migrated() {
    let dir = populated_dir().await;
    let cluster = pg::PgCluster::shared();
    let url = cluster.create_db();
    let vkey = dir.path().join("log.vkey");
    let anchors = dir.path().join("trust-anchors.txt");
    let (ok, out) = celltrail(&["migrate", "--from", path(dir.path()), "--to", &url]);
    assert!(ok, "{out}");
    // Someone with database access edits one recorded entry.
    let db = url.rsplit('/').next().unwrap();
    cluster.sql(
        db,
        "UPDATE celltrail.entries SET bytes = overlay(bytes placing '\\xff'::bytea from 12 for 1) WHERE idx = 12",
    );
    let (ok, out) = celltrail(&[
        "verify",
        "--store",
        &url,
        "--log-key",
        path(&vkey),
        "--trust-anchors",
        path(&anchors),
    ]);
    assert!(!ok, "verify must fail on an edited entry: {out}");
    assert!(out.contains("FAILED"), "{out}");
    let back = tempfile::tempdir().unwrap();
    let (ok, out) = celltrail(&[
        "migrate",
        "--from",
        &url,
        "--to",
        path(back.path()),
        "--log-key",
        path(&vkey),
    ]);
    assert!(!ok, "migrating an edited log must fail: {out}");
    assert!(
        out.contains("root") || out.contains("entry 12"),
        "names what is wrong: {out}"
    );
}
