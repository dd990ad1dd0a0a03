//! Audit bundles and offline verification end to end. One fixture (built once per test run):
//! a real server on 127.0.0.1:0 over a real sled directory records the key registry and a full
//! CAR-T lifecycle; an auditor keeps a checkpoint midway; the bundle is exported with the
//! `celltrail` binary over gRPC; the server is stopped and the data directory copied. A second
//! server started on a copy taken before the kept checkpoint rewrites history. Every test then
//! runs `celltrail verify` (no server) on the honest material or on a tampered copy and checks
//! the exit code and the precise reason, naming the entry.

mod common;
mod lifecycle;

use celltrail::bundle::{b64, unb64, Bundle};
use celltrail::crypto::EventHash;
use celltrail::note::{sign_note, NoteSigner};
use celltrail::pb::{event_body::Detail, EventBody, KeyRevoked, LogEntry, SignatureMeaning};
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys, APH};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_celltrail");

struct Fixture {
    root: PathBuf,
    /// The honest server's data directory (server stopped).
    data: PathBuf,
    /// Bundle of BAG-1 exported over gRPC with a consistency proof from the kept size.
    bundle: PathBuf,
    /// The checkpoint the auditor kept midway (a signed note file).
    kept: PathBuf,
    kept_size: u64,
    /// Data directory of a server that rewrote history before the kept checkpoint.
    forked: PathBuf,
    /// Its bundle, with a consistency proof from the kept size.
    forked_bundle: PathBuf,
    /// Key revoked during the run (registered as an apheresis nurse at APH).
    revoked: NoteSigner,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(build_fixture())
        })
        .join()
        .expect("fixture")
    })
}

async fn export_over_grpc(server: &TestServer, data: &Path, args: &[&str], out: &Path) {
    let mut cmd = Command::new(BIN);
    cmd.arg("export")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--log-vkey")
        .arg(data.join("log.vkey"))
        .arg("--trust-anchors")
        .arg(data.join("trust-anchors.txt"))
        .arg("--out")
        .arg(out)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "export: {}", stderr(&out));
}

