//! A corrupt store never panics and never serves silently (issue 16, point 6). A real data
//! directory is written by a real server, stopped, and its sled files are damaged as a disk or
//! an operator would damage them (truncated, one bit flipped); then the real binary runs on it:
//! `serve` refuses to start and `verify --data-dir` reports FAILED with the location, exit 1 —
//! both without a panic, and both saying to restore from a backup.

mod common;
mod realproc;

use celltrail::pb::{event_body::Detail, Deviation, Enrolled, SignatureMeaning};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A stopped data directory holding a key registry and one chain of `events` events, the later
/// ones large enough (40 KB) that sled keeps some pages in blob files.
async fn written_store(dir: &Path, events: u64) {
    let server = TestServer::start(dir).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.c");
    let qa = signer("qa.c");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &qa, "qa", "HOSP-A").await;
    let mut ev = signed_at_link(
        "CS-1",
        0,
        vec![0; 32],
        celltrail::time::now_nanos(),
        "HOSP-A",
        Detail::Enrolled(Enrolled {
            coi_ref: "COI-1".into(),
            therapy: "CAR-T".into(),
            manufacturing_site: "MFG-1".into(),
        }),
        &[(&nurse, SignatureMeaning::Performed)],
    );
    for seq in 0..events {
        let hash = celltrail::crypto::EventHash::of_body(&ev.body).0.to_vec();
        c.append(ev).await.unwrap();
        ev = signed_at_link(
            "CS-1",
            seq + 1,
            hash,
            celltrail::time::now_nanos(),
            "HOSP-A",
            Detail::Deviation(Deviation {
                deviation_id: format!("D{seq}"),
                description: "z".repeat(if seq % 2 == 1 { 60_000 } else { 500 }),
            }),
            &[(&qa, SignatureMeaning::Performed)],
        );
    }
    server.stop().await;
}

/// What a run of the binary did: exit status (`None`: still running after the limit, then
/// killed) and everything it printed.
struct Ran {
    code: Option<i32>,
    out: String,
}

/// Runs `celltrail ARGS` in `cwd` for at most `limit`.
fn run_for(cwd: &Path, args: &[&str], limit: Duration) -> Ran {
    let mut cmd = realproc::command(cwd);
    cmd.args(args)
        .env("CELLTRAIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + limit;
    let mut code = None;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            code = Some(st.code().unwrap_or(-1));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    Ran {
        code,
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

fn serve(dir: &Path) -> Ran {
    let d = dir.to_str().unwrap();
    run_for(
        dir.parent().unwrap(),
        &["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
        Duration::from_secs(20),
    )
}

fn verify(dir: &Path) -> Ran {
    let d = dir.to_str().unwrap();
    run_for(
        dir.parent().unwrap(),
        &["verify", "--data-dir", d],
        Duration::from_secs(60),
    )
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("db").join("db")
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("db").join("blobs"))
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn truncate_to(path: &Path, percent: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len * percent / 100).unwrap();
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = offset.min(bytes.len() as u64 - 1) as usize;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// `serve` on `dir` exits non-zero without serving, naming the store and saying to restore,
/// without a panic; `verify --data-dir` on `copy` says FAILED with the location, exit 1.
fn assert_refused_and_failed(dir: &Path, copy: &Path, why: &str) {
    let s = serve(dir);
    assert!(
        matches!(s.code, Some(c) if c != 0),
        "{why}: serve must refuse the store (exit {:?}):\n{}",
        s.code,
        s.out
    );
    assert!(!s.out.contains("serving on"), "{why}: served:\n{}", s.out);
    assert!(
        s.out.contains("store corrupt at ") && s.out.contains("restore from backup"),
        "{why}: serve says what is wrong and what to do:\n{}",
        s.out
    );
    assert!(
        !s.out.contains("panicked"),
        "{why}: serve panicked:\n{}",
        s.out
    );
    let v = verify(copy);
    assert_eq!(v.code, Some(1), "{why}: verify exit status:\n{}", v.out);
    assert!(
        v.out.contains("VERDICT: FAILED") && v.out.contains("store corrupt at "),
        "{why}: verify reports FAILED with the location:\n{}",
        v.out
    );
    assert!(
        !v.out.contains("panicked"),
        "{why}: verify panicked:\n{}",
        v.out
    );
}

/// A written store, and two damaged copies of it (one for serve, one for verify).
async fn damaged(root: &Path, damage: impl Fn(&Path)) -> (PathBuf, PathBuf) {
    let template = root.join("template");
    written_store(&template, 40).await;
    let (a, b) = (root.join("serve"), root.join("verify"));
    for d in [&a, &b] {
        common::copy_dir(&template, d);
        damage(d);
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_file_cut_short_is_refused_by_serve_and_failed_by_verify_without_a_panic() {
    // Cut to 90 %: sled recovers quietly to an older state that lost committed groups.
    let root = tempfile::tempdir().unwrap();
    let (s, v) = damaged(root.path(), |d| truncate_to(&db_file(d), 90)).await;
    assert_refused_and_failed(&s, &v, "db cut to 90 %");
    // Cut to half: sled panics while recovering.
    let root = tempfile::tempdir().unwrap();
    let (s, v) = damaged(root.path(), |d| truncate_to(&db_file(d), 50)).await;
    assert_refused_and_failed(&s, &v, "db cut to 50 %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_blob_file_is_refused_by_serve_and_failed_by_verify() {
    let root = tempfile::tempdir().unwrap();
    let (s, v) = damaged(root.path(), |d| {
        let blobs = blob_files(d);
        assert!(
            !blobs.is_empty(),
            "the store keeps large pages in blob files"
        );
        flip_bit(&blobs[blobs.len() / 2], 100);
    })
    .await;
    assert_refused_and_failed(&s, &v, "a bit flipped in a blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_near_the_end_of_db_is_refused_by_serve_and_failed_by_verify() {
    let root = tempfile::tempdir().unwrap();
    let (s, v) = damaged(root.path(), |d| {
        let len = std::fs::metadata(db_file(d)).unwrap().len();
        flip_bit(&db_file(d), len - 200);
    })
    .await;
    assert_refused_and_failed(&s, &v, "a bit flipped near the end of db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_store_whose_last_entries_do_not_match_its_signed_checkpoint() {
    // sled's files are sound, but an entry of the last group was rewritten: the root of the
    // stored tree is no longer the signed one.
    let root = tempfile::tempdir().unwrap();
    let template = root.path().join("template");
    written_store(&template, 5).await;
    let size = 7; // 2 keys, the enrolment, 4 deviations
    common::flip_entry_byte(&template, size - 1);
    let s = serve(&template);
    assert!(
        matches!(s.code, Some(c) if c != 0),
        "{:?}\n{}",
        s.code,
        s.out
    );
    assert!(
        s.out.contains("store corrupt at ")
            && s.out.contains("signed checkpoint")
            && s.out.contains("restore from backup"),
        "{}",
        s.out
    );
    assert!(!s.out.contains("panicked"), "{}", s.out);
    let v = verify(&template);
    assert_eq!(v.code, Some(1), "{}", v.out);
    assert!(v.out.contains("VERDICT: FAILED"), "{}", v.out);
}
