//! The one harness for tests that run the real `celltrail` binary as a separate process:
//! `Serve` starts `celltrail serve` (or `celltrail witness`) on 127.0.0.1:0 and reads the bound
//! address from its banner; `Proc` kills it (SIGKILL) or stops it (SIGTERM) and keeps what it
//! printed; `command`/`run` run other commands to completion the way a user would; appenders
//! record every acknowledged event; `check_store` checks a stopped server's data directory.
#![allow(dead_code)] // each test file uses a different part of the harness

use celltrail::client::{self, Client, Draft};
use celltrail::crypto::EventHash;
use celltrail::note::{NoteSigner, NoteVerifier};
use celltrail::pb::{event_body::Detail, Collected, Enrolled, LogEntry, SignatureMeaning};
use prost::Message;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_celltrail");

/// The passphrase of every key the harness's processes write, `serve`'s own keys included.
pub const PASSPHRASE: &str = "cli test passphrase";

/// How long a process may take to print its serving banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary with a clean environment: no `CELLTRAIL_*` variable of the test's own
/// environment leaks in, stdin is empty, and the working directory is `cwd`. Key passphrases
/// come from `cwd/passphrase` (written if missing), as automation gives them (never argv).
pub fn command(cwd: &Path) -> Command {
    prepare(Command::new(BIN), cwd)
}

/// [`command`]'s clean environment, working directory and passphrase file, applied to `c`.
fn prepare(mut c: Command, cwd: &Path) -> Command {
    c.current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("CELLTRAIL_") {
            c.env_remove(k);
        }
    }
    let pass = cwd.join("passphrase");
    if !pass.exists() {
        std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    }
    c.env("CELLTRAIL_PASSPHRASE_FILE", &pass);
    c
}