async fn build_fixture() -> Fixture {
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tamper-{}", std::process::id()));
    // Fixtures of earlier runs (one directory per test process) are removed here.
    if let Ok(dirs) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) {
        for d in dirs.flatten() {
            if d.file_name().to_string_lossy().starts_with("tamper-") {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("data");
    let keys = Keys::new();
    let revoked = signer("aph.nurse.rev");
    let steps = happy_path(&keys);
    let mut cur = ChainCursor::new("BAG-1", base_time());
    let mut steps = steps.into_iter();

    // 1. Keys and the first five events; then a copy that will later rewrite history.
    let server = TestServer::start(&data).await;
    let mut c = server.client().await;
    keys.register(&mut c, &server.admin).await;
    register(&mut c, &server.admin, &revoked, "apheresis_nurse", APH).await;
    admin_event(
        &mut c,
        &server.admin,
        Detail::KeyRevoked(KeyRevoked {
            key_id: revoked.name.clone(),
            revoked_at_unix_nanos: celltrail::time::now_nanos(),
            reason: "badge lost".into(),
        }),
    )
    .await
    .unwrap();
    cur.append(&mut c, steps.by_ref().take(5).collect()).await;
    server.stop().await;
    let forked = root.join("forked");
    copy_dir(&data, &forked);

    // 2. The honest log goes on; the auditor keeps the checkpoint after 12 events.
    let server = TestServer::start(&data).await;
    let mut c = server.client().await;
    let receipts = cur.append(&mut c, steps.by_ref().take(7).collect()).await;
    let kept_note = receipts.last().unwrap().checkpoint.clone();
    let kept_size = receipts.last().unwrap().tree_size;
    let kept = root.join("kept-checkpoint.txt");
    std::fs::write(&kept, &kept_note).unwrap();
    cur.append(&mut c, steps.collect()).await;
    let bundle = root.join("bundle.json");
    export_over_grpc(
        &server,
        &data,
        &["--chain", "BAG-1", "--since-size", &kept_size.to_string()],
        &bundle,
    )
    .await;
    server.stop().await;

    // 3. The fork: same log key, different history from size 15 on.
    let server = TestServer::start(&forked).await;
    let mut c = server.client().await;
    let mut other = ChainCursor::with_own_bags("BAG-2", base_time());
    other
        .append(&mut c, happy_path(&keys).into_iter().take(12).collect())
        .await;
    let forked_bundle = root.join("forked-bundle.json");
    export_over_grpc(
        &server,
        &forked,
        &["--all", "--since-size", &kept_size.to_string()],
        &forked_bundle,
    )
    .await;
    server.stop().await;

    Fixture {
        root,
        data,
        bundle,
        kept,
        kept_size,
        forked,
        forked_bundle,
        revoked,
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn verify(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("verify")
        .args(args)
        .output()
        .expect("run celltrail verify")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts verification failed (exit 1) and the verdict contains every fragment.
fn assert_fails(o: &Output, fragments: &[&str]) -> String {
    let out = stdout(o);
    let verdict = out
        .lines()
        .find(|l| l.starts_with("VERDICT"))
        .unwrap_or_else(|| panic!("no verdict in output:\n{out}\n{}", stderr(o)))
        .to_string();
    assert_eq!(o.status.code(), Some(1), "exit code; {verdict}");
    assert!(verdict.starts_with("VERDICT: FAILED"), "{verdict}");
    for f in fragments {
        assert!(
            verdict.contains(f),
            "verdict {verdict:?} should contain {f:?}"
        );
    }
    assert!(stderr(o).contains("verification FAILED"), "{}", stderr(o));
    verdict
}

fn load(path: &Path) -> Bundle {
    Bundle::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Writes a tampered copy of the honest bundle and returns its path.
fn tampered(name: &str, f: impl FnOnce(&mut Bundle)) -> PathBuf {
    let fx = fixture();
    let mut b = load(&fx.bundle);
    f(&mut b);
    let path = fx.root.join(format!("{name}.json"));
    std::fs::write(&path, b.to_json()).unwrap();
    path
}

fn entry_of(b: &Bundle, seq: usize) -> (u64, LogEntry) {
    let e = &b.chains[0].entries[seq];
    (
        e.index,
        LogEntry::decode(unb64(&e.entry).unwrap().as_slice()).unwrap(),
    )
}

fn set_entry(b: &mut Bundle, seq: usize, entry: &LogEntry) {
    b.chains[0].entries[seq].entry = b64(&entry.encode_to_vec());
}

fn log_vkey() -> String {
    p(&fixture().data.join("log.vkey")).to_string()
}

// ---- the honest case ------------------------------------------------------------------------

#[test]
fn full_lifecycle_bundle_verifies_offline_with_timeline_and_pinned_log_key() {
    let fx = fixture();
    let o = verify(&[p(&fx.bundle), "--log-key", &log_vkey()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("from --log-key"), "{out}");
    assert!(
        out.contains("VERDICT: VERIFIED — 38 entries (10 key registry, 1 chains)"),
        "{out}"
    );
    assert!(out.contains("38 inclusion proofs"), "{out}");
    // The timeline: UTC time, site, event; under each event its signatures as Part 11 §11.50
    // wants them shown: printed name, role, site, meaning, UTC and local time.
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("bedside_check"))
        .expect("bedside row");
    assert!(lines[at].contains("CLINIC-0001"), "{}", lines[at]);
    let sigs = lines[at + 1..at + 3].join("\n");
    assert!(
        sigs.contains("signed by nurse.ada (test) (nurse.ada; nurse at CLINIC-0001) PERFORMED (did the step) 20"),
        "{sigs}"
    );
    assert!(
        sigs.contains("signed by nurse.ben (test) (nurse.ben; nurse at CLINIC-0001) VERIFIED (second person checked it) 20"),
        "{sigs}"
    );
    assert!(
        sigs.contains(" UTC (") && sigs.contains(" local, UTC"),
        "{sigs}"
    );
    assert!(out.contains("infused"), "{out}");
    assert!(out.contains("Infused"), "final state: {out}");
    assert!(out
        .lines()
        .any(|l| l.contains("signed by courier.kim (test)") && l.contains("RECEIVED")));
    assert!(out.contains("Z "), "UTC times: {out}");
}

#[test]
fn without_a_pinned_key_the_report_says_it_trusted_the_bundle_anchor() {
    let o = verify(&[p(&fixture().bundle)]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("the bundle's own anchor"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn json_report_lists_the_timeline_and_verdict() {
    let o = verify(&[p(&fixture().bundle), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["failure"], serde_json::Value::Null);
    let rows = v["timeline"].as_array().unwrap();
    assert_eq!(rows.len(), 28);
    assert_eq!(rows[0]["event"], "enrolled");
    assert_eq!(rows[23]["event"], "lymphodepletion_started");
    assert_eq!(rows[27]["state"], "Infused");
    assert_eq!(rows[26]["signers"][1]["meaning"], "verified");
    assert_eq!(v["checkpoint"]["size"], 38);
}

#[test]
fn kept_checkpoint_is_consistent_with_the_honest_log() {
    let fx = fixture();
    let o = verify(&[
        p(&fx.bundle),
        "--log-key",
        &log_vkey(),
        "--previous",
        p(&fx.kept),
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("checkpoint of size {} is a prefix", fx.kept_size)));
}

#[test]
fn offline_export_of_all_chains_from_stopped_data_dir_verifies() {
    let fx = fixture();
    let copy = fx.root.join("export-copy");
    copy_dir(&fx.data, &copy);
    let out = fx.root.join("offline-all.json");
    let o = Command::new(BIN)
        .args(["export", "--all", "--data-dir", p(&copy), "--out", p(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let b = load(&out);
    assert_eq!(
        b,
        Bundle {
            exported_at: b.exported_at.clone(),
            ..load(&fx.bundle)
        }
        .without_consistency()
    );
    let o = verify(&[p(&out), "--log-key", &log_vkey()]);
    assert!(o.status.success(), "{}", stdout(&o));
}

trait WithoutConsistency {
    fn without_consistency(self) -> Self;
}
impl WithoutConsistency for Bundle {
    fn without_consistency(mut self) -> Self {
        self.consistency.clear();
        self
    }
}

#[test]
fn copied_data_dir_audit_passes() {
    let fx = fixture();
    let copy = fx.root.join("audit-honest");
    copy_dir(&fx.data, &copy);
    let o = verify(&["--data-dir", p(&copy), "--previous", p(&fx.kept)]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Merkle root recomputed from every entry"),
        "{out}"
    );
    assert!(out.contains("VERIFIED — 38 entries"), "{out}");
}

// ---- tampered bundles -----------------------------------------------------------------------

#[test]
fn detects_one_byte_flipped_in_an_entry_body() {
    let path = tampered("body-flip", |b| {
        let (_, mut e) = entry_of(b, 7);
        let at = e.body.windows(8).position(|w| w == b"MFG-0001").unwrap();
        e.body[at + 7] ^= 0x01; // "MFG-0001" -> "MFG-0000"
        set_entry(b, 7, &e);
    });
    let index = load(&fixture().bundle).chains[0].entries[7].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 7)"),
            "signature by mfg.op.moe does not verify",
        ],
    );
}

#[test]
fn detects_one_byte_flipped_in_a_signature() {
    let path = tampered("sig-flip", |b| {
        let (_, mut e) = entry_of(b, 3);
        e.signatures[1].signature[10] ^= 0x80;
        set_entry(b, 3, &e);
    });
    let index = load(&fixture().bundle).chains[0].entries[3].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 3)"),
            "signature by courier.kim does not verify (strict ed25519)",
        ],
    );
}

#[test]
fn detects_one_byte_flipped_in_a_proof_node() {
    let path = tampered("proof-flip", |b| {
        let e = &mut b.chains[0].entries[20];
        let mut h = unb64(&e.proof[1]).unwrap();
        h[0] ^= 1;
        e.proof[1] = b64(&h);
    });
    let index = load(&fixture().bundle).chains[0].entries[20].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 20)"),
            "inclusion proof against the checkpoint (size 38) fails",
        ],
    );
}

#[test]
fn detects_one_byte_flipped_in_the_checkpoint() {
    let path = tampered("cp-flip", |b| {
        let mut bytes = b.checkpoint.clone().into_bytes();
        let root_line = bytes.iter().position(|&c| c == b'\n').unwrap() + 4; // inside the size/root
        bytes[root_line + 2] ^= 0x01;
        b.checkpoint = String::from_utf8(bytes).unwrap();
    });
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &["checkpoint: signature does not verify with log key"],
    );
}

#[test]
fn detects_an_entry_removed() {
    let bundle = load(&fixture().bundle);
    let path = tampered("removed", |b| {
        b.chains[0].entries.remove(9);
    });
    let index = bundle.chains[0].entries[10].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 10)"),
            "chain link broken",
            "seq 10 would leave a gap",
        ],
    );
}

