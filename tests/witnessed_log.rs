//! A witnessed log end to end with real processes: `celltrail serve --witness URL=VKEY …`
//! submits its checkpoints to two real `celltrail witness` processes, serves the cosigned
//! checkpoint, exports bundles that carry the cosignatures, and `celltrail verify --witness …
//! --quorum K` decides on them; a log whose witnesses are all down still appends; `celltrail
//! monitor` detects a fork signed with the log's own key.

mod common;
mod realproc;

use celltrail::note::NoteSigner;
use celltrail::pb::GetCheckpointRequest;
use celltrail::witness::cosig::{self, Cosigner, CosignerVerifier};
use realproc::{admin_key, Appender, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_celltrail")
}

/// A running `celltrail witness` process.
struct WitnessProc {
    _proc: Proc,
    url: String,
    vkey: String,
}

impl WitnessProc {
    fn start(dir: &Path, name: &str, log_vkey: &str) -> WitnessProc {
        let p = realproc::Serve::witness()
            .data_dir(dir)
            .args(["--name", name, "--log", log_vkey])
            .env("CELLTRAIL_LOG", "warn")
            .start();
        let vkey = std::fs::read_to_string(dir.join("witness.vkey"))
            .unwrap()
            .trim()
            .to_string();
        WitnessProc {
            url: format!("http://{}", p.addr),
            _proc: p,
            vkey,
        }
    }

    fn spec(&self) -> String {
        format!("{}={}", self.url, self.vkey)
    }
}

/// A log data directory with its key made in advance, so witnesses can be configured with it.
fn new_log_dir(root: &Path, origin: &str) -> (PathBuf, String) {
    let dir = root.join("log");
    std::fs::create_dir_all(&dir).unwrap();
    let key = NoteSigner::generate(origin).unwrap();
    celltrail::keys::write_key_file(&dir.join("log.key"), &key).unwrap();
    let vkey = key.verifier().to_key_string();
    std::fs::write(dir.join("log.vkey"), format!("{vkey}\n")).unwrap();
    (dir, vkey)
}

