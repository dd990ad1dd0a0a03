//! Test harness: starts the real server in this process on 127.0.0.1:0 over a real data
//! directory (`TestServer`, the one in-process server builder of the tests) and talks gRPC to it
//! through the generated client. Subprocess servers are `realproc::Proc`.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod mutate;
#[path = "../pg/mod.rs"]
pub mod pg;

/// The store a test server keeps its ledger in: sled in the data directory (`None`), or with
/// `CELLTRAIL_TEST_STORE=postgres` a database of a throw-away PostgreSQL cluster, one per data
/// directory (a restart on the same directory finds the same database). `.ci/run` runs the
/// gRPC API tests both ways.
pub fn test_store(data_dir: &Path) -> Option<std::sync::Arc<dyn celltrail::storage::Storage>> {
    if std::env::var("CELLTRAIL_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    use sha2::Digest;
    let key = hex::encode(&sha2::Sha256::digest(data_dir.to_string_lossy().as_bytes())[..12]);
    let url = pg::PgCluster::shared().db_for(&key);
    Some(std::sync::Arc::new(
        celltrail::pg::PgStore::open(&url, None, &Default::default())
            .expect("open PostgreSQL store"),
    ))
}

use celltrail::client::{self, Client, Draft};
use celltrail::datadir::DataDir;
use celltrail::ledger::{Ledger, LedgerOptions};
use celltrail::note::NoteSigner;
use celltrail::note::NoteVerifier;
use celltrail::pb::{event_body::Detail, KeyRegistered, Receipt, SignatureMeaning, SignedEvent};
use celltrail::server::{open, run, NetOptions, RunOptions, ServeOptions};
use celltrail::storage::Storage;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::ServerTlsConfig;

/// A real server running in this process on a loopback port, over a real data directory.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The operator admin key (the directory's `admin.key`, or the one given to the builder).
    pub admin: NoteSigner,
    /// The log's verifier key.
    pub log_vkey: NoteVerifier,
    /// The server's ledger (for the storage it writes to and in-process appends).
    pub ledger: Arc<Ledger>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// How to start a [`TestServer`]; every in-process server of the tests is started here.
pub struct Builder {
    /// The data directory's options (policy, ledger tuning, storage, ...).
    pub opts: ServeOptions,
    addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
    admin: Option<NoteSigner>,
    net: NetOptions,
}

impl Builder {
    /// A custody policy table (TOML file) the log must have in force (`serve --policy`): a new
    /// log records it as its first entry, signed by the directory's admin key.
    pub fn policy(mut self, path: &Path) -> Builder {
        self.opts.policy = Some(path.to_path_buf());
        self
    }

    /// Queue and group sizes of the writer.
    pub fn ledger_options(mut self, ledger: LedgerOptions) -> Builder {
        self.opts.ledger = ledger;
        self
    }

    /// A storage backend instead of the sled store in `DATA_DIR/db`.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Builder {
        self.opts.storage = Some(storage);
        self
    }

    /// Serve over TLS with this configuration.
    pub fn tls(mut self, tls: ServerTlsConfig) -> Builder {
        self.tls = Some(tls);
        self
    }

    /// Listen on `addr` (e.g. the port of a stopped server, so clients configured with that
    /// address reconnect after a restart) instead of a free port.
    pub fn on(mut self, addr: SocketAddr) -> Builder {
        self.addr = addr;
        self
    }

    /// Connection bounds, shutdown grace and watchdog instead of the defaults.
    pub fn net(mut self, net: NetOptions) -> Builder {
        self.net = net;
        self
    }

    /// The admin key, for a directory without `admin.key` (a restored copy).
    pub fn admin(mut self, admin: NoteSigner) -> Builder {
        self.admin = Some(admin);
        self
    }

    pub async fn start(mut self) -> TestServer {
        if self.opts.storage.is_none() {
            self.opts.storage = test_store(&self.opts.data_dir);
        }
        let opened = open(&self.opts).expect("open data dir");
        let admin = self.admin.unwrap_or_else(|| {
            celltrail::keys::read_key_file_with(
                &DataDir::new(&self.opts.data_dir).admin_key(),
                &celltrail::keys::PassphraseSource::Given(
                    self.opts
                        .key_passphrase
                        .clone()
                        .unwrap_or(celltrail::keys::Passphrase::new("")),
                ),
            )
            .expect("admin key")
        });
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the test server's address");
        let addr = listener.local_addr().unwrap();
        let log_vkey = opened.log_verifier.clone();
        let ledger = opened.ledger.clone();
        let run_opts = RunOptions::of(&opened)
            .with_tls(self.tls)
            .with_net(self.net);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, opened.ledger, run_opts, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            data_dir: self.opts.data_dir.clone(),
            admin,
            log_vkey,
            ledger,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

impl TestServer {
    /// A builder for a server on `data_dir` (created if new).
    pub fn builder(data_dir: &Path) -> Builder {
        Self::builder_with(ServeOptions::new(data_dir))
    }

    /// A builder starting from `opts`.
    pub fn builder_with(opts: ServeOptions) -> Builder {
        Builder {
            opts,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            admin: None,
            net: NetOptions::default(),
        }
    }

    /// Starts a server on `data_dir` (created if new) with the default options.
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::builder(data_dir).start().await
    }

    /// Starts a server with `opts` on a free loopback port.
    pub async fn start_with(opts: ServeOptions) -> TestServer {
        Self::builder_with(opts).start().await
    }

    /// Like [`TestServer::start_with`] but listening on `addr`.
    pub async fn start_on(opts: ServeOptions, addr: SocketAddr) -> TestServer {
        Self::builder_with(opts).on(addr).start().await
    }

    /// A plain-text client.
    pub async fn client(&self) -> Client {
        client::connect(&self.addr.to_string())
            .await
            .expect("connect")
    }

    /// A plain-text channel (for the health and reflection clients).
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful stop: waits until the store is closed so it can be reopened.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server run");
        }
    }
}