/// A bundle whose last events were cut off is otherwise perfect (links, signatures, proofs and
/// policy all hold for a prefix); the log's signed chain head is what catches it.
#[test]
fn detects_the_last_events_of_a_chain_cut_off_by_the_signed_chain_head() {
    let fx = fixture();
    let o = verify(&[p(&fx.bundle), "--log-key", &log_vkey()]);
    assert!(
        stdout(&o).contains("chain BAG-1: complete — the log signed that no event of it follows"),
        "{}",
        stdout(&o)
    );
    let bundle = load(&fx.bundle);
    let n = bundle.chains[0].entries.len();
    let path = tampered("tail-cut", |b| b.chains[0].entries.truncate(n - 2));
    let last = bundle.chains[0].entries[n - 3].index;
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &[
            &format!("entry {last} (chain BAG-1)"),
            &format!("the log signed that chain BAG-1 has {n} events"),
            &format!("but the bundle holds {}", n - 2),
            "events are missing from the bundle",
        ],
    );
}

/// Without a head statement (an older exporter, or one stripped) the bundle still verifies, but
/// the report says the chain's end is not proven; a statement with a flipped byte or from
/// another chain fails.
#[test]
fn chain_head_statement_missing_is_reported_and_a_forged_one_fails() {
    let fx = fixture();
    let path = tampered("head-stripped", |b| b.chains[0].head = None);
    let o = verify(&[p(&path), "--log-key", &log_vkey()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("chain BAG-1: END NOT PROVEN"),
        "{}",
        stdout(&o)
    );
    let o = verify(&[p(&path), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chain_ends_unproven"][0], "BAG-1");

    let path = tampered("head-flipped", |b| {
        let h = b.chains[0].head.take().unwrap();
        b.chains[0].head =
            Some(h.replacen("celltrail chain head v1\n", "celltrail chain head v1\n ", 1));
    });
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &["chain head statement: signature does not verify with log key"],
    );
    // Genuine statements signed by the real log key, but about an earlier tree or another
    // chain, do not vouch for this bundle.
    let log_key = celltrail::keys::read_key_file(&fx.data.join("log.key")).unwrap();
    let stmt = |b: &Bundle| {
        celltrail::note::ChainHeadStatement::parse(
            celltrail::log::note_text(b.chains[0].head.as_ref().unwrap()).unwrap(),
        )
        .unwrap()
    };
    let sign = |st: celltrail::note::ChainHeadStatement| {
        celltrail::note::sign_note(&st.to_text(), &[&log_key]).unwrap()
    };
    let path = tampered("head-other-size", |b| {
        let st = stmt(b);
        b.chains[0].head = Some(sign(celltrail::note::ChainHeadStatement {
            tree_size: st.tree_size - 1,
            ..st
        }));
    });
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &[
            "chain head statement is about chain \"BAG-1\"",
            "not chain \"BAG-1\"",
        ],
    );
    let path = tampered("head-other-chain", |b| {
        let st = stmt(b);
        b.chains[0].head = Some(sign(celltrail::note::ChainHeadStatement {
            chain_id: "BAG-2".into(),
            ..st
        }));
    });
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &["chain head statement is about chain \"BAG-2\""],
    );
}

