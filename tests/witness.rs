//! The witness server (`celltrail witness`) over real HTTP on 127.0.0.1:0 with a real sled
//! state directory: the C2SP tlog-witness status codes, fork and rollback refusal, and state
//! that survives a restart. The test plays the log: it builds trees in memory and signs their
//! checkpoints with a log key, including a forked tree signed with the same key.

use celltrail::merkle::{self, Hash};
use celltrail::note::{sign_note, Checkpoint, NoteSigner};
use celltrail::witness::cosig::{self, AddCheckpoint, Cosigner};
use celltrail::witness::http::HttpClient;
use celltrail::witness::server::{self, Witness, WitnessedLog};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(dir: &Path, key: &NoteSigner, logs: Vec<WitnessedLog>) -> Running {
        let w = Witness::open(dir, Cosigner::from_note_signer(key), logs).expect("open witness");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, Arc::new(w), async {
            let _ = rx.await;
        }));
        Running {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn leaves(n: u64, tag: &str) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("{tag}{i}").as_bytes()))
        .collect()
}

fn signed(log: &NoteSigner, l: &[Hash]) -> String {
    let cp = Checkpoint {
        origin: log.name.clone(),
        size: l.len() as u64,
        root: merkle::root(l),
        extensions: vec![],
    };
    sign_note(&cp.to_text(), &[log]).unwrap()
}

/// An add-checkpoint body from the tree `old` leaves long to all of `l`.
fn body(log: &NoteSigner, l: &[Hash], old: u64) -> String {
    let proof = if old == 0 || old >= l.len() as u64 {
        vec![]
    } else {
        merkle::consistency_proof(l, old).unwrap()
    };
    AddCheckpoint {
        old_size: old,
        proof,
        checkpoint: signed(log, l),
    }
    .to_body()
}

async fn post(w: &Running, body: String) -> (u16, String) {
    let r = HttpClient::default()
        .post(&w.url("/add-checkpoint"), body)
        .await
        .expect("witness answers");
    (r.status, r.body)
}

fn setup() -> (tempfile::TempDir, NoteSigner, NoteSigner, Vec<WitnessedLog>) {
    let dir = tempfile::tempdir().unwrap();
    let log = NoteSigner::generate("example.org/log").unwrap();
    let wkey = NoteSigner::generate("witness.example/w1").unwrap();
    let logs = vec![WitnessedLog::parse(&log.verifier().to_key_string()).unwrap()];
    (dir, log, wkey, logs)
}

#[tokio::test]
async fn witness_cosigns_consistent_growth_with_a_verifiable_timestamped_cosignature() {
    let (dir, log, wkey, logs) = setup();
    let w = Running::start(dir.path(), &wkey, logs).await;
    let cos = Cosigner::from_note_signer(&wkey).verifier();
    let tree = leaves(10, "a");
    for (old, new) in [(0u64, 3usize), (3, 4), (4, 10), (10, 10)] {
        let (status, line) = post(&w, body(&log, &tree[..new], old)).await;
        assert_eq!(status, 200, "{old}->{new}: {line}");
        let note = cosig::add_lines(&signed(&log, &tree[..new]), &[line]);
        let got = cosig::verify_cosignatures(&note, std::slice::from_ref(&cos)).unwrap();
        assert_eq!(got.len(), 1);
        let now = celltrail::time::now_nanos() as u64 / 1_000_000_000;
        assert!(got[0].timestamp > 0 && got[0].timestamp <= now + 1);
    }
    // The monitoring endpoint serves the latest cosigned checkpoint, with both signatures.
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(log.name.as_bytes()));
    let r = HttpClient::default()
        .get(&w.url(&format!("/{hash}/checkpoint")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    celltrail::note::open_note(&r.body, &[log.verifier()]).unwrap();
    assert_eq!(
        cosig::verify_cosignatures(&r.body, &[cos]).unwrap().len(),
        1,
        "{}",
        r.body
    );
    assert!(r.body.starts_with(&format!("{}\n10\n", log.name)));
    w.stop().await;
}

#[tokio::test]
async fn witness_refuses_a_fork_at_the_same_size_and_after_growth() {
    let (dir, log, wkey, logs) = setup();
    let w = Running::start(dir.path(), &wkey, logs).await;
    let a = leaves(8, "a");
    assert_eq!(post(&w, body(&log, &a[..5], 0)).await.0, 200);
    // Same origin, same key, same size, other root.
    let mut b = a.clone();
    b[2] = merkle::leaf_hash(b"forged");
    let (status, why) = post(&w, body(&log, &b[..5], 5)).await;
    assert_eq!(status, 422, "{why}");
    assert!(why.contains("refusing a fork"), "{why}");
    // A larger forked tree with its own (self-consistent) proof from size 5.
    let (status, why) = post(&w, body(&log, &b, 5)).await;
    assert_eq!(status, 422, "{why}");
    assert!(why.contains("not consistent"), "{why}");
    // The honest continuation is still cosigned: nothing was stored by the refusals.
    assert_eq!(post(&w, body(&log, &a, 5)).await.0, 200);
    w.stop().await;
}

#[tokio::test]
async fn witness_refuses_rollback_and_answers_409_with_its_size() {
    let (dir, log, wkey, logs) = setup();
    let w = Running::start(dir.path(), &wkey, logs).await;
    let a = leaves(9, "a");
    assert_eq!(post(&w, body(&log, &a, 0)).await.0, 200);
    // A smaller tree with old = the witness's size: old > checkpoint size → 400.
    let (status, why) = post(&w, body(&log, &a[..4], 9)).await;
    assert_eq!(status, 400, "{why}");
    // A smaller tree claiming to extend an old size the witness no longer has → 409 + size.
    let r = HttpClient::default()
        .post(&w.url("/add-checkpoint"), body(&log, &a[..4], 2))
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (409, "9\n"));
    // Also from zero (a client that does not know the witness's size).
    let (status, size) = post(&w, body(&log, &a[..4], 0)).await;
    assert_eq!((status, size.as_str()), (409, "9\n"));
    w.stop().await;
}

