//! Test harness: starts the real server on 127.0.0.1:0 over a real sled data directory and
//! talks gRPC to it through the generated client.
#![allow(dead_code)] // each test file uses a different part of the harness

use celltrail::client::{self, Client, Draft};
use celltrail::note::NoteSigner;
use celltrail::pb::{event_body::Detail, KeyRegistered, Receipt, SignatureMeaning, SignedEvent};
use celltrail::server::{open, run, ServeOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub admin: NoteSigner,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `data_dir` (created if new) with the default options.
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::start_with(ServeOptions::new(data_dir)).await
    }

    pub async fn start_with(opts: ServeOptions) -> TestServer {
        let opened = open(&opts).expect("open data dir");
        let admin =
            celltrail::keys::read_key_file(&opts.data_dir.join("admin.key")).expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, opened.ledger, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            data_dir: opts.data_dir.clone(),
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        client::connect(&self.addr.to_string())
            .await
            .expect("connect")
    }

    /// Graceful stop: waits until the store is closed so it can be reopened.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
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
        at,
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

impl TestServer {
    /// Like [`TestServer::start_with`] but listening on `addr` (e.g. the port of a stopped
    /// server, so clients configured with that address reconnect after a restart).
    pub async fn start_on(opts: ServeOptions, addr: SocketAddr) -> TestServer {
        let opened = open(&opts).expect("open data dir");
        let admin =
            celltrail::keys::read_key_file(&opts.data_dir.join("admin.key")).expect("admin key");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the old address");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, opened.ledger, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            data_dir: opts.data_dir.clone(),
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}