#[test]
fn detects_a_chain_listed_twice() {
    let path = tampered("chain-twice", |b| b.chains.push(b.chains[0].clone()));
    assert_fails(
        &verify(&[p(&path)]),
        &["chain BAG-1 is listed twice in the bundle"],
    );
}

#[test]
fn consistency_proof_longer_than_any_tree_needs_is_refused_before_decoding() {
    let path = tampered("consistency-huge", |b| {
        b.consistency.push(celltrail::bundle::ConsistencyProof {
            old_size: 1,
            proof: vec!["AAAA".into(); 100_000],
        })
    });
    assert_fails(
        &verify(&[p(&path)]),
        &["consistency proof from size 1 has 100000 hashes; no tree of up to 2^64 entries needs more than 128"],
    );
}

/// The registry's last event is the revocation of a key: a bundle that leaves it out would
/// show the key as valid. The signed head of the `keys` chain catches it.
#[test]
fn detects_a_late_revocation_left_out_of_the_registry() {
    let bundle = load(&fixture().bundle);
    let n = bundle.registry.len();
    let (_, last) = {
        let e = &bundle.registry[n - 1];
        (e.index, celltrail::bundle::unb64(&e.entry).unwrap())
    };
    let body = EventBody::decode(LogEntry::decode(last.as_slice()).unwrap().body.as_slice());
    assert!(
        matches!(body.unwrap().detail, Some(Detail::KeyRevoked(_))),
        "the fixture's last key event is the revocation"
    );
    let o = verify(&[p(&fixture().bundle), "--log-key", &log_vkey()]);
    assert!(
        stdout(&o).contains("chain keys: complete"),
        "{}",
        stdout(&o)
    );
    let path = tampered("revocation-left-out", |b| {
        b.registry.pop();
    });
    assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &[
            &format!("the log signed that chain keys has {n} events"),
            &format!("but the bundle holds {}", n - 1),
        ],
    );
}