#[tokio::test]
async fn witness_answers_the_specified_codes_for_bad_requests() {
    let (dir, log, wkey, logs) = setup();
    let w = Running::start(dir.path(), &wkey, logs).await;
    let a = leaves(6, "a");
    // Unknown origin → 404.
    let stranger = NoteSigner::generate("other.example/log").unwrap();
    let (status, why) = post(&w, body(&stranger, &a, 0)).await;
    assert_eq!(status, 404, "{why}");
    // Known origin, signed by another key with the same name → 403.
    let impostor = NoteSigner::generate("example.org/log").unwrap();
    let (status, why) = post(&w, body(&impostor, &a, 0)).await;
    assert_eq!(status, 403, "{why}");
    // A signature line by the trusted key that does not verify → 403.
    let good = signed(&log, &a);
    let other = signed(&log, &a[..5]);
    let sig_line = other.rsplit_once("\n\n").unwrap().1;
    let text = good.rsplit_once("\n\n").unwrap().0;
    let bad = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: format!("{text}\n\n{sig_line}"),
    };
    let (status, why) = post(&w, bad.to_body()).await;
    assert_eq!(status, 403, "{why}");
    // Malformed body → 400.
    assert_eq!(post(&w, "hello".into()).await.0, 400);
    // Old size 0 with a proof → 422.
    let mut with_proof = AddCheckpoint::parse(&body(&log, &a, 0)).unwrap();
    with_proof.proof = vec![[1; 32]];
    assert_eq!(post(&w, with_proof.to_body()).await.0, 422);
    // Size 0 must have the empty root → 422.
    let zero = Checkpoint {
        origin: log.name.clone(),
        size: 0,
        root: [9; 32],
        extensions: vec![],
    };
    let z = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: sign_note(&zero.to_text(), &[&log]).unwrap(),
    };
    assert_eq!(post(&w, z.to_body()).await.0, 422);
    // A wrong consistency proof → 422.
    assert_eq!(post(&w, body(&log, &a[..3], 0)).await.0, 200);
    let mut wrong = AddCheckpoint::parse(&body(&log, &a, 3)).unwrap();
    wrong.proof[0][0] ^= 1;
    assert_eq!(post(&w, wrong.to_body()).await.0, 422);
    // Oversized bodies are refused before reading them.
    let (status, _) = post(&w, "x".repeat(server::MAX_BODY + 1)).await;
    assert_eq!(status, 413);
    w.stop().await;
}

#[tokio::test]
async fn witness_keeps_its_state_across_a_restart() {
    let (dir, log, wkey, logs) = setup();
    let a = leaves(12, "a");
    let w = Running::start(dir.path(), &wkey, logs.clone()).await;
    assert_eq!(post(&w, body(&log, &a[..7], 0)).await.0, 200);
    w.stop().await;

    let w = Running::start(dir.path(), &wkey, logs).await;
    // It remembers size 7: a fresh start from 0 is told so, and a fork at 7 is refused.
    let (status, size) = post(&w, body(&log, &a[..3], 0)).await;
    assert_eq!((status, size.as_str()), (409, "7\n"));
    let mut b = a.clone();
    b[0] = merkle::leaf_hash(b"rewritten history");
    assert_eq!(post(&w, body(&log, &b[..7], 7)).await.0, 422);
    assert_eq!(post(&w, body(&log, &a, 7)).await.0, 200);
    w.stop().await;
}

#[tokio::test]
async fn concurrent_submissions_never_roll_the_witness_back() {
    let (dir, log, wkey, logs) = setup();
    let w = Running::start(dir.path(), &wkey, logs).await;
    let a = leaves(40, "a");
    assert_eq!(post(&w, body(&log, &a[..1], 0)).await.0, 200);
    // Many clients race from old size 1 to different sizes: at most one wins, the others get
    // 409 naming the winner's size, and the state never goes below the winner.
    let mut tasks = Vec::new();
    for n in 2..40usize {
        let b = body(&log, &a[..n], 1);
        let url = w.url("/add-checkpoint");
        tasks.push(tokio::spawn(async move {
            let r = HttpClient::default().post(&url, b).await.unwrap();
            (n, r.status, r.body)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (n, status, body) = t.await.unwrap();
        match status {
            200 => winners.push(n),
            409 => assert!(body.trim().parse::<u64>().unwrap() > 1),
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (status, size) = post(&w, body(&log, &a[..1], 0)).await;
    assert_eq!((status, size), (409, format!("{}\n", winners[0])));
    w.stop().await;
}