async fn append_some(p: &Proc, chain: &str, ms: u64) -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut c = p.client().await;
    // `serve` binds its port before it opens the data directory (and writes admin.key).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.data_dir.join("trust-anchors.txt").exists() {
        assert!(Instant::now() < deadline, "no admin key: {}", p.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = admin_key(&p.data_dir);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nurse = NoteSigner::generate(&format!("nurse.{}.{n}", chain.to_lowercase())).unwrap();
    common::register(&mut c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let mut a = Appender::new(chain.into(), nurse);
    a.run(&mut c, Instant::now() + Duration::from_millis(ms))
        .await
}

/// Waits until the log serves a checkpoint cosigned by `n` witnesses at its current size.
async fn wait_cosigned(p: &Proc, keys: &[CosignerVerifier], n: usize) -> (u64, String) {
    let mut c = p.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner();
        if r.cosigned_tree_size == r.tree_size {
            let got = cosig::verify_cosignatures(&r.cosigned_checkpoint, keys).unwrap();
            if got.len() >= n {
                return (r.cosigned_tree_size, r.cosigned_checkpoint);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint cosigned by {n} witnesses: {r:?}\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    run_env(&[], args)
}

fn run_env(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("CELLTRAIL_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(p: &Proc, chain: &str, out: &Path) {
    let (ok, stdout, stderr) = run(&[
        "export",
        "--server",
        &p.addr,
        "--chain",
        chain,
        "--log-vkey",
        p.data_dir.join("log.vkey").to_str().unwrap(),
        "--trust-anchors",
        p.data_dir.join("trust-anchors.txt").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "export failed: {stdout}{stderr}");
}

fn verify(
    bundle: &Path,
    log_vkey: &str,
    witnesses: &[&str],
    quorum: Option<usize>,
) -> (bool, String) {
    let mut args = vec![
        "verify".to_string(),
        bundle.display().to_string(),
        "--log-key".into(),
        log_vkey.into(),
    ];
    for w in witnesses {
        args.push("--witness".into());
        args.push(w.to_string());
    }
    if let Some(k) = quorum {
        args.push("--quorum".into());
        args.push(k.to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = run(&a);
    (ok, format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn log_collects_cosignatures_and_verify_requires_the_quorum() {
    let root = tempfile::tempdir().unwrap();
    let (log_dir, log_vkey) = new_log_dir(root.path(), "hospital.example/log");
    let w1 = WitnessProc::start(
        &root.path().join("w1"),
        "hospital.example/witness",
        &log_vkey,
    );
    let w2 = WitnessProc::start(&root.path().join("w2"), "cro.example/witness", &log_vkey);
    let p = Proc::start(
        &log_dir,
        &["--witness", &w1.spec(), "--witness", &w2.spec()],
    )
    .await;
    let appended = append_some(&p, "BAG-W", 300).await;
    assert!(appended > 0);
    let keys = [
        CosignerVerifier::from_key_string(&w1.vkey).unwrap(),
        CosignerVerifier::from_key_string(&w2.vkey).unwrap(),
    ];
    let (size, note) = wait_cosigned(&p, &keys, 2).await;
    // The cosigned checkpoint is the log's own signed checkpoint plus the two cosignatures.
    celltrail::note::open_note(
        &note,
        &[celltrail::note::NoteVerifier::from_key_string(&log_vkey).unwrap()],
    )
    .unwrap();
    assert!(size >= appended as u64);

    let bundle = root.path().join("bag.json");
    export(&p, "BAG-W", &bundle);
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(
        cosig::verify_cosignatures(b["checkpoint"].as_str().unwrap(), &keys)
            .unwrap()
            .len(),
        2,
        "the bundle's checkpoint carries both cosignatures"
    );

    // Quorum 2 of 2: verified, naming both witnesses.
    let (ok, out) = verify(&bundle, &log_vkey, &[&w1.vkey, &w2.vkey], Some(2));
    assert!(ok, "{out}");
    assert!(out.contains("quorum 2: MET — 2"), "{out}");
    assert!(
        out.contains("hospital.example/witness at ") && out.contains("cro.example/witness at "),
        "{out}"
    );
    // Quorum 1 with one trusted witness: verified.
    let (ok, out) = verify(&bundle, &log_vkey, &[&w2.vkey], Some(1));
    assert!(ok, "{out}");
    // Without --quorum: the report says how many cosignatures it saw.
    let (ok, out) = verify(&bundle, &log_vkey, &[], None);
    assert!(ok, "{out}");
    assert!(
        out.contains("2 cosignature(s) on the checkpoint, not checked"),
        "{out}"
    );

    // A witness the auditor trusts but that did not cosign: quorum 2 of {w1, stranger} fails,
    // and so does quorum 1 of {stranger} (0 of 2 and 0 of 1).
    let stranger =
        Cosigner::from_note_signer(&NoteSigner::generate("regulator.example/witness").unwrap())
            .verifier()
            .to_key_string();
    let (ok, out) = verify(&bundle, &log_vkey, &[&w1.vkey, &stranger], Some(2));
    assert!(!ok, "{out}");
    assert!(
        out.contains("quorum 2: NOT MET — 1") && out.contains("missing: regulator.example/witness"),
        "{out}"
    );
    let (ok, out) = verify(&bundle, &log_vkey, &[&stranger], Some(1));
    assert!(!ok, "{out}");
    assert!(out.contains("NOT MET — 0"), "{out}");

    // A bundle whose cosignature was tampered with fails outright.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cp = v["checkpoint"].as_str().unwrap().to_string();
    let last = cp.trim_end().rsplit('\n').next().unwrap().to_string();
    let b64 = last.rsplit(' ').next().unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    raw[20] ^= 1;
    let forged = last.replace(
        b64,
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw),
    );
    v["checkpoint"] = serde_json::Value::String(cp.replace(&last, &forged));
    let bad = root.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let (ok, out) = verify(&bad, &log_vkey, &[&w1.vkey, &w2.vkey], Some(1));
    assert!(!ok, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    drop(p);
}

#[tokio::test]
async fn a_log_whose_witnesses_are_all_down_still_appends() {
    let root = tempfile::tempdir().unwrap();
    let (log_dir, _) = new_log_dir(root.path(), "lonely.example/log");
    // Two witnesses that do not exist: one refuses connections, one accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let w = |name: &str| {
        Cosigner::from_note_signer(&NoteSigner::generate(name).unwrap())
            .verifier()
            .to_key_string()
    };
    // Port 1: nothing listens there, so connections are refused (no free-port race).
    let refused = format!("http://127.0.0.1:1={}", w("w1"));
    let hanging = format!("http://{}={}", silent.local_addr().unwrap(), w("w2"));
    let p = Proc::start(&log_dir, &["--witness", &refused, "--witness", &hanging]).await;
    let started = Instant::now();
    let n = append_some(&p, "BAG-L", 1500).await;
    assert!(n >= 10, "only {n} appends in 1.5 s with the witnesses down");
    let mut c = p.client().await;
    let r = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.witnesses, 2);
    assert!(r.cosigned_checkpoint.is_empty());
    assert!(r.tree_size > n as u64);
    assert!(started.elapsed() < Duration::from_secs(10));
    // An export does not hang on the missing witnesses forever and still verifies.
    let bundle = root.path().join("b.json");
    export(&p, "BAG-L", &bundle);
    let (ok, out) = verify(
        &bundle,
        &p.data_dir.join("log.vkey").display().to_string(),
        &[],
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("0 cosignature(s)"), "{out}");
}

fn monitor_once(addr: &str, log_vkey: &str, state: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args([
            "monitor",
            "--server",
            addr,
            "--log-key",
            log_vkey,
            "--once",
            "--state",
        ])
        .arg(state)
        .env("CELLTRAIL_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn tree_size(p: &Proc) -> u64 {
    let mut c = p.client().await;
    c.get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .tree_size
}

/// The two signed checkpoints of an alarm's evidence, each opened with the log key.
fn evidence_checkpoints(out: &str, log_vkey: &str) -> (u64, u64) {
    let lk = celltrail::note::NoteVerifier::from_key_string(log_vkey).unwrap();
    let after = out
        .split_once("--- signed checkpoint accepted earlier ---\n")
        .unwrap()
        .1;
    let (first, rest) = after.split_once("\n--- signed checkpoint from ").unwrap();
    let second = rest.split_once(" ---\n").unwrap().1;
    let second = &second[..second.find("celltrail monitor:").unwrap_or(second.len())];
    let size = |n: &str| {
        let n = format!("{}\n", n.trim_end());
        let o = celltrail::note::open_note(&n, std::slice::from_ref(&lk)).unwrap();
        celltrail::note::Checkpoint::parse(&o.text).unwrap().size
    };
    (size(first), size(second))
}

#[tokio::test]
async fn monitor_detects_a_rollback_and_a_fork_signed_with_the_log_key() {
    let root = tempfile::tempdir().unwrap();
    let (log_dir, log_vkey) = new_log_dir(root.path(), "fork.example/log");
    let state = root.path().join("monitor");
    // The honest log: the monitor follows it as it grows.
    let p = Proc::start(&log_dir, &[]).await;
    append_some(&p, "BAG-F", 200).await;
    let (code, out) = monitor_once(&p.addr, &log_vkey, &state);
    assert_eq!(code, Some(0), "{out}");
    drop(p); // SIGKILL

    // The fork: a copy of the data directory (same log key) that will go on differently.
    let fork_dir = root.path().join("fork");
    common::copy_dir(&log_dir, &fork_dir);
    let p = Proc::start(&log_dir, &[]).await;
    append_some(&p, "BAG-G", 200).await;
    let honest_size = tree_size(&p).await;
    let (code, out) = monitor_once(&p.addr, &log_vkey, &state);
    assert_eq!(code, Some(0), "honest growth: {out}");
    assert!(
        out.contains(&format!("size {honest_size} consistent")),
        "{out}"
    );
    let honest = std::fs::read_to_string(state.join("state.json")).unwrap();
    drop(p);

    // Served the stale copy: a smaller tree after a larger one.
    let f = Proc::start(&fork_dir, &[]).await;
    let stale = tree_size(&f).await;
    assert!(stale < honest_size);
    let (code, out) = monitor_once(&f.addr, &log_vkey, &state);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("ALARM: rollback"), "{out}");
    assert_eq!(evidence_checkpoints(&out, &log_vkey), (honest_size, stale));

    // The copy grows past the honest log with other events: a split view.
    while tree_size(&f).await <= honest_size {
        append_some(&f, "BAG-X", 200).await;
    }
    let forked = tree_size(&f).await;
    let (code, out) = monitor_once(&f.addr, &log_vkey, &state);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("ALARM: split view"), "{out}");
    assert_eq!(evidence_checkpoints(&out, &log_vkey), (honest_size, forked));
    // The state still holds the honest checkpoint (an alarm never moves it); evidence is kept.
    assert_eq!(
        std::fs::read_to_string(state.join("state.json")).unwrap(),
        honest
    );
    let evidence = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("evidence-")
        })
        .count();
    assert!(evidence >= 1);
}

/// `celltrail attach-cosigned BUNDLE …` with the given extra arguments.
fn attach(p: &Proc, bundle: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "attach-cosigned",
        bundle.to_str().unwrap(),
        "--server",
        &p.addr,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run(&args);
    (ok, format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn verify_counts_witnesses_that_cosigned_a_later_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let (log_dir, log_vkey) = new_log_dir(root.path(), "later.example/log");
    let w1 = WitnessProc::start(
        &root.path().join("w1"),
        "hospital.example/witness",
        &log_vkey,
    );
    let w2 = WitnessProc::start(&root.path().join("w2"), "cro.example/witness", &log_vkey);
    let keys = [
        CosignerVerifier::from_key_string(&w1.vkey).unwrap(),
        CosignerVerifier::from_key_string(&w2.vkey).unwrap(),
    ];
    let both = [w1.vkey.as_str(), w2.vkey.as_str()];

    // Exported before the log had witnesses: the bundle's checkpoint has no cosignature.
    let p = Proc::start(&log_dir, &[]).await;
    append_some(&p, "BAG-E", 200).await;
    let bundle = root.path().join("bag.json");
    export(&p, "BAG-E", &bundle);
    let exported_size = tree_size(&p).await;
    drop(p);

    // The log gets its witnesses and grows; both cosign a later checkpoint.
    let p = Proc::start(
        &log_dir,
        &["--witness", &w1.spec(), "--witness", &w2.spec()],
    )
    .await;
    append_some(&p, "BAG-F", 200).await;
    let (later_size, _) = wait_cosigned(&p, &keys, 2).await;
    assert!(later_size > exported_size);

    // 0 of 2: the bundle alone.
    let (ok, out) = verify(&bundle, &log_vkey, &both, Some(1));
    assert!(!ok, "{out}");
    assert!(out.contains("quorum 1: NOT MET — 0"), "{out}");

    // 1 of 2: the later checkpoint as witness 1 serves it (cosigned by witness 1 only).
    let one = root.path().join("one.json");
    let (ok, out) = attach(
        &p,
        &bundle,
        &one,
        &["--no-log-checkpoint", "--witness-url", &w1.url],
    );
    assert!(ok, "{out}");
    let (ok, out) = verify(&one, &log_vkey, &both, Some(2));
    assert!(!ok, "{out}");
    assert!(
        out.contains("quorum 2: NOT MET — 1") && out.contains("missing: cro.example/witness"),
        "{out}"
    );
    let (ok, out) = verify(&one, &log_vkey, &both, Some(1));
    assert!(ok, "{out}");
    assert!(
        out.contains("hospital.example/witness at ") && out.contains("(on later size "),
        "{out}"
    );
    // The bundle's own bytes are untouched: only `later_checkpoints` was added.
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let mut after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    after.as_object_mut().unwrap().remove("later_checkpoints");
    assert_eq!(before, after);

    // A later checkpoint with only the log's signature counts no witness: still 0 of 2.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    let note = v["later_checkpoints"][0]["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let (text, sigs) = note.split_once("\n\n").unwrap();
    let log_line = sigs.lines().next().unwrap();
    v["later_checkpoints"][0]["checkpoint"] =
        serde_json::Value::String(format!("{text}\n\n{log_line}\n"));
    let bare = root.path().join("bare.json");
    std::fs::write(&bare, v.to_string()).unwrap();
    let (ok, out) = verify(&bare, &log_vkey, &both, Some(1));
    assert!(!ok, "{out}");
    assert!(out.contains("quorum 1: NOT MET — 0"), "{out}");

    // 2 of 2: the log's own cosigned checkpoint carries both cosignatures.
    let two = root.path().join("two.json");
    let (ok, out) = attach(&p, &bundle, &two, &[]);
    assert!(ok, "{out}");
    let (ok, out) = verify(&two, &log_vkey, &both, Some(2));
    assert!(ok, "{out}");
    assert!(out.contains("quorum 2: MET — 2"), "{out}");

    // A tampered consistency proof fails the bundle, with or without --quorum.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&two).unwrap()).unwrap();
    let h = v["later_checkpoints"][0]["proof"][0].as_str().unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, h).unwrap();
    raw[0] ^= 1;
    v["later_checkpoints"][0]["proof"][0] = serde_json::Value::String(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        raw,
    ));
    let bad = root.path().join("bad-proof.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    for quorum in [None, Some(2)] {
        let ws: &[&str] = if quorum.is_some() { &both } else { &[] };
        let (ok, out) = verify(&bad, &log_vkey, ws, quorum);
        assert!(!ok, "{out}");
        assert!(
            out.contains("does not extend the bundle's checkpoint"),
            "{out}"
        );
    }
}

/// The operator's whole log key rotation with real processes (docs/log-rotation.md): retire
/// the old key, let the witnesses cosign its final checkpoint, link a new key (new origin) to
/// it, move the witnesses to the new key, and go on appending to the same chain. A bundle
/// whose chain spans both keys verifies end to end from either key, with the quorum on both
/// checkpoints; bundles exported before the rotation still verify with the old key.
#[tokio::test]
async fn a_log_key_rotation_links_old_and_new_log_and_verify_follows_the_link() {
    let root = tempfile::tempdir().unwrap();
    let (log_dir, old_vkey) = new_log_dir(root.path(), "mfr.example/log-2026");
    let (w1_dir, w2_dir) = (root.path().join("w1"), root.path().join("w2"));
    let w1 = WitnessProc::start(&w1_dir, "hospital.example/witness", &old_vkey);
    let w2 = WitnessProc::start(&w2_dir, "cro.example/witness", &old_vkey);
    let keys = [
        CosignerVerifier::from_key_string(&w1.vkey).unwrap(),
        CosignerVerifier::from_key_string(&w2.vkey).unwrap(),
    ];
    let (w1_vkey, w2_vkey) = (w1.vkey.clone(), w2.vkey.clone());
    let both = [w1_vkey.as_str(), w2_vkey.as_str()];
    let specs = |a: &WitnessProc, b: &WitnessProc| {
        vec![
            "--witness".to_string(),
            a.spec(),
            "--witness".to_string(),
            b.spec(),
        ]
    };
    let dir = log_dir.to_str().unwrap().to_string();

    // Years of the old log: a bag's first events.
    let s = specs(&w1, &w2);
    let p = Proc::start(&log_dir, &s.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let first = append_some(&p, "BAG-LONG", 300).await;
    assert!(first >= 2);
    // A checkpoint of the old key that will not be its last.
    let early_note = p
        .client()
        .await
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoint;
    assert!(append_some(&p, "BAG-OTHER", 100).await >= 1);
    wait_cosigned(&p, &keys, 2).await;
    let old_bundle = root.path().join("old.json");
    export(&p, "BAG-LONG", &old_bundle);
    // A monitor follows the old log.
    let mstate = root.path().join("monitor");
    let (code, out) = monitor_once(&p.addr, &old_vkey, &mstate);
    assert_eq!(code, Some(0), "{out}");
    drop(p);

    // 1. Retire: the restarted log appends nothing, and its witnesses cosign the final checkpoint.
    let (ok, out, err) = run(&["log", "retire", "--data-dir", &dir]);
    assert!(ok, "{out}{err}");
    let p = Proc::start(&log_dir, &s.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let size_before = tree_size(&p).await;
    let mut c = p.client().await;
    let late = NoteSigner::generate("nurse.late").unwrap();
    let err = common::admin_event(
        &mut c,
        &admin_key(&log_dir),
        celltrail::pb::event_body::Detail::KeyRegistered(celltrail::pb::KeyRegistered {
            key_id: late.name.clone(),
            public_key: late.verifier().key.as_bytes().to_vec(),
            printed_name: "Late".into(),
            role: "apheresis_nurse".into(),
            site: "HOSP-A".into(),
            valid_from_unix_nanos: 1,
            valid_until_unix_nanos: 0,
        }),
    )
    .await
    .expect_err("a retired log appended");
    assert!(
        err.to_string().contains("Unavailable") && err.to_string().contains("is retired"),
        "{err}"
    );
    assert_eq!(tree_size(&p).await, size_before);
    let final_note = root.path().join("final.note");
    let (ok, out, err) = run(&[
        "log",
        "final",
        "--server",
        &p.addr,
        "--log-key",
        &old_vkey,
        "--witness",
        &w1_vkey,
        "--witness",
        &w2_vkey,
        "--out",
        final_note.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        cosig::verify_cosignatures(&std::fs::read_to_string(&final_note).unwrap(), &keys)
            .unwrap()
            .len(),
        2
    );
    drop(p);

    // A scheduled rotation refuses a final checkpoint older than the log's latest, and writes
    // nothing (no new key) when it refuses.
    let early = root.path().join("early.note");
    std::fs::write(&early, &early_note).unwrap();
    let (ok, out, err) = run(&[
        "log",
        "rotate",
        "--data-dir",
        &dir,
        "--final",
        early.to_str().unwrap(),
        "--new-origin",
        "mfr.example/log-2036",
    ]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("retire the log"), "{err}");
    assert!(!log_dir.join("log.key.next").exists());

    // 2. Rotate: new key and origin, linked to the cosigned final checkpoint.
    // The admin key `serve` wrote, and the new log key, are encrypted under the harness's
    // passphrase: rotate opens and writes them with it, as automation would.
    let pass = realproc::server_passphrase_file(&log_dir);
    let (ok, out, err) = run_env(
        &[("CELLTRAIL_PASSPHRASE_FILE", pass.to_str().unwrap())],
        &[
            "log",
            "rotate",
            "--data-dir",
            &dir,
            "--final",
            final_note.to_str().unwrap(),
            "--new-origin",
            "mfr.example/log-2036",
            "--witness",
            &w1_vkey,
            "--witness",
            &w2_vkey,
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("linked: entry {size_before}")),
        "{out}"
    );
    let new_vkey = std::fs::read_to_string(log_dir.join("log.vkey"))
        .unwrap()
        .trim()
        .to_string();
    assert!(new_vkey.starts_with("mfr.example/log-2036+"), "{new_vkey}");
    assert!(log_dir
        .join("retired-keys/mfr.example_log-2026.key")
        .exists());

    // 3. The witnesses follow the new key only (the old log is closed at the witnesses).
    drop((w1, w2));
    let w1 = WitnessProc::start(&w1_dir, "hospital.example/witness", &new_vkey);
    let w2 = WitnessProc::start(&w2_dir, "cro.example/witness", &new_vkey);
    let s = specs(&w1, &w2);
    let p = Proc::start(&log_dir, &s.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // The same bag goes on under the new key.
    let more = append_some(&p, "BAG-LONG", 300).await;
    assert!(more >= 1);
    wait_cosigned(&p, &keys, 2).await;
    let spanning = root.path().join("spanning.json");
    export(&p, "BAG-LONG", &spanning);
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spanning).unwrap()).unwrap();
    let indices: Vec<u64> = b["chains"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert!(
        indices.iter().any(|&i| i < size_before) && indices.iter().any(|&i| i > size_before),
        "the chain spans both keys: {indices:?}"
    );

    // The monitor pinned to the old key follows the link and goes on under the new origin.
    let (code, out) = monitor_once(&p.addr, &old_vkey, &mstate);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: mfr.example/log-2036 size"), "{out}");

    // An auditor who kept a checkpoint of the old key proves it is a prefix of the new log.
    let early_size =
        celltrail::note::Checkpoint::parse(celltrail::log::note_text(&early_note).unwrap())
            .unwrap()
            .size;
    let since = root.path().join("since.json");
    let (ok, out, err) = run(&[
        "export",
        "--server",
        &p.addr,
        "--chain",
        "BAG-LONG",
        "--log-vkey",
        log_dir.join("log.vkey").to_str().unwrap(),
        "--trust-anchors",
        log_dir.join("trust-anchors.txt").to_str().unwrap(),
        "--since-size",
        &early_size.to_string(),
        "--out",
        since.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&[
        "verify",
        since.to_str().unwrap(),
        "--log-key",
        &new_vkey,
        "--previous",
        early.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "previous:   checkpoint of size {early_size} is a prefix"
        )),
        "{out}"
    );

    // Verified from the new key (links followed back) and from the old key (followed forward),
    // with the quorum on the new checkpoint and on the old key's final checkpoint.
    for pinned in [&new_vkey, &old_vkey] {
        let (ok, out) = verify(&spanning, pinned, &both, Some(2));
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!(
                "log link:   entry {size_before} retired mfr.example/log-2026 (scheduled) at its final checkpoint of size {size_before}"
            )),
            "{out}"
        );
        assert!(
            out.contains("final checkpoint witnesses: quorum 2: MET — 2"),
            "{out}"
        );
    }
    let (_, out) = verify(&spanning, &old_vkey, &both, Some(2));
    assert!(out.contains("followed 1 log link(s) forward"), "{out}");
    // A bundle from before the rotation still verifies with the old key.
    let (ok, out) = verify(&old_bundle, &old_vkey, &both, Some(2));
    assert!(ok, "{out}");
    // A key the links do not lead to is refused.
    let stranger = NoteSigner::generate("mfr.example/log-2026")
        .unwrap()
        .verifier()
        .to_key_string();
    let (ok, out) = verify(&spanning, &stranger, &[], None);
    assert!(!ok, "{out}");
    assert!(out.contains("is none of them"), "{out}");

    // A tampered proof from the final checkpoint to the new checkpoint fails the bundle.
    let mut v = b.clone();
    let cons = v["consistency"].as_array_mut().unwrap();
    let c = cons
        .iter_mut()
        .find(|c| c["old_size"].as_u64() == Some(size_before))
        .expect("the export proves the final checkpoint is a prefix");
    let h = c["proof"][0].as_str().unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, h).unwrap();
    raw[0] ^= 1;
    c["proof"][0] = serde_json::Value::String(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        raw,
    ));
    let bad = root.path().join("bad-link-proof.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let (ok, out) = verify(&bad, &new_vkey, &[], None);
    assert!(!ok, "{out}");
    assert!(out.contains("is not a prefix of this log"), "{out}");
    // Without its links, the old key cannot reach the new checkpoint.
    let mut v = b.clone();
    v.as_object_mut().unwrap().remove("log_links");
    let cut = root.path().join("no-links.json");
    std::fs::write(&cut, v.to_string()).unwrap();
    let (ok, out) = verify(&cut, &old_vkey, &[], None);
    assert!(!ok, "{out}");
    drop(p);

    // A copied data directory audits across the rotation too, from either key.
    let copy = root.path().join("copy");
    common::copy_dir(&log_dir, &copy);
    for pinned in [&new_vkey, &old_vkey] {
        let (ok, stdout, stderr) = run(&[
            "verify",
            "--data-dir",
            copy.to_str().unwrap(),
            "--log-key",
            pinned,
        ]);
        assert!(ok, "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("log link:   entry {size_before} retired")),
            "{stdout}"
        );
    }
}