#[test]
fn detects_an_entry_duplicated() {
    let bundle = load(&fixture().bundle);
    let path = tampered("duplicated", |b| {
        let e = b.chains[0].entries[14].clone();
        b.chains[0].entries.insert(15, e);
    });
    let index = bundle.chains[0].entries[14].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 14)"),
            "seq 14 of chain BAG-1 is already taken",
        ],
    );
}

#[test]
fn detects_entries_reordered() {
    let bundle = load(&fixture().bundle);
    let path = tampered("reordered", |b| b.chains[0].entries.swap(5, 6));
    let index = bundle.chains[0].entries[6].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 6)"),
            "would leave a gap",
        ],
    );
}

/// Rewrites entry `seq` as if `who` performed it, signed at `signed_at`.
fn resign(b: &mut Bundle, seq: usize, who: &NoteSigner, signed_at: i64) {
    let (_, mut e) = entry_of(b, seq);
    let mut body = EventBody::decode(e.body.as_slice()).unwrap();
    body.actor_key_id = who.name.clone();
    e.body = body.encode_to_vec();
    let hash = EventHash::of_body(&e.body);
    e.signatures = vec![celltrail::crypto::sign_event(
        &who.key,
        &who.name,
        &hash,
        SignatureMeaning::Performed,
        signed_at,
    )];
    set_entry(b, seq, &e);
}

#[test]
fn detects_entry_resigned_by_an_unregistered_key() {
    let intruder = signer("aph.nurse.eve");
    let bundle = load(&fixture().bundle);
    let path = tampered("unregistered", |b| {
        let (_, e) = entry_of(b, 2);
        resign(b, 2, &intruder, e.signatures[0].signed_at_unix_nanos);
    });
    let index = bundle.chains[0].entries[2].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 2)"),
            "key aph.nurse.eve is not registered",
        ],
    );
}

/// An operator admin key signing on a bag's chain: `verify` names it as the server does
/// (issue 13 point 8), not as a key that is not registered.
#[test]
fn detects_entry_resigned_by_an_operator_admin_key_and_says_so() {
    let fx = fixture();
    let admin = celltrail::keys::read_key_file_with(
        &fx.data.join("admin.key"),
        &celltrail::keys::PassphraseSource::Given(celltrail::keys::Passphrase::new("")),
    )
    .expect("the fixture's admin key");
    let bundle = load(&fx.bundle);
    let path = tampered("admin-signed", |b| {
        let (_, e) = entry_of(b, 2);
        resign(b, 2, &admin, e.signatures[0].signed_at_unix_nanos);
    });
    let index = bundle.chains[0].entries[2].index;
    let out = assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 2)"),
            &format!("key {} is an operator admin key", admin.name),
            "admin keys sign only the keys chain",
        ],
    );
    assert!(!out.contains("is not registered"), "{out}");
}