/// Fixed base time for simulated lifecycles: 40 days ago, whole seconds.
pub fn base_time() -> i64 {
    let now = celltrail::time::now_nanos();
    let day = 86_400 * 1_000_000_000i64;
    (now - 40 * day) / 1_000_000_000 * 1_000_000_000
}

pub fn signer(name: &str) -> NoteSigner {
    NoteSigner::generate(name).unwrap()
}

/// Registers `who` with a role and site, valid from a year before `base_time()` on.
pub async fn register(
    c: &mut Client,
    admin: &NoteSigner,
    who: &NoteSigner,
    role: &str,
    site: &str,
) -> Receipt {
    register_with(
        c,
        admin,
        who,
        role,
        site,
        base_time() - 365 * 86_400 * 1_000_000_000,
        0,
    )
    .await
}

pub async fn register_with(
    c: &mut Client,
    admin: &NoteSigner,
    who: &NoteSigner,
    role: &str,
    site: &str,
    valid_from: i64,
    valid_until: i64,
) -> Receipt {
    let detail = Detail::KeyRegistered(KeyRegistered {
        key_id: who.name.clone(),
        public_key: who.key.verifying_key().as_bytes().to_vec(),
        printed_name: format!("{} (test)", who.name),
        role: role.into(),
        site: site.into(),
        valid_from_unix_nanos: valid_from,
        valid_until_unix_nanos: valid_until,
    });
    admin_event(c, admin, detail).await.expect("register key")
}

pub async fn admin_event(
    c: &mut Client,
    admin: &NoteSigner,
    detail: Detail,
) -> anyhow::Result<Receipt> {
    let draft = Draft {
        chain_id: "keys".into(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: celltrail::time::now_nanos(),
        site: String::new(),
        comment: String::new(),
        detail,
    };
    client::append_draft(c, draft, &[(admin, SignatureMeaning::Performed)]).await
}

/// When the signatures of an event that happened at `at` are made: at the event, unless it
/// is older than the policy's signature window (7 days) allows; then now, as a station that
/// held an event re-signs it (simulated lifecycles happen weeks in the past).
pub fn signing_time(at: i64) -> i64 {
    let now = celltrail::time::now_nanos();
    if at < now - 6 * 86_400 * 1_000_000_000 {
        now
    } else {
        at
    }
}

/// [`signed_at_link`] with the signatures made at an explicit `signed_at`.
#[allow(clippy::too_many_arguments)]
pub fn signed_explicitly(
    chain: &str,
    seq: u64,
    prev: Vec<u8>,
    at: i64,
    signed_at: i64,
    site: &str,
    detail: Detail,
    signers: &[(&NoteSigner, SignatureMeaning)],
) -> SignedEvent {
    client::sign_draft(
        Draft {
            chain_id: chain.into(),
            seq,
            prev_hash: prev,
            occurred_at: at,
            site: site.into(),
            comment: String::new(),
            detail,
        },
        signers,
        signed_at,
    )
}

/// Builds and signs an event at an explicit seq/prev_hash (for link tests).
pub fn signed_at_link(
    chain: &str,
    seq: u64,
    prev: Vec<u8>,
    at: i64,
    site: &str,
    detail: Detail,
    signers: &[(&NoteSigner, SignatureMeaning)],
) -> SignedEvent {
    client::sign_draft(
        Draft {
            chain_id: chain.into(),
            seq,
            prev_hash: prev,
            occurred_at: at,
            site: site.into(),
            comment: String::new(),
            detail,
        },
        signers,
        signing_time(at),
    )
}

/// The full content of the ledger, for "store unchanged" assertions.
pub async fn snapshot(c: &mut Client) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let page = c
            .get_entries(celltrail::pb::GetEntriesRequest { start, limit: 1000 })
            .await
            .expect("get entries")
            .into_inner();
        out.extend(page.entries.into_iter().map(|e| e.entry));
        if page.next >= page.tree_size {
            return out;
        }
        start = page.next;
    }
}

