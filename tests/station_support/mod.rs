//! Helpers for the scanning-station tests: key files on disk, running the real `celltrail scan`
//! binary against a test server, codes to scan, reading a chain back.
#![allow(dead_code)] // each test file uses a different part

use crate::common::*;
use celltrail::client::Client;
use celltrail::codes::{CoiId, Din, Flags};
use celltrail::note::NoteSigner;
use celltrail::pb::{event_body::Detail, EventBody, GetChainRequest, LogEntry};
use prost::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

pub const BIN: &str = env!("CARGO_BIN_EXE_celltrail");

/// Passphrase of every key file the station tests write.
pub const TEST_PASSPHRASE: &str = "station test passphrase";
/// PBKDF2 iterations of test key files: few, to keep the tests fast (same format; OpenSSL
/// opens it, see tests/key_files.rs).
pub const TEST_KDF_ITERATIONS: u32 = 1_000;

/// Writes `who`'s encrypted key file into `dir`, and beside it `NAME.key.pass` holding its
/// passphrase (what [`scan_env`] hands the station through CELLTRAIL_*PASSPHRASE_FILE).
pub fn key_file(dir: &Path, who: &NoteSigner) -> PathBuf {
    let p = dir.join(format!("{}.key", who.name));
    celltrail::keys::write_encrypted_key_file(
        &p,
        who,
        &celltrail::keys::Passphrase::new(TEST_PASSPHRASE),
        TEST_KDF_ITERATIONS,
    )
    .unwrap();
    std::fs::write(pass_path(&p), format!("{TEST_PASSPHRASE}\n")).unwrap();
    p
}

/// The passphrase file written beside a key file by [`key_file`].
pub fn pass_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pass");
    PathBuf::from(s)
}

/// The bar code of DIN `A9999 26 nnnnnn` and its canonical 13 characters.
pub fn din(n: u32) -> (String, String) {
    let d = Din::new("A9999", 26, n).unwrap();
    (d.to_barcode(Flags::NONE), d.to_string())
}

/// A wristband bar code and its canonical CoI.
pub fn coi(seq: &str) -> (String, String) {
    let c = CoiId::new("A9999", 26, seq).unwrap();
    (c.to_barcode(), c.to_string())
}

pub const PRODUCT: &str = "=<S12954A0";
pub const SHIPPER: &str = "(8003)09506000134352SHIP1";
pub const SHIPPER_ID: &str = "09506000134352SHIP1";

/// Runs `celltrail scan --server ADDR --queue QUEUE ARGS...` and returns its output.
pub async fn scan(addr: SocketAddr, queue: &Path, args: &[&str]) -> Output {
    scan_env(addr, queue, args, &[]).await
}

/// A scripted enrolment at HOSP-A: the bag's DIN names the chain, the wristband the patient.
pub async fn scan_enrolment(
    addr: SocketAddr,
    queue: &Path,
    key: &str,
    bag: &str,
    wrist: &str,
) -> Output {
    let args = [
        "--key",
        key,
        "--site",
        "HOSP-A",
        "--yes",
        "--event",
        "enrolled",
        "--scan",
        bag,
        "--scan",
        wrist,
        "--set",
        "manufacturing_site=MFG-1",
    ];
    scan(addr, queue, &args).await
}

pub async fn scan_env(
    addr: SocketAddr,
    queue: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    scan_at(&addr.to_string(), queue, args, env).await
}