#[test]
fn detects_entry_resigned_by_a_revoked_key() {
    let fx = fixture();
    let bundle = load(&fx.bundle);
    let path = tampered("revoked", |b| {
        // Signed now: after the revocation, which the fixture recorded before building the
        // bundle (an earlier time could precede a freshly built fixture's revocation).
        resign(b, 2, &fx.revoked, celltrail::time::now_nanos());
    });
    let index = bundle.chains[0].entries[2].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 2)"),
            "key aph.nurse.rev was revoked",
            "badge lost",
        ],
    );
}

/// A stolen, revoked key dating its signature before the revocation: the entry was accepted
/// after the revocation, so the offline replay refuses it exactly as the server does.
#[test]
fn detects_entry_resigned_by_a_revoked_key_dated_before_the_revocation() {
    let fx = fixture();
    let bundle = load(&fx.bundle);
    let path = tampered("revoked-backdated", |b| {
        // Dated at the event (weeks before the revocation); accepted after it.
        let (_, e) = entry_of(b, 2);
        let body = celltrail::pb::EventBody::decode(e.body.as_slice()).unwrap();
        resign(b, 2, &fx.revoked, body.occurred_at_unix_nanos);
    });
    let index = bundle.chains[0].entries[2].index;
    assert_fails(
        &verify(&[p(&path)]),
        &[
            &format!("entry {index} (chain BAG-1 seq 2)"),
            "key aph.nurse.rev was revoked",
            "nothing it signs is accepted after that, even a signature dated earlier",
        ],
    );
}

#[test]
fn detects_checkpoint_signed_by_another_key_of_the_same_name() {
    let fx = fixture();
    let path = tampered("other-log-key", |b| {
        let text = celltrail::log::note_text(&b.checkpoint)
            .unwrap()
            .to_string();
        let origin = text.lines().next().unwrap();
        let forger = NoteSigner::generate(origin).unwrap();
        b.checkpoint = sign_note(&text, &[&forger]).unwrap();
        b.anchors.log_key = forger.verifier().to_key_string();
    });
    let v = assert_fails(
        &verify(&[p(&path), "--log-key", &log_vkey()]),
        &["checkpoint: signature does not verify with log key"],
    );
    assert!(
        v.contains(
            &std::fs::read_to_string(fx.data.join("log.vkey"))
                .unwrap()
                .trim()
                .to_string()
        ),
        "{v}"
    );
}