/// What `celltrail verify --data-dir DIR` (the real binary) said about a stopped data directory.
pub struct DirVerify {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

/// Runs `celltrail verify --data-dir DIR` on a data directory no server has open (sled locks
/// it): log key from `DIR/log.vkey`, trust anchors from `DIR/trust-anchors.txt`.
pub fn verify_data_dir(dir: &Path) -> DirVerify {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .arg("verify")
        .arg("--data-dir")
        .arg(dir)
        .env_remove("CELLTRAIL_CONFIG")
        .env_remove("CELLTRAIL_DATA_DIR")
        .env_remove("CELLTRAIL_VERIFY_LOG_KEY")
        .output()
        .expect("run celltrail verify");
    DirVerify {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        secs: started.elapsed().as_secs_f64(),
    }
}

/// `verify --data-dir DIR` exits 0 and reports a signed checkpoint of `tree_size` whose root it
/// recomputed from all `tree_size` entries.
pub fn assert_data_dir_verifies(dir: &Path, tree_size: u64) -> DirVerify {
    let v = verify_data_dir(dir);
    assert!(
        v.ok,
        "verify --data-dir {} failed:\n{}\n{}",
        dir.display(),
        v.stdout,
        v.stderr
    );
    assert!(
        v.stdout.contains(&format!(" size {tree_size} root "))
            && v.stdout
                .contains(&format!("VERDICT: VERIFIED — {tree_size} entries")),
        "verify --data-dir {} does not name tree size {tree_size}:\n{}",
        dir.display(),
        v.stdout
    );
    v
}

/// Copies a directory tree (a stopped data directory) to `to`, which must not exist.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Flips one byte of log entry `index` in the stopped data directory `dir`, as someone editing
/// the sled files would (the store itself has no way to rewrite an entry).
/// The sled store of data directory `dir`, opened once a server stopped moments ago has let go
/// of sled's lock (its flusher may still be ending).
#[allow(dead_code)] // not every test file reads a stopped store
pub fn open_stopped_store(dir: &Path) -> celltrail::store::Store {
    let started = std::time::Instant::now();
    loop {
        match celltrail::store::Store::open(&DataDir::new(dir).db()) {
            Ok(s) => return s,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("open the store of {}: {e}", dir.display()),
        }
    }
}

pub fn flip_entry_byte(dir: &Path, index: u64) {
    // A server stopped moments ago may still hold sled's lock while its flusher ends.
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(DataDir::new(dir).db()) {
            Ok(db) => break db,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("open the sled store: {e}"),
        }
    };
    let entries = db.open_tree("entries").unwrap();
    let key = index.to_be_bytes();
    let mut bytes = entries.get(key).unwrap().expect("entry exists").to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    entries.insert(key, bytes).unwrap();
    db.flush().unwrap();
}

/// `verify --data-dir` on a copy of `dir` with entry `index` altered exits non-zero and names
/// that entry.
pub fn assert_tampered_copy_fails(dir: &Path, scratch: &Path, index: u64) -> DirVerify {
    copy_dir(dir, scratch);
    flip_entry_byte(scratch, index);
    let v = verify_data_dir(scratch);
    assert!(
        !v.ok,
        "verify --data-dir passed a store whose entry {index} was altered:\n{}",
        v.stdout
    );
    assert!(
        v.stdout
            .contains(&format!("VERDICT: FAILED — entry {index}"))
            && v.stderr.contains(&format!("entry {index}")),
        "the failure must name entry {index}:\n{}\n{}",
        v.stdout,
        v.stderr
    );
    v
}

/// `collection_end=<now>` for a `collected` event recorded now (a required reading).
pub fn collection_end_now() -> String {
    format!(
        "collection_end={}",
        celltrail::time::rfc3339(celltrail::time::now_nanos() / 1_000_000_000 * 1_000_000_000)
    )
}

/// A DIN of its own for `chain` (one bag belongs to one chain): facility A9999, year 26,
/// serial from a hash of the chain id.
pub fn din_for(chain: &str) -> String {
    let h = chain.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1_099_511_628_211)
    });
    format!("A999926{:06}", h % 1_000_000)
}

/// A bedside near miss for QA: another patient's wristband (`CHA999926PAT002`) scanned.
#[allow(dead_code)] // not every test file records a near miss
pub fn wrong_patient_near_miss() -> Detail {
    Detail::IdentityCheckFailed(celltrail::pb::IdentityCheckFailed {
        check: "bedside_check".into(),
        reason: "WRISTBAND CHA999926PAT002 IS NOT the enrolled patient".into(),
        scanned_wristband_coi_ref: "CHA999926PAT002".into(),
        ..Default::default()
    })
}