/// `celltrail scan --server SERVERS` (one address or a list `a,b,c`).
pub async fn scan_at(servers: &str, queue: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(servers)
        .arg("--queue")
        .arg(queue)
        .args(args)
        .env_remove("CELLTRAIL_KEY")
        .env("CELLTRAIL_LOG", "warn")
        .stdin(std::process::Stdio::null());
    // Automation hands the station each key's passphrase in a file named by the environment.
    for (flag, var) in [
        ("--key", "CELLTRAIL_PASSPHRASE_FILE"),
        ("--cosign-key", "CELLTRAIL_COSIGN_PASSPHRASE_FILE"),
    ] {
        if let Some(i) = args.iter().position(|a| *a == flag) {
            if let Some(k) = args.get(i + 1) {
                cmd.env(var, pass_path(Path::new(k)));
            }
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run celltrail scan")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the exit code and that stdout contains `word`; returns stdout.
pub fn expect(o: &Output, code: i32, word: &str) -> String {
    let out = stdout(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(word),
        "stdout should contain {word:?}:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A chain's events: (seq, body, signature meanings).
pub async fn chain_events(c: &mut Client, chain: &str) -> Vec<(EventBody, LogEntry)> {
    let resp = match c
        .get_chain(GetChainRequest {
            chain_id: chain.into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return vec![],
        Err(s) => panic!("get chain: {s:?}"),
    };
    resp.entries
        .iter()
        .map(|e| {
            let entry = LogEntry::decode(e.entry.as_slice()).unwrap();
            (EventBody::decode(entry.body.as_slice()).unwrap(), entry)
        })
        .collect()
}

pub fn kinds(events: &[(EventBody, LogEntry)]) -> Vec<&'static str> {
    events
        .iter()
        .map(|(b, _)| celltrail::rules::kind_name(b.detail.as_ref().unwrap()))
        .collect()
}

/// The `din` of each Collected event, in chain order.
pub fn collected_dins(events: &[(EventBody, LogEntry)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(b, _)| match &b.detail {
            Some(Detail::Collected(c)) => Some(c.din.clone()),
            _ => None,
        })
        .collect()
}

/// Starts a server on a fresh data dir with an apheresis nurse's key file in `keys`.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    pub nurse: PathBuf,
}

pub async fn site_with_nurse() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let nurse = key_file(dir.path(), &nurse);
    Site { dir, server, nurse }
}

/// Runs `celltrail queue ARGS...` (the real binary) and returns its output.
pub async fn queue_cli(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("queue")
        .args(args)
        .env_remove("CELLTRAIL_QUEUE")
        .env("CELLTRAIL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run celltrail queue")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run: exit `code` and `msg` on stderr; returns stderr.
pub fn expect_err(o: &Output, code: i32, msg: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{err}",
        o.status,
        stdout(o)
    );
    assert!(err.contains(msg), "stderr should contain {msg:?}:\n{err}");
    err
}

/// A chain enrolled, collected, packed in [`SHIPPER`] and shipped from HOSP-A to MFG-1 by the
/// scripted station: the shipment names the shipper, the receipt at MFG-1 is next.
pub struct Shipped {
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    pub bag: String,
    pub chain: String,
    /// The manufacturing person's key file (signs the receipt at MFG-1).
    pub mfg_key: PathBuf,
}

impl Shipped {
    /// `celltrail scan` for an interactive session of the manufacturing person at MFG-1 (their
    /// key, the MFG-1 station queue; they type the passphrase when signing), ready to spawn in
    /// a pseudo-terminal.
    pub fn mfg_station(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("scan")
            .arg("--server")
            .arg(self.server.addr.to_string())
            .arg("--queue")
            .arg(self.dir.path().join("mfg-station"))
            .arg("--key")
            .arg(&self.mfg_key)
            .arg("--site")
            .arg("MFG-1")
            .env_remove("CELLTRAIL_PASSPHRASE_FILE")
            .env("CELLTRAIL_LOG", "warn");
        cmd
    }
}

pub async fn shipped_to_mfg(n: u32) -> Shipped {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let (nurse, courier, mfg) = (signer("nurse.ada"), signer("courier.bo"), signer("mfg.cy"));
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &courier, "courier", "COURIER-1").await;
    register(&mut c, &server.admin, &mfg, "manufacturing", "MFG-1").await;
    let nk = key_file(dir.path(), &nurse);
    let ck = key_file(dir.path(), &courier);
    let mfg_key = key_file(dir.path(), &mfg);
    let (nk, ck) = (nk.to_str().unwrap(), ck.to_str().unwrap());
    let queue = dir.path().join("hosp-station");
    let (bag, chain) = din(n);
    let (wrist, _) = coi(&format!("PAT{n}"));
    let ended = collection_end_now();
    let at_hosp = ["--key", nk, "--site", "HOSP-A", "--yes", "--scan", &bag];
    let steps: [&[&str]; 4] = [
        &[
            "--event",
            "enrolled",
            "--scan",
            &wrist,
            "--set",
            "manufacturing_site=MFG-1",
        ],
        &[
            "--event",
            "collected",
            "--set",
            "volume_ml=250",
            "--set",
            &ended,
        ],
        &["--event", "packed", "--scan", SHIPPER],
        &[
            "--event",
            "shipped",
            "--set",
            "to_site=MFG-1",
            "--cosign-key",
            ck,
        ],
    ];
    for extra in steps {
        let args: Vec<&str> = at_hosp.iter().chain(extra).copied().collect();
        expect(&scan(server.addr, &queue, &args).await, 0, "ACCEPTED");
    }
    Shipped {
        dir,
        server,
        bag,
        chain,
        mfg_key,
    }
}