#[test]
fn detects_log_rewritten_after_a_kept_checkpoint() {
    let fx = fixture();
    let o = verify(&[
        p(&fx.forked_bundle),
        "--log-key",
        &log_vkey(),
        "--previous",
        p(&fx.kept),
    ]);
    assert_fails(
        &o,
        &[
            "log history was rewritten",
            &format!("previous checkpoint (size {}, root", fx.kept_size),
        ],
    );
    // The forked bundle on its own is internally sound: only the kept checkpoint exposes it.
    let o = verify(&[p(&fx.forked_bundle), "--log-key", &log_vkey()]);
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn previous_checkpoint_needs_a_consistency_proof_in_the_bundle() {
    let fx = fixture();
    let path = tampered("no-consistency", |b| b.consistency.clear());
    assert_fails(
        &verify(&[p(&path), "--previous", p(&fx.kept)]),
        &[
            &format!("no consistency proof from size {}", fx.kept_size),
            "--since-size",
        ],
    );
}

// ---- tampered copies of the data directory -------------------------------------------------

/// Copies the stopped honest data dir (or the forked one) and lets `f` rewrite its sled trees.
fn tampered_dir(name: &str, from: &Path, f: impl FnOnce(&sled::Db)) -> PathBuf {
    let dir = fixture().root.join(name);
    copy_dir(from, &dir);
    let db = sled::open(dir.join("db")).unwrap();
    f(&db);
    db.flush().unwrap();
    drop(db);
    dir
}

#[test]
fn data_dir_detects_one_byte_flipped_in_a_stored_entry() {
    let fx = fixture();
    let dir = tampered_dir("dd-flip", &fx.data, |db| {
        let t = db.open_tree("entries").unwrap();
        let mut v = t.get(20u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n / 2] ^= 0x04;
        t.insert(20u64.to_be_bytes(), v).unwrap();
    });
    assert_fails(
        &verify(&["--data-dir", p(&dir)]),
        &["entry 20: stored bytes hash to leaf"],
    );
}

#[test]
fn data_dir_detects_rewritten_entry_even_with_its_leaf_node_rewritten() {
    let fx = fixture();
    let dir = tampered_dir("dd-rewrite", &fx.data, |db| {
        let t = db.open_tree("entries").unwrap();
        let mut e =
            LogEntry::decode(t.get(22u64.to_be_bytes()).unwrap().unwrap().as_ref()).unwrap();
        let at = e.body.windows(8).position(|w| w == b"MFG-0001").unwrap();
        e.body[at + 7] ^= 0x01;
        let bytes = e.encode_to_vec();
        let leaf = celltrail::merkle::leaf_hash(&bytes);
        t.insert(22u64.to_be_bytes(), bytes).unwrap();
        // The leaf recorded for entry 22: block 22 / 16, slot 22 % 16.
        let leaves = db.open_tree("leaves").unwrap();
        let mut block = leaves.get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        block[6 * 32..7 * 32].copy_from_slice(&leaf);
        leaves.insert(1u64.to_be_bytes(), block).unwrap();
    });
    let seq = 22 - 10; // 10 key events come first
    assert_fails(
        &verify(&["--data-dir", p(&dir)]),
        &[
            &format!("entry 22 (chain BAG-1 seq {seq})"),
            "does not verify",
        ],
    );
}

#[test]
fn data_dir_detects_an_entry_removed() {
    let fx = fixture();
    let dir = tampered_dir("dd-removed", &fx.data, |db| {
        db.open_tree("entries")
            .unwrap()
            .remove(17u64.to_be_bytes())
            .unwrap();
    });
    assert_fails(
        &verify(&["--data-dir", p(&dir)]),
        &["entry 17: entry is missing from the store"],
    );
}

#[test]
fn data_dir_detects_entries_swapped() {
    let fx = fixture();
    let dir = tampered_dir("dd-swapped", &fx.data, |db| {
        let t = db.open_tree("entries").unwrap();
        let a = t.get(15u64.to_be_bytes()).unwrap().unwrap();
        let b = t.get(16u64.to_be_bytes()).unwrap().unwrap();
        t.insert(15u64.to_be_bytes(), b).unwrap();
        t.insert(16u64.to_be_bytes(), a).unwrap();
    });
    assert_fails(
        &verify(&["--data-dir", p(&dir)]),
        &["entry 15: stored bytes hash to leaf"],
    );
}

#[test]
fn data_dir_detects_checkpoint_signed_by_another_key() {
    let fx = fixture();
    let dir = tampered_dir("dd-cp", &fx.data, |db| {
        let meta = db.open_tree("meta").unwrap();
        let note = String::from_utf8(meta.get("checkpoint").unwrap().unwrap().to_vec()).unwrap();
        let text = celltrail::log::note_text(&note).unwrap().to_string();
        let forger = NoteSigner::generate(text.lines().next().unwrap()).unwrap();
        meta.insert(
            "checkpoint",
            sign_note(&text, &[&forger]).unwrap().as_bytes(),
        )
        .unwrap();
    });
    assert_fails(
        &verify(&["--data-dir", p(&dir)]),
        &["stored checkpoint: signature does not verify with log key"],
    );
}

#[test]
fn data_dir_detects_one_byte_flipped_in_the_stored_checkpoint() {
    let fx = fixture();
    let dir = tampered_dir("dd-cp-flip", &fx.data, |db| {
        let meta = db.open_tree("meta").unwrap();
        let mut note = meta.get("checkpoint").unwrap().unwrap().to_vec();
        let at = note.iter().position(|&c| c == b'\n').unwrap() + 5;
        note[at] ^= 0x01;
        meta.insert("checkpoint", note).unwrap();
    });
    assert_fails(&verify(&["--data-dir", p(&dir)]), &["stored checkpoint"]);
}

#[test]
fn data_dir_detects_history_rewritten_after_a_kept_checkpoint() {
    let fx = fixture();
    let dir = tampered_dir("dd-forked", &fx.forked, |_| {});
    assert_fails(
        &verify(&["--data-dir", p(&dir), "--previous", p(&fx.kept)]),
        &["log history was rewritten"],
    );
}

#[test]
fn detects_a_key_registry_entry_removed() {
    // Dropping the registration of the courier (registry seq 1) breaks the keys chain there.
    let path = tampered("registry-removed", |b| {
        b.registry.remove(1);
    });
    assert_fails(
        &verify(&[p(&path)]),
        &["entry 2 (chain keys seq 2)", "seq 2 would leave a gap"],
    );
}

#[test]
fn detects_custody_policy_violation_under_a_stricter_table() {
    // The auditor's own table: a release needs a second QA signature (APPROVED), so the replay
    // must stop at the release (seq 18), which only one QA person signed.
    let fx = fixture();
    let table = celltrail::policy::DEFAULT_TABLE_TOML;
    let strict = table.replacen(
        "to = \"Released\"\nsignatures = [{ role = \"qa\", meaning = \"PERFORMED\" }]",
        "to = \"Released\"\nsignatures = [{ role = \"qa\", meaning = \"PERFORMED\" }, { role = \"qa\", meaning = \"APPROVED\" }]",
        1,
    );
    assert_ne!(strict, table, "the default table has a released row");
    let path = fx.root.join("strict-policy.toml");
    std::fs::write(&path, strict).unwrap();
    let index = load(&fx.bundle).chains[0].entries[18].index;
    let o = verify(&[p(&fx.bundle), "--policy", p(&path)]);
    assert_fails(
        &o,
        &[
            &format!("entry {index} (chain BAG-1 seq 18)"),
            "custody policy",
        ],
    );
}

#[test]
fn pinned_admin_anchors_reject_a_registry_signed_by_another_admin_key() {
    let fx = fixture();
    let other = signer("admin");
    let anchors = fx.root.join("other-anchors.txt");
    std::fs::write(&anchors, format!("{}\n", other.verifier().to_key_string())).unwrap();
    assert_fails(
        &verify(&[p(&fx.bundle), "--trust-anchors", p(&anchors)]),
        &[
            "entry 0 (chain keys seq 0)",
            "signature by admin does not verify",
        ],
    );
}

#[test]
fn with_several_broken_chains_the_lowest_log_index_is_named() {
    let fx = fixture();
    let mut b = load(&fx.forked_bundle);
    let (bag1, bag2) = (b.chains[0].clone(), b.chains[1].clone());
    assert_eq!(
        (bag1.chain_id.as_str(), bag2.chain_id.as_str()),
        ("BAG-1", "BAG-2")
    );
    let flip = |e: &mut celltrail::bundle::Entry| {
        let mut le = LogEntry::decode(unb64(&e.entry).unwrap().as_slice()).unwrap();
        le.signatures[0].signature[0] ^= 1;
        e.entry = b64(&le.encode_to_vec());
    };
    // BAG-2 is listed second but breaks at a lower index than BAG-1.
    flip(&mut b.chains[1].entries[0]);
    flip(&mut b.chains[0].entries[4]);
    let (i1, i2) = (b.chains[0].entries[4].index, b.chains[1].entries[0].index);
    assert!(
        i1 < i2,
        "BAG-1 seq 4 ({i1}) precedes BAG-2 seq 0 ({i2}) in the log"
    );
    b.chains.swap(0, 1);
    let path = fx.root.join("two-broken.json");
    std::fs::write(&path, b.to_json()).unwrap();
    let o = verify(&[p(&path), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failure"]["index"], i1);
    assert_eq!(v["failure"]["chain"], "BAG-1");
    assert_eq!(v["failure"]["seq"], 4);
    let reason = v["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("does not verify"), "{reason}");
}