/// Runs `args` (with `envs`) in `cwd` to completion, at most 60 s; returns (success, stdout +
/// stderr).
pub fn run(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut c = command(cwd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The README's zero-configuration server in `cwd`; returns it and its address.
pub fn serve(cwd: &Path) -> (Proc, String) {
    let p = Serve::new().cwd(cwd).start();
    let addr = p.addr.clone();
    (p, addr)
}

/// A `celltrail serve` (or `witness`) process to start: `Serve::new()` is the zero-configuration
/// server of the README (data directory `celltrail-data` under the working directory); every setter adds
/// to the command line or environment. `--listen 127.0.0.1:0` unless `listen` says otherwise.
pub struct Serve {
    subcommand: &'static str,
    cwd: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    nofile: Option<u64>,
}

impl Default for Serve {
    fn default() -> Self {
        Serve::new()
    }
}

impl Serve {
    pub fn new() -> Serve {
        Serve {
            subcommand: "serve",
            cwd: None,
            data_dir: None,
            listen: Some("127.0.0.1:0".into()),
            args: Vec::new(),
            envs: Vec::new(),
            nofile: None,
        }
    }

    /// `celltrail witness` instead of `serve` (same banner, same flags for listen and data).
    pub fn witness() -> Serve {
        Serve {
            subcommand: "witness",
            ..Serve::new()
        }
    }

    /// Working directory (and where `passphrase` is written); default: the data directory's
    /// parent, or a fresh temporary directory kept for the life of the process.
    pub fn cwd(mut self, dir: &Path) -> Serve {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Serve {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn listen(mut self, addr: &str) -> Serve {
        self.listen = Some(addr.to_string());
        self
    }

    /// No `--listen` flag: the address comes from the environment or the config file.
    pub fn no_listen(mut self) -> Serve {
        self.listen = None;
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Serve {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Serve {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Serve {
        self.envs
            .push((k.to_string(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    /// Runs the process under this open-file limit (`ulimit -n`, set by a shell that then
    /// execs the binary).
    pub fn nofile(mut self, n: u64) -> Serve {
        self.nofile = Some(n);
        self
    }

    /// [`Serve::start`] from async code (on a blocking thread).
    pub async fn spawn(self) -> Proc {
        tokio::task::spawn_blocking(move || self.start())
            .await
            .unwrap()
    }

    /// Starts the process and waits for its "serving on ADDR" banner (text or JSON). Panics
    /// with everything it printed if it exits first or takes longer than 30 s.
    pub fn start(self) -> Proc {
        let scratch = tempfile::tempdir().unwrap();
        let cwd = self
            .cwd
            .clone()
            .or_else(|| {
                self.data_dir
                    .as_ref()
                    .and_then(|d| d.parent().map(Path::to_path_buf))
            })
            .filter(|d| d.is_dir())
            .unwrap_or_else(|| scratch.path().to_path_buf());
        let mut c = match self.nofile {
            None => command(&cwd),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                prepare(sh, &cwd)
            }
        };
        c.arg(self.subcommand);
        if let Some(l) = &self.listen {
            c.arg("--listen").arg(l);
        }
        if let Some(d) = &self.data_dir {
            c.arg("--data-dir").arg(d);
        }
        c.args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn celltrail");
        let out = Arc::new(Output::default());
        drain(child.stdout.take().unwrap(), out.clone(), true);
        drain(child.stderr.take().unwrap(), out.clone(), false);
        let mut p = Proc {
            child,
            addr: String::new(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| cwd.join("celltrail-data")),
            out,
            _scratch: scratch,
        };
        let line = p.wait_for_line(|l| banner_addr(l).is_some(), START_TIMEOUT);
        p.addr = banner_addr(&line).unwrap();
        p
    }
}

/// The address in a "celltrail serving on ADDR" (or "witness serving http://ADDR") banner
/// line, text or JSON.
fn banner_addr(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("celltrail serving on ") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    if let Some(rest) = line.strip_prefix("celltrail witness serving http://") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"] == "celltrail serving")
        .then(|| v["addr"].as_str().map(str::to_string))
        .flatten()
}

/// Everything a process printed: stdout lines and stderr text, appended by drain threads (so
/// the process never blocks on a full pipe), with a condition variable to wait on.
#[derive(Default)]
struct Output {
    seen: Mutex<Seen>,
    changed: Condvar,
}

#[derive(Default)]
struct Seen {
    stdout: Vec<String>,
    stderr: String,
    /// Both pipes closed: the process has exited.
    closed: u8,
}

fn drain(pipe: impl Read + Send + 'static, out: Arc<Output>, is_stdout: bool) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        loop {
            let mut line = String::new();
            let n = r.read_line(&mut line).unwrap_or(0);
            let mut seen = out.seen.lock().unwrap();
            if n == 0 {
                seen.closed += 1;
                out.changed.notify_all();
                return;
            }
            if is_stdout {
                seen.stdout.push(line.trim_end().to_string());
            } else {
                seen.stderr.push_str(&line);
            }
            out.changed.notify_all();
        }
    });
}

/// A running `celltrail` process; killed when dropped.
pub struct Proc {
    pub child: Child,
    /// The gRPC (or witness HTTP) address from the banner, `host:port`.
    pub addr: String,
    pub data_dir: PathBuf,
    out: Arc<Output>,
    _scratch: tempfile::TempDir,
}

impl Proc {
    /// Starts `celltrail serve` on `data_dir` with `extra` flags (`CELLTRAIL_LOG=warn`) and waits
    /// until it serves.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Proc {
        let b = Serve::new()
            .data_dir(data_dir)
            .args(extra.iter().copied())
            .env("CELLTRAIL_LOG", "warn");
        tokio::task::spawn_blocking(move || b.start())
            .await
            .unwrap()
    }

    /// The first stdout line `want` accepts, waiting up to `limit` for it. Panics with all
    /// output if the process exits first.
    pub fn wait_for_line(&self, want: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = self.out.seen.lock().unwrap();
        loop {
            if let Some(l) = seen.stdout.iter().find(|l| want(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if seen.closed == 2 || now >= deadline {
                panic!(
                    "celltrail {} before the expected line\n--- stdout\n{}\n--- stderr\n{}",
                    if seen.closed == 2 {
                        "exited"
                    } else {
                        "timed out"
                    },
                    seen.stdout.join("\n"),
                    seen.stderr
                );
            }
            seen = self
                .out
                .changed
                .wait_timeout(seen, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The URL of `serve --http`'s console, from its "celltrail console on URL" line (no
    /// trailing slash).
    pub fn console_url(&self) -> String {
        let line = self.wait_for_line(|l| l.starts_with("celltrail console on "), START_TIMEOUT);
        line["celltrail console on ".len()..]
            .trim()
            .trim_end_matches('/')
            .to_string()
    }

    /// Stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.out.seen.lock().unwrap().stdout.clone()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.out.seen.lock().unwrap().stderr.clone()
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

    /// SIGTERM, then waits for the exit, which must be a clean one; returns stderr (all of it:
    /// the pipes are drained).
    pub fn stop(mut self) -> String {
        self.sigterm();
        let status = self.child.wait().expect("reap");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.out.seen.lock().unwrap();
        while seen.closed < 2 && Instant::now() < deadline {
            seen = self
                .out
                .changed
                .wait_timeout(seen, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        assert!(
            status.success(),
            "exit {status} after SIGTERM: {}",
            seen.stderr
        );
        seen.stderr.clone()
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
/// A file whose first line is [`PASSPHRASE`], under which `serve` encrypted `data_dir`'s
/// log.key and admin.key (the harness's passphrase file beside the data directory; written if
/// missing).
pub fn server_passphrase_file(data_dir: &Path) -> PathBuf {
    let p = data_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("passphrase");
    if !p.exists() {
        std::fs::write(&p, format!("{PASSPHRASE}\n")).unwrap();
    }
    p
}

pub fn admin_key(data_dir: &Path) -> NoteSigner {
    let path = data_dir.join("admin.key");
    let deadline = Instant::now() + Duration::from_secs(20);
    let source =
        celltrail::keys::PassphraseSource::Given(celltrail::keys::Passphrase::new(PASSPHRASE));
    loop {
        match celltrail::keys::read_key_file_with(&path, &source) {
            Ok(k) => return k,
            Err(e) if Instant::now() > deadline => panic!("admin key: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The longest an appender waits for one answer before it treats the call as cut off.
const CALL_LIMIT: Duration = Duration::from_secs(30);

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
        // Every call is bounded: a call that outlives the server it went to (killed mid-call)
        // ends this round like a transport failure instead of holding the test forever.
        let (mut seq, mut prev) =
            match tokio::time::timeout(CALL_LIMIT, client::next_link(c, &self.chain)).await {
                Ok(Ok(l)) => l,
                _ => return 0,
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
            let Ok(answer) = tokio::time::timeout(CALL_LIMIT, c.append(ev)).await else {
                return n; // no answer in time: in flight, like a call cut by a kill
            };
            match answer {
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
