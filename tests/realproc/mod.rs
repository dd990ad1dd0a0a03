//! Harness for tests that run the real `celltrail serve` process: start it on a free port,
//! wait until it answers, kill it (SIGKILL) or stop it (SIGTERM); appenders that record every
//! acknowledged event; an offline check of a data directory's store.
#![allow(dead_code)] // each test file uses a different part of the harness

use celltrail::client::{self, Client, Draft};
use celltrail::crypto::EventHash;
use celltrail::note::{NoteSigner, NoteVerifier};
use celltrail::pb::{event_body::Detail, Collected, Enrolled, LogEntry, SignatureMeaning};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// Everything the server wrote to stderr so far (drained by a thread, so the server never
    /// blocks on a full pipe).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    /// Starts `celltrail serve` on `data_dir` with `extra` flags and waits until it answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Proc {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_celltrail"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(&addr)
            .args(extra)
            .env("CELLTRAIL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn celltrail serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let p = Proc {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The port is bound only after the data directory is open: a TCP connect means
            // the server is up (works for TLS servers too).
            if tokio::net::TcpStream::connect(&p.addr).await.is_ok() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up on {}",
                p.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn client(&self) -> Client {
        client::connect(&self.addr).await.expect("connect")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's first admin key. The server binds its port before it opens the data directory,
/// so the key may appear (and be written) a moment after the port answers: wait for it.
pub fn admin_key(data_dir: &Path) -> NoteSigner {
    let path = data_dir.join("admin.key");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match celltrail::keys::read_key_file(&path) {
            Ok(k) => return k,
            Err(e) if Instant::now() > deadline => panic!("admin key: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One bag chain driven by one task: `enrolled`, then `collected` again and again.
pub struct Appender {
    pub chain: String,
    pub nurse: NoteSigner,
    /// Event hashes the server acknowledged, in order.
    pub acked: Vec<[u8; 32]>,
    /// Sent but not answered (the server died): may or may not be recorded.
    pub in_flight: Option<[u8; 32]>,
}

impl Appender {
    pub fn new(chain: String, nurse: NoteSigner) -> Self {
        Appender {
            chain,
            nurse,
            acked: Vec::new(),
            in_flight: None,
        }
    }

    fn detail(chain: &str, seq: u64) -> Detail {
        if seq == 0 {
            Detail::Enrolled(Enrolled {
                coi_ref: "COI-7F3A-2291".into(),
                therapy: "CAR-T anti-CD19".into(),
                manufacturing_site: "MFG-1".into(),
            })
        } else {
            let now = celltrail::time::now_nanos();
            Detail::Collected(Collected {
                din: crate::common::din_for(chain),
                product_code: "S1234000".into(),
                volume_ml: Some(250),
                collection_end_unix_nanos: Some(now),
            })
        }
    }

    /// Appends until the server stops answering or `until` passes; returns the acked count.
    /// Resumes from the server's head (an unacknowledged event may have been recorded).
    pub async fn run(&mut self, c: &mut Client, until: Instant) -> usize {
        let mut n = 0;
        let (mut seq, mut prev) = match client::next_link(c, &self.chain).await {
            Ok(l) => l,
            Err(_) => return 0,
        };
        self.in_flight = None;
        while Instant::now() < until {
            let now = celltrail::time::now_nanos();
            let ev = client::sign_draft(
                Draft {
                    chain_id: self.chain.clone(),
                    seq,
                    prev_hash: prev.clone(),
                    occurred_at: now,
                    site: "HOSP-A".into(),
                    comment: String::new(),
                    detail: Self::detail(&self.chain, seq),
                },
                &[(&self.nurse, SignatureMeaning::Performed)],
                now,
            );
            let hash = EventHash::of_body(&ev.body).0;
            self.in_flight = Some(hash);
            match c.append(ev).await {
                Ok(r) => {
                    let r = r.into_inner();
                    assert_eq!(r.event_hash, hash, "receipt names the event");
                    self.acked.push(hash);
                    self.in_flight = None;
                    n += 1;
                    seq += 1;
                    prev = hash.to_vec();
                }
                Err(s) => {
                    // Overloaded, or the connection went away (kill, or a graceful shutdown's
                    // GOAWAY racing this call): stop this round. An answer from the server that
                    // refuses a well-formed event is a bug.
                    assert!(
                        s.code() == tonic::Code::ResourceExhausted
                            || client::is_transport_failure(&s),
                        "chain {} seq {seq}: unexpected {:?}: {}",
                        self.chain,
                        s.code(),
                        s.message()
                    );
                    return n;
                }
            }
        }
        n
    }
}

/// What `check_store` found.
#[derive(Debug)]
pub struct StoreReport {
    pub tree_size: u64,
    pub chains: usize,
}

/// Offline check of a stopped server's data directory: every entry 0..tree_size is there and
/// decodes, nothing lies beyond it, every chain links seq by seq, the hash index and heads agree
/// with the entries, and the stored checkpoint is signed by the log key and commits to the
/// Merkle root recomputed from all entries. Returns the store for further lookups.
pub fn check_store(data_dir: &Path) -> (celltrail::store::Store, StoreReport) {
    use celltrail::storage::Storage as _;
    let store = celltrail::store::Store::open(&celltrail::datadir::DataDir::new(data_dir).db())
        .expect("open store");
    let size = store.tree_size().unwrap();
    let all = store.entries_from(0, usize::MAX).unwrap();
    assert_eq!(
        all.len() as u64,
        size,
        "entries in the store must equal tree_size (no half-written group)"
    );
    let mut leaves = Vec::with_capacity(all.len());
    let mut hashes = Vec::with_capacity(all.len());
    for (i, (index, bytes)) in all.iter().enumerate() {
        assert_eq!(*index, i as u64, "entry indices are contiguous");
        let entry = LogEntry::decode(bytes.as_slice()).expect("entry decodes");
        assert_eq!(entry.index, *index, "entry carries its index");
        celltrail::pb::EventBody::decode(entry.body.as_slice()).expect("body decodes");
        let h = EventHash::of_body(&entry.body);
        assert_eq!(store.index_of_hash(&h).unwrap(), Some(*index), "hash index");
        leaves.push(celltrail::merkle::leaf_hash(bytes));
        hashes.push(h.0);
    }
    let chains = store.chain_ids().unwrap();
    for id in &chains {
        let mut prev = [0u8; 32];
        let indices = store.chain_indices(id).unwrap();
        for (seq, index) in indices.iter().enumerate() {
            assert!(*index < size, "chain {id} points past the log");
            let entry = LogEntry::decode(all[*index as usize].1.as_slice()).unwrap();
            let body = celltrail::pb::EventBody::decode(entry.body.as_slice()).unwrap();
            assert_eq!(body.chain_id, *id);
            assert_eq!(body.seq, seq as u64, "chain {id} has no gaps");
            assert_eq!(body.prev_hash, prev, "chain {id} seq {seq} links");
            prev = hashes[*index as usize];
        }
        let head = store.head(id).unwrap().expect("head");
        assert_eq!(
            head.seq + 1,
            indices.len() as u64,
            "head of {id} is its last event"
        );
        assert_eq!(head.hash, prev, "head hash of {id}");
    }
    if size > 0 {
        let vkey = std::fs::read_to_string(data_dir.join("log.vkey")).unwrap();
        let verifier = NoteVerifier::from_key_string(vkey.trim()).unwrap();
        let note = store.checkpoint().unwrap().expect("checkpoint stored");
        let opened = celltrail::note::open_note(&note, &[verifier])
            .expect("checkpoint signed by the log key");
        let cp = celltrail::note::Checkpoint::parse(&opened.text).expect("checkpoint parses");
        assert_eq!(cp.size, size, "checkpoint size is tree_size");
        assert_eq!(
            cp.root,
            celltrail::merkle::root(&leaves),
            "checkpoint root equals the root recomputed from every entry"
        );
    }
    let chains = chains.len();
    (
        store,
        StoreReport {
            tree_size: size,
            chains,
        },
    )
}
